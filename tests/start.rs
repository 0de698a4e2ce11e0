//! `replicator start --immediate` end to end: a test client plays the CockroachDB changefeed
//! over real HTTP(S) (no CockroachDB server runs here), against real PostgreSQL and MariaDB
//! targets with real PostgreSQL staging.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::changefeed::{
    Client, Feed, KeyPair, Proxy, Server, Trust, hlc, insert_key, line, openssl, payload, resolved,
};
use support::{MyDatabase, PgDatabase, TempDir, dump};

const STAGING: &str = "_replicator";

/// A PostgreSQL target (staging in the same database), a running server and an ES256 token
/// for `<db>.public`.
struct Pg {
    dir: TempDir,
    db: PgDatabase,
    client: tokio_postgres::Client,
    key: KeyPair,
    token: String,
    server: Server,
}

impl Pg {
    async fn start(ddl: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new();
        let db = PgDatabase::create().await;
        let client = db.client().await;
        client.batch_execute(ddl).await.expect("target schema");
        let server = start_pg(&dir, &db.url, extra).await;
        let key = KeyPair::ec(&dir, "feed");
        insert_key(&client, STAGING, &key.public).await;
        server.hangup(1).await;
        let token = key.token(&[&format!("{}.public", db.name)]);
        Self { dir, db, client, key, token, server }
    }

    fn feed(&self, path: &str) -> Feed {
        Feed::new(&self.server.addr, Trust::Plain, path, Some(self.token.clone()))
    }

    fn path(&self, rest: &str) -> String {
        format!("/{}/{rest}", self.db.name)
    }

    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        dump(&self.client, sql).await
    }
}

async fn start_pg(dir: &TempDir, url: &str, extra: &[&str]) -> Server {
    let mut args: Vec<String> =
        ["--immediate", "--targetConn", url, "--stagingCreateSchema"].map(String::from).to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start(dir, &args).await
}

fn some(row: &[&str]) -> Vec<Option<String>> {
    row.iter().map(|v| if *v == "NULL" { None } else { Some(v.to_string()) }).collect()
}

fn table(rows: &[&[&str]]) -> Vec<Vec<Option<String>>> {
    rows.iter().map(|r| some(r)).collect()
}

#[tokio::test]
async fn table_feed_writes_every_value_kind_updates_and_deletes_by_key_names() {
    let pg = Pg::start(
        "CREATE TABLE orders (id int8, region text, total numeric(30,10), doc jsonb, tags text[], \
           uid uuid, at timestamptz, raw bytea, note text, PRIMARY KEY (region, id)); \
         CREATE SCHEMA \"Sales Data\"; \
         CREATE TABLE \"Sales Data\".items (id int8 PRIMARY KEY, n int4)",
        &[],
    )
    .await;
    let mut feed = pg.feed(&pg.path("public"));
    let big = "9007199254740993";
    let body = format!(
        r#"{{"payload":[
        {{"after":{{"id":{big},"region":"eu","total":12345678901234567890.0123456789,"doc":{{"a":[1,2.50],"b":null}},
          "tags":["x","y z"],"uid":"7f1c7b9e-2f6a-4a8e-9a43-2b0f1d4c8e11","at":"2026-12-01T10:00:00.123456Z",
          "raw":"\\x0102ff","note":null}},"key":["eu",{big}],"topic":"orders","updated":"{t1}"}},
        {{"after":{{"id":2,"region":"us","total":4E+2,"doc":[1,"two"],"tags":[],"uid":null,"at":null,"raw":null,"note":"keep"}},
          "key":["us",2],"topic":"{db}.public.orders","updated":"{t1}"}},
        {{"after":{{"id":3,"region":"us","total":1,"note":"gone soon"}},"key":["us",3],"topic":"orders","updated":"{t1}"}}
        ],"length":3}}"#,
        t1 = hlc(1_700_000_000_000_000_000, 1),
        db = pg.db.name,
    );
    feed.deliver(&body).await;
    // An update (a newer version), and a delete that names the key in primary-key order
    // (region, id), the reverse of the columns' order.
    feed.deliver_resolved(
        &[
            // An unknown field in a line (the mvcc_timestamp option) is ignored.
            json!({"after":{"id":2,"region":"us","total":5.5,"note":"updated"},"key":["us",2],
                   "topic":"orders","updated":hlc(1_700_000_000_000_000_002, 0),
                   "mvcc_timestamp":"1700000000000000002.0000000000"}),
            line("orders", json!(["us", 3]), None, &hlc(1_700_000_000_000_000_002, 0)),
        ],
        &hlc(1_700_000_000_000_000_003, 0),
    )
    .await;
    assert!(feed.refusals.is_empty(), "refused: {:?}", feed.refusals);
    assert_eq!(
        pg.rows(
            "SELECT id::text, region, total::text, doc::text, tags::text, uid::text, \
             to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), raw::text, note FROM orders ORDER BY id"
        )
        .await,
        table(&[
            &["2", "us", "5.5000000000", "[1, \"two\"]", "{}", "NULL", "NULL", "NULL", "updated"],
            &[
                big,
                "eu",
                "12345678901234567890.0123456789",
                r#"{"a": [1, 2.50], "b": null}"#,
                "{x,\"y z\"}",
                "7f1c7b9e-2f6a-4a8e-9a43-2b0f1d4c8e11",
                "2026-12-01 10:00:00.123456",
                "\\x0102ff",
                "NULL"
            ],
        ])
    );
    assert_eq!(
        pg.rows(
            "SELECT source_hlc::text, target_applied_at IS NOT NULL FROM _replicator.checkpoints"
        )
        .await,
        table(&[&["1700000000000000003.0000000000", "t"]])
    );

    // A schema whose name needs percent-escaping in the URL.
    let mut items = Feed::new(
        &pg.server.addr,
        Trust::Plain,
        &pg.path("Sales%20Data"),
        Some(pg.key.token(&[&format!("{}.\"Sales Data\"", pg.db.name)])),
    );
    items
        .deliver(&payload(&[line("items", json!([1]), Some(json!({"id":1,"n":7})), &hlc(5, 0))]))
        .await;
    assert_eq!(pg.rows("SELECT id, n FROM \"Sales Data\".items").await, table(&[&["1", "7"]]));

    // The metrics name the table and the status codes.
    let varz = Client::new(&pg.server.addr, Trust::Plain).get("/_/varz").await;
    assert_eq!(varz.status, 200);
    let group = format!("{}.public", pg.db.name);
    for needle in [
        "http_status_codes_total{code=\"200\"}".to_owned(),
        format!("mutations_received_count{{schema=\"{group}\",table=\"orders\"}} 5"),
        format!("target_applied_timestamp_seconds{{schema=\"{group}\"}} 1700000000"),
        "http_latency_seconds_bucket".to_owned(),
    ] {
        assert!(varz.body.contains(&needle), "no {needle} in\n{}", varz.body);
    }
}

#[tokio::test]
async fn query_feeds_ndjson_files_and_resolved_files() {
    let pg = Pg::start(
        "CREATE TABLE orders (region text, id int8, note text, PRIMARY KEY (region, id)); \
         CREATE TABLE order_lines (id int8 PRIMARY KEY, qty int4)",
        &[],
    )
    .await;
    // A query feed (`AS SELECT`): the table is in the path, the key comes from the target's
    // primary key found in `after` (or `before` for a delete, with `diff`).
    let mut query = pg.feed(&pg.path("public/orders"));
    let t = |n: i64| hlc(1_700_000_000_000_000_000 + n, 0);
    query
        .deliver(
            &json!({"payload":[
            {"after":{"region":"eu","id":1,"note":"a"},"updated":t(1)},
            {"after":{"region":"eu","id":2,"note":"b"},"updated":t(1)},
            {"after":null,"before":null,"updated":t(1)}
        ],"length":3})
            .to_string(),
        )
        .await;
    query
        .deliver(
            &json!({"payload":[
                {"after":null,"before":{"region":"eu","id":2,"note":"b"},"updated":t(2)}
            ]})
            .to_string(),
        )
        .await;
    query.deliver(&resolved(&t(3))).await;
    let missing = query
        .client
        .post(
            &query.path,
            query.token.as_deref(),
            &json!({"payload":[{"after":{"id":3},"updated":t(4)}]}).to_string(),
        )
        .await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert!(missing.body.contains("region"), "{missing:?}");
    assert_eq!(pg.rows("SELECT region, id, note FROM orders").await, table(&[&["eu", "1", "a"]]));

    // A cloud-storage (experimental-http) data file: the topic is in the file name.
    let mut files = pg.feed(&pg.path(
        "public/2026-12-01/202612011000000000000000000000000-56087568dba1e6b8-1-72-00000000-order_lines-1.ndjson",
    ));
    files
        .deliver(&format!(
            "{}\n{}\n\n{}\n",
            json!({"after":{"id":1,"qty":1},"key":[1],"updated":t(5)}),
            json!({"after":{"id":2,"qty":2},"key":[2],"updated":t(5)}),
            json!({"after":null,"key":[1],"updated":t(6)}),
        ))
        .await;
    assert_eq!(pg.rows("SELECT id, qty FROM order_lines").await, table(&[&["2", "2"]]));
    let mut marker =
        pg.feed(&pg.path("public/2026-12-01/202612011000000000000000000000000.RESOLVED"));
    marker.deliver("").await;
    assert_eq!(
        pg.rows("SELECT max(source_hlc)::text FROM _replicator.checkpoints").await,
        table(&[&["1796119200000000000.0000000000"]])
    );
}

/// What a request is, where it goes, with which token, its body, the status and a word the
/// answer must hold.
type Case<'a> = (&'a str, String, Option<&'a str>, String, u16, &'a str);

/// A MariaDB row as text.
type MyRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One POST, no retry.
async fn post(client: &mut Client, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let r = client.post(path, token, body).await;
    (r.status, r.body)
}

#[tokio::test]
async fn every_status_code_says_what_happened_and_refusals_write_nothing() {
    let pg = Pg::start(
        "CREATE TABLE orders (id int8 PRIMARY KEY, note text NOT NULL, qty int4 CHECK (qty >= 0))",
        &["--maxRequestBytes", "64KiB"],
    )
    .await;
    let path = pg.path("public");
    let token = Some(pg.token.as_str());
    let mut c = Client::new(&pg.server.addr, Trust::Plain);
    let ok = |id: i64, t: i64| {
        line("orders", json!([id]), Some(json!({"id":id,"note":"n","qty":1})), &hlc(t, 0))
    };

    let cases: Vec<Case> = vec![
        ("no such path", "/_/nothing".into(), token, "{}".into(), 404, ""),
        ("schema too short", format!("/{}", pg.db.name), token, "{}".into(), 404, "target schema"),
        ("too many segments", "/a/b/c/d/e/f/g/h/i".into(), token, "{}".into(), 404, "8 segments"),
        ("not JSON", path.clone(), token, "garbage".into(), 400, "not JSON"),
        (
            "both",
            path.clone(),
            token,
            json!({"payload":[],"resolved":hlc(1,0)}).to_string(),
            400,
            "both",
        ),
        (
            "bare envelope",
            path.clone(),
            token,
            json!({"id":1,"__crdb__":{"updated":hlc(1,0)}}).to_string(),
            400,
            "envelope='wrapped'",
        ),
        (
            "no key",
            path.clone(),
            token,
            json!({"payload":[{"after":{"id":1,"note":"x"},"topic":"orders","updated":hlc(1,0)}]})
                .to_string(),
            400,
            "key",
        ),
        (
            "no topic",
            path.clone(),
            token,
            json!({"payload":[{"after":{"id":1,"note":"x"},"key":[1],"updated":hlc(1,0)}]})
                .to_string(),
            400,
            "topic",
        ),
        (
            "no updated",
            path.clone(),
            token,
            json!({"payload":[{"after":{"id":1,"note":"x"},"key":[1],"topic":"orders"}]})
                .to_string(),
            400,
            "updated",
        ),
        (
            "zero time",
            path.clone(),
            token,
            payload(&[line("orders", json!([1]), Some(json!({"id":1,"note":"x"})), "0.0")]),
            400,
            "zero",
        ),
        (
            "unknown table",
            path.clone(),
            token,
            payload(&[line("nope", json!([1]), Some(json!({"id":1})), &hlc(1, 0))]),
            400,
            "\"nope\"",
        ),
        (
            "unknown column",
            path.clone(),
            token,
            payload(&[line(
                "orders",
                json!([1]),
                Some(json!({"id":1,"note":"x","colour":"red"})),
                &hlc(1, 0),
            )]),
            400,
            "\"colour\"",
        ),
        (
            "schema not in the token",
            format!("/{}/nope", pg.db.name),
            token,
            "{}".into(),
            403,
            "nope",
        ),
        ("no token", path.clone(), None, payload(&[ok(1, 1)]), 401, "Bearer"),
        ("bad token", path.clone(), Some("abc.def.ghi"), payload(&[ok(1, 1)]), 401, "token"),
        (
            "NOT NULL",
            path.clone(),
            token,
            payload(&[line("orders", json!([1]), Some(json!({"id":1,"note":null})), &hlc(1, 0))]),
            422,
            "orders",
        ),
        (
            "CHECK",
            path.clone(),
            token,
            payload(&[line(
                "orders",
                json!([1]),
                Some(json!({"id":1,"note":"x","qty":-1})),
                &hlc(1, 0),
            )]),
            422,
            "orders",
        ),
        (
            "type",
            path.clone(),
            token,
            payload(&[line(
                "orders",
                json!([1]),
                Some(json!({"id":1,"note":"x","qty":"many"})),
                &hlc(1, 0),
            )]),
            422,
            "orders",
        ),
        (
            "too large",
            path.clone(),
            token,
            payload(&[line(
                "orders",
                json!([1]),
                Some(json!({"id":1,"note":"x".repeat(70_000)})),
                &hlc(1, 0),
            )]),
            413,
            "maxRequestBytes",
        ),
    ];
    for (what, path, token, body, status, says) in &cases {
        let (got, reason) = post(&mut c, path, *token, body).await;
        assert_eq!(got, *status, "{what}: {reason}");
        assert!(reason.contains(says), "{what}: {reason:?} does not say {says:?}");
        assert!(!reason.contains("INSERT") && !reason.contains("postgres://"), "{what}: {reason}");
    }
    assert_eq!(pg.rows("SELECT count(*) FROM orders").await, table(&[&["0"]]));
    assert_eq!(pg.rows("SELECT count(*) FROM _replicator.key_versions").await, table(&[&["0"]]));

    // An unknown schema with a token that allows any.
    let any = pg.key.token(&["*.*"]);
    let (got, reason) =
        post(&mut c, &format!("/{}/nope", pg.db.name), Some(&any), &payload(&[ok(1, 1)])).await;
    assert_eq!(got, 400, "{reason}");
    assert!(reason.contains("nope"), "{reason}");

    // An empty body is a no-op; gzip bodies are read, and bounded after decompression.
    assert_eq!(post(&mut c, &path, token, "").await.0, 200);
    let gzip = |text: &str| {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).expect("gzip");
        e.finish().expect("gzip")
    };
    let auth = format!("Bearer {}", pg.token);
    let headers = [("Authorization", auth.as_str()), ("Content-Encoding", "gzip")];
    let r =
        c.request("POST", &path, &headers, &gzip(&payload(&[ok(1, 10)]))).await.expect("gzip post");
    assert_eq!(r.status, 200, "{r:?}");
    let bomb = payload(&[line(
        "orders",
        json!([2]),
        Some(json!({"id":2,"note":"y".repeat(1 << 20)})),
        &hlc(11, 0),
    )]);
    let r = c.request("POST", &path, &headers, &gzip(&bomb)).await.expect("gzip post");
    assert_eq!(r.status, 413, "{r:?}");

    // 409: a resolved timestamp older than the newest recorded (equal is fine).
    assert_eq!(post(&mut c, &path, token, &resolved(&hlc(20, 0))).await.0, 200);
    assert_eq!(post(&mut c, &path, token, &resolved(&hlc(20, 0))).await.0, 200);
    for _ in 0..3 {
        let (got, reason) = post(&mut c, &path, token, &resolved(&hlc(19, 0))).await;
        assert_eq!(got, 409, "{reason}");
        assert!(reason.contains("checkpoints"), "{reason}");
    }
    assert_eq!(pg.rows("SELECT id, note FROM orders").await, table(&[&["1", "n"]]));

    // Each distinct refusal is logged once, however often it is retried; all are counted.
    let log = pg.server.run.log();
    assert_eq!(log.matches("older than").count(), 1, "{log}");
    let varz = c.get("/_/varz").await.body;
    for code in ["400", "401", "403", "404", "409", "413", "422"] {
        assert!(
            varz.contains(&format!("http_status_codes_total{{code=\"{code}\"}}")),
            "{code}:\n{varz}"
        );
    }
    assert!(varz.contains("checkpoint_proposed_going_backwards_errors"), "{varz}");
    assert!(!log.contains(&pg.token), "a token reached the log");
}

/// A token signed here (not by make-jwt), with MOLT's claim for `schemas` and `extra` claims.
fn forged(
    key: &KeyPair,
    alg: jsonwebtoken::Algorithm,
    schemas: &[&[&str]],
    extra: Value,
) -> String {
    let mut claims = json!({
        "iss": "replicator",
        "iat": now() - 10,
        "https://github.com/cockroachdb/replicator": { "schemas": schemas },
    });
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    let pem = std::fs::read(&key.private).expect("key");
    let encoding = match alg {
        jsonwebtoken::Algorithm::HS256 => {
            jsonwebtoken::EncodingKey::from_secret(key.public.as_bytes())
        }
        _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("EC key"),
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &encoding).expect("sign")
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
        as i64
}

fn jti(token: &str) -> String {
    use base64::Engine as _;
    let claims = token.split('.').nth(1).expect("claims");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).expect("base64");
    serde_json::from_slice::<Value>(&claims).expect("json")["jti"].as_str().expect("jti").to_owned()
}

#[tokio::test]
async fn tokens_from_make_jwt_pass_and_every_bad_token_is_refused() {
    let pg = Pg::start("CREATE TABLE t (id int8 PRIMARY KEY)", &[]).await;
    let db = pg.db.name.clone();
    let path = pg.path("public");
    let mut c = Client::new(&pg.server.addr, Trust::Plain);
    let mut n = 0;
    let mut body = || {
        n += 1;
        payload(&[line("t", json!([n]), Some(json!({"id": n})), &hlc(n, 0))])
    };

    // ES256 from make-jwt, with `*` and with other letter case in the claim.
    for allow in [
        format!("{db}.public"),
        format!("{}.PUBLIC", db.to_uppercase()),
        "*.public".into(),
        format!("{db}.*"),
    ] {
        let token = pg.key.token(&[&allow]);
        assert_eq!(post(&mut c, &path, Some(&token), &body()).await.0, 200, "{allow}");
    }
    // The access_token query parameter works too, and never reaches the log.
    let (status, _) =
        post(&mut c, &format!("{path}?access_token={}", pg.token), None, &body()).await;
    assert_eq!(status, 200);

    // RS256: refused until its key is inserted and the server re-reads the keys on SIGHUP.
    let rsa = KeyPair::rsa(&pg.dir, "rsa");
    let rs256 = rsa.token(&[&format!("{db}.public")]);
    assert_eq!(post(&mut c, &path, Some(&rs256), &body()).await.0, 401);
    insert_key(&pg.client, STAGING, &rsa.public).await;
    pg.server.hangup(2).await;
    assert_eq!(post(&mut c, &path, Some(&rs256), &body()).await.0, 200);

    let schemas: &[&[&str]] = &[&[&db, "public"]];
    use jsonwebtoken::Algorithm::{ES256, HS256};
    let none = {
        use base64::Engine as _;
        let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b(json!({"alg":"none","typ":"JWT"})),
            b(json!({"jti":"x","https://github.com/cockroachdb/replicator":{"schemas":schemas}}))
        )
    };
    let cases = [
        ("HS256", forged(&pg.key, HS256, schemas, json!({"jti":"h"})), 401),
        ("none", none, 401),
        ("expired", forged(&pg.key, ES256, schemas, json!({"jti":"e","exp": now() - 120})), 401),
        (
            "not yet valid",
            forged(&pg.key, ES256, schemas, json!({"jti":"f","nbf": now() + 3600})),
            401,
        ),
        ("no jti", forged(&pg.key, ES256, schemas, json!({})), 401),
        ("other schema", forged(&pg.key, ES256, &[&[&db, "other"]], json!({"jti":"o"})), 403),
        ("other database", pg.key.token(&["elsewhere.public"]), 403),
        ("unknown key", KeyPair::ec(&pg.dir, "stranger").token(&[&format!("{db}.public")]), 401),
        (
            "forged but fine",
            forged(&pg.key, ES256, schemas, json!({"jti":"g","exp": now() + 3600})),
            200,
        ),
    ];
    for (what, token, status) in &cases {
        let (got, reason) = post(&mut c, &path, Some(token), &body()).await;
        assert_eq!(got, *status, "{what}: {reason}");
    }

    // A revoked id is refused once the server re-reads staging.
    pg.client
        .execute("INSERT INTO _replicator.jwt_revoked_ids (id) VALUES ($1)", &[&jti(&pg.token)])
        .await
        .expect("revoke");
    pg.server.hangup(3).await;
    let (got, reason) = post(&mut c, &path, Some(&pg.token), &body()).await;
    assert_eq!(got, 401, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert!(!pg.server.run.log().contains(&pg.token), "a token reached the log");
}

/// A CA and a certificate it signed for localhost and 127.0.0.1, as files.
fn certificate(
    dir: &TempDir,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(&format!("{name}.{f}"));
    let s = |p: &std::path::PathBuf| p.to_str().expect("utf-8").to_owned();
    let (ca_key, ca, key, csr, cert, ext) =
        (p("ca.key"), p("ca.pem"), p("key.pem"), p("csr"), p("cert.pem"), p("ext"));
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_key_s, ca_s) = (s(&ca_key), s(&ca));
    args.extend([
        "-keyout",
        &ca_key_s,
        "-out",
        &ca_s,
        "-days",
        "2",
        "-subj",
        "/CN=replicator test CA",
    ]);
    openssl(&args);
    let (key_s, csr_s) = (s(&key), s(&csr));
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key_s, "-out", &csr_s, "-subj", "/CN=localhost"]);
    openssl(&args);
    let (cert_s, ext_s) = (s(&cert), s(&ext));
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr_s,
        "-CA",
        &ca_s,
        "-CAkey",
        &ca_key_s,
        "-CAcreateserial",
        "-out",
        &cert_s,
        "-days",
        "2",
        "-extfile",
        &ext_s,
    ]);
    (ca, cert, key)
}

/// `curl` (HTTP/2 over TLS with -k, or h2c with prior knowledge): the HTTP version and status.
fn curl(args: &[&str], url: &str, token: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--data-binary", "{}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn tls_self_signed_and_from_files_reloaded_on_sighup_and_h2c() {
    let pg = Pg::start("CREATE TABLE t (id int8 PRIMARY KEY)", &["--tlsSelfSigned"]).await;
    let path = pg.path("public");
    let body = payload(&[line("t", json!([1]), Some(json!({"id": 1})), &hlc(1, 0))]);
    let mut tls = Client::new(&pg.server.addr, Trust::AnyCertificate);
    assert_eq!(post(&mut tls, &path, Some(&pg.token), &body).await.0, 200);
    let mut plain = Client::new(&pg.server.addr, Trust::Plain);
    assert!(
        plain.request("POST", &path, &[], body.as_bytes()).await.is_err(),
        "plain HTTP on a TLS port"
    );
    let url = format!("https://{}{path}", pg.server.addr);
    assert_eq!(curl(&["-k", "--http2"], &url, &pg.token), "2 200");

    // Certificates from files, verified against their CA; a new pair is served after SIGHUP.
    let dir = TempDir::new();
    let (ca, cert, key) = certificate(&dir, "one");
    let (cert_s, key_s) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let files =
        start_pg(&dir, &pg.db.url, &["--tlsCertificate", cert_s, "--tlsPrivateKey", key_s]).await;
    let mut verified = Client::new(&files.addr, Trust::Root(ca.clone()));
    assert_eq!(post(&mut verified, &path, Some(&pg.token), &body).await.0, 200);
    let (ca2, cert2, key2) = certificate(&dir, "two");
    std::fs::copy(&cert2, &cert).expect("replace cert");
    std::fs::copy(&key2, &key).expect("replace key");
    files.signal("-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !files.run.log().contains("SIGHUP: TLS certificate re-read") {
        assert!(std::time::Instant::now() < deadline, "{}", files.run.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut renewed = Client::new(&files.addr, Trust::Root(ca2));
    assert_eq!(post(&mut renewed, &path, Some(&pg.token), &body).await.0, 200);
    let mut stale = Client::new(&files.addr, Trust::Root(ca));
    assert!(
        stale.request("POST", &path, &[], body.as_bytes()).await.is_err(),
        "old CA still trusted"
    );

    // h2c (HTTP/2 in clear, prior knowledge) and HTTP/1.1 on a plain listener.
    let clear = start_pg(&dir, &pg.db.url, &[]).await;
    let url = format!("http://{}{path}", clear.addr);
    assert_eq!(curl(&["--http2-prior-knowledge"], &url, &pg.token), "2 200");
    assert_eq!(curl(&["--http1.1"], &url, &pg.token), "1.1 200");
}

#[tokio::test]
async fn older_versions_never_win_across_restarts_duplicates_and_two_instances() {
    let pg = Pg::start("CREATE TABLE t (id int8 PRIMARY KEY, v int8 NOT NULL)", &[]).await;
    let path = pg.path("public");
    let version = |id: i64, v: i64| {
        line("t", json!([id]), Some(json!({"id": id, "v": v})), &hlc(1000 + v, 0))
    };
    let mut feed = pg.feed(&path);

    // Newer first, then the older version (a changefeed restarted from an older cursor
    // re-sends it), then the same request again: the newer stays.
    feed.deliver(&payload(&[version(1, 3), version(2, 3)])).await;
    feed.deliver(&payload(&[version(1, 1), version(2, 2), version(3, 1)])).await;
    feed.deliver(&payload(&[version(1, 1), version(2, 2), version(3, 1)])).await;
    // A delete newer than the row, then the row's older insert re-sent: the row stays gone.
    feed.deliver(&payload(&[line("t", json!([3]), None, &hlc(1005, 0))])).await;
    feed.deliver(&payload(&[version(3, 2)])).await;
    assert_eq!(
        pg.rows("SELECT id, v FROM t ORDER BY id").await,
        table(&[&["1", "3"], &["2", "3"]])
    );
    let varz = Client::new(&pg.server.addr, Trust::Plain).get("/_/varz").await.body;
    assert!(varz.contains("stage_duplicate_mutations_total"), "{varz}");
    // Each applied version left one stub, MOLT's applied mark. An operator who empties
    // key_versions and a changefeed that re-sends: the stubs already there are marked again.
    let stubs = format!(
        "SELECT key, nanos, applied FROM _replicator.{}_public_t ORDER BY key, nanos",
        pg.db.name
    );
    let before = pg.rows(&stubs).await;
    assert_eq!(before.len(), 4, "{before:?}");
    pg.client.batch_execute("DELETE FROM _replicator.key_versions").await.expect("cleanup");
    feed.deliver(&payload(&[version(1, 3), version(2, 3)])).await;
    assert_eq!(pg.rows(&stubs).await, before);
    assert_eq!(
        pg.rows("SELECT id, v FROM t ORDER BY id").await,
        table(&[&["1", "3"], &["2", "3"]])
    );

    // Two instances behind one balancer, sharing staging: 20 keys, 12 versions each, every
    // version its own request, sent concurrently to either instance in shuffled order.
    let second = start_pg(&pg.dir, &pg.db.url, &[]).await;
    let addrs = [pg.server.addr.clone(), second.addr.clone()];
    let mut order: Vec<i64> = (1..=12).collect();
    order.reverse();
    order.swap(2, 9);
    order.swap(0, 5);
    let mut tasks = Vec::new();
    for (i, v) in order.into_iter().enumerate() {
        let mut feed = Feed::new(&addrs[i % 2], Trust::Plain, &path, Some(pg.token.clone()));
        let lines: Vec<Value> = (10..30).map(|id| version(id, v)).collect();
        tasks.push(tokio::spawn(async move { feed.deliver(&payload(&lines)).await }));
    }
    for t in tasks {
        t.await.expect("feed");
    }
    assert_eq!(
        pg.rows("SELECT count(*), min(v), max(v) FROM t WHERE id >= 10").await,
        table(&[&["20", "12", "12"]])
    );
}

#[tokio::test]
async fn a_target_that_goes_away_gets_503s_then_the_retries_converge() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, v int8)").await.expect("schema");
    let (proxy, target) = Proxy::to_database(&db.url);
    let server = Server::start(
        &dir,
        &[
            "--immediate",
            "--targetConn",
            &target,
            "--stagingConn",
            &db.url,
            "--stagingCreateSchema",
        ]
        .map(String::from),
    )
    .await;
    let key = KeyPair::ec(&dir, "k");
    insert_key(&client, STAGING, &key.public).await;
    server.hangup(1).await;
    let token = key.token(&[&format!("{}.public", db.name)]);
    let path = format!("/{}/public", db.name);
    let batch = |from: i64| -> String {
        payload(
            &(from..from + 100)
                .map(|id| line("t", json!([id]), Some(json!({"id":id,"v":id})), &hlc(id + 1, 0)))
                .collect::<Vec<_>>(),
        )
    };
    let mut feed = Feed::new(&server.addr, Trust::Plain, &path, Some(token.clone()));
    feed.deliver(&batch(0)).await;

    proxy.cut();
    let sender = tokio::spawn(async move {
        for b in 1..5 {
            feed.deliver(&batch(b * 100)).await;
        }
        feed.deliver(&resolved(&hlc(10_000, 0))).await;
        feed
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    let feed = sender.await.expect("feed");
    assert!(feed.refusals.iter().any(|r| r.status == 503), "no 503: {:?}", feed.refusals);
    assert!(feed.refusals.iter().all(|r| r.status == 503), "{:?}", feed.refusals);
    assert_eq!(dump(&client, "SELECT count(*), sum(v) FROM t").await, table(&[&["500", "124750"]]));
    let log = server.run.log();
    // Each distinct reason once (the OS's words for a lost connection vary), not each retry.
    let logged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused") && l.contains("status=503"))
        .filter_map(|l| l.split_once("reason=").map(|(_, r)| r))
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = logged.iter().collect();
    assert_eq!(distinct.len(), logged.len(), "a reason logged twice:\n{log}");
    assert!(
        feed.refusals.len() > logged.len(),
        "{} refusals, {} logged",
        feed.refusals.len(),
        logged.len()
    );
}

#[tokio::test]
async fn a_target_100_ms_away_is_slower_and_exact() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, v int8)").await.expect("schema");
    let (proxy, target) = Proxy::to_database(&db.url);
    proxy.traffic(support::fault::Traffic::Delay(Duration::from_millis(50)));
    let args = ["--immediate", "--targetConn", &target, "--stagingConn", &db.url];
    let mut args: Vec<String> = args.map(String::from).to_vec();
    args.extend(["--stagingCreateSchema", "--disableAuthentication"].map(String::from));
    let server = Server::start(&dir, &args).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    for b in 0..10i64 {
        let lines: Vec<_> = (b * 100..b * 100 + 100)
            .map(|id| line("t", json!([id]), Some(json!({"id": id, "v": id})), &hlc(id + 1, 0)))
            .collect();
        feed.deliver(&payload(&lines)).await;
    }
    feed.deliver(&resolved(&hlc(10_000, 0))).await;
    assert!(feed.refusals.is_empty(), "{:?}", feed.refusals);
    assert_eq!(
        dump(&client, "SELECT count(*), sum(v) FROM t").await,
        table(&[&["1000", "499500"]])
    );
}

#[tokio::test]
async fn shutdown_answers_503_to_new_requests_and_finishes_those_in_flight() {
    let mut pg = Pg::start("CREATE TABLE t (id int8 PRIMARY KEY)", &["--gracePeriod", "20s"]).await;
    let path = pg.path("public");
    let mut first = Client::new(&pg.server.addr, Trust::Plain);
    let mut second = Client::new(&pg.server.addr, Trust::Plain);
    first.open().await;
    assert_eq!(second.get("/_/healthz").await.status, 200);

    // Hold the target table so the first request stays in flight.
    let blocker = pg.db.client().await;
    blocker.batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let token = pg.token.clone();
    let (p, body) =
        (path.clone(), payload(&[line("t", json!([1]), Some(json!({"id":1})), &hlc(1, 0))]));
    let in_flight = tokio::spawn(async move { first.post(&p, Some(&token), &body).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.server.signal("-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pg.server.run.log().contains("stopping") {
        assert!(std::time::Instant::now() < deadline, "{}", pg.server.run.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = payload(&[line("t", json!([2]), Some(json!({"id":2})), &hlc(2, 0))]);
    let (status, reason) = post(&mut second, &path, Some(&pg.token), &late).await;
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("shutting down"), "{reason}");

    blocker.batch_execute("COMMIT").await.expect("unlock");
    assert_eq!(in_flight.await.expect("in flight").status, 200);
    assert_eq!(
        pg.server.run.wait_exit(Duration::from_secs(15)),
        Some(true),
        "{}",
        pg.server.run.log()
    );
    assert_eq!(pg.rows("SELECT id FROM t").await, table(&[&["1"]]));
}

#[tokio::test]
async fn parents_and_children_without_foreign_keys_in_any_order_and_with_them() {
    let pg = Pg::start(
        "CREATE TABLE loose_parent (id int8 PRIMARY KEY); \
         CREATE TABLE loose_child (id int8 PRIMARY KEY, parent int8); \
         CREATE TABLE parent (id int8 PRIMARY KEY); \
         CREATE TABLE child (id int8 PRIMARY KEY, parent int8 NOT NULL REFERENCES parent (id))",
        &[],
    )
    .await;
    let path = pg.path("public");
    let mut feed = pg.feed(&path);
    // Without foreign keys the children may come first (disjoint keys, any order).
    feed.deliver(&payload(&[line(
        "loose_child",
        json!([1]),
        Some(json!({"id":1,"parent":7})),
        &hlc(2, 0),
    )]))
    .await;
    feed.deliver(&payload(&[line("loose_parent", json!([7]), Some(json!({"id":7})), &hlc(1, 0))]))
        .await;
    assert_eq!(
        pg.rows("SELECT count(*) FROM loose_child JOIN loose_parent ON parent = loose_parent.id")
            .await,
        table(&[&["1"]])
    );

    // With them, one request is ordered parents first, and deletes children first.
    feed.deliver(&payload(&[
        line("child", json!([1]), Some(json!({"id":1,"parent":1})), &hlc(10, 0)),
        line("parent", json!([1]), Some(json!({"id":1})), &hlc(10, 0)),
    ]))
    .await;
    feed.deliver(&payload(&[
        line("parent", json!([1]), None, &hlc(11, 0)),
        line("child", json!([1]), None, &hlc(11, 0)),
        line("child", json!([2]), Some(json!({"id":2,"parent":2})), &hlc(11, 0)),
        line("parent", json!([2]), Some(json!({"id":2})), &hlc(11, 0)),
    ]))
    .await;
    assert!(feed.refusals.is_empty(), "{:?}", feed.refusals);
    // A child whose parent is still in flight: 503 until the parent arrives.
    let mut early = pg.feed(&path);
    let child = tokio::spawn(async move {
        early
            .deliver(&payload(&[line(
                "child",
                json!([3]),
                Some(json!({"id":3,"parent":3})),
                &hlc(13, 0),
            )]))
            .await;
        early
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    feed.deliver(&payload(&[line("parent", json!([3]), Some(json!({"id":3})), &hlc(12, 0))])).await;
    let early = child.await.expect("child");
    assert!(
        !early.refusals.is_empty() && early.refusals.iter().all(|r| r.status == 503),
        "{:?}",
        early.refusals
    );
    assert_eq!(
        pg.rows("SELECT id, parent FROM child ORDER BY id").await,
        table(&[&["2", "2"], &["3", "3"]])
    );
    assert_eq!(pg.rows("SELECT id FROM parent ORDER BY id").await, table(&[&["2"], &["3"]]));
}

#[tokio::test]
async fn mariadb_target_takes_one_path_segment_json_arrays_and_exact_numbers() {
    use mysql_async::prelude::Queryable as _;
    let dir = TempDir::new();
    let my = MyDatabase::create().await;
    let staging = PgDatabase::create().await;
    let mut conn = my.conn().await;
    conn.query_drop(
        "CREATE TABLE orders (id BIGINT, region VARCHAR(8), total DECIMAL(30,10), doc JSON, tags JSON, \
           at DATETIME(6), raw VARBINARY(8), note TEXT, PRIMARY KEY (region, id))",
    )
    .await
    .expect("schema");
    let server = Server::start(
        &dir,
        &[
            "--immediate",
            "--targetConn",
            &my.url,
            "--stagingConn",
            &staging.url,
            "--stagingCreateSchema",
        ]
        .map(String::from),
    )
    .await;
    let key = KeyPair::rsa(&dir, "k");
    let staging_client = staging.client().await;
    insert_key(&staging_client, STAGING, &key.public).await;
    server.hangup(1).await;
    let mut feed = Feed::new(
        &server.addr,
        Trust::Plain,
        &format!("/{}", my.name),
        Some(key.token(&[&my.name])),
    );
    let big = "9007199254740993";
    feed.deliver(&format!(
        r#"{{"payload":[
        {{"after":{{"id":{big},"region":"eu","total":12345678901234567890.0123456789,"doc":{{"a":[1,2.50]}},"tags":["x","y"],
          "at":"2026-12-01T10:00:00.123456","raw":"\\x0102ff","note":null}},"key":["eu",{big}],"topic":"{db}.public.orders","updated":"{t}"}},
        {{"after":{{"id":2,"region":"us","total":4E+2,"note":"x"}},"key":["us",2],"topic":"orders","updated":"{t}"}},
        {{"after":{{"id":3,"region":"us","note":"y"}},"key":["us",3],"topic":"orders","updated":"{t}"}}
        ]}}"#,
        t = hlc(10, 0),
        db = my.name,
    ))
    .await;
    feed.deliver_resolved(&[line("orders", json!(["us", 3]), None, &hlc(11, 0))], &hlc(12, 0))
        .await;
    assert!(feed.refusals.is_empty(), "{:?}", feed.refusals);
    let rows: Vec<MyRow> = conn
        .query(
            "SELECT CAST(id AS CHAR), region, CAST(total AS CHAR), CAST(doc AS CHAR), CAST(tags AS CHAR), \
             CAST(at AS CHAR), HEX(raw), note FROM orders ORDER BY id",
        )
        .await
        .expect("rows");
    assert_eq!(
        rows,
        vec![
            (
                "2".into(),
                "us".into(),
                Some("400.0000000000".into()),
                None,
                None,
                None,
                None,
                Some("x".into())
            ),
            (
                big.into(),
                "eu".into(),
                Some("12345678901234567890.0123456789".into()),
                Some(r#"{"a":[1,2.50]}"#.into()),
                Some(r#"["x","y"]"#.into()),
                Some("2026-12-01 10:00:00.123456".into()),
                Some("0102FF".into()),
                None
            ),
        ]
    );
    assert_eq!(
        dump(&staging_client, "SELECT group_name, source_hlc::text FROM _replicator.checkpoints")
            .await,
        table(&[&[&my.name.to_lowercase(), "12.0000000000"]])
    );
    drop(conn);
}

/// A body that is malformed by construction: a valid body cut short, a valid shape with one
/// field of the wrong kind, or JSON of another shape.
fn malformed() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let valid = (1i64..1000, 1i64..1000, "[a-z ]{0,12}").prop_map(|(id, t, note)| {
        payload(&[line("orders", json!([id]), Some(json!({"id": id, "note": note})), &hlc(t, 0))])
    });
    let truncated = (valid.clone(), any::<proptest::sample::Index>()).prop_map(|(body, at)| {
        let at = 1 + at.index(body.len() - 1);
        body.as_bytes()[..at].to_vec()
    });
    let json_value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({"x": 1})),
    ];
    let bad_hlc = prop_oneof![
        Just("".to_owned()),
        Just("0.0".to_owned()),
        Just("1.5".to_owned()),
        Just("-1.0000000000".to_owned()),
        Just("12".to_owned()),
        "[a-z.]{1,8}",
        "[0-9]{1,3}\\.[0-9]{11,12}",
    ];
    let wrong_field = (0usize..9, json_value.clone(), bad_hlc, 1i64..1000).prop_map(|(which, v, bad, id)| {
        let good = |after: Value, key: Value, topic: Value, updated: Value| {
            json!({"payload":[{"after": after, "key": key, "topic": topic, "updated": updated}]})
        };
        let after = json!({"id": id, "note": "n"});
        let body = match which {
            0 => good(after, json!([id]), json!("orders"), Value::from(bad)),
            1 => json!({"resolved": bad}),
            2 if v.is_null() => json!({"payload": [], "resolved": hlc(id, 0)}),
            2 => json!({"payload": v.clone(), "resolved": hlc(id, 0)}),
            3 => good(after, json!([]), json!("orders"), json!(hlc(id, 0))),
            4 => good(after, json!({"id": id}), json!("orders"), json!(hlc(id, 0))),
            5 => good(after, json!([id]), json!(format!("no_such_{id}")), json!(hlc(id, 0))),
            6 => good(json!({"id": id, "colour": v}), json!([id]), json!("orders"), json!(hlc(id, 0))),
            7 => good(json!({"id": "not a number", "note": "n"}), json!([id]), json!("orders"), json!(hlc(id, 0))),
            _ => match v {
                Value::Array(_) | Value::Object(_) => json!({"payload": "lines"}),
                other => json!({"payload": [other]}),
            },
        };
        body.to_string().into_bytes()
    });
    let other_shape = prop_oneof![
        json_value
            .prop_filter("not an empty object", |v| !v.is_null())
            .prop_map(|v| v.to_string().into_bytes()),
        ("[a-z]{1,6}", json_value_any())
            .prop_filter("not an envelope key", |(k, _)| !matches!(
                k.as_str(),
                "payload" | "resolved" | "length"
            ))
            .prop_map(|(k, v)| json!({ k: v }).to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(|mut b| {
            b.insert(0, 0xff);
            b
        }),
    ];
    prop_oneof![truncated, wrong_field, other_shape]
}

fn json_value_any() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i32>().prop_map(Value::from),
        "[ -~]{0,6}".prop_map(Value::from)
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn ten_thousand_malformed_bodies_get_4xx_and_write_nothing() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let pg =
        runtime.block_on(Pg::start("CREATE TABLE orders (id int8 PRIMARY KEY, note text)", &[]));
    let path = pg.path("public");
    let client = std::cell::RefCell::new(Client::new(&pg.server.addr, Trust::Plain));
    let auth = format!("Bearer {}", pg.token);
    let mut runner =
        TestRunner::new(Config { cases: 10_000, failure_persistence: None, ..Config::default() });
    runner
        .run(&malformed(), |body| {
            let r = runtime
                .block_on(client.borrow_mut().request(
                    "POST",
                    &path,
                    &[("Authorization", &auth)],
                    &body,
                ))
                .map_err(|e| TestCaseError::fail(format!("connection: {e}")))?;
            if !(400..500).contains(&r.status) {
                return Err(TestCaseError::fail(format!(
                    "{} for {:?}: {}",
                    r.status,
                    String::from_utf8_lossy(&body),
                    r.body
                )));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.server.run.log()));
    runtime.block_on(async {
        for table in ["orders", "_replicator.key_versions", "_replicator.checkpoints"] {
            assert_eq!(
                pg.rows(&format!("SELECT count(*) FROM {table}")).await,
                table_of_zero(),
                "{table}"
            );
        }
    });
}

fn table_of_zero() -> Vec<Vec<Option<String>>> {
    table(&[&["0"]])
}

#[tokio::test]
async fn a_userscript_filters_and_renames_changefeed_rows() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE orders (id int8 PRIMARY KEY, name text, total numeric)")
        .await
        .expect("schema");
    let script = dir.join("failback.ts");
    std::fs::write(
        &script,
        format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{db}.public", {{
  onRowUpsert: (row, meta) => {{
    if (meta.table === "audit") return null;
    const {{ nm, ...rest }} = row;
    return {{ ...rest, name: nm.toUpperCase() }};
  }},
  onRowDelete: (row, meta) => (meta.table === "audit" ? null : row),
}});
"#,
            db = db.name
        ),
    )
    .expect("script");
    let server = start_pg(&dir, &db.url, &["--userscript", script.to_str().expect("path")]).await;
    let key = KeyPair::ec(&dir, "k");
    insert_key(&client, STAGING, &key.public).await;
    server.hangup(1).await;
    let mut feed = Feed::new(
        &server.addr,
        Trust::Plain,
        &format!("/{}/public", db.name),
        Some(key.token(&[&format!("{}.public", db.name)])),
    );
    feed.deliver(&payload(&[
        line(
            "orders",
            json!([1]),
            Some(serde_json::from_str(r#"{"id":1,"nm":"apple","total":1.50}"#).expect("json")),
            &hlc(1, 0),
        ),
        line("orders", json!([2]), Some(json!({"id":2,"nm":"pear","total":2})), &hlc(1, 0)),
        // A table the target does not have: the script drops its rows.
        line("audit", json!([1]), Some(json!({"id":1,"who":"x"})), &hlc(1, 0)),
    ]))
    .await;
    // A delete for a table the target lacks needs `before` (WITH diff) to name its key
    // columns for the script; without it the answer says so.
    let blind = payload(&[line("audit", json!([1]), None, &hlc(2, 0))]);
    let (status, reason) =
        post(&mut feed.client, &feed.path.clone(), feed.token.clone().as_deref(), &blind).await;
    assert_eq!(status, 400, "{reason}");
    assert!(reason.contains("WITH diff"), "{reason}");
    let mut audit_delete = line("audit", json!([1]), None, &hlc(2, 0));
    audit_delete["before"] = json!({"id":1,"who":"x"});
    feed.deliver(&payload(&[line("orders", json!([2]), None, &hlc(2, 0)), audit_delete])).await;
    assert!(feed.refusals.is_empty(), "{:?}", feed.refusals);
    assert_eq!(
        dump(&client, "SELECT id, name, total FROM orders").await,
        table(&[&["1", "APPLE", "1.50"]])
    );
}

#[tokio::test]
async fn a_start_that_cannot_work_says_what_to_fix() {
    let db = PgDatabase::create().await;
    let dir = TempDir::new();
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().expect("utf-8");
    let bind = format!("127.0.0.1:{}", support::changefeed::free_port());
    let cases: [(&[&str], &str); 4] = [
        (&["--targetConn", &db.url, "--flushSize", "0"], "--flushSize must be at least 1"),
        (&["--immediate", "--targetConn", "mysql://root@127.0.0.1:3306/x"], "needs --stagingConn"),
        (
            &[
                "--immediate",
                "--targetConn",
                &db.url,
                "--stagingCreateSchema",
                "--bindAddr",
                &bind,
                "--tlsCertificate",
                missing,
                "--tlsPrivateKey",
                missing,
            ],
            "--tlsCertificate",
        ),
        (&["--immediate", "--targetConn", &db.url, "--tlsCertificate", missing], "--tlsPrivateKey"),
    ];
    for (args, says) in cases {
        let mut all = vec!["start"];
        all.extend(args);
        let out = support::run(&all);
        let (stdout, stderr) = support::texts(&out);
        assert!(!out.status.success(), "{args:?} started:\n{stdout}{stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr:?} does not say {says:?}");
    }
}

#[tokio::test]
async fn metrics_listener_and_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics = format!("127.0.0.1:{}", support::changefeed::free_port());
    let pg = Pg::start("CREATE TABLE t (id int8 PRIMARY KEY)", &["--metricsAddr", &metrics]).await;
    let mut feed = pg.feed(&pg.path("public"));
    feed.deliver(&payload(&[line("t", json!([1]), Some(json!({"id": 1})), &hlc(1, 0))])).await;
    let mut c = Client::new(&metrics, Trust::Plain);
    let varz = c.get("/_/varz").await;
    assert_eq!(varz.status, 200);
    assert!(varz.body.contains("http_status_codes_total{code=\"200\"}"), "{}", varz.body);
    assert_eq!(c.get("/_/healthz").await.status, 200);

    // A client that never finishes its headers is cut off after 10 s.
    let mut slow = tokio::net::TcpStream::connect(&pg.server.addr).await.expect("connect");
    slow.write_all(b"POST /x/public HTTP/1.1\r\nHost: x\r\n").await.expect("send");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "still open after 20 s");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(15), "{waited:?}");
}

#[tokio::test]
async fn disable_authentication_accepts_requests_without_a_token_and_warns() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute("CREATE TABLE t (id int8 PRIMARY KEY)").await.expect("schema");
    let server = start_pg(&dir, &db.url, &["--disableAuthentication"]).await;
    assert!(server.run.log().contains("--disableAuthentication"), "{}", server.run.log());
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    feed.deliver(&payload(&[line("t", json!([1]), Some(json!({"id": 1})), &hlc(1, 0))])).await;
    assert!(feed.refusals.is_empty(), "{:?}", feed.refusals);
    assert_eq!(dump(&client, "SELECT id FROM t").await, table(&[&["1"]]));
}
