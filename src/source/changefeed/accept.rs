//! The requests of `replicator start`, as far as every mode shares them: the target schema a
//! path names (opened on its first request), the lines read into changes of its tables
//! ([`super::rows`]: a table or column not seen yet makes the target schema be read again
//! first), and resolved timestamps recorded in `checkpoints`. Then the mode takes over:
//!
//! - immediate ([`super::immediate`]): the changes are written to the target before the
//!   answer, and a resolved timestamp is recorded as applied;
//! - consistent ([`super::consistent`]): the changes are staged durably before the answer,
//!   and the sweeper of the target schema applies them in time order once a resolved timestamp
//!   covers them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::Refused;
pub use super::consistent::SweepConfig;
use super::consistent::Sweepers;
use super::payload::{Body, Line};
use super::route::Route;
use super::rows;
use crate::conn::ConnString;
use crate::conn::pool::Pool;
use crate::script::ScriptPool;
use crate::staging::stage::{self, Resolved, Version};
use crate::staging::{StagingDialect, StagingSchema};
use crate::target::TargetError;
use crate::target::factory::{AnyTarget, TargetSpec};

/// How requests are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Written to the target before the answer (`--immediate`).
    Immediate,
    /// Staged before the answer, applied by resolved window (the default).
    Consistent,
    /// Staged before the answer, applied as soon as staged, each group of tables connected by
    /// foreign keys on its own (`--bestEffortOnly`).
    BestEffort,
}

impl Mode {
    /// Requests are staged (consistent and best-effort mode).
    pub fn stages(self) -> bool {
        self != Mode::Immediate
    }
}

/// What requests are written to, and how.
#[derive(Clone)]
pub struct AcceptorConfig {
    /// `--targetConn`.
    pub target: ConnString,
    /// `--stagingConn` (or the target's).
    pub staging: ConnString,
    /// `--stagingSchema`, resolved.
    pub staging_schema: StagingSchema,
    /// PostgreSQL or CockroachDB staging.
    pub staging_dialect: StagingDialect,
    /// The userscript.
    pub script: Option<Arc<ScriptPool>>,
    /// Most requests written at once (target and staging connections per schema).
    pub connections: usize,
    /// `--schemaRefresh`.
    pub schema_refresh: Option<Duration>,
    /// The mode.
    pub mode: Mode,
    /// How consistent mode's sweeper reads and applies.
    pub sweep: SweepConfig,
}

impl AcceptorConfig {
    /// Staged rows may be applied before a resolved timestamp covers them (best effort, or
    /// consistent mode that may switch to it).
    pub(super) fn applies_unresolved(&self) -> bool {
        self.mode == Mode::BestEffort || !self.sweep.best_effort_window.is_zero()
    }
}

/// What a request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Changes written (`applied`) and dropped as already applied (`duplicates`).
    Applied {
        /// Versions written.
        applied: usize,
        /// Versions dropped: an equal or newer one was applied before.
        duplicates: usize,
    },
    /// Changes staged (`staged`), and copies of changes staged before (`duplicates`).
    Staged {
        /// New rows in staging.
        staged: usize,
        /// Rows staged before (the first copy stays).
        duplicates: usize,
    },
    /// A resolved timestamp recorded.
    Resolved,
}

/// The requests' state: one writer per target schema, opened on its first request (and, in
/// consistent mode, its sweeper).
pub struct Acceptor {
    pub(super) config: AcceptorConfig,
    schemas: tokio::sync::Mutex<HashMap<Vec<String>, Arc<SchemaWriter>>>,
    staging: Pool<tokio_postgres::Client>,
    /// Per-table staging tables known to exist.
    created: tokio::sync::Mutex<HashSet<String>>,
    /// Consistent mode's sweepers, one per target schema.
    pub(super) sweepers: Sweepers,
}

/// Writes into one target schema.
pub(super) struct SchemaWriter {
    /// The path's schema parts, lower case (staging table names).
    pub(super) parts: Vec<String>,
    /// `db.schema` lower case: the checkpoint group, and the schema scripts and metrics name.
    pub(super) group: String,
    pub(super) spec: TargetSpec,
    targets: Pool<AnyTarget>,
    /// Wakes the schema's sweepers (a resolved timestamp was recorded; in best-effort mode,
    /// rows staged): one for each.
    pub(super) wakes: std::sync::Mutex<Vec<Arc<tokio::sync::Notify>>>,
    /// How the schema's claims and staged rows have fared with COPY (PostgreSQL staging).
    claims: stage::CopyFirst,
    stages: stage::CopyFirst,
}

impl SchemaWriter {
    /// Wakes every sweeper of the schema.
    pub(super) fn wake(&self) {
        if let Ok(wakes) = self.wakes.lock() {
            wakes.iter().for_each(|w| w.notify_one());
        }
    }

    /// What claims of the schema's keys may try COPY with: PostgreSQL staging only.
    pub(super) fn claim_copy(&self, dialect: StagingDialect) -> Option<&stage::CopyFirst> {
        (dialect == StagingDialect::Postgres).then_some(&self.claims)
    }

    /// What the schema's staged rows may try COPY with: PostgreSQL staging only.
    pub(super) fn stage_copy(&self, dialect: StagingDialect) -> Option<&stage::CopyFirst> {
        (dialect == StagingDialect::Postgres).then_some(&self.stages)
    }

    /// A wake-up for one more sweeper.
    pub(super) fn waker(&self) -> Arc<tokio::sync::Notify> {
        let wake = Arc::new(tokio::sync::Notify::new());
        if let Ok(mut wakes) = self.wakes.lock() {
            wakes.push(wake.clone());
        }
        wake
    }
}

pub(super) fn staging_error(e: &tokio_postgres::Error) -> Refused {
    Refused::unavailable(format!("staging: {}", crate::error::with_causes(e)))
}

impl Acceptor {
    /// Ready to write; nothing connects until the first request.
    pub fn new(config: AcceptorConfig) -> Self {
        let staging = Pool::new(config.connections);
        Self {
            config,
            schemas: tokio::sync::Mutex::new(HashMap::new()),
            staging,
            created: tokio::sync::Mutex::new(HashSet::new()),
            sweepers: Sweepers::default(),
        }
    }

    /// Applies one request's body for `route`.
    pub async fn accept(&self, route: &Route, body: Body) -> Result<Accepted, Refused> {
        let writer = self.writer(&route.schema).await?;
        match body {
            Body::Resolved(at) => self.resolved(&writer, at).await,
            Body::Lines(lines) if lines.is_empty() => match self.config.mode {
                Mode::Immediate => Ok(Accepted::Applied { applied: 0, duplicates: 0 }),
                Mode::Consistent | Mode::BestEffort => {
                    Ok(Accepted::Staged { staged: 0, duplicates: 0 })
                }
            },
            Body::Lines(lines) => self.lines(&writer, route.table.as_deref(), lines).await,
        }
    }

    /// The writer of the schema `parts` name, opened on first use (in consistent mode with
    /// its sweeper).
    pub(super) async fn writer(&self, parts: &[String]) -> Result<Arc<SchemaWriter>, Refused> {
        let lower: Vec<String> = parts.iter().map(|p| p.to_lowercase()).collect();
        let mut schemas = self.schemas.lock().await;
        if let Some(w) = schemas.get(&lower) {
            return Ok(w.clone());
        }
        let found = crate::target::factory::schema_named(&self.config.target, parts)
            .await
            .map_err(|e| Refused::from_target(&e))?;
        let Some(schema) = found else {
            return Err(Refused::bad_request(format!(
                "unknown schema: {}: the target has no such schema (the path names the target \
                 schema: /database/schema on PostgreSQL and CockroachDB, /database on MySQL and \
                 MariaDB)",
                parts.join(".")
            )));
        };
        let spec = TargetSpec {
            conn: self.config.target.clone(),
            schema,
            collapse: true,
            schema_refresh: self.config.schema_refresh,
        };
        let writer = Arc::new(SchemaWriter {
            group: lower.join("."),
            parts: lower.clone(),
            spec,
            targets: Pool::new(self.config.connections),
            wakes: std::sync::Mutex::new(Vec::new()),
            claims: Default::default(),
            stages: Default::default(),
        });
        schemas.insert(lower, writer.clone());
        if self.config.mode.stages() {
            self.sweepers.start(&self.config, writer.clone());
        }
        Ok(writer)
    }

    async fn resolved(
        &self,
        writer: &SchemaWriter,
        at: crate::types::position::Hlc,
    ) -> Result<Accepted, Refused> {
        let mut client = self.staging_client().await?;
        let immediate = self.config.mode == Mode::Immediate;
        let channel = (!immediate
            && self.config.staging_dialect == StagingDialect::Postgres
            && self.config.sweep.listen)
            .then(|| stage::checkpoint_channel(&self.config.staging_schema));
        let recorded = stage::resolve(
            &mut client,
            &self.config.staging_schema,
            &writer.group,
            at,
            immediate,
            channel.as_deref(),
        )
        .await;
        let metrics = crate::metrics::global();
        match recorded {
            Ok(Resolved::Recorded) => {
                #[allow(clippy::cast_precision_loss)]
                let seconds = at.nanos as f64 / 1e9;
                if immediate {
                    metrics
                        .target_applied_timestamp_seconds
                        .with_label_values(&[&writer.group])
                        .set(seconds);
                } else {
                    metrics
                        .source_lag_seconds
                        .with_label_values(&[&writer.group])
                        .set(crate::source::changefeed::consistent::age(at));
                    writer.wake();
                }
                Ok(Accepted::Resolved)
            }
            Ok(Resolved::Backwards { newest }) => {
                metrics
                    .checkpoint_proposed_going_backwards_errors
                    .with_label_values(&[&writer.group])
                    .inc();
                Err(Refused::conflict(format!(
                    "resolved timestamp {at} for {group} is older than {newest}, the newest \
                     recorded: a changefeed recreated with an older cursor needs the newer rows \
                     of {checkpoints} for group_name '{group}' deleted",
                    group = writer.group,
                    checkpoints = self.config.staging_schema.table("checkpoints"),
                )))
            }
            Err(e) => {
                let refused = staging_error(&e);
                if client.is_closed() {
                    client.discard();
                }
                Err(refused)
            }
        }
    }

    pub(super) async fn staging_client(
        &self,
    ) -> Result<crate::conn::pool::Pooled<'_, tokio_postgres::Client>, Refused> {
        let conn = &self.config.staging;
        self.staging
            .get(
                |c: &tokio_postgres::Client| !c.is_closed(),
                || crate::conn::postgres::connect(conn),
            )
            .await
            .map_err(|e| {
                Refused::unavailable(format!("staging: {}", crate::error::with_causes(&e)))
            })
    }

    /// Creates the per-table staging tables of `names` not known to exist.
    pub(super) async fn ensure_tables(
        &self,
        client: &tokio_postgres::Client,
        names: &HashSet<&str>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut created = self.created.lock().await;
        for &name in names {
            if created.contains(name) {
                continue;
            }
            for ddl in
                stage::table_ddl(self.config.staging_dialect, &self.config.staging_schema, name)
            {
                crate::staging::execute_ddl(client, &ddl).await?;
            }
            created.insert(name.to_owned());
        }
        Ok(())
    }

    async fn lines(
        &self,
        writer: &SchemaWriter,
        table: Option<&str>,
        lines: Vec<Line>,
    ) -> Result<Accepted, Refused> {
        let spec = &writer.spec;
        let mut target = writer
            .targets
            .get(|_| true, || crate::target::factory::open(spec))
            .await
            .map_err(|e| Refused::from_target(&e))?;
        let mut schema = target.schema();
        let unknown = lines
            .iter()
            .filter_map(|l| l.table.as_deref().or(table))
            .any(|t| schema.table(t).is_none());
        if unknown {
            reload(&mut target).await?;
            schema = target.schema();
        }
        let scripted = self.config.script.is_some();
        // Consistent mode stages what the changefeed sent, as JSON.
        let raw = match self.config.mode {
            Mode::Consistent | Mode::BestEffort => {
                lines.iter().map(super::consistent::raw).collect()
            }
            Mode::Immediate => Vec::new(),
        };
        let changes = rows::changes(lines, table, &schema, scripted)
            .map_err(|e| Refused::bad_request(e.to_string()))?;
        let metrics = crate::metrics::global();
        for c in &changes {
            metrics.mutations_received_count.with_label_values(&[&writer.group, &c.table]).inc();
        }
        if !self.config.mode.stages() {
            let (outcome, target, broken) = self.apply_now(writer, target, changes, &schema).await;
            if broken {
                target.discard();
            }
            return outcome;
        }
        let mut changes = changes;
        let mut applied = None;
        if self.config.mode == Mode::BestEffort && self.config.script.is_none() {
            // Best effort's direct path: rows of a table no foreign key touches are written
            // during the request, as in immediate mode (the key-version claim keeps a key's
            // older version, staged or sent again, from overwriting a newer one). If that
            // fails (the target down, a row it refuses) they are staged with the rest.
            let alone = lone_tables(&schema);
            let (direct, rest): (Vec<rows::Change>, Vec<rows::Change>) =
                changes.into_iter().partition(|c| alone.contains(c.table.as_str()));
            changes = rest;
            if !direct.is_empty() {
                // A target whose connection broke still knows the schema staging checks the
                // rows against; it opens a new connection when it next writes.
                let (outcome, kept, _) =
                    self.apply_now(writer, target, direct.clone(), &schema).await;
                target = kept;
                match outcome {
                    Ok(accepted) => applied = Some(accepted),
                    Err(refused) => {
                        tracing::debug!(reason = %refused.reason,
                            "best effort: writing rows during the request failed; staging them");
                        changes.extend(direct);
                    }
                }
            }
            if changes.is_empty()
                && let Some(accepted) = applied
            {
                return Ok(accepted);
            }
        }
        let mut client = self.staging_client().await?;
        match self.stage_lines(&mut client, &mut target, writer, changes, raw).await {
            Ok(accepted) => Ok(accepted),
            Err(Failure::Staging(e)) => Err(discarding(client, &e)),
            Err(Failure::Target(e)) => Err(Refused::from_target(&e)),
            Err(Failure::Refused(r)) => Err(r),
        }
    }

    /// Writes `changes` to the target now, claiming their versions and leaving applied stubs
    /// in staging (immediate mode, and best effort's direct path); gives `target` back, and
    /// whether its connection broke.
    async fn apply_now<'p>(
        &self,
        writer: &SchemaWriter,
        mut target: crate::conn::pool::Pooled<'p, AnyTarget>,
        changes: Vec<rows::Change>,
        schema: &crate::target::schema::Schema,
    ) -> (Result<Accepted, Refused>, crate::conn::pool::Pooled<'p, AnyTarget>, bool) {
        let mut changes = rows::newest_per_key(changes);
        let mut staged_names: HashMap<&str, String> = HashMap::new();
        let mut versions: Vec<(Version, usize)> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let table = staged_names
                    .entry(c.table.as_str())
                    .or_insert_with(|| stage::table_name(&writer.parts, &c.table));
                let v = Version { table: table.clone(), key: c.key.clone(), time: c.time };
                (v, i)
            })
            .collect();
        versions.sort();

        let mut client = match self.staging_client().await {
            Ok(client) => client,
            Err(refused) => return (Err(refused), target, false),
        };
        let names: HashSet<&str> = versions.iter().map(|(v, _)| v.table.as_str()).collect();
        if let Err(e) = self.ensure_tables(&client, &names).await {
            return (Err(discarding(client, &e)), target, false);
        }
        let outcome =
            self.write_now(&mut client, &mut target, writer, &versions, &mut changes, schema).await;
        match outcome {
            Ok(accepted) => (Ok(accepted), target, false),
            Err(Failure::Staging(e)) => (Err(discarding(client, &e)), target, false),
            Err(Failure::Target(e)) => (Err(Refused::from_target(&e)), target, e.is_transient()),
            Err(Failure::Refused(r)) => (Err(r), target, false),
        }
    }
}

/// The tables of `schema` that no foreign key references or leaves (a group of their own, as
/// best effort sweeps them): their rows need no order against any other table's.
fn lone_tables(schema: &crate::target::schema::Schema) -> HashSet<&str> {
    let linked: HashSet<&str> =
        schema.foreign_keys.iter().flat_map(|(c, p)| [c.as_str(), p.as_str()]).collect();
    schema.tables.keys().map(String::as_str).filter(|t| !linked.contains(t)).collect()
}

/// Why a request's write stopped.
pub(super) enum Failure {
    Staging(tokio_postgres::Error),
    Target(TargetError),
    Refused(Refused),
}

/// What takes a moved-out mutation's place (never written).
pub(super) fn placeholder() -> crate::types::mutation::Mutation {
    crate::types::mutation::Mutation::delete("", crate::types::Row::default())
}

pub(super) async fn reload(target: &mut AnyTarget) -> Result<(), Refused> {
    target.reload_schema().await.map_err(|e| Refused::from_target(&e))
}

/// A staging failure as a 503, dropping the connection when it is broken.
pub(super) fn discarding(
    client: crate::conn::pool::Pooled<'_, tokio_postgres::Client>,
    e: &tokio_postgres::Error,
) -> Refused {
    let refused = staging_error(e);
    if client.is_closed() {
        client.discard();
    }
    refused
}
