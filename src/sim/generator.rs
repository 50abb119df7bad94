//! The synthetic world: a catalogue (source snapshot, SKU map, bundles, safety
//! stock, a legacy target that differs from it), the traffic of `--hours`
//! (orders on a daily curve, cancellations, returns, restocks, cycle counts),
//! and the deliveries of that traffic with the delivery-side faults.
//!
//! Everything is drawn from independent seeded streams, so the catalogue and the
//! events depend only on the seed and the sizes, never on the fault rates.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use super::Rng;
use super::faults::{FaultCounts, FaultSpec};
use crate::events::event::{Change, Event};

/// The events' source name.
pub const SOURCE: &str = "erp";
/// Source locations and the target locations they map to.
pub const LOCATIONS: [(&str, &str); 3] = [("WH-EAST", "loc-east"), ("WH-WEST", "loc-west"), ("STORE-1", "loc-store1")];
/// Simulated time zero (the freeze starts then).
pub const T0: &str = "2026-11-27T00:00:00Z";

/// What the generator is asked for.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub skus: usize,
    pub orders_per_day: f64,
    pub peak_per_day: f64,
    pub hours: u32,
    pub seed: u64,
    pub faults: FaultSpec,
}

/// How a source SKU maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkuKind {
    Plain,
    Renamed,
    Case,
    MergeA,
    MergeB,
}

/// One source SKU.
#[derive(Debug, Clone)]
pub struct Sku {
    pub source: String,
    pub target: String,
    pub factor: i64,
    pub kind: SkuKind,
}

/// What a customer buys.
#[derive(Debug, Clone)]
enum Product {
    Single(u32),
    Merged(u32, u32),
    /// Components as (source SKU, units per bundle).
    Bundle(Vec<(u32, i64)>),
}

/// The catalogue and its mapping.
#[derive(Debug, Default)]
pub struct Catalogue {
    pub skus: Vec<Sku>,
    /// Bundle target SKU and its components (target SKU, units).
    pub bundles: Vec<(String, Vec<(String, i64)>)>,
    /// Safety stock per target SKU.
    pub safety: Vec<(String, i64)>,
    /// Source keys: (SKU index, location index). Keys made by events come after the snapshot's.
    pub keys: Vec<(u32, u8)>,
    /// Snapshot quantity per key (`None`: the key is not in the snapshot).
    pub snapshot: Vec<Option<i64>>,
    key_of: Vec<[u32; 3]>,
    products: Vec<Product>,
}

impl Catalogue {
    /// Source SKU and location of a key.
    pub fn key_names(&self, k: u32) -> (&str, &str) {
        let (s, l) = self.keys[k as usize];
        (&self.skus[s as usize].source, LOCATIONS[l as usize].0)
    }
}

/// What an event stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Order,
    Cancellation,
    Return,
    Restock,
    CycleCount,
    StaleSet,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Cancellation => "cancellation",
            Kind::Return => "return",
            Kind::Restock => "restock",
            Kind::CycleCount => "cycle_count",
            Kind::StaleSet => "stale_set",
        }
    }
}

/// One distinct event (deliveries refer to it by index).
#[derive(Debug, Clone)]
pub struct GenEvent {
    pub id: String,
    pub key: u32,
    pub change: Change,
    pub sequence: i64,
    /// Seconds after [`T0`] when it happened.
    pub at: i64,
    pub kind: Kind,
}

/// One delivery of an event.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Seconds after [`T0`] when it arrives.
    pub at: i64,
    pub event: u32,
    pub duplicate: bool,
}

/// The generated world.
#[derive(Debug)]
pub struct World {
    pub catalogue: Catalogue,
    pub events: Vec<GenEvent>,
    /// In arrival order.
    pub deliveries: Vec<Delivery>,
    pub orders: u64,
    /// Order lines sold without stock (the data forces an oversell).
    pub forced_oversell_lines: u64,
    pub faults: FaultCounts,
}

impl World {
    /// The normalized event of a distinct event.
    pub fn event(&self, i: u32, t0: jiff::Timestamp) -> Event {
        let e = &self.events[i as usize];
        let (sku, loc) = self.catalogue.key_names(e.key);
        Event {
            id: e.id.clone(),
            source: SOURCE.into(),
            sku: sku.into(),
            location: loc.into(),
            change: e.change,
            sequence: e.sequence,
            occurred_at: t0.checked_add(jiff::SignedDuration::from_secs(e.at)).unwrap_or(t0),
        }
    }
}

fn catalogue(n: usize, rng: &mut Rng) -> Catalogue {
    let mut c = Catalogue::default();
    let mut i = 0usize;
    while i < n {
        let r = rng.f64();
        if r < 0.01 && i + 1 < n {
            c.skus.push(Sku {
                source: format!("MRGA-{i:06}"),
                target: format!("MRG-{i:06}"),
                factor: 1,
                kind: SkuKind::MergeA,
            });
            c.skus.push(Sku {
                source: format!("MRGB-{i:06}"),
                target: format!("MRG-{i:06}"),
                factor: 2,
                kind: SkuKind::MergeB,
            });
            c.products.push(Product::Merged(i as u32, i as u32 + 1));
            i += 2;
            continue;
        }
        let sku = if r < 0.03 {
            let factor = [6, 12, 24][rng.below(3) as usize];
            Sku { source: format!("CASE-{i:06}"), target: format!("EACH-{i:06}"), factor, kind: SkuKind::Case }
        } else if r < 0.08 {
            Sku { source: format!("LEG-{i:06}"), target: format!("SKU-{i:06}"), factor: 1, kind: SkuKind::Renamed }
        } else {
            Sku { source: format!("SKU-{i:06}"), target: format!("SKU-{i:06}"), factor: 1, kind: SkuKind::Plain }
        };
        c.skus.push(sku);
        c.products.push(Product::Single(i as u32));
        i += 1;
    }
    // Stock rows: every SKU in one to three locations.
    c.key_of = vec![[u32::MAX; 3]; c.skus.len()];
    for s in 0..c.skus.len() {
        let case = c.skus[s].kind == SkuKind::Case;
        let mut locs = [rng.chance(0.95), rng.chance(0.5), rng.chance(0.25)];
        if !locs.iter().any(|x| *x) {
            locs[0] = true;
        }
        for (l, on) in locs.into_iter().enumerate() {
            if on {
                let qty = if rng.chance(0.05) {
                    0
                } else if case {
                    rng.range(1, 30)
                } else {
                    rng.range(1, 200)
                };
                c.key_of[s][l] = c.keys.len() as u32;
                c.keys.push((s as u32, l as u8));
                c.snapshot.push(Some(qty));
            }
        }
    }
    // Bundles of plain or renamed SKUs (one unit of source is one unit of target).
    let singles: Vec<u32> = (0..c.skus.len() as u32)
        .filter(|&s| matches!(c.skus[s as usize].kind, SkuKind::Plain | SkuKind::Renamed))
        .collect();
    let n_bundles = if singles.len() >= 20 { (n / 200).max(1) } else { 0 };
    for b in 0..n_bundles {
        let k = 2 + rng.below(2) as usize;
        let mut comps: Vec<(u32, i64)> = Vec::with_capacity(k);
        while comps.len() < k {
            let s = singles[rng.below(singles.len() as u64) as usize];
            if !comps.iter().any(|(x, _)| *x == s) {
                comps.push((s, 1 + rng.below(2) as i64));
            }
        }
        let name = format!("KIT-{b:05}");
        c.bundles.push((name, comps.iter().map(|(s, u)| (c.skus[*s as usize].target.clone(), *u)).collect()));
        c.products.push(Product::Bundle(comps));
    }
    // Safety stock on about 1% of the SKUs (some of them bundle components).
    let mut seen = std::collections::HashSet::new();
    for s in &c.skus {
        if rng.chance(0.01) && seen.insert(s.target.clone()) {
            c.safety.push((s.target.clone(), rng.range(1, 5)));
        }
    }
    // Popular products first: a fixed shuffle, then picks skewed to the front.
    for i in (1..c.products.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        c.products.swap(i, j);
    }
    c
}

/// The daily curve: orders per day at `hour` (0..24), averaging `avg` with `peak` at 20:00.
pub struct Curve {
    base: f64,
    amp: f64,
    k: i32,
}

impl Curve {
    pub fn new(avg: f64, peak: f64) -> Curve {
        let peak = peak.max(avg);
        if peak <= avg || avg <= 0.0 {
            return Curve { base: avg.max(0.0), amp: 0.0, k: 1 };
        }
        // b(h)^k has mean C(2k,k)/4^k; pick the gentlest k whose base stays >= 0.
        let mut k = 1;
        let mut mean = 0.5f64;
        while mean > avg / peak && k < 64 {
            mean *= (2 * k + 1) as f64 / (2 * k + 2) as f64;
            k += 1;
        }
        let base = ((avg - peak * mean) / (1.0 - mean)).max(0.0);
        let amp = if mean > 0.0 { (avg - base) / mean } else { 0.0 };
        Curve { base, amp, k }
    }

    /// Orders per day at this hour of the day.
    pub fn rate(&self, hour: f64) -> f64 {
        let b = (1.0 + (2.0 * std::f64::consts::PI * (hour - 20.0) / 24.0).cos()) / 2.0;
        self.base + self.amp * b.powi(self.k)
    }
}

/// Poisson draw (Knuth below 30, a rounded normal above).
fn poisson(rng: &mut Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let l = (-lambda).exp();
        let mut k = 0u64;
        let mut p = 1.0;
        loop {
            p *= rng.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    let (u1, u2) = (rng.f64().max(1e-12), rng.f64());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (lambda + lambda.sqrt() * z).round().max(0.0) as u64
}

enum Occ {
    Order,
    Restock,
    Count,
    Later(Kind, Vec<(u32, i64)>),
}

struct Gen<'c> {
    c: &'c mut Catalogue,
    truth: Vec<i64>,
    known: Vec<bool>,
    rng: Rng,
    stale_rng: Rng,
    stale_rate: f64,
    events: Vec<GenEvent>,
    next_seq: i64,
    next_id: u64,
    forced: u64,
}

impl Gen<'_> {
    fn pick_product(&mut self) -> usize {
        let u = self.rng.f64();
        ((u * u) * self.c.products.len() as f64) as usize % self.c.products.len()
    }

    fn emit(&mut self, key: u32, change: Change, at: i64, kind: Kind) {
        self.next_seq += 10;
        let seq = self.next_seq;
        let k = key as usize;
        let before = self.truth[k];
        // A stale absolute set: the key's value just before this event, sent late.
        if self.stale_rate > 0.0 && self.stale_rng.chance(self.stale_rate) && self.known[k] && before >= 0 {
            self.events.push(GenEvent {
                id: format!("stale-{}", self.next_id),
                key,
                change: Change::Qty(before),
                sequence: seq - 5,
                at,
                kind: Kind::StaleSet,
            });
        }
        self.truth[k] = match change {
            Change::Delta(d) => before + d,
            Change::Qty(q) => q,
        };
        self.known[k] = true;
        self.events.push(GenEvent { id: format!("ev-{}", self.next_id), key, change, sequence: seq, at, kind });
        self.next_id += 1;
    }

    fn keys_of(&self, s: u32) -> impl Iterator<Item = u32> + '_ {
        self.c.key_of[s as usize].iter().copied().filter(|k| *k != u32::MAX)
    }

    /// One order line; returns the (key, units) it took, empty when out of stock.
    fn line(&mut self, p: usize, qty: i64) -> Vec<(u32, i64)> {
        let product = self.c.products[p].clone();
        let mut cands: Vec<Vec<(u32, i64)>> = Vec::new();
        let mut any: Vec<Vec<(u32, i64)>> = Vec::new();
        match product {
            Product::Single(s) => {
                for k in self.keys_of(s) {
                    any.push(vec![(k, qty)]);
                    if self.truth[k as usize] >= qty {
                        cands.push(vec![(k, qty)]);
                    }
                }
            }
            Product::Merged(a, b) => {
                for k in self.keys_of(a).chain(self.keys_of(b)) {
                    any.push(vec![(k, qty)]);
                    if self.truth[k as usize] >= qty {
                        cands.push(vec![(k, qty)]);
                    }
                }
            }
            Product::Bundle(comps) => {
                for l in 0..3 {
                    let ks: Vec<(u32, i64)> = comps
                        .iter()
                        .map(|(s, u)| (self.c.key_of[*s as usize][l], u * qty))
                        .filter(|(k, _)| *k != u32::MAX)
                        .collect();
                    if ks.len() != comps.len() {
                        continue;
                    }
                    if ks.iter().all(|(k, n)| self.truth[*k as usize] >= *n) {
                        cands.push(ks.clone());
                    }
                    any.push(ks);
                }
            }
        }
        if !cands.is_empty() {
            let i = self.rng.below(cands.len() as u64) as usize;
            return cands.swap_remove(i);
        }
        // Out of stock: now and then a channel with stale stock sells it anyway.
        if !any.is_empty() && self.rng.chance(0.05) {
            self.forced += 1;
            let i = self.rng.below(any.len() as u64) as usize;
            return any.swap_remove(i);
        }
        Vec::new()
    }
}

/// Generates the world of one simulation.
pub fn generate(cfg: &GenConfig) -> World {
    let mut cat_rng = Rng::new(cfg.seed ^ 0x0001_c47a_1065);
    let mut catalogue = catalogue(cfg.skus.max(1), &mut cat_rng);
    let nkeys = catalogue.keys.len();
    let truth: Vec<i64> = catalogue.snapshot.iter().map(|q| q.unwrap_or(0)).collect();
    let mut g = Gen {
        c: &mut catalogue,
        truth,
        known: vec![true; nkeys],
        rng: Rng::new(cfg.seed ^ 0x0002_e7e4_7500),
        stale_rng: Rng::new(cfg.seed ^ 0x0003_57a1_e000),
        stale_rate: cfg.faults.stale_set,
        events: Vec::new(),
        next_seq: 0,
        next_id: 1,
        forced: 0,
    };
    let curve = Curve::new(cfg.orders_per_day, cfg.peak_per_day);
    let restocks_per_min = nkeys as f64 * 0.02 / 1440.0;
    let counts_per_min = nkeys as f64 * 0.01 / 1440.0;
    let end = cfg.hours as i64 * 3600;
    let mut later: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut later_items: HashMap<u64, (Kind, Vec<(u32, i64)>)> = HashMap::new();
    let mut later_n = 0u64;
    let mut orders = 0u64;
    for minute in 0..(cfg.hours as i64 * 60) {
        let t = minute * 60;
        let mut occ: Vec<(i64, u64, Occ)> = Vec::new();
        let mut tie = 0u64;
        while let Some(Reverse((at, id))) = later.peek().copied() {
            if at >= t + 60 {
                break;
            }
            later.pop();
            if let Some((kind, lines)) = later_items.remove(&id) {
                occ.push((at, tie, Occ::Later(kind, lines)));
                tie += 1;
            }
        }
        let hour = (minute as f64 / 60.0) % 24.0;
        for (n, what) in [
            (poisson(&mut g.rng, curve.rate(hour) / 1440.0), 0),
            (poisson(&mut g.rng, restocks_per_min), 1),
            (poisson(&mut g.rng, counts_per_min), 2),
        ] {
            for _ in 0..n {
                let at = t + g.rng.below(60) as i64;
                let o = match what {
                    0 => Occ::Order,
                    1 => Occ::Restock,
                    _ => Occ::Count,
                };
                occ.push((at, tie, o));
                tie += 1;
            }
        }
        occ.sort_by_key(|(at, tie, _)| (*at, *tie));
        for (at, _, o) in occ {
            match o {
                Occ::Order => {
                    orders += 1;
                    let lines = match g.rng.f64() {
                        x if x < 0.6 => 1,
                        x if x < 0.9 => 2,
                        _ => 3,
                    };
                    let mut taken: Vec<(u32, i64)> = Vec::new();
                    for _ in 0..lines {
                        let p = g.pick_product();
                        let qty = match g.rng.f64() {
                            x if x < 0.8 => 1,
                            x if x < 0.95 => 2,
                            _ => g.rng.range(3, 5),
                        };
                        for (k, n) in g.line(p, qty) {
                            g.emit(k, Change::Delta(-n), at, Kind::Order);
                            taken.push((k, n));
                        }
                    }
                    if taken.is_empty() {
                        continue;
                    }
                    if g.rng.chance(0.03) {
                        let when = at + g.rng.range(300, 7200);
                        later.push(Reverse((when, later_n)));
                        later_items.insert(later_n, (Kind::Cancellation, taken.clone()));
                        later_n += 1;
                    } else {
                        for (k, n) in taken {
                            if g.rng.chance(0.02) {
                                let when = at + g.rng.range(6 * 3600, 36 * 3600);
                                if when < end {
                                    later.push(Reverse((when, later_n)));
                                    later_items.insert(later_n, (Kind::Return, vec![(k, n)]));
                                    later_n += 1;
                                }
                            }
                        }
                    }
                }
                Occ::Later(kind, lines) => {
                    for (k, n) in lines {
                        g.emit(k, Change::Delta(n), at, kind);
                    }
                }
                Occ::Restock => {
                    let p = g.pick_product();
                    let s = match &g.c.products[p] {
                        Product::Single(s) => *s,
                        Product::Merged(a, b) => {
                            if g.rng.chance(0.5) {
                                *a
                            } else {
                                *b
                            }
                        }
                        Product::Bundle(c) => c[g.rng.below(c.len() as u64) as usize].0,
                    };
                    let missing: Vec<usize> = (0..3).filter(|l| g.c.key_of[s as usize][*l] == u32::MAX).collect();
                    let key = if !missing.is_empty() && g.rng.chance(0.01) {
                        // Stock arrives at a location the SKU had none: a new key.
                        let l = missing[g.rng.below(missing.len() as u64) as usize];
                        let k = g.c.keys.len() as u32;
                        g.c.keys.push((s, l as u8));
                        g.c.snapshot.push(None);
                        g.c.key_of[s as usize][l] = k;
                        g.truth.push(0);
                        g.known.push(false);
                        k
                    } else {
                        let ks: Vec<u32> = g.keys_of(s).collect();
                        ks[g.rng.below(ks.len() as u64) as usize]
                    };
                    let n = if g.c.skus[s as usize].kind == SkuKind::Case {
                        g.rng.range(2, 20)
                    } else {
                        g.rng.range(20, 200)
                    };
                    g.emit(key, Change::Delta(n), at, Kind::Restock);
                }
                Occ::Count => {
                    let k = g.rng.below(g.c.keys.len() as u64) as u32;
                    let shrink = match g.rng.f64() {
                        x if x < 0.7 => 0,
                        x if x < 0.9 => 1,
                        _ => 2,
                    };
                    let v = (g.truth[k as usize] - shrink).max(0);
                    g.emit(k, Change::Qty(v), at, Kind::CycleCount);
                }
            }
        }
    }
    let forced = g.forced;
    let events = std::mem::take(&mut g.events);
    drop(g);
    let (deliveries, faults) = deliveries(&events, &cfg.faults, cfg.seed);
    World { catalogue, events, deliveries, orders, forced_oversell_lines: forced, faults }
}

/// Schedules deliveries: normally a few seconds after the event, with the
/// delivery-side faults drawn from their own streams.
fn deliveries(events: &[GenEvent], f: &FaultSpec, seed: u64) -> (Vec<Delivery>, FaultCounts) {
    let mut base = Rng::new(seed ^ 0x0004_de11_0000);
    let mut dup = Rng::new(seed ^ 0x0005_d0b1_e000);
    let mut reorder = Rng::new(seed ^ 0x0006_0d0e_7000);
    let mut late = Rng::new(seed ^ 0x0007_1a7e_0000);
    let mut counts = FaultCounts::default();
    let mut out = Vec::with_capacity(events.len() + events.len() / 8);
    for (i, e) in events.iter().enumerate() {
        let mut at = e.at + base.below(4) as i64;
        if e.kind == Kind::StaleSet {
            counts.stale_set += 1;
            at += base.range(600, 3 * 3600);
        }
        if f.reorder > 0.0 && reorder.chance(f.reorder) {
            counts.reorder += 1;
            at += reorder.range(60, 1800);
        }
        if f.late > 0.0 && late.chance(f.late) {
            counts.late += 1;
            at += late.range(3600, 12 * 3600);
        }
        out.push(Delivery { at, event: i as u32, duplicate: false });
        if f.dup > 0.0 && dup.chance(f.dup) {
            counts.dup += 1;
            out.push(Delivery { at: at + dup.range(1, 600), event: i as u32, duplicate: true });
        }
    }
    out.sort_by_key(|d| (d.at, d.event, d.duplicate));
    (out, counts)
}

/// Writes the source snapshot, the SKU map, the legacy target and the plan
/// into `dir`. `legacy` is the target's rows before the migration.
pub fn write_files(
    world: &World,
    legacy: &[(String, String, i64)],
    dir: &Path,
    name: &str,
    max_drift_ratio: f64,
) -> anyhow::Result<()> {
    let c = &world.catalogue;
    let mut src = std::io::BufWriter::new(std::fs::File::create(dir.join("source.csv"))?);
    writeln!(src, "sku,location,qty")?;
    for (k, q) in c.snapshot.iter().enumerate() {
        if let Some(q) = q {
            let (sku, loc) = c.key_names(k as u32);
            writeln!(src, "{sku},{loc},{q}")?;
        }
    }
    src.flush()?;
    let mut map = std::io::BufWriter::new(std::fs::File::create(dir.join("skus.csv"))?);
    writeln!(map, "old_sku,new_sku,factor")?;
    for s in c.skus.iter().filter(|s| s.kind != SkuKind::Plain) {
        writeln!(map, "{},{},{}", s.source, s.target, s.factor)?;
    }
    map.flush()?;

    let db = dir.join("target.db");
    let _ = std::fs::remove_file(&db);
    let mut conn = rusqlite::Connection::open(&db)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL,
                                 version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));",
    )?;
    let tx = conn.transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO inventory (sku, location, qty) VALUES (?1, ?2, ?3)")?;
        for (s, l, q) in legacy {
            ins.execute(rusqlite::params![s, l, q])?;
        }
    }
    tx.commit()?;
    drop(conn);

    let mut y = String::new();
    y.push_str("# Generated by `stockshift simulate`: a synthetic ERP snapshot moving into a store's inventory.\n");
    y.push_str(&format!("version: 1\nname: {name}\n"));
    y.push_str("source: { provider: csv, path: source.csv }\n");
    y.push_str("target: { provider: sqlite, path: target.db, batch_size: 500 }\n");
    y.push_str("mapping:\n  skus: { file: skus.csv }\n  unmapped_skus: passthrough\n  locations: { ");
    y.push_str(&LOCATIONS.iter().map(|(s, t)| format!("{s}: {t}")).collect::<Vec<_>>().join(", "));
    y.push_str(" }\n  unmapped_locations: error\n");
    if !c.bundles.is_empty() {
        y.push_str("  bundles:\n");
        for (b, comps) in &c.bundles {
            let parts: Vec<String> = comps.iter().map(|(s, u)| format!("{s}: {u}")).collect();
            y.push_str(&format!("    {b}: {{ components: {{ {} }} }}\n", parts.join(", ")));
        }
    }
    y.push_str("  safety_stock:\n    default: 0\n");
    if !c.safety.is_empty() {
        y.push_str("    per_sku:\n");
        for (s, n) in &c.safety {
            y.push_str(&format!("      {s}: {n}\n"));
        }
    }
    y.push_str("  orphans: zero\n");
    y.push_str(&format!(
        "thresholds:\n  max_drift_ratio: {max_drift_ratio}\n  max_abs_drift: 0\n  max_webhook_failure_rate: 0.05\n  max_fulfillment_failure_rate: 0.02\n  max_replay_backlog: 1000\n"
    ));
    let big = (legacy.len() as u64 + c.keys.len() as u64) * 4 + 1000;
    y.push_str(&format!("limits: {{ max_writes: {big}, max_zeroed: {big} }}\n"));
    std::fs::write(dir.join("plan.yaml"), y)?;
    Ok(())
}

/// The legacy target: the mapped snapshot with the old system's drift (about 8%
/// of keys off, 4% missing) and a few orphans no source row produces.
pub fn legacy_target(expected: &[((String, String), i64)], seed: u64) -> (Vec<(String, String, i64)>, u64) {
    let mut rng = Rng::new(seed ^ 0x0008_1e6a_c400);
    let mut out = Vec::with_capacity(expected.len() + expected.len() / 100);
    let mut writes = 0u64;
    for ((s, l), v) in expected {
        let r = rng.f64();
        if r < 0.04 {
            writes += 1;
            continue;
        }
        if r < 0.12 {
            let mut w = (*v + rng.range(-5, 10)).max(0);
            if w == *v {
                w = v + 1;
            }
            writes += 1;
            out.push((s.clone(), l.clone(), w));
        } else {
            out.push((s.clone(), l.clone(), *v));
        }
    }
    let orphans = (expected.len() / 500).max(1);
    for j in 0..orphans {
        let q = rng.range(0, 50);
        if q != 0 {
            writes += 1;
        }
        out.push((format!("GONE-{j:06}"), LOCATIONS[j % 3].1.to_string(), q));
    }
    (out, writes)
}
