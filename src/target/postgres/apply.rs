//! The batched applier for PostgreSQL and CockroachDB targets.
//!
//! A batch of mutations becomes a handful of statements, one shape per table and column set,
//! whatever the row count: every column travels as one text array parameter, cast to the
//! column's type in SQL.
//!
//! ```sql
//! INSERT INTO "s"."t" ("id", "v") SELECT u.c1::bigint, u.c2::text FROM unnest($1::text[], $2::text[]) AS u(c1, c2)
//!   ON CONFLICT ("id") DO UPDATE SET "v" = excluded."v"          -- CockroachDB: UPSERT INTO …
//! DELETE FROM "s"."t" WHERE ("id") IN (SELECT u.c1::bigint FROM unnest($1::text[]) AS u(c1))
//! ```
//!
//! Before that, each mutation is mapped onto its target table (names matched exactly, else
//! case-insensitively), generated columns are left out, and mutations to one key collapse to
//! the last one (`--collapseMutations`); a later upsert that lacks a column (PostgreSQL's
//! unchanged TOAST value) keeps the earlier upsert's value, and when no mutation of the batch
//! carried the column the statement leaves it out, so the target keeps its current value.
//! Upserts run parents first, deletes children first (foreign keys, [`crate::target::order`]).
//!
//! On PostgreSQL an upsert of [`COPY_MIN_ROWS`] rows or more first asks whether any of its keys
//! is on the target; when none is (a backlog of inserts) its rows go in with COPY in the same
//! transaction, which skips `ON CONFLICT`'s speculative insertion and the parameter parsing.

use indexmap::IndexMap;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::codec::{TextParam, array_literal};
use super::introspect::{Schema, Table};
use super::quote_ident;
pub use crate::target::batch::ApplyError;
use crate::target::batch::{Cell, Pending, delete_keys, rounds, table_order, upserts_by_columns};
use crate::types::Value;
use crate::types::mutation::{Mutation, Op};

/// Which SQL the applier writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: `INSERT … ON CONFLICT (pk) DO UPDATE`.
    Postgres,
    /// CockroachDB: `UPSERT INTO`.
    Cockroach,
}

/// One statement of a plan: SQL and its text-array parameters (one per column).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The target schema.
    pub schema: String,
    /// The target table.
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// The SQL.
    pub sql: String,
    /// One array literal per parameter.
    pub params: Vec<Value>,
    /// Rows it writes.
    pub rows: usize,
    /// PostgreSQL upserts: the same rows as COPY, for when none of their keys exist yet.
    pub copy: Option<CopyIn>,
}

/// An upsert that can also load its rows with COPY: new rows skip the cost of
/// `ON CONFLICT` (speculative insertion) and of parsing array parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyIn {
    /// `COPY "s"."t" ("c1", …) FROM STDIN`.
    pub copy_sql: String,
    /// `SELECT EXISTS (…)`: whether any of the rows' keys is on the target already.
    pub exists_sql: String,
    /// Which of the statement's parameters are the key columns, in key order.
    pub key_params: Vec<usize>,
}

/// Below this many rows an upsert runs as it is: the key check and COPY cost more round trips.
pub const COPY_MIN_ROWS: usize = 200;

/// Plans the statements for `mutations` (already named by target table) on `schema`.
pub fn plan(
    schema: &Schema,
    mutations: &[Mutation],
    collapse: bool,
    dialect: Dialect,
) -> Result<Vec<Statement>, ApplyError> {
    let rounds = rounds(schema, mutations, collapse, |value, column| cell(value, column.json))?;
    let order = table_order(schema);
    let mut statements = Vec::new();
    for round in rounds {
        for name in &order {
            if let Some(pending) = round.get(name) {
                upserts(&schema.name, &schema.tables[name], pending, dialect, &mut statements);
            }
        }
        for name in order.iter().rev() {
            if let Some(pending) = round.get(name) {
                deletes(&schema.name, &schema.tables[name], pending, &mut statements);
            }
        }
    }
    Ok(statements)
}

/// A value as text in the column's input syntax.
fn cell(value: &Value, json: bool) -> Cell {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(if *b { "t".into() } else { "f".into() }),
        Value::Number(s) | Value::String(s) => Some(s.clone()),
        Value::Json(j) => Some(j.to_string()),
        Value::Array(items) if json => Some(Value::Array(items.clone()).to_json().to_string()),
        Value::Array(items) => Some(array_literal(items)),
    }
}

fn text_array(cells: impl Iterator<Item = Cell>) -> Value {
    Value::Array(cells.map(|c| c.map_or(Value::Null, Value::String)).collect())
}

fn source(table: &Table, columns: &[usize]) -> (String, String) {
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}::text[]")).collect();
    let aliases: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    let casts: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("u.c{}::{}", n + 1, table.columns[i].sql_type))
        .collect();
    (casts.join(", "), format!("unnest({}) AS u({})", params.join(", "), aliases.join(", ")))
}

fn upserts(
    schema: &str,
    table: &Table,
    pending: &IndexMap<Vec<String>, Pending>,
    dialect: Dialect,
    out: &mut Vec<Statement>,
) {
    // One statement per set of present columns, in first-seen order.
    let by_columns = upserts_by_columns(pending);
    let target = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
    for (columns, rows) in by_columns {
        let names: Vec<String> =
            columns.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
        let (casts, from) = source(table, &columns);
        let sql = match dialect {
            Dialect::Cockroach => {
                format!("UPSERT INTO {target} ({}) SELECT {casts} FROM {from}", names.join(", "))
            }
            Dialect::Postgres => {
                let keys: Vec<String> =
                    table.key.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
                let sets: Vec<String> = columns
                    .iter()
                    .filter(|i| !table.key.contains(i))
                    .map(|&i| format!("{0} = excluded.{0}", quote_ident(&table.columns[i].name)))
                    .collect();
                let action = if sets.is_empty() {
                    "DO NOTHING".to_owned()
                } else {
                    format!("DO UPDATE SET {}", sets.join(", "))
                };
                format!(
                    "INSERT INTO {target} ({}) SELECT {casts} FROM {from} ON CONFLICT ({}) {action}",
                    names.join(", "),
                    keys.join(", ")
                )
            }
        };
        let params = columns
            .iter()
            .map(|&i| text_array(rows.iter().map(|r| r[i].clone().flatten())))
            .collect();
        let key_params: Vec<usize> =
            table.key.iter().filter_map(|k| columns.iter().position(|c| c == k)).collect();
        let copy = (dialect == Dialect::Postgres && key_params.len() == table.key.len()).then(|| {
            let (casts, from) = source(table, &table.key);
            let keys: Vec<String> =
                table.key.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
            CopyIn {
                copy_sql: format!("COPY {target} ({}) FROM STDIN", names.join(", ")),
                exists_sql: format!(
                    "SELECT EXISTS (SELECT 1 FROM {target} WHERE ({}) IN (SELECT {casts} FROM {from}))",
                    keys.join(", ")
                ),
                key_params,
            }
        });
        out.push(Statement {
            schema: schema.to_owned(),
            table: table.name.clone(),
            op: Op::Upsert,
            sql,
            params,
            rows: rows.len(),
            copy,
        });
    }
}

fn deletes(
    schema: &str,
    table: &Table,
    pending: &IndexMap<Vec<String>, Pending>,
    out: &mut Vec<Statement>,
) {
    let keys = delete_keys(pending);
    if keys.is_empty() {
        return;
    }
    let target = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
    let names: Vec<String> =
        table.key.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
    let (casts, from) = source(table, &table.key);
    let sql = format!(
        "DELETE FROM {target} WHERE ({}) IN (SELECT {casts} FROM {from})",
        names.join(", ")
    );
    let params =
        (0..table.key.len()).map(|n| text_array(keys.iter().map(|k| Some(k[n].clone())))).collect();
    out.push(Statement {
        schema: schema.to_owned(),
        table: table.name.clone(),
        op: Op::Delete,
        sql,
        params,
        rows: keys.len(),
        copy: None,
    });
}

/// What a batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows upserted.
    pub upserts: usize,
    /// Rows deleted (requested; rows already gone count too).
    pub deletes: usize,
}

/// Runs a plan's statements on `client` (the caller's transaction), in order.
pub async fn execute(
    client: &impl GenericClient,
    statements: &[Statement],
) -> Result<Applied, ApplyError> {
    let mut applied = Applied::default();
    for s in statements {
        let params: Vec<TextParam> = s.params.iter().map(TextParam).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let _timer = crate::metrics::global()
            .apply_duration_seconds
            .with_label_values(&[s.schema.as_str(), s.table.as_str()])
            .start_timer();
        client.execute(s.sql.as_str(), &refs).await.map_err(|e| database_error(&s.table, e))?;
        applied.count(s);
    }
    Ok(applied)
}

impl Applied {
    fn count(&mut self, s: &Statement) {
        match s.op {
            Op::Upsert => self.upserts += s.rows,
            Op::Delete => self.deletes += s.rows,
        }
    }
}

fn database_error(table: &str, source: tokio_postgres::Error) -> ApplyError {
    let code = source.code().map(|c| c.code().to_owned());
    let transient = code.as_deref().is_some_and(|c| {
        matches!(c, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03")
            || c.starts_with("08")
    }) || source.is_closed();
    ApplyError::Database {
        table: table.to_owned(),
        message: source
            .as_db_error()
            .map_or_else(|| source.to_string(), |d| d.message().to_owned()),
        code: code.map(|c| format!("SQLSTATE {c}")),
        transient,
        source: Box::new(source),
    }
}

/// Prepared statements by SQL text: a batch shape seen before is not parsed and planned again.
/// Cleared when the schema is re-read.
#[derive(Debug, Default)]
pub struct StatementCache(std::collections::HashMap<String, tokio_postgres::Statement>);

impl StatementCache {
    /// Forgets every prepared statement.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Runs `statements` as one transaction — BEGIN, the statements, COMMIT — sent together
/// (pipelined), so a batch costs one round trip once its statements are prepared. When a
/// statement fails, the server ignores the rest and COMMIT rolls back; the statement's error
/// is returned.
pub async fn execute_transaction(
    client: &tokio_postgres::Client,
    cache: &mut StatementCache,
    statements: &[Statement],
) -> Result<Applied, ApplyError> {
    if statements.iter().any(|s| s.copy.is_some() && s.rows >= COPY_MIN_ROWS) {
        return execute_with_copy(client, cache, statements).await;
    }
    for s in statements {
        if !cache.0.contains_key(&s.sql) {
            let prepared = client.prepare(&s.sql).await.map_err(|e| database_error(&s.table, e))?;
            cache.0.insert(s.sql.clone(), prepared);
        }
    }
    let params: Vec<Vec<TextParam>> =
        statements.iter().map(|s| s.params.iter().map(TextParam).collect()).collect();
    let refs: Vec<Vec<&(dyn ToSql + Sync)>> =
        params.iter().map(|p| p.iter().map(|p| p as &(dyn ToSql + Sync)).collect()).collect();
    let _timer = statements.first().map(|s| {
        crate::metrics::global()
            .apply_duration_seconds
            .with_label_values(&[s.schema.as_str(), s.table.as_str()])
            .start_timer()
    });
    let begin = client.batch_execute("BEGIN");
    let runs = futures_util::future::join_all(
        statements.iter().zip(&refs).map(|(s, r)| client.execute(&cache.0[&s.sql], r)),
    );
    let commit = client.batch_execute("COMMIT");
    let (begun, ran, committed) = tokio::join!(begin, runs, commit);
    let first = statements.first().map_or("", |s| s.table.as_str());
    begun.map_err(|e| database_error(first, e))?;
    let mut applied = Applied::default();
    for (s, result) in statements.iter().zip(ran) {
        result.map_err(|e| database_error(&s.table, e))?;
        applied.count(s);
    }
    committed.map_err(|e| database_error(first, e))?;
    Ok(applied)
}

/// Like [`execute_transaction`], for batches with large upserts: each such upsert first asks
/// whether any of its keys is on the target; when none is (a backlog of inserts), its rows go
/// in with COPY, otherwise the upsert runs. All in one transaction, so the answer holds until
/// the rows are in (replicator is the target tables' only writer; another writer's row would
/// make COPY fail on the key, and the batch is retried).
async fn execute_with_copy(
    client: &tokio_postgres::Client,
    cache: &mut StatementCache,
    statements: &[Statement],
) -> Result<Applied, ApplyError> {
    for s in statements {
        let exists = s.copy.as_ref().map(|c| c.exists_sql.as_str());
        for sql in std::iter::once(s.sql.as_str()).chain(exists) {
            if !cache.0.contains_key(sql) {
                let prepared =
                    client.prepare(sql).await.map_err(|e| database_error(&s.table, e))?;
                cache.0.insert(sql.to_owned(), prepared);
            }
        }
    }
    let first = statements.first().map_or("", |s| s.table.as_str());
    let _timer = statements.first().map(|s| {
        crate::metrics::global()
            .apply_duration_seconds
            .with_label_values(&[s.schema.as_str(), s.table.as_str()])
            .start_timer()
    });
    client.batch_execute("BEGIN").await.map_err(|e| database_error(first, e))?;
    let mut applied = Applied::default();
    let ran: Result<(), ApplyError> = async {
        for s in statements {
            let run = |e| database_error(&s.table, e);
            if let Some(copy) = &s.copy
                && s.rows >= COPY_MIN_ROWS
            {
                let keys: Vec<TextParam> =
                    copy.key_params.iter().map(|&i| TextParam(&s.params[i])).collect();
                let refs: Vec<&(dyn ToSql + Sync)> =
                    keys.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let exists: bool =
                    client.query_one(&cache.0[&copy.exists_sql], &refs).await.map_err(run)?.get(0);
                if !exists {
                    copy_rows(client, &copy.copy_sql, s).await.map_err(run)?;
                    applied.count(s);
                    continue;
                }
            }
            let params: Vec<TextParam> = s.params.iter().map(TextParam).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            client.execute(&cache.0[&s.sql], &refs).await.map_err(run)?;
            applied.count(s);
        }
        Ok(())
    }
    .await;
    if let Err(e) = ran {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    client.batch_execute("COMMIT").await.map_err(|e| database_error(first, e))?;
    Ok(applied)
}

/// Sends an upsert's rows (its column arrays) as COPY text.
async fn copy_rows(
    client: &tokio_postgres::Client,
    copy_sql: &str,
    s: &Statement,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::SinkExt;
    let columns: Vec<&[Value]> = s
        .params
        .iter()
        .map(|p| match p {
            Value::Array(items) => items.as_slice(),
            _ => &[],
        })
        .collect();
    let mut buf = bytes::BytesMut::with_capacity(s.rows * 16 * columns.len().max(1));
    for r in 0..s.rows {
        for (c, column) in columns.iter().enumerate() {
            if c > 0 {
                buf.extend_from_slice(b"\t");
            }
            match column.get(r) {
                Some(Value::String(text)) | Some(Value::Number(text)) => {
                    copy_escape(text, &mut buf)
                }
                _ => buf.extend_from_slice(b"\\N"),
            }
        }
        buf.extend_from_slice(b"\n");
    }
    let sink = client.copy_in::<_, bytes::Bytes>(copy_sql).await?;
    futures_util::pin_mut!(sink);
    sink.send(buf.freeze()).await?;
    sink.finish().await.map(|_| ())
}

/// A value in COPY's text format: backslash, tab, newline and carriage return escaped.
fn copy_escape(text: &str, out: &mut bytes::BytesMut) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[b]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::target::postgres::introspect::Column;
    use crate::types::mutation::row;

    fn column(name: &str, sql_type: &str, key: Option<usize>) -> Column {
        Column {
            name: name.into(),
            sql_type: sql_type.into(),
            key_position: key,
            generated: false,
            default: None,
            nullable: key.is_none(),
            json: sql_type == "jsonb",
            kind: Default::default(),
        }
    }

    fn schema() -> Schema {
        let mut tables = BTreeMap::new();
        let mut orders = Table {
            name: "orders".into(),
            columns: vec![
                column("id", "bigint", Some(0)),
                column("Note", "text", None),
                column("doc", "jsonb", None),
                column("total", "numeric(12,2)", None),
            ],
            key: vec![0],
        };
        orders.columns.push(Column { generated: true, ..column("code", "text", None) });
        tables.insert("orders".into(), orders);
        tables.insert(
            "customers".into(),
            Table {
                name: "customers".into(),
                columns: vec![column("id", "bigint", Some(0))],
                key: vec![0],
            },
        );
        tables.insert(
            "lines".into(),
            Table {
                name: "lines".into(),
                columns: vec![
                    column("order_id", "bigint", Some(0)),
                    column("n", "integer", Some(1)),
                ],
                key: vec![0, 1],
            },
        );
        Schema {
            name: "public".into(),
            tables,
            foreign_keys: vec![
                ("orders".into(), "customers".into()),
                ("lines".into(), "orders".into()),
            ],
        }
    }

    fn n(s: &str) -> Value {
        Value::Number(s.into())
    }

    #[test]
    fn golden_sql_postgres_and_cockroach() {
        let batch = vec![
            Mutation::upsert("lines", row([("order_id", n("1")), ("n", n("1"))])),
            Mutation::upsert(
                "orders",
                row([
                    ("id", n("1")),
                    ("note", Value::String("a".into())),
                    ("code", Value::String("x".into())),
                ]),
            ),
            Mutation::upsert("customers", row([("id", n("7"))])),
            Mutation::delete("lines", row([("order_id", n("2")), ("n", n("5"))])),
            Mutation::delete("customers", row([("id", n("8"))])),
        ];
        let pg = plan(&schema(), &batch, true, Dialect::Postgres).expect("plan");
        let sql: Vec<&str> = pg.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                r#"INSERT INTO "public"."customers" ("id") SELECT u.c1::bigint FROM unnest($1::text[]) AS u(c1) ON CONFLICT ("id") DO NOTHING"#,
                r#"INSERT INTO "public"."orders" ("id", "Note") SELECT u.c1::bigint, u.c2::text FROM unnest($1::text[], $2::text[]) AS u(c1, c2) ON CONFLICT ("id") DO UPDATE SET "Note" = excluded."Note""#,
                r#"INSERT INTO "public"."lines" ("order_id", "n") SELECT u.c1::bigint, u.c2::integer FROM unnest($1::text[], $2::text[]) AS u(c1, c2) ON CONFLICT ("order_id", "n") DO NOTHING"#,
                r#"DELETE FROM "public"."lines" WHERE ("order_id", "n") IN (SELECT u.c1::bigint, u.c2::integer FROM unnest($1::text[], $2::text[]) AS u(c1, c2))"#,
                r#"DELETE FROM "public"."customers" WHERE ("id") IN (SELECT u.c1::bigint FROM unnest($1::text[]) AS u(c1))"#,
            ]
        );
        let crdb = plan(&schema(), &batch, true, Dialect::Cockroach).expect("plan");
        assert_eq!(
            crdb[1].sql,
            r#"UPSERT INTO "public"."orders" ("id", "Note") SELECT u.c1::bigint, u.c2::text FROM unnest($1::text[], $2::text[]) AS u(c1, c2)"#
        );
        assert_eq!(crdb[3].sql, pg[3].sql, "deletes are the same in both dialects");
        assert_eq!(
            pg[1].params,
            [
                Value::Array(vec![Value::String("1".into())]),
                Value::Array(vec![Value::String("a".into())])
            ]
        );
    }

    #[test]
    fn collapse_keeps_the_last_state_and_carried_columns() {
        let batch = vec![
            Mutation::upsert(
                "orders",
                row([
                    ("id", n("1")),
                    ("Note", Value::String("first".into())),
                    ("total", n("1.00")),
                ]),
            ),
            Mutation::upsert("orders", row([("id", n("1")), ("total", n("2.00"))])),
            Mutation::upsert("orders", row([("id", n("2")), ("Note", Value::String("x".into()))])),
            Mutation::delete("orders", row([("id", n("2"))])),
            Mutation::upsert(
                "orders",
                row([("id", n("3")), ("doc", Value::Array(vec![n("1"), Value::Null]))]),
            ),
        ];
        let statements = plan(&schema(), &batch, true, Dialect::Postgres).expect("plan");
        assert_eq!(statements.len(), 3, "{statements:#?}");
        assert_eq!(statements[0].rows, 1);
        assert_eq!(
            statements[0].params,
            [
                Value::Array(vec![Value::String("1".into())]),
                Value::Array(vec![Value::String("first".into())]),
                Value::Array(vec![Value::String("2.00".into())]),
            ],
            "the later upsert's total, the earlier upsert's note"
        );
        assert_eq!(
            statements[1].params[1],
            Value::Array(vec![Value::String("[1,null]".into())]),
            "arrays into JSON columns become JSON"
        );
        assert_eq!(statements[2].op, Op::Delete);

        let uncollapsed = plan(&schema(), &batch, false, Dialect::Postgres).expect("plan");
        assert!(uncollapsed.len() > statements.len());
        assert_eq!(
            uncollapsed.iter().filter(|s| s.op == Op::Upsert).map(|s| s.rows).sum::<usize>(),
            4
        );
    }

    #[test]
    fn errors_name_the_table_and_column() {
        let err = |m: Mutation| {
            plan(&schema(), &[m], true, Dialect::Postgres).expect_err("refused").to_string()
        };
        assert!(
            err(Mutation::upsert("nope", row([("id", n("1"))])))
                .contains("table \"nope\" does not exist in target schema \"public\"")
        );
        assert!(
            err(Mutation::upsert("orders", row([("id", n("1")), ("color", n("2"))])))
                .contains("table \"orders\" has no column \"color\"")
        );
        assert!(
            err(Mutation::delete("orders", row([("Note", n("2"))]))).contains(
                "a delete for table \"orders\" has no value for primary key column \"id\""
            )
        );
        assert!(
            err(Mutation::upsert("orders", row([("id", Value::Null)])))
                .contains("primary key column \"id\"")
        );
        plan(
            &schema(),
            &[Mutation::upsert("ORDERS", row([("ID", n("1")), ("note", n("2"))]))],
            true,
            Dialect::Postgres,
        )
        .expect("names match case-insensitively");
    }
}
