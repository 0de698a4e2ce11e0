//! [`PgSource`]: the PostgreSQL source behind [`crate::source::Source`], put together from
//! the preflight, the reading loop ([`super::stream`]) and the forwarding step
//! ([`super::forward`]).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::preflight::{PreflightError, preflight, published_tables, query};
use super::{forward, stream};
use crate::conn::postgres::PgParams;
use crate::script::SourceTag;
use crate::source::{Source, SourceError, SourceRun};
use crate::target::postgres::ops::TargetOps;
use crate::target::preflight::SourceTable;
use crate::types::mutation::Position;
use crate::types::position::PgLsn;

/// What `pglogical` reads, validated from its flags.
#[derive(Debug, Clone)]
pub struct PgSourceConfig {
    /// The source connection.
    pub params: PgParams,
    /// `--slotName`.
    pub slot: String,
    /// `--publicationName`.
    pub publication: String,
    /// `--createSlot`.
    pub create_slot: bool,
    /// `--standbyTimeout`.
    pub standby_timeout: Duration,
    /// `--retainedWALWarning` in bytes (0: never).
    pub retained_wal_warning: usize,
}

/// A PostgreSQL database's logical replication stream (pgoutput).
pub struct PgSource {
    config: PgSourceConfig,
    /// Where the slot says the consumer has confirmed up to (known after the preflight).
    confirmed: Option<PgLsn>,
    /// Table names published from several schemas, reported as `schema.table`.
    qualify: HashSet<String>,
}

impl PgSource {
    /// A source reading as `config` says.
    pub fn new(config: PgSourceConfig) -> Self {
        Self { config, confirmed: None, qualify: HashSet::new() }
    }
}

fn lsn_of(position: &Position) -> PgLsn {
    match position {
        Position::Lsn(lsn) => *lsn,
        _ => PgLsn(0),
    }
}

impl Source for PgSource {
    fn tag(&self) -> SourceTag {
        SourceTag::PgLogical
    }

    fn memo_key(&self, target_schema: &str) -> String {
        format!("pglogical-wal-offset-{target_schema}")
    }

    async fn preflight(&mut self, scripted: bool) -> Result<Vec<SourceTable>, SourceError> {
        let c = &self.config;
        let client = match crate::conn::postgres::connect_params(&c.params).await {
            Ok(client) => client,
            Err(e) => {
                crate::metrics::global().pglogical_dial_failure_total.inc();
                return Err(SourceError::new(e));
            }
        };
        let ready = preflight(&client, &c.publication, &c.slot, c.create_slot)
            .await
            .map_err(SourceError::new)?;
        self.confirmed = ready.confirmed;
        self.qualify = published_duplicates(&client, &c.publication, scripted)
            .await
            .map_err(SourceError::new)?;
        published_tables(&client, &c.publication, &self.qualify).await.map_err(SourceError::new)
    }

    fn start(&self, stored: Option<&str>, key: &str) -> Result<Position, SourceError> {
        let start = match (stored, self.confirmed) {
            (Some(text), _) => {
                let stored: PgLsn =
                    text.parse().map_err(|e: crate::types::position::PositionError| {
                        SourceError::new(crate::staging::StagingError::BadPosition {
                            key: key.to_owned(),
                            value: text.to_owned(),
                            reason: e.to_string(),
                        })
                    })?;
                tracing::info!(position = %stored, key = %key, "resuming from the stored position");
                stored
            }
            (None, Some(confirmed)) => {
                tracing::info!(position = %confirmed, slot = %self.config.slot, "no stored position: starting at the slot's confirmed position");
                confirmed
            }
            (None, None) => PgLsn(0),
        };
        Ok(Position::Lsn(start))
    }

    async fn run(self, run: SourceRun) -> Result<(), SourceError> {
        let c = self.config;
        tokio::spawn(watch_retained_wal(c.params.clone(), c.slot.clone(), c.retained_wal_warning));
        // The stream and forwarding follow the committed position as an LSN.
        let (lsn_tx, lsn_rx) = watch::channel(lsn_of(&run.start));
        let mut committed = run.committed;
        tokio::spawn(async move {
            while committed.changed().await.is_ok() {
                let lsn = lsn_of(&committed.borrow_and_update());
                lsn_tx.send_replace(lsn);
            }
        });
        let (decoded_tx, decoded_rx) = mpsc::channel(4);
        let stream_config = stream::StreamConfig {
            params: c.params,
            slot: c.slot,
            publication: c.publication,
            standby_timeout: c.standby_timeout,
            start: lsn_of(&run.start),
            retry: run.retry,
            qualify: self.qualify,
        };
        let reader = tokio::spawn(stream::run(stream_config, decoded_tx, lsn_rx.clone(), run.stop));
        let forward = forward::Forward {
            out: run.out,
            scripted: run.scripted,
            target: TargetOps::new(run.target.conn, run.target.schema),
            committed: lsn_rx,
            memo: run.memo,
        };
        // Forwarding ends when the reader stops (its channel closes) or the pipeline does.
        let forwarded = forward::run(decoded_rx, forward).await;
        let read = reader.await.map_err(|e| SourceError::message(e.to_string()))?;
        read.map_err(SourceError::new)?;
        forwarded.map_err(SourceError::new)
    }
}

/// Table names the publication has in more than one schema: an error without a userscript;
/// with one, those tables are reported as `schema.table` for the script to route.
async fn published_duplicates(
    client: &tokio_postgres::Client,
    publication: &str,
    scripted: bool,
) -> Result<HashSet<String>, PreflightError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(query)?;
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
        return Err(PreflightError::SameNames {
            publication: publication.to_owned(),
            tables: listed.join("; "),
        });
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
