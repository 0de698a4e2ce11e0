//! The fault suite: `pglogical` and `mylogical` against the faults operators meet, on the real
//! servers, with the binary run as an operator runs it. The target, staging and the source are
//! reached through fault proxies ([`support::fault`]), so one database can go away while the
//! others stay (the test databases share one server of each kind); server restarts are in
//! `tests/serial_faults.rs`. A writer keeps changing the source (inserts, updates, deletes)
//! through every fault; after each, the target must equal the source value by value, and the
//! process must still run unless the test stopped it. A checkpoint ahead of the target would
//! make a restart skip rows, so the restarts' convergence also shows the checkpoint never ran
//! ahead.
//!
//! `FAULT_KILL_ROWS` sets the size of the kill -9 stream (100,000 rows by default; the
//! benchmark size is 1,000,000).

mod support;

use std::time::{Duration, Instant};

use support::fault::Traffic;
use support::http_get;
use support::workload::{Kind, Rig, still_runs, wait_for_log};

/// The target goes away for `outage` while the source keeps changing: replication waits it
/// out, says so once, answers 503 on `/_/healthz` meanwhile, and converges.
async fn target_outage(kind: Kind, outage: Duration) {
    let rig = Rig::new(kind).await;
    let mut run = rig.start(&[]);
    let writer = rig.writer(5, Duration::from_millis(20), u64::MAX).await;
    rig.converge(&run, Duration::from_secs(60)).await;
    rig.target_proxy.cut();
    wait_for_log(&run, "target unreachable, retrying every", Duration::from_secs(30)).await;
    let (status, body) = rig.healthz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("target: unreachable since "), "{body}");
    tokio::time::sleep(outage).await;
    still_runs(&mut run);
    rig.target_proxy.restore();
    let restored = Instant::now();
    wait_for_log(&run, "target reachable again", Duration::from_secs(30)).await;
    let transactions = writer.finish().await;
    let rows = rig.converge(&run, Duration::from_secs(60)).await;
    let recovered = restored.elapsed();
    assert!(rows > 0 && transactions > 0);
    let log = run.log();
    assert_eq!(log.matches("target unreachable, retrying every").count(), 1, "logged once\n{log}");
    let (status, body) = rig.healthz().await;
    assert_eq!((status, body.trim()), (200, "active"));
    let (_, varz) = http_get(&rig.metrics, "/_/varz").await;
    assert!(varz.contains(r#"dependency_outages_total{dependency="target"} 1"#), "{varz}");
    assert!(varz.contains(r#"dependency_unavailable_since_seconds{dependency="target"} 0"#));
    still_runs(&mut run);
    assert!(run.stop(), "clean stop\n{}", run.log());
    eprintln!(
        "FIGURE {kind:?}: target down {outage:?}: {rows} rows compared, {transactions} \
         transactions, converged {recovered:?} after it came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_rides_out_the_target_down_for_10_s() {
    target_outage(Kind::Pg, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_rides_out_the_target_down_for_10_s() {
    target_outage(Kind::My, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_rides_out_the_target_down_for_60_s() {
    target_outage(Kind::Pg, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_rides_out_the_target_down_for_60_s() {
    target_outage(Kind::My, Duration::from_secs(60)).await;
}

/// Staging goes away for longer than the lease (30 s): applying stops once the lease can no
/// longer be renewed (another instance could take it), and starts again from the checkpoint
/// when staging is back.
async fn staging_outage(kind: Kind) {
    let rig = Rig::new(kind).await;
    let mut run = rig.start(&["--gracePeriod", "5s"]);
    let writer = rig.writer(5, Duration::from_millis(20), u64::MAX).await;
    rig.converge(&run, Duration::from_secs(60)).await;
    rig.staging_proxy.cut();
    wait_for_log(&run, "staging unreachable, retrying every", Duration::from_secs(30)).await;
    let (status, body) = rig.healthz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("staging: "), "{body}");
    wait_for_log(&run, "replication stopped on an outage", Duration::from_secs(90)).await;
    still_runs(&mut run);
    rig.staging_proxy.restore();
    let restored = Instant::now();
    wait_for_log(&run, "holding the lease in staging: active", Duration::from_secs(30)).await;
    let transactions = writer.finish().await;
    let rows = rig.converge(&run, Duration::from_secs(60)).await;
    let recovered = restored.elapsed();
    let (status, body) = rig.healthz().await;
    assert_eq!((status, body.trim()), (200, "active"));
    still_runs(&mut run);
    assert!(run.stop(), "clean stop\n{}", run.log());
    eprintln!(
        "FIGURE {kind:?}: staging down past the lease (35 s): {rows} rows compared, \
         {transactions} transactions, converged {recovered:?} after it came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_rides_out_staging_down_past_its_lease() {
    staging_outage(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_rides_out_staging_down_past_its_lease() {
    staging_outage(Kind::My).await;
}

/// The source connection is cut three times while a large transaction streams, and the
/// source is then refused for 5 s: it reconnects and resumes where it was.
async fn source_cuts(kind: Kind) {
    let rig = Rig::new(kind).await;
    let mut run = rig.start(&[]);
    rig.writer(5, Duration::ZERO, 10).await.join().await;
    rig.converge(&run, Duration::from_secs(60)).await;
    // One transaction of 50,000 rows, the connection cut while it streams.
    let big = rig.writer(50_000, Duration::ZERO, 1).await;
    while big.transactions() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        rig.source_proxy.cut_connections();
    }
    big.join().await;
    rig.converge(&run, Duration::from_secs(60)).await;
    let writer = rig.writer(5, Duration::from_millis(20), u64::MAX).await;
    // The cuts above began outages of their own: this one is the next.
    let before = run.log().matches("source unreachable, retrying every").count();
    rig.source_proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.log().matches("source unreachable, retrying every").count() == before {
        assert!(Instant::now() < deadline, "{}", run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = rig.healthz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("source: unreachable since "), "{body}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    rig.source_proxy.restore();
    let restored = Instant::now();
    let transactions = writer.finish().await;
    let rows = rig.converge(&run, Duration::from_secs(60)).await;
    let recovered = restored.elapsed();
    wait_for_log(&run, "source reachable again", Duration::from_secs(10)).await;
    still_runs(&mut run);
    assert!(run.stop(), "clean stop\n{}", run.log());
    eprintln!(
        "FIGURE {kind:?}: source connection cut 3 times mid-transaction (50,000 rows), then \
         refused 5 s: {rows} rows compared, {transactions} transactions, converged \
         {recovered:?} after it came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_rides_out_source_connections_cut_mid_transaction() {
    source_cuts(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_rides_out_source_connections_cut_mid_transaction() {
    source_cuts(Kind::My).await;
}

/// kill -9 at ten random points of a stream of 1,000-row transactions, each followed by a
/// restart: nothing is lost, nothing applied twice shows.
async fn kill_9_ten_times(kind: Kind) {
    let rows: u64 =
        std::env::var("FAULT_KILL_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rig = Rig::new(kind).await;
    let mut run = rig.start(&[]);
    let transactions = (rows / 1_000).max(10);
    // The stream spans about 20 s when the source keeps up: the kills land mid-stream.
    let pace = Duration::from_millis(20_000 / transactions);
    let writer = rig.writer(1_000, pace, transactions).await;
    let started = Instant::now();
    // Points spread over the stream's expected length, at random within each tenth.
    let mut state = u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15 ^ kind as u64;
    let mut kills = Vec::new();
    for i in 0..10 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = transactions * i / 10 + state % (transactions / 10).max(1);
        while writer.transactions() < at {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        run.kill9();
        kills.push(at);
        run = rig.start(&[]);
    }
    let written = writer.join().await;
    let compared = rig.converge(&run, Duration::from_secs(300)).await;
    still_runs(&mut run);
    assert!(run.stop(), "clean stop\n{}", run.log());
    eprintln!(
        "FIGURE {kind:?}: kill -9 after source transactions {kills:?}: {compared} rows compared, {} \
         rows written in {written} transactions, converged {:?} after the start",
        written * 1_000,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_survives_kill_9_at_ten_points_of_a_stream() {
    kill_9_ten_times(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_survives_kill_9_at_ten_points_of_a_stream() {
    kill_9_ten_times(Kind::My).await;
}

/// SIGTERM while a backlog is applied: a clean exit within the grace period, and a restart
/// resumes from the checkpoint.
async fn sigterm_during_backlog(kind: Kind) {
    let rig = Rig::new(kind).await;
    let mut first = rig.start(&[]);
    wait_for_log(&first, "holding the lease in staging: active", Duration::from_secs(30)).await;
    assert!(first.stop(), "clean stop\n{}", first.log());
    // A backlog of 50,000 rows, then replicator, stopped while it applies them.
    rig.writer(1_000, Duration::ZERO, 50).await.join().await;
    let mut run = rig.start(&[]);
    let target = rig.tgt.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = target.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing applied\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    assert!(run.stop(), "SIGTERM: a clean exit\n{}", run.log());
    let stopped_in = stopping.elapsed();
    assert!(run.log().contains("stopped"), "{}", run.log());
    let mut run = rig.start(&[]);
    let rows = rig.converge(&run, Duration::from_secs(120)).await;
    still_runs(&mut run);
    assert!(run.stop());
    eprintln!(
        "FIGURE {kind:?}: SIGTERM mid-backlog: exited in {stopped_in:?}; {rows} rows compared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_stops_cleanly_on_sigterm_during_a_backlog() {
    sigterm_during_backlog(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_stops_cleanly_on_sigterm_during_a_backlog() {
    sigterm_during_backlog(Kind::My).await;
}

/// A target 100 ms away (50 ms each way): slower, and still exact.
async fn slow_target(kind: Kind) {
    let rig = Rig::new(kind).await;
    rig.target_proxy.traffic(Traffic::Delay(Duration::from_millis(50)));
    let mut run = rig.start(&[]);
    let writer = rig.writer(5, Duration::from_millis(10), u64::MAX).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let transactions = writer.finish().await;
    let started = Instant::now();
    let rows = rig.converge(&run, Duration::from_secs(120)).await;
    still_runs(&mut run);
    assert!(run.stop(), "clean stop\n{}", run.log());
    eprintln!(
        "FIGURE {kind:?}: 100 ms target round trips: {rows} rows, {transactions} transactions, caught \
         up {:?} after the writes ended",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_keeps_up_with_a_slow_target() {
    slow_target(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_keeps_up_with_a_slow_target() {
    slow_target(Kind::My).await;
}

/// The target turns read-only (as a primary that became a replica in a failover) and its
/// sessions are ended: replication waits, taking a new session on each attempt (a session
/// keeps the setting it started with), and goes on once the target is writable again.
async fn target_read_only(kind: Kind) {
    let rig = Rig::new(kind).await;
    let mut run = rig.start(&[]);
    let writer = rig.writer(5, Duration::from_millis(20), u64::MAX).await;
    rig.converge(&run, Duration::from_secs(60)).await;
    let admin = support::pg_connect(&support::pg_url()).await;
    let database = &rig.tgt.name;
    let set = format!("ALTER DATABASE \"{database}\" SET default_transaction_read_only = on");
    admin.batch_execute(&set).await.expect("read-only");
    support::pg_terminate_sessions(database).await;
    // /_/healthz shows the outage's last failure.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = rig.healthz().await;
        if status == 503 && body.contains("read-only transaction") {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}\n{}", run.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    still_runs(&mut run);
    let reset = format!("ALTER DATABASE \"{database}\" RESET default_transaction_read_only");
    admin.batch_execute(&reset).await.expect("writable");
    let restored = Instant::now();
    let transactions = writer.finish().await;
    let rows = rig.converge(&run, Duration::from_secs(60)).await;
    let recovered = restored.elapsed();
    let log = run.log();
    assert!(log.contains("unreachable, retrying every"), "{log}");
    assert!(log.contains("reachable again"), "{log}");
    still_runs(&mut run);
    assert!(run.stop(), "clean stop\n{}", run.log());
    eprintln!(
        "FIGURE {kind:?}: target read-only 3 s: {rows} rows compared, {transactions} \
         transactions, converged {recovered:?} after it was writable again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglogical_waits_while_the_target_is_read_only() {
    target_read_only(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mylogical_waits_while_the_target_is_read_only() {
    target_read_only(Kind::My).await;
}
