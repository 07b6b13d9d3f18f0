//! Hand-written HTTP/1.1: request heads and Content-Length bodies in, response heads out
//! (the bodies go out through `faults::write_wire`).
//!
//! Written by hand rather than with a server library so the fault injector can stop
//! anywhere in a response (after the headers, half-way through the body, before a byte).
//! Query strings, forms and percent-escapes are no part of that: rust-url's crates do them.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::{ServerConnection, StreamOwned};

/// Beyond this a request head is abuse, not a client we are meant to imitate.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// World JSON and fault rules are small; anything bigger is a mistake worth rejecting early.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target exactly as sent (path and query, still percent-encoded).
    pub target: String,
    pub path: String,
    /// Raw query string without the `?`.
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_form(&self.query)
    }

    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            Some(token.trim())
        } else {
            None
        }
    }

    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or went quiet) between requests: not an error worth answering.
    Closed,
    /// A request we refuse; answered with this status, then the connection is closed.
    Refused(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Closed
    }
}

/// Reads the request line and headers; the body is read separately so that a
/// `100 Continue` can be sent in between (curl waits a second for it otherwise).
pub fn read_head<R: BufRead>(reader: &mut R) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD_BYTES;
    let mut line = Vec::new();
    // RFC 9112 asks servers to ignore empty lines before the request line.
    let request_line = loop {
        line.clear();
        read_line(reader, &mut line, &mut budget)?;
        let text = trim_eol(&line);
        if !text.is_empty() {
            break String::from_utf8_lossy(text).into_owned();
        }
    };
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && t.starts_with('/') => (m, t, v),
        _ => return Err(ReadError::Refused(400, "malformed request line")),
    };
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => {
            return Err(ReadError::Refused(
                505,
                "only HTTP/1.0 and HTTP/1.1 are spoken here",
            ))
        }
    };

    let mut headers = Vec::new();
    loop {
        line.clear();
        read_line(reader, &mut line, &mut budget)?;
        let text = trim_eol(&line);
        if text.is_empty() {
            break;
        }
        if text[0] == b' ' || text[0] == b'\t' {
            return Err(ReadError::Refused(400, "obsolete header folding"));
        }
        let text = String::from_utf8_lossy(text);
        let Some((name, value)) = text.split_once(':') else {
            return Err(ReadError::Refused(400, "malformed header line"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }

    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        path: String::new(),
        query: String::new(),
        headers,
        body: Vec::new(),
        keep_alive,
    };
    match target.split_once('?') {
        Some((p, q)) => {
            request.path = p.to_string();
            request.query = q.to_string();
        }
        None => request.path = target.to_string(),
    }
    if let Some(connection) = request.header("connection") {
        let connection = connection.to_ascii_lowercase();
        if connection.split(',').any(|t| t.trim() == "close") {
            keep_alive = false;
        } else if connection.split(',').any(|t| t.trim() == "keep-alive") {
            keep_alive = true;
        }
    }
    request.keep_alive = keep_alive;
    Ok(request)
}

/// Length of the body the head announces (chunked bodies are refused: no client of
/// the stand-in sends them).
pub fn body_length(request: &Request) -> Result<usize, ReadError> {
    if let Some(te) = request.header("transfer-encoding") {
        if !te.eq_ignore_ascii_case("identity") {
            return Err(ReadError::Refused(
                501,
                "chunked request bodies are not supported; send Content-Length",
            ));
        }
    }
    let Some(length) = request.header("content-length") else {
        return Ok(0);
    };
    let length: usize = length
        .parse()
        .map_err(|_| ReadError::Refused(400, "invalid Content-Length"))?;
    if length > MAX_BODY_BYTES {
        return Err(ReadError::Refused(413, "request body too large"));
    }
    Ok(length)
}

pub fn read_body<R: Read>(reader: &mut R, length: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// A connection requests are read from and responses written to, plain or TLS.
pub trait Transport: Read + Write {
    /// `graceful` ends TLS with close_notify; otherwise the peer sees the stream cut.
    fn close(&mut self, graceful: bool);
}

impl Transport for TcpStream {
    fn close(&mut self, graceful: bool) {
        let _ = self.flush();
        let _ = self.shutdown(if graceful {
            Shutdown::Write
        } else {
            Shutdown::Both
        });
    }
}

impl Transport for StreamOwned<ServerConnection, TcpStream> {
    fn close(&mut self, graceful: bool) {
        if graceful {
            self.conn.send_close_notify();
            let _ = self.conn.complete_io(&mut self.sock);
        }
        let _ = self.sock.shutdown(if graceful {
            Shutdown::Write
        } else {
            Shutdown::Both
        });
    }
}

/// The next whole request on a connection: head, `100 Continue` when the client waits
/// for it, body. A request refused on the way is answered here and the connection
/// closed; `None` means the connection is done.
pub fn next_request<T: Transport>(reader: &mut BufReader<T>) -> Option<Request> {
    let result = (|| {
        let mut request = read_head(reader)?;
        let length = body_length(&request)?;
        if length > 0 && request.expects_continue() {
            let conn = reader.get_mut();
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            conn.flush()?;
        }
        request.body = read_body(reader, length)?;
        Ok(request)
    })();
    match result {
        Ok(request) => Some(request),
        Err(error) => {
            refuse(reader.get_mut(), error);
            None
        }
    }
}

/// Answers a refused request and closes; a connection that merely ended is left be.
pub fn refuse<T: Transport>(conn: &mut T, error: ReadError) {
    if let ReadError::Refused(status, message) = error {
        let response = Response::errors(status, message);
        let mut bytes = response.head_bytes(response.body.len() as u64, true);
        bytes.extend_from_slice(&response.body);
        let _ = conn.write_all(&bytes);
        conn.close(true);
    }
}

fn read_line<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    budget: &mut usize,
) -> Result<(), ReadError> {
    let n = reader.take(*budget as u64).read_until(b'\n', line)?;
    if n == 0 {
        if *budget == 0 {
            return Err(ReadError::Refused(431, "request head too large"));
        }
        return Err(ReadError::Closed);
    }
    *budget -= n;
    if line.last() != Some(&b'\n') {
        if *budget == 0 {
            return Err(ReadError::Refused(431, "request head too large"));
        }
        return Err(ReadError::Closed);
    }
    Ok(())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Decodes `%XX` escapes (and `+` as space in form data); invalid escapes stay literal.
/// The whole string is decoded, `&` and `=` included (a target, a query for the log);
/// `parse_form` is what splits a form into pairs.
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let s = if plus_as_space {
        // As `form_urlencoded` does: `+` is a space, `%2B` a plus.
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// `application/x-www-form-urlencoded` (also the query string).
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes()).into_owned().collect()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body,
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response::new(status, "application/json; charset=utf-8", body)
    }

    /// `{"errors": message}`, the shape Procore's API uses for 400/403/404.
    pub fn errors(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "errors": message }))
    }

    /// `{"error", "error_description"}`, the OAuth error shape.
    pub fn oauth_error(status: u16, error: &str, description: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "error": error, "error_description": description }),
        )
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Response {
        self.headers.extend(headers);
        self
    }

    /// Status line and headers, announcing `content_length` bytes of body.
    pub fn head_bytes(&self, content_length: u64, close: bool) -> Vec<u8> {
        self.head_framed(&format!("Content-Length: {content_length}\r\n"), close)
    }

    /// Status line and headers of a body sent in chunks, its length never announced.
    pub fn chunked_head_bytes(&self, close: bool) -> Vec<u8> {
        self.head_framed("Transfer-Encoding: chunked\r\n", close)
    }

    fn head_framed(&self, framing: &str, close: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str(framing);
        head.push_str(if close {
            "Connection: close\r\n"
        } else {
            "Connection: keep-alive\r\n"
        });
        head.push_str("\r\n");
        head.into_bytes()
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read(raw: &str) -> Result<Request, ReadError> {
        let mut cursor = Cursor::new(raw.as_bytes().to_vec());
        let mut request = read_head(&mut cursor)?;
        let length = body_length(&request)?;
        request.body = read_body(&mut cursor, length)?;
        Ok(request)
    }

    #[test]
    fn parses_a_request_with_query_headers_and_body() {
        let request = read(
            "\r\nPOST /oauth/token?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nAuthorization: Bearer abc\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/oauth/token");
        assert_eq!(request.query, "x=1");
        assert_eq!(request.header("HOST"), Some("h"));
        assert_eq!(request.bearer_token(), Some("abc"));
        assert_eq!(request.body, b"hello");
        assert!(request.keep_alive);
    }

    #[test]
    fn connection_close_and_http10_end_keep_alive() {
        assert!(
            !read("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!read("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            read("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn refuses_bad_requests_instead_of_panicking() {
        assert!(matches!(
            read("garbage\r\n\r\n"),
            Err(ReadError::Refused(400, _))
        ));
        assert!(matches!(
            read("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(ReadError::Refused(400, _))
        ));
        assert!(matches!(
            read("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ReadError::Refused(501, _))
        ));
        let huge = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(read(&huge), Err(ReadError::Refused(431, _))));
        assert!(matches!(read(""), Err(ReadError::Closed)));
        assert!(matches!(
            read("GET / HTTP/1.1\r\nHost"),
            Err(ReadError::Closed)
        ));
    }

    #[test]
    fn decodes_forms_and_percent_escapes() {
        let pairs =
            parse_form("filters%5Bupdated_at%5D=2026-01-01T00%3A00%3A00Z...x&a=b+c&bad=%zz%");
        assert_eq!(pairs[0].0, "filters[updated_at]");
        assert_eq!(pairs[0].1, "2026-01-01T00:00:00Z...x");
        assert_eq!(pairs[1].1, "b c");
        assert_eq!(pairs[2].1, "%zz%");
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(percent_decode(&percent_encode("x=&?é"), false), "x=&?é");
    }

    #[test]
    fn form_decoding_keeps_the_rules_of_the_hand_written_decoder() {
        let pairs = parse_form("a&&b=&=c&k=v=w&plus=1+1%2B1");
        let expected = [
            ("a", ""),
            ("b", ""),
            ("", "c"),
            ("k", "v=w"),
            ("plus", "1 1+1"),
        ];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(percent_decode("a+b%2B", true), "a b+");
        assert_eq!(percent_decode("a+b%2B", false), "a+b+");
        assert_eq!(percent_decode("x=1&y=%26%3D", true), "x=1&y=&=");
        assert_eq!(percent_decode("%4", false), "%4");
        assert_eq!(percent_decode("%e9t%C3%A9", false), "\u{FFFD}t\u{e9}");
        assert_eq!(percent_encode("-._~*+ "), "-._~%2A%2B%20");
    }
}
