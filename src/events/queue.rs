//! The durable event queue: a SQLite file, `<state dir>/events.db`.
//!
//! ```text
//! deliveries(delivery PK, source, received_at, raw BLOB)           one row per accepted request
//! events(seq PK AUTOINCREMENT, source, id, sku, location, delta, qty, sequence,
//!        occurred_at, received_at, delivery → deliveries, status, applied_at, error,
//!        UNIQUE(source, id))
//! freeze(id = 1, active, started_by, started_at, stopped_by, stopped_at)
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
//!   [`Queue::mark`]); [`Queue::requeue`] puts events back to `queued`.
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
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
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
fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
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
            tx.execute_batch(SCHEMA).map_err(err)?;
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

    /// Stores the events of several deliveries in ONE transaction (one fsync), and
    /// returns, per delivery and per event, whether it was new or a duplicate.
    /// Either everything is committed or nothing is (the error is returned).
    pub fn append_deliveries(&mut self, batch: &[Incoming<'_>]) -> Result<Vec<Vec<Insert>>, QueueError> {
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut find = tx.prepare_cached("SELECT seq FROM events WHERE source = ?1 AND id = ?2").map_err(err)?;
            let mut add_delivery = tx
                .prepare_cached("INSERT INTO deliveries (source, received_at, raw) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            let mut add_event = tx
                .prepare_cached(
                    "INSERT INTO events (source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery)
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
                    results.push(Insert::Accepted { seq: tx.last_insert_rowid() });
                }
                out.push(results);
            }
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
        let sql = format!("SELECT {} FROM events WHERE status = 'queued' ORDER BY seq LIMIT ?1", Self::COLUMNS);
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
        let now = stamp(Timestamp::now());
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE events SET status = ?1, applied_at = ?2, error = ?3 WHERE seq = ?4")
                .map_err(err)?;
            // In seq order, so the rows are visited page by page rather than at random.
            let mut sorted = seqs.to_vec();
            sorted.sort_unstable();
            for seq in sorted {
                n += stmt.execute(params![status.as_str(), now, error, seq]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Sets the status of queued events by runs of `seq`: every *queued* event with
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
        let now = stamp(Timestamp::now());
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE events SET status = ?1, applied_at = ?2, error = NULL WHERE seq BETWEEN ?3 AND ?4 AND status = 'queued'",
                )
                .map_err(err)?;
            for (from, to, status) in runs {
                n += stmt.execute(params![status.as_str(), now, from, to]).map_err(err)?;
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
            let mut stmt = tx
                .prepare_cached("UPDATE events SET status = 'queued', applied_at = NULL, error = NULL WHERE seq = ?1")
                .map_err(err)?;
            for seq in seqs {
                n += stmt.execute([seq]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Puts events back to `queued` (clearing `applied_at` and `error`), e.g. failed
    /// ones after the cause was fixed. Returns how many were found.
    pub fn requeue(&mut self, keys: &[EventKey]) -> Result<usize, QueueError> {
        let path = self.path.display().to_string();
        let err = |e| QueueError::Sqlite { path: path.clone(), source: e };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE events SET status = 'queued', applied_at = NULL, error = NULL WHERE source = ?1 AND id = ?2",
                )
                .map_err(err)?;
            for k in keys {
                n += stmt.execute(params![k.source, k.id]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Queued events per source and when the oldest of them arrived.
    pub fn backlog(&self) -> Result<Backlog, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source, count(*), min(received_at) FROM events WHERE status = 'queued' GROUP BY source",
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
            .query_row("SELECT count(*) FROM events WHERE status = 'queued'", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Number of events per status (all of them, not only queued).
    pub fn counts(&self) -> Result<BTreeMap<Status, u64>, QueueError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT status, count(*) FROM events GROUP BY status").map_err(|e| self.err(e))?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for r in rows {
            let (s, n) = r.map_err(|e| self.err(e))?;
            if let Some(s) = Status::parse(&s) {
                out.insert(s, n as u64);
            }
        }
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
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        drop(Queue::open(&path).unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99;").unwrap();
        let e = Queue::open(&path).unwrap_err().to_string();
        assert!(e.contains("newer stockshift"), "{e}");
    }
}
