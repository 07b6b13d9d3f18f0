//! Scripted mode: the stand-in's HTTP/1.1 reader and fault writer behind a closure
//! instead of the Procore world, for tests that need exact replies and byte-level
//! faults (the Procore client's own tests in `procore_sync_core`).
//!
//! Every request is recorded (with the number of the connection that carried it) and
//! handed to the closure, whose `Reply` goes out through `faults::write_wire`: whole,
//! stalled, truncated, dropped, or a huge body declared or chunked. One thread per
//! connection, keep-alive as the client asks; plain HTTP or TLS with a given config.

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::faults::{self, Wire};
use crate::http::{self, Request, Response, Transport};

/// A request as the server read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query as sent, e.g. `/rest/v1.0/companies?page=1`.
    pub target: String,
    /// Header names lower-cased; `header` finds them in any case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Which TCP connection carried it (1-based, in accept order).
    pub connection: usize,
}

impl Recorded {
    fn new(request: Request, connection: usize) -> Recorded {
        Recorded {
            method: request.method,
            target: request.target,
            headers: request.headers,
            body: String::from_utf8_lossy(&request.body).into_owned(),
            connection,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }

    /// Decoded query parameters, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        http::parse_form(self.target.split_once('?').map_or("", |(_, q)| q))
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        http::param(&self.query(), name).map(str::to_string)
    }

    /// A decoded parameter of an `application/x-www-form-urlencoded` body.
    pub fn form_param(&self, name: &str) -> Option<String> {
        http::param(&http::parse_form(&self.body), name).map(str::to_string)
    }
}

/// What goes out after the status line and headers.
pub enum Body {
    Full(Vec<u8>),
    /// Declares `declared` bytes, sends `sent`, closes.
    Truncated {
        declared: usize,
        sent: Vec<u8>,
    },
    /// Sends the head, waits, then the body.
    StallMidway(Duration, Vec<u8>),
    /// Waits before sending anything.
    StallBeforeHead(Duration, Vec<u8>),
    /// Declares and streams a JSON array of `n` bytes.
    HugeDeclared(u64),
    /// Streams a JSON array of `n` bytes in chunked encoding, no length declared.
    HugeChunked(u64),
    /// Closes the connection without answering.
    Drop,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Reply {
    pub fn new(status: u16, body: Body) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn json(status: u16, body: &str) -> Reply {
        Reply::new(status, Body::Full(body.as_bytes().to_vec()))
            .header("Content-Type", "application/json; charset=utf-8")
    }

    pub fn text(status: u16, content_type: &str, body: &str) -> Reply {
        Reply::new(status, Body::Full(body.as_bytes().to_vec()))
            .header("Content-Type", content_type)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The response, the wire it goes out on, and how long to wait before its first byte.
    fn into_wire(self) -> (Response, Wire, Duration) {
        let mut headers = self.headers;
        let whole = Wire::Whole {
            pause: Duration::ZERO,
        };
        let huge = |bytes, chunked| (Vec::new(), Wire::Huge { bytes, chunked }, Duration::ZERO);
        let (body, wire, delay) = match self.body {
            Body::Full(body) => (body, whole, Duration::ZERO),
            Body::Truncated { declared, sent } => (
                sent,
                Wire::Truncated {
                    declared: declared as u64,
                },
                Duration::ZERO,
            ),
            Body::StallMidway(pause, body) => (body, Wire::Whole { pause }, Duration::ZERO),
            Body::StallBeforeHead(delay, body) => (body, whole, delay),
            Body::HugeDeclared(bytes) => huge(bytes, false),
            Body::HugeChunked(bytes) => huge(bytes, true),
            Body::Drop => (Vec::new(), Wire::Drop, Duration::ZERO),
        };
        if matches!(wire, Wire::Huge { .. }) {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        let response = Response {
            status: self.status,
            headers,
            body,
        };
        (response, wire, delay)
    }
}

type Handler = dyn Fn(&Recorded, &str) -> Reply + Send + Sync;

/// Everything the connection threads share.
struct Shared {
    handler: Box<Handler>,
    /// `http://127.0.0.1:PORT` or `https://...`, handed to the handler.
    base: String,
    requests: Mutex<Vec<Recorded>>,
    bytes_written: Arc<AtomicU64>,
    connections: AtomicUsize,
}

/// A running scripted server; it runs until the process exits.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    /// Bytes written to clients so far (heads and bodies, all connections): how far a
    /// streamed body got before its client hung up.
    pub bytes_written: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl ScriptedServer {
    /// Serves plain HTTP on a loopback port; `handler` gets each request and the
    /// server's base URL.
    ///
    /// # Panics
    /// When no loopback port can be had: this is test scaffolding.
    pub fn start(handler: impl Fn(&Recorded, &str) -> Reply + Send + Sync + 'static) -> Self {
        ScriptedServer::listen(None, Box::new(handler))
    }

    /// As `start`, over TLS with `config` (its certificate is the caller's to trust).
    ///
    /// # Panics
    /// As `start`.
    pub fn start_tls(
        config: Arc<ServerConfig>,
        handler: impl Fn(&Recorded, &str) -> Reply + Send + Sync + 'static,
    ) -> Self {
        ScriptedServer::listen(Some(config), Box::new(handler))
    }

    fn listen(tls: Option<Arc<ServerConfig>>, handler: Box<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted server");
        let addr = listener.local_addr().expect("scripted server address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bytes_written = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            handler,
            base: format!("{scheme}://{addr}"),
            requests: Mutex::new(Vec::new()),
            bytes_written: Arc::clone(&bytes_written),
            connections: AtomicUsize::new(0),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || accept_loop(listener, accepting, tls));
        ScriptedServer {
            addr,
            bytes_written,
            shared,
        }
    }

    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// The requests read so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<ServerConfig>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let connection = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        thread::spawn(move || match tls {
            Some(config) => {
                if let Ok(conn) = ServerConnection::new(config) {
                    serve(&shared, connection, StreamOwned::new(conn, stream));
                }
            }
            None => serve(&shared, connection, stream),
        });
    }
}

fn serve<T: Transport>(shared: &Shared, connection: usize, stream: T) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = http::next_request(&mut reader) {
        let keep_alive = request.keep_alive;
        let recorded = Recorded::new(request, connection);
        if let Ok(mut log) = shared.requests.lock() {
            log.push(recorded.clone());
        }
        let (response, wire, delay) = (shared.handler)(&recorded, &shared.base).into_wire();
        thread::sleep(delay);
        let mut out = Counting {
            inner: reader.get_mut(),
            count: &shared.bytes_written,
        };
        let sent = faults::write_wire(&mut out, &response, wire, !keep_alive);
        if sent.is_err() || !keep_alive || !wire.keeps_connection() {
            let graceful = sent.is_ok() && matches!(wire, Wire::Whole { .. });
            reader.get_mut().close(graceful);
            return;
        }
    }
}

/// Counts the bytes that reach the connection.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    count: &'a AtomicU64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;

    /// Sends `raw` on `stream` and reads one response with a Content-Length body.
    fn exchange(stream: &mut BufReader<TcpStream>, raw: &str) -> (String, String) {
        stream.get_mut().write_all(raw.as_bytes()).unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).unwrap();
        (head, String::from_utf8(body).unwrap())
    }

    fn connect(server: &ScriptedServer) -> BufReader<TcpStream> {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        BufReader::new(stream)
    }

    /// Everything the server sends on a fresh connection until it closes.
    fn raw_reply(server: &ScriptedServer, target: &str) -> Vec<u8> {
        let mut stream = connect(server);
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.get_mut().write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        out
    }

    #[test]
    fn records_requests_with_their_connections_and_answers_on_keep_alive() {
        let server = ScriptedServer::start(|r, base| {
            Reply::json(
                200,
                &format!(r#"{{"path":"{}","base":"{base}"}}"#, r.path()),
            )
            .header("X-Seen", &r.query_param("q").unwrap_or_default())
        });
        let mut first = connect(&server);
        let (head, body) = exchange(&mut first, "GET /a?q=a%20b&x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("X-Seen: a b\r\n"), "{head}");
        assert_eq!(
            body,
            format!(r#"{{"path":"/a","base":"{}"}}"#, server.url())
        );
        let form = "POST /oauth/token HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\n\r\ngrant_type=a+b&code=%2B";
        exchange(&mut first, form);
        let mut second = connect(&server);
        exchange(&mut second, "GET /c HTTP/1.1\r\n\r\n");

        let requests = server.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(
            requests.iter().map(|r| r.connection).collect::<Vec<_>>(),
            [1, 1, 2]
        );
        assert_eq!(requests[0].target, "/a?q=a%20b&x=1");
        assert_eq!(
            requests[0].query(),
            [("q", "a b"), ("x", "1")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(requests[0].header("HOST"), Some("x"));
        assert_eq!(requests[1].method, "POST");
        assert_eq!(requests[1].form_param("grant_type").as_deref(), Some("a b"));
        assert_eq!(requests[1].form_param("code").as_deref(), Some("+"));
        assert!(server.bytes_written.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn faulty_replies_reach_the_socket_as_scripted() {
        let server = ScriptedServer::start(|r, _| match r.path() {
            "/truncated" => Reply::new(
                200,
                Body::Truncated {
                    declared: 100,
                    sent: b"0123456789".to_vec(),
                },
            ),
            "/drop" => Reply::new(200, Body::Drop),
            "/stall-head" => Reply::new(
                200,
                Body::StallBeforeHead(Duration::from_millis(300), b"[]".to_vec()),
            ),
            "/stall-body" => Reply::new(
                200,
                Body::StallMidway(Duration::from_millis(300), b"[]".to_vec()),
            ),
            _ => Reply::new(200, Body::HugeDeclared(1000)),
        });
        let truncated = String::from_utf8(raw_reply(&server, "/truncated")).unwrap();
        assert!(truncated.contains("Content-Length: 100\r\n"), "{truncated}");
        assert!(truncated.ends_with("\r\n\r\n0123456789"), "{truncated}");
        assert!(raw_reply(&server, "/drop").is_empty());

        let mut stream = connect(&server);
        let started = Instant::now();
        let (_, body) = exchange(&mut stream, "GET /stall-head HTTP/1.1\r\n\r\n");
        assert_eq!(body, "[]");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let started = Instant::now();
        let (_, body) = exchange(&mut stream, "GET /stall-body HTTP/1.1\r\n\r\n");
        assert_eq!(body, "[]");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let (head, body) = exchange(&mut stream, "GET /huge HTTP/1.1\r\n\r\n");
        assert!(
            head.contains("Content-Type: application/json\r\n"),
            "{head}"
        );
        assert_eq!(body.len(), 1000);
        assert!(serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .is_array());
        assert!(
            server.requests().iter().skip(2).all(|r| r.connection == 3),
            "the connection outlived the stalls"
        );
    }

    #[test]
    fn an_endless_chunked_body_stops_when_the_client_hangs_up() {
        let total = 200 * 1024 * 1024;
        let server = ScriptedServer::start(move |_, _| Reply::new(200, Body::HugeChunked(total)));
        let mut stream = connect(&server);
        stream
            .get_mut()
            .write_all(b"GET /huge HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut start = vec![0; 64 * 1024];
        stream.read_exact(&mut start).unwrap();
        let text = String::from_utf8_lossy(&start);
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
        assert!(!text.contains("Content-Length"), "{text}");
        drop(stream);
        thread::sleep(Duration::from_millis(300));
        let written = server.bytes_written.load(Ordering::SeqCst);
        assert!(written < total / 4, "server wrote {written} bytes");
    }

    #[test]
    fn refused_requests_are_answered_and_not_recorded() {
        let server = ScriptedServer::start(|_, _| Reply::json(200, "[]"));
        let reply = String::from_utf8(raw_reply(&server, "no-slash")).unwrap();
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        assert!(server.requests().is_empty());
    }
}
