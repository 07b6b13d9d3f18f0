//! The walk against a fake store and a fake Procore: every path a response can take.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

use crate::catalog::{Resource, Scope};
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
}

#[derive(Default)]
struct FakeStore {
    calls: Vec<Call>,
    cursors: HashMap<String, CursorTimes>,
    lose_lease_after_pages: Option<usize>,
    progress: Vec<Progress>,
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
        self.calls.push(Call::Page(listing.to_string(), ids));
        Ok(rows.len() as i64)
    }

    fn finish_listing(&mut self, listing: &ListingRef, end: &ListingEnd) -> Result<(), StoreError> {
        self.calls.push(Call::Finish(
            listing.to_string(),
            end.window_from,
            end.listed_ids.to_vec(),
        ));
        Ok(())
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
    bad_json: Vec<String>,
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
            bad_json: Vec::new(),
        }
    }

    fn fail_next(&mut self, path: &str, errors: Vec<ProcoreError>) {
        self.errors
            .entry(path.to_string())
            .or_default()
            .extend(errors);
    }

    fn answer(&mut self, fetch: &Fetch) -> Result<FetchedPage, ProcoreError> {
        let (path, page) = match &fetch.page {
            PageAddress::First { path, query, .. } => {
                assert!(!path.contains('{'), "placeholders left in {path}");
                let _ = query;
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
            page_rows(chunk.iter().map(|id| json!({ "id": id })).collect())
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
    for _ in 0..10_000 {
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
