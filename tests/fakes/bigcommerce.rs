//! A fake BigCommerce V3 Inventory API on 127.0.0.1, for tests of the `http`
//! provider driven by the shipped `providers/bigcommerce.yaml` (not a product
//! feature).
//!
//! Implements what the manifest relies on: `X-Auth-Token` auth (401),
//! `GET /stores/{hash}/v3/inventory/items` (items with their per-location levels,
//! `sku:in` and `location_id:in` filters, `page` / `limit` paging with
//! `meta.pagination`) and `PUT /stores/{hash}/v3/inventory/adjustments/absolute`
//! (`{reason, items: [{location_id, sku, quantity}]}`, all-or-nothing, 422 with
//! BigCommerce's problem shape for bad items, `{transaction_id}` on success).
//!
//! Test hooks: fail the next N writes (5xx), throttle the next N requests (429
//! with `X-Rate-Limit-Time-Reset-Ms`), garbage answers, a concurrent change right
//! after the next write, writes that only become visible after some reads (the
//! real endpoint applies adjustments asynchronously), refused SKUs, counters.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

/// Request counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub reads: u64,
    pub writes: u64,
    pub unauthorized: u64,
    pub throttled: u64,
    pub failed: u64,
}

/// Everything the fake store holds; tests may lock and change it directly.
#[derive(Debug, Default)]
pub struct Store {
    /// (sku, location_id) → total_inventory_onhand.
    pub levels: BTreeMap<(String, u64), i64>,
    /// location_id → location code.
    pub locations: BTreeMap<u64, String>,
    pub store_hash: String,
    pub token: String,
    pub fail_writes: usize,
    pub throttle: usize,
    pub reset_ms: u64,
    pub garbage_reads: usize,
    pub race_after_write: Option<(String, u64, i64)>,
    /// Adjustments accepted but not yet visible, and how many reads until they are.
    pub lagging: Vec<(String, u64, i64)>,
    pub lag_reads: usize,
    pub lag_next_write: usize,
    pub reject_skus: BTreeSet<String>,
    pub counters: Counters,
    pub last_write: Option<Value>,
    /// Every request's query string, for assertions.
    pub queries: Vec<String>,
}

type Shared = Arc<Mutex<Store>>;

/// A running fake store. Dropping it stops the server.
pub struct BigCommerce {
    addr: SocketAddr,
    store: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for BigCommerce {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl BigCommerce {
    /// Starts a store `abc123` with locations 1 and 2, accepting `token`.
    pub fn start(token: &str) -> BigCommerce {
        let store: Shared = Arc::new(Mutex::new(Store {
            token: token.to_owned(),
            store_hash: "abc123".into(),
            locations: [(1, "BC-LOCATION-1".to_owned()), (2, "BC-LOCATION-2".to_owned())].into_iter().collect(),
            reset_ms: 100,
            ..Store::default()
        }));
        let app = Router::new()
            .route("/stores/{hash}/v3/inventory/items", get(items))
            .route("/stores/{hash}/v3/inventory/adjustments/absolute", put(absolute))
            .with_state(store.clone());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(l.local_addr().unwrap()).unwrap();
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().unwrap();
        BigCommerce { addr, store, stop: Some(stop_tx) }
    }

    /// The store's API root, for a plan's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/stores/abc123", self.addr)
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, sku: &str, location: u64, qty: i64) {
        self.store().levels.insert((sku.into(), location), qty);
    }

    pub fn get(&self, sku: &str, location: u64) -> Option<i64> {
        self.store().levels.get(&(sku.to_owned(), location)).copied()
    }

    pub fn counters(&self) -> Counters {
        self.store().counters
    }

    pub fn fail_next_writes(&self, n: usize) {
        self.store().fail_writes = n;
    }

    /// The next `n` requests get 429 with `X-Rate-Limit-Time-Reset-Ms: ms`.
    pub fn throttle_next(&self, n: usize, ms: u64) {
        let mut s = self.store();
        s.throttle = n;
        s.reset_ms = ms;
    }

    pub fn garbage_next_reads(&self, n: usize) {
        self.store().garbage_reads = n;
    }

    pub fn race_after_next_write(&self, sku: &str, location: u64, qty: i64) {
        self.store().race_after_write = Some((sku.into(), location, qty));
    }

    /// The next write is accepted but only visible after `reads` more reads.
    pub fn lag_next_write(&self, reads: usize) {
        self.store().lag_next_write = reads;
    }
}

fn problem(status: StatusCode, title: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"status": status.as_u16(), "title": title, "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes", "errors": {}})
            .to_string(),
    )
        .into_response()
}

fn gate(s: &mut Store, hash: &str, headers: &HeaderMap) -> Option<Response> {
    if hash != s.store_hash {
        return Some(problem(StatusCode::NOT_FOUND, "Store not found"));
    }
    if headers.get("x-auth-token").and_then(|v| v.to_str().ok()) != Some(s.token.as_str()) {
        s.counters.unauthorized += 1;
        return Some(problem(StatusCode::UNAUTHORIZED, "You are not authorized to access this resource"));
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        s.counters.throttled += 1;
        let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        let h = r.headers_mut();
        h.insert("x-rate-limit-time-reset-ms", s.reset_ms.to_string().parse().unwrap());
        h.insert("x-rate-limit-requests-left", "0".parse().unwrap());
        return Some(r);
    }
    None
}

async fn items(
    State(st): State<Shared>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = gate(&mut s, &hash, &headers) {
        return r;
    }
    s.counters.reads += 1;
    s.queries.push(q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
    if s.garbage_reads > 0 {
        s.garbage_reads -= 1;
        return (StatusCode::OK, [("content-type", "application/json")], "{\"data\": [ {\"identity\": ")
            .into_response();
    }
    if s.lag_reads > 0 {
        s.lag_reads -= 1;
        if s.lag_reads == 0 {
            for (sku, loc, qty) in std::mem::take(&mut s.lagging) {
                s.levels.insert((sku, loc), qty);
            }
        }
    }
    let param = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let skus: Option<BTreeSet<String>> = param("sku:in").map(|v| v.split(',').map(str::to_owned).collect());
    let locs: Option<BTreeSet<u64>> =
        param("location_id:in").map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect());
    let page: usize = param("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let limit: usize = param("limit").and_then(|p| p.parse().ok()).unwrap_or(50).clamp(1, 1000);
    let mut by_sku: BTreeMap<&str, Vec<(u64, i64)>> = BTreeMap::new();
    for ((sku, loc), qty) in &s.levels {
        if skus.as_ref().is_some_and(|f| !f.contains(sku)) || locs.as_ref().is_some_and(|f| !f.contains(loc)) {
            continue;
        }
        by_sku.entry(sku).or_default().push((*loc, *qty));
    }
    let total = by_sku.len();
    let total_pages = total.div_ceil(limit);
    let data: Vec<Value> = by_sku
        .iter()
        .enumerate()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|(i, (sku, levels))| {
            json!({
                "identity": {"sku": sku, "variant_id": 1000 + i, "product_id": 500 + i, "sku_id": null},
                "locations": levels.iter().map(|(loc, qty)| json!({
                    "location_id": loc,
                    "location_code": s.locations.get(loc).cloned().unwrap_or_default(),
                    "location_name": format!("Location {loc}"),
                    "available_to_sell": qty,
                    "total_inventory_onhand": qty,
                    "location_enabled": true,
                    "settings": {"safety_stock": 0, "is_in_stock": *qty > 0, "warning_level": 0, "bin_picking_number": ""}
                })).collect::<Vec<_>>()
            })
        })
        .collect();
    let link = |p: usize| format!("?limit={limit}&page={p}");
    axum::Json(json!({
        "data": data,
        "meta": {"pagination": {
            "total": total, "count": data.len(), "per_page": limit, "current_page": page, "total_pages": total_pages,
            "links": {"previous": if page > 1 { link(page - 1) } else { String::new() }, "current": link(page),
                      "next": if page < total_pages { link(page + 1) } else { String::new() }}
        }}
    }))
    .into_response()
}

async fn absolute(State(st): State<Shared>, Path(hash): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = gate(&mut s, &hash, &headers) {
        return r;
    }
    s.counters.writes += 1;
    if s.fail_writes > 0 {
        s.fail_writes -= 1;
        s.counters.failed += 1;
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "The request body is not valid JSON");
    };
    let Some(items) = body.get("items").and_then(Value::as_array).filter(|a| !a.is_empty() && a.len() <= 2000) else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "items: 1 to 2000 items are required");
    };
    let mut parsed = Vec::new();
    for it in items {
        let loc = it.get("location_id").and_then(Value::as_u64);
        let sku = it.get("sku").and_then(Value::as_str);
        let qty = it.get("quantity").and_then(Value::as_i64);
        let (Some(loc), Some(sku), Some(qty)) = (loc, sku, qty) else {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, "Payload contains invalid fields");
        };
        if !s.locations.contains_key(&loc) {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, &format!("Location with id {loc} does not exist"));
        }
        if s.reject_skus.contains(sku) || qty < 0 {
            return problem(StatusCode::UNPROCESSABLE_ENTITY, &format!("[Item with sku {sku} is not valid]"));
        }
        parsed.push((sku.to_owned(), loc, qty));
    }
    if s.lag_next_write > 0 {
        s.lag_reads = std::mem::take(&mut s.lag_next_write);
        s.lagging = parsed;
    } else {
        for (sku, loc, qty) in parsed {
            s.levels.insert((sku, loc), qty);
        }
    }
    s.last_write = Some(body);
    if let Some((sku, loc, qty)) = s.race_after_write.take() {
        s.levels.insert((sku, loc), qty);
    }
    let n = s.counters.writes;
    axum::Json(json!({"transaction_id": format!("txn-{n}")})).into_response()
}
