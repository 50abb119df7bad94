//! `cutover` and `demo`: a cutover that passes, one that rolls back, one that
//! stops frozen, and one killed mid-way and resumed, with the state in SQLite
//! and in PostgreSQL (`tests/backend.rs`; `demo` writes its own plan: SQLite).

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::backend::{Backend, Ctx, both_backends};
use crate::util::{qty, run, stockshift, target_rows};

fn queued(dir: &Path) -> i64 {
    let c = Connection::open(dir.join(".stockshift/events.db")).unwrap();
    c.query_row("SELECT count(*) FROM events WHERE status = 'queued'", [], |r| r.get(0)).unwrap()
}

fn frozen(cx: &Ctx, dir: &Path) -> bool {
    let (_, out, _) = run(cx.stockshift().current_dir(dir).args(["freeze", "status", "demo.yaml"]));
    out.starts_with("Frozen: yes")
}

fn a_cutover_that_passes_applies_replays_and_unfreezes(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args([
        "cutover",
        "demo.yaml",
        "--auto-approve",
        "--events",
        "demo/events.jsonl",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    for step in
        ["1. preflight", "2. freeze on", "3. snapshot", "4. plan and apply", "5. replay", "6. verdict", "7. decision"]
    {
        assert!(stdout.contains(&format!("[ok]   {step}")), "missing {step}:\n{stdout}");
    }
    assert!(stdout.contains("passed: the freeze is off"), "{stdout}");
    assert!(!frozen(&cx, dir.path()));
    assert_eq!(queued(dir.path()), 0);
    // The target equals the snapshot's mapping with the events applied: OLD-1 sold 2.
    let db = dir.path().join("demo/target.db");
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(5));
    // reconcile against the (unchanged) source file sees the orders as drift, as it should.
    let report = std::fs::read_dir(dir.path().join(".stockshift/cutovers")).unwrap().next().unwrap().unwrap().path();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["verdict"], "pass");
    assert_eq!(json["steps"].as_array().unwrap().len(), 7);
    assert!(std::fs::read_to_string(report.join("report.md")).unwrap().contains("**Verdict: pass**"));
}

fn a_breached_threshold_rolls_back_keeps_the_freeze_and_requeues_the_events(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let db = dir.path().join("demo/target.db");
    let before = target_rows(&db);
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args([
        "cutover",
        "demo.yaml",
        "--auto-approve",
        "--rollback-on-failure",
        "--events",
        "demo/events-breach.jsonl",
    ]));
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.contains("[FAIL] 6. verdict"), "{stdout}");
    assert!(stdout.contains("webhook failure rate 0.2500"), "{stdout}");
    assert!(stdout.contains("rolled back, still frozen"), "{stdout}");
    assert!(frozen(&cx, dir.path()));
    // Every write the cutover made is undone; keys it created stay, at 0.
    let after: Vec<_> =
        target_rows(&db).into_iter().filter(|r| r.2 != 0 || before.iter().any(|b| b.0 == r.0 && b.1 == r.1)).collect();
    assert_eq!(after, before);
    // The replayed events are back in the queue for the next attempt (plus the one that failed).
    assert_eq!(queued(dir.path()), 4);
}

fn without_rollback_on_failure_it_stops_frozen_and_prints_the_rollback_command(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let db = dir.path().join("demo/target.db");
    let before = target_rows(&db);
    let (code, stdout, _) = run(cx.stockshift().current_dir(dir.path()).args([
        "cutover",
        "demo.yaml",
        "--auto-approve",
        "--events",
        "demo/events-breach.jsonl",
    ]));
    assert_eq!(code, 3);
    assert!(frozen(&cx, dir.path()));
    let cmd = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("stockshift rollback"))
        .expect("the rollback command")
        .trim();
    let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    let (code, out, stderr) = run(cx.stockshift().current_dir(dir.path()).args(&args));
    assert_eq!(code, 0, "{out}{stderr}");
    assert!(out.contains("Rollback of cutover"), "{out}");
    let after: Vec<_> =
        target_rows(&db).into_iter().filter(|r| r.2 != 0 || before.iter().any(|b| b.0 == r.0 && b.1 == r.1)).collect();
    assert_eq!(after, before);
    // Rolling back again is a no-op.
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(&args));
    assert_eq!(code, 0);
    assert!(stderr.contains("nothing to do"), "{stderr}");
}

fn a_killed_cutover_resumes_at_its_step(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, plan) = cx.demo_copy();
    // A larger source and one write per transaction, so the kill lands mid-apply.
    let mut src = std::fs::read_to_string(dir.path().join("demo/erp_snapshot.csv")).unwrap();
    for i in 0..3000 {
        src.push_str(&format!("BULK-{i:05},WH-EAST,{}\n", i % 50 + 1));
    }
    std::fs::write(dir.path().join("demo/erp_snapshot.csv"), src).unwrap();
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("path: demo/target.db", "path: demo/target.db\n  batch_size: 1");
    std::fs::write(&plan, text).unwrap();
    let mut child = cx
        .stockshift()
        .current_dir(dir.path())
        .args(["cutover", "demo.yaml", "--auto-approve", "--events", "demo/events.jsonl"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the apply has written some keys, then kill it.
    let db = dir.path().join("demo/target.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = Connection::open(&db).unwrap();
        let n: i64 =
            c.query_row("SELECT count(*) FROM inventory WHERE sku LIKE 'BULK-%'", [], |r| r.get(0)).unwrap_or(0);
        if n > 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the apply never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args([
        "cutover",
        "demo.yaml",
        "--auto-approve",
        "--events",
        "demo/events.jsonl",
    ]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("(done before the restart)"), "{stdout}");
    assert!(stdout.contains("passed"), "{stdout}");
    // One cutover, one apply operation (resumed, not restarted), every key right.
    let state = cx.store(&dir.path().join(".stockshift"));
    let applies =
        state.operations().unwrap().into_iter().filter(|o| o.kind == stockshift::state::OpKind::Apply).count();
    assert_eq!(applies, 1);
    for i in (0..3000).step_by(97) {
        assert_eq!(qty(&db, &format!("BULK-{i:05}"), "loc-1"), Some((i % 50 + 1) as i64));
    }
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(5));
}

#[test]
fn the_demo_command_runs_in_a_fresh_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(stockshift().args(["demo", "--dir"]).arg(dir.path().join("ok")));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("passed: the freeze is off"), "{stdout}");
    let (code, stdout, _) = run(stockshift().args(["demo", "--breach", "--dir"]).arg(dir.path().join("bad")));
    assert_eq!(code, 3);
    assert!(stdout.contains("rolled back"), "{stdout}");
    // It never reuses a folder that already holds a demo.
    let (code, _, stderr) = run(stockshift().args(["demo", "--dir"]).arg(dir.path().join("ok")));
    assert_eq!(code, 1);
    assert!(stderr.contains("already holds a demo"), "{stderr}");
}

fn a_fulfilment_failure_rate_over_its_threshold_fails_the_cutover(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args([
        "cutover",
        "demo.yaml",
        "--auto-approve",
        "--fulfillment-failure-rate",
        "0.05",
        "--format",
        "json",
    ]));
    assert_eq!(code, 3, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["decision"], "stopped_frozen");
    let kpi = report["kpis"].as_array().unwrap().iter().find(|k| k["name"] == "fulfillment_failure_rate").unwrap();
    assert_eq!((kpi["status"].as_str(), kpi["threshold"].as_f64()), (Some("breach"), Some(0.02)));
}

both_backends!(
    a_cutover_that_passes_applies_replays_and_unfreezes,
    a_breached_threshold_rolls_back_keeps_the_freeze_and_requeues_the_events,
    without_rollback_on_failure_it_stops_frozen_and_prints_the_rollback_command,
    a_killed_cutover_resumes_at_its_step,
    a_fulfilment_failure_rate_over_its_threshold_fails_the_cutover,
);
