//! What one user's finished listing means: which records that user may see, and which
//! records are gone for everyone (SPEC §8, per-user visibility).
//!
//! A user's grant to a scope (resource × company × project) is their cursor row with
//! `listed_at` set: their own listing of the scope succeeded then. The exceptions are in
//! `procore_sync_hidden`, one row per record with the users whose listing left it out
//! (private items, records of projects they cannot see). A record is marked deleted only when a full listing
//! leaves it out and nobody else who can see the scope still sees it.
//!
//! The ids a listing returned stay in memory while they are few; a large listing spills them
//! to a temporary table page by page, so a resource of any size costs a worker the same
//! memory (one statement over 200,000 ids in an array cost the planner about 40 MB). A worker
//! reads many listings at once, so spilled ids carry their listing's key.

use pgrx::prelude::*;

use super::timestamps;
use crate::data::plans;
use crate::errors::SyncError;
use crate::settings::Orphans;

/// Past this many ids a listing spills. Statements over an array this size plan in a few MB.
const IN_MEMORY_IDS: usize = 10_000;

/// The ids one listing returned so far.
pub struct SeenIds {
    in_memory: Vec<i64>,
    spilled: bool,
    /// Unique in this process, so listings read side by side never mix their spilled ids.
    key: i64,
}

static NEXT_KEY: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);

impl Default for SeenIds {
    fn default() -> Self {
        Self::new()
    }
}

impl SeenIds {
    pub fn new() -> Self {
        SeenIds {
            in_memory: Vec::new(),
            spilled: false,
            key: NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Adds one page's ids; runs SQL once the listing spills, so call it in the page's
    /// transaction.
    pub fn add(&mut self, page: &[i64]) -> Result<(), SyncError> {
        if !self.spilled && self.in_memory.len() + page.len() <= IN_MEMORY_IDS {
            self.in_memory.extend_from_slice(page);
            return Ok(());
        }
        if !self.spilled {
            Spi::run(
                "CREATE TEMP TABLE IF NOT EXISTS procore_sync_seen
                     (listing bigint, procore_id bigint, PRIMARY KEY (listing, procore_id))",
            )?;
            let kept = std::mem::take(&mut self.in_memory);
            self.insert_spilled(&kept)?;
            self.spilled = true;
        }
        self.insert_spilled(page)
    }

    /// Drops what a listing that will not finish spilled. Call it in a transaction.
    pub fn discard(self) -> Result<(), SyncError> {
        if self.spilled {
            self.forget_spilled()?;
        }
        Ok(())
    }

    fn forget_spilled(&self) -> Result<(), SyncError> {
        Spi::run_with_args(
            "DELETE FROM pg_temp.procore_sync_seen WHERE listing = $1",
            &[self.key.into()],
        )?;
        Ok(())
    }

    fn insert_spilled(&self, ids: &[i64]) -> Result<(), SyncError> {
        // A page fetched again after a retry repeats ids.
        Spi::run_with_args(
            "INSERT INTO pg_temp.procore_sync_seen
             SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING",
            &[self.key.into(), ids.to_vec().into()],
        )?;
        Ok(())
    }

    /// Records what a finished listing of a company or project scope means: the records it
    /// left out are hidden from this user (on an incremental listing, only those that
    /// changed in its window or arrived since the user's last listing, since nothing else
    /// can be expected in it), the ones it returned are shown again, and on a full listing
    /// the records nobody else who can see the scope still sees are marked deleted. Call it
    /// after `lock_scope`, before the cursor's `listed_at` moves.
    pub fn finish(mut self, listing: &Listing) -> Result<ListingEnd, SyncError> {
        let sql = if self.spilled {
            // Without statistics the planner would guess the temporary table's size.
            Spi::run("ANALYZE pg_temp.procore_sync_seen")?;
            FINISH_SPILLED
        } else {
            FINISH_IN_MEMORY
        };
        let window_from = listing.window_from.map(timestamps::to_sql);
        let ids = if self.spilled {
            self.key.into()
        } else {
            std::mem::take(&mut self.in_memory).into()
        };
        let (deleted, hidden) = plans::get_two_kept::<i64, i64>(
            sql,
            &[
                listing.user_id.into(),
                listing.resource.into(),
                listing.company_id.into(),
                listing.project_id.into(),
                listing.window_from.is_none().into(),
                window_from.into(),
                ids,
                listing.parent_id.into(),
                listing.dates.map(|(from, _)| from.to_string()).into(),
                listing.dates.map(|(_, to)| to.to_string()).into(),
            ],
        )?;
        if self.spilled {
            self.forget_spilled()?;
        }
        forget_emptied_exceptions(listing.resource, listing.company_id)?;
        Ok(ListingEnd {
            deleted: deleted.unwrap_or(0),
            hidden: hidden.unwrap_or(0),
        })
    }
}

/// Exceptions of one resource in one company that nobody holds any more: the last user a
/// record was hidden from got it in a listing.
fn forget_emptied_exceptions(resource: &str, company_id: i64) -> Result<(), SyncError> {
    plans::run_kept(
        "DELETE FROM procore_sync_hidden
         WHERE resource = $1 AND company_id = $2 AND user_ids = '{}'",
        &[resource.into(), company_id.into()],
        |_| Ok(()),
    )?;
    Ok(())
}

/// A finished listing of one scope by one user.
pub struct Listing<'a> {
    pub user_id: &'a str,
    pub resource: &'a str,
    pub company_id: i64,
    pub project_id: Option<i64>,
    /// Where an incremental listing's `filters[updated_at]` window started; None when the
    /// listing was full.
    pub window_from: Option<chrono::DateTime<chrono::Utc>>,
    /// A child resource's listing: the parent record whose children it listed.
    pub parent_id: Option<i64>,
    /// A dated listing's days: it was full for those days (by the record's `date`) only.
    pub dates: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ListingEnd {
    /// Records marked deleted for everyone.
    pub deleted: i64,
    /// Records newly hidden from this user.
    pub hidden: i64,
}

/// The statement behind `finish`, over the listing's ids as `$7` or as the spilled table's
/// rows whose listing is `$7`.
/// `$1` user, `$2` resource, `$3` company, `$4` project (NULL for a company scope), `$5`
/// whether the listing was full, `$6` its window's start, `$8` the parent record of a
/// child resource's listing, `$9`..`$10` a dated listing's days. An incremental
/// listing considers only the records it could have returned: changed in its window, or
/// stored since the user's previous listing. The project test is written so that a known
/// project uses the (resource, project_id) index.
macro_rules! finish_listing_sql {
    ($left_out:literal, $returned:literal) => {
        concat!(
            "WITH prev AS (
                SELECT listed_at FROM procore_sync_cursor
                WHERE user_id = $1::uuid AND resource = $2 AND company_id = $3
                  AND project_id = coalesce($4, 0) AND parent_id = coalesce($8, 0)),
            unseen AS (
                SELECT r.procore_id, r.updated_at, r.first_synced_at FROM procore_records r
                WHERE r.resource = $2 AND r.company_id = $3
                  AND (r.project_id = $4 OR ($4 IS NULL AND r.project_id IS NULL))
                  AND (r.parent_id = $8 OR ($8 IS NULL AND r.parent_id IS NULL))
                  AND ($9::text IS NULL OR (r.data->>'date') BETWEEN $9::text AND $10::text)
                  AND r.deleted_at IS NULL
                  AND ($5 OR r.updated_at >= $6::timestamptz
                       OR r.first_synced_at > coalesce((SELECT listed_at FROM prev), '-infinity'))
                  AND ",
            $left_out,
            "),
            gone AS (
                UPDATE procore_records r SET deleted_at = now()
                FROM unseen u
                WHERE $5 AND r.resource = $2 AND r.company_id = $3 AND r.procore_id = u.procore_id
                  AND NOT EXISTS (
                      SELECT 1 FROM procore_sync_cursor c
                      WHERE c.resource = $2 AND c.company_id = $3 AND c.project_id = coalesce($4, 0)
                        AND c.parent_id = coalesce($8, 0) AND c.user_id <> $1::uuid AND c.listed_at >= u.first_synced_at
                        AND NOT EXISTS (
                            SELECT 1 FROM procore_sync_hidden h
                            WHERE h.resource = $2 AND h.company_id = $3
                              AND h.procore_id = u.procore_id AND c.user_id = ANY (h.user_ids)))
                RETURNING r.procore_id),
            forgotten AS (
                DELETE FROM procore_sync_hidden h USING gone g
                WHERE h.resource = $2 AND h.company_id = $3 AND h.procore_id = g.procore_id),
            hidden AS (
                INSERT INTO procore_sync_hidden AS h (resource, company_id, procore_id, user_ids)
                SELECT $2, $3, u.procore_id, ARRAY[$1::uuid] FROM unseen u
                WHERE NOT EXISTS (SELECT 1 FROM gone g WHERE g.procore_id = u.procore_id)
                ON CONFLICT (resource, company_id, procore_id)
                DO UPDATE SET user_ids = h.user_ids || $1::uuid
                WHERE NOT ($1::uuid = ANY (h.user_ids))
                RETURNING 1),
            shown AS (
                UPDATE procore_sync_hidden h SET user_ids = array_remove(h.user_ids, $1::uuid)
                WHERE h.resource = $2 AND h.company_id = $3 AND $1::uuid = ANY (h.user_ids) AND ",
            $returned,
            ")
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM hidden)"
        )
    };
}

const FINISH_IN_MEMORY: &str = finish_listing_sql!(
    "NOT (r.procore_id = ANY ($7::bigint[]))",
    "h.procore_id = ANY ($7::bigint[])"
);
const FINISH_SPILLED: &str = finish_listing_sql!(
    "NOT EXISTS (SELECT 1 FROM pg_temp.procore_sync_seen s
                 WHERE s.listing = $7::bigint AND s.procore_id = r.procore_id)",
    "h.procore_id IN (SELECT s.procore_id FROM pg_temp.procore_sync_seen s WHERE s.listing = $7::bigint)"
);

/// Serialises, per scope, the writes of a page and the end of a listing: a record another
/// user's sync stores is then either seen by the listing's end (and hidden if left out) or
/// stored after it, with a `first_synced_at` past the listing, and so not visible yet.
pub fn lock_scope(
    resource: &str,
    company_id: Option<i64>,
    project_id: Option<i64>,
    parent_id: Option<i64>,
) -> Result<(), SyncError> {
    plans::run_kept(
        "SELECT pg_advisory_xact_lock($1, hashtext($2 || ':' || coalesce($3::text, '') || ':'
                                                    || coalesce($4::text, '') || ':'
                                                    || coalesce($5::text, '')))",
        &[
            SCOPE_LOCK_CLASS.into(),
            resource.into(),
            company_id.into(),
            project_id.into(),
            parent_id.into(),
        ],
        |_| Ok(()),
    )?;
    Ok(())
}

/// Advisory lock class of `lock_scope` ("PSSC").
const SCOPE_LOCK_CLASS: i32 = 0x5053_5343;

/// A user-level listing (companies) grants the user exactly the records it returned, one
/// grant per record (each is its own company), and takes back the others.
pub fn grant_listed_records(user_id: &str, resource: &str, ids: &[i64]) -> Result<(), SyncError> {
    Spi::run_with_args(
        "WITH revoked AS (
            DELETE FROM procore_sync_cursor
            WHERE user_id = $1::uuid AND resource = $2 AND company_id <> 0
              AND NOT (company_id = ANY ($3::bigint[])))
         INSERT INTO procore_sync_cursor AS c (user_id, resource, company_id, project_id, listed_at)
         SELECT DISTINCT $1::uuid, $2, id, 0, clock_timestamp() FROM unnest($3::bigint[]) id
         ON CONFLICT (user_id, resource, company_id, project_id, parent_id)
         DO UPDATE SET listed_at = EXCLUDED.listed_at",
        &[user_id.into(), resource.into(), ids.to_vec().into()],
    )?;
    Ok(())
}

/// The user's companies listing no longer returns these companies: every grant the user
/// held in them goes.
pub fn revoke_other_companies(user_id: &str, company_ids: &[i64]) -> Result<(), SyncError> {
    Spi::run_with_args(
        "DELETE FROM procore_sync_cursor c
         WHERE c.user_id = $1::uuid AND c.company_id <> 0
           AND NOT (c.company_id = ANY ($2::bigint[]))
           AND c.resource IN (SELECT name FROM procore_sync_resource WHERE scope <> 'user')",
        &[user_id.into(), company_ids.to_vec().into()],
    )?;
    Ok(())
}

/// The user's projects listing of a company no longer returns these projects: the grants
/// to their tools go.
pub fn revoke_other_projects(
    user_id: &str,
    company_id: i64,
    project_ids: &[i64],
) -> Result<(), SyncError> {
    Spi::run_with_args(
        "DELETE FROM procore_sync_cursor
         WHERE user_id = $1::uuid AND company_id = $2 AND project_id <> 0
           AND NOT (project_id = ANY ($3::bigint[]))",
        &[
            user_id.into(),
            company_id.into(),
            project_ids.to_vec().into(),
        ],
    )?;
    Ok(())
}

/// Procore refused the user this scope (403, 404): they see none of its records until a
/// listing succeeds again.
pub fn deny_scope(
    user_id: &str,
    resource: &str,
    company_id: i64,
    project_id: i64,
    parent_id: i64,
) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_cursor SET listed_at = NULL
         WHERE user_id = $1::uuid AND resource = $2 AND company_id = $3 AND project_id = $4
           AND parent_id = $5",
        &[
            user_id.into(),
            resource.into(),
            company_id.into(),
            project_id.into(),
            parent_id.into(),
        ],
    )?;
    Ok(())
}

/// A disconnected user sees nothing: their grants and exceptions go. Records of the scopes
/// only they could see become orphans. Returns how many records were orphaned.
pub fn forget_user(user_id: &str, orphans: Orphans) -> Result<i64, SyncError> {
    let sql = match orphans {
        Orphans::Keep => FORGET_USER_KEEP_ORPHANS,
        Orphans::Delete => FORGET_USER_DELETE_ORPHANS,
    };
    let orphaned = Spi::get_one_with_args::<i64>(sql, &[user_id.into()])?.unwrap_or(0);
    // A disconnect is rare: one pass over the exceptions is fine.
    Spi::run("DELETE FROM procore_sync_hidden WHERE user_ids = '{}'")?;
    Ok(orphaned)
}

/// The statement behind `forget_user`: `$change` is done to the orphaned records,
/// `$join` names how the orphaned scopes are joined to them.
macro_rules! forget_user_sql {
    ($change:literal, $join:literal) => {
        concat!(
            "WITH revoked AS (
                DELETE FROM procore_sync_cursor WHERE user_id = $1::uuid
                RETURNING resource, company_id, project_id, parent_id, listed_at),
            unhidden AS (
                UPDATE procore_sync_hidden SET user_ids = array_remove(user_ids, $1::uuid)
                WHERE user_ids @> ARRAY[$1::uuid]),
            orphaned_scope AS (
                SELECT DISTINCT g.resource, g.company_id, g.project_id, g.parent_id FROM revoked g
                WHERE g.listed_at IS NOT NULL AND g.company_id <> 0
                  AND NOT EXISTS (
                      SELECT 1 FROM procore_sync_cursor c
                      WHERE c.resource = g.resource AND c.company_id = g.company_id
                        AND c.project_id = g.project_id AND c.parent_id = g.parent_id
                        AND c.user_id <> $1::uuid
                        AND c.listed_at IS NOT NULL)),
            orphaned AS (",
            $change,
            " ",
            $join,
            " orphaned_scope o
                WHERE r.resource = o.resource AND r.company_id = o.company_id
                  AND coalesce(r.project_id, 0) = o.project_id
                  AND coalesce(r.parent_id, 0) = o.parent_id
                RETURNING 1)
            SELECT count(*) FROM orphaned"
        )
    };
}

const FORGET_USER_KEEP_ORPHANS: &str = forget_user_sql!(
    "UPDATE procore_records r SET orphaned_at = coalesce(r.orphaned_at, now())",
    "FROM"
);
const FORGET_USER_DELETE_ORPHANS: &str = forget_user_sql!("DELETE FROM procore_records r", "USING");

/// Temporary tables use at most this much of the worker's own memory; the rest of a spilled
/// listing lives in the operating system's file cache.
pub fn limit_temp_buffers() -> Result<(), SyncError> {
    Spi::run("SELECT pg_catalog.set_config('temp_buffers', '1MB', false)")?;
    Ok(())
}
