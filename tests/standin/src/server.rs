//! Accepting connections, one thread each, and turning requests into delivered
//! responses: routing to the API, OAuth and admin handlers, firing fault rules, and
//! keeping the request log and the served-record set.

use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::api::{self, ListRequest};
use crate::clock::{epoch_seconds, iso_millis, now};
use crate::faults::{self, Delivery, Effect, Wire};
use crate::http::{self, percent_decode, Request, Response, Transport};
use crate::oauth;
use crate::rate_limit::{RateLimiter, LIMIT_MESSAGE};
use crate::state::{LogEntry, ServedKey, Shared, State};
use crate::world::{Resource, World};
use crate::{admin, tls, webhooks};

/// Pooled client connections sit idle between syncs; past this they are let go.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// A client that stops reading (say, mid-`huge`) must not pin a thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Options {
    pub listen: String,
    pub world: World,
    pub tls_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: "127.0.0.1:0".to_string(),
            world: World::default(),
            tls_dir: None,
        }
    }
}

/// A started server; it runs until the process exits.
pub struct Running {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` or `https://...`: the API and the login base URL.
    pub url: String,
    /// `DIR/ca.pem` when serving HTTPS.
    pub ca_pem: Option<PathBuf>,
}

pub fn start(options: Options) -> io::Result<Running> {
    options
        .world
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("world: {e}")))?;
    let tls = match &options.tls_dir {
        Some(dir) => Some(tls::generate(dir)?),
        None => None,
    };
    let listener = TcpListener::bind(&options.listen)?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shared = Arc::new(Shared::new(options.world, scheme, addr));
    webhooks::spawn(Arc::clone(&shared))?;
    thread::Builder::new()
        .name("standin-accept".to_string())
        .spawn(move || accept_loop(listener, shared, tls))?;
    Ok(Running {
        addr,
        url: format!("{scheme}://{addr}"),
        ca_pem: options.tls_dir.map(|d| d.join("ca.pem")),
    })
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<ServerConfig>>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                // Usually out of file descriptors: back off instead of spinning.
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        let spawned = thread::Builder::new()
            .name("standin-conn".to_string())
            .spawn(move || match tls {
                Some(config) => {
                    if let Ok(connection) = ServerConnection::new(config) {
                        serve_connection(&shared, StreamOwned::new(connection, stream));
                    }
                }
                None => serve_connection(&shared, stream),
            });
        if spawned.is_err() {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve_connection<T: Transport>(shared: &Shared, stream: T) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = http::next_request(&mut reader) {
        let outcome = handle(shared, &request);
        if outcome.logged {
            record_log(shared, &request, &outcome);
        }
        let keep_open = deliver(shared, reader.get_mut(), &outcome, request.keep_alive);
        if !keep_open {
            let graceful = matches!(outcome.delivery, Delivery::Normal | Delivery::Stall(_));
            reader.get_mut().close(graceful);
            return;
        }
    }
}

/// A response and everything needed to deliver and account for it.
struct Outcome {
    response: Response,
    delivery: Delivery,
    /// Waited before the first byte (world latency and `latency` faults).
    delay: Duration,
    served: Vec<ServedKey>,
    logged: bool,
    login: Option<String>,
    resource: Option<Resource>,
    company_id: Option<u64>,
    project_id: Option<u64>,
}

impl Outcome {
    fn new(response: Response, logged: bool) -> Outcome {
        Outcome {
            response,
            delivery: Delivery::Normal,
            delay: Duration::ZERO,
            served: Vec::new(),
            logged,
            login: None,
            resource: None,
            company_id: None,
            project_id: None,
        }
    }

    fn respond(&mut self, response: Response) {
        self.response = response;
    }
}

fn handle(shared: &Shared, req: &Request) -> Outcome {
    if req.path == "/__admin" || req.path.starts_with("/__admin/") {
        return Outcome::new(admin::handle(shared, req), false);
    }
    if req.path.starts_with("/rest/") {
        return api_request(shared, req);
    }
    if req.path.starts_with("/oauth/") {
        return oauth_request(shared, req);
    }
    // A test's own receiver, not part of Procore: kept out of the log and the stats.
    if req.path.starts_with("/__capture/") {
        return Outcome::new(webhooks::capture(shared, req), false);
    }
    Outcome::new(
        Response::errors(404, &format!("No route matches {}", req.path)),
        true,
    )
}

/// Fires the first matching fault rule. Returns true when the fault replaced the
/// response outright (then authentication and rate limits are skipped: the request
/// never "reached Procore").
fn apply_fault(state: &mut State, req: &Request, now: u64, outcome: &mut Outcome) -> bool {
    if state.faults.is_empty() {
        return false;
    }
    let decoded = percent_decode(&req.target, false);
    let Some(rule) = faults::fire(
        &mut state.faults,
        &req.target,
        &decoded,
        outcome.login.as_deref(),
    ) else {
        return false;
    };
    state.stats.faults_fired += 1;
    match faults::effect(&rule) {
        Effect::Replace(mut response, delivery) => {
            if response.status == 429 {
                let verdict = RateLimiter::refusal(now, state.limits());
                response = response.with_headers(verdict.headers(state.world.retry_after_header));
            }
            outcome.respond(response);
            outcome.delivery = delivery;
            true
        }
        Effect::Delay(delay) => {
            outcome.delay = outcome.delay.saturating_add(delay);
            false
        }
        Effect::Deliver(delivery) => {
            outcome.delivery = delivery;
            false
        }
    }
}

fn api_request(shared: &Shared, req: &Request) -> Outcome {
    let now = epoch_seconds(now());
    let pairs = req.query_pairs();
    let mut outcome = Outcome::new(Response::errors(500, "unhandled"), true);

    let mut guard = shared.lock();
    let state = &mut *guard;
    // Routed under the lock: the world decides whether the catalog's paths exist.
    let routed = api::route_with(&req.method, &req.path, &pairs, state.world.has_catalog());
    match &routed {
        Ok(route) => {
            outcome.resource = Some(route.resource);
            outcome.company_id = route.company_id();
            outcome.project_id = route.project_id();
        }
        Err(error) => outcome.resource = error.resource,
    }
    outcome.delay = Duration::from_millis(state.world.latency_ms);
    let token = req.bearer_token();
    outcome.login = token
        .and_then(|t| state.tokens.login_of(t))
        .map(str::to_string);
    if apply_fault(state, req, now, &mut outcome) {
        return outcome;
    }

    let login = match token.map(|t| state.tokens.authenticate(t, now)) {
        Some(Ok(login)) => login.to_string(),
        Some(Err(reason)) => {
            outcome.respond(Response::oauth_error(401, "invalid_token", reason));
            return outcome;
        }
        None => {
            outcome.respond(Response::oauth_error(
                401,
                "invalid_token",
                "The access token is missing (Authorization: Bearer ...).",
            ));
            return outcome;
        }
    };
    let Some(user) = state.world.user_number(&login) else {
        outcome.respond(Response::oauth_error(401, "invalid_token", "Unknown user."));
        return outcome;
    };

    let limits = state.limits();
    let verdict = state.limiter.admit(&login, now, limits);
    let rate_headers = verdict.headers(state.world.retry_after_header);
    if !verdict.allowed {
        state.stats.rate_limited += 1;
        outcome.respond(
            Response::new(
                429,
                "text/plain; charset=utf-8",
                LIMIT_MESSAGE.as_bytes().to_vec(),
            )
            .with_headers(rate_headers),
        );
        return outcome;
    }
    if webhooks::is_api_path(&req.path) {
        let answer = webhooks::handle_api(state, user, req, &pairs);
        outcome.company_id = answer.company_id;
        outcome.project_id = answer.project_id;
        outcome.respond(answer.response.with_headers(rate_headers));
        return outcome;
    }
    let route = match routed {
        Ok(route) => route,
        Err(error) => {
            outcome.respond(error.response().with_headers(rate_headers));
            return outcome;
        }
    };

    let host = req
        .header("host")
        .map(str::to_string)
        .unwrap_or_else(|| shared.local_addr.to_string());
    let list_request = ListRequest {
        company_header: req.header("procore-company-id"),
        pairs: &pairs,
        raw_query: &req.query,
        base_url: format!("{}://{host}{}", shared.scheme, req.path),
    };
    let (response, served) = api::answer(state.viewer(user), route, &list_request);
    outcome.respond(response.with_headers(rate_headers));
    outcome.served = served;
    outcome
}

fn oauth_request(shared: &Shared, req: &Request) -> Outcome {
    let now = epoch_seconds(now());
    let mut outcome = Outcome::new(Response::errors(500, "unhandled"), true);
    let mut guard = shared.lock();
    let state = &mut *guard;
    let (response, login) = match (req.method.as_str(), req.path.as_str()) {
        (_, "/oauth/token") => {
            outcome.login = oauth::token_request_login(state, req);
            if apply_fault(state, req, now, &mut outcome) {
                return outcome;
            }
            oauth::token(state, req, now)
        }
        ("GET", "/oauth/authorize") => oauth::authorize(state, req, now),
        ("POST", "/oauth/revoke") => oauth::revoke(state, req),
        ("GET", "/oauth/token/info") => oauth::token_info(state, req, now),
        (_, "/oauth/authorize" | "/oauth/revoke" | "/oauth/token/info") => (
            Response::errors(
                405,
                &format!("{} is not supported on {}", req.method, req.path),
            ),
            None,
        ),
        _ => (
            Response::errors(404, &format!("No route matches {}", req.path)),
            None,
        ),
    };
    outcome.respond(response);
    outcome.login = login.or(outcome.login);
    outcome
}

/// Logged as soon as the status is known, before any bytes go out, so a client that
/// has read its response always finds the request in the log and the stats.
fn record_log(shared: &Shared, req: &Request, outcome: &Outcome) {
    let entry = LogEntry {
        seq: 0,
        method: req.method.clone(),
        path: req.path.clone(),
        query: percent_decode(&req.query, true),
        login: outcome.login.clone(),
        status: outcome.response.status,
        resource: outcome.resource.map(Resource::name),
        company_id: outcome.company_id,
        project_id: outcome.project_id,
        ts: iso_millis(now()),
    };
    shared.lock().record_log(entry);
}

/// Writes the response as the delivery says; returns whether the connection stays open.
/// Whole responses go out here, marking their records served; the faults that cut or
/// replace the bytes go out through the shared fault writer (`faults::write_wire`), as
/// nothing they send is ever served.
fn deliver<T: Transport>(
    shared: &Shared,
    conn: &mut T,
    outcome: &Outcome,
    keep_alive: bool,
) -> bool {
    if !outcome.delay.is_zero() {
        thread::sleep(outcome.delay);
    }
    let response = &outcome.response;
    let body = &response.body;
    let close = !keep_alive;
    let result = match outcome.delivery {
        Delivery::Drop => return false,
        Delivery::Truncate => {
            // The full length announced, half the body sent.
            let half = Response {
                status: response.status,
                headers: response.headers.clone(),
                body: body[..body.len() / 2].to_vec(),
            };
            let declared = body.len() as u64;
            let _ = faults::write_wire(conn, &half, Wire::Truncated { declared }, true);
            return false;
        }
        Delivery::Huge(bytes) => {
            let wire = Wire::Huge {
                bytes,
                chunked: false,
            };
            faults::write_wire(conn, response, wire, close)
        }
        Delivery::Normal => {
            let mut bytes = response.head_bytes(body.len() as u64, close);
            bytes.extend_from_slice(body);
            send_marking_served(shared, conn, &bytes, outcome)
        }
        Delivery::Stall(pause) => conn
            .write_all(&response.head_bytes(body.len() as u64, close))
            .and_then(|_| conn.flush())
            .and_then(|_| {
                thread::sleep(pause);
                send_marking_served(shared, conn, body, outcome)
            }),
    };
    result.is_ok() && keep_alive
}

/// Sends `bytes`, recording the outcome's records as served just before the last byte
/// leaves: early enough that a client holding the whole response always finds them in
/// `/__admin/served`, late enough that a response cut short never counts (a failed
/// last write takes them back out).
fn send_marking_served<T: Transport>(
    shared: &Shared,
    conn: &mut T,
    bytes: &[u8],
    outcome: &Outcome,
) -> io::Result<()> {
    if outcome.response.status != 200 || outcome.served.is_empty() || bytes.is_empty() {
        return conn.write_all(bytes).and_then(|_| conn.flush());
    }
    let (most, last) = bytes.split_at(bytes.len() - 1);
    conn.write_all(most)?;
    conn.flush()?;
    let newly_served: Vec<ServedKey> = {
        let mut state = shared.lock();
        outcome
            .served
            .iter()
            .copied()
            .filter(|key| state.served.insert(*key))
            .collect()
    };
    let sent = conn.write_all(last).and_then(|_| conn.flush());
    if sent.is_err() {
        let mut state = shared.lock();
        for key in &newly_served {
            state.served.remove(key);
        }
    }
    sent
}
