//! Events: the receiving half of continuous sync (SPEC section 5).
//!
//! ```text
//! POST /webhooks/{source} ─▶ source (verify signature) ─▶ shopify | standard (normalize)
//!                          ─▶ ingest (group commit) ─▶ queue (events.db, fsync'd) ─▶ 2xx
//!                                                            ▲
//!                          replay (reads pending, marks) ────┘   freeze (flag + window)
//! ```
//!
//! * [`event`]: the normalized event, its strict JSON form and `.jsonl` files.
//! * [`signature`]: Shopify and Standard Webhooks HMAC signatures.
//! * [`shopify`], [`standard`]: the two webhook dialects; [`source`]: a configured source.
//! * [`queue`]: the durable queue (SQLite or PostgreSQL), the API replay builds on; [`epoch`]: the
//!   compact read of the events a replay folds.
//! * [`ingest`]: the single writer thread doing group commits.
//! * [`freeze`]: the freeze flag and window.
//! * [`kafka`]: Kafka sources, consumed into the queue with their offsets.
//! * [`server`]: the HTTP receiver; [`metrics`]: Prometheus metrics.

pub mod epoch;
pub mod event;
pub mod freeze;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod partition;
pub mod queue;
pub mod server;
pub mod shopify;
pub mod signature;
pub mod source;
pub mod standard;

pub use event::{Change, Event, read_jsonl};
pub use freeze::{FreezeState, is_frozen};
pub use queue::{Backlog, EventKey, Insert, Queue, QueueError, QueuedEvent, Status};

use std::path::Path;
use std::sync::Arc;

use crate::config::check::Plan;
use crate::db::StoreAt;

/// Opens a connection to a plan's queue (one per thread or task): see [`queue_opener`].
pub type QueueOpener = Arc<dyn Fn() -> Result<Queue, QueueError> + Send + Sync>;

/// Where the plan's queue is, for messages: the SQLite file, or the PostgreSQL
/// schema and the variable holding its URL (never the URL).
pub fn describe_queue(at: &StoreAt) -> String {
    match &at.url_env {
        Some(var) if at.is_postgres() => format!("postgres (${var}), schema {}", queue::PG_SCHEMA),
        _ => Queue::path_in(&at.dir).display().to_string(),
    }
}

/// Opens the queue at `at` for `plan`. A shared (PostgreSQL) queue gets the
/// plan's partitioner, so that every receiver files an event under the
/// partition the replay workers look for it in.
pub fn open_queue_at(plan: &Plan, at: &StoreAt) -> Result<Queue, QueueError> {
    queue_opener(plan, at.clone())()
}

/// A function opening the plan's queue at `at` (with the plan's partitioner
/// when it is shared), for servers that open one connection per thread.
pub fn queue_opener(plan: &Plan, at: StoreAt) -> QueueOpener {
    let partitioner = at.is_postgres().then(|| partition::Partitioner::for_plan(plan, queue::PARTITIONS));
    Arc::new(move || {
        let mut q = Queue::open_at(&at)?;
        if let Some(f) = &partitioner {
            q.set_partitioner(f.clone());
        }
        Ok(q)
    })
}

/// Opens (creating when needed) the plan's event queue: `events.queue` of the
/// plan, its SQLite file `<state dir>/events.db`, where the state dir is
/// `--state DIR` or `.stockshift/` beside the plan.
pub fn open_queue(plan: &Plan, state_override: Option<&Path>) -> anyhow::Result<Queue> {
    Ok(open_queue_at(plan, &plan.queue_at(state_override)?)?)
}
