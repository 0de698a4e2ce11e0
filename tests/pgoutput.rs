//! The pgoutput decoder on messages a real PostgreSQL produced: a slot with the pgoutput
//! plugin, changes of every kind, and `pg_logical_slot_get_binary_changes` to read them.

mod support;

use replicator::source::postgres::pgoutput::Decoder;
use replicator::types::Value;
use replicator::types::mutation::{Op, Position};
use support::{PgDatabase, SlotGuard as Slot, unique_name};

#[tokio::test]
async fn decodes_what_a_real_server_sends() {
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int8 PRIMARY KEY, num numeric(20,4), big text, flag bool, at timestamptz, doc jsonb, tags text[]);
             ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
             CREATE PUBLICATION pub FOR TABLE t;",
        )
        .await
        .expect("schema");
    let slot = Slot { name: unique_name("slot"), url: db.url.clone() };
    client
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot.name])
        .await
        .expect("slot");
    let big = "x".repeat(10_000);
    // One transaction each (a multi-statement query string would be one implicit transaction).
    for sql in [
        format!(
            "INSERT INTO t VALUES (1, 12.5000, '{big}', true, '2024-01-02 03:04:05.5+00', '{{\"a\": [1, 2.50]}}', ARRAY['p q', 'r\"s'])"
        ),
        "BEGIN; UPDATE t SET flag = false WHERE id = 1; UPDATE t SET id = 2 WHERE id = 1; COMMIT;"
            .to_owned(),
        "DELETE FROM t WHERE id = 2".to_owned(),
        "TRUNCATE t".to_owned(),
    ] {
        client.batch_execute(&sql).await.expect("change");
    }
    let messages: Vec<Vec<u8>> = client
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', 'pub')",
            &[&slot.name],
        )
        .await
        .expect("changes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut decoder = Decoder::new();
    let mut transactions = Vec::new();
    for m in &messages {
        if let Some(done) = decoder.decode(m).expect("decodes") {
            transactions.push(done);
        }
    }
    assert_eq!(transactions.len(), 4, "insert, update pair, delete, truncate");

    let insert = &transactions[0].transaction.mutations[0];
    assert_eq!((insert.table.as_str(), insert.op), ("t", Op::Upsert));
    assert_eq!(insert.row["id"], Value::Number("1".into()));
    assert_eq!(insert.row["num"], Value::Number("12.5000".into()), "numeric keeps its scale");
    assert_eq!(insert.row["big"], Value::String(big.clone()));
    assert_eq!(insert.row["flag"], Value::Bool(true));
    assert_eq!(insert.row["at"], Value::String("2024-01-02T03:04:05.5Z".into()));
    assert_eq!(insert.row["doc"].to_json().to_string(), r#"{"a":[1,2.50]}"#);
    assert_eq!(
        insert.row["tags"],
        Value::Array(vec![Value::String("p q".into()), Value::String("r\"s".into())])
    );
    assert!(transactions[0].transaction.commit_nanos > 1_700_000_000_000_000_000);

    let update = &transactions[1].transaction.mutations;
    assert_eq!(update[0].op, Op::Upsert);
    assert!(
        !update[0].row.contains_key("big"),
        "an unchanged TOAST value is left out: {:?}",
        update[0].row.keys()
    );
    assert_eq!(update[0].row["flag"], Value::Bool(false));
    assert_eq!(
        (update[1].op, update[1].row["id"].clone()),
        (Op::Delete, Value::Number("1".into())),
        "key change: delete the old key"
    );
    assert_eq!(
        (update[2].op, update[2].row["id"].clone()),
        (Op::Upsert, Value::Number("2".into()))
    );

    let delete = &transactions[2].transaction.mutations[0];
    assert_eq!(delete.op, Op::Delete);
    assert_eq!(
        delete.row.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["id"],
        "a delete carries the key"
    );
    assert_eq!(transactions[3].truncated, [("public".to_owned(), "t".to_owned())]);

    let positions: Vec<u64> = transactions
        .iter()
        .map(|d| match d.transaction.position {
            Position::Lsn(l) => l.0,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions move forward: {positions:?}");
    drop(slot);
}
