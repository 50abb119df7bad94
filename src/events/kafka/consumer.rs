//! The consumer of one Kafka source: sessions of fetch, decode and commit, started
//! again after a backoff whenever one fails.
//!
//! A session connects, lists the topic's partitions, reads the committed offsets
//! from the queue (a partition without one starts at its earliest record) and
//! starts one fetcher per partition. Fetchers send what they read over a bounded
//! channel; the committer takes everything waiting (up to [`MAX_BATCH_RECORDS`]),
//! decodes it and stores the events with the partitions' next offsets in ONE queue
//! transaction. Fetchers read ahead of the commits; whatever was fetched but not
//! committed when a session ends is read again by the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rskafka::BackoffConfig;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::KafkaSource;
use super::decode::decode;
use crate::events::QueueOpener;
use crate::events::metrics::SourceCounters;
use crate::events::queue::{Incoming, KafkaOffset, Queue};

/// Most bytes one fetch asks a partition for.
pub const FETCH_MAX_BYTES: i32 = 1 << 20;
/// How long the broker may hold a fetch while the partition has nothing new.
pub const FETCH_WAIT_MS: i32 = 250;
/// Most records stored in one transaction.
pub const MAX_BATCH_RECORDS: usize = 5000;
/// How often the topic's partitions are listed again (a new partition restarts the session).
const METADATA_EVERY: Duration = Duration::from_secs(30);
/// Pause after a fetch that returned nothing (brokers that do not hold fetches).
const IDLE_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for any one broker request (a fetch is held at most [`FETCH_WAIT_MS`]).
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);
/// Backoff between failed sessions: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

fn log(source: &str, msg: impl Display) {
    eprintln!("kafka source `{source}`: {msg}");
}

/// Retries inside one request (a broker restarting); beyond the deadline the
/// session fails and is started again, which logs the error.
fn request_backoff() -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
        deadline: Some(Duration::from_secs(5)),
    }
}

/// `request`'s result, its error in one line after `what`; an error too when the
/// brokers do not answer within [`BROKER_TIMEOUT`] (the client's own retries nest
/// and could otherwise hide an unreachable broker for minutes).
async fn answer<T>(
    what: impl Display,
    request: impl std::future::Future<Output = Result<T, KafkaError>>,
) -> Result<T, String> {
    match tokio::time::timeout(BROKER_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", short(&e))),
        Err(_) => Err(format!("{what}: no answer from the brokers within {}s", BROKER_TIMEOUT.as_secs())),
    }
}

/// A client error in one line (server errors otherwise print the whole request).
fn short(e: &KafkaError) -> String {
    match e {
        KafkaError::ServerError { protocol_error, error_message, .. } => match error_message {
            Some(m) => format!("broker error {protocol_error}: {m}"),
            None => format!("broker error {protocol_error}"),
        },
        other => other.to_string(),
    }
}

/// Consumes `src` into the queue `open` opens until `stop` turns true.
pub async fn run(src: KafkaSource, open: QueueOpener, mut stop: watch::Receiver<bool>) {
    let counters = SourceCounters::new(&src.name);
    let mut queue: Option<Arc<Mutex<Queue>>> = None;
    let mut delay = RETRY_FIRST;
    loop {
        let mut progressed = false;
        let began = tokio::time::Instant::now();
        let ended = tokio::select! {
            r = session(&src, &open, &mut queue, &counters, &mut progressed) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        // A session that stored something, or ran a while, was healthy: retry soon.
        if progressed || began.elapsed() > RETRY_MAX {
            delay = RETRY_FIRST;
        }
        match ended {
            Ok(why) => log(&src.name, format!("{why}; reconnecting")),
            Err(e) => log(&src.name, format!("{e}; retrying in {:.1}s", delay.as_secs_f64())),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// What a fetcher read from one partition.
struct Fetched {
    partition: i32,
    /// (offset, value) of each record, in offset order.
    records: Vec<(i64, Option<Vec<u8>>)>,
    /// The offset after the last record.
    next: i64,
}

/// Runs one session. Returns why it ended without an error (the partitions
/// changed), or the error.
async fn session(
    src: &KafkaSource,
    open: &QueueOpener,
    queue: &mut Option<Arc<Mutex<Queue>>>,
    counters: &SourceCounters,
    progressed: &mut bool,
) -> Result<String, String> {
    let q = match queue {
        Some(q) => q.clone(),
        None => {
            let open = open.clone();
            let opened = blocking(move || open().map_err(|e| e.to_string())).await?;
            queue.insert(Arc::new(Mutex::new(opened))).clone()
        }
    };
    let brokers = src.brokers.join(",");
    let builder = ClientBuilder::new(src.brokers.clone()).client_id("stockshift").backoff_config(request_backoff());
    let client = answer(format!("cannot connect to {brokers}"), builder.build()).await?;
    let partitions = partitions(&client, &src.topic).await?;
    let committed: BTreeMap<i32, i64> = {
        let (q, name, group) = (q.clone(), src.name.clone(), src.group.clone());
        let all = blocking(move || lock(&q).kafka_offsets(&name, &group).map_err(|e| e.to_string())).await?;
        all.into_iter().filter(|o| o.topic == src.topic).map(|o| (o.partition, o.next_offset)).collect()
    };
    let (tx, mut rx) = mpsc::channel::<Result<Fetched, String>>(2 * partitions.len());
    let mut fetchers = JoinSet::new();
    let mut starts = Vec::new();
    for &p in &partitions {
        let pc = answer(
            format!("partition {p}: cannot find its leader"),
            client.partition_client(src.topic.clone(), p, UnknownTopicHandling::Retry),
        )
        .await?;
        let start = start_offset(src, &pc, committed.get(&p).copied()).await?;
        let how = if committed.contains_key(&p) { "" } else { " (earliest)" };
        starts.push(format!("{p}:{start}{how}"));
        fetchers.spawn(fetch(pc, start, tx.clone()));
    }
    drop(tx);
    log(
        &src.name,
        format!(
            "consuming topic {} ({} partitions) from {brokers} as group {}; resuming at offsets {}",
            src.topic,
            partitions.len(),
            src.group,
            starts.join(" ")
        ),
    );
    let mut metadata = tokio::time::interval_at(tokio::time::Instant::now() + METADATA_EVERY, METADATA_EVERY);
    loop {
        let first = tokio::select! {
            m = rx.recv() => m.ok_or("every partition fetcher stopped")??,
            _ = metadata.tick() => {
                let now = partitions_of(&client, &src.topic).await?;
                if now != partitions {
                    return Ok(format!("topic {} now has partitions {now:?} (was {partitions:?})", src.topic));
                }
                continue;
            }
        };
        let mut n = first.records.len();
        let mut batch = vec![first];
        while n < MAX_BATCH_RECORDS {
            match rx.try_recv() {
                Ok(m) => {
                    let m = m?;
                    n += m.records.len();
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        commit(src, &q, batch, counters).await?;
        *progressed = true;
    }
}

async fn partitions_of(client: &Client, topic: &str) -> Result<BTreeSet<i32>, String> {
    let topics = answer("cannot list the topics", client.list_topics()).await?;
    Ok(topics.into_iter().find(|t| t.name == topic).map(|t| t.partitions).unwrap_or_default())
}

async fn partitions(client: &Client, topic: &str) -> Result<BTreeSet<i32>, String> {
    let p = partitions_of(client, topic).await?;
    if p.is_empty() {
        return Err(format!(
            "topic `{topic}` does not exist on the brokers (or has no partitions); create it first, stockshift does not create topics"
        ));
    }
    Ok(p)
}

/// Where to start reading a partition: the committed offset, or the earliest
/// record when there is none or when the committed one no longer exists.
async fn start_offset(src: &KafkaSource, pc: &PartitionClient, committed: Option<i64>) -> Result<i64, String> {
    let p = pc.partition();
    let earliest =
        answer(format!("partition {p}: cannot read the earliest offset"), pc.get_offset(OffsetAt::Earliest)).await?;
    let Some(c) = committed else { return Ok(earliest) };
    if c < earliest {
        log(
            &src.name,
            format!(
                "partition {p}: records {c}..{} were deleted by the broker (retention) before they were queued; \
                 they are LOST to this queue; continuing at {earliest}",
                earliest - 1
            ),
        );
        return Ok(earliest);
    }
    let latest =
        answer(format!("partition {p}: cannot read the latest offset"), pc.get_offset(OffsetAt::Latest)).await?;
    if c > latest {
        log(
            &src.name,
            format!(
                "partition {p}: the committed offset {c} is past the end of the partition ({latest}); \
                 was the topic recreated? reading it again from {earliest} (events already queued are dropped as duplicates)"
            ),
        );
        return Ok(earliest);
    }
    Ok(c)
}

/// Reads one partition from `offset` on, until the session ends or a fetch fails.
async fn fetch(pc: PartitionClient, mut offset: i64, tx: mpsc::Sender<Result<Fetched, String>>) {
    let partition = pc.partition();
    loop {
        let fetched = pc.fetch_records(offset, 1..FETCH_MAX_BYTES, FETCH_WAIT_MS);
        match answer(format!("partition {partition}: fetch at offset {offset} failed"), fetched).await {
            Ok((records, _high_watermark)) => {
                let Some(next) = records.last().map(|r| r.offset + 1) else {
                    tokio::time::sleep(IDLE_PAUSE).await;
                    continue;
                };
                let records = records.into_iter().map(|r| (r.offset, r.record.value)).collect();
                if tx.send(Ok(Fetched { partition, records, next })).await.is_err() {
                    return;
                }
                offset = next;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// What became of one record.
enum Outcome {
    Rejected(String),
    /// A valid record with no events (an empty array).
    Empty,
    Stored {
        accepted: usize,
    },
}

/// Decodes a batch and stores its events with the partitions' next offsets, in one
/// transaction; then counts and logs what happened to each record.
async fn commit(
    src: &KafkaSource,
    q: &Arc<Mutex<Queue>>,
    batch: Vec<Fetched>,
    counters: &SourceCounters,
) -> Result<(), String> {
    let (q, name, group, topic) = (q.clone(), src.name.clone(), src.group.clone(), src.topic.clone());
    let outcomes = blocking(move || {
        let received_at = Timestamp::now();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut decoded = Vec::new();
        for f in &batch {
            let o = next.entry(f.partition).or_insert(f.next);
            *o = (*o).max(f.next);
            for (offset, value) in &f.records {
                decoded.push((f.partition, *offset, value.as_deref(), decode(&name, value.as_deref())));
            }
        }
        let offsets: Vec<KafkaOffset> = next
            .into_iter()
            .map(|(partition, next_offset)| KafkaOffset { topic: topic.clone(), partition, next_offset })
            .collect();
        let incoming: Vec<Incoming<'_>> = decoded
            .iter()
            .filter_map(|(_, _, raw, events)| match events {
                Ok(events) if !events.is_empty() => {
                    Some(Incoming { source: &name, raw: raw.unwrap_or_default(), received_at, events })
                }
                _ => None,
            })
            .collect();
        let inserts = lock(&q).append_with_offsets(&incoming, &name, &group, &offsets).map_err(|e| e.to_string())?;
        drop(incoming);
        let mut inserts = inserts.into_iter();
        let outcomes: Vec<(i32, i64, Outcome)> = decoded
            .into_iter()
            .map(|(partition, offset, _, events)| {
                let outcome = match events {
                    Err(m) => Outcome::Rejected(m),
                    Ok(events) if events.is_empty() => Outcome::Empty,
                    Ok(_) => {
                        let ins = inserts.next().unwrap_or_default();
                        Outcome::Stored { accepted: ins.iter().filter(|i| i.is_accepted()).count() }
                    }
                };
                (partition, offset, outcome)
            })
            .collect();
        Ok(outcomes)
    })
    .await?;
    for (partition, offset, outcome) in outcomes {
        match outcome {
            Outcome::Rejected(why) => {
                counters.rejected.increment(1);
                log(
                    &src.name,
                    format!(
                        "topic {} partition {partition} offset {offset}: malformed record skipped (its offset is committed): {why}",
                        src.topic
                    ),
                );
            }
            Outcome::Empty => {
                counters.accepted.increment(1);
                counters.ignored.increment(1);
            }
            Outcome::Stored { accepted } if accepted > 0 => counters.accepted.increment(1),
            Outcome::Stored { .. } => counters.duplicate.increment(1),
        }
    }
    Ok(())
}

fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs queue work off the async thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("the queue task failed: {e}"))?
}
