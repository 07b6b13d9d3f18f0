//! The deletion pass: after a full listing, the records Procore no longer returned are
//! marked deleted. The ids a listing returned stay in memory while they are few; a large
//! listing spills them to a temporary table page by page, so a resource of any size costs a
//! worker the same memory (one statement over 200,000 ids in an array cost the planner
//! about 40 MB).

use pgrx::prelude::*;

use crate::errors::SyncError;

/// Past this many ids a listing spills. Statements over an array this size plan in a few MB.
const IN_MEMORY_IDS: usize = 10_000;

/// The ids one full listing returned so far.
pub struct SeenIds {
    in_memory: Vec<i64>,
    spilled: bool,
}

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
                "CREATE TEMP TABLE IF NOT EXISTS procore_sync_seen (procore_id bigint PRIMARY KEY)",
            )?;
            // Left over from a pass that failed half way.
            Spi::run("TRUNCATE pg_temp.procore_sync_seen")?;
            insert_spilled(&std::mem::take(&mut self.in_memory))?;
            self.spilled = true;
        }
        insert_spilled(page)
    }

    /// Marks the scope's records that the listing did not return as deleted; returns how
    /// many it marked.
    pub fn mark_unseen_deleted(
        self,
        resource: &str,
        company_id: i64,
        project_id: Option<i64>,
    ) -> Result<i64, SyncError> {
        if !self.spilled {
            let marked = Spi::get_one_with_args::<i64>(
                "WITH gone AS (
                    UPDATE procore_records SET deleted_at = now()
                    WHERE resource = $1 AND company_id = $2
                      AND project_id IS NOT DISTINCT FROM $3
                      AND deleted_at IS NULL
                      AND NOT (procore_id = ANY ($4::bigint[]))
                    RETURNING 1)
                 SELECT count(*) FROM gone",
                &[
                    resource.into(),
                    company_id.into(),
                    project_id.into(),
                    self.in_memory.into(),
                ],
            )?;
            return Ok(marked.unwrap_or(0));
        }
        // Without statistics the planner would guess the temporary table's size.
        Spi::run("ANALYZE pg_temp.procore_sync_seen")?;
        let scope = [resource.into(), company_id.into(), project_id.into()];
        let marked = Spi::get_one_with_args::<i64>(
            "WITH gone AS (
                UPDATE procore_records r SET deleted_at = now()
                WHERE resource = $1 AND company_id = $2
                  AND project_id IS NOT DISTINCT FROM $3
                  AND deleted_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM pg_temp.procore_sync_seen s
                                  WHERE s.procore_id = r.procore_id)
                RETURNING 1)
             SELECT count(*) FROM gone",
            &scope,
        )?;
        Spi::run("TRUNCATE pg_temp.procore_sync_seen")?;
        Ok(marked.unwrap_or(0))
    }
}

fn insert_spilled(ids: &[i64]) -> Result<(), SyncError> {
    // A page fetched again after a retry repeats ids.
    Spi::run_with_args(
        "INSERT INTO pg_temp.procore_sync_seen
         SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING",
        &[ids.to_vec().into()],
    )?;
    Ok(())
}

/// Temporary tables use at most this much of the worker's own memory; the rest of a spilled
/// listing lives in the operating system's file cache.
pub fn limit_temp_buffers() -> Result<(), SyncError> {
    Spi::run("SELECT pg_catalog.set_config('temp_buffers', '1MB', false)")?;
    Ok(())
}
