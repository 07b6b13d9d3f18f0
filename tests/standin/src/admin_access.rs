//! `/__admin/access` and `/__admin/private`: change who sees what while tokens, rate
//! limits and mutations stay as they are, so a test can take a project away from a
//! login mid-sync.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::access::{resolve_grant, resolve_private, AccessError, Grant};
use crate::admin::{body, AdminResult};
use crate::http::Request;
use crate::state::Shared;

/// Tells an explicit `null` (which means something here) from a forgotten field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn refused(e: AccessError) -> (u16, String) {
    (e.status(), e.message().to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessBody {
    login: String,
    company_id: u64,
    #[serde(default, deserialize_with = "present")]
    projects: Option<Value>,
}

/// What `projects` asks for: `Some(None)` takes the company away, `Some(Some(ids))` a
/// list, `None` every project.
type Wanted = Option<Option<Vec<u64>>>;

fn wanted_projects(projects: Option<Value>) -> Result<Wanted, (u16, String)> {
    let malformed = || {
        (
            400,
            "projects must be a list of project ids, \"all\" or null".to_string(),
        )
    };
    match projects.ok_or_else(malformed)? {
        Value::Null => Ok(Some(None)),
        Value::String(s) if s == "all" => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_u64().ok_or_else(malformed))
            .collect::<Result<Vec<u64>, _>>()
            .map(|ids| Some(Some(ids))),
        _ => Err(malformed()),
    }
}

pub fn set_access(shared: &Shared, req: &Request) -> AdminResult {
    let body: AccessBody = body(req)?;
    let wanted = wanted_projects(body.projects)?;
    let mut state = shared.lock();
    let state = &mut *state;
    let listed = wanted.as_ref().and_then(|w| w.as_deref());
    let (user, grant) =
        resolve_grant(state.data(), &body.login, body.company_id, listed).map_err(refused)?;
    let grant = match wanted {
        Some(None) => None,
        Some(Some(_)) => Some(grant),
        None => Some(Grant::All),
    };
    state.access.set_grant(user, body.company_id, grant);
    Ok(json!({ "ok": true }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateBody {
    resource: String,
    id: u64,
    #[serde(default, deserialize_with = "present")]
    visible_to: Option<Value>,
}

pub fn set_private(shared: &Shared, req: &Request) -> AdminResult {
    let body: PrivateBody = body(req)?;
    let malformed = || {
        (
            400,
            "visible_to must be a list of logins or null".to_string(),
        )
    };
    let visible_to: Option<Vec<String>> = match body.visible_to.ok_or_else(malformed)? {
        Value::Null => None,
        list @ Value::Array(_) => Some(serde_json::from_value(list).map_err(|_| malformed())?),
        _ => return Err(malformed()),
    };
    let mut state = shared.lock();
    let state = &mut *state;
    let (resource, users) = resolve_private(
        state.data(),
        &body.resource,
        body.id,
        visible_to.as_deref().unwrap_or(&[]),
    )
    .map_err(refused)?;
    state
        .access
        .set_private(resource, body.id, visible_to.map(|_| users));
    Ok(json!({ "ok": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_accepts_a_list_all_or_null_and_nothing_else() {
        assert_eq!(wanted_projects(Some(json!(null))), Ok(Some(None)));
        assert_eq!(wanted_projects(Some(json!("all"))), Ok(None));
        assert_eq!(
            wanted_projects(Some(json!([1_001_001, 1_001_002]))),
            Ok(Some(Some(vec![1_001_001, 1_001_002])))
        );
        for bad in [json!("some"), json!(1_001_001), json!([-1]), json!(["1"])] {
            assert_eq!(wanted_projects(Some(bad)).unwrap_err().0, 400);
        }
        assert_eq!(wanted_projects(None).unwrap_err().0, 400, "forgotten field");
    }
}
