//! `cutover`: the whole runbook as one resumable command.
//!
//! 1. preflight: plan valid, target writable and reachable, state not locked,
//!    thresholds and queue backlog known;
//! 2. freeze on: events are queued, not applied;
//! 3. snapshot: read source and target, save the plan with the run and a copy
//!    of the source;
//! 4. apply the plan (after approval);
//! 5. replay the events queued during the freeze;
//! 6. verdict: compare the target with the expected state (the snapshot with
//!    every event applied) and evaluate every threshold;
//! 7. pass: freeze off. Fail: with `--rollback-on-failure` undo every write the
//!    cutover made (apply and replay), return the replayed events to the queue
//!    and keep the freeze; without it, stop frozen and print the rollback command.
//!
//! Each finished step is recorded in the state store, so a cutover killed in
//! the middle continues at the step it was in when run again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::artifact::{PlanArtifact, StateRef};
use crate::config::check::Plan;
use crate::diff::engine::Engine;
use crate::events::queue::Queue;
use crate::ops::apply::{ApplyOptions, apply, apply_to};
use crate::ops::replay::{applicable, open_snapshot, replay_to, source_folds};
use crate::ops::rollback::plan_rollback_ops;
use crate::provider::{self, CompareMode, RowSink};
use crate::state::{CutoverRow, CutoverStep, OpKind, StateStore, now};

/// How to run a cutover.
pub struct CutoverOptions<'a> {
    pub apply: ApplyOptions,
    pub rollback_on_failure: bool,
    /// Recorded events to queue once the freeze is on (orders arriving during the freeze).
    pub events: Vec<crate::events::event::Event>,
    /// Fulfilment failure rate measured by the order system, when known.
    pub fulfillment_failure_rate: Option<f64>,
    /// Asked before the apply with the plan to be applied; `false` stops the cutover.
    pub approve: &'a mut dyn FnMut(&PlanArtifact) -> bool,
    /// Called as each step finishes (for printing the checklist).
    pub on_step: &'a mut dyn FnMut(&CutoverStep),
    /// Opens the target for preflight, apply, replay and the verdict instead of the
    /// plan's provider (`simulate` injects faults through it); `None`: the plan's.
    pub target: Option<&'a mut dyn FnMut() -> Box<dyn provider::Provider>>,
}

/// One threshold check.
#[derive(Debug, Clone, Serialize)]
pub struct Kpi {
    pub name: String,
    pub value: Option<f64>,
    pub threshold: f64,
    /// `pass`, `breach` or `unknown`.
    pub status: String,
    pub note: String,
}

/// The outcome of a cutover run.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    pub id: String,
    pub plan: String,
    pub started_at: String,
    pub steps: Vec<CutoverStep>,
    pub kpis: Vec<Kpi>,
    /// `pass` or `fail`.
    pub verdict: String,
    /// `unfrozen`, `rolled_back`, `stopped_frozen`, `cancelled`.
    pub decision: String,
    pub rollback_command: Option<String>,
    pub resumed: bool,
    pub data: Value,
}

/// Why a cutover could not continue.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn step_names(n: u32) -> &'static str {
    match n {
        1 => "preflight",
        2 => "freeze on",
        3 => "snapshot",
        4 => "plan and apply",
        5 => "replay",
        6 => "verdict",
        _ => "decision",
    }
}

struct Runner<'p, 'o, 'a> {
    plan: &'p Plan,
    state_dir: PathBuf,
    state: StateStore,
    queue: Queue,
    row: CutoverRow,
    data: Value,
    opts: &'o mut CutoverOptions<'a>,
    steps: Vec<CutoverStep>,
}

impl Runner<'_, '_, '_> {
    fn record(&mut self, n: u32, started: Instant, at: String, ok: bool, detail: String) -> anyhow::Result<()> {
        let step = CutoverStep {
            step: n,
            name: step_names(n).into(),
            status: if ok { "ok" } else { "failed" }.into(),
            started_at: at,
            seconds: started.elapsed().as_secs_f64(),
            detail,
        };
        self.state.cutover_step(&self.row.id, &step, &self.data)?;
        (self.opts.on_step)(&step);
        self.steps.push(step);
        Ok(())
    }

    fn run_dir(&self) -> PathBuf {
        self.state_dir.join("cutovers").join(&self.row.id)
    }

    fn open_target(&mut self) -> Result<Box<dyn provider::Provider>, provider::ProviderError> {
        match self.opts.target.as_mut() {
            Some(open) => Ok(open()),
            None => provider::open(&self.plan.config.target, &self.plan.dir),
        }
    }
}

/// Runs (or resumes) a cutover. See the module docs.
pub fn cutover(plan: &Plan, state_dir: &Path, opts: &mut CutoverOptions<'_>) -> Result<CutoverReport, CutoverError> {
    let mut state = StateStore::open_for(plan, Some(state_dir)).map_err(anyhow::Error::from)?;
    let queue = crate::events::open_queue(plan, Some(state_dir))?;
    let (row, resumed) = match state.running_cutover().map_err(anyhow::Error::from)? {
        Some(r) if r.plan_sha256 == plan.sha256 => (r, true),
        Some(r) => {
            return Err(CutoverError::Refused(format!(
                "cutover {} of plan `{}` is still running (killed?) and this plan file differs from the one it started with.\nRun it to the end with the same plan file, or roll it back: `stockshift rollback {} --cutover-id {} --auto-approve`.",
                r.id, r.plan_name, plan.file, r.id
            )));
        }
        None => (state.begin_cutover(&plan.config.name, &plan.sha256).map_err(anyhow::Error::from)?, false),
    };
    let data = if row.data.is_object() { row.data.clone() } else { json!({}) };
    let done = row.step;
    let mut r = Runner { plan, state_dir: state_dir.to_path_buf(), state, queue, row, data, opts, steps: vec![] };
    r.steps = r
        .state
        .cutover_steps(&r.row.id)
        .map_err(anyhow::Error::from)?
        .into_iter()
        .filter(|s| s.status == "ok")
        .collect();
    for s in r.steps.clone() {
        (r.opts.on_step)(&CutoverStep { detail: format!("{} (done before the restart)", s.detail), ..s });
    }
    let outcome = run_steps(&mut r, done);
    match outcome {
        Ok(Some(report_parts)) => finish(r, report_parts, resumed),
        Ok(None) => finish(r, ("fail".into(), "cancelled".into(), vec![]), resumed),
        Err(e) => Err(e),
    }
}

type Verdict = (String, String, Vec<Kpi>);

fn run_steps(r: &mut Runner<'_, '_, '_>, done: u32) -> Result<Option<Verdict>, CutoverError> {
    let plan = r.plan;
    // 1. Preflight.
    if done < 1 {
        let (t, at) = (Instant::now(), now());
        let mut target = r.open_target().map_err(anyhow::Error::from)?;
        if target.capabilities().compare == CompareMode::ReadOnly {
            let detail = format!("the target ({}) cannot be written", target.describe());
            r.record(1, t, at, false, detail.clone()).map_err(CutoverError::Other)?;
            return Err(CutoverError::Refused(format!(
                "preflight failed: {detail}; a cutover needs a writable target"
            )));
        }
        if let Err(e) = target.read_keys(&[]) {
            let detail = format!("the target is not reachable: {e}");
            r.record(1, t, at, false, detail.clone()).map_err(CutoverError::Other)?;
            return Err(CutoverError::Refused(format!("preflight failed: {detail}")));
        }
        if let Some(lock) = r.state.lock_info().map_err(anyhow::Error::from)? {
            let detail = format!("the state is locked by {} (pid {}, lock {})", lock.operation, lock.pid, lock.id);
            r.record(1, t, at, false, detail.clone()).map_err(CutoverError::Other)?;
            return Err(CutoverError::Refused(format!("preflight failed: {detail}")));
        }
        let backlog = r.queue.queued_count().map_err(anyhow::Error::from)?;
        let th = &plan.config.thresholds;
        r.data["queued_before"] = json!(backlog);
        let detail = format!(
            "target {} writable; {backlog} event(s) already queued; thresholds: drift ratio {}, webhook failures {}, backlog {}",
            target.describe(),
            th.max_drift_ratio,
            th.max_webhook_failure_rate,
            th.max_replay_backlog
        );
        r.record(1, t, at, true, detail).map_err(CutoverError::Other)?;
    }
    // 2. Freeze on (and the recorded events that arrive during it).
    if done < 2 {
        let (t, at) = (Instant::now(), now());
        r.queue.start_freeze(&format!("cutover {}", r.row.id)).map_err(anyhow::Error::from)?;
        let mut detail = "events are queued, not applied".to_string();
        if !r.opts.events.is_empty() {
            let events = &r.opts.events;
            let inserted = r.queue.append(events).map_err(anyhow::Error::from)?;
            let new = inserted.iter().filter(|i| i.is_accepted()).count();
            detail.push_str(&format!(
                "; {new} event(s) received during the freeze ({} duplicate(s) dropped)",
                events.len() - new
            ));
        }
        r.record(2, t, at, true, detail).map_err(CutoverError::Other)?;
    }
    // 3. Snapshot: the plan made now, saved with the run.
    let saved = r.run_dir().join("plan.json");
    if done < 3 {
        let (t, at) = (Instant::now(), now());
        let state_ref = r.state.lineage_serial().map_err(anyhow::Error::from)?;
        let doc = crate::ops::plan::run(plan, Some(StateRef { lineage: state_ref.0, serial: state_ref.1 }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::create_dir_all(r.run_dir()).map_err(anyhow::Error::from)?;
        std::fs::write(&saved, doc.to_json()).map_err(anyhow::Error::from)?;
        let src = doc.inputs.iter().find(|i| i.role == "source").map(|i| i.sha256.clone()).unwrap_or_default();
        r.data["plan"] = json!(saved.display().to_string());
        r.data["source_sha256"] = json!(src);
        let detail = format!(
            "source sha256 {}; plan saved to {} ({} to create, {} to update, {} unchanged)",
            &src[..12.min(src.len())],
            saved.display(),
            doc.diff.summary.create,
            doc.diff.summary.update,
            doc.diff.summary.unchanged
        );
        r.record(3, t, at, true, detail).map_err(CutoverError::Other)?;
    }
    // 4. Plan and apply.
    if done < 4 {
        let (t, at) = (Instant::now(), now());
        let doc = PlanArtifact::read(&saved).map_err(anyhow::Error::from)?;
        if !(r.opts.approve)(&doc) {
            r.record(4, t, at, false, "not approved; nothing was written".into()).map_err(CutoverError::Other)?;
            return Ok(None);
        }
        let mut target = r.open_target().map_err(anyhow::Error::from)?;
        let rep = match apply_to(plan, &doc, OpKind::Apply, &mut r.state, target.as_mut(), &r.opts.apply) {
            Ok(rep) => rep,
            Err(e) => {
                r.record(4, t, at, false, format!("apply failed: {e}")).map_err(CutoverError::Other)?;
                return Err(CutoverError::Other(e.into()));
            }
        };
        r.data["apply_op"] = json!(rep.op.id);
        let c = rep.counts;
        let ok = c.failed == 0;
        let detail = format!(
            "operation {}: {} applied, {} already applied, {} conflicts, {} failed",
            rep.op.id, c.applied, c.already_applied, c.conflicts, c.failed
        );
        r.record(4, t, at, ok, detail).map_err(CutoverError::Other)?;
        if !ok {
            return Ok(Some(decide(r, false, vec![])?));
        }
    }
    // 5. Replay the queued events.
    if done < 5 {
        let (t, at) = (Instant::now(), now());
        let mut target = r.open_target().map_err(anyhow::Error::from)?;
        let rep = replay_to(plan, &mut r.state, &mut r.queue, target.as_mut(), &r.opts.apply)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut settled: Vec<i64> =
            r.data["settled"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
        settled.extend(&rep.settled);
        r.data["settled"] = json!(settled);
        if let Some(op) = &rep.op_id {
            let mut ops: Vec<Value> = r.data["replay_ops"].as_array().cloned().unwrap_or_default();
            ops.push(json!(op));
            r.data["replay_ops"] = Value::Array(ops);
        }
        r.data["oversells"] = json!(rep.oversells);
        r.data["events_not_applied"] = json!(rep.failed);
        r.record(5, t, at, true, rep.summary()).map_err(CutoverError::Other)?;
    }
    // 6. Verdict against the expected state.
    let (t, at) = (Instant::now(), now());
    let kpis = verdict(r)?;
    let breached: Vec<&Kpi> = kpis.iter().filter(|k| k.status == "breach").collect();
    let detail = if breached.is_empty() {
        "every threshold holds".to_string()
    } else {
        breached.iter().map(|k| k.note.clone()).collect::<Vec<_>>().join("; ")
    };
    r.data["kpis"] = serde_json::to_value(&kpis).unwrap_or(Value::Null);
    r.record(6, t, at, breached.is_empty(), detail).map_err(CutoverError::Other)?;
    let pass = breached.is_empty();
    Ok(Some(decide(r, pass, kpis)?))
}

/// Step 7: unfreeze, or roll back and keep the freeze.
fn decide(r: &mut Runner<'_, '_, '_>, pass: bool, kpis: Vec<Kpi>) -> Result<Verdict, CutoverError> {
    let (t, at) = (Instant::now(), now());
    if pass {
        r.queue.stop_freeze(&format!("cutover {}", r.row.id)).map_err(anyhow::Error::from)?;
        r.record(7, t, at, true, "freeze off; continuous sync may start (`stockshift replay PLAN --follow`)".into())
            .map_err(CutoverError::Other)?;
        return Ok(("pass".into(), "unfrozen".into(), kpis));
    }
    if !r.opts.rollback_on_failure {
        let cmd = format!("stockshift rollback {} --cutover-id {} --auto-approve", r.plan.file, r.row.id);
        r.data["rollback_command"] = json!(cmd);
        r.record(7, t, at, true, format!("stopped, still frozen; to roll back run: {cmd}"))
            .map_err(CutoverError::Other)?;
        return Ok(("fail".into(), "stopped_frozen".into(), kpis));
    }
    let detail = rollback_cutover(r.plan, &mut r.state, &mut r.queue, &r.row.id, &r.data, &r.opts.apply)?;
    r.record(7, t, at, true, format!("rolled back, still frozen: {detail}")).map_err(CutoverError::Other)?;
    Ok(("fail".into(), "rolled_back".into(), kpis))
}

/// Undoes every write of a cutover (its apply and replays), keeping changes
/// made since, and returns the events it replayed to the queue.
pub fn rollback_cutover(
    plan: &Plan,
    state: &mut StateStore,
    queue: &mut Queue,
    cutover_id: &str,
    data: &Value,
    opts: &ApplyOptions,
) -> Result<String, CutoverError> {
    let mut ids: Vec<String> = data["apply_op"].as_str().map(|s| vec![s.to_owned()]).unwrap_or_default();
    ids.extend(data["replay_ops"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)));
    let mut ops = Vec::new();
    for id in &ids {
        if let Some(op) = state.operation(id).map_err(anyhow::Error::from)? {
            ops.push(op);
        }
    }
    let mut detail = String::from("nothing was written");
    if !ops.is_empty() && ops[0].rolled_back_by.is_none() {
        let rb = plan_rollback_ops(plan, state, ops.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let rep = apply(plan, &rb.doc, OpKind::Rollback, state, opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        for o in ops.iter().skip(1) {
            state.mark_rolled_back(&o.id, &rep.op.id).map_err(anyhow::Error::from)?;
        }
        let c = rep.counts;
        detail =
            format!("operation {}: {} applied, {} conflicts, {} failed", rep.op.id, c.applied, c.conflicts, c.failed);
    }
    let settled: Vec<i64> =
        data["settled"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
    let n = queue.requeue_seqs(&settled).map_err(anyhow::Error::from)?;
    queue.start_freeze(&format!("cutover {cutover_id} rollback")).map_err(anyhow::Error::from)?;
    state.finish_cutover(cutover_id, "rolled_back", data).map_err(anyhow::Error::from)?;
    Ok(format!("{detail}; {n} replayed event(s) returned to the queue"))
}

/// Step 6: the target against the snapshot with every event applied, and the KPIs.
fn verdict(r: &mut Runner<'_, '_, '_>) -> Result<Vec<Kpi>, CutoverError> {
    let plan = r.plan;
    let th = &plan.config.thresholds;
    let snapshot = r.state.last_snapshot().map_err(anyhow::Error::from)?;
    let since = snapshot.as_ref().map(|s| s.2.clone()).unwrap_or_default();
    let folds = source_folds(plan, &r.queue, &since).map_err(anyhow::Error::from)?;
    let mut engine = Engine::new(&plan.mapping);
    struct Feed<'e, 'm, 'f> {
        engine: &'e mut Engine<'m>,
        target: bool,
        folds: &'f foldhash::HashMap<(String, String), crate::ops::replay::Folded>,
        seen: std::collections::HashSet<(String, String)>,
    }
    impl RowSink for Feed<'_, '_, '_> {
        fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
            if self.target {
                return self.engine.add_target(sku, location, qty, line);
            }
            let key = (sku.to_owned(), location.to_owned());
            let q = match self.folds.get(&key) {
                Some(f) => {
                    self.seen.insert(key);
                    f.value(Some(qty))
                }
                None => qty,
            };
            self.engine.add_source(sku, location, q, line);
        }
        fn problem(&mut self, _: u64, _: usize, _: String, _: String) {}
    }
    let mut target = r.open_target().map_err(anyhow::Error::from)?;
    let mut feed = Feed { engine: &mut engine, target: true, folds: &folds, seen: Default::default() };
    target.read(&mut feed).map_err(anyhow::Error::from)?;
    if let Some((_, path, _)) = &snapshot {
        feed.target = false;
        open_snapshot(&plan.config.source, path).and_then(|mut p| p.read(&mut feed)).map_err(anyhow::Error::from)?;
    }
    let seen = std::mem::take(&mut feed.seen);
    for (k, f) in &folds {
        // Events replay could not apply are counted as webhook failures, not as drift.
        if !seen.contains(k) && applicable(&plan.mapping, &k.0, &k.1) {
            engine.add_source(&k.0, &k.1, f.value(None), 0);
        }
    }
    let (diff, _) = engine.finish().map_err(|(issues, n)| {
        anyhow::anyhow!(
            "{n} input problem(s) while computing the expected state, first: {}",
            issues.first().map(|i| i.summary.clone()).unwrap_or_default()
        )
    })?;
    let keys = diff.summary.create + diff.summary.update + diff.summary.unchanged;
    let tolerance = th.max_abs_drift as i64;
    let drifted = diff
        .changes
        .iter()
        .filter(|c| (c.after - c.before.unwrap_or(0)).abs() > tolerance || c.before.is_none())
        .count() as u64;
    let ratio = if keys == 0 { 0.0 } else { drifted as f64 / keys as f64 };
    metrics::gauge!("stockshift_drift_keys").set(drifted as f64);
    metrics::gauge!("stockshift_drift_ratio").set(ratio);

    let counts = r.queue.counts().map_err(anyhow::Error::from)?;
    let total: u64 = counts.values().sum();
    let queued = counts.get(&crate::events::queue::Status::Queued).copied().unwrap_or(0);
    let failed = counts.get(&crate::events::queue::Status::Failed).copied().unwrap_or(0);
    let not_applied = queued + failed;
    let webhook_rate = if total == 0 { 0.0 } else { not_applied as f64 / total as f64 };
    let kpi = |name: &str, value: Option<f64>, threshold: f64, note: String| {
        let status = match value {
            None => "unknown",
            Some(v) if v > threshold => "breach",
            Some(_) => "pass",
        };
        Kpi { name: name.into(), value, threshold, status: status.into(), note }
    };
    r.data["drift"] = json!({"keys": keys, "drifted": drifted, "drift_ratio": ratio});
    Ok(vec![
        kpi(
            "drift_ratio",
            Some(ratio),
            th.max_drift_ratio,
            format!(
                "drift ratio {ratio:.6} ({drifted} of {keys} keys differ from the expected state) vs max {}",
                th.max_drift_ratio
            ),
        ),
        kpi(
            "webhook_failure_rate",
            Some(webhook_rate),
            th.max_webhook_failure_rate,
            format!(
                "webhook failure rate {webhook_rate:.4} ({not_applied} of {total} events not applied; rejected deliveries are counted by serve's metrics) vs max {}",
                th.max_webhook_failure_rate
            ),
        ),
        kpi(
            "replay_backlog",
            Some(queued as f64),
            th.max_replay_backlog as f64,
            format!("replay backlog {queued} vs max {}", th.max_replay_backlog),
        ),
        kpi(
            "fulfillment_failure_rate",
            r.opts.fulfillment_failure_rate,
            th.max_fulfillment_failure_rate,
            match r.opts.fulfillment_failure_rate {
                Some(v) => format!("fulfilment failure rate {v} vs max {}", th.max_fulfillment_failure_rate),
                None => {
                    "fulfilment failure rate unknown (pass --fulfillment-failure-rate from the order system)".into()
                }
            },
        ),
    ])
}

fn finish(mut r: Runner<'_, '_, '_>, v: Verdict, resumed: bool) -> Result<CutoverReport, CutoverError> {
    let (verdict, decision, kpis) = v;
    let status = match decision.as_str() {
        "unfrozen" => "passed",
        "rolled_back" => "rolled_back",
        "cancelled" => "cancelled",
        _ => "failed",
    };
    r.data["verdict"] = json!(verdict);
    r.data["decision"] = json!(decision);
    r.state.finish_cutover(&r.row.id, status, &r.data).map_err(anyhow::Error::from)?;
    let report = CutoverReport {
        id: r.row.id.clone(),
        plan: r.plan.file.clone(),
        started_at: r.row.started_at.clone(),
        steps: r.steps.clone(),
        kpis,
        verdict,
        decision,
        rollback_command: r.data["rollback_command"].as_str().map(str::to_owned),
        resumed,
        data: r.data.clone(),
    };
    let dir = r.run_dir();
    std::fs::create_dir_all(&dir).map_err(anyhow::Error::from)?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)? + "\n")
        .map_err(anyhow::Error::from)?;
    std::fs::write(dir.join("report.md"), markdown(&report)).map_err(anyhow::Error::from)?;
    Ok(report)
}

/// The run report as Markdown (for a ticket or a pull request).
pub fn markdown(r: &CutoverReport) -> String {
    let mut s = format!("## Cutover `{}`\n\nPlan `{}`, started {}.\n\n", r.id, r.plan, r.started_at);
    s.push_str(&format!(
        "**Verdict: {}** — {}\n\n| step | result | seconds | detail |\n| --- | --- | ---: | --- |\n",
        r.verdict,
        r.decision.replace('_', " ")
    ));
    for st in &r.steps {
        s.push_str(&format!(
            "| {}. {} | {} | {:.2} | {} |\n",
            st.step,
            st.name,
            st.status,
            st.seconds,
            st.detail.replace('|', "\\|")
        ));
    }
    s.push_str("\n| KPI | value | threshold | status |\n| --- | ---: | ---: | --- |\n");
    for k in &r.kpis {
        let v = k.value.map_or("unknown".to_string(), |v| format!("{v:.6}"));
        s.push_str(&format!("| {} | {v} | {} | {} |\n", k.name, k.threshold, k.status));
    }
    if let Some(cmd) = &r.rollback_command {
        s.push_str(&format!("\nTo roll back:\n\n```sh\n{cmd}\n```\n"));
    }
    s
}
