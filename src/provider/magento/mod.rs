//! The `magento` provider: Magento 2 / Adobe Commerce Multi-Source Inventory
//! through the REST API.
//!
//! Reads `GET /V1/inventory/source-items` for the plan's `source_codes`, page by
//! page ([`search`]). Writes `POST /V1/inventory/source-items` in batches. MSI has
//! no compare-and-set, ETag or idempotency key, so a conditional write is
//! emulated ([`crate::provider::http::emulate`]): look the batch's keys up,
//! compare with the plan's expected values, write the ones that still match,
//! read them back. Writes to one key are never in flight twice.
//!
//! Source quantity is what this provider reads and writes. What shoppers can buy
//! is the *salable* quantity: the stock's source quantities plus its reservations
//! (orders placed but not shipped). [`MagentoProvider::salable_gaps`] reports the
//! SKUs where the two differ, for `reconcile` notes and runbooks.

pub mod search;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use self::search::{AnyOf, parse_page, source_items_url};
use super::http::emulate::{self, ReadWrite, Settle};
use super::http::transport::{Req, RetryAfter, Settings, Transport};
use super::{Capabilities, CompareMode, Provider, ProviderError, ReadInfo, RowSink, Write, WriteOutcome};
use crate::config::model::MagentoProviderConfig;

/// SKUs per lookup request (each is one `eq` filter in the URL).
const LOOKUP_SKUS: usize = 50;

/// A Magento store's MSI source items.
pub struct MagentoProvider {
    base_url: String,
    /// Source code → plan location, and back.
    sources: BTreeMap<String, String>,
    locations: BTreeMap<String, String>,
    batch_size: usize,
    page_size: usize,
    stock_id: Option<u32>,
    t: Transport,
}

/// A SKU whose salable quantity differs from the sum of its source quantities.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SalableGap {
    pub sku: String,
    /// Sum of the SKU's quantities over the plan's sources.
    pub source_qty: i64,
    /// `GET /V1/inventory/get-product-salable-quantity/{sku}/{stock_id}`.
    pub salable_qty: f64,
}

impl MagentoProvider {
    /// Opens the store a plan names; the token comes from `token_env`.
    pub fn from_config(cfg: &MagentoProviderConfig) -> Result<Self, ProviderError> {
        let token = super::net::secret_from_env(&cfg.token_env, &format!("magento {}", cfg.base_url))?;
        Self::with_token(cfg, token)
    }

    /// Opens the store with an explicit token (tests; `token_env` is only named in errors).
    pub fn with_token(cfg: &MagentoProviderConfig, token: String) -> Result<Self, ProviderError> {
        let what = format!("magento {}", cfg.base_url);
        let t = Transport::new(Settings {
            what,
            auth: Some(("Authorization".into(), format!("Bearer {token}"))),
            secret: Some(token),
            headers: vec![],
            requests_per_sec: None,
            retry_after: RetryAfter { header: None, millis: false },
            timeout: std::time::Duration::from_secs(120),
            token_env: Some(cfg.token_env.clone()),
        })?;
        Ok(MagentoProvider {
            base_url: cfg.base_url.clone(),
            sources: cfg.source_codes.clone(),
            locations: cfg.source_codes.iter().map(|(s, l)| (l.clone(), s.clone())).collect(),
            batch_size: cfg.batch_size.max(1),
            page_size: cfg.page_size.max(1),
            stock_id: cfg.stock_id,
            t,
        })
    }

    /// Request counters (tests, verbose output).
    pub fn stats(&self) -> super::http::transport::Stats {
        self.t.stats
    }

    fn invalid(&self, message: String) -> ProviderError {
        ProviderError::Invalid { what: self.t.what().to_owned(), message: self.t.redact(&message) }
    }

    /// Walks the source-items listing for `filters`, page by page.
    fn list(
        &mut self,
        filters: &[AnyOf<'_>],
        page_size: usize,
        mut each: impl FnMut(Result<search::SourceItem, search::BadItem>),
    ) -> Result<(), ProviderError> {
        let mut seen: u64 = 0;
        for page in 1u64.. {
            let url = source_items_url(&self.base_url, filters, page_size, page).map_err(|e| self.invalid(e))?;
            let resp = self.t.send(&Req::get(url))?;
            if !resp.is_success() {
                let detail = serde_json::from_slice::<Value>(&resp.body)
                    .ok()
                    .and_then(|b| search::error_message(&b))
                    .unwrap_or_else(|| resp.snippet());
                return Err(self.invalid(format!("{} answered {}: {detail}", resp.request, resp.status)));
            }
            let body = resp.json(self.t.what())?;
            let p =
                parse_page(&body).map_err(|e| self.invalid(format!("{}: {e}: {}", resp.request, resp.snippet())))?;
            let n = p.items.len() as u64;
            p.items.into_iter().for_each(&mut each);
            seen += n;
            // Magento repeats the last page past the end: stop on the count. (A
            // store with input limits caps pages at 300, so a short page alone
            // does not mean the end.)
            let done = match p.total_count {
                Some(total) => seen >= total,
                None => n < page_size as u64,
            };
            if n == 0 || done {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Current quantities of (sku, source code) keys.
    fn lookup(&mut self, keys: &[(String, String)]) -> Result<HashMap<(String, String), i64>, ProviderError> {
        let want: HashSet<(String, String)> = keys.iter().cloned().collect();
        let mut skus: Vec<String> = keys.iter().map(|(s, _)| s.clone()).collect();
        skus.sort_unstable();
        skus.dedup();
        let mut codes: Vec<String> = keys.iter().map(|(_, c)| c.clone()).collect();
        codes.sort_unstable();
        codes.dedup();
        let mut found = HashMap::new();
        let mut bad = None;
        for chunk in skus.chunks(LOOKUP_SKUS) {
            let filters = [
                AnyOf { field: "sku", values: chunk.iter().map(String::as_str).collect() },
                AnyOf { field: "source_code", values: codes.iter().map(String::as_str).collect() },
            ];
            let page_size = (chunk.len() * codes.len()).clamp(1, self.page_size.max(1));
            self.list(&filters, page_size, |item| match item {
                // Magento compares SKUs without regard to case: keep exact matches only.
                Ok(i) => {
                    let k = (i.sku, i.source_code);
                    if want.contains(&k) {
                        found.insert(k, i.quantity);
                    }
                }
                Err(b) if b.sku.as_ref().is_some_and(|s| chunk.contains(s)) => {
                    bad.get_or_insert(b.reason);
                }
                Err(_) => {}
            })?;
        }
        match bad {
            Some(reason) => Err(self.invalid(reason)),
            None => Ok(found),
        }
    }

    /// SKUs whose salable quantity (stock `stock_id`) differs from the sum of
    /// their source quantities over the plan's sources: reservations of open
    /// orders, sources outside the plan, or an out-of-stock threshold.
    pub fn salable_gaps(&mut self, skus: &[String]) -> Result<Vec<SalableGap>, ProviderError> {
        let Some(stock) = self.stock_id else {
            return Err(self.invalid("set `stock_id` to compare salable and source quantities".into()));
        };
        let keys: Vec<(String, String)> =
            skus.iter().flat_map(|s| self.sources.keys().map(move |c| (s.clone(), c.clone()))).collect();
        let found = self.lookup(&keys)?;
        let mut gaps = Vec::new();
        for sku in skus {
            let source_qty: i64 = found.iter().filter(|((s, _), _)| s == sku).map(|(_, q)| *q).sum();
            let url = super::http::transport::join(
                &self.base_url,
                &format!(
                    "/V1/inventory/get-product-salable-quantity/{}/{stock}",
                    super::http::transport::percent_encode(sku)
                ),
            )
            .map_err(|e| self.invalid(e))?;
            let resp = self.t.send(&Req::get(url))?;
            if !resp.is_success() {
                return Err(self.invalid(format!("{} answered {}: {}", resp.request, resp.status, resp.snippet())));
            }
            let body = resp.json(self.t.what())?;
            let salable = body
                .as_f64()
                .or_else(|| body.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| self.invalid(format!("{}: not a number: {}", resp.request, resp.snippet())))?;
            if (salable - source_qty as f64).abs() > f64::EPSILON {
                gaps.push(SalableGap { sku: sku.clone(), source_qty, salable_qty: salable });
            }
        }
        Ok(gaps)
    }
}

impl ReadWrite for MagentoProvider {
    type Extra = ();

    fn current(&mut self, keys: &[&Write]) -> Result<emulate::Current<()>, ProviderError> {
        let remote: Vec<(String, String)> = keys
            .iter()
            .map(|w| (w.sku.clone(), self.locations.get(&w.location).cloned().unwrap_or_default()))
            .collect();
        let found = self.lookup(&remote)?;
        Ok(remote.iter().map(|k| (found.get(k).copied(), ())).collect())
    }

    fn put(&mut self, items: &[(&Write, &())]) -> Result<Result<(), String>, ProviderError> {
        let source_items: Vec<Value> = items
            .iter()
            .map(|(w, _)| {
                json!({
                    "sku": w.sku,
                    "source_code": self.locations.get(&w.location),
                    "quantity": w.new,
                    // In stock when there is stock; Magento keeps `status` apart from the quantity.
                    "status": i32::from(w.new > 0),
                })
            })
            .collect();
        let url =
            super::http::transport::join(&self.base_url, "/V1/inventory/source-items").map_err(|e| self.invalid(e))?;
        let req = Req {
            method: reqwest::Method::POST,
            url,
            headers: vec![],
            body: Some(json!({ "sourceItems": source_items }).to_string()),
            idempotent: false,
        };
        let resp = self.t.send(&req)?;
        if resp.is_success() {
            return Ok(Ok(()));
        }
        let detail = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|b| search::error_message(&b))
            .unwrap_or_else(|| resp.snippet());
        Ok(Err(format!("{} answered {}: {detail}", resp.request, resp.status)))
    }
}

impl Provider for MagentoProvider {
    fn describe(&self) -> String {
        let codes: Vec<&str> = self.sources.keys().map(String::as_str).collect();
        format!("magento {} (sources {})", self.base_url, codes.join(", "))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { compare: CompareMode::Emulated, max_batch: self.batch_size, max_requests_per_sec: None }
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        let codes: Vec<String> = self.sources.keys().cloned().collect();
        let filters = [AnyOf { field: "source_code", values: codes.iter().map(String::as_str).collect() }];
        let sources = self.sources.clone();
        let mut line = 0u64;
        let mut rows = 0u64;
        // Pages can shift while a store takes orders; a key seen twice is read once.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let page_size = self.page_size;
        self.list(&filters, page_size, |item| {
            line += 1;
            match item {
                Ok(i) => {
                    let Some(loc) = sources.get(&i.source_code) else { return };
                    if seen.insert((i.sku.clone(), i.source_code.clone())) {
                        rows += 1;
                        sink.row(&i.sku, loc, i.quantity, line);
                    }
                }
                Err(b) => sink.problem(
                    line,
                    0,
                    format!("magento: {}", b.reason),
                    "Fix the source item in Magento (stockshift moves whole units of products with a SKU).".into(),
                ),
            }
        })?;
        Ok(ReadInfo { rows, sha256: None })
    }

    fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        let mut out: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
        let mut idx = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            if self.locations.contains_key(&w.location) {
                idx.push(i);
            } else {
                out[i] = Some(WriteOutcome::Failed {
                    retriable: false,
                    message: format!("location `{}` has no MSI source in `source_codes`", w.location),
                });
            }
        }
        let sub: Vec<Write> = idx.iter().map(|&i| writes[i].clone()).collect();
        let done = emulate::read_compare_write(self, &sub, Settle::default())?;
        for (i, o) in idx.into_iter().zip(done) {
            out[i] = Some(o);
        }
        Ok(out.into_iter().map(|o| o.expect("every write has an outcome")).collect())
    }

    fn read_keys(&mut self, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
        let remote: Vec<Option<(String, String)>> =
            keys.iter().map(|(s, l)| self.locations.get(l).map(|c| (s.clone(), c.clone()))).collect();
        let wanted: Vec<(String, String)> = remote.iter().flatten().cloned().collect();
        let found = self.lookup(&wanted)?;
        Ok(remote.iter().map(|k| k.as_ref().and_then(|k| found.get(k).copied())).collect())
    }
}
