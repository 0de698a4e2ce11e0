//! The native ops the runtime glue calls (`runtime/core.js` hides them from user code):
//! logging, `setOptions`, `randomUUID`, and the target transaction `onWrite` reaches through
//! `getTX()` and `write()` — only while an `onWrite` runs, with the call's deadline paused
//! while the database works.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rquickjs::{Array, Ctx, Exception, Function, Object, Value as JsValue};

use super::{Deadline, HostSlot, NATIVE_GLOBAL};
use crate::script::convert::{FromJsConverter, columns_to_js, value_to_js};
use crate::script::exact::keep_ops_text;
use crate::script::host::WriteHost;
use crate::types::Value;

pub(super) fn install_natives<'js>(
    ctx: &Ctx<'js>,
    script: &str,
    host: &HostSlot,
    deadline: &Arc<Deadline>,
    set_options: &Rc<RefCell<Vec<(String, String)>>>,
    known_flags: &Rc<Vec<String>>,
    uuid_seed: Option<u64>,
) -> rquickjs::Result<()> {
    let native = Object::new(ctx.clone())?;
    let min_level = if tracing::enabled!(target: "replicator::userscript", tracing::Level::TRACE) {
        0
    } else if tracing::enabled!(target: "replicator::userscript", tracing::Level::DEBUG) {
        1
    } else if tracing::enabled!(target: "replicator::userscript", tracing::Level::INFO) {
        2
    } else if tracing::enabled!(target: "replicator::userscript", tracing::Level::WARN) {
        3
    } else {
        4
    };
    native.set("minLevel", min_level)?;

    let script_name = script.to_owned();
    native.set(
        "log",
        Function::new(ctx.clone(), move |level: i32, text: String| {
            let script = script_name.as_str();
            match level {
                0 => tracing::trace!(target: "replicator::userscript", script, "{text}"),
                1 => tracing::debug!(target: "replicator::userscript", script, "{text}"),
                2 => tracing::info!(target: "replicator::userscript", script, "{text}"),
                3 => tracing::warn!(target: "replicator::userscript", script, "{text}"),
                _ => tracing::error!(target: "replicator::userscript", script, "{text}"),
            }
        })?,
    )?;

    let (options, known) = (set_options.clone(), known_flags.clone());
    native.set(
        "setOption",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, key: String, value: String| -> rquickjs::Result<()> {
                let flag = key.trim_start_matches('-');
                if !known.iter().any(|k| k == flag) {
                    let mut names: Vec<&str> = known.iter().map(String::as_str).collect();
                    names.sort_unstable();
                    return Err(Exception::throw_message(
                        &ctx,
                        &format!(
                            "setOptions: unknown flag {key:?}; flags this command takes: {}",
                            names.join(", ")
                        ),
                    ));
                }
                options.borrow_mut().push((flag.to_owned(), value));
                Ok(())
            },
        )?,
    )?;

    let seeded = uuid_seed.map(|seed| Rc::new(std::cell::Cell::new(seed)));
    native.set(
        "randomUUID",
        Function::new(ctx.clone(), move || match &seeded {
            None => uuid::Uuid::new_v4().to_string(),
            Some(state) => {
                let mut bytes = [0u8; 16];
                for half in bytes.chunks_mut(8) {
                    half.copy_from_slice(&splitmix64(state).to_le_bytes());
                }
                uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
            }
        })?,
    )?;

    // Host ops: only inside onWrite; the deadline pauses while the database works.
    let host_op = |ctx: &Ctx<'js>,
                   host: &HostSlot,
                   deadline: &Deadline,
                   f: &mut dyn FnMut(&mut dyn WriteHost) -> Result<(), String>|
     -> rquickjs::Result<()> {
        let mut slot = host.host.borrow_mut();
        let Some(h) = slot.as_mut() else {
            return Err(Exception::throw_message(
                ctx,
                "the target transaction is only available inside onWrite",
            ));
        };
        let left = deadline.pause();
        let result = f(h.as_mut());
        deadline.resume(left);
        result.map_err(|message| Exception::throw_message(ctx, &message))
    };

    let (h, d) = (host.clone(), deadline.clone());
    native.set(
        "query",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, sql: String, params: Array<'js>| -> rquickjs::Result<Array<'js>> {
                let params = js_params(&ctx, &params)?;
                let mut rows = Vec::new();
                host_op(&ctx, &h, &d, &mut |host| {
                    rows = host.query(&sql, &params).map_err(|e| e.to_string())?;
                    Ok(())
                })?;
                let out = Array::new(ctx.clone())?;
                for (i, row) in rows.iter().enumerate() {
                    let cells = Array::new(ctx.clone())?;
                    for (j, cell) in row.iter().enumerate() {
                        cells.set(j, value_to_js(&ctx, cell)?)?;
                    }
                    out.set(i, cells)?;
                }
                Ok(out)
            },
        )?,
    )?;

    let (h, d) = (host.clone(), deadline.clone());
    native.set(
        "exec",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, sql: String, params: Array<'js>| -> rquickjs::Result<()> {
                let params = js_params(&ctx, &params)?;
                host_op(&ctx, &h, &d, &mut |host| {
                    host.exec(&sql, &params).map_err(|e| e.to_string())
                })
            },
        )?,
    )?;

    let (h, d) = (host.clone(), deadline.clone());
    native.set(
        "columns",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| -> rquickjs::Result<Array<'js>> {
            let mut columns = Vec::new();
            host_op(&ctx, &h, &d, &mut |host| {
                columns = host.columns().map_err(|e| e.to_string())?;
                Ok(())
            })?;
            columns_to_js(&ctx, &columns)
        })?,
    )?;

    let (h, d) = (host.clone(), deadline.clone());
    native.set(
        "schema",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| -> rquickjs::Result<String> {
            let mut out = String::new();
            host_op(&ctx, &h, &d, &mut |host| {
                out = host.schema();
                Ok(())
            })?;
            Ok(out)
        })?,
    )?;

    let (h, d) = (host.clone(), deadline.clone());
    native.set(
        "table",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| -> rquickjs::Result<String> {
            let mut out = String::new();
            host_op(&ctx, &h, &d, &mut |host| {
                out = host.table();
                Ok(())
            })?;
            Ok(out)
        })?,
    )?;

    let (h, d) = (host.clone(), deadline.clone());
    native.set(
        "write",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, ops: JsValue<'js>| -> rquickjs::Result<()> {
                let convert = FromJsConverter::new(&ctx)?;
                let mut ops = convert.ops(ops).map_err(|m| Exception::throw_type(&ctx, &m))?;
                keep_ops_text(&mut ops, &h.originals.borrow());
                let mut ops = Some(ops);
                host_op(&ctx, &h, &d, &mut |host| {
                    host.write(ops.take().unwrap_or_default()).map_err(|e| e.to_string())
                })
            },
        )?,
    )?;

    ctx.globals().set(NATIVE_GLOBAL, native)
}

/// The next value of a SplitMix64 sequence (small, fast, good enough for repeatable ids).
fn splitmix64(state: &std::cell::Cell<u64>) -> u64 {
    let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(next);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Query parameters: JavaScript values as row values.
fn js_params<'js>(ctx: &Ctx<'js>, params: &Array<'js>) -> rquickjs::Result<Vec<Value>> {
    let convert = FromJsConverter::new(ctx)?;
    let mut out = Vec::with_capacity(params.len());
    for (i, item) in params.iter::<JsValue>().enumerate() {
        let value = convert
            .value(item?, &|| format!("query parameter ${}", i + 1))
            .map_err(|m| Exception::throw_type(ctx, &m))?;
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::splitmix64;
    use crate::script::{Engine, EngineOptions, Meta, Op, Routed, ScriptError};
    use crate::types::{Row, Value};

    /// An engine running `body` (a script that starts with its `import`) from a file of its own.
    fn engine(body: &str, options: EngineOptions) -> Result<Engine, ScriptError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir: PathBuf = std::env::temp_dir().join(format!("natives_{}_{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("script.ts");
        std::fs::write(&path, body).expect("script");
        let engine = Engine::from_file(&path, options);
        let _ = std::fs::remove_dir_all(&dir);
        engine
    }

    fn upsert(engine: &mut Engine) -> Result<Vec<Routed>, ScriptError> {
        let row: Row = [("id".into(), Value::Number("1".into()))].into_iter().collect();
        let meta = Meta { schema: "db.public".into(), table: "t".into(), ..Meta::default() };
        engine.schema_rows("db.public", Op::Upsert, &[(row, meta)])
    }

    const V1: &str = "import * as api from \"replicator@v1\";\n";
    const V2: &str = "import * as api from \"replicator@v2\";\n";

    #[test]
    fn random_uuids_repeat_under_a_seed() {
        let body = format!(
            "{V1}api.configureSource(\"db.public\", {{ dispatch: (doc, meta) => ({{ [meta.table]: [{{ ...doc, u: api.randomUUID() }}] }}), deletesTo: \"t\" }});"
        );
        let uuid = |seed| {
            let options = EngineOptions { uuid_seed: seed, ..EngineOptions::default() };
            let mut e = engine(&body, options).expect("load");
            match upsert(&mut e).expect("call").remove(0) {
                Routed::Rows(rows) => rows[0].1["u"].clone(),
                Routed::Dropped => panic!("dropped"),
            }
        };
        assert_eq!(uuid(Some(7)), uuid(Some(7)), "the same seed gives the same ids");
        assert_ne!(uuid(None), uuid(None), "no seed: random");
        let Value::String(text) = uuid(None) else { panic!("a string") };
        assert_eq!(uuid::Uuid::parse_str(&text).map(|u| u.get_version_num()), Ok(4));
        let state = std::cell::Cell::new(1);
        assert_ne!(splitmix64(&state), splitmix64(&state));
    }

    #[test]
    fn set_options_knows_only_the_command_s_flags() {
        let body = format!(
            "{V1}api.setOptions({{ flushSize: \"5\" }}); api.configureSource(\"db.public\", {{ target: \"t\" }});"
        );
        let known =
            EngineOptions { known_flags: vec!["flushSize".into()], ..EngineOptions::default() };
        let e = engine(&body, known).expect("a known flag");
        assert_eq!(e.configured().options, [("flushSize".to_owned(), "5".to_owned())]);
        let unknown = engine(&body, EngineOptions::default()).expect_err("an unknown flag");
        assert!(
            unknown.to_string().contains("setOptions: unknown flag \"flushSize\""),
            "{unknown}"
        );
    }

    #[test]
    fn the_target_transaction_exists_only_inside_on_write() {
        let body = format!(
            "{V2}api.configureTargetSchema(\"db.public\", {{ onRowUpsert: (row) => {{ api.getTX(); return row; }}, onRowDelete: (row) => row }});"
        );
        let mut e = engine(&body, EngineOptions::default()).expect("load");
        let err = upsert(&mut e).expect_err("no transaction here").to_string();
        assert!(err.contains("getTX() can only be called inside onWrite"), "{err}");
        // The engine stays usable after the failure.
        assert!(upsert(&mut e).is_err());
    }
}
