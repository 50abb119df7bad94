//! The committed JSON Schema is exactly what `stockshift schema` prints, and every
//! example plan validates against it.

use crate::util::{root, run, stockshift};

#[test]
fn committed_schema_matches_the_generated_one() {
    let (code, stdout, _) = run(stockshift().arg("schema"));
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(root().join("schemas/plan.schema.json")).unwrap();
    assert!(
        committed == stdout,
        "schemas/plan.schema.json is out of date: run `cargo run -- schema > schemas/plan.schema.json` and commit it"
    );
    let v: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

#[test]
fn example_plans_validate_against_the_committed_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas/plan.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::options().build(&schema).unwrap();
    let mut n = 0;
    for e in std::fs::read_dir(root().join("plans")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let y: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let j = stockshift::config::load::yaml_to_json(&y);
        let errors: Vec<String> = validator.iter_errors(&j).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", p.display());
        n += 1;
    }
    assert!(n >= 1);
    // And the schema does reject things: a typo'd key fails.
    let bad = serde_json::json!({"version": 1, "name": "x", "source": {"provider": "csv", "path": "a"}, "target": {"provider": "csv", "path": "b"}, "mapin": {}});
    assert!(!validator.is_valid(&bad));
}
