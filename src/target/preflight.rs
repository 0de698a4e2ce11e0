//! Before streaming: does the target have what the source will send?
//!
//! For every table the source will send (a publication's tables, a MySQL database's tables)
//! the target schema must have a table of that name (matched as the applier matches it:
//! exactly, else case-insensitively) with a primary key, a column for every source column,
//! key columns the source sends, no `NOT NULL` column without a default that the source
//! leaves empty, and column types a value can pass between. Each problem names the table,
//! the column and the fix; all of them are reported at once, at start, instead of one by one
//! when the first row arrives, possibly hours later.
//!
//! Types are compared by family (number, text, boolean, date/time, JSON, binary, UUID, array):
//! only pairs whose values cannot convert are problems (a boolean into an integer, a date
//! into JSON, bytes into a number); anything into a text column is fine.

use std::fmt;

use super::schema::{Schema, Table};

/// A table as the source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    /// The name its rows carry (`orders`; `schema.orders` where the source qualifies it).
    pub name: String,
    /// Its columns, with their SQL types as the source writes them.
    pub columns: Vec<(String, String)>,
    /// Its primary key columns, in key order (empty when it has none).
    pub key: Vec<String>,
}

/// Each source table's key columns, by the name its rows carry (to name a failing row).
pub fn source_keys(tables: &[SourceTable]) -> std::collections::HashMap<String, Vec<String>> {
    tables.iter().map(|t| (t.name.clone(), t.key.clone())).collect()
}

/// One thing the target lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No such table.
    MissingTable {
        /// The source table.
        table: String,
    },
    /// The table has no primary key.
    NoPrimaryKey {
        /// The target table.
        table: String,
    },
    /// Source columns the target table lacks.
    MissingColumns {
        /// The target table.
        table: String,
        /// The columns.
        columns: Vec<String>,
    },
    /// A key column the source does not send.
    KeyNotSent {
        /// The target table.
        table: String,
        /// The column.
        column: String,
    },
    /// A `NOT NULL` column without a default that no source column fills.
    RequiredNotSent {
        /// The target table.
        table: String,
        /// The column.
        column: String,
    },
    /// Types whose values cannot convert.
    Incompatible {
        /// The target table.
        table: String,
        /// The column.
        column: String,
        /// The source's type.
        source: String,
        /// The target's type.
        target: String,
    },
    /// A table the userscript configures that the target lacks.
    ScriptTable {
        /// As the script names it.
        table: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingTable { table } => write!(
                f,
                "table {table:?} does not exist on the target: create it (replicator does not \
                 copy DDL), or take it out of what the source sends"
            ),
            Problem::NoPrimaryKey { table } => write!(
                f,
                "table {table:?} has no primary key on the target: add one (ALTER TABLE … ADD \
                 PRIMARY KEY); rows are written and deleted by key"
            ),
            Problem::MissingColumns { table, columns } => write!(
                f,
                "table {table:?} lacks column{} {} that the source sends: add {} to the target \
                 table, or drop {} in a --userscript",
                if columns.len() == 1 { "" } else { "s" },
                quoted(columns),
                if columns.len() == 1 { "it" } else { "them" },
                if columns.len() == 1 { "it" } else { "them" },
            ),
            Problem::KeyNotSent { table, column } => write!(
                f,
                "table {table:?}: primary key column {column:?} has no source column: rows \
                 could not be matched by key; give the target the source's key"
            ),
            Problem::RequiredNotSent { table, column } => write!(
                f,
                "table {table:?}: column {column:?} is NOT NULL without a default, and the \
                 source has no such column: every insert would fail; give it a default or \
                 allow NULL"
            ),
            Problem::Incompatible { table, column, source, target } => write!(
                f,
                "table {table:?}: column {column:?} is {source} on the source but {target} on \
                 the target, and such values do not convert: change the target column's type \
                 (or convert the values in a --userscript)"
            ),
            Problem::ScriptTable { table } => write!(
                f,
                "the userscript configures table {table:?}, which does not exist in the \
                 target schema: create it, or fix the name in configureTargetTables"
            ),
        }
    }
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// What every problem of `source` against `target` is, in table order.
pub fn compare(source: &[SourceTable], target: &Schema) -> Vec<Problem> {
    let mut problems = Vec::new();
    for table in source {
        let Some(found) = target.table(&table.name) else {
            problems.push(Problem::MissingTable { table: table.name.clone() });
            continue;
        };
        compare_table(table, found, &mut problems);
    }
    problems
}

fn compare_table(source: &SourceTable, target: &Table, problems: &mut Vec<Problem>) {
    let name = || target.name.clone();
    if target.key.is_empty() {
        problems.push(Problem::NoPrimaryKey { table: name() });
    }
    let mut missing = Vec::new();
    let mut sent = vec![false; target.columns.len()];
    for (column, source_type) in &source.columns {
        let Some((i, t)) = target.column(column) else {
            missing.push(column.clone());
            continue;
        };
        sent[i] = true;
        if !t.generated && !convertible(family(source_type), family(&t.sql_type)) {
            problems.push(Problem::Incompatible {
                table: name(),
                column: t.name.clone(),
                source: source_type.clone(),
                target: t.sql_type.clone(),
            });
        }
    }
    if !missing.is_empty() {
        problems.push(Problem::MissingColumns { table: name(), columns: missing });
    }
    for (i, column) in target.columns.iter().enumerate() {
        if sent[i] || column.generated {
            continue;
        }
        if column.key_position.is_some() {
            problems.push(Problem::KeyNotSent { table: name(), column: column.name.clone() });
        } else if !column.nullable && column.default.is_none() {
            problems.push(Problem::RequiredNotSent { table: name(), column: column.name.clone() });
        }
    }
}

/// Families of SQL types, as far as values passing between them go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Number,
    Text,
    Bool,
    Temporal,
    Json,
    Binary,
    Uuid,
    Array,
    /// Anything else: not checked.
    Other,
}

/// The family of a PostgreSQL (`format_type`) or MySQL (`COLUMN_TYPE`) type name.
fn family(sql_type: &str) -> Family {
    let t = sql_type.trim().to_ascii_lowercase();
    if t.ends_with("[]") {
        return Family::Array;
    }
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    match base {
        "json" | "jsonb" => Family::Json,
        "bytea" | "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => {
            Family::Binary
        }
        "boolean" | "bool" => Family::Bool,
        "smallint" | "integer" | "int" | "bigint" | "tinyint" | "mediumint" | "numeric"
        | "decimal" | "real" | "double" | "float" | "int2" | "int4" | "int8" | "float4"
        | "float8" | "money" | "year" => Family::Number,
        "date" | "time" | "timestamp" | "datetime" | "timetz" | "timestamptz" | "interval" => {
            Family::Temporal
        }
        "uuid" => Family::Uuid,
        "text" | "varchar" | "character" | "char" | "tinytext" | "mediumtext" | "longtext"
        | "enum" | "set" | "citext" | "name" => Family::Text,
        _ => Family::Other,
    }
}

/// Values of the `source` family can be written into a `target` column.
fn convertible(source: Family, target: Family) -> bool {
    use Family::*;
    if source == target || matches!(source, Other | Text) || matches!(target, Other | Text) {
        return true;
    }
    match target {
        // MySQL's TINYINT(1) booleans arrive as 0/1, which a boolean column takes.
        Bool => source == Number,
        Number | Temporal | Uuid => false,
        Json => matches!(source, Number | Array),
        Binary => false,
        Array => false,
        Text | Other => true,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::target::schema::Column;

    fn column(name: &str, sql_type: &str, key: Option<usize>, nullable: bool) -> Column {
        Column { nullable, json: false, ..Column::sample(name, sql_type, key) }
    }

    fn target() -> Schema {
        let mut tables = BTreeMap::new();
        let mut orders = Table {
            name: "Orders".into(),
            columns: vec![
                column("id", "bigint", Some(0), false),
                column("total", "numeric(12,2)", None, true),
                column("paid", "integer", None, true),
                column("placed", "jsonb", None, true),
                column("region", "text", None, false),
                column("note", "text", None, false),
            ],
            key: vec![],
        };
        orders.columns[5].default = Some("''::text".into());
        orders.order_key();
        tables.insert("Orders".into(), orders);
        tables.insert(
            "logs".into(),
            Table {
                name: "logs".into(),
                columns: vec![column("id", "int", None, true)],
                key: vec![],
            },
        );
        Schema { name: "public".into(), tables, ..Schema::default() }
    }

    fn source(name: &str, columns: &[(&str, &str)]) -> SourceTable {
        SourceTable {
            name: name.into(),
            columns: columns.iter().map(|(c, t)| (c.to_string(), t.to_string())).collect(),
            key: vec!["id".into()],
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = compare(
            &[
                source(
                    "orders",
                    &[
                        ("id", "bigint"),
                        ("total", "numeric(12,2)"),
                        ("paid", "boolean"),
                        ("placed", "timestamp with time zone"),
                        ("extra", "text"),
                        ("more", "int"),
                    ],
                ),
                source("logs", &[("id", "integer")]),
                source("gone", &[("id", "integer")]),
            ],
            &target(),
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 6, "{text:#?}");
        assert!(
            text[0].contains(r#"column "paid" is boolean on the source but integer"#),
            "{}",
            text[0]
        );
        assert!(
            text[1]
                .contains(r#"column "placed" is timestamp with time zone on the source but jsonb"#)
        );
        assert!(
            text[2].contains(r#"lacks columns "extra", "more" that the source sends"#),
            "{}",
            text[2]
        );
        assert!(
            text[3].contains(r#"column "region" is NOT NULL without a default"#),
            "{}",
            text[3]
        );
        assert!(text[4].contains(r#"table "logs" has no primary key"#), "{}", text[4]);
        assert!(text[5].contains(r#"table "gone" does not exist on the target"#), "{}", text[5]);
    }

    #[test]
    fn a_matching_target_has_no_problems() {
        let problems = compare(
            &[source(
                "orders",
                &[
                    ("ID", "int(11)"),
                    ("total", "decimal(12,2)"),
                    ("paid", "tinyint(1)"),
                    ("placed", "longtext"),
                    ("region", "varchar(10)"),
                ],
            )],
            &target(),
        );
        assert_eq!(problems, []);
    }

    #[test]
    fn families_and_conversions() {
        assert_eq!(family("character varying(20)"), Family::Text);
        assert_eq!(family("timestamp(6) with time zone"), Family::Temporal);
        assert_eq!(family("integer[]"), Family::Array);
        assert_eq!(family("bigint unsigned"), Family::Number);
        assert_eq!(family("inet"), Family::Other);
        assert!(convertible(Family::Number, Family::Json));
        assert!(convertible(Family::Json, Family::Text));
        assert!(!convertible(Family::Bool, Family::Json), "t/f is not JSON");
        assert!(!convertible(Family::Binary, Family::Number));
        assert!(convertible(Family::Number, Family::Bool));
    }
}
