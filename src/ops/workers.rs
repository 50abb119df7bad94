//! Replay on a shared (PostgreSQL) queue: several workers, one partition each at
//! a time.
//!
//! Every queued event carries a partition ([`crate::events::partition`]): all the
//! keys one replay recomputes together share one. A worker:
//!
//! 1. holds the state lock in **shared** mode for the whole run, so replay
//!    workers run side by side while `apply`, `rollback` and `cutover` (which
//!    take it exclusively) wait for them, and they for those;
//! 2. lists the partitions with queued events and takes, without waiting, the
//!    locks of up to [`CLAIM`] of them that no other worker holds (PostgreSQL
//!    session advisory locks: the server frees them when a worker's session
//!    ends, so a killed worker's partitions are taken over at once);
//! 3. recovers any operation a dead worker left running on those partitions,
//!    then replays them in one pass through the same code as a single-machine
//!    replay ([`replay_scope`]), and releases them;
//! 4. repeats until every partition with queued events was handled once in
//!    this run or is held by another worker.
//!
//! Per-key order and exactly-once follow from the single-machine argument: a
//! key's events are replayed only by the holder of its partition, writes are
//! conditional and journaled, and events settle only after their writes.

use std::collections::BTreeSet;

use crate::config::check::Plan;
use crate::events::partition::Partitioner;
use crate::events::queue::{PARTITIONS, Queue};
use crate::ops::apply::{ApplyError, ApplyOptions};
use crate::ops::replay::{ReplayError, ReplayReport, Scope, replay_scope};
use crate::provider::Provider;
use crate::state::{OpKind, StateStore};

/// Partitions one pass takes at most: small enough that several workers find
/// work, large enough that a pass's fixed cost (reading the snapshot) is shared.
pub const CLAIM: usize = 8;

/// The scope recorded with an operation that replays `parts`.
fn op_scope(parts: &[u32]) -> String {
    let list: Vec<String> = parts.iter().map(u32::to_string).collect();
    format!("replay/parts/{}", list.join(","))
}

/// The partitions of an operation scope written by [`op_scope`].
fn parts_of_scope(scope: &str) -> Option<Vec<u32>> {
    scope.strip_prefix("replay/parts/")?.split(',').map(|p| p.parse().ok()).collect()
}

/// Replays what this worker can take of a shared queue. See the module docs.
pub fn replay_shared(
    plan: &Plan,
    state: &mut StateStore,
    queue: &mut Queue,
    target: &mut dyn Provider,
    opts: &ApplyOptions,
) -> Result<ReplayReport, ReplayError> {
    let started = std::time::Instant::now();
    let partitioner = Partitioner::new(&plan.mapping, PARTITIONS);
    let locks = state.reopen()?;
    let _shared =
        locks.lock_shared(OpKind::Replay.as_str(), &opts.actor, opts.lock_timeout).map_err(ApplyError::from)?;
    let mut total = ReplayReport::default();
    let mut handled: BTreeSet<u32> = BTreeSet::new();
    // Start the scan at a point of our own, so workers spread over the partitions.
    let offset = std::process::id() % PARTITIONS;
    loop {
        let mut waiting: Vec<u32> =
            queue.queued_parts()?.into_iter().map(|(p, _)| p).filter(|p| !handled.contains(p)).collect();
        if waiting.is_empty() {
            break;
        }
        waiting.sort_by_key(|p| (p + PARTITIONS - offset) % PARTITIONS);
        let mut guards = Vec::new();
        let mut claimed: Vec<u32> = Vec::new();
        for p in waiting {
            if claimed.len() >= CLAIM {
                break;
            }
            if let Some(g) = locks.lock_partition(p)? {
                guards.push(g);
                claimed.push(p);
            } else {
                handled.insert(p); // another worker has it
            }
        }
        if claimed.is_empty() {
            break;
        }
        claimed.sort_unstable();
        handled.extend(&claimed);
        recover_dead_workers(state, &locks, target, &claimed)?;
        let scope = op_scope(&claimed);
        let pass = Scope { parts: &claimed, partitioner: &partitioner, op_scope: &scope };
        total.absorb(replay_scope(plan, state, queue, target, opts, Some(&pass))?);
        drop(guards);
    }
    let backlog = queue.queued_count()?;
    metrics::gauge!("stockshift_replay_backlog").set(backlog as f64);
    total.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Finishes the records of replay operations left running by workers that died
/// while holding some of `claimed`: an operation is recovered only when every
/// partition it wrote to can be locked, i.e. no live worker is running it.
fn recover_dead_workers(
    state: &mut StateStore,
    locks: &StateStore,
    target: &mut dyn Provider,
    claimed: &[u32],
) -> Result<(), ReplayError> {
    for scope in state.running_scopes()? {
        let Some(parts) = parts_of_scope(&scope) else { continue };
        if !parts.iter().any(|p| claimed.contains(p)) {
            continue;
        }
        let mut extra = Vec::new();
        let mut all = true;
        for p in parts.iter().filter(|p| !claimed.contains(p)) {
            match locks.lock_partition(*p)? {
                Some(g) => extra.push(g),
                None => {
                    all = false;
                    break;
                }
            }
        }
        if all {
            crate::ops::apply::recover_interrupted_in(state, target, Some(&scope))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        assert_eq!(op_scope(&[3, 17, 40]), "replay/parts/3,17,40");
        assert_eq!(parts_of_scope("replay/parts/3,17,40"), Some(vec![3, 17, 40]));
        assert_eq!(parts_of_scope("replay/parts/x"), None);
        assert_eq!(parts_of_scope("apply"), None);
    }
}
