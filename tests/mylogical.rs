//! `replicator mylogical` end to end: the real MariaDB server's binlog into a real PostgreSQL
//! target database (staging in it), the binary run as a user runs it. Each test has its own
//! source and target databases and starts at the binlog position after its own DDL, so tests
//! run in parallel (each replicates only its own database).

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::{MyDatabase, PgDatabase, Running, TempDir, dump, mysql_url, unique_name};

struct Fixture {
    src: MyDatabase,
    tgt: PgDatabase,
    tmp: TempDir,
    /// `@@gtid_binlog_pos` once the source tables exist.
    start: String,
    /// The replica server id: unique per test, as tests stream at the same time.
    server_id: u32,
}

impl Fixture {
    async fn new(source_ddl: &[&str], target_ddl: &str) -> Self {
        let src = MyDatabase::create().await;
        let tgt = PgDatabase::create().await;
        let mut conn = src.conn().await;
        for statement in source_ddl {
            conn.query_drop(*statement).await.expect("source ddl");
        }
        let start: String =
            conn.query_first("SELECT @@gtid_binlog_pos").await.expect("pos").unwrap_or_default();
        tgt.client().await.batch_execute(target_ddl).await.expect("target ddl");
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let server_id = 1000 + (std::process::id() % 100_000) * 100 + n;
        Self { src, tgt, tmp: TempDir::new(), start, server_id }
    }

    /// The source in MOLT's form: `mysql://root@tcp(127.0.0.1:3306)/db`.
    fn molt_url(&self) -> String {
        let server = mysql_url();
        let (scheme_user, host) = server.rsplit_once('@').expect("user@host");
        format!("{scheme_user}@tcp({host})/{}", self.src.name)
    }

    fn args(&self, source: &str) -> Vec<String> {
        [
            "mylogical",
            "--sourceConn",
            source,
            "--targetConn",
            &self.tgt.url,
            "--targetSchema",
            &format!("{}.public", self.tgt.name),
            "--stagingSchema",
            "_replicator",
            "--flushPeriod",
            "50ms",
            "--replicationProcessID",
            &self.server_id.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// First run: from the position after the DDL, creating staging.
    fn start(&self, extra: &[&str]) -> Running {
        let mut args = self.args(&self.molt_url());
        args.extend([
            "--defaultGTIDSet".into(),
            self.start.clone(),
            "--stagingCreateSchema".into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Running::spawn(&self.tmp, &args)
    }

    /// A later run: no --defaultGTIDSet, no --stagingCreateSchema.
    fn restart(&self, extra: &[&str]) -> Running {
        let mut args = self.args(&self.molt_url());
        args.extend(extra.iter().map(|s| s.to_string()));
        Running::spawn(&self.tmp, &args)
    }

    async fn source(&self, sql: &str) {
        let mut conn = self.src.conn().await;
        conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Waits until `sql` on the target returns exactly `want`; panics with both and the log.
    async fn expect_rows(&self, run: &Running, sql: &str, want: &[&[Option<&str>]]) {
        let target = self.tgt.client().await;
        let want: Vec<Vec<Option<String>>> =
            want.iter().map(|row| row.iter().map(|v| v.map(str::to_owned)).collect()).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = dump(&target, sql).await;
            if got == want {
                return;
            }
            if Instant::now() > deadline {
                panic!("{sql}\n got: {got:?}\nwant: {want:?}\nlog:\n{}", run.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the source and target answer `sql` alike (a count, a sum).
    async fn converge(&self, run: &Running, source_sql: &str, target_sql: &str) {
        let mut conn = self.src.conn().await;
        let target = self.tgt.client().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let want: Option<String> = conn.query_first(source_sql).await.expect("source");
            let got = dump(&target, target_sql).await;
            let got = got.first().and_then(|r| r.first().cloned()).flatten();
            if want == got {
                return;
            }
            if Instant::now() > deadline {
                panic!("{target_sql}: source {want:?}, target {got:?}\nlog:\n{}", run.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn wait_for_log(run: &Running, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.log().contains(text) {
        assert!(Instant::now() < deadline, "no {text:?} in the log:\n{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TYPES_SOURCE: &str = "CREATE TABLE types (
    id INT PRIMARY KEY,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED, i INT, bi BIGINT,
    bu BIGINT UNSIGNED, de DECIMAL(38,10), fl FLOAT, db DOUBLE,
    d DATE, t TIME(3), dt DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR,
    c CHAR(5), vl VARCHAR(20) CHARACTER SET latin1, tx TEXT CHARACTER SET utf8mb4,
    u2 VARCHAR(10) CHARACTER SET ucs2,
    bn BINARY(4), vb VARBINARY(10), bl BLOB,
    j JSON, e ENUM('small','large'), st SET('a','b','c'), bt BIT(10))";

const TYPES_TARGET: &str = "CREATE TABLE types (
    id INT PRIMARY KEY,
    ti SMALLINT, tu SMALLINT, si SMALLINT, mi INT, i INT, bi BIGINT,
    bu NUMERIC(20), de NUMERIC(38,10), fl REAL, db DOUBLE PRECISION,
    d DATE, t TIME(3), dt TIMESTAMP(6), ts TIMESTAMPTZ, y INT,
    c CHAR(5), vl TEXT, tx TEXT, u2 TEXT,
    bn BYTEA, vb BYTEA, bl BYTEA,
    j JSONB, e TEXT, st TEXT, bt BIT(10))";

#[tokio::test]
async fn every_type_arrives_value_by_value_through_updates_deletes_and_a_key_change() {
    let f = Fixture::new(&[TYPES_SOURCE], TYPES_TARGET).await;
    let mut run = f.start(&[]);
    wait_for_log(&run, "streaming the binlog");
    f.source(
        r#"SET time_zone = '+00:00';
        INSERT INTO types VALUES
        (1, -128, 255, -32768, 16777215, -2147483648, -9223372036854775808,
         18446744073709551615, 1234567890123456789012345678.0123456789, 1.5, 0.1,
         '2024-02-29', '23:59:59.999', '2024-01-02 03:04:05.123456', '2024-06-01 12:00:00.5', 2155,
         'ab', 'café€', 'héllo 🚀 "q" \\ end', 'ünï', X'01', X'00ff10', X'deadbeef',
         '{"a": [1, 2.5, "x"], "b": null}', 'large', 'a,c', b'1010000001'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, 127, 0, 32767, 0, 2147483647, 9223372036854775807, 0, -0.0000000001, -3.25, 1e300,
         '1000-01-01', '00:00:00', '1000-01-01 00:00:00', '1970-01-01 00:00:01', 1901,
         '', '', '', '', X'', X'', X'', '[]', 'small', '', b'0');
        UPDATE types SET tx = 'changed', st = 'b' WHERE id = 3;
        DELETE FROM types WHERE id = 2;
        UPDATE types SET id = 10 WHERE id = 1;"#,
    )
    .await;
    let sql = "SET TimeZone = 'UTC'; SELECT * FROM types ORDER BY id";
    f.expect_rows(
        &run,
        sql,
        &[
            &[
                Some("3"),
                Some("127"),
                Some("0"),
                Some("32767"),
                Some("0"),
                Some("2147483647"),
                Some("9223372036854775807"),
                Some("0"),
                Some("-0.0000000001"),
                Some("-3.25"),
                Some("1e+300"),
                Some("1000-01-01"),
                Some("00:00:00"),
                Some("1000-01-01 00:00:00"),
                Some("1970-01-01 00:00:01+00"),
                Some("1901"),
                Some("     "),
                Some(""),
                Some("changed"),
                Some(""),
                Some("\\x00000000"),
                Some("\\x"),
                Some("\\x"),
                Some("[]"),
                Some("small"),
                Some("b"),
                Some("0000000000"),
            ],
            &[
                Some("10"),
                Some("-128"),
                Some("255"),
                Some("-32768"),
                Some("16777215"),
                Some("-2147483648"),
                Some("-9223372036854775808"),
                Some("18446744073709551615"),
                Some("1234567890123456789012345678.0123456789"),
                Some("1.5"),
                Some("0.1"),
                Some("2024-02-29"),
                Some("23:59:59.999"),
                Some("2024-01-02 03:04:05.123456"),
                Some("2024-06-01 12:00:00.5+00"),
                Some("2155"),
                Some("ab   "),
                Some("café€"),
                Some("héllo 🚀 \"q\" \\ end"),
                Some("ünï"),
                Some("\\x01000000"),
                Some("\\x00ff10"),
                Some("\\xdeadbeef"),
                Some(r#"{"a": [1, 2.5, "x"], "b": null}"#),
                Some("large"),
                Some("a,c"),
                Some("1010000001"),
            ],
        ],
    )
    .await;
    let log = run.log();
    assert!(run.stop(), "clean stop\n{log}");
}

#[tokio::test]
async fn zero_dates_stop_naming_table_column_and_value_unless_a_userscript_maps_them() {
    let f = Fixture::new(
        &["CREATE TABLE z (id INT PRIMARY KEY, d DATE, t TIME)"],
        "CREATE TABLE z (id INT PRIMARY KEY, d DATE, t TEXT)",
    )
    .await;
    let mut run = f.start(&[]);
    wait_for_log(&run, "streaming the binlog");
    f.source("SET sql_mode = ''; INSERT INTO z VALUES (1, '0000-00-00', '100:00:00')").await;
    let ok = run.wait_exit(Duration::from_secs(30));
    let log = run.log();
    assert_eq!(ok, Some(false), "must stop with an error\n{log}");
    let table = format!("{}.z.d = \"0000-00-00\"", f.src.name);
    assert!(log.contains(&table) && log.contains("--userscript"), "{log}");

    // A userscript maps the zero date to NULL; the long TIME goes to a text column.
    let script = f.tmp.join("zero.ts");
    std::fs::write(
        &script,
        format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{}.public", {{
  onRowUpsert: (row) => ({{ ...row, d: row.d === "0000-00-00" ? null : row.d }}),
  onRowDelete: (row) => row,
}});
"#,
            f.tgt.name
        ),
    )
    .expect("script");
    let mut again =
        f.restart(&["--defaultGTIDSet", &f.start, "--userscript", script.to_str().expect("utf-8")]);
    f.expect_rows(&again, "SELECT * FROM z", &[&[Some("1"), None, Some("100:00:00")]]).await;
    assert!(again.stop(), "clean stop\n{}", again.log());
}

#[tokio::test]
async fn the_table_filter_userscript_keeps_a_table_out() {
    let f = Fixture::new(
        &[
            "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50))",
            "CREATE TABLE audit_logs (id INT PRIMARY KEY, action VARCHAR(50))",
        ],
        "CREATE TABLE customers (id INT PRIMARY KEY, name TEXT);
         CREATE TABLE audit_logs (id INT PRIMARY KEY, action TEXT);",
    )
    .await;
    // The shipped template, pointed at this target schema.
    let out = support::run(&[
        "script",
        "new",
        "--template",
        "table_filter",
        "--dir",
        f.tmp.join("script").to_str().expect("utf-8"),
        "--targetSchema",
        &format!("{}.public", f.tgt.name),
    ]);
    assert!(out.status.success(), "{:?}", support::texts(&out));
    let script = f.tmp.join("script").join("table_filter.ts");
    let mut run = f.start(&["--userscript", script.to_str().expect("utf-8")]);
    wait_for_log(&run, "streaming the binlog");
    f.source(
        "INSERT INTO customers VALUES (1, 'ann'), (2, 'bob');
         INSERT INTO audit_logs VALUES (1, 'login'), (2, 'logout');
         UPDATE customers SET name = 'bobby' WHERE id = 2;
         DELETE FROM customers WHERE id = 1;
         INSERT INTO customers VALUES (3, 'cy');",
    )
    .await;
    f.expect_rows(
        &run,
        "SELECT * FROM customers ORDER BY id",
        &[&[Some("2"), Some("bobby")], &[Some("3"), Some("cy")]],
    )
    .await;
    f.expect_rows(&run, "SELECT count(*) FROM audit_logs", &[&[Some("0")]]).await;
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn kill_9_mid_stream_then_restart_without_default_gtid_set_converges() {
    let f = Fixture::new(
        &[
            "CREATE TABLE events (id INT PRIMARY KEY, n INT, note VARCHAR(40))",
            "CREATE TABLE counter (id INT PRIMARY KEY, n INT)",
            "INSERT INTO counter VALUES (1, 0)",
        ],
        "CREATE TABLE events (id INT PRIMARY KEY, n INT, note TEXT);
         CREATE TABLE counter (id INT PRIMARY KEY, n INT);
         INSERT INTO counter VALUES (1, 0);",
    )
    .await;
    let mut run = f.start(&["--flushSize", "100"]);
    wait_for_log(&run, "streaming the binlog");
    let writer = {
        let url = f.src.url.clone();
        tokio::spawn(async move {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await.expect("writer");
            for batch in 0..60 {
                let base = batch * 100;
                let values: Vec<String> =
                    (base..base + 100).map(|g| format!("({g}, {}, 'note {g}')", g % 7)).collect();
                c.query_drop(format!(
                    "BEGIN;
                     INSERT INTO events VALUES {};
                     UPDATE events SET n = n + 100 WHERE id % 10 = 0 AND id < {base};
                     DELETE FROM events WHERE id % 13 = 0 AND id < {base};
                     UPDATE counter SET n = n + 1 WHERE id = 1;
                     COMMIT;",
                    values.join(",")
                ))
                .await
                .expect("write");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    support::wait_for_rows(&f.tgt.client().await, "SELECT count(*) FROM events", 1000, &run).await;
    run.kill9();
    writer.await.expect("writer");
    let mut again = f.restart(&[]);
    f.converge(
        &again,
        "SELECT CONCAT(COUNT(*), '/', SUM(n), '/', SUM(id)) FROM events",
        "SELECT count(*) || '/' || sum(n) || '/' || sum(id) FROM events",
    )
    .await;
    f.expect_rows(&again, "SELECT n FROM counter", &[&[Some("60")]]).await;
    assert!(again.log().contains("resuming from the stored position"), "{}", again.log());
    assert!(again.stop(), "clean stop\n{}", again.log());
}

#[tokio::test]
async fn password_login_a_killed_connection_metrics_and_no_password_in_logs() {
    let f = Fixture::new(
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))"],
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
    )
    .await;
    // A user of its own: its binlog connection is the one this test kills.
    let user = unique_name("repl");
    let password = "S3cr!t:p@ss/w0rd";
    let mut admin = mysql_async::Conn::from_url(mysql_url().as_str()).await.expect("admin");
    admin
        .query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';
             GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'"
        ))
        .await
        .expect("user");
    let encoded = "S3cr%21t%3Ap%40ss%2Fw0rd";
    let host = mysql_url().rsplit_once('@').map(|(_, h)| h.to_owned()).expect("host");
    let url = format!("mysql://{user}:{encoded}@tcp({host})/{}", f.src.name);
    let port = support::changefeed::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = f.args(&url);
    args.extend(["--defaultGTIDSet".into(), f.start.clone(), "--stagingCreateSchema".into()]);
    args.extend(["--metricsAddr".into(), addr.clone(), "-v".into()]);
    let mut run = Running::spawn(&f.tmp, &args);
    wait_for_log(&run, "streaming the binlog");
    f.source("INSERT INTO t VALUES (1, 'a')").await;
    f.expect_rows(&run, "SELECT count(*) FROM t", &[&[Some("1")]]).await;

    // Kill its binlog dump thread: it reconnects and goes on where it was.
    let ids: Vec<u64> = admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND LIKE 'Binlog Dump%'",
            (&user,),
        )
        .await
        .expect("processlist");
    assert_eq!(ids.len(), 1, "one dump thread\n{}", run.log());
    admin.query_drop(format!("KILL {}", ids[0])).await.expect("kill");
    f.source("INSERT INTO t VALUES (2, 'b')").await;
    f.expect_rows(
        &run,
        "SELECT id, v FROM t ORDER BY id",
        &[&[Some("1"), Some("a")], &[Some("2"), Some("b")]],
    )
    .await;
    wait_for_log(&run, "source reachable again");
    assert!(run.log().contains("source unreachable, retrying every"), "{}", run.log());
    let (status, body) = support::http_get(&addr, "/_/healthz").await;
    assert_eq!((status, body.trim()), (200, "active"));
    let (_, varz) = support::http_get(&addr, "/_/varz").await;
    assert!(varz.contains("mylogical_dial_success_total 2"), "{varz}");
    assert!(varz.contains(r#"mutation_total{source="mylogical",type="upsert"} 2"#), "{varz}");
    assert!(run.stop(), "clean stop\n{}", run.log());
    let log = run.log();
    assert!(!log.contains("S3cr") && !log.contains(encoded), "{log}");

    // A wrong password: the server's message, no password.
    let wrong = format!("mysql://{user}:Wr0ngS3cret@tcp({host})/{}", f.src.name);
    let mut args = f.args(&wrong);
    args.extend(["--defaultGTIDSet".into(), f.start.clone()]);
    let out = support::replicator().args(&args).output().expect("run");
    let (stdout, stderr) = support::texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("Access denied"), "{stderr}");
    assert!(!stderr.contains("Wr0ngS3cret") && !stdout.contains("Wr0ngS3cret"), "{stderr}");
    let _ = admin.query_drop(format!("DROP USER '{user}'@'%'")).await;
}

#[tokio::test]
async fn first_run_without_default_gtid_set_says_what_to_pass() {
    let f = Fixture::new(
        &["CREATE TABLE t (id INT PRIMARY KEY)"],
        "CREATE TABLE t (id INT PRIMARY KEY)",
    )
    .await;
    let mut args = f.args(&f.molt_url());
    args.push("--stagingCreateSchema".into());
    let out = support::replicator().args(&args).output().expect("run");
    let (_, stderr) = support::texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("--defaultGTIDSet is required"), "{stderr}");
    assert!(stderr.contains("@@gtid_binlog_pos"), "{stderr}");
}

#[tokio::test]
async fn large_transactions_load_by_copy_and_existing_keys_fall_back_to_upserts() {
    let f = Fixture::new(
        &["CREATE TABLE t (id INT PRIMARY KEY, v TEXT, n INT)"],
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT, n INT)",
    )
    .await;
    let mut run = f.start(&[]);
    wait_for_log(&run, "streaming the binlog");
    // 500 new rows in one transaction (COPY), values that COPY's text format must escape;
    // then an update of all of them (keys exist: the upsert runs), then more new rows.
    f.source(
        r#"INSERT INTO t
             WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 500)
             SELECT g, CASE g % 6 WHEN 0 THEN CONCAT('tab\there ', g) WHEN 1 THEN 'line\nnext\r'
               WHEN 2 THEN 'back\\slash \\N' WHEN 3 THEN '' WHEN 4 THEN NULL ELSE 'plain' END, g FROM s;
           UPDATE t SET n = n * 2, v = CONCAT(IFNULL(v, 'was null'), '!') WHERE id % 2 = 0;
           INSERT INTO t
             WITH RECURSIVE s(g) AS (SELECT 501 UNION ALL SELECT g + 1 FROM s WHERE g < 800)
             SELECT g, CONCAT('later\t', g), -g FROM s;"#,
    )
    .await;
    f.converge(
        &run,
        "SELECT CONCAT(COUNT(*), '/', MD5(GROUP_CONCAT(CONCAT_WS('|', id, IFNULL(v, '<null>'), n) ORDER BY id SEPARATOR ','))) FROM t",
        "SELECT count(*) || '/' || md5(string_agg(concat_ws('|', id, coalesce(v, '<null>'), n), ',' ORDER BY id)) FROM t",
    )
    .await;
    f.expect_rows(
        &run,
        "SELECT v FROM t WHERE id IN (2, 6, 7) ORDER BY id",
        &[&[Some("back\\slash \\N!")], &[Some("tab\there 6!")], &[Some("line\nnext\r")]],
    )
    .await;
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn lost_target_and_staging_connections_are_replaced() {
    let f = Fixture::new(
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))"],
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
    )
    .await;
    let mut run = f.start(&[]);
    f.source("INSERT INTO t VALUES (1, 'a')").await;
    f.expect_rows(&run, "SELECT count(*) FROM t", &[&[Some("1")]]).await;
    let killed = support::pg_terminate_sessions(&f.tgt.name).await;
    assert!(killed >= 2, "target and staging sessions ({killed})\n{}", run.log());
    f.source("INSERT INTO t VALUES (2, 'b')").await;
    for i in 0..100 {
        f.source(&format!("INSERT INTO t VALUES ({}, 'c')", 10 + i)).await;
        if i % 30 == 0 {
            support::pg_terminate_sessions(&f.tgt.name).await;
        }
    }
    f.expect_rows(&run, "SELECT count(*), sum(id) FROM t", &[&[Some("102"), Some("5953")]]).await;
    let log = run.log();
    assert!(log.contains("the target connection was lost; writing on a new one"), "{log}");
    assert!(run.stop(), "clean stop\n{}", run.log());
}

const FK_SOURCE: [&str; 2] = [
    "CREATE TABLE p (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE c (id INT PRIMARY KEY, pid INT NOT NULL, v VARCHAR(10), \
     FOREIGN KEY (pid) REFERENCES p (id) ON DELETE CASCADE) ENGINE=InnoDB",
];

/// A parent, its child, the child updated, the parent deleted (the child cascading).
const CASCADE_STATEMENTS: &str = "INSERT INTO p VALUES (1); INSERT INTO c VALUES (10, 1, 'a'); \
     UPDATE c SET v = 'b' WHERE id = 10; DELETE FROM p WHERE id = 1;";

/// MariaDB writes no binlog event for the rows an `ON DELETE CASCADE` removes, so a
/// coalesced batch can hold a combination no source commit had (the child's upsert and its
/// parent's delete); the target must still end where the source transactions leave it.
#[tokio::test]
async fn cascaded_deletes_coalesced_end_where_the_source_transactions_leave_the_target() {
    let f = Fixture::new(
        &FK_SOURCE,
        "CREATE TABLE p (id INT PRIMARY KEY);
         CREATE TABLE c (id INT PRIMARY KEY, pid INT NOT NULL REFERENCES p (id) ON DELETE CASCADE, v TEXT);",
    )
    .await;
    let mut run = f.start(&[]);
    wait_for_log(&run, "streaming the binlog");
    // Four autocommits, coalesced into one batch that collapses to {p: delete, c: upsert}.
    f.source(CASCADE_STATEMENTS).await;
    // A parent deleted (its child cascading) and inserted again with a new child: the
    // delete must not vanish into the re-insert, or the old child would stay on the target.
    f.source("INSERT INTO p VALUES (2); INSERT INTO c VALUES (20, 2, 'old')").await;
    f.expect_rows(&run, "SELECT count(*) FROM c", &[&[Some("1")]]).await;
    f.source(
        "DELETE FROM p WHERE id = 2; INSERT INTO p VALUES (2); INSERT INTO c VALUES (21, 2, 'new'); \
         INSERT INTO p VALUES (3);",
    )
    .await;
    f.expect_rows(&run, "SELECT id FROM p ORDER BY id", &[&[Some("2")], &[Some("3")]]).await;
    f.expect_rows(&run, "SELECT id, pid, v FROM c", &[&[Some("21"), Some("2"), Some("new")]]).await;
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn a_cascade_the_target_lacks_stops_with_the_key() {
    let f = Fixture::new(
        &FK_SOURCE,
        "CREATE TABLE p (id INT PRIMARY KEY);
         CREATE TABLE c (id INT PRIMARY KEY, pid INT NOT NULL REFERENCES p (id), v TEXT);",
    )
    .await;
    let mut run = f.start(&[]);
    wait_for_log(&run, "streaming the binlog");
    f.source(CASCADE_STATEMENTS).await;
    assert_eq!(run.wait_exit(Duration::from_secs(30)), Some(false), "{}", run.log());
    let log = run.log();
    assert!(log.contains("SQLSTATE 23503"), "{log}");
    assert!(log.contains(r#"first failing row: table "p", key [1]"#), "{log}");
}

#[tokio::test]
async fn two_replicas_with_one_server_id_back_off_and_name_the_flag() {
    let f = Fixture::new(
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))"],
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
    )
    .await;
    let mut first = f.start(&[]);
    wait_for_log(&first, "streaming the binlog");
    // A second replicator into another target, registering with the same server id.
    let other = PgDatabase::create().await;
    other
        .client()
        .await
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .await
        .expect("ddl");
    let mut args = f.args(&f.molt_url());
    let at = args.iter().position(|a| a == "--targetConn").expect("flag") + 1;
    args[at] = other.url.clone();
    let at = args.iter().position(|a| a == "--targetSchema").expect("flag") + 1;
    args[at] = format!("{}.public", other.name);
    args.extend(["--defaultGTIDSet".into(), f.start.clone(), "--stagingCreateSchema".into()]);
    let mut second = Running::spawn(&f.tmp, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(first.log() + &second.log())
        .contains("give every replicator and replica of this source its own --replicationProcessID")
    {
        assert!(
            Instant::now() < deadline,
            "no word of the flag\n{}\n{}",
            first.log(),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // They back off instead of taking turns every 100 ms.
    std::thread::sleep(Duration::from_secs(5));
    let sessions = |log: String| log.matches("streaming the binlog").count();
    let (a, b) = (sessions(first.log()), sessions(second.log()));
    assert!(a + b < 20, "{a} + {b} sessions\n{}\n{}", first.log(), second.log());
    assert!(first.stop(), "{}", first.log());
    assert!(second.stop(), "{}", second.log());
}

#[tokio::test]
async fn a_target_that_lacks_a_table_or_column_is_reported_at_start() {
    let f = Fixture::new(
        &[
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), extra BLOB)",
            "CREATE TABLE u (id INT PRIMARY KEY)",
        ],
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT, extra INT)",
    )
    .await;
    let mut run = f.start(&[]);
    assert_eq!(run.wait_exit(Duration::from_secs(30)), Some(false), "{}", run.log());
    let log = run.log();
    assert!(log.contains("(2 problems)"), "{log}");
    assert!(log.contains(r#"table "u" does not exist on the target"#), "{log}");
    assert!(
        log.contains(r#"column "extra" is blob on the source but integer on the target"#),
        "{log}"
    );
}

/// A value longer than its target column stops replication naming the row: an explicit cast
/// to `varchar(8)` would have cut it silently. Keys of fixed-width character columns still
/// match for deletes.
#[tokio::test]
async fn a_value_too_long_for_the_target_stops_instead_of_being_cut() {
    let f = Fixture::new(
        &[
            "CREATE TABLE k (code CHAR(3) PRIMARY KEY, n INT)",
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40))",
        ],
        "CREATE TABLE k (code char(3) PRIMARY KEY, n int); CREATE TABLE t (id int PRIMARY KEY, v varchar(8));",
    )
    .await;
    let mut run = f.start(&[]);
    wait_for_log(&run, "streaming the binlog");
    f.source("INSERT INTO k VALUES ('ab', 1), ('xyz', 2); INSERT INTO t VALUES (1, 'short')").await;
    f.expect_rows(
        &run,
        "SELECT code, n FROM k ORDER BY n",
        &[&[Some("ab "), Some("1")], &[Some("xyz"), Some("2")]],
    )
    .await;
    f.source("DELETE FROM k WHERE code = 'ab'").await;
    f.expect_rows(&run, "SELECT code FROM k", &[&[Some("xyz")]]).await;
    f.source("INSERT INTO t VALUES (2, 'a much too long value')").await;
    assert_eq!(run.wait_exit(Duration::from_secs(30)), Some(false), "{}", run.log());
    let log = run.log();
    assert!(log.contains("value too long for type character varying(8)"), "{log}");
    assert!(log.contains(r#"first failing row: table "t", key [2]"#), "{log}");
    f.expect_rows(&run, "SELECT id, v FROM t", &[&[Some("1"), Some("short")]]).await;
}
