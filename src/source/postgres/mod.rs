//! PostgreSQL logical replication source (`replicator pglogical`).
//!
//! # Design
//!
//! **Preconditions** ([`preflight`]), checked over an ordinary connection before streaming,
//! each failure one message with its fix: `wal_level = logical`; the user has REPLICATION;
//! the publication exists; the slot exists in this database with plugin `pgoutput` (created
//! with `--createSlot`). The publication's tables are listed: two with the same name in
//! different schemas would write one target table, which is refused unless a userscript
//! routes them (they then reach it as `schema.table`).
//!
//! **Streaming** ([`replication`], [`stream`]): a replication connection
//! (`replication=database`, trust/password/MD5/SCRAM-SHA-256, TLS per `sslmode` with
//! rustls, see [`crate::conn::postgres`]) runs `START_REPLICATION SLOT … LOGICAL <lsn>
//! (proto_version '1', publication_names …)`. XLogData carries pgoutput messages, decoded
//! by [`pgoutput`] into source transactions positioned at their commit's end LSN.
//! Keepalives are answered at once when the server asks; standby status goes out every
//! `--standbyTimeout` even while the pipeline is full and reading pauses.
//!
//! **Position and resume.** After each target commit the sequencer stores the end LSN of
//! the last transaction it covers in staging's `memo` (`pglogical-wal-offset-<targetSchema>`).
//! The flushed position reported to the server is that committed LSN, never more; when
//! everything handed on has committed and no transaction is open, the server's own idle
//! position is confirmed instead, so an idle slot does not hold WAL back. On start, streaming
//! begins at the stored LSN (transactions ending at or before it are skipped), else at the
//! slot's confirmed position. A crash between the target commit and the memo write replays
//! the last batch: upserts and deletes by key make that harmless.
//!
//! **What can go wrong.** A dropped connection, a server restart, or the slot still held by
//! a walsender that has not noticed our death (SQLSTATE 55006 after a `kill -9`) is retried
//! with exponential backoff (`--retryInitialBackoff` up to `--retryMaxBackoff`) for as long
//! as it lasts: the slot keeps the WAL meanwhile. A slot that was dropped, a publication
//! that is gone, or a message that does not decode stops replication with the error. If the
//! slot is dropped and recreated, the changes in between are lost to it: restart from a new
//! initial load.
//!
//! **Rows.** Inserts and updates become upserts; an update that changes the key also deletes
//! the old key. Columns whose value is an unchanged TOAST datum are left out, so the target
//! keeps its value; when the key changes as well, the value is taken from the old row (sent
//! in full under `REPLICA IDENTITY FULL`, or an earlier change in the same transaction), or
//! read from the old row on the target once everything before has committed ([`forward`]).
//! TRUNCATE becomes a delete of every row of the same-named target tables (children first)
//! once everything before has committed; with a userscript it stops with an error naming the
//! tables. Sequences, DDL and large objects are not replicated: pgoutput does not carry them.

pub mod forward;
pub mod pgoutput;
pub mod preflight;
pub mod replication;
pub mod source;
pub mod stream;

pub use source::{PgSource, PgSourceConfig};
