//! The conformance suite against the `http` provider driven by the shipped
//! BigCommerce manifest (`manifest: bigcommerce`), talking to the fake
//! BigCommerce Inventory API (tests/fakes/bigcommerce.rs) on 127.0.0.1.

use std::path::Path;

use stockshift::config::model::HttpProviderConfig;
use stockshift::provider::Provider;
use stockshift::provider::http::HttpProvider;

use super::{Contents, Subject};
use crate::fakes::bigcommerce::BigCommerce;

const TOKEN: &str = "bc-conformance-token";
const TOKEN_ENV: &str = "STOCKSHIFT_TEST_BIGCOMMERCE_TOKEN";

/// BigCommerce location_id ↔ plan location.
const LOCATIONS: [(u64, &str); 2] = [(1, "A"), (2, "B")];

pub struct BigCommerceSubject {
    fake: BigCommerce,
}

fn make(_dir: &Path) -> BigCommerceSubject {
    BigCommerceSubject { fake: BigCommerce::start(TOKEN) }
}

fn id_of(location: &str) -> u64 {
    LOCATIONS.iter().find(|(_, l)| *l == location).map(|(id, _)| *id).expect("a known location")
}

impl BigCommerceSubject {
    fn config(&self, batch: usize) -> HttpProviderConfig {
        HttpProviderConfig {
            manifest: "bigcommerce".into(),
            base_url: self.fake.base_url(),
            token_env: Some(TOKEN_ENV.into()),
            vars: Default::default(),
            locations: LOCATIONS.iter().map(|(id, l)| (id.to_string(), l.to_string())).collect(),
            batch_size: Some(batch),
            requests_per_sec: Some(1000.0),
        }
    }
}

impl Subject for BigCommerceSubject {
    fn target_yaml(&self, _dir: &Path, batch: usize) -> String {
        format!(
            "{{ provider: http, manifest: bigcommerce, base_url: \"{}\", token_env: {TOKEN_ENV}, locations: {{ \"1\": A, \"2\": B }}, batch_size: {batch}, requests_per_sec: 1000 }}",
            self.fake.base_url()
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(TOKEN_ENV.into(), TOKEN.into())]
    }

    fn seed(&self, _dir: &Path, rows: &[(String, String, i64)]) {
        let mut s = self.fake.store();
        s.levels.clear();
        for (sku, loc, q) in rows {
            s.levels.insert((sku.clone(), id_of(loc)), *q);
        }
    }

    fn contents(&self, _dir: &Path) -> Contents {
        let s = self.fake.store();
        s.levels
            .iter()
            .map(|((sku, id), q)| {
                let loc = LOCATIONS.iter().find(|(i, _)| i == id).expect("known location").1;
                ((sku.clone(), loc.to_owned()), *q)
            })
            .collect()
    }

    fn poke(&self, _dir: &Path, sku: &str, location: &str, qty: i64) {
        self.fake.set(sku, id_of(location), qty);
    }

    fn fail_next_writes(&self, _dir: &Path, n: usize) {
        self.fake.fail_next_writes(n);
    }

    fn open(&self, dir: &Path) -> Box<dyn Provider> {
        Box::new(HttpProvider::with_token(&self.config(50), dir, Some(TOKEN.into())).unwrap())
    }
}

crate::conformance_suite!(make);
