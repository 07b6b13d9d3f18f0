//! What data exists: the world settings and the deterministic id scheme.
//!
//! Nothing is materialised: a benchmark world has half a million records, so every
//! record is computed from its id on demand (see `records`).

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct World {
    pub users: u64,
    pub companies_per_user: u64,
    pub projects_per_company: u64,
    pub records_per_resource: u64,
    pub per_page_default: u64,
    pub access_token_ttl_s: u64,
    pub rate_limit_spike: u64,
    pub rate_limit_hour: u64,
    pub retry_after_header: bool,
    pub latency_ms: u64,
    pub client_id: String,
    pub client_secret: String,
    /// Logins given access to companies they do not own (see `access`). Skipped when
    /// empty so that worlds without them read back exactly as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Membership>,
    /// Owners limited to some of their own companies' projects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_projects: Vec<Membership>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub private_records: Vec<PrivateRecord>,
    /// The optional catalog (see `catalog`): absent (the default), the stand-in serves
    /// the nine core resources only, exactly as before the catalog existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,
}

/// `{"login", "company_id", "projects": [ids] | null}`; null or omitted means every
/// project of the company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub login: String,
    pub company_id: u64,
    #[serde(default)]
    pub projects: Option<Vec<u64>>,
}

/// `{"resource", "id", "visible_to": [logins]}`: listed only for those logins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateRecord {
    pub resource: String,
    pub id: u64,
    pub visible_to: Vec<String>,
}

impl Default for World {
    fn default() -> World {
        World {
            users: 30,
            companies_per_user: 1,
            projects_per_company: 2,
            records_per_resource: 25,
            per_page_default: 100,
            access_token_ttl_s: 5400,
            rate_limit_spike: 25,
            rate_limit_hour: 3600,
            retry_after_header: true,
            latency_ms: 0,
            client_id: "standin-client".to_string(),
            client_secret: "standin-secret".to_string(),
            members: Vec::new(),
            owner_projects: Vec::new(),
            private_records: Vec::new(),
            catalog: None,
        }
    }
}

pub const MAX_PER_PAGE: u64 = 10_000;
/// Ids nest decimally (company = user*1000+c, project = company*1000+p, record =
/// project*100000+i); these bounds keep the nesting unambiguous and every id below
/// 2^53 so JavaScript-minded clients and JSON doubles see exact integers.
const MAX_USERS: u64 = 90_000;
pub const MAX_CHILDREN: u64 = 999;
pub const MAX_RECORDS: u64 = 99_999;

impl World {
    pub fn validate(&self) -> Result<(), String> {
        if self.users > MAX_USERS {
            return Err(format!("users must be at most {MAX_USERS}"));
        }
        if self.companies_per_user > MAX_CHILDREN || self.projects_per_company > MAX_CHILDREN {
            return Err(format!(
                "companies_per_user and projects_per_company must be at most {MAX_CHILDREN}"
            ));
        }
        if self.records_per_resource > MAX_RECORDS {
            return Err(format!(
                "records_per_resource must be at most {MAX_RECORDS}"
            ));
        }
        if !(1..=MAX_PER_PAGE).contains(&self.per_page_default) {
            return Err(format!("per_page_default must be 1..={MAX_PER_PAGE}"));
        }
        if self.client_id.is_empty() || self.client_secret.is_empty() {
            return Err("client_id and client_secret must not be empty".to_string());
        }
        if let Some(catalog) = &self.catalog {
            catalog.validate(self.records_per_resource)?;
        }
        crate::access::Access::from_world(self).map(drop)
    }

    /// `user-N` for N in 1..=users.
    pub fn user_number(&self, login: &str) -> Option<u64> {
        let n: u64 = login.strip_prefix("user-")?.parse().ok()?;
        (1..=self.users).contains(&n).then_some(n)
    }

    /// How many records of `resource` the world generates in one scope (none of the
    /// catalog's without a catalog).
    pub fn generated(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Companies => self.companies_per_user,
            Resource::Projects => self.projects_per_company,
            r if r.is_catalog() => self
                .catalog
                .as_ref()
                .map_or(0, |c| c.generated(r, self.records_per_resource)),
            _ => self.records_per_resource,
        }
    }

    /// Whether the world serves the catalog (its resources, recycle bins and
    /// `filters[include_deleted]`).
    pub fn has_catalog(&self) -> bool {
        self.catalog.is_some()
    }

    /// A resource by name, as this world knows them: the catalog's only with a catalog.
    pub fn resource_named(&self, name: &str) -> Option<Resource> {
        Resource::from_name(name).or_else(|| {
            Resource::CATALOG
                .into_iter()
                .find(|r| self.has_catalog() && r.name() == name)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Companies,
    Projects,
    Vendors,
    ProjectUsers,
    Rfis,
    Submittals,
    PunchItems,
    Observations,
    ChangeEvents,
    // The optional catalog (`crate::catalog`), all in their project's id space.
    DrawingAreas,
    Drawings,
    Folders,
    Files,
    RfiReplies,
    ManpowerLogs,
    NotesLogs,
    WeatherLogs,
    WorkOrderContracts,
    PurchaseOrderContracts,
    ChangeOrderPackages,
    Meetings,
    Inspections,
}

impl Resource {
    /// The core resources, served by every world. (The catalog's are `CATALOG`.)
    pub const ALL: [Resource; 9] = [
        Resource::Companies,
        Resource::Projects,
        Resource::Vendors,
        Resource::ProjectUsers,
        Resource::Rfis,
        Resource::Submittals,
        Resource::PunchItems,
        Resource::Observations,
        Resource::ChangeEvents,
    ];

    /// The project tools, in the order `/__admin/records` lists them.
    pub const PROJECT_TOOLS: [Resource; 6] = [
        Resource::ProjectUsers,
        Resource::Rfis,
        Resource::Submittals,
        Resource::PunchItems,
        Resource::Observations,
        Resource::ChangeEvents,
    ];

    /// The catalog's resources, in the order `/__admin/records` lists them after each
    /// project's core tools. Served only by worlds with a `catalog`.
    pub const CATALOG: [Resource; 13] = [
        Resource::DrawingAreas,
        Resource::Drawings,
        Resource::Folders,
        Resource::Files,
        Resource::RfiReplies,
        Resource::ManpowerLogs,
        Resource::NotesLogs,
        Resource::WeatherLogs,
        Resource::WorkOrderContracts,
        Resource::PurchaseOrderContracts,
        Resource::ChangeOrderPackages,
        Resource::Meetings,
        Resource::Inspections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Companies => "companies",
            Resource::Projects => "projects",
            Resource::Vendors => "vendors",
            Resource::ProjectUsers => "project_users",
            Resource::Rfis => "rfis",
            Resource::Submittals => "submittals",
            Resource::PunchItems => "punch_items",
            Resource::Observations => "observations",
            Resource::ChangeEvents => "change_events",
            Resource::DrawingAreas => "drawing_areas",
            Resource::Drawings => "drawings",
            Resource::Folders => "folders",
            Resource::Files => "files",
            Resource::RfiReplies => "rfi_replies",
            Resource::ManpowerLogs => "manpower_logs",
            Resource::NotesLogs => "notes_logs",
            Resource::WeatherLogs => "weather_logs",
            Resource::WorkOrderContracts => "work_order_contracts",
            Resource::PurchaseOrderContracts => "purchase_order_contracts",
            Resource::ChangeOrderPackages => "change_order_packages",
            Resource::Meetings => "meetings",
            Resource::Inspections => "inspections",
        }
    }

    /// A core resource by name (see `World::resource_named` for the catalog's).
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The resource whose records are the scopes of this one; `None` for companies,
    /// whose scope is a user number.
    pub fn parent(self) -> Option<Resource> {
        match self {
            Resource::Companies => None,
            Resource::Projects | Resource::Vendors => Some(Resource::Companies),
            _ => Some(Resource::Projects),
        }
    }

    fn id_stride(self) -> u64 {
        match self {
            Resource::Companies | Resource::Projects => 1_000,
            _ => 100_000,
        }
    }

    pub fn id(self, scope: u64, i: u64) -> u64 {
        scope * self.id_stride() + i
    }

    /// Inverse of `id`: (scope, i).
    pub fn split_id(self, id: u64) -> (u64, u64) {
        (id / self.id_stride(), id % self.id_stride())
    }

    /// Procore's list endpoints differ here; the catalog records which accept the filter.
    /// (Procore documents none for drawing areas, drawings, folders, RFI replies or
    /// daily logs, whose lists answer by date instead.)
    pub fn filters_by_updated_at(self) -> bool {
        !matches!(
            self,
            Resource::Companies
                | Resource::ProjectUsers
                | Resource::DrawingAreas
                | Resource::Drawings
                | Resource::Folders
                | Resource::Files
                | Resource::RfiReplies
                | Resource::ManpowerLogs
                | Resource::NotesLogs
                | Resource::WeatherLogs
        )
    }

    /// The field that carries the record's human text (and the injection-bait string).
    pub fn text_field(self) -> &'static str {
        match self {
            Resource::Rfis => "subject",
            Resource::Submittals
            | Resource::ChangeEvents
            | Resource::Drawings
            | Resource::WorkOrderContracts
            | Resource::PurchaseOrderContracts
            | Resource::ChangeOrderPackages
            | Resource::Meetings => "title",
            Resource::RfiReplies => "plain_text_body",
            Resource::ManpowerLogs => "notes",
            Resource::NotesLogs => "comment",
            Resource::WeatherLogs => "comments",
            _ => "name",
        }
    }

    pub fn is_catalog(self) -> bool {
        Resource::CATALOG.contains(&self)
    }

    /// The resource whose record a nested record lives in: a drawing's area, a reply's
    /// RFI, a folder's or file's folder. (The root folder has none.)
    pub fn container(self) -> Option<Resource> {
        match self {
            Resource::Drawings => Some(Resource::DrawingAreas),
            Resource::Folders | Resource::Files => Some(Resource::Folders),
            Resource::RfiReplies => Some(Resource::Rfis),
            _ => None,
        }
    }

    /// Daily logs: listed by date (`log_date`, or `start_date` with `end_date`).
    pub fn is_dated(self) -> bool {
        matches!(
            self,
            Resource::ManpowerLogs | Resource::NotesLogs | Resource::WeatherLogs
        )
    }

    /// The resources whose deleted records a recycle-bin listing shows.
    pub fn has_recycle_bin(self) -> bool {
        matches!(
            self,
            Resource::Rfis | Resource::Submittals | Resource::PunchItems | Resource::Observations
        )
    }

    /// The lists that take `filters[include_deleted]` (`only` or `with`).
    pub fn takes_include_deleted(self) -> bool {
        matches!(
            self,
            Resource::ChangeEvents
                | Resource::WorkOrderContracts
                | Resource::PurchaseOrderContracts
                | Resource::ChangeOrderPackages
        )
    }

    /// The company that owns a record of this resource.
    pub fn company_of(self, id: u64) -> u64 {
        match self {
            Resource::Companies => id,
            Resource::Projects | Resource::Vendors => self.split_id(id).0,
            _ => Resource::Projects.split_id(self.split_id(id).0).0,
        }
    }

    /// The project a record belongs to, for project tools.
    pub fn project_of(self, id: u64) -> Option<u64> {
        match self.parent() {
            Some(Resource::Projects) => Some(self.split_id(id).0),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_nest_as_documented() {
        // user 3, company 2, project 4, record 17
        let company = Resource::Companies.id(3, 2);
        assert_eq!(company, 3002);
        let project = Resource::Projects.id(company, 4);
        assert_eq!(project, 3_002_004);
        let rfi = Resource::Rfis.id(project, 17);
        assert_eq!(rfi, 300_200_400_017);
        assert_eq!(Resource::Rfis.split_id(rfi), (project, 17));
        assert_eq!(Resource::Rfis.company_of(rfi), company);
        assert_eq!(Resource::Rfis.project_of(rfi), Some(project));
        let vendor = Resource::Vendors.id(company, 5);
        assert_eq!(vendor, 300_200_005);
        assert_eq!(Resource::Vendors.company_of(vendor), company);
        assert_eq!(Resource::Vendors.project_of(vendor), None);
        assert_eq!(Resource::Projects.company_of(project), company);
        assert_eq!(Resource::Companies.company_of(company), company);
    }

    #[test]
    fn largest_world_ids_stay_exact_in_json_doubles() {
        let w = World {
            users: MAX_USERS,
            companies_per_user: MAX_CHILDREN,
            projects_per_company: MAX_CHILDREN,
            records_per_resource: MAX_RECORDS,
            ..World::default()
        };
        assert!(w.validate().is_ok());
        let c = Resource::Companies.id(w.users, MAX_CHILDREN);
        let p = Resource::Projects.id(c, MAX_CHILDREN);
        assert!(Resource::Rfis.id(p, MAX_RECORDS) < 1 << 53);
    }

    #[test]
    fn logins_map_to_user_numbers_within_the_world() {
        let w = World::default();
        assert_eq!(w.user_number("user-1"), Some(1));
        assert_eq!(w.user_number("user-30"), Some(30));
        assert_eq!(w.user_number("user-31"), None);
        assert_eq!(w.user_number("user-0"), None);
        assert_eq!(w.user_number("admin"), None);
    }

    #[test]
    fn world_json_fields_are_optional_and_typos_are_rejected() {
        let w: World = serde_json::from_str(r#"{"users": 2}"#).unwrap();
        assert_eq!(w.users, 2);
        assert_eq!(w.per_page_default, 100);
        assert!(serde_json::from_str::<World>(r#"{"user": 2}"#).is_err());
        let bad = World {
            per_page_default: 0,
            ..World::default()
        };
        assert!(bad.validate().is_err());
    }
}
