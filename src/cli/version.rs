//! `replicator version`: what this binary is and what it was built from.

use std::io::{self, Write};

use clap::Args;
use serde::Serialize;

/// Build facts embedded by `build.rs`.
pub mod build {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

/// Flags of `replicator version`.
#[derive(Debug, Clone, Args)]
pub struct VersionArgs {
    /// Print one JSON object instead of tab-separated lines
    #[arg(long)]
    pub json: bool,
}

/// A dependency from Cargo.lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// Crate name.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// SHA-256 of the crate archive as recorded in Cargo.lock.
    pub checksum: &'static str,
}

/// Everything `version` reports.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// `replicator`.
    pub name: &'static str,
    /// The crate version.
    pub version: &'static str,
    /// The git commit built from, or `unknown`.
    pub commit: &'static str,
    /// `rustc -V` of the compiler.
    pub rustc: &'static str,
    /// Target triple.
    pub target: &'static str,
    /// Every package in Cargo.lock but this one.
    pub dependencies: Vec<Dependency>,
}

impl VersionInfo {
    /// The facts of this binary.
    pub fn current() -> Self {
        Self {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            commit: build::GIT_COMMIT,
            rustc: build::RUSTC,
            target: build::TARGET,
            dependencies: build::DEPENDENCIES
                .iter()
                .map(|&(name, version, checksum)| Dependency { name, version, checksum })
                .collect(),
        }
    }

    /// Tab-separated lines: `replicator <version>`, `commit`, `rustc`, `target`, then one
    /// `dep <name> <version> <sha256>` line per dependency.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "{}\t{}", self.name, self.version)?;
        writeln!(out, "commit\t{}", self.commit)?;
        writeln!(out, "rustc\t{}", self.rustc)?;
        writeln!(out, "target\t{}", self.target)?;
        for dep in &self.dependencies {
            writeln!(out, "dep\t{}\t{}\t{}", dep.name, dep.version, dep.checksum)?;
        }
        Ok(())
    }
}

/// Runs `replicator version`.
pub fn run(args: &VersionArgs) -> anyhow::Result<()> {
    let info = VersionInfo::current();
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
    } else {
        info.write_text(&mut out)?;
    }
    out.flush()?;
    Ok(())
}
