//! The sequencer, immediate mode: source transactions are applied in source order as they
//! arrive.
//!
//! Consecutive source transactions coalesce into one target transaction up to `--flushSize`
//! rows (a larger source transaction goes alone: it is never split) or until `--flushPeriod`
//! has passed since the first was received. Target transactions commit in source order, so
//! the target only shows states the source had at a commit boundary (`docs/architecture.md`). After each
//! commit the position of the last source transaction it covers becomes the checkpoint
//! (invariant 1). An unreachable target is waited for with capped, jittered backoff for as
//! long as the outage lasts ([`crate::outage`]); a transient failure of the batch itself (a
//! serialization failure, a deadlock) is retried with exponential backoff, and after
//! `--maxRetries`, or on any other failure, the sequencer stops with the error and the
//! checkpoint where the last commit left it, so a restart resumes from there.
//!
//! While a batch is written, the next one (what the source has ready by then) is planned on
//! another thread when the target can plan ahead ([`Target::planner`]), and the target may send
//! it right behind the current batch's COMMIT ([`Upcoming`]): the target's work and
//! replicator's overlap. Commits still happen one after another, in order: a batch sent ahead
//! commits only in its own turn, after the one before committed, and is rolled back if that
//! COMMIT fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Decision, RetryConfig};
use crate::staging::{CheckpointError, Checkpoints, Committed};
use crate::target::{PlanSlot, Planned, Target, TargetError, Upcoming};
use crate::types::mutation::SourceTransaction;
pub use config::SequencerConfig;

/// Where the sequencer takes source transactions from, in source order: the source's queue
/// ([`queue::QueueReceiver`]), or a channel.
pub trait Input: Send {
    /// The next transaction, waiting for one; `None` once the input is closed and drained.
    fn recv(&mut self) -> impl Future<Output = Option<SourceTransaction>> + Send;

    /// The next transaction if one is there already.
    fn try_recv(&mut self) -> Result<SourceTransaction, mpsc::error::TryRecvError>;
}

impl Input for mpsc::Receiver<SourceTransaction> {
    fn recv(&mut self) -> impl Future<Output = Option<SourceTransaction>> + Send {
        mpsc::Receiver::recv(self)
    }

    fn try_recv(&mut self) -> Result<SourceTransaction, mpsc::error::TryRecvError> {
        mpsc::Receiver::try_recv(self)
    }
}

/// Why the sequencer stopped.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// A batch failed and was not retried, or still failed after `--maxRetries`.
    #[error("applying source transactions up to {position} failed after {attempts} attempt(s)")]
    Apply {
        /// The last position in the failed batch.
        position: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last failure.
        #[source]
        source: TargetError,
    },
    /// Shutting down took longer than `--gracePeriod`.
    #[error(
        "stopping took longer than --gracePeriod ({}); what was not applied will be read again \
         from the last checkpoint on restart",
        crate::types::duration::format(*grace)
    )]
    Drain {
        /// The grace period.
        grace: Duration,
    },
    /// The checkpoint could not be written after a commit.
    #[error("saving checkpoint {position} failed")]
    Checkpoint {
        /// The committed position.
        position: String,
        /// Why.
        #[source]
        source: CheckpointError,
    },
    /// The target could not be opened.
    #[error("opening the target failed: {message}")]
    Open {
        /// Why.
        message: String,
        /// Whether the target was out of reach.
        kind: crate::error::ErrorKind,
    },
    /// A parallel-apply worker stopped without reporting (it panicked).
    #[error("a parallel-apply worker stopped: {message}")]
    Worker {
        /// What the runtime said.
        message: String,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Target transactions committed.
    pub commits: u64,
    /// Source transactions applied.
    pub transactions: u64,
    /// Mutations applied.
    pub mutations: u64,
}

/// Applies source transactions from `input` until it closes (then returns the progress) or a
/// batch fails.
///
/// When the target plans ahead ([`Target::planner`]), whatever the source has ready when a
/// batch starts to be written becomes the next batch at once, and is planned on a blocking
/// thread meanwhile; a written batch is also freed there, off the apply path.
pub async fn run_immediate<I: Input, T: Target, C: Checkpoints>(
    config: &SequencerConfig,
    mut input: I,
    target: &mut T,
    checkpoints: &mut C,
) -> Result<Progress, SequencerError> {
    let mut progress = Progress::default();
    let mut pending: Option<SourceTransaction> = None;
    let mut report = Report::new();
    let planner = target.planner();
    let mut ahead: Option<Ahead> = None;
    loop {
        let Ahead { batch, rows, plan } = match ahead.take() {
            Some(next) => next,
            None => match gather(config, &mut input, &mut pending, true).await {
                Some((batch, rows)) => Ahead { batch: Arc::new(batch), rows, plan: PlanSlot::None },
                None => return Ok(progress),
            },
        };
        if let Some(planner) = &planner {
            // What the source has ready now, without waiting.
            let ready = gather(config, &mut input, &mut pending, false).await;
            ahead = ready.map(|(next, rows)| {
                let next = Arc::new(next);
                let (planner, planning) = (planner.clone(), next.clone());
                let plan = tokio::task::spawn_blocking(move || planner(&planning));
                Ahead { batch: next, rows, plan: PlanSlot::Planning(plan) }
            });
        }
        let (planned, started) = match plan {
            PlanSlot::Planning(plan) => (plan.await.ok().flatten(), false),
            PlanSlot::Taken => (None, true),
            PlanSlot::None => (None, false),
        };
        let (ahead_now, planned_ahead) = (ahead.is_some(), planned.is_some() || started);
        let upcoming = ahead
            .as_mut()
            .map(|a| Upcoming { transactions: a.batch.as_slice(), plan: &mut a.plan });
        let last = batch.last().expect("a batch has one transaction at least").position.clone();
        let position = last.to_string();
        let status = crate::status::global();
        status.writing(true);
        let applied =
            apply_with_retries(&config.retry, target, &batch, planned, upcoming, &position).await;
        status.writing(false);
        // The writer's proof of the commit becomes the checkpoint.
        let committed = applied?;
        status.transactions_applied(batch.iter().map(|tx| tx.commit_nanos));
        progress.commits += 1;
        progress.transactions += batch.len() as u64;
        progress.mutations += rows as u64;
        tracing::debug!(position = %last, transactions = batch.len(), rows, planned_ahead, next_ready = ahead_now, "committed");
        let commit_nanos = batch.last().map_or(0, |tx| tx.commit_nanos);
        report.committed(rows, &last, commit_nanos);
        checkpoints
            .save(committed)
            .await
            .map_err(|source| SequencerError::Checkpoint { position: last.to_string(), source })?;
        if planner.is_some() {
            // Freeing a batch's rows costs as much as planning them.
            tokio::task::spawn_blocking(move || drop(batch));
        }
    }
}

/// The next batch, and its plan when one is being made.
struct Ahead {
    batch: Arc<Vec<SourceTransaction>>,
    rows: usize,
    plan: PlanSlot,
}

/// Waits for a transaction, then coalesces what arrives before `--flushPeriod` ends, up to
/// `--flushSize` rows (a larger transaction goes alone; one that would overflow the batch
/// waits in `pending` for the next). Without `wait`, only what is there already (`None` if
/// nothing is). `None` once the input is closed and drained.
async fn gather(
    config: &SequencerConfig,
    input: &mut impl Input,
    pending: &mut Option<SourceTransaction>,
    wait: bool,
) -> Option<(Vec<SourceTransaction>, usize)> {
    let first = match pending.take() {
        Some(tx) => tx,
        None if wait => input.recv().await?,
        None => input.try_recv().ok()?,
    };
    let deadline = Instant::now() + config.flush_period;
    let mut rows = first.mutations.len();
    let mut batch = vec![first];
    while rows < config.flush_size {
        let next = match input.try_recv() {
            Ok(tx) => Some(tx),
            // Waiting past the deadline (an elapsed timeout) ends the batch.
            Err(mpsc::error::TryRecvError::Empty) if wait => {
                tokio::time::timeout_at(deadline, input.recv()).await.unwrap_or_default()
            }
            Err(_) => None,
        };
        let Some(next) = next else { break };
        if rows + next.mutations.len() > config.flush_size {
            *pending = Some(next);
            break;
        }
        rows += next.mutations.len();
        batch.push(next);
    }
    Some((batch, rows))
}

/// Progress lines at info level every few seconds while rows flow: rows/s, lag, position.
struct Report {
    since: Instant,
    rows: usize,
}

impl Report {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { since: Instant::now(), rows: 0 }
    }

    fn committed(
        &mut self,
        rows: usize,
        position: &crate::types::mutation::Position,
        commit_nanos: i64,
    ) {
        self.rows += rows;
        let elapsed = self.since.elapsed();
        if elapsed < Self::EVERY {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let lag = if commit_nanos > 0 {
            Duration::from_nanos(u64::try_from(now - commit_nanos).unwrap_or(0))
        } else {
            Duration::ZERO
        };
        let rate = self.rows as f64 / elapsed.as_secs_f64();
        tracing::info!(rows_per_second = rate.round() as u64, lag = ?lag, position = %position, "applying");
        crate::metrics::global().last_checkpoint_seconds.set(now as f64 / 1e9);
        *self = Self::new();
    }
}

async fn apply_with_retries<T: Target>(
    retry: &RetryConfig,
    target: &mut T,
    batch: &[SourceTransaction],
    mut planned: Option<Planned>,
    mut upcoming: Option<Upcoming<'_>>,
    position: &str,
) -> Result<Committed, SequencerError> {
    // Retries of this batch's own failures (limited by --maxRetries), and of an unreachable
    // target (not limited: an outage is waited out however long it lasts).
    let (mut attempt, mut waited): (u32, u32) = (0, 0);
    loop {
        // A plan made ahead serves the first attempt; retries plan again. Every attempt goes
        // through `apply_planned`: the target may have started this batch already.
        let next = upcoming
            .as_mut()
            .map(|u| Upcoming { transactions: u.transactions, plan: &mut *u.plan });
        let outcome = target.apply_planned(batch, planned.take(), next).await;
        let e = match outcome {
            Ok(committed) => {
                crate::outage::recovered("target");
                return Ok(committed);
            }
            Err(e) => e,
        };
        let unavailable = e.kind == crate::error::ErrorKind::Unavailable;
        match retry.decide(e.kind, if unavailable { waited } else { attempt }) {
            Decision::Retry(delay) if unavailable => {
                crate::outage::failed("target", &e.message, delay, retry.max_backoff);
                tokio::time::sleep(delay).await;
                waited = waited.saturating_add(1);
            }
            Decision::Retry(delay) => {
                tracing::warn!(attempt = attempt + 1, delay = ?delay, error = %e, "transient failure; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Decision::Stop => {
                return Err(SequencerError::Apply {
                    position: position.to_owned(),
                    attempts: attempt + waited + 1,
                    source: e,
                });
            }
        }
    }
}

pub mod config;
pub mod parallel;
pub mod queue;
pub mod shutdown;
pub mod testing;
