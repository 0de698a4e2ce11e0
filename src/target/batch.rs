//! What every dialect's applier does before writing SQL: map each mutation onto its target
//! table and columns, take its primary key, and collapse mutations to one key into the last
//! (`--collapseMutations`), keeping columns a later upsert did not carry.
//!
//! Names match exactly, else case-insensitively; generated columns are left out; a column or
//! table the target lacks, or a missing key value, is an error naming table and column.
//! Without collapsing, a repeated key starts a new round, applied after the previous one.
//!
//! Collapsing never folds the delete of a row whose deletion changes other rows on the
//! target (its table is the parent of an `ON DELETE CASCADE`, `SET NULL` or `SET DEFAULT`
//! foreign key) into a later upsert of the same key: the delete starts a round of its own,
//! so what it cascades to is removed as it was on the source. [`Grouping::SourceOrder`]
//! plans a batch exactly in source order (one statement per run of one table and operation),
//! for when a collapsed batch holds a combination no source commit had (see the targets).

use std::borrow::Cow;
use std::collections::BTreeMap;

use indexmap::IndexMap;

use super::order::parent_first_groups;
use super::schema::{Column, Schema, Table};
use crate::types::Value;
use crate::types::mutation::{Mutation, Op};
use crate::types::value::RowHasher;

/// Why a batch cannot be applied. Data errors name the table and column.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The target schema has no such table.
    #[error(
        "table {table:?} does not exist in target schema {schema:?} (create it, or drop or route its rows in a userscript)"
    )]
    UnknownTable {
        /// The target schema.
        schema: String,
        /// The table the mutation names.
        table: String,
    },
    /// A column the target table does not have.
    #[error(
        "table {table:?} has no column {column:?} (add it to the target, or drop or rename it in a userscript)"
    )]
    UnknownColumn {
        /// The target table.
        table: String,
        /// The source column.
        column: String,
    },
    /// The target table has no primary key to upsert or delete by.
    #[error(
        "table {table:?} has no primary key; replication writes and deletes rows by primary key"
    )]
    NoPrimaryKey {
        /// The target table.
        table: String,
    },
    /// A mutation lacks a primary key column (or has it NULL).
    #[error("a {op} for table {table:?} has no value for primary key column {column:?}")]
    MissingKey {
        /// The target table.
        table: String,
        /// The key column.
        column: String,
        /// upsert or delete.
        op: &'static str,
    },
    /// The database refused a statement.
    #[error("writing table {table:?} failed: {message}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Database {
        /// The target table.
        table: String,
        /// The database's message.
        message: String,
        /// The database's error code (`SQLSTATE 23503`, `MySQL error 1452`).
        code: Option<String>,
        /// Whether retrying may succeed: the database out of reach, or a serialization
        /// failure or deadlock.
        kind: crate::error::ErrorKind,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApplyError {
    /// What kind of failure this is: the database's errors say; the others are the data's.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ApplyError::Database { kind, .. } => *kind,
            _ => crate::error::ErrorKind::Data,
        }
    }

    /// Worth retrying (the database was out of reach, or the failure was transient).
    pub fn is_transient(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The table the error is about.
    pub fn table(&self) -> &str {
        match self {
            ApplyError::UnknownTable { table, .. }
            | ApplyError::UnknownColumn { table, .. }
            | ApplyError::NoPrimaryKey { table }
            | ApplyError::MissingKey { table, .. }
            | ApplyError::Database { table, .. } => table,
        }
    }

    /// The target refused a write for a foreign key (PostgreSQL 23503; MySQL 1451/1452, and
    /// 1216/1217 from older servers).
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(self, ApplyError::Database { code: Some(code), .. } if matches!(
            code.as_str(),
            "SQLSTATE 23503" | "MySQL error 1451" | "MySQL error 1452" | "MySQL error 1216"
                | "MySQL error 1217"
        ))
    }
}

/// A column value in the dialect's text form; `None` is SQL NULL. It borrows the mutation's
/// text where the dialect takes it as it is (most values), so planning copies no values.
pub type Cell<'a> = Option<Cow<'a, str>>;

/// A primary key's values, in key order.
pub type Key<'a> = Vec<Cow<'a, str>>;

/// The last state of one key within a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending<'a> {
    /// Cells by column index; `None` where no mutation carried the column.
    Upsert(Vec<Option<Cell<'a>>>),
    /// Delete by these key values.
    Delete(Key<'a>),
}

/// The final state of each key of one table, in first-seen order.
pub type Keyed<'a> = IndexMap<Key<'a>, Pending<'a>, RowHasher>;

/// One round: per target table, the final state of each key.
pub type Round<'a> = BTreeMap<String, Keyed<'a>>;

/// How the mutations of a batch become rounds (applied one after another; within a round,
/// upserts go parents first and deletes children first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Mutations to one key collapse to the last (`--collapseMutations`), except that a
    /// cascading delete is not folded into a later upsert.
    Collapse,
    /// A repeated key starts a new round.
    Rounds,
    /// Exactly source order: a new round whenever the table or the operation changes, or a
    /// key repeats.
    SourceOrder,
}

impl From<bool> for Grouping {
    /// `--collapseMutations`.
    fn from(collapse: bool) -> Self {
        if collapse { Grouping::Collapse } else { Grouping::Rounds }
    }
}

/// Maps and collapses `mutations`; `cell` renders a value for a column in the dialect's
/// text form.
pub fn rounds<'a>(
    schema: &Schema,
    mutations: impl IntoIterator<Item = &'a Mutation>,
    grouping: impl Into<Grouping>,
    cell: impl Fn(&'a Value, &Column) -> Cell<'a>,
) -> Result<Vec<Round<'a>>, ApplyError> {
    let grouping = grouping.into();
    let mut rounds: Vec<Round<'a>> = vec![BTreeMap::new()];
    // The table and operation of the previous mutation (source order starts a round when
    // either changes).
    let mut previous: Option<(&str, Op)> = None;
    // Mutations come in runs of one table: the last lookup is kept.
    let mut last: Option<(&str, &Table)> = None;
    for m in mutations {
        let table = match last {
            Some((name, table)) if name == m.table => table,
            _ => {
                let table = schema.table(&m.table).ok_or_else(|| ApplyError::UnknownTable {
                    schema: schema.name.clone(),
                    table: m.table.clone(),
                })?;
                last = Some((&m.table, table));
                table
            }
        };
        if table.key.is_empty() {
            return Err(ApplyError::NoPrimaryKey { table: table.name.clone() });
        }
        let mut cells: Vec<Option<Cell<'a>>> = vec![None; table.columns.len()];
        for (n, (name, value)) in m.row.iter().enumerate() {
            let (i, column) = table.column_near(name, n).ok_or_else(|| {
                ApplyError::UnknownColumn { table: table.name.clone(), column: name.to_string() }
            })?;
            if !column.generated {
                cells[i] = Some(cell(value, column));
            }
        }
        let op = match m.op {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        };
        let key: Key<'a> = table
            .key
            .iter()
            .map(|&i| {
                cells[i].clone().flatten().ok_or_else(|| ApplyError::MissingKey {
                    table: table.name.clone(),
                    column: table.columns[i].name.clone(),
                    op,
                })
            })
            .collect::<Result<_, _>>()?;
        let earlier = rounds.last().and_then(|r| r.get(&table.name)).and_then(|p| p.get(&key));
        let new_round = match grouping {
            Grouping::Collapse => {
                m.op == Op::Upsert
                    && matches!(earlier, Some(Pending::Delete(_)))
                    && schema.cascading.contains(&table.name)
            }
            Grouping::Rounds => earlier.is_some(),
            Grouping::SourceOrder => {
                earlier.is_some() || previous.is_some_and(|(t, op)| t != table.name || op != m.op)
            }
        };
        if new_round {
            rounds.push(BTreeMap::new());
        }
        previous = Some((&table.name, m.op));
        let round = rounds.last_mut().expect("one round at least");
        if !round.contains_key(&table.name) {
            round.insert(table.name.clone(), Keyed::default());
        }
        let pending = round.get_mut(&table.name).expect("inserted above");
        let next = match (m.op, pending.shift_remove(&key)) {
            (Op::Delete, _) => Pending::Delete(key.clone()),
            (Op::Upsert, Some(Pending::Upsert(earlier))) => Pending::Upsert(
                earlier.into_iter().zip(cells).map(|(old, new)| new.or(old)).collect(),
            ),
            (Op::Upsert, _) => Pending::Upsert(cells),
        };
        pending.insert(key, next);
    }
    Ok(rounds)
}

/// Table names, parents first (upserts go in this order, deletes in reverse).
pub fn table_order(schema: &Schema) -> Vec<String> {
    parent_first_groups(&schema.names(), &schema.foreign_keys).into_iter().flatten().collect()
}

/// The upserts of one table grouped by their set of present columns, in first-seen order.
pub fn upserts_by_columns<'p, 'a>(
    pending: &'p Keyed<'a>,
) -> IndexMap<Vec<usize>, Vec<&'p Vec<Option<Cell<'a>>>>> {
    let mut by_columns: IndexMap<Vec<usize>, Vec<&Vec<Option<Cell<'a>>>>> = IndexMap::new();
    let mut present: Vec<usize> = Vec::new();
    // Rows mostly share the previous row's columns: that group is found without hashing.
    let mut last: Option<usize> = None;
    for p in pending.values() {
        if let Pending::Upsert(cells) = p {
            present.clear();
            present.extend(cells.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| i));
            let same = |g: &usize| by_columns.get_index(*g).is_some_and(|(k, _)| *k == present);
            let group = match last.filter(same) {
                Some(g) => g,
                None => {
                    let entry = by_columns.entry(present.clone());
                    let g = entry.index();
                    entry.or_default();
                    g
                }
            };
            by_columns[group].push(cells);
            last = Some(group);
        }
    }
    by_columns
}

/// The delete keys of one table, in first-seen order.
pub fn delete_keys<'p, 'a>(pending: &'p Keyed<'a>) -> Vec<&'p Key<'a>> {
    pending
        .values()
        .filter_map(|p| if let Pending::Delete(k) = p { Some(k) } else { None })
        .collect()
}
