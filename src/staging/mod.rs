//! The staging database: where replication keeps its own state.
//!
//! Tables keep the column layouts of MOLT's staging tables, so an operator's SQL (inserting a
//! JWT public key, reading a position) works unchanged: `memo` (source positions),
//! `checkpoints`, `leases`, `jwt_public_keys`, `jwt_revoked_ids`, and the changefeed's
//! per-table staging tables ([`stage`]); `key_versions` is ours (see [`stage`]). PostgreSQL's DDL is run in
//! the tests; CockroachDB's is pinned by golden SQL (no CockroachDB server runs here).
//!
//! Positions are written only after the target transaction that covers them has committed:
//! [`CheckpointStore::save`] takes a [`Committed`] position, which only code that saw the
//! commit can make, and it refuses to move a position backwards (invariants 1 and 4 in `docs/architecture.md`).

use tokio_postgres::GenericClient;

pub mod checkpoints;
pub mod lease;
pub mod memo;
pub mod stage;

pub use checkpoints::{AnnouncingCheckpoints, CheckpointError, Checkpoints, StagingCheckpoints};
pub use memo::{CheckpointStore, Committed};

use crate::target::postgres::quote_ident;

/// Which database staging lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagingDialect {
    /// PostgreSQL: the schema lives in the staging connection's database.
    Postgres,
    /// CockroachDB: `db.schema`, the database created if missing.
    Cockroach,
}

/// A resolved staging location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingSchema {
    /// The database, when named (`db.schema`).
    pub database: Option<String>,
    /// The schema.
    pub schema: String,
}

impl StagingSchema {
    /// The quoted prefix for table names: `"db"."schema"` or `"schema"`.
    pub fn qualified(&self) -> String {
        match &self.database {
            Some(db) => format!("{}.{}", quote_ident(db), quote_ident(&self.schema)),
            None => quote_ident(&self.schema),
        }
    }

    /// A staging table's quoted name.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{}", self.qualified(), quote_ident(name))
    }
}

/// The DDL that creates staging's tables (idempotent: `IF NOT EXISTS` throughout).
pub fn ddl(dialect: StagingDialect, staging: &StagingSchema, create_schema: bool) -> Vec<String> {
    let t = |name: &str| staging.table(name);
    let (text, bytes, decimal, uuid_default) = match dialect {
        StagingDialect::Postgres => ("TEXT", "BYTEA", "NUMERIC", "gen_random_uuid()"),
        StagingDialect::Cockroach => ("STRING", "BYTES", "DECIMAL", "gen_random_uuid()"),
    };
    let mut out = Vec::new();
    if create_schema {
        if let (StagingDialect::Cockroach, Some(db)) = (dialect, &staging.database) {
            out.push(format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(db)));
        }
        out.push(format!("CREATE SCHEMA IF NOT EXISTS {}", staging.qualified()));
    }
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {} (key {text} PRIMARY KEY, value {bytes} NOT NULL)",
        t("memo")
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {} (group_name {text} NOT NULL, source_hlc {decimal} NOT NULL, \
         partition {text} NOT NULL, first_seen TIMESTAMPTZ NOT NULL DEFAULT now(), \
         target_applied_at TIMESTAMPTZ NULL, PRIMARY KEY (group_name, source_hlc, partition))",
        t("checkpoints")
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {} (name {text} PRIMARY KEY, expires TIMESTAMP NOT NULL, nonce UUID NOT NULL, hostname {text} NOT NULL)",
        t("leases")
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {} (id UUID PRIMARY KEY DEFAULT {uuid_default}, public_key {text} NOT NULL, active BOOL NOT NULL DEFAULT true)",
        t("jwt_public_keys")
    ));
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {} (id {text} PRIMARY KEY)",
        t("jwt_revoked_ids")
    ));
    out.push(stage::versions_ddl(dialect, staging));
    out
}

/// Why staging could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The schema does not exist and may not be created.
    #[error(
        "staging schema {0} does not exist: create it, or pass --stagingCreateSchema to let replicator create it"
    )]
    MissingSchema(String),
    /// A stored position that does not parse.
    #[error("staging memo {key:?} holds {value:?}, which is not a valid position: {reason}")]
    BadPosition {
        /// The memo key.
        key: String,
        /// What it holds.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A position that would move backwards.
    #[error("refusing to move the checkpoint {key:?} backwards from {stored} to {proposed}")]
    Backwards {
        /// The memo key.
        key: String,
        /// What is stored.
        stored: String,
        /// What was proposed.
        proposed: String,
    },
    /// The database failed.
    #[error("staging database error")]
    Database(#[from] tokio_postgres::Error),
}

impl StagingError {
    /// Staging could not be reached or the connection broke: retrying (on a new connection)
    /// may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StagingError::Database(e) => {
                e.code().is_none() || crate::error::postgres_kind(e).is_retryable()
            }
            _ => false,
        }
    }
}

/// Creates staging's tables (and the schema, when allowed); fails clearly when the schema is
/// missing and may not be created.
pub async fn prepare(
    client: &impl GenericClient,
    dialect: StagingDialect,
    staging: &StagingSchema,
    create_schema: bool,
) -> Result<(), StagingError> {
    if !create_schema {
        let exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&staging.schema])
            .await?
            .is_some();
        if !exists {
            return Err(StagingError::MissingSchema(staging.qualified()));
        }
    }
    for statement in ddl(dialect, staging, create_schema) {
        execute_ddl(client, &statement).await?;
    }
    Ok(())
}

/// Runs an idempotent DDL statement (`IF NOT EXISTS`), once more when another instance
/// created the same object at the same moment: PostgreSQL's `IF NOT EXISTS` does not hold
/// against a concurrent creation (unique violation on its catalog, or "already exists").
pub async fn execute_ddl(
    client: &impl GenericClient,
    statement: &str,
) -> Result<(), tokio_postgres::Error> {
    match client.batch_execute(statement).await {
        Err(e) if e.code().is_some_and(|c| matches!(c.code(), "23505" | "42P06" | "42P07")) => {
            client.batch_execute(statement).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_ddl_for_cockroach_and_postgres() {
        let crdb = StagingSchema { database: Some("_replicator".into()), schema: "public".into() };
        let sql = ddl(StagingDialect::Cockroach, &crdb, true);
        assert_eq!(sql[0], r#"CREATE DATABASE IF NOT EXISTS "_replicator""#);
        assert_eq!(sql[1], r#"CREATE SCHEMA IF NOT EXISTS "_replicator"."public""#);
        assert_eq!(
            sql[2],
            r#"CREATE TABLE IF NOT EXISTS "_replicator"."public"."memo" (key STRING PRIMARY KEY, value BYTES NOT NULL)"#
        );
        assert_eq!(
            sql[3],
            r#"CREATE TABLE IF NOT EXISTS "_replicator"."public"."checkpoints" (group_name STRING NOT NULL, source_hlc DECIMAL NOT NULL, partition STRING NOT NULL, first_seen TIMESTAMPTZ NOT NULL DEFAULT now(), target_applied_at TIMESTAMPTZ NULL, PRIMARY KEY (group_name, source_hlc, partition))"#
        );
        assert_eq!(sql.len(), 8);
        let pg = ddl(
            StagingDialect::Postgres,
            &StagingSchema { database: None, schema: "_replicator".into() },
            false,
        );
        assert_eq!(pg.len(), 6, "no schema creation without --stagingCreateSchema");
        assert_eq!(
            pg[0],
            r#"CREATE TABLE IF NOT EXISTS "_replicator"."memo" (key TEXT PRIMARY KEY, value BYTEA NOT NULL)"#
        );
        assert!(pg[3].contains(r#""_replicator"."jwt_public_keys" (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), public_key TEXT NOT NULL, active BOOL NOT NULL DEFAULT true)"#));
    }
}
