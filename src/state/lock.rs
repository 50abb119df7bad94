//! The state lock: one writing operation (apply, rollback, replay, fix) at a
//! time per state.
//!
//! Who holds the lock is a row in the `lock` table (id, operation, who, where,
//! since), so a refusal can say so and `stockshift force-unlock ID` can remove it.
//! What makes the lock exclusive differs per backend:
//!
//! - **SQLite**: the row itself, inserted in an immediate transaction so two
//!   processes cannot both see it free. A row whose holder process is gone (same
//!   host, pid no longer alive) is taken over instead of blocking forever.
//! - **PostgreSQL**: a session advisory lock (`pg_try_advisory_lock`) held by the
//!   connection of the store the lock was taken on (callers take it on a
//!   [`StateStore::reopen`]ed store). Processes on other machines are excluded
//!   too, and when a holder dies (killed, machine gone) the server frees its
//!   lock with its session. A `lock` row found while the advisory lock is free
//!   is therefore a dead holder's: it is taken over (reported in
//!   [`LockGuard::took_over`]). `force-unlock` removes a row; it cannot break a
//!   live session's lock.
//!
//! Two more modes, for work split across processes (parallel replay workers):
//!
//! - [`StateStore::lock_shared`]: several shared holders at once, excluded by an
//!   exclusive holder and the other way round (`pg_try_advisory_lock_shared`);
//!   holders are listed in `lock_shared`. On SQLite (one machine) it is the
//!   exclusive lock.
//! - [`StateStore::lock_partition`]: a non-blocking lock on one partition of the
//!   keys (`pg_try_advisory_lock` on a key of its own); `None` when another
//!   session holds it. On SQLite it is always granted.
//!
//! Advisory locks stack per session: take each lock once per store connection.
//! [`LockGuard`] and [`PartitionLock`] release their lock when dropped, so every
//! return path, error or not, releases it.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Actor, StateError, StateStore, now};
use crate::db::{Db, DbError, Row, params};

/// PostgreSQL advisory lock key of the state lock ("STOCKS").
const STATE_LOCK: i64 = 0x5354_4f43_4b53;
/// PostgreSQL advisory lock keys of the partition locks: this plus the partition ("STPA").
const PARTITION_LOCK_BASE: i64 = 0x5354_5041 << 32;

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    pub id: String,
    pub operation: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub started_at: String,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Lock info:")?;
        writeln!(f, "  ID:        {}", self.id)?;
        writeln!(f, "  Operation: {}", self.operation)?;
        writeln!(f, "  Who:       {}@{}", self.user, self.host)?;
        writeln!(f, "  PID:       {}", self.pid)?;
        write!(f, "  Created:   {}", self.started_at)
    }
}

impl LockInfo {
    fn new(operation: &str, actor: &Actor) -> LockInfo {
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_owned(),
            user: actor.user.clone(),
            host: actor.host.clone(),
            pid: actor.pid,
            started_at: now(),
        }
    }

    /// A PostgreSQL holder that has not written its row yet (it has just taken the lock).
    fn unrecorded() -> LockInfo {
        LockInfo {
            id: "-".into(),
            operation: "another stockshift process (it has not recorded itself yet)".into(),
            user: "?".into(),
            host: "?".into(),
            pid: 0,
            started_at: "?".into(),
        }
    }

    fn from_row(r: &Row<'_, '_>) -> Result<LockInfo, DbError> {
        Ok(LockInfo {
            id: r.text(0)?,
            operation: r.text(1)?,
            user: r.text(2)?,
            host: r.text(3)?,
            pid: r.i64(4)?.clamp(0, i64::from(u32::MAX)) as u32,
            started_at: r.text(5)?,
        })
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state is locked by another operation\n\n{0}\n\nWait for it to finish, pass --lock-timeout to wait, or if that process is gone, run `stockshift force-unlock {id}`.", id = .0.id)]
    Held(Box<LockInfo>),
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
}

/// Releases the lock when dropped.
pub struct LockGuard<'a> {
    store: &'a StateStore,
    pub info: LockInfo,
    /// Set when a dead holder's lock was taken over.
    pub took_over: Option<LockInfo>,
    mode: Mode,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let db = &self.store.db;
        match self.mode {
            Mode::Exclusive => {
                let _ = db.execute("DELETE FROM lock WHERE id = ?1", params![&self.info.id]);
                let _ = db.advisory_unlock(STATE_LOCK);
            }
            Mode::Shared => {
                let _ = db.execute("DELETE FROM lock_shared WHERE id = ?1", params![&self.info.id]);
                let _ = db.advisory_unlock_shared(STATE_LOCK);
            }
        }
    }
}

/// A partition's lock ([`StateStore::lock_partition`]); released when dropped.
pub struct PartitionLock<'a> {
    store: &'a StateStore,
    /// The advisory lock key (PostgreSQL); `None` on SQLite.
    key: Option<i64>,
    pub partition: u32,
}

impl Drop for PartitionLock<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let _ = self.store.db.advisory_unlock(key);
        }
    }
}

/// True when `pid` on this host no longer runs.
fn holder_is_gone(info: &LockInfo, host: &str) -> bool {
    if info.host != host {
        return false; // cannot tell from here
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(info.pid as libc::pid_t, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

const LOCK_COLS: &str = r#"id, operation, "user", host, pid, started_at"#;

/// The holder row of `table` (`lock`: at most one).
fn holder(db: &Db, table: &str) -> Result<Option<LockInfo>, DbError> {
    db.query_opt(&format!("SELECT {LOCK_COLS} FROM {table} ORDER BY started_at DESC LIMIT 1"), &[], LockInfo::from_row)
}

type Attempt = Result<(LockInfo, Option<LockInfo>), LockInfo>;

impl StateStore {
    /// The current lock holder as recorded (a dead holder's row stays until the
    /// lock is taken over or force-unlocked).
    pub fn lock_info(&self) -> Result<Option<LockInfo>, StateError> {
        holder(&self.db, "lock").map_err(|e| self.err(e))
    }

    /// Takes the lock for `operation`, waiting up to `timeout` for a live holder.
    pub fn lock(&self, operation: &str, actor: &Actor, timeout: Duration) -> Result<LockGuard<'_>, LockError> {
        self.lock_in(Mode::Exclusive, operation, actor, timeout)
    }

    /// Takes the lock in shared mode, waiting up to `timeout` for an exclusive
    /// holder: on PostgreSQL several shared holders (parallel workers, each on its
    /// own connection) may hold it at once, while no exclusive holder does. On
    /// SQLite this is [`StateStore::lock`].
    pub fn lock_shared(&self, operation: &str, actor: &Actor, timeout: Duration) -> Result<LockGuard<'_>, LockError> {
        let mode = if self.db.is_postgres() { Mode::Shared } else { Mode::Exclusive };
        self.lock_in(mode, operation, actor, timeout)
    }

    /// Takes the lock of partition `p` if no other session holds it (no wait):
    /// `None` when another one does. On SQLite (one machine) it is always granted.
    pub fn lock_partition(&self, p: u32) -> Result<Option<PartitionLock<'_>>, StateError> {
        if !self.db.is_postgres() {
            return Ok(Some(PartitionLock { store: self, key: None, partition: p }));
        }
        let key = PARTITION_LOCK_BASE + i64::from(p);
        let got = self.db.try_advisory_lock(key).map_err(|e| self.err(e))?;
        Ok(got.then_some(PartitionLock { store: self, key: Some(key), partition: p }))
    }

    fn lock_in(
        &self,
        mode: Mode,
        operation: &str,
        actor: &Actor,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, LockError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = match (mode, self.db.is_postgres()) {
                (_, false) => self.try_lock_sqlite(operation, actor)?,
                (Mode::Exclusive, true) => self.try_lock_pg(operation, actor)?,
                (Mode::Shared, true) => self.try_lock_pg_shared(operation, actor)?,
            };
            match attempt {
                Ok((info, took_over)) => return Ok(LockGuard { store: self, info, took_over, mode }),
                Err(held) => {
                    if Instant::now() >= deadline {
                        return Err(LockError::Held(Box::new(held)));
                    }
                    std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// SQLite: the row, in an immediate transaction (no other writer can take
    /// the lock between our read and insert).
    fn try_lock_sqlite(&self, operation: &str, actor: &Actor) -> Result<Attempt, StateError> {
        self.db
            .transaction(true, |db| -> Result<Attempt, DbError> {
                let mut took_over = None;
                if let Some(h) = holder(db, "lock")? {
                    if !holder_is_gone(&h, &actor.host) {
                        return Ok(Err(h));
                    }
                    db.execute("DELETE FROM lock", &[])?;
                    took_over = Some(h);
                }
                let info = LockInfo::new(operation, actor);
                insert_holder(db, "lock", &info)?;
                Ok(Ok((info, took_over)))
            })
            .map_err(|e| self.err(e))
    }

    /// PostgreSQL, exclusive: the advisory lock, then the row.
    fn try_lock_pg(&self, operation: &str, actor: &Actor) -> Result<Attempt, StateError> {
        let db = &self.db;
        if !db.try_advisory_lock(STATE_LOCK).map_err(|e| self.err(e))? {
            return Ok(Err(self.blocking_holder()?));
        }
        let info = LockInfo::new(operation, actor);
        // We hold the lock: rows left in either table are dead sessions'.
        let taken = db.transaction(false, |db| -> Result<Option<LockInfo>, DbError> {
            let dead = db.query_opt(&format!("DELETE FROM lock RETURNING {LOCK_COLS}"), &[], LockInfo::from_row)?;
            db.execute("DELETE FROM lock_shared", &[])?;
            insert_holder(db, "lock", &info)?;
            Ok(dead)
        });
        match taken {
            Ok(took_over) => Ok(Ok((info, took_over))),
            Err(e) => {
                let _ = db.advisory_unlock(STATE_LOCK);
                Err(self.err(e))
            }
        }
    }

    /// PostgreSQL, shared: the advisory lock in shared mode, then a row in `lock_shared`.
    fn try_lock_pg_shared(&self, operation: &str, actor: &Actor) -> Result<Attempt, StateError> {
        let db = &self.db;
        if !db.try_advisory_lock_shared(STATE_LOCK).map_err(|e| self.err(e))? {
            return Ok(Err(self.blocking_holder()?));
        }
        let info = LockInfo::new(operation, actor);
        // No exclusive holder is alive: an exclusive row left over is a dead one's.
        let taken = db.transaction(false, |db| -> Result<Option<LockInfo>, DbError> {
            let dead = db.query_opt(&format!("DELETE FROM lock RETURNING {LOCK_COLS}"), &[], LockInfo::from_row)?;
            insert_holder(db, "lock_shared", &info)?;
            Ok(dead)
        });
        match taken {
            Ok(took_over) => Ok(Ok((info, took_over))),
            Err(e) => {
                let _ = db.advisory_unlock_shared(STATE_LOCK);
                Err(self.err(e))
            }
        }
    }

    /// Who holds the PostgreSQL lock we could not take, as well as the rows tell.
    fn blocking_holder(&self) -> Result<LockInfo, StateError> {
        let exclusive = holder(&self.db, "lock").map_err(|e| self.err(e))?;
        let found = match exclusive {
            Some(h) => Some(h),
            None => holder(&self.db, "lock_shared").map_err(|e| self.err(e))?,
        };
        Ok(found.unwrap_or_else(LockInfo::unrecorded))
    }

    /// Removes the lock with this id (or a shared holder's row). Returns the
    /// removed lock, or `None` when no lock has that id. On PostgreSQL this
    /// removes the record only: a live holder keeps its session's lock.
    pub fn force_unlock(&self, id: &str) -> Result<Option<LockInfo>, StateError> {
        for table in ["lock", "lock_shared"] {
            let removed = self
                .db
                .query_opt(
                    &format!("DELETE FROM {table} WHERE id = ?1 RETURNING {LOCK_COLS}"),
                    params![id],
                    LockInfo::from_row,
                )
                .map_err(|e| self.err(e))?;
            if removed.is_some() {
                return Ok(removed);
            }
        }
        Ok(None)
    }
}

fn insert_holder(db: &Db, table: &str, info: &LockInfo) -> Result<(), DbError> {
    let one = if table == "lock" { "one, " } else { "" };
    let one_value = if table == "lock" { "1, " } else { "" };
    db.execute(
        &format!(
            r#"INSERT INTO {table} ({one}id, operation, "user", host, pid, started_at) VALUES ({one_value}?1, ?2, ?3, ?4, ?5, ?6)"#
        ),
        params![&info.id, &info.operation, &info.user, &info.host, info.pid, &info.started_at],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_release_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateStore::open(dir.path()).unwrap();
        let b = StateStore::open(dir.path()).unwrap();
        let me = Actor::current("test");
        let g = a.lock("apply", &me, Duration::ZERO).unwrap();
        match b.lock("rollback", &me, Duration::from_millis(120)) {
            Err(LockError::Held(info)) => {
                assert_eq!(info.id, g.info.id);
                assert_eq!(info.operation, "apply");
                assert_eq!(info.pid, std::process::id());
            }
            other => panic!("expected a held lock, got {:?}", other.map(|g| g.info.clone())),
        }
        drop(g);
        assert!(b.lock("rollback", &me, Duration::ZERO).is_ok());
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let mut ghost = Actor::current("test");
        // A pid that cannot exist (above the kernel's pid_max limit).
        ghost.pid = 4_194_304 + 17;
        let g = s.lock("apply", &ghost, Duration::ZERO).unwrap();
        std::mem::forget(g); // as if the process was killed
        let me = Actor::current("test");
        let g2 = s.lock("apply", &me, Duration::ZERO).unwrap();
        assert_eq!(g2.took_over.as_ref().map(|h| h.pid), Some(ghost.pid));
    }

    #[test]
    fn force_unlock_needs_the_right_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let me = Actor::current("test");
        let g = s.lock("apply", &me, Duration::ZERO).unwrap();
        let id = g.info.id.clone();
        std::mem::forget(g);
        assert!(s.force_unlock("nope").unwrap().is_none());
        assert_eq!(s.force_unlock(&id).unwrap().unwrap().id, id);
        assert!(s.lock_info().unwrap().is_none());
    }

    #[test]
    fn on_sqlite_shared_is_exclusive_and_partitions_are_always_granted() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateStore::open(dir.path()).unwrap();
        let b = a.reopen().unwrap();
        let me = Actor::current("test");
        let g = a.lock_shared("replay", &me, Duration::ZERO).unwrap();
        assert!(matches!(b.lock_shared("replay", &me, Duration::ZERO), Err(LockError::Held(_))));
        assert!(matches!(b.lock("apply", &me, Duration::ZERO), Err(LockError::Held(_))));
        drop(g);
        let p = a.lock_partition(7).unwrap().expect("granted");
        assert_eq!(p.partition, 7);
        assert!(b.lock_partition(7).unwrap().is_some());
    }
}
