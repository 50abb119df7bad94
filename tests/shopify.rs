//! Tests of the `shopify` provider against the fake Admin API
//! (tests/fakes/shopify.rs): paging, bulk reads, compare-and-set, creates,
//! throttling, retries, idempotency keys, secrets and malformed answers. The
//! shared cases (create, update, conflict, resume, rollback …) are in
//! tests/conformance/shopify.rs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use stockshift::config::model::ShopifyProviderConfig;
use stockshift::provider::shopify::{RetryPolicy, ShopifyProvider};
use stockshift::provider::{Provider, RowSink, Write, WriteOutcome};

use crate::fakes::shopify::{Config, FakeShopify, Fault, Scope};
use crate::util::{root, run, stockshift};

fn config(fake: &FakeShopify, extra: serde_json::Value) -> ShopifyProviderConfig {
    let mut v = json!({ "shop": "test-shop", "token_env": "UNUSED_TOKEN_ENV", "endpoint": fake.endpoint() });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn provider(fake: &FakeShopify, extra: serde_json::Value) -> ShopifyProvider {
    let mut p = ShopifyProvider::new(&config(fake, extra), fake.token()).unwrap();
    p.set_retry(RetryPolicy {
        base_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(20),
        ..RetryPolicy::default()
    });
    p
}

fn w(sku: &str, loc: &str, expected: Option<i64>, new: i64) -> Write {
    Write { sku: sku.into(), location: loc.into(), expected, new }
}

#[derive(Default)]
struct Rows {
    rows: BTreeMap<(String, String), i64>,
    lines: Vec<u64>,
    problems: Vec<String>,
}

impl RowSink for Rows {
    fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        assert!(self.rows.insert((sku.into(), location.into()), qty).is_none(), "{sku} {location} twice");
        self.lines.push(line);
    }
    fn problem(&mut self, _: u64, _: usize, summary: String, _: String) {
        self.problems.push(summary);
    }
}

/// A shop of `n` SKUs at two locations.
fn shop(n: usize) -> FakeShopify {
    let fake = FakeShopify::start();
    let rows: Vec<(String, String, i64)> = (0..n)
        .flat_map(|i| {
            [(format!("SKU-{i:05}"), "Main".to_owned(), i as i64 % 40), (format!("SKU-{i:05}"), "Outlet".to_owned(), 3)]
        })
        .collect();
    fake.seed(&rows);
    fake
}

#[test]
fn paged_read_walks_every_page_of_every_location() {
    let fake = shop(600); // 600 levels per location: 3 pages each
    fake.add_item_without_sku("Main", 9);
    let mut p = provider(&fake, json!({ "read": "paged" }));
    let mut rows = Rows::default();
    let info = p.read(&mut rows).unwrap();
    assert_eq!(info.rows, 1200);
    assert_eq!(rows.rows, fake.contents(), "every level, nothing else (the item without a SKU is left out)");
    assert!(rows.problems.is_empty(), "{:?}", rows.problems);
    let pages = fake.operations().iter().filter(|o| *o == "StockshiftLevels").count();
    assert_eq!(pages, 6);
    assert!(!fake.operations().iter().any(|o| o == "StockshiftBulkRun"));
}

#[test]
fn bulk_read_streams_the_jsonl_without_the_token() {
    let fake = shop(300);
    let mut p = provider(&fake, json!({ "read": "bulk" }));
    let mut rows = Rows::default();
    assert_eq!(p.read(&mut rows).unwrap().rows, 600);
    assert_eq!(rows.rows, fake.contents());
    let c = fake.counters();
    assert_eq!(c.bulk_downloads, 1);
    assert_eq!(c.token_sent_to_download, 0, "the pre-signed URL never gets the access token");
    assert!(fake.operations().iter().any(|o| o == "StockshiftBulkPoll"), "the operation is polled until done");
    // Lines are JSONL line numbers: strictly increasing, location lines skipped.
    assert!(rows.lines.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn auto_read_switches_to_bulk_at_the_threshold() {
    let fake = shop(30);
    let mut small = provider(&fake, json!({ "bulk_threshold": 31 }));
    small.read(&mut Rows::default()).unwrap();
    assert!(!fake.operations().iter().any(|o| o == "StockshiftBulkRun"));
    let mut large = provider(&fake, json!({ "bulk_threshold": 30 }));
    let mut rows = Rows::default();
    large.read(&mut rows).unwrap();
    assert!(fake.operations().iter().any(|o| o == "StockshiftBulkRun"));
    assert_eq!(rows.rows, fake.contents());
}

#[test]
fn on_hand_is_read_and_written_when_configured() {
    let fake = shop(2);
    fake.set_committed("SKU-00001", "Main", 4); // available 1, on_hand 5
    let mut p = provider(&fake, json!({ "quantity": "on_hand", "read": "paged" }));
    let mut rows = Rows::default();
    p.read(&mut rows).unwrap();
    assert_eq!(rows.rows[&("SKU-00001".to_owned(), "Main".to_owned())], 5);
    let out = p.write_batch(&[w("SKU-00001", "Main", Some(5), 9)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied]);
    assert_eq!(fake.level("SKU-00001", "Main"), Some(5), "available = on_hand − committed");
}

#[test]
fn stale_rows_are_conflicts_with_the_found_value_and_the_rest_lands() {
    let fake = shop(10);
    fake.set("SKU-00002", "Main", 100);
    fake.set("SKU-00005", "Main", 55);
    fake.set("SKU-00007", "Main", 70); // already the new value
    let mut p = provider(&fake, json!({}));
    let writes: Vec<Write> = (0..10).map(|i| w(&format!("SKU-{i:05}"), "Main", Some(i), 70)).collect();
    let out = p.write_batch(&writes).unwrap();
    for (i, o) in out.iter().enumerate() {
        let want = match i {
            2 => WriteOutcome::Conflict { found: Some(100) },
            5 => WriteOutcome::Conflict { found: Some(55) },
            7 => WriteOutcome::AlreadyApplied,
            _ => WriteOutcome::Applied,
        };
        assert_eq!(*o, want, "write {i}");
    }
    assert_eq!(fake.level("SKU-00002", "Main"), Some(100), "a conflict never overwrites");
    assert_eq!(fake.level("SKU-00005", "Main"), Some(55));
    assert_eq!(fake.level("SKU-00003", "Main"), Some(70));
    let c = fake.counters();
    assert_eq!(c.stale_rejections, 1, "one stale mutation, then the rest under a new key");
    assert_eq!(c.set_mutations, 1);
    assert_eq!(c.quantities_written, 7);
}

#[test]
fn unknown_skus_and_locations_fail_clearly_and_alone() {
    let fake = shop(3);
    fake.add_item("TWIN");
    fake.add_item("TWIN");
    let mut p = provider(&fake, json!({}));
    let out = p
        .write_batch(&[
            w("NO-SUCH-SKU", "Main", Some(1), 2),
            w("SKU-00001", "Nowhere", Some(1), 2),
            w("TWIN", "Main", None, 2),
            w("SKU-00001", "Main", Some(1), 8),
        ])
        .unwrap();
    let msg = |o: &WriteOutcome| match o {
        WriteOutcome::Failed { retriable: false, message } => message.clone(),
        other => panic!("expected a non-retriable failure, got {other:?}"),
    };
    assert!(msg(&out[0]).contains("no inventory item with the SKU `NO-SUCH-SKU`"), "{:?}", out[0]);
    assert!(msg(&out[1]).contains("no active location named `Nowhere`"), "{:?}", out[1]);
    assert!(msg(&out[2]).contains("several Shopify inventory items have the SKU `TWIN`"), "{:?}", out[2]);
    assert_eq!(out[3], WriteOutcome::Applied);
}

#[test]
fn creates_activate_the_item_then_compare_from_zero() {
    let fake = shop(2);
    fake.add_item("FRESH");
    fake.add_item("RACED");
    fake.add_item("DONE");
    fake.set("RACED", "Main", 4); // someone stocked it since the plan
    fake.set("DONE", "Main", 6); // a killed run already created it
    let mut p = provider(&fake, json!({}));
    let out = p
        .write_batch(&[w("FRESH", "Outlet", None, 5), w("RACED", "Main", None, 5), w("DONE", "Main", None, 6)])
        .unwrap();
    assert_eq!(
        out,
        vec![WriteOutcome::Applied, WriteOutcome::Conflict { found: Some(4) }, WriteOutcome::AlreadyApplied]
    );
    assert_eq!(fake.level("FRESH", "Outlet"), Some(5));
    assert_eq!(fake.level("RACED", "Main"), Some(4));
    assert_eq!(fake.counters().activations, 1);
}

#[test]
fn pacing_keeps_to_the_bucket_after_the_first_throttle() {
    let fake = FakeShopify::with_config(Config { bucket: 300.0, restore_rate: 200.0, ..Config::default() });
    let rows: Vec<(String, String, i64)> = (0..400).map(|i| (format!("S{i:04}"), "Main".to_owned(), 1)).collect();
    fake.seed(&rows);
    let mut p = provider(&fake, json!({ "batch_size": 10 }));
    let writes: Vec<Write> = (0..400).map(|i| w(&format!("S{i:04}"), "Main", Some(1), 2)).collect();
    // Learns the bucket and resolves every name (400 SKUs: one bulk query).
    let keys: Vec<(String, String)> = writes.iter().map(|w| (w.sku.clone(), w.location.clone())).collect();
    assert!(p.read_keys(&keys[..1]).unwrap()[0] == Some(1));
    p.write_batch(&writes[..60]).unwrap();
    assert!(fake.operations().iter().any(|o| o == "StockshiftBulkRun"), "60 unknown SKUs: one bulk index");
    fake.drain_bucket(); // another app used it up
    fake.reset_counters();
    let t0 = Instant::now();
    for chunk in writes[60..].chunks(10) {
        assert!(p.write_batch(chunk).unwrap().iter().all(|o| *o == WriteOutcome::Applied));
    }
    let took = t0.elapsed();
    let c = fake.counters();
    assert_eq!(c.set_mutations, 34);
    assert_eq!(c.requests, c.set_mutations + c.throttled, "no lookups: every name was resolved");
    // 34 mutations × 10 points from an empty bucket at 200 points/s: 1.7 s.
    assert!(took >= Duration::from_millis(1650) && took < Duration::from_millis(2600), "{took:?}");
    assert!(c.throttled <= 1, "at most the first request after the drain is throttled, got {}", c.throttled);
    assert_eq!(fake.contents().values().filter(|q| **q == 2).count(), 400);
}

#[test]
fn transient_failures_are_retried_and_a_lost_response_is_not_applied_twice() {
    let fake = shop(5);
    let mut p = provider(&fake, json!({}));
    p.write_batch(&[w("SKU-00000", "Main", Some(0), 1)]).unwrap();
    fake.fail_next(1, Fault::Status(429), Scope::Mutations);
    fake.fail_next(1, Fault::Status(500), Scope::Mutations);
    fake.fail_next(1, Fault::StatusAfterApplying(502), Scope::Mutations);
    fake.reset_counters();
    let out = p.write_batch(&[w("SKU-00001", "Main", Some(1), 11), w("SKU-00002", "Main", Some(2), 12)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied, WriteOutcome::Applied]);
    let c = fake.counters();
    assert_eq!(c.faults, 3);
    assert_eq!(c.set_mutations, 1, "applied once");
    assert_eq!(c.idempotent_replays, 1, "the retry after the lost response carried the same key");
    assert_eq!(c.stale_rejections, 0);
    assert_eq!(p.stats().retries, 3);
}

#[test]
fn the_same_variables_later_in_one_operation_get_a_new_key() {
    let fake = shop(2);
    let mut p = provider(&fake, json!({}));
    p.bind_operation("replay-1");
    let up = [w("SKU-00001", "Main", Some(1), 6)];
    let down = [w("SKU-00001", "Main", Some(6), 1)];
    assert_eq!(p.write_batch(&up).unwrap(), vec![WriteOutcome::Applied]);
    assert_eq!(p.write_batch(&down).unwrap(), vec![WriteOutcome::Applied]);
    assert_eq!(p.write_batch(&up).unwrap(), vec![WriteOutcome::Applied]);
    assert_eq!(fake.level("SKU-00001", "Main"), Some(6));
    assert_eq!(fake.counters().idempotent_replays, 0);
}

#[test]
fn persistent_failures_become_errors_without_the_token() {
    let fake = shop(2);
    let token = fake.token();
    let mut p = provider(&fake, json!({}));
    fake.fail_next(10, Fault::EchoToken(500), Scope::Any);
    let e = p.write_batch(&[w("SKU-00001", "Main", Some(1), 2)]).unwrap_err().to_string();
    assert!(e.contains("HTTP 500"), "{e}");
    assert!(!e.contains(&token), "the token leaked: {e}");
    assert!(e.contains("[redacted]"), "{e}");

    // A wrong token names the variable, never a value.
    let cfg = config(&fake, json!({ "token_env": "MY_SHOPIFY_TOKEN" }));
    let mut wrong = ShopifyProvider::new(&cfg, "shpat_wrong_secret_value".into()).unwrap();
    let e = wrong.read(&mut Rows::default()).unwrap_err().to_string();
    assert!(e.contains("HTTP 401") && e.contains("MY_SHOPIFY_TOKEN"), "{e}");
    assert!(!e.contains("shpat_wrong_secret_value") && !e.contains(&token), "{e}");
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    for fault in [Fault::Garbage, Fault::WrongShape] {
        let fake = shop(2);
        let mut p = provider(&fake, json!({ "read": "paged" }));
        fake.fail_next(50, fault, Scope::Any);
        assert!(p.read(&mut Rows::default()).is_err(), "{fault:?}");
        assert!(p.write_batch(&[w("SKU-00001", "Main", Some(1), 2)]).is_err(), "{fault:?}");
        assert!(p.read_keys(&[("SKU-00001".into(), "Main".into())]).is_err(), "{fault:?}");
    }
}

#[test]
fn point_reads_and_the_reachability_check() {
    let fake = shop(3);
    fake.add_item("UNSTOCKED");
    let mut p = provider(&fake, json!({}));
    assert_eq!(p.read_keys(&[]).unwrap(), Vec::<Option<i64>>::new());
    let keys = [
        ("SKU-00002", "Main"),
        ("UNSTOCKED", "Main"),
        ("NOPE", "Main"),
        ("SKU-00001", "Outlet"),
        ("SKU-00001", "Mars"),
    ];
    let keys: Vec<(String, String)> = keys.iter().map(|(s, l)| (s.to_string(), l.to_string())).collect();
    assert_eq!(p.read_keys(&keys).unwrap(), vec![Some(2), None, None, Some(3), None]);

    let down = FakeShopify::start();
    let url = down.endpoint();
    drop(down);
    let mut p = ShopifyProvider::new(&config(&fake, json!({ "endpoint": url })), "t".into()).unwrap();
    p.set_retry(RetryPolicy { attempts: 2, base_backoff: Duration::from_millis(1), ..RetryPolicy::default() });
    assert!(p.read_keys(&[]).is_err(), "an unreachable shop fails the check");
}

#[test]
fn older_pinned_versions_work_too() {
    let fake = shop(3);
    let mut p = provider(&fake, json!({ "api_version": "2026-01", "endpoint": fake.endpoint_for("2026-01") }));
    assert_eq!(p.write_batch(&[w("SKU-00002", "Main", Some(2), 9)]).unwrap(), vec![WriteOutcome::Applied]);
}

#[test]
fn the_example_plan_validates_with_the_token_variable_set() {
    let (code, out, err) = run(stockshift()
        .env("SHOPIFY_ADMIN_TOKEN", "shpat_example")
        .arg("validate")
        .arg(root().join("plans/shopify.yaml")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Success!"), "{out}");
    let (code, _, err) =
        run(stockshift().env_remove("SHOPIFY_ADMIN_TOKEN").arg("validate").arg(root().join("plans/shopify.yaml")));
    assert_eq!(code, 1);
    assert!(err.contains("SHOPIFY_ADMIN_TOKEN"), "{err}");
}

#[test]
fn plan_and_apply_through_the_cli() {
    let fake = shop(20);
    let dir = tempfile::tempdir().unwrap();
    let mut src = String::from("sku,location,qty\n");
    for i in 0..20 {
        src.push_str(&format!("SKU-{i:05},Main,{}\n", i + 100));
    }
    std::fs::write(dir.path().join("source.csv"), src).unwrap();
    std::fs::write(
        dir.path().join("plan.yaml"),
        format!(
            "version: 1\nname: cli\nsource: {{ provider: csv, path: source.csv }}\ntarget: {{ provider: shopify, shop: test-shop, token_env: T_SHOPIFY, endpoint: \"{}\", batch_size: 7 }}\n",
            fake.endpoint()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| run(stockshift().current_dir(dir.path()).env("T_SHOPIFY", fake.token()).args(args));
    let (code, out, err) = cli(&["plan", "plan.yaml", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["summary"]["update"], json!(20));
    let (code, out, err) = cli(&["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(&fake.token()) && !err.contains(&fake.token()));
    for i in 0..20 {
        assert_eq!(fake.level(&format!("SKU-{i:05}"), "Main"), Some(i + 100));
    }
    assert_eq!(fake.counters().set_mutations, 3, "20 writes in batches of 7");
}
