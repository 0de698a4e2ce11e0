//! A replication under faults, for the fault suites (`tests/faults.rs`,
//! `tests/serial_faults.rs`): a source (PostgreSQL with a slot, or MariaDB), a PostgreSQL
//! target with staging in it, a fault proxy in front of each connection replicator makes, a
//! writer that keeps changing the source, and the value-by-value comparison.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::changefeed::free_port;
use super::fault::FaultProxy;
use super::{MyDatabase, PgDatabase, Running, SlotGuard, TempDir, dump, http_get, unique_name};

const DDL: &str = "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, v text)";

/// Which source replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pg,
    My,
}

pub enum Source {
    Pg { db: PgDatabase, slot: SlotGuard },
    My { db: MyDatabase, gtid: String, server_id: u32 },
}

/// A source, a target (staging in it), and a proxy in front of each connection replicator
/// makes: to the source, to the target, to staging.
pub struct Rig {
    pub source: Source,
    pub tgt: PgDatabase,
    pub source_proxy: FaultProxy,
    pub source_url: String,
    pub target_proxy: FaultProxy,
    pub target_url: String,
    pub staging_proxy: FaultProxy,
    pub staging_url: String,
    pub metrics: String,
    pub tmp: TempDir,
    /// The next source row id: writers one after another never reuse one.
    pub next_id: Arc<AtomicU64>,
}

impl Rig {
    pub async fn new(kind: Kind) -> Self {
        let tgt = PgDatabase::create().await;
        tgt.client().await.batch_execute(DDL).await.expect("target ddl");
        let (source, url) = match kind {
            Kind::Pg => {
                let db = PgDatabase::create().await;
                let slot = SlotGuard { name: unique_name("slot"), url: db.url.clone() };
                let c = db.client().await;
                c.batch_execute(DDL).await.expect("source ddl");
                c.batch_execute("CREATE PUBLICATION pub FOR ALL TABLES").await.expect("pub");
                c.execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&slot.name],
                )
                .await
                .expect("slot");
                let url = db.url.clone();
                (Source::Pg { db, slot }, url)
            }
            Kind::My => {
                let db = MyDatabase::create().await;
                let mut c = db.conn().await;
                c.query_drop(DDL).await.expect("source ddl");
                let gtid: String = c
                    .query_first("SELECT @@gtid_binlog_pos")
                    .await
                    .expect("pos")
                    .unwrap_or_default();
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
                let server_id = 5000 + (std::process::id() % 100_000) * 100 + n;
                let url = db.url.clone();
                (Source::My { db, gtid, server_id }, url)
            }
        };
        let (source_proxy, source_url) = FaultProxy::to_database(&url);
        let (target_proxy, target_url) = FaultProxy::to_database(&tgt.url);
        let (staging_proxy, staging_url) = FaultProxy::to_database(&tgt.url);
        Self {
            source,
            tgt,
            source_proxy,
            source_url,
            target_proxy,
            target_url,
            staging_proxy,
            staging_url,
            metrics: format!("127.0.0.1:{}", free_port()),
            tmp: TempDir::new(),
            next_id: Arc::default(),
        }
    }

    /// Starts replicator through the proxies.
    pub fn start(&self, extra: &[&str]) -> Running {
        let schema = format!("{}.public", self.tgt.name);
        let mut args: Vec<String> = match &self.source {
            Source::Pg { slot, .. } => vec![
                "pglogical".into(),
                "--slotName".into(),
                slot.name.clone(),
                "--publicationName".into(),
                "pub".into(),
                "--standbyTimeout".into(),
                "200ms".into(),
            ],
            Source::My { gtid, server_id, .. } => vec![
                "mylogical".into(),
                "--defaultGTIDSet".into(),
                gtid.clone(),
                "--replicationProcessID".into(),
                server_id.to_string(),
            ],
        };
        for (flag, value) in [
            ("--sourceConn", self.source_url.as_str()),
            ("--targetConn", &self.target_url),
            ("--stagingConn", &self.staging_url),
            ("--targetSchema", &schema),
            ("--stagingSchema", "_replicator"),
            ("--flushPeriod", "50ms"),
            ("--metricsAddr", &self.metrics),
        ] {
            args.extend([flag.to_owned(), value.to_owned()]);
        }
        // Every run may create staging: a run killed at once may not have.
        args.push("--stagingCreateSchema".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        Running::spawn(&self.tmp, &args)
    }

    /// Rows, the sum of `n` and of the keys on the source.
    pub async fn totals(&self) -> String {
        const SQL: &str =
            "SELECT CONCAT(count(*), ' ', coalesce(sum(n), 0), ' ', coalesce(sum(id), 0)) FROM t";
        match &self.source {
            Source::Pg { db, .. } => totals(&db.client().await).await,
            Source::My { db, .. } => {
                db.conn().await.query_first(SQL).await.expect("totals").unwrap_or_default()
            }
        }
    }

    /// The source's rows as text, by key.
    pub async fn source_rows(&self) -> Vec<Vec<Option<String>>> {
        match &self.source {
            Source::Pg { db, .. } => {
                dump(&db.client().await, "SELECT id::text, n::text, v FROM t ORDER BY t.id").await
            }
            Source::My { db, .. } => {
                let rows: Vec<(String, String, Option<String>)> = db
                    .conn()
                    .await
                    .query("SELECT CAST(id AS CHAR), CAST(n AS CHAR), v FROM t ORDER BY id")
                    .await
                    .expect("source rows");
                rows.into_iter().map(|(id, n, v)| vec![Some(id), Some(n), v]).collect()
            }
        }
    }

    /// Waits until the target equals the source value by value, with rows in both; panics
    /// with the first difference and the log after `within`. Returns how many rows were
    /// compared.
    pub async fn converge(&self, run: &Running, within: Duration) -> usize {
        let target = self.tgt.client().await;
        let deadline = Instant::now() + within;
        loop {
            // Cheap totals first; the row by row comparison once they agree.
            if self.totals().await != totals(&target).await && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let want = self.source_rows().await;
            let got = dump(&target, "SELECT id::text, n::text, v FROM t ORDER BY t.id").await;
            // Both empty is no proof: replication may not have begun.
            if want == got && !want.is_empty() {
                return want.len();
            }
            if Instant::now() > deadline {
                let first = want.iter().zip(&got).find(|(a, b)| a != b);
                panic!(
                    "no convergence within {within:?}: source {} rows, target {}; first \
                     difference {first:?}\nlog:\n{}",
                    want.len(),
                    got.len(),
                    run.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts a writer that changes the source until stopped, or until it committed `limit`
    /// transactions, `pace` apart.
    pub async fn writer(&self, rows_per_tx: u64, pace: Duration, limit: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d, ids) = (stop.clone(), done.clone(), self.next_id.clone());
        let task = match &self.source {
            Source::Pg { db, .. } => {
                let client = db.client().await;
                tokio::spawn(async move {
                    let mut tx = 0;
                    while !s.load(Ordering::SeqCst) && tx < limit {
                        let first = ids.fetch_add(rows_per_tx, Ordering::SeqCst);
                        let sql = statements(tx, first, rows_per_tx).join("; ");
                        let sql = format!("BEGIN; {sql}; COMMIT");
                        client.batch_execute(&sql).await.expect("source write");
                        tx += 1;
                        d.store(tx, Ordering::SeqCst);
                        tokio::time::sleep(pace).await;
                    }
                })
            }
            Source::My { db, .. } => {
                let mut conn = db.conn().await;
                tokio::spawn(async move {
                    let mut tx = 0;
                    while !s.load(Ordering::SeqCst) && tx < limit {
                        conn.query_drop("START TRANSACTION").await.expect("begin");
                        let first = ids.fetch_add(rows_per_tx, Ordering::SeqCst);
                        for sql in statements(tx, first, rows_per_tx) {
                            conn.query_drop(sql).await.expect("source write");
                        }
                        conn.query_drop("COMMIT").await.expect("commit");
                        tx += 1;
                        d.store(tx, Ordering::SeqCst);
                        tokio::time::sleep(pace).await;
                    }
                })
            }
        };
        Writer { stop, done, task }
    }

    pub async fn healthz(&self) -> (u16, String) {
        http_get(&self.metrics, "/_/healthz").await
    }
}

/// Rows, the sum of `n` and of the keys on a PostgreSQL side.
pub async fn totals(client: &tokio_postgres::Client) -> String {
    let sql = "SELECT concat(count(*), ' ', coalesce(sum(n), 0), ' ', coalesce(sum(id), 0)) FROM t";
    client.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or_default()
}

/// One source transaction of the workload: `rows` new rows from id `first` on, an update of
/// a row written before, and every third transaction a delete of another.
pub fn statements(tx: u64, first: u64, rows: u64) -> Vec<String> {
    let values: Vec<String> =
        (0..rows).map(|k| format!("({}, 0, 'tx{tx} row{k}')", first + k)).collect();
    let mut out = vec![format!("INSERT INTO t (id, n, v) VALUES {}", values.join(", "))];
    if first > 0 {
        let id = (first - 1).saturating_sub(tx % 7);
        out.push(format!("UPDATE t SET n = n + 1, v = 'updated by tx{tx}' WHERE id = {id}"));
    }
    if first > 20 && tx.is_multiple_of(3) {
        out.push(format!("DELETE FROM t WHERE id = {}", first - 20 + tx % 5));
    }
    out
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Source transactions committed so far.
    pub fn transactions(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until it committed its limit; returns the transactions it committed.
    pub async fn join(self) -> u64 {
        self.task.await.expect("the writer failed");
        self.done.load(Ordering::SeqCst)
    }

    /// Stops it; returns the transactions it committed.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer failed");
        self.done.load(Ordering::SeqCst)
    }
}

/// Waits until the log holds `text`.
pub async fn wait_for_log(run: &Running, text: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !run.log().contains(text) {
        assert!(Instant::now() < deadline, "no {text:?} in the log:\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The process has not exited.
pub fn still_runs(run: &mut Running) {
    assert_eq!(run.wait_exit(Duration::from_millis(10)), None, "it exited\n{}", run.log());
}
