//! Between the reading loop and the sequencer: truncates, the userscript's schema-level
//! handlers, and the bounded apply queue.
//!
//! A TRUNCATE is not a row change, so it cannot ride in a batch. Without a userscript it is
//! applied here as a delete-all of the same-named target table, once everything before it
//! has committed; the rest of its transaction then goes through the queue as usual (the
//! decoder has already dropped changes the truncate voided). A crash in between replays the
//! transaction: the delete-all runs again, which is harmless. With a userscript the stage stops
//! with an error naming the table: a table the script filters, renames or routes must not be
//! emptied blindly.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::pgoutput::{Decoded, ToastedKeyChange};
use super::stream::end_lsn;
use crate::script::transform::schema_level;
use crate::script::{ScriptPool, SourceTag};
use crate::sequencer::queue::QueueSender;
use crate::target::postgres::introspect::introspect;
use crate::target::postgres::quote_ident;
use crate::types::Value;
use crate::types::position::PgLsn;

/// Why the stage stopped.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A truncate arrived while a userscript is in use.
    #[error(
        "source transaction ending at {position} truncates {tables}; with --userscript replicator \
         does not empty target tables blindly (the script may filter, rename or route them). \
         Empty the matching target tables yourself if that is intended, then skip the \
         transaction by storing its position: INSERT INTO {memo} (key, value) VALUES ('{key}', \
         '{position}') ON CONFLICT (key) DO UPDATE SET value = excluded.value; and restart (other \
         changes in that transaction are skipped with it)"
    )]
    TruncateWithScript {
        /// The transaction's end LSN.
        position: PgLsn,
        /// The truncated tables, `schema.table`.
        tables: String,
        /// The staging memo table.
        memo: String,
        /// The memo key.
        key: String,
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
    /// The target's tables could not be read.
    #[error("reading the tables of target schema {schema} failed")]
    Introspect {
        /// The target schema.
        schema: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The target connection was lost and a new one could not be opened.
    #[error("the target connection was lost, and reconnecting failed")]
    Reconnect {
        /// Why.
        #[source]
        source: crate::conn::postgres::PgConnError,
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
    /// An unchanged TOAST value could not be carried across a key change.
    #[error(
        "source transaction ending at {position} changes the key of a {table:?} row from [{key}] \
         without sending its unchanged large (TOAST) column {column:?}, and {why}. Run ALTER TABLE \
         … REPLICA IDENTITY FULL on the source table so the old row travels with each change"
    )]
    Toast {
        /// The transaction's end LSN.
        position: PgLsn,
        /// The table.
        table: String,
        /// The old key.
        key: String,
        /// The column.
        column: String,
        /// Why the target could not supply it.
        why: String,
    },
    /// A userscript handler failed.
    #[error("the userscript failed on the source transaction ending at {position}")]
    Script {
        /// The transaction's end LSN.
        position: PgLsn,
        /// The script's error.
        #[source]
        source: crate::script::ScriptError,
    },
}

/// Where the stage sends things.
pub struct Stage {
    /// The apply queue.
    pub queue: QueueSender,
    /// The userscript and the target schema as scripts name it (`db.public`).
    pub script: Option<(Arc<ScriptPool>, String)>,
    /// A target connection for truncates, and the target schema's name.
    pub truncate: (tokio_postgres::Client, String),
    /// Where that connection goes, to replace it when it is lost.
    pub target_conn: crate::conn::ConnString,
    /// The last committed position (from the sequencer's checkpoints).
    pub committed: watch::Receiver<PgLsn>,
    /// The staging memo table and key, for the truncate message.
    pub memo: (String, String),
    /// Source tables' key columns, to name a row the userscript fails on.
    pub keys: std::collections::HashMap<String, Vec<String>>,
}

/// Runs until `input` closes (`Ok`), the queue closes (`Ok`: the sequencer reports its own
/// error), or a transaction cannot go on.
pub async fn run(mut input: mpsc::Receiver<Decoded>, mut stage: Stage) -> Result<(), StageError> {
    let metrics = crate::metrics::global();
    let mut last_sent: Option<PgLsn> = None;
    while let Some(decoded) = input.recv().await {
        let position = end_lsn(&decoded);
        if !decoded.truncated.is_empty() {
            let tables: Vec<String> =
                decoded.truncated.iter().map(|(ns, name)| format!("{ns}.{name}")).collect();
            if stage.script.is_some() {
                return Err(StageError::TruncateWithScript {
                    position,
                    tables: tables.join(", "),
                    memo: stage.memo.0.clone(),
                    key: stage.memo.1.clone(),
                });
            }
            // Everything before the truncate must be on the target first.
            if !drained(&mut stage.committed, last_sent).await {
                return Ok(());
            }
            stage.reconnect_if_lost().await?;
            truncate(&stage.truncate, &decoded.truncated).await?;
        }
        let mut tx = decoded.transaction;
        if !decoded.toasted.is_empty() {
            // The old row on the target must be current: let everything before land first.
            if !drained(&mut stage.committed, last_sent).await {
                return Ok(());
            }
            stage.reconnect_if_lost().await?;
            carry_toast(&stage.truncate, &mut tx.mutations, &decoded.toasted, position).await?;
        }
        metrics.count_source_mutations("pglogical", &tx.mutations);
        if let Some((pool, schema)) = &stage.script {
            let keys = &stage.keys;
            tx = schema_level(pool, schema, SourceTag::PgLogical, tx, |t| keys.get(t).cloned())
                .await
                .map_err(|source| StageError::Script { position, source })?;
        }
        let commit_nanos = tx.commit_nanos;
        if stage.queue.send(tx).await.is_err() {
            return Ok(());
        }
        crate::status::global().received(&position, commit_nanos);
        last_sent = Some(position);
    }
    Ok(())
}

impl Stage {
    /// Replaces the target connection when it was lost (killed, server restarted).
    async fn reconnect_if_lost(&mut self) -> Result<(), StageError> {
        if self.truncate.0.is_closed() {
            self.truncate.0 = crate::conn::postgres::connect(&self.target_conn)
                .await
                .map_err(|source| StageError::Reconnect { source })?;
        }
        Ok(())
    }
}

/// Waits until everything handed to the queue up to `last_sent` has committed; false when
/// the sequencer has stopped.
async fn drained(committed: &mut watch::Receiver<PgLsn>, last_sent: Option<PgLsn>) -> bool {
    match last_sent {
        Some(before) => committed.wait_for(|c| *c >= before).await.is_ok(),
        None => true,
    }
}

/// Reads the values a key change left out (unchanged TOAST) from the old row on the target.
async fn carry_toast(
    (client, schema): &(tokio_postgres::Client, String),
    mutations: &mut [crate::types::mutation::Mutation],
    toasted: &[ToastedKeyChange],
    position: PgLsn,
) -> Result<(), StageError> {
    let target = introspect(client, schema)
        .await
        .map_err(|source| StageError::Introspect { schema: schema.clone(), source })?;
    for change in toasted {
        let key_text: Vec<String> =
            change.old_key.values().map(|v| v.as_key_text().unwrap_or_default()).collect();
        let fail = |column: &str, why: String| StageError::Toast {
            position,
            table: change.table.clone(),
            key: key_text.join(", "),
            column: column.to_owned(),
            why,
        };
        let first = change.columns.first().map(|(c, _)| &**c).unwrap_or_default();
        let Some(table) = target.table(&change.table) else {
            return Err(fail(first, format!("the target schema has no table {:?}", change.table)));
        };
        let mut select = Vec::new();
        for (column, _) in &change.columns {
            let Some((_, c)) = table.column(column) else {
                return Err(fail(column, format!("the target table has no column {column:?}")));
            };
            select.push(format!("{}::text", quote_ident(&c.name)));
        }
        let mut conditions = Vec::new();
        for (i, name) in change.old_key.keys().enumerate() {
            let Some((_, c)) = table.column(name) else {
                return Err(fail(first, format!("the target table has no key column {name:?}")));
            };
            conditions.push(format!("{} = ${}::text::{}", quote_ident(&c.name), i + 1, c.sql_type));
        }
        let sql = format!(
            "SELECT {} FROM {}.{} WHERE {}",
            select.join(", "),
            quote_ident(schema),
            quote_ident(&table.name),
            conditions.join(" AND ")
        );
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            key_text.iter().map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let row = client
            .query_opt(&sql, &params)
            .await
            .map_err(|e| fail(first, format!("reading it from the target failed: {e}")))?
            .ok_or_else(|| fail(first, "the target has no row with the old key".to_owned()))?;
        let upsert = &mut mutations[change.mutation];
        for (i, (column, oid)) in change.columns.iter().enumerate() {
            let value = match row.get::<_, Option<String>>(i) {
                Some(text) => crate::source::postgres::pgoutput::text_value(*oid, text),
                None => Value::Null,
            };
            upsert.row.insert(column.clone(), value);
        }
        tracing::debug!(table = %change.table, key = %key_text.join(", "), "carried unchanged TOAST values across a key change");
    }
    Ok(())
}

async fn truncate(
    (client, schema): &(tokio_postgres::Client, String),
    tables: &[(String, String)],
) -> Result<(), StageError> {
    let target = introspect(client, schema)
        .await
        .map_err(|source| StageError::Introspect { schema: schema.clone(), source })?;
    let mut found = Vec::new();
    for (ns, name) in tables {
        let Some(table) = target.table(name) else {
            return Err(StageError::TruncateMissing {
                source_table: format!("{ns}.{name}"),
                schema: schema.clone(),
                name: name.clone(),
            });
        };
        found.push((format!("{ns}.{name}"), table.name.clone()));
    }
    // Children before their parents, all in one transaction.
    let names: Vec<String> = found.iter().map(|(_, t)| t.clone()).collect();
    let is_parent =
        |t: &str| target.foreign_keys.iter().any(|(c, p)| p == t && c != t && names.contains(c));
    found.sort_by_key(|(_, t)| is_parent(t));
    let failed = |table: &str| {
        let table = table.to_owned();
        move |source| StageError::Truncate { table, source }
    };
    client.batch_execute("BEGIN").await.map_err(failed(schema))?;
    for (source_table, name) in &found {
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(name));
        let deleted = match client.execute(&format!("DELETE FROM {qualified}"), &[]).await {
            Ok(n) => n,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(failed(&qualified)(e));
            }
        };
        tracing::info!(source_table = %source_table, target_table = %qualified, deleted, "source TRUNCATE applied as a delete of every target row");
    }
    client.batch_execute("COMMIT").await.map_err(failed(schema))?;
    Ok(())
}
