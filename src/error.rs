//! Errors as the operator reads them (one line with every cause), and the retry policy for
//! failures that are transient.

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
