//! MySQL and MariaDB targets: introspection and the batched applier.
//!
//! ```sql
//! INSERT INTO `db`.`t` (`id`, `v`) VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE `v` = VALUES(`v`)
//! DELETE FROM `db`.`t` WHERE (`id`) IN ((?), (?))
//! ```
//!
//! Rows are chunked so no statement has more placeholders than the budget (MySQL allows
//! 65,535). Values travel as text, which the server converts to each column's type, with
//! three exceptions fixed here: booleans become 1/0, RFC 3339 timestamps lose their `T` and
//! UTC `Z` (MySQL's DATETIME syntax), and `\x` hex becomes bytes for binary columns.

use std::collections::BTreeMap;

pub mod writer;

use mysql_async::prelude::Queryable;

use super::batch::{ApplyError, Cell, delete_keys, rounds, table_order, upserts_by_columns};
use super::schema::{Column, ColumnKind, Schema, Table};
use crate::types::Value;
use crate::types::mutation::{Mutation, Op};

/// MySQL's limit on placeholders in one statement.
pub const MAX_PLACEHOLDERS: usize = 65_535;

/// `` `name` ``, with embedded backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The database `name` names: the exact spelling, else the only one equal ignoring case.
pub async fn database_named(
    conn: &mut impl Queryable,
    name: &str,
) -> Result<Option<String>, mysql_async::Error> {
    let names: Vec<String> = conn
        .exec(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE LOWER(SCHEMA_NAME) = LOWER(?)",
            (name,),
        )
        .await?;
    Ok(match names.as_slice() {
        [only] => Some(only.clone()),
        _ => names.iter().find(|n| *n == name).cloned(),
    })
}

/// Reads database `database` into a [`Schema`].
pub async fn introspect(
    conn: &mut impl Queryable,
    database: &str,
) -> Result<Schema, mysql_async::Error> {
    type Row = (String, String, String, String, String, Option<String>, String, Option<u64>);
    let rows: Vec<Row> = conn
        .exec(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.DATA_TYPE, c.EXTRA, c.COLUMN_DEFAULT, c.IS_NULLABLE, \
                    (SELECT s.SEQ_IN_INDEX FROM information_schema.STATISTICS s \
                      WHERE s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME \
                        AND s.COLUMN_NAME = c.COLUMN_NAME AND s.INDEX_NAME = 'PRIMARY') \
             FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
            (database,),
        )
        .await?;
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for (table, name, column_type, data_type, extra, default, nullable, seq) in rows {
        let data_type = data_type.to_ascii_lowercase();
        let column_type = column_type.to_ascii_lowercase();
        let kind = match data_type.as_str() {
            "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => {
                ColumnKind::Binary
            }
            "date" | "datetime" | "timestamp" | "time" => ColumnKind::Temporal,
            _ if column_type == "tinyint(1)" || column_type == "bit(1)" => ColumnKind::Bool,
            _ => ColumnKind::Text,
        };
        let entry = tables.entry(table.clone()).or_insert_with(|| Table {
            name: table,
            columns: Vec::new(),
            key: Vec::new(),
        });
        entry.columns.push(Column {
            name,
            json: data_type == "json",
            sql_type: column_type,
            key_position: seq.and_then(|s| usize::try_from(s).ok()).map(|s| s.saturating_sub(1)),
            generated: extra.to_ascii_uppercase().contains("GENERATED"),
            default,
            nullable: nullable.eq_ignore_ascii_case("YES"),
            kind,
        });
    }
    for table in tables.values_mut() {
        table.order_key();
    }
    let fks: Vec<(String, String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, REFERENCED_TABLE_NAME, DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND UNIQUE_CONSTRAINT_SCHEMA = ?",
            (database, database),
        )
        .await?;
    let cascading = fks
        .iter()
        .filter(|(_, _, rule)| matches!(rule.as_str(), "CASCADE" | "SET NULL" | "SET DEFAULT"))
        .map(|(_, parent, _)| parent.clone())
        .collect();
    let mut foreign_keys: Vec<(String, String)> =
        fks.into_iter().map(|(child, parent, _)| (child, parent)).collect();
    foreign_keys.sort();
    foreign_keys.dedup();
    Ok(Schema { name: database.to_owned(), tables, foreign_keys, cascading, label: String::new() })
}

/// A value as text MySQL parses for the column.
fn cell<'a>(value: &'a Value, column: &Column) -> Cell<'a> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
        Value::Number(s) => Some(s.as_str().into()),
        Value::String(s) if column.kind == ColumnKind::Bool => Some(match s.as_str() {
            "t" | "true" | "TRUE" | "True" => "1".into(),
            "f" | "false" | "FALSE" | "False" => "0".into(),
            other => other.into(),
        }),
        Value::String(s) if column.kind == ColumnKind::Temporal => {
            let t = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00")).unwrap_or(s);
            Some(t.replacen('T', " ", 1).into())
        }
        Value::String(s) => Some(s.as_str().into()),
        Value::Json(j) => Some(j.to_string().into()),
        Value::JsonText(s) => Some(s.as_str().into()),
        Value::Array(_) => Some(value.to_json().to_string().into()),
    }
}

/// One statement: SQL and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The target table.
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// The SQL.
    pub sql: String,
    /// Positional parameters.
    pub params: Vec<mysql_async::Value>,
    /// Rows it writes.
    pub rows: usize,
}

fn param(cell: &Cell, column: &Column) -> mysql_async::Value {
    match cell {
        None => mysql_async::Value::NULL,
        Some(text) if column.kind == ColumnKind::Binary && text.starts_with("\\x") => {
            let hex = &text[2..];
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            mysql_async::Value::Bytes(bytes.unwrap_or_else(|| text.as_bytes().to_vec()))
        }
        Some(text) => mysql_async::Value::Bytes(text.as_bytes().to_vec()),
    }
}

/// Plans the statements for `mutations` on `schema`, at most `budget` placeholders each.
pub fn plan<'a>(
    schema: &Schema,
    mutations: impl IntoIterator<Item = &'a Mutation>,
    collapse: impl Into<super::batch::Grouping>,
    budget: usize,
) -> Result<Vec<Statement>, ApplyError> {
    let rounds = rounds(schema, mutations, collapse, cell)?;
    let order = table_order(schema);
    let target = |t: &Table| format!("{}.{}", quote_ident(&schema.name), quote_ident(&t.name));
    let mut out = Vec::new();
    for round in rounds {
        for name in &order {
            let (Some(pending), Some(table)) = (round.get(name), schema.tables.get(name)) else {
                continue;
            };
            for (columns, rows) in upserts_by_columns(pending) {
                let names: Vec<String> =
                    columns.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
                let updates: Vec<String> = columns
                    .iter()
                    .filter(|i| !table.key.contains(i))
                    .map(|&i| format!("{0} = VALUES({0})", quote_ident(&table.columns[i].name)))
                    .collect();
                let update = if updates.is_empty() {
                    let k = quote_ident(&table.columns[table.key[0]].name);
                    format!("{k} = {k}")
                } else {
                    updates.join(", ")
                };
                let tuple = format!("({})", vec!["?"; columns.len()].join(", "));
                for chunk in rows.chunks((budget / columns.len().max(1)).max(1)) {
                    let sql = format!(
                        "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {update}",
                        target(table),
                        names.join(", "),
                        vec![tuple.as_str(); chunk.len()].join(", ")
                    );
                    let params = chunk
                        .iter()
                        .flat_map(|row| {
                            columns.iter().map(|&i| {
                                param(row[i].as_ref().unwrap_or(&None), &table.columns[i])
                            })
                        })
                        .collect();
                    out.push(Statement {
                        table: table.name.clone(),
                        op: Op::Upsert,
                        sql,
                        params,
                        rows: chunk.len(),
                    });
                }
            }
        }
        for name in order.iter().rev() {
            let (Some(pending), Some(table)) = (round.get(name), schema.tables.get(name)) else {
                continue;
            };
            let keys = delete_keys(pending);
            if keys.is_empty() {
                continue;
            }
            let names: Vec<String> =
                table.key.iter().map(|&i| quote_ident(&table.columns[i].name)).collect();
            let tuple = format!("({})", vec!["?"; table.key.len()].join(", "));
            for chunk in keys.chunks((budget / table.key.len()).max(1)) {
                let sql = format!(
                    "DELETE FROM {} WHERE ({}) IN ({})",
                    target(table),
                    names.join(", "),
                    vec![tuple.as_str(); chunk.len()].join(", ")
                );
                let params = chunk
                    .iter()
                    .flat_map(|key| {
                        key.iter()
                            .zip(&table.key)
                            .map(|(v, &i)| param(&Some(v.clone()), &table.columns[i]))
                    })
                    .collect();
                out.push(Statement {
                    table: table.name.clone(),
                    op: Op::Delete,
                    sql,
                    params,
                    rows: chunk.len(),
                });
            }
        }
    }
    Ok(out)
}

/// Runs the statements on `conn` (the caller's transaction), in order.
pub async fn execute(
    conn: &mut impl Queryable,
    statements: &[Statement],
) -> Result<(), ApplyError> {
    for s in statements {
        conn.exec_drop(s.sql.as_str(), s.params.clone()).await.map_err(|e| {
            let kind = crate::error::mysql_kind(&e);
            let (code, message) = match &e {
                mysql_async::Error::Server(se) => {
                    (Some(format!("MySQL error {}", se.code)), se.message.clone())
                }
                _ => (None, e.to_string()),
            };
            ApplyError::Database {
                table: s.table.clone(),
                message,
                code,
                kind,
                source: Box::new(e),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::mutation::row;

    fn column(name: &str, key: Option<usize>, kind: ColumnKind) -> Column {
        Column {
            name: name.into(),
            sql_type: "x".into(),
            key_position: key,
            generated: false,
            default: None,
            nullable: true,
            json: false,
            kind,
        }
    }

    fn schema() -> Schema {
        let mut tables = BTreeMap::new();
        tables.insert(
            "t".into(),
            Table {
                name: "t".into(),
                columns: vec![
                    column("id", Some(0), ColumnKind::Text),
                    column("flag", None, ColumnKind::Bool),
                    column("at", None, ColumnKind::Temporal),
                    column("blob", None, ColumnKind::Binary),
                ],
                key: vec![0],
            },
        );
        Schema { name: "shop".into(), tables, ..Schema::default() }
    }

    #[test]
    fn golden_sql_and_chunking_by_placeholder_budget() {
        let batch: Vec<Mutation> = (1..=5)
            .map(|i| {
                Mutation::upsert(
                    "t",
                    row([("id", Value::Number(i.to_string())), ("flag", Value::Bool(i % 2 == 0))]),
                )
            })
            .chain([Mutation::delete("t", row([("id", Value::Number("9".into()))]))])
            .collect();
        let statements = plan(&schema(), &batch, true, 4).expect("plan");
        assert_eq!(
            statements.len(),
            4,
            "5 upserts of 2 columns in chunks of 2 rows, then the delete"
        );
        assert_eq!(
            statements[0].sql,
            "INSERT INTO `shop`.`t` (`id`, `flag`) VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE `flag` = VALUES(`flag`)"
        );
        assert_eq!(statements[2].rows, 1);
        assert_eq!(statements[3].sql, "DELETE FROM `shop`.`t` WHERE (`id`) IN ((?))");
        assert_eq!(statements[0].params[1], mysql_async::Value::Bytes(b"0".to_vec()));
        assert_eq!(statements[0].params[3], mysql_async::Value::Bytes(b"1".to_vec()));
    }

    #[test]
    fn values_are_rendered_for_mysql() {
        let s = schema();
        let t = &s.tables["t"];
        assert_eq!(
            cell(&Value::String("2024-01-02T03:04:05.5Z".into()), &t.columns[2]).as_deref(),
            Some("2024-01-02 03:04:05.5")
        );
        assert_eq!(cell(&Value::String("t".into()), &t.columns[1]).as_deref(), Some("1"));
        assert_eq!(
            param(&Some("\\x00ff".into()), &t.columns[3]),
            mysql_async::Value::Bytes(vec![0, 255])
        );
        assert_eq!(param(&None, &t.columns[3]), mysql_async::Value::NULL);
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
