//! Changefeed state in staging: MOLT's per-table staging tables (consistent mode's staged
//! rows, immediate mode's applied marks), the per-key newest versions that keep an older
//! version from overwriting a newer one, and resolved timestamps in `checkpoints`.
//!
//! # Per-table staging tables
//!
//! One table per target table, named `<db>_<schema>_<table>` (lower case; MySQL/MariaDB
//! targets: `<db>_<table>`), with MOLT's columns: `nanos`, `logical`, `key` (the key as a JSON
//! array), `mut`, `before`, `applied`, `applied_at`, `deletion`, `source_time`, and beyond
//! MOLT's layout a partial index on the unapplied rows in time order. Consistent mode stages
//! each row there ([`stage`], the first copy of a (time, key) wins; [`stage_with`] tries COPY
//! first), reads the unapplied ones
//! in time order ([`pending`]) and marks them applied after the target's commit
//! ([`mark_staged_applied`]). Immediate mode writes an applied stub (`mut` =
//! `{"__stub__":true}`) for every version it applied, in the staging transaction that commits
//! right after the target's, so staged data and applied marks read as MOLT's do.
//!
//! # Key versions
//!
//! `key_versions(table_name, key, nanos, logical)` holds the newest version applied per key.
//! A request claims its keys first: one upsert that moves a key's version only forward and
//! returns the keys it moved (on PostgreSQL staging, keys never seen before are first tried
//! with COPY: [`claim_with`]). The claim's row locks are held until the staging transaction
//! ends, after the target's commit, so two requests for one key (two instances behind a load
//! balancer, or a retry that overtakes its first copy) are serialized, and the later one sees
//! the version the first applied: an older version is then dropped, never written. Keys are
//! claimed in sorted order, so two requests cannot deadlock on each other. If replicator stops
//! between the target's commit and staging's, the claim is rolled back and the changefeed's
//! retry writes the same version again (writes are idempotent).
//!
//! # Checkpoints
//!
//! A resolved timestamp is recorded in `checkpoints` under the target schema (group and
//! partition: `db.schema` lower-cased, as MOLT). Equal to the newest: accepted (CockroachDB
//! re-sends them). Older: refused, as a changefeed recreated with an older cursor would
//! otherwise re-apply the past silently. Immediate mode records it applied; consistent mode's
//! sweeper sets `target_applied_at` once every row up to it is applied ([`commit_resolved`]).

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::{StagingDialect, StagingSchema};
use crate::target::postgres::apply::transaction::copy_rows;
use crate::target::postgres::apply::wire::copy_escape;
use crate::types::position::Hlc;

/// The mark `mut` holds for a version immediate mode applied.
pub const STUB: &str = r#"{"__stub__":true}"#;

/// The staging table of `table` in target schema `schema` (its parts): `db_schema_table`, or
/// `db_table` for a one-part (MySQL/MariaDB) schema, lower case.
pub fn table_name(schema: &[String], table: &str) -> String {
    let mut parts: Vec<String> = schema.iter().map(|p| p.to_lowercase()).collect();
    parts.push(table.to_lowercase());
    parts.join("_")
}

/// The DDL of one per-table staging table (idempotent).
pub fn table_ddl(dialect: StagingDialect, staging: &StagingSchema, name: &str) -> Vec<String> {
    let t = staging.table(name);
    let index = crate::target::postgres::quote_ident(&format!("{name}_key_applied"));
    match dialect {
        StagingDialect::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (nanos INT8 NOT NULL, logical INT8 NOT NULL, \
                 key TEXT NOT NULL, mut BYTEA NOT NULL, before BYTEA NULL, \
                 applied BOOL NOT NULL DEFAULT false, applied_at TIMESTAMPTZ NULL, \
                 deletion BOOL NOT NULL DEFAULT false, source_time TIMESTAMPTZ GENERATED ALWAYS \
                 AS (to_timestamp(nanos::float8 / 1e9)) STORED, PRIMARY KEY (nanos, logical, key))"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (key) INCLUDE (applied)"),
            pending_index(&t, name),
        ],
        StagingDialect::Cockroach => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (nanos INT8 NOT NULL, logical INT8 NOT NULL, \
             key STRING NOT NULL, mut BYTES NOT NULL, before BYTES NULL, \
             applied BOOL NOT NULL DEFAULT false, applied_at TIMESTAMPTZ NULL, \
             deletion BOOL NOT NULL DEFAULT false, source_time TIMESTAMPTZ AS \
             (to_timestamp(nanos::FLOAT8 / 1e9)) VIRTUAL, PRIMARY KEY (nanos, logical, key), \
             INDEX {index} (key) STORING (applied), FAMILY cold (nanos, logical, key, mut, \
             before, deletion), FAMILY hot (applied, applied_at))"
            ),
            pending_index(&t, name),
        ],
    }
}

/// Ours beyond MOLT's layout: the rows not applied yet, in time order, so the sweeper reads
/// them without walking the applied ones (and rows that arrive late, below a resolved
/// timestamp already applied, are found too).
fn pending_index(table: &str, name: &str) -> String {
    let index = crate::target::postgres::quote_ident(&format!("{name}_pending"));
    format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (nanos, logical, key) WHERE NOT applied")
}

/// The DDL of `key_versions` (idempotent).
pub fn versions_ddl(dialect: StagingDialect, staging: &StagingSchema) -> String {
    let text = match dialect {
        StagingDialect::Postgres => "TEXT",
        StagingDialect::Cockroach => "STRING",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {} (table_name {text} NOT NULL, key {text} NOT NULL, \
         nanos INT8 NOT NULL, logical INT8 NOT NULL, PRIMARY KEY (table_name, key))",
        staging.table("key_versions")
    )
}

/// A version of one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// The per-table staging table's name ([`table_name`]).
    pub table: String,
    /// The key's canonical text.
    pub key: String,
    /// The version's time.
    pub time: Hlc,
}

/// Claims `versions` (sorted by table and key, one per key) inside the caller's transaction:
/// moves each key's newest version forward and returns, for each version, whether it is newer
/// than every version applied before (false: an equal or newer one was applied; drop it). The
/// rows stay locked until the transaction ends.
pub async fn claim(
    tx: &impl GenericClient,
    staging: &StagingSchema,
    versions: &[&Version],
) -> Result<Vec<bool>, tokio_postgres::Error> {
    if versions.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "INSERT INTO {t} AS v (table_name, key, nanos, logical) \
         SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::INT8[], $4::INT8[]) \
         ON CONFLICT (table_name, key) DO UPDATE SET nanos = excluded.nanos, logical = excluded.logical \
         WHERE (v.nanos, v.logical) < (excluded.nanos, excluded.logical) \
         RETURNING table_name, key",
        t = staging.table("key_versions")
    );
    let tables: Vec<&str> = versions.iter().map(|v| v.table.as_str()).collect();
    let keys: Vec<&str> = versions.iter().map(|v| v.key.as_str()).collect();
    let (nanos, logical, _) = columns(versions);
    let params: [&(dyn ToSql + Sync); 4] = [&tables, &keys, &nanos, &logical];
    let rows = tx.query(&sql, &params).await?;
    let moved: std::collections::HashSet<(&str, &str), foldhash::fast::RandomState> =
        rows.iter().map(|r| (r.get::<_, &str>(0), r.get::<_, &str>(1))).collect();
    Ok(versions.iter().map(|v| moved.contains(&(v.table.as_str(), v.key.as_str()))).collect())
}

/// How one kind of write (the claims of one target schema, or its staged rows) has fared with
/// COPY: rows whose keys are not there yet (a changefeed's first pass over its tables, a
/// backlog of inserts) are loaded with COPY, which skips `ON CONFLICT`'s speculative insertion
/// and the parameter arrays; once COPY meets a key that is there already (a key updated again,
/// a request sent again), the write uses its `INSERT … ON CONFLICT` for a while, as the
/// target's writer does with its own COPY path.
pub use crate::target::postgres::apply::transaction::CopyRest as CopyFirst;

/// Fewer rows than this are written with `INSERT`: COPY's savepoint and round trips cost more
/// than they save.
const COPY_FIRST_MIN_ROWS: usize = 64;

/// Runs `sql` (a `COPY … FROM STDIN`) with `data` under a savepoint of the caller's
/// transaction: true when every row went in; false when a key was there already (the
/// savepoint rolled back: the caller writes the rows its other way).
async fn copy_first(
    copy: &CopyFirst,
    client: &tokio_postgres::Client,
    sql: &str,
    data: bytes::Bytes,
) -> Result<bool, tokio_postgres::Error> {
    client.batch_execute("SAVEPOINT copy_first").await?;
    match copy_rows(client, sql, data).await {
        Ok(()) => {
            client.batch_execute("RELEASE SAVEPOINT copy_first").await?;
            copy.worked();
            Ok(true)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            client.batch_execute("ROLLBACK TO SAVEPOINT copy_first").await?;
            copy.failed();
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// [`claim`], by COPY where `copy` says so (PostgreSQL staging): inside the caller's
/// transaction, under a savepoint, the versions are copied into `key_versions`; if every key
/// is new they are all fresh, and if one is there already (a unique violation) the savepoint
/// is rolled back and the upsert decides. A key another transaction is inserting makes COPY
/// wait for it, as the upsert would, so the serialization of claims is the same.
pub async fn claim_with(
    tx: &impl GenericClient,
    staging: &StagingSchema,
    versions: &[&Version],
    copy: Option<&CopyFirst>,
) -> Result<Vec<bool>, tokio_postgres::Error> {
    let Some(copy) = copy.filter(|c| versions.len() >= COPY_FIRST_MIN_ROWS && c.try_now()) else {
        return claim(tx, staging, versions).await;
    };
    use std::fmt::Write as _;
    let mut rows = bytes::BytesMut::with_capacity(versions.len() * 64);
    for v in versions {
        copy_escape(&v.table, &mut rows);
        rows.extend_from_slice(b"\t");
        copy_escape(&v.key, &mut rows);
        let _ = writeln!(rows, "\t{}\t{}", v.time.nanos, v.time.logical);
    }
    let sql = format!(
        "COPY {} (table_name, key, nanos, logical) FROM STDIN",
        staging.table("key_versions")
    );
    if copy_first(copy, tx.client(), &sql, rows.freeze()).await? {
        Ok(vec![true; versions.len()])
    } else {
        claim(tx, staging, versions).await
    }
}

/// The times and keys of `versions` as the parameter arrays of a statement.
fn columns<'a>(versions: &[&'a Version]) -> (Vec<i64>, Vec<i64>, Vec<&'a str>) {
    let nanos = versions.iter().map(|v| v.time.nanos).collect();
    let logical = versions.iter().map(|v| i64::from(v.time.logical)).collect();
    let keys = versions.iter().map(|v| v.key.as_str()).collect();
    (nanos, logical, keys)
}

/// Writes applied stubs for `versions` of per-table staging table `table` (MOLT's
/// `MarkApplied`), inside the caller's transaction.
pub async fn mark_applied(
    tx: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
    versions: &[&Version],
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO {t} (nanos, logical, key, mut, applied, applied_at) \
         SELECT n, l, k, convert_to($4, 'UTF8'), true, now() \
         FROM unnest($1::INT8[], $2::INT8[], $3::TEXT[]) AS u(n, l, k) \
         ON CONFLICT (nanos, logical, key) DO UPDATE SET applied = true, applied_at = now()",
        t = staging.table(table)
    );
    let (nanos, logical, keys) = columns(versions);
    tx.execute(&sql, &[&nanos, &logical, &keys, &STUB]).await?;
    Ok(())
}

/// Marks staged rows `versions` of per-table staging table `table` applied (consistent
/// mode: the rows are there), inside the caller's transaction.
pub async fn mark_staged_applied(
    tx: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
    versions: &[&Version],
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "UPDATE {t} AS s SET applied = true, applied_at = now() \
         FROM unnest($1::INT8[], $2::INT8[], $3::TEXT[]) AS u(n, l, k) \
         WHERE s.nanos = u.n AND s.logical = u.l AND s.key = u.k AND NOT s.applied",
        t = staging.table(table)
    );
    let (nanos, logical, keys) = columns(versions);
    tx.execute(&sql, &[&nanos, &logical, &keys]).await?;
    Ok(())
}

/// [`claim`] and [`mark_staged_applied`] as one SQL text with their values written in, for a
/// transaction on staging's own database that cannot wait for the claim's answer: the target
/// transaction of a round whose versions are all newer than any applied (PostgreSQL, with
/// `standard_conforming_strings`, its default). `versions` sorted by table and key, one per key;
/// `staged` every staged row of the round, by per-table staging table.
pub fn claim_and_mark_sql(
    staging: &StagingSchema,
    versions: &[&Version],
    staged: &[(&str, Vec<&Version>)],
) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(64 * (versions.len() + 8));
    if !versions.is_empty() {
        let _ = write!(
            sql,
            "INSERT INTO {t} AS v (table_name, key, nanos, logical) SELECT * FROM unnest({}, {}, {}, {}) \
             ON CONFLICT (table_name, key) DO UPDATE SET nanos = excluded.nanos, logical = excluded.logical \
             WHERE (v.nanos, v.logical) < (excluded.nanos, excluded.logical)",
            text_array(versions.iter().map(|v| v.table.as_str())),
            text_array(versions.iter().map(|v| v.key.as_str())),
            int8_array(versions.iter().map(|v| v.time.nanos)),
            int8_array(versions.iter().map(|v| i64::from(v.time.logical))),
            t = staging.table("key_versions"),
        );
    }
    for (table, rows) in staged {
        if rows.is_empty() {
            continue;
        }
        if !sql.is_empty() {
            sql.push_str("; ");
        }
        let _ = write!(
            sql,
            "UPDATE {t} AS s SET applied = true, applied_at = now() FROM unnest({}, {}, {}) AS u(n, l, k) \
             WHERE s.nanos = u.n AND s.logical = u.l AND s.key = u.k AND NOT s.applied",
            int8_array(rows.iter().map(|v| v.time.nanos)),
            int8_array(rows.iter().map(|v| i64::from(v.time.logical))),
            text_array(rows.iter().map(|v| v.key.as_str())),
            t = staging.table(table),
        );
    }
    sql
}

/// A `TEXT[]` literal of `items` (array elements quoted, the SQL string's quotes doubled).
fn text_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("'{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\'' => out.push_str("''"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push_str("}'::TEXT[]");
    out
}

/// An `INT8[]` literal of `items`.
fn int8_array(items: impl Iterator<Item = i64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("'{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{item}");
    }
    out.push_str("}'::INT8[]");
    out
}

/// [`mark_applied`] on PostgreSQL staging, with COPY: each stub is a version the claim just
/// moved forward, so none is there yet, unless `key_versions` lost rows its stubs kept (an
/// operator's cleanup); then, behind a savepoint, the upsert.
pub async fn mark_applied_copy(
    tx: &mut tokio_postgres::Transaction<'_>,
    staging: &StagingSchema,
    table: &str,
    versions: &[&Version],
) -> Result<(), tokio_postgres::Error> {
    let applied_at = crate::status::rfc3339(std::time::SystemTime::now());
    use std::fmt::Write as _;
    let stub: String = STUB.bytes().map(|b| format!("{b:02x}")).collect();
    // Every row ends the same way: the stub (bytea hex, its backslash escaped), applied, when.
    let tail = format!("\t\\\\x{stub}\tt\t{applied_at}\n");
    let mut rows = bytes::BytesMut::with_capacity(versions.len() * (48 + tail.len()));
    for v in versions {
        let _ = write!(rows, "{}\t{}\t", v.time.nanos, v.time.logical);
        copy_escape(&v.key, &mut rows);
        rows.extend_from_slice(tail.as_bytes());
    }
    let copy = format!(
        "COPY {} (nanos, logical, key, mut, applied, applied_at) FROM STDIN",
        staging.table(table)
    );
    let savepoint = tx.savepoint("stubs").await?;
    match copy_rows(savepoint.client(), &copy, rows.freeze()).await {
        Ok(()) => savepoint.commit().await,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            savepoint.rollback().await?;
            mark_applied(tx, staging, table, versions).await
        }
        Err(e) => Err(e),
    }
}

/// A staged mutation (a row of a per-table staging table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// Its HLC time.
    pub time: Hlc,
    /// The key's canonical text.
    pub key: String,
    /// The row after the change as JSON (`null` for a delete); gzip when it starts `1f 8b`.
    pub mutation: Vec<u8>,
    /// The row before (`WITH diff`), as JSON.
    pub before: Option<Vec<u8>>,
    /// A delete.
    pub deletion: bool,
}

impl Staged {
    /// The JSON of [`Staged::mutation`] or `before`, decompressed when MOLT stored it gzipped.
    pub fn json(bytes: &[u8]) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read as _;
            let mut out = Vec::with_capacity(bytes.len() * 4);
            flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
            Ok(std::borrow::Cow::Owned(out))
        } else {
            Ok(std::borrow::Cow::Borrowed(bytes))
        }
    }
}

/// Writes `rows` into per-table staging table `table` inside the caller's transaction; a
/// (time, key) already staged keeps its first copy. Returns how many rows were new.
pub async fn stage(
    tx: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
    rows: &[Staged],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "INSERT INTO {t} (nanos, logical, key, mut, before, deletion) \
         SELECT * FROM unnest($1::INT8[], $2::INT8[], $3::TEXT[], $4::BYTEA[], $5::BYTEA[], $6::BOOL[]) \
         ON CONFLICT (nanos, logical, key) DO NOTHING",
        t = staging.table(table)
    );
    let nanos: Vec<i64> = rows.iter().map(|r| r.time.nanos).collect();
    let logical: Vec<i64> = rows.iter().map(|r| i64::from(r.time.logical)).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let muts: Vec<&[u8]> = rows.iter().map(|r| r.mutation.as_slice()).collect();
    let befores: Vec<Option<&[u8]>> = rows.iter().map(|r| r.before.as_deref()).collect();
    let deletions: Vec<bool> = rows.iter().map(|r| r.deletion).collect();
    let params: [&(dyn ToSql + Sync); 6] = [&nanos, &logical, &keys, &muts, &befores, &deletions];
    tx.execute(&sql, &params).await
}

/// [`stage`], by COPY where `copy` says so (PostgreSQL staging): under a savepoint the rows
/// are copied in (binary COPY: the JSON goes as it is, not as hex); if every (time, key) is
/// new they all count, and if one is staged already (a request sent again) the savepoint is
/// rolled back and [`stage`] keeps the first copies. A row another transaction is staging
/// makes COPY wait for it, as the `INSERT` would.
pub async fn stage_with(
    tx: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
    rows: &[Staged],
    copy: Option<&CopyFirst>,
) -> Result<u64, tokio_postgres::Error> {
    let Some(copy) = copy.filter(|c| rows.len() >= COPY_FIRST_MIN_ROWS && c.try_now()) else {
        return stage(tx, staging, table, rows).await;
    };
    let mut out = bytes::BytesMut::with_capacity(
        19 + 2 + rows.iter().map(|r| 64 + r.key.len() + r.mutation.len()).sum::<usize>(),
    );
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&[0; 8]); // flags, header extension length
    let field = |out: &mut bytes::BytesMut, bytes: Option<&[u8]>| match bytes {
        Some(b) => {
            out.extend_from_slice(&i32::try_from(b.len()).unwrap_or(i32::MAX).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    };
    for r in rows {
        out.extend_from_slice(&6i16.to_be_bytes());
        field(&mut out, Some(&r.time.nanos.to_be_bytes()));
        field(&mut out, Some(&i64::from(r.time.logical).to_be_bytes()));
        field(&mut out, Some(r.key.as_bytes()));
        field(&mut out, Some(&r.mutation));
        field(&mut out, r.before.as_deref());
        field(&mut out, Some(&[u8::from(r.deletion)]));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    let sql =
        format!("COPY {} ({STAGED_COLUMNS}) FROM STDIN (FORMAT binary)", staging.table(table));
    if copy_first(copy, tx.client(), &sql, out.freeze()).await? {
        Ok(rows.len() as u64)
    } else {
        stage(tx, staging, table, rows).await
    }
}

const STAGED_COLUMNS: &str = "nanos, logical, key, mut, before, deletion";

fn staged(row: &tokio_postgres::Row) -> Staged {
    Staged {
        time: Hlc { nanos: row.get(0), logical: row.get::<_, i64>(1).try_into().unwrap_or(0) },
        key: row.get(2),
        mutation: row.get(3),
        before: row.get(4),
        deletion: row.get(5),
    }
}

/// The first `limit` unapplied rows of `table` after `after` (`None`: from the first) and at
/// or before `upto`, in time then key order.
pub async fn pending(
    client: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
    after: Option<Hlc>,
    upto: Hlc,
    limit: usize,
) -> Result<Vec<Staged>, tokio_postgres::Error> {
    // A keyset page: the scan starts past what was read, not at the index's first entry (the
    // entries of rows marked applied stay in the index until vacuum).
    let after = after.unwrap_or(Hlc { nanos: i64::MIN, logical: 0 });
    let sql = format!(
        "SELECT {STAGED_COLUMNS} FROM {t} WHERE NOT applied AND (nanos, logical) > ($1, $2) \
         AND (nanos, logical) <= ($3, $4) ORDER BY nanos, logical, key LIMIT $5",
        t = staging.table(table)
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (lo_logical, hi_logical) = (i64::from(after.logical), i64::from(upto.logical));
    let rows =
        client.query(&sql, &[&after.nanos, &lo_logical, &upto.nanos, &hi_logical, &limit]).await?;
    Ok(rows.iter().map(staged).collect())
}

/// Every unapplied row of `table` at time `at`.
pub async fn pending_at(
    client: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
    at: Hlc,
) -> Result<Vec<Staged>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {STAGED_COLUMNS} FROM {t} WHERE NOT applied AND nanos = $1 AND logical = $2 \
         ORDER BY key",
        t = staging.table(table)
    );
    let rows = client.query(&sql, &[&at.nanos, &i64::from(at.logical)]).await?;
    Ok(rows.iter().map(staged).collect())
}

/// How many rows of `table` wait to be applied.
pub async fn pending_count(
    client: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
) -> Result<i64, tokio_postgres::Error> {
    let sql = format!("SELECT count(*) FROM {} WHERE NOT applied", staging.table(table));
    Ok(client.query_one(&sql, &[]).await?.get(0))
}

/// Deletes applied rows of `table` older than `before`, 10,000 at a time (unapplied rows are
/// never deleted); returns how many went.
pub async fn retire(
    client: &impl GenericClient,
    staging: &StagingSchema,
    table: &str,
    before: Hlc,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "DELETE FROM {t} WHERE (nanos, logical, key) IN (SELECT nanos, logical, key FROM {t} \
         WHERE applied AND (nanos, logical) < ($1, $2) LIMIT 10000)",
        t = staging.table(table)
    );
    let mut total = 0;
    loop {
        let gone = client.execute(&sql, &[&before.nanos, &i64::from(before.logical)]).await?;
        total += gone;
        if gone < 10_000 {
            return Ok(total);
        }
    }
}

/// The per-table staging tables of target schema `parts` (names starting `db_schema_`, or
/// `db_` for a one-part schema) that exist in staging.
pub async fn staged_tables(
    client: &impl GenericClient,
    staging: &StagingSchema,
    parts: &[String],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let prefix = table_name(parts, "");
    let catalog = match &staging.database {
        Some(db) => {
            format!("{}.information_schema.tables", crate::target::postgres::quote_ident(db))
        }
        None => "information_schema.tables".to_owned(),
    };
    let sql = format!(
        "SELECT table_name::TEXT FROM {catalog} WHERE table_schema = $1 \
         AND left(table_name, length($2)) = $2 AND table_name <> 'key_versions' ORDER BY 1"
    );
    let rows = client.query(&sql, &[&staging.schema, &prefix]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The newest resolved timestamp of `group`, and whether it is applied.
pub async fn newest_resolved(
    client: &impl GenericClient,
    staging: &StagingSchema,
    group: &str,
) -> Result<Option<(Hlc, bool)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT source_hlc::TEXT, target_applied_at IS NOT NULL FROM {} \
         WHERE group_name = $1 AND partition = $1 ORDER BY source_hlc DESC LIMIT 1",
        staging.table("checkpoints")
    );
    let row = client.query_opt(&sql, &[&group]).await?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok().map(|h| (h, r.get(1)))))
}

/// The resolved timestamp a sweep of `group` applies up to with `--limitLookahead`
/// `lookahead` (at least 1): the `lookahead`-th oldest not yet applied, or the newest when
/// fewer wait; and whether more wait past it. `None` when every one is applied.
pub async fn resolved_ahead(
    client: &impl GenericClient,
    staging: &StagingSchema,
    group: &str,
    lookahead: usize,
) -> Result<Option<(Hlc, bool)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT source_hlc::TEXT FROM {} WHERE group_name = $1 AND partition = $1 \
         AND target_applied_at IS NULL ORDER BY source_hlc LIMIT $2",
        staging.table("checkpoints")
    );
    let limit = i64::try_from(lookahead.saturating_add(1)).unwrap_or(i64::MAX);
    let rows = client.query(&sql, &[&group, &limit]).await?;
    let more = rows.len() > lookahead;
    let upto = rows.iter().take(lookahead).last();
    Ok(upto.and_then(|r| r.get::<_, String>(0).parse().ok()).map(|h| (h, more)))
}

/// The newest applied resolved timestamp of `group`.
pub async fn newest_applied(
    client: &impl GenericClient,
    staging: &StagingSchema,
    group: &str,
) -> Result<Option<Hlc>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT source_hlc::TEXT FROM {} WHERE group_name = $1 AND partition = $1 \
         AND target_applied_at IS NOT NULL ORDER BY source_hlc DESC LIMIT 1",
        staging.table("checkpoints")
    );
    let row = client.query_opt(&sql, &[&group]).await?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()))
}

/// Marks every resolved timestamp of `group` at or before `upto` applied (MOLT's `Commit`);
/// returns how many were.
pub async fn commit_resolved(
    client: &impl GenericClient,
    staging: &StagingSchema,
    group: &str,
    upto: Hlc,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE {} SET target_applied_at = now() WHERE group_name = $1 AND partition = $1 \
         AND source_hlc <= $2::TEXT::NUMERIC AND target_applied_at IS NULL",
        staging.table("checkpoints")
    );
    client.execute(&sql, &[&group, &upto.to_string()]).await
}

/// The groups (target schemas) with a resolved timestamp not applied yet (`all`: with any
/// resolved timestamp): what a restarted instance sweeps before any request arrives.
pub async fn unapplied_groups(
    client: &impl GenericClient,
    staging: &StagingSchema,
    all: bool,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let filter = if all { "" } else { " WHERE target_applied_at IS NULL" };
    let sql = format!(
        "SELECT DISTINCT group_name FROM {}{filter} ORDER BY 1",
        staging.table("checkpoints")
    );
    Ok(client.query(&sql, &[]).await?.iter().map(|r| r.get(0)).collect())
}

/// What recording a resolved timestamp did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Recorded (or already recorded: the changefeed sent it again).
    Recorded,
    /// Older than the newest recorded for the schema: refused.
    Backwards {
        /// The newest recorded.
        newest: Hlc,
    },
}

/// The channel PostgreSQL staging announces new resolved timestamps on (payload: the group):
/// what wakes the sweeper on another instance.
pub fn checkpoint_channel(staging: &StagingSchema) -> String {
    let mut channel = format!("replicator_checkpoints_{}", staging.schema);
    while channel.len() > 63 {
        channel.pop();
    }
    channel
}

/// What CockroachDB staging runs to hear of new resolved timestamps: a changefeed on
/// `checkpoints` without a sink (its rows stream back as the query's result).
pub fn checkpoint_changefeed_sql(staging: &StagingSchema) -> String {
    format!(
        "EXPERIMENTAL CHANGEFEED FOR {} WITH no_initial_scan, resolved = '10s'",
        staging.table("checkpoints")
    )
}

/// Records resolved timestamp `at` for target schema `group` (`db.schema`, lower case), marked
/// applied at once when `applied` (immediate mode); with `notify`, announced on that channel
/// when the transaction commits (PostgreSQL staging).
pub async fn resolve(
    client: &mut tokio_postgres::Client,
    staging: &StagingSchema,
    group: &str,
    at: Hlc,
    applied: bool,
    notify: Option<&str>,
) -> Result<Resolved, tokio_postgres::Error> {
    let t = staging.table("checkpoints");
    let tx = client.transaction().await?;
    let newest = tx
        .query_opt(
            &format!(
                "SELECT source_hlc::TEXT FROM {t} WHERE group_name = $1 AND partition = $1 \
                 ORDER BY source_hlc DESC LIMIT 1 FOR UPDATE"
            ),
            &[&group],
        )
        .await?;
    if let Some(row) = newest {
        let text: String = row.get(0);
        if let Ok(newest) = text.parse::<Hlc>()
            && newest > at
        {
            return Ok(Resolved::Backwards { newest });
        }
    }
    tx.execute(
        &format!(
            "INSERT INTO {t} (group_name, source_hlc, partition, target_applied_at) \
             VALUES ($1, $2::TEXT::NUMERIC, $1, CASE WHEN $3 THEN now() END) \
             ON CONFLICT (group_name, source_hlc, partition) DO NOTHING"
        ),
        &[&group, &at.to_string(), &applied],
    )
    .await?;
    if let Some(channel) = notify {
        tx.execute("SELECT pg_notify($1, $2)", &[&channel, &group]).await?;
    }
    tx.commit().await?;
    Ok(Resolved::Recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_written_into_sql_are_quoted() {
        let v = Version {
            table: "db_public_t".into(),
            key: r#"["it's","a\"b\\c"]"#.into(),
            time: Hlc { nanos: 5, logical: 2 },
        };
        let staging = StagingSchema { database: None, schema: "_replicator".into() };
        let sql = claim_and_mark_sql(&staging, &[&v], &[("db_public_t", vec![&v])]);
        assert!(sql.contains(r#"'{"[\"it''s\",\"a\\\"b\\\\c\"]"}'::TEXT[]"#), "{sql}");
        assert!(sql.contains("unnest('{5}'::INT8[], '{2}'::INT8[], '{"), "{sql}");
    }

    #[test]
    fn staging_table_names_follow_molt() {
        let pg = ["Shop".to_owned(), "Public".to_owned()];
        assert_eq!(table_name(&pg, "Orders"), "shop_public_orders");
        assert_eq!(table_name(&["inventory".to_owned()], "t"), "inventory_t");
    }

    #[test]
    fn golden_ddl() {
        let crdb = StagingSchema { database: Some("_replicator".into()), schema: "public".into() };
        let sql = table_ddl(StagingDialect::Cockroach, &crdb, "shop_public_orders");
        assert_eq!(
            sql,
            [
                r#"CREATE TABLE IF NOT EXISTS "_replicator"."public"."shop_public_orders" (nanos INT8 NOT NULL, logical INT8 NOT NULL, key STRING NOT NULL, mut BYTES NOT NULL, before BYTES NULL, applied BOOL NOT NULL DEFAULT false, applied_at TIMESTAMPTZ NULL, deletion BOOL NOT NULL DEFAULT false, source_time TIMESTAMPTZ AS (to_timestamp(nanos::FLOAT8 / 1e9)) VIRTUAL, PRIMARY KEY (nanos, logical, key), INDEX "shop_public_orders_key_applied" (key) STORING (applied), FAMILY cold (nanos, logical, key, mut, before, deletion), FAMILY hot (applied, applied_at))"#,
                r#"CREATE INDEX IF NOT EXISTS "shop_public_orders_pending" ON "_replicator"."public"."shop_public_orders" (nanos, logical, key) WHERE NOT applied"#,
            ]
        );
        assert_eq!(
            versions_ddl(StagingDialect::Cockroach, &crdb),
            r#"CREATE TABLE IF NOT EXISTS "_replicator"."public"."key_versions" (table_name STRING NOT NULL, key STRING NOT NULL, nanos INT8 NOT NULL, logical INT8 NOT NULL, PRIMARY KEY (table_name, key))"#
        );
        assert_eq!(
            checkpoint_changefeed_sql(&crdb),
            r#"EXPERIMENTAL CHANGEFEED FOR "_replicator"."public"."checkpoints" WITH no_initial_scan, resolved = '10s'"#
        );
        let pg = StagingSchema { database: None, schema: "_replicator".into() };
        let sql = table_ddl(StagingDialect::Postgres, &pg, "db_t");
        assert_eq!(
            sql[1],
            r#"CREATE INDEX IF NOT EXISTS "db_t_key_applied" ON "_replicator"."db_t" (key) INCLUDE (applied)"#
        );
    }
}
