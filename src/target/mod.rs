//! Target databases: which wire protocol and SQL dialect a connection string speaks.
//!
//! CockroachDB speaks the PostgreSQL protocol, so a `postgres://` URL may reach either; the
//! difference is settled at connect time (from `version()`), not from the URL.

use std::fmt;

pub mod batch;
pub mod mysql;
pub mod order;
pub mod postgres;
pub mod preflight;
pub mod schema;

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
