//! The HTTP receiver behind `stockshift serve`.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /webhooks/{source}` | 200 once every event is committed (or was already queued); 400 invalid; 401 bad signature; 404 unknown source; 413 body over 1 MiB; 503 queue unavailable |
//! | `GET /healthz` | 200 `{"status":"ok","backlog":{...},"freeze":{...}}` |
//! | `GET /metrics` | Prometheus text format |
//! | `/admin...` | the admin page, when the plan has `admin:` and its token is set (`crate::admin`) |
//!
//! Errors are JSON: `{"error": "what is wrong"}`. Nothing invalid is ever queued: a
//! delivery is verified and fully parsed before any of its events reaches the queue,
//! and the events of one delivery are committed together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use metrics::Gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::freeze::FreezeState;
use super::ingest::Ingest;
use super::metrics::{self as m, SourceCounters};
use super::queue::{Insert, Queue};
use super::source::{Rejection, Source};
use crate::config::model::FreezeConfig;

/// Largest accepted request body: 1 MiB (larger ones get 413).
pub const MAX_BODY: usize = 1 << 20;

/// How long a SIGTERM waits for requests in flight before closing their connections.
/// A request cut off here was not acknowledged, so its sender retries it.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What `serve` needs to run.
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Opens the event queue (`<state dir>/events.db`, or PostgreSQL): one
    /// connection for the writer, one for `/healthz` and `/metrics`.
    pub queue: super::QueueOpener,
    pub sources: Vec<Source>,
    /// The plan's freeze window, reported by `/healthz`.
    pub freeze: Option<FreezeConfig>,
    /// Log every rejected delivery on stderr.
    pub verbose: bool,
    /// The admin page's routes (`crate::admin::mount`), when it is on.
    pub admin: Option<Router>,
    /// The state store, whose write and oversell counters and reconcile gauges
    /// `/metrics` reports.
    pub state: crate::db::StoreAt,
}

struct Route {
    source: Source,
    counters: SourceCounters,
}

struct AppState {
    routes: HashMap<String, Route>,
    ingest: Ingest,
    /// A separate read connection for `/healthz` and `/metrics` (WAL: never blocks the writer).
    reader: Mutex<Queue>,
    freeze: Option<FreezeConfig>,
    prometheus: PrometheusHandle,
    backlog: Gauge,
    verbose: bool,
    /// The state store, which records writes and oversells.
    state_at: crate::db::StoreAt,
    /// When the last reconcile seen in the state store ran (its duration is recorded once).
    last_reconcile: Mutex<Option<String>>,
}

/// Runs the receiver until SIGINT or SIGTERM. Prints `Listening on http://ADDR` on
/// stderr once the socket is bound (with the real port when `listen` has port 0).
pub fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let prometheus = m::install().map_err(anyhow::Error::msg)?;
    let queue = (opts.queue)()?;
    let reader = (opts.queue)()?;
    let routes = opts
        .sources
        .into_iter()
        .map(|s| {
            let counters = SourceCounters::new(&s.name);
            (s.name.clone(), Route { source: s, counters })
        })
        .collect();
    let (ingest, writer) = Ingest::start(queue);
    let state = Arc::new(AppState {
        state_at: opts.state,
        last_reconcile: Mutex::new(None),
        routes,
        ingest,
        reader: Mutex::new(reader),
        freeze: opts.freeze,
        prometheus,
        backlog: m::backlog_gauge(),
        verbose: opts.verbose,
    });
    let app = match opts.admin {
        Some(admin) => router(state).merge(admin),
        None => router(state),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        eprintln!("Listening on http://{addr}");
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let graceful = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        // The peer address lets the admin page answer loopback clients only.
        let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(graceful);
        let signal = async {
            shutdown_signal().await;
            eprintln!("Shutting down: finishing the requests in flight...");
            let _ = stop_tx.send(true);
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = server => r.context("the server failed"),
            _ = signal => {
                eprintln!("Some connections were still open after {}s; closing them.", SHUTDOWN_GRACE.as_secs());
                Ok(())
            }
        }
    });
    drop(rt);
    writer.stop();
    eprintln!("Stopped.");
    served
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhooks/{source}", post(webhook))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; webhooks go to POST /webhooks/{source}") })
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads the whole body, stopping as soon as it exceeds `limit`.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        len += data.len();
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    })
}

async fn webhook(State(st): State<Arc<AppState>>, Path(name): Path<String>, req: Request) -> Response {
    let received_at = Timestamp::now();
    let Some(route) = st.routes.get(&name) else {
        let shown: String = name.chars().take(64).collect();
        return error(StatusCode::NOT_FOUND, format!("no event source named `{shown}` in this plan"));
    };
    let reject = |r: Rejection| {
        route.counters.rejected.increment(1);
        if st.verbose || r.status >= 500 {
            eprintln!("webhook {}: rejected ({}): {}", route.source.name, r.status, r.message);
        }
        error(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST), r.message)
    };
    let too_large = || Rejection { status: 413, message: format!("the body is larger than {MAX_BODY} bytes (1 MiB)") };
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return reject(too_large());
    }
    let raw = match read_body(body, MAX_BODY).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return reject(too_large()),
        Err(BodyError::Read(e)) => return reject(Rejection::bad_request(format!("cannot read the body: {e}"))),
    };
    let received = match route.source.receive(&parts.headers, &raw, received_at.as_second()) {
        Ok(r) => r,
        Err(r) => return reject(r),
    };
    if received.events.is_empty() {
        route.counters.accepted.increment(1);
        route.counters.ignored.increment(1);
        let reason = match &received.ignored_topic {
            Some(t) => format!("topic {t} is not used by stockshift"),
            None => "the delivery holds no stock change".to_owned(),
        };
        return Json(json!({
            "result": "ignored", "reason": reason, "accepted": 0, "duplicate": 0,
            "events": [], "skipped": received.skipped,
        }))
        .into_response();
    }
    let ids: Vec<String> = received.events.iter().map(|e| e.id.clone()).collect();
    let results = match st.ingest.submit(&route.source.name, raw, received_at, received.events).await {
        Ok(r) => r,
        Err(e) => {
            let mut resp = reject(Rejection { status: 503, message: format!("the event queue is unavailable: {e}") });
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
    };
    let accepted = results.iter().filter(|r| r.is_accepted()).count();
    let duplicate = results.len() - accepted;
    let result = if accepted > 0 { "accepted" } else { "duplicate" };
    if accepted > 0 {
        route.counters.accepted.increment(1);
    } else {
        route.counters.duplicate.increment(1);
    }
    let events: Vec<_> = ids
        .iter()
        .zip(&results)
        .map(|(id, r)| json!({"id": id, "result": if matches!(r, Insert::Accepted { .. }) { "accepted" } else { "duplicate" }}))
        .collect();
    Json(json!({
        "result": result, "accepted": accepted, "duplicate": duplicate,
        "events": events, "skipped": received.skipped,
    }))
    .into_response()
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let st2 = st.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut q = st2.reader.lock().unwrap_or_else(|p| p.into_inner());
        let now = Timestamp::now();
        // A lost PostgreSQL connection is opened again at the next request.
        let read = |q: &Queue| Ok::<_, super::QueueError>((q.backlog()?, q.manual_freeze()?));
        let (backlog, manual) = match read(&q) {
            Ok(r) => r,
            Err(_) if q.reconnect_if_lost().is_ok() => read(&q).map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        let freeze = FreezeState::evaluate(st2.freeze.as_ref(), manual, now)?;
        Ok::<_, String>((backlog.to_json(now), freeze.to_json(), backlog.total))
    })
    .await;
    match read {
        Ok(Ok((backlog, freeze, total))) => {
            st.backlog.set(total as f64);
            Json(json!({"status": "ok", "backlog": backlog, "freeze": freeze})).into_response()
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "error": e}))).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let st2 = st.clone();
    let count = tokio::task::spawn_blocking(move || {
        let mut q = st2.reader.lock().unwrap_or_else(|p| p.into_inner());
        q.queued_count().or_else(|_| q.reconnect_if_lost().and_then(|()| q.queued_count())).map_err(|e| e.to_string())
    })
    .await;
    match count {
        Ok(Ok(n)) => st.backlog.set(n as f64),
        Ok(Err(e)) => eprintln!("metrics: cannot read the queue backlog: {e}"),
        Err(e) => eprintln!("metrics: {e}"),
    }
    // Writes and oversells are made by other processes too (apply, replay): the state
    // store is the record, so the counters are read from it at each scrape.
    let state_at = st.state_at.clone();
    type Recorded = (crate::state::Counts, u64, Vec<(String, f64, String)>);
    let recorded = tokio::task::spawn_blocking(move || -> Result<Option<Recorded>, String> {
        let Some(store) = crate::state::StateStore::open_existing_at(&state_at).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let counts = store.write_counts().map_err(|e| e.to_string())?;
        let oversells = store.counter("oversells").map_err(|e| e.to_string())?;
        Ok(Some((counts, oversells, store.gauges().map_err(|e| e.to_string())?)))
    })
    .await;
    if let Ok(Ok(Some((c, oversells, gauges)))) = recorded {
        // The last reconcile (any process): its drift, and its duration once per run.
        for (name, value, at) in gauges {
            match name.as_str() {
                "drift_keys" => metrics::gauge!(m::DRIFT_KEYS).set(value),
                "drift_ratio" => metrics::gauge!(m::DRIFT_RATIO).set(value),
                "reconcile_seconds" => {
                    let mut seen = st.last_reconcile.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.as_deref() != Some(at.as_str()) {
                        metrics::histogram!(m::RECONCILE_DURATION).record(value);
                        *seen = Some(at);
                    }
                }
                _ => {}
            }
        }
        for (result, n) in [
            ("applied", c.applied),
            ("already_applied", c.already_applied),
            ("conflict", c.conflicts),
            ("failed", c.failed),
        ] {
            metrics::counter!(m::WRITES_TOTAL, "result" => result).absolute(n);
        }
        metrics::counter!(m::OVERSELLS_TOTAL).absolute(oversells);
    }
    st.prometheus.run_upkeep();
    let body = st.prometheus.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
