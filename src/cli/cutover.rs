//! `cutover PLAN.yaml`: the runbook in one command, printed as a checklist.

use std::io::{BufRead, IsTerminal, Write as _};
use std::path::PathBuf;

use clap::Args;

use super::{GlobalArgs, Output, checked, exit, parse_duration};
use crate::ops::apply::ApplyOptions;
use crate::ops::cutover::{CutoverError, CutoverOptions, CutoverReport, cutover, markdown};
use crate::render::{self, Format};
use crate::state::{Actor, CutoverStep};

/// Arguments of `cutover`.
#[derive(Debug, Args)]
pub struct CutoverArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Apply without asking (required without a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// When a threshold is breached, undo the cutover's writes and keep the freeze.
    #[arg(long)]
    pub rollback_on_failure: bool,
    /// Recorded events (one normalized event per line) that arrive during the freeze.
    #[arg(long, value_name = "FILE.jsonl")]
    pub events: Option<PathBuf>,
    /// Fulfilment failure rate measured by the order system (0..1), checked against the threshold.
    #[arg(long, value_name = "RATE")]
    pub fulfillment_failure_rate: Option<f64>,
    /// Go beyond limits.max_writes and limits.max_zeroed.
    #[arg(long)]
    pub allow_large: bool,
    /// Format of the run report printed at the end.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

fn checklist_line(s: &CutoverStep) -> String {
    let mark = if s.status == "ok" { "[ok]  " } else { "[FAIL]" };
    format!("{mark} {}. {:<15} {:>7.2}s  {}", s.step, s.name, s.seconds, s.detail)
}

/// `cutover`.
pub fn run(args: CutoverArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = checked(&args.plan, out) else { return Ok(exit::ERROR) };
    let mut apply = ApplyOptions::new(Actor::current(std::env::args().skip(1).collect::<Vec<_>>().join(" ")));
    apply.lock_timeout = parse_duration(&g.lock_timeout)?;
    apply.allow_large = args.allow_large;
    apply.progress = !g.quiet && std::io::stderr().is_terminal();
    let human = args.format == Format::Human;
    let tty = std::io::stdin().is_terminal();
    if !args.auto_approve && !tty {
        anyhow::bail!(
            "refusing to run a cutover without approval: standard input is not a terminal.\nPass --auto-approve, or run it from a terminal to confirm the plan."
        );
    }
    // Read the recorded events before anything starts, so a bad file changes nothing.
    let events = match &args.events {
        None => vec![],
        Some(path) => crate::events::event::read_jsonl(path).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .take(20)
                .map(|(line, msg)| format!("{}:{line}: error: {msg}", path.display()))
                .collect();
            anyhow::anyhow!(
                "{} bad line(s) in the recorded events; nothing was done:\n{}",
                problems.len(),
                lines.join("\n")
            )
        })?,
    };
    let opts_out = out.clone();
    let mut approve = |doc: &crate::artifact::PlanArtifact| -> bool {
        if human {
            opts_out.result(&render::render(doc, Format::Human, &opts_out.render_options(Format::Human, "Plan")));
        }
        if args.auto_approve {
            return true;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\nDo you want to make these writes?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
        );
        let _ = err.flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        line.trim() == "yes"
    };
    let step_out = out.clone();
    let mut on_step = |s: &CutoverStep| {
        if human {
            step_out.result(&format!("{}\n", checklist_line(s)));
        } else {
            step_out.note(&checklist_line(s));
        }
    };
    let mut opts = CutoverOptions {
        apply,
        rollback_on_failure: args.rollback_on_failure,
        events,
        fulfillment_failure_rate: args.fulfillment_failure_rate,
        approve: &mut approve,
        on_step: &mut on_step,
        target: None,
    };
    let state_dir = plan.state_dir(g.state.as_deref());
    let report = match cutover(&plan, &state_dir, &mut opts) {
        Ok(r) => r,
        Err(CutoverError::Refused(msg)) => {
            out.error(&anyhow::anyhow!(msg));
            return Ok(exit::ERROR);
        }
        Err(CutoverError::Other(e)) => return Err(e),
    };
    print_report(&report, args.format, &state_dir, out);
    Ok(match report.decision.as_str() {
        "unfrozen" => exit::OK,
        "cancelled" => exit::ERROR,
        _ => exit::PARTIAL,
    })
}

fn print_report(r: &CutoverReport, format: Format, state_dir: &std::path::Path, out: &Output) {
    match format {
        Format::Json => out.result(&(serde_json::to_string_pretty(r).unwrap_or_default() + "\n")),
        Format::Markdown => out.result(&markdown(r)),
        Format::Human => {
            let mut s = String::from("\nKPIs:\n");
            for k in &r.kpis {
                let v = k.value.map_or("unknown".to_string(), |v| format!("{v:.6}"));
                s.push_str(&format!("  {:<6} {:<26} {v:>12}  (max {})\n", k.status, k.name, k.threshold));
            }
            let what = match r.decision.as_str() {
                "unfrozen" => "passed: the freeze is off.".to_string(),
                "rolled_back" => "FAILED: the cutover's writes were rolled back and the freeze is kept.".to_string(),
                "cancelled" => {
                    "cancelled before any write; the freeze is kept (`stockshift freeze stop` to lift it).".to_string()
                }
                _ => format!(
                    "FAILED: stopped frozen. To roll back:\n    {}",
                    r.rollback_command.clone().unwrap_or_default()
                ),
            };
            let report = state_dir.join("cutovers").join(&r.id).join("report.md");
            s.push_str(&format!("\nCutover {} {what}\nReport: {}\n", r.id, report.display()));
            out.result(&s);
        }
    }
}
