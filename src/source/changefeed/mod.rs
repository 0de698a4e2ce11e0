//! The CockroachDB changefeed source (`replicator start`, failback): what a changefeed's
//! requests say.
//!
//! # Design
//!
//! A changefeed (`CREATE CHANGEFEED … INTO 'webhook-https://host:port/db/schema' WITH
//! updated, resolved`) sends HTTP requests: batches of changes (each line a table's row after
//! and maybe before the change, its key and its HLC time) and resolved timestamps (everything
//! at or before was sent). The changefeed's contract: at-least-once; per key, version n+1 only
//! after n was acknowledged with a 2xx; disjoint keys concurrently; a resolved timestamp only
//! after every earlier row was acknowledged; any non-2xx retried, and after a restart rows are
//! sent again from an older cursor. So duplicates are normal and must be harmless, and an older
//! version of a key must never overwrite a newer one.
//!
//! - [`route`]: which target schema, table and body form a request's path names (MOLT's URL
//!   grammar: `/db/schema` on PostgreSQL/CockroachDB targets, `/database` on MySQL/MariaDB; one
//!   more segment names a query feed's table; cloud-storage `.ndjson` and `.RESOLVED` files).
//! - [`payload`]: the bodies (webhook envelopes of table and query feeds, ndjson files) and HLC
//!   timestamps, with every number's exact text.
//!
//! - [`handler`]: the HTTP side (tokens, limits, status codes); [`accept`]: what the modes
//!   share; [`immediate`] and [`consistent`] (the default: staged, then swept by resolved
//!   timestamp).

pub mod accept;
pub mod consistent;
pub mod handler;
pub mod immediate;
pub mod payload;
#[cfg(test)]
mod payload_tree;
pub mod route;
pub mod rows;

/// A request refused: the status code and a one-line reason for the response body (never SQL
/// text or credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// Why, for the operator.
    pub reason: String,
}

impl Refused {
    /// 400: malformed input.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self { status: 400, reason: reason.into() }
    }

    /// 409: a resolved timestamp older than the newest.
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self { status: 409, reason: reason.into() }
    }

    /// 422: a row the target (or the userscript) rejects.
    pub fn unprocessable(reason: impl Into<String>) -> Self {
        Self { status: 422, reason: reason.into() }
    }

    /// 503: staging or the target unavailable, or shutting down; the changefeed retries.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self { status: 503, reason: reason.into() }
    }

    /// How a target failure is answered: 503 when a retry may succeed (the connection, a
    /// serialization failure, a foreign key whose other row may still be in flight), 422 when
    /// the row cannot be written as it is, 500 for a bug.
    pub fn from_target(e: &crate::target::TargetError) -> Self {
        use crate::error::ErrorKind;
        let reason = format!("target: {}", e.message);
        match e.kind {
            ErrorKind::Unavailable | ErrorKind::Transient => Self::unavailable(reason),
            _ if e.foreign_key => Self::unavailable(format!(
                "{reason} (a foreign key: the other row may still be in flight; the changefeed retries)"
            )),
            ErrorKind::Data => Self::unprocessable(reason),
            ErrorKind::Fatal => Self { status: 500, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    const NAMES: [&str; 9] =
        ["payload", "resolved", "after", "before", "key", "topic", "updated", "__crdb__", "x"];
    const VALUES: [&str; 10] = [
        "null",
        "1",
        "\"1.0\"",
        "\"5.0000000001\"",
        "[]",
        "{}",
        "[{}]",
        "[1]",
        "\"t\"",
        "[{\"updated\":\"1.0\",\"key\":[1],\"topic\":\"t\"}]",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever arrives, reading it answers: lines, a resolved timestamp, or an error.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = super::payload::webhook(&body, false);
            let _ = super::payload::webhook(&body, true);
            let _ = super::payload::ndjson(&body, "t", 64);
        }

        /// JSON-shaped noise too: objects with the envelope's field names and odd values.
        #[test]
        fn envelope_shaped_noise_never_panics(
            fields in proptest::collection::vec(
                (proptest::sample::select(NAMES.to_vec()), proptest::sample::select(VALUES.to_vec())),
                0..6),
        ) {
            let body = format!(
                "{{{}}}",
                fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
            );
            let _ = super::payload::webhook(body.as_bytes(), false);
            let _ = super::payload::webhook(body.as_bytes(), true);
        }

        #[test]
        fn arbitrary_paths_never_panic(path in "[/a-z0-9%.+\\-]{0,80}") {
            let _ = super::route::route(&path, 1);
            let _ = super::route::route(&path, 2);
        }
    }
}
