//! Many users in flight in one sync worker.
//!
//! The main thread is the only one that touches Postgres: it takes queue items, holds the
//! leases, reads credentials, writes pages, progress and NOTIFY. Each user's sync is a
//! `UserWalk` (pure, `procore_sync_core::walk`) that says what to request next; the requests
//! run on the worker's `FetchPool` threads, and their answers come back here. The main thread
//! never blocks on HTTP: it waits on the answers with a short timeout, so signals, timers and
//! the queue are looked at several times a second.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use crate::data::queue::{self, lock_user, unlock_user, Finish, TakenItem};
use crate::data::transaction::in_transaction;
use crate::data::{credentials, store};
use crate::procore::{backoff, Client, ClientConfig, ProcoreError};
use crate::settings;
use crate::sync::user::{self, PgStore, RefreshStart};
use crate::sync::webhooks::EventWork;
use crate::sync::{alerts, counters};
use procore_sync_core::fetch_pool::{blocking_signals, Answer, FetchPool, Job};
use procore_sync_core::walk::{Action, SyncFailure, SyncOutcome, UserWalk};

/// Requests in flight per worker at most. Answers are read by these threads; the bound keeps
/// a worker's memory to a few dozen responses however many users it carries.
const MAX_FETCH_THREADS: usize = 32;
/// Answers waiting for the main thread; past this the threads wait (back-pressure).
const BUFFERED_ANSWERS: usize = 8;
/// Longest the main thread waits for an answer before it looks at signals and timers.
const TICK: Duration = Duration::from_millis(100);
/// Queue items taken per tick, so a long queue does not keep the users in flight waiting.
const TAKES_PER_TICK: usize = 16;
/// How often a worker counts the open items to know its fair share.
const FAIR_SHARE_REFRESH: Duration = Duration::from_secs(1);
/// A pool worker with nothing to do for this long exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);
/// How soon to ask again for a refresh lock another process holds.
const REFRESH_LOCK_RETRY: Duration = Duration::from_millis(250);
/// How soon to look at the queue again after it had nothing due: answers arrive hundreds of
/// times a second, and each need not cost a queue scan.
const EMPTY_QUEUE_RETRY: Duration = Duration::from_millis(250);

/// Where a worker's users come from.
pub enum Source {
    /// Due queue items, as many at once as `users_per_worker` allows.
    Queue,
    /// One user for `procore_sync_user()`: rate limits and errors fail the call at once
    /// instead of being retried later.
    Manual(TakenItem),
}

struct UserInFlight {
    item: TakenItem,
    walk: UserWalk,
    store: PgStore,
    /// This worker holds the user's advisory lock (not when it took over an expired lease).
    locked: bool,
    started: Instant,
    wake_at: Option<DateTime<Utc>>,
    /// Set while another process holds the user's refresh lock.
    refresh_again_at: Option<Instant>,
}

struct Flight {
    manual: bool,
    pool: FetchPool,
    /// The client settings `pool` was built with, to notice a reload that changes them.
    client_settings: String,
    /// Pools replaced after a reload, kept until their last answers are in.
    retiring: Vec<FetchPool>,
    users: HashMap<u64, UserInFlight>,
    next_walk: u64,
    /// Token refreshes sent and not answered yet.
    refreshes_out: usize,
    next_take_at: Instant,
    /// Open items ÷ the pool's processes, counted every `FAIR_SHARE_REFRESH`.
    fair_share: usize,
    share_checked_at: Instant,
    /// The users in flight changed since `pg_stat_activity` last showed them.
    activity_stale: bool,
    /// Webhook events (pool workers only): one-record fetches beside the users' walks.
    events: EventWork,
}

/// Runs until the queue stays empty (`Queue`), the user is done (`Manual`), or shutdown.
pub fn run(source: Source) {
    let (manual, first) = match source {
        Source::Queue => (false, None),
        Source::Manual(item) => (true, Some(item)),
    };
    let mut flight = match Flight::start(manual) {
        Ok(flight) => flight,
        Err(message) => {
            fail_without_client(first, &message);
            return;
        }
    };
    if let Some(item) = first {
        flight.admit(item, true);
    }
    let mut idle_since = Instant::now();
    loop {
        // A zero wait on the latch notices a dead postmaster; SIGTERM sets the flag.
        if shutdown_requested() || !BackgroundWorker::wait_latch(Some(Duration::ZERO)) {
            flight.shut_down();
            return;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            flight.renew_pool_if_settings_changed();
        }
        let mut events_taken = 0;
        if !manual {
            flight.take_due_items();
            events_taken = flight.events.take(&mut flight.pool);
        }
        flight.show_activity();
        // Pages still out for users that ended are dropped when they come; a refresh is not.
        if flight.users.is_empty()
            && flight.refreshes_out == 0
            && flight.events.outstanding() == 0
            && events_taken == 0
        {
            if manual || idle_since.elapsed() >= IDLE_EXIT {
                return;
            }
            BackgroundWorker::wait_latch(Some(Duration::from_millis(250)));
            continue;
        }
        idle_since = Instant::now();
        flight.drive_due_users();
        flight.handle_answers();
    }
}

impl Flight {
    fn start(manual: bool) -> Result<Flight, String> {
        let config = settings::client_config();
        let client_settings = fingerprint(&config);
        Ok(Flight {
            manual,
            pool: start_pool(config)?,
            client_settings,
            retiring: Vec::new(),
            users: HashMap::new(),
            next_walk: 0,
            refreshes_out: 0,
            next_take_at: Instant::now(),
            fair_share: 1,
            share_checked_at: Instant::now() - FAIR_SHARE_REFRESH,
            activity_stale: true,
            events: EventWork::default(),
        })
    }

    /// New HTTP settings (base URLs, timeout, CA file, credentials) apply to the requests
    /// sent after the reload; requests already out finish on the old pool.
    fn renew_pool_if_settings_changed(&mut self) {
        let config = settings::client_config();
        let changed = fingerprint(&config);
        if changed == self.client_settings {
            return;
        }
        match start_pool(config) {
            Ok(pool) => {
                self.retiring.push(std::mem::replace(&mut self.pool, pool));
                self.client_settings = changed;
            }
            Err(message) => log!("procore_sync: new HTTP settings not applied: {message}"),
        }
    }

    /// Takes due items while this worker has room: up to `users_per_worker`, and no more
    /// than its fair share of the open items, so a short queue is spread over the pool's
    /// processes (and their main threads) instead of landing on whichever started first.
    fn take_due_items(&mut self) {
        if Instant::now() < self.next_take_at {
            return;
        }
        if self.share_checked_at.elapsed() >= FAIR_SHARE_REFRESH {
            self.share_checked_at = Instant::now();
            if let Ok(open) = in_transaction(queue::open_items) {
                let workers = open.clamp(1, i64::from(settings::max_workers().max(1)));
                self.fair_share = ((open + workers - 1) / workers).max(1) as usize;
            }
        }
        let cap = settings::users_per_worker().min(self.fair_share);
        let room = cap.saturating_sub(self.users.len()).min(TAKES_PER_TICK);
        if room == 0 {
            return;
        }
        let busy: Vec<String> = self
            .users
            .values()
            .map(|u| u.item.user_id.clone())
            .collect();
        let items = match in_transaction(|| queue::take_items(&busy, room)) {
            Ok(items) => items,
            Err(e) => {
                log!("procore_sync: could not take queue items: {e}");
                return;
            }
        };
        if items.len() < room {
            self.next_take_at = Instant::now() + EMPTY_QUEUE_RETRY;
        }
        for item in items {
            let locked = lock_user(&item.user_id);
            // The holder of an expired lease is frozen, not syncing: take over, and its own
            // next write will find the item gone.
            if locked || item.taken_over {
                self.admit(item, locked);
            } else {
                // A manual sync holds this user: try again shortly, without an attempt.
                let finish = Finish::RetryAt {
                    at: Utc::now() + TimeDelta::seconds(5),
                    error: "another worker is syncing this user",
                    counts_as_attempt: false,
                };
                let _ = in_transaction(|| queue::finish_item(item.queue_id, finish));
            }
        }
    }

    fn admit(&mut self, item: TakenItem, locked: bool) {
        match user::start_walk(&item) {
            Ok((walk, store)) => {
                self.next_walk += 1;
                self.activity_stale = true;
                let id = self.next_walk;
                self.users.insert(
                    id,
                    UserInFlight {
                        item,
                        walk,
                        store,
                        locked,
                        started: Instant::now(),
                        wake_at: Some(Utc::now()),
                        refresh_again_at: None,
                    },
                );
                self.drive(id);
            }
            Err(failure) => {
                finish_item(&item, self.manual, Instant::now(), None, Err(failure));
                if locked {
                    unlock_user(&item.user_id);
                }
            }
        }
    }

    /// Polls the users whose timer ran out (pacing, a retry's backoff, a busy refresh lock).
    fn drive_due_users(&mut self) {
        let now = Utc::now();
        let due: Vec<u64> = self
            .users
            .iter()
            .filter(|(_, u)| {
                u.wake_at.is_some_and(|at| at <= now)
                    || u.refresh_again_at.is_some_and(|at| at <= Instant::now())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.drive(id);
        }
    }

    /// Asks one user's walk for everything it can do now.
    fn drive(&mut self, id: u64) {
        loop {
            let Some(user) = self.users.get_mut(&id) else {
                return;
            };
            if let Some(at) = user.refresh_again_at {
                if Instant::now() < at {
                    return;
                }
                user.refresh_again_at = None;
                self.refresh(id);
                continue;
            }
            match user.walk.poll(&mut user.store, Utc::now()) {
                Action::Fetch(fetch) => self.pool.submit(Job::Page { walk: id, fetch }),
                Action::Refresh => self.refresh(id),
                Action::Idle(wake) => {
                    user.wake_at = wake;
                    return;
                }
                Action::Done(result) => {
                    self.finish(id, result);
                    return;
                }
            }
        }
    }

    fn refresh(&mut self, id: u64) {
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        match user::begin_refresh(&user.item.user_id, user.walk.access_token()) {
            Ok(RefreshStart::Use(token, expires_at)) => {
                user.walk.on_refresh(Ok((token, expires_at)))
            }
            Ok(RefreshStart::Spend(refresh_token)) => {
                let user_id = user.item.user_id.clone();
                self.pool.submit(Job::Refresh {
                    walk: id,
                    user_id,
                    refresh_token,
                });
                self.refreshes_out += 1;
            }
            Ok(RefreshStart::Busy) => {
                user.refresh_again_at = Some(Instant::now() + REFRESH_LOCK_RETRY)
            }
            Err(failure) => user.walk.on_refresh(Err(failure)),
        }
    }

    /// Waits up to a tick (less when a user's timer runs out sooner) for answers, and hands
    /// each to its user.
    fn handle_answers(&mut self) {
        let now = Utc::now();
        let next_timer = self
            .users
            .values()
            .filter_map(|u| u.wake_at)
            .min()
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO));
        let mut wait = next_timer.map_or(TICK, |t| t.min(TICK));
        if self.users.values().any(|u| u.refresh_again_at.is_some()) {
            wait = wait.min(REFRESH_LOCK_RETRY);
        }
        let mut answers = Vec::new();
        answers.extend(self.pool.next_answer(wait));
        while answers.len() < 64 {
            match self.pool.next_answer(Duration::ZERO) {
                Some(answer) => answers.push(answer),
                None => break,
            }
        }
        for pool in &mut self.retiring {
            while let Some(answer) = pool.next_answer(Duration::ZERO) {
                answers.push(answer);
            }
        }
        self.retiring.retain(|p| p.outstanding() > 0);
        for answer in answers {
            self.handle(answer);
        }
    }

    fn handle(&mut self, answer: Answer) {
        match answer {
            Answer::Page {
                walk,
                fetch,
                result,
                rate_limit,
            } => {
                counters::request(answer_status(&result));
                // A user that ended meanwhile (lease lost, parked, shut down) is gone: its
                // answer is dropped, never written.
                if let Some(user) = self.users.get_mut(&walk) {
                    user.walk
                        .on_page(&mut user.store, fetch, result, rate_limit, Utc::now());
                    self.drive(walk);
                }
            }
            Answer::Refresh {
                walk,
                user_id,
                result,
                journal_error,
            } => {
                self.refreshes_out -= 1;
                // Committed even when the walk is gone: the old refresh token is spent.
                let refreshed = user::end_refresh(&user_id, result, journal_error);
                if let Some(user) = self.users.get_mut(&walk) {
                    user.walk.on_refresh(refreshed);
                    self.drive(walk);
                }
            }
            Answer::Record {
                work,
                result,
                rate_limit,
            } => {
                counters::request(match &result {
                    Ok(Some(_)) => Some(200),
                    Ok(None) => Some(404),
                    Err(e) => e.http_status(),
                });
                self.events.on_answer(work, result, rate_limit)
            }
        }
    }

    fn finish(&mut self, id: u64, result: Result<SyncOutcome, SyncFailure>) {
        let Some(mut user) = self.users.remove(&id) else {
            return;
        };
        self.activity_stale = true;
        if result.is_err() {
            user.store.discard();
        }
        finish_item(
            &user.item,
            self.manual,
            user.started,
            user.walk.rate_limit(),
            result,
        );
        if user.locked {
            unlock_user(&user.item.user_id);
        }
    }

    /// Gives every user back to the queue untouched, and waits for any token refresh already
    /// out: Procore spends the old refresh token, so the new pair must be committed. Pages
    /// still in flight are dropped.
    fn shut_down(&mut self) {
        let ids: Vec<u64> = self.users.keys().copied().collect();
        for id in ids {
            self.finish(id, Err(SyncFailure::Shutdown));
        }
        let deadline = Instant::now() + settings::client_config().timeout + Duration::from_secs(1);
        while self.refreshes_out > 0 && Instant::now() < deadline {
            self.handle_answers();
        }
    }

    /// Names the users in flight in `pg_stat_activity` (as many as its query column holds).
    fn show_activity(&mut self) {
        if !std::mem::take(&mut self.activity_stale) {
            return;
        }
        let mut flights: Vec<(&u64, &UserInFlight)> = self.users.iter().collect();
        flights.sort_by_key(|(id, _)| **id);
        let text = match flights.as_slice() {
            [] => "procore_sync: idle".to_string(),
            [(_, user)] => format!("procore_sync: syncing user {}", user.item.user_id),
            all => {
                let ids: Vec<&str> = all.iter().map(|(_, u)| u.item.user_id.as_str()).collect();
                format!(
                    "procore_sync: syncing {} users: {}",
                    all.len(),
                    ids.join(" ")
                )
            }
        };
        report_activity(&text);
    }
}

/// The HTTP status an answer came with; None when none came (timeout, connection).
fn answer_status<T>(result: &Result<T, ProcoreError>) -> Option<u16> {
    match result {
        Ok(_) => Some(200),
        Err(e) => e.http_status(),
    }
}

fn start_pool(config: ClientConfig) -> Result<FetchPool, String> {
    let client = Client::new(config).map_err(|e| e.to_string())?;
    let threads = settings::users_per_worker().min(MAX_FETCH_THREADS);
    blocking_signals(|| {
        FetchPool::start(
            Arc::new(client),
            credentials::token_journal(),
            threads,
            BUFFERED_ANSWERS,
        )
    })
    .map_err(|e| format!("could not start HTTP threads: {e}"))
}

/// What identifies a client's settings; compared in memory only, never shown.
fn fingerprint(config: &ClientConfig) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{:?}\n{:?}\n{}\n{}\n{}",
        config.api_base_url,
        config.login_base_url,
        config.client_id,
        config.client_secret.expose(),
        config.timeout,
        config.ca_file,
        config.max_response_bytes,
        config.allow_http,
        config.user_agent
    )
}

/// Settings that make a client impossible (a bad base URL) fail the work at hand with the
/// reason, as any sync with them would: the manual user, or every due item.
fn fail_without_client(item: Option<TakenItem>, message: &str) {
    log!("procore_sync: sync worker cannot reach Procore: {message}");
    let failure = || SyncFailure::Permanent(message.to_string());
    if let Some(item) = item {
        finish_item(&item, true, Instant::now(), None, Err(failure()));
        return;
    }
    while !shutdown_requested() {
        match in_transaction(|| queue::take_items(&[], TAKES_PER_TICK)) {
            Ok(items) if !items.is_empty() => {
                for item in items {
                    finish_item(&item, false, Instant::now(), None, Err(failure()));
                }
            }
            _ => return,
        }
    }
}

/// Records how a user's sync ended: the log line, the rate limit for the status view, and
/// the queue item's end (with its NOTIFY).
fn finish_item(
    item: &TakenItem,
    manual: bool,
    started: Instant,
    rate_limit: Option<crate::procore::RateLimit>,
    result: Result<SyncOutcome, SyncFailure>,
) {
    if let Some(rl) = rate_limit {
        if !matches!(
            in_transaction(|| store::save_rate_limit(item.queue_id, &rl)),
            Ok(())
        ) {
            log!(
                "procore_sync: could not record the rate limit of queue item {}",
                item.queue_id
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut next_attempt = None;
    let finished = match &result {
        Ok(outcome) => {
            log!(
                "procore_sync: user {} synced: {} records written, {} requests, {:.1}s{}",
                item.user_id,
                outcome.records_written,
                outcome.requests_made,
                elapsed,
                if outcome.resource_errors.is_empty() {
                    String::new()
                } else {
                    format!(", {} resource errors", outcome.resource_errors.len())
                }
            );
            let warnings = (!outcome.resource_errors.is_empty()).then(|| {
                format!(
                    "completed with {} resource error(s): {}",
                    outcome.resource_errors.len(),
                    outcome.resource_errors.join("; ")
                )
            });
            in_transaction(|| {
                queue::finish_item(
                    item.queue_id,
                    Finish::Completed {
                        records: outcome.records_written,
                        requests: outcome.requests_made,
                        warnings: warnings.as_deref(),
                    },
                )
            })
        }
        Err(failure) => {
            let message = failure.message();
            log!(
                "procore_sync: user {} sync attempt {} failed after {:.1}s: {}",
                item.user_id,
                item.attempts,
                elapsed,
                message
            );
            let finish = match failure {
                // Released and LeaseLost change nothing when another worker holds the item.
                SyncFailure::Shutdown | SyncFailure::LeaseLost(_) => Finish::Released,
                SyncFailure::RateLimited { retry_at, .. } if !manual => Finish::RetryAt {
                    at: *retry_at,
                    error: &message,
                    counts_as_attempt: false,
                },
                SyncFailure::Retryable(_)
                    if !manual && item.attempts < settings::max_attempts() =>
                {
                    let delay = backoff::retry_delay(
                        item.attempts.max(1) as u32,
                        Duration::from_secs(30),
                        Duration::from_secs(3600),
                        &mut rand::thread_rng(),
                    );
                    Finish::RetryAt {
                        at: Utc::now()
                            + TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(30)),
                        error: &message,
                        counts_as_attempt: true,
                    }
                }
                _ => Finish::Failed { error: &message },
            };
            if let Finish::RetryAt { at, .. } = finish {
                next_attempt = Some(at);
            }
            in_transaction(|| queue::finish_item(item.queue_id, finish))
        }
    };
    if let Err(e) = finished {
        log!(
            "procore_sync: could not record the end of queue item {}: {e}",
            item.queue_id
        );
    }
    // Apart from the item's end, so that a failure here never leaves the item unfinished.
    if let Err(e) =
        in_transaction(|| alerts::note_user_outcome(&item.user_id, &result, next_attempt))
    {
        log!(
            "procore_sync: could not weigh user {}'s sync for alerts: {e}",
            item.user_id
        );
    }
}

pub fn shutdown_requested() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

fn report_activity(text: &str) {
    if let Ok(text) = CString::new(text) {
        unsafe {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr())
        };
    }
}
