//! The mapping trace of one target key: which source rows feed it and how each
//! mapping step (SPEC section 2) turns them into the quantity the target should
//! hold. Built from the plan's compiled [`Mapping`] and one read of the source,
//! keeping only the rows that can reach the key, so it shows what the source says
//! now (a reconcile may be older).
//!
//! Also finds the queued events that will move the key (for a bundle: those of
//! its components).

use std::collections::HashMap;

use serde::Serialize;

use crate::config::check::Plan;
use crate::config::model::{EventSide, OrphanPolicy};
use crate::events::queue::QueuedEvent;
use crate::events::{Change, Queue};
use crate::mapping::{LocationRule, Mapping, SkuRule};
use crate::provider::{self, ProviderError, RowSink};

/// Most source rows listed for one key.
const MAX_ROWS: usize = 500;
/// Most queued events read when looking for a key's (the backlog is read in arrival order).
const MAX_QUEUED_SCAN: usize = 200_000;

/// One source row that feeds the key.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SourceRow {
    pub line: u64,
    pub sku: String,
    pub location: String,
    pub qty: i64,
    /// Step 1, e.g. `renamed to EACH-1 × 12` or `kept`.
    pub sku_rule: String,
    /// Step 2, e.g. `WH-EAST → loc-1`.
    pub location_rule: String,
    /// The target SKU it counts for (a component, for a bundle).
    pub target_sku: String,
    /// qty × factor.
    pub units: i64,
}

/// The trace of one key.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Trace {
    pub rows: Vec<SourceRow>,
    /// Rows left out beyond [`MAX_ROWS`].
    pub more_rows: u64,
    /// Steps 3 to 5 in words, in order.
    pub steps: Vec<String>,
    /// The quantity the mapping gives now (`None`: no source row maps to the key).
    pub desired: Option<i64>,
    /// What the target should hold: `desired`, or 0 for an orphan under `orphans: zero`.
    pub should_hold: Option<i64>,
    pub bundle: bool,
}

struct Want {
    /// Index of the target SKU in `targets`.
    target: usize,
    factor: i64,
    renamed: bool,
}

struct Collect<'a> {
    mapping: &'a Mapping,
    location: &'a str,
    want: HashMap<String, Want>,
    targets: &'a [String],
    rows: Vec<SourceRow>,
    more: u64,
    /// Units per target SKU, and whether any row was seen.
    sums: Vec<(i64, bool)>,
}

impl RowSink for Collect<'_> {
    fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        let Some(w) = self.want.get(sku) else { return };
        let LocationRule::To(to) = self.mapping.location(location) else { return };
        if &*to != self.location {
            return;
        }
        let units = qty.saturating_mul(w.factor);
        let sum = &mut self.sums[w.target];
        *sum = (sum.0.saturating_add(units), true);
        if self.rows.len() >= MAX_ROWS {
            self.more += 1;
            return;
        }
        let target_sku = self.targets[w.target].clone();
        let sku_rule = match (w.renamed, w.factor) {
            (false, _) => "kept".to_owned(),
            (true, 1) => format!("renamed to {target_sku}"),
            (true, f) => format!("renamed to {target_sku} × {f}"),
        };
        let location_rule = if location == &*to { "kept".to_owned() } else { format!("{location} → {to}") };
        self.rows.push(SourceRow {
            line,
            sku: sku.to_owned(),
            location: location.to_owned(),
            qty,
            sku_rule,
            location_rule,
            target_sku,
            units,
        });
    }

    fn problem(&mut self, _: u64, _: usize, _: String, _: String) {}
}

/// The source SKUs that become target SKU `t` (step 1), with their factor.
fn sources_of(m: &Mapping, t: &str, target: usize, want: &mut HashMap<String, Want>) {
    for r in m.renames().iter().filter(|r| &*r.new == t) {
        want.insert(r.old.to_string(), Want { target, factor: r.factor, renamed: true });
    }
    if m.sku(t) == SkuRule::Passthrough {
        want.insert(t.to_owned(), Want { target, factor: 1, renamed: false });
    }
}

/// Reads the source and traces (sku, location) through the mapping.
pub(crate) fn trace(plan: &Plan, sku: &str, location: &str) -> Result<Trace, ProviderError> {
    let m = &plan.mapping;
    let bundle = m.bundle_of(sku).map(|b| &m.bundles()[b as usize]);
    let targets: Vec<String> = match bundle {
        Some(b) => b.components.iter().map(|(c, _)| c.to_string()).collect(),
        None => vec![sku.to_owned()],
    };
    let mut want = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        sources_of(m, t, i, &mut want);
    }
    let mut c = Collect {
        mapping: m,
        location,
        want,
        targets: &targets,
        rows: Vec::new(),
        more: 0,
        sums: vec![(0, false); targets.len()],
    };
    if !c.want.is_empty() {
        provider::open(&plan.config.source, &plan.dir)?.read(&mut c)?;
    }
    let mut steps = Vec::new();
    // Steps 3 and 4 per target SKU.
    let mut after: Vec<Option<i64>> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let (sum, seen) = c.sums[i];
        if !seen {
            after.push(None);
            if bundle.is_some() {
                steps.push(format!("component {t}: no source row at {location} (counts as 0)"));
            }
            continue;
        }
        let n = c.rows.iter().filter(|r| r.target_sku == *t).count() as u64;
        if n > 1 {
            steps.push(format!("merge: {n} rows of {t} summed to {sum}"));
        }
        let ss = m.safety_stock(t);
        let v = sum.saturating_sub(ss).max(0);
        if ss != 0 || sum < 0 {
            steps.push(format!("safety stock of {t}: max(0, {sum} − {ss}) = {v}"));
        }
        after.push(Some(v));
    }
    // Step 5.
    let desired = match bundle {
        Some(b) if after.iter().any(Option::is_some) => {
            let mut parts = Vec::new();
            let mut min = i64::MAX;
            for ((c, units), v) in b.components.iter().zip(&after) {
                let q = v.unwrap_or(0);
                let n = q.max(0) / (*units).max(1);
                parts.push(format!("{c} {q} / {units} = {n}"));
                min = min.min(n);
            }
            steps.push(format!("bundle {sku}: min({}) = {min}", parts.join(", ")));
            Some(min)
        }
        Some(_) => None,
        None => after[0],
    };
    let should_hold = match desired {
        Some(d) => Some(d),
        None if m.orphans == OrphanPolicy::Zero => {
            steps.push(format!(
                "no source row maps to {sku} at {location}: an orphan, set to 0 (mapping.orphans: zero)"
            ));
            Some(0)
        }
        None => {
            steps.push(format!(
                "no source row maps to {sku} at {location}: the mapping leaves the key alone (mapping.orphans: {})",
                if m.orphans == OrphanPolicy::Error { "error" } else { "ignore" }
            ));
            None
        }
    };
    if let Some(d) = desired {
        steps.push(format!("the target should hold {d}"));
    }
    Ok(Trace { rows: c.rows, more_rows: c.more, steps, desired, should_hold, bundle: bundle.is_some() })
}

/// A queued event that will move the key.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueuedView {
    pub seq: i64,
    pub source: String,
    pub id: String,
    pub sku: String,
    pub location: String,
    /// `-2` or `= 5`.
    pub change: String,
    pub sequence: i64,
    pub occurred_at: String,
    pub received_at: String,
}

/// The queued events whose key maps to (sku, location) or, for a bundle, to one of
/// its components there. Returns them and whether the backlog was only read in part.
pub(crate) fn queued_for(
    plan: &Plan,
    queue: &Queue,
    sku: &str,
    location: &str,
) -> anyhow::Result<(Vec<QueuedView>, bool)> {
    let m = &plan.mapping;
    let mut keys: Vec<&str> = vec![sku];
    if let Some(b) = m.bundle_of(sku) {
        keys.extend(m.bundles()[b as usize].components.iter().map(|(c, _)| &**c));
    }
    let side_of: HashMap<&str, EventSide> = plan
        .config
        .events
        .as_ref()
        .map(|e| e.sources.iter().map(|s| (s.name.as_str(), s.side)).collect())
        .unwrap_or_default();
    let pending = queue.pending(MAX_QUEUED_SCAN)?;
    let partial = pending.len() >= MAX_QUEUED_SCAN;
    let mut out = Vec::new();
    for q in pending {
        let e = &q.event;
        let mapped = match side_of.get(e.source.as_str()).copied().unwrap_or_default() {
            EventSide::Target => Some((e.sku.clone(), e.location.clone())),
            EventSide::Source => m.target_key(&e.sku, &e.location),
        };
        if mapped.is_some_and(|(s, l)| l == location && keys.contains(&s.as_str())) {
            out.push(view(&q));
        }
    }
    Ok((out, partial))
}

fn view(q: &QueuedEvent) -> QueuedView {
    let e = &q.event;
    QueuedView {
        seq: q.seq,
        source: e.source.clone(),
        id: e.id.clone(),
        sku: e.sku.clone(),
        location: e.location.clone(),
        change: match e.change {
            Change::Delta(d) => format!("{d:+}"),
            Change::Qty(n) => format!("= {n}"),
        },
        sequence: e.sequence,
        occurred_at: e.occurred_at.to_string(),
        received_at: q.received_at.to_string(),
    }
}
