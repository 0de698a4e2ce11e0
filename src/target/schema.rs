//! The target's tables as replication needs them, whatever the dialect: columns in order,
//! primary keys in key order, types, defaults, generated columns, and foreign-key edges.

use std::collections::{BTreeMap, BTreeSet};

/// One target column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The name as the target spells it.
    pub name: String,
    /// The SQL type as `format_type` writes it (`bigint`, `numeric(12,2)`, `integer[]`; MySQL's `COLUMN_TYPE`).
    pub sql_type: String,
    /// Position in the primary key (0-based), if part of it.
    pub key_position: Option<usize>,
    /// Computed by the database: never written.
    pub generated: bool,
    /// The default expression, if any.
    pub default: Option<String>,
    /// NULL allowed.
    pub nullable: bool,
    /// A JSON or JSONB column: arrays and objects are stored as JSON text.
    pub json: bool,
    /// How values of this column are written (MySQL needs to know; PostgreSQL casts).
    pub kind: ColumnKind,
}

/// What kind of value a column holds, where the dialect's SQL needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnKind {
    /// Anything the database parses from text.
    #[default]
    Text,
    /// Binary (MySQL BLOB/BINARY): `\x`-prefixed hex is decoded to bytes.
    Binary,
    /// Boolean-like (MySQL TINYINT(1)/BIT(1)): true/false become 1/0.
    Bool,
    /// Date/time (MySQL): RFC 3339 text is written as `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    Temporal,
}

/// One target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its name as the target spells it.
    pub name: String,
    /// Columns in table order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order.
    pub key: Vec<usize>,
}

impl Table {
    /// The column a source column name maps to: the exact name, else the one whose name
    /// matches case-insensitively (when only one does).
    pub fn column(&self, name: &str) -> Option<(usize, &Column)> {
        if let Some(found) = self.columns.iter().enumerate().find(|(_, c)| c.name == name) {
            return Some(found);
        }
        let mut matches =
            self.columns.iter().enumerate().filter(|(_, c)| c.name.eq_ignore_ascii_case(name));
        match (matches.next(), matches.next()) {
            (Some(found), None) => Some(found),
            _ => None,
        }
    }
}

/// Every table of one target schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// The schema (namespace) name.
    pub name: String,
    /// Tables by name.
    pub tables: BTreeMap<String, Table>,
    /// Foreign keys within the schema, `(child, parent)`.
    pub foreign_keys: Vec<(String, String)>,
}

impl Schema {
    /// The table a source table name maps to: exact, else the one unique case-insensitive match.
    pub fn table(&self, name: &str) -> Option<&Table> {
        if let Some(t) = self.tables.get(name) {
            return Some(t);
        }
        let mut matches = self.tables.values().filter(|t| t.name.eq_ignore_ascii_case(name));
        match (matches.next(), matches.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }

    /// Table names.
    pub fn names(&self) -> BTreeSet<String> {
        self.tables.keys().cloned().collect()
    }
}
