//! The manifest's request templates (minijinja): paths, query values, headers and
//! JSON bodies rendered from the batch and the plan's `vars`.
//!
//! Templates are compiled once, when the manifest loads, so a syntax error is a
//! validation error. Undefined names are errors too (strict mode): a typo in a
//! template must not send a request with an empty field. Nothing is escaped
//! implicitly; `tojson` writes a JSON literal (use it for every string in a body)
//! and `urlencode` percent-encodes a path segment or query value.

use minijinja::value::{Serde, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

use super::transport::percent_encode;

/// A set of named, compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("count", &self.env.templates().count()).finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("tojson", tojson);
        env.add_filter("urlencode", urlencode);
        env.add_filter("b64", b64);
        Templates { env }
    }

    /// Compiles `source` under `name`. The error names the line inside the template.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env.add_template_owned(name.to_owned(), source.to_owned()).map_err(|e| describe(&e))
    }

    /// Renders the template `name` with `ctx` (any serializable value).
    pub fn render<S: serde::Serialize>(&self, name: &str, ctx: &S) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(|e| describe(&e))?;
        t.render(Value::from(Serde(ctx))).map_err(|e| describe(&e))
    }
}

fn describe(e: &Error) -> String {
    let mut s = e.detail().map(str::to_owned).unwrap_or_else(|| e.kind().to_string());
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}

/// Filters see undefined values even in strict mode; refuse them like printing does.
fn defined(v: &Value, filter: &str) -> Result<(), Error> {
    if v.is_undefined() {
        Err(Error::new(ErrorKind::UndefinedError, format!("undefined value passed to `{filter}`")))
    } else {
        Ok(())
    }
}

fn tojson(v: Value) -> Result<String, Error> {
    defined(&v, "tojson")?;
    serde_json::to_string(&v).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
}

fn b64(v: Value) -> Result<String, Error> {
    use base64::Engine;
    defined(&v, "b64")?;
    let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    Ok(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()))
}

fn urlencode(v: Value) -> Result<String, Error> {
    defined(&v, "urlencode")?;
    Ok(match v.as_str() {
        Some(s) => percent_encode(s),
        None => percent_encode(&v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_json_body_from_a_batch() {
        let mut t = Templates::new();
        t.add(
            "body",
            r#"{"reason": {{ vars.reason | default("stockshift") | tojson }}, "items": [
{%- for w in writes %}{"location_id": {{ w.location | int }}, "sku": {{ w.sku | tojson }}, "quantity": {{ w.new }}}{{ "," if not loop.last }}{% endfor %}]}"#,
        )
        .unwrap();
        let out = t
            .render(
                "body",
                &json!({"vars": {}, "writes": [
                    {"sku": "A\"1", "location": "1", "new": 5},
                    {"sku": "B", "location": "2", "new": 0}
                ]}),
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"reason": "stockshift", "items": [
                {"location_id": 1, "sku": "A\"1", "quantity": 5},
                {"location_id": 2, "sku": "B", "quantity": 0}
            ]})
        );
        let out = t.render("body", &json!({"vars": {"reason": "cutover"}, "writes": []})).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["reason"], "cutover");
    }

    #[test]
    fn urlencode_and_strict_names() {
        let mut t = Templates::new();
        t.add("p", "/items/{{ sku | urlencode }}/{{ location }}").unwrap();
        assert_eq!(t.render("p", &json!({"sku": "A B/1", "location": 3})).unwrap(), "/items/A%20B%2F1/3");
        t.add("a", "Basic {{ token | b64 }}").unwrap();
        assert_eq!(t.render("a", &json!({"token": "ck:cs"})).unwrap(), "Basic Y2s6Y3M=");
        let e = t.render("p", &json!({"location": 3})).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let mut t = Templates::new();
        let e = t.add("bad", "ok\n{% for w in writes %}").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
