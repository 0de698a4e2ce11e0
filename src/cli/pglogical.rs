//! `replicator pglogical`: PostgreSQL logical replication (a slot with pgoutput and a
//! publication) into a CockroachDB or PostgreSQL target, through the userscript when one is
//! given. See [`crate::source::postgres`] for the source's design.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Args};
use tokio::sync::{mpsc, watch};

use super::groups::SourceArgs;
use super::replicate::{self, Apply, PipelineArgs, PipelineConfig};
use super::values::{byte_size, go_bool, go_duration};
use crate::conn::Protocol;
use crate::conn::postgres::PgParams;
use crate::script::SourceTag;
use crate::source::postgres::preflight::preflight;
use crate::source::postgres::{forward, stream};
use crate::staging::AnnouncingCheckpoints;
use crate::staging::CheckpointStore;
use crate::types::mutation::Position;
use crate::types::position::PgLsn;

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

/// Runs `replicator pglogical` until a signal or a permanent failure.
pub fn run(args: &PglogicalArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("replicator")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args.clone()))
}

fn lsn_of(position: &Position) -> Option<PgLsn> {
    match position {
        Position::Lsn(lsn) => Some(*lsn),
        _ => None,
    }
}

async fn run_async(mut args: PglogicalArgs) -> anyhow::Result<()> {
    // The script first: its setOptions may change the other flags.
    let pool =
        replicate::script_pool(&args.pipeline.script, replicate::flag_names::<PglogicalArgs>())?;
    if let Some(pool) = &pool
        && !pool.configured().options.is_empty()
    {
        args = replicate::with_script_options("pglogical", &pool.configured().options)?;
    }
    let source = args.source.validate(Protocol::Postgres)?;
    let PipelineConfig { target, staging, sequencer, metrics } = args.pipeline.validate()?;
    let Some(publication) = args.publication_name.clone() else {
        bail!(
            "--publicationName is required: name the publication of the tables to replicate \
             (create one with CREATE PUBLICATION molt_fetch FOR ALL TABLES;)"
        );
    };
    if args.standby_timeout.is_zero() {
        bail!("--standbyTimeout must be more than zero, e.g. 5s");
    }
    let params = PgParams::from_conn(&source.conn)?;

    // Preflight over an ordinary connection.
    let dials = crate::metrics::global();
    let source_client = match crate::conn::postgres::connect_params(&params).await {
        Ok(client) => client,
        Err(e) => {
            dials.pglogical_dial_failure_total.inc();
            return Err(anyhow::Error::new(e).context("opening the source"));
        }
    };
    let ready = preflight(&source_client, &publication, &args.slot_name, args.create_slot).await?;
    let qualify = published_duplicates(&source_client, &publication, pool.is_some()).await?;
    let tables = crate::source::postgres::preflight::published_tables(
        &source_client,
        &publication,
        &qualify,
    )
    .await?;
    drop(source_client);

    let opened = replicate::open_target(&target).await?;
    replicate::check_target(&target, &opened, &tables, pool.as_deref()).await?;
    let staging_db = replicate::open_staging(&staging).await?;
    let key = format!("pglogical-wal-offset-{}", target.schema);
    let store = CheckpointStore::new(staging_db.schema.clone(), key.clone());
    // One replicator per staging schema and key: the position is read once the lease is ours.
    let lease = replicate::hold_lease(&staging, &staging_db, &key).await?;
    let stored = store.load_lsn(&staging_db.client).await.context("reading the stored position")?;
    let start = match (stored, ready.confirmed) {
        (Some(stored), _) => {
            tracing::info!(position = %stored, key = %key, "resuming from the stored position");
            stored
        }
        (None, Some(confirmed)) => {
            tracing::info!(position = %confirmed, slot = %args.slot_name, "no stored position: starting at the slot's confirmed position");
            confirmed
        }
        (None, None) => PgLsn(0),
    };
    replicate::serve_metrics(&metrics, &target.conn, &staging.conn).await?;
    replicate::watch_status("pglogical", &target);
    tokio::spawn(watch_retained_wal(
        params.clone(),
        args.slot_name.clone(),
        args.retained_wal_warning,
    ));

    // source → stage → queue → sequencer → target; positions flow back through `committed`.
    let (committed_tx, committed_rx) = watch::channel(start);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (decoded_tx, decoded_rx) = mpsc::channel(4);
    let (queue, queue_rx) = crate::sequencer::queue::bounded(sequencer.apply_queue_size);
    let stream_config = stream::StreamConfig {
        params,
        slot: args.slot_name.clone(),
        publication,
        standby_timeout: args.standby_timeout,
        start,
        retry: sequencer.retry,
        qualify,
    };
    let reader =
        tokio::spawn(stream::run(stream_config, decoded_tx, committed_rx.clone(), stop_rx));
    let truncate_client =
        crate::conn::postgres::connect(&target.conn).await.context("opening the target")?;
    let stage_config = forward::Stage {
        queue,
        script: pool.clone().map(|p| (p, target.schema.to_string())),
        truncate: (truncate_client, opened.schema.clone()),
        target_conn: target.conn.clone(),
        committed: committed_rx,
        memo: (staging_db.schema.table("memo"), key),
        keys: crate::target::preflight::source_keys(&tables),
    };
    let stager = tokio::spawn(forward::run(decoded_rx, stage_config));

    let checkpoint_client =
        crate::conn::postgres::connect(&staging.conn).await.context("opening staging")?;
    let mut checkpoints = AnnouncingCheckpoints::new(
        checkpoint_client,
        staging.conn.clone(),
        store,
        committed_tx,
        lsn_of,
    );
    let apply = Apply {
        sequencer: &sequencer,
        target: &target,
        opened: &opened,
        script: pool,
        source: SourceTag::PgLogical,
    };
    apply.run_to_end(queue_rx, &mut checkpoints, &stop_tx, reader, stager, lease).await
}

/// Table names the publication has in more than one schema: an error without a userscript;
/// with one, those tables are reported as `schema.table` for the script to route.
async fn published_duplicates(
    client: &tokio_postgres::Client,
    publication: &str,
    scripted: bool,
) -> anyhow::Result<HashSet<String>> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .context("listing the publication's tables")?;
    tracing::info!(publication, tables = rows.len(), "publication read");
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        by_name.entry(row.get(1)).or_default().push(row.get(0));
    }
    by_name.values_mut().for_each(|schemas| schemas.sort());
    let duplicates: BTreeMap<_, _> = by_name.into_iter().filter(|(_, s)| s.len() > 1).collect();
    if duplicates.is_empty() {
        return Ok(HashSet::new());
    }
    let listed: Vec<String> = duplicates
        .iter()
        .map(|(name, schemas)| {
            let qualified: Vec<String> = schemas.iter().map(|s| format!("{s}.{name}")).collect();
            qualified.join(" and ")
        })
        .collect();
    if !scripted {
        bail!(
            "publication {publication:?} has tables with the same name in several schemas ({}): \
             they would all write the same target table. Publish only one of each, or route them \
             apart with a --userscript (such tables then reach it as schema.table)",
            listed.join("; ")
        );
    }
    tracing::warn!(tables = %listed.join("; "), "same-named tables reach the userscript as schema.table");
    Ok(duplicates.into_keys().collect())
}

/// How often the slot's retained WAL is read.
const RETAINED_WAL_EVERY: Duration = Duration::from_secs(15);

/// Reads how much WAL the source keeps for `slot` (from its restart position to the current
/// end of WAL) into `pglogical_slot_retained_wal_bytes`, and warns when it passes `warn_at`
/// bytes: a slot that does not advance makes the source keep WAL until its disk fills.
/// Runs until the process ends; a failed read is retried on a new connection.
async fn watch_retained_wal(params: PgParams, slot: String, warn_at: usize) {
    let gauge = &crate::metrics::global().pglogical_slot_retained_wal_bytes;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut warned = false;
    loop {
        if client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            client = crate::conn::postgres::connect_params(&params).await.ok();
        }
        let retained = match &client {
            Some(c) => c
                .query_opt(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .ok()
                .flatten()
                .and_then(|row| row.get::<_, Option<i64>>(0)),
            None => None,
        };
        if let Some(bytes) = retained {
            gauge.set(bytes);
            let over = warn_at > 0 && usize::try_from(bytes).is_ok_and(|b| b > warn_at);
            if over && !warned {
                tracing::warn!(
                    slot = %slot,
                    retained_mib = bytes / (1 << 20),
                    "the source keeps more WAL for the replication slot than --retainedWALWarning: \
                     replication is behind or stopped; if the slot is no longer needed, drop it \
                     (SELECT pg_drop_replication_slot(...)) before the source's disk fills"
                );
            } else if !over && warned {
                tracing::info!(slot = %slot, "the WAL kept for the replication slot is back under --retainedWALWarning");
            }
            warned = over;
        }
        tokio::time::sleep(RETAINED_WAL_EVERY).await;
    }
}
