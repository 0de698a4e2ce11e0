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

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::FromJs as _;
use rquickjs::loader::{Loader, Resolver};
use rquickjs::{
    Array, Context, Ctx, Exception, Function, Module, Object, Persistent, Promise, Runtime,
    Value as JsValue,
};

use super::compile::{BUILTIN_MODULES, CompileError, CompiledScript, Location, compile_script};
use super::convert::{
    BatchEncoder, FromJsConverter, columns_to_js, ops_to_js, strings_to_js, value_to_js,
};
use super::exact::{json_originals, keep_ops_text, keep_row_text};
use super::host::{RowOp, WriteHost};
use super::{Api, Limits, Meta, Op, Routed};
use crate::types::duration::format as format_duration;
use crate::types::{Row, Value};

const CORE_JS: &str = include_str!("../../runtime/core.js");
const V2_JS: &str = include_str!("../../runtime/v2.js");
const V1_JS: &str = include_str!("../../runtime/v1.js");
const FREEZE_JS: &str = include_str!("../../runtime/freeze.js");
const CORE_MODULE: &str = "replicator:core";
/// Replaces `Date` with a subclass whose "now" is fixed (before builtins are frozen).
const FIXED_CLOCK_JS: &str = "(() => { const fixed = FIXED_MS; \
    class Date extends globalThis.Date { \
      constructor(...args) { if (args.length === 0) super(fixed); else super(...args); } \
      static now() { return fixed; } } \
    globalThis.Date = Date; })();";
const NATIVE_GLOBAL: &str = "__replicator_native";
const FAILURE: &str = "__replicator_failure";

/// Why a script failed to load or a call failed. Every variant names the script.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// Syntax error, unreadable file, forbidden import.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The script threw while loading, or configured something invalid.
    #[error("userscript {script} failed to load{}: {message}", at(location))]
    Load {
        /// The entry file.
        script: String,
        /// What went wrong.
        message: String,
        /// Where, in the TypeScript source.
        location: Option<Location>,
    },
    /// A handler threw (or its promise rejected).
    #[error("userscript {script}: {handler} threw{}{}: {message}", row_part(*row), at(location))]
    Thrown {
        /// The entry file.
        script: String,
        /// Which handler, e.g. `onRowUpsert for table "orders"`.
        handler: String,
        /// The JavaScript message (`Error: …`).
        message: String,
        /// Where it was thrown, in the TypeScript source.
        location: Option<Location>,
        /// The row of the batch being handled, when known (0-based).
        row: Option<usize>,
    },
    /// A handler ran past `--userscriptTimeout`.
    #[error(
        "userscript {script}: {handler} ran longer than --userscriptTimeout ({}) and was stopped; \
         make it faster or raise the limit",
        format_duration(*limit)
    )]
    Timeout {
        /// The entry file.
        script: String,
        /// Which handler.
        handler: String,
        /// The limit.
        limit: Duration,
    },
    /// A handler exhausted `--userscriptMaxMemory`.
    #[error(
        "userscript {script}: {handler} ran out of memory (--userscriptMaxMemory {}) and was \
         stopped; use less memory or raise the limit",
        format_bytes(*limit)
    )]
    Memory {
        /// The entry file.
        script: String,
        /// Which handler.
        handler: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A handler returned something that is not what it must return.
    #[error("userscript {script}: {handler}{}: {problem}", row_part(*row))]
    Return {
        /// The entry file.
        script: String,
        /// Which handler.
        handler: String,
        /// The row of the batch, when known (0-based).
        row: Option<usize>,
        /// What is wrong.
        problem: String,
    },
    /// The caller asked for something the script did not configure.
    #[error("userscript {script}: {message}")]
    NotConfigured {
        /// The entry file.
        script: String,
        /// What is missing.
        message: String,
    },
    /// The engine itself failed (a bug, or QuickJS refused to start).
    #[error("userscript {script}: JavaScript engine error: {message}")]
    Engine {
        /// The entry file.
        script: String,
        /// QuickJS's message.
        message: String,
    },
}

fn at(location: &Option<Location>) -> String {
    location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default()
}

fn row_part(row: Option<usize>) -> String {
    row.map(|r| format!(" on row {} of the batch", r + 1)).unwrap_or_default()
}

impl ScriptError {
    /// Names the failing row the way the caller knows it (`on table "orders", key [42]`)
    /// instead of by its place in the batch, when the error points at a row: `describe` gets
    /// its index.
    pub fn describe_row(mut self, describe: impl FnOnce(usize) -> Option<String>) -> Self {
        if let ScriptError::Thrown { row, handler, .. } | ScriptError::Return { row, handler, .. } =
            &mut self
            && let Some(described) = row.and_then(describe)
        {
            *handler = format!("{handler} on {described}");
            *row = None;
        }
        self
    }
}

/// `256MiB`, `1GiB`, `512KiB` or bytes.
pub fn format_bytes(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

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
struct Deadline {
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
struct HostState {
    host: RefCell<Option<Box<dyn WriteHost>>>,
    originals: RefCell<Vec<(Vec<String>, Row)>>,
}

type HostSlot = Rc<HostState>;

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
            for (i, (row, meta)) in rows.iter().enumerate() {
                js_rows.set(i, encoder.row(row)?)?;
                metas.set(i, encoder.meta(meta, with_before)?)?;
            }
            let out: Array =
                entry.restore(ctx)?.call((schema, op == Op::Delete, js_rows, metas))?;
            let convert = FromJsConverter::new(ctx)?;
            let mut routed = Vec::with_capacity(rows.len());
            for (i, (_, meta)) in rows.iter().enumerate() {
                let value: JsValue = out.get(i)?;
                let mut out = convert
                    .routed(value, &meta.table, "the handler")
                    .map_err(|p| Failure::Return(i, p))?;
                if let Routed::Rows(out) = &mut out {
                    for (_, row) in out {
                        keep_row_text(row, &rows[i].0);
                    }
                }
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
                metas.set(i, encoder.meta(meta, false)?)?;
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
                metas.set(i, encoder.meta(meta, false)?)?;
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

/// The thrown value of a failed call, unwrapped from the glue's `{__replicator_failure}`.
struct Thrown {
    message: String,
    stack: Option<String>,
    row: Option<usize>,
    out_of_memory: bool,
}

fn thrown(ctx: &Ctx<'_>, error: rquickjs::Error) -> Thrown {
    let mut row = None;
    let value = match error {
        rquickjs::Error::Exception => ctx.catch(),
        rquickjs::Error::Allocation => {
            return Thrown {
                message: "out of memory".into(),
                stack: None,
                row,
                out_of_memory: true,
            };
        }
        other => {
            return Thrown { message: other.to_string(), stack: None, row, out_of_memory: false };
        }
    };
    let mut value = value;
    if let Some(object) = value.as_object()
        && object.get::<_, bool>(FAILURE).unwrap_or(false)
    {
        row = object.get::<_, i64>("index").ok().and_then(|i| usize::try_from(i).ok());
        value = object.get("error").unwrap_or(value.clone());
    }
    if let Some(exception) = value.as_exception() {
        let name: String = exception.get("name").unwrap_or_else(|_| "Error".into());
        let message = exception.message().unwrap_or_default();
        let out_of_memory = message == "out of memory";
        return Thrown {
            message: if message.is_empty() { name } else { format!("{name}: {message}") },
            stack: exception.stack(),
            row,
            out_of_memory,
        };
    }
    let message = rquickjs::convert::Coerced::<String>::from_js(ctx, value)
        .map(|c| c.0)
        .unwrap_or_else(|_| "a value that cannot be shown".into());
    Thrown {
        message: format!(
            "{message} (a non-Error value was thrown: throw new Error(…) to get file:line:col)"
        ),
        stack: None,
        row,
        out_of_memory: false,
    }
}

/// The first stack frame in one of the script's own modules, mapped to the TypeScript source.
fn user_location(script: &CompiledScript, stack: Option<&str>) -> Option<Location> {
    for line in stack?.lines() {
        let frame = line.trim().trim_end_matches(')');
        let frame = frame.rsplit_once('(').map_or(frame.trim_start_matches("at "), |(_, f)| f);
        let mut parts = frame.rsplitn(3, ':');
        let (Some(col), Some(line_no), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(line_no), Ok(col)) = (line_no.parse::<u32>(), col.parse::<u32>()) else { continue };
        if script.modules.contains_key(file) {
            return script.original_location(file, line_no, col).or(Some(Location {
                file: file.to_owned(),
                line: line_no,
                column: col,
            }));
        }
    }
    None
}

fn call_error(
    ctx: &Ctx<'_>,
    error: rquickjs::Error,
    script: &CompiledScript,
    deadline: &Deadline,
    limits: Limits,
    handler: &str,
) -> ScriptError {
    let name = script.entry.clone();
    let handler = handler.to_owned();
    let t = thrown(ctx, error);
    if deadline.fired.load(Ordering::Relaxed) {
        return ScriptError::Timeout { script: name, handler, limit: limits.timeout };
    }
    if t.out_of_memory {
        return ScriptError::Memory { script: name, handler, limit: limits.max_memory };
    }
    let location = user_location(script, t.stack.as_deref());
    ScriptError::Thrown { script: name, handler, message: t.message, location, row: t.row }
}

fn load_error(
    ctx: &Ctx<'_>,
    error: rquickjs::Error,
    script: &CompiledScript,
    deadline: &Deadline,
    limits: Limits,
) -> ScriptError {
    match call_error(ctx, error, script, deadline, limits, "top-level code") {
        ScriptError::Thrown { script, message, location, .. } => {
            ScriptError::Load { script, message, location }
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Native ops

fn install_natives<'js>(
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

// ---------------------------------------------------------------------------------------------
// Module resolution and loading

struct ScriptResolver {
    script: Arc<CompiledScript>,
}

impl Resolver for ScriptResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        if BUILTIN_MODULES.contains(&name) {
            return Ok(name.to_owned());
        }
        if name == CORE_MODULE {
            return if BUILTIN_MODULES.contains(&base) {
                Ok(name.to_owned())
            } else {
                Err(rquickjs::Error::new_resolving_message(base, name, "internal module"))
            };
        }
        if name.starts_with("./") || name.starts_with("../") {
            let dir = Path::new(base).parent().unwrap_or(Path::new(""));
            let mut joined = Vec::new();
            for part in dir.join(name).components() {
                match part {
                    std::path::Component::ParentDir => {
                        joined.pop();
                    }
                    std::path::Component::Normal(p) => {
                        joined.push(p.to_string_lossy().into_owned())
                    }
                    _ => {}
                }
            }
            let candidate = joined.join("/");
            for option in [candidate.clone(), format!("{candidate}.ts"), format!("{candidate}.js")]
            {
                if self.script.modules.contains_key(&option) {
                    return Ok(option);
                }
            }
        }
        Err(rquickjs::Error::new_resolving_message(base, name, "not a module of this userscript"))
    }
}

struct ScriptLoader {
    script: Arc<CompiledScript>,
}

impl Loader for ScriptLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, rquickjs::module::Declared>> {
        let source = match name {
            "replicator@v2" => V2_JS.to_owned(),
            "replicator@v1" | "cdc-sink@v1" => V1_JS.to_owned(),
            _ => match self.script.modules.get(name) {
                Some(module) => module.js.clone(),
                None => return Err(rquickjs::Error::new_loading(name)),
            },
        };
        Module::declare(ctx.clone(), name, source)
    }
}
