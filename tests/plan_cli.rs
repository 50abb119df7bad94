//! `plan` and `show` end to end on the demo plan: outputs as golden files, exit
//! codes, saved plans, colour rules and input errors.

use crate::util::{copy_dir, golden, root, run, stockshift};

fn demo() -> std::path::PathBuf {
    root().join("plans")
}

#[test]
fn demo_plan_in_every_format() {
    for (format, ext) in [("human", "txt"), ("json", "json"), ("markdown", "md")] {
        let (code, stdout, stderr) =
            run(stockshift().current_dir(demo()).args(["plan", "demo.yaml", "--format", format]));
        assert_eq!(code, 0, "{stderr}");
        golden(&format!("plan/demo.{ext}"), &stdout);
    }
}

#[test]
fn json_output_is_one_document_with_traces() {
    let (code, stdout, _) = run(stockshift().current_dir(demo()).args(["plan", "demo.yaml", "--format", "json"]));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("exactly one JSON document");
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["summary"], serde_json::json!({"create": 3, "update": 6, "unchanged": 4}));
    let each = doc["changes"].as_array().unwrap().iter().find(|c| c["sku"] == "EACH-1").unwrap();
    assert_eq!(each["from"], serde_json::json!([{"sku": "CASE-12", "location": "WH-EAST", "qty": 3, "line": 3}]));
    let orphan = doc["changes"].as_array().unwrap().iter().find(|c| c["sku"] == "GONE-1").unwrap();
    assert_eq!(
        (orphan["action"].as_str(), orphan["before"].as_i64(), orphan["after"].as_i64(), orphan["orphan"].as_bool()),
        (Some("update"), Some(4), Some(0), Some(true))
    );
}

#[test]
fn detailed_exitcode() {
    let (code, _, _) = run(stockshift().current_dir(demo()).args(["plan", "demo.yaml", "--detailed-exitcode"]));
    assert_eq!(code, 2, "changes present");
    // A target that already matches: no changes, exit 0.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.csv"), "sku,location,qty\nA,W,1\n").unwrap();
    std::fs::write(dir.path().join("t.csv"), "sku,location,qty\nA,W,1\n").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: same\nsource: { provider: csv, path: s.csv }\ntarget: { provider: csv, path: t.csv }\n",
    )
    .unwrap();
    let (code, stdout, _) = run(stockshift().current_dir(dir.path()).args(["plan", "p.yaml", "--detailed-exitcode"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("No changes."), "{stdout}");
    assert!(stdout.contains("Plan: 0 to create, 0 to update, 1 unchanged."), "{stdout}");
    let (code, _, _) = run(stockshift().current_dir(dir.path()).args(["plan", "p.yaml"]));
    assert_eq!(code, 0);
}

#[test]
fn saved_plan_shows_the_same_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.plan.json");
    let (code, stdout, _) = run(stockshift().current_dir(demo()).args(["plan", "demo.yaml", "--out"]).arg(&out));
    assert_eq!(code, 0);
    assert!(stdout.contains("Saved the plan to:"), "{stdout}");
    assert!(stdout.contains("stockshift apply"), "{stdout}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // The artifact records the plan's and every input's SHA-256.
    assert_eq!(saved["plan"]["config_sha256"].as_str().unwrap().len(), 64);
    let roles: Vec<&str> = saved["inputs"].as_array().unwrap().iter().map(|i| i["role"].as_str().unwrap()).collect();
    assert!(roles.contains(&"source"), "{roles:?}");
    for (format, ext) in [("human", "txt"), ("json", "json"), ("markdown", "md")] {
        let (code, shown, _) = run(stockshift().current_dir(demo()).arg("show").arg(&out).args(["--format", format]));
        assert_eq!(code, 0);
        let (_, planned, _) = run(stockshift().current_dir(demo()).args(["plan", "demo.yaml", "--format", format]));
        assert_eq!(shown, planned, "show --format {format} renders what plan printed ({ext})");
    }
}

#[test]
fn show_refuses_what_is_not_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.json");
    std::fs::write(&p, "{\"format_version\": 9}").unwrap();
    let (code, _, stderr) = run(stockshift().arg("show").arg(&p));
    assert_eq!(code, 1);
    assert!(stderr.contains("format_version 9"), "{stderr}");
    std::fs::write(&p, "not json").unwrap();
    let (code, _, stderr) = run(stockshift().arg("show").arg(&p));
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a stockshift plan file"), "{stderr}");
}

#[test]
fn colour_never_reaches_a_pipe_or_no_color() {
    // Output to a pipe has no colour; NO_COLOR and --no-color are honoured too.
    for extra in [&[][..], &["--no-color"][..]] {
        let (_, stdout, _) = run(stockshift().current_dir(demo()).args(["plan", "demo.yaml"]).args(extra));
        assert!(!stdout.contains('\x1b'), "{stdout}");
    }
    let (_, stdout, _) = run(stockshift().current_dir(demo()).env("NO_COLOR", "1").args(["plan", "demo.yaml"]));
    assert!(!stdout.contains('\x1b'));
}

#[test]
fn input_problems_exit_1_and_name_every_line() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("tests/fixtures/invalid/rows"), dir.path());
    let (code, stdout, stderr) =
        run(stockshift().current_dir(dir.path()).args(["plan", "plan.yaml", "--format", "json"]));
    assert_eq!(code, 1);
    assert_eq!(stdout, "", "no partial JSON on stdout");
    for line in [
        "source.csv:3:1:",
        "source.csv:4:1:",
        "source.csv:5:1:",
        "source.csv:6:15:",
        "source.csv:7:16:",
        "source.csv:8:1:",
        "target.csv:3:1:",
        "target.csv:4:15:",
    ] {
        assert!(stderr.contains(line), "missing {line} in\n{stderr}");
    }
    assert!(stderr.contains("Nothing was written"), "{stderr}");
}

#[test]
fn sqlite_target_problems_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.csv"), "sku,location,qty\nA,W,1\n").unwrap();
    rusqlite_free_db(&dir.path().join("t.db"));
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: x\nsource: { provider: csv, path: s.csv }\ntarget: { provider: sqlite, path: t.db, table: stock }\n",
    )
    .unwrap();
    let (code, _, stderr) = run(stockshift().current_dir(dir.path()).args(["plan", "p.yaml"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no table `stock`"), "{stderr}");
}

/// An SQLite file with an `inventory` table, made with the plan command's own
/// dependency-free path: copy the demo database.
fn rusqlite_free_db(to: &std::path::Path) {
    std::fs::copy(root().join("plans/demo/target.db"), to).unwrap();
}

#[test]
fn demo_database_matches_its_sql_source() {
    // plans/demo/target.db is built from target.sql; reviewers read the SQL.
    let sql = std::fs::read_to_string(root().join("plans/demo/target.sql")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    // Read the database through the sqlite provider by planning it against itself as CSV.
    let mut rows: Vec<String> = sql
        .lines()
        .filter_map(|l| l.trim().strip_prefix("('"))
        .map(|l| l.trim_end_matches([',', ';']).trim_end_matches(')').replace("', '", ",").replace("', ", ","))
        .collect();
    rows.sort();
    std::fs::write(&csv, format!("sku,location,qty\n{}\n", rows.join("\n"))).unwrap();
    std::fs::copy(root().join("plans/demo/target.db"), dir.path().join("t.db")).unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: x\nsource: { provider: sqlite, path: t.db }\ntarget: { provider: csv, path: t.csv }\nmapping: { orphans: error }\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        run(stockshift().current_dir(dir.path()).args(["plan", "p.yaml", "--detailed-exitcode"]));
    assert_eq!(code, 0, "target.db differs from target.sql:\n{stdout}{stderr}");
    assert!(stdout.contains(&format!("{} unchanged", rows.len())), "{stdout}");
}
