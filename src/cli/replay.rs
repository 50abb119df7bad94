//! `replay PLAN.yaml [--from FILE.jsonl] [--follow]`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{GlobalArgs, Output, checked, exit, parse_duration};
use crate::ops::apply::ApplyOptions;
use crate::ops::replay::{ReplayReport, replay};
use crate::state::{Actor, StateStore};

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Add the events of a recorded file (one normalized event per line) to the
    /// queue first; duplicates of queued events are dropped.
    #[arg(long, value_name = "FILE.jsonl")]
    pub from: Option<PathBuf>,
    /// With --from: only queue the file's events; apply nothing (a later
    /// `replay`, `cutover` or the replay workers of a shared queue do).
    #[arg(long, requires = "from", conflicts_with = "follow")]
    pub queue_only: bool,
    /// Keep applying new events as they arrive (continuous sync); waits while frozen.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how often to look for new events.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// Instead of replaying: mark one queued event that can never apply (SOURCE/ID,
    /// e.g. `erp/k1`) as failed, so replay stops retrying it. Needs --reason.
    #[arg(long, value_name = "SOURCE/ID", requires = "reason", conflicts_with_all = ["from", "follow"])]
    pub discard: Option<String>,
    /// Why the event is discarded; stored with it (audit) and shown by `freeze status`.
    #[arg(long, value_name = "TEXT", requires = "discard")]
    pub reason: Option<String>,
}

/// `replay --discard SOURCE/ID --reason TEXT`.
fn discard(queue: &mut crate::events::queue::Queue, which: &str, reason: &str, out: &Output) -> anyhow::Result<u8> {
    use crate::events::queue::Status;
    let Some((source, id)) = which.split_once('/').filter(|(s, i)| !s.is_empty() && !i.is_empty()) else {
        out.error(&anyhow::anyhow!(
            "--discard `{which}`: expected SOURCE/ID, e.g. `erp/k1` (see `freeze status` for queued events)"
        ));
        return Ok(exit::ERROR);
    };
    if reason.trim().is_empty() {
        out.error(&anyhow::anyhow!("--reason is empty: say why the event is discarded; it is kept with the event"));
        return Ok(exit::ERROR);
    }
    match queue.get(source, id)? {
        None => {
            out.error(&anyhow::anyhow!("no event `{id}` from source `{source}` in {}", queue.location()));
            Ok(exit::ERROR)
        }
        Some(e) if e.status != Status::Queued => {
            out.error(&anyhow::anyhow!(
                "event {source}/{id} is {}, not queued; only a queued event can be discarded",
                e.status.as_str()
            ));
            Ok(exit::ERROR)
        }
        Some(e) => {
            let who = crate::state::Actor::current("replay --discard");
            let why = format!("discarded by {}@{}: {}", who.user, who.host, reason.trim());
            queue.mark(&[e.seq], Status::Failed, Some(&why))?;
            out.result(&format!("Discarded event {source}/{id} (seq {}); it is recorded as failed: {why}\n", e.seq));
            Ok(exit::OK)
        }
    }
}

fn print(report: &ReplayReport, out: &Output) {
    const SHOWN: usize = 50;
    super::apply::print_refusals(
        out,
        &report.conflicts,
        &report.failures,
        " Its events stay queued.",
        report.op_id.as_deref(),
    );
    for msg in report.unmapped.iter().take(SHOWN) {
        out.note(&format!("Not applied (events stay queued): {msg}."));
    }
    if report.oversells > 0 {
        out.note(&format!(
            "Oversold: {} source key(s) went below zero ({} units short); the target was set to 0 there.",
            report.oversells, report.oversold_units
        ));
    }
    out.result(&format!("{}\n", report.summary()));
}

/// `replay`.
pub fn run(args: ReplayArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = checked(&args.plan, out) else { return Ok(exit::ERROR) };
    let mut queue = crate::events::open_queue(&plan, g.state.as_deref())?;
    if let (Some(which), Some(reason)) = (&args.discard, &args.reason) {
        return discard(&mut queue, which, reason, out);
    }
    if let Some(path) = &args.from {
        let events = crate::events::event::read_jsonl(path).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .take(20)
                .map(|(line, msg)| format!("{}:{line}: error: {msg}", path.display()))
                .collect();
            anyhow::anyhow!(
                "{} bad line(s) in the recorded events; nothing was queued:\n{}",
                problems.len(),
                lines.join("\n")
            )
        })?;
        let inserted = queue.append(&events)?;
        let new = inserted.iter().filter(|i| i.is_accepted()).count();
        out.note(&format!(
            "Queued {new} event(s) from {} ({} duplicate(s) dropped).",
            path.display(),
            events.len() - new
        ));
        if args.queue_only {
            return Ok(exit::OK);
        }
    }
    let mut state = StateStore::open_for(&plan, g.state.as_deref())?;
    let mut opts = ApplyOptions::new(Actor::current(std::env::args().skip(1).collect::<Vec<_>>().join(" ")));
    opts.lock_timeout = parse_duration(&g.lock_timeout)?;
    opts.progress = !g.quiet && std::io::stderr().is_terminal();
    if !args.follow {
        let report = replay(&plan, &mut state, &mut queue, &opts)?;
        print(&report, out);
        return Ok(if report.failed > 0 || report.writes.conflicts + report.writes.failed > 0 {
            exit::PARTIAL
        } else {
            exit::OK
        });
    }
    let every = parse_duration(&args.interval)?.max(Duration::from_millis(50));
    out.note("Following the queue; Ctrl-C stops (a stop at any point is safe: replay resumes exactly once).");
    let mut was_frozen = false;
    loop {
        let frozen = crate::events::freeze::is_frozen(&plan, &queue)?;
        if frozen.frozen {
            if !was_frozen {
                out.note(&format!("Frozen ({}): events are queued, not applied.", frozen.reasons().join("; ")));
            }
            was_frozen = true;
        } else {
            was_frozen = false;
            match replay(&plan, &mut state, &mut queue, &opts) {
                Ok(report) if report.events > 0 => print(&report, out),
                Ok(_) => {}
                // Another writer (an apply, a rollback) holds the state: try again next round.
                Err(crate::ops::replay::ReplayError::Apply(crate::ops::apply::ApplyError::Lock(_))) => {}
                Err(e) => return Err(e.into()),
            }
        }
        std::thread::sleep(every);
    }
}
