//! `query:` templates: minijinja text whose values reach PostgreSQL only as bound
//! parameters.
//!
//! `{{ bind(params.x) }}` appends the value to the bind list and writes `$N` into
//! the SQL; `{{ ident(params.t) }}` writes a quoted identifier. Anything else
//! written with `{{ ... }}` is refused when the template is rendered, so a value
//! can never become SQL text (the `safe` filter does not help: the check is on
//! the kind of value, not on an escaping flag).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use minijinja::value::{Object, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

/// A value bound to a query parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    IntArray(Vec<i64>),
    TextArray(Vec<String>),
}

/// A rendered query: SQL with `$1..$N` placeholders and the values to bind.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// `$N`, written by `bind()`.
#[derive(Debug)]
struct Placeholder(usize);

impl Object for Placeholder {
    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// A quoted identifier, written by `ident()`.
#[derive(Debug)]
struct Ident(String);

impl Object for Ident {
    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes an identifier for PostgreSQL: `"name"`, with `"` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Renders `query` with `params` (available as `params.<name>`). Errors are
/// plain sentences for the user; they never contain a parameter's value.
pub fn render(query: &str, params: &BTreeMap<String, serde_json::Value>) -> Result<Rendered, String> {
    let binds: Arc<Mutex<Vec<Bind>>> = Arc::default();
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let sink = binds.clone();
    env.add_function("bind", move |v: Value| -> Result<Value, Error> {
        let b = to_bind(&v)?;
        let mut list = sink.lock().unwrap_or_else(|p| p.into_inner());
        list.push(b);
        Ok(Value::from_object(Placeholder(list.len())))
    });
    env.add_function("ident", |v: Value| -> Result<Value, Error> {
        let Some(s) = v.as_str() else {
            return Err(Error::new(ErrorKind::InvalidOperation, "ident() takes a string"));
        };
        let quoted = s.split('.').map(quote_ident).collect::<Vec<_>>().join(".");
        Ok(Value::from_object(Ident(quoted)))
    });
    env.set_formatter(|out, _state, value| {
        if let Some(p) = value.downcast_object_ref::<Placeholder>() {
            return write!(out, "${}", p.0).map_err(|_| Error::new(ErrorKind::WriteFailure, "write failed"));
        }
        if let Some(i) = value.downcast_object_ref::<Ident>() {
            return out.write_str(&i.0).map_err(|_| Error::new(ErrorKind::WriteFailure, "write failed"));
        }
        Err(Error::new(
            ErrorKind::InvalidOperation,
            "a value was written into the SQL text; write `{{ bind(...) }}` to pass it as a bound parameter \
             (or `{{ ident(...) }}` for a table or column name)",
        ))
    });
    let ctx = minijinja::context! { params => Value::from(minijinja::value::Serde(params)) };
    let sql = env.render_str(query, ctx).map_err(describe)?;
    let binds = std::mem::take(&mut *binds.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Rendered { sql, binds })
}

/// A template error as one sentence with its line, without the debug dump.
fn describe(e: Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (query template line {line})"));
    }
    s
}

fn to_bind(v: &Value) -> Result<Bind, Error> {
    if v.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "bind() was given an undefined value; is the name under `params:` spelled the same?",
        ));
    }
    let json = serde_json::to_value(v)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "bind() takes a string, number, boolean, null or list"))?;
    let bad = |what: &str| Error::new(ErrorKind::InvalidOperation, format!("bind() cannot bind {what}"));
    Ok(match json {
        serde_json::Value::Null => Bind::Null,
        serde_json::Value::Bool(b) => Bind::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Bind::Int(i),
            None => Bind::Float(n.as_f64().ok_or_else(|| bad("this number"))?),
        },
        serde_json::Value::String(s) => Bind::Text(s),
        serde_json::Value::Array(items) => {
            if items.iter().all(|x| x.as_i64().is_some()) && !items.is_empty() {
                Bind::IntArray(items.iter().filter_map(|x| x.as_i64()).collect())
            } else if items.iter().all(|x| x.is_string()) {
                Bind::TextArray(items.into_iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            } else {
                return Err(bad("a list mixing types (use a list of strings or of integers)"));
            }
        }
        serde_json::Value::Object(_) => return Err(bad("a mapping")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn binds_become_numbered_placeholders() {
        let p = params(serde_json::json!({"wh": "EAST", "min": 3, "locs": ["a", "b"]}));
        let r = render(
            "SELECT sku, location, qty FROM stock WHERE wh = {{ bind(params.wh) }} AND qty >= {{ bind(params.min) }}\
             {% if params.locs %} AND location = ANY({{ bind(params.locs) }}){% endif %}",
            &p,
        )
        .unwrap();
        assert_eq!(r.sql, "SELECT sku, location, qty FROM stock WHERE wh = $1 AND qty >= $2 AND location = ANY($3)");
        assert_eq!(
            r.binds,
            vec![Bind::Text("EAST".into()), Bind::Int(3), Bind::TextArray(vec!["a".into(), "b".into()])]
        );
    }

    #[test]
    fn values_never_become_sql_text() {
        let p = params(serde_json::json!({"wh": "x'; DROP TABLE stock; --"}));
        for q in ["SELECT 1 WHERE a = '{{ params.wh }}'", "SELECT {{ params.wh | safe }}", "SELECT {{ 'lit' }}"] {
            let e = render(q, &p).unwrap_err();
            assert!(e.contains("bind("), "{e}");
            assert!(!e.contains("DROP"), "the value is not echoed: {e}");
        }
        let r = render("SELECT 1 WHERE a = {{ bind(params.wh) }}", &p).unwrap();
        assert_eq!(r.sql, "SELECT 1 WHERE a = $1");
        assert_eq!(r.binds, vec![Bind::Text("x'; DROP TABLE stock; --".into())]);
    }

    #[test]
    fn identifiers_are_quoted_and_unknown_params_refused() {
        let p = params(serde_json::json!({"t": "we\"ird.table"}));
        assert_eq!(render("FROM {{ ident(params.t) }}", &p).unwrap().sql, "FROM \"we\"\"ird\".\"table\"");
        let e = render("SELECT {{ bind(params.missing) }}", &p).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        let e = render("SELECT {{ bind(params.t }}", &p).unwrap_err();
        assert!(e.contains("syntax"), "{e}");
    }
}
