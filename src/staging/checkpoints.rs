//! Where the sequencer's committed positions go: the [`Checkpoints`] contract, its staging
//! implementation on a connection of its own ([`StagingCheckpoints`]), and the writer the
//! replication commands use, which saves off the apply path ([`AnnouncingCheckpoints`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

use super::{CheckpointStore, Committed};
use crate::conn::ConnString;
use crate::error::ErrorKind;
use crate::types::mutation::Position;

/// Where committed positions go.
pub trait Checkpoints: Send {
    /// Records a committed position; never called with a position before an earlier one.
    fn save(
        &mut self,
        committed: Committed,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send;
}

/// A position that could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CheckpointError {
    /// What failed.
    pub message: String,
    /// Transient: staging was out of reach or the connection broke, trying again may succeed.
    pub kind: ErrorKind,
}

/// [`Checkpoints`] in staging's `memo`, on its own connection (replaced by a new one
/// when it is lost, if [`StagingCheckpoints::with_reconnect`] says where).
pub struct StagingCheckpoints {
    client: Client,
    store: CheckpointStore,
    reconnect: Option<ConnString>,
    /// The last save failed on a session still open (read-only staging during a failover):
    /// the next takes a new session.
    new_session: bool,
}

impl StagingCheckpoints {
    /// Saves through `store` on `client` (the staging database).
    pub fn new(client: Client, store: CheckpointStore) -> Self {
        Self { client, store, reconnect: None, new_session: false }
    }

    /// Opens a new connection to `conn` when the current one is lost.
    pub fn with_reconnect(mut self, conn: ConnString) -> Self {
        self.reconnect = Some(conn);
        self
    }
}

impl StagingCheckpoints {
    /// Saves `committed`; the error says whether trying again may succeed (`true`: staging was
    /// unreachable or the connection broke).
    pub async fn store(&mut self, committed: &Committed) -> Result<(), CheckpointError> {
        if (self.client.is_closed() || self.new_session)
            && let Some(conn) = &self.reconnect
        {
            self.client = crate::conn::postgres::connect(conn).await.map_err(|e| {
                let message = format!(
                    "the staging connection was lost, and reconnecting failed: {}",
                    crate::error::with_causes(&e)
                );
                CheckpointError { message, kind: ErrorKind::Unavailable }
            })?;
            if !self.new_session {
                tracing::info!("the staging connection was lost; saving checkpoints on a new one");
            }
            self.new_session = false;
        }
        self.store.save(&self.client, committed).await.map_err(|e| {
            self.new_session = e.is_transient();
            CheckpointError {
                message: crate::error::with_causes(&e),
                kind: if e.is_transient() { ErrorKind::Unavailable } else { ErrorKind::Data },
            }
        })
    }
}

impl Checkpoints for StagingCheckpoints {
    async fn save(&mut self, committed: Committed) -> Result<(), CheckpointError> {
        self.store(&committed).await
    }
}

/// Checkpoints in staging, written off the apply path: each committed position is handed to
/// a background task that saves the latest one (positions arriving while a save runs, or
/// within [`AnnouncingCheckpoints::PACE`] of the last save, are coalesced into the next),
/// then announces it (the source tells its server what it may forget only once the position
/// is stored). A stored position that lags the target is safe: a restart replays from it, and
/// replays are idempotent. A failing save is retried (on a new connection when the old one is
/// lost); while it fails for another reason than staging being out of reach (a position that
/// would move backwards), the sequencer is stopped by the next `save` with the error.
pub struct AnnouncingCheckpoints {
    latest: watch::Sender<(u64, Option<Committed>)>,
    stored: watch::Receiver<u64>,
    failed: Arc<std::sync::Mutex<Option<CheckpointError>>>,
    /// The saver: it retries for as long as staging is out of reach, so it ends with its
    /// pipeline ([`Self::close`], or dropped), never later.
    saver: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for AnnouncingCheckpoints {
    fn drop(&mut self) {
        if let Some(saver) = self.saver.take() {
            saver.abort();
        }
    }
}

impl AnnouncingCheckpoints {
    /// The least time between two saves. Target commits can come every few milliseconds, and
    /// saving each one cost the staging server about a seventh of the writes' CPU; a restart
    /// replays at most this much more, and the source learns what it may forget this much
    /// later.
    pub const PACE: Duration = Duration::from_millis(100);

    /// Saves through `store` on `client` (a connection to `conn`, reopened when lost) and
    /// sends each saved position to `announce`.
    pub fn new<P: Send + Sync + 'static>(
        client: Client,
        conn: ConnString,
        store: CheckpointStore,
        announce: watch::Sender<P>,
        extract: fn(&Position) -> Option<P>,
    ) -> Self {
        let (latest, mut pending) = watch::channel::<(u64, Option<Committed>)>((0, None));
        let (stored_tx, stored) = watch::channel(0u64);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let report = failed.clone();
        let mut inner = StagingCheckpoints::new(client, store).with_reconnect(conn);
        let saver = tokio::spawn(async move {
            while pending.changed().await.is_ok() {
                let (seq, committed) = pending.borrow_and_update().clone();
                let Some(committed) = committed else { continue };
                let position = extract(committed.position());
                let mut attempt = 0u32;
                while let Err(e) = inner.store(&committed).await {
                    let delay = Duration::from_millis(100 * u64::from((attempt + 1).min(20)));
                    // Staging out of reach does not stop the writes: the stored position only
                    // lags (a restart replays more). Anything else stops the sequencer.
                    if e.kind == ErrorKind::Unavailable {
                        let every = Duration::from_secs(2);
                        crate::outage::failed("staging", &e.message, delay, every);
                    } else {
                        tracing::warn!(error = %e, attempt, "saving the checkpoint failed; retrying");
                        if let Ok(mut f) = report.lock() {
                            *f = Some(e);
                        }
                    }
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                crate::outage::recovered("staging");
                if let Ok(mut f) = report.lock() {
                    *f = None;
                }
                let saved = tokio::time::Instant::now();
                stored_tx.send_replace(seq);
                if let Some(p) = position {
                    announce.send_replace(p);
                }
                tokio::time::sleep_until(saved + Self::PACE).await;
            }
        });
        Self { latest, stored, failed, saver: Some(saver) }
    }

    /// Stops saving, and waits until the saver is gone: a position it still retried would
    /// otherwise be stored after the next pipeline read where to resume (and its own saves
    /// would then be refused as going backwards).
    pub async fn close(&mut self) {
        if let Some(saver) = self.saver.take() {
            saver.abort();
            let _ = saver.await;
        }
    }

    /// Waits until the last position handed over is stored, at most `within`.
    pub async fn flush(&mut self, within: Duration) -> Result<(), CheckpointError> {
        let want = self.latest.borrow().0;
        match tokio::time::timeout(within, self.stored.wait_for(|s| *s >= want)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.failed.lock().ok().and_then(|f| f.clone()).unwrap_or_else(|| {
                CheckpointError {
                    message: "the last checkpoint was not stored in time".to_owned(),
                    kind: ErrorKind::Unavailable,
                }
            })),
        }
    }
}

impl Checkpoints for AnnouncingCheckpoints {
    async fn save(&mut self, committed: Committed) -> Result<(), CheckpointError> {
        if let Some(e) = self.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(e);
        }
        crate::status::global().applied(committed.position(), committed.commit_nanos());
        self.latest.send_modify(|(seq, c)| {
            *seq += 1;
            *c = Some(committed);
        });
        Ok(())
    }
}
