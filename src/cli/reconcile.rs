//! `reconcile PLAN.yaml [--fix] [--format human|json|markdown]`: drift and KPIs
//! against the plan's thresholds; `--fix` makes conditional corrective writes.
//!
//! Exit codes (SPEC section 1): 0 when every threshold holds (and, with `--fix`,
//! no write was refused), 3 when a threshold is breached or a fix write was
//! refused as a conflict or failed, 1 on error. Thresholds are judged on the
//! drift as found, before any fix: run `reconcile` again to confirm a fix.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use minijinja::value::{Serde, Value};
use minijinja::{Environment, context};
use serde::Serialize;

use super::{GlobalArgs, Output, checked, exit, parse_duration};
use crate::ops::apply::{ApplyError, ApplyOptions, summary_line};
use crate::ops::plan::PlanError;
use crate::ops::reconcile::{
    Cause, Drift, FixOptions, Kpi, KpiStatus, ReconcileError, ReconcileOptions, Report, percent, seconds, show_value,
};
use crate::render::Format;
use crate::render::short_sha;
use crate::render::text::{cut, printable, quoted, thousands};
use crate::state::{Actor, StateStore};

/// Arguments of `reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The plan file (YAML).
    pub plan: PathBuf,
    /// Make conditional corrective writes: set each drifted key to the mapped source
    /// value where the target still holds what was read (audited as a `fix` operation).
    #[arg(long)]
    pub fix: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// With --fix: also correct bundle keys (by default they are only reported).
    #[arg(long, requires = "fix")]
    pub include_bundles: bool,
    /// With --fix: also correct keys with queued events (by default replay moves them next).
    #[arg(long, requires = "fix")]
    pub include_queued: bool,
    /// With --fix: go beyond limits.max_writes and limits.max_zeroed.
    #[arg(long, requires = "fix")]
    pub allow_large: bool,
    /// Orders failing fulfilment / orders, from your OMS (0 to 1); compared with
    /// thresholds.max_fulfillment_failure_rate. Unknown when not given.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub fulfillment_failure_rate: Option<f64>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a rate between 0 and 1 (e.g. 0.015 for 1.5%)")),
    }
}

/// `reconcile`.
pub fn run(args: ReconcileArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = checked(&args.plan, out) else { return Ok(exit::ERROR) };
    let opts =
        ReconcileOptions { state_dir: g.state.as_deref(), fulfillment_failure_rate: args.fulfillment_failure_rate };
    let mut report = match crate::ops::reconcile::run(&plan, &opts) {
        Ok(r) => r,
        Err(ReconcileError::Plan(PlanError::Input(d))) => {
            out.diagnostics(&d.0);
            out.note(&format!(
                "Nothing was compared: fix the {} input problem(s) above and run again.",
                d.0.error_count()
            ));
            return Ok(exit::ERROR);
        }
        Err(e) => return Err(e.into()),
    };

    let mut refused = None;
    if args.fix {
        let mut apply = ApplyOptions::new(Actor::current(std::env::args().skip(1).collect::<Vec<_>>().join(" ")));
        apply.allow_large = args.allow_large;
        apply.lock_timeout = parse_duration(&g.lock_timeout)?;
        apply.progress = !g.quiet && std::io::stderr().is_terminal();
        let fix_opts = FixOptions { apply, include_bundles: args.include_bundles, include_queued: args.include_queued };
        let mut state = StateStore::open_for(&plan, g.state.as_deref())?;
        match crate::ops::reconcile::fix(&plan, &report, &mut state, &fix_opts) {
            Ok(f) => report.fix = Some(f),
            Err(e @ (ApplyError::TooLarge { .. } | ApplyError::Lock(_))) => refused = Some(e),
            Err(e) => return Err(e.into()),
        }
    }

    let text = match args.format {
        Format::Human => render_human(&report, out.color()),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&report.to_json())?),
        Format::Markdown => render_markdown(&report),
    };
    out.result(&text);
    if let Some(e) = refused {
        out.error(&anyhow::Error::new(e));
        out.note("Nothing was written. The drift report above is complete.");
        return Ok(exit::ERROR);
    }

    let mut code = if report.breaches.is_empty() { exit::OK } else { exit::PARTIAL };
    if let Some(f) = &report.fix {
        code = code.max(fix_outcome(f, args.format, out));
    }
    Ok(code)
}

/// Prints what the fix did; returns its exit code.
fn fix_outcome(f: &crate::ops::reconcile::FixReport, format: Format, out: &Output) -> u8 {
    if let Some(l) = &f.took_over_lock {
        out.note(&format!(
            "Took over the lock {} of process {} on {}, which is no longer running.",
            l.id, l.pid, l.host
        ));
    }
    super::apply::print_refusals(out, &f.conflict_list, &f.failure_list, "", f.op_id.as_deref());
    if f.skipped_bundles > 0 {
        out.note(&format!(
            "Left {} drifted bundle key(s) alone: a bundle is derived from its components; fix those, or pass --include-bundles.",
            f.skipped_bundles
        ));
    }
    if f.skipped_queued > 0 {
        out.note(&format!(
            "Left {} drifted key(s) with queued events alone: `stockshift replay` moves them next; or pass --include-queued.",
            f.skipped_queued
        ));
    }
    let line = format!("{}\n", summary_line("Fix", &f.counts()));
    if format == Format::Human {
        out.result(&line)
    } else {
        out.note(line.trim_end())
    }
    if f.conflicts + f.failed > 0 {
        out.note("Conflicting keys changed in the target since they were read; nothing was overwritten. Run `stockshift reconcile` again to see them.");
        exit::PARTIAL
    } else {
        exit::OK
    }
}

// ---------------------------------------------------------------- human

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";

struct Paint(bool);

impl Paint {
    fn paint(&self, style: &str, text: &str) -> String {
        if self.0 && !text.is_empty() { format!("{style}{text}{RESET}") } else { text.to_string() }
    }
}

/// Why a key drifted, for people.
fn cause_text(d: &Drift) -> String {
    match (d.cause, d.last_written) {
        (Cause::TargetChanged, Some(w)) => format!("changed outside stockshift (last written {w})"),
        (Cause::TargetChanged, None) => "changed outside stockshift".into(),
        (Cause::SourceMoved, _) => "source moved (the target holds what stockshift wrote)".into(),
        (Cause::NeverWritten, _) => "never written by stockshift".into(),
    }
}

fn tags(d: &Drift) -> Vec<&'static str> {
    let mut t = Vec::new();
    if d.bundle {
        t.push("[bundle]");
    }
    if d.orphan {
        t.push("[orphan: absent from source]");
    }
    if d.queued {
        t.push("[queued events]");
    }
    t
}

/// The value cell: `= 36` when absent from the target, else `30 -> 36 (+6)`.
fn value_cell(d: &Drift) -> String {
    match d.target {
        None => format!("= {}", d.source),
        Some(t) => format!("{t} -> {} ({:+})", d.source, d.diff),
    }
}

/// The human-readable report: drift grouped by location, thresholds, summary.
pub fn render_human(r: &Report, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let _ = write!(out, "stockshift reconcile {}", quoted(&r.plan_name));
    let sha = short_sha(&r.config_sha256);
    if !sha.is_empty() {
        let _ = write!(out, " (config sha256 {})", printable(sha));
    }
    out.push_str("\n\n");

    if r.drift.is_empty() {
        let _ = writeln!(
            out,
            "No drift. The target matches the mapped source{}.\n",
            if r.tolerance > 0 { format!(" within {} unit(s) per key", r.tolerance) } else { String::new() }
        );
    } else {
        out.push_str("Drifted keys are shown with these symbols:\n");
        if r.drift.iter().any(|d| d.target.is_some()) {
            let _ =
                writeln!(out, "  {} the target differs: target -> mapped source (difference)", p.paint(YELLOW, "~"));
        }
        if r.drift.iter().any(|d| d.target.is_none()) {
            let _ = writeln!(out, "  {} absent from the target: = mapped source", p.paint(GREEN, "+"));
        }
        out.push('\n');
        for group in r.drift.chunk_by(|a, b| a.location == b.location) {
            let _ = writeln!(out, "Location {}:", quoted(&group[0].location));
            let skus: Vec<Cow<'_, str>> = group.iter().map(|d| printable(&d.sku)).collect();
            let cells: Vec<String> = group.iter().map(value_cell).collect();
            let sw = skus.iter().map(|s| s.chars().count()).max().unwrap_or(0);
            let vw = cells.iter().map(|c| c.chars().count()).max().unwrap_or(0);
            for ((d, sku), cell) in group.iter().zip(&skus).zip(&cells) {
                let sym = if d.target.is_none() { p.paint(GREEN, "+") } else { p.paint(YELLOW, "~") };
                let mut why = tags(d).join(" ");
                if !why.is_empty() {
                    why.push(' ');
                }
                why.push_str(&p.paint(DIM, &cause_text(d)));
                let _ = writeln!(out, "  {sym} {sku:<sw$}  {cell:<vw$}   {why}");
            }
            out.push('\n');
        }
    }

    for w in &r.warnings {
        let _ = writeln!(out, "{} {}", p.paint(YELLOW, &p.paint(BOLD, "Warning:")), printable(w));
    }
    if !r.warnings.is_empty() {
        out.push('\n');
    }

    out.push_str("Thresholds:\n");
    // The time per key is shown on its own line below: it varies from run to run.
    let kpis: Vec<&Kpi> = r.kpis.iter().filter(|k| k.status != KpiStatus::Info).collect();
    let rows: Vec<[String; 4]> = kpis
        .iter()
        .map(|k| {
            let threshold = if k.threshold.is_null() {
                "-".to_string()
            } else {
                format!("max {}", show_value(&k.threshold, k.unit))
            };
            [k.label.to_string(), show_value(&k.value, k.unit), threshold, k.status.as_str().to_string()]
        })
        .collect();
    let w: Vec<usize> = (0..4).map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    for (k, row) in kpis.iter().zip(&rows) {
        let status = match k.status {
            KpiStatus::Breach => p.paint(RED, &p.paint(BOLD, &format!("{:<w$}", "BREACH", w = w[3]))),
            KpiStatus::Pass => p.paint(GREEN, &format!("{:<w$}", row[3], w = w[3])),
            _ => format!("{:<w$}", row[3], w = w[3]),
        };
        let note = k.note.as_deref().map(|n| p.paint(DIM, &printable(n))).unwrap_or_default();
        let line = format!(
            "  {:<w0$}  {:>w1$}  {:<w2$}  {status}  {note}",
            row[0],
            row[1],
            row[2],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    for n in &r.notes {
        let _ = writeln!(out, "Note: {}", printable(n));
    }
    if !r.notes.is_empty() {
        out.push('\n');
    }

    let _ = writeln!(out, "{}\n", time_line(r));
    let c = &r.causes;
    let mut summary = format!(
        "Reconcile: {} keys, {} drifted ({} bundle; {} target_changed, {} source_moved, {} never_written), drift ratio {}, max abs drift {}",
        r.keys,
        r.drifted,
        r.bundle_drifted,
        c.target_changed,
        c.source_moved,
        c.never_written,
        percent(r.drift_ratio),
        r.max_abs_drift
    );
    if r.breaches.is_empty() {
        summary.push_str("; no threshold breached.");
    } else {
        let names: Vec<&str> = r.breaches.iter().map(|b| b.setting).collect();
        let _ = write!(summary, "; {} threshold(s) breached: {}.", r.breaches.len(), names.join(", "));
    }
    out.push_str(&p.paint(BOLD, &summary));
    out.push('\n');
    out
}

/// `Reconcile time: 6.30 ms for 13 keys (484.62 µs per key).`
fn time_line(r: &Report) -> String {
    let per_key = r.seconds_per_key.map_or_else(|| "no keys".to_string(), |s| format!("{} per key", seconds(s)));
    format!("Reconcile time: {} for {} keys ({per_key}).", seconds(r.seconds), thousands(r.keys as i64))
}

// ---------------------------------------------------------------- markdown

/// The output is always shorter than this many bytes (GitHub's comment limit is
/// 65,536 characters).
pub const MAX_LEN: usize = 65_000;
/// A drift table row has at least this many bytes (its 8 `|`).
const MIN_ROW_LEN: usize = 8;
/// At most this many warnings and notes are listed.
const MAX_TEXTS: usize = 30;

const TEMPLATE_NAME: &str = "reconcile.md.j2";
const TEMPLATE: &str = include_str!("../../templates/reconcile.md.j2");

#[derive(Serialize)]
struct MdRow<'a> {
    location: &'a str,
    sku: &'a str,
    target: Option<i64>,
    source: i64,
    diff: i64,
    cause: &'static str,
    note: String,
}

#[derive(Serialize)]
struct MdKpi {
    label: &'static str,
    value: String,
    threshold: String,
    status: &'static str,
    breach: bool,
    note: String,
}

fn md_kpi(k: &Kpi) -> MdKpi {
    MdKpi {
        label: k.label,
        value: show_value(&k.value, k.unit),
        threshold: if k.threshold.is_null() { "—".into() } else { show_value(&k.threshold, k.unit) },
        status: k.status.as_str(),
        breach: k.status == KpiStatus::Breach,
        note: cut(k.note.as_deref().unwrap_or_default()),
    }
}

/// The pull-request comment: summary, thresholds, the drifted keys that fit under
/// [`MAX_LEN`] (with a notice when not all do), warnings, notes and the fix.
pub fn render_markdown(r: &Report) -> String {
    let env = environment();
    let template = env.get_template(TEMPLATE_NAME).expect("the built-in template is valid");
    let total = r.drift.len();
    let fix = r.fix.as_ref().map(|f| {
        context! {
            line => summary_line("Fix", &f.counts()),
            op_id => f.op_id.clone().unwrap_or_default(),
            skipped_bundles => f.skipped_bundles,
            skipped_queued => f.skipped_queued,
        }
    });
    let base = context! {
        name => cut(&r.plan_name),
        config_sha => short_sha(&r.config_sha256),
        keys => r.keys,
        drifted => r.drifted,
        bundle_drifted => r.bundle_drifted,
        drift_ratio => percent(r.drift_ratio),
        max_abs_drift => r.max_abs_drift,
        tolerance => r.tolerance,
        causes => Value::from(Serde(r.causes)),
        breaches => r.breaches.iter().map(|b| cut(&b.message)).collect::<Vec<_>>(),
        kpis => Value::from(Serde(r.kpis.iter().filter(|k| k.status != KpiStatus::Info).map(md_kpi).collect::<Vec<_>>())),
        time => time_line(r),
        total,
        warnings => r.warnings.iter().take(MAX_TEXTS).map(|w| cut(w)).collect::<Vec<_>>(),
        hidden_warnings => r.warnings.len().saturating_sub(MAX_TEXTS),
        notes => r.notes.iter().take(MAX_TEXTS).map(|n| cut(n)).collect::<Vec<_>>(),
        fix,
    };
    let rows: Vec<Value> = r
        .drift
        .iter()
        .take(MAX_LEN / MIN_ROW_LEN + 1)
        .map(|d| {
            let mut note: Vec<String> = tags(d).iter().map(|t| t.trim_matches(['[', ']']).to_string()).collect();
            if let (Cause::TargetChanged, Some(w)) = (d.cause, d.last_written) {
                note.push(format!("last written {w}"));
            }
            Value::from(Serde(MdRow {
                location: &d.location,
                sku: &d.sku,
                target: d.target,
                source: d.source,
                diff: d.diff,
                cause: d.cause.as_str(),
                note: note.join("; "),
            }))
        })
        .collect();
    let render_rows = |shown: usize| -> String {
        let ctx = context! { drift => Value::from(rows[..shown].to_vec()), shown, ..base.clone() };
        let mut out = template.render(ctx).expect("the built-in template renders every report");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    crate::render::markdown::fit_rows(total, rows.len(), render_rows)
}

fn environment() -> Environment<'static> {
    crate::render::markdown::environment_with(TEMPLATE_NAME, TEMPLATE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reconcile::{CauseCounts, Unit};

    fn report(n: usize) -> Report {
        let drift = (0..n)
            .map(|i| Drift {
                sku: format!("SKU-{i:07}|`x`"),
                location: format!("loc-{}", i % 3),
                source: 10,
                target: Some(7),
                diff: 3,
                cause: Cause::TargetChanged,
                bundle: false,
                orphan: false,
                queued: false,
                last_written: Some(10),
            })
            .collect::<Vec<_>>();
        Report {
            plan_name: "p".into(),
            config_sha256: "abc".into(),
            keys: n as u64 * 10,
            drifted: n as u64,
            drift_ratio: 0.1,
            max_abs_drift: 3,
            tolerance: 0,
            within_tolerance: 0,
            bundle_drifted: 0,
            queued_drifted: 0,
            causes: CauseCounts { target_changed: n as u64, ..Default::default() },
            drift,
            kpis: vec![Kpi {
                name: "drift_ratio",
                label: "drift ratio",
                unit: Unit::Ratio,
                value: serde_json::json!(0.1),
                threshold: serde_json::json!(0.0005),
                setting: Some("thresholds.max_drift_ratio"),
                status: KpiStatus::Breach,
                note: None,
            }],
            breaches: vec![],
            seconds: 0.0,
            seconds_per_key: None,
            warnings: vec!["w".repeat(10_000); 100],
            notes: vec![],
            salable_gaps: vec![],
            fix: None,
        }
    }

    #[test]
    fn markdown_stays_under_the_limit_and_says_how_many_are_shown() {
        for n in [0, 10, 2_000, 100_000] {
            let md = render_markdown(&report(n));
            assert!(md.len() < MAX_LEN, "{n}: {}", md.len());
            if n >= 2_000 {
                assert!(md.contains(&format!("of {} drifted keys", thousands(n as i64))), "{n}");
            } else {
                assert!(!md.contains("drifted keys;"), "{n}");
            }
        }
    }

    #[test]
    fn human_escapes_control_characters() {
        let mut r = report(1);
        r.drift[0].sku = "A\x1b[31m".into();
        let text = render_human(&r, false);
        assert!(!text.contains('\x1b'), "{text}");
    }
}
