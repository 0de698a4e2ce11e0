//! The script author's tools as a user runs them: `script new` (every template passes its
//! own fixtures and type-checks as scaffolded), `script test` (output, exit codes,
//! reproducibility, `onWrite` against a real database, `--watch`), `script check`, and the
//! worked examples.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{PgDatabase, TempDir, replicator, run, texts, tsc};

const TEMPLATE_ORDER: &[&str] = &[
    "filter_table",
    "table_filter",
    "table_filter_v1",
    "soft_delete",
    "drop_columns",
    "rename_columns",
    "rename_primary_keys",
    "route_partitions",
    "rename_tables",
    "computed_column",
    "soft_delete_pii",
    "dead_letter_queue",
    "mask_pii",
    "audit_columns",
];

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn script_test(script: &Path, input: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = run(&[
        &["script", "test", "--userscript", path(script), "--input", path(input)][..],
        extra,
    ]
    .concat());
    let (stdout, stderr) = texts(&out);
    (out.status.code(), stdout, stderr)
}

#[test]
fn every_template_scaffolds_type_checks_and_passes_its_fixtures() {
    let out = run(&["script", "new", "--list"]);
    let (list, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let names: Vec<&str> =
        list.lines().map(|l| l.split_whitespace().next().expect("name")).collect();
    assert_eq!(names, TEMPLATE_ORDER, "--list order");
    assert!(
        list.lines().all(|l| l.split_whitespace().count() >= 3),
        "each line has a description:\n{list}"
    );
    let on_disk = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("userscripts"))
        .expect("userscripts/")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".ts").map(str::to_owned))
        .count();
    assert_eq!(on_disk, TEMPLATE_ORDER.len(), "every userscripts/*.ts is a listed template");

    for name in TEMPLATE_ORDER {
        let dir = TempDir::new();
        let out = run(&["script", "new", "--template", name, "--dir", path(dir.path())]);
        assert!(out.status.success(), "{name}: {}", texts(&out).1);
        let (code, stdout, stderr) = script_test(
            &dir.join(&format!("{name}.ts")),
            &dir.join(&format!("{name}.input.ndjson")),
            &["--expect", path(&dir.join(&format!("{name}.expected.ndjson")))],
        );
        assert_eq!(code, Some(0), "{name}: script test --expect failed:\n{stdout}\n{stderr}");
        assert!(!stdout.is_empty(), "{name}: the fixture produces output");
        let tsc_out = Command::new(tsc())
            .arg("--noEmit")
            .arg("-p")
            .arg(dir.path())
            .output()
            .expect("run tsc");
        assert!(
            tsc_out.status.success(),
            "{name}: tsc -p on the scaffolded folder:\n{}",
            String::from_utf8_lossy(&tsc_out.stdout)
        );
    }
}

#[test]
fn script_new_replaces_the_schema_and_refuses_to_overwrite() {
    let dir = TempDir::new();
    let new = |extra: &[&str]| {
        run(&[
            &["script", "new", "--template", "table_filter", "--dir", path(dir.path())][..],
            extra,
        ]
        .concat())
    };
    assert!(new(&["--targetSchema", "shop.sales"]).status.success());
    for file in ["table_filter.ts", "table_filter.expected.ndjson"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("written");
        assert!(
            text.contains("shop.sales") && !text.contains("defaultdb.public"),
            "{file}:\n{text}"
        );
    }
    assert!(dir.join("replicator@v2.d.ts").exists() && dir.join("tsconfig.json").exists());
    let (code, out, err) = script_test(
        &dir.join("table_filter.ts"),
        &dir.join("table_filter.input.ndjson"),
        &["--expect", path(&dir.join("table_filter.expected.ndjson"))],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");

    let out = new(&[]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("already exist") && stderr.contains("--force"), "{stderr}");
    assert!(new(&["--force"]).status.success());

    let out = run(&["script", "new", "--template", "nope"]);
    let (_, stderr) = texts(&out);
    assert!(
        !out.status.success()
            && stderr.contains("no template \"nope\"")
            && stderr.contains("filter_table"),
        "{stderr}"
    );

    let dir1 = TempDir::new();
    let out = run(&["script", "new", "--template", "table_filter_v1", "--dir", path(dir1.path())]);
    assert!(out.status.success());
    assert!(dir1.join("replicator@v1.d.ts").exists(), "a v1 template gets the v1 typings");
}

#[test]
fn every_example_passes_its_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("examples/") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        assert!(dir.join("README.md").exists(), "{} has a README", dir.display());
        for file in std::fs::read_dir(&dir).expect("example dir") {
            let file = file.expect("entry").path();
            let Some(stem) = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".input.ndjson"))
            else {
                continue;
            };
            let (code, out, err) = script_test(
                &dir.join(format!("{stem}.ts")),
                &file,
                &["--expect", path(&dir.join(format!("{stem}.expected.ndjson")))],
            );
            assert_eq!(code, Some(0), "{}: {out}\n{err}", file.display());
            checked += 1;
        }
    }
    assert!(checked >= 3, "examples checked: {checked}");
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

const SCRIPT: &str = r#"import * as api from "replicator@v2";
api.configureTargetSchema("db.public", {
  onRowUpsert: (row, meta) => {
    if (meta.table === "boom") throw new Error("boom on " + row.id);
    return { ...row, uuid: api === undefined ? "" : "", at: new Date().toISOString(), nanos: meta.nanos };
  },
  onRowDelete: (row) => row,
});
"#;

#[test]
fn script_test_exit_codes_name_the_problem() {
    let dir = TempDir::new();
    let script = write(&dir, "s.ts", SCRIPT);
    let input =
        write(&dir, "in.ndjson", "{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 1}}\n");
    let (code, stdout, stderr) = script_test(&script, &input, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        r#"{"schema":"db.public","table":"t","op":"upsert","row":{"id":"1","uuid":"","at":"2024-01-01T00:00:00.000Z","nanos":"1704067200000000000"}}"#
    );
    assert!(stderr.contains("rows in: 1, rows out: 1 (t 1), rows dropped: 0"), "{stderr}");

    let expect = write(
        &dir,
        "want.ndjson",
        "{\"schema\":\"db.public\",\"table\":\"t\",\"op\":\"upsert\",\"row\":{\"id\":\"2\"}}\n",
    );
    let (code, _, stderr) = script_test(&script, &input, &["--expect", path(&expect)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("line 1:\n- ") && stderr.contains("the output differs"), "{stderr}");

    let (code, _, stderr) = script_test(&script, &dir.join("missing.ndjson"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot read --input"), "{stderr}");

    let boom = write(
        &dir,
        "boom.ndjson",
        "{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 1}}\n{\"table\": \"boom\", \"op\": \"upsert\", \"row\": {\"id\": 7}}\n",
    );
    let (code, _, stderr) = script_test(&script, &boom, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("boom.ndjson:2:")
            && stderr.contains("at s.ts:4:")
            && stderr.contains("Error: boom on 7"),
        "{stderr}"
    );

    let bad = write(
        &dir,
        "bad.ndjson",
        "{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 1}}\n{\"table\": \"t\", \"op\": \"merge\", \"row\": {}}\n",
    );
    let (code, _, stderr) = script_test(&script, &bad, &[]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("bad.ndjson:2: \"op\" must be \"upsert\" or \"delete\""), "{stderr}");

    let broken = write(&dir, "broken.ts", "const x = ;\n");
    let (code, _, stderr) = script_test(&broken, &input, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("broken.ts:1:11: syntax error"), "{stderr}");

    let (code, _, stderr) = script_test(&script, &input, &["--now", "yesterday"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn script_test_is_reproducible_with_now_and_seed() {
    let dir = TempDir::new();
    let script = write(
        &dir,
        "u.ts",
        r#"import * as v1 from "replicator@v1";
v1.configureSource("db.public", { dispatch: (doc, meta) => ({ [meta.table]: [{ ...doc, id2: v1.randomUUID(), t: Date.now() }] }), deletesTo: "t" });
"#,
    );
    let input = write(
        &dir,
        "in.ndjson",
        "{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 1}}\n{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 2}}\n",
    );
    let first = script_test(&script, &input, &[]);
    let again = script_test(&script, &input, &[]);
    assert_eq!(first.0, Some(0), "{}", first.2);
    assert_eq!(first.1, again.1, "same seed, same output");
    let other = script_test(&script, &input, &["--seed", "42", "--now", "2025-06-01T12:00:00Z"]);
    assert_ne!(first.1, other.1);
    assert!(other.1.contains("\"t\":1748779200000"), "{}", other.1);
    let uuids: Vec<&str> = first
        .1
        .lines()
        .map(|l| l.split("\"id2\":\"").nth(1).expect("uuid").split('"').next().expect("uuid"))
        .collect();
    assert_ne!(uuids[0], uuids[1]);
    assert!(uuids.iter().all(|u| u.len() == 36 && u.as_bytes()[14] == b'4'), "{uuids:?}");
}

#[test]
fn script_test_runs_on_write_against_the_target_and_rolls_back() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(async {
        let db = PgDatabase::create().await;
        db.client()
            .await
            .batch_execute(
                "CREATE TABLE orders (id INT8, region TEXT, note TEXT NOT NULL, PRIMARY KEY (region, id));
                 CREATE TABLE audit (what TEXT);",
            )
            .await
            .expect("schema");
        db
    });
    let dir = TempDir::new();
    let script = write(
        &dir,
        "w.ts",
        &format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{0}.public", {{ onRowUpsert: (r) => r, onRowDelete: (r) => r }});
api.configureTargetTables(["orders"], {{
  onRowUpsert: (r) => r,
  onRowDelete: (key) => (key[0] === "eu" ? null : key),
  onWrite: async (rows) => {{
    await api.write(rows);
    const [[n]] = [...(await api.getTX().query("SELECT count(*) FROM orders"))];
    await api.getTX().exec("INSERT INTO audit VALUES ($1)", "saw " + n);
    console.info("wrote", n);
  }},
}});
"#,
            db.name
        ),
    );
    let input = write(
        &dir,
        "in.ndjson",
        "{\"table\": \"orders\", \"op\": \"upsert\", \"row\": {\"id\": 1, \"region\": \"us\", \"note\": \"a\"}}\n\
        {\"table\": \"orders\", \"op\": \"delete\", \"row\": {\"id\": 2, \"region\": \"eu\"}}\n\
        {\"table\": \"orders\", \"op\": \"delete\", \"row\": {\"id\": 3, \"region\": \"us\"}}\n",
    );

    let (code, _, stderr) = script_test(&script, &input, &[]);
    assert_eq!(code, Some(2), "no PK information for the table-level delete: {stderr}");
    assert!(stderr.contains("pass --primaryKeys orders=COL1,COL2"), "{stderr}");

    let (code, stdout, stderr) =
        script_test(&script, &input, &["--primaryKeys", "orders=region,id"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("onWrite for table \"orders\" (2 rows): not run (needs --targetConn)"),
        "{stderr}"
    );
    assert!(
        stdout.contains(r#""op":"delete","row":{"id":"3","region":"us"},"key":["us","3"]"#),
        "{stdout}"
    );

    let (code, stdout2, stderr) = script_test(&script, &input, &["--targetConn", &db.url]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, stdout2, "keys read from the target match --primaryKeys");
    assert!(stderr.contains("ran against --targetConn, rolled back"), "{stderr}");
    assert!(
        stderr.contains("wrote 1"),
        "the script saw its own write inside the transaction: {stderr}"
    );
    let counts: (i64, i64) = runtime.block_on(async {
        let c = db.client().await;
        let a = c.query_one("SELECT count(*) FROM orders", &[]).await.expect("count").get(0);
        let b = c.query_one("SELECT count(*) FROM audit", &[]).await.expect("count").get(0);
        (a, b)
    });
    assert_eq!(counts, (0, 0), "everything was rolled back");

    let (code, _, stderr) =
        script_test(&script, &input, &["--targetConn", "postgres://nobody:Sekr1t@127.0.0.1:1/x"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "cannot reach --targetConn: connecting to postgres://nobody:****@127.0.0.1:1/x failed"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("Sekr1t"), "{stderr}");
    drop(db);
}

#[test]
fn script_check_shows_configuration_and_missing_names() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(async {
        let db = PgDatabase::create().await;
        db.client()
            .await
            .batch_execute("CREATE TABLE orders (id INT8 PRIMARY KEY)")
            .await
            .expect("schema");
        db
    });
    let dir = TempDir::new();
    let script = write(
        &dir,
        "c.ts",
        &format!(
            r#"import * as api from "replicator@v2";
api.configureTargetSchema("{0}.public", {{ onRowUpsert: (r) => r, onRowDelete: (r) => r }});
api.configureTargetTables(["orders", "customers"], {{ onWrite: async (rows) => api.write(rows) }});
"#,
            db.name
        ),
    );
    let out = run(&["script", "check", "--userscript", path(&script)]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "schema {}.public (replicator@v2): onRowUpsert, onRowDelete",
            db.name
        )),
        "{stdout}"
    );
    assert!(stdout.contains("table orders (replicator@v2): onWrite"), "{stdout}");

    let out = run(&["script", "check", "--userscript", path(&script), "--targetConn", &db.url]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stdout.contains("missing on the target: table customers (public.customers)"),
        "{stdout}"
    );
    assert!(!stdout.contains("table orders (public.orders)"), "{stdout}");

    runtime.block_on(async {
        db.client()
            .await
            .batch_execute("CREATE TABLE customers (id INT8 PRIMARY KEY)")
            .await
            .expect("create")
    });
    let out = run(&["script", "check", "--userscript", path(&script), "--targetConn", &db.url]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("every schema and table the script names exists"), "{stdout}");

    let broken = write(&dir, "b.ts", "import x from \"fs\";\n");
    let out = run(&["script", "check", "--userscript", path(&broken)]);
    assert_eq!(out.status.code(), Some(2));
    drop(db);
}

#[test]
fn script_test_watch_runs_again_on_change() {
    let dir = TempDir::new();
    let script = write(&dir, "s.ts", SCRIPT);
    let input =
        write(&dir, "in.ndjson", "{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 1}}\n");
    let mut child = replicator()
        .args(["script", "test", "--watch", "--userscript", path(&script), "--input", path(&input)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
                && line.contains(needle)
            {
                return true;
            }
        }
        false
    };
    assert!(wait_for("rows in: 1,"), "first run");
    // A new modification time (filesystems may have one-second resolution).
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&input, "{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 1}}\n{\"table\": \"t\", \"op\": \"upsert\", \"row\": {\"id\": 2}}\n").expect("edit");
    let rerun = wait_for("change detected") && wait_for("rows in: 2,");
    let _ = child.kill();
    let _ = child.wait();
    assert!(rerun, "--watch ran again after the input changed");
}
