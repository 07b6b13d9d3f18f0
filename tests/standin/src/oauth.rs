//! The `/oauth/...` routes over the token store.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::http::{parse_form, percent_encode, Request, Response};
use crate::state::State;

/// Form-encoded (the documented form) or JSON parameters, with query parameters as a
/// fallback for clients that put them in the URL.
pub fn params(req: &Request) -> Result<HashMap<String, String>, String> {
    let mut params: HashMap<String, String> = req.query_pairs().into_iter().collect();
    let is_json = req
        .header("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"))
        || req.body.trim_ascii_start().starts_with(b"{");
    if is_json {
        let value: Value = serde_json::from_slice(&req.body)
            .map_err(|e| format!("the JSON body does not parse: {e}"))?;
        let Value::Object(map) = value else {
            return Err("the JSON body must be an object".to_string());
        };
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s,
                Value::Null => continue,
                other => other.to_string(),
            };
            params.insert(k, text);
        }
    } else {
        let body = String::from_utf8_lossy(&req.body);
        params.extend(parse_form(&body));
    }
    Ok(params)
}

/// The login a `/oauth/token` request acts for, without consuming anything (fault
/// rules can be aimed at one login's refreshes).
pub fn token_request_login(state: &State, req: &Request) -> Option<String> {
    let params = params(req).ok()?;
    let secret = params.get("refresh_token").or_else(|| params.get("code"))?;
    state.tokens.login_of(secret).map(str::to_string)
}

fn client_ok(state: &State, params: &HashMap<String, String>) -> bool {
    params.get("client_id") == Some(&state.world.client_id)
        && params.get("client_secret") == Some(&state.world.client_secret)
}

fn invalid_client() -> Response {
    Response::oauth_error(
        401,
        "invalid_client",
        "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
    )
}

/// `POST /oauth/token`.
pub fn token(state: &mut State, req: &Request, now: u64) -> (Response, Option<String>) {
    if req.method != "POST" {
        return (Response::errors(405, "use POST"), None);
    }
    let params = match params(req) {
        Ok(p) => p,
        Err(e) => return (Response::oauth_error(400, "invalid_request", &e), None),
    };
    if !client_ok(state, &params) {
        return (invalid_client(), None);
    }
    let ttl = state.world.access_token_ttl_s;
    let missing =
        |name: &str| Response::oauth_error(400, "invalid_request", &format!("{name} is required"));
    let result = match params.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri)) = (params.get("code"), params.get("redirect_uri"))
            else {
                return (missing("code and redirect_uri"), None);
            };
            let result = state.tokens.exchange_code(code, redirect_uri, now, ttl);
            if result.is_ok() {
                state.stats.token_grants += 1;
            }
            result
        }
        Some("refresh_token") => {
            let Some(refresh_token) = params.get("refresh_token") else {
                return (missing("refresh_token"), None);
            };
            let login = state.tokens.login_of(refresh_token).map(str::to_string);
            let result = state.tokens.refresh(refresh_token, now, ttl);
            match &result {
                Ok(_) => state.stats.refreshes += 1,
                Err(e) => {
                    return (Response::oauth_error(400, "invalid_grant", e), login);
                }
            }
            result
        }
        other => {
            let message = format!(
                "grant_type {:?} is not supported here (authorization_code, refresh_token)",
                other.unwrap_or("")
            );
            return (
                Response::oauth_error(400, "unsupported_grant_type", &message),
                None,
            );
        }
    };
    match result {
        Ok((login, pair)) => (
            Response::json(200, &pair.to_json())
                .with_header("Cache-Control", "no-store")
                .with_header("Pragma", "no-cache"),
            Some(login),
        ),
        Err(e) => (Response::oauth_error(400, "invalid_grant", e), None),
    }
}

/// `GET /oauth/authorize`: the `login` parameter stands in for the person signing in.
pub fn authorize(state: &mut State, req: &Request, now: u64) -> (Response, Option<String>) {
    let pairs = req.query_pairs();
    let get = |name: &str| crate::http::param(&pairs, name);
    if get("client_id") != Some(state.world.client_id.as_str()) {
        return (invalid_client(), None);
    }
    let Some(redirect_uri) = get("redirect_uri").filter(|u| !u.is_empty()) else {
        return (
            Response::oauth_error(400, "invalid_request", "redirect_uri is required"),
            None,
        );
    };
    if get("response_type") != Some("code") {
        return (
            Response::oauth_error(
                400,
                "unsupported_response_type",
                "response_type must be code",
            ),
            None,
        );
    }
    let login = get("login").unwrap_or("");
    if state.world.user_number(login).is_none() {
        return (
            Response::oauth_error(
                400,
                "access_denied",
                "login must name a user of the world (user-1 .. user-N)",
            ),
            None,
        );
    }
    let code = state.tokens.mint_code(login, redirect_uri, now);
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let mut location = format!("{redirect_uri}{separator}code={}", percent_encode(&code));
    if let Some(client_state) = get("state") {
        location.push_str(&format!("&state={}", percent_encode(client_state)));
    }
    (
        Response::new(302, "text/html", Vec::new()).with_header("Location", location),
        Some(login.to_string()),
    )
}

/// `POST /oauth/revoke`: revokes the pair the token belongs to; unknown tokens are
/// not an error (RFC 7009).
pub fn revoke(state: &mut State, req: &Request) -> (Response, Option<String>) {
    let params = match params(req) {
        Ok(p) => p,
        Err(e) => return (Response::oauth_error(400, "invalid_request", &e), None),
    };
    if (params.contains_key("client_id") || params.contains_key("client_secret"))
        && !client_ok(state, &params)
    {
        return (invalid_client(), None);
    }
    let Some(token) = params.get("token") else {
        return (
            Response::oauth_error(400, "invalid_request", "token is required"),
            None,
        );
    };
    let login = state.tokens.login_of(token).map(str::to_string);
    state.tokens.revoke_token(token);
    (Response::json(200, &json!({})), login)
}

/// `GET /oauth/token/info`.
pub fn token_info(state: &State, req: &Request, now: u64) -> (Response, Option<String>) {
    let Some(token) = req.bearer_token() else {
        return (
            Response::oauth_error(401, "invalid_token", "A bearer token is required."),
            None,
        );
    };
    match state.tokens.info(token, now) {
        Ok(info) => {
            let body = json!({
                "resource_owner_id": state.world.user_number(&info.login),
                "scope": [],
                "expires_in_seconds": info.expires_in_seconds,
                "application": { "uid": state.world.client_id },
                "created_at": info.created_at,
            });
            (Response::json(200, &body), Some(info.login))
        }
        Err(e) => (Response::oauth_error(401, "invalid_token", e), None),
    }
}
