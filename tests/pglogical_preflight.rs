//! Preflight checks of `replicator pglogical` against the real PostgreSQL: each missing
//! piece is one message with its fix; `--createSlot` creates a pgoutput slot.

mod support;

use replicator::source::postgres::preflight::{PreflightError, preflight};
use support::{PgDatabase, RoleGuard, SlotGuard, pg_connect, pg_url, unique_name};

#[tokio::test]
async fn each_missing_piece_is_named_with_its_fix() {
    let db = PgDatabase::create().await;
    let client = db.client().await;
    let slot_guard = SlotGuard { name: unique_name("slot"), url: db.url.clone() };
    let slot = slot_guard.name.clone();
    let err = preflight(&client, "pub", &slot, false).await.expect_err("no publication");
    assert_eq!(err, PreflightError::NoPublication("pub".into()));
    assert!(err.to_string().contains("CREATE PUBLICATION \"pub\" FOR ALL TABLES"));
    client.batch_execute("CREATE PUBLICATION pub").await.expect("publication");
    let err = preflight(&client, "pub", &slot, true).await.expect_err("empty publication");
    assert_eq!(err, PreflightError::EmptyPublication("pub".into()));
    assert!(err.to_string().contains("ALTER PUBLICATION \"pub\" ADD TABLE"), "{err}");
    let slots: i64 = client
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .expect("slots")
        .get(0);
    assert_eq!(slots, 0, "no slot is created for an empty publication");
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); ALTER PUBLICATION pub ADD TABLE t")
        .await
        .expect("publish a table");
    let err = preflight(&client, "pub", &slot, false).await.expect_err("no slot");
    assert!(err.to_string().contains("pass --createSlot"), "{err}");

    let ready = preflight(&client, "pub", &slot, true).await.expect("created");
    assert!(ready.created_slot && ready.confirmed.is_some());
    let again = preflight(&client, "pub", &slot, false).await.expect("exists now");
    assert!(!again.created_slot);

    let other_guard = SlotGuard { name: unique_name("slot"), url: db.url.clone() };
    let other = other_guard.name.clone();
    client
        .execute("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", &[&other])
        .await
        .expect("slot");
    let err = preflight(&client, "pub", &other, false).await.expect_err("wrong plugin");
    assert!(err.to_string().contains("uses plugin \"test_decoding\""), "{err}");

    let role_guard = RoleGuard(unique_name("role"));
    let role = role_guard.0.clone();
    let admin = pg_connect(&pg_url()).await;
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN")).await.expect("role");
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let plain = pg_connect(&url).await;
    let err = preflight(&plain, "pub", &slot, false).await.expect_err("no REPLICATION");
    assert!(err.to_string().contains(&format!("ALTER ROLE \"{role}\" WITH REPLICATION")), "{err}");
    drop(plain);

    drop((slot_guard, other_guard, role_guard));
}
