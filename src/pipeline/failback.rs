//! `replicator start`, composed: staging prepared, the tokens' keys loaded, TLS set up, the
//! changefeed endpoint listening, keys re-read every minute and keys and certificates on
//! SIGHUP, and on SIGINT or SIGTERM no new request is taken while those in flight finish
//! within `--gracePeriod`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::config::{MetricsConfig, StagingConfig};
use super::{PipelineError, Step, open_staging, serve_metrics, serve_metrics_checks};
use crate::conn::{ConnString, Protocol};
use crate::script::ScriptPool;
use crate::server::tls::{Tls, TlsSource};
use crate::source::changefeed::accept::{Acceptor, AcceptorConfig, Mode, SweepConfig};
use crate::source::changefeed::handler::{Changefeed, HandlerConfig, Keys};

/// How often the tokens' keys are re-read.
pub const KEY_REFRESH: Duration = Duration::from_secs(60);

/// What `replicator start` runs with, validated from its flags.
#[derive(Debug)]
pub struct FailbackConfig {
    /// `--bindAddr`, as `host:port`.
    pub bind: String,
    /// TLS, if any.
    pub tls: Option<TlsSource>,
    /// `--disableAuthentication`.
    pub disable_authentication: bool,
    /// `--targetConn`.
    pub target: ConnString,
    /// Its protocol.
    pub target_protocol: Protocol,
    /// Staging.
    pub staging: StagingConfig,
    /// `--metricsAddr`.
    pub metrics: MetricsConfig,
    /// How requests are read.
    pub handler: HandlerConfig,
    /// Requests written at once per target schema.
    pub connections: usize,
    /// `--schemaRefresh`.
    pub schema_refresh: Option<Duration>,
    /// `--gracePeriod`.
    pub grace: Duration,
    /// Immediate or consistent.
    pub mode: Mode,
    /// Consistent mode's sweeper.
    pub sweep: SweepConfig,
}

/// Serves the changefeed endpoint until SIGINT or SIGTERM.
pub async fn run(
    config: FailbackConfig,
    script: Option<Arc<ScriptPool>>,
) -> Result<(), PipelineError> {
    let staging = open_staging(&config.staging).await?;
    let keys = if config.disable_authentication {
        tracing::warn!(
            "--disableAuthentication: every request is accepted without a token; never do this \
             where the endpoint can be reached by anyone but the changefeed"
        );
        None
    } else {
        let (keys, count) = Keys::load(config.staging.conn.clone(), staging.schema.clone())
            .await
            .step("loading the JWT public keys")?;
        if count == 0 {
            tracing::warn!(
                table = %staging.schema.table("jwt_public_keys"),
                "no active JWT public key: every request is refused with 401 until one is \
                 inserted (then send SIGHUP, or wait a minute)"
            );
        } else {
            tracing::info!(keys = count, "JWT public keys loaded");
        }
        Some(Arc::new(keys))
    };
    let tls = match &config.tls {
        Some(source) => {
            Some(Tls::load(source.clone()).map_err(|e| PipelineError::Refused(e.to_string()))?)
        }
        None => None,
    };
    let acceptor = Arc::new(Acceptor::new(AcceptorConfig {
        target: config.target.clone(),
        staging: config.staging.conn.clone(),
        staging_schema: staging.schema.clone(),
        staging_dialect: staging.dialect,
        script,
        connections: config.connections,
        schema_refresh: config.schema_refresh,
        mode: config.mode,
        sweep: config.sweep.clone(),
    }));
    if config.mode.stages() {
        let resumed = acceptor.resume().await.map_err(|e| PipelineError::Refused(e.reason))?;
        if !resumed.is_empty() {
            tracing::info!(schemas = ?resumed, "resolved timestamps wait in staging: sweeping them");
        }
        let role = acceptor.clone();
        crate::server::set_role(Box::new(move || if role.active() { "active" } else { "standby" }));
    }
    let feed = Arc::new(Changefeed::new(config.handler.clone(), keys.clone(), acceptor.clone()));
    let checks = serve_metrics_checks(&config.target, config.target_protocol, &config.staging.conn);
    let router = crate::server::router(checks.clone(), Duration::from_secs(5))
        .merge(crate::source::changefeed::handler::router(feed.clone()));
    serve_metrics(&config.metrics, checks).await?;

    let listener = TcpListener::bind(&config.bind)
        .await
        .step(&format!("--bindAddr {}: cannot listen", config.bind))?;
    let bound = listener.local_addr().step("reading the bound address")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(crate::server::listen::serve(listener, router, tls.clone(), stop_rx));
    tracing::info!(
        addr = %bound,
        tls = match &config.tls { None => "off", Some(TlsSource::SelfSigned) => "self-signed", Some(_) => "files" },
        authentication = !config.disable_authentication,
        mode = match config.mode {
            Mode::Immediate => "immediate",
            Mode::Consistent => "consistent",
            Mode::BestEffort => "best effort",
        },
        "listening for changefeed requests"
    );
    tokio::spawn(refresh(keys.clone(), tls));

    crate::sequencer::shutdown::signal().await;
    tracing::info!(grace = ?config.grace, "stopping: no new requests; finishing those in flight");
    let _ = stop_tx.send(true);
    if !feed.drain(config.grace).await {
        tracing::warn!("requests still in flight after --gracePeriod; the changefeed retries them");
    }
    server.abort();
    acceptor.stop(config.grace).await;
    Ok(())
}

/// Re-reads the keys every minute, and the keys and certificates on SIGHUP.
async fn refresh(keys: Option<Arc<Keys>>, tls: Option<Tls>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; keys are re-read every minute only");
            None
        }
    };
    let mut tick = tokio::time::interval(KEY_REFRESH);
    tick.tick().await;
    loop {
        let signalled = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if let Some(keys) = &keys {
            match keys.reload().await {
                Ok(count) if signalled => {
                    tracing::info!(keys = count, "SIGHUP: JWT public keys re-read")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %crate::error::with_causes(&e),
                    "re-reading the JWT public keys failed; the keys loaded before stay in use"),
            }
        }
        if signalled && let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate re-read"),
                Err(e) => {
                    tracing::warn!(error = %e, "re-reading the TLS certificate failed; the old one stays in use")
                }
            }
        }
    }
}
