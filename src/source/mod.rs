//! Sources: where changes come from. One module per protocol, each behind [`Source`].
//!
//! A source checks its server before streaming ([`Source::preflight`]), says where to start
//! from the position stored in staging ([`Source::start`]), then streams source transactions
//! in commit order ([`Source::run`]) until told to stop: each transaction whole, with the
//! position of its commit, after the source's own checks (values the target cannot hold,
//! truncates). Delivery is at-least-once: a reconnect resumes after the last transaction
//! handed on, a restart after the stored checkpoint, and everything downstream is idempotent.
//! A lost connection or a restarting server is retried with backoff ([`reconnect`]); anything
//! else ends the stream with its error.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::conn::ConnString;
use crate::error::RetryConfig;
use crate::script::SourceTag;
use crate::target::preflight::SourceTable;
use crate::types::mutation::{Position, SourceTransaction};

pub mod changefeed;
pub mod mysql;
pub mod postgres;

/// A change stream the pipeline replicates from.
pub trait Source: Send + Sized + 'static {
    /// Which source this is (`meta.pglogical`, metric labels, `/_/status`).
    fn tag(&self) -> SourceTag;

    /// The staging `memo` key of its position for target schema `target_schema` (MOLT's keys).
    fn memo_key(&self, target_schema: &str) -> String;

    /// Checks the server (settings, privileges, what it publishes) over an ordinary
    /// connection, each failure one message with its fix; returns the tables it will send.
    /// `scripted`: a userscript is loaded (it may route what plain replication refuses).
    fn preflight(
        &mut self,
        scripted: bool,
    ) -> impl Future<Output = Result<Vec<SourceTable>, SourceError>> + Send;

    /// Where to start streaming: after `stored` (the position text in `memo` under `key`),
    /// or, on a first run, where the source's own flags or server say.
    fn start(&self, stored: Option<&str>, key: &str) -> Result<Position, SourceError>;

    /// Streams from `run.start` until `run.stop` turns true (`Ok`), `run.out` closes (`Ok`:
    /// the pipeline reports its own error), or a failure that reconnecting does not fix.
    fn run(self, run: SourceRun) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// What a running source is given.
pub struct SourceRun {
    /// Transactions ending at or before this position are applied already.
    pub start: Position,
    /// Where transactions go, in commit order.
    pub out: mpsc::Sender<SourceTransaction>,
    /// The position of the last transaction committed on the target and stored: what the
    /// source's server may be told it can forget.
    pub committed: watch::Receiver<Position>,
    /// Turns true when the source should stop.
    pub stop: watch::Receiver<bool>,
    /// A userscript is loaded.
    pub scripted: bool,
    /// The target, for what a source must do there itself (PostgreSQL's TRUNCATE).
    pub target: TargetRef,
    /// Where the position is stored, for messages that tell how to skip a transaction.
    pub memo: MemoRef,
    /// Backoff between reconnects.
    pub retry: RetryConfig,
}

/// The target a source may need to reach.
#[derive(Debug, Clone)]
pub struct TargetRef {
    /// Its connection.
    pub conn: ConnString,
    /// The schema replicated into.
    pub schema: String,
}

/// The staging `memo` row of a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoRef {
    /// The qualified `memo` table.
    pub table: String,
    /// The key.
    pub key: String,
}

/// Why a source stopped, or could not start.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SourceError(Box<dyn std::error::Error + Send + Sync>);

impl SourceError {
    /// Wraps a source's own error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }

    /// The source's server was out of reach ([`crate::error::kind_in_chain`]).
    pub fn is_unavailable(&self) -> bool {
        crate::error::kind_in_chain(&*self.0) == Some(crate::error::ErrorKind::Unavailable)
    }

    /// A message of its own.
    pub fn message(text: impl Into<String>) -> Self {
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Message(String);
        Self::new(Message(text.into()))
    }
}

/// How one streaming session ended.
pub enum Session<E> {
    /// Told to stop, or the pipeline closed: streaming is over.
    Done,
    /// Failed. `connected`: it reached the server (the backoff starts over); `transient`:
    /// reconnecting may help; `wait`: the delay before the next attempt, when the source
    /// knows better than the backoff.
    Failed {
        /// What failed.
        error: E,
        /// Reconnecting may help.
        transient: bool,
        /// The session reached the server.
        connected: bool,
        /// Wait this long instead of the backoff.
        wait: Option<Duration>,
    },
}

/// Runs sessions one after another until one is [`Session::Done`], a failure is not
/// transient (returned), or `stop` turns true. Each session gets the state the one before
/// left (what was handed on already, decoder state) and a receiver of `stop`. Between
/// sessions it waits `retry`'s jittered backoff (starting over after a session that
/// connected), however many it takes, and reports the outage ([`crate::outage`]: logged when it
/// starts, and when a session connects again); `dial_failures` counts the sessions that did
/// not reach the server.
pub async fn reconnect<S, E, F, Fut>(
    what: &str,
    retry: &RetryConfig,
    mut stop: watch::Receiver<bool>,
    dial_failures: &prometheus::IntCounter,
    mut state: S,
    mut session: F,
) -> Result<(), E>
where
    E: std::error::Error,
    F: FnMut(S, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = (S, Session<E>)>,
{
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let (next, outcome) = session(state, stop.clone()).await;
        state = next;
        let Session::Failed { error, transient, connected, wait } = outcome else {
            return Ok(());
        };
        if connected {
            attempt = 0;
        } else {
            dial_failures.inc();
        }
        if !transient {
            return Err(error);
        }
        let delay = match wait {
            Some(wait) => wait,
            None => {
                let delay = retry.backoff_with_jitter(attempt).max(Duration::from_millis(100));
                let why = format!("{what}: {}", crate::error::with_causes(&error));
                crate::outage::failed("source", &why, delay, retry.max_backoff);
                attempt += 1;
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}
