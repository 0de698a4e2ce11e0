//! The PostgreSQL applier against a real database: every common type round-trips exactly
//! (the database renders what we wrote and what a SQL literal writes, and they must match),
//! collapse keeps columns a later mutation did not carry, composite keys, a primary key
//! change, and foreign-key order, including a cycle.

mod support;

use replicator::target::postgres::apply::{Dialect, execute, plan};
use replicator::target::postgres::codec::PgValue;
use replicator::target::postgres::introspect::introspect;
use replicator::types::Value;
use replicator::types::mutation::{Mutation, row};
use support::PgDatabase;

fn n(s: &str) -> Value {
    Value::Number(s.into())
}
fn s(v: &str) -> Value {
    Value::String(v.into())
}

async fn apply(client: &mut tokio_postgres::Client, batch: &[Mutation]) -> Result<(), String> {
    let schema = introspect(&*client, "public").await.map_err(|e| e.to_string())?;
    let statements = plan(&schema, batch, true, Dialect::Postgres).map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    execute(&tx, &statements).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

async fn texts(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .expect(sql)
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_common_type_round_trips_exactly() {
    let db = PgDatabase::create().await;
    let mut client = db.client().await;
    let columns = "id int8 PRIMARY KEY, i2 int2, i4 int4, i8 int8, num numeric(38,10), f8 float8, f4 float4, b bool, \
        t text, vc varchar(20), by bytea, u uuid, d date, ts timestamp, tstz timestamptz, tm time, iv interval, \
        jb jsonb, js json, ia int4[], ta text[], mood mood, ip inet";
    client
        .batch_execute(&format!(
            "CREATE TYPE mood AS ENUM ('happy', 'sad'); CREATE TABLE actual ({columns}); CREATE TABLE expected ({columns});"
        ))
        .await
        .expect("schema");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("i2", n("-32768"), "-32768"),
        ("i4", n("2147483647"), "2147483647"),
        ("i8", n("9007199254740993"), "9007199254740993"),
        (
            "num",
            n("1234567890123456789012345678.0123456789"),
            "1234567890123456789012345678.0123456789",
        ),
        ("f8", n("0.1"), "0.1"),
        ("f4", n("1.5"), "1.5"),
        ("b", Value::Bool(true), "true"),
        ("t", s("héllo, \"world\" {x} \\ end"), "'héllo, \"world\" {x} \\ end'"),
        ("vc", s("short"), "'short'"),
        ("by", s("\\x00ff10"), "'\\x00ff10'"),
        ("u", s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
        ("d", s("2024-02-29"), "'2024-02-29'"),
        ("ts", s("2024-01-02T03:04:05.123456"), "'2024-01-02 03:04:05.123456'"),
        ("tstz", s("2024-01-02T03:04:05.5Z"), "'2024-01-02 03:04:05.5+00'"),
        ("tm", s("23:59:59.999999"), "'23:59:59.999999'"),
        ("iv", s("1 day 02:03:04"), "'1 day 02:03:04'"),
        (
            "jb",
            Value::Json(
                serde_json::from_str(r#"{"a": [1, 2.50, 12345678901234567890], "b": "x\"y"}"#)
                    .expect("json"),
            ),
            r#"'{"a": [1, 2.50, 12345678901234567890], "b": "x\"y"}'"#,
        ),
        (
            "js",
            Value::Json(serde_json::from_str(r#"{"z": 1, "a": 2}"#).expect("json")),
            r#"'{"z": 1, "a": 2}'"#,
        ),
        ("ia", Value::Array(vec![n("1"), Value::Null, n("3")]), "'{1,NULL,3}'"),
        (
            "ta",
            Value::Array(vec![
                s("a,b"),
                s("q\"uote"),
                s("back\\slash"),
                s("NULL"),
                Value::Null,
                s(""),
            ]),
            r#"ARRAY['a,b', 'q"uote', 'back\slash', 'NULL', NULL, '']"#,
        ),
        ("mood", s("sad"), "'sad'"),
        ("ip", s("192.168.0.1/24"), "'192.168.0.1/24'"),
    ];
    let mut data = row([("id", n("1"))]);
    let (mut names, mut literals) = (vec!["id".to_owned()], vec!["1".to_owned()]);
    for (column, value, literal) in &cases {
        data.insert((*column).into(), value.clone());
        names.push((*column).to_owned());
        literals.push((*literal).to_owned());
    }
    apply(&mut client, &[Mutation::upsert("actual", data.clone())]).await.expect("apply");
    client
        .batch_execute(&format!(
            "INSERT INTO expected ({}) VALUES ({})",
            names.join(", "),
            literals.join(", ")
        ))
        .await
        .expect("literal insert");
    // `json` keeps its input text byte for byte; documents are re-serialized compactly (key
    // order and number digits kept, whitespace not), so it is compared as jsonb.
    let select = names
        .iter()
        .map(|c| if c == "js" { "js::jsonb::text".to_owned() } else { format!("{c}::text") })
        .collect::<Vec<_>>()
        .join(", ");
    let got = texts(&client, &format!("SELECT {select} FROM actual")).await;
    let want = texts(&client, &format!("SELECT {select} FROM expected")).await;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(got[0][i], want[0][i], "column {name}");
    }

    // Reading back through our codec gives the values scripts and the applier use.
    let row = client
        .query_one("SELECT i8, num, b, u, d, tstz, ia, jb FROM actual", &[])
        .await
        .expect("select");
    let read: Vec<Value> = (0..row.len()).map(|i| row.get::<_, PgValue>(i).0).collect();
    assert_eq!(read[0], n("9007199254740993"));
    assert_eq!(read[1], n("1234567890123456789012345678.0123456789"));
    assert_eq!(read[2], Value::Bool(true));
    assert_eq!(read[3], s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(read[4], s("2024-02-29"));
    assert_eq!(read[5], s("2024-01-02T03:04:05.5Z"));
    assert_eq!(read[6], Value::Array(vec![n("1"), Value::Null, n("3")]));
    assert_eq!(
        read[7].to_json()["a"][2].to_string(),
        "12345678901234567890",
        "jsonb numbers keep their digits"
    );

    // Applying the same batch again changes nothing (replays are harmless).
    apply(&mut client, &[Mutation::upsert("actual", data)]).await.expect("replay");
    assert_eq!(texts(&client, &format!("SELECT {select} FROM actual")).await, got);
}

#[tokio::test]
async fn collapse_composite_keys_pk_change_and_absent_columns() {
    let db = PgDatabase::create().await;
    let mut client = db.client().await;
    client
        .batch_execute("CREATE TABLE items (region text, id int8, big text, qty int4, PRIMARY KEY (region, id))")
        .await
        .expect("schema");
    let big = "x".repeat(100_000);
    apply(
        &mut client,
        &[Mutation::upsert(
            "items",
            row([("region", s("eu")), ("id", n("1")), ("big", s(&big)), ("qty", n("1"))]),
        )],
    )
    .await
    .expect("insert");
    // An update that does not carry `big` (PostgreSQL's unchanged TOAST value) keeps it.
    apply(
        &mut client,
        &[Mutation::upsert("items", row([("region", s("eu")), ("id", n("1")), ("qty", n("2"))]))],
    )
    .await
    .expect("update");
    let got = texts(&client, "SELECT length(big), qty FROM items").await;
    assert_eq!(got, [[Some("100000".to_owned()), Some("2".to_owned())]]);

    // Several mutations to one key collapse to the last; a PK change is delete-old + upsert-new.
    apply(
        &mut client,
        &[
            Mutation::upsert("items", row([("region", s("us")), ("id", n("5")), ("qty", n("1"))])),
            Mutation::upsert("items", row([("region", s("us")), ("id", n("5")), ("qty", n("9"))])),
            Mutation::delete("items", row([("region", s("eu")), ("id", n("1"))])),
            Mutation::upsert(
                "items",
                row([("region", s("eu")), ("id", n("2")), ("big", s("moved")), ("qty", n("2"))]),
            ),
        ],
    )
    .await
    .expect("batch");
    let got =
        texts(&client, "SELECT region, id::text, big, qty::text FROM items ORDER BY region, id")
            .await;
    let want: Vec<Vec<Option<String>>> = vec![
        vec![Some("eu".into()), Some("2".into()), Some("moved".into()), Some("2".into())],
        vec![Some("us".into()), Some("5".into()), None, Some("9".into())],
    ];
    assert_eq!(got, want);

    let err = apply(
        &mut client,
        &[Mutation::upsert(
            "items",
            row([("region", s("eu")), ("id", n("3")), ("colour", s("red"))]),
        )],
    )
    .await
    .expect_err("unknown column");
    assert!(err.contains("table \"items\" has no column \"colour\""), "{err}");
}

#[tokio::test]
async fn foreign_keys_order_the_writes_and_a_cycle_is_one_group() {
    let db = PgDatabase::create().await;
    let mut client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE customers (id int8 PRIMARY KEY);
             CREATE TABLE orders (id int8 PRIMARY KEY, customer_id int8 NOT NULL REFERENCES customers (id));
             CREATE TABLE lines (order_id int8 REFERENCES orders (id), n int4, PRIMARY KEY (order_id, n));
             CREATE TABLE a (id int8 PRIMARY KEY, b_id int8);
             CREATE TABLE b (id int8 PRIMARY KEY, a_id int8 REFERENCES a (id) DEFERRABLE INITIALLY DEFERRED);
             ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b (id) DEFERRABLE INITIALLY DEFERRED;",
        )
        .await
        .expect("schema");
    let schema = introspect(&client, "public").await.expect("introspect");
    assert_eq!(schema.tables["lines"].key.len(), 2);
    assert!(schema.foreign_keys.contains(&("orders".to_owned(), "customers".to_owned())));

    // Children arrive first in the batch; parents are written first anyway.
    apply(
        &mut client,
        &[
            Mutation::upsert("lines", row([("order_id", n("10")), ("n", n("1"))])),
            Mutation::upsert("orders", row([("id", n("10")), ("customer_id", n("1"))])),
            Mutation::upsert("customers", row([("id", n("1"))])),
            Mutation::upsert("b", row([("id", n("1")), ("a_id", n("1"))])),
            Mutation::upsert("a", row([("id", n("1")), ("b_id", n("1"))])),
        ],
    )
    .await
    .expect("parents first");
    // Parents deleted before children in the batch; children are deleted first anyway.
    apply(
        &mut client,
        &[
            Mutation::delete("customers", row([("id", n("1"))])),
            Mutation::delete("orders", row([("id", n("10"))])),
            Mutation::delete("lines", row([("order_id", n("10")), ("n", n("1"))])),
        ],
    )
    .await
    .expect("children first");
    let counts = texts(&client, "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT count(*) FROM lines), (SELECT count(*) FROM a)").await;
    assert_eq!(counts, [[Some("0".into()), Some("0".into()), Some("0".into()), Some("1".into())]]);

    let err = apply(
        &mut client,
        &[Mutation::upsert("orders", row([("id", n("11")), ("customer_id", n("404"))]))],
    )
    .await
    .expect_err("FK violation");
    assert!(
        err.contains("writing table \"orders\" failed") && err.contains("(SQLSTATE 23503)"),
        "{err}"
    );
}
