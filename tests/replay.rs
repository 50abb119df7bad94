//! `replay`: events applied through the mapping, order-independence, late and
//! stale events, oversells, and exactly-once across a killed replay.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::util::{demo_copy, qty, run, stockshift, target_rows};

fn event(id: &str, sku: &str, loc: &str, change: &str, sequence: i64) -> String {
    format!(
        "{{\"id\":\"{id}\",\"source\":\"erp\",\"sku\":\"{sku}\",\"location\":\"{loc}\",{change},\"sequence\":{sequence},\"occurred_at\":\"2026-11-27T10:00:00Z\"}}"
    )
}

fn apply(dir: &Path) {
    let (code, _, stderr) = run(stockshift().current_dir(dir).args(["apply", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0, "{stderr}");
}

fn replay_file(dir: &Path, lines: &[String]) -> (i32, String, String) {
    std::fs::write(dir.join("events.jsonl"), lines.join("\n") + "\n").unwrap();
    run(stockshift().current_dir(dir).args(["replay", "demo.yaml", "--from", "events.jsonl"]))
}

#[test]
fn events_move_source_quantities_and_every_dependent_key_is_recomputed() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let events = vec![
        event("e1", "OLD-1", "WH-EAST", "\"delta\":-2", 1), // renamed: NEW-1 7 -> 5
        event("e2", "BLUE-S", "WH-EAST", "\"delta\":-1", 2), // merged: TEE-BLUE-S 10 -> 9
        event("e3", "A", "WH-EAST", "\"delta\":-4", 3),     // component: A 9 -> 5, KIT-1 3 -> 2
        event("e4", "HOT-1", "WH-EAST", "\"qty\":20", 5),   // set, safety stock 5: 15
        event("e5", "HOT-1", "WH-EAST", "\"delta\":-3", 4), // below the set: superseded
        event("e6", "CASE-12", "WH-EAST", "\"delta\":-1", 6), // factor 12: EACH-1 36 -> 24
        event("e1", "OLD-1", "WH-EAST", "\"delta\":-2", 1), // a duplicate delivery
    ];
    let (code, stdout, stderr) = replay_file(dir.path(), &events);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("1 duplicate(s) dropped"), "{stderr}");
    assert!(stdout.starts_with("Replay complete: 5 events applied, 1 superseded, 0 not applied;"), "{stdout}");
    let db = dir.path().join("demo/target.db");
    for (sku, loc, q) in [
        ("NEW-1", "loc-1", 5),
        ("TEE-BLUE-S", "loc-1", 9),
        ("A", "loc-1", 5),
        ("KIT-1", "loc-1", 2),
        ("HOT-1", "loc-1", 15),
        ("EACH-1", "loc-1", 24),
    ] {
        assert_eq!(qty(&db, sku, loc), Some(q), "{sku} {loc}");
    }
    // The writes went through the audited path.
    let (_, audit, _) =
        run(stockshift().current_dir(dir.path()).args(["audit", "demo.yaml", "--sku", "KIT-1", "--format", "json"]));
    let recs: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    assert!(recs.iter().any(|r| r["kind"] == "replay" && r["after"] == 2), "{audit}");
    // Replaying again is a no-op.
    let (code, stdout, _) = run(stockshift().current_dir(dir.path()).args(["replay", "demo.yaml"]));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("Replay complete: 0 events applied"), "{stdout}");
}

#[test]
fn late_deltas_are_never_lost_and_stale_sets_never_win() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let db = dir.path().join("demo/target.db");
    let (code, _, _) = replay_file(dir.path(), &[event("s1", "SAME-1", "WH-EAST", "\"qty\":50", 10)]);
    assert_eq!(code, 0);
    assert_eq!(qty(&db, "SAME-1", "loc-1"), Some(50));
    // A late delta above the set: applied. One below it: already contained, superseded.
    let (code, stdout, _) = replay_file(
        dir.path(),
        &[event("d1", "SAME-1", "WH-EAST", "\"delta\":-5", 12), event("d0", "SAME-1", "WH-EAST", "\"delta\":-7", 8)],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("1 events applied, 1 superseded"), "{stdout}");
    assert_eq!(qty(&db, "SAME-1", "loc-1"), Some(45));
    // A stale absolute set (older sequence) arriving late changes nothing.
    let (code, _, _) = replay_file(dir.path(), &[event("s0", "SAME-1", "WH-EAST", "\"qty\":999", 9)]);
    assert_eq!(code, 0);
    assert_eq!(qty(&db, "SAME-1", "loc-1"), Some(45));
}

#[test]
fn oversells_are_counted_and_unmapped_events_stay_queued() {
    let (dir, plan) = demo_copy();
    let text = std::fs::read_to_string(&plan)
        .unwrap()
        .replace("unmapped_skus: passthrough", "unmapped_skus: passthrough\n  # replay test");
    std::fs::write(&plan, text).unwrap();
    apply(dir.path());
    let (code, stdout, stderr) = replay_file(
        dir.path(),
        &[event("o1", "B", "WH-EAST", "\"delta\":-5", 1), event("u1", "X", "WH-NOWHERE", "\"delta\":-1", 2)],
    );
    assert_eq!(code, 3, "events that could not be applied give exit 3: {stdout}{stderr}");
    assert!(stdout.contains("1 oversells"), "{stdout}");
    assert!(stderr.contains("Oversold: 1 source key(s)"), "{stderr}");
    assert!(stderr.contains("location `WH-NOWHERE` has no entry"), "{stderr}");
    let db = dir.path().join("demo/target.db");
    assert_eq!(qty(&db, "B", "loc-1"), Some(0));
    assert_eq!(qty(&db, "KIT-1", "loc-1"), Some(0), "the bundle follows its component");
    let (_, status, _) =
        run(stockshift().current_dir(dir.path()).args(["freeze", "status", "demo.yaml", "--format", "json"]));
    assert!(
        status.contains("\"queued\": 1")
            || status.contains("\"queued\":1")
            || status.contains("\"backlog\": 1")
            || status.contains("\"total\": 1"),
        "{status}"
    );
}

#[test]
fn an_event_that_can_never_apply_can_be_discarded_with_a_reason() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let (code, _, _) = replay_file(dir.path(), &[event("u1", "X", "WH-NOWHERE", "\"delta\":-1", 2)]);
    assert_eq!(code, 3, "the unmapped event stays queued");
    let replay = |args: &[&str]| {
        let mut all = vec!["replay", "demo.yaml"];
        all.extend_from_slice(args);
        run(stockshift().current_dir(dir.path()).args(&all))
    };
    // Bad input changes nothing.
    let (code, _, stderr) = replay(&["--discard", "erp", "--reason", "test event"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("expected SOURCE/ID"), "{stderr}");
    let (code, _, stderr) = replay(&["--discard", "erp/u1"]);
    assert_eq!(code, 1, "--reason is required: {stderr}");
    let (code, _, stderr) = replay(&["--discard", "erp/nope", "--reason", "x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no event `nope`"), "{stderr}");
    let (code, _, stderr) = replay(&[]);
    assert_eq!(code, 3, "still queued after the refused discards: {stderr}");

    let (code, stdout, stderr) = replay(&["--discard", "erp/u1", "--reason", "test event from staging"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Discarded event erp/u1"), "{stdout}");
    let (code, _, stderr) = replay(&[]);
    assert_eq!(code, 0, "nothing left to retry: {stderr}");
    let c = Connection::open(dir.path().join(".stockshift/events.db")).unwrap();
    let (status, error): (String, String) =
        c.query_row("SELECT status, error FROM events WHERE id = 'u1'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("test event from staging"), "{error}");
    // Only a queued event can be discarded.
    let (code, _, stderr) = replay(&["--discard", "erp/u1", "--reason", "again"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not queued"), "{stderr}");
}

/// A small deterministic generator (no external crates).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_events(seed: u64, n: usize) -> Vec<String> {
    let skus = [
        ("OLD-1", "WH-EAST"),
        ("BLUE-S", "WH-EAST"),
        ("BLUE-SMALL", "WH-EAST"),
        ("A", "WH-EAST"),
        ("B", "WH-EAST"),
        ("A", "WH-WEST"),
        ("HOT-1", "WH-EAST"),
        ("SWAP-X", "WH-WEST"),
        ("CASE-12", "WH-EAST"),
        ("NEW-9", "WH-WEST"),
    ];
    let mut r = Rng(seed);
    (0..n)
        .map(|i| {
            let (sku, loc) = skus[r.below(skus.len() as u64) as usize];
            let change = if r.below(5) == 0 {
                format!("\"qty\":{}", r.below(40))
            } else {
                format!("\"delta\":{}", r.below(7) as i64 - 4)
            };
            event(&format!("ev-{i}"), sku, loc, &change, r.below(1000) as i64)
        })
        .collect()
}

#[test]
fn any_permutation_and_duplication_of_the_events_gives_the_same_target() {
    let events = random_events(7, 60);
    let mut results = Vec::new();
    let mut r = Rng(99);
    for round in 0..6 {
        let (dir, _) = demo_copy();
        apply(dir.path());
        let mut list = events.clone();
        // Shuffle, duplicate some, and deliver in several batches.
        for i in (1..list.len()).rev() {
            list.swap(i, r.below(i as u64 + 1) as usize);
        }
        for _ in 0..round * 5 {
            let d = list[r.below(list.len() as u64) as usize].clone();
            list.push(d);
        }
        let cut = r.below(list.len() as u64) as usize;
        let (a, b) = list.split_at(cut);
        for part in [a, b] {
            let (code, stdout, stderr) = replay_file(dir.path(), part);
            assert!(code == 0, "round {round}: {stdout}{stderr}");
        }
        results.push(target_rows(&dir.path().join("demo/target.db")));
    }
    for (i, r) in results.iter().enumerate().skip(1) {
        assert_eq!(r, &results[0], "delivery order {i} gave another target");
    }
}

#[test]
fn a_killed_replay_restarts_exactly_once() {
    // Reference: the same events replayed without interruption.
    let events = random_events(11, 3000);
    let (ref_dir, ref_plan) = demo_copy();
    small_batches(&ref_plan);
    apply(ref_dir.path());
    let (code, _, stderr) = replay_file(ref_dir.path(), &events);
    assert_eq!(code, 0, "{stderr}");
    let expected = target_rows(&ref_dir.path().join("demo/target.db"));

    let (dir, plan) = demo_copy();
    small_batches(&plan);
    apply(dir.path());
    // Queue the events without replaying them.
    std::fs::write(dir.path().join("events.jsonl"), events.join("\n") + "\n").unwrap();
    let parsed = stockshift::events::event::read_jsonl(&dir.path().join("events.jsonl")).unwrap();
    let mut queue = stockshift::events::queue::Queue::open(&dir.path().join(".stockshift/events.db")).unwrap();
    queue.append(&parsed).unwrap();
    drop(queue);
    let mut kills = 0;
    for round in 0..15u64 {
        let mut child = stockshift()
            .current_dir(dir.path())
            .args(["replay", "demo.yaml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + (round * 23) % 90));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    let (code, stdout, stderr) = run(stockshift().current_dir(dir.path()).args(["replay", "demo.yaml"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(target_rows(&dir.path().join("demo/target.db")), expected, "killed {kills} times");
    // Every distinct event is applied or superseded exactly once; nothing is left queued.
    let c = Connection::open(dir.path().join(".stockshift/events.db")).unwrap();
    let (total, done, queued): (i64, i64, i64) = c
        .query_row(
            "SELECT count(*), sum(status IN ('applied', 'superseded')), sum(status = 'queued') FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((total, done, queued), (3000, 3000, 0));
}

/// Small target batches so a kill lands between batches as well as inside them.
fn small_batches(plan: &Path) {
    let text =
        std::fs::read_to_string(plan).unwrap().replace("path: demo/target.db", "path: demo/target.db\n  batch_size: 1");
    std::fs::write(plan, text).unwrap();
}

fn queue_events(dir: &Path, lines: &[String]) {
    let file = dir.join("live.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let events = stockshift::events::event::read_jsonl(&file).unwrap();
    let mut q = stockshift::events::queue::Queue::open(&dir.join(".stockshift/events.db")).unwrap();
    q.append(&events).unwrap();
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn follow_applies_new_events_and_waits_while_frozen() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let db = dir.path().join("demo/target.db");
    let mut child = stockshift()
        .current_dir(dir.path())
        .args(["replay", "demo.yaml", "--follow", "--interval", "100ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    queue_events(dir.path(), &[event("f1", "SAME-1", "WH-EAST", "\"delta\":-3", 1)]);
    wait_for("the first event", || qty(&db, "SAME-1", "loc-1") == Some(17));
    // Frozen: events are queued, not applied.
    let (code, _, _) = run(stockshift().current_dir(dir.path()).args(["freeze", "start", "demo.yaml"]));
    assert_eq!(code, 0);
    queue_events(dir.path(), &[event("f2", "SAME-1", "WH-EAST", "\"delta\":-4", 2)]);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(qty(&db, "SAME-1", "loc-1"), Some(17), "nothing applied while frozen");
    let (code, _, _) = run(stockshift().current_dir(dir.path()).args(["freeze", "stop", "demo.yaml"]));
    assert_eq!(code, 0);
    wait_for("the event queued during the freeze", || qty(&db, "SAME-1", "loc-1") == Some(13));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_plain_rollback_after_a_replay_undoes_the_apply_and_keeps_the_replayed_sales() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let (code, _, _) = replay_file(dir.path(), &[event("s1", "OLD-1", "WH-EAST", "\"delta\":-2", 1)]);
    assert_eq!(code, 0);
    let db = dir.path().join("demo/target.db");
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(5));
    let (code, _, stderr) = run(stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0, "{stderr}");
    // The apply took NEW-1 from 5 to 7; the replayed order sold 2 since: 5 + (5 - 7) = 3.
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(3));
    assert_eq!(qty(&db, "GONE-1", "loc-1"), Some(4), "the apply's orphan zeroing is undone");
}

#[test]
fn a_new_snapshot_does_not_count_events_settled_before_it_again() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let db = dir.path().join("demo/target.db");
    let (code, _, _) = replay_file(dir.path(), &[event("e1", "HOT-1", "WH-EAST", "\"delta\":-2", 1)]);
    assert_eq!(code, 0);
    assert_eq!(qty(&db, "HOT-1", "loc-1"), Some(5), "12 - 2 - safety 5");
    // The next export contains that order (HOT-1 12 -> 10) and another change; apply it.
    let csv = dir.path().join("demo/erp_snapshot.csv");
    let text = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("HOT-1,WH-EAST,12", "HOT-1,WH-EAST,10")
        .replace("SAME-1,WH-EAST,20", "SAME-1,WH-EAST,21");
    std::fs::write(&csv, text).unwrap();
    apply(dir.path());
    // One more order: counted once on top of the new snapshot, the old one not again.
    let (code, _, _) = replay_file(dir.path(), &[event("e2", "HOT-1", "WH-EAST", "\"delta\":-1", 2)]);
    assert_eq!(code, 0);
    assert_eq!(qty(&db, "HOT-1", "loc-1"), Some(4), "10 - 1 - safety 5");
}

#[test]
fn replay_refuses_to_build_on_a_rolled_back_apply() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let (code, _, _) = run(stockshift().current_dir(dir.path()).args(["rollback", "demo.yaml", "--auto-approve"]));
    assert_eq!(code, 0);
    let (code, _, stderr) = replay_file(dir.path(), &[event("e1", "OLD-1", "WH-EAST", "\"delta\":-1", 1)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no source snapshot recorded"), "{stderr}");
    assert_eq!(qty(&dir.path().join("demo/target.db"), "NEW-1", "loc-1"), Some(5), "nothing re-applied");
}

#[test]
fn queue_only_queues_the_file_and_writes_nothing_until_replay() {
    let (dir, _) = demo_copy();
    apply(dir.path());
    let db = dir.path().join("demo/target.db");
    std::fs::write(dir.path().join("events.jsonl"), event("q1", "OLD-1", "WH-EAST", "\"delta\":-2", 1) + "\n").unwrap();
    let (code, stdout, stderr) = run(stockshift().current_dir(dir.path()).args([
        "replay",
        "demo.yaml",
        "--from",
        "events.jsonl",
        "--queue-only",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Queued 1 event(s)"), "{stderr}");
    assert!(!stdout.contains("Replay complete"), "{stdout}");
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(7), "nothing applied yet");
    let (code, stdout, stderr) = run(stockshift().current_dir(dir.path()).args(["replay", "demo.yaml"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("Replay complete: 1 events applied"), "{stdout}");
    assert_eq!(qty(&db, "NEW-1", "loc-1"), Some(5));
    // --queue-only without --from is refused by the argument parser.
    let (code, _, stderr) = run(stockshift().current_dir(dir.path()).args(["replay", "demo.yaml", "--queue-only"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--from"), "{stderr}");
}
