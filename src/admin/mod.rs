//! The admin page of `stockshift serve` (SPEC section 7): plain server-rendered
//! HTML behind a bearer token, for the people running a migration.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /admin` | overview: freeze, backlog per source, last apply and cutover, last reconcile's KPIs |
//! | `GET /admin/drift?q=&sort=&dir=&page=&per=` | the last reconcile's drifted keys: search by SKU, sorted, paged |
//! | `GET /admin/key?sku=&location=` | one key: source rows, mapping trace, target value, queued events, audit |
//! | `POST /admin/key/fix` | set one key's quantity, compare-and-set against the value shown, with a reason |
//! | `POST /admin/reconcile` | run a reconcile now and record its drift |
//! | `GET`/`POST /admin/login`, `POST /admin/logout` | the login form (session cookie) |
//! | `GET /admin/static/admin.css` | the stylesheet |
//!
//! The page is on only when the plan has `admin: { token_env: NAME }` and `$NAME`
//! holds a token of at least [`MIN_TOKEN_LEN`] characters; otherwise `/admin` is a
//! 404. It answers loopback clients only (an SSH tunnel or a reverse proxy on the
//! same host reaches it). See [`auth`] for the token, sessions and CSRF, [`pages`]
//! for the read-only pages, [`fix`] for the two actions and [`trace`] for the
//! mapping trace of a key. Templates are `templates/admin/*.html.j2`, compiled in
//! ([`view`]); nothing is fetched from anywhere at run time.

pub mod auth;
mod fix;
mod pages;
mod trace;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use crate::config::check::Plan;

/// Shortest token accepted: a shorter one leaves the page off.
pub const MIN_TOKEN_LEN: usize = 16;

/// Largest request body an admin route reads (forms are small); larger ones get 413.
pub const MAX_FORM: usize = 16 * 1024;

/// What the admin routes share.
pub(crate) struct Admin {
    pub plan: Plan,
    /// The state folder (`state.db`, `events.db`).
    pub state_dir: PathBuf,
    /// Opens the event queue `serve` uses.
    pub queue: crate::events::QueueOpener,
    pub auth: auth::Auth,
    pub views: view::Views,
    /// A reconcile started from the page is running.
    pub reconciling: AtomicBool,
}

impl Admin {
    /// Opens the plan's state store (`state:`), its local files in `serve`'s state folder.
    pub(crate) fn open_state(&self) -> Result<crate::state::StateStore, crate::state::StateError> {
        crate::state::StateStore::open_for(&self.plan, Some(&self.state_dir))
    }
}

/// The admin page for `serve`, or why it is off.
pub struct Mount {
    /// The routes under `/admin`, to merge into the server's router; `None` when off.
    pub router: Option<Router>,
    /// One line for stderr saying where the page is, or why it is off. Never the token.
    pub note: Option<String>,
}

/// Builds the admin routes for a plan. `state_dir` and `queue` are the ones
/// `serve` uses; `listen` is only used in the note.
pub fn mount(plan: Plan, state_dir: PathBuf, queue: crate::events::QueueOpener, listen: SocketAddr) -> Mount {
    let Some(cfg) = plan.config.admin.clone() else { return Mount { router: None, note: None } };
    let name = cfg.token_env;
    let token = std::env::var(&name).unwrap_or_default();
    let token = token.trim();
    if token.is_empty() {
        return Mount {
            router: None,
            note: Some(format!("Admin page off: ${name} is not set (admin.token_env); /admin answers 404")),
        };
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        return Mount {
            router: None,
            note: Some(format!(
                "Admin page off: ${name} holds fewer than {MIN_TOKEN_LEN} characters; use a long random token, e.g. `openssl rand -hex 32`"
            )),
        };
    }
    let admin = Arc::new(Admin {
        plan,
        state_dir,
        queue,
        auth: auth::Auth::new(token),
        views: view::Views::new(),
        reconciling: AtomicBool::new(false),
    });
    // With port 0 the real address is printed once bound ("Listening on ...").
    let at = if listen.port() == 0 { "/admin".to_owned() } else { format!("http://{listen}/admin") };
    let mut note = format!("Admin page: {at} (bearer token from ${name}; loopback clients only)");
    if !listen.ip().is_loopback() {
        note.push_str(&format!(
            "; {} is not a loopback address, but the admin page still answers only clients on this host",
            listen.ip()
        ));
    }
    Mount { router: Some(router(admin)), note: Some(note) }
}

fn router(admin: Arc<Admin>) -> Router {
    let protected = Router::new()
        .route("/admin", get(pages::overview))
        .route("/admin/", get(pages::overview))
        .route("/admin/drift", get(pages::drift))
        .route("/admin/key", get(pages::key))
        .route("/admin/key/fix", post(fix::fix))
        .route("/admin/reconcile", post(fix::reconcile))
        .route("/admin/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(admin.clone(), auth::require));
    Router::new()
        .route("/admin/login", get(auth::login_form).post(auth::login))
        .route("/admin/static/admin.css", get(view::css))
        .merge(protected)
        .layer(middleware::from_fn(auth::guard))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(admin)
}
