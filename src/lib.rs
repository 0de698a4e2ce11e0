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
//! Modules are named after those parts. What exists today: [`cli`] (commands and the flag
//! groups later commands share), [`auth`] (JWT signing for `make-jwt`), [`logging`],
//! [`target`] (target dialects), and [`types`] (connection-string secrets, durations).
//! The design lives in `DESIGN.md` (shared with the project) and the userscript contract in
//! `userscript-api.md`.

pub mod auth;
pub mod cli;
pub mod logging;
pub mod metrics;
pub mod myconn;
pub mod pgconn;
pub mod script;
pub mod sequencer;
pub mod server;
pub mod source;
pub mod staging;
pub mod status;
pub mod target;
pub mod types;
