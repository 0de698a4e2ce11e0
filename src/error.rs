//! Errors as the operator reads them (one line with every cause), what kind a failure is,
//! and the one policy that decides, from the kind, whether to retry or stop.
//!
//! - [`ErrorKind::Unavailable`]: a database is out of reach (connection refused, reset or
//!   closed, the server shutting down or starting up, read-only during a failover): retried
//!   with capped exponential backoff and jitter for as long as the outage lasts, logged once
//!   when it starts and once when it ends ([`crate::outage`]).
//! - [`ErrorKind::Transient`]: retrying this batch may succeed (a serialization failure, a
//!   deadlock, a lock timeout): retried with backoff, up to `--maxRetries`.
//! - [`ErrorKind::Data`]: this batch cannot be written as it is (a value or row the target
//!   refuses, an unknown table or column, a userscript that throws): stop, naming table, key
//!   and cause; a restart resumes at the checkpoint.
//! - [`ErrorKind::Fatal`]: replicator itself is wrong (a broken invariant): stop.

use std::time::Duration;

/// An error with its causes, `outer: inner: innermost`; a cause whose text the message
/// already holds (drivers often repeat their inner error in their own) is left out.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

/// Exponential backoff for transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries before giving up.
    pub max_retries: u32,
    /// First delay.
    pub initial_backoff: Duration,
    /// Delay ceiling.
    pub max_backoff: Duration,
    /// Growth factor.
    pub multiplier: u32,
}

impl RetryConfig {
    /// The delay before retry number `attempt` (0-based), capped at `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.saturating_pow(attempt);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// [`Self::backoff`] with jitter: between half of it and all of it, so that instances
    /// waiting out the same outage do not all come back in the same instant.
    pub fn backoff_with_jitter(&self, attempt: u32) -> Duration {
        use std::hash::{BuildHasher as _, Hasher as _};
        let full = self.backoff(attempt);
        // A fresh randomly keyed hasher: randomness enough for spreading retries.
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let share = 0.5 + (random % 1000) as f64 / 2000.0;
        full.mul_f64(share)
    }
}

/// What kind of failure an error is (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A database is out of reach: retried for as long as it lasts.
    Unavailable,
    /// Retrying this batch may succeed (a limited number of times).
    Transient,
    /// The batch cannot be written as it is.
    Data,
    /// A bug: an invariant broke.
    Fatal,
}

impl ErrorKind {
    /// Retrying may help: the database is out of reach, or the failure is transient.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Transient)
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Give up: report the error.
    Stop,
}

impl RetryConfig {
    /// The policy: an unavailable database is waited for with jittered backoff however many
    /// attempts it takes; a transient failure is retried with backoff until `max_retries`
    /// retries have been spent (`attempt` counts the retries so far); anything else stops at
    /// once.
    pub fn decide(&self, kind: ErrorKind, attempt: u32) -> Decision {
        match kind {
            ErrorKind::Unavailable => Decision::Retry(self.backoff_with_jitter(attempt)),
            ErrorKind::Transient if attempt < self.max_retries => {
                Decision::Retry(self.backoff(attempt))
            }
            _ => Decision::Stop,
        }
    }
}

/// What kind of failure a PostgreSQL or CockroachDB driver error is: a broken or refused
/// connection, SQLSTATE class 08, a server shutting down or starting (57P01–57P03), too many
/// connections (53300) or a read-only server (25006, during a failover) make the database
/// unavailable; serialization failures (40001), deadlocks (40P01) and lock timeouts (55P03)
/// are transient; anything else is the data's.
pub fn postgres_kind(e: &tokio_postgres::Error) -> ErrorKind {
    match e.code().map(tokio_postgres::error::SqlState::code) {
        Some(c) if c.starts_with("08") || c.starts_with("57P") => ErrorKind::Unavailable,
        Some("53300" | "25006") => ErrorKind::Unavailable,
        Some("40001" | "40P01" | "55P03") => ErrorKind::Transient,
        Some(_) => ErrorKind::Data,
        None if e.is_closed() || io_cause(e) => ErrorKind::Unavailable,
        // No SQLSTATE and no I/O failure: a value that did not convert, a protocol surprise.
        None => ErrorKind::Data,
    }
}

/// The kind of the first error in `e` and its causes that tells one: a target error, a
/// driver error of either protocol, or an I/O error (unavailable).
pub fn kind_in_chain(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    chain(e).find_map(|c| {
        if let Some(t) = c.downcast_ref::<crate::target::TargetError>() {
            Some(t.kind)
        } else if let Some(pg) = c.downcast_ref::<tokio_postgres::Error>() {
            Some(postgres_kind(pg))
        } else if let Some(my) = c.downcast_ref::<mysql_async::Error>() {
            Some(mysql_kind(my))
        } else {
            c.is::<std::io::Error>().then_some(ErrorKind::Unavailable)
        }
    })
}

/// `e` and its causes, outermost first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| c.source())
}

/// An I/O error among `e`'s causes (a refused, reset or timed-out connection).
fn io_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    chain(e).skip(1).any(|c| c.is::<std::io::Error>())
}

/// What kind of failure a MySQL/MariaDB driver error is: I/O failures, a closed connection,
/// too many connections (1040), a server shutting down (1053), a killed or timed-out
/// connection (1927, 4031, 2006, 2013) and a read-only server (1290, 1792, 1836: during a
/// failover) make the database unavailable; lock wait timeouts (1205) and deadlocks (1213) are
/// transient, as are other driver errors; anything else is the data's.
pub fn mysql_kind(e: &mysql_async::Error) -> ErrorKind {
    match e {
        mysql_async::Error::Io(_) => ErrorKind::Unavailable,
        mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
            ErrorKind::Unavailable
        }
        mysql_async::Error::Driver(_) => ErrorKind::Transient,
        mysql_async::Error::Server(se) => match se.code {
            1040 | 1053 | 1290 | 1792 | 1836 | 1927 | 2006 | 2013 | 4031 => ErrorKind::Unavailable,
            1205 | 1213 => ErrorKind::Transient,
            _ => ErrorKind::Data,
        },
        _ => ErrorKind::Data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried_and_only_so_often() {
        let retry = RetryConfig {
            max_retries: 2,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(60),
            multiplier: 2,
        };
        assert_eq!(
            retry.decide(ErrorKind::Transient, 0),
            Decision::Retry(Duration::from_millis(25))
        );
        assert_eq!(
            retry.decide(ErrorKind::Transient, 1),
            Decision::Retry(Duration::from_millis(50))
        );
        assert_eq!(retry.decide(ErrorKind::Transient, 2), Decision::Stop);
        assert_eq!(retry.decide(ErrorKind::Data, 0), Decision::Stop);
        assert_eq!(retry.decide(ErrorKind::Fatal, 0), Decision::Stop);
        assert_eq!(retry.backoff(5), Duration::from_millis(60), "capped");
    }

    #[test]
    fn an_unavailable_database_is_waited_for_without_limit_with_jitter() {
        let retry = RetryConfig {
            max_retries: 2,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(60),
            multiplier: 2,
        };
        let delays: Vec<Duration> = (0..200)
            .map(|attempt| match retry.decide(ErrorKind::Unavailable, attempt) {
                Decision::Retry(delay) => delay,
                Decision::Stop => panic!("gave up on attempt {attempt}"),
            })
            .collect();
        for (attempt, delay) in (0..).zip(&delays) {
            let full = retry.backoff(attempt);
            assert!(*delay >= full / 2 && *delay <= full, "attempt {attempt}: {delay:?}");
        }
        let late: std::collections::BTreeSet<_> = delays[10..].iter().collect();
        assert!(late.len() > 1, "jittered, not one fixed delay: {late:?}");
    }

    #[test]
    fn mysql_errors_are_classified_by_code() {
        let server = |code| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: String::new(),
                state: String::new(),
            })
        };
        for code in [1040, 1053, 1290, 1836, 1927, 2006, 2013] {
            assert_eq!(mysql_kind(&server(code)), ErrorKind::Unavailable, "{code}");
        }
        assert_eq!(mysql_kind(&server(1213)), ErrorKind::Transient);
        assert_eq!(mysql_kind(&server(1062)), ErrorKind::Data);
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(mysql_kind(&io), ErrorKind::Unavailable);
    }
}
