//! `rollback`: a plan of inverse writes for one operation, from the state store.
//!
//! For every key the operation wrote (from `before` to `after`), the rollback
//! restores `before` where the target still holds `after`. Where the key moved
//! since (orders kept selling), it writes `before + (current - after)`, so the
//! sales made since are kept, and says so. Each inverse write is conditional on
//! the value read now. An operation already rolled back gives an empty plan.

use std::collections::BTreeMap;

use crate::artifact::{FORMAT_VERSION, PlanArtifact, PlanMeta};
use crate::config::check::Plan;
use crate::diff::{Action, Change, Diff, Summary};
use crate::provider::{self, ProviderError};
use crate::state::{OpKind, Operation, StateError, StateStore};

/// Why no rollback plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no apply to roll back: the state at {0} records none")]
    NothingApplied(String),
    #[error("no operation with id {0}; `stockshift state list` shows them")]
    UnknownOperation(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// A rollback plan and the operation it undoes.
#[derive(Debug, Clone)]
pub struct RollbackPlan {
    pub of: Operation,
    pub doc: PlanArtifact,
    /// Set when the operation was already rolled back (the plan is then empty).
    pub already_rolled_back_by: Option<String>,
}

/// Picks the operation: `--apply-id`, else the newest apply.
pub fn select(state: &StateStore, apply_id: Option<&str>) -> Result<Operation, RollbackError> {
    if let Some(id) = apply_id {
        return state.operation(id)?.ok_or_else(|| RollbackError::UnknownOperation(id.to_owned()));
    }
    let ops = state.operations()?;
    // The newest write operation that is not itself a rollback.
    // The newest apply: a replay's writes are undone with --apply-id (or with the cutover that made them).
    ops.into_iter()
        .find(|o| o.kind == OpKind::Apply)
        .ok_or_else(|| RollbackError::NothingApplied(state.shown().to_owned()))
}

/// Builds the rollback plan for `op`, reading the target's current values.
pub fn plan_rollback(plan: &Plan, state: &StateStore, op: Operation) -> Result<RollbackPlan, RollbackError> {
    plan_rollback_ops(plan, state, vec![op])
}

/// The rollback plan for several operations at once (a cutover's apply and its
/// replays): per key, the value before the first of them and after the last.
/// The first operation is the one recorded as rolled back by the plan.
pub fn plan_rollback_ops(plan: &Plan, state: &StateStore, ops: Vec<Operation>) -> Result<RollbackPlan, RollbackError> {
    let op = ops.first().cloned().ok_or_else(|| RollbackError::NothingApplied(state.shown().to_owned()))?;
    let (lineage, serial) = state.lineage_serial()?;
    let meta = PlanMeta { name: plan.config.name.clone(), config_sha256: plan.sha256.clone(), path: plan.file.clone() };
    let mut doc = PlanArtifact {
        format_version: FORMAT_VERSION,
        plan: meta,
        diff: Diff::default(),
        inputs: vec![],
        state: Some(crate::artifact::StateRef { lineage, serial }),
        rollback_of: Some(op.id.clone()),
        file_sha256: None,
        file_path: None,
    };
    if let Some(by) = &op.rolled_back_by {
        doc.diff.warnings.push(format!("Operation {} was already rolled back by {by}; nothing to do.", op.id));
        return Ok(RollbackPlan { already_rolled_back_by: Some(by.clone()), of: op, doc });
    }
    // Per key: the value before the operation's first write, and after its last.
    let mut keys: BTreeMap<(String, String), (Option<i64>, i64)> = BTreeMap::new();
    let mut ordered = ops.clone();
    ordered.sort_by_key(|o| o.serial);
    let mut records = Vec::new();
    for o in &ordered {
        records.extend(state.audit(None, Some(&o.id))?.into_iter().filter(|a| a.op_id == o.id));
    }
    // Keys an earlier, partial rollback of these operations already restored.
    let ids: std::collections::HashSet<&str> = ops.iter().map(|o| o.id.as_str()).collect();
    let mut restored: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    for earlier in state.operations()?.into_iter().filter(|o| o.kind == OpKind::Rollback) {
        if earlier.rollback_of.as_deref().is_some_and(|of| ids.contains(of)) {
            for a in state.audit(None, Some(&earlier.id))?.into_iter().filter(|a| a.op_id == earlier.id) {
                if a.outcome == "applied" || a.outcome == "already_applied" {
                    restored.insert((a.sku, a.location));
                }
            }
        }
    }
    records.retain(|w| !restored.contains(&(w.sku.clone(), w.location.clone())));
    for w in records {
        // "already applied" counts too: after a crash, the interrupted run wrote it.
        if w.outcome != "applied" && w.outcome != "already_applied" {
            continue;
        }
        keys.entry((w.sku.clone(), w.location.clone())).and_modify(|e| e.1 = w.after).or_insert((w.before, w.after));
    }
    let key_list: Vec<(String, String)> = keys.keys().cloned().collect();
    let mut target = provider::open(&plan.config.target, &plan.dir)?;
    let current = target.read_keys(&key_list)?;
    let mut summary = Summary::default();
    let mut changes = Vec::new();
    for (((sku, location), (before, after)), now) in keys.into_iter().zip(current) {
        let restore_base = before.unwrap_or(0);
        let Some(now) = now else {
            doc.diff.warnings.push(format!("({sku}, {location}) no longer exists in the target; left as it is."));
            continue;
        };
        let (target_qty, note) = if now == after {
            (restore_base, String::new())
        } else {
            let moved = now - after;
            let q = restore_base + moved;
            if q < 0 {
                doc.diff.warnings.push(format!(
                    "({sku}, {location}): restoring {restore_base} and keeping the {moved} change since would give {q}; set to 0 instead."
                ));
            }
            (q.max(0), format!("keeps changes since: {} {moved:+} since the apply", restore_base))
        };
        if target_qty == now {
            summary.unchanged += 1;
            continue;
        }
        changes.push(Change {
            sku,
            location,
            action: Action::Update,
            before: Some(now),
            after: target_qty,
            orphan: false,
            bundle: false,
            from: vec![],
            note: if before.is_none() && note.is_empty() { "created by the apply".into() } else { note },
        });
    }
    summary.update = changes.len() as u64;
    changes.sort_by(|a, b| (&a.location, &a.sku).cmp(&(&b.location, &b.sku)));
    doc.diff.changes = changes;
    doc.diff.summary = summary;
    Ok(RollbackPlan { of: op, doc, already_rolled_back_by: None })
}
