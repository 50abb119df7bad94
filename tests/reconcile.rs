//! `reconcile`: drift against the target and the state store, causes, bundles,
//! thresholds and KPIs, `--fix` (conditional, audited, within limits), and the
//! three output formats, against the real binary and real SQLite files.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::util::{copy_dir, golden, root, run, stockshift};

/// A copy of the demo plan in a temporary folder.
fn demo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("plans"), dir.path());
    let plan = dir.path().join("demo.yaml");
    (dir, plan)
}

fn db(dir: &Path) -> PathBuf {
    dir.join("demo/target.db")
}

fn set_qty(dir: &Path, sku: &str, loc: &str, qty: i64) {
    let c = Connection::open(db(dir)).unwrap();
    let n =
        c.execute("UPDATE inventory SET qty = ?3 WHERE sku = ?1 AND location = ?2", params![sku, loc, qty]).unwrap();
    assert_eq!(n, 1, "{sku} {loc}");
}

fn qty(dir: &Path, sku: &str, loc: &str) -> Option<i64> {
    let c = Connection::open(db(dir)).unwrap();
    c.query_row("SELECT qty FROM inventory WHERE sku = ?1 AND location = ?2", params![sku, loc], |r| r.get(0)).ok()
}

/// Replaces one source row's quantity in the demo snapshot.
fn set_source(dir: &Path, sku: &str, loc: &str, qty: i64) {
    let path = dir.join("demo/erp_snapshot.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("{sku},{loc},");
    assert!(text.lines().any(|l| l.starts_with(&prefix)), "{sku} {loc}");
    let out: Vec<String> =
        text.lines().map(|l| if l.starts_with(&prefix) { format!("{prefix}{qty}") } else { l.to_string() }).collect();
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
}

/// Edits the plan file: replaces `from` with `to` (which must be there).
fn edit_plan(plan: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(plan).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(plan, text.replace(from, to)).unwrap();
}

fn apply(dir: &Path) {
    let (code, _, stderr) = run(stockshift().current_dir(dir).args(["apply", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0, "{stderr}");
}

/// `reconcile demo.yaml --format json [extra...]`: (exit code, document, stderr).
fn reconcile_json(dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) =
        run(stockshift().current_dir(dir).args(["reconcile", "demo.yaml", "--format", "json"]).args(extra));
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}{stderr}"));
    (code, doc, stderr)
}

fn drift_of<'a>(doc: &'a Value, sku: &str, loc: &str) -> &'a Value {
    doc["drift"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sku"] == sku && d["location"] == loc)
        .unwrap_or_else(|| panic!("no drift for ({sku}, {loc}) in {doc:#}"))
}

/// Queues events (JSON lines) in the plan's event queue without replaying them.
fn queue_events(dir: &Path, lines: &[String]) {
    let events: Vec<_> = lines.iter().map(|l| stockshift::events::event::parse_line(l).unwrap()).collect();
    let mut q = stockshift::events::queue::Queue::open(&dir.join(".stockshift/events.db")).unwrap();
    q.append(&events).unwrap();
}

fn event(id: &str, sku: &str, loc: &str, delta: i64, sequence: i64) -> String {
    format!(
        "{{\"id\":\"{id}\",\"source\":\"erp\",\"sku\":\"{sku}\",\"location\":\"{loc}\",\"delta\":{delta},\"sequence\":{sequence},\"occurred_at\":\"2026-11-27T10:00:00Z\"}}"
    )
}

/// Output with the run-to-run varying timing made fixed, for golden files.
fn steady_text(s: &str) -> String {
    s.lines()
        .map(|l| if l.starts_with("Reconcile time:") { "Reconcile time: (varies)" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn steady_json(s: &str) -> String {
    let mut doc: Value = serde_json::from_str(s).unwrap();
    doc["seconds"] = Value::from(0.0);
    doc["seconds_per_key"] = Value::from(0.0);
    doc["kpis"]["seconds_per_key"]["value"] = Value::from(0.0);
    doc["kpis"]["seconds_per_key"]["note"] = Value::from("(varies)");
    serde_json::to_string_pretty(&doc).unwrap() + "\n"
}

#[test]
fn no_drift_after_apply() {
    let (dir, _) = demo();
    // Before any apply: every key the plan would write drifts, and stockshift never wrote it.
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 3);
    assert_eq!((doc["keys"].as_u64(), doc["drifted"].as_u64()), (Some(13), Some(8)));
    assert!(doc["drift"].as_array().unwrap().iter().all(|d| d["cause"] == "never_written"), "{doc:#}");
    assert!(!dir.path().join(".stockshift").exists(), "a read-only reconcile creates no state");

    apply(dir.path());
    let (code, doc, stderr) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["drifted"], 0);
    assert_eq!(doc["drift_ratio"], 0.0);
    assert_eq!(doc["max_abs_drift"], 0);
    assert_eq!(doc["breaches"], serde_json::json!([]));
    let (code, stdout, _) = run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("No drift. The target matches the mapped source."), "{stdout}");
    assert!(stdout.ends_with("no threshold breached.\n"), "{stdout}");
}

#[test]
fn a_target_changed_outside_stockshift_is_named_and_breaches() {
    let (dir, _) = demo();
    apply(dir.path());
    set_qty(dir.path(), "NEW-1", "loc-1", 4); // stockshift wrote 7
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 3, "1 of 13 keys is over max_drift_ratio 0.0005");
    assert_eq!(doc["drifted"], 1);
    let d = drift_of(&doc, "NEW-1", "loc-1");
    assert_eq!((d["source"].as_i64(), d["target"].as_i64(), d["diff"].as_i64()), (Some(7), Some(4), Some(3)));
    assert_eq!(d["cause"], "target_changed");
    assert_eq!(d["last_written"], 7);
    assert_eq!(doc["breaches"][0]["kpi"], "drift_ratio");
    assert_eq!(doc["breaches"][0]["setting"], "thresholds.max_drift_ratio");
    assert_eq!(doc["causes"]["target_changed"], 1);
}

#[test]
fn a_source_that_moved_is_named() {
    let (dir, _) = demo();
    apply(dir.path());
    set_source(dir.path(), "BLUE-S", "WH-EAST", 6); // TEE-BLUE-S: 4 + 6 = 10 written, now 12
    set_source(dir.path(), "HOT-1", "WH-EAST", 15); // HOT-1 was unchanged (7): never written
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 3);
    let d = drift_of(&doc, "TEE-BLUE-S", "loc-1");
    assert_eq!(
        (d["source"].as_i64(), d["target"].as_i64(), d["cause"].as_str()),
        (Some(12), Some(10), Some("source_moved"))
    );
    let d = drift_of(&doc, "HOT-1", "loc-1");
    assert_eq!(
        (d["source"].as_i64(), d["target"].as_i64(), d["cause"].as_str()),
        (Some(10), Some(7), Some("never_written"))
    );
}

#[test]
fn bundle_only_drift_is_counted_apart() {
    let (dir, _) = demo();
    apply(dir.path());
    set_qty(dir.path(), "KIT-1", "loc-1", 0);
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 3);
    assert_eq!((doc["drifted"].as_u64(), doc["bundle_drifted"].as_u64()), (Some(1), Some(1)));
    let d = drift_of(&doc, "KIT-1", "loc-1");
    assert_eq!(d["bundle"], true);
    assert_eq!(d["cause"], "target_changed");
    let (_, stdout, _) = run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml"]));
    assert!(stdout.contains("[bundle] changed outside stockshift (last written 3)"), "{stdout}");
    assert!(stdout.contains("1 drifted (1 bundle;"), "{stdout}");
}

#[test]
fn thresholds_tolerance_and_drift_ratio() {
    let (dir, plan) = demo();
    apply(dir.path());
    edit_plan(&plan, "max_abs_drift: 0", "max_abs_drift: 1");
    edit_plan(&plan, "max_drift_ratio: 0.0005", "max_drift_ratio: 0.1");
    // One unit off is within the tolerance: not drift.
    set_qty(dir.path(), "NEW-1", "loc-1", 6);
    let (code, doc, stderr) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["drifted"], 0);
    assert_eq!(doc["within_tolerance"], 1);
    assert_eq!(doc["max_abs_drift"], 1, "the largest difference is reported even within tolerance");
    // Beyond the tolerance it drifts, but 1 of 13 keys is under max_drift_ratio 0.1.
    set_qty(dir.path(), "NEW-1", "loc-1", 0);
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 0);
    assert_eq!(doc["drifted"], 1);
    assert_eq!(doc["kpis"]["drift_ratio"]["status"], "pass");
    // 2 of 13 keys is over it.
    set_qty(dir.path(), "TEE-BLUE-S", "loc-1", 0);
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 3);
    assert_eq!(doc["drifted"], 2);
    assert_eq!(doc["max_abs_drift"], 10);
    assert_eq!(doc["breaches"].as_array().unwrap().len(), 1);
    assert_eq!(doc["breaches"][0]["threshold"], 0.1);
}

#[test]
fn replay_backlog_and_webhook_failures_come_from_the_queue() {
    let (dir, plan) = demo();
    apply(dir.path());
    edit_plan(&plan, "max_replay_backlog: 1000", "max_replay_backlog: 1");
    queue_events(dir.path(), &[event("e1", "A", "WH-EAST", -2, 1), event("e2", "B", "WH-EAST", -1, 2)]);
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 3, "2 queued events are over max_replay_backlog 1");
    assert_eq!(doc["drifted"], 0);
    let backlog = &doc["kpis"]["replay_backlog"];
    assert_eq!((backlog["value"].as_u64(), backlog["status"].as_str()), (Some(2), Some("breach")));
    assert_eq!(doc["breaches"][0]["setting"], "thresholds.max_replay_backlog");
    let webhooks = &doc["kpis"]["webhook_failure_rate"];
    assert_eq!((webhooks["value"].as_f64(), webhooks["status"].as_str()), (Some(0.0), Some("pass")));
    assert!(doc["notes"][0].as_str().unwrap().contains("rejected deliveries"), "{doc:#}");
    // Failed events count against the webhook failure rate.
    let mut q = stockshift::events::queue::Queue::open(&dir.path().join(".stockshift/events.db")).unwrap();
    let e1 = q.events_after(0, 100).unwrap().into_iter().find(|e| e.event.id == "e1").unwrap();
    assert_eq!(q.mark(&[e1.seq], stockshift::events::queue::Status::Failed, Some("test")).unwrap(), 1);
    let (_, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(doc["kpis"]["webhook_failure_rate"]["value"], 0.5);
    assert_eq!(doc["kpis"]["webhook_failure_rate"]["status"], "breach");
    assert_eq!(doc["kpis"]["replay_backlog"]["value"], 1);
}

#[test]
fn fulfillment_failure_rate_is_unknown_unless_given() {
    let (dir, _) = demo();
    apply(dir.path());
    let (code, doc, _) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 0);
    let k = &doc["kpis"]["fulfillment_failure_rate"];
    assert_eq!((k["value"].is_null(), k["status"].as_str()), (true, Some("unknown")));
    assert!(doc["kpis"]["oversells"]["value"].is_null());
    let (code, doc, _) = reconcile_json(dir.path(), &["--fulfillment-failure-rate", "0.05"]);
    assert_eq!(code, 3, "0.05 is over max_fulfillment_failure_rate 0.02");
    assert_eq!(doc["breaches"][0]["kpi"], "fulfillment_failure_rate");
    let (code, _, stderr) =
        run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml", "--fulfillment-failure-rate", "5"]));
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn fix_corrects_drift_audited_and_leaves_bundles_and_queued_keys_alone() {
    let (dir, _) = demo();
    apply(dir.path());
    set_qty(dir.path(), "NEW-1", "loc-1", 4); // plain drift
    set_qty(dir.path(), "KIT-1", "loc-1", 0); // a bundle
    set_qty(dir.path(), "SAME-1", "loc-1", 19); // a key with a queued event
    queue_events(dir.path(), &[event("e1", "SAME-1", "WH-EAST", -1, 1)]);

    let (code, doc, stderr) = reconcile_json(dir.path(), &["--fix"]);
    assert_eq!(code, 3, "the drift found breaches the threshold: {stderr}");
    assert_eq!(doc["drifted"], 3);
    assert_eq!(drift_of(&doc, "SAME-1", "loc-1")["queued"], true);
    let fix = &doc["fix"];
    assert_eq!((fix["writes"].as_u64(), fix["applied"].as_u64()), (Some(1), Some(1)));
    assert_eq!((fix["skipped_bundles"].as_u64(), fix["skipped_queued"].as_u64()), (Some(1), Some(1)));
    assert!(stderr.contains("Fix complete: 1 applied, 0 already applied, 0 conflicts, 0 failed."), "{stderr}");
    assert!(stderr.contains("--include-bundles") && stderr.contains("--include-queued"), "{stderr}");
    assert_eq!(qty(dir.path(), "NEW-1", "loc-1"), Some(7));
    assert_eq!(qty(dir.path(), "KIT-1", "loc-1"), Some(0));
    assert_eq!(qty(dir.path(), "SAME-1", "loc-1"), Some(19));

    // Audited like every write, as an operation of kind fix.
    let (_, audit, _) =
        run(stockshift().current_dir(dir.path()).args(["audit", "demo.yaml", "--sku", "NEW-1", "--format", "json"]));
    let recs: Vec<Value> = serde_json::from_str(&audit).unwrap();
    let last = recs.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["before"].as_i64(), last["after"].as_i64(), last["outcome"].as_str()),
        (Some("fix"), Some(4), Some(7), Some("applied"))
    );
    assert_eq!(last["op_id"], fix["op_id"]);
    let (_, ops, _) =
        run(stockshift().current_dir(dir.path()).args(["state", "list", "demo.yaml", "--format", "json"]));
    let ops: Value = serde_json::from_str(&ops).unwrap();
    assert_eq!(ops["operations"][0]["kind"], "fix");
    assert_eq!(ops["operations"][0]["status"], "complete");

    // Now the corrected key is what stockshift last wrote; include the rest.
    let (code, stdout, stderr) = run(stockshift().current_dir(dir.path()).args([
        "reconcile",
        "demo.yaml",
        "--fix",
        "--include-bundles",
        "--include-queued",
    ]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.ends_with("Fix complete: 2 applied, 0 already applied, 0 conflicts, 0 failed.\n"), "{stdout}");
    assert_eq!(qty(dir.path(), "KIT-1", "loc-1"), Some(3));
    assert_eq!(qty(dir.path(), "SAME-1", "loc-1"), Some(20));
    let (code, doc, stderr) = reconcile_json(dir.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["drifted"], 0);

    // --include-* only go with --fix.
    let (code, _, _) = run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml", "--include-bundles"]));
    assert_eq!(code, 1);
}

#[test]
fn fix_writes_are_conditional_on_what_was_read() {
    let (dir, plan) = demo();
    apply(dir.path());
    set_qty(dir.path(), "NEW-1", "loc-1", 4);
    set_qty(dir.path(), "TEE-BLUE-S", "loc-1", 1);
    let plan = stockshift::config::check::check_file(&plan).unwrap();
    let opts = stockshift::ops::reconcile::ReconcileOptions::default();
    let report = stockshift::ops::reconcile::run(&plan, &opts).unwrap();
    assert_eq!(report.drifted, 2);
    // An order sells one more after the read: the fix must not overwrite it.
    set_qty(dir.path(), "NEW-1", "loc-1", 3);
    let mut state = stockshift::state::StateStore::open(&plan.state_dir(None)).unwrap();
    let fix_opts = stockshift::ops::reconcile::FixOptions {
        apply: stockshift::ops::apply::ApplyOptions::new(stockshift::state::Actor::current("test")),
        include_bundles: false,
        include_queued: false,
    };
    let f = stockshift::ops::reconcile::fix(&plan, &report, &mut state, &fix_opts).unwrap();
    assert_eq!((f.applied, f.conflicts), (1, 1));
    assert_eq!(qty(dir.path(), "NEW-1", "loc-1"), Some(3), "the sale is kept");
    assert_eq!(qty(dir.path(), "TEE-BLUE-S", "loc-1"), Some(10));
    let c = &f.conflict_list[0];
    assert_eq!((c.sku.as_str(), c.expected, c.found, c.wanted), ("NEW-1", Some(4), Some(3), 7));
    let audit = state.audit(Some("NEW-1"), f.op_id.as_deref()).unwrap();
    assert_eq!((audit[0].outcome.as_str(), audit[0].found), ("conflict", Some(3)));
}

#[test]
fn fix_respects_the_blast_radius_limits() {
    let (dir, plan) = demo();
    apply(dir.path());
    set_qty(dir.path(), "NEW-1", "loc-1", 4);
    set_qty(dir.path(), "TEE-BLUE-S", "loc-1", 1);
    edit_plan(&plan, "max_writes: 50000", "max_writes: 1");
    let (code, stdout, stderr) = run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml", "--fix"]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("2 corrective writes, over the limit of 1 (limits.max_writes)"), "{stderr}");
    assert!(stdout.contains("NEW-1"), "the report is still printed: {stdout}");
    assert_eq!(qty(dir.path(), "NEW-1", "loc-1"), Some(4), "nothing written");

    // Writes that take a key with stock to 0.
    edit_plan(&plan, "max_writes: 1", "max_writes: 50000");
    edit_plan(&plan, "max_zeroed: 100", "max_zeroed: 0");
    set_source(dir.path(), "SAME-1", "WH-EAST", 0);
    let (code, _, stderr) = run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml", "--fix"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("limits.max_zeroed"), "{stderr}");
    assert_eq!(qty(dir.path(), "SAME-1", "loc-1"), Some(20));

    let (code, stdout, stderr) =
        run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml", "--fix", "--allow-large"]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.ends_with("Fix complete: 3 applied, 0 already applied, 0 conflicts, 0 failed.\n"), "{stdout}");
    assert_eq!(qty(dir.path(), "SAME-1", "loc-1"), Some(0));
}

#[test]
fn json_is_one_document_with_the_spec_field_names() {
    let (dir, _) = demo();
    apply(dir.path());
    set_qty(dir.path(), "NEW-1", "loc-1", 4);
    let (code, stdout, _) =
        run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml", "--format", "json"]));
    assert_eq!(code, 3);
    let mut stream = serde_json::Deserializer::from_str(&stdout).into_iter::<Value>();
    let doc = stream.next().unwrap().unwrap();
    assert!(stream.next().is_none(), "exactly one document");
    let fields: Vec<&String> = doc.as_object().unwrap().keys().take(6).collect();
    assert_eq!(fields, ["keys", "drifted", "drift_ratio", "max_abs_drift", "breaches", "drift"]);
    let entry: Vec<&String> = doc["drift"][0].as_object().unwrap().keys().take(7).collect();
    assert_eq!(entry, ["sku", "location", "source", "target", "diff", "cause", "bundle"]);
    assert!(doc["drift_ratio"].as_f64().unwrap() > 0.0);
    assert!(doc["seconds_per_key"].as_f64().unwrap() > 0.0);
    for k in ["drift_ratio", "webhook_failure_rate", "replay_backlog", "fulfillment_failure_rate", "oversells"] {
        let kpi = &doc["kpis"][k];
        assert!(kpi.get("value").is_some() && kpi.get("threshold").is_some() && kpi.get("status").is_some(), "{k}");
    }
}

/// The golden scenario: after an apply, a key changed outside stockshift, a
/// bundle changed too, a source that moved, and a key stockshift never wrote.
fn golden_scenario() -> (tempfile::TempDir, PathBuf) {
    let (dir, plan) = demo();
    apply(dir.path());
    set_qty(dir.path(), "NEW-1", "loc-1", 4);
    set_qty(dir.path(), "KIT-1", "loc-1", 0);
    set_source(dir.path(), "BLUE-S", "WH-EAST", 6);
    set_source(dir.path(), "HOT-1", "WH-EAST", 15);
    (dir, plan)
}

#[test]
fn reconcile_in_every_format() {
    let (dir, _) = golden_scenario();
    for (format, ext) in [("human", "txt"), ("json", "json"), ("markdown", "md")] {
        let (code, stdout, stderr) =
            run(stockshift().current_dir(dir.path()).args(["reconcile", "demo.yaml", "--format", format]));
        assert_eq!(code, 3, "{stderr}");
        let steady = if format == "json" { steady_json(&stdout) } else { steady_text(&stdout) };
        golden(&format!("reconcile/mixed.{ext}"), &steady);
    }
}
