//! `simulate`: a staging dry run of a whole migration on synthetic traffic, with
//! injected faults, checked by a ledger kept apart from the code under test.
//!
//! ```text
//! generator ─▶ source.csv, skus.csv, target.db (legacy), plan.yaml, events + deliveries
//!     │
//!     ├─▶ ops::cutover (the real runbook, on a fault-injecting target):
//!     │       freeze with orders arriving, snapshot, plan, apply, replay, verdict
//!     ├─▶ continuous sync: deliveries appended to the real queue, ops::replay in rounds
//!     │       (a crashed apply or replay is run again: the resume path)
//!     └─▶ ledger: its own truth (snapshot + every event once, in sequence order) and its
//!             own mapping, compared with the target table key by key, every round and at the end
//! ```
//!
//! * [`generator`]: the catalogue, the traffic and the delivery-side faults.
//! * [`faults`]: `--faults`, and the target wrapper for 429s, 5xx and crashes.
//! * [`ledger`]: the independent check.
//! * [`report`]: the JSON summary and the self-contained HTML report.

pub mod faults;
pub mod generator;
pub mod ledger;
pub mod report;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::events::queue::Queue;
use crate::ops::apply::ApplyOptions;
use crate::ops::cutover::{CutoverOptions, CutoverReport, Kpi, cutover};
use crate::ops::replay::{ReplayReport, replay_to};
use crate::provider::{self, Provider};
use crate::state::{Actor, CutoverStep, StateStore};
use faults::{FaultCounts, FaultSpec, FaultyTarget, Phase, WriteFaults};
use generator::{GenConfig, LOCATIONS, World};
use ledger::{Drift, Ledger, MapSpec, View};

/// A small, fast, seedable generator (SplitMix64): the same seed, the same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed);
        r.next_u64();
        r
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as u64) as i64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.f64() < p
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub skus: usize,
    pub orders_per_day: f64,
    pub peak_per_day: f64,
    pub hours: u32,
    pub faults: FaultSpec,
    pub seed: u64,
    /// Length of the cutover's freeze (orders arriving meanwhile are queued).
    pub freeze_minutes: u32,
    /// Simulated minutes between two continuous-sync replays.
    pub sync_minutes: u32,
    pub max_drift_ratio: f64,
    pub max_unresolved_drift_units: u64,
    /// The workspace (plan, data, state); must be empty or absent.
    pub dir: PathBuf,
    /// Also write every delivery as `events.jsonl` into the workspace.
    pub write_events: bool,
}

/// The KPIs (SPEC section 6, then more).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub skus: u64,
    pub events: u64,
    pub faults: FaultCounts,
    pub drift_ratio: f64,
    pub unresolved_drift_units: u64,
    /// Source keys the data itself took below zero (orders beyond stock).
    pub oversells: u64,
    pub events_lost: u64,
    pub events_applied_twice: u64,
    pub wall_seconds: f64,
    /// `pass` or `fail`.
    pub verdict: String,
    pub seed: u64,
    pub hours: u32,
    pub orders_per_day: f64,
    pub peak_per_day: f64,
    pub fault_rates: String,
    pub orders: u64,
    pub deliveries: u64,
    pub events_by_kind: BTreeMap<String, u64>,
    /// Final status of every event in the queue, and duplicate deliveries dropped on arrival.
    pub events_by_result: BTreeMap<String, u64>,
    pub source_keys: u64,
    pub target_keys: u64,
    pub drifted_keys: u64,
    pub oversold_units: u64,
    /// Target keys showing more stock than the ledger says exists (oversells the data did not force).
    pub unforced_oversells: u64,
    /// Drift the ledger could not attribute to a lost or doubled event.
    pub unexplained_drift_keys: u64,
    pub writes: BTreeMap<String, u64>,
    pub cutover: String,
    pub sync_rounds: u64,
    pub backlog_at_end: u64,
    pub thresholds: BTreeMap<String, f64>,
    pub breaches: Vec<String>,
}

/// One continuous-sync round (round 0 is the cutover).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Round {
    pub round: u32,
    /// Simulated hours since the freeze started, at the end of the round.
    pub hours: f64,
    pub deliveries: u64,
    pub duplicates_dropped: u64,
    pub backlog_before: u64,
    pub backlog_after: u64,
    pub applied: u64,
    pub superseded: u64,
    pub not_applied: u64,
    pub writes: u64,
    /// Keys differing from the ledger's expectation for the events delivered so far.
    pub drift_keys: u64,
    pub drift_units: u64,
    /// Keys differing from the ground truth at that time (late and in-flight events).
    pub lag_keys: u64,
    pub lag_units: u64,
}

/// A span of the step timeline (wall-clock seconds since the start).
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub lane: String,
    pub name: String,
    pub start: f64,
    pub seconds: f64,
    /// `ok`, `failed` or `crash`.
    pub status: String,
}

/// The outcome of a simulation.
#[derive(Debug, Clone)]
pub struct SimRun {
    pub summary: Summary,
    pub rounds: Vec<Round>,
    pub timeline: Vec<Span>,
    pub steps: Vec<CutoverStep>,
    pub kpis: Vec<Kpi>,
    pub drift: Vec<Drift>,
    pub notes: Vec<String>,
}

fn map_spec(w: &World) -> MapSpec {
    let c = &w.catalogue;
    MapSpec {
        renames: c
            .skus
            .iter()
            .filter(|s| s.kind != generator::SkuKind::Plain)
            .map(|s| (s.source.clone(), (s.target.clone(), s.factor)))
            .collect(),
        locations: LOCATIONS.iter().map(|(s, t)| (s.to_string(), t.to_string())).collect(),
        safety: c.safety.iter().cloned().collect(),
        bundles: c.bundles.clone(),
    }
}

struct Clock(Instant);

impl Clock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Runs a simulation in `cfg.dir`. `note` receives progress lines.
pub fn run(cfg: &SimConfig, note: &mut dyn FnMut(&str)) -> anyhow::Result<SimRun> {
    let clock = Clock(Instant::now());
    let mut timeline: Vec<Span> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let dir = &cfg.dir;
    std::fs::create_dir_all(dir)?;
    if std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!("{} is not empty; simulate needs an empty or new folder", dir.display());
    }

    // The world, the ledger, the files.
    let t = clock.now();
    let gen_cfg = GenConfig {
        skus: cfg.skus,
        orders_per_day: cfg.orders_per_day,
        peak_per_day: cfg.peak_per_day,
        hours: cfg.hours,
        seed: cfg.seed,
        faults: cfg.faults.clone(),
    };
    let world = generator::generate(&gen_cfg);
    let cat = &world.catalogue;
    let mut ledger = Ledger::new(map_spec(&world));
    for k in 0..cat.keys.len() as u32 {
        let (s, l) = cat.key_names(k);
        ledger.add_source_key(s, l);
    }
    let nkeys = cat.keys.len();
    let snapshot = cat.snapshot.clone();
    let expected0: Vec<((String, String), i64)> =
        ledger.expected_all(&snapshot).into_iter().map(|(t, v)| (ledger.target_key(t).clone(), v)).collect();
    let (legacy, apply_writes) = generator::legacy_target(&expected0, cfg.seed);
    generator::write_files(&world, &legacy, dir, &format!("simulate-seed-{}", cfg.seed), cfg.max_drift_ratio)?;
    let t0: jiff::Timestamp = generator::T0.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if cfg.write_events {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("events.jsonl"))?);
        for d in &world.deliveries {
            use std::io::Write as _;
            writeln!(f, "{}", world.event(d.event, t0).to_json_line())?;
        }
    }
    timeline.push(Span {
        lane: "generate".into(),
        name: "generate catalogue, traffic and plan".into(),
        start: t,
        seconds: clock.now() - t,
        status: "ok".into(),
    });
    let msg = format!(
        "Generated {} SKUs ({} source keys, {} target keys), {} events ({} orders) over {} h, {} deliveries; faults: {}.",
        cat.skus.len(),
        cat.snapshot.iter().filter(|q| q.is_some()).count(),
        expected0.len(),
        world.events.len(),
        world.orders,
        cfg.hours,
        world.deliveries.len(),
        cfg.faults.to_text()
    );
    note(&msg);

    let plan = crate::config::check::check_file(&dir.join("plan.yaml")).map_err(|d| {
        let text: Vec<String> = d.iter().map(|x| x.to_string()).collect();
        anyhow::anyhow!("the generated plan does not check:\n{}", text.join("\n"))
    })?;
    let state_dir = dir.join(".stockshift");

    let wf = Rc::new(RefCell::new(WriteFaults::new(&cfg.faults, cfg.seed ^ 0x0009_fa17_0000)));
    wf.borrow_mut().crash_apply_after = apply_writes / 2;
    let target_cfg = plan.config.target.clone();
    let plan_dir = plan.dir.clone();
    let wf_open = wf.clone();
    let mut open = move || -> Box<dyn Provider> {
        // The simulation's target is a SQLite file it created, which always opens.
        Box::new(FaultyTarget::new(provider::open(&target_cfg, &plan_dir).expect("sqlite opens"), wf_open.clone()))
    };
    let mut apply = ApplyOptions::new(Actor::current("simulate"));
    apply.allow_large = true;
    apply.base_backoff = Duration::from_micros(200);
    apply.max_backoff = Duration::from_millis(5);

    // Ledger views: what was delivered so far, and the ground truth at a time.
    let mut delivered = View::new(&snapshot);
    delivered.grow(nkeys);
    let mut truth = View::new(&snapshot);
    truth.grow(nkeys);
    let mut by_seq: Vec<u32> = (0..world.events.len() as u32).collect();
    by_seq.sort_by_key(|&i| world.events[i as usize].sequence);
    let mut truth_at = 0usize;
    let mut oversold: BTreeMap<u32, i64> = BTreeMap::new();
    let mut advance_truth = |truth: &mut View, until: Option<i64>, touched: &mut BTreeSet<u32>, at: &mut usize| {
        while *at < by_seq.len() {
            let e = &world.events[by_seq[*at] as usize];
            if until.is_some_and(|u| e.at >= u) {
                break;
            }
            truth.add(by_seq[*at], e.key, e.sequence, e.change);
            touched.insert(e.key);
            if let Some(v) = truth.vals[e.key as usize].filter(|v| *v < 0) {
                let m = oversold.entry(e.key).or_insert(0);
                *m = (*m).min(v);
            }
            *at += 1;
        }
    };

    // The cutover, with the orders that arrive during the freeze.
    let freeze_end = cfg.freeze_minutes as i64 * 60;
    let window_end = cfg.hours as i64 * 3600;
    let mut di = 0usize;
    let mut freeze_events = Vec::new();
    while di < world.deliveries.len() && world.deliveries[di].at < freeze_end.min(window_end) {
        let d = world.deliveries[di];
        let e = &world.events[d.event as usize];
        delivered.add(d.event, e.key, e.sequence, e.change);
        freeze_events.push(world.event(d.event, t0));
        di += 1;
    }
    let mut touched_t: BTreeSet<u32> = BTreeSet::new();
    advance_truth(&mut truth, Some(freeze_end), &mut touched_t, &mut truth_at);
    note(&format!(
        "Cutover: freeze on, {} deliveries arrive during the {}-minute freeze.",
        freeze_events.len(),
        cfg.freeze_minutes
    ));

    let mut steps: Vec<CutoverStep> = Vec::new();
    let mut attempts = 0;
    let mut cutover_error: Option<String> = None;
    let report: Option<CutoverReport> = loop {
        attempts += 1;
        let crashes = wf.borrow().counts.crash;
        let wf_step = wf.clone();
        let (steps_ref, timeline_ref, clock_ref) = (&mut steps, &mut timeline, &clock);
        let mut step_notes: Vec<String> = Vec::new();
        let mut on_step = |s: &CutoverStep| {
            match (s.step, s.status.as_str()) {
                (3, "ok") => wf_step.borrow_mut().phase = Phase::Apply,
                (4, "ok") => wf_step.borrow_mut().phase = Phase::CutoverReplay,
                (5, "ok") => wf_step.borrow_mut().phase = Phase::Setup,
                _ => {}
            }
            if s.detail.ends_with("(done before the restart)") {
                return;
            }
            let end = clock_ref.now();
            timeline_ref.push(Span {
                lane: "cutover".into(),
                name: format!("{}. {}", s.step, s.name),
                start: (end - s.seconds).max(0.0),
                seconds: s.seconds,
                status: s.status.clone(),
            });
            let mark = if s.status == "ok" { "[ok]  " } else { "[FAIL]" };
            let detail = s.detail.lines().next().unwrap_or_default();
            step_notes.push(format!("  {mark} {}. {:<15} {:>7.2}s  {detail}", s.step, s.name, s.seconds));
            steps_ref.push(s.clone());
        };
        let mut approve = |_: &crate::artifact::PlanArtifact| true;
        let mut opts = CutoverOptions {
            apply: apply.clone(),
            rollback_on_failure: false,
            events: freeze_events.clone(),
            fulfillment_failure_rate: None,
            approve: &mut approve,
            on_step: &mut on_step,
            target: Some(&mut open),
        };
        let result = cutover(&plan, &state_dir, &mut opts);
        drop(opts);
        for n in step_notes {
            note(&n);
        }
        match result {
            Ok(r) => break Some(r),
            Err(_) if wf.borrow().counts.crash > crashes && attempts < 4 => {
                let at = clock.now();
                let what = wf.borrow().log.last().cloned().unwrap_or_default();
                timeline.push(Span {
                    lane: "cutover".into(),
                    name: format!("crash: {what}"),
                    start: at,
                    seconds: 0.0,
                    status: "crash".into(),
                });
                wf.borrow_mut().counts.resumed += 1;
                note(&format!("  [crash] {what}; running the cutover again: it resumes at its step"));
            }
            Err(e) => {
                cutover_error = Some(e.to_string());
                break None;
            }
        }
    };
    let cutover_ok = report.as_ref().is_some_and(|r| r.decision == "unfrozen");
    let cutover_text = match (&report, &cutover_error) {
        (Some(r), _) => format!("{} ({})", r.verdict, r.decision.replace('_', " ")),
        (None, Some(e)) => format!("error: {}", e.lines().next().unwrap_or_default()),
        (None, None) => "not run".into(),
    };
    if !cutover_ok {
        let why = format!("The cutover did not pass ({cutover_text}); continuous sync was not started.");
        note(&why);
        notes.push(why);
    }

    let mut queue = Queue::open(&Queue::path_in(&state_dir))?;
    let mut state = StateStore::open_for(&plan, Some(&state_dir))?;
    let db_path = match &plan.config.target {
        crate::config::model::ProviderConfig::Sqlite(c) => plan.resolve(&c.path),
        other => anyhow::bail!("simulate drives a sqlite target, not {}", other.kind()),
    };
    let reader = rusqlite::Connection::open_with_flags(&db_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut rounds: Vec<Round> = Vec::new();

    // Round 0: the cutover, checked in full.
    let mut drifted_prev: BTreeSet<u32> = BTreeSet::new();
    {
        let target = ledger::read_target(&db_path)?;
        let d = ledger::compare_all(&ledger, &delivered.vals, &target);
        let lag = ledger::compare_all(&ledger, &truth.vals, &target);
        let counts = queue.counts()?;
        let get = |s: crate::events::queue::Status| counts.get(&s).copied().unwrap_or(0);
        rounds.push(Round {
            round: 0,
            hours: freeze_end as f64 / 3600.0,
            deliveries: freeze_events.len() as u64,
            duplicates_dropped: (freeze_events.len() as u64).saturating_sub(counts.values().sum::<u64>()),
            backlog_before: freeze_events.len() as u64,
            backlog_after: get(crate::events::queue::Status::Queued),
            applied: get(crate::events::queue::Status::Applied),
            superseded: get(crate::events::queue::Status::Superseded),
            not_applied: get(crate::events::queue::Status::Queued) + get(crate::events::queue::Status::Failed),
            writes: state.write_counts()?.total(),
            drift_keys: d.drifted.len() as u64,
            drift_units: d.units(),
            lag_keys: lag.drifted.len() as u64,
            lag_units: lag.units(),
        });
        drifted_prev.extend(d.drifted.iter().chain(&lag.drifted).filter_map(|(t, _)| *t));
    }

    // Continuous sync: the rest of the window, replayed in rounds.
    let mut target = open();
    wf.borrow_mut().phase = Phase::Sync;
    let mut replay_errors = 0u64;
    let mut replay_round = |state: &mut StateStore,
                            queue: &mut Queue,
                            target: &mut dyn Provider,
                            timeline: &mut Vec<Span>,
                            note: &mut dyn FnMut(&str)|
     -> Option<ReplayReport> {
        for _ in 0..4 {
            let crashes = wf.borrow().counts.crash;
            match replay_to(&plan, state, queue, target, &apply) {
                Ok(r) => return Some(r),
                Err(_) if wf.borrow().counts.crash > crashes => {
                    let what = wf.borrow().log.last().cloned().unwrap_or_default();
                    timeline.push(Span {
                        lane: "sync".into(),
                        name: format!("crash: {what}"),
                        start: clock.now(),
                        seconds: 0.0,
                        status: "crash".into(),
                    });
                    wf.borrow_mut().counts.resumed += 1;
                    note(&format!("  [crash] {what}; running the replay again"));
                }
                Err(e) => {
                    replay_errors += 1;
                    note(&format!("  replay stopped: {}", e.to_string().lines().next().unwrap_or_default()));
                    return None;
                }
            }
        }
        None
    };
    let step = cfg.sync_minutes.max(1) as i64 * 60;
    let mut t = freeze_end;
    let mut point = reader.prepare("SELECT qty FROM inventory WHERE sku = ?1 AND location = ?2")?;
    let mut sync_rounds = 0u64;
    let mut sync_done = false;
    let sync_started = clock.now();
    while cutover_ok && !sync_done {
        let until = (t + step).min(window_end).max(t);
        let last = until >= window_end;
        let round_start = clock.now();
        let mut batch = Vec::new();
        let mut touched_d: BTreeSet<u32> = BTreeSet::new();
        while di < world.deliveries.len() && (last || world.deliveries[di].at < until) {
            let d = world.deliveries[di];
            let e = &world.events[d.event as usize];
            delivered.add(d.event, e.key, e.sequence, e.change);
            touched_d.insert(e.key);
            batch.push(world.event(d.event, t0));
            di += 1;
        }
        let mut touched_t: BTreeSet<u32> = BTreeSet::new();
        advance_truth(&mut truth, if last { None } else { Some(until) }, &mut touched_t, &mut truth_at);
        let inserted = queue.append(&batch)?;
        let dups = inserted.iter().filter(|i| !i.is_accepted()).count() as u64;
        let backlog_before = queue.queued_count()?;
        let rep = replay_round(&mut state, &mut queue, target.as_mut(), &mut timeline, note).unwrap_or_default();
        let backlog_after = queue.queued_count()?;
        sync_rounds += 1;
        // The ledger's check: keys moved this round, and keys that differed before.
        let mut check = ledger.affected(touched_d.iter().chain(&touched_t).copied());
        check.extend(drifted_prev.iter().copied());
        let (mut dk, mut du, mut lk, mut lu) = (0u64, 0u64, 0u64, 0u64);
        let mut now_drifted = BTreeSet::new();
        for &tk in &check {
            let (sku, loc) = ledger.target_key(tk);
            let got: Option<i64> = point
                .query_row(rusqlite::params![sku, loc], |r| r.get(0))
                .map(Some)
                .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
            let differs = |exp: Option<i64>| got != exp && !(exp.is_none() && got == Some(0));
            let units = |exp: Option<i64>| (got.unwrap_or(0) - exp.unwrap_or(0)).unsigned_abs();
            let (ed, et) = (ledger.expected(tk, &delivered.vals), ledger.expected(tk, &truth.vals));
            if differs(ed) {
                dk += 1;
                du += units(ed);
                now_drifted.insert(tk);
            }
            if differs(et) {
                lk += 1;
                lu += units(et);
                now_drifted.insert(tk);
            }
        }
        drifted_prev = now_drifted;
        rounds.push(Round {
            round: sync_rounds as u32,
            hours: until as f64 / 3600.0,
            deliveries: batch.len() as u64,
            duplicates_dropped: dups,
            backlog_before,
            backlog_after,
            applied: rep.applied,
            superseded: rep.superseded,
            not_applied: rep.failed,
            writes: rep.writes.applied,
            drift_keys: dk,
            drift_units: du,
            lag_keys: lk,
            lag_units: lu,
        });
        timeline.push(Span {
            lane: "sync".into(),
            name: format!("round {sync_rounds}"),
            start: round_start,
            seconds: clock.now() - round_start,
            status: if rep.failed > 0 { "failed" } else { "ok" }.into(),
        });
        sync_done = last;
        t = until;
    }
    drop(point);
    if cutover_ok {
        note(&format!(
            "Continuous sync: {} deliveries in {sync_rounds} replay round(s) of {} simulated minute(s), {:.2}s.",
            world.deliveries.len() - freeze_events.len(),
            cfg.sync_minutes,
            clock.now() - sync_started
        ));
        // Drain: what is still queued (writes that failed for good, a replay that stopped) gets more tries.
        let mut tries = 0;
        while queue.queued_count()? > 0 && tries < 5 {
            tries += 1;
            let t = clock.now();
            let rep = replay_round(&mut state, &mut queue, target.as_mut(), &mut timeline, note);
            timeline.push(Span {
                lane: "sync".into(),
                name: format!("drain {tries}"),
                start: t,
                seconds: clock.now() - t,
                status: "ok".into(),
            });
            if let Some(r) = rep {
                note(&format!("  drain {tries}: {}", r.summary()));
            }
        }
    } else {
        // The truth at the end of the window is what the shop will face.
        let mut sink = BTreeSet::new();
        advance_truth(&mut truth, None, &mut sink, &mut truth_at);
    }
    drop(target);

    // The final check, in full.
    let t = clock.now();
    let target_rows = ledger::read_target(&db_path)?;
    let fin = ledger::compare_all(&ledger, &truth.vals, &target_rows);
    let backlog_at_end = queue.queued_count()?;
    // Bookkeeping: every distinct event stored once and settled.
    let qconn = rusqlite::Connection::open_with_flags(queue.path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stored: HashMap<String, (String, u64)> = HashMap::new();
    {
        let mut st = qconn.prepare("SELECT id, min(status), count(*) FROM events WHERE source = ?1 GROUP BY id")?;
        let mut rows = st.query([generator::SOURCE])?;
        while let Some(r) = rows.next()? {
            stored.insert(r.get(0)?, (r.get(1)?, r.get::<_, i64>(2)? as u64));
        }
    }
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    {
        let mut st = qconn.prepare("SELECT status, count(*) FROM events GROUP BY status ORDER BY status")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            by_status.insert(r.get(0)?, r.get::<_, i64>(1)? as u64);
        }
    }
    let delivered_ids = {
        let mut s = vec![false; world.events.len()];
        for d in &world.deliveries[..di] {
            s[d.event as usize] = true;
        }
        s
    };
    let mut lost: BTreeSet<u32> = BTreeSet::new();
    let mut twice: BTreeSet<u32> = BTreeSet::new();
    for (i, e) in world.events.iter().enumerate() {
        match stored.get(&e.id) {
            None if delivered_ids[i] => {
                lost.insert(i as u32);
            }
            None => {}
            Some((status, n)) => {
                if status == "queued" || status == "failed" {
                    lost.insert(i as u32);
                }
                if *n > 1 {
                    twice.insert(i as u32);
                }
            }
        }
    }
    // Effect: a drifted key fed by one source key whose difference is exactly one event's delta.
    let mut unexplained = 0u64;
    let mut events_of: HashMap<u32, Vec<u32>> = HashMap::new();
    let drifted_sources: BTreeSet<u32> = fin
        .drifted
        .iter()
        .filter_map(|(t, _)| *t)
        .filter(|t| !ledger.is_bundle(*t) && ledger.sources_of(*t).len() == 1)
        .map(|t| ledger.sources_of(t)[0])
        .collect();
    for (i, e) in world.events.iter().enumerate() {
        if drifted_sources.contains(&e.key) {
            events_of.entry(e.key).or_default().push(i as u32);
        }
    }
    for (t, d) in &fin.drifted {
        let explained = (|| {
            let t = (*t)?;
            if ledger.is_bundle(t) || ledger.sources_of(t).len() != 1 {
                return None;
            }
            let s = ledger.sources_of(t)[0];
            let got = d.target.filter(|v| *v > 0)?;
            let num = got + ledger.safety(t);
            if num % ledger.factor(s) != 0 {
                return None;
            }
            let diff = num / ledger.factor(s) - truth.vals[s as usize]?;
            for &i in events_of.get(&s)? {
                if let crate::events::event::Change::Delta(delta) = world.events[i as usize].change {
                    if delta == diff {
                        twice.insert(i);
                        return Some(());
                    }
                    if delta == -diff {
                        lost.insert(i);
                        return Some(());
                    }
                }
            }
            None
        })();
        if explained.is_none() {
            unexplained += 1;
        }
    }
    timeline.push(Span {
        lane: "ledger".into(),
        name: "ledger check".into(),
        start: t,
        seconds: clock.now() - t,
        status: if fin.drifted.is_empty() { "ok" } else { "failed" }.into(),
    });

    // The verdict.
    let drift_ratio = if fin.keys == 0 { 0.0 } else { fin.drifted.len() as f64 / fin.keys as f64 };
    let units = fin.units();
    let mut breaches = Vec::new();
    if !cutover_ok {
        breaches.push(format!("the cutover did not pass: {cutover_text}"));
    }
    if drift_ratio > cfg.max_drift_ratio {
        breaches.push(format!("drift ratio {drift_ratio:.6} above {}", cfg.max_drift_ratio));
    }
    if units > cfg.max_unresolved_drift_units {
        breaches.push(format!("unresolved drift {units} unit(s) above {}", cfg.max_unresolved_drift_units));
    }
    if !lost.is_empty() {
        breaches.push(format!("{} event(s) lost", lost.len()));
    }
    if !twice.is_empty() {
        breaches.push(format!("{} event(s) applied twice", twice.len()));
    }
    if fin.over() > 0 {
        breaches
            .push(format!("{} key(s) show stock that does not exist (oversells the data did not force)", fin.over()));
    }
    if backlog_at_end > 0 {
        breaches.push(format!("{backlog_at_end} event(s) still queued at the end"));
    }
    let verdict = if breaches.is_empty() { "pass" } else { "fail" };
    let mut events_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for e in &world.events {
        *events_by_kind.entry(e.kind.name().into()).or_insert(0) += 1;
    }
    let stored_total: u64 = by_status.values().sum();
    let mut events_by_result = by_status.clone();
    events_by_result.insert("duplicate_deliveries_dropped".into(), (di as u64).saturating_sub(stored_total));
    let wc = state.write_counts()?;
    let writes = BTreeMap::from([
        ("applied".to_string(), wc.applied),
        ("already_applied".to_string(), wc.already_applied),
        ("conflicts".to_string(), wc.conflicts),
        ("failed".to_string(), wc.failed),
    ]);
    if replay_errors > 0 {
        notes.push(format!("{replay_errors} replay run(s) stopped with an error; their events were retried later"));
    }
    let faults = wf.borrow().counts.clone();
    let faults = FaultCounts {
        dup: world.faults.dup,
        reorder: world.faults.reorder,
        late: world.faults.late,
        stale_set: world.faults.stale_set,
        ..faults
    };
    let summary = Summary {
        skus: cat.skus.len() as u64,
        events: world.events.len() as u64,
        faults,
        drift_ratio,
        unresolved_drift_units: units,
        oversells: oversold.len() as u64,
        events_lost: lost.len() as u64,
        events_applied_twice: twice.len() as u64,
        wall_seconds: (clock.now() * 1000.0).round() / 1000.0,
        verdict: verdict.into(),
        seed: cfg.seed,
        hours: cfg.hours,
        orders_per_day: cfg.orders_per_day,
        peak_per_day: cfg.peak_per_day,
        fault_rates: cfg.faults.to_text(),
        orders: world.orders,
        deliveries: world.deliveries.len() as u64,
        events_by_kind,
        events_by_result,
        source_keys: nkeys as u64,
        target_keys: fin.keys,
        drifted_keys: fin.drifted.len() as u64,
        oversold_units: oversold.values().map(|v| v.unsigned_abs()).sum(),
        unforced_oversells: fin.over(),
        unexplained_drift_keys: unexplained,
        writes,
        cutover: cutover_text,
        sync_rounds,
        backlog_at_end,
        thresholds: BTreeMap::from([
            ("max_drift_ratio".to_string(), cfg.max_drift_ratio),
            ("max_unresolved_drift_units".to_string(), cfg.max_unresolved_drift_units as f64),
            ("max_events_lost".to_string(), 0.0),
            ("max_events_applied_twice".to_string(), 0.0),
            ("max_unforced_oversells".to_string(), 0.0),
        ]),
        breaches,
    };
    Ok(SimRun {
        summary,
        rounds,
        timeline,
        steps,
        kpis: report.map(|r| r.kpis).unwrap_or_default(),
        drift: fin.drifted.into_iter().take(100).map(|(_, d)| d).collect(),
        notes,
    })
}

/// A fresh workspace folder under the system's temp folder.
pub fn temp_workspace(seed: u64) -> PathBuf {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!("stockshift-simulate-{seed}-{}-{stamp}", std::process::id()))
}

/// Removes a workspace made by [`temp_workspace`].
pub fn remove_workspace(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
