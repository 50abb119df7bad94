//! `simulate`: the playbook's reference case, each fault type, the same seed
//! giving the same result, exit 3 on a breach, and the HTML report (rendered in
//! headless Chromium when it is installed).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{run, stockshift};

/// Runs `simulate ARGS --format json`; returns (exit code, the JSON document, stderr).
fn simulate(args: &[&str]) -> (i32, Value, String) {
    let (code, out, err) = run(stockshift().arg("simulate").args(args).args(["--format", "json"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{out}\n{err}"));
    (code, v, err)
}

/// A small case: 400 SKUs, 8 hours at 3,000 orders a day (a few hundred events).
const SMALL: [&str; 8] = ["--skus", "400", "--orders-per-day", "3000", "--hours", "8", "--seed", "5"];

fn small(faults: &str) -> (i32, Value, String) {
    let mut args = SMALL.to_vec();
    args.extend(["--faults", faults]);
    simulate(&args)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The ledger found the target right: nothing drifted, lost or doubled.
fn assert_clean(v: &Value, err: &str) {
    let ctx = format!("{v:#}\n{err}");
    assert_eq!(v["verdict"], "pass", "{ctx}");
    assert_eq!(v["drift_ratio"].as_f64(), Some(0.0), "{ctx}");
    assert_eq!(n(&v["unresolved_drift_units"]), 0, "{ctx}");
    assert_eq!(n(&v["events_lost"]), 0, "{ctx}");
    assert_eq!(n(&v["events_applied_twice"]), 0, "{ctx}");
    assert_eq!(n(&v["unforced_oversells"]), 0, "{ctx}");
    assert_eq!(n(&v["backlog_at_end"]), 0, "{ctx}");
    assert_eq!(v["cutover"], "pass (unfrozen)", "{ctx}");
}

#[test]
fn the_playbooks_reference_case_has_no_unresolved_drift() {
    // 10,000 SKUs, 500 orders/day, 1,500 at peak, 48 hours with duplicates and reordering.
    let started = Instant::now();
    let (code, v, err) = simulate(&[
        "--skus",
        "10000",
        "--orders-per-day",
        "500",
        "--peak-per-day",
        "1500",
        "--hours",
        "48",
        "--faults",
        "dup=0.1,reorder=0.1",
        "--seed",
        "42",
    ]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    // SPEC section 6's fields, in its order, then more.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).take(10).collect();
    assert_eq!(
        keys,
        [
            "skus",
            "events",
            "faults",
            "drift_ratio",
            "unresolved_drift_units",
            "oversells",
            "events_lost",
            "events_applied_twice",
            "wall_seconds",
            "verdict"
        ]
    );
    assert_eq!(n(&v["skus"]), 10_000);
    assert_clean(&v, &err);
    // The playbook accepts up to 0.05% of SKUs drifting; the ledger finds none.
    assert!(v["drift_ratio"].as_f64().unwrap() <= 0.0005);
    assert!(n(&v["faults"]["dup"]) > 100 && n(&v["faults"]["reorder"]) > 100, "{v:#}");
    assert_eq!(n(&v["events_by_result"]["duplicate_deliveries_dropped"]), n(&v["faults"]["dup"]));
    assert!(n(&v["orders"]) > 800 && n(&v["events"]) > 2000, "{v:#}");
    assert_eq!(n(&v["sync_rounds"]), 48);
    assert!(n(&v["source_keys"]) > 10_000 && n(&v["target_keys"]) > 10_000, "{v:#}");
    // Every event applied exactly once.
    let applied = n(&v["events_by_result"]["applied"]) + v["events_by_result"]["superseded"].as_u64().unwrap_or(0);
    assert_eq!(applied, n(&v["events"]), "{v:#}");
    eprintln!(
        "reference case: {} events, {:.2}s inside, {:.2}s for the test (debug build)",
        v["events"],
        v["wall_seconds"].as_f64().unwrap(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn duplicated_deliveries_are_dropped_and_counted() {
    let (code, v, err) = small("dup=0.3");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert!(n(&v["faults"]["dup"]) > 50, "{v:#}");
    assert_eq!(n(&v["deliveries"]), n(&v["events"]) + n(&v["faults"]["dup"]));
    assert_eq!(n(&v["events_by_result"]["duplicate_deliveries_dropped"]), n(&v["faults"]["dup"]));
}

#[test]
fn reordered_deliveries_change_nothing() {
    let (code, v, err) = small("reorder=0.3");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert!(n(&v["faults"]["reorder"]) > 50, "{v:#}");
}

#[test]
fn late_deliveries_are_never_lost() {
    let (code, v, err) = small("late=0.2");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert!(n(&v["faults"]["late"]) > 30, "{v:#}");
}

#[test]
fn stale_absolute_sets_do_not_roll_stock_back() {
    let (code, v, err) = small("stale_set=0.2");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert!(n(&v["faults"]["stale_set"]) > 30, "{v:#}");
    assert_eq!(v["events_by_kind"]["stale_set"], v["faults"]["stale_set"]);
}

#[test]
fn throttled_writes_are_retried() {
    let (code, v, err) = small("http429=0.3");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert!(n(&v["faults"]["http429"]) > 0, "{v:#}");
    assert_eq!(n(&v["writes"]["failed"]), 0);
}

#[test]
fn failing_writes_are_retried_and_lost_replies_come_back_already_applied() {
    let (code, v, err) = small("http5xx=0.2");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert!(n(&v["faults"]["http5xx"]) > 20, "{v:#}");
    assert!(n(&v["faults"]["http5xx_landed"]) > 0, "{v:#}");
    // A write that landed although its reply said 503 is "already applied" on the retry.
    assert!(n(&v["writes"]["already_applied"]) > 0, "{v:#}");
    assert_eq!(n(&v["writes"]["failed"]), 0);
}

#[test]
fn a_crashed_apply_is_resumed() {
    let (code, v, err) = small("crash=apply");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert_eq!(n(&v["faults"]["crash"]), 1, "{v:#}");
    assert_eq!(n(&v["faults"]["resumed"]), 1, "{v:#}");
    // The writes that landed before the crash are found on resume, not written twice.
    assert!(n(&v["writes"]["already_applied"]) > 0, "{v:#}");
    assert!(err.contains("[FAIL] 4. plan and apply") && err.contains("simulated crash"), "{err}");
}

#[test]
fn a_crashed_replay_is_resumed() {
    let (code, v, err) = small("crash=replay");
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_clean(&v, &err);
    assert_eq!(n(&v["faults"]["crash"]), 1, "{v:#}");
    assert_eq!(n(&v["faults"]["resumed"]), 1, "{v:#}");
    assert!(err.contains("crash during replay"), "{err}");
}

fn without_timing(mut doc: Value) -> Value {
    let o = doc.as_object_mut().unwrap();
    o.remove("wall_seconds");
    o.remove("timing");
    if let Some(s) = o.get_mut("summary").and_then(Value::as_object_mut) {
        s.remove("wall_seconds");
    }
    doc
}

#[test]
fn the_same_seed_gives_the_same_result() {
    let all = "dup=0.1,reorder=0.1,late=0.05,stale_set=0.05,http429=0.1,http5xx=0.05,crash=apply+replay";
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (i, seed) in ["7", "7", "8"].into_iter().enumerate() {
        let report = dir.path().join(format!("r{i}"));
        let (code, v, err) = simulate(&[
            "--skus",
            "300",
            "--orders-per-day",
            "3000",
            "--hours",
            "6",
            "--seed",
            seed,
            "--faults",
            all,
            "--report",
            report.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{v:#}\n{err}");
        assert_clean(&v, &err);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
        assert_eq!(doc["summary"], v, "report.json holds the printed KPIs");
        runs.push((without_timing(v), without_timing(doc)));
    }
    assert_eq!(runs[0].0, runs[1].0, "the same seed, the same KPIs");
    assert_eq!(runs[0].1, runs[1].1, "the same seed, the same report (but for timings)");
    assert_ne!(runs[0].0, runs[2].0, "another seed, another run");
    for key in ["dup", "reorder", "late", "stale_set", "http429", "http5xx", "crash"] {
        assert!(n(&runs[0].0["faults"][key]) > 0, "{key} not injected: {:#}", runs[0].0);
    }
}

#[test]
fn a_fault_rate_that_breaks_a_threshold_exits_3() {
    // Every write fails: the cutover cannot apply and the ledger sees the drift.
    let mut args = SMALL.to_vec();
    args.extend(["--faults", "http5xx=1"]);
    let (code, out, err) = run(stockshift().arg("simulate").args(&args));
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("Verdict: FAIL"), "{out}");
    assert!(out.contains("the cutover did not pass"), "{out}");
    let (code, v, _) = small("http5xx=1");
    assert_eq!(code, 3);
    assert_eq!(v["verdict"], "fail");
    assert!(v["unresolved_drift_units"].as_u64().unwrap() > 0, "{v:#}");
    assert!(v["breaches"].as_array().unwrap().len() >= 2, "{v:#}");
}

#[test]
fn bad_flags_are_usage_errors() {
    for (args, says) in [
        (vec!["--faults", "bogus=1"], "unknown fault `bogus`"),
        (vec!["--faults", "dup=2"], "from 0 to 1"),
        (vec!["--faults", "crash=plan"], "crash=apply or crash=replay"),
        (vec!["--orders-per-day", "100", "--peak-per-day", "50"], "--peak-per-day"),
        (vec!["--skus", "0"], "--skus"),
    ] {
        let (code, out, err) = run(stockshift().arg("simulate").args(&args));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
    }
}

#[test]
fn the_human_summary_reads_as_a_checklist() {
    let mut args = SMALL.to_vec();
    args.extend(["--faults", "dup=0.1,reorder=0.1", "--dir"]);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let (code, out, err) = run(stockshift().arg("simulate").args(&args).arg(&ws));
    assert_eq!(code, 0, "{out}\n{err}");
    for line in ["Ledger check", "drift ratio", "events lost", "events applied twice", "Verdict: pass"] {
        assert!(out.contains(line), "missing {line}:\n{out}");
    }
    for step in ["1. preflight", "4. plan and apply", "5. replay", "7. decision", "Continuous sync"] {
        assert!(err.contains(step), "missing {step}:\n{err}");
    }
    // --dir keeps the workspace: a plan the other commands can use, and the traffic as recorded events.
    assert!(ws.join("plan.yaml").is_file() && ws.join("events.jsonl").is_file());
    let (code, out, err) = run(stockshift().arg("validate").arg(ws.join("plan.yaml")));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_report_is_a_self_contained_page() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let (code, v, err) = simulate(&[
        "--skus",
        "500",
        "--orders-per-day",
        "3000",
        "--hours",
        "12",
        "--faults",
        "dup=0.1,reorder=0.1,late=0.05,crash=apply",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{v:#}\n{err}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..100]);
    assert!(html.contains(r#"<meta charset="utf-8">"#));
    assert!(html.trim_end().ends_with("</html>"));
    // Nothing is fetched: no URL, no script, no external resource.
    for bad in ["http://", "https://", "<script", "src=", "url(", "@import", "<link"] {
        assert!(!html.contains(bad), "the page contains {bad}");
    }
    // The four charts, as inline SVG, each closed.
    assert_eq!(html.matches("<svg").count(), 4, "{html}");
    assert_eq!(html.matches("</svg>").count(), 4);
    for title in ["Replay backlog per round", "Drifted target keys", "Events by result", "Step timeline"] {
        assert!(html.contains(title), "missing chart {title}");
    }
    // The numbers.
    assert!(html.contains(&format!("{} events", v["events"])), "events count missing");
    assert!(html.contains(&format!("{} deliveries", v["deliveries"])), "deliveries missing");
    assert!(html.contains(">PASS<"));
    assert!(html.contains("crash:"), "the crash is on the timeline");
    // Tags balance (a cheap well-formedness check).
    for tag in ["table", "tr", "svg", "div", "ul", "details", "h2"] {
        let open = html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        assert_eq!(open, html.matches(&format!("</{tag}>")).count(), "<{tag}> does not balance");
    }
    render_in_chromium(&report.join("report.html"), dir.path());
}

/// Renders the page in headless Chromium when it is installed (CI may not have it).
fn render_in_chromium(page: &Path, tmp: &Path) {
    let Some(chromium) = crate::util::chromium() else {
        eprintln!("note: Chromium is not installed (/usr/bin/chromium); the report was not rendered in a browser");
        return;
    };
    let shot = tmp.join("shot.png");
    let profile = tmp.join("chromium-profile");
    let mut child = crate::util::headless_chromium(chromium, &profile, 1440, 2400)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not render the report within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium failed: {status}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a blank screenshot? {} bytes", png.len());
}
