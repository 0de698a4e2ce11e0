//! Connections that speak PostgreSQL's protocol (a PostgreSQL source, CockroachDB or
//! PostgreSQL targets, staging): libpq's URL parameters, TLS with rustls per `sslmode`, and
//! tokio-postgres clients on top.
//!
//! `sslmode` keeps libpq's meanings: `disable` (plain), `allow`/`prefer` (TLS when the server
//! offers it, certificate not checked; `allow` is read as `prefer`), `require` (TLS, the
//! certificate not checked unless `sslrootcert` is given, then as `verify-ca`), `verify-ca`
//! (the chain must lead to `sslrootcert`), `verify-full` (and the certificate must name the
//! host). `sslrootcert=system` trusts the Mozilla roots built into the binary. `sslcert` and
//! `sslkey` present a client certificate. The default, as in libpq, is `prefer`.
//!
//! Other query parameters that are not connection settings (`search_path`, `TimeZone`, …)
//! are passed to the server as run-time parameters, as libpq's `options=-c name=value` would.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{ConnString, SslMode};

/// Why a connection could not be set up or opened. Never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum PgConnError {
    /// A parameter that cannot be used.
    #[error("{conn}: {problem}")]
    Param {
        /// The redacted URL.
        conn: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// TLS could not be set up (certificates, keys).
    #[error("{conn}: setting up TLS failed: {problem}")]
    Tls {
        /// The redacted URL.
        conn: String,
        /// What failed.
        problem: String,
    },
    /// Connecting failed.
    #[error("connecting to {conn} failed")]
    Connect {
        /// The redacted URL.
        conn: String,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A PostgreSQL-protocol connection's settings, read from a `postgres://` URL.
#[derive(Clone)]
pub struct PgParams {
    /// The redacted URL, for messages.
    pub redacted: String,
    /// Host name or IP address.
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// User (default: `$PGUSER`, else `$USER`, else `postgres`).
    pub user: String,
    password: Option<String>,
    /// Database (default: the user's name).
    pub dbname: String,
    /// TLS negotiation.
    pub sslmode: SslMode,
    /// Root certificates (PEM file) or `system`.
    pub sslrootcert: Option<String>,
    /// Client certificate chain (PEM file).
    pub sslcert: Option<PathBuf>,
    /// Client key (PEM file).
    pub sslkey: Option<PathBuf>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// How long to wait for the TCP connection and TLS handshake.
    pub connect_timeout: Duration,
    /// Run-time parameters for the startup message.
    pub runtime: Vec<(String, String)>,
}

impl std::fmt::Debug for PgParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl PgParams {
    /// Reads the URL's parts and parameters.
    pub fn from_conn(conn: &ConnString) -> Result<Self, PgConnError> {
        let redacted = conn.redacted();
        let bad = |problem: String| PgConnError::Param { conn: redacted.clone(), problem };
        let hostport = conn.host();
        if hostport.contains(',') {
            return Err(
                bad("several hosts in one URL are not supported: name one host".to_owned()),
            );
        }
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        let user = conn
            .user()
            .or_else(|| std::env::var("PGUSER").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".to_owned());
        let mut params = Self {
            redacted: redacted.clone(),
            host,
            port,
            dbname: conn.database().unwrap_or_else(|| user.clone()),
            user,
            password: conn.expose_password(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            application_name: None,
            connect_timeout: Duration::from_secs(30),
            runtime: Vec::new(),
        };
        for (key, value) in conn.params() {
            match key.as_str() {
                "sslmode" => {
                    params.sslmode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(bad(format!(
                                "sslmode={other} is not a TLS mode: use disable, allow, prefer, \
                                 require, verify-ca or verify-full"
                            )));
                        }
                    }
                }
                "sslrootcert" => params.sslrootcert = Some(value),
                "sslcert" => params.sslcert = Some(PathBuf::from(value)),
                "sslkey" => params.sslkey = Some(PathBuf::from(value)),
                "application_name" => params.application_name = Some(value),
                "password" => params.password = Some(value),
                "user" => params.user = value,
                "dbname" => params.dbname = value,
                "host" => params.host = value,
                "port" => {
                    params.port = value
                        .parse()
                        .map_err(|_| bad(format!("port={value} is not a port number")))?;
                }
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        bad(format!("connect_timeout={value} is not a number of seconds"))
                    })?;
                    if secs > 0 {
                        params.connect_timeout = Duration::from_secs(secs);
                    }
                }
                // Accepted from tools' URLs; meaningless here.
                "sslnegotiation" | "sslsni" | "target_session_attrs" => {}
                "replication" => {
                    return Err(bad(
                        "remove replication= from the URL: replicator opens its replication \
                         connection itself"
                            .to_owned(),
                    ));
                }
                "sslpassword" => {
                    return Err(bad(
                        "encrypted client keys (sslpassword) are not supported: decrypt the key \
                         file, e.g. openssl pkey -in key.pem -out plain.pem"
                            .to_owned(),
                    ));
                }
                _ => params.runtime.push((key, value)),
            }
        }
        if params.sslmode == SslMode::Require && params.sslrootcert.is_some() {
            params.sslmode = SslMode::VerifyCa;
        }
        if params.sslcert.is_some() != params.sslkey.is_some() {
            return Err(bad("sslcert and sslkey go together: give both or neither".to_owned()));
        }
        Ok(params)
    }

    /// The password. Only for authentication: never log it.
    pub fn expose_password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The TLS configuration `sslmode` asks for; `None` for `disable`.
    pub fn tls(&self) -> Result<Option<Arc<ClientConfig>>, PgConnError> {
        if self.sslmode == SslMode::Disable {
            return Ok(None);
        }
        let tls_err = |problem: String| PgConnError::Tls { conn: self.redacted.clone(), problem };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.sslmode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(AnyCertificate { provider: provider.clone() })
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = self.roots().map_err(tls_err)?;
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| tls_err(e.to_string()))?;
                Arc::new(Verify { inner: webpki, check_name: self.sslmode == SslMode::VerifyFull })
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let config = match (&self.sslcert, &self.sslkey) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert).map_err(tls_err)?;
                let key = read_key(key).map_err(tls_err)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    tls_err(format!("the client certificate and key do not fit: {e}"))
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        let path = match self.sslrootcert.as_deref() {
            Some("system") => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                return Ok(roots);
            }
            Some(path) => PathBuf::from(path),
            None => {
                let default = std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                    .filter(|p| p.exists());
                default.ok_or_else(|| {
                    "sslmode=verify-ca and verify-full need the CA certificate: add \
                     sslrootcert=/path/to/ca.pem to the URL (or sslrootcert=system)"
                        .to_owned()
                })?
            }
        };
        for cert in read_certs(&path)? {
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(roots)
    }

    /// tokio-postgres settings for these parameters (TLS comes from [`PgParams::tls`]).
    pub fn client_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = &self.password {
            config.password(password);
        }
        // Sessions say who they are in pg_stat_activity, unless the URL names them otherwise.
        config.application_name(self.application_name.as_deref().unwrap_or("replicator"));
        if !self.runtime.is_empty() {
            config.options(runtime_options(&self.runtime));
        }
        config
    }
}

/// `-c name=value` pairs for the `options` startup parameter (spaces and backslashes escaped).
pub fn runtime_options(runtime: &[(String, String)]) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace(' ', "\\ ");
    runtime
        .iter()
        .map(|(k, v)| format!("-c {}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("host {hostport:?} opens [ without closing it"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => 5432,
        Some(p) => p.parse().map_err(|_| format!("port {p:?} is not a port number"))?,
    };
    Ok((host.to_owned(), port))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let blocks = pem::parse_many(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(format!("{} holds no PEM CERTIFICATE", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let blocks = pem::parse_many(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for block in blocks {
        let key = match block.tag() {
            "PRIVATE KEY" => PrivateKeyDer::Pkcs8(block.into_contents().into()),
            "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(block.into_contents().into()),
            "EC PRIVATE KEY" => PrivateKeyDer::Sec1(block.into_contents().into()),
            "ENCRYPTED PRIVATE KEY" => {
                return Err(format!(
                    "{} is encrypted: decrypt it first (openssl pkey -in {0} -out plain.pem)",
                    path.display()
                ));
            }
            _ => continue,
        };
        return Ok(key);
    }
    Err(format!("{} holds no PEM private key", path.display()))
}

/// `sslmode=prefer`/`require`: encryption without authentication of the server, as libpq.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (chain only) and `verify-full` (chain and name).
#[derive(Debug)]
struct Verify {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host {host:?}: {e}")))
}

// --- tokio-postgres clients ------------------------------------------------------------------

/// Opens a tokio-postgres client (the connection runs on its own task) with TLS per
/// `sslmode`.
pub async fn connect(conn: &ConnString) -> Result<tokio_postgres::Client, PgConnError> {
    let params = PgParams::from_conn(conn)?;
    connect_params(&params).await
}

/// [`connect`] with parameters already read.
pub async fn connect_params(params: &PgParams) -> Result<tokio_postgres::Client, PgConnError> {
    let config = params.client_config();
    let failed = |e: tokio_postgres::Error| PgConnError::Connect {
        conn: params.redacted.clone(),
        source: Box::new(e),
    };
    match params.tls()? {
        None => {
            let (client, connection) =
                config.connect(tokio_postgres::NoTls).await.map_err(failed)?;
            drive(connection);
            Ok(client)
        }
        Some(tls) => {
            let (client, connection) =
                config.connect(MakeRustls { config: tls }).await.map_err(failed)?;
            drive(connection);
            Ok(client)
        }
    }
}

/// [`connect`], with the connection's notifications (`LISTEN`) sent to the receiver, which
/// ends when the connection closes.
pub async fn connect_listening(
    conn: &ConnString,
) -> Result<
    (tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>),
    PgConnError,
> {
    let params = PgParams::from_conn(conn)?;
    let config = params.client_config();
    let failed = |e: tokio_postgres::Error| PgConnError::Connect {
        conn: params.redacted.clone(),
        source: Box::new(e),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = match params.tls()? {
        None => {
            let (client, connection) =
                config.connect(tokio_postgres::NoTls).await.map_err(failed)?;
            drive_notifying(connection, tx);
            client
        }
        Some(tls) => {
            let (client, connection) =
                config.connect(MakeRustls { config: tls }).await.map_err(failed)?;
            drive_notifying(connection, tx);
            client
        }
    };
    Ok((client, rx))
}

/// Runs a client's connection on its own task, handing its notifications on.
fn drive_notifying<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notifications: tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if notifications.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "listening connection closed");
                    return;
                }
            }
        }
    });
}

/// Runs a client's connection on its own task until it closes.
fn drive<C>(connection: C)
where
    C: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
}

/// rustls for tokio-postgres.
#[derive(Clone)]
struct MakeRustls {
    config: Arc<ClientConfig>,
}

struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// A TLS stream for tokio-postgres.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        Ok(RustlsConnect { config: self.config.clone(), name: server_name(domain)? })
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config);
            tls.connect(self.name, stream).await.map(RustlsStream)
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

// --- raw streams (the replication connection) ------------------------------------------------

/// A byte stream to the server, plain or TLS, after the SSLRequest exchange.
pub enum PgStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl PgStream {
    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self, PgStream::Tls(_))
    }
}

/// Opens a TCP connection and negotiates TLS per `sslmode` (SSLRequest, then the handshake).
pub async fn open_stream(params: &PgParams) -> Result<PgStream, PgConnError> {
    let failed =
        |e: io::Error| PgConnError::Connect { conn: params.redacted.clone(), source: Box::new(e) };
    let timeout = params.connect_timeout;
    let open = async {
        let mut tcp = TcpStream::connect((params.host.as_str(), params.port)).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = params.tls().map_err(|e| io::Error::other(e.to_string()))? else {
            return Ok(PgStream::Plain(tcp));
        };
        // SSLRequest: length 8, code 80877103.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(server_name(&params.host)?, tcp)
                    .await?;
                Ok(PgStream::Tls(Box::new(stream)))
            }
            b'N' if params.sslmode == SslMode::Prefer => {
                // The server said no on this connection; libpq goes on in plain text.
                Ok(PgStream::Plain(tcp))
            }
            b'N' => Err(io::Error::other(
                "the server does not accept TLS, but sslmode asks for it: enable ssl on the \
                 server, or use sslmode=prefer or sslmode=disable",
            )),
            other => {
                Err(io::Error::other(format!("unexpected answer {other:#04x} to the TLS request")))
            }
        }
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(failed(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {}s (connect_timeout)", timeout.as_secs()),
        ))),
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(url: &str) -> Result<PgParams, PgConnError> {
        PgParams::from_conn(&url.parse().expect("url"))
    }

    #[test]
    fn urls_are_read_like_libpq() {
        let p = params("postgres://app:p%40ss@db.example:6432/shop?sslmode=require&search_path=a")
            .expect("parses");
        assert_eq!((p.host.as_str(), p.port), ("db.example", 6432));
        assert_eq!((p.user.as_str(), p.dbname.as_str()), ("app", "shop"));
        assert_eq!(p.expose_password(), Some("p@ss"));
        assert_eq!(p.sslmode, SslMode::Require);
        assert_eq!(p.runtime, vec![("search_path".to_owned(), "a".to_owned())]);
        assert!(!format!("{p:?}").contains("p@ss") && !format!("{p:?}").contains("p%40ss"));

        let p = params("postgres://app@[::1]/shop").expect("ipv6");
        assert_eq!((p.host.as_str(), p.port, p.sslmode), ("::1", 5432, SslMode::Prefer));
        let p = params("postgres://app@h/shop?sslmode=require&sslrootcert=/ca.pem").expect("ca");
        assert_eq!(p.sslmode, SslMode::VerifyCa, "libpq: require with a root cert verifies");
        assert_eq!(runtime_options(&[("a b".into(), "c\\d".into())]), "-c a\\ b=c\\\\d");
    }

    #[test]
    fn bad_parameters_say_what_to_do() {
        let err = params("postgres://u:secret@h/db?sslmode=strict").expect_err("bad mode");
        let text = err.to_string();
        assert!(text.contains("use disable, allow, prefer, require, verify-ca or verify-full"));
        assert!(!text.contains("secret"), "{text}");
        let err = params("postgres://u@h/db?sslcert=/c.pem").expect_err("half a pair");
        assert!(err.to_string().contains("sslcert and sslkey go together"));
        let err = params("postgres://u@h/db?replication=database").expect_err("ours");
        assert!(err.to_string().contains("remove replication="));
        let err = params("postgres://u@h:port/db").expect_err("port");
        assert!(err.to_string().contains("not a port number"));
        let err = params("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .expect("parses")
            .tls()
            .expect_err("no file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
