//! Faults: what `--faults` asks for, and the target wrapper that injects the
//! write-side ones (throttling, failing writes, a crash mid-batch) into the real
//! apply and replay code paths.
//!
//! Delivery-side faults (duplicates, reordering, late deliveries, stale absolute
//! sets) are made by the generator when it schedules deliveries; see
//! [`super::generator`].

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;

use super::Rng;
use crate::provider::{Capabilities, Provider, ProviderError, ReadInfo, RowSink, Write, WriteOutcome};

/// The fault rates of one simulation (`--faults dup=0.1,reorder=0.1,...`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultSpec {
    /// Share of events delivered a second time (same id).
    pub dup: f64,
    /// Share of events delivered 1 to 30 minutes late, after later events of their key.
    pub reorder: f64,
    /// Share of events delivered 1 to 12 hours late (at the latest, at the end of the window).
    pub late: f64,
    /// Chance per event that the sender also emits a stale absolute set of the key,
    /// computed just before the event and delivered 10 minutes to 3 hours after it.
    pub stale_set: f64,
    /// Chance per write request that the target answers 429 (the whole request is refused).
    pub http429: f64,
    /// Chance per write that it fails with a retriable 5xx (half of them land anyway: a lost reply).
    pub http5xx: f64,
    /// Crash the apply mid-way (then resume it).
    pub crash_apply: bool,
    /// Crash the first replay mid-batch (then resume it).
    pub crash_replay: bool,
}

const KEYS: &str = "dup, reorder, late, stale_set, http429, http5xx, crash";

impl FaultSpec {
    /// Parses `dup=0.1,reorder=0.1,crash=apply` (also `none` or an empty string).
    pub fn parse(s: &str) -> Result<FaultSpec, String> {
        let mut f = FaultSpec::default();
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(f);
        }
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("`{part}` is not KEY=VALUE; known faults: {KEYS}"));
            };
            let (key, value) = (key.trim(), value.trim());
            if key == "crash" {
                for what in value.split(['|', '+']).map(str::trim) {
                    match what {
                        "apply" => f.crash_apply = true,
                        "replay" => f.crash_replay = true,
                        "none" => {}
                        other => {
                            return Err(format!(
                                "crash=`{other}`: say crash=apply or crash=replay (or both: apply+replay)"
                            ));
                        }
                    }
                }
                continue;
            }
            let rate: f64 = value
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("{key}=`{value}`: a fault rate is a number from 0 to 1"))?;
            match key {
                "dup" => f.dup = rate,
                "reorder" => f.reorder = rate,
                "late" => f.late = rate,
                "stale_set" => f.stale_set = rate,
                "http429" => f.http429 = rate,
                "http5xx" => f.http5xx = rate,
                other => return Err(format!("unknown fault `{other}`; known faults: {KEYS}")),
            }
        }
        Ok(f)
    }

    /// The canonical text form (`none` when no fault is set).
    pub fn to_text(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("dup", self.dup),
            ("reorder", self.reorder),
            ("late", self.late),
            ("stale_set", self.stale_set),
            ("http429", self.http429),
            ("http5xx", self.http5xx),
        ] {
            if v > 0.0 {
                parts.push(format!("{k}={v}"));
            }
        }
        match (self.crash_apply, self.crash_replay) {
            (true, true) => parts.push("crash=apply+replay".into()),
            (true, false) => parts.push("crash=apply".into()),
            (false, true) => parts.push("crash=replay".into()),
            _ => {}
        }
        if parts.is_empty() { "none".into() } else { parts.join(",") }
    }
}

/// Every fault injected, counted (the report's `faults`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Extra deliveries of an already delivered event.
    pub dup: u64,
    /// Events delivered after later events of their key.
    pub reorder: u64,
    /// Events delivered hours late.
    pub late: u64,
    /// Stale absolute sets injected.
    pub stale_set: u64,
    /// Write requests refused with 429.
    pub http429: u64,
    /// Writes failed with a retriable 5xx.
    pub http5xx: u64,
    /// Of those, writes that landed although the reply said they failed.
    pub http5xx_landed: u64,
    /// Crashes (apply or replay stopped mid-batch).
    pub crash: u64,
    /// Steps run again after a crash.
    pub resumed: u64,
}

/// Which part of the run is writing (the crash fault fires in one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Setup,
    Apply,
    CutoverReplay,
    Sync,
}

/// What the write-side faults share between the target instances the run opens.
#[derive(Debug)]
pub struct WriteFaults {
    pub phase: Phase,
    spec: FaultSpec,
    rng: Rng,
    /// The apply crashes once this many of its writes were sent (then lands part of the batch).
    pub crash_apply_after: u64,
    apply_writes: u64,
    crashed_apply: bool,
    crashed_replay: bool,
    pub counts: FaultCounts,
    /// What happened, for the timeline: (phase, message).
    pub log: Vec<String>,
}

impl WriteFaults {
    pub fn new(spec: &FaultSpec, seed: u64) -> Self {
        WriteFaults {
            phase: Phase::Setup,
            spec: spec.clone(),
            rng: Rng::new(seed),
            crash_apply_after: 0,
            apply_writes: 0,
            crashed_apply: false,
            crashed_replay: false,
            counts: FaultCounts::default(),
            log: Vec::new(),
        }
    }

    /// `Some(n)`: crash now, after landing the first `n` writes of this batch.
    fn crash_now(&mut self, batch: usize) -> Option<usize> {
        let n = batch as u64;
        match self.phase {
            Phase::Apply if self.spec.crash_apply && !self.crashed_apply => {
                let seen = self.apply_writes;
                self.apply_writes += n;
                if seen + n > self.crash_apply_after {
                    self.crashed_apply = true;
                    let land = self.crash_apply_after.saturating_sub(seen).min(n.saturating_sub(1));
                    return Some(land as usize);
                }
                None
            }
            Phase::CutoverReplay | Phase::Sync if self.spec.crash_replay && !self.crashed_replay => {
                self.crashed_replay = true;
                Some(batch / 2)
            }
            _ => None,
        }
    }
}

/// A target that injects the write-side faults in front of the real provider.
pub struct FaultyTarget {
    inner: Box<dyn Provider>,
    faults: Rc<RefCell<WriteFaults>>,
}

impl FaultyTarget {
    pub fn new(inner: Box<dyn Provider>, faults: Rc<RefCell<WriteFaults>>) -> Self {
        FaultyTarget { inner, faults }
    }
}

impl Provider for FaultyTarget {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        self.inner.read(sink)
    }

    fn read_keys(&mut self, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
        self.inner.read_keys(keys)
    }

    fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        let mut f = self.faults.borrow_mut();
        if let Some(land) = f.crash_now(writes.len()) {
            f.counts.crash += 1;
            let phase = f.phase;
            f.log.push(format!(
                "crash during {}: {land} of {} writes of the batch landed, then the process died",
                match phase {
                    Phase::Apply => "apply",
                    _ => "replay",
                },
                writes.len()
            ));
            drop(f);
            if land > 0 {
                self.inner.write_batch(&writes[..land])?;
            }
            return Err(ProviderError::Invalid {
                what: "simulated crash".into(),
                message: "the process died in the middle of a batch (injected fault)".into(),
            });
        }
        if f.spec.http429 > 0.0 {
            let p = f.spec.http429;
            if f.rng.chance(p) {
                f.counts.http429 += 1;
                return Err(ProviderError::Unavailable {
                    what: self.inner.describe(),
                    message: "HTTP 429 Too Many Requests (injected fault)".into(),
                });
            }
        }
        if f.spec.http5xx <= 0.0 {
            drop(f);
            return self.inner.write_batch(writes);
        }
        // Per write: fails with a 5xx; half of those land anyway (the reply is what was lost).
        let p = f.spec.http5xx;
        let mut fails = vec![false; writes.len()];
        let mut sent = vec![true; writes.len()];
        for i in 0..writes.len() {
            if f.rng.chance(p) {
                fails[i] = true;
                f.counts.http5xx += 1;
                if f.rng.chance(0.5) {
                    f.counts.http5xx_landed += 1;
                } else {
                    sent[i] = false;
                }
            }
        }
        drop(f);
        if !fails.iter().any(|x| *x) {
            return self.inner.write_batch(writes);
        }
        let send: Vec<Write> = writes.iter().zip(&sent).filter(|(_, s)| **s).map(|(w, _)| w.clone()).collect();
        let mut landed = self.inner.write_batch(&send)?.into_iter();
        let mut out = Vec::with_capacity(writes.len());
        for i in 0..writes.len() {
            let inner = if sent[i] { landed.next() } else { None };
            out.push(match (fails[i], inner) {
                (false, Some(o)) => o,
                _ => WriteOutcome::Failed {
                    retriable: true,
                    message: "HTTP 503 Service Unavailable (injected fault)".into(),
                },
            });
        }
        Ok(out)
    }
}
