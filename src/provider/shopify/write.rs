//! Conditional writes: `inventorySetQuantities` with `changeFromQuantity`.
//!
//! One batch is one mutation of up to 250 quantities, each carrying the value
//! read at plan time as `changeFromQuantity`, under a derived `@idempotent` key.
//! Shopify applies all of it or none of it: one stale row rejects the whole
//! mutation with `CHANGE_FROM_QUANTITY_STALE`. So, on a stale answer, the rows
//! it names are read again and sorted out (already holding the new value:
//! *already applied*; holding something else: *conflict*, never overwritten),
//! and the rest is sent again as a new request (new variables, new key).
//!
//! A create (a key absent at plan time: the item is not stocked at the
//! location) reads the level first. Still absent: the item is activated there
//! (`inventoryActivate`, which starts it at 0) and then set with
//! `changeFromQuantity: 0`. A level that exists at 0 counts as still absent; at
//! the new value, as already applied; at anything else, as a conflict. No write
//! ever sends `changeFromQuantity: null`. A SKU with no inventory item fails
//! (not retriable): stockshift sets stock, it does not create products.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use super::catalog::Catalog;
use super::client::{Client, Request};
use super::idempotency::Keys;
use super::{graphql as gql, read};
use crate::provider::{ProviderError, Write, WriteOutcome};

/// Resends of one batch after stale rows before the rest is handed back as
/// retriable (each resend removes at least one row, so this is a safety net).
const MAX_ROUNDS: u32 = 12;
/// `IDEMPOTENCY_CONCURRENT_REQUEST` answers waited out per batch.
const MAX_CONCURRENT: u32 = 5;

/// What a batch needs from the provider.
pub struct Ctx<'a> {
    pub client: &'a mut Client,
    pub catalog: &'a Catalog,
    pub keys: &'a mut Keys,
    /// `available` or `on_hand`.
    pub name: &'a str,
}

/// A quantity to send: write `idx` of the batch, from `from` to `to`.
#[derive(Debug, Clone)]
struct Pending {
    idx: usize,
    item: String,
    loc: String,
    from: i64,
    to: i64,
    create: bool,
}

fn failed(retriable: bool, message: impl Into<String>) -> WriteOutcome {
    WriteOutcome::Failed { retriable, message: message.into() }
}

/// Sorts a re-read value out: `None` = still holds `from`, send again.
fn classify(p: &Pending, current: Option<i64>) -> Option<WriteOutcome> {
    match current {
        Some(c) if c == p.to => Some(WriteOutcome::AlreadyApplied),
        Some(c) if c == p.from => None,
        None if p.create => Some(failed(true, "the level was deactivated while it was being created")),
        found => Some(WriteOutcome::Conflict { found }),
    }
}

/// `gid://stockshift/Operation/<op>`: shown in the shop's inventory history.
fn reference_uri(op_id: &str) -> String {
    let op: String =
        op_id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).take(200).collect();
    format!("gid://stockshift/Operation/{op}")
}

pub fn write_batch(ctx: &mut Ctx<'_>, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
    let mut out: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
    let mut pending = Vec::new();
    let mut creates = Vec::new();
    let mut seen = HashSet::new();
    for (idx, w) in writes.iter().enumerate() {
        let ids = ctx.catalog.item(&w.sku).and_then(|item| Ok((item, ctx.catalog.location(&w.location)?)));
        let (item, loc) = match ids {
            Ok(ids) => ids,
            Err(message) => {
                out[idx] = Some(failed(false, message));
                continue;
            }
        };
        if !seen.insert((item, loc)) {
            // Shopify refuses a pair twice in one mutation; the apply loop sends it again alone.
            out[idx] = Some(failed(true, "the same key twice in one batch; sent again separately"));
            continue;
        }
        let p = Pending {
            idx,
            item: item.to_owned(),
            loc: loc.to_owned(),
            from: w.expected.unwrap_or(0),
            to: w.new,
            create: w.expected.is_none(),
        };
        if p.create { creates.push(p) } else { pending.push(p) }
    }
    if !creates.is_empty() {
        pending.extend(prepare_creates(ctx, creates, &mut out)?);
    }
    if !pending.is_empty() {
        pending.sort_by_key(|p| p.idx);
        set_rounds(ctx, pending, &mut out)?;
    }
    Ok(out.into_iter().map(|o| o.unwrap_or_else(|| failed(true, "no outcome was recorded for this write"))).collect())
}

/// Reads the levels of the creates, activates the absent ones and returns those
/// to set (from 0).
fn prepare_creates(
    ctx: &mut Ctx<'_>,
    creates: Vec<Pending>,
    out: &mut [Option<WriteOutcome>],
) -> Result<Vec<Pending>, ProviderError> {
    let pairs: Vec<(&str, &str)> = creates.iter().map(|p| (p.item.as_str(), p.loc.as_str())).collect();
    let current = read::levels_at(ctx.client, ctx.name, &pairs)?;
    let mut ready = Vec::new();
    let mut absent = Vec::new();
    for (p, cur) in creates.into_iter().zip(current) {
        match cur {
            None => absent.push(p),
            Some(c) => match classify(&p, Some(c)) {
                None => ready.push(p),
                Some(o) => out[p.idx] = Some(o),
            },
        }
    }
    for chunk in absent.chunks(gql::ACTIVATIONS_PER_REQUEST) {
        let keys: Vec<String> =
            chunk.iter().map(|p| ctx.keys.key("activate", 0, &format!("{}\n{}", p.item, p.loc))).collect();
        let mut vars = serde_json::Map::new();
        vars.insert("names".into(), json!([ctx.name]));
        for (i, p) in chunk.iter().enumerate() {
            vars.insert(format!("i{i}"), json!(p.item));
            vars.insert(format!("l{i}"), json!(p.loc));
        }
        let query = gql::activate(&keys);
        let data = ctx.client.execute(&Request {
            name: "StockshiftActivate",
            query: &query,
            variables: Value::Object(vars),
            est_cost: gql::SET_COST * chunk.len() as f64,
        })?;
        for (i, p) in chunk.iter().enumerate() {
            let payload = data.get(format!("a{i}")).unwrap_or(&Value::Null);
            let errors = user_error_messages(payload);
            if !errors.is_empty() {
                out[p.idx] =
                    Some(failed(false, format!("Shopify refused to stock the item here: {}", errors.join("; "))));
                continue;
            }
            match payload.get("inventoryLevel").filter(|l| !l.is_null()).map(|l| gql::quantity(l, ctx.name)) {
                Some(Some(q)) => match classify(p, Some(q)) {
                    None => ready.push(p.clone()),
                    Some(o) => out[p.idx] = Some(o),
                },
                _ => out[p.idx] = Some(failed(true, "inventoryActivate returned no level")),
            }
        }
    }
    Ok(ready)
}

fn user_error_messages(payload: &Value) -> Vec<String> {
    payload
        .get("userErrors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| e.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_owned())
        .collect()
}

/// What Shopify said about one mutation.
#[derive(Debug, Default)]
struct Verdict {
    /// Rows (positions in the sent list) reported stale.
    stale: HashSet<usize>,
    /// A stale report without a row.
    stale_unplaced: bool,
    /// Rows refused for good, with the message.
    refused: HashMap<usize, String>,
    /// Rows whose level no longer exists.
    vanished: HashSet<usize>,
    /// A refusal without a row: the whole batch fails.
    refused_all: Option<String>,
    /// The key must change (Shopify remembers it with other variables or a failure).
    new_key: bool,
    /// Another request with this key is in flight.
    concurrent: bool,
    messages: Vec<String>,
}

/// The position named by a userError's `field` (`["input", "quantities", "3", ...]`).
fn row_of(error: &Value) -> Option<usize> {
    let field = error.get("field")?.as_array()?;
    let at = field.iter().position(|f| f.as_str() == Some("quantities"))?;
    match field.get(at + 1)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        _ => None,
    }
}

fn verdict(errors: &[Value], rows: usize) -> Verdict {
    let mut v = Verdict::default();
    for e in errors {
        let code = e.get("code").and_then(Value::as_str).unwrap_or("");
        let message = e.get("message").and_then(Value::as_str).unwrap_or("(no message)");
        let row = row_of(e).filter(|r| *r < rows);
        v.messages.push(if code.is_empty() { message.to_owned() } else { format!("{message} ({code})") });
        match (code, row) {
            ("CHANGE_FROM_QUANTITY_STALE" | "COMPARE_QUANTITY_STALE", Some(r)) => {
                v.stale.insert(r);
            }
            ("CHANGE_FROM_QUANTITY_STALE" | "COMPARE_QUANTITY_STALE", None) => v.stale_unplaced = true,
            ("IDEMPOTENCY_KEY_PARAMETER_MISMATCH" | "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED", _) => v.new_key = true,
            ("IDEMPOTENCY_CONCURRENT_REQUEST", _) => v.concurrent = true,
            ("ITEM_NOT_STOCKED_AT_LOCATION", Some(r)) => {
                v.vanished.insert(r);
            }
            (_, Some(r)) => {
                v.refused.insert(r, format!("Shopify refused the quantity: {message} ({code})"));
            }
            (_, None) => v.refused_all = Some(format!("Shopify refused the batch: {message} ({code})")),
        }
    }
    v
}

/// Sends the set mutation, sorting out stale rows, until every row has an outcome.
fn set_rounds(
    ctx: &mut Ctx<'_>,
    mut pending: Vec<Pending>,
    out: &mut [Option<WriteOutcome>],
) -> Result<(), ProviderError> {
    let reference = reference_uri(ctx.keys.op_id());
    let input = |pending: &[Pending]| {
        json!({
            "name": ctx.name,
            "reason": "correction",
            "referenceDocumentUri": reference,
            "quantities": pending.iter().map(|p| json!({
                "inventoryItemId": p.item,
                "locationId": p.loc,
                "quantity": p.to,
                "changeFromQuantity": p.from,
            })).collect::<Vec<_>>(),
        })
    };
    let first_payload = input(&pending).to_string();
    let mut round = 0;
    let mut concurrent = 0;
    while !pending.is_empty() {
        if round >= MAX_ROUNDS {
            for p in &pending {
                out[p.idx] = Some(failed(true, "Shopify kept reporting a stale compare; try again"));
            }
            break;
        }
        let vars = input(&pending);
        let payload = vars.to_string();
        let key = ctx.keys.key("set", round, &payload);
        let query = gql::set_quantities(&key);
        let data = ctx.client.execute(&Request {
            name: "StockshiftSet",
            query: &query,
            variables: json!({ "input": vars }),
            est_cost: gql::SET_COST,
        })?;
        let result = data.get("inventorySetQuantities").unwrap_or(&Value::Null);
        let Some(errors) = result.get("userErrors").and_then(Value::as_array) else {
            return Err(ProviderError::Unavailable {
                what: "shopify".into(),
                message: "inventorySetQuantities answered without userErrors; the outcome is unknown".into(),
            });
        };
        if errors.is_empty() {
            for p in &pending {
                out[p.idx] = Some(WriteOutcome::Applied);
            }
            break;
        }
        let v = verdict(errors, pending.len());
        if v.concurrent {
            concurrent += 1;
            if concurrent > MAX_CONCURRENT {
                return Err(ProviderError::Unavailable {
                    what: "shopify".into(),
                    message: "another request with the same idempotency key is still running".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(300 * u64::from(concurrent)));
            continue;
        }
        if let Some(message) = &v.refused_all {
            for p in &pending {
                out[p.idx] = Some(failed(false, message.clone()));
            }
            break;
        }
        let mut settled: HashSet<usize> = HashSet::new();
        for (r, message) in &v.refused {
            out[pending[*r].idx] = Some(failed(false, message.clone()));
            settled.insert(*r);
        }
        for r in &v.vanished {
            out[pending[*r].idx] = Some(WriteOutcome::Conflict { found: None });
            settled.insert(*r);
        }
        let recheck: Vec<usize> = if v.stale_unplaced {
            (0..pending.len()).filter(|r| !settled.contains(r)).collect()
        } else {
            let mut r: Vec<usize> = v.stale.iter().copied().filter(|r| !settled.contains(r)).collect();
            r.sort_unstable();
            r
        };
        if !recheck.is_empty() {
            let pairs: Vec<(&str, &str)> =
                recheck.iter().map(|&r| (pending[r].item.as_str(), pending[r].loc.as_str())).collect();
            let current = read::levels_at(ctx.client, ctx.name, &pairs)?;
            for (&r, cur) in recheck.iter().zip(current) {
                if let Some(o) = classify(&pending[r], cur) {
                    out[pending[r].idx] = Some(o);
                    settled.insert(r);
                }
            }
        }
        if settled.is_empty() && !v.new_key {
            // Nothing moved: a refusal stockshift cannot place. Hand it back as retriable.
            let message = format!("Shopify refused the batch: {}", v.messages.join("; "));
            for p in &pending {
                out[p.idx] = Some(failed(true, message.clone()));
            }
            break;
        }
        let mut r = 0;
        pending.retain(|_| {
            r += 1;
            !settled.contains(&(r - 1))
        });
        round += 1;
    }
    ctx.keys.complete("set", &first_payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(from: i64, to: i64, create: bool) -> Pending {
        Pending { idx: 0, item: "i".into(), loc: "l".into(), from, to, create }
    }

    #[test]
    fn a_reread_value_is_sorted_out() {
        assert_eq!(classify(&p(2, 5, false), Some(5)), Some(WriteOutcome::AlreadyApplied));
        assert_eq!(classify(&p(2, 5, false), Some(2)), None);
        assert_eq!(classify(&p(2, 5, false), Some(17)), Some(WriteOutcome::Conflict { found: Some(17) }));
        assert_eq!(classify(&p(2, 5, false), None), Some(WriteOutcome::Conflict { found: None }));
        assert!(matches!(classify(&p(0, 5, true), None), Some(WriteOutcome::Failed { retriable: true, .. })));
    }

    #[test]
    fn user_errors_are_placed_on_their_rows() {
        let errors = vec![
            json!({"field": ["input", "quantities", "1", "changeFromQuantity"], "message": "stale", "code": "CHANGE_FROM_QUANTITY_STALE"}),
            json!({"field": ["input", "quantities", 2, "quantity"], "message": "too high", "code": "INVALID_QUANTITY_TOO_HIGH"}),
            json!({"field": ["input", "quantities", "0"], "message": "gone", "code": "ITEM_NOT_STOCKED_AT_LOCATION"}),
            json!({"field": ["input", "quantities", "9"], "message": "out of range", "code": "CHANGE_FROM_QUANTITY_STALE"}),
        ];
        let v = verdict(&errors, 3);
        assert_eq!(v.stale, HashSet::from([1]));
        assert!(v.stale_unplaced, "a row beyond the batch is not trusted");
        assert!(v.refused.contains_key(&2));
        assert_eq!(v.vanished, HashSet::from([0]));
        assert!(v.refused_all.is_none());
        let v = verdict(&[json!({"field": null, "message": "bad name", "code": "INVALID_NAME"})], 3);
        assert!(v.refused_all.unwrap().contains("INVALID_NAME"));
        let v = verdict(&[json!({"message": "x", "code": "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"})], 1);
        assert!(v.new_key);
        // Garbage never panics.
        let v = verdict(&[json!(3), json!({"field": "x"}), json!({"field": [1, 2]})], 2);
        assert!(v.refused_all.is_some());
    }

    #[test]
    fn the_reference_uri_is_a_safe_gid() {
        assert_eq!(reference_uri("apply-2026/11 x"), "gid://stockshift/Operation/apply-2026-11-x");
    }
}
