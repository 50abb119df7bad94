//! A small JSON path language for manifests: dotted names, array indexes and
//! wildcards, e.g. `data[*].locations[*]`, `meta.pagination.total_pages`,
//! `items[0].sku`, `['key.with.dots']`, `[*]` (every element of a top-level array).
//!
//! A path is parsed once, when the manifest is loaded, and evaluated many times.
//! Evaluation never fails: a missing key, an index out of range or a wildcard over
//! something that is not an array simply yields no value.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    Every,
}

/// A parsed path. The empty path (`$` or ``) selects the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonPath {
    /// Parses `text`; the error says what is wrong and at which character.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let mut steps = Vec::new();
        let s = text.trim();
        let s = s.strip_prefix('$').unwrap_or(s);
        let b = s.as_bytes();
        let mut i = 0;
        let mut expect_name = !s.is_empty() && !s.starts_with('[') && !s.starts_with('.');
        if s.starts_with('.') {
            i = 1;
            expect_name = true;
        }
        while i < b.len() {
            if expect_name {
                let start = i;
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    i += 1;
                }
                let name = &s[start..i];
                if name.is_empty() {
                    return Err(format!("empty name at character {} of `{text}`", start + 1));
                }
                if name.contains([']', '\'', '"', ' ']) {
                    return Err(format!("unexpected character in name `{name}` of `{text}`; quote it as ['{name}']"));
                }
                steps.push(Step::Key(name.to_owned()));
                expect_name = false;
                continue;
            }
            match b[i] {
                b'.' => {
                    i += 1;
                    if i >= b.len() {
                        return Err(format!("`{text}` ends with `.`"));
                    }
                    expect_name = b[i] != b'[';
                    if !expect_name {
                        return Err(format!("`.[` at character {i} of `{text}`: write `a[0]`, not `a.[0]`"));
                    }
                }
                b'[' => {
                    let close = s[i..].find(']').map(|c| c + i).ok_or_else(|| format!("unclosed `[` in `{text}`"))?;
                    let inner = s[i + 1..close].trim();
                    let step = if inner == "*" {
                        Step::Every
                    } else if let Some(q) = unquote(inner) {
                        Step::Key(q.to_owned())
                    } else if let Ok(n) = inner.parse::<usize>() {
                        Step::Index(n)
                    } else {
                        return Err(format!(
                            "`[{inner}]` in `{text}` is not an index, `*` or a quoted key such as ['name']"
                        ));
                    };
                    steps.push(step);
                    i = close + 1;
                    if i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        return Err(format!("expected `.` or `[` after `]` at character {} of `{text}`", i + 1));
                    }
                }
                c => return Err(format!("unexpected `{}` at character {} of `{text}`", c as char, i + 1)),
            }
        }
        Ok(JsonPath { text: text.to_owned(), steps })
    }

    /// Every value the path selects, in document order.
    pub fn select<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![root];
        for step in &self.steps {
            let mut next = Vec::with_capacity(cur.len());
            for v in cur {
                match step {
                    Step::Key(k) => next.extend(v.get(k.as_str())),
                    Step::Index(n) => next.extend(v.get(*n)),
                    Step::Every => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(o) => next.extend(o.values()),
                        _ => {}
                    },
                }
            }
            cur = next;
        }
        cur
    }

    /// The first value the path selects, when it is not JSON `null`.
    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.select(root).into_iter().find(|v| !v.is_null())
    }

    /// Whether the path can select more than one value.
    pub fn is_multi(&self) -> bool {
        self.steps.contains(&Step::Every)
    }
}

fn unquote(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'\'' || b[0] == b'"') && b[b.len() - 1] == b[0] {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

/// A JSON scalar as text: strings as they are, numbers and booleans printed.
/// Objects, arrays and null have no text form.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON value as a whole quantity: an integer, an integral float (`12.0`) or a
/// string holding an integer. Anything else is `None`.
pub fn quantity(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i)
            } else {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
            }
        }
        Value::String(s) => crate::provider::parse_qty(s).or_else(|| {
            let f: f64 = s.trim().parse().ok()?;
            (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(path: &str, v: &Value) -> Vec<Value> {
        JsonPath::parse(path).unwrap().select(v).into_iter().cloned().collect()
    }

    #[test]
    fn names_indexes_and_wildcards() {
        let doc = json!({
            "data": [
                {"identity": {"sku": "A"}, "locations": [{"id": 1, "q": 5}, {"id": 2, "q": 0}]},
                {"identity": {"sku": "B"}, "locations": [{"id": 1, "q": 7}]}
            ],
            "meta": {"pagination": {"total_pages": 3}},
            "odd.key": true
        });
        assert_eq!(sel("data[*].identity.sku", &doc), vec![json!("A"), json!("B")]);
        assert_eq!(sel("data[*].locations[*].q", &doc), vec![json!(5), json!(0), json!(7)]);
        assert_eq!(sel("data[1].locations[0].id", &doc), vec![json!(1)]);
        assert_eq!(sel("meta.pagination.total_pages", &doc), vec![json!(3)]);
        assert_eq!(sel("$.meta.pagination.total_pages", &doc), vec![json!(3)]);
        assert_eq!(sel("['odd.key']", &doc), vec![json!(true)]);
        assert_eq!(sel("$", &doc), vec![doc.clone()]);
        assert_eq!(sel("", &doc), vec![doc.clone()]);
        assert!(JsonPath::parse("data[*].sku").unwrap().is_multi());
        assert!(!JsonPath::parse("a.b[0]").unwrap().is_multi());
    }

    #[test]
    fn top_level_arrays() {
        let doc = json!([{"sku": "A", "stock_quantity": 3}, {"sku": "B", "stock_quantity": null}]);
        assert_eq!(sel("[*].sku", &doc), vec![json!("A"), json!("B")]);
        assert_eq!(sel("[1].sku", &doc), vec![json!("B")]);
        let p = JsonPath::parse("[1].stock_quantity").unwrap();
        assert_eq!(p.first(&doc), None, "null counts as missing");
    }

    #[test]
    fn missing_things_select_nothing() {
        let doc = json!({"a": [1, 2], "s": "text"});
        for p in ["b", "a[5]", "s[*]", "s.x", "a.x", "a[*].x", "a[0][0]"] {
            assert!(sel(p, &doc).is_empty(), "{p}");
        }
    }

    #[test]
    fn bad_paths_are_refused_with_a_reason() {
        for bad in ["a..b", "a.", "a[", "a[x]", "a[0]b", "a.[0]", "a b", "a]"] {
            let e = JsonPath::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn quantities_and_text() {
        assert_eq!(quantity(&json!(12)), Some(12));
        assert_eq!(quantity(&json!(-3)), Some(-3));
        assert_eq!(quantity(&json!(12.0)), Some(12));
        assert_eq!(quantity(&json!("7")), Some(7));
        assert_eq!(quantity(&json!("7.0000")), Some(7));
        for bad in [json!(1.5), json!("1.5"), json!("x"), json!(null), json!(true), json!([1]), json!(1e300)] {
            assert_eq!(quantity(&bad), None, "{bad}");
        }
        assert_eq!(scalar_text(&json!(1)), Some("1".into()));
        assert_eq!(scalar_text(&json!("a")), Some("a".into()));
        assert_eq!(scalar_text(&json!({})), None);
    }
}
