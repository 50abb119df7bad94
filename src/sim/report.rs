//! The simulation report: the JSON document behind it and a self-contained HTML
//! page (inline SVG charts, no script, nothing fetched from the network).
//! The page's layout is `templates/simulate_report.html.j2`; the charts are
//! drawn here.

use std::fmt::Write as _;

use minijinja::value::{Serde, Value};
use minijinja::{Environment, context};
use serde_json::json;

use super::{Round, SimRun, Span};

const TEMPLATE: &str = include_str!("../../templates/simulate_report.html.j2");

/// The JSON document of a run (what the HTML page shows). Everything but `timing`
/// depends only on the seed and the flags.
pub fn document(run: &SimRun) -> serde_json::Value {
    json!({
        "format_version": 1,
        "summary": run.summary,
        "rounds": run.rounds,
        "cutover_kpis": run.kpis,
        "drift": run.drift,
        "notes": run.notes,
        "timing": {
            "wall_seconds": run.summary.wall_seconds,
            "timeline": run.timeline,
            "cutover_steps": run.steps,
        },
    })
}

/// Writes `report.html` and `report.json` into `dir`.
pub fn write(run: &SimRun, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let doc = document(run);
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&doc)? + "\n")?;
    std::fs::write(dir.join("report.html"), html(run)?)?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round number for axis ends: 1, 2, 2.5 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 || v.fract() == 0.0 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const W: f64 = 680.0;
const H: f64 = 250.0;
const ML: f64 = 60.0;
const MR: f64 = 20.0;
const MT: f64 = 30.0;
const MB: f64 = 42.0;

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Line,
    Bar,
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    mark: Mark,
    points: Vec<(f64, f64)>,
}

fn axes(s: &mut String, title: &str, x_label: &str, x_max: f64, y_max: f64, x_min: f64) {
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {W} {H}" width="{W}" height="{H}"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(s, r##"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="#fbfbfd" stroke="#ccd"/>"##);
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = MT + ph - ph * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{ML}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3ea"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{v}</text>"##,
            x2 = ML + pw,
            tx = ML - 6.0,
            ty = y + 4.0,
            v = fmt_num(v)
        );
    }
    let span = (x_max - x_min).max(1e-9);
    for i in 0..=5 {
        let v = x_min + span * i as f64 / 5.0;
        let x = ML + pw * i as f64 / 5.0;
        let _ = write!(
            s,
            r##"<text x="{x:.1}" y="{y}" text-anchor="middle" class="tick">{v}</text>"##,
            y = MT + ph + 16.0,
            v = fmt_num(v)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{x}" y="{y}" text-anchor="middle" class="axis">{l}</text><text x="{ML}" y="18" class="ctitle">{t}</text>"##,
        x = ML + pw / 2.0,
        y = H - 6.0,
        l = esc(x_label),
        t = esc(title)
    );
}

fn chart(title: &str, x_label: &str, series: &[Series<'_>]) -> String {
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_min = 0.0;
    let x_max = all().map(|p| p.0).fold(0.0, f64::max).max(x_min + 1.0);
    let y_max = nice_max(all().map(|p| p.1).fold(0.0, f64::max));
    let mut s = String::new();
    axes(&mut s, title, x_label, x_max, y_max, x_min);
    let sx = |x: f64| ML + (x - x_min) / (x_max - x_min) * pw;
    let sy = |y: f64| MT + ph - y / y_max * ph;
    let bars = series.iter().filter(|s| s.mark == Mark::Bar).count().max(1) as f64;
    let n = series.iter().map(|s| s.points.len()).max().unwrap_or(1).max(1) as f64;
    let bw = (pw / n * 0.7 / bars).clamp(1.0, 24.0);
    let mut bar_i = 0.0;
    for se in series {
        match se.mark {
            Mark::Bar => {
                for (x, y) in &se.points {
                    let h = ph * y / y_max;
                    let _ = write!(
                        s,
                        r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{}"><title>{}: {} at {} h</title></rect>"#,
                        sx(*x) - bw * bars / 2.0 + bar_i * bw,
                        sy(*y),
                        se.color,
                        esc(se.name),
                        fmt_num(*y),
                        fmt_num(*x)
                    );
                }
                bar_i += 1.0;
            }
            Mark::Line => {
                let pts: Vec<String> = se.points.iter().map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                    se.color,
                    pts.join(" ")
                );
                for (x, y) in &se.points {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"><title>{}: {} at {} h</title></circle>"#,
                        sx(*x),
                        sy(*y),
                        se.color,
                        esc(se.name),
                        fmt_num(*y),
                        fmt_num(*x)
                    );
                }
            }
        }
    }
    // Legend.
    let mut lx = ML + 8.0;
    for se in series {
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{y}" width="10" height="10" fill="{}"/><text x="{tx:.1}" y="{ty}" class="legend">{}</text>"#,
            se.color,
            esc(se.name),
            y = MT + 6.0,
            tx = lx + 14.0,
            ty = MT + 15.0
        );
        lx += 24.0 + 6.5 * se.name.len() as f64;
    }
    s.push_str("</svg>");
    s
}

fn hbars(title: &str, items: &[(String, u64, &str)]) -> String {
    let row = 24.0;
    let h = MT + row * items.len() as f64 + 16.0;
    let label_w = 230.0;
    let pw = W - label_w - 90.0;
    let max = items.iter().map(|i| i.1).max().unwrap_or(1).max(1) as f64;
    let mut s = format!(
        r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {W} {h}" width="{W}" height="{h}"><title>{t}</title><text x="10" y="18" class="ctitle">{t}</text>"#,
        t = esc(title)
    );
    for (i, (label, v, color)) in items.iter().enumerate() {
        let y = MT + row * i as f64;
        let w = if *v == 0 { 0.0 } else { (pw * *v as f64 / max).max(1.0) };
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty:.1}" text-anchor="end" class="tick">{l}</text><rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="16" fill="{color}"><title>{l}: {v}</title></rect><text x="{vx:.1}" y="{ty:.1}" class="tick">{v}</text>"#,
            lx = label_w - 8.0,
            ty = y + 12.0,
            l = esc(label),
            vx = label_w + w + 6.0
        );
    }
    s.push_str("</svg>");
    s
}

fn gantt(spans: &[Span]) -> String {
    let mut lanes: Vec<&str> = Vec::new();
    for sp in spans {
        if !lanes.contains(&sp.lane.as_str()) {
            lanes.push(&sp.lane);
        }
    }
    let row = 30.0;
    let h = MT + row * lanes.len() as f64 + MB;
    let lw = 80.0;
    let pw = W - lw - MR;
    let end = spans.iter().map(|s| s.start + s.seconds).fold(0.0, f64::max).max(1e-3);
    let x_max = end * 1.02;
    let sx = |x: f64| lw + x / x_max * pw;
    let mut s = format!(
        r#"<svg class="chart" role="img" aria-label="Step timeline" viewBox="0 0 {W} {h}" width="{W}" height="{h}"><title>Step timeline</title><text x="10" y="18" class="ctitle">Step timeline (wall-clock seconds)</text>"#
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = MT + row * i as f64;
        let _ = write!(
            s,
            r##"<rect x="{lw}" y="{y:.1}" width="{pw:.1}" height="{rh}" fill="{bg}"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{l}</text>"##,
            rh = row - 4.0,
            bg = if i % 2 == 0 { "#f4f4f8" } else { "#fbfbfd" },
            tx = lw - 6.0,
            ty = y + 17.0,
            l = esc(lane)
        );
    }
    let palette = ["#4c72b0", "#55a868", "#8172b2", "#64b5cd", "#ccb974", "#937860", "#da8bc3"];
    for (i, sp) in spans.iter().enumerate() {
        let lane = lanes.iter().position(|l| *l == sp.lane).unwrap_or(0);
        let y = MT + row * lane as f64 + 3.0;
        let tip = format!("{}: {:.3} s from {:.3} s ({})", sp.name, sp.seconds, sp.start, sp.status);
        if sp.status == "crash" {
            let x = sx(sp.start);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y1:.1}" y2="{y2:.1}" stroke="#c0392b" stroke-width="3"><title>{t}</title></line><text x="{x:.1}" y="{ty:.1}" class="crash" text-anchor="middle">✕</text>"##,
                y1 = y - 3.0,
                y2 = y + row - 5.0,
                ty = y - 4.0,
                t = esc(&tip)
            );
            continue;
        }
        let color = match sp.status.as_str() {
            "failed" => "#c0392b",
            _ => palette[i % palette.len()],
        };
        let w = (sx(sp.start + sp.seconds) - sx(sp.start)).max(1.5);
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{rh}" fill="{color}" opacity="0.9"><title>{t}</title></rect>"#,
            x = sx(sp.start),
            rh = row - 10.0,
            t = esc(&tip)
        );
    }
    for i in 0..=5 {
        let v = x_max * i as f64 / 5.0;
        let _ = write!(
            s,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" class="tick">{v:.2}</text>"#,
            x = sx(v),
            y = MT + row * lanes.len() as f64 + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

fn backlog_chart(rounds: &[Round]) -> String {
    let before: Vec<(f64, f64)> = rounds.iter().map(|r| (r.hours, r.backlog_before as f64)).collect();
    let after: Vec<(f64, f64)> = rounds.iter().map(|r| (r.hours, r.backlog_after as f64)).collect();
    chart(
        "Replay backlog per round (events queued)",
        "simulated hours since the freeze started",
        &[
            Series { name: "queued before replay", color: "#4c72b0", mark: Mark::Bar, points: before },
            Series { name: "still queued after replay", color: "#c44e52", mark: Mark::Line, points: after },
        ],
    )
}

fn drift_chart(rounds: &[Round]) -> String {
    let lag: Vec<(f64, f64)> = rounds.iter().map(|r| (r.hours, r.lag_keys as f64)).collect();
    let drift: Vec<(f64, f64)> = rounds.iter().map(|r| (r.hours, r.drift_keys as f64)).collect();
    chart(
        "Drifted target keys after each round (ledger check)",
        "simulated hours since the freeze started",
        &[
            Series {
                name: "vs ground truth (late events not yet in)",
                color: "#dd8452",
                mark: Mark::Line,
                points: lag,
            },
            Series { name: "vs events delivered so far", color: "#c44e52", mark: Mark::Line, points: drift },
        ],
    )
}

/// The report page.
pub fn html(run: &SimRun) -> anyhow::Result<String> {
    let s = &run.summary;
    let mut results: Vec<(String, u64, &str)> =
        vec![("events generated".into(), s.events, "#4c72b0"), ("deliveries".into(), s.deliveries, "#64b5cd")];
    for (k, v) in &s.events_by_result {
        let color = match k.as_str() {
            "applied" => "#55a868",
            "superseded" => "#8172b2",
            "duplicate_deliveries_dropped" => "#ccb974",
            _ => "#c44e52",
        };
        results.push((k.replace('_', " "), *v, color));
    }
    results.push(("events lost (ledger)".into(), s.events_lost, "#c44e52"));
    results.push(("events applied twice (ledger)".into(), s.events_applied_twice, "#c44e52"));
    let charts = vec![
        Value::from_safe_string(backlog_chart(&run.rounds)),
        Value::from_safe_string(drift_chart(&run.rounds)),
        Value::from_safe_string(hbars("Events by result", &results)),
        Value::from_safe_string(gantt(&run.timeline)),
    ];
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("simulate_report.html.j2", TEMPLATE)?;
    let tmpl = env.get_template("simulate_report.html.j2")?;
    let kpis: Vec<(String, String, String, bool)> = vec![
        (
            "drift ratio".into(),
            format!("{:.6}", s.drift_ratio),
            format!("≤ {}", s.thresholds["max_drift_ratio"]),
            s.drift_ratio <= s.thresholds["max_drift_ratio"],
        ),
        (
            "unresolved drift (units)".into(),
            s.unresolved_drift_units.to_string(),
            format!("≤ {}", s.thresholds["max_unresolved_drift_units"]),
            s.unresolved_drift_units as f64 <= s.thresholds["max_unresolved_drift_units"],
        ),
        ("events lost".into(), s.events_lost.to_string(), "0".into(), s.events_lost == 0),
        ("events applied twice".into(), s.events_applied_twice.to_string(), "0".into(), s.events_applied_twice == 0),
        (
            "oversells the data did not force".into(),
            s.unforced_oversells.to_string(),
            "0".into(),
            s.unforced_oversells == 0,
        ),
        (
            "oversells forced by the data".into(),
            format!("{} ({} units)", s.oversells, s.oversold_units),
            "reported".into(),
            true,
        ),
        ("backlog at the end".into(), s.backlog_at_end.to_string(), "0".into(), s.backlog_at_end == 0),
        ("wall time".into(), format!("{:.2} s", s.wall_seconds), "".into(), true),
    ];
    let faults: Vec<(String, u64)> = serde_json::to_value(&s.faults)?
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    let html = tmpl.render(context! {
        s => Serde(s),
        kpis => kpis,
        faults => faults,
        charts => charts,
        rounds => Serde(&run.rounds),
        steps => Serde(&run.steps),
        cutover_kpis => Serde(&run.kpis),
        drift => Serde(&run.drift),
        notes => &run.notes,
    })?;
    Ok(html)
}
