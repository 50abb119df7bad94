//! The plan file's types, exactly as they appear in YAML.
//!
//! These types are the single description of the plan format: serde reads them,
//! schemars turns their doc comments into `schemas/plan.schema.json`, and
//! `docs/plan-file.md` explains them. Nothing here resolves paths or reads files;
//! `config::check` does that once the shape is known to be right.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stockshift plan: where stock comes from, where it goes, and how SKUs, units,
/// locations, bundles and safety stock map between the two.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stockshift plan")]
pub struct PlanConfig {
    /// Plan format version. Always `1`.
    pub version: PlanVersion,
    /// A short name for this migration, shown in plans, state and audit records.
    #[schemars(length(min = 1), example = "erp-to-shopify")]
    pub name: String,
    /// The single source of truth: the system whose stock is copied.
    pub source: ProviderConfig,
    /// The system that receives the stock writes.
    pub target: ProviderConfig,
    /// How source rows become target rows (SPEC section 2, steps 1 to 5).
    #[serde(default)]
    pub mapping: MappingConfig,
    /// The cutover freeze window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezeConfig>,
    /// Limits that `reconcile` and `cutover` check after the writes.
    #[serde(default)]
    pub thresholds: ThresholdsConfig,
    /// Blast radius: `apply` refuses larger changes unless `--allow-large`.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where applies, journals and audit records are kept.
    #[serde(default)]
    pub state: StoreConfig,
    /// The webhook receiver and its durable queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsConfig>,
    /// The admin page served by `stockshift serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
}

/// The plan format version; only `1` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "u64", into = "u64")]
#[schemars(transform = version_schema)]
pub struct PlanVersion;

fn version_schema(schema: &mut schemars::Schema) {
    *schema = schemars::json_schema!({ "type": "integer", "const": 1 });
}

impl TryFrom<u64> for PlanVersion {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v == 1 {
            Ok(PlanVersion)
        } else {
            Err(format!("unsupported plan version {v}; this stockshift reads version 1"))
        }
    }
}

impl From<PlanVersion> for u64 {
    fn from(_: PlanVersion) -> u64 {
        1
    }
}

/// A system that holds stock. `provider` picks the kind; the other keys depend on it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// A CSV file with a header row and columns `sku,location,qty[,version]`. Read-only.
    Csv(CsvProviderConfig),
    /// A SQLite database file with one inventory table. Readable and writable.
    Sqlite(SqliteProviderConfig),
    /// A PostgreSQL table or query. Readable and writable (`UPDATE ... WHERE qty = expected`).
    Postgres(PostgresProviderConfig),
    /// A Shopify store through the Admin GraphQL API. Readable and writable (native compare-and-set).
    Shopify(ShopifyProviderConfig),
    /// A Magento 2 / Adobe Commerce store through the MSI REST API. Readable and writable
    /// (compare emulated by read-compare-write).
    Magento(MagentoProviderConfig),
    /// Any HTTP API described by a manifest under `providers/`.
    Http(HttpProviderConfig),
}

impl ProviderConfig {
    /// The provider's name as written in the plan (`csv`, `sqlite`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Csv(_) => "csv",
            ProviderConfig::Sqlite(_) => "sqlite",
            ProviderConfig::Postgres(_) => "postgres",
            ProviderConfig::Shopify(_) => "shopify",
            ProviderConfig::Magento(_) => "magento",
            ProviderConfig::Http(_) => "http",
        }
    }

    /// Environment variables the provider needs, with their plan key (`token_env`, `url_env`).
    pub fn env_vars(&self) -> Vec<(&'static str, &str)> {
        match self {
            ProviderConfig::Csv(_) | ProviderConfig::Sqlite(_) => vec![],
            ProviderConfig::Postgres(c) => vec![("url_env", &c.url_env)],
            ProviderConfig::Shopify(c) => vec![("token_env", &c.token_env)],
            ProviderConfig::Magento(c) => vec![("token_env", &c.token_env)],
            ProviderConfig::Http(c) => c.token_env.iter().map(|t| ("token_env", t.as_str())).collect(),
        }
    }
}

/// Shopify Admin API versions this stockshift speaks (all use `changeFromQuantity`
/// for compare-and-set and accept `@idempotent`).
pub const SHOPIFY_API_VERSIONS: &[&str] = &["2026-01", "2026-04", "2026-07", "2026-10"];

/// Settings of the `postgres` provider.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresProviderConfig {
    /// Environment variable holding the connection URL (`postgres://user@host:5432/db`).
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), example = &"INVENTORY_DB_URL")]
    pub url_env: String,
    /// Table holding one row per (sku, location); writes go here.
    #[serde(default = "default_table")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"))]
    pub table: String,
    /// Column names, when they differ from `sku`, `location`, `qty`, `version`.
    #[serde(default)]
    pub columns: ColumnsConfig,
    /// A SELECT to read with instead of the whole table: a template whose
    /// `{{ bind(params.x) }}` calls become bound parameters, never spliced text.
    /// It must return the columns `sku`, `location`, `qty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Values the `query` template may bind.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, serde_json::Value>,
    /// Conditional writes per transaction when this is the target.
    #[serde(default = "default_sqlite_batch")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: usize,
}

/// Settings of the `shopify` provider.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShopifyProviderConfig {
    /// The shop's domain, `my-shop.myshopify.com` (or just `my-shop`).
    #[schemars(length(min = 1), example = "my-shop.myshopify.com")]
    pub shop: String,
    /// Admin API version, pinned so a platform release cannot change behaviour mid-migration.
    #[serde(default = "default_shopify_version")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}$"))]
    pub api_version: String,
    /// Environment variable holding the Admin API access token.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), example = &"SHOPIFY_ADMIN_TOKEN")]
    pub token_env: String,
    /// Send the GraphQL requests to this URL instead of the shop's (a proxy or a test server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub endpoint: Option<String>,
    /// Which inventory quantity is read and set: `available` or `on_hand`.
    #[serde(default)]
    pub quantity: ShopifyQuantity,
    /// How to read every level: `paged` GraphQL pages, a `bulk` operation, or `auto`
    /// (bulk above `bulk_threshold` variants).
    #[serde(default)]
    pub read: ShopifyRead,
    /// Catalogue size from which `read: auto` uses a bulk operation.
    #[serde(default = "default_bulk_threshold")]
    pub bulk_threshold: u64,
    /// Quantities per `inventorySetQuantities` call (the API takes at most 250).
    #[serde(default = "default_shopify_batch")]
    #[schemars(range(min = 1, max = 250))]
    pub batch_size: usize,
}

fn default_shopify_version() -> String {
    "2026-10".to_owned()
}

fn default_bulk_threshold() -> u64 {
    10_000
}

fn default_shopify_batch() -> usize {
    250
}

/// The Shopify inventory quantity a plan reads and sets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShopifyQuantity {
    #[default]
    Available,
    OnHand,
}

/// How the Shopify provider reads a snapshot.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShopifyRead {
    #[default]
    Auto,
    Paged,
    Bulk,
}

/// Settings of the `magento` provider.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MagentoProviderConfig {
    /// The REST root, e.g. `https://shop.example.com/rest` (requests go to `{base_url}/V1/...`).
    #[schemars(length(min = 1), example = "https://shop.example.com/rest")]
    pub base_url: String,
    /// Environment variable holding the integration access token.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), example = &"MAGENTO_TOKEN")]
    pub token_env: String,
    /// MSI source code -> location name used in the plan. Sources not listed are not read or written.
    #[schemars(length(min = 1))]
    pub source_codes: std::collections::BTreeMap<String, String>,
    /// Source items per `POST /V1/inventory/source-items` (20 when the store limits input).
    #[serde(default = "default_magento_batch")]
    #[schemars(range(min = 1, max = 5000))]
    pub batch_size: usize,
    /// Items per page when reading (Magento caps pages at 300 when input limits are on).
    #[serde(default = "default_magento_page")]
    #[schemars(range(min = 1, max = 10000))]
    pub page_size: usize,
    /// MSI stock whose salable quantity is reported next to source quantity (`reconcile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_id: Option<u32>,
}

fn default_magento_batch() -> usize {
    20
}

fn default_magento_page() -> usize {
    300
}

/// Settings of the `http` provider: a manifest plus the values it leaves open.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// The manifest: a file under `providers/` (relative to the plan file's folder, or a
    /// shipped name such as `bigcommerce`).
    #[schemars(length(min = 1), example = "providers/bigcommerce.yaml")]
    pub manifest: String,
    /// Base URL the manifest's paths are joined to.
    #[schemars(length(min = 1), example = "https://api.bigcommerce.com/stores/abc123")]
    pub base_url: String,
    /// Environment variable holding the credential the manifest's auth header carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub token_env: Option<String>,
    /// Values the manifest's templates may use as `vars.NAME` (they override the manifest's `vars`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vars: std::collections::BTreeMap<String, String>,
    /// Platform location id -> location name used in the plan. When given, only these
    /// locations are read and written; when absent, the platform's ids are the names.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub locations: std::collections::BTreeMap<String, String>,
    /// Writes per batch, instead of the manifest's `limits.batch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: Option<usize>,
    /// Requests per second, instead of the manifest's `limits.requests_per_sec`
    /// (lower it when other apps share the platform's rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub requests_per_sec: Option<f64>,
}

/// Settings of the `csv` provider.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvProviderConfig {
    /// Path of the CSV file, relative to the plan file's folder.
    #[schemars(length(min = 1), example = "data/erp_snapshot.csv")]
    pub path: String,
    /// Header names of the columns, when they differ from `sku`, `location`, `qty`.
    #[serde(default)]
    pub columns: ColumnsConfig,
}

/// Settings of the `sqlite` provider.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqliteProviderConfig {
    /// Path of the SQLite database file, relative to the plan file's folder.
    #[schemars(length(min = 1), example = "data/target.db")]
    pub path: String,
    /// Table holding one row per (sku, location).
    #[serde(default = "default_table")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub table: String,
    /// Column names, when they differ from `sku`, `location`, `qty`, `version`.
    #[serde(default)]
    pub columns: ColumnsConfig,
    /// Conditional writes per transaction when this is the target.
    #[serde(default = "default_sqlite_batch")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: usize,
}

fn default_sqlite_batch() -> usize {
    2000
}

fn default_table() -> String {
    "inventory".to_owned()
}

/// Column names of an inventory table or file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ColumnsConfig {
    /// Column holding the SKU.
    #[serde(default = "col_sku")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub sku: String,
    /// Column holding the location.
    #[serde(default = "col_location")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub location: String,
    /// Column holding the quantity (an integer).
    #[serde(default = "col_qty")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub qty: String,
    /// Column holding a row version, where the system keeps one.
    #[serde(default = "col_version")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub version: String,
}

fn col_sku() -> String {
    "sku".into()
}
fn col_location() -> String {
    "location".into()
}
fn col_qty() -> String {
    "qty".into()
}
fn col_version() -> String {
    "version".into()
}

impl Default for ColumnsConfig {
    fn default() -> Self {
        ColumnsConfig { sku: col_sku(), location: col_location(), qty: col_qty(), version: col_version() }
    }
}

/// The mapping from source rows to target rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// SKU renames and unit factors: inline `OLD: NEW` / `OLD: { sku: NEW, factor: 12 }`,
    /// or `{ file: path.csv }` with header `old_sku,new_sku[,factor]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skus: Option<SkuMapConfig>,
    /// What happens to a source SKU with no entry in `skus`.
    #[serde(default)]
    pub unmapped_skus: UnmappedPolicy,
    /// Source location to target location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<BTreeMap<String, String>>,
    /// What happens to a source location with no entry in `locations`.
    /// Defaults to `error` when `locations` is given, else `passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmapped_locations: Option<UnmappedPolicy>,
    /// Bundles (kits) whose stock is derived from their components. Names are target SKUs.
    #[serde(default)]
    pub bundles: BTreeMap<String, BundleConfig>,
    /// Units held back from the target per SKU (target SKUs).
    #[serde(default)]
    pub safety_stock: SafetyStockConfig,
    /// What happens to target keys that the mapped source does not have.
    #[serde(default)]
    pub orphans: OrphanPolicy,
}

/// Either inline SKU entries or a CSV file of them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SkuMapConfig {
    /// A CSV file with header `old_sku,new_sku[,factor]`.
    File(SkuMapFile),
    /// Inline entries: old SKU to new SKU (or `{ sku, factor }`).
    Inline(BTreeMap<String, SkuTarget>),
}

/// A reference to a SKU mapping CSV file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuMapFile {
    /// Path of the CSV file, relative to the plan file's folder.
    #[schemars(length(min = 1))]
    pub file: String,
}

/// Where an old SKU goes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SkuTarget {
    /// The new SKU name (factor 1).
    Name(#[schemars(length(min = 1))] String),
    /// The new SKU and how many target units one source unit is.
    WithFactor(SkuWithFactor),
}

/// A renamed SKU with a unit factor, e.g. a case of 12 becoming 12 units.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuWithFactor {
    /// The new SKU name.
    #[schemars(length(min = 1))]
    pub sku: String,
    /// Target units per source unit (a positive integer).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub factor: u64,
}

fn one() -> u64 {
    1
}

/// What to do with a source value that has no mapping entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedPolicy {
    /// Keep the value as it is.
    #[default]
    Passthrough,
    /// Drop the row.
    Skip,
    /// Refuse the plan, naming every such row.
    Error,
}

/// A bundle and its components.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Component SKU to units per bundle (positive integers).
    #[schemars(length(min = 1))]
    pub components: BTreeMap<String, ComponentUnits>,
}

/// Units of a component in one bundle.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ComponentUnits(#[schemars(range(min = 1))] pub u64);

/// Units held back from the target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyStockConfig {
    /// Units held back for every SKU without its own entry.
    #[serde(default)]
    pub default: u64,
    /// Units held back per target SKU.
    #[serde(default)]
    pub per_sku: BTreeMap<String, u64>,
}

/// What to do with target keys absent from the mapped source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrphanPolicy {
    /// Leave them as they are.
    #[default]
    Ignore,
    /// Write 0 to each of them.
    Zero,
    /// Refuse the plan, naming every orphan.
    Error,
}

/// The cutover freeze window.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// Start of the window, an RFC 3339 timestamp (`2026-12-01T02:00:00Z`).
    #[schemars(example = "2026-12-01T02:00:00Z")]
    pub start: String,
    /// Length of the window (`15m`, `1h`, `90s`).
    #[schemars(example = "15m")]
    pub duration: String,
    /// `queue`: events are queued, not applied; `read_only`: the target is not written at all.
    #[serde(default)]
    pub mode: FreezeMode,
}

/// How the freeze treats events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FreezeMode {
    /// Events are queued durably and replayed afterwards.
    #[default]
    Queue,
    /// No writes reach the target while frozen.
    ReadOnly,
}

/// Limits checked after the writes (`reconcile`, `cutover`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsConfig {
    /// Drifted keys / all keys above which the cutover fails.
    #[serde(default = "d_drift_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_drift_ratio: f64,
    /// Units a key may differ and still not count as drift.
    #[serde(default)]
    pub max_abs_drift: u64,
    /// (rejected deliveries + events that failed to apply) / deliveries.
    #[serde(default = "d_webhook")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_webhook_failure_rate: f64,
    /// Orders failing fulfilment / orders.
    #[serde(default = "d_fulfillment")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_fulfillment_failure_rate: f64,
    /// Queued events not yet replayed.
    #[serde(default = "d_backlog")]
    pub max_replay_backlog: u64,
}

fn d_drift_ratio() -> f64 {
    0.0005
}
fn d_webhook() -> f64 {
    0.05
}
fn d_fulfillment() -> f64 {
    0.02
}
fn d_backlog() -> u64 {
    1000
}

impl Default for ThresholdsConfig {
    fn default() -> Self {
        ThresholdsConfig {
            max_drift_ratio: d_drift_ratio(),
            max_abs_drift: 0,
            max_webhook_failure_rate: d_webhook(),
            max_fulfillment_failure_rate: d_fulfillment(),
            max_replay_backlog: d_backlog(),
        }
    }
}

/// The blast radius `apply` accepts without `--allow-large`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Writes one apply may make.
    #[serde(default = "d_max_writes")]
    pub max_writes: u64,
    /// Writes that take a key with stock to 0.
    #[serde(default = "d_max_zeroed")]
    pub max_zeroed: u64,
}

fn d_max_writes() -> u64 {
    50_000
}
fn d_max_zeroed() -> u64 {
    100
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_writes: d_max_writes(), max_zeroed: d_max_zeroed() }
    }
}

/// A storage backend for state or the event queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (a file under `--state DIR`) or `postgres`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// With `postgres`: the environment variable holding the connection URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub url_env: Option<String>,
}

/// Storage engines for state and queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// An embedded SQLite file; needs no server.
    #[default]
    Sqlite,
    /// A shared PostgreSQL database.
    Postgres,
}

/// The webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The durable queue events land in.
    #[serde(default)]
    pub queue: StoreConfig,
    /// Address `serve` listens on.
    #[serde(default = "d_listen")]
    #[schemars(example = "127.0.0.1:8088")]
    pub listen: String,
    /// Systems that send stock events.
    #[serde(default)]
    pub sources: Vec<EventSourceConfig>,
}

fn d_listen() -> String {
    "127.0.0.1:8088".into()
}

/// One system that sends stock events: by webhook, or through a Kafka topic.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [
    {
        "if": {"properties": {"kind": {"enum": ["shopify", "standard"]}}, "required": ["kind"]},
        "then": {"required": ["secret_env"]}
    },
    {
        "if": {"properties": {"kind": {"const": "kafka"}}, "required": ["kind"]},
        "then": {"required": ["brokers", "topic"]}
    }
]))]
pub struct EventSourceConfig {
    /// Name of the source: webhooks go to `POST /webhooks/{name}`; events carry it as `source`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    /// `shopify`, `standard` (Standard Webhooks) or `kafka` (a topic of normalized events).
    pub kind: EventSourceKind,
    /// Environment variable holding the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub secret_env: Option<String>,
    /// `source` (default): events name source SKUs and locations; `target`: already mapped.
    #[serde(default)]
    pub side: EventSide,
    /// For `shopify`: CSV mapping `inventory_item_id,location_id` to `sku,location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_map: Option<String>,
    /// For `kafka`: bootstrap brokers, `host:port` each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(example = ["127.0.0.1:9092"])]
    pub brokers: Vec<String>,
    /// For `kafka`: the topic of normalized events (JSON, one event or an array per record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: Option<String>,
    /// For `kafka`: the consumer group; its offsets are kept in the event queue. Default: the source's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub group: Option<String>,
}

impl EventSourceConfig {
    /// The Kafka consumer group: `group`, or the source's name.
    pub fn kafka_group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }
}

/// How a source delivers events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventSourceKind {
    /// Shopify webhooks (`X-Shopify-Hmac-Sha256`).
    Shopify,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
    /// A Kafka topic of normalized events, consumed by `serve`.
    Kafka,
}

impl EventSourceKind {
    /// The kind as written in a plan.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSourceKind::Shopify => "shopify",
            EventSourceKind::Standard => "standard",
            EventSourceKind::Kafka => "kafka",
        }
    }

    /// Whether events arrive by webhook (`POST /webhooks/{name}`).
    pub fn is_webhook(self) -> bool {
        !matches!(self, EventSourceKind::Kafka)
    }
}

/// Which side's SKUs and locations a source's events name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventSide {
    /// Source SKUs and locations, mapped like snapshot rows.
    #[default]
    Source,
    /// Target SKUs and locations, used as they are.
    Target,
}

/// The admin page.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Environment variable holding the bearer token; without it the page is off.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub token_env: String,
}
