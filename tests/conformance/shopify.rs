//! The conformance suite against the `shopify` provider, talking to the fake
//! Admin GraphQL API (tests/fakes/shopify.rs) on 127.0.0.1.
//!
//! In Shopify a key can only be created for a SKU whose product variant (its
//! inventory item) exists: stockshift stocks it at the location, it does not
//! create products. So `seed` also registers, unstocked, the SKUs the suite
//! creates (`SKU-NEW`, `NEW-0000`…).

use std::path::Path;

use stockshift::config::model::ShopifyProviderConfig;
use stockshift::provider::Provider;
use stockshift::provider::shopify::{RetryPolicy, ShopifyProvider};

use super::{Contents, Subject};
use crate::fakes::shopify::{FakeShopify, Fault, Scope};

const TOKEN_ENV: &str = "STOCKSHIFT_TEST_SHOPIFY_TOKEN";

pub struct ShopifySubject {
    fake: FakeShopify,
}

fn make(_dir: &Path) -> ShopifySubject {
    ShopifySubject { fake: FakeShopify::start() }
}

impl ShopifySubject {
    fn config(&self, batch: usize) -> ShopifyProviderConfig {
        serde_json::from_value(serde_json::json!({
            "shop": "conformance-shop",
            "token_env": TOKEN_ENV,
            "endpoint": self.fake.endpoint(),
            "batch_size": batch,
        }))
        .unwrap()
    }
}

impl Subject for ShopifySubject {
    fn target_yaml(&self, _dir: &Path, batch: usize) -> String {
        format!(
            "{{ provider: shopify, shop: conformance-shop, token_env: {TOKEN_ENV}, endpoint: \"{}\", batch_size: {batch} }}",
            self.fake.endpoint()
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(TOKEN_ENV.into(), self.fake.token())]
    }

    fn seed(&self, _dir: &Path, rows: &[(String, String, i64)]) {
        self.fake.seed(rows);
        let mut catalogue = vec!["SKU-NEW".to_owned()];
        catalogue.extend((0..1000).map(|i| format!("NEW-{i:04}")));
        self.fake.add_items(catalogue.iter().map(String::as_str));
        self.fake.add_location("A");
        self.fake.add_location("B");
    }

    fn contents(&self, _dir: &Path) -> Contents {
        self.fake.contents()
    }

    fn poke(&self, _dir: &Path, sku: &str, location: &str, qty: i64) {
        self.fake.set(sku, location, qty);
    }

    fn fail_next_writes(&self, _dir: &Path, n: usize) {
        // Alternate a lost response (applied, then 502) and a refusal (503), so a
        // retry must be both idempotent and complete.
        for i in 0..n {
            let fault = if i % 2 == 0 { Fault::StatusAfterApplying(502) } else { Fault::Status(503) };
            self.fake.fail_next(1, fault, Scope::Mutations);
        }
    }

    fn open(&self, _dir: &Path) -> Box<dyn Provider> {
        let mut p = ShopifyProvider::new(&self.config(250), self.fake.token()).unwrap();
        p.set_retry(RetryPolicy { base_backoff: std::time::Duration::from_millis(5), ..RetryPolicy::default() });
        Box::new(p)
    }
}

crate::conformance_suite!(make);
