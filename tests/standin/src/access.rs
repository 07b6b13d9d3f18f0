//! Who sees what: company membership with per-project access, and private records.
//!
//! By default a login sees exactly the companies it owns, all their projects and every
//! record in them. The world's `members`, `owner_projects` and `private_records` and the
//! admin routes `/__admin/access` and `/__admin/private` layer exceptions on top; only
//! the exceptions are stored, so a benchmark-sized world costs nothing extra.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::records::{Data, Overrides};
use crate::world::{Membership, Resource, World};

/// Which projects of a company a login may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    All,
    Projects(BTreeSet<u64>),
}

static ALL: Grant = Grant::All;

impl Grant {
    fn allows(&self, project: u64) -> bool {
        match self {
            Grant::All => true,
            Grant::Projects(projects) => projects.contains(&project),
        }
    }
}

/// Why an access or privacy setting was refused: the caller named something that does
/// not exist (404 from the admin API) or asked for something that makes no sense (400).
#[derive(Debug, PartialEq, Eq)]
pub enum AccessError {
    Unknown(String),
    Invalid(String),
}

impl AccessError {
    pub fn status(&self) -> u16 {
        match self {
            AccessError::Unknown(_) => 404,
            AccessError::Invalid(_) => 400,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            AccessError::Unknown(m) | AccessError::Invalid(m) => m,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Access {
    /// Exceptions by (user, company). `None` only ever appears for an owner cut off
    /// from its own company: a non-owner without an entry already sees nothing.
    grants: BTreeMap<(u64, u64), Option<Grant>>,
    /// The users allowed to see each private record.
    private: HashMap<(Resource, u64), BTreeSet<u64>>,
}

fn owner_of(company: u64) -> u64 {
    Resource::Companies.split_id(company).0
}

impl Access {
    /// The access the world describes; refuses entries that name nothing in it.
    pub fn from_world(world: &World) -> Result<Access, String> {
        let overrides = Overrides::default();
        let data = Data::new(world, &overrides);
        let mut access = Access::default();
        let entries = world
            .owner_projects
            .iter()
            .map(|m| (m, true))
            .chain(world.members.iter().map(|m| (m, false)));
        for (m, as_owner) in entries {
            let (user, grant) = resolve_grant(data, &m.login, m.company_id, m.projects.as_deref())
                .map_err(|e| e.message().to_string())?;
            // Catches a test that names the wrong company: owners are restricted through
            // `owner_projects`, everyone else joins through `members`.
            if (owner_of(m.company_id) == user) != as_owner {
                return Err(misplaced(m, as_owner));
            }
            access.set_grant(user, m.company_id, Some(grant));
        }
        for p in &world.private_records {
            let (resource, users) = resolve_private(data, &p.resource, p.id, &p.visible_to)
                .map_err(|e| e.message().to_string())?;
            access.set_private(resource, p.id, Some(users));
        }
        Ok(access)
    }

    /// Replaces what `user` may open in `company`; `None` takes the company away.
    pub fn set_grant(&mut self, user: u64, company: u64, grant: Option<Grant>) {
        let is_owner = owner_of(company) == user;
        match grant {
            // Back to the default, which needs no entry.
            Some(Grant::All) if is_owner => self.grants.remove(&(user, company)),
            None if !is_owner => self.grants.remove(&(user, company)),
            grant => self.grants.insert((user, company), grant),
        };
    }

    /// Makes a record private to `users`, or public again with `None`.
    pub fn set_private(&mut self, resource: Resource, id: u64, users: Option<BTreeSet<u64>>) {
        match users {
            Some(users) => self.private.insert((resource, id), users),
            None => self.private.remove(&(resource, id)),
        };
    }
}

fn misplaced(m: &Membership, as_owner: bool) -> String {
    if as_owner {
        format!(
            "owner_projects: {} does not own company {}; use members",
            m.login, m.company_id
        )
    } else {
        format!(
            "members: {} owns company {}; restrict an owner with owner_projects",
            m.login, m.company_id
        )
    }
}

/// Checks a login, one of the current companies and some of its projects (`None` = all)
/// and returns the user number and the grant they make.
pub fn resolve_grant(
    data: Data<'_>,
    login: &str,
    company: u64,
    projects: Option<&[u64]>,
) -> Result<(u64, Grant), AccessError> {
    let user = data.world.user_number(login).ok_or_else(|| {
        AccessError::Unknown(format!("login {login:?} is not a user of this world"))
    })?;
    if !data.exists(Resource::Companies, company) {
        return Err(AccessError::Unknown(format!("company {company} not found")));
    }
    let Some(projects) = projects else {
        return Ok((user, Grant::All));
    };
    for &project in projects {
        if Resource::Projects.company_of(project) != company
            || !data.exists(Resource::Projects, project)
        {
            return Err(AccessError::Unknown(format!(
                "project {project} is not a project of company {company}"
            )));
        }
    }
    Ok((user, Grant::Projects(projects.iter().copied().collect())))
}

/// Checks a record that is to be private and the logins allowed to see it.
pub fn resolve_private(
    data: Data<'_>,
    resource: &str,
    id: u64,
    visible_to: &[String],
) -> Result<(Resource, BTreeSet<u64>), AccessError> {
    let resource = data
        .world
        .resource_named(resource)
        .ok_or_else(|| AccessError::Invalid(format!("unknown resource {resource:?}")))?;
    if resource.parent() != Some(Resource::Projects) && resource != Resource::Vendors {
        return Err(AccessError::Invalid(format!(
            "{} cannot be private: who sees companies and projects is set by members",
            resource.name()
        )));
    }
    if !data.in_world(resource, id) {
        return Err(AccessError::Unknown(format!(
            "{} {id} not found",
            resource.name()
        )));
    }
    let users = visible_to
        .iter()
        .map(|login| {
            data.world.user_number(login).ok_or_else(|| {
                AccessError::Unknown(format!("login {login:?} is not a user of this world"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((resource, users))
}

/// Whether a login may open a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectAccess {
    /// No such project, or in a company the login cannot reach (Procore: 404).
    Missing,
    /// The login reaches the company but not this project (Procore: 403).
    Forbidden,
    Allowed,
}

/// The data as one login sees it: what its API listings return.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub data: Data<'a>,
    access: &'a Access,
    user: u64,
}

impl<'a> Viewer<'a> {
    pub fn new(data: Data<'a>, access: &'a Access, user: u64) -> Viewer<'a> {
        Viewer { data, access, user }
    }

    fn grant(&self, company: u64) -> Option<&'a Grant> {
        if !self.data.exists(Resource::Companies, company) {
            return None;
        }
        match self.access.grants.get(&(self.user, company)) {
            Some(grant) => grant.as_ref(),
            None => (owner_of(company) == self.user).then_some(&ALL),
        }
    }

    pub fn reaches_company(&self, company: u64) -> bool {
        self.grant(company).is_some()
    }

    pub fn project_access(&self, project: u64) -> ProjectAccess {
        if !self.data.exists(Resource::Projects, project) {
            return ProjectAccess::Missing;
        }
        match self.grant(Resource::Projects.company_of(project)) {
            None => ProjectAccess::Missing,
            Some(grant) if grant.allows(project) => ProjectAccess::Allowed,
            Some(_) => ProjectAccess::Forbidden,
        }
    }

    /// Only privacy: whether the record's scope is reachable is the caller's business.
    fn sees(&self, resource: Resource, id: u64) -> bool {
        self.access
            .private
            .get(&(resource, id))
            .is_none_or(|users| users.contains(&self.user))
    }

    /// Privacy of a nested record's containers: a drawing area private to others hides
    /// its drawings too, as deleting it would.
    fn sees_containers(&self, resource: Resource, id: u64) -> bool {
        if self.access.private.is_empty() {
            return true;
        }
        match (resource.container(), self.data.container_of(resource, id)) {
            (Some(container), Some(c)) => {
                self.sees(container, c) && self.sees_containers(container, c)
            }
            _ => true,
        }
    }

    /// The companies `GET /companies` lists: owned ones not taken away, then those the
    /// login is a member of, ascending.
    pub fn companies(&self) -> Vec<u64> {
        let mut companies: Vec<u64> = self
            .data
            .ids(Resource::Companies, self.user)
            .into_iter()
            .chain(
                self.access
                    .grants
                    .range((self.user, 0)..=(self.user, u64::MAX))
                    .map(|(&(_, company), _)| company),
            )
            .filter(|&company| self.reaches_company(company))
            .collect();
        companies.sort_unstable();
        companies.dedup();
        companies
    }

    /// Whether a list in `scope` returns `id` to this login (before filters and pages):
    /// exactly `ids(resource, scope).contains(&id)`, without building the list. A record
    /// of another scope, deleted, never made, or private to others is not listed.
    pub fn lists(&self, resource: Resource, scope: u64, id: u64) -> bool {
        match resource {
            Resource::Companies => self.reaches_company(id),
            Resource::Projects => {
                resource.company_of(id) == scope
                    && self.project_access(id) == ProjectAccess::Allowed
            }
            _ => {
                resource.split_id(id).0 == scope
                    && self.data.exists(resource, id)
                    && self.sees(resource, id)
                    && self.sees_containers(resource, id)
            }
        }
    }

    /// The records in a container that this login sees (the container itself is the
    /// caller's to check, with `lists`).
    pub fn children(&self, resource: Resource, container: u64) -> Vec<u64> {
        let mut ids = self.data.children(resource, container);
        if !self.access.private.is_empty() {
            ids.retain(|&id| self.sees(resource, id));
        }
        ids
    }

    /// The deleted records of a project tool in `scope` that this login would see were
    /// they not deleted: a recycle bin, or `filters[include_deleted]=only`.
    pub fn recycled(&self, resource: Resource, scope: u64) -> Vec<u64> {
        let mut ids = self.data.deleted_ids(resource, scope);
        if !self.access.private.is_empty() {
            ids.retain(|&id| self.sees(resource, id) && self.sees_containers(resource, id));
        }
        ids
    }

    /// Whether `recycled(resource, scope)` contains `id`, without building the list.
    pub fn lists_recycled(&self, resource: Resource, scope: u64, id: u64) -> bool {
        resource.split_id(id).0 == scope
            && self.data.is_deleted(resource, id)
            && self.data.in_world(resource, id)
            && self.sees(resource, id)
            && self.sees_containers(resource, id)
    }

    /// The ids a list in `scope` returns to this login (before filters and pages), for
    /// a scope it may open; `scope` is ignored for companies.
    pub fn ids(&self, resource: Resource, scope: u64) -> Vec<u64> {
        let mut ids = match resource {
            Resource::Companies => return self.companies(),
            _ => self.data.ids(resource, scope),
        };
        if resource == Resource::Projects {
            let grant = self.grant(scope);
            ids.retain(|&project| grant.is_some_and(|g| g.allows(project)));
        } else if !self.access.private.is_empty() {
            ids.retain(|&id| self.sees(resource, id) && self.sees_containers(resource, id));
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Mutation;
    use crate::world::PrivateRecord;

    fn world() -> World {
        World {
            users: 3,
            projects_per_company: 3,
            records_per_resource: 4,
            ..World::default()
        }
    }

    fn member(login: &str, company_id: u64, projects: Option<Vec<u64>>) -> Membership {
        Membership {
            login: login.to_string(),
            company_id,
            projects,
        }
    }

    #[test]
    fn without_exceptions_a_login_sees_exactly_what_it_owns() {
        let w = world();
        let o = Overrides::default();
        let a = Access::from_world(&w).unwrap();
        let v = Viewer::new(Data::new(&w, &o), &a, 2);
        assert_eq!(v.companies(), vec![2001]);
        assert_eq!(v.ids(Resource::Projects, 2001).len(), 3);
        assert_eq!(v.project_access(2_001_003), ProjectAccess::Allowed);
        assert_eq!(v.project_access(1_001_001), ProjectAccess::Missing);
        assert_eq!(v.project_access(2_001_004), ProjectAccess::Missing);
        assert!(!v.reaches_company(1001));
    }

    #[test]
    fn members_reach_shared_companies_but_only_their_projects() {
        let w = World {
            members: vec![
                member("user-2", 1001, Some(vec![1_001_002])),
                member("user-3", 1001, None),
            ],
            ..world()
        };
        let o = Overrides::default();
        let a = Access::from_world(&w).unwrap();
        let d = Data::new(&w, &o);
        let two = Viewer::new(d, &a, 2);
        assert_eq!(two.companies(), vec![1001, 2001]);
        assert_eq!(two.ids(Resource::Projects, 1001), vec![1_001_002]);
        assert_eq!(two.project_access(1_001_001), ProjectAccess::Forbidden);
        assert_eq!(two.project_access(1_001_002), ProjectAccess::Allowed);
        let three = Viewer::new(d, &a, 3);
        assert_eq!(three.ids(Resource::Projects, 1001).len(), 3);
        assert_eq!(Viewer::new(d, &a, 1).companies(), vec![1001]);
    }

    #[test]
    fn owners_can_be_restricted_and_cut_off() {
        let w = World {
            owner_projects: vec![member("user-1", 1001, Some(vec![1_001_003]))],
            ..world()
        };
        let o = Overrides::default();
        let mut a = Access::from_world(&w).unwrap();
        let d = Data::new(&w, &o);
        assert_eq!(
            Viewer::new(d, &a, 1).ids(Resource::Projects, 1001),
            vec![1_001_003]
        );
        a.set_grant(1, 1001, None);
        assert!(Viewer::new(d, &a, 1).companies().is_empty());
        a.set_grant(1, 1001, Some(Grant::All));
        assert_eq!(Viewer::new(d, &a, 1).companies(), vec![1001]);
    }

    #[test]
    fn private_records_are_listed_only_for_their_logins() {
        let rfi = Resource::Rfis.id(1_001_001, 3);
        let w = World {
            members: vec![member("user-2", 1001, None)],
            private_records: vec![PrivateRecord {
                resource: "rfis".to_string(),
                id: rfi,
                visible_to: vec!["user-2".to_string()],
            }],
            ..world()
        };
        let o = Overrides::default();
        let a = Access::from_world(&w).unwrap();
        let d = Data::new(&w, &o);
        assert!(!Viewer::new(d, &a, 1)
            .ids(Resource::Rfis, 1_001_001)
            .contains(&rfi));
        assert!(Viewer::new(d, &a, 2)
            .ids(Resource::Rfis, 1_001_001)
            .contains(&rfi));
    }

    #[test]
    fn lists_agrees_with_ids_for_every_record_and_scope() {
        let w = World {
            members: vec![member("user-2", 1001, Some(vec![1_001_002]))],
            owner_projects: vec![member("user-3", 3001, Some(vec![3_001_001]))],
            private_records: vec![
                PrivateRecord {
                    resource: "rfis".to_string(),
                    id: Resource::Rfis.id(1_001_002, 2),
                    visible_to: vec!["user-1".to_string()],
                },
                PrivateRecord {
                    resource: "vendors".to_string(),
                    id: Resource::Vendors.id(1001, 4),
                    visible_to: vec!["user-2".to_string()],
                },
            ],
            ..world()
        };
        let mut o = Overrides::default();
        let at = chrono::Utc::now();
        o.apply(
            &w,
            Resource::Rfis,
            Resource::Rfis.id(1_001_002, 3),
            Mutation::Delete,
            at,
        )
        .unwrap();
        o.apply(&w, Resource::Projects, 2_001_003, Mutation::Delete, at)
            .unwrap();
        let mut a = Access::from_world(&w).unwrap();
        a.set_grant(1, 1001, None);
        let d = Data::new(&w, &o);
        let companies = [0, 1001, 1002, 2001, 3001, 4001];
        let projects = [
            1_001_001, 1_001_002, 1_001_004, 2_001_001, 2_001_003, 3_001_002,
        ];
        for user in 1..=3 {
            let v = Viewer::new(d, &a, user);
            for resource in Resource::ALL {
                let scopes: &[u64] = match resource.parent() {
                    None => &[0],
                    Some(Resource::Companies) => &companies,
                    Some(_) => &projects,
                };
                for &scope in scopes {
                    let listed = v.ids(resource, scope);
                    let candidates: Vec<u64> = match resource {
                        Resource::Companies => companies.to_vec(),
                        _ => scopes
                            .iter()
                            .flat_map(|&s| (0..=6).map(move |i| resource.id(s, i)))
                            .collect(),
                    };
                    for id in candidates {
                        assert_eq!(
                            v.lists(resource, scope, id),
                            listed.contains(&id),
                            "user {user}, {resource:?} {id} in {scope}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_private_container_hides_what_is_inside_it() {
        let p = 1_001_001;
        let area = Resource::DrawingAreas.id(p, 1);
        let folder = Resource::Folders.id(p, 2);
        let w = World {
            members: vec![member("user-2", 1001, None)],
            private_records: vec![
                PrivateRecord {
                    resource: "drawing_areas".to_string(),
                    id: area,
                    visible_to: vec!["user-2".to_string()],
                },
                PrivateRecord {
                    resource: "folders".to_string(),
                    id: folder,
                    visible_to: vec![],
                },
            ],
            catalog: Some(crate::catalog::Catalog::DEFAULT),
            ..world()
        };
        let mut o = Overrides::default();
        let rfi = Resource::Rfis.id(p, 2);
        o.apply(
            &w,
            Resource::Rfis,
            rfi,
            Mutation::Delete,
            chrono::Utc::now(),
        )
        .unwrap();
        let a = Access::from_world(&w).unwrap();
        let d = Data::new(&w, &o);
        let (one, two) = (Viewer::new(d, &a, 1), Viewer::new(d, &a, 2));
        let drawing = Resource::Drawings.id(p, 1);
        assert!(!one.lists(Resource::Drawings, p, drawing));
        assert!(two.lists(Resource::Drawings, p, drawing));
        assert!(!one.ids(Resource::Drawings, p).contains(&drawing));
        // Files two levels below the folder nobody may see.
        let file = Resource::Files.id(p, 7);
        assert_eq!(
            d.container_of(Resource::Files, file),
            Some(Resource::Folders.id(p, 4))
        );
        assert!(!two.lists(Resource::Files, p, file));
        assert!(
            two.children(Resource::Folders, Resource::Folders.id(p, 1))
                .len()
                == 1
        );
        // Recycle bins list what the login would see, deleted.
        assert_eq!(one.recycled(Resource::Rfis, p), vec![rfi]);
        assert!(one.lists_recycled(Resource::Rfis, p, rfi));
        assert!(!one.lists_recycled(Resource::Rfis, p, Resource::Rfis.id(p, 1)));
        // lists agrees with ids for every catalog record of the project.
        for v in [one, two] {
            for resource in Resource::CATALOG {
                let listed = v.ids(resource, p);
                for i in 0..=30 {
                    let id = resource.id(p, i);
                    assert_eq!(
                        v.lists(resource, p, id),
                        listed.contains(&id),
                        "{resource:?} {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn worlds_naming_nothing_real_are_refused() {
        let bad = |w: World| Access::from_world(&w).unwrap_err();
        bad(World {
            members: vec![member("user-9", 1001, None)],
            ..world()
        });
        bad(World {
            members: vec![member("user-2", 1002, None)],
            ..world()
        });
        bad(World {
            members: vec![member("user-2", 1001, Some(vec![2_001_001]))],
            ..world()
        });
        assert!(bad(World {
            members: vec![member("user-1", 1001, None)],
            ..world()
        })
        .contains("owner_projects"));
        assert!(bad(World {
            owner_projects: vec![member("user-2", 1001, None)],
            ..world()
        })
        .contains("members"));
        let private = |resource: &str, id: u64, login: &str| World {
            private_records: vec![PrivateRecord {
                resource: resource.to_string(),
                id,
                visible_to: vec![login.to_string()],
            }],
            ..world()
        };
        bad(private("rfis", Resource::Rfis.id(1_001_001, 5), "user-1"));
        bad(private("projects", 1_001_001, "user-1"));
        bad(private("rfis", Resource::Rfis.id(1_001_001, 1), "user-7"));
        assert!(
            Access::from_world(&private("vendors", Resource::Vendors.id(1001, 1), "user-1"))
                .is_ok()
        );
    }
}
