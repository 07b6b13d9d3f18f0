//! `/__admin/...`: how tests and benchmarks set up the world, mint credentials, inject
//! faults, mutate data and read back what happened. JSON in and out, no auth.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin_access;
use crate::clock::{epoch_seconds, iso, now, record_time_now};
use crate::faults::FaultRule;
use crate::http::{param, Request, Response};
use crate::records::{Mutation, MutationError, Placement};
use crate::state::{Shared, State};
use crate::webhooks::{self, Change, EventType};
use crate::world::{Resource, World};

pub fn handle(shared: &Shared, req: &Request) -> Response {
    let route = req
        .path
        .trim_start_matches("/__admin/")
        .trim_end_matches('/');
    if ["webhooks", "captures"]
        .iter()
        .any(|r| route == *r || route.starts_with(&format!("{r}/")))
    {
        return webhooks::handle_admin(shared, req, route);
    }
    let result = match (req.method.as_str(), route) {
        ("GET", "health") => Ok(json!({ "ok": true })),
        ("GET", "world") => Ok(json!(shared.lock().world)),
        ("PUT", "world") => put_world(shared, req),
        ("POST", "codes") => mint_code(shared, req),
        ("POST", "tokens") => issue_tokens(shared, req),
        ("POST", "expire_tokens") => expire_tokens(shared, req),
        ("POST", "revoke") => revoke(shared, req),
        ("GET", "faults") => Ok(json!({ "rules": shared.lock().faults })),
        ("POST", "faults") => add_faults(shared, req),
        ("DELETE", "faults") => {
            shared.lock().faults.clear();
            Ok(json!({ "ok": true }))
        }
        ("POST", "mutate") => mutate(shared, req),
        ("POST", "access") => admin_access::set_access(shared, req),
        ("POST", "private") => admin_access::set_private(shared, req),
        ("GET", "stats") => Ok(json!(shared.lock().stats)),
        ("GET", "requests") => requests(shared, req),
        // The record list can be tens of megabytes: built as text, not as a `Value`.
        ("GET", "records") => return records(&shared.lock(), req),
        ("GET", "served") => Ok(served(&shared.lock())),
        ("GET", "secrets") => Ok(secrets(&shared.lock())),
        (
            _,
            "health" | "world" | "codes" | "tokens" | "expire_tokens" | "revoke" | "faults"
            | "mutate" | "access" | "private" | "stats" | "requests" | "records" | "served"
            | "secrets",
        ) => Err((
            405,
            format!("{} is not supported on {}", req.method, req.path),
        )),
        _ => Err((404, format!("no admin route {}", req.path))),
    };
    match result {
        Ok(body) => Response::json(200, &body),
        Err((status, message)) => Response::errors(status, &message),
    }
}

pub(crate) type AdminResult = Result<Value, (u16, String)>;

pub(crate) fn body<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, (u16, String)> {
    let bytes: &[u8] = if req.body.trim_ascii().is_empty() {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(bytes).map_err(|e| (400, format!("bad JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    login: String,
    #[serde(default)]
    redirect_uri: Option<String>,
}

/// The body's login, checked against the world.
fn login_body(state: &State, req: &Request) -> Result<LoginBody, (u16, String)> {
    let body: LoginBody = body(req)?;
    if state.world.user_number(&body.login).is_none() {
        return Err((
            400,
            format!("login {:?} is not a user of this world", body.login),
        ));
    }
    Ok(body)
}

fn put_world(shared: &Shared, req: &Request) -> AdminResult {
    let world: World = body(req)?;
    world.validate().map_err(|e| (400, e))?;
    let mut state = shared.lock();
    state.reset(world);
    Ok(json!({ "ok": true, "world": state.world }))
}

fn mint_code(shared: &Shared, req: &Request) -> AdminResult {
    let mut state = shared.lock();
    let body = login_body(&state, req)?;
    let Some(redirect_uri) = body.redirect_uri else {
        return Err((400, "redirect_uri is required".to_string()));
    };
    let code = state
        .tokens
        .mint_code(&body.login, &redirect_uri, epoch_seconds(now()));
    Ok(json!({ "code": code }))
}

fn issue_tokens(shared: &Shared, req: &Request) -> AdminResult {
    let mut state = shared.lock();
    let body = login_body(&state, req)?;
    let ttl = state.world.access_token_ttl_s;
    let pair = state.tokens.issue(&body.login, epoch_seconds(now()), ttl);
    Ok(pair.to_json())
}

fn expire_tokens(shared: &Shared, req: &Request) -> AdminResult {
    let mut state = shared.lock();
    let body = login_body(&state, req)?;
    let expired = state.tokens.expire_login(&body.login, epoch_seconds(now()));
    Ok(json!({ "ok": true, "expired": expired }))
}

fn revoke(shared: &Shared, req: &Request) -> AdminResult {
    let mut state = shared.lock();
    let body = login_body(&state, req)?;
    let revoked = state.tokens.revoke_login(&body.login);
    Ok(json!({ "ok": true, "revoked": revoked }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    rules: Vec<FaultRule>,
}

fn add_faults(shared: &Shared, req: &Request) -> AdminResult {
    let body: FaultsBody = body(req)?;
    for rule in &body.rules {
        rule.validate().map_err(|e| (400, e))?;
    }
    let mut state = shared.lock();
    state.faults.extend(body.rules);
    Ok(json!({ "ok": true, "rules": state.faults.len() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MutateBody {
    action: String,
    resource: String,
    #[serde(default)]
    company_id: Option<u64>,
    #[serde(default)]
    project_id: Option<u64>,
    #[serde(default)]
    id: Option<u64>,
    /// Owner of an added company (companies are scoped to a user, not a company); for
    /// webhook events, the user who made the change (default: the company's owner).
    #[serde(default)]
    login: Option<String>,
    /// `metadata.source_application_id` of the webhook event, as if an app made it.
    #[serde(default)]
    source_application_id: Option<String>,
    /// Catalog: the container an added nested record goes into (a drawing area for
    /// drawings, a folder for folders and files, an RFI for rfi_replies).
    #[serde(default)]
    parent_id: Option<u64>,
}

fn mutate(shared: &Shared, req: &Request) -> AdminResult {
    let body: MutateBody = body(req)?;
    let at = record_time_now();
    let mut state = shared.lock();
    let state = &mut *state;
    let resource = state
        .world
        .resource_named(&body.resource)
        .ok_or_else(|| (400, format!("unknown resource {:?}", body.resource)))?;
    let container = resource.container();
    match (container, body.parent_id, body.action.as_str()) {
        (Some(_), None, "add") => {
            return Err((400, format!("adding {} needs parent_id", resource.name())))
        }
        (None, Some(_), _) | (Some(_), Some(_), "edit" | "delete" | "restore") => {
            return Err((
                400,
                format!(
                    "parent_id is only for adding nested records, not {} {}",
                    body.action,
                    resource.name()
                ),
            ))
        }
        _ => {}
    }
    let not_found = |what: String| (404, format!("{what} not found"));
    // Checked before anything changes, so a refused call leaves no trace.
    let acting_user = match body.login.as_deref() {
        Some(login) if resource != Resource::Companies || body.action != "add" => Some(
            state
                .world
                .user_number(login)
                .ok_or_else(|| (400, format!("login {login:?} is not a user of this world")))?,
        ),
        _ => None,
    };

    let id = if body.action == "add" {
        let scope = match resource.parent() {
            None => {
                let login = body.login.as_deref().unwrap_or("");
                state
                    .world
                    .user_number(login)
                    .ok_or_else(|| (400, "adding a company needs the owner's login".to_string()))?
            }
            Some(Resource::Companies) => body
                .company_id
                .ok_or_else(|| (400, format!("adding {} needs company_id", resource.name())))?,
            // A nested record goes into its container's project.
            Some(_) => match (container, body.parent_id) {
                (Some(kind), Some(parent)) => {
                    let project = kind.project_of(parent).unwrap_or(0);
                    if body.project_id.is_some_and(|p| p != project) {
                        return Err((
                            400,
                            format!("{} {parent} is not in project_id's project", kind.name()),
                        ));
                    }
                    project
                }
                _ => body
                    .project_id
                    .ok_or_else(|| (400, format!("adding {} needs project_id", resource.name())))?,
            },
        };
        // Added daily logs are dated today (the stand-in's, see `clock::today`).
        let placement = Placement {
            container: body.parent_id,
            date: resource.is_dated().then(|| {
                crate::clock::today(
                    state
                        .world
                        .catalog
                        .as_ref()
                        .and_then(|c| c.today.as_deref()),
                )
            }),
        };
        state
            .overrides
            .add_placed(&state.world, resource, scope, placement, at)
            .map_err(|MutationError::NotFound| {
                not_found(format!(
                    "scope {scope} of {} (or it is full)",
                    resource.name()
                ))
            })?
    } else {
        let mutation = match body.action.as_str() {
            "edit" => Mutation::Edit,
            "delete" => Mutation::Delete,
            "restore" => Mutation::Restore,
            other => {
                return Err((
                    400,
                    format!("action must be edit, delete, restore or add, got {other:?}"),
                ))
            }
        };
        let id = body.id.ok_or_else(|| (400, "id is required".to_string()))?;
        if body
            .company_id
            .is_some_and(|c| c != resource.company_of(id))
            || body
                .project_id
                .is_some_and(|p| Some(p) != resource.project_of(id))
        {
            return Err((
                400,
                format!(
                    "{} {id} does not belong to that company/project",
                    resource.name()
                ),
            ));
        }
        if resource == Resource::Folders
            && mutation == Mutation::Delete
            && resource.split_id(id).1 == 1
            && state.data().in_world(resource, id)
        {
            return Err((
                400,
                format!("folders {id} is a project's root folder and cannot be deleted"),
            ));
        }
        state
            .overrides
            .apply(&state.world, resource, id, mutation, at)
            .map_err(|MutationError::NotFound| not_found(format!("{} {id}", resource.name())))?;
        id
    };
    let event_type = match body.action.as_str() {
        "add" => EventType::Create,
        "delete" => EventType::Delete,
        _ => EventType::Update,
    };
    let user_id =
        acting_user.unwrap_or_else(|| Resource::Companies.split_id(resource.company_of(id)).0);
    let event = state.webhooks.publish(Change {
        resource,
        id,
        event_type,
        user_id,
        source_application_id: body.source_application_id,
    });
    if event.is_some() {
        shared.notify();
    }
    let data = state.data();
    let mut answer = json!({
        "ok": true,
        "action": body.action,
        "resource": resource.name(),
        "company_id": resource.company_of(id),
        "project_id": resource.project_of(id),
        "id": id,
        "updated_at": iso(data.updated_at(resource, id)),
        "deleted": data.is_deleted(resource, id),
        "event_id": event.map(|e| e.id),
    });
    // Nested catalog records also say where they live (core answers are unchanged).
    if let (Some(_), Value::Object(map)) = (container, &mut answer) {
        map.insert(
            "parent_id".to_string(),
            json!(data.container_of(resource, id)),
        );
    }
    if let (Some(date), Value::Object(map)) = (data.log_date(resource, id), &mut answer) {
        map.insert(
            "date".to_string(),
            json!(date.format("%Y-%m-%d").to_string()),
        );
    }
    Ok(answer)
}

fn requests(shared: &Shared, req: &Request) -> AdminResult {
    let pairs = req.query_pairs();
    let since: u64 = match param(&pairs, "since") {
        None | Some("") => 0,
        Some(v) => v
            .parse()
            .map_err(|_| (400, format!("since must be an integer, got {v:?}")))?,
    };
    let state = shared.lock();
    // Sequence numbers are dense and start at 1, so the entries after `since` are a tail.
    let start = usize::try_from(since)
        .unwrap_or(usize::MAX)
        .min(state.log.len());
    Ok(json!(&state.log[start..]))
}

/// Every existing record, or with `?login=` exactly what that login's listings return.
fn records(state: &State, req: &Request) -> Response {
    let pairs = req.query_pairs();
    let viewer = match param(&pairs, "login") {
        None => None,
        Some(login) => match state.world.user_number(login) {
            Some(user) => Some(state.viewer(user)),
            None => {
                return Response::errors(
                    404,
                    &format!("login {login:?} is not a user of this world"),
                )
            }
        },
    };
    let data = state.data();
    let mut out = String::from("[");
    let mut first = true;
    let mut push = |resource: Resource, id: u64| {
        if !first {
            out.push(',');
        }
        first = false;
        let project = resource
            .project_of(id)
            .map_or_else(|| "null".to_string(), |p| p.to_string());
        let _ = write!(
            out,
            r#"{{"resource":"{}","company_id":{},"project_id":{},"id":{},"updated_at":"{}"}}"#,
            resource.name(),
            resource.company_of(id),
            project,
            id,
            iso(data.updated_at(resource, id)),
        );
    };
    // One walk for both: the lister decides whose view it is.
    let list = |resource: Resource, scope: u64| match &viewer {
        Some(v) => v.ids(resource, scope),
        None => data.ids(resource, scope),
    };
    let companies: Vec<u64> = match &viewer {
        Some(v) => v.companies(),
        None => (1..=data.world.users)
            .flat_map(|user| data.ids(Resource::Companies, user))
            .collect(),
    };
    for company in companies {
        push(Resource::Companies, company);
        for vendor in list(Resource::Vendors, company) {
            push(Resource::Vendors, vendor);
        }
        for project in list(Resource::Projects, company) {
            push(Resource::Projects, project);
            for tool in Resource::PROJECT_TOOLS {
                for id in list(tool, project) {
                    push(tool, id);
                }
            }
            if data.world.has_catalog() {
                for tool in Resource::CATALOG {
                    for id in list(tool, project) {
                        push(tool, id);
                    }
                }
            }
        }
    }
    out.push(']');
    Response::new(200, "application/json; charset=utf-8", out.into_bytes())
}

fn served(state: &State) -> Value {
    let mut keys: Vec<_> = state.served.iter().copied().collect();
    keys.sort();
    Value::Array(
        keys.into_iter()
            .map(|(resource, company_id, id)| {
                json!({ "resource": resource.name(), "company_id": company_id, "id": id })
            })
            .collect(),
    )
}

fn secrets(state: &State) -> Value {
    let mut secrets: Vec<String> = state.tokens.issued_secrets().to_vec();
    secrets.push(state.world.client_secret.clone());
    json!(secrets)
}
