//! Target databases: the [`Target`] contract the sequencer writes through, introspection, the
//! check before streaming, and the batched appliers and writers per dialect
//! ([`postgres::writer::PgTarget`], [`mysql::writer::MyTarget`]). Which wire protocol a
//! connection string speaks is [`crate::conn::Protocol`].
//!
//! CockroachDB speaks the PostgreSQL protocol, so a `postgres://` URL may reach either; the
//! difference is settled at connect time (from `version()`), not from the URL.

pub mod batch;
pub mod factory;
pub mod mysql;
pub mod order;
pub mod postgres;
pub mod preflight;
pub mod schema;

use std::future::Future;
use std::sync::Arc;

use crate::error::ErrorKind;
use crate::staging::Committed;
use crate::types::mutation::SourceTransaction;

/// Where batches are written: one call is one target transaction, committed when it returns
/// `Ok` with the proof of that commit ([`Committed`], covering the last transaction), which the
/// sequencer hands to the checkpoint. Delivery is at-least-once: after a crash a batch may be
/// written again, so writes must be idempotent (upserts and deletes by key).
pub trait Target: Send {
    /// Writes the mutations of `transactions` (in source order) in one target transaction,
    /// commits it, and returns the proof.
    fn apply(
        &mut self,
        transactions: &[SourceTransaction],
    ) -> impl Future<Output = Result<Committed, TargetError>> + Send;

    /// Plans batches ahead of their turn: the sequencer runs it on another thread while the
    /// batch before is written, and hands the result to [`Target::apply_planned`]. `None` (the
    /// default): this target plans in `apply`.
    fn planner(&self) -> Option<Planner> {
        None
    }

    /// Like [`Target::apply`], with what the planner made of `transactions` (`None` when it
    /// could not plan them: `apply` then plans, and re-reads the schema if it must).
    /// `upcoming` is the batch after this one: a target may start writing it before it
    /// returns (taking its plan), as long as it commits it only in its own `apply_planned`,
    /// after this batch committed.
    fn apply_planned(
        &mut self,
        transactions: &[SourceTransaction],
        planned: Option<Planned>,
        upcoming: Option<Upcoming<'_>>,
    ) -> impl Future<Output = Result<Committed, TargetError>> + Send {
        let _ = (planned, upcoming);
        self.apply(transactions)
    }
}

/// The batch after the one being applied, and its plan if it is ready.
pub struct Upcoming<'a> {
    /// Its transactions.
    pub transactions: &'a [SourceTransaction],
    pub(crate) plan: &'a mut PlanSlot,
}

impl Upcoming<'_> {
    /// Its plan, once made (then it is the taker's; `None` if it could not be planned ahead).
    pub async fn take_plan(&mut self) -> Option<Planned> {
        match std::mem::replace(self.plan, PlanSlot::Taken) {
            PlanSlot::Planning(handle) => handle.await.ok().flatten(),
            other => {
                *self.plan = other;
                None
            }
        }
    }
}

/// Where a planned-ahead batch's plan is.
pub(crate) enum PlanSlot {
    /// Nobody plans it ahead.
    None,
    /// Being made on a blocking thread.
    Planning(tokio::task::JoinHandle<Option<Planned>>),
    /// Taken by the target while it wrote the batch before.
    Taken,
}

/// A batch planned ahead, for the target that planned it.
pub type Planned = Box<dyn std::any::Any + Send>;

/// Plans a batch ahead of its turn (see [`Target::planner`]).
pub type Planner = Arc<dyn Fn(&[SourceTransaction]) -> Option<Planned> + Send + Sync>;

/// A failed target transaction, classified once.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    /// What failed (names the table, and the key when known).
    pub message: String,
    /// What kind of failure it is: whether retrying may help.
    pub kind: ErrorKind,
    /// The target refused a write for a foreign key (a parent row not there yet, or a child
    /// still there): in immediate failback the other row may be in flight, so it is retried.
    pub foreign_key: bool,
}

impl From<batch::ApplyError> for TargetError {
    fn from(e: batch::ApplyError) -> Self {
        let foreign_key = e.is_foreign_key_violation();
        Self { foreign_key, ..Self::of_kind(e.to_string(), e.kind()) }
    }
}

impl TargetError {
    /// Retrying may succeed (serialization failure, deadlock), a limited number of times.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::of_kind(message, ErrorKind::Transient)
    }

    /// The target is out of reach (connection refused or lost, server restarting): waited
    /// for as long as it takes.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::of_kind(message, ErrorKind::Unavailable)
    }

    /// An error of `kind`.
    pub fn of_kind(message: impl Into<String>, kind: ErrorKind) -> Self {
        Self { message: message.into(), kind, foreign_key: false }
    }

    /// A failure to read the target's schema: retried like a transient failure at least
    /// (unavailable when the target is out of reach).
    pub fn reading_schema(message: impl Into<String>, kind: ErrorKind) -> Self {
        let kind = if kind == ErrorKind::Unavailable { kind } else { ErrorKind::Transient };
        Self::of_kind(message, kind)
    }

    /// The batch cannot be written as it is.
    pub fn data(message: impl Into<String>) -> Self {
        Self { message: message.into(), kind: ErrorKind::Data, foreign_key: false }
    }

    /// A broken invariant.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { message: message.into(), kind: ErrorKind::Fatal, foreign_key: false }
    }

    /// Transient if `transient`, else a data error.
    pub fn classified(message: impl Into<String>, transient: bool) -> Self {
        if transient { Self::transient(message) } else { Self::data(message) }
    }

    /// Retrying may succeed: the target is out of reach, or the failure is transient.
    pub fn is_transient(&self) -> bool {
        self.kind.is_retryable()
    }
}
