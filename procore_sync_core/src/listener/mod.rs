//! The extension's HTTP listener, network side: Procore webhook deliveries (and later
//! `/metrics` and a status page) come in here and go to the worker's main thread.
//!
//! Only a background worker's main thread may touch Postgres, so the network lives on one
//! other thread: hyper's HTTP/1 server on a current-thread tokio runtime, started with every
//! signal blocked (see [`crate::fetch_pool::blocking_signals`]) so that SIGTERM and SIGHUP
//! keep reaching Postgres' handlers on the main thread. One thread rather than a
//! multi-thread runtime because the work is all waiting (sockets, the main thread's answer):
//! a TLS handshake is the only CPU it spends, webhooks arrive a few a second at most, and
//! every extra thread lives inside a Postgres backend.
//!
//! Each request is read whole (within the limits) on the network thread, then offered to a
//! bounded channel that the main thread drains with [`Listener::next`]. A full channel is
//! answered 503 at once: the network thread never waits for the main thread. Neither does
//! the client: whatever the main thread has not answered within
//! [`ListenerConfig::answer_timeout`] is answered 503, because Procore gives up on a
//! delivery after 5 s and redelivers it later.
//!
//! Memory is bounded by the configuration: at most `max_connections` requests being read
//! (each at most `max_body_bytes` plus a 64 KiB read buffer) and at most `queue_depth`
//! waiting for the main thread.

mod server;
mod tls;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{SocketAddr, TcpListener as StdTcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::fetch_pool::blocking_signals;
use crate::procore::Secret;

/// Where and how to listen, and the limits that keep a misbehaving client from costing
/// the worker more than a bounded amount of memory and time.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `host:port`, as in `procore_sync.http_listen`; a name is resolved once, at start.
    pub listen: String,
    /// TLS with these PEM files; `None` serves plain HTTP (behind a proxy that ends TLS).
    pub tls: Option<TlsFiles>,
    /// Largest request body accepted; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// From accepting a connection (TLS handshake included) or from the first byte of a
    /// later request, until the request's header is complete.
    pub header_timeout: Duration,
    /// Reading a request's whole body, from the end of its header; then 408.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Requests read and waiting for the main thread; one more is answered 503.
    pub queue_depth: usize,
    /// How long a request waits, from being queued, for the main thread's answer before
    /// the client is answered 503 and the main thread's answer, if it comes, is dropped.
    pub answer_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl ListenerConfig {
    /// The defaults: webhook payloads are a few KB, so 256 KiB leaves room while keeping
    /// 64 connections' worst case at 16 MiB; the idle timeout outlasts the 60 s that common
    /// proxies and load balancers keep an idle upstream connection, so they close first and
    /// never send a request into a connection being closed; 4 s to answer because Procore
    /// waits 5 s.
    pub fn new(listen: impl Into<String>) -> ListenerConfig {
        ListenerConfig {
            listen: listen.into(),
            tls: None,
            max_body_bytes: 256 * 1024,
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            queue_depth: 16,
            answer_timeout: Duration::from_secs(4),
        }
    }

    fn check(&self) -> Result<(), ListenerError> {
        let mut problems = Vec::new();
        if self.max_connections == 0 {
            problems.push("max_connections must be at least 1".to_owned());
        }
        // A zero-depth channel only hands over to a receiver already waiting: every
        // request would be refused while the main thread is busy.
        if self.queue_depth == 0 {
            problems.push("queue_depth must be at least 1".to_owned());
        }
        for (name, value) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
            ("idle_timeout", self.idle_timeout),
            ("answer_timeout", self.answer_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{name} must be more than zero"));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ListenerError::Config(problems.join("; "))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("listener settings: {0}")]
    Config(String),
    #[error("listen address {listen:?} is not host:port or does not resolve: {reason}")]
    Address { listen: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read {what} file {path}: {source}")]
    ReadPem {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} file {path} holds no usable {what} in PEM form")]
    EmptyPem { what: &'static str, path: PathBuf },
    #[error("TLS certificate {cert} and key {key} cannot be used together: {source}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot start the listener's thread: {0}")]
    Thread(std::io::Error),
}

/// Counts since start, for the status page and `/metrics`: the network thread cannot log
/// through Postgres, so what it refused shows up here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenerStats {
    pub connections_open: u64,
    pub connections_accepted: u64,
    /// Closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// Closed for a TLS handshake or request header not done within `header_timeout`
    /// (kept-alive connections closed after `idle_timeout` are not counted).
    pub connections_timed_out: u64,
    /// Handed to the main thread's queue.
    pub requests_queued: u64,
    /// Answered 413.
    pub requests_too_large: u64,
    /// Answered 408: the body did not arrive within `body_timeout`.
    pub requests_body_timed_out: u64,
    /// Answered 503 because the queue was full.
    pub requests_queue_full: u64,
    /// Answered 503 because the main thread did not answer within `answer_timeout`.
    pub requests_answer_late: u64,
}

#[derive(Default)]
struct Counters {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_timed_out: AtomicU64,
    requests_queued: AtomicU64,
    requests_too_large: AtomicU64,
    requests_body_timed_out: AtomicU64,
    requests_queue_full: AtomicU64,
    requests_answer_late: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ListenerStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            connections_open: read(&self.connections_open),
            connections_accepted: read(&self.connections_accepted),
            connections_refused: read(&self.connections_refused),
            connections_timed_out: read(&self.connections_timed_out),
            requests_queued: read(&self.requests_queued),
            requests_too_large: read(&self.requests_too_large),
            requests_body_timed_out: read(&self.requests_body_timed_out),
            requests_queue_full: read(&self.requests_queue_full),
            requests_answer_late: read(&self.requests_answer_late),
        }
    }
}

/// A running listener. Dropping it stops accepting, closes every connection (requests
/// still waiting are not answered) and waits for the network thread to end.
pub struct Listener {
    local_addr: SocketAddr,
    queue: Receiver<Incoming>,
    counters: Arc<Counters>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds and loads the TLS files here, on the caller's thread, so that a bad address,
    /// a port in use or an unreadable certificate is an error now rather than a line in
    /// some log later.
    pub fn start(config: ListenerConfig) -> Result<Listener, ListenerError> {
        config.check()?;
        let tls = match &config.tls {
            Some(files) => Some(tls::acceptor(files)?),
            None => None,
        };
        let socket = bind(&config.listen)?;
        let local_addr = socket.local_addr().map_err(|e| ListenerError::Address {
            listen: config.listen.clone(),
            reason: e.to_string(),
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| ListenerError::Bind {
                addr: local_addr,
                source,
            })?;

        let (sender, queue) = mpsc::sync_channel(config.queue_depth);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let shared = server::Shared {
            config,
            tls,
            queue: sender,
            counters: counters.clone(),
        };
        let thread = blocking_signals(|| -> Result<JoinHandle<()>, ListenerError> {
            // Built here rather than on the new thread so that a failure is `start`'s error;
            // a current-thread runtime starts no threads of its own.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(ListenerError::Thread)?;
            let socket = {
                let _context = runtime.enter();
                tokio::net::TcpListener::from_std(socket).map_err(|source| ListenerError::Bind {
                    addr: local_addr,
                    source,
                })?
            };
            thread::Builder::new()
                .name("procore-http".into())
                .spawn(move || runtime.block_on(server::accept_loop(socket, shared, stopped)))
                .map_err(ListenerError::Thread)
        })?;
        Ok(Listener {
            local_addr,
            queue,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next request for the main thread, waiting at most `timeout` so that the caller
    /// gets back to its latch. Requests whose client has already been answered (503 after
    /// `answer_timeout`) or has gone away are skipped: nobody would read their answer.
    pub fn next(&self, timeout: Duration) -> Option<Incoming> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.queue.recv_timeout(left) {
                Ok(incoming) if incoming.is_abandoned() => continue,
                Ok(incoming) => return Some(incoming),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    // The network thread is gone; sleeping out the timeout keeps a caller
                    // that loops on `next` from spinning. `is_running` tells it why.
                    thread::sleep(left);
                    return None;
                }
            }
        }
    }

    /// False once the network thread has ended, which only a panic in it can cause while
    /// the listener is alive.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stats(&self) -> ListenerStats {
        self.counters.snapshot()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        // The thread only waits on sockets and timers, all of which its runtime drops
        // when the accept loop returns, so this join is short.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind(listen: &str) -> Result<StdTcpListener, ListenerError> {
    let addresses: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| ListenerError::Address {
            listen: listen.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last_error = None;
    for addr in addresses {
        match StdTcpListener::bind(addr) {
            Ok(socket) => return Ok(socket),
            Err(source) => last_error = Some(ListenerError::Bind { addr, source }),
        }
    }
    Err(last_error.unwrap_or_else(|| ListenerError::Address {
        listen: listen.to_owned(),
        reason: "it resolves to no address".into(),
    }))
}

/// The main thread's answer to one request.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// One request, read whole, for the main thread. Answer it with [`Incoming::respond`];
/// dropping it unanswered answers 500.
pub struct Incoming {
    pub method: String,
    /// The path without the query string, as sent (still percent-encoded).
    pub path: String,
    /// The query string without the `?`, empty if none.
    pub query: String,
    /// The connection's peer: behind a proxy, the proxy.
    pub peer: SocketAddr,
    /// The `Authorization` header, which for webhooks carries the shared secret.
    pub authorization: Option<Secret>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

impl Incoming {
    /// Sends the answer to the client. A `status` that is not a final HTTP status
    /// (200-999) or a `content_type` that cannot be a header value answers 500 instead.
    /// If the client was already answered 503 (too late) or has gone, this does nothing.
    pub fn respond(self, status: u16, content_type: &str, body: Vec<u8>) {
        let _ = self.reply.send(Answer {
            status,
            content_type: content_type.to_owned(),
            body,
        });
    }

    /// True once the network side stopped waiting for the answer.
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

impl fmt::Debug for Incoming {
    // By hand: the body can be large and the authorization is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("peer", &self.peer)
            .field("authorization", &self.authorization)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}
