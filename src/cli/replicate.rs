//! What every replication command does with its flags: validate them, load the userscript
//! (whose `setOptions` may change them), and hand a source and the validated configuration to
//! [`crate::pipeline::run`]. `pglogical` and `mylogical` bring the source.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches};

use super::groups::{ConfigError, MetricsArgs, ScriptArgs, SequencerArgs, StagingArgs, TargetArgs};
use crate::pipeline::PipelineConfig;
use crate::script::{EngineOptions, ScriptPool};
use crate::source::Source;

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

/// A replication command's flags.
pub trait ReplicationArgs: Args + FromArgMatches + Clone {
    /// The flags every replication command shares.
    fn pipeline(&self) -> &PipelineArgs;
}

/// The multi-threaded runtime every long-running command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("replicator")
        .build()
        .context("starting the async runtime")
}

/// Runs replication command `name`: loads the userscript (re-reading the flags with its
/// `setOptions`), validates the flags, builds the source with `source`, and runs the pipeline
/// until a signal or a permanent failure.
pub fn run<A: ReplicationArgs, S: Source>(
    name: &str,
    args: &A,
    source: impl Fn(&A) -> anyhow::Result<S>,
) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        crate::sequencer::shutdown::listen();
        // The script first: its setOptions may change the other flags.
        let mut args = args.clone();
        let pool = script_pool(&args.pipeline().script, flag_names::<A>())?;
        if let Some(pool) = &pool
            && !pool.configured().options.is_empty()
        {
            args = with_script_options(name, &pool.configured().options)?;
        }
        let config = args.pipeline().validate()?;
        let retry = config.sequencer.retry;
        let mut attempt = 0u32;
        loop {
            let outcome = crate::pipeline::run(source(&args)?, config.clone(), pool.clone()).await;
            let e = match outcome {
                Err(e) if e.is_outage() && crate::pipeline::has_run() => e,
                other => return Ok(other?),
            };
            // Replication ran and an outage stopped it: wait it out, then start again from
            // the last checkpoint (as a standby first: another instance may hold the lease).
            let delay = retry.backoff_with_jitter(attempt).max(Duration::from_millis(500));
            attempt = attempt.saturating_add(1);
            tracing::warn!(
                error = %crate::error::with_causes(&e),
                retry_in = ?delay,
                "replication stopped on an outage; starting again from the last checkpoint"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = crate::sequencer::shutdown::signal() => return Ok(()),
            }
        }
    })
}
