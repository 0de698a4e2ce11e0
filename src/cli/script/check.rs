//! `replicator script check`: load a userscript and say what it configures; with
//! `--targetConn`, also whether those schemas and tables exist on the target.
//!
//! Exit 0 when the script loads (and everything it names exists); 2 otherwise.

use std::fmt::Write as _;
use std::sync::Arc;

use clap::Args;

use crate::cli::groups::ScriptArgs;
use crate::cli::{CodedError, coded};
use crate::conn::ConnString;
use crate::conn::Protocol;
use crate::script::{Api, Configured, Engine, EngineOptions, compile_script};
use crate::target::postgres::introspect;

/// Flags of `replicator script check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Target database: also check that the configured schemas and tables exist there
    #[arg(long = "targetConn", value_name = "URL", value_parser = crate::cli::values::ConnStringParser)]
    pub target_conn: Option<ConnString>,

    /// Schema where bare table names of configureTargetTables live [default: the script's only schema]
    #[arg(long = "targetSchema", value_name = "SCHEMA")]
    pub target_schema: Option<String>,

    /// The userscript and its limits (--userscript is required here)
    #[command(flatten)]
    pub script: ScriptArgs,
}

/// Runs `script check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let path = args
        .script
        .userscript
        .clone()
        .ok_or_else(|| coded(2, "script check needs --userscript FILE.ts"))?;
    let limits = args.script.limits().map_err(|e| coded(2, e.to_string()))?;
    let script = Arc::new(compile_script(&path).map_err(|e| coded(2, e.to_string()))?);
    let engine = Engine::new(script.clone(), EngineOptions { limits, ..EngineOptions::default() })
        .map_err(|e| coded(2, e.to_string()))?;
    let configured = engine.configured();
    print!("{}", describe(&script.entry, configured));
    let Some(conn) = &args.target_conn else {
        return Ok(());
    };
    let missing = check_target(conn, configured, args.target_schema.as_deref())?;
    if missing.is_empty() {
        println!("target {conn}: every schema and table the script names exists");
        return Ok(());
    }
    for m in &missing {
        println!("missing on the target: {m}");
    }
    Err(coded(
        2,
        format!("{} of the names the script configures do not exist on the target", missing.len()),
    )
    .into())
}

/// What the script configures, one line per schema or table with its handlers.
pub fn describe(entry: &str, configured: &Configured) -> String {
    let mut out = format!("userscript {entry}\n");
    for (schema, api) in &configured.schemas {
        let handlers = match api {
            Api::V2 => "onRowUpsert, onRowDelete",
            Api::V1 => "dispatch, deletesTo",
        };
        let _ = writeln!(out, "  schema {schema} ({api}): {handlers}");
    }
    for table in &configured.tables {
        let names: [(&str, &str, bool); 3] = match table.api {
            Api::V2 => [
                ("onRowUpsert", "", table.upsert),
                ("onRowDelete", "", table.delete),
                ("onWrite", "", table.write),
            ],
            Api::V1 => [
                ("map", "", table.upsert),
                ("deleteKey", "", table.delete),
                ("apply", "", table.write),
            ],
        };
        let handlers: Vec<&str> =
            names.iter().filter(|(_, _, set)| *set).map(|(n, _, _)| *n).collect();
        let handlers = if handlers.is_empty() {
            "no handlers (pass-through)".to_owned()
        } else {
            handlers.join(", ")
        };
        let _ = writeln!(out, "  table {} ({}): {handlers}", table.name, table.api);
    }
    for (flag, value) in &configured.options {
        let _ = writeln!(out, "  setOptions: --{flag}={value}");
    }
    out
}

/// Names the script configures that the target lacks.
fn check_target(
    conn: &ConnString,
    configured: &Configured,
    target_schema: Option<&str>,
) -> Result<Vec<String>, CodedError> {
    if conn.protocol() != Some(Protocol::Postgres) {
        return Err(coded(
            2,
            format!(
                "--targetConn {conn}: script check reads PostgreSQL/CockroachDB targets (postgres://) so far"
            ),
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| coded(2, e.to_string()))?;
    runtime.block_on(async {
        let client = crate::conn::postgres::connect(conn).await.map_err(|e| {
            coded(2, format!("cannot reach --targetConn: {}", crate::error::with_causes(&e)))
        })?;
        let database =
            introspect::current_database(&client).await.map_err(|e| coded(2, e.to_string()))?;
        let schema_exists = |schema: String| {
            let client = &client;
            async move {
                introspect::schema_exists(client, &schema)
                    .await
                    .map_err(|e| coded(2, e.to_string()))
            }
        };
        let mut missing = Vec::new();
        // `db.schema`: the database must be the connection's (PostgreSQL cannot write across databases).
        let split = |name: &str| -> (Option<String>, String) {
            match name.rsplit_once('.') {
                Some((db, schema)) => (Some(db.to_owned()), schema.to_owned()),
                None => (None, name.to_owned()),
            }
        };
        for (name, _) in &configured.schemas {
            let (db, schema) = split(name);
            if db.as_deref().is_some_and(|d| d != database) {
                missing
                    .push(format!("schema {name}: --targetConn connects to database {database:?}"));
            } else if !schema_exists(schema).await? {
                missing.push(format!("schema {name}"));
            }
        }
        let default_schema = target_schema
            .map(str::to_owned)
            .or_else(|| (configured.schemas.len() == 1).then(|| configured.schemas[0].0.clone()));
        for table in &configured.tables {
            let parts: Vec<&str> = table.name.split('.').collect();
            let (schema, name) = match parts.as_slice() {
                [t] => match &default_schema {
                    Some(s) => (split(s).1, (*t).to_owned()),
                    None => {
                        missing.push(format!(
                            "table {}: which schema? pass --targetSchema",
                            table.name
                        ));
                        continue;
                    }
                },
                [.., s, t] => ((*s).to_owned(), (*t).to_owned()),
                [] => continue,
            };
            let exists = introspect::table_exists(&client, &schema, &name)
                .await
                .map_err(|e| coded(2, e.to_string()))?;
            if !exists {
                missing.push(format!("table {} ({schema}.{name})", table.name));
            }
        }
        Ok(missing)
    })
}
