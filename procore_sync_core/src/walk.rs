//! One user's sync (SPEC §4) as a state machine with no I/O: companies → company resources
//! → projects → project resources, page by page.
//!
//! The walk never waits and never talks to the network. The caller asks it what to do next
//! ([`UserWalk::poll`]): send this page request, refresh the token, nothing until a response
//! or a time. It hands responses back ([`UserWalk::on_page`], [`UserWalk::on_refresh`]), and
//! the walk writes through a [`WalkStore`]. That is what lets one worker carry many users at
//! once (their requests in flight on other threads) and lets every rule below be tested
//! with fakes, in plain `cargo test`:
//! - the pages of one listing go out one after the other, in order;
//! - a user's requests pace themselves from `X-Rate-Limit-*`, counting their own requests
//!   in flight, so they stay inside the user's own window whatever else is going on;
//! - 401 refreshes once per request; a token about to expire is refreshed before use;
//! - one 429 is waited out when short, a second in a row parks the user;
//! - timeouts, dropped connections and 5xx are retried a few times with backoff;
//! - 403/404/other 4xx/bad JSON fail that one listing and the walk goes on;
//! - child resources are listed once per parent record, after the parent's listing, with
//!   the parent ids read back from the store in batches (so a tree of any size costs the
//!   walk a bounded queue); a 404 on a child listing means its parent is gone: that
//!   listing stops, and it is no error;
//! - dated resources read a window of days, not `filters[updated_at]`;
//! - an incremental pass of a resource whose deleted records Procore lists (a recycle bin,
//!   `filters[include_deleted]=only`) reads that list right after, so deletions land
//!   within one cycle.

use std::collections::VecDeque;
use std::fmt;

use crate::catalog::{DateFilter, Resource, Scope};
use crate::procore::pagination::{expand_child_path, updated_at_filter};
use crate::procore::rate_limit::delay_before_next;
use crate::procore::{backoff, PageRequest, ProcoreError, RateLimit, Secret};
use crate::records::RecordRow;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// Refresh this long before expiry, so no request goes out with a token about to die.
pub const REFRESH_MARGIN: TimeDelta = TimeDelta::seconds(60);
/// Waits up to this long keep the user in flight; longer ones park it and free its place.
pub const LONGEST_INLINE_WAIT: TimeDelta = TimeDelta::seconds(15);
/// Retries of one request before the user as a whole is retried later.
const REQUEST_RETRIES: u32 = 3;
/// Incremental windows start this much before the last pass, for clock skew between
/// Procore's servers.
const INCREMENTAL_OVERLAP: TimeDelta = TimeDelta::seconds(120);
/// Parent ids read back from the store at a time to queue their children's listings: the
/// walk holds at most this many queued listings per level of a tree.
pub const CHILD_BATCH: usize = 50;
/// Where a dated resource's history starts when the first pass reads all of it: before
/// Procore existed, so every project's first day is after it.
pub const HISTORY_START: (i32, u32, u32) = (2000, 1, 1);

#[derive(Debug, Clone)]
pub struct WalkConfig {
    /// A full pass of each scope at least this often; incremental passes in between.
    pub full_sync_interval_s: i64,
    /// Listings of this user read at the same time (each one still page by page).
    pub listings_in_flight: usize,
    /// Days a full pass of a dated resource reads, today included.
    pub dated_window_days: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub records_written: i64,
    pub requests_made: i64,
    /// Listings that failed on their own (403, 404, bad data) without stopping the sync.
    pub resource_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub fn from_procore(e: ProcoreError) -> Self {
        match e {
            ProcoreError::RateLimited { retry_at } => SyncFailure::RateLimited {
                retry_at,
                message: "Procore rate limit reached".into(),
            },
            e if e.is_retryable() => SyncFailure::Retryable(e.to_string()),
            e => SyncFailure::Permanent(e.to_string()),
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

/// Why the store could not do what the walk asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The user's lease ran out and another worker holds the user now: write nothing more.
    LeaseLost(String),
    Database(String),
}

impl From<StoreError> for SyncFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost(m) => SyncFailure::LeaseLost(m),
            StoreError::Database(m) => SyncFailure::Retryable(format!("database: {m}")),
        }
    }
}

/// When a scope was last read, from the user's cursor row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CursorTimes {
    pub last_synced: Option<DateTime<Utc>>,
    pub last_full: Option<DateTime<Utc>>,
    /// Set while the user holds a grant to the scope: their last listing of it succeeded.
    pub listed: Option<DateTime<Utc>>,
}

/// What a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingKind {
    /// The resource's records.
    Records,
    /// The ids of its records Procore deleted (recycle bin, `filters[include_deleted]`).
    Deletions,
}

/// One listing: a resource in one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingRef {
    /// Unique within this walk; a store keeps per-listing state under it.
    pub id: u64,
    pub resource: String,
    pub scope: Scope,
    pub company_id: Option<i64>,
    pub project_id: Option<i64>,
    /// For a child resource, the parent record whose children this lists.
    pub parent_id: Option<i64>,
    pub kind: ListingKind,
}

impl fmt::Display for ListingRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource)?;
        if self.kind == ListingKind::Deletions {
            f.write_str(" (deleted)")?;
        }
        if let Some(parent) = self.parent_id {
            write!(f, " under {parent}")?;
        }
        match (self.company_id, self.project_id) {
            (_, Some(p)) => write!(f, " in project {p}"),
            (Some(c), None) => write!(f, " in company {c}"),
            _ => Ok(()),
        }
    }
}

/// The user's live counters, written with each page for the running-syncs view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub pages: i64,
    /// Records written before this page: the store adds the page's own.
    pub records: i64,
    pub requests: i64,
    pub rate_limit: Option<RateLimit>,
}

/// How a listing that returned everything ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingEnd<'a> {
    /// When the listing's first request went out: the next incremental window starts here.
    pub pass_started: DateTime<Utc>,
    /// Where an incremental listing's window started; None for a full listing.
    pub window_from: Option<DateTime<Utc>>,
    /// Every id of a user-level listing (granted one by one); empty otherwise.
    pub listed_ids: &'a [i64],
    /// Whether the pass was full (the cursor's full-pass time moves).
    pub full_pass: bool,
    /// A dated listing's days (inclusive): it returned every record of those days, so the
    /// others of those days are gone; records of other days say nothing.
    pub dates: Option<(NaiveDate, NaiveDate)>,
}

/// The records of a parent resource whose children a walk lists: those of one scope and,
/// for a parent that is itself a child, of one parent record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentScope<'a> {
    pub resource: &'a str,
    pub company_id: Option<i64>,
    pub project_id: Option<i64>,
    pub parent_id: Option<i64>,
}

/// What the walk reads and writes. Each call is one committed transaction in production;
/// every write first proves the user's lease is still this worker's.
pub trait WalkStore {
    fn cursor(&mut self, listing: &ListingRef) -> Result<Option<CursorTimes>, StoreError>;
    /// Writes one page of a listing and the user's progress; returns records written.
    fn write_page(
        &mut self,
        listing: &ListingRef,
        rows: Vec<RecordRow>,
        progress: &Progress,
    ) -> Result<i64, StoreError>;
    /// A listing returned everything: what it means for visibility and deletions, and the
    /// cursor for the next pass.
    fn finish_listing(&mut self, listing: &ListingRef, end: &ListingEnd) -> Result<(), StoreError>;
    /// A listing failed on its own; `denied` when Procore refused the user the scope.
    fn fail_listing(
        &mut self,
        listing: &ListingRef,
        message: &str,
        denied: bool,
    ) -> Result<(), StoreError>;
    /// Up to `limit` ids above `after`, in ascending order, of the live records of a parent
    /// scope that this user may see: the parents whose children are listed next.
    fn parent_ids(
        &mut self,
        parent: &ParentScope,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError>;
    /// One page of a deletions listing: these records were deleted in Procore, as the user
    /// who can see the scope was told. Returns records marked deleted.
    fn mark_deleted(&mut self, listing: &ListingRef, ids: &[i64]) -> Result<i64, StoreError>;
    /// The user's company list is complete: they no longer see any other company.
    fn keep_only_companies(&mut self, company_ids: &[i64]) -> Result<(), StoreError>;
    /// A company's project list is complete: the user no longer sees its other projects.
    fn keep_only_projects(
        &mut self,
        company_id: i64,
        project_ids: &[i64],
    ) -> Result<(), StoreError>;
}

/// Where a page is: the first one is built from the catalog, the next ones are Procore's own
/// `Link` URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageAddress {
    First {
        path: String,
        query: Vec<(String, String)>,
        per_page: Option<u32>,
        records_key: Option<String>,
    },
    Next(String),
}

impl PageAddress {
    pub fn as_request(&self) -> PageRequest<'_> {
        match self {
            PageAddress::First {
                path,
                query,
                per_page,
                records_key,
            } => PageRequest::First {
                path,
                query,
                per_page: *per_page,
                records_key: records_key.as_deref(),
            },
            PageAddress::Next(url) => PageRequest::Next { url },
        }
    }
}

/// A request the caller is to send. Answer it with [`UserWalk::on_page`] and the same `id`.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub id: u64,
    pub company_id: Option<i64>,
    pub page: PageAddress,
    pub access_token: Secret,
}

/// A page as it came back: its rows (or why they could not be read) and the next page.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    pub rows: Result<Vec<RecordRow>, String>,
    pub next_url: Option<String>,
}

#[derive(Debug)]
pub enum Action {
    Fetch(Fetch),
    /// Get a new access token and answer with [`UserWalk::on_refresh`]. Asked once at a time.
    Refresh,
    /// Nothing to send until a response arrives or, if given, this time passes.
    Idle(Option<DateTime<Utc>>),
    /// The walk is over; later responses for it are to be dropped.
    Done(Result<SyncOutcome, SyncFailure>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageState {
    Ready,
    InFlight { fetch: u64, token_generation: u64 },
    WaitingUntil(DateTime<Utc>),
}

struct Listing {
    target: ListingRef,
    resource: usize,
    /// None until the listing starts (its cursor is read then).
    window_from: Option<DateTime<Utc>>,
    incremental: bool,
    /// A dated listing's days; for one asked day by day, the days still to ask for.
    dates: Option<(NaiveDate, NaiveDate)>,
    next_days: Option<(NaiveDate, NaiveDate)>,
    pass_started: DateTime<Utc>,
    /// The first page's address, which a dated listing's next day starts from.
    first_page: PageAddress,
    page: PageAddress,
    state: PageState,
    /// Per request: reset when a page arrives.
    refreshed_after_401: bool,
    waited_out_429: bool,
    transient_failures: u32,
    /// Ids the walk needs: companies, projects (to go deeper) and user-level listings.
    kept_ids: Vec<i64>,
    keep_ids: bool,
}

/// A listing not started yet, or the children of a parent scope still to queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Listing {
        resource: usize,
        company_id: Option<i64>,
        project_id: Option<i64>,
        parent_id: Option<i64>,
        kind: ListingKind,
    },
    /// The listings of `child` for the parent records after `after`: read from the store a
    /// batch at a time when this comes up.
    Children {
        child: usize,
        company_id: Option<i64>,
        project_id: Option<i64>,
        /// The parent listing's own parent record, when the parent is itself a child.
        grandparent: Option<i64>,
        after: Option<i64>,
    },
}

impl Pending {
    fn records(
        resource: usize,
        company_id: Option<i64>,
        project_id: Option<i64>,
        parent_id: Option<i64>,
    ) -> Pending {
        Pending::Listing {
            resource,
            company_id,
            project_id,
            parent_id,
            kind: ListingKind::Records,
        }
    }
}

pub struct UserWalk {
    user_id: String,
    resources: Vec<Resource>,
    config: WalkConfig,
    access_token: Secret,
    expires_at: DateTime<Utc>,
    token_generation: u64,
    /// A 401 answered a request sent with the current token.
    token_rejected: bool,
    refreshing: bool,
    rate_limit: Option<RateLimit>,
    /// Listings not started yet, in walk order.
    waiting: VecDeque<Pending>,
    /// Most entries `waiting` and `active` held at once: the walk's memory, for tests.
    peak_pending: usize,
    active: Vec<Listing>,
    outcome: SyncOutcome,
    pages: i64,
    next_id: u64,
    /// Set when something ended the walk early; `poll` reports it.
    failure: Option<SyncFailure>,
    finished: bool,
}

impl UserWalk {
    pub fn new(
        user_id: impl Into<String>,
        resources: Vec<Resource>,
        access_token: Secret,
        expires_at: DateTime<Utc>,
        config: WalkConfig,
    ) -> UserWalk {
        let companies = resources.iter().position(|r| r.name == "companies");
        UserWalk {
            user_id: user_id.into(),
            waiting: companies
                .map(|c| Pending::records(c, None, None, None))
                .into_iter()
                .collect(),
            peak_pending: 0,
            resources,
            config,
            access_token,
            expires_at,
            token_generation: 0,
            token_rejected: false,
            refreshing: false,
            rate_limit: None,
            active: Vec::new(),
            outcome: SyncOutcome::default(),
            pages: 0,
            next_id: 0,
            failure: companies.is_none().then(|| {
                SyncFailure::Permanent("the resource catalog has no 'companies' entry".into())
            }),
            finished: false,
        }
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The access token requests go out with now.
    pub fn access_token(&self) -> &Secret {
        &self.access_token
    }

    /// The last rate-limit headers Procore sent for this user.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    pub fn outcome(&self) -> &SyncOutcome {
        &self.outcome
    }

    /// Most listings queued or in progress at once so far (flat however large the tree).
    pub fn peak_pending(&self) -> usize {
        self.peak_pending
    }

    /// The next thing to do. Call it until it returns `Idle` or `Done`; after `Done` the walk
    /// is over and keeps answering `Idle(None)`.
    pub fn poll(&mut self, store: &mut dyn WalkStore, now: DateTime<Utc>) -> Action {
        if self.finished {
            return Action::Idle(None);
        }
        if let Some(failure) = self.failure.take() {
            return self.end(Err(failure));
        }
        if let Err(failure) = self.start_listings(store, now) {
            return self.end(Err(failure));
        }
        if self.active.is_empty() && self.waiting.is_empty() && !self.refreshing {
            let outcome = std::mem::take(&mut self.outcome);
            return self.end(Ok(outcome));
        }
        if self.refreshing {
            return Action::Idle(None);
        }
        let mut wake: Option<DateTime<Utc>> = None;
        for listing in &mut self.active {
            if let PageState::WaitingUntil(at) = listing.state {
                if at <= now {
                    listing.state = PageState::Ready;
                } else {
                    wake = earliest(wake, at);
                }
            }
        }
        let Some(ready) = self.active.iter().position(|l| l.state == PageState::Ready) else {
            return Action::Idle(wake);
        };
        if self.token_rejected || self.expires_at - REFRESH_MARGIN <= now {
            self.refreshing = true;
            return Action::Refresh;
        }
        if let Some(pace) = self.pacing(now) {
            if let Err(parked) = waitable(pace, now) {
                return self.end(Err(parked));
            }
            return Action::Idle(earliest(wake, pace));
        }
        self.next_id += 1;
        let fetch = self.next_id;
        let listing = &mut self.active[ready];
        listing.state = PageState::InFlight {
            fetch,
            token_generation: self.token_generation,
        };
        self.outcome.requests_made += 1;
        Action::Fetch(Fetch {
            id: fetch,
            company_id: listing.target.company_id,
            page: listing.page.clone(),
            access_token: self.access_token.clone(),
        })
    }

    /// A response to a [`Fetch`]. Responses for a finished walk or an unknown id are ignored.
    pub fn on_page(
        &mut self,
        store: &mut dyn WalkStore,
        fetch: u64,
        result: Result<FetchedPage, ProcoreError>,
        rate_limit: Option<RateLimit>,
        now: DateTime<Utc>,
    ) {
        if self.finished {
            return;
        }
        let Some(index) = self
            .active
            .iter()
            .position(|l| matches!(l.state, PageState::InFlight { fetch: f, .. } if f == fetch))
        else {
            return;
        };
        if rate_limit.is_some() {
            self.rate_limit = rate_limit;
        }
        let PageState::InFlight {
            token_generation, ..
        } = self.active[index].state
        else {
            return;
        };
        match result {
            Ok(page) => {
                if let Err(failure) = self.store_page(store, index, page) {
                    self.fail(failure);
                }
            }
            Err(error) => {
                if let Err(failure) = self.page_failed(store, index, error, token_generation, now) {
                    self.fail(failure);
                }
            }
        }
    }

    /// The answer to [`Action::Refresh`]: a new token, or why there is none.
    pub fn on_refresh(&mut self, result: Result<(Secret, DateTime<Utc>), SyncFailure>) {
        self.refreshing = false;
        match result {
            Ok((token, expires_at)) => {
                self.access_token = token;
                self.expires_at = expires_at;
                self.token_generation += 1;
                self.token_rejected = false;
            }
            Err(failure) => self.fail(failure),
        }
    }

    /// Ends the walk from outside (shutdown): `poll` reports the failure next.
    pub fn abort(&mut self, failure: SyncFailure) {
        self.fail(failure);
    }

    fn fail(&mut self, failure: SyncFailure) {
        if !self.finished {
            self.active.clear();
            self.waiting.clear();
            self.failure = Some(failure);
        }
    }
}

impl UserWalk {
    fn end(&mut self, result: Result<SyncOutcome, SyncFailure>) -> Action {
        self.finished = true;
        self.active.clear();
        self.waiting.clear();
        Action::Done(result)
    }

    /// Starts waiting listings while there is room; each start reads the scope's cursor.
    fn start_listings(
        &mut self,
        store: &mut dyn WalkStore,
        now: DateTime<Utc>,
    ) -> Result<(), SyncFailure> {
        while self.active.len() < self.config.listings_in_flight.max(1) {
            self.peak_pending = self
                .peak_pending
                .max(self.waiting.len() + self.active.len());
            let Some(pending) = self.waiting.pop_front() else {
                return Ok(());
            };
            let (resource, company_id, project_id, parent_id, kind) = match pending {
                Pending::Children {
                    child,
                    company_id,
                    project_id,
                    grandparent,
                    after,
                } => {
                    self.queue_children(store, child, company_id, project_id, grandparent, after)?;
                    continue;
                }
                Pending::Listing {
                    resource,
                    company_id,
                    project_id,
                    parent_id,
                    kind,
                } => (resource, company_id, project_id, parent_id, kind),
            };
            self.next_id += 1;
            let r = &self.resources[resource];
            let target = ListingRef {
                id: self.next_id,
                resource: r.name.clone(),
                scope: r.scope,
                company_id,
                project_id,
                parent_id,
                kind,
            };
            let parent = match (parent_id, r.parent_placeholder.as_deref()) {
                (Some(id), Some(placeholder)) => Some((placeholder, id)),
                _ => None,
            };
            let template = match (kind, r.recycle_bin_path.as_deref()) {
                (ListingKind::Deletions, Some(bin)) => bin,
                _ => r.path_template.as_str(),
            };
            let path = match expand_child_path(template, company_id, project_id, parent) {
                Ok(path) => path,
                Err(message) => {
                    self.listing_failed(store, &target, message, false)?;
                    continue;
                }
            };
            // Companies and projects are always read whole: the walk needs every id. User-level
            // listings too: their grants are per record.
            let structural = r.name == "companies" || r.name == "projects";
            let user_level = r.scope == Scope::User;
            let mut query = Vec::new();
            let (mut window_from, mut incremental, mut dates, mut next_days) =
                (None, false, None, None);
            if kind == ListingKind::Deletions {
                incremental = true;
                if r.recycle_bin_path.is_none() {
                    query.push(("filters[include_deleted]".to_owned(), "only".to_owned()));
                }
            } else if (r.supports_updated_at_filter || r.date_filter.is_some())
                && !structural
                && !user_level
            {
                let cursor = store.cursor(&target)?;
                let since = incremental_since(cursor, now, self.config.full_sync_interval_s);
                incremental = since.is_some();
                match r.date_filter {
                    Some(filter) => {
                        let history = r.history_on_first_sync
                            && filter == DateFilter::DateRange
                            && cursor.is_none_or(|c| c.last_full.is_none());
                        let (from, to) =
                            dated_window(since, history, now, self.config.dated_window_days);
                        dates = Some((from, to));
                        query.extend(match filter {
                            DateFilter::DateRange => vec![
                                ("start_date".to_owned(), from.to_string()),
                                ("end_date".to_owned(), to.to_string()),
                            ],
                            DateFilter::LogDate => {
                                next_days = from.succ_opt().filter(|d| *d <= to).map(|d| (d, to));
                                vec![("log_date".to_owned(), from.to_string())]
                            }
                        });
                    }
                    None => {
                        window_from = since;
                        if let Some(from) = since {
                            query.push(updated_at_filter(from, now));
                        }
                    }
                }
            }
            let page = PageAddress::First {
                path,
                query,
                per_page: r.paginated.then_some(r.per_page),
                records_key: r.records_key.clone(),
            };
            self.active.push(Listing {
                target,
                resource,
                window_from,
                incremental,
                dates,
                next_days,
                pass_started: now,
                first_page: page.clone(),
                page,
                state: PageState::Ready,
                refreshed_after_401: false,
                waited_out_429: false,
                transient_failures: 0,
                kept_ids: Vec::new(),
                keep_ids: kind == ListingKind::Records && (structural || user_level),
            });
        }
        Ok(())
    }

    /// Queues the child listings of the next batch of parent records, then the batch after
    /// it: the parents are read back from the store, never held all at once.
    fn queue_children(
        &mut self,
        store: &mut dyn WalkStore,
        child: usize,
        company_id: Option<i64>,
        project_id: Option<i64>,
        grandparent: Option<i64>,
        after: Option<i64>,
    ) -> Result<(), SyncFailure> {
        let Some(parent) = self.resources[child].parent_resource.clone() else {
            return Ok(());
        };
        let ids = store.parent_ids(
            &ParentScope {
                resource: &parent,
                company_id,
                project_id,
                parent_id: grandparent,
            },
            after,
            CHILD_BATCH,
        )?;
        let Some(&last) = ids.last() else {
            return Ok(());
        };
        if ids.len() == CHILD_BATCH {
            self.waiting.push_front(Pending::Children {
                child,
                company_id,
                project_id,
                grandparent,
                after: Some(last),
            });
        }
        for &id in ids.iter().rev() {
            self.waiting
                .push_front(Pending::records(child, company_id, project_id, Some(id)));
        }
        Ok(())
    }

    /// When the next request may go: the user's own requests in flight count against what
    /// Procore last said remains, so parallel listings cannot overrun the window together.
    fn pacing(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut rl = self.rate_limit?;
        let in_flight = self
            .active
            .iter()
            .filter(|l| matches!(l.state, PageState::InFlight { .. }))
            .count() as u32;
        rl.remaining = rl.remaining.saturating_sub(in_flight);
        let wait = delay_before_next(&rl, now.timestamp())?;
        Some(now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::zero()))
    }

    fn store_page(
        &mut self,
        store: &mut dyn WalkStore,
        index: usize,
        page: FetchedPage,
    ) -> Result<(), SyncFailure> {
        let rows = match page.rows {
            Ok(rows) => rows,
            Err(e) => {
                let listing = self.active.remove(index);
                return self.listing_failed(
                    store,
                    &listing.target,
                    format!("bad data from Procore: {e}"),
                    false,
                );
            }
        };
        self.pages += 1;
        let listing = &mut self.active[index];
        if listing.keep_ids {
            listing.kept_ids.extend(rows.iter().map(|r| r.procore_id));
        }
        let progress = Progress {
            pages: self.pages,
            records: self.outcome.records_written,
            requests: self.outcome.requests_made,
            rate_limit: self.rate_limit,
        };
        let written = match listing.target.kind {
            ListingKind::Records => store.write_page(&listing.target, rows, &progress)?,
            ListingKind::Deletions => {
                // A list that ignored `filters[include_deleted]=only` would answer live
                // records: only those that say they are deleted count.
                let bin = self.resources[listing.resource].recycle_bin_path.is_some();
                let ids: Vec<i64> = rows
                    .iter()
                    .filter(|r| bin || r.data.get("deleted_at").is_some_and(|d| !d.is_null()))
                    .map(|r| r.procore_id)
                    .collect();
                store.mark_deleted(&listing.target, &ids)?
            }
        };
        self.outcome.records_written += written;
        // A dated listing asked day by day goes on with its next day.
        let next = page.next_url.map(PageAddress::Next).or_else(|| {
            let (day, last) = listing.next_days?;
            listing.next_days = day.succ_opt().filter(|d| *d <= last).map(|d| (d, last));
            let PageAddress::First {
                path,
                per_page,
                records_key,
                ..
            } = &listing.first_page
            else {
                return None;
            };
            Some(PageAddress::First {
                path: path.clone(),
                query: vec![("log_date".to_owned(), day.to_string())],
                per_page: *per_page,
                records_key: records_key.clone(),
            })
        });
        match next {
            Some(page) => {
                listing.page = page;
                listing.state = PageState::Ready;
                listing.refreshed_after_401 = false;
                listing.waited_out_429 = false;
                listing.transient_failures = 0;
                Ok(())
            }
            None => {
                let listing = self.active.remove(index);
                self.listing_done(store, listing)
            }
        }
    }

    fn listing_done(
        &mut self,
        store: &mut dyn WalkStore,
        listing: Listing,
    ) -> Result<(), SyncFailure> {
        if listing.target.kind == ListingKind::Deletions {
            return Ok(());
        }
        let user_level = listing.target.scope == Scope::User;
        let end = ListingEnd {
            pass_started: listing.pass_started,
            window_from: listing.window_from,
            listed_ids: if user_level { &listing.kept_ids } else { &[] },
            full_pass: !listing.incremental,
            dates: listing.dates,
        };
        store.finish_listing(&listing.target, &end)?;
        let ids = &listing.kept_ids;
        let target = &listing.target;
        let (company_id, project_id) = (target.company_id, target.project_id);
        let mut next = Vec::new();
        let top_level = |r: &Resource, scope| r.scope == scope && r.parent_resource.is_none();
        match (target.resource.as_str(), company_id) {
            ("companies", None) => {
                store.keep_only_companies(ids)?;
                for &company in ids {
                    for (i, r) in self.resources.iter().enumerate() {
                        if top_level(r, Scope::Company) {
                            next.push(Pending::records(i, Some(company), None, None));
                        }
                    }
                }
                for (i, r) in self.resources.iter().enumerate() {
                    if top_level(r, Scope::User) && i != listing.resource {
                        next.push(Pending::records(i, None, None, None));
                    }
                }
            }
            ("projects", Some(company)) => {
                store.keep_only_projects(company, ids)?;
                for &project in ids {
                    for (i, r) in self.resources.iter().enumerate() {
                        if top_level(r, Scope::Project) {
                            next.push(Pending::records(i, Some(company), Some(project), None));
                        }
                    }
                }
            }
            _ => {}
        }
        // An incremental pass cannot see deletions by absence: where Procore lists them,
        // they are read now, so a deletion lands within one cycle.
        let r = &self.resources[listing.resource];
        if listing.incremental && r.deletions_listed() {
            next.push(Pending::Listing {
                resource: listing.resource,
                company_id,
                project_id,
                parent_id: target.parent_id,
                kind: ListingKind::Deletions,
            });
        }
        for (i, r) in self.resources.iter().enumerate() {
            if r.parent_resource.as_deref() == Some(target.resource.as_str()) {
                next.push(Pending::Children {
                    child: i,
                    company_id,
                    project_id,
                    grandparent: target.parent_id,
                    after: None,
                });
            }
        }
        // Depth first, so the walk holds few listings at once however large the user is.
        for pending in next.into_iter().rev() {
            self.waiting.push_front(pending);
        }
        Ok(())
    }

    fn listing_failed(
        &mut self,
        store: &mut dyn WalkStore,
        target: &ListingRef,
        message: String,
        denied: bool,
    ) -> Result<(), SyncFailure> {
        store.fail_listing(target, &message, denied)?;
        self.outcome
            .resource_errors
            .push(format!("{target}: {message}"));
        Ok(())
    }

    fn page_failed(
        &mut self,
        store: &mut dyn WalkStore,
        index: usize,
        error: ProcoreError,
        sent_with_generation: u64,
        now: DateTime<Utc>,
    ) -> Result<(), SyncFailure> {
        let listing = &mut self.active[index];
        match error {
            ProcoreError::Unauthorized if !listing.refreshed_after_401 => {
                listing.refreshed_after_401 = true;
                listing.state = PageState::Ready;
                // Another listing's 401 may have brought a new token since this one was sent.
                if sent_with_generation == self.token_generation {
                    self.token_rejected = true;
                }
                Ok(())
            }
            // One 429 is waited out in place; a second in a row means the user's limit is
            // really spent, so the user is parked and its place goes to someone else.
            ProcoreError::RateLimited { retry_at } if listing.waited_out_429 => {
                Err(SyncFailure::RateLimited {
                    retry_at,
                    message: "Procore kept answering 429 (rate limit)".into(),
                })
            }
            ProcoreError::RateLimited { retry_at } => {
                listing.waited_out_429 = true;
                wait_or_park(listing, retry_at, now)
            }
            e if e.is_retryable() && listing.transient_failures < REQUEST_RETRIES => {
                listing.transient_failures += 1;
                let until = e.retry_at().unwrap_or_else(|| {
                    let delay = backoff::retry_delay(
                        listing.transient_failures,
                        std::time::Duration::from_millis(250),
                        std::time::Duration::from_secs(10),
                        &mut rand::thread_rng(),
                    );
                    now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::zero())
                });
                wait_or_park(listing, until, now)
            }
            e @ (ProcoreError::Forbidden(_)
            | ProcoreError::NotFound(_)
            | ProcoreError::Client { .. }
            | ProcoreError::BadResponse(_)
            | ProcoreError::TooLarge { .. })
                if !e.is_retryable() =>
            {
                let denied = matches!(e, ProcoreError::Forbidden(_) | ProcoreError::NotFound(_));
                let listing = self.active.remove(index);
                // The parent was deleted since it was listed: its children went with it.
                if listing.target.parent_id.is_some() && matches!(e, ProcoreError::NotFound(_)) {
                    store.fail_listing(&listing.target, "its parent is gone (404)", true)?;
                    return Ok(());
                }
                // No recycle bin offered, or not to this user: deletions wait for the next
                // full pass, as they did before recycle bins were read.
                if listing.target.kind == ListingKind::Deletions && denied {
                    return Ok(());
                }
                self.listing_failed(store, &listing.target, e.to_string(), denied)
            }
            e => Err(SyncFailure::from_procore(e)),
        }
    }
}

fn wait_or_park(
    listing: &mut Listing,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), SyncFailure> {
    waitable(until, now)?;
    listing.state = PageState::WaitingUntil(until);
    Ok(())
}

/// A wait until `until` that the user may sit out in flight, or the parking it calls for.
fn waitable(until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), SyncFailure> {
    if until - now > LONGEST_INLINE_WAIT {
        return Err(SyncFailure::RateLimited {
            retry_at: until,
            message: format!("Procore asked to wait {}s", (until - now).num_seconds()),
        });
    }
    Ok(())
}

fn earliest(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Where an incremental pass starts, or None for a full pass: the first pass, a pass after a
/// failure, one every `full_sync_interval`, and one while the user holds no grant to the
/// scope (never listed it, was refused it, or came from 0.1.0, which kept no grants) are
/// full.
pub fn incremental_since(
    cursor: Option<CursorTimes>,
    now: DateTime<Utc>,
    full_sync_interval_s: i64,
) -> Option<DateTime<Utc>> {
    let CursorTimes {
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

/// The days a dated listing reads, inclusive, in UTC: an incremental pass (`since` is where
/// its window would start) from the day before through today, since a log of yesterday can
/// still be edited this morning; a full pass the last `window_days` days, or from
/// [`HISTORY_START`] when the user asked for the whole history and it was never read.
pub fn dated_window(
    since: Option<DateTime<Utc>>,
    history: bool,
    now: DateTime<Utc>,
    window_days: i64,
) -> (NaiveDate, NaiveDate) {
    let today = now.date_naive();
    let from = match since {
        Some(since) => since.date_naive() - TimeDelta::days(1),
        None if history => {
            let (y, m, d) = HISTORY_START;
            NaiveDate::from_ymd_opt(y, m, d).unwrap_or(today)
        }
        None => today - TimeDelta::days(window_days.max(1) - 1),
    };
    (from.min(today), today)
}
