//! Immediate mode (`replicator start --immediate`): each request's changes are written to the
//! target in one transaction before the request is answered 200.
//!
//! For each request:
//!
//! 1. Its lines become changes of the target's tables ([`super::rows`]); a table or column not
//!    seen yet makes the target schema be read again first. Of several versions of one key in
//!    the request only the newest is kept.
//! 2. In a staging transaction, the keys' versions are claimed ([`crate::staging::stage`]):
//!    a version not newer than one already applied is dropped (a duplicate, or an old row a
//!    restarted changefeed sent again). The claim holds the keys' locks until step 5.
//! 3. The userscript's schema-level handlers run on what is left, and the columns are checked
//!    against the target.
//! 4. The changes are written in one target transaction (parents first, children's deletes
//!    first) and committed.
//! 5. Applied stubs are written to the per-table staging tables and the staging transaction
//!    commits; then the request is answered.
//!
//! A failure before the target's commit writes nothing; one after it (staging lost) is answered
//! 503, and the changefeed's retry writes the same versions again, which is harmless. A resolved
//! timestamp is recorded in `checkpoints`, applied at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::Refused;
use super::payload::{Body, Line};
use super::route::Route;
use super::rows::{self, Change};
use crate::conn::ConnString;
use crate::conn::pool::Pool;
use crate::script::{ScriptPool, SourceTag};
use crate::staging::stage::{self, Resolved, Version};
use crate::staging::{StagingDialect, StagingSchema};
use crate::target::factory::{AnyTarget, TargetSpec};
use crate::target::{Target, TargetError};
use crate::types::mutation::{Position, SourceTransaction};

/// What immediate mode writes to, and how.
#[derive(Clone)]
pub struct ImmediateConfig {
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
    /// A resolved timestamp recorded.
    Resolved,
}

/// Immediate mode's state: one writer per target schema, opened on its first request.
pub struct Immediate {
    config: ImmediateConfig,
    schemas: tokio::sync::Mutex<HashMap<Vec<String>, Arc<SchemaWriter>>>,
    staging: Pool<tokio_postgres::Client>,
    /// Per-table staging tables known to exist.
    created: tokio::sync::Mutex<HashSet<String>>,
}

/// Writes into one target schema.
struct SchemaWriter {
    /// The path's schema parts, lower case (staging table names).
    parts: Vec<String>,
    /// `db.schema` lower case: the checkpoint group, and the schema scripts and metrics name.
    group: String,
    spec: TargetSpec,
    targets: Pool<AnyTarget>,
}

fn staging_error(e: &tokio_postgres::Error) -> Refused {
    Refused::unavailable(format!("staging: {}", crate::error::with_causes(e)))
}

impl Immediate {
    /// Ready to write; nothing connects until the first request.
    pub fn new(config: ImmediateConfig) -> Self {
        let staging = Pool::new(config.connections);
        Self {
            config,
            schemas: tokio::sync::Mutex::new(HashMap::new()),
            staging,
            created: tokio::sync::Mutex::new(HashSet::new()),
        }
    }

    /// Applies one request's body for `route`.
    pub async fn accept(&self, route: &Route, body: Body) -> Result<Accepted, Refused> {
        let writer = self.writer(&route.schema).await?;
        match body {
            Body::Resolved(at) => self.resolved(&writer, at).await,
            Body::Lines(lines) if lines.is_empty() => {
                Ok(Accepted::Applied { applied: 0, duplicates: 0 })
            }
            Body::Lines(lines) => self.lines(&writer, route.table.as_deref(), lines).await,
        }
    }

    /// The writer of the schema `parts` name, opened on first use.
    async fn writer(&self, parts: &[String]) -> Result<Arc<SchemaWriter>, Refused> {
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
        });
        schemas.insert(lower, writer.clone());
        Ok(writer)
    }

    async fn resolved(
        &self,
        writer: &SchemaWriter,
        at: crate::types::position::Hlc,
    ) -> Result<Accepted, Refused> {
        let mut client = self.staging_client().await?;
        let recorded =
            stage::resolve(&mut client, &self.config.staging_schema, &writer.group, at, true).await;
        let metrics = crate::metrics::global();
        match recorded {
            Ok(Resolved::Recorded) => {
                #[allow(clippy::cast_precision_loss)]
                let seconds = at.nanos as f64 / 1e9;
                metrics
                    .target_applied_timestamp_seconds
                    .with_label_values(&[&writer.group])
                    .set(seconds);
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

    async fn staging_client(
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
    async fn ensure_tables(
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
                // Another instance creating the same table at the same moment: once more.
                if let Err(e) = client.batch_execute(&ddl).await {
                    let racing = e.code().is_some_and(|c| matches!(c.code(), "23505" | "42P07"));
                    if !racing {
                        return Err(e);
                    }
                    client.batch_execute(&ddl).await?;
                }
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
        let changes = rows::changes(lines, table, &schema, scripted)
            .map_err(|e| Refused::bad_request(e.to_string()))?;
        let metrics = crate::metrics::global();
        for c in &changes {
            metrics.mutations_received_count.with_label_values(&[&writer.group, &c.table]).inc();
        }
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

        let mut client = self.staging_client().await?;
        let names: HashSet<&str> = versions.iter().map(|(v, _)| v.table.as_str()).collect();
        if let Err(e) = self.ensure_tables(&client, &names).await {
            return Err(discarding(client, &e));
        }
        let outcome =
            self.write(&mut client, &mut target, writer, &versions, &mut changes, &schema).await;
        match outcome {
            Ok(accepted) => Ok(accepted),
            Err(Failure::Staging(e)) => Err(discarding(client, &e)),
            Err(Failure::Target(e)) => {
                if e.is_transient() {
                    target.discard();
                }
                Err(Refused::from_target(&e))
            }
            Err(Failure::Refused(r)) => Err(r),
        }
    }

    /// Steps 2 to 5 on a staging connection.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        client: &mut tokio_postgres::Client,
        target: &mut AnyTarget,
        writer: &SchemaWriter,
        versions: &[(Version, usize)],
        changes: &mut [Change],
        schema: &crate::target::schema::Schema,
    ) -> Result<Accepted, Failure> {
        let staging = &self.config.staging_schema;
        let mut tx = client.transaction().await.map_err(Failure::Staging)?;
        let sorted: Vec<&Version> = versions.iter().map(|(v, _)| v).collect();
        let fresh = stage::claim(&tx, staging, &sorted).await.map_err(Failure::Staging)?;
        let metrics = crate::metrics::global();
        let mut kept: Vec<(usize, &Version)> = Vec::with_capacity(versions.len());
        for ((version, index), fresh) in versions.iter().zip(&fresh) {
            if *fresh {
                kept.push((*index, version));
            } else {
                let table = &changes[*index].table;
                metrics
                    .stage_duplicate_mutations_total
                    .with_label_values(&[&writer.group, table])
                    .inc();
            }
        }
        let duplicates = versions.len() - kept.len();
        if kept.is_empty() {
            tx.commit().await.map_err(Failure::Staging)?;
            return Ok(Accepted::Applied { applied: 0, duplicates });
        }
        // In time order: the planner keeps parents before children within it.
        kept.sort_by_key(|(i, _)| (changes[*i].time, *i));
        let newest = kept.iter().map(|(i, _)| changes[*i].time).max().unwrap_or_default();
        let mutations = kept
            .iter()
            .map(|(i, _)| std::mem::replace(&mut changes[*i].mutation, placeholder()))
            .collect();
        let mut transaction = SourceTransaction {
            mutations,
            position: Position::Hlc(newest),
            commit_nanos: newest.nanos,
        };
        if let Some(pool) = &self.config.script {
            let key_of = |t: &str| schema.table(t).map(|t| t.key_names());
            transaction = crate::script::transform::schema_level(
                pool,
                &writer.group,
                SourceTag::Changefeed,
                transaction,
                key_of,
            )
            .await
            .map_err(|e| Failure::Refused(Refused::unprocessable(format!("userscript: {e}"))))?;
        }
        if let Err(first) = rows::check_columns(schema, &transaction.mutations) {
            reload(target).await.map_err(Failure::Refused)?;
            if rows::check_columns(&target.schema(), &transaction.mutations).is_err() {
                return Err(Failure::Refused(Refused::bad_request(first)));
            }
        }
        if !transaction.mutations.is_empty() {
            target.apply(std::slice::from_ref(&transaction)).await.map_err(Failure::Target)?;
        }
        let mut by_table: HashMap<&str, Vec<&Version>> = HashMap::new();
        for (_, v) in &kept {
            by_table.entry(v.table.as_str()).or_default().push(v);
        }
        for (table, versions) in by_table {
            let marked = match self.config.staging_dialect {
                StagingDialect::Postgres => {
                    stage::mark_applied_copy(&mut tx, staging, table, &versions).await
                }
                StagingDialect::Cockroach => {
                    stage::mark_applied(&tx, staging, table, &versions).await
                }
            };
            marked.map_err(Failure::Staging)?;
        }
        tx.commit().await.map_err(Failure::Staging)?;
        Ok(Accepted::Applied { applied: kept.len(), duplicates })
    }
}

/// Why a request's write stopped.
enum Failure {
    Staging(tokio_postgres::Error),
    Target(TargetError),
    Refused(Refused),
}

/// What takes a moved-out mutation's place (never written).
fn placeholder() -> crate::types::mutation::Mutation {
    crate::types::mutation::Mutation::delete("", crate::types::Row::default())
}

async fn reload(target: &mut AnyTarget) -> Result<(), Refused> {
    target.reload_schema().await.map_err(|e| Refused::from_target(&e))
}

/// A staging failure as a 503, dropping the connection when it is broken.
fn discarding(
    client: crate::conn::pool::Pooled<'_, tokio_postgres::Client>,
    e: &tokio_postgres::Error,
) -> Refused {
    let refused = staging_error(e);
    if client.is_closed() {
        client.discard();
    }
    refused
}
