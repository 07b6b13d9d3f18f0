//! OAuth 2.0 against Procore's login host: code exchange, refresh, revoke.
//!
//! Procore refresh tokens are single use: a successful refresh returns a new pair and the old
//! refresh token stops working at once. Callers must persist the returned [`TokenPair`]
//! before doing anything else with it, and must hold the user's credentials row lock across
//! the call so two processes never spend the same refresh token.

use chrono::{DateTime, Utc};

use super::error::ProcoreError;
use super::http::Client;
use super::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenPair {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// `created_at + expires_in` from the token response (now + `expires_in` if Procore left
    /// `created_at` out). Procore has documented 15 minutes, 2 hours and 90 minutes over the
    /// years, so the response is the only source of truth.
    pub expires_at: DateTime<Utc>,
}

impl TokenPair {
    /// Parses a token endpoint success body. Messages never include the body: it holds the
    /// tokens.
    pub fn from_token_response(body: &[u8], now: DateTime<Utc>) -> Result<TokenPair, ProcoreError> {
        let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            ProcoreError::BadResponse(format!(
                "token response is not JSON ({} bytes): {e}",
                body.len()
            ))
        })?;
        if !json.is_object() {
            return Err(ProcoreError::BadResponse(
                "token response is not a JSON object".into(),
            ));
        }
        let text = |name: &str| -> Result<Secret, ProcoreError> {
            match json.get(name).and_then(|v| v.as_str()) {
                Some(s) if !s.is_empty() => Ok(Secret::new(s)),
                _ => Err(ProcoreError::BadResponse(format!(
                    "token response has no {name}"
                ))),
            }
        };
        let access_token = text("access_token")?;
        let refresh_token = text("refresh_token")?;
        let expires_in = json.get("expires_in").and_then(seconds).ok_or_else(|| {
            ProcoreError::BadResponse("token response has no numeric expires_in".into())
        })?;
        let created_at = match json.get("created_at") {
            None | Some(serde_json::Value::Null) => now,
            Some(value) => seconds(value)
                .and_then(|epoch| DateTime::from_timestamp(epoch, 0))
                .ok_or_else(|| {
                    ProcoreError::BadResponse("token response has a non-numeric created_at".into())
                })?,
        };
        let expires_at = created_at
            .checked_add_signed(chrono::Duration::seconds(expires_in))
            .ok_or_else(|| {
                ProcoreError::BadResponse("token response expiry is out of range".into())
            })?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_at,
        })
    }
}

/// Whole seconds from a JSON number or numeric string (both appear in the wild).
fn seconds(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f as i64)
        }),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

impl Client {
    /// Trades an authorization code (single use, valid 10 minutes) for a token pair.
    /// `redirect_uri` must be the one the code was issued for.
    pub fn exchange_code(
        &self,
        code: &Secret,
        redirect_uri: &str,
    ) -> Result<TokenPair, ProcoreError> {
        let body = self.post_login_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", self.client_id()),
                ("client_secret", self.client_secret().expose()),
                ("code", code.expose()),
                ("redirect_uri", redirect_uri),
            ],
            &[code.expose()],
        )?;
        TokenPair::from_token_response(&body, Utc::now())
    }

    /// Spends `refresh_token` for a new pair. On success the old refresh token is dead:
    /// persist the result before anything else. `InvalidGrant` means the user must reconnect.
    pub fn refresh_token(&self, refresh_token: &Secret) -> Result<TokenPair, ProcoreError> {
        let body = self.post_login_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", self.client_id()),
                ("client_secret", self.client_secret().expose()),
                ("refresh_token", refresh_token.expose()),
            ],
            &[refresh_token.expose()],
        )?;
        // The new tokens are in `body`; a parse error must not echo them.
        TokenPair::from_token_response(&body, Utc::now())
    }

    /// Revokes a token (access or refresh; Procore revokes the whole pair). For disconnect.
    pub fn revoke(&self, token: &Secret) -> Result<(), ProcoreError> {
        self.post_login_form(
            "/oauth/revoke",
            &[
                ("token", token.expose()),
                ("client_id", self.client_id()),
                ("client_secret", self.client_secret().expose()),
            ],
            &[token.expose()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(epoch, 0).unwrap_or_default()
    }

    #[test]
    fn expiry_is_created_at_plus_expires_in() {
        let body = br#"{"access_token":"a","token_type":"bearer","expires_in":5400,"refresh_token":"r","created_at":1767225600}"#;
        let pair = TokenPair::from_token_response(body, at(2_000_000_000));
        let pair = pair.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pair.expires_at, at(1_767_225_600 + 5400));
        assert_eq!(pair.access_token.expose(), "a");
        assert_eq!(pair.refresh_token.expose(), "r");
    }

    #[test]
    fn expiry_falls_back_to_now_without_created_at() {
        let body = br#"{"access_token":"a","expires_in":"900","refresh_token":"r"}"#;
        let pair = TokenPair::from_token_response(body, at(1000)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pair.expires_at, at(1900));
    }

    #[test]
    fn missing_fields_are_bad_responses_without_token_text() {
        for body in [
            &br#"{"refresh_token":"secret-r","expires_in":10}"#[..],
            br#"{"access_token":"secret-a","expires_in":10}"#,
            br#"{"access_token":"secret-a","refresh_token":"secret-r"}"#,
            br#"{"access_token":"secret-a","refresh_token":"secret-r","expires_in":10,"created_at":"x"}"#,
            br#"["secret-a"]"#,
            br#"{"access_token":"secret-a""#,
        ] {
            match TokenPair::from_token_response(body, at(0)) {
                Err(e @ ProcoreError::BadResponse(_)) => assert!(!e.to_string().contains("secret-"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
