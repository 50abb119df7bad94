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
    let issues = run(&m, &[("A", "W", 1), ("A", "W", 2)], &[("B", "W", 1), ("C", "W", 1), ("B", "W", 5)]).unwrap_err();
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
    let kits: Vec<_> = d.changes.iter().filter(|c| c.bundle).map(|c| (c.location.clone(), c.before, c.after)).collect();
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
        let locs: std::collections::BTreeSet<String> =
            out.keys().filter(|(s, _)| b.components.iter().any(|(c, _)| **c == **s)).map(|(_, l)| l.clone()).collect();
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

/// Rows that exercise input problems too: blanks, duplicates, bundle rows, overflow.
fn arb_messy() -> impl Strategy<Value = (Table, Table, u8, usize, usize)> {
    let sku = prop::sample::select(vec!["A", "B", "C", "OLD", "CASE", "S1", "S2", "X", "Y", "KIT", "", "é"])
        .prop_map(String::from);
    let loc = prop::sample::select(vec!["E", "W", "loc-1", "Z", " "]).prop_map(String::from);
    let qty = prop_oneof![-3i64..40, Just(i64::MAX)];
    let row = (sku, loc, qty);
    (prop::collection::vec(row.clone(), 0..40), prop::collection::vec(row, 0..40), any::<u8>(), 0..40usize, 0..40usize)
}

fn engine_outcome(m: &Mapping, target: &Table, source: &Table, threads: usize) -> Outcome {
    let mut e = Engine::new(m);
    for (i, (s, l, q)) in target.iter().enumerate() {
        e.add_target(s, l, *q, i as u64 + 2);
    }
    for (i, (s, l, q)) in source.iter().enumerate() {
        e.add_source(s, l, *q, i as u64 + 2);
    }
    e.finish_with_threads(threads)
}

/// A reader of rows `from..to` of `rows` (lines numbered from the start of `rows`).
fn reader(rows: &Table, from: usize, to: usize) -> Reader<'_, ()> {
    Box::new(move |sink: &mut dyn crate::provider::RowSink| {
        for (i, (s, l, q)) in rows.iter().enumerate().take(to).skip(from) {
            sink.row(s, l, *q, i as u64 + 2);
        }
        Ok(crate::provider::ReadInfo { rows: (to - from) as u64, sha256: None })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Neither the number of phase 2 threads nor reading an input in parts (on
    /// several threads) changes the diff or the problems reported.
    #[test]
    fn threads_and_parts_do_not_change_the_outcome((target, source, bits, cut_t, cut_s) in arb_messy()) {
        let m = arb_mapping(bits);
        let one = engine_outcome(&m, &target, &source, 1);
        prop_assert_eq!(&one, &engine_outcome(&m, &target, &source, 3));
        let (ct, cs) = (cut_t.min(target.len()), cut_s.min(source.len()));
        let planned = plan_parallel(
            &m,
            vec![reader(&target, 0, ct), reader(&target, ct, target.len())],
            vec![reader(&source, 0, cs), reader(&source, cs, source.len())],
        )
        .unwrap();
        prop_assert_eq!(&one, &planned.outcome);
        prop_assert_eq!(planned.target.rows, target.len() as u64);
        prop_assert_eq!(planned.target.sha256, None);
    }
}

#[test]
fn read_errors_come_back_target_first() {
    let m = MappingBuilder::new().build();
    let fail = |e: &'static str| -> Reader<'static, &'static str> { Box::new(move |_| Err(e)) };
    let ok = || -> Reader<'static, &'static str> { Box::new(|_| Ok(crate::provider::ReadInfo::default())) };
    assert_eq!(plan_parallel(&m, vec![ok(), fail("t")], vec![fail("s")]).err(), Some("t"));
    assert_eq!(plan_parallel(&m, vec![ok()], vec![fail("s")]).err(), Some("s"));
}

/// Past the cap, the problems kept are the target's lowest lines, then the source's.
#[test]
fn the_issue_cap_keeps_the_lowest_lines_target_first() {
    let m = MappingBuilder::new().build();
    for (pairs, sources) in [(700u64, 600u64), (150, 900)] {
        let mut e = Engine::new(&m);
        for i in 0..pairs {
            // Duplicates are found in phase 2, blanks in phase 1: both count.
            e.add_target("A", "W", 1, 2 * i + 2);
            e.add_target("", "W", 1, 2 * i + 3);
        }
        for i in (0..sources).rev() {
            e.add_source(" ", "W", 1, i + 2);
        }
        let (issues, total) = e.finish_with_threads(2).unwrap_err();
        let target_problems = 2 * pairs - 1;
        assert_eq!(total, target_problems + sources);
        assert_eq!(issues.len(), MAX_ISSUES);
        let lines = |side| issues.iter().filter(|i| i.side == side).map(|i| i.line).collect::<Vec<u64>>();
        let kept_target = target_problems.min(MAX_ISSUES as u64);
        assert_eq!(lines(Side::Target), (3..3 + kept_target).collect::<Vec<u64>>());
        assert_eq!(lines(Side::Source), (2..2 + MAX_ISSUES as u64 - kept_target).collect::<Vec<u64>>());
        assert!(issues.windows(2).all(|w| (w[0].side, w[0].line) <= (w[1].side, w[1].line)));
    }
}
