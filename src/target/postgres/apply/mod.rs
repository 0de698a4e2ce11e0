//! The batched applier for PostgreSQL and CockroachDB targets: planning here, the wire form
//! of planned statements in [`wire`], writing them (pipelined transactions, COPY, the
//! statement cache) in [`transaction`].
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
//! Parameters go in binary format (a `text[]` is lengths and bytes), and the cells borrow the
//! mutations' text, so planning copies no values.
//!
//! On PostgreSQL an upsert of [`COPY_MIN_ROWS`] rows or more is first loaded with COPY, which
//! skips `ON CONFLICT`'s speculative insertion and the parameter parsing: a backlog of inserts
//! goes in at close to COPY's speed. When a key is on the target already COPY fails, the
//! transaction is rolled back and written again with the upserts, and COPY rests for a while
//! (1, 2, 4 … 1,024 batches while it keeps failing) so a stream of updates does not pay twice.

pub mod transaction;
pub mod wire;

pub use transaction::{Started, StartedError, StatementCache, execute_transaction, start};
pub use wire::{Wire, WireData, render};
#[cfg(test)]
use wire::{copy_escape, copy_text, encode_params, params_from_copy};

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use std::borrow::Cow;

use super::codec::{TextArray, array_literal};
use super::introspect::{Schema, Table};
use super::quote_ident;
pub use crate::target::batch::ApplyError;
use crate::target::batch::{Cell, Keyed, delete_keys, rounds, table_order, upserts_by_columns};
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

/// One statement of a plan: SQL and its text-array parameters (one per column), which borrow
/// the planned mutations' values.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement<'a> {
    /// The target schema.
    pub schema: String,
    /// The target table.
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// The SQL.
    pub sql: String,
    /// One column of cells per parameter, sent as a binary `text[]`.
    pub params: Vec<Vec<Cell<'a>>>,
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
}

/// Below this many rows an upsert runs as it is: COPY costs more round trips.
pub const COPY_MIN_ROWS: usize = 200;

/// Plans the statements for `mutations` (already named by target table) on `schema`.
pub fn plan<'a>(
    schema: &Schema,
    mutations: impl IntoIterator<Item = &'a Mutation>,
    collapse: impl Into<crate::target::batch::Grouping>,
    dialect: Dialect,
) -> Result<Vec<Statement<'a>>, ApplyError> {
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
                deletes(&schema.name, &schema.tables[name], pending, dialect, &mut statements);
            }
        }
    }
    if !schema.label.is_empty() {
        for s in &mut statements {
            s.schema.clone_from(&schema.label);
        }
    }
    Ok(statements)
}

/// A value as text in the column's input syntax.
fn cell(value: &Value, json: bool) -> Cell<'_> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "t" } else { "f" })),
        Value::Number(s) | Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Json(j) => Some(j.to_string().into()),
        Value::JsonText(s) => Some(Cow::Borrowed(s)),
        Value::Array(_) if json => Some(value.to_json().to_string().into()),
        Value::Array(items) => Some(array_literal(items).into()),
    }
}

fn source(table: &Table, columns: &[usize], dialect: Dialect) -> (String, String) {
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}::text[]")).collect();
    let aliases: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    let casts: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("u.c{}::{}", n + 1, cast_type(&table.columns[i].sql_type, dialect)))
        .collect();
    (casts.join(", "), format!("unnest({}) AS u({})", params.join(", "), aliases.join(", ")))
}

/// The type a value is cast to on its way into a column of `sql_type`: the column's type,
/// without the length of a character or bit string. An explicit cast to `varchar(8)`
/// truncates a longer value silently (PostgreSQL and CockroachDB alike), where writing it
/// into the column fails with "value too long", as an INSERT of the source's value would
/// (and as the COPY path does); a truncated key would even match another row.
/// CockroachDB keeps `character(n)`: its unbounded form is not known to exist there.
fn cast_type(sql_type: &str, dialect: Dialect) -> Cow<'_, str> {
    let base = sql_type.trim_end_matches("[]");
    let arrays = &sql_type[base.len()..];
    let unbounded = if base.starts_with("character varying(") {
        "character varying"
    } else if base.starts_with("bit varying(") || base.starts_with("bit(") {
        "bit varying"
    } else if base.starts_with("character(") && dialect == Dialect::Postgres {
        "bpchar"
    } else {
        return Cow::Borrowed(sql_type);
    };
    Cow::Owned(format!("{unbounded}{arrays}"))
}

fn upserts<'a>(
    schema: &str,
    table: &Table,
    pending: &Keyed<'a>,
    dialect: Dialect,
    out: &mut Vec<Statement<'a>>,
) {
    // One statement per set of present columns, in first-seen order.
    let by_columns = upserts_by_columns(pending);
    let target = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
    for (columns, rows) in by_columns {
        let names: Vec<String> =
            columns.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
        let (casts, from) = source(table, &columns, dialect);
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
            .map(|&i| rows.iter().map(|r| r[i].clone().flatten()).collect())
            .collect();
        // Every key column must be there: COPY cannot leave out what identifies the row.
        let has_key = table.key.iter().all(|k| columns.contains(k));
        let copy = (dialect == Dialect::Postgres && has_key).then(|| CopyIn {
            copy_sql: format!("COPY {target} ({}) FROM STDIN", names.join(", ")),
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

fn deletes<'a>(
    schema: &str,
    table: &Table,
    pending: &Keyed<'a>,
    dialect: Dialect,
    out: &mut Vec<Statement<'a>>,
) {
    let keys = delete_keys(pending);
    if keys.is_empty() {
        return;
    }
    let target = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
    let names: Vec<String> =
        table.key.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
    let (casts, from) = source(table, &table.key, dialect);
    let sql = format!(
        "DELETE FROM {target} WHERE ({}) IN (SELECT {casts} FROM {from})",
        names.join(", ")
    );
    let params =
        (0..table.key.len()).map(|n| keys.iter().map(|k| Some(k[n].clone())).collect()).collect();
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
    statements: &[Statement<'_>],
) -> Result<Applied, ApplyError> {
    let mut applied = Applied::default();
    for s in statements {
        let params: Vec<TextArray> = s.params.iter().map(|p| TextArray(p)).collect();
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
    fn count(&mut self, s: &Statement<'_>) {
        match s.op {
            Op::Upsert => self.upserts += s.rows,
            Op::Delete => self.deletes += s.rows,
        }
    }
}

/// A driver error as an [`ApplyError`] for `table`, classified (transient or not).
pub fn database_error(table: &str, source: tokio_postgres::Error) -> ApplyError {
    let code = source.code().map(|c| c.code().to_owned());
    let kind = crate::error::postgres_kind(&source);
    ApplyError::Database {
        table: table.to_owned(),
        message: source.as_db_error().map_or_else(
            || source.to_string(),
            |d| match d.detail() {
                // Foreign-key and unique violations say which key ("Key (id)=(1) is not
                // present in table "p"."); other details can hold whole rows.
                Some(detail) if matches!(d.code().code(), "23503" | "23505") => {
                    format!("{}: {detail}", d.message())
                }
                _ => d.message().to_owned(),
            },
        ),
        code: code.map(|c| format!("SQLSTATE {c}")),
        kind,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::target::postgres::introspect::Column;
    use crate::types::mutation::row;

    fn column(name: &str, sql_type: &str, key: Option<usize>) -> Column {
        Column::sample(name, sql_type, key)
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
            ..Schema::default()
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
        assert_eq!(pg[1].params, [vec![Some("1".into())], vec![Some("a".into())]]);
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
            [vec![Some("1".into())], vec![Some("first".into())], vec![Some("2.00".into())]],
            "the later upsert's total, the earlier upsert's note"
        );
        assert_eq!(
            statements[1].params[1],
            [Some("[1,null]".into())],
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
    fn values_are_cast_without_string_lengths_so_nothing_is_truncated() {
        for (column, postgres, cockroach) in [
            ("character varying(8)", "character varying", "character varying"),
            ("character varying(8)[]", "character varying[]", "character varying[]"),
            ("character(5)", "bpchar", "character(5)"),
            ("bit(10)", "bit varying", "bit varying"),
            ("bit varying(3)", "bit varying", "bit varying"),
            ("numeric(12,2)", "numeric(12,2)", "numeric(12,2)"),
            (
                "timestamp(3) without time zone",
                "timestamp(3) without time zone",
                "timestamp(3) without time zone",
            ),
            ("text", "text", "text"),
        ] {
            assert_eq!(cast_type(column, Dialect::Postgres), postgres, "{column}");
            assert_eq!(cast_type(column, Dialect::Cockroach), cockroach, "{column}");
        }
    }

    #[test]
    fn source_order_and_cascading_deletes_keep_their_place() {
        use crate::target::batch::Grouping;
        let customer = |id: &str| row([("id", n(id))]);
        let order = |id: &str| row([("id", n(id)), ("Note", Value::String("x".into()))]);
        let batch = vec![
            Mutation::upsert("customers", customer("1")),
            Mutation::upsert("orders", order("10")),
            Mutation::upsert("orders", order("10")),
            Mutation::delete("customers", customer("1")),
            Mutation::upsert("customers", customer("1")),
            Mutation::upsert("customers", customer("2")),
        ];
        let shape = |statements: &[Statement<'_>]| -> Vec<(String, Op, usize)> {
            statements.iter().map(|s| (s.table.clone(), s.op, s.rows)).collect()
        };
        let up = |t: &str, rows| (t.to_owned(), Op::Upsert, rows);
        let del = |t: &str, rows| (t.to_owned(), Op::Delete, rows);
        let in_order =
            plan(&schema(), &batch, Grouping::SourceOrder, Dialect::Postgres).expect("plan");
        assert_eq!(
            shape(&in_order),
            [
                up("customers", 1),
                up("orders", 1),
                up("orders", 1),
                del("customers", 1),
                up("customers", 2)
            ],
            "one statement per run of one table and operation, a repeated key starting another"
        );
        // Collapsed, the customer's delete folds into its re-insert, unless deleting a
        // customer cascades on the target.
        let collapsed = plan(&schema(), &batch, true, Dialect::Postgres).expect("plan");
        assert_eq!(shape(&collapsed), [up("customers", 2), up("orders", 1)]);
        let mut cascading = schema();
        cascading.cascading.insert("customers".into());
        let collapsed = plan(&cascading, &batch, true, Dialect::Postgres).expect("plan");
        assert_eq!(
            shape(&collapsed),
            [up("orders", 1), del("customers", 1), up("customers", 2)],
            "the delete keeps a round of its own"
        );
    }

    #[test]
    fn copy_text_escapes_only_what_copy_reads_specially() {
        let mut out = bytes::BytesMut::new();
        copy_escape("a\tb\nc\rd\\e \"f\" é", &mut out);
        assert_eq!(&out[..], "a\\tb\\nc\\rd\\\\e \"f\" é".as_bytes());
    }

    #[test]
    fn parameters_read_back_from_copy_text_are_the_cells() {
        let cells: Vec<Vec<Cell>> = vec![
            vec![Some("1".into()), Some("2".into()), Some("3".into())],
            vec![Some("a\tb\\N\n".into()), None, Some("\\N".into())],
            vec![Some("".into()), Some("\r\\".into()), None],
        ];
        let statement = Statement {
            schema: "public".into(),
            table: "t".into(),
            op: Op::Upsert,
            sql: String::new(),
            params: cells.clone(),
            rows: 3,
            copy: None,
        };
        let text = copy_text(&statement);
        let read_back = params_from_copy(&text, 3).expect("reads");
        assert_eq!(read_back, encode_params(&cells).expect("encodes"));
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
