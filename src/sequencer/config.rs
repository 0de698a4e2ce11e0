//! The sequencer's settings, validated from the flags (`cli::groups::SequencerArgs`).

use std::time::Duration;

use crate::error::RetryConfig;

/// Validated sequencer tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencerConfig {
    /// Rows per target transaction.
    pub flush_size: usize,
    /// Longest wait before a flush.
    pub flush_period: Duration,
    /// Apply independent table groups concurrently.
    pub parallel_applies: bool,
    /// Requested concurrent target transactions (see [`Self::effective_parallelism`]).
    pub parallelism: usize,
    /// Mutations queued before the source pauses.
    pub apply_queue_size: usize,
    /// Collapse same-key mutations in a batch.
    pub collapse_mutations: bool,
    /// Retry policy for transient failures.
    pub retry: RetryConfig,
    /// Shutdown grace period.
    pub grace_period: Duration,
}

impl SequencerConfig {
    /// `--parallelism` capped at 80% of the target pool (at least 1), so the pool always has
    /// connections left for introspection and staging.
    pub fn effective_parallelism(&self, target_pool_size: u32) -> usize {
        let cap = (target_pool_size as usize * 8 / 10).max(1);
        self.parallelism.min(cap)
    }
}
