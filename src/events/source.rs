//! Event sources as `serve` runs them: the plan's `events.sources` with their
//! secrets read from the environment and their inventory maps loaded, and the
//! dispatch of a delivery to its dialect (Shopify or Standard Webhooks).

use axum::http::HeaderMap;

use super::event::Event;
use super::shopify::{self, InventoryMap};
use super::signature::{SecretKey, verify_shopify};
use super::standard;
use crate::config::check::Plan;
use crate::config::model::{EventSide, EventSourceKind};

/// Why a delivery is refused: an HTTP status and a message for the sender.
/// Messages never contain secrets or signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
}

impl Rejection {
    pub fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection { status: 400, message: message.into() }
    }
    pub fn unauthorized(message: impl Into<String>) -> Rejection {
        Rejection { status: 401, message: message.into() }
    }
}

/// A verified delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Events to queue (may be empty).
    pub events: Vec<Event>,
    /// Parts of the payload that produced no event, and why.
    pub skipped: Vec<String>,
    /// Set when the whole delivery was ignored (a Shopify topic stockshift does not use).
    pub ignored_topic: Option<String>,
}

/// One configured source, ready to verify deliveries.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub kind: EventSourceKind,
    pub side: EventSide,
    key: SecretKey,
    map: Option<InventoryMap>,
}

/// A header's value as text, if present and printable.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Source {
    /// A source from its parts (tests, tools).
    pub fn new(name: &str, kind: EventSourceKind, key: SecretKey, map: Option<InventoryMap>) -> Source {
        Source { name: name.to_owned(), kind, side: EventSide::Source, key, map }
    }

    /// The plan's sources, with secrets from their `secret_env` variables and maps
    /// loaded. Every problem is reported (one per line); a missing or empty variable
    /// is named so the operator knows what to export.
    pub fn load_all(plan: &Plan) -> Result<Vec<Source>, String> {
        let Some(ev) = &plan.config.events else {
            return Err(format!(
                "{} has no `events` section; add `events: {{ sources: [...] }}` naming the systems that send webhooks",
                plan.file
            ));
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for s in &ev.sources {
            // Kafka sources are consumed by `events::kafka`, not received here.
            if !s.kind.is_webhook() {
                continue;
            }
            let Some(secret_env) = s.secret_env.as_deref() else {
                errors.push(format!(
                    "source `{}`: no `secret_env`; name the variable holding its signing secret",
                    s.name
                ));
                continue;
            };
            let secret = match std::env::var(secret_env) {
                Ok(v) if !v.trim().is_empty() => v,
                Ok(_) => {
                    errors.push(format!(
                        "source `{}`: environment variable {} (its secret_env) is empty; put the webhook signing secret in it",
                        s.name, secret_env
                    ));
                    continue;
                }
                Err(_) => {
                    errors.push(format!(
                        "source `{}`: environment variable {} (its secret_env) is not set; export the webhook signing secret in it before starting serve",
                        s.name, secret_env
                    ));
                    continue;
                }
            };
            let key = match s.kind {
                EventSourceKind::Shopify => SecretKey::shopify(&secret),
                EventSourceKind::Standard | EventSourceKind::Kafka => SecretKey::standard(&secret),
            };
            let key = match key {
                Ok(k) => k,
                Err(e) => {
                    errors.push(format!("source `{}`: the secret in {} is not usable: {e}", s.name, secret_env));
                    continue;
                }
            };
            let map = match &s.inventory_map {
                None => None,
                Some(p) => match InventoryMap::load(&plan.resolve(p), &plan.shown(p)) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        errors.push(format!("source `{}`: {e}", s.name));
                        continue;
                    }
                },
            };
            out.push(Source { name: s.name.clone(), kind: s.kind, side: s.side, key, map });
        }
        if errors.is_empty() { Ok(out) } else { Err(errors.join("\n")) }
    }

    /// Verifies a delivery and turns it into events. `now` is unix seconds.
    pub fn receive(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Received, Rejection> {
        match self.kind {
            EventSourceKind::Kafka => {
                Err(Rejection { status: 404, message: "a Kafka source takes no webhooks".into() })
            }
            EventSourceKind::Standard => {
                let events = standard::receive(&self.name, &self.key, headers, body, now)?;
                Ok(Received { events, skipped: vec![], ignored_topic: None })
            }
            EventSourceKind::Shopify => {
                verify_shopify(&self.key, body, header(headers, "x-shopify-hmac-sha256"))
                    .map_err(|e| Rejection::unauthorized(e.to_string()))?;
                let webhook_id = header(headers, "x-shopify-webhook-id")
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| Rejection::bad_request("missing X-Shopify-Webhook-Id header"))?;
                if webhook_id.len() > 256 {
                    return Err(Rejection::bad_request("X-Shopify-Webhook-Id header is too long"));
                }
                let topic = header(headers, "x-shopify-topic")
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| Rejection::bad_request("missing X-Shopify-Topic header"))?;
                let d = shopify::Delivery {
                    topic,
                    webhook_id,
                    triggered_at: header(headers, "x-shopify-triggered-at"),
                    body,
                };
                match shopify::normalize(&self.name, self.map.as_ref(), d).map_err(Rejection::bad_request)? {
                    shopify::Outcome::Ignored => {
                        let shown: String = topic.chars().take(64).collect();
                        Ok(Received { events: vec![], skipped: vec![], ignored_topic: Some(shown) })
                    }
                    shopify::Outcome::Events { events, skipped } => {
                        Ok(Received { events, skipped, ignored_topic: None })
                    }
                }
            }
        }
    }
}
