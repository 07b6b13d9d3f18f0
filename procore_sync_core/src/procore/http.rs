//! HTTP to Procore: one kept-alive `ureq` agent, bounded reads, status-to-error mapping.
//!
//! The client is blocking on purpose: a sync worker runs it on a fixed set of its own
//! threads (see `fetch_pool`), one request per thread, where an async runtime would only add
//! threads and machinery Postgres does not know about.

use std::error::Error as StdError;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use url::Url;

use super::error::ProcoreError;
use super::pagination::next_link;
use super::rate_limit::RateLimit;
use super::sanitize;
use super::secret::Secret;

/// Longest excerpt of an error body read from the network; enough for any JSON error or proxy
/// page, small enough that a hostile error body cannot fill memory.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// Largest buffer reserved up front from a `Content-Length`: the header is outside data.
const MAX_PREALLOCATION: u64 = 1024 * 1024;

/// Used for `429`s that carry neither `Retry-After` nor `X-Rate-Limit-Reset`.
const DEFAULT_RATE_LIMIT_WAIT_S: i64 = 60;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_USER_AGENT: &str = concat!("procore_sync/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.procore.com` or `https://sandbox.procore.com`.
    pub api_base_url: String,
    /// e.g. `https://login.procore.com` or `https://login-sandbox.procore.com`.
    pub login_base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Deadline for one whole request: connect, send, and read the full response.
    pub timeout: Duration,
    /// PEM file of extra trusted CA certificates (a corporate proxy, the test stand-in),
    /// added to the built-in web roots. Certificates are always verified.
    pub ca_file: Option<String>,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: u64,
    /// Allow `http://` base URLs. For the local stand-in only: a bearer token over plain
    /// HTTP is readable by anyone on the path.
    pub allow_http: bool,
    pub user_agent: String,
}

impl ClientConfig {
    /// A configuration with the default timeout, size limit and user agent.
    pub fn new(
        api_base_url: impl Into<String>,
        login_base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> ClientConfig {
        ClientConfig {
            api_base_url: api_base_url.into(),
            login_base_url: login_base_url.into(),
            client_id: client_id.into(),
            client_secret,
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            allow_http: false,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
        }
    }
}

/// One page of a list request.
#[derive(Debug, Clone, Copy)]
pub enum PageRequest<'a> {
    /// `path` is a catalog path with placeholders already expanded, possibly with its own
    /// query string (`/rest/v1.0/projects?company_id=12`); `query` adds parameters such as
    /// `filters[updated_at]`; `per_page` adds `page=1&per_page=N`.
    First {
        path: &'a str,
        query: &'a [(String, String)],
        per_page: Option<u32>,
        /// The answer is one object whose records are the array under this key (Procore's
        /// folders answer a folder with its `folders` and `files`); None: an array.
        records_key: Option<&'a str>,
    },
    /// The `next_url` of the previous [`Page`], used as given.
    Next { url: &'a str },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The JSON objects of this page, in Procore's order.
    pub records: Vec<serde_json::Value>,
    /// Absolute URL of the next page from the `Link` header; `None` on the last page and on
    /// endpoints that return the whole collection at once.
    pub next_url: Option<String>,
    /// The `Total` header: a hint only, records change during a sync.
    pub total: Option<u64>,
    pub rate_limit: Option<RateLimit>,
}

/// A Procore API and OAuth client.
///
/// Holds one `ureq::Agent`, so connections to Procore are kept alive and reused across pages,
/// users and threads. Methods take `&self` and keep no per-request state, so one client
/// serves every thread of a worker.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    api_base: Url,
    api_base_str: String,
    login_base_str: String,
    client_id: String,
    client_secret: Secret,
    max_response_bytes: u64,
    /// When set, the status of every webhooks API call (not sync pages, not OAuth) is noted.
    statuses: Option<StatusLog>,
}

/// The HTTP statuses of a client's single API calls, in order; None where no answer came.
/// For callers that count Procore's answers but make their calls where nothing else sees
/// them (a SQL function that registers a hook).
#[derive(Debug, Clone, Default)]
pub struct StatusLog(Arc<Mutex<Vec<Option<u16>>>>);

impl StatusLog {
    /// The statuses noted since the last take.
    pub fn take(&self) -> Vec<Option<u16>> {
        self.0
            .lock()
            .map(|mut noted| std::mem::take(&mut *noted))
            .unwrap_or_default()
    }

    fn note(&self, status: Option<u16>) {
        if let Ok(mut noted) = self.0.lock() {
            noted.push(status);
        }
    }
}

/// Which kind of endpoint answered: the same status means different things on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Api,
    OAuth,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ProcoreError> {
        let api_base = parse_base_url("api_base_url", &config.api_base_url, config.allow_http)?;
        let login_base =
            parse_base_url("login_base_url", &config.login_base_url, config.allow_http)?;
        if config.max_response_bytes == 0 {
            return Err(ProcoreError::Config(
                "max_response_bytes must be positive".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(ProcoreError::Config("timeout must be positive".into()));
        }
        let user_agent = if config.user_agent.trim().is_empty() {
            DEFAULT_USER_AGENT
        } else {
            config.user_agent.as_str()
        };
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls_config(config.ca_file.as_deref())?)
            .https_only(!config.allow_http)
            .timeout_connect(config.timeout)
            .timeout(config.timeout)
            // A redirect would be followed without the bearer token (ureq drops it) or, on
            // the token endpoint, re-posting the secret to wherever it points: neither is
            // wanted, so a 3xx surfaces as an error instead.
            .redirects(0)
            .user_agent(user_agent)
            .build();
        Ok(Client {
            agent,
            api_base_str: base_string(&api_base),
            api_base,
            login_base_str: base_string(&login_base),
            client_id: config.client_id,
            client_secret: config.client_secret,
            max_response_bytes: config.max_response_bytes,
            statuses: None,
        })
    }

    /// Notes a page's status when statuses are recorded: a page that parsed came with 200.
    pub(crate) fn note_page(&self, page: &Result<Page, ProcoreError>) {
        if let Some(statuses) = &self.statuses {
            statuses.note(match page {
                Ok(_) => Some(200),
                Err(e) => e.http_status(),
            });
        }
    }

    /// Notes the status of every single API call from now on.
    pub fn record_statuses(&mut self) -> StatusLog {
        self.statuses.get_or_insert_with(StatusLog::default).clone()
    }

    /// GETs one page of a list endpoint.
    ///
    /// Sends `Authorization: Bearer`, `Procore-Company-Id` when `company_id` is given (pass
    /// it for every page, `Next` included) and `Accept: application/json`. A `Next` URL on a
    /// different scheme, host or port than `api_base_url` is refused before anything is sent.
    pub fn list_page(
        &self,
        access_token: &Secret,
        company_id: Option<i64>,
        req: PageRequest<'_>,
    ) -> Result<Page, ProcoreError> {
        self.list_page_and_rate_limit(access_token, company_id, req)
            .0
    }

    /// [`Client::list_page`], with the rate-limit headers of whatever answered, error
    /// responses included (a 403 or 404 counts against the limit too). `None` when the
    /// answer had no such headers or no answer arrived.
    pub fn list_page_and_rate_limit(
        &self,
        access_token: &Secret,
        company_id: Option<i64>,
        req: PageRequest<'_>,
    ) -> (Result<Page, ProcoreError>, Option<RateLimit>) {
        let mut rate_limit = None;
        let result = self.get_page(access_token, company_id, req, &mut rate_limit);
        (result, rate_limit)
    }

    fn get_page(
        &self,
        access_token: &Secret,
        company_id: Option<i64>,
        req: PageRequest<'_>,
        rate_limit_seen: &mut Option<RateLimit>,
    ) -> Result<Page, ProcoreError> {
        let records_key = match req {
            PageRequest::First { records_key, .. } => records_key,
            PageRequest::Next { .. } => None,
        };
        let url = match req {
            PageRequest::First {
                path,
                query,
                per_page,
                ..
            } => self.first_page_url(path, query, per_page)?,
            PageRequest::Next { url } => self.next_page_url(url)?,
        };
        check_header_value("access token", access_token.expose())?;
        let secrets = [access_token.expose(), self.client_secret.expose()];

        let mut request = self
            .agent
            .request_url("GET", &url)
            .set(
                "Authorization",
                &format!("Bearer {}", access_token.expose()),
            )
            .set("Accept", "application/json");
        if let Some(company_id) = company_id {
            request = request.set("Procore-Company-Id", &company_id.to_string());
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                *rate_limit_seen = rate_limit_of(&response);
                return Err(self.status_error(Endpoint::Api, status, response, &secrets));
            }
            Err(ureq::Error::Transport(transport)) => {
                return Err(transport_error(&transport, &secrets))
            }
        };
        let rate_limit = rate_limit_of(&response);
        *rate_limit_seen = rate_limit;
        let status = response.status();
        if !(200..300).contains(&status) {
            return Err(self.status_error(Endpoint::Api, status, response, &secrets));
        }

        let total = response
            .header("Total")
            .and_then(|t| t.trim().parse::<u64>().ok());
        let links = response.all("Link").join(", ");
        let next_url = match next_link(&links) {
            // Relative links are legal in RFC 8288; resolve them against this page.
            Some(link) => Some(
                url.join(&link)
                    .map_err(|e| {
                        ProcoreError::BadResponse(format!(
                            "unparseable next link in Link header: {e}"
                        ))
                    })?
                    .to_string(),
            ),
            None => None,
        };
        let content_type = content_type_of(&response);
        let body = self.read_success_body(response, &secrets)?;
        let records = parse_records(&body, &content_type, &secrets, records_key)?;
        Ok(Page {
            records,
            next_url,
            total,
            rate_limit,
        })
    }

    /// POSTs a form to the login host and returns the success body, for the OAuth calls.
    pub(crate) fn post_login_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        secrets: &[&str],
    ) -> Result<Vec<u8>, ProcoreError> {
        let url = format!("{}{}", self.login_base_str, path);
        let mut all_secrets = secrets.to_vec();
        all_secrets.push(self.client_secret.expose());
        let response = match self
            .agent
            .post(&url)
            .set("Accept", "application/json")
            .send_form(form)
        {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                return Err(self.status_error(Endpoint::OAuth, status, response, &all_secrets))
            }
            Err(ureq::Error::Transport(transport)) => {
                return Err(transport_error(&transport, &all_secrets))
            }
        };
        let status = response.status();
        if !(200..300).contains(&status) {
            return Err(self.status_error(Endpoint::OAuth, status, response, &all_secrets));
        }
        self.read_success_body(response, &all_secrets)
    }

    /// One API call that is not a list page (webhook setup, one record): `method` on `path`
    /// (which may carry its own query string) with an optional JSON body, and the rate-limit
    /// headers of whatever answered. `Ok(None)` is an empty 2xx body (a 204). `extra_secrets`
    /// are scrubbed from error messages besides the token: Procore's validation errors can
    /// echo the request body.
    pub(crate) fn call_api_json(
        &self,
        access_token: &Secret,
        company_id: Option<i64>,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        extra_secrets: &[&str],
    ) -> (
        Result<Option<serde_json::Value>, ProcoreError>,
        Option<RateLimit>,
    ) {
        let mut rate_limit = None;
        // None: nothing was sent; Some(None): sent, and no answer came.
        let mut answered: Option<Option<u16>> = None;
        let mut secrets = vec![access_token.expose(), self.client_secret.expose()];
        secrets.extend_from_slice(extra_secrets);
        let secrets = secrets.as_slice();
        let mut send = || -> Result<Option<serde_json::Value>, ProcoreError> {
            let url = self.first_page_url(path, &[], None)?;
            check_header_value("access token", access_token.expose())?;
            let mut request = self
                .agent
                .request_url(method, &url)
                .set(
                    "Authorization",
                    &format!("Bearer {}", access_token.expose()),
                )
                .set("Accept", "application/json");
            if let Some(company_id) = company_id {
                request = request.set("Procore-Company-Id", &company_id.to_string());
            }
            answered = Some(None);
            let sent = match body {
                Some(body) => request.send_json(body),
                None => request.call(),
            };
            let response = match sent {
                Ok(response) => response,
                Err(ureq::Error::Status(status, response)) => {
                    answered = Some(Some(status));
                    rate_limit = rate_limit_of(&response);
                    return Err(self.status_error(Endpoint::Api, status, response, secrets));
                }
                Err(ureq::Error::Transport(transport)) => {
                    return Err(transport_error(&transport, secrets))
                }
            };
            rate_limit = rate_limit_of(&response);
            let status = response.status();
            answered = Some(Some(status));
            if !(200..300).contains(&status) {
                return Err(self.status_error(Endpoint::Api, status, response, secrets));
            }
            let content_type = content_type_of(&response);
            let body = self.read_success_body(response, secrets)?;
            let text = String::from_utf8_lossy(&body);
            if text.trim().is_empty() {
                return Ok(None);
            }
            if looks_like_html(&content_type, &text) {
                let excerpt = sanitize::one_line(&sanitize::html_text(&text), secrets, 150);
                return Err(ProcoreError::BadResponse(format!(
                    "HTML page instead of JSON (content-type: {content_type}): {excerpt}"
                )));
            }
            serde_json::from_slice(&body).map(Some).map_err(|e| {
                ProcoreError::BadResponse(format!(
                    "malformed JSON (content-type: {content_type}, {} bytes): {e}",
                    body.len()
                ))
            })
        };
        let result = send();
        if let (Some(statuses), Some(answered)) = (&self.statuses, answered) {
            statuses.note(answered);
        }
        (result, rate_limit)
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(crate) fn client_secret(&self) -> &Secret {
        &self.client_secret
    }

    fn first_page_url(
        &self,
        path: &str,
        query: &[(String, String)],
        per_page: Option<u32>,
    ) -> Result<Url, ProcoreError> {
        if !path.starts_with('/') {
            return Err(ProcoreError::Config(format!(
                "API path must start with '/': {}",
                sanitize::one_line(path, &[], 200)
            )));
        }
        let mut url = Url::parse(&format!("{}{}", self.api_base_str, path)).map_err(|e| {
            ProcoreError::Config(format!(
                "bad API path {}: {e}",
                sanitize::one_line(path, &[], 200)
            ))
        })?;
        if !query.is_empty() || per_page.is_some() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
            if let Some(per_page) = per_page {
                pairs.append_pair("page", "1");
                pairs.append_pair("per_page", &per_page.to_string());
            }
        }
        if !same_origin(&url, &self.api_base) {
            return Err(ProcoreError::Config(format!(
                "API path leaves the API host: {}",
                sanitize::one_line(path, &[], 200)
            )));
        }
        Ok(url)
    }

    fn next_page_url(&self, next: &str) -> Result<Url, ProcoreError> {
        let url = self.api_base.join(next).map_err(|e| {
            ProcoreError::BadResponse(format!(
                "unparseable next page URL {}: {e}",
                sanitize::one_line(next, &[], 200)
            ))
        })?;
        // The bearer token goes with every page; a Link header pointing elsewhere (a
        // misconfigured proxy, a hostile response) must not receive it.
        if !same_origin(&url, &self.api_base) {
            return Err(ProcoreError::BadResponse(format!(
                "next page URL {} is not on the API host {}; refusing to send the token there",
                origin_of(&url),
                origin_of(&self.api_base)
            )));
        }
        Ok(url)
    }

    /// Reads a 2xx body, refusing one over `max_response_bytes` without buffering it: a
    /// declared length is checked before reading, an undeclared one is counted while reading.
    fn read_success_body(
        &self,
        response: ureq::Response,
        secrets: &[&str],
    ) -> Result<Vec<u8>, ProcoreError> {
        let limit = self.max_response_bytes;
        let declared = response
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ProcoreError::TooLarge { limit });
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(MAX_PREALLOCATION) as usize);
        let read = response
            .into_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut body);
        match read {
            Ok(_) if body.len() as u64 > limit => Err(ProcoreError::TooLarge { limit }),
            Ok(_) => Ok(body),
            Err(e) => Err(body_read_error(&e, body.len(), declared, secrets)),
        }
    }

    fn status_error(
        &self,
        endpoint: Endpoint,
        status: u16,
        response: ureq::Response,
        secrets: &[&str],
    ) -> ProcoreError {
        let retry_after = response.header("Retry-After").and_then(parse_retry_after);
        let reset = response
            .header("X-Rate-Limit-Reset")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|epoch| DateTime::from_timestamp(epoch, 0));
        let location = response.header("Location").map(str::to_owned);
        let content_type = content_type_of(&response);
        let limit = ERROR_BODY_LIMIT.min(self.max_response_bytes);
        let mut body = Vec::new();
        // Whatever arrived is enough to explain the error; a failed read only shortens it.
        let _ = response.into_reader().take(limit).read_to_end(&mut body);
        let body = String::from_utf8_lossy(&body);
        let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();

        if endpoint == Endpoint::OAuth {
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(|e| e.as_str());
            match code {
                Some("invalid_grant") => {
                    let description = json
                        .as_ref()
                        .and_then(|j| j.get("error_description"))
                        .and_then(|d| d.as_str())
                        .unwrap_or("the refresh token or authorization code is invalid");
                    return ProcoreError::InvalidGrant(sanitize::excerpt(description, secrets));
                }
                Some("invalid_client") => return ProcoreError::InvalidClient,
                _ => {}
            }
        }

        let detail = error_detail(json.as_ref(), &body, &content_type, secrets);
        match status {
            401 if endpoint == Endpoint::Api => ProcoreError::Unauthorized,
            403 => ProcoreError::Forbidden(detail),
            404 => ProcoreError::NotFound(detail),
            429 => ProcoreError::RateLimited {
                retry_at: retry_after.or(reset).unwrap_or_else(|| {
                    Utc::now() + chrono::Duration::seconds(DEFAULT_RATE_LIMIT_WAIT_S)
                }),
            },
            503 => ProcoreError::Throttled {
                retry_at: retry_after,
            },
            500..=599 => ProcoreError::Server { status, detail },
            300..=399 => ProcoreError::Client {
                status,
                detail: format!(
                    "unexpected redirect to {}",
                    location
                        .and_then(|l| Url::parse(&l).ok())
                        .map(|u| origin_of(&u))
                        .unwrap_or_else(|| "an unknown location".to_owned())
                ),
            },
            _ => ProcoreError::Client { status, detail },
        }
    }
}

fn parse_base_url(name: &str, value: &str, allow_http: bool) -> Result<Url, ProcoreError> {
    let shown = sanitize::one_line(value, &[], 200);
    let url = Url::parse(value.trim())
        .map_err(|e| ProcoreError::Config(format!("{name} {shown:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(ProcoreError::Config(format!(
                "{name} {shown:?} uses plain http, which would expose tokens; use https"
            )))
        }
        other => {
            return Err(ProcoreError::Config(format!(
                "{name} {shown:?} has unsupported scheme {other:?}; use https"
            )))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ProcoreError::Config(format!(
            "{name} {shown:?} has no host"
        )));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ProcoreError::Config(format!(
            "{name} {shown:?} must be scheme, host, optional port and path only"
        )));
    }
    Ok(url)
}

/// The base URL without a trailing slash, so that catalog paths (which start with '/') can
/// be appended; keeps any path prefix a gateway might need.
fn base_string(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn tls_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, ProcoreError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let file = File::open(path)
            .map_err(|e| ProcoreError::Config(format!("cannot read CA file {path}: {e}")))?;
        let mut reader = BufReader::new(file);
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert
                .map_err(|e| ProcoreError::Config(format!("cannot parse CA file {path}: {e}")))?;
            roots.add(cert).map_err(|e| {
                ProcoreError::Config(format!("CA file {path} holds an unusable certificate: {e}"))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ProcoreError::Config(format!(
                "CA file {path} contains no PEM certificates"
            )));
        }
    }
    // Explicit provider: rustls would otherwise pick a process-wide default, which another
    // library in the same Postgres backend could have installed or left ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ProcoreError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A token with CR/LF would let outside data (a token response) inject headers.
fn check_header_value(what: &str, value: &str) -> Result<(), ProcoreError> {
    if value.is_empty() || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ProcoreError::Config(format!(
            "{what} is empty or has characters not allowed in an HTTP header"
        )));
    }
    Ok(())
}

fn rate_limit_of(response: &ureq::Response) -> Option<RateLimit> {
    RateLimit::from_headers(
        response.header("X-Rate-Limit-Limit"),
        response.header("X-Rate-Limit-Remaining"),
        response.header("X-Rate-Limit-Reset"),
    )
}

fn content_type_of(response: &ureq::Response) -> String {
    match response.header("Content-Type") {
        Some(ct) if !ct.trim().is_empty() => sanitize::one_line(ct, &[], 100),
        _ => "none".to_owned(),
    }
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u32>() {
        return Some(Utc::now() + chrono::Duration::seconds(i64::from(seconds)));
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The message of a Procore error body (`{"errors": ...}`, `{"error", "error_description"}`,
/// `{"message"}`), else the visible text of an HTML page or the raw body.
fn error_detail(
    json: Option<&serde_json::Value>,
    body: &str,
    content_type: &str,
    secrets: &[&str],
) -> String {
    if let Some(json) = json {
        let field = |name: &str| match json.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let message = match (field("error"), field("error_description")) {
            (Some(error), Some(description)) => Some(format!("{error}: {description}")),
            (error, description) => description
                .or(error)
                .or_else(|| field("errors"))
                .or_else(|| field("message")),
        };
        return sanitize::excerpt(&message.unwrap_or_else(|| json.to_string()), secrets);
    }
    if body.trim().is_empty() {
        return format!("empty body (content-type: {content_type})");
    }
    if looks_like_html(content_type, body) {
        let text = sanitize::one_line(&sanitize::html_text(body), secrets, 150);
        return format!("HTML page (content-type: {content_type}): {text}");
    }
    sanitize::excerpt(body, secrets)
}

fn looks_like_html(content_type: &str, body: &str) -> bool {
    content_type.to_ascii_lowercase().contains("html") || body.trim_start().starts_with('<')
}

fn parse_records(
    body: &[u8],
    content_type: &str,
    secrets: &[&str],
    records_key: Option<&str>,
) -> Result<Vec<serde_json::Value>, ProcoreError> {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return Err(ProcoreError::BadResponse(format!(
            "empty body where a JSON array was expected (content-type: {content_type})"
        )));
    }
    if looks_like_html(content_type, &text) {
        let excerpt = sanitize::one_line(&sanitize::html_text(&text), secrets, 150);
        return Err(ProcoreError::BadResponse(format!(
            "HTML page instead of JSON (content-type: {content_type}): {excerpt}"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ProcoreError::BadResponse(format!(
            "malformed JSON (content-type: {content_type}, {} bytes): {e}",
            body.len()
        ))
    })?;
    let value = match (records_key, value) {
        (Some(key), serde_json::Value::Object(mut object)) => object
            .remove(key)
            .unwrap_or(serde_json::Value::Array(Vec::new())),
        (_, value) => value,
    };
    let serde_json::Value::Array(records) = value else {
        return Err(ProcoreError::BadResponse(format!(
            "expected a JSON array of records, got {} (content-type: {content_type}): {}",
            json_kind(&value),
            sanitize::excerpt(&value.to_string(), secrets)
        )));
    };
    if let Some((index, bad)) = records.iter().enumerate().find(|(_, r)| !r.is_object()) {
        return Err(ProcoreError::BadResponse(format!(
            "expected a JSON array of objects, element {index} is {} (content-type: {content_type})",
            json_kind(bad)
        )));
    }
    Ok(records)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn body_read_error(
    e: &io::Error,
    received: usize,
    declared: Option<u64>,
    secrets: &[&str],
) -> ProcoreError {
    if is_timeout(e) {
        return ProcoreError::Timeout;
    }
    let expected = declared.map_or_else(|| "?".to_owned(), |d| d.to_string());
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ProcoreError::truncated(format!(
            "connection closed after {received} of {expected} bytes"
        )),
        // ureq's chunked decoder reports a cut-off chunk as invalid input/data.
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            ProcoreError::truncated(format!(
                "broken body after {received} bytes: {}",
                sanitize::one_line(&e.to_string(), secrets, 200)
            ))
        }
        _ => ProcoreError::Connection(format!(
            "reading the response body failed after {received} bytes: {}",
            sanitize::one_line(&e.to_string(), secrets, 200)
        )),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Every error in a `source()` chain, including the payload of each `io::Error`, which
/// `io::Error::source` skips (it returns the payload's source, not the payload).
fn error_chain<'a>(top: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(top);
    while let Some(err) = next {
        if chain.len() > 16 {
            break;
        }
        chain.push(err);
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            chain.push(inner as &(dyn StdError + 'static));
        }
        next = err.source();
    }
    chain
}

/// ureq nests errors that print the same label ("Network Error: Network Error: ...").
fn without_repeats(message: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in message.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

fn transport_error(transport: &ureq::Transport, secrets: &[&str]) -> ProcoreError {
    let chain = error_chain(transport);
    if let Some(tls) = chain.iter().find_map(|e| e.downcast_ref::<rustls::Error>()) {
        let message = sanitize::one_line(&tls.to_string(), secrets, 300);
        return ProcoreError::Tls(match tls {
            rustls::Error::InvalidCertificate(_) => {
                format!("TLS certificate verification failed: {message}")
            }
            _ => format!("TLS handshake failed: {message}"),
        });
    }
    if chain
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(is_timeout)
    {
        return ProcoreError::Timeout;
    }
    let message = sanitize::one_line(&without_repeats(&transport.to_string()), secrets, 300);
    use ureq::ErrorKind as K;
    match transport.kind() {
        K::InvalidUrl | K::UnknownScheme | K::InsecureRequestHttpsOnly => {
            ProcoreError::Config(message)
        }
        K::BadStatus | K::BadHeader | K::TooManyRedirects => {
            ProcoreError::BadResponse(format!("invalid HTTP response: {message}"))
        }
        K::ConnectionFailed if message.to_ascii_lowercase().contains("tls") => {
            ProcoreError::Tls(format!("TLS handshake failed: {message}"))
        }
        _ => ProcoreError::Connection(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(api: &str) -> Client {
        let mut config = ClientConfig::new(api, api, "id", Secret::new("secret"));
        config.allow_http = true;
        match Client::new(config) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn first_page_url_appends_query_and_paging() {
        let c = client("https://api.example.com/");
        let query = vec![(
            "filters[updated_at]".to_owned(),
            "2026-01-01T00:00:00Z...2026-01-02T00:00:00Z".to_owned(),
        )];
        let url = c
            .first_page_url("/rest/v1.0/projects?company_id=12", &query, Some(500))
            .map(|u| u.to_string());
        assert_eq!(
            url.ok().as_deref(),
            Some("https://api.example.com/rest/v1.0/projects?company_id=12&filters%5Bupdated_at%5D=2026-01-01T00%3A00%3A00Z...2026-01-02T00%3A00%3A00Z&page=1&per_page=500")
        );
        let url = c
            .first_page_url("/rest/v1.0/companies", &[], None)
            .map(|u| u.to_string());
        assert_eq!(
            url.ok().as_deref(),
            Some("https://api.example.com/rest/v1.0/companies")
        );
    }

    #[test]
    fn first_page_url_refuses_paths_that_are_not_paths() {
        let c = client("https://api.example.com");
        assert!(matches!(
            c.first_page_url("https://evil.example/x", &[], None),
            Err(ProcoreError::Config(_))
        ));
        assert!(matches!(
            c.first_page_url("rest/v1.0/x", &[], None),
            Err(ProcoreError::Config(_))
        ));
    }

    #[test]
    fn base_url_path_prefix_is_kept() {
        let c = client("https://gw.example.com/procore/");
        let url = c
            .first_page_url("/rest/v1.0/companies", &[], None)
            .map(|u| u.to_string());
        assert_eq!(
            url.ok().as_deref(),
            Some("https://gw.example.com/procore/rest/v1.0/companies")
        );
    }

    #[test]
    fn next_page_url_must_stay_on_the_api_origin() {
        let c = client("https://api.example.com");
        assert!(c
            .next_page_url("https://api.example.com/rest/v1.0/x?page=2")
            .is_ok());
        assert!(c
            .next_page_url("https://api.example.com:443/rest/v1.0/x?page=2")
            .is_ok());
        assert!(c.next_page_url("/rest/v1.0/x?page=2").is_ok());
        for bad in [
            "https://evil.example/rest/v1.0/x?page=2",
            "http://api.example.com/rest/v1.0/x?page=2",
            "https://api.example.com:8443/rest/v1.0/x?page=2",
            "//evil.example/x",
            "https://api.example.com.evil.example/x",
        ] {
            assert!(
                matches!(c.next_page_url(bad), Err(ProcoreError::BadResponse(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let now = Utc::now();
        let at = parse_retry_after(" 30 ").unwrap_or(now);
        assert!((at - now).num_seconds() >= 29 && (at - now).num_seconds() <= 31);
        let at = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").map(|d| d.timestamp());
        assert_eq!(at, Some(1_445_412_480));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_detail_prefers_procore_messages() {
        let j = serde_json::json!({"errors": "no access"});
        assert_eq!(
            error_detail(Some(&j), "", "application/json", &[]),
            "no access"
        );
        let j = serde_json::json!({"error": "invalid_token", "error_description": "expired"});
        assert_eq!(
            error_detail(Some(&j), "", "application/json", &[]),
            "invalid_token: expired"
        );
        let j = serde_json::json!({"errors": {"name": ["is missing"]}});
        assert_eq!(
            error_detail(Some(&j), "", "application/json", &[]),
            r#"{"name":["is missing"]}"#
        );
        assert_eq!(
            error_detail(None, "", "text/plain", &[]),
            "empty body (content-type: text/plain)"
        );
        assert_eq!(
            error_detail(
                None,
                "<html><h1>502 Bad Gateway</h1></html>",
                "text/html",
                &[]
            ),
            "HTML page (content-type: text/html): 502 Bad Gateway"
        );
    }

    #[test]
    fn header_values_with_line_breaks_are_refused() {
        assert!(check_header_value("t", "abc\r\nX-Evil: 1").is_err());
        assert!(check_header_value("t", "").is_err());
        assert!(check_header_value("t", "abc.DEF-123_~+/=").is_ok());
    }
}
