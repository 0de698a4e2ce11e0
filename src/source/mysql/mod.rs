//! MySQL and MariaDB binlog source (`replicator mylogical`).
//!
//! # Design
//!
//! **Preconditions** ([`preflight`]), checked over an ordinary connection before streaming,
//! each failure one message with its fix: the flavor (`SELECT VERSION()` names MariaDB);
//! `log_bin` on, `binlog_format=ROW`, `binlog_row_image=FULL`; GTIDs (MySQL: `gtid_mode=ON`;
//! MariaDB always has them); `binlog_row_metadata=FULL` unless `--fetchMetadata`; MariaDB's
//! `log_bin_compress` off (compressed events are not decoded); and the privileges, by doing
//! what replication does (`SHOW BINARY LOGS`), not by parsing grants (MariaDB 10.5 renamed
//! REPLICATION CLIENT to BINLOG MONITOR).
//!
//! **Streaming** ([`stream`]): one connection registers as a replica with server id
//! `--replicationProcessID` and asks for the binlog from a GTID position. MySQL:
//! COM_BINLOG_DUMP_GTID with the executed set (`uuid:1-29,uuid2:1-5`). MariaDB refuses that
//! command; instead the session sets `@mariadb_slave_capability=4` (so GTID events are sent as
//! themselves, not as dummy queries), `@slave_connect_state` (the last GTID per replication
//! domain, `0-1-123,1-2-9`) and `@slave_gtid_strict_mode=1`, then sends a plain COM_BINLOG_DUMP.
//! MariaDB's own events (GTID 0xa2, GTID list 0xa3) are parsed here
//! ([`gtid`]), since the binlog library only knows MySQL's. The server sends a heartbeat every
//! few seconds while idle; silence for longer than three heartbeats counts as a lost
//! connection.
//!
//! **Transactions.** A GTID event opens one; XID (InnoDB) or a `COMMIT` query closes it; a
//! statement outside BEGIN (DDL) is a transaction of its own. Table maps give each rows event
//! its table; column names, signedness, character sets, ENUM/SET labels and the primary key
//! come from the binlog's optional metadata (`binlog_row_metadata=FULL`), or from
//! `information_schema` with `--fetchMetadata` ([`schema`]), cached and dropped whenever a DDL
//! statement passes. Only tables of the database named in `--sourceConn` are replicated;
//! transactions on other databases still move the position. Values are converted in [`rows`].
//! Writes become upserts, deletes deletes; an update that changes the primary key becomes a
//! delete of the old key and an upsert of the new row.
//!
//! **Position and resume.** Each transaction is positioned at the GTID state once it is
//! applied: for MySQL the cumulative executed set (the starting set plus every GTID seen), for
//! MariaDB the last GTID per domain. After each target commit the sequencer stores it in
//! staging's `memo` (`mysql-wal-offset-<targetSchema>`); on start it is read back, else
//! `--defaultGTIDSet` is required. A reconnect asks for the position of the last transaction
//! handed on, so nothing enters the pipeline twice. A crash between the target commit and the
//! memo write replays the last batch: upserts and deletes by key make that harmless.
//!
//! **What can go wrong.** A dropped connection or a restarting server is retried with backoff
//! (`--retryInitialBackoff` … `--retryMaxBackoff`) for as long as it lasts. A position whose
//! binlogs are purged is an error that says so and how to start over. A value the target
//! cannot hold (zero dates, TIME beyond 24h) stops replication naming table, column and value,
//! unless a userscript is there to map it.
//!
//! **What was tested where.** MariaDB 10.11 runs on our machines and every path above runs
//! against it. No MySQL server can run here: MySQL's GTID path (COM_BINLOG_DUMP_GTID, GTID
//! events, cumulative sets) is covered by unit tests on events built from MySQL's documented
//! binlog format.

pub mod gtid;
pub mod preflight;
pub mod rows;
pub mod schema;
pub mod source;
pub mod stream;

/// Which server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Oracle MySQL (and Percona).
    MySql,
    /// MariaDB.
    MariaDb,
}

impl Flavor {
    /// From `SELECT VERSION()`.
    pub fn from_version(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::MySql => "MySQL",
            Flavor::MariaDb => "MariaDB",
        })
    }
}

pub use source::{MySource, MySourceConfig};
