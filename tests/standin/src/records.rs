//! Records computed from their ids, plus the admin's mutations layered on top.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use crate::catalog::{self, Catalog, DEFAULT_CATALOG};
use crate::clock::iso;
use crate::world::{Resource, World};

/// The text every resource carries once per scope (record i = 3), to catch quoting bugs.
pub const BAIT: &str = "O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓";
const BAIT_INDEX: u64 = 3;
/// Catalog records only (the core resources keep exactly their old texts): record i = 4
/// carries markup, record i = 5 a very long name of many scripts.
pub const MARKUP: &str = "<script>alert(\"x\")</script> <b>bold</b> & 'single' \\ backslash";
const MARKUP_INDEX: u64 = 4;
const LONG_INDEX: u64 = 5;

/// A name over 1,000 characters (2,400 UTF-8 bytes) of Latin, CJK, Hebrew (right to
/// left), emoji and a zero-width joiner.
pub fn long_name() -> String {
    "Ünïcødé 日本語の図面 עברית 🏗️👷\u{200d}♀️ — ".repeat(36)
}

/// Mutations made through `/__admin/mutate`, keyed by (resource, id).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    edits: HashMap<(Resource, u64), Edit>,
    /// Deleted records and when they were deleted (`deleted_at` in recycle bins).
    deleted: HashMap<(Resource, u64), DateTime<Utc>>,
    /// Creation times of added records per (resource, scope); added record k (0-based)
    /// has index `generated + 1 + k`.
    added: HashMap<(Resource, u64), Vec<DateTime<Utc>>>,
    /// Where added catalog records belong: their container, their log date.
    placed: HashMap<(Resource, u64), Placement>,
}

/// The container (drawing area, folder, RFI) and the date (daily logs) of an added
/// record; generated records compute theirs from their index.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub container: Option<u64>,
    pub date: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy)]
struct Edit {
    updated_at: DateTime<Utc>,
    /// How many times ` (edited)` is appended to the text.
    times: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    Edit,
    Delete,
    Restore,
}

#[derive(Debug, PartialEq, Eq)]
pub enum MutationError {
    NotFound,
}

/// A read-only view of the world with its overrides applied.
#[derive(Clone, Copy)]
pub struct Data<'a> {
    pub world: &'a World,
    pub overrides: &'a Overrides,
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

impl<'a> Data<'a> {
    pub fn new(world: &'a World, overrides: &'a Overrides) -> Data<'a> {
        Data { world, overrides }
    }

    fn added(&self, resource: Resource, scope: u64) -> &'a [DateTime<Utc>] {
        self.overrides
            .added
            .get(&(resource, scope))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Indexes 1..=slots exist in a scope (generated plus added), deleted or not.
    fn slots(&self, resource: Resource, scope: u64) -> u64 {
        self.world.generated(resource) + self.added(resource, scope).len() as u64
    }

    /// Whether the scope (user, company or project) currently exists.
    pub fn scope_exists(&self, resource: Resource, scope: u64) -> bool {
        match resource.parent() {
            None => (1..=self.world.users).contains(&scope),
            Some(parent) => self.exists(parent, scope),
        }
    }

    /// Whether the id was ever part of the world (deleted records included).
    pub fn in_world(&self, resource: Resource, id: u64) -> bool {
        let (scope, i) = resource.split_id(id);
        i >= 1 && i <= self.slots(resource, scope) && self.scope_exists(resource, scope)
    }

    /// Whether the record exists now: made, not deleted, and for a nested record its
    /// container (and theirs) exists too: deleting a drawing area hides its drawings.
    pub fn exists(&self, resource: Resource, id: u64) -> bool {
        self.in_world(resource, id)
            && !self.overrides.deleted.contains_key(&(resource, id))
            && match (resource.container(), self.container_of(resource, id)) {
                (Some(container), Some(c)) => self.exists(container, c),
                _ => true,
            }
    }

    pub fn is_deleted(&self, resource: Resource, id: u64) -> bool {
        self.overrides.deleted.contains_key(&(resource, id))
    }

    pub fn deleted_at(&self, resource: Resource, id: u64) -> Option<DateTime<Utc>> {
        self.overrides.deleted.get(&(resource, id)).copied()
    }

    /// Ids of the records currently in a scope, ascending (the order lists use).
    pub fn ids(&self, resource: Resource, scope: u64) -> Vec<u64> {
        if !self.scope_exists(resource, scope) {
            return Vec::new();
        }
        let ids = (1..=self.slots(resource, scope)).map(|i| resource.id(scope, i));
        if resource.container().is_some() {
            return ids.filter(|id| self.exists(resource, *id)).collect();
        }
        ids.filter(|id| !self.overrides.deleted.contains_key(&(resource, *id)))
            .collect()
    }

    /// Ids of the deleted records of a scope that still exists, ascending: what a
    /// recycle bin or `filters[include_deleted]=only` lists.
    pub fn deleted_ids(&self, resource: Resource, scope: u64) -> Vec<u64> {
        if !self.scope_exists(resource, scope) {
            return Vec::new();
        }
        (1..=self.slots(resource, scope))
            .map(|i| resource.id(scope, i))
            .filter(|id| self.overrides.deleted.contains_key(&(resource, *id)))
            .collect()
    }

    /// The catalog's layout (the defaults for a world without one, which has no
    /// catalog records but may still be asked to compute one).
    pub fn catalog(&self) -> &'a Catalog {
        self.world.catalog.as_ref().unwrap_or(&DEFAULT_CATALOG)
    }

    /// The record a nested record lives in (see `Resource::container`).
    pub fn container_of(&self, resource: Resource, id: u64) -> Option<u64> {
        let container = resource.container()?;
        let (project, i) = resource.split_id(id);
        if i > self.world.generated(resource) {
            return self.overrides.placed.get(&(resource, id))?.container;
        }
        if i == 0 {
            return None;
        }
        let c = self.catalog().container_index(resource, i)?;
        Some(container.id(project, c))
    }

    /// The records currently in a container, ascending: the drawings of an area, the
    /// folders or files of a folder, the replies to an RFI. Empty when the container
    /// does not exist (never made, deleted, or inside something deleted).
    pub fn children(&self, resource: Resource, container_id: u64) -> Vec<u64> {
        let Some(container) = resource.container() else {
            return Vec::new();
        };
        if !self.exists(container, container_id) {
            return Vec::new();
        }
        let (project, c) = container.split_id(container_id);
        let generated = self.world.generated(resource);
        let records = self.world.records_per_resource;
        let made = self
            .catalog()
            .child_indexes(resource, c, records)
            .filter(|i| *i <= generated);
        let added = (generated + 1..=self.slots(resource, project)).filter(|i| {
            self.overrides
                .placed
                .get(&(resource, resource.id(project, *i)))
                .is_some_and(|p| p.container == Some(container_id))
        });
        made.chain(added)
            .map(|i| resource.id(project, i))
            .filter(|id| !self.overrides.deleted.contains_key(&(resource, *id)))
            .collect()
    }

    /// A daily log's date: generated logs run from 2026-01-01 (`catalog::log_date`),
    /// added ones are dated the day they were added (`catalog.today`).
    pub fn log_date(&self, resource: Resource, id: u64) -> Option<NaiveDate> {
        if !resource.is_dated() {
            return None;
        }
        let (_, i) = resource.split_id(id);
        if i > self.world.generated(resource) {
            return self.overrides.placed.get(&(resource, id))?.date;
        }
        let (day, _) = self.catalog().log_day(resource, i.max(1));
        Some(catalog::log_date(day))
    }

    pub fn created_at(&self, resource: Resource, id: u64) -> DateTime<Utc> {
        let (scope, i) = resource.split_id(id);
        let generated = self.world.generated(resource);
        if i > generated {
            let k = (i - generated - 1) as usize;
            if let Some(t) = self.added(resource, scope).get(k) {
                return *t;
            }
        }
        if resource.is_dated() {
            // Entered late in the afternoon of the day they log, one minute apart.
            let (day, position) = self.catalog().log_day(resource, i.max(1));
            let midnight = catalog::log_date(day).and_time(chrono::NaiveTime::MIN);
            return Utc.from_utc_datetime(&midnight)
                + Duration::hours(17)
                + Duration::minutes(position as i64);
        }
        base_time() + Duration::minutes(i as i64)
    }

    pub fn updated_at(&self, resource: Resource, id: u64) -> DateTime<Utc> {
        match self.overrides.edits.get(&(resource, id)) {
            Some(edit) => edit.updated_at,
            None => self.created_at(resource, id),
        }
    }

    /// How many times the record was edited.
    fn edits(&self, resource: Resource, id: u64) -> u64 {
        self.overrides
            .edits
            .get(&(resource, id))
            .map_or(0, |e| u64::from(e.times))
    }

    /// The record's name/title/subject.
    pub fn text(&self, resource: Resource, id: u64) -> String {
        let (scope, i) = resource.split_id(id);
        let mut text = match resource {
            Resource::Companies => format!("Company {id}"),
            Resource::Projects => format!("Project {id}"),
            Resource::Vendors => format!("Vendor {i} of company {scope}"),
            Resource::ProjectUsers => format!("Person {i} of project {scope}"),
            Resource::Rfis => format!("RFI {i}: clarify detail {i}"),
            Resource::Submittals => format!("Submittal {i}: shop drawings"),
            Resource::PunchItems => format!("Punch item {i}"),
            Resource::Observations => format!("Observation {i}"),
            Resource::ChangeEvents => format!("Change event {i}"),
            Resource::DrawingAreas => format!("Drawing area {i}"),
            Resource::Drawings => format!("Drawing {i}: floor plan"),
            Resource::Folders if i == 1 => "Documents".to_string(),
            Resource::Folders => format!("Folder {i}"),
            Resource::Files => format!("File {i}.pdf"),
            Resource::RfiReplies => format!("Reply {i}: see detail"),
            Resource::ManpowerLogs => format!("Manpower entry {i}"),
            Resource::NotesLogs => format!("Site note {i}"),
            Resource::WeatherLogs => format!("Weather observation {i}"),
            Resource::WorkOrderContracts => format!("Work order {i}"),
            Resource::PurchaseOrderContracts => format!("Purchase order {i}"),
            Resource::ChangeOrderPackages => format!("Change order package {i}"),
            Resource::Meetings => format!("Meeting {i}"),
            Resource::Inspections => format!("Inspection {i}"),
        };
        if i == BAIT_INDEX {
            text.push(' ');
            text.push_str(BAIT);
        }
        if resource.is_catalog() && i == MARKUP_INDEX {
            text.push(' ');
            text.push_str(MARKUP);
        }
        if resource.is_catalog() && i == LONG_INDEX {
            text.push(' ');
            text.push_str(&long_name());
        }
        if let Some(edit) = self.overrides.edits.get(&(resource, id)) {
            for _ in 0..edit.times {
                text.push_str(" (edited)");
            }
        }
        text
    }

    /// The record as the API returns it.
    pub fn record(&self, resource: Resource, id: u64) -> Value {
        let (scope, i) = resource.split_id(id);
        let text = self.text(resource, id);
        let mut record = match resource {
            Resource::Companies => json!({ "name": text, "is_active": true }),
            Resource::Projects => {
                let company = resource.company_of(id);
                let number = format!("P-{i:03}");
                json!({
                    "name": text,
                    "display_name": format!("{number} {text}"),
                    "project_number": number,
                    "active": true,
                    "company": { "id": company, "name": self.text(Resource::Companies, company) },
                    "stage": pick(i, &["Bidding", "Course of Construction", "Post-Construction"]),
                })
            }
            Resource::Vendors => json!({
                "name": text,
                "abbreviated_name": format!("V{i}"),
                "is_active": i % 7 != 0,
                "trade_name": pick(i, &["Concrete", "Electrical", "Plumbing", "Framing", "HVAC"]),
            }),
            Resource::ProjectUsers => json!({
                "name": text,
                "email_address": format!("person{i}.p{scope}@example.com"),
                "job_title": pick(i, &["Superintendent", "Project Manager", "Engineer", "Foreman"]),
                "is_active": i % 9 != 0,
            }),
            Resource::Rfis => json!({
                "number": i.to_string(),
                "subject": text,
                "status": pick(i, &["open", "closed", "draft"]),
                "due_date": (base_time() + Duration::days(30 + (i % 60) as i64))
                    .format("%Y-%m-%d")
                    .to_string(),
            }),
            Resource::Submittals => {
                let statuses = ["Open", "Closed", "Draft"];
                let s = (i % 3) as usize;
                json!({
                    "number": i.to_string(),
                    "title": text,
                    "status": { "id": s + 1, "name": statuses[s] },
                })
            }
            Resource::PunchItems => json!({
                "name": text,
                "position": i,
                "status": pick(i, &["open", "ready_for_review", "closed"]),
                "priority": pick(i, &["low", "medium", "high"]),
            }),
            Resource::Observations => json!({
                "name": text,
                "number": i,
                "status": pick(i, &["initiated", "ready_for_review", "closed"]),
                "priority": pick(i, &["Low", "Medium", "High", "Urgent"]),
            }),
            Resource::ChangeEvents => json!({
                "number": format!("{i:03}"),
                "title": text,
                "status": pick(i, &["open", "pending", "closed"]),
            }),
            _ => self.catalog_record(resource, id, text),
        };
        if let Value::Object(map) = &mut record {
            map.insert("id".to_string(), json!(id));
            map.insert(
                "created_at".to_string(),
                json!(iso(self.created_at(resource, id))),
            );
            map.insert(
                "updated_at".to_string(),
                json!(iso(self.updated_at(resource, id))),
            );
        }
        record
    }
}

impl Data<'_> {
    /// The fields of a catalog record besides id/created_at/updated_at. Folders carry
    /// their children (`folders`, `files`) only where the API adds them.
    fn catalog_record(&self, resource: Resource, id: u64, text: String) -> Value {
        let (project, i) = resource.split_id(id);
        let company = resource.company_of(id);
        let records = self.world.records_per_resource;
        // A person of the project (its users are 1..=records_per_resource).
        let person = |k: u64| {
            let user = Resource::ProjectUsers.id(project, (k.max(1) - 1) % records.max(1) + 1);
            json!({ "id": user, "name": self.text(Resource::ProjectUsers, user) })
        };
        let vendor = |k: u64| {
            if records == 0 {
                return Value::Null;
            }
            let vendor = Resource::Vendors.id(company, (k.max(1) - 1) % records + 1);
            json!({ "id": vendor, "name": self.text(Resource::Vendors, vendor) })
        };
        let updated_at = iso(self.updated_at(resource, id));
        let container = self.container_of(resource, id);
        match resource {
            Resource::DrawingAreas => json!({
                "name": text,
                "description": format!("Area {i} of project {project}"),
                "drawings_count": self.children(Resource::Drawings, id).len(),
            }),
            Resource::Drawings => json!({
                "number": format!("A-{i:03}"),
                "title": text,
                "discipline": pick(i, &["Architectural", "Structural", "Mechanical", "Electrical", "Plumbing"]),
                "obsolete": false,
                "drawing_area_id": container,
                // Each edit stands for a newly uploaded revision.
                "current_revision": {
                    "id": id,
                    "revision_number": (1 + i % 3 + self.edits(resource, id)).to_string(),
                    "floorplan": i % 2 == 1,
                    "has_drawing_sketches": false,
                    "updated_at": updated_at,
                },
            }),
            Resource::Folders => {
                let folders = self.children(Resource::Folders, id);
                let files = self.children(Resource::Files, id);
                json!({
                    "name": text,
                    "parent_id": container,
                    "private": false,
                    "is_tracked": false,
                    "name_with_path": self.path(id),
                    "read_only": false,
                    "is_deleted": false,
                    "is_recycle_bin": false,
                    "has_children": !folders.is_empty() || !files.is_empty(),
                    "has_children_files": !files.is_empty(),
                    "has_children_folders": !folders.is_empty(),
                })
            }
            Resource::Files => {
                let folder_path = container.map(|f| self.path(f)).unwrap_or_default();
                let size = 10_240 * i;
                json!({
                    "name": text,
                    "parent_id": container,
                    "size": size,
                    "description": format!("Specification sheet {i}"),
                    "checked_out_until": null,
                    "name_with_path": join_path(&folder_path, &text),
                    "private": false,
                    "is_tracked": false,
                    "file_type": "pdf",
                    "is_deleted": false,
                    "legacy_id": null,
                    "file_versions": [{
                        "id": id,
                        "number": 1 + self.edits(resource, id),
                        "size": size,
                        "created_at": updated_at,
                    }],
                })
            }
            Resource::RfiReplies => {
                let by = person(i);
                json!({
                    "rfi_id": container,
                    "plain_text_body": text,
                    "rich_text_body": format!("<p>{text}</p>"),
                    "official": i % self.catalog().replies_per_rfi.max(1) == 0,
                    "answer_date": iso(self.created_at(resource, id)),
                    "created_by": by["name"],
                    "created_by_id": by["id"],
                    "attachments": [],
                })
            }
            Resource::ManpowerLogs | Resource::NotesLogs | Resource::WeatherLogs => {
                let date = self.log_date(resource, id).unwrap_or_default();
                let position = if i > self.world.generated(resource) {
                    1
                } else {
                    self.catalog().log_day(resource, i.max(1)).1
                };
                let mut log = json!({
                    "date": date.format("%Y-%m-%d").to_string(),
                    "datetime": format!("{}T12:00:00Z", date.format("%Y-%m-%d")),
                    "position": position,
                    "status": pick(i, &["approved", "pending"]),
                    "created_by": person(i),
                });
                let fields = match resource {
                    Resource::ManpowerLogs => {
                        let workers = 2 + i % 7;
                        json!({
                            "notes": text,
                            "num_workers": workers,
                            "num_hours": "8.0",
                            "man_hours": format!("{}.0", workers * 8),
                            "vendor": vendor(i),
                        })
                    }
                    Resource::NotesLogs => json!({
                        "comment": text,
                        "is_issue_day": i % 5 == 0,
                    }),
                    _ => json!({
                        "comments": text,
                        "sky": pick(i, &["Clear", "Partly Cloudy", "Overcast", "Rain", "Snow"]),
                        "temperature": format!("{}", 30 + i % 50),
                        "average": pick(i, &["Cold", "Mild", "Warm"]),
                        "precipitation": pick(i, &["None", "Light", "Heavy"]),
                        "wind": pick(i, &["Calm", "Moderate", "Windy"]),
                        "ground": pick(i, &["Dry", "Wet", "Frozen"]),
                        "calamity": "None",
                        "is_weather_delay": pick(i, &["No", "No", "No", "Yes"]),
                        "time": format!("{}T09:00:00Z", date.format("%Y-%m-%d")),
                    }),
                };
                if let (Value::Object(log), Value::Object(fields)) = (&mut log, fields) {
                    log.extend(fields);
                }
                log
            }
            Resource::WorkOrderContracts | Resource::PurchaseOrderContracts => json!({
                "number": format!(
                    "{}-{i:03}",
                    if resource == Resource::WorkOrderContracts { "SC" } else { "PO" }
                ),
                "title": text,
                "status": pick(i, &["Draft", "Out For Signature", "Approved", "Complete", "Terminated", "Void"]),
                "executed": i % 2 == 0,
                "private": false,
                "vendor": vendor(i),
                "grand_total": format!("{}.00", 1_000 * i),
            }),
            Resource::ChangeOrderPackages => json!({
                "number": format!("{i:03}"),
                "title": text,
                "status": pick(i, &["draft", "pending", "approved", "rejected", "void"]),
                "grand_total": format!("{}.50", 250 * i),
                "due_date": (base_time() + Duration::days(14 + (i % 45) as i64))
                    .format("%Y-%m-%d")
                    .to_string(),
            }),
            Resource::Meetings => json!({
                "title": text,
                "group_title": pick(i, &["OAC meetings", "Subcontractor meetings", "Safety meetings"]),
                "meeting_date": (base_time() + Duration::days(7 * (i % 20) as i64))
                    .format("%Y-%m-%d")
                    .to_string(),
                "position": i,
                "status": pick(i, &["scheduled", "in_progress", "completed"]),
                "is_private": false,
            }),
            Resource::Inspections => json!({
                "name": text,
                "number": i.to_string(),
                "status": pick(i, &["not_started", "in_progress", "closed"]),
                "inspection_date": (base_time() + Duration::days(3 * (i % 40) as i64))
                    .format("%Y-%m-%d")
                    .to_string(),
                "list_template_name": pick(i, &["Concrete pre-pour", "Framing", "Fire stopping"]),
                "inspector": person(i),
            }),
            _ => json!({ "name": text }),
        }
    }

    /// A folder's `name_with_path`: its ancestors' names below the root, joined by `/`
    /// (the root's is empty).
    fn path(&self, folder: u64) -> String {
        match self.container_of(Resource::Folders, folder) {
            None => String::new(),
            Some(parent) => join_path(&self.path(parent), &self.text(Resource::Folders, folder)),
        }
    }
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn pick(i: u64, options: &[&'static str]) -> &'static str {
    options[(i as usize) % options.len()]
}

impl Overrides {
    /// Applies edit/delete/restore to a record; `at` becomes its `updated_at` where the
    /// action says so.
    pub fn apply(
        &mut self,
        world: &World,
        resource: Resource,
        id: u64,
        mutation: Mutation,
        at: DateTime<Utc>,
    ) -> Result<(), MutationError> {
        let data = Data::new(world, self);
        let ok = match mutation {
            Mutation::Edit | Mutation::Delete => data.exists(resource, id),
            Mutation::Restore => data.in_world(resource, id),
        };
        if !ok {
            return Err(MutationError::NotFound);
        }
        match mutation {
            Mutation::Edit => {
                let edit = self.edits.entry((resource, id)).or_insert(Edit {
                    updated_at: at,
                    times: 0,
                });
                edit.updated_at = at;
                edit.times += 1;
            }
            Mutation::Delete => {
                self.deleted.insert((resource, id), at);
            }
            Mutation::Restore => {
                self.deleted.remove(&(resource, id));
                let edit = self.edits.entry((resource, id)).or_insert(Edit {
                    updated_at: at,
                    times: 0,
                });
                edit.updated_at = at;
            }
        }
        Ok(())
    }

    /// Adds a record to a scope (user for companies, company for projects and vendors,
    /// project for project tools) and returns its id. (The admin API adds through
    /// `add_placed`, which also places catalog records.)
    #[cfg(test)]
    pub fn add(
        &mut self,
        world: &World,
        resource: Resource,
        scope: u64,
        at: DateTime<Utc>,
    ) -> Result<u64, MutationError> {
        self.add_placed(world, resource, scope, Placement::default(), at)
    }

    /// `add` for a catalog record that has a container or a date; the container must
    /// exist and lie in `scope` (the project).
    pub fn add_placed(
        &mut self,
        world: &World,
        resource: Resource,
        scope: u64,
        placement: Placement,
        at: DateTime<Utc>,
    ) -> Result<u64, MutationError> {
        let data = Data::new(world, self);
        if let (Some(container), Some(c)) = (resource.container(), placement.container) {
            if container.project_of(c) != Some(scope) || !data.exists(container, c) {
                return Err(MutationError::NotFound);
            }
        }
        if !data.scope_exists(resource, scope) {
            return Err(MutationError::NotFound);
        }
        let i = data.slots(resource, scope) + 1;
        let limit = match resource {
            Resource::Companies | Resource::Projects => crate::world::MAX_CHILDREN,
            _ => crate::world::MAX_RECORDS,
        };
        if i > limit {
            return Err(MutationError::NotFound);
        }
        self.added.entry((resource, scope)).or_default().push(at);
        let id = resource.id(scope, i);
        if placement != Placement::default() {
            self.placed.insert((resource, id), placement);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Access, ProjectAccess, Viewer};

    fn world() -> World {
        World {
            users: 2,
            companies_per_user: 2,
            projects_per_company: 2,
            records_per_resource: 5,
            ..World::default()
        }
    }

    #[test]
    fn records_are_deterministic_with_documented_ids_and_times() {
        let w = world();
        let o = Overrides::default();
        let d = Data::new(&w, &o);
        assert_eq!(d.ids(Resource::Companies, 2), vec![2001, 2002]);
        assert_eq!(d.ids(Resource::Projects, 2001), vec![2_001_001, 2_001_002]);
        assert_eq!(d.ids(Resource::Rfis, 2_001_002).len(), 5);
        let rfi = d.record(Resource::Rfis, 200_100_200_004);
        assert_eq!(rfi["id"], 200_100_200_004u64);
        assert_eq!(rfi["created_at"], "2026-01-01T00:04:00Z");
        assert_eq!(rfi["updated_at"], "2026-01-01T00:04:00Z");
        assert_eq!(rfi, d.record(Resource::Rfis, 200_100_200_004));
        let project = d.record(Resource::Projects, 2_001_002);
        assert_eq!(project["company"]["id"], 2001);
        assert!(d.ids(Resource::Companies, 3).is_empty());
        assert!(d.ids(Resource::Rfis, 2_003_001).is_empty());
    }

    #[test]
    fn record_three_carries_the_bait_text() {
        let w = world();
        let o = Overrides::default();
        let d = Data::new(&w, &o);
        for resource in Resource::ALL {
            let scope = match resource.parent() {
                None => 1,
                Some(Resource::Companies) => 1001,
                Some(_) => 1_001_001,
            };
            let id = resource.id(scope, 3);
            let w3 = World {
                companies_per_user: 3,
                projects_per_company: 3,
                ..w.clone()
            };
            let d3 = Data::new(&w3, &o);
            let record = d3.record(resource, id);
            let text = record[resource.text_field()].as_str().unwrap().to_string();
            assert!(text.contains(BAIT), "{resource:?}: {text}");
            let other = d.record(resource, resource.id(scope, 2));
            assert!(other[resource.text_field()].as_str().unwrap().is_ascii());
        }
    }

    #[test]
    fn mutations_layer_on_top_of_generated_data() {
        let w = world();
        let mut o = Overrides::default();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap();
        let rfi = Resource::Rfis.id(1_001_001, 2);
        o.apply(&w, Resource::Rfis, rfi, Mutation::Edit, at)
            .unwrap();
        let d = Data::new(&w, &o);
        let r = d.record(Resource::Rfis, rfi);
        assert_eq!(r["updated_at"], "2026-03-01T12:00:00Z");
        assert!(r["subject"].as_str().unwrap().ends_with(" (edited)"));

        o.apply(&w, Resource::Rfis, rfi, Mutation::Delete, at)
            .unwrap();
        assert!(!Data::new(&w, &o)
            .ids(Resource::Rfis, 1_001_001)
            .contains(&rfi));
        assert_eq!(
            o.apply(&w, Resource::Rfis, rfi, Mutation::Edit, at),
            Err(MutationError::NotFound)
        );
        o.apply(&w, Resource::Rfis, rfi, Mutation::Restore, at)
            .unwrap();
        assert!(Data::new(&w, &o)
            .ids(Resource::Rfis, 1_001_001)
            .contains(&rfi));

        let added = o.add(&w, Resource::Rfis, 1_001_001, at).unwrap();
        assert_eq!(added, Resource::Rfis.id(1_001_001, 6));
        let d = Data::new(&w, &o);
        assert_eq!(d.ids(Resource::Rfis, 1_001_001).last(), Some(&added));
        assert_eq!(
            d.record(Resource::Rfis, added)["created_at"],
            "2026-03-01T12:00:00Z"
        );
        assert_eq!(
            o.add(&w, Resource::Rfis, 9_009_009, at),
            Err(MutationError::NotFound)
        );
    }

    fn catalog_world() -> World {
        World {
            catalog: Some(Catalog {
                drawing_areas: 2,
                drawings_per_area: 3,
                ..Catalog::DEFAULT
            }),
            ..world()
        }
    }

    #[test]
    fn catalog_records_exist_only_with_a_catalog_and_leave_core_ids_alone() {
        let o = Overrides::default();
        let plain = world();
        let with = catalog_world();
        let (d, dc) = (Data::new(&plain, &o), Data::new(&with, &o));
        let p = 1_001_001;
        for resource in Resource::CATALOG {
            assert!(d.ids(resource, p).is_empty(), "{resource:?}");
            assert!(!d.exists(resource, resource.id(p, 1)), "{resource:?}");
            assert!(!dc.ids(resource, p).is_empty(), "{resource:?}");
        }
        for resource in Resource::ALL {
            let scope = match resource.parent() {
                None => 1,
                Some(Resource::Companies) => 1001,
                Some(_) => p,
            };
            assert_eq!(d.ids(resource, scope), dc.ids(resource, scope));
            let id = resource.id(scope, 3);
            assert_eq!(d.record(resource, id), dc.record(resource, id));
        }
        // Catalog records share the project's id space, each resource its own.
        assert_eq!(
            dc.ids(Resource::Drawings, p),
            (1..=6)
                .map(|i| Resource::Drawings.id(p, i))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            dc.ids(Resource::Meetings, p).len(),
            5,
            "records_per_resource"
        );
    }

    #[test]
    fn nested_records_live_and_die_with_their_containers() {
        let w = catalog_world();
        let mut o = Overrides::default();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap();
        let p = 1_001_001;
        let area = Resource::DrawingAreas.id(p, 2);
        let drawing = Resource::Drawings.id(p, 4);
        let d = Data::new(&w, &o);
        assert_eq!(d.container_of(Resource::Drawings, drawing), Some(area));
        assert_eq!(
            d.children(Resource::Drawings, area),
            (4..=6)
                .map(|i| Resource::Drawings.id(p, i))
                .collect::<Vec<_>>()
        );
        let root = Resource::Folders.id(p, 1);
        let folder = Resource::Folders.id(p, 2);
        let sub = Resource::Folders.id(p, 4);
        assert_eq!(d.container_of(Resource::Folders, root), None);
        assert_eq!(d.container_of(Resource::Folders, sub), Some(folder));
        assert_eq!(d.record(Resource::Folders, root)["name_with_path"], "");
        let file = Resource::Files.id(p, 7);
        assert_eq!(d.container_of(Resource::Files, file), Some(sub));

        o.apply(&w, Resource::DrawingAreas, area, Mutation::Delete, at)
            .unwrap();
        o.apply(&w, Resource::Folders, folder, Mutation::Delete, at)
            .unwrap();
        let d = Data::new(&w, &o);
        assert!(d.in_world(Resource::Drawings, drawing) && !d.exists(Resource::Drawings, drawing));
        assert!(d.children(Resource::Drawings, area).is_empty());
        assert_eq!(d.ids(Resource::Drawings, p).len(), 3, "area 1's only");
        assert!(
            !d.exists(Resource::Files, file),
            "two levels below the deleted folder"
        );
        assert_eq!(d.deleted_at(Resource::DrawingAreas, area), Some(at));
        assert_eq!(d.deleted_ids(Resource::DrawingAreas, p), vec![area]);
        assert!(
            d.deleted_ids(Resource::Drawings, p).is_empty(),
            "only what was deleted itself"
        );

        // Added records go into a container that exists, in the same project.
        let other_area = Resource::DrawingAreas.id(p, 1);
        let into = |c| Placement {
            container: Some(c),
            date: None,
        };
        let added = o
            .add_placed(&w, Resource::Drawings, p, into(other_area), at)
            .unwrap();
        assert_eq!(added, Resource::Drawings.id(p, 7));
        assert_eq!(
            o.add_placed(&w, Resource::Drawings, p, into(area), at),
            Err(MutationError::NotFound),
            "a deleted area"
        );
        assert_eq!(
            o.add_placed(&w, Resource::Drawings, 1_001_002, into(other_area), at),
            Err(MutationError::NotFound),
            "another project's area"
        );
        let d = Data::new(&w, &o);
        assert_eq!(
            d.children(Resource::Drawings, other_area).last(),
            Some(&added)
        );
        assert_eq!(
            d.record(Resource::Drawings, added)["drawing_area_id"],
            other_area
        );
    }

    #[test]
    fn daily_logs_are_dated_and_added_ones_take_their_date() {
        let w = catalog_world();
        let mut o = Overrides::default();
        let p = 1_001_001;
        let d = Data::new(&w, &o);
        let log = |i| Resource::NotesLogs.id(p, i);
        let day = |d: Data<'_>, i| d.log_date(Resource::NotesLogs, log(i)).unwrap().to_string();
        assert_eq!(day(d, 1), "2026-01-01");
        assert_eq!(day(d, 32), "2026-02-01");
        assert_eq!(d.record(Resource::NotesLogs, log(32))["date"], "2026-02-01");
        assert_eq!(
            d.record(Resource::NotesLogs, log(32))["created_at"],
            "2026-02-01T17:01:00Z"
        );
        assert_eq!(
            d.log_date(Resource::Meetings, Resource::Meetings.id(p, 1)),
            None
        );
        let at = Utc::now();
        let date = NaiveDate::from_ymd_opt(2026, 7, 4);
        let added = o
            .add_placed(
                &w,
                Resource::NotesLogs,
                p,
                Placement {
                    container: None,
                    date,
                },
                at,
            )
            .unwrap();
        assert_eq!(Data::new(&w, &o).log_date(Resource::NotesLogs, added), date);
    }

    #[test]
    fn catalog_records_carry_markup_and_a_very_long_name() {
        let w = catalog_world();
        let o = Overrides::default();
        let d = Data::new(&w, &o);
        for resource in Resource::CATALOG {
            let text = |i| {
                let record = d.record(resource, resource.id(1_001_001, i));
                record[resource.text_field()].as_str().unwrap().to_string()
            };
            assert!(text(3).contains(BAIT), "{resource:?}");
            assert!(text(4).contains(MARKUP), "{resource:?}");
            assert!(text(5).chars().count() > 1000, "{resource:?}");
            assert!(text(2).is_ascii() && text(6).is_ascii(), "{resource:?}");
        }
    }

    #[test]
    fn deleting_a_project_hides_its_tools() {
        let w = world();
        let mut o = Overrides::default();
        let at = Utc::now();
        o.apply(&w, Resource::Projects, 1_001_001, Mutation::Delete, at)
            .unwrap();
        let d = Data::new(&w, &o);
        let access = Access::default();
        let opens = |user, project| {
            Viewer::new(d, &access, user).project_access(project) == ProjectAccess::Allowed
        };
        assert!(!opens(1, 1_001_001));
        assert!(opens(1, 1_001_002));
        assert!(d.ids(Resource::Rfis, 1_001_001).is_empty());
        assert!(!opens(2, 1_001_002));
    }
}
