//! The userscript in the pipeline.
//!
//! Schema-level handlers run on each source transaction as it arrives
//! ([`schema_level`]): every mutation goes through `onRowUpsert`/`onRowDelete` of its target
//! schema, and what comes back (a row, rows routed to other tables, or nothing) replaces it,
//! in order. Table-level handlers run right before the write, inside the target
//! ([`table_level`]), where the target's primary key order is known. A script error stops the
//! batch: nothing past it is applied and the checkpoint does not move (invariant 6 in `docs/architecture.md`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::script::pool::Timing;
use crate::script::{Api, Meta, Routed, ScriptError, ScriptPool, SourceTag};
use crate::target::schema::values_for;
use crate::types::mutation::{Mutation, Op, SourceTransaction};
use crate::types::{Row, Value};

fn meta(
    schema: &str,
    table: &str,
    source: SourceTag,
    commit_nanos: i64,
    before: Option<Row>,
) -> Meta {
    Meta {
        schema: schema.to_owned(),
        table: table.to_owned(),
        source: Some(source),
        time: Some((i128::from(commit_nanos), 0)),
        before,
    }
}

/// The handler's name as the script registered it, for metrics.
fn function(api: Api, op: Op, schema_level: bool) -> &'static str {
    match (api, op, schema_level) {
        (Api::V2, Op::Upsert, _) => "onRowUpsert",
        (Api::V2, Op::Delete, _) => "onRowDelete",
        (Api::V1, Op::Upsert, true) => "dispatch",
        (Api::V1, Op::Delete, true) => "deletesTo",
        (Api::V1, Op::Upsert, false) => "map",
        (Api::V1, Op::Delete, false) => "deleteKey",
    }
}

/// A row as an operator finds it: `table "orders", key [42]` (the key's values when the key
/// columns are known and present, else the table alone).
pub fn describe_row(table: &str, key: Option<&[String]>, row: &Row) -> String {
    match key.filter(|k| !k.is_empty() && k.iter().all(|c| row.contains_key(c.as_str()))) {
        Some(key) => format!("table {table:?}, key [{}]", values_for(key, row).join(", ")),
        None => format!("table {table:?}"),
    }
}

/// Runs the schema-level handlers of `target_schema` over one source transaction. Runs of
/// consecutive mutations with the same operation go to the engine as one batch.
/// `key_of(table)` gives a source table's key columns, to name a row a handler fails on.
pub async fn schema_level(
    pool: &Arc<ScriptPool>,
    target_schema: &str,
    source: SourceTag,
    mut tx: SourceTransaction,
    key_of: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<SourceTransaction, ScriptError> {
    let Some(api) = pool.configured().schema(target_schema) else {
        return Ok(tx);
    };
    let metrics = crate::metrics::global();
    let with_before = api == Api::V1;
    let commit_nanos = tx.commit_nanos;
    let mut out = Vec::with_capacity(tx.mutations.len());
    let mut pending = std::mem::take(&mut tx.mutations).into_iter().peekable();
    while let Some(first) = pending.next() {
        let op = first.op;
        let mut batch = vec![first];
        while let Some(m) = pending.next_if(|m| m.op == op) {
            batch.push(m);
        }
        // The rows move into the engine (what a handler passes on unchanged moves back out);
        // each mutation keeps its table and before-image.
        let rows: Vec<(Row, Meta)> = batch
            .iter_mut()
            .map(|m| {
                let before = if with_before { m.before.clone() } else { None };
                let meta = meta(target_schema, &m.table, source, commit_nanos, before);
                (std::mem::take(&mut m.row), meta)
            })
            .collect();
        let (schema, count) = (target_schema.to_owned(), rows.len());
        let ((routed, rows), timing) = pool
            .run_timed(move |engine| {
                let mut rows = rows;
                (engine.schema_rows_taking(&schema, op, &mut rows), rows)
            })
            .await;
        let function = function(api, op, true);
        let routed = match routed {
            Ok(routed) => routed,
            Err(e) => {
                let call = [target_schema, batch[0].table.as_str(), function];
                metrics.count_script_call(call, count, None, timing);
                return Err(e.describe_row(|i| {
                    let (m, (row, _)) = (batch.get(i)?, rows.get(i)?);
                    Some(describe_row(&m.table, key_of(&m.table).as_deref(), row))
                }));
            }
        };
        // Rows in, rows passed on, by source table (a batch may hold several tables).
        let mut by_table: Vec<(&str, usize, usize)> = Vec::new();
        for (m, r) in batch.iter().zip(&routed) {
            let passed = usize::from(matches!(r, Routed::Rows(rows) if !rows.is_empty()));
            match by_table.iter_mut().find(|(t, _, _)| *t == m.table) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += passed;
                }
                None => by_table.push((&m.table, 1, passed)),
            }
        }
        for (table, rows, passed) in by_table {
            metrics.count_script_call([target_schema, table, function], rows, Some(passed), timing);
        }
        for (m, r) in batch.into_iter().zip(routed) {
            if let Routed::Rows(rows) = r {
                let (mut rows, mut before) = (rows.into_iter().peekable(), m.before);
                while let Some((table, row)) = rows.next() {
                    // The last row routed from a mutation takes its before-image.
                    let before = if rows.peek().is_some() { before.clone() } else { before.take() };
                    out.push(Mutation { table, op, row, before });
                }
            }
        }
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
        let op = if is_delete { Op::Delete } else { Op::Upsert };
        let call = [target_schema, name.as_str(), function(config.api, op, false)];
        let describe = |i: usize| {
            positions.get(i).map(|&p| {
                let m = &items[p].1;
                describe_row(&m.table, key_of(&m.table).as_deref(), &m.row)
            })
        };
        if is_delete && config.delete {
            let mut batch = Vec::new();
            for &i in &positions {
                let (t, m, _) = &items[i];
                let key = values_for(&key_of(&m.table).unwrap_or_default(), &m.row);
                batch.push((
                    key,
                    meta(target_schema, &m.table, source, transactions[*t].commit_nanos, None),
                ));
            }
            let name2 = name.clone();
            let outcome = pool.run_timed(move |engine| engine.table_deletes(&name2, &batch)).await;
            let results = counted(outcome, call, describe)?;
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
                    (
                        m.row.clone(),
                        meta(target_schema, &m.table, source, transactions[*t].commit_nanos, None),
                    )
                })
                .collect();
            let name2 = name.clone();
            let outcome = pool.run_timed(move |engine| engine.table_upserts(&name2, &batch)).await;
            let results = counted(outcome, call, describe)?;
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

/// A table-level call's results, counted in the `script_*` metrics under `call` (rows that
/// came back `None` were dropped); a failure names its row through `describe`.
fn counted<T>(
    (outcome, timing): (Result<Vec<Option<T>>, ScriptError>, Timing),
    call: [&str; 3],
    describe: impl FnOnce(usize) -> Option<String>,
) -> Result<Vec<Option<T>>, ScriptError> {
    let metrics = crate::metrics::global();
    match outcome {
        Ok(results) => {
            let passed = results.iter().filter(|r| r.is_some()).count();
            metrics.count_script_call(call, results.len(), Some(passed), timing);
            Ok(results)
        }
        Err(e) => {
            metrics.count_script_call(call, 1, None, timing);
            Err(e.describe_row(describe))
        }
    }
}
