//! `replicator mylogical`: a MySQL or MariaDB binlog (row format, GTIDs) into a CockroachDB or
//! PostgreSQL target, through the userscript when one is given. See
//! [`crate::source::mysql`] for the source's design.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Args};
use tokio::sync::{mpsc, watch};

use super::groups::SourceArgs;
use super::replicate::{self, Apply, PipelineArgs, PipelineConfig};
use super::values::go_bool;
use crate::conn::Protocol;
use crate::conn::mysql::MyParams;
use crate::script::transform::schema_level;
use crate::script::{ScriptPool, SourceTag};
use crate::sequencer::queue::QueueSender;
use crate::source::mysql::preflight::preflight;
use crate::source::mysql::stream::{self, Decoded};
use crate::source::mysql::{Flavor, rows::Problem};
use crate::staging::AnnouncingCheckpoints;
use crate::staging::CheckpointStore;
use crate::types::mutation::Position;
use crate::types::position::GtidSet;

/// How often the source sends a heartbeat while idle.
const HEARTBEAT: Duration = Duration::from_secs(5);

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

/// Runs `replicator mylogical` until a signal or a permanent failure.
pub fn run(args: &MylogicalArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("replicator")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args.clone()))
}

fn gtid_of(position: &Position) -> Option<GtidSet> {
    match position {
        Position::Gtid(set) => Some(set.clone()),
        _ => None,
    }
}

/// Why the stage stopped.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Values the target cannot hold, and no userscript to map them.
    #[error(
        "the source transaction ending at GTID position {position} holds a value the target \
         cannot hold: {problem}. Map it in a --userscript (e.g. to NULL), or change it on the \
         source"
    )]
    Unrepresentable {
        /// The transaction's position.
        position: String,
        /// The first such value.
        problem: Problem,
    },
    /// A userscript handler failed.
    #[error("the userscript failed on the source transaction ending at GTID position {position}")]
    Script {
        /// The transaction's position.
        position: String,
        /// The script's error.
        #[source]
        source: crate::script::ScriptError,
    },
}

/// Between the reading loop and the queue: values the target cannot hold, metrics, the
/// userscript's schema-level handlers.
async fn stage(
    mut input: mpsc::Receiver<Decoded>,
    queue: QueueSender,
    script: Option<(Arc<ScriptPool>, String)>,
    keys: HashMap<String, Vec<String>>,
) -> Result<(), StageError> {
    let metrics = crate::metrics::global();
    while let Some(decoded) = input.recv().await {
        let mut tx = decoded.transaction;
        if let Some(problem) = decoded.problems.into_iter().next() {
            if script.is_none() {
                return Err(StageError::Unrepresentable {
                    position: tx.position.to_string(),
                    problem,
                });
            }
            tracing::debug!(%problem, "passing a value the target cannot hold to the userscript");
        }
        metrics.count_source_mutations("mylogical", &tx.mutations);
        if let Some((pool, schema)) = &script {
            let position = tx.position.to_string();
            tx = schema_level(pool, schema, SourceTag::MyLogical, tx, |t| keys.get(t).cloned())
                .await
                .map_err(|source| StageError::Script { position, source })?;
        }
        let (position, commit_nanos) = (tx.position.clone(), tx.commit_nanos);
        if queue.send(tx).await.is_err() {
            return Ok(());
        }
        crate::status::global().received(&position, commit_nanos);
    }
    Ok(())
}

async fn run_async(mut args: MylogicalArgs) -> anyhow::Result<()> {
    // The script first: its setOptions may change the other flags.
    let pool =
        replicate::script_pool(&args.pipeline.script, replicate::flag_names::<MylogicalArgs>())?;
    if let Some(pool) = &pool
        && !pool.configured().options.is_empty()
    {
        args = replicate::with_script_options("mylogical", &pool.configured().options)?;
    }
    let source = args.source.validate(Protocol::MySql)?;
    let PipelineConfig { target, staging, sequencer, metrics } = args.pipeline.validate()?;
    let params = MyParams::from_conn(&source.conn)?;
    let Some(database) = source.conn.database() else {
        bail!(
            "--sourceConn {}: name the database to replicate, e.g. mysql://user:pass@tcp(host:3306)/inventory",
            source.conn
        );
    };
    let default_gtids = match &args.default_gtid_set {
        Some(text) => {
            Some(text.parse::<GtidSet>().map_err(|e| anyhow::anyhow!("--defaultGTIDSet: {e}"))?)
        }
        None => None,
    };

    // Preflight over an ordinary connection.
    let dials = crate::metrics::global();
    let mut conn = match params.connect().await {
        Ok(conn) => conn,
        Err(e) => {
            dials.mylogical_dial_failure_total.inc();
            return Err(
                anyhow::Error::new(e).context(format!("opening the source {}", params.redacted()))
            );
        }
    };
    let ready = preflight(&mut conn, params.user(), &database, args.fetch_metadata).await?;
    let tables = crate::source::mysql::preflight::database_tables(&mut conn, &database).await?;
    drop(conn);
    tracing::info!(flavor = %ready.flavor, version = %ready.version, position = %ready.current_position, "source checked");

    let opened = replicate::open_target(&target).await?;
    replicate::check_target(&target, &opened, &tables, pool.as_deref()).await?;
    let staging_db = replicate::open_staging(&staging).await?;
    let key = format!("mysql-wal-offset-{}", target.schema);
    let store = CheckpointStore::new(staging_db.schema.clone(), key.clone());
    // One replicator per staging schema and key: the position is read once the lease is ours.
    let lease = replicate::hold_lease(&staging, &staging_db, &key).await?;
    let stored =
        store.load_gtid(&staging_db.client).await.context("reading the stored position")?;
    let start = match (stored, default_gtids) {
        (Some(stored), _) => {
            tracing::info!(position = %stored, key = %key, "resuming from the stored position");
            stored
        }
        (None, Some(default)) => {
            tracing::info!(position = %default, "no stored position: starting at --defaultGTIDSet");
            default
        }
        (None, None) => bail!(
            "no position is stored under {key:?} in staging, so --defaultGTIDSet is required on \
             this first run: the GTID position the target's data is consistent with (the \
             source is now at {:?}; {})",
            ready.current_position,
            match ready.flavor {
                Flavor::MariaDb => "SELECT @@gtid_binlog_pos on MariaDB",
                Flavor::MySql => "SELECT @@gtid_executed on MySQL",
            }
        ),
    };
    let start = match (ready.flavor, start) {
        (Flavor::MariaDb, GtidSet::MySql(m)) if m.is_empty() => {
            GtidSet::MariaDb(Default::default())
        }
        (Flavor::MariaDb, GtidSet::MySql(_)) => bail!(
            "the source is MariaDB but the starting position {} is a MySQL GTID set: use \
             MariaDB's domain-server-seq form (SELECT @@gtid_binlog_pos)",
            args.default_gtid_set.as_deref().unwrap_or_default()
        ),
        (Flavor::MySql, GtidSet::MariaDb(_)) => bail!(
            "the source is MySQL but the starting position is a MariaDB GTID list: use MySQL's \
             uuid:1-29 form (SELECT @@gtid_executed)"
        ),
        (_, start) => start,
    };
    replicate::serve_metrics(&metrics, &target.conn, &staging.conn).await?;
    replicate::watch_status("mylogical", &target);

    // source → stage → queue → sequencer → target.
    let (announce, _) = watch::channel(start.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (decoded_tx, decoded_rx) = mpsc::channel(4);
    let (queue, queue_rx) = crate::sequencer::queue::bounded(sequencer.apply_queue_size);
    let stream_config = stream::StreamConfig {
        params,
        flavor: ready.flavor,
        server_id: args.replication_process_id,
        start,
        database,
        fetch_metadata: args.fetch_metadata,
        retry: sequencer.retry,
        heartbeat: HEARTBEAT,
    };
    let memo = (staging_db.schema.table("memo"), key);
    let reader = tokio::spawn(stream::run(stream_config, decoded_tx, stop_rx, memo));
    let script = pool.clone().map(|p| (p, target.schema.to_string()));
    let keys = crate::target::preflight::source_keys(&tables);
    let stager = tokio::spawn(stage(decoded_rx, queue, script, keys));

    let checkpoint_client =
        crate::conn::postgres::connect(&staging.conn).await.context("opening staging")?;
    let mut checkpoints = AnnouncingCheckpoints::new(
        checkpoint_client,
        staging.conn.clone(),
        store,
        announce,
        gtid_of,
    );
    let apply = Apply {
        sequencer: &sequencer,
        target: &target,
        opened: &opened,
        script: pool,
        source: SourceTag::MyLogical,
    };
    apply.run_to_end(queue_rx, &mut checkpoints, &stop_tx, reader, stager, lease).await
}
