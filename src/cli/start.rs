//! `replicator start`: the CockroachDB changefeed webhook, for failback into PostgreSQL,
//! CockroachDB, MySQL or MariaDB. See [`crate::source::changefeed`] for the requests it takes
//! and [`crate::pipeline::failback`] for how it runs.
//!
//! Consistent mode is the default (changes staged, applied by resolved window); `--immediate`
//! applies each request before answering it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args};

use super::groups::{
    DEFAULT_FLUSH_SIZE, DEFAULT_PARALLELISM, DEFAULT_TARGET_MAX_POOL_SIZE, MetricsArgs, ScriptArgs,
    StagingArgs,
};
use super::replicate::{flag_names, runtime, script_pool, with_script_options};
use super::values::{ConnStringParser, Period, byte_size, go_bool, go_duration, go_period};
use crate::conn::ConnString;
use crate::pipeline::failback::FailbackConfig;
use crate::server::tls::TlsSource;
use crate::source::changefeed::accept::{Mode, SweepConfig};
use crate::source::changefeed::handler::HandlerConfig;

/// Default `--ndjsonBufferSize`: 1 MiB (MOLT's 64 KiB cut off rows with large values).
pub const DEFAULT_NDJSON_BUFFER: usize = 1 << 20;
/// Default `--maxRequestBytes`: 256 MiB (a changefeed cannot shrink a batch it was refused).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 << 20;
/// Most requests written at once per target schema.
pub const MAX_CONNECTIONS: u32 = 16;

/// `replicator start` flags.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Address to listen on for changefeed requests: host:port or :port
    #[arg(
        long = "bindAddr",
        value_name = "[HOST]:PORT",
        default_value = ":26258",
        help_heading = "HTTP"
    )]
    pub bind_addr: String,

    /// Accept requests without a token (logs a warning; never where others can reach the port)
    #[arg(
        long = "disableAuthentication", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool, help_heading = "HTTP"
    )]
    pub disable_authentication: bool,

    /// TLS certificate chain (PEM); with --tlsPrivateKey. Re-read on SIGHUP
    #[arg(long = "tlsCertificate", value_name = "FILE", help_heading = "HTTP")]
    pub tls_certificate: Option<PathBuf>,

    /// TLS private key (PEM); with --tlsCertificate. Re-read on SIGHUP
    #[arg(long = "tlsPrivateKey", value_name = "FILE", help_heading = "HTTP")]
    pub tls_private_key: Option<PathBuf>,

    /// Serve TLS with a self-signed P-256 certificate for localhost, 127.0.0.1 and ::1
    /// (the changefeed then needs insecure_tls_skip_verify=true)
    #[arg(
        long = "tlsSelfSigned", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool, help_heading = "HTTP"
    )]
    pub tls_self_signed: bool,

    /// Apply each request's changes to the target before answering it, instead of staging
    /// them and applying them by resolved timestamp (consistent mode, the default). Faster and
    /// simpler, but the target shows changes out of source-transaction and FK order
    #[arg(
        long = "immediate", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool, help_heading = "Changefeed"
    )]
    pub immediate: bool,

    /// Apply staged changes as soon as they are staged, without waiting for resolved
    /// timestamps: each group of tables connected by foreign keys on its own (its own lease,
    /// so groups may be applied by different instances), in time order within it. Lower lag;
    /// the target may show part of a source transaction, and no order across groups
    #[arg(
        long = "bestEffortOnly", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool, help_heading = "Changefeed"
    )]
    pub best_effort_only: bool,

    /// Consistent mode switches to best effort (applying staged rows without waiting for
    /// resolved timestamps) while the applied resolved timestamp is at least this old, and
    /// back once it is within a quarter of it; 0 never switches
    #[arg(long = "bestEffortWindow", value_name = "DURATION", default_value = "0s", value_parser = go_duration, help_heading = "Changefeed")]
    pub best_effort_window: Duration,

    /// Staged modes (consistent, best effort): rows per target transaction, at least (a
    /// source transaction is never split)
    #[arg(long = "flushSize", value_name = "N", default_value_t = DEFAULT_FLUSH_SIZE, help_heading = "Sequencer")]
    pub flush_size: usize,

    /// Staged modes: the longest rows read short of --flushSize wait for the next page of
    /// staged rows before they are written as a smaller transaction
    #[arg(long = "flushPeriod", value_name = "DURATION", default_value = "1s", value_parser = go_duration, help_heading = "Sequencer")]
    pub flush_period: Duration,

    /// Consistent mode: most target transactions at once, each for a group of tables that no
    /// foreign key and no source transaction of the window connects (one with a userscript,
    /// which may route rows to any table); within a group they commit in time order
    #[arg(long = "parallelism", value_name = "N", default_value_t = DEFAULT_PARALLELISM, help_heading = "Sequencer")]
    pub parallelism: usize,

    /// Consistent mode: apply a backlog of resolved timestamps at most this many at a time,
    /// marking each step applied before the next (the target shows progress sooner, each
    /// step a consistent state); 0 takes every resolved timestamp received at once
    #[arg(
        long = "limitLookahead",
        value_name = "N",
        default_value_t = 0,
        help_heading = "Changefeed"
    )]
    pub limit_lookahead: usize,

    /// Staged modes: staged rows read per table at a time; raise for throughput, lower for
    /// memory
    #[arg(
        long = "scanSize",
        value_name = "N",
        default_value_t = 10_000,
        help_heading = "Sequencer"
    )]
    pub scan_size: usize,

    /// Staged modes: most distinct source timestamps in one target transaction
    #[arg(
        long = "timestampLimit",
        value_name = "N",
        default_value_t = 1_000,
        help_heading = "Sequencer"
    )]
    pub timestamp_limit: usize,

    /// Staged modes: longest wait between retries of a target transaction that failed
    /// (target down, a row the target refuses); retries start at 100ms and double
    #[arg(long = "quiescentPeriod", value_name = "DURATION", default_value = "10s", value_parser = go_duration, help_heading = "Sequencer")]
    pub quiescent_period: Duration,

    /// Staged modes: wake the sweeper by polling staging every second only, not also when
    /// another instance records a resolved timestamp (LISTEN/NOTIFY on PostgreSQL staging, a
    /// changefeed on checkpoints on CockroachDB staging)
    #[arg(
        long = "disableCheckpointStream", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool, help_heading = "Sequencer"
    )]
    pub disable_checkpoint_stream: bool,

    /// Staged modes: how long applied rows stay in staging behind the applied resolved
    /// timestamp before they are deleted (0: at once)
    #[arg(long = "retireOffset", value_name = "DURATION", default_value = "24h0m0s", value_parser = go_duration, help_heading = "Sequencer")]
    pub retire_offset: Duration,

    /// Longest line of a cloud-storage ndjson file (experimental-http sink), e.g. 1MiB
    #[arg(long = "ndjsonBufferSize", value_name = "BYTES", default_value = "1MiB", value_parser = byte_size, help_heading = "Changefeed")]
    pub ndjson_buffer_size: usize,

    /// Largest request body, decompressed; larger ones get 413 (a changefeed cannot split a
    /// batch, so keep this large)
    #[arg(long = "maxRequestBytes", value_name = "BYTES", default_value = "256MiB", value_parser = byte_size, help_heading = "Changefeed")]
    pub max_request_bytes: usize,

    /// Longest time to answer a request; past it the answer is 503 and the write goes on
    #[arg(long = "httpResponseTimeout", value_name = "DURATION", default_value = "2m0s", value_parser = go_duration, help_heading = "Changefeed")]
    pub http_response_timeout: Duration,

    /// Target database URL: postgres:// (PostgreSQL, CockroachDB) or mysql:// (MySQL, MariaDB).
    /// The request path names the schema: /database/schema, or /database on MySQL
    #[arg(long = "targetConn", value_name = "URL", value_parser = ConnStringParser, help_heading = "Target")]
    pub target_conn: ConnString,

    /// Most target connections; at most 16 requests per schema are written at once
    #[arg(long = "targetMaxPoolSize", value_name = "N", default_value_t = DEFAULT_TARGET_MAX_POOL_SIZE, help_heading = "Target")]
    pub target_max_pool_size: u32,

    /// How often to re-read the target's tables and keys (also when a request names a table
    /// or column not seen yet); 0 disables
    #[arg(long = "schemaRefresh", value_name = "DURATION", default_value = "1m0s", value_parser = go_period, help_heading = "Target")]
    pub schema_refresh: Period,

    /// Staging flags.
    #[command(flatten)]
    pub staging: StagingArgs,

    /// Userscript flags.
    #[command(flatten)]
    pub script: ScriptArgs,

    /// Metrics flags.
    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Time allowed at shutdown for requests in flight to finish
    #[arg(long = "gracePeriod", value_name = "DURATION", default_value = "30s", value_parser = go_duration, help_heading = "Changefeed")]
    pub grace_period: Duration,
}

impl StartArgs {
    /// Checks every flag; nothing connects yet.
    pub fn validate(&self) -> anyhow::Result<FailbackConfig> {
        anyhow::ensure!(self.flush_size > 0, "--flushSize must be at least 1");
        anyhow::ensure!(self.scan_size > 0, "--scanSize must be at least 1");
        anyhow::ensure!(self.parallelism > 0, "--parallelism must be at least 1");
        anyhow::ensure!(!self.flush_period.is_zero(), "--flushPeriod must be more than 0, e.g. 1s");
        anyhow::ensure!(self.timestamp_limit > 0, "--timestampLimit must be at least 1");
        anyhow::ensure!(!self.quiescent_period.is_zero(), "--quiescentPeriod must be more than 0");
        let protocol = self.target_conn.protocol().filter(|p| *p != crate::conn::Protocol::Oracle).with_context(|| {
            format!(
                "--targetConn {}: use postgres:// (PostgreSQL, CockroachDB) or mysql:// (MySQL, MariaDB)",
                self.target_conn
            )
        })?;
        let tls = match (&self.tls_certificate, &self.tls_private_key, self.tls_self_signed) {
            (None, None, false) => None,
            (None, None, true) => Some(TlsSource::SelfSigned),
            (Some(_), Some(_), true) | (Some(_), None, true) | (None, Some(_), true) => {
                anyhow::bail!(
                    "--tlsSelfSigned and --tlsCertificate/--tlsPrivateKey exclude each other: pick one"
                )
            }
            (Some(certificate), Some(private_key), false) => Some(TlsSource::Files {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
            }),
            (Some(_), None, false) | (None, Some(_), false) => {
                anyhow::bail!("--tlsCertificate and --tlsPrivateKey go together: pass both")
            }
        };
        anyhow::ensure!(self.target_max_pool_size > 0, "--targetMaxPoolSize must be at least 1");
        anyhow::ensure!(self.max_request_bytes > 0, "--maxRequestBytes must be at least 1");
        anyhow::ensure!(self.ndjson_buffer_size > 0, "--ndjsonBufferSize must be at least 1");
        anyhow::ensure!(
            !self.http_response_timeout.is_zero(),
            "--httpResponseTimeout must be more than 0"
        );
        let bind = if self.bind_addr.starts_with(':') {
            format!("0.0.0.0{}", self.bind_addr)
        } else {
            self.bind_addr.clone()
        };
        Ok(FailbackConfig {
            bind,
            tls,
            disable_authentication: self.disable_authentication,
            target: self.target_conn.clone(),
            target_protocol: protocol,
            staging: self.staging.validate_for(&self.target_conn, protocol)?,
            metrics: self.metrics.validate()?,
            handler: HandlerConfig {
                schema_parts: protocol.schema_parts(),
                max_request_bytes: self.max_request_bytes,
                ndjson_buffer: self.ndjson_buffer_size,
                response_timeout: self.http_response_timeout,
            },
            connections: self.target_max_pool_size.min(MAX_CONNECTIONS) as usize,
            schema_refresh: self.schema_refresh.0,
            grace: self.grace_period,
            mode: match (self.immediate, self.best_effort_only) {
                (true, false) => Mode::Immediate,
                (false, true) => Mode::BestEffort,
                (false, false) => Mode::Consistent,
                (true, true) => anyhow::bail!(
                    "--immediate and --bestEffortOnly exclude each other: pick one mode"
                ),
            },
            sweep: SweepConfig {
                flush_size: self.flush_size,
                flush_period: self.flush_period,
                parallelism: self.parallelism,
                lookahead: self.limit_lookahead,
                scan_size: self.scan_size,
                timestamp_limit: self.timestamp_limit,
                quiescent: self.quiescent_period,
                retire_offset: self.retire_offset,
                listen: !self.disable_checkpoint_stream,
                best_effort_window: self.best_effort_window,
            },
        })
    }
}

/// Runs `replicator start` until SIGINT or SIGTERM.
pub fn run(args: &StartArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        crate::sequencer::shutdown::listen();
        let mut args = args.clone();
        args.validate()?;
        let pool = script_pool(&args.script, flag_names::<StartArgs>())?;
        if let Some(pool) = &pool
            && !pool.configured().options.is_empty()
        {
            args = with_script_options("start", &pool.configured().options)?;
        }
        let config = args.validate()?;
        crate::pipeline::failback::run(config, pool).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::groups::DEFAULT_GRACE_PERIOD;

    #[derive(clap::Parser)]
    struct Wrapped {
        #[command(flatten)]
        args: StartArgs,
    }

    fn parsed(extra: &[&str]) -> StartArgs {
        let mut argv = vec!["start", "--targetConn", "postgres://u@127.0.0.1/shop"];
        argv.extend_from_slice(extra);
        Wrapped::try_parse_from(argv).expect("parses").args
    }

    #[test]
    fn defaults_follow_molt_where_they_should() {
        let args = parsed(&["--immediate"]);
        assert_eq!(args.bind_addr, ":26258");
        assert_eq!(args.ndjson_buffer_size, DEFAULT_NDJSON_BUFFER);
        assert_eq!(args.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(args.http_response_timeout, Duration::from_secs(120));
        assert_eq!(args.grace_period, DEFAULT_GRACE_PERIOD);
        let config = args.validate().expect("valid");
        assert_eq!(config.bind, "0.0.0.0:26258");
        assert_eq!(config.handler.schema_parts, 2);
        assert_eq!(config.staging.conn, args.target_conn, "staging defaults to a postgres target");
        assert!(config.tls.is_none());
    }

    #[test]
    fn bad_combinations_name_the_flags() {
        let config = parsed(&[]).validate().expect("consistent by default");
        assert_eq!(config.mode, Mode::Consistent);
        assert_eq!(config.sweep.flush_size, 1000);
        assert_eq!(config.sweep.scan_size, 10_000);
        assert_eq!(config.sweep.retire_offset, Duration::from_secs(86_400));
        assert_eq!(config.sweep.flush_period, Duration::from_secs(1));
        assert_eq!(config.sweep.parallelism, 16);
        assert_eq!(config.sweep.lookahead, 0);
        let err = parsed(&["--parallelism", "0"]).validate().expect_err("zero").to_string();
        assert!(err.contains("--parallelism"), "{err}");
        let err = parsed(&["--flushPeriod", "0s"]).validate().expect_err("zero").to_string();
        assert!(err.contains("--flushPeriod"), "{err}");
        let config = parsed(&["--bestEffortOnly"]).validate().expect("best effort");
        assert_eq!(config.mode, Mode::BestEffort);
        let err = parsed(&["--immediate", "--bestEffortOnly"]).validate().expect_err("both");
        assert!(err.to_string().contains("exclude each other"), "{err}");
        let err = parsed(&["--flushSize", "0"]).validate().expect_err("zero").to_string();
        assert!(err.contains("--flushSize"), "{err}");
        let err = parsed(&["--immediate", "--tlsSelfSigned", "--tlsCertificate=c.pem"])
            .validate()
            .expect_err("both")
            .to_string();
        assert!(err.contains("exclude each other"), "{err}");
        let err = parsed(&["--immediate", "--tlsCertificate=c.pem"])
            .validate()
            .expect_err("half")
            .to_string();
        assert!(err.contains("go together"), "{err}");
        let my = Wrapped::try_parse_from([
            "start",
            "--immediate",
            "--targetConn",
            "mysql://root@tcp(h:3306)/",
        ])
        .expect("parses")
        .args;
        let err = my.validate().expect_err("staging").to_string();
        assert!(err.contains("needs --stagingConn"), "{err}");
    }
}
