//! The `replicator` binary as a user runs it: help, version, make-jwt, logging, errors.
//! Tokens are verified with the public key by two verifiers that did not sign them:
//! jsonwebtoken's decoder and the openssl command line.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use support::changefeed::{openssl, rsa_key};
use support::{TempDir, run, texts};

// ---------------------------------------------------------------------------------------------
// help

/// Every flag line in `--help` carries an explanation on the same line.
fn assert_every_flag_explained(help: &str) {
    let mut flags = 0;
    for line in help.lines() {
        let trimmed = line.trim_start();
        // Flag lines are indented a little; wrapped explanations a lot.
        if !trimmed.starts_with('-') || line.len() - trimmed.len() > 8 {
            continue;
        }
        flags += 1;
        let spec_end = trimmed.find("  ").unwrap_or_else(|| panic!("no explanation: {line:?}"));
        let explanation = trimmed[spec_end..].trim();
        assert!(explanation.split_whitespace().count() >= 2, "thin explanation: {line:?}");
    }
    assert!(flags >= 2, "no flags found in:\n{help}");
}

#[test]
fn help_explains_every_flag_of_every_command() {
    for args in [
        &["--help"][..],
        &["version", "--help"],
        &["make-jwt", "--help"],
        &["pglogical", "--help"],
        &["script", "api", "--help"],
        &["script", "bench", "--help"],
        &["userscript", "--help"],
    ] {
        let out = run(args);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert_every_flag_explained(&stdout);
        assert!(stdout.contains("--logDestination"), "global flags on {args:?}");
    }
    let (top, _) = texts(&run(&["--help"]));
    assert!(top.contains("version") && top.contains("make-jwt"));
    assert!(top.contains("[default: info]") && top.contains("[default: text]"));
    let (jwt, _) = texts(&run(&["make-jwt", "--help"]));
    for flag in ["-k, --key <PEM>", "-a, --allow <SCHEMA>", "-o, --out <FILE>", "--claim"] {
        assert!(jwt.contains(flag), "make-jwt --help lacks {flag}:\n{jwt}");
    }
}

#[test]
fn commands_not_built_yet_and_unimplemented_molt_flags_are_refused() {
    let out = run(&["oraclelogminer", "--sourceConn", "oracle://u:pw@h/db"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`oraclelogminer` is a MOLT Replicator command"), "{stderr}");

    // A MOLT flag pglogical does not implement yet is refused, not ignored.
    let out = run(&["pglogical", "--dlqTableName=dlq"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dlqTableName is a MOLT Replicator flag"), "{stderr}");

    let out = run(&["version", "--flushSize=100"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unexpected argument '--flushSize'"), "{stderr}");
    assert!(stderr.contains("--flushSize is a MOLT Replicator flag"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// version

fn lock_packages() -> usize {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .expect("read Cargo.lock");
    lock.matches("[[package]]").count()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn version_lists_build_facts_and_every_dependency_with_its_checksum() {
    let out = run(&["version"]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("replicator\t{}", env!("CARGO_PKG_VERSION")));
    assert!(lines[1].starts_with("commit\t"), "{}", lines[1]);
    assert!(lines[2].starts_with("rustc\trustc 1."), "{}", lines[2]);
    assert!(lines[3].starts_with("target\t") && lines[3].contains("linux"), "{}", lines[3]);
    let deps: Vec<Vec<&str>> = lines[4..].iter().map(|l| l.split('\t').collect()).collect();
    assert_eq!(deps.len(), lock_packages() - 1, "every Cargo.lock package but replicator");
    for dep in &deps {
        assert_eq!(dep.len(), 4, "{dep:?}");
        assert_eq!(dep[0], "dep");
        assert!(dep[2].contains('.'), "version of {dep:?}");
        assert!(is_sha256_hex(dep[3]), "checksum of {dep:?}");
    }
    let names: HashSet<&str> = deps.iter().map(|d| d[1]).collect();
    for expected in ["clap", "jsonwebtoken", "tracing", "serde_json"] {
        assert!(names.contains(expected), "{expected} missing");
    }
}

#[test]
fn version_json_carries_the_same_facts() {
    let out = run(&["version", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["name"], "replicator");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["rustc"].as_str().is_some_and(|s| s.starts_with("rustc ")));
    let deps = v["dependencies"].as_array().expect("array");
    assert_eq!(deps.len(), lock_packages() - 1);
    assert!(deps.iter().all(|d| d["checksum"].as_str().is_some_and(is_sha256_hex)));
}

// ---------------------------------------------------------------------------------------------
// make-jwt

/// Generates a private key of `kind` in `dir`; returns (private, public) PEM paths.
fn key(dir: &TempDir, kind: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(&format!("{kind}.pem"));
    let public = dir.join(&format!("{kind}.pub.pem"));
    let p = private.to_str().expect("utf-8 path");
    match kind {
        "rsa-pkcs8" => rsa_key(p),
        "rsa-pkcs1" => {
            let tmp = dir.join("rsa-tmp.pem");
            let t = tmp.to_str().expect("utf-8 path");
            rsa_key(t);
            openssl(&["rsa", "-in", t, "-traditional", "-out", p]);
        }
        "ec256-sec1" => {
            openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", p])
        }
        "ec384-sec1" => openssl(&["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", p]),
        "ec521-sec1" => openssl(&["ecparam", "-name", "secp521r1", "-genkey", "-noout", "-out", p]),
        "ec256-pkcs8" | "ec384-pkcs8" => {
            let curve = if kind == "ec256-pkcs8" { "P-256" } else { "P-384" };
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
                "-out",
                p,
            ]);
        }
        "ed25519" => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
        other => panic!("unknown key kind {other}"),
    }
    openssl(&["pkey", "-in", p, "-pubout", "-out", public.to_str().expect("utf-8 path")]);
    (private, public)
}

fn make_jwt(args: &[&str]) -> (bool, String, String) {
    let out = run(&[&["make-jwt"][..], args].concat());
    let (stdout, stderr) = texts(&out);
    (out.status.success(), stdout, stderr)
}

/// Verifies with jsonwebtoken, from the public PEM alone.
fn verify_jsonwebtoken(token: &str, public: &Path, alg: Algorithm) -> Result<Value, String> {
    let pem = std::fs::read(public).expect("read public key");
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
        _ => DecodingKey::from_ec_pem(&pem),
    }
    .expect("public key loads");
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.set_issuer(&["replicator"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// DER INTEGER of a big-endian unsigned number.
fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    let mut body = if trimmed.first().is_some_and(|&b| b & 0x80 != 0) { vec![0] } else { vec![] };
    body.extend(if trimmed.is_empty() { vec![0] } else { trimmed });
    let mut out = vec![0x02, body.len() as u8];
    out.extend(body);
    out
}

/// Verifies with `openssl dgst -verify`; JWS ECDSA signatures (r‖s) are turned into DER first.
fn verify_openssl(dir: &TempDir, token: &str, public: &Path, alg: Algorithm) -> bool {
    let (input, signature) = token.rsplit_once('.').expect("three parts");
    let mut signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url signature");
    let digest = match alg {
        Algorithm::RS256 | Algorithm::ES256 => "-sha256",
        Algorithm::ES384 => "-sha384",
        other => panic!("unexpected {other:?}"),
    };
    if alg != Algorithm::RS256 {
        let (r, s) = signature.split_at(signature.len() / 2);
        let mut seq = der_integer(r);
        seq.extend(der_integer(s));
        signature = [vec![0x30, seq.len() as u8], seq].concat();
    }
    let input_path = dir.join("signed-input");
    let sig_path = dir.join("signature");
    std::fs::write(&input_path, input).expect("write input");
    std::fs::write(&sig_path, signature).expect("write signature");
    let out = Command::new("openssl")
        .args(["dgst", digest, "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&sig_path)
        .arg(&input_path)
        .output()
        .expect("run openssl");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[test]
fn make_jwt_signs_with_rsa_and_ec_keys_and_tokens_verify_with_the_public_key() {
    let dir = TempDir::new();
    let other_dir = TempDir::new();
    let (_, other_public) = key(&other_dir, "ec256-pkcs8");
    for (kind, alg, header_alg) in [
        ("rsa-pkcs8", Algorithm::RS256, "RS256"),
        ("rsa-pkcs1", Algorithm::RS256, "RS256"),
        ("ec256-sec1", Algorithm::ES256, "ES256"),
        ("ec256-pkcs8", Algorithm::ES256, "ES256"),
        ("ec384-sec1", Algorithm::ES384, "ES384"),
        ("ec384-pkcs8", Algorithm::ES384, "ES384"),
    ] {
        let (private, public) = key(&dir, kind);
        let (ok, stdout, stderr) = make_jwt(&[
            "-k",
            private.to_str().expect("utf-8"),
            "-a",
            "defaultdb.public",
            "--allow",
            "sales",
        ]);
        assert!(ok, "{kind}: {stderr}");
        let token = stdout.trim();
        assert_eq!(token.split('.').count(), 3, "{kind}: {token}");

        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD.decode(token.split('.').next().expect("header")).expect("b64"),
        )
        .expect("header JSON");
        assert_eq!(header["alg"], header_alg, "{kind}");

        let claims =
            verify_jsonwebtoken(token, &public, alg).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(claims["iss"], "replicator");
        assert!(uuid_v4(claims["jti"].as_str().expect("jti")), "{kind}: {claims}");
        assert!(claims["iat"].as_u64().is_some_and(|t| t > 1_700_000_000), "{kind}: {claims}");
        assert_eq!(
            claims["https://github.com/cockroachdb/replicator"]["schemas"],
            serde_json::json!([["defaultdb", "public"], ["sales"]])
        );
        assert!(verify_openssl(&dir, token, &public, alg), "{kind}: openssl rejected the token");

        // The verifiers can say no: a changed payload, or another key, fails.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"iss": "replicator", "schemas": "*"}))
                .expect("json"),
        );
        parts[1] = &forged;
        let tampered = parts.join(".");
        assert!(
            verify_jsonwebtoken(&tampered, &public, alg).is_err(),
            "{kind}: tampered token verified"
        );
        assert!(
            !verify_openssl(&dir, &tampered, &public, alg),
            "{kind}: openssl verified a tampered token"
        );
        if alg == Algorithm::ES256 {
            assert!(
                verify_jsonwebtoken(token, &other_public, alg).is_err(),
                "{kind}: wrong key verified"
            );
        }
    }
}

fn uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && parts[2].starts_with('4')
}

#[test]
fn make_jwt_claim_prints_the_unsigned_claim() {
    let (ok, stdout, stderr) = make_jwt(&["--claim", "-a", "db.*", "-a", r#""My.Db""#]);
    assert!(ok, "{stderr}");
    let claim: Value = serde_json::from_str(&stdout).expect("claim JSON");
    assert_eq!(claim["iss"], "replicator");
    assert!(uuid_v4(claim["jti"].as_str().expect("jti")));
    assert!(claim["iat"].is_u64());
    assert_eq!(
        claim["https://github.com/cockroachdb/replicator"],
        serde_json::json!({"schemas": [["db", "*"], ["My.Db"]]})
    );
}

#[test]
fn make_jwt_out_writes_a_file_only_its_owner_reads() {
    let dir = TempDir::new();
    let (private, public) = key(&dir, "ec256-sec1");
    let out_file = dir.join("token.jwt");
    let log_file = dir.join("log.txt");
    let (ok, stdout, stderr) = make_jwt(&[
        "-k",
        private.to_str().expect("utf-8"),
        "-a",
        "db.public",
        "-o",
        out_file.to_str().expect("utf-8"),
        "--logDestination",
        log_file.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "", "the token goes to the file only");
    let token = std::fs::read_to_string(&out_file).expect("token file");
    verify_jsonwebtoken(token.trim(), &public, Algorithm::ES256).expect("verifies");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out_file).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let log = std::fs::read_to_string(&log_file).expect("log file");
    assert!(log.contains("wrote token"), "{log}");
}

#[test]
fn make_jwt_refuses_bad_keys_and_flags_with_the_fix() {
    let dir = TempDir::new();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let secret = write("hmac.txt", "a-shared-secret-for-hs256\n");
    let jwk = write("hmac.jwk", r#"{"kty":"oct","k":"c2VjcmV0"}"#);
    let (ed, _) = key(&dir, "ed25519");
    let (p521, _) = key(&dir, "ec521-sec1");
    let (ec, ec_public) = key(&dir, "ec256-sec1");
    let encrypted = dir.join("encrypted.pem");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        ec.to_str().expect("utf-8"),
        "-passout",
        "pass:pw",
        "-out",
        encrypted.to_str().expect("utf-8"),
    ]);
    let missing = dir.join("missing.pem");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-a", "db.public"], "make-jwt needs -k/--key PEM to sign the token, or --claim"),
        (vec!["-k", &secret, "-a", "db.public"], "is not a PEM private key"),
        (vec!["-k", &secret, "-a", "db.public"], "not a shared secret"),
        (vec!["-k", &jwk, "-a", "db.public"], "holds an HMAC (shared-secret) key"),
        (
            vec!["-k", ed.to_str().expect("utf-8"), "-a", "db.public"],
            "holds an Ed25519 private key, which make-jwt does not support",
        ),
        (
            vec!["-k", p521.to_str().expect("utf-8"), "-a", "db.public"],
            "holds an EC P-521 private key",
        ),
        (
            vec!["-k", ec_public.to_str().expect("utf-8"), "-a", "db.public"],
            "holds a public key, not a private key",
        ),
        (
            vec!["-k", encrypted.to_str().expect("utf-8"), "-a", "db.public"],
            "holds an encrypted private key: decrypt it first",
        ),
        (vec!["-k", missing.to_str().expect("utf-8"), "-a", "db.public"], "cannot read key file"),
    ];
    for (args, expected) in cases {
        let (ok, stdout, stderr) = make_jwt(&args);
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: want {expected:?} in {stderr}");
        assert!(
            stderr.contains("P-256")
                || expected.contains("needs")
                || expected.contains("cannot read")
                || expected.contains("public key")
                || expected.contains("encrypted"),
            "{args:?} names the fix: {stderr}"
        );
    }
    // The I/O cause is printed as a cause.
    let (_, _, stderr) = make_jwt(&["-k", missing.to_str().expect("utf-8"), "-a", "db.public"]);
    assert!(stderr.contains("caused by: No such file or directory"), "{stderr}");

    // Usage errors exit 2.
    for (args, expected) in [
        (&["--claim", "-a", "a.b.c"][..], "more than two parts"),
        (&["--claim", "-a", "db."][..], "a name is empty"),
        (&["--claim"][..], "--allow <SCHEMA>"),
    ] {
        let out = run(&[&["make-jwt"][..], args].concat());
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// logging

#[test]
fn final_error_goes_to_stderr_and_into_the_log_file() {
    let dir = TempDir::new();
    let log = dir.join("replicator.log");
    let missing = dir.join("nope.pem");
    for format in ["text", "fluent"] {
        let out = run(&[
            "make-jwt",
            "-k",
            missing.to_str().expect("utf-8"),
            "-a",
            "db.public",
            "--logDestination",
            log.to_str().expect("utf-8"),
            "--logFormat",
            format,
        ]);
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stdout, "", "logs go to the file, not stdout");
        assert!(stderr.contains("error: cannot read key file"), "{stderr}");
    }
    let text = std::fs::read_to_string(&log).expect("log file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("ERROR") && lines[0].contains("replicator stopped"), "{text}");
    assert!(lines[0].contains("No such file or directory"), "cause chain in the log: {text}");
    let json: Value = serde_json::from_str(lines[1]).expect("fluent is JSON");
    assert_eq!(json["level"], "ERROR");
    assert!(json["error"].as_str().is_some_and(|e| e.contains("cannot read key file")), "{json}");
}

#[test]
fn an_unwritable_log_destination_is_a_clear_error() {
    let dir = TempDir::new();
    let bad = dir.join("no-such-dir").join("log.txt");
    let out = run(&["version", "--logDestination", bad.to_str().expect("utf-8")]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot open log file") && stderr.contains("--logDestination"),
        "{stderr}"
    );
    assert!(stderr.contains("caused by:"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// userscript tools

#[test]
fn script_api_prints_the_shipped_typings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (args, file) in [
        (&["script", "api"][..], "typings/replicator@v2.d.ts"),
        (&["script", "api", "--apiVersion", "v1"][..], "typings/replicator@v1.d.ts"),
        (&["userscript", "--api"][..], "typings/replicator@v1.d.ts"),
    ] {
        let out = run(args);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert_eq!(stdout, std::fs::read_to_string(root.join(file)).expect("typings"), "{args:?}");
    }
    let (guide, _) = texts(&run(&["userscript"]));
    assert!(guide.contains("replicator script api") && guide.contains("--userscript"), "{guide}");
    let out = run(&["script", "api", "--apiVersion", "v3"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn script_bench_reports_throughput_and_refuses_bad_limits() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scripts/simple_map.ts");
    let script = script.to_str().expect("utf-8");
    let out = run(&[
        "script",
        "bench",
        "--userscript",
        script,
        "--rows",
        "3000",
        "--batchSize",
        "500",
        "--workers",
        "2",
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("rows out: 3000, dropped: 0"), "{stdout}");
    let rate: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rows_per_second="))
        .and_then(|r| r.parse().ok())
        .expect("a rate");
    assert!(rate > 0.0);

    let out =
        run(&["script", "bench", "--userscript", script, "--table", "audit_logs", "--rows", "10"]);
    let (stdout, _) = texts(&out);
    assert!(stdout.contains("rows out: 0, dropped: 10"), "the script drops audit_logs: {stdout}");

    for (flags, message) in [
        (&["--userscriptMaxMemory", "1MiB"][..], "too small to load the API"),
        (&["--userscriptTimeout", "0s"][..], "--userscriptTimeout must be more than zero"),
    ] {
        let out = run(&[&["script", "bench", "--userscript", script][..], flags].concat());
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
    let out = run(&["script", "bench", "--userscript", script, "--userscriptMaxMemory", "lots"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("is not a size"), "{stderr}");
}

#[test]
fn a_broken_userscript_fails_with_its_location() {
    let dir = TempDir::new();
    let script = dir.join("broken.ts");
    std::fs::write(&script, "import * as api from \"replicator@v2\";\nconst x: number = ;\n")
        .expect("write");
    let out =
        run(&["script", "bench", "--userscript", script.to_str().expect("utf-8"), "--rows", "1"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("broken.ts:2:19: syntax error"), "{stderr}");
}

#[test]
fn output_into_a_closed_pipe_is_not_an_error() {
    // `replicator version | head -1`: the reader goes away before the output is written.
    for args in [&["version"][..], &["script", "api"], &["userscript", "--api"]] {
        let mut child = support::replicator()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}
