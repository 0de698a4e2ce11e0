//! Test doubles for the sequencer's boundaries: a target that fails on cue and an in-memory
//! checkpoint store. Used by the crate's tests and by integration tests.

use crate::staging::Committed;
use crate::staging::{CheckpointError, Checkpoints};
use crate::target::{Planned, Planner, Target, TargetError, Upcoming};
use crate::types::mutation::{Mutation, Position, SourceTransaction};

/// Records committed batches; fails the way it is told to.
#[derive(Debug, Default)]
pub struct FaultyTarget {
    /// Every committed batch, in order.
    pub committed: Vec<Vec<Mutation>>,
    /// Fail (without committing) once this many rows have been committed.
    pub fail_after_rows: Option<usize>,
    /// Whether that failure is transient.
    pub transient: bool,
    /// Transient failures to return before succeeding (each attempt consumes one).
    pub transient_failures: u32,
    /// "Target unreachable" failures to return before succeeding (each attempt consumes one).
    pub unavailable_failures: u32,
    /// Attempts seen.
    pub attempts: u32,
    /// How long each write takes.
    pub delay: std::time::Duration,
    /// Offer a planner (its plan of a batch is the batch's row count).
    pub plan_ahead: bool,
    /// Writes that came with a plan made ahead (each checked against its batch).
    pub planned: usize,
}

impl FaultyTarget {
    /// Rows committed so far.
    pub fn rows(&self) -> usize {
        self.committed.iter().map(Vec::len).sum()
    }
}

impl FaultyTarget {
    async fn write_planned(
        &mut self,
        transactions: &[SourceTransaction],
        planned: Option<Planned>,
        _upcoming: Option<Upcoming<'_>>,
    ) -> Result<(), TargetError> {
        if let Some(plan) = planned {
            let rows: usize = transactions.iter().map(|t| t.mutations.len()).sum();
            if plan.downcast_ref::<usize>() != Some(&rows) {
                return Err(TargetError::fatal("a plan was handed to another batch"));
            }
            self.planned += 1;
        }
        self.write_batch(transactions).await
    }

    async fn write_batch(&mut self, transactions: &[SourceTransaction]) -> Result<(), TargetError> {
        let mutations: Vec<Mutation> =
            transactions.iter().flat_map(|t| t.mutations.iter().cloned()).collect();
        self.attempts += 1;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.unavailable_failures > 0 {
            self.unavailable_failures -= 1;
            return Err(TargetError::unavailable("opening the target failed: connection refused"));
        }
        if self.transient_failures > 0 {
            self.transient_failures -= 1;
            return Err(TargetError::transient("serialization failure (SQLSTATE 40001)"));
        }
        if let Some(limit) = self.fail_after_rows
            && self.rows() + mutations.len() > limit
        {
            return Err(TargetError::classified(
                format!("injected failure after {limit} rows"),
                self.transient,
            ));
        }
        self.committed.push(mutations);
        Ok(())
    }
}

impl Target for FaultyTarget {
    fn planner(&self) -> Option<Planner> {
        self.plan_ahead.then(|| {
            let planner: Planner = std::sync::Arc::new(|transactions: &[SourceTransaction]| {
                let rows: usize = transactions.iter().map(|t| t.mutations.len()).sum();
                Some(Box::new(rows) as Planned)
            });
            planner
        })
    }

    async fn apply(
        &mut self,
        transactions: &[SourceTransaction],
    ) -> Result<Committed, TargetError> {
        self.write_batch(transactions).await?;
        Ok(Committed::covering(transactions))
    }

    async fn apply_planned(
        &mut self,
        transactions: &[SourceTransaction],
        planned: Option<Planned>,
        upcoming: Option<Upcoming<'_>>,
    ) -> Result<Committed, TargetError> {
        self.write_planned(transactions, planned, upcoming).await?;
        Ok(Committed::covering(transactions))
    }
}

/// Keeps checkpoints in memory.
#[derive(Debug, Default)]
pub struct MemoryCheckpoints {
    /// Every saved position, in order.
    pub saved: Vec<Position>,
}

impl Checkpoints for MemoryCheckpoints {
    async fn save(&mut self, committed: Committed) -> Result<(), CheckpointError> {
        self.saved.push(committed.position().clone());
        Ok(())
    }
}
