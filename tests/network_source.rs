//! A source that is not a file (here PostgreSQL): `plan` snapshots it to CSV, and
//! apply and replay build on that snapshot, not on whatever the live system holds later.

use std::path::Path;

use crate::pg::{self, Client};
use crate::util::{qty, run, stockshift};

fn event(id: &str, sku: &str, delta: i64, sequence: i64) -> String {
    format!(
        "{{\"id\":\"{id}\",\"source\":\"erp\",\"sku\":\"{sku}\",\"location\":\"WH\",\"delta\":{delta},\"sequence\":{sequence},\"occurred_at\":\"2026-11-27T10:00:00Z\"}}"
    )
}

fn cli(dir: &Path, url: &str, args: &[&str]) -> (i32, String, String) {
    run(stockshift().current_dir(dir).env("ERP_DB_URL", url).args(args))
}

#[test]
fn a_database_source_is_snapshotted_at_plan_time_and_replay_builds_on_the_snapshot() {
    let Some(server) = pg::available() else { return };
    let url = server.create_database();
    let mut c = Client::connect(&url).unwrap();
    c.execute(
        "CREATE TABLE inventory (sku text, location text, qty bigint, version bigint NOT NULL DEFAULT 0,
                                 PRIMARY KEY (sku, location));
         INSERT INTO inventory (sku, location, qty) VALUES ('A', 'WH', 10), ('B', 'WH', 4);",
    );
    let dir = tempfile::tempdir().unwrap();
    let t = rusqlite::Connection::open(dir.path().join("target.db")).unwrap();
    t.execute_batch("CREATE TABLE inventory (sku TEXT, location TEXT, qty INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));").unwrap();
    std::fs::write(
        dir.path().join("plan.yaml"),
        "version: 1\nname: pg-source\nsource: { provider: postgres, url_env: ERP_DB_URL }\n\
         target: { provider: sqlite, path: target.db }\n\
         events: { sources: [ { name: erp, kind: standard, secret_env: ERP_SECRET } ] }\n",
    )
    .unwrap();

    let (code, out, err) = cli(dir.path(), &url, &["plan", "plan.yaml", "--out", "p.json"]);
    assert_eq!(code, 0, "{out}{err}");
    let snaps: Vec<_> =
        std::fs::read_dir(dir.path().join(".stockshift/snapshots")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let text = std::fs::read_to_string(&snaps[0]).unwrap();
    assert_eq!(text.lines().count(), 3, "header and two rows: {text}");
    assert!(text.contains("A,WH,10") && text.contains("B,WH,4"), "{text}");

    // The live source moves after planning; the saved plan still applies what was planned.
    c.execute("UPDATE inventory SET qty = 99 WHERE sku = 'A'");
    let (code, out, err) = cli(dir.path(), &url, &["apply", "p.json"]);
    assert_eq!(code, 0, "{out}{err}");
    let db = dir.path().join("target.db");
    assert_eq!(qty(&db, "A", "WH"), Some(10));

    // Replay: the snapshot (A = 10) plus the events, not the live value (99).
    std::fs::write(dir.path().join("e.jsonl"), [event("o1", "A", -3, 1), event("o2", "B", -1, 2)].join("\n") + "\n")
        .unwrap();
    let (code, out, err) = cli(dir.path(), &url, &["replay", "plan.yaml", "--from", "e.jsonl"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(qty(&db, "A", "WH"), Some(7));
    assert_eq!(qty(&db, "B", "WH"), Some(3));
}
