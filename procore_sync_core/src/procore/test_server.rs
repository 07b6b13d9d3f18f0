//! A tiny HTTP/1.1 server for the client tests: canned replies, recorded requests, and the
//! faults that real networks produce (stalls, truncated bodies, dropped connections, endless
//! bodies). One thread per connection, keep-alive supported.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    /// Path and query as sent, e.g. `/rest/v1.0/companies?page=1`.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Which TCP connection carried it (1-based, in accept order).
    pub connection: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Decoded query (or form body) parameters.
    pub fn params_of(text: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(text.as_bytes())
            .into_owned()
            .collect()
    }

    pub fn query(&self) -> Vec<(String, String)> {
        Recorded::params_of(self.target.split_once('?').map_or("", |(_, q)| q))
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    pub fn form_param(&self, name: &str) -> Option<String> {
        Recorded::params_of(&self.body)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }
}

pub(crate) enum Body {
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
    /// Declares and streams `n` bytes of a JSON array.
    HugeDeclared(u64),
    /// Streams `n` bytes of a JSON array in chunked encoding, no length declared.
    HugeChunked(u64),
    /// Closes the connection without answering.
    Drop,
}

pub(crate) struct Reply {
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
}

type Handler = dyn Fn(&Recorded, &str) -> Reply + Send + Sync;

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Body bytes the server managed to write for streamed replies.
    pub bytes_written: Arc<AtomicU64>,
}

impl TestServer {
    /// Starts a server whose `handler` gets each request and the server's base URL.
    pub fn start(handler: impl Fn(&Recorded, &str) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let addr = listener.local_addr().expect("test server address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bytes_written = Arc::new(AtomicU64::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let base = format!("http://{addr}");
        let connections = Arc::new(AtomicUsize::new(0));
        {
            let requests = Arc::clone(&requests);
            let bytes_written = Arc::clone(&bytes_written);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let connection = connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let requests = Arc::clone(&requests);
                    let bytes_written = Arc::clone(&bytes_written);
                    let handler = Arc::clone(&handler);
                    let base = base.clone();
                    thread::spawn(move || {
                        serve_connection(
                            stream,
                            connection,
                            &*handler,
                            &base,
                            &requests,
                            &bytes_written,
                        )
                    });
                }
            });
        }
        TestServer {
            addr,
            requests,
            bytes_written,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn serve_connection(
    stream: TcpStream,
    connection: usize,
    handler: &Handler,
    base: &str,
    requests: &Mutex<Vec<Recorded>>,
    bytes_written: &AtomicU64,
) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = write_half;
    loop {
        let Some(request) = read_request(&mut reader, connection) else {
            return;
        };
        if let Ok(mut log) = requests.lock() {
            log.push(request.clone());
        }
        let reply = handler(&request, base);
        if !write_reply(&mut writer, reply, bytes_written) {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>, connection: usize) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        connection,
    })
}

/// Writes the reply; false when the connection must close afterwards.
fn write_reply(w: &mut TcpStream, reply: Reply, bytes_written: &AtomicU64) -> bool {
    let mut head = format!("HTTP/1.1 {} Canned\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let length_header = |n: u64| format!("Content-Length: {n}\r\n\r\n");
    let result: std::io::Result<bool> = (|| match reply.body {
        Body::Full(body) => {
            w.write_all((head + &length_header(body.len() as u64)).as_bytes())?;
            w.write_all(&body)?;
            Ok(true)
        }
        Body::Truncated { declared, sent } => {
            w.write_all((head + &length_header(declared as u64)).as_bytes())?;
            w.write_all(&sent)?;
            w.flush()?;
            Ok(false)
        }
        Body::StallMidway(delay, body) => {
            w.write_all((head + &length_header(body.len() as u64)).as_bytes())?;
            w.flush()?;
            thread::sleep(delay);
            w.write_all(&body)?;
            Ok(true)
        }
        Body::StallBeforeHead(delay, body) => {
            thread::sleep(delay);
            w.write_all((head + &length_header(body.len() as u64)).as_bytes())?;
            w.write_all(&body)?;
            Ok(true)
        }
        Body::HugeDeclared(n) => {
            w.write_all(
                (head + "Content-Type: application/json\r\n" + &length_header(n)).as_bytes(),
            )?;
            stream_array(w, n, false, bytes_written)?;
            Ok(false)
        }
        Body::HugeChunked(n) => {
            w.write_all(
                (head + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .as_bytes(),
            )?;
            stream_array(w, n, true, bytes_written)?;
            Ok(false)
        }
        Body::Drop => Ok(false),
    })();
    result.unwrap_or(false)
}

/// `[` followed by spaces: valid JSON prefix of any length, produced without holding it.
fn stream_array(
    w: &mut TcpStream,
    n: u64,
    chunked: bool,
    written: &AtomicU64,
) -> std::io::Result<()> {
    let block = vec![b' '; 64 * 1024];
    let mut left = n;
    let mut first = true;
    while left > 0 {
        let size = left.min(block.len() as u64) as usize;
        let mut data = block[..size].to_vec();
        if first {
            data[0] = b'[';
            first = false;
        }
        if chunked {
            w.write_all(format!("{size:x}\r\n").as_bytes())?;
            w.write_all(&data)?;
            w.write_all(b"\r\n")?;
        } else {
            w.write_all(&data)?;
        }
        written.fetch_add(size as u64, Ordering::SeqCst);
        left -= size as u64;
    }
    if chunked {
        w.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}
