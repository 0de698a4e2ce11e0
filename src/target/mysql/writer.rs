//! A MySQL/MariaDB [`Target`]: batches planned by the MySQL applier, written in one
//! transaction; the schema is re-read when a write names an unknown table or column.

use crate::conn::mysql::MyParams;
use crate::staging::Committed;
use crate::target::batch::ApplyError;
use crate::target::batch::Grouping;
use crate::target::mysql::{MAX_PLACEHOLDERS, Statement, execute, introspect, plan};
use crate::target::schema::Schema;
use crate::target::{Target, TargetError};
use crate::types::mutation::{Mutation, SourceTransaction};

/// Writes batches into one MySQL/MariaDB database.
pub struct MyTarget {
    conn: mysql_async::Conn,
    database: String,
    schema: std::sync::Arc<Schema>,
    collapse: bool,
    refresh_every: Option<std::time::Duration>,
    refreshed_at: std::time::Instant,
    /// Where to open a new connection when the current one is lost.
    reconnect: Option<MyParams>,
    /// The connection failed the way a lost one does: replace it before the next write.
    lost: bool,
}

impl MyTarget {
    /// Introspects `database` and gets ready to write into it.
    pub async fn new(
        mut conn: mysql_async::Conn,
        database: &str,
        collapse: bool,
    ) -> Result<Self, mysql_async::Error> {
        let schema = std::sync::Arc::new(introspect(&mut conn, database).await?);
        Ok(Self {
            conn,
            database: database.to_owned(),
            schema,
            collapse,
            refresh_every: None,
            refreshed_at: std::time::Instant::now(),
            reconnect: None,
            lost: false,
        })
    }

    /// Replaces a lost connection (killed, server restarted, network cut) with a new one
    /// before the next write, so the sequencer's retry of the batch runs on it.
    pub fn with_reconnect(mut self, params: MyParams) -> Self {
        self.reconnect = Some(params);
        self
    }

    /// Opens a new connection when the last error said the current one is gone.
    async fn ensure_connected(&mut self) -> Result<(), TargetError> {
        if !self.lost {
            return Ok(());
        }
        let Some(params) = &self.reconnect else { return Ok(()) };
        let conn = params.connect().await.map_err(|e| {
            TargetError::unavailable(format!(
                "the target connection was lost, and reconnecting failed: {}",
                crate::error::with_causes(&e)
            ))
        })?;
        tracing::info!("the target connection was lost; writing on a new one");
        let old = std::mem::replace(&mut self.conn, conn);
        drop(old);
        self.lost = false;
        Ok(())
    }

    /// Classifies a driver error (retrying may help), noting that the next write needs a new
    /// session when the server is unavailable: the connection is gone, or (read-only during a
    /// failover) this session keeps what it started with.
    fn driver_error(&mut self, e: &mysql_async::Error) -> bool {
        let kind = crate::error::mysql_kind(e);
        self.lost |= kind == crate::error::ErrorKind::Unavailable;
        kind.is_retryable()
    }

    /// Re-reads the target schema at least this often (`--schemaRefresh`).
    pub fn with_schema_refresh(mut self, every: Option<std::time::Duration>) -> Self {
        self.refresh_every = every;
        self
    }

    async fn refresh(&mut self) -> Result<(), TargetError> {
        let schema = introspect(&mut self.conn, &self.database).await;
        self.schema = match schema {
            Ok(schema) => std::sync::Arc::new(schema),
            Err(e) => {
                self.driver_error(&e);
                return Err(TargetError::reading_schema(
                    e.to_string(),
                    crate::error::mysql_kind(&e),
                ));
            }
        };
        self.refreshed_at = std::time::Instant::now();
        Ok(())
    }

    /// The schema as last read.
    pub fn schema(&self) -> std::sync::Arc<Schema> {
        self.schema.clone()
    }

    /// Reads the schema again now (a request named a table or column not seen yet).
    pub async fn reload_schema(&mut self) -> Result<(), TargetError> {
        self.ensure_connected().await?;
        self.refresh().await
    }
}

fn classify(e: ApplyError) -> TargetError {
    TargetError::from(e)
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

impl MyTarget {
    async fn write_batch(&mut self, transactions: &[SourceTransaction]) -> Result<(), TargetError> {
        self.ensure_connected().await?;
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
        let metrics = crate::metrics::global();
        let mut lost = false;
        let failed = match self.write(&statements).await {
            Ok(()) => None,
            Err(WriteError::Refused(e)) => Some(e),
            Err(WriteError::Lost(e)) => {
                self.driver_error(&e);
                return Err(lost_error(&e));
            }
        };
        let failed = match failed {
            // Coalesced and collapsed, the batch may hold a combination no source commit had
            // (see `PgTarget`): write it again exactly in source order.
            Some(e) if e.is_foreign_key_violation() => {
                metrics.apply_errors_total.with_label_values(&[&self.database, e.table()]).inc();
                tracing::info!(
                    rows = mutations.len(),
                    "the batch broke a foreign key once coalesced; writing it again in source order"
                );
                let statements = plan(
                    &self.schema,
                    mutations.iter().copied(),
                    Grouping::SourceOrder,
                    MAX_PLACEHOLDERS,
                )
                .map_err(classify)?;
                match self.write(&statements).await {
                    Ok(()) => {
                        self.count_written(&statements);
                        return Ok(());
                    }
                    Err(WriteError::Lost(e)) => {
                        self.driver_error(&e);
                        return Err(lost_error(&e));
                    }
                    Err(WriteError::Refused(e)) => Some(e),
                }
            }
            other => other,
        };
        if let Some(e) = failed {
            if let ApplyError::Database { table, .. } = &e {
                metrics.apply_errors_total.with_label_values(&[&self.database, table]).inc();
            }
            if let ApplyError::Database { source, .. } = &e
                && let Some(driver) = source.downcast_ref::<mysql_async::Error>()
            {
                lost = self.driver_error(driver);
            }
            let mut error = classify(e);
            if lost {
                error.kind = crate::error::ErrorKind::Unavailable;
            }
            if !error.is_transient()
                && let Some(found) = self.failing_row(&mutations).await
            {
                error.message = format!("{} ({found})", error.message);
            }
            return Err(error);
        }
        self.count_written(&statements);
        Ok(())
    }
}

impl Target for MyTarget {
    async fn apply(
        &mut self,
        transactions: &[SourceTransaction],
    ) -> Result<Committed, TargetError> {
        self.write_batch(transactions).await?;
        Ok(Committed::covering(transactions))
    }
}

/// Why a transaction was not written.
/// BEGIN or COMMIT failed with `e`.
fn lost_error(e: &mysql_async::Error) -> TargetError {
    TargetError::of_kind(e.to_string(), crate::error::mysql_kind(e))
}

enum WriteError {
    /// A statement was refused (the transaction is rolled back).
    Refused(ApplyError),
    /// BEGIN or COMMIT failed: the connection is in doubt.
    Lost(mysql_async::Error),
}

impl MyTarget {
    /// Runs `statements` in one transaction and commits it.
    async fn write(&mut self, statements: &[Statement]) -> Result<(), WriteError> {
        let mut tx = self
            .conn
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .map_err(WriteError::Lost)?;
        if let Err(e) = execute(&mut tx, statements).await {
            let _ = tx.rollback().await;
            return Err(WriteError::Refused(e));
        }
        tx.commit().await.map_err(WriteError::Lost)
    }

    /// Counts committed rows.
    fn count_written(&self, statements: &[Statement]) {
        let metrics = crate::metrics::global();
        for s in statements {
            metrics.count_applied(&self.database, &s.table, s.op, s.rows);
        }
    }
}
