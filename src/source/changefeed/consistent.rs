//! Consistent mode (`replicator start`'s default): a request's changes are staged durably
//! before it is answered 200; the target schema's sweeper applies them in time order once a
//! resolved timestamp covers them, so the target only ever shows the source as it was at a
//! resolved timestamp's source transactions, each whole.
//!
//! # Staging (the request)
//!
//! The lines are read into changes as in every mode (unknown tables and columns are refused
//! with 400 then, not found stuck later), and each is written, as the changefeed sent it
//! (`after` and `before` as JSON), into its table's staging table in one staging transaction:
//! a (time, key) staged before keeps its first copy, and the copy is counted as a duplicate.
//!
//! # Sweeping (the lease holder)
//!
//! One sweeper per target schema runs on the instance holding the schema's lease
//! (`changefeed.<db.schema>` in `leases`, [`SWEEP_LEASE`] long, renewed every second, taken
//! over by a standby within two lease periods of its holder's death). Woken by a resolved
//! timestamp recorded here, or once a second, it takes the newest resolved timestamp R and:
//!
//! 1. reads the unapplied rows at or before R of every staging table of the schema, in pages of
//!    `--scanSize` in time order, and merges them: only times every table has been read past
//!    are taken, so one source transaction (one HLC) spanning tables is never split;
//! 2. cuts them into rounds of at least `--flushSize` rows (whole timestamps; at most
//!    `--timestampLimit` timestamps each), in time order;
//! 3. applies each round: in a staging transaction the keys' versions are claimed (an older
//!    version than one applied, from a changefeed restarted from an older cursor, is dropped),
//!    the userscript runs on each source transaction, the round is written in one target
//!    transaction (parents first, children's deletes first) and committed, and then the
//!    round's staged rows are marked applied and the staging transaction commits;
//! 4. once every row at or before R is applied, marks the resolved timestamps up to R applied
//!    (`target_applied_at`).
//!
//! A row is thus marked applied only after the target transaction that wrote it committed. A
//! crash anywhere replays from staging, and a replay is harmless: the claim drops versions
//! already applied, and writes are idempotent. A failing round (target down, a row the target
//! rejects) is retried with backoff up to `--quiescentPeriod`, logged once per distinct error.
//! Rows that arrive below a resolved timestamp already applied (a changefeed restarted from an
//! older cursor) are applied in the next sweep unless a newer version of their key is applied,
//! and logged once per table. Applied rows older than `--retireOffset` behind the applied
//! resolved timestamp are deleted.
//!
//! # Best effort (`--bestEffortOnly`)
//!
//! The same sweeper runs once per group of tables connected by foreign keys, each under its
//! own lease (`changefeed.<db.schema>.<first table>`): it applies every unapplied row of its
//! tables as soon as it is staged, in time order, without waiting for a resolved timestamp. A
//! resolved timestamp is marked applied once no group has rows left at or before it. Rows of
//! a table no foreign key touches skip staging (no userscript): they are written during the
//! request as in immediate mode, and staged only when that fails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio::sync::watch;

use super::Refused;
use super::accept::{
    Accepted, Acceptor, AcceptorConfig, Failure, SchemaWriter, placeholder, reload, staging_error,
};
use super::payload::{Fields, Line};
use super::rows::{self, Change};
use crate::script::SourceTag;
use crate::staging::lease::{Held, Lease};
use crate::staging::stage::{self, Staged, Version};
use crate::target::factory::AnyTarget;
use crate::target::{Target, TargetError};
use crate::types::mutation::{Position, SourceTransaction};
use crate::types::position::Hlc;

/// How long a sweeper's lease lasts unrenewed (MOLT's 5 s): a standby takes over within two.
pub const SWEEP_LEASE: Duration = Duration::from_secs(5);

/// How often a sweeper looks for work when nothing woke it.
pub const POLL: Duration = Duration::from_secs(1);

/// How consistent mode's sweeper reads and applies.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// `--flushSize`: rows per target transaction (at least; timestamps are not split).
    pub flush_size: usize,
    /// `--flushPeriod`: the longest rows read short of `flush_size` wait for the next page
    /// before they are written as a smaller round.
    pub flush_period: Duration,
    /// `--parallelism`: most target transactions at once, one per group of tables no
    /// foreign key and no source transaction connects (consistent mode, no userscript).
    pub parallelism: usize,
    /// `--limitLookahead`: most resolved timestamps one sweep applies up to (0: all).
    pub lookahead: usize,
    /// `--scanSize`: rows read per staging table and page.
    pub scan_size: usize,
    /// `--timestampLimit`: most distinct timestamps per target transaction.
    pub timestamp_limit: usize,
    /// `--quiescentPeriod`: the longest wait between retries of a failing round.
    pub quiescent: Duration,
    /// `--retireOffset`: how long applied rows stay in staging.
    pub retire_offset: Duration,
    /// Wake-ups by LISTEN/NOTIFY on PostgreSQL staging (off: `--disableCheckpointStream`).
    pub listen: bool,
    /// `--bestEffortWindow`: consistent mode switches to best effort while the applied
    /// resolved timestamp is at least this old, and back once it is within a quarter of it
    /// (zero: never).
    pub best_effort_window: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            flush_size: 1000,
            flush_period: Duration::from_secs(1),
            parallelism: 16,
            lookahead: 0,
            scan_size: 10_000,
            timestamp_limit: 1000,
            quiescent: Duration::from_secs(10),
            retire_offset: Duration::from_secs(24 * 3600),
            listen: true,
            best_effort_window: Duration::ZERO,
        }
    }
}

/// A line's `after` and `before` as JSON, for staging.
pub struct Raw {
    after: Option<Vec<u8>>,
    before: Option<Vec<u8>>,
}

/// What consistent mode stages of `line`.
pub fn raw(line: &Line) -> Raw {
    let json = super::payload::fields_text;
    Raw { after: line.after.as_ref().map(json), before: line.before.as_ref().map(json) }
}

/// Seconds from `at` to now.
pub fn age(at: Hlc) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    let at = at.nanos as f64 / 1e9;
    (now - at).max(0.0)
}

impl Acceptor {
    /// Stages `changes` (read from lines whose JSON `raw` holds) in one staging transaction.
    pub(super) async fn stage_lines(
        &self,
        client: &mut tokio_postgres::Client,
        target: &mut AnyTarget,
        writer: &SchemaWriter,
        mut changes: Vec<Change>,
        mut raw: Vec<Raw>,
    ) -> Result<Accepted, Failure> {
        if self.config.script.is_none() {
            // A column the target lacks is refused now, not found by a stuck sweeper later.
            let mutations: Vec<_> = changes
                .iter_mut()
                .map(|c| std::mem::replace(&mut c.mutation, placeholder()))
                .collect();
            if let Err(first) = rows::check_columns(&target.schema(), &mutations) {
                reload(target).await.map_err(Failure::Refused)?;
                if rows::check_columns(&target.schema(), &mutations).is_err() {
                    return Err(Failure::Refused(Refused::bad_request(first)));
                }
            }
        }
        // Of one (time, key) in a request the last line wins; across requests the first.
        let mut last: HashMap<(&str, &str, Hlc), usize> = HashMap::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            last.insert((c.table.as_str(), c.key.as_str(), c.time), i);
        }
        let mut keep = vec![false; changes.len()];
        for i in last.into_values() {
            keep[i] = true;
        }
        let mut by_table: HashMap<String, (String, Vec<Staged>)> = HashMap::new();
        for (change, keep) in changes.into_iter().zip(keep) {
            if !keep {
                continue;
            }
            let Raw { after, before } =
                std::mem::replace(&mut raw[change.line], Raw { after: None, before: None });
            let staged = Staged {
                time: change.time,
                deletion: after.is_none(),
                mutation: after.unwrap_or_else(|| b"null".to_vec()),
                before,
                key: change.key,
            };
            let name = stage::table_name(&writer.parts, &change.table);
            by_table.entry(name).or_insert_with(|| (change.table, Vec::new())).1.push(staged);
        }
        let names: HashSet<&str> = by_table.keys().map(String::as_str).collect();
        self.ensure_tables(client, &names).await.map_err(Failure::Staging)?;
        let staging = &self.config.staging_schema;
        let tx = client.transaction().await.map_err(Failure::Staging)?;
        let metrics = crate::metrics::global();
        let (mut staged, mut duplicates) = (0, 0);
        let mut counts = Vec::with_capacity(by_table.len());
        for (name, (table, rows)) in &by_table {
            let copy = writer.stage_copy(self.config.staging_dialect);
            let new = stage::stage_with(&tx, staging, name, rows, copy)
                .await
                .map_err(Failure::Staging)?;
            let new = usize::try_from(new).unwrap_or(usize::MAX).min(rows.len());
            counts.push((table, new, rows.len() - new));
            staged += new;
            duplicates += rows.len() - new;
        }
        tx.commit().await.map_err(Failure::Staging)?;
        if self.config.applies_unresolved() {
            writer.wake();
        }
        for (table, new, dup) in counts {
            let labels = [writer.group.as_str(), table.as_str()];
            metrics.mutations_staged.with_label_values(&labels).inc_by(new as u64);
            metrics.stage_duplicate_mutations_total.with_label_values(&labels).inc_by(dup as u64);
        }
        Ok(Accepted::Staged { staged, duplicates })
    }

    /// Starts the sweepers of the target schemas with resolved timestamps not applied yet (a
    /// restart: their changefeeds may send nothing until they catch up); in best effort (and
    /// with `--bestEffortWindow`), of every schema with resolved timestamps, since rows no
    /// resolved timestamp covers yet may wait too.
    pub async fn resume(&self) -> Result<Vec<String>, Refused> {
        if !self.config.mode.stages() {
            return Ok(Vec::new());
        }
        let groups = {
            let client = self.staging_client().await?;
            // Best effort applies rows no resolved timestamp covers yet: every schema that
            // ever had one may have such rows waiting.
            let all = self.config.applies_unresolved();
            stage::unapplied_groups(&*client, &self.config.staging_schema, all)
                .await
                .map_err(|e| staging_error(&e))?
        };
        for group in &groups {
            let parts: Vec<String> = group.split('.').map(str::to_owned).collect();
            if let Err(e) = self.writer(&parts).await {
                tracing::warn!(group = %group, error = %e.reason,
                    "resolved timestamps wait in staging for a target schema that cannot be opened; \
                     its sweeper starts with the schema's next request");
            }
        }
        Ok(groups)
    }
}

impl Acceptor {
    /// This instance sweeps at least one target schema (consistent mode).
    pub fn active(&self) -> bool {
        self.sweepers.active()
    }

    /// Stops the sweepers after their current rounds (at most `grace`).
    pub async fn stop(&self, grace: Duration) {
        self.sweepers.stop(grace).await;
    }
}

/// Consistent mode's sweepers, one per target schema.
pub struct Sweepers {
    stop: watch::Sender<bool>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    holding: Arc<AtomicUsize>,
}

impl Default for Sweepers {
    fn default() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Arc::new(std::sync::Mutex::new(Vec::new())),
            holding: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Sweepers {
    /// Starts the sweeper of `writer`'s schema.
    pub(super) fn start(&self, config: &AcceptorConfig, writer: Arc<SchemaWriter>) {
        let best_effort = config.mode == super::accept::Mode::BestEffort;
        let sweeper = Sweeper {
            config: config.clone(),
            // In best effort this is the template of the groups' sweepers, which get their own.
            wake: if best_effort { Arc::default() } else { writer.waker() },
            writer: writer.clone(),
            stop: self.stop.subscribe(),
            holding: self.holding.clone(),
            late: HashSet::new(),
            logged_at: None,
            spare: Vec::new(),
            lanes: Vec::new(),
            component: None,
            best_effort: None,
            foreign: HashSet::new(),
        };
        if !best_effort {
            self.spawn(tokio::spawn(sweeper.run()));
            return;
        }
        // One sweeper per group of tables connected by foreign keys, each with its lease.
        let template = sweeper;
        let tasks = self.tasks.clone();
        let mut stop = self.stop.subscribe();
        self.spawn(tokio::spawn(async move {
            let group = template.writer.group.clone();
            let found = loop {
                match crate::target::factory::open(&template.writer.spec).await {
                    Ok(target) => break components(&target.schema()),
                    Err(e) => tracing::warn!(schema = %group, error = %e.message,
                        "best effort: cannot read the target schema's foreign keys; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => return,
                }
            };
            let groups: Vec<_> = found.iter().map(|c| &c.tables).collect();
            tracing::info!(schema = %group, ?groups,
                "best effort: one sweeper per group of tables connected by foreign keys");
            for component in found {
                let task = tokio::spawn(template.for_component(component).run());
                if let Ok(mut tasks) = tasks.lock() {
                    tasks.push(task);
                }
            }
        }));
    }

    fn spawn(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// This instance sweeps at least one target schema (it holds its lease).
    pub fn active(&self) -> bool {
        self.holding.load(Ordering::SeqCst) > 0
    }

    /// Stops every sweeper after its current round (at most `grace`), giving their leases up.
    pub async fn stop(&self, grace: Duration) {
        self.stop.send_replace(true);
        let tasks = self.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + grace;
        for task in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!(
                    "a sweeper did not stop within --gracePeriod; its round replays on restart"
                );
            }
        }
    }
}

/// Why a sweep stopped short.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error("staging: {}", crate::error::with_causes(.0))]
    Staging(#[from] tokio_postgres::Error),
    #[error("target: {}", .0.message)]
    Target(TargetError),
    #[error("{0}")]
    Data(String),
    /// No connection to staging could be opened.
    #[error("staging: {0}")]
    Unreachable(String),
    /// The rows name a table or column the target schema as last read lacks: read it again.
    #[error("{0}")]
    Stale(String),
    /// Stopping, or the lease was lost: the round replays wherever the lease goes.
    #[error("interrupted")]
    Interrupted,
}

impl SweepError {
    /// What the operator needs to hear once: an unreachable database is one case however
    /// its connection attempts fail; any other error is its own.
    fn class(&self) -> String {
        match self {
            Self::Target(t) if t.is_transient() => "target unavailable".to_owned(),
            Self::Staging(e) if e.is_closed() || e.code().is_none() => {
                "staging unavailable".to_owned()
            }
            Self::Unreachable(_) => "staging unavailable".to_owned(),
            other => other.to_string(),
        }
    }
}

/// One schema's sweeper.
struct Sweeper {
    config: AcceptorConfig,
    writer: Arc<SchemaWriter>,
    stop: watch::Receiver<bool>,
    holding: Arc<AtomicUsize>,
    /// Tables whose late rows were logged.
    late: HashSet<String>,
    /// When a window was last logged.
    logged_at: Option<Instant>,
    /// Idle staging connections for rounds' transactions.
    spare: Vec<tokio_postgres::Client>,
    /// Target connections beyond the first, for groups of tables applied at once.
    lanes: Vec<AnyTarget>,
    /// Best-effort mode: the group of tables this sweeper applies (None: every table, by
    /// resolved timestamp).
    component: Option<Component>,
    /// What wakes this sweeper.
    wake: Arc<tokio::sync::Notify>,
    /// With `--bestEffortWindow`: applying as in best-effort mode now (None: not decided).
    best_effort: Option<bool>,
    /// Staging tables logged as mapping to none of the schema's tables.
    foreign: HashSet<String>,
}

/// Tables connected by foreign keys (best-effort mode's unit of work and lease).
#[derive(Debug, Clone)]
struct Component {
    /// The target's names of its tables.
    tables: std::collections::BTreeSet<String>,
    /// It also takes staged tables the target lacks (a userscript routes their rows).
    unmapped: bool,
}

/// A round claimed in a staging transaction still open on `client`, ready for the target.
struct Claimed {
    /// In a transaction, unless `inline`.
    client: tokio_postgres::Client,
    /// The claims and applied marks as SQL for the target transaction itself (staging in the
    /// target's database, every version newer than any applied): no staging transaction.
    inline: Option<String>,
    transactions: Vec<SourceTransaction>,
    by_table: HashMap<usize, Vec<Version>>,
    /// Versions dropped: an equal or newer one was applied before.
    dropped: usize,
}

/// A staging connection listening for resolved timestamps, and what it hears.
/// What tells a sweeper of resolved timestamps other instances record: a task on its own
/// staging connection, stopped when this is dropped; `heard` ends when the connection does.
struct Listener {
    task: tokio::task::JoinHandle<()>,
    heard: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A round: staged rows (with the index of their staging table) in time order.
type Round = Vec<(usize, Staged)>;

/// A staging table of the schema: its name and the source table its rows are for.
struct Staging {
    name: String,
    table: String,
}

/// The groups of `schema`'s tables connected by foreign keys; the first also takes staged
/// tables the target lacks.
fn components(schema: &crate::target::schema::Schema) -> Vec<Component> {
    let groups = crate::sequencer::parallel::table_groups(&schema.names(), &schema.foreign_keys);
    let mut by_group: std::collections::BTreeMap<usize, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for (table, group) in groups {
        by_group.entry(group).or_default().insert(table);
    }
    let mut out: Vec<Component> =
        by_group.into_values().map(|tables| Component { tables, unmapped: false }).collect();
    out.sort_by(|a, b| a.tables.first().cmp(&b.tables.first()));
    match out.first_mut() {
        Some(first) => first.unmapped = true,
        None => out.push(Component { tables: Default::default(), unmapped: true }),
    }
    out
}

impl Sweeper {
    /// A sweeper like this one for `component`, with its own wake-up.
    fn for_component(&self, component: Component) -> Self {
        Self {
            config: self.config.clone(),
            wake: self.writer.waker(),
            writer: self.writer.clone(),
            stop: self.stop.clone(),
            holding: self.holding.clone(),
            late: HashSet::new(),
            logged_at: None,
            spare: Vec::new(),
            lanes: Vec::new(),
            component: Some(component),
            best_effort: None,
            foreign: HashSet::new(),
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        let name = match &self.component {
            None => format!("changefeed.{}", self.writer.group),
            Some(c) => format!(
                "changefeed.{}.{}",
                self.writer.group,
                c.tables.first().map_or("unmapped", String::as_str)
            ),
        };
        let gauge = crate::metrics::global().lease_holder.with_label_values(&[&name]);
        loop {
            let Some(mut held) = self.acquire(&name).await else { return };
            self.holding.fetch_add(1, Ordering::SeqCst);
            gauge.set(1.0);
            tracing::info!(lease = %name, "active: this instance sweeps {}", self.writer.group);
            let stopped = self.sweep_held(&mut held).await;
            self.holding.fetch_sub(1, Ordering::SeqCst);
            gauge.set(0.0);
            if stopped {
                held.release().await;
                return;
            }
            let why = held.lost().await;
            tracing::warn!(error = %why, "standby: stopped sweeping {}", self.writer.group);
            held.release().await;
        }
    }

    /// Waits until this instance holds the schema's lease (`None`: stopping).
    async fn acquire(&mut self, name: &str) -> Option<Held> {
        let staging = &self.config.staging_schema;
        let mut said: Option<String> = None;
        loop {
            if self.stopping() {
                return None;
            }
            let attempt = async {
                let client = crate::conn::postgres::connect(&self.config.staging)
                    .await
                    .map_err(|e| crate::error::with_causes(&e))?;
                match Lease::try_acquire(&client, staging, name, SWEEP_LEASE).await {
                    Ok(Ok(lease)) => Ok(Some(lease.hold(client, self.config.staging.clone()))),
                    Ok(Err((holder, expires))) => {
                        Err(format!("standby: {holder} sweeps, its lease runs until {expires} UTC"))
                    }
                    Err(e) => Err(crate::error::with_causes(&e)),
                }
            };
            match attempt.await {
                Ok(held) => return held,
                Err(why) => {
                    let first = why.split(',').next().map(str::to_owned);
                    if said != first {
                        tracing::info!(lease = %name, "{why}; taking over when it is not renewed");
                        said = first;
                    }
                }
            }
            let jitter = Duration::from_millis(u64::from(std::process::id() % 200));
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(POLL + jitter) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Sweeps while the lease is held; true when stopping, false when the lease was lost.
    async fn sweep_held(&mut self, held: &mut Held) -> bool {
        let mut staging: Option<tokio_postgres::Client> = None;
        let mut target: Option<AnyTarget> = None;
        // Lane connections carry the fence of the lease they were opened under.
        self.lanes.clear();
        let mut backoff = Duration::from_millis(100);
        let mut failing: Option<(String, Instant)> = None;
        let mut retired_at: Option<Instant> = None;
        let mut listener: Option<Listener> = None;
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let mut more = false;
            match self.sweep(&mut staging, &mut target, held).await {
                Ok(ahead) => {
                    more = ahead;
                    if let Some((_, since)) = failing.take() {
                        tracing::info!(schema = %self.writer.group, after = ?since.elapsed(), "sweeping again");
                    }
                    backoff = Duration::from_millis(100);
                    if retired_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                        retired_at = Some(Instant::now());
                        if let Some(client) = &staging
                            && let Err(e) = self.retire(client).await
                        {
                            tracing::warn!(error = %crate::error::with_causes(&e), "retiring applied staged rows failed; trying again in a minute");
                        }
                    }
                }
                Err(SweepError::Interrupted) => {}
                Err(e) => {
                    self.report(&e, &mut failing);
                    crate::metrics::global()
                        .apply_errors_total
                        .with_label_values(&[&self.writer.group, ""])
                        .inc();
                    if staging.as_ref().is_some_and(tokio_postgres::Client::is_closed) {
                        staging = None;
                    }
                    if matches!(e, SweepError::Target(ref t) if t.is_transient()) {
                        target = None;
                        self.lanes.clear();
                    }
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(self.config.sweep.quiescent.max(backoff));
                    if self.stopping() {
                        return true;
                    }
                    if held.is_lost() {
                        return false;
                    }
                    continue;
                }
            }
            if self.stopping() {
                return true;
            }
            if held.is_lost() {
                return false;
            }
            if more {
                // --limitLookahead left resolved timestamps for the next sweep.
                continue;
            }
            let mut stop = self.stop.clone();
            let notified = async {
                match &mut listener {
                    Some(listener) => listener.heard.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = self.wake.notified() => {}
                open = notified => {
                    if open {
                        tracing::debug!(schema = %self.writer.group, "woken by NOTIFY: a resolved timestamp was recorded");
                    } else {
                        listener = None;
                    }
                }
                _ = stop.changed() => return true,
                _ = held.lost() => return false,
            }
        }
    }

    /// Logs a failed sweep once per kind of failure (`failing`: the kind being retried, and
    /// since when), saying what to do when a row holds the sweep back.
    fn report(&self, e: &SweepError, failing: &mut Option<(String, Instant)>) {
        let class = e.class();
        if failing.as_ref().is_some_and(|(known, _)| *known == class) {
            tracing::debug!(schema = %self.writer.group, error = %e, "retrying");
            return;
        }
        let stuck = matches!(e, SweepError::Data(_))
            || matches!(e, SweepError::Target(t) if !t.is_transient());
        if stuck {
            tracing::warn!(schema = %self.writer.group, error = %e,
                staging = %self.config.staging_schema.qualified(),
                "applying staged changes failed, and nothing later is applied until it succeeds; \
                 retrying with backoff up to --quiescentPeriod. Change the target (or the \
                 userscript) so it takes the row, or, to give the row up, delete it from its \
                 per-table staging table (db_schema_table) by its key");
        } else {
            tracing::warn!(schema = %self.writer.group, error = %e,
                "applying staged changes failed; retrying with backoff up to --quiescentPeriod");
        }
        let since = failing.take().map_or_else(Instant::now, |(_, since)| since);
        *failing = Some((class, since));
    }

    /// A connection listening for resolved timestamps other instances record (PostgreSQL
    /// staging, unless `--disableCheckpointStream`); `None`: polling only.
    async fn listen(&self) -> Option<Listener> {
        if !self.config.sweep.listen {
            return None;
        }
        let staging = &self.config.staging_schema;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = match self.config.staging_dialect {
            crate::staging::StagingDialect::Postgres => {
                let channel = stage::checkpoint_channel(staging);
                let listening = async {
                    let (client, mut notes) =
                        crate::conn::postgres::connect_listening(&self.config.staging)
                            .await
                            .ok()?;
                    let sql = format!("LISTEN {}", crate::target::postgres::quote_ident(&channel));
                    client.batch_execute(&sql).await.ok()?;
                    Some(tokio::spawn(async move {
                        let _client = client;
                        while notes.recv().await.is_some() {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                    }))
                };
                listening.await
            }
            crate::staging::StagingDialect::Cockroach => {
                // A changefeed on `checkpoints` without a sink: a query that returns a row
                // for every change (and a resolved timestamp every 10 s), as MOLT does.
                let client = crate::conn::postgres::connect(&self.config.staging).await.ok()?;
                let sql = stage::checkpoint_changefeed_sql(staging);
                Some(tokio::spawn(async move {
                    let none: [&str; 0] = [];
                    let Ok(rows) = client.query_raw(&sql, none).await else { return };
                    futures_util::pin_mut!(rows);
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut rows).await {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                }))
            }
        };
        if task.is_none() {
            tracing::debug!("cannot watch for resolved timestamps; polling staging every second");
        }
        task.map(|task| Listener { task, heard: rx })
    }

    /// Applies every staged row at or before the newest resolved timestamp (with
    /// `--limitLookahead`, the one that many ahead), then marks it applied; true when later
    /// resolved timestamps wait for the next sweep.
    async fn sweep(
        &mut self,
        staging: &mut Option<tokio_postgres::Client>,
        target: &mut Option<AnyTarget>,
        held: &Held,
    ) -> Result<bool, SweepError> {
        if staging.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            *staging = Some(self.connect().await?);
        }
        let Some(client) = staging.as_mut() else { return Ok(false) };
        if target.is_none() {
            *target = Some(self.open_target(held).await?);
        }
        let Some(target) = target.as_mut() else { return Ok(false) };
        let schema_name = &self.config.staging_schema.clone();
        let group = self.writer.group.clone();
        let applied_before = stage::newest_applied(&*client, schema_name, &group).await?;
        // Best-effort mode applies whatever is staged; consistent mode up to the newest
        // resolved timestamp, or with --limitLookahead the one that many ahead.
        let best_effort = self.component.is_some() || self.switch(applied_before);
        let lookahead = self.config.sweep.lookahead;
        let ahead = if lookahead > 0 && !best_effort {
            stage::resolved_ahead(&*client, schema_name, &group, lookahead).await?
        } else {
            None
        };
        let more = ahead.is_some_and(|(_, later)| later);
        let resolved = match ahead {
            Some((upto, _)) => Some((upto, false)),
            None => stage::newest_resolved(&*client, schema_name, &group).await?,
        };
        let (upto, newest, applied) = match resolved {
            None if best_effort => (Hlc { nanos: i64::MAX, logical: 0 }, Hlc::default(), true),
            None => return Ok(false),
            Some((newest, applied)) if best_effort => {
                (Hlc { nanos: i64::MAX, logical: 0 }, newest, applied)
            }
            Some((newest, applied)) => (newest, newest, applied),
        };
        let tables = self.tables(client, target).await?;
        // Staging in the target's database, and every version applied so far at or before the
        // applied resolved timestamp (consistent mode, never switched): a round of newer rows
        // needs no answer from its claims, which then go into its target transaction.
        let inline_above = (self.config.target == self.config.staging
            && self.config.staging_dialect == crate::staging::StagingDialect::Postgres
            && !best_effort
            && self.component.is_none()
            && self.config.sweep.best_effort_window.is_zero())
        .then(|| applied_before.unwrap_or_default());
        let started = Instant::now();
        let mut rows = 0;
        let mut touched: HashSet<usize> = HashSet::new();
        let lane_of = self.lane_of(&tables, &target.schema());
        // Keyset pages: each read starts past the last; rows short of a round wait for the
        // next page (at most --flushPeriod) so a page's end does not cut a small round.
        let mut after: Option<Hlc> = None;
        let mut carry: Vec<(usize, Staged)> = Vec::new();
        let mut carried_at: Option<Instant> = None;
        loop {
            if self.stopping() || held.is_lost() {
                return Err(SweepError::Interrupted);
            }
            let read_at = Instant::now();
            let chosen = self.read(client, &tables, after, upto).await?;
            tracing::debug!(rows = chosen.len(), took = ?read_at.elapsed(), "read staged rows");
            let end = chosen.is_empty();
            if let Some((_, last)) = chosen.last() {
                after = Some(last.time);
                carried_at = carried_at.or(Some(read_at));
            }
            if let Some(before) = applied_before {
                self.log_late(&tables, &chosen, before);
            }
            carry.extend(chosen);
            if carry.is_empty() {
                break;
            }
            let hold =
                !end && carried_at.is_some_and(|at| at.elapsed() < self.config.sweep.flush_period);
            let sweep = &self.config.sweep;
            let lanes;
            (lanes, carry) = cut(
                std::mem::take(&mut carry),
                &lane_of,
                sweep.flush_size,
                sweep.timestamp_limit,
                hold,
            );
            if carry.is_empty() {
                carried_at = None;
            }
            if !lanes.is_empty() {
                self.apply_lanes(
                    target,
                    &tables,
                    lanes,
                    held,
                    &mut rows,
                    &mut touched,
                    inline_above,
                )
                .await?;
            }
            if end {
                break;
            }
        }
        // In best-effort mode the other groups of tables may still have rows up to it.
        let others_pending = best_effort && !applied && self.any_pending(client, newest).await?;
        if !applied && !others_pending {
            stage::commit_resolved(&*client, schema_name, &group, newest).await?;
            let metrics = crate::metrics::global();
            #[allow(clippy::cast_precision_loss)]
            metrics
                .target_applied_timestamp_seconds
                .with_label_values(&[&group])
                .set(newest.nanos as f64 / 1e9);
            metrics.target_lag_seconds.with_label_values(&[&group]).set(age(newest));
            for &t in &touched {
                let count = stage::pending_count(&*client, schema_name, &tables[t].name).await?;
                #[allow(clippy::cast_precision_loss)]
                metrics
                    .stage_pending_mutations
                    .with_label_values(&[&group, &tables[t].table])
                    .set(count as f64);
            }
            if self.logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.logged_at = Some(Instant::now());
                tracing::info!(schema = %group, resolved = %newest, rows, tables = touched.len(),
                    took = ?started.elapsed(), lag = format!("{:.1}s", age(newest)),
                    "applied a resolved window");
            }
        } else if rows > 0 && best_effort {
            if self.logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.logged_at = Some(Instant::now());
                let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
                tracing::info!(schema = %group, rows, tables = ?names, took = ?started.elapsed(),
                    "best effort: applied staged rows");
            }
        } else if rows > 0 {
            tracing::info!(schema = %group, rows, "applied late rows below the applied resolved timestamp");
        }
        Ok(more)
    }

    /// With `--bestEffortWindow`, whether to apply as in best-effort mode now: once the applied
    /// resolved timestamp (`applied`) is at least the window old (or there is none yet), until
    /// it is within a quarter of the window again. Either way rows are applied in time order
    /// from staging, and the claim keeps each key's versions in order, so a switch loses or
    /// reorders nothing.
    fn switch(&mut self, applied: Option<Hlc>) -> bool {
        let window = self.config.sweep.best_effort_window;
        if window.is_zero() {
            return false;
        }
        let lag = applied.map_or(f64::INFINITY, age);
        let before = self.best_effort;
        let now = if lag >= window.as_secs_f64() {
            true
        } else if lag <= window.as_secs_f64() / 4.0 {
            false
        } else {
            before.unwrap_or(true)
        };
        if before != Some(now) {
            let lag = if lag.is_finite() {
                format!("{lag:.1}s")
            } else {
                "no resolved timestamp applied yet".to_owned()
            };
            if now {
                tracing::info!(schema = %self.writer.group, %lag, window = ?window,
                    "best effort: applying staged rows without waiting for resolved timestamps");
            } else {
                tracing::info!(schema = %self.writer.group, %lag, window = ?window,
                    "consistent: applying by resolved timestamp again");
            }
            self.best_effort = Some(now);
        }
        now
    }

    /// Some staging table of the schema still has rows at or before `upto` to apply.
    async fn any_pending(
        &self,
        client: &tokio_postgres::Client,
        upto: Hlc,
    ) -> Result<bool, SweepError> {
        let staging = &self.config.staging_schema;
        for name in stage::staged_tables(client, staging, &self.writer.parts).await? {
            if !stage::pending(client, staging, &name, None, upto, 1).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The schema's staging tables, and the source table each is for.
    async fn tables(
        &mut self,
        client: &tokio_postgres::Client,
        target: &mut AnyTarget,
    ) -> Result<Vec<Staging>, SweepError> {
        let parts = self.writer.parts.clone();
        let parts = &parts;
        let names = stage::staged_tables(client, &self.config.staging_schema, parts).await?;
        let known_of = |schema: &crate::target::schema::Schema| -> HashMap<String, String> {
            schema
                .tables
                .values()
                .map(|t| (stage::table_name(parts, &t.name), t.name.clone()))
                .collect()
        };
        let mut known = known_of(&target.schema());
        if names.iter().any(|n| !known.contains_key(n) && !self.foreign.contains(n)) {
            // A table created on the target since the schema was read.
            reload(target).await.map_err(|r| SweepError::Data(r.reason))?;
            known = known_of(&target.schema());
        }
        let scripted = self.config.script.is_some();
        for name in names.iter().filter(|n| !known.contains_key(*n)) {
            if !scripted && self.foreign.insert(name.clone()) {
                tracing::warn!(schema = %self.writer.group, staging_table = %name,
                    "a staging table whose name starts as this schema's maps to none of its \
                     tables: left alone, as another schema's (its name shares the prefix) or a \
                     table dropped from the target (its unapplied rows, if any, stay staged)");
            }
        }
        let prefix = stage::table_name(parts, "");
        let component = self.component.as_ref();
        Ok(names
            .into_iter()
            .filter_map(|name| {
                // A staging table no target table maps to holds rows only a userscript can
                // route; without one it is another schema's whose name shares this prefix
                // (`shop_public_x_t` of schema `public_x`), never staged for this one.
                let mine = match (component, known.get(&name)) {
                    (_, None) if !scripted => false,
                    (None, _) => true,
                    (Some(c), Some(t)) => c.tables.contains(t),
                    (Some(c), None) => c.unmapped,
                };
                let table = known.get(&name).map_or_else(
                    || name.strip_prefix(&prefix).unwrap_or(&name).to_owned(),
                    Clone::clone,
                );
                mine.then_some(Staging { name, table })
            })
            .collect())
    }

    /// The next rows to apply, in time order: every unapplied row after `after` and at or
    /// before `upto` below
    /// the first time some table's page ends at (that table may have more rows of that time),
    /// or, when one time fills a page, every row of that time.
    async fn read(
        &self,
        client: &tokio_postgres::Client,
        tables: &[Staging],
        after: Option<Hlc>,
        upto: Hlc,
    ) -> Result<Vec<(usize, Staged)>, SweepError> {
        let staging = &self.config.staging_schema;
        let scan = self.config.sweep.scan_size.max(1);
        let mut merged: Vec<(usize, Staged)> = Vec::new();
        let mut frontier: Option<Hlc> = None;
        for (i, t) in tables.iter().enumerate() {
            let page = stage::pending(client, staging, &t.name, after, upto, scan).await?;
            if page.len() >= scan
                && let Some(last) = page.last()
            {
                frontier = Some(frontier.map_or(last.time, |f| f.min(last.time)));
            }
            merged.extend(page.into_iter().map(|r| (i, r)));
        }
        if let Some(f) = frontier {
            merged.retain(|(_, r)| r.time < f);
            if merged.is_empty() {
                for (i, t) in tables.iter().enumerate() {
                    let rows = stage::pending_at(client, staging, &t.name, f).await?;
                    merged.extend(rows.into_iter().map(|r| (i, r)));
                }
            }
        }
        merged.sort_by(|(ta, a), (tb, b)| (a.time, ta).cmp(&(b.time, tb)).then(a.key.cmp(&b.key)));
        Ok(merged)
    }

    /// Logs, once per table, rows that arrived below a resolved timestamp already applied.
    fn log_late(&mut self, tables: &[Staging], rows: &[(usize, Staged)], applied: Hlc) {
        for (t, r) in rows {
            if r.time <= applied && self.late.insert(tables[*t].name.clone()) {
                tracing::warn!(schema = %self.writer.group, table = %tables[*t].table, time = %r.time,
                    applied = %applied,
                    "rows arrived at or below a resolved timestamp already applied (a changefeed \
                     restarted from an older cursor?): they are applied unless a newer version of \
                     their key already is");
            }
        }
    }

    /// Applies `rounds` (of time-ordered rows) two at a time: while one round's
    /// target transaction is written and committed, the next is claimed on another staging
    /// connection (its claims wait for the first's row locks where keys overlap). Target
    /// transactions commit in time order; each staging transaction commits after its own.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        pool: &mut Vec<tokio_postgres::Client>,
        target: &mut AnyTarget,
        tables: &[Staging],
        rounds: Vec<Vec<(usize, Staged)>>,
        held: &Held,
        rows: &mut usize,
        touched: &mut HashSet<usize>,
        inline_above: Option<Hlc>,
    ) -> Result<(), SweepError> {
        let mut prev: Option<Claimed> = None;
        for round in rounds {
            if self.stopping() || held.is_lost() {
                return Err(SweepError::Interrupted);
            }
            *rows += round.len();
            touched.extend(round.iter().map(|(t, _)| *t));
            let client = self.round_client(pool).await?;
            let schema = target.schema();
            let inline = inline_above.is_some_and(|h| round.iter().all(|(_, r)| r.time > h));
            let claimed = match prev.take() {
                Some(p) => {
                    let (done, next) = tokio::join!(
                        self.finish(target, tables, p, held),
                        self.claim(client, schema, tables, &round, inline)
                    );
                    pool.push(done?);
                    next
                }
                None => self.claim(client, schema, tables, &round, inline).await,
            };
            let claimed = match claimed {
                Err(SweepError::Stale(_)) => {
                    reload(target).await.map_err(|r| SweepError::Data(r.reason))?;
                    let client = self.round_client(pool).await?;
                    self.claim(client, target.schema(), tables, &round, inline).await.map_err(
                        |e| match e {
                            SweepError::Stale(why) => SweepError::Data(why),
                            e => e,
                        },
                    )?
                }
                other => other?,
            };
            prev = Some(claimed);
        }
        if let Some(p) = prev {
            pool.push(self.finish(target, tables, p, held).await?);
        }
        Ok(())
    }

    /// A target connection for rounds; with staging in the target's database each of its
    /// transactions checks the lease first, so a holder paused past its lease cannot write
    /// once another took over.
    async fn open_target(&self, held: &Held) -> Result<AnyTarget, SweepError> {
        let mut opened =
            crate::target::factory::open(&self.writer.spec).await.map_err(SweepError::Target)?;
        if self.config.target == self.config.staging
            && self.config.staging_dialect == crate::staging::StagingDialect::Postgres
        {
            opened.fence(Some(held.fence_sql()));
        }
        Ok(opened)
    }

    /// For each staging table, the group of tables connected by foreign keys its rows go to:
    /// rows of different groups may be applied at once (`--parallelism`). One group for all
    /// with a userscript (it may route a row to any table) or with parallelism 1.
    fn lane_of(&self, tables: &[Staging], schema: &crate::target::schema::Schema) -> Vec<usize> {
        if self.config.script.is_some() || self.config.sweep.parallelism <= 1 {
            return vec![0; tables.len()];
        }
        let groups = components(schema);
        tables
            .iter()
            .map(|t| {
                groups.iter().position(|g| g.tables.contains(&t.table)).unwrap_or_else(|| {
                    // Rows for no target table: the group that takes unmapped tables.
                    groups.iter().position(|g| g.unmapped).unwrap_or(0)
                })
            })
            .collect()
    }

    /// Applies `lanes` (each a group's rounds, no source transaction in two lanes) up to
    /// `--parallelism` at once, each lane's rounds in time order on a target connection of
    /// its own; the first error is returned once every lane stopped.
    #[allow(clippy::too_many_arguments)]
    async fn apply_lanes(
        &mut self,
        target: &mut AnyTarget,
        tables: &[Staging],
        lanes: Vec<Vec<Round>>,
        held: &Held,
        rows: &mut usize,
        touched: &mut HashSet<usize>,
        inline_above: Option<Hlc>,
    ) -> Result<(), SweepError> {
        let width = lanes.len().min(self.config.sweep.parallelism).max(1);
        while self.lanes.len() < width - 1 {
            let opened = self.open_target(held).await?;
            self.lanes.push(opened);
        }
        // Lanes go to workers largest first, each to the least loaded worker.
        let mut order: Vec<Vec<Round>> = lanes;
        order.sort_by_key(|lane| std::cmp::Reverse(lane.iter().map(Vec::len).sum::<usize>()));
        let mut work: Vec<(usize, Vec<Vec<Round>>)> = (0..width).map(|_| (0, Vec::new())).collect();
        for lane in order {
            let size = lane.iter().map(Vec::len).sum::<usize>();
            if let Some(w) = work.iter_mut().min_by_key(|(load, _)| *load) {
                w.0 += size;
                w.1.push(lane);
            }
        }
        let mut extra = std::mem::take(&mut self.lanes);
        let mut spare = std::mem::take(&mut self.spare);
        let mut targets: Vec<&mut AnyTarget> = Vec::with_capacity(width);
        targets.push(target);
        targets.extend(extra.iter_mut());
        let this = &*self;
        let results = futures_util::future::join_all(
            targets.into_iter().zip(work).enumerate().map(|(i, (target, (_, lanes)))| {
                let mut pool = if i == 0 { std::mem::take(&mut spare) } else { Vec::new() };
                async move {
                    let mut rows = 0;
                    let mut touched = HashSet::new();
                    let mut swept = Ok(());
                    for lane in lanes {
                        swept = this
                            .apply(
                                &mut pool,
                                target,
                                tables,
                                lane,
                                held,
                                &mut rows,
                                &mut touched,
                                inline_above,
                            )
                            .await;
                        if swept.is_err() {
                            break;
                        }
                    }
                    (swept, pool, rows, touched)
                }
            }),
        )
        .await;
        let mut first_error = None;
        for (swept, pool, n, t) in results {
            spare.extend(pool);
            *rows += n;
            touched.extend(t);
            if let Err(e) = swept {
                first_error.get_or_insert(e);
            }
        }
        self.spare = spare;
        match first_error {
            None => {
                self.lanes = extra;
                Ok(())
            }
            // Connections of a failed pass are opened again, as the first one is.
            Some(e) => Err(e),
        }
    }

    /// An idle staging connection for a round's transaction.
    async fn round_client(
        &self,
        pool: &mut Vec<tokio_postgres::Client>,
    ) -> Result<tokio_postgres::Client, SweepError> {
        while let Some(client) = pool.pop() {
            if !client.is_closed() {
                return Ok(client);
            }
        }
        self.connect().await
    }

    /// A new staging connection.
    async fn connect(&self) -> Result<tokio_postgres::Client, SweepError> {
        crate::conn::postgres::connect(&self.config.staging)
            .await
            .map_err(|e| SweepError::Unreachable(crate::error::with_causes(&e)))
    }

    /// Reads a round back into changes, claims the newest version of each key in a staging
    /// transaction left open on `client`, and runs the userscript: everything up to the
    /// target write, which [`Sweeper::finish`] does.
    async fn claim(
        &self,
        client: tokio_postgres::Client,
        schema: Arc<crate::target::schema::Schema>,
        tables: &[Staging],
        round: &[(usize, Staged)],
        inline: bool,
    ) -> Result<Claimed, SweepError> {
        let scripted = self.config.script.is_some();
        let mut changes =
            rows::changes(lines(tables, round)?, None, &schema, scripted).map_err(|e| {
                if e.unknown_table {
                    SweepError::Stale(format!("staged rows: {e}"))
                } else {
                    SweepError::Data(format!("staged rows: {e}"))
                }
            })?;
        // The newest version of each key in the round is the one claimed and written.
        let mut newest: HashMap<(usize, &str), usize> = HashMap::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            newest.insert((round[c.line].0, c.key.as_str()), i);
        }
        let mut versions: Vec<(Version, usize)> = newest
            .into_iter()
            .map(|((t, key), i)| {
                let time = changes[i].time;
                (Version { table: tables[t].name.clone(), key: key.to_owned(), time }, i)
            })
            .collect();
        versions.sort();
        let staging = &self.config.staging_schema;
        let sorted: Vec<&Version> = versions.iter().map(|(v, _)| v).collect();
        let fresh = if inline {
            vec![true; sorted.len()]
        } else {
            client.batch_execute("BEGIN").await?;
            let copy = self.writer.claim_copy(self.config.staging_dialect);
            stage::claim_with(&client, staging, &sorted, copy).await?
        };
        let mut kept: Vec<usize> =
            versions.iter().zip(&fresh).filter(|(_, f)| **f).map(|((_, i), _)| *i).collect();
        kept.sort_unstable();
        let mut transactions: Vec<SourceTransaction> = Vec::new();
        for i in kept {
            let c = &mut changes[i];
            let mutation = std::mem::replace(&mut c.mutation, placeholder());
            match transactions.last_mut() {
                Some(t) if t.position == Position::Hlc(c.time) => t.mutations.push(mutation),
                _ => transactions.push(SourceTransaction {
                    mutations: vec![mutation],
                    position: Position::Hlc(c.time),
                    commit_nanos: c.time.nanos,
                }),
            }
        }
        if let Some(pool) = &self.config.script {
            let key_of = |t: &str| schema.table(t).map(|t| t.key_names());
            let mut scripted = Vec::with_capacity(transactions.len());
            for t in transactions {
                let group = &self.writer.group;
                let t = crate::script::transform::schema_level(
                    pool,
                    group,
                    SourceTag::Changefeed,
                    t,
                    key_of,
                )
                .await
                .map_err(|e| SweepError::Data(format!("userscript: {e}")))?;
                scripted.push(t);
            }
            transactions = scripted;
        }
        rows::check_columns(&schema, transactions.iter().flat_map(|t| &t.mutations))
            .map_err(SweepError::Stale)?;
        transactions.retain(|t| !t.mutations.is_empty());
        // Every staged row of the round is applied once the target commits: written, or older
        // than one written.
        let mut by_table: HashMap<usize, Vec<Version>> = HashMap::new();
        for (t, r) in round {
            by_table.entry(*t).or_default().push(Version {
                table: tables[*t].name.clone(),
                key: r.key.clone(),
                time: r.time,
            });
        }
        let dropped = fresh.iter().filter(|f| !**f).count();
        let inline = inline.then(|| {
            let staged: Vec<(&str, Vec<&Version>)> = by_table
                .iter()
                .map(|(t, versions)| (tables[*t].name.as_str(), versions.iter().collect()))
                .collect();
            stage::claim_and_mark_sql(staging, &sorted, &staged)
        });
        Ok(Claimed { client, inline, transactions, by_table, dropped })
    }

    /// Writes a claimed round in one target transaction while its applied marks go into its
    /// staging transaction, then commits staging (after the target); gives the connection back.
    async fn finish(
        &self,
        target: &mut AnyTarget,
        tables: &[Staging],
        claimed: Claimed,
        held: &Held,
    ) -> Result<tokio_postgres::Client, SweepError> {
        let Claimed { client, inline, transactions, by_table, dropped } = claimed;
        let staging = &self.config.staging_schema;
        if let Some(sql) = inline {
            // One transaction on the target, which is staging's database too: the lease's
            // fence, the claims and the marks, then the rows; one commit.
            let fence = held.fence_sql();
            if transactions.is_empty() {
                client.batch_execute(&format!("BEGIN; {fence}; {sql}; COMMIT")).await?;
            } else {
                target.fence(Some(format!("{fence}; {sql}")));
                let written = target.apply(&transactions).await;
                target.fence(Some(fence));
                written.map_err(SweepError::Target)?;
            }
            self.count(tables, &by_table, dropped);
            return Ok(client);
        }
        let marking = async {
            for (t, versions) in &by_table {
                let refs: Vec<&Version> = versions.iter().collect();
                stage::mark_staged_applied(&client, staging, &tables[*t].name, &refs).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        let writing = async {
            if !transactions.is_empty() {
                target.apply(&transactions).await.map_err(SweepError::Target)?;
            }
            Ok::<_, SweepError>(())
        };
        let (written, marked) = tokio::join!(writing, marking);
        written?;
        marked?;
        client.batch_execute("COMMIT").await?;
        self.count(tables, &by_table, dropped);
        Ok(client)
    }

    /// Counts a round's applied rows and dropped versions.
    fn count(&self, tables: &[Staging], by_table: &HashMap<usize, Vec<Version>>, dropped: usize) {
        let metrics = crate::metrics::global();
        let group = &self.writer.group;
        for (t, versions) in by_table {
            let labels = [group.as_str(), tables[*t].table.as_str()];
            metrics.mutations_applied.with_label_values(&labels).inc_by(versions.len() as u64);
        }
        if dropped > 0 {
            metrics
                .stage_duplicate_mutations_total
                .with_label_values(&[group, ""])
                .inc_by(dropped as u64);
        }
    }

    /// Deletes applied rows older than `--retireOffset` behind the applied resolved timestamp.
    async fn retire(&self, client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        let staging = &self.config.staging_schema;
        let Some(applied) = stage::newest_applied(client, staging, &self.writer.group).await?
        else {
            return Ok(());
        };
        let offset = i64::try_from(self.config.sweep.retire_offset.as_nanos()).unwrap_or(i64::MAX);
        let before = Hlc { nanos: applied.nanos.saturating_sub(offset), logical: 0 };
        for name in stage::staged_tables(client, staging, &self.writer.parts).await? {
            let gone = stage::retire(client, staging, &name, before).await?;
            if gone > 0 {
                tracing::debug!(table = %name, rows = gone, "retired applied staged rows");
            }
        }
        Ok(())
    }
}

/// The staged rows of a round as changefeed lines again.
fn lines(tables: &[Staging], round: &[(usize, Staged)]) -> Result<Vec<Line>, SweepError> {
    round
        .iter()
        .map(|(t, r)| {
            let bad = |what: &str, e: &dyn std::fmt::Display| {
                SweepError::Data(format!(
                    "staged row of {} at {} key {}: {what}: {e}",
                    tables[*t].name, r.time, r.key
                ))
            };
            let key: Vec<Json> = serde_json::from_str(&r.key).map_err(|e| bad("key", &e))?;
            let object = |bytes: &[u8], what: &str| -> Result<Option<Fields>, SweepError> {
                let json = Staged::json(bytes).map_err(|e| bad(what, &e))?;
                let text = std::str::from_utf8(&json).map_err(|e| bad(what, &e))?;
                super::payload::read_fields(text).map_err(|e| bad(what, &e))
            };
            let after = if r.deletion { None } else { object(&r.mutation, "mut")? };
            let before = match &r.before {
                Some(b) => object(b, "before")?,
                None => None,
            };
            Ok(Line {
                table: Some(tables[*t].table.clone()),
                key: Some(key),
                after,
                before,
                updated: r.time,
            })
        })
        .collect()
}

/// `rows` (time-ordered) split into lanes that may be applied at once: rows of tables in
/// different groups (`lane_of`, per staging table) go to different lanes, except that the
/// groups of one source transaction (one time) share a lane. Each lane keeps the rows' order.
fn lanes_of(rows: Vec<(usize, Staged)>, lane_of: &[usize]) -> Vec<Vec<(usize, Staged)>> {
    let groups = lane_of.iter().copied().max().map_or(1, |m| m + 1);
    if groups <= 1 {
        return if rows.is_empty() { Vec::new() } else { vec![rows] };
    }
    let root = crate::sequencer::parallel::find;
    let mut parent: Vec<usize> = (0..groups).collect();
    let group = |t: usize| lane_of.get(t).copied().unwrap_or(0);
    let mut i = 0;
    while i < rows.len() {
        let time = rows[i].1.time;
        let first = root(&mut parent, group(rows[i].0));
        let mut j = i + 1;
        while j < rows.len() && rows[j].1.time == time {
            let other = root(&mut parent, group(rows[j].0));
            parent[other] = first;
            j += 1;
        }
        i = j;
    }
    let mut out: Vec<Vec<(usize, Staged)>> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for row in rows {
        let r = root(&mut parent, group(row.0));
        let at = *slot.entry(r).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[at].push(row);
    }
    out
}

/// Rounds by lane of `rows` (time-ordered), and, when `hold`, the rows of each lane's last
/// round short of `flush` rows and of `limit` times, to be written with the next page.
#[allow(clippy::type_complexity)]
fn cut(
    rows: Vec<(usize, Staged)>,
    lane_of: &[usize],
    flush: usize,
    limit: usize,
    hold: bool,
) -> (Vec<Vec<Round>>, Vec<(usize, Staged)>) {
    let mut lanes = Vec::new();
    let mut carry = Vec::new();
    for lane in lanes_of(rows, lane_of) {
        let mut cut = rounds(lane, flush, limit);
        if hold
            && let Some(last) = cut.last()
            && last.len() < flush
            && distinct_times(last) < limit
            && let Some(short) = cut.pop()
        {
            carry.extend(short);
        }
        if !cut.is_empty() {
            lanes.push(cut);
        }
    }
    carry.sort_by(|(ta, a), (tb, b)| (a.time, ta).cmp(&(b.time, tb)).then(a.key.cmp(&b.key)));
    (lanes, carry)
}

/// How many distinct times `rows` (time-ordered) hold.
fn distinct_times(rows: &[(usize, Staged)]) -> usize {
    rows.windows(2).filter(|w| w[0].1.time != w[1].1.time).count() + usize::from(!rows.is_empty())
}

/// Cuts time-ordered rows into rounds of at least `flush` rows and at most `limit` distinct
/// timestamps, never splitting a timestamp.
fn rounds(rows: Vec<(usize, Staged)>, flush: usize, limit: usize) -> Vec<Vec<(usize, Staged)>> {
    let mut out = Vec::new();
    let mut round: Vec<(usize, Staged)> = Vec::new();
    let mut times = 0;
    for row in rows {
        let new_time = round.last().is_none_or(|(_, last)| last.time != row.1.time);
        if new_time && !round.is_empty() && (round.len() >= flush.max(1) || times >= limit.max(1)) {
            out.push(std::mem::take(&mut round));
            times = 0;
        }
        if new_time {
            times += 1;
        }
        round.push(row);
    }
    if !round.is_empty() {
        out.push(round);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(nanos: i64, key: &str) -> (usize, Staged) {
        let time = Hlc { nanos, logical: 0 };
        (
            0,
            Staged {
                time,
                key: key.into(),
                mutation: b"{}".to_vec(),
                before: None,
                deletion: false,
            },
        )
    }

    #[test]
    fn rounds_keep_timestamps_whole() {
        let rows =
            vec![row(1, "a"), row(1, "b"), row(2, "a"), row(3, "a"), row(3, "b"), row(3, "c")];
        let sizes = |r: Vec<Vec<(usize, Staged)>>| r.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            sizes(rounds(rows.clone(), 2, 1000)),
            [2, 4],
            "at least 2 rows each, timestamps whole"
        );
        assert_eq!(sizes(rounds(rows.clone(), 1000, 2)), [3, 3], "at most two timestamps");
        assert_eq!(sizes(rounds(rows, 1000, 1000)), [6]);
    }

    fn in_table(table: usize, nanos: i64, key: &str) -> (usize, Staged) {
        let (_, staged) = row(nanos, key);
        (table, staged)
    }

    fn shape(lanes: &[Vec<(usize, Staged)>]) -> Vec<Vec<(usize, i64)>> {
        lanes.iter().map(|l| l.iter().map(|(t, r)| (*t, r.time.nanos)).collect()).collect()
    }

    #[test]
    fn lanes_split_unconnected_groups_but_never_a_source_transaction() {
        // Tables 0 and 1 are one group (a foreign key), table 2 another, table 3 a third.
        let lane_of = [0, 0, 1, 2];
        let rows = vec![
            in_table(0, 1, "a"),
            in_table(2, 2, "b"),
            in_table(1, 3, "c"),
            in_table(3, 4, "d"),
            in_table(2, 5, "e"),
        ];
        assert_eq!(
            shape(&lanes_of(rows.clone(), &lane_of)),
            [vec![(0, 1), (1, 3)], vec![(2, 2), (2, 5)], vec![(3, 4)]],
            "one lane per group, each in time order"
        );
        // Time 4 also writes table 2: groups 1 and 2 then share a lane, from their first row.
        let mut joined = rows;
        joined.insert(4, in_table(2, 4, "f"));
        assert_eq!(
            shape(&lanes_of(joined, &lane_of)),
            [vec![(0, 1), (1, 3)], vec![(2, 2), (3, 4), (2, 4), (2, 5)]],
        );
        // One group for every table (a userscript, --parallelism 1): one lane as it came.
        let one = lanes_of(vec![in_table(2, 1, "a"), in_table(0, 2, "b")], &[0, 0, 0]);
        assert_eq!(shape(&one), [vec![(2, 1), (0, 2)]]);
        assert!(lanes_of(Vec::new(), &lane_of).is_empty());
    }

    #[test]
    fn a_short_last_round_waits_for_the_next_page_only_when_held() {
        let lane_of = [0, 1];
        let rows: Vec<(usize, Staged)> =
            (0..5).map(|n| in_table(0, n, "a")).chain([in_table(1, 9, "z")]).collect();
        let (lanes, carry) = cut(rows.clone(), &lane_of, 2, 1000, true);
        let sizes: Vec<Vec<usize>> =
            lanes.iter().map(|l| l.iter().map(Vec::len).collect()).collect();
        assert_eq!(sizes, [vec![2, 2]], "rounds of 2; table 1's lone row and table 0's fifth wait");
        assert_eq!(shape(&[carry]), [vec![(0, 4), (1, 9)]]);
        let (lanes, carry) = cut(rows.clone(), &lane_of, 2, 1000, false);
        let sizes: Vec<Vec<usize>> =
            lanes.iter().map(|l| l.iter().map(Vec::len).collect()).collect();
        assert_eq!(sizes, [vec![2, 2, 1], vec![1]], "the reads' end writes everything");
        assert!(carry.is_empty());
        // A round at --timestampLimit is written even when short of --flushSize.
        let (lanes, carry) = cut(rows, &lane_of, 100, 5, true);
        assert_eq!(lanes.iter().map(Vec::len).collect::<Vec<_>>(), [1]);
        assert_eq!(shape(&[carry]), [vec![(1, 9)]]);
    }

    #[test]
    fn staged_json_is_read_plain_or_gzipped() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"a":1}"#).expect("gzip");
        let packed = gz.finish().expect("gzip");
        assert_eq!(&*Staged::json(&packed).expect("gunzip"), br#"{"a":1}"#);
        assert_eq!(&*Staged::json(br#"{"a":1}"#).expect("plain"), br#"{"a":1}"#);
    }
}
