//! Golden tests of the userscript runtime: each `tests/userscripts/*.json` names a script and
//! a sequence of calls with the outputs (or the error) each must produce. All steps of one
//! file run on one engine, in order: state persists, and a failing step must leave the engine
//! usable for the next.
//!
//! Step kinds (one key picks the kind):
//! - `{"schema": "db.public", "op": "upsert"|"delete", "rows": [{"table", "row", "before"?}], "expect": [...]}`
//!   — expect, per row: `null` (dropped) or `[[table, row], …]`.
//! - `{"table": "orders", "op": "upsert", "rows": [row, …], "expect": [row | null, …]}`
//! - `{"table": "orders", "op": "delete", "keys": [["1"], …], "expect": [key | null, …]}`
//! - `{"write": "orders", "ops": [{"action", "data"?, "pk"}], "queryRows": [[…]], "expect": [host calls]}`
//!   — runs onWrite against a recording host (the applier arrives with the replication
//!   core; getTX against a real database is tested in `userscript_target.rs`).
//! - any step may have `"error": "substring"` instead of `expect`, and `"logs": ["substring", …]`.
//!
//! File-level keys: `script`, `loadError` (the load must fail with this), `timeout`,
//! `maxMemory`, `knownFlags`, `options` (expected setOptions calls), `configured`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use replicator::script::{
    Engine, EngineOptions, HostError, Limits, Meta, Op, Routed, RowOp, SourceTag, TargetColumn,
    WriteHost,
};
use replicator::types::duration;
use replicator::types::{Row, Value};
use serde_json::{Value as Json, json};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/userscripts")
}

fn row_from(json: &Json) -> Row {
    let Json::Object(map) = json else { panic!("a row is an object: {json}") };
    map.iter().map(|(k, v)| (k.as_str().into(), Value::from_json(v.clone()))).collect()
}

fn row_to(row: &Row) -> Json {
    Json::Object(row.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect())
}

fn meta(schema: &str, table: &str, before: Option<Row>) -> Meta {
    Meta {
        schema: schema.to_owned(),
        table: table.to_owned(),
        source: Some(SourceTag::PgLogical),
        time: Some((1_700_000_000_123_456_789, 7)),
        before,
    }
}

/// Records what onWrite asks of the target.
#[derive(Clone, Default)]
struct RecordingHost {
    calls: Arc<Mutex<Vec<Json>>>,
    query_rows: Vec<Vec<Value>>,
}

impl WriteHost for RecordingHost {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, HostError> {
        let params: Vec<Json> = params.iter().map(Value::to_json).collect();
        self.calls.lock().expect("lock").push(json!({"query": sql, "params": params}));
        if sql.contains("fail") {
            return Err(HostError {
                message: "null value in column \"x\"".into(),
                sqlstate: Some("23502".into()),
            });
        }
        Ok(self.query_rows.clone())
    }
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<(), HostError> {
        let params: Vec<Json> = params.iter().map(Value::to_json).collect();
        self.calls.lock().expect("lock").push(json!({"exec": sql, "params": params}));
        Ok(())
    }
    fn columns(&mut self) -> Result<Vec<TargetColumn>, HostError> {
        Ok(vec![
            TargetColumn {
                name: "\"id\"".into(),
                primary: true,
                ignored: false,
                type_name: "INT8".into(),
                default_expr: None,
            },
            TargetColumn {
                name: "\"note\"".into(),
                primary: false,
                ignored: false,
                type_name: "TEXT".into(),
                default_expr: Some("'x'".into()),
            },
        ])
    }
    fn schema(&self) -> String {
        "\"db\".\"public\"".into()
    }
    fn table(&self) -> String {
        "\"db\".\"public\".\"orders\"".into()
    }
    fn write(&mut self, ops: Vec<RowOp>) -> Result<(), HostError> {
        let ops: Vec<Json> = ops
            .iter()
            .map(|op| json!({"action": op.action(), "data": op.data.as_ref().map(row_to), "pk": op.pk, "table": op.meta.table}))
            .collect();
        self.calls.lock().expect("lock").push(json!({"write": ops}));
        Ok(())
    }
}

/// Captures log lines (all levels) while the engine runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().expect("lock"))).expect("utf-8")
    }
}

fn check_error(what: &str, got: Result<Json, String>, step: &Json) {
    match (got, step.get("error").and_then(Json::as_str)) {
        (Ok(out), None) => assert_eq!(out, step["expect"], "{what}: output differs"),
        (Err(e), Some(want)) => assert!(e.contains(want), "{what}: error {e:?} lacks {want:?}"),
        (Ok(out), Some(want)) => panic!("{what}: expected an error containing {want:?}, got {out}"),
        (Err(e), None) => panic!("{what}: unexpected error: {e}"),
    }
}

fn run_golden(file: &Path) {
    let spec: Json =
        serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("golden JSON");
    let label = file.file_name().expect("name").to_string_lossy().into_owned();
    let script = dir().join(spec["script"].as_str().expect("script"));
    let mut limits = Limits::default();
    if let Some(t) = spec["timeout"].as_str() {
        limits.timeout = duration::parse(t).expect("timeout");
    }
    if let Some(m) = spec["maxMemory"].as_u64() {
        limits.max_memory = usize::try_from(m).expect("size");
    }
    let known_flags = spec["knownFlags"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let loaded = Engine::from_file(
            &script,
            EngineOptions { limits, known_flags, ..EngineOptions::default() },
        );
        if let Some(want) = spec["loadError"].as_str() {
            let err = loaded.expect_err(&format!("{label}: load should fail")).to_string();
            assert!(err.contains(want), "{label}: load error {err:?} lacks {want:?}");
            return;
        }
        let mut engine = loaded.unwrap_or_else(|e| panic!("{label}: {e}"));
        if let Some(options) = spec.get("options") {
            let got: Vec<Json> =
                engine.configured().options.iter().map(|(k, v)| json!([k, v])).collect();
            assert_eq!(Json::Array(got), *options, "{label}: setOptions");
        }
        if let Some(configured) = spec.get("configured") {
            let c = engine.configured();
            let got = json!({
                "schemas": c.schemas.iter().map(|(n, a)| json!([n, a.to_string()])).collect::<Vec<_>>(),
                "tables": c.tables.iter().map(|t| json!([t.name, t.api.to_string(), t.upsert, t.delete, t.write])).collect::<Vec<_>>(),
            });
            assert_eq!(got, *configured, "{label}: configured");
        }
        let load_logs = logs.take();
        if let Some(want) = spec.get("loadLogs").and_then(Json::as_array) {
            for w in want {
                let w = w.as_str().expect("string");
                assert!(load_logs.contains(w), "{label}: load logs lack {w:?}:\n{load_logs}");
            }
        }
        for (n, step) in spec["steps"].as_array().expect("steps").iter().enumerate() {
            let what = format!("{label} step {}", n + 1);
            let op = if step["op"] == "delete" { Op::Delete } else { Op::Upsert };
            let got: Result<Json, String> = if let Some(schema) = step["schema"].as_str() {
                let rows: Vec<(Row, Meta)> = step["rows"]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .map(|r| {
                        let before = r.get("before").map(row_from);
                        (
                            row_from(&r["row"]),
                            meta(schema, r["table"].as_str().expect("table"), before),
                        )
                    })
                    .collect();
                engine.schema_rows(schema, op, &rows).map_err(|e| e.to_string()).map(|out| {
                    Json::Array(
                        out.iter()
                            .map(|r| match r {
                                Routed::Dropped => Json::Null,
                                Routed::Rows(rows) => Json::Array(
                                    rows.iter().map(|(t, row)| json!([t, row_to(row)])).collect(),
                                ),
                            })
                            .collect(),
                    )
                })
            } else if let Some(table) = step["table"].as_str() {
                // Handlers see the target table's own name, whatever form registered them.
                let bare = table.rsplit('.').next().unwrap_or(table);
                if op == Op::Upsert {
                    let rows: Vec<(Row, Meta)> = step["rows"]
                        .as_array()
                        .expect("rows")
                        .iter()
                        .map(|r| (row_from(r), meta("db.public", bare, None)))
                        .collect();
                    engine.table_upserts(table, &rows).map_err(|e| e.to_string()).map(|out| {
                        Json::Array(
                            out.iter().map(|r| r.as_ref().map_or(Json::Null, row_to)).collect(),
                        )
                    })
                } else {
                    let keys: Vec<(Vec<String>, Meta)> = step["keys"]
                        .as_array()
                        .expect("keys")
                        .iter()
                        .map(|k| {
                            let key = k
                                .as_array()
                                .expect("key")
                                .iter()
                                .map(|v| v.as_str().expect("text").to_owned())
                                .collect();
                            (key, meta("db.public", bare, None))
                        })
                        .collect();
                    engine.table_deletes(table, &keys).map_err(|e| e.to_string()).map(|out| {
                        Json::Array(
                            out.iter()
                                .map(|k| k.as_ref().map_or(Json::Null, |k| json!(k)))
                                .collect(),
                        )
                    })
                }
            } else if let Some(table) = step["write"].as_str() {
                let ops: Vec<RowOp> = step["ops"]
                    .as_array()
                    .expect("ops")
                    .iter()
                    .map(|o| RowOp {
                        data: o.get("data").map(row_from),
                        before: None,
                        meta: meta("db.public", table, None),
                        pk: o["pk"]
                            .as_array()
                            .expect("pk")
                            .iter()
                            .map(|v| v.as_str().expect("text").to_owned())
                            .collect(),
                    })
                    .collect();
                let host = RecordingHost {
                    query_rows: step
                        .get("queryRows")
                        .and_then(Json::as_array)
                        .map(|rows| {
                            rows.iter()
                                .map(|r| {
                                    r.as_array()
                                        .expect("row")
                                        .iter()
                                        .cloned()
                                        .map(Value::from_json)
                                        .collect()
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    ..RecordingHost::default()
                };
                let calls = host.calls.clone();
                let (_, result) = engine.write(table, &ops, Box::new(host));
                result
                    .map_err(|e| e.to_string())
                    .map(|()| Json::Array(calls.lock().expect("lock").clone()))
            } else {
                panic!("{what}: unknown step kind: {step}");
            };
            check_error(&what, got, step);
            let step_logs = logs.take();
            for want in step.get("logs").and_then(Json::as_array).into_iter().flatten() {
                let want = want.as_str().expect("string");
                assert!(step_logs.contains(want), "{what}: logs lack {want:?}:\n{step_logs}");
            }
            for unwanted in step.get("noLogs").and_then(Json::as_array).into_iter().flatten() {
                let unwanted = unwanted.as_str().expect("string");
                assert!(
                    !step_logs.contains(unwanted),
                    "{what}: logs hold {unwanted:?}:\n{step_logs}"
                );
            }
        }
    });
}

#[test]
fn golden_userscripts() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/userscripts")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "golden files: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        if let Err(panic) = std::panic::catch_unwind(|| run_golden(file)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
