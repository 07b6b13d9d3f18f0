//! `docs/SCHEMA.md` describes the extension as it is: regenerated from a fresh
//! `CREATE EXTENSION`, it must be the committed file byte for byte.

use procore_sync_e2e::schema_doc::{
    first_differences, generate_from_fresh_cluster, schema_doc_path,
};

#[test]
fn schema_md_matches_a_fresh_install() {
    let generated = generate_from_fresh_cluster().expect("generate the schema reference");
    let path = schema_doc_path();
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}): run `make schema-doc`",
            path.display()
        )
    });
    assert!(
        committed == generated,
        "{} is stale: run `make schema-doc` and commit the result. First differences \
         (- committed, + generated):\n{}",
        path.display(),
        first_differences(&committed, &generated, 20)
    );
    // What the reference is for: every resource view with its key, and the status views.
    for needle in [
        "### `procore_rfis`",
        "### `procore_drawings`",
        "### `procore_manpower_logs`",
        "### `procore_sync_user_status`",
        "`procore_records` `('drawings', company_id, procore_id)`",
        "| `log_date` | date |",
    ] {
        assert!(generated.contains(needle), "SCHEMA.md lacks {needle:?}");
    }
}
