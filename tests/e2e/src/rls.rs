//! An app's side of per-user visibility, as the README documents it: `auth.uid()` as
//! Supabase defines it (the signed-in user from the request's claims), an app role with
//! SELECT on the records and typed views, and the two row-level-security policies. Shared
//! by the visibility tests and `bench_visibility`.

/// `auth.uid()`, the role `app_user`, its grants, and RLS turned on (no policy yet).
pub const APP_ROLE_SETUP: &str = "
    CREATE SCHEMA auth;
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
        $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
    CREATE ROLE app_user LOGIN;
    GRANT USAGE ON SCHEMA auth TO app_user;
    GRANT SELECT ON procore_records, procore_companies, procore_projects, procore_vendors,
        procore_project_users, procore_rfis, procore_submittals, procore_punch_items,
        procore_observations, procore_change_events TO app_user;
    GRANT EXECUTE ON FUNCTION procore_sync_visible(uuid, text, bigint, bigint),
        procore_sync_visible_scopes(uuid), procore_sync_invisible_records(uuid) TO app_user;
    ALTER TABLE procore_records ENABLE ROW LEVEL SECURITY;";

/// The policy that calls `procore_sync_visible` once per row.
pub const POLICY_PER_ROW: &str =
    "CREATE POLICY procore_records_visible ON procore_records FOR SELECT TO app_user
     USING (procore_sync_visible(auth.uid(), resource, company_id, procore_id))";

/// The same answer as two sets, each computed once per query and probed as a hash table.
pub const POLICY_SETS: &str =
    "CREATE POLICY procore_records_visible ON procore_records FOR SELECT TO app_user
     USING ((resource, company_id, coalesce(project_id, 0)) IN
                (SELECT s.resource, s.company_id, s.project_id
                 FROM procore_sync_visible_scopes(auth.uid()) s)
            AND (resource, company_id, procore_id) NOT IN
                (SELECT i.resource, i.company_id, i.procore_id
                 FROM procore_sync_invisible_records(auth.uid()) i))";

/// The signed-in user of a session, as `auth.uid()` reads it.
pub const SET_SIGNED_IN_USER: &str = "SELECT set_config('request.jwt.claim.sub', $1, false)";
