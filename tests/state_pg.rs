//! The state store on PostgreSQL (`state: { backend: postgres }`) beyond what
//! `tests/apply.rs` and `tests/cutover.rs` run on both backends: the lock across
//! processes and sessions (exclusive, shared, partitions), schema versions, and
//! secrets kept out of every message.

use std::time::Duration;

use stockshift::db::StoreAt;
use stockshift::state::lock::LockError;
use stockshift::state::{Actor, NewOperation, OpKind, StateStore};

use crate::backend::{Backend, Ctx, URL_ENV};
use crate::pg::Client;
use crate::util::run;

fn pg_ctx() -> Option<Ctx> {
    Ctx::new(Backend::Postgres)
}

#[test]
fn exclusive_shared_and_partition_locks_between_sessions() {
    let Some(cx) = pg_ctx() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = cx.store(dir.path());
    let b = a.reopen().unwrap();
    let c = a.reopen().unwrap();
    let me = Actor::current("test");
    // Exclusive: one holder; the other is told who.
    let g = a.lock("apply", &me, Duration::ZERO).unwrap();
    match b.lock("rollback", &me, Duration::from_millis(120)) {
        Err(LockError::Held(info)) => {
            assert_eq!((info.id.as_str(), info.operation.as_str()), (g.info.id.as_str(), "apply"))
        }
        other => panic!("expected a held lock, got {:?}", other.map(|g| g.info.clone())),
    }
    assert!(matches!(b.lock_shared("replay", &me, Duration::ZERO), Err(LockError::Held(_))));
    drop(g);
    // Shared: several holders at once, and no exclusive one meanwhile.
    let s1 = b.lock_shared("replay", &me, Duration::ZERO).unwrap();
    let s2 = c.lock_shared("replay", &me, Duration::ZERO).unwrap();
    match a.lock("apply", &me, Duration::ZERO) {
        Err(LockError::Held(info)) => assert!(info.id == s1.info.id || info.id == s2.info.id, "{info:?}"),
        other => panic!("expected a held lock, got {:?}", other.map(|g| g.info.clone())),
    }
    drop((s1, s2));
    let g = a.lock("apply", &me, Duration::ZERO).unwrap();
    assert!(g.took_over.is_none());
    drop(g);
    // Partitions: per session, without waiting.
    let p = b.lock_partition(17).unwrap().expect("free");
    assert!(c.lock_partition(17).unwrap().is_none(), "another session holds it");
    assert!(c.lock_partition(18).unwrap().is_some());
    drop(p);
    assert!(c.lock_partition(17).unwrap().is_some());
}

#[test]
fn two_processes_racing_for_the_lock_apply_once() {
    let Some(cx) = pg_ctx() else { return };
    let (dir, _) = cx.demo_copy();
    let (code, _, stderr) =
        run(cx.stockshift().current_dir(dir.path()).args(["plan", "demo.yaml", "--out", "d.plan.json"]));
    assert_eq!(code, 0, "{stderr}");
    let racers: Vec<_> = (0..2)
        .map(|_| {
            cx.stockshift()
                .current_dir(dir.path())
                .args(["apply", "d.plan.json", "--lock-timeout", "30s"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<String> = racers
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success(), "{text}");
            text
        })
        .collect();
    // One made the writes; the other, serialised behind it, found them made.
    let made = outs.iter().filter(|o| o.contains("Apply complete: 9 applied")).count();
    let found = outs.iter().filter(|o| o.contains("0 applied, 9 already applied")).count();
    assert_eq!((made, found), (1, 1), "{outs:#?}");
    let store = cx.store(&dir.path().join(".stockshift"));
    assert_eq!(store.operations().unwrap().len(), 1);
    assert_eq!(store.audit(None, None).unwrap().len(), 9);
    assert!(store.lock_info().unwrap().is_none());
}

#[test]
fn a_store_written_by_a_newer_stockshift_is_refused() {
    let Some(cx) = pg_ctx() else { return };
    let (dir, _) = cx.demo_copy();
    let state_dir = dir.path().join(".stockshift");
    drop(cx.store(&state_dir));
    let url = cx.url.clone().unwrap();
    Client::connect(&url)
        .unwrap()
        .execute("UPDATE stockshift_state.meta SET value = '99' WHERE key = 'schema_version'");
    let e = StateStore::open_at(&cx.store_at(&state_dir)).expect_err("refused").to_string();
    assert!(e.contains("newer stockshift (schema 99"), "{e}");
    let (code, _, stderr) = run(cx.stockshift().current_dir(dir.path()).args(["state", "list", "demo.yaml"]));
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("state store (postgres ${URL_ENV}): written by a newer stockshift")), "{stderr}");
}

#[test]
fn existing_only_opens_a_schema_with_tables_and_scopes_keep_recovery_apart() {
    let Some(cx) = pg_ctx() else { return };
    let dir = tempfile::tempdir().unwrap();
    let at = cx.store_at(dir.path());
    assert!(StateStore::open_existing_at(&at).unwrap().is_none(), "a fresh database has no state");
    let mut s = StateStore::open_at(&at).unwrap();
    assert!(StateStore::open_existing_at(&at).unwrap().is_some());
    // A partition's running operation is not a whole-state caller's to recover, and
    // starting a whole-state operation does not close it.
    let new = NewOperation { plan_name: "p", plan_sha256: "a", artifact_sha256: "b", writes: 1, rollback_of: None };
    let me = Actor::current("test");
    let part = s.begin_scoped(OpKind::Replay, &new, &me, Some("replay/parts/17")).unwrap();
    s.intent(&part.id, 0, 0, &[(0, "A", "W", None, 1)]).unwrap();
    assert!(s.unfinished_intents().unwrap().is_empty());
    assert_eq!(s.unfinished_intents_in(Some("replay/parts/17")).unwrap().len(), 1);
    let whole = s.begin(OpKind::Apply, &new, &me).unwrap();
    assert_eq!(whole.serial, part.serial + 1);
    assert_eq!(s.operation(&part.id).unwrap().unwrap().status, "running");
    assert_eq!(s.running_scopes().unwrap(), vec!["replay/parts/17".to_string()]);
    // The same statement with NULL, then a value, in one connection (NULLs are
    // sent untyped, so the cached statement keeps the column's type).
    let undo = NewOperation { rollback_of: Some(&whole.id), ..new };
    let rb = s.begin(OpKind::Rollback, &undo, &me).unwrap();
    assert_eq!(rb.rollback_of.as_deref(), Some(whole.id.as_str()));
}

#[test]
fn no_url_or_password_in_any_error() {
    // A server that does not answer (nothing listens on port 1): no PostgreSQL needed.
    let cx =
        Ctx { backend: Backend::Postgres, url: Some("postgres://stockshift:s3cr3t-Pa55@127.0.0.1:1/state".into()) };
    let (dir, _) = cx.demo_copy();
    for args in [
        &["plan", "demo.yaml"][..],
        &["apply", "demo.yaml", "--auto-approve"],
        &["state", "list", "demo.yaml"],
        &["audit", "demo.yaml"],
        &["force-unlock", "x", "demo.yaml"],
        &["reconcile", "demo.yaml"],
        &["cutover", "demo.yaml", "--auto-approve"],
    ] {
        let (code, stdout, stderr) = run(cx.stockshift().current_dir(dir.path()).args(args));
        assert_ne!(code, 0, "{args:?}: {stdout}{stderr}");
        for secret in ["s3cr3t-Pa55", "postgres://"] {
            assert!(
                !stderr.contains(secret) && !stdout.contains(secret),
                "{args:?} shows {secret:?}:\n{stdout}{stderr}"
            );
        }
        assert!(stderr.contains(&format!("(postgres ${URL_ENV})")), "{args:?}: {stderr}");
    }
    // The same in the library's errors.
    let at = StoreAt { dir: dir.path().join(".stockshift"), postgres: cx.url.clone(), url_env: Some(URL_ENV.into()) };
    let e = StateStore::open_at(&at).expect_err("no server").to_string();
    assert!(!e.contains("s3cr3t") && !e.contains("postgres://"), "{e}");
}

#[test]
fn reconcile_runs_drift_pages_and_last_written_on_postgres() {
    use stockshift::provider::WriteOutcome;
    use stockshift::state::{DriftQuery, DriftRow, DriftSort, NewReconcileRun, WriteRecord};
    let Some(cx) = pg_ctx() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut s = cx.store(dir.path());
    let row = |sku: &str, diff: i64, target: Option<i64>| DriftRow {
        sku: sku.into(),
        location: "W".into(),
        source: diff,
        target,
        diff,
        cause: "never_written".into(),
        bundle: sku == "C",
        orphan: false,
        queued: false,
        last_written: None,
        fixed_by: None,
    };
    let run = |drifted| NewReconcileRun {
        plan_name: "p",
        plan_sha256: "a",
        keys: 10,
        drifted,
        drift_ratio: drifted as f64 / 10.0,
        seconds: 0.1,
        kpis: serde_json::json!([{"name": "drift_ratio"}]),
        breaches: serde_json::json!([]),
    };
    let first = s.save_reconcile(&run(1), &[row("OLD", 1, Some(0))]).unwrap();
    let rows = [row("A-1", 5, Some(0)), row("A_2", -9, None), row("B%3", 2, Some(0)), row("C", 0, Some(0))];
    let id = s.save_reconcile(&run(4), &rows).unwrap();
    assert!(id > first);
    let last = s.last_reconcile().unwrap().unwrap();
    assert_eq!((last.id, last.drifted, last.stored, last.kpis[0]["name"].as_str()), (id, 4, 4, Some("drift_ratio")));
    assert!(s.drift_row(first, "OLD", "W").unwrap().is_none(), "older runs keep no keys");
    let q = DriftQuery { run_id: id, search: None, sort: DriftSort::AbsDiff, descending: true, offset: 0, limit: 2 };
    let (total, page) = s.drift_page(&q).unwrap();
    assert_eq!(total, 4);
    assert_eq!(page.iter().map(|r| r.sku.as_str()).collect::<Vec<_>>(), ["A_2", "A-1"]);
    // Absent targets sort first ascending, as on SQLite; the search ignores ASCII case.
    let (_, page) = s.drift_page(&DriftQuery { sort: DriftSort::Target, descending: false, limit: 1, ..q }).unwrap();
    assert_eq!(page[0].sku, "A_2");
    let (n, page) =
        s.drift_page(&DriftQuery { search: Some("a"), sort: DriftSort::Sku, descending: false, ..q }).unwrap();
    assert_eq!((n, page.len(), page[0].target), (2, 2, Some(0)));
    let (n, _) = s.drift_page(&DriftQuery { search: Some("%"), ..q }).unwrap();
    assert_eq!(n, 1, "LIKE wildcards are literal");
    assert!(s.drift_row(id, "C", "W").unwrap().unwrap().bundle);
    s.mark_drift_fixed(id, "C", "W", "op-1").unwrap();
    assert_eq!(s.drift_row(id, "C", "W").unwrap().unwrap().fixed_by.as_deref(), Some("op-1"));

    // last_written: the newest applied or already-applied value per key; a write
    // recorded again (a retried failure) becomes the newest.
    let new = NewOperation { plan_name: "p", plan_sha256: "a", artifact_sha256: "b", writes: 4, rollback_of: None };
    let op = s.begin(OpKind::Apply, &new, &Actor::current("test")).unwrap();
    let failed = WriteOutcome::Failed { retriable: true, message: "timeout".into() };
    let (ok, again, conflict) =
        (WriteOutcome::Applied, WriteOutcome::AlreadyApplied, WriteOutcome::Conflict { found: Some(1) });
    let rec = |seq, sku, after, outcome| WriteRecord { seq, sku, location: "W", before: None, after, outcome };
    s.record(&op.id, &[rec(0, "A", 1, &failed), rec(1, "A", 2, &again), rec(2, "B", 9, &conflict)]).unwrap();
    s.record(&op.id, &[rec(0, "A", 1, &ok)]).unwrap();
    let keys = [("A", "W"), ("B", "W"), ("C", "W")];
    assert_eq!(s.last_written(&keys).unwrap(), vec![Some(1), None, None]);
    let audit = s.audit(Some("A"), None).unwrap();
    assert_eq!(audit.iter().map(|a| a.seq).collect::<Vec<_>>(), [1, 0], "the retried write is the newest row");
    let c = s.counts(&op.id).unwrap();
    assert_eq!((c.applied, c.already_applied, c.conflicts, c.failed), (1, 1, 1, 0));
    assert_eq!(s.audit(Some("B"), None).unwrap()[0].found, Some(1));
    s.bump_counter("oversells", 2).unwrap();
    s.bump_counter("oversells", 3).unwrap();
    assert_eq!(s.counter("oversells").unwrap(), 5);
    s.set_gauges(&[("drift_keys", 4.0), ("drift_ratio", 0.4)]).unwrap();
    s.set_gauges(&[("drift_keys", 3.0)]).unwrap();
    let mut g: Vec<(String, f64)> = s.gauges().unwrap().into_iter().map(|(n, v, _)| (n, v)).collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(g, vec![("drift_keys".to_string(), 3.0), ("drift_ratio".to_string(), 0.4)]);
}

/// A server handler may open and drop a PostgreSQL connection on an async
/// thread: neither connecting nor dropping its private runtime may panic there.
#[test]
fn a_postgres_connection_opens_and_closes_inside_async_code() {
    let Some(server) = crate::pg::available() else { return };
    let url = server.create_database();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let one = rt.block_on(async {
        let db = stockshift::db::Db::postgres(&url).unwrap();
        let v = db.query_one("SELECT 1", &[], |r| r.i64(0)).unwrap();
        drop(db);
        v
    });
    assert_eq!(one, 1);
}
