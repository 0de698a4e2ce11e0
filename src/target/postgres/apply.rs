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
//! Parameters go in binary format (a `text[]` is lengths and bytes), and the cells borrow the
//! mutations' text, so planning copies no values.
//!
//! On PostgreSQL an upsert of [`COPY_MIN_ROWS`] rows or more is first loaded with COPY, which
//! skips `ON CONFLICT`'s speculative insertion and the parameter parsing: a backlog of inserts
//! goes in at close to COPY's speed. When a key is on the target already COPY fails, the
//! transaction is rolled back and written again with the upserts, and COPY rests for a while
//! (1, 2, 4 … 1,024 batches while it keeps failing) so a stream of updates does not pay twice.

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use std::borrow::Cow;
use std::sync::Arc;

use super::codec::{EncodedTextArray, TextArray, array_literal, encode_text_array};
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
    let transient = code.as_deref().is_some_and(|c| {
        matches!(c, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03")
            || c.starts_with("08")
    }) || source.is_closed();
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
        transient,
        source: Box::new(source),
    }
}

/// Prepared statements by SQL text: a batch shape seen before is not parsed and planned again.
/// Cleared when the schema is re-read. Also remembers how the COPY path has fared.
#[derive(Debug, Default)]
pub struct StatementCache {
    prepared: std::collections::HashMap<String, tokio_postgres::Statement>,
    /// Batches to write without COPY before trying it again (after COPY found existing keys).
    copy_pause: u32,
    /// How long the next pause is: doubles while COPY keeps failing, back to 1 once it works.
    copy_backoff: u32,
}

impl StatementCache {
    /// Forgets every prepared statement.
    pub fn clear(&mut self) {
        self.prepared.clear();
    }

    async fn prepare(
        &mut self,
        client: &tokio_postgres::Client,
        sql: &str,
        table: &str,
    ) -> Result<(), ApplyError> {
        if !self.prepared.contains_key(sql) {
            let prepared = client.prepare(sql).await.map_err(|e| database_error(table, e))?;
            self.prepared.insert(sql.to_owned(), prepared);
        }
        Ok(())
    }

    /// Whether to load `statements` by COPY this time: some are rendered for it and COPY is
    /// not resting.
    pub fn use_copy(&mut self, statements: &[Wire]) -> bool {
        statements.iter().any(|s| s.copy_sql.is_some()) && self.try_copy()
    }

    /// Whether to try COPY for this batch.
    fn try_copy(&mut self) -> bool {
        if self.copy_pause > 0 {
            self.copy_pause -= 1;
            return false;
        }
        true
    }

    fn copy_worked(&mut self) {
        self.copy_backoff = 0;
    }

    fn copy_failed(&mut self) {
        self.copy_backoff = (self.copy_backoff * 2).clamp(1, 1024);
        self.copy_pause = self.copy_backoff;
    }
}

/// A planned statement in the form it goes on the wire: it owns its bytes (one copy of each
/// value), so a batch can be planned on another thread while the previous one is written.
#[derive(Debug, Clone)]
pub struct Wire {
    /// The target schema.
    pub schema: String,
    /// The target table.
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// The statement's SQL.
    pub sql: String,
    /// Rows it writes.
    pub rows: usize,
    /// `COPY … FROM STDIN` when the rows go in by COPY first.
    pub copy_sql: Option<String>,
    /// The rows.
    pub data: WireData,
}

/// A [`Wire`] statement's rows.
#[derive(Debug, Clone)]
pub enum WireData {
    /// One binary `text[]` per parameter.
    Params(Vec<bytes::Bytes>),
    /// The rows in COPY's text format (the parameters are read back from it if COPY fails).
    Copy {
        /// Tab-separated, newline-terminated rows.
        text: bytes::Bytes,
        /// Columns per row.
        columns: usize,
    },
}

/// Renders planned statements into their wire form: large upserts that COPY can load as COPY
/// text, everything else as binary `text[]` parameters.
pub fn render(statements: &[Statement<'_>]) -> Result<Vec<Wire>, ApplyError> {
    statements
        .iter()
        .map(|s| {
            let copy_sql =
                s.copy.as_ref().filter(|_| s.rows >= COPY_MIN_ROWS).map(|c| c.copy_sql.clone());
            let data = if copy_sql.is_some() {
                WireData::Copy { text: copy_text(s), columns: s.params.len() }
            } else {
                WireData::Params(encode_params(&s.params).map_err(|e| encoding_error(&s.table, e))?)
            };
            Ok(Wire {
                schema: s.schema.clone(),
                table: s.table.clone(),
                op: s.op,
                sql: s.sql.clone(),
                rows: s.rows,
                copy_sql,
                data,
            })
        })
        .collect()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Parameters that could not be encoded (a value over 2 GiB, or COPY text that does not read
/// back): a data error of `table`.
fn encoding_error(table: &str, e: BoxError) -> ApplyError {
    ApplyError::Database {
        table: table.to_owned(),
        message: e.to_string(),
        code: None,
        transient: false,
        source: e,
    }
}

fn encode_params(params: &[Vec<Cell<'_>>]) -> Result<Vec<bytes::Bytes>, BoxError> {
    params
        .iter()
        .map(|column| {
            let size: usize = column.iter().map(|c| 4 + c.as_ref().map_or(0, |t| t.len())).sum();
            let mut out = bytes::BytesMut::with_capacity(20 + size);
            encode_text_array(column, &mut out)?;
            Ok(out.freeze())
        })
        .collect()
}

/// The rows of an upsert (its column arrays) in COPY's text format.
fn copy_text(s: &Statement<'_>) -> bytes::Bytes {
    let size: usize =
        s.params.iter().flatten().map(|c| 1 + c.as_ref().map_or(2, |t| t.len())).sum();
    let mut buf = bytes::BytesMut::with_capacity(size + size / 16);
    for r in 0..s.rows {
        for (c, column) in s.params.iter().enumerate() {
            if c > 0 {
                buf.extend_from_slice(b"\t");
            }
            match column.get(r) {
                Some(Some(text)) => copy_escape(text, &mut buf),
                _ => buf.extend_from_slice(b"\\N"),
            }
        }
        buf.extend_from_slice(b"\n");
    }
    buf.freeze()
}

/// The parameters of a statement rendered as COPY text, read back from that text (when COPY
/// is resting or has failed and the upsert runs instead).
fn params_from_copy(text: &[u8], columns: usize) -> Result<Vec<bytes::Bytes>, BoxError> {
    let mut params: Vec<Vec<Cell<'static>>> = vec![Vec::new(); columns];
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        for (c, field) in line.split(|&b| b == b'\t').enumerate() {
            let cell = (field != b"\\N").then(|| copy_unescape(field).into());
            params.get_mut(c).ok_or("a COPY row has more fields than columns")?.push(cell);
        }
    }
    encode_params(&params)
}

fn copy_unescape(field: &[u8]) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b't') => b'\t',
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(&other) => other,
            None => b'\\',
        });
    }
    // The text was UTF-8 when it was escaped, and escapes are ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

impl Wire {
    fn params(&self) -> Result<Cow<'_, [bytes::Bytes]>, ApplyError> {
        match &self.data {
            WireData::Params(p) => Ok(Cow::Borrowed(p)),
            WireData::Copy { text, columns } => params_from_copy(text, *columns)
                .map(Cow::Owned)
                .map_err(|e| encoding_error(&self.table, e)),
        }
    }

    fn count(&self, applied: &mut Applied) {
        match self.op {
            Op::Upsert => applied.upserts += self.rows,
            Op::Delete => applied.deletes += self.rows,
        }
    }
}

/// Runs `statements` as one transaction — BEGIN, the statements, COMMIT — sent together
/// (pipelined), so a batch costs one round trip once its statements are prepared. When a
/// statement fails, the server ignores the rest and COMMIT rolls back; the statement's error
/// is returned.
///
/// Statements rendered as COPY text are first loaded with COPY (through [`start`]): a backlog
/// of new rows skips `ON CONFLICT`'s speculative insertion and the parameter parsing. COPY
/// cannot update, so a row whose key is on the target already makes it fail; nothing is
/// checked beforehand, which would cost an index probe per row and a round trip. Then the
/// transaction is rolled back and written again this way.
pub async fn execute_transaction(
    client: &Arc<tokio_postgres::Client>,
    cache: &mut StatementCache,
    statements: &Arc<Vec<Wire>>,
) -> Result<Applied, ApplyError> {
    let first = statements.first().map_or("", |s| s.table.as_str());
    if cache.use_copy(statements) {
        let started = start(client, cache, statements.clone(), true).await?;
        match started.outcome(cache).await {
            Ok(()) => {
                client.batch_execute("COMMIT").await.map_err(|e| database_error(first, e))?;
                let mut applied = Applied::default();
                statements.iter().for_each(|s| s.count(&mut applied));
                return Ok(applied);
            }
            Err(StartedError::CopyRefused(e)) => {
                tracing::debug!(error = %e, "COPY refused the batch (keys already on the target?); writing it with upserts");
                let _ = client.batch_execute("ROLLBACK").await;
            }
            Err(StartedError::Failed(e)) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    for s in statements.iter() {
        cache.prepare(client, &s.sql, &s.table).await?;
    }
    let params = statements.iter().map(Wire::params).collect::<Result<Vec<_>, _>>()?;
    let encoded: Vec<Vec<EncodedTextArray>> =
        params.iter().map(|p| p.iter().map(|b| EncodedTextArray(b)).collect()).collect();
    let refs: Vec<Vec<&(dyn ToSql + Sync)>> =
        encoded.iter().map(|p| p.iter().map(|p| p as &(dyn ToSql + Sync)).collect()).collect();
    let _timer = statements.first().map(|s| {
        crate::metrics::global()
            .apply_duration_seconds
            .with_label_values(&[s.schema.as_str(), s.table.as_str()])
            .start_timer()
    });
    let begin = client.batch_execute("BEGIN");
    let runs = futures_util::future::join_all(
        statements.iter().zip(&refs).map(|(s, r)| client.execute(&cache.prepared[&s.sql], r)),
    );
    let commit = client.batch_execute("COMMIT");
    let (begun, ran, committed) = tokio::join!(begin, runs, commit);
    begun.map_err(|e| database_error(first, e))?;
    let mut applied = Applied::default();
    for (s, result) in statements.iter().zip(ran) {
        result.map_err(|e| database_error(&s.table, e))?;
        s.count(&mut applied);
    }
    committed.map_err(|e| database_error(first, e))?;
    Ok(applied)
}

/// Runs `s` through `statement`: its COPY (`copy`, when it is rendered as COPY text and
/// `statement` is its `COPY`), or its upsert.
async fn run_prepared(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    s: &Wire,
    copy: bool,
) -> Result<(), ApplyError> {
    let failed = |e| database_error(&s.table, e);
    match &s.data {
        WireData::Copy { text, .. } if copy => {
            copy_rows(client, statement, text.clone()).await.map_err(failed)
        }
        _ => {
            let params = s.params()?;
            let encoded: Vec<EncodedTextArray> =
                params.iter().map(|b| EncodedTextArray(b)).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                encoded.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            client.execute(statement, &refs).await.map(|_| ()).map_err(failed)
        }
    }
}

/// A transaction whose BEGIN and statements are on their way (a task awaits their results);
/// its COMMIT is the caller's to send. Made by [`start`] so that one batch can be sent while
/// the batch before commits.
#[derive(Debug)]
pub struct Started {
    task: tokio::task::JoinHandle<Result<(), ApplyError>>,
    copy: bool,
    /// `apply_duration_seconds`, from BEGIN to the statements' outcome.
    _timer: Option<prometheus::HistogramTimer>,
}

/// How a [`Started`] transaction's statements fared.
#[derive(Debug)]
pub enum StartedError {
    /// COPY refused the rows (a key is on the target already, most likely): roll back and
    /// write the batch with upserts ([`execute_transaction`]; COPY is resting by then).
    CopyRefused(ApplyError),
    /// A statement failed: roll back and report.
    Failed(ApplyError),
}

/// Sends BEGIN and `statements` (by COPY where rendered for it, when `copy`: see
/// [`StatementCache::use_copy`]) without waiting for them, and without COMMIT. Only preparing
/// a statement not seen before waits, before anything is sent.
pub async fn start(
    client: &Arc<tokio_postgres::Client>,
    cache: &mut StatementCache,
    statements: Arc<Vec<Wire>>,
    copy: bool,
) -> Result<Started, ApplyError> {
    let timer = statements.first().map(|s| {
        crate::metrics::global()
            .apply_duration_seconds
            .with_label_values(&[s.schema.as_str(), s.table.as_str()])
            .start_timer()
    });
    let mut prepared = Vec::with_capacity(statements.len());
    for s in statements.iter() {
        let sql = s.copy_sql.as_ref().filter(|_| copy).unwrap_or(&s.sql);
        cache.prepare(client, sql, &s.table).await?;
        prepared.push(cache.prepared[sql].clone());
    }
    let client = client.clone();
    let task = tokio::spawn(async move {
        let first = statements.first().map_or("", |s| s.table.as_str());
        let body = async {
            for (s, statement) in statements.iter().zip(&prepared) {
                run_prepared(&client, statement, s, copy && s.copy_sql.is_some()).await?;
            }
            Ok(())
        };
        let (begun, ran) = tokio::join!(client.batch_execute("BEGIN"), body);
        begun.map_err(|e| database_error(first, e)).and(ran)
    });
    Ok(Started { task, copy, _timer: timer })
}

impl Started {
    /// Waits for the statements' outcome (the transaction stays open).
    pub async fn outcome(self, cache: &mut StatementCache) -> Result<(), StartedError> {
        let result = match self.task.await {
            Ok(result) => result,
            Err(e) => {
                return Err(StartedError::Failed(ApplyError::Database {
                    table: String::new(),
                    message: format!("the write task ended: {e}"),
                    code: None,
                    transient: true,
                    source: Box::new(e),
                }));
            }
        };
        match result {
            Ok(()) => {
                if self.copy {
                    cache.copy_worked();
                }
                Ok(())
            }
            Err(e) if self.copy && !e.is_transient() => {
                cache.copy_failed();
                Err(StartedError::CopyRefused(e))
            }
            Err(e) => Err(StartedError::Failed(e)),
        }
    }
}

/// Sends rows in COPY text format through the prepared `COPY … FROM STDIN`.
async fn copy_rows(
    client: &tokio_postgres::Client,
    copy: &tokio_postgres::Statement,
    rows: bytes::Bytes,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = client.copy_in::<_, bytes::Bytes>(copy).await?;
    futures_util::pin_mut!(sink);
    sink.send(rows).await?;
    sink.finish().await.map(|_| ())
}

/// A value in COPY's text format: backslash, tab, newline and carriage return escaped.
fn copy_escape(text: &str, out: &mut bytes::BytesMut) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
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
    fn copy_rests_longer_while_it_keeps_failing() {
        let mut cache = StatementCache::default();
        assert!(cache.try_copy());
        cache.copy_failed();
        assert!(!cache.try_copy(), "one batch without COPY");
        assert!(cache.try_copy());
        cache.copy_failed();
        assert_eq!((0..2).filter(|_| !cache.try_copy()).count(), 2, "then two");
        assert!(cache.try_copy());
        cache.copy_worked();
        cache.copy_failed();
        assert!(!cache.try_copy() && cache.try_copy(), "success starts over at one");
        for _ in 0..20 {
            cache.copy_failed();
        }
        assert_eq!(cache.copy_pause, 1024, "at most 1,024 batches");
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
