//! Compare-and-set emulated by read-compare-write, for platforms without a
//! conditional write (Magento MSI, BigCommerce, WooCommerce).
//!
//! Per batch: read the current value of every key, decide per key (already the
//! new value: *already applied*; not the expected value: *conflict*; else write),
//! send the remaining writes, then read them back. A read-back that shows the new
//! value is *applied*; one that shows a third value means someone else wrote the
//! key in between: *conflict* with what was found. One that still shows the value
//! from before the write is read again (`Settle`: asynchronous endpoints) and
//! finally reported as a retriable failure, so the apply loop runs the whole
//! cycle again.
//!
//! Writes to one key are serialised: a batch naming a key twice is split into
//! rounds, and no round starts before the previous one was read back. The race
//! window between the read and the write remains; it is documented in
//! `docs/providers.md`.

use std::collections::HashMap;
use std::time::Duration;

use crate::provider::{ProviderError, Write, WriteOutcome};

/// How long to wait for a write to become visible.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// Read-backs at most (at least 1).
    pub attempts: u32,
    /// Pause between read-backs.
    pub delay: Duration,
}

impl Default for Settle {
    fn default() -> Self {
        Settle { attempts: 1, delay: Duration::ZERO }
    }
}

/// Each key's current quantity (`None`: absent) and what else the read knows about it.
pub type Current<E> = Vec<(Option<i64>, E)>;

/// A platform's reads and unconditional writes.
pub trait ReadWrite {
    /// What a read knows about a key besides its quantity (remote ids).
    type Extra: Clone + Default;
    /// Current quantity of each write's key (`None`: absent), in order.
    fn current(&mut self, keys: &[&Write]) -> Result<Current<Self::Extra>, ProviderError>;
    /// Writes every item unconditionally, as one request. `Ok(Err(message))`:
    /// the platform rejected the request (a 4xx); nothing is known to have landed.
    fn put(&mut self, items: &[(&Write, &Self::Extra)]) -> Result<Result<(), String>, ProviderError>;
    /// Whether the platform takes one key per write request (`put` then gets one item).
    fn one_per_request(&self) -> bool {
        false
    }
}

/// What to do with one write once its key was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Done(WriteOutcome),
    Write,
}

/// The compare step: already there, conflicting, or to be written.
pub fn decide(current: Option<i64>, w: &Write) -> Decision {
    if current == Some(w.new) {
        Decision::Done(WriteOutcome::AlreadyApplied)
    } else if current != w.expected {
        Decision::Done(WriteOutcome::Conflict { found: current })
    } else {
        Decision::Write
    }
}

/// Splits a batch into rounds in which each key appears at most once, keeping
/// the order of writes to the same key.
pub fn rounds(writes: &[Write]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let n = seen.entry((w.sku.as_str(), w.location.as_str())).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(i);
        *n += 1;
    }
    rounds
}

/// Runs read-compare-write-read-back over a batch; one outcome per write.
pub fn read_compare_write<P: ReadWrite>(
    p: &mut P,
    writes: &[Write],
    settle: Settle,
) -> Result<Vec<WriteOutcome>, ProviderError> {
    let mut out: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
    for round in rounds(writes) {
        one_round(p, writes, &round, settle, &mut out)?;
    }
    Ok(out.into_iter().map(|o| o.expect("every write gets an outcome")).collect())
}

fn one_round<P: ReadWrite>(
    p: &mut P,
    writes: &[Write],
    round: &[usize],
    settle: Settle,
    out: &mut [Option<WriteOutcome>],
) -> Result<(), ProviderError> {
    let keys: Vec<&Write> = round.iter().map(|&i| &writes[i]).collect();
    let current = p.current(&keys)?;
    let mut pending: Vec<(usize, Option<i64>, P::Extra)> = Vec::new();
    for (&i, (cur, extra)) in round.iter().zip(current) {
        match decide(cur, &writes[i]) {
            Decision::Done(o) => out[i] = Some(o),
            Decision::Write => pending.push((i, cur, extra)),
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    let items: Vec<(&Write, &P::Extra)> = pending.iter().map(|(i, _, e)| (&writes[*i], e)).collect();
    let mut landed: Vec<(usize, Option<i64>)> = Vec::new();
    let whole = if p.one_per_request() && items.len() > 1 { Err(String::new()) } else { p.put(&items)? };
    match whole {
        Ok(()) => landed.extend(pending.iter().map(|(i, before, _)| (*i, *before))),
        Err(message) if pending.len() == 1 => {
            out[pending[0].0] = Some(WriteOutcome::Failed { retriable: false, message });
        }
        Err(_) => {
            // One key per request, or the platform refused the batch as a whole:
            // send each write alone (to find the ones it refuses).
            for (i, before, extra) in &pending {
                match p.put(&[(&writes[*i], extra)])? {
                    Ok(()) => landed.push((*i, *before)),
                    Err(message) => out[*i] = Some(WriteOutcome::Failed { retriable: false, message }),
                }
            }
        }
    }
    read_back(p, writes, landed, settle, out)
}

fn read_back<P: ReadWrite>(
    p: &mut P,
    writes: &[Write],
    mut waiting: Vec<(usize, Option<i64>)>,
    settle: Settle,
    out: &mut [Option<WriteOutcome>],
) -> Result<(), ProviderError> {
    let attempts = settle.attempts.max(1);
    for attempt in 1..=attempts {
        if waiting.is_empty() {
            return Ok(());
        }
        if attempt > 1 {
            std::thread::sleep(settle.delay);
        }
        let keys: Vec<&Write> = waiting.iter().map(|(i, _)| &writes[*i]).collect();
        let now = p.current(&keys)?;
        let mut still = Vec::new();
        for ((i, before), (found, _)) in waiting.into_iter().zip(now) {
            let w = &writes[i];
            if found == Some(w.new) {
                out[i] = Some(WriteOutcome::Applied);
            } else if found == before {
                still.push((i, before));
            } else {
                // Someone else wrote the key between our write and the read-back.
                out[i] = Some(WriteOutcome::Conflict { found });
            }
        }
        waiting = still;
    }
    for (i, _) in waiting {
        out[i] = Some(WriteOutcome::Failed {
            retriable: true,
            message: format!(
                "the platform accepted the write but still shows the old value after {attempts} read-back(s)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory platform with hooks.
    #[derive(Default)]
    struct Mem {
        data: BTreeMap<(String, String), i64>,
        /// Applied right after the next put (a concurrent writer).
        race: Option<((String, String), i64)>,
        /// Puts are accepted but ignored (an asynchronous endpoint lagging).
        ignore_puts: bool,
        refuse_sku: Option<String>,
        puts: Vec<usize>,
    }

    fn key(w: &Write) -> (String, String) {
        (w.sku.clone(), w.location.clone())
    }

    impl ReadWrite for Mem {
        type Extra = ();
        fn current(&mut self, keys: &[&Write]) -> Result<Current<()>, ProviderError> {
            Ok(keys.iter().map(|w| (self.data.get(&key(w)).copied(), ())).collect())
        }
        fn put(&mut self, items: &[(&Write, &())]) -> Result<Result<(), String>, ProviderError> {
            self.puts.push(items.len());
            if let Some(bad) = &self.refuse_sku
                && items.iter().any(|(w, _)| &w.sku == bad)
            {
                return Ok(Err(format!("unknown sku {bad}")));
            }
            if !self.ignore_puts {
                for (w, _) in items {
                    self.data.insert(key(w), w.new);
                }
            }
            if let Some((k, v)) = self.race.take() {
                self.data.insert(k, v);
            }
            Ok(Ok(()))
        }
    }

    fn w(sku: &str, expected: Option<i64>, new: i64) -> Write {
        Write { sku: sku.into(), location: "L".into(), expected, new }
    }

    fn mem(rows: &[(&str, i64)]) -> Mem {
        Mem { data: rows.iter().map(|(s, q)| ((s.to_string(), "L".to_string()), *q)).collect(), ..Mem::default() }
    }

    #[test]
    fn decides_per_key() {
        assert_eq!(decide(Some(5), &w("A", Some(1), 5)), Decision::Done(WriteOutcome::AlreadyApplied));
        assert_eq!(decide(Some(2), &w("A", Some(1), 5)), Decision::Done(WriteOutcome::Conflict { found: Some(2) }));
        assert_eq!(decide(None, &w("A", Some(1), 5)), Decision::Done(WriteOutcome::Conflict { found: None }));
        assert_eq!(decide(Some(1), &w("A", None, 5)), Decision::Done(WriteOutcome::Conflict { found: Some(1) }));
        assert_eq!(decide(None, &w("A", None, 5)), Decision::Write);
        assert_eq!(decide(Some(1), &w("A", Some(1), 5)), Decision::Write);
    }

    #[test]
    fn writes_compares_and_reads_back() {
        let mut m = mem(&[("A", 1), ("B", 2), ("C", 3)]);
        let out = read_compare_write(
            &mut m,
            &[w("A", Some(1), 10), w("B", Some(9), 20), w("C", Some(1), 3), w("D", None, 4)],
            Settle::default(),
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                WriteOutcome::Applied,
                WriteOutcome::Conflict { found: Some(2) },
                WriteOutcome::AlreadyApplied,
                WriteOutcome::Applied
            ]
        );
        assert_eq!(m.puts, vec![2], "one request for the writes that passed the compare");
    }

    #[test]
    fn a_race_after_the_write_is_a_conflict() {
        let mut m = mem(&[("A", 1), ("B", 2)]);
        m.race = Some((("A".into(), "L".into()), 7));
        let out = read_compare_write(&mut m, &[w("A", Some(1), 10), w("B", Some(2), 20)], Settle::default()).unwrap();
        assert_eq!(out, vec![WriteOutcome::Conflict { found: Some(7) }, WriteOutcome::Applied]);
    }

    #[test]
    fn same_key_twice_is_serialised() {
        let mut m = mem(&[("A", 1)]);
        let out = read_compare_write(&mut m, &[w("A", Some(1), 2), w("A", Some(2), 3)], Settle::default()).unwrap();
        assert_eq!(out, vec![WriteOutcome::Applied, WriteOutcome::Applied]);
        assert_eq!(m.puts, vec![1, 1]);
        assert_eq!(rounds(&[w("A", None, 1), w("B", None, 1), w("A", None, 2)]), vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn a_refused_batch_is_split_to_find_the_bad_write() {
        let mut m = mem(&[("A", 1), ("B", 1)]);
        m.refuse_sku = Some("B".into());
        let out = read_compare_write(&mut m, &[w("A", Some(1), 2), w("B", Some(1), 2)], Settle::default()).unwrap();
        assert_eq!(out[0], WriteOutcome::Applied);
        assert!(
            matches!(&out[1], WriteOutcome::Failed { retriable: false, message } if message.contains("unknown sku B"))
        );
        assert_eq!(m.data[&("B".to_string(), "L".to_string())], 1);
    }

    #[test]
    fn a_lagging_write_is_read_again_then_reported_retriable() {
        let mut m = mem(&[("A", 1)]);
        m.ignore_puts = true; // the value never changes
        let settle = Settle { attempts: 3, delay: Duration::from_millis(1) };
        let out = read_compare_write(&mut m, &[w("A", Some(1), 2)], settle).unwrap();
        assert!(matches!(&out[0], WriteOutcome::Failed { retriable: true, .. }), "{out:?}");
    }
}
