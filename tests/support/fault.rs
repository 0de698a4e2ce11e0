//! A TCP proxy that fails on cue, placed between replicator and a database: it can refuse
//! new connections (its port closed), cut every open connection, delay every chunk of
//! traffic, or black-hole it (accept and swallow, as a network partition does). It runs on
//! a thread of its own, so a test can steer it from synchronous code and its traffic flows
//! whatever the test's runtime is doing.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Forwards it.
    Pass,
    /// Forwards each chunk after this delay (each direction: a round trip takes twice).
    Delay(Duration),
    /// Swallows it: connections stay open and nothing arrives.
    Blackhole,
}

struct Shared {
    traffic: Mutex<Traffic>,
    /// Open connections end when this changes.
    cut: watch::Sender<u64>,
    /// The port is closed while this is true.
    refuse: watch::Sender<bool>,
    /// Stops the proxy.
    stop: watch::Sender<bool>,
    /// Whether the port is open right now (the proxy's answer to `refuse`).
    listening: watch::Sender<bool>,
}

/// The proxy (see the module documentation). Dropping it closes its port and every
/// connection.
pub struct FaultProxy {
    /// host:port to connect to instead of the database.
    pub addr: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (host:port).
    pub fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared {
            traffic: Mutex::new(Traffic::Pass),
            cut: watch::channel(0).0,
            refuse: watch::channel(false).0,
            stop: watch::channel(false).0,
            listening: watch::channel(true).0,
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr").to_string();
        let (upstream, inner, bound) = (upstream.to_owned(), shared.clone(), addr.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(serve(std_listener, bound, upstream, inner));
        });
        Self { addr, shared, thread: Some(thread) }
    }

    /// A proxy to the database `url` names (host:port after the `@`), and the same URL
    /// through the proxy.
    pub fn to_database(url: &str) -> (Self, String) {
        let host = url
            .split('@')
            .nth(1)
            .and_then(|r| r.split('/').next())
            .expect("host:port in the URL")
            .to_owned();
        let proxy = Self::start(&host);
        let through = url.replacen(&host, &proxy.addr, 1);
        (proxy, through)
    }

    /// Closes the port: new connections are refused (open ones go on). Returns once the
    /// port is closed, so a connection attempt right after is refused.
    pub fn refuse(&self) {
        self.shared.refuse.send_replace(true);
        self.await_listening(false);
    }

    fn await_listening(&self, open: bool) {
        let listening = self.shared.listening.subscribe();
        while *listening.borrow() != open {
            let stopped = self.thread.as_ref().is_none_or(|t| t.is_finished());
            assert!(!stopped, "the proxy's thread stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Ends every open connection.
    pub fn cut_connections(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// The database goes away: every connection ends and new ones are refused.
    pub fn cut(&self) {
        self.refuse();
        self.cut_connections();
    }

    /// What happens to traffic from now on, on open and new connections.
    pub fn traffic(&self, traffic: Traffic) {
        *self.shared.traffic.lock().expect("traffic") = traffic;
    }

    /// Back to normal: the port open, traffic forwarded. Returns once the port is open.
    pub fn restore(&self) {
        self.traffic(Traffic::Pass);
        self.shared.refuse.send_replace(false);
        self.await_listening(true);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        self.cut_connections();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    addr: String,
    upstream: String,
    shared: Arc<Shared>,
) {
    let mut listener = Some(TcpListener::from_std(listener).expect("listener"));
    let mut refuse = shared.refuse.subscribe();
    let mut stop = shared.stop.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        if *refuse.borrow_and_update() {
            // Closing the port is how a server that is down answers: connection refused.
            listener = None;
            shared.listening.send_replace(false);
        } else if listener.is_none() {
            listener = Some(rebind(&addr).await);
            shared.listening.send_replace(true);
        }
        let Some(l) = &listener else {
            tokio::select! {
                _ = refuse.changed() => continue,
                _ = stop.changed() => return,
            }
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                // Subscribed before the task runs: a cut right after the accept ends it too.
                let mut cut = shared.cut.subscribe();
                cut.borrow_and_update();
                tokio::spawn(connection(inbound, cut, upstream.clone(), shared.clone()));
            }
            _ = refuse.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Binds `addr` again (the port was just given up; retried while the system holds it).
async fn rebind(addr: &str) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the proxy could not listen on {addr} again");
}

async fn connection(
    inbound: TcpStream,
    mut cut: watch::Receiver<u64>,
    upstream: String,
    shared: Arc<Shared>,
) {
    let Ok(outbound) = TcpStream::connect(&upstream).await else { return };
    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
    let (from_client, to_client) = inbound.into_split();
    let (from_server, to_server) = outbound.into_split();
    let up = forward(from_client, to_server, shared.clone());
    let down = forward(from_server, to_client, shared.clone());
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut.changed() => {}
    }
}

async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let traffic = *shared.traffic.lock().expect("traffic");
        match traffic {
            Traffic::Pass => {}
            Traffic::Delay(d) => tokio::time::sleep(d).await,
            Traffic::Blackhole => continue,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
