//! The conformance suite against the `magento` provider, talking to the fake
//! Magento MSI API (tests/fakes/magento.rs) on 127.0.0.1.

use std::path::Path;

use stockshift::config::model::MagentoProviderConfig;
use stockshift::provider::Provider;
use stockshift::provider::magento::MagentoProvider;

use super::{Contents, Subject};
use crate::fakes::magento::Magento;

const TOKEN: &str = "mage-conformance-token";
const TOKEN_ENV: &str = "STOCKSHIFT_TEST_MAGENTO_TOKEN";

/// Plan location ↔ MSI source code.
const SOURCES: [(&str, &str); 2] = [("src-a", "A"), ("src-b", "B")];

pub struct MagentoSubject {
    fake: Magento,
}

fn make(_dir: &Path) -> MagentoSubject {
    MagentoSubject { fake: Magento::start(TOKEN, &["src-a", "src-b", "src-unused"]) }
}

fn source_of(location: &str) -> &'static str {
    SOURCES.iter().find(|(_, l)| *l == location).map(|(s, _)| *s).expect("a known location")
}

impl MagentoSubject {
    fn config(&self, batch: usize) -> MagentoProviderConfig {
        MagentoProviderConfig {
            base_url: self.fake.base_url(),
            token_env: TOKEN_ENV.into(),
            source_codes: SOURCES.iter().map(|(s, l)| (s.to_string(), l.to_string())).collect(),
            batch_size: batch,
            page_size: 300,
            stock_id: None,
        }
    }
}

impl Subject for MagentoSubject {
    fn target_yaml(&self, _dir: &Path, batch: usize) -> String {
        format!(
            "{{ provider: magento, base_url: \"{}\", token_env: {TOKEN_ENV}, source_codes: {{ src-a: A, src-b: B }}, batch_size: {batch}, page_size: 50 }}",
            self.fake.base_url()
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(TOKEN_ENV.into(), TOKEN.into())]
    }

    fn seed(&self, _dir: &Path, rows: &[(String, String, i64)]) {
        let mut s = self.fake.store();
        s.items.clear();
        // A source the plan does not name: never read, never written.
        s.items.insert(("SKU-0001".into(), "src-unused".into()), (99.0, 1));
        for (sku, loc, q) in rows {
            s.items.insert((sku.clone(), source_of(loc).into()), (*q as f64, i64::from(*q > 0)));
        }
    }

    fn contents(&self, _dir: &Path) -> Contents {
        let s = self.fake.store();
        assert_eq!(
            s.items.get(&("SKU-0001".into(), "src-unused".into())).map(|v| v.0),
            Some(99.0),
            "unmapped source untouched"
        );
        s.items
            .iter()
            .filter_map(|((sku, code), (q, _))| {
                let loc = SOURCES.iter().find(|(c, _)| c == code)?.1;
                Some(((sku.clone(), loc.to_owned()), *q as i64))
            })
            .collect()
    }

    fn poke(&self, _dir: &Path, sku: &str, location: &str, qty: i64) {
        self.fake.set(sku, source_of(location), qty as f64);
    }

    fn fail_next_writes(&self, _dir: &Path, n: usize) {
        self.fake.fail_next_writes(n, 503);
    }

    fn open(&self, _dir: &Path) -> Box<dyn Provider> {
        Box::new(MagentoProvider::with_token(&self.config(20), TOKEN.into()).unwrap())
    }
}

crate::conformance_suite!(make);
