//! Shopify webhooks (`kind: shopify`) turned into normalized events.
//!
//! | topic | events |
//! | --- | --- |
//! | `orders/create` | one `delta = -quantity` per line item with a SKU, at the order's location |
//! | `orders/cancelled` | one `delta = +quantity` per line item with a SKU (returned to stock) |
//! | `refunds/create` | one `delta = +quantity` per refund line item restocked (`return`, `cancel`, `legacy_restock`) at its `location_id` |
//! | `inventory_levels/update` | one `qty = available` for the (item, location) in the inventory map |
//! | anything else | nothing (answered 200 so Shopify keeps the subscription) |
//!
//! Ids: `{X-Shopify-Webhook-Id}` for single-event topics and
//! `{X-Shopify-Webhook-Id}:{n}` for the n-th (1-based) line item of the payload's
//! list, so a retried delivery produces the same ids and is deduplicated.
//! Ordering: `sequence` is the millisecond Unix time of `X-Shopify-Triggered-At`
//! (else the body's `updated_at`, else `created_at`), never the arrival time.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::event::{Change, Event, MAX_FIELD_LEN};

/// `inventory_item_id,location_id` → `sku,location`, and `location_id` → `location`.
#[derive(Debug, Clone, Default)]
pub struct InventoryMap {
    file: String,
    items: HashMap<(String, String), (String, String)>,
    locations: HashMap<String, String>,
}

impl InventoryMap {
    /// Reads a CSV with header `inventory_item_id,location_id,sku,location`. Every bad
    /// line is reported; a location id mapped to two names is an error.
    pub fn load(path: &Path, shown: &str) -> Result<InventoryMap, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read inventory map {shown}: {e}"))?;
        Self::parse(&bytes, shown)
    }

    /// Parses the CSV text of an inventory map (`shown` names it in messages).
    pub fn parse(bytes: &[u8], shown: &str) -> Result<InventoryMap, String> {
        let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(bytes);
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| format!("{shown}:1: unreadable header: {e}"))?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        let col = |n: &str| headers.iter().position(|h| h == n);
        let (Some(ci), Some(cl), Some(cs), Some(cn)) =
            (col("inventory_item_id"), col("location_id"), col("sku"), col("location"))
        else {
            return Err(format!(
                "{shown}:1: the header must be `inventory_item_id,location_id,sku,location` (found `{}`)",
                headers.join(",")
            ));
        };
        let mut map = InventoryMap { file: shown.to_owned(), ..Default::default() };
        let mut errors = Vec::new();
        for rec in rdr.records() {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{shown}:{}: unreadable row: {e}", e.position().map_or(0, |p| p.line())));
                    continue;
                }
            };
            let line = rec.position().map_or(0, |p| p.line());
            let get = |i: usize| rec.get(i).unwrap_or("").trim().to_owned();
            let (item, loc_id, sku, loc) = (get(ci), get(cl), get(cs), get(cn));
            if [&item, &loc_id, &sku, &loc].iter().any(|v| v.is_empty()) {
                errors.push(format!("{shown}:{line}: every column must be filled in"));
                continue;
            }
            if [&item, &loc_id].iter().any(|v| !v.bytes().all(|b| b.is_ascii_digit())) {
                errors.push(format!("{shown}:{line}: inventory_item_id and location_id are numeric Shopify ids"));
                continue;
            }
            if let Some(prev) = map.locations.get(&loc_id)
                && *prev != loc
            {
                errors.push(format!("{shown}:{line}: location_id {loc_id} is mapped to both `{prev}` and `{loc}`"));
                continue;
            }
            map.locations.insert(loc_id.clone(), loc.clone());
            if map.items.insert((item.clone(), loc_id.clone()), (sku, loc)).is_some() {
                errors.push(format!("{shown}:{line}: inventory_item_id {item} at location_id {loc_id} appears twice"));
            }
        }
        if errors.is_empty() { Ok(map) } else { Err(errors.join("\n")) }
    }

    /// The (sku, location) of an inventory item at a location.
    pub fn item(&self, item: &str, location_id: &str) -> Option<(&str, &str)> {
        self.items.get(&(item.to_owned(), location_id.to_owned())).map(|(s, l)| (s.as_str(), l.as_str()))
    }

    /// The location name of a Shopify location id.
    pub fn location(&self, location_id: &str) -> Option<&str> {
        self.locations.get(location_id).map(String::as_str)
    }

    /// The only location of a single-location map.
    fn single_location(&self) -> Option<&str> {
        let mut names = self.locations.values();
        let first = names.next()?;
        names.all(|n| n == first).then_some(first.as_str())
    }
}

/// One Shopify delivery, as received.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// `X-Shopify-Topic`.
    pub topic: &'a str,
    /// `X-Shopify-Webhook-Id` (stable across retries).
    pub webhook_id: &'a str,
    /// `X-Shopify-Triggered-At`, when sent.
    pub triggered_at: Option<&'a str>,
    pub body: &'a [u8],
}

/// What a delivery turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Events to queue (possibly none) and notes on line items that were skipped.
    Events { events: Vec<Event>, skipped: Vec<String> },
    /// A topic stockshift does not use.
    Ignored,
}

/// The topics that produce events.
pub const TOPICS: [&str; 4] = ["orders/create", "orders/cancelled", "refunds/create", "inventory_levels/update"];

/// Normalizes a verified Shopify delivery for source `source`. An `Err` is a
/// client error (HTTP 400) with a message saying what is wrong.
pub fn normalize(source: &str, map: Option<&InventoryMap>, d: Delivery<'_>) -> Result<Outcome, String> {
    if !TOPICS.contains(&d.topic) {
        return Ok(Outcome::Ignored);
    }
    let body: Value = serde_json::from_slice(d.body).map_err(|e| format!("malformed JSON body: {e}"))?;
    if !body.is_object() {
        return Err(format!("the {} payload must be a JSON object", d.topic));
    }
    let (sequence, occurred_at) = when(&d, &body)?;
    let no_map = || {
        format!(
            "source `{source}` has no inventory_map; {} webhooks name Shopify location ids, which must be mapped to locations (events.sources[].inventory_map)",
            d.topic
        )
    };
    let ctx = Ctx { source, webhook_id: d.webhook_id, sequence, occurred_at };
    match d.topic {
        "orders/create" | "orders/cancelled" => {
            let map = map.ok_or_else(no_map)?;
            let sign = if d.topic == "orders/create" { -1 } else { 1 };
            let location = match id_field(&body, "location_id")? {
                Some(id) => map.location(&id).ok_or_else(|| unknown_location(map, &id, "the order's location_id"))?,
                None => map.single_location().ok_or_else(|| {
                    format!(
                        "the order has no location_id and the inventory map {} names several locations, so the stock location is unknown; orders are accepted without location_id only when the map has a single location",
                        map.file
                    )
                })?,
            };
            let items = list(&body, "line_items")?;
            let mut events = Vec::new();
            let mut skipped = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let n = i + 1;
                let Some(sku) = sku_of(item, &format!("line_items[{i}]"))? else {
                    skipped.push(format!("line item {n}{} has no SKU", describe_item(item)));
                    continue;
                };
                let qty = quantity(item, &format!("line_items[{i}]"))?;
                events.push(ctx.event(Some(n), sku, location.to_owned(), Change::Delta(sign * qty)));
            }
            Ok(Outcome::Events { events, skipped })
        }
        "refunds/create" => {
            let map = map.ok_or_else(no_map)?;
            let items = list(&body, "refund_line_items")?;
            let mut events = Vec::new();
            let mut skipped = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let n = i + 1;
                let at = format!("refund_line_items[{i}]");
                let restock = match item.get("restock_type") {
                    Some(Value::String(s)) => s.as_str(),
                    None | Some(Value::Null) => "no_restock",
                    Some(_) => return Err(format!("`{at}.restock_type` must be a string")),
                };
                if !matches!(restock, "return" | "cancel" | "legacy_restock") {
                    skipped.push(format!("refund line item {n} is not restocked (restock_type {restock})"));
                    continue;
                }
                let line_item = item.get("line_item").unwrap_or(&Value::Null);
                let Some(sku) = sku_of(line_item, &format!("{at}.line_item"))? else {
                    skipped.push(format!("refund line item {n}{} has no SKU", describe_item(line_item)));
                    continue;
                };
                let qty = quantity(item, &at)?;
                let location = match id_field(item, "location_id")? {
                    Some(id) => map.location(&id).ok_or_else(|| unknown_location(map, &id, &format!("{at}.location_id")))?,
                    None => map.single_location().ok_or_else(|| {
                        format!("`{at}` is restocked but has no location_id, and the inventory map {} names several locations", map.file)
                    })?,
                };
                events.push(ctx.event(Some(n), sku, location.to_owned(), Change::Delta(qty)));
            }
            Ok(Outcome::Events { events, skipped })
        }
        "inventory_levels/update" => {
            let item = id_field(&body, "inventory_item_id")?.ok_or("missing `inventory_item_id`")?;
            let loc = id_field(&body, "location_id")?.ok_or("missing `location_id`")?;
            let map = map.ok_or_else(no_map)?;
            let (sku, location) = map.item(&item, &loc).ok_or_else(|| {
                format!(
                    "inventory_item_id {item} at location_id {loc} is not in the inventory map {}; add a line `{item},{loc},SKU,LOCATION`",
                    map.file
                )
            })?;
            let available = match body.get("available") {
                None => return Err("missing `available`".into()),
                Some(Value::Null) => {
                    return Ok(Outcome::Events {
                        events: vec![],
                        skipped: vec![format!("available is null for inventory_item_id {item} (stock not tracked)")],
                    });
                }
                Some(v) => v.as_i64().ok_or_else(|| format!("`available` must be an integer, got {v}"))?,
            };
            let ev = ctx.event(None, sku.to_owned(), location.to_owned(), Change::Qty(available));
            Ok(Outcome::Events { events: vec![ev], skipped: vec![] })
        }
        _ => unreachable!("checked against TOPICS"),
    }
}

struct Ctx<'a> {
    source: &'a str,
    webhook_id: &'a str,
    sequence: i64,
    occurred_at: jiff::Timestamp,
}

impl Ctx<'_> {
    fn event(&self, n: Option<usize>, sku: String, location: String, change: Change) -> Event {
        let id = match n {
            Some(n) => format!("{}:{n}", self.webhook_id),
            None => self.webhook_id.to_owned(),
        };
        Event {
            id,
            source: self.source.to_owned(),
            sku,
            location,
            change,
            sequence: self.sequence,
            occurred_at: self.occurred_at,
        }
    }
}

/// The delivery's ordering key: `X-Shopify-Triggered-At`, else `updated_at`, else `created_at`.
fn when(d: &Delivery<'_>, body: &Value) -> Result<(i64, jiff::Timestamp), String> {
    let (text, what) = if let Some(t) = d.triggered_at {
        (t.trim().to_owned(), "X-Shopify-Triggered-At header")
    } else if let Some(Value::String(t)) = body.get("updated_at") {
        (t.clone(), "`updated_at`")
    } else if let Some(Value::String(t)) = body.get("created_at") {
        (t.clone(), "`created_at`")
    } else {
        return Err(
            "no X-Shopify-Triggered-At header and no `updated_at` or `created_at` in the body; the event cannot be ordered"
                .into(),
        );
    };
    let ts: jiff::Timestamp = text.parse().map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        format!("{what} {shown:?} is not an RFC 3339 timestamp")
    })?;
    Ok((ts.as_millisecond(), ts))
}

/// A numeric Shopify id (a JSON number, or a string of digits), as text.
fn id_field(v: &Value, name: &str) -> Result<Option<String>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(s.clone()))
        }
        Some(other) => Err(format!("`{name}` must be a numeric id, got {other}")),
    }
}

fn list<'v>(body: &'v Value, name: &str) -> Result<&'v Vec<Value>, String> {
    match body.get(name) {
        Some(Value::Array(a)) => Ok(a),
        None => Err(format!("missing `{name}`")),
        Some(_) => Err(format!("`{name}` must be an array")),
    }
}

fn sku_of(item: &Value, at: &str) -> Result<Option<String>, String> {
    if !item.is_object() {
        return Err(format!("`{at}` must be an object"));
    }
    match item.get("sku") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD_LEN || s.chars().any(char::is_control) => {
            Err(format!("`{at}.sku` is too long or contains control characters"))
        }
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(format!("`{at}.sku` must be a string")),
    }
}

/// `item.quantity`, a count of units; `at` is the item's path for messages.
fn quantity(item: &Value, at: &str) -> Result<i64, String> {
    let at = format!("{at}.quantity");
    match item.get("quantity") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(q) if (0..=1_000_000_000).contains(&q) => Ok(q),
            _ => Err(format!("`{at}` must be a whole number from 0 to 1000000000, got {n}")),
        },
        None => Err(format!("missing `{at}`")),
        Some(other) => Err(format!("`{at}` must be an integer, got {other}")),
    }
}

fn describe_item(item: &Value) -> String {
    let id = item.get("id").filter(|v| v.is_u64()).map(|v| format!("id {v}"));
    let name = item.get("name").or_else(|| item.get("title")).and_then(Value::as_str).map(|t| {
        let t: String = t.chars().take(40).collect();
        format!("{t:?}")
    });
    match (id, name) {
        (Some(i), Some(n)) => format!(" ({i}, {n})"),
        (Some(s), None) | (None, Some(s)) => format!(" ({s})"),
        (None, None) => String::new(),
    }
}

fn unknown_location(map: &InventoryMap, id: &str, what: &str) -> String {
    format!("{what} {id} is not in the inventory map {}; add a line naming location_id {id} and its location", map.file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "inventory_item_id,location_id,sku,location\n\
                       808950810,655441491,IPOD2008PINK,WH-EAST\n\
                       39072856,655441491,IPOD2008GREEN,WH-EAST\n\
                       808950810,905684977,IPOD2008PINK,WH-WEST\n";

    fn map() -> InventoryMap {
        InventoryMap::parse(MAP.as_bytes(), "inventory_map.csv").unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events/shopify").join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn run(topic: &str, body: &[u8], triggered: Option<&str>) -> Result<Outcome, String> {
        normalize("shop", Some(&map()), Delivery { topic, webhook_id: "wh-1", triggered_at: triggered, body })
    }

    fn events(o: Outcome) -> (Vec<Event>, Vec<String>) {
        match o {
            Outcome::Events { events, skipped } => (events, skipped),
            Outcome::Ignored => panic!("ignored"),
        }
    }

    #[test]
    fn orders_create_one_negative_delta_per_sku_line() {
        let (ev, skipped) =
            events(run("orders/create", &fixture("orders_create.json"), Some("2026-11-27T10:00:00.123Z")).unwrap());
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (ev[0].id.as_str(), ev[0].sku.as_str(), ev[0].location.as_str()),
            ("wh-1:1", "IPOD2008PINK", "WH-EAST")
        );
        assert_eq!(ev[0].change, Change::Delta(-2));
        assert_eq!(ev[1].id, "wh-1:3");
        assert_eq!(ev[1].change, Change::Delta(-1));
        assert_eq!(ev[0].sequence, 1_795_773_600_123);
        assert_eq!(ev[0].source, "shop");
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("line item 2") && skipped[0].contains("no SKU"), "{skipped:?}");
    }

    #[test]
    fn orders_cancelled_returns_every_line() {
        let (ev, _) = events(run("orders/cancelled", &fixture("orders_cancelled.json"), None).unwrap());
        assert_eq!(ev.iter().map(|e| e.change).collect::<Vec<_>>(), vec![Change::Delta(2), Change::Delta(1)]);
        // No Triggered-At header: the body's updated_at orders it.
        assert_eq!(ev[0].occurred_at.to_string(), "2026-11-27T11:00:00Z");
    }

    #[test]
    fn refunds_create_only_restocked_lines() {
        let (ev, skipped) = events(run("refunds/create", &fixture("refunds_create.json"), None).unwrap());
        assert_eq!(ev.len(), 2);
        assert_eq!((ev[0].id.as_str(), ev[0].location.as_str(), ev[0].change), ("wh-1:1", "WH-WEST", Change::Delta(1)));
        assert_eq!(
            (ev[1].id.as_str(), ev[1].sku.as_str(), ev[1].change),
            ("wh-1:3", "IPOD2008GREEN", Change::Delta(3))
        );
        assert!(skipped.iter().any(|s| s.contains("no_restock")), "{skipped:?}");
    }

    #[test]
    fn inventory_levels_update_sets_available() {
        let (ev, _) = events(run("inventory_levels/update", &fixture("inventory_levels_update.json"), None).unwrap());
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].id.as_str(), ev[0].sku.as_str(), ev[0].location.as_str()),
            ("wh-1", "IPOD2008PINK", "WH-WEST")
        );
        assert_eq!(ev[0].change, Change::Qty(6));
        let unknown = br#"{"inventory_item_id":1,"location_id":2,"available":5,"updated_at":"2026-11-27T10:00:00Z"}"#;
        let err = run("inventory_levels/update", unknown, None).unwrap_err();
        assert!(err.contains("inventory_item_id 1 at location_id 2 is not in the inventory map"), "{err}");
    }

    #[test]
    fn unknown_topics_are_ignored_and_bad_bodies_explained() {
        assert_eq!(run("products/update", b"not even json", None).unwrap(), Outcome::Ignored);
        const T: Option<&str> = Some("2026-11-27T10:00:00Z");
        let cases: &[(&str, &[u8], Option<&str>, &str)] = &[
            ("orders/create", b"{", T, "malformed JSON"),
            ("orders/create", b"[]", T, "must be a JSON object"),
            ("orders/create", br#"{"line_items":[]}"#, None, "cannot be ordered"),
            ("orders/create", br#"{"updated_at":"yesterday","line_items":[]}"#, None, "not an RFC 3339"),
            ("orders/create", br#"{"location_id":1,"line_items":[]}"#, T, "location_id 1 is not in the inventory map"),
            ("orders/create", br#"{"location_id":655441491}"#, T, "missing `line_items`"),
            (
                "orders/create",
                br#"{"location_id":655441491,"line_items":[{"sku":"A","quantity":-1}]}"#,
                T,
                "line_items[0].quantity",
            ),
            (
                "orders/create",
                br#"{"location_id":655441491,"line_items":[{"sku":"A"}]}"#,
                T,
                "missing `line_items[0].quantity`",
            ),
            ("orders/create", br#"{"location_id":"abc","line_items":[]}"#, T, "`location_id` must be a numeric id"),
            ("orders/create", br#"{"line_items":[]}"#, T, "no location_id"),
            (
                "refunds/create",
                br#"{"refund_line_items":[{"restock_type":"return","quantity":1,"line_item":{"sku":"A"}}]}"#,
                T,
                "no location_id",
            ),
            ("inventory_levels/update", br#"{"location_id":2}"#, T, "missing `inventory_item_id`"),
            (
                "inventory_levels/update",
                br#"{"inventory_item_id":808950810,"location_id":905684977,"available":"6"}"#,
                T,
                "`available` must be an integer",
            ),
        ];
        for (topic, body, triggered, want) in cases {
            let err = run(topic, body, *triggered).unwrap_err();
            assert!(err.contains(want), "{topic} {}\n  error: {err}\n  wanted: {want}", String::from_utf8_lossy(body));
        }
        let no_map = normalize(
            "shop",
            None,
            Delivery {
                topic: "orders/create",
                webhook_id: "w",
                triggered_at: Some("2026-11-27T10:00:00Z"),
                body: b"{}",
            },
        )
        .unwrap_err();
        assert!(no_map.contains("has no inventory_map"), "{no_map}");
    }

    #[test]
    fn single_location_maps_need_no_order_location() {
        let m = InventoryMap::parse(b"inventory_item_id,location_id,sku,location\n1,7,A,MAIN\n2,7,B,MAIN\n", "m.csv")
            .unwrap();
        let body = br#"{"updated_at":"2026-11-27T10:00:00Z","line_items":[{"sku":"A","quantity":1}]}"#;
        let d = Delivery { topic: "orders/create", webhook_id: "w", triggered_at: None, body };
        let (ev, _) = events(normalize("shop", Some(&m), d).unwrap());
        assert_eq!(ev[0].location, "MAIN");
    }

    #[test]
    fn inventory_map_errors() {
        let bad =
            "inventory_item_id,location_id,sku,location\n1,7,A,MAIN\n1,7,B,MAIN\n2,7,C,OTHER\nx,7,D,MAIN\n3,7,,MAIN\n";
        let err = InventoryMap::parse(bad.as_bytes(), "m.csv").unwrap_err();
        assert!(err.contains("m.csv:3: inventory_item_id 1 at location_id 7 appears twice"), "{err}");
        assert!(err.contains("m.csv:4: location_id 7 is mapped to both `MAIN` and `OTHER`"), "{err}");
        assert!(err.contains("m.csv:5: inventory_item_id and location_id are numeric"), "{err}");
        assert!(err.contains("m.csv:6: every column"), "{err}");
        assert!(InventoryMap::parse(b"sku,location\n", "m.csv").unwrap_err().contains("header must be"));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), t in 0usize..4) {
                let _ = run(TOPICS[t], &bytes, None);
                let _ = run(TOPICS[t], &bytes, Some("2026-11-27T10:00:00Z"));
            }

            #[test]
            fn mutated_fixtures_never_panic(at in 0usize..2000, byte in any::<u8>(), t in 0usize..4) {
                let names = ["orders_create.json", "orders_cancelled.json", "refunds_create.json", "inventory_levels_update.json"];
                let mut b = fixture(names[t]);
                let i = at % b.len();
                b[i] = byte;
                let _ = run(TOPICS[t], &b, None);
            }
        }
    }
}
