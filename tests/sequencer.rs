//! The immediate sequencer: coalescing without splitting, the flush period, retries with
//! backoff, the checkpoint never ahead of the last commit (a target that fails on cue), and
//! a run against a real PostgreSQL target with staging checkpoints.

mod support;

use std::time::Duration;

use replicator::error::RetryConfig;
use replicator::sequencer::SequencerConfig;
use replicator::sequencer::testing::{FaultyTarget, MemoryCheckpoints};
use replicator::sequencer::{SequencerError, run_immediate};
use replicator::staging::StagingCheckpoints;
use replicator::staging::{CheckpointStore, StagingDialect, StagingSchema, prepare};
use replicator::target::postgres::apply::Dialect;
use replicator::target::postgres::writer::PgTarget;
use replicator::types::Value;
use replicator::types::mutation::{Mutation, Position, SourceTransaction, row};
use replicator::types::position::PgLsn;
use support::PgDatabase;
use tokio::sync::mpsc;

fn config(flush_size: usize, flush_period_ms: u64, max_retries: u32) -> SequencerConfig {
    SequencerConfig {
        flush_size,
        flush_period: Duration::from_millis(flush_period_ms),
        parallel_applies: false,
        parallelism: 1,
        apply_queue_size: 100,
        collapse_mutations: true,
        retry: RetryConfig {
            max_retries,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            multiplier: 2,
        },
        grace_period: Duration::from_secs(1),
    }
}

/// Source transaction `n` (LSN 0/n) with `rows` upserts into `t`, all with `v` = "tx{n}".
fn tx(n: u64, rows: usize) -> SourceTransaction {
    tx_with(n, rows, |_| format!("tx{n}"))
}

/// Source transaction `n` (LSN 0/n) with `rows` upserts into `t`, row `i` with `v` = `v(i)`.
fn tx_with(n: u64, rows: usize, v: impl Fn(usize) -> String) -> SourceTransaction {
    SourceTransaction {
        mutations: (0..rows)
            .map(|i| {
                Mutation::upsert(
                    "t",
                    row([
                        ("id", Value::Number(format!("{}", n * 1000 + i as u64))),
                        ("v", Value::String(v(i))),
                    ]),
                )
            })
            .collect(),
        position: Position::Lsn(PgLsn(n)),
        commit_nanos: 0,
    }
}

async fn feed(txs: Vec<SourceTransaction>) -> mpsc::Receiver<SourceTransaction> {
    let (sender, receiver) = mpsc::channel(64);
    for t in txs {
        sender.send(t).await.expect("send");
    }
    receiver
}

fn lsns(saved: &[Position]) -> Vec<u64> {
    saved
        .iter()
        .map(|p| match p {
            Position::Lsn(l) => l.0,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn transactions_coalesce_up_to_the_flush_size_and_are_never_split() {
    let input = feed(vec![tx(1, 2), tx(2, 2), tx(3, 2), tx(4, 7), tx(5, 1)]).await;
    let (mut target, mut checkpoints) = (FaultyTarget::default(), MemoryCheckpoints::default());
    let progress =
        run_immediate(&config(5, 50, 0), input, &mut target, &mut checkpoints).await.expect("run");
    let sizes: Vec<usize> = target.committed.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [4, 2, 7, 1],
        "tx1+tx2, tx3 (tx4 would overflow), tx4 alone though larger, tx5"
    );
    assert_eq!(
        lsns(&checkpoints.saved),
        [2, 3, 4, 5],
        "a checkpoint per commit, at its last transaction"
    );
    assert_eq!((progress.commits, progress.transactions, progress.mutations), (4, 5, 14));
}

#[tokio::test]
async fn batches_ready_behind_the_one_being_written_are_planned_ahead() {
    let input = feed((1..=12).map(|n| tx(n, 1 + n as usize % 3)).collect()).await;
    let mut target =
        FaultyTarget { plan_ahead: true, transient_failures: 1, ..FaultyTarget::default() };
    let mut checkpoints = MemoryCheckpoints::default();
    let progress =
        run_immediate(&config(4, 50, 3), input, &mut target, &mut checkpoints).await.expect("run");
    let applied: Vec<String> =
        target.committed.iter().flatten().map(|m| m.row["id"].to_string()).collect();
    let expected: Vec<String> =
        (1..=12u64).flat_map(|n| (0..1 + n % 3).map(move |i| (n * 1000 + i).to_string())).collect();
    assert_eq!(applied, expected, "every row once, in source order");
    assert_eq!(progress.transactions, 12);
    assert_eq!(
        lsns(&checkpoints.saved).last(),
        Some(&12),
        "checkpoints follow the commits: {:?}",
        checkpoints.saved
    );
    assert!(lsns(&checkpoints.saved).windows(2).all(|w| w[0] < w[1]));
    // The first batch is gathered while nothing is being written, and the one retried after
    // the transient failure is planned again in `apply`; the rest came with their plans.
    assert!(
        target.planned >= target.committed.len() - 2 && target.planned > 0,
        "{} of {} batches planned ahead",
        target.planned,
        target.committed.len()
    );
}

/// Runs `txs` (transaction 4 breaks a deferred unique constraint, which fails only at
/// COMMIT) with `--flushSize flush_size`, then `rest` on a new target. The next batch goes
/// out with the COMMIT of the one before, so it must not commit when that COMMIT fails.
/// Returns the error, the checkpoints and the target's rows per transaction after the
/// failure, and its row count after `rest`.
async fn run_past_a_failed_commit(
    txs: Vec<SourceTransaction>,
    rest: Vec<SourceTransaction>,
    flush_size: usize,
) -> (String, Vec<u64>, Vec<(i64, i64)>, i64) {
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE TABLE t (id int8 PRIMARY KEY, v text UNIQUE DEFERRABLE INITIALLY DEFERRED)",
        )
        .await
        .expect("schema");
    let mut target =
        PgTarget::new(db.client().await, "public", Dialect::Postgres, true).await.expect("target");
    let mut checkpoints = MemoryCheckpoints::default();
    let err =
        run_immediate(&config(flush_size, 20, 0), feed(txs).await, &mut target, &mut checkpoints)
            .await
            .expect_err("the deferred constraint fails at COMMIT");
    let err = replicator::error::with_causes(&err);
    let saved = lsns(&checkpoints.saved);
    let by_tx: Vec<(i64, i64)> = admin
        .query("SELECT id / 1000, count(*) FROM t GROUP BY 1 ORDER BY 1", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    drop(target);
    // The rest applies once the offending transaction is out of the way.
    let mut target =
        PgTarget::new(db.client().await, "public", Dialect::Postgres, true).await.expect("target");
    run_immediate(&config(flush_size, 20, 0), feed(rest).await, &mut target, &mut checkpoints)
        .await
        .expect("run");
    let count: i64 = admin.query_one("SELECT count(*) FROM t", &[]).await.expect("n").get(0);
    (err, saved, by_tx, count)
}

#[tokio::test]
async fn a_commit_that_fails_takes_the_batch_sent_behind_it_down_too() {
    // tx(n, rows) gives all its rows v = "tx{n}": transaction 4 breaks the constraint.
    let txs = vec![tx(1, 1), tx(2, 1), tx(3, 1), tx(4, 2), tx(5, 1), tx(6, 1)];
    let (err, saved, by_tx, count) =
        run_past_a_failed_commit(txs, vec![tx(5, 1), tx(6, 1)], 1).await;
    assert!(err.contains("up to 0/4") && err.contains("duplicate key"), "{err}");
    assert_eq!(saved, [1, 2, 3]);
    assert_eq!(by_tx, [(1, 1), (2, 1), (3, 1)], "nothing after the failed commit");
    assert_eq!(count, 5);
}

/// Source transaction `n` with `rows` upserts into `t`, each with its own `v`, or, with
/// `repeat`, the second row repeating the first one's `v`.
fn wide_tx(n: u64, rows: usize, repeat: bool) -> SourceTransaction {
    tx_with(n, rows, |i| if repeat && i == 1 { format!("{n}-0") } else { format!("{n}-{i}") })
}

#[tokio::test]
async fn a_failed_commit_of_copied_rows_takes_the_next_batch_down_too() {
    // The same with batches large enough for COPY.
    let txs = (1..=6).map(|n| wide_tx(n, 300, n == 4)).collect();
    let rest = vec![wide_tx(5, 300, false), wide_tx(6, 300, false)];
    let (err, saved, by_tx, count) = run_past_a_failed_commit(txs, rest, 300).await;
    assert!(err.contains("up to 0/4") && err.contains("duplicate key"), "{err}");
    assert_eq!(saved, [1, 2, 3]);
    assert_eq!(by_tx, [(1, 300), (2, 300), (3, 300)], "nothing after the failed commit");
    assert_eq!(count, 1500);
}

#[tokio::test]
async fn copied_rows_refused_while_planned_ahead_are_written_with_upserts() {
    // Batch 3's keys are on the target already: its COPY is refused and it is rolled back,
    // and it is written with upserts; the batches around it go in their turn, in order, once
    // each.
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin.batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, v text)").await.expect("schema");
    admin
        .batch_execute("INSERT INTO t SELECT 3000 + g, 'old' FROM generate_series(0, 9) g")
        .await
        .expect("rows already there");
    let mut target =
        PgTarget::new(db.client().await, "public", Dialect::Postgres, true).await.expect("target");
    let mut checkpoints = MemoryCheckpoints::default();
    let txs = (1..=6).map(|n| wide_tx(n, 300, false)).collect();
    run_immediate(&config(300, 20, 0), feed(txs).await, &mut target, &mut checkpoints)
        .await
        .expect("run");
    assert_eq!(lsns(&checkpoints.saved).last(), Some(&6));
    let (count, old, distinct): (i64, i64, i64) = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE v = 'old'), count(DISTINCT v) FROM t",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .expect("counts");
    assert_eq!((count, old, distinct), (1800, 0, 1800), "every row once, the new values");
}

#[tokio::test]
async fn the_flush_period_bounds_how_long_a_transaction_waits() {
    let (sender, receiver) = mpsc::channel(8);
    let run = tokio::spawn(async move {
        let (mut target, mut checkpoints) = (FaultyTarget::default(), MemoryCheckpoints::default());
        run_immediate(&config(1000, 30, 0), receiver, &mut target, &mut checkpoints)
            .await
            .expect("run");
        target
    });
    sender.send(tx(1, 1)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    sender.send(tx(2, 1)).await.expect("send");
    drop(sender);
    let target = run.await.expect("join");
    assert_eq!(
        target.committed.len(),
        2,
        "tx1 was flushed when its period ended, before tx2 arrived"
    );
}

#[tokio::test]
async fn the_checkpoint_stays_at_the_last_commit_when_the_target_fails() {
    let input = feed(vec![tx(1, 2), tx(2, 2), tx(3, 2), tx(4, 2)]).await;
    let mut target = FaultyTarget { fail_after_rows: Some(4), ..FaultyTarget::default() };
    let mut checkpoints = MemoryCheckpoints::default();
    let err = run_immediate(&config(4, 50, 3), input, &mut target, &mut checkpoints)
        .await
        .expect_err("fails");
    assert_eq!(target.rows(), 4);
    assert_eq!(lsns(&checkpoints.saved), [2], "nothing past the last committed transaction");
    assert!(
        matches!(err, SequencerError::Apply { attempts: 1, .. }),
        "a data error is not retried: {err}"
    );
    assert!(
        replicator::error::with_causes(&err).contains("up to 0/4")
            && replicator::error::with_causes(&err).contains("injected failure"),
        "{err}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_then_escalate() {
    let mut target = FaultyTarget { transient_failures: 2, ..FaultyTarget::default() };
    let mut checkpoints = MemoryCheckpoints::default();
    run_immediate(&config(10, 10, 3), feed(vec![tx(1, 1)]).await, &mut target, &mut checkpoints)
        .await
        .expect("retried");
    assert_eq!((target.attempts, target.rows()), (3, 1));

    let mut target = FaultyTarget { transient_failures: 5, ..FaultyTarget::default() };
    let mut checkpoints = MemoryCheckpoints::default();
    let err = run_immediate(
        &config(10, 10, 2),
        feed(vec![tx(1, 1)]).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect_err("gives up");
    assert!(matches!(err, SequencerError::Apply { attempts: 3, .. }), "{err}");
    assert!(checkpoints.saved.is_empty());
}

#[tokio::test]
async fn an_unreachable_target_is_waited_for_past_max_retries() {
    // Twenty refused connections against --maxRetries 2: an outage is not the batch's fault.
    let mut target =
        FaultyTarget { unavailable_failures: 20, transient_failures: 2, ..FaultyTarget::default() };
    let mut checkpoints = MemoryCheckpoints::default();
    run_immediate(&config(10, 10, 2), feed(vec![tx(1, 1)]).await, &mut target, &mut checkpoints)
        .await
        .expect("waited out");
    assert_eq!((target.attempts, target.rows()), (23, 1));
    assert_eq!(lsns(&checkpoints.saved), [1]);
    assert!(
        replicator::outage::current().iter().all(|(d, ..)| *d != "target"),
        "the outage ended with the commit"
    );
}

#[tokio::test]
async fn a_postgres_target_with_staging_checkpoints() {
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin.batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, v text)").await.expect("schema");
    let staging = StagingSchema { database: None, schema: "_replicator".into() };
    prepare(&admin, StagingDialect::Postgres, &staging, true).await.expect("staging");
    let store = CheckpointStore::new(staging.clone(), "pglogical-wal-offset-test.public");
    let mut target =
        PgTarget::new(db.client().await, "public", Dialect::Postgres, true).await.expect("target");
    let mut checkpoints = StagingCheckpoints::new(db.client().await, store.clone());

    // A column added after start-up: the target re-reads the schema when a write names it.
    admin.batch_execute("ALTER TABLE t ADD COLUMN extra int4").await.expect("alter");
    let mut late = tx(3, 1);
    late.mutations[0].row.insert("extra".into(), Value::Number("5".into()));
    let input = feed(vec![tx(1, 3), tx(2, 3), late]).await;
    let progress = run_immediate(&config(1000, 20, 3), input, &mut target, &mut checkpoints)
        .await
        .expect("run");
    assert_eq!(progress.mutations, 7);
    let rows: i64 = admin.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
    assert_eq!(rows, 7);
    let extra: Option<i32> =
        admin.query_one("SELECT extra FROM t WHERE id = 3000", &[]).await.expect("row").get(0);
    assert_eq!(extra, Some(5));
    assert_eq!(store.load_lsn(&admin).await.expect("load"), Some(PgLsn(3)));

    // A data error stops the run; the checkpoint stays at the last commit.
    let bad = SourceTransaction {
        mutations: vec![Mutation::upsert(
            "t",
            row([("id", Value::Number("9".into())), ("nope", Value::Null)]),
        )],
        position: Position::Lsn(PgLsn(4)),
        commit_nanos: 0,
    };
    let err =
        run_immediate(&config(1000, 20, 3), feed(vec![bad]).await, &mut target, &mut checkpoints)
            .await
            .expect_err("unknown column");
    assert!(
        replicator::error::with_causes(&err).contains("table \"t\" has no column \"nope\""),
        "{err}"
    );
    assert_eq!(store.load_lsn(&admin).await.expect("load"), Some(PgLsn(3)));
}

#[tokio::test]
async fn the_userscript_runs_in_the_pipeline() {
    use replicator::script::transform::schema_level;
    use replicator::script::{EngineOptions, ScriptPool, SourceTag, compile_script};
    use std::sync::Arc;

    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin
        .batch_execute("CREATE TABLE customers (id int8 PRIMARY KEY, full_name text, tier text); CREATE TABLE orders (id int8 PRIMARY KEY, total numeric(12,2), doubled numeric(12,2));")
        .await
        .expect("schema");
    let dir = support::TempDir::new();
    let script = dir.join("pipeline.ts");
    std::fs::write(
        &script,
        r#"import * as api from "replicator@v2";
api.configureTargetSchema("db.public", {
  onRowUpsert: (row, meta) => {
    if (meta.table === "audit_logs") return null;
    if (meta.table === "people") {
      const { name, ...rest } = row;
      return { customers: [{ ...rest, full_name: name }] };
    }
    if (row.id === "666") throw new Error("cursed row");
    return row;
  },
  onRowDelete: (row, meta) => (meta.table === "people" ? { customers: [row] } : row),
});
api.configureTargetTables(["orders"], {
  onRowUpsert: (row) => ({ ...row, doubled: (Number(row.total) * 2).toFixed(2) }),
  onRowDelete: (key) => (key[0] === "2" ? null : key),
});
api.configureTargetTables(["customers"], {
  onRowUpsert: (row, meta) => ({ ...row, tier: meta.pglogical ? "replicated" : "unknown" }),
  onRowDelete: (key) => key,
});
"#,
    )
    .expect("write script");
    let compiled = Arc::new(compile_script(&script).expect("compile"));
    let pool = Arc::new(ScriptPool::new(compiled, EngineOptions::default(), 2).expect("pool"));
    let n = |s: &str| Value::Number(s.into());
    let t = |v: &str| Value::String(v.into());
    let txs = vec![
        SourceTransaction {
            mutations: vec![
                Mutation::upsert("people", row([("id", n("1")), ("name", t("Ada"))])),
                Mutation::upsert("audit_logs", row([("id", n("9"))])),
                Mutation::upsert("orders", row([("id", n("1")), ("total", n("10.25"))])),
                Mutation::upsert("orders", row([("id", n("2")), ("total", n("1.00"))])),
            ],
            position: Position::Lsn(PgLsn(1)),
            commit_nanos: 1_700_000_000_000_000_000,
        },
        SourceTransaction {
            mutations: vec![
                Mutation::delete("orders", row([("id", n("2"))])),
                Mutation::delete("orders", row([("id", n("1"))])),
            ],
            position: Position::Lsn(PgLsn(2)),
            commit_nanos: 1_700_000_000_000_000_001,
        },
    ];
    let mut staged = Vec::new();
    for tx in txs {
        staged.push(
            schema_level(&pool, "db.public", SourceTag::PgLogical, tx, |_| None)
                .await
                .expect("schema level"),
        );
    }
    assert_eq!(staged[0].mutations.len(), 3, "audit_logs dropped, people routed to customers");
    let mut target = PgTarget::new(db.client().await, "public", Dialect::Postgres, true)
        .await
        .expect("target")
        .with_script(pool.clone(), "db.public", SourceTag::PgLogical);
    let mut checkpoints = MemoryCheckpoints::default();
    run_immediate(&config(1000, 20, 0), feed(staged).await, &mut target, &mut checkpoints)
        .await
        .expect("run");
    let customers = admin
        .query_one("SELECT full_name, tier FROM customers WHERE id = 1", &[])
        .await
        .expect("row");
    assert_eq!(
        (customers.get::<_, String>(0), customers.get::<_, String>(1)),
        ("Ada".to_owned(), "replicated".to_owned())
    );
    let orders: Vec<(i64, String)> = admin
        .query("SELECT id, doubled::text FROM orders ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        orders,
        [(2, "2.00".to_owned())],
        "order 1 deleted; the delete of order 2 suppressed by the script"
    );

    // A script that throws stops the batch with the script's location; nothing is applied.
    let cursed = SourceTransaction {
        mutations: vec![Mutation::upsert("orders", row([("id", n("666")), ("total", n("1"))]))],
        position: Position::Lsn(PgLsn(3)),
        commit_nanos: 0,
    };
    let key_of = |table: &str| (table == "orders").then(|| vec!["id".to_owned()]);
    let err = schema_level(&pool, "db.public", SourceTag::PgLogical, cursed, key_of)
        .await
        .expect_err("throws")
        .to_string();
    assert!(err.contains("Error: cursed row") && err.contains("at pipeline.ts:9:"), "{err}");
    assert!(
        err.contains(r#"onRowUpsert for schema "db.public" on table "orders", key [666] threw"#),
        "names the row: {err}"
    );
    let metrics = replicator::metrics::global().render();
    assert!(
        metrics.contains(
            r#"script_errors_total{function="onRowUpsert",schema="db.public",table="orders"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"script_rows_filtered_total{function="onRowUpsert",schema="db.public",table="audit_logs"}"#), "{metrics}");
    assert_eq!(lsns(&checkpoints.saved), [2]);
}

#[tokio::test]
async fn the_queue_pushes_back_on_the_source() {
    use replicator::sequencer::Input;
    use replicator::sequencer::queue::bounded;
    let (sender, mut receiver) = bounded(4);
    sender.send(tx(1, 3)).await.expect("fits");
    sender.send(tx(2, 1)).await.expect("fits");
    let blocked = tokio::time::timeout(Duration::from_millis(100), sender.send(tx(3, 1))).await;
    assert!(blocked.is_err(), "a full queue makes the source wait");
    // Taking a transaction gives its room back.
    assert_eq!(receiver.try_recv().map(|t| t.position).ok(), Some(Position::Lsn(PgLsn(1))));
    sender.send(tx(3, 1)).await.expect("fits again");
    assert_eq!(receiver.recv().await.map(|t| t.position), Some(Position::Lsn(PgLsn(2))));
    assert_eq!(receiver.recv().await.map(|t| t.position), Some(Position::Lsn(PgLsn(3))));
    // A transaction larger than the whole queue still passes, alone.
    let big = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(tx(4, 10)).await }
    });
    assert_eq!(receiver.recv().await.map(|t| t.position), Some(Position::Lsn(PgLsn(4))));
    big.await.expect("join").expect("sent");
    drop(receiver);
    assert!(sender.send(tx(5, 1)).await.is_err(), "a stopped sequencer fails the send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_transactions_waiting_in_the_queue_coalesce() {
    use replicator::sequencer::queue::bounded;
    // A backlog of one-row transactions: everything queued is there for the sequencer to
    // coalesce, for the first batch and for each one gathered while another is written.
    let (sender, receiver) = bounded(10_000);
    for n in 1..=100 {
        sender.send(tx(n, 1)).await.expect("queued");
    }
    drop(sender);
    let mut target = FaultyTarget {
        plan_ahead: true,
        delay: Duration::from_millis(2),
        ..FaultyTarget::default()
    };
    let mut checkpoints = MemoryCheckpoints::default();
    let progress = run_immediate(&config(10, 50, 0), receiver, &mut target, &mut checkpoints)
        .await
        .expect("run");
    let sizes: Vec<usize> = target.committed.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10; 10], "ten batches of --flushSize rows");
    assert!(target.planned >= 9, "gathered and planned while the one before was written");
    assert_eq!(progress.transactions, 100);
    assert_eq!(lsns(&checkpoints.saved).last(), Some(&100));
}

#[tokio::test]
async fn a_mysql_target_under_the_sequencer() {
    use mysql_async::prelude::Queryable;
    use replicator::target::mysql::writer::MyTarget;
    let db = support::MyDatabase::create().await;
    let mut admin = db.conn().await;
    admin.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)").await.expect("schema");
    let mut target = MyTarget::new(db.conn().await, &db.name, true).await.expect("target");
    let mut checkpoints = MemoryCheckpoints::default();
    let mut deletes = tx(3, 0);
    deletes.mutations.push(Mutation::delete("t", row([("id", Value::Number("1000".into()))])));
    let progress = run_immediate(
        &config(1000, 20, 3),
        feed(vec![tx(1, 3), tx(2, 2), deletes]).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect("run");
    assert_eq!(progress.mutations, 6);
    let count: Option<u64> = admin.query_first("SELECT COUNT(*) FROM t").await.expect("count");
    assert_eq!(count, Some(4));
    assert_eq!(lsns(&checkpoints.saved), [3]);
}

#[tokio::test]
async fn on_write_runs_inside_the_target_transaction() {
    use replicator::script::{EngineOptions, ScriptPool, SourceTag, compile_script};
    use std::sync::Arc;

    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id int8 PRIMARY KEY, note text NOT NULL); CREATE TABLE replicator_dlq (stmt text, err text);
             CREATE TABLE counts (n int8); INSERT INTO counts VALUES (0);",
        )
        .await
        .expect("schema");
    let dir = support::TempDir::new();
    let script = dir.join("dlq.ts");
    std::fs::write(
        &script,
        r#"import * as api from "replicator@v2";
api.configureTargetTables(["orders"], {
  onWrite: async (rows) => {
    const tx = api.getTX();
    await tx.exec("SAVEPOINT dlq");
    try {
      await api.write(rows);
      await tx.exec("RELEASE SAVEPOINT dlq");
    } catch (err) {
      if (!String(err).includes("SQLSTATE 23502")) throw err;
      await tx.exec("ROLLBACK TO SAVEPOINT dlq");
      for (const op of rows) {
        await tx.exec("SAVEPOINT one");
        try { await api.write([op]); await tx.exec("RELEASE SAVEPOINT one"); }
        catch (e) { await tx.exec("ROLLBACK TO SAVEPOINT one"); await tx.exec("INSERT INTO replicator_dlq VALUES ($1, $2)", op.pk.join(","), String(e)); }
      }
    }
    await tx.exec(`UPDATE ${tx.schema()}.counts SET n = n + $1`, rows.length);
    if (rows.some((op) => op.pk[0] === "13")) throw new Error("unlucky batch");
  },
});
"#,
    )
    .expect("script");
    let pool = Arc::new(
        ScriptPool::new(
            Arc::new(compile_script(&script).expect("compile")),
            EngineOptions::default(),
            1,
        )
        .expect("pool"),
    );
    let mut target = PgTarget::new(db.client().await, "public", Dialect::Postgres, true)
        .await
        .expect("target")
        .with_script(pool, "db.public", SourceTag::PgLogical);
    let n = |s: &str| Value::Number(s.into());
    let t = |v: Option<&str>| v.map_or(Value::Null, |v| Value::String(v.into()));
    let batch = SourceTransaction {
        mutations: vec![
            Mutation::upsert("orders", row([("id", n("1")), ("note", t(Some("ok")))])),
            Mutation::upsert("orders", row([("id", n("2")), ("note", t(None))])),
            Mutation::upsert("orders", row([("id", n("3")), ("note", t(Some("fine")))])),
        ],
        position: Position::Lsn(PgLsn(1)),
        commit_nanos: 0,
    };
    let mut checkpoints = MemoryCheckpoints::default();
    run_immediate(&config(1000, 20, 0), feed(vec![batch]).await, &mut target, &mut checkpoints)
        .await
        .expect("run");
    let ids: Vec<i64> = admin
        .query("SELECT id FROM orders ORDER BY id", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 3]);
    let dlq = admin.query_one("SELECT stmt, err FROM replicator_dlq", &[]).await.expect("dlq row");
    assert_eq!(dlq.get::<_, String>(0), "2");
    assert!(dlq.get::<_, String>(1).contains("SQLSTATE 23502"), "{}", dlq.get::<_, String>(1));
    assert_eq!(admin.query_one("SELECT n FROM counts", &[]).await.expect("n").get::<_, i64>(0), 3);

    // When onWrite throws, the whole target transaction rolls back and the checkpoint stays.
    let unlucky = SourceTransaction {
        mutations: vec![Mutation::upsert("orders", row([("id", n("13")), ("note", t(Some("x")))]))],
        position: Position::Lsn(PgLsn(2)),
        commit_nanos: 0,
    };
    let err = run_immediate(
        &config(1000, 20, 0),
        feed(vec![unlucky]).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect_err("throws");
    assert!(replicator::error::with_causes(&err).contains("unlucky batch"), "{err}");
    assert_eq!(
        admin
            .query_one("SELECT count(*) FROM orders WHERE id = 13", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        0
    );
    assert_eq!(
        admin.query_one("SELECT n FROM counts", &[]).await.expect("n").get::<_, i64>(0),
        3,
        "the counter update rolled back too"
    );
    assert_eq!(lsns(&checkpoints.saved), [1]);
}

#[tokio::test]
async fn parallel_groups_checkpoint_only_what_every_group_committed() {
    use replicator::sequencer::parallel::run_parallel;
    use std::collections::HashMap;
    let groups: HashMap<String, usize> =
        [("a".to_owned(), 1), ("b".to_owned(), 2)].into_iter().collect();
    let m =
        |table: &str, id: &str| Mutation::upsert(table, row([("id", Value::Number(id.into()))]));
    let txs = vec![
        SourceTransaction {
            mutations: vec![m("a", "1"), m("b", "1")],
            position: Position::Lsn(PgLsn(1)),
            commit_nanos: 0,
        },
        SourceTransaction {
            mutations: vec![m("a", "2")],
            position: Position::Lsn(PgLsn(2)),
            commit_nanos: 0,
        },
        SourceTransaction {
            mutations: vec![m("b", "2"), m("b", "3")],
            position: Position::Lsn(PgLsn(3)),
            commit_nanos: 0,
        },
        SourceTransaction {
            mutations: vec![m("a", "4")],
            position: Position::Lsn(PgLsn(4)),
            commit_nanos: 0,
        },
    ];
    let mut checkpoints = MemoryCheckpoints::default();
    // Worker 0 holds group "b" (2 % 2) and fails once it would pass 1 row.
    let err = run_parallel(
        &config(1, 5, 0),
        feed(txs).await,
        groups,
        2,
        |worker| async move {
            Ok(FaultyTarget {
                fail_after_rows: (worker == 0).then_some(1),
                ..FaultyTarget::default()
            })
        },
        &mut checkpoints,
    )
    .await
    .expect_err("group b fails");
    assert!(replicator::error::with_causes(&err).contains("injected failure"), "{err}");
    assert!(
        lsns(&checkpoints.saved).iter().all(|&l| l <= 2),
        "never past tx2: {:?}",
        checkpoints.saved
    );
}

#[tokio::test]
async fn parallel_groups_apply_everything_on_postgres() {
    use replicator::sequencer::parallel::{run_parallel, table_groups};
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int8 PRIMARY KEY); CREATE TABLE orders (id int8 PRIMARY KEY, customer_id int8 REFERENCES customers (id));
             CREATE TABLE products (id int8 PRIMARY KEY, name text);",
        )
        .await
        .expect("schema");
    let schema = replicator::target::postgres::introspect::introspect(&admin, "public")
        .await
        .expect("introspect");
    let groups = table_groups(&schema.names(), &schema.foreign_keys);
    assert_eq!(groups["customers"], groups["orders"]);
    assert_ne!(groups["customers"], groups["products"]);
    let n = |s: u64| Value::Number(s.to_string());
    let txs: Vec<SourceTransaction> = (1..=40u64)
        .map(|i| SourceTransaction {
            mutations: vec![
                Mutation::upsert("orders", row([("id", n(i)), ("customer_id", n(i))])),
                Mutation::upsert("customers", row([("id", n(i))])),
                Mutation::upsert(
                    "products",
                    row([("id", n(i)), ("name", Value::String(format!("p{i}")))]),
                ),
            ],
            position: Position::Lsn(PgLsn(i)),
            commit_nanos: 0,
        })
        .collect();
    let url = db.url.clone();
    let mut checkpoints = MemoryCheckpoints::default();
    let progress = run_parallel(
        &config(10, 5, 2),
        feed(txs).await,
        groups,
        2,
        move |_| {
            let url = url.clone();
            async move {
                let client = support::pg_connect(&url).await;
                PgTarget::new(client, "public", Dialect::Postgres, true)
                    .await
                    .map_err(|e| replicator::target::TargetError::transient(e.to_string()))
            }
        },
        &mut checkpoints,
    )
    .await
    .expect("run");
    assert_eq!((progress.transactions, progress.mutations), (40, 120));
    let count = |t: &str| {
        let admin = &admin;
        let sql = format!("SELECT count(*) FROM {t}");
        async move { admin.query_one(&sql, &[]).await.expect("count").get::<_, i64>(0) }
    };
    assert_eq!(
        (count("customers").await, count("orders").await, count("products").await),
        (40, 40, 40)
    );
    let saved = lsns(&checkpoints.saved);
    assert_eq!(saved.last(), Some(&40), "{saved:?}");
    assert!(saved.windows(2).all(|w| w[0] < w[1]), "checkpoints only move forward: {saved:?}");
}

#[tokio::test]
async fn shutdown_drains_the_queue_and_saves_the_last_checkpoint() {
    use replicator::sequencer::shutdown::run_until;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let (sender, receiver) = mpsc::channel::<SourceTransaction>(4);
    let stopped = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let source = tokio::spawn({
        let (stopped, sent) = (stopped.clone(), sent.clone());
        async move {
            let mut n = 0;
            while !stopped.load(Ordering::SeqCst) {
                n += 1;
                if sender.send(tx(n, 2)).await.is_err() {
                    break;
                }
                sent.store(n, Ordering::SeqCst);
            }
            // Dropping the sender closes the queue: the sequencer drains and returns.
        }
    });
    let (trigger, shutdown) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = trigger.send(());
    });
    let mut target = FaultyTarget { delay: Duration::from_millis(5), ..FaultyTarget::default() };
    let mut checkpoints = MemoryCheckpoints::default();
    let progress = run_until(
        run_immediate(&config(10, 5, 0), receiver, &mut target, &mut checkpoints),
        async {
            let _ = shutdown.await;
        },
        || stopped.store(true, Ordering::SeqCst),
        Duration::from_secs(5),
    )
    .await
    .expect("clean stop");
    source.await.expect("source");
    let last_sent = sent.load(Ordering::SeqCst);
    assert!(last_sent > 0);
    assert_eq!(progress.transactions, last_sent, "everything sent before the stop was applied");
    assert_eq!(
        lsns(&checkpoints.saved).last(),
        Some(&last_sent),
        "the last checkpoint is the last transaction"
    );

    // A target too slow for the grace period: the run fails, saying what happens on restart.
    let (sender, receiver) = mpsc::channel::<SourceTransaction>(4);
    sender.send(tx(1, 1)).await.expect("send");
    let mut slow = FaultyTarget { delay: Duration::from_secs(5), ..FaultyTarget::default() };
    let mut checkpoints = MemoryCheckpoints::default();
    let err = run_until(
        run_immediate(&config(10, 5, 0), receiver, &mut slow, &mut checkpoints),
        async {},
        move || drop(sender),
        Duration::from_millis(50),
    )
    .await
    .expect_err("grace elapsed");
    assert!(
        replicator::error::with_causes(&err)
            .contains("stopping took longer than --gracePeriod (50ms)"),
        "{err}"
    );
}

#[tokio::test]
async fn schema_refresh_picks_up_changes_that_names_do_not_reveal() {
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin
        .batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, v text NOT NULL UNIQUE)")
        .await
        .expect("schema");
    let mut target = PgTarget::new(db.client().await, "public", Dialect::Postgres, true)
        .await
        .expect("target")
        .with_schema_refresh(Some(Duration::from_millis(1)));
    let mut checkpoints = MemoryCheckpoints::default();
    run_immediate(&config(100, 5, 0), feed(vec![tx(1, 1)]).await, &mut target, &mut checkpoints)
        .await
        .expect("first");
    // The key moves to `v`: a stale plan would say ON CONFLICT ("id") and fail.
    admin
        .batch_execute("ALTER TABLE t DROP CONSTRAINT t_pkey; ALTER TABLE t ADD PRIMARY KEY (v)")
        .await
        .expect("alter");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let moved = SourceTransaction {
        mutations: vec![Mutation::upsert(
            "t",
            row([("id", Value::Number("5".into())), ("v", Value::String("tx1".into()))]),
        )],
        position: Position::Lsn(PgLsn(2)),
        commit_nanos: 0,
    };
    run_immediate(&config(100, 5, 0), feed(vec![moved]).await, &mut target, &mut checkpoints)
        .await
        .expect("after the key moved");
    let id: i64 =
        admin.query_one("SELECT id FROM t WHERE v = 'tx1'", &[]).await.expect("row").get(0);
    assert_eq!(id, 5, "upserted by the new key");
}

#[tokio::test]
async fn a_refused_batch_names_the_first_failing_key() {
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin
        .batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, v text NOT NULL)")
        .await
        .expect("schema");
    let mut target =
        PgTarget::new(db.client().await, "public", Dialect::Postgres, true).await.expect("target");
    let mut bad = tx(1, 5);
    bad.mutations[3].row.insert("v".into(), Value::Null);
    let mut checkpoints = MemoryCheckpoints::default();
    let err =
        run_immediate(&config(100, 5, 3), feed(vec![bad]).await, &mut target, &mut checkpoints)
            .await
            .expect_err("NOT NULL");
    let text = replicator::error::with_causes(&err);
    assert!(text.contains("writing table \"t\" failed: null value in column \"v\""), "{text}");
    assert!(
        text.contains("(SQLSTATE 23502)")
            && text.contains("first failing row: table \"t\", key [1003]"),
        "{text}"
    );
    assert!(
        matches!(err, SequencerError::Apply { attempts: 1, .. }),
        "a data error is not retried"
    );
    let rows: i64 = admin.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
    assert_eq!(rows, 0, "nothing of the batch was applied, and the probe rolled back");
}

#[tokio::test]
async fn a_refused_mysql_batch_names_the_first_failing_key() {
    use mysql_async::prelude::Queryable;
    use replicator::target::mysql::writer::MyTarget;
    let db = support::MyDatabase::create().await;
    let mut admin = db.conn().await;
    admin
        .query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .expect("schema");
    let mut target = MyTarget::new(db.conn().await, &db.name, true).await.expect("target");
    let mut bad = tx(1, 4);
    bad.mutations[2].row.insert("v".into(), Value::Null);
    let mut checkpoints = MemoryCheckpoints::default();
    let err =
        run_immediate(&config(100, 5, 3), feed(vec![bad]).await, &mut target, &mut checkpoints)
            .await
            .expect_err("NOT NULL");
    let text = replicator::error::with_causes(&err);
    assert!(
        text.contains("(MySQL error 1048)")
            && text.contains("first failing row: table \"t\", key [1002]"),
        "{text}"
    );
    let rows: Option<u64> = admin.query_first("SELECT COUNT(*) FROM t").await.expect("count");
    assert_eq!(rows, Some(0));
}

#[tokio::test]
async fn a_lost_postgres_target_connection_is_replaced_and_the_batch_retried() {
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text)").await.expect("schema");
    let conn = replicator::conn::ConnString::parse(&db.url).expect("url");
    let mut target = PgTarget::new(db.client().await, "public", Dialect::Postgres, true)
        .await
        .expect("target")
        .with_reconnect(conn);
    let mut checkpoints = MemoryCheckpoints::default();
    run_immediate(&config(100, 5, 3), feed(vec![tx(1, 2)]).await, &mut target, &mut checkpoints)
        .await
        .expect("first batch");
    // The writer's session is cut while idle (an operator's pg_terminate_backend, a restart).
    assert!(support::pg_terminate_sessions(&db.name).await >= 1);
    let admin = db.client().await;
    run_immediate(
        &config(100, 5, 3),
        feed(vec![tx(2, 2), tx(3, 300)]).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect("written on a new connection");
    let rows: i64 = admin.query_one("SELECT count(*) FROM t", &[]).await.expect("count").get(0);
    assert_eq!(rows, 304);
    assert_eq!(lsns(&checkpoints.saved).last(), Some(&3));
}

#[tokio::test]
async fn a_lost_mysql_target_connection_is_replaced_and_the_batch_retried() {
    use mysql_async::prelude::Queryable;
    use replicator::target::mysql::writer::MyTarget;
    let db = support::MyDatabase::create().await;
    let mut admin = db.conn().await;
    admin.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)").await.expect("schema");
    let conn = replicator::conn::ConnString::parse(&db.url).expect("url");
    let params = replicator::conn::mysql::MyParams::from_conn(&conn).expect("params");
    let mut target = MyTarget::new(db.conn().await, &db.name, true)
        .await
        .expect("target")
        .with_reconnect(params);
    let mut checkpoints = MemoryCheckpoints::default();
    run_immediate(&config(100, 5, 3), feed(vec![tx(1, 2)]).await, &mut target, &mut checkpoints)
        .await
        .expect("first batch");
    let ids: Vec<u64> = admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
            (&db.name,),
        )
        .await
        .expect("processlist");
    assert_eq!(ids.len(), 1, "the target's one connection");
    admin.query_drop(format!("KILL {}", ids[0])).await.expect("kill");
    run_immediate(
        &config(100, 5, 3),
        feed(vec![tx(2, 2), tx(3, 3)]).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect("written on a new connection");
    let rows: Option<u64> = admin.query_first("SELECT COUNT(*) FROM t").await.expect("count");
    assert_eq!(rows, Some(7));
    assert_eq!(lsns(&checkpoints.saved).last(), Some(&3));
}

/// Source transaction `n` holding one mutation.
fn one(n: u64, m: Mutation) -> SourceTransaction {
    SourceTransaction { mutations: vec![m], position: Position::Lsn(PgLsn(n)), commit_nanos: 0 }
}

fn num(n: &str) -> Value {
    Value::Number(n.into())
}

/// `INSERT p(1); INSERT c(10, pid=1); UPDATE c(10); DELETE p(1)` as four source transactions,
/// the child's cascaded delete missing as it is from MySQL's binlog.
fn cascade_transactions() -> Vec<SourceTransaction> {
    let child = |v: &str| {
        Mutation::upsert(
            "c",
            row([("id", num("10")), ("pid", num("1")), ("v", Value::String(v.into()))]),
        )
    };
    vec![
        one(1, Mutation::upsert("p", row([("id", num("1"))]))),
        one(2, child("a")),
        one(3, child("b")),
        one(4, Mutation::delete("p", row([("id", num("1"))]))),
    ]
}

#[tokio::test]
async fn a_coalesced_cascade_on_a_mysql_target_ends_as_the_source_transactions_leave_it() {
    use mysql_async::prelude::Queryable;
    use replicator::target::mysql::writer::MyTarget;
    let db = support::MyDatabase::create().await;
    let mut admin = db.conn().await;
    admin
        .query_drop(
            "CREATE TABLE p (id INT PRIMARY KEY) ENGINE=InnoDB;
             CREATE TABLE c (id INT PRIMARY KEY, pid INT NOT NULL, v TEXT,
               FOREIGN KEY (pid) REFERENCES p (id) ON DELETE CASCADE) ENGINE=InnoDB;
             CREATE TABLE p2 (id INT PRIMARY KEY) ENGINE=InnoDB;
             CREATE TABLE c2 (id INT PRIMARY KEY, pid INT NOT NULL, v TEXT,
               FOREIGN KEY (pid) REFERENCES p2 (id)) ENGINE=InnoDB;",
        )
        .await
        .expect("schema");
    let mut target = MyTarget::new(db.conn().await, &db.name, true).await.expect("target");
    let mut checkpoints = MemoryCheckpoints::default();
    let progress = run_immediate(
        &config(100, 50, 3),
        feed(cascade_transactions()).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect("applied in source order");
    assert_eq!(progress.commits, 1, "the four were coalesced");
    let rows: Option<u64> = admin
        .query_first("SELECT (SELECT COUNT(*) FROM p) + (SELECT COUNT(*) FROM c)")
        .await
        .expect("count");
    assert_eq!(rows, Some(0));

    // Without the cascade on the target, the parent's delete is refused, naming the key.
    let rename = |mut t: SourceTransaction| {
        for m in &mut t.mutations {
            m.table = format!("{}2", m.table);
        }
        t
    };
    let err = run_immediate(
        &config(100, 50, 3),
        feed(cascade_transactions().into_iter().map(rename).collect()).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect_err("the parent is still referenced");
    let text = replicator::error::with_causes(&err);
    assert!(text.contains("(MySQL error 1451)"), "{text}");
    assert!(text.contains(r#"first failing row: table "p2", key [1]"#), "{text}");
}

#[tokio::test]
async fn a_coalesced_cascade_on_a_postgres_target_ends_as_the_source_transactions_leave_it() {
    let db = PgDatabase::create().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE TABLE p (id int PRIMARY KEY);
             CREATE TABLE c (id int PRIMARY KEY, pid int NOT NULL REFERENCES p ON DELETE CASCADE, v text);",
        )
        .await
        .expect("schema");
    let mut target =
        PgTarget::new(db.client().await, "public", Dialect::Postgres, true).await.expect("target");
    let mut checkpoints = MemoryCheckpoints::default();
    let progress = run_immediate(
        &config(100, 50, 3),
        feed(cascade_transactions()).await,
        &mut target,
        &mut checkpoints,
    )
    .await
    .expect("applied in source order");
    assert_eq!(progress.commits, 1, "the four were coalesced");
    let rows: i64 = admin
        .query_one("SELECT (SELECT count(*) FROM p) + (SELECT count(*) FROM c)", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn the_target_factory_opens_the_writer_a_url_names() {
    use mysql_async::prelude::Queryable;
    use replicator::target::factory::{AnyTarget, TargetSpec, open};
    let (pg, my) = (PgDatabase::create().await, support::MyDatabase::create().await);
    pg.client()
        .await
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, v text)")
        .await
        .expect("pg");
    my.conn().await.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)").await.expect("my");
    for (url, schema) in [(pg.url.clone(), "public".to_owned()), (my.url.clone(), my.name.clone())]
    {
        let spec = TargetSpec {
            conn: replicator::conn::ConnString::parse(&url).expect("url"),
            schema,
            collapse: true,
            schema_refresh: None,
        };
        let mut target = open(&spec).await.expect("open");
        assert!(matches!(
            (&target, url.starts_with("mysql")),
            (AnyTarget::MySql(_), true) | (AnyTarget::Postgres(_), false)
        ));
        let mut checkpoints = MemoryCheckpoints::default();
        run_immediate(
            &config(100, 5, 3),
            feed(vec![tx(1, 3)]).await,
            &mut target,
            &mut checkpoints,
        )
        .await
        .expect("written");
        assert_eq!(lsns(&checkpoints.saved), [1]);
    }
    let rows: i64 =
        pg.client().await.query_one("SELECT count(*) FROM t", &[]).await.expect("n").get(0);
    let my_rows: Option<u64> =
        my.conn().await.query_first("SELECT COUNT(*) FROM t").await.expect("n");
    assert_eq!((rows, my_rows), (3, Some(3)));
}
