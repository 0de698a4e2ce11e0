//! PostgreSQL and CockroachDB targets: introspection, the batched applier, its value codec,
//! the [`writer::PgTarget`] the sequencer writes through, and the userscript's view of the
//! target transaction.

pub mod apply;
pub mod codec;
pub mod introspect;
pub mod ops;
mod script_host;
pub mod writer;

pub use script_host::{PgScriptHost, Writer, rolled_back, row_writer};

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("orders"), "\"orders\"");
        assert_eq!(super::quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}

/// Which server a PostgreSQL-protocol connection reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL: one database per connection.
    Postgres,
    /// CockroachDB: a connection may write to any database.
    Cockroach,
}

/// Asks the server what it is, and checks that `db.schema` (`--targetSchema`, or a
/// `db.schema` `--stagingSchema`) is writable through this connection: PostgreSQL cannot
/// write across databases, so `db` must be the connection's database.
pub async fn check_database(
    client: &impl tokio_postgres::GenericClient,
    flag: &str,
    database: &str,
    schema: &str,
) -> Result<Server, String> {
    let version: String =
        client.query_one("SELECT version()", &[]).await.map_err(|e| e.to_string())?.get(0);
    if version.contains("CockroachDB") {
        return Ok(Server::Cockroach);
    }
    let current: String =
        client.query_one("SELECT current_database()", &[]).await.map_err(|e| e.to_string())?.get(0);
    if current != database {
        return Err(format!(
            "--{flag} {database}.{schema} names database {database:?}, but the connection is to database \
             {current:?}, and PostgreSQL cannot write across databases: use --{flag} {current}.{schema}, \
             or connect to {database}"
        ));
    }
    Ok(Server::Postgres)
}
