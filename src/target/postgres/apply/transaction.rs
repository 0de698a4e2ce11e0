//! Writing planned batches: pipelined transactions (BEGIN, the statements, COMMIT sent
//! together), the COPY path for new rows with its fallback to upserts, a transaction started
//! while the one before commits, and the prepared-statement cache.

use std::sync::Arc;

use tokio_postgres::types::ToSql;

use super::super::codec::EncodedTextArray;
use super::wire::{Wire, WireData};
use super::{Applied, ApplyError, database_error};

/// Prepared statements by SQL text: a batch shape seen before is not parsed and planned again.
/// Cleared when the schema is re-read. Also remembers how the COPY path has fared.
#[derive(Debug, Default)]
pub struct StatementCache {
    prepared: std::collections::HashMap<String, tokio_postgres::Statement>,
    /// What starts each transaction after `BEGIN` (a fence: see [`StatementCache::fence`]).
    fence: Option<String>,
    /// How the COPY path has fared.
    copy: CopyRest,
}

/// When to try COPY for rows that may have keys there already: after COPY finds one, the next
/// 1, 2, 4, … (at most 1,024) writes go their other way (`INSERT … ON CONFLICT`) before COPY is
/// tried again; once it works, the next failure rests it for one write again. Shared by the
/// writes that hold it (atomic, so concurrent requests can share one).
#[derive(Debug, Default)]
pub struct CopyRest {
    /// Writes left to make without COPY before it is tried again.
    pause: std::sync::atomic::AtomicU32,
    /// The next pause's length.
    backoff: std::sync::atomic::AtomicU32,
}

impl CopyRest {
    /// Whether this write tries COPY (counts a resting write down).
    pub fn try_now(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.pause.fetch_update(Relaxed, Relaxed, |p| p.checked_sub(1)).is_err()
    }

    /// COPY took the rows.
    pub fn worked(&self) {
        self.backoff.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// COPY found a key there already.
    pub fn failed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let backoff = (self.backoff.load(Relaxed) * 2).clamp(1, 1024);
        self.backoff.store(backoff, Relaxed);
        self.pause.store(backoff, Relaxed);
    }

    #[cfg(test)]
    fn pause(&self) -> u32 {
        self.pause.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl StatementCache {
    /// Runs `sql` (simple-query text) first in every transaction, right after `BEGIN`, so a
    /// transaction whose fence fails (raises) writes nothing; `None`: no fence.
    pub fn fence(&mut self, sql: Option<String>) {
        self.fence = sql.map(|sql| format!("BEGIN; {sql}"));
    }

    /// What begins a transaction.
    pub fn begin(&self) -> &str {
        self.fence.as_deref().unwrap_or("BEGIN")
    }

    /// Forgets every prepared statement.
    pub fn clear(&mut self) {
        self.prepared.clear();
    }

    async fn prepare(
        &mut self,
        client: &tokio_postgres::Client,
        sql: &str,
        table: &str,
    ) -> Result<(), ApplyError> {
        if !self.prepared.contains_key(sql) {
            let prepared = client.prepare(sql).await.map_err(|e| database_error(table, e))?;
            self.prepared.insert(sql.to_owned(), prepared);
        }
        Ok(())
    }

    /// Whether to load `statements` by COPY this time: some are rendered for it and COPY is
    /// not resting.
    pub fn use_copy(&mut self, statements: &[Wire]) -> bool {
        statements.iter().any(|s| s.copy_sql.is_some()) && self.copy.try_now()
    }
}

/// Runs `statements` as one transaction — BEGIN, the statements, COMMIT — sent together
/// (pipelined), so a batch costs one round trip once its statements are prepared. When a
/// statement fails, the server ignores the rest and COMMIT rolls back; the statement's error
/// is returned.
///
/// Statements rendered as COPY text are first loaded with COPY (through [`start`]): a backlog
/// of new rows skips `ON CONFLICT`'s speculative insertion and the parameter parsing. COPY
/// cannot update, so a row whose key is on the target already makes it fail; nothing is
/// checked beforehand, which would cost an index probe per row and a round trip. Then the
/// transaction is rolled back and written again this way.
pub async fn execute_transaction(
    client: &Arc<tokio_postgres::Client>,
    cache: &mut StatementCache,
    statements: &Arc<Vec<Wire>>,
) -> Result<Applied, ApplyError> {
    let first = statements.first().map_or("", |s| s.table.as_str());
    if cache.use_copy(statements) {
        let started = start(client, cache, statements.clone(), true).await?;
        match started.outcome(cache).await {
            Ok(()) => {
                client.batch_execute("COMMIT").await.map_err(|e| database_error(first, e))?;
                let mut applied = Applied::default();
                statements.iter().for_each(|s| s.count(&mut applied));
                return Ok(applied);
            }
            Err(StartedError::CopyRefused(e)) => {
                tracing::debug!(error = %e, "COPY refused the batch (keys already on the target?); writing it with upserts");
                let _ = client.batch_execute("ROLLBACK").await;
            }
            Err(StartedError::Failed(e)) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    for s in statements.iter() {
        cache.prepare(client, &s.sql, &s.table).await?;
    }
    let params = statements.iter().map(Wire::params).collect::<Result<Vec<_>, _>>()?;
    let encoded: Vec<Vec<EncodedTextArray>> =
        params.iter().map(|p| p.iter().map(|b| EncodedTextArray(b)).collect()).collect();
    let refs: Vec<Vec<&(dyn ToSql + Sync)>> =
        encoded.iter().map(|p| p.iter().map(|p| p as &(dyn ToSql + Sync)).collect()).collect();
    let _timer = statements.first().map(|s| {
        crate::metrics::global()
            .apply_duration_seconds
            .with_label_values(&[s.schema.as_str(), s.table.as_str()])
            .start_timer()
    });
    let begin = client.batch_execute(cache.begin());
    let runs = futures_util::future::join_all(
        statements.iter().zip(&refs).map(|(s, r)| client.execute(&cache.prepared[&s.sql], r)),
    );
    let commit = client.batch_execute("COMMIT");
    let (begun, ran, committed) = tokio::join!(begin, runs, commit);
    begun.map_err(|e| database_error(first, e))?;
    let mut applied = Applied::default();
    for (s, result) in statements.iter().zip(ran) {
        result.map_err(|e| database_error(&s.table, e))?;
        s.count(&mut applied);
    }
    committed.map_err(|e| database_error(first, e))?;
    Ok(applied)
}

/// Runs `s` through `statement`: its COPY (`copy`, when it is rendered as COPY text and
/// `statement` is its `COPY`), or its upsert.
async fn run_prepared(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    s: &Wire,
    copy: bool,
) -> Result<(), ApplyError> {
    let failed = |e| database_error(&s.table, e);
    match &s.data {
        WireData::Copy { text, .. } if copy => {
            copy_rows(client, statement, text.clone()).await.map_err(failed)
        }
        _ => {
            let params = s.params()?;
            let encoded: Vec<EncodedTextArray> =
                params.iter().map(|b| EncodedTextArray(b)).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                encoded.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            client.execute(statement, &refs).await.map(|_| ()).map_err(failed)
        }
    }
}

/// A transaction whose BEGIN and statements are on their way (a task awaits their results);
/// its COMMIT is the caller's to send. Made by [`start`] so that one batch can be sent while
/// the batch before commits.
#[derive(Debug)]
pub struct Started {
    task: tokio::task::JoinHandle<Result<(), ApplyError>>,
    copy: bool,
    /// `apply_duration_seconds`, from BEGIN to the statements' outcome.
    _timer: Option<prometheus::HistogramTimer>,
}

/// How a [`Started`] transaction's statements fared.
#[derive(Debug)]
pub enum StartedError {
    /// COPY refused the rows (a key is on the target already, most likely): roll back and
    /// write the batch with upserts ([`execute_transaction`]; COPY is resting by then).
    CopyRefused(ApplyError),
    /// A statement failed: roll back and report.
    Failed(ApplyError),
}

/// Sends BEGIN and `statements` (by COPY where rendered for it, when `copy`: see
/// [`StatementCache::use_copy`]) without waiting for them, and without COMMIT. Only preparing
/// a statement not seen before waits, before anything is sent.
pub async fn start(
    client: &Arc<tokio_postgres::Client>,
    cache: &mut StatementCache,
    statements: Arc<Vec<Wire>>,
    copy: bool,
) -> Result<Started, ApplyError> {
    let timer = statements.first().map(|s| {
        crate::metrics::global()
            .apply_duration_seconds
            .with_label_values(&[s.schema.as_str(), s.table.as_str()])
            .start_timer()
    });
    let mut prepared = Vec::with_capacity(statements.len());
    for s in statements.iter() {
        let sql = s.copy_sql.as_ref().filter(|_| copy).unwrap_or(&s.sql);
        cache.prepare(client, sql, &s.table).await?;
        prepared.push(cache.prepared[sql].clone());
    }
    let client = client.clone();
    let begin = cache.begin().to_owned();
    let task = tokio::spawn(async move {
        let first = statements.first().map_or("", |s| s.table.as_str());
        let body = async {
            for (s, statement) in statements.iter().zip(&prepared) {
                run_prepared(&client, statement, s, copy && s.copy_sql.is_some()).await?;
            }
            Ok(())
        };
        let (begun, ran) = tokio::join!(client.batch_execute(&begin), body);
        begun.map_err(|e| database_error(first, e)).and(ran)
    });
    Ok(Started { task, copy, _timer: timer })
}

impl Started {
    /// Waits for the statements' outcome (the transaction stays open).
    pub async fn outcome(self, cache: &mut StatementCache) -> Result<(), StartedError> {
        let result = match self.task.await {
            Ok(result) => result,
            Err(e) => {
                return Err(StartedError::Failed(ApplyError::Database {
                    table: String::new(),
                    message: format!("the write task ended: {e}"),
                    code: None,
                    kind: crate::error::ErrorKind::Unavailable,
                    source: Box::new(e),
                }));
            }
        };
        match result {
            Ok(()) => {
                if self.copy {
                    cache.copy.worked();
                }
                Ok(())
            }
            Err(e) if self.copy && !e.is_transient() => {
                cache.copy.failed();
                Err(StartedError::CopyRefused(e))
            }
            Err(e) => Err(StartedError::Failed(e)),
        }
    }
}

/// Sends `rows` (in the COPY's format) through `copy`, a `COPY … FROM STDIN` (prepared, or
/// its text).
pub async fn copy_rows<T: ?Sized + tokio_postgres::ToStatement>(
    client: &tokio_postgres::Client,
    copy: &T,
    rows: bytes::Bytes,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = client.copy_in::<_, bytes::Bytes>(copy).await?;
    futures_util::pin_mut!(sink);
    sink.send(rows).await?;
    sink.finish().await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rests_longer_while_it_keeps_failing() {
        let cache = StatementCache::default();
        assert!(cache.copy.try_now());
        cache.copy.failed();
        assert!(!cache.copy.try_now(), "one batch without COPY");
        assert!(cache.copy.try_now());
        cache.copy.failed();
        assert_eq!((0..2).filter(|_| !cache.copy.try_now()).count(), 2, "then two");
        assert!(cache.copy.try_now());
        cache.copy.worked();
        cache.copy.failed();
        assert!(!cache.copy.try_now() && cache.copy.try_now(), "success starts over at one");
        for _ in 0..20 {
            cache.copy.failed();
        }
        assert_eq!(cache.copy.pause(), 1024, "at most 1,024 batches");
    }

    #[test]
    fn claims_rest_from_copy_longer_while_it_keeps_failing() {
        let copy = CopyRest::default();
        let tries = |copy: &CopyRest, n: usize| (0..n).map(|_| copy.try_now()).collect::<Vec<_>>();
        assert_eq!(tries(&copy, 2), [true, true]);
        copy.failed();
        assert_eq!(tries(&copy, 2), [false, true]);
        copy.failed();
        assert_eq!(tries(&copy, 3), [false, false, true]);
        copy.failed();
        assert_eq!(tries(&copy, 5), [false, false, false, false, true]);
        copy.worked();
        copy.failed();
        assert_eq!(tries(&copy, 2), [false, true]);
    }
}
