//! One conformance suite for every writable provider.
//!
//! Each provider module implements [`Subject`]: a way to open the provider, to
//! seed and inspect the system behind it, to change a key behind stockshift's back
//! and to make the system fail transiently. [`suite!`] then generates the same
//! cases for each: create, update, conflict, already applied, retry after a
//! transient failure, resume after a kill, rollback. The provider-level cases call
//! `write_batch` directly; the others run the real binary on a plan whose target is
//! the subject.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use stockshift::provider::{Provider, Write, WriteOutcome};

use crate::util::{run, stockshift};

mod http;
mod magento;
mod postgres;
mod shopify;
mod sqlite;

/// Key -> quantity, the whole content of a system under test.
pub type Contents = BTreeMap<(String, String), i64>;

/// A writable provider under test and the system behind it.
pub trait Subject {
    /// The plan's `target:` block (YAML flow mapping) for this subject. `dir` is the
    /// plan's folder; `batch` the batch size to use where the provider has one.
    fn target_yaml(&self, dir: &Path, batch: usize) -> String;
    /// Environment variables the plan's provider needs (credentials, URLs).
    fn env(&self) -> Vec<(String, String)> {
        vec![]
    }
    /// Replaces everything in the system with these rows.
    fn seed(&self, dir: &Path, rows: &[(String, String, i64)]);
    /// Everything the system holds now.
    fn contents(&self, dir: &Path) -> Contents;
    /// Sets one key behind stockshift's back, as a concurrent order would.
    fn poke(&self, dir: &Path, sku: &str, location: &str, qty: i64);
    /// Makes the next `n` write requests fail transiently (throttled or 5xx).
    fn fail_next_writes(&self, dir: &Path, n: usize);
    /// Opens the provider the way `stockshift` would for `target_yaml`.
    fn open(&self, dir: &Path) -> Box<dyn Provider>;
}

pub fn key(s: &str, l: &str) -> (String, String) {
    (s.to_owned(), l.to_owned())
}

fn w(sku: &str, loc: &str, expected: Option<i64>, new: i64) -> Write {
    Write { sku: sku.into(), location: loc.into(), expected, new }
}

fn rows(n: usize) -> Vec<(String, String, i64)> {
    (0..n).map(|i| (format!("SKU-{i:04}"), if i % 3 == 0 { "B" } else { "A" }.to_owned(), (i % 7) as i64 + 1)).collect()
}

pub fn create(s: &dyn Subject, dir: &Path) {
    s.seed(dir, &rows(3));
    let mut p = s.open(dir);
    let out = p.write_batch(&[w("SKU-NEW", "A", None, 9)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied]);
    assert_eq!(s.contents(dir).get(&key("SKU-NEW", "A")), Some(&9));
}

pub fn update(s: &dyn Subject, dir: &Path) {
    s.seed(dir, &rows(3));
    let mut p = s.open(dir);
    let out = p.write_batch(&[w("SKU-0001", "A", Some(2), 40), w("SKU-0002", "A", Some(3), 0)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied, WriteOutcome::Applied]);
    let c = s.contents(dir);
    assert_eq!(c[&key("SKU-0001", "A")], 40);
    assert_eq!(c[&key("SKU-0002", "A")], 0);
    assert_eq!(c[&key("SKU-0000", "B")], 1, "untouched keys stay");
}

pub fn conflict(s: &dyn Subject, dir: &Path) {
    s.seed(dir, &rows(3));
    s.poke(dir, "SKU-0001", "A", 17);
    let mut p = s.open(dir);
    let out = p.write_batch(&[w("SKU-0001", "A", Some(2), 40), w("SKU-0002", "A", Some(3), 5)]).unwrap();
    assert_eq!(out[0], WriteOutcome::Conflict { found: Some(17) });
    assert_eq!(out[1], WriteOutcome::Applied, "a conflict does not stop the rest of the batch");
    let c = s.contents(dir);
    assert_eq!(c[&key("SKU-0001", "A")], 17, "a conflict never overwrites");
    assert_eq!(c[&key("SKU-0002", "A")], 5);
}

pub fn already_applied(s: &dyn Subject, dir: &Path) {
    s.seed(dir, &rows(3));
    let mut p = s.open(dir);
    // The key already holds the new value: nothing to write, and it is not a conflict.
    let out = p.write_batch(&[w("SKU-0001", "A", Some(1), 2)]).unwrap();
    assert_eq!(out, vec![WriteOutcome::AlreadyApplied]);
    assert_eq!(s.contents(dir)[&key("SKU-0001", "A")], 2);
}

/// A source CSV for `n` keys and a plan copying it to the subject.
fn plan_files(s: &dyn Subject, dir: &Path, n: usize, batch: usize) -> Vec<(String, String, i64)> {
    let seeded = rows(n);
    s.seed(dir, &seeded);
    let mut src = String::from("sku,location,qty\n");
    let mut desired = vec![];
    for (i, (sku, loc, qty)) in seeded.iter().enumerate() {
        // Every other key changes; one in ten is new in the source.
        let q = if i % 2 == 0 { qty + 10 } else { *qty };
        src.push_str(&format!("{sku},{loc},{q}\n"));
        desired.push((sku.clone(), loc.clone(), q));
        if i % 10 == 0 {
            src.push_str(&format!("NEW-{i:04},{loc},{}\n", i + 1));
            desired.push((format!("NEW-{i:04}"), loc.clone(), i as i64 + 1));
        }
    }
    std::fs::write(dir.join("source.csv"), src).unwrap();
    std::fs::write(
        dir.join("plan.yaml"),
        format!(
            "version: 1\nname: conformance\nsource: {{ provider: csv, path: source.csv }}\ntarget: {}\nlimits: {{ max_writes: 1000000 }}\n",
            s.target_yaml(dir, batch)
        ),
    )
    .unwrap();
    desired
}

fn cli(s: &dyn Subject, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = stockshift();
    c.current_dir(dir).args(args);
    for (k, v) in s.env() {
        c.env(k, v);
    }
    run(&mut c)
}

fn as_contents(rows: &[(String, String, i64)]) -> Contents {
    rows.iter().map(|(s, l, q)| ((s.clone(), l.clone()), *q)).collect()
}

pub fn retry_after_transient_failure(s: &dyn Subject, dir: &Path) {
    let desired = plan_files(s, dir, 30, 5);
    s.fail_next_writes(dir, 2);
    let (code, out, err) = cli(s, dir, &["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s.contents(dir), as_contents(&desired));
    // Nothing doubled: applying again writes nothing.
    let (code, out, err) = cli(s, dir, &["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No changes") || out.contains("0 to create, 0 to update"), "{out}");
}

pub fn resume_after_kill(s: &dyn Subject, dir: &Path) {
    let desired = plan_files(s, dir, 600, 2);
    let before = s.contents(dir);
    let (code, out, err) = cli(s, dir, &["plan", "plan.yaml", "--out", "saved.plan.json"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut killed_mid_way = false;
    for _ in 0..5 {
        let mut c = stockshift();
        c.current_dir(dir)
            .args(["apply", "saved.plan.json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in s.env() {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        // Kill once some, but not all, writes have landed.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let now = s.contents(dir);
            let changed = now.iter().filter(|(k, v)| before.get(*k) != Some(*v)).count();
            if changed > 0 {
                child.kill().unwrap(); // SIGKILL
                killed_mid_way = changed < desired.len();
                break;
            }
            assert!(Instant::now() < deadline, "apply made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.wait().unwrap();
        if killed_mid_way {
            break;
        }
    }
    assert!(killed_mid_way, "the apply was never caught mid-way");
    let (code, out, err) = cli(s, dir, &["apply", "saved.plan.json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s.contents(dir), as_contents(&desired), "nothing lost or doubled after the resume");
    // Every key was written once: the audit holds one applied-or-already-applied row per change.
    let (code, audit, err) = cli(s, dir, &["audit", "plan.yaml", "--format", "json"]);
    assert_eq!(code, 0, "{audit}{err}");
    let lines: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    assert!(!lines.is_empty());
    let mut per_key: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in &lines {
        if l["outcome"] == "applied" {
            *per_key.entry(key(l["sku"].as_str().unwrap(), l["location"].as_str().unwrap())).or_default() += 1;
        }
    }
    assert!(per_key.values().all(|&n| n == 1), "a key applied twice: {per_key:?}");
}

pub fn rollback(s: &dyn Subject, dir: &Path) {
    plan_files(s, dir, 40, 7);
    let before = s.contents(dir);
    let (code, out, err) = cli(s, dir, &["apply", "plan.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(s.contents(dir), before);
    // A sale lands on one key after the apply; rollback keeps it (conflict, not overwritten).
    let (code, out, err) = cli(s, dir, &["rollback", "plan.yaml", "--auto-approve"]);
    assert!(code == 0, "{out}{err}");
    let after = s.contents(dir);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "key {k:?} restored");
    }
    for (k, v) in &after {
        if !before.contains_key(k) {
            assert_eq!(*v, 0, "a key the apply created is set to 0 by rollback: {k:?}");
        }
    }
}

/// Generates the suite's tests for one subject: `suite!(make_subject)` where
/// `make_subject(dir: &Path) -> impl Subject`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        #[test]
        fn create() {
            let d = tempfile::tempdir().unwrap();
            $crate::conformance::create(&$make(d.path()), d.path());
        }
        #[test]
        fn update() {
            let d = tempfile::tempdir().unwrap();
            $crate::conformance::update(&$make(d.path()), d.path());
        }
        #[test]
        fn conflict() {
            let d = tempfile::tempdir().unwrap();
            $crate::conformance::conflict(&$make(d.path()), d.path());
        }
        #[test]
        fn already_applied() {
            let d = tempfile::tempdir().unwrap();
            $crate::conformance::already_applied(&$make(d.path()), d.path());
        }
        #[test]
        fn retry_after_transient_failure() {
            let d = tempfile::tempdir().unwrap();
            $crate::conformance::retry_after_transient_failure(&$make(d.path()), d.path());
        }
        #[test]
        fn resume_after_kill() {
            let d = tempfile::tempdir().unwrap();
            $crate::conformance::resume_after_kill(&$make(d.path()), d.path());
        }
        #[test]
        fn rollback() {
            let d = tempfile::tempdir().unwrap();
            $crate::conformance::rollback(&$make(d.path()), d.path());
        }
    };
}
