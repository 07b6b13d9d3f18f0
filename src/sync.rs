//! One user's sync (SPEC §4): a fresh token, then companies → company resources → projects
//! → project resources, page by page. Runs in a background worker; every page is committed
//! on its own so progress survives a crash, and HTTP never happens inside a long transaction.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::catalog::{self, Resource, Scope};
use crate::errors::SyncError;
use crate::procore::pagination::{expand_path, updated_at_filter};
use crate::procore::rate_limit::delay_before_next;
use crate::procore::{backoff, Client, Page, PageRequest, ProcoreError, RateLimit, Secret};
use crate::records;
use crate::settings;
use crate::store::{self, Progress};
use crate::visibility::{self, Listing, SeenIds};
use crate::worker::in_transaction;

/// Refresh this long before expiry, so no request goes out with a token about to die.
const REFRESH_MARGIN: TimeDelta = TimeDelta::seconds(60);
/// Waits up to this long happen in place; longer ones park the item and free the worker.
const LONGEST_INLINE_WAIT: Duration = Duration::from_secs(15);
/// Retries of one request before the item as a whole is retried later.
const REQUEST_RETRIES: u32 = 3;
/// Incremental windows start this much before the last pass, for clock skew between
/// Procore's servers.
const INCREMENTAL_OVERLAP: TimeDelta = TimeDelta::seconds(120);

pub struct SyncItem {
    pub queue_id: i64,
    pub user_id: String,
}

#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub records_written: i64,
    pub requests_made: i64,
    /// Resources that failed on their own (403, 404, bad data) without stopping the sync.
    pub resource_errors: Vec<String>,
}

#[derive(Debug)]
pub enum SyncFailure {
    /// Can succeed later: retried with backoff up to `max_attempts`.
    Retryable(String),
    /// Procore's rate limit: due again at `retry_at`, not counted as an attempt.
    RateLimited {
        retry_at: DateTime<Utc>,
        message: String,
    },
    /// Retrying cannot help (revoked grant, bad client credentials, bad settings).
    Permanent(String),
    /// The server is shutting down: the item goes back to the queue untouched.
    Shutdown,
    /// Another worker took the item over: stop and leave it to that worker.
    LeaseLost(String),
}

impl SyncFailure {
    fn from_procore(e: ProcoreError) -> Self {
        match e {
            ProcoreError::RateLimited { retry_at } => SyncFailure::RateLimited {
                retry_at,
                message: "Procore rate limit reached".into(),
            },
            e if e.is_retryable() => SyncFailure::Retryable(e.to_string()),
            e => SyncFailure::Permanent(e.to_string()),
        }
    }

    fn from_db(e: impl std::fmt::Display) -> Self {
        SyncFailure::Retryable(format!("database: {e}"))
    }

    fn from_store(e: SyncError) -> Self {
        match e {
            SyncError::LeaseLost(_) => SyncFailure::LeaseLost(e.to_string()),
            e => SyncFailure::from_db(e),
        }
    }

    pub fn message(&self) -> String {
        match self {
            SyncFailure::Retryable(m) | SyncFailure::Permanent(m) | SyncFailure::LeaseLost(m) => {
                m.clone()
            }
            SyncFailure::RateLimited { message, retry_at } => {
                format!(
                    "{message}; due again at {}",
                    retry_at.format("%Y-%m-%d %H:%M:%S UTC")
                )
            }
            SyncFailure::Shutdown => "interrupted by server shutdown".into(),
        }
    }
}

/// Runs a database step in its own committed transaction.
fn step<R>(body: impl FnOnce() -> Result<R, SyncError>) -> Result<R, SyncFailure> {
    match in_transaction(body) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SyncFailure::from_store(e)),
        Err(message) => Err(SyncFailure::from_db(message)),
    }
}

/// Sleeps in a way that a shutdown request interrupts; false means "stop now".
pub type Sleeper<'a> = &'a dyn Fn(Duration) -> bool;

struct Session<'a> {
    item: &'a SyncItem,
    client: Client,
    access_token: Secret,
    expires_at: DateTime<Utc>,
    rate_limit: Option<RateLimit>,
    outcome: SyncOutcome,
    sleep: Sleeper<'a>,
    lease_seconds: i64,
    pages: i64,
}

/// Syncs one user. `rate_limit` receives the last rate-limit headers Procore sent, whatever
/// the outcome, so the status view can show the user's headroom.
pub fn sync_user(
    item: &SyncItem,
    sleep: Sleeper,
    rate_limit: &mut Option<RateLimit>,
) -> Result<SyncOutcome, SyncFailure> {
    let client = Client::new(settings::client_config()).map_err(SyncFailure::from_procore)?;
    let credentials = step(|| store::credentials(&item.user_id))?.ok_or_else(|| {
        SyncFailure::Permanent(format!("no Procore credentials for user {}", item.user_id))
    })?;
    if credentials.needs_reconnect {
        return Err(SyncFailure::Permanent(format!(
            "user {} must reconnect to Procore: {}",
            item.user_id,
            credentials.reconnect_reason.unwrap_or_default()
        )));
    }
    let resources = step(catalog::enabled_resources)?;
    let mut session = Session {
        item,
        client,
        access_token: credentials.access_token,
        expires_at: credentials.expires_at,
        rate_limit: None,
        outcome: SyncOutcome::default(),
        sleep,
        lease_seconds: settings::lease_seconds(),
        pages: 0,
    };
    let walked = session.walk(&resources);
    *rate_limit = session.rate_limit;
    walked.map(|()| session.outcome)
}

impl Session<'_> {
    fn walk(&mut self, resources: &[Resource]) -> Result<(), SyncFailure> {
        let by_scope = |scope: Scope| resources.iter().filter(move |r| r.scope == scope);
        let companies = match resources.iter().find(|r| r.name == "companies") {
            Some(r) => self.sync_resource(r, None, None)?,
            None => {
                return Err(SyncFailure::Permanent(
                    "the resource catalog has no 'companies' entry".into(),
                ))
            }
        };
        let user = self.item.user_id.clone();
        if let Some(companies) = &companies {
            step(|| visibility::revoke_other_companies(&user, companies))?;
        }
        for company_id in companies.unwrap_or_default() {
            let mut project_ids = Vec::new();
            for resource in by_scope(Scope::Company) {
                let seen = self.sync_resource(resource, Some(company_id), None)?;
                if resource.name == "projects" {
                    if let Some(projects) = &seen {
                        step(|| visibility::revoke_other_projects(&user, company_id, projects))?;
                    }
                    project_ids = seen.unwrap_or_default();
                }
            }
            for project_id in project_ids {
                for resource in by_scope(Scope::Project) {
                    self.sync_resource(resource, Some(company_id), Some(project_id))?;
                }
            }
        }
        for resource in by_scope(Scope::User).filter(|r| r.name != "companies") {
            self.sync_resource(resource, None, None)?;
        }
        Ok(())
    }

    /// Syncs one resource in one scope. Returns the ids it saw on a full pass (None when the
    /// resource failed on its own and was recorded), so callers can walk into children.
    fn sync_resource(
        &mut self,
        resource: &Resource,
        company_id: Option<i64>,
        project_id: Option<i64>,
    ) -> Result<Option<Vec<i64>>, SyncFailure> {
        match self.read_resource(resource, company_id, project_id) {
            Ok(ids) => Ok(Some(ids)),
            Err(ResourceFailure::Sync(f)) => Err(f),
            Err(ResourceFailure::Resource { message, denied }) => {
                let scope = match (company_id, project_id) {
                    (_, Some(p)) => format!(" in project {p}"),
                    (Some(c), None) => format!(" in company {c}"),
                    _ => String::new(),
                };
                let error = format!("{}{scope}: {message}", resource.name);
                pgrx::warning!("procore_sync: user {}: {error}", self.item.user_id);
                let user = self.item.user_id.clone();
                let name = resource.name.clone();
                let (cursor_company, cursor_project) =
                    (company_id.unwrap_or(0), project_id.unwrap_or(0));
                step(|| {
                    store::save_cursor(
                        &user,
                        &name,
                        cursor_company,
                        cursor_project,
                        Utc::now(),
                        false,
                        Some(&message),
                    )?;
                    // Procore no longer lets this user see the scope: neither do we.
                    if denied {
                        visibility::deny_scope(&user, &name, cursor_company, cursor_project)?;
                    }
                    Ok(())
                })?;
                self.outcome.resource_errors.push(error);
                Ok(None)
            }
        }
    }

    fn read_resource(
        &mut self,
        resource: &Resource,
        company_id: Option<i64>,
        project_id: Option<i64>,
    ) -> Result<Vec<i64>, ResourceFailure> {
        let path = expand_path(&resource.path_template, company_id, project_id)
            .map_err(ResourceFailure::resource)?;
        let (cursor_company, cursor_project) = (company_id.unwrap_or(0), project_id.unwrap_or(0));
        let user = self.item.user_id.clone();
        let pass_started = Utc::now();
        // Companies and projects are always read whole: the walk needs every id. User-level
        // listings too: their grants are per record (see visibility).
        let structural = resource.name == "companies" || resource.name == "projects";
        let user_level = resource.scope == Scope::User;
        let since = if resource.supports_updated_at_filter && !structural && !user_level {
            let cursor =
                step(|| store::cursor(&user, &resource.name, cursor_company, cursor_project))?;
            incremental_since(cursor, pass_started, settings::full_sync_interval_seconds())
        } else {
            None
        };
        let query: Vec<(String, String)> = match since {
            Some(from) => {
                let (k, v) = updated_at_filter(from, pass_started);
                vec![(k, v)]
            }
            None => Vec::new(),
        };
        let per_page = resource.paginated.then_some(resource.per_page);
        // The walk needs the ids of companies and projects, and a user-level listing grants
        // its records one by one; a company's or project's listing ends with what it
        // returned (visibility, deletions).
        let mut walk_ids = Vec::new();
        let mut seen = match (user_level, company_id) {
            (false, Some(_)) => Some(SeenIds::new()),
            _ => None,
        };
        // Companies are their own company; everything else belongs to the scope's company.
        let record_company = if user_level { None } else { company_id };
        let mut next: Option<String> = None;
        loop {
            let request = match &next {
                None => PageRequest::First {
                    path: &path,
                    query: &query,
                    per_page,
                },
                Some(url) => PageRequest::Next { url },
            };
            let page = self.fetch(request, company_id)?;
            next = page.next_url;
            let rows = records::page_rows(page.records)
                .map_err(|e| ResourceFailure::resource(format!("bad data from Procore: {e}")))?;
            let page_ids: Vec<i64> = rows.iter().map(|r| r.procore_id).collect();
            if structural || user_level {
                walk_ids.extend_from_slice(&page_ids);
            }
            self.pages += 1;
            let name = resource.name.as_str();
            let written = step(|| {
                visibility::lock_scope(name, record_company, project_id)?;
                if let Some(seen) = seen.as_mut() {
                    seen.add(&page_ids)?;
                }
                store::upsert_page(name, record_company, project_id, rows)
            })?;
            self.outcome.records_written += written;
            self.report_progress(name, company_id, project_id)?;
            if next.is_none() {
                break;
            }
            if !(self.sleep)(Duration::ZERO) {
                return Err(ResourceFailure::Sync(SyncFailure::Shutdown));
            }
        }
        let full_pass = since.is_none();
        let name = resource.name.clone();
        step(|| {
            visibility::lock_scope(&name, record_company, project_id)?;
            // Before save_cursor moves listed_at: the end of the listing compares with the
            // previous one. Company lists are per user, so a company missing from one user's
            // list says nothing about the others: it is only no longer theirs.
            match (seen, company_id) {
                (Some(seen), Some(company)) => {
                    seen.finish(&Listing {
                        user_id: &user,
                        resource: &name,
                        company_id: company,
                        project_id,
                        window_from: since,
                    })?;
                }
                _ if user_level => visibility::grant_listed_records(&user, &name, &walk_ids)?,
                _ => {}
            }
            store::save_cursor(
                &user,
                &name,
                cursor_company,
                cursor_project,
                pass_started,
                full_pass,
                None,
            )
        })?;
        Ok(walk_ids)
    }

    fn report_progress(
        &mut self,
        resource: &str,
        company_id: Option<i64>,
        project_id: Option<i64>,
    ) -> Result<(), SyncFailure> {
        let progress = Progress {
            queue_id: self.item.queue_id,
            user_id: &self.item.user_id,
            resource,
            company_id,
            project_id,
            pages: self.pages,
            records: self.outcome.records_written,
            requests: self.outcome.requests_made,
            rate_limit: self.rate_limit.as_ref().map(|r| {
                (
                    r.remaining.min(i32::MAX as u32) as i32,
                    r.limit.min(i32::MAX as u32) as i32,
                )
            }),
        };
        let lease = self.lease_seconds;
        step(|| store::record_progress(&progress, lease))
    }

    /// One page, with everything that makes a request succeed eventually: a fresh token,
    /// pacing under the rate limit, one refresh on 401, short waits and retries.
    fn fetch(
        &mut self,
        request: PageRequest,
        company_id: Option<i64>,
    ) -> Result<Page, ResourceFailure> {
        let mut refreshed_after_401 = false;
        let mut transient_failures = 0u32;
        let mut waited_out_429 = false;
        loop {
            if self.expires_at - REFRESH_MARGIN <= Utc::now() {
                self.refresh_access_token()?;
            }
            if let Some(wait) = self
                .rate_limit
                .as_ref()
                .and_then(|rl| delay_before_next(rl, Utc::now().timestamp()))
            {
                self.wait(
                    wait,
                    Utc::now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::zero()),
                )?;
            }
            self.outcome.requests_made += 1;
            let (result, rate_limit) =
                self.client
                    .list_page_and_rate_limit(&self.access_token, company_id, request);
            if let Some(rl) = rate_limit {
                self.rate_limit = Some(rl);
            }
            match result {
                Ok(page) => return Ok(page),
                Err(ProcoreError::Unauthorized) if !refreshed_after_401 => {
                    refreshed_after_401 = true;
                    self.refresh_access_token()?;
                }
                // One 429 is waited out in place; a second in a row means the user's limit
                // is really spent, so the item is parked and the worker moves on.
                Err(ProcoreError::RateLimited { retry_at }) if waited_out_429 => {
                    return Err(ResourceFailure::Sync(SyncFailure::RateLimited {
                        retry_at,
                        message: "Procore kept answering 429 (rate limit)".into(),
                    }));
                }
                Err(ProcoreError::RateLimited { retry_at }) => {
                    waited_out_429 = true;
                    let wait = (retry_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    self.wait(wait, retry_at)?;
                }
                Err(e) if e.is_retryable() && transient_failures < REQUEST_RETRIES => {
                    transient_failures += 1;
                    let delay = e
                        .retry_at()
                        .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                        .unwrap_or_else(|| {
                            backoff::retry_delay(
                                transient_failures,
                                Duration::from_millis(250),
                                Duration::from_secs(10),
                                &mut rand::thread_rng(),
                            )
                        });
                    self.wait(
                        delay,
                        Utc::now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::zero()),
                    )?;
                }
                Err(
                    e @ (ProcoreError::Forbidden(_)
                    | ProcoreError::NotFound(_)
                    | ProcoreError::Client { .. }
                    | ProcoreError::BadResponse(_)
                    | ProcoreError::TooLarge { .. }),
                ) if !e.is_retryable() => {
                    let denied =
                        matches!(e, ProcoreError::Forbidden(_) | ProcoreError::NotFound(_));
                    return Err(ResourceFailure::Resource {
                        message: e.to_string(),
                        denied,
                    });
                }
                Err(e) => return Err(ResourceFailure::Sync(SyncFailure::from_procore(e))),
            }
        }
    }

    /// Waits in place when the wait is short; otherwise parks the item until `until`.
    fn wait(&mut self, wait: Duration, until: DateTime<Utc>) -> Result<(), ResourceFailure> {
        if wait > LONGEST_INLINE_WAIT {
            return Err(ResourceFailure::Sync(SyncFailure::RateLimited {
                retry_at: until,
                message: format!("Procore asked to wait {}s", wait.as_secs()),
            }));
        }
        if (self.sleep)(wait) {
            Ok(())
        } else {
            Err(ResourceFailure::Sync(SyncFailure::Shutdown))
        }
    }

    /// Spends the refresh token under a row lock and commits the new pair before using it:
    /// Procore's refresh tokens are single-use, so losing the new one disconnects the user.
    /// The pair goes to the token journal the moment it arrives, so even a crash before the
    /// commit cannot lose it.
    fn refresh_access_token(&mut self) -> Result<(), ResourceFailure> {
        let user = self.item.user_id.clone();
        let current = self.access_token.clone();
        let client = &self.client;
        let journal = store::token_journal();
        let refreshed = in_transaction(|| -> Result<(Secret, DateTime<Utc>), SyncFailure> {
            let mut credentials = store::credentials_for_refresh(&user)
                .map_err(SyncFailure::from_db)?
                .ok_or_else(|| {
                    SyncFailure::Permanent(format!("user {user} was disconnected during the sync"))
                })?;
            if credentials.needs_reconnect {
                return Err(SyncFailure::Permanent(format!(
                    "user {user} must reconnect to Procore"
                )));
            }
            // A crash after a rotation left the newest pair in the journal: it wins.
            if let Some(pair) = journal.pending(&user) {
                store::restore_tokens(&user, &pair).map_err(SyncFailure::from_db)?;
                credentials.access_token = pair.access_token;
                credentials.refresh_token = pair.refresh_token;
                credentials.expires_at = pair.expires_at;
            }
            // Another process refreshed while we waited for the lock: use its token.
            if credentials.access_token != current
                && credentials.expires_at - REFRESH_MARGIN > Utc::now()
            {
                return Ok((credentials.access_token, credentials.expires_at));
            }
            match client.refresh_token(&credentials.refresh_token) {
                Ok(pair) => {
                    if let Err(e) = journal.record(&user, &pair) {
                        pgrx::warning!(
                            "procore_sync: user {user}: could not journal the new tokens: {e}"
                        );
                    }
                    settings::crash_if_failpoint("crash_after_token_refresh");
                    store::save_tokens(&user, &pair).map_err(SyncFailure::from_db)?;
                    Ok((pair.access_token, pair.expires_at))
                }
                Err(ProcoreError::InvalidGrant(description)) => {
                    let reason = format!("Procore refused the refresh token (invalid_grant: {description}); the user must reconnect");
                    store::mark_needs_reconnect(&user, &reason).map_err(SyncFailure::from_db)?;
                    Err(SyncFailure::Permanent(reason))
                }
                Err(e) => Err(SyncFailure::from_procore(e)),
            }
        });
        match refreshed {
            Ok(Ok((token, expires_at))) => {
                // Committed: the journal entry has done its job.
                if let Err(e) = journal.forget(&user) {
                    pgrx::warning!(
                        "procore_sync: user {user}: could not clear the token journal: {e}"
                    );
                }
                self.access_token = token;
                self.expires_at = expires_at;
                Ok(())
            }
            Ok(Err(failure)) => Err(ResourceFailure::Sync(failure)),
            Err(message) => Err(ResourceFailure::Sync(SyncFailure::from_db(message))),
        }
    }
}

/// Where an incremental pass starts, or None for a full pass: the first pass, a pass after a
/// failure, one every `full_sync_interval`, and one while the user holds no grant to the
/// scope (never listed it, was refused it, or came from 0.1.0, which kept no grants) are
/// full.
fn incremental_since(
    cursor: Option<store::CursorTimes>,
    now: DateTime<Utc>,
    full_sync_interval_s: i64,
) -> Option<DateTime<Utc>> {
    let store::CursorTimes {
        last_synced: Some(last_synced),
        last_full: Some(last_full),
        listed: Some(_),
    } = cursor?
    else {
        return None;
    };
    if now - last_full >= TimeDelta::seconds(full_sync_interval_s) {
        return None;
    }
    Some(last_synced - INCREMENTAL_OVERLAP)
}

enum ResourceFailure {
    /// Fails this resource in this scope only; the rest of the sync goes on. `denied`: Procore
    /// refused the user the scope (403, 404), which takes away their grant to it.
    Resource { message: String, denied: bool },
    /// Stops the whole sync.
    Sync(SyncFailure),
}

impl ResourceFailure {
    fn resource(message: String) -> Self {
        ResourceFailure::Resource {
            message,
            denied: false,
        }
    }
}

impl From<SyncFailure> for ResourceFailure {
    fn from(f: SyncFailure) -> Self {
        ResourceFailure::Sync(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap()
    }

    fn cursor(last: DateTime<Utc>, full: Option<DateTime<Utc>>) -> Option<store::CursorTimes> {
        Some(store::CursorTimes {
            last_synced: Some(last),
            last_full: full,
            listed: Some(last),
        })
    }

    #[test]
    fn first_pass_and_stale_full_pass_are_full() {
        assert_eq!(incremental_since(None, at(12), 86_400), None);
        assert_eq!(
            incremental_since(cursor(at(11), None), at(12), 86_400),
            None
        );
        let long_ago = at(0) - TimeDelta::days(2);
        assert_eq!(
            incremental_since(cursor(at(11), Some(long_ago)), at(12), 86_400),
            None
        );
    }

    #[test]
    fn incremental_pass_starts_before_the_last_one() {
        let since = incremental_since(cursor(at(11), Some(at(1))), at(12), 86_400);
        assert_eq!(since, Some(at(11) - INCREMENTAL_OVERLAP));
    }

    #[test]
    fn a_scope_without_a_grant_is_read_in_full() {
        let mut refused = cursor(at(11), Some(at(1)));
        if let Some(c) = refused.as_mut() {
            c.listed = None;
        }
        assert_eq!(incremental_since(refused, at(12), 86_400), None);
    }

    #[test]
    fn zero_interval_means_always_full() {
        assert_eq!(
            incremental_since(cursor(at(11), Some(at(11))), at(12), 0),
            None
        );
    }
}
