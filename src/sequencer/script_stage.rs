//! The userscript in the pipeline.
//!
//! Schema-level handlers run on each source transaction as it arrives
//! ([`schema_level`]): every mutation goes through `onRowUpsert`/`onRowDelete` of its target
//! schema, and what comes back (a row, rows routed to other tables, or nothing) replaces it,
//! in order. Table-level handlers run right before the write, inside the target
//! ([`table_level`]), where the target's primary key order is known. A script error stops the
//! batch: nothing past it is applied and the checkpoint does not move (DESIGN invariant 6).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::script::{Meta, Routed, ScriptError, ScriptPool, SourceTag};
use crate::target::schema::values_for;
use crate::types::mutation::{Mutation, Op, SourceTransaction};
use crate::types::{Row, Value};

fn meta(
    schema: &str,
    table: &str,
    source: SourceTag,
    tx: &SourceTransaction,
    before: Option<Row>,
) -> Meta {
    Meta {
        schema: schema.to_owned(),
        table: table.to_owned(),
        source: Some(source),
        time: Some((i128::from(tx.commit_nanos), 0)),
        before,
    }
}

/// Runs the schema-level handlers of `target_schema` over one source transaction. Runs of
/// consecutive mutations with the same operation go to the engine as one batch.
pub async fn schema_level(
    pool: &Arc<ScriptPool>,
    target_schema: &str,
    source: SourceTag,
    tx: SourceTransaction,
) -> Result<SourceTransaction, ScriptError> {
    if pool.configured().schema(target_schema).is_none() {
        return Ok(tx);
    }
    let mut out = Vec::with_capacity(tx.mutations.len());
    let mut start = 0;
    while start < tx.mutations.len() {
        let op = tx.mutations[start].op;
        let end = tx.mutations[start..]
            .iter()
            .position(|m| m.op != op)
            .map_or(tx.mutations.len(), |n| start + n);
        let rows: Vec<(Row, Meta)> = tx.mutations[start..end]
            .iter()
            .map(|m| (m.row.clone(), meta(target_schema, &m.table, source, &tx, m.before.clone())))
            .collect();
        let routed = pool.schema_rows(target_schema.to_owned(), op, rows).await?;
        for (m, r) in tx.mutations[start..end].iter().zip(routed) {
            if let Routed::Rows(rows) = r {
                for (table, row) in rows {
                    out.push(Mutation { table, op, row, before: m.before.clone() });
                }
            }
        }
        start = end;
    }
    Ok(SourceTransaction { mutations: out, ..tx })
}

/// Runs table-level `onRowUpsert`/`onRowDelete` over a batch about to be written.
/// `key_of(table)` gives a target table's primary key columns in key order (deletes are
/// handed to the script as key values in that order, and rebuilt from what it returns).
/// Mutations the handlers drop are removed; order is kept.
pub async fn table_level(
    pool: &Arc<ScriptPool>,
    target_schema: &str,
    source: SourceTag,
    transactions: &[SourceTransaction],
    key_of: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<Vec<Mutation>, ScriptError> {
    let configured = pool.configured();
    // (transaction, mutation) in order, with the registered table-level name if any.
    let mut items: Vec<(usize, Mutation, Option<String>)> = Vec::new();
    for (t, tx) in transactions.iter().enumerate() {
        for m in &tx.mutations {
            let name = configured.table(target_schema, &m.table).map(|c| c.name.clone());
            items.push((t, m.clone(), name));
        }
    }
    let mut keep = vec![true; items.len()];
    // Group by (registered name, op), keeping each group's positions.
    let mut groups: BTreeMap<(String, bool), Vec<usize>> = BTreeMap::new();
    for (i, (_, m, name)) in items.iter().enumerate() {
        if let Some(name) = name {
            groups.entry((name.clone(), m.op == Op::Delete)).or_default().push(i);
        }
    }
    for ((name, is_delete), positions) in groups {
        let config = configured.tables.iter().find(|c| c.name == name).cloned();
        let Some(config) = config else { continue };
        if is_delete && config.delete {
            let mut batch = Vec::new();
            for &i in &positions {
                let (t, m, _) = &items[i];
                let key = values_for(&key_of(&m.table).unwrap_or_default(), &m.row);
                batch.push((key, meta(target_schema, &m.table, source, &transactions[*t], None)));
            }
            let name2 = name.clone();
            let results = pool.run(move |engine| engine.table_deletes(&name2, &batch)).await?;
            for (&i, result) in positions.iter().zip(results) {
                match result {
                    None => keep[i] = false,
                    Some(key) => {
                        let key_columns = key_of(&items[i].1.table).unwrap_or_default();
                        items[i].1.row = key_columns
                            .into_iter()
                            .zip(key)
                            .map(|(c, v)| (c.into(), Value::String(v)))
                            .collect();
                    }
                }
            }
        } else if !is_delete && config.upsert {
            let batch: Vec<(Row, Meta)> = positions
                .iter()
                .map(|&i| {
                    let (t, m, _) = &items[i];
                    (m.row.clone(), meta(target_schema, &m.table, source, &transactions[*t], None))
                })
                .collect();
            let name2 = name.clone();
            let results = pool.run(move |engine| engine.table_upserts(&name2, &batch)).await?;
            for (&i, result) in positions.iter().zip(results) {
                match result {
                    None => keep[i] = false,
                    Some(row) => items[i].1.row = row,
                }
            }
        }
    }
    Ok(items.into_iter().zip(keep).filter(|(_, k)| *k).map(|((_, m, _), _)| m).collect())
}
