//! Errors as the operator reads them (one line with every cause), what kind a failure is,
//! and the one policy that decides, from the kind, whether to retry or stop.
//!
//! - [`ErrorKind::Transient`]: retrying may succeed (a lost connection, a restarting
//!   server, a serialization failure, a deadlock): retried with backoff, up to `--maxRetries`.
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
}

/// What kind of failure an error is (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying may succeed.
    Transient,
    /// The batch cannot be written as it is.
    Data,
    /// A bug: an invariant broke.
    Fatal,
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
    /// The policy: a transient failure is retried with backoff until `max_retries` retries
    /// have been spent (`attempt` counts the retries so far); anything else stops at once.
    pub fn decide(&self, kind: ErrorKind, attempt: u32) -> Decision {
        match kind {
            ErrorKind::Transient if attempt < self.max_retries => {
                Decision::Retry(self.backoff(attempt))
            }
            _ => Decision::Stop,
        }
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
}
