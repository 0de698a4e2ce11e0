//! [`MySource`]: the MySQL/MariaDB source behind [`crate::source::Source`], put together from
//! the preflight, the reading loop ([`super::stream`]) and the check for values the target
//! cannot hold.

use std::time::Duration;

use tokio::sync::mpsc;

use super::Flavor;
use super::preflight::{Ready, database_tables, preflight};
use super::rows::Problem;
use super::stream::{self, Decoded};
use crate::conn::mysql::MyParams;
use crate::script::SourceTag;
use crate::source::{Source, SourceError, SourceRun};
use crate::target::preflight::SourceTable;
use crate::types::mutation::{Position, SourceTransaction};
use crate::types::position::GtidSet;

/// How often the source sends a heartbeat while idle.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// What `mylogical` reads, validated from its flags.
#[derive(Debug, Clone)]
pub struct MySourceConfig {
    /// The source connection.
    pub params: MyParams,
    /// The database replicated (from `--sourceConn`).
    pub database: String,
    /// `--defaultGTIDSet`, parsed.
    pub default_gtids: Option<GtidSet>,
    /// `--fetchMetadata`.
    pub fetch_metadata: bool,
    /// `--replicationProcessID`.
    pub server_id: u32,
}

/// A MySQL or MariaDB database's row binlog, read by GTID.
pub struct MySource {
    config: MySourceConfig,
    /// What the preflight found (the flavor, the server's position).
    ready: Option<Ready>,
}

impl MySource {
    /// A source reading as `config` says.
    pub fn new(config: MySourceConfig) -> Self {
        Self { config, ready: None }
    }
}

/// Why the source's transactions cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum MySourceError {
    /// No position is stored and none was given.
    #[error(
        "no position is stored under {key:?} in staging, so --defaultGTIDSet is required on \
         this first run: the GTID position the target's data is consistent with (the source is \
         now at {current:?}; {how})"
    )]
    NoStart {
        /// The memo key.
        key: String,
        /// The source's position now.
        current: String,
        /// How to read it.
        how: &'static str,
    },
    /// The position is of the other flavor's form.
    #[error("{0}")]
    WrongFlavor(String),
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
}

impl Source for MySource {
    fn tag(&self) -> SourceTag {
        SourceTag::MyLogical
    }

    fn memo_key(&self, target_schema: &str) -> String {
        format!("mysql-wal-offset-{target_schema}")
    }

    async fn preflight(&mut self, _scripted: bool) -> Result<Vec<SourceTable>, SourceError> {
        let c = &self.config;
        let mut conn = match c.params.connect().await {
            Ok(conn) => conn,
            Err(e) => {
                crate::metrics::global().mylogical_dial_failure_total.inc();
                return Err(SourceError::message(format!(
                    "opening the source {} failed: {}",
                    c.params.redacted(),
                    crate::error::with_causes(&e)
                )));
            }
        };
        let ready = preflight(&mut conn, c.params.user(), &c.database, c.fetch_metadata)
            .await
            .map_err(SourceError::new)?;
        let tables = database_tables(&mut conn, &c.database).await.map_err(SourceError::new)?;
        drop(conn);
        tracing::info!(flavor = %ready.flavor, version = %ready.version, position = %ready.current_position, "source checked");
        self.ready = Some(ready);
        Ok(tables)
    }

    fn start(&self, stored: Option<&str>, key: &str) -> Result<Position, SourceError> {
        let ready =
            self.ready.as_ref().ok_or_else(|| SourceError::message("the preflight did not run"))?;
        let stored = stored
            .map(|text| {
                text.parse::<GtidSet>().map_err(|e| {
                    SourceError::new(crate::staging::StagingError::BadPosition {
                        key: key.to_owned(),
                        value: text.to_owned(),
                        reason: e.to_string(),
                    })
                })
            })
            .transpose()?;
        let start = match (stored, self.config.default_gtids.clone()) {
            (Some(stored), _) => {
                tracing::info!(position = %stored, key = %key, "resuming from the stored position");
                stored
            }
            (None, Some(default)) => {
                tracing::info!(position = %default, "no stored position: starting at --defaultGTIDSet");
                default
            }
            (None, None) => {
                return Err(SourceError::new(MySourceError::NoStart {
                    key: key.to_owned(),
                    current: ready.current_position.clone(),
                    how: match ready.flavor {
                        Flavor::MariaDb => "SELECT @@gtid_binlog_pos on MariaDB",
                        Flavor::MySql => "SELECT @@gtid_executed on MySQL",
                    },
                }));
            }
        };
        let wrong = |text: String| Err(SourceError::new(MySourceError::WrongFlavor(text)));
        let start = match (ready.flavor, start) {
            (Flavor::MariaDb, GtidSet::MySql(m)) if m.is_empty() => {
                GtidSet::MariaDb(Default::default())
            }
            (Flavor::MariaDb, GtidSet::MySql(m)) => {
                return wrong(format!(
                    "the source is MariaDB but the starting position {} is a MySQL GTID set: use \
                     MariaDB's domain-server-seq form (SELECT @@gtid_binlog_pos)",
                    GtidSet::MySql(m)
                ));
            }
            (Flavor::MySql, GtidSet::MariaDb(_)) => {
                return wrong(
                    "the source is MySQL but the starting position is a MariaDB GTID list: use \
                     MySQL's uuid:1-29 form (SELECT @@gtid_executed)"
                        .to_owned(),
                );
            }
            (_, start) => start,
        };
        Ok(Position::Gtid(start))
    }

    async fn run(self, run: SourceRun) -> Result<(), SourceError> {
        let flavor = self.ready.as_ref().map_or(Flavor::MySql, |r| r.flavor);
        let Position::Gtid(start) = run.start else {
            return Err(SourceError::message("a MySQL source starts at a GTID position"));
        };
        let c = self.config;
        let stream_config = stream::StreamConfig {
            params: c.params,
            flavor,
            server_id: c.server_id,
            start,
            database: c.database,
            fetch_metadata: c.fetch_metadata,
            retry: run.retry,
            heartbeat: HEARTBEAT,
        };
        let (decoded_tx, decoded_rx) = mpsc::channel(4);
        let reader = tokio::spawn(stream::run(stream_config, decoded_tx, run.stop, run.memo));
        let forwarded = forward(decoded_rx, run.out, run.scripted).await;
        let read = reader.await.map_err(|e| SourceError::message(e.to_string()))?;
        read.map_err(SourceError::new)?;
        forwarded.map_err(SourceError::new)
    }
}

/// Hands each transaction on; a value the target cannot hold stops it unless a userscript
/// may map it.
async fn forward(
    mut input: mpsc::Receiver<Decoded>,
    out: mpsc::Sender<SourceTransaction>,
    scripted: bool,
) -> Result<(), MySourceError> {
    while let Some(decoded) = input.recv().await {
        let tx = decoded.transaction;
        if let Some(problem) = decoded.problems.into_iter().next() {
            if !scripted {
                return Err(MySourceError::Unrepresentable {
                    position: tx.position.to_string(),
                    problem,
                });
            }
            tracing::debug!(%problem, "passing a value the target cannot hold to the userscript");
        }
        if out.send(tx).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
