//! The walk against a fake store and a fake Procore: every path a response can take.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use serde_json::json;

use crate::catalog::{DateFilter, Resource, Scope};
use crate::procore::{ProcoreError, RateLimit, Secret};
use crate::records::{page_rows, RecordRow};
use crate::walk::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn resource(name: &str, scope: Scope, path: &str, updated_at: bool) -> Resource {
    Resource {
        name: name.into(),
        path_template: path.into(),
        scope,
        supports_updated_at_filter: updated_at,
        paginated: true,
        per_page: 100,
        ..Resource::default()
    }
}

fn catalog() -> Vec<Resource> {
    vec![
        resource("companies", Scope::User, "/rest/v1.0/companies", false),
        resource(
            "projects",
            Scope::Company,
            "/rest/v1.0/projects?company_id={company_id}",
            false,
        ),
        resource(
            "rfis",
            Scope::Project,
            "/rest/v1.0/projects/{project_id}/rfis",
            true,
        ),
    ]
}

fn config(listings_in_flight: usize) -> WalkConfig {
    WalkConfig {
        full_sync_interval_s: 86_400,
        listings_in_flight,
        dated_window_days: 30,
    }
}

/// Every call the walk made on the store, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Cursor(String),
    Page(String, Vec<i64>),
    Finish(String, Option<DateTime<Utc>>, Vec<i64>),
    Fail(String, String, bool),
    Companies(Vec<i64>),
    Projects(i64, Vec<i64>),
    Deleted(String, Vec<i64>),
}

/// Resource, company, project, parent record.
type ScopeKey = (String, Option<i64>, Option<i64>, Option<i64>);
type Days = (NaiveDate, NaiveDate);

#[derive(Default)]
struct FakeStore {
    calls: Vec<Call>,
    cursors: HashMap<String, CursorTimes>,
    lose_lease_after_pages: Option<usize>,
    progress: Vec<Progress>,
    /// Live records written, per (resource, company, project, parent): what `parent_ids`
    /// reads back.
    records: BTreeMap<ScopeKey, BTreeSet<i64>>,
    /// Every `ListingEnd` handed to `finish_listing`, by listing.
    ends: Vec<(String, bool, Option<Days>)>,
}

impl FakeStore {
    fn pages(&self) -> Vec<(String, Vec<i64>)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Page(l, ids) => Some((l.clone(), ids.clone())),
                _ => None,
            })
            .collect()
    }
}

impl WalkStore for FakeStore {
    fn cursor(&mut self, listing: &ListingRef) -> Result<Option<CursorTimes>, StoreError> {
        self.calls.push(Call::Cursor(listing.to_string()));
        Ok(self.cursors.get(&listing.to_string()).copied())
    }

    fn write_page(
        &mut self,
        listing: &ListingRef,
        rows: Vec<RecordRow>,
        progress: &Progress,
    ) -> Result<i64, StoreError> {
        if self.lose_lease_after_pages == Some(self.pages().len()) {
            return Err(StoreError::LeaseLost("lease lost".into()));
        }
        self.progress.push(*progress);
        let ids: Vec<i64> = rows.iter().map(|r| r.procore_id).collect();
        self.records
            .entry((
                listing.resource.clone(),
                listing.company_id,
                listing.project_id,
                listing.parent_id,
            ))
            .or_default()
            .extend(&ids);
        self.calls.push(Call::Page(listing.to_string(), ids));
        Ok(rows.len() as i64)
    }

    fn finish_listing(&mut self, listing: &ListingRef, end: &ListingEnd) -> Result<(), StoreError> {
        self.calls.push(Call::Finish(
            listing.to_string(),
            end.window_from,
            end.listed_ids.to_vec(),
        ));
        self.ends
            .push((listing.to_string(), end.full_pass, end.dates));
        Ok(())
    }

    fn parent_ids(
        &mut self,
        parent: &ParentScope,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        let key = (
            parent.resource.to_string(),
            parent.company_id,
            parent.project_id,
            parent.parent_id,
        );
        Ok(self
            .records
            .get(&key)
            .map(|ids| {
                ids.iter()
                    .filter(|id| after.is_none_or(|a| **id > a))
                    .take(limit)
                    .copied()
                    .collect()
            })
            .unwrap_or_default())
    }

    fn mark_deleted(&mut self, listing: &ListingRef, ids: &[i64]) -> Result<i64, StoreError> {
        self.calls
            .push(Call::Deleted(listing.to_string(), ids.to_vec()));
        Ok(ids.len() as i64)
    }

    fn fail_listing(
        &mut self,
        listing: &ListingRef,
        message: &str,
        denied: bool,
    ) -> Result<(), StoreError> {
        self.calls
            .push(Call::Fail(listing.to_string(), message.into(), denied));
        Ok(())
    }

    fn keep_only_companies(&mut self, company_ids: &[i64]) -> Result<(), StoreError> {
        self.calls.push(Call::Companies(company_ids.to_vec()));
        Ok(())
    }

    fn keep_only_projects(
        &mut self,
        company_id: i64,
        project_ids: &[i64],
    ) -> Result<(), StoreError> {
        self.calls
            .push(Call::Projects(company_id, project_ids.to_vec()));
        Ok(())
    }
}

/// A Procore that serves lists of ids in pages of `per_page`, with scripted errors per
/// path: the next request for that path gets the next error instead of its page.
struct FakeProcore {
    lists: HashMap<String, Vec<i64>>,
    per_page: usize,
    errors: HashMap<String, VecDeque<ProcoreError>>,
    /// Rate-limit headers sent with every answer.
    rate_limit: Option<RateLimit>,
    refreshes: Vec<Result<(Secret, DateTime<Utc>), SyncFailure>>,
    refreshes_asked: usize,
    requests: Vec<(String, String)>,
    /// The query of every first page asked for, by path.
    queries: Vec<(String, Vec<(String, String)>)>,
    bad_json: Vec<String>,
    /// Answers `filters[include_deleted]=only` with live records, as a list without it does.
    ignore_include_deleted: bool,
}

impl FakeProcore {
    /// Two companies; company 1 has projects 11 and 12, company 2 has project 21; each
    /// project has three RFIs, project 12 has 250 (three pages).
    fn world() -> FakeProcore {
        let mut lists = HashMap::new();
        lists.insert("/rest/v1.0/companies".to_string(), vec![1, 2]);
        lists.insert("/rest/v1.0/projects?company_id=1".into(), vec![11, 12]);
        lists.insert("/rest/v1.0/projects?company_id=2".into(), vec![21]);
        lists.insert("/rest/v1.0/projects/11/rfis".into(), vec![111, 112, 113]);
        lists.insert("/rest/v1.0/projects/12/rfis".into(), (1200..1450).collect());
        lists.insert("/rest/v1.0/projects/21/rfis".into(), vec![211, 212, 213]);
        FakeProcore {
            lists,
            per_page: 100,
            errors: HashMap::new(),
            rate_limit: None,
            refreshes: Vec::new(),
            refreshes_asked: 0,
            requests: Vec::new(),
            queries: Vec::new(),
            bad_json: Vec::new(),
            ignore_include_deleted: false,
        }
    }

    fn fail_next(&mut self, path: &str, errors: Vec<ProcoreError>) {
        self.errors
            .entry(path.to_string())
            .or_default()
            .extend(errors);
    }

    fn answer(&mut self, fetch: &Fetch) -> Result<FetchedPage, ProcoreError> {
        let deleted_list = match &fetch.page {
            PageAddress::First { query, .. } => query.iter().any(|(n, _)| n.contains("deleted")),
            PageAddress::Next(_) => false,
        } && !self.ignore_include_deleted;
        let (path, page) = match &fetch.page {
            PageAddress::First { path, query, .. } => {
                assert!(!path.contains('{'), "placeholders left in {path}");
                self.queries.push((path.clone(), query.clone()));
                (path.clone(), 0usize)
            }
            PageAddress::Next(url) => {
                let (path, page) = url.rsplit_once("#page=").expect("a next url of ours");
                (path.to_string(), page.parse().unwrap())
            }
        };
        self.requests
            .push((path.clone(), fetch.access_token.expose().to_string()));
        if let Some(error) = self.errors.get_mut(&path).and_then(|e| e.pop_front()) {
            return Err(error);
        }
        let ids = self.lists.get(&path).cloned().unwrap_or_default();
        let chunk: Vec<i64> = ids
            .iter()
            .skip(page * self.per_page)
            .take(self.per_page)
            .copied()
            .collect();
        let more = (page + 1) * self.per_page < ids.len();
        let rows = if self.bad_json.contains(&path) {
            page_rows(vec![json!("not an object")]).map_err(|e| e.to_string())
        } else {
            page_rows(
                chunk
                    .iter()
                    .map(|id| match deleted_list {
                        true => json!({ "id": id, "deleted_at": "2026-03-01T11:00:00Z" }),
                        false => json!({ "id": id }),
                    })
                    .collect(),
            )
            .map_err(|e| e.to_string())
        };
        Ok(FetchedPage {
            rows,
            next_url: more.then(|| format!("{path}#page={}", page + 1)),
        })
    }
}

struct Run {
    result: Result<SyncOutcome, SyncFailure>,
    /// Most requests of this user in flight at once.
    peak_in_flight: usize,
    /// Most requests of one listing in flight at once.
    peak_per_listing: usize,
    /// Times the walk asked to be woken.
    idles_until: Vec<DateTime<Utc>>,
    end: DateTime<Utc>,
}

/// Drives a walk to its end the way a worker does, answering the oldest request first and
/// jumping the clock forward when the walk asks to be woken later.
fn run(walk: &mut UserWalk, store: &mut FakeStore, procore: &mut FakeProcore) -> Run {
    let mut now = t0();
    let mut in_flight: VecDeque<Fetch> = VecDeque::new();
    let mut run = Run {
        result: Ok(SyncOutcome::default()),
        peak_in_flight: 0,
        peak_per_listing: 0,
        idles_until: Vec::new(),
        end: now,
    };
    for _ in 0..100_000 {
        match walk.poll(store, now) {
            Action::Fetch(fetch) => {
                in_flight.push_back(fetch);
                run.peak_in_flight = run.peak_in_flight.max(in_flight.len());
                let mut per_listing: HashMap<String, usize> = HashMap::new();
                for f in &in_flight {
                    let key = match &f.page {
                        PageAddress::First { path, .. } => path.clone(),
                        PageAddress::Next(url) => url.rsplit_once('#').unwrap().0.to_string(),
                    };
                    *per_listing.entry(key).or_default() += 1;
                }
                run.peak_per_listing = run
                    .peak_per_listing
                    .max(per_listing.values().copied().max().unwrap_or(0));
            }
            Action::Refresh => {
                let answer = procore.refreshes.get(procore.refreshes_asked).cloned();
                procore.refreshes_asked += 1;
                walk.on_refresh(answer.expect("an unexpected refresh"));
            }
            Action::Idle(wake) => match in_flight.pop_front() {
                Some(fetch) => {
                    let answer = procore.answer(&fetch);
                    walk.on_page(store, fetch.id, answer, procore.rate_limit, now);
                }
                None => {
                    let wake = wake.expect("idle with nothing in flight and no time to wake");
                    assert!(wake > now, "asked to wake in the past");
                    run.idles_until.push(wake);
                    now = wake;
                }
            },
            Action::Done(result) => {
                run.result = result;
                run.end = now;
                return run;
            }
        }
    }
    panic!("the walk never ended");
}

fn walk(listings_in_flight: usize) -> UserWalk {
    UserWalk::new(
        "user-1",
        catalog(),
        Secret::new("token-1"),
        t0() + TimeDelta::hours(2),
        config(listings_in_flight),
    )
}

fn token(value: &str) -> Result<(Secret, DateTime<Utc>), SyncFailure> {
    Ok((Secret::new(value), t0() + TimeDelta::hours(2)))
}

#[test]
fn a_full_walk_writes_every_record_of_every_scope_once() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let run = run(&mut walk(1), &mut store, &mut procore);
    let outcome = run.result.expect("a clean walk");
    // 2 companies + 3 projects + 3 + 250 + 3 RFIs.
    assert_eq!(outcome.records_written, 261);
    // companies, 2 project lists, 1 + 3 + 1 RFI pages.
    assert_eq!(outcome.requests_made, 8);
    assert!(outcome.resource_errors.is_empty());
    let mut written: Vec<i64> = store.pages().into_iter().flat_map(|(_, ids)| ids).collect();
    written.sort();
    let before = written.len();
    written.dedup();
    assert_eq!(before, written.len(), "a record was written twice");
    assert!(store.calls.contains(&Call::Companies(vec![1, 2])));
    assert!(store.calls.contains(&Call::Projects(1, vec![11, 12])));
    assert!(store.calls.contains(&Call::Projects(2, vec![21])));
    let finished: Vec<&Call> = store
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Finish(..)))
        .collect();
    assert_eq!(finished.len(), 6, "{finished:?}");
    // The user-level company listing grants its ids one by one; scoped listings do not.
    assert!(store
        .calls
        .contains(&Call::Finish("companies".into(), None, vec![1, 2])));
    assert!(store
        .calls
        .contains(&Call::Finish("rfis in project 12".into(), None, vec![])));
    // Companies come first, and a project's RFIs only after its company's project list.
    let position = |wanted: &Call| store.calls.iter().position(|c| c == wanted).unwrap();
    assert!(
        position(&Call::Projects(1, vec![11, 12]))
            < store
                .calls
                .iter()
                .position(|c| matches!(c, Call::Page(l, _) if l == "rfis in project 11"))
                .unwrap()
    );
    assert_eq!(run.end, t0(), "nothing asked this walk to wait");
}

#[test]
fn pages_of_one_listing_go_one_after_the_other_in_order() {
    for listings in [1, 4] {
        let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
        let run = run(&mut walk(listings), &mut store, &mut procore);
        assert!(run.result.is_ok());
        assert_eq!(run.peak_per_listing, 1, "two pages of one listing at once");
        let project_12: Vec<i64> = store
            .pages()
            .into_iter()
            .filter(|(l, _)| l == "rfis in project 12")
            .flat_map(|(_, ids)| ids)
            .collect();
        assert_eq!(project_12, (1200..1450).collect::<Vec<i64>>());
        if listings == 1 {
            assert_eq!(run.peak_in_flight, 1);
        } else {
            assert!(
                run.peak_in_flight > 1,
                "listings of one user did not overlap"
            );
            assert!(run.peak_in_flight <= listings);
        }
    }
}

#[test]
fn progress_counts_pages_requests_and_records_so_far() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    assert!(run(&mut walk(1), &mut store, &mut procore).result.is_ok());
    let pages: Vec<i64> = store.progress.iter().map(|p| p.pages).collect();
    assert_eq!(pages, (1..=8).collect::<Vec<i64>>());
    let last = store.progress.last().unwrap();
    assert_eq!(last.requests, 8);
    assert_eq!(
        last.records,
        261 - 3,
        "records written before the last page"
    );
}

#[test]
fn a_401_refreshes_once_and_repeats_the_same_page() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.fail_next("/rest/v1.0/projects/12/rfis", vec![]);
    procore.fail_next(
        "/rest/v1.0/projects?company_id=2",
        vec![ProcoreError::Unauthorized],
    );
    procore.refreshes = vec![token("token-2")];
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(procore.refreshes_asked, 1);
    let company_2: Vec<&(String, String)> = procore
        .requests
        .iter()
        .filter(|(p, _)| p == "/rest/v1.0/projects?company_id=2")
        .collect();
    assert_eq!(company_2.len(), 2);
    assert_eq!(company_2[1].1, "token-2", "the repeat used the new token");
    assert!(store.calls.contains(&Call::Projects(2, vec![21])));
}

#[test]
fn a_second_401_after_a_refresh_ends_the_walk_for_good() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.fail_next(
        "/rest/v1.0/companies",
        vec![ProcoreError::Unauthorized, ProcoreError::Unauthorized],
    );
    procore.refreshes = vec![token("token-2")];
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert!(matches!(run.result, Err(SyncFailure::Permanent(m)) if m.contains("401")));
    assert!(store.pages().is_empty());
}

#[test]
fn a_token_about_to_expire_is_refreshed_before_it_is_used() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.refreshes = vec![token("fresh")];
    let mut walk = UserWalk::new(
        "user-1",
        catalog(),
        Secret::new("stale"),
        t0() + TimeDelta::seconds(30),
        config(1),
    );
    assert!(run(&mut walk, &mut store, &mut procore).result.is_ok());
    assert_eq!(procore.refreshes_asked, 1);
    assert!(procore.requests.iter().all(|(_, t)| t == "fresh"));
}

#[test]
fn a_failed_refresh_ends_the_walk_with_its_reason() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let reason = "Procore refused the refresh token (invalid_grant: revoked)";
    procore.refreshes = vec![Err(SyncFailure::Permanent(reason.into()))];
    let mut walk = UserWalk::new("user-1", catalog(), Secret::new("stale"), t0(), config(2));
    let run = run(&mut walk, &mut store, &mut procore);
    assert_eq!(run.result, Err(SyncFailure::Permanent(reason.into())));
    assert!(procore.requests.is_empty());
}

#[test]
fn one_short_429_is_waited_out_and_the_page_repeated() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let retry_at = t0() + TimeDelta::seconds(5);
    procore.fail_next(
        "/rest/v1.0/projects/11/rfis",
        vec![ProcoreError::RateLimited { retry_at }],
    );
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert_eq!(run.result.unwrap().records_written, 261);
    assert_eq!(run.idles_until, vec![retry_at]);
}

#[test]
fn a_second_429_in_a_row_parks_the_user() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let retry_at = t0() + TimeDelta::seconds(5);
    procore.fail_next(
        "/rest/v1.0/projects/11/rfis",
        vec![
            ProcoreError::RateLimited { retry_at },
            ProcoreError::RateLimited { retry_at },
        ],
    );
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert!(
        matches!(&run.result, Err(SyncFailure::RateLimited { retry_at: at, .. }) if *at == retry_at),
        "{:?}",
        run.result
    );
}

#[test]
fn a_long_429_parks_the_user_at_once() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let retry_at = t0() + TimeDelta::minutes(10);
    procore.fail_next(
        "/rest/v1.0/companies",
        vec![ProcoreError::RateLimited { retry_at }],
    );
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert!(
        matches!(&run.result, Err(SyncFailure::RateLimited { retry_at: at, .. }) if *at == retry_at)
    );
    assert!(run.idles_until.is_empty(), "it waited instead of parking");
}

#[test]
fn transient_failures_are_retried_with_backoff_then_give_up() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.fail_next(
        "/rest/v1.0/projects/21/rfis",
        vec![
            ProcoreError::Timeout,
            ProcoreError::Connection("reset".into()),
            ProcoreError::Server {
                status: 502,
                detail: "bad gateway".into(),
            },
        ],
    );
    let recovered = run(&mut walk(1), &mut store, &mut procore);
    assert_eq!(recovered.result.unwrap().records_written, 261);
    assert_eq!(recovered.idles_until.len(), 3, "each retry waits first");

    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.fail_next(
        "/rest/v1.0/projects/21/rfis",
        (0..4).map(|_| ProcoreError::Timeout).collect(),
    );
    let gave_up = run(&mut walk(1), &mut store, &mut procore);
    assert!(matches!(gave_up.result, Err(SyncFailure::Retryable(m)) if m.contains("timed out")));
}

#[test]
fn a_refused_or_unreadable_listing_fails_alone_and_the_walk_goes_on() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.fail_next(
        "/rest/v1.0/projects/11/rfis",
        vec![ProcoreError::Forbidden("no access".into())],
    );
    procore.bad_json.push("/rest/v1.0/projects/21/rfis".into());
    let run = run(&mut walk(1), &mut store, &mut procore);
    let outcome = run.result.expect("the walk goes on");
    assert_eq!(outcome.records_written, 2 + 3 + 250);
    assert_eq!(
        outcome.resource_errors.len(),
        2,
        "{:?}",
        outcome.resource_errors
    );
    assert!(store.calls.iter().any(
        |c| matches!(c, Call::Fail(l, m, true) if l == "rfis in project 11" && m.contains("403"))
    ));
    assert!(store.calls.iter().any(
        |c| matches!(c, Call::Fail(l, m, false) if l == "rfis in project 21" && m.contains("bad data"))
    ));
    assert!(!store
        .calls
        .iter()
        .any(|c| matches!(c, Call::Finish(l, ..) if l == "rfis in project 11" || l == "rfis in project 21")));
}

#[test]
fn a_refused_project_list_skips_that_company_s_projects() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.fail_next(
        "/rest/v1.0/projects?company_id=1",
        vec![ProcoreError::NotFound("gone".into())],
    );
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert_eq!(run.result.unwrap().records_written, 2 + 1 + 3);
    assert!(!store
        .calls
        .iter()
        .any(|c| matches!(c, Call::Projects(1, _))));
}

#[test]
fn pacing_waits_for_the_window_when_headroom_is_spent() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let reset = t0().timestamp() + 8;
    procore.rate_limit = Some(RateLimit {
        limit: 100,
        remaining: 5,
        reset_at: reset,
    });
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert!(run.result.is_ok());
    // Every request after the first waited for the reset, plus a second for its rounding.
    assert_eq!(
        run.idles_until.first(),
        Some(&(t0() + TimeDelta::seconds(9)))
    );
}

#[test]
fn pacing_counts_the_user_s_own_requests_in_flight() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    // Ten projects, so eight listings could be in flight at once; but with 13 left of 100
    // and a reserve of 10, only 3 requests may go.
    procore.lists.insert(
        "/rest/v1.0/projects?company_id=1".into(),
        (11..=20).collect(),
    );
    procore.rate_limit = Some(RateLimit {
        limit: 100,
        remaining: 13,
        reset_at: t0().timestamp() + 8,
    });
    let run = run(&mut walk(8), &mut store, &mut procore);
    assert!(run.result.is_ok());
    assert!(run.peak_in_flight <= 3, "{} in flight", run.peak_in_flight);
}

#[test]
fn a_wait_for_the_window_past_the_inline_limit_parks_the_user() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    procore.rate_limit = Some(RateLimit {
        limit: 100,
        remaining: 1,
        reset_at: t0().timestamp() + 600,
    });
    let run = run(&mut walk(1), &mut store, &mut procore);
    assert!(matches!(run.result, Err(SyncFailure::RateLimited { .. })));
    assert_eq!(
        store.pages().len(),
        1,
        "only the first page went before the limit was seen"
    );
}

#[test]
fn a_lost_lease_stops_the_walk_and_later_responses_are_dropped() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    store.lose_lease_after_pages = Some(3);
    let mut walk = walk(4);
    let run = run(&mut walk, &mut store, &mut procore);
    assert!(matches!(run.result, Err(SyncFailure::LeaseLost(_))));
    assert_eq!(store.pages().len(), 3);
    // A response still in flight when the lease went is not written.
    let late = FetchedPage {
        rows: page_rows(vec![json!({ "id": 999 })]).map_err(|e| e.to_string()),
        next_url: None,
    };
    walk.on_page(&mut store, 1, Ok(late), None, t0());
    assert_eq!(store.pages().len(), 3);
    assert!(matches!(walk.poll(&mut store, t0()), Action::Idle(None)));
}

#[test]
fn incremental_listings_ask_only_for_what_changed_since_the_last_pass() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let last = t0() - TimeDelta::minutes(10);
    store.cursors.insert(
        "rfis in project 11".into(),
        CursorTimes {
            last_synced: Some(last),
            last_full: Some(t0() - TimeDelta::hours(1)),
            listed: Some(last),
        },
    );
    assert!(run(&mut walk(1), &mut store, &mut procore).result.is_ok());
    let from = last - TimeDelta::seconds(120);
    assert!(store.calls.contains(&Call::Finish(
        "rfis in project 11".into(),
        Some(from),
        vec![]
    )));
    assert!(store
        .calls
        .contains(&Call::Finish("rfis in project 12".into(), None, vec![])));
    // Structural listings never read a cursor: they are always whole.
    assert!(!store.calls.contains(&Call::Cursor("companies".into())));
}

#[test]
fn a_catalog_without_companies_is_refused() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let mut walk = UserWalk::new(
        "user-1",
        catalog().split_off(1),
        Secret::new("t"),
        t0() + TimeDelta::hours(1),
        config(1),
    );
    let run = run(&mut walk, &mut store, &mut procore);
    assert!(matches!(run.result, Err(SyncFailure::Permanent(m)) if m.contains("companies")));
}

#[test]
fn an_aborted_walk_reports_the_reason_and_writes_nothing_more() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let mut walk = walk(2);
    let Action::Fetch(first) = walk.poll(&mut store, t0()) else {
        panic!("the walk starts with a request");
    };
    walk.abort(SyncFailure::Shutdown);
    let answer = procore.answer(&first);
    walk.on_page(&mut store, first.id, answer, None, t0());
    assert!(matches!(
        walk.poll(&mut store, t0()),
        Action::Done(Err(SyncFailure::Shutdown))
    ));
    assert!(store.pages().is_empty());
}

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap()
}

fn cursor(last: DateTime<Utc>, full: Option<DateTime<Utc>>) -> Option<CursorTimes> {
    Some(CursorTimes {
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
    assert_eq!(since, Some(at(11) - TimeDelta::seconds(120)));
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

// Child, dated and deleted-record listings.

/// The test catalog plus a three-level chain under each project: areas → drawings →
/// revisions.
fn nested_catalog() -> Vec<Resource> {
    let child = |name: &str, path: &str, parent: &str, placeholder: &str| Resource {
        parent_resource: Some(parent.into()),
        parent_placeholder: Some(placeholder.into()),
        ..resource(name, Scope::Project, path, true)
    };
    let mut catalog = catalog();
    catalog.extend([
        resource("areas", Scope::Project, "/p/{project_id}/areas", true),
        child("drawings", "/areas/{area_id}/drawings", "areas", "area_id"),
        child(
            "revisions",
            "/drawings/{drawing_id}/revisions?project_id={project_id}",
            "drawings",
            "drawing_id",
        ),
    ]);
    catalog
}

fn nested_world() -> FakeProcore {
    let mut procore = FakeProcore::world();
    for (path, ids) in [
        ("/p/11/areas", vec![1, 2]),
        ("/areas/1/drawings", vec![10, 11]),
        ("/areas/2/drawings", vec![20]),
        ("/drawings/10/revisions?project_id=11", vec![100, 101]),
        ("/drawings/20/revisions?project_id=11", vec![200]),
    ] {
        procore.lists.insert(path.into(), ids);
    }
    procore
}

fn walk_of(resources: Vec<Resource>) -> UserWalk {
    UserWalk::new(
        "user-1",
        resources,
        Secret::new("token-1"),
        t0() + TimeDelta::hours(2),
        config(1),
    )
}

fn position(calls: &[Call], wanted: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .position(wanted)
        .expect("a call that never came")
}

#[test]
fn a_three_level_tree_is_walked_parents_before_children() {
    let (mut store, mut procore) = (FakeStore::default(), nested_world());
    let run = run(&mut walk_of(nested_catalog()), &mut store, &mut procore);
    let outcome = run.result.expect("a clean walk");
    assert!(outcome.resource_errors.is_empty(), "{outcome:?}");
    let pages = store.pages();
    for (listing, ids) in [
        ("areas in project 11", vec![1, 2]),
        ("drawings under 1 in project 11", vec![10, 11]),
        ("drawings under 2 in project 11", vec![20]),
        ("revisions under 10 in project 11", vec![100, 101]),
        ("revisions under 20 in project 11", vec![200]),
    ] {
        assert!(
            pages.contains(&(listing.to_string(), ids)),
            "{listing}: {pages:?}"
        );
    }
    // Drawing 11 has no revisions but is still asked; project 12's areas list is empty, so
    // nothing below it is.
    assert!(pages.contains(&("revisions under 11 in project 11".to_string(), vec![])));
    assert!(!pages
        .iter()
        .any(|(l, _)| l.contains("under") && l.ends_with("project 12")));
    // A parent's listing finishes before any of its children's is asked for.
    let finished =
        |name: &'static str| move |c: &Call| matches!(c, Call::Finish(l, ..) if l == name);
    let paged = |name: &'static str| move |c: &Call| matches!(c, Call::Page(l, _) if l == name);
    let calls = &store.calls;
    assert!(
        position(calls, finished("areas in project 11"))
            < position(calls, paged("drawings under 1 in project 11"))
    );
    assert!(
        position(calls, finished("drawings under 1 in project 11"))
            < position(calls, paged("revisions under 10 in project 11"))
    );
    // Every child listing keeps a cursor of its own.
    assert!(store
        .calls
        .contains(&Call::Cursor("revisions under 20 in project 11".into())));
}

#[test]
fn a_parent_deleted_mid_walk_stops_its_children_without_an_error() {
    let (mut store, mut procore) = (FakeStore::default(), nested_world());
    // Area 2 was deleted between its listing and its drawings'.
    procore.fail_next(
        "/areas/2/drawings",
        vec![ProcoreError::NotFound("drawing area 2 not found".into())],
    );
    let run = run(&mut walk_of(nested_catalog()), &mut store, &mut procore);
    let outcome = run.result.expect("the sync goes on");
    assert!(outcome.resource_errors.is_empty(), "{outcome:?}");
    assert!(store
        .calls
        .iter()
        .any(|c| matches!(c, Call::Fail(l, _, true) if l == "drawings under 2 in project 11")));
    // Nothing below the deleted area is asked for; its sibling's subtree is walked whole.
    assert!(!procore
        .requests
        .iter()
        .any(|(p, _)| p.contains("/drawings/20/")));
    assert!(store.pages().contains(&(
        "revisions under 10 in project 11".to_string(),
        vec![100, 101]
    )));
}

#[test]
fn a_large_tree_is_walked_with_a_bounded_queue() {
    let mut catalog = nested_catalog();
    catalog.retain(|r| r.name != "revisions");
    let mut procore = FakeProcore::world();
    procore.per_page = 100;
    let areas: Vec<i64> = (1..=1_000).collect();
    for area in &areas {
        procore
            .lists
            .insert(format!("/areas/{area}/drawings"), vec![area * 10_000]);
    }
    procore.lists.insert("/p/11/areas".into(), areas.clone());
    let mut store = FakeStore::default();
    let mut walk = walk_of(catalog);
    let outcome = run(&mut walk, &mut store, &mut procore)
        .result
        .expect("a clean walk");
    let drawings: usize = store
        .pages()
        .iter()
        .filter(|(l, _)| l.starts_with("drawings under"))
        .map(|(_, ids)| ids.len())
        .sum();
    assert_eq!(drawings, 1_000);
    assert!(outcome.resource_errors.is_empty());
    // 1,000 child listings, never more than a batch of them queued at once (plus the other
    // projects' listings and the walk's own few).
    assert!(
        walk.peak_pending() <= CHILD_BATCH + 10,
        "{} listings queued at once",
        walk.peak_pending()
    );
}

fn logs(filter: DateFilter) -> Vec<Resource> {
    let mut catalog = catalog();
    catalog.push(Resource {
        date_filter: Some(filter),
        ..resource("logs", Scope::Project, "/p/{project_id}/logs", false)
    });
    catalog
}

fn asked(procore: &FakeProcore, path: &str) -> Vec<Vec<(String, String)>> {
    procore
        .queries
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, q)| q.clone())
        .collect()
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[test]
fn a_full_dated_pass_reads_the_window_across_a_month_boundary() {
    // t0 is 2026-03-01: a 30-day window starts on 2026-01-31.
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    run(
        &mut walk_of(logs(DateFilter::DateRange)),
        &mut store,
        &mut procore,
    )
    .result
    .expect("a clean walk");
    assert_eq!(
        asked(&procore, "/p/11/logs"),
        vec![vec![
            pair("start_date", "2026-01-31"),
            pair("end_date", "2026-03-01")
        ]]
    );
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    run(
        &mut walk_of(logs(DateFilter::LogDate)),
        &mut store,
        &mut procore,
    )
    .result
    .expect("a clean walk");
    let days: Vec<String> = asked(&procore, "/p/11/logs")
        .into_iter()
        .map(|q| {
            assert_eq!(q.len(), 1);
            q[0].1.clone()
        })
        .collect();
    assert_eq!(days.len(), 30);
    assert_eq!(days[0], "2026-01-31");
    assert_eq!(days[1], "2026-02-01");
    assert_eq!(days[28], "2026-02-28");
    assert_eq!(days[29], "2026-03-01");
    // One listing over all its days, finished once, as a full pass of those dates.
    let ends: Vec<_> = store
        .ends
        .iter()
        .filter(|(l, ..)| l == "logs in project 11")
        .collect();
    let window = NaiveDate::from_ymd_opt(2026, 1, 31).zip(NaiveDate::from_ymd_opt(2026, 3, 1));
    assert_eq!(
        ends,
        vec![&("logs in project 11".to_string(), true, window)]
    );
}

#[test]
fn an_incremental_dated_pass_reads_from_the_day_before_the_last_sync() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    let last = Utc.with_ymd_and_hms(2026, 2, 28, 23, 59, 0).unwrap();
    store.cursors.insert(
        "logs in project 11".into(),
        CursorTimes {
            last_synced: Some(last),
            last_full: Some(last),
            listed: Some(last),
        },
    );
    run(
        &mut walk_of(logs(DateFilter::LogDate)),
        &mut store,
        &mut procore,
    )
    .result
    .expect("a clean walk");
    let days: Vec<Vec<(String, String)>> = asked(&procore, "/p/11/logs");
    assert_eq!(
        days,
        vec![
            vec![pair("log_date", "2026-02-27")],
            vec![pair("log_date", "2026-02-28")],
            vec![pair("log_date", "2026-03-01")],
        ]
    );
    let window = NaiveDate::from_ymd_opt(2026, 2, 27).zip(NaiveDate::from_ymd_opt(2026, 3, 1));
    assert!(store
        .ends
        .contains(&("logs in project 11".to_string(), false, window)));
}

#[test]
fn dated_windows() {
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 30, 0).unwrap();
    assert_eq!(
        dated_window(None, false, now, 30),
        (day(2026, 1, 31), day(2026, 3, 1))
    );
    assert_eq!(
        dated_window(None, false, now, 1),
        (now.date_naive(), now.date_naive())
    );
    assert_eq!(
        dated_window(None, true, now, 30),
        (day(2000, 1, 1), day(2026, 3, 1))
    );
    // A leap year's February has 29 days.
    let now = Utc.with_ymd_and_hms(2028, 3, 1, 0, 30, 0).unwrap();
    assert_eq!(
        dated_window(None, false, now, 2),
        (day(2028, 2, 29), day(2028, 3, 1))
    );
    let since = Utc.with_ymd_and_hms(2028, 3, 1, 0, 10, 0).unwrap();
    assert_eq!(
        dated_window(Some(since), false, now, 30),
        (day(2028, 2, 29), day(2028, 3, 1))
    );
    let since = Utc.with_ymd_and_hms(2027, 12, 31, 22, 0, 0).unwrap();
    let now = Utc.with_ymd_and_hms(2028, 1, 1, 0, 30, 0).unwrap();
    assert_eq!(
        dated_window(Some(since), false, now, 30),
        (day(2027, 12, 30), day(2028, 1, 1))
    );
}

fn with_bins() -> Vec<Resource> {
    let mut catalog = catalog();
    catalog[2].recycle_bin_path = Some("/rest/v1.0/projects/{project_id}/rfis/recycle_bin".into());
    catalog.push(Resource {
        include_deleted: true,
        ..resource("events", Scope::Project, "/e?project_id={project_id}", true)
    });
    catalog
}

fn incremental_cursors(store: &mut FakeStore, listings: &[&str]) {
    let recent = t0() - TimeDelta::hours(1);
    for listing in listings {
        store.cursors.insert(
            listing.to_string(),
            CursorTimes {
                last_synced: Some(recent),
                last_full: Some(recent),
                listed: Some(recent),
            },
        );
    }
}

#[test]
fn an_incremental_pass_reads_the_recycle_bin_and_marks_what_it_lists() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    incremental_cursors(&mut store, &["rfis in project 11", "events in project 11"]);
    procore
        .lists
        .insert("/rest/v1.0/projects/11/rfis/recycle_bin".into(), vec![113]);
    procore.lists.insert("/e?project_id=11".into(), vec![7]);
    let outcome = run(&mut walk_of(with_bins()), &mut store, &mut procore)
        .result
        .expect("a clean walk");
    assert!(outcome.resource_errors.is_empty());
    assert!(store.calls.contains(&Call::Deleted(
        "rfis (deleted) in project 11".into(),
        vec![113]
    )));
    // filters[include_deleted]=only on the list itself; its ids are deletions, not records.
    assert!(asked(&procore, "/e?project_id=11")
        .iter()
        .any(|q| q.contains(&pair("filters[include_deleted]", "only"))));
    assert!(store.calls.contains(&Call::Deleted(
        "events (deleted) in project 11".into(),
        vec![7]
    )));
    // Projects on a full pass see deletions by absence: no recycle bin for them.
    let bins: Vec<&String> = procore
        .requests
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.contains("recycle_bin"))
        .collect();
    assert_eq!(bins, vec!["/rest/v1.0/projects/11/rfis/recycle_bin"]);
    // The deletions listing is no listing of records: it finishes nothing.
    assert!(!store
        .calls
        .iter()
        .any(|c| matches!(c, Call::Finish(l, ..) if l.contains("(deleted)"))));
}

#[test]
fn a_list_that_ignores_include_deleted_marks_nothing_and_a_missing_bin_is_no_error() {
    let (mut store, mut procore) = (FakeStore::default(), FakeProcore::world());
    incremental_cursors(&mut store, &["rfis in project 11", "events in project 11"]);
    procore.ignore_include_deleted = true;
    procore.lists.insert("/e?project_id=11".into(), vec![7]);
    procore.fail_next(
        "/rest/v1.0/projects/11/rfis/recycle_bin",
        vec![ProcoreError::NotFound("no such route".into())],
    );
    let outcome = run(&mut walk_of(with_bins()), &mut store, &mut procore)
        .result
        .expect("a clean walk");
    assert!(outcome.resource_errors.is_empty(), "{outcome:?}");
    assert!(store.calls.contains(&Call::Deleted(
        "events (deleted) in project 11".into(),
        vec![]
    )));
    assert!(!store
        .calls
        .iter()
        .any(|c| matches!(c, Call::Deleted(l, _) if l.starts_with("rfis"))));
}
