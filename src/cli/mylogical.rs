//! `replicator mylogical`: a MySQL or MariaDB binlog (row format, GTIDs) into a CockroachDB or
//! PostgreSQL target, through the userscript when one is given. See
//! [`crate::source::mysql`] for the source's design.

use anyhow::bail;
use clap::{ArgAction, Args};

use super::groups::SourceArgs;
use super::replicate::{self, PipelineArgs, ReplicationArgs};
use super::values::go_bool;
use crate::conn::Protocol;
use crate::conn::mysql::MyParams;
use crate::source::mysql::{MySource, MySourceConfig};
use crate::types::position::GtidSet;

/// `replicator mylogical` flags.
#[derive(Debug, Clone, Args)]
pub struct MylogicalArgs {
    /// Source flags.
    #[command(flatten)]
    pub source: SourceArgs,

    /// GTID position to start from on the first run: MySQL's executed set
    /// (uuid:1-29,uuid2:1-5) or MariaDB's GTID list (0-1-123,1-2-9). Later runs resume from
    /// the position stored in staging
    #[arg(long = "defaultGTIDSet", value_name = "GTIDS", help_heading = "Source")]
    pub default_gtid_set: Option<String>,

    /// Read column names and types from information_schema instead of the binlog's column
    /// metadata (for servers without binlog_row_metadata=FULL)
    #[arg(
        long = "fetchMetadata", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool, help_heading = "Source"
    )]
    pub fetch_metadata: bool,

    /// Server id replicator registers with on the source; unique among its replicas
    #[arg(
        long = "replicationProcessID",
        value_name = "ID",
        default_value = "10",
        help_heading = "Source"
    )]
    pub replication_process_id: u32,

    /// Target, staging, sequencer, userscript and metrics flags.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

impl ReplicationArgs for MylogicalArgs {
    fn pipeline(&self) -> &PipelineArgs {
        &self.pipeline
    }
}

/// Runs `replicator mylogical` until a signal or a permanent failure.
pub fn run(args: &MylogicalArgs) -> anyhow::Result<()> {
    replicate::run("mylogical", args, source)
}

/// The source these flags name, validated.
fn source(args: &MylogicalArgs) -> anyhow::Result<MySource> {
    let conn = args.source.validate(Protocol::MySql)?.conn;
    let params = MyParams::from_conn(&conn)?;
    let Some(database) = conn.database() else {
        bail!(
            "--sourceConn {conn}: name the database to replicate, e.g. mysql://user:pass@tcp(host:3306)/inventory"
        );
    };
    let default_gtids = match &args.default_gtid_set {
        Some(text) => {
            Some(text.parse::<GtidSet>().map_err(|e| anyhow::anyhow!("--defaultGTIDSet: {e}"))?)
        }
        None => None,
    };
    Ok(MySource::new(MySourceConfig {
        params,
        database,
        default_gtids,
        fetch_metadata: args.fetch_metadata,
        server_id: args.replication_process_id,
    }))
}
