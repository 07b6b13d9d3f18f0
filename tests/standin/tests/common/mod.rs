//! The HTTP client and server start-up every stand-in integration test shares.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use procore_standin::{start, Options, Running, World};
use serde_json::Value;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A keep-alive HTTP/1.1 client, enough for the stand-in.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    pub connections_opened: usize,
}

impl Client {
    pub fn new(server: &Running) -> Client {
        Client {
            addr: server.addr,
            conn: None,
            connections_opened: 0,
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            self.conn = Some(BufReader::new(stream));
            self.connections_opened += 1;
        }
        let conn = self.conn.as_mut().unwrap();
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let stream = conn.get_mut();
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let reply = read_reply(conn);
        if reply.header("connection") == Some("close") {
            self.conn = None;
        }
        reply
    }

    pub fn get(&mut self, target: &str, token: &str, company: Option<u64>) -> Reply {
        let auth = format!("Bearer {token}");
        let company = company.map(|c| c.to_string());
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(c) = &company {
            headers.push(("Procore-Company-Id", c.as_str()));
        }
        self.send("GET", target, &headers, b"")
    }

    pub fn form(&mut self, target: &str, form: &str) -> Reply {
        self.send(
            "POST",
            target,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
    }

    pub fn admin(&mut self, method: &str, route: &str, body: Value) -> Value {
        let reply = self.send(
            method,
            &format!("/__admin/{route}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(
            reply.status,
            200,
            "{route}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }
}

pub fn read_reply<R: BufRead>(conn: &mut R) -> Reply {
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let mut body = vec![0; length];
    conn.read_exact(&mut body).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn server(world: World) -> Running {
    start(Options {
        world,
        ..Options::default()
    })
    .unwrap()
}
