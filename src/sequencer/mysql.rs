//! A MySQL/MariaDB [`Target`]: batches planned by the MySQL applier, written in one
//! transaction; the schema is re-read when a write names an unknown table or column.

use super::{Target, TargetError};
use crate::target::batch::ApplyError;
use crate::target::mysql::{MAX_PLACEHOLDERS, execute, introspect, plan};
use crate::target::schema::Schema;
use crate::types::mutation::{Mutation, SourceTransaction};

/// Writes batches into one MySQL/MariaDB database.
pub struct MyTarget {
    conn: mysql_async::Conn,
    database: String,
    schema: Schema,
    collapse: bool,
    refresh_every: Option<std::time::Duration>,
    refreshed_at: std::time::Instant,
}

impl MyTarget {
    /// Introspects `database` and gets ready to write into it.
    pub async fn new(
        mut conn: mysql_async::Conn,
        database: &str,
        collapse: bool,
    ) -> Result<Self, mysql_async::Error> {
        let schema = introspect(&mut conn, database).await?;
        Ok(Self {
            conn,
            database: database.to_owned(),
            schema,
            collapse,
            refresh_every: None,
            refreshed_at: std::time::Instant::now(),
        })
    }

    /// Re-reads the target schema at least this often (`--schemaRefresh`).
    pub fn with_schema_refresh(mut self, every: Option<std::time::Duration>) -> Self {
        self.refresh_every = every;
        self
    }

    async fn refresh(&mut self) -> Result<(), TargetError> {
        self.schema = introspect(&mut self.conn, &self.database)
            .await
            .map_err(|e| TargetError { message: e.to_string(), transient: true })?;
        self.refreshed_at = std::time::Instant::now();
        Ok(())
    }
}

fn classify(e: ApplyError) -> TargetError {
    TargetError { transient: e.is_transient(), message: e.to_string() }
}

impl MyTarget {
    /// Replays `mutations` one by one under savepoints, in a transaction that is rolled back,
    /// to name the first row the target refuses.
    async fn failing_row(&mut self, mutations: &[&Mutation]) -> Option<String> {
        use mysql_async::prelude::Queryable as _;
        let mut tx = self.conn.start_transaction(mysql_async::TxOpts::default()).await.ok()?;
        let mut found = None;
        for &m in mutations {
            let Ok(statements) = plan(&self.schema, [m], true, MAX_PLACEHOLDERS) else {
                continue;
            };
            if tx.query_drop("SAVEPOINT replicator_probe").await.is_err() {
                break;
            }
            if execute(&mut tx, &statements).await.is_err() {
                let key =
                    self.schema.table(&m.table).map(|t| t.key_values(&m.row)).unwrap_or_default();
                found = Some(format!(
                    "first failing row: table {:?}, key [{}]",
                    m.table,
                    key.join(", ")
                ));
                break;
            }
            let _ = tx.query_drop("RELEASE SAVEPOINT replicator_probe").await;
        }
        let _ = tx.rollback().await;
        found
    }
}

impl Target for MyTarget {
    async fn apply(&mut self, transactions: &[SourceTransaction]) -> Result<(), TargetError> {
        if self.refresh_every.is_some_and(|every| self.refreshed_at.elapsed() >= every) {
            self.refresh().await?;
        }
        let mutations: Vec<&Mutation> = transactions.iter().flat_map(|t| &t.mutations).collect();
        let all = mutations.iter().copied();
        let statements = match plan(&self.schema, all.clone(), self.collapse, MAX_PLACEHOLDERS) {
            Ok(s) => s,
            Err(ApplyError::UnknownTable { .. } | ApplyError::UnknownColumn { .. }) => {
                self.refresh().await?;
                plan(&self.schema, all, self.collapse, MAX_PLACEHOLDERS).map_err(classify)?
            }
            Err(e) => return Err(classify(e)),
        };
        let transient = |e: mysql_async::Error| TargetError {
            transient: matches!(e, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)),
            message: e.to_string(),
        };
        let metrics = crate::metrics::global();
        let mut tx =
            self.conn.start_transaction(mysql_async::TxOpts::default()).await.map_err(transient)?;
        if let Err(e) = execute(&mut tx, &statements).await {
            if let ApplyError::Database { table, .. } = &e {
                metrics.apply_errors_total.with_label_values(&[&self.database, table]).inc();
            }
            let _ = tx.rollback().await;
            let mut error = classify(e);
            if !error.transient
                && let Some(found) = self.failing_row(&mutations).await
            {
                error.message = format!("{} ({found})", error.message);
            }
            return Err(error);
        }
        tx.commit().await.map_err(transient)?;
        for s in &statements {
            metrics.count_applied(&self.database, &s.table, s.op, s.rows);
        }
        Ok(())
    }
}
