//! Stopping cleanly: on SIGINT or SIGTERM the source stops reading, the sequencer applies what
//! is already queued and writes the last checkpoint, within `--gracePeriod`.

use std::future::Future;
use std::time::Duration;

use super::{Progress, SequencerError};

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
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
