//! Embeds build facts for `replicator version`: the git commit, the compiler, the target, and
//! every package in Cargo.lock with its version and checksum.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

fn main() {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let root = Path::new(&manifest_dir);

    let lock_path = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = fs::read_to_string(&lock_path).unwrap_or_default();
    let package = env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME");
    let dependencies = lock_packages(&lock)
        .into_iter()
        .filter(|(name, _, _)| *name != package)
        .collect::<Vec<_>>();

    let commit = git_commit(root);
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc_version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let target = env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());

    let mut code = String::new();
    writeln!(code, "/// The git commit this binary was built from.").ok();
    writeln!(code, "pub const GIT_COMMIT: &str = {commit:?};").ok();
    writeln!(code, "/// `rustc -V` of the compiler that built this binary.").ok();
    writeln!(code, "pub const RUSTC: &str = {rustc_version:?};").ok();
    writeln!(code, "/// The target triple this binary was built for.").ok();
    writeln!(code, "pub const TARGET: &str = {target:?};").ok();
    writeln!(code, "/// Every package in Cargo.lock but this one: (name, version, checksum).").ok();
    writeln!(code, "pub const DEPENDENCIES: &[(&str, &str, &str)] = &[").ok();
    for (name, version, checksum) in &dependencies {
        writeln!(code, "    ({name:?}, {version:?}, {checksum:?}),").ok();
    }
    writeln!(code, "];").ok();
    fs::write(Path::new(&out_dir).join("build_info.rs"), code).expect("write build_info.rs");
}

/// `(name, version, checksum)` of each `[[package]]`; checksum is empty for path packages.
fn lock_packages(lock: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for section in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            section.lines().find_map(|line| {
                let (k, v) = line.split_once(" = ")?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(name), Some(version)) = (field("name"), field("version")) {
            out.push((name, version, field("checksum").unwrap_or_default()));
        }
    }
    out
}

/// The commit of HEAD, or "unknown" outside a git checkout. Watches HEAD and the branch ref
/// so a new commit rebuilds the constant.
fn git_commit(root: &Path) -> String {
    let git_dir = root.join(".git");
    if git_dir.is_dir() {
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        if let Ok(head) = fs::read_to_string(git_dir.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed={}", git_dir.join(reference).display());
            println!("cargo:rerun-if-changed={}", git_dir.join("packed-refs").display());
        }
    }
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
