//! The independent ledger: the simulator's own ground truth and its own,
//! deliberately plain, implementation of the mapping (SPEC section 2, steps 1
//! to 5). It shares no code with `diff::engine` or `ops::replay`: it applies
//! every event once, in sequence order, to the source quantities, maps them
//! with a few lines of arithmetic, and compares the result with the target
//! table it reads itself, key by key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::events::event::Change;

type TKey = (String, String);

/// The mapping as the ledger sees it (the same data the plan file is written from).
#[derive(Debug, Default, Clone)]
pub struct MapSpec {
    /// Source SKU -> (target SKU, factor); absent: passthrough.
    pub renames: HashMap<String, (String, i64)>,
    /// Source location -> target location.
    pub locations: HashMap<String, String>,
    /// Target SKU -> safety stock.
    pub safety: HashMap<String, i64>,
    /// Bundle SKU and its components (target SKU, units).
    pub bundles: Vec<(String, Vec<(String, i64)>)>,
}

/// Target keys and which source keys feed them.
#[derive(Debug, Default)]
pub struct Ledger {
    spec: MapSpec,
    /// Component SKU -> bundles containing it.
    comp_bundles: HashMap<String, Vec<usize>>,
    /// Per source key: its target key and factor.
    src_target: Vec<(u32, i64)>,
    tkeys: Vec<TKey>,
    tindex: HashMap<TKey, u32>,
    /// Per target key: the source keys merged into it (empty for bundles).
    group: Vec<Vec<u32>>,
    /// Per target key: `Some(bundle)` for bundle keys.
    bundle: Vec<Option<usize>>,
    /// Per bundle key: its components' target keys (`None`: no such key yet) and units.
    comps: Vec<Vec<(Option<u32>, i64)>>,
    /// Per target key: the bundle keys it is a component of.
    in_bundles: Vec<Vec<u32>>,
}

impl Ledger {
    pub fn new(spec: MapSpec) -> Ledger {
        let mut comp_bundles: HashMap<String, Vec<usize>> = HashMap::new();
        for (b, (_, comps)) in spec.bundles.iter().enumerate() {
            for (c, _) in comps {
                comp_bundles.entry(c.clone()).or_default().push(b);
            }
        }
        Ledger { spec, comp_bundles, ..Ledger::default() }
    }

    fn tkey(&mut self, sku: &str, loc: &str, bundle: Option<usize>) -> u32 {
        let key = (sku.to_string(), loc.to_string());
        if let Some(&t) = self.tindex.get(&key) {
            return t;
        }
        let t = self.tkeys.len() as u32;
        self.tindex.insert(key.clone(), t);
        self.tkeys.push(key);
        self.group.push(Vec::new());
        self.bundle.push(bundle);
        self.in_bundles.push(Vec::new());
        self.comps.push(match bundle {
            Some(b) => self.spec.bundles[b]
                .1
                .iter()
                .map(|(c, u)| (self.tindex.get(&(c.clone(), loc.to_string())).copied(), *u))
                .collect(),
            None => Vec::new(),
        });
        t
    }

    /// Registers source key number `self.src_target.len()` (call in key order).
    pub fn add_source_key(&mut self, sku: &str, loc: &str) -> u32 {
        let (tsku, factor) = match self.spec.renames.get(sku) {
            Some((t, f)) => (t.clone(), *f),
            None => (sku.to_string(), 1),
        };
        let tloc = self.spec.locations.get(loc).cloned().unwrap_or_else(|| loc.to_string());
        let fresh = !self.tindex.contains_key(&(tsku.clone(), tloc.clone()));
        let t = self.tkey(&tsku, &tloc, None);
        let id = self.src_target.len() as u32;
        self.src_target.push((t, factor));
        self.group[t as usize].push(id);
        if fresh {
            // Every bundle containing this SKU gets a key here, with this component in its slot.
            for b in self.comp_bundles.get(&tsku).cloned().unwrap_or_default() {
                let name = self.spec.bundles[b].0.clone();
                let bk = self.tkey(&name, &tloc, Some(b));
                for (slot, (c, _)) in self.spec.bundles[b].1.iter().enumerate() {
                    if *c == tsku {
                        self.comps[bk as usize][slot].0 = Some(t);
                    }
                }
                if !self.in_bundles[t as usize].contains(&bk) {
                    self.in_bundles[t as usize].push(bk);
                }
            }
        }
        id
    }

    pub fn target_keys(&self) -> usize {
        self.tkeys.len()
    }

    pub fn target_key(&self, t: u32) -> &TKey {
        &self.tkeys[t as usize]
    }

    /// The expected quantity of a target key given the source quantities
    /// (`None`: the key should not exist).
    pub fn expected(&self, t: u32, vals: &[Option<i64>]) -> Option<i64> {
        let t = t as usize;
        match self.bundle[t] {
            None => {
                let mut any = false;
                let mut sum = 0i64;
                for &s in &self.group[t] {
                    if let Some(v) = vals.get(s as usize).copied().flatten() {
                        any = true;
                        sum += v * self.src_target[s as usize].1;
                    }
                }
                let safety = self.spec.safety.get(&self.tkeys[t].0).copied().unwrap_or(0);
                any.then(|| (sum - safety).max(0))
            }
            Some(_) => {
                let values: Vec<(Option<i64>, i64)> =
                    self.comps[t].iter().map(|(c, u)| (c.and_then(|c| self.expected(c, vals)), *u)).collect();
                if values.iter().all(|(v, _)| v.is_none()) {
                    return None;
                }
                values.iter().map(|(v, u)| v.unwrap_or(0) / u).min()
            }
        }
    }

    /// Every target key a change of these source keys can move.
    pub fn affected(&self, sources: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for s in sources {
            let t = self.src_target[s as usize].0;
            out.insert(t);
            out.extend(self.in_bundles[t as usize].iter().copied());
        }
        out
    }

    /// The source keys feeding a target key directly (one, unless merged; none for bundles).
    pub fn sources_of(&self, t: u32) -> &[u32] {
        &self.group[t as usize]
    }

    pub fn factor(&self, s: u32) -> i64 {
        self.src_target[s as usize].1
    }

    pub fn safety(&self, t: u32) -> i64 {
        self.spec.safety.get(&self.tkeys[t as usize].0).copied().unwrap_or(0)
    }

    pub fn is_bundle(&self, t: u32) -> bool {
        self.bundle[t as usize].is_some()
    }

    /// Expected values of every target key that should exist.
    pub fn expected_all(&self, vals: &[Option<i64>]) -> Vec<(u32, i64)> {
        (0..self.tkeys.len() as u32).filter_map(|t| self.expected(t, vals).map(|v| (t, v))).collect()
    }
}

/// Source quantities from a set of events, applied once per id in sequence order.
#[derive(Debug, Clone)]
pub struct View {
    snapshot: Vec<Option<i64>>,
    /// Per source key: its events so far, by sequence.
    events: Vec<BTreeMap<i64, Change>>,
    seen: std::collections::HashSet<u32>,
    pub vals: Vec<Option<i64>>,
}

impl View {
    pub fn new(snapshot: &[Option<i64>]) -> View {
        View {
            snapshot: snapshot.to_vec(),
            events: vec![BTreeMap::new(); snapshot.len()],
            seen: Default::default(),
            vals: snapshot.to_vec(),
        }
    }

    /// Adds source keys made after the snapshot (absent until an event names them).
    pub fn grow(&mut self, keys: usize) {
        if keys > self.snapshot.len() {
            self.snapshot.resize(keys, None);
            self.events.resize(keys, BTreeMap::new());
            self.vals.resize(keys, None);
        }
    }

    /// Takes event number `id` into account (a second time is a no-op) and
    /// returns whether it was new.
    pub fn add(&mut self, id: u32, key: u32, sequence: i64, change: Change) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        let k = key as usize;
        self.events[k].insert(sequence, change);
        let mut v = self.snapshot[k].unwrap_or(0);
        for ch in self.events[k].values() {
            v = match *ch {
                Change::Delta(d) => v + d,
                Change::Qty(q) => q,
            };
        }
        self.vals[k] = Some(v);
        true
    }
}

/// The target table as it is, read with plain SQL.
pub fn read_target(db: &Path) -> anyhow::Result<HashMap<TKey, i64>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT sku, location, qty FROM inventory")?;
    let mut out = HashMap::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.insert((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get::<_, i64>(2)?);
    }
    Ok(out)
}

/// One key that differs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drift {
    pub sku: String,
    pub location: String,
    pub expected: Option<i64>,
    pub target: Option<i64>,
}

impl Drift {
    pub fn units(&self) -> u64 {
        (self.target.unwrap_or(0) - self.expected.unwrap_or(0)).unsigned_abs()
    }
}

/// The comparison of the whole target with the ledger.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub keys: u64,
    pub drifted: Vec<(Option<u32>, Drift)>,
}

impl Comparison {
    pub fn units(&self) -> u64 {
        self.drifted.iter().map(|(_, d)| d.units()).sum()
    }
    /// Keys where the target shows more than there is: stock a shop would sell and not have.
    pub fn over(&self) -> u64 {
        self.drifted.iter().filter(|(_, d)| d.target.unwrap_or(0) > d.expected.unwrap_or(0)).count() as u64
    }
}

/// Compares every target row, and every key the ledger expects, with the ledger.
/// Target rows the mapping does not produce (orphans, zeroed by the plan) must be 0.
pub fn compare_all(ledger: &Ledger, vals: &[Option<i64>], target: &HashMap<TKey, i64>) -> Comparison {
    let mut c = Comparison::default();
    let mut expected: HashMap<&TKey, (u32, i64)> = HashMap::new();
    for (t, v) in ledger.expected_all(vals) {
        expected.insert(ledger.target_key(t), (t, v));
    }
    c.keys = expected.len() as u64;
    for (k, &(t, v)) in &expected {
        let got = target.get(*k).copied();
        if got != Some(v) {
            c.drifted
                .push((Some(t), Drift { sku: k.0.clone(), location: k.1.clone(), expected: Some(v), target: got }));
        }
    }
    for (k, &q) in target {
        if !expected.contains_key(k) && q != 0 {
            c.drifted.push((None, Drift { sku: k.0.clone(), location: k.1.clone(), expected: None, target: Some(q) }));
        }
    }
    c.drifted.sort_by(|a, b| (&a.1.location, &a.1.sku).cmp(&(&b.1.location, &b.1.sku)));
    c
}
