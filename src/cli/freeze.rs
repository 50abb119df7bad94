//! `stockshift freeze start|stop|status PLAN.yaml`: the manual freeze flag, kept in
//! the event queue (`<state dir>/events.db`), and the plan's freeze window.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use jiff::Timestamp;
use serde_json::json;

use super::{GlobalArgs, Output, exit};
use crate::config::model::FreezeMode;
use crate::events::freeze::{FreezeState, is_frozen_at, whoami};
use crate::events::queue::age_seconds;

/// What `freeze` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FreezeAction {
    /// Set the manual freeze: events are queued, not applied, until `stop`.
    Start,
    /// Clear the manual freeze (the plan's window, if active, still applies).
    Stop,
    /// Show whether events are frozen and why, and the queue backlog.
    Status,
}

/// Output formats of `freeze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FreezeFormat {
    Human,
    Json,
}

/// Arguments of `freeze`.
#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// start, stop or status.
    #[arg(value_enum)]
    pub action: FreezeAction,
    /// The plan file (YAML).
    pub plan: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FreezeFormat::Human)]
    pub format: FreezeFormat,
}

/// Runs `freeze`.
pub fn run(args: FreezeArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = super::checked(&args.plan, out) else { return Ok(exit::ERROR) };
    let mut queue = crate::events::open_queue(&plan, g.state.as_deref())?;
    let who = whoami();
    let change = match args.action {
        FreezeAction::Start => {
            let (flag, new) = queue.start_freeze(&who)?;
            Some(if new {
                format!("Freeze started by {} at {}.", flag.by, flag.since)
            } else {
                format!("Already frozen: started by {} at {}; nothing changed.", flag.by, flag.since)
            })
        }
        FreezeAction::Stop => Some(match queue.stop_freeze(&who)? {
            Some(flag) => format!("Freeze stopped (it was started by {} at {}).", flag.by, flag.since),
            None => "The manual freeze was not set; nothing changed.".to_owned(),
        }),
        FreezeAction::Status => None,
    };
    let now = Timestamp::now();
    let state = is_frozen_at(plan.config.freeze.as_ref(), &queue, now)?;
    let backlog = queue.backlog()?;
    match args.format {
        FreezeFormat::Json => {
            let mut doc = state.to_json();
            doc["backlog"] = backlog.to_json(now);
            if let Some(c) = &change {
                doc["message"] = json!(c);
            }
            out.result(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
        }
        FreezeFormat::Human => {
            let mut text = String::new();
            if let Some(c) = &change {
                text.push_str(c);
                text.push('\n');
            }
            text.push_str(&human(&state));
            if backlog.total == 0 {
                text.push_str("Backlog: no queued events.\n");
            } else {
                let age = backlog.oldest_age_seconds(now).unwrap_or(0);
                text.push_str(&format!(
                    "Backlog: {} queued event(s), the oldest received {} ago.\n",
                    backlog.total,
                    show_age(age)
                ));
                let width = backlog.sources.keys().map(String::len).max().unwrap_or(0);
                for (name, s) in &backlog.sources {
                    text.push_str(&format!(
                        "  {name:<width$}  {:>8} queued  oldest {} ago\n",
                        s.queued,
                        show_age(age_seconds(s.oldest_received_at, now))
                    ));
                }
            }
            out.result(&text);
        }
    }
    Ok(exit::OK)
}

fn human(s: &FreezeState) -> String {
    let mut t = String::new();
    if s.frozen {
        let what = match s.mode {
            FreezeMode::Queue => "events are queued, not applied",
            FreezeMode::ReadOnly => "the target is read-only; events are queued",
        };
        t.push_str(&format!("Frozen: yes ({what}).\n"));
    } else {
        t.push_str("Frozen: no.\n");
    }
    for r in s.reasons() {
        t.push_str(&format!("  {r}\n"));
    }
    t
}

/// `42s`, `3m07s`, `2h05m`, `3d04h`.
fn show_age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}
