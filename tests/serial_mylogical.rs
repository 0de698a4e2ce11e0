//! `replicator mylogical` against MariaDB settings that are wrong for it. These tests change
//! server-wide settings (binlog format, row image, row metadata) and purge binlogs, so
//! `tests/run.sh` runs them one at a time, after the parallel suite; each puts the setting back
//! when it ends, even when it fails.

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::{MyDatabase, PgDatabase, Running, TempDir, dump, mysql_url, texts};

/// A global setting changed for the test and restored on drop.
struct Setting {
    name: &'static str,
    before: String,
}

impl Setting {
    async fn set(name: &'static str, value: &str) -> Self {
        let mut admin = admin().await;
        let before: String = admin
            .query_first(format!("SELECT @@GLOBAL.{name}"))
            .await
            .expect("read setting")
            .expect("a value");
        admin.query_drop(format!("SET GLOBAL {name} = '{value}'")).await.expect("set");
        Self { name, before }
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        let (name, before) = (self.name, self.before.clone());
        support::block_on_thread(async move {
            let mut admin = admin().await;
            admin.query_drop(format!("SET GLOBAL {name} = '{before}'")).await.expect("restore");
        });
    }
}

async fn admin() -> mysql_async::Conn {
    mysql_async::Conn::from_url(mysql_url().as_str()).await.expect("admin connection")
}

struct Fixture {
    src: MyDatabase,
    tgt: PgDatabase,
    tmp: TempDir,
}

impl Fixture {
    async fn new(source_ddl: &str, target_ddl: &str) -> Self {
        let src = MyDatabase::create().await;
        let tgt = PgDatabase::create().await;
        src.conn().await.query_drop(source_ddl).await.expect("source ddl");
        tgt.client().await.batch_execute(target_ddl).await.expect("target ddl");
        Self { src, tgt, tmp: TempDir::new() }
    }

    fn args(&self, position: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "mylogical",
            "--sourceConn",
            &self.src.url,
            "--targetConn",
            &self.tgt.url,
            "--targetSchema",
            &format!("{}.public", self.tgt.name),
            "--stagingSchema",
            "_replicator",
            "--stagingCreateSchema",
            "--defaultGTIDSet",
            position,
            "--flushPeriod",
            "50ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs to completion (the checks fail at startup); returns stderr.
    fn fails(&self, position: &str, extra: &[&str]) -> String {
        let out = support::replicator().args(self.args(position, extra)).output().expect("run");
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "should fail\n{stderr}");
        stderr
    }
}

async fn position() -> String {
    admin().await.query_first("SELECT @@gtid_binlog_pos").await.expect("pos").unwrap_or_default()
}

#[tokio::test]
async fn wrong_binlog_settings_give_the_preflight_message_with_the_fix() {
    let f =
        Fixture::new("CREATE TABLE t (id INT PRIMARY KEY)", "CREATE TABLE t (id INT PRIMARY KEY)")
            .await;
    let pos = position().await;
    {
        let _format = Setting::set("binlog_format", "STATEMENT").await;
        let err = f.fails(&pos, &[]);
        assert!(err.contains("binlog_format=STATEMENT"), "{err}");
        assert!(err.contains("SET GLOBAL binlog_format = 'ROW'"), "{err}");
    }
    {
        let _image = Setting::set("binlog_row_image", "MINIMAL").await;
        let err = f.fails(&pos, &[]);
        assert!(err.contains("binlog_row_image=MINIMAL"), "{err}");
        assert!(err.contains("SET GLOBAL binlog_row_image = 'FULL'"), "{err}");
    }
    {
        let _metadata = Setting::set("binlog_row_metadata", "MINIMAL").await;
        let err = f.fails(&pos, &[]);
        assert!(err.contains("binlog_row_metadata=MINIMAL"), "{err}");
        assert!(err.contains("--fetchMetadata"), "{err}");
    }
}

#[tokio::test]
async fn fetch_metadata_reads_names_from_information_schema() {
    let f = Fixture::new(
        "CREATE TABLE m (id BIGINT UNSIGNED PRIMARY KEY, tag ENUM('x','y'), flags SET('p','q'), n TINYINT UNSIGNED, s VARCHAR(10) CHARACTER SET latin1)",
        "CREATE TABLE m (id NUMERIC(20) PRIMARY KEY, tag TEXT, flags TEXT, n SMALLINT, s TEXT)",
    )
    .await;
    let _metadata = Setting::set("binlog_row_metadata", "MINIMAL").await;
    let pos = position().await;
    let mut run = Running::spawn(&f.tmp, &f.args(&pos, &["--fetchMetadata"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run.log().contains("streaming the binlog") {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A new session: it writes minimal row metadata (no names, no signedness).
    f.src
        .conn()
        .await
        .query_drop(
            "INSERT INTO m VALUES (18446744073709551615, 'y', 'p,q', 200, 'déjà');
             UPDATE m SET tag = 'x' WHERE id = 18446744073709551615;",
        )
        .await
        .expect("insert");
    let target = f.tgt.client().await;
    let want = vec![vec![
        Some("18446744073709551615".to_owned()),
        Some("x".to_owned()),
        Some("p,q".to_owned()),
        Some("200".to_owned()),
        Some("déjà".to_owned()),
    ]];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = dump(&target, "SELECT * FROM m").await;
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "got {got:?}\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(run.stop(), "clean stop\n{}", run.log());
}

#[tokio::test]
async fn a_purged_binlog_position_gives_a_clear_error() {
    let f =
        Fixture::new("CREATE TABLE t (id INT PRIMARY KEY)", "CREATE TABLE t (id INT PRIMARY KEY)")
            .await;
    // Everything before a fresh binlog file goes: the first GTIDs are no longer there.
    let mut admin = admin().await;
    admin.query_drop("FLUSH BINARY LOGS").await.expect("flush");
    let (file, _, _, _): (String, u64, String, String) =
        admin.query_first("SHOW MASTER STATUS").await.expect("status").expect("a binlog");
    admin.query_drop(format!("PURGE BINARY LOGS TO '{file}'")).await.expect("purge");
    let domain_server: String = position().await;
    let first = domain_server
        .split(',')
        .next()
        .and_then(|g| g.rsplit_once('-'))
        .map(|(ds, _)| format!("{ds}-1"))
        .expect("a position");
    let err = f.fails(&first, &[]);
    assert!(
        err.contains(&format!("cannot send its binlog from GTID position \"{first}\"")),
        "{err}"
    );
    assert!(err.contains("purged"), "{err}");
    assert!(err.contains("--defaultGTIDSet"), "{err}");
}
