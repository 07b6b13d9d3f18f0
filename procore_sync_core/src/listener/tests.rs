//! The listener against real sockets on 127.0.0.1. The test's own thread plays the worker's
//! main thread; clients run on threads of their own, with raw `TcpStream`s where the bytes
//! on the wire matter and `ureq` for TLS.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// Short timeouts so that the tests that wait for one finish in about a second.
fn config() -> ListenerConfig {
    let mut config = ListenerConfig::new("127.0.0.1:0");
    config.header_timeout = Duration::from_secs(5);
    config.body_timeout = Duration::from_secs(5);
    config.idle_timeout = Duration::from_secs(5);
    config.answer_timeout = Duration::from_secs(5);
    config
}

fn start(config: ListenerConfig) -> Listener {
    Listener::start(config).expect("listener starts")
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response with a `Content-Length` (all of the listener's have one).
fn read_reply(stream: &mut TcpStream) -> io::Result<Reply> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or(io::ErrorKind::InvalidData)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    reply.body = vec![0; length];
    stream.read_exact(&mut reply.body)?;
    Ok(reply)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// Sends `request` on `stream` and reads the reply.
fn exchange(stream: &mut TcpStream, request: &str) -> io::Result<Reply> {
    stream.write_all(request.as_bytes())?;
    read_reply(stream)
}

/// Runs `client` on its own thread while this thread answers every request that comes in
/// 200 with "METHOD PATH", as the main thread would; returns what the client returned.
fn serving<R: Send + 'static>(
    listener: &Listener,
    client: impl FnOnce() -> R + Send + 'static,
) -> R {
    let client = thread::spawn(client);
    while !client.is_finished() {
        if let Some(incoming) = listener.next(Duration::from_millis(20)) {
            let text = format!("{} {}", incoming.method, incoming.path);
            incoming.respond(200, "text/plain", text.into_bytes());
        }
    }
    client.join().expect("client thread")
}

/// Polls the listener's counters until `check` holds (or fails the test after 5 s).
fn wait_for_stats(listener: &Listener, what: &str, check: impl Fn(&ListenerStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check(&listener.stats()) {
        assert!(
            Instant::now() < deadline,
            "{what}: stats are {:?}",
            listener.stats()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// True when the server closed the connection: EOF or a reset, not a read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn a_request_reaches_the_main_thread_and_its_answer_the_client_twice_on_one_connection() {
    let listener = start(config());
    let addr = listener.local_addr();
    let client = thread::spawn(move || {
        let mut stream = connect(addr);
        let request = "POST /procore/webhooks?company=7&x=%20 HTTP/1.1\r\nHost: test\r\n\
                       Authorization: Bearer hook-secret\r\nContent-Type: application/json\r\n\
                       Content-Length: 12\r\n\r\n{\"id\":12345}";
        let first = exchange(&mut stream, request).expect("first reply");
        let second = exchange(&mut stream, &get("/metrics")).expect("second reply");
        (first, second)
    });

    let webhook = listener.next(Duration::from_secs(5)).expect("a request");
    assert_eq!(webhook.method, "POST");
    assert_eq!(webhook.path, "/procore/webhooks");
    assert_eq!(webhook.query, "company=7&x=%20");
    assert_eq!(webhook.peer.ip(), addr.ip());
    assert_eq!(
        webhook.authorization.as_ref().map(|a| a.expose()),
        Some("Bearer hook-secret")
    );
    assert_eq!(webhook.content_type.as_deref(), Some("application/json"));
    assert_eq!(webhook.body, b"{\"id\":12345}");
    let first_peer = webhook.peer;
    webhook.respond(202, "application/json", b"{\"ok\":true}".to_vec());

    let metrics = listener
        .next(Duration::from_secs(5))
        .expect("a second request");
    assert_eq!(
        (metrics.method.as_str(), metrics.path.as_str()),
        ("GET", "/metrics")
    );
    assert_eq!(metrics.query, "");
    assert!(metrics.authorization.is_none());
    assert!(metrics.body.is_empty());
    assert_eq!(metrics.peer, first_peer, "same connection: kept alive");
    metrics.respond(200, "text/plain; version=0.0.4", b"up 1\n".to_vec());

    let (first, second) = client.join().expect("client");
    assert_eq!(first.status, 202);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.text(), "{\"ok\":true}");
    assert_eq!(second.status, 200);
    assert_eq!(
        second.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert_eq!(second.text(), "up 1\n");
    assert_eq!(listener.stats().requests_queued, 2);
}

#[test]
fn a_declared_length_over_the_limit_is_refused_without_reading_the_body() {
    let mut config = config();
    config.max_body_bytes = 1024;
    let listener = start(config);
    let addr = listener.local_addr();
    let started = Instant::now();
    // The body is never sent: a server that tried to read it would wait for body_timeout.
    let reply = serving(&listener, move || {
        let mut stream = connect(addr);
        exchange(
            &mut stream,
            "POST /procore/webhooks HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000\r\n\r\n",
        )
    })
    .expect("a reply");
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(listener.stats().requests_too_large, 1);
    assert_eq!(listener.stats().requests_queued, 0);
}

/// Keeps the client's writes in step with the server's reads, as over a real network; on
/// loopback the kernel's buffers would otherwise take the whole body at once.
fn small_send_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket this test owns, with a c_int option value.
    let done = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(done, 0, "SO_SNDBUF");
}

/// The usual client sends its body right behind the header without waiting: the 413 must
/// still reach it rather than be lost to a reset when the server closes with bytes unread.
#[test]
fn a_client_still_sending_a_refused_body_gets_to_read_the_413() {
    let mut config = config();
    config.max_body_bytes = 1024;
    let listener = start(config);
    let addr = listener.local_addr();
    for declared in [true, false] {
        let reply = serving(&listener, move || {
            let mut stream = connect(addr);
            small_send_buffer(&stream);
            let body = vec![b'x'; 900_000];
            let mut request = match declared {
                true => format!(
                    "POST /procore/webhooks HTTP/1.1\r\nHost: test\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes(),
                false => b"POST /procore/webhooks HTTP/1.1\r\nHost: test\r\n\
                           Transfer-Encoding: chunked\r\n\r\ndbba0\r\n"
                    .to_vec(),
            };
            request.extend_from_slice(&body);
            stream.write_all(&request)?;
            read_reply(&mut stream)
        });
        let reply = reply.unwrap_or_else(|e| panic!("declared {declared}: {e}"));
        assert_eq!(reply.status, 413, "declared {declared}");
    }
    assert_eq!(listener.stats().requests_too_large, 2);
}

#[test]
fn a_chunked_body_is_taken_within_the_limit_and_refused_once_it_grows_over_it() {
    let mut config = config();
    config.max_body_bytes = 1024;
    let listener = start(config);
    let addr = listener.local_addr();
    let chunked = |chunks: usize| {
        let mut request = "POST /procore/webhooks HTTP/1.1\r\nHost: test\r\n\
                           Transfer-Encoding: chunked\r\n\r\n"
            .to_owned();
        for _ in 0..chunks {
            request.push_str(&format!("258\r\n{}\r\n", "x".repeat(600)));
        }
        request.push_str("0\r\n\r\n");
        request
    };
    let (small, large) = (chunked(1), chunked(4));
    let client = thread::spawn(move || {
        let mut stream = connect(addr);
        let within = exchange(&mut stream, &small).expect("reply within the limit");
        let over = exchange(&mut stream, &large).expect("reply over the limit");
        (within, over)
    });
    let incoming = listener
        .next(Duration::from_secs(5))
        .expect("the small body");
    assert_eq!(incoming.body.len(), 600);
    incoming.respond(200, "text/plain", b"taken".to_vec());
    let (within, over) = client.join().expect("client");
    assert_eq!((within.status, within.text().as_str()), (200, "taken"));
    assert_eq!(over.status, 413);
    assert!(listener.next(Duration::from_millis(100)).is_none());
    assert_eq!(listener.stats().requests_too_large, 1);
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_a_freed_slot_takes_a_new_one() {
    let mut config = config();
    config.max_connections = 2;
    config.header_timeout = Duration::from_secs(30);
    let listener = start(config);
    let addr = listener.local_addr();
    let first = connect(addr);
    let mut second = connect(addr);
    wait_for_stats(&listener, "two connections open", |s| {
        s.connections_open == 2
    });

    let mut third = connect(addr);
    let started = Instant::now();
    assert!(
        closed_by_server(&mut third),
        "the third connection was kept"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(listener.stats().connections_refused, 1);

    drop(first);
    wait_for_stats(&listener, "a slot freed", |s| s.connections_open == 1);
    let (fourth, second) = serving(&listener, move || {
        let mut fourth = connect(addr);
        let fourth = exchange(&mut fourth, &get("/fourth")).expect("the new connection");
        let second = exchange(&mut second, &get("/second")).expect("the old connection");
        (fourth, second)
    });
    assert_eq!(
        (fourth.status, fourth.text().as_str()),
        (200, "GET /fourth")
    );
    assert_eq!(
        (second.status, second.text().as_str()),
        (200, "GET /second")
    );
    assert_eq!(listener.stats().connections_refused, 1);
}

#[test]
fn a_header_that_stalls_is_dropped_after_the_header_timeout() {
    let mut config = config();
    config.header_timeout = Duration::from_millis(300);
    let listener = start(config);
    let mut stream = connect(listener.local_addr());
    stream
        .write_all(b"POST /procore/webhooks HTTP/1.1\r\nHost: te")
        .expect("half a header");
    let started = Instant::now();
    assert!(closed_by_server(&mut stream), "the stalled header was kept");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    assert_eq!(listener.stats().connections_timed_out, 1);
    assert!(listener.next(Duration::ZERO).is_none());
}

#[test]
fn a_kept_alive_connection_waits_past_the_header_timeout_until_the_idle_timeout() {
    let mut config = config();
    config.header_timeout = Duration::from_millis(200);
    config.idle_timeout = Duration::from_millis(800);
    let listener = start(config);
    let addr = listener.local_addr();
    let (second, idle_for) = serving(&listener, move || {
        let mut stream = connect(addr);
        exchange(&mut stream, &get("/first")).expect("first reply");
        thread::sleep(Duration::from_millis(500));
        let second = exchange(&mut stream, &get("/second")).expect("second reply");
        let answered = Instant::now();
        let closed = closed_by_server(&mut stream);
        (second, closed.then(|| answered.elapsed()))
    });
    assert_eq!(second.status, 200);
    let idle_for = idle_for.expect("closed when idle");
    assert!(
        idle_for >= Duration::from_millis(700) && idle_for < Duration::from_secs(3),
        "closed after {idle_for:?} idle"
    );
    assert_eq!(listener.stats().connections_timed_out, 0);
}

#[test]
fn a_main_thread_that_does_not_answer_in_time_leaves_the_client_a_503() {
    let mut config = config();
    config.answer_timeout = Duration::from_millis(300);
    let listener = start(config);
    let addr = listener.local_addr();
    let client = thread::spawn(move || {
        let mut stream = connect(addr);
        let started = Instant::now();
        let reply = exchange(&mut stream, &post("/procore/webhooks", "{}"));
        (reply.expect("a reply"), started.elapsed(), stream)
    });
    let slow = listener.next(Duration::from_secs(5)).expect("the request");
    let (reply, waited, mut stream) = client.join().expect("client");
    assert_eq!(reply.status, 503);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "answered after {waited:?}"
    );
    assert!(slow.is_abandoned());
    // Too late: dropped, and the connection goes on serving.
    slow.respond(200, "text/plain", b"late".to_vec());
    let next = serving(&listener, move || exchange(&mut stream, &get("/after")));
    assert_eq!(next.expect("reply").text(), "GET /after");
    assert_eq!(listener.stats().requests_answer_late, 1);
}

#[test]
fn requests_already_answered_503_are_not_handed_to_the_main_thread() {
    let mut config = config();
    config.answer_timeout = Duration::from_millis(100);
    let listener = start(config);
    let mut stream = connect(listener.local_addr());
    let reply = exchange(&mut stream, &post("/procore/webhooks", "{}")).expect("reply");
    assert_eq!(reply.status, 503);
    assert!(listener.next(Duration::from_millis(100)).is_none());
}

#[test]
fn a_request_dropped_unanswered_is_answered_500() {
    let listener = start(config());
    let addr = listener.local_addr();
    let client = thread::spawn(move || exchange(&mut connect(addr), &get("/status")));
    drop(listener.next(Duration::from_secs(5)).expect("the request"));
    assert_eq!(client.join().expect("client").expect("reply").status, 500);
}

#[test]
fn an_answer_that_is_not_http_is_answered_500() {
    let listener = start(config());
    let addr = listener.local_addr();
    let client = thread::spawn(move || {
        let mut stream = connect(addr);
        let informational = exchange(&mut stream, &get("/a")).expect("reply");
        let bad_header = exchange(&mut stream, &get("/b")).expect("reply");
        (informational, bad_header)
    });
    let a = listener.next(Duration::from_secs(5)).expect("a");
    a.respond(100, "text/plain", Vec::new());
    let b = listener.next(Duration::from_secs(5)).expect("b");
    b.respond(200, "text/plain\r\nX-Injected: 1", Vec::new());
    let (informational, bad_header) = client.join().expect("client");
    assert_eq!(informational.status, 500);
    assert_eq!(bad_header.status, 500);
    assert_eq!(bad_header.header("x-injected"), None);
}

#[test]
fn a_full_queue_is_answered_503_at_once() {
    let mut config = config();
    config.queue_depth = 1;
    let listener = start(config);
    let addr = listener.local_addr();
    let queued = thread::spawn(move || exchange(&mut connect(addr), &get("/queued")));
    wait_for_stats(&listener, "one request queued", |s| s.requests_queued == 1);

    let started = Instant::now();
    let refused = exchange(&mut connect(addr), &get("/refused")).expect("reply");
    assert_eq!(refused.status, 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(listener.stats().requests_queue_full, 1);

    let incoming = listener
        .next(Duration::from_secs(5))
        .expect("the queued request");
    assert_eq!(incoming.path, "/queued");
    incoming.respond(200, "text/plain", b"done".to_vec());
    let queued = queued.join().expect("client").expect("reply");
    assert_eq!((queued.status, queued.text().as_str()), (200, "done"));
}

#[test]
fn debug_shows_neither_the_authorization_nor_the_body() {
    let listener = start(config());
    let addr = listener.local_addr();
    let client = thread::spawn(move || {
        let request = "POST /procore/webhooks HTTP/1.1\r\nHost: test\r\n\
                       Authorization: Bearer hunter2-value\r\nContent-Length: 16\r\n\r\n\
                       payload-text-123";
        exchange(&mut connect(addr), request)
    });
    let incoming = listener.next(Duration::from_secs(5)).expect("the request");
    let printed = format!("{incoming:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(!printed.contains("payload-text"), "{printed}");
    assert!(printed.contains("body_len: 16"), "{printed}");
    assert_eq!(
        incoming.authorization.as_ref().map(|a| a.expose()),
        Some("Bearer hunter2-value")
    );
    incoming.respond(204, "text/plain", Vec::new());
    assert_eq!(client.join().expect("client").expect("reply").status, 204);
}

/// A directory of its own per call, under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "procore_sync_listener_{}_{}_{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A self-signed certificate for "localhost", written as PEM files.
fn self_signed(dir: &std::path::Path) -> (TlsFiles, rcgen::Certificate) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let files = TlsFiles {
        cert_pem: dir.join("cert.pem"),
        key_pem: dir.join("key.pem"),
    };
    std::fs::write(&files.cert_pem, made.cert.pem()).expect("write cert");
    std::fs::write(&files.key_pem, made.signing_key.serialize_pem()).expect("write key");
    (files, made.cert)
}

#[test]
fn tls_answers_a_client_that_trusts_the_certificate_and_not_plain_http() {
    let dir = temp_dir("tls");
    let (files, cert) = self_signed(&dir);
    let mut config = config();
    config.tls = Some(files);
    let listener = start(config);
    let port = listener.local_addr().port();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let agent = ureq::AgentBuilder::new().tls_config(Arc::new(tls)).build();
    let answer = serving(&listener, move || {
        agent
            .get(&format!("https://localhost:{port}/status"))
            .call()
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_string().map_err(|e| e.to_string()))
    });
    assert_eq!(answer.as_deref(), Ok("GET /status"));

    let mut plain = connect(listener.local_addr());
    plain.write_all(get("/status").as_bytes()).expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "plain HTTP was answered");
    assert!(listener.next(Duration::from_millis(100)).is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unusable_certificate_files_fail_at_start_naming_the_file() {
    let dir = temp_dir("badtls");
    let (files, _) = self_signed(&dir);
    let start_with = |tls: TlsFiles| {
        let mut config = config();
        config.tls = Some(tls);
        Listener::start(config).err().expect("start fails")
    };

    let missing = dir.join("missing.pem");
    let error = start_with(TlsFiles {
        cert_pem: missing.clone(),
        key_pem: files.key_pem.clone(),
    });
    assert!(matches!(error, ListenerError::ReadPem { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*missing.to_string_lossy()),
        "{error}"
    );

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let error = start_with(TlsFiles {
        cert_pem: garbage.clone(),
        key_pem: files.key_pem.clone(),
    });
    assert!(matches!(error, ListenerError::EmptyPem { .. }), "{error:?}");
    assert!(error.to_string().contains("garbage.pem"), "{error}");

    // A key that is not the certificate's.
    let (other, _) = self_signed(&temp_dir("othertls"));
    let error = start_with(TlsFiles {
        cert_pem: files.cert_pem.clone(),
        key_pem: other.key_pem.clone(),
    });
    assert!(matches!(error, ListenerError::Tls { .. }), "{error:?}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other.cert_pem.parent().expect("dir"));
}

#[test]
fn bad_addresses_and_settings_fail_at_start() {
    let start_on = |listen: &str| {
        let mut config = config();
        config.listen = listen.to_owned();
        Listener::start(config).err().expect("start fails")
    };
    let error = start_on("not an address");
    assert!(matches!(error, ListenerError::Address { .. }), "{error:?}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let error = start_on(&taken.local_addr().expect("addr").to_string());
    assert!(matches!(error, ListenerError::Bind { .. }), "{error:?}");

    let mut zero = config();
    zero.queue_depth = 0;
    zero.answer_timeout = Duration::ZERO;
    let error = Listener::start(zero).err().expect("start fails");
    let text = error.to_string();
    assert!(
        text.contains("queue_depth") && text.contains("answer_timeout"),
        "{text}"
    );
}

#[test]
fn dropping_the_listener_closes_its_port_and_its_connections() {
    let listener = start(config());
    let addr = listener.local_addr();
    let mut open = connect(addr);
    wait_for_stats(&listener, "connection open", |s| s.connections_open == 1);
    drop(listener);
    assert!(closed_by_server(&mut open));
    assert!(TcpStream::connect(addr).is_err());
}

/// Blocked signals show in the thread's `SigBlk` mask in /proc.
#[test]
fn the_network_thread_blocks_every_signal() {
    let listener = start(config());
    let addr = listener.local_addr();
    // Once it has answered, the thread has run and named itself.
    let reply = serving(&listener, move || exchange(&mut connect(addr), &get("/")));
    assert_eq!(reply.expect("reply").status, 200);
    let mut checked = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc") {
        let task = task.expect("task").path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if name.trim() != "procore-http" {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let Some(blocked) = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        else {
            continue;
        };
        for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGUSR1] {
            assert!(
                blocked & (1 << (signal - 1)) != 0,
                "signal {signal} reaches it"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "no procore-http thread found");
    drop(listener);
}
