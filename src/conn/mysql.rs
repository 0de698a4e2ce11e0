//! Connections that speak MySQL's protocol (a MySQL or MariaDB source): the URL forms users
//! bring, TLS with rustls, and mysql_async connections on top.
//!
//! Two URL forms are read: MOLT's (Go driver's) `mysql://user:pass@tcp(host:port)/db` and the
//! plain `mysql://user:pass@host:port/db`; user and password are percent-decoded, so a
//! password holding `@`, `:` or `/` is written `%40`, `%3A`, `%2F`.
//!
//! TLS follows the `sslmode` words PostgreSQL users know: `disable` (plain), `prefer` (TLS when
//! the server offers it, certificate not checked; the default), `require` (TLS or fail,
//! certificate not checked unless `sslrootcert` is given, then as `verify-ca`), `verify-ca` (the
//! chain must lead to `sslrootcert`), `verify-full` (and the certificate must name the host).
//! `sslcert` + `sslkey` present a client certificate. The Go driver's `tls=` parameter is read
//! too: `false` = disable, `preferred` = prefer, `skip-verify` = require, `true` = verify-full.
//! Go driver parameters that change nothing here (`parseTime`, `loc`, `charset`, …) are
//! accepted with a warning; `timeout`/`connect_timeout` bound the connect.

use std::path::PathBuf;
use std::time::Duration;

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

use super::{ConnString, SslMode};
use crate::types::duration::parse as parse_duration;

/// Why a MySQL connection URL cannot be used. Never contains the password.
#[derive(Debug, thiserror::Error)]
#[error("{conn}: {problem}")]
pub struct MyConnError {
    /// The redacted URL.
    pub conn: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// A MySQL/MariaDB connection, read from a URL.
#[derive(Clone)]
pub struct MyParams {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
    ssl: SslMode,
    root_cert: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    connect_timeout: Duration,
    redacted: String,
}

impl std::fmt::Debug for MyParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Go driver parameters that have no effect on a replication client.
const HARMLESS: &[&str] =
    &["parseTime", "loc", "charset", "collation", "allowNativePasswords", "interpolateParams"];

impl MyParams {
    /// Reads `mysql://…` in either form.
    pub fn from_conn(conn: &ConnString) -> Result<Self, MyConnError> {
        let redacted = conn.redacted();
        let fail = |problem: String| MyConnError { conn: redacted.clone(), problem };
        let mut address = conn.host();
        if let Some(inner) = address.strip_prefix("tcp(") {
            address = inner.strip_suffix(')').ok_or_else(|| {
                fail("tcp( has no closing parenthesis: write tcp(host:port)".into())
            })?;
        } else if address.starts_with("unix(") {
            return Err(fail(
                "Unix sockets are not supported: connect over TCP, e.g. tcp(127.0.0.1:3306)".into(),
            ));
        }
        let (host, port) = split_host_port(address)
            .ok_or_else(|| fail(format!("cannot read host and port from {address:?}")))?;
        let mut params = Self {
            host,
            port,
            user: conn.user(),
            password: conn.expose_password(),
            database: conn.database(),
            ssl: SslMode::Prefer,
            root_cert: None,
            identity: None,
            connect_timeout: Duration::from_secs(30),
            redacted: redacted.clone(),
        };
        let (mut cert, mut key) = (None, None);
        let mut explicit_require = false;
        for (name, value) in conn.params() {
            match name.as_str() {
                "sslmode" | "ssl-mode" => {
                    params.ssl = match value.to_ascii_lowercase().replace('_', "-").as_str() {
                        "disable" | "disabled" => SslMode::Disable,
                        "allow" | "prefer" | "preferred" => SslMode::Prefer,
                        "require" | "required" => {
                            explicit_require = true;
                            SslMode::Require
                        }
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" | "verify-identity" => SslMode::VerifyFull,
                        other => {
                            return Err(fail(format!(
                                "sslmode={other} is not known: use disable, prefer, require, \
                                 verify-ca or verify-full"
                            )));
                        }
                    }
                }
                "tls" => {
                    params.ssl = match value.as_str() {
                        "false" => SslMode::Disable,
                        "preferred" => SslMode::Prefer,
                        "skip-verify" => SslMode::Require,
                        "true" => SslMode::VerifyFull,
                        other => {
                            return Err(fail(format!(
                                "tls={other}: use true, false, skip-verify or preferred (named \
                                 TLS configurations are Go-only; use sslrootcert=… instead)"
                            )));
                        }
                    }
                }
                "sslrootcert" => params.root_cert = Some(PathBuf::from(value)),
                "sslcert" => cert = Some(PathBuf::from(value)),
                "sslkey" => key = Some(PathBuf::from(value)),
                "timeout" | "connect_timeout" => {
                    params.connect_timeout = match value.parse::<u64>() {
                        Ok(seconds) => Duration::from_secs(seconds),
                        Err(_) => parse_duration(&value).map_err(|e| {
                            fail(format!("{name}={value}: {e} (write seconds or e.g. 10s)"))
                        })?,
                    }
                }
                other if HARMLESS.contains(&other) => {
                    tracing::warn!(
                        parameter = other,
                        "connection parameter has no effect on replication; ignored"
                    );
                }
                other => {
                    return Err(fail(format!(
                        "parameter {other:?} is not known: supported are sslmode, sslrootcert, \
                         sslcert, sslkey, tls and timeout"
                    )));
                }
            }
        }
        if explicit_require && params.root_cert.is_some() {
            params.ssl = SslMode::VerifyCa;
        }
        params.identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(fail("sslcert and sslkey go together: give both or neither".into())),
        };
        for path in params.root_cert.iter().chain(params.identity.iter().flat_map(|(c, k)| [c, k]))
        {
            if !path.exists() {
                return Err(fail(format!("{} does not exist", path.display())));
            }
        }
        Ok(params)
    }

    /// The URL with its password masked.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The user name, for messages.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("")
    }

    fn ssl_opts(&self) -> Option<SslOpts> {
        let mut ssl = match self.ssl {
            SslMode::Disable => return None,
            SslMode::Prefer | SslMode::Require => SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
            SslMode::VerifyCa => SslOpts::default().with_danger_skip_domain_validation(true),
            SslMode::VerifyFull => SslOpts::default(),
        };
        if let Some(root) = &self.root_cert {
            ssl = ssl.with_root_certs(vec![root.clone().into()]);
        }
        if let Some((cert, key)) = &self.identity {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        Some(ssl)
    }

    /// mysql_async options; `tls` false leaves TLS off whatever the mode.
    pub fn opts(&self, tls: bool) -> Opts {
        let builder = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(self.user.clone())
            .pass(self.password.clone())
            .db_name(self.database.clone())
            .prefer_socket(false)
            // performance_schema.session_connect_attrs names the sessions replicator opens.
            .connect_attribute("program_name", "replicator")
            .ssl_opts(if tls { self.ssl_opts() } else { None });
        builder.into()
    }

    /// Opens a connection: with `prefer`, over TLS when the server offers it, else plain.
    pub async fn connect(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        let attempt = |tls: bool| {
            let opts = self.opts(tls);
            let within = self.connect_timeout;
            async move {
                match tokio::time::timeout(within, mysql_async::Conn::new(opts)).await {
                    Ok(result) => result,
                    Err(_) => {
                        Err(mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no connection within {within:?}"),
                        ))))
                    }
                }
            }
        };
        match attempt(true).await {
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.ssl == SslMode::Prefer => {
                tracing::debug!(server = %self.address(), "the server does not offer TLS; connecting without");
                attempt(false).await
            }
            other => other,
        }
    }
}

fn split_host_port(address: &str) -> Option<(String, u16)> {
    if address.is_empty() {
        return None;
    }
    if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 3306,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => Some((address.to_owned(), 3306)),
        None => Some((address.to_owned(), 3306)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(url: &str) -> Result<MyParams, MyConnError> {
        MyParams::from_conn(&ConnString::parse(url).expect("url"))
    }

    #[test]
    fn both_url_forms_and_encoded_passwords() {
        let p = params("mysql://app:p%40ss%3Aw%2Frd@tcp(db.example:3307)/inventory")
            .expect("molt form");
        assert_eq!((p.host.as_str(), p.port), ("db.example", 3307));
        assert_eq!(p.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!(p.database.as_deref(), Some("inventory"));
        assert_eq!(p.user(), "app");
        let p = params("mysql://root@127.0.0.1/db").expect("plain form");
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 3306));
        assert_eq!(p.password, None);
        let p = params("mysql://root@[::1]:3308/db").expect("ipv6");
        assert_eq!((p.host.as_str(), p.port), ("::1", 3308));
        assert!(!format!("{p:?}").contains("p@ss"));
        let e = params("mysql://u:secret@tcp(h:3306/db").expect_err("unclosed");
        assert!(e.to_string().contains("closing parenthesis"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = params("mysql://u@unix(/run/mysqld.sock)/db").expect_err("socket");
        assert!(e.to_string().contains("Unix sockets"), "{e}");
    }

    #[test]
    fn tls_parameters() {
        assert_eq!(params("mysql://u@h/db").expect("default").ssl, SslMode::Prefer);
        assert_eq!(params("mysql://u@h/db?sslmode=disable").expect("d").ssl, SslMode::Disable);
        assert_eq!(params("mysql://u@h/db?sslmode=require").expect("r").ssl, SslMode::Require);
        assert_eq!(params("mysql://u@h/db?tls=skip-verify").expect("t").ssl, SslMode::Require);
        assert_eq!(params("mysql://u@h/db?tls=true").expect("t").ssl, SslMode::VerifyFull);
        assert_eq!(
            params("mysql://u@h/db?sslmode=VERIFY_IDENTITY").expect("mysql word").ssl,
            SslMode::VerifyFull
        );
        let e = params("mysql://u@h/db?sslmode=maybe").expect_err("bad mode");
        assert!(e.to_string().contains("verify-full"), "{e}");
        let e = params("mysql://u@h/db?sslrootcert=/nonexistent/ca.pem").expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = params("mysql://u@h/db?sslcert=/etc/hostname").expect_err("half identity");
        assert!(e.to_string().contains("go together"), "{e}");
        let e = params("mysql://u@h/db?frobnicate=1").expect_err("unknown");
        assert!(e.to_string().contains("frobnicate"), "{e}");
        assert!(params("mysql://u@h/db?parseTime=true&timeout=5s").is_ok());
        let p = params("mysql://u@h/db?sslmode=disable").expect("off");
        assert!(p.opts(true).ssl_opts().is_none());
        let p = params("mysql://u@h/db?sslmode=require").expect("on");
        assert!(p.opts(true).ssl_opts().is_some());
        assert!(p.opts(false).ssl_opts().is_none());
    }
}
