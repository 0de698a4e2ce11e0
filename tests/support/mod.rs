//! Helpers the integration tests share: the binary, temporary folders, and a fresh, uniquely
//! named database per test on the real PostgreSQL and MariaDB servers.
//!
//! Connection URLs come from `REPLICATOR_TEST_PG` and `REPLICATOR_TEST_MYSQL`, defaulting to
//! the servers `tests/databases.sh` provisions. Every database a test creates is dropped when
//! its guard drops, even when the test fails, so tests run in parallel and leave nothing.
#![allow(dead_code)]

pub mod changefeed;
pub mod fault;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default PostgreSQL server for tests (trust auth on loopback).
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default MariaDB/MySQL server for tests (root, empty password).
pub const DEFAULT_MYSQL: &str = "mysql://root@127.0.0.1:3306";

/// The PostgreSQL server URL (a maintenance database on it).
pub fn pg_url() -> String {
    std::env::var("REPLICATOR_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// The MariaDB/MySQL server URL, without a database.
pub fn mysql_url() -> String {
    std::env::var("REPLICATOR_TEST_MYSQL").unwrap_or_else(|_| DEFAULT_MYSQL.to_owned())
}

/// A name no other test (in this or another process) uses: `prefix_<pid>_<n>_<micros>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000_000)
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{micros}", std::process::id())
}

/// The `replicator` binary under test.
pub fn replicator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_replicator"))
}

/// Runs `replicator` with `args`, returning its output.
pub fn run(args: &[&str]) -> Output {
    replicator().args(args).output().expect("run replicator")
}

/// stdout and stderr as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The TypeScript compiler `tests/run.sh` installs into `target/tsc` (or `REPLICATOR_TSC`).
pub fn tsc() -> PathBuf {
    if let Ok(path) = std::env::var("REPLICATOR_TSC") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tsc/node_modules/.bin/tsc");
    assert!(
        path.exists(),
        "TypeScript is not installed at {}: run tests/run.sh, or npm install --prefix target/tsc typescript@5",
        path.display()
    );
    path
}

/// A folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates an empty folder under the system's temp dir.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("replicator_test"));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// `name` inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces the database (path) of a URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..].find('/').map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs `f` on a fresh thread with its own runtime: lets `Drop` do async cleanup even when
/// the test's runtime is gone or busy.
pub fn block_on_thread<F>(f: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime")
            .block_on(f);
    });
    let _ = handle.join();
}

/// Connects to PostgreSQL, driving the connection on the current runtime.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to PostgreSQL at {url}: {e} (run tests/databases.sh)"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database of its own on the PostgreSQL server, dropped on drop.
pub struct PgDatabase {
    /// Its name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
}

impl PgDatabase {
    /// Creates `test_<unique>` on the server.
    pub async fn create() -> Self {
        let name = unique_name("test");
        let admin = pg_connect(&pg_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let url = with_database(&pg_url(), &name);
        Self { name, url }
    }

    /// A client connected to this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.url).await
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_thread(async move {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
            }
        });
    }
}

/// Runs `sql` (with one text parameter) on the PostgreSQL server at `url` from a fresh thread:
/// cleanup that must happen even when a test fails.
fn cleanup(url: String, sql: &'static str, param: String) {
    block_on_thread(async move {
        if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let _ = client.execute(sql, &[&param]).await;
        }
    });
}

/// A replication slot dropped on drop (a slot keeps its database from being dropped).
pub struct SlotGuard {
    /// The slot's name.
    pub name: String,
    /// A URL of the slot's database.
    pub url: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        cleanup(
            self.url.clone(),
            "SELECT pg_drop_replication_slot($1) WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            self.name.clone(),
        );
    }
}

/// A role on the PostgreSQL server, dropped on drop.
pub struct RoleGuard(pub String);

impl Drop for RoleGuard {
    fn drop(&mut self) {
        let role = self.0.clone();
        block_on_thread(async move {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\"")).await;
            }
        });
    }
}

/// A database of its own on the MariaDB/MySQL server, dropped on drop.
pub struct MyDatabase {
    /// Its name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
}

impl MyDatabase {
    /// Creates `test_<unique>` on the server.
    pub async fn create() -> Self {
        use mysql_async::prelude::Queryable as _;
        let name = unique_name("test");
        let mut admin = mysql_async::Conn::from_url(mysql_url()).await.unwrap_or_else(|e| {
            panic!("connect to MariaDB at {}: {e} (run tests/databases.sh)", mysql_url())
        });
        admin.query_drop(format!("CREATE DATABASE `{name}`")).await.expect("create test database");
        let _ = admin.disconnect().await;
        let url = with_database(&mysql_url(), &name);
        Self { name, url }
    }

    /// A connection to this database.
    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(self.url.as_str()).await.expect("connect to test database")
    }
}

impl Drop for MyDatabase {
    fn drop(&mut self) {
        use mysql_async::prelude::Queryable as _;
        let name = self.name.clone();
        block_on_thread(async move {
            if let Ok(mut admin) = mysql_async::Conn::from_url(mysql_url()).await {
                if let Err(e) = admin.query_drop(format!("DROP DATABASE IF EXISTS `{name}`")).await
                {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
                let _ = admin.disconnect().await;
            }
        });
    }
}

/// A running `replicator` command, killed on drop.
pub struct Running {
    /// The process, until it exits.
    pub child: Option<Child>,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Running {
    /// Starts `replicator args…` with its output in a new log file under `dir`.
    pub fn spawn(dir: &TempDir, args: &[String]) -> Self {
        let log = dir.join(&format!("{}.log", unique_name("run")));
        let file = std::fs::File::create(&log).expect("log file");
        let child = replicator()
            .args(args)
            .stdout(std::process::Stdio::from(file.try_clone().expect("clone")))
            .stderr(std::process::Stdio::from(file))
            .spawn()
            .expect("start replicator");
        Running { child: Some(child), log }
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own; returns its success.
    pub fn wait_exit(&mut self, within: Duration) -> Option<bool> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every row `sql` returns, as text.
pub async fn dump(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client.simple_query(sql).await.expect("dump");
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Waits until `sql` (a count on `client`) reaches `at_least`; panics with the log after 30 s.
pub async fn wait_for_rows(
    client: &tokio_postgres::Client,
    sql: &str,
    at_least: i64,
    run: &Running,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = client.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(0);
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived ({sql} stayed below {at_least})\n{}",
            run.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Terminates every session on PostgreSQL database `database` but the caller's own, as an
/// operator's `pg_terminate_backend` or a restarted server would; returns how many.
pub async fn pg_terminate_sessions(database: &str) -> i64 {
    let admin = pg_connect(&pg_url()).await;
    admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend') k",
            &[&database],
        )
        .await
        .expect("terminate sessions")
        .get(0)
}

/// GET `path` from `addr` over plain HTTP/1.1: the status and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(with_database("mysql://root@h:3306", "t1"), "mysql://root@h:3306/t1");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
