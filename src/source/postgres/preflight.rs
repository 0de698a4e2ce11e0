//! Checks before streaming, over an ordinary connection: the server writes logical WAL, the
//! publication exists, the slot exists and uses pgoutput (created with `--createSlot`), and
//! the user may replicate. Each failure is one message that says how to fix it.

use tokio_postgres::GenericClient;

use crate::target::preflight::SourceTable;
use crate::types::position::PgLsn;

/// A source setting that prevents replication, with its fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// `wal_level` is not `logical`.
    #[error(
        "the source's wal_level is {0:?}, logical replication needs \"logical\": run \
         ALTER SYSTEM SET wal_level = logical; (or set it in postgresql.conf) and restart PostgreSQL"
    )]
    WalLevel(String),
    /// The user lacks REPLICATION.
    #[error(
        "user {0:?} may not replicate: run ALTER ROLE \"{0}\" WITH REPLICATION; as a superuser"
    )]
    NoReplication(String),
    /// The publication is missing.
    #[error(
        "publication {0:?} does not exist on the source: create it, e.g. \
         CREATE PUBLICATION \"{0}\" FOR ALL TABLES; (or FOR TABLE …), and pass its name with --publicationName"
    )]
    NoPublication(String),
    /// The publication publishes nothing.
    #[error(
        "publication {0:?} publishes no tables, so there is nothing to replicate: add them \
         (ALTER PUBLICATION \"{0}\" ADD TABLE …;) or create it FOR ALL TABLES"
    )]
    EmptyPublication(String),
    /// The slot is missing and may not be created.
    #[error(
        "replication slot {0:?} does not exist: pass --createSlot to let replicator create it, or run \
         SELECT pg_create_logical_replication_slot('{0}', 'pgoutput');"
    )]
    NoSlot(String),
    /// The slot uses another output plugin.
    #[error(
        "replication slot {slot:?} uses plugin {plugin:?}, replicator reads pgoutput: drop it with \
         SELECT pg_drop_replication_slot('{slot}'); and create it again (or pass --createSlot)"
    )]
    WrongPlugin {
        /// The slot.
        slot: String,
        /// Its plugin.
        plugin: String,
    },
    /// The slot belongs to another database.
    #[error(
        "replication slot {slot:?} belongs to database {database:?}, but --sourceConn connects to {current:?}"
    )]
    WrongDatabase {
        /// The slot.
        slot: String,
        /// Its database.
        database: String,
        /// The connection's database.
        current: String,
    },
    /// Tables with the same name in several schemas, without a userscript to route them.
    #[error(
        "publication {publication:?} has tables with the same name in several schemas ({tables}): \
         they would all write the same target table. Publish only one of each, or route them \
         apart with a --userscript (such tables then reach it as schema.table)"
    )]
    SameNames {
        /// The publication.
        publication: String,
        /// `a.t and b.t; …`.
        tables: String,
    },
    /// A query failed.
    #[error("checking the source failed: {0}")]
    Query(String),
}

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Where the slot says the consumer has confirmed up to.
    pub confirmed: Option<PgLsn>,
    /// The slot was created just now.
    pub created_slot: bool,
}

/// `wal_level` must be `logical`.
pub fn check_wal_level(value: &str) -> Result<(), PreflightError> {
    if value == "logical" { Ok(()) } else { Err(PreflightError::WalLevel(value.to_owned())) }
}

/// A failed query, as a preflight error.
pub(crate) fn query(e: tokio_postgres::Error) -> PreflightError {
    PreflightError::Query(e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned()))
}

/// Runs every check, creating the slot when it is missing and `create_slot` is set.
pub async fn preflight(
    client: &impl GenericClient,
    publication: &str,
    slot: &str,
    create_slot: bool,
) -> Result<Ready, PreflightError> {
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await.map_err(query)?.get(0);
    check_wal_level(&wal_level)?;
    let row = client
        .query_one("SELECT current_user::text, current_database()::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(query)?;
    let (user, current, may_replicate): (String, String, bool) =
        (row.get(0), row.get(1), row.get(2));
    if !may_replicate {
        return Err(PreflightError::NoReplication(user));
    }
    if client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&publication])
        .await
        .map_err(query)?
        .is_none()
    {
        return Err(PreflightError::NoPublication(publication.to_owned()));
    }
    let published: i64 = client
        .query_one("SELECT count(*) FROM pg_publication_tables WHERE pubname = $1", &[&publication])
        .await
        .map_err(query)?
        .get(0);
    if published == 0 {
        return Err(PreflightError::EmptyPublication(publication.to_owned()));
    }
    let found = client
        .query_opt(
            "SELECT plugin::text, database::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(query)?;
    let Some(found) = found else {
        if !create_slot {
            return Err(PreflightError::NoSlot(slot.to_owned()));
        }
        let lsn: String = client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .map_err(query)?
            .get(0);
        tracing::info!(slot, lsn = %lsn, "created replication slot");
        return Ok(Ready { confirmed: lsn.parse().ok(), created_slot: true });
    };
    let (plugin, database, confirmed): (Option<String>, Option<String>, Option<String>) =
        (found.get(0), found.get(1), found.get(2));
    let plugin = plugin.unwrap_or_else(|| "(physical)".into());
    if plugin != "pgoutput" {
        return Err(PreflightError::WrongPlugin { slot: slot.to_owned(), plugin });
    }
    let database = database.unwrap_or_default();
    if database != current {
        return Err(PreflightError::WrongDatabase { slot: slot.to_owned(), database, current });
    }
    Ok(Ready { confirmed: confirmed.and_then(|c| c.parse().ok()), created_slot: false })
}

/// The publication's tables as the target will see them: each with the columns pgoutput
/// sends (its column list, if it has one; generated columns are not sent), named `table`, or
/// `schema.table` for the names in `qualify`.
pub async fn published_tables(
    client: &impl GenericClient,
    publication: &str,
    qualify: &std::collections::HashSet<String>,
) -> Result<Vec<SourceTable>, PreflightError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(query)?
        .get(0);
    // PostgreSQL 15 added column lists to publications.
    let listed = if version >= 150000 {
        "AND (pt.attnames IS NULL OR a.attname = ANY (pt.attnames))"
    } else {
        ""
    };
    let sql = format!(
        "SELECT pt.schemaname::text, pt.tablename::text, a.attname::text, \
                format_type(a.atttypid, a.atttypmod), \
                array_position(i.indkey::int2[], a.attnum)::int4 \
         FROM pg_publication_tables pt \
         JOIN pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
              AND a.attgenerated = '' {listed} \
         LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
         WHERE pt.pubname = $1 ORDER BY 1, 2, a.attnum"
    );
    let rows = client.query(&sql, &[&publication]).await.map_err(query)?;
    let mut tables: Vec<SourceTable> = Vec::new();
    let mut keys: Vec<Vec<(i32, String)>> = Vec::new();
    for row in rows {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let name = if qualify.contains(&table) { format!("{schema}.{table}") } else { table };
        if tables.last().is_none_or(|t| t.name != name) {
            tables.push(SourceTable { name, columns: Vec::new(), key: Vec::new() });
            keys.push(Vec::new());
        }
        let column: String = row.get(2);
        if let (Some(position), Some(key)) = (row.get::<_, Option<i32>>(4), keys.last_mut()) {
            key.push((position, column.clone()));
        }
        if let Some(t) = tables.last_mut() {
            t.columns.push((column, row.get(3)));
        }
    }
    for (table, mut key) in tables.iter_mut().zip(keys) {
        key.sort();
        table.key = key.into_iter().map(|(_, c)| c).collect();
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_level_message_names_the_fix() {
        assert_eq!(check_wal_level("logical"), Ok(()));
        let err = check_wal_level("replica").expect_err("replica").to_string();
        assert!(
            err.contains("wal_level is \"replica\"")
                && err.contains("ALTER SYSTEM SET wal_level = logical"),
            "{err}"
        );
    }
}
