//! `replicator pglogical` end to end on the real PostgreSQL server: a source database with a
//! publication and a slot, a target database (staging in it), the binary running as a user
//! runs it. Each test has its own databases and slot, so they run in parallel.

mod support;

use std::time::{Duration, Instant};

use support::{
    PgDatabase, RoleGuard, Running, SlotGuard, TempDir, dump, pg_connect, pg_url, unique_name,
};

/// A source and a target database, a publication `pub` of every table and a pgoutput slot.
struct Fixture {
    src: PgDatabase,
    tgt: PgDatabase,
    slot: SlotGuard,
    tmp: TempDir,
}

impl Fixture {
    /// `source_ddl` runs on both databases (the target gets the same tables) and
    /// `target_only` on the target alone.
    async fn new(ddl: &str, target_only: &str) -> Self {
        let src = PgDatabase::create().await;
        let tgt = PgDatabase::create().await;
        let slot = SlotGuard { name: unique_name("slot"), url: src.url.clone() };
        let source = src.client().await;
        source.batch_execute(ddl).await.expect("source ddl");
        source.batch_execute("CREATE PUBLICATION pub FOR ALL TABLES").await.expect("publication");
        source
            .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot.name])
            .await
            .expect("slot");
        let target = tgt.client().await;
        target.batch_execute(ddl).await.expect("target ddl");
        target.batch_execute(target_only).await.expect("target-only ddl");
        Self { src, tgt, slot, tmp: TempDir::new() }
    }

    fn args(&self, source_url: &str) -> Vec<String> {
        [
            "pglogical",
            "--sourceConn",
            source_url,
            "--targetConn",
            &self.tgt.url,
            "--targetSchema",
            &format!("{}.public", self.tgt.name),
            "--slotName",
            &self.slot.name,
            "--publicationName",
            "pub",
            "--stagingSchema",
            "_replicator",
            "--flushPeriod",
            "50ms",
            "--standbyTimeout",
            "200ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts the binary with the fixture's flags plus `extra`; output goes to a log file.
    fn start(&self, extra: &[&str]) -> Running {
        self.start_from(&self.src.url.clone(), extra)
    }

    fn start_from(&self, source_url: &str, extra: &[&str]) -> Running {
        let mut args = self.args(source_url);
        args.extend(extra.iter().map(|s| s.to_string()));
        Running::spawn(&self.tmp, &args)
    }
}

/// Waits until `table` holds the same rows on both sides; panics with the first difference
/// and the log after `within`.
async fn converge(f: &Fixture, run: &Running, table: &str, within: Duration) {
    converge_query(f, run, &format!("SELECT * FROM {table} ORDER BY 1"), within).await;
}

/// [`converge`] over any query run on both sides.
async fn converge_query(f: &Fixture, run: &Running, sql: &str, within: Duration) {
    let (source, target) = (f.src.client().await, f.tgt.client().await);
    let deadline = Instant::now() + within;
    loop {
        let (want, got) = (dump(&source, sql).await, dump(&target, sql).await);
        if want == got {
            return;
        }
        if Instant::now() > deadline {
            let short = |v: Option<&Option<String>>| {
                let text = format!("{v:?}");
                text.chars().take(300).collect::<String>()
            };
            let mut diff = format!("source has {} rows, target {}", want.len(), got.len());
            if let Some((i, (a, b))) = want.iter().zip(&got).enumerate().find(|(_, (a, b))| a != b)
            {
                let j = (0..a.len().max(b.len())).find(|&j| a.get(j) != b.get(j)).unwrap_or(0);
                diff = format!(
                    "first difference: row {i} (key {:?}), column {j}: source {} target {}",
                    a.first(),
                    short(a.get(j)),
                    short(b.get(j))
                );
            }
            panic!("{sql} did not converge within {within:?}: {diff}\nlog:\n{}", run.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `sql` on the target returns `want` (first column of the first row, as text).
async fn wait_for(f: &Fixture, run: &Running, sql: &str, want: &str) {
    let target = f.tgt.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = target.simple_query(sql).await.ok().and_then(|m| {
            m.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
        });
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{sql} gave {got:?}, not {want:?}\nlog:\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const TYPES_DDL: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE kinds (
  id int PRIMARY KEY,
  i2 smallint, i4 int, i8 bigint, num numeric, num_s numeric(12,4),
  f4 real, f8 double precision, b bool,
  t text, vc varchar(20), ch char(5), by bytea,
  j json, jb jsonb,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  u uuid, ia int[], ta text[], m mood, ma mood[], ip inet, money_ numeric(19,2)
);
"#;

/// Every column as the database renders it; `json` compared as a document (replicator writes
/// JSON compactly: whitespace and the exponent's form change, values do not).
const KINDS: &str = "SELECT id, i2, i4, i8, num, num_s, f4, f8, b, t, vc, ch, by, j::jsonb, jb, d, tm, \
    ttz, ts, tstz, iv, u, ia, ta, m, ma, ip, money_ FROM kinds ORDER BY id";

#[tokio::test]
async fn every_type_round_trips_value_by_value() {
    let f = Fixture::new(TYPES_DDL, "").await;
    let mut run = f.start(&["--stagingCreateSchema"]);
    let source = f.src.client().await;
    source
        .batch_execute(
            r#"
INSERT INTO kinds VALUES
 (1, -32768, -2147483648, -9223372036854775808, 123456789012345678901234567890.123456789, 12.3457,
  3.4028235e38, 1.7976931348623157e308, true,
  'plain ascii', 'vc', 'ab', '\x00ff10',
  '{"a": [1, 2.50, {"b": null}], "big": 12345678901234567890}', '{"z": 1, "a": [true, "x"]}',
  '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '1999-12-31 23:59:59.5', '2024-06-01 12:00:00.123456+02',
  '1 year 2 mons 3 days 04:05:06.7',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}', '{"with \"quote\"","comma,here",NULL,""}',
  'happy', '{sad,ok}', '192.168.0.1/24', 1234567.89),
 (2, 32767, 2147483647, 9223372036854775807, -0.000000001, -99999999.9999,
  'NaN', '-Infinity', false,
  'ünïcödé ✓ 日本語 emoji 🎉', '', '     ', '\x',
  '[]', 'null',
  '0001-01-01', '00:00:00', '00:00:00-12', '0001-01-01 00:00:00', 'infinity',
  '-3 days -00:00:01',
  '00000000-0000-0000-0000-000000000000', '{}', '{}', 'sad', '{}', '::1', 0),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 'NaN', 0, 0.1, 0.1, true, E'tab\there\nnewline \\ backslash', 'x', 'x', '\xdeadbeef',
  '{"nested": {"deep": {"deeper": [1e100, -0.0]}}}', '{"k": 1.0}',
  '2262-04-11', '12:34:56', '23:59:59+14', '2262-04-11 23:47:16.854775', '1970-01-01 00:00:00+00',
  '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{-1,0,1}', '{a}', 'ok', '{happy}', '10.0.0.1', -1.01);
"#,
        )
        .await
        .expect("insert");
    converge_query(&f, &run, KINDS, Duration::from_secs(30)).await;
    source
        .batch_execute(
            "UPDATE kinds SET t = 'changed', f8 = 2.5e-300, jb = '{\"new\": [1,2]}', ia = '{7}' WHERE id = 1;
             UPDATE kinds SET i4 = 42 WHERE id = 3;
             DELETE FROM kinds WHERE id = 2;
             UPDATE kinds SET id = 40 WHERE id = 4;",
        )
        .await
        .expect("update");
    converge_query(&f, &run, KINDS, Duration::from_secs(30)).await;
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn keys_toast_and_truncate() {
    let ddl = "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
               CREATE TABLE parent (id int PRIMARY KEY);
               CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent(id));";
    let f = Fixture::new(ddl, "").await;
    let mut run = f.start(&["--stagingCreateSchema", "-v"]);
    let source = f.src.client().await;
    // ~64 kB of barely compressible text: stored out of line (TOAST).
    source
        .batch_execute(
            "INSERT INTO docs SELECT g, 'title ' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 2000) i) FROM generate_series(1, 3) g;
             INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (10, 1), (20, 2);",
        )
        .await
        .expect("insert");
    converge(&f, &run, "docs", Duration::from_secs(30)).await;
    // Updating another column sends the body as "unchanged TOAST": the target keeps it.
    source.batch_execute("UPDATE docs SET title = 'retitled' WHERE id = 2").await.expect("update");
    wait_for(&f, &run, "SELECT title FROM docs WHERE id = 2", "retitled").await;
    converge(&f, &run, "docs", Duration::from_secs(30)).await;
    let target = f.tgt.client().await;
    let body_len: i32 = target
        .query_one("SELECT length(body) FROM docs WHERE id = 2", &[])
        .await
        .expect("len")
        .get(0);
    assert_eq!(body_len, 64_000);

    // A key update leaves no row under the old key, and keeps the unchanged large value
    // (read from the old row on the target), also after an update in the same transaction.
    source.batch_execute("UPDATE docs SET id = 30 WHERE id = 3").await.expect("key update");
    converge(&f, &run, "docs", Duration::from_secs(30)).await;
    source
        .batch_execute(
            "BEGIN; UPDATE docs SET body = (SELECT string_agg(md5('z' || i), '') FROM generate_series(1, 2000) i) WHERE id = 1;
             UPDATE docs SET id = 10 WHERE id = 1; COMMIT;
             ALTER TABLE docs REPLICA IDENTITY FULL; UPDATE docs SET id = 20 WHERE id = 2;",
        )
        .await
        .expect("key updates");
    converge(&f, &run, "docs", Duration::from_secs(30)).await;
    assert!(run.log().contains("carried unchanged TOAST values"), "{}", run.log());
    let old: i64 =
        target.query_one("SELECT count(*) FROM docs WHERE id = 3", &[]).await.expect("old").get(0);
    assert_eq!(old, 0);

    // TRUNCATE without a userscript empties the same-named target tables (children first);
    // what follows in the same transaction still arrives.
    source
        .batch_execute("BEGIN; TRUNCATE child, parent; INSERT INTO parent VALUES (5); COMMIT;")
        .await
        .expect("truncate");
    converge(&f, &run, "parent", Duration::from_secs(30)).await;
    converge(&f, &run, "child", Duration::from_secs(30)).await;
    source.batch_execute("TRUNCATE docs").await.expect("truncate docs");
    converge(&f, &run, "docs", Duration::from_secs(30)).await;
    assert!(run.log().contains("source TRUNCATE applied"), "{}", run.log());
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn a_userscript_filters_renames_and_computes() {
    // The target names a column differently and has a computed column.
    let f = Fixture::new(
        "CREATE TABLE secrets (id int PRIMARY KEY, v text);",
        "CREATE TABLE orders (id int PRIMARY KEY, name text, qty int, price numeric(10,2), total numeric(12,2), \
         doc jsonb, tag text);",
    )
    .await;
    f.src
        .client()
        .await
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, nm text, qty int, price numeric(10,2), doc jsonb);",
        )
        .await
        .expect("source table");
    let script = f.tmp.join("script.ts");
    std::fs::write(
        &script,
        format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{db}.public", {{
  onRowUpsert: (row, meta) => {{
    if (meta.table === "secrets") return null;
    const {{ nm, ...rest }} = row;
    const total = (Number(row.qty) * Number(row.price)).toFixed(2);
    // jsonb reaches the script as a document, whatever form the source's text had.
    const tag = row.doc === null ? null : row.doc.tags[1] + "/" + typeof row.doc.n;
    return {{ ...rest, name: nm, total, tag }};
  }},
  onRowDelete: (row, meta) => (meta.table === "secrets" ? null : row),
}});
"#,
            db = f.tgt.name
        ),
    )
    .expect("script");
    let mut run =
        f.start(&["--stagingCreateSchema", "--userscript", script.to_str().expect("path")]);
    let source = f.src.client().await;
    source
        .batch_execute(
            "INSERT INTO orders VALUES (1, 'apple', 3, 0.50, NULL), \
               (2, 'pear', 2, 1.25, '{\"n\": 7, \"tags\": [\"a\", \"ripe\"]}');
             INSERT INTO secrets VALUES (1, 'hidden');
             UPDATE orders SET qty = 10 WHERE id = 2; DELETE FROM orders WHERE id = 1;
             DELETE FROM secrets WHERE id = 1; INSERT INTO secrets VALUES (2, 'also hidden');",
        )
        .await
        .expect("changes");
    wait_for(
        &f,
        &run,
        "SELECT name || ':' || qty || ':' || total || ':' || tag || ':' || (doc->>'n') FROM orders",
        "pear:10:12.50:ripe/number:7",
    )
    .await;
    let target = f.tgt.client().await;
    let secrets: i64 =
        target.query_one("SELECT count(*) FROM secrets", &[]).await.expect("count").get(0);
    assert_eq!(secrets, 0, "the script filtered secrets out");

    // A truncate with a userscript stops, naming the table and how to go on.
    source.batch_execute("TRUNCATE orders").await.expect("truncate");
    let exited = run.wait_exit(Duration::from_secs(30));
    assert_eq!(exited, Some(false), "must stop with an error\n{}", run.log());
    let log = run.log();
    assert!(log.contains("truncates public.orders"), "{log}");
    assert!(log.contains("pglogical-wal-offset-"), "{log}");
    let rows: i64 = target.query_one("SELECT count(*) FROM orders", &[]).await.expect("n").get(0);
    assert_eq!(rows, 1, "nothing emptied blindly");

    // The way on the message gives works: run its SQL, restart, and replication goes on.
    let start = log.find("INSERT INTO").expect("the SQL to skip it");
    let end = start + log[start..].find(';').expect("end of the SQL");
    target.batch_execute(&log[start..=end]).await.expect("skip the truncate");
    let script_path = script.to_str().expect("path").to_owned();
    let again = f.start(&["--userscript", &script_path]);
    source
        .batch_execute("INSERT INTO orders VALUES (3, 'fig', 1, 2.00, NULL)")
        .await
        .expect("insert");
    wait_for(&f, &again, "SELECT count(*)::text FROM orders", "2").await;
}

#[tokio::test]
async fn kill_9_mid_stream_then_restart_converges() {
    let ddl = "CREATE TABLE events (id int PRIMARY KEY, n int, note text);
               CREATE TABLE counter (id int PRIMARY KEY, n int);";
    let f = Fixture::new(ddl, "").await;
    let source = f.src.client().await;
    source.batch_execute("INSERT INTO counter VALUES (1, 0)").await.expect("counter");
    let mut run = f.start(&["--stagingCreateSchema", "--flushSize", "100"]);
    // A stream of transactions: inserts, updates of earlier rows, deletes, a counter.
    let writer = {
        let url = f.src.url.clone();
        tokio::spawn(async move {
            let c = pg_connect(&url).await;
            for batch in 0..60 {
                let base = batch * 100;
                c.batch_execute(&format!(
                    "BEGIN;
                     INSERT INTO events SELECT g, g % 7, 'note ' || g FROM generate_series({base}, {base} + 99) g;
                     UPDATE events SET n = n + 100 WHERE id % 10 = 0 AND id < {base};
                     DELETE FROM events WHERE id % 13 = 0 AND id < {base};
                     UPDATE counter SET n = n + 1 WHERE id = 1;
                     COMMIT;"
                ))
                .await
                .expect("write");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Kill it while rows are flowing.
    support::wait_for_rows(&f.tgt.client().await, "SELECT count(*) FROM events", 1000, &run).await;
    run.kill9();
    writer.await.expect("writer");
    // The slot may still look active for a moment: the restart retries until it is free.
    let mut again = f.start(&[]);
    converge(&f, &again, "events", Duration::from_secs(60)).await;
    converge(&f, &again, "counter", Duration::from_secs(30)).await;
    wait_for(&f, &again, "SELECT n::text FROM counter", "60").await;
    assert!(again.log().contains("resuming from the stored position"), "{}", again.log());
    assert!(
        again
            .log()
            .contains("took over the lease of a replicator of this host that no longer runs"),
        "the killed process's lease is taken over at once\n{}",
        again.log()
    );
    assert!(again.stop(), "clean stop\n{}", again.log());
}

#[tokio::test]
async fn a_dropped_connection_recovers_and_metrics_are_served() {
    let f = Fixture::new("CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;
    let port = support::changefeed::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = f.start(&["--stagingCreateSchema", "--metricsAddr", &addr]);
    let source = f.src.client().await;
    source.batch_execute("INSERT INTO t VALUES (1, 'before')").await.expect("insert");
    converge(&f, &run, "t", Duration::from_secs(30)).await;

    let (status, body) = support::http_get(&addr, "/_/healthz").await;
    assert_eq!((status, body.trim()), (200, "active"));
    let (status, varz) = support::http_get(&addr, "/_/varz").await;
    assert_eq!(status, 200);
    assert!(varz.contains("pglogical_dial_success_total 1"), "{varz}");
    assert!(varz.contains(r#"mutation_total{source="pglogical",type="upsert"} 1"#), "{varz}");
    assert!(varz.contains("apply_upserts_total"), "{varz}");

    // Cut the replication connection from the server side.
    let terminated: bool = source
        .query_one(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
            &[&f.slot.name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(terminated);
    source.batch_execute("INSERT INTO t VALUES (2, 'after')").await.expect("insert");
    converge(&f, &run, "t", Duration::from_secs(30)).await;
    let log = run.log();
    assert!(log.contains("source unreachable, retrying every"), "{log}");
    assert!(log.contains("source reachable again"), "{log}");
    let (_, varz) = support::http_get(&addr, "/_/varz").await;
    assert!(varz.contains("pglogical_dial_success_total 2"), "{varz}");
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn scram_authentication_and_the_password_never_shows() {
    let f = Fixture::new("CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;
    let role = RoleGuard(unique_name("repl"));
    let password = "s3cr3t-Pa55/word";
    let admin = pg_connect(&pg_url()).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {r} LOGIN REPLICATION PASSWORD '{password}'; GRANT replicator_password_auth TO {r};",
            r = role.0
        ))
        .await
        .expect("role");
    let encoded = "s3cr3t-Pa55%2Fword";
    let url = f.src.url.replacen("postgres@", &format!("{}:{encoded}@", role.0), 1);
    let mut run = f.start_from(&url, &["--stagingCreateSchema", "-v"]);
    f.src.client().await.batch_execute("INSERT INTO t VALUES (1, 'x')").await.expect("insert");
    converge(&f, &run, "t", Duration::from_secs(30)).await;
    assert!(run.stop(), "clean stop\n{}", run.log());
    let log = run.log();
    assert!(!log.contains("s3cr3t") && !log.contains(encoded), "password in the log:\n{log}");

    // A wrong password fails with the server's message, and still shows no password.
    let bad = f.src.url.replacen("postgres@", &format!("{}:wr0ngpw@", role.0), 1);
    let mut failed = f.start_from(&bad, &[]);
    assert_eq!(failed.wait_exit(Duration::from_secs(30)), Some(false));
    let log = failed.log();
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(!log.contains("wr0ngpw"), "{log}");
    drop(role);
}

#[tokio::test]
async fn same_named_tables_in_two_schemas_are_refused_without_a_script() {
    let f = Fixture::new(
        "CREATE SCHEMA archive; CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE archive.t (id int PRIMARY KEY);",
        "",
    )
    .await;
    let mut run = f.start(&["--stagingCreateSchema"]);
    assert_eq!(run.wait_exit(Duration::from_secs(30)), Some(false));
    let log = run.log();
    assert!(log.contains("(archive.t and public.t)"), "{log}");
    assert!(log.contains("route them apart with a --userscript"), "{log}");
}

#[tokio::test]
async fn lost_target_and_staging_connections_are_replaced() {
    let f = Fixture::new("CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;
    let mut run = f.start(&["--stagingCreateSchema"]);
    let source = f.src.client().await;
    source.batch_execute("INSERT INTO t VALUES (1, 'before')").await.expect("insert");
    converge(&f, &run, "t", Duration::from_secs(30)).await;

    // While idle: every session replicator has on the target (writer, staging) is cut; the
    // next rows arrive on new connections.
    let killed = support::pg_terminate_sessions(&f.tgt.name).await;
    assert!(killed >= 2, "replicator's target and staging sessions ({killed})\n{}", run.log());
    source.batch_execute("INSERT INTO t VALUES (2, 'idle')").await.expect("insert");
    converge(&f, &run, "t", Duration::from_secs(30)).await;

    // Mid-stream: cut them again and again while transactions keep coming.
    let writer = tokio::spawn({
        let source = f.src.client().await;
        async move {
            for i in 0..300 {
                let sql = format!("INSERT INTO t VALUES ({}, 'stream')", 100 + i);
                source.batch_execute(&sql).await.expect("insert");
            }
        }
    });
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        support::pg_terminate_sessions(&f.tgt.name).await;
    }
    writer.await.expect("writer");
    source.batch_execute("UPDATE t SET v = 'last' WHERE id = 1").await.expect("update");
    converge(&f, &run, "t", Duration::from_secs(60)).await;
    let log = run.log();
    assert!(log.contains("the target connection was lost; writing on a new one"), "{log}");
    assert!(
        log.contains("the staging connection was lost; saving checkpoints on a new one"),
        "{log}"
    );
    assert!(run.stop(), "clean stop\n{}", run.log());
}

/// Numbers inside JSON keep their exact text through a userscript: unchanged documents
/// byte for byte, changed ones wherever the script left a number as it saw it; a number no
/// double holds reaches the script as a string of its text.
#[tokio::test]
async fn json_numbers_keep_their_exact_text_through_a_userscript() {
    let f = Fixture::new(
        "CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb, note text);
         CREATE TABLE touched (id int PRIMARY KEY, j json, seen text);",
        "",
    )
    .await;
    let script = f.tmp.join("script.ts");
    std::fs::write(
        &script,
        format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{db}.public", {{
  onRowUpsert: (row, meta) => {{
    if (meta.table !== "touched") return {{ ...row, note: "passed" }};
    const j = row.j as any;
    const seen = [typeof j.big, j.big, typeof j.p, j.p, typeof j.e].join(" ");
    return {{ ...row, j: {{ ...j, added: 1 }}, seen }};
  }},
  onRowDelete: (row) => row,
}});
"#,
            db = f.tgt.name
        ),
    )
    .expect("script");
    let mut run =
        f.start(&["--stagingCreateSchema", "--userscript", script.to_str().expect("path")]);
    let source = f.src.client().await;
    source
        .batch_execute(
            r#"INSERT INTO docs VALUES
               (1, '{"big": 12345678901234567890,  "p": 2.50, "e": 1e400}', '{"big": 12345678901234567890, "p": 2.50}', NULL),
               (2, '[1E5, -0.0, 0.1]', '{"e": 1e400}', NULL),
               (3, '12345678901234567890', '2.50', NULL);
               INSERT INTO touched VALUES (1, '{"big": 12345678901234567890, "p": 2.50, "e": 1e400}', NULL);"#,
        )
        .await
        .expect("insert");
    wait_for(&f, &run, "SELECT count(*)::text FROM docs WHERE note = 'passed'", "3").await;
    converge_query(
        &f,
        &run,
        "SELECT id, j::text, jb::text FROM docs ORDER BY id",
        Duration::from_secs(30),
    )
    .await;
    wait_for(&f, &run, "SELECT seen FROM touched", "string 12345678901234567890 number 2.5 string")
        .await;
    wait_for(
        &f,
        &run,
        "SELECT j::text FROM touched",
        r#"{"big":12345678901234567890,"p":2.50,"e":1e400,"added":1}"#,
    )
    .await;
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn a_second_replicator_waits_as_a_standby_takes_over_when_the_first_dies_and_a_lost_lease_stops_applying()
 {
    let f = Fixture::new("CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;
    let mut first = f.start(&["--stagingCreateSchema"]);
    let source = f.src.client().await;
    source.batch_execute("INSERT INTO t VALUES (1, 'a')").await.expect("insert");
    converge(&f, &first, "t", Duration::from_secs(30)).await;

    // The same command again, on the same slot: it waits, and says so.
    let mut second = f.start(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !second.log().contains("standby: another replicator (") {
        assert!(Instant::now() < deadline, "{}", second.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert!(second.log().contains(host.trim()), "names the holder's host\n{}", second.log());
    source.batch_execute("INSERT INTO t VALUES (2, 'b')").await.expect("insert");
    converge(&f, &first, "t", Duration::from_secs(30)).await;
    assert_eq!(second.wait_exit(Duration::from_millis(500)), None, "still waiting");
    assert!(!second.log().contains("holding the lease"), "{}", second.log());

    // The first dies: the standby takes over, resumes from the stored position (PostgreSQL may
    // still report the slot active for a moment) and applies what comes next.
    first.kill9();
    source
        .batch_execute("INSERT INTO t VALUES (3, 'c'); UPDATE t SET v = 'B' WHERE id = 2")
        .await
        .expect("insert");
    converge(&f, &second, "t", Duration::from_secs(60)).await;
    assert!(second.log().contains("took over the lease"), "{}", second.log());
    let mut first = second;

    // Taken away from it, its lease stops it applying: it waits as a standby again while
    // the other holds the lease, and takes it back once the other is gone.
    source.batch_execute("INSERT INTO t VALUES (4, 'd')").await.expect("insert");
    converge(&f, &first, "t", Duration::from_secs(30)).await;
    let target = f.tgt.client().await;
    let taken = target
        .execute(
            "UPDATE _replicator.leases SET nonce = gen_random_uuid(), hostname = 'elsewhere'",
            &[],
        )
        .await
        .expect("take the lease");
    assert_eq!(taken, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first.log().contains("standby: another replicator (elsewhere") {
        assert!(Instant::now() < deadline, "{}", first.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first.log().contains("another replicator took it over"), "{}", first.log());
    source.batch_execute("INSERT INTO t VALUES (5, 'e')").await.expect("insert");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fifth = target.query_opt("SELECT 1 FROM t WHERE id = 5", &[]).await.expect("read");
    assert!(fifth.is_none(), "nothing applied without the lease\n{}", first.log());
    target.batch_execute("DELETE FROM _replicator.leases").await.expect("the other is gone");
    converge(&f, &first, "t", Duration::from_secs(30)).await;
    assert!(first.stop(), "clean stop\n{}", first.log());

    // A clean stop gives the lease up: the next start takes it at once.
    let mut third = f.start(&[]);
    source.batch_execute("INSERT INTO t VALUES (6, 'f')").await.expect("insert");
    converge(&f, &third, "t", Duration::from_secs(30)).await;
    assert!(third.stop(), "clean stop\n{}", third.log());
    let leases: i64 =
        target.query_one("SELECT count(*) FROM _replicator.leases", &[]).await.expect("n").get(0);
    assert_eq!(leases, 0, "released on a clean stop");
}

#[tokio::test]
async fn a_target_that_lacks_what_the_source_sends_is_reported_at_start_all_at_once() {
    let f = Fixture::new(
        "CREATE TABLE kept (id int PRIMARY KEY, v text);",
        "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric, paid int, region text NOT NULL);",
    )
    .await;
    f.src
        .client()
        .await
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric, paid bool, note text);
             CREATE TABLE audit (id int PRIMARY KEY);",
        )
        .await
        .expect("source tables");
    let mut run = f.start(&["--stagingCreateSchema"]);
    assert_eq!(run.wait_exit(Duration::from_secs(30)), Some(false), "{}", run.log());
    let log = run.log();
    assert!(log.contains("is not ready for what the source sends (4 problems)"), "{log}");
    for problem in [
        r#"table "audit" does not exist on the target"#,
        r#"column "paid" is boolean on the source but integer on the target"#,
        r#"table "orders" lacks column "note" that the source sends"#,
        r#"column "region" is NOT NULL without a default"#,
    ] {
        assert!(log.contains(problem), "{problem}\n{log}");
    }

    // With a userscript they are warnings (it may route those rows), but a table it
    // configures must exist.
    let script = f.tmp.join("script.ts");
    let body = |tables: &str| {
        format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{db}.public", {{
  onRowUpsert: (row, meta) => (meta.table === "kept" ? row : null),
  onRowDelete: (row, meta) => (meta.table === "kept" ? row : null),
}});
api.configureTargetTables([{tables}], {{ onRowUpsert: (row) => row, onRowDelete: (key) => key }});
"#,
            db = f.tgt.name
        )
    };
    std::fs::write(&script, body(r#""kept", "missing""#)).expect("script");
    let path = script.to_str().expect("path").to_owned();
    let mut run = f.start(&["--userscript", &path, "--stagingCreateSchema"]);
    assert_eq!(run.wait_exit(Duration::from_secs(30)), Some(false), "{}", run.log());
    assert!(
        run.log().contains(r#"the userscript configures table "missing", which does not exist"#),
        "{}",
        run.log()
    );
    std::fs::write(&script, body(r#""kept""#)).expect("script");
    let mut run = f.start(&["--userscript", &path, "--stagingCreateSchema"]);
    f.src.client().await.batch_execute("INSERT INTO kept VALUES (1, 'x')").await.expect("insert");
    wait_for(&f, &run, "SELECT count(*)::text FROM kept", "1").await;
    let log = run.log();
    assert!(log.contains(r#"table "audit" does not exist on the target"#), "a warning\n{log}");
    assert!(run.stop(), "clean stop\n{log}");
}

#[tokio::test]
async fn a_publication_created_after_the_slot_is_explained() {
    let f = Fixture::new("CREATE TABLE t (id int PRIMARY KEY);", "").await;
    let source = f.src.client().await;
    // A slot from before the publication existed, and a change in between.
    let late = SlotGuard { name: unique_name("slot"), url: f.src.url.clone() };
    source.batch_execute("DROP PUBLICATION pub").await.expect("drop");
    source
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&late.name])
        .await
        .expect("slot");
    source.batch_execute("INSERT INTO t VALUES (1)").await.expect("insert");
    source.batch_execute("CREATE PUBLICATION pub FOR ALL TABLES").await.expect("publication");
    let mut args = f.args(&f.src.url);
    let at = args.iter().position(|a| a == "--slotName").expect("slot flag") + 1;
    args[at] = late.name.clone();
    args.push("--stagingCreateSchema".into());
    let mut run = Running::spawn(&f.tmp, &args);
    assert_eq!(run.wait_exit(Duration::from_secs(30)), Some(false), "{}", run.log());
    let log = run.log();
    assert!(log.contains("before publication \"pub\" was created"), "{log}");
    assert!(log.contains("historic snapshot"), "{log}");
    assert!(log.contains(&format!("pg_drop_replication_slot('{}')", late.name)), "{log}");
}

#[tokio::test]
async fn status_lag_metrics_and_session_names_say_where_replication_stands() {
    let f = Fixture::new("CREATE TABLE t (id int PRIMARY KEY, v text);", "").await;
    let script = f.tmp.join("script.ts");
    std::fs::write(
        &script,
        format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{db}.public", {{
  onRowUpsert: (row) => (row.v === "skip" ? null : row),
  onRowDelete: (row) => row,
}});
"#,
            db = f.tgt.name
        ),
    )
    .expect("script");
    let port = support::changefeed::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = f.start(&[
        "--stagingCreateSchema",
        "--metricsAddr",
        &addr,
        "--userscript",
        script.to_str().expect("path"),
        "--retainedWALWarning",
        "1",
    ]);
    let source = f.src.client().await;
    source
        .batch_execute("INSERT INTO t VALUES (1, 'a'), (2, 'skip'); INSERT INTO t VALUES (3, 'b')")
        .await
        .expect("insert");
    wait_for(&f, &run, "SELECT count(*)::text FROM t", "2").await;

    // Caught up: /_/status says so, with the applied position, and the log line does too.
    let schema = format!("{}.public", f.tgt.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (code, body) = support::http_get(&addr, "/_/status").await;
        assert_eq!(code, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if json["caught_up"] == true && json["applied_position"].is_string() {
            break json;
        }
        assert!(Instant::now() < deadline, "not caught up: {body}\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["source"], "pglogical");
    assert_eq!(status["target_schema"], schema.as_str());
    assert_eq!(status["lag_seconds"], 0.0);
    assert!(status["applied_source_commit"].as_str().is_some_and(|t| t.ends_with('Z')), "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run.log().contains("INFO caught up") {
        assert!(Instant::now() < deadline, "no caught-up line\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = run.log();
    assert!(
        log.contains("userscript loaded")
            && log.contains(&format!("schemas={schema} (replicator@v2)")),
        "{log}"
    );
    assert!(
        log.contains("keeps more WAL for the replication slot than --retainedWALWarning"),
        "{log}"
    );

    // Lags, script counters and the slot's WAL, labelled with the whole target schema.
    let (_, varz) = support::http_get(&addr, "/_/varz").await;
    for line in [
        format!("apply_upserts_total{{schema=\"{schema}\",table=\"t\"}} 2"),
        format!("target_lag_seconds{{schema=\"{schema}\"}}"),
        format!("source_lag_seconds{{schema=\"{schema}\"}}"),
        format!("target_apply_transaction_lag_seconds_count{{schema=\"{schema}\"}} 1"),
        format!("source_lag_seconds_histogram_count{{schema=\"{schema}\"}} 1"),
        format!(
            "script_rows_filtered_total{{function=\"onRowUpsert\",schema=\"{schema}\",table=\"t\"}} 1"
        ),
        format!(
            "script_rows_processed_total{{function=\"onRowUpsert\",schema=\"{schema}\",table=\"t\"}} 2"
        ),
        "pglogical_slot_retained_wal_bytes ".to_owned(),
    ] {
        assert!(varz.contains(&line), "missing {line}\n{varz}");
    }

    // Every session replicator opens says who it is (the test's own are closed first).
    drop(source);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let admin = pg_connect(&pg_url()).await;
    let named: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'replicator'",
            &[&f.tgt.name],
        )
        .await
        .expect("activity")
        .get(0);
    assert!(named >= 3, "target, staging and lease sessions: {named}");
    let unnamed: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1) AND backend_type = 'client backend' \
             AND application_name <> 'replicator' AND pid <> pg_backend_pid()",
            &[&vec![f.tgt.name.clone(), f.src.name.clone()]],
        )
        .await
        .expect("activity")
        .get(0);
    assert_eq!(unnamed, 0, "every session is named");
    let walsender: String = admin
        .query_one("SELECT application_name FROM pg_stat_replication WHERE application_name = 'replicator' LIMIT 1", &[])
        .await
        .expect("the replication session")
        .get(0);
    assert_eq!(walsender, "replicator");
    assert!(run.stop(), "clean stop\n{}", run.log());
}
