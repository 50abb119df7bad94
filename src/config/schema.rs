//! The plan's JSON Schema, generated from `config::model`.
//!
//! `stockshift schema` prints it and `schemas/plan.schema.json` holds the same
//! text; a test fails when they differ. `config::load` validates every plan
//! against it, so the schema editors use and the checks stockshift runs agree.

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::model::PlanConfig;

/// The schema as a JSON value.
pub fn plan_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<PlanConfig>();
    let Value::Object(mut body) = schema.to_value() else { unreachable!("a root schema is an object") };
    // Identification first, then the body, so the file reads top-down.
    let mut out = serde_json::Map::new();
    for key in ["$schema", "title", "description"] {
        if let Some(v) = body.remove(key) {
            out.insert(key.into(), v);
        }
    }
    out.insert("$id".into(), Value::String("https://stockshift.dev/schemas/plan.schema.json".into()));
    out.extend(body);
    Value::Object(out)
}

/// The schema as pretty-printed JSON text with a final newline.
pub fn plan_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&plan_schema()).expect("a JSON value always serializes");
    s.push('\n');
    s
}

/// Follows `$ref`s to `#/$defs/...` until a non-reference schema is reached.
pub fn deref<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix("#/$defs/").and_then(|name| root.get("$defs")?.get(name)) {
                Some(target) => node = target,
                None => return node,
            },
            None => return node,
        }
    }
    node
}
