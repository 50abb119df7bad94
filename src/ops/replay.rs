//! `replay`: apply queued events on top of the snapshot the last apply used.
//!
//! The guarantee (SPEC section 5): after replay the target equals the mapping of
//! that snapshot with the events applied. Replay does not add deltas to the
//! target; it recomputes, for every source key with a queued event, the key's
//! quantity from the snapshot and *all* its events (any status, each id once):
//!
//! ```text
//! value(key) = the absolute set with the highest sequence (else the snapshot value)
//!            + every delta with a higher sequence than that set
//! ```
//!
//! and then every target key that depends on it (rename, merge, factor, safety
//! stock, each bundle containing it) is recomputed and written conditionally
//! through the same journaled path as `apply`. The result does not depend on
//! delivery order or duplicates, and a replay killed at any point and run again
//! computes the same values and writes only what is still missing: exactly once.
//! Deltas at or below the winning set's sequence are already contained in it
//! and are marked `superseded`; a late delta above it is never lost.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::time::Instant;

use crate::config::check::Plan;
use crate::config::model::{CsvProviderConfig, EventSide, ProviderConfig, SqliteProviderConfig};
use crate::events::epoch::{self, Epoch, EpochEvent};
use crate::events::event::Change;
use crate::events::queue::{Queue, QueueError};
use crate::mapping::{LocationRule, SkuRule};
use crate::ops::apply::{ApplyError, ApplyOptions, Conflict, Failure, execute};
use crate::provider::{self, Provider, ProviderError, RowSink, Write};
use crate::state::{Counts, NewOperation, OpKind, StateError, StateStore};

/// Why replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "no source snapshot recorded: replay applies events on top of the snapshot the last apply used.\nRun `stockshift apply` (or `cutover`) first."
    )]
    NoSnapshot,
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What one replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Queued events handled in this run.
    pub events: u64,
    pub applied: u64,
    pub superseded: u64,
    /// Events that could not be applied (they stay queued, or are marked failed).
    pub failed: u64,
    pub writes: Counts,
    pub conflicts: Vec<Conflict>,
    pub failures: Vec<Failure>,
    /// Why events of unmapped keys could not be applied (they stay queued).
    pub unmapped: Vec<String>,
    /// Source keys whose quantity went below zero.
    pub oversells: u64,
    /// Units short on those keys, summed.
    pub oversold_units: u64,
    pub op_id: Option<String>,
    /// The `seq`s of the events this run settled (applied or superseded).
    pub settled: Vec<i64>,
    pub elapsed_secs: f64,
}

impl ReplayReport {
    /// Adds another pass's report to this one (several partitions, one run).
    pub fn absorb(&mut self, o: ReplayReport) {
        self.events += o.events;
        self.applied += o.applied;
        self.superseded += o.superseded;
        self.failed += o.failed;
        self.writes.applied += o.writes.applied;
        self.writes.already_applied += o.writes.already_applied;
        self.writes.conflicts += o.writes.conflicts;
        self.writes.failed += o.writes.failed;
        self.conflicts.extend(o.conflicts);
        self.failures.extend(o.failures);
        self.unmapped.extend(o.unmapped);
        self.oversells += o.oversells;
        self.oversold_units += o.oversold_units;
        if o.op_id.is_some() {
            self.op_id = o.op_id;
        }
        self.settled.extend(o.settled);
        self.elapsed_secs += o.elapsed_secs;
    }

    /// The closing summary line.
    pub fn summary(&self) -> String {
        format!(
            "Replay complete: {} events applied, {} superseded, {} not applied; {} writes ({} applied, {} already applied, {} conflicts, {} failed); {} oversells.",
            self.applied,
            self.superseded,
            self.failed,
            self.writes.total(),
            self.writes.applied,
            self.writes.already_applied,
            self.writes.conflicts,
            self.writes.failed,
            self.oversells
        )
    }
}

type Key = (String, String);

/// The fold of one key's events.
#[derive(Debug, Clone, Default)]
pub struct Folded {
    /// Sequence of the winning absolute set, if any.
    pub base_sequence: Option<i64>,
    pub base: Option<i64>,
    /// Sum of the deltas above the base.
    pub delta: i64,
    /// `seq`s of deltas contained in the base (superseded).
    pub superseded: Vec<i64>,
}

impl Folded {
    /// The key's quantity given its snapshot value (absent: 0).
    pub fn value(&self, snapshot: Option<i64>) -> i64 {
        self.base.or(snapshot).unwrap_or(0).saturating_add(self.delta)
    }
}

/// Folds one key's events: the highest-sequence set (ties broken by id, so the
/// result never depends on arrival), plus every later delta.
pub fn fold(events: &[&EpochEvent]) -> Folded {
    let mut f = Folded::default();
    let mut best: Option<(i64, &str, i64)> = None;
    for q in events {
        if let Change::Qty(v) = q.change {
            let cand = (q.sequence, q.set_id.as_deref().unwrap_or(""), v);
            if best.is_none_or(|b| (cand.0, cand.1) > (b.0, b.1)) {
                best = Some(cand);
            }
        }
    }
    if let Some((s, _, v)) = best {
        f.base_sequence = Some(s);
        f.base = Some(v);
    }
    for q in events {
        if let Change::Delta(d) = q.change {
            match f.base_sequence {
                Some(s) if q.sequence <= s => f.superseded.push(q.seq),
                _ => f.delta = f.delta.saturating_add(d),
            }
        }
    }
    f
}

/// Replays every queued event once. See the module docs.
pub fn replay(
    plan: &Plan,
    state: &mut StateStore,
    queue: &mut Queue,
    opts: &ApplyOptions,
) -> Result<ReplayReport, ReplayError> {
    let mut target = provider::open(&plan.config.target, &plan.dir)?;
    replay_to(plan, state, queue, target.as_mut(), opts)
}

/// [`replay`] with an explicit target provider.
pub fn replay_to(
    plan: &Plan,
    state: &mut StateStore,
    queue: &mut Queue,
    target: &mut dyn Provider,
    opts: &ApplyOptions,
) -> Result<ReplayReport, ReplayError> {
    if queue.is_shared() {
        // A PostgreSQL queue may have several workers: take partitions, not the whole state.
        return crate::ops::workers::replay_shared(plan, state, queue, target, opts);
    }
    let lock_store = state.reopen()?;
    let _guard = lock_store.lock(OpKind::Replay.as_str(), &opts.actor, opts.lock_timeout).map_err(ApplyError::from)?;
    replay_scope(plan, state, queue, target, opts, None)
}

/// The partitions one replay pass of a shared queue holds (see `ops::workers`).
pub struct Scope<'a> {
    /// The partitions whose locks the caller holds.
    pub parts: &'a [u32],
    pub partitioner: &'a crate::events::partition::Partitioner,
    /// Recorded with the operation, so that only a holder of these partitions
    /// recovers it after a crash.
    pub op_scope: &'a str,
}

/// One replay of the queued events of `scope`'s partitions (all events when
/// `None`); the caller holds the lock that makes it the only writer there. With
/// a scope, the caller has also recovered that scope's interrupted operations;
/// without one, they are recovered here before the first write.
pub fn replay_scope(
    plan: &Plan,
    state: &mut StateStore,
    queue: &mut Queue,
    target: &mut dyn Provider,
    opts: &ApplyOptions,
    scope: Option<&Scope<'_>>,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let mut report = ReplayReport::default();
    let parts = scope.map(|s| s.parts);

    // Every stored event, in arrival order; only the keys with queued events are replayed.
    if queue.queued_count_parts(parts)? == 0 {
        report.elapsed_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let (_, snapshot_path, since) = state.last_snapshot()?.ok_or(ReplayError::NoSnapshot)?;
    let mut epoch = epoch::read_parts(queue, since.parse().ok(), parts)?;

    let side_of: HashMap<&str, EventSide> = plan
        .config
        .events
        .as_ref()
        .map(|e| e.sources.iter().map(|s| (s.name.as_str(), s.side)).collect())
        .unwrap_or_default();
    let target_side: Vec<bool> = epoch
        .sources
        .iter()
        .map(|s| side_of.get(s.as_str()).copied().unwrap_or_default() == EventSide::Target)
        .collect();
    let m = &plan.mapping;
    // Each event's partition as the plan says now: those that belong elsewhere
    // (the mapping changed since they were queued) move there, untouched here.
    let part_of: Vec<[u32; 2]> = match scope {
        Some(s) => {
            epoch.keys.iter().map(|(sku, _)| [s.partitioner.of_source(m, sku), s.partitioner.of_target(sku)]).collect()
        }
        None => Vec::new(),
    };
    let part = |e: &EpochEvent| part_of.get(e.key as usize).map_or(0, |p| p[target_side[e.source as usize] as usize]);
    if let Some(s) = scope {
        let mut moving: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
        for e in epoch.events.iter().filter(|e| !s.parts.contains(&part(e))) {
            moving.entry(part(e)).or_default().push(e.seq);
        }
        if !moving.is_empty() {
            for (p, seqs) in &moving {
                queue.rehome(seqs, *p)?;
            }
            epoch.events.retain(|e| s.parts.contains(&part(e)));
        }
    }

    let (mut by_source_key, mut by_target_key) = group(&epoch, |e| target_side[e.source as usize]);
    // Folds of every source key with events: a target key that merges several
    // source keys needs all of their current values, not only the changed ones.
    let folds_all: HashMap<Key, Folded> = by_source_key.iter().map(|(k, v)| (k.clone(), fold(v))).collect();
    let changed = |evs: &Vec<&EpochEvent>| evs.iter().any(|q| q.queued);
    by_source_key.retain(|_, v| changed(v));
    by_target_key.retain(|_, v| changed(v));

    // Map each changed source key to its target key; unmapped keys are handled per policy.
    let mut failed_keys: HashMap<Key, String> = HashMap::new();
    let mut skipped_keys: HashSet<Key> = HashSet::new();
    let mut target_of: HashMap<Key, Key> = HashMap::new();
    for k in by_source_key.keys() {
        match map_key(m, &k.0, &k.1) {
            Mapped::To(t, _) => {
                target_of.insert(k.clone(), t);
            }
            Mapped::Skip => {
                skipped_keys.insert(k.clone());
            }
            Mapped::Error(msg) => {
                failed_keys.insert(k.clone(), msg);
            }
        }
    }
    // Affected target keys, and the bundles built from them.
    let mut affected: BTreeSet<Key> = target_of.values().cloned().collect();
    affected.extend(by_target_key.keys().cloned());
    let mut bundles: BTreeSet<(u32, String)> = BTreeSet::new();
    for (sku, loc) in &affected {
        for &(b, _) in m.component_of(sku) {
            bundles.insert((b, loc.clone()));
        }
    }
    // Relevant target keys: affected ones and every component of an affected bundle.
    let mut relevant: HashSet<Key> = affected.iter().cloned().collect();
    for (b, loc) in &bundles {
        for (c, _) in &m.bundles()[*b as usize].components {
            relevant.insert((c.to_string(), loc.clone()));
        }
    }

    let folds: HashMap<&Key, &Folded> = folds_all.iter().collect();

    // One pass over the snapshot: the rows that feed relevant target keys.
    let mut merged: HashMap<Key, i64> = HashMap::new();
    // Snapshot quantities of the changed source keys.
    let mut seen_source: HashMap<Key, i64> = HashMap::new();
    {
        let mut snap = open_snapshot(&plan.config.source, &snapshot_path)?;
        let mut sink =
            SnapshotSink { m, relevant: &relevant, folds: &folds, merged: &mut merged, seen: &mut seen_source };
        snap.read(&mut sink)?;
    }
    // Source keys that are new in the events (absent from the snapshot).
    for (k, f) in &folds {
        if seen_source.contains_key(*k) {
            continue;
        }
        if let Mapped::To(t, factor) = map_key(m, &k.0, &k.1)
            && relevant.contains(&t)
        {
            let v = f.value(None);
            *merged.entry(t).or_insert(0) += v.saturating_mul(factor);
        }
    }
    // Oversells: source quantities below zero after the events.
    let mut oversold_keys = 0u64;
    let mut oversold_units = 0u64;
    for (k, f) in folds.iter().filter(|(k, _)| by_source_key.contains_key(**k) && target_of.contains_key(**k)) {
        let v = f.value(seen_source.get(*k).copied());
        if v < 0 {
            oversold_keys += 1;
            oversold_units += v.unsigned_abs();
        }
    }
    report.oversells = oversold_keys;
    report.oversold_units = oversold_units;
    if oversold_keys > 0 {
        metrics::counter!("stockshift_oversells_total").increment(oversold_keys);
        // Kept in the state store too, so `serve`'s /metrics reports it whichever process replayed.
        state.bump_counter("oversells", oversold_keys)?;
    }

    // Desired values: safety stock, then bundles, then target-side events.
    let mut desired: BTreeMap<Key, i64> = BTreeMap::new();
    for k in &relevant {
        if let Some(q) = merged.get(k) {
            desired.insert(k.clone(), (q - m.safety_stock(&k.0)).max(0));
        }
    }
    for (b, loc) in &bundles {
        let bundle = &m.bundles()[*b as usize];
        let exists = bundle.components.iter().any(|(c, _)| desired.contains_key(&(c.to_string(), loc.clone())));
        if !exists {
            continue;
        }
        let q = bundle
            .components
            .iter()
            .map(|(c, u)| desired.get(&(c.to_string(), loc.clone())).copied().unwrap_or(0) / u)
            .min()
            .unwrap_or(0);
        desired.insert((bundle.sku.to_string(), loc.clone()), q.max(0));
        affected.insert((bundle.sku.to_string(), loc.clone()));
    }
    for (k, evs) in &by_target_key {
        let f = fold(evs);
        let base = desired.get(k).copied();
        desired.insert(k.clone(), f.value(base).max(0));
    }

    // Writes: affected keys whose target value differs.
    let keys: Vec<Key> = affected.iter().filter(|k| desired.contains_key(*k)).cloned().collect();
    let current = target.read_keys(&keys)?;
    let writes: Vec<Write> = keys
        .iter()
        .zip(&current)
        .filter(|(k, cur)| **cur != Some(desired[*k]))
        .map(|(k, cur)| Write { sku: k.0.clone(), location: k.1.clone(), expected: *cur, new: desired[k] })
        .collect();
    let mut bad_targets: HashSet<Key> = HashSet::new();
    if !writes.is_empty() {
        let run_id = uuid::Uuid::new_v4().to_string();
        if scope.is_none() {
            crate::ops::apply::recover_interrupted(state, target)?;
        }
        let op = state.begin_scoped(
            OpKind::Replay,
            &NewOperation {
                plan_name: &plan.config.name,
                plan_sha256: &plan.sha256,
                artifact_sha256: &run_id,
                writes: writes.len() as u64,
                rollback_of: None,
            },
            &opts.actor,
            scope.map(|s| s.op_scope),
        )?;
        let pending: Vec<usize> = (0..writes.len()).collect();
        let write_of = |i: usize| writes[i].clone();
        let run = execute(state, &op.id, target, &pending, &write_of, opts)?;
        let counts = state.counts(&op.id)?;
        state.finish(&op.id, counts)?;
        report.writes = counts;
        for c in &run.conflicts {
            bad_targets.insert((c.sku.clone(), c.location.clone()));
        }
        for f in &run.failures {
            bad_targets.insert((f.sku.clone(), f.location.clone()));
        }
        report.conflicts = run.conflicts;
        report.failures = run.failures;
        report.op_id = Some(op.id);
    }
    report.writes.already_applied += (keys.len() - writes.len()) as u64;

    // Mark events: applied (or superseded) when every key they feed was written.
    let blocked = |t: &Key| -> bool {
        bad_targets.contains(t)
            || m.component_of(&t.0)
                .iter()
                .any(|&(b, _)| bad_targets.contains(&(m.bundles()[b as usize].sku.to_string(), t.1.clone())))
    };
    let mut applied: Vec<i64> = Vec::new();
    let mut superseded: Vec<i64> = Vec::new();
    let mut failed: Vec<(u64, String)> = Vec::new();
    for (k, evs) in &by_source_key {
        let queued: Vec<&&EpochEvent> = evs.iter().filter(|q| q.queued).collect();
        if let Some(msg) = failed_keys.get(k) {
            // They stay queued (visible in `freeze status`) until the mapping covers them.
            failed.push((queued.len() as u64, msg.clone()));
            continue;
        }
        if !skipped_keys.contains(k) && target_of.get(k).is_some_and(blocked) {
            report.failed += queued.len() as u64;
            continue;
        }
        // A key's superseded list is short: a scan beats building a set per key.
        let sup: &[i64] = folds_all.get(k).map_or(&[], |f| &f.superseded);
        for q in queued {
            if sup.contains(&q.seq) { superseded.push(q.seq) } else { applied.push(q.seq) }
        }
    }
    for (k, evs) in &by_target_key {
        let queued: Vec<&&EpochEvent> = evs.iter().filter(|q| q.queued).collect();
        if blocked(k) {
            report.failed += queued.len() as u64;
            continue;
        }
        let f = fold(evs);
        let sup: HashSet<i64> = f.superseded.into_iter().collect();
        for q in queued {
            if sup.contains(&q.seq) { superseded.push(q.seq) } else { applied.push(q.seq) }
        }
    }
    // Settle: consecutive seqs become one run each (see `Queue::settle`).
    let mut settled: Vec<i64> = applied.iter().chain(&superseded).copied().collect();
    settled.sort_unstable();
    match scope {
        None => {
            queue.settle(&settled, &superseded)?;
        }
        Some(_) => {
            // Settled per partition: a settled run covers one partition's events.
            let part_of_seq: HashMap<i64, u32> = epoch.events.iter().map(|e| (e.seq, part(e))).collect();
            let mut by_part: BTreeMap<u32, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
            for s in &settled {
                by_part.entry(part_of_seq[s]).or_default().0.push(*s);
            }
            for s in &superseded {
                by_part.entry(part_of_seq[s]).or_default().1.push(*s);
            }
            for (p, (seqs, sup)) in &by_part {
                queue.settle_part(Some(*p), seqs, sup)?;
            }
        }
    }
    report.settled = applied.iter().chain(&superseded).copied().collect();
    report.unmapped = failed.iter().map(|(_, msg)| msg.clone()).collect();
    report.applied = applied.len() as u64;
    report.superseded = superseded.len() as u64;
    report.failed += failed.iter().map(|(n, _)| n).sum::<u64>();
    report.events = report.applied + report.superseded + report.failed;
    if scope.is_none() {
        let backlog = queue.queued_count()?;
        metrics::gauge!("stockshift_replay_backlog").set(backlog as f64);
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Groups an epoch's events by key, source-side and target-side apart (`target`
/// says which side an event's source is on).
type Groups<'e> = HashMap<Key, Vec<&'e EpochEvent>>;

fn group(epoch: &Epoch, target: impl Fn(&EpochEvent) -> bool) -> (Groups<'_>, Groups<'_>) {
    // By interned key first: no hashing of strings per event.
    let mut per_key: [Vec<Vec<&EpochEvent>>; 2] =
        [vec![Vec::new(); epoch.keys.len()], vec![Vec::new(); epoch.keys.len()]];
    for e in &epoch.events {
        per_key[target(e) as usize][e.key as usize].push(e);
    }
    let [src, tgt] = per_key;
    (collect_groups(epoch, src), collect_groups(epoch, tgt))
}

fn collect_groups<'e>(epoch: &Epoch, per_key: Vec<Vec<&'e EpochEvent>>) -> Groups<'e> {
    per_key
        .into_iter()
        .enumerate()
        .filter(|(_, evs)| !evs.is_empty())
        .map(|(k, evs)| (epoch.keys[k].clone(), evs))
        .collect()
}

/// The fold of every source-side key's events (failed ones excluded), for
/// computing the expected state: the snapshot with all events applied.
/// `since`: when the snapshot's apply started (see [`epoch::read`]).
pub fn source_folds(plan: &Plan, queue: &Queue, since: &str) -> Result<HashMap<Key, Folded>, QueueError> {
    let target_side: HashSet<&str> = plan
        .config
        .events
        .as_ref()
        .map(|e| e.sources.iter().filter(|s| s.side == EventSide::Target).map(|s| s.name.as_str()).collect())
        .unwrap_or_default();
    let epoch = epoch::read(queue, since.parse().ok())?;
    let (by_source_key, _) = group(&epoch, |e| target_side.contains(epoch.sources[e.source as usize].as_str()));
    Ok(by_source_key.iter().map(|(k, v)| (k.clone(), fold(v))).collect())
}

/// True when events of this source key can be applied under the mapping
/// (its SKU and location are mapped, skipped or passed through, not an error).
pub fn applicable(m: &crate::mapping::Mapping, sku: &str, loc: &str) -> bool {
    !matches!(map_key(m, sku, loc), Mapped::Error(_))
}

enum Mapped {
    To(Key, i64),
    Skip,
    Error(String),
}

/// Steps 1 and 2 for one source key.
fn map_key(m: &crate::mapping::Mapping, sku: &str, loc: &str) -> Mapped {
    let (new_sku, factor) = match m.sku(sku) {
        SkuRule::Renamed { new, factor, .. } => (new.to_string(), factor),
        SkuRule::Passthrough => (sku.to_string(), 1),
        SkuRule::Skip => return Mapped::Skip,
        SkuRule::Error => {
            return Mapped::Error(format!("SKU `{sku}` has no entry in mapping.skus (unmapped_skus: error)"));
        }
    };
    if m.bundle_of(&new_sku).is_some() {
        return Mapped::Error(format!("event for bundle SKU `{new_sku}`: bundle stock is derived from its components"));
    }
    match m.location(loc) {
        LocationRule::To(l) => Mapped::To((new_sku, l.to_string()), factor),
        LocationRule::Skip => Mapped::Skip,
        LocationRule::Error => Mapped::Error(format!("location `{loc}` has no entry in mapping.locations")),
    }
}

/// The source provider pointed at the saved snapshot copy.
pub fn open_snapshot(cfg: &ProviderConfig, path: &str) -> Result<Box<dyn Provider>, ProviderError> {
    let cfg = match cfg {
        ProviderConfig::Sqlite(c) => {
            ProviderConfig::Sqlite(SqliteProviderConfig { path: path.to_string(), ..c.clone() })
        }
        ProviderConfig::Csv(c) => ProviderConfig::Csv(CsvProviderConfig { path: path.to_string(), ..c.clone() }),
        // Network sources are snapshotted to CSV with the standard columns at plan time.
        _ => ProviderConfig::Csv(CsvProviderConfig { path: path.to_string(), columns: Default::default() }),
    };
    provider::open(&cfg, std::path::Path::new(""))
}

/// Collects, from the snapshot, the merged (pre-safety-stock) quantity of every
/// relevant target key, with changed source keys' values replaced by their fold.
struct SnapshotSink<'a> {
    m: &'a crate::mapping::Mapping,
    relevant: &'a HashSet<Key>,
    folds: &'a HashMap<&'a Key, &'a Folded>,
    merged: &'a mut HashMap<Key, i64>,
    seen: &'a mut HashMap<Key, i64>,
}

impl RowSink for SnapshotSink<'_> {
    fn row(&mut self, sku: &str, location: &str, qty: i64, _line: u64) {
        let Mapped::To(t, factor) = map_key(self.m, sku, location) else { return };
        if !self.relevant.contains(&t) {
            return;
        }
        let sk = (sku.to_string(), location.to_string());
        let q = match self.folds.get(&sk) {
            Some(f) => {
                let v = f.value(Some(qty));
                self.seen.insert(sk, qty);
                v
            }
            None => qty,
        };
        *self.merged.entry(t).or_insert(0) += q.saturating_mul(factor);
    }
    fn problem(&mut self, _: u64, _: usize, _: String, _: String) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(seq: i64, id: &str, change: Change, sequence: i64) -> EpochEvent {
        EpochEvent {
            seq,
            key: 0,
            source: 0,
            change,
            sequence,
            set_id: matches!(change, Change::Qty(_)).then(|| id.into()),
            queued: true,
        }
    }

    #[test]
    fn fold_takes_the_latest_set_plus_later_deltas() {
        let evs = [
            q(1, "d1", Change::Delta(-2), 10),
            q(2, "s1", Change::Qty(50), 20),
            q(3, "d2", Change::Delta(-3), 30),
            q(4, "d3", Change::Delta(-1), 15), // late, but below the set: contained in it
            q(5, "s0", Change::Qty(99), 5),    // a stale set
        ];
        let refs: Vec<&EpochEvent> = evs.iter().collect();
        let f = fold(&refs);
        assert_eq!(f.value(Some(7)), 47);
        let mut sup = f.superseded.clone();
        sup.sort();
        assert_eq!(sup, vec![1, 4]);
        // Without a set: snapshot + all deltas.
        let only_deltas: Vec<&EpochEvent> = evs.iter().filter(|e| matches!(e.change, Change::Delta(_))).collect();
        assert_eq!(fold(&only_deltas).value(Some(7)), 1);
    }

    #[test]
    fn fold_ignores_order() {
        let evs = [
            q(1, "a", Change::Delta(-2), 10),
            q(2, "b", Change::Qty(50), 20),
            q(3, "c", Change::Delta(4), 30),
            q(4, "d", Change::Qty(60), 20), // same sequence as b: the id breaks the tie
        ];
        let mut refs: Vec<&EpochEvent> = evs.iter().collect();
        let v = fold(&refs).value(Some(0));
        refs.reverse();
        assert_eq!(fold(&refs).value(Some(0)), v);
        assert_eq!(v, 64);
    }
}
