//! `apply`, resume after SIGKILL, conflicts, stale plans, locks, blast radius,
//! audit and rollback, against real SQLite targets and the real binary, with the
//! state in SQLite and in PostgreSQL (`tests/backend.rs`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::backend::{Backend, Ctx, both_backends};
use crate::util::{qty, run, target_rows};

fn set_qty(db: &Path, sku: &str, loc: &str, qty: i64) {
    let c = Connection::open(db).unwrap();
    assert_eq!(
        c.execute("UPDATE inventory SET qty = ?3 WHERE sku = ?1 AND location = ?2", params![sku, loc, qty]).unwrap(),
        1
    );
}

fn plan_out(cx: &Ctx, dir: &Path, out: &str) {
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir).args(["plan", "demo.yaml", "--out", out]));
    assert_eq!(code, 0, "{stderr}");
}

fn apply_saved_plan_then_plan_shows_no_changes_and_rerun_is_a_noop(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    plan_out(&cx, dir.path(), "d.plan.json");
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Apply complete: 9 applied, 0 already applied, 0 conflicts, 0 failed.\n");
    let (code, stdout, _) =
        run(cx.stockshift().current_dir(dir.path()).args(["plan", "demo.yaml", "--detailed-exitcode"]));
    assert_eq!(code, 0, "{stdout}");
    // Running the same apply again: a no-op that succeeds, everything already applied.
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "Apply complete: 0 applied, 9 already applied, 0 conflicts, 0 failed.\n");
    assert!(stderr.contains("already applied as operation"), "{stderr}");
    assert_eq!(qty(&dir.path().join("demo/target.db"), "EACH-1", "loc-1"), Some(36));
}

fn apply_plan_file_needs_approval_without_a_tty(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "demo.yaml"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("--auto-approve"), "{stderr}");
    assert_eq!(qty(&dir.path().join("demo/target.db"), "NEW-1", "loc-1"), Some(5), "nothing written");
    let (code, stdout, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("Plan: 3 to create, 6 to update, 4 unchanged."), "{stdout}");
    assert!(stdout.ends_with("Apply complete: 9 applied, 0 already applied, 0 conflicts, 0 failed.\n"), "{stdout}");
}

fn a_concurrent_change_is_a_conflict_and_is_never_overwritten(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    plan_out(&cx, dir.path(), "d.plan.json");
    let db = dir.path().join("demo/target.db");
    set_qty(&db, "NEW-1", "loc-1", 4); // an order sold one after the plan was made
    set_qty(&db, "TEE-BLUE-S", "loc-1", 10); // someone already made this exact change
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json"]));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(stdout, "Apply complete: 7 applied, 1 already applied, 1 conflicts, 0 failed.\n");
    assert!(stderr.contains("Conflict: (NEW-1, loc-1) expected 5, found 4; not set to 7."), "{stderr}");
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(4), "the sale is kept");
    // The conflict is in the audit log with what was found.
    let (_, json, _) =
        run(cx.stockshift().current_dir(dir.path()).args(["audit", "demo.yaml", "--sku", "NEW-1", "--format", "json"]));
    let recs: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(recs[0]["outcome"], "conflict");
    assert_eq!(recs[0]["found"], 4);
    // Re-running does not retry the conflict blindly.
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json"]));
    assert_eq!(code, 3);
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(4));
}

fn stale_plans_are_refused(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, plan) = cx.demo_copy();
    plan_out(&cx, dir.path(), "a.plan.json");
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "a.plan.json"]));
    assert_eq!(code, 0);
    plan_out(&cx, dir.path(), "b.plan.json");
    // Another operation (a rollback) happens after b was made.
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "b.plan.json"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("Saved plan is stale"), "{stderr}");
    assert!(stderr.contains("serial 1 -> 2"), "{stderr}");
    // The lock was released on that path: a fresh plan applies.
    plan_out(&cx, dir.path(), "c.plan.json");
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "c.plan.json"]));
    assert_eq!(code, 0, "{stderr}");

    // The plan file changed.
    plan_out(&cx, dir.path(), "d.plan.json");
    let text = std::fs::read_to_string(&plan).unwrap().replace("max_writes: 50000", "max_writes: 40000");
    std::fs::write(&plan, text).unwrap();
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("the plan file") && stderr.contains("changed"), "{stderr}");

    // An input file changed.
    plan_out(&cx, dir.path(), "e.plan.json");
    let csv = dir.path().join("demo/erp_snapshot.csv");
    let text = std::fs::read_to_string(&csv).unwrap().replace("SAME-1,WH-EAST,20", "SAME-1,WH-EAST,21");
    std::fs::write(&csv, text).unwrap();
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "e.plan.json"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("source file") && stderr.contains("erp_snapshot.csv"), "{stderr}");
}

fn blast_radius_limits(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, plan) = cx.demo_copy();
    let text = std::fs::read_to_string(&plan).unwrap().replace("max_writes: 50000", "max_writes: 5");
    std::fs::write(&plan, text).unwrap();
    plan_out(&cx, dir.path(), "d.plan.json");
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("9 writes, over the limit of 5 (limits.max_writes)"), "{stderr}");
    assert_eq!(qty(&dir.path().join("demo/target.db"), "NEW-1", "loc-1"), Some(5));
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json", "--allow-large"]));
    assert_eq!(code, 0);

    let (dir, plan) = cx.demo_copy();
    let text = std::fs::read_to_string(&plan).unwrap().replace("max_zeroed: 100", "max_zeroed: 0");
    std::fs::write(&plan, text).unwrap();
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("1 writes that take a key with stock to 0"), "{stderr}");
}

fn a_held_lock_is_reported_waited_for_and_force_unlocked(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    plan_out(&cx, dir.path(), "d.plan.json");
    let state_dir = dir.path().join(".stockshift");
    let store = cx.store(&state_dir);
    let me = stockshift::state::Actor::current("test holder");
    let guard = store.lock("apply", &me, Duration::ZERO).unwrap();
    let id = guard.info.id.clone();
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "d.plan.json"]));
    assert_eq!(code, 1);
    for part in ["the state is locked", &id, "Operation: apply", "PID:", "Created:", "force-unlock"] {
        assert!(stderr.contains(part), "missing {part:?} in {stderr}");
    }
    // --lock-timeout waits for the holder to finish.
    let waiting = cx
        .stockshift()
        .current_dir(dir.path())
        .args(["apply", "d.plan.json", "--lock-timeout", "10s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    drop(guard);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "the waiting apply ran once the lock was released");
    // force-unlock releases a lock by id.
    let g = store.lock("apply", &me, Duration::ZERO).unwrap();
    let id = g.info.id.clone();
    std::mem::forget(g);
    let (code, _, stderr) =
        run(cx.stockshift().current_dir(dir.path()).args(["force-unlock", "wrong-id", "demo.yaml"]));
    assert_eq!(code, 1, "{stderr}");
    let (code, stdout, _) = run(cx.stockshift().current_dir(dir.path()).args(["force-unlock", &id, "demo.yaml"]));
    assert_eq!(code, 0);
    assert!(stdout.contains(&id));
}

fn audit_and_state_list_record_every_write(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    let (_, json, _) = run(cx.stockshift().current_dir(dir.path()).args(["audit", "demo.yaml", "--format", "json"]));
    let recs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(recs.len(), 9);
    let kit = recs.iter().find(|r| r["sku"] == "KIT-1" && r["location"] == "loc-1").unwrap();
    assert_eq!(
        (kit["before"].as_i64(), kit["after"].as_i64(), kit["outcome"].as_str()),
        (Some(1), Some(3), Some("applied"))
    );
    assert_eq!(kit["kind"], "apply");
    assert!(kit["command"].as_str().unwrap().contains("apply demo.yaml"));
    let (_, list, _) =
        run(cx.stockshift().current_dir(dir.path()).args(["state", "list", "demo.yaml", "--format", "json"]));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["serial"], 1);
    let op = &list["operations"][0];
    assert_eq!((op["applied"].as_u64(), op["status"].as_str()), (Some(9), Some("complete")));
    let id = op["id"].as_str().unwrap();
    let (code, shown, _) = run(cx.stockshift().current_dir(dir.path()).args(["state", "show", &id[..8], "demo.yaml"]));
    assert_eq!(code, 0);
    assert!(shown.contains(id));
}

fn rollback_restores_and_keeps_sales_made_since(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let db = dir.path().join("demo/target.db");
    let before = target_rows(&db);
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    set_qty(&db, "NEW-1", "loc-1", 6); // one sold since the apply (7 -> 6)
    let (code, json, _) =
        run(cx.stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--format", "json"]));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let new1 = doc["changes"].as_array().unwrap().iter().find(|c| c["sku"] == "NEW-1").unwrap();
    assert_eq!((new1["before"].as_i64(), new1["after"].as_i64()), (Some(6), Some(4)), "5 + (6 - 7)");
    assert!(new1["note"].as_str().unwrap().contains("keeps changes since"));
    // Saved, then applied like any plan.
    let (code, _, _) =
        run(cx.stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--out", "rb.plan.json"]));
    assert_eq!(code, 0);
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "rb.plan.json"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("Rollback complete: 8 applied"), "{stdout}");
    let mut expected = before.clone();
    for r in &mut expected {
        if r.0 == "NEW-1" {
            r.2 = 4;
        }
    }
    // Keys the apply created remain, at 0 (the sale kept on NEW-1).
    let now: Vec<_> = target_rows(&db)
        .into_iter()
        .filter(|r| !(r.0 == "EACH-1" || (r.0 == "A" && r.1 == "loc-2") || (r.0 == "KIT-1" && r.1 == "loc-2")))
        .collect();
    assert_eq!(now, expected);
    assert_eq!(qty(&db, "EACH-1", "loc-1"), Some(0));
    // Rolling back twice is a no-op.
    let (code, _, stderr) =
        run(cx.stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    assert!(stderr.contains("already rolled back"), "{stderr}");
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(4));
}

/// A plan with many writes in small batches, so a kill can land anywhere.
fn large_apply(cx: &Ctx, dir: &Path, keys: usize) {
    let mut src = String::from("sku,location,qty\n");
    for i in 0..keys {
        src.push_str(&format!("SKU-{i:05},W,{}\n", i % 97 + 1));
    }
    std::fs::write(dir.join("s.csv"), src).unwrap();
    let c = Connection::open(dir.join("t.db")).unwrap();
    c.execute_batch("CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));").unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in (0..keys).step_by(2) {
        tx.execute("INSERT INTO inventory (sku, location, qty) VALUES (?1, 'W', 0)", [format!("SKU-{i:05}")]).unwrap();
    }
    tx.commit().unwrap();
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "version: 1\nname: big\nsource: {{ provider: csv, path: s.csv }}\ntarget: {{ provider: sqlite, path: t.db, batch_size: 25 }}\nlimits: {{ max_writes: 1000000 }}\n{}",
            cx.state_yaml()
        ),
    )
    .unwrap();
}

fn a_killed_apply_resumes_with_nothing_lost_or_doubled(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let dir = tempfile::tempdir().unwrap();
    let keys = 4000;
    large_apply(&cx, dir.path(), keys);
    let (code, _, stderr) =
        run(cx.stockshift().current_dir(dir.path()).args(["plan", "p.yaml", "--out", "big.plan.json"]));
    assert_eq!(code, 0, "{stderr}");
    // Kill the apply at many different points, resuming each time.
    let mut kills = 0;
    let mut finished = false;
    for round in 0..40u64 {
        let mut child = cx
            .stockshift()
            .current_dir(dir.path())
            .args(["apply", "big.plan.json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // 3 ms .. ~120 ms: early kills land in planning/locking, later ones mid-batch.
        std::thread::sleep(Duration::from_millis(3 + (round * 37) % 120));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "apply failed on round {round}: {status}");
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    assert!(kills >= 3, "the apply should have been killed several times (killed {kills})");
    let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "big.plan.json"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let _ = finished;
    // The target equals the plan.
    let rows = target_rows(&dir.path().join("t.db"));
    assert_eq!(rows.len(), keys);
    for (i, (sku, _, q)) in rows.iter().enumerate() {
        assert_eq!(sku, &format!("SKU-{i:05}"));
        assert_eq!(*q, (i % 97 + 1) as i64, "{sku}");
    }
    // One operation, one audit row per write, none doubled, none in conflict.
    let store = cx.store(&dir.path().join(".stockshift"));
    let ops = store.operations().unwrap();
    assert_eq!(ops.len(), 1, "resuming never starts another operation");
    let c = store.counts(&ops[0].id).unwrap();
    assert_eq!(c.applied + c.already_applied, keys as u64);
    assert_eq!((c.conflicts, c.failed), (0, 0));
    assert_eq!(store.audit(None, None).unwrap().len(), keys);
    assert!(store.lock_info().unwrap().is_none(), "the lock is released");
}

/// Kills the apply started with `first`, then applies a fresh plan of the rest.
fn killed_then_replanned(cx: &Ctx, first: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let keys = 4000;
    large_apply(cx, dir.path(), keys);
    let (code, _, stderr) =
        run(cx.stockshift().current_dir(dir.path()).args(["plan", "p.yaml", "--out", "big.plan.json"]));
    assert_eq!(code, 0, "{stderr}");
    let mut child = cx
        .stockshift()
        .current_dir(dir.path())
        .args(first)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some batches have landed.
    let db = dir.path().join("t.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = Connection::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM inventory WHERE qty > 0", [], |r| r.get(0))
            .unwrap_or(0);
        if n > 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the apply never wrote");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A new plan of the rest: the killed operation is closed, and every write that
    // landed (including the batch in flight) is in its audit.
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "p.yaml", "--auto-approve"]));
    assert_eq!(code, 0, "{stderr}");
    let store = cx.store(&dir.path().join(".stockshift"));
    let ops = store.operations().unwrap();
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[1].status, "interrupted");
    let mut written: Vec<(String, String)> = store
        .audit(None, None)
        .unwrap()
        .into_iter()
        .filter(|a| a.outcome == "applied")
        .map(|a| (a.sku, a.location))
        .collect();
    let total = written.len();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), total, "no key written twice");
    assert_eq!(total, keys, "every write is in the audit log exactly once");
    // Small batches really are small: one intent per 25 writes.
    let intents = cx.count(&dir.path().join(".stockshift"), "intents");
    assert!(intents >= (keys / 25) as i64, "{intents} intents");
}

fn a_killed_plan_file_apply_is_accounted_for_by_the_next_one(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    // Its writes are journaled with each intent.
    killed_then_replanned(&cx, &["apply", "p.yaml", "--auto-approve"]);
}

fn a_killed_saved_plan_apply_is_accounted_for_by_the_next_one(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    // Its writes are read back from the saved plan file.
    killed_then_replanned(&cx, &["apply", "big.plan.json"]);
}

fn a_rollback_with_conflicts_can_be_finished_later_without_undoing_twice(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let (dir, _) = cx.demo_copy();
    let db = dir.path().join("demo/target.db");
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    // The rollback plan expects NEW-1 at 7; it moves to 6 between plan and apply.
    let (code, _, _) =
        run(cx.stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--out", "rb.plan.json"]));
    assert_eq!(code, 0);
    set_qty(&db, "NEW-1", "loc-1", 6);
    let (code, stdout, _) = run(cx.stockshift().current_dir(dir.path()).args(["apply", "rb.plan.json"]));
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("1 conflicts"), "{stdout}");
    // The apply is not marked rolled back: a second rollback offers only NEW-1, keeping the sale.
    let (code, json, _) =
        run(cx.stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--format", "json"]));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let changes = doc["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{json}");
    assert_eq!((changes[0]["sku"].as_str(), changes[0]["after"].as_i64()), (Some("NEW-1"), Some(4)));
    let (code, _, _) = run(cx.stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(4));
    assert_eq!(qty(&db, "KIT-1", "loc-1"), Some(1), "restored once, not twice");
}

/// A holder killed with SIGKILL leaves its lock record behind; on PostgreSQL its
/// advisory lock went with its session, on SQLite its pid is gone: the next apply
/// takes the lock over (and says so) instead of waiting for it.
fn a_sigkilled_holders_lock_is_taken_over(b: Backend) {
    let Some(cx) = Ctx::new(b) else { return };
    let dir = tempfile::tempdir().unwrap();
    large_apply(&cx, dir.path(), 4000);
    let (code, _, stderr) =
        run(cx.stockshift().current_dir(dir.path()).args(["plan", "p.yaml", "--out", "big.plan.json"]));
    assert_eq!(code, 0, "{stderr}");
    let mut child = cx
        .stockshift()
        .current_dir(dir.path())
        .args(["apply", "big.plan.json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = dir.path().join("t.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM inventory WHERE qty > 0", [], |r| r.get::<_, i64>(0))
        .unwrap_or(0)
        < 100
    {
        assert!(std::time::Instant::now() < deadline, "the apply never wrote");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id();
    child.kill().unwrap(); // SIGKILL: no guard runs
    child.wait().unwrap();
    let state_dir = dir.path().join(".stockshift");
    let left = cx.store(&state_dir).lock_info().unwrap().expect("the killed holder's record is left");
    assert_eq!(left.pid, pid);
    let (code, stdout, stderr) =
        run(cx.stockshift().current_dir(dir.path()).args(["apply", "big.plan.json", "--lock-timeout", "20s"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains(&format!("Took over the lock {} of process {pid}", left.id)), "{stderr}");
    assert!(stderr.contains("Resumed interrupted operation"), "{stderr}");
    assert!(cx.store(&state_dir).lock_info().unwrap().is_none(), "released at the end");
}

both_backends!(
    apply_saved_plan_then_plan_shows_no_changes_and_rerun_is_a_noop,
    apply_plan_file_needs_approval_without_a_tty,
    a_concurrent_change_is_a_conflict_and_is_never_overwritten,
    stale_plans_are_refused,
    blast_radius_limits,
    a_held_lock_is_reported_waited_for_and_force_unlocked,
    audit_and_state_list_record_every_write,
    rollback_restores_and_keeps_sales_made_since,
    a_killed_apply_resumes_with_nothing_lost_or_doubled,
    a_killed_plan_file_apply_is_accounted_for_by_the_next_one,
    a_killed_saved_plan_apply_is_accounted_for_by_the_next_one,
    a_rollback_with_conflicts_can_be_finished_later_without_undoing_twice,
    a_sigkilled_holders_lock_is_taken_over,
);
