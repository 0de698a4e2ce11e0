//! What can go wrong in a userscript, and how a JavaScript failure becomes one: the
//! thrown value unwrapped from the glue, its TypeScript location from the source map, and the
//! difference between a throw, a timeout and running out of memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rquickjs::{Ctx, FromJs as _};

use super::{Deadline, FAILURE};
use crate::script::Limits;
use crate::script::compile::{CompileError, CompiledScript, Location};
use crate::types::duration::format as format_duration;

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

/// The thrown value of a failed call, unwrapped from the glue's `{__replicator_failure}`.
pub(super) struct Thrown {
    message: String,
    stack: Option<String>,
    row: Option<usize>,
    out_of_memory: bool,
}

pub(super) fn thrown(ctx: &Ctx<'_>, error: rquickjs::Error) -> Thrown {
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

pub(super) fn call_error(
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

pub(super) fn load_error(
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
