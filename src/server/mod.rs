//! The HTTP side: `/_/varz` (Prometheus metrics), `/_/healthz` and `/_/status` (where
//! replication stands, as JSON: see [`crate::status`]) on `--metricsAddr`.
//! (The changefeed webhook joins here with `replicator start`.)

pub mod listen;
pub mod tls;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// A dependency `/_/healthz` checks (the target and staging databases).
pub type HealthCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), HealthError>> + Send>> + Send + Sync>;

/// Why a dependency did not answer.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HealthError(Box<dyn std::error::Error + Send + Sync>);

impl HealthError {
    /// Wraps the failure.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

/// Checks a PostgreSQL-protocol database (the target, staging) answers `SELECT 1` on a new
/// connection.
pub fn postgres_check(conn: crate::conn::ConnString) -> HealthCheck {
    Arc::new(move || {
        let conn = conn.clone();
        Box::pin(async move {
            let client = crate::conn::postgres::connect(&conn).await.map_err(HealthError::new)?;
            client.simple_query("SELECT 1").await.map(|_| ()).map_err(HealthError::new)
        })
    })
}

/// Checks a MySQL/MariaDB database answers `SELECT 1` on a new connection.
pub fn mysql_check(conn: crate::conn::ConnString) -> HealthCheck {
    Arc::new(move || {
        let conn = conn.clone();
        Box::pin(async move {
            use mysql_async::prelude::Queryable as _;
            let params =
                crate::conn::mysql::MyParams::from_conn(&conn).map_err(HealthError::new)?;
            let mut c = params.connect().await.map_err(HealthError::new)?;
            let answered: Result<Option<i64>, _> = c.query_first("SELECT 1").await;
            let _ = c.disconnect().await;
            answered.map(|_| ()).map_err(HealthError::new)
        })
    })
}

/// What `/_/healthz` answers when every dependency is up: this instance's part (`active`,
/// `standby`), when its command has one.
pub type Role = Box<dyn Fn() -> &'static str + Send + Sync>;

static ROLE: std::sync::OnceLock<Role> = std::sync::OnceLock::new();

/// Makes `/_/healthz` answer `role()` instead of `OK` (once per process).
pub fn set_role(role: Role) {
    let _ = ROLE.set(role);
}

#[derive(Clone)]
struct Checks {
    checks: Vec<(String, HealthCheck)>,
    timeout: Duration,
}

async fn varz() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::global().render())
}

async fn healthz(State(state): State<Checks>) -> impl IntoResponse {
    // An outage replication is waiting out right now (the source's among them, which has no
    // check of its own here).
    if let Some((name, since, why)) = crate::outage::current().into_iter().next() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name}: unreachable since {since}: {why}\n"),
        );
    }
    for (name, check) in &state.checks {
        match tokio::time::timeout(state.timeout, check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let why = crate::error::with_causes(&e);
                return (StatusCode::SERVICE_UNAVAILABLE, format!("{name}: {why}\n"));
            }
            Err(_) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{name}: no answer within {:?}\n", state.timeout),
                );
            }
        }
    }
    let role = ROLE.get().map_or("OK", |role| role());
    (StatusCode::OK, format!("{role}\n"))
}

async fn status() -> impl IntoResponse {
    let body = serde_json::to_string(&crate::status::global().snapshot()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body + "\n")
}

/// The router for the metrics endpoints.
pub fn router(checks: Vec<(String, HealthCheck)>, timeout: Duration) -> Router {
    Router::new()
        .route("/_/varz", get(varz))
        .route("/_/healthz", get(healthz))
        .route("/_/status", get(status))
        .with_state(Checks { checks, timeout })
}

/// Binds `addr` (`host:port`) and serves the metrics endpoints in the background; returns
/// the bound address (useful with port 0).
pub async fn serve_metrics(
    addr: &str,
    checks: Vec<(String, HealthCheck)>,
    timeout: Duration,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(checks, timeout);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /_/varz, /_/healthz and /_/status");
    Ok(bound)
}
