//! Flag groups the replication commands share, each validated into a config struct.
//!
//! Config flows one way: flags (MOLT's camelCase names) → `validate()` → a config struct the
//! runtime object is built from. Everything is checked before anything connects. A group
//! holds only flags that the code behind it implements: a MOLT flag that is not implemented
//! yet is refused as unknown, never accepted and ignored.
//!
//! The groups are flattened into `pglogical`, `mylogical` and the later commands; the
//! replication core implements what they configure.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::values::{ConnStringParser, Period, byte_size, go_bool, go_duration, go_period};
use crate::conn::ConnString;
use crate::conn::Protocol;
use crate::error::RetryConfig;
use crate::pipeline::config::{MetricsConfig, StagingConfig, TargetConfig};
use crate::script::engine::format_bytes;
use crate::script::{CompiledScript, Limits, compile_script};
use crate::sequencer::SequencerConfig;
use crate::types::duration::format as format_duration;
use crate::types::name::DottedName;

/// Default `--targetMaxPoolSize`.
pub const DEFAULT_TARGET_MAX_POOL_SIZE: u32 = 128;
/// Default `--schemaRefresh`.
pub const DEFAULT_SCHEMA_REFRESH: Duration = Duration::from_secs(60);
/// Default `--flushSize`.
pub const DEFAULT_FLUSH_SIZE: usize = 1_000;
/// Default `--flushPeriod`.
pub const DEFAULT_FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// Default `--parallelism`.
pub const DEFAULT_PARALLELISM: usize = 16;
/// Default `--targetApplyQueueSize` (mutations).
pub const DEFAULT_TARGET_APPLY_QUEUE_SIZE: usize = 10_000;
/// Default `--maxRetries`.
pub const DEFAULT_MAX_RETRIES: u32 = 10;
/// Default `--retryInitialBackoff`.
pub const DEFAULT_RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(25);
/// Default `--retryMaxBackoff`.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Default `--retryMultiplier`.
pub const DEFAULT_RETRY_MULTIPLIER: u32 = 2;
/// Default `--gracePeriod`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// A flag combination that cannot work, named by its flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A connection URL for the wrong kind of database.
    #[error("--{flag} {conn}: {problem}")]
    Conn {
        /// The flag, without dashes.
        flag: &'static str,
        /// The URL, redacted.
        conn: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A bad value for one flag.
    #[error("--{flag} {value:?}: {problem}")]
    Value {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong and what to do.
        problem: String,
    },
}

fn value_error(
    flag: &'static str,
    value: impl ToString,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError::Value { flag, value: value.to_string(), problem: problem.into() }
}

// ---------------------------------------------------------------------------------------------

/// `--sourceConn`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Source")]
pub struct SourceArgs {
    /// Source database URL: postgres://user:pass@host:5432/db or mysql://user:pass@tcp(host:3306)/db (the password is never logged)
    #[arg(long = "sourceConn", value_name = "URL", value_parser = ConnStringParser)]
    pub source_conn: ConnString,
}

/// A validated source connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Where to read changes from.
    pub conn: ConnString,
}

impl SourceArgs {
    /// Checks the URL names the protocol the command reads (`pglogical`: PostgreSQL, …).
    pub fn validate(&self, expected: Protocol) -> Result<SourceConfig, ConfigError> {
        let conn = self.source_conn.clone();
        if conn.protocol() != Some(expected) {
            let scheme = match expected {
                Protocol::Postgres => "postgres://",
                Protocol::MySql => "mysql://",
                Protocol::Oracle => "oracle://",
            };
            return Err(ConfigError::Conn {
                flag: "sourceConn",
                problem: format!("this command reads from {expected}: use a {scheme} URL"),
                conn: conn.redacted(),
            });
        }
        Ok(SourceConfig { conn })
    }
}

// ---------------------------------------------------------------------------------------------

/// `--targetConn`, `--targetSchema`, `--targetMaxPoolSize`, `--schemaRefresh`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Target")]
pub struct TargetArgs {
    /// Target database URL: postgres:// (CockroachDB, PostgreSQL) or mysql:// (MySQL, MariaDB)
    #[arg(long = "targetConn", value_name = "URL", value_parser = ConnStringParser)]
    pub target_conn: ConnString,

    /// Schema to write into: db.schema on CockroachDB/PostgreSQL, the database on MySQL/MariaDB
    #[arg(long = "targetSchema", value_name = "SCHEMA")]
    pub target_schema: String,

    /// Connections in the target pool; --parallelism is capped at 80% of it
    #[arg(long = "targetMaxPoolSize", value_name = "N", default_value_t = DEFAULT_TARGET_MAX_POOL_SIZE)]
    pub target_max_pool_size: u32,

    /// How often to re-read the target's tables and keys (also after a write hits schema drift); 0 disables
    #[arg(long = "schemaRefresh", value_name = "DURATION", default_value = "1m0s", value_parser = go_period)]
    pub schema_refresh: Period,
}

impl TargetArgs {
    /// Checks the URL's protocol and that `--targetSchema` has the parts that protocol uses.
    ///
    /// Whether `db` must equal the connection's database (PostgreSQL) or may differ
    /// (CockroachDB) is checked at connect time, when the server is known.
    pub fn validate(&self) -> Result<TargetConfig, ConfigError> {
        let conn = self.target_conn.clone();
        let protocol = conn.protocol().ok_or_else(|| ConfigError::Conn {
            flag: "targetConn",
            problem: format!(
                "unknown scheme {:?}: use postgres:// for CockroachDB or PostgreSQL, mysql:// \
                 for MySQL or MariaDB",
                conn.scheme()
            ),
            conn: conn.redacted(),
        })?;
        let example = match protocol {
            Protocol::Postgres => "defaultdb.public",
            Protocol::MySql | Protocol::Oracle => "inventory",
        };
        let schema: DottedName = self.target_schema.parse().map_err(|e| {
            value_error(
                "targetSchema",
                &self.target_schema,
                format!("{e}; e.g. --targetSchema {example}"),
            )
        })?;
        if schema.len() != protocol.schema_parts() {
            let want = match protocol {
                Protocol::Postgres => "a {protocol} target takes db.schema",
                Protocol::MySql | Protocol::Oracle => {
                    "a {protocol} target takes one name, the database"
                }
            };
            return Err(value_error(
                "targetSchema",
                &self.target_schema,
                format!(
                    "{}, e.g. --targetSchema {example}",
                    want.replace("{protocol}", &protocol.to_string())
                ),
            ));
        }
        if self.target_max_pool_size == 0 {
            return Err(value_error("targetMaxPoolSize", 0, "must be at least 1"));
        }
        Ok(TargetConfig {
            conn,
            protocol,
            schema,
            max_pool_size: self.target_max_pool_size,
            schema_refresh: self.schema_refresh.0,
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// `--stagingConn`, `--stagingSchema`, `--stagingCreateSchema`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Staging")]
pub struct StagingArgs {
    /// Staging database URL, PostgreSQL or CockroachDB [default: the target connection when it is postgres://]
    #[arg(long = "stagingConn", value_name = "URL", value_parser = ConnStringParser)]
    pub staging_conn: Option<ConnString>,

    /// Schema for checkpoints and staged data [default: _replicator; _replicator.public on CockroachDB]
    #[arg(long = "stagingSchema", value_name = "SCHEMA")]
    pub staging_schema: Option<String>,

    /// Create the staging schema when it does not exist
    #[arg(
        long = "stagingCreateSchema", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool
    )]
    pub staging_create_schema: bool,
}

impl StagingArgs {
    /// Resolves the staging connection (the target's when it speaks PostgreSQL's protocol)
    /// and checks the schema's form.
    pub fn validate(&self, target: &TargetConfig) -> Result<StagingConfig, ConfigError> {
        self.validate_for(&target.conn, target.protocol)
    }

    /// [`StagingArgs::validate`] for a target URL of `protocol`.
    pub fn validate_for(
        &self,
        target_conn: &ConnString,
        protocol: Protocol,
    ) -> Result<StagingConfig, ConfigError> {
        let conn = match &self.staging_conn {
            Some(conn) => {
                if conn.protocol() != Some(Protocol::Postgres) {
                    return Err(ConfigError::Conn {
                        flag: "stagingConn",
                        problem:
                            "staging lives in CockroachDB or PostgreSQL: use a postgres:// URL"
                                .to_owned(),
                        conn: conn.redacted(),
                    });
                }
                conn.clone()
            }
            None if protocol == Protocol::Postgres => target_conn.clone(),
            None => {
                return Err(ConfigError::Conn {
                    flag: "targetConn",
                    problem: format!(
                        "a {protocol} target needs --stagingConn: staging lives in CockroachDB or \
                         PostgreSQL, e.g. --stagingConn postgres://root@127.0.0.1:26257/defaultdb"
                    ),
                    conn: target_conn.redacted(),
                });
            }
        };
        let schema = match &self.staging_schema {
            None => None,
            Some(text) => {
                let name: DottedName = text.parse().map_err(|e| {
                    value_error(
                        "stagingSchema",
                        text,
                        format!("{e}; e.g. --stagingSchema _replicator"),
                    )
                })?;
                if name.len() > 2 {
                    return Err(value_error(
                        "stagingSchema",
                        text,
                        "write schema or db.schema, e.g. --stagingSchema _replicator",
                    ));
                }
                Some(name)
            }
        };
        Ok(StagingConfig { conn, schema, create_schema: self.staging_create_schema })
    }
}

// ---------------------------------------------------------------------------------------------

/// How source transactions are grouped, ordered, queued and retried on the way to the target.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sequencer")]
pub struct SequencerArgs {
    /// Most rows in one target transaction: consecutive source transactions waiting in the
    /// queue are coalesced up to it (a source transaction is never split); larger batches
    /// commit less often and drain a backlog faster. The queue holds at most
    /// --targetApplyQueueSize mutations: raise both to batch larger
    #[arg(long = "flushSize", value_name = "N", default_value_t = DEFAULT_FLUSH_SIZE)]
    pub flush_size: usize,

    /// Longest a received mutation waits before its batch is applied
    #[arg(long = "flushPeriod", value_name = "DURATION", default_value = "1s", value_parser = go_duration)]
    pub flush_period: Duration,

    /// Apply table groups with no foreign keys between them concurrently
    #[arg(
        long = "enableParallelApplies", value_name = "BOOL", default_value = "false",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool
    )]
    pub enable_parallel_applies: bool,

    /// Most concurrent target transactions (capped at 80% of --targetMaxPoolSize)
    #[arg(long = "parallelism", value_name = "N", default_value_t = DEFAULT_PARALLELISM)]
    pub parallelism: usize,

    /// Most mutations waiting for the applier before the source is paused
    #[arg(long = "targetApplyQueueSize", value_name = "N", default_value_t = DEFAULT_TARGET_APPLY_QUEUE_SIZE)]
    pub target_apply_queue_size: usize,

    /// Collapse mutations to the same key within a batch into the last one
    #[arg(
        long = "collapseMutations", value_name = "BOOL", default_value = "true",
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        action = ArgAction::Set, value_parser = go_bool
    )]
    pub collapse_mutations: bool,

    /// Retries of a batch that fails transiently (serialization failure, deadlock, lock
    /// timeout) before replication stops; a database out of reach is waited for however long
    /// it takes
    #[arg(long = "maxRetries", value_name = "N", default_value_t = DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,

    /// Delay before the first retry
    #[arg(long = "retryInitialBackoff", value_name = "DURATION", default_value = "25ms", value_parser = go_duration)]
    pub retry_initial_backoff: Duration,

    /// Longest delay between retries (also while a database is out of reach)
    #[arg(long = "retryMaxBackoff", value_name = "DURATION", default_value = "2s", value_parser = go_duration)]
    pub retry_max_backoff: Duration,

    /// Factor the delay grows by after each retry
    #[arg(long = "retryMultiplier", value_name = "N", default_value_t = DEFAULT_RETRY_MULTIPLIER)]
    pub retry_multiplier: u32,

    /// Time allowed at shutdown to finish in-flight transactions and save the checkpoint
    #[arg(long = "gracePeriod", value_name = "DURATION", default_value = "30s", value_parser = go_duration)]
    pub grace_period: Duration,
}

impl SequencerArgs {
    /// Checks every value is usable.
    pub fn validate(&self) -> Result<SequencerConfig, ConfigError> {
        let at_least_one = [
            ("flushSize", self.flush_size),
            ("parallelism", self.parallelism),
            ("targetApplyQueueSize", self.target_apply_queue_size),
            ("retryMultiplier", self.retry_multiplier as usize),
        ];
        for (flag, value) in at_least_one {
            if value == 0 {
                return Err(value_error(flag, value, "must be at least 1"));
            }
        }
        if self.flush_period.is_zero() {
            return Err(value_error("flushPeriod", "0s", "must be more than zero, e.g. 1s"));
        }
        if self.retry_initial_backoff.is_zero() {
            return Err(value_error(
                "retryInitialBackoff",
                "0s",
                "must be more than zero, e.g. 25ms",
            ));
        }
        if self.retry_initial_backoff > self.retry_max_backoff {
            return Err(value_error(
                "retryMaxBackoff",
                format_duration(self.retry_max_backoff),
                format!(
                    "must not be below --retryInitialBackoff ({})",
                    format_duration(self.retry_initial_backoff)
                ),
            ));
        }
        Ok(SequencerConfig {
            flush_size: self.flush_size,
            flush_period: self.flush_period,
            parallel_applies: self.enable_parallel_applies,
            parallelism: self.parallelism,
            apply_queue_size: self.target_apply_queue_size,
            collapse_mutations: self.collapse_mutations,
            retry: RetryConfig {
                max_retries: self.max_retries,
                initial_backoff: self.retry_initial_backoff,
                max_backoff: self.retry_max_backoff,
                multiplier: self.retry_multiplier,
            },
            grace_period: self.grace_period,
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// `--metricsAddr`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsArgs {
    /// Serve /_/varz (Prometheus), /_/healthz and /_/status (JSON) on host:port or :port, e.g. :30005 (default: off)
    #[arg(long = "metricsAddr", value_name = "[HOST]:PORT")]
    pub metrics_addr: Option<String>,
}

impl MetricsArgs {
    /// Checks the address has a numeric port.
    pub fn validate(&self) -> Result<MetricsConfig, ConfigError> {
        let Some(text) = &self.metrics_addr else {
            return Ok(MetricsConfig { addr: None });
        };
        let bad = || {
            value_error("metricsAddr", text, "write [host]:port, e.g. :30005 or 127.0.0.1:30005")
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        if host.contains(char::is_whitespace) || (host.contains(':') && !host.starts_with('[')) {
            return Err(bad());
        }
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        Ok(MetricsConfig { addr: Some(format!("{host}:{port}")) })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// A command that flattens every group, as the replication commands will.
    #[derive(Debug, Parser)]
    struct All {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        staging: StagingArgs,
        #[command(flatten)]
        sequencer: SequencerArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    }

    const BASE: &[&str] = &[
        "t",
        "--sourceConn=postgres://src:pw@127.0.0.1:5432/src",
        "--targetConn=postgres://tgt:pw@127.0.0.1:5432/tgt",
        "--targetSchema=tgt.public",
    ];

    fn parse(extra: &[&str]) -> Result<All, clap::Error> {
        All::try_parse_from(BASE.iter().chain(extra))
    }

    fn parsed(extra: &[&str]) -> All {
        parse(extra).expect("parses")
    }

    #[test]
    fn defaults_are_molts() {
        let all = parsed(&[]);
        let target = all.target.validate().expect("valid");
        assert_eq!(target.max_pool_size, 128);
        assert_eq!(target.schema_refresh, Some(Duration::from_secs(60)));
        assert_eq!(target.schema.parts(), ["tgt", "public"]);
        let seq = all.sequencer.validate().expect("valid");
        assert_eq!(seq.flush_size, 1000);
        assert_eq!(seq.flush_period, Duration::from_secs(1));
        assert!(!seq.parallel_applies);
        assert_eq!(seq.parallelism, 16);
        assert!(seq.collapse_mutations);
        assert_eq!(seq.retry.max_retries, 10);
        assert_eq!(seq.retry.initial_backoff, Duration::from_millis(25));
        assert_eq!(seq.retry.max_backoff, Duration::from_secs(2));
        assert_eq!(seq.retry.multiplier, 2);
        assert_eq!(seq.grace_period, Duration::from_secs(30));
        let staging = all.staging.validate(&target).expect("valid");
        assert_eq!(staging.conn, target.conn, "staging defaults to a postgres:// target");
        assert_eq!(staging.schema, None);
        assert!(!staging.create_schema);
        assert_eq!(all.metrics.validate().expect("valid").addr, None);
    }

    #[test]
    fn booleans_take_go_spelling() {
        let all = parsed(&[
            "--stagingCreateSchema",
            "--collapseMutations=false",
            "--enableParallelApplies=T",
        ]);
        assert!(all.staging.staging_create_schema);
        assert!(!all.sequencer.collapse_mutations);
        assert!(all.sequencer.enable_parallel_applies);
        assert!(parse(&["--collapseMutations=maybe"]).is_err());
    }

    #[test]
    fn durations_take_go_spelling() {
        let all =
            parsed(&["--flushPeriod=250ms", "--retryMaxBackoff", "1m30s", "--schemaRefresh=0"]);
        assert_eq!(all.sequencer.flush_period, Duration::from_millis(250));
        assert_eq!(all.sequencer.retry_max_backoff, Duration::from_secs(90));
        assert_eq!(all.target.validate().expect("valid").schema_refresh, None);
        let err = parse(&["--flushPeriod=10"]).expect_err("no unit").to_string();
        assert!(err.contains("write a number and a unit"), "{err}");
    }

    #[test]
    fn target_schema_parts_follow_the_protocol() {
        let mut all = parsed(&[]);
        all.target.target_schema = "public".into();
        let err = all.target.validate().expect_err("one part on postgres").to_string();
        assert!(err.contains("takes db.schema"), "{err}");
        all.target.target_conn = ConnString::parse("mysql://root@127.0.0.1:3306/inv").expect("url");
        all.target.target_schema = "inv".into();
        let target = all.target.validate().expect("one part on mysql");
        assert_eq!(target.protocol, Protocol::MySql);
        all.target.target_schema = "inv.public".into();
        let err = all.target.validate().expect_err("two parts on mysql").to_string();
        assert!(err.contains("takes one name, the database"), "{err}");
        all.target.target_schema = "a..b".into();
        assert!(
            all.target.validate().expect_err("empty part").to_string().contains("a name is empty")
        );
    }

    #[test]
    fn unknown_target_scheme_is_refused_without_the_password() {
        let mut all = parsed(&[]);
        all.target.target_conn = ConnString::parse("http://u:Secr3t@h/db").expect("url");
        let err = all.target.validate().expect_err("http").to_string();
        assert!(err.contains("unknown scheme \"http\""), "{err}");
        assert!(err.contains("u:****@h"), "{err}");
        assert!(!err.contains("Secr3t"), "{err}");
    }

    #[test]
    fn staging_needs_postgres() {
        let mut all = parsed(&["--stagingConn=mysql://root:pw@h/db"]);
        let target = all.target.validate().expect("valid");
        let err = all.staging.validate(&target).expect_err("mysql staging").to_string();
        assert!(err.contains("use a postgres:// URL"), "{err}");
        all.staging.staging_conn = None;
        all.target.target_conn = ConnString::parse("mysql://root@h/inv").expect("url");
        all.target.target_schema = "inv".into();
        let target = all.target.validate().expect("valid");
        let err = all.staging.validate(&target).expect_err("no staging for mysql").to_string();
        assert!(err.contains("needs --stagingConn"), "{err}");
        all.staging.staging_schema = Some("a.b.c".into());
        all.staging.staging_conn = Some(ConnString::parse("postgres://h/s").expect("url"));
        let err = all.staging.validate(&target).expect_err("three parts").to_string();
        assert!(err.contains("write schema or db.schema"), "{err}");
        all.staging.staging_schema = Some("_replicator".into());
        let staging = all.staging.validate(&target).expect("valid");
        assert_eq!(
            staging.schema.map(|s| s.parts().to_vec()),
            Some(vec!["_replicator".to_owned()])
        );
    }

    #[test]
    fn sequencer_values_are_checked() {
        for (flags, complaint) in [
            (&["--flushSize=0"][..], "--flushSize \"0\": must be at least 1"),
            (&["--parallelism=0"][..], "--parallelism \"0\": must be at least 1"),
            (&["--retryMultiplier=0"][..], "--retryMultiplier \"0\": must be at least 1"),
            (&["--flushPeriod=0s"][..], "--flushPeriod \"0s\": must be more than zero"),
            (
                &["--retryInitialBackoff=0"][..],
                "--retryInitialBackoff \"0s\": must be more than zero",
            ),
            (
                &["--retryInitialBackoff=5s", "--retryMaxBackoff=1s"][..],
                "--retryMaxBackoff \"1s\": must not be below --retryInitialBackoff (5s)",
            ),
        ] {
            let err = parsed(flags).sequencer.validate().expect_err(complaint).to_string();
            assert!(err.starts_with(complaint), "{err}");
        }
    }

    #[test]
    fn parallelism_is_capped_by_the_pool_and_backoff_grows_to_its_ceiling() {
        let seq = parsed(&["--parallelism=100"]).sequencer.validate().expect("valid");
        assert_eq!(seq.effective_parallelism(128), 100);
        assert_eq!(seq.effective_parallelism(10), 8);
        assert_eq!(seq.effective_parallelism(1), 1);
        let backoffs: Vec<_> = (0..9).map(|a| seq.retry.backoff(a).as_millis()).collect();
        assert_eq!(backoffs, [25, 50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(seq.retry.backoff(200), Duration::from_secs(2), "no overflow");
    }

    #[test]
    fn metrics_address_forms() {
        let addr =
            |a: &str| MetricsArgs { metrics_addr: Some(a.into()) }.validate().map(|m| m.addr);
        assert_eq!(addr(":30005"), Ok(Some("0.0.0.0:30005".into())));
        assert_eq!(addr("127.0.0.1:30005"), Ok(Some("127.0.0.1:30005".into())));
        assert_eq!(addr("[::1]:30005"), Ok(Some("[::1]:30005".into())));
        assert_eq!(addr("localhost:0"), Ok(Some("localhost:0".into())));
        for bad in ["30005", ":http", "::1:30005", "host:99999", "a b:1"] {
            let err = addr(bad).expect_err(bad).to_string();
            assert!(err.contains("write [host]:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_required_flags_are_named() {
        let err = All::try_parse_from(["t", "--targetConn=postgres://h/db"]).expect_err("missing");
        let text = err.to_string();
        assert!(
            text.contains("--sourceConn <URL>") && text.contains("--targetSchema <SCHEMA>"),
            "{text}"
        );
    }
}

/// `--userscript`, `--userscriptTimeout`, `--userscriptMaxMemory`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Userscript")]
pub struct ScriptArgs {
    /// TypeScript or JavaScript userscript that filters, renames and transforms rows
    #[arg(long = "userscript", value_name = "FILE")]
    pub userscript: Option<PathBuf>,

    /// JavaScript time allowed per handler call (time waiting on the database excluded)
    #[arg(long = "userscriptTimeout", value_name = "DURATION", default_value = "10s", value_parser = go_duration)]
    pub userscript_timeout: Duration,

    /// Heap limit of each userscript engine, e.g. 256MiB or 1GiB
    #[arg(long = "userscriptMaxMemory", value_name = "SIZE", default_value = "256MiB", value_parser = byte_size)]
    pub userscript_max_memory: usize,
}

impl ScriptArgs {
    /// The limits these flags set; refuses limits too small to run anything.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        anyhow::ensure!(
            !self.userscript_timeout.is_zero(),
            "--userscriptTimeout must be more than zero, e.g. 10s"
        );
        anyhow::ensure!(
            self.userscript_max_memory >= 4 << 20,
            "--userscriptMaxMemory {} is too small to load the API: give at least 4MiB",
            format_bytes(self.userscript_max_memory)
        );
        Ok(Limits { timeout: self.userscript_timeout, max_memory: self.userscript_max_memory })
    }

    /// Compiles the script, failing fast with `file:line:col` on a syntax error.
    pub fn compile(&self) -> anyhow::Result<Option<Arc<CompiledScript>>> {
        self.userscript
            .as_ref()
            .map(|path| compile_script(path).map(Arc::new).map_err(Into::into))
            .transpose()
    }
}
