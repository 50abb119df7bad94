//! Deterministic data generator for the `plan` benchmark (see `bench/README.md`).
//!
//! ```text
//! cargo run --release --example gen_bench_data -- --rows N --out DIR [--seed S]
//! ```
//!
//! Writes into DIR: `source.csv`, `skus.csv`, `target.csv`, `plan-csv.yaml`,
//! `plan-sqlite.yaml`, `mapping.json` (the mapping as JSON, for `bench/polars_plan.py`)
//! and, last of all, `expected.txt`. It prints the summary that `stockshift plan`
//! must report as `expected: create=X update=Y unchanged=Z`.
//!
//! This program uses std only and deliberately not the stockshift library: it is an
//! independent oracle. It applies the mapping rules of SPEC section 2 to the rows it
//! generated in the most direct way it can, then perturbs the result to make the target.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Bump whenever the generated data changes for the same (rows, seed):
/// `bench/plan.sh` regenerates a data directory stamped with another version.
const GENERATOR_VERSION: u32 = 1;

/// (source location, target location). Every source row uses one of these.
const LOCATIONS: [(&str, &str); 4] =
    [("WH-EAST", "loc-east"), ("WH-WEST", "loc-west"), ("WH-NORTH", "loc-north"), ("STORE-1", "loc-store1")];

const BUNDLES: usize = 20;
const SAFETY_STOCK_ENTRIES: usize = 50;
const MAX_QTY: u64 = 500;

// Rates, in parts per million.
const PPM_MISSING_SOURCE_ROW: u64 = 10_000; // a (sku, location) pair without a source row
const PPM_TARGET_UPDATE: u64 = 8_000; // a desired key whose target holds another qty
const PPM_TARGET_MISSING: u64 = 1_000; // a desired key absent from the target (create)
const PPM_TARGET_ORPHAN: u64 = 1_000; // an extra target key, absent from the source

/// splitmix64: small, fast, and good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance_ppm(&mut self, ppm: u64) -> bool {
        self.below(1_000_000) < ppm
    }
}

struct Args {
    rows: u64,
    out: PathBuf,
    seed: u64,
}

const USAGE: &str = "usage: gen_bench_data --rows N --out DIR [--seed S]\n       gen_bench_data --version";

fn parse_args() -> Result<Option<Args>, String> {
    let mut rows = None;
    let mut out = None;
    let mut seed = 42u64;
    let mut it = std::env::args().skip(1);
    let num = |flag: &str, v: Option<String>| -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        v.replace('_', "").parse().map_err(|_| format!("{flag}: not a non-negative integer: {v:?}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rows" => rows = Some(num("--rows", it.next())?),
            "--seed" => seed = num("--seed", it.next())?,
            "--out" => out = Some(PathBuf::from(it.next().ok_or("--out needs a value")?)),
            "--version" => {
                println!("gen_bench_data {GENERATOR_VERSION}");
                return Ok(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let rows = rows.ok_or_else(|| format!("--rows is required\n{USAGE}"))?;
    if rows < 100 {
        return Err("--rows must be at least 100".into());
    }
    let out = out.ok_or_else(|| format!("--out is required\n{USAGE}"))?;
    Ok(Some(Args { rows, out, seed }))
}

/// One source SKU with its quantity at each source location (`None`: no row there).
struct SourceSku {
    name: String,
    qty: [Option<u32>; 4],
}

/// One line of skus.csv.
struct SkuMapping {
    old: String,
    new: String,
    factor: i64,
}

struct Bundle {
    name: String,
    components: Vec<(String, i64)>,
}

/// The desired target state: interned target SKU names, and per SKU the quantity at
/// each target location (index into `LOCATIONS`), -1 meaning "no row".
struct Desired {
    ids: HashMap<String, usize>,
    names: Vec<String>,
    qty: Vec<[i64; 4]>,
}

impl Desired {
    fn intern(&mut self, name: &str) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len();
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        self.qty.push([-1; 4]);
        id
    }
}

/// Generates exactly `rows` source rows and the SKU mapping entries.
fn generate_source(rows: u64, rng: &mut Rng) -> (Vec<SourceSku>, Vec<SkuMapping>) {
    let mut skus = Vec::with_capacity((rows / 4 + 16) as usize);
    let mut mappings = Vec::new();
    let mut emitted = 0u64;
    let mut i = 0u64;
    while emitted < rows {
        i += 1;
        // (source name, Some((target name, factor)) when skus.csv maps it)
        let olds: Vec<(String, Option<(String, i64)>)> = match rng.below(1000) {
            // ~5% renamed: OLD-x -> SKU-x
            0..50 => vec![(format!("OLD-{i:07}"), Some((format!("SKU-{i:07}"), 1)))],
            // ~2% cases: CASE-x -> EACH-x, factor 12
            50..70 => vec![(format!("CASE-{i:07}"), Some((format!("EACH-{i:07}"), 12)))],
            // ~0.5% merges: MRGA-x and MRGB-x (factor 2) both -> MRG-x. No other source
            // SKU is named MRG-x and no other mapping targets it, so the only rows that
            // meet at (MRG-x, location) are these two.
            70..75 => vec![
                (format!("MRGA-{i:07}"), Some((format!("MRG-{i:07}"), 1))),
                (format!("MRGB-{i:07}"), Some((format!("MRG-{i:07}"), 2))),
            ],
            // the rest pass through unmapped
            _ => vec![(format!("SKU-{i:07}"), None)],
        };
        for (name, mapping) in olds {
            let mut qty = [None; 4];
            for q in &mut qty {
                if emitted < rows && !rng.chance_ppm(PPM_MISSING_SOURCE_ROW) {
                    *q = Some(rng.below(MAX_QTY + 1) as u32);
                    emitted += 1;
                }
            }
            if qty.iter().all(Option::is_none) {
                continue; // a SKU without rows: leave it out entirely
            }
            if let Some((new, factor)) = mapping {
                mappings.push(SkuMapping { old: name.clone(), new, factor });
            }
            skus.push(SourceSku { name, qty });
        }
    }
    (skus, mappings)
}

/// Steps 1-3 of the mapping: rename (+factor), location map, merge by sum.
fn map_and_merge(source: &[SourceSku], mappings: &[SkuMapping]) -> Desired {
    let mut sku_map: HashMap<&str, (&str, i64)> = HashMap::with_capacity(mappings.len());
    for m in mappings {
        let prev = sku_map.insert(m.old.as_str(), (m.new.as_str(), m.factor));
        assert!(prev.is_none(), "old SKU {} mapped twice", m.old);
    }
    let loc_map: HashMap<&str, &str> = LOCATIONS.iter().copied().collect();
    let target_loc_index: HashMap<&str, usize> = LOCATIONS.iter().enumerate().map(|(i, &(_, t))| (t, i)).collect();

    let mut seen = HashSet::with_capacity(source.len());
    let mut d = Desired {
        ids: HashMap::with_capacity(source.len()),
        names: Vec::with_capacity(source.len()),
        qty: Vec::with_capacity(source.len()),
    };
    for s in source {
        assert!(seen.insert(s.name.as_str()), "duplicate source SKU {}", s.name);
        // step 1: SKU (unmapped_skus: passthrough)
        let (new_sku, factor) = sku_map.get(s.name.as_str()).copied().unwrap_or((&s.name, 1));
        let id = d.intern(new_sku);
        for (l, q) in s.qty.iter().enumerate() {
            let Some(q) = q else { continue };
            // step 2: location (every source location is mapped)
            let tl = target_loc_index[loc_map[LOCATIONS[l].0]];
            // step 3: merge by sum
            let cell = &mut d.qty[id][tl];
            if *cell < 0 {
                *cell = 0;
            }
            *cell += i64::from(*q) * factor;
        }
    }
    d
}

/// Picks `n` distinct ids in 0..len, in the order drawn.
fn distinct_ids(rng: &mut Rng, len: usize, n: usize, taken: &mut HashSet<usize>) -> Vec<usize> {
    let n = n.min(len.saturating_sub(taken.len()));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let id = rng.below(len as u64) as usize;
        if taken.insert(id) {
            out.push(id);
        }
    }
    out
}

/// Chooses the safety stock entries and the bundles among the mapped SKUs.
///
/// Uniform picks would nearly always land on plain pass-through SKUs, so some picks
/// are steered: every bundle has one component that is the target of a skus.csv entry
/// (in turn a case with factor 12, a merge, a rename), every fourth bundle one
/// component that lacks a row at some location, and safety stock lands on bundle
/// components and on mapped targets too, so the order of steps 1-5 matters.
fn choose_mapping_extras(d: &Desired, mappings: &[SkuMapping], rng: &mut Rng) -> (Vec<(String, i64)>, Vec<Bundle>) {
    let len = d.names.len();
    let mut seen = HashSet::new();
    let mapped_targets: Vec<usize> = mappings.iter().map(|m| d.ids[&m.new]).filter(|&id| seen.insert(id)).collect();
    let by_prefix = |prefix: &str| -> Vec<usize> {
        mapped_targets.iter().copied().filter(|&id| d.names[id].starts_with(prefix)).collect()
    };
    let kinds = [by_prefix("EACH-"), by_prefix("MRG-"), by_prefix("SKU-")];
    let partial: Vec<usize> = (0..len).filter(|&id| d.qty[id].contains(&-1)).collect();
    let pick = |rng: &mut Rng, from: &[usize]| -> Option<usize> {
        (!from.is_empty()).then(|| from[rng.below(from.len() as u64) as usize])
    };

    // Bundles: 2 or 3 distinct components each, units 1..=4.
    let mut bundles = Vec::new();
    let mut component_ids = Vec::new();
    for b in 1..=BUNDLES {
        let n = 2 + rng.below(2) as usize;
        let mut taken = HashSet::new();
        let mut ids = Vec::new();
        let mapped = pick(rng, &kinds[b % 3]).or_else(|| pick(rng, &mapped_targets));
        let steered = [mapped, pick(rng, &partial).filter(|_| b % 4 == 0)];
        for id in steered.into_iter().flatten() {
            if taken.insert(id) {
                ids.push(id);
            }
        }
        let more = n.saturating_sub(ids.len());
        ids.extend(distinct_ids(rng, len, more, &mut taken));
        let components = ids.iter().map(|&id| (d.names[id].clone(), 1 + rng.below(4) as i64)).collect();
        component_ids.extend(ids);
        bundles.push(Bundle { name: format!("KIT-{b:04}"), components });
    }

    // Safety stock, values 1..=25: a fifth of the entries on bundle components, a
    // fifth on mapped targets, the rest anywhere.
    let total = SAFETY_STOCK_ENTRIES.min(len / 2);
    let mut taken = HashSet::new();
    let mut ss_ids = Vec::new();
    for &id in component_ids.iter().take(total / 5) {
        if taken.insert(id) {
            ss_ids.push(id);
        }
    }
    for _ in 0..total / 5 {
        if let Some(id) = pick(rng, &mapped_targets)
            && taken.insert(id)
        {
            ss_ids.push(id);
        }
    }
    let rest = total.saturating_sub(ss_ids.len());
    ss_ids.extend(distinct_ids(rng, len, rest, &mut taken));
    let safety = ss_ids.into_iter().map(|id| (d.names[id].clone(), 1 + rng.below(25) as i64)).collect();
    (safety, bundles)
}

/// Steps 4 and 5: safety stock, then bundles.
fn apply_safety_and_bundles(d: &mut Desired, safety: &[(String, i64)], bundles: &[Bundle]) {
    // step 4: qty = max(0, qty - safety_stock(sku)); default 0 changes nothing
    for (sku, ss) in safety {
        let Some(&id) = d.ids.get(sku) else { continue };
        for q in d.qty[id].iter_mut().filter(|q| **q >= 0) {
            *q = (*q - ss).max(0);
        }
    }
    // step 5: min over components of floor(qty / units), a missing component is 0,
    // with a row wherever at least one component has one.
    let mut bundle_rows = Vec::new();
    for b in bundles {
        assert!(!d.ids.contains_key(&b.name), "bundle {} also has source rows", b.name);
        let mut row = [-1i64; 4];
        for (l, cell) in row.iter_mut().enumerate() {
            let comps: Vec<Option<i64>> =
                b.components.iter().map(|(c, _)| d.ids.get(c).map(|&id| d.qty[id][l]).filter(|&q| q >= 0)).collect();
            if comps.iter().any(Option::is_some) {
                *cell = comps
                    .iter()
                    .zip(&b.components)
                    .map(|(q, (_, units))| q.unwrap_or(0) / units)
                    .min()
                    .expect("a bundle has components");
            }
        }
        bundle_rows.push((b.name.clone(), row));
    }
    for (name, row) in bundle_rows {
        let id = d.intern(&name);
        d.qty[id] = row;
    }
}

#[derive(Default)]
struct Counts {
    desired_keys: u64,
    create: u64,
    update: u64,
    unchanged: u64,
    orphans: u64,
}

/// Step 6 in reverse: writes a target that differs from the desired state in ~1% of
/// the keys, and counts what `plan` must find.
fn write_target(path: &Path, d: &Desired, rng: &mut Rng) -> io::Result<Counts> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(w, "sku,location,qty")?;
    let mut c = Counts::default();
    for (name, row) in d.names.iter().zip(&d.qty) {
        for (l, &q) in row.iter().enumerate() {
            if q < 0 {
                continue;
            }
            c.desired_keys += 1;
            let loc = LOCATIONS[l].1;
            let r = rng.below(1_000_000);
            if r < PPM_TARGET_UPDATE {
                let mut other = rng.below(MAX_QTY + 1) as i64;
                if other == q {
                    other = q + 1;
                }
                writeln!(w, "{name},{loc},{other}")?;
                c.update += 1;
            } else if r < PPM_TARGET_UPDATE + PPM_TARGET_MISSING {
                c.create += 1;
            } else {
                writeln!(w, "{name},{loc},{q}")?;
                c.unchanged += 1;
            }
            if rng.chance_ppm(PPM_TARGET_ORPHAN) {
                c.orphans += 1;
                let loc = LOCATIONS[rng.below(4) as usize].1;
                let qty = rng.below(MAX_QTY + 1);
                writeln!(w, "GONE-{:07},{loc},{qty}", c.orphans)?;
            }
        }
    }
    w.flush()?;
    Ok(c)
}

fn write_source(path: &Path, source: &[SourceSku]) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(w, "sku,location,qty")?;
    for s in source {
        for (l, q) in s.qty.iter().enumerate() {
            if let Some(q) = q {
                writeln!(w, "{},{},{q}", s.name, LOCATIONS[l].0)?;
            }
        }
    }
    w.flush()
}

fn write_skus(path: &Path, mappings: &[SkuMapping]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "old_sku,new_sku,factor")?;
    for m in mappings {
        writeln!(w, "{},{},{}", m.old, m.new, m.factor)?;
    }
    w.flush()
}

fn write_plan(path: &Path, args: &Args, target: &str, safety: &[(String, i64)], bundles: &[Bundle]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "# generated by examples/gen_bench_data.rs (generator v{GENERATOR_VERSION}, seed {})", args.seed)?;
    writeln!(w, "version: 1")?;
    writeln!(w, "name: bench-{}", args.rows)?;
    writeln!(w, "source: {{ provider: csv, path: source.csv }}")?;
    writeln!(w, "target: {target}")?;
    writeln!(w, "mapping:")?;
    writeln!(w, "  skus: {{ file: skus.csv }}")?;
    writeln!(w, "  unmapped_skus: passthrough")?;
    let locs: Vec<String> = LOCATIONS.iter().map(|(s, t)| format!("{s}: {t}")).collect();
    writeln!(w, "  locations: {{ {} }}", locs.join(", "))?;
    writeln!(w, "  bundles:")?;
    for b in bundles {
        let comps: Vec<String> = b.components.iter().map(|(c, u)| format!("{c}: {u}")).collect();
        writeln!(w, "    {}: {{ components: {{ {} }} }}", b.name, comps.join(", "))?;
    }
    writeln!(w, "  safety_stock:")?;
    writeln!(w, "    default: 0")?;
    writeln!(w, "    per_sku:")?;
    for (sku, ss) in safety {
        writeln!(w, "      {sku}: {ss}")?;
    }
    writeln!(w, "  orphans: ignore")?;
    writeln!(w, "limits: {{ max_writes: 100000000, max_zeroed: 100000000 }}")?;
    w.flush()
}

/// The same mapping as the plans, as JSON (all names are plain ASCII: no escaping).
fn write_mapping_json(path: &Path, args: &Args, safety: &[(String, i64)], bundles: &[Bundle]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "{{")?;
    writeln!(w, "  \"generator_version\": {GENERATOR_VERSION},")?;
    writeln!(w, "  \"rows\": {},", args.rows)?;
    writeln!(w, "  \"seed\": {},", args.seed)?;
    writeln!(w, "  \"unmapped_skus\": \"passthrough\",")?;
    writeln!(w, "  \"orphans\": \"ignore\",")?;
    let locs: Vec<String> = LOCATIONS.iter().map(|(s, t)| format!("\"{s}\": \"{t}\"")).collect();
    writeln!(w, "  \"locations\": {{{}}},", locs.join(", "))?;
    writeln!(w, "  \"bundles\": {{")?;
    for (i, b) in bundles.iter().enumerate() {
        let comps: Vec<String> = b.components.iter().map(|(c, u)| format!("\"{c}\": {u}")).collect();
        let comma = if i + 1 < bundles.len() { "," } else { "" };
        writeln!(w, "    \"{}\": {{{}}}{comma}", b.name, comps.join(", "))?;
    }
    writeln!(w, "  }},")?;
    let ss: Vec<String> = safety.iter().map(|(s, q)| format!("\"{s}\": {q}")).collect();
    writeln!(w, "  \"safety_stock\": {{\"default\": 0, \"per_sku\": {{{}}}}}", ss.join(", "))?;
    writeln!(w, "}}")?;
    w.flush()
}

fn run(args: &Args) -> io::Result<()> {
    let t0 = Instant::now();
    fs::create_dir_all(&args.out)?;
    let expected_path = args.out.join("expected.txt");
    // Written last: its presence marks a complete data directory.
    if expected_path.exists() {
        fs::remove_file(&expected_path)?;
    }

    let mut rng = Rng::new(args.seed, 1);
    let (source, mappings) = generate_source(args.rows, &mut rng);
    write_source(&args.out.join("source.csv"), &source)?;
    write_skus(&args.out.join("skus.csv"), &mappings)?;

    let mut desired = map_and_merge(&source, &mappings);
    let source_skus = source.len();
    let mapped_skus = desired.names.len();
    drop(source);
    let (safety, bundles) = choose_mapping_extras(&desired, &mappings, &mut Rng::new(args.seed, 2));
    apply_safety_and_bundles(&mut desired, &safety, &bundles);

    let counts = write_target(&args.out.join("target.csv"), &desired, &mut Rng::new(args.seed, 3))?;
    write_plan(&args.out.join("plan-csv.yaml"), args, "{ provider: csv, path: target.csv }", &safety, &bundles)?;
    write_plan(&args.out.join("plan-sqlite.yaml"), args, "{ provider: sqlite, path: target.db }", &safety, &bundles)?;
    write_mapping_json(&args.out.join("mapping.json"), args, &safety, &bundles)?;

    let expected =
        format!("expected: create={} update={} unchanged={}", counts.create, counts.update, counts.unchanged);
    let stats = format!(
        "rows={} seed={} generator_version={GENERATOR_VERSION} source_skus={} sku_mappings={} \
         target_skus={mapped_skus} bundles={} safety_stock_entries={} desired_keys={} orphans={}",
        args.rows,
        args.seed,
        source_skus,
        mappings.len(),
        bundles.len(),
        safety.len(),
        counts.desired_keys,
        counts.orphans,
    );
    fs::write(&expected_path, format!("{stats}\n{expected}\n"))?;
    println!("{stats}");
    println!("{expected}");
    eprintln!("gen_bench_data: wrote {} in {:.2}s", args.out.display(), t0.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_bench_data: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_bench_data: {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}
