//! Paths, page links and incremental-read filters.
//!
//! Procore pages with `page`/`per_page` and a `Link` header. The client follows `rel="next"`
//! rather than computing page numbers, because records change during a sync and `Total` is
//! only a hint.

use chrono::{DateTime, SecondsFormat, Utc};

/// The target of the `rel="next"` link in a `Link` header (RFC 8288), if any.
///
/// Tolerates any order of links, extra spaces, unquoted `rel` values, several relation types
/// in one `rel` (`rel="next last"`), upper case, and commas inside `<...>`.
pub fn next_link(link_header: &str) -> Option<String> {
    let mut rest = link_header;
    loop {
        let open = rest.find('<')?;
        let after_open = &rest[open + 1..];
        let close = after_open.find('>')?;
        let target = after_open[..close].trim();
        let params_and_rest = &after_open[close + 1..];
        let (params, next_rest) = split_params(params_and_rest);
        if params_say_next(params) {
            return Some(target.to_owned());
        }
        rest = next_rest;
    }
}

fn split_outside_quotes(s: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let (part, next) = split_once_outside_quotes(rest, separator);
        parts.push(part);
        match next {
            Some(next) => rest = next,
            None => return parts,
        }
    }
}

/// Splits at the first comma outside double quotes: this link's parameters, the remaining links.
fn split_params(s: &str) -> (&str, &str) {
    let (params, rest) = split_once_outside_quotes(s, ',');
    (params, rest.unwrap_or(""))
}

fn split_once_outside_quotes(s: &str, separator: char) -> (&str, Option<&str>) {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == separator && !in_quotes => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
    }
    (s, None)
}

fn params_say_next(params: &str) -> bool {
    split_outside_quotes(params, ';').into_iter().any(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        if !name.trim().eq_ignore_ascii_case("rel") {
            return false;
        }
        let value = value.trim().trim_matches('"');
        value
            .split_ascii_whitespace()
            .any(|rel| rel.eq_ignore_ascii_case("next"))
    })
}

/// Fills `{company_id}` and `{project_id}` in a catalog path.
///
/// Errors name the placeholder: one without a value (a project path used at company scope),
/// an unknown one (a typo in the catalog), or an unclosed brace.
pub fn expand_path(
    template: &str,
    company_id: Option<i64>,
    project_id: Option<i64>,
) -> Result<String, String> {
    expand_child_path(template, company_id, project_id, None)
}

/// [`expand_path`] for a child resource: `parent` names the placeholder its parent record's
/// id fills (`("drawing_area_id", 42)`).
pub fn expand_child_path(
    template: &str,
    company_id: Option<i64>,
    project_id: Option<i64>,
    parent: Option<(&str, i64)>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("unclosed '{{' in path {template}"));
        };
        let name = &after[..close];
        let value = match name {
            "company_id" => company_id,
            "project_id" => project_id,
            _ if parent.is_some_and(|(p, _)| p == name) => parent.map(|(_, id)| id),
            _ => return Err(format!("unknown placeholder {{{name}}} in path {template}")),
        };
        match value {
            Some(id) => out.push_str(&id.to_string()),
            None => {
                return Err(format!(
                    "no value for placeholder {{{name}}} in path {template}"
                ))
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `filters[updated_at]` query parameter for records updated in `[from, to]`.
///
/// Procore needs both bounds; timestamps are whole seconds in UTC with a `Z`.
pub fn updated_at_filter(from: DateTime<Utc>, to: DateTime<Utc>) -> (String, String) {
    (
        "filters[updated_at]".to_owned(),
        format!(
            "{}...{}",
            from.to_rfc3339_opts(SecondsFormat::Secs, true),
            to.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_from_procore_style_header() {
        let h = r#"<https://api.procore.com/rest/v1.0/projects/1/rfis?page=1&per_page=100>; rel="first", <https://api.procore.com/rest/v1.0/projects/1/rfis?page=1&per_page=100>; rel="prev", <https://api.procore.com/rest/v1.0/projects/1/rfis?page=5&per_page=100>; rel="last", <https://api.procore.com/rest/v1.0/projects/1/rfis?page=3&per_page=100>; rel="next""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.procore.com/rest/v1.0/projects/1/rfis?page=3&per_page=100")
        );
    }

    #[test]
    fn next_link_absent_on_last_page() {
        let h = r#"<https://a/x?page=1>; rel="first", <https://a/x?page=4>; rel="prev", <https://a/x?page=5>; rel="last""#;
        assert_eq!(next_link(h), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn next_link_tolerates_spacing_quoting_order_and_case() {
        assert_eq!(
            next_link("<https://a/n>;rel=next").as_deref(),
            Some("https://a/n")
        );
        assert_eq!(
            next_link("< https://a/n > ;  REL = \"Next\"").as_deref(),
            Some("https://a/n")
        );
        assert_eq!(
            next_link(
                r#"<https://a/n>; title="a, b; rel=next"; rel="last", <https://a/m>; rel="next""#
            )
            .as_deref(),
            Some("https://a/m")
        );
        assert_eq!(
            next_link(r#"<https://a/n>; rel="next last""#).as_deref(),
            Some("https://a/n")
        );
        assert_eq!(next_link(r#"<https://a/n>; rel="nextpage""#), None);
    }

    #[test]
    fn next_link_keeps_commas_inside_the_url() {
        assert_eq!(
            next_link(r#"<https://a/x?ids=1,2&page=2>; rel="next""#).as_deref(),
            Some("https://a/x?ids=1,2&page=2")
        );
    }

    #[test]
    fn next_link_of_garbage_is_none() {
        assert_eq!(next_link("<https://a/n"), None);
        assert_eq!(next_link("rel=next"), None);
    }

    #[test]
    fn expand_path_fills_placeholders() {
        assert_eq!(
            expand_path(
                "/rest/v1.0/projects?company_id={company_id}",
                Some(12),
                None
            ),
            Ok("/rest/v1.0/projects?company_id=12".to_owned())
        );
        assert_eq!(
            expand_path("/rest/v1.0/projects/{project_id}/rfis", Some(12), Some(345)),
            Ok("/rest/v1.0/projects/345/rfis".to_owned())
        );
        assert_eq!(
            expand_path("/rest/v1.0/companies", None, None),
            Ok("/rest/v1.0/companies".to_owned())
        );
    }

    #[test]
    fn expand_child_path_fills_the_parent_placeholder() {
        assert_eq!(
            expand_child_path(
                "/rest/v1.1/drawing_areas/{drawing_area_id}/drawings?project_id={project_id}",
                Some(1),
                Some(2),
                Some(("drawing_area_id", 42))
            ),
            Ok("/rest/v1.1/drawing_areas/42/drawings?project_id=2".to_owned())
        );
        let e = expand_child_path("/x/{rfi_id}", Some(1), Some(2), Some(("folder_id", 3)));
        assert!(e.unwrap_err().contains("{rfi_id}"));
    }

    #[test]
    fn expand_path_names_the_missing_or_unknown_placeholder() {
        let e = expand_path("/rest/v1.0/projects/{project_id}/rfis", Some(1), None).unwrap_err();
        assert!(e.contains("{project_id}"), "{e}");
        let e = expand_path("/rest/v1.0/x/{vendor_id}", Some(1), Some(2)).unwrap_err();
        assert!(e.contains("{vendor_id}"), "{e}");
        let e = expand_path("/rest/v1.0/x/{project_id", Some(1), Some(2)).unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
    }

    #[test]
    fn updated_at_filter_format() {
        let from =
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").map(|d| d.with_timezone(&Utc));
        let to = DateTime::parse_from_rfc3339("2026-01-02T00:00:00.750+00:00")
            .map(|d| d.with_timezone(&Utc));
        let (name, value) = updated_at_filter(from.unwrap(), to.unwrap());
        assert_eq!(name, "filters[updated_at]");
        assert_eq!(value, "2026-01-01T00:00:00Z...2026-01-02T00:00:00Z");
    }
}
