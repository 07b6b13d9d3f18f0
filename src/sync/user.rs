//! One user's sync in Postgres terms: the store the walk (`procore_sync_core::walk`) writes
//! through, the start of a sync, and the two halves of a token refresh around its HTTP call.
//! Everything here runs on a sync worker's main thread, one committed transaction per call,
//! so progress survives a crash and HTTP never happens inside a transaction.

use std::cell::Cell;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pgrx::prelude::*;

use crate::data::catalog::{self, Scope};
use crate::data::credentials;
use crate::data::queue::TakenItem;
use crate::data::store::{self, CursorTimes};
use crate::data::transaction::in_transaction;
use crate::data::visibility::{self, Listing, SeenIds};
use crate::errors::SyncError;
use crate::procore::{ProcoreError, Secret, TokenPair};
use crate::records::RecordRow;
use crate::settings;
use crate::sync::counters;
use procore_sync_core::walk::{
    ListingEnd, ListingKind, ListingRef, ParentScope, Progress, StoreError, SyncFailure, UserWalk,
    WalkConfig, WalkStore, REFRESH_MARGIN,
};

/// Advisory-lock class of the per-user refresh locks: one token refresh per user at a time,
/// across every process, held from reading the refresh token until the new pair is
/// committed.
const REFRESH_LOCK_CLASS: i32 = 0x5053_5246;

/// Runs a database step in its own committed transaction.
fn step<R>(body: impl FnOnce() -> Result<R, SyncError>) -> Result<R, StoreError> {
    in_transaction(body).map_err(|e| match e {
        SyncError::LeaseLost(_) => StoreError::LeaseLost(e.to_string()),
        e => StoreError::Database(e.to_string()),
    })
}

/// Starts a user's sync: their credentials and the catalog, or why there is nothing to do.
pub fn start_walk(item: &TakenItem) -> Result<(UserWalk, PgStore), SyncFailure> {
    let user = &item.user_id;
    let stored = step(|| credentials::credentials(user))?
        .ok_or_else(|| SyncFailure::Permanent(format!("no Procore credentials for user {user}")))?;
    if stored.needs_reconnect {
        return Err(SyncFailure::Permanent(format!(
            "user {user} must reconnect to Procore: {}",
            stored.reconnect_reason.unwrap_or_default()
        )));
    }
    let resources = step(catalog::enabled_resources)?;
    let walk = UserWalk::new(
        user.clone(),
        resources,
        stored.access_token,
        stored.expires_at,
        WalkConfig {
            full_sync_interval_s: settings::full_sync_interval_seconds(),
            listings_in_flight: settings::listings_per_user(),
            dated_window_days: settings::dated_window_days(),
        },
    );
    let store = PgStore {
        holder: Holder {
            queue_id: item.queue_id,
            user_id: user.clone(),
            lease_seconds: settings::lease_seconds(),
        },
        seen: HashMap::new(),
    };
    Ok((walk, store))
}

/// The walk's store for one user's queue item.
pub struct PgStore {
    holder: Holder,
    /// Ids returned so far by each company or project listing in progress.
    seen: HashMap<u64, SeenIds>,
}

/// Whose item this worker holds, and for how long a lease at a time.
struct Holder {
    queue_id: i64,
    user_id: String,
    lease_seconds: i64,
}

impl Holder {
    /// Runs one write of the sync in its own committed transaction, after proving in that
    /// same transaction that this worker still holds the user: a worker that lost the
    /// lease writes nothing.
    fn write<R>(&self, body: impl FnOnce(&str) -> Result<R, SyncError>) -> Result<R, StoreError> {
        step(|| {
            store::hold_lease(self.queue_id, self.lease_seconds)?;
            body(&self.user_id)
        })
    }
}

impl PgStore {
    /// Drops what unfinished listings spilled; for a walk that ended early.
    pub fn discard(&mut self) {
        let unfinished: Vec<SeenIds> = self.seen.drain().map(|(_, s)| s).collect();
        if unfinished.is_empty() {
            return;
        }
        let _ = in_transaction(|| unfinished.into_iter().try_for_each(SeenIds::discard));
    }

    /// The cursor key of a listing's scope: company, project and parent record (0: none).
    fn scope_of(listing: &ListingRef) -> (i64, i64, i64) {
        (
            listing.company_id.unwrap_or(0),
            listing.project_id.unwrap_or(0),
            listing.parent_id.unwrap_or(0),
        )
    }

    /// Companies are their own company; everything else belongs to the scope's company.
    fn record_company(listing: &ListingRef) -> Option<i64> {
        match listing.scope {
            Scope::User => None,
            _ => listing.company_id,
        }
    }
}

impl WalkStore for PgStore {
    fn cursor(&mut self, listing: &ListingRef) -> Result<Option<CursorTimes>, StoreError> {
        let (company, project, parent) = Self::scope_of(listing);
        step(|| {
            store::cursor(
                &self.holder.user_id,
                &listing.resource,
                company,
                project,
                parent,
            )
        })
    }

    fn write_page(
        &mut self,
        listing: &ListingRef,
        rows: Vec<RecordRow>,
        progress: &Progress,
    ) -> Result<i64, StoreError> {
        let ids: Vec<i64> = rows.iter().map(|r| r.procore_id).collect();
        let company = Self::record_company(listing);
        let tracks_ids = listing.scope != Scope::User && listing.company_id.is_some();
        let seen = tracks_ids.then(|| self.seen.entry(listing.id).or_default());
        let queue_id = self.holder.queue_id;
        self.holder
            .write(|user| {
                visibility::lock_scope(
                    &listing.resource,
                    company,
                    listing.project_id,
                    listing.parent_id,
                )?;
                if let Some(seen) = seen {
                    seen.add(&ids)?;
                }
                let written = store::upsert_page(
                    &listing.resource,
                    company,
                    listing.project_id,
                    listing.parent_id,
                    rows,
                )?;
                store::record_progress(&store::Progress {
                    queue_id,
                    user_id: user,
                    resource: &listing.resource,
                    company_id: listing.company_id,
                    project_id: listing.project_id,
                    pages: progress.pages,
                    records: progress.records + written,
                    requests: progress.requests,
                    rate_limit: progress.rate_limit.map(|r| {
                        (
                            r.remaining.min(i32::MAX as u32) as i32,
                            r.limit.min(i32::MAX as u32) as i32,
                        )
                    }),
                })?;
                Ok(written)
            })
            .inspect(|written| counters::records_written(*written))
    }

    fn finish_listing(&mut self, listing: &ListingRef, end: &ListingEnd) -> Result<(), StoreError> {
        let (company, project, parent) = Self::scope_of(listing);
        let record_company = Self::record_company(listing);
        let mut seen = self.seen.remove(&listing.id);
        self.holder.write(|user| {
            visibility::lock_scope(
                &listing.resource,
                record_company,
                listing.project_id,
                listing.parent_id,
            )?;
            // Before save_cursor moves listed_at: the end of the listing compares with the
            // previous one. Company lists are per user, so a company missing from one user's
            // list says nothing about the others: it is only no longer theirs.
            match (listing.scope, listing.company_id) {
                (Scope::User, _) => {
                    visibility::grant_listed_records(user, &listing.resource, end.listed_ids)?
                }
                (_, Some(company_id)) => {
                    seen.take().unwrap_or_default().finish(&Listing {
                        user_id: user,
                        resource: &listing.resource,
                        company_id,
                        project_id: listing.project_id,
                        window_from: end.window_from,
                        parent_id: listing.parent_id,
                        dates: end.dates,
                    })?;
                }
                _ => {}
            }
            store::save_cursor(
                user,
                &listing.resource,
                (company, project, parent),
                end.pass_started,
                end.full_pass,
                None,
            )
        })
    }

    fn fail_listing(
        &mut self,
        listing: &ListingRef,
        message: &str,
        denied: bool,
    ) -> Result<(), StoreError> {
        warning!(
            "procore_sync: user {}: {listing}: {message}",
            self.holder.user_id
        );
        let (company, project, parent) = Self::scope_of(listing);
        let seen = self.seen.remove(&listing.id);
        // A list of deleted records that failed says nothing about the scope's records.
        if listing.kind == ListingKind::Deletions {
            return Ok(());
        }
        self.holder.write(|user| {
            if let Some(seen) = seen {
                seen.discard()?;
            }
            store::save_cursor(
                user,
                &listing.resource,
                (company, project, parent),
                Utc::now(),
                false,
                Some(message),
            )?;
            // Procore no longer lets this user see the scope: neither do we.
            if denied {
                visibility::deny_scope(user, &listing.resource, company, project, parent)?;
            }
            Ok(())
        })
    }

    fn parent_ids(
        &mut self,
        parent: &ParentScope,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        step(|| {
            store::parent_ids(
                parent.resource,
                parent.company_id.unwrap_or(0),
                parent.project_id,
                parent.parent_id,
                after,
                limit,
            )
        })
    }

    fn mark_deleted(&mut self, listing: &ListingRef, ids: &[i64]) -> Result<i64, StoreError> {
        let Some(company) = Self::record_company(listing) else {
            return Ok(0);
        };
        self.holder.write(|_| {
            visibility::lock_scope(
                &listing.resource,
                Some(company),
                listing.project_id,
                listing.parent_id,
            )?;
            store::mark_listed_deleted(
                &listing.resource,
                company,
                listing.project_id,
                listing.parent_id,
                ids,
            )
        })
    }

    fn keep_only_companies(&mut self, company_ids: &[i64]) -> Result<(), StoreError> {
        self.holder
            .write(|user| visibility::revoke_other_companies(user, company_ids))
    }

    fn keep_only_projects(
        &mut self,
        company_id: i64,
        project_ids: &[i64],
    ) -> Result<(), StoreError> {
        self.holder
            .write(|user| visibility::revoke_other_projects(user, company_id, project_ids))
    }
}

/// The first half of a refresh, before any HTTP.
pub enum RefreshStart {
    /// Another process refreshed meanwhile, or the journal held a newer pair: use it.
    Use(Secret, DateTime<Utc>),
    /// Spend this refresh token; the refresh lock is held until [`end_refresh`].
    Spend(Secret),
    /// Another process is refreshing this user right now: ask again shortly.
    Busy,
}

/// Takes the user's refresh lock and decides whether a refresh is needed at all.
/// `current` is the access token the walk has been using.
pub fn begin_refresh(user_id: &str, current: &Secret) -> Result<RefreshStart, SyncFailure> {
    let journal = credentials::token_journal();
    // Session-level: an ERROR that rolls the transaction back leaves the lock held.
    let holds_lock = Cell::new(false);
    let started = in_transaction(|| -> Result<RefreshStart, SyncFailure> {
        let locked = Spi::get_one_with_args::<bool>(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[REFRESH_LOCK_CLASS.into(), user_id.into()],
        )
        .map_err(db_failure)?;
        if locked != Some(true) {
            return Ok(RefreshStart::Busy);
        }
        holds_lock.set(true);
        let decided = (|| {
            let mut stored = credentials::credentials_for_refresh(user_id)
                .map_err(db_failure)?
                .ok_or_else(|| {
                    SyncFailure::Permanent(format!(
                        "user {user_id} was disconnected during the sync"
                    ))
                })?;
            if stored.needs_reconnect {
                return Err(SyncFailure::Permanent(format!(
                    "user {user_id} must reconnect to Procore"
                )));
            }
            // A crash after a rotation left the newest pair in the journal: it wins.
            if let Some(pair) = journal.pending(user_id) {
                credentials::restore_tokens(user_id, &pair).map_err(db_failure)?;
                stored.access_token = pair.access_token;
                stored.refresh_token = pair.refresh_token;
                stored.expires_at = pair.expires_at;
            }
            if stored.access_token != *current && stored.expires_at - REFRESH_MARGIN > Utc::now() {
                return Ok(RefreshStart::Use(stored.access_token, stored.expires_at));
            }
            Ok(RefreshStart::Spend(stored.refresh_token))
        })();
        if !matches!(decided, Ok(RefreshStart::Spend(_))) {
            unlock_refresh(user_id);
            holds_lock.set(false);
        }
        decided
    });
    if holds_lock.get() && started.is_err() {
        unlock_refresh_alone(user_id);
    }
    // A journalled pair restored above is committed now.
    if matches!(started, Ok(RefreshStart::Use(..))) {
        forget_journalled(user_id);
    }
    started
}

/// The second half: commits what Procore answered, then lets go of the refresh lock. The
/// new pair is already in the journal (the HTTP thread put it there), so even a crash before
/// this commit cannot lose it.
pub fn end_refresh(
    user_id: &str,
    answer: Result<TokenPair, ProcoreError>,
    journal_error: Option<String>,
) -> Result<(Secret, DateTime<Utc>), SyncFailure> {
    if let Some(e) = journal_error {
        warning!("procore_sync: user {user_id}: could not journal the new tokens: {e}");
    }
    if answer.is_ok() {
        settings::crash_if_failpoint("crash_after_token_refresh");
    }
    counters::token_refresh(answer.is_ok());
    let committed = in_transaction(|| match answer {
        Ok(pair) => {
            credentials::save_tokens(user_id, &pair).map_err(db_failure)?;
            Ok((pair.access_token, pair.expires_at))
        }
        Err(ProcoreError::InvalidGrant(description)) => {
            let reason = format!(
                "Procore refused the refresh token (invalid_grant: {description}); the user must reconnect"
            );
            credentials::mark_needs_reconnect(user_id, &reason).map_err(db_failure)?;
            Err(SyncFailure::Permanent(reason))
        }
        Err(e) => Err(SyncFailure::from_procore(e)),
    });
    unlock_refresh_alone(user_id);
    if committed.is_ok() {
        // Committed: the journal entry has done its job.
        forget_journalled(user_id);
    }
    committed
}

fn unlock_refresh(user_id: &str) {
    let _ = Spi::get_one_with_args::<bool>(
        "SELECT pg_advisory_unlock($1, hashtext($2))",
        &[REFRESH_LOCK_CLASS.into(), user_id.into()],
    );
}

/// Unlocks in a transaction of its own, outside any other.
fn unlock_refresh_alone(user_id: &str) {
    let _ = in_transaction(|| {
        unlock_refresh(user_id);
        Ok::<_, SyncError>(())
    });
}

fn forget_journalled(user_id: &str) {
    if let Err(e) = credentials::token_journal().forget(user_id) {
        warning!("procore_sync: user {user_id}: could not clear the token journal: {e}");
    }
}

fn db_failure(e: impl std::fmt::Display) -> SyncFailure {
    SyncFailure::Retryable(format!("database: {e}"))
}
