//! Server restarts under replication: the PostgreSQL server stopped for 5 s under `pglogical`
//! (the source, the target and staging all at once, as they share it here), and the MariaDB
//! source server stopped for 5 s under `mylogical`. They stop servers every other test uses,
//! so `tests/run.sh` runs them one at a time, after the parallel suite; the servers are
//! started again even when a test fails.

mod support;

use std::process::Command;
use std::time::Duration;

use support::workload::{Kind, Rig, still_runs, wait_for_log};

/// The local PostgreSQL cluster the tests use (the one on port 5432; `benches/pglogical.sh`
/// adds another on 5433): version and name, from `pg_lsclusters`.
fn pg_cluster() -> (String, String) {
    let out = Command::new("pg_lsclusters").arg("-h").output().expect("pg_lsclusters");
    let text = String::from_utf8_lossy(&out.stdout);
    let cluster = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"5432"))
        .expect("a cluster on port 5432");
    (cluster[0].to_owned(), cluster[1].to_owned())
}

/// Runs `program` with `args`; it must succeed.
fn must(program: &str, args: &[&str]) {
    let ok = Command::new(program).args(args).status().expect(program).success();
    assert!(ok, "{program} {args:?} failed");
}

fn pg_ctl(action: &str) {
    let (version, name) = pg_cluster();
    must("pg_ctlcluster", &["--skip-systemctl-redirect", &version, &name, action, "-m", "fast"]);
}

fn mariadb_stop() {
    must("mariadb-admin", &["-uroot", "shutdown"]);
}

fn mariadb_start() {
    let _ = Command::new("start-stop-daemon")
        .args(["--start", "--oknodo", "--background", "--pidfile", "/run/mysqld/mysqld.pid"])
        .args(["--exec", "/usr/sbin/mariadbd", "--", "--user=mysql"])
        .status();
    for _ in 0..150 {
        let up = Command::new("mariadb-admin").args(["-uroot", "ping"]).output();
        if up.is_ok_and(|o| o.status.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("MariaDB did not start again");
}

/// Starts the server again when dropped (a failing test leaves it running).
struct Restart(fn());

impl Drop for Restart {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn pg_start() {
    let (version, name) = pg_cluster();
    let _ = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, &name, "start"])
        .status();
}

/// Stops the source's server for 5 s while the writer waits, then starts it and checks the
/// target converges with replication never having exited.
async fn restart(kind: Kind) {
    let rig = Rig::new(kind).await;
    let mut run = rig.start(&[]);
    rig.writer(5, Duration::ZERO, 200).await.join().await;
    rig.converge(&run, Duration::from_secs(60)).await;
    let starting;
    {
        let _restart = match kind {
            Kind::Pg => {
                pg_ctl("stop");
                Restart(pg_start)
            }
            Kind::My => {
                mariadb_stop();
                Restart(mariadb_start)
            }
        };
        wait_for_log(&run, "source unreachable, retrying every", Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        still_runs(&mut run);
        // The server starts again as `_restart` is dropped.
        starting = std::time::Instant::now();
    }
    wait_for_log(&run, "source reachable again", Duration::from_secs(60)).await;
    let reconnected = starting.elapsed();
    // The writer goes on after the restart.
    rig.writer(5, Duration::ZERO, 200).await.join().await;
    let rows = rig.converge(&run, Duration::from_secs(60)).await;
    still_runs(&mut run);
    assert!(run.stop(), "clean stop\n{}", run.log());
    eprintln!(
        "FIGURE {kind:?}: source server stopped for 5 s and started: {rows} rows compared, \
         streaming again {reconnected:?} after it was told to start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_rides_out_a_postgresql_restart_of_source_target_and_staging() {
    restart(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_rides_out_a_mariadb_source_restart() {
    restart(Kind::My).await;
}

/// `replicator start` (consistent mode) while the PostgreSQL server holding its target and
/// staging is stopped for 5 s: the changefeed's requests get 503s, which it retries, and the
/// target converges once the server is back; the process never exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_rides_out_a_restart_of_the_server_holding_target_and_staging() {
    use serde_json::json;
    use support::changefeed::{Feed, Server, Trust, hlc, line, payload, resolved};

    let dir = support::TempDir::new();
    let db = support::PgDatabase::create().await;
    let ddl = "CREATE TABLE t (id int8 PRIMARY KEY, v int8)";
    db.client().await.batch_execute(ddl).await.expect("schema");
    let args = ["--targetConn", &db.url, "--stagingCreateSchema", "--disableAuthentication"];
    let mut server = Server::start(&dir, &args.map(String::from)).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let batch = |from: i64| {
        payload(
            &(from..from + 100)
                .map(|id| line("t", json!([id]), Some(json!({"id": id, "v": id})), &hlc(id + 1, 0)))
                .collect::<Vec<_>>(),
        )
    };
    // The server is up whenever this runs.
    let count = async |want: &str| {
        let client = db.client().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while support::dump(&client, "SELECT count(*) FROM t").await != [[Some(want.to_owned())]] {
            assert!(std::time::Instant::now() < deadline, "never {want} rows");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    feed.deliver(&batch(0)).await;
    feed.deliver(&resolved(&hlc(1_000, 0))).await;
    count("100").await;

    pg_ctl("stop");
    let restart = Restart(pg_start);
    let back = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        drop(restart);
    });
    for b in 1..5 {
        feed.deliver(&batch(b * 100)).await;
    }
    feed.deliver(&resolved(&hlc(10_000, 0))).await;
    back.join().expect("started again");
    count("500").await;
    assert!(feed.refusals.iter().any(|r| r.status == 503), "{:?}", feed.refusals);
    assert!(feed.refusals.iter().all(|r| r.status == 503), "{:?}", feed.refusals);
    still_runs(&mut server.run);
    eprintln!(
        "FIGURE start: server of target and staging stopped 5 s: 500 rows, {} requests refused \
         with 503 and retried",
        feed.refusals.len()
    );
}
