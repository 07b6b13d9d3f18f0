//! `page`/`per_page` and the `Total`, `Per-Page` and `Link` headers.

use crate::http::param;
use crate::world::MAX_PER_PAGE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u64,
    pub per_page: u64,
}

pub fn parse_page_request(
    pairs: &[(String, String)],
    default_per_page: u64,
) -> Result<PageRequest, String> {
    let page = match param(pairs, "page") {
        None | Some("") => 1,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| format!("page must be a positive integer, got {v:?}"))?,
    };
    let per_page = match param(pairs, "per_page") {
        None | Some("") => default_per_page,
        // Procore caps rather than refuses an oversized per_page.
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| format!("per_page must be a positive integer, got {v:?}"))?
            .min(MAX_PER_PAGE),
    };
    Ok(PageRequest { page, per_page })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Item index range of this page within the whole list.
    pub start: usize,
    pub end: usize,
    pub last_page: u64,
}

pub fn page_bounds(total: usize, request: PageRequest) -> Page {
    let per_page = request.per_page.max(1);
    let last_page = (total as u64).div_ceil(per_page).max(1);
    let start = (request.page - 1)
        .saturating_mul(per_page)
        .min(total as u64) as usize;
    let end = (start as u64 + per_page).min(total as u64) as usize;
    Page {
        start,
        end,
        last_page,
    }
}

/// The `Link` header: absolute URLs that keep the request's other query parameters
/// verbatim and set `page` and `per_page`. Page 1 carries only next and last; the last
/// page has no next.
pub fn link_header(
    base_url: &str,
    raw_query: &str,
    request: PageRequest,
    last_page: u64,
) -> String {
    let kept: Vec<&str> = raw_query
        .split('&')
        .filter(|part| !part.is_empty())
        .filter(|part| {
            let name = part.split_once('=').map_or(*part, |(k, _)| k);
            name != "page" && name != "per_page"
        })
        .collect();
    let url = |page: u64| {
        let mut query = kept.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("page={page}&per_page={}", request.per_page));
        format!("<{base_url}?{query}>")
    };
    let page = request.page;
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url((page - 1).min(last_page))));
    }
    if page < last_page {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
    }
    links.push(format!("{}; rel=\"last\"", url(last_page)));
    links.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        crate::http::parse_form(q)
    }

    #[test]
    fn page_and_per_page_default_cap_and_reject() {
        assert_eq!(
            parse_page_request(&pairs(""), 100),
            Ok(PageRequest {
                page: 1,
                per_page: 100
            })
        );
        assert_eq!(
            parse_page_request(&pairs("page=3&per_page=20000"), 100),
            Ok(PageRequest {
                page: 3,
                per_page: 10_000
            })
        );
        assert!(parse_page_request(&pairs("page=0"), 100).is_err());
        assert!(parse_page_request(&pairs("page=x"), 100).is_err());
        assert!(parse_page_request(&pairs("per_page=0"), 100).is_err());
        assert!(parse_page_request(&pairs("per_page=-5"), 100).is_err());
    }

    #[test]
    fn bounds_cover_every_item_once() {
        let req = |page| PageRequest { page, per_page: 10 };
        assert_eq!(
            page_bounds(25, req(1)),
            Page {
                start: 0,
                end: 10,
                last_page: 3
            }
        );
        assert_eq!(
            page_bounds(25, req(3)),
            Page {
                start: 20,
                end: 25,
                last_page: 3
            }
        );
        assert_eq!(
            page_bounds(25, req(4)),
            Page {
                start: 25,
                end: 25,
                last_page: 3
            }
        );
        assert_eq!(
            page_bounds(0, req(1)),
            Page {
                start: 0,
                end: 0,
                last_page: 1
            }
        );
        assert_eq!(page_bounds(20, req(2)).last_page, 2);
        let huge = PageRequest {
            page: u64::MAX,
            per_page: 10_000,
        };
        assert_eq!(page_bounds(5, huge).start, 5);
    }

    #[test]
    fn link_header_rels_follow_procore() {
        let base = "http://127.0.0.1:9/rest/v1.1/punch_items";
        let q = "project_id=1001001&page=1&per_page=10&filters%5Bupdated_at%5D=a...b";
        let first = link_header(
            base,
            q,
            PageRequest {
                page: 1,
                per_page: 10,
            },
            3,
        );
        assert_eq!(
            first,
            "<http://127.0.0.1:9/rest/v1.1/punch_items?project_id=1001001&filters%5Bupdated_at%5D=a...b&page=2&per_page=10>; rel=\"next\", \
             <http://127.0.0.1:9/rest/v1.1/punch_items?project_id=1001001&filters%5Bupdated_at%5D=a...b&page=3&per_page=10>; rel=\"last\""
        );
        let middle = link_header(
            base,
            q,
            PageRequest {
                page: 2,
                per_page: 10,
            },
            3,
        );
        for rel in ["first", "prev", "next", "last"] {
            assert!(middle.contains(&format!("rel=\"{rel}\"")), "{middle}");
        }
        assert!(middle.contains("page=1&per_page=10>; rel=\"first\""));
        assert!(middle.contains("page=1&per_page=10>; rel=\"prev\""));
        let last = link_header(
            base,
            q,
            PageRequest {
                page: 3,
                per_page: 10,
            },
            3,
        );
        assert!(!last.contains("rel=\"next\""));
        assert!(last.contains("page=2&per_page=10>; rel=\"prev\""));
        let only = link_header(
            base,
            "",
            PageRequest {
                page: 1,
                per_page: 10,
            },
            1,
        );
        assert_eq!(
            only,
            "<http://127.0.0.1:9/rest/v1.1/punch_items?page=1&per_page=10>; rel=\"last\""
        );
    }
}
