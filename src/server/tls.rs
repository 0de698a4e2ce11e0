//! TLS for the changefeed listener: a certificate and key from PEM files (re-read on SIGHUP),
//! or a self-signed certificate made at start for `localhost`, `127.0.0.1` and `::1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `--tlsCertificate` and `--tlsPrivateKey`.
    Files {
        /// The certificate chain (PEM).
        certificate: PathBuf,
        /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
        private_key: PathBuf,
    },
    /// `--tlsSelfSigned`: an ECDSA P-256 certificate made in memory.
    SelfSigned,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read or parsed.
    #[error("{flag} {path}: {problem}")]
    File {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The certificate and key do not go together, or rustls refused them.
    #[error("the TLS certificate and key cannot be used: {0}")]
    Config(String),
}

/// The acceptor in use, replaced when the files are re-read.
#[derive(Clone)]
pub struct Tls {
    source: TlsSource,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl Tls {
    /// Loads `source` (fails on a file that does not parse).
    pub fn load(source: TlsSource) -> Result<Self, TlsError> {
        let acceptor = acceptor(&source)?;
        Ok(Self { source, current: Arc::new(RwLock::new(acceptor)) })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().map(|a| a.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-reads the files (SIGHUP); on failure the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        if self.source == TlsSource::SelfSigned {
            return Ok(());
        }
        let fresh = acceptor(&self.source)?;
        match self.current.write() {
            Ok(mut current) => *current = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}

fn acceptor(source: &TlsSource) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = match source {
        TlsSource::Files { certificate, private_key } => {
            (read_certs(certificate)?, read_key(private_key)?)
        }
        TlsSource::SelfSigned => self_signed()?,
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn file_error(flag: &'static str, path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File { flag, path: path.display().to_string(), problem: problem.to_string() }
}

const CERTIFICATE: &str = "--tlsCertificate";

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(CERTIFICATE, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(CERTIFICATE, path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            CERTIFICATE,
            path,
            "no CERTIFICATE block (expected a PEM certificate chain)",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        file_error(
            "--tlsPrivateKey",
            path,
            format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
        )
    })
}

fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Config(format!("making a self-signed certificate: {e}")))?;
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok((vec![made.cert.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_pem_are_named() {
        let dir = std::env::temp_dir().join(format!("replicator-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate").expect("write");
        let source = TlsSource::Files { certificate: bad.clone(), private_key: bad.clone() };
        let err = Tls::load(source).err().expect("refused").to_string();
        assert!(err.contains("bad.pem") && err.contains("no CERTIFICATE"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Tls::load(TlsSource::SelfSigned).is_ok());
    }
}
