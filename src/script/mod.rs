//! The userscript host: TypeScript compiled in-process, run in an embedded engine.
//!
//! ```text
//! file.ts ──compile (swc)──▶ JS + position map ──▶ Engine (QuickJS) ──▶ handlers per batch
//!                                                    ▲   runtime/core.js: registry, batch loops,
//!                                                    │   console; replicator@v2 / @v1 modules
//!                                                    └── native ops: log, query/exec/write (WriteHost)
//! ```
//!
//! - [`compile`] turns the entry file and its relative imports into JavaScript, failing fast
//!   with `file.ts:line:col` on a syntax error or a forbidden import.
//! - [`engine`] is the one boundary around the JavaScript engine: it loads the API modules
//!   from `runtime/`, freezes the builtins, evaluates the script, and calls the registered
//!   handlers once per batch. Memory and time are limited per engine and per call; a throw,
//!   timeout or memory exhaustion fails the batch with an error naming the script and the
//!   TypeScript location, and the engine stays usable.
//! - [`host`] is what `onWrite` reaches through `getTX()` and `write()`: the target
//!   transaction, behind the [`host::WriteHost`] trait.

pub mod compile;
mod convert;
pub mod engine;
pub mod exact;
pub mod host;
pub mod pool;
pub mod templates;
pub mod transform;

use std::fmt;
use std::time::Duration;

use crate::types::Row;

pub use compile::{CompileError, CompiledScript, Location, compile_script};
pub use engine::{Configured, Engine, EngineOptions, ScriptError, TableConfig};
pub use host::{HostError, RowOp, TargetColumn, WriteHost};
pub use pool::ScriptPool;

/// Default `--userscriptTimeout`: JavaScript time allowed per handler call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--userscriptMaxMemory`: heap limit per engine instance.
pub const DEFAULT_MAX_MEMORY: usize = 256 * 1024 * 1024;

/// Which API a handler was registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `replicator@v2`.
    V2,
    /// `replicator@v1` / `cdc-sink@v1`.
    V1,
}

pub use crate::types::mutation::Op;

/// Where a mutation came from; scripts see it as `meta.<tag> = true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceTag {
    /// `replicator pglogical`.
    PgLogical,
    /// `replicator mylogical`.
    MyLogical,
    /// `replicator oraclelogminer`.
    OracleLogMiner,
    /// `replicator start` (a CockroachDB changefeed).
    Changefeed,
}

impl SourceTag {
    /// The `meta` property name.
    pub fn name(self) -> &'static str {
        match self {
            Self::PgLogical => "pglogical",
            Self::MyLogical => "mylogical",
            Self::OracleLogMiner => "oraclelogminer",
            Self::Changefeed => "changefeed",
        }
    }
}

/// What a handler's `meta` argument holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    /// The target schema (`db.schema`, or the database for MySQL/Oracle targets).
    pub schema: String,
    /// Schema-level handlers: the source table; table-level: the target table.
    pub table: String,
    /// The source, shown as `meta.<tag> = true`.
    pub source: Option<SourceTag>,
    /// Source commit time: wall nanoseconds and logical counter, shown as strings.
    pub time: Option<(i128, u32)>,
    /// The row before the change, when the source sends one (v1 `dispatch`/`deletesTo` meta).
    pub before: Option<Row>,
}

/// What a schema-level handler made of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// Returned `null`: nothing is written for this row.
    Dropped,
    /// Rows to write, each with its target table, in the order the script returned them.
    Rows(Vec<(String, Row)>),
}

/// Sandbox limits of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// JavaScript time per handler call (time waiting on the database is not counted).
    pub timeout: Duration,
    /// Heap limit of the engine, in bytes.
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, max_memory: DEFAULT_MAX_MEMORY }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V2 => "replicator@v2",
            Self::V1 => "replicator@v1",
        })
    }
}
