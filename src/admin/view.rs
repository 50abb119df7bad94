//! Rendering: the templates under `templates/admin/` (compiled into the binary,
//! HTML auto-escaping on for every one of them), the stylesheet, and the small
//! helpers every handler needs: URL encoding, form and query parsing, and error pages.
//!
//! minijinja is built here without `{% extends %}`, so each page template renders
//! its body and [`Views::page`] places it in `layout.html.j2` as a safe string.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html.j2", include_str!("../../templates/admin/layout.html.j2")),
    ("login.html.j2", include_str!("../../templates/admin/login.html.j2")),
    ("overview.html.j2", include_str!("../../templates/admin/overview.html.j2")),
    ("drift.html.j2", include_str!("../../templates/admin/drift.html.j2")),
    ("key.html.j2", include_str!("../../templates/admin/key.html.j2")),
    ("message.html.j2", include_str!("../../templates/admin/message.html.j2")),
];

const CSS: &str = include_str!("../../templates/admin/admin.css");

/// The compiled templates.
pub(crate) struct Views {
    env: Environment<'static>,
}

/// What the layout shows around a page.
pub(crate) struct Layout<'a> {
    pub plan_name: &'a str,
    /// Signed in: the navigation is shown. `Some("")` for bearer clients.
    pub csrf: Option<&'a str>,
    /// Signed in with the login form (the page offers "Sign out").
    pub session: bool,
}

impl Views {
    pub fn new() -> Views {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Every admin template is HTML, whatever its name; text is escaped with
        // [`escape`] (minijinja's own escaper also turns `/` into `&#x2f;`, which
        // makes every URL in the page hard to read).
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_formatter(|out, state, value| {
            let plain =
                matches!(value.kind(), ValueKind::Undefined | ValueKind::None | ValueKind::Bool | ValueKind::Number);
            if value.is_safe() || plain || !matches!(state.auto_escape(), AutoEscape::Html) {
                return minijinja::escape_formatter(out, state, value);
            }
            out.write_str(&escape(&value.to_string()))
                .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "cannot write the page"))
        });
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("the built-in admin templates are valid");
        }
        Views { env }
    }

    /// Renders template `name` with `ctx`, inside the layout.
    pub fn page(&self, name: &str, title: &str, layout: &Layout<'_>, ctx: Value) -> Result<String, minijinja::Error> {
        let body = self.env.get_template(name)?.render(ctx)?;
        self.env.get_template("layout.html.j2")?.render(context! {
            title => title,
            plan_name => layout.plan_name,
            signed_in => layout.csrf.is_some(),
            session => layout.session,
            csrf => layout.csrf.unwrap_or(""),
            body => Value::from_safe_string(body),
        })
    }

    /// A whole response: the page, or a 500 naming the template error.
    pub fn respond(&self, status: StatusCode, name: &str, title: &str, layout: &Layout<'_>, ctx: Value) -> Response {
        match self.page(name, title, layout, ctx) {
            Ok(html) => html_response(status, html),
            Err(e) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot render the page: {e}")),
        }
    }

    /// A page with one message (errors, refusals).
    pub fn message(&self, status: StatusCode, title: &str, text: &str, layout: &Layout<'_>) -> Response {
        self.respond(
            status,
            "message.html.j2",
            title,
            layout,
            context! { heading => title, text => text, status => status.as_u16() },
        )
    }
}

/// An HTML response.
pub(crate) fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

/// A minimal page without templates, for refusals made before any state is at hand.
pub(crate) fn plain_error(status: StatusCode, text: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code}</title></head>\
         <body><h1>{code}</h1><p>{}</p></body></html>\n",
        escape(text),
        code = status
    );
    html_response(status, html)
}

/// `GET /admin/static/admin.css`.
pub(crate) async fn css() -> Response {
    let mut r = CSS.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    r
}

/// HTML-escapes text (for the few strings not rendered through a template).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL of a key's page.
pub(crate) fn key_url(sku: &str, location: &str) -> String {
    format!("/admin/key?sku={}&location={}", enc(sku), enc(location))
}

/// Decoded `application/x-www-form-urlencoded` pairs (a query string or a form body).
#[derive(Debug, Default)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// Parses `a=1&b=x+y`; `+` is a space, `%XX` a byte; the result must be UTF-8.
    /// A field given twice is refused, so there is never a doubt which one counts.
    pub fn parse(raw: &[u8]) -> Result<Fields, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for part in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (k, v) = match part.iter().position(|b| *b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            let k = decode(k)?;
            let v = decode(v)?;
            if out.iter().any(|(name, _)| *name == k) {
                return Err(format!("the field `{}` is given more than once", shorten(&k)));
            }
            out.push((k, v));
        }
        Ok(Fields(out))
    }

    /// A field's value, when given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn decode(s: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(b) = byte else { return Err("a field holds a bad %-escape".into()) };
                out.push(b);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "a field is not valid UTF-8".to_string())
}

/// At most 60 characters of `s`, for messages that echo input.
pub(crate) fn shorten(s: &str) -> String {
    let mut t: String = s.chars().take(60).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// `95 s`, `12 min 3 s`, `4 h 5 min`, `2 d 3 h`.
pub(crate) fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_decode_and_refuse_doubles_and_bad_escapes() {
        let f = Fields::parse(b"sku=A%2FB+C&location=loc-1&empty=&flag").unwrap();
        assert_eq!(f.get("sku"), Some("A/B C"));
        assert_eq!(f.get("empty"), Some(""));
        assert_eq!(f.get("flag"), Some(""));
        assert_eq!(f.get("missing"), None);
        assert!(Fields::parse(b"a=1&a=2").unwrap_err().contains("more than once"));
        assert!(Fields::parse(b"a=%zz").is_err());
        assert!(Fields::parse(b"a=%").is_err());
        assert!(Fields::parse(b"a=%ff").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn urls_round_trip_and_text_is_escaped() {
        let s = "<script>&\"é x+y";
        let f = Fields::parse(format!("s={}", enc(s)).as_bytes()).unwrap();
        assert_eq!(f.get("s"), Some(s));
        assert_eq!(escape("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
        assert_eq!(age(3725), "1 h 2 min");
    }

    #[test]
    fn every_template_escapes_data() {
        let v = Views::new();
        let layout = Layout { plan_name: "<b>plan</b>", csrf: Some("tok"), session: true };
        let html = v
            .page(
                "message.html.j2",
                "t",
                &layout,
                context! { heading => "<i>", text => "<script>x</script>", status => 400 },
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;b&gt;plan"), "{html}");
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<meta charset=\"utf-8\">"));
    }
}
