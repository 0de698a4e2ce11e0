//! The target's tables as replication needs them, whatever the dialect: columns in order,
//! primary keys in key order, types, defaults, generated columns, and foreign-key edges.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::Row;

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

impl Column {
    /// A plain column for tests: nullable unless part of the key, JSON when `jsonb`.
    #[cfg(test)]
    pub fn sample(name: &str, sql_type: &str, key_position: Option<usize>) -> Column {
        Column {
            name: name.into(),
            sql_type: sql_type.into(),
            key_position,
            generated: false,
            default: None,
            nullable: key_position.is_none(),
            json: sql_type == "jsonb",
            kind: ColumnKind::Text,
        }
    }
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

/// The values of columns `names` in `row` (matched exactly, else case-insensitively) as
/// key text; an absent column or NULL gives an empty string.
pub fn values_for(names: &[String], row: &Row) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            row.get(name.as_str())
                .or_else(|| row.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
                .and_then(|v| v.as_key_text())
                .unwrap_or_default()
        })
        .collect()
}

impl Table {
    /// Sets `key` from the columns' key positions (after introspection filled them).
    pub fn order_key(&mut self) {
        let mut key: Vec<(usize, usize)> = self
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.key_position.map(|p| (p, i)))
            .collect();
        key.sort_unstable();
        self.key = key.into_iter().map(|(_, i)| i).collect();
    }

    /// The primary key column names, in key order.
    pub fn key_names(&self) -> Vec<String> {
        self.key.iter().map(|&i| self.columns[i].name.clone()).collect()
    }

    /// The primary key values of `row`, in key order.
    pub fn key_values(&self, row: &Row) -> Vec<String> {
        values_for(&self.key_names(), row)
    }

    /// The column a source column name maps to: the exact name, else the one whose name
    /// matches case-insensitively (when only one does).
    pub fn column(&self, name: &str) -> Option<(usize, &Column)> {
        self.column_near(name, usize::MAX)
    }

    /// [`Table::column`], looking at `position` first: source rows mostly list their columns
    /// in the target's order, and a batch asks once per value.
    pub fn column_near(&self, name: &str, position: usize) -> Option<(usize, &Column)> {
        if let Some(column) = self.columns.get(position)
            && column.name == name
        {
            return Some((position, column));
        }
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
    /// Tables whose deletes change rows of other tables: parents of a foreign key with
    /// `ON DELETE CASCADE`, `SET NULL` or `SET DEFAULT`.
    pub cascading: BTreeSet<String>,
    /// The schema as metric labels name it (`db.public`, as `--targetSchema`); empty: `name`.
    pub label: String,
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

    /// The schema's name in metric labels.
    pub fn label(&self) -> &str {
        if self.label.is_empty() { &self.name } else { &self.label }
    }

    /// Table names.
    pub fn names(&self) -> BTreeSet<String> {
        self.tables.keys().cloned().collect()
    }
}
