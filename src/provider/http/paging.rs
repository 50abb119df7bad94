//! Walking a paged listing: page numbers, cursors, or next links (in the body or
//! a `Link` header). Each page's body goes to a callback; the walk stops on the
//! manifest's signal, on an empty page, or with an error when a page repeats or
//! `max_pages` is exceeded (a listing that never ends is a bug, not data).

use reqwest::Url;
use serde_json::Value;

use super::jsonpath::{JsonPath, scalar_text};
use super::manifest::Paging;
use super::transport::{Req, Transport};
use crate::provider::ProviderError;

/// Replaces (or adds) one query parameter.
pub fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != name).map(|(k, v)| (k.into(), v.into())).collect();
    let mut u = url.clone();
    u.set_query(None);
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        q.append_pair(name, value);
    }
    u
}

/// The `rel="next"` target of a `Link` header.
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

fn number(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Sends `first` and every following page; `on_page` gets each body and returns
/// how many records it held.
pub fn each_page(
    t: &mut Transport,
    first: Req,
    paging: &Paging,
    max_pages: u64,
    mut on_page: impl FnMut(&Value) -> Result<usize, ProviderError>,
) -> Result<(), ProviderError> {
    let what = t.what().to_owned();
    let invalid = |message: String| ProviderError::Invalid { what: what.clone(), message };
    let mut req = first;
    let mut page_no = match paging {
        Paging::Page { param, first, .. } => {
            req.url = with_param(&req.url, param, &first.to_string());
            *first
        }
        _ => 0,
    };
    let mut seen: u64 = 0;
    let mut previous_cursor: Option<String> = None;
    for pages in 1.. {
        if pages > max_pages {
            return Err(invalid(format!(
                "the listing did not end after {max_pages} pages; check the manifest's `read.pagination`"
            )));
        }
        let resp = t.send(&req)?;
        if !resp.is_success() {
            return Err(invalid(format!("{} answered {}: {}", resp.request, resp.status, resp.snippet())));
        }
        let body = resp.json(&what)?;
        let n = on_page(&body)?;
        seen += n as u64;
        if n == 0 {
            return Ok(());
        }
        let next_value = |path: &JsonPath| path.first(&body).and_then(scalar_text).filter(|s| !s.is_empty());
        match paging {
            Paging::None => return Ok(()),
            Paging::Page { param, total_pages, total_pages_header, total, page_size, first } => {
                let last_page = total_pages.as_ref().and_then(|p| number(p.first(&body))).or_else(|| {
                    total_pages_header.as_deref().and_then(|h| resp.header(h)).and_then(|v| v.trim().parse().ok())
                });
                if let Some(last) = last_page
                    && page_no + 1 - first >= last
                {
                    return Ok(());
                }
                if let Some(total) = total.as_ref().and_then(|p| number(p.first(&body)))
                    && seen >= total
                {
                    return Ok(());
                }
                if page_size.is_some_and(|size| n < size) {
                    return Ok(());
                }
                page_no += 1;
                req.url = with_param(&req.url, param, &page_no.to_string());
            }
            Paging::Cursor { param, next } => {
                let Some(cursor) = next_value(next) else { return Ok(()) };
                if previous_cursor.as_deref() == Some(cursor.as_str()) {
                    return Err(invalid(format!(
                        "the cursor `{cursor}` came back twice; the listing does not advance"
                    )));
                }
                req.url = with_param(&req.url, param, &cursor);
                previous_cursor = Some(cursor);
            }
            Paging::Link { next } => {
                let target = match next {
                    Some(p) => next_value(p),
                    None => resp.header("link").and_then(link_next),
                };
                let Some(target) = target else { return Ok(()) };
                let url = req
                    .url
                    .join(&target)
                    .map_err(|e| invalid(format!("the next-page link `{target}` is not a URL: {e}")))?;
                if url == req.url {
                    return Err(invalid(format!("the next-page link `{target}` points at the same page")));
                }
                if url.origin() != req.url.origin() {
                    return Err(invalid(format!(
                        "the next-page link `{target}` leaves the API's host; stockshift does not send the credential elsewhere"
                    )));
                }
                req.url = url;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_replaced() {
        let u = Url::parse("http://h/x?limit=5&page=1").unwrap();
        assert_eq!(with_param(&u, "page", "2").as_str(), "http://h/x?limit=5&page=2");
        assert_eq!(with_param(&u, "after", "a b").as_str(), "http://h/x?limit=5&page=1&after=a+b");
    }

    #[test]
    fn link_headers() {
        let h = r#"<https://h/x?page=3>; rel="next", <https://h/x?page=1>; rel="prev""#;
        assert_eq!(link_next(h).as_deref(), Some("https://h/x?page=3"));
        assert_eq!(link_next(r#"<https://h/x?page=1>; rel="prev""#), None);
        assert_eq!(link_next("garbage"), None);
    }
}
