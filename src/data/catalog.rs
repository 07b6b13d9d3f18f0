//! The resource catalog: which Procore endpoints a sync walks, read from
//! `procore_sync_resource` so that adding an endpoint is an INSERT, not a release.

use pgrx::prelude::*;

use crate::errors::SyncError;

pub use procore_sync_core::catalog::{DateFilter, Resource, Scope};

/// The resources a sync walks; `companies` and `projects` always, because every other
/// resource is reached through them.
pub fn enabled_resources() -> Result<Vec<Resource>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT name, path_template, scope, supports_updated_at_filter, paginated, per_page,
                    parent_resource, parent_placeholder, date_filter, history_on_first_sync,
                    recycle_bin_path, include_deleted, records_key
             FROM procore_sync_resource
             WHERE enabled OR name IN ('companies', 'projects')
             ORDER BY name <> 'companies', name <> 'projects', name",
            None,
            &[],
        )?;
        let mut resources = Vec::new();
        for row in rows {
            let scope = match row.get::<String>(3)?.as_deref() {
                Some("user") => Scope::User,
                Some("company") => Scope::Company,
                _ => Scope::Project,
            };
            resources.push(Resource {
                name: row.get(1)?.unwrap_or_default(),
                path_template: row.get(2)?.unwrap_or_default(),
                scope,
                supports_updated_at_filter: row.get(4)?.unwrap_or(false),
                paginated: row.get(5)?.unwrap_or(true),
                per_page: row.get::<i32>(6)?.unwrap_or(100).clamp(1, 10_000) as u32,
                parent_resource: row.get(7)?,
                parent_placeholder: row.get(8)?,
                date_filter: match row.get::<String>(9)?.as_deref() {
                    Some("log_date") => Some(DateFilter::LogDate),
                    Some("date_range") => Some(DateFilter::DateRange),
                    _ => None,
                },
                history_on_first_sync: row.get(10)?.unwrap_or(false),
                recycle_bin_path: row.get(11)?,
                include_deleted: row.get(12)?.unwrap_or(false),
                records_key: row.get(13)?,
            });
        }
        Ok(resources)
    })
}

/// Whether the catalog syncs this resource now.
pub fn is_enabled(name: &str) -> Result<bool, SyncError> {
    Ok(enabled_resources()?.iter().any(|r| r.name == name))
}
