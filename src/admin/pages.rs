//! The read-only pages: the overview, the drift list and a key's page. Each reads
//! what it shows on a blocking thread (SQLite, providers) and renders a template.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use minijinja::value::Serde;
use minijinja::{Value, context};
use serde::Serialize;

use super::Admin;
use super::auth::Who;
use super::trace::{self, QueuedView, Trace};
use super::view::{Fields, age, enc, key_url, shorten};
use crate::config::model::FreezeMode;
use crate::events::FreezeState;
use crate::ops::plan::input_label;
use crate::ops::reconcile::percent;
use crate::provider;
use crate::state::{AuditRecord, DriftQuery, DriftRow, DriftSort, OpKind, Operation, ReconcileRun};

/// Longest SKU or location accepted from a form or a URL, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 512;
/// Most rows on one page of the drift list.
pub(crate) const MAX_PER_PAGE: u64 = 500;
const DEFAULT_PER_PAGE: u64 = 100;
/// Most audit records shown on a key's page (newest first).
const MAX_AUDIT_ROWS: usize = 200;

/// Runs `f` on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| anyhow::anyhow!("the request's work stopped: {e}"))?
}

/// A 500 page for an error reading the state, the queue or a provider.
pub(crate) fn failed(admin: &Admin, who: &Who, e: &anyhow::Error) -> Response {
    admin.views.message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        &format!("{e:#}"),
        &who.layout(&admin.plan.config.name),
    )
}

/// A 400 page naming what is wrong with the request.
pub(crate) fn bad_request(admin: &Admin, who: &Who, msg: &str) -> Response {
    admin.views.message(StatusCode::BAD_REQUEST, "Bad request", msg, &who.layout(&admin.plan.config.name))
}

/// A SKU or location from a form or query: present, not empty, at most
/// [`MAX_KEY_LEN`] bytes, no control characters.
pub(crate) fn key_field(f: &Fields, name: &str) -> Result<String, String> {
    let v = f.get(name).ok_or_else(|| format!("`{name}` is missing."))?;
    if v.is_empty() {
        return Err(format!("`{name}` is empty."));
    }
    if v.len() > MAX_KEY_LEN {
        return Err(format!("`{name}` is longer than {MAX_KEY_LEN} bytes."));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("`{name}` holds control characters."));
    }
    Ok(v.to_owned())
}

fn query(raw: Option<String>) -> Result<Fields, String> {
    Fields::parse(raw.unwrap_or_default().as_bytes())
}

// ------------------------------------------------------------------ views

/// An operation as shown.
#[derive(Serialize)]
struct OpView {
    id: String,
    short: String,
    kind: &'static str,
    status: String,
    started_at: String,
    finished_at: Option<String>,
    user: String,
    host: String,
    writes: u64,
    applied: u64,
    already_applied: u64,
    conflicts: u64,
    failed: u64,
}

impl From<Operation> for OpView {
    fn from(o: Operation) -> OpView {
        OpView {
            short: o.id.chars().take(8).collect(),
            id: o.id,
            kind: o.kind.as_str(),
            status: o.status,
            started_at: o.started_at,
            finished_at: o.finished_at,
            user: o.user,
            host: o.host,
            writes: o.writes,
            applied: o.applied,
            already_applied: o.already_applied,
            conflicts: o.conflicts,
            failed: o.failed,
        }
    }
}

/// An audit record as shown.
#[derive(Serialize)]
pub(crate) struct AuditView {
    at: String,
    kind: &'static str,
    op_id: String,
    op_short: String,
    who: String,
    command: String,
    sku: String,
    location: String,
    url: String,
    before: Option<i64>,
    after: i64,
    outcome: String,
    found: Option<i64>,
    error: Option<String>,
    reason: Option<String>,
}

impl From<AuditRecord> for AuditView {
    fn from(a: AuditRecord) -> AuditView {
        AuditView {
            url: key_url(&a.sku, &a.location),
            op_short: a.op_id.chars().take(8).collect(),
            who: format!("{}@{}", a.user, a.host),
            at: a.at,
            kind: a.kind.as_str(),
            op_id: a.op_id,
            command: a.command,
            sku: a.sku,
            location: a.location,
            before: a.before,
            after: a.after,
            outcome: a.outcome,
            found: a.found,
            error: a.error,
            reason: a.reason,
        }
    }
}

/// A reconcile run as shown.
#[derive(Serialize)]
struct RunView {
    id: i64,
    at: String,
    keys: u64,
    drifted: u64,
    stored: u64,
    drift_ratio: String,
    seconds: String,
    kpis: serde_json::Value,
    breaches: serde_json::Value,
}

impl From<ReconcileRun> for RunView {
    fn from(r: ReconcileRun) -> RunView {
        RunView {
            id: r.id,
            at: r.at,
            keys: r.keys,
            drifted: r.drifted,
            stored: r.stored,
            drift_ratio: percent(r.drift_ratio),
            seconds: crate::ops::reconcile::seconds(r.seconds),
            kpis: r.kpis,
            breaches: r.breaches,
        }
    }
}

/// A drifted key as shown.
#[derive(Serialize)]
struct DriftView {
    sku: String,
    location: String,
    url: String,
    source: i64,
    target: Option<i64>,
    diff: i64,
    diff_text: String,
    abs_diff: u64,
    cause: String,
    flags: Vec<&'static str>,
    fixed_by: Option<String>,
}

impl From<DriftRow> for DriftView {
    fn from(d: DriftRow) -> DriftView {
        let mut flags = Vec::new();
        if d.bundle {
            flags.push("bundle");
        }
        if d.orphan {
            flags.push("orphan");
        }
        if d.queued {
            flags.push("queued events");
        }
        DriftView {
            url: key_url(&d.sku, &d.location),
            sku: d.sku,
            location: d.location,
            source: d.source,
            target: d.target,
            diff: d.diff,
            diff_text: format!("{:+}", d.diff),
            abs_diff: d.diff.unsigned_abs(),
            cause: d.cause.replace('_', " "),
            flags,
            fixed_by: d.fixed_by.map(|f| f.chars().take(8).collect()),
        }
    }
}

// ------------------------------------------------------------------ overview

#[derive(Serialize)]
struct Overview {
    plan_file: String,
    source: String,
    target: String,
    state_dir: String,
    frozen: bool,
    freeze_mode: &'static str,
    freeze_reasons: Vec<String>,
    backlog_total: u64,
    backlog_oldest: Option<String>,
    backlog: Vec<(String, u64, String)>,
    last_apply: Option<OpView>,
    last_cutover: Option<serde_json::Value>,
    reconcile: Option<RunView>,
    admin_writes: Vec<AuditView>,
}

/// `GET /admin`.
pub(crate) async fn overview(State(admin): State<Arc<Admin>>, Extension(who): Extension<Who>) -> Response {
    let a = admin.clone();
    let data = blocking(move || {
        let plan = &a.plan;
        let now = Timestamp::now();
        let queue = (a.queue)()?;
        let backlog = queue.backlog()?;
        let freeze = FreezeState::evaluate(plan.config.freeze.as_ref(), queue.manual_freeze()?, now)
            .map_err(anyhow::Error::msg)?;
        let state = a.open_state()?;
        let last_cutover = state.cutover("")?.map(|c| {
            serde_json::json!({
                "id": c.id, "short": c.id.chars().take(8).collect::<String>(), "status": c.status,
                "started_at": c.started_at, "finished_at": c.finished_at, "step": c.step,
                "verdict": c.data.get("verdict"), "decision": c.data.get("decision"),
            })
        });
        Ok(Overview {
            plan_file: plan.file.clone(),
            source: input_label(plan, &plan.config.source).0,
            target: input_label(plan, &plan.config.target).0,
            state_dir: a.state_dir.display().to_string(),
            frozen: freeze.frozen,
            freeze_mode: match freeze.mode {
                FreezeMode::Queue => "queue",
                FreezeMode::ReadOnly => "read_only",
            },
            freeze_reasons: freeze.reasons(),
            backlog_total: backlog.total,
            backlog_oldest: backlog.oldest_age_seconds(now).map(age),
            backlog: backlog
                .sources
                .iter()
                .map(|(name, s)| {
                    (name.clone(), s.queued, age(crate::events::queue::age_seconds(s.oldest_received_at, now)))
                })
                .collect(),
            last_apply: state.last_operation_of(OpKind::Apply)?.map(OpView::from),
            last_cutover,
            reconcile: state.last_reconcile()?.map(RunView::from),
            admin_writes: state.recent_audit(OpKind::Admin, 10)?.into_iter().map(AuditView::from).collect(),
        })
    })
    .await;
    match data {
        Ok(d) => admin.views.respond(
            StatusCode::OK,
            "overview.html.j2",
            "Overview",
            &who.layout(&admin.plan.config.name),
            context! { o => Value::from(Serde(&d)), csrf => who.csrf() },
        ),
        Err(e) => failed(&admin, &who, &e),
    }
}

// ------------------------------------------------------------------ drift list

/// The drift list's columns: (query name, heading, sort).
const COLUMNS: &[(&str, &str, DriftSort)] = &[
    ("sku", "SKU", DriftSort::Sku),
    ("location", "Location", DriftSort::Location),
    ("source", "Source", DriftSort::Source),
    ("target", "Target", DriftSort::Target),
    ("diff", "Diff", DriftSort::Diff),
    ("drift", "|Drift|", DriftSort::AbsDiff),
    ("cause", "Cause", DriftSort::Cause),
];

/// What the drift list was asked for.
struct ListParams {
    q: String,
    sort: &'static str,
    descending: bool,
    page: u64,
    per: u64,
}

impl ListParams {
    fn parse(f: &Fields) -> Result<ListParams, String> {
        let q = f.get("q").unwrap_or("").trim().to_owned();
        if q.len() > MAX_KEY_LEN {
            return Err(format!("The search is longer than {MAX_KEY_LEN} bytes."));
        }
        let sort_given = f.get("sort").filter(|s| !s.is_empty()).unwrap_or("drift");
        let Some(&(sort, _, _)) = COLUMNS.iter().find(|c| c.0 == sort_given) else {
            let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
            return Err(format!("Cannot sort by `{}`; use one of {}.", shorten(sort_given), names.join(", ")));
        };
        let descending = match f.get("dir").filter(|s| !s.is_empty()) {
            None => sort == "drift",
            Some("asc") => false,
            Some("desc") => true,
            Some(d) => return Err(format!("`dir` is `asc` or `desc`, not `{}`.", shorten(d))),
        };
        let number =
            |name: &str, default: u64, max: u64| -> Result<u64, String> {
                match f.get(name).filter(|s| !s.is_empty()) {
                    None => Ok(default),
                    Some(s) => s.parse::<u64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                        format!("`{name}` must be a whole number from 1 to {max}, not `{}`.", shorten(s))
                    }),
                }
            };
        let page = number("page", 1, 1_000_000_000)?;
        let per = number("per", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
        Ok(ListParams { q, sort, descending, page, per })
    }

    fn url(&self, page: u64, sort: &str, descending: bool) -> String {
        let mut u = format!("/admin/drift?sort={sort}&dir={}", if descending { "desc" } else { "asc" });
        if !self.q.is_empty() {
            u.push_str(&format!("&q={}", enc(&self.q)));
        }
        if self.per != DEFAULT_PER_PAGE {
            u.push_str(&format!("&per={}", self.per));
        }
        u.push_str(&format!("&page={page}"));
        u
    }
}

/// `GET /admin/drift?q=&sort=&dir=&page=&per=`: one page of the last reconcile's
/// drifted keys, read with LIMIT/OFFSET from the state store.
pub(crate) async fn drift(
    State(admin): State<Arc<Admin>>,
    Extension(who): Extension<Who>,
    RawQuery(raw): RawQuery,
) -> Response {
    let p = match query(raw).and_then(|f| ListParams::parse(&f)) {
        Ok(p) => p,
        Err(e) => return bad_request(&admin, &who, &e),
    };
    let a = admin.clone();
    let (sort_name, descending, page, per, search) = (p.sort, p.descending, p.page, p.per, p.q.clone());
    let data = blocking(move || {
        let state = a.open_state()?;
        let Some(run) = state.last_reconcile()? else { return Ok(None) };
        let sort = COLUMNS.iter().find(|c| c.0 == sort_name).map_or(DriftSort::AbsDiff, |c| c.2);
        let (total, rows) = state.drift_page(&DriftQuery {
            run_id: run.id,
            search: Some(search.as_str()).filter(|s| !s.is_empty()),
            sort,
            descending,
            offset: (page - 1).saturating_mul(per),
            limit: per,
        })?;
        Ok(Some((RunView::from(run), total, rows.into_iter().map(DriftView::from).collect::<Vec<_>>())))
    })
    .await;
    let (run, total, rows) = match data {
        Ok(Some(d)) => d,
        Ok(None) => (
            RunView {
                id: 0,
                at: String::new(),
                keys: 0,
                drifted: 0,
                stored: 0,
                drift_ratio: String::new(),
                seconds: String::new(),
                kpis: serde_json::Value::Null,
                breaches: serde_json::Value::Null,
            },
            0,
            Vec::new(),
        ),
        Err(e) => return failed(&admin, &who, &e),
    };
    let pages = total.div_ceil(p.per).max(1);
    let columns: Vec<serde_json::Value> = COLUMNS
        .iter()
        .map(|(name, heading, _)| {
            let current = *name == p.sort;
            // A click on the current column flips the order; on another, it starts
            // with the largest drift first, else ascending.
            let next_desc = if current { !p.descending } else { *name == "drift" };
            let mark = match (current, p.descending) {
                (false, _) => "",
                (true, true) => " ▼",
                (true, false) => " ▲",
            };
            serde_json::json!({"heading": format!("{heading}{mark}"), "url": p.url(1, name, next_desc), "numeric": !matches!(*name, "sku" | "location" | "cause")})
        })
        .collect();
    let first = (p.page - 1).saturating_mul(p.per) + 1;
    let ctx = context! {
        recorded => run.id != 0,
        run => Value::from(Serde(&run)),
        rows => Value::from(Serde(&rows)),
        total => total,
        page => p.page,
        pages => pages,
        per => p.per,
        q => p.q.clone(),
        sort => p.sort,
        dir => if p.descending { "desc" } else { "asc" },
        shown_from => if rows.is_empty() { 0 } else { first },
        shown_to => first + rows.len() as u64 - 1,
        columns => Value::from(Serde(&columns)),
        prev_url => (p.page > 1).then(|| p.url(p.page - 1, p.sort, p.descending)),
        next_url => (p.page < pages).then(|| p.url(p.page + 1, p.sort, p.descending)),
        first_url => p.url(1, p.sort, p.descending),
        last_url => p.url(pages, p.sort, p.descending),
        csrf => who.csrf(),
    };
    admin.views.respond(StatusCode::OK, "drift.html.j2", "Drift", &who.layout(&admin.plan.config.name), ctx)
}

// ------------------------------------------------------------------ a key's page

/// What a key's page adds to what it reads: the outcome of a fix just made.
#[derive(Default)]
pub(crate) struct KeyExtra {
    pub status: Option<StatusCode>,
    /// An operation just made on this key (shown as a banner).
    pub done_op: Option<String>,
    /// A refused fix: (the value the form showed, what the target holds).
    pub conflict: Option<(Option<i64>, Option<i64>)>,
    /// A problem with the fix form, shown above it.
    pub error: Option<String>,
    /// The fix form's fields as submitted, shown again.
    pub new: Option<String>,
    pub reason: Option<String>,
}

#[derive(Serialize)]
struct KeyData {
    drift: Option<DriftView>,
    run_at: Option<String>,
    /// The target's quantity read now; `None` with no error: absent.
    target: Option<i64>,
    target_error: Option<String>,
    trace: Option<Trace>,
    trace_error: Option<String>,
    events: Vec<QueuedView>,
    events_partial: bool,
    events_error: Option<String>,
    audit: Vec<AuditView>,
    audit_more: usize,
    done: Vec<AuditView>,
}

/// `GET /admin/key?sku=&location=[&op=]`.
pub(crate) async fn key(
    State(admin): State<Arc<Admin>>,
    Extension(who): Extension<Who>,
    RawQuery(raw): RawQuery,
) -> Response {
    let parsed = query(raw).and_then(|f| {
        let sku = key_field(&f, "sku")?;
        let location = key_field(&f, "location")?;
        let op = f.get("op").filter(|o| !o.is_empty()).map(str::to_owned);
        if op.as_ref().is_some_and(|o| o.len() > 64 || !o.chars().all(|c| c.is_ascii_hexdigit() || c == '-')) {
            return Err("`op` is not an operation id.".to_string());
        }
        Ok((sku, location, op))
    });
    match parsed {
        Ok((sku, location, op)) => {
            key_page(&admin, &who, sku, location, KeyExtra { done_op: op, ..KeyExtra::default() }).await
        }
        Err(e) => bad_request(&admin, &who, &e),
    }
}

/// Renders a key's page: what the state, the queue and both providers say about it now.
pub(crate) async fn key_page(
    admin: &Arc<Admin>,
    who: &Who,
    sku: String,
    location: String,
    extra: KeyExtra,
) -> Response {
    let a = admin.clone();
    let (s, l, done_op) = (sku.clone(), location.clone(), extra.done_op.clone());
    let data = blocking(move || {
        let plan = &a.plan;
        let state = a.open_state()?;
        let run = state.last_reconcile()?;
        let drift = match &run {
            Some(r) => state.drift_row(r.id, &s, &l)?.map(DriftView::from),
            None => None,
        };
        let (target, target_error) = match provider::open(&plan.config.target, &plan.dir)
            .and_then(|mut t| t.read_keys(&[(s.clone(), l.clone())]))
        {
            Ok(v) => (v.into_iter().next().flatten(), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let (trace, trace_error) = match trace::trace(plan, &s, &l) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let (events, events_partial, events_error) =
            match (a.queue)().map_err(anyhow::Error::from).and_then(|q| trace::queued_for(plan, &q, &s, &l)) {
                Ok((e, partial)) => (e, partial, None),
                Err(e) => (Vec::new(), false, Some(format!("{e:#}"))),
            };
        let mut audit: Vec<AuditRecord> =
            state.audit(Some(&s), None)?.into_iter().filter(|r| r.location == l).collect();
        audit.reverse();
        let audit_more = audit.len().saturating_sub(MAX_AUDIT_ROWS);
        audit.truncate(MAX_AUDIT_ROWS);
        let done: Vec<AuditView> = match &done_op {
            Some(op) => audit.iter().filter(|r| r.op_id == *op).cloned().map(AuditView::from).collect(),
            None => Vec::new(),
        };
        Ok(KeyData {
            drift,
            run_at: run.map(|r| r.at),
            target,
            target_error,
            trace,
            trace_error,
            events,
            events_partial,
            events_error,
            audit: audit.into_iter().map(AuditView::from).collect(),
            audit_more,
            done,
        })
    })
    .await;
    let d = match data {
        Ok(d) => d,
        Err(e) => return failed(admin, who, &e),
    };
    // The fix form: compare against the value read now; suggest what the mapping says.
    let expected = d.target.map_or(String::new(), |v| v.to_string());
    let suggested = d.trace.as_ref().and_then(|t| t.should_hold).or(d.drift.as_ref().map(|x| x.source));
    let new = extra.new.clone().unwrap_or_else(|| suggested.map_or(String::new(), |v| v.to_string()));
    let ctx = context! {
        sku => sku.clone(),
        location => location.clone(),
        url => key_url(&sku, &location),
        d => Value::from(Serde(&d)),
        expected => expected,
        can_fix => d.target_error.is_none(),
        new => new,
        suggested => suggested,
        reason => extra.reason.clone().unwrap_or_default(),
        conflict => extra.conflict.map(|(shown, found)| context! { shown => shown, found => found }),
        error => extra.error.clone(),
        max_qty => super::fix::MAX_QTY,
        max_reason => super::fix::MAX_REASON,
        csrf => who.csrf(),
    };
    admin.views.respond(
        extra.status.unwrap_or(StatusCode::OK),
        "key.html.j2",
        &format!("{sku} @ {location}"),
        &who.layout(&admin.plan.config.name),
        ctx,
    )
}
