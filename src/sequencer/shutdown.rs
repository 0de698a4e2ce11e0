//! Stopping cleanly: on SIGINT or SIGTERM the source stops reading, the sequencer applies what
//! is already queued and writes the last checkpoint, within `--gracePeriod`.

use std::future::Future;
use std::time::Duration;

use super::{Progress, SequencerError};

/// Resolves once the process has received SIGINT or SIGTERM (at once if it has already).
/// The first call installs the handlers for the rest of the process's life, so a signal is
/// never lost between two waits, nor turned into the default action (death) while replication
/// starts: [`listen`] early.
pub async fn signal() {
    let mut received = latch().subscribe();
    let _ = received.wait_for(|got| *got).await;
}

/// Whether SIGINT or SIGTERM has been received (handlers installed by [`listen`]).
pub fn requested() -> bool {
    *latch().borrow()
}

/// Installs the SIGINT and SIGTERM handlers now (idempotent; needs a tokio runtime).
pub fn listen() {
    let _ = latch();
}

fn latch() -> &'static tokio::sync::watch::Sender<bool> {
    static LATCH: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> =
        std::sync::OnceLock::new();
    LATCH.get_or_init(|| {
        let (tx, _) = tokio::sync::watch::channel(false);
        let set = tx.clone();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = int.recv() => {}
                            _ = term.recv() => {}
                        }
                        set.send_replace(true);
                    });
                }
                _ => {
                    tokio::spawn(async move {
                        let _ = tokio::signal::ctrl_c().await;
                        set.send_replace(true);
                    });
                }
            }
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            set.send_replace(true);
        });
        tx
    })
}

/// Runs `sequencer` until it ends or `shutdown` resolves. On shutdown, `stop_source` is called
/// (the source stops and closes its queue), and the sequencer gets `grace` to apply what is
/// queued and save the last checkpoint; past that the run fails.
pub async fn run_until<S, Q>(
    sequencer: S,
    shutdown: Q,
    stop_source: impl FnOnce(),
    grace: Duration,
) -> Result<Progress, SequencerError>
where
    S: Future<Output = Result<Progress, SequencerError>>,
    Q: Future<Output = ()>,
{
    tokio::pin!(sequencer);
    tokio::select! {
        done = &mut sequencer => return done,
        () = shutdown => {}
    }
    tracing::info!(grace = ?grace, "stopping: applying what is queued, then saving the checkpoint");
    stop_source();
    match tokio::time::timeout(grace, sequencer).await {
        Ok(done) => done,
        Err(_) => Err(SequencerError::Drain { grace }),
    }
}
