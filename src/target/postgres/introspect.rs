//! Reads a PostgreSQL/CockroachDB schema into [`Schema`].

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

pub use crate::target::schema::{Column, ColumnKind, Schema, Table};

/// Reads schema `schema` of the connected database.
pub async fn introspect(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Schema, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                    a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid), NOT a.attnotnull, \
                    (array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1))::int4, \
                    t.typname::text IN ('json', 'jsonb') \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
             ORDER BY c.relname, a.attnum",
            &[&schema],
        )
        .await?;
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for row in rows {
        let table: String = row.get(0);
        let key_position: Option<i32> = row.get(6);
        let entry = tables.entry(table.clone()).or_insert_with(|| Table {
            name: table,
            columns: Vec::new(),
            key: Vec::new(),
        });
        entry.columns.push(Column {
            name: row.get(1),
            sql_type: row.get(2),
            generated: row.get(3),
            default: row.get(4),
            nullable: row.get(5),
            key_position: key_position.and_then(|p| usize::try_from(p).ok()),
            json: row.get(7),
            kind: ColumnKind::Text,
        });
    }
    for table in tables.values_mut() {
        table.order_key();
    }
    let fks = client
        .query(
            "SELECT cl.relname::text, pl.relname::text, co.confdeltype IN ('c', 'n', 'd') FROM pg_constraint co \
             JOIN pg_class cl ON cl.oid = co.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace \
             JOIN pg_class pl ON pl.oid = co.confrelid JOIN pg_namespace pn ON pn.oid = pl.relnamespace \
             WHERE co.contype = 'f' AND n.nspname = $1 AND pn.nspname = $1",
            &[&schema],
        )
        .await?;
    let foreign_keys = fks.iter().map(|r| (r.get(0), r.get(1))).collect();
    let cascading = fks.iter().filter(|r| r.get::<_, bool>(2)).map(|r| r.get(1)).collect();
    Ok(Schema { name: schema.to_owned(), tables, foreign_keys, cascading, label: String::new() })
}

/// The connection's database.
pub async fn current_database(
    client: &impl GenericClient,
) -> Result<String, tokio_postgres::Error> {
    Ok(client.query_one("SELECT current_database()::text", &[]).await?.get(0))
}

/// Schema `schema` exists in the connection's database.
pub async fn schema_exists(
    client: &impl GenericClient,
    schema: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?
        .is_some())
}

/// The schema of the connection's database that `name` names: the exact spelling, else the
/// only one equal ignoring case.
pub async fn schema_named(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE lower(nspname) = lower($1)              ORDER BY nspname = $1 DESC",
            &[&name],
        )
        .await?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(match names.as_slice() {
        [only] => Some(only.clone()),
        [first, ..] if first == name => Some(first.clone()),
        _ => None,
    })
}

/// Table (or view) `schema.table` exists.
pub async fn table_exists(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v')",
            &[&schema, &table],
        )
        .await?
        .is_some())
}

/// The primary key columns of `schema.table`, in key order (empty without one).
pub async fn primary_key(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
             WHERE i.indisprimary AND n.nspname = $1 AND c.relname = $2 \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&schema, &table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
