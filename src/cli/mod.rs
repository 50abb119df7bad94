//! The command line: argument definitions and dispatch. Each command's work lives
//! in `ops`; this module parses, picks output streams and maps results to exit
//! codes (SPEC section 1).

mod apply;
mod cutover;
mod demo;
mod freeze;
mod output;
mod reconcile;
mod replay;
mod serve;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::artifact::PlanArtifact;
use crate::config::check::check_file;
use crate::diag::Diagnostics;
use crate::render::{self, Format, RenderOptions};

pub use output::Output;

/// Exit codes (SPEC section 1).
pub mod exit {
    /// Success (with `--detailed-exitcode`: and no changes).
    pub const OK: u8 = 0;
    /// Error; nothing half-done is left unrecorded.
    pub const ERROR: u8 = 1;
    /// `plan --detailed-exitcode` found changes.
    pub const CHANGES: u8 = 2;
    /// Finished, but writes were refused as conflicts or a threshold was breached.
    pub const PARTIAL: u8 = 3;
}

/// Plan, apply, replay and reconcile inventory migrations without stock glitches.
#[derive(Debug, Parser)]
#[command(name = "stockshift", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Never colour the output (also when NO_COLOR is set).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Print only results and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print more about what is happening.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// State folder (default: `.stockshift/` beside the plan file).
    #[arg(long, global = true, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// How long to wait for the state lock, e.g. `30s` (default: do not wait).
    #[arg(long, global = true, value_name = "DURATION", default_value = "0s")]
    pub lock_timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check a plan and every file it names; no provider is read.
    Validate {
        /// The plan file (YAML).
        plan: PathBuf,
    },
    /// Read source and target, compute the stock writes and print them.
    Plan(PlanArgs),
    /// Render a saved plan.
    Show {
        /// A plan saved with `plan --out`.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Make the writes of a saved plan, or plan, confirm and apply a plan file.
    Apply(apply::ApplyArgs),
    /// Plan (and with --auto-approve make) the writes that undo an apply.
    Rollback(apply::RollbackArgs),
    /// Read the audit log of inventory writes.
    Audit(apply::AuditArgs),
    /// Inspect the state store's operations.
    #[command(subcommand)]
    State(apply::StateCommand),
    /// The whole runbook: preflight, freeze, snapshot, apply, replay, verdict, unfreeze or roll back.
    Cutover(cutover::CutoverArgs),
    /// Run the demo cutover in a fresh folder (the README's first command).
    Demo(demo::DemoArgs),
    /// Release a state lock left by a process that is gone.
    ForceUnlock {
        /// The lock id, as printed when the lock was refused.
        id: String,
        /// A plan file; its state folder is used (or give --state).
        plan: Option<PathBuf>,
    },
    /// Receive webhooks into the durable event queue; serve /healthz and /metrics.
    Serve(serve::ServeArgs),
    /// Apply queued (or recorded) events in per-key order, exactly once.
    Replay(replay::ReplayArgs),
    /// Compare the mapped source with the target; report drift and KPIs; --fix corrects drift.
    Reconcile(reconcile::ReconcileArgs),
    /// Start, stop or show the freeze: events are queued, not applied.
    Freeze(freeze::FreezeArgs),
    /// A staging dry run on synthetic traffic with injected faults; prints KPIs from an independent ledger.
    Simulate(simulate::SimulateArgs),
    /// Print the plan file's JSON Schema.
    Schema,
}

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The plan file (YAML).
    pub plan: PathBuf,
    /// Save the plan for `apply`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 2 when there are changes, 0 when there are none.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    // Usage errors exit 1 (SPEC section 1); clap's own default, 2, means "changes" here.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::ERROR } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let out = Output::new(&cli.global);
    let code = match run(cli, &out) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            exit::ERROR
        }
    };
    ExitCode::from(code)
}

fn run(cli: Cli, out: &Output) -> anyhow::Result<u8> {
    let g = &cli.global;
    match cli.command {
        Command::Apply(args) => apply::run_apply(args, g, out),
        Command::Cutover(args) => cutover::run(args, g, out),
        Command::Demo(args) => demo::run(args, g, out),
        Command::Rollback(args) => apply::run_rollback(args, g, out),
        Command::Audit(args) => apply::run_audit(args, g, out),
        Command::State(cmd) => apply::run_state(cmd, g, out),
        Command::ForceUnlock { id, plan } => apply::run_force_unlock(&id, plan.as_deref(), g, out),
        Command::Serve(args) => serve::run(args, g, out),
        Command::Replay(args) => replay::run(args, g, out),
        Command::Reconcile(args) => reconcile::run(args, g, out),
        Command::Freeze(args) => freeze::run(args, g, out),
        Command::Simulate(args) => simulate::run_simulate(args, g, out),
        Command::Validate { plan } => validate(&plan, out),
        Command::Plan(args) => plan(args, g, out),
        Command::Show { file, format } => {
            let doc = PlanArtifact::read(&file)?;
            out.result(&render::render(&doc, format, &out.render_options(format, "Plan")));
            Ok(exit::OK)
        }
        Command::Schema => {
            out.result(&crate::config::schema::plan_schema_text());
            Ok(exit::OK)
        }
    }
}

/// Loads and checks a plan, printing its diagnostics; `None` when it has errors.
fn checked(path: &std::path::Path, out: &Output) -> Option<crate::config::check::Plan> {
    match check_file(path) {
        Ok(plan) => {
            out.diagnostics(&plan.warnings);
            Some(plan)
        }
        Err(diags) => {
            out.diagnostics(&diags);
            None
        }
    }
}

fn validate(path: &std::path::Path, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = checked(path, out) else { return Ok(exit::ERROR) };
    let (diags, rows) = crate::ops::validate::check_inputs(&plan);
    out.diagnostics(&diags);
    if diags.has_errors() {
        out.note(&format!("{} error(s) in {}.", diags.error_count(), plan.file));
        return Ok(exit::ERROR);
    }
    out.result(&format!("Success! {} is valid ({} input row(s) checked).\n", plan.file, rows));
    Ok(exit::OK)
}

fn plan(args: PlanArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = checked(&args.plan, out) else { return Ok(exit::ERROR) };
    let doc = match crate::ops::plan::run(&plan, state_ref(&plan, g)?) {
        Ok(doc) => doc,
        Err(crate::ops::plan::PlanError::Input(d)) => {
            out.diagnostics(&d.0);
            out.note(&format!(
                "Nothing was written: fix the {} input problem(s) above and plan again.",
                d.0.error_count()
            ));
            return Ok(exit::ERROR);
        }
        Err(e) => return Err(e.into()),
    };
    let opts = out.render_options(args.format, "Plan");
    out.result(&render::render(&doc, args.format, &opts));
    if let Some(path) = &args.out {
        std::fs::write(path, doc.to_json())
            .map_err(|e| anyhow::anyhow!("cannot save the plan to {}: {e}", path.display()))?;
        let msg = format!(
            "\nSaved the plan to: {0}\n\nTo make exactly these writes, run:\n    stockshift apply {0}\n",
            path.display()
        );
        if args.format == Format::Human { out.result(&msg) } else { out.note(msg.trim()) }
    }
    Ok(if args.detailed_exitcode && !doc.diff.is_empty() { exit::CHANGES } else { exit::OK })
}

/// The state lineage and serial a plan is made against (none before the first
/// apply): a later apply refuses the plan once the serial moves.
pub fn state_ref(
    plan: &crate::config::check::Plan,
    g: &GlobalArgs,
) -> anyhow::Result<Option<crate::artifact::StateRef>> {
    let state = crate::state::StateStore::open_existing_for(plan, g.state.as_deref())?;
    Ok(state
        .as_ref()
        .map(|s| s.lineage_serial())
        .transpose()?
        .map(|(lineage, serial)| crate::artifact::StateRef { lineage, serial }))
}

/// Parses `--lock-timeout` style durations: `0s`, `30s`, `2m`, `1h30m`.
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let d: jiff::SignedDuration =
        s.parse().map_err(|_| anyhow::anyhow!("invalid duration {s:?}: use e.g. `0s`, `30s`, `2m`"))?;
    if d.is_negative() {
        anyhow::bail!("invalid duration {s:?}: must not be negative");
    }
    Ok(d.unsigned_abs())
}

/// Diagnostics printing helper shared by commands.
pub fn print_diagnostics(out: &Output, d: &Diagnostics) {
    out.diagnostics(d);
}

impl Output {
    /// Render options for a format, honouring the colour settings.
    pub fn render_options(&self, format: Format, title: &str) -> RenderOptions {
        RenderOptions { color: format == Format::Human && self.color(), title: title.into() }
    }
}
