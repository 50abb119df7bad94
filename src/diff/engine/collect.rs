//! Phase 1: rows in, compact per-partition records out (see the parent module).
//!
//! A [`Collector`] receives the rows of one input. It does every check and every
//! mapping step that needs only the row itself, then appends a record to the
//! buffer of the row's partition. Records are variable-length:
//!
//! ```text
//! target: varint(sku_len) sku_bytes varint(loc) zigzag(qty) zigzag(line - previous line)
//! source: varint(origin)  [varint(sku_len) sku_bytes]  varint(raw_loc) zigzag(qty) zigzag(line delta)
//! ```
//!
//! `origin` is 0 for a SKU that passed through (its bytes follow) or the rename's
//! index + 1 (the new SKU is the rename's, so no bytes are stored). `loc` and
//! `raw_loc` are the collector's own location ids; a source record's mapped
//! location is a function of its raw location, kept once per id. The quantity is
//! the row's own (a factor is applied in phase 2; that it does not overflow is
//! checked here). Lines are deltas from the previous record of the same buffer, so
//! they take 1 to 3 bytes whatever the file's size.

use foldhash::HashMap;

use super::{Issue, IssueLog, PARTITIONS, PASSTHROUGH, Side, Stats, partition_of};
use crate::mapping::{LocationRule, Mapping, SkuRule};
use crate::provider::RowSink;

/// First block of a buffer; blocks double up to [`MAX_BLOCK`].
const FIRST_BLOCK: usize = 4 << 10;
/// Largest block (a record longer than this gets a block of its own size).
const MAX_BLOCK: usize = 64 << 10;
/// Room for everything in a record except the SKU bytes: five varints.
const RECORD_OVERHEAD: usize = 5 * 10;

/// One partition's records from one collector: a chain of blocks that are never
/// moved or copied once written, each holding whole records. Exactly one cache
/// line, with the open block inline, so appending a record touches this line and
/// the block's tail, nothing else: phase 1 appends to 1,024 of these at random.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct Records {
    /// The block being filled.
    open: Vec<u8>,
    /// Full blocks, oldest first.
    full: Vec<Vec<u8>>,
    /// Line of the last record, the base of the next delta.
    last_line: u64,
    pub(super) count: u64,
}

/// A decoded target record.
pub(super) struct TargetRec<'a> {
    pub sku: &'a [u8],
    pub loc: u16,
    pub qty: i64,
    pub line: u64,
}

/// A decoded source record. `sku` is empty for a renamed row.
pub(super) struct SourceRec<'a> {
    pub origin: u32,
    pub sku: &'a [u8],
    pub raw_loc: u16,
    pub qty: i64,
    pub line: u64,
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

impl Records {
    /// The block to append a record of at most `len` bytes to.
    #[inline]
    fn room(&mut self, len: usize) -> &mut Vec<u8> {
        if self.open.capacity() - self.open.len() < len {
            self.grow(len);
        }
        &mut self.open
    }

    #[cold]
    fn grow(&mut self, len: usize) {
        let next = (self.open.capacity() * 2).clamp(FIRST_BLOCK, MAX_BLOCK).max(len);
        let full = std::mem::replace(&mut self.open, Vec::with_capacity(next));
        if !full.is_empty() {
            self.full.push(full);
        }
    }

    fn blocks(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.full.iter().chain([&self.open])
    }

    #[inline]
    fn line_delta(&mut self, line: u64) -> u64 {
        let d = zigzag(line.wrapping_sub(self.last_line) as i64);
        self.last_line = line;
        d
    }

    #[inline]
    fn push_target(&mut self, sku: &[u8], loc: u16, qty: i64, line: u64) {
        let delta = self.line_delta(line);
        let b = self.room(sku.len() + RECORD_OVERHEAD);
        put_varint(b, sku.len() as u64);
        b.extend_from_slice(sku);
        put_varint(b, loc as u64);
        put_varint(b, zigzag(qty));
        put_varint(b, delta);
        self.count += 1;
    }

    #[inline]
    fn push_source(&mut self, origin: u32, sku: &[u8], raw_loc: u16, qty: i64, line: u64) {
        let delta = self.line_delta(line);
        let b = self.room(sku.len() + RECORD_OVERHEAD);
        if origin == PASSTHROUGH {
            put_varint(b, 0);
            put_varint(b, sku.len() as u64);
            b.extend_from_slice(sku);
        } else {
            put_varint(b, origin as u64 + 1);
        }
        put_varint(b, raw_loc as u64);
        put_varint(b, zigzag(qty));
        put_varint(b, delta);
        self.count += 1;
    }

    /// Calls `f` for each target record, in the order pushed.
    #[inline]
    pub(super) fn each_target(&self, mut f: impl FnMut(TargetRec<'_>)) {
        let mut line = 0u64;
        for block in self.blocks() {
            let mut c = Cursor { buf: block, pos: 0 };
            while c.pos < block.len() {
                let Some(rec) = (|| {
                    let len = c.varint()? as usize;
                    let sku = c.bytes(len)?;
                    let loc = u16::try_from(c.varint()?).ok()?;
                    let qty = unzigzag(c.varint()?);
                    line = line.wrapping_add(unzigzag(c.varint()?) as u64);
                    Some(TargetRec { sku, loc, qty, line })
                })() else {
                    debug_assert!(false, "corrupt target record");
                    break;
                };
                f(rec);
            }
        }
    }

    /// Calls `f` for each source record, in the order pushed.
    #[inline]
    pub(super) fn each_source(&self, mut f: impl FnMut(SourceRec<'_>)) {
        let mut line = 0u64;
        for block in self.blocks() {
            let mut c = Cursor { buf: block, pos: 0 };
            while c.pos < block.len() {
                let Some(rec) = (|| {
                    let (origin, sku) = match c.varint()? {
                        0 => {
                            let len = c.varint()? as usize;
                            (PASSTHROUGH, c.bytes(len)?)
                        }
                        n => (u32::try_from(n - 1).ok()?, &[][..]),
                    };
                    let raw_loc = u16::try_from(c.varint()?).ok()?;
                    let qty = unzigzag(c.varint()?);
                    line = line.wrapping_add(unzigzag(c.varint()?) as u64);
                    Some(SourceRec { origin, sku, raw_loc, qty, line })
                })() else {
                    debug_assert!(false, "corrupt source record");
                    break;
                };
                f(rec);
            }
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
            shift += 7;
            if shift >= 64 {
                return None;
            }
        }
    }

    #[inline]
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(b)
    }
}

/// How step 2 maps a source location.
#[derive(Debug, Clone, Copy)]
enum Resolved {
    To(u16),
    Skip,
    Error,
}

/// Location names, interned to small ids.
#[derive(Default)]
pub(super) struct Locations {
    ids: HashMap<Box<str>, u16>,
    pub(super) names: Vec<Box<str>>,
    /// For each id used as a source location: how step 2 maps it.
    resolved: Vec<Option<Resolved>>,
    /// Recently seen names of up to 16 bytes, direct-mapped by their bytes: a hit
    /// costs two word compares instead of a hash, a probe and a `memcmp`.
    recent: Vec<(ShortKey, u16)>,
}

/// Slots of `Locations::recent` (a power of two).
const RECENT: usize = 64;

/// A string of 1 to 16 bytes as (length, first word, last word): two overlapping
/// loads cover every byte, so equal keys mean equal strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct ShortKey(u64, u64, usize);

impl ShortKey {
    #[inline]
    pub(super) fn of(b: &[u8]) -> Option<ShortKey> {
        let n = b.len();
        let word = |c: Option<&[u8; 8]>| c.map_or(0, |c| u64::from_le_bytes(*c));
        let half = |c: Option<&[u8; 4]>| c.map_or(0, |c| u64::from(u32::from_le_bytes(*c)));
        match n {
            8..=16 => Some(ShortKey(word(b.first_chunk()), word(b.last_chunk()), n)),
            4..=7 => Some(ShortKey(half(b.first_chunk()), half(b.last_chunk()), n)),
            1..=3 => Some(ShortKey(u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16, 0, n)),
            _ => None,
        }
    }

    #[inline]
    fn slot(self) -> usize {
        ((self.0 ^ self.1.rotate_left(29) ^ self.2 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % RECENT
    }
}

/// Byte equality that compares short slices with two word loads, not a `memcmp` call.
#[inline]
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (ShortKey::of(a), ShortKey::of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl Locations {
    /// The id of a name; `None` once 65,535 names are taken.
    #[inline]
    pub(super) fn intern(&mut self, name: &str) -> Option<u16> {
        let key = ShortKey::of(name.as_bytes());
        if let Some(k) = key
            && let Some(&(have, id)) = self.recent.get(k.slot())
            && have == k
        {
            return Some(id);
        }
        self.intern_slow(name, key)
    }

    #[inline(never)]
    fn intern_slow(&mut self, name: &str, key: Option<ShortKey>) -> Option<u16> {
        if let Some(&id) = self.ids.get(name) {
            if let Some(k) = key {
                self.remember(k, id);
            }
            return Some(id);
        }
        if self.names.len() >= u16::MAX as usize {
            return None;
        }
        let id = self.names.len() as u16;
        self.ids.insert(name.into(), id);
        self.names.push(name.into());
        self.resolved.push(None);
        if let Some(k) = key {
            self.remember(k, id);
        }
        Some(id)
    }

    fn remember(&mut self, k: ShortKey, id: u16) {
        if self.recent.is_empty() {
            // Slots start as the key of no string (length 0), so they never match.
            self.recent = vec![(ShortKey::default(), 0); RECENT];
        }
        self.recent[k.slot()] = (k, id);
    }

    /// For each id: the id of the location step 2 maps it to, when it maps.
    pub(super) fn mapped_ids(&self) -> impl Iterator<Item = Option<u16>> + '_ {
        self.resolved.iter().map(|r| match r {
            Some(Resolved::To(id)) => Some(*id),
            _ => None,
        })
    }
}

/// Phase 1 for one input: checks and maps rows, and partitions their records.
pub(super) struct Collector<'m> {
    m: &'m Mapping,
    side: Side,
    hasher: foldhash::fast::FixedState,
    pub(super) locs: Locations,
    pub(super) parts: Vec<Records>,
    pub(super) issues: IssueLog,
    pub(super) stats: Stats,
}

/// True when `s` is empty or only whitespace (as `str::trim` sees it). Most SKUs
/// start with an ASCII letter or digit, which settles it without trimming.
#[inline]
fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        Some(&b) if b.is_ascii() && !(b == b' ' || (b'\t'..=b'\r').contains(&b)) => false,
        _ => s.trim().is_empty(),
    }
}

impl<'m> Collector<'m> {
    pub(super) fn new(m: &'m Mapping, side: Side) -> Self {
        Collector {
            m,
            side,
            hasher: super::hasher(),
            locs: Locations::default(),
            parts: (0..PARTITIONS).map(|_| Records::default()).collect(),
            issues: IssueLog::default(),
            stats: Stats::default(),
        }
    }

    #[cold]
    fn issue(&mut self, line: u64, summary: String, help: String) {
        self.issues.push(Issue { side: self.side, line, col: 1, summary, help });
    }

    #[cold]
    fn too_large(&mut self, line: u64) {
        self.issues.push(super::too_large(self.side, line));
    }

    #[inline]
    fn check_row(&mut self, sku: &str, loc: &str, line: u64) -> bool {
        let (bad_sku, bad_loc) = (is_blank(sku), is_blank(loc));
        if bad_sku {
            self.issue(line, "Empty SKU".into(), "Every row needs a SKU; fill it in or delete the row.".into());
        }
        if bad_loc {
            self.issue(
                line,
                "Empty location".into(),
                "Every row needs a location; fill it in or delete the row.".into(),
            );
        }
        !(bad_sku || bad_loc)
    }

    /// A row of the target as read.
    #[inline]
    pub(super) fn add_target(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        self.stats.target_rows += 1;
        if !self.check_row(sku, location, line) {
            return;
        }
        let Some(loc) = self.locs.intern(location) else {
            return self.too_large(line);
        };
        if sku.len() > u16::MAX as usize {
            return self.too_large(line);
        }
        let p = partition_of(&self.hasher, sku.as_bytes());
        self.parts[p].push_target(sku.as_bytes(), loc, qty, line);
    }

    fn bundle_row(&mut self, line: u64, sku: &str) {
        self.issue(
            line,
            format!("Source row for bundle SKU `{sku}`"),
            "A bundle's stock is derived from its components; remove this row, or remove the bundle from mapping.bundles.".into(),
        );
    }

    #[inline]
    fn resolve_location(&mut self, raw: u16) -> Resolved {
        if let Some(Some(r)) = self.locs.resolved.get(raw as usize) {
            return *r;
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

    /// A row of the source as read: steps 1 and 2, and every check a row alone allows.
    #[inline]
    pub(super) fn add_source(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        self.stats.source_rows += 1;
        if !self.check_row(sku, location, line) {
            return;
        }
        let Some(raw_loc) = self.locs.intern(location) else {
            return self.too_large(line);
        };
        let m = self.m;
        let (origin, new_sku, factor) = match m.sku(sku) {
            SkuRule::Renamed { index, new, factor } => (index, new, factor),
            SkuRule::Passthrough => (PASSTHROUGH, sku, 1),
            SkuRule::Skip => {
                self.stats.skipped_sku_rows += 1;
                return;
            }
            SkuRule::Error if m.bundle_of(sku).is_some() => return self.bundle_row(line, sku),
            SkuRule::Error => {
                return self.issue(
                    line,
                    format!("SKU `{sku}` has no entry in mapping.skus"),
                    "Add it to mapping.skus, or set `mapping.unmapped_skus` to `passthrough` or `skip`.".into(),
                );
            }
        };
        match self.resolve_location(raw_loc) {
            Resolved::To(_) => {}
            Resolved::Skip => {
                self.stats.skipped_location_rows += 1;
                return;
            }
            Resolved::Error => return self.issues.push(super::unmapped_location(line, location)),
        }
        if m.bundle_of(new_sku).is_some() {
            return self.bundle_row(line, new_sku);
        }
        if qty.checked_mul(factor).is_none() {
            return self.issue(
                line,
                format!("Quantity {qty} × factor {factor} overflows"),
                "Check the quantity and the factor.".into(),
            );
        }
        if new_sku.len() > u16::MAX as usize {
            return self.too_large(line);
        }
        let p = partition_of(&self.hasher, new_sku.as_bytes());
        let stored: &[u8] = if origin == PASSTHROUGH { sku.as_bytes() } else { &[] };
        self.parts[p].push_source(origin, stored, raw_loc, qty, line);
    }
}

impl RowSink for Collector<'_> {
    #[inline]
    fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        match self.side {
            Side::Source => self.add_source(sku, location, qty, line),
            Side::Target => self.add_target(sku, location, qty, line),
        }
    }

    fn problem(&mut self, line: u64, col: usize, summary: String, help: String) {
        self.issues.push(Issue { side: self.side, line, col, summary, help });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_across_blocks() {
        let mut r = Records::default();
        let long = vec![b'x'; 70_000];
        let rows: Vec<(Vec<u8>, u16, i64, u64)> = (0..5000u64)
            .map(|i| {
                let sku = if i == 77 { long.clone() } else { format!("SKU-{i}").into_bytes() };
                (sku, (i % 7) as u16, (i as i64 - 2500) * 1_000_000_007, if i == 10 { 3 } else { i * 13 + 2 })
            })
            .chain([(b"MAX".to_vec(), u16::MAX - 1, i64::MIN, u64::MAX), (b"MIN".to_vec(), 0, i64::MAX, 0)])
            .collect();
        for (s, l, q, line) in &rows {
            r.push_target(s, *l, *q, *line);
        }
        let mut back = Vec::new();
        r.each_target(|t| back.push((t.sku.to_vec(), t.loc, t.qty, t.line)));
        assert_eq!(back, rows);
        assert!(r.full.len() >= 3);
        assert!(r.blocks().all(|b| b.len() <= b.capacity() && b.capacity() <= MAX_BLOCK.max(70_100)));
        assert_eq!(std::mem::size_of::<Records>(), 64);

        let mut r = Records::default();
        r.push_source(PASSTHROUGH, b"A", 3, -5, 9);
        r.push_source(0, b"", 1, 5, 2);
        r.push_source(u32::MAX - 1, b"", 0, 0, 1 << 40);
        let mut back = Vec::new();
        r.each_source(|s| back.push((s.origin, s.sku.to_vec(), s.raw_loc, s.qty, s.line)));
        assert_eq!(
            back,
            vec![(PASSTHROUGH, b"A".to_vec(), 3, -5, 9), (0, vec![], 1, 5, 2), (u32::MAX - 1, vec![], 0, 0, 1 << 40)]
        );
    }

    #[test]
    fn short_keys_are_equal_only_for_equal_strings() {
        let words: Vec<Vec<u8>> = [
            "",
            "a",
            "ab",
            "abc",
            "abd",
            "abcd",
            "abce",
            "abcdefg",
            "abcdefgh",
            "abcdefgi",
            "WH-EAST",
            "WH-WEST",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "bbcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghXjklmnop",
        ]
        .iter()
        .map(|w| w.as_bytes().to_vec())
        .chain([vec![0u8], vec![0, 0], vec![0, 0, 0, 0], vec![0; 8], vec![0; 16], vec![0; 17]])
        .collect();
        for a in &words {
            for b in &words {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
        }
        let mut l = Locations::default();
        let ids: Vec<_> = ["WH-EAST", "WH-WEST", "x", "a-very-long-location-name"].map(|n| l.intern(n)).to_vec();
        for _ in 0..3 {
            let again: Vec<_> = ["WH-EAST", "WH-WEST", "x", "a-very-long-location-name"].map(|n| l.intern(n)).to_vec();
            assert_eq!(again, ids);
        }
        assert_eq!(l.names.len(), 4);
    }

    #[test]
    fn blank_matches_trim() {
        for s in ["", " ", "\t", "\u{b}", "\u{3000}", " a", "a", "\u{a0}x", "\u{a0}", "é", "\r\n"] {
            assert_eq!(is_blank(s), s.trim().is_empty(), "{s:?}");
        }
    }
}
