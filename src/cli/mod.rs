//! The command line: MOLT Replicator's commands and flag spellings.
//!
//! Commands are registered only when they work. Today: `pglogical`, `mylogical`, `version`, `make-jwt`,
//! `script …` and MOLT's legacy `userscript`. The flag
//! groups in [`groups`] are what the replication commands flatten in. Long flags are
//! camelCase as in MOLT; boolean flags take `--flag` or `--flag=false`; durations take Go's
//! syntax (`250ms`, `1m30s`).

pub mod groups;
pub mod make_jwt;
pub mod molt;
pub mod mylogical;
pub mod pglogical;
pub mod replicate;
pub mod script;
pub mod start;
pub mod values;
pub mod version;

use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Args, Parser, Subcommand};

use crate::logging::{LogConfig, LogFormat};

/// The `replicator` command line.
#[derive(Debug, Parser)]
#[command(
    name = "replicator",
    version,
    about = "Change-data-capture replication to CockroachDB and back, with TypeScript userscripts",
    long_about = None,
    propagate_version = true,
    max_term_width = 120,
    after_help = "Flags keep MOLT Replicator's names. Design and userscript API: see README.md."
)]
pub struct Cli {
    /// Logging flags, accepted by every command.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct GlobalArgs {
    /// More log detail: -v debug, -vv trace [default: info]
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Append logs to this file instead of writing them to stdout [default: stdout]
    #[arg(long = "logDestination", value_name = "FILE", global = true)]
    pub log_destination: Option<PathBuf>,

    /// Log line format: text, or json (MOLT's "fluent" is read as json)
    #[arg(long = "logFormat", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text, hide_possible_values = true, global = true)]
    pub log_format: LogFormat,
}

impl Cli {
    /// The logging configuration the flags ask for. Commands whose stdout is their output
    /// (every command so far; the replication commands will log to stdout) log to stderr.
    pub fn log_config(&self) -> LogConfig {
        let stderr = matches!(
            self.command,
            Command::Version(_) | Command::MakeJwt(_) | Command::Script(_) | Command::Userscript(_)
        );
        LogConfig {
            verbosity: self.global.verbose,
            destination: self.global.log_destination.clone(),
            format: self.global.log_format,
            stderr,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version, the build, and every dependency with its checksum
    Version(version::VersionArgs),
    /// Sign a JWT that lets a changefeed write into the given schemas
    #[command(name = "make-jwt")]
    MakeJwt(make_jwt::MakeJwtArgs),
    /// Userscript tools: print the API typings, benchmark a script
    #[command(subcommand)]
    Script(Box<script::ScriptCommand>),
    /// Legacy (MOLT) userscript help; --api prints the replicator@v1 typings
    Userscript(script::UserscriptArgs),
    /// Replicate from PostgreSQL (logical replication: slot + publication) into CockroachDB or PostgreSQL
    Pglogical(Box<pglogical::PglogicalArgs>),
    /// Replicate from MySQL or MariaDB (row binlog with GTIDs) into CockroachDB or PostgreSQL
    Mylogical(Box<mylogical::MylogicalArgs>),
    /// Receive a CockroachDB changefeed (webhook) and apply it to PostgreSQL, CockroachDB, MySQL or MariaDB (failback)
    Start(Box<start::StartArgs>),
}

/// An error that ends the process with a specific exit code (commands that document
/// theirs, like `script test` and `script check`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CodedError {
    /// The process exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

/// A [`CodedError`].
pub fn coded(code: u8, message: impl Into<String>) -> CodedError {
    CodedError { code, message: message.into() }
}

/// Parses the process's arguments. On a usage error, prints clap's message (plus a note
/// when the flag or command is MOLT's but not implemented here) and exits with status 2.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let note = usage_note(&err);
            // Printing can only fail if stderr is gone; the exit code still tells.
            let _ = err.print();
            if let Some(note) = note {
                eprintln!("\n{note}");
            }
            std::process::exit(err.exit_code());
        }
    }
}

/// A MOLT-specific note for an unknown flag or command.
pub fn usage_note(err: &clap::Error) -> Option<String> {
    let value = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match err.kind() {
        ErrorKind::UnknownArgument => molt::note_for_unknown(&value(ContextKind::InvalidArg)?),
        ErrorKind::InvalidSubcommand => {
            molt::note_for_unknown_command(&value(ContextKind::InvalidSubcommand)?)
        }
        _ => None,
    }
}

/// Runs the parsed command.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Version(args) => version::run(args),
        Command::MakeJwt(args) => make_jwt::run(args),
        Command::Script(command) => script::run(command),
        Command::Userscript(args) => script::run_legacy(args),
        Command::Pglogical(args) => pglogical::run(args),
        Command::Mylogical(args) => mylogical::run(args),
        Command::Start(args) => start::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from(["replicator", "version", "-vv", "--logFormat=fluent"])
            .expect("parses");
        assert_eq!(cli.global.verbose, 2);
        assert_eq!(cli.global.log_format, LogFormat::Json);
    }

    #[test]
    fn molt_flags_not_implemented_are_refused_with_a_note() {
        let err = Cli::try_parse_from(["replicator", "version", "--flushSize=10"])
            .expect_err("unknown here");
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        let note = usage_note(&err).expect("note");
        assert!(note.contains("--flushSize is a MOLT Replicator flag"), "{note}");

        let err = Cli::try_parse_from(["replicator", "oraclelogminer"]).expect_err("not yet");
        let note = usage_note(&err).expect("note");
        assert!(note.contains("`oraclelogminer` is a MOLT Replicator command"), "{note}");

        let err = Cli::try_parse_from(["replicator", "version", "--bogus"]).expect_err("unknown");
        assert_eq!(usage_note(&err), None);
    }
}
