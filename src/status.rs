//! Where replication stands: what `/_/status` answers, the lag gauges, and the line logged
//! at least once a minute.
//!
//! The source records when it reads data and when it hands a transaction on (with the
//! transaction's source commit time); the sequencer records each target commit. From these:
//!
//! - `source_lag_seconds{schema}`: source commit → handed on by the source, per transaction;
//! - `target_lag_seconds{schema}`: source commit → committed on the target, per target
//!   transaction (0 once caught up), and `target_apply_transaction_lag_seconds` the same as a
//!   distribution over every source transaction;
//! - **caught up**: nothing waits in the queue, no batch is being written, and the source has
//!   read nothing for [`SETTLE`] — every change it had was applied. A cut-over script stops the
//!   writes on the source, then polls `/_/status` until `caught_up` is true.

use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the source must have read nothing for replication to count as caught up.
pub const SETTLE: Duration = Duration::from_secs(1);

/// How often the status line is logged while nothing changes.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Replication's progress, shared by the pipeline's tasks.
pub struct Status {
    started: Instant,
    /// Milliseconds since `started` when the source last read data (not a keepalive).
    source_read_ms: AtomicU64,
    /// Batches being written (several with parallel applies).
    busy: AtomicI64,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default)]
struct State {
    source: String,
    schema: String,
    applied: Option<String>,
    applied_commit_nanos: i64,
    applied_at: Option<SystemTime>,
    received: Option<String>,
}

/// What `/_/status` shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// `pglogical` or `mylogical`.
    pub source: String,
    /// `--targetSchema`.
    pub target_schema: String,
    /// The position of the last source transaction committed on the target.
    pub applied_position: Option<String>,
    /// Its commit time on the source (RFC 3339, UTC).
    pub applied_source_commit: Option<String>,
    /// When it committed on the target (RFC 3339, UTC).
    pub applied_at: Option<String>,
    /// The position of the last source transaction handed on by the source.
    pub received_position: Option<String>,
    /// Source commit → target commit of the last applied transaction; 0 when caught up.
    pub lag_seconds: f64,
    /// Mutations waiting to be written.
    pub queued_mutations: i64,
    /// Every change the source had is applied (see the module documentation).
    pub caught_up: bool,
}

impl Status {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            source_read_ms: AtomicU64::new(0),
            busy: AtomicI64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    /// Names what is being replicated (for `/_/status` and metric labels).
    pub fn start(&self, source: &str, target_schema: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.source = source.to_owned();
            s.schema = target_schema.to_owned();
        }
    }

    /// The source read data (cheap: call it per message).
    pub fn source_read(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.source_read_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// The source handed on a transaction committed at `commit_nanos` (0: unknown).
    pub fn received(&self, position: &impl std::fmt::Display, commit_nanos: i64) {
        let metrics = crate::metrics::global();
        let Ok(mut s) = self.state.lock() else { return };
        s.received = Some(position.to_string());
        if let Some(lag) = lag_since(commit_nanos) {
            metrics.source_lag_seconds.with_label_values(&[&s.schema]).set(lag);
            metrics.source_lag_seconds_histogram.with_label_values(&[&s.schema]).observe(lag);
        }
    }

    /// A batch starts (`true`) or ends (`false`) being written.
    pub fn writing(&self, writing: bool) {
        self.busy.fetch_add(if writing { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// A target transaction committed source transactions committed at `commit_nanos`.
    pub fn transactions_applied(&self, commit_nanos: impl IntoIterator<Item = i64>) {
        let metrics = crate::metrics::global();
        let Ok(s) = self.state.lock() else { return };
        let histogram =
            metrics.target_apply_transaction_lag_seconds.with_label_values(&[&s.schema]);
        for nanos in commit_nanos {
            if let Some(lag) = lag_since(nanos) {
                histogram.observe(lag);
            }
        }
    }

    /// Everything up to `position` (its source commit at `commit_nanos`) is committed on the
    /// target: the checkpoint.
    pub fn applied(&self, position: &impl std::fmt::Display, commit_nanos: i64) {
        let metrics = crate::metrics::global();
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(lag) = lag_since(commit_nanos) {
            metrics.target_lag_seconds.with_label_values(&[&s.schema]).set(lag);
            metrics.target_lag_seconds_histogram.with_label_values(&[&s.schema]).observe(lag);
        }
        s.applied = Some(position.to_string());
        s.applied_commit_nanos = commit_nanos;
        s.applied_at = Some(SystemTime::now());
    }

    /// Every change read is applied, and the source has been quiet for [`SETTLE`].
    pub fn caught_up(&self) -> bool {
        let read = self.source_read_ms.load(Ordering::Relaxed);
        let quiet = read == 0
            || self.started.elapsed().saturating_sub(Duration::from_millis(read)) >= SETTLE;
        quiet
            && self.busy.load(Ordering::Relaxed) <= 0
            && crate::metrics::global().target_apply_queue_size.get() <= 0
    }

    /// Where replication stands now.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        let caught_up = self.caught_up();
        let lag = if caught_up { 0.0 } else { lag_since(s.applied_commit_nanos).unwrap_or(0.0) };
        Snapshot {
            source: s.source,
            target_schema: s.schema,
            applied_position: s.applied,
            applied_source_commit: (s.applied_commit_nanos > 0).then(|| {
                rfc3339(UNIX_EPOCH + Duration::from_nanos(s.applied_commit_nanos.unsigned_abs()))
            }),
            applied_at: s.applied_at.map(rfc3339),
            received_position: s.received,
            lag_seconds: (lag * 1000.0).round() / 1000.0,
            queued_mutations: crate::metrics::global().target_apply_queue_size.get(),
            caught_up,
        }
    }

    /// Logs where replication stands on every change between caught up and behind, and at
    /// least every [`LOG_EVERY`]; sets the target lag gauge to 0 while caught up. Runs until
    /// the process ends.
    pub async fn report(&'static self) {
        let mut last: Option<(bool, Instant)> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.snapshot();
            if now.caught_up
                && let Ok(s) = self.state.lock()
            {
                crate::metrics::global()
                    .target_lag_seconds
                    .with_label_values(&[&s.schema])
                    .set(0.0);
            }
            let due = match last {
                None => true,
                Some((was, at)) => was != now.caught_up || at.elapsed() >= LOG_EVERY,
            };
            if !due {
                continue;
            }
            last = Some((now.caught_up, Instant::now()));
            let position = now.applied_position.as_deref().unwrap_or("(nothing applied yet)");
            if now.caught_up {
                tracing::info!(position, lag_seconds = now.lag_seconds, "caught up");
            } else {
                tracing::info!(
                    position,
                    lag_seconds = now.lag_seconds,
                    queued = now.queued_mutations,
                    "behind the source: applying"
                );
            }
        }
    }
}

/// Seconds from a source commit at `nanos` (since the Unix epoch) to now; `None` when unknown.
fn lag_since(nanos: i64) -> Option<f64> {
    if nanos <= 0 {
        return None;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_nanos();
    let lag = now.saturating_sub(u128::from(nanos.unsigned_abs()));
    Some(lag as f64 / 1e9)
}

/// `2026-12-01T12:34:56.789Z`.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(0);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::types::civil::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The process's status.
pub fn global() -> &'static Status {
    static STATUS: OnceLock<Status> = OnceLock::new();
    STATUS.get_or_init(Status::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_592_496_789);
        assert_eq!(rfc3339(at), "2025-12-01T12:34:56.789Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn lag_is_unknown_without_a_commit_time() {
        assert_eq!(lag_since(0), None);
        let a_second_ago = SystemTime::now().duration_since(UNIX_EPOCH).expect("now").as_nanos()
            as i64
            - 1_000_000_000;
        let lag = lag_since(a_second_ago).expect("lag");
        assert!((1.0..2.0).contains(&lag), "{lag}");
    }
}
