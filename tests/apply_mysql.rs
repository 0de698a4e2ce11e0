//! The MySQL/MariaDB applier against the real MariaDB: common types round-trip exactly (the
//! server renders what we wrote and what a SQL literal writes, and they must match), collapse
//! keeps columns a later mutation did not carry, chunking by the placeholder budget, and
//! foreign-key order.

mod support;

use mysql_async::prelude::Queryable;
use replicator::target::mysql::{execute, introspect, plan};
use replicator::types::Value;
use replicator::types::mutation::{Mutation, row};
use support::MyDatabase;

fn n(s: &str) -> Value {
    Value::Number(s.into())
}
fn s(v: &str) -> Value {
    Value::String(v.into())
}

async fn apply(
    conn: &mut mysql_async::Conn,
    db: &str,
    batch: &[Mutation],
    budget: usize,
) -> Result<usize, String> {
    let schema = introspect(conn, db).await.map_err(|e| e.to_string())?;
    let statements = plan(&schema, batch, true, budget).map_err(|e| e.to_string())?;
    let mut tx =
        conn.start_transaction(mysql_async::TxOpts::default()).await.map_err(|e| e.to_string())?;
    execute(&mut tx, &statements).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(statements.len())
}

async fn rows(conn: &mut mysql_async::Conn, sql: &str) -> Vec<Vec<mysql_async::Value>> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.expect(sql);
    rows.into_iter().map(|r| r.unwrap()).collect()
}

#[tokio::test]
async fn common_types_round_trip_exactly() {
    let db = MyDatabase::create().await;
    let mut conn = db.conn().await;
    let columns = "id BIGINT PRIMARY KEY, i INT, big BIGINT, num DECIMAL(38,10), dbl DOUBLE, flag TINYINT(1), \
        vc VARCHAR(50), txt TEXT, bin VARBINARY(8), d DATE, dt DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME, \
        js JSON, color ENUM('red','green'), gen BIGINT AS (id * 2) STORED";
    conn.query_drop(format!("CREATE TABLE actual ({columns}); CREATE TABLE expected ({columns})"))
        .await
        .expect("schema");
    conn.query_drop("SET time_zone = '+00:00'").await.expect("tz");
    let data = row([
        ("id", n("1")),
        ("i", n("-2147483648")),
        ("big", n("9007199254740993")),
        ("num", n("1234567890123456789012345678.0123456789")),
        ("dbl", n("0.1")),
        ("flag", Value::Bool(true)),
        ("vc", s("héllo 'quoted' \\ \"x\"")),
        ("txt", s(&"long ".repeat(1000))),
        ("bin", s("\\x00ff10")),
        ("d", s("2024-02-29")),
        ("dt", s("2024-01-02T03:04:05.123456")),
        ("ts", s("2024-01-02T03:04:05.5Z")),
        ("tm", s("23:59:59")),
        ("js", Value::Json(serde_json::from_str(r#"{"a": [1, 2.50], "b": null}"#).expect("json"))),
        ("color", s("green")),
        ("gen", n("999")),
    ]);
    apply(&mut conn, &db.name, &[Mutation::upsert("actual", data)], 1000).await.expect("apply");
    conn.query_drop(format!(
        "INSERT INTO expected (id, i, big, num, dbl, flag, vc, txt, bin, d, dt, ts, tm, js, color) VALUES \
         (1, -2147483648, 9007199254740993, 1234567890123456789012345678.0123456789, 0.1, true, \
          'héllo \\'quoted\\' \\\\ \"x\"', '{}', x'00ff10', '2024-02-29', '2024-01-02 03:04:05.123456', \
          '2024-01-02 03:04:05.5', '23:59:59', '{{\"a\":[1,2.50],\"b\":null}}', 'green')",
        "long ".repeat(1000)
    ))
    .await
    .expect("literal insert");
    // JSON documents are written compactly (key order and digits kept, whitespace not), and
    // MariaDB's JSON keeps text as given, so the literal is the compact form.
    let got = rows(&mut conn, "SELECT * FROM actual").await;
    let want = rows(&mut conn, "SELECT * FROM expected").await;
    assert_eq!(got, want);
    assert_eq!(
        got[0][15],
        mysql_async::Value::Bytes(b"2".to_vec()),
        "generated column computed, not written"
    );
}

#[tokio::test]
async fn collapse_chunking_and_foreign_keys() {
    let db = MyDatabase::create().await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, note TEXT, qty INT) ENGINE=InnoDB;
         CREATE TABLE orders (id BIGINT, region CHAR(2), customer_id BIGINT NOT NULL, PRIMARY KEY (region, id),
                              FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB;",
    )
    .await
    .expect("schema");
    // Children first in the batch; 50 customers in statements of at most 10 placeholders.
    let mut batch = vec![Mutation::upsert(
        "orders",
        row([("id", n("1")), ("region", s("eu")), ("customer_id", n("7"))]),
    )];
    for i in 1..=50 {
        batch.push(Mutation::upsert(
            "customers",
            row([("id", n(&i.to_string())), ("note", s("n")), ("qty", n("1"))]),
        ));
    }
    let statements = apply(&mut conn, &db.name, &batch, 10).await.expect("apply");
    assert!(statements >= 17, "50 rows of 3 columns at 10 placeholders a statement: {statements}");
    // A later upsert without `note` keeps it; collapse keeps the last qty.
    apply(
        &mut conn,
        &db.name,
        &[
            Mutation::upsert("customers", row([("id", n("7")), ("qty", n("2"))])),
            Mutation::upsert("customers", row([("id", n("7")), ("qty", n("3"))])),
        ],
        1000,
    )
    .await
    .expect("update");
    let got = rows(&mut conn, "SELECT note, qty FROM customers WHERE id = 7").await;
    assert_eq!(
        got,
        [[mysql_async::Value::Bytes(b"n".to_vec()), mysql_async::Value::Bytes(b"3".to_vec())]]
    );
    // Parent deleted before its child in the batch: children go first.
    apply(
        &mut conn,
        &db.name,
        &[
            Mutation::delete("customers", row([("id", n("7"))])),
            Mutation::delete("orders", row([("id", n("1")), ("region", s("eu"))])),
        ],
        1000,
    )
    .await
    .expect("delete");
    let left: Option<u64> =
        conn.query_first("SELECT COUNT(*) FROM customers").await.expect("count");
    assert_eq!(left, Some(49));
    let err = apply(
        &mut conn,
        &db.name,
        &[Mutation::upsert(
            "orders",
            row([("id", n("2")), ("region", s("us")), ("customer_id", n("404"))]),
        )],
        1000,
    )
    .await
    .expect_err("FK violation");
    assert!(
        err.contains("writing table \"orders\" failed") && err.contains("(MySQL error 1452)"),
        "{err}"
    );
    let err = apply(
        &mut conn,
        &db.name,
        &[Mutation::upsert("orders", row([("id", n("2")), ("colour", s("x"))]))],
        1000,
    )
    .await
    .expect_err("unknown column");
    assert!(err.contains("table \"orders\" has no column \"colour\""), "{err}");
}
