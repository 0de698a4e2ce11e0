//! Target databases: introspection, the check before streaming, and the batched appliers per
//! dialect. Which wire protocol a connection string speaks is [`crate::conn::Protocol`].
//!
//! CockroachDB speaks the PostgreSQL protocol, so a `postgres://` URL may reach either; the
//! difference is settled at connect time (from `version()`), not from the URL.

pub mod batch;
pub mod mysql;
pub mod order;
pub mod postgres;
pub mod preflight;
pub mod schema;
