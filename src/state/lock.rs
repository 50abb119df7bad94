//! The state lock: one writing operation (apply, rollback, replay, fix) at a
//! time per state.
//!
//! The lock is a row in `state.db`, taken in an immediate transaction so two
//! processes cannot both see it free. It records who holds it so a refusal can
//! say so. A lock whose holder process is gone (same host, pid no longer alive)
//! is taken over instead of blocking forever; `stockshift force-unlock ID`
//! removes any lock by its id. [`LockGuard`] releases the lock when dropped, so
//! every return path, error or not, releases it.

use std::time::{Duration, Instant};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{Actor, StateError, StateStore, now};

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

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the state is locked by another operation\n\n{0}\n\nWait for it to finish, pass --lock-timeout to wait, or if that process is gone, run `stockshift force-unlock {id}`.", id = .0.id)]
    Held(Box<LockInfo>),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Releases the lock when dropped.
pub struct LockGuard<'a> {
    store: &'a StateStore,
    pub info: LockInfo,
    /// Set when a dead holder's lock was taken over.
    pub took_over: Option<LockInfo>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.store.conn().execute("DELETE FROM lock WHERE id = ?1", [&self.info.id]);
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

impl StateStore {
    /// The current lock holder, if any.
    pub fn lock_info(&self) -> Result<Option<LockInfo>, StateError> {
        self.conn()
            .query_row("SELECT id, operation, user, host, pid, started_at FROM lock", [], |r| {
                Ok(LockInfo {
                    id: r.get(0)?,
                    operation: r.get(1)?,
                    user: r.get(2)?,
                    host: r.get(3)?,
                    pid: r.get::<_, i64>(4)? as u32,
                    started_at: r.get(5)?,
                })
            })
            .optional()
            .map_err(|source| StateError::Sqlite { path: self.path().display().to_string(), source })
    }

    /// Takes the lock for `operation`, waiting up to `timeout` for a live holder.
    pub fn lock(&self, operation: &str, actor: &Actor, timeout: Duration) -> Result<LockGuard<'_>, LockError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.try_lock(operation, actor)? {
                Ok((info, took_over)) => return Ok(LockGuard { store: self, info, took_over }),
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

    #[allow(clippy::type_complexity)]
    fn try_lock(
        &self,
        operation: &str,
        actor: &Actor,
    ) -> Result<Result<(LockInfo, Option<LockInfo>), LockInfo>, StateError> {
        let fail = |source| StateError::Sqlite { path: self.path().display().to_string(), source };
        let conn = self.conn();
        // An immediate transaction: no other writer can take the lock between our read and insert.
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(fail)?;
        let held = self.lock_info()?;
        let mut took_over = None;
        if let Some(h) = held {
            if !holder_is_gone(&h, &actor.host) {
                return Ok(Err(h));
            }
            tx.execute("DELETE FROM lock", []).map_err(fail)?;
            took_over = Some(h);
        }
        let info = LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_owned(),
            user: actor.user.clone(),
            host: actor.host.clone(),
            pid: actor.pid,
            started_at: now(),
        };
        tx.execute(
            "INSERT INTO lock (one, id, operation, user, host, pid, started_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
            params![info.id, info.operation, info.user, info.host, info.pid as i64, info.started_at],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(Ok((info, took_over)))
    }

    /// Removes the lock with this id. Returns the removed lock, or `None` when no lock has that id.
    pub fn force_unlock(&self, id: &str) -> Result<Option<LockInfo>, StateError> {
        let held = self.lock_info()?;
        match held {
            Some(h) if h.id == id => {
                self.conn()
                    .execute("DELETE FROM lock WHERE id = ?1", [id])
                    .map_err(|source| StateError::Sqlite { path: self.path().display().to_string(), source })?;
                Ok(Some(h))
            }
            _ => Ok(None),
        }
    }
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
}
