-- Per-user visibility: may this app user see this record? True when one of the user's own
-- listings covers the record's scope (a grant in procore_sync_cursor), ran after the record
-- was first stored, and did not leave it out (procore_sync_hidden). For row-level security:
--   CREATE POLICY ... ON procore_records FOR SELECT TO app
--       USING (procore_sync_visible(auth.uid(), resource, company_id, procore_id));
-- It runs as the extension owner so that the app role needs no access to the grants and
-- exceptions, and answers only about the one record it is asked about.
CREATE FUNCTION procore_sync_visible(user_id uuid, resource text, company_id bigint, procore_id bigint)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM procore_records r
        JOIN procore_sync_cursor c
          ON c.user_id = $1 AND c.resource = r.resource AND c.company_id = r.company_id
         AND c.project_id = coalesce(r.project_id, 0) AND c.parent_id = coalesce(r.parent_id, 0)
        WHERE r.resource = $2 AND r.company_id = $3 AND r.procore_id = $4
          AND c.listed_at >= r.first_synced_at
          AND NOT EXISTS (
              SELECT 1 FROM procore_sync_hidden h
              WHERE h.resource = $2 AND h.company_id = $3 AND h.procore_id = $4
                AND $1 = ANY (h.user_ids)))
$$;
REVOKE EXECUTE ON FUNCTION procore_sync_visible(uuid, text, bigint, bigint) FROM PUBLIC;

-- The same answer as sets, for policies over many rows. A per-row function call costs a
-- query of its own (tens of microseconds); these are each evaluated once per query, and
-- the policy probes them as hashed sets (see the README for the policy).
-- The scopes the user holds a grant to.
CREATE FUNCTION procore_sync_visible_scopes(for_user uuid)
RETURNS TABLE (resource text, company_id bigint, project_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT c.resource, c.company_id, c.project_id FROM procore_sync_cursor c
    WHERE c.user_id = $1 AND c.listed_at IS NOT NULL
$$;
-- The records of those scopes the user may not see: their exceptions, records stored
-- after the user's last listing of their scope, and the children of every parent whose
-- listing the user holds no grant to: a child resource's scope above is granted by any one
-- of its parents', so a parent the user never listed (another user's private RFI) or was
-- refused must hide its children here.
-- The exceptions are found through their GIN index: a sequential scan, which the planner
-- picks for a table of few rows, would unpack every row's array of user ids.
CREATE FUNCTION procore_sync_invisible_records(for_user uuid)
RETURNS TABLE (resource text, company_id bigint, procore_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
SET enable_seqscan = off
AS $$
    SELECT h.resource, h.company_id, h.procore_id FROM procore_sync_hidden h
    WHERE h.user_ids @> ARRAY[$1]
    UNION ALL
    SELECT r.resource, r.company_id, r.procore_id
    FROM procore_records r
    JOIN procore_sync_cursor c
      ON c.user_id = $1 AND c.resource = r.resource AND c.company_id = r.company_id
     AND c.project_id = coalesce(r.project_id, 0) AND c.parent_id = coalesce(r.parent_id, 0)
    WHERE r.first_synced_at > (SELECT min(m.listed_at) FROM procore_sync_cursor m WHERE m.user_id = $1)
      AND r.first_synced_at > c.listed_at
    UNION ALL
    SELECT r.resource, r.company_id, r.procore_id
    FROM (SELECT DISTINCT g.resource, g.company_id, g.project_id FROM procore_sync_cursor g
          WHERE g.user_id = $1 AND g.parent_id <> 0 AND g.listed_at IS NOT NULL) s
    JOIN procore_records r ON r.resource = s.resource AND r.company_id = s.company_id
     AND coalesce(r.project_id, 0) = s.project_id
    WHERE r.parent_id IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM procore_sync_cursor c
          WHERE c.user_id = $1 AND c.resource = r.resource AND c.company_id = r.company_id
            AND c.project_id = s.project_id AND c.parent_id = r.parent_id
            AND c.listed_at IS NOT NULL)
$$;
REVOKE EXECUTE ON FUNCTION procore_sync_visible_scopes(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_invisible_records(uuid) FROM PUBLIC;
