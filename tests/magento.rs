//! The `magento` provider against the fake MSI API: paging, source filtering,
//! read-back race detection, throttling, refused items, bad answers, salable
//! quantity, secrets kept out of messages, and the example plan.

use std::time::{Duration, Instant};

use stockshift::config::model::MagentoProviderConfig;
use stockshift::provider::magento::{MagentoProvider, SalableGap};
use stockshift::provider::{Provider, ProviderError, RowSink, Write, WriteOutcome};

use crate::fakes::magento::Magento;
use crate::util::{root, run, stockshift};

const TOKEN: &str = "mage-secret-token-1234";

fn config(fake: &Magento) -> MagentoProviderConfig {
    MagentoProviderConfig {
        base_url: fake.base_url(),
        token_env: "MAGENTO_TEST_TOKEN".into(),
        source_codes: [("eu".to_string(), "WH-EU".to_string()), ("us".to_string(), "WH-US".to_string())]
            .into_iter()
            .collect(),
        batch_size: 20,
        page_size: 3,
        stock_id: Some(1),
    }
}

fn open(fake: &Magento) -> MagentoProvider {
    MagentoProvider::with_token(&config(fake), TOKEN.into()).unwrap()
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
fn reads_every_page_once_and_only_the_plans_sources() {
    let fake = Magento::start(TOKEN, &["eu", "us", "pos"]);
    for i in 0..7 {
        fake.set(&format!("SKU-{i}"), if i % 2 == 0 { "eu" } else { "us" }, i as f64);
    }
    fake.set("SKU-0", "pos", 50.0);
    let mut sink = Rows::default();
    let info = open(&fake).read(&mut sink).unwrap();
    assert_eq!(info.rows, 7);
    assert!(sink.problems.is_empty(), "{:?}", sink.problems);
    let mut got = sink.rows.clone();
    got.sort();
    assert_eq!(got.len(), 7, "each item once, though the fake repeats the last page past the end");
    assert!(got.contains(&("SKU-3".into(), "WH-US".into(), 3)));
    assert!(!got.iter().any(|r| r.2 == 50), "source `pos` is not in source_codes");
    assert_eq!(fake.counters().reads, 3, "7 items at 3 per page");
}

#[test]
fn a_store_capping_page_size_is_still_read_whole() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    for i in 0..10 {
        fake.set(&format!("SKU-{i:02}"), "eu", 1.0);
    }
    fake.store().max_page_size = Some(4); // the store serves at most 4 per page, whatever is asked
    let mut cfg = config(&fake);
    cfg.page_size = 6;
    let mut sink = Rows::default();
    MagentoProvider::with_token(&cfg, TOKEN.into()).unwrap().read(&mut sink).unwrap();
    assert_eq!(sink.rows.len(), 10, "short pages are not the end while total_count says more");
}

#[test]
fn decimal_and_broken_items_are_problems_not_guesses() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("OK", "eu", 4.0);
    fake.set("HALF", "eu", 2.5);
    let mut sink = Rows::default();
    open(&fake).read(&mut sink).unwrap();
    assert_eq!(sink.rows, vec![("OK".into(), "WH-EU".into(), 4)]);
    assert_eq!(sink.problems.len(), 1);
    assert!(sink.problems[0].contains("HALF") && sink.problems[0].contains("2.5"), "{:?}", sink.problems);
}

#[test]
fn a_change_between_write_and_read_back_is_a_conflict() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("A", "eu", 1.0);
    fake.set("B", "eu", 2.0);
    fake.race_after_next_write("A", "eu", 6.0);
    let out = open(&fake).write_batch(&[w("A", "WH-EU", Some(1), 10), w("B", "WH-EU", Some(2), 20)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Conflict { found: Some(6) }, WriteOutcome::Applied]);
    assert_eq!(fake.get("A", "eu"), Some(6.0), "the concurrent value stays");
    assert_eq!(fake.counters().writes, 1, "one POST for the batch");
}

#[test]
fn writes_set_status_and_serialise_one_key() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("A", "eu", 3.0);
    let mut p = open(&fake);
    let out =
        p.write_batch(&[w("A", "WH-EU", Some(3), 0), w("A", "WH-EU", Some(0), 5), w("N", "WH-US", None, 0)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied, WriteOutcome::Applied, WriteOutcome::Applied]);
    assert_eq!(fake.counters().writes, 2, "the second write to A waits for the first to be read back");
    let s = fake.store();
    assert_eq!(s.items[&("N".to_string(), "us".to_string())], (0.0, 0), "a zero quantity is out of stock");
    assert_eq!(s.items[&("A".to_string(), "eu".to_string())], (5.0, 1));
}

#[test]
fn a_refused_item_fails_alone() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.store().reject_skus.insert("GHOST".into());
    let out = open(&fake)
        .write_batch(&[
            w("A", "WH-EU", None, 1),
            w("GHOST", "WH-EU", None, 1),
            w("B", "WH-EU", None, 2),
            w("C", "NOWHERE", None, 1),
        ])
        .unwrap();
    assert_eq!(out[0], WriteOutcome::Applied);
    assert_eq!(out[2], WriteOutcome::Applied);
    match &out[1] {
        WriteOutcome::Failed { retriable: false, message } => {
            assert!(message.contains("GHOST") && message.contains("does not exist"), "{message}")
        }
        o => panic!("{o:?}"),
    }
    assert!(matches!(&out[3], WriteOutcome::Failed { retriable: false, message } if message.contains("NOWHERE")));
    assert_eq!(fake.get("GHOST", "eu"), None);
}

#[test]
fn throttling_is_waited_out_with_retry_after() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("A", "eu", 1.0);
    fake.throttle_next(2, 1);
    let started = Instant::now();
    let out = open(&fake).write_batch(&[w("A", "WH-EU", Some(1), 2)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied]);
    assert!(started.elapsed() >= Duration::from_secs(2), "waited Retry-After twice: {:?}", started.elapsed());
    assert_eq!(fake.counters().throttled, 2);
}

#[test]
fn a_failed_write_is_transient_and_lands_nothing() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("A", "eu", 1.0);
    fake.fail_next_writes(1, 503);
    let mut p = open(&fake);
    let e = p.write_batch(&[w("A", "WH-EU", Some(1), 2)]).unwrap_err();
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e}");
    assert_eq!(fake.get("A", "eu"), Some(1.0));
    // The apply loop's retry: read, compare, write again.
    assert_eq!(p.write_batch(&[w("A", "WH-EU", Some(1), 2)]).unwrap(), vec![WriteOutcome::Applied]);
}

#[test]
fn garbage_answers_are_errors_not_panics() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("A", "eu", 1.0);
    fake.garbage_next_reads(1);
    let mut p = open(&fake);
    let e = p.read(&mut Rows::default()).unwrap_err().to_string();
    assert!(e.contains("not JSON") && e.contains("Service Temporarily Unavailable"), "{e}");
    fake.garbage_next_reads(1);
    let e = p.write_batch(&[w("A", "WH-EU", Some(1), 2)]).unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
    assert_eq!(fake.get("A", "eu"), Some(1.0), "nothing written without a compare");
}

#[test]
fn a_wrong_token_names_the_variable_never_the_value() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    let mut p = MagentoProvider::with_token(&config(&fake), "wrong-token-5678".into()).unwrap();
    let e = p.read(&mut Rows::default()).unwrap_err();
    assert!(matches!(e, ProviderError::Invalid { .. }));
    let e = e.to_string();
    assert!(e.contains("401") && e.contains("MAGENTO_TEST_TOKEN"), "{e}");
    assert!(!e.contains("wrong-token-5678") && !e.contains(TOKEN), "{e}");
    assert_eq!(fake.counters().unauthorized, 1, "auth errors are not retried");
}

#[test]
fn salable_quantity_is_compared_with_source_quantity() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("A", "eu", 10.0);
    fake.set("A", "us", 5.0);
    fake.set("B", "eu", 3.0);
    {
        let mut s = fake.store();
        s.stocks.insert(1, vec!["eu".into(), "us".into()]);
        s.reservations.insert("A".into(), -2.0); // two units ordered, not shipped
    }
    let gaps = open(&fake).salable_gaps(&["A".into(), "B".into()]).unwrap();
    assert_eq!(gaps, vec![SalableGap { sku: "A".into(), source_qty: 15, salable_qty: 13.0 }]);
}

#[test]
fn the_cli_plans_and_applies_against_the_fake() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    fake.set("TEE-S", "eu", 1.0);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("src.csv"), "sku,location,qty\nTEE-S,WH-EU,4\nMUG,WH-US,2\n").unwrap();
    std::fs::write(
        d.path().join("plan.yaml"),
        format!(
            "version: 1\nname: m\nsource: {{ provider: csv, path: src.csv }}\ntarget: {{ provider: magento, base_url: \"{}\", token_env: MAGENTO_TEST_TOKEN, source_codes: {{ eu: WH-EU, us: WH-US }} }}\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| run(stockshift().current_dir(d.path()).env("MAGENTO_TEST_TOKEN", TOKEN).args(args));
    let (code, out, err) = cli(&["plan", "plan.yaml", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["create"], 1);
    assert_eq!(v["summary"]["update"], 1);
    let (code, out, err) = cli(&["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fake.get("TEE-S", "eu"), Some(4.0));
    assert_eq!(fake.get("MUG", "us"), Some(2.0));
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
    // Without the token: a clear error naming the variable.
    let (code, _, err) =
        run(stockshift().current_dir(d.path()).env_remove("MAGENTO_TEST_TOKEN").args(["plan", "plan.yaml"]));
    assert_eq!(code, 1);
    assert!(err.contains("MAGENTO_TEST_TOKEN"), "{err}");
}

#[test]
fn reconcile_reports_where_salable_and_source_quantities_differ() {
    let fake = Magento::start(TOKEN, &["eu", "us"]);
    {
        let mut s = fake.store();
        s.stocks.insert(1, vec!["eu".into(), "us".into()]);
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("src.csv"), "sku,location,qty\nTEE-S,WH-EU,4\nMUG,WH-US,2\n").unwrap();
    std::fs::write(
        d.path().join("plan.yaml"),
        format!(
            "version: 1\nname: m\nsource: {{ provider: csv, path: src.csv }}\ntarget: {{ provider: magento, base_url: \"{}\", token_env: MAGENTO_TEST_TOKEN, source_codes: {{ eu: WH-EU, us: WH-US }}, stock_id: 1 }}\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| run(stockshift().current_dir(d.path()).env("MAGENTO_TEST_TOKEN", TOKEN).args(args));
    let (code, out, err) = cli(&["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    // No drift, no reservations: the written SKUs are checked and match.
    let (code, out, err) = cli(&["reconcile", "plan.yaml", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("salable_gaps").is_none(), "{v:#}");
    assert!(v["notes"].to_string().contains("equals the source quantity (2 SKU(s) checked)"), "{v:#}");
    // An open order reserves one mug: the source quantity is still right, shoppers see 1.
    fake.store().reservations.insert("MUG".into(), -1.0);
    let (code, out, err) = cli(&["reconcile", "plan.yaml", "--format", "json"]);
    assert_eq!(code, 0, "no drift, so no breach: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["drifted"], 0);
    assert_eq!(v["salable_gaps"], serde_json::json!([{"sku": "MUG", "source_qty": 2, "salable_qty": 1.0}]));
    assert!(v["notes"].to_string().contains("MUG: source 2, salable 1"), "{v:#}");
    let (_, human, _) = cli(&["reconcile", "plan.yaml"]);
    assert!(human.contains("salable quantity differs") || human.contains("MUG: source 2"), "{human}");
}

#[test]
fn the_example_plan_validates_with_its_token_set() {
    let (code, out, err) =
        run(stockshift().env("MAGENTO_TOKEN", "x").arg("validate").arg(root().join("plans/magento.yaml")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Success!"), "{out}");
}
