//! # replicator
//!
//! A change-data-capture replicator for migrations to CockroachDB and back, flag-compatible
//! with MOLT Replicator. Every change flows through one pipeline:
//!
//! ```text
//! source ──▶ script (schema-level) ──▶ sequencer ──▶ script (table-level) ──▶ applier ──▶ target
//!   │  pgoutput / binlog / LogMiner / changefeed webhook                           │
//!   └── position (LSN, GTID set, SCN, resolved HLC) ──▶ checkpoint in staging, only after the
//!                                                        target transaction that covers it commits
//! ```
//!
//! - a **source** emits source transactions: ordered mutations plus the position of their commit;
//! - the optional **userscript** (TypeScript, `replicator@v2` or `replicator@v1`) filters,
//!   renames, routes and transforms rows, first per schema as they arrive, then per target
//!   table right before the write;
//! - the **sequencer** decides grouping and order: source transactions are never split and
//!   commit on the target in source order;
//! - the **applier** writes each batch with one statement shape per table and dialect;
//! - **staging** keeps checkpoints so a restart resumes exactly where the last commit ended.
//!
//! Modules are named after those parts, and imports flow downhill: [`cli`] (flags → validated
//! config) → [`pipeline`] (the composition root) → {[`source`], [`script`], [`sequencer`]} →
//! [`target`] → [`staging`] → [`conn`] → [`types`] (the model, importing nothing of the
//! crate). Beside them: [`server`], [`metrics`] and [`status`] (`/_/varz`, `/_/healthz`,
//! `/_/status`), [`error`] (error kinds, the retry policy, cause chains), [`auth`] (JWT),
//! [`logging`]. `docs/architecture.md` follows a row through them and says how to add a
//! source or a target.
//!
//! Invariants every part keeps: a checkpoint moves only after the target commit that covers
//! it; replays are harmless (upserts and deletes by key); a source transaction is never split
//! and transactions commit in source order; positions are typed and never move backwards;
//! numbers travel as their exact text; credentials never reach logs; a userscript error stops
//! its batch, naming the script's location and the row.

pub mod auth;
pub mod cli;
pub mod conn;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod outage;
pub mod pipeline;
pub mod script;
pub mod sequencer;
pub mod server;
pub mod source;
pub mod staging;
pub mod status;
pub mod target;
pub mod types;
