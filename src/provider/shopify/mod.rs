//! The `shopify` provider: a store's inventory through the Admin GraphQL API.
//!
//! Rows are (SKU, location name, quantity) where the quantity is the plan's
//! `quantity` (`available` by default, or `on_hand`) of the inventory level of
//! the SKU's inventory item at that location.
//!
//! * Reading ([`read`]): location by location in pages of 250, or with one bulk
//!   operation for a large catalogue (`read: bulk`, or `auto` from
//!   `bulk_threshold` variants).
//! * Writing ([`write`]): `inventorySetQuantities` batches of up to 250 with
//!   `changeFromQuantity` (native compare-and-set) and a derived `@idempotent`
//!   key ([`idempotency`]); creates activate the item at the location first.
//! * Names to ids ([`catalog`]): location names and SKUs resolved once and cached.
//! * Every request ([`client`]) is paced to the shop's cost bucket
//!   ([`throttle`]) and retried when Shopify says it is transient.
//!
//! The access token only ever comes from the environment variable the plan
//! names, is sent only in `X-Shopify-Access-Token` to the GraphQL endpoint, and
//! is scrubbed from every error message.

mod bulk;
mod catalog;
mod client;
mod graphql;
pub mod idempotency;
mod read;
pub mod throttle;
mod write;

pub use client::{RetryPolicy, Stats};

use super::{Capabilities, CompareMode, Provider, ProviderError, ReadInfo, RowSink, Write, WriteOutcome, net};
use crate::config::model::{ShopifyProviderConfig, ShopifyQuantity, ShopifyRead};

/// Keys read with point reads at most; above this `read_keys` reads the whole
/// snapshot (paged or bulk), which costs far fewer points per key.
const POINT_READ_MAX: usize = 2000;
/// Unknown SKUs in one call from which they are resolved with a bulk query.
const BULK_INDEX_BATCH: usize = 50;
/// SKUs searched for one by one before the rest are resolved with a bulk query.
const BULK_INDEX_SEARCHED: usize = 500;

pub struct ShopifyProvider {
    host: String,
    version: String,
    custom_endpoint: bool,
    /// `available` or `on_hand`.
    name: &'static str,
    read_mode: ShopifyRead,
    bulk_threshold: u64,
    batch_size: usize,
    client: client::Client,
    catalog: catalog::Catalog,
    keys: idempotency::Keys,
    /// Whether the catalogue is large enough for bulk reads, once known.
    large: Option<bool>,
}

/// `my-shop` or `https://my-shop.myshopify.com/` → `my-shop.myshopify.com`.
pub fn shop_host(shop: &str) -> Result<String, ProviderError> {
    let s = shop.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let s = s.trim_end_matches('/');
    let host =
        if s.contains('.') { s.to_ascii_lowercase() } else { format!("{}.myshopify.com", s.to_ascii_lowercase()) };
    let valid = !s.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !host.starts_with(['.', '-']);
    if valid {
        Ok(host)
    } else {
        Err(ProviderError::Invalid {
            what: "shopify".into(),
            message: format!("`{shop}` is not a shop domain; write `my-shop.myshopify.com` or `my-shop`"),
        })
    }
}

impl ShopifyProvider {
    /// Opens the provider a plan describes; the token comes from `token_env`.
    pub fn from_config(cfg: &ShopifyProviderConfig) -> Result<Self, ProviderError> {
        let token = net::secret_from_env(&cfg.token_env, "shopify")?;
        Self::new(cfg, token)
    }

    /// Opens the provider with the token given (tests and library callers that
    /// do not go through the environment).
    pub fn new(cfg: &ShopifyProviderConfig, token: String) -> Result<Self, ProviderError> {
        let host = shop_host(&cfg.shop)?;
        let url = match &cfg.endpoint {
            Some(e) => e.clone(),
            None => format!("https://{host}/admin/api/{}/graphql.json", cfg.api_version),
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ProviderError::Invalid {
                what: "shopify".into(),
                message: format!("`endpoint` must be an http(s) URL, not `{url}`"),
            });
        }
        Ok(ShopifyProvider {
            host,
            version: cfg.api_version.clone(),
            custom_endpoint: cfg.endpoint.is_some(),
            name: match cfg.quantity {
                ShopifyQuantity::Available => "available",
                ShopifyQuantity::OnHand => "on_hand",
            },
            read_mode: cfg.read,
            bulk_threshold: cfg.bulk_threshold,
            batch_size: cfg.batch_size.clamp(1, 250),
            client: client::Client::new(url, token, cfg.token_env.clone())?,
            catalog: catalog::Catalog::default(),
            keys: idempotency::Keys::default(),
            large: None,
        })
    }

    /// Changes how transient failures are retried (tests use short backoffs).
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.client.retry = retry;
    }

    /// What the client did so far: requests, THROTTLED answers, retries.
    pub fn stats(&self) -> Stats {
        self.client.stats
    }

    /// The last throttle status Shopify reported.
    pub fn throttle_status(&self) -> Option<throttle::ThrottleStatus> {
        self.client.throttle_status()
    }

    /// Whether to read with a bulk operation: `read: bulk`, or `auto` with at
    /// least `bulk_threshold` variants (`productVariantsCount`).
    fn large(&mut self) -> Result<bool, ProviderError> {
        if let Some(l) = self.large {
            return Ok(l);
        }
        let large = match self.read_mode {
            ShopifyRead::Paged => false,
            ShopifyRead::Bulk => true,
            ShopifyRead::Auto => {
                let data = self.client.execute(&client::Request {
                    name: "StockshiftVariantCount",
                    query: graphql::VARIANT_COUNT,
                    variables: serde_json::json!({ "limit": self.bulk_threshold }),
                    est_cost: graphql::VARIANT_COUNT_COST,
                })?;
                let count = graphql::at(&data, &["productVariantsCount", "count"]).and_then(serde_json::Value::as_u64);
                count.unwrap_or(0) >= self.bulk_threshold
            }
        };
        self.large = Some(large);
        Ok(large)
    }

    /// Makes sure the locations and the SKUs of `skus` are resolved. Unknown
    /// SKUs are searched for (about 1 point each) while few are needed; a
    /// large catalogue, a batch of many unknown SKUs or many searches so far
    /// switch to one bulk query for the whole catalogue (a few points), except
    /// with `read: paged`, which never runs bulk operations.
    fn resolve<'a>(&mut self, skus: impl Iterator<Item = &'a str> + Clone) -> Result<(), ProviderError> {
        self.catalog.load_locations(&mut self.client)?;
        let unknown = self.catalog.unknown_count(skus.clone());
        if unknown == 0 {
            return Ok(());
        }
        let bulk = match self.read_mode {
            ShopifyRead::Paged => false,
            ShopifyRead::Bulk => true,
            ShopifyRead::Auto => {
                unknown >= BULK_INDEX_BATCH || self.catalog.searched + unknown > BULK_INDEX_SEARCHED || self.large()?
            }
        };
        if bulk {
            self.catalog.index_all(&mut self.client)
        } else {
            let list: Vec<&str> = skus.collect();
            self.catalog.lookup(&mut self.client, &list)
        }
    }
}

impl Provider for ShopifyProvider {
    fn describe(&self) -> String {
        let via = if self.custom_endpoint { ", custom endpoint" } else { "" };
        format!("shopify {} (Admin API {}, {}{via})", self.host, self.version, self.name)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { compare: CompareMode::Native, max_batch: self.batch_size, max_requests_per_sec: None }
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        if self.large()? {
            read::bulk(&mut self.client, &mut self.catalog, self.name, sink)
        } else {
            read::paged(&mut self.client, &mut self.catalog, self.name, sink)
        }
    }

    fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        if writes.is_empty() {
            return Ok(vec![]);
        }
        self.resolve(writes.iter().map(|w| w.sku.as_str()))?;
        let mut ctx =
            write::Ctx { client: &mut self.client, catalog: &self.catalog, keys: &mut self.keys, name: self.name };
        write::write_batch(&mut ctx, writes)
    }

    fn bind_operation(&mut self, op_id: &str) {
        self.keys.bind(op_id);
    }

    fn read_keys(&mut self, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
        if keys.is_empty() {
            // A reachability check (cutover's preflight): list the locations.
            self.catalog.load_locations(&mut self.client)?;
            return Ok(vec![]);
        }
        if keys.len() > POINT_READ_MAX {
            return read_all_keys(self, keys);
        }
        self.resolve(keys.iter().map(|(s, _)| s.as_str()))?;
        let ids: Vec<Option<(&str, &str)>> =
            keys.iter().map(|(s, l)| Some((self.catalog.item(s).ok()?, self.catalog.location(l).ok()?))).collect();
        let pairs: Vec<(&str, &str)> = ids.iter().flatten().copied().collect();
        let mut found = read::levels_at(&mut self.client, self.name, &pairs)?.into_iter();
        Ok(ids.iter().map(|id| id.and_then(|_| found.next().flatten())).collect())
    }
}

/// A whole read, keeping the wanted keys.
fn read_all_keys(p: &mut ShopifyProvider, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
    super::read_keys_by_scan(keys, |sink| p.read(sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shop_names_become_hosts() {
        assert_eq!(shop_host("my-shop").unwrap(), "my-shop.myshopify.com");
        assert_eq!(shop_host("My-Shop.myshopify.com").unwrap(), "my-shop.myshopify.com");
        assert_eq!(shop_host("https://my-shop.myshopify.com/").unwrap(), "my-shop.myshopify.com");
        for bad in ["", "  ", "shop/../x", "a b", ".x", "x@y.com"] {
            assert!(shop_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_endpoint_is_the_pinned_admin_api_version() {
        let cfg: ShopifyProviderConfig = serde_json::from_value(serde_json::json!({
            "shop": "my-shop", "token_env": "T", "api_version": "2026-07"
        }))
        .unwrap();
        let p = ShopifyProvider::new(&cfg, "tok".into()).unwrap();
        assert_eq!(p.describe(), "shopify my-shop.myshopify.com (Admin API 2026-07, available)");
        assert_eq!(p.capabilities().max_batch, 250);
        assert_eq!(p.capabilities().compare, CompareMode::Native);
    }
}
