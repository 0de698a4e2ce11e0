//! A PostgreSQL/CockroachDB [`Target`]: each batch is planned by the applier and written in
//! one transaction; the schema is re-read when a write fails on schema drift.

use tokio_postgres::Client;

use std::sync::Arc;

use super::script_stage::table_level;
use super::{Target, TargetError};
use crate::script::{ScriptPool, SourceTag};
use crate::target::postgres::apply::{ApplyError, Dialect, execute, plan};
use crate::target::postgres::introspect::{Schema, introspect};
use crate::types::mutation::{Mutation, Op, SourceTransaction};

/// Writes batches into one schema of a PostgreSQL or CockroachDB database.
pub struct PgTarget {
    client: Client,
    schema_name: String,
    schema: Schema,
    dialect: Dialect,
    collapse: bool,
    script: Option<(Arc<ScriptPool>, String, SourceTag)>,
}

impl PgTarget {
    /// Introspects `schema` and gets ready to write into it.
    pub async fn new(
        client: Client,
        schema: &str,
        dialect: Dialect,
        collapse: bool,
    ) -> Result<Self, tokio_postgres::Error> {
        let info = introspect(&client, schema).await?;
        Ok(Self {
            client,
            schema_name: schema.to_owned(),
            schema: info,
            dialect,
            collapse,
            script: None,
        })
    }

    /// Runs the userscript's table-level handlers before each write; `script_schema` is the
    /// target schema as the script names it (`db.public`).
    pub fn with_script(
        mut self,
        pool: Arc<ScriptPool>,
        script_schema: &str,
        source: SourceTag,
    ) -> Self {
        self.script = Some((pool, script_schema.to_owned(), source));
        self
    }

    async fn refresh(&mut self) -> Result<(), tokio_postgres::Error> {
        self.schema = introspect(&self.client, &self.schema_name).await?;
        Ok(())
    }
}

fn classify(e: ApplyError) -> TargetError {
    TargetError { transient: e.is_transient(), message: e.to_string() }
}

impl Target for PgTarget {
    async fn apply(&mut self, transactions: &[SourceTransaction]) -> Result<(), TargetError> {
        let mutations: Vec<Mutation> = match &self.script {
            None => transactions.iter().flat_map(|t| t.mutations.iter().cloned()).collect(),
            Some((pool, script_schema, source)) => {
                let schema = &self.schema;
                let key_of = |table: &str| {
                    schema
                        .table(table)
                        .map(|t| t.key.iter().map(|&i| t.columns[i].name.clone()).collect())
                };
                table_level(pool, script_schema, *source, transactions, key_of)
                    .await
                    .map_err(|e| TargetError { message: e.to_string(), transient: false })?
            }
        };
        let mutations = &mutations[..];
        let statements = match plan(&self.schema, mutations, self.collapse, self.dialect) {
            Ok(s) => s,
            // A table or column we do not know may have been added since we looked: look again.
            Err(ApplyError::UnknownTable { .. } | ApplyError::UnknownColumn { .. }) => {
                self.refresh()
                    .await
                    .map_err(|e| TargetError { message: e.to_string(), transient: true })?;
                plan(&self.schema, mutations, self.collapse, self.dialect).map_err(classify)?
            }
            Err(e) => return Err(classify(e)),
        };
        let transient = |e: tokio_postgres::Error| TargetError {
            transient: e.is_closed() || e.code().is_some_and(|c| c.code().starts_with("40")),
            message: e.to_string(),
        };
        let metrics = crate::metrics::global();
        let tx = self.client.transaction().await.map_err(transient)?;
        if let Err(e) = execute(&tx, &statements).await {
            if let ApplyError::Database { table, .. } = &e {
                metrics.apply_errors_total.with_label_values(&[&self.schema_name, table]).inc();
            }
            return Err(classify(e));
        }
        tx.commit().await.map_err(transient)?;
        // Counted only once committed.
        for s in &statements {
            let labels = [self.schema_name.as_str(), s.table.as_str()];
            let rows = s.rows as u64;
            match s.op {
                Op::Upsert => metrics.apply_upserts_total.with_label_values(&labels).inc_by(rows),
                Op::Delete => metrics.apply_deletes_total.with_label_values(&labels).inc_by(rows),
            }
            metrics.mutations_applied.with_label_values(&labels).inc_by(rows);
        }
        Ok(())
    }
}

/// [`super::Checkpoints`] in staging's `memo`, on its own connection.
pub struct StagingCheckpoints {
    client: Client,
    store: crate::staging::CheckpointStore,
}

impl StagingCheckpoints {
    /// Saves through `store` on `client` (the staging database).
    pub fn new(client: Client, store: crate::staging::CheckpointStore) -> Self {
        Self { client, store }
    }
}

impl super::Checkpoints for StagingCheckpoints {
    async fn save(&mut self, committed: crate::staging::Committed) -> Result<(), String> {
        self.store.save(&self.client, &committed).await.map_err(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            message
        })
    }
}
