//! SQL texts the extension runs and the benchmark runs too: the bench's database ceiling
//! writes with exactly the statement a sync writes with, so the two cannot drift apart.

/// Upserts one page of records and returns how many rows were inserted or changed. A record
/// whose JSON is unchanged is not rewritten, so a second sync of the same data changes
/// nothing. `$1` resource, `$2` company (NULL: each record is its own company, as companies
/// are), `$3` project, `$4`..`$8` the records' ids, names, statuses, `updated_at` (RFC 3339
/// text) and JSON, as arrays; `$9` the parent record of a child resource's listing.
pub const UPSERT_PAGE: &str = "WITH up AS (
    INSERT INTO procore_records AS r
        (resource, company_id, procore_id, project_id, name, status, updated_at, data, parent_id)
    SELECT $1, coalesce($2, t.id), t.id, $3, t.name, t.status, t.updated_at::timestamptz, t.data,
           $9::bigint
    FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[], $8::jsonb[])
         AS t(id, name, status, updated_at, data)
    ON CONFLICT (resource, company_id, procore_id) DO UPDATE
    SET project_id = EXCLUDED.project_id, parent_id = EXCLUDED.parent_id,
        name = EXCLUDED.name, status = EXCLUDED.status,
        updated_at = EXCLUDED.updated_at, data = EXCLUDED.data, synced_at = now(),
        deleted_at = NULL, orphaned_at = NULL,
        -- back from the dead: nobody's earlier listing vouches for who may see it
        first_synced_at = CASE WHEN r.deleted_at IS NOT NULL THEN clock_timestamp()
                               ELSE r.first_synced_at END
    WHERE r.data IS DISTINCT FROM EXCLUDED.data
       OR r.deleted_at IS NOT NULL
       OR r.orphaned_at IS NOT NULL
       OR r.project_id IS DISTINCT FROM EXCLUDED.project_id
       OR r.parent_id IS DISTINCT FROM EXCLUDED.parent_id
    RETURNING 1)
 SELECT count(*) FROM up";
