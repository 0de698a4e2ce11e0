//! Staging on a real PostgreSQL: the DDL on an empty database and again on a second start,
//! the missing-schema error, an operator's MOLT-style SQL, checkpoints that only move
//! forward, and claims and staged rows written by COPY first (deciding as the INSERTs do).

mod support;

use replicator::staging::{
    CheckpointStore, Committed, StagingDialect, StagingSchema, prepare, stage,
};
use replicator::types::mutation::Position;
use support::PgDatabase;

fn staging() -> StagingSchema {
    StagingSchema { database: None, schema: "_replicator".into() }
}

#[tokio::test]
async fn ddl_runs_on_an_empty_database_and_again_on_restart() {
    let db = PgDatabase::create().await;
    let client = db.client().await;
    let err = prepare(&client, StagingDialect::Postgres, &staging(), false)
        .await
        .expect_err("no schema yet");
    assert!(err.to_string().contains("pass --stagingCreateSchema"), "{err}");
    prepare(&client, StagingDialect::Postgres, &staging(), true).await.expect("create");
    prepare(&client, StagingDialect::Postgres, &staging(), false)
        .await
        .expect("second start, schema exists");
    // An operator's SQL from MOLT's docs works against these tables.
    client
        .batch_execute(
            "INSERT INTO _replicator.jwt_public_keys (public_key) VALUES ('-----BEGIN PUBLIC KEY-----');
             INSERT INTO _replicator.jwt_revoked_ids (id) VALUES ('d1f5…');
             INSERT INTO _replicator.checkpoints (group_name, source_hlc, partition) VALUES ('g', 1700000000000000000.0000000001, 'p');",
        )
        .await
        .expect("operator SQL");
    let active: bool = client
        .query_one("SELECT active FROM _replicator.jwt_public_keys", &[])
        .await
        .expect("row")
        .get(0);
    assert!(active);
}

#[tokio::test]
async fn checkpoints_move_forward_only() {
    let db = PgDatabase::create().await;
    let client = db.client().await;
    prepare(&client, StagingDialect::Postgres, &staging(), true).await.expect("create");
    let lsn = CheckpointStore::new(staging(), "pglogical-wal-offset-db.public");
    assert_eq!(lsn.load_lsn(&client).await.expect("load"), None);
    let at = |s: &str| Committed::after_commit(Position::Lsn(s.parse().expect("lsn")));
    lsn.save(&client, &at("0/16B3748")).await.expect("first");
    lsn.save(&client, &at("0/16B3748")).await.expect("same again");
    lsn.save(&client, &at("1/0")).await.expect("forward");
    let err = lsn.save(&client, &at("0/FFFFFFFF")).await.expect_err("backwards");
    assert!(err.to_string().contains("refusing to move the checkpoint \"pglogical-wal-offset-db.public\" backwards from 1/0 to 0/FFFFFFFF"), "{err}");
    assert_eq!(
        lsn.load_lsn(&client).await.expect("load").map(|l| l.to_string()).as_deref(),
        Some("1/0")
    );

    let gtid = CheckpointStore::new(staging(), "mysql-wal-offset-db");
    let set = |s: &str| Committed::after_commit(Position::Gtid(s.parse().expect("gtid")));
    gtid.save(&client, &set("0-1-10")).await.expect("first");
    gtid.save(&client, &set("0-1-12,1-1-1")).await.expect("forward");
    assert!(gtid.save(&client, &set("0-1-11")).await.is_err(), "does not contain the stored set");
    assert_eq!(
        gtid.load_gtid(&client).await.expect("load").map(|g| g.to_string()).as_deref(),
        Some("0-1-12,1-1-1")
    );

    client
        .batch_execute(
            "UPDATE _replicator.memo SET value = 'garbage' WHERE key = 'mysql-wal-offset-db'",
        )
        .await
        .expect("corrupt");
    let err = gtid.load_gtid(&client).await.expect_err("bad");
    assert!(err.to_string().contains("is not a valid position"), "{err}");
}

#[tokio::test]
async fn target_schema_must_name_the_connection_database_on_postgres() {
    use replicator::target::postgres::{Server, check_database};
    let db = PgDatabase::create().await;
    let client = db.client().await;
    assert_eq!(
        check_database(&client, "targetSchema", &db.name, "public").await,
        Ok(Server::Postgres)
    );
    let err = check_database(&client, "targetSchema", "otherdb", "public")
        .await
        .expect_err("cross-database");
    assert!(err.contains("PostgreSQL cannot write across databases"), "{err}");
    assert!(err.contains(&format!("use --targetSchema {}.public", db.name)), "{err}");
}

#[tokio::test]
async fn checkpoints_coming_fast_are_saved_paced_and_the_last_one_kept() {
    use replicator::staging::AnnouncingCheckpoints;
    use replicator::staging::Checkpoints;
    use replicator::types::position::PgLsn;
    let db = PgDatabase::create().await;
    let client = db.client().await;
    prepare(&client, StagingDialect::Postgres, &staging(), true).await.expect("create");
    // Counts the writes into memo.
    client
        .batch_execute(
            "CREATE TABLE writes (n int);
             CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO writes VALUES (1); RETURN NULL; END $$;
             CREATE TRIGGER counted AFTER INSERT OR UPDATE ON _replicator.memo
               FOR EACH ROW EXECUTE FUNCTION count_write();",
        )
        .await
        .expect("counter");
    let store = CheckpointStore::new(staging(), "pglogical-wal-offset-db.public");
    let (announce, announced) = tokio::sync::watch::channel(PgLsn(0));
    let lsn_of = |p: &Position| match p {
        Position::Lsn(l) => Some(*l),
        _ => None,
    };
    let mut checkpoints = AnnouncingCheckpoints::new(
        db.client().await,
        replicator::conn::ConnString::parse(&db.url).expect("url"),
        store.clone(),
        announce,
        lsn_of,
    );
    // A commit every millisecond or so.
    let started = std::time::Instant::now();
    for n in 1..=200u64 {
        checkpoints.save(Committed::after_commit(Position::Lsn(PgLsn(n)))).await.expect("save");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    checkpoints.flush(std::time::Duration::from_secs(5)).await.expect("flush");
    assert_eq!(store.load_lsn(&client).await.expect("load"), Some(PgLsn(200)), "the last one");
    assert_eq!(*announced.borrow(), PgLsn(200), "announced once stored");
    let writes: i64 =
        client.query_one("SELECT count(*) FROM writes", &[]).await.expect("count").get(0);
    // At most one save per AnnouncingCheckpoints::PACE, plus the first and the last.
    let most =
        i64::try_from(took.as_millis() / AnnouncingCheckpoints::PACE.as_millis()).expect("ms") + 2;
    assert!((2..=most).contains(&writes), "{writes} writes for 200 commits in {took:?}");
}

#[tokio::test]
async fn two_instances_preparing_staging_at_the_same_moment_both_succeed() {
    // PostgreSQL's CREATE SCHEMA IF NOT EXISTS does not hold against a concurrent creation: the
    // second waits for the first's catalog row, then fails with a unique violation (two
    // `replicator start` launched together: the second exited). Here the first instance's
    // creation is held open in a transaction while the second prepares.
    let db = PgDatabase::create().await;
    let mut first = db.client().await;
    let second = db.client().await;
    let tx = first.transaction().await.expect("begin");
    tx.batch_execute("CREATE SCHEMA IF NOT EXISTS _replicator").await.expect("first creates");
    let preparing =
        tokio::spawn(
            async move { prepare(&second, StagingDialect::Postgres, &staging(), true).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!preparing.is_finished(), "the second waits for the first's schema");
    tx.commit().await.expect("first commits");
    preparing.await.expect("task").expect("the second prepares too");
    let tables: i64 = first
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '_replicator'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(tables >= 6, "{tables} staging tables");
}

/// `n` versions of table `t`'s keys `[from]`, `[from + 1]`, … at `nanos`.
fn versions(from: i64, n: i64, nanos: i64) -> Vec<stage::Version> {
    (from..from + n)
        .map(|k| stage::Version {
            table: "t".into(),
            key: format!("[{k}]"),
            time: replicator::types::position::Hlc { nanos, logical: 0 },
        })
        .collect()
}

#[tokio::test]
async fn claims_by_copy_decide_as_the_upsert_does_and_wait_for_a_claim_in_flight() {
    let db = PgDatabase::create().await;
    let mut client = db.client().await;
    prepare(&client, StagingDialect::Postgres, &staging(), true).await.expect("create");
    let copy = stage::CopyFirst::default();
    let claim = async |client: &mut tokio_postgres::Client, versions: &[stage::Version]| {
        let tx = client.transaction().await.expect("begin");
        let sorted: Vec<&stage::Version> = versions.iter().collect();
        let fresh = stage::claim_with(&tx, &staging(), &sorted, Some(&copy)).await.expect("claim");
        tx.commit().await.expect("commit");
        fresh
    };
    // New keys: all fresh (by COPY).
    assert_eq!(claim(&mut client, &versions(0, 100, 10)).await, vec![true; 100]);
    // Keys 50..100 are there, at a newer time: COPY meets them, the upsert decides.
    let fresh = claim(&mut client, &versions(50, 100, 5)).await;
    assert_eq!(fresh, [vec![false; 50], vec![true; 50]].concat());
    // Newer versions of every key move forward, whichever way the claim goes.
    assert_eq!(claim(&mut client, &versions(0, 150, 20)).await, vec![true; 150]);
    let moved: i64 = client
        .query_one("SELECT count(*) FROM _replicator.key_versions WHERE nanos = 20", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(moved, 150);

    // Two claims of the same new keys (two instances, or a retry overtaking its first copy):
    // the second waits for the first to commit, then finds the version applied.
    let mut other = db.client().await;
    let first = client.transaction().await.expect("begin");
    let keys = versions(1000, 100, 30);
    let sorted: Vec<&stage::Version> = keys.iter().collect();
    let fresh = stage::claim_with(&first, &staging(), &sorted, Some(&copy)).await.expect("claim");
    assert_eq!(fresh, vec![true; 100]);
    let second = tokio::spawn(async move {
        let tx = other.transaction().await.expect("begin");
        let keys = versions(1000, 100, 30);
        let sorted: Vec<&stage::Version> = keys.iter().collect();
        let copy = stage::CopyFirst::default();
        let fresh = stage::claim_with(&tx, &staging(), &sorted, Some(&copy)).await.expect("claim");
        tx.commit().await.expect("commit");
        fresh
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second claim waits for the first");
    first.commit().await.expect("commit");
    assert_eq!(second.await.expect("second"), vec![false; 100]);
}

#[tokio::test]
async fn rows_staged_by_copy_read_back_as_written_and_a_second_copy_keeps_the_first() {
    let db = PgDatabase::create().await;
    let mut client = db.client().await;
    prepare(&client, StagingDialect::Postgres, &staging(), true).await.expect("create");
    for sql in stage::table_ddl(StagingDialect::Postgres, &staging(), "db_public_t") {
        client.batch_execute(&sql).await.expect("per-table staging table");
    }
    let copy = stage::CopyFirst::default();
    let row = |k: i64, nanos: i64, text: &str| stage::Staged {
        time: replicator::types::position::Hlc { nanos, logical: 1 },
        key: format!("[{k}]"),
        mutation: format!(r#"{{"id": {k}, "s": "{text}"}}"#).into_bytes(),
        before: (k % 2 == 0).then(|| b"{\"id\": 0}".to_vec()),
        deletion: k % 3 == 0,
    };
    let mut stage = async |rows: &[stage::Staged]| {
        let tx = client.transaction().await.expect("begin");
        let new = stage::stage_with(&tx, &staging(), "db_public_t", rows, Some(&copy))
            .await
            .expect("stage");
        tx.commit().await.expect("commit");
        new
    };
    let first: Vec<stage::Staged> = (0..100).map(|k| row(k, 10 + k, "first")).collect();
    assert_eq!(stage(&first).await, 100);
    // Sent again, with half of it new: the new half counts, the staged half keeps its first copy.
    let again: Vec<stage::Staged> = (50..150).map(|k| row(k, 10 + k, "again")).collect();
    assert_eq!(stage(&again).await, 50);
    let got = support::dump(
        &client,
        "SELECT nanos::TEXT, logical::TEXT, key, convert_from(mut, 'UTF8'), \
         convert_from(before, 'UTF8'), deletion::TEXT, applied::TEXT, \
         (source_time = to_timestamp(nanos::float8 / 1e9))::TEXT \
         FROM _replicator.db_public_t s ORDER BY s.nanos",
    )
    .await;
    assert_eq!(got.len(), 150);
    for (k, r) in got.iter().enumerate() {
        let k = k as i64;
        let text = if k < 100 { "first" } else { "again" };
        let want = [
            Some((10 + k).to_string()),
            Some("1".to_owned()),
            Some(format!("[{k}]")),
            Some(format!(r#"{{"id": {k}, "s": "{text}"}}"#)),
            (k % 2 == 0).then(|| "{\"id\": 0}".to_owned()),
            Some((k % 3 == 0).to_string()),
            Some("false".to_owned()),
            Some("true".to_owned()),
        ];
        assert_eq!(r.as_slice(), want.as_slice(), "row {k}");
    }
}
