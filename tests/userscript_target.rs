//! `getTX()` and `write()` on a real PostgreSQL transaction: values decoded exactly,
//! SQLSTATE in errors (the cookbook's dead-letter queue catches 23502 for real), savepoints,
//! `columns()`, a rethrown error, and database time not counting against the deadline.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use replicator::script::{Engine, EngineOptions, HostError, Limits, Meta, RowOp};
use replicator::target::postgres::codec::TextParam;
use replicator::target::postgres::{PgScriptHost, Writer};
use replicator::types::{Row, Value};
use serde_json::{Value as Json, json};
use support::PgDatabase;
use tokio_postgres::types::ToSql;

const SCHEMA: &str = "
    CREATE TABLE customers (id INT8 PRIMARY KEY, name TEXT NOT NULL, num_orders INT NOT NULL DEFAULT 0);
    CREATE TABLE orders (id INT8 PRIMARY KEY, customer_id INT8 NOT NULL, total NUMERIC(12,2),
                         note TEXT NOT NULL DEFAULT 'none', code TEXT GENERATED ALWAYS AS (upper(note)) STORED);
    CREATE TABLE replicator_dlq (stmt TEXT, err TEXT);
    CREATE TABLE probe (what TEXT, seen TEXT);
    INSERT INTO customers VALUES (7, 'ann', 0);";

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/userscripts/target_pg.ts")
}

/// A minimal stand-in for the applier (which arrives with the replication core): one INSERT
/// per upsert, in the caller's transaction, with the database's errors passed through.
fn insert_writer(client: Arc<tokio_postgres::Client>, runtime: tokio::runtime::Handle) -> Writer {
    Box::new(move |ops: Vec<RowOp>| {
        for op in ops {
            let Some(data) = op.data else { continue };
            let columns: Vec<&str> = data.keys().map(|k| &**k).collect();
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "INSERT INTO orders ({}) VALUES ({})",
                columns.join(", "),
                placeholders.join(", ")
            );
            let params: Vec<TextParam> = data.values().map(TextParam).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            runtime.block_on(client.execute(&sql, &refs)).map_err(|e| HostError {
                message: e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned()),
                sqlstate: e.code().map(|c| c.code().to_owned()),
            })?;
        }
        Ok(())
    })
}

fn upsert(id: i64, note: Option<&str>) -> RowOp {
    let mut data = Row::default();
    data.insert("id".into(), Value::Number(id.to_string()));
    data.insert("customer_id".into(), Value::Number("7".into()));
    data.insert("total".into(), Value::Number("1234567890.25".into()));
    data.insert("note".into(), note.map_or(Value::Null, |n| Value::String(n.into())));
    RowOp {
        data: Some(data),
        before: None,
        meta: Meta { schema: "db.public".into(), table: "orders".into(), ..Meta::default() },
        pk: vec![id.to_string()],
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    db: PgDatabase,
    client: Arc<tokio_postgres::Client>,
}

impl Fixture {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let db = runtime.block_on(PgDatabase::create());
        let client = Arc::new(runtime.block_on(async {
            let client = db.client().await;
            client.batch_execute(SCHEMA).await.expect("schema");
            client
        }));
        Self { runtime, db, client }
    }

    fn host(&self, table: &str) -> Box<PgScriptHost> {
        Box::new(PgScriptHost::new(
            self.client.clone(),
            self.runtime.handle().clone(),
            &self.db.name,
            "public",
            table,
            insert_writer(self.client.clone(), self.runtime.handle().clone()),
        ))
    }

    fn sql(&self, sql: &str) {
        self.runtime.block_on(self.client.batch_execute(sql)).expect(sql);
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.runtime
            .block_on(self.client.simple_query(sql))
            .expect(sql)
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_owned()).collect())
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn dead_letter_queue_catches_a_real_not_null_violation() {
    let f = Fixture::new();
    let mut engine = Engine::from_file(&script(), EngineOptions::default()).expect("load");
    f.sql("BEGIN");
    let ops = vec![upsert(1, Some("first")), upsert(2, None), upsert(3, Some("third"))];
    let (_, result) = engine.write("orders", &ops, f.host("orders"));
    result.expect("onWrite succeeds: the bad row goes to the DLQ");
    f.sql("COMMIT");

    assert_eq!(
        f.rows("SELECT id, total, code FROM orders ORDER BY id"),
        [["1", "1234567890.25", "FIRST"], ["3", "1234567890.25", "THIRD"],]
    );
    let dlq = f.rows("SELECT stmt, err FROM replicator_dlq");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0][0], "[\"2\"]");
    assert!(
        dlq[0][1].contains("null value in column \"note\"")
            && dlq[0][1].contains("(SQLSTATE 23502)"),
        "{dlq:?}"
    );
    assert_eq!(f.rows("SELECT num_orders FROM customers WHERE id = 7"), [["3"]]);

    let probe = |what: &str| -> Json {
        let rows = f.rows(&format!("SELECT seen FROM probe WHERE what = '{what}'"));
        serde_json::from_str(&rows[0][0]).unwrap_or_else(|_| Json::String(rows[0][0].clone()))
    };
    assert_eq!(
        probe("types"),
        json!(["9007199254740993", "12.50", "héllo", true, "2024-01-02T03:04:05.5Z", {"a": [1, 2.50]},
               null, ["1", "2", "3"], "\\x01ff", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "2024-02-29", "1.5"]),
        "what the script saw, as it saw it"
    );
    assert_eq!(
        probe("columns"),
        json!([
            {"name": "\"id\"", "primary": true, "ignored": false, "type": "BIGINT"},
            {"name": "\"customer_id\"", "primary": false, "ignored": false, "type": "BIGINT"},
            {"name": "\"total\"", "primary": false, "ignored": false, "type": "NUMERIC(12,2)"},
            {"name": "\"note\"", "primary": false, "ignored": false, "type": "TEXT", "defaultExpr": "'none'::text"},
            {"name": "\"code\"", "primary": false, "ignored": true, "type": "TEXT", "defaultExpr": "upper(note)"}
        ])
    );
    assert_eq!(probe("table"), Json::String(format!("\"{}\".\"public\".\"orders\"", f.db.name)));
}

#[test]
fn a_database_error_the_script_rethrows_fails_the_batch_with_its_sqlstate() {
    let f = Fixture::new();
    let mut engine = Engine::from_file(&script(), EngineOptions::default()).expect("load");
    f.sql("BEGIN");
    let (_, result) = engine.write("missing", &[upsert(1, Some("x"))], f.host("missing"));
    let err = result.expect_err("the query fails").to_string();
    f.sql("ROLLBACK");
    assert!(err.contains("relation \"no_such_table\" does not exist (SQLSTATE 42P01)"), "{err}");
    assert!(err.contains("at target_pg.ts:49:"), "{err}");
    // The engine is still usable on a fresh transaction.
    f.sql("BEGIN");
    let (_, result) = engine.write("orders", &[upsert(9, Some("ok"))], f.host("orders"));
    result.expect("next batch");
    f.sql("COMMIT");
    assert_eq!(f.rows("SELECT id FROM orders"), [["9"]]);
}

#[test]
fn time_waiting_on_the_database_is_not_script_time() {
    let f = Fixture::new();
    let limits = Limits { timeout: Duration::from_millis(500), ..Limits::default() };
    let mut engine =
        Engine::from_file(&script(), EngineOptions { limits, ..EngineOptions::default() })
            .expect("load");
    f.sql("BEGIN");
    let (_, result) = engine.write("slow", &[], f.host("slow"));
    f.sql("COMMIT");
    result.expect("0.9s of pg_sleep under a 500ms script deadline");
}
