//! A replication connection (`replication=database`): startup and authentication
//! (trust, password, MD5, SCRAM-SHA-256) and the CopyBoth stream that
//! `START_REPLICATION … LOGICAL` opens: XLogData and keepalives in, standby status out.
//!
//! tokio-postgres cannot open such a connection, so this speaks the protocol itself with
//! postgres-protocol's message codecs, over [`crate::conn::postgres::open_stream`] (TLS per
//! `sslmode`). Every wait is cancel-safe: [`ReplicationConn::recv`] may be dropped in a
//! `select!` without losing bytes.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conn::postgres::{PgConnError, PgParams, PgStream, open_stream, runtime_options};
use crate::types::position::PgLsn;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// Opening the connection failed (network, TLS).
    #[error(transparent)]
    Connect(#[from] PgConnError),
    /// The connection broke.
    #[error("the replication connection broke")]
    Io(#[from] io::Error),
    /// The server reported an error.
    #[error("{message} (SQLSTATE {code})")]
    Server {
        /// SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server sent something the protocol does not allow here.
    #[error("unexpected replication message: {0}")]
    Protocol(String),
    /// The server asks for an authentication method replicator does not speak.
    #[error("{0}")]
    Auth(String),
}

impl ReplicationError {
    /// Reconnecting may help: the network, a server restart, or a slot still held by a
    /// connection that is going away (SQLSTATE 55006 after a crash).
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Io(_) | ReplicationError::Connect(PgConnError::Connect { .. }) => {
                true
            }
            ReplicationError::Server { code, .. } => {
                code == "55006" || code.starts_with("08") || code.starts_with("57P")
            }
            _ => false,
        }
    }
}

/// What the server streams after `START_REPLICATION`.
#[derive(Debug, Clone, PartialEq)]
pub enum Replicated {
    /// A pgoutput message.
    XLogData {
        /// Where the data starts.
        start: PgLsn,
        /// The server's end of WAL when sent.
        end: PgLsn,
        /// The message.
        data: Bytes,
    },
    /// A keepalive.
    Keepalive {
        /// The server's position: everything before it has been sent.
        end: PgLsn,
        /// The server wants a status update now.
        reply: bool,
    },
}

/// An open replication connection.
pub struct ReplicationConn {
    stream: PgStream,
    read: BytesMut,
    write: BytesMut,
    copying: bool,
}

impl ReplicationConn {
    /// Connects and authenticates with `replication=database`.
    pub async fn connect(params: &PgParams) -> Result<Self, ReplicationError> {
        let stream = open_stream(params).await?;
        let mut conn = Self {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::new(),
            copying: false,
        };
        let options = runtime_options(&params.runtime);
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("replication", "database"),
            ("application_name", params.application_name.as_deref().unwrap_or("replicator")),
        ];
        if !options.is_empty() {
            startup.push(("options", options.as_str()));
        }
        frontend::startup_message(startup, &mut conn.write)?;
        conn.flush().await?;
        conn.authenticate(params).await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, params: &PgParams) -> Result<(), ReplicationError> {
        let password = || {
            params.expose_password().map(str::as_bytes).ok_or_else(|| {
                ReplicationError::Auth(format!(
                    "the server asks user {:?} for a password, but the URL has none: add it \
                     (postgres://user:password@host/db)",
                    params.user
                ))
            })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.message().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?, &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        params.user.as_bytes(),
                        password()?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut found = false;
                    while let Some(m) = mechanisms.next()? {
                        found |= m == SCRAM_SHA_256;
                    }
                    if !found {
                        return Err(ReplicationError::Auth(
                            "the server offers no SASL mechanism replicator speaks \
                             (SCRAM-SHA-256)"
                                .to_owned(),
                        ));
                    }
                    let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.write)?;
                    self.flush().await?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("SASL continue before SASL start".to_owned())
                    })?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::Protocol("SASL final before SASL start".to_owned())
                    })?;
                    s.finish(body.data())?;
                }
                backend::Message::ParameterStatus(_)
                | backend::Message::BackendKeyData(_)
                | backend::Message::NoticeResponse(_) => {}
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::AuthenticationGss
                | backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationSspi
                | backend::Message::AuthenticationScmCredential => {
                    return Err(ReplicationError::Auth(
                        "the server asks for GSS/Kerberos/SSPI authentication, which replicator \
                         does not speak: allow password or scram-sha-256 in pg_hba.conf"
                            .to_owned(),
                    ));
                }
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "{} during authentication",
                        name(&other)
                    )));
                }
            }
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Starts streaming pgoutput changes from `slot` at `start` for `publication`.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: PgLsn,
        publication: &str,
    ) -> Result<(), ReplicationError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {})",
            crate::target::postgres::quote_ident(slot),
            quote_literal(&crate::target::postgres::quote_ident(publication)),
        );
        frontend::query(&sql, &mut self.write)?;
        self.flush().await?;
        loop {
            self.fill_until_header().await?;
            // CopyBothResponse ('W') is not known to postgres-protocol's parser: skip it here.
            if self.read[0] == b'W' {
                let len =
                    u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                while self.read.len() < len + 1 {
                    self.fill().await?;
                }
                self.read.advance(len + 1);
                self.copying = true;
                return Ok(());
            }
            match self.message().await? {
                backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "{} instead of the start of streaming",
                        name(&other)
                    )));
                }
            }
        }
    }

    /// The next XLogData or keepalive. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Replicated, ReplicationError> {
        loop {
            let message = self.message().await?;
            match message {
                backend::Message::CopyData(body) => {
                    let mut data = body.into_bytes();
                    if data.is_empty() {
                        return Err(ReplicationError::Protocol("empty CopyData".to_owned()));
                    }
                    match data.get_u8() {
                        b'w' if data.len() >= 24 => {
                            let start = PgLsn(data.get_u64());
                            let end = PgLsn(data.get_u64());
                            let _sent = data.get_i64();
                            return Ok(Replicated::XLogData { start, end, data });
                        }
                        b'k' if data.len() >= 17 => {
                            let end = PgLsn(data.get_u64());
                            let _sent = data.get_i64();
                            let reply = data.get_u8() == 1;
                            return Ok(Replicated::Keepalive { end, reply });
                        }
                        tag => {
                            return Err(ReplicationError::Protocol(format!(
                                "CopyData of kind {:?} and {} bytes",
                                tag as char,
                                data.len() + 1
                            )));
                        }
                    }
                }
                backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) => {}
                // The server ends the stream (a shutdown, a walsender terminated): CopyDone,
                // or, when it was already sent, what follows it. Reconnecting resumes.
                backend::Message::CopyDone
                | backend::Message::CommandComplete(_)
                | backend::Message::ReadyForQuery(_) => {
                    return Err(ReplicationError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the server ended the replication stream ({})", name(&message)),
                    )));
                }
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "{} while streaming",
                        name(&other)
                    )));
                }
            }
        }
    }

    /// Sends a standby status update: `received` WAL written, `flushed` durably applied.
    pub async fn send_status(
        &mut self,
        received: PgLsn,
        flushed: PgLsn,
        reply: bool,
    ) -> Result<(), ReplicationError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let micros = i64::try_from(now.as_micros()).unwrap_or(i64::MAX) - PG_EPOCH_MICROS;
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(received.0);
        body.put_u64(flushed.0);
        body.put_u64(flushed.0);
        body.put_i64(micros);
        body.put_u8(u8::from(reply));
        frontend::CopyData::new(body.freeze())?.write(&mut self.write);
        self.flush().await
    }

    /// Ends streaming and closes the connection politely.
    pub async fn close(mut self) {
        if self.copying {
            frontend::copy_done(&mut self.write);
        }
        frontend::terminate(&mut self.write);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.stream.write_all(&self.write).await?;
        self.stream.flush().await?;
        self.write.clear();
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), ReplicationError> {
        if self.stream.read_buf(&mut self.read).await? == 0 {
            return Err(ReplicationError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }

    async fn fill_until_header(&mut self) -> Result<(), ReplicationError> {
        while self.read.len() < 5 {
            self.fill().await?;
        }
        Ok(())
    }

    /// The next backend message; an ErrorResponse becomes [`ReplicationError::Server`].
    async fn message(&mut self) -> Result<backend::Message, ReplicationError> {
        loop {
            if let Some(message) = backend::Message::parse(&mut self.read)? {
                if let backend::Message::ErrorResponse(body) = &message {
                    let (mut code, mut text) = (String::new(), String::new());
                    let mut fields = body.fields();
                    while let Some(field) = fields.next()? {
                        match field.type_() {
                            b'C' => {
                                code = String::from_utf8_lossy(field.value_bytes()).into_owned()
                            }
                            b'M' => {
                                text = String::from_utf8_lossy(field.value_bytes()).into_owned()
                            }
                            _ => {}
                        }
                    }
                    return Err(ReplicationError::Server { code, message: text });
                }
                return Ok(message);
            }
            self.fill().await?;
        }
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn name(message: &backend::Message) -> &'static str {
    match message {
        backend::Message::CopyData(_) => "CopyData",
        backend::Message::DataRow(_) => "DataRow",
        backend::Message::ReadyForQuery(_) => "ReadyForQuery",
        backend::Message::CommandComplete(_) => "CommandComplete",
        backend::Message::RowDescription(_) => "RowDescription",
        backend::Message::CopyOutResponse(_) => "CopyOutResponse",
        backend::Message::CopyInResponse(_) => "CopyInResponse",
        _ => "a message",
    }
}
