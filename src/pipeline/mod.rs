//! The composition root: every replication command runs one pipeline around its source.
//!
//! ```text
//! Source::run ──▶ transform (schema-level userscript) ──▶ queue ──▶ sequencer ──▶ Target
//!      ▲                                                                │
//!      └── committed position ◀── AnnouncingCheckpoints (staging memo) ◀┘ after each commit
//! ```
//!
//! [`run`] checks the source ([`Source::preflight`]), opens the target and checks it against
//! what the source will send, opens staging and takes the lease, reads the stored position and
//! asks the source where to start, serves metrics and status, then spawns the source and the
//! userscript stage, runs the sequencer until the source ends, a signal asks to stop (then the
//! queue is applied within `--gracePeriod`), the lease is lost or a batch fails, stores the
//! last checkpoint, stops the source and reports the first failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::conn::{ConnString, Protocol};
use crate::script::{ScriptError, ScriptPool, SourceTag};
use crate::sequencer::queue::QueueSender;
use crate::sequencer::{Input, Progress, SequencerError};
use crate::source::{MemoRef, Source, SourceError, SourceRun, TargetRef};
use crate::staging::lease::{Held, Lease, LeaseError};
use crate::staging::{AnnouncingCheckpoints, CheckpointStore, Checkpoints, StagingDialect};
use crate::staging::{StagingError, StagingSchema};
use crate::target::TargetError;
use crate::target::factory::{AnyTarget, TargetSpec};
use crate::target::postgres::apply::Dialect;
use crate::target::postgres::{Server, check_database};
use crate::target::preflight::{Problem, SourceTable};
use crate::types::mutation::SourceTransaction;

pub mod config;
pub mod failback;

use config::{DEFAULT_STAGING_SCHEMA_COCKROACH, DEFAULT_STAGING_SCHEMA_POSTGRES};
pub use config::{MetricsConfig, PipelineConfig, StagingConfig, TargetConfig};

/// Why a pipeline could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A check refused to go on; the message says what is wrong and how to fix it.
    #[error("{0}")]
    Refused(String),
    /// A step failed.
    #[error("{what}")]
    Failed {
        /// The step (`opening the target`).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sequencer stopped on a failure.
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
    /// The lease could not be taken or was lost.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// A schema-level userscript handler failed.
    #[error("the userscript failed on the source transaction ending at {position}")]
    Script {
        /// The transaction's position.
        position: String,
        /// The script's error.
        #[source]
        source: Box<ScriptError>,
    },
}

impl PipelineError {
    /// A database was out of reach, or the lease was lost (staging out of reach for longer
    /// than the lease, or another instance took it over): replication can start again from
    /// the last checkpoint once the outage is over, as a standby first.
    pub fn is_outage(&self) -> bool {
        use crate::error::{ErrorKind, kind_in_chain};
        match self {
            PipelineError::Lease(LeaseError::Lost { .. }) => true,
            PipelineError::Lease(LeaseError::Database { source, .. }) => {
                crate::error::postgres_kind(source) == ErrorKind::Unavailable
            }
            PipelineError::Source(e) => e.is_unavailable(),
            PipelineError::Sequencer(SequencerError::Open { kind, .. }) => {
                *kind == ErrorKind::Unavailable
            }
            PipelineError::Sequencer(SequencerError::Apply { source, .. }) => {
                source.kind == ErrorKind::Unavailable
            }
            PipelineError::Failed { source, .. } => {
                kind_in_chain(source.as_ref()) == Some(ErrorKind::Unavailable)
            }
            _ => false,
        }
    }
}

/// Whether a pipeline ran (held its lease) in this process: from then on an outage that ends
/// it is waited out and replication starts again ([`PipelineError::is_outage`]); before, a
/// failure to start is reported at once (a wrong host or port looks the same as an outage).
pub fn has_run() -> bool {
    RAN.load(std::sync::atomic::Ordering::SeqCst)
}

static RAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Names the step a failure happened in.
trait Step<T> {
    fn step(self, what: &str) -> Result<T, PipelineError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, PipelineError> {
        self.map_err(|e| PipelineError::Failed { what: what.to_owned(), source: Box::new(e) })
    }
}

/// This process holds its lease (`/_/healthz` says `active`; before, `standby`).
static ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Replicates from `source` until a signal asks to stop, or a failure (see the module
/// documentation). `script` is the loaded userscript, if any.
pub async fn run<S: Source>(
    mut source: S,
    config: PipelineConfig,
    script: Option<Arc<ScriptPool>>,
) -> Result<(), PipelineError> {
    let PipelineConfig { target, staging, sequencer, metrics } = &config;
    let tables = source.preflight(script.is_some()).await?;
    let opened = open_target(target).await?;
    check_target(target, &opened, &tables, script.as_deref()).await?;
    let staging_db = open_staging(staging).await?;
    let key = source.memo_key(&target.schema.to_string());
    let store = CheckpointStore::new(staging_db.schema.clone(), key.clone());
    serve_metrics(metrics, serve_metrics_checks(&target.conn, target.protocol, &staging.conn))
        .await?;
    crate::server::set_role(Box::new(|| {
        if ACTIVE.load(std::sync::atomic::Ordering::SeqCst) { "active" } else { "standby" }
    }));
    // One replicator per staging schema and key: a second waits as a standby, and the
    // position is read once the lease is ours.
    let acquired = tokio::select! {
        lease = Lease::acquire(&staging_db.client, &staging_db.schema, &key) => lease?,
        () = crate::sequencer::shutdown::signal() => {
            tracing::info!("stopping: this standby never held the lease");
            return Ok(());
        }
    };
    let lease = hold_lease(staging, acquired).await?;
    if crate::sequencer::shutdown::requested() {
        lease.release().await;
        tracing::info!("stopping: asked to before replication began");
        return Ok(());
    }
    ACTIVE.store(true, std::sync::atomic::Ordering::SeqCst);
    RAN.store(true, std::sync::atomic::Ordering::SeqCst);
    let stored = store.load_text(&staging_db.client).await.step("reading the stored position")?;
    let start = source.start(stored.as_deref(), &key)?;
    watch_status(source.tag().name(), target);

    let (committed_tx, committed_rx) = watch::channel(start.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    // One transaction in hand between the source and the userscript stage: the queue is the
    // buffer (--targetApplyQueueSize), and memory stays bounded by it.
    let (source_tx, source_rx) = mpsc::channel(1);
    let (queue, queue_rx) = crate::sequencer::queue::bounded(sequencer.apply_queue_size);
    let tag = source.tag();
    let run = SourceRun {
        start,
        out: source_tx,
        committed: committed_rx,
        stop: stop_rx,
        scripted: script.is_some(),
        target: TargetRef { conn: target.conn.clone(), schema: opened.schema.clone() },
        memo: MemoRef { table: staging_db.schema.table("memo"), key },
        retry: sequencer.retry,
    };
    let reader = tokio::spawn(source.run(run));
    let stage = Transform {
        queue,
        script: script.clone(),
        schema: target.schema.to_string(),
        tag,
        keys: Arc::new(crate::target::preflight::source_keys(&tables)),
    };
    let stager = tokio::spawn(stage.run(source_rx));

    let checkpoint_client =
        crate::conn::postgres::connect(&staging.conn).await.step("opening staging")?;
    let mut checkpoints = AnnouncingCheckpoints::new(
        checkpoint_client,
        staging.conn.clone(),
        store,
        committed_tx,
        |p| Some(p.clone()),
    );
    let apply = Apply { sequencer, target, opened: &opened, script, source: tag };
    apply.run_to_end(queue_rx, &mut checkpoints, &stop_tx, reader, stager, lease).await
}

/// Between the source and the queue: counts what the source sends, runs the userscript's
/// schema-level handlers, and hands each transaction to the sequencer's queue, in source order.
/// With several engines, as many transactions are in the script at once (the first still
/// running holds the later ones back), so the stage keeps every engine busy.
struct Transform {
    queue: QueueSender,
    /// The userscript.
    script: Option<Arc<ScriptPool>>,
    /// The target schema as scripts name it (`db.public`).
    schema: String,
    tag: SourceTag,
    /// Source tables' key columns, to name a row a handler fails on.
    keys: Arc<HashMap<String, Vec<String>>>,
}

type Scripting = tokio::task::JoinHandle<Result<SourceTransaction, PipelineError>>;

impl Transform {
    /// Runs until `input` closes, or the queue closes (the sequencer reports its own error).
    async fn run(self, mut input: mpsc::Receiver<SourceTransaction>) -> Result<(), PipelineError> {
        let metrics = crate::metrics::global();
        let Some(pool) = self.script.clone() else {
            while let Some(tx) = input.recv().await {
                metrics.count_source_mutations(self.tag.name(), &tx.mutations);
                if !self.forward(tx).await {
                    return Ok(());
                }
            }
            return Ok(());
        };
        let depth = pool.workers().max(1);
        let mut running: std::collections::VecDeque<Scripting> = std::collections::VecDeque::new();
        let mut open = true;
        while open || !running.is_empty() {
            // Fill the engines while the source has transactions ready; wait for the oldest
            // one otherwise.
            // (`finished` never ends while nothing is running.)
            let next = if open && running.len() < depth {
                tokio::select! {
                    biased;
                    tx = input.recv() => tx,
                    done = finished(&mut running) => {
                        if !self.forward(done?).await {
                            return Ok(());
                        }
                        continue;
                    }
                }
            } else {
                let done = finished(&mut running).await?;
                if !self.forward(done).await {
                    return Ok(());
                }
                continue;
            };
            match next {
                Some(tx) => {
                    metrics.count_source_mutations(self.tag.name(), &tx.mutations);
                    running.push_back(self.script_one(&pool, tx));
                }
                None => open = false,
            }
        }
        Ok(())
    }

    /// Starts the schema-level handlers on one transaction.
    fn script_one(&self, pool: &Arc<ScriptPool>, tx: SourceTransaction) -> Scripting {
        let (pool, schema, tag, keys) =
            (pool.clone(), self.schema.clone(), self.tag, self.keys.clone());
        tokio::spawn(async move {
            let position = tx.position.to_string();
            crate::script::transform::schema_level(&pool, &schema, tag, tx, |t| {
                keys.get(t).cloned()
            })
            .await
            .map_err(|source| PipelineError::Script { position, source: Box::new(source) })
        })
    }

    /// Hands a transaction to the queue; `false` once the queue is closed.
    async fn forward(&self, tx: SourceTransaction) -> bool {
        let (position, commit_nanos) = (tx.position.clone(), tx.commit_nanos);
        if self.queue.send(tx).await.is_err() {
            return false;
        }
        crate::status::global().received(&position, commit_nanos);
        true
    }
}

/// The oldest transaction in the script, once its handlers are done.
async fn finished(
    running: &mut std::collections::VecDeque<Scripting>,
) -> Result<SourceTransaction, PipelineError> {
    let Some(front) = running.front_mut() else {
        return std::future::pending().await;
    };
    let outcome = front.await;
    running.pop_front();
    match outcome {
        Ok(result) => result,
        Err(e) => Err(PipelineError::Refused(format!("the userscript stage stopped: {e}"))),
    }
}

/// The target, opened and checked.
pub struct OpenedTarget {
    /// `db` of `--targetSchema`.
    pub database: String,
    /// The schema written into.
    pub schema: String,
    /// CockroachDB or PostgreSQL SQL.
    pub dialect: Dialect,
}

/// Connects to the target, checks `--targetSchema` against it and tells the dialect.
pub async fn open_target(target: &TargetConfig) -> Result<OpenedTarget, PipelineError> {
    if target.protocol != Protocol::Postgres {
        return Err(PipelineError::Refused(format!(
            "--targetConn {}: this command writes to CockroachDB or PostgreSQL (postgres://); \
             MySQL and MariaDB targets are for `replicator start` (failback)",
            target.conn
        )));
    }
    let parts = target.schema.parts();
    let (database, schema) = (parts[0].clone(), parts[1].clone());
    let client = crate::conn::postgres::connect(&target.conn).await.step("opening the target")?;
    let server = check_database(&client, "targetSchema", &database, &schema)
        .await
        .map_err(PipelineError::Refused)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .step("reading the target's schemas")?
        .is_some();
    if !exists {
        return Err(PipelineError::Refused(format!(
            "--targetSchema {}: schema {schema:?} does not exist in the target database: create \
             it (CREATE SCHEMA \"{schema}\") and its tables first",
            target.schema
        )));
    }
    let dialect = match server {
        Server::Postgres => Dialect::Postgres,
        Server::Cockroach => Dialect::Cockroach,
    };
    Ok(OpenedTarget { database, schema, dialect })
}

/// Checks the target against the tables the source will send ([`crate::target::preflight`])
/// and reports every problem at once. Without a userscript a problem stops the start; with
/// one, problems of same-named tables are warnings (its schema-level handlers may filter,
/// rename or route rows anywhere), while a table it configures with `configureTargetTables`
/// must exist.
pub async fn check_target(
    target: &TargetConfig,
    opened: &OpenedTarget,
    tables: &[SourceTable],
    script: Option<&ScriptPool>,
) -> Result<(), PipelineError> {
    let client = crate::conn::postgres::connect(&target.conn).await.step("opening the target")?;
    let schema = crate::target::postgres::introspect::introspect(&client, &opened.schema)
        .await
        .step("reading the target's tables")?;
    let problems = crate::target::preflight::compare(tables, &schema);
    let list = |problems: &[Problem]| -> String {
        problems.iter().map(|p| format!("\n  - {p}")).collect()
    };
    let Some(pool) = script else {
        if problems.is_empty() {
            tracing::info!(tables = tables.len(), schema = %target.schema, "target checked: it has every table and column the source sends");
            return Ok(());
        }
        return Err(PipelineError::Refused(format!(
            "target schema {} is not ready for what the source sends ({} problem{}):{}\nFix \
             them and start again; nothing was replicated",
            target.schema,
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            list(&problems)
        )));
    };
    for problem in &problems {
        tracing::warn!(problem = %problem, "target check (the userscript may filter, rename or route these rows)");
    }
    let prefix = format!("{}.", target.schema);
    let missing: Vec<Problem> = pool
        .configured()
        .tables
        .iter()
        .filter_map(|t| {
            let name = t.name.strip_prefix(&prefix).unwrap_or(&t.name);
            schema.table(name).is_none().then(|| Problem::ScriptTable { table: t.name.clone() })
        })
        .collect();
    if !missing.is_empty() {
        return Err(PipelineError::Refused(format!(
            "target schema {} lacks tables the userscript configures:{}",
            target.schema,
            list(&missing)
        )));
    }
    tracing::info!(tables = tables.len(), warnings = problems.len(), schema = %target.schema, "target checked");
    Ok(())
}

/// Staging, ready: a client on it and the resolved schema.
pub struct OpenedStaging {
    /// The staging client.
    pub client: tokio_postgres::Client,
    /// Where staging's tables live.
    pub schema: StagingSchema,
    /// PostgreSQL or CockroachDB.
    pub dialect: StagingDialect,
}

/// Connects to staging, resolves `--stagingSchema` and creates staging's tables.
pub async fn open_staging(staging: &StagingConfig) -> Result<OpenedStaging, PipelineError> {
    let client = crate::conn::postgres::connect(&staging.conn).await.step("opening staging")?;
    let version: String =
        client.query_one("SELECT version()", &[]).await.step("asking staging what it is")?.get(0);
    let cockroach = version.contains("CockroachDB");
    let default =
        if cockroach { DEFAULT_STAGING_SCHEMA_COCKROACH } else { DEFAULT_STAGING_SCHEMA_POSTGRES };
    let parts: Vec<String> = match &staging.schema {
        Some(name) => name.parts().to_vec(),
        None => default.split('.').map(str::to_owned).collect(),
    };
    let schema = match (cockroach, parts.as_slice()) {
        (_, [schema]) => StagingSchema { database: None, schema: schema.clone() },
        (true, [db, schema]) => {
            StagingSchema { database: Some(db.clone()), schema: schema.clone() }
        }
        (false, [db, schema]) => {
            check_database(&client, "stagingSchema", db, schema)
                .await
                .map_err(PipelineError::Refused)?;
            StagingSchema { database: None, schema: schema.clone() }
        }
        _ => {
            return Err(PipelineError::Refused("--stagingSchema takes schema or db.schema".into()));
        }
    };
    let dialect = if cockroach { StagingDialect::Cockroach } else { StagingDialect::Postgres };
    crate::staging::prepare(&client, dialect, &schema, staging.create_schema).await.map_err(
        |e| match e {
            StagingError::MissingSchema(_) => PipelineError::Refused(e.to_string()),
            other => {
                PipelineError::Failed { what: "preparing staging".into(), source: Box::new(other) }
            }
        },
    )?;
    Ok(OpenedStaging { client, schema, dialect })
}

/// Keeps renewing `lease` (taken with [`Lease::acquire`]: a second replicator on the same
/// staging schema and key waits there as a standby until the first is gone) on a connection
/// of its own (see [`crate::staging::lease`]).
pub async fn hold_lease(staging: &StagingConfig, lease: Lease) -> Result<Held, PipelineError> {
    let client = crate::conn::postgres::connect(&staging.conn).await.step("opening staging")?;
    Ok(lease.hold(client, staging.conn.clone()))
}

/// Names the replication in `/_/status` and metric labels, and logs where it stands at
/// least once a minute ([`crate::status`]).
pub fn watch_status(source: &str, target: &TargetConfig) {
    static REPORTING: std::sync::Once = std::sync::Once::new();
    let status = crate::status::global();
    status.start(source, &target.schema.to_string());
    REPORTING.call_once(|| {
        tokio::spawn(status.report());
    });
}

/// The health checks of `/_/healthz`: staging, then the target (either protocol).
pub fn serve_metrics_checks(
    target: &ConnString,
    protocol: Protocol,
    staging: &ConnString,
) -> Vec<(String, crate::server::HealthCheck)> {
    let target_check = match protocol {
        Protocol::MySql => crate::server::mysql_check(target.clone()),
        _ => crate::server::postgres_check(target.clone()),
    };
    vec![
        ("staging".to_owned(), crate::server::postgres_check(staging.clone())),
        ("target".to_owned(), target_check),
    ]
}

/// Serves `/_/varz`, `/_/healthz` and `/_/status` when `--metricsAddr` is set, with `checks`
/// behind `/_/healthz`; once per process (a pipeline started again after an outage keeps the
/// listener).
pub async fn serve_metrics(
    metrics: &MetricsConfig,
    checks: Vec<(String, crate::server::HealthCheck)>,
) -> Result<(), PipelineError> {
    static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(addr) = &metrics.addr else { return Ok(()) };
    if SERVING.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let addr = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.clone() };
    crate::server::serve_metrics(&addr, checks, Duration::from_secs(5))
        .await
        .step(&format!("--metricsAddr {addr}: cannot listen"))?;
    SERVING.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// How the sequencer writes.
struct Apply<'a> {
    sequencer: &'a crate::sequencer::SequencerConfig,
    target: &'a TargetConfig,
    opened: &'a OpenedTarget,
    script: Option<Arc<ScriptPool>>,
    /// Which source, for the script's `meta`.
    source: SourceTag,
}

impl Apply<'_> {
    async fn make_target(&self) -> Result<AnyTarget, TargetError> {
        let spec = TargetSpec {
            conn: self.target.conn.clone(),
            schema: self.opened.schema.clone(),
            collapse: self.sequencer.collapse_mutations,
            schema_refresh: self.target.schema_refresh,
        };
        let target = crate::target::factory::open(&spec).await?;
        match &self.script {
            Some(pool) => {
                target.with_script(pool.clone(), &self.target.schema.to_string(), self.source)
            }
            None => Ok(target),
        }
    }

    /// Runs the sequencer until the source ends, a signal asks to stop, the lease is lost or a
    /// batch fails; then stores the last checkpoint, stops the source (`stop`) and reports the
    /// first failure: the source's (`reader`), the userscript stage's (`stager`), then the
    /// sequencer's — the first two are why the queue closed.
    async fn run_to_end(
        &self,
        input: impl Input,
        checkpoints: &mut AnnouncingCheckpoints,
        stop: &watch::Sender<bool>,
        reader: tokio::task::JoinHandle<Result<(), SourceError>>,
        stager: tokio::task::JoinHandle<Result<(), PipelineError>>,
        mut lease: Held,
    ) -> Result<(), PipelineError> {
        let grace = self.sequencer.grace_period;
        let run = crate::sequencer::shutdown::run_until(
            self.run(input, checkpoints),
            crate::sequencer::shutdown::signal(),
            || {
                stop.send_replace(true);
            },
            grace,
        );
        // Nothing more is applied once the lease is lost: another instance may hold it.
        let outcome = tokio::select! {
            outcome = run => outcome.map_err(PipelineError::from),
            lost = lease.lost() => Err(PipelineError::from(lost)),
        };
        if let Err(e) = checkpoints.flush(grace).await {
            tracing::warn!(error = %e, "the last checkpoint was not stored; a restart replays from the one before");
        }
        checkpoints.close().await;
        // Both end once told to stop (the reader) or once their input closes (the stage);
        // one that does not within `wait` is ended (a pipeline started again after an outage
        // must not meet this one's source session).
        stop.send_replace(true);
        let wait = Duration::from_secs(5);
        let (reader_abort, stager_abort) = (reader.abort_handle(), stager.abort_handle());
        let read = tokio::time::timeout(wait, reader).await;
        let staged = tokio::time::timeout(wait, stager).await;
        reader_abort.abort();
        stager_abort.abort();
        lease.release().await;
        ACTIVE.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(Ok(Err(e))) = read {
            return Err(e.into());
        }
        if let Ok(Ok(Err(e))) = staged {
            return Err(e);
        }
        let progress = outcome?;
        tracing::info!(
            transactions = progress.transactions,
            rows = progress.mutations,
            commits = progress.commits,
            "stopped"
        );
        Ok(())
    }

    /// Runs the sequencer over `input` until it closes or a batch fails.
    async fn run<C: Checkpoints>(
        &self,
        input: impl Input,
        checkpoints: &mut C,
    ) -> Result<Progress, SequencerError> {
        let opening = |message: String, kind| SequencerError::Open { message, kind };
        let unavailable = crate::error::ErrorKind::Unavailable;
        if !self.sequencer.parallel_applies {
            let mut target = self.make_target().await.map_err(|e| opening(e.message, e.kind))?;
            return crate::sequencer::run_immediate(
                self.sequencer,
                input,
                &mut target,
                checkpoints,
            )
            .await;
        }
        let client = crate::conn::postgres::connect(&self.target.conn)
            .await
            .map_err(|e| opening(crate::error::with_causes(&e), unavailable))?;
        let schema = crate::target::postgres::introspect::introspect(&client, &self.opened.schema)
            .await
            .map_err(|e| opening(e.to_string(), crate::error::postgres_kind(&e)))?;
        let groups: HashMap<String, usize> =
            crate::sequencer::parallel::table_groups(&schema.names(), &schema.foreign_keys);
        let workers = self.sequencer.effective_parallelism(self.target.max_pool_size);
        tracing::info!(
            workers,
            groups = groups.values().collect::<std::collections::BTreeSet<_>>().len(),
            "parallel applies"
        );
        crate::sequencer::parallel::run_parallel(
            self.sequencer,
            input,
            groups,
            workers,
            |_| self.make_target(),
            checkpoints,
        )
        .await
    }
}
