//! The changefeed's side of `replicator start`, for the tests: keys and tokens made as an
//! operator makes them (openssl, `replicator make-jwt`), an HTTP/1.1 client over TCP or TLS,
//! a changefeed that keeps CockroachDB's delivery contract (at-least-once, retries on every
//! non-2xx, resolved only after every earlier row was acknowledged), and the fault proxy
//! ([`super::fault`]) under the name these tests knew it by.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::{Running, TempDir, replicator};

/// Runs openssl with `args`; panics with its stderr when it fails.
pub fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A new 2048-bit RSA private key (PKCS#8 PEM) at `path`.
pub fn rsa_key(path: &str) {
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path]);
}

/// A signing key and its public half, as `openssl` writes them.
pub struct KeyPair {
    /// The private key (PKCS#8 PEM), for `make-jwt --key`.
    pub private: PathBuf,
    /// The public key (SPKI PEM), for `jwt_public_keys`.
    pub public: String,
}

impl KeyPair {
    /// A P-256 key (ES256 tokens).
    pub fn ec(dir: &TempDir, name: &str) -> Self {
        let raw = dir.join(&format!("{name}.ec.pem"));
        let private = dir.join(&format!("{name}.pem"));
        let public = dir.join(&format!("{name}.pub.pem"));
        openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", s(&raw)]);
        openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", s(&raw), "-out", s(&private)]);
        openssl(&["pkey", "-in", s(&private), "-pubout", "-out", s(&public)]);
        Self { private, public: std::fs::read_to_string(public).expect("public key") }
    }

    /// A 2048-bit RSA key (RS256 tokens).
    pub fn rsa(dir: &TempDir, name: &str) -> Self {
        let private = dir.join(&format!("{name}.pem"));
        let public = dir.join(&format!("{name}.pub.pem"));
        rsa_key(s(&private));
        openssl(&["pkey", "-in", s(&private), "-pubout", "-out", s(&public)]);
        Self { private, public: std::fs::read_to_string(public).expect("public key") }
    }

    /// A token from `replicator make-jwt --key … --allow …`.
    pub fn token(&self, allow: &[&str]) -> String {
        let mut cmd = replicator();
        cmd.arg("make-jwt").arg("--key").arg(&self.private);
        for a in allow {
            cmd.args(["--allow", a]);
        }
        let out = cmd.output().expect("run make-jwt");
        assert!(out.status.success(), "make-jwt: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Inserts `public` into staging's `jwt_public_keys` (as the README tells operators to).
pub async fn insert_key(staging: &tokio_postgres::Client, schema: &str, public: &str) {
    staging
        .execute(
            &format!("INSERT INTO {schema}.jwt_public_keys (public_key) VALUES ($1)"),
            &[&public],
        )
        .await
        .expect("insert the public key");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    // Below Linux's ephemeral range (32768–60999): a port the system hands out for `:0` binds
    // and outgoing connections meanwhile cannot take it between this check and its use.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running `replicator start`.
pub struct Server {
    /// The process.
    pub run: Running,
    /// host:port it listens on.
    pub addr: String,
}

impl Server {
    /// Starts `replicator start --bindAddr 127.0.0.1:<free port> args…` and waits until it
    /// listens; panics with its log if it does not within 30 s.
    pub async fn start(dir: &TempDir, args: &[String]) -> Self {
        Self::start_at(dir, &format!("127.0.0.1:{}", free_port()), args).await
    }

    /// [`Server::start`] on `addr` (host:port): a restart where the changefeed sends.
    pub async fn start_at(dir: &TempDir, addr: &str, args: &[String]) -> Self {
        let addr = addr.to_owned();
        let mut all = vec!["start".to_owned(), "--bindAddr".to_owned(), addr.clone()];
        all.extend(args.iter().cloned());
        let mut run = Running::spawn(dir, &all);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !run.log().contains("listening for changefeed requests") {
            if let Some(ok) = run.wait_exit(Duration::from_millis(1)) {
                panic!("replicator start exited ({ok}) before listening:\n{}", run.log());
            }
            assert!(Instant::now() < deadline, "not listening after 30 s:\n{}", run.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { run, addr }
    }

    /// Sends a signal (`-HUP`, `-TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.run.child.as_ref().expect("running").id();
        let ok = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGHUP, then waits until the log shows the keys re-read `times` times in all.
    pub async fn hangup(&self, times: usize) {
        self.signal("-HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.run.log().matches("SIGHUP: JWT public keys re-read").count() < times {
            assert!(Instant::now() < deadline, "SIGHUP not handled:\n{}", self.run.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How a client trusts the server.
#[derive(Clone)]
pub enum Trust {
    /// Plain TCP.
    Plain,
    /// TLS, any certificate (the changefeed's `insecure_tls_skip_verify=true`).
    AnyCertificate,
    /// TLS, verified against this CA (PEM), for the name `localhost`.
    Root(PathBuf),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// An HTTP/1.1 client with one keep-alive connection, reopened when it breaks.
pub struct Client {
    addr: String,
    trust: Trust,
    conn: Option<BufReader<Box<dyn Io>>>,
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Client {
    /// A client of `addr` (host:port).
    pub fn new(addr: &str, trust: Trust) -> Self {
        Self { addr: addr.to_owned(), trust, conn: None }
    }

    async fn connect(&self) -> std::io::Result<BufReader<Box<dyn Io>>> {
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.trust {
            Trust::Plain => Box::new(tcp),
            trust => {
                let config = tls_config(trust);
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let tls =
                    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
                Box::new(tls)
            }
        };
        Ok(BufReader::new(io))
    }

    /// Opens the connection now (so that a request sent later does not need a new one).
    pub async fn open(&mut self) {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await.expect("connect"));
        }
    }

    /// Sends one request and reads its response; an error when the connection fails.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let conn = self.conn.as_mut().expect("connected");
        let result = exchange(conn, method, path, headers, body).await;
        if result.as_ref().map(closes).unwrap_or(true) {
            self.conn = None;
        }
        result
    }

    /// POST `body` to `path` with a Bearer token (when given); panics when the connection
    /// fails twice.
    pub async fn post(&mut self, path: &str, token: Option<&str>, body: &str) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        match self.request("POST", path, &headers, body.as_bytes()).await {
            Ok(r) => r,
            Err(_) => self
                .request("POST", path, &headers, body.as_bytes())
                .await
                .expect("POST after reconnecting"),
        }
    }

    /// GET `path`.
    pub async fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"").await.expect("GET")
    }
}

fn closes(r: &Response) -> bool {
    r.headers.iter().any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"))
}

async fn exchange(
    conn: &mut BufReader<Box<dyn Io>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;

    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        body.resize(len, 0);
        conn.read_exact(&mut body).await?;
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn tls_config(trust: &Trust) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let mut config = match trust {
        Trust::Root(ca) => {
            let pem = std::fs::read_to_string(ca).expect("read the CA");
            let mut roots = rustls::RootCertStore::empty();
            for block in pem::parse_many(pem).expect("CA PEM") {
                roots.add(block.contents().to_vec().into()).expect("CA certificate");
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Accepts any certificate but still checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A CockroachDB HLC timestamp as changefeeds write it.
pub fn hlc(nanos: i64, logical: u32) -> String {
    format!("{nanos}.{logical:010}")
}

/// One changefeed row of a table feed.
pub fn line(
    topic: &str,
    key: serde_json::Value,
    after: Option<serde_json::Value>,
    updated: &str,
) -> serde_json::Value {
    serde_json::json!({ "after": after, "key": key, "topic": topic, "updated": updated })
}

/// A webhook body of `lines`.
pub fn payload(lines: &[serde_json::Value]) -> String {
    serde_json::json!({ "payload": lines, "length": lines.len() }).to_string()
}

/// A resolved-timestamp body.
pub fn resolved(hlc: &str) -> String {
    serde_json::json!({ "resolved": hlc }).to_string()
}

/// A changefeed sending to one path: every request is retried until it gets 200, as
/// CockroachDB does, and each non-2xx status seen is kept.
pub struct Feed {
    /// The connection.
    pub client: Client,
    /// The path of every request.
    pub path: String,
    /// The token, if any.
    pub token: Option<String>,
    /// Every non-2xx answer, in order.
    pub refusals: Vec<Response>,
    /// How long a request may be retried before the test fails.
    pub patience: Duration,
}

impl Feed {
    /// A feed to `path` on `addr`.
    pub fn new(addr: &str, trust: Trust, path: &str, token: Option<String>) -> Self {
        Self {
            client: Client::new(addr, trust),
            path: path.to_owned(),
            token,
            refusals: Vec::new(),
            patience: Duration::from_secs(30),
        }
    }

    /// Sends `body` until it is acknowledged; panics (with the refusals) past the patience.
    pub async fn deliver(&mut self, body: &str) {
        let deadline = Instant::now() + self.patience;
        let mut pause = Duration::from_millis(20);
        loop {
            let r = self.client.post(&self.path, self.token.as_deref(), body).await;
            if r.status == 200 {
                return;
            }
            self.refusals.push(r);
            assert!(
                Instant::now() < deadline,
                "not acknowledged within {:?}; refusals: {:?}",
                self.patience,
                self.refusals.iter().rev().take(3).collect::<Vec<_>>()
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Delivers the rows, then (only once they were acknowledged) the resolved timestamp.
    pub async fn deliver_resolved(&mut self, lines: &[serde_json::Value], at: &str) {
        if !lines.is_empty() {
            self.deliver(&payload(lines)).await;
        }
        self.deliver(&resolved(at)).await;
    }
}

/// The fault proxy, under the name these tests knew it by.
#[allow(unused_imports)]
pub use super::fault::FaultProxy as Proxy;
