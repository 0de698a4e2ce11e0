//! What every replication command does around its source: open staging and the target, load
//! the userscript, serve metrics, run the sequencer until the source ends or a signal asks
//! to stop. `pglogical` (and `mylogical`) bring the source.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches};
use tokio::sync::watch;

use super::groups::{ConfigError, MetricsArgs, SequencerArgs, StagingArgs, TargetArgs};
use super::groups::{DEFAULT_STAGING_SCHEMA_COCKROACH, DEFAULT_STAGING_SCHEMA_POSTGRES};
use super::groups::{MetricsConfig, StagingConfig, TargetConfig};
use super::script::ScriptArgs;
use crate::conn::ConnString;
use crate::conn::Protocol;
use crate::script::{EngineOptions, ScriptPool, SourceTag};
use crate::sequencer::SequencerConfig;
use crate::sequencer::{Input, Progress, SequencerError};
use crate::staging::lease::{Held, Lease};
use crate::staging::{AnnouncingCheckpoints, Checkpoints, StagingDialect, StagingSchema};
use crate::target::postgres::apply::Dialect;
use crate::target::postgres::writer::PgTarget;
use crate::target::postgres::{Server, check_database};
use crate::target::preflight::{Problem, SourceTable};

/// The flags every replication command takes after its source's: target, staging, sequencer,
/// userscript and metrics.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Target flags.
    #[command(flatten)]
    pub target: TargetArgs,

    /// Staging flags.
    #[command(flatten)]
    pub staging: StagingArgs,

    /// Sequencer flags.
    #[command(flatten)]
    pub sequencer: SequencerArgs,

    /// Userscript flags.
    #[command(flatten)]
    pub script: ScriptArgs,

    /// Metrics flags.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// [`PipelineArgs`], validated (the script is compiled separately: see [`script_pool`]).
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

impl PipelineArgs {
    /// Checks every group; nothing connects yet.
    pub fn validate(&self) -> Result<PipelineConfig, ConfigError> {
        let target = self.target.validate()?;
        let staging = self.staging.validate(&target)?;
        Ok(PipelineConfig {
            sequencer: self.sequencer.validate()?,
            metrics: self.metrics.validate()?,
            target,
            staging,
        })
    }
}

/// The target, opened and checked.
pub struct OpenedTarget {
    /// `db` and `schema` of `--targetSchema`.
    pub database: String,
    /// The schema written into.
    pub schema: String,
    /// CockroachDB or PostgreSQL SQL.
    pub dialect: Dialect,
}

/// Connects to the target, checks `--targetSchema` against it and tells the dialect.
pub async fn open_target(target: &TargetConfig) -> anyhow::Result<OpenedTarget> {
    if target.protocol != Protocol::Postgres {
        bail!(
            "--targetConn {}: this command writes to CockroachDB or PostgreSQL (postgres://); \
             MySQL and MariaDB targets are for `replicator start` (failback)",
            target.conn
        );
    }
    let parts = target.schema.parts();
    let (database, schema) = (parts[0].clone(), parts[1].clone());
    let client =
        crate::conn::postgres::connect(&target.conn).await.context("opening the target")?;
    let server = check_database(&client, "targetSchema", &database, &schema)
        .await
        .map_err(anyhow::Error::msg)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .context("reading the target's schemas")?
        .is_some();
    if !exists {
        bail!(
            "--targetSchema {}: schema {schema:?} does not exist in the target database: create \
             it (CREATE SCHEMA \"{schema}\") and its tables first",
            target.schema
        );
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
) -> anyhow::Result<()> {
    let client =
        crate::conn::postgres::connect(&target.conn).await.context("opening the target")?;
    let schema = crate::target::postgres::introspect::introspect(&client, &opened.schema)
        .await
        .context("reading the target's tables")?;
    let problems = crate::target::preflight::compare(tables, &schema);
    let list = |problems: &[Problem]| -> String {
        problems.iter().map(|p| format!("\n  - {p}")).collect()
    };
    let Some(pool) = script else {
        if problems.is_empty() {
            tracing::info!(tables = tables.len(), schema = %target.schema, "target checked: it has every table and column the source sends");
            return Ok(());
        }
        bail!(
            "target schema {} is not ready for what the source sends ({} problem{}):{}\nFix \
             them and start again; nothing was replicated",
            target.schema,
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            list(&problems)
        );
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
        bail!(
            "target schema {} lacks tables the userscript configures:{}",
            target.schema,
            list(&missing)
        );
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
}

/// Connects to staging, resolves `--stagingSchema` and creates staging's tables.
pub async fn open_staging(staging: &StagingConfig) -> anyhow::Result<OpenedStaging> {
    let client = crate::conn::postgres::connect(&staging.conn).await.context("opening staging")?;
    let version: String = client.query_one("SELECT version()", &[]).await?.get(0);
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
                .map_err(anyhow::Error::msg)?;
            StagingSchema { database: None, schema: schema.clone() }
        }
        _ => bail!("--stagingSchema takes schema or db.schema"),
    };
    let dialect = if cockroach { StagingDialect::Cockroach } else { StagingDialect::Postgres };
    crate::staging::prepare(&client, dialect, &schema, staging.create_schema)
        .await
        .context("preparing staging")?;
    Ok(OpenedStaging { client, schema })
}

/// Takes the lease named `key` (the checkpoint key) in staging and keeps renewing it on a
/// connection of its own: a second replicator on the same staging schema and key refuses to
/// start (see [`crate::staging::lease`]).
pub async fn hold_lease(
    staging: &StagingConfig,
    opened: &OpenedStaging,
    key: &str,
) -> anyhow::Result<Held> {
    let lease = Lease::acquire(&opened.client, &opened.schema, key).await?;
    let client = crate::conn::postgres::connect(&staging.conn).await.context("opening staging")?;
    Ok(lease.hold(client, staging.conn.clone()))
}

/// Compiles `--userscript` and starts its engines (one per core, at most four); `None`
/// without a script. `options` are the flags the command takes, for `setOptions`.
pub fn script_pool(
    args: &ScriptArgs,
    known_flags: Vec<String>,
) -> anyhow::Result<Option<Arc<ScriptPool>>> {
    let limits = args.limits()?;
    let Some(script) = args.compile()? else { return Ok(None) };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let options = EngineOptions { limits, known_flags, ..EngineOptions::default() };
    let path = script.entry.clone();
    let pool = ScriptPool::new(script, options, workers).context("loading the userscript")?;
    let configured = pool.configured();
    let describe =
        |names: Vec<String>| if names.is_empty() { "none".to_owned() } else { names.join(", ") };
    tracing::info!(
        script = %path,
        engines = workers,
        schemas = %describe(configured.schemas.iter().map(|(s, api)| format!("{s} ({api})")).collect()),
        tables = %describe(configured.tables.iter().map(|t| {
            let handlers: Vec<&str> = [(t.upsert, "upsert"), (t.delete, "delete"), (t.write, "write")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
            format!("{} ({})", t.name, handlers.join("/"))
        }).collect()),
        options = %describe(configured.options.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        "userscript loaded"
    );
    Ok(Some(Arc::new(pool)))
}

/// The long flag names of a command's arguments (what `setOptions` may set).
pub fn flag_names<A: Args>() -> Vec<String> {
    A::augment_args(clap::Command::new("flags"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

/// Re-reads the command line with the script's `setOptions` values appended (they win over
/// the flags given), for command `name` whose arguments are `A`.
pub fn with_script_options<A: Args + FromArgMatches>(
    name: &str,
    options: &[(String, String)],
) -> anyhow::Result<A> {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    for (flag, value) in options {
        tracing::info!(flag = %flag, value = %value, "setOptions from the userscript");
        argv.push(format!("--{flag}={value}").into());
    }
    let command = super::Cli::command().mut_subcommand(name, |c| c.args_override_self(true));
    let matches = command
        .try_get_matches_from(argv)
        .map_err(|e| anyhow::anyhow!("the userscript's setOptions gave a bad value: {e}"))?;
    let (_, sub) = matches.subcommand().context("no subcommand")?;
    A::from_arg_matches(sub).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Names the replication in `/_/status` and metric labels, and logs where it stands at
/// least once a minute ([`crate::status`]).
pub fn watch_status(source: &str, target: &TargetConfig) {
    let status = crate::status::global();
    status.start(source, &target.schema.to_string());
    tokio::spawn(status.report());
}

/// Serves `/_/varz`, `/_/healthz` and `/_/status` when `--metricsAddr` is set; health checks
/// connect to the target and staging.
pub async fn serve_metrics(
    metrics: &MetricsConfig,
    target: &ConnString,
    staging: &ConnString,
) -> anyhow::Result<()> {
    let Some(addr) = &metrics.addr else { return Ok(()) };
    let check = |conn: ConnString| -> crate::server::HealthCheck {
        Arc::new(move || {
            let conn = conn.clone();
            Box::pin(async move {
                let client =
                    crate::conn::postgres::connect(&conn).await.map_err(|e| e.to_string())?;
                client.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| e.to_string())
            })
        })
    };
    let checks = vec![
        ("target".to_owned(), check(target.clone())),
        ("staging".to_owned(), check(staging.clone())),
    ];
    let addr = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.clone() };
    crate::server::serve_metrics(&addr, checks, Duration::from_secs(5))
        .await
        .with_context(|| format!("--metricsAddr {addr}: cannot listen"))?;
    Ok(())
}

/// How the sequencer writes.
pub struct Apply<'a> {
    /// Sequencer flags.
    pub sequencer: &'a SequencerConfig,
    /// Target flags.
    pub target: &'a TargetConfig,
    /// The opened target.
    pub opened: &'a OpenedTarget,
    /// The userscript.
    pub script: Option<Arc<ScriptPool>>,
    /// Which source, for the script's `meta`.
    pub source: SourceTag,
}

impl Apply<'_> {
    async fn make_target(&self) -> Result<PgTarget, String> {
        let client = crate::conn::postgres::connect(&self.target.conn)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let mut target = PgTarget::new(
            client,
            &self.opened.schema,
            self.opened.dialect,
            self.sequencer.collapse_mutations,
        )
        .await
        .map_err(|e| format!("reading the target schema: {e}"))?
        .with_schema_refresh(self.target.schema_refresh)
        .with_reconnect(self.target.conn.clone());
        if let Some(pool) = &self.script {
            target = target.with_script(pool.clone(), &self.target.schema.to_string(), self.source);
        }
        Ok(target)
    }

    /// Runs the sequencer until the source ends, a signal asks to stop, or a batch fails; then
    /// stores the last checkpoint, stops the source (`stop`) and reports the first failure:
    /// the source's (`reader`), the stage's (`stager`), then the sequencer's — the first two are
    /// why the queue closed.
    pub async fn run_to_end<E1, E2>(
        &self,
        input: impl Input,
        checkpoints: &mut AnnouncingCheckpoints,
        stop: &watch::Sender<bool>,
        reader: tokio::task::JoinHandle<Result<(), E1>>,
        stager: tokio::task::JoinHandle<Result<(), E2>>,
        mut lease: Held,
    ) -> anyhow::Result<()>
    where
        E1: std::error::Error + Send + Sync + 'static,
        E2: std::error::Error + Send + Sync + 'static,
    {
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
            outcome = run => outcome.map_err(anyhow::Error::new),
            lost = lease.lost() => Err(anyhow::Error::new(lost)),
        };
        if let Err(e) = checkpoints.flush(grace).await {
            tracing::warn!(error = %e, "the last checkpoint was not stored; a restart replays from the one before");
        }
        // Both end once told to stop (the reader) or once their input closes (the stage).
        stop.send_replace(true);
        let wait = Duration::from_secs(5);
        if let Ok(Ok(Err(e))) = tokio::time::timeout(wait, reader).await {
            lease.release().await;
            return Err(anyhow::Error::new(e));
        }
        let stopped = tokio::time::timeout(wait, stager).await;
        lease.release().await;
        if let Ok(Ok(Err(e))) = stopped {
            return Err(anyhow::Error::new(e));
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
    pub async fn run<C: Checkpoints>(
        &self,
        input: impl Input,
        checkpoints: &mut C,
    ) -> Result<Progress, SequencerError> {
        let opening = |message: String| SequencerError::Open { message };
        if !self.sequencer.parallel_applies {
            let mut target = self.make_target().await.map_err(opening)?;
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
            .map_err(|e| opening(format!("{e:#}")))?;
        let schema = crate::target::postgres::introspect::introspect(&client, &self.opened.schema)
            .await
            .map_err(|e| opening(e.to_string()))?;
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
