//! From a changefeed's lines to mutations of the target's tables.
//!
//! Each line names its table (topic, URL or file name), which is looked up in the target
//! schema ignoring case, and its key: the `key` array of a table feed is mapped onto the target
//! table's primary-key columns in key order; a query feed's or file's line without a key takes
//! it from the primary-key columns of `after` (or `before`, for a delete). The key's canonical
//! text (the key values as a compact JSON array) identifies the row across requests: it is what
//! the per-key version check and staging's applied marks use, so `[1]` and `[ 1 ]` are one key.
//!
//! Values keep their exact text: numbers as written (`9007199254740995`, `1.50`, `4E+2`), JSON
//! and JSONB columns as documents, arrays as SQL arrays, everything else as the text the
//! changefeed wrote (timestamps, UUIDs, `\x` hex bytes), which the target parses for the
//! column's type.
//!
//! Without a userscript, a table the target lacks is refused (nothing is staged silently); with
//! one, its rows pass on for the script to route, and a delete's key then comes from `before`
//! (`WITH diff`).

use std::collections::HashMap;

use serde_json::Value as Json;

use super::payload::{Cell, Fields, Line};
use crate::target::schema::{Schema, Table};
use crate::types::mutation::{Mutation, Op};
use crate::types::position::Hlc;
use crate::types::{Name, Row, Value, new_row};

/// One change, ready for the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The source table as the target spells it (the changefeed's name when the target lacks it).
    pub table: String,
    /// The key's canonical text (`[1,"a"]`).
    pub key: String,
    /// When it happened.
    pub time: Hlc,
    /// The row change.
    pub mutation: Mutation,
    /// Which of the lines it came from (0-based).
    pub line: usize,
}

/// Why lines cannot be applied (400): the message names the line, the table and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct RowsError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong.
    pub what: String,
    /// The table is not in the target schema (the schema is re-read once before this is final).
    pub unknown_table: bool,
}

/// Turns `lines` into changes of `schema`'s tables. `table`: the table the request names
/// (query feeds, files); `scripted`: a userscript may route rows of tables the target lacks.
pub fn changes(
    lines: Vec<Line>,
    table: Option<&str>,
    schema: &Schema,
    scripted: bool,
) -> Result<Vec<Change>, RowsError> {
    let mut out = Vec::with_capacity(lines.len());
    let mut names: HashMap<&str, Named<'_>> = HashMap::new();
    for (i, line) in lines.into_iter().enumerate() {
        let n = i + 1;
        let fail = |what: String| RowsError { line: n, what, unknown_table: false };
        let Some(name) = line.table.as_deref().or(table) else {
            return Err(fail("the line names no table".into()));
        };
        let target = schema.table(name);
        if target.is_none() && !scripted {
            return Err(RowsError {
                line: n,
                what: format!(
                    "table {name:?} does not exist in target schema {:?}: create it on the \
                     target, or route or drop its rows in a userscript",
                    schema.label()
                ),
                unknown_table: true,
            });
        }
        let table_name = target.map_or_else(|| name.to_owned(), |t| t.name.clone());
        let Line { key, after, before, updated, .. } = line;
        if after.is_none() && before.is_none() && key.is_none() {
            // A query feed's phantom delete: a row that did not exist before or after.
            continue;
        }
        let key = match key {
            Some(key) => {
                if let Some(t) = target
                    && key.len() != t.key.len()
                {
                    return Err(fail(format!(
                        "table {table_name:?}: the key {} has {} values, the target's primary \
                         key ({}) has {}",
                        Json::Array(key.clone()),
                        key.len(),
                        t.key_names().join(", "),
                        t.key.len()
                    )));
                }
                key
            }
            None => {
                let Some(t) = target else {
                    return Err(fail(format!(
                        "table {table_name:?} is not in the target, so its key columns are unknown: \
                         send key_in_value"
                    )));
                };
                key_from_row(t, after.as_ref().or(before.as_ref())).map_err(|column| {
                    fail(format!("table {table_name:?}: missing primary key column {column:?}"))
                })?
            }
        };
        // The same text as the array's Display, without copying the key into one.
        let key_text = serde_json::to_string(&key).unwrap_or_default();
        let named = target.map(|t| &*names.entry(t.name.as_str()).or_insert_with(|| Named::new(t)));
        let before_row = before.map(|b| row(named, b));
        let mutation = match after {
            Some(after) => Mutation {
                table: table_name.clone(),
                op: Op::Upsert,
                row: row(named, after),
                before: before_row,
            },
            None => {
                let row = match target {
                    Some(t) => key_row(t, key),
                    None => match &before_row {
                        Some(b) => b.clone(),
                        None => {
                            return Err(fail(format!(
                                "a delete for table {table_name:?}, which the target lacks, has \
                                 no before: create the changefeed WITH diff so the userscript \
                                 gets its columns"
                            )));
                        }
                    },
                };
                Mutation { table: table_name.clone(), op: Op::Delete, row, before: before_row }
            }
        };
        out.push(Change { table: table_name, key: key_text, time: updated, mutation, line: i });
    }
    Ok(out)
}

/// Keeps the newest version of each key (a request may hold several; the last line wins
/// between equal times), in the order of the lines kept.
pub fn newest_per_key(changes: Vec<Change>) -> Vec<Change> {
    let mut newest: HashMap<(&str, &str), usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(changes.len(), Default::default());
    for (i, c) in changes.iter().enumerate() {
        let entry = newest.entry((c.table.as_str(), c.key.as_str())).or_insert(i);
        if changes[*entry].time <= c.time {
            *entry = i;
        }
    }
    if newest.len() == changes.len() {
        return changes;
    }
    let mut keep = vec![false; changes.len()];
    for i in newest.into_values() {
        keep[i] = true;
    }
    changes.into_iter().zip(keep).filter(|(_, k)| *k).map(|(c, _)| c).collect()
}

/// The columns of `mutations` that their tables lack, as an error naming the first.
pub fn check_columns<'a>(
    schema: &Schema,
    mutations: impl IntoIterator<Item = &'a Mutation>,
) -> Result<(), String> {
    for m in mutations {
        let Some(table) = schema.table(&m.table) else {
            return Err(format!(
                "table {:?} does not exist in target schema {:?}",
                m.table,
                schema.label()
            ));
        };
        if let Some((column, _)) = m.row.iter().find(|(c, _)| table.column(c).is_none()) {
            return Err(format!(
                "table {:?} has no column {column:?}: add it to the target, or drop or rename it \
                 in a userscript",
                table.name
            ));
        }
    }
    Ok(())
}

/// The primary-key values of `row`, in key order; the first missing column's name if any.
fn key_from_row(table: &Table, row: Option<&Fields>) -> Result<Vec<Json>, String> {
    table
        .key_names()
        .into_iter()
        .map(|name| {
            // As in a map: the last of a repeated name counts; failing the exact name, the
            // first name that matches ignoring case (then its last value).
            let last = |exact: &str| last_named(row, exact);
            let found = last(&name).or_else(|| {
                let first = row?.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name))?;
                last(&first.0)
            });
            match found.map(|(_, cell)| cell.document()) {
                Some(v) if !v.is_null() => Ok(v),
                _ => Err(name),
            }
        })
        .collect()
}

/// The last field of `row` named `name` exactly.
fn last_named<'r>(row: Option<&'r Fields>, name: &str) -> Option<&'r (Name, Cell)> {
    row?.iter().rev().find(|(k, _)| **k == *name)
}

/// A delete's row: the key values under the primary key's column names.
fn key_row(table: &Table, key: Vec<Json>) -> Row {
    let mut row = new_row(key.len());
    for (&i, value) in table.key.iter().zip(key) {
        let column = &table.columns[i];
        row.insert(Name::from(column.name.as_str()), value_for(value, column.json));
    }
    row
}

/// A target table with its column names made once per request (rows share them).
struct Named<'a> {
    table: &'a Table,
    names: Vec<Name>,
}

impl<'a> Named<'a> {
    fn new(table: &'a Table) -> Self {
        Self { table, names: table.columns.iter().map(|c| Name::from(c.name.as_str())).collect() }
    }
}

/// A row of the changefeed's JSON, named as the target's columns are where they match.
fn row(table: Option<&Named<'_>>, fields: Fields) -> Row {
    let mut row = new_row(fields.len());
    for (i, (name, cell)) in fields.into_iter().enumerate() {
        match table.and_then(|t| t.table.column_near(&name, i).map(|(at, c)| (&t.names[at], c))) {
            Some((name, column)) => row.insert(name.clone(), cell_value(cell, column.json)),
            None => row.insert(name, cell_value(cell, false)),
        };
    }
    row
}

/// A column's value as sent, as a column value: the whole document for a JSON column (an
/// object as the text it came as).
fn cell_value(cell: Cell, json_column: bool) -> Value {
    match cell {
        Cell::Object(text) if json_column => Value::JsonText(text),
        Cell::Object(text) => value(crate::types::json::parse(&text).unwrap_or_default()),
        Cell::Value(json) => value_for(json, json_column),
    }
}

/// A JSON value as a column value: the whole document for a JSON column.
fn value_for(json: Json, json_column: bool) -> Value {
    if json_column && !json.is_null() {
        return Value::Json(json);
    }
    value(json)
}

/// A JSON value as a column value of any other type.
pub fn value(json: Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => Value::Number(n.as_str().to_owned()),
        Json::String(s) => Value::String(s),
        Json::Array(items) => Value::Array(items.into_iter().map(value).collect()),
        doc @ Json::Object(_) => Value::Json(doc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::changefeed::payload::{Body, webhook};
    use crate::target::schema::Column;

    fn column(name: &str, key: Option<usize>, sql_type: &str) -> Column {
        Column::sample(name, sql_type, key)
    }

    fn schema() -> Schema {
        let mut orders = Table {
            name: "Orders".into(),
            columns: vec![
                column("region", Some(1), "text"),
                column("id", Some(0), "bigint"),
                column("doc", None, "jsonb"),
                column("tags", None, "text[]"),
                column("total", None, "numeric"),
            ],
            key: vec![],
        };
        orders.order_key();
        Schema {
            name: "public".into(),
            tables: [("Orders".to_owned(), orders)].into_iter().collect(),
            label: "shop.public".into(),
            ..Schema::default()
        }
    }

    fn lines(body: &str, query: bool) -> Vec<Line> {
        match webhook(body.as_bytes(), query).expect("body") {
            Body::Lines(lines) => lines,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_map_onto_the_primary_key_by_name_and_values_keep_their_text() {
        let body = r#"{"payload":[
            {"after":{"id":9007199254740995,"region":"eu","doc":{"a": [1, "x", 2.50]},"tags":["a","b"],"total":4E+2},
             "key":[9007199254740995,"eu"],"topic":"shop.public.orders","updated":"5.0000000001"},
            {"after":null,"key":[7, "us"],"topic":"orders","updated":"6.0"}]}"#;
        let out = changes(lines(body, false), None, &schema(), false).expect("changes");
        assert_eq!(out[0].table, "Orders");
        assert_eq!(out[0].key, "[9007199254740995,\"eu\"]");
        let row = &out[0].mutation.row;
        assert_eq!(row["id"], Value::Number("9007199254740995".into()));
        assert_eq!(row["total"], Value::Number("4E+2".into()));
        // A JSON column's object goes on as the text it came as.
        assert_eq!(row["doc"], Value::JsonText(r#"{"a": [1, "x", 2.50]}"#.into()));
        assert_eq!(
            row["tags"],
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())])
        );
        // The key array is in primary-key order (id, region), not column order.
        assert_eq!(out[1].key, "[7,\"us\"]");
        assert_eq!(out[1].mutation.op, Op::Delete);
        assert_eq!(out[1].mutation.row["id"], Value::Number("7".into()));
        assert_eq!(out[1].mutation.row["region"], Value::String("us".into()));
    }

    #[test]
    fn query_feeds_take_the_key_from_the_primary_key_columns() {
        let body = r#"{"payload":[
            {"after":{"ID":1,"region":"eu"},"updated":"5.0"},
            {"after":null,"before":{"id":2,"region":"us"},"updated":"6.0"},
            {"after":null,"before":null,"updated":"7.0"}]}"#;
        let out = changes(lines(body, true), Some("orders"), &schema(), false).expect("changes");
        assert_eq!(out.len(), 2, "the phantom delete is dropped");
        assert_eq!(out[0].key, "[1,\"eu\"]");
        assert_eq!(out[0].mutation.row.keys().next().map(|k| &**k), Some("id"));
        assert_eq!(out[1].key, "[2,\"us\"]");
        // A repeated name: the last counts, as in a map; failing the exact name, the first
        // that matches ignoring case.
        let repeated = r#"{"payload":[
            {"after":{"ID":1,"id":2,"region":"eu","id":3},"updated":"5.0"},
            {"after":{"Id":5,"ID":6,"Id":7,"region":"us","ID":8},"updated":"6.0"}]}"#;
        let out =
            changes(lines(repeated, true), Some("orders"), &schema(), false).expect("changes");
        assert_eq!((out[0].key.as_str(), out[1].key.as_str()), ("[3,\"eu\"]", "[7,\"us\"]"));
        let missing = r#"{"payload":[{"after":{"id":1},"updated":"5.0"}]}"#;
        let err = changes(lines(missing, true), Some("orders"), &schema(), false).expect_err("pk");
        assert!(err.to_string().contains("missing primary key column \"region\""), "{err}");
    }

    #[test]
    fn unknown_tables_and_bad_keys_are_refused_with_the_line() {
        let unknown =
            r#"{"payload":[{"after":{"id":1},"key":[1],"topic":"nope","updated":"5.0"}]}"#;
        let err = changes(lines(unknown, false), None, &schema(), false).expect_err("unknown");
        assert!(
            err.unknown_table && err.to_string().starts_with("line 1: table \"nope\""),
            "{err}"
        );
        assert!(
            changes(lines(unknown, false), None, &schema(), true).is_ok(),
            "a script may route it"
        );
        let short = r#"{"payload":[{"after":null,"key":[1],"topic":"orders","updated":"5.0"}]}"#;
        let err = changes(lines(short, false), None, &schema(), false).expect_err("short key");
        assert!(
            err.to_string().contains("has 1 values, the target's primary key (id, region) has 2"),
            "{err}"
        );
    }

    #[test]
    fn the_newest_version_of_each_key_is_kept() {
        let body = r#"{"payload":[
            {"after":{"id":1,"region":"a","total":1},"key":[1,"a"],"topic":"orders","updated":"7.0"},
            {"after":{"id":1,"region":"a","total":2},"key":[1,"a"],"topic":"orders","updated":"5.0"},
            {"after":{"id":2,"region":"a","total":3},"key":[2,"a"],"topic":"orders","updated":"5.0"},
            {"after":{"id":2,"region":"a","total":4},"key":[2, "a"],"topic":"orders","updated":"5.0"}]}"#;
        let out = newest_per_key(changes(lines(body, false), None, &schema(), false).expect("ok"));
        let totals: Vec<&Value> = out.iter().map(|c| &c.mutation.row["total"]).collect();
        assert_eq!(totals, [&Value::Number("1".into()), &Value::Number("4".into())]);
    }

    #[test]
    fn columns_the_target_lacks_are_named() {
        let m = Mutation::upsert(
            "orders",
            crate::types::mutation::row([("id", Value::Null), ("extra", Value::Null)]),
        );
        let err = check_columns(&schema(), &[m]).expect_err("extra");
        assert!(err.contains("table \"Orders\" has no column \"extra\""), "{err}");
    }
}
