//! Leases in staging's `leases` table (MOLT's layout): one replicator at a time per name.
//!
//! A replication command holds the lease named after its checkpoint key (one source position
//! per target schema) for as long as it runs, so a second `pglogical` or `mylogical` writing
//! the same target from the same staging schema waits as a standby instead of applying
//! alongside the first; `start`'s consistent-mode sweepers hold one per target schema
//! (`changefeed.<db.schema>`, 5 s long). The row says who holds it (`hostname`: the host and the process id),
//! with which `nonce`, until when (`expires`, on staging's clock: `now()` in UTC, never the
//! instance's). The holder renews it every [`RENEW_EVERY`] for [`LEASE_FOR`], so staging may
//! be out of reach for most of that (a restarted server) without consequence; when the holder
//! cannot renew before the lease runs out, or finds the row taken over, it stops applying: by
//! then another instance may hold it.
//!
//! A new instance that finds the lease held waits as a standby: once the holder is gone, it
//! takes the lease over and resumes from the stored position. A holder that was a process of
//! this host that no longer runs (after `kill -9`) is taken over at once, one elsewhere when
//! its lease expires.

use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::GenericClient;

use super::StagingSchema;
use crate::conn::ConnString;

/// How long a lease lasts without renewal: how long staging may be out of reach before the
/// holder stops applying, and how long a holder that died elsewhere blocks a new start.
pub const LEASE_FOR: Duration = Duration::from_secs(30);

/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The holder stops applying this long before its lease would run out unrenewed.
const GUARD: Duration = Duration::from_secs(2);

/// Why a lease is not (or no longer) ours.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Our lease was taken over or ran out before we could renew it.
    #[error(
        "lost the lease {name:?} in staging ({why}); stopped applying, since another \
         replicator may hold it now"
    )]
    Lost {
        /// The lease name.
        name: String,
        /// What happened.
        why: String,
    },
    /// Staging failed.
    #[error("reading or writing the lease {name:?} in staging failed")]
    Database {
        /// The lease name.
        name: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct Lease {
    lifetime: Duration,
    table: String,
    name: String,
    nonce: uuid::Uuid,
    hostname: String,
}

/// The host name this process reports in leases.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// How this process names itself in the `hostname` column: `host (pid 1234)`.
fn holder_name() -> String {
    format!("{} (pid {})", hostname(), std::process::id())
}

/// A holder named `holder` is a process of this host that no longer runs.
fn gone_from_this_host(holder: &str) -> bool {
    let Some(pid) = holder
        .strip_prefix(&format!("{} (pid ", hostname()))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|pid| pid.parse::<u32>().ok())
    else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !String::from_utf8_lossy(&cmdline).contains("replicator")
}

const NOW: &str = "(now() AT TIME ZONE 'UTC')";

impl Lease {
    /// Takes lease `name` in `staging`, waiting as a standby while another instance holds
    /// it: it is taken over once its holder stops renewing it and it expires, or at once when
    /// its holder was a process of this host that no longer runs. Says once that it waits.
    pub async fn acquire(
        client: &impl GenericClient,
        staging: &StagingSchema,
        name: &str,
    ) -> Result<Self, LeaseError> {
        let mut said = false;
        loop {
            match Self::try_acquire(client, staging, name, LEASE_FOR).await? {
                Ok(lease) => {
                    tracing::info!(lease = %name, nonce = %lease.nonce, "holding the lease in staging: active");
                    return Ok(lease);
                }
                Err((holder, expires)) if !said => {
                    said = true;
                    tracing::info!(
                        lease = %name, %holder, %expires,
                        "standby: another replicator ({holder}) is replicating with checkpoint key \
                         {name:?} in staging schema {schema}, its lease renewed until {expires} UTC; \
                         waiting to take over when it stops",
                        schema = staging.qualified()
                    );
                }
                Err(_) => {}
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Takes lease `name` for `lifetime` if nobody holds it (or its holder let it expire);
    /// otherwise says who holds it and until when (staging's clock, UTC). A standby calls this
    /// until it gets the lease.
    pub async fn try_acquire(
        client: &impl GenericClient,
        staging: &StagingSchema,
        name: &str,
        lifetime: Duration,
    ) -> Result<Result<Self, (String, String)>, LeaseError> {
        let lease = Lease {
            lifetime,
            table: staging.table("leases"),
            name: name.to_owned(),
            nonce: uuid::Uuid::new_v4(),
            hostname: holder_name(),
        };
        let taken = lease.try_take(client, None).await?;
        // Staging answered: whatever outage it had is over.
        crate::outage::recovered("staging");
        if taken {
            return Ok(Ok(lease));
        }
        match lease.holder(client).await? {
            Some((holder, expires, nonce)) => {
                if gone_from_this_host(&holder) && lease.try_take(client, Some(&nonce)).await? {
                    tracing::info!(lease = %name, previous = %holder, "took over the lease of a replicator of this host that no longer runs");
                    return Ok(Ok(lease));
                }
                Ok(Err((holder, expires)))
            }
            // Released between the two statements: next time.
            None => Ok(Err(("nobody".to_owned(), "now".to_owned()))),
        }
    }

    /// Inserts the row, or takes it over when it has expired (or, with `from`, when it still
    /// holds that nonce: its holder is gone); true when the lease is ours now.
    async fn try_take(
        &self,
        client: &impl GenericClient,
        from: Option<&str>,
    ) -> Result<bool, LeaseError> {
        let sql = format!(
            "INSERT INTO {t} (name, expires, nonce, hostname) \
             VALUES ($1, {NOW} + $2 * INTERVAL '1 millisecond', $3::text::uuid, $4) \
             ON CONFLICT (name) DO UPDATE SET expires = excluded.expires, nonce = excluded.nonce, \
             hostname = excluded.hostname WHERE {t}.expires < {NOW} OR {t}.nonce::text = $5",
            t = self.table
        );
        let millis = self.lifetime.as_millis() as f64;
        let from = from.unwrap_or_default();
        let taken = client
            .execute(&sql, &[&self.name, &millis, &self.nonce.to_string(), &self.hostname, &from])
            .await
            .map_err(|source| self.database(source))?;
        Ok(taken == 1)
    }

    /// Who holds the lease, until when (text) and with which nonce; `None` when nobody does.
    async fn holder(
        &self,
        client: &impl GenericClient,
    ) -> Result<Option<(String, String, String)>, LeaseError> {
        let sql = format!(
            "SELECT hostname, expires::text, nonce::text FROM {} WHERE name = $1",
            self.table
        );
        let row = client.query_opt(&sql, &[&self.name]).await.map_err(|s| self.database(s))?;
        Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
    }

    /// Extends the lease if it is still ours; false when another instance holds it now.
    pub async fn renew(&self, client: &impl GenericClient) -> Result<bool, LeaseError> {
        let sql = format!(
            "UPDATE {} SET expires = {NOW} + $3 * INTERVAL '1 millisecond' \
             WHERE name = $1 AND nonce = $2::text::uuid",
            self.table
        );
        let millis = self.lifetime.as_millis() as f64;
        let renewed = client
            .execute(&sql, &[&self.name, &self.nonce.to_string(), &millis])
            .await
            .map_err(|s| self.database(s))?;
        Ok(renewed == 1)
    }

    /// Gives the lease up (if it is still ours), so another instance may start at once.
    pub async fn release(&self, client: &impl GenericClient) -> Result<(), LeaseError> {
        let sql = format!("DELETE FROM {} WHERE name = $1 AND nonce = $2::text::uuid", self.table);
        client
            .execute(&sql, &[&self.name, &self.nonce.to_string()])
            .await
            .map_err(|s| self.database(s))?;
        Ok(())
    }

    /// The lease name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn database(&self, source: tokio_postgres::Error) -> LeaseError {
        LeaseError::Database { name: self.name.clone(), source }
    }

    /// Renews the lease in the background on a connection of its own to `conn` (reopened
    /// when lost) until [`Held::release`]; the returned handle says when it is lost.
    pub fn hold(self, client: tokio_postgres::Client, conn: ConnString) -> Held {
        let (lost_tx, lost) = watch::channel(None::<String>);
        let (stop_tx, mut stop) = watch::channel(false);
        let (lease, reconnect) = (self.clone(), conn.clone());
        let task = tokio::spawn(async move {
            let mut client = client;
            let mut renewed_at = tokio::time::Instant::now();
            let mut new_session = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = stop.changed() => break,
                }
                if (client.is_closed() || new_session)
                    && let Ok(c) = crate::conn::postgres::connect(&conn).await
                {
                    client = c;
                    new_session = false;
                }
                match lease.renew(&client).await {
                    Ok(true) => {
                        renewed_at = tokio::time::Instant::now();
                        crate::outage::recovered("staging");
                    }
                    Ok(false) => {
                        lost_tx.send_replace(Some("another replicator took it over".into()));
                        return client;
                    }
                    Err(e) => {
                        // Staging unavailable on a session still open (read-only during a
                        // failover): the next renewal takes a new session.
                        new_session = matches!(&e, LeaseError::Database { source, .. }
                            if crate::error::postgres_kind(source) == crate::error::ErrorKind::Unavailable);
                        let why = crate::error::with_causes(&e);
                        let why = format!("renewing the lease {}: {why}", lease.name);
                        crate::outage::failed("staging", &why, RENEW_EVERY, RENEW_EVERY);
                        if renewed_at.elapsed() + GUARD.min(lease.lifetime / 3) >= lease.lifetime {
                            lost_tx.send_replace(Some(format!(
                                "not renewed for {:?}: {why}",
                                renewed_at.elapsed()
                            )));
                            return client;
                        }
                    }
                }
            }
            client
        });
        Held { lease: self, lost, stop: stop_tx, task, conn: reconnect }
    }
}

/// A lease renewed in the background.
pub struct Held {
    lease: Lease,
    lost: watch::Receiver<Option<String>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<tokio_postgres::Client>,
    conn: ConnString,
}

impl Held {
    /// A statement for the start of a transaction in staging's database that raises unless
    /// this lease is still held and unexpired, and holds its row (`FOR SHARE`) until the
    /// transaction ends, so the lease cannot be taken over meanwhile: a holder paused past its
    /// lease writes nothing once it resumes.
    pub fn fence_sql(&self) -> String {
        let name = self.lease.name.replace('\'', "''");
        format!(
            "DO $replicator_fence$ BEGIN PERFORM 1 FROM {t} WHERE name = '{name}' \
             AND nonce = '{nonce}'::uuid AND expires > {NOW} FOR SHARE; IF NOT FOUND THEN \
             RAISE EXCEPTION 'replicator: the lease % is no longer held by this instance \
             (another took it over): nothing is written', '{name}'; END IF; END $replicator_fence$",
            t = self.lease.table,
            nonce = self.lease.nonce,
        )
    }

    /// The lease was lost (by now another instance may hold it).
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Resolves when the lease is lost, with why.
    pub async fn lost(&mut self) -> LeaseError {
        let why = match self.lost.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "its renewal stopped".to_owned(),
        };
        LeaseError::Lost { name: self.lease.name.clone(), why }
    }

    /// Stops renewing and gives the lease up.
    pub async fn release(self) {
        self.stop.send_replace(true);
        let Ok(mut client) = self.task.await else { return };
        if self.lost.borrow().is_some() {
            return;
        }
        if client.is_closed()
            && let Ok(c) = crate::conn::postgres::connect(&self.conn).await
        {
            client = c;
        }
        if let Err(e) = self.lease.release(&client).await {
            tracing::warn!(lease = %self.lease.name, error = %crate::error::with_causes(&e), "releasing the lease failed; it expires by itself");
        }
    }
}
