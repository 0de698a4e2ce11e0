//! Between the reading loop and the pipeline: truncates and unchanged TOAST values.
//!
//! A TRUNCATE is not a row change, so it cannot ride in a batch. Without a userscript it is
//! applied here as a delete-all of the same-named target tables ([`TargetOps::delete_all`]),
//! once everything before it has committed; the rest of its transaction then goes on as usual
//! (the decoder has already dropped changes the truncate voided). A crash in between replays
//! the transaction: the delete-all runs again, which is harmless. With a userscript it stops
//! with an error naming the tables: a table the script filters, renames or routes must not be
//! emptied blindly.
//!
//! A key change that leaves out an unchanged large (TOAST) value gets it from the old row on
//! the target ([`TargetOps::read_text`]), once everything before it has committed.

use tokio::sync::{mpsc, watch};

use super::pgoutput::{Decoded, ToastedKeyChange};
use super::stream::end_lsn;
use crate::source::MemoRef;
use crate::target::postgres::ops::{OpsError, TargetOps};
use crate::types::Value;
use crate::types::mutation::SourceTransaction;
use crate::types::position::PgLsn;

/// Why forwarding stopped.
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
    /// The truncate could not be applied.
    #[error(transparent)]
    Target(#[from] OpsError),
}

/// Where forwarding sends things, and what it needs.
pub struct Forward {
    /// Where transactions go.
    pub out: mpsc::Sender<SourceTransaction>,
    /// A userscript is loaded (truncates are then refused).
    pub scripted: bool,
    /// The target, for truncates and TOAST values.
    pub target: TargetOps,
    /// The last committed position (from the sequencer's checkpoints).
    pub committed: watch::Receiver<PgLsn>,
    /// The staging memo row, for the truncate message.
    pub memo: MemoRef,
}

/// Runs until `input` closes (`Ok`), `out` closes (`Ok`: the pipeline reports its own
/// error), or a transaction cannot go on.
pub async fn run(
    mut input: mpsc::Receiver<Decoded>,
    mut forward: Forward,
) -> Result<(), StageError> {
    let mut last_sent: Option<PgLsn> = None;
    while let Some(decoded) = input.recv().await {
        let position = end_lsn(&decoded);
        if !decoded.truncated.is_empty() {
            let tables: Vec<String> =
                decoded.truncated.iter().map(|(ns, name)| format!("{ns}.{name}")).collect();
            if forward.scripted {
                return Err(StageError::TruncateWithScript {
                    position,
                    tables: tables.join(", "),
                    memo: forward.memo.table.clone(),
                    key: forward.memo.key.clone(),
                });
            }
            // Everything before the truncate must be on the target first.
            if !drained(&mut forward.committed, last_sent).await {
                return Ok(());
            }
            forward.target.delete_all(&decoded.truncated).await?;
        }
        let mut tx = decoded.transaction;
        if !decoded.toasted.is_empty() {
            // The old row on the target must be current: let everything before land first.
            if !drained(&mut forward.committed, last_sent).await {
                return Ok(());
            }
            carry_toast(&mut forward.target, &mut tx.mutations, &decoded.toasted, position).await?;
        }
        if forward.out.send(tx).await.is_err() {
            return Ok(());
        }
        last_sent = Some(position);
    }
    Ok(())
}

/// Waits until everything handed on up to `last_sent` has committed; false when the
/// sequencer has stopped.
async fn drained(committed: &mut watch::Receiver<PgLsn>, last_sent: Option<PgLsn>) -> bool {
    match last_sent {
        Some(before) => committed.wait_for(|c| *c >= before).await.is_ok(),
        None => true,
    }
}

/// Reads the values a key change left out (unchanged TOAST) from the old row on the target.
async fn carry_toast(
    target: &mut TargetOps,
    mutations: &mut [crate::types::mutation::Mutation],
    toasted: &[ToastedKeyChange],
    position: PgLsn,
) -> Result<(), StageError> {
    for change in toasted {
        let columns: Vec<&str> = change.columns.iter().map(|(c, _)| &**c).collect();
        let values =
            target.read_text(&change.table, &change.old_key, &columns).await.map_err(|u| {
                let key: Vec<String> =
                    change.old_key.values().map(|v| v.as_key_text().unwrap_or_default()).collect();
                StageError::Toast {
                    position,
                    table: change.table.clone(),
                    key: key.join(", "),
                    column: u.column,
                    why: u.why,
                }
            })?;
        let upsert = &mut mutations[change.mutation];
        for ((column, oid), text) in change.columns.iter().zip(values) {
            let value = match text {
                Some(text) => crate::source::postgres::pgoutput::text_value(*oid, text),
                None => Value::Null,
            };
            upsert.row.insert(column.clone(), value);
        }
        tracing::debug!(table = %change.table, "carried unchanged TOAST values across a key change");
    }
    Ok(())
}
