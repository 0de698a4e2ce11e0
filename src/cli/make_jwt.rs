//! `replicator make-jwt`: sign (or just print) a claim that lets a changefeed write into the
//! given schemas.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;

use crate::auth::{AllowedSchema, Claims, SigningKey};

/// Flags of `replicator make-jwt`.
#[derive(Debug, Clone, Args)]
pub struct MakeJwtArgs {
    /// PEM private key to sign with: RSA (RS256), EC P-256 (ES256) or EC P-384 (ES384)
    #[arg(short = 'k', long = "key", value_name = "PEM", conflicts_with = "claim")]
    pub key: Option<PathBuf>,

    /// Schema the token may write: db.schema, or db for MySQL/Oracle targets; * for any part; repeatable
    #[arg(short = 'a', long = "allow", value_name = "SCHEMA", required = true)]
    pub allow: Vec<AllowedSchema>,

    /// Write the token (or claim) to this file, readable by its owner only [default: stdout]
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Print the unsigned claim as JSON instead of a signed token (sign it elsewhere)
    #[arg(long)]
    pub claim: bool,
}

/// Runs `replicator make-jwt`.
pub fn run(args: &MakeJwtArgs) -> anyhow::Result<()> {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let claims = Claims::new(&args.allow, iat);
    let output = if args.claim {
        serde_json::to_string_pretty(&claims)?
    } else {
        let Some(path) = &args.key else {
            anyhow::bail!(
                "make-jwt needs -k/--key PEM to sign the token, or --claim to print the \
                 unsigned claim (e.g. replicator make-jwt -k key.pem -a defaultdb.public)"
            );
        };
        let pem =
            fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?;
        let key = SigningKey::from_pem(&pem, &path.display().to_string())?;
        key.sign(&claims)?
    };
    match &args.out {
        None => {
            let mut out = io::stdout().lock();
            writeln!(out, "{output}")?;
            out.flush()?;
        }
        Some(path) => {
            write_private(path, &output)
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(out = %path.display(), jti = %claims.jti, "wrote {}", if args.claim { "claim" } else { "token" });
        }
    }
    Ok(())
}

/// Writes `text` to a new or truncated file that only its owner can read: a token is a
/// credential.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{text}")?;
    file.sync_all()
}
