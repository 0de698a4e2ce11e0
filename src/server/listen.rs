//! Serving a router on a listener: HTTP/1.1 and HTTP/2 (h2c in clear, ALPN `h2` over TLS), a
//! 10 s limit to read a request's headers and to finish a TLS handshake, and a stop signal
//! after which no connection is accepted.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::tls::Tls;

/// How long a client has to send its headers (and to finish a TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `stop` turns true, serving `router` on each (over
/// TLS when `tls` is given). Connections already open are served to their end.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Tls>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        match &tls {
            None => {
                tokio::spawn(connection(tcp, router));
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, router).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: I, router: Router) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let service = TowerToHyperService::new(router);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
