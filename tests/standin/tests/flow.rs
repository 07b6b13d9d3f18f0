//! The stand-in started in-process on port 0 and driven over real sockets.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{read_reply, server, Client};
use procore_standin::{start, Options, World};
use serde_json::json;

/// One request on a fresh connection, reading whatever arrives until the server closes.
fn raw_exchange(addr: SocketAddr, target: &str, token: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nProcore-Company-Id: 1001\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

fn link_target(link: &str, rel: &str) -> Option<String> {
    link.split(", ")
        .find(|part| part.ends_with(&format!("rel=\"{rel}\"")))
        .map(|part| {
            let url = &part[1..part.find('>').unwrap()];
            url.to_string()
        })
}

#[test]
fn oauth_code_exchange_api_refresh_rotation_and_pagination() {
    let standin = server(World {
        users: 3,
        records_per_resource: 25,
        ..World::default()
    });
    let mut c = Client::new(&standin);

    let reply = c.send(
        "GET",
        "/oauth/authorize?client_id=standin-client&redirect_uri=http%3A%2F%2Fapp%2Fcb&login=user-2&response_type=code&state=xyz",
        &[],
        b"",
    );
    assert_eq!(reply.status, 302);
    let location = reply.header("location").unwrap().to_string();
    assert!(location.starts_with("http://app/cb?code="), "{location}");
    assert!(location.ends_with("&state=xyz"));
    let code = location["http://app/cb?code=".len()..location.find('&').unwrap()].to_string();

    let bad_client = c.form(
        "/oauth/token",
        &format!("grant_type=authorization_code&client_id=standin-client&client_secret=nope&code={code}&redirect_uri=http%3A%2F%2Fapp%2Fcb"),
    );
    assert_eq!(bad_client.status, 401);
    assert_eq!(bad_client.json()["error"], "invalid_client");

    let exchange = format!("grant_type=authorization_code&client_id=standin-client&client_secret=standin-secret&code={code}&redirect_uri=http%3A%2F%2Fapp%2Fcb");
    let reply = c.form("/oauth/token", &exchange);
    assert_eq!(reply.status, 200);
    let tokens = reply.json();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 5400);
    assert!(tokens["created_at"].as_u64().unwrap() > 1_700_000_000);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let reused = c.form("/oauth/token", &exchange);
    assert_eq!(
        (reused.status, reused.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );

    let companies = c.get("/rest/v1.0/companies", &access, None);
    assert_eq!(companies.status, 200);
    assert_eq!(companies.json()[0]["id"], 2001);
    assert!(companies.header("link").is_none());
    assert_eq!(companies.header("x-rate-limit-limit"), Some("25"));
    assert!(companies.header("x-rate-limit-reset").is_some());
    assert_eq!(c.get("/rest/v1.0/companies", "garbage", None).status, 401);

    // Refresh rotation, with a JSON body this time.
    let refresh_body = json!({
        "grant_type": "refresh_token",
        "client_id": "standin-client",
        "client_secret": "standin-secret",
        "refresh_token": refresh,
    })
    .to_string();
    let json_header = [("Content-Type", "application/json")];
    let reply = c.send(
        "POST",
        "/oauth/token",
        &json_header,
        refresh_body.as_bytes(),
    );
    assert_eq!(reply.status, 200);
    let rotated = reply.json();
    let access2 = rotated["access_token"].as_str().unwrap().to_string();
    assert_ne!(rotated["refresh_token"].as_str().unwrap(), refresh);
    let again = c.send(
        "POST",
        "/oauth/token",
        &json_header,
        refresh_body.as_bytes(),
    );
    assert_eq!(
        (again.status, again.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let old = c.get("/rest/v1.0/companies", &access, None);
    assert_eq!(
        (old.status, old.json()["error"].clone()),
        (401, json!("invalid_token"))
    );
    let info = c.get("/oauth/token/info", &access2, None);
    assert_eq!(info.json()["resource_owner_id"], 2);

    // Follow `next` to the end.
    let mut target = "/rest/v1.0/projects/2001001/rfis?per_page=10".to_string();
    let base = standin.url.clone();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let reply = c.get(&target, &access2, Some(2001));
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        pages += 1;
        assert_eq!(reply.header("total"), Some("25"));
        assert_eq!(reply.header("per-page"), Some("10"));
        let link = reply.header("link").unwrap().to_string();
        assert_eq!(
            link_target(&link, "last").unwrap(),
            format!("{base}/rest/v1.0/projects/2001001/rfis?page=3&per_page=10")
        );
        if pages == 1 {
            assert!(link_target(&link, "first").is_none() && link_target(&link, "prev").is_none());
        } else {
            assert!(link_target(&link, "first").is_some() && link_target(&link, "prev").is_some());
        }
        ids.extend(
            reply
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap()),
        );
        match link_target(&link, "next") {
            Some(next) => target = next.strip_prefix(&base).unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        ids,
        (1..=25).map(|i| 200_100_100_000 + i).collect::<Vec<u64>>()
    );
    assert_eq!(c.connections_opened, 1, "keep-alive carried every request");

    // Scoping and validation.
    assert_eq!(
        c.get("/rest/v1.0/projects/2001001/rfis", &access2, None)
            .status,
        403
    );
    assert_eq!(
        c.get("/rest/v1.0/projects/1001001/rfis", &access2, Some(1001))
            .status,
        404
    );
    let bad_filter = c.get(
        "/rest/v1.0/projects/2001001/rfis?filters[updated_at]=nope",
        &access2,
        Some(2001),
    );
    assert_eq!(bad_filter.status, 400);
    assert!(bad_filter.json()["errors"].is_string());
    assert!(bad_filter.header("x-rate-limit-remaining").is_some());

    let served = c.admin("GET", "served", json!(null));
    assert_eq!(
        served.as_array().unwrap().len(),
        26,
        "25 rfis and one company"
    );
    let stats = c.admin("GET", "stats", json!(null));
    assert_eq!(
        (stats["token_grants"].clone(), stats["refreshes"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(stats["by_resource"]["rfis"], 6);
    let secrets = c.admin("GET", "secrets", json!(null));
    let secrets: Vec<&str> = secrets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in [
        code.as_str(),
        access.as_str(),
        refresh.as_str(),
        access2.as_str(),
        "standin-secret",
    ] {
        assert!(secrets.contains(&s));
    }
    let log = c.admin("GET", "requests?since=0", json!(null));
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["status"], 400);
    assert_eq!(last["login"], "user-2");
    assert_eq!(last["resource"], "rfis");
    assert_eq!(last["project_id"], 2001001);
    assert_eq!(last["query"], "filters[updated_at]=nope");
}

#[test]
fn spike_limit_answers_429_until_the_window_turns() {
    let standin = server(World {
        rate_limit_spike: 4,
        ..World::default()
    });
    let mut c = Client::new(&standin);
    let token = c.admin("POST", "tokens", json!({ "login": "user-1" }))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // A window may turn mid-loop; three windows' worth of requests must still hit the limit.
    let mut allowed_in_a_row = 0;
    let limited = (0..12).find_map(|_| {
        let reply = c.get("/rest/v1.0/companies", &token, None);
        if reply.status == 429 {
            return Some(reply);
        }
        assert_eq!(reply.status, 200);
        allowed_in_a_row += 1;
        None
    });
    let limited = limited.expect("no 429 within three windows");
    assert!(allowed_in_a_row >= 4);
    assert_eq!(limited.header("x-rate-limit-remaining"), Some("0"));
    assert_eq!(limited.header("x-rate-limit-limit"), Some("4"));
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry));
    assert!(String::from_utf8_lossy(&limited.body)
        .contains("You have surpassed the max number of requests"));
    let stats = c.admin("GET", "stats", json!(null));
    assert!(stats["rate_limited"].as_u64().unwrap() >= 1);
    // The limit is per login: a refreshed or second token of user-1 is limited too...
    let second = c.admin("POST", "tokens", json!({ "login": "user-1" }))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = c.get("/rest/v1.0/companies", &second, None);
    assert!(reply.status == 429 || reply.header("x-rate-limit-remaining") == Some("3"));
    // ...while another login is not.
    let other = c.admin("POST", "tokens", json!({ "login": "user-2" }))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(c.get("/rest/v1.0/companies", &other, None).status, 200);
}

#[test]
fn fault_rules_fire_in_order_and_count_down() {
    let standin = server(World::default());
    let mut c = Client::new(&standin);
    let token = c.admin("POST", "tokens", json!({ "login": "user-1" }))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let vendors = "/rest/v1.0/vendors?company_id=1001";
    c.admin(
        "POST",
        "faults",
        json!({ "rules": [
            { "kind": "status", "status": 503, "path": "company_id=1001", "times": 1 },
            { "kind": "status", "status": 429, "path": "vendors", "login": "user-1", "times": 1 },
            { "kind": "html", "path": "/rfis", "times": 1 },
        ]}),
    );
    let first = c.get(vendors, &token, Some(1001));
    assert_eq!(
        (first.status, first.json()),
        (503, json!({ "errors": "injected" }))
    );
    let second = c.get(vendors, &token, Some(1001));
    assert_eq!(second.status, 429);
    assert!(
        second.header("retry-after").is_some() && second.header("x-rate-limit-reset").is_some()
    );
    let third = c.get(vendors, &token, Some(1001));
    assert_eq!(third.status, 200);
    assert_eq!(third.json().as_array().unwrap().len(), 25);
    let html = c.get("/rest/v1.0/projects/1001001/rfis", &token, Some(1001));
    assert_eq!(
        (html.status, html.header("content-type")),
        (502, Some("text/html"))
    );
    c.admin("DELETE", "faults", json!(null));

    // Truncated: full Content-Length announced, half the body, then the connection closes;
    // those records do not count as served.
    c.admin(
        "POST",
        "faults",
        json!({ "rules": [{ "kind": "truncate", "path": "/submittals", "times": 1 }] }),
    );
    let submittals = "/rest/v1.1/projects/1001001/submittals";
    let cut = raw_exchange(standin.addr, submittals, &token);
    let text = String::from_utf8_lossy(&cut).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let announced: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), announced / 2);
    let served = c.admin("GET", "served", json!(null));
    assert!(!served.to_string().contains("submittals"));
    let whole = raw_exchange(standin.addr, submittals, &token);
    assert!(String::from_utf8_lossy(&whole).starts_with("HTTP/1.1 200"));
    let served = c.admin("GET", "served", json!(null));
    assert_eq!(served.to_string().matches("submittals").count(), 25);

    // Dropped, malformed, wrong shape, empty, huge.
    c.admin(
        "POST",
        "faults",
        json!({ "rules": [
            { "kind": "drop", "path": "/punch_items", "times": 1 },
            { "kind": "malformed", "path": "/punch_items", "times": 1 },
            { "kind": "wrong_shape", "path": "/punch_items", "times": 1 },
            { "kind": "empty", "path": "/punch_items", "times": 1 },
            { "kind": "huge", "path": "/punch_items", "times": 1, "bytes": 1_000_000 },
            { "kind": "latency", "path": "/punch_items", "times": 1, "latency_ms": 300 },
        ]}),
    );
    let punch = "/rest/v1.1/punch_items?project_id=1001001";
    assert!(raw_exchange(standin.addr, punch, &token).is_empty());
    assert_eq!(
        c.get(punch, &token, Some(1001)).body,
        br#"{"id": 1, "name": "#
    );
    assert_eq!(
        c.get(punch, &token, Some(1001)).json(),
        json!({ "data": "unexpected" })
    );
    let empty = c.get(punch, &token, Some(1001));
    assert_eq!((empty.status, empty.body.len()), (200, 0));
    let huge = c.get(punch, &token, Some(1001));
    assert_eq!(huge.body.len(), 1_000_000);
    assert!(huge.json().is_array());
    let started = std::time::Instant::now();
    assert_eq!(c.get(punch, &token, Some(1001)).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = c.admin("GET", "stats", json!(null));
    assert_eq!(stats["faults_fired"], 10);

    // Faults can target one login's token refreshes.
    let pair = c.admin("POST", "tokens", json!({ "login": "user-3" }));
    c.admin("POST", "faults", json!({ "rules": [{ "kind": "status", "status": 503, "path": "/oauth/token", "login": "user-3", "times": 1 }] }));
    let refresh_form = format!(
        "grant_type=refresh_token&client_id=standin-client&client_secret=standin-secret&refresh_token={}",
        pair["refresh_token"].as_str().unwrap()
    );
    assert_eq!(c.form("/oauth/token", &refresh_form).status, 503);
    assert_eq!(c.form("/oauth/token", &refresh_form).status, 200);
}

#[test]
fn mutations_records_and_incremental_filters() {
    let standin = server(World::default());
    let mut c = Client::new(&standin);
    c.admin(
        "PUT",
        "world",
        json!({ "users": 2, "projects_per_company": 1, "records_per_resource": 5 }),
    );
    let token = c.admin("POST", "tokens", json!({ "login": "user-1" }))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let records = c.admin("GET", "records", json!(null));
    // per user: 1 company + 5 vendors + 1 project + 6 tools x 5
    assert_eq!(records.as_array().unwrap().len(), 2 * (1 + 5 + 1 + 30));

    let rfi = 100_100_100_002u64;
    let edited = c.admin(
        "POST",
        "mutate",
        json!({ "action": "edit", "resource": "rfis", "project_id": 1001001, "id": rfi }),
    );
    let since = edited["updated_at"].as_str().unwrap().to_string();
    c.admin(
        "POST",
        "mutate",
        json!({ "action": "delete", "resource": "rfis", "id": 100_100_100_004u64 }),
    );
    let added = c.admin(
        "POST",
        "mutate",
        json!({ "action": "add", "resource": "rfis", "project_id": 1001001 }),
    );
    assert_eq!(added["id"], 100_100_100_006u64);

    let window = format!("filters%5Bupdated_at%5D={since}...2099-01-01T00:00:00Z");
    let changed = c.get(
        &format!("/rest/v1.0/projects/1001001/rfis?{window}"),
        &token,
        Some(1001),
    );
    let ids: Vec<u64> = changed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![rfi, 100_100_100_006]);
    assert!(changed.json()[0]["subject"]
        .as_str()
        .unwrap()
        .ends_with(" (edited)"));
    let all = c
        .get("/rest/v1.0/projects/1001001/rfis", &token, Some(1001))
        .json();
    assert_eq!(all.as_array().unwrap().len(), 5, "one deleted, one added");
    let bait = &all[2]["subject"];
    assert!(bait
        .as_str()
        .unwrap()
        .contains("O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓"));

    let missing = c.send(
        "POST",
        "/__admin/mutate",
        &[],
        br#"{"action":"edit","resource":"rfis","id":100100100004}"#,
    );
    assert_eq!(missing.status, 404);
    let bad = c.send("PUT", "/__admin/world", &[], br#"{"userz": 3}"#);
    assert_eq!(bad.status, 400);
    let garbage = c.send("POST", "/__admin/faults", &[], b"{not json");
    assert_eq!(garbage.status, 400);
}

#[test]
fn https_with_the_generated_ca() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let dir = std::env::temp_dir().join(format!("standin-tls-{}", std::process::id()));
    let standin = start(Options {
        tls_dir: Some(dir.clone()),
        ..Options::default()
    })
    .unwrap();
    assert!(standin.url.starts_with("https://127.0.0.1:"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    for name in ["127.0.0.1", "localhost"] {
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config.clone()), server_name).unwrap();
        let sock = TcpStream::connect(standin.addr).unwrap();
        let mut tls = BufReader::new(rustls::StreamOwned::new(conn, sock));
        for _ in 0..2 {
            tls.get_mut()
                .write_all(b"GET /__admin/health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let reply = read_reply(&mut tls);
            assert_eq!((reply.status, reply.json()), (200, json!({ "ok": true })));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn garbage_gets_a_400_and_the_server_carries_on() {
    let standin = server(World::default());
    let body = r#"{"action":"add","resource":"rfis","project_id":18446744073709551615}"#;
    let mutate = format!(
        "POST /__admin/mutate HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    for garbage in [
        &b"garbage\r\n\r\n"[..],
        b"GET /rest/v1.0/companies HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET /rest/v1.0/projects/99999999999999999999999/rfis HTTP/1.1\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n",
        b"POST /oauth/token HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n[1,2]",
        mutate.as_bytes(),
    ] {
        let mut stream = TcpStream::connect(standin.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(garbage).unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        let status = String::from_utf8_lossy(&out).chars().skip(9).take(3).collect::<String>();
        assert!(status.starts_with('4'), "{status}: {}", String::from_utf8_lossy(garbage));
    }
    let mut c = Client::new(&standin);
    assert_eq!(c.admin("GET", "health", json!(null)), json!({ "ok": true }));
}
