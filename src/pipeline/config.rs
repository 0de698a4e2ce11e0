//! What the pipeline runs with: the validated settings of the target, staging, the sequencer
//! and metrics (built from the flags by `cli`; everything is checked before anything connects).

use std::time::Duration;

use crate::conn::{ConnString, Protocol};
use crate::sequencer::SequencerConfig;
use crate::types::name::DottedName;

/// Default staging schema on PostgreSQL (a schema in the staging connection's database).
pub const DEFAULT_STAGING_SCHEMA_POSTGRES: &str = "_replicator";
/// Default staging schema on CockroachDB (MOLT's).
pub const DEFAULT_STAGING_SCHEMA_COCKROACH: &str = "_replicator.public";
/// What every replication command runs with after its source, validated from its flags.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The target.
    pub target: TargetConfig,
    /// Staging.
    pub staging: StagingConfig,
    /// The sequencer.
    pub sequencer: SequencerConfig,
    /// Metrics.
    pub metrics: MetricsConfig,
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Where to write.
    pub conn: ConnString,
    /// The protocol `conn` speaks.
    pub protocol: Protocol,
    /// `[db, schema]` for PostgreSQL/CockroachDB, `[database]` for MySQL/MariaDB and Oracle.
    pub schema: DottedName,
    /// Target pool size.
    pub max_pool_size: u32,
    /// Periodic schema re-read; `None` when off.
    pub schema_refresh: Option<Duration>,
}

/// A validated staging location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingConfig {
    /// The staging database (PostgreSQL protocol).
    pub conn: ConnString,
    /// The schema as given; `None` means the default, which depends on whether the server is
    /// PostgreSQL ([`DEFAULT_STAGING_SCHEMA_POSTGRES`]) or CockroachDB
    /// ([`DEFAULT_STAGING_SCHEMA_COCKROACH`]), known once connected.
    pub schema: Option<DottedName>,
    /// Create the schema if missing.
    pub create_schema: bool,
}

/// Where metrics are served, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `host:port` to listen on (`:port` becomes `0.0.0.0:port`).
    pub addr: Option<String>,
}
