//! `replicator script …`, the userscript author's tools (`test` in `harness`, `check` in
//! `check`, `new`, `api`, `bench` here), and MOLT's legacy `replicator userscript` command.

mod check;
mod harness;

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use crate::script::engine::format_bytes;
use crate::script::{EngineOptions, Meta, Op, Routed, ScriptPool, SourceTag, compile_script};
use crate::types::duration::format as format_duration;
use crate::types::{Row, Value};

/// The typings `replicator script api` prints.
pub const TYPINGS_V2: &str = include_str!("../../../typings/replicator@v2.d.ts");
/// The legacy typings (`--apiVersion v1`, `replicator userscript --api`).
pub const TYPINGS_V1: &str = include_str!("../../../typings/replicator@v1.d.ts");
/// The `tsconfig.json` that goes next to a script.
pub const TSCONFIG: &str = include_str!("../../../typings/tsconfig.json");

/// Which typings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiVersion {
    /// `replicator@v2`, the current API.
    V2,
    /// `replicator@v1` (also `cdc-sink@v1`), the legacy API.
    V1,
}

/// `replicator script` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScriptCommand {
    /// Print the TypeScript typings of the userscript API (save as replicator@v2.d.ts)
    Api(ApiArgs),
    /// Run a userscript over rows from a file and print (or check) what would be written
    Test(harness::TestArgs),
    /// Write a userscript from a template, with its typings and test fixtures
    New(NewArgs),
    /// Load a userscript and show what it configures (and, with --targetConn, whether it exists)
    Check(check::CheckArgs),
    /// Push synthetic rows through a userscript and print its throughput
    Bench(BenchArgs),
}

/// Flags of `replicator script new`.
#[derive(Debug, Clone, Args)]
pub struct NewArgs {
    /// List the templates, one per line: name and description
    #[arg(long = "list", conflicts_with = "template")]
    pub list: bool,

    /// The template to write (see --list)
    #[arg(long = "template", value_name = "NAME", required_unless_present = "list")]
    pub template: Option<String>,

    /// Folder to write into (created if missing)
    #[arg(long = "dir", value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// Target schema the script and its fixtures name, replacing defaultdb.public
    #[arg(long = "targetSchema", value_name = "SCHEMA")]
    pub target_schema: Option<String>,

    /// Overwrite files that already exist
    #[arg(long = "force")]
    pub force: bool,
}

/// Flags of `replicator script api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Which API's typings to print: v2 (current) or v1 (legacy)
    #[arg(long = "apiVersion", value_name = "VERSION", value_enum, default_value_t = ApiVersion::V2, hide_possible_values = true)]
    pub api_version: ApiVersion,
}

/// Flags of `replicator script bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// How many synthetic rows to push through the script
    #[arg(long = "rows", value_name = "N", default_value_t = 100_000)]
    pub rows: usize,

    /// Rows per call into the script (the pipeline's --flushSize)
    #[arg(long = "batchSize", value_name = "N", default_value_t = 1_000)]
    pub batch_size: usize,

    /// Engines running in parallel, one thread each
    #[arg(long = "workers", value_name = "N", default_value_t = 1)]
    pub workers: usize,

    /// Target schema whose schema-level handlers run [default: the first the script configures]
    #[arg(long = "targetSchema", value_name = "SCHEMA")]
    pub target_schema: Option<String>,

    /// Source table name the rows claim to come from (meta.table)
    #[arg(long = "table", value_name = "NAME", default_value = "orders")]
    pub table: String,

    /// Userscript limits and path (--userscript is required here)
    #[command(flatten)]
    pub script: super::groups::ScriptArgs,
}

/// `replicator userscript` (MOLT's legacy command).
#[derive(Debug, Clone, Args)]
pub struct UserscriptArgs {
    /// Print only the replicator@v1 typings
    #[arg(long = "api")]
    pub api: bool,
}

/// Runs `replicator script …`.
pub fn run(command: &ScriptCommand) -> anyhow::Result<()> {
    match command {
        ScriptCommand::Api(args) => print(match args.api_version {
            ApiVersion::V2 => TYPINGS_V2,
            ApiVersion::V1 => TYPINGS_V1,
        }),
        ScriptCommand::Test(args) => harness::run(args),
        ScriptCommand::New(args) => scaffold(args),
        ScriptCommand::Check(args) => check::run(args),
        ScriptCommand::Bench(args) => bench(args),
    }
}

/// Runs `replicator userscript [--api]`.
pub fn run_legacy(args: &UserscriptArgs) -> anyhow::Result<()> {
    if args.api {
        return print(TYPINGS_V1);
    }
    print(
        "Userscripts are TypeScript files that filter, rename and transform rows as they replicate.\n\
         Pass one to a replication command with --userscript FILE.ts.\n\
         \n\
         Tools:\n\
         \x20 replicator script new --list                 list the templates; --template NAME writes one\n\
         \x20 replicator script test --userscript F.ts --input rows.ndjson [--expect out.ndjson]\n\
         \x20                                              run a script over rows and show what it writes\n\
         \x20 replicator script check --userscript F.ts    show what a script configures\n\
         \x20 replicator script api [--apiVersion v1|v2]   print the API typings (save next to your script)\n\
         \x20 replicator script bench --userscript FILE    measure a script's throughput\n\
         \x20 replicator userscript --api                  print the legacy replicator@v1 typings\n",
    )
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `replicator script new`.
fn scaffold(args: &NewArgs) -> anyhow::Result<()> {
    use crate::script::templates::{TEMPLATE_SCHEMA, TEMPLATES, Template};
    if args.list {
        let width = TEMPLATES.iter().map(|t| t.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for t in TEMPLATES {
            out.push_str(&format!("{:width$}  {}\n", t.name, t.description()));
        }
        return print(&out);
    }
    let name = args.template.as_deref().unwrap_or_default();
    let template = Template::find(name).with_context(|| {
        let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        format!(
            "no template {name:?}; templates: {} (replicator script new --list)",
            names.join(", ")
        )
    })?;
    let schema = args.target_schema.as_deref().unwrap_or(TEMPLATE_SCHEMA);
    let schema_ok = schema
        .split('.')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$'));
    anyhow::ensure!(
        schema_ok,
        "--targetSchema {schema:?}: write db.schema (or db), e.g. defaultdb.public"
    );
    let fill = |text: &str| text.replace(TEMPLATE_SCHEMA, schema);
    let typings = if template.api_module() == "replicator@v1" {
        ("replicator@v1.d.ts", TYPINGS_V1)
    } else {
        ("replicator@v2.d.ts", TYPINGS_V2)
    };
    let files: Vec<(String, String)> = vec![
        (format!("{name}.ts"), fill(template.script)),
        (typings.0.to_owned(), typings.1.to_owned()),
        ("tsconfig.json".to_owned(), TSCONFIG.to_owned()),
        (format!("{name}.input.ndjson"), fill(template.input)),
        (format!("{name}.expected.ndjson"), fill(template.expected)),
    ];
    let existing: Vec<String> = files
        .iter()
        .filter(|(file, _)| args.dir.join(file).exists())
        .map(|(file, _)| args.dir.join(file).display().to_string())
        .collect();
    anyhow::ensure!(
        args.force || existing.is_empty(),
        "{} already exist{}: pass --force to overwrite, or --dir to write elsewhere",
        existing.join(", "),
        if existing.len() == 1 { "s" } else { "" }
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    for (file, text) in &files {
        let path = args.dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let dir = args.dir.display();
    eprintln!(
        "wrote {dir}/{name}.ts with its typings, tsconfig.json and fixtures; try:\n  \
         replicator script test --userscript {dir}/{name}.ts --input {dir}/{name}.input.ndjson --expect {dir}/{name}.expected.ndjson"
    );
    Ok(())
}

/// One synthetic row shaped like a typical table: bigint (beyond 2^53), text, numeric,
/// timestamp, bool, JSON.
pub fn synthetic_row(i: usize) -> Row {
    let mut row = Row::default();
    row.insert("id".into(), Value::Number((9_007_199_254_740_993u64 + i as u64).to_string()));
    row.insert("name".into(), Value::String(format!("customer-{i}")));
    row.insert("amount".into(), Value::Number(format!("{}.{:02}", 1000 + i % 9000, i % 100)));
    row.insert(
        "created_at".into(),
        Value::String(format!(
            "2024-01-{:02}T{:02}:{:02}:{:02}Z",
            1 + i % 28,
            i % 24,
            i % 60,
            (i / 60) % 60
        )),
    );
    row.insert("active".into(), Value::Bool(i.is_multiple_of(2)));
    row.insert(
        "attrs".into(),
        Value::Json(serde_json::json!({"tier": if i.is_multiple_of(3) { "gold" } else { "silver" }, "score": i % 100, "tags": ["a", "b"]})),
    );
    row
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let limits = args.script.limits()?;
    let path = args.script.userscript.as_ref().context("script bench needs --userscript FILE")?;
    anyhow::ensure!(
        args.rows > 0 && args.batch_size > 0 && args.workers > 0,
        "--rows, --batchSize and --workers must be at least 1"
    );
    let script = Arc::new(compile_script(path)?);
    let pool = Arc::new(ScriptPool::new(
        script.clone(),
        EngineOptions { limits, ..EngineOptions::default() },
        args.workers,
    )?);
    let schema = match &args.target_schema {
        Some(s) => s.clone(),
        None => pool.configured().schemas.first().map(|(name, _)| name.clone()).context(
            "the script configures no target schema (configureTargetSchema): nothing to benchmark",
        )?,
    };
    let meta = Meta {
        schema: schema.clone(),
        table: args.table.clone(),
        source: Some(SourceTag::PgLogical),
        time: Some((1_704_067_200_000_000_000, 0)),
        before: None,
    };
    let batches: Vec<Vec<(Row, Meta)>> = (0..args.rows)
        .collect::<Vec<_>>()
        .chunks(args.batch_size)
        .map(|chunk| chunk.iter().map(|&i| (synthetic_row(i), meta.clone())).collect())
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let outcomes = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for batch in batches {
            let (pool, schema) = (pool.clone(), schema.clone());
            tasks.spawn(async move { pool.schema_rows(schema, Op::Upsert, batch).await });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            outcomes.push(done?);
        }
        anyhow::Ok(outcomes)
    })?;
    let elapsed = started.elapsed();
    let (mut out_rows, mut dropped) = (0usize, 0usize);
    for outcome in outcomes {
        for routed in outcome? {
            match routed {
                Routed::Dropped => dropped += 1,
                Routed::Rows(rows) => out_rows += rows.len(),
            }
        }
    }
    let rate = args.rows as f64 / elapsed.as_secs_f64();
    println!(
        "script bench: {} rows through {} (schema {schema:?}, table {:?}) in batches of {}, {} worker(s), \
         --userscriptTimeout {}, --userscriptMaxMemory {}",
        args.rows,
        script.entry,
        args.table,
        args.batch_size,
        args.workers,
        format_duration(limits.timeout),
        format_bytes(limits.max_memory),
    );
    println!("rows out: {out_rows}, dropped: {dropped}, elapsed: {:.3}s", elapsed.as_secs_f64());
    println!("rows_per_second={rate:.0}");
    Ok(())
}
