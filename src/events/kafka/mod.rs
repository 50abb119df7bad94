//! Kafka event sources (`events.sources: [{ kind: kafka, brokers, topic, group }]`):
//! `serve` consumes normalized events from a topic into the durable queue.
//!
//! ```text
//! topic (partitioned by SKU) ─▶ one fetcher per partition ─▶ batch ─▶ decode (event::parse_body)
//!     ─▶ ONE queue transaction: events (deduped by (source, id)) + next offsets ─▶ fsync
//! ```
//!
//! * **Offsets live in the queue.** The next offset of every partition is stored in
//!   the queue (`kafka_offsets`, keyed by source, group, topic and partition)
//!   in the same SQLite transaction as the events read before it. So an offset is
//!   committed exactly when those events are durably queued: a crash (even
//!   `kill -9`) re-reads from the last commit, and what is re-read is dropped by the
//!   queue's (source, id) dedupe. The Kafka-side consumer-group offsets are neither
//!   read nor written (rskafka has no group coordination; the queue is the truth).
//! * **Malformed records** are logged, counted as
//!   `stockshift_webhooks_total{source,result="rejected"}`, and skipped: their offset
//!   is committed with the batch, so they are never retried forever.
//! * **Failures** (broker gone, topic missing, queue locked) end the session; it is
//!   started again after a backoff (0.5 s doubling to 30 s), from the committed offsets.
//! * One consumer per source: run one `serve` per plan (two would read the same
//!   records; nothing would be doubled, but the work would be).
//!
//! * [`decode`]: a record's value as events; [`consumer`]: the fetch/commit loop.

pub mod consumer;
pub mod decode;

use std::thread::JoinHandle;

use crate::config::check::Plan;
use crate::config::model::EventSourceKind;

/// A `kind: kafka` source of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// The source name events are queued under.
    pub name: String,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    /// The consumer group its offsets are kept under (default: the source name).
    pub group: String,
}

impl KafkaSource {
    /// The plan's Kafka sources (the plan is checked: each has brokers and a topic).
    pub fn from_plan(plan: &Plan) -> Vec<KafkaSource> {
        let Some(ev) = &plan.config.events else { return vec![] };
        ev.sources
            .iter()
            .filter(|s| s.kind == EventSourceKind::Kafka)
            .map(|s| KafkaSource {
                name: s.name.clone(),
                brokers: s.brokers.clone(),
                topic: s.topic.clone().unwrap_or_default(),
                group: s.kafka_group().to_owned(),
            })
            .collect()
    }
}

/// The running consumers: one task per source on a thread of their own, so the
/// HTTP receiver's runtime and shutdown are untouched.
pub struct Consumers {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Consumers {
    /// Starts consuming every source into the queue `open` opens. With no
    /// sources, starts nothing.
    pub fn start(sources: Vec<KafkaSource>, open: crate::events::QueueOpener) -> anyhow::Result<Consumers> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        if sources.is_empty() {
            return Ok(Consumers { stop, thread: None });
        }
        // The counters must be registered with the recorder `serve` renders on /metrics.
        crate::events::metrics::install().map_err(anyhow::Error::msg)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the Kafka consumers' runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("stockshift-kafka".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for s in sources {
                        tasks.spawn(consumer::run(s, open.clone(), stop_rx.clone()));
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })
            .map_err(|e| anyhow::anyhow!("cannot start the Kafka consumers' thread: {e}"))?;
        Ok(Consumers { stop, thread: Some(thread) })
    }

    /// Stops every consumer and waits for it. A batch being committed finishes
    /// first; records fetched but not committed are read again next time.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
