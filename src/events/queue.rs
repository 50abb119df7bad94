//! The durable event queue: a SQLite file, `<state dir>/events.db`.
//!
//! ```text
//! deliveries(delivery PK, source, received_at, raw BLOB)           one row per accepted request
//! event_log(seq PK AUTOINCREMENT, source, id, sku, location, delta, qty, sequence,
//!           occurred_at, received_at, delivery → deliveries, UNIQUE(source, id))
//!                                                                  each event once, never changed
//! pending(seq PK)                                                  the queued events
//! settle_runs(from_seq PK, to_seq, settle → settles)               stretches of applied events
//! settled(seq PK, status, settle → settles, error)                 other handled ones (override runs)
//! settles(settle PK, at)                                           one row per status change batch
//! events (a view)                                                  event_log with status, applied_at, error
//! freeze(id = 1, active, started_by, started_at, stopped_by, stopped_at)
//! kafka_offsets(source, consumer_group, topic, partition, next_offset)   Kafka sources' positions
//! ```
//!
//! * **Durability.** WAL journal with `synchronous=FULL`: a commit returns only once
//!   the WAL is fsync'd, so an acknowledged event survives a killed process and a
//!   power cut. The receiver acknowledges (HTTP 2xx) only after the commit that holds
//!   the event (see `events::ingest` for the group commit).
//! * **Dedupe.** `UNIQUE(source, id)`: a second event with the same id is reported
//!   as [`Insert::Duplicate`] and not stored again, whatever its content.
//! * **Raw bodies.** The raw request body is kept once per delivery (a Shopify order
//!   with 50 line items is one body and 50 events), linked by `events.delivery`;
//!   [`Queue::raw`] returns it for audit.
//! * **Status.** `queued` → `applied` | `failed` | `superseded` (set by replay with
//!   [`Queue::mark`] or [`Queue::mark_runs`]); [`Queue::requeue`] puts events back
//!   to `queued`. A queued event's seq is in `pending`. A handled one has a row in
//!   `settled` or, when it was applied, lies in a `settle_runs` stretch (a row in
//!   `settled` overrides a run). The event rows themselves are never rewritten:
//!   replay settles a million applied events by deleting a range from `pending`
//!   and writing one run, and only superseded events get rows of their own.
//! * **Concurrency.** Several processes may open the file (the receiver writes,
//!   `replay` reads and marks, `freeze` writes the flag): every write is a short
//!   `BEGIN IMMEDIATE` transaction and connections wait up to 10 s for the lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::event::{Change, Event};

/// File name of the queue inside the state folder.
pub const FILE_NAME: &str = "events.db";

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 3;

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

/// Errors of the queue. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("event queue {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("event queue {path}: {message}")]
    Invalid { path: String, message: String },
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
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("path", &self.path).finish()
    }
}

/// Stored timestamps: UTC, millisecond precision, fixed width (sortable as text).
pub(crate) fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Starts a batch of status changes stamped with the current time.
fn new_settle(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO settles (at) VALUES (?1)")?.execute([stamp(Timestamp::now())])?;
    Ok(tx.last_insert_rowid())
}

impl Queue {
    /// The queue file of a state folder.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// Opens (creating the folder, file and tables when needed) the queue at `path`.
    pub fn open(path: &Path) -> Result<Queue, QueueError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Invalid {
                path: shown.clone(),
                message: format!("cannot create the folder {}: {e}", dir.display()),
            })?;
        }
        let err = |e| QueueError::Sqlite { path: shown.clone(), source: e };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(QueueError::Invalid {
                path: shown,
                message: format!("cannot switch to WAL journal mode (got `{mode}`); is the file on a network share?"),
            });
        }
        // A larger page cache keeps bulk status updates (replay marks) from re-reading pages.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_size = -65536;").map_err(err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(QueueError::Invalid {
                path: shown,
                message: format!(
                    "written by a newer stockshift (schema {version}, this one reads {SCHEMA_VERSION}); upgrade stockshift"
                ),
            });
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
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};")).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(Queue { conn, path: path.to_path_buf() })
    }

    /// The file this queue lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> QueueError {
        QueueError::Sqlite { path: self.path.display().to_string(), source: e }
    }

    /// The connection, for readers in this module's neighbours (`events::epoch`).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn sqlite_error(&self, e: rusqlite::Error) -> QueueError {
        self.err(e)
    }

    pub(crate) fn invalid(&self, message: String) -> QueueError {
        QueueError::Invalid { path: self.path.display().to_string(), message }
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
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut find = tx.prepare_cached("SELECT seq FROM event_log WHERE source = ?1 AND id = ?2").map_err(err)?;
            let mut add_pending = tx.prepare_cached("INSERT INTO pending (seq) VALUES (?1)").map_err(err)?;
            let mut add_delivery = tx
                .prepare_cached("INSERT INTO deliveries (source, received_at, raw) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            let mut add_event = tx
                .prepare_cached(
                    "INSERT INTO event_log (source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(err)?;
            for inc in batch {
                let received = stamp(inc.received_at);
                let mut delivery: Option<i64> = None;
                let mut results = Vec::with_capacity(inc.events.len());
                for ev in inc.events {
                    let existing: Option<i64> =
                        find.query_row(params![ev.source, ev.id], |r| r.get(0)).optional().map_err(err)?;
                    if let Some(seq) = existing {
                        results.push(Insert::Duplicate { seq });
                        continue;
                    }
                    let d = match delivery {
                        Some(d) => d,
                        None => {
                            add_delivery.execute(params![inc.source, received, inc.raw]).map_err(err)?;
                            let d = tx.last_insert_rowid();
                            delivery = Some(d);
                            d
                        }
                    };
                    add_event
                        .execute(params![
                            ev.source,
                            ev.id,
                            ev.sku,
                            ev.location,
                            ev.delta(),
                            ev.qty(),
                            ev.sequence,
                            ev.occurred_at.to_string(),
                            received,
                            d
                        ])
                        .map_err(err)?;
                    let seq = tx.last_insert_rowid();
                    add_pending.execute([seq]).map_err(err)?;
                    results.push(Insert::Accepted { seq });
                }
                out.push(results);
            }
        }
        if let Some(c) = offsets {
            write_kafka_offsets(&tx, c).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
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

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<QueuedEvent, String>> {
        let seq: i64 = r.get(0)?;
        let delta: Option<i64> = r.get(5)?;
        let qty: Option<i64> = r.get(6)?;
        let occurred: String = r.get(8)?;
        let received: String = r.get(9)?;
        let status: String = r.get(10)?;
        let applied: Option<String> = r.get(11)?;
        let bad = |what: &str| format!("event seq {seq} has an invalid {what}");
        let build = || -> Result<QueuedEvent, String> {
            let change = match (delta, qty) {
                (Some(d), None) => Change::Delta(d),
                (None, Some(q)) => Change::Qty(q),
                _ => return Err(bad("delta/qty pair")),
            };
            Ok(QueuedEvent {
                seq,
                event: Event {
                    id: r.get(2).map_err(|_| bad("id"))?,
                    source: r.get(1).map_err(|_| bad("source"))?,
                    sku: r.get(3).map_err(|_| bad("sku"))?,
                    location: r.get(4).map_err(|_| bad("location"))?,
                    change,
                    sequence: r.get(7).map_err(|_| bad("sequence"))?,
                    occurred_at: occurred.parse().map_err(|_| bad("occurred_at"))?,
                },
                received_at: received.parse().map_err(|_| bad("received_at"))?,
                status: Status::parse(&status).ok_or_else(|| bad("status"))?,
                applied_at: applied.map(|a| a.parse().map_err(|_| bad("applied_at"))).transpose()?,
                error: r.get(12).map_err(|_| bad("error"))?,
                delivery: r.get(13).map_err(|_| bad("delivery"))?,
            })
        };
        Ok(build())
    }

    fn query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<QueuedEvent>, QueueError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(args, Self::row).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let r = r.map_err(|e| self.err(e))?;
            out.push(r.map_err(|message| QueueError::Invalid { path: self.path.display().to_string(), message })?);
        }
        Ok(out)
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

    /// The raw request body of a delivery.
    pub fn raw(&self, delivery: i64) -> Result<Option<Vec<u8>>, QueueError> {
        self.conn
            .query_row("SELECT raw FROM deliveries WHERE delivery = ?1", [delivery], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Sets the status of the events with these `seq`s (in one transaction) and
    /// stamps `applied_at` with now; `error` is stored (or cleared when `None`).
    /// Returns how many events were found. To put events back, use [`Queue::requeue`].
    pub fn mark(&mut self, seqs: &[i64], status: Status, error: Option<&str>) -> Result<usize, QueueError> {
        if status == Status::Queued {
            return Err(QueueError::Invalid {
                path: self.path.display().to_string(),
                message: "mark() does not set `queued`; use requeue()".into(),
            });
        }
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let settle = new_settle(&tx).map_err(err)?;
        let mut n = 0;
        {
            let mut exists = tx.prepare_cached("SELECT 1 FROM event_log WHERE seq = ?1").map_err(err)?;
            let mut unqueue = tx.prepare_cached("DELETE FROM pending WHERE seq = ?1").map_err(err)?;
            let mut set = tx
                .prepare_cached("INSERT OR REPLACE INTO settled (seq, status, settle, error) VALUES (?1, ?2, ?3, ?4)")
                .map_err(err)?;
            // In seq order, so the rows are visited page by page rather than at random.
            let mut sorted = seqs.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            for seq in sorted {
                if !exists.exists([seq]).map_err(err)? {
                    continue;
                }
                unqueue.execute([seq]).map_err(err)?;
                set.execute(params![seq, status.as_str(), settle, error]).map_err(err)?;
                n += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Settles queued events by runs of `seq`: every *queued* event with
    /// `from <= seq <= to` gets the run's status (events in the range with another
    /// status are left alone). One transaction; far fewer statements than
    /// [`Queue::mark`] when replay settles long stretches of the queue at once.
    pub fn mark_runs(&mut self, runs: &[(i64, i64, Status)]) -> Result<usize, QueueError> {
        if runs.iter().any(|r| r.2 == Status::Queued) {
            return Err(QueueError::Invalid {
                path: self.path.display().to_string(),
                message: "mark_runs() does not set `queued`; use requeue()".into(),
            });
        }
        let mut applied = Vec::new();
        let mut others: Vec<(i64, Status)> = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT seq FROM pending WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq")
                .map_err(|e| self.err(e))?;
            for (from, to, status) in runs {
                let seqs = stmt.query_map([from, to], |r| r.get::<_, i64>(0)).map_err(|e| self.err(e))?;
                for seq in seqs {
                    let seq = seq.map_err(|e| self.err(e))?;
                    if *status == Status::Applied { applied.push(seq) } else { others.push((seq, *status)) }
                }
            }
        }
        let superseded: Vec<i64> = others.iter().filter(|o| o.1 == Status::Superseded).map(|o| o.0).collect();
        let failed: Vec<i64> = others.iter().filter(|o| o.1 == Status::Failed).map(|o| o.0).collect();
        let mut all: Vec<i64> = applied.iter().chain(&superseded).copied().collect();
        all.sort_unstable();
        let n = self.settle(&all, &superseded)?;
        Ok(n + self.mark(&failed, Status::Failed, None)?)
    }

    /// Settles queued events as applied, except `superseded` (a subset of `seqs`),
    /// in one transaction, so a killed replay leaves either all of it or none.
    /// Consecutive seqs become one `settle_runs` row and one range delete from
    /// `pending`; only superseded events get rows of their own. Seqs that are not
    /// queued are left alone. Returns how many events were settled.
    pub fn settle(&mut self, seqs: &[i64], superseded: &[i64]) -> Result<usize, QueueError> {
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let settle = new_settle(&tx).map_err(err)?;
        let mut n = 0;
        {
            let mut queued = tx.prepare_cached("SELECT 1 FROM pending WHERE seq = ?1").map_err(err)?;
            let mut count =
                tx.prepare_cached("SELECT count(*) FROM pending WHERE seq BETWEEN ?1 AND ?2").map_err(err)?;
            let mut unqueue = tx.prepare_cached("DELETE FROM pending WHERE seq BETWEEN ?1 AND ?2").map_err(err)?;
            let mut add_run = tx
                .prepare_cached("INSERT INTO settle_runs (from_seq, to_seq, settle) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            let mut i = 0;
            while i < sorted.len() {
                // An island: consecutive seqs, all still queued (a settled or
                // missing seq ends it, so runs never cover an event they did not settle).
                let from = sorted[i];
                if !queued.exists([from]).map_err(err)? {
                    i += 1;
                    continue;
                }
                let mut to = from;
                let mut j = i + 1;
                while j < sorted.len() && sorted[j] == to + 1 {
                    to += 1;
                    j += 1;
                }
                let in_pending: i64 = count.query_row([from, to], |r| r.get(0)).map_err(err)?;
                if in_pending == to - from + 1 {
                    unqueue.execute([from, to]).map_err(err)?;
                    add_run.execute(params![from, to, settle]).map_err(err)?;
                    n += in_pending as usize;
                    i = j;
                } else {
                    // Part of the island is not queued (settled meanwhile, or never
                    // stored): keep the queued seqs, in runs of their own.
                    let mut k = i;
                    while k < j {
                        if !queued.exists([sorted[k]]).map_err(err)? {
                            k += 1;
                            continue;
                        }
                        let start = sorted[k];
                        let mut end = start;
                        k += 1;
                        while k < j && sorted[k] == end + 1 && queued.exists([sorted[k]]).map_err(err)? {
                            end += 1;
                            k += 1;
                        }
                        unqueue.execute([start, end]).map_err(err)?;
                        add_run.execute(params![start, end, settle]).map_err(err)?;
                        n += (end - start + 1) as usize;
                    }
                    i = j;
                }
            }
            // Superseded events: a row each, overriding their run.
            let mut sup = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO settled (seq, status, settle, error)
                     SELECT ?1, 'superseded', ?2, NULL WHERE EXISTS
                       (SELECT 1 FROM settle_runs WHERE from_seq <= ?1 AND to_seq >= ?1 AND settle = ?2)",
                )
                .map_err(err)?;
            let mut sorted_sup = superseded.to_vec();
            sorted_sup.sort_unstable();
            for seq in sorted_sup {
                sup.execute(params![seq, settle]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Puts the events with these `seq`s back to `queued` (a rolled-back cutover
    /// returns the events it replayed, so the next attempt replays them again).
    pub fn requeue_seqs(&mut self, seqs: &[i64]) -> Result<usize, QueueError> {
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut n = 0;
        {
            let mut unsettle = tx.prepare_cached("DELETE FROM settled WHERE seq = ?1").map_err(err)?;
            let mut covering = tx
                .prepare_cached(
                    "SELECT from_seq, to_seq, settle FROM settle_runs WHERE from_seq =
                       (SELECT max(from_seq) FROM settle_runs WHERE from_seq <= ?1) AND to_seq >= ?1",
                )
                .map_err(err)?;
            let mut drop_run = tx.prepare_cached("DELETE FROM settle_runs WHERE from_seq = ?1").map_err(err)?;
            let mut add_run = tx
                .prepare_cached("INSERT INTO settle_runs (from_seq, to_seq, settle) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            let mut enqueue = tx.prepare_cached("INSERT OR IGNORE INTO pending (seq) VALUES (?1)").map_err(err)?;
            let mut exists = tx.prepare_cached("SELECT 1 FROM event_log WHERE seq = ?1").map_err(err)?;
            for &seq in seqs {
                let explicit = unsettle.execute([seq]).map_err(err)? > 0;
                let run: Option<(i64, i64, i64)> =
                    covering.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional().map_err(err)?;
                if let Some((from, to, settle)) = run {
                    // Split the run around the event.
                    drop_run.execute([from]).map_err(err)?;
                    if from < seq {
                        add_run.execute(params![from, seq - 1, settle]).map_err(err)?;
                    }
                    if seq < to {
                        add_run.execute(params![seq + 1, to, settle]).map_err(err)?;
                    }
                }
                if (explicit || run.is_some()) && exists.exists([seq]).map_err(err)? {
                    enqueue.execute([seq]).map_err(err)?;
                    n += 1;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Puts events back to `queued` (clearing `applied_at` and `error`), e.g. failed
    /// ones after the cause was fixed. Returns how many were found.
    pub fn requeue(&mut self, keys: &[EventKey]) -> Result<usize, QueueError> {
        let mut seqs = Vec::with_capacity(keys.len());
        {
            let mut find = self
                .conn
                .prepare_cached("SELECT seq FROM event_log WHERE source = ?1 AND id = ?2")
                .map_err(|e| self.err(e))?;
            for k in keys {
                if let Some(seq) = find
                    .query_row(params![k.source, k.id], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(|e| self.err(e))?
                {
                    seqs.push(seq);
                }
            }
        }
        let queued_already = {
            let mut q = self.conn.prepare_cached("SELECT 1 FROM pending WHERE seq = ?1").map_err(|e| self.err(e))?;
            let mut n = 0;
            for s in &seqs {
                n += q.exists([s]).map_err(|e| self.err(e))? as usize;
            }
            n
        };
        Ok(self.requeue_seqs(&seqs)? + queued_already)
    }

    /// Queued events per source and when the oldest of them arrived.
    pub fn backlog(&self) -> Result<Backlog, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.source, count(*), min(e.received_at) FROM pending p JOIN event_log e ON e.seq = p.seq GROUP BY e.source",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
            .map_err(|e| self.err(e))?;
        let mut b = Backlog::default();
        for r in rows {
            let (source, n, oldest) = r.map_err(|e| self.err(e))?;
            let oldest: Timestamp = oldest.parse().map_err(|_| QueueError::Invalid {
                path: self.path.display().to_string(),
                message: format!("invalid received_at `{oldest}`"),
            })?;
            b.total += n as u64;
            b.oldest_received_at = Some(b.oldest_received_at.map_or(oldest, |o| o.min(oldest)));
            b.sources.insert(source, SourceBacklog { queued: n as u64, oldest_received_at: oldest });
        }
        Ok(b)
    }

    /// Number of queued events (cheap: reads the partial index).
    pub fn queued_count(&self) -> Result<u64, QueueError> {
        self.conn
            .query_row("SELECT count(*) FROM pending", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Number of events per status (all of them, not only queued).
    pub fn counts(&self) -> Result<BTreeMap<Status, u64>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT 'queued', count(*) FROM pending
                 UNION ALL SELECT status, count(*) FROM settled GROUP BY status
                 UNION ALL SELECT 'applied', count(*) FROM settle_runs r JOIN event_log e ON e.seq BETWEEN r.from_seq AND r.to_seq
                     WHERE NOT EXISTS (SELECT 1 FROM settled s WHERE s.seq = e.seq)",
            )
            .map_err(|e| self.err(e))?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for r in rows {
            let (s, n) = r.map_err(|e| self.err(e))?;
            // Applied events come from two places (own rows and runs): add them up.
            if let Some(s) = Status::parse(&s) {
                *out.entry(s).or_insert(0) += n as u64;
            }
        }
        out.retain(|s, n| *n > 0 || *s == Status::Queued);
        Ok(out)
    }

    /// The manual freeze flag, when set.
    pub fn manual_freeze(&self) -> Result<Option<ManualFreeze>, QueueError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row("SELECT started_by, started_at FROM freeze WHERE id = 1 AND active = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(by, at)| {
            let since = at.parse().map_err(|_| QueueError::Invalid {
                path: self.path.display().to_string(),
                message: format!("invalid freeze started_at `{at}`"),
            })?;
            Ok(ManualFreeze { by, since })
        })
        .transpose()
    }

    /// Sets the manual freeze flag. Returns the flag as it now stands: when it was
    /// already set, the earlier start (who and when) is kept and returned.
    pub fn start_freeze(&mut self, by: &str) -> Result<(ManualFreeze, bool), QueueError> {
        if let Some(existing) = self.manual_freeze()? {
            return Ok((existing, false));
        }
        let at = stamp(Timestamp::now());
        let since: Timestamp = at.parse().expect("stamp() output parses");
        self.conn
            .execute(
                "INSERT INTO freeze (id, active, started_by, started_at, stopped_by, stopped_at)
                 VALUES (1, 1, ?1, ?2, NULL, NULL)
                 ON CONFLICT(id) DO UPDATE SET active = 1, started_by = ?1, started_at = ?2, stopped_by = NULL, stopped_at = NULL",
                params![by, at],
            )
            .map_err(|e| self.err(e))?;
        Ok((ManualFreeze { by: by.to_owned(), since }, true))
    }

    /// Clears the manual freeze flag. Returns the freeze that was stopped, if any.
    pub fn stop_freeze(&mut self, by: &str) -> Result<Option<ManualFreeze>, QueueError> {
        let Some(existing) = self.manual_freeze()? else { return Ok(None) };
        self.conn
            .execute(
                "UPDATE freeze SET active = 0, stopped_by = ?1, stopped_at = ?2 WHERE id = 1",
                params![by, stamp(Timestamp::now())],
            )
            .map_err(|e| self.err(e))?;
        Ok(Some(existing))
    }
}

// ---------------------------------------------------------------- Kafka consumer offsets (schema version 3)
//
// A Kafka source (`events::kafka`) keeps its position in each partition here, in
// the queue file itself, and writes it in the SAME transaction as the events it
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

fn write_kafka_offsets(tx: &rusqlite::Transaction<'_>, c: KafkaCommit<'_>) -> rusqlite::Result<()> {
    let mut put = tx.prepare_cached(
        "INSERT INTO kafka_offsets (source, consumer_group, topic, partition, next_offset, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (source, consumer_group, topic, partition)
         DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
    )?;
    let now = stamp(Timestamp::now());
    for o in c.offsets {
        put.execute(params![c.source, c.group, o.topic, o.partition, o.next_offset, now])?;
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT topic, partition, next_offset FROM kafka_offsets
                 WHERE source = ?1 AND consumer_group = ?2 ORDER BY topic, partition",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![source, group], |r| {
                Ok(KafkaOffset { topic: r.get(0)?, partition: r.get(1)?, next_offset: r.get(2)? })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
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
        let v: i64 = q.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, 3);
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
        let deliveries: i64 = q.conn.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)).unwrap();
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
        let v: i64 = q.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
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
            .conn
            .prepare("SELECT from_seq, to_seq FROM settle_runs ORDER BY from_seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(runs, vec![(1, 4), (6, 8)]);
        let own: i64 = q.conn.query_row("SELECT count(*) FROM settled", [], |r| r.get(0)).unwrap();
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
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        drop(Queue::open(&path).unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99;").unwrap();
        let e = Queue::open(&path).unwrap_err().to_string();
        assert!(e.contains("newer stockshift"), "{e}");
    }
}
