//! The reading loop: one binlog session after another until told to stop, and the assembly of
//! binlog events into source transactions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Sid};
use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::{Event, EventData, GtidEvent, QueryEvent, TableMapEvent};
use tokio::sync::{mpsc, watch};

use super::Flavor;
use super::gtid::{self, Gtid};
use super::rows::{self, Problem, RowError};
use super::schema::{Catalog, SchemaError, TableInfo};
use crate::conn::mysql::MyParams;
use crate::error::RetryConfig;
use crate::source::{MemoRef, Session as SourceSession, reconnect};
use crate::types::mutation::{Mutation, Position, SourceTransaction};
use crate::types::position::GtidSet;

/// What the reading loop needs.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The source connection.
    pub params: MyParams,
    /// MySQL or MariaDB.
    pub flavor: Flavor,
    /// `--replicationProcessID`.
    pub server_id: u32,
    /// Where to start: transactions in this set were applied already.
    pub start: GtidSet,
    /// Only this database's tables are replicated.
    pub database: String,
    /// `--fetchMetadata`.
    pub fetch_metadata: bool,
    /// Backoff between reconnects.
    pub retry: RetryConfig,
    /// How often the server sends a heartbeat while idle.
    pub heartbeat: Duration,
}

/// A transaction read from the binlog, with the values in it the target cannot hold.
#[derive(Debug)]
pub struct Decoded {
    /// The transaction (only the replicated database's rows; maybe none).
    pub transaction: SourceTransaction,
    /// Values the target cannot hold as they are.
    pub problems: Vec<Problem>,
}

/// Why events could not be assembled into a transaction.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// A table map could not be described.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A row could not be read.
    #[error(transparent)]
    Row(#[from] RowError),
    /// An event that cannot be handled.
    #[error("{0}")]
    Event(String),
}

/// Why streaming stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The binlog connection failed in a way reconnecting does not fix.
    #[error("reading the binlog of {server} failed")]
    Binlog {
        /// `host:port`.
        server: String,
        /// The failure.
        #[source]
        source: mysql_async::Error,
    },
    /// The server cannot send from the position asked for.
    #[error(
        "the source cannot send its binlog from GTID position {position:?}: {message}. If the \
         binlogs holding that position were purged, the changes since are lost to replication: \
         copy the data again, then restart with --defaultGTIDSet set to the position of that \
         copy after deleting the stored one (DELETE FROM {memo} WHERE key = '{key}')"
    )]
    Unavailable {
        /// The position asked for.
        position: String,
        /// The server's message.
        message: String,
        /// The staging memo table.
        memo: String,
        /// The memo key.
        key: String,
    },
    /// Events did not assemble.
    #[error("decoding the binlog after position {after:?} failed")]
    Decode {
        /// The last position handed on.
        after: String,
        /// What was wrong.
        #[source]
        source: AssembleError,
    },
}

/// Binlog events into transactions.
pub struct Assembler {
    flavor: Flavor,
    database: String,
    /// The position of the last transaction handed on.
    position: GtidSet,
    open: Option<Open>,
    catalog: Catalog,
    /// Table id → its description, or `None` for tables of other databases.
    tables: HashMap<u64, Option<Arc<TableInfo>>>,
}

struct Open {
    gtid: Gtid,
    began: bool,
    mutations: Vec<Mutation>,
    problems: Vec<Problem>,
    nanos: i64,
}

impl Assembler {
    /// An assembler starting after `position`, keeping rows of `database` only.
    pub fn new(flavor: Flavor, database: &str, position: GtidSet, catalog: Catalog) -> Self {
        Self {
            flavor,
            database: database.to_owned(),
            position,
            open: None,
            catalog,
            tables: HashMap::new(),
        }
    }

    /// The position of the last transaction handed on.
    pub fn position(&self) -> &GtidSet {
        &self.position
    }

    /// Forgets a transaction cut off by a lost connection, and the session's table ids.
    pub fn reset_session(&mut self) {
        self.open = None;
        self.tables.clear();
    }

    /// Takes one event; returns a transaction when this event ends one.
    pub async fn handle(
        &mut self,
        event: &Event,
        meta: Option<&mut mysql_async::Conn>,
    ) -> Result<Option<Decoded>, AssembleError> {
        let header = event.header();
        let kind = header.event_type_raw();
        let io = |e: std::io::Error| AssembleError::Event(format!("event type {kind:#x}: {e}"));
        let nanos = i64::from(header.timestamp()) * 1_000_000_000;
        match kind {
            gtid::MARIADB_GTID => {
                let gtid = gtid::mariadb(event.data(), header.server_id()).ok_or_else(|| {
                    AssembleError::Event("a MariaDB GTID event is too short".into())
                })?;
                self.begin(gtid, nanos);
            }
            k if k == EventType::GTID_EVENT as u8
                || k == EventType::GTID_TAGGED_LOG_EVENT as u8 =>
            {
                let event: GtidEvent = event.read_event().map_err(io)?;
                self.begin(gtid::mysql(&event), nanos);
            }
            k if k == EventType::ANONYMOUS_GTID_EVENT as u8 => {
                return Err(AssembleError::Event(
                    "the source wrote a transaction without a GTID (gtid_mode is not ON)".into(),
                ));
            }
            k if k == EventType::QUERY_EVENT as u8 => {
                let query: QueryEvent<'_> = event.read_event().map_err(io)?;
                let text = query.query();
                let statement = text.trim();
                if statement.eq_ignore_ascii_case("BEGIN") {
                    if let Some(open) = &mut self.open {
                        open.began = true;
                    }
                } else if statement.eq_ignore_ascii_case("COMMIT")
                    || statement.eq_ignore_ascii_case("ROLLBACK")
                {
                    return self.finish();
                } else {
                    let schema = query.schema();
                    if schema.is_empty() || schema == self.database.as_str() {
                        tracing::info!(schema = %schema, statement = %shorten(statement), "DDL or other statement in the binlog; table descriptions refreshed");
                    } else {
                        tracing::debug!(schema = %schema, statement = %shorten(statement), "statement on another database");
                    }
                    self.catalog.invalidate();
                    if self.open.as_ref().is_some_and(|o| !o.began) {
                        return self.finish();
                    }
                }
            }
            k if k == EventType::XID_EVENT as u8 => return self.finish(),
            k if k == EventType::TABLE_MAP_EVENT as u8 => {
                let tme: TableMapEvent<'_> = event.read_event().map_err(io)?;
                let info = if tme.database_name() == self.database.as_str() {
                    Some(self.catalog.table(&tme, event.data(), meta).await?)
                } else {
                    None
                };
                self.tables.insert(tme.table_id(), info);
            }
            k if is_rows(k) => {
                let Some(EventData::RowsEvent(data)) = event.read_data().map_err(io)? else {
                    return Err(AssembleError::Event(format!(
                        "rows event {kind:#x} did not parse"
                    )));
                };
                let info = match self.tables.get(&data.table_id()) {
                    Some(Some(info)) => info.clone(),
                    Some(None) => return Ok(None),
                    None => {
                        return Err(AssembleError::Event(format!(
                            "a rows event names table id {} without a table map before it",
                            data.table_id()
                        )));
                    }
                };
                let Some(open) = &mut self.open else {
                    return Err(AssembleError::Event(format!(
                        "rows of {}.{} outside a GTID transaction",
                        info.schema, info.name
                    )));
                };
                rows::decode(&data, &info, &mut open.mutations, &mut open.problems)?;
            }
            k if gtid::MARIADB_COMPRESSED.contains(&k) => {
                return Err(AssembleError::Event(
                    "the source writes compressed binlog events: SET GLOBAL log_bin_compress = OFF"
                        .into(),
                ));
            }
            gtid::MARIADB_START_ENCRYPTION => {
                return Err(AssembleError::Event(
                    "the source encrypts its binlog (encrypt_binlog=ON), which replicator cannot read"
                        .into(),
                ));
            }
            gtid::MARIADB_GTID_LIST => {
                tracing::debug!(list = ?gtid::mariadb_list(event.data()), "MariaDB GTID list");
            }
            _ => {}
        }
        Ok(None)
    }

    fn begin(&mut self, gtid: Gtid, nanos: i64) {
        if let Some(open) = &self.open {
            tracing::warn!(gtid = %open.gtid, "a transaction ended without COMMIT or XID; its changes are dropped");
        }
        self.open =
            Some(Open { gtid, began: false, mutations: Vec::new(), problems: Vec::new(), nanos });
    }

    fn finish(&mut self) -> Result<Option<Decoded>, AssembleError> {
        let Some(open) = self.open.take() else { return Ok(None) };
        let added = match &open.gtid {
            Gtid::MySql { uuid, gno } => self.position.add_mysql(uuid, *gno),
            Gtid::MariaDb { domain, server, seq, .. } => {
                self.position.add_mariadb(*domain, *server, *seq)
            }
        };
        added.map_err(|e| {
            AssembleError::Event(format!("{} after {}: {e}", open.gtid, self.flavor))
        })?;
        Ok(Some(Decoded {
            transaction: SourceTransaction {
                mutations: open.mutations,
                position: Position::Gtid(self.position.clone()),
                commit_nanos: open.nanos,
            },
            problems: open.problems,
        }))
    }
}

fn is_rows(kind: u8) -> bool {
    [
        EventType::WRITE_ROWS_EVENT_V1,
        EventType::UPDATE_ROWS_EVENT_V1,
        EventType::DELETE_ROWS_EVENT_V1,
        EventType::WRITE_ROWS_EVENT,
        EventType::UPDATE_ROWS_EVENT,
        EventType::DELETE_ROWS_EVENT,
        EventType::PARTIAL_UPDATE_ROWS_EVENT,
    ]
    .iter()
    .any(|t| *t as u8 == kind)
}

/// A statement as logged: at most 200 characters, and account statements (which may carry a
/// password: `CREATE USER … IDENTIFIED BY '…'`, `SET PASSWORD`) cut to their first words.
fn shorten(statement: &str) -> String {
    let upper = statement.to_ascii_uppercase();
    if ["IDENTIFIED", "PASSWORD", "CREATE SERVER", "ALTER SERVER", "CHANGE MASTER"]
        .iter()
        .any(|w| upper.contains(w))
    {
        let head: Vec<&str> = statement.split_whitespace().take(2).collect();
        return format!("{} … (the rest is not logged: it may hold a password)", head.join(" "));
    }
    let mut s: String = statement.chars().take(200).collect();
    if s.len() < statement.len() {
        s.push('…');
    }
    s
}

/// The binlog's heartbeat event (HEARTBEAT_LOG_EVENT), sent while the source is idle.
const HEARTBEAT_EVENT: u8 = 27;

/// MySQL/MariaDB error 4052 (ER_SLAVE_SAME_ID): another connection uses our server id.
const SAME_SERVER_ID: u16 = 4052;
/// The first wait after [`SAME_SERVER_ID`]; it doubles while the error persists.
const SAME_ID_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait after [`SAME_SERVER_ID`].
const SAME_ID_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether reconnecting may help.
pub fn is_transient(error: &mysql_async::Error) -> bool {
    // The server out of reach, or for a binlog dump also: 1317, the query interrupted; 4052,
    // the server still serves our server id to a connection that died (after a kill -9): it
    // lets go shortly.
    crate::error::mysql_kind(error) == crate::error::ErrorKind::Unavailable
        || matches!(error, mysql_async::Error::Server(e) if matches!(e.code, 1317 | 4052))
}

/// Streams until `stop` turns true (`Ok`), `out` closes (`Ok`: the pipeline reports its own
/// error), or a permanent failure. `memo` names the staging memo table and key, for messages.
pub async fn run(
    config: StreamConfig,
    out: mpsc::Sender<Decoded>,
    stop: watch::Receiver<bool>,
    memo: MemoRef,
) -> Result<(), StreamError> {
    let dials = &crate::metrics::global().mylogical_dial_failure_total;
    let (config, out, memo) = (&config, &out, &memo);
    // The decoder's state, and how many sessions in a row another replica with our server id
    // ended (MySQL error 4052).
    let state: (Option<Assembler>, u32) = (None, 0);
    reconnect(
        "binlog connection",
        &config.retry,
        stop,
        dials,
        state,
        |(mut assembler, same_id), mut stop| async move {
            let mut connected = false;
            let result = session(config, &mut assembler, out, &mut stop, &mut connected).await;
            let position = assembler
                .as_ref()
                .map_or_else(|| config.start.to_string(), |a| a.position().to_string());
            let failed = |error, transient, wait| SourceSession::Failed {
                error,
                transient,
                connected,
                wait,
            };
            let error = match result {
                Ok(()) => return ((assembler, 0), SourceSession::Done),
                Err(SessionError::Assemble(source)) => {
                    return (
                        (assembler, 0),
                        failed(StreamError::Decode { after: position, source }, false, None),
                    );
                }
                Err(SessionError::Binlog(e)) => e,
            };
            if let mysql_async::Error::Server(server) = &error
                && server.code == 1236
            {
                let error = StreamError::Unavailable {
                    position,
                    message: server.message.clone(),
                    memo: memo.table.clone(),
                    key: memo.key.clone(),
                };
                return ((assembler, 0), failed(error, false, None));
            }
            let transient = is_transient(&error);
            if transient && let Some(a) = &mut assembler {
                a.reset_session();
            }
            let kicked =
                matches!(&error, mysql_async::Error::Server(e) if e.code == SAME_SERVER_ID);
            let same_id = if kicked { same_id + 1 } else { 0 };
            let wait = kicked.then(|| same_server_id(config.server_id, same_id));
            let error = StreamError::Binlog { server: config.params.address(), source: error };
            ((assembler, same_id), failed(error, transient, wait))
        },
    )
    .await
}

/// How long to wait after the `times`-th session in a row that another connection with our
/// server id ended (MySQL error 4052). Two replicas with one server id take turns kicking
/// each other off. A server that still holds the id of a process killed a moment ago lets go
/// on the first retry or two; past that, another replica is connected: back off, and say what
/// to change.
fn same_server_id(server_id: u32, times: u32) -> Duration {
    let delay = SAME_ID_BACKOFF
        .saturating_mul(1 << times.saturating_sub(1).min(5))
        .min(SAME_ID_MAX_BACKOFF);
    if times >= 2 {
        tracing::warn!(
            server_id,
            retry_in = ?delay,
            "another replica is connected to the source with this server id (MySQL error \
             4052), and each connection ends the other's: give every replicator and replica \
             of this source its own --replicationProcessID"
        );
    } else {
        tracing::info!(server_id, retry_in = ?delay, "the source still serves this server id to another connection; retrying");
    }
    delay
}

enum SessionError {
    Binlog(mysql_async::Error),
    Assemble(AssembleError),
}

impl From<mysql_async::Error> for SessionError {
    fn from(e: mysql_async::Error) -> Self {
        SessionError::Binlog(e)
    }
}

async fn session(
    config: &StreamConfig,
    assembler: &mut Option<Assembler>,
    out: &mpsc::Sender<Decoded>,
    stop: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), SessionError> {
    let mut conn = config.params.connect().await?;
    let mut meta = if config.fetch_metadata { Some(config.params.connect().await?) } else { None };
    *connected = true;
    crate::outage::recovered("source");
    crate::metrics::global().mylogical_dial_success_total.inc();
    let assembler = match assembler {
        Some(a) => a,
        None => {
            let collations = Catalog::collations(&mut conn).await?;
            let catalog = Catalog::new(collations, config.fetch_metadata);
            assembler.insert(Assembler::new(
                config.flavor,
                &config.database,
                config.start.clone(),
                catalog,
            ))
        }
    };
    let from = assembler.position().clone();
    conn.query_drop(format!("SET @master_heartbeat_period = {}", config.heartbeat.as_nanos()))
        .await?;
    let request = BinlogStreamRequest::new(config.server_id);
    let request = match config.flavor {
        Flavor::MariaDb => {
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
            conn.exec_drop("SET @slave_connect_state = ?", (from.to_string(),)).await?;
            conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
            request
        }
        Flavor::MySql => request.with_gtid().with_gtid_set(mysql_sids(&from)?),
    };
    tracing::info!(position = %from, server = %config.params.address(), flavor = %config.flavor, "streaming the binlog");
    let mut stream = conn.get_binlog_stream(request).await?;
    let idle = config.heartbeat * 3;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, stream.next()) => next,
            _ = stop.changed() => return Ok(()),
        };
        let event = match next {
            Err(_) => {
                return Err(SessionError::Binlog(mysql_async::Error::Io(
                    mysql_async::IoError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no event or heartbeat from the source for {idle:?}"),
                    )),
                )));
            }
            Ok(None) => {
                return Err(SessionError::Binlog(mysql_async::Error::Driver(
                    mysql_async::DriverError::ConnectionClosed,
                )));
            }
            Ok(Some(event)) => event?,
        };
        if event.header().event_type_raw() != HEARTBEAT_EVENT {
            crate::status::global().source_read();
        }
        let decoded =
            assembler.handle(&event, meta.as_mut()).await.map_err(SessionError::Assemble)?;
        if let Some(decoded) = decoded {
            tokio::select! {
                sent = out.send(decoded) => if sent.is_err() { return Ok(()) },
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

/// A MySQL GTID set as the binlog request wants it.
pub fn mysql_sids(set: &GtidSet) -> Result<Vec<Sid<'static>>, mysql_async::Error> {
    let GtidSet::MySql(map) = set else {
        return Err(mysql_async::Error::Other(
            "a MariaDB GTID position cannot start a MySQL binlog stream".into(),
        ));
    };
    map.iter()
        .map(|(uuid, intervals)| {
            let text: Vec<String> = std::iter::once(uuid.clone())
                .chain(intervals.iter().map(|(a, b)| format!("{a}-{b}")))
                .collect();
            text.join(":")
                .parse::<Sid<'static>>()
                .map_err(|e| mysql_async::Error::Other(Box::new(e)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! MySQL's GTID path on events built from MySQL's documented binlog format (no MySQL
    //! server runs here): v4 common header, GTID_EVENT (flags, SID, GNO, logical timestamps),
    //! QUERY_EVENT (BEGIN / DDL) and XID_EVENT.
    use super::*;
    use mysql_common::binlog::EventStreamReader;
    use mysql_common::binlog::consts::BinlogVersion;

    const UUID: &str = "4c658ae6-e8ad-11ec-9a4e-0242ac110002";

    fn event(reader: &mut EventStreamReader, kind: EventType, body: &[u8]) -> Event {
        let mut bytes = Vec::new();
        bytes.extend(1_700_000_000u32.to_le_bytes()); // timestamp
        bytes.push(kind as u8);
        bytes.extend(1u32.to_le_bytes()); // server id
        bytes.extend(u32::try_from(19 + body.len()).expect("size").to_le_bytes());
        bytes.extend(0u32.to_le_bytes()); // log position
        bytes.extend(0u16.to_le_bytes()); // flags
        bytes.extend(body);
        reader.read(bytes.as_slice()).expect("reads").expect("an event")
    }

    fn gtid_event(reader: &mut EventStreamReader, uuid: &str, gno: u64) -> Event {
        let mut body = vec![1u8]; // flags: may commit in parallel
        let hex: String = uuid.chars().filter(|c| *c != '-').collect();
        for i in 0..16 {
            body.push(u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).expect("hex"));
        }
        body.extend(gno.to_le_bytes());
        body.push(2); // logical timestamp type code
        body.extend(0u64.to_le_bytes()); // last committed
        body.extend(1u64.to_le_bytes()); // sequence number
        event(reader, EventType::GTID_EVENT, &body)
    }

    fn query_event(reader: &mut EventStreamReader, schema: &str, query: &str) -> Event {
        let mut body = Vec::new();
        body.extend(7u32.to_le_bytes()); // thread id
        body.extend(0u32.to_le_bytes()); // execution time
        body.push(u8::try_from(schema.len()).expect("short"));
        body.extend(0u16.to_le_bytes()); // error code
        body.extend(0u16.to_le_bytes()); // status variables length
        body.extend(schema.as_bytes());
        body.push(0);
        body.extend(query.as_bytes());
        event(reader, EventType::QUERY_EVENT, &body)
    }

    fn xid_event(reader: &mut EventStreamReader) -> Event {
        event(reader, EventType::XID_EVENT, &42u64.to_le_bytes())
    }

    #[tokio::test]
    async fn mysql_gtids_accumulate_into_the_executed_set() {
        let mut reader = EventStreamReader::new(BinlogVersion::Version4);
        let start: GtidSet = format!("{UUID}:1-6").parse().expect("set");
        let catalog = Catalog::new(HashMap::new(), false);
        let mut a = Assembler::new(Flavor::MySql, "inventory", start, catalog);

        // GTID, BEGIN, XID: one transaction at uuid:1-7.
        let events =
            [gtid_event(&mut reader, UUID, 7), query_event(&mut reader, "inventory", "BEGIN")];
        for e in &events {
            assert!(a.handle(e, None).await.expect("handles").is_none());
        }
        let done = a.handle(&xid_event(&mut reader), None).await.expect("xid").expect("commit");
        assert_eq!(done.transaction.position.to_string(), format!("{UUID}:1-7"));
        assert_eq!(done.transaction.commit_nanos, 1_700_000_000_000_000_000);
        assert!(done.transaction.mutations.is_empty());

        // DDL: GTID then the statement without BEGIN is a transaction of its own.
        let other = "11111111-2222-3333-4444-555555555555";
        assert!(a.handle(&gtid_event(&mut reader, other, 1), None).await.expect("gtid").is_none());
        let ddl = query_event(&mut reader, "inventory", "ALTER TABLE t ADD COLUMN c INT");
        let done = a.handle(&ddl, None).await.expect("ddl").expect("ends the transaction");
        assert_eq!(done.transaction.position.to_string(), format!("{other}:1,{UUID}:1-7"));

        // A gap stays a gap; the request carries every interval.
        a.handle(&gtid_event(&mut reader, UUID, 9), None).await.expect("gtid");
        a.handle(&query_event(&mut reader, "inventory", "BEGIN"), None).await.expect("begin");
        let done = a
            .handle(&query_event(&mut reader, "inventory", "COMMIT"), None)
            .await
            .expect("commit")
            .expect("ends");
        assert_eq!(done.transaction.position.to_string(), format!("{other}:1,{UUID}:1-7:9"));
        let sids = mysql_sids(a.position()).expect("sids");
        let text: Vec<String> = sids.iter().map(ToString::to_string).collect();
        assert_eq!(text, vec![format!("{other}:1"), format!("{UUID}:1-7:9")]);

        // A MariaDB position cannot start a MySQL stream; anonymous GTIDs are refused.
        let mariadb: GtidSet = "0-1-5".parse().expect("mariadb");
        assert!(mysql_sids(&mariadb).is_err());
        let anonymous = event(&mut reader, EventType::ANONYMOUS_GTID_EVENT, &[0u8; 42]);
        let err = a.handle(&anonymous, None).await.expect_err("anonymous");
        assert!(err.to_string().contains("gtid_mode"), "{err}");
    }

    #[test]
    fn account_statements_are_not_logged_whole() {
        let shown = shorten("CREATE USER 'u'@'%' IDENTIFIED BY 'hunter2'");
        assert!(!shown.contains("hunter2") && shown.starts_with("CREATE USER"), "{shown}");
        assert!(!shorten("SET PASSWORD FOR u = PASSWORD('hunter2')").contains("hunter2"));
        assert_eq!(shorten("ALTER TABLE t ADD c INT"), "ALTER TABLE t ADD c INT");
    }

    #[tokio::test]
    async fn mariadb_gtid_events_move_their_domain() {
        let mut reader = EventStreamReader::new(BinlogVersion::Version4);
        let catalog = Catalog::new(HashMap::new(), false);
        let start: GtidSet = "0-1-10".parse().expect("set");
        let mut a = Assembler::new(Flavor::MariaDb, "inventory", start, catalog);
        let mut body = 11u64.to_le_bytes().to_vec();
        body.extend(3u32.to_le_bytes());
        body.push(0);
        let mut bytes = Vec::new();
        bytes.extend(1_700_000_000u32.to_le_bytes());
        bytes.push(gtid::MARIADB_GTID);
        bytes.extend(2u32.to_le_bytes());
        bytes.extend(u32::try_from(19 + body.len()).expect("size").to_le_bytes());
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(0u16.to_le_bytes());
        bytes.extend(&body);
        let gtid = reader.read(bytes.as_slice()).expect("reads").expect("event");
        a.handle(&gtid, None).await.expect("gtid");
        let done = a.handle(&xid_event(&mut reader), None).await.expect("xid").expect("ends");
        assert_eq!(done.transaction.position.to_string(), "0-1-10,3-2-11");
    }
}
