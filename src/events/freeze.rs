//! The freeze: while frozen, events are queued but not applied (`mode: queue`), or
//! the target is not written at all (`mode: read_only`).
//!
//! Frozen = the manual flag is set (`stockshift freeze start`, stored in the
//! queue's `freeze` table) OR now is inside the plan's window
//! `[freeze.start, freeze.start + freeze.duration)`. The receiver always queues;
//! `replay --follow` asks [`is_frozen`] before applying.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::queue::{ManualFreeze, Queue, QueueError};
use crate::config::check::Plan;
use crate::config::model::{FreezeConfig, FreezeMode};

/// The plan's freeze window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// The window a plan's `freeze:` declares (`Err` explains a bad start or duration).
    pub fn from_config(cfg: &FreezeConfig) -> Result<Window, String> {
        let start: Timestamp =
            cfg.start.parse().map_err(|_| format!("freeze.start `{}` is not an RFC 3339 timestamp", cfg.start))?;
        let duration: SignedDuration = cfg
            .duration
            .parse()
            .ok()
            .filter(|d: &SignedDuration| d.is_positive())
            .ok_or_else(|| format!("freeze.duration `{}` is not a positive duration", cfg.duration))?;
        let end = start.checked_add(duration).map_err(|_| "freeze window ends out of range".to_string())?;
        Ok(Window { start, end })
    }

    /// Whether `now` is inside the window (start inclusive, end exclusive).
    pub fn contains(&self, now: Timestamp) -> bool {
        self.start <= now && now < self.end
    }
}

/// Whether events may be applied now, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeState {
    pub frozen: bool,
    /// What the freeze does (the plan's `freeze.mode`; `queue` without a `freeze:` section).
    pub mode: FreezeMode,
    /// The manual flag, when set.
    pub manual: Option<ManualFreeze>,
    /// The plan's window, when it declares one.
    pub window: Option<Window>,
    /// Whether `now` is inside the window.
    pub in_window: bool,
    /// When this state was computed.
    pub at: Timestamp,
}

impl FreezeState {
    /// Combines the manual flag and the plan's window at `now`.
    pub fn evaluate(
        cfg: Option<&FreezeConfig>,
        manual: Option<ManualFreeze>,
        now: Timestamp,
    ) -> Result<FreezeState, String> {
        let window = cfg.map(Window::from_config).transpose()?;
        let in_window = window.is_some_and(|w| w.contains(now));
        Ok(FreezeState {
            frozen: manual.is_some() || in_window,
            mode: cfg.map_or(FreezeMode::Queue, |c| c.mode),
            manual,
            window,
            in_window,
            at: now,
        })
    }

    /// One line per reason the state is what it is, for people.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = &self.manual {
            out.push(format!("manual: started by {} at {}", m.by, m.since));
        }
        if let Some(w) = &self.window {
            if self.in_window {
                out.push(format!("window: {} until {}", w.start, w.end));
            } else if self.at < w.start {
                out.push(format!("window: not yet ({} until {})", w.start, w.end));
            } else {
                out.push(format!("window: over ({} until {})", w.start, w.end));
            }
        }
        out
    }

    /// `{"frozen", "mode", "reasons": [...], "manual": {"by","since"}|null, "window": {"start","until","active"}|null}`.
    /// `reasons` lists only what freezes now: `{"kind":"manual","by","since"}`, `{"kind":"window","until"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut reasons = Vec::new();
        if let Some(m) = &self.manual {
            reasons.push(json!({"kind": "manual", "by": m.by, "since": m.since.to_string()}));
        }
        if let Some(w) = self.window.filter(|_| self.in_window) {
            reasons.push(json!({"kind": "window", "start": w.start.to_string(), "until": w.end.to_string()}));
        }
        json!({
            "frozen": self.frozen,
            "mode": match self.mode { FreezeMode::Queue => "queue", FreezeMode::ReadOnly => "read_only" },
            "reasons": reasons,
            "manual": self.manual.as_ref().map(|m| json!({"by": m.by, "since": m.since.to_string()})),
            "window": self.window.map(|w| json!({"start": w.start.to_string(), "until": w.end.to_string(), "active": self.in_window})),
        })
    }
}

/// Errors of [`is_frozen`].
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Config(String),
}

/// The freeze state of a plan now: its window and the manual flag in `queue`.
pub fn is_frozen(plan: &Plan, queue: &Queue) -> Result<FreezeState, FreezeError> {
    is_frozen_at(plan.config.freeze.as_ref(), queue, Timestamp::now())
}

/// [`is_frozen`] at a given time (for tests and for checking ahead).
pub fn is_frozen_at(cfg: Option<&FreezeConfig>, queue: &Queue, now: Timestamp) -> Result<FreezeState, FreezeError> {
    let manual = queue.manual_freeze()?;
    FreezeState::evaluate(cfg, manual, now).map_err(FreezeError::Config)
}

/// Who is running this command: `$USER@hostname` (for the freeze flag and audit).
pub fn whoami() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(uid_name);
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    if host.is_empty() { user } else { format!("{user}@{host}") }
}

#[cfg(unix)]
fn uid_name() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    format!("uid{}", unsafe { libc::geteuid() })
}

#[cfg(not(unix))]
fn uid_name() -> String {
    "unknown".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: FreezeMode) -> FreezeConfig {
        FreezeConfig { start: "2026-12-01T02:00:00Z".into(), duration: "15m".into(), mode }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn window_bounds() {
        let c = cfg(FreezeMode::Queue);
        let before = FreezeState::evaluate(Some(&c), None, at("2026-12-01T01:59:59Z")).unwrap();
        assert!(!before.frozen);
        assert!(before.reasons()[0].contains("not yet"), "{:?}", before.reasons());
        let inside = FreezeState::evaluate(Some(&c), None, at("2026-12-01T02:00:00Z")).unwrap();
        assert!(inside.frozen);
        assert_eq!(inside.reasons(), vec!["window: 2026-12-01T02:00:00Z until 2026-12-01T02:15:00Z"]);
        assert_eq!(inside.to_json()["reasons"][0]["until"], "2026-12-01T02:15:00Z");
        let end = FreezeState::evaluate(Some(&c), None, at("2026-12-01T02:15:00Z")).unwrap();
        assert!(!end.frozen);
        assert!(end.reasons()[0].contains("over"));
    }

    #[test]
    fn manual_or_window() {
        let m = ManualFreeze { by: "alice@host".into(), since: at("2026-11-30T00:00:00Z") };
        let s = FreezeState::evaluate(None, Some(m.clone()), at("2026-11-30T01:00:00Z")).unwrap();
        assert!(s.frozen);
        assert_eq!(s.mode, FreezeMode::Queue);
        assert_eq!(s.to_json()["reasons"][0]["kind"], "manual");
        assert_eq!(s.to_json()["window"], serde_json::Value::Null);
        let ro = FreezeState::evaluate(Some(&cfg(FreezeMode::ReadOnly)), Some(m), at("2026-12-01T02:01:00Z")).unwrap();
        assert_eq!(ro.to_json()["mode"], "read_only");
        assert_eq!(ro.to_json()["reasons"].as_array().unwrap().len(), 2);
        assert!(!FreezeState::evaluate(None, None, at("2026-12-01T02:01:00Z")).unwrap().frozen);
    }

    #[test]
    fn flag_in_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("events.db")).unwrap();
        assert!(!is_frozen_at(None, &q, Timestamp::now()).unwrap().frozen);
        q.start_freeze(&whoami()).unwrap();
        assert!(is_frozen_at(None, &q, Timestamp::now()).unwrap().frozen);
        q.stop_freeze("x").unwrap();
        assert!(!is_frozen_at(None, &q, Timestamp::now()).unwrap().frozen);
    }
}
