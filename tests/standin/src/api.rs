//! The Procore REST routes: which resource a path names (a list, or one record of it
//! through the detail route, the list's path with `/{id}` appended), access and
//! company-header checks, `updated_at` filtering and pagination; with the world's
//! catalog also nested lists (drawings of an area, replies to an RFI, folder trees),
//! daily logs by date, recycle bins and `filters[include_deleted]`.

use chrono::NaiveDate;
use serde_json::Value;

use crate::access::{ProjectAccess, Viewer};
use crate::catalog::parse_date;
use crate::clock::iso;
use crate::filters::{parse_updated_at, UPDATED_AT};
use crate::http::{param, Response};
use crate::pagination::{link_header, page_bounds, parse_page_request};
use crate::records::Data;
use crate::state::ServedKey;
use crate::world::{Resource, World};

pub const INCLUDE_DELETED: &str = "filters[include_deleted]";

/// What a list request is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The signed-in user's companies.
    User,
    Company(u64),
    Project(u64),
    /// A list inside one record of a project (catalog): the drawings of a drawing area,
    /// the replies to an RFI.
    Within {
        project: u64,
        container: u64,
    },
    /// A project's recycle bin for the resource (catalog): its deleted records.
    RecycleBin(u64),
}

impl Scope {
    fn project(self) -> Option<u64> {
        match self {
            Scope::Project(p) | Scope::RecycleBin(p) | Scope::Within { project: p, .. } => Some(p),
            Scope::User | Scope::Company(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRoute {
    pub resource: Resource,
    pub scope: Scope,
    /// The record a detail ("show") route names; `None` for the list.
    pub record: Option<u64>,
}

impl ApiRoute {
    /// The company the request concerns, for the log: the scope's, or for one company's
    /// detail that company.
    pub fn company_id(&self) -> Option<u64> {
        match self.scope {
            Scope::User => self.record,
            Scope::Company(c) => Some(c),
            scope => scope.project().map(|p| Resource::Projects.company_of(p)),
        }
    }

    pub fn project_id(&self) -> Option<u64> {
        self.scope.project()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// Known when the path names a resource but something else is wrong.
    pub resource: Option<Resource>,
    pub response_status: u16,
    pub message: String,
}

impl RouteError {
    fn new(resource: Option<Resource>, status: u16, message: impl Into<String>) -> RouteError {
        RouteError {
            resource,
            response_status: status,
            message: message.into(),
        }
    }

    pub fn response(&self) -> Response {
        Response::errors(self.response_status, &self.message)
    }
}

/// Maps a `/rest/...` request to a resource and scope (paths as Procore documents them),
/// and for a detail route the record's id, for a world without the catalog. (The server
/// routes with `route_with`, which knows the world.)
#[cfg(test)]
pub fn route(method: &str, path: &str, pairs: &[(String, String)]) -> Result<ApiRoute, RouteError> {
    route_with(method, path, pairs, false)
}

/// `route` for a world with or without the catalog. Without it the catalog's paths are
/// unknown and every path reads exactly as it did before the catalog existed.
pub fn route_with(
    method: &str,
    path: &str,
    pairs: &[(String, String)],
    catalog: bool,
) -> Result<ApiRoute, RouteError> {
    let segments: Vec<&str> = path
        .trim_start_matches("/rest/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let from_query = |resource: Resource, name: &str| -> Result<u64, RouteError> {
        let value = param(pairs, name)
            .ok_or_else(|| RouteError::new(Some(resource), 400, format!("{name} is required")))?;
        value.parse().map_err(|_| {
            RouteError::new(
                Some(resource),
                400,
                format!("{name} must be an integer, got {value:?}"),
            )
        })
    };
    let from_path = |resource: Resource, value: &str, what: &str| -> Result<u64, RouteError> {
        value
            .parse()
            .map_err(|_| RouteError::new(Some(resource), 404, format!("{what} not found")))
    };
    // The list paths; a detail path is one of them plus the record's id. With the
    // catalog a whole path that is a list wins over reading its last segment as an id
    // (`.../rfis/recycle_bin` is the RFIs' recycle bin, not the RFI "recycle_bin").
    let whole = list_route(&segments, catalog).filter(|r| r.list);
    let detail = segments.split_last().and_then(|(last, list)| {
        list_route(list, catalog)
            .filter(|r| r.detail)
            .map(|r| (r, list, *last))
    });
    let (found, list, record) = match (whole, detail) {
        (Some(found), _) if catalog => (found, segments.as_slice(), None),
        (_, Some((found, list, last))) => (found, list, Some(last)),
        (Some(found), None) => (found, segments.as_slice(), None),
        (None, None) => {
            return Err(RouteError::new(
                None,
                404,
                format!("No route matches {path}"),
            ))
        }
    };
    let resource = found.resource;
    let scope = match found.scoped {
        Scoped::User => Ok(Scope::User),
        Scoped::CompanyQuery => from_query(resource, "company_id").map(Scope::Company),
        Scoped::ProjectQuery => from_query(resource, "project_id").map(Scope::Project),
        Scoped::ProjectPath => from_path(resource, list[2], "Project").map(Scope::Project),
        Scoped::RecycleBinPath => from_path(resource, list[2], "Project").map(Scope::RecycleBin),
        Scoped::RecycleBinQuery => from_query(resource, "project_id").map(Scope::RecycleBin),
        Scoped::Within {
            container_at,
            project_at,
        } => {
            let kind = resource.container().unwrap_or(resource);
            from_path(resource, list[container_at], kind.name()).and_then(|container| {
                let project = match (project_at, param(pairs, "project_id")) {
                    (Some(at), _) => from_path(resource, list[at], "Project")?,
                    (None, Some(_)) => from_query(resource, "project_id")?,
                    // Procore's drawings list takes `project_id` as optional.
                    (None, None) => kind.project_of(container).unwrap_or(0),
                };
                Ok(Scope::Within { project, container })
            })
        }
    };
    if method != "GET" {
        return Err(RouteError::new(
            Some(resource),
            405,
            format!("{method} is not supported on {path}"),
        ));
    }
    // A detail path whose last segment is no id names no route: 404 before the scope.
    let record = match record {
        Some(id) => Some(id.parse().map_err(|_| {
            RouteError::new(
                Some(resource),
                404,
                format!("{} {id:?} not found", resource.name()),
            )
        })?),
        None => None,
    };
    let scope = scope?;
    Ok(ApiRoute {
        resource,
        scope,
        record,
    })
}

/// Where a list route takes its scope from.
#[derive(Clone, Copy)]
enum Scoped {
    /// Companies: the signed-in user.
    User,
    /// `?company_id=`.
    CompanyQuery,
    /// `?project_id=`.
    ProjectQuery,
    /// `/projects/{project_id}/...`.
    ProjectPath,
    /// A record's list: the container's id at `container_at`, the project's at
    /// `project_at` or (`None`) in the optional `?project_id=`.
    Within {
        container_at: usize,
        project_at: Option<usize>,
    },
    /// A recycle bin under `/projects/{project_id}/...`.
    RecycleBinPath,
    /// A recycle bin with `?project_id=`.
    RecycleBinQuery,
}

/// A list path: the resource, its scope, and whether the path itself answers (`list`)
/// and whether it takes `/{id}` (`detail`).
#[derive(Clone, Copy)]
struct ListRoute {
    resource: Resource,
    scoped: Scoped,
    list: bool,
    detail: bool,
}

/// The resource a list path (its segments after `/rest/`) names; the catalog's paths
/// only when `catalog`.
fn list_route(segments: &[&str], catalog: bool) -> Option<ListRoute> {
    let both = |resource, scoped| ListRoute {
        resource,
        scoped,
        list: true,
        detail: true,
    };
    Some(match segments {
        ["v1.0", "companies"] => both(Resource::Companies, Scoped::User),
        ["v1.0", "projects"] => both(Resource::Projects, Scoped::CompanyQuery),
        ["v1.0", "vendors"] => both(Resource::Vendors, Scoped::CompanyQuery),
        ["v1.0", "projects", _, "users"] => both(Resource::ProjectUsers, Scoped::ProjectPath),
        ["v1.0", "projects", _, "rfis"] => both(Resource::Rfis, Scoped::ProjectPath),
        ["v1.1", "projects", _, "submittals"] => both(Resource::Submittals, Scoped::ProjectPath),
        ["v1.1", "punch_items"] => both(Resource::PunchItems, Scoped::ProjectQuery),
        ["v1.0", "observations", "items"] => both(Resource::Observations, Scoped::ProjectQuery),
        ["v1.0", "change_events"] => both(Resource::ChangeEvents, Scoped::ProjectQuery),
        _ if catalog => return catalog_route(segments),
        _ => return None,
    })
}

/// The catalog's paths (Procore's public REST reference; see API.md).
fn catalog_route(segments: &[&str]) -> Option<ListRoute> {
    let both = |resource, scoped| ListRoute {
        resource,
        scoped,
        list: true,
        detail: true,
    };
    let list_only = |resource, scoped| ListRoute {
        detail: false,
        ..both(resource, scoped)
    };
    Some(match segments {
        ["v1.1", "projects", _, "drawing_areas"] => {
            both(Resource::DrawingAreas, Scoped::ProjectPath)
        }
        ["v1.1", "drawing_areas", _, "drawings"] => both(
            Resource::Drawings,
            Scoped::Within {
                container_at: 2,
                project_at: None,
            },
        ),
        // The list answers the root folder; `/{id}` any folder, with its children.
        ["v1.0", "folders"] => both(Resource::Folders, Scoped::ProjectQuery),
        // Files are listed in their folders; only `/files/{id}` answers.
        ["v1.0", "files"] => ListRoute {
            list: false,
            ..both(Resource::Files, Scoped::ProjectQuery)
        },
        ["v1.0", "projects", _, "rfis", _, "replies"] => both(
            Resource::RfiReplies,
            Scoped::Within {
                container_at: 4,
                project_at: Some(2),
            },
        ),
        ["v1.0", "projects", _, "manpower_logs"] => {
            both(Resource::ManpowerLogs, Scoped::ProjectPath)
        }
        ["v1.0", "projects", _, "notes_logs"] => both(Resource::NotesLogs, Scoped::ProjectPath),
        ["v1.0", "projects", _, "weather_logs"] => both(Resource::WeatherLogs, Scoped::ProjectPath),
        ["v1.0", "work_order_contracts"] => {
            both(Resource::WorkOrderContracts, Scoped::ProjectQuery)
        }
        ["v1.0", "purchase_order_contracts"] => {
            both(Resource::PurchaseOrderContracts, Scoped::ProjectQuery)
        }
        ["v1.0", "change_order_packages"] => {
            both(Resource::ChangeOrderPackages, Scoped::ProjectQuery)
        }
        ["v1.0", "meetings"] => both(Resource::Meetings, Scoped::ProjectQuery),
        ["v1.0", "checklist", "lists"] => both(Resource::Inspections, Scoped::ProjectQuery),
        // Recycle bins: Procore documents a detail route for observations' only.
        ["v1.0", "projects", _, "rfis", "recycle_bin"] => {
            list_only(Resource::Rfis, Scoped::RecycleBinPath)
        }
        ["v1.1", "projects", _, "submittals", "recycle_bin"] => {
            list_only(Resource::Submittals, Scoped::RecycleBinPath)
        }
        ["v1.1", "punch_items", "recycle_bin"] => {
            list_only(Resource::PunchItems, Scoped::RecycleBinQuery)
        }
        ["v1.0", "projects", _, "recycle_bin", "observations", "items"] => {
            both(Resource::Observations, Scoped::RecycleBinPath)
        }
        _ => return None,
    })
}

/// The request details a list or a record needs besides its route.
pub struct ListRequest<'a> {
    pub company_header: Option<&'a str>,
    pub pairs: &'a [(String, String)],
    pub raw_query: &'a str,
    /// `scheme://host/path`, the base of the `Link` URLs.
    pub base_url: String,
}

/// Answers a list or detail request as the authenticated login sees the data; returns
/// the records served.
pub fn answer(
    view: Viewer<'_>,
    route: ApiRoute,
    req: &ListRequest<'_>,
) -> (Response, Vec<ServedKey>) {
    let answer = match (route.resource, route.record) {
        (Resource::Folders, record) => folder(view, route, record, req),
        (_, Some(id)) => show(view, route, id, req),
        (_, None) => list(view, route, req),
    };
    match answer {
        Ok(answer) => answer,
        Err(error) => (error.response(), Vec::new()),
    }
}

/// Checks that the login may open the route's scope (404 for what it cannot reach, 403
/// for a wrong `Procore-Company-Id` or a project it may not open); returns the scope id
/// the viewer's lists take (0 for companies, whose list ignores it).
fn open_scope(view: Viewer<'_>, route: ApiRoute, req: &ListRequest<'_>) -> Result<u64, RouteError> {
    let fail = |status, message: String| RouteError::new(Some(route.resource), status, message);
    match route.scope {
        // Companies ignore the scope: the viewer knows whose they are.
        Scope::User => Ok(0),
        Scope::Company(company) => {
            if !view.reaches_company(company) {
                return Err(fail(404, format!("Company {company} not found")));
            }
            check_company_header(req.company_header, company).map_err(|m| fail(403, m))?;
            Ok(company)
        }
        Scope::Project(project) | Scope::RecycleBin(project) => {
            open_project(view, route.resource, project, req)
        }
        Scope::Within { project, container } => {
            open_project(view, route.resource, project, req)?;
            // The container must be one this login's list of it shows: never made,
            // deleted (or inside something deleted), private to others or another
            // project's → 404, as Procore answers for a deleted parent.
            let kind = route.resource.container().unwrap_or(route.resource);
            if kind.project_of(container) != Some(project) || !view.lists(kind, project, container)
            {
                return Err(fail(404, format!("{} {container} not found", kind.name())));
            }
            Ok(project)
        }
    }
}

fn open_project(
    view: Viewer<'_>,
    resource: Resource,
    project: u64,
    req: &ListRequest<'_>,
) -> Result<u64, RouteError> {
    let fail = |status, message: String| RouteError::new(Some(resource), status, message);
    let access = view.project_access(project);
    if access == ProjectAccess::Missing {
        return Err(fail(404, format!("Project {project} not found")));
    }
    check_company_header(req.company_header, Resource::Projects.company_of(project))
        .map_err(|m| fail(403, m))?;
    if access == ProjectAccess::Forbidden {
        return Err(fail(
            403,
            format!("You do not have permission to access project {project}"),
        ));
    }
    Ok(project)
}

/// A record as lists show it: deleted ones (recycle bins, `filters[include_deleted]`)
/// also carry `deleted_at`.
fn listed_record(data: Data<'_>, resource: Resource, id: u64) -> Value {
    let mut record = data.record(resource, id);
    if let (Some(at), Value::Object(map)) = (data.deleted_at(resource, id), &mut record) {
        map.insert("deleted_at".to_string(), Value::String(iso(at)));
    }
    record
}

/// One record, exactly as the scope's list would show it, when that list would show it
/// to this login; otherwise 404 (deleted, another scope's, never made, private to
/// others). The list's other parameters (pages, filters) do not apply and are ignored.
fn show(
    view: Viewer<'_>,
    route: ApiRoute,
    id: u64,
    req: &ListRequest<'_>,
) -> Result<(Response, Vec<ServedKey>), RouteError> {
    let resource = route.resource;
    let scope_id = open_scope(view, route, req)?;
    let listed = match route.scope {
        Scope::RecycleBin(_) => view.lists_recycled(resource, scope_id, id),
        Scope::Within { container, .. } => {
            view.lists(resource, scope_id, id)
                && view.data.container_of(resource, id) == Some(container)
        }
        _ => view.lists(resource, scope_id, id),
    };
    if !listed {
        return Err(RouteError::new(
            Some(resource),
            404,
            format!("{} {id} not found", resource.name()),
        ));
    }
    let record = listed_record(view.data, resource, id);
    Ok((
        Response::json(200, &record),
        vec![(resource, resource.company_of(id), id)],
    ))
}

fn list(
    view: Viewer<'_>,
    route: ApiRoute,
    req: &ListRequest<'_>,
) -> Result<(Response, Vec<ServedKey>), RouteError> {
    let data = view.data;
    let resource = route.resource;
    let fail = |status, message: String| RouteError::new(Some(resource), status, message);
    let scope_id = open_scope(view, route, req)?;

    let window = match param(req.pairs, UPDATED_AT) {
        Some(value) if resource.filters_by_updated_at() => {
            Some(parse_updated_at(value).map_err(|m| fail(400, m))?)
        }
        // Endpoints without the filter ignore it, as Procore's do.
        _ => None,
    };
    let deleted = include_deleted(data.world, resource, req.pairs).map_err(|m| fail(400, m))?;
    let dates = match resource.is_dated() {
        true => Some(log_window(data.world, req.pairs).map_err(|m| fail(400, m))?),
        false => None,
    };
    let listed = match route.scope {
        Scope::RecycleBin(_) => view.recycled(resource, scope_id),
        Scope::Within { container, .. } => view.children(resource, container),
        _ => match deleted {
            Deleted::Without => view.ids(resource, scope_id),
            Deleted::Only => view.recycled(resource, scope_id),
            Deleted::With => {
                let mut ids = view.ids(resource, scope_id);
                ids.extend(view.recycled(resource, scope_id));
                ids.sort_unstable();
                ids
            }
        },
    };
    let ids: Vec<u64> = listed
        .into_iter()
        .filter(|id| window.is_none_or(|w| w.contains(data.updated_at(resource, *id))))
        .filter(|id| {
            dates.is_none_or(|(from, to)| {
                data.log_date(resource, *id)
                    .is_some_and(|d| from <= d && d <= to)
            })
        })
        .collect();

    let served_key = |id: u64| (resource, resource.company_of(id), id);
    if route.scope == Scope::User {
        // Procore returns the whole company list without pagination headers.
        let records: Vec<Value> = ids
            .iter()
            .map(|id| listed_record(data, resource, *id))
            .collect();
        let served = ids.iter().map(|id| served_key(*id)).collect();
        return Ok((Response::json(200, &Value::Array(records)), served));
    }

    let page_request =
        parse_page_request(req.pairs, data.world.per_page_default).map_err(|m| fail(400, m))?;
    let page = page_bounds(ids.len(), page_request);
    let page_ids = &ids[page.start..page.end];
    let records: Vec<Value> = page_ids
        .iter()
        .map(|id| listed_record(data, resource, *id))
        .collect();
    let response = Response::json(200, &Value::Array(records))
        .with_header("Total", ids.len().to_string())
        .with_header("Per-Page", page_request.per_page.to_string())
        .with_header(
            "Link",
            link_header(&req.base_url, req.raw_query, page_request, page.last_page),
        );
    Ok((
        response,
        page_ids.iter().map(|id| served_key(*id)).collect(),
    ))
}

/// One folder with its subfolders and files (`GET /folders` answers the project's root
/// folder, `GET /folders/{id}` any folder), whole, without pagination, as Procore's
/// "folders and files" endpoints do. `exclude_folders=true` / `exclude_files=true` leave
/// that list empty.
fn folder(
    view: Viewer<'_>,
    route: ApiRoute,
    record: Option<u64>,
    req: &ListRequest<'_>,
) -> Result<(Response, Vec<ServedKey>), RouteError> {
    let folders = Resource::Folders;
    let project = open_scope(view, route, req)?;
    let id = record.unwrap_or_else(|| folders.id(project, 1));
    if !view.lists(folders, project, id) {
        return Err(RouteError::new(
            Some(folders),
            404,
            format!("folders {id} not found"),
        ));
    }
    let data = view.data;
    let mut body = data.record(folders, id);
    let mut served = vec![(folders, folders.company_of(id), id)];
    for (key, resource, exclude) in [
        ("folders", folders, "exclude_folders"),
        ("files", Resource::Files, "exclude_files"),
    ] {
        let children = match param(req.pairs, exclude) {
            Some("true") => Vec::new(),
            _ => view.children(resource, id),
        };
        served.extend(
            children
                .iter()
                .map(|c| (resource, resource.company_of(*c), *c)),
        );
        if let Value::Object(map) = &mut body {
            let entries = children.iter().map(|c| data.record(resource, *c)).collect();
            map.insert(key.to_string(), Value::Array(entries));
        }
    }
    Ok((Response::json(200, &body), served))
}

/// What `filters[include_deleted]` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deleted {
    /// Absent: live records only, as every list.
    Without,
    /// `only`: the deleted records only (with `deleted_at`).
    Only,
    /// `with`: both, by id.
    With,
}

/// `filters[include_deleted]`, on the lists Procore documents it for, in a world with
/// the catalog; everywhere else it is ignored, as it always was.
fn include_deleted(
    world: &World,
    resource: Resource,
    pairs: &[(String, String)],
) -> Result<Deleted, String> {
    if !(world.has_catalog() && resource.takes_include_deleted()) {
        return Ok(Deleted::Without);
    }
    match param(pairs, INCLUDE_DELETED) {
        None => Ok(Deleted::Without),
        Some("only") => Ok(Deleted::Only),
        Some("with") => Ok(Deleted::With),
        Some(other) => Err(format!(
            "{INCLUDE_DELETED} must be \"only\" or \"with\", got {other:?}"
        )),
    }
}

/// The dates a daily-log list answers for: `log_date`, or `start_date` with `end_date`
/// (inclusive), or, with neither, only today (`catalog.today`, else the clock's UTC
/// date), as Procore's daily logs do.
fn log_window(world: &World, pairs: &[(String, String)]) -> Result<(NaiveDate, NaiveDate), String> {
    let date = |name: &str| {
        param(pairs, name)
            .map(|v| parse_date(v).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    match (date("log_date")?, date("start_date")?, date("end_date")?) {
        (None, None, None) => {
            let today =
                crate::clock::today(world.catalog.as_ref().and_then(|c| c.today.as_deref()));
            Ok((today, today))
        }
        (Some(day), None, None) => Ok((day, day)),
        (None, Some(from), Some(to)) if from <= to => Ok((from, to)),
        (None, Some(_), Some(_)) => Err("start_date must not be after end_date".to_string()),
        _ => Err("give log_date, or start_date together with end_date".to_string()),
    }
}

pub(crate) fn check_company_header(header: Option<&str>, company: u64) -> Result<(), String> {
    match header {
        None => Err("The Procore-Company-Id header is required".to_string()),
        Some(value) if value.trim().parse::<u64>() == Ok(company) => Ok(()),
        Some(value) => Err(format!(
            "Procore-Company-Id {value:?} does not own this resource"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Access;
    use crate::http::parse_form;
    use crate::records::{Data, Overrides};
    use crate::world::World;

    fn routed(method: &str, target: &str) -> Result<ApiRoute, RouteError> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        route(method, path, &parse_form(query))
    }

    #[test]
    fn routes_every_documented_path() {
        let cases = [
            ("/rest/v1.0/companies", Resource::Companies, Scope::User),
            (
                "/rest/v1.0/projects?company_id=1001",
                Resource::Projects,
                Scope::Company(1001),
            ),
            (
                "/rest/v1.0/vendors?company_id=1001",
                Resource::Vendors,
                Scope::Company(1001),
            ),
            (
                "/rest/v1.0/projects/7/users",
                Resource::ProjectUsers,
                Scope::Project(7),
            ),
            (
                "/rest/v1.0/projects/7/rfis",
                Resource::Rfis,
                Scope::Project(7),
            ),
            (
                "/rest/v1.1/projects/7/submittals",
                Resource::Submittals,
                Scope::Project(7),
            ),
            (
                "/rest/v1.1/punch_items?project_id=7",
                Resource::PunchItems,
                Scope::Project(7),
            ),
            (
                "/rest/v1.0/observations/items?project_id=7",
                Resource::Observations,
                Scope::Project(7),
            ),
            (
                "/rest/v1.0/change_events?project_id=7",
                Resource::ChangeEvents,
                Scope::Project(7),
            ),
        ];
        for (target, resource, scope) in cases {
            assert_eq!(
                routed("GET", target),
                Ok(ApiRoute {
                    resource,
                    scope,
                    record: None
                }),
                "{target}"
            );
        }
    }

    #[test]
    fn route_errors_keep_the_resource_for_accounting() {
        let e = routed("GET", "/rest/v1.0/projects").unwrap_err();
        assert_eq!(
            (e.resource, e.response_status),
            (Some(Resource::Projects), 400)
        );
        let e = routed("GET", "/rest/v1.1/punch_items?project_id=abc").unwrap_err();
        assert_eq!(e.response_status, 400);
        let e = routed("GET", "/rest/v1.0/projects/abc/rfis").unwrap_err();
        assert_eq!((e.resource, e.response_status), (Some(Resource::Rfis), 404));
        assert_eq!(
            routed("GET", "/rest/v1.0/rfis")
                .unwrap_err()
                .response_status,
            404
        );
        assert_eq!(
            routed("GET", "/rest/v1.1/projects/7/rfis")
                .unwrap_err()
                .resource,
            None
        );
        assert_eq!(
            routed("POST", "/rest/v1.0/companies")
                .unwrap_err()
                .response_status,
            405
        );
    }

    #[test]
    fn routes_every_detail_path() {
        let cases = [
            (
                "/rest/v1.0/companies/1001",
                Resource::Companies,
                Scope::User,
            ),
            (
                "/rest/v1.0/projects/42?company_id=1001",
                Resource::Projects,
                Scope::Company(1001),
            ),
            (
                "/rest/v1.0/vendors/42?company_id=1001",
                Resource::Vendors,
                Scope::Company(1001),
            ),
            (
                "/rest/v1.0/projects/7/users/42",
                Resource::ProjectUsers,
                Scope::Project(7),
            ),
            (
                "/rest/v1.0/projects/7/rfis/42/",
                Resource::Rfis,
                Scope::Project(7),
            ),
            (
                "/rest/v1.1/projects/7/submittals/42",
                Resource::Submittals,
                Scope::Project(7),
            ),
            (
                "/rest/v1.1/punch_items/42?project_id=7",
                Resource::PunchItems,
                Scope::Project(7),
            ),
            (
                "/rest/v1.0/observations/items/42?project_id=7",
                Resource::Observations,
                Scope::Project(7),
            ),
            (
                "/rest/v1.0/change_events/42?project_id=7",
                Resource::ChangeEvents,
                Scope::Project(7),
            ),
        ];
        for (target, resource, scope) in cases {
            let record = if resource == Resource::Companies {
                1001
            } else {
                42
            };
            assert_eq!(
                routed("GET", target),
                Ok(ApiRoute {
                    resource,
                    scope,
                    record: Some(record)
                }),
                "{target}"
            );
        }
        let company = routed("GET", "/rest/v1.0/companies/1001").unwrap();
        assert_eq!(
            (company.company_id(), company.project_id()),
            (Some(1001), None)
        );
        let rfi = routed("GET", "/rest/v1.0/projects/7/rfis/42").unwrap();
        assert_eq!(rfi.project_id(), Some(7));

        let status = |method, target| {
            let e = routed(method, target).unwrap_err();
            (e.resource, e.response_status)
        };
        let rfis = Some(Resource::Rfis);
        assert_eq!(status("GET", "/rest/v1.0/projects/7/rfis/x"), (rfis, 404));
        assert_eq!(status("GET", "/rest/v1.0/projects/x/rfis/42"), (rfis, 404));
        assert_eq!(status("POST", "/rest/v1.0/projects/7/rfis/42"), (rfis, 405));
        assert_eq!(
            status("GET", "/rest/v1.0/projects/7/rfis/42/x"),
            (None, 404)
        );
        let punch = Some(Resource::PunchItems);
        assert_eq!(status("GET", "/rest/v1.1/punch_items/42"), (punch, 400));
        assert_eq!(
            status("GET", "/rest/v1.1/punch_items/x?project_id=7"),
            (punch, 404)
        );
        assert_eq!(
            status("GET", "/rest/v1.0/projects/users"),
            (Some(Resource::Projects), 404),
            "no id, no route, whatever the query"
        );
    }

    #[test]
    fn routes_the_catalog_only_in_a_world_that_has_one() {
        let routed_with = |target: &str, catalog| {
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            route_with("GET", path, &parse_form(query), catalog)
        };
        let within = |project, container| Scope::Within { project, container };
        let cases = [
            (
                "/rest/v1.1/projects/7/drawing_areas",
                Resource::DrawingAreas,
                Scope::Project(7),
                None,
            ),
            (
                "/rest/v1.1/projects/7/drawing_areas/42",
                Resource::DrawingAreas,
                Scope::Project(7),
                Some(42),
            ),
            (
                "/rest/v1.1/drawing_areas/700005/drawings?project_id=7",
                Resource::Drawings,
                within(7, 700_005),
                None,
            ),
            (
                "/rest/v1.1/drawing_areas/700005/drawings",
                Resource::Drawings,
                within(7, 700_005),
                None,
            ),
            (
                "/rest/v1.1/drawing_areas/700005/drawings/42?project_id=8",
                Resource::Drawings,
                within(8, 700_005),
                Some(42),
            ),
            (
                "/rest/v1.0/folders?project_id=7",
                Resource::Folders,
                Scope::Project(7),
                None,
            ),
            (
                "/rest/v1.0/folders/42?project_id=7",
                Resource::Folders,
                Scope::Project(7),
                Some(42),
            ),
            (
                "/rest/v1.0/files/42?project_id=7",
                Resource::Files,
                Scope::Project(7),
                Some(42),
            ),
            (
                "/rest/v1.0/projects/7/rfis/700002/replies",
                Resource::RfiReplies,
                within(7, 700_002),
                None,
            ),
            (
                "/rest/v1.0/projects/7/rfis/700002/replies/42",
                Resource::RfiReplies,
                within(7, 700_002),
                Some(42),
            ),
            (
                "/rest/v1.0/projects/7/manpower_logs?log_date=2026-01-01",
                Resource::ManpowerLogs,
                Scope::Project(7),
                None,
            ),
            (
                "/rest/v1.0/projects/7/notes_logs/42",
                Resource::NotesLogs,
                Scope::Project(7),
                Some(42),
            ),
            (
                "/rest/v1.0/projects/7/weather_logs",
                Resource::WeatherLogs,
                Scope::Project(7),
                None,
            ),
            (
                "/rest/v1.0/work_order_contracts?project_id=7",
                Resource::WorkOrderContracts,
                Scope::Project(7),
                None,
            ),
            (
                "/rest/v1.0/purchase_order_contracts/42?project_id=7",
                Resource::PurchaseOrderContracts,
                Scope::Project(7),
                Some(42),
            ),
            (
                "/rest/v1.0/change_order_packages?project_id=7",
                Resource::ChangeOrderPackages,
                Scope::Project(7),
                None,
            ),
            (
                "/rest/v1.0/meetings?project_id=7",
                Resource::Meetings,
                Scope::Project(7),
                None,
            ),
            (
                "/rest/v1.0/checklist/lists/42?project_id=7",
                Resource::Inspections,
                Scope::Project(7),
                Some(42),
            ),
            (
                "/rest/v1.0/projects/7/rfis/recycle_bin",
                Resource::Rfis,
                Scope::RecycleBin(7),
                None,
            ),
            (
                "/rest/v1.1/projects/7/submittals/recycle_bin",
                Resource::Submittals,
                Scope::RecycleBin(7),
                None,
            ),
            (
                "/rest/v1.1/punch_items/recycle_bin?project_id=7",
                Resource::PunchItems,
                Scope::RecycleBin(7),
                None,
            ),
            (
                "/rest/v1.0/projects/7/recycle_bin/observations/items",
                Resource::Observations,
                Scope::RecycleBin(7),
                None,
            ),
            (
                "/rest/v1.0/projects/7/recycle_bin/observations/items/42",
                Resource::Observations,
                Scope::RecycleBin(7),
                Some(42),
            ),
        ];
        for (target, resource, scope, record) in cases {
            let expected = ApiRoute {
                resource,
                scope,
                record,
            };
            assert_eq!(routed_with(target, true), Ok(expected), "{target}");
            let before = routed_with(target, false);
            assert_eq!(
                before,
                routed("GET", target),
                "{target}: route is the world without"
            );
            assert!(
                before
                    .as_ref()
                    .map_or(true, |r| r.resource != resource || r.scope != scope),
                "{target} is the catalog's only"
            );
        }
        // The core routes read the same either way.
        for target in [
            "/rest/v1.0/projects/7/rfis/42",
            "/rest/v1.1/punch_items/42?project_id=7",
            "/rest/v1.0/projects/users",
            "/rest/v1.0/projects/7/rfis/42/x",
        ] {
            assert_eq!(routed_with(target, true), routed("GET", target), "{target}");
        }
        let status = |target, catalog| {
            let e = routed_with(target, catalog).unwrap_err();
            (e.resource, e.response_status)
        };
        assert_eq!(
            status("/rest/v1.0/projects/7/rfis/recycle_bin", false),
            (Some(Resource::Rfis), 404),
            "without a catalog: the RFI \"recycle_bin\", as before"
        );
        assert_eq!(status("/rest/v1.0/files?project_id=7", true), (None, 404));
        assert_eq!(
            status("/rest/v1.0/projects/7/rfis/recycle_bin/42", true),
            (None, 404)
        );
        assert_eq!(
            status("/rest/v1.1/drawing_areas/x/drawings?project_id=7", true),
            (Some(Resource::Drawings), 404)
        );
        assert_eq!(
            status(
                "/rest/v1.1/drawing_areas/700005/drawings?project_id=x",
                true
            ),
            (Some(Resource::Drawings), 400)
        );
        assert_eq!(
            status("/rest/v1.0/meetings", true),
            (Some(Resource::Meetings), 400)
        );
        let drawings = routed_with("/rest/v1.1/drawing_areas/700005/drawings", true).unwrap();
        assert_eq!(
            (drawings.company_id(), drawings.project_id()),
            (Some(0), Some(7))
        );
    }

    fn list_request<'a>(pairs: &'a [(String, String)], header: Option<&'a str>) -> ListRequest<'a> {
        ListRequest {
            company_header: header,
            pairs,
            raw_query: "",
            base_url: "http://h/x".to_string(),
        }
    }

    #[test]
    fn lists_check_ownership_header_filters_and_pages() {
        let world = World {
            users: 2,
            records_per_resource: 30,
            ..World::default()
        };
        let overrides = Overrides::default();
        let access = Access::default();
        let view = Viewer::new(Data::new(&world, &overrides), &access, 1);
        let rfis = |project| ApiRoute {
            resource: Resource::Rfis,
            scope: Scope::Project(project),
            record: None,
        };
        let status = |route, pairs: &[(String, String)], header| {
            answer(view, route, &list_request(pairs, header)).0.status
        };
        assert_eq!(status(rfis(2_001_001), &[], Some("2001")), 404, "not owned");
        assert_eq!(
            status(rfis(1_001_003), &[], Some("1001")),
            404,
            "no such project"
        );
        assert_eq!(status(rfis(1_001_001), &[], None), 403);
        assert_eq!(status(rfis(1_001_001), &[], Some("2001")), 403);

        let pairs = parse_form("per_page=20&page=2");
        let (response, served) = answer(view, rfis(1_001_001), &list_request(&pairs, Some("1001")));
        assert_eq!(response.status, 200);
        assert_eq!(served.len(), 10);
        assert_eq!(
            served[0],
            (Resource::Rfis, 1001, Resource::Rfis.id(1_001_001, 21))
        );
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("Total").as_deref(), Some("30"));
        assert_eq!(header("Per-Page").as_deref(), Some("20"));
        assert!(!header("Link").unwrap().contains("rel=\"next\""));

        let window = parse_form("filters[updated_at]=2026-01-01T00:05:00Z...2026-01-01T00:07:00Z");
        let (response, served) =
            answer(view, rfis(1_001_001), &list_request(&window, Some("1001")));
        assert_eq!(response.status, 200);
        assert_eq!(served.len(), 3, "minutes 5, 6 and 7, inclusive");
        let bad = parse_form("filters[updated_at]=yesterday");
        assert_eq!(status(rfis(1_001_001), &bad, Some("1001")), 400);
        let users = ApiRoute {
            resource: Resource::ProjectUsers,
            scope: Scope::Project(1_001_001),
            record: None,
        };
        assert_eq!(status(users, &bad, Some("1001")), 200, "filter ignored");

        let companies = ApiRoute {
            resource: Resource::Companies,
            scope: Scope::User,
            record: None,
        };
        let (response, served) = answer(view, companies, &list_request(&[], None));
        assert_eq!(response.status, 200);
        assert_eq!(served, vec![(Resource::Companies, 1001, 1001)]);
        assert!(!response.headers.iter().any(|(k, _)| k == "Link"));
    }

    #[test]
    fn details_show_what_the_list_shows_and_404_the_rest() {
        let world = World {
            users: 2,
            records_per_resource: 5,
            ..World::default()
        };
        let mut overrides = Overrides::default();
        let deleted = Resource::Rfis.id(1_001_001, 4);
        overrides
            .apply(
                &world,
                Resource::Rfis,
                deleted,
                crate::records::Mutation::Delete,
                chrono::Utc::now(),
            )
            .unwrap();
        let private = Resource::Rfis.id(1_001_001, 2);
        let mut access = Access::default();
        access.set_private(Resource::Rfis, private, Some([2].into()));
        let view = Viewer::new(Data::new(&world, &overrides), &access, 1);
        let rfi = |project, id| ApiRoute {
            resource: Resource::Rfis,
            scope: Scope::Project(project),
            record: Some(id),
        };
        let show = |route, header| answer(view, route, &list_request(&[], header));

        let listed = answer(
            view,
            ApiRoute {
                record: None,
                ..rfi(1_001_001, 0)
            },
            &list_request(&[], Some("1001")),
        );
        let entries: Value = serde_json::from_slice(&listed.0.body).unwrap();
        let visible = Resource::Rfis.id(1_001_001, 3);
        let (response, served) = show(rfi(1_001_001, visible), Some("1001"));
        assert_eq!(response.status, 200);
        let record: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(Some(&record), entries.as_array().unwrap().get(1));
        assert_eq!(served, vec![(Resource::Rfis, 1001, visible)]);
        assert!(!response.headers.iter().any(|(k, _)| k == "Total"));

        for (route, why) in [
            (rfi(1_001_001, deleted), "deleted"),
            (rfi(1_001_001, private), "private to user-2"),
            (rfi(1_001_002, visible), "another project's"),
            (
                rfi(1_001_001, Resource::Rfis.id(1_001_001, 6)),
                "never made",
            ),
            (rfi(1_001_001, 0), "no such id"),
        ] {
            let (response, served) = show(route, Some("1001"));
            assert_eq!(response.status, 404, "{why}");
            assert!(served.is_empty(), "{why}");
        }
        assert_eq!(show(rfi(1_001_001, visible), None).0.status, 403);
        assert_eq!(
            show(rfi(2_001_001, 200_100_100_001), Some("2001")).0.status,
            404
        );

        let company = |id| ApiRoute {
            resource: Resource::Companies,
            scope: Scope::User,
            record: Some(id),
        };
        let (response, served) = show(company(1001), None);
        assert_eq!(response.status, 200);
        assert_eq!(served, vec![(Resource::Companies, 1001, 1001)]);
        assert_eq!(show(company(2001), None).0.status, 404, "another's company");
        let project = |company, id| ApiRoute {
            resource: Resource::Projects,
            scope: Scope::Company(company),
            record: Some(id),
        };
        assert_eq!(show(project(1001, 1_001_002), Some("1001")).0.status, 200);
        assert_eq!(show(project(1001, 1_001_003), Some("1001")).0.status, 404);
        assert_eq!(show(project(1001, 2_001_001), Some("1001")).0.status, 404);
    }
}
