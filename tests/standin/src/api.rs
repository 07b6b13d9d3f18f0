//! The Procore REST routes: which resource a path names (a list, or one record of it
//! through the detail route, the list's path with `/{id}` appended), access and
//! company-header checks, `updated_at` filtering and pagination.

use serde_json::Value;

use crate::access::{ProjectAccess, Viewer};
use crate::filters::{parse_updated_at, UPDATED_AT};
use crate::http::{param, Response};
use crate::pagination::{link_header, page_bounds, parse_page_request};
use crate::state::ServedKey;
use crate::world::Resource;

/// What a list request is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The signed-in user's companies.
    User,
    Company(u64),
    Project(u64),
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
            Scope::Project(p) => Some(Resource::Projects.company_of(p)),
        }
    }

    pub fn project_id(&self) -> Option<u64> {
        match self.scope {
            Scope::Project(p) => Some(p),
            _ => None,
        }
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
/// and for a detail route the record's id.
pub fn route(method: &str, path: &str, pairs: &[(String, String)]) -> Result<ApiRoute, RouteError> {
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
    let from_path = |resource: Resource, value: &str| -> Result<u64, RouteError> {
        value
            .parse()
            .map_err(|_| RouteError::new(Some(resource), 404, "Project not found"))
    };
    // The list paths; a detail path is one of them plus the record's id.
    let (list, record) = match segments.split_last() {
        Some((last, list)) if list_route(list).is_some() => (list, Some(*last)),
        _ => (segments.as_slice(), None),
    };
    let (resource, scope) = match (list_route(list), list) {
        (Some((resource, Scoped::User)), _) => (resource, Ok(Scope::User)),
        (Some((resource, Scoped::CompanyQuery)), _) => (
            resource,
            from_query(resource, "company_id").map(Scope::Company),
        ),
        (Some((resource, Scoped::ProjectQuery)), _) => (
            resource,
            from_query(resource, "project_id").map(Scope::Project),
        ),
        (Some((resource, Scoped::ProjectPath)), [_, "projects", id, ..]) => {
            (resource, from_path(resource, id).map(Scope::Project))
        }
        _ => {
            return Err(RouteError::new(
                None,
                404,
                format!("No route matches {path}"),
            ))
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
}

/// The resource a list path (its segments after `/rest/`) names.
fn list_route(segments: &[&str]) -> Option<(Resource, Scoped)> {
    Some(match segments {
        ["v1.0", "companies"] => (Resource::Companies, Scoped::User),
        ["v1.0", "projects"] => (Resource::Projects, Scoped::CompanyQuery),
        ["v1.0", "vendors"] => (Resource::Vendors, Scoped::CompanyQuery),
        ["v1.0", "projects", _, "users"] => (Resource::ProjectUsers, Scoped::ProjectPath),
        ["v1.0", "projects", _, "rfis"] => (Resource::Rfis, Scoped::ProjectPath),
        ["v1.1", "projects", _, "submittals"] => (Resource::Submittals, Scoped::ProjectPath),
        ["v1.1", "punch_items"] => (Resource::PunchItems, Scoped::ProjectQuery),
        ["v1.0", "observations", "items"] => (Resource::Observations, Scoped::ProjectQuery),
        ["v1.0", "change_events"] => (Resource::ChangeEvents, Scoped::ProjectQuery),
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
    let answer = match route.record {
        Some(id) => show(view, route, id, req),
        None => list(view, route, req),
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
        Scope::Project(project) => {
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
    }
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
    if !view.lists(resource, scope_id, id) {
        return Err(RouteError::new(
            Some(resource),
            404,
            format!("{} {id} not found", resource.name()),
        ));
    }
    let record = view.data.record(resource, id);
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
    let ids: Vec<u64> = view
        .ids(resource, scope_id)
        .into_iter()
        .filter(|id| window.is_none_or(|w| w.contains(data.updated_at(resource, *id))))
        .collect();

    let served_key = |id: u64| (resource, resource.company_of(id), id);
    if route.scope == Scope::User {
        // Procore returns the whole company list without pagination headers.
        let records: Vec<Value> = ids.iter().map(|id| data.record(resource, *id)).collect();
        let served = ids.iter().map(|id| served_key(*id)).collect();
        return Ok((Response::json(200, &Value::Array(records)), served));
    }

    let page_request =
        parse_page_request(req.pairs, data.world.per_page_default).map_err(|m| fail(400, m))?;
    let page = page_bounds(ids.len(), page_request);
    let page_ids = &ids[page.start..page.end];
    let records: Vec<Value> = page_ids
        .iter()
        .map(|id| data.record(resource, *id))
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
