//! The shipped typings type-check every userscript the tests use (`tsc --noEmit --strict`),
//! and reject a script that misuses the API. `tests/run.sh` installs TypeScript into
//! `target/tsc`; `REPLICATOR_TSC` may point at another `tsc`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{TempDir, tsc};

const SKIP_MARKER: &str = "// not type-checked:";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.ts` file under `dir`, except those marked as broken on purpose.
fn scripts(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            scripts(&path, out);
        } else if path.extension().is_some_and(|e| e == "ts")
            && !path.to_string_lossy().ends_with(".d.ts")
            && !std::fs::read_to_string(&path).expect("read").starts_with(SKIP_MARKER)
        {
            out.push(path);
        }
    }
}

fn type_check(files: &[PathBuf]) -> (bool, String) {
    let dir = TempDir::new();
    let config = serde_json::json!({
        "extends": root().join("typings/tsconfig.json"),
        "compilerOptions": {"strict": true, "noEmit": true},
        "files": files,
    });
    let config_path = dir.join("tsconfig.json");
    std::fs::write(&config_path, config.to_string()).expect("write tsconfig");
    let out = Command::new(tsc()).arg("-p").arg(&config_path).output().expect("run tsc");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn every_test_script_type_checks_strictly() {
    let mut files = Vec::new();
    for dir in ["tests/userscripts", "examples", "userscripts"] {
        scripts(&root().join(dir), &mut files);
    }
    assert!(files.len() >= 10, "scripts found: {files:?}");
    let (ok, output) = type_check(&files);
    assert!(ok, "tsc --noEmit --strict failed:\n{output}");
}

#[test]
fn misuse_of_the_api_fails_type_checking() {
    let dir = TempDir::new();
    let bad = dir.join("bad.ts");
    std::fs::write(
        &bad,
        "import * as api from \"replicator@v2\";\n\
         api.configureTargetTables([\"t\"], { onRowUpsert: (r) => r, onRowDelete: (k) => 42 });\n\
         api.configureTargetSchema(\"db.public\", { onRowUpsert: (r) => r });\n\
         setTimeout(() => {}, 1);\n",
    )
    .expect("write");
    let (ok, output) = type_check(&[bad]);
    assert!(!ok, "tsc accepted a broken script:\n{output}");
    for code in ["TS2322", "TS2345", "TS2304"] {
        assert!(output.contains(code), "expected {code} in:\n{output}");
    }
}
