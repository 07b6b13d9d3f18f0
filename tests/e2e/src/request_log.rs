//! The stand-in's request log, one typed line per request, for tests that check what the
//! extension asked Procore for: who, when, which scope, with which window.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// One line of the stand-in's request log (`GET /__admin/requests`).
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedRequest {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub login: Option<String>,
    pub status: u16,
    pub resource: Option<String>,
    pub company_id: Option<i64>,
    pub project_id: Option<i64>,
    pub ts: String,
}

impl LoggedRequest {
    /// Lines as the stand-in's admin API returns them.
    pub fn parse_all(lines: Vec<serde_json::Value>) -> Vec<LoggedRequest> {
        lines
            .into_iter()
            .map(|e| serde_json::from_value(e).expect("request log entry"))
            .collect()
    }

    pub fn at(&self) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&self.ts)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("bad ts {:?} in the request log: {e}", self.ts))
    }

    pub fn by(&self, login: &str) -> bool {
        self.login.as_deref() == Some(login)
    }

    pub fn is_api(&self) -> bool {
        self.path.starts_with("/rest/")
    }

    pub fn is_token_grant(&self) -> bool {
        self.method == "POST" && self.path == "/oauth/token"
    }

    pub fn target(&self) -> String {
        format!("{}?{}", self.path, self.query)
    }

    /// `(from, to)` of `filters[updated_at]`, if the request carried one.
    pub fn updated_at_window(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let start = self.query.find("filters[updated_at]=")? + "filters[updated_at]=".len();
        let value = self.query[start..].split('&').next().unwrap_or("");
        let (from, to) = value
            .split_once("...")
            .unwrap_or_else(|| panic!("filters[updated_at] without both bounds: {:?}", self.query));
        let parse = |s: &str| {
            DateTime::parse_from_rfc3339(&s.replace(' ', "+"))
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|e| panic!("bad filters[updated_at] bound {s:?}: {e}"))
        };
        Some((parse(from), parse(to)))
    }
}
