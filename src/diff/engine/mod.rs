//! Mapping and diff (SPEC section 2, steps 1 to 6), with no I/O.
//!
//! Providers push target rows and source rows (in any order) into an [`Engine`];
//! [`Engine::finish`] returns the [`Diff`], or every input problem found.
//! [`plan_parallel`] does the same with every input (or part of one, such as a
//! database table read by rowid ranges) read at the same time, one thread each;
//! both share every step below.
//!
//! # Two phases, radix-partitioned
//!
//! Memory and cache misses are the constraints at ten million rows. A single
//! hash table over every (sku, location) key is hundreds of megabytes, and every
//! row then costs a few random DRAM accesses. So the work is split in two:
//!
//! 1. **Collect** ([`collect`]), streaming, one collector per input (and thread).
//!    Each row is checked and mapped as far as a row alone allows (step 1, the
//!    SKU rename and factor; step 2, the location rule; a bundle row, an
//!    overflowing quantity), then appended as a compact variable-length record
//!    to one of [`PARTITIONS`] per-partition buffers chosen by a hash of its
//!    (mapped) SKU. A record is about 17 bytes (target) or 18 bytes (source):
//!    the SKU bytes (omitted for a renamed source row, whose new SKU is the
//!    rename's), a varint location id, a zigzag varint quantity and the line as a
//!    zigzag varint delta from the previous record of the same buffer. Buffers
//!    are chains of blocks growing from 4 KiB to 64 KiB that are never copied or
//!    over-allocated by more than one block, so this phase holds about 18 bytes
//!    per row and writes them sequentially (one hot cache line per partition).
//!    Location names are interned per collector; ids are remapped to one global
//!    table (target names first, then source names, in first-seen order) before
//!    phase 2.
//! 2. **Merge and diff** ([`part`]), one partition at a time, on as many threads
//!    as there are cores, each taking the next partition. A partition's target
//!    records, then its source records, are inserted into a small hash table of
//!    40-byte entries (duplicate rows and merges are found there, step 3); then
//!    the partition is finished at once (step 4, safety stock; step 6, the diff
//!    and orphans) and its table and record blocks are released. With 1,024
//!    partitions a partition holds about 10,000 keys at 10M rows, so its table,
//!    entries and SKU arena (about 600 KB) stay in the core's L2 cache.
//!    Bundle (step 5) inputs are tiny and kept aside: component quantities with
//!    their traces, and target rows of bundle SKUs; bundles are computed and
//!    diffed after every partition.
//!
//! Peak memory is therefore the records of both inputs plus one partition per
//! thread, plus the changes themselves.
//!
//! Results do not depend on the number of threads or on which thread finished
//! first: changes are sorted by (location, SKU) at the end, and input problems
//! by (side, line). When there are more than [`MAX_ISSUES`] problems, the ones
//! kept are the target's lowest lines, then the source's lowest lines: what a
//! one-pass reader that reads the target first would keep. (With
//! `orphans: error`, the orphans reported are likewise the lowest lines.)
//!
//! Arithmetic on quantities never wraps: safety stock saturates, so a quantity
//! near `i64::MIN` gives 0, not a huge number.

mod collect;
mod part;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use foldhash::HashMap;

use self::collect::{Collector, Records};
use self::part::{Ctx, Out, Part};
use super::{Action, Change, Diff, Summary};
use crate::config::model::OrphanPolicy;
use crate::mapping::Mapping;
use crate::provider::{ReadInfo, RowSink};
#[cfg(test)]
use {
    super::SourceRef,
    crate::mapping::{LocationRule, SkuRule},
};

/// Number of partitions (a power of two). 1,024 keeps a partition's working set
/// in L2 at 10M rows while the 1,024 buffer tails of phase 1 stay cache-resident.
const PARTITIONS: usize = 1024;
const PARTITION_BITS: u32 = PARTITIONS.trailing_zeros();
/// `origin` of a row whose SKU passed through without a rename.
const PASSTHROUGH: u32 = u32::MAX;
/// A location id that does not fit the 16-bit id space (more than 65,535 names).
const NO_LOC: u16 = u16::MAX;
/// Below this many records, phase 2 runs on the calling thread.
const PARALLEL_MIN_RECORDS: u64 = 1 << 16;
/// Cap on issues kept with their text; the rest are counted.
const MAX_ISSUES: usize = 1000;

/// Which input a row or problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Source,
    Target,
}

/// A problem with an input row. Nothing is written while any exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub side: Side,
    /// Line (or row id) of the offending row; 0 for problems not tied to a row.
    pub line: u64,
    /// Column, when known (0 otherwise).
    pub col: usize,
    pub summary: String,
    pub help: String,
}

/// Counts of what the engine saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub source_rows: u64,
    pub target_rows: u64,
    pub skipped_sku_rows: u64,
    pub skipped_location_rows: u64,
}

impl Stats {
    fn plus(self, o: Stats) -> Stats {
        Stats {
            source_rows: self.source_rows + o.source_rows,
            target_rows: self.target_rows + o.target_rows,
            skipped_sku_rows: self.skipped_sku_rows + o.skipped_sku_rows,
            skipped_location_rows: self.skipped_location_rows + o.skipped_location_rows,
        }
    }
}

/// What [`Engine::finish`] and [`plan_parallel`] return: the diff, or every input
/// problem (at most [`MAX_ISSUES`] of them with their text) and how many there were.
pub type Outcome = Result<(Diff, Stats), (Vec<Issue>, u64)>;

/// The hasher for partitions and partition tables; fixed, so runs are repeatable.
fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x5eed_57c0_c5f1)
}

/// The partition of a (mapped) SKU: the top bits of its hash. Partition tables
/// hash (sku, location) with the same hasher, a different input, so the bits
/// every key of a partition shares are not reused by its table.
#[inline]
fn partition_of(hasher: &foldhash::fast::FixedState, sku: &[u8]) -> usize {
    use std::hash::BuildHasher;
    (hasher.hash_one(sku) >> (64 - PARTITION_BITS)) as usize
}

/// Problems of one side, keeping the text of the [`MAX_ISSUES`] lowest lines.
#[derive(Debug, Default)]
struct IssueLog {
    kept: Vec<Issue>,
    count: u64,
}

impl IssueLog {
    fn push(&mut self, issue: Issue) {
        self.count += 1;
        self.kept.push(issue);
        if self.kept.len() >= 2 * MAX_ISSUES {
            self.trim();
        }
    }

    /// Sorts by line (stable: problems of one line stay in the order found) and
    /// keeps the first [`MAX_ISSUES`].
    fn trim(&mut self) {
        self.kept.sort_by_key(|i| i.line);
        self.kept.truncate(MAX_ISSUES);
    }

    fn absorb(&mut self, other: IssueLog) {
        self.count += other.count;
        self.kept.extend(other.kept);
        if self.kept.len() >= 2 * MAX_ISSUES {
            self.trim();
        }
    }
}

/// The problems to report: the target's lowest lines first, then the source's,
/// [`MAX_ISSUES`] in all, sorted by (side, line, column); plus the total count.
fn select_issues(mut target: IssueLog, mut source: IssueLog) -> (Vec<Issue>, u64) {
    let total = target.count + source.count;
    target.trim();
    source.trim();
    let mut out = target.kept;
    let room = MAX_ISSUES.saturating_sub(out.len());
    out.extend(source.kept.into_iter().take(room));
    out.sort_by_key(|a| (a.side, a.line, a.col));
    (out, total)
}

fn clamp_line(line: u64) -> u32 {
    u32::try_from(line).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------- issue texts

fn too_large(side: Side, line: u64) -> Issue {
    Issue {
        side,
        line,
        col: 1,
        summary: "Key too large to index".into(),
        help: "SKUs are limited to 65,535 bytes and a plan to 65,535 distinct locations; check that the columns are right."
            .into(),
    }
}

fn duplicate(side: Side, line: u64, sku: &str, location: &str, first: u32) -> Issue {
    Issue {
        side,
        line,
        col: 1,
        summary: format!("Duplicate row for ({sku}, {location})"),
        help: format!("Line {first} already holds this SKU and location; keep one row per key."),
    }
}

fn unmapped_location(line: u64, location: &str) -> Issue {
    Issue {
        side: Side::Source,
        line,
        col: 1,
        summary: format!("Location `{location}` has no entry in mapping.locations"),
        help: "Add it to mapping.locations, or set `mapping.unmapped_locations` to `passthrough` or `skip`.".into(),
    }
}

// ---------------------------------------------------------------- the engine

/// Accumulates rows; see the module docs. Rows may come in any order; a thread
/// per input is what [`plan_parallel`] adds.
pub struct Engine<'m> {
    m: &'m Mapping,
    target: Collector<'m>,
    source: Collector<'m>,
}

impl<'m> Engine<'m> {
    pub fn new(mapping: &'m Mapping) -> Self {
        Engine {
            m: mapping,
            target: Collector::new(mapping, Side::Target),
            source: Collector::new(mapping, Side::Source),
        }
    }

    pub fn stats(&self) -> Stats {
        self.target.stats.plus(self.source.stats)
    }

    /// Records an input problem (used by providers for rows they cannot parse).
    pub fn issue(&mut self, side: Side, line: u64, col: usize, summary: String, help: String) {
        let issue = Issue { side, line, col, summary, help };
        match side {
            Side::Source => self.source.issues.push(issue),
            Side::Target => self.target.issues.push(issue),
        }
    }

    /// Adds a row of the target as read.
    pub fn add_target(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        self.target.add_target(sku, location, qty, line);
    }

    /// Adds a row of the source as read; steps 1 and 2 happen here, step 3 in `finish`.
    pub fn add_source(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        self.source.add_source(sku, location, qty, line);
    }

    /// The input problems (for `validate`, which does not diff): every row is
    /// checked, including duplicates and merges, but nothing is diffed.
    pub fn into_issues(self) -> (Vec<Issue>, u64) {
        match run(self.m, vec![self.target], vec![self.source], Mode::CheckOnly, None) {
            Err(e) => e,
            Ok(_) => (Vec::new(), 0),
        }
    }

    /// Steps 3 to 6: merge, safety stock, bundles and the diff. Returns every input
    /// problem instead when there is any, plus how many there were.
    pub fn finish(self) -> Outcome {
        run(self.m, vec![self.target], vec![self.source], Mode::Diff, None)
    }

    #[cfg(test)]
    fn finish_with_threads(self, threads: usize) -> Outcome {
        run(self.m, vec![self.target], vec![self.source], Mode::Diff, Some(threads))
    }
}

/// What [`plan_parallel`] read and computed.
pub struct Planned {
    pub outcome: Outcome,
    /// What reading the target returned (rows summed over its parts; a digest only
    /// when it was read in one part).
    pub target: ReadInfo,
    pub source: ReadInfo,
}

/// One reader of an input, or of a part of one: streams rows into the sink it is
/// given (a provider's `read`, or one of its `read_parts`).
pub type Reader<'a, E> = Box<dyn FnOnce(&mut dyn RowSink) -> Result<ReadInfo, E> + Send + 'a>;

/// Runs every reader at the same time, each on its own thread with its own
/// collector (the first target reader on the calling thread), then merges and
/// diffs on every core. An input split into parts must list them in input order
/// (their rows are taken in that order, so the first of two duplicate rows is the
/// earlier one). A read error is returned as it is: the first in the order target
/// parts, then source parts. The outcome holds input problems.
pub fn plan_parallel<E: Send>(
    mapping: &Mapping,
    targets: Vec<Reader<'_, E>>,
    sources: Vec<Reader<'_, E>>,
) -> Result<Planned, E> {
    let mut jobs: Vec<(Side, Reader<'_, E>, Collector<'_>)> = Vec::new();
    for (side, readers) in [(Side::Target, targets), (Side::Source, sources)] {
        jobs.extend(readers.into_iter().map(|r| (side, r, Collector::new(mapping, side))));
    }
    let results: Vec<(Side, Result<ReadInfo, E>, Collector<'_>)> = std::thread::scope(|scope| {
        let mut jobs = jobs.into_iter();
        let here = jobs.next();
        let handles: Vec<_> = jobs
            .map(|(side, read, mut c)| {
                scope.spawn(move || {
                    let r = read(&mut c);
                    (side, r, c)
                })
            })
            .collect();
        let mut results = Vec::with_capacity(handles.len() + 1);
        if let Some((side, read, mut c)) = here {
            let r = read(&mut c);
            results.push((side, r, c));
        }
        results.extend(handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))));
        results
    });
    let mut info = (Vec::new(), Vec::new());
    let (mut targets, mut sources) = (Vec::new(), Vec::new());
    for (side, r, c) in results {
        let r = r?;
        match side {
            Side::Target => {
                info.0.push(r);
                targets.push(c);
            }
            Side::Source => {
                info.1.push(r);
                sources.push(c);
            }
        }
    }
    let outcome = run(mapping, targets, sources, Mode::Diff, None);
    Ok(Planned { outcome, target: merged(info.0), source: merged(info.1) })
}

/// The read info of an input read in parts.
fn merged(parts: Vec<ReadInfo>) -> ReadInfo {
    let rows = parts.iter().map(|p| p.rows).sum();
    match <[ReadInfo; 1]>::try_from(parts) {
        Ok([one]) => one,
        Err(_) => ReadInfo { rows, sha256: None },
    }
}

// ---------------------------------------------------------------- phase 2

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Diff,
    CheckOnly,
}

/// How one collector's local location ids map to global ones.
struct LocMap {
    /// Local id to global id (`NO_LOC` when the global table is full).
    global: Vec<u16>,
    /// Source collectors: local raw id to the global id of its mapped location
    /// (`NO_LOC` when unmapped or the table is full).
    mapped: Vec<u16>,
}

/// One partition's record buffers, one per collector of each side, in input order.
#[derive(Default)]
struct Work {
    target: Vec<Records>,
    source: Vec<Records>,
}

/// Phase 2 and the conclusion, for any number of collectors per side (their
/// records are taken in the order given, so earlier collectors hold earlier lines).
fn run(
    m: &Mapping,
    targets: Vec<Collector<'_>>,
    sources: Vec<Collector<'_>>,
    mode: Mode,
    threads: Option<usize>,
) -> Outcome {
    // Global location table: target names first, then source names, in first-seen order.
    let mut names = collect::Locations::default();
    let mut stats = Stats::default();
    let mut target_issues = IssueLog::default();
    let mut source_issues = IssueLog::default();
    let mut work: Vec<Work> = (0..PARTITIONS).map(|_| Work::default()).collect();
    let mut records = 0u64;
    let mut maps = (Vec::new(), Vec::new());
    for (side, list) in [(Side::Target, targets), (Side::Source, sources)] {
        for c in list {
            let global: Vec<u16> = c.locs.names.iter().map(|n| names.intern(n).unwrap_or(NO_LOC)).collect();
            let mapped = c
                .locs
                .mapped_ids()
                .map(|l| l.and_then(|l| global.get(l as usize).copied()).unwrap_or(NO_LOC))
                .collect();
            stats = stats.plus(c.stats);
            for (w, r) in work.iter_mut().zip(c.parts) {
                records += r.count;
                match side {
                    Side::Target => w.target.push(r),
                    Side::Source => w.source.push(r),
                }
            }
            match side {
                Side::Target => {
                    target_issues.absorb(c.issues);
                    maps.0.push(LocMap { global, mapped });
                }
                Side::Source => {
                    source_issues.absorb(c.issues);
                    maps.1.push(LocMap { global, mapped });
                }
            }
        }
    }
    let ctx = Ctx { m, names: names.names, hasher: hasher(), target_maps: maps.0, source_maps: maps.1 };
    let failed = AtomicBool::new(target_issues.count + source_issues.count > 0);
    let threads = threads.unwrap_or_else(|| {
        if records < PARALLEL_MIN_RECORDS {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(16)
        }
    });

    let work: Vec<Mutex<Work>> = work.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut part = Part::default();
        let mut out = Out::default();
        loop {
            let p = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = work.get(p) else { break };
            let w = std::mem::take(&mut *slot.lock().unwrap_or_else(PoisonError::into_inner));
            let before = out.target_issues.count + out.source_issues.count;
            part.load(&ctx, w, &mut out);
            if out.target_issues.count + out.source_issues.count > before {
                failed.store(true, Ordering::Relaxed);
            }
            if mode == Mode::Diff && !failed.load(Ordering::Relaxed) {
                part.finish(&ctx, &mut out);
            }
        }
        out
    };
    let outs: Vec<Out> = if threads <= 1 {
        vec![worker()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        })
    };
    conclude(&ctx, outs, target_issues, source_issues, stats, mode)
}

/// Merges the partitions' results; step 5 (bundles), orphans, warnings and order.
fn conclude(
    ctx: &Ctx<'_>,
    outs: Vec<Out>,
    mut target_issues: IssueLog,
    mut source_issues: IssueLog,
    stats: Stats,
    mode: Mode,
) -> Outcome {
    let m = ctx.m;
    let mut all = Out::default();
    for o in outs {
        target_issues.absorb(o.target_issues);
        source_issues.absorb(o.source_issues);
        all.changes.extend(o.changes);
        all.unchanged += o.unchanged;
        all.orphans += o.orphans;
        all.orphan_issues.absorb(o.orphan_issues);
        for (key, slots) in o.acc {
            // Components of one bundle at one location may sit in partitions that
            // different threads finished: merge slot by slot.
            match all.acc.entry(key) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slots);
                }
                std::collections::hash_map::Entry::Occupied(mut have) => {
                    for (mine, theirs) in have.get_mut().iter_mut().zip(slots) {
                        if theirs.is_some() {
                            *mine = theirs;
                        }
                    }
                }
            }
        }
        all.bundle_targets.extend(o.bundle_targets);
    }
    if target_issues.count + source_issues.count > 0 {
        return Err(select_issues(target_issues, source_issues));
    }
    if mode == Mode::CheckOnly {
        return Err((Vec::new(), 0));
    }
    let mut summary = Summary { unchanged: all.unchanged, ..Summary::default() };
    let mut changes = all.changes;

    // Step 5: bundles, at every location where a component has a row.
    let mut bundle_keys: Vec<(u32, u16)> = all.acc.keys().copied().collect();
    bundle_keys.sort_unstable();
    let mut bundle_targets = all.bundle_targets;
    for (b, loc) in bundle_keys {
        let Some(bundle) = m.bundles().get(b as usize) else { continue };
        let Some(parts_of) = all.acc.remove(&(b, loc)) else { continue };
        let mut qty = i64::MAX;
        let mut from = Vec::new();
        let mut recipe = Vec::new();
        for (pos, (comp, units)) in bundle.components.iter().enumerate() {
            let c = parts_of.get(pos).and_then(Option::as_ref);
            let have = c.map_or(0, |c| c.after);
            qty = qty.min(have.checked_div(*units).unwrap_or(0));
            recipe.push(format!("{comp} {have}/{units}"));
            if let Some(c) = c {
                from.extend(c.from.iter().cloned());
            }
        }
        let qty = qty.max(0);
        let target = bundle_targets.remove(&(b, loc));
        if target.is_some_and(|(t, _)| t == qty) {
            summary.unchanged += 1;
            continue;
        }
        changes.push(Change {
            sku: bundle.sku.to_string(),
            location: ctx.loc_name(loc).to_string(),
            action: if target.is_some() { Action::Update } else { Action::Create },
            before: target.map(|(t, _)| t),
            after: qty,
            orphan: false,
            bundle: true,
            from,
            note: format!("min({})", recipe.join(", ")),
        });
    }

    // Step 6, orphans: target rows of bundles that step 5 did not produce join the
    // target keys the mapped source does not have.
    let mut orphans = Out { orphans: all.orphans, orphan_issues: all.orphan_issues, ..Out::default() };
    let mut leftover: Vec<((u32, u16), (i64, u32))> = bundle_targets.into_iter().collect();
    leftover.sort_unstable();
    for ((b, loc), (target, line)) in leftover {
        if let Some(bundle) = m.bundles().get(b as usize) {
            orphans.orphan(ctx, &bundle.sku, loc, target, line);
        }
    }
    summary.unchanged += orphans.unchanged;
    changes.extend(orphans.changes);
    let mut warnings = Vec::new();
    if orphans.orphans > 0 {
        match m.orphans {
            OrphanPolicy::Ignore => warnings.push(format!(
                "{} target key(s) are absent from the mapped source and are left as they are (mapping.orphans: ignore).",
                orphans.orphans
            )),
            OrphanPolicy::Zero => {}
            OrphanPolicy::Error => {
                let mut log = orphans.orphan_issues;
                log.trim();
                return Err((log.kept, orphans.orphans));
            }
        }
    }
    if stats.skipped_sku_rows > 0 {
        warnings.push(format!(
            "{} source row(s) skipped: SKU not in mapping.skus (mapping.unmapped_skus: skip).",
            stats.skipped_sku_rows
        ));
    }
    if stats.skipped_location_rows > 0 {
        warnings.push(format!(
            "{} source row(s) skipped: location not in mapping.locations (mapping.unmapped_locations: skip).",
            stats.skipped_location_rows
        ));
    }
    for c in &changes {
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
        }
    }
    changes.sort_unstable_by(|a, b| (&a.location, &a.sku).cmp(&(&b.location, &b.sku)));
    Ok((Diff { summary, changes, warnings }, stats))
}

/// Bundle component quantities gathered by phase 2: (bundle, location) to one
/// slot per component.
type BundleAcc = HashMap<(u32, u16), Vec<Option<part::Component>>>;
