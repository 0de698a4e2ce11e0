//! `replicator start` in consistent mode (the default) end to end: a test client plays the
//! CockroachDB changefeed over real HTTP (no CockroachDB server runs here), against real
//! PostgreSQL and MariaDB targets with real foreign keys and real PostgreSQL staging.
//!
//! The workload is a model: source transactions over a parent, a child (with a foreign key to
//! the parent) and an unrelated table, delivered as a changefeed would, resolved timestamps
//! every 50 transactions. Once a resolved timestamp is marked applied, the target must equal
//! the model at that timestamp, with the next window's rows already staged and not visible.

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::changefeed::{Feed, Server, Trust, free_port, hlc, line, payload, resolved};
use support::{MyDatabase, PgDatabase, TempDir, dump, http_get};

const STAGING: &str = "_replicator";
const BASE: i64 = 1_700_000_000_000_000_000;
const DDL: &str = "CREATE TABLE parent (id int8 PRIMARY KEY, v int8 NOT NULL); \
     CREATE TABLE child (id int8 PRIMARY KEY, pid int8 NOT NULL REFERENCES parent (id), v int8 NOT NULL); \
     CREATE TABLE other (id int8 PRIMARY KEY, v int8 NOT NULL)";

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One row version: table, key, the row after (None: deleted), time.
#[derive(Clone, Debug)]
struct Version {
    table: &'static str,
    id: i64,
    after: Option<Value>,
    time: String,
}

/// The source: tables as maps from id to row, and every transaction's versions.
#[derive(Default, Clone)]
struct Model {
    parent: BTreeMap<i64, i64>,
    child: BTreeMap<i64, (i64, i64)>,
    other: BTreeMap<i64, i64>,
}

impl Model {
    /// Runs transaction `n` on the model; returns its row versions (one per key).
    fn transaction(&mut self, n: i64, rng: &mut Rng) -> Vec<Version> {
        let time = hlc(BASE + n * 1_000_000, (n % 3) as u32);
        let mut out: Vec<Version> = Vec::new();
        let touched = |out: &Vec<Version>, table: &str, id: i64| {
            out.iter().any(|v| v.table == table && v.id == id)
        };
        for _ in 0..=rng.below(3) {
            match rng.below(10) {
                0..=2 => {
                    let id = rng.below(40) as i64;
                    if !touched(&out, "parent", id) {
                        self.parent.insert(id, n);
                        out.push(Version {
                            table: "parent",
                            id,
                            after: Some(json!({"id": id, "v": n})),
                            time: time.clone(),
                        });
                    }
                }
                3..=5 => {
                    let parents: Vec<i64> = self.parent.keys().copied().collect();
                    if parents.is_empty() {
                        continue;
                    }
                    let pid = parents[rng.below(parents.len() as u64) as usize];
                    let id = rng.below(80) as i64;
                    if !touched(&out, "child", id) && !touched(&out, "parent", pid) {
                        self.child.insert(id, (pid, n));
                        out.push(Version {
                            table: "child",
                            id,
                            after: Some(json!({"id": id, "pid": pid, "v": n})),
                            time: time.clone(),
                        });
                    }
                }
                6 => {
                    let ids: Vec<i64> = self.child.keys().copied().collect();
                    if let Some(&id) = ids.get(rng.below(ids.len().max(1) as u64) as usize)
                        && !touched(&out, "child", id)
                    {
                        self.child.remove(&id);
                        out.push(Version { table: "child", id, after: None, time: time.clone() });
                    }
                }
                7 => {
                    // A parent and its children go in one transaction.
                    let ids: Vec<i64> = self.parent.keys().copied().collect();
                    if let Some(&pid) = ids.get(rng.below(ids.len().max(1) as u64) as usize)
                        && !touched(&out, "parent", pid)
                    {
                        let children: Vec<i64> = self
                            .child
                            .iter()
                            .filter(|(_, (p, _))| *p == pid)
                            .map(|(id, _)| *id)
                            .collect();
                        if children.iter().any(|c| touched(&out, "child", *c)) {
                            continue;
                        }
                        for c in children {
                            self.child.remove(&c);
                            out.push(Version {
                                table: "child",
                                id: c,
                                after: None,
                                time: time.clone(),
                            });
                        }
                        self.parent.remove(&pid);
                        out.push(Version {
                            table: "parent",
                            id: pid,
                            after: None,
                            time: time.clone(),
                        });
                    }
                }
                _ => {
                    let id = rng.below(30) as i64;
                    if touched(&out, "other", id) {
                        continue;
                    }
                    if rng.below(4) == 0 {
                        self.other.remove(&id);
                        out.push(Version { table: "other", id, after: None, time: time.clone() });
                    } else {
                        self.other.insert(id, n);
                        out.push(Version {
                            table: "other",
                            id,
                            after: Some(json!({"id": id, "v": n})),
                            time: time.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The model's tables as the target's dump shows them.
    fn rows(&self) -> [Vec<Vec<Option<String>>>; 3] {
        let s = |v: i64| Some(v.to_string());
        [
            self.parent.iter().map(|(id, v)| vec![s(*id), s(*v)]).collect(),
            self.child.iter().map(|(id, (p, v))| vec![s(*id), s(*p), s(*v)]).collect(),
            self.other.iter().map(|(id, v)| vec![s(*id), s(*v)]).collect(),
        ]
    }
}

/// The target's tables (PostgreSQL).
async fn target_rows(client: &tokio_postgres::Client) -> [Vec<Vec<Option<String>>>; 3] {
    [
        dump(client, "SELECT id::text, v::text FROM parent p ORDER BY p.id").await,
        dump(client, "SELECT id::text, pid::text, v::text FROM child c ORDER BY c.id").await,
        dump(client, "SELECT id::text, v::text FROM other o ORDER BY o.id").await,
    ]
}

/// A window's versions as requests a changefeed could send: each key's versions in order,
/// keys interleaved at random, 1 to 20 lines a request.
fn requests(versions: &[Version], rng: &mut Rng) -> Vec<String> {
    let mut queues: BTreeMap<(&str, i64), VecDeque<&Version>> = BTreeMap::new();
    for v in versions {
        queues.entry((v.table, v.id)).or_default().push_back(v);
    }
    let mut out = Vec::new();
    while !queues.is_empty() {
        let size = 1 + rng.below(20) as usize;
        let mut lines = Vec::new();
        for _ in 0..size {
            if queues.is_empty() {
                break;
            }
            let keys: Vec<(&str, i64)> = queues.keys().copied().collect();
            let key = keys[rng.below(keys.len() as u64) as usize];
            let queue = queues.get_mut(&key).expect("key");
            let v = queue.pop_front().expect("version");
            if queue.is_empty() {
                queues.remove(&key);
            }
            lines.push(line(v.table, json!([v.id]), v.after.clone(), &v.time));
        }
        out.push(payload(&lines));
    }
    out
}

/// Waits until resolved timestamp `at` is marked applied in staging.
async fn applied(staging: &tokio_postgres::Client, at: &str, server_log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let sql = format!(
        "SELECT count(*) FROM {STAGING}.checkpoints WHERE source_hlc = '{at}'::numeric \
         AND target_applied_at IS NOT NULL"
    );
    loop {
        let n: i64 = staging.query_one(&sql, &[]).await.expect("checkpoints").get(0);
        if n == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "{at} not applied within 60 s:\n{}", server_log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn args(target: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["--targetConn", target, "--stagingCreateSchema", "--disableAuthentication"]
            .map(String::from)
            .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The windows of a workload of `transactions`, `per_window` each: (requests, resolved
/// timestamp, the model after the window).
fn workload(seed: u64, transactions: i64, per_window: i64) -> Vec<(Vec<String>, String, Model)> {
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let mut out = Vec::new();
    for w in 0..transactions / per_window {
        let mut versions = Vec::new();
        for n in w * per_window..(w + 1) * per_window {
            versions.extend(model.transaction(n, &mut rng));
        }
        let at = hlc(BASE + ((w + 1) * per_window - 1) * 1_000_000 + 500_000, 0);
        out.push((requests(&versions, &mut rng), at, model.clone()));
    }
    out
}

#[tokio::test]
async fn resolved_windows_show_the_source_exactly_and_nothing_later() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    // Small rounds, so a window takes several target transactions.
    let server =
        Server::start(&dir, &args(&db.url, &["--flushSize", "40", "--scanSize", "64"])).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let windows = workload(7, 1000, 50);
    let mut sent = 0;
    let mut previous: Option<(String, Model)> = None;
    for (requests, at, model) in windows {
        for body in &requests {
            feed.deliver(body).await;
            sent += 1;
            if sent % 10 == 0 {
                feed.deliver(body).await;
            }
        }
        // This window's rows are staged, not resolved: the target shows the previous window.
        if let Some((at, model)) = previous.take() {
            applied(&client, &at, || server.run.log()).await;
            assert_eq!(target_rows(&client).await, model.rows(), "at {at}");
        }
        feed.deliver(&resolved(&at)).await;
        previous = Some((at, model));
    }
    let (at, model) = previous.expect("windows");
    applied(&client, &at, || server.run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows(), "at the end");
    assert!(feed.refusals.is_empty(), "refused: {:?}", feed.refusals);
    let (status, varz) = http_get(&server.addr, "/_/varz").await;
    assert_eq!(status, 200);
    assert!(varz.contains("stage_duplicate_mutations_total"), "duplicates counted");
    assert!(varz.contains("lease_holder{name=\"changefeed."), "{varz}");
    assert_eq!(http_get(&server.addr, "/_/healthz").await, (200, "active\n".to_owned()));
    // Every staged row is applied; the staging tables follow MOLT's naming.
    let pending = dump(
        &client,
        &format!(
            "SELECT (SELECT count(*) FROM {STAGING}.{db}_public_parent WHERE NOT applied) + \
             (SELECT count(*) FROM {STAGING}.{db}_public_child WHERE NOT applied)",
            db = db.name
        ),
    )
    .await;
    assert_eq!(pending, [[Some("0".to_owned())]]);
    assert!(server.run.log().contains("applied a resolved window"), "{}", server.run.log());

    // Rows with `before` (WITH diff), tabs, quotes and backslashes in values: staged as sent.
    let t = hlc(BASE + 5_000 * 1_000_000, 0);
    let weird = "tab\there \"quoted\" back\\slash\nline";
    let lines = [
        json!({"after": {"id": 2000, "v": 1}, "before": {"id": 2000, "v": 0}, "key": [2000],
               "topic": "other", "updated": t}),
        json!({"after": null, "before": {"id": 2001, "v": 5}, "key": [2001], "topic": "other",
               "updated": t}),
    ];
    client.batch_execute("ALTER TABLE other ADD COLUMN note text").await.expect("column");
    client
        .batch_execute("CREATE TABLE tagged (k text PRIMARY KEY, v int8)")
        .await
        .expect("text-keyed table");
    let keys = ["it's", "a\"b\\c", "{x,y}", "tab\there"];
    let tagged: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| line("tagged", json!([k]), Some(json!({"k": k, "v": i})), &t))
        .collect();
    feed.deliver(&payload(&tagged)).await;
    let with_note = json!({"after": {"id": 2002, "v": 2, "note": weird}, "key": [2002],
                           "topic": "other", "updated": t});
    let done = hlc(BASE + 5_001 * 1_000_000, 0);
    feed.deliver(&payload(&[lines[0].clone(), lines[1].clone(), with_note])).await;
    feed.deliver(&resolved(&done)).await;
    applied(&client, &done, || server.run.log()).await;
    assert_eq!(
        dump(&client, "SELECT id::text, v::text, note FROM other o WHERE id >= 2000 ORDER BY o.id")
            .await,
        [
            vec![Some("2000".to_owned()), Some("1".to_owned()), None],
            vec![Some("2002".to_owned()), Some("2".to_owned()), Some(weird.to_owned())],
        ]
    );
    let before = dump(
        &client,
        &format!(
            "SELECT convert_from(before, 'UTF8') FROM {STAGING}.{}_public_other WHERE key = '[2000]'",
            db.name
        ),
    )
    .await;
    assert_eq!(before, [[Some(r#"{"id":2000,"v":0}"#.to_owned())]]);
    let mut expected: Vec<Vec<Option<String>>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| vec![Some(k.to_string()), Some(i.to_string())])
        .collect();
    expected.sort();
    assert_eq!(
        dump(&client, "SELECT k, v::text FROM tagged ORDER BY k COLLATE \"C\"").await,
        expected
    );
    let pending = dump(
        &client,
        &format!("SELECT count(*) FROM {STAGING}.{}_public_tagged WHERE NOT applied", db.name),
    )
    .await;
    assert_eq!(pending, [[Some("0".to_owned())]], "marked applied, quotes and all");
}

#[tokio::test]
async fn kill_9_restarts_and_a_changefeed_resending_from_an_older_cursor_converge() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let addr = format!("127.0.0.1:{}", free_port());
    // Applied rows are deleted at once: re-sent old rows are staged anew, and only the
    // per-key version check keeps them from overwriting newer ones.
    let args = args(&db.url, &["--flushSize", "25", "--retireOffset", "0s"]);
    let mut server = Server::start_at(&dir, &addr, &args).await;
    let path = format!("/{}/public", db.name);
    let windows = workload(11, 400, 40);
    let mut rng = Rng(99);
    let mut w = 0;
    let mut kills = 0;
    while w < windows.len() {
        let (requests, at, _) = &windows[w];
        // Kill at a random point of the window: during the rows, or once its resolved
        // timestamp is in (while the sweeper applies it).
        let kill_after = rng.below(requests.len() as u64) as usize;
        let mut feed = Feed::new(&addr, Trust::Plain, &path, None);
        let mut killed = false;
        for (i, body) in requests.iter().enumerate() {
            if kills < 10 && i == kill_after && w % 2 == 1 {
                server.run.kill9();
                killed = true;
                kills += 1;
                server = Server::start_at(&dir, &addr, &args).await;
            }
            feed.deliver(body).await;
        }
        feed.deliver(&resolved(at)).await;
        if kills < 10 && w % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
            server.run.kill9();
            killed = true;
            kills += 1;
            server = Server::start_at(&dir, &addr, &args).await;
        }
        if killed && w > 0 {
            // The changefeed restarts from an older cursor: the previous window again, then
            // this one, then its resolved timestamp (equal: accepted).
            let (old, old_at, _) = &windows[w - 1];
            for body in old.iter().chain(requests) {
                feed.deliver(body).await;
            }
            let _ = old_at;
            feed.deliver(&resolved(at)).await;
        }
        w += 1;
    }
    assert_eq!(kills, 10, "ten kills");
    let (_, at, model) = windows.last().expect("windows");
    applied(&client, at, || server.run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows());
}

#[tokio::test]
async fn two_instances_share_staging_and_the_standby_takes_over_from_a_killed_holder() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let args = args(&db.url, &["-v"]);
    let a = Server::start(&dir, &args).await;
    let b = Server::start(&dir, &args).await;
    let path = format!("/{}/public", db.name);
    let mut feeds = [
        Feed::new(&a.addr, Trust::Plain, &path, None),
        Feed::new(&b.addr, Trust::Plain, &path, None),
    ];
    let windows = workload(23, 300, 30);
    let (first, at, model) = &windows[0];
    for (i, body) in first.iter().enumerate() {
        feeds[i % 2].deliver(body).await;
    }
    feeds[1].deliver(&resolved(at)).await;
    applied(&client, at, || format!("{}\n---\n{}", a.run.log(), b.run.log())).await;
    assert_eq!(target_rows(&client).await, model.rows());
    let roles = [http_get(&a.addr, "/_/healthz").await.1, http_get(&b.addr, "/_/healthz").await.1];
    assert!(
        roles.contains(&"active\n".to_owned()) && roles.contains(&"standby\n".to_owned()),
        "one sweeps, one stands by: {roles:?}"
    );
    let standby = usize::from(roles[0] == "active\n");
    let mut servers = [a, b];
    assert!(servers[standby].run.log().contains("standby:"), "the standby says so");
    // A resolved timestamp recorded by the standby wakes the holder by NOTIFY.
    let (second, at, model) = &windows[1];
    let mut feed = Feed::new(&servers[standby].addr, Trust::Plain, &path, None);
    for body in second {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at)).await;
    applied(&client, at, || servers[1 - standby].run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows());
    let holder_log = servers[1 - standby].run.log();
    assert!(holder_log.contains("woken by NOTIFY"), "{holder_log}");
    // Kill the holder; the client goes on with the other instance only.
    servers[1 - standby].run.kill9();
    let survivor = &servers[standby];
    let mut feed = Feed::new(&survivor.addr, Trust::Plain, &path, None);
    let started = Instant::now();
    for (requests, at, _) in &windows[2..] {
        for body in requests {
            feed.deliver(body).await;
        }
        feed.deliver(&resolved(at)).await;
    }
    let (_, at, model) = windows.last().expect("windows");
    applied(&client, at, || survivor.run.log()).await;
    assert!(started.elapsed() < Duration::from_secs(30), "took over within two lease periods");
    assert_eq!(target_rows(&client).await, model.rows());
    assert_eq!(http_get(&survivor.addr, "/_/healthz").await.1, "active\n");
}

#[tokio::test]
async fn a_target_down_for_10_s_mid_window_is_retried_then_converges() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let (proxy, target) = support::changefeed::Proxy::to_database(&db.url);
    let args = args(&target, &["--stagingConn", &db.url, "--quiescentPeriod", "1s"]);
    let mut server = Server::start(&dir, &args).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let windows = workload(5, 100, 50);
    let (requests, at, model) = &windows[0];
    for body in requests {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at)).await;
    applied(&client, at, || server.run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows());
    // The target goes away with the next window staged: requests still get 200 (staging is
    // up), the resolved timestamp waits.
    proxy.cut();
    let (requests, at, model) = &windows[1];
    for body in requests {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let waiting = format!(
        "SELECT count(*) FROM {STAGING}.checkpoints WHERE source_hlc = '{at}'::numeric AND target_applied_at IS NULL"
    );
    assert_eq!(
        dump(&client, &waiting).await,
        [[Some("1".to_owned())]],
        "not applied while the target is down"
    );
    proxy.restore();
    applied(&client, at, || server.run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows());
    // Said once the sweep that applied it returns (just after the checkpoint is marked).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.run.log().contains("sweeping again") {
        assert!(Instant::now() < deadline, "{}", server.run.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = server.run.log();
    // Logged once per distinct failure (the cut may first break a statement in flight), not
    // once per retry: about 20 in 10 s.
    let warned = log.matches("applying staged changes failed").count();
    assert!((1..=2).contains(&warned), "logged {warned} times:\n{log}");
    assert!(feed.refusals.is_empty(), "staging was up: {:?}", feed.refusals);

    // The target down again, a window staged and resolved, and the process killed: a restart
    // sweeps what staging holds before any request arrives.
    proxy.cut();
    let late = hlc(BASE + 10_000 * 1_000_000, 0);
    let row = line("other", json!([1000]), Some(json!({"id": 1000, "v": 1})), &late);
    feed.deliver(&payload(&[row])).await;
    feed.deliver(&resolved(&late)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.run.kill9();
    proxy.restore();
    let server = Server::start(&dir, &args).await;
    applied(&client, &late, || server.run.log()).await;
    let mut expected = model.rows();
    expected[2].push(vec![Some("1000".into()), Some("1".into())]);
    assert_eq!(target_rows(&client).await, expected);
    assert!(
        server.run.log().contains("resolved timestamps wait in staging"),
        "{}",
        server.run.log()
    );
}

#[tokio::test]
async fn resolved_timestamps_going_backwards_get_409_and_mariadb_targets_work() {
    let dir = TempDir::new();
    let my = MyDatabase::create().await;
    {
        use mysql_async::prelude::Queryable as _;
        let mut conn = my.conn().await;
        conn.query_drop(
            "CREATE TABLE parent (id BIGINT PRIMARY KEY, v BIGINT NOT NULL); \
             CREATE TABLE child (id BIGINT PRIMARY KEY, pid BIGINT NOT NULL, v BIGINT NOT NULL, \
               FOREIGN KEY (pid) REFERENCES parent (id)); \
             CREATE TABLE other (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)",
        )
        .await
        .expect("target schema");
    }
    let staging_db = PgDatabase::create().await;
    let staging = staging_db.client().await;
    let server = Server::start(&dir, &args(&my.url, &["--stagingConn", &staging_db.url])).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}", my.name), None);
    let windows = workload(3, 200, 50);
    for (requests, at, _) in &windows {
        for body in requests {
            feed.deliver(body).await;
        }
        feed.deliver(&resolved(at)).await;
    }
    let (_, at, model) = windows.last().expect("windows");
    applied(&staging, at, || server.run.log()).await;
    let rows = {
        use mysql_async::prelude::Queryable as _;
        let mut conn = my.conn().await;
        let mut out = Vec::new();
        for sql in [
            "SELECT CAST(id AS CHAR), CAST(v AS CHAR) FROM parent ORDER BY id",
            "SELECT CAST(id AS CHAR), CAST(pid AS CHAR), CAST(v AS CHAR) FROM child ORDER BY id",
            "SELECT CAST(id AS CHAR), CAST(v AS CHAR) FROM other ORDER BY id",
        ] {
            let rows: Vec<mysql_async::Row> = conn.query(sql).await.expect("dump");
            out.push(
                rows.into_iter()
                    .map(|r| {
                        (0..r.len()).map(|i| r.get::<Option<String>, _>(i).flatten()).collect()
                    })
                    .collect::<Vec<Vec<Option<String>>>>(),
            );
        }
        out
    };
    assert_eq!(rows, model.rows().to_vec());
    // Equal: accepted; older: 409, counted, logged once for the same case.
    let mut client = feed.client;
    assert_eq!(client.post(&feed.path, None, &resolved(at)).await.status, 200);
    let older = hlc(BASE, 0);
    for _ in 0..2 {
        let r = client.post(&feed.path, None, &resolved(&older)).await;
        assert_eq!(r.status, 409, "{}", r.body);
        assert!(r.body.contains("older than"), "{}", r.body);
    }
    let (_, varz) = http_get(&server.addr, "/_/varz").await;
    assert!(varz.contains("checkpoint_proposed_going_backwards_errors"), "{varz}");
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_writes_nothing_once_it_resumes() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    // Staging is the target's database (the default): the lease fences every target
    // transaction. Tiny rounds, so a pause lands in the middle of a sweep.
    let args = args(&db.url, &["--flushSize", "3"]);
    let a = Server::start(&dir, &args).await;
    let b = Server::start(&dir, &args).await;
    let path = format!("/{}/public", db.name);
    let windows = workload(41, 400, 100);
    let mut feed = Feed::new(&a.addr, Trust::Plain, &path, None);
    let (first, at, _) = &windows[0];
    for body in first {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at)).await;
    applied(&client, at, || a.run.log()).await;
    let roles = [http_get(&a.addr, "/_/healthz").await.1, http_get(&b.addr, "/_/healthz").await.1];
    let holder = usize::from(roles[1] == "active\n");
    let servers = [a, b];
    let (paused, other) = (&servers[holder], &servers[1 - holder]);
    let pid = paused.run.child.as_ref().expect("running").id().to_string();

    // The holder starts sweeping the next window and is paused mid-sweep.
    let mut feed = Feed::new(&other.addr, Trust::Plain, &path, None);
    let (second, at, _) = &windows[1];
    for body in second {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at)).await;
    let mut holder_feed = Feed::new(&paused.addr, Trust::Plain, &path, None);
    holder_feed.deliver(&resolved(at)).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let stopped = std::process::Command::new("kill").args(["-STOP", &pid]).status().expect("kill");
    assert!(stopped.success());
    // The other instance takes the lease once it expires (5 s) and goes on; the paused one
    // may hold row locks that make it wait until the paused one resumes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let other_pid = other.run.child.as_ref().expect("running").id().to_string();
    loop {
        let held = dump(&client, &format!("SELECT hostname FROM {STAGING}.leases")).await;
        if held.iter().any(|r| r[0].as_deref().is_some_and(|h| h.contains(&other_pid))) {
            break;
        }
        assert!(Instant::now() < deadline, "no takeover: {held:?}\n{}", other.run.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = std::process::Command::new("kill").args(["-CONT", &pid]).status().expect("kill");
    assert!(resumed.success());
    for (requests, at, _) in &windows[2..] {
        for body in requests {
            feed.deliver(body).await;
        }
        feed.deliver(&resolved(at)).await;
    }
    let (_, at, model) = windows.last().expect("windows");
    applied(&client, at, || other.run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !paused.run.log().contains("standby: stopped sweeping") {
        assert!(Instant::now() < deadline, "{}", paused.run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_get(&paused.addr, "/_/healthz").await.1, "standby\n");
    assert_eq!(http_get(&other.addr, "/_/healthz").await.1, "active\n");
}

#[tokio::test]
async fn a_lease_taken_over_while_a_round_waits_fences_the_round_out() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let server = Server::start(&dir, &args(&db.url, &[])).await;
    let path = format!("/{}/public", db.name);
    let windows = workload(43, 100, 50);
    let mut feed = Feed::new(&server.addr, Trust::Plain, &path, None);
    let (first, at, model) = &windows[0];
    for body in first {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at)).await;
    applied(&client, at, || server.run.log()).await;
    // Another instance is about to take the lease over: it holds the row while the next
    // window's first round starts, so that round's fence waits for it.
    let mut other = db.client().await;
    let takeover = other.transaction().await.expect("begin");
    takeover
        .batch_execute(&format!("SELECT * FROM {STAGING}.leases FOR UPDATE"))
        .await
        .expect("lock the lease");
    let (second, at2, _) = &windows[1];
    for body in second {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    takeover
        .batch_execute(&format!(
            "UPDATE {STAGING}.leases SET nonce = gen_random_uuid(), hostname = 'elsewhere', \
             expires = now() AT TIME ZONE 'UTC' + INTERVAL '1 hour'"
        ))
        .await
        .expect("take the lease");
    takeover.commit().await.expect("commit");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.run.log().contains("standby: stopped sweeping") {
        assert!(Instant::now() < deadline, "{}", server.run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = server.run.log();
    assert!(
        log.contains("is no longer held by this instance"),
        "the fence refused the round:\n{log}"
    );
    assert_eq!(target_rows(&client).await, model.rows(), "nothing of the second window written");
    let waiting = format!(
        "SELECT count(*) FROM {STAGING}.checkpoints WHERE source_hlc = '{at2}'::numeric AND target_applied_at IS NULL"
    );
    assert_eq!(dump(&client, &waiting).await, [[Some("1".to_owned())]]);
}

/// Polls until the target's tables equal `expected`.
async fn converges(
    client: &tokio_postgres::Client,
    expected: &[Vec<Vec<Option<String>>>; 3],
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = target_rows(client).await;
        if rows == *expected {
            return;
        }
        assert!(Instant::now() < deadline, "{rows:?}\n!=\n{expected:?}\n{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn best_effort_applies_without_resolved_timestamps_each_fk_group_under_its_own_lease() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let server =
        Server::start(&dir, &args(&db.url, &["--bestEffortOnly", "--quiescentPeriod", "1s"])).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    // A child before its parent (disjoint keys arrive in any order): retried until the parent
    // is in. No resolved timestamp is needed.
    let late = |n: i64| hlc(BASE + (10_000 + n) * 1_000_000, 0);
    feed.deliver(&payload(&[line(
        "child",
        json!([1000]),
        Some(json!({"id": 1000, "pid": 1000, "v": 2})),
        &late(2),
    )]))
    .await;
    feed.deliver(&payload(&[
        line("parent", json!([1000]), Some(json!({"id": 1000, "v": 1})), &late(1)),
        line("other", json!([1000]), Some(json!({"id": 1000, "v": 3})), &late(3)),
    ]))
    .await;
    let windows = workload(13, 100, 50);
    let (requests, at, model) = &windows[1];
    for body in windows[0].0.iter().chain(requests) {
        feed.deliver(body).await;
    }
    let mut expected = model.rows();
    expected[0].push(vec![Some("1000".into()), Some("1".into())]);
    expected[1].push(vec![Some("1000".into()), Some("1000".into()), Some("2".into())]);
    expected[2].push(vec![Some("1000".into()), Some("3".into())]);
    converges(&client, &expected, || server.run.log()).await;
    let leases = dump(&client, &format!("SELECT name FROM {STAGING}.leases ORDER BY name")).await;
    let group = format!("changefeed.{}.public", db.name);
    assert_eq!(
        leases,
        [[Some(format!("{group}.child"))], [Some(format!("{group}.other"))]],
        "one lease per group of tables connected by foreign keys"
    );
    // A resolved timestamp is marked applied once every group has applied up to it.
    feed.deliver(&resolved(&late(4))).await;
    let _ = at;
    applied(&client, &late(4), || server.run.log()).await;
    assert!(server.run.log().contains("best effort: applied staged rows"), "{}", server.run.log());
    assert_eq!(http_get(&server.addr, "/_/healthz").await.1, "active\n");
}

#[tokio::test]
async fn best_effort_window_switches_by_the_applied_resolved_timestamps_age() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let server = Server::start(&dir, &args(&db.url, &["--bestEffortWindow", "1h"])).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let now = || {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        i64::try_from(nanos).expect("nanos")
    };
    let other =
        |id: i64, at: &str| line("other", json!([id]), Some(json!({"id": id, "v": id})), at);
    let count = |id: i64| format!("SELECT count(*) FROM other WHERE id = {id}");
    // Nothing applied yet: best effort, the row goes in without a resolved timestamp.
    feed.deliver(&payload(&[other(1, &hlc(now(), 0))])).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dump(&client, &count(1)).await != [[Some("1".to_owned())]] {
        assert!(Instant::now() < deadline, "{}", server.run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fresh resolved timestamp applied: consistent again, rows wait for the next one.
    let at = hlc(now(), 0);
    feed.deliver(&resolved(&at)).await;
    applied(&client, &at, || server.run.log()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.run.log().contains("consistent: applying by resolved timestamp again") {
        assert!(Instant::now() < deadline, "{}", server.run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    feed.deliver(&payload(&[other(2, &hlc(now(), 0))])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(dump(&client, &count(2)).await, [[Some("0".to_owned())]], "waits for resolved");
    let at = hlc(now(), 0);
    feed.deliver(&resolved(&at)).await;
    applied(&client, &at, || server.run.log()).await;
    assert_eq!(dump(&client, &count(2)).await, [[Some("1".to_owned())]]);
    let log = server.run.log();
    assert!(log.contains("best effort: applying staged rows without waiting"), "{log}");
}

#[tokio::test]
async fn a_row_the_target_refuses_holds_the_sweep_until_the_target_is_fixed() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE t (id int8 PRIMARY KEY, v varchar(3))")
        .await
        .expect("schema");
    let server = Server::start(&dir, &args(&db.url, &["--quiescentPeriod", "500ms"])).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let row = |id: i64, v: &str, n: i64| {
        line("t", json!([id]), Some(json!({"id": id, "v": v})), &hlc(BASE + n, 0))
    };
    feed.deliver(&payload(&[row(1, "toolong", 1), row(2, "ok", 1)])).await;
    feed.deliver(&resolved(&hlc(BASE + 2, 0))).await;
    feed.deliver(&payload(&[row(3, "yes", 3)])).await;
    feed.deliver(&resolved(&hlc(BASE + 4, 0))).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.run.log().contains("nothing later is applied until it succeeds") {
        assert!(Instant::now() < deadline, "{}", server.run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = server.run.log();
    assert!(log.contains("value too long") && log.contains("key [1]"), "names the row:\n{log}");
    let all = "SELECT id::text, v FROM t x ORDER BY x.id";
    assert!(dump(&client, all).await.is_empty(), "nothing of the window, nor later");
    // The operator widens the column: the retry goes through, and everything after it.
    client.batch_execute("ALTER TABLE t ALTER COLUMN v TYPE text").await.expect("alter");
    applied(&client, &hlc(BASE + 4, 0), || server.run.log()).await;
    assert_eq!(
        dump(&client, all).await,
        [
            vec![Some("1".to_owned()), Some("toolong".to_owned())],
            vec![Some("2".to_owned()), Some("ok".to_owned())],
            vec![Some("3".to_owned()), Some("yes".to_owned())],
        ]
    );
    assert_eq!(server.run.log().matches("nothing later is applied").count(), 1, "logged once");
}

#[tokio::test]
async fn schemas_whose_staging_names_share_a_prefix_are_swept_apart() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int8 PRIMARY KEY, v int8); CREATE SCHEMA public_x; \
             CREATE TABLE public_x.t (id int8 PRIMARY KEY, v int8)",
        )
        .await
        .expect("schemas");
    let server = Server::start(&dir, &args(&db.url, &[])).await;
    // public_x's staging table (<db>_public_x_t) starts with public's prefix (<db>_public_).
    // public_x's rows are staged and wait for their resolved timestamp while public's sweep.
    let feed = |schema: &str| {
        Feed::new(&server.addr, Trust::Plain, &format!("/{}/{schema}", db.name), None)
    };
    let (mut x, mut public) = (feed("public_x"), feed("public"));
    let row = |v: i64| {
        payload(&[line("t", json!([1]), Some(json!({"id": 1, "v": v})), &hlc(BASE + v, 0))])
    };
    x.deliver(&row(2)).await;
    public.deliver(&row(1)).await;
    public.deliver(&resolved(&hlc(BASE + 10, 0))).await;
    applied(&client, &hlc(BASE + 10, 0), || server.run.log()).await;
    x.deliver(&resolved(&hlc(BASE + 10, 0))).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!(
        "SELECT group_name FROM {STAGING}.checkpoints WHERE target_applied_at IS NOT NULL ORDER BY 1"
    );
    let want = [[Some(format!("{}.public", db.name))], [Some(format!("{}.public_x", db.name))]];
    while dump(&client, &sql).await != want {
        assert!(Instant::now() < deadline, "{}", server.run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = "SELECT (SELECT v FROM public.t)::text, (SELECT v FROM public_x.t)::text";
    assert_eq!(dump(&client, rows).await, [[Some("1".to_owned()), Some("2".to_owned())]]);
    let log = server.run.log();
    assert_eq!(log.matches("maps to none of its tables").count(), 1, "said once:\n{log}");
}

#[tokio::test]
async fn best_effort_restarts_apply_what_staging_holds_before_any_request() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let (proxy, target) = support::changefeed::Proxy::to_database(&db.url);
    let args = args(&target, &["--stagingConn", &db.url, "--bestEffortOnly"]);
    let mut server = Server::start(&dir, &args).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let first = line("other", json!([6]), Some(json!({"id": 6, "v": 6})), &hlc(BASE, 0));
    feed.deliver(&payload(&[first])).await;
    feed.deliver(&resolved(&hlc(BASE, 0))).await;
    applied(&client, &hlc(BASE, 0), || server.run.log()).await;
    // The target goes away; rows are staged (200) and wait; the process dies. No resolved
    // timestamp is left unapplied.
    proxy.cut();
    let row = line("other", json!([7]), Some(json!({"id": 7, "v": 7})), &hlc(BASE + 1, 0));
    feed.deliver(&payload(&[row])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.run.kill9();
    proxy.restore();
    let server = Server::start(&dir, &args).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dump(&client, "SELECT v::text FROM other WHERE id = 7").await != [[Some("7".to_owned())]]
    {
        assert!(Instant::now() < deadline, "{}", server.run.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn staging_down_for_10_s_gets_503s_then_the_changefeeds_retries_converge() {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let (proxy, staging) = support::changefeed::Proxy::to_database(&db.url);
    let args = args(&db.url, &["--stagingConn", &staging, "--quiescentPeriod", "1s"]);
    let server = Server::start(&dir, &args).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let windows = workload(11, 150, 50);
    let (requests, at, model) = &windows[0];
    for body in requests {
        feed.deliver(body).await;
    }
    feed.deliver(&resolved(at)).await;
    applied(&client, at, || server.run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows());

    // Staging goes away for 10 s (longer than the sweeper's lease) while the changefeed
    // delivers the next windows: 503s, which it retries, and nothing is lost.
    proxy.cut();
    let (status, body) = http_get(&server.addr, "/_/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("staging: "), "{body}");
    let back = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        proxy.restore();
        proxy
    });
    for (requests, at, _) in &windows[1..] {
        for body in requests {
            feed.deliver(body).await;
        }
        feed.deliver(&resolved(at)).await;
    }
    let _proxy = back.join().expect("restored");
    let (_, at, model) = windows.last().expect("windows");
    applied(&client, at, || server.run.log()).await;
    assert_eq!(target_rows(&client).await, model.rows());
    assert!(!feed.refusals.is_empty(), "staging was down");
    assert!(feed.refusals.iter().all(|r| r.status == 503), "{:?}", feed.refusals);
    assert_eq!(http_get(&server.addr, "/_/healthz").await.1, "active\n");
}

/// Waits until `sql` (one row, one text column) answers `want`.
async fn answers(client: &tokio_postgres::Client, sql: &str, want: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Option<String> = client.query_one(sql, &[]).await.expect(sql).get(0);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got:?}, not {want}\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A target database with the DDL, `start` on it with `flags`, a feed into its `public`, and
/// another session holding `table` locked against writes (COMMIT on it unlocks).
struct Locked {
    _dir: TempDir,
    _db: PgDatabase,
    client: tokio_postgres::Client,
    server: Server,
    feed: Feed,
    locker: tokio_postgres::Client,
}

async fn locked(flags: &[&str], table: &str) -> Locked {
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    let server = Server::start(&dir, &args(&db.url, flags)).await;
    let feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let locker = db.client().await;
    let lock = format!("BEGIN; LOCK TABLE {table} IN EXCLUSIVE MODE");
    locker.batch_execute(&lock).await.expect("lock");
    Locked { _dir: dir, _db: db, client, server, feed, locker }
}

#[tokio::test]
async fn parallelism_applies_unconnected_table_groups_at_once_and_1_one_after_the_other() {
    for parallelism in ["16", "1"] {
        // parent's row is the window's first; another session holds parent locked.
        let Locked { _dir: _kept_dir, _db: _kept_db, client, server, mut feed, locker } =
            locked(&["--parallelism", parallelism], "parent").await;
        let t = |n: i64| hlc(BASE + n * 1_000_000, 0);
        feed.deliver(&payload(&[
            line("parent", json!([1]), Some(json!({"id": 1, "v": 1})), &t(1)),
            line("other", json!([2]), Some(json!({"id": 2, "v": 2})), &t(2)),
        ]))
        .await;
        feed.deliver(&resolved(&t(3))).await;
        let other = "SELECT string_agg(id::text, ',') FROM other";
        if parallelism == "16" {
            // other is no FK away from parent and shares no source transaction with it: its
            // lane commits while parent's waits for the lock.
            answers(&client, other, "2", || server.run.log()).await;
        } else {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let got: Option<String> = client.query_one(other, &[]).await.expect("other").get(0);
            assert_eq!(got, None, "one transaction at a time: other waits behind parent");
        }
        locker.batch_execute("COMMIT").await.expect("unlock");
        applied(&client, &t(3), || server.run.log()).await;
        answers(&client, other, "2", || server.run.log()).await;
        answers(&client, "SELECT string_agg(id::text, ',') FROM parent", "1", || server.run.log())
            .await;
    }
}

#[tokio::test]
async fn limit_lookahead_applies_a_backlog_of_resolved_timestamps_a_few_at_a_time() {
    for lookahead in ["1", "0"] {
        // The target is locked while three windows and their resolved timestamps arrive: a
        // backlog, once it is unlocked.
        let Locked { _dir: _kept_dir, _db: _kept_db, client, server, mut feed, locker } =
            locked(&["--limitLookahead", lookahead], "other").await;
        let t = |n: i64| hlc(BASE + n * 1_000_000, 0);
        for w in 0..3 {
            let id = json!([w]);
            feed.deliver(&payload(&[line(
                "other",
                id,
                Some(json!({"id": w, "v": w})),
                &t(w * 10),
            )]))
            .await;
            feed.deliver(&resolved(&t(w * 10 + 5))).await;
        }
        let staged = format!("SELECT count(*)::text FROM {STAGING}.checkpoints");
        answers(&client, &staged, "3", || server.run.log()).await;
        locker.batch_execute("COMMIT").await.expect("unlock");
        applied(&client, &t(25), || server.run.log()).await;
        let marks = dump(
            &client,
            &format!(
                "SELECT target_applied_at::text FROM {STAGING}.checkpoints ORDER BY source_hlc"
            ),
        )
        .await;
        assert_eq!(marks.len(), 3);
        // Lookahead 1: one resolved timestamp a sweep, each marked on its own. Lookahead 0:
        // the sweep waiting at the lock took what had arrived when it started, the next one
        // everything else at once, so two share a mark.
        let distinct = marks.iter().collect::<std::collections::BTreeSet<_>>().len();
        if lookahead == "1" {
            assert_eq!(distinct, 3, "one resolved timestamp a sweep: {marks:?}");
        } else {
            assert!(distinct < 3, "every waiting resolved timestamp at once: {marks:?}");
        }
        answers(&client, "SELECT string_agg(id::text, ',') FROM other", "0,1,2", || {
            server.run.log()
        })
        .await;
    }
}

#[tokio::test]
async fn best_effort_writes_a_lone_tables_rows_during_the_request_and_stages_them_when_that_fails()
{
    let dir = TempDir::new();
    let db = PgDatabase::create().await;
    let client = db.client().await;
    client.batch_execute(DDL).await.expect("target schema");
    client.batch_execute("ALTER TABLE other ADD CHECK (v >= 0)").await.expect("check");
    let server =
        Server::start(&dir, &args(&db.url, &["--bestEffortOnly", "--quiescentPeriod", "1s"])).await;
    let mut feed = Feed::new(&server.addr, Trust::Plain, &format!("/{}/public", db.name), None);
    let t = |n: i64| hlc(BASE + n * 1_000_000, 0);
    // other has no foreign key: its row is on the target once the request is answered, and
    // staging keeps an applied stub for it, not the row. parent's goes through staging.
    feed.deliver(&payload(&[
        line("other", json!([1]), Some(json!({"id": 1, "v": 1})), &t(1)),
        line("parent", json!([1]), Some(json!({"id": 1, "v": 1})), &t(1)),
    ]))
    .await;
    let other = dump(&client, "SELECT id::text, v::text FROM other ORDER BY id").await;
    assert_eq!(other, [[Some("1".to_owned()), Some("1".to_owned())]], "{}", server.run.log());
    let staged_other = format!("{STAGING}.{}_public_other", db.name);
    let stub = dump(
        &client,
        &format!("SELECT convert_from(mut, 'UTF8'), applied::text FROM {staged_other}"),
    )
    .await;
    assert_eq!(stub, [[Some(r#"{"__stub__":true}"#.to_owned()), Some("true".to_owned())]]);
    answers(&client, "SELECT string_agg(id::text, ',') FROM parent", "1", || server.run.log())
        .await;
    // A row the target refuses: the request is still answered 200, its rows staged, and the
    // sweeper applies them once the target takes them. A newer version of key 1 sent later
    // is written at once; the older one staged before it never overwrites it.
    feed.deliver(&payload(&[
        line("other", json!([2]), Some(json!({"id": 2, "v": -2})), &t(2)),
        line("other", json!([1]), Some(json!({"id": 1, "v": -1})), &t(2)),
    ]))
    .await;
    let pending = format!("SELECT count(*)::text FROM {staged_other} WHERE NOT applied");
    answers(&client, &pending, "2", || server.run.log()).await;
    feed.deliver(&payload(&[line("other", json!([1]), Some(json!({"id": 1, "v": 3})), &t(3))]))
        .await;
    let rows = "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM other";
    answers(&client, rows, "1=3", || server.run.log()).await;
    client.batch_execute("ALTER TABLE other DROP CONSTRAINT other_v_check").await.expect("drop");
    answers(&client, rows, "1=3,2=-2", || server.run.log()).await;
    answers(&client, &pending, "0", || server.run.log()).await;
}
