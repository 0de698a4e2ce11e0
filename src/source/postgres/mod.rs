//! PostgreSQL logical replication source (`replicator pglogical`).
//!
//! Streaming, position and resumption arrive with the replication client; what is here
//! today is the `pgoutput` decoder ([`pgoutput`]), tested against messages produced by a
//! real server.

pub mod pgoutput;
pub mod preflight;
pub mod replication;
pub mod stage;
pub mod stream;
