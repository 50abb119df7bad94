//! `simulate`: a staging dry run on synthetic traffic with injected faults.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{GlobalArgs, Output, exit};
use crate::sim::faults::FaultSpec;
use crate::sim::{SimConfig, SimRun, remove_workspace, report, run, temp_workspace};

/// Output format of `simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimFormat {
    Human,
    Json,
}

/// Arguments of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Catalogue size: source SKUs (with renames, case-to-unit factors, merges, bundles, safety stock).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub skus: usize,
    /// Orders per day on average (each with 1 to 3 lines).
    #[arg(long, default_value_t = 500.0, value_name = "N")]
    pub orders_per_day: f64,
    /// Orders per day at the busiest hour's rate (default: 3 times the average).
    #[arg(long, value_name = "N")]
    pub peak_per_day: Option<f64>,
    /// Hours of traffic, starting with the cutover's freeze.
    #[arg(long, default_value_t = 48, value_name = "H")]
    pub hours: u32,
    /// Faults to inject, e.g. `dup=0.1,reorder=0.1,late=0.02,stale_set=0.01,http429=0.05,http5xx=0.02,crash=apply`
    /// (`none` for none).
    #[arg(long, default_value = "dup=0.1,reorder=0.1", value_name = "LIST")]
    pub faults: String,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write report.html and report.json into this folder.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SimFormat::Human)]
    pub format: SimFormat,
    /// Minutes of freeze during the cutover (orders arriving meanwhile are queued).
    #[arg(long, default_value_t = 15, value_name = "MINUTES")]
    pub freeze_minutes: u32,
    /// Simulated minutes between two continuous-sync replays.
    #[arg(long, default_value_t = 60, value_name = "MINUTES")]
    pub sync_minutes: u32,
    /// Threshold: drifted keys / all keys (default: the playbook's 0.05%).
    #[arg(long, default_value_t = 0.0005, value_name = "RATIO")]
    pub max_drift_ratio: f64,
    /// Threshold: units of drift left once every event is delivered and replayed.
    #[arg(long, default_value_t = 0, value_name = "UNITS")]
    pub max_unresolved_drift_units: u64,
    /// Keep the workspace (plan, data, state, events.jsonl) in this folder instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn human(r: &SimRun) -> String {
    let s = &r.summary;
    let mark = |ok: bool| if ok { "pass" } else { "BREACH" };
    let th = |k: &str| s.thresholds.get(k).copied().unwrap_or(0.0);
    let faults: Vec<String> = serde_json::to_value(&s.faults)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|m| m.iter().filter(|(_, v)| v.as_u64() != Some(0)).map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!(
        "\nSimulated {} SKUs, {} h, {} orders/day (peak {}), seed {}: {} events, {} deliveries.\n",
        s.skus, s.hours, s.orders_per_day, s.peak_per_day, s.seed, s.events, s.deliveries
    ));
    out.push_str(&format!(
        "Faults injected: {}\n",
        if faults.is_empty() { "none".to_string() } else { faults.join(", ") }
    ));
    out.push_str(&format!("Cutover: {}; {} continuous-sync round(s).\n", s.cutover, s.sync_rounds));
    out.push_str("\nLedger check (kept apart from the code under test):\n");
    let rows = [
        (
            "drift ratio",
            format!("{:.6}", s.drift_ratio),
            format!("max {}", th("max_drift_ratio")),
            s.drift_ratio <= th("max_drift_ratio"),
        ),
        (
            "unresolved drift units",
            s.unresolved_drift_units.to_string(),
            format!("max {}", th("max_unresolved_drift_units")),
            s.unresolved_drift_units as f64 <= th("max_unresolved_drift_units"),
        ),
        ("events lost", s.events_lost.to_string(), "max 0".into(), s.events_lost == 0),
        ("events applied twice", s.events_applied_twice.to_string(), "max 0".into(), s.events_applied_twice == 0),
        ("unforced oversells", s.unforced_oversells.to_string(), "max 0".into(), s.unforced_oversells == 0),
        ("oversells (forced by data)", format!("{} ({} units)", s.oversells, s.oversold_units), String::new(), true),
        ("backlog at the end", s.backlog_at_end.to_string(), "max 0".into(), s.backlog_at_end == 0),
    ];
    for (name, v, t, ok) in rows {
        let m = if t.is_empty() { "" } else { mark(ok) };
        out.push_str(&format!("  {name:<28} {v:>14}  {t:<10} {m}\n"));
    }
    out.push_str(&format!("  {:<28} {:>14}\n", "wall time", format!("{:.2} s", s.wall_seconds)));
    if s.verdict == "pass" {
        out.push_str("\nVerdict: pass\n");
    } else {
        out.push_str(&format!("\nVerdict: FAIL\n  - {}\n", s.breaches.join("\n  - ")));
    }
    out
}

/// `simulate`.
pub fn run_simulate(args: SimulateArgs, _g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let faults = FaultSpec::parse(&args.faults).map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
    if args.skus == 0 {
        anyhow::bail!("--skus must be at least 1");
    }
    if args.hours == 0 {
        anyhow::bail!("--hours must be at least 1");
    }
    if !(args.orders_per_day.is_finite() && args.orders_per_day >= 0.0) {
        anyhow::bail!("--orders-per-day must be a number >= 0");
    }
    let peak = args.peak_per_day.unwrap_or(args.orders_per_day * 3.0);
    if !(peak.is_finite() && peak >= args.orders_per_day) {
        anyhow::bail!(
            "--peak-per-day ({peak}) must be at least --orders-per-day ({}): it is the busiest hour's rate",
            args.orders_per_day
        );
    }
    if !(0.0..=1.0).contains(&args.max_drift_ratio) {
        anyhow::bail!("--max-drift-ratio must be from 0 to 1");
    }
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (temp_workspace(args.seed), true),
    };
    let cfg = SimConfig {
        skus: args.skus,
        orders_per_day: args.orders_per_day,
        peak_per_day: peak,
        hours: args.hours,
        faults,
        seed: args.seed,
        freeze_minutes: args.freeze_minutes,
        sync_minutes: args.sync_minutes,
        max_drift_ratio: args.max_drift_ratio,
        max_unresolved_drift_units: args.max_unresolved_drift_units,
        dir: dir.clone(),
        write_events: !temporary,
    };
    let mut note = |s: &str| out.note(s);
    let result = run(&cfg, &mut note);
    if temporary {
        remove_workspace(&dir);
    }
    let sim = result?;
    if let Some(rdir) = &args.report {
        report::write(&sim, rdir)?;
        out.note(&format!("Report: {}", rdir.join("report.html").display()));
    }
    match args.format {
        SimFormat::Json => {
            out.result(&(serde_json::to_string_pretty(&sim.summary)? + "\n"));
        }
        SimFormat::Human => {
            out.result(&human(&sim));
            if !temporary {
                out.note(&format!("Workspace kept in {} (plan.yaml, data, .stockshift/).", dir.display()));
            }
        }
    }
    Ok(if sim.summary.verdict == "pass" { exit::OK } else { exit::PARTIAL })
}
