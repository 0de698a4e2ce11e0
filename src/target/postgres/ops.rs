//! What a source must do on the target itself, outside the sequencer's batches: PostgreSQL's
//! TRUNCATE (a delete of every row of the same-named tables, children first, in one
//! transaction) and reading the current values of a row (the unchanged TOAST values a key
//! change leaves out of the stream). On a connection of its own, replaced when lost.

use crate::conn::ConnString;
use crate::target::postgres::introspect::introspect;
use crate::target::postgres::quote_ident;
use crate::types::Row;

/// Why a target operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The connection was lost and a new one could not be opened.
    #[error("the target connection was lost, and reconnecting failed")]
    Reconnect {
        /// Why.
        #[source]
        source: crate::conn::postgres::PgConnError,
    },
    /// The target's tables could not be read.
    #[error("reading the tables of target schema {schema} failed")]
    Introspect {
        /// The target schema.
        schema: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A truncated table has no same-named target table.
    #[error(
        "the source truncated {source_table}, but target schema {schema} has no table {name:?}: \
         create it, or remove the table from the publication"
    )]
    TruncateMissing {
        /// `schema.table` on the source.
        source_table: String,
        /// The target schema.
        schema: String,
        /// The table name.
        name: String,
    },
    /// The delete-all failed.
    #[error("applying the truncate of {table} (DELETE FROM the target table) failed")]
    Truncate {
        /// The target table.
        table: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A row's values that could not be read, and why (`the target table has no column "v"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The column that could not be read (or the first one asked for).
    pub column: String,
    /// Why.
    pub why: String,
}

/// Operations on one target schema.
pub struct TargetOps {
    client: Option<tokio_postgres::Client>,
    conn: ConnString,
    schema: String,
}

impl TargetOps {
    /// Operations on `schema` through `conn` (connected on first use).
    pub fn new(conn: ConnString, schema: String) -> Self {
        Self { client: None, conn, schema }
    }

    /// The target schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A live connection: the current one, or a new one when it was lost.
    async fn client(&mut self) -> Result<&tokio_postgres::Client, OpsError> {
        if self.client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let client = crate::conn::postgres::connect(&self.conn)
                .await
                .map_err(|source| OpsError::Reconnect { source })?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// Deletes every row of the target tables named like `tables` (`(schema, table)` on the
    /// source), children before their parents, in one transaction.
    pub async fn delete_all(&mut self, tables: &[(String, String)]) -> Result<(), OpsError> {
        let schema = self.schema.clone();
        let client = self.client().await?;
        let target = introspect(client, &schema)
            .await
            .map_err(|source| OpsError::Introspect { schema: schema.clone(), source })?;
        let mut found = Vec::new();
        for (ns, name) in tables {
            let Some(table) = target.table(name) else {
                return Err(OpsError::TruncateMissing {
                    source_table: format!("{ns}.{name}"),
                    schema: schema.clone(),
                    name: name.clone(),
                });
            };
            found.push((format!("{ns}.{name}"), table.name.clone()));
        }
        // Children before their parents, all in one transaction.
        let names: Vec<String> = found.iter().map(|(_, t)| t.clone()).collect();
        let is_parent = |t: &str| {
            target.foreign_keys.iter().any(|(c, p)| p == t && c != t && names.contains(c))
        };
        found.sort_by_key(|(_, t)| is_parent(t));
        let failed = |table: &str| {
            let table = table.to_owned();
            move |source| OpsError::Truncate { table, source }
        };
        client.batch_execute("BEGIN").await.map_err(failed(&schema))?;
        for (source_table, name) in &found {
            let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(name));
            let deleted = match client.execute(&format!("DELETE FROM {qualified}"), &[]).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(failed(&qualified)(e));
                }
            };
            tracing::info!(source_table = %source_table, target_table = %qualified, deleted, "source TRUNCATE applied as a delete of every target row");
        }
        client.batch_execute("COMMIT").await.map_err(failed(&schema))?;
        Ok(())
    }

    /// The text of `columns` of the row of `table` whose key is `key` (column → value), as
    /// the target has it now.
    pub async fn read_text(
        &mut self,
        table: &str,
        key: &Row,
        columns: &[&str],
    ) -> Result<Vec<Option<String>>, Unreadable> {
        let first = columns.first().copied().unwrap_or_default();
        let fail = |column: &str, why: String| Unreadable { column: column.to_owned(), why };
        let schema = self.schema.clone();
        let client = self.client().await.map_err(|e| fail(first, e.to_string()))?;
        let target = introspect(client, &schema).await.map_err(|e| fail(first, e.to_string()))?;
        let Some(found) = target.table(table) else {
            return Err(fail(first, format!("the target schema has no table {table:?}")));
        };
        let mut select = Vec::new();
        for &column in columns {
            let Some((_, c)) = found.column(column) else {
                return Err(fail(column, format!("the target table has no column {column:?}")));
            };
            select.push(format!("{}::text", quote_ident(&c.name)));
        }
        let mut conditions = Vec::new();
        for (i, name) in key.keys().enumerate() {
            let Some((_, c)) = found.column(name) else {
                return Err(fail(first, format!("the target table has no key column {name:?}")));
            };
            conditions.push(format!("{} = ${}::text::{}", quote_ident(&c.name), i + 1, c.sql_type));
        }
        let sql = format!(
            "SELECT {} FROM {}.{} WHERE {}",
            select.join(", "),
            quote_ident(&schema),
            quote_ident(&found.name),
            conditions.join(" AND ")
        );
        let key_text: Vec<String> =
            key.values().map(|v| v.as_key_text().unwrap_or_default()).collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            key_text.iter().map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let row = client
            .query_opt(&sql, &params)
            .await
            .map_err(|e| fail(first, format!("reading it from the target failed: {e}")))?
            .ok_or_else(|| fail(first, "the target has no row with the old key".to_owned()))?;
        Ok((0..columns.len()).map(|i| row.get::<_, Option<String>>(i)).collect())
    }
}
