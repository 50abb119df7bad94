//! The events a replay folds, read compactly.
//!
//! A replay of a million events reads every event of the current snapshot epoch
//! (see [`Queue::epoch`]). Most of that cost used to be allocation: five strings
//! and two parsed timestamps per event. Replay needs none of that per event: it
//! groups by (sku, location), tells sources apart, and compares ids only between
//! absolute sets. So keys and sources are interned once, and only a set keeps its id.

use foldhash::{HashMap, HashMapExt, HashSet};
use jiff::Timestamp;

use super::event::Change;
use super::queue::{IntList, Queue, QueueError, list_sql};
use crate::db::Value;

/// One event as replay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochEvent {
    /// Arrival order in the queue.
    pub seq: i64,
    /// Index into [`Epoch::keys`].
    pub key: u32,
    /// Index into [`Epoch::sources`].
    pub source: u16,
    pub change: Change,
    pub sequence: i64,
    /// The event id, kept for absolute sets only (it breaks ties between sets with
    /// the same sequence); deltas never need it.
    pub set_id: Option<Box<str>>,
    /// Still queued (not yet applied or superseded).
    pub queued: bool,
}

/// The epoch's events with their interned keys and sources.
#[derive(Debug, Default)]
pub struct Epoch {
    /// Distinct (sku, location) pairs, in order of first appearance.
    pub keys: Vec<(String, String)>,
    /// Distinct source names.
    pub sources: Vec<String>,
    /// In `seq` order.
    pub events: Vec<EpochEvent>,
}

struct Interner {
    keys: Vec<(String, String)>,
    index: HashMap<Box<str>, u32>,
    buf: String,
    sources: Vec<String>,
}

impl Interner {
    fn key(&mut self, sku: &str, location: &str) -> u32 {
        // "sku \0 location" as one lookup string: no allocation when the key is known.
        self.buf.clear();
        self.buf.push_str(sku);
        self.buf.push('\0');
        self.buf.push_str(location);
        if let Some(&k) = self.index.get(self.buf.as_str()) {
            return k;
        }
        let k = self.keys.len() as u32;
        self.keys.push((sku.to_owned(), location.to_owned()));
        self.index.insert(self.buf.as_str().into(), k);
        k
    }

    fn source(&mut self, name: &str) -> u16 {
        match self.sources.iter().position(|s| s == name) {
            Some(i) => i as u16,
            None => {
                self.sources.push(name.to_owned());
                (self.sources.len() - 1) as u16
            }
        }
    }
}

/// Reads the epoch: every queued event, and every event applied or superseded at
/// or after `since`.
pub fn read(queue: &Queue, since: Option<Timestamp>) -> Result<Epoch, QueueError> {
    read_parts(queue, since, None)
}

/// [`read`] for the events of one partition (`None`: of all).
pub fn read_part(queue: &Queue, since: Option<Timestamp>, part: Option<u32>) -> Result<Epoch, QueueError> {
    read_parts(queue, since, part.as_ref().map(std::slice::from_ref))
}

/// [`read`] for the events of these partitions (`None`: of all). An event in a
/// settle run counts as settled only when it is not in `pending` (with several
/// receivers an event may commit inside a run after the run was written). The
/// reads share one snapshot (a read transaction; REPEATABLE READ on PostgreSQL).
pub fn read_parts(queue: &Queue, since: Option<Timestamp>, parts: Option<&[u32]>) -> Result<Epoch, QueueError> {
    let db = queue.db();
    let begin = if db.is_postgres() { "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY" } else { "BEGIN" };
    db.batch(begin).map_err(|e| queue.err(e))?;
    let read = read_snapshot(queue, since, parts);
    let end = db.batch(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let epoch = read?;
    end.map_err(|e| queue.err(e))?;
    Ok(epoch)
}

fn read_snapshot(queue: &Queue, since: Option<Timestamp>, parts: Option<&[u32]>) -> Result<Epoch, QueueError> {
    let db = queue.db();
    let since = since.map(super::queue::stamp).unwrap_or_default();
    let list = parts.map(|p| IntList::new(db, p.iter().map(|&p| i64::from(p)).collect()));
    // ?1: since; ?2: the partitions, when given.
    let only = |col: &str| match &list {
        Some(_) => format!(" AND {col} IN {}", list_sql(db, 2)),
        None => String::new(),
    };
    let pending = format!(
        "SELECT {COLS} FROM pending p JOIN event_log e ON e.seq = p.seq WHERE 1 = 1{} ORDER BY p.seq",
        only("p.part")
    );
    let settled = format!(
        "SELECT {COLS} FROM settles st JOIN settled s ON s.settle = st.settle JOIN event_log e ON e.seq = s.seq
         WHERE st.at >= ?1 AND s.status <> 'failed'{}",
        only("e.part")
    );
    // CROSS JOIN: SQLite must walk the runs and read each one's seq range, not
    // search the runs for every event. Pending events inside a run are left out
    // below (they were read first, in the same snapshot).
    let runs = format!(
        "SELECT {COLS} FROM settles st JOIN settle_runs r ON r.settle = st.settle CROSS JOIN event_log e
         WHERE {}e.part = r.part AND e.seq BETWEEN r.from_seq AND r.to_seq AND st.at >= ?1{}",
        super::queue::run_join_hint(db),
        only("r.part")
    );
    let own = "SELECT s.seq FROM settles st JOIN settled s ON s.settle = st.settle WHERE st.at >= ?1";
    let mut it = Interner { keys: Vec::new(), index: HashMap::new(), buf: String::new(), sources: Vec::new() };
    let mut events = Vec::new();
    let since_v = Value::Text(&since);
    let args: Vec<Value<'_>> = match &list {
        Some(l) => vec![since_v, l.value(db)],
        None => vec![since_v],
    };
    // The pending query has no `since`: bind the partitions as ?1 there.
    let pending = pending.replace("?2", "?1");
    let pending_args: &[Value<'_>] = &args[1..];
    let mut read_into = |sql: &str,
                         args: &[Value<'_>],
                         queued: bool,
                         skip: &dyn Fn(i64) -> bool,
                         events: &mut Vec<EpochEvent>| {
        match db.as_sqlite() {
            Some(conn) => read_sqlite(queue, conn, sql, args, queued, skip, &mut it, events),
            None => read_generic(queue, sql, args, queued, skip, &mut it, events),
        }
    };
    read_into(&pending, pending_args, true, &|_| false, &mut events)?;
    let before = events.len();
    // Events with a row of their own (superseded, failed, marked one by one): that
    // row, not their run, says what they are.
    let own: HashSet<i64> = db.query(own, &args[..1], |r| r.i64(0)).map_err(|e| queue.err(e))?.into_iter().collect();
    let queued: Vec<i64> = events.iter().map(|e| e.seq).collect(); // in seq order
    read_into(&settled, &args, false, &|_| false, &mut events)?;
    read_into(&runs, &args, false, &|seq| own.contains(&seq) || queued.binary_search(&seq).is_ok(), &mut events)?;
    if events.len() > before {
        events.sort_unstable_by_key(|e| e.seq);
    }
    Ok(Epoch { keys: it.keys, sources: it.sources, events })
}

const COLS: &str = "e.seq, e.source, e.sku, e.location, e.delta, e.qty, e.sequence, e.id";

/// One row of the epoch queries, interned.
#[allow(clippy::too_many_arguments)]
fn push(
    queue: &Queue,
    it: &mut Interner,
    events: &mut Vec<EpochEvent>,
    queued: bool,
    seq: i64,
    source: &str,
    sku: &str,
    location: &str,
    delta: Option<i64>,
    qty: Option<i64>,
    sequence: i64,
    id: impl FnOnce() -> Result<Box<str>, QueueError>,
) -> Result<(), QueueError> {
    let change = match (delta, qty) {
        (Some(d), None) => Change::Delta(d),
        (None, Some(q)) => Change::Qty(q),
        _ => return Err(queue.invalid(format!("event seq {seq} has an invalid delta/qty pair"))),
    };
    let set_id = match change {
        Change::Qty(_) => Some(id()?),
        Change::Delta(_) => None,
    };
    let source = it.source(source);
    let key = it.key(sku, location);
    events.push(EpochEvent { seq, key, source, change, sequence, set_id, queued });
    Ok(())
}

/// SQLite: reads the strings in place (no allocation per event).
#[allow(clippy::too_many_arguments)]
fn read_sqlite(
    queue: &Queue,
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Value<'_>],
    queued: bool,
    skip: &dyn Fn(i64) -> bool,
    it: &mut Interner,
    events: &mut Vec<EpochEvent>,
) -> Result<(), QueueError> {
    let err = |e| queue.err(super::queue::sqlite_error(e));
    let mut stmt = conn.prepare_cached(sql).map_err(err)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter())).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let seq: i64 = r.get(0).map_err(err)?;
        if skip(seq) {
            continue;
        }
        let bad = |what: &str| queue.invalid(format!("event seq {seq} has an invalid {what}"));
        let text = |i: usize, what: &str| -> Result<&str, QueueError> {
            r.get_ref(i).ok().and_then(|v| v.as_str().ok()).ok_or_else(|| bad(what))
        };
        let delta: Option<i64> = r.get(4).map_err(|_| bad("delta"))?;
        let qty: Option<i64> = r.get(5).map_err(|_| bad("qty"))?;
        let sequence: i64 = r.get(6).map_err(|_| bad("sequence"))?;
        push(
            queue,
            it,
            events,
            queued,
            seq,
            text(1, "source")?,
            text(2, "sku")?,
            text(3, "location")?,
            delta,
            qty,
            sequence,
            || Ok(text(7, "id")?.into()),
        )?;
    }
    Ok(())
}

/// Any engine, through [`crate::db::Db`].
#[allow(clippy::too_many_arguments)]
fn read_generic(
    queue: &Queue,
    sql: &str,
    args: &[Value<'_>],
    queued: bool,
    skip: &dyn Fn(i64) -> bool,
    it: &mut Interner,
    events: &mut Vec<EpochEvent>,
) -> Result<(), QueueError> {
    type RawRow = (i64, String, String, String, Option<i64>, Option<i64>, i64, String);
    let rows: Vec<RawRow> = queue
        .db()
        .query(sql, args, |r| {
            Ok((r.i64(0)?, r.text(1)?, r.text(2)?, r.text(3)?, r.opt_i64(4)?, r.opt_i64(5)?, r.i64(6)?, r.text(7)?))
        })
        .map_err(|e| queue.err(e))?;
    for (seq, source, sku, location, delta, qty, sequence, id) in rows {
        if skip(seq) {
            continue;
        }
        push(queue, it, events, queued, seq, &source, &sku, &location, delta, qty, sequence, || Ok(id.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::Event;
    use crate::events::queue::Status;

    fn ev(id: &str, sku: &str, change: Change) -> Event {
        Event {
            id: id.into(),
            source: "erp".into(),
            sku: sku.into(),
            location: "W".into(),
            change,
            sequence: 1,
            occurred_at: "2026-11-27T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn keys_and_sources_are_interned_and_settled_events_before_since_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("events.db")).unwrap();
        q.append(&[ev("a", "S1", Change::Delta(-1)), ev("b", "S2", Change::Qty(5)), ev("c", "S1", Change::Delta(2))])
            .unwrap();
        q.mark(&[1], Status::Applied, None).unwrap();
        q.mark(&[3], Status::Failed, Some("x")).unwrap();
        let e = read(&q, None).unwrap();
        assert_eq!(e.keys, vec![("S2".to_string(), "W".to_string()), ("S1".to_string(), "W".to_string())]);
        assert_eq!(e.sources, vec!["erp".to_string()]);
        let seqs: Vec<(i64, u32, bool)> = e.events.iter().map(|x| (x.seq, x.key, x.queued)).collect();
        assert_eq!(seqs, vec![(1, 1, false), (2, 0, true)], "failed events are not counted");
        assert_eq!(e.events[1].set_id.as_deref(), Some("b"));
        assert_eq!(e.events[0].set_id, None);
        // Settled before `since`: already contained in a newer snapshot.
        let later = Timestamp::now() + jiff::SignedDuration::from_secs(60);
        assert_eq!(read(&q, Some(later)).unwrap().events.len(), 1);
    }
}
