//! The test environment itself: both servers answer, are configured for change capture, and
//! the per-test databases come and go without leaving anything behind.

mod support;

use mysql_async::prelude::Queryable as _;
use support::{MyDatabase, PgDatabase, pg_connect, pg_url};

#[tokio::test]
async fn postgres_is_ready_for_logical_replication() {
    let admin = pg_connect(&pg_url()).await;
    let row = admin.query_one("SHOW wal_level", &[]).await.expect("wal_level");
    assert_eq!(row.get::<_, String>(0), "logical", "run tests/databases.sh");
    let row = admin
        .query_one("SELECT current_setting('max_replication_slots')::int", &[])
        .await
        .expect("max_replication_slots");
    assert!(row.get::<_, i32>(0) >= 20, "parallel tests each need a slot");
}

#[tokio::test]
async fn mariadb_writes_a_row_binlog_with_gtids() {
    let db = MyDatabase::create().await;
    let mut conn = db.conn().await;
    let (log_bin, format, image): (u8, String, String) = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
        .await
        .expect("query")
        .expect("one row");
    assert_eq!(
        (log_bin, format.as_str(), image.as_str()),
        (1, "ROW", "FULL"),
        "run tests/databases.sh"
    );
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.expect("create");
    let before: String =
        conn.query_first("SELECT @@gtid_binlog_pos").await.expect("pos").expect("row");
    conn.query_drop("INSERT INTO t VALUES (1)").await.expect("insert");
    let after: String =
        conn.query_first("SELECT @@gtid_binlog_pos").await.expect("pos").expect("row");
    assert_ne!(before, after, "a committed write advances the GTID position");
    let _ = conn.disconnect().await;
}

#[tokio::test]
async fn postgres_test_databases_are_private_and_dropped() {
    let a = PgDatabase::create().await;
    let b = PgDatabase::create().await;
    assert_ne!(a.name, b.name);
    let client = a.client().await;
    client.batch_execute("CREATE TABLE only_here (id INT PRIMARY KEY)").await.expect("create");
    let other = b.client().await;
    let n: i64 = other
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "a table in one test database is invisible in another");
    let name = a.name.clone();
    drop(client);
    drop(a);
    let admin = pg_connect(&pg_url()).await;
    let n: i64 = admin
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "the guard dropped {name}");
}

#[tokio::test]
async fn mariadb_test_databases_are_dropped() {
    let db = MyDatabase::create().await;
    let name = db.name.clone();
    drop(db);
    let mut admin = mysql_async::Conn::from_url(support::mysql_url()).await.expect("connect");
    let n: Option<u64> = admin
        .exec_first(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?",
            (name.clone(),),
        )
        .await
        .expect("count");
    assert_eq!(n, Some(0), "the guard dropped {name}");
    let _ = admin.disconnect().await;
}
