//! Throttle benchmark: `stockshift apply` of N writes to the fake Shopify
//! (tests/fakes/shopify.rs) with a cost bucket of B points restoring R points/s.
//!
//!   cargo run --release --example shopify_throttle -- --bin target/release/stockshift \
//!       [--writes 100000] [--bucket 1000] [--rate 100] [--dir target/bench-shopify]
//!
//! The shop holds N SKUs at one location at 0; the source sets each to 1..500,
//! so every key is one write: N / 250 `inventorySetQuantities` mutations of 10
//! points each. The bucket starts full, so the least time it allows is
//! (points − B) / R. The plan is made first (a bulk read), the bucket refilled,
//! then the saved plan applied by the real binary and timed. Prints the minimum
//! time, the wall time, their ratio and the THROTTLED answers after the first,
//! and a `RESULT` line; exits 1 when the target does not match the plan or a
//! figure misses its goal (ratio ≤ 1.10, no THROTTLED after the first).

#[path = "../tests/fakes/shopify.rs"]
mod fake;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const TOKEN_ENV: &str = "STOCKSHIFT_BENCH_SHOPIFY_TOKEN";
const LOCATION: &str = "Main warehouse";

struct Args {
    bin: PathBuf,
    writes: usize,
    bucket: f64,
    rate: f64,
    dir: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        bin: PathBuf::from("target/release/stockshift"),
        writes: 100_000,
        bucket: 1000.0,
        rate: 100.0,
        dir: PathBuf::from("target/bench-shopify"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--bin" => a.bin = PathBuf::from(value),
            "--writes" => a.writes = num(&value)? as usize,
            "--bucket" => a.bucket = num(&value)?,
            "--rate" => a.rate = num(&value)?,
            "--dir" => a.dir = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn stockshift(a: &Args, token: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(&a.bin)
        .current_dir(&a.dir)
        .env(TOKEN_ENV, token)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", a.bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("stockshift {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("shopify_throttle: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<bool, String> {
    let a = args()?;
    let bin = std::fs::canonicalize(&a.bin).map_err(|e| format!("{}: {e}", a.bin.display()))?;
    let a = Args { bin, ..a };
    let _ = std::fs::remove_dir_all(&a.dir);
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;

    let shop = fake::FakeShopify::with_config(fake::Config {
        bucket: a.bucket,
        restore_rate: a.rate,
        ..fake::Config::default()
    });
    let sku = |i: usize| format!("SKU-{i:07}");
    let want = |i: usize| (i % 500 + 1) as i64;
    let rows: Vec<(String, String, i64)> = (0..a.writes).map(|i| (sku(i), LOCATION.to_owned(), 0)).collect();
    shop.seed(&rows);
    let mut src = String::with_capacity(a.writes * 24);
    src.push_str("sku,location,qty\n");
    for i in 0..a.writes {
        src.push_str(&format!("{},{LOCATION},{}\n", sku(i), want(i)));
    }
    std::fs::write(a.dir.join("source.csv"), src).map_err(|e| e.to_string())?;
    std::fs::write(
        a.dir.join("plan.yaml"),
        format!(
            "version: 1\nname: bench-shopify-{n}\nsource: {{ provider: csv, path: source.csv }}\n\
             target: {{ provider: shopify, shop: bench-shop, token_env: {TOKEN_ENV}, endpoint: \"{url}\" }}\n\
             limits: {{ max_writes: {max}, max_zeroed: {max} }}\n",
            n = a.writes,
            url = shop.endpoint(),
            max = a.writes * 2,
        ),
    )
    .map_err(|e| e.to_string())?;

    let token = shop.token();
    let t = Instant::now();
    stockshift(&a, &token, &["plan", "plan.yaml", "--out", "bench.plan.json"])?;
    let plan_s = t.elapsed().as_secs_f64();

    shop.fill_bucket();
    shop.reset_counters();
    let t = Instant::now();
    stockshift(&a, &token, &["apply", "bench.plan.json"])?;
    let wall = t.elapsed().as_secs_f64();
    let c = shop.counters();

    let contents = shop.contents();
    let wrong = (0..a.writes).filter(|&i| contents.get(&(sku(i), LOCATION.to_owned())) != Some(&want(i))).count();
    if wrong > 0 {
        eprintln!("shopify_throttle: {wrong} of {} keys do not hold the planned value", a.writes);
        return Ok(false);
    }
    let mutations = a.writes.div_ceil(250);
    let write_points = mutations as f64 * 10.0;
    let min = ((write_points - a.bucket).max(0.0)) / a.rate;
    let ratio = if min > 0.0 { wall / min } else { f64::NAN };
    let throttled_after_first = c.throttled.saturating_sub(1);
    let pass = ratio <= 1.10 && throttled_after_first == 0 && c.set_mutations as usize == mutations;

    println!();
    println!(
        "shopify throttle benchmark: {} writes, bucket {} points, restore {} points/s",
        a.writes, a.bucket, a.rate
    );
    println!("{:<44} {:>12}", "inventorySetQuantities mutations", c.set_mutations);
    println!("{:<44} {:>12}", "quantities written", c.quantities_written);
    println!("{:<44} {:>12.0}", "points the writes need (10 per mutation)", write_points);
    println!("{:<44} {:>12.0}", "points charged in all (with lookups)", c.points);
    println!("{:<44} {:>12.2}", "minimum time the bucket allows (s)", min);
    println!("{:<44} {:>12.2}", "apply wall (s)", wall);
    println!("{:<44} {:>12.3}", "ratio (goal <= 1.10)", ratio);
    println!("{:<44} {:>12}", "THROTTLED answers after the first (goal 0)", throttled_after_first);
    println!("{:<44} {:>12}", "requests during apply", c.requests);
    println!("{:<44} {:>12.2}", "plan wall, bulk read (s)", plan_s);
    println!(
        "RESULT name=shopify writes={} min_s={min:.2} wall_s={wall:.2} ratio={ratio:.3} throttled_after_first={throttled_after_first} verdict={}",
        a.writes,
        if pass { "pass" } else { "fail" }
    );
    Ok(pass)
}
