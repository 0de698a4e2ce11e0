//! The changefeed's HTTP requests, from the path to the status code.
//!
//! In order: the path names a target schema and a body form, else 404; the token allows that
//! schema, else 401 (none, or not one of ours) or 403 (valid, another schema); while shutting
//! down, 503; the body is read (gzip decoded) up to `--maxRequestBytes`, else 413, within a
//! bound on the bytes held across all requests, else 503; it parses, else 400; then the mode
//! writes it, and the request is answered 200 `OK` or with the mode's refusal (see
//! [`super::Refused`]). The write runs detached from the connection under
//! `--httpResponseTimeout`: a client that goes away does not cut a transaction short.
//!
//! Each distinct refusal is logged once (a changefeed retries a failing request forever) and
//! every answer is counted by status code.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::Refused;
use super::accept::{Accepted, Acceptor};
use super::payload::{self, Body};
use super::route::{self, Form, Route};
use crate::auth::{Denied, Verifier};
use crate::conn::ConnString;
use crate::staging::StagingSchema;

/// How long a request's body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The most distinct refusals remembered for logging once.
const SEEN_LIMIT: usize = 1024;

/// How requests are read.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// Path segments that name the target schema: 2 (PostgreSQL, CockroachDB) or 1 (MySQL).
    pub schema_parts: usize,
    /// `--maxRequestBytes`: the largest body, decompressed.
    pub max_request_bytes: usize,
    /// `--ndjsonBufferSize`: the longest ndjson line.
    pub ndjson_buffer: usize,
    /// `--httpResponseTimeout`.
    pub response_timeout: Duration,
}

/// The tokens' keys, loaded from staging and reloaded every minute and on SIGHUP.
pub struct Keys {
    verifier: RwLock<Arc<Verifier>>,
    staging: ConnString,
    schema: StagingSchema,
}

impl Keys {
    /// Loads the keys (and says how many are active); a malformed key row is logged and
    /// skipped.
    pub async fn load(
        staging: ConnString,
        schema: StagingSchema,
    ) -> Result<(Self, usize), KeysError> {
        let keys = Self { verifier: RwLock::new(Arc::new(Verifier::default())), staging, schema };
        let count = keys.reload().await?;
        Ok((keys, count))
    }

    /// Reads the keys again; on failure the keys loaded before stay in use.
    pub async fn reload(&self) -> Result<usize, KeysError> {
        let client =
            crate::conn::postgres::connect(&self.staging).await.map_err(KeysError::Connect)?;
        let (verifier, skipped) =
            Verifier::load(&client, &self.schema).await.map_err(KeysError::Read)?;
        for (id, why) in skipped {
            tracing::warn!(id = %id, problem = %why, table = %self.schema.table("jwt_public_keys"),
                "skipping a public key that cannot be used");
        }
        let count = verifier.keys();
        match self.verifier.write() {
            Ok(mut current) => *current = Arc::new(verifier),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(verifier),
        }
        crate::metrics::global().jwt_last_refresh_time.set(now_seconds());
        Ok(count)
    }

    fn current(&self) -> Arc<Verifier> {
        self.verifier.read().map(|v| v.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Why the keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Staging unreachable.
    #[error("connecting to staging to read the JWT public keys failed")]
    Connect(#[source] crate::conn::postgres::PgConnError),
    /// The tables could not be read.
    #[error("reading jwt_public_keys and jwt_revoked_ids failed")]
    Read(#[source] tokio_postgres::Error),
}

/// The changefeed endpoint's state.
pub struct Changefeed {
    config: HandlerConfig,
    /// `None`: `--disableAuthentication`.
    keys: Option<Arc<Keys>>,
    acceptor: Arc<Acceptor>,
    /// Body bytes held across all requests.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    seen: Mutex<HashSet<String>>,
}

impl Changefeed {
    /// The endpoint: requests are checked against `keys` (none: every request is allowed) and
    /// handed to `acceptor`.
    pub fn new(config: HandlerConfig, keys: Option<Arc<Keys>>, acceptor: Arc<Acceptor>) -> Self {
        // Two of the largest bodies at once, and never less than 64 MiB.
        let budget_bytes = config.max_request_bytes.saturating_mul(2).max(64 << 20);
        let budget = Arc::new(Semaphore::new(budget_bytes.min(Semaphore::MAX_PERMITS)));
        Self {
            config,
            keys,
            acceptor,
            budget,
            budget_bytes,
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// From now on requests are answered 503; waits up to `grace` for those in flight.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            let waiting = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), waiting).await.is_err() {
                return self.in_flight.load(Ordering::SeqCst) == 0;
            }
        }
    }

    async fn serve(self: &Arc<Self>, request: Request) -> Result<Accepted, Refused> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let route = route::route(path, self.config.schema_parts)
            .map_err(|e| Refused { status: 404, reason: e.to_string() })?;
        if let Some(keys) = &self.keys {
            let token = token(&parts.headers, parts.uri.query());
            keys.current().check(token.as_deref(), &route.schema).map_err(denied)?;
        }
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Refused::unavailable(
                "replicator is shutting down; retry on another instance",
            ));
        }
        let gzip = encoding(&parts.headers)?;
        let (bytes, _held) = self.read_body(body, gzip).await?;
        crate::metrics::global().http_payload_in_bytes_total.inc_by(bytes.len() as u64);
        let body = parse(&route, &bytes, self.config.ndjson_buffer)?;
        drop(bytes);
        let acceptor = self.acceptor.clone();
        let work = tokio::spawn(async move { acceptor.accept(&route, body).await });
        match tokio::time::timeout(self.config.response_timeout, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(panicked)) => Err(Refused { status: 500, reason: format!("a bug: {panicked}") }),
            Err(_) => Err(Refused::unavailable(format!(
                "not done within --httpResponseTimeout {:?}; it goes on, and the retry finds it done",
                self.config.response_timeout
            ))),
        }
    }

    /// The body, decompressed, within the limits; the budget it holds is released with the
    /// permit.
    async fn read_body(
        &self,
        body: axum::body::Body,
        gzip: bool,
    ) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Refused> {
        let limit = self.config.max_request_bytes;
        let too_large = || Refused {
            status: 413,
            reason: format!(
                "the body is larger than --maxRequestBytes ({limit} bytes, decompressed): raise it"
            ),
        };
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut hold = |n: usize| -> Result<(), Refused> {
            let n = u32::try_from(n).map_err(|_| too_large())?;
            match self.budget.clone().try_acquire_many_owned(n) {
                Ok(p) => {
                    match &mut held {
                        Some(h) => h.merge(p),
                        None => held = Some(p),
                    }
                    Ok(())
                }
                Err(_) => Err(Refused::unavailable(format!(
                    "replicator holds {} bytes of request bodies already; retry",
                    self.budget_bytes
                ))),
            }
        };
        let mut out: Vec<u8> = Vec::new();
        let mut decoder = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
        let mut stream = body.into_data_stream();
        let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
        loop {
            let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(Refused::unavailable(format!(
                        "the body did not arrive within {BODY_TIMEOUT:?}"
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Refused::bad_request(format!("reading the body failed: {e}")));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            match &mut decoder {
                None => {
                    if out.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    hold(chunk.len())?;
                    out.extend_from_slice(&chunk);
                }
                Some(d) => {
                    let before = d.get_ref().len();
                    d.write_all(&chunk).map_err(|e| {
                        Refused::bad_request(format!("the gzip body is corrupt: {e}"))
                    })?;
                    let after = d.get_ref().len();
                    if after > limit {
                        return Err(too_large());
                    }
                    hold(after - before)?;
                }
            }
        }
        if let Some(d) = decoder {
            let before = d.get_ref().len();
            out = d
                .finish()
                .map_err(|e| Refused::bad_request(format!("the gzip body is corrupt: {e}")))?;
            if out.len() > limit {
                return Err(too_large());
            }
            hold(out.len().saturating_sub(before))?;
        }
        Ok((out, held))
    }

    /// Logs a refusal the first time it is seen (then at debug level).
    fn log_once(&self, refused: &Refused, path: &str) {
        let first = self.seen.lock().is_ok_and(|mut seen| {
            if seen.contains(&refused.reason) {
                false
            } else {
                if seen.len() < SEEN_LIMIT {
                    seen.insert(refused.reason.clone());
                }
                true
            }
        });
        if first {
            tracing::warn!(status = refused.status, path = %path, reason = %refused.reason,
                "changefeed request refused (logged once; the changefeed retries it)");
        } else {
            tracing::debug!(status = refused.status, path = %path, reason = %refused.reason,
                "changefeed request refused again");
        }
    }
}

/// The token: `Authorization: Bearer …`, or when that header is absent the `access_token`
/// query parameter.
fn token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
    }
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "access_token").then(|| route::percent_decode(value)).flatten()
    })
}

fn denied(d: Denied) -> Refused {
    let status = if matches!(d, Denied::Schema(_)) { 403 } else { 401 };
    Refused { status, reason: d.to_string() }
}

/// Whether the body is gzip; an encoding replicator cannot read is refused.
fn encoding(headers: &HeaderMap) -> Result<bool, Refused> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => Ok(false),
        Some(e) if e.is_empty() || e == "identity" => Ok(false),
        Some(e) if e == "gzip" || e == "x-gzip" => Ok(true),
        Some(e) => {
            Err(Refused::bad_request(format!("Content-Encoding {e:?} is not supported (gzip is)")))
        }
    }
}

fn parse(route: &Route, bytes: &[u8], ndjson_buffer: usize) -> Result<Body, Refused> {
    let bad = |e: payload::PayloadError| Refused::bad_request(e.to_string());
    match &route.form {
        Form::Webhook => payload::webhook(bytes, route.table.is_some()).map_err(bad),
        Form::Ndjson { topic } => {
            let mut lines = payload::ndjson(bytes, topic, ndjson_buffer).map_err(bad)?;
            // Under a table segment, the URL's table wins over the file name's.
            if let Some(table) = &route.table {
                for line in &mut lines {
                    line.table = Some(table.clone());
                }
            }
            Ok(Body::Lines(lines))
        }
        Form::Resolved { resolved } => Ok(Body::Resolved(*resolved)),
    }
}

async fn handle(State(feed): State<Arc<Changefeed>>, request: Request) -> Response {
    let started = Instant::now();
    feed.in_flight.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let result = feed.serve(request).await;
    if feed.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
        feed.idle.notify_waiters();
    }
    let (status, body) = match result {
        Ok(_) => (200, "OK\n".to_owned()),
        Err(refused) => {
            feed.log_once(&refused, &path);
            (refused.status, format!("{}\n", refused.reason.replace('\n', " ")))
        }
    };
    let metrics = crate::metrics::global();
    let code = status.to_string();
    metrics.http_status_codes_total.with_label_values(&[&code]).inc();
    metrics
        .http_latency_seconds
        .with_label_values(&[&code])
        .observe(started.elapsed().as_secs_f64());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn reserved() -> Response {
    (StatusCode::NOT_FOUND, "no such endpoint (/_/healthz, /_/varz, /_/status)\n").into_response()
}

/// The changefeed routes: every path but `/_/…`, any method (the webhook sink POSTs, the
/// cloud-storage sink PUTs).
pub fn router(feed: Arc<Changefeed>) -> Router {
    Router::new()
        .route("/_/{*rest}", axum::routing::any(reserved))
        .fallback(handle)
        .with_state(feed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_over_the_query_parameter() {
        let mut headers = HeaderMap::new();
        assert_eq!(token(&headers, Some("a=1&access_token=x%2Ey")), Some("x.y".into()));
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert_eq!(token(&headers, Some("access_token=x")), Some("abc".into()));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(
            token(&headers, Some("access_token=x")),
            None,
            "a non-Bearer header is no token"
        );
    }

    #[test]
    fn encodings() {
        let mut headers = HeaderMap::new();
        assert_eq!(encoding(&headers), Ok(false));
        headers.insert(header::CONTENT_ENCODING, "GZIP".parse().expect("header"));
        assert_eq!(encoding(&headers), Ok(true));
        headers.insert(header::CONTENT_ENCODING, "br".parse().expect("header"));
        assert_eq!(encoding(&headers).map_err(|r| r.status), Err(400));
    }
}
