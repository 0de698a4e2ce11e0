//! The reading loop: one replication session after another until told to stop.
//!
//! A session connects, starts streaming at the last position handed on (so nothing is read
//! twice into the pipeline), decodes pgoutput into transactions and hands each on through a
//! bounded channel. While the pipeline is full it stops reading (the server waits) but still
//! sends standby status every `--standbyTimeout`, so the server does not time the connection
//! out. A dropped connection, a server restart, or a slot still held by a dying connection is
//! retried with exponential backoff; anything else ends the stream with its error.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::pgoutput::{Decoded, Decoder};
use super::replication::{Replicated, ReplicationConn, ReplicationError};
use crate::conn::postgres::PgParams;
use crate::error::RetryConfig;
use crate::source::{Session as SourceSession, reconnect};
use crate::types::mutation::Position;
use crate::types::position::PgLsn;

/// What the reading loop needs.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The source connection.
    pub params: PgParams,
    /// `--slotName`.
    pub slot: String,
    /// `--publicationName`.
    pub publication: String,
    /// `--standbyTimeout`: how often status goes to the server.
    pub standby_timeout: Duration,
    /// Transactions ending at or before this position were applied already: skipped.
    pub start: PgLsn,
    /// Backoff between reconnects.
    pub retry: RetryConfig,
    /// Source tables reported as `schema.table` (names published from several schemas).
    pub qualify: std::collections::HashSet<String>,
}

/// Why streaming stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The replication connection failed in a way reconnecting does not fix.
    #[error("replicating from slot {slot:?} failed")]
    Replication {
        /// The slot.
        slot: String,
        /// The failure.
        #[source]
        source: ReplicationError,
    },
    /// The slot's position is older than the publication: pgoutput reads each change with
    /// the catalog as it was at that change, when the publication did not exist yet.
    #[error(
        "slot {slot:?} is at {position}, before publication {publication:?} was created, and \
         PostgreSQL decodes every change with the catalog as it was at that change (its \
         historic snapshot), so it cannot use a publication created later (\"{message}\"). \
         Create the publication first and the slot after it: drop the slot \
         (SELECT pg_drop_replication_slot('{slot}')), start again with --createSlot (or create \
         it yourself), then load the rows written since the old slot's position into the target"
    )]
    PublicationAfterSlot {
        /// The slot.
        slot: String,
        /// The publication.
        publication: String,
        /// Where decoding failed.
        position: PgLsn,
        /// The server's message.
        message: String,
    },
    /// A pgoutput message did not decode.
    #[error("decoding the change stream after {after} failed: {message}")]
    Decode {
        /// The last position handed on.
        after: PgLsn,
        /// What was wrong.
        message: String,
    },
}

/// The end LSN of a decoded transaction.
pub fn end_lsn(decoded: &Decoded) -> PgLsn {
    match decoded.transaction.position {
        Position::Lsn(lsn) => lsn,
        _ => PgLsn(0),
    }
}

/// Streams until `stop` turns true (then returns `Ok`), `out` closes (the pipeline stopped:
/// `Ok`, the pipeline reports its own error), or a permanent failure. `committed` is the
/// position of the last transaction applied and committed on the target: what the server is
/// told it may forget.
pub async fn run(
    config: StreamConfig,
    out: mpsc::Sender<Decoded>,
    committed: watch::Receiver<PgLsn>,
    stop: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let dials = &crate::metrics::global().pglogical_dial_failure_total;
    let (config, out) = (&config, &out);
    // The slot keeps the WAL while we are away: a transient failure is retried for as long as
    // it lasts.
    reconnect(
        "replication connection",
        &config.retry,
        stop,
        dials,
        config.start,
        |delivered, mut stop| {
            let committed = committed.clone();
            async move {
                let mut session = Session { config, delivered, committed, connected: false };
                let result = session.run(out, &mut stop).await;
                let (delivered, connected) = (session.delivered, session.connected);
                let failed = |error, transient| SourceSession::Failed {
                    error,
                    transient,
                    connected,
                    wait: None,
                };
                let outcome = match result {
                    Ok(()) => SourceSession::Done,
                    Err(SessionError::Decode(message)) => {
                        failed(StreamError::Decode { after: delivered, message }, false)
                    }
                    Err(SessionError::Replication(ReplicationError::Server { code, message }))
                        if code == "42704"
                            && message
                                .contains(&format!("publication \"{}\"", config.publication)) =>
                    {
                        // The preflight saw the publication: the slot's historic snapshot does not.
                        let error = StreamError::PublicationAfterSlot {
                            slot: config.slot.clone(),
                            publication: config.publication.clone(),
                            position: delivered,
                            message,
                        };
                        failed(error, false)
                    }
                    Err(SessionError::Replication(e)) => {
                        let transient = e.is_transient();
                        failed(
                            StreamError::Replication { slot: config.slot.clone(), source: e },
                            transient,
                        )
                    }
                };
                (delivered, outcome)
            }
        },
    )
    .await
}

enum SessionError {
    Replication(ReplicationError),
    Decode(String),
}

impl From<ReplicationError> for SessionError {
    fn from(e: ReplicationError) -> Self {
        SessionError::Replication(e)
    }
}

struct Session<'a> {
    config: &'a StreamConfig,
    delivered: PgLsn,
    committed: watch::Receiver<PgLsn>,
    connected: bool,
}

impl Session<'_> {
    async fn run(
        &mut self,
        out: &mpsc::Sender<Decoded>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let config = self.config;
        let mut conn = ReplicationConn::connect(&config.params).await?;
        conn.start_replication(&config.slot, self.delivered, &config.publication).await?;
        self.connected = true;
        crate::outage::recovered("source");
        crate::metrics::global().pglogical_dial_success_total.inc();
        tracing::info!(slot = %config.slot, from = %self.delivered, tls = conn.is_tls(), "streaming changes");
        let mut decoder = Decoder::new();
        decoder.qualify(config.qualify.clone());
        let mut received = self.delivered;
        // The server's position when last seen idle: everything before it was sent.
        let mut idle_through = PgLsn(0);
        let mut pending: Option<Decoded> = None;
        let mut ticker =
            tokio::time::interval(config.standby_timeout.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    let flushed = self.flushed(&decoder, pending.is_some(), idle_through);
                    let _ = conn.send_status(received, flushed, false).await;
                    conn.close().await;
                    return Ok(());
                }
                _ = ticker.tick() => {
                    let flushed = self.flushed(&decoder, pending.is_some(), idle_through);
                    conn.send_status(received, flushed, false).await?;
                }
                permit = out.reserve(), if pending.is_some() => {
                    let Ok(permit) = permit else {
                        conn.close().await;
                        return Ok(());
                    };
                    if let Some(decoded) = pending.take() {
                        self.delivered = end_lsn(&decoded);
                        permit.send(decoded);
                    }
                }
                message = conn.recv(), if pending.is_none() => match message? {
                    Replicated::XLogData { data, start, .. } => {
                        crate::status::global().source_read();
                        received = received.max(start);
                        let decoded = decoder.decode(&data).map_err(|e| {
                            SessionError::Decode(format!("{e} (message at {start})"))
                        })?;
                        if let Some(decoded) = decoded {
                            let end = end_lsn(&decoded);
                            received = received.max(end);
                            if end <= self.delivered {
                                tracing::debug!(position = %end, "skipping a transaction applied before");
                            } else {
                                pending = Some(decoded);
                            }
                        }
                    }
                    Replicated::Keepalive { end, reply } => {
                        received = received.max(end);
                        if !decoder.in_transaction() && pending.is_none() {
                            idle_through = end;
                        }
                        if reply {
                            let flushed = self.flushed(&decoder, pending.is_some(), idle_through);
                            conn.send_status(received, flushed, false).await?;
                        }
                    }
                },
            }
        }
    }

    /// The position the server may forget up to: the last committed transaction, or, when
    /// everything handed on has committed and nothing is in flight, the server's own idle
    /// position (so an idle slot does not hold WAL back).
    fn flushed(&self, decoder: &Decoder, pending: bool, idle_through: PgLsn) -> PgLsn {
        let committed = *self.committed.borrow();
        let drained = committed >= self.delivered && !pending && !decoder.in_transaction();
        if drained { committed.max(idle_through) } else { committed }
    }
}
