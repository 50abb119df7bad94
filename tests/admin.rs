//! The admin page of `serve` end to end: the real binary over real HTTP on
//! 127.0.0.1 (token, sessions, CSRF, the compare-and-set fix and its audit, bad
//! input, paging through 100,000 drifted keys, HTML escaping), and a real headless
//! Chromium driven over the DevTools protocol through sign-in, the drift list, a
//! fix and its audit entry, with screenshots (skipped with a note when Chromium is
//! not installed). `UPDATE_SCREENSHOTS=1` copies the screenshots to `docs/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockshift::state::{DriftRow, NewReconcileRun, StateStore};

use crate::util::{copy_dir, qty, root, run, stockshift};

const TOKEN_ENV: &str = "STOCKSHIFT_TEST_ADMIN_TOKEN";
const TOKEN: &str = "test-admin-token-5f1c0a9e7d3b2a64";
const ERP_ENV: &str = "STOCKSHIFT_TEST_ADMIN_ERP_SECRET";
/// `serve` needs an event source; the tests send no webhook.
const EVENTS: &str =
    "events:\n  sources:\n    - { name: erp, kind: standard, secret_env: STOCKSHIFT_TEST_ADMIN_ERP_SECRET }\n";

// ---------------------------------------------------------------- fixture

/// A copy of `plans/` with the demo plan's admin page on, its state under `state/`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_admin(Some(&format!("admin: {{ token_env: {TOKEN_ENV} }}\n")))
    }

    fn with_admin(admin: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root().join("plans"), dir.path());
        let plan = dir.path().join("demo.yaml");
        let mut text = std::fs::read_to_string(&plan).unwrap();
        text.push_str(EVENTS);
        if let Some(a) = admin {
            text.push_str(a);
        }
        std::fs::write(&plan, text).unwrap();
        Fixture { dir }
    }
    fn plan(&self) -> PathBuf {
        self.dir.path().join("demo.yaml")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn target(&self) -> PathBuf {
        self.dir.path().join("demo/target.db")
    }
    fn set_target(&self, sku: &str, loc: &str, q: i64) {
        let c = rusqlite::Connection::open(self.target()).unwrap();
        c.execute("UPDATE inventory SET qty = ?3 WHERE sku = ?1 AND location = ?2", rusqlite::params![sku, loc, q])
            .unwrap();
    }
    fn serve(&self) -> Server {
        Server::start(&self.plan(), &self.state(), Some(TOKEN))
    }
    /// `stockshift audit --format json` records.
    fn audit(&self, sku: &str) -> Vec<Value> {
        let (code, out, err) = run(stockshift()
            .arg("--state")
            .arg(self.state())
            .args(["audit"])
            .arg(self.plan())
            .args(["--sku", sku, "--format", "json"]));
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }
}

// ---------------------------------------------------------------- the server process

struct Server {
    child: Option<Child>,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(plan: &Path, state: &Path, token: Option<&str>) -> Server {
        let mut cmd = stockshift();
        cmd.arg("serve").arg(plan).arg("--state").arg(state).args(["--listen", "127.0.0.1:0"]);
        cmd.env_remove(TOKEN_ENV).env(ERP_ENV, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        if let Some(t) = token {
            cmd.env(TOKEN_ENV, t);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start serve");
        let (addr, stderr) = crate::util::serve_address(&mut child);
        let addr = match addr {
            Some(a) => a,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not print its address; stderr:\n{}", stderr.lock().unwrap());
            }
        };
        Server { child: Some(child), addr, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Resp {
        http(&self.addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// GET with the bearer token.
    fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[bearer()], b"")
    }

    /// POST a form with the bearer token.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.req("POST", path, &[bearer(), form_type()], encode_form(form).as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

fn form_type() -> (&'static str, String) {
    ("Content-Type", "application/x-www-form-urlencoded".to_owned())
}

// ---------------------------------------------------------------- a tiny HTTP/1.1 client

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The value of the first `<input name="NAME" ... value="...">` in the page.
    fn field(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\""))?;
        let rest = &self.body[at..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        let v = tag.split("value=\"").nth(1)?;
        Some(unescape(&v[..v.find('"')?]))
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn encode_form(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // The server may answer (413) and close before reading a large body; keep reading.
    let _ = s.write_all(body);
    // Read until the body is complete (Chromium's DevTools server keeps the connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let done = match length {
                Some(n) => raw.len() >= end + 4 + n,
                None if head.contains("transfer-encoding: chunked") => raw.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
        }
        match s.read(&mut buf)? {
            0 => break,
            n => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad(status_line))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| bad(l))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let get = |n: &str| headers.iter().find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v);
    let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = get("content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("chunk size"))?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = out;
    } else if let Some(n) = length {
        body.truncate(n);
    }
    Ok(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// Signs in with the login form; returns the session cookie (`name=value`) and the
/// page's CSRF token.
fn sign_in(srv: &Server) -> (String, String) {
    let origin = ("Origin", format!("http://{}", srv.addr));
    let r = srv.req("POST", "/admin/login", &[form_type(), origin], encode_form(&[("token", TOKEN)]).as_bytes());
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/admin"));
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = srv.req("GET", "/admin", &[("Cookie", cookie.clone())], b"");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.field("csrf").expect("a CSRF field");
    assert!(csrf.len() >= 32, "{csrf}");
    (cookie, csrf)
}

fn fix_form<'a>(
    csrf: &'a str,
    sku: &'a str,
    expected: &'a str,
    new: &'a str,
    reason: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![("csrf", csrf), ("sku", sku), ("location", "loc-1"), ("expected", expected), ("new", new), ("reason", reason)]
}

// ---------------------------------------------------------------- token

#[test]
fn the_page_is_off_without_admin_config_or_token() {
    // No `admin:` in the plan: /admin does not exist.
    let fx = Fixture::with_admin(None);
    let srv = Server::start(&fx.plan(), &fx.state(), Some(TOKEN));
    assert_eq!(srv.get("/admin").status, 404);
    assert_eq!(srv.get("/admin/login").status, 404);
    drop(srv);
    // `admin:` but the variable is not set: off, and stderr says why.
    let fx = Fixture::new();
    let srv = Server::start(&fx.plan(), &fx.state(), None);
    assert_eq!(srv.get("/admin").status, 404);
    assert_eq!(srv.req("POST", "/admin/login", &[form_type()], b"token=x").status, 404);
    std::thread::sleep(Duration::from_millis(100));
    assert!(srv.stderr().contains(&format!("Admin page off: ${TOKEN_ENV} is not set")), "{}", srv.stderr());
    drop(srv);
    // A short token leaves it off too.
    let srv = Server::start(&fx.plan(), &fx.state(), Some("short"));
    assert_eq!(srv.get("/admin").status, 404);
    assert!(srv.stderr().contains("fewer than 16 characters"), "{}", srv.stderr());
}

#[test]
fn a_missing_or_wrong_token_is_401_and_the_token_is_never_shown() {
    let fx = Fixture::new();
    let srv = fx.serve();
    // No credentials: 401 with the login form.
    let r = srv.req("GET", "/admin", &[], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"stockshift admin\""));
    assert!(r.body.contains("action=\"/admin/login\""), "{}", r.body);
    for path in ["/admin/drift", "/admin/key?sku=NEW-1&location=loc-1"] {
        assert_eq!(srv.req("GET", path, &[], b"").status, 401, "{path}");
    }
    // A POST without credentials writes nothing.
    let r = srv.req(
        "POST",
        "/admin/key/fix",
        &[form_type()],
        encode_form(&fix_form("", "NEW-1", "5", "99", "x")).as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(5));
    // Wrong tokens.
    for auth in [format!("Bearer {TOKEN}x"), "Bearer ".to_owned(), format!("Basic {TOKEN}"), TOKEN.to_owned()] {
        let r = srv.req("GET", "/admin", &[("Authorization", auth.clone())], b"");
        assert_eq!(r.status, 401, "{auth}");
    }
    // A wrong token beats a valid session cookie.
    let (cookie, _) = sign_in(&srv);
    let r = srv.req("GET", "/admin", &[("Cookie", cookie.clone()), ("Authorization", "Bearer nope".into())], b"");
    assert_eq!(r.status, 401);
    // The right one.
    let r = srv.get("/admin");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<h1>Overview</h1>") && r.body.contains("erp-to-shop-demo"), "{}", r.body);
    assert!(r.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-type").unwrap().starts_with("text/html; charset=utf-8"));
    // Sign-in with a wrong token.
    let r = srv.req("POST", "/admin/login", &[form_type()], b"token=not-the-token-at-all");
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    // The stylesheet needs no token; the token appears in no page and not on stderr.
    let css = srv.req("GET", "/admin/static/admin.css", &[], b"");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    assert!(!r.body.contains(TOKEN) && !srv.get("/admin").body.contains(TOKEN));
    assert!(
        srv.stderr().contains("Admin page: /admin (bearer token from $STOCKSHIFT_TEST_ADMIN_TOKEN"),
        "{}",
        srv.stderr()
    );
    assert!(!srv.stderr().contains(TOKEN), "{}", srv.stderr());
    // Signing out ends the session.
    let (cookie, csrf) = sign_in(&srv);
    let out =
        srv.req("POST", "/admin/logout", &[("Cookie", cookie.clone()), form_type()], format!("csrf={csrf}").as_bytes());
    assert_eq!(out.status, 303, "{}", out.body);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(srv.req("GET", "/admin", &[("Cookie", cookie)], b"").status, 401);
}

// ---------------------------------------------------------------- CSRF

#[test]
fn posts_without_the_csrf_token_or_from_another_site_are_refused() {
    let fx = Fixture::new();
    let srv = fx.serve();
    let (cookie, csrf) = sign_in(&srv);
    let c = ("Cookie", cookie.clone());
    let post = |extra: &[(&str, String)], form: &[(&str, &str)]| {
        let mut h = vec![c.clone(), form_type()];
        h.extend(extra.iter().cloned());
        srv.req("POST", "/admin/key/fix", &h, encode_form(form).as_bytes())
    };
    // No token, a wrong token: 403, nothing written.
    let mut without = fix_form("", "NEW-1", "5", "11", "count");
    without.remove(0);
    let r = post(&[], &without);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF token is missing or wrong"), "{}", r.body);
    assert_eq!(post(&[], &fix_form("0123", "NEW-1", "5", "11", "count")).status, 403);
    let other = csrf.chars().rev().collect::<String>();
    assert_eq!(post(&[], &fix_form(&other, "NEW-1", "5", "11", "count")).status, 403);
    // The right token, but the browser says the form came from another site.
    let ok = fix_form(&csrf, "NEW-1", "5", "11", "count");
    let r = post(&[("Origin", "http://evil.example".into())], &ok);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("another origin"), "{}", r.body);
    assert_eq!(post(&[("Origin", "null".into())], &ok).status, 403);
    let r = post(&[("Sec-Fetch-Site", "cross-site".into())], &ok);
    assert_eq!(r.status, 403);
    assert!(r.body.contains("cross-site"), "{}", r.body);
    assert_eq!(post(&[("Sec-Fetch-Site", "same-site".into())], &ok).status, 403);
    // Even a bearer client is refused when its request claims another origin.
    let r = srv.req(
        "POST",
        "/admin/key/fix",
        &[bearer(), form_type(), ("Origin", "http://evil.example".into())],
        encode_form(&ok).as_bytes(),
    );
    assert_eq!(r.status, 403);
    // Sign-in from another site is refused, and so are the other actions without a token.
    let r = srv.req(
        "POST",
        "/admin/login",
        &[form_type(), ("Sec-Fetch-Site", "cross-site".into())],
        format!("token={TOKEN}").as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    assert_eq!(srv.req("POST", "/admin/reconcile", &[c.clone(), form_type()], b"").status, 403);
    assert_eq!(srv.req("POST", "/admin/logout", &[c.clone(), form_type()], b"csrf=x").status, 403);
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(5), "nothing was written");
    assert!(!fx.state().join("state.db").exists() || fx.audit("NEW-1").is_empty());
    // The same form from this page, same origin: written.
    let r = post(&[("Origin", format!("http://{}", srv.addr)), ("Sec-Fetch-Site", "same-origin".into())], &ok);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(11));
}

// ---------------------------------------------------------------- the fix

#[test]
fn a_fix_is_compare_and_set_against_the_value_shown_and_audited_as_an_admin_write() {
    let fx = Fixture::new();
    let srv = fx.serve();
    // The "re-run reconcile" action records the drift (the demo target is not migrated yet).
    let r = srv.post("/admin/reconcile", &[("csrf", "")]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/admin/drift"));
    let list = srv.get("/admin/drift");
    assert_eq!(list.status, 200);
    assert!(list.body.contains("8 of 13 key(s) drifted"), "{}", list.body);
    assert!(list.body.contains(">NEW-1</a>"), "{}", list.body);
    let overview = srv.get("/admin");
    assert!(overview.body.contains("drift ratio") && overview.body.contains("breach"), "{}", overview.body);

    // The key's page: target value, source rows, trace, and the form comparing against 5.
    let page = srv.get("/admin/key?sku=NEW-1&location=loc-1");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"target-value\">5<"), "{}", page.body);
    assert!(page.body.contains("<td>OLD-1</td><td>WH-EAST</td>"), "{}", page.body);
    assert!(page.body.contains("renamed to NEW-1") && page.body.contains("WH-EAST → loc-1"), "{}", page.body);
    assert!(page.body.contains("the target should hold 7"), "{}", page.body);
    assert_eq!(page.field("expected").as_deref(), Some("5"));
    assert_eq!(page.field("new").as_deref(), Some("7"), "the mapping's value is suggested");

    // A queued order for the old SKU shows on the new key's page (and in the backlog).
    let mut queue = stockshift::events::Queue::open(&fx.state().join("events.db")).unwrap();
    let order = stockshift::events::Event {
        id: "ord-1".into(),
        source: "erp".into(),
        sku: "OLD-1".into(),
        location: "WH-EAST".into(),
        change: stockshift::events::Change::Delta(-2),
        sequence: 17,
        occurred_at: "2026-11-27T10:00:00Z".parse().unwrap(),
    };
    queue.append(&[order]).unwrap();
    let page = srv.get("/admin/key?sku=NEW-1&location=loc-1");
    assert!(
        page.body.contains("<td>OLD-1 @ WH-EAST</td><td class=\"n\">-2</td><td class=\"n\">17</td>"),
        "{}",
        page.body
    );
    let overview = srv.get("/admin");
    assert!(overview.body.contains("<strong class=\"big\">1</strong> queued event(s)"), "{}", overview.body);
    assert!(overview.body.contains("<td>erp</td><td class=\"n\">1</td>"), "{}", overview.body);
    // A bundle's page traces its components; an orphan's says it goes to 0.
    let kit = srv.get("/admin/key?sku=KIT-1&location=loc-1");
    assert!(kit.body.contains("bundle KIT-1: min(A 9 / 2 = 4, B 3 / 1 = 3) = 3"), "{}", kit.body);
    let gone = srv.get("/admin/key?sku=GONE-1&location=loc-1");
    assert!(gone.body.contains("an orphan, set to 0 (mapping.orphans: zero)"), "{}", gone.body);
    assert_eq!(gone.field("new").as_deref(), Some("0"));
    let hot = srv.get("/admin/key?sku=HOT-1&location=loc-1");
    assert!(hot.body.contains("safety stock of HOT-1: max(0, 12 − 5) = 7"), "{}", hot.body);
    assert!(hot.body.contains("Not drifted at the reconcile"), "{}", hot.body);

    // Someone changes the key after the page was shown: the fix is refused, nothing written.
    fx.set_target("NEW-1", "loc-1", 6);
    let r = srv.post("/admin/key/fix", &fix_form("", "NEW-1", "5", "7", "shelf count, ticket OPS-1"));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("id=\"conflict\""), "{}", r.body);
    assert!(r.body.contains("the page showed 5, but the target now holds\n  <strong>6</strong>"), "{}", r.body);
    assert_eq!(r.field("expected").as_deref(), Some("6"), "the form now compares against the current value");
    assert_eq!(r.field("reason").as_deref(), Some("shelf count, ticket OPS-1"), "the reason is kept");
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(6), "never overwritten");
    let audit = fx.audit("NEW-1");
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["outcome"], "conflict");
    assert_eq!(audit[0]["found"], 6);
    assert_eq!(audit[0]["kind"], "admin");

    // Against the value shown now: written, audited with its reason, shown on the key's page.
    let r = srv.post("/admin/key/fix", &fix_form("", "NEW-1", "6", "7", "shelf count, ticket OPS-1"));
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").unwrap().to_owned();
    assert!(location.starts_with("/admin/key?sku=NEW-1&location=loc-1&op="), "{location}");
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(7));
    let audit = fx.audit("NEW-1");
    assert_eq!(audit.len(), 2, "{audit:#?}");
    let a = &audit[1];
    assert_eq!((a["kind"].as_str(), a["command"].as_str()), (Some("admin"), Some("admin")), "{a:#}");
    assert_eq!((a["before"].as_i64(), a["after"].as_i64(), a["outcome"].as_str()), (Some(6), Some(7), Some("applied")));
    assert_eq!(a["reason"], "shelf count, ticket OPS-1");
    assert!(location.ends_with(a["op_id"].as_str().unwrap()), "{location}");
    // The human audit shows the reason too.
    let (code, human, err) =
        run(stockshift().arg("--state").arg(fx.state()).args(["audit"]).arg(fx.plan()).args(["--sku", "NEW-1"]));
    assert_eq!(code, 0, "{err}");
    let line = human.lines().find(|l| l.contains("applied")).unwrap_or_default();
    assert!(line.contains("admin") && line.ends_with("reason: shelf count, ticket OPS-1"), "{human}");
    let page = srv.get(&location);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"done\""), "{}", page.body);
    assert!(page.body.contains("applied,\n  6 → 7"), "{}", page.body);
    assert!(page.body.contains("<td>shelf count, ticket OPS-1</td>"), "{}", page.body);
    assert!(page.body.contains("id=\"target-value\">7<"), "{}", page.body);
    // The overview lists it; the drift list marks the key fixed.
    assert!(srv.get("/admin").body.contains("shelf count, ticket OPS-1"));
    assert!(srv.get("/admin/drift?q=NEW-1").body.contains("fixed by admin"));
    // Submitting the same form again compares against 6, which is gone: a conflict, not a write.
    let r = srv.post("/admin/key/fix", &fix_form("", "NEW-1", "6", "7", "again"));
    assert_eq!(r.status, 303, "the target already holds 7: already applied, {}", r.body);
    let r = srv.post("/admin/key/fix", &fix_form("", "NEW-1", "6", "8", "again"));
    assert_eq!(r.status, 409);
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(7));
    // A key absent from the target compares against "absent".
    let r = srv.post("/admin/key/fix", &fix_form("", "EACH-1", "", "36", "create from the ERP case count"));
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(qty(&fx.target(), "EACH-1", "loc-1"), Some(36));
    // While the freeze is on in read_only mode, nothing is written.
    let plan = std::fs::read_to_string(fx.plan()).unwrap().replace("mode: queue", "mode: read_only");
    std::fs::write(fx.plan(), plan).unwrap();
    drop(srv);
    let (code, _, err) = run(stockshift().arg("--state").arg(fx.state()).args(["freeze", "start"]).arg(fx.plan()));
    assert_eq!(code, 0, "{err}");
    let srv = fx.serve();
    let r = srv.post("/admin/key/fix", &fix_form("", "NEW-1", "7", "9", "during the freeze"));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("read_only"), "{}", r.body);
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(7));
    assert!(srv.get("/admin").body.contains("FROZEN"));
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_input_is_refused_with_a_clear_message_and_writes_nothing() {
    let fx = Fixture::new();
    let srv = fx.serve();
    let fix = |body: &str| srv.req("POST", "/admin/key/fix", &[bearer(), form_type()], body.as_bytes());
    for (body, status, says) in [
        ("", 400, "`sku` is missing"),
        ("sku=NEW-1&expected=5&new=7&reason=x", 400, "`location` is missing"),
        ("sku=NEW-1&location=loc-1&new=7&reason=x", 400, "`expected`"),
        ("sku=NEW-1&location=loc-1&expected=5&new=seven&reason=x", 400, "whole number from 0 to 1000000000"),
        ("sku=NEW-1&location=loc-1&expected=5&new=-3&reason=x", 400, "whole number from 0 to"),
        ("sku=NEW-1&location=loc-1&expected=5&new=1e3&reason=x", 400, "whole number from 0 to"),
        ("sku=NEW-1&location=loc-1&expected=5&new=1000000001&reason=x", 400, "whole number from 0 to"),
        ("sku=NEW-1&location=loc-1&expected=5&new=99999999999999999999999&reason=x", 400, "whole number"),
        ("sku=NEW-1&location=loc-1&expected=abc&new=7&reason=x", 400, "`expected` must be"),
        ("sku=NEW-1&location=loc-1&expected=5&new=7", 400, "Give a reason"),
        ("sku=NEW-1&location=loc-1&expected=5&new=7&reason=%20%20", 400, "Give a reason"),
        ("sku=NEW-1&location=loc-1&expected=5&new=7&reason=a%0Ab", 400, "control characters"),
        ("sku=NEW-1&location=loc-1&expected=5&new=7&reason=%zz", 400, "bad %-escape"),
        ("sku=NEW-1&sku=X&location=loc-1&expected=5&new=7&reason=x", 400, "more than once"),
        ("sku=%FF&location=loc-1&expected=5&new=7&reason=x", 400, "UTF-8"),
    ] {
        let r = fix(body);
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: expected {says:?} in\n{}", r.body);
    }
    let long = format!("sku=NEW-1&location=loc-1&expected=5&new=7&reason={}", "r".repeat(501));
    assert!(fix(&long).body.contains("longer than 500 characters"));
    let long_sku = format!("sku={}&location=loc-1&expected=5&new=7&reason=x", "S".repeat(513));
    assert!(fix(&long_sku).body.contains("longer than 512 bytes"));
    // A body over the form limit: 413, not read.
    let huge = format!("sku=NEW-1&location=loc-1&expected=5&new=7&reason={}", "x".repeat(2 << 20));
    let r = fix(&huge);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("larger than 16384 bytes"), "{}", r.body);
    let r = srv.req("POST", "/admin/login", &[form_type()], huge.as_bytes());
    assert_eq!(r.status, 413);
    // Bad page parameters.
    for (path, says) in [
        ("/admin/drift?page=0", "`page` must be a whole number from 1"),
        ("/admin/drift?page=x", "`page` must be"),
        ("/admin/drift?per=100000", "`per` must be a whole number from 1 to 500"),
        ("/admin/drift?sort=price", "Cannot sort by `price`"),
        ("/admin/drift?dir=up", "`dir` is `asc` or `desc`"),
        ("/admin/key", "`sku` is missing"),
        ("/admin/key?sku=NEW-1", "`location` is missing"),
        ("/admin/key?sku=&location=loc-1", "`sku` is empty"),
        ("/admin/key?sku=A&location=B&op=%3Cx%3E", "not an operation id"),
    ] {
        let r = srv.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains(&unescape_for_html(says)), "{path}: expected {says:?} in\n{}", r.body);
    }
    assert_eq!(qty(&fx.target(), "NEW-1", "loc-1"), Some(5), "nothing was written");
    assert!(!srv.stderr().contains("panicked"), "{}", srv.stderr());
}

/// How a message reads once HTML-escaped.
fn unescape_for_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

// ---------------------------------------------------------------- paging

#[test]
fn the_drift_list_pages_through_100000_keys_and_escapes_what_it_shows() {
    let fx = Fixture::new();
    const N: i64 = 100_000;
    let script = "zz<script>alert(1)</script>";
    {
        let mut st = StateStore::open(&fx.state()).unwrap();
        let mut rows: Vec<DriftRow> = (0..N)
            .map(|i| DriftRow {
                sku: format!("SKU-{i:06}"),
                location: "loc-1".into(),
                source: i,
                target: Some(0),
                diff: i,
                cause: "never_written".into(),
                bundle: false,
                orphan: false,
                queued: false,
                last_written: None,
                fixed_by: None,
            })
            .collect();
        rows.push(DriftRow { sku: script.into(), source: -1, diff: -1, ..rows[0].clone() });
        let run = NewReconcileRun {
            plan_name: "erp-to-shop-demo",
            plan_sha256: "x",
            keys: 200_000,
            drifted: N as u64 + 1,
            drift_ratio: 0.5,
            seconds: 1.0,
            kpis: json!([]),
            breaches: json!([]),
        };
        st.save_reconcile(&run, &rows).unwrap();
    }
    let srv = fx.serve();
    let started = Instant::now();
    // By SKU, 100 a page: page 1000 holds the 99,901st to the 100,000th key.
    let r = srv.get("/admin/drift?sort=sku&dir=asc&per=100&page=1000");
    assert_eq!(r.status, 200, "{}", r.body);
    let skus = skus_in(&r.body);
    let want: Vec<String> = (99_900..100_000).map(|i| format!("SKU-{i:06}")).collect();
    assert_eq!(skus, want);
    assert!(r.body.contains("Keys 99901–100000 of 100001; page 1000 of 1001."), "{}", r.body);
    assert!(r.body.contains("rel=\"next\" href=\"/admin/drift?sort=sku&amp;dir=asc&amp;page=1001\""), "{}", r.body);
    // The last page: the SKU with markup in it, escaped.
    let r = srv.get("/admin/drift?sort=sku&dir=asc&per=100&page=1001");
    assert!(r.body.contains("zz&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", r.body);
    assert!(!r.body.contains("<script>"), "{}", r.body);
    // Largest drift first by default; descending SKU order; a page past the end is empty.
    let r = srv.get("/admin/drift");
    assert_eq!(skus_in(&r.body)[..3], ["SKU-099999", "SKU-099998", "SKU-099997"]);
    assert_eq!(skus_in(&r.body).len(), 100);
    let r = srv.get("/admin/drift?sort=sku&dir=desc&per=7&page=2");
    // Page 1 is the SKU with markup (`z` sorts after `S`) and SKU-099999 to SKU-099994.
    assert_eq!(skus_in(&r.body), (0..7).map(|i| format!("SKU-{:06}", 99_993 - i)).collect::<Vec<_>>());
    assert!(skus_in(&srv.get("/admin/drift?page=5000").body).is_empty());
    // Search by a part of the SKU (LIKE wildcards in the search are literal).
    let r = srv.get("/admin/drift?q=sku-01234&sort=sku&dir=asc");
    assert_eq!(skus_in(&r.body), (12_340..12_350).map(|i| format!("SKU-{i:06}")).collect::<Vec<_>>());
    assert!(r.body.contains("of 10 matching “sku-01234”"), "{}", r.body);
    assert!(skus_in(&srv.get("/admin/drift?q=SKU-0%25").body).is_empty());
    assert!(skus_in(&srv.get("/admin/drift?q=SKU_0").body).is_empty());
    let r = srv.get(&format!("/admin/drift?q={}", enc("<script>")));
    assert_eq!(r.body.matches("zz&lt;script&gt;").count(), 1, "{}", r.body);
    assert!(r.body.contains("value=\"&lt;script&gt;\""), "the search box escapes it: {}", r.body);
    // The key's page escapes the SKU everywhere.
    let r = srv.get(&format!("/admin/key?sku={}&location=loc-1", enc(script)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("<script>"), "{}", r.body);
    assert!(r.body.contains("value=\"zz&lt;script&gt;alert(1)&lt;/script&gt;\""), "{}", r.body);
    eprintln!("drift list over {} keys: 10 pages in {:.2}s", N + 1, started.elapsed().as_secs_f64());
}

/// The SKUs of the drift list's rows, in order.
fn skus_in(body: &str) -> Vec<String> {
    body.split("<a class=\"key\" href=\"")
        .skip(1)
        .map(|s| s[s.find('>').unwrap() + 1..s.find("</a>").unwrap()].to_owned())
        .collect()
}

// ---------------------------------------------------------------- the browser

#[test]
fn a_browser_signs_in_finds_a_drifted_key_fixes_it_and_sees_the_audit_entry() {
    let Some(chromium) = crate::util::chromium() else {
        eprintln!("note: Chromium is not installed (/usr/bin/chromium); the admin page was not driven in a browser");
        return;
    };
    let fx = Fixture::new();
    let srv = fx.serve();
    let base = format!("http://{}", srv.addr);
    let shots = fx.dir.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut b = Browser::start(chromium, &fx.dir.path().join("chromium-profile"));

    // Open the page: the sign-in form. Sign in with the token.
    b.go(&format!("{base}/admin"));
    assert!(b.text().contains("Sign in"), "{}", b.text());
    b.eval(&format!("document.getElementById('token').value = {}", json!(TOKEN)));
    b.submit("form.login button");
    assert!(b.url().ends_with("/admin"), "{}\n{}\n{}", b.url(), b.text(), srv.stderr());
    assert!(b.text().contains("Overview"), "{}", b.text());
    // No reconcile yet: run one from the overview.
    b.submit("form[action='/admin/reconcile'] button");
    assert!(b.url().ends_with("/admin/drift"), "{}", b.url());
    b.screenshot(&shots.join("admin-drift.png"));

    // Find a drifted key by searching for its SKU, and open it.
    b.eval("document.getElementById('q').value = 'TEE'");
    b.submit("form.search button");
    let text = b.text();
    assert!(text.contains("TEE-BLUE-S") && text.contains("of 1 matching"), "{text}");
    b.submit("a.key");
    assert!(b.url().contains("/admin/key?sku=TEE-BLUE-S&location=loc-1"), "{}", b.url());
    let text = b.text();
    assert!(text.contains("BLUE-SMALL") && text.contains("merge: 2 rows of TEE-BLUE-S summed to 10"), "{text}");

    // Fix it: 8 → 10, with a reason; the page shows the write and its audit entry.
    b.eval("document.getElementById('new').value = '10'");
    b.eval("document.getElementById('reason').value = 'merged ERP rows, ticket OPS-42'");
    b.submit("form.fix button");
    assert!(b.url().contains("&op="), "{}", b.url());
    let text = b.text();
    assert!(text.contains("Admin write") && text.contains("applied, 8 → 10"), "{text}");
    let row = b.eval("document.querySelector('#audit tr.admin').innerText");
    let row = row.as_str().unwrap_or_default();
    assert!(
        row.contains("admin") && row.contains("merged ERP rows, ticket OPS-42") && row.contains("applied"),
        "{row}"
    );
    assert_eq!(qty(&fx.target(), "TEE-BLUE-S", "loc-1"), Some(10));
    b.screenshot(&shots.join("admin-key.png"));

    // The overview, signed in, with the admin write listed.
    b.go(&format!("{base}/admin"));
    assert!(b.text().contains("merged ERP rows, ticket OPS-42"));
    b.screenshot(&shots.join("admin-overview.png"));
    b.close();

    for name in ["admin-overview.png", "admin-drift.png", "admin-key.png"] {
        let png = std::fs::read(shots.join(name)).expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}: a blank screenshot? {} bytes", png.len());
        if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            std::fs::write(root().join("docs").join(name), &png).unwrap();
        }
    }
    eprintln!("screenshots in {}", shots.display());
}

/// Headless Chromium driven over the DevTools protocol (a minimal WebSocket client).
struct Browser {
    child: Child,
    ws: TcpStream,
    next_id: u64,
    /// Events read while waiting for a reply.
    events: Vec<Value>,
}

impl Browser {
    fn start(chromium: &str, profile: &Path) -> Browser {
        let mut child = crate::util::headless_chromium(chromium, profile, 1280, 900)
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let Ok(browser_ws) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not open its DevTools port within 60 s");
        };
        // ws://127.0.0.1:PORT/devtools/browser/ID: find the page target.
        let hostport = browser_ws.trim_start_matches("ws://").split('/').next().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        let page_ws = loop {
            let list = http(&hostport, "GET", "/json/list", &[], b"").expect("the DevTools target list");
            let targets: Value = serde_json::from_str(&list.body).unwrap_or(Value::Null);
            let page = targets.as_array().into_iter().flatten().find(|t| t["type"] == "page");
            if let Some(url) = page.and_then(|p| p["webSocketDebuggerUrl"].as_str()) {
                break url.to_owned();
            }
            assert!(Instant::now() < deadline, "no page target: {}", list.body);
            std::thread::sleep(Duration::from_millis(200));
        };
        let ws = ws_connect(&hostport, &page_ws[page_ws.find("/devtools").unwrap()..]);
        let mut b = Browser { child, ws, next_id: 0, events: Vec::new() };
        b.call("Page.enable", json!({}));
        b
    }

    /// Sends a command and returns its result (events read meanwhile are kept).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        ws_send(&mut self.ws, &json!({"id": id, "method": method, "params": params}).to_string());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no reply to {method}");
            let msg: Value = serde_json::from_str(&ws_recv(&mut self.ws)).unwrap();
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
            self.events.push(msg);
        }
    }

    fn wait_load(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(i) = self.events.iter().position(|e| e["method"] == "Page.loadEventFired") {
                self.events.drain(..=i);
                return;
            }
            assert!(Instant::now() < deadline, "the page did not load");
            let msg: Value = serde_json::from_str(&ws_recv(&mut self.ws)).unwrap();
            self.events.push(msg);
        }
    }

    fn go(&mut self, url: &str) {
        self.events.clear();
        self.call("Page.navigate", json!({"url": url}));
        self.wait_load();
    }

    /// Evaluates JavaScript in the page; returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true}));
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Clicks an element (a submit button, a link) and waits for the next page.
    fn submit(&mut self, selector: &str) {
        self.events.clear();
        let clicked = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            json!(selector)
        ));
        assert_eq!(clicked, json!(true), "no element {selector} on {}\n{}", self.url(), self.text());
        self.wait_load();
    }

    fn text(&mut self) -> String {
        self.eval("document.body.innerText").as_str().unwrap_or_default().to_owned()
    }

    fn url(&mut self) -> String {
        self.eval("location.href").as_str().unwrap_or_default().to_owned()
    }

    fn screenshot(&mut self, to: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }

    fn close(mut self) {
        self.next_id += 1;
        ws_send(&mut self.ws, &json!({"id": self.next_id, "method": "Browser.close"}).to_string());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ws_connect(hostport: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Sends one masked text frame.
fn ws_send(s: &mut TcpStream, text: &str) {
    let data = text.as_bytes();
    let mut frame = vec![0x81u8];
    match data.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&mask);
    frame.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

/// Reads one whole text message (joining continuation frames).
fn ws_recv(s: &mut TcpStream) -> String {
    let mut message = Vec::new();
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let mut len = (h[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            len = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).unwrap();
        match opcode {
            0x8 => panic!("the browser closed the DevTools connection"),
            0x9 | 0xA => continue,
            _ => message.extend_from_slice(&payload),
        }
        if fin {
            return String::from_utf8(message).unwrap();
        }
    }
}
