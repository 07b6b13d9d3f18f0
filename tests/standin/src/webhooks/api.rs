//! `/rest/v1.0/webhooks/...`: hooks, their triggers and the deliveries listing. The
//! caller is already authenticated and rate-limited; these routes check the company or
//! project a hook belongs to the way the list routes do (404 for what the login cannot
//! reach, 403 for a wrong `Procore-Company-Id` or a project it may not open).

use serde_json::{Map, Value};

use super::{
    resource_from_webhook_name, webhook_name, EventType, Hook, HookFields, Owner, PayloadVersion,
    Trigger, MAX_BULK_TRIGGERS,
};
use crate::access::{ProjectAccess, Viewer};
use crate::api::check_company_header;
use crate::clock::{iso_millis, now};
use crate::http::{param, Request, Response};
use crate::state::State;
use crate::world::Resource;

const PREFIX: &str = "/rest/v1.0/webhooks";
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1_000;
const DEFAULT_NAMESPACE: &str = "procore";
const DEFAULT_API_VERSION: &str = "v2.0";

pub fn is_api_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/rest/v1.0/webhooks/")
}

/// A response, and the company/project it concerned for the request log.
pub struct Answer {
    pub response: Response,
    pub company_id: Option<u64>,
    pub project_id: Option<u64>,
}

type Refusal = (u16, String);

fn refuse<T>(status: u16, message: impl Into<String>) -> Result<T, Refusal> {
    Err((status, message.into()))
}

/// What a request names besides its hook: its query, its JSON body and the owner they
/// point at.
struct Call<'a> {
    req: &'a Request,
    pairs: &'a [(String, String)],
    body: Value,
}

pub fn handle(state: &mut State, user: u64, req: &Request, pairs: &[(String, String)]) -> Answer {
    let mut owner_seen = None;
    let result = Call::new(req, pairs).and_then(|call| route(state, user, &call, &mut owner_seen));
    let response = match result {
        Ok(response) => response,
        Err((status, message)) => Response::errors(status, &message),
    };
    Answer {
        response,
        company_id: owner_seen.map(Owner::company_id),
        project_id: owner_seen.and_then(Owner::project_id),
    }
}

impl<'a> Call<'a> {
    fn new(req: &'a Request, pairs: &'a [(String, String)]) -> Result<Call<'a>, Refusal> {
        let body = if req.body.trim_ascii().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(&req.body)
                .or_else(|e| refuse(400, format!("bad JSON body: {e}")))?
        };
        if !body.is_object() {
            return refuse(400, "the body must be a JSON object");
        }
        Ok(Call { req, pairs, body })
    }

    /// `company_id` or `project_id`, from the query or the body.
    fn owner(&self) -> Result<Option<Owner>, Refusal> {
        let company = self.id("company_id")?;
        let project = self.id("project_id")?;
        match (company, project) {
            (Some(_), Some(_)) => refuse(400, "give company_id or project_id, not both"),
            (Some(c), None) => Ok(Some(Owner::Company(c))),
            (None, Some(p)) => Ok(Some(Owner::Project(p))),
            (None, None) => Ok(None),
        }
    }

    fn required_owner(&self) -> Result<Owner, Refusal> {
        self.owner()?
            .map_or_else(|| refuse(400, "company_id or project_id is required"), Ok)
    }

    fn id(&self, name: &str) -> Result<Option<u64>, Refusal> {
        let invalid = || refuse(400, format!("{name} must be an integer"));
        if let Some(value) = param(self.pairs, name) {
            return value.trim().parse().map(Some).or_else(|_| invalid());
        }
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            // Clients send ids as numbers or as numeric strings.
            Some(Value::Number(n)) => n.as_u64().map(Some).map_or_else(invalid, Ok),
            Some(Value::String(s)) => s.trim().parse().map(Some).or_else(|_| invalid()),
            Some(_) => invalid(),
        }
    }
}

fn route(
    state: &mut State,
    user: u64,
    call: &Call<'_>,
    owner_seen: &mut Option<Owner>,
) -> Result<Response, Refusal> {
    let req = call.req;
    let rest = req.path[PREFIX.len()..].trim_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method.as_str();
    let not_allowed = || refuse(405, format!("{method} is not supported on {}", req.path));

    if segments == ["hooks"] {
        let owner = call.required_owner()?;
        *owner_seen = Some(owner);
        authorize(state, user, owner, req)?;
        return match method {
            "GET" => Ok(list_hooks(state, owner, call)),
            "POST" => create_hook(state, owner, call),
            _ => not_allowed(),
        };
    }
    let (hook_id, tail) = match segments.as_slice() {
        ["hooks", id, tail @ ..] => (*id, tail),
        _ => return refuse(404, format!("No route matches {}", req.path)),
    };
    let hook_id: u64 = hook_id
        .parse()
        .or_else(|_| refuse(404, format!("Hook {hook_id} not found")))?;
    let owner = hook_owner(state, user, hook_id, call)?;
    *owner_seen = Some(owner);

    let hook = |state| find_hook(state, hook_id);
    match (method, tail) {
        ("GET", []) => Ok(Response::json(200, &hook(state)?.to_json())),
        ("PATCH" | "PUT", []) => update_hook(state, hook_id, call),
        ("DELETE", []) => {
            state.webhooks.hooks.remove(&hook_id);
            Ok(no_content())
        }
        ("GET", ["triggers"]) => Ok(Response::json(
            200,
            &Value::Array(
                hook(state)?
                    .triggers
                    .values()
                    .map(Trigger::to_json)
                    .collect(),
            ),
        )),
        ("POST", ["triggers"]) => {
            let spec = call
                .body
                .get("trigger")
                .map_or_else(|| refuse(400, "trigger is required"), Ok)?;
            let created = add_triggers(state, hook_id, std::slice::from_ref(spec))?;
            Ok(Response::json(201, &created[0]))
        }
        ("POST", ["triggers", "bulk"]) => {
            let Some(Value::Array(specs)) = call.body.get("triggers") else {
                return refuse(
                    400,
                    "triggers must be a list of {resource_name, event_type}",
                );
            };
            let created = add_triggers(state, hook_id, specs)?;
            Ok(Response::json(201, &Value::Array(created)))
        }
        ("DELETE", ["triggers", "bulk"]) => delete_triggers(state, hook_id, call),
        ("GET", ["triggers", id]) => {
            let trigger = id
                .parse::<u64>()
                .ok()
                .and_then(|id| hook(state).ok()?.triggers.get(&id))
                .map_or_else(|| refuse(404, format!("Trigger {id} not found")), Ok)?;
            Ok(Response::json(200, &trigger.to_json()))
        }
        ("DELETE", ["triggers", id]) => {
            let hook = state
                .webhooks
                .hooks
                .get_mut(&hook_id)
                .map_or_else(|| refuse(404, format!("Hook {hook_id} not found")), Ok)?;
            match id
                .parse::<u64>()
                .ok()
                .and_then(|id| hook.triggers.remove(&id))
            {
                Some(_) => Ok(no_content()),
                None => refuse(404, format!("Trigger {id} not found")),
            }
        }
        ("GET", ["deliveries"]) => {
            // Procore requires the scope here even though the hook implies it.
            call.required_owner()?;
            deliveries(state, hook_id, call)
        }
        (_, [] | ["triggers"] | ["triggers", _] | ["deliveries"]) => not_allowed(),
        _ => refuse(404, format!("No route matches {}", req.path)),
    }
}

fn find_hook(state: &State, hook_id: u64) -> Result<&Hook, Refusal> {
    state
        .webhooks
        .hooks
        .get(&hook_id)
        .map_or_else(|| refuse(404, format!("Hook {hook_id} not found")), Ok)
}

fn no_content() -> Response {
    Response::new(204, "application/json; charset=utf-8", Vec::new())
}

/// The checks the list routes make, in the same order.
fn authorize(state: &State, user: u64, owner: Owner, req: &Request) -> Result<(), Refusal> {
    let view: Viewer<'_> = state.viewer(user);
    let header = req.header("procore-company-id");
    match owner {
        Owner::Company(company) => {
            if !view.reaches_company(company) {
                return refuse(404, format!("Company {company} not found"));
            }
            check_company_header(header, company).or_else(|m| refuse(403, m))
        }
        Owner::Project(project) => {
            let access = view.project_access(project);
            if access == ProjectAccess::Missing {
                return refuse(404, format!("Project {project} not found"));
            }
            check_company_header(header, Resource::Projects.company_of(project))
                .or_else(|m| refuse(403, m))?;
            if access == ProjectAccess::Forbidden {
                return refuse(
                    403,
                    format!("You do not have permission to access project {project}"),
                );
            }
            Ok(())
        }
    }
}

/// The hook's owner, once the login may see it. A hook outside what the login reaches,
/// or one named with a scope it does not belong to, does not exist for it.
fn hook_owner(state: &State, user: u64, hook_id: u64, call: &Call<'_>) -> Result<Owner, Refusal> {
    let not_found = || refuse(404, format!("Hook {hook_id} not found"));
    let Some(hook) = state.webhooks.hooks.get(&hook_id) else {
        return not_found();
    };
    let owner = hook.owner;
    if call.owner()?.is_some_and(|named| named != owner) {
        return not_found();
    }
    match authorize(state, user, owner, call.req) {
        Err((404, _)) => not_found(),
        other => other.map(|()| owner),
    }
}

/// Namespaces keep apps apart: a list without one sees the default namespace only.
fn list_hooks(state: &State, owner: Owner, call: &Call<'_>) -> Response {
    let namespace = param(call.pairs, "namespace").unwrap_or(DEFAULT_NAMESPACE);
    let hooks: Vec<Value> = state
        .webhooks
        .hooks
        .values()
        .filter(|h| h.owner == owner && h.namespace == namespace)
        .map(Hook::to_json)
        .collect();
    Response::json(200, &Value::Array(hooks))
}

fn create_hook(state: &mut State, owner: Owner, call: &Call<'_>) -> Result<Response, Refusal> {
    let Some(fields) = call.body.get("hook").filter(|h| h.is_object()) else {
        return refuse(400, "hook is required (an object)");
    };
    let top_version = call.body.get("api_version").and_then(Value::as_str);
    let fields = hook_fields(fields, top_version, None)?;
    for (_, value) in fields
        .destination_headers
        .iter()
        .filter(|(n, _)| is_authorization(n))
    {
        state.tokens.remember_secret(value);
    }
    let hook = state.webhooks.add_hook(fields, owner);
    Ok(Response::json(201, &hook.to_json()))
}

fn update_hook(state: &mut State, hook_id: u64, call: &Call<'_>) -> Result<Response, Refusal> {
    let Some(fields) = call.body.get("hook").filter(|h| h.is_object()) else {
        return refuse(400, "hook is required (an object)");
    };
    let top_version = call.body.get("api_version").and_then(Value::as_str);
    let Some(hook) = state.webhooks.hooks.get_mut(&hook_id) else {
        return refuse(404, format!("Hook {hook_id} not found"));
    };
    let fields = hook_fields(fields, top_version, Some(hook))?;
    for (_, value) in fields
        .destination_headers
        .iter()
        .filter(|(n, _)| is_authorization(n))
    {
        state.tokens.remember_secret(value);
    }
    hook.api_version = fields.api_version;
    hook.version = fields.version;
    hook.namespace = fields.namespace;
    hook.destination_url = fields.destination_url;
    hook.destination_headers = fields.destination_headers;
    hook.updated_at = iso_millis(now());
    Ok(Response::json(200, &hook.to_json()))
}

fn is_authorization(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization")
}

/// Checks a `hook` object; fields left out keep `existing`'s values or the defaults.
fn hook_fields(
    hook: &Value,
    top_api_version: Option<&str>,
    existing: Option<&Hook>,
) -> Result<HookFields, Refusal> {
    let text = |name: &str| -> Result<Option<String>, Refusal> {
        match hook.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => refuse(400, format!("hook.{name} must be a string")),
        }
    };
    let api_version = text("api_version")?
        .or_else(|| top_api_version.map(str::to_string))
        .or_else(|| existing.map(|h| h.api_version.clone()))
        .unwrap_or_else(|| DEFAULT_API_VERSION.to_string());
    let Some(version) = PayloadVersion::parse(&api_version) else {
        return refuse(
            422,
            format!("api_version {api_version:?} is not one of v2.0, v3.0, v4.0"),
        );
    };
    let namespace = text("namespace")?
        .or_else(|| existing.map(|h| h.namespace.clone()))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    if !valid_namespace(&namespace) {
        return refuse(
            422,
            format!("namespace {namespace:?} may hold only lowercase letters a-z and dashes"),
        );
    }
    let destination_url = match text("destination_url")? {
        Some(url) => url,
        None => match existing {
            Some(h) => h.destination_url.clone(),
            None => return refuse(422, "hook.destination_url is required"),
        },
    };
    if !valid_url(&destination_url) {
        return refuse(
            422,
            format!("destination_url {destination_url:?} must be an http:// or https:// URL"),
        );
    }
    let destination_headers = match hook.get("destination_headers") {
        None => existing
            .map(|h| h.destination_headers.clone())
            .unwrap_or_default(),
        Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| header(name, value))
            .collect::<Result<_, _>>()?,
        Some(_) => return refuse(400, "hook.destination_headers must be an object"),
    };
    Ok(HookFields {
        api_version,
        version,
        namespace,
        destination_url,
        destination_headers,
    })
}

fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty()
        && namespace.len() <= 100
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// An absolute http(s) URL with a host, nothing a request line could trip on.
fn valid_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    url.len() <= 2048
        && !host.is_empty()
        && !host.starts_with(':')
        && url.bytes().all(|b| b.is_ascii_graphic())
}

/// A destination header: a token name, a value without control characters, and none
/// of the headers that frame the request itself.
fn header(name: &str, value: &Value) -> Result<(String, String), Refusal> {
    let Value::String(value) = value else {
        return refuse(422, format!("destination_headers.{name} must be a string"));
    };
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return refuse(422, format!("{name:?} is not a valid header name"));
    }
    let framing = ["content-length", "transfer-encoding", "host", "connection"];
    if framing.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        return refuse(422, format!("destination_headers may not set {name}"));
    }
    if value.len() > 8 * 1024 || value.chars().any(|c| c.is_control() && c != '\t') {
        return refuse(
            422,
            format!("destination_headers.{name} is not a valid header value"),
        );
    }
    Ok((name.to_string(), value.clone()))
}

/// Creates every trigger or none: a bad or repeated one refuses the whole call.
fn add_triggers(state: &mut State, hook_id: u64, specs: &[Value]) -> Result<Vec<Value>, Refusal> {
    if specs.is_empty() {
        return refuse(422, "triggers must not be empty");
    }
    if specs.len() > MAX_BULK_TRIGGERS {
        return refuse(
            422,
            format!(
                "at most {MAX_BULK_TRIGGERS} triggers per call, got {}",
                specs.len()
            ),
        );
    }
    let Some(hook) = state.webhooks.hooks.get(&hook_id) else {
        return refuse(404, format!("Hook {hook_id} not found"));
    };
    let mut wanted: Vec<(Resource, EventType)> = Vec::with_capacity(specs.len());
    for spec in specs {
        let (resource, event_type) = trigger_spec(spec, hook.owner)?;
        let taken = hook
            .triggers
            .values()
            .any(|t| t.resource == resource && t.event_type == event_type)
            || wanted.contains(&(resource, event_type));
        if taken {
            return refuse(
                422,
                format!(
                    "a trigger for {} {} already exists on hook {hook_id}",
                    webhook_name(resource).unwrap_or(""),
                    event_type.name()
                ),
            );
        }
        wanted.push((resource, event_type));
    }
    let created_at = iso_millis(now());
    let mut created = Vec::with_capacity(wanted.len());
    for (resource, event_type) in wanted {
        let trigger = Trigger {
            id: state.webhooks.next_trigger_id(),
            resource,
            event_type,
            created_at: created_at.clone(),
        };
        created.push(trigger.to_json());
        if let Some(hook) = state.webhooks.hooks.get_mut(&hook_id) {
            hook.triggers.insert(trigger.id, trigger);
        }
    }
    Ok(created)
}

fn trigger_spec(spec: &Value, owner: Owner) -> Result<(Resource, EventType), Refusal> {
    let field = |name: &str| spec.get(name).and_then(Value::as_str);
    let Some(name) = field("resource_name") else {
        return refuse(422, "trigger.resource_name is required");
    };
    let Some(resource) = resource_from_webhook_name(name) else {
        let known: Vec<&str> = Resource::ALL.into_iter().filter_map(webhook_name).collect();
        return refuse(
            422,
            format!(
                "unknown resource_name {name:?} (known: {})",
                known.join(", ")
            ),
        );
    };
    let event_type = field("event_type").unwrap_or("");
    let Some(event_type) = EventType::from_name(event_type) else {
        return refuse(
            422,
            format!("event_type {event_type:?} must be create, update or delete"),
        );
    };
    if matches!(owner, Owner::Project(_)) && resource.parent() == Some(Resource::Companies) {
        return refuse(
            422,
            format!("{name} is a company-level resource: use a company hook"),
        );
    }
    // Accepted even where Procore emits nothing (see `emits`): such a trigger is silent.
    Ok((resource, event_type))
}

fn delete_triggers(state: &mut State, hook_id: u64, call: &Call<'_>) -> Result<Response, Refusal> {
    let ids: Vec<u64> = match call.body.get("trigger_ids") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| {
                v.as_u64()
                    .map_or_else(|| refuse(400, "trigger_ids must be integers"), Ok)
            })
            .collect::<Result<_, _>>()?,
        _ => return refuse(400, "trigger_ids must be a list of trigger ids"),
    };
    if ids.len() > MAX_BULK_TRIGGERS {
        return refuse(
            422,
            format!(
                "at most {MAX_BULK_TRIGGERS} triggers per call, got {}",
                ids.len()
            ),
        );
    }
    let Some(hook) = state.webhooks.hooks.get_mut(&hook_id) else {
        return refuse(404, format!("Hook {hook_id} not found"));
    };
    if let Some(missing) = ids.iter().find(|id| !hook.triggers.contains_key(id)) {
        return refuse(404, format!("Trigger {missing} not found"));
    }
    for id in &ids {
        hook.triggers.remove(id);
    }
    Ok(no_content())
}

/// Every attempt for the hook, oldest first, paged by `page_size` and `page_start`
/// (the last id of the previous page).
fn deliveries(state: &State, hook_id: u64, call: &Call<'_>) -> Result<Response, Refusal> {
    let status = param(call.pairs, "filters[status]")
        .or_else(|| param(call.pairs, "filter[status]"))
        .unwrap_or("any");
    let wanted: &[&str] = match status {
        "any" => &["ok", "retried", "failed", "discarded"],
        "successful" => &["ok"],
        "failing" => &["retried", "failed"],
        "discarded" => &["discarded"],
        other => {
            return refuse(
                400,
                format!(
                    "filters[status] must be any, successful, failing or discarded, got {other:?}"
                ),
            )
        }
    };
    let number = |name: &str, default: u64| -> Result<u64, Refusal> {
        match param(call.pairs, name) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().or_else(|_| {
                refuse(
                    400,
                    format!("{name} must be a non-negative integer, got {v:?}"),
                )
            }),
        }
    };
    let page_size = number("page_size", DEFAULT_PAGE_SIZE as u64)?;
    if page_size == 0 {
        return refuse(400, "page_size must be positive");
    }
    let page_size = usize::try_from(page_size)
        .unwrap_or(MAX_PAGE_SIZE)
        .min(MAX_PAGE_SIZE);
    let page_start = number("page_start", 0)?;
    let page: Vec<Value> = state
        .webhooks
        .attempts
        .iter()
        .filter(|a| a.hook_id == hook_id && a.id > page_start)
        .filter(|a| wanted.contains(&a.outcome.name()))
        .take(page_size)
        .map(|a| a.to_json())
        .collect();
    Ok(Response::json(200, &Value::Array(page)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_urls_and_headers_are_checked() {
        assert!(valid_namespace("procore"));
        assert!(valid_namespace("acme-procore-sync"));
        for bad in ["", "Procore", "pro_core", "v2", "pro core"] {
            assert!(!valid_namespace(bad), "{bad}");
        }
        assert!(valid_url("http://127.0.0.1:9/procore/webhooks"));
        assert!(valid_url("https://hooks.example.com"));
        for bad in [
            "ftp://x",
            "http://",
            "http:///x",
            "http://:80/x",
            "/relative",
            "http://a b",
        ] {
            assert!(!valid_url(bad), "{bad}");
        }
        assert!(header("Authorization", &json!("Bearer x")).is_ok());
        assert_eq!(header("Authorization", &json!(5)).unwrap_err().0, 422);
        assert_eq!(header("Bad Name", &json!("x")).unwrap_err().0, 422);
        assert_eq!(header("X", &json!("a\r\nInjected: 1")).unwrap_err().0, 422);
        assert_eq!(header("Content-Length", &json!("1")).unwrap_err().0, 422);
    }

    #[test]
    fn hook_fields_default_and_keep_existing_values() {
        let f = hook_fields(&json!({"destination_url": "http://h/x"}), None, None).unwrap();
        assert_eq!(
            (f.api_version.as_str(), f.namespace.as_str()),
            ("v2.0", "procore")
        );
        assert!(f.destination_headers.is_empty());
        let f = hook_fields(
            &json!({"destination_url": "http://h/x"}),
            Some("v4.0"),
            None,
        )
        .unwrap();
        assert_eq!(f.version, PayloadVersion::V4);
        assert_eq!(hook_fields(&json!({}), None, None).unwrap_err().0, 422);
        assert_eq!(
            hook_fields(
                &json!({"destination_url": "http://h", "api_version": "v9"}),
                None,
                None
            )
            .unwrap_err()
            .0,
            422
        );
        assert_eq!(
            hook_fields(&json!({"destination_url": 7}), None, None)
                .unwrap_err()
                .0,
            400
        );
    }

    #[test]
    fn trigger_specs_name_procore_resources_and_event_types() {
        let spec = |name: &str, event: &str| json!({"resource_name": name, "event_type": event});
        let company = Owner::Company(1001);
        let project = Owner::Project(1_001_001);
        assert_eq!(
            trigger_spec(&spec("RFIs", "update"), project),
            Ok((Resource::Rfis, EventType::Update))
        );
        assert_eq!(
            trigger_spec(&spec("Projects", "create"), company),
            Ok((Resource::Projects, EventType::Create))
        );
        assert_eq!(
            trigger_spec(&spec("Projects", "create"), project)
                .unwrap_err()
                .0,
            422
        );
        assert_eq!(
            trigger_spec(&spec("rfis", "update"), company)
                .unwrap_err()
                .0,
            422
        );
        assert_eq!(
            trigger_spec(&spec("RFIs", "upsert"), company)
                .unwrap_err()
                .0,
            422
        );
        assert_eq!(trigger_spec(&json!({}), company).unwrap_err().0, 422);
    }
}
