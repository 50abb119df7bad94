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
//! * [`queue`]: the durable SQLite queue, the API replay builds on; [`epoch`]: the
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
pub mod queue;
pub mod server;
pub mod shopify;
pub mod signature;
pub mod source;
pub mod standard;

pub use event::{Change, Event, read_jsonl};
pub use freeze::{FreezeState, is_frozen};
pub use queue::{Backlog, EventKey, Insert, Queue, QueueError, QueuedEvent, Status};

use std::path::{Path, PathBuf};

use crate::config::check::Plan;
use crate::config::model::StoreBackend;

/// The queue file of a plan: `<state dir>/events.db`, where the state dir is
/// `--state DIR` or `.stockshift/` beside the plan. Refuses backends other than SQLite.
pub fn queue_path(plan: &Plan, state_override: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(ev) = &plan.config.events
        && ev.queue.backend != StoreBackend::Sqlite
    {
        anyhow::bail!(
            "events.queue.backend `postgres` is not supported yet by this stockshift; use `sqlite` (the default)"
        );
    }
    Ok(Queue::path_in(&plan.state_dir(state_override)))
}

/// Opens (creating when needed) the plan's event queue.
pub fn open_queue(plan: &Plan, state_override: Option<&Path>) -> anyhow::Result<Queue> {
    Ok(Queue::open(&queue_path(plan, state_override)?)?)
}
