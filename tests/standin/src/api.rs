//! The Procore REST routes: which resource a path names, access and company-header
//! checks, `updated_at` filtering and pagination.

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
}

impl ApiRoute {
    pub fn company_id(&self) -> Option<u64> {
        match self.scope {
            Scope::User => None,
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

/// Maps a `/rest/...` request to a resource and scope (paths as Procore documents them).
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
    let (resource, scope) = match segments.as_slice() {
        ["v1.0", "companies"] => (Resource::Companies, Ok(Scope::User)),
        ["v1.0", "projects"] => (
            Resource::Projects,
            from_query(Resource::Projects, "company_id").map(Scope::Company),
        ),
        ["v1.0", "vendors"] => (
            Resource::Vendors,
            from_query(Resource::Vendors, "company_id").map(Scope::Company),
        ),
        ["v1.0", "projects", id, "users"] => (
            Resource::ProjectUsers,
            from_path(Resource::ProjectUsers, id).map(Scope::Project),
        ),
        ["v1.0", "projects", id, "rfis"] => (
            Resource::Rfis,
            from_path(Resource::Rfis, id).map(Scope::Project),
        ),
        ["v1.1", "projects", id, "submittals"] => (
            Resource::Submittals,
            from_path(Resource::Submittals, id).map(Scope::Project),
        ),
        ["v1.1", "punch_items"] => (
            Resource::PunchItems,
            from_query(Resource::PunchItems, "project_id").map(Scope::Project),
        ),
        ["v1.0", "observations", "items"] => (
            Resource::Observations,
            from_query(Resource::Observations, "project_id").map(Scope::Project),
        ),
        ["v1.0", "change_events"] => (
            Resource::ChangeEvents,
            from_query(Resource::ChangeEvents, "project_id").map(Scope::Project),
        ),
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
    Ok(ApiRoute {
        resource,
        scope: scope?,
    })
}

/// The request details a list needs besides its route.
pub struct ListRequest<'a> {
    pub company_header: Option<&'a str>,
    pub pairs: &'a [(String, String)],
    pub raw_query: &'a str,
    /// `scheme://host/path`, the base of the `Link` URLs.
    pub base_url: String,
}

/// Answers a list request as the authenticated login sees the data; returns the
/// records served.
pub fn list(
    view: Viewer<'_>,
    route: ApiRoute,
    req: &ListRequest<'_>,
) -> (Response, Vec<ServedKey>) {
    match list_inner(view, route, req) {
        Ok(answer) => answer,
        Err(error) => (error.response(), Vec::new()),
    }
}

fn list_inner(
    view: Viewer<'_>,
    route: ApiRoute,
    req: &ListRequest<'_>,
) -> Result<(Response, Vec<ServedKey>), RouteError> {
    let data = view.data;
    let resource = route.resource;
    let fail = |status, message: String| RouteError::new(Some(resource), status, message);
    let scope_id = match route.scope {
        // Companies ignore the scope: the viewer knows whose they are.
        Scope::User => 0,
        Scope::Company(company) => {
            if !view.reaches_company(company) {
                return Err(fail(404, format!("Company {company} not found")));
            }
            check_company_header(req.company_header, company).map_err(|m| fail(403, m))?;
            company
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
            project
        }
    };

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
                Ok(ApiRoute { resource, scope }),
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
        };
        let status = |route, pairs: &[(String, String)], header| {
            list(view, route, &list_request(pairs, header)).0.status
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
        let (response, served) = list(view, rfis(1_001_001), &list_request(&pairs, Some("1001")));
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
        let (response, served) = list(view, rfis(1_001_001), &list_request(&window, Some("1001")));
        assert_eq!(response.status, 200);
        assert_eq!(served.len(), 3, "minutes 5, 6 and 7, inclusive");
        let bad = parse_form("filters[updated_at]=yesterday");
        assert_eq!(status(rfis(1_001_001), &bad, Some("1001")), 400);
        let users = ApiRoute {
            resource: Resource::ProjectUsers,
            scope: Scope::Project(1_001_001),
        };
        assert_eq!(status(users, &bad, Some("1001")), 200, "filter ignored");

        let companies = ApiRoute {
            resource: Resource::Companies,
            scope: Scope::User,
        };
        let (response, served) = list(view, companies, &list_request(&[], None));
        assert_eq!(response.status, 200);
        assert_eq!(served, vec![(Resource::Companies, 1001, 1001)]);
        assert!(!response.headers.iter().any(|(k, _)| k == "Link"));
    }
}
