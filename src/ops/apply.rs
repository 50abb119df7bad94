//! `apply`: make a plan's writes, conditionally, journaled, resumable.
//!
//! For each batch (sized by the provider's capabilities): journal the intent,
//! make the conditional writes ("set to B where still A"), record every outcome
//! in the audit log. A killed apply leaves intents without outcomes; running the
//! same plan again resumes the same operation, re-sends only the writes without
//! an outcome, and the compare-and-set turns any write that did land into
//! "already applied". Nothing is lost and nothing is written twice.

use std::time::{Duration, Instant};

use crate::artifact::PlanArtifact;
use crate::config::check::Plan;
use crate::provider::{self, Provider, ProviderError, Write, WriteOutcome};
use crate::state::lock::LockError;
use crate::state::{Actor, Counts, NewOperation, OpKind, Operation, StateError, StateStore, WriteRecord};

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Exceed `limits.max_writes` / `limits.max_zeroed`.
    pub allow_large: bool,
    pub lock_timeout: Duration,
    /// Show a progress bar on stderr.
    pub progress: bool,
    pub actor: Actor,
    /// Attempts per batch when the provider reports a transient error.
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt up to `max_backoff`, with full jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Journal each batch's writes with its intent (off when a saved plan file holds them).
    pub journal_writes: bool,
}

impl ApplyOptions {
    pub fn new(actor: Actor) -> Self {
        ApplyOptions {
            allow_large: false,
            lock_timeout: Duration::ZERO,
            progress: false,
            actor,
            max_attempts: 6,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            journal_writes: true,
        }
    }
}

/// A write refused because the target no longer held the expected value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub sku: String,
    pub location: String,
    pub expected: Option<i64>,
    pub found: Option<i64>,
    pub wanted: i64,
}

/// A write that failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub sku: String,
    pub location: String,
    pub message: String,
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub op: Operation,
    /// Counts over the whole operation (including earlier, interrupted runs).
    pub counts: Counts,
    /// Conflicts and failures seen in this run.
    pub conflicts: Vec<Conflict>,
    pub failures: Vec<Failure>,
    /// True when this run continued an interrupted operation.
    pub resumed: bool,
    /// True when the operation had already finished: nothing was sent.
    pub already_done: bool,
    pub elapsed: Duration,
    /// Writes sent to the target in this run.
    pub sent: u64,
    /// A dead holder's lock that was taken over.
    pub took_over_lock: Option<crate::state::lock::LockInfo>,
}

/// Why an apply did not run (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "Saved plan is stale: {0}\n\nThe plan can no longer be applied because what it was made from has changed. Run `stockshift plan` again and review the new plan."
    )]
    Stale(String),
    #[error(
        "The plan makes {what}, over the limit of {limit} (limits.{key}).\n\nReview the plan; if it is right, run again with --allow-large, or raise limits.{key} in the plan file."
    )]
    TooLarge { what: String, limit: u64, key: &'static str },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}\n\nWrites made before this error are recorded; run the same apply again to resume.")]
    Provider(#[from] ProviderError),
}

/// Checks that a saved plan still describes the world: the plan file, every
/// input but the target (the target is guarded per key by compare-and-set),
/// and the state serial.
pub fn check_stale(plan: &Plan, doc: &PlanArtifact, state: &StateStore) -> Result<Option<Operation>, ApplyError> {
    if doc.plan.config_sha256 != plan.sha256 {
        return Err(ApplyError::Stale(format!("the plan file {} changed since the plan was made", plan.file)));
    }
    for input in doc.inputs.iter().filter(|i| i.role != "target") {
        let now = crate::artifact::sha256_file(&plan.resolve(&input.path));
        if now.as_deref() != Some(input.sha256.as_str()) {
            return Err(ApplyError::Stale(format!(
                "the {} file {} changed since the plan was made",
                input.role.replace('_', " "),
                plan.shown(&input.path)
            )));
        }
    }
    let (lineage, serial) = state.lineage_serial()?;
    // The same plan document resumes (or re-confirms) its own operation.
    let own = state.operation_for_artifact(&doc.sha256())?;
    if let Some(op) = &own {
        if op.serial == serial {
            return Ok(own);
        }
        return Err(ApplyError::Stale(format!(
            "this plan was applied as operation {} and the state has moved since (serial {} -> {serial})",
            op.id, op.serial
        )));
    }
    let (plan_lineage, plan_serial) = match &doc.state {
        Some(s) => (Some(s.lineage.as_str()), s.serial),
        None => (None, 0),
    };
    if plan_lineage.is_some_and(|l| l != lineage) {
        return Err(ApplyError::Stale("the plan was made against a different state (lineage differs)".into()));
    }
    if plan_serial != serial {
        return Err(ApplyError::Stale(format!(
            "the state was changed by another operation after the plan was made (serial {plan_serial} -> {serial})"
        )));
    }
    Ok(None)
}

/// Refuses writes beyond the plan's blast-radius limits.
pub fn check_limits(plan: &Plan, doc: &PlanArtifact, allow_large: bool) -> Result<(), ApplyError> {
    if allow_large {
        return Ok(());
    }
    let l = &plan.config.limits;
    let writes = doc.diff.changes.len() as u64;
    if writes > l.max_writes {
        return Err(ApplyError::TooLarge { what: format!("{writes} writes"), limit: l.max_writes, key: "max_writes" });
    }
    let zeroed = doc.diff.zeroed() as u64;
    if zeroed > l.max_zeroed {
        return Err(ApplyError::TooLarge {
            what: format!("{zeroed} writes that take a key with stock to 0"),
            limit: l.max_zeroed,
            key: "max_zeroed",
        });
    }
    Ok(())
}

/// Applies a plan document to the plan's target, under the state lock.
pub fn apply(
    plan: &Plan,
    doc: &PlanArtifact,
    kind: OpKind,
    state: &mut StateStore,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let mut target = provider::open(&plan.config.target, &plan.dir)?;
    apply_to(plan, doc, kind, state, target.as_mut(), opts)
}

/// [`apply`] with an explicit target provider (tests use fakes).
pub fn apply_to(
    plan: &Plan,
    doc: &PlanArtifact,
    kind: OpKind,
    state: &mut StateStore,
    target: &mut dyn Provider,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let started = Instant::now();
    // The lock guard lives in its own store handle so it is released on every path.
    let lock_store = state.reopen()?;
    let guard = lock_store.lock(kind.as_str(), &opts.actor, opts.lock_timeout)?;
    let took_over_lock = guard.took_over.clone();
    let own = check_stale(plan, doc, state)?;
    check_limits(plan, doc, opts.allow_large)?;

    let artifact_sha = doc.sha256();
    let changes = &doc.diff.changes;
    let write_of = |i: usize| {
        let c = &changes[i];
        Write { sku: c.sku.clone(), location: c.location.clone(), expected: c.before, new: c.after }
    };

    // `finished`: every write already has a final outcome.
    let (op, done, resumed, finished) = match own {
        // Finished without conflicts or failures: no need to load every outcome.
        Some(op) if op.status == "complete" => (op, Default::default(), false, true),
        Some(op) => {
            let done = state.done_seqs_final(&op.id)?;
            let resumed = done.len() < changes.len();
            (op, done, resumed, !resumed)
        }
        None => {
            recover_interrupted(state, target)?;
            let op = state.begin(
                kind,
                &NewOperation {
                    plan_name: &doc.plan.name,
                    plan_sha256: &doc.plan.config_sha256,
                    artifact_sha256: &artifact_sha,
                    writes: changes.len() as u64,
                    rollback_of: doc.rollback_of.as_deref(),
                },
                &opts.actor,
            )?;
            (op, Default::default(), false, false)
        }
    };
    if finished {
        // Finished before: a no-op that succeeds, every write already applied.
        let c = state.counts(&op.id)?;
        let counts = Counts { applied: 0, already_applied: c.applied + c.already_applied, ..c };
        drop(guard);
        return Ok(ApplyReport {
            op,
            counts,
            conflicts: vec![],
            failures: vec![],
            resumed: false,
            already_done: true,
            elapsed: started.elapsed(),
            sent: 0,
            took_over_lock,
        });
    }
    if resumed {
        state.resume(&op.id)?;
    }

    if kind == OpKind::Apply {
        save_snapshot(plan, doc, state, &op.id)?;
    }
    let pending: Vec<usize> = (0..changes.len()).filter(|i| !done.contains(&(*i as u64))).collect();
    let mut opts = opts.clone();
    if let Some(path) = &doc.file_path {
        state.set_artifact_path(&op.id, &path.display().to_string())?;
        opts.journal_writes = false;
    }
    let run = execute(state, &op.id, target, &pending, &write_of, &opts)?;
    let (conflicts, failures, sent) = (run.conflicts, run.failures, run.sent);
    let counts = state.counts(&op.id)?;
    state.finish(&op.id, counts)?;
    // A rollback with conflicts leaves the operation open, so running rollback again
    // offers the keys that were not restored (and only those).
    if let Some(of) = &doc.rollback_of
        && counts.conflicts + counts.failed == 0
    {
        state.mark_rolled_back(of, &op.id)?;
    }
    let op = state.operation(&op.id)?.unwrap_or(op);
    drop(guard);
    Ok(ApplyReport {
        op,
        counts,
        conflicts,
        failures,
        resumed,
        already_done: false,
        elapsed: started.elapsed(),
        sent,
        took_over_lock,
    })
}

/// What one run of [`execute`] saw.
#[derive(Debug, Default)]
pub struct ExecRun {
    pub conflicts: Vec<Conflict>,
    pub failures: Vec<Failure>,
    pub sent: u64,
}

/// Accounts for operations killed mid-batch before a new one starts: each write
/// journaled without an outcome is read back from the target, and the ones that
/// landed are recorded as applied, so `rollback` and `audit` see them. The killed
/// operation is then marked `interrupted`. (Re-running the same saved plan
/// resumes it instead; this is for a new plan made after the kill.)
pub fn recover_interrupted(state: &mut StateStore, target: &mut dyn Provider) -> Result<u64, ApplyError> {
    recover_interrupted_in(state, target, None)
}

/// [`recover_interrupted`] for the operations of one scope (see
/// [`StateStore::begin_scoped`]; `None`: whole-state operations). The caller
/// holds the lock that keeps any other process from running them.
pub fn recover_interrupted_in(
    state: &mut StateStore,
    target: &mut dyn Provider,
    scope: Option<&str>,
) -> Result<u64, ApplyError> {
    let mut pending: Vec<(String, u64, String, String, Option<i64>, i64)> = Vec::new();
    for intent in state.unfinished_intents_in(scope)? {
        if !intent.writes.is_empty() {
            pending.extend(
                intent.writes.into_iter().map(|(seq, sku, loc, b, a)| (intent.op_id.clone(), seq, sku, loc, b, a)),
            );
        } else if let Some(path) = &intent.artifact_path {
            // The saved plan holds the writes, in seq order.
            if let Ok(doc) = PlanArtifact::read(std::path::Path::new(path)) {
                for seq in intent.missing {
                    if let Some(c) = doc.diff.changes.get(seq as usize) {
                        pending.push((intent.op_id.clone(), seq, c.sku.clone(), c.location.clone(), c.before, c.after));
                    }
                }
            }
        }
    }
    let mut ops: Vec<String> = state
        .operations()?
        .into_iter()
        .filter(|o| o.status == "running" && o.scope.as_deref() == scope)
        .map(|o| o.id)
        .collect();
    ops.dedup();
    if pending.is_empty() {
        for op in &ops {
            state.mark_interrupted(op)?;
        }
        return Ok(0);
    }
    let keys: Vec<(String, String)> = pending.iter().map(|p| (p.2.clone(), p.3.clone())).collect();
    let current = target.read_keys(&keys)?;
    let landed = WriteOutcome::Applied;
    let mut by_op: std::collections::BTreeMap<&str, Vec<WriteRecord<'_>>> = Default::default();
    for (p, now) in pending.iter().zip(&current) {
        if *now == Some(p.5) {
            by_op.entry(p.0.as_str()).or_default().push(WriteRecord {
                seq: p.1,
                sku: &p.2,
                location: &p.3,
                before: p.4,
                after: p.5,
                outcome: &landed,
            });
        }
    }
    let mut n = 0;
    for (op, records) in by_op {
        n += records.len() as u64;
        state.record(op, &records)?;
    }
    for op in &ops {
        state.mark_interrupted(op)?;
    }
    Ok(n)
}

/// The write loop shared by apply, rollback and replay: for each batch, journal
/// the intent, make the conditional writes (retrying transient errors), record
/// every outcome in the audit log. `pending` are write sequence numbers;
/// `write_of(seq)` builds each write.
pub fn execute(
    state: &mut StateStore,
    op_id: &str,
    target: &mut dyn Provider,
    pending: &[usize],
    write_of: &dyn Fn(usize) -> Write,
    opts: &ApplyOptions,
) -> Result<ExecRun, ApplyError> {
    target.bind_operation(op_id);
    let cap = target.capabilities();
    let batch_size = cap.max_batch.max(1);
    let bar = progress_bar(opts.progress, pending.len() as u64);
    let mut run = ExecRun::default();
    let mut pace = Pace::new(cap.max_requests_per_sec);
    for chunk in pending.chunks(batch_size) {
        let first = chunk[0] as u64;
        let last = *chunk.last().expect("chunks are never empty") as u64;
        let batch: Vec<Write> = chunk.iter().map(|&i| write_of(i)).collect();
        let journal: Vec<(u64, &str, &str, Option<i64>, i64)> = chunk
            .iter()
            .zip(&batch)
            .map(|(&i, w)| (i as u64, w.sku.as_str(), w.location.as_str(), w.expected, w.new))
            .collect();
        state.intent(op_id, first, last, &journal)?;
        pace.wait();
        let outcomes = write_with_retry(target, &batch, opts)?;
        run.sent += batch.len() as u64;
        let records: Vec<WriteRecord<'_>> = chunk
            .iter()
            .zip(&batch)
            .zip(&outcomes)
            .map(|((&i, w), o)| WriteRecord {
                seq: i as u64,
                sku: &w.sku,
                location: &w.location,
                before: w.expected,
                after: w.new,
                outcome: o,
            })
            .collect();
        state.record(op_id, &records)?;
        for (w, o) in batch.iter().zip(&outcomes) {
            match o {
                WriteOutcome::Conflict { found } => run.conflicts.push(Conflict {
                    sku: w.sku.clone(),
                    location: w.location.clone(),
                    expected: w.expected,
                    found: *found,
                    wanted: w.new,
                }),
                WriteOutcome::Failed { message, .. } => run.failures.push(Failure {
                    sku: w.sku.clone(),
                    location: w.location.clone(),
                    message: message.clone(),
                }),
                _ => {}
            }
        }
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
        }
        crate::ops::metrics::writes(&outcomes);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(run)
}

/// Keeps a copy of the source snapshot an apply used, in `<state>/snapshots/`,
/// named by its SHA-256, so `replay` and `rollback` can recompute from exactly
/// what was applied even after the source file is overwritten.
pub fn save_snapshot(plan: &Plan, doc: &PlanArtifact, state: &mut StateStore, op_id: &str) -> Result<(), ApplyError> {
    let Some(input) = doc.inputs.iter().find(|i| i.role == "source") else { return Ok(()) };
    let from = plan.resolve(&input.path);
    let ext = from.extension().and_then(|e| e.to_str()).unwrap_or("snapshot");
    let dir = state.dir().join("snapshots");
    let to = dir.join(format!("{}.{ext}", input.sha256));
    let io = |e: std::io::Error| StateError::Io { path: to.display().to_string(), message: e.to_string() };
    if !to.is_file() {
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(".{}.tmp", input.sha256));
        std::fs::copy(&from, &tmp).map_err(io)?;
        std::fs::rename(&tmp, &to).map_err(io)?;
    }
    state.set_snapshot(op_id, &to.display().to_string(), &input.sha256)?;
    Ok(())
}

/// Sends one batch, retrying transient provider errors with capped, jittered
/// exponential backoff. The writes are conditional, so a batch that landed
/// before a lost reply comes back as "already applied" on the retry.
fn write_with_retry(
    target: &mut dyn Provider,
    batch: &[Write],
    opts: &ApplyOptions,
) -> Result<Vec<WriteOutcome>, ProviderError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match target.write_batch(batch) {
            Ok(outcomes) => {
                // A per-write retriable failure is retried with the rest of the batch.
                if attempt < opts.max_attempts
                    && outcomes.iter().any(|o| matches!(o, WriteOutcome::Failed { retriable: true, .. }))
                {
                    let retry: Vec<usize> = outcomes
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| matches!(o, WriteOutcome::Failed { retriable: true, .. }))
                        .map(|(i, _)| i)
                        .collect();
                    std::thread::sleep(backoff(attempt, opts));
                    let again: Vec<Write> = retry.iter().map(|&i| batch[i].clone()).collect();
                    let sub = write_with_retry(
                        target,
                        &again,
                        &ApplyOptions { max_attempts: opts.max_attempts - attempt, ..opts.clone() },
                    )?;
                    let mut outcomes = outcomes;
                    for (k, i) in retry.into_iter().enumerate() {
                        outcomes[i] = sub[k].clone();
                    }
                    return Ok(outcomes);
                }
                return Ok(outcomes);
            }
            Err(ProviderError::Unavailable { .. }) if attempt < opts.max_attempts => {
                std::thread::sleep(backoff(attempt, opts));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2^attempt)).
fn backoff(attempt: u32, opts: &ApplyOptions) -> Duration {
    let ceiling = opts.base_backoff.saturating_mul(1u32 << attempt.min(16)).min(opts.max_backoff);
    let nanos = ceiling.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(jitter_seed() % nanos)
}

fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Spaces requests to a provider's fixed request rate.
struct Pace {
    every: Option<Duration>,
    next: Instant,
}

impl Pace {
    fn new(rate: Option<f64>) -> Self {
        Pace { every: rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r)), next: Instant::now() }
    }
    fn wait(&mut self) {
        if let Some(every) = self.every {
            let now = Instant::now();
            if self.next > now {
                std::thread::sleep(self.next - now);
            }
            self.next = self.next.max(now) + every;
        }
    }
}

fn progress_bar(enabled: bool, len: u64) -> Option<indicatif::ProgressBar> {
    if !enabled || len < 2 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} writes  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// The closing summary line.
pub fn summary_line(title: &str, c: &Counts) -> String {
    format!(
        "{title} complete: {} applied, {} already applied, {} conflicts, {} failed.",
        c.applied, c.already_applied, c.conflicts, c.failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Capabilities, CompareMode, ReadInfo, RowSink};

    /// A provider that fails transiently a set number of times.
    struct Flaky {
        fail_times: u32,
        calls: u32,
    }

    impl Provider for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities { compare: CompareMode::Native, max_batch: 10, max_requests_per_sec: None }
        }
        fn read(&mut self, _: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
            Ok(ReadInfo::default())
        }
        fn write_batch(&mut self, w: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
            self.calls += 1;
            if self.calls <= self.fail_times {
                return Err(ProviderError::Unavailable { what: "flaky".into(), message: "503".into() });
            }
            Ok(vec![WriteOutcome::Applied; w.len()])
        }
    }

    fn opts() -> ApplyOptions {
        ApplyOptions {
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            ..ApplyOptions::new(Actor::current("test"))
        }
    }

    #[test]
    fn transient_errors_are_retried_then_given_up() {
        let w = vec![Write { sku: "A".into(), location: "W".into(), expected: Some(1), new: 2 }];
        let mut p = Flaky { fail_times: 3, calls: 0 };
        assert_eq!(write_with_retry(&mut p, &w, &opts()).unwrap(), vec![WriteOutcome::Applied]);
        assert_eq!(p.calls, 4);
        let mut p = Flaky { fail_times: 100, calls: 0 };
        assert!(write_with_retry(&mut p, &w, &opts()).is_err());
        assert_eq!(p.calls, opts().max_attempts);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let o =
            ApplyOptions { base_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1), ..opts() };
        for attempt in 1..20 {
            assert!(backoff(attempt, &o) < Duration::from_secs(1));
        }
        let samples: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(5, &o)).collect();
        assert!(samples.len() > 1, "jitter varies the delay");
    }
}
