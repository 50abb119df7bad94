//! The durable event queue: a SQLite file, `<state dir>/events.db`, or a schema
//! (`stockshift_queue`) of a PostgreSQL database shared by several receivers and
//! replay workers.
//!
//! ```text
//! deliveries(delivery PK, source, received_at, raw BLOB)           one row per accepted request
//! event_log(seq PK AUTOINCREMENT, source, id, sku, location, delta, qty, sequence,
//!           occurred_at, received_at, delivery → deliveries, part, UNIQUE(source, id))
//!                                                                  each event once, never changed (but `part`)
//! pending(seq PK, part)                                            the queued events
//! settle_runs(part, from_seq, to_seq, settle → settles)            stretches of applied events
//! settled(seq PK, status, settle → settles, error)                 other handled ones (override runs)
//! settles(settle PK, at)                                           one row per status change batch
//! events (a view)                                                  event_log with status, applied_at, error
//! freeze(id = 1, active, started_by, started_at, stopped_by, stopped_at)
//! kafka_offsets(source, consumer_group, topic, partition, next_offset)   Kafka sources' positions
//! ```
//!
//! The rules below are written once, against [`crate::db::Db`]; only a few hot
//! paths have an engine-specific form (bulk `unnest` statements on PostgreSQL,
//! range deletes and a zero-copy epoch read on SQLite).
//!
//! * **Durability.** SQLite: WAL journal with `synchronous=FULL`: a commit returns
//!   only once the WAL is fsync'd. PostgreSQL: a commit is durable when the server
//!   says so (`synchronous_commit`). The receiver acknowledges (HTTP 2xx) only after
//!   the commit that holds the event (see `events::ingest` for the group commit).
//! * **Dedupe.** `UNIQUE(source, id)`: a second event with the same id is reported
//!   as [`Insert::Duplicate`] and not stored again, whatever its content. On
//!   PostgreSQL several receivers insert concurrently with
//!   `ON CONFLICT (source, id) DO NOTHING`: the loser of a race waits for the
//!   winner's commit and reports a duplicate, exactly as a single writer would.
//! * **Raw bodies.** The raw request body is kept once per delivery (a Shopify order
//!   with 50 line items is one body and 50 events), linked by `events.delivery`;
//!   [`Queue::raw`] returns it for audit.
//! * **Status.** `queued` → `applied` | `failed` | `superseded` (set by replay with
//!   [`Queue::mark`], [`Queue::settle`] or [`Queue::mark_runs`]); [`Queue::requeue`]
//!   puts events back to `queued`. A queued event's seq is in `pending`. A handled
//!   one has a row in `settled` or, when it was applied, lies in a `settle_runs`
//!   stretch (a row in `settled` overrides a run). The event rows themselves are
//!   never rewritten: replay settles a million applied events by deleting them from
//!   `pending` and writing a few runs, and only superseded events get rows of their own.
//! * **Partitions.** Every event has a partition `part` in `0..PARTITIONS`, given
//!   by the partitioner the caller installs ([`Queue::set_partitioner`]; 0
//!   without one). Replay workers sharing a PostgreSQL queue each take
//!   partitions; [`Queue::rehome`] moves events whose partition changed.
//! * **What a run means.** A `settle_runs` row `(part, from, to)` says: every event
//!   of partition `part` with `from <= seq <= to` that is **not in `pending`** (and
//!   has no `settled` row) is applied. With several receivers, seq order is not
//!   commit order: an event with a seq inside a run may commit after the run was
//!   written; it is in `pending`, so it reads as queued. So settling deletes from
//!   `pending` exactly the seqs it was given, runs of one partition never overlap,
//!   and an event settled inside an older run of its partition gets a row of its own.
//! * **Concurrency.** Several processes may open the queue (receivers write,
//!   `replay` reads and marks, `freeze` writes the flag). SQLite: every write is a
//!   short `BEGIN IMMEDIATE` transaction and connections wait up to 10 s for the
//!   lock. PostgreSQL: row locks; a transaction that loses a deadlock is retried.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, TransactionBehavior};

use super::event::{Change, Event};
use crate::db::{Db, DbError, Row, StoreAt, Value, params};

/// File name of the queue inside the state folder.
pub const FILE_NAME: &str = "events.db";

/// The PostgreSQL schema holding the queue's tables.
pub const PG_SCHEMA: &str = "stockshift_queue";

/// Number of queue partitions: every event's `part` is in `0..PARTITIONS`.
pub const PARTITIONS: u32 = 64;

/// The partition function a caller installs with [`Queue::set_partitioner`].
pub type PartitionFn = Arc<dyn Fn(&Event) -> u32 + Send + Sync>;

/// Schema version: SQLite's `PRAGMA user_version`, PostgreSQL's `schema_version` row.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    delivery    INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    received_at TEXT NOT NULL,
    raw         BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    sku         TEXT NOT NULL,
    location    TEXT NOT NULL,
    delta       INTEGER,
    qty         INTEGER,
    sequence    INTEGER NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    delivery    INTEGER REFERENCES deliveries(delivery),
    status      TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'applied', 'failed', 'superseded')),
    applied_at  TEXT,
    error       TEXT,
    UNIQUE (source, id),
    CHECK ((delta IS NULL) <> (qty IS NULL))
);
CREATE INDEX IF NOT EXISTS events_queued ON events(seq) WHERE status = 'queued';
CREATE TABLE IF NOT EXISTS freeze (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    active      INTEGER NOT NULL,
    started_by  TEXT,
    started_at  TEXT,
    stopped_by  TEXT,
    stopped_at  TEXT
);
";

/// Version 2: the event log is immutable; status lives in `pending` / `settled`.
/// Migrates a version 1 file in place (one transaction).
const SCHEMA_V2: &str = "
CREATE TABLE event_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    sku         TEXT NOT NULL,
    location    TEXT NOT NULL,
    delta       INTEGER,
    qty         INTEGER,
    sequence    INTEGER NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    delivery    INTEGER REFERENCES deliveries(delivery),
    UNIQUE (source, id),
    CHECK ((delta IS NULL) <> (qty IS NULL))
);
CREATE TABLE pending (seq INTEGER PRIMARY KEY);
CREATE TABLE settles (settle INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL);
CREATE TABLE settled (
    seq     INTEGER PRIMARY KEY,
    status  TEXT NOT NULL CHECK (status IN ('applied', 'failed', 'superseded')),
    settle  INTEGER NOT NULL REFERENCES settles(settle),
    error   TEXT
);
CREATE INDEX settled_by_settle ON settled(settle);
CREATE INDEX settles_by_at ON settles(at);
CREATE TABLE settle_runs (
    from_seq INTEGER PRIMARY KEY,
    to_seq   INTEGER NOT NULL,
    settle   INTEGER NOT NULL REFERENCES settles(settle)
);
INSERT INTO event_log (seq, source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery)
    SELECT seq, source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery FROM events;
INSERT INTO pending (seq) SELECT seq FROM events WHERE status = 'queued';
INSERT INTO settles (at) SELECT DISTINCT coalesce(applied_at, received_at) FROM events WHERE status <> 'queued';
INSERT INTO settled (seq, status, settle, error)
    SELECT e.seq, e.status, s.settle, e.error FROM events e JOIN settles s ON s.at = coalesce(e.applied_at, e.received_at)
    WHERE e.status <> 'queued';
UPDATE sqlite_sequence SET seq = (SELECT coalesce(max(seq), 0) FROM events) WHERE name = 'event_log';
INSERT INTO sqlite_sequence (name, seq) SELECT 'event_log', (SELECT coalesce(max(seq), 0) FROM events)
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'event_log');
DROP TABLE events;
CREATE VIEW events AS
    SELECT e.seq, e.source, e.id, e.sku, e.location, e.delta, e.qty, e.sequence, e.occurred_at, e.received_at, e.delivery,
           CASE WHEN p.seq IS NOT NULL THEN 'queued' WHEN s.seq IS NOT NULL THEN s.status
                WHEN r.from_seq IS NOT NULL THEN 'applied' END AS status,
           CASE WHEN p.seq IS NOT NULL THEN NULL WHEN s.seq IS NOT NULL THEN st.at ELSE rt.at END AS applied_at,
           CASE WHEN p.seq IS NOT NULL THEN NULL ELSE s.error END AS error
    FROM event_log e
    LEFT JOIN pending p ON p.seq = e.seq
    LEFT JOIN settled s ON s.seq = e.seq
    LEFT JOIN settles st ON st.settle = s.settle
    LEFT JOIN settle_runs r ON r.from_seq = (SELECT max(from_seq) FROM settle_runs WHERE from_seq <= e.seq)
                           AND r.to_seq >= e.seq
    LEFT JOIN settles rt ON rt.settle = r.settle;
";

/// The `events` view of schema version 4 (both engines): a run covers the
/// events of its partition that are not pending.
const EVENTS_VIEW: &str = "
CREATE VIEW events AS
    SELECT e.seq, e.source, e.id, e.sku, e.location, e.delta, e.qty, e.sequence, e.occurred_at, e.received_at, e.delivery,
           CASE WHEN p.seq IS NOT NULL THEN 'queued' WHEN s.seq IS NOT NULL THEN s.status
                WHEN r.from_seq IS NOT NULL THEN 'applied' END AS status,
           CASE WHEN p.seq IS NOT NULL THEN NULL WHEN s.seq IS NOT NULL THEN st.at ELSE rt.at END AS applied_at,
           CASE WHEN p.seq IS NOT NULL THEN NULL ELSE s.error END AS error,
           e.part
    FROM event_log e
    LEFT JOIN pending p ON p.seq = e.seq
    LEFT JOIN settled s ON s.seq = e.seq
    LEFT JOIN settles st ON st.settle = s.settle
    LEFT JOIN settle_runs r ON r.part = e.part
                           AND r.from_seq = (SELECT max(x.from_seq) FROM settle_runs x WHERE x.part = e.part AND x.from_seq <= e.seq)
                           AND r.to_seq >= e.seq
    LEFT JOIN settles rt ON rt.settle = r.settle;
";

/// Version 4 (SQLite): partitions. `event_log.part` and `pending.part` (0 for
/// existing events), and runs keyed by (part, from_seq).
const SCHEMA_V4_PARTITIONS: &str = "
DROP VIEW events;
ALTER TABLE event_log ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pending ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
CREATE TABLE settle_runs_v4 (
    part     INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq   INTEGER NOT NULL,
    settle   INTEGER NOT NULL REFERENCES settles(settle),
    PRIMARY KEY (part, from_seq)
) WITHOUT ROWID;
INSERT INTO settle_runs_v4 (part, from_seq, to_seq, settle) SELECT 0, from_seq, to_seq, settle FROM settle_runs;
DROP TABLE settle_runs;
ALTER TABLE settle_runs_v4 RENAME TO settle_runs;
CREATE INDEX settle_runs_by_settle ON settle_runs(settle);
";

/// The whole layout on PostgreSQL (schema version 4), created in one transaction.
const PG_SCHEMA_V4: &str = "
CREATE TABLE deliveries (
    delivery    BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    source      TEXT NOT NULL,
    received_at TEXT NOT NULL,
    raw         BYTEA NOT NULL
);
CREATE TABLE event_log (
    seq         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    sku         TEXT NOT NULL,
    location    TEXT NOT NULL,
    delta       BIGINT,
    qty         BIGINT,
    sequence    BIGINT NOT NULL,
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    delivery    BIGINT REFERENCES deliveries(delivery),
    part        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (source, id),
    CHECK ((delta IS NULL) <> (qty IS NULL))
);
CREATE INDEX event_log_by_part ON event_log (part, seq);
CREATE TABLE pending (
    seq  BIGINT PRIMARY KEY,
    part INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pending_by_part ON pending (part, seq);
CREATE TABLE settles (
    settle BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at     TEXT NOT NULL
);
CREATE INDEX settles_by_at ON settles (at);
CREATE TABLE settled (
    seq     BIGINT PRIMARY KEY,
    status  TEXT NOT NULL CHECK (status IN ('applied', 'failed', 'superseded')),
    settle  BIGINT NOT NULL REFERENCES settles(settle),
    error   TEXT
);
CREATE INDEX settled_by_settle ON settled (settle);
CREATE TABLE settle_runs (
    part     INTEGER NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq   BIGINT NOT NULL,
    settle   BIGINT NOT NULL REFERENCES settles(settle),
    PRIMARY KEY (part, from_seq)
);
CREATE INDEX settle_runs_by_settle ON settle_runs (settle);
CREATE TABLE \"freeze\" (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    active      INTEGER NOT NULL,
    started_by  TEXT,
    started_at  TEXT,
    stopped_by  TEXT,
    stopped_at  TEXT
);
CREATE TABLE kafka_offsets (
    source          TEXT NOT NULL,
    consumer_group  TEXT NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     BIGINT NOT NULL CHECK (next_offset >= 0),
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (source, consumer_group, topic, partition)
);
";

/// Errors of the queue. Messages say which queue (`event queue PATH`, or
/// `event queue (postgres $VAR)`: never a URL).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{at}: {source}")]
    Db {
        at: String,
        #[source]
        source: DbError,
    },
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

impl QueueError {
    /// Whether trying again may succeed (a lost connection, a deadlock, a busy file).
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Db { source, .. } if source.transient)
    }
}

/// A failure inside a transaction: a statement, or a rule of the queue.
enum Fail {
    Db(DbError),
    Invalid(String),
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Fail {
        Fail::Db(e)
    }
}

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Received, not yet handled by replay.
    Queued,
    /// Replay applied it to the target.
    Applied,
    /// Replay could not apply it (`error` says why); `requeue` retries it.
    Failed,
    /// Already contained in a later absolute set of the same key; skipped.
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Applied => "applied",
            Status::Failed => "failed",
            Status::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "applied" => Status::Applied,
            "failed" => Status::Failed,
            "superseded" => Status::Superseded,
            _ => return None,
        })
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// Arrival order in this queue (monotonic, never reused).
    pub seq: i64,
    pub event: Event,
    pub received_at: Timestamp,
    pub status: Status,
    /// When replay set the current non-queued status.
    pub applied_at: Option<Timestamp>,
    pub error: Option<String>,
    /// The delivery (request) the event came in; see [`Queue::raw`].
    pub delivery: Option<i64>,
}

/// What happened to one event offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Stored as a new event with this `seq`.
    Accepted { seq: i64 },
    /// An event with the same (source, id) was already stored, with this `seq`.
    Duplicate { seq: i64 },
}

impl Insert {
    pub fn is_accepted(self) -> bool {
        matches!(self, Insert::Accepted { .. })
    }

    /// The event's `seq` (new or already stored).
    pub fn seq(self) -> i64 {
        match self {
            Insert::Accepted { seq } | Insert::Duplicate { seq } => seq,
        }
    }
}

/// The dedupe key of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    pub source: String,
    pub id: String,
}

/// Queued (unapplied) events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    pub total: u64,
    /// When the oldest queued event was received.
    pub oldest_received_at: Option<Timestamp>,
    pub sources: BTreeMap<String, SourceBacklog>,
}

/// Queued events of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBacklog {
    pub queued: u64,
    pub oldest_received_at: Timestamp,
}

impl Backlog {
    /// Age of the oldest queued event at `now` (whole seconds, never negative).
    pub fn oldest_age_seconds(&self, now: Timestamp) -> Option<i64> {
        self.oldest_received_at.map(|t| age_seconds(t, now))
    }

    /// The backlog as JSON: `{"total", "oldest_age_seconds", "sources": {name: {"queued", "oldest_age_seconds"}}}`.
    pub fn to_json(&self, now: Timestamp) -> serde_json::Value {
        let sources: serde_json::Map<String, serde_json::Value> = self
            .sources
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({"queued": s.queued, "oldest_age_seconds": age_seconds(s.oldest_received_at, now)}),
                )
            })
            .collect();
        serde_json::json!({"total": self.total, "oldest_age_seconds": self.oldest_age_seconds(now), "sources": sources})
    }
}

/// Whole seconds from `t` to `now`, never negative.
pub fn age_seconds(t: Timestamp, now: Timestamp) -> i64 {
    (now.as_second() - t.as_second()).max(0)
}

/// One request's worth of events, as the receiver offers them.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The source named in the URL.
    pub source: &'a str,
    /// The raw request body, kept for audit.
    pub raw: &'a [u8],
    pub received_at: Timestamp,
    pub events: &'a [Event],
}

/// The manual freeze flag (`stockshift freeze start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualFreeze {
    /// `user@host` that started it.
    pub by: String,
    pub since: Timestamp,
}

/// A connection to the event queue. Not shared between threads; open one per thread.
pub struct Queue {
    /// `None` only while being dropped (see `Drop`).
    db: Option<Db>,
    /// The SQLite file; for PostgreSQL, the state folder.
    path: PathBuf,
    /// How messages name this queue: `event queue PATH` or `event queue (postgres $VAR)`.
    at: String,
    partitioner: Option<PartitionFn>,
    /// PostgreSQL: the URL, to connect again when the connection is lost.
    url: Option<String>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("at", &self.at).finish()
    }
}

/// Stored timestamps: UTC, millisecond precision, fixed width (sortable as text).
pub(crate) fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Starts a batch of status changes stamped with the current time.
fn new_settle(db: &Db) -> Result<i64, DbError> {
    db.query_one("INSERT INTO settles (at) VALUES (?1) RETURNING settle", params![&stamp(Timestamp::now())], |r| {
        r.i64(0)
    })
}

/// A list of integers bound as ONE parameter: a JSON array read with `json_each`
/// on SQLite, an `int8[]` read with `unnest` on PostgreSQL. See [`list_sql`].
pub(crate) struct IntList {
    ints: Vec<i64>,
    json: String,
}

impl IntList {
    pub(crate) fn new(db: &Db, ints: Vec<i64>) -> IntList {
        let json = if db.is_postgres() {
            String::new()
        } else {
            let mut s = String::with_capacity(ints.len() * 8 + 2);
            s.push('[');
            for (i, v) in ints.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&v.to_string());
            }
            s.push(']');
            s
        };
        IntList { ints, json }
    }

    pub(crate) fn value(&self, db: &Db) -> Value<'_> {
        if db.is_postgres() { Value::Ints(&self.ints) } else { Value::Text(&self.json) }
    }
}

/// A subquery with one column `seq` listing the [`IntList`] bound at `?n`.
pub(crate) fn list_sql(db: &Db, n: usize) -> String {
    if db.is_postgres() {
        format!("(SELECT unnest(?{n}::int8[]) AS seq)")
    } else {
        format!("(SELECT value AS seq FROM json_each(?{n}))")
    }
}

/// Whether a run of partition `part` shares a seq with `[from, to]`: runs of one
/// partition never overlap, so only the last one starting at or before `to` can.
fn run_intersects(db: &Db, part: i64, from: i64, to: i64) -> Result<bool, DbError> {
    let end = db.query_opt(
        "SELECT r.to_seq FROM settle_runs r WHERE r.part = ?1
           AND r.from_seq = (SELECT max(x.from_seq) FROM settle_runs x WHERE x.part = ?1 AND x.from_seq <= ?2)",
        params![part, to],
        |r| r.i64(0),
    )?;
    Ok(end.is_some_and(|end| end >= from))
}

/// Whether a run of `e`'s partition covers `e` (runs of one partition never
/// overlap, so only the last one starting at or before `e.seq` can).
const COVERING: &str = "SELECT 1 FROM settle_runs r WHERE r.part = e.part AND r.to_seq >= e.seq
     AND r.from_seq = (SELECT max(x.from_seq) FROM settle_runs x WHERE x.part = e.part AND x.from_seq <= e.seq)";

/// How a query joins `settle_runs r` to `event_log e` (`r CROSS JOIN e WHERE
/// {hint}e.part = r.part AND e.seq BETWEEN r.from_seq AND r.to_seq`): on SQLite a
/// unary `+` keeps the planner on the seq range of each run (`CROSS JOIN` fixes
/// the order), instead of an index on `part` or a search of the runs per event.
/// PostgreSQL uses its `(part, seq)` index.
pub(crate) fn run_join_hint(db: &Db) -> &'static str {
    if db.is_postgres() { "" } else { "+" }
}

/// Writes runs `(part, from, to)` of one settle.
fn insert_runs(db: &Db, runs: &[(i64, i64, i64)], settle: i64) -> Result<(), DbError> {
    if runs.is_empty() {
        return Ok(());
    }
    if db.is_postgres() && runs.len() > 1 {
        let parts: Vec<i64> = runs.iter().map(|r| r.0).collect();
        let froms: Vec<i64> = runs.iter().map(|r| r.1).collect();
        let tos: Vec<i64> = runs.iter().map(|r| r.2).collect();
        db.execute(
            "INSERT INTO settle_runs (part, from_seq, to_seq, settle)
             SELECT u.part, u.from_seq, u.to_seq, ?4 FROM unnest(?1::int8[], ?2::int8[], ?3::int8[]) AS u(part, from_seq, to_seq)",
            &[Value::Ints(&parts), Value::Ints(&froms), Value::Ints(&tos), Value::Int(settle)],
        )?;
        return Ok(());
    }
    for &(part, from, to) in runs {
        db.execute(
            "INSERT INTO settle_runs (part, from_seq, to_seq, settle) VALUES (?1, ?2, ?3, ?4)",
            params![part, from, to, settle],
        )?;
    }
    Ok(())
}

/// Gives the listed events a `settled` row of their own (overriding any run).
fn upsert_settled(db: &Db, seqs: Vec<i64>, status: Status, settle: i64, error: Option<&str>) -> Result<u64, DbError> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let list = IntList::new(db, seqs);
    db.execute(
        &format!(
            "INSERT INTO settled (seq, status, settle, error)
             SELECT e.seq, ?2, ?3, CAST(?4 AS TEXT) FROM event_log e WHERE e.seq IN {}
             ON CONFLICT (seq) DO UPDATE SET status = excluded.status, settle = excluded.settle, error = excluded.error",
            list_sql(db, 1)
        ),
        &[list.value(db), Value::Text(status.as_str()), Value::Int(settle), Value::from(error)],
    )
}

/// What [`Queue::settle_part`] settled: whole seq ranges (SQLite fast path) and single seqs.
#[derive(Default)]
struct SettledSet {
    ranges: Vec<(i64, i64)>,
    seqs: Vec<i64>,
}

impl SettledSet {
    fn count(&self) -> usize {
        self.seqs.len() + self.ranges.iter().map(|(a, b)| (b - a + 1) as usize).sum::<usize>()
    }

    /// Call after the last insert (sorts).
    fn contains(&self, seq: i64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < seq);
        (i < self.ranges.len() && self.ranges[i].0 <= seq) || self.seqs.binary_search(&seq).is_ok()
    }
}

impl Queue {
    /// The queue file of a state folder.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// Opens (creating the folder, file and tables when needed) the SQLite queue at `path`.
    pub fn open(path: &Path) -> Result<Queue, QueueError> {
        let at = format!("event queue {}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Invalid {
                at: at.clone(),
                message: format!("cannot create the folder {}: {e}", dir.display()),
            })?;
        }
        let err = |e: rusqlite::Error| QueueError::Db { at: at.clone(), source: sqlite_error(e) };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(QueueError::Invalid {
                at,
                message: format!("cannot switch to WAL journal mode (got `{mode}`); is the file on a network share?"),
            });
        }
        // A larger page cache keeps bulk status updates (replay marks) from re-reading pages.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_size = -65536;").map_err(err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(QueueError::Invalid { at, message: newer(version) });
        }
        if version < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            // Another process may have migrated while this one waited for the lock.
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
            if now < 1 {
                tx.execute_batch(SCHEMA_V1).map_err(err)?;
            }
            if now < 2 {
                tx.execute_batch(SCHEMA_V2).map_err(err)?;
            }
            if now < 3 {
                tx.execute_batch(SCHEMA_V3_KAFKA_OFFSETS).map_err(err)?;
            }
            if now < 4 {
                tx.execute_batch(SCHEMA_V4_PARTITIONS).map_err(err)?;
                tx.execute_batch(EVENTS_VIEW).map_err(err)?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};")).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(Queue { db: Some(Db::sqlite(conn)), path: path.to_path_buf(), at, partitioner: None, url: None })
    }

    /// Opens the queue where the plan keeps it: `<dir>/events.db` (SQLite), or
    /// the schema `stockshift_queue` of the PostgreSQL database (created, with its
    /// tables, on first use; a queue written by a newer stockshift is refused).
    pub fn open_at(at: &StoreAt) -> Result<Queue, QueueError> {
        let Some(url) = &at.postgres else { return Queue::open(&Queue::path_in(&at.dir)) };
        let shown = format!("event queue (postgres ${})", at.url_env.as_deref().unwrap_or("URL"));
        let err = |e: DbError| QueueError::Db { at: shown.clone(), source: e };
        let db = Db::postgres_in_schema(url, PG_SCHEMA).map_err(err)?;
        let migrated = db.transaction(false, |db| -> Result<(), Fail> {
            db.migration_lock()?;
            let exists = db.query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[], |r| r.i64(0))? != 0;
            let version = if exists {
                db.query_opt("SELECT version FROM schema_version WHERE id = 1", &[], |r| r.i64(0))?.unwrap_or(0)
            } else {
                db.batch(
                    "CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
                )?;
                0
            };
            if version > SCHEMA_VERSION {
                return Err(Fail::Invalid(newer(version)));
            }
            if version < SCHEMA_VERSION {
                // Versions 1 to 3 only ever existed on SQLite: the PostgreSQL layout starts at 4.
                db.batch(PG_SCHEMA_V4)?;
                db.batch(EVENTS_VIEW)?;
                db.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                    params![SCHEMA_VERSION],
                )?;
            }
            Ok(())
        });
        match migrated {
            Ok(()) => {}
            Err(Fail::Db(e)) => return Err(err(e)),
            Err(Fail::Invalid(message)) => return Err(QueueError::Invalid { at: shown, message }),
        }
        Ok(Queue { db: Some(db), path: at.dir.clone(), at: shown, partitioner: None, url: Some(url.clone()) })
    }

    /// Installs the function giving each new event its partition (`0..PARTITIONS`).
    /// Without one, every event is in partition 0.
    pub fn set_partitioner(&mut self, f: PartitionFn) {
        self.partitioner = Some(f);
    }

    /// The partition a new event gets.
    pub fn partition_of(&self, e: &Event) -> u32 {
        self.partitioner.as_ref().map_or(0, |f| f(e))
    }

    /// The SQLite file this queue lives in; for a PostgreSQL queue, the state folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the queue is, for messages: the SQLite file, or `postgres ($VAR)`. Never a URL.
    pub fn location(&self) -> String {
        self.at.strip_prefix("event queue ").unwrap_or(&self.at).to_owned()
    }

    /// True on PostgreSQL: the queue may be shared by several receivers and
    /// replay workers (which then take partitions).
    pub fn is_shared(&self) -> bool {
        self.db().is_postgres()
    }

    /// The connection, for readers in this module's neighbours (`events::epoch`).
    pub(crate) fn db(&self) -> &Db {
        self.db.as_ref().expect("the queue's connection is only taken when dropped")
    }

    pub(crate) fn err(&self, e: DbError) -> QueueError {
        QueueError::Db { at: self.at.clone(), source: e }
    }

    pub(crate) fn invalid(&self, message: String) -> QueueError {
        QueueError::Invalid { at: self.at.clone(), message }
    }

    /// Runs a write transaction (`BEGIN IMMEDIATE` on SQLite). On PostgreSQL, a
    /// transaction that lost a deadlock or a serialization race is run again.
    /// A lost PostgreSQL connection (the server restarted) is opened again once:
    /// the transaction was rolled back, so running it again is safe.
    fn write<T>(&mut self, f: impl Fn(&Db) -> Result<T, DbError>) -> Result<T, QueueError> {
        let mut attempt = 0;
        let mut reconnected = false;
        loop {
            let db = self.db();
            match db.transaction(true, &f) {
                Ok(v) => return Ok(v),
                Err(e) if db.is_postgres() && attempt < 4 && matches!(e.code.as_deref(), Some("40P01" | "40001")) => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5 << attempt));
                }
                Err(e) if connection_lost(&e) && !reconnected && self.url.is_some() => {
                    reconnected = true;
                    self.reconnect().map_err(|_| self.err(e))?;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// PostgreSQL: replaces the connection when it no longer answers (the server
    /// restarted, a proxy dropped it). Long-lived readers (the receiver's
    /// `/healthz`) call it after an error. A no-op on SQLite and on a live connection.
    pub fn reconnect_if_lost(&mut self) -> Result<(), QueueError> {
        if self.url.is_none() || self.db().ping().is_ok() {
            return Ok(());
        }
        self.reconnect()
    }

    fn reconnect(&mut self) -> Result<(), QueueError> {
        let Some(url) = &self.url else { return Ok(()) };
        let db = Db::postgres_in_schema(url, PG_SCHEMA).map_err(|e| self.err(e))?;
        // The old connection is dropped off any async thread (see `Drop`).
        let old = self.db.replace(db);
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new().name("stockshift-queue-close".into()).spawn(move || drop(old));
        }
        Ok(())
    }

    /// Stores the events of several deliveries in ONE transaction (one fsync), and
    /// returns, per delivery and per event, whether it was new or a duplicate.
    /// Either everything is committed or nothing is (the error is returned).
    pub fn append_deliveries(&mut self, batch: &[Incoming<'_>]) -> Result<Vec<Vec<Insert>>, QueueError> {
        self.append_and_commit(batch, None)
    }

    /// [`Queue::append_deliveries`], plus (when given) Kafka consumer offsets written
    /// in the same transaction as the events.
    fn append_and_commit(
        &mut self,
        batch: &[Incoming<'_>],
        offsets: Option<KafkaCommit<'_>>,
    ) -> Result<Vec<Vec<Insert>>, QueueError> {
        let parts: Vec<Vec<u32>> =
            batch.iter().map(|inc| inc.events.iter().map(|e| self.partition_of(e)).collect()).collect();
        let postgres = self.db().is_postgres();
        self.write(|db| {
            let out = if postgres { append_bulk(db, batch, &parts)? } else { append_rows(db, batch, &parts)? };
            if let Some(c) = offsets {
                write_kafka_offsets(db, c)?;
            }
            Ok(out)
        })
    }

    /// Appends recorded events (e.g. `replay --from FILE.jsonl`), deduplicated by
    /// (source, id) like received ones, in one transaction. Each event's raw form is
    /// its JSON line.
    pub fn append(&mut self, events: &[Event]) -> Result<Vec<Insert>, QueueError> {
        let now = Timestamp::now();
        let lines: Vec<String> = events.iter().map(Event::to_json_line).collect();
        let batch: Vec<Incoming<'_>> = events
            .iter()
            .zip(&lines)
            .map(|(e, line)| Incoming {
                source: &e.source,
                raw: line.as_bytes(),
                received_at: now,
                events: std::slice::from_ref(e),
            })
            .collect();
        Ok(self.append_deliveries(&batch)?.into_iter().flatten().collect())
    }

    const COLUMNS: &'static str = "seq, source, id, sku, location, delta, qty, sequence, occurred_at, received_at, status, applied_at, error, delivery";

    fn row(r: &Row<'_, '_>) -> Result<Result<QueuedEvent, String>, DbError> {
        let seq = r.i64(0)?;
        let bad = |what: &str| format!("event seq {seq} has an invalid {what}");
        let delta = r.opt_i64(5)?;
        let qty = r.opt_i64(6)?;
        let change = match (delta, qty) {
            (Some(d), None) => Change::Delta(d),
            (None, Some(q)) => Change::Qty(q),
            _ => return Ok(Err(bad("delta/qty pair"))),
        };
        let occurred = r.text(8)?;
        let received = r.text(9)?;
        let status = r.opt_text(10)?.unwrap_or_default();
        let applied = r.opt_text(11)?;
        let build = || -> Result<QueuedEvent, String> {
            Ok(QueuedEvent {
                seq,
                event: Event {
                    id: r.text(2).map_err(|_| bad("id"))?,
                    source: r.text(1).map_err(|_| bad("source"))?,
                    sku: r.text(3).map_err(|_| bad("sku"))?,
                    location: r.text(4).map_err(|_| bad("location"))?,
                    change,
                    sequence: r.i64(7).map_err(|_| bad("sequence"))?,
                    occurred_at: occurred.parse().map_err(|_| bad("occurred_at"))?,
                },
                received_at: received.parse().map_err(|_| bad("received_at"))?,
                status: Status::parse(&status).ok_or_else(|| bad("status"))?,
                applied_at: applied.map(|a| a.parse().map_err(|_| bad("applied_at"))).transpose()?,
                error: r.opt_text(12).map_err(|_| bad("error"))?,
                delivery: r.opt_i64(13).map_err(|_| bad("delivery"))?,
            })
        };
        Ok(build())
    }

    fn query(&self, sql: &str, args: &[Value<'_>]) -> Result<Vec<QueuedEvent>, QueueError> {
        let rows = self.db().query(sql, args, Self::row).map_err(|e| self.err(e))?;
        rows.into_iter().map(|r| r.map_err(|m| self.invalid(m))).collect()
    }

    /// Up to `limit` queued events, oldest arrival (`seq`) first. Replay orders them
    /// per key by `sequence` itself; arrival order is only the order of reading.
    pub fn pending(&self, limit: usize) -> Result<Vec<QueuedEvent>, QueueError> {
        let sql = format!(
            "SELECT {} FROM events WHERE seq IN (SELECT seq FROM pending ORDER BY seq LIMIT ?1) ORDER BY seq",
            Self::COLUMNS
        );
        self.query(&sql, params![limit.min(i64::MAX as usize) as i64])
    }

    /// Up to `limit` events of any status with `seq` greater than `after`, in seq order
    /// (for audits and for reading the whole history page by page).
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<QueuedEvent>, QueueError> {
        let sql = format!("SELECT {} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2", Self::COLUMNS);
        self.query(&sql, params![after, limit.min(i64::MAX as usize) as i64])
    }

    /// The stored event with this (source, id).
    pub fn get(&self, source: &str, id: &str) -> Result<Option<QueuedEvent>, QueueError> {
        let sql = format!("SELECT {} FROM events WHERE source = ?1 AND id = ?2", Self::COLUMNS);
        Ok(self.query(&sql, params![source, id])?.pop())
    }

    /// The partition an event is stored in.
    pub fn part_of_seq(&self, seq: i64) -> Result<Option<u32>, QueueError> {
        self.db()
            .query_opt("SELECT part FROM event_log WHERE seq = ?1", params![seq], |r| Ok(r.i64(0)? as u32))
            .map_err(|e| self.err(e))
    }

    /// The raw request body of a delivery.
    pub fn raw(&self, delivery: i64) -> Result<Option<Vec<u8>>, QueueError> {
        self.db()
            .query_opt("SELECT raw FROM deliveries WHERE delivery = ?1", params![delivery], |r| r.opt_blob(0))
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// Sets the status of the events with these `seq`s (in one transaction) and
    /// stamps `applied_at` with now; `error` is stored (or cleared when `None`).
    /// Returns how many events were found. To put events back, use [`Queue::requeue`].
    pub fn mark(&mut self, seqs: &[i64], status: Status, error: Option<&str>) -> Result<usize, QueueError> {
        if status == Status::Queued {
            return Err(self.invalid("mark() does not set `queued`; use requeue()".into()));
        }
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(0);
        }
        self.write(|db| {
            let settle = new_settle(db)?;
            let list = IntList::new(db, sorted.clone());
            db.execute(&format!("DELETE FROM pending WHERE seq IN {}", list_sql(db, 1)), &[list.value(db)])?;
            Ok(upsert_settled(db, sorted.clone(), status, settle, error)? as usize)
        })
    }

    /// Settles queued events by runs of `seq`: every *queued* event with
    /// `from <= seq <= to` gets the run's status (events in the range with another
    /// status are left alone). One transaction per status; far fewer statements than
    /// [`Queue::mark`] when replay settles long stretches of the queue at once.
    pub fn mark_runs(&mut self, runs: &[(i64, i64, Status)]) -> Result<usize, QueueError> {
        if runs.iter().any(|r| r.2 == Status::Queued) {
            return Err(self.invalid("mark_runs() does not set `queued`; use requeue()".into()));
        }
        let mut applied = Vec::new();
        let mut superseded = Vec::new();
        let mut failed = Vec::new();
        for &(from, to, status) in runs {
            let seqs = self
                .db()
                .query("SELECT seq FROM pending WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq", params![from, to], |r| {
                    r.i64(0)
                })
                .map_err(|e| self.err(e))?;
            match status {
                Status::Applied => applied.extend(seqs),
                Status::Superseded => superseded.extend(seqs),
                _ => failed.extend(seqs),
            }
        }
        let mut all: Vec<i64> = applied.iter().chain(&superseded).copied().collect();
        all.sort_unstable();
        let n = self.settle(&all, &superseded)?;
        Ok(n + self.mark(&failed, Status::Failed, None)?)
    }

    /// Settles queued events as applied, except `superseded` (a subset of `seqs`),
    /// in one transaction, so a killed replay leaves either all of it or none.
    /// Consecutive seqs become one `settle_runs` row; only superseded events get
    /// rows of their own. Seqs that are not queued are left alone. Returns how
    /// many events were settled. Same as `settle_part(None, ..)`.
    pub fn settle(&mut self, seqs: &[i64], superseded: &[i64]) -> Result<usize, QueueError> {
        self.settle_part(None, seqs, superseded)
    }

    /// [`Queue::settle`] for the events of one partition (`Some(part)`: queued
    /// events of other partitions among `seqs` are left queued) or of any (`None`).
    ///
    /// Exactly the given seqs leave `pending` (never a range that could hold an
    /// event committed late by another receiver). They are written as runs of
    /// their partition: a run breaks where its partition has a settled event
    /// that is not among them, and an event lying inside an older run of its
    /// partition (committed late, or moved there) gets a row of its own.
    pub fn settle_part(&mut self, part: Option<u32>, seqs: &[i64], superseded: &[i64]) -> Result<usize, QueueError> {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(0);
        }
        self.write(|db| {
            let settle = new_settle(db)?;
            let mut done = SettledSet::default();
            let rest =
                if db.is_postgres() { sorted.clone() } else { settle_islands(db, settle, part, &sorted, &mut done)? };
            if !rest.is_empty() {
                settle_exact(db, settle, part, rest, &mut done)?;
            }
            // Superseded events: a row each, overriding their run.
            let sup: Vec<i64> = superseded.iter().copied().filter(|s| done.contains(*s)).collect();
            upsert_settled(db, sup, Status::Superseded, settle, None)?;
            Ok(done.count())
        })
    }

    /// Puts the events with these `seq`s back to `queued` (a rolled-back cutover
    /// returns the events it replayed, so the next attempt replays them again).
    /// Returns how many settled events went back.
    pub fn requeue_seqs(&mut self, seqs: &[i64]) -> Result<usize, QueueError> {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(0);
        }
        self.write(|db| {
            let list = IntList::new(db, sorted.clone());
            let mut back: Vec<i64> = db.query(
                &format!("DELETE FROM settled WHERE seq IN {} RETURNING seq", list_sql(db, 1)),
                &[list.value(db)],
                |r| r.i64(0),
            )?;
            // Split every run around the events it covered.
            let covered: Vec<(i64, i64, i64, i64, i64)> = db.query(
                &format!(
                    "SELECT u.seq, r.part, r.from_seq, r.to_seq, r.settle FROM {} u
                       JOIN event_log e ON e.seq = u.seq
                       JOIN settle_runs r ON r.part = e.part AND r.to_seq >= u.seq
                        AND r.from_seq = (SELECT max(x.from_seq) FROM settle_runs x WHERE x.part = e.part AND x.from_seq <= u.seq)",
                    list_sql(db, 1)
                ),
                &[list.value(db)],
                |r| Ok((r.i64(0)?, r.i64(1)?, r.i64(2)?, r.i64(3)?, r.i64(4)?)),
            )?;
            let mut by_run: BTreeMap<(i64, i64), (i64, i64, Vec<i64>)> = BTreeMap::new();
            for (seq, part, from, to, settle) in covered {
                by_run.entry((part, from)).or_insert((to, settle, Vec::new())).2.push(seq);
                back.push(seq);
            }
            let mut fragments: BTreeMap<i64, Vec<(i64, i64, i64)>> = BTreeMap::new();
            for ((part, from), (to, settle, mut inside)) in by_run {
                db.execute("DELETE FROM settle_runs WHERE part = ?1 AND from_seq = ?2", params![part, from])?;
                inside.sort_unstable();
                let mut start = from;
                for s in inside.into_iter().chain([to + 1]) {
                    if start < s {
                        fragments.entry(settle).or_default().push((part, start, s - 1));
                    }
                    start = s + 1;
                }
            }
            for (settle, runs) in fragments {
                insert_runs(db, &runs, settle)?;
            }
            back.sort_unstable();
            back.dedup();
            if back.is_empty() {
                return Ok(0);
            }
            let back = IntList::new(db, back);
            let n = db.execute(
                &format!(
                    "INSERT INTO pending (seq, part) SELECT e.seq, e.part FROM event_log e WHERE e.seq IN {}
                     ON CONFLICT (seq) DO NOTHING",
                    list_sql(db, 1)
                ),
                &[back.value(db)],
            )?;
            Ok(n as usize)
        })
    }

    /// Puts events back to `queued` (clearing `applied_at` and `error`), e.g. failed
    /// ones after the cause was fixed. Returns how many were found.
    pub fn requeue(&mut self, keys: &[EventKey]) -> Result<usize, QueueError> {
        let mut seqs = Vec::with_capacity(keys.len());
        let mut queued_already = 0;
        for k in keys {
            let found = self
                .db()
                .query_opt(
                    "SELECT e.seq, EXISTS (SELECT 1 FROM pending p WHERE p.seq = e.seq) FROM event_log e
                     WHERE e.source = ?1 AND e.id = ?2",
                    params![&k.source, &k.id],
                    |r| Ok((r.i64(0)?, r.i64(1)? != 0)),
                )
                .map_err(|e| self.err(e))?;
            if let Some((seq, queued)) = found {
                seqs.push(seq);
                queued_already += usize::from(queued);
            }
        }
        Ok(self.requeue_seqs(&seqs)? + queued_already)
    }

    /// Moves events to partition `part` (the plan's mapping changed since they
    /// were queued), queued or not: a settled event keeps its status (an event
    /// covered by a run of its old partition gets a row of its own first).
    /// Returns how many events moved.
    pub fn rehome(&mut self, seqs: &[i64], part: u32) -> Result<usize, QueueError> {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            return Ok(0);
        }
        self.write(|db| {
            let list = IntList::new(db, sorted.clone());
            let p = Value::Int(i64::from(part));
            db.execute(
                &format!(
                    "INSERT INTO settled (seq, status, settle, error)
                     SELECT e.seq, 'applied', r.settle, NULL FROM {} u
                       JOIN event_log e ON e.seq = u.seq
                       JOIN settle_runs r ON r.part = e.part AND r.to_seq >= e.seq
                        AND r.from_seq = (SELECT max(x.from_seq) FROM settle_runs x WHERE x.part = e.part AND x.from_seq <= e.seq)
                     WHERE e.part <> ?2
                       AND NOT EXISTS (SELECT 1 FROM pending q WHERE q.seq = e.seq)
                       AND NOT EXISTS (SELECT 1 FROM settled s WHERE s.seq = e.seq)
                     ON CONFLICT (seq) DO NOTHING",
                    list_sql(db, 1)
                ),
                &[list.value(db), p],
            )?;
            let n = db.execute(
                &format!("UPDATE event_log SET part = ?2 WHERE seq IN {} AND part <> ?2", list_sql(db, 1)),
                &[list.value(db), p],
            )?;
            db.execute(
                &format!("UPDATE pending SET part = ?2 WHERE seq IN {} AND part <> ?2", list_sql(db, 1)),
                &[list.value(db), p],
            )?;
            Ok(n as usize)
        })
    }

    /// Queued events per source and when the oldest of them arrived.
    pub fn backlog(&self) -> Result<Backlog, QueueError> {
        let rows = self
            .db()
            .query(
                "SELECT e.source, count(*), min(e.received_at) FROM pending p JOIN event_log e ON e.seq = p.seq GROUP BY e.source",
                &[],
                |r| Ok((r.text(0)?, r.i64(1)?, r.text(2)?)),
            )
            .map_err(|e| self.err(e))?;
        let mut b = Backlog::default();
        for (source, n, oldest) in rows {
            let oldest: Timestamp =
                oldest.parse().map_err(|_| self.invalid(format!("invalid received_at `{oldest}`")))?;
            b.total += n as u64;
            b.oldest_received_at = Some(b.oldest_received_at.map_or(oldest, |o| o.min(oldest)));
            b.sources.insert(source, SourceBacklog { queued: n as u64, oldest_received_at: oldest });
        }
        Ok(b)
    }

    /// Number of queued events (cheap: counts `pending`).
    pub fn queued_count(&self) -> Result<u64, QueueError> {
        self.queued_count_parts(None)
    }

    /// Number of queued events of one partition (`None`: of all).
    pub fn queued_count_part(&self, part: Option<u32>) -> Result<u64, QueueError> {
        self.queued_count_parts(part.as_ref().map(std::slice::from_ref))
    }

    /// Number of queued events of these partitions (`None`: of all).
    pub fn queued_count_parts(&self, parts: Option<&[u32]>) -> Result<u64, QueueError> {
        let db = self.db();
        let n = match parts {
            None => db.query_one("SELECT count(*) FROM pending", &[], |r| r.i64(0)),
            Some(parts) => {
                let list = IntList::new(db, parts.iter().map(|&p| i64::from(p)).collect());
                db.query_one(
                    &format!("SELECT count(*) FROM pending WHERE part IN {}", list_sql(db, 1)),
                    &[list.value(db)],
                    |r| r.i64(0),
                )
            }
        };
        n.map(|n| n as u64).map_err(|e| self.err(e))
    }

    /// The partitions that have queued events, with how many, by partition.
    pub fn queued_parts(&self) -> Result<Vec<(u32, u64)>, QueueError> {
        self.db()
            .query("SELECT part, count(*) FROM pending GROUP BY part ORDER BY part", &[], |r| {
                Ok((r.i64(0)? as u32, r.i64(1)? as u64))
            })
            .map_err(|e| self.err(e))
    }

    /// Number of events per status (all of them, not only queued).
    pub fn counts(&self) -> Result<BTreeMap<Status, u64>, QueueError> {
        let rows = self
            .db()
            .query(
                &format!(
                    "SELECT 'queued', count(*) FROM pending
                     UNION ALL SELECT status, count(*) FROM settled GROUP BY status
                     UNION ALL SELECT 'applied', count(*) FROM settle_runs r CROSS JOIN event_log e
                         WHERE {}e.part = r.part AND e.seq BETWEEN r.from_seq AND r.to_seq
                           AND NOT EXISTS (SELECT 1 FROM settled s WHERE s.seq = e.seq)
                     UNION ALL SELECT 'applied', -count(*) FROM pending p JOIN event_log e ON e.seq = p.seq
                         WHERE EXISTS ({COVERING})",
                    run_join_hint(self.db())
                ),
                &[],
                |r| Ok((r.text(0)?, r.i64(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let mut sums: BTreeMap<Status, i64> = BTreeMap::new();
        for (s, n) in rows {
            // Applied events come from own rows and runs (less the queued events
            // lying inside a run): add them up.
            if let Some(s) = Status::parse(&s) {
                *sums.entry(s).or_insert(0) += n;
            }
        }
        Ok(sums
            .into_iter()
            .filter(|(s, n)| *n > 0 || *s == Status::Queued)
            .map(|(s, n)| (s, n.max(0) as u64))
            .collect())
    }

    /// The manual freeze flag, when set.
    pub fn manual_freeze(&self) -> Result<Option<ManualFreeze>, QueueError> {
        let row = self
            .db()
            .query_opt("SELECT started_by, started_at FROM \"freeze\" WHERE id = 1 AND active = 1", &[], |r| {
                Ok((r.text(0)?, r.text(1)?))
            })
            .map_err(|e| self.err(e))?;
        row.map(|(by, at)| {
            let since = at.parse().map_err(|_| self.invalid(format!("invalid freeze started_at `{at}`")))?;
            Ok(ManualFreeze { by, since })
        })
        .transpose()
    }

    /// Sets the manual freeze flag. Returns the flag as it now stands: when it was
    /// already set, the earlier start (who and when) is kept and returned.
    pub fn start_freeze(&mut self, by: &str) -> Result<(ManualFreeze, bool), QueueError> {
        let at = stamp(Timestamp::now());
        let since: Timestamp = at.parse().expect("stamp() output parses");
        // Only an inactive (or missing) flag is set: two concurrent starts keep the first.
        let n = self.write(|db| {
            db.execute(
                "INSERT INTO \"freeze\" (id, active, started_by, started_at, stopped_by, stopped_at)
                 VALUES (1, 1, ?1, ?2, NULL, NULL)
                 ON CONFLICT (id) DO UPDATE SET active = 1, started_by = ?1, started_at = ?2, stopped_by = NULL, stopped_at = NULL
                 WHERE \"freeze\".active = 0",
                params![by, &at],
            )
        })?;
        if n == 0 {
            let existing =
                self.manual_freeze()?.ok_or_else(|| self.invalid("the freeze flag changed meanwhile".into()))?;
            return Ok((existing, false));
        }
        Ok((ManualFreeze { by: by.to_owned(), since }, true))
    }

    /// Clears the manual freeze flag. Returns the freeze that was stopped, if any.
    pub fn stop_freeze(&mut self, by: &str) -> Result<Option<ManualFreeze>, QueueError> {
        let Some(existing) = self.manual_freeze()? else { return Ok(None) };
        self.write(|db| {
            db.execute(
                "UPDATE \"freeze\" SET active = 0, stopped_by = ?1, stopped_at = ?2 WHERE id = 1",
                params![by, &stamp(Timestamp::now())],
            )
        })?;
        Ok(Some(existing))
    }
}

/// The connection is gone (I/O error, connection exception, server shut down).
fn connection_lost(e: &DbError) -> bool {
    e.transient && e.code.as_deref().is_none_or(|c| c.starts_with("08") || c.starts_with("57P"))
}

fn newer(version: i64) -> String {
    format!("written by a newer stockshift (schema {version}, this one reads {SCHEMA_VERSION}); upgrade stockshift")
}

pub(crate) fn sqlite_error(e: rusqlite::Error) -> DbError {
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code.to_string()),
        _ => None,
    };
    let transient = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    DbError { message: e.to_string(), code, transient }
}

/// Inserts a batch one event at a time (SQLite: local and cheap per statement).
fn append_rows(db: &Db, batch: &[Incoming<'_>], parts: &[Vec<u32>]) -> Result<Vec<Vec<Insert>>, DbError> {
    let mut out = Vec::with_capacity(batch.len());
    for (inc, parts) in batch.iter().zip(parts) {
        let received = stamp(inc.received_at);
        let mut delivery: Option<i64> = None;
        let mut results = Vec::with_capacity(inc.events.len());
        for (ev, &part) in inc.events.iter().zip(parts) {
            let existing = db.query_opt(
                "SELECT seq FROM event_log WHERE source = ?1 AND id = ?2",
                params![&ev.source, &ev.id],
                |r| r.i64(0),
            )?;
            if let Some(seq) = existing {
                results.push(Insert::Duplicate { seq });
                continue;
            }
            let d = match delivery {
                Some(d) => d,
                None => {
                    let d = db.query_one(
                        "INSERT INTO deliveries (source, received_at, raw) VALUES (?1, ?2, ?3) RETURNING delivery",
                        params![inc.source, &received, inc.raw],
                        |r| r.i64(0),
                    )?;
                    delivery = Some(d);
                    d
                }
            };
            let occurred = ev.occurred_at.to_string();
            let seq = db.query_one(
                "INSERT INTO event_log (source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery, part)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING seq",
                params![
                    &ev.source,
                    &ev.id,
                    &ev.sku,
                    &ev.location,
                    ev.delta(),
                    ev.qty(),
                    ev.sequence,
                    &occurred,
                    &received,
                    d,
                    part
                ],
                |r| r.i64(0),
            )?;
            db.execute("INSERT INTO pending (seq, part) VALUES (?1, ?2)", params![seq, part])?;
            results.push(Insert::Accepted { seq });
        }
        out.push(results);
    }
    Ok(out)
}

/// Inserts a batch with a handful of statements (PostgreSQL: one round trip per
/// statement, not per event). Several receivers may insert the same (source, id)
/// at once: `ON CONFLICT DO NOTHING` makes the later one wait for the earlier
/// one's commit, and it then reports a duplicate.
fn append_bulk(db: &Db, batch: &[Incoming<'_>], parts: &[Vec<u32>]) -> Result<Vec<Vec<Insert>>, DbError> {
    // Every event of the batch, and for a repeated (source, id) the first occurrence.
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut flat: Vec<(usize, &Event, u32, Option<usize>)> = Vec::new();
    for (d, (inc, parts)) in batch.iter().zip(parts).enumerate() {
        for (ev, &part) in inc.events.iter().zip(parts) {
            let i = flat.len();
            let earlier = *first.entry((ev.source.as_str(), ev.id.as_str())).or_insert(i);
            flat.push((d, ev, part, (earlier != i).then_some(earlier)));
        }
    }
    let mut seq_of: HashMap<(&str, &str), Insert> = HashMap::new();
    if flat.is_empty() {
        return Ok(batch.iter().map(|_| Vec::new()).collect());
    }
    let find = |keys: &[(&str, &str)]| -> Result<Vec<(String, String, i64)>, DbError> {
        let sources: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
        db.query(
            "SELECT e.source, e.id, e.seq FROM event_log e
               JOIN unnest(?1::text[], ?2::text[]) AS u(source, id) ON e.source = u.source AND e.id = u.id",
            &[Value::Texts(&sources), Value::Texts(&ids)],
            |r| Ok((r.text(0)?, r.text(1)?, r.i64(2)?)),
        )
    };
    let keys: Vec<(&str, &str)> = first.keys().copied().collect();
    let existing = find(&keys)?;
    let known: HashMap<(String, String), i64> = existing.into_iter().map(|(s, i, q)| ((s, i), q)).collect();
    // The new events, and the deliveries that hold at least one.
    let new: Vec<usize> = (0..flat.len())
        .filter(|&i| flat[i].3.is_none() && !known.contains_key(&(flat[i].1.source.clone(), flat[i].1.id.clone())))
        .collect();
    let mut delivery_of: Vec<Option<i64>> = vec![None; batch.len()];
    if !new.is_empty() {
        let mut needed: Vec<usize> = new.iter().map(|&i| flat[i].0).collect();
        needed.dedup();
        let ids: Vec<i64> = db.query(
            "SELECT nextval(pg_get_serial_sequence('deliveries', 'delivery')) FROM generate_series(1, ?1)",
            params![needed.len() as i64],
            |r| r.i64(0),
        )?;
        let stamps: Vec<String> = needed.iter().map(|&d| stamp(batch[d].received_at)).collect();
        let sources: Vec<&str> = needed.iter().map(|&d| batch[d].source).collect();
        let stamps_ref: Vec<&str> = stamps.iter().map(String::as_str).collect();
        let raws: Vec<&[u8]> = needed.iter().map(|&d| batch[d].raw).collect();
        db.execute(
            "INSERT INTO deliveries (delivery, source, received_at, raw)
             SELECT * FROM unnest(?1::int8[], ?2::text[], ?3::text[], ?4::bytea[])",
            &[Value::Ints(&ids), Value::Texts(&sources), Value::Texts(&stamps_ref), Value::Blobs(&raws)],
        )?;
        for (&d, &id) in needed.iter().zip(&ids) {
            delivery_of[d] = Some(id);
        }
        let sources: Vec<&str> = new.iter().map(|&i| flat[i].1.source.as_str()).collect();
        let ids_: Vec<&str> = new.iter().map(|&i| flat[i].1.id.as_str()).collect();
        let skus: Vec<&str> = new.iter().map(|&i| flat[i].1.sku.as_str()).collect();
        let locations: Vec<&str> = new.iter().map(|&i| flat[i].1.location.as_str()).collect();
        let deltas: Vec<Option<i64>> = new.iter().map(|&i| flat[i].1.delta()).collect();
        let qtys: Vec<Option<i64>> = new.iter().map(|&i| flat[i].1.qty()).collect();
        let sequences: Vec<i64> = new.iter().map(|&i| flat[i].1.sequence).collect();
        let occurred: Vec<String> = new.iter().map(|&i| flat[i].1.occurred_at.to_string()).collect();
        let occurred: Vec<&str> = occurred.iter().map(String::as_str).collect();
        let received: Vec<String> = new.iter().map(|&i| stamp(batch[flat[i].0].received_at)).collect();
        let received: Vec<&str> = received.iter().map(String::as_str).collect();
        let deliveries: Vec<i64> = new.iter().map(|&i| delivery_of[flat[i].0].unwrap_or_default()).collect();
        let event_parts: Vec<i64> = new.iter().map(|&i| i64::from(flat[i].2)).collect();
        let inserted = db.query(
            "WITH ins AS (
                 INSERT INTO event_log (source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery, part)
                 SELECT u.source, u.id, u.sku, u.location, u.delta, u.qty, u.sequence, u.occurred_at, u.received_at, u.delivery, u.part
                 FROM unnest(?1::text[], ?2::text[], ?3::text[], ?4::text[], ?5::int8[], ?6::int8[], ?7::int8[],
                             ?8::text[], ?9::text[], ?10::int8[], ?11::int8[])
                      WITH ORDINALITY AS u(source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery, part, ord)
                 ORDER BY u.ord
                 ON CONFLICT (source, id) DO NOTHING
                 RETURNING seq, part, source, id
             ), queued AS (
                 INSERT INTO pending (seq, part) SELECT seq, part FROM ins
             )
             SELECT source, id, seq FROM ins",
            &[
                Value::Texts(&sources),
                Value::Texts(&ids_),
                Value::Texts(&skus),
                Value::Texts(&locations),
                Value::OptInts(&deltas),
                Value::OptInts(&qtys),
                Value::Ints(&sequences),
                Value::Texts(&occurred),
                Value::Texts(&received),
                Value::Ints(&deliveries),
                Value::Ints(&event_parts),
            ],
            |r| Ok((r.text(0)?, r.text(1)?, r.i64(2)?)),
        )?;
        let inserted: HashMap<(String, String), i64> = inserted.into_iter().map(|(s, i, q)| ((s, i), q)).collect();
        // Lost races: another receiver committed the same (source, id) meanwhile.
        let mut lost: Vec<(&str, &str)> = Vec::new();
        let mut used: HashSet<i64> = HashSet::new();
        for &i in &new {
            let e = flat[i].1;
            match inserted.get(&(e.source.clone(), e.id.clone())) {
                Some(&seq) => {
                    seq_of.insert((e.source.as_str(), e.id.as_str()), Insert::Accepted { seq });
                    used.extend(delivery_of[flat[i].0]);
                }
                None => lost.push((e.source.as_str(), e.id.as_str())),
            }
        }
        if !lost.is_empty() {
            for (s, i, seq) in find(&lost)? {
                if let Some(k) = lost.iter().find(|k| k.0 == s && k.1 == i) {
                    seq_of.insert(*k, Insert::Duplicate { seq });
                }
            }
            // A delivery whose every new event lost its race keeps no body.
            let orphans: Vec<i64> = ids.iter().copied().filter(|d| !used.contains(d)).collect();
            if !orphans.is_empty() {
                db.execute("DELETE FROM deliveries WHERE delivery = ANY(?1::int8[])", &[Value::Ints(&orphans)])?;
            }
        }
    }
    let mut out: Vec<Vec<Insert>> = batch.iter().map(|inc| Vec::with_capacity(inc.events.len())).collect();
    for (d, ev, _, earlier) in &flat {
        let key = (ev.source.as_str(), ev.id.as_str());
        let result = match (known.get(&(ev.source.clone(), ev.id.clone())), earlier, seq_of.get(&key)) {
            (Some(&seq), _, _) => Insert::Duplicate { seq },
            (None, None, Some(r)) => *r,
            (None, Some(_), Some(r)) => Insert::Duplicate { seq: r.seq() },
            (None, _, None) => {
                return Err(DbError {
                    message: format!("event `{}` from `{}` was neither stored nor found", ev.id, ev.source),
                    code: None,
                    transient: true,
                });
            }
        };
        out[*d].push(result);
    }
    Ok(out)
}

/// SQLite fast path of [`Queue::settle_part`]: a stretch of consecutive seqs that
/// are all queued, in one partition, and in no run of it, leaves `pending` with
/// one range delete and becomes one run (a single writer: nothing can commit
/// inside the stretch meanwhile). Returns the seqs left for [`settle_exact`].
fn settle_islands(
    db: &Db,
    settle: i64,
    only: Option<u32>,
    sorted: &[i64],
    done: &mut SettledSet,
) -> Result<Vec<i64>, DbError> {
    let mut rest = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let from = sorted[i];
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 {
            j += 1;
        }
        let to = sorted[j - 1];
        let (n, lo, hi) = db.query_one(
            "SELECT count(*), min(part), max(part) FROM pending WHERE seq BETWEEN ?1 AND ?2",
            params![from, to],
            |r| Ok((r.i64(0)?, r.opt_i64(1)?, r.opt_i64(2)?)),
        )?;
        let whole = n == to - from + 1
            && lo == hi
            && lo.is_some_and(|p| only.is_none_or(|o| i64::from(o) == p))
            && !run_intersects(db, lo.unwrap_or_default(), from, to)?;
        if whole {
            db.execute("DELETE FROM pending WHERE seq BETWEEN ?1 AND ?2", params![from, to])?;
            insert_runs(db, &[(lo.unwrap_or_default(), from, to)], settle)?;
            done.ranges.push((from, to));
        } else if n > 0 {
            rest.extend_from_slice(&sorted[i..j]);
        }
        i = j;
    }
    Ok(rest)
}

/// The general form of [`Queue::settle_part`] (every PostgreSQL settle; on SQLite
/// what the fast path left): deletes exactly these seqs from `pending` (those of
/// partition `only`, when given) and writes runs per partition.
fn settle_exact(db: &Db, settle: i64, only: Option<u32>, seqs: Vec<i64>, done: &mut SettledSet) -> Result<(), DbError> {
    let list = IntList::new(db, seqs);
    let deleted: Vec<(i64, i64)> = match only {
        None => db.query(
            &format!("DELETE FROM pending WHERE seq IN {} RETURNING part, seq", list_sql(db, 1)),
            &[list.value(db)],
            |r| Ok((r.i64(0)?, r.i64(1)?)),
        )?,
        Some(p) => db.query(
            &format!("DELETE FROM pending WHERE seq IN {} AND part = ?2 RETURNING part, seq", list_sql(db, 1)),
            &[list.value(db), Value::Int(i64::from(p))],
            |r| Ok((r.i64(0)?, r.i64(1)?)),
        )?,
    };
    let mut by_part: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (part, seq) in deleted {
        by_part.entry(part).or_default().push(seq);
    }
    let mut runs = Vec::new();
    let mut own = Vec::new();
    for (part, mut seqs) in by_part {
        seqs.sort_unstable();
        let list = IntList::new(db, seqs.clone());
        // Settled inside an older run of the partition (committed late, or moved there).
        let covered: HashSet<i64> = db
            .query(
                &format!(
                    "SELECT u.seq FROM {} u WHERE EXISTS (
                       SELECT 1 FROM settle_runs r WHERE r.part = ?2 AND r.to_seq >= u.seq
                          AND r.from_seq = (SELECT max(x.from_seq) FROM settle_runs x WHERE x.part = ?2 AND x.from_seq <= u.seq))",
                    list_sql(db, 1)
                ),
                &[list.value(db), Value::Int(part)],
                |r| r.i64(0),
            )?
            .into_iter()
            .collect();
        // A run may not span a settled event of the partition that is not one of
        // these, nor the start of another run of it.
        let breaks: HashSet<i64> = db
            .query(
                &format!(
                    "SELECT d.seq FROM (SELECT u.seq AS seq, lead(u.seq) OVER (ORDER BY u.seq) AS nxt FROM {} u) d
                     WHERE d.nxt IS NOT NULL AND (
                         EXISTS (SELECT 1 FROM event_log e WHERE e.part = ?2 AND e.seq > d.seq AND e.seq < d.nxt
                                   AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.seq = e.seq))
                      OR EXISTS (SELECT 1 FROM settle_runs r WHERE r.part = ?2 AND r.from_seq > d.seq AND r.from_seq < d.nxt))",
                    list_sql(db, 1)
                ),
                &[list.value(db), Value::Int(part)],
                |r| r.i64(0),
            )?
            .into_iter()
            .collect();
        let mut cur: Option<(i64, i64)> = None;
        for &s in &seqs {
            if covered.contains(&s) {
                own.push(s);
                runs.extend(cur.take().map(|(a, b)| (part, a, b)));
                continue;
            }
            cur = Some(cur.map_or((s, s), |(a, _)| (a, s)));
            if breaks.contains(&s) {
                runs.extend(cur.take().map(|(a, b)| (part, a, b)));
            }
        }
        runs.extend(cur.map(|(a, b)| (part, a, b)));
        done.seqs.extend(seqs);
    }
    insert_runs(db, &runs, settle)?;
    upsert_settled(db, own, Status::Applied, settle, None)?;
    done.seqs.sort_unstable();
    Ok(())
}

// ---------------------------------------------------------------- Kafka consumer offsets (schema version 3)
//
// A Kafka source (`events::kafka`) keeps its position in each partition here, in
// the queue itself, and writes it in the SAME transaction as the events it
// read: an offset is committed exactly when the events before it are durably
// queued, so a crash re-reads from the last commit and loses nothing. The
// Kafka-side consumer-group offsets are not used.

/// Version 3: `kafka_offsets`, the next offset to read per (source, group, topic, partition).
const SCHEMA_V3_KAFKA_OFFSETS: &str = "
CREATE TABLE kafka_offsets (
    source          TEXT NOT NULL,
    consumer_group  TEXT NOT NULL,
    topic           TEXT NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL CHECK (next_offset >= 0),
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (source, consumer_group, topic, partition)
);
";

/// Where a Kafka consumer is in one partition: the offset of the next record to read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KafkaOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// Offsets to commit with a batch of events, for one source and consumer group.
#[derive(Debug, Clone, Copy)]
struct KafkaCommit<'a> {
    source: &'a str,
    group: &'a str,
    offsets: &'a [KafkaOffset],
}

fn write_kafka_offsets(db: &Db, c: KafkaCommit<'_>) -> Result<(), DbError> {
    let now = stamp(Timestamp::now());
    for o in c.offsets {
        db.execute(
            "INSERT INTO kafka_offsets (source, consumer_group, topic, partition, next_offset, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (source, consumer_group, topic, partition)
             DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
            params![c.source, c.group, &o.topic, i64::from(o.partition), o.next_offset, &now],
        )?;
    }
    Ok(())
}

impl Queue {
    /// Stores records read from Kafka: their events (deduplicated by (source, id) like
    /// webhook deliveries) and the consumer's new `offsets` for `source` and `group`, in
    /// ONE transaction. Either both are committed or neither is.
    pub fn append_with_offsets(
        &mut self,
        batch: &[Incoming<'_>],
        source: &str,
        group: &str,
        offsets: &[KafkaOffset],
    ) -> Result<Vec<Vec<Insert>>, QueueError> {
        self.append_and_commit(batch, Some(KafkaCommit { source, group, offsets }))
    }

    /// The committed offsets of a Kafka source's consumer group, by topic and partition.
    pub fn kafka_offsets(&self, source: &str, group: &str) -> Result<Vec<KafkaOffset>, QueueError> {
        self.db()
            .query(
                "SELECT topic, partition, next_offset FROM kafka_offsets
                 WHERE source = ?1 AND consumer_group = ?2 ORDER BY topic, partition",
                params![source, group],
                |r| Ok(KafkaOffset { topic: r.text(0)?, partition: r.i64(1)? as i32, next_offset: r.i64(2)? }),
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod kafka_offsets_tests {
    use super::*;

    fn ev(id: &str) -> Event {
        Event {
            id: id.into(),
            source: "stream".into(),
            sku: "S".into(),
            location: "L".into(),
            change: Change::Delta(-1),
            sequence: 1,
            occurred_at: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    fn off(partition: i32, next_offset: i64) -> KafkaOffset {
        KafkaOffset { topic: "t".into(), partition, next_offset }
    }

    #[test]
    fn offsets_are_committed_with_the_events_and_kept_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("events.db")).unwrap();
        let now = Timestamp::now();
        let (a, b) = ([ev("a")], [ev("b")]);
        let batch = [
            Incoming { source: "stream", raw: b"a", received_at: now, events: &a },
            Incoming { source: "stream", raw: b"b", received_at: now, events: &b },
        ];
        let res = q.append_with_offsets(&batch, "stream", "g1", &[off(0, 5), off(2, 1)]).unwrap();
        assert_eq!(res, vec![vec![Insert::Accepted { seq: 1 }], vec![Insert::Accepted { seq: 2 }]]);
        assert_eq!(q.kafka_offsets("stream", "g1").unwrap(), vec![off(0, 5), off(2, 1)]);
        assert!(q.kafka_offsets("stream", "g2").unwrap().is_empty());
        // Re-read records are duplicates; offsets move (also backwards, after a reset).
        let res = q.append_with_offsets(&batch[..1], "stream", "g1", &[off(0, 3)]).unwrap();
        assert_eq!(res, vec![vec![Insert::Duplicate { seq: 1 }]]);
        assert_eq!(q.kafka_offsets("stream", "g1").unwrap(), vec![off(0, 3), off(2, 1)]);
        // Offsets alone (every record of the batch was malformed).
        q.append_with_offsets(&[], "stream", "g1", &[off(1, 9)]).unwrap();
        assert_eq!(q.kafka_offsets("stream", "g1").unwrap().len(), 3);
        assert_eq!(q.queued_count().unwrap(), 2);
    }

    #[test]
    fn a_failed_commit_stores_neither_events_nor_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("events.db")).unwrap();
        let a = [ev("a")];
        let batch = [Incoming { source: "stream", raw: b"a", received_at: Timestamp::now(), events: &a }];
        let e = q.append_with_offsets(&batch, "stream", "g", &[off(0, -1)]).unwrap_err();
        assert!(e.to_string().contains("CHECK"), "{e}");
        assert_eq!(q.queued_count().unwrap(), 0);
        assert!(q.kafka_offsets("stream", "g").unwrap().is_empty());
    }

    #[test]
    fn a_version_2_queue_gains_the_offsets_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(SCHEMA_V2).unwrap();
            c.execute_batch("PRAGMA user_version = 2;").unwrap();
        }
        let q = Queue::open(&path).unwrap();
        assert!(q.kafka_offsets("stream", "g").unwrap().is_empty());
        let v: i64 = q.db().as_sqlite().unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: &str, id: &str, change: Change, sequence: i64) -> Event {
        Event {
            id: id.into(),
            source: source.into(),
            sku: "SKU-1".into(),
            location: "WH".into(),
            change,
            sequence,
            occurred_at: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn append_dedupes_and_keeps_raw_once_per_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("state/events.db")).unwrap();
        let now = Timestamp::now();
        let a = [ev("erp", "a", Change::Delta(-1), 1), ev("erp", "b", Change::Qty(5), 2)];
        let dup = [ev("erp", "a", Change::Delta(-9), 9), ev("shop", "a", Change::Delta(1), 3)];
        let res = q
            .append_deliveries(&[
                Incoming { source: "erp", raw: b"body-1", received_at: now, events: &a },
                Incoming { source: "erp", raw: b"body-2", received_at: now, events: &dup[..1] },
                Incoming { source: "shop", raw: b"body-3", received_at: now, events: &dup[1..] },
            ])
            .unwrap();
        assert_eq!(res[0], vec![Insert::Accepted { seq: 1 }, Insert::Accepted { seq: 2 }]);
        assert_eq!(res[1], vec![Insert::Duplicate { seq: 1 }]);
        assert_eq!(res[2], vec![Insert::Accepted { seq: 3 }]);
        let stored = q.get("erp", "a").unwrap().unwrap();
        assert_eq!(stored.event, a[0], "the first event wins");
        assert_eq!(q.raw(stored.delivery.unwrap()).unwrap().unwrap(), b"body-1");
        assert_eq!(q.get("erp", "b").unwrap().unwrap().delivery, stored.delivery);
        let deliveries: i64 =
            q.db().as_sqlite().unwrap().query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)).unwrap();
        assert_eq!(deliveries, 2, "a delivery of only duplicates stores no body");

        assert_eq!(q.append(&[ev("erp", "b", Change::Qty(1), 1), ev("erp", "c", Change::Qty(1), 1)]).unwrap().len(), 2);
        assert_eq!(q.queued_count().unwrap(), 4);
    }

    #[test]
    fn pending_mark_requeue_and_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let mut q = Queue::open(&path).unwrap();
        q.append(&[
            ev("erp", "1", Change::Delta(-1), 1),
            ev("erp", "2", Change::Delta(-1), 2),
            ev("shop", "3", Change::Qty(7), 3),
        ])
        .unwrap();
        let p = q.pending(10).unwrap();
        assert_eq!(p.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(q.pending(1).unwrap().len(), 1);
        let b = q.backlog().unwrap();
        assert_eq!(b.total, 3);
        assert_eq!(b.sources["erp"].queued, 2);
        assert_eq!(b.sources["shop"].queued, 1);
        assert_eq!(b.oldest_age_seconds(Timestamp::now()), Some(0));

        assert_eq!(q.mark(&[1, 3, 99], Status::Applied, None).unwrap(), 2);
        assert_eq!(q.mark(&[2], Status::Failed, Some("target refused")).unwrap(), 1);
        assert!(q.mark(&[2], Status::Queued, None).is_err());
        assert!(q.pending(10).unwrap().is_empty());
        let failed = q.get("erp", "2").unwrap().unwrap();
        assert_eq!((failed.status, failed.error.as_deref()), (Status::Failed, Some("target refused")));
        assert!(failed.applied_at.is_some());
        assert_eq!(q.backlog().unwrap(), Backlog::default());

        // A second connection (another process) sees the same file.
        let mut q2 = Queue::open(&path).unwrap();
        let key = EventKey { source: "erp".into(), id: "2".into() };
        assert_eq!(q2.requeue(&[key, EventKey { source: "erp".into(), id: "nope".into() }]).unwrap(), 1);
        let back = q.pending(10).unwrap();
        assert_eq!((back.len(), back[0].status, back[0].error.clone()), (1, Status::Queued, None));
        assert_eq!(q.counts().unwrap()[&Status::Applied], 2);
        assert_eq!(q.events_after(1, 10).unwrap().len(), 2);
    }

    #[test]
    fn freeze_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("events.db")).unwrap();
        assert_eq!(q.manual_freeze().unwrap(), None);
        let (f, new) = q.start_freeze("alice@host").unwrap();
        assert!(new);
        let (again, new) = q.start_freeze("bob@host").unwrap();
        assert!(!new);
        assert_eq!(again.by, "alice@host");
        assert_eq!(q.manual_freeze().unwrap().unwrap(), f);
        assert_eq!(q.stop_freeze("bob@host").unwrap().unwrap().by, "alice@host");
        assert_eq!(q.stop_freeze("bob@host").unwrap(), None);
        assert_eq!(q.manual_freeze().unwrap(), None);
    }

    #[test]
    fn a_version_1_queue_is_migrated_with_every_status_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(
                "INSERT INTO deliveries (source, received_at, raw) VALUES ('erp', '2026-11-27T10:00:00.000Z', x'7b7d');
                 INSERT INTO events (source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery, status, applied_at, error) VALUES
                   ('erp', 'a', 'S', 'W', -1, NULL, 1, '2026-11-27T10:00:00Z', '2026-11-27T10:00:00.000Z', 1, 'applied', '2026-11-27T10:05:00.000Z', NULL),
                   ('erp', 'b', 'S', 'W', NULL, 4, 2, '2026-11-27T10:00:00Z', '2026-11-27T10:00:00.000Z', 1, 'failed', '2026-11-27T10:06:00.000Z', 'refused'),
                   ('erp', 'c', 'S', 'W', -2, NULL, 3, '2026-11-27T10:00:00Z', '2026-11-27T10:00:00.000Z', 1, 'queued', NULL, NULL);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut q = Queue::open(&path).unwrap();
        let a = q.get("erp", "a").unwrap().unwrap();
        assert_eq!(
            (a.status, a.applied_at.map(|t| t.to_string())),
            (Status::Applied, Some("2026-11-27T10:05:00Z".into()))
        );
        let b = q.get("erp", "b").unwrap().unwrap();
        assert_eq!((b.status, b.error.as_deref()), (Status::Failed, Some("refused")));
        assert_eq!(q.pending(10).unwrap().iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>(), ["c"]);
        // New events continue the sequence; duplicates of migrated ones are still caught.
        let res = q.append(&[ev("erp", "a", Change::Delta(1), 9), ev("erp", "d", Change::Delta(1), 9)]).unwrap();
        assert_eq!(res, vec![Insert::Duplicate { seq: 1 }, Insert::Accepted { seq: 4 }]);
        let v: i64 = q.db().as_sqlite().unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn runs_settle_only_queued_events_and_requeue_undoes_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("events.db")).unwrap();
        let evs: Vec<Event> = (1..=6).map(|i| ev("erp", &i.to_string(), Change::Delta(-1), i)).collect();
        q.append(&evs).unwrap();
        q.mark(&[3], Status::Failed, Some("x")).unwrap();
        assert_eq!(q.mark_runs(&[(1, 4, Status::Applied), (6, 6, Status::Superseded)]).unwrap(), 4);
        assert_eq!(
            q.get("erp", "3").unwrap().unwrap().status,
            Status::Failed,
            "a failed event inside a run stays failed"
        );
        assert_eq!(q.pending(10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5]);
        let c = q.counts().unwrap();
        assert_eq!((c[&Status::Applied], c[&Status::Superseded], c[&Status::Failed], c[&Status::Queued]), (3, 1, 1, 1));
        assert_eq!(q.requeue_seqs(&[2, 6, 5, 99]).unwrap(), 2, "only settled events go back");
        assert_eq!(q.pending(10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 5, 6]);
        assert_eq!(q.queued_count().unwrap(), 3);
        let back = q.get("erp", "2").unwrap().unwrap();
        assert_eq!((back.status, back.applied_at), (Status::Queued, None));
    }

    #[test]
    fn settle_writes_runs_and_rows_only_for_superseded_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("events.db")).unwrap();
        let evs: Vec<Event> = (1..=8).map(|i| ev("erp", &i.to_string(), Change::Delta(-1), i)).collect();
        q.append(&evs).unwrap();
        // 5 stays queued (blocked); 3 is superseded; 9 does not exist.
        assert_eq!(q.settle(&[1, 2, 3, 4, 6, 7, 8, 9], &[3]).unwrap(), 7);
        let runs: Vec<(i64, i64)> = q
            .db()
            .as_sqlite()
            .unwrap()
            .prepare("SELECT from_seq, to_seq FROM settle_runs ORDER BY from_seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(runs, vec![(1, 4), (6, 8)]);
        let own: i64 = q.db().as_sqlite().unwrap().query_row("SELECT count(*) FROM settled", [], |r| r.get(0)).unwrap();
        assert_eq!(own, 1, "only the superseded event has a row");
        let status = |q: &Queue, id: &str| q.get("erp", id).unwrap().unwrap().status;
        assert_eq!(status(&q, "3"), Status::Superseded);
        assert_eq!(status(&q, "4"), Status::Applied);
        assert!(q.get("erp", "4").unwrap().unwrap().applied_at.is_some());
        assert_eq!(status(&q, "5"), Status::Queued);
        let c = q.counts().unwrap();
        assert_eq!((c[&Status::Applied], c[&Status::Superseded], c[&Status::Queued]), (6, 1, 1));
        // Settling again is a no-op; the epoch sees every event once.
        assert_eq!(q.settle(&[1, 2, 3], &[]).unwrap(), 0);
        let epoch = crate::events::epoch::read(&q, None).unwrap();
        assert_eq!(epoch.events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
        // Requeue splits the run around the event.
        assert_eq!(q.requeue_seqs(&[7, 3]).unwrap(), 2);
        assert_eq!(status(&q, "7"), Status::Queued);
        assert_eq!(status(&q, "6"), Status::Applied);
        assert_eq!(status(&q, "8"), Status::Applied);
        assert_eq!(status(&q, "3"), Status::Queued, "a superseded event in a run goes back too");
        assert_eq!(q.pending(10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 5, 7]);
        // A failed mark overrides the run it sits in.
        q.mark(&[2], Status::Failed, Some("x")).unwrap();
        assert_eq!(status(&q, "2"), Status::Failed);
        let epoch = crate::events::epoch::read(&q, None).unwrap();
        assert!(!epoch.events.iter().any(|e| e.seq == 2), "failed events are not folded");
        assert_eq!(epoch.events.len(), 7);
    }

    #[test]
    fn a_version_3_queue_gets_partitions_with_its_runs_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(SCHEMA_V2).unwrap();
            c.execute_batch(SCHEMA_V3_KAFKA_OFFSETS).unwrap();
            c.execute_batch(
                "INSERT INTO deliveries (source, received_at, raw) VALUES ('erp', '2026-11-27T10:00:00.000Z', x'7b7d');
                 INSERT INTO event_log (source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery) VALUES
                   ('erp', 'a', 'S', 'W', -1, NULL, 1, '2026-11-27T10:00:00Z', '2026-11-27T10:00:00.000Z', 1),
                   ('erp', 'b', 'S', 'W', -1, NULL, 2, '2026-11-27T10:00:00Z', '2026-11-27T10:00:00.000Z', 1),
                   ('erp', 'c', 'S', 'W', -1, NULL, 3, '2026-11-27T10:00:00Z', '2026-11-27T10:00:00.000Z', 1);
                 INSERT INTO settles (at) VALUES ('2026-11-27T10:05:00.000Z');
                 INSERT INTO settle_runs (from_seq, to_seq, settle) VALUES (1, 2, 1);
                 INSERT INTO settled (seq, status, settle, error) VALUES (2, 'superseded', 1, NULL);
                 INSERT INTO pending (seq) VALUES (3);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let mut q = Queue::open(&path).unwrap();
        let status = |q: &Queue, id: &str| q.get("erp", id).unwrap().unwrap().status;
        assert_eq!(
            (status(&q, "a"), status(&q, "b"), status(&q, "c")),
            (Status::Applied, Status::Superseded, Status::Queued)
        );
        assert_eq!(q.queued_parts().unwrap(), vec![(0, 1)]);
        assert_eq!(q.part_of_seq(1).unwrap(), Some(0));
        assert_eq!(crate::events::epoch::read(&q, None).unwrap().events.len(), 3);
        // Settling continues the runs of partition 0; requeue splits the old run.
        assert_eq!(q.settle(&[3], &[]).unwrap(), 1);
        assert_eq!(q.requeue_seqs(&[1]).unwrap(), 1);
        assert_eq!(
            (status(&q, "a"), status(&q, "b"), status(&q, "c")),
            (Status::Queued, Status::Superseded, Status::Applied)
        );
        let v: i64 = q.db().as_sqlite().unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 4);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        drop(Queue::open(&path).unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99;").unwrap();
        let e = Queue::open(&path).unwrap_err().to_string();
        assert!(e.contains("newer stockshift"), "{e}");
    }
}
