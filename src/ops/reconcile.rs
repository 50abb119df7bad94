//! `reconcile`: compare the mapped source with the target and the state store,
//! report drift and the migration KPIs against the plan's thresholds, and (with
//! `--fix`) make conditional corrective writes.
//!
//! A reconcile is a diff of the mapped source against the target: it reads both
//! sides through [`crate::ops::plan::run`] (the same engine and mapping rules as
//! `plan`), so every key the diff would write is a candidate. A candidate is
//! **drift** when |desired − target| > `thresholds.max_abs_drift` (a key absent
//! from the target counts as 0 there; orphans follow `mapping.orphans`, so with
//! `ignore` they are never drift). Each drifted key is then explained from the
//! audit log, whose newest `applied`/`already_applied` row for the key holds the
//! value stockshift last wrote there:
//!
//! | cause | meaning |
//! | --- | --- |
//! | `target_changed` | the target no longer holds what stockshift wrote: it was changed outside stockshift |
//! | `source_moved` | the target still holds what stockshift wrote; the mapped source now says something else |
//! | `never_written` | stockshift never wrote the key |
//!
//! KPIs (playbook "Monitoring and KPIs", SPEC section 2 `thresholds`): drift
//! ratio, webhook failure rate and replay backlog from the event queue (when it
//! exists), fulfilment failure rate (only when the operator gives it), oversells
//! (not measurable from these inputs: reported as unknown) and the reconcile
//! time per key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::check::Plan;
use crate::config::model::EventSide;
use crate::events::metrics::{DRIFT_KEYS, DRIFT_RATIO, RECONCILE_DURATION};
use crate::events::queue::{Queue, Status};
use crate::ops::apply::{ApplyError, ApplyOptions, Conflict, Failure, execute};
use crate::ops::plan::PlanError;
use crate::provider::{self, Provider, Write};
use crate::render::text::thousands;
use crate::state::lock::LockInfo;
use crate::state::{Counts, DriftRow, NewOperation, NewReconcileRun, OpKind, StateError, StateStore};

/// Why reconcile could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot read the event queue: {0:#}")]
    Queue(anyhow::Error),
}

/// What to measure besides the two inputs.
#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions<'a> {
    /// `--state DIR`.
    pub state_dir: Option<&'a Path>,
    /// `--fulfillment-failure-rate`: orders failing fulfilment / orders, from the OMS.
    pub fulfillment_failure_rate: Option<f64>,
}

/// Why a drifted key drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The target differs from what stockshift last wrote: changed outside stockshift.
    TargetChanged,
    /// The target still holds what stockshift wrote, but the source now says something else.
    SourceMoved,
    /// stockshift never wrote this key.
    NeverWritten,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::TargetChanged => "target_changed",
            Cause::SourceMoved => "source_moved",
            Cause::NeverWritten => "never_written",
        }
    }
}

/// One drifted key. The first five fields are SPEC section 6's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub sku: String,
    pub location: String,
    /// The mapped source's (desired) quantity.
    pub source: i64,
    /// The target's quantity as read; `None` when the key is absent there.
    pub target: Option<i64>,
    /// `source - target` (an absent target counts as 0): what a fix adds.
    pub diff: i64,
    pub cause: Cause,
    /// A bundle quantity derived from its components.
    pub bundle: bool,
    /// A target key absent from the mapped source (`mapping.orphans: zero`).
    pub orphan: bool,
    /// The key has queued events not yet replayed (it is expected to move).
    pub queued: bool,
    /// What stockshift last wrote to the key, if ever.
    pub last_written: Option<i64>,
}

/// Pass, breach, or not measurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KpiStatus {
    Pass,
    Breach,
    /// Not measurable from the inputs (value null).
    Unknown,
    /// Informational: no threshold applies.
    Info,
}

impl KpiStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KpiStatus::Pass => "pass",
            KpiStatus::Breach => "breach",
            KpiStatus::Unknown => "unknown",
            KpiStatus::Info => "info",
        }
    }
}

/// How a KPI's value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A fraction shown as a percentage.
    Ratio,
    /// A count.
    Count,
    /// Seconds.
    Seconds,
}

/// One KPI with its threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kpi {
    /// Key in the JSON `kpis` object, e.g. `drift_ratio`.
    #[serde(skip)]
    pub name: &'static str,
    /// For people, e.g. `drift ratio`.
    #[serde(skip)]
    pub label: &'static str,
    #[serde(skip)]
    pub unit: Unit,
    /// `null` when not measurable.
    pub value: Value,
    /// `null` when no threshold applies.
    pub threshold: Value,
    /// The plan setting holding the threshold, e.g. `thresholds.max_drift_ratio`.
    pub setting: Option<&'static str>,
    pub status: KpiStatus,
    /// How the value was measured, or why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A threshold that was breached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    pub kpi: &'static str,
    pub setting: &'static str,
    pub value: Value,
    pub threshold: Value,
    pub message: String,
}

/// Drifted keys per cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CauseCounts {
    pub target_changed: u64,
    pub source_moved: u64,
    pub never_written: u64,
}

/// What the corrective writes did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FixReport {
    /// The `fix` operation in the state store (none when there was nothing to write).
    pub op_id: Option<String>,
    /// Writes attempted.
    pub writes: u64,
    pub applied: u64,
    pub already_applied: u64,
    pub conflicts: u64,
    pub failed: u64,
    /// Drifted bundle keys left alone (`--include-bundles` fixes them).
    pub skipped_bundles: u64,
    /// Drifted keys with queued events left alone (`--include-queued` fixes them).
    pub skipped_queued: u64,
    #[serde(skip)]
    pub conflict_list: Vec<Conflict>,
    #[serde(skip)]
    pub failure_list: Vec<Failure>,
    #[serde(skip)]
    pub took_over_lock: Option<LockInfo>,
}

impl FixReport {
    pub fn counts(&self) -> Counts {
        Counts {
            applied: self.applied,
            already_applied: self.already_applied,
            conflicts: self.conflicts,
            failed: self.failed,
        }
    }
}

/// The outcome of a reconcile.
#[derive(Debug, Clone)]
pub struct Report {
    pub plan_name: String,
    pub config_sha256: String,
    /// Keys compared: the mapped source's keys, plus orphans unless `mapping.orphans: ignore`.
    pub keys: u64,
    pub drifted: u64,
    pub drift_ratio: f64,
    /// The largest |source − target| over all keys compared (within tolerance or not).
    pub max_abs_drift: u64,
    /// `thresholds.max_abs_drift`: keys differing by at most this are not drift.
    pub tolerance: u64,
    /// Keys that differ, but by no more than the tolerance.
    pub within_tolerance: u64,
    /// Drifted keys that are bundles (counted in `drifted` too).
    pub bundle_drifted: u64,
    /// Drifted keys with queued events.
    pub queued_drifted: u64,
    pub causes: CauseCounts,
    /// Sorted by location, then SKU.
    pub drift: Vec<Drift>,
    pub kpis: Vec<Kpi>,
    pub breaches: Vec<Breach>,
    /// Wall time of the reconcile (reads, diff, state and queue lookups).
    pub seconds: f64,
    /// `seconds / keys`; `None` when there are no keys.
    pub seconds_per_key: Option<f64>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// Magento targets with `stock_id`: SKUs whose salable quantity differs from
    /// their source quantity (reservations of open orders, other sources).
    pub salable_gaps: Vec<crate::provider::magento::SalableGap>,
    pub fix: Option<FixReport>,
}

/// What the event queue says, when there is one.
struct QueueFigures {
    /// Events per status.
    counts: BTreeMap<Status, u64>,
    /// Target keys that queued events will change (bundles built from them included).
    queued_keys: HashSet<(String, String)>,
}

/// Reads both sides, diffs them, explains the drift and measures the KPIs.
pub fn run(plan: &Plan, opts: &ReconcileOptions<'_>) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let doc = crate::ops::plan::run(plan, None)?;
    let diff = doc.diff;
    let t = &plan.config.thresholds;
    let tolerance = t.max_abs_drift;

    let keys = diff.summary.unchanged + diff.changes.len() as u64;
    let mut max_abs: u64 = 0;
    let mut within_tolerance = 0;
    let mut drift: Vec<Drift> = Vec::new();
    for c in diff.changes {
        let d = c.after - c.before.unwrap_or(0);
        let abs = d.unsigned_abs();
        max_abs = max_abs.max(abs);
        if abs <= tolerance {
            if d != 0 {
                within_tolerance += 1;
            }
            continue;
        }
        drift.push(Drift {
            sku: c.sku,
            location: c.location,
            source: c.after,
            target: c.before,
            diff: d,
            cause: Cause::NeverWritten,
            bundle: c.bundle,
            orphan: c.orphan,
            queued: false,
            last_written: None,
        });
    }

    // Causes, from what stockshift last wrote.
    let state = StateStore::open_existing_for(plan, opts.state_dir)?;
    if let Some(state) = &state
        && !drift.is_empty()
    {
        let wanted: Vec<(&str, &str)> = drift.iter().map(|d| (d.sku.as_str(), d.location.as_str())).collect();
        let last = last_written(state, &wanted)?;
        for (d, last) in drift.iter_mut().zip(last) {
            d.last_written = last;
        }
    }
    let mut causes = CauseCounts::default();
    for d in &mut drift {
        d.cause = match d.last_written {
            None => Cause::NeverWritten,
            Some(w) if d.target != Some(w) => Cause::TargetChanged,
            Some(_) => Cause::SourceMoved,
        };
        match d.cause {
            Cause::TargetChanged => causes.target_changed += 1,
            Cause::SourceMoved => causes.source_moved += 1,
            Cause::NeverWritten => causes.never_written += 1,
        }
    }

    // The event queue, read only, when it exists.
    let mut notes = Vec::new();
    let queue = read_queue(plan, opts.state_dir, !drift.is_empty()).map_err(ReconcileError::Queue)?;
    if let Some(q) = &queue {
        for d in &mut drift {
            d.queued = q.queued_keys.contains(&(d.sku.clone(), d.location.clone()));
        }
    }

    let drifted = drift.len() as u64;
    let drift_ratio = if keys == 0 { 0.0 } else { drifted as f64 / keys as f64 };
    let bundle_drifted = drift.iter().filter(|d| d.bundle).count() as u64;
    let queued_drifted = drift.iter().filter(|d| d.queued).count() as u64;

    // KPIs.
    let mut kpis = Vec::new();
    kpis.push(Kpi {
        name: "drift_ratio",
        label: "drift ratio",
        unit: Unit::Ratio,
        value: json!(drift_ratio),
        threshold: json!(t.max_drift_ratio),
        setting: Some("thresholds.max_drift_ratio"),
        status: pass_if(drift_ratio <= t.max_drift_ratio),
        note: Some(format!("{drifted} of {keys} keys differ by more than {tolerance} unit(s)")),
    });
    let (webhook, backlog) = match &queue {
        None => {
            let none = "no event queue (events.db) in the state folder".to_string();
            (
                Kpi {
                    name: "webhook_failure_rate",
                    label: "webhook failure rate",
                    unit: Unit::Ratio,
                    value: Value::Null,
                    threshold: json!(t.max_webhook_failure_rate),
                    setting: Some("thresholds.max_webhook_failure_rate"),
                    status: KpiStatus::Unknown,
                    note: Some(none.clone()),
                },
                Kpi {
                    name: "replay_backlog",
                    label: "replay backlog",
                    unit: Unit::Count,
                    value: json!(0),
                    threshold: json!(t.max_replay_backlog),
                    setting: Some("thresholds.max_replay_backlog"),
                    status: KpiStatus::Pass,
                    note: Some(none),
                },
            )
        }
        Some(q) => {
            let n = |s: Status| q.counts.get(&s).copied().unwrap_or(0);
            let total: u64 = q.counts.values().sum();
            let failed = n(Status::Failed);
            let queued = n(Status::Queued);
            let rate = (total > 0).then(|| failed as f64 / total as f64);
            notes.push(
                "Webhook failure rate counts events that failed to apply over events stored in the queue: rejected deliveries (bad signature, malformed body) are not stored there, so they are not counted; see stockshift_webhooks_total{result=\"rejected\"} on the receiver's /metrics."
                    .into(),
            );
            (
                Kpi {
                    name: "webhook_failure_rate",
                    label: "webhook failure rate",
                    unit: Unit::Ratio,
                    value: rate.map_or(Value::Null, |r| json!(r)),
                    threshold: json!(t.max_webhook_failure_rate),
                    setting: Some("thresholds.max_webhook_failure_rate"),
                    status: rate.map_or(KpiStatus::Unknown, |r| pass_if(r <= t.max_webhook_failure_rate)),
                    note: Some(if total == 0 {
                        "no events in the queue".to_string()
                    } else {
                        format!("{failed} failed of {total} stored events; rejected deliveries not counted")
                    }),
                },
                Kpi {
                    name: "replay_backlog",
                    label: "replay backlog",
                    unit: Unit::Count,
                    value: json!(queued),
                    threshold: json!(t.max_replay_backlog),
                    setting: Some("thresholds.max_replay_backlog"),
                    status: pass_if(queued <= t.max_replay_backlog),
                    note: Some(format!("{queued} queued event(s) not yet replayed")),
                },
            )
        }
    };
    kpis.push(webhook);
    kpis.push(backlog);
    let ffr = opts.fulfillment_failure_rate;
    kpis.push(Kpi {
        name: "fulfillment_failure_rate",
        label: "fulfilment failure rate",
        unit: Unit::Ratio,
        value: ffr.map_or(Value::Null, |r| json!(r)),
        threshold: json!(t.max_fulfillment_failure_rate),
        setting: Some("thresholds.max_fulfillment_failure_rate"),
        status: ffr.map_or(KpiStatus::Unknown, |r| pass_if(r <= t.max_fulfillment_failure_rate)),
        note: Some(if ffr.is_some() {
            "given with --fulfillment-failure-rate".to_string()
        } else {
            "not measurable from the source, target and queue; give it with --fulfillment-failure-rate".to_string()
        }),
    });
    kpis.push(Kpi {
        name: "oversells",
        label: "oversells",
        unit: Unit::Count,
        value: Value::Null,
        threshold: Value::Null,
        setting: None,
        status: KpiStatus::Unknown,
        note: Some("not measurable here; `stockshift replay` reports the source keys that went below zero".into()),
    });

    let breaches: Vec<Breach> = kpis
        .iter()
        .filter(|k| k.status == KpiStatus::Breach)
        .map(|k| Breach {
            kpi: k.name,
            setting: k.setting.unwrap_or_default(),
            value: k.value.clone(),
            threshold: k.threshold.clone(),
            message: format!(
                "{} {} is over {} {}",
                k.label,
                show_value(&k.value, k.unit),
                k.setting.unwrap_or_default(),
                show_value(&k.threshold, k.unit)
            ),
        })
        .collect();

    let seconds = started.elapsed().as_secs_f64();
    let seconds_per_key = (keys > 0).then(|| seconds / keys as f64);
    kpis.push(Kpi {
        name: "seconds_per_key",
        label: "reconcile time per key",
        unit: Unit::Seconds,
        value: seconds_per_key.map_or(Value::Null, |s| json!(s)),
        threshold: Value::Null,
        setting: None,
        status: KpiStatus::Info,
        note: Some(format!("{seconds:.3} s for {keys} keys")),
    });

    metrics::gauge!(DRIFT_KEYS).set(drifted as f64);
    metrics::gauge!(DRIFT_RATIO).set(drift_ratio);
    metrics::histogram!(RECONCILE_DURATION).record(seconds);

    let mut report = Report {
        plan_name: doc.plan.name,
        config_sha256: doc.plan.config_sha256,
        keys,
        drifted,
        drift_ratio,
        max_abs_drift: max_abs,
        tolerance,
        within_tolerance,
        bundle_drifted,
        queued_drifted,
        causes,
        drift,
        kpis,
        breaches,
        seconds,
        seconds_per_key,
        warnings: diff.warnings,
        notes,
        salable_gaps: vec![],
        fix: None,
    };
    salable(plan, &mut report, state.as_ref());
    // Kept in the state store (when there is one), so `serve`'s /metrics reports the
    // gauges and its admin page lists the drift.
    if let Some(mut st) = StateStore::open_existing_for(plan, opts.state_dir)? {
        st.set_gauges(&[("drift_keys", drifted as f64), ("drift_ratio", drift_ratio), ("reconcile_seconds", seconds)])?;
        save(&report, &mut st)?;
    }
    Ok(report)
}

/// Most drifted keys one reconcile keeps in the state store for the admin page;
/// the run's figures count them all.
pub const MAX_SAVED_DRIFT: usize = 1_000_000;

/// Records a reconcile in the state store: its figures, its KPIs as shown to
/// people, and its drifted keys (the first [`MAX_SAVED_DRIFT`]). Returns the run's id.
pub fn save(report: &Report, state: &mut StateStore) -> Result<i64, StateError> {
    let kpis: Vec<Value> = report
        .kpis
        .iter()
        .map(|k| {
            json!({
                "name": k.name, "label": k.label, "value": show_value(&k.value, k.unit),
                "threshold": if k.threshold.is_null() { Value::Null } else { json!(show_value(&k.threshold, k.unit)) },
                "setting": k.setting, "status": k.status.as_str(), "note": k.note,
            })
        })
        .collect();
    let breaches: Vec<&str> = report.breaches.iter().map(|b| b.message.as_str()).collect();
    let rows: Vec<DriftRow> = report
        .drift
        .iter()
        .take(MAX_SAVED_DRIFT)
        .map(|d| DriftRow {
            sku: d.sku.clone(),
            location: d.location.clone(),
            source: d.source,
            target: d.target,
            diff: d.diff,
            cause: d.cause.as_str().to_owned(),
            bundle: d.bundle,
            orphan: d.orphan,
            queued: d.queued,
            last_written: d.last_written,
            fixed_by: None,
        })
        .collect();
    let run = NewReconcileRun {
        plan_name: &report.plan_name,
        plan_sha256: &report.config_sha256,
        keys: report.keys,
        drifted: report.drifted,
        drift_ratio: report.drift_ratio,
        seconds: report.seconds,
        kpis: json!(kpis),
        breaches: json!(breaches),
    };
    state.save_reconcile(&run, &rows)
}

/// Most SKUs whose salable quantity one reconcile asks Magento for (one request each).
const MAX_SALABLE_SKUS: usize = 200;

/// For a Magento target with `stock_id`: compares salable and source quantities of
/// the drifted SKUs and those the last apply wrote, and says where they differ.
/// The platform being unreachable here is a warning, not a failed reconcile.
fn salable(plan: &Plan, report: &mut Report, state: Option<&StateStore>) {
    let crate::config::model::ProviderConfig::Magento(cfg) = &plan.config.target else { return };
    if cfg.stock_id.is_none() {
        return;
    }
    let mut skus: Vec<String> = report.drift.iter().map(|d| d.sku.clone()).collect();
    if let Some(st) = state
        && let Ok(Some(op)) = st.last_operation_of(OpKind::Apply)
        && let Ok(writes) = st.applied_writes(&op.id)
    {
        skus.extend(writes.into_iter().map(|w| w.sku));
    }
    skus.sort();
    skus.dedup();
    let total = skus.len();
    skus.truncate(MAX_SALABLE_SKUS);
    if skus.is_empty() {
        return;
    }
    let gaps = crate::provider::magento::MagentoProvider::from_config(cfg).and_then(|mut p| p.salable_gaps(&skus));
    match gaps {
        Err(e) => report.warnings.push(format!("Could not compare Magento salable quantities: {e}")),
        Ok(gaps) => {
            let checked = if total > skus.len() {
                format!("{} of {total} SKUs checked", skus.len())
            } else {
                format!("{total} SKU(s) checked")
            };
            if gaps.is_empty() {
                report.notes.push(format!("Magento salable quantity equals the source quantity ({checked})."));
            } else {
                let shown: Vec<String> = gaps
                    .iter()
                    .take(10)
                    .map(|g| format!("{}: source {}, salable {}", g.sku, g.source_qty, g.salable_qty))
                    .collect();
                report.notes.push(format!(
                    "Magento salable quantity differs from the source quantity for {} SKU(s) ({checked}): {}{}. Reservations of open orders (or sources outside the plan) make shoppers see the salable figure.",
                    gaps.len(),
                    shown.join("; "),
                    if gaps.len() > 10 { "; ..." } else { "" }
                ));
            }
            report.salable_gaps = gaps;
        }
    }
}

fn pass_if(ok: bool) -> KpiStatus {
    if ok { KpiStatus::Pass } else { KpiStatus::Breach }
}

/// A KPI value for people: `0.05%`, `1,200`, `0.000012 s`, `unknown`.
pub fn show_value(v: &Value, unit: Unit) -> String {
    match (v.as_f64(), unit) {
        (None, _) => "unknown".into(),
        (Some(x), Unit::Ratio) => percent(x),
        (Some(x), Unit::Count) => thousands(x as i64),
        (Some(x), Unit::Seconds) => seconds(x),
    }
}

/// `0.0005` as `0.05%`; small non-zero values keep their significant digits.
pub fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p.abs() >= 0.01 {
        format!("{p:.2}%")
    } else {
        format!("{}%", format!("{p:.6}").trim_end_matches('0'))
    }
}

/// Seconds with enough digits to be useful for small per-key times.
pub fn seconds(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.2} s")
    } else if x >= 0.001 {
        format!("{:.2} ms", x * 1e3)
    } else {
        format!("{:.2} µs", x * 1e6)
    }
}

/// The value stockshift last wrote to each key: the `after` of the newest audit row
/// with outcome `applied` or `already_applied` (any operation kind); see
/// [`StateStore::last_written`].
pub fn last_written(state: &StateStore, keys: &[(&str, &str)]) -> Result<Vec<Option<i64>>, StateError> {
    state.last_written(keys)
}

/// Opens the plan's event queue when it exists (a PostgreSQL queue always does)
/// and reads the counts per
/// status and, when `keys` is set and there is a backlog, the target keys queued
/// events will change.
fn read_queue(plan: &Plan, state_dir: Option<&Path>, keys: bool) -> anyhow::Result<Option<QueueFigures>> {
    let at = plan.queue_at(state_dir)?;
    if !at.is_postgres() && !Queue::path_in(&at.dir).is_file() {
        return Ok(None);
    }
    let queue = crate::events::open_queue_at(plan, &at)?;
    let counts = queue.counts()?;
    let mut queued_keys = HashSet::new();
    if keys && counts.get(&Status::Queued).copied().unwrap_or(0) > 0 {
        let side_of: HashMap<&str, EventSide> = plan
            .config
            .events
            .as_ref()
            .map(|e| e.sources.iter().map(|s| (s.name.as_str(), s.side)).collect())
            .unwrap_or_default();
        let m = &plan.mapping;
        for q in queue.pending(usize::MAX)? {
            let e = &q.event;
            let target = match side_of.get(e.source.as_str()).copied().unwrap_or_default() {
                EventSide::Target => Some((e.sku.clone(), e.location.clone())),
                EventSide::Source => m.target_key(&e.sku, &e.location),
            };
            if let Some((sku, loc)) = target {
                for &(b, _) in m.component_of(&sku) {
                    queued_keys.insert((m.bundles()[b as usize].sku.to_string(), loc.clone()));
                }
                queued_keys.insert((sku, loc));
            }
        }
    }
    Ok(Some(QueueFigures { counts, queued_keys }))
}

/// How to fix.
#[derive(Debug, Clone)]
pub struct FixOptions {
    pub apply: ApplyOptions,
    /// Also fix bundle keys (by default they are reported only: a bundle is
    /// derived from its components, which are usually what needs fixing).
    pub include_bundles: bool,
    /// Also fix keys with queued events (by default replay moves them next).
    pub include_queued: bool,
}

/// Makes the corrective writes for the report's drift: for each drifted key (bar
/// bundles and keys with queued events unless included), "set the target to the
/// mapped source value where it still holds what was read", through the
/// journaled, audited write path of `apply`, as one `fix` operation under the
/// state lock, within `limits` unless `allow_large`.
pub fn fix(plan: &Plan, report: &Report, state: &mut StateStore, opts: &FixOptions) -> Result<FixReport, ApplyError> {
    let mut target = provider::open(&plan.config.target, &plan.dir)?;
    fix_to(plan, report, state, target.as_mut(), opts)
}

/// [`fix`] with an explicit target provider.
pub fn fix_to(
    plan: &Plan,
    report: &Report,
    state: &mut StateStore,
    target: &mut dyn Provider,
    opts: &FixOptions,
) -> Result<FixReport, ApplyError> {
    let mut fr = FixReport::default();
    let mut writes = Vec::new();
    for d in &report.drift {
        if d.bundle && !opts.include_bundles {
            fr.skipped_bundles += 1;
        } else if d.queued && !opts.include_queued {
            fr.skipped_queued += 1;
        } else {
            writes.push(Write { sku: d.sku.clone(), location: d.location.clone(), expected: d.target, new: d.source });
        }
    }
    check_fix_limits(plan, &writes, opts.apply.allow_large)?;
    fr.writes = writes.len() as u64;
    if writes.is_empty() {
        return Ok(fr);
    }
    let lock_store = state.reopen()?;
    let guard = lock_store.lock(OpKind::Fix.as_str(), &opts.apply.actor, opts.apply.lock_timeout)?;
    fr.took_over_lock = guard.took_over.clone();
    let run_id = uuid::Uuid::new_v4().to_string();
    let op = state.begin(
        OpKind::Fix,
        &NewOperation {
            plan_name: &plan.config.name,
            plan_sha256: &plan.sha256,
            artifact_sha256: &run_id,
            writes: writes.len() as u64,
            rollback_of: None,
        },
        &opts.apply.actor,
    )?;
    let pending: Vec<usize> = (0..writes.len()).collect();
    let write_of = |i: usize| writes[i].clone();
    let run = execute(state, &op.id, target, &pending, &write_of, &opts.apply)?;
    let counts = state.counts(&op.id)?;
    state.finish(&op.id, counts)?;
    drop(guard);
    fr.op_id = Some(op.id);
    fr.applied = counts.applied;
    fr.already_applied = counts.already_applied;
    fr.conflicts = counts.conflicts;
    fr.failed = counts.failed;
    fr.conflict_list = run.conflicts;
    fr.failure_list = run.failures;
    Ok(fr)
}

/// The blast-radius limits of `apply` (`limits.max_writes`, `limits.max_zeroed`)
/// for the fix writes.
fn check_fix_limits(plan: &Plan, writes: &[Write], allow_large: bool) -> Result<(), ApplyError> {
    if allow_large {
        return Ok(());
    }
    let l = &plan.config.limits;
    let n = writes.len() as u64;
    if n > l.max_writes {
        return Err(ApplyError::TooLarge {
            what: format!("{n} corrective writes"),
            limit: l.max_writes,
            key: "max_writes",
        });
    }
    let zeroed = writes.iter().filter(|w| w.new == 0 && w.expected.unwrap_or(0) > 0).count() as u64;
    if zeroed > l.max_zeroed {
        return Err(ApplyError::TooLarge {
            what: format!("{zeroed} corrective writes that take a key with stock to 0"),
            limit: l.max_zeroed,
            key: "max_zeroed",
        });
    }
    Ok(())
}

impl Report {
    /// The JSON document: SPEC section 6's fields first, then the rest.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("keys".into(), json!(self.keys));
        m.insert("drifted".into(), json!(self.drifted));
        m.insert("drift_ratio".into(), json!(self.drift_ratio));
        m.insert("max_abs_drift".into(), json!(self.max_abs_drift));
        m.insert("breaches".into(), json!(self.breaches));
        m.insert("drift".into(), json!(self.drift));
        m.insert("bundle_drifted".into(), json!(self.bundle_drifted));
        m.insert("queued_drifted".into(), json!(self.queued_drifted));
        m.insert("within_tolerance".into(), json!(self.within_tolerance));
        m.insert("max_abs_drift_tolerance".into(), json!(self.tolerance));
        m.insert("causes".into(), json!(self.causes));
        let kpis: serde_json::Map<String, Value> = self.kpis.iter().map(|k| (k.name.to_string(), json!(k))).collect();
        m.insert("kpis".into(), Value::Object(kpis));
        m.insert("seconds".into(), json!(self.seconds));
        m.insert("seconds_per_key".into(), json!(self.seconds_per_key));
        m.insert("plan".into(), json!({"name": self.plan_name, "config_sha256": self.config_sha256}));
        m.insert("warnings".into(), json!(self.warnings));
        m.insert("notes".into(), json!(self.notes));
        if !self.salable_gaps.is_empty() {
            m.insert("salable_gaps".into(), json!(self.salable_gaps));
        }
        if let Some(f) = &self.fix {
            m.insert("fix".into(), json!(f));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::WriteOutcome;
    use crate::state::{Actor, WriteRecord};

    #[test]
    fn last_written_takes_the_newest_applied_row_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        let actor = Actor::current("test");
        let new = NewOperation { plan_name: "p", plan_sha256: "a", artifact_sha256: "b", writes: 4, rollback_of: None };
        let op = s.begin(OpKind::Apply, &new, &actor).unwrap();
        let rec = |seq, sku, after, outcome| WriteRecord { seq, sku, location: "W", before: None, after, outcome };
        let (ok, again, conflict) =
            (WriteOutcome::Applied, WriteOutcome::AlreadyApplied, WriteOutcome::Conflict { found: Some(1) });
        s.record(
            &op.id,
            &[rec(0, "A", 1, &ok), rec(1, "A", 2, &again), rec(2, "A", 9, &conflict), rec(3, "B", 5, &conflict)],
        )
        .unwrap();
        let keys = [("A", "W"), ("B", "W"), ("C", "W")];
        // Many keys against a small log: the scan.
        assert_eq!(last_written(&s, &keys).unwrap(), vec![Some(2), None, None]);
        // Few keys against a large log: the indexed lookups.
        let filler: Vec<String> = (0..100).map(|i| format!("F{i}")).collect();
        let recs: Vec<WriteRecord<'_>> =
            filler.iter().enumerate().map(|(i, f)| rec(10 + i as u64, f, 0, &ok)).collect();
        s.record(&op.id, &recs).unwrap();
        assert_eq!(last_written(&s, &keys).unwrap(), vec![Some(2), None, None]);
    }

    #[test]
    fn percentages_and_times_read_well() {
        assert_eq!(percent(0.0005), "0.05%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.25), "25.00%");
        assert_eq!(percent(0.000001), "0.0001%");
        assert_eq!(seconds(0.000012), "12.00 µs");
        assert_eq!(seconds(0.5), "500.00 ms");
        assert_eq!(thousands(-1234567), "-1,234,567");
    }
}
