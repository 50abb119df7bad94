//! The state store: what stockshift has done to the target.
//!
//! One SQLite file, `state.db`, in the state folder (`--state DIR`, default
//! `.stockshift/` beside the plan). It holds:
//!
//! - `meta`: the lineage (a UUID fixed when the state is created) and the serial,
//!   which moves each time a new operation starts writing, so a plan made before
//!   it is known to be stale;
//! - `operations`: one row per apply, rollback, replay or fix: id, kind, plan
//!   hash, who, host, when, status and outcome counts;
//! - `intents`: the journal written *before* each batch of writes;
//! - `audit`: one row per write *after* it was attempted: key, before, after,
//!   outcome. Together with `intents` this is what lets a killed apply resume
//!   with nothing lost or doubled;
//! - `lock`: at most one row, the operation currently allowed to write;
//! - `reconcile_runs`, `drift`: each reconcile's figures and KPIs, and the drifted
//!   keys of the last one (what the admin page lists).

pub mod lock;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::provider::WriteOutcome;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("state store {path}: {message}")]
    Io { path: String, message: String },
}

/// Who is running stockshift: recorded with every operation and audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// The command line, e.g. `apply demo.plan.json`.
    pub command: String,
}

impl Actor {
    /// The current process.
    pub fn current(command: impl Into<String>) -> Actor {
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Actor { user, host, pid: std::process::id(), command: command.into() }
    }
}

/// The kinds of operation that write inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Apply,
    Rollback,
    Replay,
    Fix,
    Admin,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Apply => "apply",
            OpKind::Rollback => "rollback",
            OpKind::Replay => "replay",
            OpKind::Fix => "fix",
            OpKind::Admin => "admin",
        }
    }

    fn parse(s: &str) -> OpKind {
        match s {
            "rollback" => OpKind::Rollback,
            "replay" => OpKind::Replay,
            "fix" => OpKind::Fix,
            "admin" => OpKind::Admin,
            _ => OpKind::Apply,
        }
    }
}

/// One operation as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub id: String,
    pub kind: OpKind,
    pub plan_name: String,
    pub plan_sha256: String,
    /// SHA-256 of the plan document applied; the same document resumes the same operation.
    pub artifact_sha256: String,
    pub user: String,
    pub host: String,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `complete`, `partial` (conflicts or failures), `interrupted`.
    pub status: String,
    /// The serial this operation moved the state to.
    pub serial: u64,
    pub writes: u64,
    pub applied: u64,
    pub already_applied: u64,
    pub conflicts: u64,
    pub failed: u64,
    /// For a rollback: the operation it undoes.
    pub rollback_of: Option<String>,
    /// For an undone operation: the rollback that undid it.
    pub rolled_back_by: Option<String>,
}

/// One audited write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub at: String,
    pub op_id: String,
    pub kind: OpKind,
    pub user: String,
    pub host: String,
    pub command: String,
    pub seq: u64,
    pub sku: String,
    pub location: String,
    /// The value the write expected (`None`: the key was absent).
    pub before: Option<i64>,
    pub after: i64,
    /// `applied`, `already_applied`, `conflict`, `failed`.
    pub outcome: String,
    /// For a conflict: what the target held instead.
    pub found: Option<i64>,
    pub error: Option<String>,
    /// Why the operation was made, when it was given one (admin writes).
    pub reason: Option<String>,
}

/// A journaled batch of a killed operation without outcomes (see
/// [`StateStore::unfinished_intents`]).
#[derive(Debug, Clone)]
pub struct UnfinishedIntent {
    pub op_id: String,
    /// Sequence numbers of the batch without an outcome.
    pub missing: Vec<u64>,
    /// The batch's writes as journaled: (seq, sku, location, before, after); empty
    /// when the operation applied a saved plan file (then read them from `artifact_path`).
    pub writes: Vec<(u64, String, String, Option<i64>, i64)>,
    pub artifact_path: Option<String>,
}

/// A cutover run as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoverRow {
    pub id: String,
    pub plan_name: String,
    pub plan_sha256: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `passed`, `failed`, `rolled_back`.
    pub status: String,
    /// The last step finished successfully (0: none).
    pub step: u32,
    /// What the steps recorded so far (operation ids, the saved plan, KPIs).
    pub data: serde_json::Value,
}

/// One step of a cutover, as recorded and printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoverStep {
    pub step: u32,
    pub name: String,
    /// `ok`, `failed`, `skipped`.
    pub status: String,
    pub started_at: String,
    pub seconds: f64,
    pub detail: String,
}

/// What a new operation is about.
#[derive(Debug, Clone, Copy)]
pub struct NewOperation<'a> {
    pub plan_name: &'a str,
    pub plan_sha256: &'a str,
    /// SHA-256 of the plan document; the same document later resumes this operation.
    pub artifact_sha256: &'a str,
    pub writes: u64,
    pub rollback_of: Option<&'a str>,
}

/// A write to record in the audit log.
#[derive(Debug, Clone)]
pub struct WriteRecord<'a> {
    pub seq: u64,
    pub sku: &'a str,
    pub location: &'a str,
    pub before: Option<i64>,
    pub after: i64,
    pub outcome: &'a WriteOutcome,
}

/// Outcome counts of an operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub applied: u64,
    pub already_applied: u64,
    pub conflicts: u64,
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, o: &WriteOutcome) {
        match o {
            WriteOutcome::Applied => self.applied += 1,
            WriteOutcome::AlreadyApplied => self.already_applied += 1,
            WriteOutcome::Conflict { .. } => self.conflicts += 1,
            WriteOutcome::Failed { .. } => self.failed += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.applied + self.already_applied + self.conflicts + self.failed
    }
}

/// The outcome's name as stored.
pub fn outcome_name(o: &WriteOutcome) -> &'static str {
    match o {
        WriteOutcome::Applied => "applied",
        WriteOutcome::AlreadyApplied => "already_applied",
        WriteOutcome::Conflict { .. } => "conflict",
        WriteOutcome::Failed { .. } => "failed",
    }
}

/// The open state store.
pub struct StateStore {
    path: PathBuf,
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  plan_name TEXT NOT NULL,
  plan_sha256 TEXT NOT NULL,
  artifact_sha256 TEXT NOT NULL,
  user TEXT NOT NULL,
  host TEXT NOT NULL,
  command TEXT NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL,
  serial INTEGER NOT NULL,
  writes INTEGER NOT NULL DEFAULT 0,
  applied INTEGER NOT NULL DEFAULT 0,
  already_applied INTEGER NOT NULL DEFAULT 0,
  conflicts INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  rollback_of TEXT,
  rolled_back_by TEXT,
  snapshot TEXT,
  snapshot_sha256 TEXT,
  artifact_path TEXT,
  reason TEXT
);
CREATE INDEX IF NOT EXISTS operations_artifact ON operations (artifact_sha256);
CREATE TABLE IF NOT EXISTS intents (
  op_id TEXT NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  at TEXT NOT NULL,
  writes TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY (op_id, first_seq)
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  op_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  sku TEXT NOT NULL,
  location TEXT NOT NULL,
  before INTEGER,
  after INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  found INTEGER,
  error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_op_seq ON audit (op_id, seq);
CREATE INDEX IF NOT EXISTS audit_sku ON audit (sku);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gauges (name TEXT PRIMARY KEY, value REAL NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cutovers (
  id TEXT PRIMARY KEY,
  plan_name TEXT NOT NULL,
  plan_sha256 TEXT NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL,
  step INTEGER NOT NULL DEFAULT 0,
  data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS cutover_steps (
  cutover_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at TEXT NOT NULL,
  seconds REAL NOT NULL,
  detail TEXT NOT NULL,
  PRIMARY KEY (cutover_id, step)
);
CREATE TABLE IF NOT EXISTS reconcile_runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  plan_name TEXT NOT NULL,
  plan_sha256 TEXT NOT NULL,
  keys INTEGER NOT NULL,
  drifted INTEGER NOT NULL,
  drift_ratio REAL NOT NULL,
  seconds REAL NOT NULL,
  stored INTEGER NOT NULL,
  kpis TEXT NOT NULL DEFAULT '[]',
  breaches TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS drift (
  run_id INTEGER NOT NULL,
  sku TEXT NOT NULL,
  location TEXT NOT NULL,
  source INTEGER NOT NULL,
  target INTEGER,
  diff INTEGER NOT NULL,
  abs_diff INTEGER NOT NULL,
  cause TEXT NOT NULL,
  bundle INTEGER NOT NULL DEFAULT 0,
  orphan INTEGER NOT NULL DEFAULT 0,
  queued INTEGER NOT NULL DEFAULT 0,
  last_written INTEGER,
  fixed_by TEXT,
  PRIMARY KEY (run_id, sku, location)
);
CREATE INDEX IF NOT EXISTS drift_abs ON drift (run_id, abs_diff, sku, location);
CREATE TABLE IF NOT EXISTS lock (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  id TEXT NOT NULL,
  operation TEXT NOT NULL,
  user TEXT NOT NULL,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  started_at TEXT NOT NULL
);
";

/// Schema version of `state.db` (`PRAGMA user_version`).
const STATE_SCHEMA_VERSION: i64 = 1;

/// Now, as an RFC 3339 timestamp (UTC, seconds).
pub fn now() -> String {
    // Milliseconds: replay orders "settled before this snapshot" by these times.
    jiff::Timestamp::now().round(jiff::Unit::Millisecond).unwrap_or(jiff::Timestamp::now()).to_string()
}

impl StateStore {
    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite { path: self.path.display().to_string(), source }
    }

    /// Opens the store in `dir`, creating the folder, the file and a new lineage when absent.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StateError::Io { path: dir.display().to_string(), message: format!("cannot create: {e}") })?;
        let path = dir.join("state.db");
        let shown = path.display().to_string();
        let conn = Connection::open(&path).map_err(|source| StateError::Sqlite { path: shown.clone(), source })?;
        let store = StateStore { path, conn };
        store
            .conn
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;")
            .map_err(|e| store.err(e))?;
        store.conn.execute_batch(SCHEMA).map_err(|e| store.err(e))?;
        store.migrate()?;
        store
            .conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('lineage', ?1), ('serial', '0')",
                params![uuid::Uuid::new_v4().to_string()],
            )
            .map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// Brings a state file made by an earlier stockshift up to this schema
    /// (columns added since), and refuses one made by a newer stockshift.
    fn migrate(&self) -> Result<(), StateError> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        if version > STATE_SCHEMA_VERSION {
            return Err(StateError::Io {
                path: self.path.display().to_string(),
                message: format!(
                    "written by a newer stockshift (schema {version}, this one reads {STATE_SCHEMA_VERSION}); upgrade stockshift"
                ),
            });
        }
        let added: &[(&str, &str, &str)] = &[
            ("intents", "writes", "TEXT NOT NULL DEFAULT '[]'"),
            ("operations", "snapshot", "TEXT"),
            ("operations", "snapshot_sha256", "TEXT"),
            ("operations", "artifact_path", "TEXT"),
            ("operations", "reason", "TEXT"),
        ];
        for (table, column, decl) in added {
            let has: i64 = self
                .conn
                .query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", [table, column], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if has == 0 {
                self.conn
                    .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                    .map_err(|e| self.err(e))?;
            }
        }
        self.conn.execute_batch(&format!("PRAGMA user_version = {STATE_SCHEMA_VERSION}")).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Opens the store only if it exists (for `plan`, which must not create state).
    pub fn open_existing(dir: &Path) -> Result<Option<StateStore>, StateError> {
        if dir.join("state.db").is_file() { StateStore::open(dir).map(Some) } else { Ok(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The lineage and current serial.
    pub fn lineage_serial(&self) -> Result<(String, u64), StateError> {
        let get = |k: &str| -> Result<String, StateError> {
            self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0)).map_err(|e| self.err(e))
        };
        Ok((get("lineage")?, get("serial")?.parse().unwrap_or(0)))
    }

    /// Starts a new operation: moves the serial and records it as running.
    pub fn begin(&mut self, kind: OpKind, new: &NewOperation<'_>, actor: &Actor) -> Result<Operation, StateError> {
        let NewOperation { plan_name, plan_sha256, artifact_sha256, writes, rollback_of } = *new;
        let id = uuid::Uuid::new_v4().to_string();
        let started = now();
        let path = self.path.display().to_string();
        let fail = |source| StateError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(fail)?;
        let serial: u64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'serial'", [], |r| r.get::<_, String>(0))
            .map_err(fail)?
            .parse::<u64>()
            .unwrap_or(0)
            + 1;
        let run = || -> rusqlite::Result<()> {
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'serial'", [serial.to_string()])?;
            tx.execute("UPDATE operations SET status = 'interrupted' WHERE status = 'running'", [])?;
            tx.execute(
                "INSERT INTO operations (id, kind, plan_name, plan_sha256, artifact_sha256, user, host, command, started_at, status, serial, writes, rollback_of)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'running', ?10, ?11, ?12)",
                params![
                    id,
                    kind.as_str(),
                    plan_name,
                    plan_sha256,
                    artifact_sha256,
                    actor.user,
                    actor.host,
                    actor.command,
                    started,
                    serial as i64,
                    writes as i64,
                    rollback_of
                ],
            )?;
            Ok(())
        };
        run().map_err(fail)?;
        tx.commit().map_err(fail)?;
        self.operation(&id)?.ok_or_else(|| StateError::Io {
            path: self.path.display().to_string(),
            message: "operation vanished".into(),
        })
    }

    /// Marks an operation running again (a resume) without moving the serial.
    pub fn resume(&mut self, id: &str) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE operations SET status = 'running', finished_at = NULL WHERE id = ?1", [id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The operation that applied this exact plan document, if any.
    pub fn operation_for_artifact(&self, artifact_sha256: &str) -> Result<Option<Operation>, StateError> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM operations WHERE artifact_sha256 = ?1 ORDER BY serial DESC LIMIT 1",
                [artifact_sha256],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.operation(&id),
            None => Ok(None),
        }
    }

    /// The operation with the highest serial.
    pub fn last_operation(&self) -> Result<Option<Operation>, StateError> {
        let id: Option<String> = self
            .conn
            .query_row("SELECT id FROM operations ORDER BY serial DESC LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.operation(&id),
            None => Ok(None),
        }
    }

    fn row_to_op(r: &rusqlite::Row<'_>) -> rusqlite::Result<Operation> {
        Ok(Operation {
            id: r.get(0)?,
            kind: OpKind::parse(&r.get::<_, String>(1)?),
            plan_name: r.get(2)?,
            plan_sha256: r.get(3)?,
            artifact_sha256: r.get(4)?,
            user: r.get(5)?,
            host: r.get(6)?,
            command: r.get(7)?,
            started_at: r.get(8)?,
            finished_at: r.get(9)?,
            status: r.get(10)?,
            serial: r.get::<_, i64>(11)? as u64,
            writes: r.get::<_, i64>(12)? as u64,
            applied: r.get::<_, i64>(13)? as u64,
            already_applied: r.get::<_, i64>(14)? as u64,
            conflicts: r.get::<_, i64>(15)? as u64,
            failed: r.get::<_, i64>(16)? as u64,
            rollback_of: r.get(17)?,
            rolled_back_by: r.get(18)?,
        })
    }

    const OP_COLS: &'static str = "id, kind, plan_name, plan_sha256, artifact_sha256, user, host, command, started_at, finished_at, status, serial, writes, applied, already_applied, conflicts, failed, rollback_of, rolled_back_by";

    /// One operation by id (a unique prefix of the id is accepted).
    pub fn operation(&self, id: &str) -> Result<Option<Operation>, StateError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM operations WHERE id LIKE ?1 || '%' ORDER BY serial DESC LIMIT 2",
                Self::OP_COLS
            ))
            .map_err(|e| self.err(e))?;
        let ops: Vec<Operation> = stmt
            .query_map([id], Self::row_to_op)
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(if ops.len() == 1 { ops.into_iter().next() } else { ops.into_iter().find(|o| o.id == id) })
    }

    /// Every operation, newest first.
    pub fn operations(&self) -> Result<Vec<Operation>, StateError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {} FROM operations ORDER BY serial DESC", Self::OP_COLS))
            .map_err(|e| self.err(e))?;
        let ops = stmt
            .query_map([], Self::row_to_op)
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(ops)
    }

    /// The sequence numbers of an operation's writes that have an outcome.
    pub fn done_seqs(&self, op_id: &str) -> Result<Vec<u64>, StateError> {
        let mut stmt = self.conn.prepare("SELECT seq FROM audit WHERE op_id = ?1").map_err(|e| self.err(e))?;
        let v = stmt
            .query_map([op_id], |r| r.get::<_, i64>(0).map(|s| s as u64))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(v)
    }

    /// The writes of an operation that need no further attempt: applied, already
    /// applied, or refused as conflicts (conflicts are never retried blindly).
    pub fn done_seqs_final(&self, op_id: &str) -> Result<std::collections::HashSet<u64>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq FROM audit WHERE op_id = ?1 AND outcome IN ('applied', 'already_applied', 'conflict')")
            .map_err(|e| self.err(e))?;
        let v = stmt
            .query_map([op_id], |r| r.get::<_, i64>(0).map(|s| s as u64))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(v)
    }

    /// Journals the intent to write `first..=last` before the writes are made, with
    /// the writes themselves ([seq, sku, location, before, after] each), so an
    /// operation abandoned after a kill can still be accounted for.
    pub fn intent(
        &mut self,
        op_id: &str,
        first: u64,
        last: u64,
        writes: &[(u64, &str, &str, Option<i64>, i64)],
    ) -> Result<(), StateError> {
        let blob = serde_json::to_string(writes).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "INSERT OR REPLACE INTO intents (op_id, first_seq, last_seq, at, writes) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![op_id, first as i64, last as i64, now(), blob],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Batches journaled by operations still marked running (killed) that lack
    /// outcomes. Each comes with its writes when the journal holds them, else
    /// with the saved plan file the operation applied (its writes are there, by seq).
    pub fn unfinished_intents(&self) -> Result<Vec<UnfinishedIntent>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT i.op_id, i.first_seq, i.last_seq, i.writes, o.artifact_path FROM intents i JOIN operations o ON o.id = i.op_id
                 WHERE o.status = 'running'
                   AND (SELECT count(*) FROM audit a WHERE a.op_id = i.op_id AND a.seq BETWEEN i.first_seq AND i.last_seq)
                       < i.last_seq - i.first_seq + 1",
            )
            .map_err(|e| self.err(e))?;
        #[allow(clippy::type_complexity)]
        let rows: Vec<(String, i64, i64, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for (op_id, first, last, blob, artifact_path) in rows {
            let done: std::collections::HashSet<u64> = self.done_seqs(&op_id)?.into_iter().collect();
            let writes: Vec<(u64, String, String, Option<i64>, i64)> = serde_json::from_str(&blob).unwrap_or_default();
            let missing: Vec<u64> = (first as u64..=last as u64).filter(|s| !done.contains(s)).collect();
            let writes = writes.into_iter().filter(|w| !done.contains(&w.0)).collect();
            out.push(UnfinishedIntent { op_id, missing, writes, artifact_path });
        }
        Ok(out)
    }

    /// Records which saved plan file an operation applies.
    pub fn set_artifact_path(&mut self, op_id: &str, path: &str) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE operations SET artifact_path = ?2 WHERE id = ?1", params![op_id, path])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Closes a killed operation: `interrupted`, with the counts it has.
    pub fn mark_interrupted(&mut self, op_id: &str) -> Result<(), StateError> {
        let c = self.counts(op_id)?;
        self.conn
            .execute(
                "UPDATE operations SET status = 'interrupted', applied = ?2, already_applied = ?3, conflicts = ?4, failed = ?5 WHERE id = ?1",
                params![op_id, c.applied as i64, c.already_applied as i64, c.conflicts as i64, c.failed as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records the outcome of written batch, in one transaction.
    pub fn record(&mut self, op_id: &str, writes: &[WriteRecord<'_>]) -> Result<(), StateError> {
        let at = now();
        let path = self.path.display().to_string();
        let fail = |source| StateError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO audit (at, op_id, seq, sku, location, before, after, outcome, found, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(fail)?;
            for w in writes {
                let (found, error) = match w.outcome {
                    WriteOutcome::Conflict { found } => (*found, None),
                    WriteOutcome::Failed { message, .. } => (None, Some(message.as_str())),
                    _ => (None, None),
                };
                stmt.execute(params![
                    at,
                    op_id,
                    w.seq as i64,
                    w.sku,
                    w.location,
                    w.before,
                    w.after,
                    outcome_name(w.outcome),
                    found,
                    error
                ])
                .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(())
    }

    /// Outcome counts of an operation from its audit rows.
    pub fn counts(&self, op_id: &str) -> Result<Counts, StateError> {
        self.outcome_counts("SELECT outcome, count(*) FROM audit WHERE op_id = ?1 GROUP BY outcome", Some(op_id))
    }

    /// Outcome counts from a `SELECT outcome, count(*) ... GROUP BY outcome` query.
    fn outcome_counts(&self, sql: &str, op_id: Option<&str>) -> Result<Counts, StateError> {
        let mut c = Counts::default();
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64));
        let rows: Vec<(String, u64)> = match op_id {
            Some(id) => stmt.query_map([id], map).and_then(|rows| rows.collect()),
            None => stmt.query_map([], map).and_then(|rows| rows.collect()),
        }
        .map_err(|e| self.err(e))?;
        for (o, n) in rows {
            match o.as_str() {
                "applied" => c.applied = n,
                "already_applied" => c.already_applied = n,
                "conflict" => c.conflicts = n,
                _ => c.failed += n,
            }
        }
        Ok(c)
    }

    /// Closes an operation with its final counts.
    pub fn finish(&mut self, op_id: &str, counts: Counts) -> Result<(), StateError> {
        let status = if counts.conflicts + counts.failed > 0 { "partial" } else { "complete" };
        self.conn
            .execute(
                "UPDATE operations SET status = ?2, finished_at = ?3, applied = ?4, already_applied = ?5, conflicts = ?6, failed = ?7 WHERE id = ?1",
                params![
                    op_id,
                    status,
                    now(),
                    counts.applied as i64,
                    counts.already_applied as i64,
                    counts.conflicts as i64,
                    counts.failed as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records the source snapshot an apply used (a copy in the state folder).
    pub fn set_snapshot(&mut self, op_id: &str, path: &str, sha256: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE operations SET snapshot = ?2, snapshot_sha256 = ?3 WHERE id = ?1",
                params![op_id, path, sha256],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The source snapshot of the newest apply that recorded one and was not
    /// rolled back: (operation id, path, when that apply started).
    pub fn last_snapshot(&self) -> Result<Option<(String, String, String)>, StateError> {
        self.conn
            .query_row(
                "SELECT id, snapshot, started_at FROM operations
                 WHERE kind = 'apply' AND snapshot IS NOT NULL AND rolled_back_by IS NULL
                 ORDER BY serial DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Adds to a named counter (e.g. `oversells`), kept so any process can report it.
    pub fn bump_counter(&mut self, name: &str, by: u64) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = value + ?2",
                params![name, by as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets named gauges (the last reconcile's drift and duration) in one
    /// transaction, stamped with now, so `serve` can report them.
    pub fn set_gauges(&mut self, values: &[(&str, f64)]) -> Result<(), StateError> {
        let at = now();
        let path = self.path.display().to_string();
        let fail = |source| StateError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(fail)?;
        for (name, v) in values {
            tx.execute("INSERT OR REPLACE INTO gauges (name, value, at) VALUES (?1, ?2, ?3)", params![name, v, at])
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    /// Every named gauge: (name, value, when it was set).
    pub fn gauges(&self) -> Result<Vec<(String, f64, String)>, StateError> {
        let mut stmt = self.conn.prepare("SELECT name, value, at FROM gauges").map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A named counter's value (0 when never bumped).
    pub fn counter(&self, name: &str) -> Result<u64, StateError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Every audited write's outcome, counted over all operations.
    pub fn write_counts(&self) -> Result<Counts, StateError> {
        self.outcome_counts("SELECT outcome, count(*) FROM audit GROUP BY outcome", None)
    }

    /// A cutover run: its row, or `None`.
    pub fn cutover(&self, id: &str) -> Result<Option<CutoverRow>, StateError> {
        self.conn
            .query_row(
                "SELECT id, plan_name, plan_sha256, started_at, finished_at, status, step, data FROM cutovers WHERE id LIKE ?1 || '%' ORDER BY started_at DESC LIMIT 1",
                [id],
                Self::row_to_cutover,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest cutover still running (killed or in progress), if any.
    pub fn running_cutover(&self) -> Result<Option<CutoverRow>, StateError> {
        self.conn
            .query_row(
                "SELECT id, plan_name, plan_sha256, started_at, finished_at, status, step, data FROM cutovers WHERE status = 'running' ORDER BY started_at DESC LIMIT 1",
                [],
                Self::row_to_cutover,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn row_to_cutover(r: &rusqlite::Row<'_>) -> rusqlite::Result<CutoverRow> {
        Ok(CutoverRow {
            id: r.get(0)?,
            plan_name: r.get(1)?,
            plan_sha256: r.get(2)?,
            started_at: r.get(3)?,
            finished_at: r.get(4)?,
            status: r.get(5)?,
            step: r.get::<_, i64>(6)? as u32,
            data: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or(serde_json::Value::Null),
        })
    }

    /// Records a new cutover run.
    pub fn begin_cutover(&mut self, plan_name: &str, plan_sha256: &str) -> Result<CutoverRow, StateError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.conn
            .execute(
                "INSERT INTO cutovers (id, plan_name, plan_sha256, started_at, status) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![id, plan_name, plan_sha256, now()],
            )
            .map_err(|e| self.err(e))?;
        self.cutover(&id)?
            .ok_or_else(|| StateError::Io { path: self.path.display().to_string(), message: "cutover vanished".into() })
    }

    /// Records a finished step (and the run's data so far) in one transaction.
    pub fn cutover_step(&mut self, id: &str, step: &CutoverStep, data: &serde_json::Value) -> Result<(), StateError> {
        let path = self.path.display().to_string();
        let fail = |source| StateError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(fail)?;
        tx.execute(
            "INSERT OR REPLACE INTO cutover_steps (cutover_id, step, name, status, started_at, seconds, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, step.step, step.name, step.status, step.started_at, step.seconds, step.detail],
        )
        .map_err(fail)?;
        let advance = if step.status == "ok" { step.step } else { 0 };
        tx.execute(
            "UPDATE cutovers SET step = max(step, ?2), data = ?3 WHERE id = ?1",
            params![id, advance, data.to_string()],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(())
    }

    /// The steps recorded for a cutover, in order.
    pub fn cutover_steps(&self, id: &str) -> Result<Vec<CutoverStep>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT step, name, status, started_at, seconds, detail FROM cutover_steps WHERE cutover_id = ?1 ORDER BY step")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(CutoverStep {
                    step: r.get::<_, i64>(0)? as u32,
                    name: r.get(1)?,
                    status: r.get(2)?,
                    started_at: r.get(3)?,
                    seconds: r.get(4)?,
                    detail: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Closes a cutover run with its final status (`passed`, `failed`, `rolled_back`).
    pub fn finish_cutover(&mut self, id: &str, status: &str, data: &serde_json::Value) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE cutovers SET status = ?2, finished_at = ?3, data = ?4 WHERE id = ?1",
                params![id, status, now(), data.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Notes that `op_id` was undone by rollback `by`.
    pub fn mark_rolled_back(&mut self, op_id: &str, by: &str) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE operations SET rolled_back_by = ?2 WHERE id = ?1", params![op_id, by])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Audit records, oldest first, optionally for one SKU and/or one operation.
    pub fn audit(&self, sku: Option<&str>, op_id: Option<&str>) -> Result<Vec<AuditRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.at, a.op_id, o.kind, o.user, o.host, o.command, a.seq, a.sku, a.location, a.before, a.after, a.outcome, a.found, a.error, o.reason
                 FROM audit a JOIN operations o ON o.id = a.op_id
                 WHERE (?1 IS NULL OR a.sku = ?1) AND (?2 IS NULL OR a.op_id LIKE ?2 || '%')
                 ORDER BY a.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sku, op_id], Self::row_to_audit)
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    fn row_to_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
        Ok(AuditRecord {
            at: r.get(0)?,
            op_id: r.get(1)?,
            kind: OpKind::parse(&r.get::<_, String>(2)?),
            user: r.get(3)?,
            host: r.get(4)?,
            command: r.get(5)?,
            seq: r.get::<_, i64>(6)? as u64,
            sku: r.get(7)?,
            location: r.get(8)?,
            before: r.get(9)?,
            after: r.get(10)?,
            outcome: r.get(11)?,
            found: r.get(12)?,
            error: r.get(13)?,
            reason: r.get(14)?,
        })
    }

    /// The writes an operation made (outcome `applied`), in order.
    pub fn applied_writes(&self, op_id: &str) -> Result<Vec<AuditRecord>, StateError> {
        Ok(self.audit(None, Some(op_id))?.into_iter().filter(|a| a.op_id == op_id && a.outcome == "applied").collect())
    }

    /// The newest `limit` audit records of one operation kind, newest first.
    pub fn recent_audit(&self, kind: OpKind, limit: u64) -> Result<Vec<AuditRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.at, a.op_id, o.kind, o.user, o.host, o.command, a.seq, a.sku, a.location, a.before, a.after, a.outcome, a.found, a.error, o.reason
                 FROM audit a JOIN operations o ON o.id = a.op_id
                 WHERE o.kind = ?1 ORDER BY a.id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![kind.as_str(), limit.min(i64::MAX as u64) as i64], Self::row_to_audit)
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The newest operation of a kind.
    pub fn last_operation_of(&self, kind: OpKind) -> Result<Option<Operation>, StateError> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM operations WHERE kind = ?1 ORDER BY serial DESC LIMIT 1", Self::OP_COLS),
                [kind.as_str()],
                Self::row_to_op,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records why an operation was made (admin writes require a reason).
    pub fn set_reason(&mut self, op_id: &str, reason: &str) -> Result<(), StateError> {
        self.conn
            .execute("UPDATE operations SET reason = ?2 WHERE id = ?1", params![op_id, reason])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a reconcile and its drifted keys (at most `drift.len()`; the caller
    /// caps them) in one transaction. Only the newest run keeps its drifted keys:
    /// older runs keep their figures. Returns the run's id.
    pub fn save_reconcile(&mut self, run: &NewReconcileRun<'_>, drift: &[DriftRow]) -> Result<i64, StateError> {
        let path = self.path.display().to_string();
        let fail = |source| StateError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(fail)?;
        tx.execute(
            "INSERT INTO reconcile_runs (at, plan_name, plan_sha256, keys, drifted, drift_ratio, seconds, stored, kpis, breaches)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                now(),
                run.plan_name,
                run.plan_sha256,
                run.keys.min(i64::MAX as u64) as i64,
                run.drifted.min(i64::MAX as u64) as i64,
                run.drift_ratio,
                run.seconds,
                drift.len() as i64,
                run.kpis.to_string(),
                run.breaches.to_string()
            ],
        )
        .map_err(fail)?;
        let id = tx.last_insert_rowid();
        tx.execute("DELETE FROM drift WHERE run_id <> ?1", [id]).map_err(fail)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO drift (run_id, sku, location, source, target, diff, abs_diff, cause, bundle, orphan, queued, last_written)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(fail)?;
            for d in drift {
                stmt.execute(params![
                    id,
                    d.sku,
                    d.location,
                    d.source,
                    d.target,
                    d.diff,
                    d.diff.unsigned_abs().min(i64::MAX as u64) as i64,
                    d.cause,
                    d.bundle,
                    d.orphan,
                    d.queued,
                    d.last_written
                ])
                .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(id)
    }

    /// The newest reconcile run, if any.
    pub fn last_reconcile(&self) -> Result<Option<ReconcileRun>, StateError> {
        self.conn
            .query_row(
                "SELECT id, at, plan_name, plan_sha256, keys, drifted, drift_ratio, seconds, stored, kpis, breaches
                 FROM reconcile_runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(ReconcileRun {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        plan_name: r.get(2)?,
                        plan_sha256: r.get(3)?,
                        keys: r.get::<_, i64>(4)?.max(0) as u64,
                        drifted: r.get::<_, i64>(5)?.max(0) as u64,
                        drift_ratio: r.get(6)?,
                        seconds: r.get(7)?,
                        stored: r.get::<_, i64>(8)?.max(0) as u64,
                        kpis: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
                        breaches: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default(),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// One page of a run's drifted keys, and how many match the search in all.
    /// `search` matches a substring of the SKU (case-insensitive for ASCII). The
    /// page is read with LIMIT/OFFSET over an index-ordered query, so memory does
    /// not grow with the number of keys.
    pub fn drift_page(&self, q: &DriftQuery<'_>) -> Result<(u64, Vec<DriftRow>), StateError> {
        let pattern = q.search.filter(|s| !s.is_empty()).map(|s| {
            let escaped = s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let filter = "run_id = ?1 AND (?2 IS NULL OR sku LIKE ?2 ESCAPE '\\')";
        let total: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM drift WHERE {filter}"), params![q.run_id, pattern], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let dir = if q.descending { "DESC" } else { "ASC" };
        let order = match q.sort {
            DriftSort::Sku => format!("sku {dir}, location {dir}"),
            DriftSort::Location => format!("location {dir}, sku {dir}"),
            DriftSort::Source => format!("source {dir}, sku, location"),
            DriftSort::Target => format!("target {dir}, sku, location"),
            DriftSort::Diff => format!("diff {dir}, sku, location"),
            DriftSort::AbsDiff => format!("abs_diff {dir}, sku {dir}, location {dir}"),
            DriftSort::Cause => format!("cause {dir}, sku, location"),
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {DRIFT_COLS} FROM drift WHERE {filter} ORDER BY {order} LIMIT ?3 OFFSET ?4"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![q.run_id, pattern, q.limit.min(i64::MAX as u64) as i64, q.offset.min(i64::MAX as u64) as i64],
                row_to_drift,
            )
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok((total.max(0) as u64, rows))
    }

    /// One drifted key of a run.
    pub fn drift_row(&self, run_id: i64, sku: &str, location: &str) -> Result<Option<DriftRow>, StateError> {
        self.conn
            .query_row(
                &format!("SELECT {DRIFT_COLS} FROM drift WHERE run_id = ?1 AND sku = ?2 AND location = ?3"),
                params![run_id, sku, location],
                row_to_drift,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Notes that a drifted key was fixed by an operation (the admin page's fix).
    pub fn mark_drift_fixed(&mut self, run_id: i64, sku: &str, location: &str, op_id: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE drift SET fixed_by = ?4 WHERE run_id = ?1 AND sku = ?2 AND location = ?3",
                params![run_id, sku, location, op_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

const DRIFT_COLS: &str = "sku, location, source, target, diff, cause, bundle, orphan, queued, last_written, fixed_by";

fn row_to_drift(r: &rusqlite::Row<'_>) -> rusqlite::Result<DriftRow> {
    Ok(DriftRow {
        sku: r.get(0)?,
        location: r.get(1)?,
        source: r.get(2)?,
        target: r.get(3)?,
        diff: r.get(4)?,
        cause: r.get(5)?,
        bundle: r.get(6)?,
        orphan: r.get(7)?,
        queued: r.get(8)?,
        last_written: r.get(9)?,
        fixed_by: r.get(10)?,
    })
}

/// A reconcile to record (see [`StateStore::save_reconcile`]).
#[derive(Debug, Clone)]
pub struct NewReconcileRun<'a> {
    pub plan_name: &'a str,
    pub plan_sha256: &'a str,
    pub keys: u64,
    pub drifted: u64,
    pub drift_ratio: f64,
    pub seconds: f64,
    /// The KPIs as shown to people: `[{"name","label","value","threshold","status","note"}]`.
    pub kpis: serde_json::Value,
    /// The breach messages: `["drift ratio 1.00% is over ..."]`.
    pub breaches: serde_json::Value,
}

/// A recorded reconcile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileRun {
    pub id: i64,
    pub at: String,
    pub plan_name: String,
    pub plan_sha256: String,
    pub keys: u64,
    pub drifted: u64,
    pub drift_ratio: f64,
    pub seconds: f64,
    /// Drifted keys kept in the `drift` table (fewer than `drifted` when capped).
    pub stored: u64,
    pub kpis: serde_json::Value,
    pub breaches: serde_json::Value,
}

/// One drifted key as recorded by a reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftRow {
    pub sku: String,
    pub location: String,
    /// The mapped source's quantity.
    pub source: i64,
    /// The target's quantity as read; `None` when absent.
    pub target: Option<i64>,
    /// `source - target` (absent counts as 0).
    pub diff: i64,
    /// `target_changed`, `source_moved`, `never_written`.
    pub cause: String,
    pub bundle: bool,
    pub orphan: bool,
    pub queued: bool,
    pub last_written: Option<i64>,
    /// The operation that fixed the key since (admin page), if any.
    pub fixed_by: Option<String>,
}

/// How to order drifted keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftSort {
    Sku,
    Location,
    Source,
    Target,
    Diff,
    /// |diff|, the default (largest first when descending).
    AbsDiff,
    Cause,
}

/// A page of drifted keys to read.
#[derive(Debug, Clone, Copy)]
pub struct DriftQuery<'a> {
    pub run_id: i64,
    /// A substring of the SKU.
    pub search: Option<&'a str>,
    pub sort: DriftSort,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_state_file_gains_the_new_columns_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("state.db")).unwrap();
        c.execute_batch("CREATE TABLE intents (op_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, at TEXT NOT NULL, PRIMARY KEY (op_id, first_seq));").unwrap();
        drop(c);
        let mut s = StateStore::open(dir.path()).unwrap();
        s.intent("op", 0, 0, &[(0, "A", "W", None, 1)]).unwrap();
        drop(s);
        let c = Connection::open(dir.path().join("state.db")).unwrap();
        c.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(c);
        let e = StateStore::open(dir.path()).err().expect("refused").to_string();
        assert!(e.contains("newer stockshift"), "{e}");
    }

    #[test]
    fn an_older_operations_table_gains_the_reason_column() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("state.db")).unwrap();
        c.execute_batch(&SCHEMA.replace("  artifact_path TEXT,\n  reason TEXT\n", "  artifact_path TEXT\n")).unwrap();
        drop(c);
        let mut s = StateStore::open(dir.path()).unwrap();
        let new = NewOperation { plan_name: "p", plan_sha256: "a", artifact_sha256: "b", writes: 1, rollback_of: None };
        let op = s.begin(OpKind::Admin, &new, &Actor::current("admin")).unwrap();
        s.set_reason(&op.id, "shelf count").unwrap();
        let rec =
            WriteRecord { seq: 0, sku: "A", location: "W", before: Some(1), after: 2, outcome: &WriteOutcome::Applied };
        s.record(&op.id, &[rec]).unwrap();
        let a = &s.audit(Some("A"), None).unwrap()[0];
        assert_eq!((a.kind, a.reason.as_deref(), a.command.as_str()), (OpKind::Admin, Some("shelf count"), "admin"));
        assert_eq!(s.recent_audit(OpKind::Admin, 5).unwrap().len(), 1);
        assert_eq!(s.last_operation_of(OpKind::Admin).unwrap().unwrap().id, op.id);
        assert!(s.last_operation_of(OpKind::Apply).unwrap().is_none());
    }

    #[test]
    fn only_the_newest_reconcile_keeps_its_drift_and_pages_read_it_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        let row = |sku: &str, diff: i64| DriftRow {
            sku: sku.into(),
            location: "W".into(),
            source: diff,
            target: Some(0),
            diff,
            cause: "never_written".into(),
            bundle: false,
            orphan: false,
            queued: false,
            last_written: None,
            fixed_by: None,
        };
        let run = |drifted| NewReconcileRun {
            plan_name: "p",
            plan_sha256: "a",
            keys: 10,
            drifted,
            drift_ratio: drifted as f64 / 10.0,
            seconds: 0.1,
            kpis: serde_json::json!([]),
            breaches: serde_json::json!([]),
        };
        let first = s.save_reconcile(&run(1), &[row("OLD", 1)]).unwrap();
        let rows = [row("A-1", 5), row("A_2", -9), row("B%3", 2), row("C", 0)];
        let id = s.save_reconcile(&run(4), &rows).unwrap();
        assert!(id > first);
        let last = s.last_reconcile().unwrap().unwrap();
        assert_eq!((last.id, last.drifted, last.stored), (id, 4, 4));
        assert!(s.drift_row(first, "OLD", "W").unwrap().is_none(), "older runs keep no keys");
        let q =
            DriftQuery { run_id: id, search: None, sort: DriftSort::AbsDiff, descending: true, offset: 0, limit: 2 };
        let (total, page) = s.drift_page(&q).unwrap();
        assert_eq!(total, 4);
        assert_eq!(page.iter().map(|r| r.sku.as_str()).collect::<Vec<_>>(), ["A_2", "A-1"]);
        let (_, page) = s.drift_page(&DriftQuery { offset: 2, ..q }).unwrap();
        assert_eq!(page.iter().map(|r| r.sku.as_str()).collect::<Vec<_>>(), ["B%3", "C"]);
        // LIKE wildcards in the search are literal; the search ignores ASCII case.
        let find = |text| {
            let (n, rows) =
                s.drift_page(&DriftQuery { search: Some(text), sort: DriftSort::Sku, descending: false, ..q }).unwrap();
            (n, rows.into_iter().map(|r| r.sku).collect::<Vec<_>>())
        };
        assert_eq!(find("_"), (1, vec!["A_2".to_string()]));
        assert_eq!(find("%"), (1, vec!["B%3".to_string()]));
        assert_eq!(find("a"), (2, vec!["A-1".to_string(), "A_2".to_string()]));
        s.mark_drift_fixed(id, "C", "W", "op-1").unwrap();
        assert_eq!(s.drift_row(id, "C", "W").unwrap().unwrap().fixed_by.as_deref(), Some("op-1"));
    }

    #[test]
    fn lineage_is_stable_and_serial_moves_per_operation() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        let (lineage, serial) = s.lineage_serial().unwrap();
        assert_eq!(serial, 0);
        let actor = Actor::current("test");
        let new = NewOperation { plan_name: "p", plan_sha256: "a", artifact_sha256: "b", writes: 2, rollback_of: None };
        let op = s.begin(OpKind::Apply, &new, &actor).unwrap();
        assert_eq!(op.serial, 1);
        assert_eq!(op.status, "running");
        s.record(
            &op.id,
            &[
                WriteRecord {
                    seq: 0,
                    sku: "A",
                    location: "W",
                    before: Some(1),
                    after: 2,
                    outcome: &WriteOutcome::Applied,
                },
                WriteRecord {
                    seq: 1,
                    sku: "B",
                    location: "W",
                    before: None,
                    after: 2,
                    outcome: &WriteOutcome::Conflict { found: Some(9) },
                },
            ],
        )
        .unwrap();
        let c = s.counts(&op.id).unwrap();
        assert_eq!((c.applied, c.conflicts), (1, 1));
        s.finish(&op.id, c).unwrap();
        drop(s);
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.lineage_serial().unwrap(), (lineage, 1));
        let op2 = s.operation(&op.id[..8]).unwrap().unwrap();
        assert_eq!(op2.status, "partial");
        assert_eq!(s.audit(Some("B"), None).unwrap()[0].found, Some(9));
        assert_eq!(s.done_seqs(&op.id).unwrap().len(), 2);
        assert_eq!(s.operation_for_artifact("b").unwrap().unwrap().id, op.id);
    }
}
