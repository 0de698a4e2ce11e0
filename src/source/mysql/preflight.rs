//! Checks the source server before streaming: each failure is one message with its fix.

use mysql_async::prelude::Queryable;

use super::Flavor;
use crate::target::preflight::SourceTable;

/// Why the source cannot be replicated as it is configured.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// A server setting is wrong.
    #[error("source {flavor} {what}")]
    Setting {
        /// MySQL or MariaDB.
        flavor: Flavor,
        /// What is wrong and how to fix it.
        what: String,
    },
    /// The user lacks a privilege replication needs.
    #[error(
        "source user {user:?} may not read the binary log ({message}): GRANT {grant} ON *.* TO \
         the user"
    )]
    Privilege {
        /// The user.
        user: String,
        /// The server's message.
        message: String,
        /// The grant that fixes it for this flavor.
        grant: &'static str,
    },
    /// The database named in --sourceConn does not exist.
    #[error("--sourceConn names database {0:?}, which does not exist on the source")]
    NoDatabase(String),
    /// A query failed.
    #[error("checking the source failed")]
    Query(#[from] mysql_async::Error),
}

/// What the checks found.
#[derive(Debug, Clone)]
pub struct Ready {
    /// MySQL or MariaDB.
    pub flavor: Flavor,
    /// `SELECT VERSION()`.
    pub version: String,
    /// MariaDB: `@@gtid_binlog_pos`; MySQL: `@@gtid_executed` (for messages).
    pub current_position: String,
}

async fn variable(
    conn: &mut mysql_async::Conn,
    name: &str,
) -> Result<Option<String>, mysql_async::Error> {
    // SHOW cannot be prepared; `name` is one of this module's constants.
    let row: Option<(String, String)> =
        conn.query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'")).await?;
    Ok(row.map(|(_, v)| v))
}

/// Runs every check; `fetch_metadata` is `--fetchMetadata`, `database` the source database.
pub async fn preflight(
    conn: &mut mysql_async::Conn,
    user: &str,
    database: &str,
    fetch_metadata: bool,
) -> Result<Ready, PreflightError> {
    let version: String = conn.query_first("SELECT VERSION()").await?.unwrap_or_default();
    let flavor = Flavor::from_version(&version);
    let setting = |what: String| PreflightError::Setting { flavor, what };
    let config_hint = "in the [mysqld] section of the server's configuration file and restart it";

    let log_bin = variable(conn, "log_bin").await?.unwrap_or_default();
    if !log_bin.eq_ignore_ascii_case("ON") && log_bin != "1" {
        return Err(setting(format!(
            "has binary logging off (log_bin={log_bin}): set log_bin=mysql-bin {config_hint}"
        )));
    }
    let format = variable(conn, "binlog_format").await?.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(setting(format!(
            "has binlog_format={format}; replication needs ROW: run SET GLOBAL binlog_format = \
             'ROW' and set binlog_format=ROW {config_hint} (open sessions keep their format until \
             they reconnect)"
        )));
    }
    let image = variable(conn, "binlog_row_image").await?.unwrap_or_default();
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(setting(format!(
            "has binlog_row_image={image}; replication needs FULL (every column in every row \
             event): run SET GLOBAL binlog_row_image = 'FULL' and set binlog_row_image=FULL \
             {config_hint}"
        )));
    }
    match flavor {
        Flavor::MySql => {
            let mode = variable(conn, "gtid_mode").await?.unwrap_or_else(|| "missing".into());
            if !mode.eq_ignore_ascii_case("ON") {
                return Err(setting(format!(
                    "has gtid_mode={mode}; replication needs GTIDs: set enforce_gtid_consistency=ON \
                     and gtid_mode=ON (online: MySQL's 'Enabling GTID Transactions Online' steps)"
                )));
            }
            let options = variable(conn, "binlog_row_value_options").await?.unwrap_or_default();
            if options.to_ascii_uppercase().contains("PARTIAL_JSON") {
                return Err(setting(
                    "writes partial JSON updates (binlog_row_value_options=PARTIAL_JSON), which \
                     cannot be applied elsewhere: SET GLOBAL binlog_row_value_options = ''"
                        .into(),
                ));
            }
        }
        Flavor::MariaDb => {
            let compress = variable(conn, "log_bin_compress").await?.unwrap_or_default();
            if compress.eq_ignore_ascii_case("ON") {
                return Err(setting(format!(
                    "compresses its binlog events (log_bin_compress=ON), which replicator does not \
                     decode: run SET GLOBAL log_bin_compress = OFF and set log_bin_compress=OFF \
                     {config_hint}"
                )));
            }
        }
    }
    if !fetch_metadata {
        let metadata = variable(conn, "binlog_row_metadata").await?;
        match metadata {
            Some(m) if m.eq_ignore_ascii_case("FULL") => {}
            Some(m) => {
                return Err(setting(format!(
                    "has binlog_row_metadata={m}: column names are not in the binlog. Run SET \
                     GLOBAL binlog_row_metadata = 'FULL' and set binlog_row_metadata=FULL \
                     {config_hint}, or pass --fetchMetadata to read them from information_schema"
                )));
            }
            None => {
                return Err(setting(
                    "is too old to write column names into the binlog (no binlog_row_metadata: \
                     MySQL 8.0.1 and MariaDB 10.5 have it): pass --fetchMetadata to read them from \
                     information_schema"
                        .into(),
                ));
            }
        }
    }
    // Privileges: do what replication does.
    if let Err(e) = conn.query_drop("SHOW BINARY LOGS").await {
        return match e {
            mysql_async::Error::Server(server) => Err(PreflightError::Privilege {
                user: user.to_owned(),
                message: server.message,
                grant: match flavor {
                    Flavor::MySql => "REPLICATION CLIENT, REPLICATION SLAVE",
                    Flavor::MariaDb => "BINLOG MONITOR, REPLICATION SLAVE",
                },
            }),
            other => Err(other.into()),
        };
    }
    let exists: Option<String> = conn
        .exec_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (database,),
        )
        .await?;
    if exists.is_none() {
        return Err(PreflightError::NoDatabase(database.to_owned()));
    }
    let current_position = match flavor {
        Flavor::MySql => variable(conn, "gtid_executed").await?,
        Flavor::MariaDb => variable(conn, "gtid_binlog_pos").await?,
    }
    .unwrap_or_default();
    Ok(Ready { flavor, version, current_position })
}

/// The database's tables as the target will see them, with their columns (`COLUMN_TYPE`)
/// and primary keys, read as the MySQL target reads a schema.
pub async fn database_tables(
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<Vec<SourceTable>, PreflightError> {
    let schema = crate::target::mysql::introspect(conn, database).await?;
    Ok(schema
        .tables
        .into_values()
        .map(|t| SourceTable {
            key: t.key_names(),
            columns: t.columns.into_iter().map(|c| (c.name, c.sql_type)).collect(),
            name: t.name,
        })
        .collect())
}
