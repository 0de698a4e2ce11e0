//! `/_/varz` and `/_/healthz` over real HTTP: MOLT's metric names after a real apply, 200
//! while the database answers, 503 naming the dependency that does not.

mod support;

use std::sync::Arc;
use std::time::Duration;

use replicator::server::{HealthCheck, HealthError, serve_metrics};
use replicator::target::Target;
use replicator::target::postgres::apply::Dialect;
use replicator::target::postgres::writer::PgTarget;
use replicator::types::Value;
use replicator::types::mutation::{Mutation, Position, SourceTransaction, row};
use replicator::types::position::PgLsn;
use support::{PgDatabase, pg_url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn pg_check(url: String) -> HealthCheck {
    Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(HealthError::new)?;
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.map(|_| ()).map_err(HealthError::new)
        })
    })
}

#[tokio::test]
async fn varz_and_healthz() {
    let db = PgDatabase::create().await;
    db.client().await.batch_execute("CREATE TABLE t (id int8 PRIMARY KEY)").await.expect("schema");
    let mut target =
        PgTarget::new(db.client().await, "public", Dialect::Postgres, true).await.expect("target");
    let tx = SourceTransaction {
        mutations: vec![
            Mutation::upsert("t", row([("id", Value::Number("1".into()))])),
            Mutation::upsert("t", row([("id", Value::Number("2".into()))])),
        ],
        position: Position::Lsn(PgLsn(1)),
        commit_nanos: 0,
    };
    target.apply(&[tx]).await.expect("apply");

    let healthy = serve_metrics(
        "127.0.0.1:0",
        vec![("target".into(), pg_check(pg_url()))],
        Duration::from_secs(5),
    )
    .await
    .expect("serve");
    let (status, body) = get(healthy, "/_/varz").await;
    assert_eq!(status, 200);
    // Labelled with the whole target schema (db.schema), as --targetSchema names it.
    let upserts = format!("apply_upserts_total{{schema=\"{}.public\",table=\"t\"}} 2", db.name);
    for line in
        ["# TYPE apply_upserts_total counter", &upserts, "# TYPE apply_duration_seconds histogram"]
    {
        assert!(body.contains(line), "{line:?} missing:\n{body}");
    }
    let (status, body) = get(healthy, "/_/status").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["caught_up"], true, "nothing is waiting: {body}");
    assert_eq!(get(healthy, "/_/healthz").await, (200, "OK\n".to_owned()));

    let down = serve_metrics(
        "127.0.0.1:0",
        vec![
            ("target".into(), pg_check(pg_url())),
            ("staging".into(), pg_check("postgres://nobody@127.0.0.1:1/x".into())),
        ],
        Duration::from_secs(5),
    )
    .await
    .expect("serve");
    let (status, body) = get(down, "/_/healthz").await;
    assert_eq!(status, 503);
    assert!(body.starts_with("staging: "), "{body}");
    assert_eq!(get(down, "/nope").await.0, 404);
}
