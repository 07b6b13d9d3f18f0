//! Records computed from their ids, plus the admin's mutations layered on top.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::clock::iso;
use crate::world::{Resource, World};

/// The text every resource carries once per scope (record i = 3), to catch quoting bugs.
pub const BAIT: &str = "O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓";
const BAIT_INDEX: u64 = 3;

/// Mutations made through `/__admin/mutate`, keyed by (resource, id).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    edits: HashMap<(Resource, u64), Edit>,
    deleted: HashSet<(Resource, u64)>,
    /// Creation times of added records per (resource, scope); added record k (0-based)
    /// has index `generated + 1 + k`.
    added: HashMap<(Resource, u64), Vec<DateTime<Utc>>>,
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

    pub fn exists(&self, resource: Resource, id: u64) -> bool {
        self.in_world(resource, id) && !self.overrides.deleted.contains(&(resource, id))
    }

    pub fn is_deleted(&self, resource: Resource, id: u64) -> bool {
        self.overrides.deleted.contains(&(resource, id))
    }

    /// Ids of the records currently in a scope, ascending (the order lists use).
    pub fn ids(&self, resource: Resource, scope: u64) -> Vec<u64> {
        if !self.scope_exists(resource, scope) {
            return Vec::new();
        }
        (1..=self.slots(resource, scope))
            .map(|i| resource.id(scope, i))
            .filter(|id| !self.overrides.deleted.contains(&(resource, *id)))
            .collect()
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
        base_time() + Duration::minutes(i as i64)
    }

    pub fn updated_at(&self, resource: Resource, id: u64) -> DateTime<Utc> {
        match self.overrides.edits.get(&(resource, id)) {
            Some(edit) => edit.updated_at,
            None => self.created_at(resource, id),
        }
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
        };
        if i == BAIT_INDEX {
            text.push(' ');
            text.push_str(BAIT);
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
                self.deleted.insert((resource, id));
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
    /// project for project tools) and returns its id.
    pub fn add(
        &mut self,
        world: &World,
        resource: Resource,
        scope: u64,
        at: DateTime<Utc>,
    ) -> Result<u64, MutationError> {
        let data = Data::new(world, self);
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
        Ok(resource.id(scope, i))
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
