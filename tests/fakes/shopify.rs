//! A fake Shopify Admin GraphQL API on 127.0.0.1, for tests and benchmarks.
//!
//! It is test infrastructure, not a Shopify emulator: it implements the parts
//! of the documented API that stockshift relies on, as strictly as the docs
//! describe them, so a client that passes here speaks the real protocol:
//!
//! * **Documents** are parsed (a small GraphQL parser: operations, variables,
//!   aliases, arguments, directives, inline fragments) and validated against a
//!   schema subset. An unknown field, argument, directive, input field or
//!   variable, a variable of the wrong type, a missing selection or a selection
//!   on a scalar is a GraphQL error, as on Shopify. Fragment definitions are not
//!   supported (stockshift does not send them).
//! * **Reads**: `locations`, `location.inventoryLevels` (cursor paging with
//!   `first` ≤ 250 and `after`, 25,000-object paging limit), `inventoryItems`
//!   with a `sku:"A" OR sku:"B"` / `id:N` search, `inventoryItem(id)`,
//!   `InventoryItem.inventoryLevel(locationId)`, `InventoryLevel.quantities(names)`,
//!   `productVariantsCount(limit)`, `node(id)`, `bulkOperation(id)`,
//!   `currentBulkOperation`.
//! * **Writes**: `inventorySetQuantities` with `changeFromQuantity`: every row is
//!   checked first; any userError (`CHANGE_FROM_QUANTITY_STALE`,
//!   `ITEM_NOT_STOCKED_AT_LOCATION`, …, with `field` naming the row) rejects the
//!   whole mutation. Omitting `changeFromQuantity` is `COMPARE_QUANTITY_REQUIRED`;
//!   an explicit `null` skips the compare. `inventoryActivate` stocks an item at
//!   a location (at 0 unless told otherwise; an active level is returned as it is).
//! * **`@idempotent(key:)`**: required on both mutations from 2026-04. A key seen
//!   before with the same arguments returns the stored result without applying
//!   anything (successes and userErrors alike); with other arguments it is
//!   `IDEMPOTENCY_KEY_PARAMETER_MISMATCH`.
//! * **Cost and throttling**: a leaky bucket (`maximumAvailable`, `restoreRate`).
//!   Cost model, after Shopify's published rules: a scalar or enum 0, an object
//!   1, a list of objects 1 plus its fields, a connection 2 plus `first` times
//!   (1 + its node's fields), a mutation field 10 flat; a document over 1,000
//!   points is `MAX_COST_EXCEEDED`. The requested cost must be available, else
//!   `THROTTLED` (HTTP 200, `actualQueryCost: null`); the actual cost (connections
//!   counted by what they returned) is charged. Every answer that passed
//!   validation carries `extensions.cost.throttleStatus`.
//! * **Bulk queries**: `bulkOperationRunQuery` validates the query (one root
//!   connection, at most 5 connections, nesting at most 2, `id` on parents),
//!   snapshots the JSONL (`__parentId` on children) and completes after
//!   `bulk_polls` polls; the URL is served by the fake without authentication,
//!   like a pre-signed URL, and counts any request that brings the token.
//! * **Faults**: the next N requests (or mutations) answer a status (429, 5xx),
//!   answer it *after* applying the mutation (a lost response), answer garbage,
//!   or echo the caller's token in an error body.
//!
//! Tests and benchmarks reach the shop's state directly through [`FakeShopify`].

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{Map, Value, json};

/// The token the fake accepts unless configured otherwise.
pub const TOKEN: &str = "shpat_fake_0123456789abcdef0123";
/// Admin API versions the fake serves.
pub const VERSIONS: &[&str] = &["2026-01", "2026-04", "2026-07", "2026-10"];
const MAX_COST: f64 = 1000.0;
const PAGING_LIMIT: usize = 25_000;
const MAX_INPUT: usize = 250;

/// How a fake shop is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// `maximumAvailable` of the cost bucket.
    pub bucket: f64,
    /// `restoreRate`, points per second.
    pub restore_rate: f64,
    pub token: String,
    /// Polls of a bulk operation before it completes.
    pub bulk_polls: u32,
}

impl Default for Config {
    fn default() -> Self {
        // A generous bucket (Shopify for enterprise rates) so functional tests are fast.
        Config { bucket: 20_000.0, restore_rate: 10_000.0, token: TOKEN.into(), bulk_polls: 2 }
    }
}

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this HTTP status (with `Retry-After: 0` on a 429) without executing.
    Status(u16),
    /// Execute the request, then answer this status instead of the result.
    StatusAfterApplying(u16),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer 200 with JSON of the wrong shape (`data` a number).
    WrongShape,
    /// Answer this status with the caller's token echoed in the body.
    EchoToken(u16),
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Any,
    Mutations,
}

/// What the fake saw.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// HTTP requests to the GraphQL endpoint.
    pub requests: u64,
    /// `THROTTLED` answers.
    pub throttled: u64,
    /// Documents refused by parsing or validation.
    pub invalid_documents: u64,
    /// Successful `inventorySetQuantities` mutations and the quantities they set.
    pub set_mutations: u64,
    pub quantities_written: u64,
    /// `inventorySetQuantities` refused for a stale compare.
    pub stale_rejections: u64,
    /// Mutations answered from the idempotency store.
    pub idempotent_replays: u64,
    /// Levels created by `inventoryActivate`.
    pub activations: u64,
    /// Injected faults served.
    pub faults: u64,
    /// Total points charged.
    pub points: f64,
    /// Downloads of bulk results, and those that carried the access token.
    pub bulk_downloads: u64,
    pub token_sent_to_download: u64,
}

/// A fake shop served on 127.0.0.1 from a background thread.
pub struct FakeShopify {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeShopify {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FakeShopify {
    /// Starts a shop with [`Config::default`].
    pub fn start() -> FakeShopify {
        FakeShopify::with_config(Config::default())
    }

    pub fn with_config(cfg: Config) -> FakeShopify {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::new(cfg, format!("http://{addr}"))));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let app = axum::Router::new()
                    .route("/admin/api/{version}/graphql.json", axum::routing::post(http::graphql))
                    .route("/bulk/{file}", axum::routing::get(http::bulk_file))
                    .with_state(app_state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        FakeShopify { addr, state, stop: Some(stop), thread: Some(thread) }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The GraphQL URL for the default version (2026-10).
    pub fn endpoint(&self) -> String {
        self.endpoint_for("2026-10")
    }

    pub fn endpoint_for(&self, version: &str) -> String {
        format!("http://{}/admin/api/{version}/graphql.json", self.addr)
    }

    pub fn token(&self) -> String {
        self.st().cfg.token.clone()
    }

    /// Adds a location; returns its id.
    pub fn add_location(&self, name: &str) -> String {
        let mut s = self.st();
        let id = s.location_named(name);
        gid("Location", id)
    }

    /// Adds an inventory item (a variant) with this SKU, stocked nowhere; a SKU
    /// may be added twice (two items, an ambiguous SKU). Returns its id.
    pub fn add_item(&self, sku: &str) -> String {
        let mut s = self.st();
        let id = s.new_item(Some(sku));
        gid("InventoryItem", id)
    }

    /// Adds an item without a SKU, stocked at `location` with `qty`.
    pub fn add_item_without_sku(&self, location: &str, qty: i64) {
        let mut s = self.st();
        let id = s.new_item(None);
        let loc = s.location_named(location);
        s.levels.insert((loc, id), Level { available: qty, committed: 0 });
    }

    /// Adds many items at once, stocked nowhere.
    pub fn add_items<'a>(&self, skus: impl IntoIterator<Item = &'a str>) {
        let mut s = self.st();
        for sku in skus {
            s.new_item(Some(sku));
        }
    }

    /// Replaces the whole shop with these (sku, location, available) levels.
    pub fn seed(&self, rows: &[(String, String, i64)]) {
        let mut s = self.st();
        s.locations.clear();
        s.items.clear();
        s.levels.clear();
        s.sku_index.clear();
        for (sku, loc, qty) in rows {
            s.set(sku, loc, *qty);
        }
    }

    /// Sets a level behind the client's back (a sale, a stock count), creating
    /// the item, location and level as needed.
    pub fn set(&self, sku: &str, location: &str, qty: i64) {
        self.st().set(sku, location, qty);
    }

    /// Sets the committed quantity of a level (on_hand = available + committed).
    pub fn set_committed(&self, sku: &str, location: &str, committed: i64) {
        let mut s = self.st();
        let (Some(&item), Some(loc)) = (s.sku_index.get(sku).and_then(|v| v.first()), s.location_id(location)) else {
            return;
        };
        if let Some(l) = s.levels.get_mut(&(loc, item)) {
            l.committed = committed;
        }
    }

    /// `available` of a level, `None` when not stocked.
    pub fn level(&self, sku: &str, location: &str) -> Option<i64> {
        self.contents().get(&(sku.to_owned(), location.to_owned())).copied()
    }

    /// Every stocked level: (sku, location) → available.
    pub fn contents(&self) -> BTreeMap<(String, String), i64> {
        let s = self.st();
        s.levels
            .iter()
            .filter_map(|((loc, item), l)| {
                let sku = s.items.get(item)?.clone()?;
                Some(((sku, s.locations.get(loc)?.clone()), l.available))
            })
            .collect()
    }

    /// Makes the next `n` requests in `scope` fail with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault, scope: Scope) {
        let mut s = self.st();
        for _ in 0..n {
            s.faults.push_back((fault, scope));
        }
    }

    pub fn counters(&self) -> Counters {
        self.st().counters.clone()
    }

    pub fn reset_counters(&self) {
        self.st().counters = Counters::default();
    }

    /// The operation names of the requests so far (the last 10,000).
    pub fn operations(&self) -> Vec<String> {
        self.st().log.iter().cloned().collect()
    }

    /// Changes the bucket; it starts full.
    pub fn set_bucket(&self, maximum: f64, restore_rate: f64) {
        let mut s = self.st();
        s.cfg.bucket = maximum;
        s.cfg.restore_rate = restore_rate;
        s.available = maximum;
        s.at = Instant::now();
    }

    /// Fills the bucket up.
    pub fn fill_bucket(&self) {
        let mut s = self.st();
        s.available = s.cfg.bucket;
        s.at = Instant::now();
    }

    /// Empties the bucket (as if another app on the shop had used it).
    pub fn drain_bucket(&self) {
        let mut s = self.st();
        s.available = 0.0;
        s.at = Instant::now();
    }
}

fn gid(ty: &str, id: u64) -> String {
    format!("gid://shopify/{ty}/{id}")
}

fn parse_gid(s: &str, ty: &str) -> Option<u64> {
    s.strip_prefix("gid://shopify/")?.strip_prefix(ty)?.strip_prefix('/')?.parse().ok()
}

// ---------------------------------------------------------------------------
// The shop.

#[derive(Debug, Clone, Copy)]
struct Level {
    available: i64,
    committed: i64,
}

impl Level {
    fn get(&self, name: &str) -> i64 {
        match name {
            "available" => self.available,
            "on_hand" => self.available + self.committed,
            "committed" => self.committed,
            _ => 0,
        }
    }
}

struct BulkOp {
    id: u64,
    query: String,
    polls_left: u32,
    lines: Arc<String>,
    objects: u64,
    roots: u64,
}

struct State {
    cfg: Config,
    base: String,
    next_id: u64,
    locations: BTreeMap<u64, String>,
    items: BTreeMap<u64, Option<String>>,
    sku_index: HashMap<String, Vec<u64>>,
    /// (location, item) → level.
    levels: BTreeMap<(u64, u64), Level>,
    idempotency: HashMap<String, (String, N)>,
    available: f64,
    at: Instant,
    faults: VecDeque<(Fault, Scope)>,
    bulk: Vec<BulkOp>,
    counters: Counters,
    log: VecDeque<String>,
    groups: u64,
}

impl State {
    fn new(cfg: Config, base: String) -> State {
        State {
            available: cfg.bucket,
            cfg,
            base,
            next_id: 1000,
            locations: BTreeMap::new(),
            items: BTreeMap::new(),
            sku_index: HashMap::new(),
            levels: BTreeMap::new(),
            idempotency: HashMap::new(),
            at: Instant::now(),
            faults: VecDeque::new(),
            bulk: Vec::new(),
            counters: Counters::default(),
            log: VecDeque::new(),
            groups: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn location_id(&self, name: &str) -> Option<u64> {
        self.locations.iter().find(|(_, n)| *n == name).map(|(id, _)| *id)
    }

    fn location_named(&mut self, name: &str) -> u64 {
        match self.location_id(name) {
            Some(id) => id,
            None => {
                let id = self.id();
                self.locations.insert(id, name.to_owned());
                id
            }
        }
    }

    fn new_item(&mut self, sku: Option<&str>) -> u64 {
        let id = self.id();
        self.items.insert(id, sku.map(str::to_owned));
        if let Some(s) = sku {
            self.sku_index.entry(s.to_owned()).or_default().push(id);
        }
        id
    }

    fn set(&mut self, sku: &str, location: &str, qty: i64) {
        let item = match self.sku_index.get(sku).and_then(|v| v.first()) {
            Some(&i) => i,
            None => self.new_item(Some(sku)),
        };
        let loc = self.location_named(location);
        let l = self.levels.entry((loc, item)).or_insert(Level { available: 0, committed: 0 });
        l.available = qty;
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.available = (self.available + dt * self.cfg.restore_rate).min(self.cfg.bucket);
        self.at = now;
    }

    fn throttle_status(&self) -> Value {
        json!({
            "maximumAvailable": self.cfg.bucket,
            "currentlyAvailable": (self.available * 1000.0).floor() / 1000.0,
            "restoreRate": self.cfg.restore_rate,
        })
    }

    /// One POST to the GraphQL endpoint: (status, body, Retry-After).
    fn handle(&mut self, version: &str, token: Option<&str>, body: &[u8]) -> (u16, String, Option<u32>) {
        self.counters.requests += 1;
        if !VERSIONS.contains(&version) {
            return (404, json!({"errors": "Not Found"}).to_string(), None);
        }
        if token != Some(self.cfg.token.as_str()) {
            return (
                401,
                json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})
                    .to_string(),
                None,
            );
        }
        let req: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return (400, json!({"errors": {"query": "Required parameter missing or invalid"}}).to_string(), None),
        };
        let obj = req.as_object().expect("checked");
        if let Some(k) = obj.keys().find(|k| !["query", "variables", "operationName"].contains(&k.as_str())) {
            return (400, json!({"errors": format!("Unknown request parameter `{k}`")}).to_string(), None);
        }
        let Some(query) = obj.get("query").and_then(Value::as_str) else {
            return (400, json!({"errors": {"query": "Required parameter missing or invalid"}}).to_string(), None);
        };
        let vars = match obj.get("variables") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return (400, json!({"errors": "`variables` must be an object"}).to_string(), None),
        };
        let op = match parse::document(query) {
            Ok(op) => op,
            Err(e) => return self.invalid(vec![e]),
        };
        self.log.push_back(op.name.clone().unwrap_or_else(|| "(anonymous)".into()));
        if self.log.len() > 10_000 {
            self.log.pop_front();
        }
        let is_mutation = op.kind == OpKind::Mutation;
        let mut after_fault = None;
        if let Some(&(fault, scope)) = self.faults.front()
            && (scope == Scope::Any || is_mutation)
        {
            self.faults.pop_front();
            self.counters.faults += 1;
            match fault {
                Fault::Status(s) => {
                    return (s, json!({"errors": "Injected failure"}).to_string(), (s == 429).then_some(0));
                }
                Fault::Garbage => return (200, "<html><body>502 Bad Gateway</body>".into(), None),
                Fault::WrongShape => return (200, json!({"data": 5, "errors": {"x": [1]}}).to_string(), None),
                Fault::EchoToken(s) => {
                    return (
                        s,
                        format!("{{\"errors\":\"upstream said: X-Shopify-Access-Token={}\"}}", token.unwrap_or("")),
                        None,
                    );
                }
                Fault::StatusAfterApplying(s) => after_fault = Some(s),
            }
        }
        let vars = match validate::operation(&op, vars, version) {
            Ok(v) => v,
            Err(errors) => return self.invalid(errors),
        };
        let requested = cost::requested(&op, &vars);
        if requested > MAX_COST {
            self.counters.invalid_documents += 1;
            return (
                200,
                json!({"errors": [{
                    "message": format!("Query cost is {requested}, which exceeds the single query max cost limit ({MAX_COST}). See https://shopify.dev/concepts/about-apis/rate-limits for more information on how the cost of a query is calculated. To query larger amounts of data with fewer limits, bulk operations should be used instead."),
                    "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": MAX_COST}
                }]})
                .to_string(),
                None,
            );
        }
        self.refill();
        if requested > self.available {
            self.counters.throttled += 1;
            return (
                200,
                json!({
                    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                    "extensions": {"cost": {"requestedQueryCost": requested, "actualQueryCost": null, "throttleStatus": self.throttle_status()}}
                })
                .to_string(),
                None,
            );
        }
        self.available -= requested;
        let mut ex = exec::Exec { st: self, vars: &vars, version, errors: Vec::new() };
        let data = ex.operation(&op);
        let errors = std::mem::take(&mut ex.errors);
        let actual = cost::actual(&op, &data).min(requested);
        self.available += requested - actual;
        self.counters.points += actual;
        if let Some(s) = after_fault {
            return (s, json!({"errors": "Injected failure after applying"}).to_string(), None);
        }
        let mut out = Map::new();
        if !errors.is_empty() {
            out.insert("errors".into(), Value::Array(errors));
        }
        out.insert("data".into(), data);
        out.insert(
            "extensions".into(),
            json!({"cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": self.throttle_status()}}),
        );
        (200, Value::Object(out).to_string(), None)
    }

    fn invalid(&mut self, errors: Vec<Value>) -> (u16, String, Option<u32>) {
        self.counters.invalid_documents += 1;
        (200, json!({ "errors": errors }).to_string(), None)
    }
}

/// A GraphQL error object.
fn gql_error(message: impl Into<String>, code: &str) -> Value {
    json!({"message": message.into(), "extensions": {"code": code}})
}

// ---------------------------------------------------------------------------
// HTTP.

mod http {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    pub async fn graphql(
        State(st): State<Arc<Mutex<super::State>>>,
        Path(version): Path<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let token = headers.get("x-shopify-access-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, body, retry_after) = {
            let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
            s.handle(&version, token.as_deref(), &body)
        };
        let mut resp =
            (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        if let Some(r) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(r));
        }
        resp
    }

    pub async fn bulk_file(
        State(st): State<Arc<Mutex<super::State>>>,
        Path(file): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
        s.counters.bulk_downloads += 1;
        if headers.contains_key("x-shopify-access-token") {
            s.counters.token_sent_to_download += 1;
        }
        let id = file.strip_suffix(".jsonl").and_then(|n| n.parse::<u64>().ok());
        match s.bulk.iter().find(|b| Some(b.id) == id) {
            Some(b) => (StatusCode::OK, b.lines.as_str().to_owned()).into_response(),
            None => (StatusCode::NOT_FOUND, "no such file").into_response(),
        }
    }
}

// ---------------------------------------------------------------------------
// GraphQL documents.

#[derive(Debug, Clone, PartialEq)]
enum GValue {
    Var(String),
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Null,
    Enum(String),
    List(Vec<GValue>),
    Object(Vec<(String, GValue)>),
}

#[derive(Debug, Clone)]
struct Directive {
    name: String,
    args: Vec<(String, GValue)>,
}

#[derive(Debug, Clone)]
struct Field {
    alias: Option<String>,
    name: String,
    args: Vec<(String, GValue)>,
    directives: Vec<Directive>,
    selections: Vec<Selection>,
}

impl Field {
    fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone)]
enum Selection {
    Field(Field),
    Inline { on: Option<String>, selections: Vec<Selection> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Query,
    Mutation,
}

#[derive(Debug, Clone)]
struct VarDef {
    name: String,
    ty: String,
    default: Option<GValue>,
}

#[derive(Debug, Clone)]
struct Operation {
    kind: OpKind,
    name: Option<String>,
    vars: Vec<VarDef>,
    selections: Vec<Selection>,
}

/// GraphQL values with variables substituted, as JSON.
fn to_json(v: &GValue, vars: &Map<String, Value>) -> Value {
    match v {
        GValue::Var(n) => vars.get(n).cloned().unwrap_or(Value::Null),
        GValue::Int(i) => json!(i),
        GValue::Float(f) => json!(f),
        GValue::Str(s) | GValue::Enum(s) => Value::String(s.clone()),
        GValue::Bool(b) => Value::Bool(*b),
        GValue::Null => Value::Null,
        GValue::List(l) => Value::Array(l.iter().map(|x| to_json(x, vars)).collect()),
        GValue::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), to_json(x, vars))).collect()),
    }
}

mod parse {
    //! A recursive-descent parser for executable GraphQL documents (one operation).

    use super::{Directive, Field, GValue, OpKind, Operation, Selection, VarDef, gql_error};
    use serde_json::Value;

    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }

    pub fn document(src: &str) -> Result<Operation, Value> {
        let mut p = P { s: src.as_bytes(), i: 0 };
        p.skip();
        let op = p.operation()?;
        p.skip();
        if p.i < p.s.len() {
            if p.peek_name().as_deref() == Some("fragment") {
                return Err(p.err("Fragment definitions are not supported by this fake"));
            }
            return Err(p.err("Only one operation per document is supported by this fake"));
        }
        Ok(op)
    }

    impl P<'_> {
        fn err(&self, msg: &str) -> Value {
            let before = &self.s[..self.i.min(self.s.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            let mut e = gql_error(format!("Parse error: {msg} (line {line}, column {col})"), "PARSE_ERROR");
            e["locations"] = serde_json::json!([{"line": line, "column": col}]);
            e
        }

        fn skip(&mut self) {
            while self.i < self.s.len() {
                match self.s[self.i] {
                    b' ' | b'\t' | b'\n' | b'\r' | b',' => self.i += 1,
                    b'#' => {
                        while self.i < self.s.len() && self.s[self.i] != b'\n' {
                            self.i += 1;
                        }
                    }
                    0xEF if self.s[self.i..].starts_with(&[0xEF, 0xBB, 0xBF]) => self.i += 3,
                    _ => break,
                }
            }
        }

        fn peek(&mut self) -> Option<u8> {
            self.skip();
            self.s.get(self.i).copied()
        }

        fn eat(&mut self, c: u8) -> bool {
            if self.peek() == Some(c) {
                self.i += 1;
                true
            } else {
                false
            }
        }

        fn expect(&mut self, c: u8) -> Result<(), Value> {
            if self.eat(c) { Ok(()) } else { Err(self.err(&format!("expected `{}`", c as char))) }
        }

        fn peek_name(&mut self) -> Option<String> {
            let save = self.i;
            let n = self.name().ok();
            self.i = save;
            n
        }

        fn name(&mut self) -> Result<String, Value> {
            self.skip();
            let start = self.i;
            if self.i < self.s.len() && (self.s[self.i].is_ascii_alphabetic() || self.s[self.i] == b'_') {
                self.i += 1;
                while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
                    self.i += 1;
                }
                Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            } else {
                Err(self.err("expected a name"))
            }
        }

        fn operation(&mut self) -> Result<Operation, Value> {
            if self.peek() == Some(b'{') {
                return Ok(Operation {
                    kind: OpKind::Query,
                    name: None,
                    vars: vec![],
                    selections: self.selection_set()?,
                });
            }
            let kind = match self.name()?.as_str() {
                "query" => OpKind::Query,
                "mutation" => OpKind::Mutation,
                "subscription" => return Err(self.err("subscriptions are not supported")),
                "fragment" => return Err(self.err("Fragment definitions are not supported by this fake")),
                other => return Err(self.err(&format!("unexpected `{other}`"))),
            };
            let name = if self.peek().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') {
                Some(self.name()?)
            } else {
                None
            };
            let mut vars = vec![];
            if self.eat(b'(') {
                while !self.eat(b')') {
                    self.expect(b'$')?;
                    let name = self.name()?;
                    self.expect(b':')?;
                    let ty = self.ty()?;
                    let default = if self.eat(b'=') { Some(self.value(true)?) } else { None };
                    vars.push(VarDef { name, ty, default });
                    if self.peek().is_none() {
                        return Err(self.err("unterminated variable list"));
                    }
                }
            }
            if self.peek() == Some(b'@') {
                return Err(self.err("directives on operations are not supported"));
            }
            Ok(Operation { kind, name, vars, selections: self.selection_set()? })
        }

        fn ty(&mut self) -> Result<String, Value> {
            let mut t = if self.eat(b'[') {
                let inner = self.ty()?;
                self.expect(b']')?;
                format!("[{inner}]")
            } else {
                self.name()?
            };
            if self.eat(b'!') {
                t.push('!');
            }
            Ok(t)
        }

        fn selection_set(&mut self) -> Result<Vec<Selection>, Value> {
            self.expect(b'{')?;
            let mut out = vec![];
            loop {
                match self.peek() {
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    None => return Err(self.err("unterminated selection set")),
                    _ => {}
                }
                if self.s[self.i..].starts_with(b"...") {
                    self.i += 3;
                    let on = if self.peek_name().as_deref() == Some("on") {
                        self.name()?;
                        Some(self.name()?)
                    } else if self.peek() == Some(b'{') {
                        None
                    } else {
                        return Err(self.err("Fragment spreads are not supported by this fake"));
                    };
                    if self.peek() == Some(b'@') {
                        return Err(self.err("directives on fragments are not supported"));
                    }
                    out.push(Selection::Inline { on, selections: self.selection_set()? });
                    continue;
                }
                let first = self.name()?;
                let (alias, name) = if self.eat(b':') { (Some(first), self.name()?) } else { (None, first) };
                let args = self.arguments(false)?;
                let mut directives = vec![];
                while self.eat(b'@') {
                    let name = self.name()?;
                    let args = self.arguments(false)?;
                    directives.push(Directive { name, args });
                }
                let selections = if self.peek() == Some(b'{') { self.selection_set()? } else { vec![] };
                out.push(Selection::Field(Field { alias, name, args, directives, selections }));
            }
            if out.is_empty() {
                return Err(self.err("empty selection set"));
            }
            Ok(out)
        }

        fn arguments(&mut self, constant: bool) -> Result<Vec<(String, GValue)>, Value> {
            let mut out = vec![];
            if self.eat(b'(') {
                while !self.eat(b')') {
                    let n = self.name()?;
                    self.expect(b':')?;
                    out.push((n, self.value(constant)?));
                    if self.peek().is_none() {
                        return Err(self.err("unterminated argument list"));
                    }
                }
            }
            Ok(out)
        }

        fn value(&mut self, constant: bool) -> Result<GValue, Value> {
            match self.peek() {
                Some(b'$') if !constant => {
                    self.i += 1;
                    Ok(GValue::Var(self.name()?))
                }
                Some(b'"') => Ok(GValue::Str(self.string()?)),
                Some(b'[') => {
                    self.i += 1;
                    let mut l = vec![];
                    while !self.eat(b']') {
                        l.push(self.value(constant)?);
                        if self.peek().is_none() {
                            return Err(self.err("unterminated list"));
                        }
                    }
                    Ok(GValue::List(l))
                }
                Some(b'{') => {
                    self.i += 1;
                    let mut o = vec![];
                    while !self.eat(b'}') {
                        let n = self.name()?;
                        self.expect(b':')?;
                        o.push((n, self.value(constant)?));
                        if self.peek().is_none() {
                            return Err(self.err("unterminated object"));
                        }
                    }
                    Ok(GValue::Object(o))
                }
                Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
                Some(c) if c.is_ascii_alphabetic() || c == b'_' => Ok(match self.name()?.as_str() {
                    "true" => GValue::Bool(true),
                    "false" => GValue::Bool(false),
                    "null" => GValue::Null,
                    other => GValue::Enum(other.to_owned()),
                }),
                _ => Err(self.err("expected a value")),
            }
        }

        fn number(&mut self) -> Result<GValue, Value> {
            let start = self.i;
            if self.s[self.i] == b'-' {
                self.i += 1;
            }
            let mut float = false;
            while self.i < self.s.len() {
                match self.s[self.i] {
                    b'0'..=b'9' => {}
                    b'.' | b'e' | b'E' | b'+' => float = true,
                    b'-' if float => {}
                    _ => break,
                }
                self.i += 1;
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            if float {
                text.parse().map(GValue::Float).map_err(|_| self.err("bad number"))
            } else {
                text.parse().map(GValue::Int).map_err(|_| self.err("bad integer"))
            }
        }

        fn string(&mut self) -> Result<String, Value> {
            if self.s[self.i..].starts_with(b"\"\"\"") {
                self.i += 3;
                let start = self.i;
                while self.i + 3 <= self.s.len() && !self.s[self.i..].starts_with(b"\"\"\"") {
                    self.i += 1;
                }
                if self.i + 3 > self.s.len() {
                    return Err(self.err("unterminated block string"));
                }
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 3;
                return Ok(s);
            }
            self.i += 1;
            let mut out = Vec::new();
            loop {
                let Some(&c) = self.s.get(self.i) else { return Err(self.err("unterminated string")) };
                self.i += 1;
                match c {
                    b'"' => break,
                    b'\n' => return Err(self.err("newline in string")),
                    b'\\' => {
                        let Some(&e) = self.s.get(self.i) else { return Err(self.err("unterminated string")) };
                        self.i += 1;
                        match e {
                            b'"' => out.push(b'"'),
                            b'\\' => out.push(b'\\'),
                            b'/' => out.push(b'/'),
                            b'b' => out.push(8),
                            b'f' => out.push(12),
                            b'n' => out.push(b'\n'),
                            b'r' => out.push(b'\r'),
                            b't' => out.push(b'\t'),
                            b'u' => {
                                let hex = self.s.get(self.i..self.i + 4).ok_or_else(|| self.err("bad \\u escape"))?;
                                let cp = u32::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16)
                                    .map_err(|_| self.err("bad \\u escape"))?;
                                self.i += 4;
                                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                                out.extend_from_slice(ch.to_string().as_bytes());
                            }
                            _ => return Err(self.err("bad escape")),
                        }
                    }
                    c => out.push(c),
                }
            }
            String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
        }
    }
}

// ---------------------------------------------------------------------------
// The schema subset.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum T {
    /// A scalar or enum.
    S,
    /// An object of this type.
    O(&'static str),
    /// A list of objects of this type.
    L(&'static str),
    /// A connection of this type.
    C(&'static str),
}

struct Fd {
    name: &'static str,
    args: &'static [(&'static str, &'static str)],
    ty: T,
}

const fn f(name: &'static str, args: &'static [(&'static str, &'static str)], ty: T) -> Fd {
    Fd { name, args, ty }
}

const PAGING: &[(&str, &str)] =
    &[("first", "Int"), ("after", "String"), ("last", "Int"), ("before", "String"), ("reverse", "Boolean")];
const PAGING_Q: &[(&str, &str)] = &[
    ("first", "Int"),
    ("after", "String"),
    ("last", "Int"),
    ("before", "String"),
    ("reverse", "Boolean"),
    ("query", "String"),
];
const LOCATIONS_ARGS: &[(&str, &str)] = &[
    ("first", "Int"),
    ("after", "String"),
    ("last", "Int"),
    ("before", "String"),
    ("reverse", "Boolean"),
    ("query", "String"),
    ("includeInactive", "Boolean"),
    ("includeLegacy", "Boolean"),
];

/// The object types whose ids `node(id:)` resolves.
const NODE_TYPES: &[&str] = &["BulkOperation", "Location", "InventoryItem", "InventoryLevel"];

/// A field table as a constant (const fn calls are not promoted to 'static otherwise).
macro_rules! tbl {
    ($($e:expr),* $(,)?) => {{
        const TBL: &[Fd] = &[$($e),*];
        TBL
    }};
}

fn fields_of(ty: &str) -> Option<&'static [Fd]> {
    use T::*;
    Some(match ty {
        "QueryRoot" => tbl![
            f("locations", LOCATIONS_ARGS, C("LocationConnection")),
            f("location", &[("id", "ID")], O("Location")),
            f("inventoryItems", PAGING_Q, C("InventoryItemConnection")),
            f("inventoryItem", &[("id", "ID!")], O("InventoryItem")),
            f("productVariantsCount", &[("limit", "Int"), ("query", "String")], O("Count")),
            f("node", &[("id", "ID!")], O("Node")),
            f("bulkOperation", &[("id", "ID!")], O("BulkOperation")),
            f("currentBulkOperation", &[("type", "BulkOperationType")], O("BulkOperation")),
        ],
        "Mutation" => tbl![
            f(
                "inventorySetQuantities",
                &[("input", "InventorySetQuantitiesInput!")],
                O("InventorySetQuantitiesPayload")
            ),
            f(
                "inventoryActivate",
                &[
                    ("inventoryItemId", "ID!"),
                    ("locationId", "ID!"),
                    ("available", "Int"),
                    ("onHand", "Int"),
                    ("stockAtLegacyLocation", "Boolean"),
                ],
                O("InventoryActivatePayload"),
            ),
            f(
                "bulkOperationRunQuery",
                &[("query", "String!"), ("groupObjects", "Boolean")],
                O("BulkOperationRunQueryPayload"),
            ),
        ],
        "Node" => tbl![f("id", &[], S)],
        "Location" => tbl![
            f("id", &[], S),
            f("name", &[], S),
            f("isActive", &[], S),
            f("inventoryLevels", PAGING_Q, C("InventoryLevelConnection")),
            f("inventoryLevel", &[("inventoryItemId", "ID!")], O("InventoryLevel")),
        ],
        "InventoryItem" => tbl![
            f("id", &[], S),
            f("sku", &[], S),
            f("tracked", &[], S),
            f("inventoryLevel", &[("locationId", "ID!")], O("InventoryLevel")),
            f("inventoryLevels", PAGING_Q, C("InventoryLevelConnection")),
        ],
        "InventoryLevel" => tbl![
            f("id", &[], S),
            f("item", &[], O("InventoryItem")),
            f("location", &[], O("Location")),
            f("quantities", &[("names", "[String!]!")], L("InventoryQuantity")),
            f("createdAt", &[], S),
            f("updatedAt", &[], S),
        ],
        "InventoryQuantity" => tbl![f("id", &[], S), f("name", &[], S), f("quantity", &[], S), f("updatedAt", &[], S)],
        "LocationConnection" => {
            tbl![f("nodes", &[], L("Location")), f("edges", &[], L("LocationEdge")), f("pageInfo", &[], O("PageInfo")),]
        }
        "LocationEdge" => tbl![f("node", &[], O("Location")), f("cursor", &[], S)],
        "InventoryItemConnection" => tbl![
            f("nodes", &[], L("InventoryItem")),
            f("edges", &[], L("InventoryItemEdge")),
            f("pageInfo", &[], O("PageInfo")),
        ],
        "InventoryItemEdge" => tbl![f("node", &[], O("InventoryItem")), f("cursor", &[], S)],
        "InventoryLevelConnection" => tbl![
            f("nodes", &[], L("InventoryLevel")),
            f("edges", &[], L("InventoryLevelEdge")),
            f("pageInfo", &[], O("PageInfo")),
        ],
        "InventoryLevelEdge" => tbl![f("node", &[], O("InventoryLevel")), f("cursor", &[], S)],
        "PageInfo" => tbl![
            f("hasNextPage", &[], S),
            f("hasPreviousPage", &[], S),
            f("startCursor", &[], S),
            f("endCursor", &[], S),
        ],
        "Count" => tbl![f("count", &[], S), f("precision", &[], S)],
        "BulkOperation" => tbl![
            f("id", &[], S),
            f("status", &[], S),
            f("errorCode", &[], S),
            f("objectCount", &[], S),
            f("rootObjectCount", &[], S),
            f("url", &[], S),
            f("partialDataUrl", &[], S),
            f("createdAt", &[], S),
            f("completedAt", &[], S),
            f("fileSize", &[], S),
            f("query", &[], S),
            f("type", &[], S),
        ],
        "InventorySetQuantitiesPayload" => tbl![
            f("inventoryAdjustmentGroup", &[], O("InventoryAdjustmentGroup")),
            f("userErrors", &[], L("InventorySetQuantitiesUserError")),
        ],
        "InventorySetQuantitiesUserError" => tbl![f("field", &[], S), f("message", &[], S), f("code", &[], S)],
        "InventoryAdjustmentGroup" => {
            tbl![f("id", &[], S), f("createdAt", &[], S), f("reason", &[], S), f("referenceDocumentUri", &[], S),]
        }
        "InventoryActivatePayload" => {
            tbl![f("inventoryLevel", &[], O("InventoryLevel")), f("userErrors", &[], L("UserError"))]
        }
        "UserError" => tbl![f("field", &[], S), f("message", &[], S)],
        "BulkOperationRunQueryPayload" => {
            tbl![f("bulkOperation", &[], O("BulkOperation")), f("userErrors", &[], L("BulkOperationUserError")),]
        }
        "BulkOperationUserError" => tbl![f("field", &[], S), f("message", &[], S), f("code", &[], S)],
        _ => return None,
    })
}

fn field_def(ty: &str, name: &str) -> Option<&'static Fd> {
    fields_of(ty)?.iter().find(|d| d.name == name)
}

/// Mutations that take (and from 2026-04 require) `@idempotent(key:)`.
const IDEMPOTENT: &[&str] = &["inventorySetQuantities", "inventoryActivate"];

fn version_at_least(version: &str, min: &str) -> bool {
    version >= min
}

mod validate {
    //! Validation of an operation against the schema subset, and of argument
    //! values (variables substituted) against their input types.

    use super::*;

    /// Checks the document and returns the variables with defaults applied.
    pub fn operation(
        op: &Operation,
        mut vars: Map<String, Value>,
        version: &str,
    ) -> Result<Map<String, Value>, Vec<Value>> {
        let mut errors = vec![];
        let root = if op.kind == OpKind::Mutation { "Mutation" } else { "QueryRoot" };
        let declared: HashMap<&str, &VarDef> = op.vars.iter().map(|v| (v.name.as_str(), v)).collect();
        for v in &op.vars {
            let base = v.ty.trim_matches(|c| c == '[' || c == ']' || c == '!');
            if !INPUT_TYPES.contains(&base) {
                errors.push(gql_error(
                    format!("{} isn't a defined input type (on ${})", v.ty, v.name),
                    "variableRequiresValidType",
                ));
            }
            if !vars.contains_key(&v.name)
                && let Some(d) = &v.default
            {
                vars.insert(v.name.clone(), to_json(d, &Map::new()));
            }
        }
        let mut used = HashSet::new();
        selections(root, &op.selections, op, &vars, version, &declared, &mut used, &mut errors, 0);
        for v in &op.vars {
            if !used.contains(v.name.as_str()) {
                errors.push(gql_error(
                    format!(
                        "Variable ${} is declared by {} but not used",
                        v.name,
                        op.name.as_deref().unwrap_or("anonymous operation")
                    ),
                    "variableNotUsed",
                ));
            }
        }
        if errors.is_empty() { Ok(vars) } else { Err(errors) }
    }

    const INPUT_TYPES: &[&str] = &[
        "ID",
        "String",
        "Int",
        "Boolean",
        "Float",
        "InventorySetQuantitiesInput",
        "InventoryQuantityInput",
        "BulkOperationType",
    ];

    #[allow(clippy::too_many_arguments)]
    fn selections<'a>(
        ty: &str,
        sels: &'a [Selection],
        op: &Operation,
        vars: &Map<String, Value>,
        version: &str,
        declared: &HashMap<&str, &VarDef>,
        used: &mut HashSet<&'a str>,
        errors: &mut Vec<Value>,
        depth: usize,
    ) {
        if depth > 20 {
            errors.push(gql_error("Query has depth greater than the maximum", "MAX_DEPTH"));
            return;
        }
        let mut keys: HashMap<&str, &str> = HashMap::new();
        for sel in sels {
            match sel {
                Selection::Inline { on, selections: inner } => {
                    let target = on.as_deref().unwrap_or(ty);
                    let ok = target == ty || (ty == "Node" && NODE_TYPES.contains(&target));
                    if !ok {
                        errors.push(gql_error(
                            format!("Fragment on {target} can't be spread inside {ty}"),
                            "fragmentSpreadImpossible",
                        ));
                        continue;
                    }
                    selections(target, inner, op, vars, version, declared, used, errors, depth + 1);
                }
                Selection::Field(fl) => {
                    let Some(def) = field_def(ty, &fl.name) else {
                        errors.push(gql_error(
                            format!("Field '{}' doesn't exist on type '{ty}'", fl.name),
                            "undefinedField",
                        ));
                        continue;
                    };
                    if let Some(prev) = keys.insert(fl.key(), &fl.name)
                        && prev != fl.name
                    {
                        errors.push(gql_error(
                            format!("Field '{}' has a field conflict: {prev} or {}?", fl.key(), fl.name),
                            "fieldConflict",
                        ));
                    }
                    for (a, v) in &fl.args {
                        collect_vars(v, used);
                        let Some((_, aty)) = def.args.iter().find(|(n, _)| n == a) else {
                            errors.push(gql_error(
                                format!("Field '{}' doesn't accept argument '{a}'", fl.name),
                                "argumentNotAccepted",
                            ));
                            continue;
                        };
                        if let GValue::Var(name) = v {
                            match declared.get(name.as_str()) {
                                None => errors.push(gql_error(
                                    format!(
                                        "Variable ${name} is used by {} but not declared",
                                        op.name.as_deref().unwrap_or("anonymous operation")
                                    ),
                                    "variableNotDefined",
                                )),
                                Some(d) if !(d.ty == *aty || d.ty == format!("{aty}!")) => errors.push(gql_error(
                                    format!("Type mismatch on variable ${name} and argument {a} ({} / {aty})", d.ty),
                                    "variableMismatch",
                                )),
                                Some(d) => {
                                    let value = to_json(v, vars);
                                    if let Err(p) = check(aty, &value, version) {
                                        errors.push(gql_error(
                                            format!("Variable ${name} of type {} was provided invalid value{p}", d.ty),
                                            "INVALID_VARIABLE",
                                        ));
                                    }
                                }
                            }
                        } else {
                            let value = to_json(v, vars);
                            if let Err(p) = check(aty, &value, version) {
                                errors.push(gql_error(
                                    format!(
                                        "Argument '{a}' on Field '{}' has an invalid value{p}. Expected type '{aty}'.",
                                        fl.name
                                    ),
                                    "argumentLiteralsIncompatible",
                                ));
                            }
                        }
                    }
                    for (a, aty) in def.args {
                        if aty.ends_with('!') && !fl.args.iter().any(|(n, _)| n == a) {
                            errors.push(gql_error(
                                format!("Field '{}' is missing required arguments: {a}", fl.name),
                                "missingRequiredArguments",
                            ));
                        }
                    }
                    for d in &fl.directives {
                        let allowed = d.name == "idempotent" && ty == "Mutation" && IDEMPOTENT.contains(&def.name);
                        if !allowed {
                            errors.push(gql_error(
                                format!("Directive '@{}' is not defined or not allowed on '{}'", d.name, fl.name),
                                "directiveCannotBeApplied",
                            ));
                            continue;
                        }
                        match d.args.as_slice() {
                            [(k, v)] if k == "key" => {
                                collect_vars(v, used);
                                if to_json(v, vars).as_str().is_none_or(str::is_empty) {
                                    errors.push(gql_error(
                                        "The idempotency key must be a non-empty string",
                                        "BAD_REQUEST",
                                    ));
                                }
                            }
                            _ => errors.push(gql_error(
                                "@idempotent takes exactly the argument `key: String!`",
                                "argumentNotAccepted",
                            )),
                        }
                    }
                    match def.ty {
                        T::S if !fl.selections.is_empty() => errors.push(gql_error(
                            format!("Selections can't be made on scalars (field '{}' returns a scalar)", fl.name),
                            "selectionMismatch",
                        )),
                        T::S => {}
                        T::O(t) | T::L(t) | T::C(t) => {
                            if fl.selections.is_empty() {
                                errors.push(gql_error(
                                    format!(
                                        "Field must have selections (field '{}' returns {t} but has no selections)",
                                        fl.name
                                    ),
                                    "selectionMismatch",
                                ));
                            } else {
                                selections(t, &fl.selections, op, vars, version, declared, used, errors, depth + 1);
                            }
                        }
                    }
                }
            }
        }
    }

    fn collect_vars<'a>(v: &'a GValue, used: &mut HashSet<&'a str>) {
        match v {
            GValue::Var(n) => {
                used.insert(n);
            }
            GValue::List(l) => l.iter().for_each(|x| collect_vars(x, used)),
            GValue::Object(o) => o.iter().for_each(|(_, x)| collect_vars(x, used)),
            _ => {}
        }
    }

    /// Checks a value against an input type; `Err` holds the problem as " for path (explanation)".
    pub fn check(ty: &str, v: &Value, version: &str) -> Result<(), String> {
        check_at(ty, v, version, "")
    }

    fn check_at(ty: &str, v: &Value, version: &str, path: &str) -> Result<(), String> {
        let problem = |why: &str| {
            if path.is_empty() { Err(format!(" ({why})")) } else { Err(format!(" for {path} ({why})")) }
        };
        if let Some(inner) = ty.strip_suffix('!') {
            if v.is_null() {
                return problem("Expected value to not be null");
            }
            return check_at(inner, v, version, path);
        }
        if v.is_null() {
            return Ok(());
        }
        if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let Some(items) = v.as_array() else { return check_at(inner, v, version, path) };
            for (i, x) in items.iter().enumerate() {
                let p = if path.is_empty() { i.to_string() } else { format!("{path}.{i}") };
                check_at(inner, x, version, &p)?;
            }
            return Ok(());
        }
        let fields: &[(&str, &str)] = match ty {
            "ID" | "String" => {
                return if v.is_string() { Ok(()) } else { problem(&format!("Could not coerce value {v} to {ty}")) };
            }
            "Int" => {
                return match v.as_i64() {
                    Some(i) if i32::try_from(i).is_ok() => Ok(()),
                    _ => problem(&format!("Could not coerce value {v} to Int")),
                };
            }
            "Float" => {
                return if v.is_number() { Ok(()) } else { problem(&format!("Could not coerce value {v} to Float")) };
            }
            "Boolean" => {
                return if v.is_boolean() {
                    Ok(())
                } else {
                    problem(&format!("Could not coerce value {v} to Boolean"))
                };
            }
            "BulkOperationType" => {
                return if matches!(v.as_str(), Some("QUERY" | "MUTATION")) {
                    Ok(())
                } else {
                    problem("Expected one of QUERY, MUTATION")
                };
            }
            "InventorySetQuantitiesInput" if version_at_least(version, "2026-04") => &[
                ("name", "String!"),
                ("reason", "String!"),
                ("referenceDocumentUri", "String"),
                ("quantities", "[InventoryQuantityInput!]!"),
            ],
            "InventorySetQuantitiesInput" => &[
                ("name", "String!"),
                ("reason", "String!"),
                ("referenceDocumentUri", "String"),
                ("quantities", "[InventoryQuantityInput!]!"),
                ("ignoreCompareQuantity", "Boolean"),
            ],
            "InventoryQuantityInput" if version_at_least(version, "2026-04") => &[
                ("inventoryItemId", "ID!"),
                ("locationId", "ID!"),
                ("quantity", "Int!"),
                ("changeFromQuantity", "Int"),
            ],
            "InventoryQuantityInput" => &[
                ("inventoryItemId", "ID!"),
                ("locationId", "ID!"),
                ("quantity", "Int!"),
                ("changeFromQuantity", "Int"),
                ("compareQuantity", "Int"),
            ],
            other => return problem(&format!("unknown input type {other}")),
        };
        let Some(obj) = v.as_object() else { return problem(&format!("Expected {ty} to be a key-value object")) };
        for k in obj.keys() {
            if !fields.iter().any(|(n, _)| n == k) {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                return Err(format!(" for {p} (Field is not defined on {ty})"));
            }
        }
        for (n, fty) in fields {
            let p = if path.is_empty() { (*n).to_owned() } else { format!("{path}.{n}") };
            match obj.get(*n) {
                Some(x) => check_at(fty, x, version, &p)?,
                None if fty.ends_with('!') => return Err(format!(" for {p} (Expected value to not be null)")),
                None => {}
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Execution.

/// A resolved value before it is shaped by its selection.
#[derive(Debug, Clone)]
enum N {
    Null,
    Val(Value),
    List(Vec<N>),
    Obj(O),
}

#[derive(Debug, Clone)]
enum O {
    Location(u64),
    Item(u64),
    /// (location, item)
    Level(u64, u64),
    Quantity(String, i64),
    PageInfo {
        next: bool,
        start: Option<String>,
        end: Option<String>,
    },
    /// Nodes with their cursors, and the page info.
    Conn(Vec<(String, N)>, Box<O>),
    Edge(String, Box<N>),
    Bulk(u64),
    /// A plain object (payloads, errors).
    Fields(Vec<(&'static str, N)>),
}

impl O {
    fn type_name(&self) -> Option<&'static str> {
        Some(match self {
            O::Location(_) => "Location",
            O::Item(_) => "InventoryItem",
            O::Level(..) => "InventoryLevel",
            O::Bulk(_) => "BulkOperation",
            _ => return None,
        })
    }
}

fn cursor(kind: &str, key: u64) -> String {
    hex_encode(format!("{kind}:{key}").as_bytes())
}

fn uncursor(kind: &str, c: &str) -> Option<u64> {
    let bytes =
        (0..c.len()).step_by(2).map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()?.strip_prefix(kind)?.strip_prefix(':')?.parse().ok()
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const QUANTITY_NAMES: &[&str] =
    &["available", "on_hand", "committed", "reserved", "incoming", "damaged", "quality_control", "safety_stock"];
const REASONS: &[&str] = &[
    "correction",
    "cycle_count_available",
    "damaged",
    "movement_created",
    "movement_updated",
    "movement_received",
    "movement_canceled",
    "other",
    "promotion",
    "quality_control",
    "received",
    "reservation_created",
    "reservation_deleted",
    "reservation_updated",
    "restock",
    "safety_stock",
    "shrinkage",
];

mod exec {
    use super::*;

    pub struct Exec<'a> {
        pub st: &'a mut State,
        pub vars: &'a Map<String, Value>,
        pub version: &'a str,
        pub errors: Vec<Value>,
    }

    impl Exec<'_> {
        pub fn operation(&mut self, op: &Operation) -> Value {
            let root = if op.kind == OpKind::Mutation { "Mutation" } else { "QueryRoot" };
            let mut out = Map::new();
            for sel in &op.selections {
                let Selection::Field(fl) = sel else { continue };
                let n = self.root_field(root, fl, false);
                let def = field_def(root, &fl.name).expect("validated");
                let v = self.complete(&n, def.ty, fl);
                out.insert(fl.key().to_owned(), v);
            }
            Value::Object(out)
        }

        fn args(&self, fl: &Field) -> Map<String, Value> {
            fl.args.iter().map(|(k, v)| (k.clone(), to_json(v, self.vars))).collect()
        }

        fn err(&mut self, fl: &Field, message: String) -> N {
            self.errors.push(json!({"message": message, "path": [fl.key()]}));
            N::Null
        }

        /// Resolves a root field. `bulk`: connections return every node.
        pub fn root_field(&mut self, root: &str, fl: &Field, bulk: bool) -> N {
            let a = self.args(fl);
            let id_arg = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
            match (root, fl.name.as_str()) {
                ("QueryRoot", "locations") => {
                    let ids: Vec<u64> = self.st.locations.keys().copied().collect();
                    self.page(fl, &a, "loc", ids.into_iter().map(|id| (id, N::Obj(O::Location(id)))), bulk)
                }
                ("QueryRoot", "location") => match id_arg("id").and_then(|s| parse_gid(&s, "Location")) {
                    Some(id) if self.st.locations.contains_key(&id) => N::Obj(O::Location(id)),
                    _ => N::Null,
                },
                ("QueryRoot", "inventoryItems") => {
                    let filter = match a.get("query").and_then(Value::as_str).map(search) {
                        Some(Ok(f)) => Some(f),
                        Some(Err(e)) => return self.err(fl, e),
                        None => None,
                    };
                    let items: Vec<(u64, N)> = self
                        .st
                        .items
                        .iter()
                        .filter(|(id, sku)| filter.as_ref().is_none_or(|f| f.matches(**id, sku.as_deref())))
                        .map(|(id, _)| (*id, N::Obj(O::Item(*id))))
                        .collect();
                    self.page(fl, &a, "item", items.into_iter(), bulk)
                }
                ("QueryRoot", "inventoryItem") => match id_arg("id").and_then(|s| parse_gid(&s, "InventoryItem")) {
                    Some(id) if self.st.items.contains_key(&id) => N::Obj(O::Item(id)),
                    _ => N::Null,
                },
                ("QueryRoot", "productVariantsCount") => {
                    let n = self.st.items.len() as u64;
                    let limit = match a.get("limit") {
                        None => Some(10_000),
                        Some(Value::Null) => None,
                        Some(v) => v.as_u64(),
                    };
                    let (count, precision) = match limit {
                        Some(l) if n > l => (l, "AT_LEAST"),
                        _ => (n, "EXACT"),
                    };
                    N::Obj(O::Fields(vec![("count", N::Val(json!(count))), ("precision", N::Val(json!(precision)))]))
                }
                ("QueryRoot", "node" | "bulkOperation") => {
                    let id = id_arg("id").unwrap_or_default();
                    if let Some(b) = parse_gid(&id, "BulkOperation") {
                        return self.poll_bulk(b);
                    }
                    if fl.name == "bulkOperation" {
                        return N::Null;
                    }
                    if let Some(l) = parse_gid(&id, "Location").filter(|l| self.st.locations.contains_key(l)) {
                        return N::Obj(O::Location(l));
                    }
                    if let Some(i) = parse_gid(&id, "InventoryItem").filter(|i| self.st.items.contains_key(i)) {
                        return N::Obj(O::Item(i));
                    }
                    N::Null
                }
                ("QueryRoot", "currentBulkOperation") => match self.st.bulk.last().map(|b| b.id) {
                    Some(id) => self.poll_bulk(id),
                    None => N::Null,
                },
                ("Mutation", "inventorySetQuantities") => self.idempotent(fl, &a, |ex| ex.set_quantities(&a)),
                ("Mutation", "inventoryActivate") => self.idempotent(fl, &a, |ex| ex.activate(&a)),
                ("Mutation", "bulkOperationRunQuery") => self.bulk_run(&a),
                _ => self.err(fl, format!("the fake does not implement {}", fl.name)),
            }
        }

        fn poll_bulk(&mut self, id: u64) -> N {
            match self.st.bulk.iter_mut().find(|b| b.id == id) {
                Some(b) => {
                    b.polls_left = b.polls_left.saturating_sub(1);
                    N::Obj(O::Bulk(id))
                }
                None => N::Null,
            }
        }

        /// Runs a mutation under its `@idempotent` key: a known key with the same
        /// arguments returns the stored payload; with others, a mismatch error.
        fn idempotent(&mut self, fl: &Field, a: &Map<String, Value>, run: impl FnOnce(&mut Self) -> N) -> N {
            let key = fl
                .directives
                .iter()
                .find(|d| d.name == "idempotent")
                .and_then(|d| d.args.first())
                .and_then(|(_, v)| to_json(v, self.vars).as_str().map(str::to_owned));
            let Some(key) = key else {
                if version_at_least(self.version, "2026-04") {
                    return self
                        .err(fl, format!("The @idempotent directive is required for {} as of 2026-04", fl.name));
                }
                return run(self);
            };
            let canon = format!("{}:{}", fl.name, canonical(&Value::Object(a.clone())));
            if let Some((stored, payload)) = self.st.idempotency.get(&key) {
                if *stored == canon {
                    self.st.counters.idempotent_replays += 1;
                    return payload.clone();
                }
                let err = user_error(
                    None,
                    "The idempotency key was already used with different parameters",
                    Some("IDEMPOTENCY_KEY_PARAMETER_MISMATCH"),
                );
                return payload_with(fl.name.as_str(), vec![err]);
            }
            let payload = run(self);
            self.st.idempotency.insert(key, (canon, payload.clone()));
            payload
        }

        fn set_quantities(&mut self, a: &Map<String, Value>) -> N {
            let input = a.get("input").cloned().unwrap_or(Value::Null);
            let name = input.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
            let mut errors = vec![];
            if !["available", "on_hand"].contains(&name.as_str()) {
                errors.push(user_error(
                    Some(json!(["input", "name"])),
                    "The quantity name must be either 'available' or 'on_hand'.",
                    Some("INVALID_NAME"),
                ));
            }
            let reason = input.get("reason").and_then(Value::as_str).unwrap_or("");
            if !REASONS.contains(&reason) {
                errors.push(user_error(
                    Some(json!(["input", "reason"])),
                    "The specified reason is invalid.",
                    Some("INVALID_REASON"),
                ));
            }
            let rows = input.get("quantities").and_then(Value::as_array).cloned().unwrap_or_default();
            if rows.len() > MAX_INPUT {
                self.errors.push(gql_error(
                    format!(
                        "The input array size of {} is greater than the maximum allowed of {MAX_INPUT}.",
                        rows.len()
                    ),
                    "MAX_INPUT_SIZE_EXCEEDED",
                ));
                return N::Null;
            }
            let mut changes = vec![];
            let mut seen = HashSet::new();
            let mut stale = false;
            for (i, q) in rows.iter().enumerate() {
                let at = |f: &str| json!(["input", "quantities", i.to_string(), f]);
                let item = q.get("inventoryItemId").and_then(Value::as_str).and_then(|s| parse_gid(s, "InventoryItem"));
                let Some(item) = item.filter(|i| self.st.items.contains_key(i)) else {
                    errors.push(user_error(
                        Some(at("inventoryItemId")),
                        "The specified inventory item could not be found.",
                        Some("INVALID_INVENTORY_ITEM"),
                    ));
                    continue;
                };
                let loc = q.get("locationId").and_then(Value::as_str).and_then(|s| parse_gid(s, "Location"));
                let Some(loc) = loc.filter(|l| self.st.locations.contains_key(l)) else {
                    errors.push(user_error(
                        Some(at("locationId")),
                        "The specified location could not be found.",
                        Some("INVALID_LOCATION"),
                    ));
                    continue;
                };
                if !seen.insert((item, loc)) {
                    errors.push(user_error(
                        Some(at("locationId")),
                        "The combination of inventoryItemId and locationId must be unique.",
                        Some("NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR"),
                    ));
                    continue;
                }
                let Some(level) = self.st.levels.get(&(loc, item)).copied() else {
                    errors.push(user_error(
                        Some(at("locationId")),
                        "The specified inventory item is not stocked at the location.",
                        Some("ITEM_NOT_STOCKED_AT_LOCATION"),
                    ));
                    continue;
                };
                let quantity = q.get("quantity").and_then(Value::as_i64).unwrap_or(0);
                if quantity > 1_000_000_000 {
                    errors.push(user_error(
                        Some(at("quantity")),
                        "The quantity can't be higher than 1,000,000,000.",
                        Some("INVALID_QUANTITY_TOO_HIGH"),
                    ));
                    continue;
                }
                if quantity < -1_000_000_000 {
                    errors.push(user_error(
                        Some(at("quantity")),
                        "The quantity can't be lower than -1,000,000,000.",
                        Some("INVALID_QUANTITY_TOO_LOW"),
                    ));
                    continue;
                }
                if name == "on_hand" && quantity < 0 {
                    errors.push(user_error(
                        Some(at("quantity")),
                        "The quantity can't be negative.",
                        Some("INVALID_QUANTITY_NEGATIVE"),
                    ));
                    continue;
                }
                let compare = if version_at_least(self.version, "2026-04") {
                    match q.get("changeFromQuantity") {
                        None => {
                            errors.push(user_error(
                                Some(at("changeFromQuantity")),
                                "changeFromQuantity is required; pass null to opt out of the compare check.",
                                Some("COMPARE_QUANTITY_REQUIRED"),
                            ));
                            continue;
                        }
                        Some(v) => v.as_i64(),
                    }
                } else {
                    match (q.get("changeFromQuantity"), q.get("compareQuantity")) {
                        (Some(v), _) => v.as_i64(),
                        (None, Some(v)) => v.as_i64(),
                        (None, None) if input.get("ignoreCompareQuantity") == Some(&Value::Bool(true)) => None,
                        (None, None) => {
                            errors.push(user_error(
                                Some(at("compareQuantity")),
                                "A compare quantity is required.",
                                Some("COMPARE_QUANTITY_REQUIRED"),
                            ));
                            continue;
                        }
                    }
                };
                if let Some(c) = compare
                    && c != level.get(&name)
                {
                    stale = true;
                    errors.push(user_error(
                        Some(at("changeFromQuantity")),
                        "The specified compare quantity does not match the current quantity.",
                        Some("CHANGE_FROM_QUANTITY_STALE"),
                    ));
                    continue;
                }
                changes.push((loc, item, quantity));
            }
            if !errors.is_empty() {
                if stale {
                    self.st.counters.stale_rejections += 1;
                }
                return payload_with("inventorySetQuantities", errors);
            }
            for (loc, item, q) in &changes {
                let l = self.st.levels.get_mut(&(*loc, *item)).expect("checked");
                match name.as_str() {
                    "on_hand" => l.available = q - l.committed,
                    _ => l.available = *q,
                }
            }
            self.st.counters.set_mutations += 1;
            self.st.counters.quantities_written += changes.len() as u64;
            self.st.groups += 1;
            let group = O::Fields(vec![
                ("id", N::Val(json!(gid("InventoryAdjustmentGroup", self.st.groups)))),
                ("createdAt", N::Val(json!("2026-11-27T10:00:00Z"))),
                ("reason", N::Val(json!(reason))),
                ("referenceDocumentUri", N::Val(input.get("referenceDocumentUri").cloned().unwrap_or(Value::Null))),
            ]);
            N::Obj(O::Fields(vec![("inventoryAdjustmentGroup", N::Obj(group)), ("userErrors", N::List(vec![]))]))
        }

        fn activate(&mut self, a: &Map<String, Value>) -> N {
            let item = a.get("inventoryItemId").and_then(Value::as_str).and_then(|s| parse_gid(s, "InventoryItem"));
            let loc = a.get("locationId").and_then(Value::as_str).and_then(|s| parse_gid(s, "Location"));
            let errors = |field: &str, msg: &str| {
                N::Obj(O::Fields(vec![
                    ("inventoryLevel", N::Null),
                    ("userErrors", N::List(vec![user_error(Some(json!([field])), msg, None)])),
                ]))
            };
            let Some(item) = item.filter(|i| self.st.items.contains_key(i)) else {
                return errors("inventoryItemId", "Inventory item does not exist");
            };
            let Some(loc) = loc.filter(|l| self.st.locations.contains_key(l)) else {
                return errors("locationId", "Location does not exist");
            };
            if let std::collections::btree_map::Entry::Vacant(e) = self.st.levels.entry((loc, item)) {
                let available = a.get("available").and_then(Value::as_i64);
                let on_hand = a.get("onHand").and_then(Value::as_i64);
                e.insert(Level { available: available.or(on_hand).unwrap_or(0), committed: 0 });
                self.st.counters.activations += 1;
            }
            N::Obj(O::Fields(vec![("inventoryLevel", N::Obj(O::Level(loc, item))), ("userErrors", N::List(vec![]))]))
        }

        fn bulk_run(&mut self, a: &Map<String, Value>) -> N {
            let query = a.get("query").and_then(Value::as_str).unwrap_or("").to_owned();
            let fail = |msg: String| {
                N::Obj(O::Fields(vec![
                    ("bulkOperation", N::Null),
                    ("userErrors", N::List(vec![user_error(Some(json!(["query"])), &msg, Some("INVALID"))])),
                ]))
            };
            let op = match parse::document(&query) {
                Ok(op) if op.kind == OpKind::Query && op.vars.is_empty() => op,
                Ok(_) => return fail("Bulk queries must be a query without variables".into()),
                Err(e) => return fail(format!("Invalid bulk query: {}", e["message"].as_str().unwrap_or(""))),
            };
            if let Err(errs) = validate::operation(&op, Map::new(), self.version) {
                let msgs: Vec<&str> = errs.iter().filter_map(|e| e["message"].as_str()).collect();
                return fail(format!("Invalid bulk query: {}", msgs.join("; ")));
            }
            let [Selection::Field(root)] = op.selections.as_slice() else {
                return fail("Bulk queries must have exactly one root field".into());
            };
            if !matches!(field_def("QueryRoot", &root.name).map(|d| d.ty), Some(T::C(_))) {
                return fail("Bulk queries must contain at least one connection.".into());
            }
            if let Err(e) = bulk_rules(root) {
                return fail(e);
            }
            let mut lines = String::new();
            let mut objects = 0;
            let mut roots = 0;
            let conn = self.root_field("QueryRoot", root, true);
            let conn_ty = match field_def("QueryRoot", &root.name).map(|d| d.ty) {
                Some(T::C(t)) => t,
                _ => unreachable!("checked above"),
            };
            self.bulk_lines(&conn, conn_ty, root, None, &mut lines, &mut objects, &mut roots);
            let id = self.st.id();
            self.st.bulk.push(BulkOp {
                id,
                query,
                polls_left: self.st.cfg.bulk_polls,
                lines: Arc::new(lines),
                objects,
                roots,
            });
            N::Obj(O::Fields(vec![("bulkOperation", N::Obj(O::Bulk(id))), ("userErrors", N::List(vec![]))]))
        }

        /// Writes one JSONL line per node of `conn`, then its nested connections' nodes.
        #[allow(clippy::too_many_arguments)]
        fn bulk_lines(
            &mut self,
            conn: &N,
            conn_ty: &str,
            fl: &Field,
            parent: Option<&str>,
            out: &mut String,
            objects: &mut u64,
            roots: &mut u64,
        ) {
            let N::Obj(O::Conn(nodes, _)) = conn else { return };
            let (node_ty, node_sel) = node_selection(conn_ty, fl);
            for (_, node) in nodes {
                let N::Obj(o) = node else { continue };
                let mut obj = Map::new();
                let mut nested = vec![];
                for sel in flatten(&node_sel, o.type_name()) {
                    let def = field_def(node_ty, &sel.name).expect("validated");
                    if let T::C(t) = def.ty {
                        nested.push((sel, t));
                        continue;
                    }
                    let n = self.resolve(o, node_ty, sel, true);
                    obj.insert(sel.key().to_owned(), self.complete(&n, def.ty, sel));
                }
                let id = obj.get("id").and_then(Value::as_str).map(str::to_owned);
                if let Some(p) = parent {
                    obj.insert("__parentId".into(), json!(p));
                } else {
                    *roots += 1;
                }
                *objects += 1;
                out.push_str(&Value::Object(obj).to_string());
                out.push('\n');
                for (sel, t) in nested {
                    let child = self.resolve(o, node_ty, sel, true);
                    self.bulk_lines(&child, t, sel, id.as_deref(), out, objects, roots);
                }
            }
        }

        /// Pages `items` (sorted by key) by `first`/`after`; in bulk, every item.
        fn page(
            &mut self,
            fl: &Field,
            a: &Map<String, Value>,
            kind: &str,
            items: impl Iterator<Item = (u64, N)>,
            bulk: bool,
        ) -> N {
            if bulk {
                let nodes = items.map(|(k, n)| (cursor(kind, k), n)).collect();
                return N::Obj(O::Conn(nodes, Box::new(O::PageInfo { next: false, start: None, end: None })));
            }
            if a.get("last").is_some_and(|v| !v.is_null()) || a.get("before").is_some_and(|v| !v.is_null()) {
                return self.err(fl, "the fake pages forwards only (first/after)".into());
            }
            let Some(first) = a.get("first").and_then(Value::as_i64) else {
                return self.err(fl, "you must provide one of first or last".into());
            };
            if !(0..=250).contains(&first) {
                return self.err(fl, format!("The first argument must be between 0 and 250, got {first}"));
            }
            let after = match a.get("after").and_then(Value::as_str) {
                None => None,
                Some(c) => match uncursor(kind, c) {
                    Some(k) => Some(k),
                    None => return self.err(fl, format!("Invalid cursor for {}", fl.name)),
                },
            };
            let mut skipped = 0;
            let mut nodes = vec![];
            let mut next = false;
            for (k, n) in items {
                if after.is_some_and(|a| k <= a) {
                    skipped += 1;
                    continue;
                }
                if nodes.len() == first as usize {
                    next = true;
                    break;
                }
                nodes.push((cursor(kind, k), n));
            }
            if skipped + nodes.len() > PAGING_LIMIT {
                return self.err(fl, format!("Pagination is limited to {PAGING_LIMIT} objects; use a bulk operation"));
            }
            let start = nodes.first().map(|(c, _)| c.clone());
            let end = nodes.last().map(|(c, _)| c.clone());
            N::Obj(O::Conn(nodes, Box::new(O::PageInfo { next, start, end })))
        }

        /// Resolves `fl` on object `o` (of static type `ty`).
        fn resolve(&mut self, o: &O, ty: &str, fl: &Field, bulk: bool) -> N {
            let a = self.args(fl);
            let st = &*self.st;
            match (o, fl.name.as_str()) {
                (O::Location(id), "id") => N::Val(json!(gid("Location", *id))),
                (O::Location(id), "name") => N::Val(json!(st.locations.get(id))),
                (O::Location(_), "isActive") => N::Val(json!(true)),
                (O::Location(id), "inventoryLevels") => {
                    let id = *id;
                    let levels: Vec<(u64, N)> = st
                        .levels
                        .range((id, 0)..=(id, u64::MAX))
                        .map(|((l, i), _)| (*i, N::Obj(O::Level(*l, *i))))
                        .collect();
                    self.page(fl, &a, "lvl", levels.into_iter(), bulk)
                }
                (O::Location(id), "inventoryLevel") => {
                    match a.get("inventoryItemId").and_then(Value::as_str).and_then(|s| parse_gid(s, "InventoryItem")) {
                        Some(i) if st.levels.contains_key(&(*id, i)) => N::Obj(O::Level(*id, i)),
                        _ => N::Null,
                    }
                }
                (O::Item(id), "id") => N::Val(json!(gid("InventoryItem", *id))),
                (O::Item(id), "sku") => N::Val(json!(st.items.get(id).cloned().flatten())),
                (O::Item(_), "tracked") => N::Val(json!(true)),
                (O::Item(id), "inventoryLevel") => {
                    match a.get("locationId").and_then(Value::as_str).and_then(|s| parse_gid(s, "Location")) {
                        Some(l) if st.levels.contains_key(&(l, *id)) => N::Obj(O::Level(l, *id)),
                        _ => N::Null,
                    }
                }
                (O::Item(id), "inventoryLevels") => {
                    let id = *id;
                    let levels: Vec<(u64, N)> = st
                        .levels
                        .keys()
                        .filter(|(_, i)| *i == id)
                        .map(|(l, i)| (*l, N::Obj(O::Level(*l, *i))))
                        .collect();
                    self.page(fl, &a, "lvl", levels.into_iter(), bulk)
                }
                (O::Level(l, i), "id") => {
                    N::Val(json!(format!("gid://shopify/InventoryLevel/{l}?inventory_item_id={i}")))
                }
                (O::Level(_, i), "item") => N::Obj(O::Item(*i)),
                (O::Level(l, _), "location") => N::Obj(O::Location(*l)),
                (O::Level(l, i), "quantities") => {
                    let level = st.levels.get(&(*l, *i)).copied().unwrap_or(Level { available: 0, committed: 0 });
                    let names: Vec<String> = a
                        .get("names")
                        .and_then(Value::as_array)
                        .map(|v| v.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    if let Some(bad) = names.iter().find(|n| !QUANTITY_NAMES.contains(&n.as_str())) {
                        return self.err(fl, format!("'{bad}' is not a valid inventory quantity name"));
                    }
                    N::List(names.into_iter().map(|n| N::Obj(O::Quantity(n.clone(), level.get(&n)))).collect())
                }
                (O::Level(..), "createdAt" | "updatedAt") => N::Val(json!("2026-11-27T10:00:00Z")),
                (O::Quantity(n, _), "name") => N::Val(json!(n)),
                (O::Quantity(_, q), "quantity") => N::Val(json!(q)),
                (O::Quantity(..), _) => N::Null,
                (O::PageInfo { next, .. }, "hasNextPage") => N::Val(json!(next)),
                (O::PageInfo { .. }, "hasPreviousPage") => N::Val(json!(false)),
                (O::PageInfo { start, .. }, "startCursor") => N::Val(json!(start)),
                (O::PageInfo { end, .. }, "endCursor") => N::Val(json!(end)),
                (O::Conn(nodes, _), "nodes") => N::List(nodes.iter().map(|(_, n)| n.clone()).collect()),
                (O::Conn(nodes, _), "edges") => {
                    N::List(nodes.iter().map(|(c, n)| N::Obj(O::Edge(c.clone(), Box::new(n.clone())))).collect())
                }
                (O::Conn(_, info), "pageInfo") => N::Obj((**info).clone()),
                (O::Edge(c, _), "cursor") => N::Val(json!(c)),
                (O::Edge(_, n), "node") => (**n).clone(),
                (O::Bulk(id), field) => {
                    let Some(b) = st.bulk.iter().find(|b| b.id == *id) else { return N::Null };
                    let done = b.polls_left == 0;
                    match field {
                        "id" => N::Val(json!(gid("BulkOperation", b.id))),
                        "status" => N::Val(json!(if done { "COMPLETED" } else { "RUNNING" })),
                        "errorCode" | "partialDataUrl" => N::Null,
                        "objectCount" => N::Val(json!(if done { b.objects } else { 0 }.to_string())),
                        "rootObjectCount" => N::Val(json!(if done { b.roots } else { 0 }.to_string())),
                        "url" if done && b.objects > 0 => N::Val(json!(format!("{}/bulk/{}.jsonl", st.base, b.id))),
                        "url" => N::Null,
                        "fileSize" if done => N::Val(json!(b.lines.len().to_string())),
                        "fileSize" => N::Null,
                        "createdAt" => N::Val(json!("2026-11-27T10:00:00Z")),
                        "completedAt" if done => N::Val(json!("2026-11-27T10:00:01Z")),
                        "completedAt" => N::Null,
                        "query" => N::Val(json!(b.query)),
                        "type" => N::Val(json!("QUERY")),
                        _ => N::Null,
                    }
                }
                (O::Fields(fields), name) => {
                    fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()).unwrap_or(N::Null)
                }
                _ => self.err(fl, format!("the fake cannot resolve {ty}.{}", fl.name)),
            }
        }

        /// Shapes a resolved value by its selection.
        pub fn complete(&mut self, n: &N, ty: T, fl: &Field) -> Value {
            match (n, ty) {
                (N::Null, _) => Value::Null,
                (N::Val(v), _) => v.clone(),
                (N::List(items), T::L(t) | T::O(t) | T::C(t)) => {
                    Value::Array(items.iter().map(|i| self.complete(i, T::O(t), fl)).collect())
                }
                (N::List(items), T::S) => Value::Array(items.iter().map(|i| self.complete(i, T::S, fl)).collect()),
                (N::Obj(o), T::O(t) | T::L(t) | T::C(t)) => {
                    let mut out = Map::new();
                    let static_ty = if t == "Node" { o.type_name().unwrap_or("Node") } else { t };
                    for sel in flatten(&fl.selections, o.type_name()) {
                        let Some(def) = field_def(static_ty, &sel.name).or_else(|| field_def(t, &sel.name)) else {
                            continue;
                        };
                        let child = self.resolve(o, static_ty, sel, false);
                        let v = self.complete(&child, def.ty, sel);
                        out.insert(sel.key().to_owned(), v);
                    }
                    Value::Object(out)
                }
                (N::Obj(_), T::S) => Value::Null,
            }
        }
    }

    /// The fields of a selection that apply to an object of runtime type `rt`.
    pub fn flatten<'a>(sels: &'a [Selection], rt: Option<&str>) -> Vec<&'a Field> {
        let mut out = vec![];
        for s in sels {
            match s {
                Selection::Field(f) => out.push(f),
                Selection::Inline { on, selections } => {
                    if on.is_none() || on.as_deref() == rt {
                        out.extend(flatten(selections, rt));
                    }
                }
            }
        }
        out
    }

    /// A connection field's node type and the selection on its nodes.
    pub fn node_selection(conn_ty: &str, fl: &Field) -> (&'static str, Vec<Selection>) {
        let node_ty = match field_def(conn_ty, "nodes").map(|d| d.ty) {
            Some(T::L(t)) => t,
            _ => "Node",
        };
        let mut sel = vec![];
        for f in flatten(&fl.selections, None) {
            match f.name.as_str() {
                "nodes" => sel.extend(f.selections.iter().cloned()),
                "edges" => {
                    for e in flatten(&f.selections, None) {
                        if e.name == "node" {
                            sel.extend(e.selections.iter().cloned());
                        }
                    }
                }
                _ => {}
            }
        }
        (node_ty, sel)
    }

    /// Shopify's bulk query rules: at most 5 connections, nested at most 2
    /// deep, and a parent of a nested connection selects its `id`.
    fn bulk_rules(root: &Field) -> Result<(), String> {
        fn walk(ty: &str, fl: &Field, depth: usize, count: &mut usize) -> Result<(), String> {
            let Some(def) = field_def(ty, &fl.name) else { return Ok(()) };
            let T::C(conn_ty) = def.ty else {
                if let T::O(t) | T::L(t) = def.ty {
                    for f in flatten(&fl.selections, None) {
                        walk(t, f, depth, count)?;
                    }
                }
                return Ok(());
            };
            *count += 1;
            if *count > 5 {
                return Err("Bulk queries cannot contain more than 5 connections.".into());
            }
            if depth >= 2 {
                return Err("Bulk queries cannot contain connections with a nesting depth greater than 2.".into());
            }
            let (node_ty, sel) = node_selection(conn_ty, fl);
            let fields = flatten(&sel, None);
            let has_nested = fields.iter().any(|f| matches!(field_def(node_ty, &f.name).map(|d| d.ty), Some(T::C(_))));
            if has_nested && !fields.iter().any(|f| f.name == "id") {
                return Err(format!("The parent '{}' field must select 'id' to nest connections.", fl.name));
            }
            for f in fields {
                walk(node_ty, f, depth + 1, count)?;
            }
            Ok(())
        }
        walk("QueryRoot", root, 0, &mut 0)
    }

    fn user_error(field: Option<Value>, message: &str, code: Option<&str>) -> N {
        let mut f = vec![("field", N::Val(field.unwrap_or(Value::Null))), ("message", N::Val(json!(message)))];
        if let Some(c) = code {
            f.push(("code", N::Val(json!(c))));
        }
        N::Obj(O::Fields(f))
    }

    fn payload_with(mutation: &str, errors: Vec<N>) -> N {
        let first = if mutation == "inventoryActivate" { "inventoryLevel" } else { "inventoryAdjustmentGroup" };
        N::Obj(O::Fields(vec![(first, N::Null), ("userErrors", N::List(errors))]))
    }

    /// A search over inventory items: `sku:"A" OR sku:B OR id:123`.
    pub struct Search(Vec<(bool, String)>);

    impl Search {
        pub fn matches(&self, id: u64, sku: Option<&str>) -> bool {
            self.0.iter().any(|(is_id, v)| if *is_id { v.parse() == Ok(id) } else { sku == Some(v.as_str()) })
        }
    }

    pub fn search(q: &str) -> Result<Search, String> {
        let mut terms = vec![];
        let b = q.as_bytes();
        let mut i = 0;
        loop {
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let rest = &q[i..];
            let (is_id, skip) = if rest.starts_with("sku:") {
                (false, 4)
            } else if rest.starts_with("id:") {
                (true, 3)
            } else {
                return Err(format!("the fake supports only sku:… and id:… searches joined by OR, not `{q}`"));
            };
            i += skip;
            let mut v = String::new();
            if b.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated quoted search value".into()),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let c = q[i + 1..].chars().next().ok_or("dangling backslash")?;
                            v.push(c);
                            i += 1 + c.len_utf8();
                        }
                        Some(_) => {
                            let c = q[i..].chars().next().expect("in bounds");
                            v.push(c);
                            i += c.len_utf8();
                        }
                    }
                }
            } else {
                let end = q[i..].find(' ').map_or(q.len(), |e| i + e);
                v.push_str(&q[i..end]);
                i = end;
            }
            terms.push((is_id, v));
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            if q[i..].starts_with("OR ") {
                i += 3;
            } else {
                return Err(format!("the fake supports only terms joined by OR, not `{q}`"));
            }
        }
        Ok(Search(terms))
    }

    /// JSON with object keys sorted, for comparing arguments.
    pub fn canonical(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let parts: Vec<String> = keys.iter().map(|k| format!("{}:{}", json!(k), canonical(&m[*k]))).collect();
                format!("{{{}}}", parts.join(","))
            }
            Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
            other => other.to_string(),
        }
    }
}

mod cost {
    //! Requested cost from the selection, actual cost from the result.

    use super::exec::{flatten, node_selection};
    use super::*;

    pub fn requested(op: &Operation, vars: &Map<String, Value>) -> f64 {
        if op.kind == OpKind::Mutation {
            return 10.0 * flatten(&op.selections, None).len() as f64;
        }
        selections("QueryRoot", &op.selections, vars)
    }

    fn selections(ty: &str, sels: &[Selection], vars: &Map<String, Value>) -> f64 {
        flatten(sels, None).iter().map(|f| field(ty, f, vars)).sum()
    }

    fn field(ty: &str, fl: &Field, vars: &Map<String, Value>) -> f64 {
        let Some(def) = field_def(ty, &fl.name).or_else(|| NODE_TYPES.iter().find_map(|t| field_def(t, &fl.name)))
        else {
            return 0.0;
        };
        match def.ty {
            T::S => 0.0,
            T::O(t) | T::L(t) => 1.0 + selections(t, &fl.selections, vars),
            T::C(t) => {
                let first = fl
                    .args
                    .iter()
                    .find(|(k, _)| k == "first")
                    .and_then(|(_, v)| to_json(v, vars).as_f64())
                    .unwrap_or(0.0);
                let (node_ty, sel) = node_selection(t, fl);
                2.0 + first * (1.0 + selections(node_ty, &sel, vars))
            }
        }
    }

    pub fn actual(op: &Operation, data: &Value) -> f64 {
        if op.kind == OpKind::Mutation {
            return 10.0 * flatten(&op.selections, None).len() as f64;
        }
        value_cost("QueryRoot", &op.selections, data)
    }

    fn value_cost(ty: &str, sels: &[Selection], v: &Value) -> f64 {
        let mut total = 0.0;
        for fl in flatten(sels, None) {
            let Some(def) = field_def(ty, &fl.name).or_else(|| NODE_TYPES.iter().find_map(|t| field_def(t, &fl.name)))
            else {
                continue;
            };
            let x = v.get(fl.key()).unwrap_or(&Value::Null);
            total += match def.ty {
                T::S => 0.0,
                T::O(t) => 1.0 + if x.is_object() { value_cost(t, &fl.selections, x) } else { 0.0 },
                T::L(t) => 1.0 + x.as_array().and_then(|a| a.first()).map_or(0.0, |e| value_cost(t, &fl.selections, e)),
                T::C(t) => {
                    let (node_ty, sel) = node_selection(t, fl);
                    let nodes: Vec<&Value> =
                        match (x.get("nodes").and_then(Value::as_array), x.get("edges").and_then(Value::as_array)) {
                            (Some(n), _) => n.iter().collect(),
                            (None, Some(e)) => e.iter().filter_map(|e| e.get("node")).collect(),
                            _ => vec![],
                        };
                    2.0 + nodes.iter().map(|n| 1.0 + value_cost(node_ty, &sel, n)).sum::<f64>()
                }
            };
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::exec::search;
    use super::*;

    fn run(st: &mut State, q: &str, vars: Value) -> Value {
        let body = json!({"query": q, "variables": vars}).to_string();
        let token = st.cfg.token.clone();
        let (status, body, _) = st.handle("2026-10", Some(&token), body.as_bytes());
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn shop() -> State {
        let mut st = State::new(Config::default(), "http://x".into());
        st.set("A", "WH", 5);
        st.set("B", "WH", 7);
        st
    }

    #[test]
    fn unknown_fields_arguments_and_variables_are_graphql_errors() {
        let mut st = shop();
        for (q, vars, want) in [
            (
                "{ locations(first: 5) { nodes { id bogus } } }",
                json!({}),
                "Field 'bogus' doesn't exist on type 'Location'",
            ),
            ("{ locations(first: 5, colour: 1) { nodes { id } } }", json!({}), "doesn't accept argument 'colour'"),
            ("query Q($x: String) { locations(first: 5) { nodes { id } } }", json!({}), "declared by Q but not used"),
            (
                "query { locations(first: 5, after: $c) { nodes { id } } }",
                json!({}),
                "used by anonymous operation but not declared",
            ),
            (
                "query Q($f: String) { locations(first: $f) { nodes { id } } }",
                json!({}),
                "Type mismatch on variable $f",
            ),
            ("{ locations(first: 5) { nodes { id { x } } } }", json!({}), "Selections can't be made on scalars"),
            ("{ locations(first: 5) { nodes } }", json!({}), "Field must have selections"),
            ("{ locations(first: 5) { nodes { id } } ", json!({}), "Parse error"),
            ("fragment F on Location { id } { locations(first: 5) { nodes { ...F } } }", json!({}), "Parse error"),
        ] {
            let v = run(&mut st, q, vars);
            let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(msg.contains(want), "{q}: {v}");
            assert!(v.get("data").is_none(), "{q}");
        }
    }

    #[test]
    fn input_objects_are_checked_field_by_field() {
        let mut st = shop();
        let q = "mutation S($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) @idempotent(key: \"k\") { userErrors { field message code } } }";
        let v = run(
            &mut st,
            q,
            json!({"input": {"name": "available", "reason": "correction", "quantities": [
                {"inventoryItemId": "gid://shopify/InventoryItem/1", "locationId": "gid://shopify/Location/1", "quantity": 1, "compareQuantity": 3}]}}),
        );
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("quantities.0.compareQuantity (Field is not defined on InventoryQuantityInput)"), "{msg}");
    }

    #[test]
    fn connections_page_and_cost_follows_the_model() {
        let mut st = shop();
        for i in 0..7 {
            st.set(&format!("S{i}"), "WH", i);
        }
        let loc = gid("Location", st.location_id("WH").unwrap());
        let q = "query L($id: ID!, $after: String) { location(id: $id) { inventoryLevels(first: 4, after: $after) { nodes { item { sku } quantities(names: [\"available\"]) { name quantity } } pageInfo { hasNextPage endCursor } } } }";
        let mut after = Value::Null;
        let mut skus = vec![];
        let mut pages = 0;
        loop {
            let v = run(&mut st, q, json!({"id": loc, "after": after}));
            pages += 1;
            let conn = &v["data"]["location"]["inventoryLevels"];
            for n in conn["nodes"].as_array().unwrap() {
                skus.push(n["item"]["sku"].as_str().unwrap().to_owned());
            }
            // 1 (location) + 2 + 4 × (1 + 1 item + 1 quantities)
            assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], json!(15.0));
            if conn["pageInfo"]["hasNextPage"] != json!(true) {
                break;
            }
            after = conn["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(pages, 3);
        assert_eq!(skus.len(), 9);
    }

    #[test]
    fn the_bucket_throttles_and_refills() {
        let mut st = shop();
        st.cfg.bucket = 25.0;
        st.cfg.restore_rate = 1.0;
        st.available = 25.0;
        let q = "{ locations(first: 10) { nodes { id } } }"; // 2 + 10 = 12 requested, 3 actual
        let v = run(&mut st, q, json!({}));
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], json!(3.0));
        run(&mut st, q, json!({}));
        run(&mut st, q, json!({}));
        run(&mut st, q, json!({}));
        let mut throttled = false;
        for _ in 0..10 {
            let v = run(&mut st, q, json!({}));
            if v["errors"][0]["extensions"]["code"] == json!("THROTTLED") {
                assert_eq!(v["extensions"]["cost"]["actualQueryCost"], Value::Null);
                throttled = true;
                break;
            }
        }
        assert!(throttled);
        assert!(st.counters.throttled >= 1);
    }

    #[test]
    fn searches_parse() {
        let s = search(r#"sku:"A \"1\"" OR sku:B OR id:42"#).unwrap();
        assert!(s.matches(1, Some("A \"1\"")) && s.matches(2, Some("B")) && s.matches(42, None));
        assert!(!s.matches(3, Some("C")));
        assert!(search("title:x").is_err());
        assert!(search("sku:A AND sku:B").is_err());
    }
}
