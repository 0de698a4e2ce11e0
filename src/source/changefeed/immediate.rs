//! Immediate mode (`replicator start --immediate`): each request's changes are written to the
//! target in one transaction before the request is answered 200.
//!
//! For each request (after [`super::accept`] has read its lines into changes and kept the
//! newest version of each key):
//!
//! 1. In a staging transaction, the keys' versions are claimed ([`crate::staging::stage`]):
//!    a version not newer than one already applied is dropped (a duplicate, or an old row a
//!    restarted changefeed sent again). The claim holds the keys' locks until step 4.
//! 2. The userscript's schema-level handlers run on what is left, and the columns are checked
//!    against the target.
//! 3. The changes are written in one target transaction (parents first, children's deletes
//!    first) and committed.
//! 4. Applied stubs are written to the per-table staging tables and the staging transaction
//!    commits; then the request is answered.
//!
//! A failure before the target's commit writes nothing; one after it (staging lost) is answered
//! 503, and the changefeed's retry writes the same versions again, which is harmless. A resolved
//! timestamp is recorded in `checkpoints`, applied at once.

use std::collections::HashMap;

use super::Refused;
use super::accept::{Accepted, Acceptor, Failure, SchemaWriter, placeholder, reload};
use super::rows::{self, Change};
use crate::script::SourceTag;
use crate::staging::StagingDialect;
use crate::staging::stage::{self, Version};
use crate::target::Target;
use crate::target::factory::AnyTarget;
use crate::types::mutation::{Position, SourceTransaction};

impl Acceptor {
    /// Claims, writes and marks `versions` of `changes` (sorted by table and key, one per key).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_now(
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
        let copy = writer.claim_copy(self.config.staging_dialect);
        let fresh =
            stage::claim_with(&tx, staging, &sorted, copy).await.map_err(Failure::Staging)?;
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
        let mut by_table: HashMap<&str, Vec<&Version>> = HashMap::new();
        for (_, v) in &kept {
            by_table.entry(v.table.as_str()).or_default().push(v);
        }
        // The stubs are written while the target writes, in the staging transaction that
        // commits only after the target's.
        let marking = async {
            for (table, versions) in by_table {
                match self.config.staging_dialect {
                    StagingDialect::Postgres => {
                        stage::mark_applied_copy(&mut tx, staging, table, &versions).await?;
                    }
                    StagingDialect::Cockroach => {
                        stage::mark_applied(&tx, staging, table, &versions).await?;
                    }
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        let writing = async {
            if !transaction.mutations.is_empty() {
                target.apply(std::slice::from_ref(&transaction)).await?;
            }
            Ok(())
        };
        let (written, marked) = tokio::join!(writing, marking);
        written.map_err(Failure::Target)?;
        marked.map_err(Failure::Staging)?;
        tx.commit().await.map_err(Failure::Staging)?;
        Ok(Accepted::Applied { applied: kept.len(), duplicates })
    }
}
