//! What `onWrite` reaches: the target transaction of the batch being written.
//!
//! The engine calls a [`WriteHost`] synchronously from inside JavaScript (`getTX().query`,
//! `exec`, `columns`, `write`). The engine pauses the handler's deadline while the host works:
//! waiting for the database is not script time. The replication core implements the host on
//! its target transaction; `write` hands rows to the applier inside that transaction.

use std::fmt;

use crate::script::Meta;
use crate::types::{Row, Value};

/// One operation `onWrite` receives and may pass to `write`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOp {
    /// Upsert with its data, or delete.
    pub data: Option<Row>,
    /// The row before the change, when the source provides it.
    pub before: Option<Row>,
    /// The row's metadata.
    pub meta: Meta,
    /// Primary-key values in the target's primary-key order.
    pub pk: Vec<String>,
}

impl RowOp {
    /// `"upsert"` or `"delete"`.
    pub fn action(&self) -> &'static str {
        if self.data.is_some() { "upsert" } else { "delete" }
    }
}

/// A target column as `getTX().columns()` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    /// Quoted, SQL-safe name.
    pub name: String,
    /// Part of the primary key.
    pub primary: bool,
    /// Replicator does not write it (generated or computed).
    pub ignored: bool,
    /// The SQL type, e.g. `INT8`, `TEXT`.
    pub type_name: String,
    /// The default expression, if any.
    pub default_expr: Option<String>,
}

/// A failed host call: the database's message and SQLSTATE, which scripts see as
/// `"<message> (SQLSTATE 23502)"` so they can branch on the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// The message.
    pub message: String,
    /// The five-character SQLSTATE, when the database sent one.
    pub sqlstate: Option<String>,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "{} (SQLSTATE {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for HostError {}

/// The target transaction, as the running `onWrite` sees it.
pub trait WriteHost {
    /// Runs a query; rows come back as arrays of values in column order. Placeholders are the
    /// target's (`$1` for PostgreSQL/CockroachDB, `?` for MySQL).
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, HostError>;
    /// Runs a statement without result rows.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<(), HostError>;
    /// The target table's columns, primary key first in key order.
    fn columns(&mut self) -> Result<Vec<TargetColumn>, HostError>;
    /// The quoted target schema, e.g. `"db"."public"`.
    fn schema(&self) -> String;
    /// The quoted, fully qualified target table.
    fn table(&self) -> String;
    /// Applies the operations with replicator's normal write, in this transaction.
    fn write(&mut self, ops: Vec<RowOp>) -> Result<(), HostError>;
}
