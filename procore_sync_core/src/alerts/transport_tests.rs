//! The transports against real servers on 127.0.0.1: aiosmtpd, a real SMTP server from
//! PyPI run as a child process (plain, STARTTLS and implicit TLS, with and without a login),
//! for email; a one-request `TcpListener` for the webhook.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta};
use serde_json::Value;

use super::*;
use crate::procore::Secret;

/// The aiosmtpd these tests were written against; `.ci/install-prerequisites` installs it.
const AIOSMTPD: &str = "aiosmtpd==1.4.6";
const SERVER_SCRIPT: &str = include_str!("smtp_test_server.py");
const TIMEOUT: Duration = Duration::from_secs(10);
const FROM: &str = "procore_sync <alerts@example.com>";
const SECRETS: [&str; 3] = ["abc123", "rt-SECRET", "pw-SECRET"];

fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "procore_sync_alerts_{}_{}_{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// No silent skip: without aiosmtpd the email tests fail and say how to get it.
fn require_aiosmtpd() {
    let installed = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        installed,
        "the alert email tests need python3 with aiosmtpd, a real SMTP server: install it \
         with `python3 -m pip install {AIOSMTPD}` (or run .ci/install-prerequisites)"
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    StartTls,
    Smtps,
}

struct SmtpServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpServer {
    fn start(mode: Mode, login: Option<(&str, &str)>, tls: Option<&TlsFiles>) -> SmtpServer {
        require_aiosmtpd();
        let dir = temp_dir("smtp");
        let script = dir.join("smtp_test_server.py");
        fs::write(&script, SERVER_SCRIPT).expect("write server script");
        let stderr = fs::File::create(dir.join("stderr")).expect("stderr file");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .arg("--out")
            .arg(dir.join("mail.jsonl"))
            .arg("--mode")
            .arg(match mode {
                Mode::Plain => "plain",
                Mode::StartTls => "starttls",
                Mode::Smtps => "smtps",
            });
        if let Some(files) = tls {
            command
                .arg("--cert")
                .arg(&files.cert)
                .arg("--key")
                .arg(&files.key);
        }
        if let Some((user, password)) = login {
            command.args(["--user", user, "--password", password]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start python3");

        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_default();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok());
        let server = SmtpServer {
            child,
            port: port.unwrap_or_default(),
            dir,
        };
        assert!(
            port.is_some(),
            "aiosmtpd did not start: {line:?}; its stderr: {}",
            fs::read_to_string(server.dir.join("stderr")).unwrap_or_default()
        );
        server
    }

    /// The messages the server accepted, as the script recorded them.
    fn received(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.join("mail.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// A self-signed certificate for localhost and 127.0.0.1, as PEM files in `dir`.
fn self_signed(dir: &Path) -> TlsFiles {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    fs::write(&files.cert, made.cert.pem()).expect("write cert");
    fs::write(&files.key, made.signing_key.serialize_pem()).expect("write key");
    files
}

/// A failure alert whose error carries a bearer token, a refresh token and a URL password,
/// as its message.
fn message(user_id: &str) -> Message {
    let created_at = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let pending = [PendingAlert {
        id: 7,
        alert: Alert::UserFailing {
            user_id: user_id.into(),
            error: "Procore answered 400: sent Bearer abc123 and refresh_token=rt-SECRET via \
                    https://proxy:pw-SECRET@proxy.example.com"
                .into(),
            next_attempt: Some(created_at + TimeDelta::minutes(10)),
        },
        created_at,
    }];
    let mut messages = compose(&pending, created_at + TimeDelta::minutes(1), 5);
    assert_eq!(messages.len(), 1);
    messages.remove(0)
}

fn recipients() -> Vec<String> {
    vec!["ops@example.com".into(), "dba@example.com".into()]
}

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[test]
fn plain_smtp_delivers_the_alert_to_every_recipient_without_secrets() {
    let server = SmtpServer::start(Mode::Plain, None, None);
    let url = Secret::new(format!("smtp://127.0.0.1:{}", server.port));
    let message = message("u-42");
    send_email(&url, FROM, &recipients(), &message, TIMEOUT, None).expect("sent");

    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let mail = &received[0];
    assert_eq!(mail["mail_from"], "alerts@example.com");
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["ops@example.com", "dba@example.com"])
    );
    assert_eq!(mail["subject"], "procore_sync: syncing user u-42 fails");
    assert_eq!(mail["to"], "ops@example.com, dba@example.com");
    assert_eq!(mail["auto_submitted"], "auto-generated");
    assert_eq!(mail["tls"], false);
    let body = mail["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("could not sync user u-42: Procore answered 400"),
        "{body}"
    );
    assert!(body.contains("Bearer [redacted]"), "{body}");
    assert!(
        body.contains("procore_sync_user_status WHERE user_id = 'u-42'"),
        "{body}"
    );
    assert_no_secret(&mail.to_string());
}

#[test]
fn plain_smtp_logs_in_to_a_local_relay_and_a_wrong_password_is_named_as_such() {
    let server = SmtpServer::start(Mode::Plain, Some(("alerts", "pw-SECRET-1")), None);
    let url = |password: &str| {
        Secret::new(format!(
            "smtp://alerts:{password}@127.0.0.1:{}",
            server.port
        ))
    };
    let message = message("u-1");
    send_email(
        &url("pw-SECRET-1"),
        FROM,
        &recipients(),
        &message,
        TIMEOUT,
        None,
    )
    .expect("sent with the right password");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["login"], "alerts");

    let error = send_email(
        &url("pw-SECRET-2"),
        FROM,
        &recipients(),
        &message,
        TIMEOUT,
        None,
    )
    .expect_err("refused");
    assert!(
        matches!(error, AlertError::SmtpLoginRefused { code: 535, .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert_eq!(
        text,
        format!(
            "SMTP server 127.0.0.1:{} refused the login (535): check the user and password \
             in procore_sync.smtp_url",
            server.port
        )
    );
    assert!(!error.is_retryable());
    assert_eq!(server.received().len(), 1);
}

#[test]
fn starttls_with_a_login_and_a_custom_ca() {
    let dir = temp_dir("starttls");
    let tls = self_signed(&dir);
    let server = SmtpServer::start(Mode::StartTls, Some(("alerts", "pw-SECRET")), Some(&tls));
    let message = message("u-2");
    for url in [
        format!(
            "smtp://alerts:pw-SECRET@127.0.0.1:{}?tls=required",
            server.port
        ),
        format!("smtp+starttls://alerts:pw-SECRET@127.0.0.1:{}", server.port),
    ] {
        send_email(
            &Secret::new(url),
            FROM,
            &recipients(),
            &message,
            TIMEOUT,
            Some(&tls.cert),
        )
        .expect("sent over STARTTLS");
    }
    let received = server.received();
    assert_eq!(received.len(), 2);
    for mail in &received {
        assert_eq!(mail["tls"], true);
        assert_eq!(mail["login"], "alerts");
        assert_eq!(mail["subject"], "procore_sync: syncing user u-2 fails");
    }

    // Without the CA the certificate is not trusted, and nothing is sent.
    let url = Secret::new(format!(
        "smtp://alerts:pw-SECRET@127.0.0.1:{}?tls=required",
        server.port
    ));
    let error = send_email(&url, FROM, &recipients(), &message, TIMEOUT, None)
        .expect_err("untrusted certificate");
    assert!(matches!(error, AlertError::SmtpTls { .. }), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_no_secret(&error.to_string());
    assert_eq!(server.received().len(), 2);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn starttls_required_refuses_a_server_that_does_not_offer_it() {
    let server = SmtpServer::start(Mode::Plain, None, None);
    let url = Secret::new(format!("smtp://127.0.0.1:{}?tls=required", server.port));
    let error = send_email(&url, FROM, &recipients(), &message("u-3"), TIMEOUT, None)
        .expect_err("no STARTTLS offered");
    assert!(error.to_string().contains("STARTTLS"), "{error}");
    assert!(server.received().is_empty());
}

#[test]
fn implicit_tls_with_a_login_and_a_custom_ca() {
    let dir = temp_dir("smtps");
    let tls = self_signed(&dir);
    let server = SmtpServer::start(Mode::Smtps, Some(("alerts", "pw-SECRET")), Some(&tls));
    let url = Secret::new(format!(
        "smtps://alerts:pw-SECRET@127.0.0.1:{}",
        server.port
    ));
    send_email(
        &url,
        FROM,
        &recipients(),
        &message("u-4"),
        TIMEOUT,
        Some(&tls.cert),
    )
    .expect("sent over implicit TLS");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["tls"], true);
    assert_eq!(received[0]["login"], "alerts");
    let _ = fs::remove_dir_all(&dir);
}

/// A port that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn a_server_that_is_down_fails_fast_and_says_so() {
    let port = closed_port();
    let url = Secret::new(format!("smtps://alerts:pw-SECRET@127.0.0.1:{port}"));
    let started = Instant::now();
    let error = send_email(&url, FROM, &recipients(), &message("u-5"), TIMEOUT, None)
        .expect_err("nothing listens");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, AlertError::SmtpConnection { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("could not talk to SMTP server 127.0.0.1:{port}: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert_no_secret(&text);
    assert!(error.is_retryable());
}

#[test]
fn a_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accepts and says nothing (no 220 greeting).
    let holder = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        thread::sleep(Duration::from_secs(2));
        drop(stream);
    });
    let url = Secret::new(format!("smtp://127.0.0.1:{port}"));
    let started = Instant::now();
    let error = send_email(
        &url,
        FROM,
        &recipients(),
        &message("u-6"),
        Duration::from_secs(1),
        None,
    )
    .expect_err("no greeting");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, AlertError::SmtpTimeout { seconds: 1, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    let _ = holder.join();
}

/// One HTTP request as the test's webhook saw it.
struct Request {
    head: String,
    body: Vec<u8>,
}

/// Serves one request on a fresh port with `status` and `body`; the URL carries a secret
/// path, as a Slack webhook URL does.
fn one_request_server(
    status: &'static str,
    body: &'static str,
) -> (String, thread::JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let request = read_request(&mut stream);
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).expect("reply");
        request
    });
    (
        format!("http://127.0.0.1:{port}/services/T000/B000/hook-SECRET"),
        handle,
    )
}

fn read_request(stream: &mut TcpStream) -> Request {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut byte).expect("read head");
        assert!(read == 1, "connection closed in the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).expect("read body");
    Request { head, body }
}

#[test]
fn webhook_posts_the_message_json_with_its_text() {
    let (url, server) = one_request_server("200 OK", "ok");
    let message = message("u-7");
    send_webhook(&Secret::new(url), &message, TIMEOUT).expect("posted");
    let request = server.join().expect("server thread");
    assert!(
        request
            .head
            .starts_with("POST /services/T000/B000/hook-SECRET HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert!(
        request
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        request.head
    );
    let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(body, message.json);
    let text = body["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("procore_sync: syncing user u-7 fails\n\n"),
        "{text}"
    );
    assert_eq!(body["kind"], "user_failing");
    assert_eq!(body["user_id"], "u-7");
    assert_no_secret(&body.to_string());
}

#[test]
fn webhook_errors_name_the_status_never_the_url() {
    // A server that echoes the URL it was called on.
    let (url, server) = one_request_server(
        "500 Internal Server Error",
        "no such hook: /services/T000/B000/hook-SECRET",
    );
    let error = send_webhook(&Secret::new(url), &message("u-8"), TIMEOUT).expect_err("500");
    let _ = server.join();
    assert_eq!(
        error.to_string(),
        "webhook answered 500: no such hook: [redacted]"
    );
    assert!(error.is_retryable());

    let (url, server) = one_request_server("404 Not Found", "no_service");
    let error = send_webhook(&Secret::new(url), &message("u-8"), TIMEOUT).expect_err("404");
    let _ = server.join();
    assert_eq!(error.to_string(), "webhook answered 404: no_service");
    assert!(!error.is_retryable());

    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/services/T000/B000/hook-SECRET");
    let started = Instant::now();
    let error = send_webhook(&Secret::new(url), &message("u-8"), TIMEOUT).expect_err("down");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(error, AlertError::WebhookConnection { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with("could not reach the webhook at 127.0.0.1: "),
        "{text}"
    );
    assert!(
        !text.contains("hook-SECRET") && !text.contains("/services"),
        "{text}"
    );
    assert!(error.is_retryable());

    let error = send_webhook(
        &Secret::new("ftp://example.com/x"),
        &message("u-8"),
        TIMEOUT,
    )
    .expect_err("not http");
    assert_eq!(
        error.to_string(),
        "alert settings: procore_sync.alert_webhook_url: scheme 'ftp' is not http or https"
    );
}

#[test]
fn webhook_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let holder = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        thread::sleep(Duration::from_secs(2));
        drop(stream);
    });
    let url = format!("http://127.0.0.1:{port}/services/T000/B000/hook-SECRET");
    let started = Instant::now();
    let error = send_webhook(&Secret::new(url), &message("u-9"), Duration::from_secs(1))
        .expect_err("no answer");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(error, AlertError::WebhookTimeout { seconds: 1 }),
        "{error:?}"
    );
    let _ = holder.join();
}
