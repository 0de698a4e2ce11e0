//! `replicator pglogical`: PostgreSQL logical replication (a slot with pgoutput and a
//! publication) into a CockroachDB or PostgreSQL target, through the userscript when one is
//! given. See [`crate::source::postgres`] for the source's design.

use std::time::Duration;

use anyhow::bail;
use clap::{ArgAction, Args};

use super::groups::SourceArgs;
use super::replicate::{self, PipelineArgs, ReplicationArgs};
use super::values::{byte_size, go_bool, go_duration};
use crate::conn::Protocol;
use crate::conn::postgres::PgParams;
use crate::source::postgres::{PgSource, PgSourceConfig};

/// `replicator pglogical` flags.
#[derive(Debug, Clone, Args)]
pub struct PglogicalArgs {
    /// Source flags.
    #[command(flatten)]
    pub source: SourceArgs,

    /// Replication slot to read (pgoutput)
    #[arg(
        long = "slotName",
        value_name = "NAME",
        default_value = "replicator",
        help_heading = "Source"
    )]
    pub slot_name: String,

    /// Publication naming the tables to replicate (CREATE PUBLICATION … FOR TABLE …)
    #[arg(long = "publicationName", value_name = "NAME", help_heading = "Source")]
    pub publication_name: Option<String>,

    /// Create the replication slot (pgoutput) when it does not exist
    #[arg(
        long = "createSlot", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool, help_heading = "Source"
    )]
    pub create_slot: bool,

    /// How often progress (the applied WAL position) is reported to the source
    #[arg(long = "standbyTimeout", value_name = "DURATION", default_value = "5s", value_parser = go_duration, help_heading = "Source")]
    pub standby_timeout: Duration,

    /// Warn when the slot makes the source keep more WAL than this (0: never), e.g. 1GiB
    #[arg(long = "retainedWALWarning", value_name = "SIZE", default_value = "1GiB", value_parser = byte_size, help_heading = "Source")]
    pub retained_wal_warning: usize,

    /// Target, staging, sequencer, userscript and metrics flags.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

impl ReplicationArgs for PglogicalArgs {
    fn pipeline(&self) -> &PipelineArgs {
        &self.pipeline
    }
}

/// Runs `replicator pglogical` until a signal or a permanent failure.
pub fn run(args: &PglogicalArgs) -> anyhow::Result<()> {
    replicate::run("pglogical", args, source)
}

/// The source these flags name, validated.
fn source(args: &PglogicalArgs) -> anyhow::Result<PgSource> {
    let conn = args.source.validate(Protocol::Postgres)?.conn;
    let Some(publication) = args.publication_name.clone() else {
        bail!(
            "--publicationName is required: name the publication of the tables to replicate \
             (create one with CREATE PUBLICATION molt_fetch FOR ALL TABLES;)"
        );
    };
    if args.standby_timeout.is_zero() {
        bail!("--standbyTimeout must be more than zero, e.g. 5s");
    }
    Ok(PgSource::new(PgSourceConfig {
        params: PgParams::from_conn(&conn)?,
        slot: args.slot_name.clone(),
        publication,
        create_slot: args.create_slot,
        standby_timeout: args.standby_timeout,
        retained_wal_warning: args.retained_wal_warning,
    }))
}
