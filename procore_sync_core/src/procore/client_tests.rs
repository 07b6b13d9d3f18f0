//! The client against the stand-in's scripted server: canned replies and byte-level faults.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use procore_standin::scripted::{Body, Recorded, Reply, ScriptedServer};

use super::{Client, ClientConfig, Page, PageRequest, ProcoreError, Secret};

const TOKEN: &str = "tok_abc123XYZ";
const SECRET: &str = "cs_s3cr3t/value+1";
const REFRESH: &str = "rt_refresh987";

fn config(base: &str) -> ClientConfig {
    let mut c = ClientConfig::new(base, base, "client-1", Secret::new(SECRET));
    c.allow_http = true;
    c.timeout = Duration::from_secs(5);
    c.user_agent = "procore_sync-test".into();
    c
}

fn client_for(server: &ScriptedServer) -> Client {
    Client::new(config(&server.url())).expect("client")
}

fn token() -> Secret {
    Secret::new(TOKEN)
}

fn first<'a>(path: &'a str) -> PageRequest<'a> {
    PageRequest::First {
        path,
        query: &[],
        per_page: None,
        records_key: None,
    }
}

fn list(server: &ScriptedServer, path: &str) -> Result<Page, ProcoreError> {
    client_for(server).list_page(&token(), Some(7), first(path))
}

fn assert_clean(e: &ProcoreError) {
    for shown in [e.to_string(), format!("{e:?}")] {
        for secret in [TOKEN, SECRET, REFRESH, "cs_s3cr3t%2Fvalue%2B1"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(
            !shown.contains('\n') && !shown.contains('\r'),
            "multi-line: {shown}"
        );
    }
}

fn rate_headers(reply: Reply, remaining: u32) -> Reply {
    reply
        .header("X-Rate-Limit-Limit", "25")
        .header("X-Rate-Limit-Remaining", &remaining.to_string())
        .header("X-Rate-Limit-Reset", "1767225610")
}

// ---- requests and pagination ----

#[test]
fn sends_bearer_company_accept_and_query() {
    let server = ScriptedServer::start(|_, _| Reply::json(200, "[]"));
    let client = client_for(&server);
    let query = vec![super::pagination::updated_at_filter(
        DateTime::from_timestamp(1_767_225_600, 0).expect("time"),
        DateTime::from_timestamp(1_767_312_000, 0).expect("time"),
    )];
    let req = PageRequest::First {
        path: "/rest/v1.0/projects?company_id=12",
        query: &query,
        per_page: Some(500),
        records_key: None,
    };
    client.list_page(&token(), Some(12), req).expect("page");
    client
        .list_page(&token(), None, first("/rest/v1.0/companies"))
        .expect("page");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let r = &reqs[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path(), "/rest/v1.0/projects");
    assert_eq!(r.header("Authorization"), Some("Bearer tok_abc123XYZ"));
    assert_eq!(r.header("Procore-Company-Id"), Some("12"));
    assert_eq!(r.header("Accept"), Some("application/json"));
    assert_eq!(r.header("User-Agent"), Some("procore_sync-test"));
    assert_eq!(
        r.query(),
        vec![
            ("company_id".to_owned(), "12".to_owned()),
            (
                "filters[updated_at]".to_owned(),
                "2026-01-01T00:00:00Z...2026-01-02T00:00:00Z".to_owned()
            ),
            ("page".to_owned(), "1".to_owned()),
            ("per_page".to_owned(), "500".to_owned()),
        ]
    );
    assert_eq!(reqs[1].header("Procore-Company-Id"), None);
    assert_eq!(reqs[1].target, "/rest/v1.0/companies");
}

/// Serves 7 records 3 per page with Procore-style headers and absolute Link URLs.
fn paged(r: &Recorded, base: &str) -> Reply {
    let page: u64 = r
        .query_param("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let per_page: u64 = r
        .query_param("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(3);
    let total = 7u64;
    let last = total.div_ceil(per_page);
    let ids: Vec<String> = ((page - 1) * per_page + 1..=(page * per_page).min(total))
        .map(|id| format!(r#"{{"id":{id},"name":"r{id}"}}"#))
        .collect();
    let link = |p: u64, rel: &str| {
        format!(
            "<{base}{}?page={p}&per_page={per_page}>; rel=\"{rel}\"",
            r.path()
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    links.push(link(last, "last"));
    if page < last {
        links.push(link(page + 1, "next"));
    }
    rate_headers(Reply::json(200, &format!("[{}]", ids.join(","))), 20)
        .header("Total", &total.to_string())
        .header("Per-Page", &per_page.to_string())
        .header("Link", &links.join(", "))
}

#[test]
fn follows_next_links_to_the_end_on_one_connection() {
    let server = ScriptedServer::start(paged);
    let client = client_for(&server);
    let mut page = client
        .list_page(
            &token(),
            Some(7),
            PageRequest::First {
                path: "/rest/v1.0/projects/5/rfis",
                query: &[],
                per_page: Some(3),
                records_key: None,
            },
        )
        .expect("page 1");
    let mut ids = Vec::new();
    let mut pages = 1;
    loop {
        assert_eq!(page.total, Some(7));
        assert_eq!(page.rate_limit.map(|rl| rl.remaining), Some(20));
        ids.extend(page.records.iter().filter_map(|r| r["id"].as_i64()));
        let Some(next) = page.next_url.clone() else {
            break;
        };
        page = client
            .list_page(&token(), Some(7), PageRequest::Next { url: &next })
            .expect("next page");
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6, 7]);
    let reqs = server.requests();
    assert!(reqs
        .iter()
        .all(|r| r.header("Procore-Company-Id") == Some("7")));
    assert!(reqs
        .iter()
        .all(|r| r.header("Authorization") == Some("Bearer tok_abc123XYZ")));
    assert!(
        reqs.iter().all(|r| r.connection == 1),
        "connections were not reused"
    );
}

#[test]
fn unpaginated_list_has_no_next() {
    let server = ScriptedServer::start(|_, _| Reply::json(200, r#"[{"id":1},{"id":2}]"#));
    let page = list(&server, "/rest/v1.0/companies").expect("page");
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.next_url, None);
    assert_eq!(page.total, None);
    assert_eq!(page.rate_limit, None);
}

#[test]
fn relative_next_link_is_resolved() {
    let server = ScriptedServer::start(|r, _| {
        if r.query_param("page").as_deref() == Some("2") {
            Reply::json(200, r#"[{"id":2}]"#)
        } else {
            Reply::json(200, r#"[{"id":1}]"#).header("Link", r#"</rest/v1.0/x?page=2>; rel="next""#)
        }
    });
    let client = client_for(&server);
    let page = client
        .list_page(&token(), None, first("/rest/v1.0/x"))
        .expect("page");
    let next = page.next_url.expect("next");
    assert_eq!(next, format!("{}/rest/v1.0/x?page=2", server.url()));
    let page = client
        .list_page(&token(), None, PageRequest::Next { url: &next })
        .expect("page 2");
    assert_eq!(page.records[0]["id"], 2);
}

#[test]
fn next_link_to_another_host_is_refused_without_sending() {
    let server = ScriptedServer::start(|_, _| {
        Reply::json(200, r#"[{"id":1}]"#).header(
            "Link",
            r#"<http://127.0.0.2:9/rest/v1.0/x?page=2>; rel="next""#,
        )
    });
    let client = client_for(&server);
    let page = client
        .list_page(&token(), None, first("/rest/v1.0/x"))
        .expect("page");
    let next = page.next_url.expect("next");
    let err = client
        .list_page(&token(), None, PageRequest::Next { url: &next })
        .expect_err("refused");
    assert!(matches!(err, ProcoreError::BadResponse(_)), "{err:?}");
    assert!(err.to_string().contains("http://127.0.0.2:9"), "{err}");
    assert!(!err.is_retryable());
    let other_port = format!(
        "http://127.0.0.1:{}/rest/v1.0/x",
        server.addr.port().wrapping_add(1)
    );
    let err = client
        .list_page(&token(), None, PageRequest::Next { url: &other_port })
        .expect_err("refused");
    assert!(matches!(err, ProcoreError::BadResponse(_)), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

// ---- status mapping ----

#[test]
fn unauthorized_forbidden_not_found() {
    let server = ScriptedServer::start(|r, _| match r.path() {
        "/401" => Reply::json(
            401,
            r#"{"error":"invalid_token","error_description":"expired"}"#,
        ),
        "/403" => rate_headers(
            Reply::json(403, r#"{"errors":"You do not have access to this tool"}"#),
            4,
        ),
        _ => Reply::json(404, r#"{"errors":"Project not found"}"#),
    });
    let client = client_for(&server);
    let (answer, rate_limit) = client.list_page_and_rate_limit(&token(), Some(1), first("/401"));
    let err = answer.expect_err("401");
    assert!(matches!(err, ProcoreError::Unauthorized), "{err:?}");
    assert_eq!(err.http_status(), Some(401));
    assert_eq!(rate_limit, None);

    let (answer, rate_limit) = client.list_page_and_rate_limit(&token(), Some(1), first("/403"));
    let err = answer.expect_err("403");
    match &err {
        ProcoreError::Forbidden(detail) => {
            assert_eq!(detail, "You do not have access to this tool")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rate_limit.map(|rl| rl.remaining),
        Some(4),
        "rate limit of an error response"
    );

    let err = client
        .list_page(&token(), Some(1), first("/404"))
        .expect_err("404");
    assert!(
        matches!(&err, ProcoreError::NotFound(d) if d == "Project not found"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[test]
fn rate_limited_uses_retry_after_then_reset_then_a_minute() {
    let server = ScriptedServer::start(|r, _| {
        let body = "You have surpassed the max number of requests for an hour. Please wait until your limit resets.";
        let reply = Reply::text(429, "text/plain", body);
        match r.path() {
            "/retry-after" => rate_headers(reply, 0).header("Retry-After", "7"),
            "/reset" => rate_headers(reply, 0),
            _ => reply,
        }
    });
    let client = client_for(&server);
    let now = Utc::now();
    let (answer, rate_limit) =
        client.list_page_and_rate_limit(&token(), None, first("/retry-after"));
    let err = answer.expect_err("429");
    let retry_at = err.retry_at().expect("retry_at");
    assert!(matches!(err, ProcoreError::RateLimited { .. }));
    assert!(
        (retry_at - now).num_seconds() >= 6 && (retry_at - now).num_seconds() <= 9,
        "{retry_at}"
    );
    assert!(err.is_retryable());
    assert_eq!(rate_limit.map(|rl| rl.reset_at), Some(1_767_225_610));

    let err = client
        .list_page(&token(), None, first("/reset"))
        .expect_err("429");
    assert_eq!(err.retry_at(), DateTime::from_timestamp(1_767_225_610, 0));

    let err = client
        .list_page(&token(), None, first("/bare"))
        .expect_err("429");
    let wait = (err.retry_at().expect("retry_at") - Utc::now()).num_seconds();
    assert!((58..=60).contains(&wait), "{wait}");
}

#[test]
fn throttled_server_and_client_errors() {
    let server = ScriptedServer::start(|r, _| match r.path() {
        "/503" => Reply::json(503, r#"{"errors":"busy"}"#),
        "/503-retry" => Reply::json(503, r#"{"errors":"busy"}"#).header("Retry-After", "30"),
        "/500" => Reply::text(500, "text/plain", "Internal Server Error"),
        "/502" => Reply::text(
            502,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
        "/302" => Reply::text(302, "text/plain", "")
            .header("Location", "https://elsewhere.example/x?token=abc"),
        _ => Reply::json(422, r#"{"errors":{"filters":["updated_at is invalid"]}}"#),
    });
    let client = client_for(&server);
    let err = client
        .list_page(&token(), None, first("/503"))
        .expect_err("503");
    assert!(
        matches!(err, ProcoreError::Throttled { retry_at: None }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = client
        .list_page(&token(), None, first("/503-retry"))
        .expect_err("503");
    assert!(
        matches!(err, ProcoreError::Throttled { retry_at: Some(_) }),
        "{err:?}"
    );

    let err = client
        .list_page(&token(), None, first("/500"))
        .expect_err("500");
    assert!(
        matches!(&err, ProcoreError::Server { status: 500, detail } if detail == "Internal Server Error"),
        "{err:?}"
    );
    assert!(err.is_retryable());

    let err = client
        .list_page(&token(), None, first("/502"))
        .expect_err("502");
    assert!(
        matches!(&err, ProcoreError::Server { status: 502, detail } if detail == "HTML page (content-type: text/html): 502 Bad Gateway"),
        "{err:?}"
    );

    let err = client
        .list_page(&token(), None, first("/302"))
        .expect_err("302");
    assert!(
        matches!(&err, ProcoreError::Client { status: 302, detail } if detail == "unexpected redirect to https://elsewhere.example"),
        "{err:?}"
    );

    let err = client
        .list_page(&token(), None, first("/422"))
        .expect_err("422");
    assert!(
        matches!(&err, ProcoreError::Client { status: 422, detail } if detail.contains("updated_at is invalid")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(err.http_status(), Some(422));
}

#[test]
fn error_details_are_short_single_lines_without_secrets() {
    let server = ScriptedServer::start(|r, _| {
        let auth = r.header("Authorization").unwrap_or("").to_owned();
        let echo = format!(
            "bad {auth}\r\n\u{1b}[31m secret={SECRET} encoded=cs_s3cr3t%2Fvalue%2B1 {}",
            "x".repeat(1000)
        );
        match r.path() {
            "/403" => Reply::json(403, &serde_json::json!({ "errors": echo }).to_string()),
            "/500" => Reply::text(500, "text/plain", &echo),
            "/400" => Reply::text(400, "text/html", &format!("<p>{echo}</p>")),
            _ => Reply::json(200, &serde_json::json!({ "echo": echo }).to_string()),
        }
    });
    let client = client_for(&server);
    for path in ["/403", "/500", "/400", "/200"] {
        let err = client
            .list_page(&token(), None, first(path))
            .expect_err(path);
        assert_clean(&err);
        let detail = match &err {
            ProcoreError::Forbidden(d)
            | ProcoreError::Server { detail: d, .. }
            | ProcoreError::Client { detail: d, .. } => d.clone(),
            ProcoreError::BadResponse(m) => m.clone(),
            other => panic!("{other:?}"),
        };
        assert!(detail.contains("[redacted]"), "{detail}");
        if !matches!(err, ProcoreError::BadResponse(_)) {
            assert!(
                detail.chars().count() <= 200,
                "{} chars: {detail}",
                detail.chars().count()
            );
        }
        assert!(!detail.chars().any(char::is_control), "{detail:?}");
    }
}

// ---- bodies ----

#[test]
fn bad_bodies_are_bad_responses_naming_the_problem() {
    let server = ScriptedServer::start(|r, _| match r.path() {
        "/malformed" => Reply::json(200, r#"{"id": 1, "name": "#),
        "/html" => Reply::text(
            200,
            "text/html",
            "<html><body><h1>Sign in</h1></body></html>",
        ),
        "/empty" => Reply::json(200, ""),
        "/object" => Reply::json(200, r#"{"data": "unexpected"}"#),
        "/scalars" => Reply::json(200, r#"[{"id":1}, 2]"#),
        _ => Reply::new(
            200,
            Body::Truncated {
                declared: 100,
                sent: br#"[{"id":1},{"id""#.to_vec(),
            },
        )
        .header("Content-Type", "application/json"),
    });
    let client = client_for(&server);
    let cases = [
        (
            "/malformed",
            "malformed JSON (content-type: application/json; charset=utf-8",
            false,
        ),
        (
            "/html",
            "HTML page instead of JSON (content-type: text/html): Sign in",
            false,
        ),
        ("/empty", "empty body", false),
        ("/object", "got an object", false),
        ("/scalars", "element 1 is a number", false),
        (
            "/truncated",
            "truncated response body: connection closed after 15 of 100 bytes",
            true,
        ),
    ];
    for (path, expected, retryable) in cases {
        let err = client
            .list_page(&token(), None, first(path))
            .expect_err(path);
        match &err {
            ProcoreError::BadResponse(m) => assert!(m.contains(expected), "{path}: {m}"),
            other => panic!("{path}: {other:?}"),
        }
        assert_eq!(err.is_retryable(), retryable, "{path}");
    }
}

#[test]
fn declared_oversized_body_is_refused_without_reading_it() {
    let server =
        ScriptedServer::start(|_, _| Reply::new(200, Body::HugeDeclared(200 * 1024 * 1024)));
    let mut cfg = config(&server.url());
    cfg.max_response_bytes = 1024 * 1024;
    let client = Client::new(cfg).expect("client");
    let err = client
        .list_page(&token(), None, first("/huge"))
        .expect_err("too large");
    assert!(
        matches!(err, ProcoreError::TooLarge { limit: 1_048_576 }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[test]
fn undeclared_oversized_body_is_cut_off_while_streaming() {
    let total = 200 * 1024 * 1024;
    let server = ScriptedServer::start(move |_, _| Reply::new(200, Body::HugeChunked(total)));
    let mut cfg = config(&server.url());
    cfg.max_response_bytes = 1024 * 1024;
    let client = Client::new(cfg).expect("client");
    let err = client
        .list_page(&token(), None, first("/huge"))
        .expect_err("too large");
    assert!(
        matches!(err, ProcoreError::TooLarge { limit: 1_048_576 }),
        "{err:?}"
    );
    // The client hung up: the server could only push what fits in socket buffers.
    std::thread::sleep(Duration::from_millis(200));
    let written = server.bytes_written.load(Ordering::SeqCst);
    assert!(
        written < total / 4,
        "server wrote {written} bytes: the client kept reading"
    );
}

#[test]
fn body_exactly_at_the_limit_is_accepted() {
    let body = format!("[{}]", r#"{"id":1}"#);
    let len = body.len() as u64;
    let server = ScriptedServer::start(move |_, _| Reply::json(200, &body));
    let mut cfg = config(&server.url());
    cfg.max_response_bytes = len;
    let page = Client::new(cfg)
        .expect("client")
        .list_page(&token(), None, first("/x"))
        .expect("page");
    assert_eq!(page.records.len(), 1);
}

// ---- transport ----

#[test]
fn stalled_server_times_out() {
    let server = ScriptedServer::start(|r, _| match r.path() {
        "/stall-body" => Reply::new(
            200,
            Body::StallMidway(Duration::from_secs(3), b"[]".to_vec()),
        ),
        _ => Reply::new(
            200,
            Body::StallBeforeHead(Duration::from_secs(3), b"[]".to_vec()),
        ),
    });
    let mut cfg = config(&server.url());
    cfg.timeout = Duration::from_millis(400);
    let client = Client::new(cfg).expect("client");
    for path in ["/stall-body", "/stall-head"] {
        let started = Instant::now();
        let err = client
            .list_page(&token(), None, first(path))
            .expect_err(path);
        assert!(matches!(err, ProcoreError::Timeout), "{path}: {err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path}: took {:?}",
            started.elapsed()
        );
        assert!(err.is_retryable());
    }
}

#[test]
fn refused_and_dropped_connections() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let client = Client::new(config(&format!("http://127.0.0.1:{port}"))).expect("client");
    let err = client
        .list_page(&token(), None, first("/x"))
        .expect_err("refused");
    assert!(matches!(err, ProcoreError::Connection(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_clean(&err);

    let server = ScriptedServer::start(|_, _| Reply::new(200, Body::Drop));
    let err = list(&server, "/x").expect_err("dropped");
    assert!(matches!(err, ProcoreError::Connection(_)), "{err:?}");
    assert_clean(&err);
}

// ---- configuration ----

#[test]
fn plain_http_needs_allow_http() {
    let mut cfg = config("http://127.0.0.1:1");
    cfg.allow_http = false;
    let err = Client::new(cfg).expect_err("http refused");
    assert!(
        matches!(&err, ProcoreError::Config(m) if m.contains("api_base_url") && m.contains("http")),
        "{err:?}"
    );

    let mut cfg = ClientConfig::new(
        "https://api.example.com",
        "http://login.example.com",
        "id",
        Secret::new(SECRET),
    );
    cfg.allow_http = false;
    let err = Client::new(cfg).expect_err("http refused");
    assert!(
        matches!(&err, ProcoreError::Config(m) if m.contains("login_base_url")),
        "{err:?}"
    );

    for bad in [
        "ftp://api.example.com",
        "not a url",
        "https://api.example.com/?x=1",
        "https://user:pw@api.example.com",
    ] {
        let err = Client::new(ClientConfig::new(
            bad,
            "https://login.example.com",
            "id",
            Secret::new(SECRET),
        ));
        assert!(
            matches!(err, Err(ProcoreError::Config(_))),
            "{bad}: {err:?}"
        );
    }
    assert!(Client::new(ClientConfig::new(
        "https://api.example.com",
        "https://login.example.com",
        "id",
        Secret::new(SECRET)
    ))
    .is_ok());
}

#[test]
fn unreadable_or_empty_ca_file_is_a_config_error() {
    let mut cfg = ClientConfig::new(
        "https://api.example.com",
        "https://login.example.com",
        "id",
        Secret::new(SECRET),
    );
    cfg.ca_file = Some("/nonexistent/ca.pem".into());
    let err = Client::new(cfg.clone()).expect_err("missing CA file");
    assert!(
        matches!(&err, ProcoreError::Config(m) if m.contains("/nonexistent/ca.pem")),
        "{err:?}"
    );

    let path = std::env::temp_dir().join(format!("procore-empty-ca-{}.pem", std::process::id()));
    std::fs::write(&path, "not a certificate\n").expect("write");
    cfg.ca_file = Some(path.to_string_lossy().into_owned());
    let err = Client::new(cfg).expect_err("no certificates");
    assert!(
        matches!(&err, ProcoreError::Config(m) if m.contains("no PEM certificates")),
        "{err:?}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn token_with_line_break_is_refused_before_sending() {
    let server = ScriptedServer::start(|_, _| Reply::json(200, "[]"));
    let err = client_for(&server)
        .list_page(&Secret::new("abc\r\nX-Injected: 1"), None, first("/x"))
        .expect_err("refused");
    assert!(matches!(err, ProcoreError::Config(_)), "{err:?}");
    assert!(server.requests().is_empty());
}

// ---- OAuth ----

fn token_endpoint(r: &Recorded, _: &str) -> Reply {
    let grant = r.form_param("grant_type").unwrap_or_default();
    if r.form_param("client_secret").as_deref() != Some(SECRET) {
        return Reply::json(
            401,
            r#"{"error":"invalid_client","error_description":"Client authentication failed."}"#,
        );
    }
    match (r.path(), grant.as_str()) {
        ("/oauth/revoke", _) => Reply::json(200, "{}"),
        (_, "refresh_token") if r.form_param("refresh_token").as_deref() == Some(REFRESH) => {
            Reply::json(
                200,
                r#"{"access_token":"new-access","token_type":"bearer","expires_in":5400,"refresh_token":"new-refresh","created_at":1767225600}"#,
            )
        }
        (_, "refresh_token") => {
            let sent = r.form_param("refresh_token").unwrap_or_default();
            let status = if sent == "use-401" { 401 } else { 400 };
            let body = serde_json::json!({
                "error": "invalid_grant",
                "error_description": format!("The provided authorization grant is invalid, expired, revoked ({sent}, {SECRET})\n"),
            });
            Reply::json(status, &body.to_string())
        }
        (_, "authorization_code") => Reply::json(
            200,
            r#"{"access_token":"code-access","token_type":"bearer","expires_in":7200,"refresh_token":"code-refresh","created_at":1767225600}"#,
        ),
        _ => Reply::json(400, r#"{"error":"unsupported_grant_type"}"#),
    }
}

#[test]
fn refresh_posts_form_and_computes_expiry() {
    let server = ScriptedServer::start(token_endpoint);
    let client = client_for(&server);
    let pair = client
        .refresh_token(&Secret::new(REFRESH))
        .expect("refresh");
    assert_eq!(pair.access_token.expose(), "new-access");
    assert_eq!(pair.refresh_token.expose(), "new-refresh");
    assert_eq!(
        pair.expires_at,
        DateTime::from_timestamp(1_767_225_600 + 5400, 0).expect("time")
    );

    let r = &server.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path(), "/oauth/token");
    assert_eq!(
        r.header("Content-Type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.form_param("grant_type").as_deref(), Some("refresh_token"));
    assert_eq!(r.form_param("client_id").as_deref(), Some("client-1"));
    assert_eq!(r.form_param("refresh_token").as_deref(), Some(REFRESH));
    assert_eq!(r.header("Authorization"), None);
}

#[test]
fn exchange_code_and_revoke() {
    let server = ScriptedServer::start(token_endpoint);
    let client = client_for(&server);
    let pair = client
        .exchange_code(&Secret::new("code-1"), "https://app.example.com/callback")
        .expect("exchange");
    assert_eq!(pair.access_token.expose(), "code-access");
    assert_eq!(
        pair.expires_at,
        DateTime::from_timestamp(1_767_225_600 + 7200, 0).expect("time")
    );
    client.revoke(&Secret::new("code-access")).expect("revoke");

    let reqs = server.requests();
    assert_eq!(
        reqs[0].form_param("grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(reqs[0].form_param("code").as_deref(), Some("code-1"));
    assert_eq!(
        reqs[0].form_param("redirect_uri").as_deref(),
        Some("https://app.example.com/callback")
    );
    assert_eq!(reqs[1].path(), "/oauth/revoke");
    assert_eq!(reqs[1].form_param("token").as_deref(), Some("code-access"));
    assert_eq!(reqs[1].form_param("client_secret").as_deref(), Some(SECRET));
}

#[test]
fn invalid_grant_on_400_and_401_is_sanitised() {
    let server = ScriptedServer::start(token_endpoint);
    let client = client_for(&server);
    for used in [
        Secret::new("rt_used_400_refresh987"),
        Secret::new("use-401"),
    ] {
        let err = client.refresh_token(&used).expect_err("invalid_grant");
        match &err {
            ProcoreError::InvalidGrant(d) => {
                assert!(
                    d.starts_with("The provided authorization grant is invalid"),
                    "{d}"
                );
                assert!(d.contains("[redacted]"), "{d}");
                assert!(!d.contains(used.expose()), "{d}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retryable());
        assert_clean(&err);
    }
}

#[test]
fn invalid_client_from_token_endpoint() {
    let server = ScriptedServer::start(token_endpoint);
    let mut cfg = config(&server.url());
    cfg.client_secret = Secret::new("wrong");
    let err = Client::new(cfg)
        .expect("client")
        .refresh_token(&Secret::new(REFRESH))
        .expect_err("bad client");
    assert!(matches!(err, ProcoreError::InvalidClient), "{err:?}");
    assert!(!err.is_retryable());
}

#[test]
fn token_endpoint_outages_are_retryable_and_garbage_is_not() {
    let server = ScriptedServer::start(|r, _| match r.form_param("refresh_token").as_deref() {
        Some("busy") => Reply::json(503, r#"{"errors":"busy"}"#),
        Some("html") => Reply::text(502, "text/html", "<h1>502 Bad Gateway</h1>"),
        Some("bad-json") => Reply::json(200, r#"{"access_token":"#),
        _ => Reply::json(
            400,
            r#"{"error":"invalid_request","error_description":"missing parameter"}"#,
        ),
    });
    let client = client_for(&server);
    let err = client.refresh_token(&Secret::new("busy")).expect_err("503");
    assert!(
        matches!(err, ProcoreError::Throttled { .. }) && err.is_retryable(),
        "{err:?}"
    );
    let err = client.refresh_token(&Secret::new("html")).expect_err("502");
    assert!(
        matches!(err, ProcoreError::Server { status: 502, .. }),
        "{err:?}"
    );
    let err = client
        .refresh_token(&Secret::new("bad-json"))
        .expect_err("bad json");
    assert!(matches!(err, ProcoreError::BadResponse(_)), "{err:?}");
    let err = client
        .refresh_token(&Secret::new("other"))
        .expect_err("400");
    assert!(
        matches!(&err, ProcoreError::Client { status: 400, detail } if detail == "invalid_request: missing parameter"),
        "{err:?}"
    );
}

// ---- TLS ----

mod tls {
    use std::sync::Arc;

    use super::*;

    // A throwaway CA and a certificate for 127.0.0.1/localhost signed by it (P-256, valid
    // 2020-2126), made with openssl for these tests only.
    const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBczCCARigAwIBAgICEAAwCgYIKoZIzj0EAwIwHzEdMBsGA1UEAwwUcHJvY29y\n\
ZV9zeW5jIHRlc3QgQ0EwIBcNMjAwMTAxMDAwMDAwWhgPMjEyNjAxMDEwMDAwMDBa\n\
MB8xHTAbBgNVBAMMFHByb2NvcmVfc3luYyB0ZXN0IENBMFkwEwYHKoZIzj0CAQYI\n\
KoZIzj0DAQcDQgAE6yKPe3o98PSAN+KbOSu4NOdFlpdE+VkJGveVPl1ESi2dmo8D\n\
Z9BCqDeqvEhH5D2OLh+82GBB5AaMmeZDK197nKNCMEAwDwYDVR0TAQH/BAUwAwEB\n\
/zAOBgNVHQ8BAf8EBAMCAQYwHQYDVR0OBBYEFMmLzbKbxU+C3YDLPEfugDaMRVKp\n\
MAoGCCqGSM49BAMCA0kAMEYCIQCmr9GK491MYh04RBJWyLCRayCkcoo+x2jfm8rU\n\
/tHw3AIhANbQEYTe7cs9Yga/GWeWisl3iw4RDNWEumpCwi23SOLy\n\
-----END CERTIFICATE-----\n\
";
    const LEAF_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBtjCCAVugAwIBAgICEAEwCgYIKoZIzj0EAwIwHzEdMBsGA1UEAwwUcHJvY29y\n\
ZV9zeW5jIHRlc3QgQ0EwIBcNMjAwMTAxMDAwMDAwWhgPMjEyNjAxMDEwMDAwMDBa\n\
MBQxEjAQBgNVBAMMCWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IA\n\
BNpKGxlHsqouzYBaehtjl5viAagZL/PFtPOSW9btaMp5JtISzUe6NOP2yI/NxWja\n\
Us5bJbDTW4cYQ9pM9iTQfxmjgY8wgYwwCQYDVR0TBAIwADAOBgNVHQ8BAf8EBAMC\n\
B4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwGgYDVR0RBBMwEYcEfwAAAYIJbG9jYWxo\n\
b3N0MB8GA1UdIwQYMBaAFMmLzbKbxU+C3YDLPEfugDaMRVKpMB0GA1UdDgQWBBQI\n\
8BfutijzdFyAfeeyrLo+KWUVQDAKBggqhkjOPQQDAgNJADBGAiEAyYDhSD3A0RGf\n\
DpCdWpWLt6uevOawWCv64Ujo/FcZ4nMCIQCvQkNaijkUiUGcMcQN5Bz2exWChrjN\n\
r7VT0KbjdF/Yfg==\n\
-----END CERTIFICATE-----\n\
";
    const LEAF_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDzS4B/s6bGyFuSJK\n\
1Hwj0A2mnc29qow12rwXPzhNAN+hRANCAATaShsZR7KqLs2AWnobY5eb4gGoGS/z\n\
xbTzklvW7WjKeSbSEs1HujTj9siPzcVo2lLOWyWw01uHGEPaTPYk0H8Z\n\
-----END PRIVATE KEY-----\n\
";

    /// An HTTPS server answering every request with `[{"id":1}]`; returns its base URL.
    fn start_tls_server() -> String {
        let certs: Vec<_> = rustls_pemfile::certs(&mut LEAF_PEM.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = rustls_pemfile::private_key(&mut LEAF_KEY.as_bytes())
            .expect("key")
            .expect("a key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        ScriptedServer::start_tls(Arc::new(config), |_, _| Reply::json(200, r#"[{"id":1}]"#)).url()
    }

    #[test]
    fn unknown_ca_fails_verification_and_ca_file_fixes_it() {
        let base = start_tls_server();
        let mut cfg = config(&base);
        cfg.allow_http = false;
        let err = Client::new(cfg.clone())
            .expect("client")
            .list_page(&token(), None, first("/x"))
            .expect_err("untrusted");
        match &err {
            ProcoreError::Tls(m) => {
                assert!(m.starts_with("TLS certificate verification failed"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retryable());

        let path = std::env::temp_dir().join(format!("procore-test-ca-{}.pem", std::process::id()));
        std::fs::write(&path, CA_PEM).expect("write CA");
        cfg.ca_file = Some(path.to_string_lossy().into_owned());
        let page = Client::new(cfg)
            .expect("client")
            .list_page(&token(), None, first("/x"))
            .expect("trusted");
        assert_eq!(page.records.len(), 1);
        let _ = std::fs::remove_file(path);
    }
}
