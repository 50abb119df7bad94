//! `validate`: every invalid fixture's diagnostics, as golden files, and the
//! example plans, which must all be valid.

use crate::util::{golden, root, run, stockshift};

/// Each folder under tests/fixtures/invalid holds a `plan.yaml` that `validate`
/// must refuse; its stderr is compared with tests/golden/validate/<case>.stderr.
#[test]
fn invalid_plans_report_every_problem_with_its_position() {
    let dir = root().join("tests/fixtures/invalid");
    let mut cases: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 8, "expected the invalid fixtures, found {}", cases.len());
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (code, stdout, stderr) = run(stockshift().current_dir(&case).args(["validate", "plan.yaml"]));
        assert_eq!(code, 1, "{name}: validate must fail\n{stderr}");
        assert_eq!(stdout, "", "{name}: nothing on stdout");
        // Every error names file:line:column and says how to fix it.
        for block in stderr.split("\n").filter(|l| l.contains(": error: ")) {
            assert!(block.split(':').nth(1).is_some_and(|n| n.parse::<u32>().is_ok()), "{name}: no line in {block:?}");
        }
        assert!(
            stderr.matches("  help: ").count() >= stderr.matches(": error: ").count(),
            "{name}: every error has help"
        );
        // A literal secret is never echoed back.
        for secret in ["hunter2", "shpss_0123456789abcdef", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(!stderr.contains(secret), "{name}: echoed a secret");
        }
        golden(&format!("validate/{name}.stderr"), &stderr);
    }
}

#[test]
fn every_example_plan_is_valid() {
    let mut plans: Vec<_> = std::fs::read_dir(root().join("plans"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    plans.sort();
    assert!(!plans.is_empty());
    for p in plans {
        // Plans naming credentials validate once their variables are set (any value:
        // validate never connects); without them, validate names the missing variable.
        let text = std::fs::read_to_string(&p).unwrap();
        let vars: Vec<String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once("_env:").map(|(_, v)| v))
            .map(|v| v.trim().trim_end_matches([',', '}']).trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let mut cmd = stockshift();
        cmd.arg("validate").arg(&p);
        for v in &vars {
            cmd.env_remove(v);
        }
        let (code, _, stderr) = run(&mut cmd);
        let needs_env =
            ["shopify", "magento", "postgres", "http"].iter().any(|k| text.contains(&format!("provider: {k}")));
        if needs_env {
            assert_eq!(code, 1, "{}: a missing credential variable is an error", p.display());
            assert!(stderr.contains("is not set"), "{}: {stderr}", p.display());
        }
        for v in &vars {
            cmd.env(v, "test-value");
        }
        let (code, stdout, stderr) = run(&mut cmd);
        assert_eq!(code, 0, "{}: {stderr}", p.display());
        assert!(stdout.starts_with("Success!"), "{stdout}");
    }
}

#[test]
fn a_missing_plan_file_is_a_clear_error() {
    let (code, _, stderr) = run(stockshift().args(["validate", "no/such/plan.yaml"]));
    assert_eq!(code, 1);
    assert!(stderr.starts_with("no/such/plan.yaml: error: Cannot read the plan file"), "{stderr}");
}

#[test]
fn malformed_yaml_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: &[&[u8]] = &[
        b"",
        b"\xff\xfe",
        b"version: [1",
        b"- a\n- b\n",
        b"version: 1\nname: x\nsource: 3\ntarget: []\n",
        b"version: 1\nname: x\nsource: {provider: csv, path: {a: b}}\ntarget: {provider: sqlite}\nmapping: {skus: {file: 7}}\n",
        b"&a [*a]",
        b"version: 1\n? [complex, key]\n: value\n",
        b"version: 1\nname: !!binary aGVsbG8=\n",
        b"mapping:\n  skus:\n    A: { sku: B, factor: 99999999999999999999999 }\n",
    ];
    for (i, bytes) in inputs.iter().enumerate() {
        let p = dir.path().join(format!("p{i}.yaml"));
        std::fs::write(&p, bytes).unwrap();
        let (code, _, stderr) = run(stockshift().arg("validate").arg(&p));
        assert_eq!(code, 1, "input {i}: {stderr}");
        assert!(!stderr.contains("panicked"), "input {i} panicked: {stderr}");
        assert!(stderr.contains("error:"), "input {i}: {stderr}");
    }
}

#[test]
fn usage_errors_exit_1_not_2() {
    // 2 means "changes present" for plan --detailed-exitcode; a typo must not look like it.
    let (code, _, stderr) = run(stockshift().args(["plan", "--fromat", "json", "x.yaml"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--format"), "clap suggests the right flag: {stderr}");
    let (code, stdout, _) = run(stockshift().arg("--help"));
    assert_eq!(code, 0);
    assert!(stdout.contains("Usage"));
}

#[test]
fn postgres_backends_need_url_env_and_a_set_variable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.csv"), "sku,location,qty\nA,W,1\n").unwrap();
    let plan = |state: &str| {
        std::fs::write(
            dir.path().join("p.yaml"),
            format!("version: 1\nname: x\nsource: {{ provider: csv, path: s.csv }}\ntarget: {{ provider: csv, path: s.csv }}\n{state}\n"),
        )
        .unwrap();
    };
    // No url_env: refused, saying which key to add.
    plan("state: { backend: postgres }");
    let (code, _, stderr) = run(stockshift().current_dir(dir.path()).args(["validate", "p.yaml"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("p.yaml:5:19: error: `state.backend: postgres` needs `url_env`"), "{stderr}");
    assert!(stderr.contains("url_env: STOCKSHIFT_STATE_URL"), "{stderr}");
    // A variable that is not set: refused at the variable's name.
    plan("state: { backend: postgres, url_env: STOCKSHIFT_TEST_UNSET_STATE_URL }");
    let (code, _, stderr) = run(stockshift()
        .current_dir(dir.path())
        .env_remove("STOCKSHIFT_TEST_UNSET_STATE_URL")
        .args(["validate", "p.yaml"]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "p.yaml:5:38: error: Environment variable `STOCKSHIFT_TEST_UNSET_STATE_URL` (named by `state.url_env`) is not set"
        ),
        "{stderr}"
    );
    // Set: accepted (validate connects to nothing), and the value is never echoed.
    let url = "postgres://u:never-printed@127.0.0.1:1/x";
    let (code, stdout, stderr) = run(stockshift()
        .current_dir(dir.path())
        .env("STOCKSHIFT_TEST_UNSET_STATE_URL", url)
        .args(["validate", "p.yaml"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("never-printed") && !stderr.contains("never-printed"), "{stdout}{stderr}");
}
