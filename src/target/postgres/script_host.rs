//! `getTX()` on PostgreSQL/CockroachDB: the target transaction a running `onWrite` reaches.
//!
//! The engine calls the host synchronously from its own thread; the host blocks that thread
//! on the async client (never a runtime thread: engines run on the script pool's threads).
//! The caller opened the transaction on `client` and commits or rolls it back afterwards.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::codec::{PgValue, TextParam};
use super::quote_ident;
use crate::script::{HostError, RowOp, TargetColumn, WriteHost};
use crate::types::Value;

/// What `write(rows)` does with the operations: the applier, inside the same transaction.
pub type Writer = Box<dyn FnMut(Vec<RowOp>) -> Result<(), HostError> + Send>;

/// The target transaction for one table's `onWrite`.
pub struct PgScriptHost {
    client: Arc<Client>,
    runtime: Handle,
    database: String,
    schema: String,
    table: String,
    writer: Writer,
}

impl PgScriptHost {
    /// A host for `database.schema.table` on `client` (already inside a transaction).
    pub fn new(
        client: Arc<Client>,
        runtime: Handle,
        database: &str,
        schema: &str,
        table: &str,
        writer: Writer,
    ) -> Self {
        Self {
            client,
            runtime,
            database: database.to_owned(),
            schema: schema.to_owned(),
            table: table.to_owned(),
            writer,
        }
    }
}

/// The database's message and SQLSTATE.
pub(crate) fn host_error(e: &tokio_postgres::Error) -> HostError {
    match e.as_db_error() {
        Some(db) => HostError {
            message: db.message().to_owned(),
            sqlstate: Some(db.code().code().to_owned()),
        },
        None => {
            HostError { message: e.to_string(), sqlstate: e.code().map(|c| c.code().to_owned()) }
        }
    }
}

impl WriteHost for PgScriptHost {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, HostError> {
        let params: Vec<TextParam> = params.iter().map(TextParam).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows =
            self.runtime.block_on(self.client.query(sql, &refs)).map_err(|e| host_error(&e))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<_, PgValue>(i).map(|v| v.0).map_err(|e| HostError {
                            message: format!(
                                "column {} of the result: {}",
                                i + 1,
                                e.into_source().map_or_else(String::new, |s| s.to_string())
                            ),
                            sqlstate: None,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<(), HostError> {
        let params: Vec<TextParam> = params.iter().map(TextParam).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.runtime
            .block_on(self.client.execute(sql, &refs))
            .map(|_| ())
            .map_err(|e| host_error(&e))
    }

    fn columns(&mut self) -> Result<Vec<TargetColumn>, HostError> {
        // int2vector subscripts start at 0: test membership for NULL, order by position.
        const SQL: &str = "SELECT a.attname::text, upper(format_type(a.atttypid, a.atttypmod)), \
               a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid), \
               array_position(i.indkey::int2[], a.attnum) IS NOT NULL \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY array_position(i.indkey::int2[], a.attnum) NULLS LAST, a.attnum";
        let rows = self
            .runtime
            .block_on(self.client.query(SQL, &[&self.schema, &self.table]))
            .map_err(|e| host_error(&e))?;
        if rows.is_empty() {
            return Err(HostError {
                message: format!(
                    "table {}.{} does not exist on the target",
                    self.schema, self.table
                ),
                sqlstate: Some("42P01".into()),
            });
        }
        Ok(rows
            .iter()
            .map(|row| TargetColumn {
                name: quote_ident(row.get::<_, &str>(0)),
                type_name: row.get(1),
                ignored: row.get(2),
                default_expr: row.get(3),
                primary: row.get(4),
            })
            .collect())
    }

    fn schema(&self) -> String {
        format!("{}.{}", quote_ident(&self.database), quote_ident(&self.schema))
    }

    fn table(&self) -> String {
        format!("{}.{}", self.schema(), quote_ident(&self.table))
    }

    fn write(&mut self, ops: Vec<RowOp>) -> Result<(), HostError> {
        (self.writer)(ops)
    }
}

/// A [`Writer`] that applies operations one row at a time: `INSERT … ON CONFLICT (pk) DO
/// UPDATE` for upserts, `DELETE … WHERE pk = …` for deletes, in the caller's transaction.
/// `script test` uses it for `write()` inside `onWrite`; replication uses the batched applier.
pub fn row_writer(
    client: Arc<Client>,
    runtime: Handle,
    schema: &str,
    table: &str,
    pk: Vec<String>,
) -> Writer {
    let target = format!("{}.{}", quote_ident(schema), quote_ident(table));
    Box::new(move |ops: Vec<RowOp>| {
        for op in ops {
            let (sql, values): (String, Vec<Value>) = match op.data {
                Some(data) => {
                    let columns: Vec<String> = data.keys().map(|c| quote_ident(c)).collect();
                    let placeholders: Vec<String> =
                        (1..=columns.len()).map(|i| format!("${i}")).collect();
                    let updates: Vec<String> = data
                        .keys()
                        .map(|c| &**c)
                        .filter(|c| !pk.iter().any(|k| k == c))
                        .map(|c| format!("{0} = excluded.{0}", quote_ident(c)))
                        .collect();
                    let conflict = if updates.is_empty() {
                        "DO NOTHING".to_owned()
                    } else {
                        format!("DO UPDATE SET {}", updates.join(", "))
                    };
                    let keys: Vec<String> = pk.iter().map(|c| quote_ident(c)).collect();
                    (
                        format!(
                            "INSERT INTO {target} ({}) VALUES ({}) ON CONFLICT ({}) {conflict}",
                            columns.join(", "),
                            placeholders.join(", "),
                            keys.join(", ")
                        ),
                        data.into_values().collect(),
                    )
                }
                None => {
                    if op.pk.len() != pk.len() {
                        return Err(HostError {
                            message: format!(
                                "a delete from {target} has {} key values, the key has {}",
                                op.pk.len(),
                                pk.len()
                            ),
                            sqlstate: None,
                        });
                    }
                    let conditions: Vec<String> = pk
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("{} = ${}", quote_ident(c), i + 1))
                        .collect();
                    (
                        format!("DELETE FROM {target} WHERE {}", conditions.join(" AND ")),
                        op.pk.into_iter().map(Value::String).collect(),
                    )
                }
            };
            let params: Vec<TextParam> = values.iter().map(TextParam).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            runtime.block_on(client.execute(&sql, &refs)).map_err(|e| host_error(&e))?;
        }
        Ok(())
    })
}

/// Runs `f` inside a transaction on `client` that is rolled back afterwards, whatever `f`
/// did: `script test --targetConn` runs `onWrite` against the real target this way.
pub fn rolled_back<R>(
    client: &Client,
    runtime: &Handle,
    f: impl FnOnce() -> R,
) -> Result<R, tokio_postgres::Error> {
    runtime.block_on(client.batch_execute("BEGIN"))?;
    let result = f();
    let _ = runtime.block_on(client.batch_execute("ROLLBACK"));
    Ok(result)
}
