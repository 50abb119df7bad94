//! `apply`, `rollback`, `audit`, `state` and `force-unlock`: the commands that
//! write inventory or read what was written.

use std::io::{BufRead, IsTerminal, Write as _};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{GlobalArgs, Output, checked, exit, parse_duration};
use crate::artifact::PlanArtifact;
use crate::config::check::Plan;
use crate::db::StoreAt;
use crate::ops::apply::{ApplyError, ApplyOptions, ApplyReport, apply, summary_line};
use crate::ops::rollback::{plan_rollback, select};
use crate::render::{self, Format};
use crate::state::{Actor, OpKind, StateStore};

/// Arguments of `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `plan --out` (applied as is), or a plan file (planned, shown, confirmed).
    pub plan: PathBuf,
    /// Apply a plan file without asking for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Go beyond limits.max_writes and limits.max_zeroed.
    #[arg(long)]
    pub allow_large: bool,
}

/// Arguments of `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The plan file whose state holds the operation.
    pub plan: PathBuf,
    /// The operation to undo (default: the newest apply).
    #[arg(long, value_name = "ID", conflicts_with = "cutover_id")]
    pub apply_id: Option<String>,
    /// Undo every write of a cutover (its apply and replays) and return its replayed events to the queue.
    #[arg(long, value_name = "ID")]
    pub cutover_id: Option<String>,
    /// Save the rollback plan for `apply` instead of making it.
    #[arg(long, value_name = "FILE", conflicts_with = "auto_approve")]
    pub out: Option<PathBuf>,
    /// Make the rollback writes now.
    #[arg(long)]
    pub auto_approve: bool,
    /// Output format of the rollback plan.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Arguments of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A plan file; its state folder is read (or give --state).
    pub plan: Option<PathBuf>,
    /// Only this (target) SKU.
    #[arg(long)]
    pub sku: Option<String>,
    /// Only this operation (an id or a unique prefix).
    #[arg(long, value_name = "ID")]
    pub apply_id: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the recorded operations, newest first.
    List {
        /// A plan file; its state folder is read (or give --state).
        plan: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Show one operation.
    Show {
        /// The operation id (or a unique prefix).
        id: String,
        /// A plan file; its state folder is read (or give --state).
        plan: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.join(" ")
}

/// The state folder from a plan, `--state`, or `./.stockshift`.
fn state_dir_for(plan: Option<&Path>, g: &GlobalArgs) -> PathBuf {
    if let Some(s) = &g.state {
        return s.clone();
    }
    match plan.and_then(Path::parent) {
        Some(p) if !p.as_os_str().is_empty() => p.join(".stockshift"),
        _ => PathBuf::from(".stockshift"),
    }
}

/// Where the state of a command with an optional plan lives: the plan's
/// `state:` (only its YAML is read, so a plan whose inputs moved still works),
/// else SQLite in the state folder.
fn state_at_for(plan: Option<&Path>, g: &GlobalArgs) -> anyhow::Result<StoreAt> {
    let dir = state_dir_for(plan, g);
    let Some(path) = plan else { return Ok(StoreAt::sqlite(dir)) };
    let loaded = crate::config::load::load_file(path, &path.display().to_string()).map_err(|d| {
        let first = d.iter().next().map(ToString::to_string).unwrap_or_default();
        anyhow::anyhow!("cannot read the plan's `state:` settings:\n{first}")
    })?;
    Ok(StoreAt::from_config(dir, &loaded.config.state, "state")?)
}

fn open_existing_state(at: &StoreAt) -> anyhow::Result<StateStore> {
    StateStore::open_existing_at(at)?.ok_or_else(|| match &at.url_env {
        Some(var) => anyhow::anyhow!(
            "no state in the state store (postgres ${var}): nothing has been applied with this state yet"
        ),
        None => {
            anyhow::anyhow!("no state at {}: nothing has been applied with this state folder yet", at.dir.display())
        }
    })
}

fn is_saved_plan(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "json") {
        return true;
    }
    std::fs::read(path).ok().and_then(|b| b.iter().copied().find(|c| !c.is_ascii_whitespace())) == Some(b'{')
}

/// Finds the plan file a saved plan was made from: as recorded, else beside the saved plan.
fn plan_path_of(doc: &PlanArtifact, saved: &Path) -> PathBuf {
    let recorded = PathBuf::from(&doc.plan.path);
    if recorded.is_file() {
        return recorded;
    }
    let beside = saved.parent().unwrap_or(Path::new(".")).join(&recorded);
    if beside.is_file() { beside } else { recorded }
}

fn apply_options(g: &GlobalArgs, out: &Output, allow_large: bool) -> anyhow::Result<ApplyOptions> {
    let mut o = ApplyOptions::new(Actor::current(command_line()));
    o.allow_large = allow_large;
    o.lock_timeout = parse_duration(&g.lock_timeout)?;
    o.progress = !g.quiet && std::io::stderr().is_terminal();
    let _ = out;
    Ok(o)
}

/// `apply`.
pub fn run_apply(args: ApplyArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let (plan, doc, saved) = if is_saved_plan(&args.plan) {
        let doc = PlanArtifact::read(&args.plan)?;
        let plan_path = plan_path_of(&doc, &args.plan);
        let Some(plan) = checked(&plan_path, out) else { return Ok(exit::ERROR) };
        (plan, doc, true)
    } else {
        let Some(plan) = checked(&args.plan, out) else { return Ok(exit::ERROR) };
        let doc = match crate::ops::plan::run(&plan, super::state_ref(&plan, g)?) {
            Ok(d) => d,
            Err(crate::ops::plan::PlanError::Input(d)) => {
                out.diagnostics(&d.0);
                out.note("Nothing was written: fix the input problems above and run again.");
                return Ok(exit::ERROR);
            }
            Err(e) => return Err(e.into()),
        };
        (plan, doc, false)
    };
    let kind = if doc.rollback_of.is_some() { OpKind::Rollback } else { OpKind::Apply };
    if !saved {
        out.result(&render::render(&doc, Format::Human, &out.render_options(Format::Human, "Plan")));
        if doc.diff.is_empty() {
            out.result("\nNothing to apply.\n");
            return Ok(exit::OK);
        }
        if !args.auto_approve {
            if !std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "refusing to apply without confirmation: standard input is not a terminal.\nPass --auto-approve, or save the plan with `stockshift plan --out FILE` and run `stockshift apply FILE`."
                );
            }
            if !confirm()? {
                out.note("Apply cancelled.");
                return Ok(exit::ERROR);
            }
        }
    }
    let mut state = StateStore::open_for(&plan, g.state.as_deref())?;
    let opts = apply_options(g, out, args.allow_large)?;
    run_and_report(&plan, &doc, kind, &mut state, &opts, out)
}

fn confirm() -> anyhow::Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "\nDo you want to make these writes?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

/// Applies and prints the outcome; shared by apply and rollback.
fn run_and_report(
    plan: &Plan,
    doc: &PlanArtifact,
    kind: OpKind,
    state: &mut StateStore,
    opts: &ApplyOptions,
    out: &Output,
) -> anyhow::Result<u8> {
    let report = match apply(plan, doc, kind, state, opts) {
        Ok(r) => r,
        Err(e @ (ApplyError::Stale(_) | ApplyError::TooLarge { .. } | ApplyError::Lock(_))) => {
            out.error(&anyhow::Error::new(e));
            return Ok(exit::ERROR);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(report_outcome(&report, kind, out))
}

/// Prints conflicts, failures and the summary line; returns the exit code.
pub fn report_outcome(r: &ApplyReport, kind: OpKind, out: &Output) -> u8 {
    if let Some(l) = &r.took_over_lock {
        out.note(&format!(
            "Took over the lock {} of process {} on {}, which is no longer running.",
            l.id, l.pid, l.host
        ));
    }
    if r.already_done {
        out.note(&format!(
            "This plan was already applied as operation {} ({}); nothing was sent.",
            r.op.id, r.op.started_at
        ));
    } else if r.resumed {
        out.note(&format!("Resumed interrupted operation {}.", r.op.id));
    }
    print_refusals(out, &r.conflicts, &r.failures, "", Some(&r.op.id));
    let title = if kind == OpKind::Rollback { "Rollback" } else { "Apply" };
    out.result(&format!("{}\n", summary_line(title, &r.counts)));
    if r.counts.conflicts + r.counts.failed > 0 {
        out.note("Conflicting keys changed in the target since the plan was made; nothing was overwritten. Run `stockshift plan` again to see them.");
        exit::PARTIAL
    } else {
        exit::OK
    }
}

/// Prints write conflicts and failures (the first 50 of each), one line each,
/// with `suffix` after every conflict and a pointer to the audit for the rest.
pub fn print_refusals(
    out: &Output,
    conflicts: &[crate::ops::apply::Conflict],
    failures: &[crate::ops::apply::Failure],
    suffix: &str,
    op_id: Option<&str>,
) {
    const SHOWN: usize = 50;
    let show = |v: Option<i64>| v.map_or("absent".to_string(), |q| q.to_string());
    for c in conflicts.iter().take(SHOWN) {
        out.note(&format!(
            "Conflict: ({}, {}) expected {}, found {}; not set to {}.{suffix}",
            c.sku,
            c.location,
            show(c.expected),
            show(c.found),
            c.wanted
        ));
    }
    for f in failures.iter().take(SHOWN) {
        out.note(&format!("Failed: ({}, {}): {}", f.sku, f.location, f.message));
    }
    let hidden = conflicts.len().saturating_sub(SHOWN) + failures.len().saturating_sub(SHOWN);
    if hidden > 0
        && let Some(id) = op_id
    {
        out.note(&format!("... and {hidden} more; `stockshift audit --apply-id {id}` lists them all."));
    }
}

/// `rollback`.
pub fn run_rollback(args: RollbackArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = checked(&args.plan, out) else { return Ok(exit::ERROR) };
    let mut state = open_existing_state(&plan.state_at(g.state.as_deref())?)?;
    if let Some(id) = &args.cutover_id {
        return rollback_cutover(&plan, &mut state, id, &args, g, out);
    }
    let op = select(&state, args.apply_id.as_deref())?;
    let rb = plan_rollback(&plan, &state, op)?;
    out.result(&render::render(&rb.doc, args.format, &out.render_options(args.format, "Rollback")));
    if let Some(by) = &rb.already_rolled_back_by {
        out.note(&format!("Operation {} was already rolled back by {by}.", rb.of.id));
        return Ok(exit::OK);
    }
    if let Some(path) = &args.out {
        std::fs::write(path, rb.doc.to_json())?;
        let msg = format!(
            "\nSaved the rollback plan to: {0}\n\nTo make exactly these writes, run:\n    stockshift apply {0}\n",
            path.display()
        );
        if args.format == Format::Human {
            out.result(&msg)
        } else {
            out.note(msg.trim())
        }
        return Ok(exit::OK);
    }
    if !args.auto_approve {
        out.note("This only shows the rollback. Run again with --auto-approve to make it, or --out FILE to save it for `apply`.");
        return Ok(exit::OK);
    }
    let opts = apply_options(g, out, true)?;
    if rb.doc.diff.is_empty() {
        // Record the rollback even when nothing moved, so a second rollback is a no-op.
        let code = run_and_report(&plan, &rb.doc, OpKind::Rollback, &mut state, &opts, out)?;
        return Ok(code);
    }
    run_and_report(&plan, &rb.doc, OpKind::Rollback, &mut state, &opts, out)
}

/// `rollback --cutover-id`.
fn rollback_cutover(
    plan: &Plan,
    state: &mut StateStore,
    id: &str,
    args: &RollbackArgs,
    g: &GlobalArgs,
    out: &Output,
) -> anyhow::Result<u8> {
    let row = state.cutover(id)?.ok_or_else(|| anyhow::anyhow!("no cutover with id {id}"))?;
    let mut ops = Vec::new();
    let ids =
        row.data["apply_op"].as_str().into_iter().map(str::to_owned).chain(
            row.data["replay_ops"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)),
        );
    for op_id in ids {
        if let Some(op) = state.operation(&op_id)? {
            ops.push(op);
        }
    }
    if ops.is_empty() || ops[0].rolled_back_by.is_some() || row.status == "rolled_back" {
        out.note(&format!("Cutover {} made no writes that are not already rolled back; nothing to do.", row.id));
        return Ok(exit::OK);
    }
    let rb = crate::ops::rollback::plan_rollback_ops(plan, state, ops)?;
    out.result(&render::render(&rb.doc, args.format, &out.render_options(args.format, "Rollback")));
    if !args.auto_approve {
        out.note("This only shows the rollback. Run again with --auto-approve to make it.");
        return Ok(exit::OK);
    }
    let opts = apply_options(g, out, true)?;
    let mut queue = crate::events::open_queue(plan, g.state.as_deref())?;
    let detail = crate::ops::cutover::rollback_cutover(plan, state, &mut queue, &row.id, &row.data, &opts)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    out.result(&format!("Rollback of cutover {} complete: {detail}. The freeze is on.\n", row.id));
    Ok(exit::OK)
}

/// `audit`.
pub fn run_audit(args: AuditArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let state = open_existing_state(&state_at_for(args.plan.as_deref(), g)?)?;
    let records = state.audit(args.sku.as_deref(), args.apply_id.as_deref())?;
    if args.format == Format::Json {
        out.result(&format!("{}\n", serde_json::to_string_pretty(&records)?));
        return Ok(exit::OK);
    }
    let show = |v: Option<i64>| v.map_or("-".to_string(), |q| q.to_string());
    let mut s = String::new();
    for r in &records {
        s.push_str(&format!(
            "{}  {:<8} {}  {}@{}  {} {}  {} -> {}  {}{}{}\n",
            r.at,
            r.kind.as_str(),
            &r.op_id[..8.min(r.op_id.len())],
            r.user,
            r.host,
            r.sku,
            r.location,
            show(r.before),
            r.after,
            r.outcome,
            r.found.map(|f| format!(" (found {f})")).unwrap_or_default(),
            // Admin fixes carry the operator's reason; show it where the write is.
            r.reason.as_deref().map(|why| format!("  reason: {why}")).unwrap_or_default()
        ));
    }
    s.push_str(&format!("{} record(s).\n", records.len()));
    out.result(&s);
    Ok(exit::OK)
}

/// `state list` / `state show`.
pub fn run_state(cmd: StateCommand, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    match cmd {
        StateCommand::List { plan, format } => {
            let state = open_existing_state(&state_at_for(plan.as_deref(), g)?)?;
            let ops = state.operations()?;
            if format == Format::Json {
                let (lineage, serial) = state.lineage_serial()?;
                let doc = serde_json::json!({"lineage": lineage, "serial": serial, "operations": ops});
                out.result(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
                return Ok(exit::OK);
            }
            let mut s = String::from(
                "ID                                    KIND      SERIAL  STATUS       STARTED               WRITES  APPLIED  CONFLICTS  FAILED\n",
            );
            for o in &ops {
                s.push_str(&format!(
                    "{:<37} {:<9} {:>6}  {:<12} {:<21} {:>6}  {:>7}  {:>9}  {:>6}{}\n",
                    o.id,
                    o.kind.as_str(),
                    o.serial,
                    o.status,
                    o.started_at,
                    o.writes,
                    o.applied,
                    o.conflicts,
                    o.failed,
                    o.rolled_back_by
                        .as_ref()
                        .map(|b| format!("  (rolled back by {})", &b[..8.min(b.len())]))
                        .unwrap_or_default()
                ));
            }
            out.result(&s);
            Ok(exit::OK)
        }
        StateCommand::Show { id, plan, format } => {
            let state = open_existing_state(&state_at_for(plan.as_deref(), g)?)?;
            let op = state.operation(&id)?.ok_or_else(|| anyhow::anyhow!("no operation with id {id}"))?;
            if format == Format::Json {
                out.result(&format!("{}\n", serde_json::to_string_pretty(&op)?));
                return Ok(exit::OK);
            }
            let mut s = String::new();
            let v = serde_json::to_value(&op)?;
            for (k, val) in v.as_object().into_iter().flatten() {
                let shown = match val {
                    serde_json::Value::String(t) => t.clone(),
                    serde_json::Value::Null => "-".into(),
                    other => other.to_string(),
                };
                s.push_str(&format!("{k:<16} {shown}\n"));
            }
            out.result(&s);
            Ok(exit::OK)
        }
    }
}

/// `force-unlock`.
pub fn run_force_unlock(id: &str, plan: Option<&Path>, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let state = open_existing_state(&state_at_for(plan, g)?)?;
    match state.force_unlock(id)? {
        Some(info) => {
            out.result(&format!(
                "Released the lock {} ({} by {}@{}, pid {}).\n",
                info.id, info.operation, info.user, info.host, info.pid
            ));
            Ok(exit::OK)
        }
        None => {
            let held = state.lock_info()?;
            match held {
                Some(h) => anyhow::bail!("the lock held now has id {}, not {id}; nothing was released", h.id),
                None => anyhow::bail!("the state is not locked; nothing to release"),
            }
        }
    }
}
