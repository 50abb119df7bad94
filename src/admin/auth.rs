//! Who may use the admin page, and protection against cross-site requests.
//!
//! * **Token.** Requests carry `Authorization: Bearer <token>`, or sign in once with
//!   the login form, which sets a session cookie. The token is compared in constant
//!   time (SHA-256 of both sides, compared without early exit). Only its digest is
//!   kept in memory; it is never logged, echoed or put in a cookie.
//! * **Sessions.** A random id (two v4 UUIDs: 244 random bits from the OS) kept in
//!   memory, in an `HttpOnly; SameSite=Strict; Path=/admin` cookie. A session ends
//!   after [`IDLE`] without use, [`MAX_AGE`] after sign-in, at sign-out, or when
//!   `serve` stops. At most [`MAX_SESSIONS`] live at once (the oldest goes first).
//! * **CSRF.** Every form of a signed-in page carries the session's CSRF token in a
//!   hidden field, checked on every POST (constant time). Bearer clients need none:
//!   a browser never adds an `Authorization` header on its own, so a forged
//!   cross-site form cannot carry one. On top, every POST (sign-in included) with
//!   `Sec-Fetch-Site` other than `same-origin`/`none`, or with an `Origin` other
//!   than this server's, is refused before it is read.
//! * **Loopback.** Only clients on this host are answered (403 otherwise).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use sha2::{Digest, Sha256};

use super::Admin;
use super::view::{Fields, Layout, plain_error};

/// The session cookie's name.
pub const COOKIE: &str = "stockshift-admin";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session ends this long after sign-in, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 256;

/// How long a wrong token waits before its answer (slows guessing).
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(300);

struct Session {
    csrf: String,
    created: Instant,
    seen: Instant,
}

/// The token's digest and the live sessions.
pub(crate) struct Auth {
    digest: [u8; 32],
    sessions: Mutex<HashMap<String, Session>>,
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub(crate) enum Who {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// Signed in with the login form.
    Session { id: String, csrf: String },
}

impl Who {
    /// The CSRF token the page's forms carry: the session's, or "" for bearer clients.
    pub fn csrf(&self) -> &str {
        match self {
            Who::Bearer => "",
            Who::Session { csrf, .. } => csrf,
        }
    }

    /// Whether `given` is this client's CSRF token (bearer clients need none).
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        match self {
            Who::Bearer => true,
            Who::Session { csrf, .. } => given.is_some_and(|g| ct_eq(g.as_bytes(), csrf.as_bytes())),
        }
    }

    /// The layout of a page shown to this client.
    pub fn layout<'a>(&'a self, plan_name: &'a str) -> Layout<'a> {
        Layout { plan_name, csrf: Some(self.csrf()), session: matches!(self, Who::Session { .. }) }
    }
}

/// Equality of two byte strings without an early exit on the first difference.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A random id for a session or a CSRF token.
fn random_id() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

impl Auth {
    pub fn new(token: &str) -> Auth {
        Auth { digest: digest(token), sessions: Mutex::new(HashMap::new()) }
    }

    /// Whether `given` is the token (constant time: digests of equal length are compared).
    pub fn token_ok(&self, given: &str) -> bool {
        ct_eq(&digest(given), &self.digest)
    }

    /// Starts a session: (id, CSRF token).
    fn start(&self) -> (String, String) {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        s.retain(|_, v| live(v, now));
        while s.len() >= MAX_SESSIONS {
            let Some(oldest) = s.iter().min_by_key(|(_, v)| v.created).map(|(k, _)| k.clone()) else { break };
            s.remove(&oldest);
        }
        let (id, csrf) = (random_id(), random_id());
        s.insert(id.clone(), Session { csrf: csrf.clone(), created: now, seen: now });
        (id, csrf)
    }

    /// The CSRF token of a live session, marking it used.
    fn session(&self, id: &str) -> Option<String> {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let found = s.get_mut(id)?;
        if !live(found, now) {
            s.remove(id);
            return None;
        }
        found.seen = now;
        Some(found.csrf.clone())
    }

    fn end(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Who the request is from: `Ok(None)` without credentials, `Err` with wrong ones.
    /// An `Authorization` header wins over a cookie and must be right.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<Who>, &'static str> {
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let v = v.to_str().map_err(|_| "the Authorization header is not text")?;
            let (scheme, token) =
                v.trim().split_once(' ').ok_or("the Authorization header must be `Bearer <token>`")?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err("the Authorization header must be `Bearer <token>`");
            }
            return if self.token_ok(token.trim()) { Ok(Some(Who::Bearer)) } else { Err("wrong token") };
        }
        if let Some(id) = cookie(headers, COOKIE)
            && let Some(csrf) = self.session(id)
        {
            return Ok(Some(Who::Session { id: id.to_owned(), csrf }));
        }
        Ok(None)
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.created) < MAX_AGE
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Refuses a POST that a browser marks as coming from another site, or whose
/// `Origin` is not this server.
pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Err(format!("refused: a {site} request (Sec-Fetch-Site); forms are accepted only from this page"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let ok = !host.is_empty() && (origin == format!("http://{host}") || origin == format!("https://{host}"));
        if !ok {
            return Err("refused: the request comes from another origin; forms are accepted only from this page".into());
        }
    }
    Ok(())
}

/// Every admin route: loopback clients only, cross-origin POSTs refused, and
/// protective headers on every answer (no script, no framing, no caching).
pub(crate) async fn guard(req: Request, next: Next) -> Response {
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) if is_loopback(peer.ip()) => {}
        Some(_) => {
            return plain_error(
                StatusCode::FORBIDDEN,
                "The admin page answers only clients on this host; reach it through an SSH tunnel (ssh -L) or a reverse proxy on the same host.",
            );
        }
        None => return plain_error(StatusCode::FORBIDDEN, "The admin page cannot tell where this request comes from."),
    }
    if req.method() == Method::POST
        && let Err(msg) = same_origin(req.headers())
    {
        return plain_error(StatusCode::FORBIDDEN, &msg);
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The protected routes: a valid token or session, else 401 with the login form.
pub(crate) async fn require(State(admin): State<Arc<Admin>>, mut req: Request, next: Next) -> Response {
    match admin.auth.identify(req.headers()) {
        Ok(Some(who)) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Ok(None) => unauthorized(&admin, None).await,
        Err(msg) => unauthorized(&admin, Some(msg)).await,
    }
}

/// 401 with the sign-in form; `msg` says what was wrong with the credentials given.
async fn unauthorized(admin: &Admin, msg: Option<&str>) -> Response {
    if msg == Some("wrong token") {
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
    }
    let mut r = login_page(admin, StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"stockshift admin\""));
    r
}

fn login_page(admin: &Admin, status: StatusCode, msg: Option<&str>) -> Response {
    let layout = Layout { plan_name: &admin.plan.config.name, csrf: None, session: false };
    admin.views.respond(status, "login.html.j2", "Sign in", &layout, context! { message => msg })
}

/// `GET /admin/login`.
pub(crate) async fn login_form(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = admin.auth.identify(&headers) {
        return Redirect::to("/admin").into_response();
    }
    login_page(&admin, StatusCode::OK, None)
}

/// `POST /admin/login` with the field `token`: a session cookie and on to the overview.
pub(crate) async fn login(State(admin): State<Arc<Admin>>, body: Result<Bytes, BytesRejection>) -> Response {
    let fields = match read_form(body) {
        Ok(f) => f,
        Err((status, msg)) => return login_page(&admin, status, Some(&msg)),
    };
    let token = fields.get("token").unwrap_or("");
    if token.trim().is_empty() {
        return login_page(&admin, StatusCode::BAD_REQUEST, Some("Enter the admin token."));
    }
    if !admin.auth.token_ok(token.trim()) {
        return unauthorized(&admin, Some("wrong token")).await;
    }
    let (id, _csrf) = admin.auth.start();
    let mut r = Redirect::to("/admin").into_response();
    let cookie = format!("{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("an ASCII cookie"));
    r
}

/// `POST /admin/logout`.
pub(crate) async fn logout(
    State(admin): State<Arc<Admin>>,
    axum::Extension(who): axum::Extension<Who>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let fields = match read_form(body) {
        Ok(f) => f,
        Err((status, msg)) => {
            return admin.views.message(status, "Bad request", &msg, &who.layout(&admin.plan.config.name));
        }
    };
    if !who.csrf_ok(fields.get("csrf")) {
        return csrf_refused(&admin, &who);
    }
    if let Who::Session { id, .. } = &who {
        admin.auth.end(id);
    }
    let mut r = Redirect::to("/admin/login").into_response();
    let cookie = format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("an ASCII cookie"));
    r
}

/// The answer to a POST without the right CSRF token.
pub(crate) fn csrf_refused(admin: &Admin, who: &Who) -> Response {
    admin.views.message(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form's CSRF token is missing or wrong: reload the page and submit the form again. Nothing was changed.",
        &who.layout(&admin.plan.config.name),
    )
}

/// A form body: its fields, or the status and message to answer with.
pub(crate) fn read_form(body: Result<Bytes, BytesRejection>) -> Result<Fields, (StatusCode, String)> {
    let body = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            (status, format!("The form is larger than {} bytes.", super::MAX_FORM))
        } else {
            (status, format!("Cannot read the form: {}", e.body_text()))
        }
    })?;
    Fields::parse(&body).map_err(|e| (StatusCode::BAD_REQUEST, format!("Cannot read the form: {e}.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_token_and_sessions() {
        let a = Auth::new("correct horse battery staple");
        assert!(a.token_ok("correct horse battery staple"));
        assert!(!a.token_ok("correct horse battery stapl"));
        assert!(matches!(
            a.identify(&headers(&[("authorization", "Bearer correct horse battery staple")])),
            Ok(Some(Who::Bearer))
        ));
        assert_eq!(a.identify(&headers(&[("authorization", "Bearer nope")])).unwrap_err(), "wrong token");
        assert!(a.identify(&headers(&[("authorization", "Basic x")])).is_err());
        assert!(matches!(a.identify(&HeaderMap::new()), Ok(None)));
        let (id, csrf) = a.start();
        assert_ne!(id, csrf);
        assert_eq!(id.len(), 64);
        let who = a.identify(&headers(&[("cookie", &format!("other=1; {COOKIE}={id}"))])).unwrap().unwrap();
        assert!(who.csrf_ok(Some(&csrf)) && !who.csrf_ok(Some("x")) && !who.csrf_ok(None));
        assert!(Who::Bearer.csrf_ok(None));
        a.end(&id);
        assert!(matches!(a.identify(&headers(&[("cookie", &format!("{COOKIE}={id}"))])), Ok(None)));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8088")])).is_ok());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8088"), ("origin", "http://127.0.0.1:8088")])).is_ok());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8088"), ("origin", "http://evil.example")])).is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8088"), ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()) && !is_loopback("10.0.0.1".parse().unwrap()));
    }
}
