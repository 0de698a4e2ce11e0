//! Source positions in staging's `memo` (MOLT's keys: `pglogical-wal-offset-<targetSchema>`,
//! `mysql-wal-offset-<targetSchema>`), written only for a position whose target transaction
//! has committed, and never backwards.

use tokio_postgres::GenericClient;

use super::{StagingError, StagingSchema};
use crate::types::mutation::Position;
use crate::types::position::{GtidSet, PgLsn};

/// A position whose target transaction has committed. Only [`Committed::after_commit`] makes
/// one; the sequencer calls it with the position of a transaction it has seen commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed(Position, i64);

impl Committed {
    /// Wraps the position of a transaction the caller has just seen commit on the target.
    pub fn after_commit(position: Position) -> Self {
        Self(position, 0)
    }

    /// The proof for a target transaction that committed `transactions` (it covers the last
    /// one): for the writer that committed them.
    pub fn covering(transactions: &[crate::types::mutation::SourceTransaction]) -> Self {
        match transactions.last() {
            Some(tx) => Self(tx.position.clone(), tx.commit_nanos),
            None => Self(Position::Lsn(PgLsn(0)), 0),
        }
    }

    /// The same, with that transaction's commit time on the source (nanoseconds since the
    /// Unix epoch), for the lag it reports.
    pub fn committed_at(self, commit_nanos: i64) -> Self {
        Self(self.0, commit_nanos)
    }

    /// The position.
    pub fn position(&self) -> &Position {
        &self.0
    }

    /// The source commit time (0 when unknown).
    pub fn commit_nanos(&self) -> i64 {
        self.1
    }
}

/// Positions in staging's `memo`, one key per source and target schema (MOLT's keys:
/// `pglogical-wal-offset-<targetSchema>`, `mysql-wal-offset-<targetSchema>`).
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    staging: StagingSchema,
    key: String,
}

impl CheckpointStore {
    /// The store for `key` in `staging`.
    pub fn new(staging: StagingSchema, key: impl Into<String>) -> Self {
        Self { staging, key: key.into() }
    }

    /// The memo key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The stored position text, if any.
    pub async fn load_text(
        &self,
        client: &impl GenericClient,
    ) -> Result<Option<String>, StagingError> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", self.staging.table("memo"));
        let row = client.query_opt(&sql, &[&self.key]).await?;
        Ok(row.map(|r| String::from_utf8_lossy(r.get::<_, &[u8]>(0)).into_owned()))
    }

    /// The stored LSN (PostgreSQL sources).
    pub async fn load_lsn(
        &self,
        client: &impl GenericClient,
    ) -> Result<Option<PgLsn>, StagingError> {
        self.load_text(client)
            .await?
            .map(|v| self.parse(&v, |s| s.parse().map(Position::Lsn)))
            .transpose()
            .map(|p| {
                p.and_then(|p| match p {
                    Position::Lsn(l) => Some(l),
                    _ => None,
                })
            })
    }

    /// The stored GTID set (MySQL/MariaDB sources).
    pub async fn load_gtid(
        &self,
        client: &impl GenericClient,
    ) -> Result<Option<GtidSet>, StagingError> {
        self.load_text(client)
            .await?
            .map(|v| self.parse(&v, |s| s.parse().map(Position::Gtid)))
            .transpose()
            .map(|p| {
                p.and_then(|p| match p {
                    Position::Gtid(g) => Some(g),
                    _ => None,
                })
            })
    }

    fn parse(
        &self,
        value: &str,
        f: impl Fn(&str) -> Result<Position, crate::types::position::PositionError>,
    ) -> Result<Position, StagingError> {
        f(value).map_err(|e| StagingError::BadPosition {
            key: self.key.clone(),
            value: value.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Stores a committed position. Equal positions are a no-op; a position behind (or, for
    /// GTID sets, not containing) the stored one is refused.
    pub async fn save(
        &self,
        client: &impl GenericClient,
        committed: &Committed,
    ) -> Result<(), StagingError> {
        let proposed = committed.position();
        if let Some(stored_text) = self.load_text(client).await? {
            let stored = match proposed {
                Position::Lsn(_) => self.parse(&stored_text, |s| s.parse().map(Position::Lsn))?,
                Position::Gtid(_) => self.parse(&stored_text, |s| s.parse().map(Position::Gtid))?,
                Position::Scn(_) => self.parse(&stored_text, |s| s.parse().map(Position::Scn))?,
                Position::Hlc(_) => self.parse(&stored_text, |s| s.parse().map(Position::Hlc))?,
            };
            let backwards = match (&stored, proposed) {
                (Position::Lsn(a), Position::Lsn(b)) => b < a,
                (Position::Scn(a), Position::Scn(b)) => b < a,
                (Position::Hlc(a), Position::Hlc(b)) => b < a,
                (Position::Gtid(a), Position::Gtid(b)) => !b.contains(a),
                _ => true,
            };
            if backwards {
                return Err(StagingError::Backwards {
                    key: self.key.clone(),
                    stored: stored_text,
                    proposed: proposed.to_string(),
                });
            }
        }
        let sql = format!(
            "INSERT INTO {} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            self.staging.table("memo")
        );
        client.execute(&sql, &[&self.key, &proposed.to_string().into_bytes()]).await?;
        Ok(())
    }
}
