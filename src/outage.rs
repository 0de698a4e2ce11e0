//! Outages of the databases replication depends on (`source`, `target`, `staging`): whoever
//! retries against one that is out of reach reports each failure here ([`failed`]) and its
//! first success after ([`recovered`]). An outage is logged once when it starts and once when
//! it ends, however many retries it takes; meanwhile `/_/healthz` answers 503 naming it
//! ([`current`]), and `dependency_unavailable_since_seconds` tells since when.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One dependency's ongoing outage.
#[derive(Debug, Clone)]
struct Ongoing {
    since: SystemTime,
    started: Instant,
    /// The last failure.
    why: String,
    /// Failed attempts so far.
    failures: u64,
}

static OUTAGES: Mutex<BTreeMap<&'static str, Ongoing>> = Mutex::new(BTreeMap::new());

/// Whether `OUTAGES` may hold any: [`recovered`] runs after every target commit, and takes
/// the lock only then.
static ANY: AtomicBool = AtomicBool::new(false);

/// An attempt to reach `dependency` failed with `why`; the next is in `retry_in`, and retries
/// come at most `every` apart. The first failure of an outage is logged at warn level, the
/// others at debug.
pub fn failed(dependency: &'static str, why: &str, retry_in: Duration, every: Duration) {
    let Ok(mut outages) = OUTAGES.lock() else { return };
    match outages.get_mut(dependency) {
        Some(ongoing) => {
            ongoing.failures += 1;
            ongoing.why = why.to_owned();
            tracing::debug!(dependency, error = why, retry_in = ?retry_in, failures = ongoing.failures, "still unreachable");
        }
        None => {
            let since = SystemTime::now();
            tracing::warn!(
                dependency,
                error = why,
                since = %crate::status::rfc3339(since),
                "{dependency} unreachable, retrying every {} at most until it answers; \
                 nothing is lost meanwhile",
                crate::types::duration::format(every)
            );
            let metrics = crate::metrics::global();
            metrics.dependency_outages_total.with_label_values(&[dependency]).inc();
            let epoch = since.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            metrics
                .dependency_unavailable_since_seconds
                .with_label_values(&[dependency])
                .set(epoch);
            outages.insert(
                dependency,
                Ongoing { since, started: Instant::now(), why: why.to_owned(), failures: 1 },
            );
            ANY.store(true, Ordering::SeqCst);
        }
    }
}

/// `dependency` answered: ends its outage, if it had one (logged at info level, with how long
/// it lasted). Cheap when there was none.
pub fn recovered(dependency: &'static str) {
    if !ANY.load(Ordering::SeqCst) {
        return;
    }
    let Ok(mut outages) = OUTAGES.lock() else { return };
    let Some(ended) = outages.remove(dependency) else { return };
    ANY.store(!outages.is_empty(), Ordering::SeqCst);
    let lasted = ended.started.elapsed();
    tracing::info!(
        dependency,
        outage = %crate::types::duration::format(Duration::from_millis(lasted.as_millis() as u64)),
        failed_attempts = ended.failures,
        "{dependency} reachable again; replication goes on"
    );
    crate::metrics::global()
        .dependency_unavailable_since_seconds
        .with_label_values(&[dependency])
        .set(0.0);
}

/// The ongoing outages: dependency, when it began (RFC 3339), the last failure.
pub fn current() -> Vec<(&'static str, String, String)> {
    let Ok(outages) = OUTAGES.lock() else { return Vec::new() };
    outages
        .iter()
        .map(|(dependency, o)| (*dependency, crate::status::rfc3339(o.since), o.why.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_kept_until_its_dependency_answers() {
        let every = Duration::from_secs(2);
        failed("outage-test", "connection refused", Duration::from_millis(10), every);
        failed("outage-test", "connection reset", Duration::from_millis(20), every);
        let now = current();
        let ours: Vec<_> = now.iter().filter(|(d, ..)| *d == "outage-test").collect();
        assert_eq!(ours.len(), 1, "one outage however many failures: {now:?}");
        assert_eq!(ours[0].2, "connection reset", "the last failure is shown");
        let since = crate::metrics::global()
            .dependency_unavailable_since_seconds
            .with_label_values(&["outage-test"])
            .get();
        assert!(since > 0.0);
        assert_eq!(
            crate::metrics::global()
                .dependency_outages_total
                .with_label_values(&["outage-test"])
                .get(),
            1
        );
        recovered("outage-test");
        assert!(current().iter().all(|(d, ..)| *d != "outage-test"));
        assert_eq!(
            crate::metrics::global()
                .dependency_unavailable_since_seconds
                .with_label_values(&["outage-test"])
                .get(),
            0.0
        );
    }
}
