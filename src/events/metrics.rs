//! Prometheus metrics (SPEC section 8), served as text on `/metrics`.
//!
//! The recorder is installed globally once per process, so the `metrics` macros
//! used anywhere (replay, apply, reconcile) land in the same registry. Every metric
//! is described (HELP text) and registered at 0 on start, so dashboards and alerts
//! see the series before the first event.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Webhook deliveries per source and result (`accepted`, `duplicate`, `rejected`).
pub const WEBHOOKS_TOTAL: &str = "stockshift_webhooks_total";
/// Verified deliveries whose topic stockshift does not use (answered 200, nothing queued).
pub const WEBHOOKS_IGNORED_TOTAL: &str = "stockshift_webhooks_ignored_total";
/// Queued events not yet applied.
pub const REPLAY_BACKLOG: &str = "stockshift_replay_backlog";
/// Source quantities that went below zero during replay.
pub const OVERSELLS_TOTAL: &str = "stockshift_oversells_total";
/// Target writes by result (`applied`, `already_applied`, `conflict`, `failed`).
pub const WRITES_TOTAL: &str = "stockshift_writes_total";

/// Drifted keys found by the last reconcile.
pub const DRIFT_KEYS: &str = "stockshift_drift_keys";
/// Drifted keys / keys compared, from the last reconcile.
pub const DRIFT_RATIO: &str = "stockshift_drift_ratio";
/// Wall time of reconcile runs.
pub const RECONCILE_DURATION: &str = "stockshift_reconcile_duration_seconds";

/// The values of `stockshift_writes_total{result}`.
pub const WRITE_RESULTS: [&str; 4] = ["applied", "already_applied", "conflict", "failed"];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and describes every metric.
/// Fails when another recorder was installed first.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            describe_counter!(
                WEBHOOKS_TOTAL,
                "Webhook deliveries received, by source and result (accepted, duplicate, rejected)."
            );
            describe_counter!(
                WEBHOOKS_IGNORED_TOTAL,
                "Verified webhook deliveries with a topic stockshift does not use (answered 200, nothing queued)."
            );
            describe_gauge!(REPLAY_BACKLOG, "Events in the queue that replay has not applied yet.");
            describe_counter!(OVERSELLS_TOTAL, "Source quantities that went below zero when events were replayed.");
            describe_counter!(
                WRITES_TOTAL,
                "Conditional target writes, by result (applied, already_applied, conflict, failed)."
            );
            describe_gauge!(DRIFT_KEYS, "Drifted keys found by the last reconcile.");
            describe_gauge!(DRIFT_RATIO, "Drifted keys / keys compared, from the last reconcile.");
            metrics::describe_histogram!(RECONCILE_DURATION, metrics::Unit::Seconds, "Wall time of reconcile runs.");
            gauge!(DRIFT_KEYS).set(0.0);
            gauge!(DRIFT_RATIO).set(0.0);
            counter!(OVERSELLS_TOTAL).absolute(0);
            for r in WRITE_RESULTS {
                counter!(WRITES_TOTAL, "result" => r).absolute(0);
            }
            gauge!(REPLAY_BACKLOG).set(0.0);
            Ok(handle)
        })
        .clone()
}

/// The counters of one source, registered at 0.
#[derive(Clone)]
pub struct SourceCounters {
    pub accepted: Counter,
    pub duplicate: Counter,
    pub rejected: Counter,
    pub ignored: Counter,
}

impl SourceCounters {
    pub fn new(source: &str) -> SourceCounters {
        let c = |result: &'static str| counter!(WEBHOOKS_TOTAL, "source" => source.to_owned(), "result" => result);
        let s = SourceCounters {
            accepted: c("accepted"),
            duplicate: c("duplicate"),
            rejected: c("rejected"),
            ignored: counter!(WEBHOOKS_IGNORED_TOTAL, "source" => source.to_owned()),
        };
        for counter in [&s.accepted, &s.duplicate, &s.rejected, &s.ignored] {
            counter.increment(0);
        }
        s
    }
}

/// The backlog gauge.
pub fn backlog_gauge() -> Gauge {
    gauge!(REPLAY_BACKLOG)
}
