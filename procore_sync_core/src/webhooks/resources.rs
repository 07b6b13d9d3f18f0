//! Procore's webhook resource names against the catalog's resource names, in one table.
//!
//! Procore names webhook resources in words ("RFIs", "Punch Items") and publishes the list
//! per scope (`GET /rest/v1.0/webhooks/resources`); the catalog names endpoints in
//! snake_case (`rfis`, `punch_items`). The names and event types below are those Procore's
//! webhook resource list gives for a company (sandbox, 2026-02); PROCORE_API.md does not
//! name them, so they are an assumption to confirm against a live account.

use super::event::EventKind;

use EventKind::{Create, Delete, Update};

/// One catalog resource Procore announces by webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookResource {
    /// `procore_sync_resource.name`.
    pub catalog_name: &'static str,
    /// The name triggers are created with, spelt as Procore spells it.
    pub trigger_name: &'static str,
    /// Other spellings accepted in payloads only (older docs, other payload versions).
    pub aliases: &'static [&'static str],
    /// The event types Procore emits for it: a trigger for any other is refused.
    pub events: &'static [EventKind],
}

/// Procore's own names for the catalog's resources. Left out on purpose:
/// - `companies`: no webhook resource; a hook already belongs to one company.
/// - `project_users`: Procore's "Project Users" events are not documented to carry the user
///   id that `/projects/{project_id}/users` lists records by, and a wrong id would fetch or
///   mark deleted the wrong record; the periodic sync keeps covering it.
pub const WEBHOOK_RESOURCES: &[WebhookResource] = &[
    // Projects are deactivated, never deleted, and Procore sends no delete for them.
    WebhookResource {
        catalog_name: "projects",
        trigger_name: "Projects",
        aliases: &[],
        events: &[Create, Update],
    },
    // The catalog's `vendors` is the company directory; "Project Vendors" are memberships.
    WebhookResource {
        catalog_name: "vendors",
        trigger_name: "Company Vendors",
        aliases: &["Vendors"],
        events: &[Create, Update],
    },
    WebhookResource {
        catalog_name: "rfis",
        trigger_name: "RFIs",
        aliases: &[],
        events: &[Create, Update, Delete],
    },
    WebhookResource {
        catalog_name: "submittals",
        trigger_name: "Submittals",
        aliases: &[],
        events: &[Create, Update, Delete],
    },
    WebhookResource {
        catalog_name: "punch_items",
        trigger_name: "Punch Items",
        aliases: &["Punch List Items"],
        events: &[Create, Update, Delete],
    },
    WebhookResource {
        catalog_name: "observations",
        trigger_name: "Observation Items",
        aliases: &["Observations"],
        events: &[Create, Update, Delete],
    },
    WebhookResource {
        catalog_name: "change_events",
        trigger_name: "Change Events",
        aliases: &[],
        events: &[Create, Update, Delete],
    },
];

/// The catalog resource a webhook's `resource_name` is about, if the catalog has it.
///
/// Case, surrounding space and the separator (space, `_`, `-`, repeated) do not matter:
/// "Punch Items", "punch items" and "PUNCH_ITEMS" are one name.
pub fn catalog_resource_for(webhook_resource_name: &str) -> Option<&'static str> {
    WEBHOOK_RESOURCES
        .iter()
        .find(|resource| {
            std::iter::once(&resource.trigger_name)
                .chain(resource.aliases)
                .any(|name| same_name(name, webhook_resource_name))
        })
        .map(|resource| resource.catalog_name)
}

/// The `(resource_name, event_type)` triggers a hook needs for these enabled catalog
/// resources, in table order, each once. Names without a webhook are skipped.
pub fn triggers_for<'a>(
    enabled_catalog_names: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'static str, EventKind)> {
    let enabled: Vec<&str> = enabled_catalog_names.into_iter().collect();
    WEBHOOK_RESOURCES
        .iter()
        .filter(|resource| {
            enabled
                .iter()
                .any(|name| name.trim() == resource.catalog_name)
        })
        .flat_map(|resource| {
            resource
                .events
                .iter()
                .map(move |kind| (resource.trigger_name, *kind))
        })
        .collect()
}

/// The detail path of one record from its resource's catalog path template, placeholders
/// filled: `/rest/v1.0/projects/{project_id}/rfis` gives `/rest/v1.0/projects/5/rfis/42`,
/// `/rest/v1.1/punch_items?project_id={project_id}` gives
/// `/rest/v1.1/punch_items/42?project_id=5`.
///
/// Every shipped catalog resource follows Procore's REST layout of `{list}/{id}` for the show
/// endpoint, keeping the list's query; a catalog row that does not would fetch a 404, which
/// the caller must then not read as a deletion without the event saying so.
pub fn record_path(
    list_path_template: &str,
    company_id: Option<i64>,
    project_id: Option<i64>,
    resource_id: i64,
) -> Result<String, String> {
    let list = crate::procore::pagination::expand_path(list_path_template, company_id, project_id)?;
    let (path, query) = match list.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (list.as_str(), None),
    };
    let mut out = format!("{}/{resource_id}", path.trim_end_matches('/'));
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

fn same_name(a: &str, b: &str) -> bool {
    words(a).eq(words(b))
}

fn words(name: &str) -> impl Iterator<Item = String> + '_ {
    name.split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procore_names_map_to_catalog_names() {
        for (sent, expected) in [
            ("RFIs", Some("rfis")),
            ("rfis", Some("rfis")),
            ("Submittals", Some("submittals")),
            ("Punch Items", Some("punch_items")),
            ("Punch List Items", Some("punch_items")),
            ("punch_items", Some("punch_items")),
            ("  PUNCH   items ", Some("punch_items")),
            ("Observation Items", Some("observations")),
            ("Observations", Some("observations")),
            ("Projects", Some("projects")),
            ("Company Vendors", Some("vendors")),
            ("Change Events", Some("change_events")),
            ("Change Event Line Items", None),
            ("Project Users", None),
            ("Daily Logs", None),
            ("Punch", None),
            ("", None),
        ] {
            assert_eq!(catalog_resource_for(sent), expected, "{sent:?}");
        }
    }

    #[test]
    fn the_table_is_consistent() {
        let mut seen: Vec<String> = Vec::new();
        for resource in WEBHOOK_RESOURCES {
            assert_eq!(
                catalog_resource_for(resource.trigger_name),
                Some(resource.catalog_name)
            );
            for name in std::iter::once(&resource.trigger_name).chain(resource.aliases) {
                let key: Vec<String> = words(name).collect();
                let key = key.join(" ");
                assert!(!seen.contains(&key), "{name} appears twice");
                seen.push(key);
            }
            assert!(!resource.events.is_empty());
        }
    }

    #[test]
    fn triggers_for_enabled_resources_only() {
        let triggers = triggers_for(["rfis", "projects", "companies", "project_users", "nope"]);
        assert_eq!(
            triggers,
            vec![
                ("Projects", EventKind::Create),
                ("Projects", EventKind::Update),
                ("RFIs", EventKind::Create),
                ("RFIs", EventKind::Update),
                ("RFIs", EventKind::Delete),
            ]
        );
        assert!(triggers_for([]).is_empty());
        let all: Vec<&str> = WEBHOOK_RESOURCES.iter().map(|r| r.catalog_name).collect();
        assert_eq!(triggers_for(all).len(), 2 + 2 + 3 * 5);
    }

    #[test]
    fn record_paths_from_the_shipped_catalog() {
        for (template, company, project, expected) in [
            (
                "/rest/v1.0/projects/{project_id}/rfis",
                None,
                Some(5),
                "/rest/v1.0/projects/5/rfis/42",
            ),
            (
                "/rest/v1.1/projects/{project_id}/submittals",
                None,
                Some(5),
                "/rest/v1.1/projects/5/submittals/42",
            ),
            (
                "/rest/v1.1/punch_items?project_id={project_id}",
                None,
                Some(5),
                "/rest/v1.1/punch_items/42?project_id=5",
            ),
            (
                "/rest/v1.0/observations/items?project_id={project_id}",
                None,
                Some(5),
                "/rest/v1.0/observations/items/42?project_id=5",
            ),
            (
                "/rest/v1.0/change_events?project_id={project_id}",
                None,
                Some(5),
                "/rest/v1.0/change_events/42?project_id=5",
            ),
            (
                "/rest/v1.0/projects?company_id={company_id}",
                Some(7),
                None,
                "/rest/v1.0/projects/42?company_id=7",
            ),
            (
                "/rest/v1.0/vendors?company_id={company_id}",
                Some(7),
                None,
                "/rest/v1.0/vendors/42?company_id=7",
            ),
        ] {
            assert_eq!(
                record_path(template, company, project, 42).as_deref(),
                Ok(expected),
                "{template}"
            );
        }
        assert!(record_path("/rest/v1.0/projects/{project_id}/rfis", Some(7), None, 42).is_err());
    }
}
