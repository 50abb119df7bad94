//! Phase 2: one partition's keys (see the parent module).
//!
//! A [`Part`] indexes the keys of one partition: one 40-byte [`Entry`] per
//! distinct (sku, location), SKU bytes in an arena, and a hash table of entry
//! indices. Nothing is kept per source row unless a key merges several rows
//! (then its rows are listed in `contributors`, for traces and duplicate checks).
//! A thread reuses one `Part` for every partition it takes, so the allocations
//! are made once, at the size of the largest partition.

use std::fmt::Write as _;
use std::hash::BuildHasher;

use foldhash::HashMap;
use hashbrown::HashTable;

use super::collect::{Records, same_bytes};
use super::{
    BundleAcc, IssueLog, LocMap, NO_LOC, PASSTHROUGH, Side, Work, clamp_line, duplicate, too_large, unmapped_location,
};
use crate::config::model::OrphanPolicy;
use crate::diff::engine::Issue;
use crate::diff::{Action, Change, SourceRef};
use crate::mapping::{Mapping, Rename};

const F_SRC: u16 = 1;
const F_TGT: u16 = 2;
const F_MULTI: u16 = 4;

/// One (sku, location) key. 40 bytes: partitions are sized to keep these in cache.
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
    /// Mapped quantity (sum of rows × factor).
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

/// A bundle component's quantity at one location, for step 5, with the trace of
/// its source rows (its partition is gone by then).
#[derive(Debug, Clone)]
pub(super) struct Component {
    pub after: i64,
    pub from: Vec<SourceRef>,
}

/// What phase 2 needs besides the records: read-only, shared by the threads.
pub(super) struct Ctx<'m> {
    pub m: &'m Mapping,
    /// Global location names.
    pub names: Vec<Box<str>>,
    pub hasher: foldhash::fast::FixedState,
    /// Per target and source collector: its location ids, globally.
    pub target_maps: Vec<LocMap>,
    pub source_maps: Vec<LocMap>,
}

impl Ctx<'_> {
    pub(super) fn loc_name(&self, id: u16) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }

    fn rename(&self, origin: u32) -> Option<&Rename> {
        self.m.renames().get(origin as usize)
    }

    fn factor(&self, origin: u32) -> i64 {
        if origin == PASSTHROUGH { 1 } else { self.rename(origin).map_or(1, |r| r.factor) }
    }
}

/// What the partitions a thread finished produced.
#[derive(Default)]
pub(super) struct Out {
    pub changes: Vec<Change>,
    pub unchanged: u64,
    /// Target keys absent from the mapped source (bundle rows are counted later).
    pub orphans: u64,
    /// With `orphans: error`, the orphans as problems.
    pub orphan_issues: IssueLog,
    pub acc: BundleAcc,
    /// Target rows of bundle SKUs: (bundle, location) to (qty, line).
    pub bundle_targets: HashMap<(u32, u16), (i64, u32)>,
    pub target_issues: IssueLog,
    pub source_issues: IssueLog,
}

impl Out {
    /// Step 6 for a target key the mapped source does not have.
    pub(super) fn orphan(&mut self, ctx: &Ctx<'_>, sku: &str, loc: u16, target: i64, tgt_line: u32) {
        self.orphans += 1;
        match ctx.m.orphans {
            OrphanPolicy::Ignore => {}
            OrphanPolicy::Zero if target == 0 => self.unchanged += 1,
            OrphanPolicy::Zero => self.changes.push(Change {
                sku: sku.to_owned(),
                location: ctx.loc_name(loc).to_string(),
                action: Action::Update,
                before: Some(target),
                after: 0,
                orphan: true,
                bundle: false,
                from: vec![],
                note: String::new(),
            }),
            OrphanPolicy::Error => self.orphan_issues.push(Issue {
                side: Side::Target,
                line: tgt_line as u64,
                col: 1,
                summary: format!("Target key ({sku}, {}) is absent from the mapped source", ctx.loc_name(loc)),
                help: "mapping.orphans is `error`: add the key to the source, or set orphans to `ignore` or `zero`."
                    .into(),
            }),
        }
    }
}

#[derive(Default)]
pub(super) struct Part {
    table: HashTable<u32>,
    entries: Vec<Entry>,
    arena: Vec<u8>,
    contributors: HashMap<u32, Vec<Contributor>>,
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

impl Part {
    /// Empties the partition and inserts one partition's records: the target's,
    /// then the source's (each in input order), releasing their blocks as it goes.
    pub(super) fn load(&mut self, ctx: &Ctx<'_>, w: Work, out: &mut Out) {
        self.table.clear();
        self.entries.clear();
        self.arena.clear();
        self.contributors.clear();
        let count = |v: &[Records]| v.iter().map(|r| r.count).sum::<u64>();
        let keys = count(&w.target).max(count(&w.source)) as usize;
        self.entries.reserve(keys);
        let Part { table, entries, arena, .. } = self;
        table.reserve(keys, |i| rehash(&ctx.hasher, entries, arena, i));

        for (records, map) in w.target.into_iter().zip(&ctx.target_maps) {
            records.each_target(|r| {
                let loc = map.global.get(r.loc as usize).copied().unwrap_or(NO_LOC);
                if loc == NO_LOC {
                    return out.target_issues.push(too_large(Side::Target, r.line));
                }
                self.add_target(ctx, &mut out.target_issues, r.sku, loc, r.qty, r.line);
            });
        }
        for (records, map) in w.source.into_iter().zip(&ctx.source_maps) {
            records.each_source(|r| {
                let raw_loc = map.global.get(r.raw_loc as usize).copied().unwrap_or(NO_LOC);
                if raw_loc == NO_LOC {
                    return out.source_issues.push(too_large(Side::Source, r.line));
                }
                let loc = map.mapped.get(r.raw_loc as usize).copied().unwrap_or(NO_LOC);
                if loc == NO_LOC {
                    return out.source_issues.push(unmapped_location(r.line, ctx.loc_name(raw_loc)));
                }
                let new_sku = if r.origin == PASSTHROUGH {
                    r.sku
                } else {
                    match ctx.rename(r.origin) {
                        Some(rename) => rename.new.as_bytes(),
                        None => return,
                    }
                };
                self.add_source(ctx, &mut out.source_issues, r.origin, new_sku, raw_loc, loc, r.qty, r.line);
            });
        }
    }

    /// Finds or inserts the key; returns (index, inserted).
    #[inline]
    fn slot(&mut self, hasher: &foldhash::fast::FixedState, sku: &[u8], loc: u16) -> Option<(u32, bool)> {
        let h = hasher.hash_one((sku, loc));
        let Part { table, entries, arena, .. } = self;
        let found = table.find(h, |&i| {
            let e = &entries[i as usize];
            e.loc == loc
                && e.sku_len as usize == sku.len()
                && arena
                    .get(e.sku_off as usize..e.sku_off as usize + e.sku_len as usize)
                    .is_some_and(|have| same_bytes(have, sku))
        });
        if let Some(&i) = found {
            return Some((i, false));
        }
        if sku.len() > u16::MAX as usize
            || arena.len() + sku.len() > u32::MAX as usize
            || entries.len() >= u32::MAX as usize
        {
            return None;
        }
        let idx = entries.len() as u32;
        let off = arena.len() as u32;
        arena.extend_from_slice(sku);
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
        table.insert_unique(h, idx, |i| rehash(hasher, entries, arena, i));
        Some((idx, true))
    }

    /// A target row (as read).
    #[inline]
    fn add_target(&mut self, ctx: &Ctx<'_>, issues: &mut IssueLog, sku: &[u8], loc: u16, qty: i64, line: u64) {
        let Some((i, _)) = self.slot(&ctx.hasher, sku, loc) else {
            return issues.push(too_large(Side::Target, line));
        };
        let e = &mut self.entries[i as usize];
        if e.flags & F_TGT != 0 {
            let first = e.tgt_line;
            return issues.push(duplicate(Side::Target, line, text(sku), ctx.loc_name(loc), first));
        }
        e.flags |= F_TGT;
        e.target = qty;
        e.tgt_line = clamp_line(line);
    }

    /// A mapped source row (steps 1 and 2 done): step 3 and duplicate checks.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn add_source(
        &mut self,
        ctx: &Ctx<'_>,
        issues: &mut IssueLog,
        origin: u32,
        new_sku: &[u8],
        raw_loc: u16,
        loc: u16,
        qty: i64,
        line: u64,
    ) {
        // Phase 1 checked that this does not overflow.
        let mapped = qty.saturating_mul(ctx.factor(origin));
        let Some((i, _)) = self.slot(&ctx.hasher, new_sku, loc) else {
            return issues.push(too_large(Side::Source, line));
        };
        let line32 = clamp_line(line);
        let e = self.entries[i as usize];
        if e.flags & F_SRC == 0 {
            let e = &mut self.entries[i as usize];
            e.flags |= F_SRC;
            e.origin = origin;
            e.raw_loc = raw_loc;
            e.src_line = line32;
            e.desired = mapped;
            return;
        }
        // A second row for the same mapped key: a merge, or a duplicate input row.
        let list = self.contributors.entry(i).or_default();
        if list.is_empty() {
            let raw_qty = e.desired.checked_div(ctx.factor(e.origin)).unwrap_or(0);
            list.push(Contributor { origin: e.origin, raw_loc: e.raw_loc, raw_qty, line: e.src_line });
        }
        if let Some(first) = list.iter().find(|c| c.origin == origin && c.raw_loc == raw_loc) {
            let raw_sku = if origin == PASSTHROUGH { text(new_sku) } else { ctx.rename(origin).map_or("", |r| &r.old) };
            return issues.push(duplicate(Side::Source, line, raw_sku, ctx.loc_name(raw_loc), first.line));
        }
        list.push(Contributor { origin, raw_loc, raw_qty: qty, line: line32 });
        let e = &mut self.entries[i as usize];
        e.flags |= F_MULTI;
        match e.desired.checked_add(mapped) {
            Some(sum) => e.desired = sum,
            None => issues.push(Issue {
                side: Side::Source,
                line,
                col: 1,
                summary: "Merged quantity overflows".into(),
                help: "Check the quantities of the rows merged into this key.".into(),
            }),
        }
    }

    /// Steps 4 and 6 for every key of the partition; step 5's inputs are set aside.
    pub(super) fn finish(&self, ctx: &Ctx<'_>, out: &mut Out) {
        let m = ctx.m;
        // Every SKU in the arena was valid UTF-8, so the whole arena is, and every
        // SKU's range is on character boundaries: one check instead of one per key.
        let arena = std::str::from_utf8(&self.arena).unwrap_or_default();
        let sku_of =
            |e: &Entry| arena.get(e.sku_off as usize..e.sku_off as usize + e.sku_len as usize).unwrap_or_default();
        for (i, e) in self.entries.iter().enumerate() {
            let sku = sku_of(e);
            if e.flags & F_SRC == 0 {
                // Only target rows: an orphan, unless it is a bundle's (step 5 decides).
                match m.bundle_of(sku) {
                    Some(b) => {
                        out.bundle_targets.insert((b, e.loc), (e.target, e.tgt_line));
                    }
                    None => out.orphan(ctx, sku, e.loc, e.target, e.tgt_line),
                }
                continue;
            }
            let pre = e.desired;
            let after = pre.saturating_sub(m.safety_stock(sku)).max(0);
            for &(b, pos) in m.component_of(sku) {
                let n = m.bundles().get(b as usize).map_or(0, |b| b.components.len());
                let slots = out.acc.entry((b, e.loc)).or_insert_with(|| vec![None; n]);
                if let Some(slot) = slots.get_mut(pos as usize) {
                    *slot = Some(Component { after, from: self.sources_of(ctx, sku, i, pre) });
                }
            }
            if e.flags & F_TGT != 0 && e.target == after {
                out.unchanged += 1;
                continue;
            }
            let has_t = e.flags & F_TGT != 0;
            out.changes.push(Change {
                sku: sku.to_owned(),
                location: ctx.loc_name(e.loc).to_string(),
                action: if has_t { Action::Update } else { Action::Create },
                before: has_t.then_some(e.target),
                after,
                orphan: false,
                bundle: false,
                from: self.sources_of(ctx, sku, i, pre),
                note: self.note_of(ctx, i, pre, after),
            });
        }
    }

    fn raw_sku<'a>(ctx: &'a Ctx<'_>, sku: &'a str, origin: u32) -> &'a str {
        if origin == PASSTHROUGH { sku } else { ctx.rename(origin).map_or("", |r| &r.old) }
    }

    /// The source rows behind entry `i` (with SKU `sku`), for `from`.
    fn sources_of(&self, ctx: &Ctx<'_>, sku: &str, i: usize, pre_safety: i64) -> Vec<SourceRef> {
        let e = &self.entries[i];
        if e.flags & F_MULTI != 0
            && let Some(list) = self.contributors.get(&(i as u32))
        {
            return list
                .iter()
                .map(|c| SourceRef {
                    sku: Self::raw_sku(ctx, sku, c.origin).to_owned(),
                    location: ctx.loc_name(c.raw_loc).to_string(),
                    qty: c.raw_qty,
                    line: c.line as u64,
                })
                .collect();
        }
        vec![SourceRef {
            sku: Self::raw_sku(ctx, sku, e.origin).to_owned(),
            location: ctx.loc_name(e.raw_loc).to_string(),
            qty: pre_safety.checked_div(ctx.factor(e.origin)).unwrap_or(0),
            line: e.src_line as u64,
        }]
    }

    fn note_of(&self, ctx: &Ctx<'_>, i: usize, pre_safety: i64, after: i64) -> String {
        let e = &self.entries[i];
        let mut note = String::new();
        if e.flags & F_MULTI != 0 {
            let n = self.contributors.get(&(i as u32)).map_or(0, Vec::len);
            let _ = write!(note, "sum of {n} source rows");
        } else if e.origin != PASSTHROUGH
            && let Some(r) = ctx.rename(e.origin)
            && r.factor != 1
        {
            let _ = write!(note, "{} × {}", pre_safety.checked_div(r.factor).unwrap_or(0), r.factor);
        }
        let held = pre_safety.max(0).saturating_sub(after);
        if held > 0 {
            if !note.is_empty() {
                note.push_str(", ");
            }
            let _ = write!(note, "safety stock {held}");
        }
        note
    }
}

#[inline]
fn rehash(hasher: &foldhash::fast::FixedState, entries: &[Entry], arena: &[u8], i: &u32) -> u64 {
    let e = &entries[*i as usize];
    hasher.hash_one((&arena[e.sku_off as usize..e.sku_off as usize + e.sku_len as usize], e.loc))
}
