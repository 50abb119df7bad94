//! Mapping and diff in one pass over the rows, with no I/O.
//!
//! Providers push target rows and source rows (in any order) into an [`Engine`];
//! [`Engine::finish`] applies SPEC section 2 steps 1 to 6 and returns the
//! [`Diff`], or every input problem found.
//!
//! Memory is the constraint at ten million rows: the engine keeps one compact
//! 40-byte entry per distinct (sku, location) key, SKU bytes in per-partition
//! arenas, and nothing per source row unless a key merges several rows. Keys are
//! spread over 256 partitions by hash, so every hash table stays small enough to
//! grow without a large copy and to stay warm in cache.

use std::fmt::Write as _;
use std::hash::BuildHasher;

use foldhash::HashMap;
use hashbrown::HashTable;

use super::{Action, Change, Diff, SourceRef, Summary};
use crate::config::model::OrphanPolicy;
use crate::mapping::{LocationRule, Mapping, SkuRule};

const PARTITIONS: usize = 256;
/// `origin` of a row whose SKU passed through without a rename.
const PASSTHROUGH: u32 = u32::MAX;

const F_SRC: u16 = 1;
const F_TGT: u16 = 2;
const F_MULTI: u16 = 4;
const F_BUNDLE: u16 = 8;

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

/// One (sku, location) key. 40 bytes; see the module docs.
#[derive(Debug, Clone, Copy)]
struct Entry {
    sku_off: u32,
    sku_len: u16,
    loc: u16,
    raw_loc: u16,
    flags: u16,
    /// Rename index of the first source row, or `PASSTHROUGH`.
    origin: u32,
    src_line: u32,
    tgt_line: u32,
    /// Mapped quantity (sum of rows × factor; after `finish`, after safety stock).
    desired: i64,
    target: i64,
}

/// A source row of a key that several rows merge into.
#[derive(Debug, Clone, Copy)]
struct Contributor {
    origin: u32,
    raw_loc: u16,
    raw_qty: i64,
    line: u32,
}

#[derive(Default)]
struct Part {
    table: HashTable<u32>,
    entries: Vec<Entry>,
    arena: Vec<u8>,
}

impl Part {
    #[inline]
    fn sku(&self, e: &Entry) -> &str {
        let b = &self.arena[e.sku_off as usize..e.sku_off as usize + e.sku_len as usize];
        // Only valid UTF-8 is ever copied into the arena.
        std::str::from_utf8(b).unwrap_or_default()
    }
}

/// Location names, interned to small ids.
#[derive(Default)]
struct Locations {
    ids: HashMap<Box<str>, u16>,
    names: Vec<Box<str>>,
    /// For each id used as a source location: how step 2 maps it.
    resolved: Vec<Option<Resolved>>,
}

#[derive(Clone, Copy)]
enum Resolved {
    To(u16),
    Skip,
    Error,
}

impl Locations {
    fn intern(&mut self, name: &str) -> Option<u16> {
        if let Some(&id) = self.ids.get(name) {
            return Some(id);
        }
        if self.names.len() >= u16::MAX as usize {
            return None;
        }
        let id = self.names.len() as u16;
        self.ids.insert(name.into(), id);
        self.names.push(name.into());
        self.resolved.push(None);
        Some(id)
    }
}

/// A bundle component's quantity at one location, for step 5.
#[derive(Debug, Clone, Copy)]
struct Component {
    after: i64,
    pre: i64,
    p: u32,
    i: u32,
}

/// Counts of what the engine saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub source_rows: u64,
    pub target_rows: u64,
    pub skipped_sku_rows: u64,
    pub skipped_location_rows: u64,
}

/// Cap on issues kept with their text; the rest are counted.
const MAX_ISSUES: usize = 1000;

/// Accumulates rows; see the module docs.
pub struct Engine<'m> {
    m: &'m Mapping,
    hasher: foldhash::fast::FixedState,
    parts: Vec<Part>,
    locs: Locations,
    contributors: HashMap<(u32, u32), Vec<Contributor>>,
    issues: Vec<Issue>,
    issue_count: u64,
    stats: Stats,
}

impl<'m> Engine<'m> {
    pub fn new(mapping: &'m Mapping) -> Self {
        Engine {
            m: mapping,
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_57c0_c5f1),
            parts: (0..PARTITIONS).map(|_| Part::default()).collect(),
            locs: Locations::default(),
            contributors: HashMap::default(),
            issues: Vec::new(),
            issue_count: 0,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Records an input problem (used by providers for rows they cannot parse).
    pub fn issue(&mut self, side: Side, line: u64, col: usize, summary: String, help: String) {
        self.issue_count += 1;
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue { side, line, col, summary, help });
        }
    }

    #[inline]
    fn hash(&self, sku: &str, loc: u16) -> u64 {
        self.hasher.hash_one((sku.as_bytes(), loc))
    }

    /// Finds or inserts the key; returns (partition, index, inserted).
    #[inline]
    fn slot(&mut self, sku: &str, loc: u16) -> Option<(u32, u32, bool)> {
        let h = self.hash(sku, loc);
        // Bits 48..56 pick the partition: hashbrown uses the low bits for the bucket and
        // the top 7 for its control bytes, so the partition must not reuse either.
        let p = ((h >> 48) & 0xff) as usize;
        let hasher = self.hasher.clone();
        let part = &mut self.parts[p];
        let Part { table, entries, arena } = part;
        let found = table.find(h, |&i| {
            let e = &entries[i as usize];
            e.loc == loc && &arena[e.sku_off as usize..e.sku_off as usize + e.sku_len as usize] == sku.as_bytes()
        });
        if let Some(&i) = found {
            return Some((p as u32, i, false));
        }
        if sku.len() > u16::MAX as usize
            || arena.len() + sku.len() > u32::MAX as usize
            || entries.len() >= u32::MAX as usize
        {
            return None;
        }
        let idx = entries.len() as u32;
        let off = arena.len() as u32;
        arena.extend_from_slice(sku.as_bytes());
        entries.push(Entry {
            sku_off: off,
            sku_len: sku.len() as u16,
            loc,
            raw_loc: loc,
            flags: 0,
            origin: PASSTHROUGH,
            src_line: 0,
            tgt_line: 0,
            desired: 0,
            target: 0,
        });
        table.insert_unique(h, idx, |&i| {
            let e = &entries[i as usize];
            hasher.hash_one((&arena[e.sku_off as usize..e.sku_off as usize + e.sku_len as usize], e.loc))
        });
        Some((p as u32, idx, true))
    }

    fn check_row(&mut self, side: Side, sku: &str, loc: &str, line: u64) -> bool {
        let mut ok = true;
        if sku.trim().is_empty() {
            self.issue(
                side,
                line,
                1,
                "Empty SKU".into(),
                "Every row needs a SKU; fill it in or delete the row.".into(),
            );
            ok = false;
        }
        if loc.trim().is_empty() {
            self.issue(
                side,
                line,
                1,
                "Empty location".into(),
                "Every row needs a location; fill it in or delete the row.".into(),
            );
            ok = false;
        }
        ok
    }

    fn too_large(&mut self, side: Side, line: u64) {
        self.issue(
            side,
            line,
            1,
            "Key too large to index".into(),
            "SKUs are limited to 65,535 bytes and a plan to 65,535 distinct locations; check that the columns are right.".into(),
        );
    }

    /// Adds a row of the target as read.
    pub fn add_target(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        self.stats.target_rows += 1;
        if !self.check_row(Side::Target, sku, location, line) {
            return;
        }
        let Some(loc) = self.locs.intern(location) else {
            return self.too_large(Side::Target, line);
        };
        let Some((p, i, _)) = self.slot(sku, loc) else {
            return self.too_large(Side::Target, line);
        };
        let e = &mut self.parts[p as usize].entries[i as usize];
        if e.flags & F_TGT != 0 {
            let first = e.tgt_line;
            self.issue(
                Side::Target,
                line,
                1,
                format!("Duplicate row for ({sku}, {location})"),
                format!("Line {first} already holds this SKU and location; keep one row per key."),
            );
            return;
        }
        e.flags |= F_TGT;
        e.target = qty;
        e.tgt_line = clamp_line(line);
    }

    fn bundle_row(&mut self, line: u64, sku: &str) {
        self.issue(
            Side::Source,
            line,
            1,
            format!("Source row for bundle SKU `{sku}`"),
            "A bundle's stock is derived from its components; remove this row, or remove the bundle from mapping.bundles.".into(),
        );
    }

    fn resolve_location(&mut self, raw: u16) -> Resolved {
        if let Some(r) = self.locs.resolved[raw as usize] {
            return r;
        }
        let name = self.locs.names[raw as usize].clone();
        let r = match self.m.location(&name) {
            LocationRule::To(to) => match self.locs.intern(&to) {
                Some(id) => Resolved::To(id),
                None => Resolved::Error,
            },
            LocationRule::Skip => Resolved::Skip,
            LocationRule::Error => Resolved::Error,
        };
        self.locs.resolved[raw as usize] = Some(r);
        r
    }

    /// Adds a row of the source as read; steps 1 to 3 happen here.
    pub fn add_source(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        self.stats.source_rows += 1;
        if !self.check_row(Side::Source, sku, location, line) {
            return;
        }
        let Some(raw_loc) = self.locs.intern(location) else {
            return self.too_large(Side::Source, line);
        };
        let (origin, new_sku, factor) = match self.m.sku(sku) {
            SkuRule::Renamed { index, new, factor } => (index, new, factor),
            SkuRule::Passthrough => (PASSTHROUGH, sku, 1),
            SkuRule::Skip => {
                self.stats.skipped_sku_rows += 1;
                return;
            }
            SkuRule::Error if self.m.bundle_of(sku).is_some() => {
                self.bundle_row(line, sku);
                return;
            }
            SkuRule::Error => {
                self.issue(
                    Side::Source,
                    line,
                    1,
                    format!("SKU `{sku}` has no entry in mapping.skus"),
                    "Add it to mapping.skus, or set `mapping.unmapped_skus` to `passthrough` or `skip`.".into(),
                );
                return;
            }
        };
        let loc = match self.resolve_location(raw_loc) {
            Resolved::To(l) => l,
            Resolved::Skip => {
                self.stats.skipped_location_rows += 1;
                return;
            }
            Resolved::Error => {
                self.issue(
                    Side::Source,
                    line,
                    1,
                    format!("Location `{location}` has no entry in mapping.locations"),
                    "Add it to mapping.locations, or set `mapping.unmapped_locations` to `passthrough` or `skip`."
                        .into(),
                );
                return;
            }
        };
        if self.m.bundle_of(new_sku).is_some() {
            self.bundle_row(line, new_sku);
            return;
        }
        let Some(mapped) = qty.checked_mul(factor) else {
            self.issue(
                Side::Source,
                line,
                1,
                format!("Quantity {qty} × factor {factor} overflows"),
                "Check the quantity and the factor.".into(),
            );
            return;
        };
        // The new SKU may borrow from the mapping; copy before mutably borrowing self.
        let m = self.m;
        let new_sku: &str = if origin == PASSTHROUGH { sku } else { &m.rename_at(origin).new };
        let Some((p, i, _)) = self.slot(new_sku, loc) else {
            return self.too_large(Side::Source, line);
        };
        let line32 = clamp_line(line);
        let e = self.parts[p as usize].entries[i as usize];
        if e.flags & F_SRC == 0 {
            let e = &mut self.parts[p as usize].entries[i as usize];
            e.flags |= F_SRC;
            e.origin = origin;
            e.raw_loc = raw_loc;
            e.src_line = line32;
            e.desired = mapped;
            return;
        }
        // A second row for the same mapped key: a merge, or a duplicate input row.
        let list = self.contributors.entry((p, i)).or_default();
        if list.is_empty() {
            let f = if e.origin == PASSTHROUGH { 1 } else { self.m.rename_at(e.origin).factor };
            list.push(Contributor { origin: e.origin, raw_loc: e.raw_loc, raw_qty: e.desired / f, line: e.src_line });
        }
        if let Some(first) = list.iter().find(|c| c.origin == origin && c.raw_loc == raw_loc) {
            let first = first.line;
            self.issue(
                Side::Source,
                line,
                1,
                format!("Duplicate row for ({sku}, {location})"),
                format!("Line {first} already holds this SKU and location; keep one row per key."),
            );
            return;
        }
        list.push(Contributor { origin, raw_loc, raw_qty: qty, line: line32 });
        let e = &mut self.parts[p as usize].entries[i as usize];
        e.flags |= F_MULTI;
        match e.desired.checked_add(mapped) {
            Some(sum) => e.desired = sum,
            None => self.issue(
                Side::Source,
                line,
                1,
                "Merged quantity overflows".into(),
                "Check the quantities of the rows merged into this key.".into(),
            ),
        }
    }

    fn raw_sku<'a>(&'a self, part: &'a Part, e: &Entry, origin: u32) -> &'a str {
        if origin == PASSTHROUGH { part.sku(e) } else { &self.m.rename_at(origin).old }
    }

    fn sources_of(&self, p: u32, i: u32, pre_safety: i64) -> Vec<SourceRef> {
        let part = &self.parts[p as usize];
        let e = &part.entries[i as usize];
        if e.flags & F_MULTI != 0
            && let Some(list) = self.contributors.get(&(p, i))
        {
            return list
                .iter()
                .map(|c| SourceRef {
                    sku: self.raw_sku(part, e, c.origin).to_owned(),
                    location: self.locs.names[c.raw_loc as usize].to_string(),
                    qty: c.raw_qty,
                    line: c.line as u64,
                })
                .collect();
        }
        let factor = if e.origin == PASSTHROUGH { 1 } else { self.m.rename_at(e.origin).factor };
        vec![SourceRef {
            sku: self.raw_sku(part, e, e.origin).to_owned(),
            location: self.locs.names[e.raw_loc as usize].to_string(),
            qty: pre_safety / factor,
            line: e.src_line as u64,
        }]
    }

    fn note_of(&self, p: u32, i: u32, pre_safety: i64, after: i64) -> String {
        let part = &self.parts[p as usize];
        let e = &part.entries[i as usize];
        let mut note = String::new();
        if e.flags & F_MULTI != 0 {
            let n = self.contributors.get(&(p, i)).map_or(0, Vec::len);
            let _ = write!(note, "sum of {n} source rows");
        } else if e.origin != PASSTHROUGH {
            let r = self.m.rename_at(e.origin);
            if r.factor != 1 {
                let _ = write!(note, "{} × {}", pre_safety / r.factor, r.factor);
            }
        }
        let held = pre_safety.max(0) - after;
        if held > 0 {
            if !note.is_empty() {
                note.push_str(", ");
            }
            let _ = write!(note, "safety stock {held}");
        }
        note
    }

    /// The input problems found so far (for `validate`, which does not diff).
    pub fn into_issues(mut self) -> (Vec<Issue>, u64) {
        self.issues.sort_by_key(|a| (a.side, a.line, a.col));
        (self.issues, self.issue_count)
    }

    /// Steps 4 to 6: safety stock, bundles and the diff. Returns every input
    /// problem instead when there is any, plus how many were not kept.
    pub fn finish(mut self) -> Result<(Diff, Stats), (Vec<Issue>, u64)> {
        if self.issue_count > 0 {
            let mut issues = std::mem::take(&mut self.issues);
            issues.sort_by_key(|a| (a.side, a.line, a.col));
            return Err((issues, self.issue_count));
        }
        let m = self.m;
        let mut summary = Summary::default();
        let mut changes = Vec::new();
        let mut orphan_candidates: Vec<(u32, u32)> = Vec::new();
        // Bundle accumulators: (bundle, location) -> component quantities and entries.
        let mut acc: HashMap<(u32, u16), Vec<Option<Component>>> = HashMap::default();

        for p in 0..PARTITIONS as u32 {
            for i in 0..self.parts[p as usize].entries.len() as u32 {
                let (e, sku_ss, comps) = {
                    let part = &self.parts[p as usize];
                    let e = part.entries[i as usize];
                    if e.flags & F_SRC == 0 {
                        orphan_candidates.push((p, i));
                        continue;
                    }
                    let sku = part.sku(&e);
                    (e, m.safety_stock(sku), m.component_of(sku))
                };
                let pre = e.desired;
                let after = (pre - sku_ss).max(0);
                for &(b, pos) in comps {
                    let n = m.bundles()[b as usize].components.len();
                    let slot = acc.entry((b, e.loc)).or_insert_with(|| vec![None; n]);
                    slot[pos as usize] = Some(Component { after, pre, p, i });
                }
                if e.flags & F_TGT != 0 && e.target == after {
                    summary.unchanged += 1;
                    continue;
                }
                changes.push(self.change_for(p, i, pre, after));
            }
        }

        // Step 5: bundles, at every location where a component has a row.
        let mut bundle_keys: Vec<(u32, u16)> = acc.keys().copied().collect();
        bundle_keys.sort_unstable();
        for (b, loc) in bundle_keys {
            let bundle = &m.bundles()[b as usize];
            let parts_of = &acc[&(b, loc)];
            let mut qty = i64::MAX;
            let mut from = Vec::new();
            let mut recipe = Vec::new();
            for (pos, (comp, units)) in bundle.components.iter().enumerate() {
                let have = parts_of[pos].map_or(0, |c| c.after);
                qty = qty.min(have / units);
                recipe.push(format!("{comp} {have}/{units}"));
                if let Some(c) = parts_of[pos] {
                    from.extend(self.sources_of(c.p, c.i, c.pre));
                }
            }
            let qty = qty.max(0);
            let Some((p, i, _)) = self.slot(&bundle.sku, loc) else { continue };
            let e = &mut self.parts[p as usize].entries[i as usize];
            e.flags |= F_SRC | F_BUNDLE;
            e.desired = qty;
            let e = *e;
            if e.flags & F_TGT != 0 && e.target == qty {
                summary.unchanged += 1;
                continue;
            }
            changes.push(Change {
                sku: bundle.sku.to_string(),
                location: self.locs.names[loc as usize].to_string(),
                action: if e.flags & F_TGT != 0 { Action::Update } else { Action::Create },
                before: (e.flags & F_TGT != 0).then_some(e.target),
                after: qty,
                orphan: false,
                bundle: true,
                from,
                note: format!("min({})", recipe.join(", ")),
            });
        }

        // Step 6, orphans: target keys the mapped source does not have.
        let mut orphans = Vec::new();
        for (p, i) in orphan_candidates {
            let e = self.parts[p as usize].entries[i as usize];
            if e.flags & F_SRC != 0 || e.flags & F_TGT == 0 {
                continue;
            }
            orphans.push((p, i));
        }
        let mut warnings = Vec::new();
        if !orphans.is_empty() {
            match m.orphans {
                OrphanPolicy::Ignore => warnings.push(format!(
                    "{} target key(s) are absent from the mapped source and are left as they are (mapping.orphans: ignore).",
                    orphans.len()
                )),
                OrphanPolicy::Zero => {
                    for (p, i) in orphans {
                        let part = &self.parts[p as usize];
                        let e = part.entries[i as usize];
                        if e.target == 0 {
                            summary.unchanged += 1;
                            continue;
                        }
                        changes.push(Change {
                            sku: part.sku(&e).to_owned(),
                            location: self.locs.names[e.loc as usize].to_string(),
                            action: Action::Update,
                            before: Some(e.target),
                            after: 0,
                            orphan: true,
                            bundle: false,
                            from: vec![],
                            note: String::new(),
                        });
                    }
                }
                OrphanPolicy::Error => {
                    let mut issues = Vec::new();
                    for (p, i) in &orphans {
                        let part = &self.parts[*p as usize];
                        let e = part.entries[*i as usize];
                        if issues.len() < MAX_ISSUES {
                            issues.push(Issue {
                                side: Side::Target,
                                line: e.tgt_line as u64,
                                col: 1,
                                summary: format!("Target key ({}, {}) is absent from the mapped source", part.sku(&e), self.locs.names[e.loc as usize]),
                                help: "mapping.orphans is `error`: add the key to the source, or set orphans to `ignore` or `zero`.".into(),
                            });
                        }
                    }
                    issues.sort_by_key(|i| i.line);
                    return Err((issues, orphans.len() as u64));
                }
            }
        }
        if self.stats.skipped_sku_rows > 0 {
            warnings.push(format!(
                "{} source row(s) skipped: SKU not in mapping.skus (mapping.unmapped_skus: skip).",
                self.stats.skipped_sku_rows
            ));
        }
        if self.stats.skipped_location_rows > 0 {
            warnings.push(format!(
                "{} source row(s) skipped: location not in mapping.locations (mapping.unmapped_locations: skip).",
                self.stats.skipped_location_rows
            ));
        }
        for c in &changes {
            match c.action {
                Action::Create => summary.create += 1,
                Action::Update => summary.update += 1,
            }
        }
        changes.sort_unstable_by(|a, b| (&a.location, &a.sku).cmp(&(&b.location, &b.sku)));
        Ok((Diff { summary, changes, warnings }, self.stats))
    }

    fn change_for(&self, p: u32, i: u32, pre: i64, after: i64) -> Change {
        let part = &self.parts[p as usize];
        let e = part.entries[i as usize];
        let has_t = e.flags & F_TGT != 0;
        Change {
            sku: part.sku(&e).to_owned(),
            location: self.locs.names[e.loc as usize].to_string(),
            action: if has_t { Action::Update } else { Action::Create },
            before: has_t.then_some(e.target),
            after,
            orphan: false,
            bundle: false,
            from: self.sources_of(p, i, pre),
            note: self.note_of(p, i, pre, after),
        }
    }
}

fn clamp_line(line: u64) -> u32 {
    u32::try_from(line).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config::model::UnmappedPolicy;
    use crate::mapping::MappingBuilder;

    type Rows<'a> = &'a [(&'a str, &'a str, i64)];

    fn run(m: &Mapping, target: Rows, source: Rows) -> Result<Diff, Vec<Issue>> {
        let mut e = Engine::new(m);
        for (i, (s, l, q)) in target.iter().enumerate() {
            e.add_target(s, l, *q, i as u64 + 2);
        }
        for (i, (s, l, q)) in source.iter().enumerate() {
            e.add_source(s, l, *q, i as u64 + 2);
        }
        e.finish().map(|(d, _)| d).map_err(|(i, _)| i)
    }

    fn writes(d: &Diff) -> Vec<(String, String, Option<i64>, i64)> {
        d.changes.iter().map(|c| (c.sku.clone(), c.location.clone(), c.before, c.after)).collect()
    }

    fn w(s: &str, l: &str, b: Option<i64>, a: i64) -> (String, String, Option<i64>, i64) {
        (s.into(), l.into(), b, a)
    }

    #[test]
    fn create_update_unchanged() {
        let m = MappingBuilder::new().build();
        let d = run(&m, &[("A", "W", 1), ("B", "W", 2)], &[("A", "W", 1), ("B", "W", 3), ("C", "W", 0)]).unwrap();
        assert_eq!(writes(&d), vec![w("B", "W", Some(2), 3), w("C", "W", None, 0)]);
        assert_eq!(d.summary, Summary { create: 1, update: 1, unchanged: 1 });
        assert_eq!(d.changes[1].action, Action::Create);
        assert_eq!(d.changes[0].from, vec![SourceRef { sku: "B".into(), location: "W".into(), qty: 3, line: 3 }]);
    }

    #[test]
    fn step1_rename_factor_and_unmapped_policies() {
        let mut b = MappingBuilder::new();
        b.rename("OLD", "NEW", 1);
        b.rename("CASE", "EACH", 12);
        let m = b.build();
        let d = run(&m, &[], &[("OLD", "W", 2), ("CASE", "W", 3), ("X", "W", 1)]).unwrap();
        assert_eq!(writes(&d), vec![w("EACH", "W", None, 36), w("NEW", "W", None, 2), w("X", "W", None, 1)]);
        assert_eq!(d.changes[0].from[0].sku, "CASE");
        assert_eq!(d.changes[0].from[0].qty, 3);

        let mut b = MappingBuilder::new();
        b.rename("OLD", "NEW", 1);
        b.unmapped_skus(UnmappedPolicy::Skip);
        let d = run(&b.build(), &[], &[("OLD", "W", 2), ("X", "W", 1)]).unwrap();
        assert_eq!(writes(&d), vec![w("NEW", "W", None, 2)]);
        assert!(d.warnings[0].contains("1 source row(s) skipped"));

        let mut b = MappingBuilder::new();
        b.rename("OLD", "NEW", 1);
        b.unmapped_skus(UnmappedPolicy::Error);
        let issues = run(&b.build(), &[], &[("OLD", "W", 2), ("X", "W", 1), ("Y", "W", 1)]).unwrap_err();
        assert_eq!(issues.iter().map(|i| i.line).collect::<Vec<_>>(), vec![3, 4]);
        assert!(issues[0].summary.contains("`X` has no entry"));
    }

    #[test]
    fn renames_apply_once_so_swaps_work() {
        let mut b = MappingBuilder::new();
        b.rename("X", "Y", 1);
        b.rename("Y", "X", 1);
        let d = run(&b.build(), &[("X", "W", 1), ("Y", "W", 2)], &[("X", "W", 1), ("Y", "W", 2)]).unwrap();
        assert_eq!(writes(&d), vec![w("X", "W", Some(1), 2), w("Y", "W", Some(2), 1)]);
    }

    #[test]
    fn step2_locations() {
        let mut b = MappingBuilder::new();
        b.locations(Some(vec![("E".to_string(), "loc-1".to_string())])).unmapped_locations(UnmappedPolicy::Error);
        let m = b.build();
        let issues = run(&m, &[], &[("A", "E", 1), ("A", "Z", 1)]).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert!(issues[0].summary.contains("Location `Z`"));
        let mut b = MappingBuilder::new();
        b.locations(Some(vec![("E".to_string(), "loc-1".to_string())])).unmapped_locations(UnmappedPolicy::Skip);
        let d = run(&b.build(), &[], &[("A", "E", 1), ("A", "Z", 1)]).unwrap();
        assert_eq!(writes(&d), vec![w("A", "loc-1", None, 1)]);
        let d = run(&MappingBuilder::new().build(), &[], &[("A", "Z", 1)]).unwrap();
        assert_eq!(writes(&d), vec![w("A", "Z", None, 1)]);
    }

    #[test]
    fn step3_merges_sum_and_trace_every_row() {
        let mut b = MappingBuilder::new();
        b.rename("S1", "T", 1);
        b.rename("S2", "T", 2);
        b.locations(Some(vec![("E1".to_string(), "L".to_string()), ("E2".to_string(), "L".to_string())]));
        let d = run(&b.build(), &[], &[("S1", "E1", 1), ("S2", "E1", 3), ("T", "E2", 4)]).unwrap();
        assert_eq!(writes(&d), vec![w("T", "L", None, 11)]);
        let from: Vec<(String, i64, u64)> = d.changes[0].from.iter().map(|f| (f.sku.clone(), f.qty, f.line)).collect();
        assert_eq!(from, vec![("S1".into(), 1, 2), ("S2".into(), 3, 3), ("T".into(), 4, 4)]);
        assert_eq!(d.changes[0].note, "sum of 3 source rows");
    }

    #[test]
    fn duplicate_rows_in_one_input_name_both_lines() {
        let m = MappingBuilder::new().build();
        let issues =
            run(&m, &[("A", "W", 1), ("A", "W", 2)], &[("B", "W", 1), ("C", "W", 1), ("B", "W", 5)]).unwrap_err();
        assert_eq!(issues.len(), 2);
        assert_eq!((issues[0].side, issues[0].line), (Side::Source, 4));
        assert!(issues[0].help.contains("Line 2"));
        assert_eq!((issues[1].side, issues[1].line), (Side::Target, 3));
    }

    #[test]
    fn empty_sku_or_location_is_an_issue() {
        let issues = run(&MappingBuilder::new().build(), &[], &[("", "W", 1), ("A", " ", 1)]).unwrap_err();
        assert_eq!(issues.len(), 2);
    }

    #[test]
    fn step4_safety_stock_never_below_zero() {
        let mut b = MappingBuilder::new();
        b.safety_stock(1, vec![("HOT".to_string(), 5)]);
        let d = run(&b.build(), &[], &[("HOT", "W", 12), ("HOT", "V", 3), ("X", "W", 4), ("NEG", "W", -2)]).unwrap();
        assert_eq!(
            writes(&d),
            vec![w("HOT", "V", None, 0), w("HOT", "W", None, 7), w("NEG", "W", None, 0), w("X", "W", None, 3)]
        );
        assert_eq!(d.changes[1].note, "safety stock 5");
    }

    #[test]
    fn step5_bundles() {
        let mut b = MappingBuilder::new();
        b.bundle("KIT", vec![("A".to_string(), 2), ("B".to_string(), 1)]);
        b.safety_stock(0, vec![("A".to_string(), 1)]);
        let m = b.build();
        // At W: A 9-1=8 -> 4 kits, B 3 -> 3 kits: 3. At V only A: B missing counts 0.
        let d = run(&m, &[("KIT", "W", 1)], &[("A", "W", 9), ("B", "W", 3), ("A", "V", 5)]).unwrap();
        let kits: Vec<_> =
            d.changes.iter().filter(|c| c.bundle).map(|c| (c.location.clone(), c.before, c.after)).collect();
        assert_eq!(kits, vec![("V".to_string(), None, 0), ("W".to_string(), Some(1), 3)]);
        let w_kit = d.changes.iter().find(|c| c.bundle && c.location == "W").unwrap();
        assert_eq!(w_kit.from.len(), 2);
        // A source row for the bundle itself is an error.
        let issues = run(&m, &[], &[("KIT", "W", 1)]).unwrap_err();
        assert!(issues[0].summary.contains("bundle SKU `KIT`"));
        // A bundle with no component rows anywhere has no rows; its target rows are orphans.
        let d = run(&m, &[("KIT", "W", 2)], &[("C", "W", 1)]).unwrap();
        assert!(d.changes.iter().all(|c| c.sku != "KIT"));
        assert!(d.warnings[0].contains("1 target key(s)"));
    }

    #[test]
    fn step6_orphan_policies() {
        let t: Rows = &[("A", "W", 1), ("GONE", "W", 4), ("ZERO", "W", 0)];
        let s: Rows = &[("A", "W", 1)];
        let mut b = MappingBuilder::new();
        b.orphans(OrphanPolicy::Zero);
        let d = run(&b.build(), t, s).unwrap();
        assert_eq!(writes(&d), vec![w("GONE", "W", Some(4), 0)]);
        assert!(d.changes[0].orphan);
        assert_eq!(d.summary.unchanged, 2);
        let mut b = MappingBuilder::new();
        b.orphans(OrphanPolicy::Error);
        let issues = run(&b.build(), t, s).unwrap_err();
        assert_eq!(issues.len(), 2);
        let d = run(&MappingBuilder::new().build(), t, s).unwrap();
        assert!(d.changes.is_empty());
    }

    /// A plain reference implementation of steps 1 to 5, written for clarity.
    fn reference(m: &Mapping, source: &[(String, String, i64)]) -> BTreeMap<(String, String), i64> {
        let mut merged: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (s, l, q) in source {
            let (sku, f) = match m.sku(s) {
                SkuRule::Renamed { new, factor, .. } => (new.to_string(), factor),
                SkuRule::Passthrough => (s.clone(), 1),
                _ => continue,
            };
            let loc = match m.location(l) {
                LocationRule::To(t) => t.to_string(),
                _ => continue,
            };
            *merged.entry((sku, loc)).or_default() += q * f;
        }
        let mut out: BTreeMap<(String, String), i64> =
            merged.iter().map(|((s, l), q)| ((s.clone(), l.clone()), (q - m.safety_stock(s)).max(0))).collect();
        for b in m.bundles() {
            let locs: std::collections::BTreeSet<String> = out
                .keys()
                .filter(|(s, _)| b.components.iter().any(|(c, _)| **c == **s))
                .map(|(_, l)| l.clone())
                .collect();
            for l in locs {
                let q = b
                    .components
                    .iter()
                    .map(|(c, u)| out.get(&(c.to_string(), l.clone())).copied().unwrap_or(0) / u)
                    .min()
                    .unwrap_or(0);
                out.insert((b.sku.to_string(), l), q);
            }
        }
        out
    }

    type Table = Vec<(String, String, i64)>;

    fn arb_case() -> impl Strategy<Value = (Table, Table, u8)> {
        let sku = prop::sample::select(vec!["A", "B", "C", "OLD", "CASE", "S1", "S2", "X", "Y"]).prop_map(String::from);
        let loc = prop::sample::select(vec!["E", "W", "loc-1"]).prop_map(String::from);
        let row = (sku, loc, -3i64..40);
        (prop::collection::vec(row.clone(), 0..30), prop::collection::vec(row, 0..30), any::<u8>())
    }

    fn dedup(rows: Vec<(String, String, i64)>) -> Vec<(String, String, i64)> {
        let mut seen = std::collections::HashSet::new();
        rows.into_iter().filter(|(s, l, _)| seen.insert((s.clone(), l.clone()))).collect()
    }

    fn arb_mapping(bits: u8) -> Mapping {
        let mut b = MappingBuilder::new();
        b.rename("OLD", "A", 1);
        b.rename("CASE", "B", 12);
        b.rename("S1", "T", 1);
        b.rename("S2", "T", 3);
        if bits & 1 != 0 {
            b.rename("X", "Y", 1);
            b.rename("Y", "X", 1);
        }
        if bits & 2 != 0 {
            b.locations(Some(vec![("E".to_string(), "loc-1".to_string()), ("W".to_string(), "loc-2".to_string())]));
            b.unmapped_locations(UnmappedPolicy::Skip);
        }
        if bits & 4 != 0 {
            b.safety_stock(1, vec![("A".to_string(), 3)]);
        }
        if bits & 8 != 0 {
            b.bundle("KIT", vec![("A".to_string(), 2), ("T".to_string(), 1)]);
        }
        if bits & 16 != 0 {
            b.orphans(OrphanPolicy::Zero);
        }
        b.build()
    }

    fn feed(m: &Mapping, target: &[(String, String, i64)], source: &[(String, String, i64)]) -> Diff {
        let mut e = Engine::new(m);
        for (i, (s, l, q)) in target.iter().enumerate() {
            e.add_target(s, l, *q, i as u64 + 2);
        }
        for (i, (s, l, q)) in source.iter().enumerate() {
            e.add_source(s, l, *q, i as u64 + 2);
        }
        e.finish().expect("deduplicated inputs are valid").0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Applying the diff to the target yields the desired state, and nothing else changes
        /// (except orphans zeroed when asked).
        #[test]
        fn applying_the_diff_yields_the_desired_state((source, target, bits) in arb_case()) {
            let source = dedup(source);
            let target = dedup(target);
            let m = arb_mapping(bits);
            let diff = feed(&m, &target, &source);
            let desired = reference(&m, &source);
            let mut state: BTreeMap<(String, String), i64> = target.iter().map(|(s, l, q)| ((s.clone(), l.clone()), *q)).collect();
            for c in &diff.changes {
                let key = (c.sku.clone(), c.location.clone());
                prop_assert_eq!(state.get(&key).copied(), c.before, "the diff's before is the target's value");
                state.insert(key, c.after);
            }
            for (k, q) in &desired {
                prop_assert_eq!(state.get(k), Some(q), "key {:?}", k);
            }
            for (k, q) in &state {
                if !desired.contains_key(k) {
                    let was = target.iter().find(|(s, l, _)| (s, l) == (&k.0, &k.1)).map(|r| r.2);
                    let expected = if bits & 16 != 0 { 0 } else { was.unwrap() };
                    prop_assert_eq!(*q, expected, "orphan {:?}", k);
                }
            }
            let total = diff.summary.create + diff.summary.update;
            prop_assert_eq!(total as usize, diff.changes.len());
        }

        /// The diff of the desired state with itself is empty.
        #[test]
        fn the_diff_of_a_state_with_itself_is_empty((source, _t, bits) in arb_case()) {
            let source = dedup(source);
            let m = arb_mapping(bits);
            let desired: Vec<(String, String, i64)> = reference(&m, &source).into_iter().map(|((s, l), q)| (s, l, q)).collect();
            let diff = feed(&m, &desired, &source);
            prop_assert!(diff.changes.is_empty(), "{:?}", diff.changes);
            prop_assert_eq!(diff.summary.unchanged as usize, desired.len());
        }
    }
}
