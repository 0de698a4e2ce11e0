//! Operational logging with `tracing`.
//!
//! Logs go to stdout (stderr for commands whose stdout is their output, like `script test`),
//! or to the file `--logDestination` names (appended to). `--logFormat`
//! picks plain text or JSON lines (MOLT's `fluent` is read as JSON). `-v` turns on debug and
//! `-vv` trace for replicator's own modules; other crates stay at warn unless `RUST_LOG` says
//! otherwise. The final error of a failed run is printed to stderr by `main`, and also
//! written to the log file when there is one.
//!
//! Never log row values or credentials: connection strings are [`crate::conn::ConnString`],
//! which shows itself redacted.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    #[value(alias = "fluent")]
    Json,
}

/// What the global logging flags ask for.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// 0 = info, 1 = debug, 2 or more = trace.
    pub verbosity: u8,
    /// Write here instead of stdout.
    pub destination: Option<PathBuf>,
    /// Text or JSON.
    pub format: LogFormat,
    /// Without a destination, write to stderr instead of stdout: for commands whose stdout
    /// is their output (`script test`, `version`, …).
    pub stderr: bool,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file cannot be opened for appending.
    #[error("cannot open log file {path} (from --logDestination)")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A global subscriber was already installed (a bug in the caller).
    #[error("logging was initialised twice")]
    AlreadySet,
}

impl LogConfig {
    /// The level for replicator's own modules.
    pub fn level(&self) -> Level {
        match self.verbosity {
            0 => Level::INFO,
            1 => Level::DEBUG,
            _ => Level::TRACE,
        }
    }

    /// The filter: `RUST_LOG` when set, else our level for this crate and warn for others.
    fn filter(&self) -> EnvFilter {
        match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
            _ => EnvFilter::new(format!("warn,replicator={}", self.level())),
        }
    }

    /// Installs the global subscriber. Returns the log file, if any, so `main` can append
    /// the final error to it.
    pub fn init(&self) -> Result<Option<LogFile>, LogError> {
        match &self.destination {
            None if self.stderr => {
                self.install(io::stderr)?;
                Ok(None)
            }
            None => {
                self.install(io::stdout)?;
                Ok(None)
            }
            Some(path) => {
                let file = LogFile::open(path)?;
                self.install(file.clone())?;
                Ok(Some(file))
            }
        }
    }

    fn install<W>(&self, writer: W) -> Result<(), LogError>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(self.filter())
            .with_writer(writer)
            .with_target(self.verbosity > 0);
        let result = match self.format {
            LogFormat::Text => builder.with_ansi(false).try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        result.map_err(|_| LogError::AlreadySet)
    }

    /// Builds a subscriber writing to `writer` without installing it (for tests).
    pub fn subscriber<W>(&self, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(format!("warn,replicator={}", self.level())))
            .with_writer(writer)
            .with_ansi(false);
        match self.format {
            LogFormat::Text => Box::new(builder.finish()),
            LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        }
    }
}

/// A log file shared by the subscriber and `main`'s final error report.
#[derive(Debug, Clone)]
pub struct LogFile {
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: &Path) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LogError::Open { path: path.to_owned(), source })?;
        Ok(Self { file: Arc::new(Mutex::new(file)) })
    }
}

impl io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFile;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnString;

    /// Collects everything a subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn capture(config: &LogConfig, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(config.subscriber(buffer.clone()), emit);
        let bytes = buffer.0.lock().expect("buffer lock").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        let conn =
            ConnString::parse("postgres://app:Sup3rS3cret@db:5432/prod?password=Sup3rS3cret")
                .expect("valid");
        for format in [LogFormat::Text, LogFormat::Json] {
            let config = LogConfig { verbosity: 2, format, ..LogConfig::default() };
            let out = capture(&config, || {
                tracing::info!(target: "replicator::test", source = %conn, "connecting");
                tracing::debug!(target: "replicator::test", source = ?conn, "connecting again");
                tracing::error!(target: "replicator::test", "failed to reach {conn}");
            });
            assert!(out.contains("app:****@db:5432/prod"), "{format:?}: {out}");
            assert!(!out.contains("Sup3rS3cret"), "{format:?} leaked: {out}");
        }
    }

    #[test]
    fn verbosity_picks_the_level() {
        let lines = |verbosity| {
            let config = LogConfig { verbosity, ..LogConfig::default() };
            capture(&config, || {
                tracing::info!(target: "replicator::test", "an info line");
                tracing::debug!(target: "replicator::test", "a debug line");
                tracing::trace!(target: "replicator::test", "a trace line");
            })
        };
        let info = lines(0);
        assert!(info.contains("an info line") && !info.contains("a debug line"), "{info}");
        let debug = lines(1);
        assert!(debug.contains("a debug line") && !debug.contains("a trace line"), "{debug}");
        assert!(lines(2).contains("a trace line"));
    }

    #[test]
    fn json_format_writes_one_object_per_line() {
        let config = LogConfig { format: LogFormat::Json, ..LogConfig::default() };
        let out =
            capture(&config, || tracing::info!(target: "replicator::test", rows = 3, "applied"));
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        assert_eq!(line["message"], "applied");
        assert_eq!(line["rows"], 3);
        assert_eq!(line["level"], "INFO");
    }

    #[test]
    fn fluent_is_accepted_as_json() {
        assert_eq!(LogFormat::from_str("fluent", false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert!(LogFormat::from_str("xml", false).is_err());
    }
}
