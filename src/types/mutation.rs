//! What sources emit: mutations grouped into source transactions, each ending at a position.

use std::fmt;

use super::position::{GtidSet, Hlc, PgLsn, Scn};
use super::value::Name;
use super::{Row, Value};

/// Insert/update or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// An insert or update: the row holds every column the source sent (PostgreSQL leaves
    /// out unchanged TOAST values, which keep the target's value).
    Upsert,
    /// A delete: the row holds at least the key columns.
    Delete,
}

/// One row change, as the source saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// The source table's name (the target table unless a userscript routes it elsewhere).
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// Column values (for a delete, at least the key).
    pub row: Row,
    /// The row before the change, when the source sends one.
    pub before: Option<Row>,
}

/// Where a source stands after a transaction; one kind per source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// PostgreSQL WAL position.
    Lsn(PgLsn),
    /// MySQL/MariaDB executed GTIDs.
    Gtid(GtidSet),
    /// Oracle SCN.
    Scn(Scn),
    /// CockroachDB resolved timestamp.
    Hlc(Hlc),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Lsn(p) => p.fmt(f),
            Position::Gtid(p) => p.fmt(f),
            Position::Scn(p) => p.fmt(f),
            Position::Hlc(p) => p.fmt(f),
        }
    }
}

/// A committed source transaction: its mutations in order, and the position of its commit.
/// It is applied whole or not at all (invariant 3 in `docs/architecture.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTransaction {
    /// The mutations, in commit order.
    pub mutations: Vec<Mutation>,
    /// Where the source stands once this transaction is applied.
    pub position: Position,
    /// The source commit time, nanoseconds since the Unix epoch.
    pub commit_nanos: i64,
}

impl Mutation {
    /// An upsert of `row` into `table`.
    pub fn upsert(table: &str, row: Row) -> Self {
        Self { table: table.to_owned(), op: Op::Upsert, row, before: None }
    }

    /// A delete of the row keyed by `key` from `table`.
    pub fn delete(table: &str, key: Row) -> Self {
        Self { table: table.to_owned(), op: Op::Delete, row: key, before: None }
    }
}

/// Builds a row from `(column, value)` pairs (for tests and sources).
pub fn row<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Row {
    pairs.into_iter().map(|(k, v)| (Name::from(k), v)).collect()
}
