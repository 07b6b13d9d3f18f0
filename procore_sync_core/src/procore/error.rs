//! The one error type of the Procore client.
//!
//! Every message is a single line that is safe to log: response-body excerpts are cut to 200
//! characters, stripped of control characters, and scrubbed of the client secret and of the
//! token used for the request (see `sanitize`).

use chrono::{DateTime, SecondsFormat, Utc};

/// Prefix of the `BadResponse` message for a body cut short by the peer. It marks the one
/// kind of bad response worth retrying: the same request usually succeeds on a new connection,
/// whereas malformed JSON or an HTML page will come back identical.
pub(crate) const TRUNCATED_BODY: &str = "truncated response body";

#[derive(Debug, thiserror::Error)]
pub enum ProcoreError {
    /// The refresh token or authorization code was used, revoked, expired or never existed.
    /// Holds Procore's `error_description`, sanitised. The user must reconnect.
    #[error("Procore refused the grant (invalid_grant): {0}")]
    InvalidGrant(String),

    #[error(
        "Procore refused the client credentials (invalid_client): check the client id and secret"
    )]
    InvalidClient,

    /// 401 on an API call: the access token expired or was revoked. Refresh, then retry once.
    #[error("Procore answered 401 Unauthorized: the access token is expired or revoked")]
    Unauthorized,

    #[error("Procore answered 403 Forbidden: {0}")]
    Forbidden(String),

    #[error("Procore answered 404 Not Found: {0}")]
    NotFound(String),

    #[error("Procore rate limit reached (429): retry at {}", rfc3339(.retry_at))]
    RateLimited { retry_at: DateTime<Utc> },

    /// 503, which Procore uses to shed load; `retry_at` comes from `Retry-After` when sent.
    #[error("Procore is throttling requests (503){}", retry_suffix(.retry_at))]
    Throttled { retry_at: Option<DateTime<Utc>> },

    #[error("Procore server error {status}: {detail}")]
    Server { status: u16, detail: String },

    #[error("Procore answered {status}: {detail}")]
    Client { status: u16, detail: String },

    #[error("request to Procore timed out")]
    Timeout,

    #[error("could not talk to Procore: {0}")]
    Connection(String),

    /// The message starts with what failed, e.g. "TLS certificate verification failed: ...".
    #[error("{0}")]
    Tls(String),

    #[error("unusable response from Procore: {0}")]
    BadResponse(String),

    #[error("Procore response is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },

    #[error("Procore client configuration: {0}")]
    Config(String),
}

impl ProcoreError {
    pub(crate) fn truncated(detail: impl std::fmt::Display) -> ProcoreError {
        ProcoreError::BadResponse(format!("{TRUNCATED_BODY}: {detail}"))
    }

    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProcoreError::Timeout
            | ProcoreError::Connection(_)
            | ProcoreError::RateLimited { .. }
            | ProcoreError::Throttled { .. }
            | ProcoreError::Server { .. } => true,
            ProcoreError::BadResponse(message) => message.starts_with(TRUNCATED_BODY),
            _ => false,
        }
    }

    /// When Procore said to come back, if it said so.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            ProcoreError::RateLimited { retry_at } => Some(*retry_at),
            ProcoreError::Throttled { retry_at } => *retry_at,
            _ => None,
        }
    }

    /// The HTTP status behind the error, for the variants that always come from one status
    /// or record it. `InvalidGrant`/`InvalidClient` arrive as 400 or 401 and report `None`.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ProcoreError::Unauthorized => Some(401),
            ProcoreError::Forbidden(_) => Some(403),
            ProcoreError::NotFound(_) => Some(404),
            ProcoreError::RateLimited { .. } => Some(429),
            ProcoreError::Throttled { .. } => Some(503),
            ProcoreError::Server { status, .. } | ProcoreError::Client { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn retry_suffix(at: &Option<DateTime<Utc>>) -> String {
    match at {
        Some(at) => format!(": retry at {}", rfc3339(at)),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_variants() {
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        assert!(ProcoreError::Timeout.is_retryable());
        assert!(ProcoreError::Connection("reset".into()).is_retryable());
        assert!(ProcoreError::RateLimited { retry_at: at }.is_retryable());
        assert!(ProcoreError::Throttled { retry_at: None }.is_retryable());
        assert!(ProcoreError::Server {
            status: 500,
            detail: String::new()
        }
        .is_retryable());
        assert!(ProcoreError::truncated("closed after 10 of 20 bytes").is_retryable());

        assert!(!ProcoreError::BadResponse("malformed JSON".into()).is_retryable());
        assert!(!ProcoreError::Unauthorized.is_retryable());
        assert!(!ProcoreError::Forbidden(String::new()).is_retryable());
        assert!(!ProcoreError::NotFound(String::new()).is_retryable());
        assert!(!ProcoreError::InvalidGrant(String::new()).is_retryable());
        assert!(!ProcoreError::InvalidClient.is_retryable());
        assert!(!ProcoreError::Client {
            status: 400,
            detail: String::new()
        }
        .is_retryable());
        assert!(!ProcoreError::TooLarge { limit: 1 }.is_retryable());
        assert!(!ProcoreError::Tls("x".into()).is_retryable());
        assert!(!ProcoreError::Config("x".into()).is_retryable());
    }

    #[test]
    fn retry_at_and_status() {
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let limited = ProcoreError::RateLimited { retry_at: at };
        assert_eq!(limited.retry_at(), Some(at));
        assert_eq!(limited.http_status(), Some(429));
        assert_eq!(
            limited.to_string(),
            "Procore rate limit reached (429): retry at 2026-01-01T00:00:00Z"
        );
        assert_eq!(ProcoreError::Throttled { retry_at: None }.retry_at(), None);
        assert_eq!(
            ProcoreError::Throttled { retry_at: Some(at) }.retry_at(),
            Some(at)
        );
        assert_eq!(
            ProcoreError::Server {
                status: 502,
                detail: String::new()
            }
            .http_status(),
            Some(502)
        );
        assert_eq!(ProcoreError::Timeout.http_status(), None);
        assert_eq!(ProcoreError::Timeout.retry_at(), None);
    }
}
