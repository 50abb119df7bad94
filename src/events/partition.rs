//! Queue partitions: which replay worker may handle an event.
//!
//! Several replay workers share one PostgreSQL queue by partition: a worker holds
//! a partition's lock while it replays that partition's events, so per-key order
//! and exactly-once hold as on one machine. For that to be safe, everything one
//! replay recomputes together must fall in one partition: every source SKU that
//! feeds a target SKU (renames and merges), and every component of a bundle
//! together with the bundle (a component may be in several bundles, which ties
//! those bundles together too). So the partition of an event is a stable hash of
//! its **group**: the connected part of the graph
//!
//! ```text
//! source SKU ──rename──▶ target SKU ◀──component── bundle SKU
//! ```
//!
//! named by its smallest target SKU. Locations are left out on purpose: a
//! location map can merge locations, and partitioning by SKU alone keeps every
//! location of a SKU together whatever that map says.
//!
//! The hash is FNV-1a, fixed across versions and machines, so receivers and
//! workers started from the same plan agree. When the plan's mapping changes
//! while events are queued, a worker finds events whose stored partition differs
//! from what the plan now says and moves them ([`crate::events::Queue::rehome`])
//! instead of replaying them next to keys they no longer belong with.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};

use crate::config::check::Plan;
use crate::config::model::EventSide;
use crate::events::Event;
use crate::mapping::{Mapping, SkuRule};

/// Maps SKUs to partitions for one plan.
#[derive(Debug, Clone)]
pub struct Partitioner {
    parts: u32,
    /// The group name of each target SKU that is in a bundle (as component or
    /// bundle); every other target SKU is a group of its own.
    group_of: HashMap<Box<str>, Box<str>>,
}

/// FNV-1a, 64 bits: stable across processes and versions.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Partitioner {
    /// `parts` partitions (at least 1) for the mapping `m`.
    pub fn new(m: &Mapping, parts: u32) -> Partitioner {
        // Union-find over the bundle graph's target SKUs.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        for b in m.bundles() {
            for s in std::iter::once(&*b.sku).chain(b.components.iter().map(|(c, _)| &**c)) {
                index.entry(s).or_insert_with(|| {
                    names.push(s);
                    names.len() - 1
                });
            }
        }
        let mut parent: Vec<usize> = (0..names.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for b in m.bundles() {
            let bi = index[&*b.sku];
            for (c, _) in &b.components {
                let ci = index[&**c];
                let (rb, rc) = (root(&mut parent, bi), root(&mut parent, ci));
                if rb != rc {
                    parent[rb] = rc;
                }
            }
        }
        // Name each group by its smallest member, so the name does not depend on
        // the order bundles are listed in.
        let mut smallest: HashMap<usize, &str> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let r = root(&mut parent, i);
            let e = smallest.entry(r).or_insert(name);
            if *name < *e {
                *e = name;
            }
        }
        let mut group_of = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let r = root(&mut parent, i);
            group_of.insert((*name).into(), smallest[&r].into());
        }
        Partitioner { parts: parts.max(1), group_of }
    }

    /// The partition of a target SKU.
    pub fn of_target(&self, target_sku: &str) -> u32 {
        let group = self.group_of.get(target_sku).map_or(target_sku, |g| g);
        (fnv1a(group) % u64::from(self.parts)) as u32
    }

    /// The partition of a source SKU: that of the target SKU it maps to (a SKU
    /// the mapping drops or refuses keeps its own name).
    pub fn of_source(&self, m: &Mapping, source_sku: &str) -> u32 {
        match m.sku(source_sku) {
            SkuRule::Renamed { new, .. } => self.of_target(new),
            SkuRule::Passthrough | SkuRule::Skip | SkuRule::Error => self.of_target(source_sku),
        }
    }

    /// The partition function of a plan's queue: source-side events by their
    /// source SKU, target-side ones by their (target) SKU.
    pub fn for_plan(plan: &Plan, parts: u32) -> Arc<dyn Fn(&Event) -> u32 + Send + Sync> {
        let p = Partitioner::new(&plan.mapping, parts);
        let m = plan.mapping.clone();
        let target_sources: Vec<String> = plan
            .config
            .events
            .as_ref()
            .map(|e| e.sources.iter().filter(|s| s.side == EventSide::Target).map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        Arc::new(
            move |e: &Event| {
                if target_sources.contains(&e.source) { p.of_target(&e.sku) } else { p.of_source(&m, &e.sku) }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::MappingBuilder;

    fn mapping() -> Mapping {
        let mut b = MappingBuilder::new();
        b.rename("OLD-A", "A", 1);
        b.rename("OLD-A2", "A", 1); // a merge
        b.rename("CASE-B", "B", 12);
        b.bundle("KIT-1", [("A".to_owned(), 1), ("C".to_owned(), 2)]);
        b.bundle("KIT-2", [("C".to_owned(), 1), ("D".to_owned(), 1)]);
        b.build()
    }

    #[test]
    fn everything_one_replay_recomputes_together_shares_a_partition() {
        let m = mapping();
        let p = Partitioner::new(&m, 64);
        // A, C, D, KIT-1 and KIT-2 are one group (C is in both kits); OLD-A and
        // OLD-A2 map to A.
        let a = p.of_target("A");
        for t in ["C", "D", "KIT-1", "KIT-2"] {
            assert_eq!(p.of_target(t), a, "{t}");
        }
        assert_eq!(p.of_source(&m, "OLD-A"), a);
        assert_eq!(p.of_source(&m, "OLD-A2"), a);
        assert_eq!(p.of_source(&m, "CASE-B"), p.of_target("B"));
        // A passthrough SKU is its own group.
        assert_eq!(p.of_source(&m, "PLAIN"), p.of_target("PLAIN"));
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let m = Mapping::default();
        let p = Partitioner::new(&m, 64);
        // Fixed values: receivers and workers of different builds must agree.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        let mut seen = [0u32; 64];
        for i in 0..6400 {
            seen[p.of_target(&format!("SKU-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50 && n < 160), "{seen:?}");
        assert_eq!(Partitioner::new(&m, 0).of_target("x"), 0, "zero partitions means one");
    }

    #[test]
    fn the_group_name_does_not_depend_on_bundle_order() {
        let mut b1 = MappingBuilder::new();
        b1.bundle("K1", [("X".to_owned(), 1)]);
        b1.bundle("K2", [("X".to_owned(), 1), ("Y".to_owned(), 1)]);
        let mut b2 = MappingBuilder::new();
        b2.bundle("K2", [("Y".to_owned(), 1), ("X".to_owned(), 1)]);
        b2.bundle("K1", [("X".to_owned(), 1)]);
        let (p1, p2) = (Partitioner::new(&b1.build(), 1024), Partitioner::new(&b2.build(), 1024));
        for s in ["K1", "K2", "X", "Y"] {
            assert_eq!(p1.of_target(s), p2.of_target(s));
        }
    }
}
