//! The one boundary around the JavaScript engine (QuickJS through `rquickjs`).
//!
//! An [`Engine`] owns one QuickJS runtime and context and is used from one thread. Loading:
//! the native ops are handed to `runtime/core.js` (which hides them), `console` is defined,
//! every builtin is frozen, then the user's modules are evaluated; their `configure*` calls
//! fill the registry, which [`Engine::configured`] reports. After that each batch is one call
//! into JavaScript; the glue loops over the rows.
//!
//! Limits: the heap is capped at `max_memory`; each call gets `timeout` of JavaScript time,
//! enforced by QuickJS's interrupt handler (an endless loop is stopped and cannot catch it);
//! time spent in [`WriteHost`] calls does not count. A failed call leaves the engine usable.

mod error;
mod loader;
mod natives;

pub use error::{ScriptError, format_bytes};
use error::{call_error, load_error};
use loader::{ScriptLoader, ScriptResolver};
use natives::install_natives;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::{
    Array, Context, Ctx, Function, Module, Object, Persistent, Promise, Runtime, Value as JsValue,
};

use super::compile::{CompiledScript, compile_script};
use super::convert::{BatchEncoder, FromJsConverter, Inputs, Source, ops_to_js, strings_to_js};
use super::exact::{json_originals, keep_row_text};
use super::host::{RowOp, WriteHost};
use super::{Api, Limits, Meta, Op, Routed};
use crate::types::Row;

const CORE_JS: &str = include_str!("../../../runtime/core.js");
pub(super) const V2_JS: &str = include_str!("../../../runtime/v2.js");
pub(super) const V1_JS: &str = include_str!("../../../runtime/v1.js");
const FREEZE_JS: &str = include_str!("../../../runtime/freeze.js");
pub(super) const CORE_MODULE: &str = "replicator:core";
/// Replaces `Date` with a subclass whose "now" is fixed (before builtins are frozen).
const FIXED_CLOCK_JS: &str = "(() => { const fixed = FIXED_MS; \
    class Date extends globalThis.Date { \
      constructor(...args) { if (args.length === 0) super(fixed); else super(...args); } \
      static now() { return fixed; } } \
    globalThis.Date = Date; })();";
pub(super) const NATIVE_GLOBAL: &str = "__replicator_native";
pub(super) const FAILURE: &str = "__replicator_failure";

/// How to build an engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Memory and time limits.
    pub limits: Limits,
    /// Flag names `setOptions` may set (without dashes); anything else is an error.
    pub known_flags: Vec<String>,
    /// A fixed clock (milliseconds since the Unix epoch): `Date.now()` and `new Date()`
    /// return it. For reproducible test runs; `None` is the real clock.
    pub fixed_clock_ms: Option<i64>,
    /// Seeds `randomUUID()` so it repeats from run to run; `None` is truly random.
    pub uuid_seed: Option<u64>,
}

/// A table-level configuration the script registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// The name as the script wrote it: bare (`orders`) or qualified (`db.public.orders`).
    pub name: String,
    /// Registered through which API.
    pub api: Api,
    /// `onRowUpsert` (v1 `map`) is set.
    pub upsert: bool,
    /// `onRowDelete` (v1 `deleteKey`) is set.
    pub delete: bool,
    /// `onWrite` (v1 `apply`) is set.
    pub write: bool,
}

/// Everything the script configured while loading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configured {
    /// Target schemas with schema-level handlers (v2 `configureTargetSchema`, v1 `configureSource`).
    pub schemas: Vec<(String, Api)>,
    /// Target tables with table-level handlers.
    pub tables: Vec<TableConfig>,
    /// Flags set by `setOptions`, in call order.
    pub options: Vec<(String, String)>,
}

impl Configured {
    /// The schema-level registration for `schema`, if any.
    pub fn schema(&self, schema: &str) -> Option<Api> {
        self.schemas.iter().find(|(name, _)| name == schema).map(|(_, api)| *api)
    }

    /// The table-level registration for `table` in target schema `schema`: a qualified name
    /// (`schema.table`) wins over a bare one. Names are case-sensitive.
    pub fn table(&self, schema: &str, table: &str) -> Option<&TableConfig> {
        let qualified = format!("{schema}.{table}");
        self.tables
            .iter()
            .find(|t| t.name == qualified)
            .or_else(|| self.tables.iter().find(|t| t.name == table))
    }
}

/// The per-call deadline, read by QuickJS's interrupt handler.
pub(super) struct Deadline {
    start: Instant,
    /// Nanoseconds since `start` after which the call is stopped; 0 means no deadline.
    until: AtomicU64,
    fired: AtomicBool,
}

impl Deadline {
    fn arm(&self, timeout: Duration) {
        self.fired.store(false, Ordering::Relaxed);
        let until = self.start.elapsed().saturating_add(timeout).as_nanos().max(1);
        self.until.store(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.until.store(0, Ordering::Relaxed);
    }

    /// Stops the clock; returns the time left, for [`Deadline::resume`].
    fn pause(&self) -> Option<Duration> {
        let until = self.until.swap(0, Ordering::Relaxed);
        (until != 0).then(|| Duration::from_nanos(until).saturating_sub(self.start.elapsed()))
    }

    fn resume(&self, left: Option<Duration>) {
        if let Some(left) = left {
            let until = self.start.elapsed().saturating_add(left).as_nanos().max(1);
            self.until.store(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    fn expired(&self) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        if until != 0 && self.start.elapsed().as_nanos() > u128::from(until) {
            self.fired.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// The JavaScript functions Rust calls, kept alive across calls.
struct Entry {
    run_schema: Persistent<Function<'static>>,
    run_table: Persistent<Function<'static>>,
    run_write: Persistent<Function<'static>>,
    end_write: Persistent<Function<'static>>,
}

/// What the running `onWrite` reaches: the target transaction, and the JSON columns of the
/// rows it received, by key (see [`super::exact::keep_ops_text`]).
#[derive(Default)]
pub(super) struct HostState {
    host: RefCell<Option<Box<dyn WriteHost>>>,
    originals: RefCell<Vec<(Vec<String>, Row)>>,
}

pub(super) type HostSlot = Rc<HostState>;

/// One JavaScript engine with a userscript loaded. Not `Send`: keep it on one thread.
pub struct Engine {
    // Field order is drop order: JavaScript values before the context, the context before
    // the runtime.
    entry: Entry,
    context: Context,
    runtime: Runtime,
    script: Arc<CompiledScript>,
    name: String,
    limits: Limits,
    deadline: Arc<Deadline>,
    host: HostSlot,
    configured: Configured,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("script", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Compiles `path` and loads it.
    pub fn from_file(path: &Path, options: EngineOptions) -> Result<Self, ScriptError> {
        let script = Arc::new(compile_script(path)?);
        Self::new(script, options)
    }

    /// Loads a compiled script into a fresh engine: API modules, frozen builtins, then the
    /// script's top-level code (with the per-call time limit).
    pub fn new(script: Arc<CompiledScript>, options: EngineOptions) -> Result<Self, ScriptError> {
        let name = script.entry.clone();
        let engine_error = |e: rquickjs::Error| ScriptError::Engine {
            script: name.clone(),
            message: e.to_string(),
        };
        let limits = options.limits;
        let runtime = Runtime::new().map_err(engine_error)?;
        runtime.set_memory_limit(limits.max_memory);
        runtime.set_max_stack_size(1024 * 1024);
        let deadline = Arc::new(Deadline {
            start: Instant::now(),
            until: AtomicU64::new(0),
            fired: AtomicBool::new(false),
        });
        let watch = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || watch.expired())));
        runtime.set_loader(
            ScriptResolver { script: script.clone() },
            ScriptLoader { script: script.clone() },
        );
        let context = Context::full(&runtime).map_err(engine_error)?;

        let host: HostSlot = Rc::default();
        let set_options: Rc<RefCell<Vec<(String, String)>>> = Rc::new(RefCell::new(Vec::new()));
        let known_flags = Rc::new(options.known_flags);

        deadline.arm(limits.timeout);
        let loaded = context.with(|ctx| -> Result<(Entry, Configured), ScriptError> {
            let fail =
                |ctx: &Ctx<'_>, e: rquickjs::Error| load_error(ctx, e, &script, &deadline, limits);
            install_natives(
                &ctx,
                &name,
                &host,
                &deadline,
                &set_options,
                &known_flags,
                options.uuid_seed,
            )
            .map_err(|e| fail(&ctx, e))?;
            let (core, promise) = Module::declare(ctx.clone(), CORE_MODULE, CORE_JS)
                .and_then(|m| m.eval())
                .map_err(|e| fail(&ctx, e))?;
            promise.finish::<()>().map_err(|e| fail(&ctx, e))?;
            if let Some(ms) = options.fixed_clock_ms {
                ctx.eval::<(), _>(FIXED_CLOCK_JS.replace("FIXED_MS", &ms.to_string()))
                    .map_err(|e| fail(&ctx, e))?;
            }
            ctx.eval::<(), _>(FREEZE_JS).map_err(|e| fail(&ctx, e))?;
            let get = |name: &str| -> rquickjs::Result<Persistent<Function<'static>>> {
                Ok(Persistent::save(&ctx, core.get::<_, Function>(name)?))
            };
            let entry = Entry {
                run_schema: get("runSchema").map_err(|e| fail(&ctx, e))?,
                run_table: get("runTable").map_err(|e| fail(&ctx, e))?,
                run_write: get("runWrite").map_err(|e| fail(&ctx, e))?,
                end_write: get("endWrite").map_err(|e| fail(&ctx, e))?,
            };
            let user = script.modules.get(&script.entry).map(|m| m.js.clone()).unwrap_or_default();
            let (_, promise) = Module::declare(ctx.clone(), script.entry.as_str(), user)
                .and_then(|m| m.eval())
                .map_err(|e| fail(&ctx, e))?;
            match promise.finish::<()>() {
                Ok(()) => {}
                Err(rquickjs::Error::WouldBlock) => {
                    return Err(ScriptError::Load {
                        script: name.clone(),
                        message:
                            "top-level await never settled (there are no timers or I/O to wait for)"
                                .into(),
                        location: None,
                    });
                }
                Err(e) => return Err(fail(&ctx, e)),
            }
            core.get::<_, Function>("finishLoading")
                .and_then(|f| f.call::<_, ()>(()))
                .map_err(|e| fail(&ctx, e))?;
            let described: Object = core
                .get::<_, Function>("describe")
                .and_then(|f| f.call(()))
                .map_err(|e| fail(&ctx, e))?;
            let configured = read_configured(&described).map_err(|e| fail(&ctx, e))?;
            Ok((entry, configured))
        });
        deadline.disarm();
        let (entry, mut configured) = loaded?;
        configured.options = set_options.borrow().clone();
        if configured.schemas.is_empty() && configured.tables.is_empty() {
            return Err(ScriptError::Load {
                script: name,
                message:
                    "it configures nothing: call configureTargetSchema or configureTargetTables \
                          (replicator@v2), or configureSource/configureTable (replicator@v1)"
                        .into(),
                location: None,
            });
        }
        Ok(Self { entry, context, runtime, script, name, limits, deadline, host, configured })
    }

    /// What the script configured.
    pub fn configured(&self) -> &Configured {
        &self.configured
    }

    /// The compiled script.
    pub fn script(&self) -> &Arc<CompiledScript> {
        &self.script
    }

    /// Runs the schema-level handler of `schema` over a batch: each row with its meta (for a
    /// v1 `dispatch`/`deletesTo`, `meta.before` is set from [`Meta::before`]). A row the
    /// handler returns goes to the table named `meta.table` (the source table's name).
    pub fn schema_rows(
        &mut self,
        schema: &str,
        op: Op,
        rows: &[(Row, Meta)],
    ) -> Result<Vec<Routed>, ScriptError> {
        self.schema_rows_taking(schema, op, &mut rows.to_vec())
    }

    /// [`Self::schema_rows`] that takes from `rows` what it passes on: the text values a
    /// handler returns as it got them move into the result instead of being converted back
    /// (a row a handler fails on is left whole, to be named in the error).
    pub fn schema_rows_taking(
        &mut self,
        schema: &str,
        op: Op,
        rows: &mut [(Row, Meta)],
    ) -> Result<Vec<Routed>, ScriptError> {
        let api = self.configured.schema(schema).ok_or_else(|| ScriptError::NotConfigured {
            script: self.name.clone(),
            message: format!(
                "no configureTargetSchema/configureSource for target schema {schema:?}"
            ),
        })?;
        let function = match op {
            Op::Upsert => {
                if api == Api::V1 {
                    "dispatch"
                } else {
                    "onRowUpsert"
                }
            }
            Op::Delete => {
                if api == Api::V1 {
                    "deletesTo"
                } else {
                    "onRowDelete"
                }
            }
        };
        let handler = format!("{function} for schema {schema:?}");
        let with_before = api == Api::V1;
        let entry = self.entry.run_schema.clone();
        self.call(&handler, |ctx, _| {
            let (js_rows, metas) = (Array::new(ctx.clone())?, Array::new(ctx.clone())?);
            let mut encoder = BatchEncoder::new(ctx);
            let mut inputs =
                Inputs::with_capacity(rows.len(), rows.first().map_or(0, |r| r.0.len()));
            for (i, (row, meta)) in rows.iter().enumerate() {
                js_rows.set(i, encoder.row_noted(row, &mut inputs)?)?;
                metas.set(i, encoder.shared_meta(meta, with_before)?)?;
            }
            encoder.names_into(&mut inputs);
            let out: Array =
                entry.restore(ctx)?.call((schema, op == Op::Delete, js_rows, metas))?;
            let convert = FromJsConverter::new(ctx)?;
            let mut routed = Vec::with_capacity(rows.len());
            for (i, (row, meta)) in rows.iter_mut().enumerate() {
                let value: JsValue = out.get(i)?;
                let mut source = Source::new(row, &inputs, i);
                let out = convert
                    .routed(value, &meta.table, "the handler", &mut source)
                    .map_err(|p| Failure::Return(i, p))?;
                routed.push(out);
            }
            Ok(routed)
        })
    }

    /// Runs a table-level `onRowUpsert` (v1 `map`) over a batch. `table` is the registered
    /// name ([`Configured::table`]). `None` means the row is dropped.
    pub fn table_upserts(
        &mut self,
        table: &str,
        rows: &[(Row, Meta)],
    ) -> Result<Vec<Option<Row>>, ScriptError> {
        let config = self.table_config(table)?;
        let function = if config.api == Api::V1 { "map" } else { "onRowUpsert" };
        if !config.upsert {
            return Ok(rows.iter().map(|(row, _)| Some(row.clone())).collect());
        }
        let handler = format!("{function} for table {table:?}");
        let entry = self.entry.run_table.clone();
        self.call(&handler, |ctx, _| {
            let (values, metas) = (Array::new(ctx.clone())?, Array::new(ctx.clone())?);
            let mut encoder = BatchEncoder::new(ctx);
            for (i, (row, meta)) in rows.iter().enumerate() {
                values.set(i, encoder.row(row)?)?;
                metas.set(i, encoder.shared_meta(meta, false)?)?;
            }
            let out: Array = entry.restore(ctx)?.call((table, false, values, metas))?;
            let convert = FromJsConverter::new(ctx)?;
            let mut result = Vec::with_capacity(rows.len());
            for (i, (original, _)) in rows.iter().enumerate() {
                let value: JsValue = out.get(i)?;
                if value.is_null() {
                    result.push(None);
                } else {
                    let mut row =
                        convert.row(value, "the handler").map_err(|p| Failure::Return(i, p))?;
                    keep_row_text(&mut row, original);
                    result.push(Some(row));
                }
            }
            Ok(result)
        })
    }

    /// Runs a table-level `onRowDelete` (v1 `deleteKey`) over a batch of primary keys (values
    /// in key order). `None` means the delete is skipped. A returned key must have the same
    /// number of values.
    pub fn table_deletes(
        &mut self,
        table: &str,
        keys: &[(Vec<String>, Meta)],
    ) -> Result<Vec<Option<Vec<String>>>, ScriptError> {
        let config = self.table_config(table)?;
        let function = if config.api == Api::V1 { "deleteKey" } else { "onRowDelete" };
        if !config.delete {
            return Ok(keys.iter().map(|(key, _)| Some(key.clone())).collect());
        }
        let handler = format!("{function} for table {table:?}");
        let entry = self.entry.run_table.clone();
        self.call(&handler, |ctx, _| {
            let (values, metas) = (Array::new(ctx.clone())?, Array::new(ctx.clone())?);
            let mut encoder = BatchEncoder::new(ctx);
            for (i, (key, meta)) in keys.iter().enumerate() {
                values.set(i, strings_to_js(ctx, key)?)?;
                metas.set(i, encoder.shared_meta(meta, false)?)?;
            }
            let out: Array = entry.restore(ctx)?.call((table, true, values, metas))?;
            let convert = FromJsConverter::new(ctx)?;
            let mut result = Vec::with_capacity(keys.len());
            for (i, (key, _)) in keys.iter().enumerate() {
                let value: JsValue = out.get(i)?;
                result.push(
                    convert
                        .key(value, key.len(), "the handler")
                        .map_err(|p| Failure::Return(i, p))?,
                );
            }
            Ok(result)
        })
    }

    /// Runs `onWrite` (v1 `apply`) for `table` with `host` as the transaction `getTX()` and
    /// `write()` reach. Returns the host back, whatever the outcome.
    pub fn write(
        &mut self,
        table: &str,
        ops: &[RowOp],
        host: Box<dyn WriteHost>,
    ) -> (Box<dyn WriteHost>, Result<(), ScriptError>) {
        let config = match self.table_config(table) {
            Ok(config) => config,
            Err(e) => return (host, Err(e)),
        };
        let function = if config.api == Api::V1 { "apply" } else { "onWrite" };
        if !config.write {
            return (
                host,
                Err(ScriptError::NotConfigured {
                    script: self.name.clone(),
                    message: format!("no {function} for table {table:?}"),
                }),
            );
        }
        *self.host.host.borrow_mut() = Some(host);
        *self.host.originals.borrow_mut() = json_originals(ops);
        let handler = format!("{function} for table {table:?}");
        let entry = self.entry.run_write.clone();
        let end = self.entry.end_write.clone();
        let result = self.call(&handler, |ctx, _| {
            let promise: Promise = entry.restore(ctx)?.call((table, ops_to_js(ctx, ops)?))?;
            let outcome = promise.finish::<JsValue>().map(|_| ());
            end.restore(ctx)?.call::<_, ()>(())?;
            match outcome {
                Err(rquickjs::Error::WouldBlock) => Err(Failure::Return(
                    usize::MAX,
                    "its promise never settled (there are no timers or I/O to wait for)".into(),
                )),
                other => other.map_err(Failure::Js),
            }
        });
        self.host.originals.borrow_mut().clear();
        let host =
            self.host.host.borrow_mut().take().expect("the host stays in its slot during the call");
        (host, result)
    }

    fn table_config(&self, table: &str) -> Result<TableConfig, ScriptError> {
        self.configured.tables.iter().find(|t| t.name == table).cloned().ok_or_else(|| {
            ScriptError::NotConfigured {
                script: self.name.clone(),
                message: format!("no configureTargetTables/configureTable for table {table:?}"),
            }
        })
    }

    /// One call into JavaScript under the deadline, with errors classified.
    fn call<R>(
        &mut self,
        handler: &str,
        f: impl for<'js> FnOnce(&Ctx<'js>, &str) -> Result<R, Failure>,
    ) -> Result<R, ScriptError> {
        self.deadline.arm(self.limits.timeout);
        let script = &self.script;
        let (deadline, limits, name) = (&self.deadline, self.limits, &self.name);
        let result = self.context.with(|ctx| {
            f(&ctx, handler).map_err(|failure| match failure {
                Failure::Js(e) => call_error(&ctx, e, script, deadline, limits, handler),
                Failure::Return(row, problem) => ScriptError::Return {
                    script: name.clone(),
                    handler: handler.to_owned(),
                    row: (row != usize::MAX).then_some(row),
                    problem,
                },
            })
        });
        self.deadline.disarm();
        if matches!(result, Err(ScriptError::Memory { .. })) {
            self.runtime.run_gc();
        }
        result
    }
}

/// A failure inside a call: a JavaScript error, or a bad return value at a row.
enum Failure {
    Js(rquickjs::Error),
    Return(usize, String),
}

impl From<rquickjs::Error> for Failure {
    fn from(e: rquickjs::Error) -> Self {
        Failure::Js(e)
    }
}

/// Reads `describe()`'s `{schemas: [[name, api]], tables: [[name, api, upsert, delete, write]]}`.
fn read_configured(described: &Object<'_>) -> rquickjs::Result<Configured> {
    let api = |s: &str| if s == "v1" { Api::V1 } else { Api::V2 };
    let mut configured = Configured::default();
    let schemas: Vec<Array> = described.get("schemas")?;
    for entry in schemas {
        let a: String = entry.get(1)?;
        configured.schemas.push((entry.get(0)?, api(&a)));
    }
    let tables: Vec<Array> = described.get("tables")?;
    for entry in tables {
        let a: String = entry.get(1)?;
        configured.tables.push(TableConfig {
            name: entry.get(0)?,
            api: api(&a),
            upsert: entry.get(2)?,
            delete: entry.get(3)?,
            write: entry.get(4)?,
        });
    }
    Ok(configured)
}
