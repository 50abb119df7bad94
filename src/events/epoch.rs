//! The events a replay folds, read compactly.
//!
//! A replay of a million events reads every event of the current snapshot epoch
//! (see [`Queue::epoch`]). Most of that cost used to be allocation: five strings
//! and two parsed timestamps per event. Replay needs none of that per event: it
//! groups by (sku, location), tells sources apart, and compares ids only between
//! absolute sets. So keys and sources are interned once, and only a set keeps its id.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use jiff::Timestamp;

use super::event::Change;
use super::queue::{Queue, QueueError};

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
    const COLS: &str = "e.seq, e.source, e.sku, e.location, e.delta, e.qty, e.sequence, e.id";
    let mut it = Interner { keys: Vec::new(), index: HashMap::new(), buf: String::new(), sources: Vec::new() };
    let pending = format!("SELECT {COLS} FROM pending p JOIN event_log e ON e.seq = p.seq ORDER BY p.seq");
    let settled = format!(
        "SELECT {COLS} FROM settles st JOIN settled s ON s.settle = st.settle JOIN event_log e ON e.seq = s.seq
         WHERE st.at >= ?1 AND s.status <> 'failed'"
    );
    let runs = format!(
        "SELECT {COLS} FROM settles st JOIN settle_runs r ON r.settle = st.settle
           JOIN event_log e ON e.seq BETWEEN r.from_seq AND r.to_seq
         WHERE st.at >= ?1"
    );
    let since = since.map(super::queue::stamp).unwrap_or_default();
    let mut read_into = |sql: &str,
                         args: &[&dyn rusqlite::ToSql],
                         queued: bool,
                         skip: &HashSet<i64>,
                         events: &mut Vec<EpochEvent>|
     -> Result<(), QueueError> {
        let conn = queue.conn();
        let err = |e| queue.sqlite_error(e);
        let mut stmt = conn.prepare_cached(sql).map_err(err)?;
        let mut rows = stmt.query(args).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let seq: i64 = r.get(0).map_err(err)?;
            if skip.contains(&seq) {
                continue;
            }
            let bad = |what: &str| queue.invalid(format!("event seq {seq} has an invalid {what}"));
            let text = |i: usize, what: &str| -> Result<&str, QueueError> {
                r.get_ref(i).ok().and_then(|v| v.as_str().ok()).ok_or_else(|| bad(what))
            };
            let source = it.source(text(1, "source")?);
            let key = it.key(text(2, "sku")?, text(3, "location")?);
            let delta: Option<i64> = r.get(4).map_err(|_| bad("delta"))?;
            let qty: Option<i64> = r.get(5).map_err(|_| bad("qty"))?;
            let change = match (delta, qty) {
                (Some(d), None) => Change::Delta(d),
                (None, Some(q)) => Change::Qty(q),
                _ => return Err(bad("delta/qty pair")),
            };
            let set_id = match change {
                Change::Qty(_) => Some(text(7, "id")?.into()),
                Change::Delta(_) => None,
            };
            let sequence: i64 = r.get(6).map_err(|_| bad("sequence"))?;
            events.push(EpochEvent { seq, key, source, change, sequence, set_id, queued });
        }
        Ok(())
    };
    let mut events = Vec::new();
    let none = HashSet::new();
    read_into(&pending, &[], true, &none, &mut events)?;
    let before = events.len();
    // Events with a row of their own (superseded, failed, marked one by one): that
    // row, not their run, says what they are.
    let own: HashSet<i64> = {
        let conn = queue.conn();
        let err = |e| queue.sqlite_error(e);
        let mut stmt = conn
            .prepare_cached("SELECT s.seq FROM settles st JOIN settled s ON s.settle = st.settle WHERE st.at >= ?1")
            .map_err(err)?;
        let seqs = stmt.query_map([&since], |r| r.get::<_, i64>(0)).map_err(err)?;
        seqs.collect::<Result<_, _>>().map_err(err)?
    };
    read_into(&settled, &[&since], false, &none, &mut events)?;
    read_into(&runs, &[&since], false, &own, &mut events)?;
    if events.len() > before {
        events.sort_unstable_by_key(|e| e.seq);
    }
    Ok(Epoch { keys: it.keys, sources: it.sources, events })
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
