//! One factory for the writer a target URL names: [`open`] picks the adapter from the URL's
//! protocol (`postgres://`: PostgreSQL or CockroachDB, told apart by the server;
//! `mysql://`: MySQL or MariaDB), and [`AnyTarget`] is either behind the [`Target`] contract.

use std::time::Duration;

use super::mysql::writer::MyTarget;
use super::postgres::apply::Dialect;
use super::postgres::writer::PgTarget;
use super::{Planned, Planner, Target, TargetError, Upcoming};
use crate::conn::{ConnString, Protocol};
use crate::script::{ScriptPool, SourceTag};
use crate::staging::Committed;
use crate::types::mutation::SourceTransaction;

/// What to open.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The target URL.
    pub conn: ConnString,
    /// The schema written into (PostgreSQL/CockroachDB), or the database (MySQL/MariaDB).
    pub schema: String,
    /// `--collapseMutations`.
    pub collapse: bool,
    /// `--schemaRefresh`.
    pub schema_refresh: Option<Duration>,
}

/// A writer for any target protocol.
pub enum AnyTarget {
    /// PostgreSQL or CockroachDB.
    Postgres(Box<PgTarget>),
    /// MySQL or MariaDB.
    MySql(Box<MyTarget>),
}

/// Opens the writer `spec.conn` names; a lost connection is replaced later by one to the
/// same URL.
pub async fn open(spec: &TargetSpec) -> Result<AnyTarget, TargetError> {
    let unreachable = |e: &dyn std::error::Error| {
        TargetError::unavailable(format!(
            "opening the target failed: {}",
            crate::error::with_causes(e)
        ))
    };
    match spec.conn.protocol() {
        Some(Protocol::Postgres) => {
            let client =
                crate::conn::postgres::connect(&spec.conn).await.map_err(|e| unreachable(&e))?;
            let version: String = client
                .query_one("SELECT version()", &[])
                .await
                .map_err(|e| unreachable(&e))?
                .get(0);
            let dialect = if version.contains("CockroachDB") {
                Dialect::Cockroach
            } else {
                Dialect::Postgres
            };
            let target = PgTarget::new(client, &spec.schema, dialect, spec.collapse)
                .await
                .map_err(|e| unreachable(&e))?
                .with_schema_refresh(spec.schema_refresh)
                .with_reconnect(spec.conn.clone());
            Ok(AnyTarget::Postgres(Box::new(target)))
        }
        Some(Protocol::MySql) => {
            let params = crate::conn::mysql::MyParams::from_conn(&spec.conn)
                .map_err(|e| TargetError::data(e.to_string()))?;
            let conn = params.connect().await.map_err(|e| unreachable(&e))?;
            let target = MyTarget::new(conn, &spec.schema, spec.collapse)
                .await
                .map_err(|e| unreachable(&e))?
                .with_schema_refresh(spec.schema_refresh)
                .with_reconnect(params);
            Ok(AnyTarget::MySql(Box::new(target)))
        }
        _ => Err(TargetError::data(format!(
            "{}: not a target replicator writes to (postgres:// or mysql://)",
            spec.conn
        ))),
    }
}

/// The target schema a changefeed's path names (`["db", "schema"]` on PostgreSQL and
/// CockroachDB, `["database"]` on MySQL/MariaDB), as the target spells it; `Ok(None)` when the
/// target has no such schema (a PostgreSQL path's database must be the connection's).
pub async fn schema_named(
    conn: &ConnString,
    parts: &[String],
) -> Result<Option<String>, TargetError> {
    let unreachable = |e: &dyn std::error::Error| {
        TargetError::unavailable(format!(
            "reaching the target failed: {}",
            crate::error::with_causes(e)
        ))
    };
    match (conn.protocol(), parts) {
        (Some(Protocol::Postgres), [database, schema]) => {
            let client = crate::conn::postgres::connect(conn).await.map_err(|e| unreachable(&e))?;
            let current = super::postgres::introspect::current_database(&client)
                .await
                .map_err(|e| unreachable(&e))?;
            if !current.eq_ignore_ascii_case(database) {
                return Ok(None);
            }
            super::postgres::introspect::schema_named(&client, schema)
                .await
                .map_err(|e| unreachable(&e))
        }
        (Some(Protocol::MySql), [database]) => {
            let params = crate::conn::mysql::MyParams::from_conn(conn)
                .map_err(|e| TargetError::data(e.to_string()))?;
            let mut c = params.connect().await.map_err(|e| unreachable(&e))?;
            let found =
                super::mysql::database_named(&mut c, database).await.map_err(|e| unreachable(&e));
            let _ = c.disconnect().await;
            found
        }
        _ => Ok(None),
    }
}

impl AnyTarget {
    /// The target schema as last read (tables, columns, primary keys).
    pub fn schema(&self) -> std::sync::Arc<crate::target::schema::Schema> {
        match self {
            AnyTarget::Postgres(t) => t.schema(),
            AnyTarget::MySql(t) => t.schema(),
        }
    }

    /// Runs `sql` first in every target transaction, so one whose fence raises writes nothing
    /// (PostgreSQL only: a MySQL/MariaDB target is never staging's database).
    pub fn fence(&mut self, sql: Option<String>) {
        if let AnyTarget::Postgres(t) = self {
            t.fence(sql);
        }
    }

    /// Reads the target schema again now.
    pub async fn reload_schema(&mut self) -> Result<(), TargetError> {
        match self {
            AnyTarget::Postgres(t) => t.reload_schema().await,
            AnyTarget::MySql(t) => t.reload_schema().await,
        }
    }

    /// Runs the userscript's table-level handlers (and `onWrite`) in each write. Only the
    /// PostgreSQL/CockroachDB writer hosts them so far.
    pub fn with_script(
        self,
        pool: std::sync::Arc<ScriptPool>,
        script_schema: &str,
        source: SourceTag,
    ) -> Result<Self, TargetError> {
        match self {
            AnyTarget::Postgres(t) => {
                Ok(AnyTarget::Postgres(Box::new(t.with_script(pool, script_schema, source))))
            }
            AnyTarget::MySql(_) => Err(TargetError::data(
                "table-level userscript handlers are not supported on MySQL/MariaDB targets yet",
            )),
        }
    }
}

impl Target for AnyTarget {
    fn planner(&self) -> Option<Planner> {
        match self {
            AnyTarget::Postgres(t) => t.planner(),
            AnyTarget::MySql(t) => t.planner(),
        }
    }

    async fn apply(
        &mut self,
        transactions: &[SourceTransaction],
    ) -> Result<Committed, TargetError> {
        match self {
            AnyTarget::Postgres(t) => t.apply(transactions).await,
            AnyTarget::MySql(t) => t.apply(transactions).await,
        }
    }

    async fn apply_planned(
        &mut self,
        transactions: &[SourceTransaction],
        planned: Option<Planned>,
        upcoming: Option<Upcoming<'_>>,
    ) -> Result<Committed, TargetError> {
        match self {
            AnyTarget::Postgres(t) => t.apply_planned(transactions, planned, upcoming).await,
            AnyTarget::MySql(t) => t.apply_planned(transactions, planned, upcoming).await,
        }
    }
}
