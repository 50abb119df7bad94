//! The `http` provider: the shipped BigCommerce manifest against the fake
//! BigCommerce API (paging, asynchronous writes, read-back races, 429 with the
//! platform's reset header, refused items, bad answers, secrets), the shipped
//! WooCommerce manifest against a small WooCommerce fake, and a hand-written
//! manifest with `if-match` compare and cursor / Link-header paging.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use stockshift::config::model::HttpProviderConfig;
use stockshift::provider::http::HttpProvider;
use stockshift::provider::{CompareMode, Provider, ProviderError, RowSink, Write, WriteOutcome};

use crate::fakes::bigcommerce::BigCommerce;
use crate::util::{root, run, stockshift};

const TOKEN: &str = "bc-secret-token-1234";

fn bc_config(fake: &BigCommerce, manifest: &str) -> HttpProviderConfig {
    HttpProviderConfig {
        manifest: manifest.into(),
        base_url: fake.base_url(),
        token_env: Some("BC_TEST_TOKEN".into()),
        vars: [("reason".to_string(), "test cutover".to_string())].into_iter().collect(),
        locations: [("1".to_string(), "MAIN".to_string()), ("2".to_string(), "OUTLET".to_string())]
            .into_iter()
            .collect(),
        batch_size: None,
        requests_per_sec: Some(1000.0),
    }
}

fn open_bc(fake: &BigCommerce, dir: &Path) -> HttpProvider {
    HttpProvider::with_token(&bc_config(fake, "bigcommerce"), dir, Some(TOKEN.into())).unwrap()
}

#[derive(Default)]
struct Rows {
    rows: Vec<(String, String, i64)>,
    problems: Vec<String>,
}

impl RowSink for Rows {
    fn row(&mut self, sku: &str, location: &str, qty: i64, _line: u64) {
        self.rows.push((sku.into(), location.into(), qty));
    }
    fn problem(&mut self, _line: u64, _col: usize, summary: String, _help: String) {
        self.problems.push(summary);
    }
}

fn w(sku: &str, loc: &str, expected: Option<i64>, new: i64) -> Write {
    Write { sku: sku.into(), location: loc.into(), expected, new }
}

#[test]
fn bigcommerce_reads_every_page_and_maps_locations() {
    let fake = BigCommerce::start(TOKEN);
    for i in 0..5 {
        fake.set(&format!("SKU-{i}"), 1, i);
        fake.set(&format!("SKU-{i}"), 2, 10 + i);
    }
    fake.store().locations.insert(3, "BC-LOCATION-3".into());
    fake.set("SKU-0", 3, 99); // a location the plan does not map
    // The shipped manifest with 2 items per page, loaded by path.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("providers")).unwrap();
    let text = std::fs::read_to_string(root().join("providers/bigcommerce.yaml"))
        .unwrap()
        .replace("limit: \"250\"", "limit: \"2\"");
    std::fs::write(d.path().join("providers/bc-small-pages.yaml"), text).unwrap();
    let cfg = bc_config(&fake, "providers/bc-small-pages.yaml");
    let mut p = HttpProvider::with_token(&cfg, d.path(), Some(TOKEN.into())).unwrap();
    assert_eq!(p.capabilities().compare, CompareMode::Emulated);
    let mut sink = Rows::default();
    let info = p.read(&mut sink).unwrap();
    assert!(sink.problems.is_empty(), "{:?}", sink.problems);
    assert_eq!(info.rows, 10);
    sink.rows.sort();
    assert_eq!(sink.rows[0], ("SKU-0".into(), "MAIN".into(), 0));
    assert_eq!(sink.rows[1], ("SKU-0".into(), "OUTLET".into(), 10));
    assert_eq!(fake.counters().reads, 3, "5 items at 2 per page");
    assert!(fake.store().queries[0].contains("location_id:in=1,2"), "{:?}", fake.store().queries);
}

#[test]
fn bigcommerce_writes_absolute_adjustments_with_the_plans_vars() {
    let fake = BigCommerce::start(TOKEN);
    fake.set("A", 1, 3);
    let d = tempfile::tempdir().unwrap();
    let mut p = open_bc(&fake, d.path());
    let out = p
        .write_batch(&[w("A", "MAIN", Some(3), 7), w("NEW", "OUTLET", None, 2), w("X", "ELSEWHERE", None, 1)])
        .unwrap();
    assert_eq!(out[..2], [WriteOutcome::Applied, WriteOutcome::Applied]);
    assert!(matches!(&out[2], WriteOutcome::Failed { retriable: false, message } if message.contains("ELSEWHERE")));
    let body = fake.store().last_write.clone().unwrap();
    assert_eq!(body["reason"], "test cutover");
    assert_eq!(body["items"][0], json!({"location_id": 1, "sku": "A", "quantity": 7}));
    assert_eq!(body["items"][1], json!({"location_id": 2, "sku": "NEW", "quantity": 2}));
    assert_eq!(fake.get("NEW", 2), Some(2));
    // Looked up by SKU, not by reading the whole store.
    assert!(fake.store().queries.iter().all(|q| q.contains("sku:in=")), "{:?}", fake.store().queries);
}

#[test]
fn bigcommerce_asynchronous_writes_are_read_back_until_visible() {
    let fake = BigCommerce::start(TOKEN);
    fake.set("A", 1, 3);
    let d = tempfile::tempdir().unwrap();
    fake.lag_next_write(2); // visible from the second read-back on
    let out = open_bc(&fake, d.path()).write_batch(&[w("A", "MAIN", Some(3), 9)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied]);
    // Never visible within the settle attempts: a retriable failure, not a conflict.
    fake.lag_next_write(50);
    let out = open_bc(&fake, d.path()).write_batch(&[w("A", "MAIN", Some(9), 4)]).unwrap();
    assert!(matches!(&out[0], WriteOutcome::Failed { retriable: true, .. }), "{out:?}");
}

#[test]
fn bigcommerce_a_change_after_the_write_is_a_conflict() {
    let fake = BigCommerce::start(TOKEN);
    fake.set("A", 1, 1);
    fake.set("B", 1, 2);
    fake.race_after_next_write("A", 1, 5);
    let d = tempfile::tempdir().unwrap();
    let out =
        open_bc(&fake, d.path()).write_batch(&[w("A", "MAIN", Some(1), 10), w("B", "MAIN", Some(2), 20)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Conflict { found: Some(5) }, WriteOutcome::Applied]);
    assert_eq!(fake.get("A", 1), Some(5));
}

#[test]
fn bigcommerce_429_waits_for_the_reset_header() {
    let fake = BigCommerce::start(TOKEN);
    fake.set("A", 1, 1);
    fake.throttle_next(2, 300);
    let d = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = open_bc(&fake, d.path()).write_batch(&[w("A", "MAIN", Some(1), 2)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied]);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600), "waited X-Rate-Limit-Time-Reset-Ms twice: {took:?}");
    assert!(took < Duration::from_secs(2), "not the 1 s Retry-After default: {took:?}");
    assert_eq!(fake.counters().throttled, 2);
}

#[test]
fn bigcommerce_refused_items_fail_alone() {
    let fake = BigCommerce::start(TOKEN);
    fake.store().reject_skus.insert("BAD".into());
    let d = tempfile::tempdir().unwrap();
    let out = open_bc(&fake, d.path()).write_batch(&[w("A", "MAIN", None, 1), w("BAD", "MAIN", None, 1)]).unwrap();
    assert_eq!(out[0], WriteOutcome::Applied);
    assert!(
        matches!(&out[1], WriteOutcome::Failed { retriable: false, message } if message.contains("422") && message.contains("BAD")),
        "{out:?}"
    );
}

#[test]
fn bigcommerce_garbage_answers_and_5xx_never_panic() {
    let fake = BigCommerce::start(TOKEN);
    fake.set("A", 1, 1);
    let d = tempfile::tempdir().unwrap();
    let mut p = open_bc(&fake, d.path());
    fake.garbage_next_reads(1);
    let e = p.read(&mut Rows::default()).unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
    fake.garbage_next_reads(1);
    assert!(p.write_batch(&[w("A", "MAIN", Some(1), 2)]).is_err());
    fake.fail_next_writes(1);
    let e = p.write_batch(&[w("A", "MAIN", Some(1), 2)]).unwrap_err();
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e}");
    assert_eq!(fake.get("A", 1), Some(1));
    assert_eq!(p.write_batch(&[w("A", "MAIN", Some(1), 2)]).unwrap(), vec![WriteOutcome::Applied]);
}

#[test]
fn a_wrong_token_names_the_variable_never_the_value() {
    let fake = BigCommerce::start(TOKEN);
    let d = tempfile::tempdir().unwrap();
    let mut p =
        HttpProvider::with_token(&bc_config(&fake, "bigcommerce"), d.path(), Some("wrong-token-5678".into())).unwrap();
    let e = p.read(&mut Rows::default()).unwrap_err().to_string();
    assert!(e.contains("401") && e.contains("BC_TEST_TOKEN"), "{e}");
    assert!(!e.contains("wrong-token-5678") && !e.contains(TOKEN), "{e}");
    // No credential at all: refused before any request.
    let e = HttpProvider::with_token(&bc_config(&fake, "bigcommerce"), d.path(), None).err().unwrap().to_string();
    assert!(e.contains("token_env"), "{e}");
}

#[test]
fn the_cli_plans_and_applies_through_the_shipped_manifest() {
    let fake = BigCommerce::start(TOKEN);
    fake.set("CANDLE", 1, 1);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("src.csv"), "sku,location,qty\nCANDLE,MAIN,4\nSOAP,OUTLET,2\n").unwrap();
    std::fs::write(
        d.path().join("plan.yaml"),
        format!(
            "version: 1\nname: b\nsource: {{ provider: csv, path: src.csv }}\ntarget: {{ provider: http, manifest: bigcommerce, base_url: \"{}\", token_env: BC_TEST_TOKEN, locations: {{ \"1\": MAIN, \"2\": OUTLET }}, requests_per_sec: 100 }}\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| run(stockshift().current_dir(d.path()).env("BC_TEST_TOKEN", TOKEN).args(args));
    let (code, out, err) = cli(&["validate", "plan.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fake.get("CANDLE", 1), Some(4));
    assert_eq!(fake.get("SOAP", 2), Some(2));
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
}

#[test]
fn manifest_errors_name_the_manifest_line_and_column() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("providers")).unwrap();
    std::fs::write(
        d.path().join("providers/acme.yaml"),
        "name: acme\nread:\n  request: { path: /stock }\n  records: results[*]\n  sku: sku\n  location: warehouse\n  qty: on_hand\n  pagintion: { style: page }\n",
    )
    .unwrap();
    std::fs::write(d.path().join("s.csv"), "sku,location,qty\nA,main,1\n").unwrap();
    std::fs::write(
        d.path().join("plan.yaml"),
        "version: 1\nname: t\nsource: { provider: csv, path: s.csv }\ntarget: { provider: http, manifest: acme, base_url: \"http://127.0.0.1:9\" }\n",
    )
    .unwrap();
    let (code, _, err) = run(stockshift().current_dir(d.path()).args(["validate", "plan.yaml"]));
    assert_eq!(code, 1);
    assert!(err.contains("providers/acme.yaml:8:3:") && err.contains("unknown field `pagintion`"), "{err}");
    assert!(err.contains("plan.yaml:4:") && err.contains("help:"), "{err}");
}

#[test]
fn the_example_plan_validates_with_its_token_set() {
    let (code, out, err) =
        run(stockshift().env("BIGCOMMERCE_TOKEN", "x").arg("validate").arg(root().join("plans/bigcommerce.yaml")));
    assert_eq!(code, 0, "{out}{err}");
}

// ---------------------------------------------------------------------------
// Small fakes for the other manifest features.

fn serve(app: Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
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
    (addr_rx.recv().unwrap(), stop_tx)
}

/// An API with ETags: `/items?cursor=`, `/linked?page=` (Link header), `/items/{sku}/{loc}`.
#[derive(Default)]
struct Etag {
    /// (sku, loc) → (qty, version)
    items: BTreeMap<(String, String), (i64, u64)>,
    /// Bump this key's version and value when its next PUT arrives (a concurrent writer).
    race: Option<((String, String), i64)>,
}

type EtagState = Arc<Mutex<Etag>>;

fn page_of(st: &Etag, start: usize) -> (Vec<Value>, Option<usize>) {
    let all: Vec<Value> = st.items.iter().map(|((s, l), (q, _))| json!({"sku": s, "loc": l, "qty": q})).collect();
    let end = (start + 2).min(all.len());
    (all[start.min(end)..end].to_vec(), (end < all.len()).then_some(end))
}

async fn etag_list(State(st): State<EtagState>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let st = st.lock().unwrap();
    let start = q.get("cursor").map(|c| c.trim_start_matches('c').parse().unwrap_or(0)).unwrap_or(0);
    let (items, next) = page_of(&st, start);
    axum::Json(json!({"items": items, "next": next.map(|n| format!("c{n}"))})).into_response()
}

async fn etag_linked(State(st): State<EtagState>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let st = st.lock().unwrap();
    let start = q.get("from").and_then(|c| c.parse().ok()).unwrap_or(0);
    let (items, next) = page_of(&st, start);
    let mut r = axum::Json(json!(items)).into_response();
    if let Some(n) = next {
        r.headers_mut().insert("link", format!("</api/linked?from={n}>; rel=\"next\"").parse().unwrap());
    }
    r
}

async fn etag_get(State(st): State<EtagState>, UrlPath((sku, loc)): UrlPath<(String, String)>) -> Response {
    let st = st.lock().unwrap();
    match st.items.get(&(sku, loc)) {
        None => StatusCode::NOT_FOUND.into_response(),
        Some((q, v)) => {
            let mut r = axum::Json(json!({"qty": q})).into_response();
            r.headers_mut().insert("etag", format!("\"v{v}\"").parse().unwrap());
            r
        }
    }
}

async fn etag_put(
    State(st): State<EtagState>,
    UrlPath((sku, loc)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = st.lock().unwrap();
    let key = (sku, loc);
    if let Some((k, q)) = st.race.take_if(|(k, _)| *k == key) {
        let v = st.items.get(&k).map_or(1, |e| e.1 + 1);
        st.items.insert(k, (q, v));
    }
    let current = st.items.get(&key).copied();
    let if_match = headers.get("if-match").and_then(|v| v.to_str().ok());
    let if_none = headers.get("if-none-match").and_then(|v| v.to_str().ok());
    let ok = match (current, if_match, if_none) {
        (Some((_, v)), Some(tag), _) => tag == format!("\"v{v}\""),
        (None, None, Some("*")) => true,
        _ => false,
    };
    if !ok {
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    let Some(q) = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["qty"].as_i64()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let v = current.map_or(1, |c| c.1 + 1);
    st.items.insert(key, (q, v));
    StatusCode::NO_CONTENT.into_response()
}

const ETAG_MANIFEST: &str = r#"
name: etag-api
read:
  request: { path: /api/items }
  pagination: { style: cursor, param: cursor, next: next }
  records: items[*]
  sku: sku
  location: loc
  qty: qty
write:
  per: key
  request:
    method: PUT
    path: "/api/items/{{ w.sku | urlencode }}/{{ w.location | urlencode }}"
    body: '{"qty": {{ w.new }}}'
compare:
  strategy: if-match
  item:
    request: { path: "/api/items/{{ sku | urlencode }}/{{ location | urlencode }}" }
    qty: qty
"#;

fn etag_provider(dir: &Path, manifest: &str, addr: SocketAddr) -> HttpProvider {
    std::fs::write(dir.join("etag.yaml"), manifest).unwrap();
    let cfg = HttpProviderConfig {
        manifest: "etag.yaml".into(),
        base_url: format!("http://{addr}"),
        token_env: None,
        vars: Default::default(),
        locations: Default::default(),
        batch_size: None,
        requests_per_sec: None,
    };
    HttpProvider::with_token(&cfg, dir, None).unwrap()
}

fn etag_server() -> (EtagState, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let st: EtagState = Arc::default();
    for (i, sku) in ["A", "B", "C", "D", "E"].iter().enumerate() {
        st.lock().unwrap().items.insert((sku.to_string(), "L 1".to_string()), (i as i64, 1));
    }
    let app = Router::new()
        .route("/api/items", get(etag_list))
        .route("/api/linked", get(etag_linked))
        .route("/api/items/{sku}/{loc}", get(etag_get).put(etag_put))
        .with_state(st.clone());
    let (addr, stop) = serve(app);
    (st, addr, stop)
}

#[test]
fn cursor_and_link_paging_read_everything_once() {
    let (_st, addr, _stop) = etag_server();
    let d = tempfile::tempdir().unwrap();
    let mut sink = Rows::default();
    etag_provider(d.path(), ETAG_MANIFEST, addr).read(&mut sink).unwrap();
    assert_eq!(sink.rows.len(), 5, "{:?}", sink.rows);
    let linked = ETAG_MANIFEST
        .replace("path: /api/items }", "path: /api/linked }")
        .replace("{ style: cursor, param: cursor, next: next }", "{ style: link }")
        .replace("records: items[*]", "records: \"[*]\"");
    let mut sink = Rows::default();
    etag_provider(d.path(), &linked, addr).read(&mut sink).unwrap();
    assert_eq!(sink.rows.len(), 5, "{:?}", sink.rows);
    assert_eq!(sink.rows[4], ("E".into(), "L 1".into(), 4));
}

#[test]
fn if_match_writes_are_native_compare_and_set() {
    let (st, addr, _stop) = etag_server();
    let d = tempfile::tempdir().unwrap();
    let mut p = etag_provider(d.path(), ETAG_MANIFEST, addr);
    assert_eq!(p.capabilities().compare, CompareMode::Native);
    // A concurrent writer bumps B between our GET and our PUT: the platform refuses (412).
    st.lock().unwrap().race = Some((("B".into(), "L 1".into()), 40));
    let out = p
        .write_batch(&[
            w("A", "L 1", Some(0), 10),
            w("B", "L 1", Some(1), 11),
            w("C", "L 1", Some(9), 12),
            w("D", "L 1", Some(3), 3),
            w("NEW", "L 1", None, 5),
        ])
        .unwrap();
    assert_eq!(
        out,
        vec![
            WriteOutcome::Applied,
            WriteOutcome::Conflict { found: Some(40) },
            WriteOutcome::Conflict { found: Some(2) },
            WriteOutcome::AlreadyApplied,
            WriteOutcome::Applied,
        ]
    );
    let s = st.lock().unwrap();
    assert_eq!(s.items[&("A".to_string(), "L 1".to_string())].0, 10);
    assert_eq!(s.items[&("B".to_string(), "L 1".to_string())].0, 40, "never overwritten");
    assert_eq!(s.items[&("NEW".to_string(), "L 1".to_string())].0, 5, "created with If-None-Match: *");
}

/// A WooCommerce-shaped API: products pages with X-WP-TotalPages, `sku=` lookup, batch update.
#[derive(Default)]
struct Woo {
    /// id → (sku, stock_quantity, manage_stock)
    products: BTreeMap<u64, (String, Option<i64>, bool)>,
    batches: Vec<Value>,
}

type WooState = Arc<Mutex<Woo>>;

const WOO_AUTH: &str = "ck_test:cs_test";

fn woo_authorized(headers: &HeaderMap) -> bool {
    use base64::Engine;
    let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(WOO_AUTH));
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

async fn woo_products(
    State(st): State<WooState>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !woo_authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let st = st.lock().unwrap();
    let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(10);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let skus: Option<Vec<&str>> = q.get("sku").map(|s| s.split(',').collect());
    let all: Vec<Value> = st
        .products
        .iter()
        .filter(|(_, (sku, _, _))| skus.as_ref().is_none_or(|f| f.contains(&sku.as_str())))
        .map(|(id, (sku, q, managed))| json!({"id": id, "sku": sku, "manage_stock": managed, "stock_quantity": q}))
        .collect();
    let pages = all.len().div_ceil(per_page).max(1);
    let body: Vec<Value> = all.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let mut r = axum::Json(json!(body)).into_response();
    r.headers_mut().insert("x-wp-totalpages", pages.to_string().parse().unwrap());
    r
}

async fn woo_batch(State(st): State<WooState>, headers: HeaderMap, body: Bytes) -> Response {
    if !woo_authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut st = st.lock().unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    for u in body["update"].as_array().cloned().unwrap_or_default() {
        if let (Some(id), Some(q)) = (u["id"].as_u64(), u["stock_quantity"].as_i64())
            && let Some(p) = st.products.get_mut(&id)
        {
            p.1 = Some(q);
            p.2 = true;
        }
    }
    st.batches.push(body);
    axum::Json(json!({"update": []})).into_response()
}

#[test]
fn the_shipped_woocommerce_manifest_reads_and_writes_products() {
    let st: WooState = Arc::default();
    {
        let mut s = st.lock().unwrap();
        for i in 0..5u64 {
            s.products.insert(100 + i, (format!("W-{i}"), Some(i as i64), true));
        }
        s.products.insert(200, ("UNTRACKED".into(), None, false));
        s.products.insert(201, (String::new(), Some(3), true));
    }
    let app = Router::new()
        .route("/wp-json/wc/v3/products", get(woo_products))
        .route("/wp-json/wc/v3/products/batch", post(woo_batch))
        .with_state(st.clone());
    let (addr, _stop) = serve(app);
    let d = tempfile::tempdir().unwrap();
    // Two products per page, so paging by X-WP-TotalPages is exercised.
    std::fs::create_dir_all(d.path().join("providers")).unwrap();
    let text = std::fs::read_to_string(root().join("providers/woocommerce.yaml"))
        .unwrap()
        .replace("per_page: \"100\"", "per_page: \"2\"");
    std::fs::write(d.path().join("providers/woocommerce.yaml"), text).unwrap();
    let cfg = HttpProviderConfig {
        manifest: "woocommerce".into(), // the local copy wins over the shipped one
        base_url: format!("http://{addr}"),
        token_env: Some("WOO_TEST".into()),
        vars: Default::default(),
        locations: [("default".to_string(), "WEB".to_string())].into_iter().collect(),
        batch_size: None,
        requests_per_sec: None,
    };
    let mut p = HttpProvider::with_token(&cfg, d.path(), Some(WOO_AUTH.into())).unwrap();
    let mut sink = Rows::default();
    p.read(&mut sink).unwrap();
    assert!(sink.problems.is_empty(), "{:?}", sink.problems);
    assert_eq!(sink.rows.len(), 5, "untracked and SKU-less products are skipped: {:?}", sink.rows);
    assert!(sink.rows.contains(&("W-3".into(), "WEB".into(), 3)));
    let out =
        p.write_batch(&[w("W-1", "WEB", Some(1), 8), w("W-2", "WEB", Some(7), 9), w("GHOST", "WEB", None, 1)]).unwrap();
    assert_eq!(out[0], WriteOutcome::Applied);
    assert_eq!(out[1], WriteOutcome::Conflict { found: Some(2) });
    assert!(
        matches!(&out[2], WriteOutcome::Failed { retriable: false, message } if message.contains("GHOST")),
        "{out:?}"
    );
    let s = st.lock().unwrap();
    assert_eq!(s.products[&101].1, Some(8));
    assert_eq!(s.batches.len(), 1, "GHOST never reached the platform");
    assert_eq!(s.batches[0]["update"][0], json!({"id": 101, "manage_stock": true, "stock_quantity": 8}));
}
