//! A fake Magento 2 MSI REST API on 127.0.0.1, for tests (not a product feature).
//!
//! It implements the parts of the documented behaviour stockshift relies on:
//! bearer-token auth (401 with Magento's error shape), `GET
//! /V1/inventory/source-items` with `searchCriteria` filter groups (ORed filters
//! inside a group, ANDed groups; `eq`, `in`, `neq`), sorting by SKU and source,
//! `pageSize` / `currentPage` with `total_count` (and Magento's habit of
//! answering a page past the end with the last page), `POST
//! /V1/inventory/source-items` as an all-or-nothing upsert that refuses unknown
//! sources, and `GET /V1/inventory/get-product-salable-quantity/{sku}/{stockId}`
//! (source quantities of the stock's sources plus reservations).
//!
//! Test hooks: fail the next N writes (5xx), throttle the next N requests (429
//! with `Retry-After`), answer the next N reads with garbage, change a key right
//! after the next write lands (a concurrent writer the read-back must catch),
//! refuse a SKU, cap the page size, and count requests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// Request counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub reads: u64,
    pub writes: u64,
    pub salable: u64,
    pub unauthorized: u64,
    pub throttled: u64,
    pub failed: u64,
}

/// Everything the fake store holds; tests may lock and change it directly.
#[derive(Debug, Default)]
pub struct Store {
    /// (sku, source_code) → (quantity, status).
    pub items: BTreeMap<(String, String), (f64, i64)>,
    pub sources: BTreeSet<String>,
    pub token: String,
    /// stock id → its sources.
    pub stocks: BTreeMap<u32, Vec<String>>,
    /// sku → sum of reservations (negative for open orders).
    pub reservations: BTreeMap<String, f64>,
    pub fail_writes: usize,
    pub fail_status: u16,
    pub throttle: usize,
    pub retry_after_secs: u64,
    pub garbage_reads: usize,
    /// Applied right after the next write that lands.
    pub race_after_write: Option<(String, String, f64)>,
    pub reject_skus: BTreeSet<String>,
    /// Largest page served (Magento's input limit caps pages at 300).
    pub max_page_size: Option<usize>,
    pub counters: Counters,
    pub last_write: Option<Value>,
    /// Every `searchCriteria[pageSize]` asked for.
    pub page_sizes: Vec<usize>,
}

type Shared = Arc<Mutex<Store>>;

/// A running fake store. Dropping it stops the server.
pub struct Magento {
    addr: SocketAddr,
    store: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Magento {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Magento {
    /// Starts a store with these sources, accepting `token`.
    pub fn start(token: &str, sources: &[&str]) -> Magento {
        let store: Shared = Arc::new(Mutex::new(Store {
            token: token.to_owned(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            fail_status: 503,
            retry_after_secs: 1,
            ..Store::default()
        }));
        let app = Router::new()
            .route("/rest/V1/inventory/source-items", get(list).post(save))
            .route("/rest/V1/inventory/get-product-salable-quantity/{sku}/{stock}", get(salable))
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
        Magento { addr, store, stop: Some(stop_tx) }
    }

    /// The REST root to put in a plan's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/rest", self.addr)
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, sku: &str, source: &str, qty: f64) {
        self.store().items.insert((sku.into(), source.into()), (qty, i64::from(qty > 0.0)));
    }

    pub fn get(&self, sku: &str, source: &str) -> Option<f64> {
        self.store().items.get(&(sku.to_owned(), source.to_owned())).map(|v| v.0)
    }

    pub fn counters(&self) -> Counters {
        self.store().counters
    }

    /// The next `n` writes fail with `status` (nothing is saved).
    pub fn fail_next_writes(&self, n: usize, status: u16) {
        let mut s = self.store();
        s.fail_writes = n;
        s.fail_status = status;
    }

    /// The next `n` requests are throttled (429, `Retry-After: secs`).
    pub fn throttle_next(&self, n: usize, secs: u64) {
        let mut s = self.store();
        s.throttle = n;
        s.retry_after_secs = secs;
    }

    /// The next `n` reads answer 200 with a body that is not JSON.
    pub fn garbage_next_reads(&self, n: usize) {
        self.store().garbage_reads = n;
    }

    /// Right after the next write lands, set this key (a concurrent writer).
    pub fn race_after_next_write(&self, sku: &str, source: &str, qty: f64) {
        self.store().race_after_write = Some((sku.into(), source.into(), qty));
    }
}

fn magento_error(status: StatusCode, message: &str, parameters: Value) -> Response {
    (status, axum::Json(json!({"message": message, "parameters": parameters}))).into_response()
}

/// Auth, throttling: `Some(response)` when the request stops here.
fn gate(s: &mut Store, headers: &HeaderMap) -> Option<Response> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(format!("Bearer {}", s.token).as_str()) {
        s.counters.unauthorized += 1;
        return Some(magento_error(
            StatusCode::UNAUTHORIZED,
            "The consumer isn't authorized to access %resources.",
            json!({"resources": "Magento_InventoryApi::source"}),
        ));
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        s.counters.throttled += 1;
        let mut r = magento_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests", json!([]));
        r.headers_mut().insert("retry-after", s.retry_after_secs.to_string().parse().unwrap());
        return Some(r);
    }
    None
}

/// `searchCriteria[filterGroups][g][filters][f][field|value|condition_type]`.
type Groups = BTreeMap<usize, BTreeMap<usize, (String, String, String)>>;

fn parse_criteria(q: &[(String, String)]) -> (Groups, Option<usize>, usize) {
    let mut groups: Groups = BTreeMap::new();
    let mut page_size = None;
    let mut page = 1;
    for (k, v) in q {
        if k == "searchCriteria[pageSize]" {
            page_size = v.parse().ok();
        } else if k == "searchCriteria[currentPage]" {
            page = v.parse().unwrap_or(1);
        } else if let Some(rest) = k.strip_prefix("searchCriteria[filterGroups][") {
            let parts: Vec<&str> = rest.split(['[', ']']).filter(|p| !p.is_empty()).collect();
            // [g, "filters", f, "field"]
            if let [g, "filters", f, what] = parts.as_slice()
                && let (Ok(g), Ok(f)) = (g.parse(), f.parse())
            {
                let e = groups
                    .entry(g)
                    .or_default()
                    .entry(f)
                    .or_insert_with(|| (String::new(), String::new(), "eq".into()));
                match *what {
                    "field" => e.0 = v.clone(),
                    "value" => e.1 = v.clone(),
                    "condition_type" => e.2 = v.clone(),
                    _ => {}
                }
            }
        }
    }
    (groups, page_size, page.max(1))
}

fn matches(field_value: &str, value: &str, cond: &str) -> bool {
    // MySQL's default collation: case-insensitive.
    let eq = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
    match cond {
        "in" => value.split(',').any(|v| eq(field_value, v)),
        "neq" => !eq(field_value, value),
        _ => eq(field_value, value),
    }
}

async fn list(State(st): State<Shared>, headers: HeaderMap, Query(q): Query<Vec<(String, String)>>) -> Response {
    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = gate(&mut s, &headers) {
        return r;
    }
    s.counters.reads += 1;
    if s.garbage_reads > 0 {
        s.garbage_reads -= 1;
        return (StatusCode::OK, "<html><body>Service Temporarily Unavailable</body></html>").into_response();
    }
    let (groups, page_size, page) = parse_criteria(&q);
    let selected: Vec<_> = s
        .items
        .iter()
        .filter(|((sku, code), _)| {
            groups.values().all(|filters| {
                filters.values().any(|(field, value, cond)| match field.as_str() {
                    "sku" => matches(sku, value, cond),
                    "source_code" => matches(code, value, cond),
                    _ => false,
                })
            })
        })
        .collect();
    let total = selected.len();
    let size = page_size.map(|p| s.max_page_size.map_or(p, |m| p.min(m))).unwrap_or(total.max(1)).max(1);
    let last_page = total.div_ceil(size).max(1);
    // Magento serves the last page for a page past the end.
    let page = page.min(last_page);
    let items: Vec<Value> = selected
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|((sku, code), (qty, status))| json!({"sku": sku, "source_code": code, "quantity": qty, "status": status}))
        .collect();
    if let Some(p) = page_size {
        s.page_sizes.push(p);
    }
    axum::Json(json!({
        "items": items,
        "search_criteria": {"page_size": size, "current_page": page},
        "total_count": total
    }))
    .into_response()
}

async fn save(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = gate(&mut s, &headers) {
        return r;
    }
    s.counters.writes += 1;
    if s.fail_writes > 0 {
        s.fail_writes -= 1;
        s.counters.failed += 1;
        let status = StatusCode::from_u16(s.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return magento_error(status, "Internal Error. Details are available in Magento log file.", json!([]));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return magento_error(StatusCode::BAD_REQUEST, "Decoding error: the body is not JSON", json!([]));
    };
    let Some(list) = body.get("sourceItems").and_then(Value::as_array) else {
        return magento_error(
            StatusCode::BAD_REQUEST,
            "\"%fieldName\" is required. Enter and try again.",
            json!({"fieldName": "sourceItems"}),
        );
    };
    let mut parsed = Vec::new();
    for it in list {
        let sku = it.get("sku").and_then(Value::as_str).unwrap_or("");
        let code = it.get("source_code").and_then(Value::as_str).unwrap_or("");
        let Some(qty) = it.get("quantity").and_then(Value::as_f64) else {
            return magento_error(StatusCode::BAD_REQUEST, "Could not save Source Item", json!([]));
        };
        let status = it.get("status").and_then(Value::as_i64).unwrap_or(1);
        if sku.is_empty() || !s.sources.contains(code) {
            return magento_error(
                StatusCode::BAD_REQUEST,
                "Validation Failed",
                json!([format!("Source with code \"{code}\" does not exist.")]),
            );
        }
        if s.reject_skus.contains(sku) {
            return magento_error(
                StatusCode::BAD_REQUEST,
                "Could not save Source Item: the product with SKU \"%1\" does not exist.",
                json!([sku]),
            );
        }
        parsed.push(((sku.to_owned(), code.to_owned()), (qty, status)));
    }
    for (k, v) in parsed {
        s.items.insert(k, v);
    }
    s.last_write = Some(body);
    if let Some((sku, code, qty)) = s.race_after_write.take() {
        s.items.insert((sku, code), (qty, 1));
    }
    // Magento answers a void service call with an empty array.
    axum::Json(json!([])).into_response()
}

async fn salable(State(st): State<Shared>, headers: HeaderMap, Path((sku, stock)): Path<(String, u32)>) -> Response {
    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = gate(&mut s, &headers) {
        return r;
    }
    s.counters.salable += 1;
    let Some(sources) = s.stocks.get(&stock) else {
        return magento_error(
            StatusCode::NOT_FOUND,
            "Stock with id \"%1\" does not exist.",
            json!([stock.to_string()]),
        );
    };
    let on_hand: f64 = sources
        .iter()
        .filter_map(|c| s.items.get(&(sku.clone(), c.clone())))
        .filter(|(_, status)| *status == 1)
        .map(|(q, _)| q)
        .sum();
    let reserved = s.reservations.get(&sku).copied().unwrap_or(0.0);
    axum::Json(json!(on_hand + reserved)).into_response()
}
