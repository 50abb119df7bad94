//! Reading a plan file: YAML text to [`PlanConfig`], with every shape problem
//! reported at once and located at `file:line:column`.
//!
//! The steps: index the document's positions (`spans`), parse it to a value,
//! validate the value against the generated JSON Schema collecting all errors,
//! then deserialize the typed plan. Semantic checks (files, bundles, secrets in
//! values) happen afterwards in `config::check`.

use std::path::Path;

use serde_json::Value as Json;

use super::model::PlanConfig;
use super::schema::{deref, plan_schema};
use super::spans::{Path as YPath, Pos, Seg, SpanIndex, display_path};
use crate::diag::{Diagnostic, Diagnostics};

/// A plan file that parsed and matched the schema.
#[derive(Debug)]
pub struct Loaded {
    pub config: PlanConfig,
    pub text: String,
    pub spans: SpanIndex,
}

/// Keys that would hold a secret in plain text. The plan names secrets by
/// environment variable only, so these get a dedicated message.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "access_token",
    "client_secret",
    "private_key",
    "url",
    "dsn",
    "connection_string",
];

/// Parses plan text. `file` is the name used in diagnostics.
pub fn load_str(file: &str, text: &str) -> Result<Loaded, Diagnostics> {
    let mut diags = Diagnostics::new();
    let spans = match SpanIndex::build(text) {
        Ok(s) => s,
        Err((pos, msg)) => {
            return Err(Diagnostic::error(file, pos.line, pos.col, format!("YAML syntax error: {msg}"))
                .help("Fix the YAML syntax at this position (indentation, a missing `:` or an unclosed bracket or quote).")
                .into());
        }
    };
    for d in &spans.duplicates {
        let name = match d.path.last() {
            Some(Seg::Key(k)) => k.clone(),
            _ => String::new(),
        };
        let parent = display_path(&d.path[..d.path.len() - 1]);
        let why = if parent == "mapping.skus" { " (an old SKU may be mapped only once)" } else { "" };
        diags.push(
            Diagnostic::error(file, d.again.line, d.again.col, format!("Duplicate key `{name}` in `{parent}`"))
                .help(format!("`{name}` is already set at line {}; keep one entry{why}.", d.first.line)),
        );
    }
    if diags.has_errors() {
        // The value-level reader would report the first duplicate again, less precisely.
        return Err(diags);
    }
    let yaml: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            diags.push(
                Diagnostic::error(file, line, col, format!("YAML error: {e}")).help("Fix the YAML at this position."),
            );
            return Err(diags);
        }
    };
    if matches!(yaml, serde_yaml::Value::Null) {
        diags
            .push(Diagnostic::error(file, 1, 1, "The plan file is empty").help(
                "Start from plans/demo.yaml; a plan needs at least `version: 1`, `name`, `source` and `target`.",
            ));
        return Err(diags);
    }
    let json = yaml_to_json(&yaml);
    let schema = plan_schema();
    let validator = jsonschema::options().build(&schema).expect("the generated schema compiles");
    let ctx = Ctx { file, spans: &spans, schema: &schema, instance: &json };
    for err in validator.iter_errors(&json) {
        ctx.convert(&err, &mut diags);
    }
    if diags.has_errors() {
        dedup(&mut diags);
        diags.sort();
        return Err(diags);
    }
    match serde_json::from_value::<PlanConfig>(json) {
        Ok(config) => Ok(Loaded { config, text: text.to_owned(), spans }),
        Err(e) => {
            diags.push(
                Diagnostic::error(file, 1, 1, format!("Invalid plan: {e}"))
                    .help("Compare the plan with docs/plan-file.md."),
            );
            Err(diags)
        }
    }
}

/// Reads and parses a plan file.
pub fn load_file(path: &Path, display: &str) -> Result<Loaded, Diagnostics> {
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                return Err(Diagnostic::error(display, 0, 0, "The plan file is not UTF-8 text")
                    .help("Save the plan as UTF-8.")
                    .into());
            }
        },
        Err(e) => {
            return Err(Diagnostic::error(display, 0, 0, format!("Cannot read the plan file: {e}"))
                .help("Check the path; plan files are YAML, e.g. plans/demo.yaml.")
                .into());
        }
    };
    load_str(display, &text)
}

fn dedup(diags: &mut Diagnostics) {
    let mut seen = std::collections::HashSet::new();
    let mut out = Diagnostics::new();
    for d in diags.iter() {
        if seen.insert((d.line, d.col, d.summary.clone())) {
            out.push(d.clone());
        }
    }
    *diags = out;
}

/// Converts YAML to JSON for schema validation. Mapping keys become strings
/// (`12345: X` is a SKU named "12345").
pub fn yaml_to_json(v: &serde_yaml::Value) -> Json {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Json::Null,
        Y::Bool(b) => Json::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or(f64::NAN)).map(Json::Number).unwrap_or(Json::Null)
            }
        }
        Y::String(s) => Json::String(s.clone()),
        Y::Sequence(items) => Json::Array(items.iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                out.insert(scalar_key(k), yaml_to_json(v));
            }
            Json::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(&t.value),
    }
}

fn scalar_key(k: &serde_yaml::Value) -> String {
    use serde_yaml::Value as Y;
    match k {
        Y::String(s) => s.clone(),
        Y::Number(n) => n.to_string(),
        Y::Bool(b) => b.to_string(),
        Y::Null => "null".into(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_owned(),
    }
}

fn parse_pointer(p: &str) -> YPath {
    p.split('/')
        .skip(1)
        .map(|s| {
            let s = s.replace("~1", "/").replace("~0", "~");
            Seg::Key(s)
        })
        .collect()
}

struct Ctx<'a> {
    file: &'a str,
    spans: &'a SpanIndex,
    schema: &'a Json,
    instance: &'a Json,
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "nothing (null)",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

impl Ctx<'_> {
    /// Turns JSON-pointer segments into document segments (list indices are numbers).
    fn resolve(&self, raw: &YPath) -> YPath {
        let mut node = Some(self.instance);
        let mut out = Vec::with_capacity(raw.len());
        for seg in raw {
            let Seg::Key(k) = seg else {
                out.push(seg.clone());
                continue;
            };
            match node {
                Some(Json::Array(items)) => {
                    let i: usize = k.parse().unwrap_or(0);
                    out.push(Seg::Index(i));
                    node = items.get(i);
                }
                Some(Json::Object(map)) => {
                    out.push(seg.clone());
                    node = map.get(k);
                }
                _ => {
                    out.push(seg.clone());
                    node = None;
                }
            }
        }
        out
    }

    fn value_at(&self, path: &[Seg]) -> Option<&Json> {
        let mut node = self.instance;
        for seg in path {
            node = match (seg, node) {
                (Seg::Key(k), Json::Object(m)) => m.get(k)?,
                (Seg::Index(i), Json::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The schema describing the node at `path`, following `$ref`s and picking the
    /// provider variant by its `provider` value.
    fn schema_at(&self, path: &[Seg]) -> Option<&Json> {
        let mut node = deref(self.schema, self.schema);
        for (depth, seg) in path.iter().enumerate() {
            node = self.pick_variant(node, &path[..depth]);
            node = match seg {
                Seg::Key(k) => {
                    if let Some(p) = node.get("properties").and_then(|p| p.get(k)) {
                        p
                    } else {
                        node.get("additionalProperties").filter(|v| v.is_object())?
                    }
                }
                Seg::Index(_) => node.get("items")?,
            };
            node = deref(self.schema, node);
        }
        Some(self.pick_variant(node, path))
    }

    fn pick_variant<'s>(&'s self, mut node: &'s Json, path: &[Seg]) -> &'s Json {
        // Choices nest (an optional value is `anyOf [T, null]`, T itself a choice).
        for _ in 0..8 {
            let next = self.pick_one(node, path);
            if std::ptr::eq(next, node) {
                return node;
            }
            node = next;
        }
        node
    }

    fn pick_one<'s>(&'s self, node: &'s Json, path: &[Seg]) -> &'s Json {
        let Some(variants) = node.get("oneOf").or_else(|| node.get("anyOf")).and_then(Json::as_array) else {
            return node;
        };
        let variants: Vec<&Json> = variants
            .iter()
            .map(|v| deref(self.schema, v))
            .filter(|v| v.get("type").and_then(Json::as_str) != Some("null"))
            .collect();
        if variants.len() == 1 {
            return variants[0];
        }
        let value = self.value_at(path);
        let provider = value.and_then(|v| v.get("provider")).and_then(Json::as_str);
        for v in &variants {
            if let Some(p) = provider {
                if v.pointer("/properties/provider/const").and_then(Json::as_str) == Some(p) {
                    return v;
                }
            } else if value.is_some_and(|val| val.is_object()) && v.get("properties").is_some() {
                // An untagged mapping: pick the variant whose keys the value uses.
                let keys_match = value
                    .and_then(Json::as_object)
                    .is_some_and(|m| m.keys().all(|k| v.pointer(&format!("/properties/{k}")).is_some()));
                if keys_match {
                    return v;
                }
            }
        }
        // A free-form mapping (e.g. inline SKU entries) takes any keys.
        if value.is_some_and(Json::is_object)
            && let Some(v) = variants.iter().find(|v| v.get("additionalProperties").is_some_and(Json::is_object))
        {
            return v;
        }
        node
    }

    fn keys_here(&self, path: &[Seg]) -> Vec<String> {
        self.schema_at(path)
            .and_then(|s| s.get("properties"))
            .and_then(Json::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn push(&self, diags: &mut Diagnostics, pos: Pos, summary: String, help: String) {
        diags.push(Diagnostic::error(self.file, pos.line, pos.col, summary).help(help));
    }

    fn convert(&self, err: &jsonschema::ValidationError<'_>, diags: &mut Diagnostics) {
        use jsonschema::error::ValidationErrorKind as K;
        let path = self.resolve(&parse_pointer(err.instance_path().as_str()));
        let here = display_path(&path);
        let value = self.value_at(&path);
        match err.kind() {
            K::AdditionalProperties { unexpected } => {
                let valid = self.keys_here(&path);
                for key in unexpected {
                    let mut kp = path.clone();
                    kp.push(Seg::Key(key.clone()));
                    let pos = self.spans.locate_key(&kp);
                    if SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
                        // Never echo the value: it may be a real secret.
                        self.push(
                            diags,
                            pos,
                            format!("Literal secret `{key}` in `{here}`"),
                            format!(
                                "Secrets are never written in a plan. Put the value in an environment variable and name it instead, e.g. `{}_env: MY_{}`, then remove `{key}` (and rotate the secret if this file was committed).",
                                key.trim_end_matches("_key"),
                                key.to_ascii_uppercase()
                            ),
                        );
                    } else {
                        let help = if valid.is_empty() {
                            format!("Remove `{key}`; see docs/plan-file.md for the keys `{here}` takes.")
                        } else {
                            format!("Remove it or fix the spelling; `{here}` takes: {}.", valid.join(", "))
                        };
                        self.push(diags, pos, format!("Unknown key `{key}` in `{here}`"), help);
                    }
                }
            }
            K::Required { property } => {
                let prop = property.as_str().unwrap_or("?");
                let pos = self.spans.locate_key(&path);
                let what = self
                    .schema_at(&path)
                    .and_then(|s| s.pointer(&format!("/properties/{prop}/description")))
                    .and_then(Json::as_str)
                    .unwrap_or("");
                self.push(
                    diags,
                    pos,
                    format!("Missing key `{prop}` in `{here}`"),
                    format!("Add `{prop}:` under `{here}`. {what}").trim_end().to_owned(),
                );
            }
            K::Type { kind } => {
                let expected = format!("{kind:?}").to_lowercase();
                let expected = expected
                    .trim_start_matches("single(")
                    .trim_start_matches("multiple(")
                    .trim_end_matches(')')
                    .replace("object", "mapping")
                    .replace("array", "list");
                let found = value.map(type_name).unwrap_or("nothing");
                let mut help = format!("Write {} here.", article(&expected));
                if expected == "string" && matches!(value, Some(Json::Number(_)) | Some(Json::Bool(_))) {
                    help = "Quote the value (e.g. `\"12345\"`) so YAML reads it as text.".into();
                }
                self.push(
                    diags,
                    self.spans.locate(&path),
                    format!("Wrong type for `{here}`: expected {expected}, found {found}"),
                    help,
                );
            }
            K::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().map(|o| o.as_str().unwrap_or("?").to_owned()).collect())
                    .unwrap_or_default();
                let shown = value.map(show_value).unwrap_or_default();
                self.push(
                    diags,
                    self.spans.locate(&path),
                    format!("Invalid value {shown} for `{here}`"),
                    format!("Use one of: {}.", opts.join(", ")),
                );
            }
            K::Constant { expected_value } => {
                let shown = value.map(show_value).unwrap_or_default();
                self.push(
                    diags,
                    self.spans.locate(&path),
                    format!("Invalid value {shown} for `{here}`"),
                    format!("This key must be {expected_value}."),
                );
            }
            K::Minimum { limit } | K::ExclusiveMinimum { limit } => {
                let shown = value.map(show_value).unwrap_or_default();
                self.push(
                    diags,
                    self.spans.locate(&path),
                    format!("Value {shown} for `{here}` is too small"),
                    format!("Use a number of at least {limit}."),
                );
            }
            K::Maximum { limit } | K::ExclusiveMaximum { limit } => {
                let shown = value.map(show_value).unwrap_or_default();
                self.push(
                    diags,
                    self.spans.locate(&path),
                    format!("Value {shown} for `{here}` is too large"),
                    format!("Use a number of at most {limit}."),
                );
            }
            K::MinLength { .. } | K::MinProperties { .. } | K::MinItems { .. } => {
                self.push(
                    diags,
                    self.spans.locate(&path),
                    format!("`{here}` is empty"),
                    "Give it a value, or remove the key.".into(),
                );
            }
            K::Pattern { pattern } => {
                let is_env = matches!(path.last(), Some(Seg::Key(k)) if k.ends_with("_env"));
                if is_env {
                    self.push(
                        diags,
                        self.spans.locate(&path),
                        format!("`{here}` must name an environment variable, not hold a value"),
                        "This looks like a literal secret or URL. Put it in an environment variable and write only the variable's name here (letters, digits and `_`), e.g. `SHOPIFY_WEBHOOK_SECRET`.".into(),
                    );
                } else {
                    let shown = value.map(show_value).unwrap_or_default();
                    self.push(
                        diags,
                        self.spans.locate(&path),
                        format!("Invalid value {shown} for `{here}`"),
                        format!("The value must match `{pattern}`."),
                    );
                }
            }
            K::OneOfNotValid { context } | K::AnyOf { context } => self.convert_variants(&path, context, diags),
            _ => {
                self.push(
                    diags,
                    self.spans.locate(&path),
                    format!("Invalid `{here}`: {err}"),
                    "See docs/plan-file.md for this key.".into(),
                );
            }
        }
    }

    /// An untagged or tagged choice failed: report the errors of the variant the
    /// user evidently meant, or say which forms are accepted.
    fn convert_variants(
        &self,
        path: &[Seg],
        context: &[Vec<jsonschema::ValidationError<'static>>],
        diags: &mut Diagnostics,
    ) {
        let here = display_path(path);
        let value = self.value_at(path);
        let node = self.schema_at(&path[..path.len().saturating_sub(0)]);
        let variants: Vec<&Json> =
            self.raw_variants(path).map(|v| v.iter().map(|x| deref(self.schema, x)).collect()).unwrap_or_default();
        let _ = node;
        // A closed choice (an enum whose variants carry docs): list the values.
        let consts: Vec<&str> = variants.iter().filter_map(|v| v.get("const").and_then(Json::as_str)).collect();
        if !consts.is_empty() && consts.len() == variants.len() {
            let shown = value.map(show_value).unwrap_or_default();
            self.push(
                diags,
                self.spans.locate(path),
                format!("Invalid value {shown} for `{here}`"),
                format!("Use one of: {}.", consts.join(", ")),
            );
            return;
        }
        // Tagged providers: choose by the `provider` value.
        if let Some(obj) = value.and_then(Json::as_object)
            && variants.iter().any(|v| v.pointer("/properties/provider/const").is_some())
        {
            let names: Vec<&str> = variants
                .iter()
                .filter_map(|v| v.pointer("/properties/provider/const").and_then(Json::as_str))
                .collect();
            match obj.get("provider") {
                None => {
                    self.push(
                        diags,
                        self.spans.locate_key(path),
                        format!("Missing key `provider` in `{here}`"),
                        format!("Add `provider:` with one of: {}.", names.join(", ")),
                    );
                }
                Some(p) => {
                    let pname = p.as_str().unwrap_or("");
                    match variants
                        .iter()
                        .position(|v| v.pointer("/properties/provider/const").and_then(Json::as_str) == Some(pname))
                    {
                        Some(i) if i < context.len() => {
                            for e in &context[i] {
                                self.convert(e, diags);
                            }
                        }
                        _ => {
                            let mut pp = path.to_vec();
                            pp.push(Seg::Key("provider".into()));
                            self.push(
                                diags,
                                self.spans.locate(&pp),
                                format!("Unknown provider {} in `{here}`", show_value(p)),
                                format!("Use one of: {}.", names.join(", ")),
                            );
                        }
                    }
                }
            }
            return;
        }
        // Untagged: a variant whose errors are all below this node (not about its
        // type) is the one the user wrote; report its errors.
        let own_type = |errs: &Vec<jsonschema::ValidationError<'static>>| {
            errs.iter().any(|e| {
                matches!(e.kind(), jsonschema::error::ValidationErrorKind::Type { .. })
                    && self.resolve(&parse_pointer(e.instance_path().as_str())).len() == path.len()
            })
        };
        let candidates: Vec<usize> = (0..context.len()).filter(|&i| !own_type(&context[i])).collect();
        if candidates.len() == 1 {
            for e in &context[candidates[0]] {
                self.convert(e, diags);
            }
            return;
        }
        if candidates.len() > 1 {
            // Prefer the variant with the fewest complaints.
            let best = candidates.iter().copied().min_by_key(|&i| context[i].len()).unwrap_or(0);
            for e in &context[best] {
                self.convert(e, diags);
            }
            return;
        }
        let forms: Vec<String> = variants
            .iter()
            .map(|v| match (v.get("description").and_then(Json::as_str), v.get("type").and_then(Json::as_str)) {
                (Some(d), _) => d.trim_end_matches('.').to_owned(),
                (None, Some("string")) => "a string".to_owned(),
                (None, Some("object")) => "a mapping".to_owned(),
                (None, Some(t)) => article(t),
                (None, None) => "another form".to_owned(),
            })
            .collect();
        let found = value.map(type_name).unwrap_or("nothing");
        let wants_string = variants.iter().any(|v| v.get("type").and_then(Json::as_str) == Some("string"));
        let help = if wants_string && matches!(value, Some(Json::Number(_)) | Some(Json::Bool(_))) {
            format!(
                "Quote the value (e.g. `\"12345\"`) so YAML reads it as text; accepted forms: {}.",
                forms.join("; or ")
            )
        } else {
            format!("Write one of: {}.", forms.join("; or "))
        };
        self.push(diags, self.spans.locate(path), format!("Invalid `{here}`: found {found}"), help);
    }

    fn raw_variants(&self, path: &[Seg]) -> Option<&Vec<Json>> {
        // The schema of the node before picking a variant.
        let parent =
            if path.is_empty() { deref(self.schema, self.schema) } else { self.schema_at(&path[..path.len() - 1])? };
        let node = match path.last() {
            None => parent,
            Some(Seg::Key(k)) => parent
                .get("properties")
                .and_then(|p| p.get(k))
                .or_else(|| parent.get("additionalProperties").filter(|v| v.is_object()))?,
            Some(Seg::Index(_)) => parent.get("items")?,
        };
        let mut node = deref(self.schema, node);
        // Unwrap `anyOf [T, null]` (optional keys) to reach T's own choice.
        for _ in 0..8 {
            let vs = node.get("oneOf").or_else(|| node.get("anyOf")).and_then(Json::as_array)?;
            let non_null: Vec<&Json> = vs
                .iter()
                .filter(|v| deref(self.schema, v).get("type").and_then(Json::as_str) != Some("null"))
                .collect();
            if non_null.len() == 1 && vs.len() == 2 {
                node = deref(self.schema, non_null[0]);
                continue;
            }
            return Some(vs);
        }
        None
    }
}

fn article(word: &str) -> String {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {word}"),
        _ => format!("a {word}"),
    }
}

fn show_value(v: &Json) -> String {
    match v {
        Json::String(s) => format!("`{s}`"),
        Json::Object(_) => "(a mapping)".into(),
        Json::Array(_) => "(a list)".into(),
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "version: 1\nname: t\nsource: { provider: csv, path: s.csv }\ntarget: { provider: sqlite, path: t.db }\n";

    fn errors(text: &str) -> Vec<String> {
        match load_str("p.yaml", text) {
            Ok(_) => vec![],
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_plan_loads_with_defaults() {
        let l = load_str("p.yaml", MINIMAL).unwrap();
        assert_eq!(l.config.name, "t");
        assert_eq!(l.config.limits.max_writes, 50_000);
        assert_eq!(l.config.target.kind(), "sqlite");
    }

    #[test]
    fn unknown_key_is_located_and_lists_valid_keys() {
        let e = errors(&format!("{MINIMAL}mapping:\n  orphan: zero\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("p.yaml:6:3: error: Unknown key `orphan` in `mapping`"), "{}", e[0]);
        assert!(e[0].contains("orphans"), "{}", e[0]);
    }

    #[test]
    fn all_problems_are_collected() {
        let text = "version: 1\nname: t\nsource: { provider: csv }\ntarget: { provider: ftp, path: x }\nthresholds:\n  max_drift_ratio: lots\nlimits: { max_writes: -1 }\n";
        let e = errors(text);
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e.iter().any(|l| l.contains("Missing key `path` in `source`")));
        assert!(e.iter().any(|l| l.contains("Unknown provider `ftp`")));
        assert!(e.iter().any(|l| l.contains("p.yaml:6:20: error: Wrong type for `thresholds.max_drift_ratio`")));
        assert!(e.iter().any(|l| l.contains("`limits.max_writes` is too small")));
    }

    #[test]
    fn literal_secret_is_an_error_that_does_not_echo_the_value() {
        let text =
            format!("{MINIMAL}events:\n  sources:\n    - {{ name: shop, kind: shopify, secret: shpss_abcdef }}\n");
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:#?}"); // the secret, and the missing secret_env
        assert!(e.iter().any(|l| l.contains("Literal secret `secret`")));
        assert!(e.iter().all(|l| !l.contains("shpss_abcdef")));
        let text = format!(
            "{MINIMAL}events:\n  sources:\n    - {{ name: shop, kind: shopify, secret_env: 'shpss_abc def' }}\n"
        );
        let e = errors(&text);
        assert!(e[0].contains("must name an environment variable"), "{e:?}");
    }

    #[test]
    fn duplicate_sku_map_entry_names_both_lines() {
        let text = format!("{MINIMAL}mapping:\n  skus:\n    A: B\n    C: D\n    A: E\n");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("p.yaml:9:5: error: Duplicate key `A` in `mapping.skus`"), "{}", e[0]);
        assert!(e[0].contains("line 7"), "{}", e[0]);
    }

    #[test]
    fn sku_target_forms() {
        let ok = format!("{MINIMAL}mapping:\n  skus:\n    A: B\n    CASE: {{ sku: EACH, factor: 12 }}\n");
        assert!(errors(&ok).is_empty());
        let bad = format!("{MINIMAL}mapping:\n  skus:\n    CASE: {{ sku: EACH, factor: 0 }}\n");
        let e = errors(&bad);
        assert!(e.iter().any(|l| l.contains("mapping.skus.CASE.factor") && l.contains("too small")), "{e:?}");
        let bad = format!("{MINIMAL}mapping:\n  skus:\n    CASE: {{ sku: EACH, factr: 2 }}\n");
        let e = errors(&bad);
        assert!(e.iter().any(|l| l.contains("Unknown key `factr`")), "{e:?}");
        let num = format!("{MINIMAL}mapping:\n  skus:\n    A: 12345\n");
        let e = errors(&num);
        assert!(e.iter().any(|l| l.contains("Quote the value")), "{e:?}");
    }

    #[test]
    fn syntax_error_and_empty_file() {
        let e = errors("version: 1\nname: [x\n");
        assert!(e[0].contains("YAML syntax error"), "{e:?}");
        let e = errors("");
        assert!(e[0].contains("empty"), "{e:?}");
        let e = errors("- 1\n- 2\n");
        assert!(e[0].contains("Wrong type"), "{e:?}");
    }

    #[test]
    fn version_must_be_one() {
        let e = errors(&MINIMAL.replace("version: 1", "version: 2"));
        assert!(e[0].contains("Invalid value `2` for `version`"), "{e:?}");
    }
}
