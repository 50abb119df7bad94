//! Standard Webhooks sources (`kind: standard`, <https://www.standardwebhooks.com>):
//! verify `webhook-id`, `webhook-timestamp` and `webhook-signature`, then read the
//! body as normalized events (one or an array). A single event without `id` takes
//! the `webhook-id`, so a retried delivery dedupes.

use axum::http::HeaderMap;

use super::event::{BodyContext, Event, parse_body};
use super::signature::{SecretKey, StandardHeaders, verify_standard};
use super::source::{Rejection, header};

/// Verifies and parses one delivery for source `source`; `now` is unix seconds.
pub fn receive(
    source: &str,
    key: &SecretKey,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Vec<Event>, Rejection> {
    let h = StandardHeaders {
        id: header(headers, "webhook-id"),
        timestamp: header(headers, "webhook-timestamp"),
        signature: header(headers, "webhook-signature"),
    };
    let id = verify_standard(key, h, body, now).map_err(|e| Rejection::unauthorized(e.to_string()))?;
    if id.len() > super::event::MAX_FIELD_LEN {
        return Err(Rejection::bad_request("webhook-id header is too long"));
    }
    parse_body(body, BodyContext { source, default_id: Some(id) }).map_err(Rejection::bad_request)
}
