//! A PostgreSQL/CockroachDB [`Target`]: each batch is planned by the applier and written in
//! one transaction; the schema is re-read when a write names an unknown table or column.
//!
//! With a userscript, table-level handlers run right before the write, and tables with an
//! `onWrite` hand their rows to the script instead: its `getTX()` and `write()` run inside
//! the same target transaction, which commits only if every write and handler succeeded.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_postgres::Client;

use crate::conn::ConnString;
use crate::script::transform::table_level;
use crate::script::{HostError, Meta, RowOp, ScriptPool, SourceTag};
use crate::staging::Committed;
use crate::target::batch::Grouping;
use crate::target::postgres::PgScriptHost;
use crate::target::postgres::apply::{
    ApplyError, Dialect, Started, StartedError, StatementCache, Wire, execute, execute_transaction,
    plan, render, start,
};
use crate::target::postgres::introspect::{Schema, introspect};
use crate::target::{Planned, Planner, Target, TargetError, Upcoming};
use crate::types::mutation::{Mutation, Op, Position, SourceTransaction};
use crate::types::{Name, Row, Value};

/// Operations for tables with an `onWrite`: (registered name, target table, operations).
type OnWriteBatches = Vec<(String, String, Vec<RowOp>)>;

/// Writes batches into one schema of a PostgreSQL or CockroachDB database.
pub struct PgTarget {
    client: Arc<Client>,
    database: String,
    schema_name: String,
    schema: Arc<Schema>,
    /// The schema the planner plans with (the same as `schema`).
    shared_schema: Arc<std::sync::Mutex<Arc<Schema>>>,
    dialect: Dialect,
    collapse: bool,
    script: Option<Scripted>,
    refresh_every: Option<std::time::Duration>,
    refreshed_at: std::time::Instant,
    cache: StatementCache,
    /// The next batch, sent while the one before committed; committed in its own turn.
    in_flight: Option<InFlight>,
    /// Where to open a new connection when the current one is lost (`None`: tests that hand
    /// in a client and want a lost connection to stay lost).
    reconnect: Option<ConnString>,
    /// The database was unavailable on a session still open (read-only during a failover):
    /// the next write takes a new one, as a session keeps what it started with.
    new_session: bool,
    /// The last failed write broke a foreign key: the batch is written again in source
    /// order before the failure is reported (see [`PgTarget::in_source_order`]).
    broke_foreign_key: bool,
}

/// The userscript whose table-level handlers run in each write.
struct Scripted {
    pool: Arc<ScriptPool>,
    /// The target schema as the script names it (`db.public`).
    schema: String,
    /// Which source, for `meta`.
    source: SourceTag,
}

impl Scripted {
    /// Whether any mutation of `transactions` is for a table with table-level handlers
    /// (`onRowUpsert`, `onRowDelete` or `onWrite`). A batch with none is written as if no
    /// script were loaded: planned ahead, with no crossing into the engine and no copies.
    fn handles(&self, transactions: &[SourceTransaction]) -> bool {
        handles_any(self.pool.configured(), &self.schema, transactions)
    }
}

fn handles_any(
    configured: &crate::script::Configured,
    schema: &str,
    transactions: &[SourceTransaction],
) -> bool {
    if configured.tables.is_empty() {
        return false;
    }
    let mut last: Option<&str> = None;
    transactions.iter().flat_map(|t| &t.mutations).any(|m| {
        // Rows of one table come in runs: look each run's table up once.
        if last == Some(m.table.as_str()) {
            return false;
        }
        last = Some(&m.table);
        configured.table(schema, &m.table).is_some()
    })
}

/// A batch whose BEGIN and statements are on the connection, uncommitted.
struct InFlight {
    /// The position of its last transaction (which batch it is).
    position: Position,
    /// The schema it was planned on.
    schema: Arc<Schema>,
    wires: Arc<Vec<Wire>>,
    started: Started,
}

impl PgTarget {
    /// Introspects `schema` and gets ready to write into it.
    pub async fn new(
        client: Client,
        schema: &str,
        dialect: Dialect,
        collapse: bool,
    ) -> Result<Self, tokio_postgres::Error> {
        let mut info = introspect(&client, schema).await?;
        let database: String = client.query_one("SELECT current_database()", &[]).await?.get(0);
        info.label = format!("{database}.{schema}");
        let info = Arc::new(info);
        Ok(Self {
            client: Arc::new(client),
            database,
            schema_name: schema.to_owned(),
            shared_schema: Arc::new(std::sync::Mutex::new(info.clone())),
            schema: info,
            dialect,
            collapse,
            script: None,
            refresh_every: None,
            refreshed_at: std::time::Instant::now(),
            cache: StatementCache::default(),
            in_flight: None,
            reconnect: None,
            new_session: false,
            broke_foreign_key: false,
        })
    }

    /// Replaces a lost connection (killed, server restarted, network cut) with a new one to
    /// `conn` before the next write, so the sequencer's retry of the batch runs on it.
    pub fn with_reconnect(mut self, conn: ConnString) -> Self {
        self.reconnect = Some(conn);
        self
    }

    /// Opens a new connection when the current one is closed. What was prepared or sent ahead
    /// on the old one is gone with it.
    async fn ensure_connected(&mut self) -> Result<(), TargetError> {
        if !self.client.is_closed() && !self.new_session {
            return Ok(());
        }
        let Some(conn) = &self.reconnect else { return Ok(()) };
        let client = crate::conn::postgres::connect(conn).await.map_err(|e| {
            TargetError::unavailable(format!(
                "the target connection was lost, and reconnecting failed: {}",
                crate::error::with_causes(&e)
            ))
        })?;
        if !self.new_session {
            tracing::info!("the target connection was lost; writing on a new one");
        }
        self.new_session = false;
        self.client = Arc::new(client);
        self.cache.clear();
        self.in_flight = None;
        Ok(())
    }

    /// Re-reads the target schema at least this often (`--schemaRefresh`); `None` only on
    /// drift (a write naming an unknown table or column).
    pub fn with_schema_refresh(mut self, every: Option<std::time::Duration>) -> Self {
        self.refresh_every = every;
        self
    }

    /// Runs the userscript's table-level handlers (and `onWrite`) in each write;
    /// `script_schema` is the target schema as the script names it (`db.public`).
    pub fn with_script(
        mut self,
        pool: Arc<ScriptPool>,
        script_schema: &str,
        source: SourceTag,
    ) -> Self {
        self.script = Some(Scripted { pool, schema: script_schema.to_owned(), source });
        self
    }

    async fn refresh(&mut self) -> Result<(), tokio_postgres::Error> {
        let mut schema = introspect(&*self.client, &self.schema_name).await?;
        schema.label = format!("{}.{}", self.database, self.schema_name);
        self.schema = Arc::new(schema);
        if let Ok(mut shared) = self.shared_schema.lock() {
            *shared = self.schema.clone();
        }
        self.refreshed_at = std::time::Instant::now();
        self.cache.clear();
        Ok(())
    }

    /// The schema as last read.
    pub fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    /// Runs `sql` first in every transaction this writer starts (see
    /// [`super::apply::StatementCache::fence`]).
    pub fn fence(&mut self, sql: Option<String>) {
        self.cache.fence(sql);
    }

    /// Reads the target schema again now.
    pub async fn reload_schema(&mut self) -> Result<(), TargetError> {
        self.ensure_connected().await?;
        self.refresh().await.map_err(schema_error)
    }

    /// `--schemaRefresh` has passed since the schema was read.
    fn refresh_due(&self) -> bool {
        self.refresh_every.is_some_and(|every| self.refreshed_at.elapsed() >= every)
    }

    async fn refresh_if_due(&mut self) -> Result<(), TargetError> {
        if self.refresh_due() {
            self.refresh().await.map_err(schema_error)?;
        }
        Ok(())
    }

    /// Writes rendered statements in one transaction; `mutations` are what they were planned
    /// from, to name a failing row.
    async fn write(
        &mut self,
        wires: &Arc<Vec<Wire>>,
        mutations: &[&Mutation],
    ) -> Result<(), TargetError> {
        if let Err(e) = execute_transaction(&self.client, &mut self.cache, wires).await {
            return Err(self.failed(e, mutations).await);
        }
        self.count_written(wires);
        Ok(())
    }

    /// A failed write, counted, with the first failing row when it is a data error. A broken
    /// foreign key is only noted: [`PgTarget::in_source_order`] writes the batch again first.
    async fn failed(&mut self, e: ApplyError, mutations: &[&Mutation]) -> TargetError {
        self.count_error(&e);
        if e.is_foreign_key_violation() {
            self.broke_foreign_key = true;
            return classify(e);
        }
        self.with_failing_row(classify(e), mutations).await
    }

    /// After a batch broke a foreign key, writes it again exactly in source order (one
    /// statement per run of one table and operation, nothing collapsed or reordered).
    ///
    /// Coalescing source transactions and collapsing each key to its last state can produce a
    /// combination no source commit had: MySQL writes no binlog event for the rows an
    /// `ON DELETE CASCADE` removes, so `INSERT p(1); INSERT c(10, p=1); DELETE p(1)` collapses
    /// to {c: upsert, p: delete}, and the upsert breaks the target's foreign key. In source
    /// order the target ends where the source transactions one by one leave it; when that
    /// fails too, the error is the target's own, with the first failing row.
    async fn in_source_order(
        &mut self,
        outcome: Result<(), TargetError>,
        mutations: &[&Mutation],
    ) -> Result<(), TargetError> {
        if !std::mem::take(&mut self.broke_foreign_key) {
            return outcome;
        }
        tracing::info!(
            rows = mutations.len(),
            "the batch broke a foreign key once coalesced; writing it again in source order"
        );
        let statements =
            plan(&self.schema, mutations.iter().copied(), Grouping::SourceOrder, self.dialect)
                .map_err(classify)?;
        let wires = Arc::new(render(&statements).map_err(classify)?);
        match execute_transaction(&self.client, &mut self.cache, &wires).await {
            Ok(_) => {
                self.count_written(&wires);
                Ok(())
            }
            Err(e) => {
                self.count_error(&e);
                Err(self.with_failing_row(classify(e), mutations).await)
            }
        }
    }

    /// Counts committed rows.
    fn count_written(&self, wires: &[Wire]) {
        let metrics = crate::metrics::global();
        for w in wires {
            metrics.count_applied(self.schema.label(), &w.table, w.op, w.rows);
        }
    }

    async fn plan<'a>(
        &mut self,
        mutations: &[&'a Mutation],
    ) -> Result<Vec<crate::target::postgres::apply::Statement<'a>>, TargetError> {
        match plan(&self.schema, mutations.iter().copied(), self.collapse, self.dialect) {
            Ok(s) => Ok(s),
            // A table or column we do not know may have been added since we looked: look again.
            Err(ApplyError::UnknownTable { .. } | ApplyError::UnknownColumn { .. }) => {
                self.refresh().await.map_err(schema_error)?;
                plan(&self.schema, mutations.iter().copied(), self.collapse, self.dialect)
                    .map_err(classify)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Mutations of tables with an `onWrite`, as the script's row operations, by registered
    /// name; the rest are returned for the default write.
    fn split_on_write<'a>(
        &self,
        mutations: &[&'a Mutation],
    ) -> (Vec<&'a Mutation>, OnWriteBatches) {
        let Some(Scripted { pool, schema: script_schema, source }) = &self.script else {
            return (mutations.to_vec(), Vec::new());
        };
        let configured = pool.configured();
        let mut rest = Vec::new();
        let mut by_table: OnWriteBatches = Vec::new();
        for &m in mutations {
            let Some(config) = configured.table(script_schema, &m.table).filter(|c| c.write) else {
                rest.push(m);
                continue;
            };
            let pk = self.schema.table(&m.table).map(|t| t.key_values(&m.row)).unwrap_or_default();
            let meta = Meta {
                schema: script_schema.clone(),
                table: m.table.clone(),
                source: Some(*source),
                time: None,
                before: None,
            };
            let op = RowOp {
                data: (m.op == Op::Upsert).then(|| m.row.clone()),
                before: m.before.clone(),
                meta,
                pk,
            };
            match by_table.iter_mut().find(|(name, _, _)| *name == config.name) {
                Some(entry) => entry.2.push(op),
                None => by_table.push((config.name.clone(), m.table.clone(), vec![op])),
            }
        }
        (rest, by_table)
    }
}

fn classify(e: ApplyError) -> TargetError {
    TargetError::from(e)
}

/// `write()` inside `onWrite`: the batched applier, in the target transaction.
fn applier_writer(
    client: Arc<Client>,
    runtime: Handle,
    schema: Arc<Schema>,
    table: String,
    dialect: Dialect,
) -> crate::target::postgres::Writer {
    Box::new(move |ops: Vec<RowOp>| {
        let target = schema.table(&table);
        let key_columns: Vec<String> = target
            .map(|t| t.key.iter().map(|&i| t.columns[i].name.clone()).collect())
            .unwrap_or_default();
        let mutations: Vec<Mutation> = ops
            .into_iter()
            .map(|op| match op.data {
                Some(row) => Mutation::upsert(&table, row),
                None => Mutation::delete(
                    &table,
                    key_columns
                        .iter()
                        .map(|c| Name::from(c.as_str()))
                        .zip(op.pk.into_iter().map(Value::String))
                        .collect::<Row>(),
                ),
            })
            .collect();
        let statements = plan(&schema, &mutations, true, dialect)
            .map_err(|e| HostError { message: e.to_string(), sqlstate: None })?;
        runtime.block_on(execute(&*client, &statements)).map(|_| ()).map_err(|e| match &e {
            ApplyError::Database { message, code, .. } => HostError {
                message: message.clone(),
                sqlstate: code
                    .as_ref()
                    .and_then(|c| c.strip_prefix("SQLSTATE ").map(str::to_owned)),
            },
            other => HostError { message: other.to_string(), sqlstate: None },
        })
    })
}

/// Reading the target's schema failed.
fn schema_error(e: tokio_postgres::Error) -> TargetError {
    TargetError::reading_schema(e.to_string(), crate::error::postgres_kind(&e))
}

impl PgTarget {
    fn count_error(&self, e: &ApplyError) {
        if let ApplyError::Database { table, .. } = e {
            let metrics = crate::metrics::global();
            metrics.apply_errors_total.with_label_values(&[self.schema.label(), table]).inc();
        }
    }

    /// A data error (not a transient one) gains the first row the target refuses.
    async fn with_failing_row(&self, mut e: TargetError, mutations: &[&Mutation]) -> TargetError {
        if !e.is_transient()
            && let Some(found) = self.failing_row(mutations).await
        {
            e.message = format!("{} ({found})", e.message);
        }
        e
    }

    /// Replays `mutations` one by one under savepoints, in a transaction that is rolled back,
    /// to name the first row the target refuses: `first failing row: table "t", key [..]`.
    async fn failing_row(&self, mutations: &[&Mutation]) -> Option<String> {
        self.client.batch_execute("BEGIN").await.ok()?;
        let mut found = None;
        for &m in mutations {
            let Ok(statements) = plan(&self.schema, [m], true, self.dialect) else {
                continue;
            };
            if self.client.batch_execute("SAVEPOINT replicator_probe").await.is_err() {
                break;
            }
            if execute(&*self.client, &statements).await.is_err() {
                let key =
                    self.schema.table(&m.table).map(|t| t.key_values(&m.row)).unwrap_or_default();
                found = Some(format!(
                    "first failing row: table {:?}, key [{}]",
                    m.table,
                    key.join(", ")
                ));
                break;
            }
            let _ = self.client.batch_execute("RELEASE SAVEPOINT replicator_probe").await;
        }
        let _ = self.client.batch_execute("ROLLBACK").await;
        found
    }
}

/// A batch planned ahead: its statements in wire form, and the schema they were planned on.
struct PrePlanned {
    schema: Arc<Schema>,
    wires: Arc<Vec<Wire>>,
}

impl PgTarget {
    /// Rolls back a batch started ahead that will not be committed.
    async fn abandon(&mut self, in_flight: InFlight) {
        let _ = in_flight.started.outcome(&mut self.cache).await;
        let _ = self.client.batch_execute("ROLLBACK").await;
    }

    /// Writes a batch planned ahead. With the next batch planned too, this one's COMMIT and
    /// the next one's BEGIN and statements go out together; the next stays uncommitted until
    /// its own turn (so a failed COMMIT here still stops everything after it).
    async fn write_ahead(
        &mut self,
        wires: Arc<Vec<Wire>>,
        mutations: &[&Mutation],
        upcoming: Option<Upcoming<'_>>,
    ) -> Result<(), TargetError> {
        let Some(upcoming) = upcoming else { return self.write(&wires, mutations).await };
        let copy = self.cache.use_copy(&wires);
        let started = match start(&self.client, &mut self.cache, wires.clone(), copy).await {
            Ok(started) => started,
            Err(e) => {
                self.count_error(&e);
                return Err(classify(e));
            }
        };
        self.finish(started, wires, mutations, Some(upcoming)).await
    }

    /// Waits for a started batch's statements, then commits it (starting the next one).
    async fn finish(
        &mut self,
        started: Started,
        wires: Arc<Vec<Wire>>,
        mutations: &[&Mutation],
        upcoming: Option<Upcoming<'_>>,
    ) -> Result<(), TargetError> {
        match started.outcome(&mut self.cache).await {
            Ok(()) => self.commit_and_start(&wires, mutations, upcoming).await,
            Err(StartedError::CopyRefused(e)) => {
                tracing::debug!(error = %e, "COPY refused the batch (keys already on the target?); writing it with upserts");
                let _ = self.client.batch_execute("ROLLBACK").await;
                self.write(&wires, mutations).await
            }
            Err(StartedError::Failed(e)) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(self.failed(e, mutations).await)
            }
        }
    }

    /// Sends COMMIT, and right behind it the next batch when its plan is ready, then waits for
    /// the COMMIT's answer.
    async fn commit_and_start(
        &mut self,
        wires: &[Wire],
        mutations: &[&Mutation],
        upcoming: Option<Upcoming<'_>>,
    ) -> Result<(), TargetError> {
        use std::future::Future as _;
        let first = wires.first().map_or("", |w| w.table.as_str()).to_owned();
        let client = self.client.clone();
        let mut commit = std::pin::pin!(client.batch_execute("COMMIT"));
        // The first poll puts COMMIT on the connection, ahead of the next batch's BEGIN.
        let early =
            std::future::poll_fn(|cx| std::task::Poll::Ready(commit.as_mut().poll(cx))).await;
        let mut next = None;
        if let Some(mut u) = upcoming
            && let Some(last) = u.transactions.last()
        {
            let position = last.position.clone();
            // Planned while this batch was written: usually ready by now.
            if let Some(plan) = u.take_plan().await.and_then(|p| p.downcast::<PrePlanned>().ok()) {
                next = Some((position, plan));
            }
        }
        if let Some((position, plan)) = next.filter(|(_, p)| Arc::ptr_eq(&p.schema, &self.schema)) {
            // Not started (a statement could not be prepared): it is written in its turn.
            let copy = self.cache.use_copy(&plan.wires);
            if let Ok(started) =
                start(&self.client, &mut self.cache, plan.wires.clone(), copy).await
            {
                self.in_flight =
                    Some(InFlight { position, schema: plan.schema, wires: plan.wires, started });
            }
        }
        let committed = match early {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => commit.await,
        };
        if let Err(e) = committed {
            if let Some(next) = self.in_flight.take() {
                self.abandon(next).await;
            }
            let e = crate::target::postgres::apply::database_error(&first, e);
            return Err(self.failed(e, mutations).await);
        }
        self.count_written(wires);
        Ok(())
    }
}

impl PgTarget {
    async fn write_planned(
        &mut self,
        transactions: &[SourceTransaction],
        planned: Option<Planned>,
        upcoming: Option<Upcoming<'_>>,
    ) -> Result<(), TargetError> {
        self.ensure_connected().await?;
        let position = transactions.last().map(|t| &t.position);
        let mutations =
            || -> Vec<&Mutation> { transactions.iter().flat_map(|t| &t.mutations).collect() };
        if let Some(in_flight) = self.in_flight.take() {
            if !self.refresh_due()
                && Some(&in_flight.position) == position
                && Arc::ptr_eq(&in_flight.schema, &self.schema)
            {
                // This batch went out while the one before committed.
                let InFlight { started, wires, .. } = in_flight;
                let mutations = mutations();
                let outcome = self.finish(started, wires, &mutations, upcoming).await;
                return self.in_source_order(outcome, &mutations).await;
            }
            self.abandon(in_flight).await;
        }
        self.refresh_if_due().await?;
        let planned = planned.and_then(|p| p.downcast::<PrePlanned>().ok());
        match planned {
            // The planner plans only batches no table-level handler touches.
            Some(p) if Arc::ptr_eq(&p.schema, &self.schema) => {
                let mutations = mutations();
                let outcome = self.write_ahead(p.wires, &mutations, upcoming).await;
                self.in_source_order(outcome, &mutations).await
            }
            _ => self.write_batch(transactions).await,
        }
    }

    async fn write_batch(&mut self, transactions: &[SourceTransaction]) -> Result<(), TargetError> {
        self.ensure_connected().await?;
        self.refresh_if_due().await?;
        // Planned from the transactions' own rows (no copies); a script's output is owned here.
        let scripted: Vec<Mutation>;
        let mutations: Vec<&Mutation> =
            match self.script.as_ref().filter(|s| s.handles(transactions)) {
                None => transactions.iter().flat_map(|t| &t.mutations).collect(),
                Some(Scripted { pool, schema: script_schema, source }) => {
                    let schema = &self.schema;
                    let key_of = |table: &str| schema.table(table).map(|t| t.key_names());
                    scripted = table_level(pool, script_schema, *source, transactions, key_of)
                        .await
                        .map_err(|e| TargetError::data(e.to_string()))?;
                    scripted.iter().collect()
                }
            };
        // Resolve unknown names before splitting, so onWrite tables see the fresh schema too.
        let mut statements = self.plan(&mutations).await?;
        let (rest, on_write) = self.split_on_write(&mutations);
        if !on_write.is_empty() {
            statements = self.plan(&rest).await?;
        }
        let transient = |e: tokio_postgres::Error| {
            TargetError::of_kind(e.to_string(), crate::error::postgres_kind(&e))
        };
        let metrics = crate::metrics::global();
        if on_write.is_empty() {
            // The common case: one pipelined round trip for BEGIN, the statements and COMMIT.
            let wires = Arc::new(render(&statements).map_err(classify)?);
            let outcome = self.write(&wires, &rest).await;
            return self.in_source_order(outcome, &rest).await;
        }
        self.client.batch_execute(self.cache.begin()).await.map_err(transient)?;
        let outcome: Result<(), TargetError> = async {
            if let Err(e) = execute(&*self.client, &statements).await {
                self.count_error(&e);
                return Err(classify(e));
            }
            for (name, table, ops) in on_write {
                let Some(Scripted { pool, schema: script_schema, .. }) = &self.script else {
                    break;
                };
                let (client, runtime, schema, dialect) =
                    (self.client.clone(), Handle::current(), self.schema.clone(), self.dialect);
                let (database, schema_name) = (self.database.clone(), self.schema_name.clone());
                let (rows, call_name) = (ops.len(), name.clone());
                let (result, timing) = pool
                    .run_timed(move |engine| {
                        let writer = applier_writer(
                            client.clone(),
                            runtime.clone(),
                            schema,
                            table.clone(),
                            dialect,
                        );
                        let host = PgScriptHost::new(
                            client,
                            runtime,
                            &database,
                            &schema_name,
                            &table,
                            writer,
                        );
                        engine.write(&name, &ops, Box::new(host)).1
                    })
                    .await;
                let call = [script_schema.as_str(), call_name.as_str(), "onWrite"];
                let passed = result.is_ok().then_some(rows);
                crate::metrics::global().count_script_call(call, rows, passed, timing);
                result.map_err(|e| TargetError::data(e.to_string()))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            let _ = self.client.batch_execute("ROLLBACK").await;
            return Err(self.with_failing_row(e, &rest).await);
        }
        self.client.batch_execute("COMMIT").await.map_err(transient)?;
        // Counted only once committed.
        for s in &statements {
            metrics.count_applied(self.schema.label(), &s.table, s.op, s.rows);
        }
        Ok(())
    }
}

impl Target for PgTarget {
    /// Plans ahead the batches no table-level userscript handler touches (those handlers run
    /// in `apply`, where the target transaction is).
    fn planner(&self) -> Option<Planner> {
        let (shared, collapse, dialect) = (self.shared_schema.clone(), self.collapse, self.dialect);
        let scripted = self.script.as_ref().map(|s| (s.pool.clone(), s.schema.clone()));
        Some(Arc::new(move |transactions: &[SourceTransaction]| {
            if let Some((pool, schema)) = &scripted
                && handles_any(pool.configured(), schema, transactions)
            {
                return None;
            }
            let schema = shared.lock().ok()?.clone();
            let mutations = transactions.iter().flat_map(|t| &t.mutations);
            // A name the schema lacks is left to `apply`, which re-reads the schema.
            let statements = plan(&schema, mutations, collapse, dialect).ok()?;
            let wires = Arc::new(render(&statements).ok()?);
            Some(Box::new(PrePlanned { schema, wires }) as Planned)
        }))
    }

    async fn apply(
        &mut self,
        transactions: &[SourceTransaction],
    ) -> Result<Committed, TargetError> {
        self.write_batch(transactions).await?;
        Ok(Committed::covering(transactions))
    }

    async fn apply_planned(
        &mut self,
        transactions: &[SourceTransaction],
        planned: Option<Planned>,
        upcoming: Option<Upcoming<'_>>,
    ) -> Result<Committed, TargetError> {
        let outcome = self.write_planned(transactions, planned, upcoming).await;
        if let Err(e) = &outcome
            && e.kind == crate::error::ErrorKind::Unavailable
            && !self.client.is_closed()
        {
            self.new_session = true;
        }
        outcome?;
        Ok(Committed::covering(transactions))
    }
}
