//! Connections: the URLs users pass (their passwords kept secret), the wire protocol a URL
//! names, TLS per `sslmode`, and the clients on top, per protocol.
//!
//! - [`ConnString`] ([`url`]): a connection URL that shows itself only redacted.
//! - [`Protocol`]: which protocol a URL's scheme names.
//! - [`postgres`]: libpq's URL parameters, rustls, tokio-postgres clients and the raw stream
//!   the replication protocol runs on (PostgreSQL sources, CockroachDB/PostgreSQL targets,
//!   staging).
//! - [`mysql`]: MOLT's and plain MySQL URLs, rustls, mysql_async connections.

use std::fmt;

pub mod mysql;
pub mod pool;
pub mod postgres;
pub mod url;

pub use url::ConnString;

/// How TLS is negotiated (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it; the certificate is not checked (`allow`, `prefer`).
    Prefer,
    /// TLS or fail; the certificate is not checked.
    Require,
    /// TLS, the chain checked against the root certificates.
    VerifyCa,
    /// TLS, the chain checked and the certificate must name the host.
    VerifyFull,
}

/// The wire protocol a connection string names with its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `postgres://` or `postgresql://`: PostgreSQL or CockroachDB.
    Postgres,
    /// `mysql://` (also `mariadb://`): MySQL or MariaDB.
    MySql,
    /// `oracle://`: Oracle.
    Oracle,
}

impl Protocol {
    /// The protocol for a URL scheme, case-insensitively; `None` when the scheme is not one we
    /// speak.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            "oracle" => Some(Self::Oracle),
            _ => None,
        }
    }

    /// How many dot-separated parts a target schema name has for this protocol:
    /// `db.schema` for PostgreSQL and CockroachDB, one part (database or owner) otherwise.
    pub fn schema_parts(self) -> usize {
        match self {
            Self::Postgres => 2,
            Self::MySql | Self::Oracle => 1,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "PostgreSQL/CockroachDB",
            Self::MySql => "MySQL/MariaDB",
            Self::Oracle => "Oracle",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_protocols() {
        assert_eq!(Protocol::from_scheme("postgresql"), Some(Protocol::Postgres));
        assert_eq!(Protocol::from_scheme("POSTGRES"), Some(Protocol::Postgres));
        assert_eq!(Protocol::from_scheme("mysql"), Some(Protocol::MySql));
        assert_eq!(Protocol::from_scheme("mariadb"), Some(Protocol::MySql));
        assert_eq!(Protocol::from_scheme("oracle"), Some(Protocol::Oracle));
        assert_eq!(Protocol::from_scheme("http"), None);
    }
}
