//! `replicator script test`: run a userscript over rows from a file, without a database (or
//! with one, for `onWrite`), and print what would be written.
//!
//! Each input line is one mutation; it goes through the schema-level handler, then the
//! table-level handlers of every table it lands in, exactly as the pipeline runs them. Each
//! resulting target operation is one output line, in input order. `--expect` compares the
//! output with a file and shows a diff. Runs are reproducible: the clock is fixed (`--now`),
//! `randomUUID` is seeded (`--seed`).
//!
//! Exit codes: 0 success; 1 `--expect` mismatch; 2 usage or setup error; 3 script error;
//! 4 an invalid input line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::{Map, Value as Json};

use crate::cli::groups::ScriptArgs;
use crate::cli::values::ConnStringParser;
use crate::conn::ConnString;
use crate::conn::Protocol;
use crate::script::{Engine, EngineOptions, Meta, Op, Routed, RowOp, ScriptError, compile_script};
use crate::target::postgres::PgScriptHost;
use crate::types::{Row, Value};

/// Default `--now`.
pub const DEFAULT_NOW: &str = "2024-01-01T00:00:00Z";

use crate::cli::{CodedError as TestFailure, coded as failure};

/// Flags of `replicator script test`.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// Mutations to run, one JSON object per line: {"table", "op", "row", "schema"?, "before"?}
    #[arg(long = "input", value_name = "FILE.ndjson")]
    pub input: PathBuf,

    /// Expected output; exit 1 with a diff when the output differs
    #[arg(long = "expect", value_name = "FILE.ndjson")]
    pub expect: Option<PathBuf>,

    /// Target schema of input lines without "schema" [default: the only one the script configures]
    #[arg(long = "targetSchema", value_name = "SCHEMA")]
    pub target_schema: Option<String>,

    /// Primary key columns of a target table, in key order (repeatable), e.g. orders=id,region
    #[arg(long = "primaryKeys", value_name = "TABLE=COLS")]
    pub primary_keys: Vec<String>,

    /// Target database (PostgreSQL/CockroachDB): reads primary keys, runs onWrite in a rolled-back transaction
    #[arg(long = "targetConn", value_name = "URL", value_parser = ConnStringParser)]
    pub target_conn: Option<ConnString>,

    /// The time scripts see (Date.now(), new Date(), meta.nanos), RFC 3339
    #[arg(long = "now", value_name = "TIME", default_value = DEFAULT_NOW)]
    pub now: String,

    /// Seed of randomUUID(), so its values repeat from run to run
    #[arg(long = "seed", value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Run again whenever the script, its imports, the input or the expected file change
    #[arg(long = "watch")]
    pub watch: bool,

    /// The userscript and its limits (--userscript is required here)
    #[command(flatten)]
    pub script: ScriptArgs,
}

/// `onWrite` operations gathered for one registered table: (schema, table, operations).
type PendingWrites = BTreeMap<String, (String, String, Vec<RowOp>)>;

/// One input line.
struct Input {
    line: usize,
    table: String,
    op: Op,
    row: Row,
    before: Option<Row>,
    schema: Option<String>,
    time: Option<(i128, u32)>,
}

/// Runs `script test` (once, or again on every change with `--watch`).
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    if !args.watch {
        return run_once(args).map_err(Into::into);
    }
    let mut last = None;
    loop {
        let files = watched_files(args);
        let stamp = stamps(&files);
        if last.as_ref() != Some(&stamp) {
            if last.is_some() {
                eprintln!("\n--- change detected, running again ---");
            }
            if let Err(e) = run_once(args) {
                eprintln!("error: {e}");
            }
            // Files written by the run itself (none today) must not trigger another.
            last = Some(stamps(&watched_files(args)));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn watched_files(args: &TestArgs) -> Vec<PathBuf> {
    let mut files = vec![args.input.clone()];
    files.extend(args.expect.clone());
    if let Some(path) = &args.script.userscript {
        files.push(path.clone());
        if let Ok(script) = compile_script(path) {
            files.extend(script.modules.keys().map(|name| script.root.join(name)));
        }
    }
    files
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time (`2024-01-01T00:00:00Z`, with an
/// optional fraction and a `Z` or `+00:00` suffix).
fn parse_now(text: &str) -> Result<i128, String> {
    let bad = || format!("--now {text:?}: write an RFC 3339 UTC time, e.g. {DEFAULT_NOW}");
    let t = text.trim();
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00")).ok_or_else(bad)?;
    let (date, time) = t.split_once('T').ok_or_else(bad)?;
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (secs, frac) = time.split_once('.').unwrap_or((time, ""));
    let h: Vec<&str> = secs.split(':').collect();
    if d.len() != 3 || h.len() != 3 || frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let days = crate::types::civil::days_from_civil(y, m, day);
    let seconds = days * 86_400 + num(h[0])? * 3600 + num(h[1])? * 60 + num(h[2])?;
    let nanos = if frac.is_empty() { 0 } else { num(&format!("{frac:0<9}"))? };
    Ok(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

fn read_input(path: &Path) -> Result<Vec<Input>, TestFailure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| failure(2, format!("cannot read --input {}: {e}", path.display())))?;
    let mut inputs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |what: String| failure(4, format!("{}:{line}: {what}", path.display()));
        // Numbers keep their text as written (`1e400`, `2.50`), as a source's would.
        let json: Json = match crate::types::json::parse(raw) {
            Some(json) => json,
            None => serde_json::from_str(raw).map_err(|e| bad(format!("not JSON: {e}")))?,
        };
        let Json::Object(mut obj) = json else {
            return Err(bad("expected an object like {\"table\": \"orders\", \"op\": \"upsert\", \"row\": {...}}".into()));
        };
        let table = match obj.remove("table") {
            Some(Json::String(t)) if !t.is_empty() => t,
            _ => return Err(bad("\"table\" must be the source table's name".into())),
        };
        let op = match obj.remove("op").as_ref().and_then(Json::as_str) {
            Some("upsert") => Op::Upsert,
            Some("delete") => Op::Delete,
            _ => return Err(bad("\"op\" must be \"upsert\" or \"delete\"".into())),
        };
        let to_row = |v: Json, field: &str| -> Result<Row, TestFailure> {
            match v {
                Json::Object(map) => {
                    Ok(map.into_iter().map(|(k, v)| (k.into(), Value::from_json(v))).collect())
                }
                _ => Err(bad(format!("\"{field}\" must be an object of column values"))),
            }
        };
        let row =
            to_row(obj.remove("row").ok_or_else(|| bad("\"row\" is missing".into()))?, "row")?;
        let before = match obj.remove("before") {
            None | Some(Json::Null) => None,
            Some(v) => Some(to_row(v, "before")?),
        };
        let schema = match obj.remove("schema") {
            None => None,
            Some(Json::String(s)) => Some(s),
            Some(_) => return Err(bad("\"schema\" must be a string like \"db.public\"".into())),
        };
        let int = |v: Option<Json>, field: &str| -> Result<Option<i128>, TestFailure> {
            match v {
                None => Ok(None),
                Some(Json::Number(n)) => n
                    .to_string()
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(format!("\"{field}\" must be an integer"))),
                Some(Json::String(s)) => {
                    s.parse().map(Some).map_err(|_| bad(format!("\"{field}\" must be an integer")))
                }
                Some(_) => Err(bad(format!("\"{field}\" must be an integer"))),
            }
        };
        let nanos = int(obj.remove("nanos"), "nanos")?;
        let logical = int(obj.remove("logical"), "logical")?;
        if let Some(key) = obj.keys().next() {
            return Err(bad(format!(
                "unknown field \"{key}\" (fields: table, op, row, schema, before, nanos, logical)"
            )));
        }
        let time = nanos.map(|n| (n, u32::try_from(logical.unwrap_or(0)).unwrap_or(0)));
        inputs.push(Input { line, table, op, row, before, schema, time });
    }
    Ok(inputs)
}

fn parse_primary_keys(specs: &[String]) -> Result<HashMap<String, Vec<String>>, TestFailure> {
    let mut keys = HashMap::new();
    for spec in specs {
        let (table, cols) = spec.split_once('=').ok_or_else(|| {
            failure(2, format!("--primaryKeys {spec:?}: write TABLE=COL1,COL2, e.g. --primaryKeys orders=id,region"))
        })?;
        let cols: Vec<String> =
            cols.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect();
        if table.is_empty() || cols.is_empty() {
            return Err(failure(2, format!("--primaryKeys {spec:?}: write TABLE=COL1,COL2")));
        }
        keys.insert(table.to_owned(), cols);
    }
    Ok(keys)
}

fn row_json(row: &Row) -> Json {
    Json::Object(row.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect())
}

fn script_failure(e: ScriptError) -> TestFailure {
    failure(3, e.to_string())
}

/// A connection to the target for introspection and onWrite.
struct Target {
    runtime: tokio::runtime::Runtime,
    client: Arc<tokio_postgres::Client>,
    database: String,
}

impl Target {
    fn connect(conn: &ConnString) -> Result<Self, TestFailure> {
        if conn.protocol() != Some(Protocol::Postgres) {
            return Err(failure(
                2,
                format!(
                    "--targetConn {conn}: script test reads PostgreSQL/CockroachDB targets (postgres://) so far"
                ),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| failure(2, e.to_string()))?;
        let client = runtime.block_on(crate::conn::postgres::connect(conn)).map_err(|e| {
            failure(2, format!("cannot reach --targetConn: {}", crate::error::with_causes(&e)))
        })?;
        let database = runtime
            .block_on(crate::target::postgres::introspect::current_database(&client))
            .map_err(|e| failure(2, format!("--targetConn {conn}: {e}")))?;
        Ok(Self { runtime, client: Arc::new(client), database })
    }

    /// Primary key columns of `schema.table` (the schema part of `db.schema`), in key order.
    fn primary_key(&self, schema: &str, table: &str) -> Result<Vec<String>, TestFailure> {
        let schema = schema.rsplit('.').next().unwrap_or(schema);
        self.runtime
            .block_on(crate::target::postgres::introspect::primary_key(
                &*self.client,
                schema,
                table,
            ))
            .map_err(|e| failure(2, format!("reading the primary key of {schema}.{table}: {e}")))
    }
}

fn run_once(args: &TestArgs) -> Result<(), TestFailure> {
    let path = args
        .script
        .userscript
        .clone()
        .ok_or_else(|| failure(2, "script test needs --userscript FILE.ts"))?;
    let limits = args.script.limits().map_err(|e| failure(2, e.to_string()))?;
    let now = parse_now(&args.now).map_err(|e| failure(2, e))?;
    let mut primary_keys = parse_primary_keys(&args.primary_keys)?;
    let inputs = read_input(&args.input)?;
    let expected = match &args.expect {
        None => None,
        Some(path) => Some(read_expected(path)?),
    };
    let target = args.target_conn.as_ref().map(Target::connect).transpose()?;

    let script = Arc::new(compile_script(&path).map_err(|e| failure(3, e.to_string()))?);
    let options = EngineOptions {
        limits,
        known_flags: Vec::new(),
        fixed_clock_ms: i64::try_from(now.div_euclid(1_000_000)).ok(),
        uuid_seed: Some(args.seed),
    };
    let mut engine = Engine::new(script, options).map_err(script_failure)?;
    let configured = engine.configured().clone();
    let default_schema = match &args.target_schema {
        Some(s) => Some(s.clone()),
        None if configured.schemas.len() == 1 => Some(configured.schemas[0].0.clone()),
        None => None,
    };

    let mut out: Vec<Json> = Vec::new();
    let mut rows_out: BTreeMap<String, usize> = BTreeMap::new();
    let (mut dropped, mut writes): (usize, PendingWrites) = (0, BTreeMap::new());
    for input in &inputs {
        let at = |message: String| {
            failure(3, format!("{}:{}: {message}", args.input.display(), input.line))
        };
        let schema = input.schema.clone().or_else(|| default_schema.clone()).ok_or_else(|| {
            failure(2, format!(
                "{}:{}: which target schema? the script configures {} schemas: add \"schema\" to the line or pass --targetSchema",
                args.input.display(), input.line, configured.schemas.len()
            ))
        })?;
        let time = input.time.unwrap_or((now, 0));
        let meta = Meta {
            schema: schema.clone(),
            table: input.table.clone(),
            source: None,
            time: Some(time),
            before: input.before.clone(),
        };
        let routed = if configured.schema(&schema).is_some() {
            engine
                .schema_rows(&schema, input.op, &[(input.row.clone(), meta)])
                .map_err(|e| at(e.to_string()))?
                .remove(0)
        } else {
            Routed::Rows(vec![(input.table.clone(), input.row.clone())])
        };
        let Routed::Rows(rows) = routed else {
            dropped += 1;
            continue;
        };
        if rows.is_empty() {
            dropped += 1;
        }
        for (table, row) in rows {
            let table_meta = Meta {
                schema: schema.clone(),
                table: table.clone(),
                source: None,
                time: Some(time),
                before: None,
            };
            let config = configured.table(&schema, &table).cloned();
            let pk = match primary_keys.get(&table) {
                Some(pk) => Some(pk.clone()),
                None => match &target {
                    Some(t) => {
                        let pk = t.primary_key(&schema, &table)?;
                        if pk.is_empty() {
                            return Err(failure(
                                2,
                                format!(
                                    "{}:{}: table {table:?} has no primary key in the target (or does not exist)",
                                    args.input.display(),
                                    input.line
                                ),
                            ));
                        }
                        primary_keys.insert(table.clone(), pk.clone());
                        Some(pk)
                    }
                    None => None,
                },
            };
            let mut line = Map::new();
            line.insert("schema".into(), Json::String(schema.clone()));
            line.insert("table".into(), Json::String(table.clone()));
            match input.op {
                Op::Upsert => {
                    let final_row = match &config {
                        Some(c) if c.upsert => engine
                            .table_upserts(&c.name, &[(row, table_meta.clone())])
                            .map_err(|e| at(e.to_string()))?
                            .remove(0),
                        _ => Some(row),
                    };
                    let Some(final_row) = final_row else {
                        dropped += 1;
                        continue;
                    };
                    line.insert("op".into(), Json::String("upsert".into()));
                    line.insert("row".into(), row_json(&final_row));
                    if let Some(c) = config.as_ref().filter(|c| c.write) {
                        let key = pk
                            .as_ref()
                            .map(|pk| key_of(&final_row, pk))
                            .transpose()
                            .map_err(at)?
                            .unwrap_or_default();
                        writes
                            .entry(c.name.clone())
                            .or_insert_with(|| (schema.clone(), table.clone(), Vec::new()))
                            .2
                            .push(RowOp {
                                data: Some(final_row.clone()),
                                before: input.before.clone(),
                                meta: table_meta.clone(),
                                pk: key,
                            });
                    }
                }
                Op::Delete => {
                    let key = match &pk {
                        Some(pk) => Some(key_of(&row, pk).map_err(at)?),
                        None => None,
                    };
                    let key = match (&config, key) {
                        (Some(c), key) if c.delete => {
                            let Some(key) = key else {
                                return Err(failure(
                                    2,
                                    format!(
                                        "{}:{}: table {table:?} has a table-level delete handler, which receives primary key values: \
                                     pass --primaryKeys {table}=COL1,COL2 (in key order) or --targetConn",
                                        args.input.display(),
                                        input.line
                                    ),
                                ));
                            };
                            match engine
                                .table_deletes(&c.name, &[(key, table_meta.clone())])
                                .map_err(|e| at(e.to_string()))?
                                .remove(0)
                            {
                                Some(key) => Some(key),
                                None => {
                                    dropped += 1;
                                    continue;
                                }
                            }
                        }
                        (_, key) => key,
                    };
                    line.insert("op".into(), Json::String("delete".into()));
                    line.insert("row".into(), row_json(&row));
                    if let Some(key) = &key {
                        line.insert(
                            "key".into(),
                            Json::Array(key.iter().cloned().map(Json::String).collect()),
                        );
                    }
                    if let Some(c) = config.as_ref().filter(|c| c.write) {
                        writes
                            .entry(c.name.clone())
                            .or_insert_with(|| (schema.clone(), table.clone(), Vec::new()))
                            .2
                            .push(RowOp {
                                data: None,
                                before: input.before.clone(),
                                meta: table_meta.clone(),
                                pk: key.unwrap_or_default(),
                            });
                    }
                }
            }
            *rows_out.entry(table.clone()).or_default() += 1;
            out.push(Json::Object(line));
        }
    }

    {
        let mut stdout = std::io::stdout().lock();
        for line in &out {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    for (name, (schema, table, ops)) in &writes {
        match &target {
            None => eprintln!(
                "onWrite for table {name:?} ({} rows): not run (needs --targetConn)",
                ops.len()
            ),
            Some(t) => run_write(&mut engine, t, name, schema, table, ops)?,
        }
    }
    let per_table: Vec<String> = rows_out.iter().map(|(t, n)| format!("{t} {n}")).collect();
    eprintln!(
        "rows in: {}, rows out: {} ({}), rows dropped: {dropped}",
        inputs.len(),
        out.len(),
        if per_table.is_empty() { "none".into() } else { per_table.join(", ") }
    );
    if let (Some(expected), Some(path)) = (expected, &args.expect) {
        if let Some(diff) = diff(&expected, &out) {
            eprintln!("{diff}");
            return Err(failure(1, format!("the output differs from {}", path.display())));
        }
        eprintln!("output matches {}", path.display());
    }
    Ok(())
}

/// The primary key values of a row, in key order.
fn key_of(row: &Row, pk: &[String]) -> Result<Vec<String>, String> {
    pk.iter()
        .map(|col| match row.get(col.as_str()).and_then(Value::as_key_text) {
            Some(v) => Ok(v),
            None => Err(format!(
                "the row {} has no value for primary key column {col:?}",
                row_json(row)
            )),
        })
        .collect()
}

fn read_expected(path: &Path) -> Result<Vec<Json>, TestFailure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| failure(2, format!("cannot read --expect {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match crate::types::json::parse(l) {
            Some(json) => Ok(json),
            None => serde_json::from_str(l)
                .map_err(|e| failure(2, format!("{}:{}: not JSON: {e}", path.display(), i + 1))),
        })
        .collect()
}

/// A readable line diff, or `None` when equal.
fn diff(expected: &[Json], got: &[Json]) -> Option<String> {
    if expected == got {
        return None;
    }
    let mut text = String::from("--expect mismatch (- expected, + got):\n");
    for i in 0..expected.len().max(got.len()) {
        match (expected.get(i), got.get(i)) {
            (Some(e), Some(g)) if e == g => {}
            (e, g) => {
                let _ = writeln!(text, "line {}:", i + 1);
                if let Some(e) = e {
                    let _ = writeln!(text, "- {e}");
                }
                if let Some(g) = g {
                    let _ = writeln!(text, "+ {g}");
                }
            }
        }
    }
    Some(text)
}

/// Runs one table's onWrite in a transaction that is rolled back, writing with a
/// row-at-a-time upsert/delete (the batched applier arrives with the replication core).
fn run_write(
    engine: &mut Engine,
    target: &Target,
    name: &str,
    schema: &str,
    table: &str,
    ops: &[RowOp],
) -> Result<(), TestFailure> {
    let pg_schema = schema.rsplit('.').next().unwrap_or(schema).to_owned();
    let pk = target.primary_key(schema, table)?;
    let runtime = target.runtime.handle().clone();
    let result = crate::target::postgres::rolled_back(&target.client, &runtime, || {
        let writer = crate::target::postgres::row_writer(
            target.client.clone(),
            runtime.clone(),
            &pg_schema,
            table,
            pk,
        );
        let host = PgScriptHost::new(
            target.client.clone(),
            runtime.clone(),
            &target.database,
            &pg_schema,
            table,
            writer,
        );
        engine.write(name, ops, Box::new(host)).1
    })
    .map_err(|e| failure(2, e.to_string()))?;
    result.map_err(script_failure)?;
    eprintln!(
        "onWrite for table {name:?} ({} rows): ran against --targetConn, rolled back",
        ops.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_parses_rfc3339_utc() {
        assert_eq!(parse_now("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_now("2024-01-01T00:00:00Z"), Ok(1_704_067_200_000_000_000));
        assert_eq!(parse_now("2024-02-29T12:30:15.25+00:00"), Ok(1_709_209_815_250_000_000));
        for bad in ["2024-01-01", "2024-01-01T00:00:00", "2024-13-01T00:00:00Z", "noon"] {
            assert!(parse_now(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn primary_key_specs() {
        let keys = parse_primary_keys(&["orders=id,region".into(), "t=a".into()]).expect("valid");
        assert_eq!(keys["orders"], ["id", "region"]);
        assert!(parse_primary_keys(&["orders".into()]).is_err());
        assert!(parse_primary_keys(&["=id".into()]).is_err());
    }

    #[test]
    fn diff_names_the_lines() {
        let a = vec![serde_json::json!({"a": 1}), serde_json::json!({"b": 2})];
        let b = vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"b": 3}),
            serde_json::json!({"c": 4}),
        ];
        assert_eq!(diff(&a, &a), None);
        let text = diff(&a, &b).expect("differs");
        assert!(text.contains("line 2:\n- {\"b\":2}\n+ {\"b\":3}\nline 3:\n+ {\"c\":4}"), "{text}");
    }
}
