//! The state store: what stockshift has done to the target.
//!
//! Two backends, one set of rules. By default it is one SQLite file,
//! `state.db`, in the state folder (`--state DIR`, default `.stockshift/` beside
//! the plan). With `state: { backend: postgres, url_env: VAR }` in the plan the
//! same tables live in the schema `stockshift_state` of the PostgreSQL database
//! whose URL is in `$VAR`, so several machines share one state; the state folder
//! then only holds local files (saved source snapshots, cutover reports). Every
//! statement goes through [`crate::db::Db`], so the journal, audit, serial,
//! resume and lock rules below are written once; [`schema`] holds the DDL of
//! both engines. It holds:
//!
//! - `meta`: the lineage (a UUID fixed when the state is created) and the serial,
//!   which moves each time a new operation starts writing, so a plan made before
//!   it is known to be stale (and, on PostgreSQL, the schema version);
//! - `operations`: one row per apply, rollback, replay or fix: id, kind, plan
//!   hash, who, host, when, status and outcome counts, and the scope it owns;
//! - `intents`: the journal written *before* each batch of writes;
//! - `audit`: one row per write *after* it was attempted: key, before, after,
//!   outcome. Together with `intents` this is what lets a killed apply resume
//!   with nothing lost or doubled;
//! - `lock`, `lock_shared`: who holds the state lock (see [`lock`]);
//! - `reconcile_runs`, `drift`: each reconcile's figures and KPIs, and the drifted
//!   keys of the last one (what the admin page lists).
//!
//! The PostgreSQL URL is a secret: it is never printed or stored. Messages name
//! the store `(postgres $VAR)`.

pub mod lock;
pub mod schema;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::db::{Db, DbError, Row, StoreAt, Value, params};
use crate::provider::WriteOutcome;
use schema::{POSTGRES_SCHEMA, STATE_SCHEMA_VERSION};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A statement failed. `path` is the file (SQLite) or `(postgres $VAR)`;
    /// never a URL.
    #[error("state store {path}: {source}")]
    Db { path: String, source: DbError },
    #[error("state store {path}: {message}")]
    Io { path: String, message: String },
    /// The plan's `state:` cannot be used (e.g. its `url_env` variable is unset).
    #[error("state store: {0}")]
    Config(DbError),
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
    /// The part of the state this operation owns (e.g. `replay/part/17`); `None`
    /// (the usual case) for a whole-state operation. See [`StateStore::begin_scoped`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
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
    /// SQLite: `<dir>/state.db`; PostgreSQL: the state folder.
    path: PathBuf,
    /// Where it lives (kept for [`StateStore::reopen`]).
    at: StoreAt,
    /// How messages name it: the file, or `(postgres $VAR)`.
    shown: String,
    db: Db,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateStore({})", self.shown)
    }
}

/// Now, as an RFC 3339 timestamp (UTC, seconds).
pub fn now() -> String {
    // Milliseconds: replay orders "settled before this snapshot" by these times.
    jiff::Timestamp::now().round(jiff::Unit::Millisecond).unwrap_or(jiff::Timestamp::now()).to_string()
}

/// Keys per round trip when PostgreSQL reads or writes rows in bulk (`unnest`).
const PG_CHUNK: usize = 10_000;

const OP_COLS: &str = r#"id, kind, plan_name, plan_sha256, artifact_sha256, "user", host, command, started_at, finished_at, status, serial, writes, applied, already_applied, conflicts, failed, rollback_of, rolled_back_by, scope"#;

const AUDIT_SELECT: &str = r#"SELECT a.at, a.op_id, o.kind, o."user", o.host, o.command, a.seq, a.sku, a.location, a.before, a.after, a.outcome, a.found, a.error, o.reason
 FROM audit a JOIN operations o ON o.id = a.op_id"#;

const CUTOVER_COLS: &str = "id, plan_name, plan_sha256, started_at, finished_at, status, step, data";

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl StateStore {
    fn err(&self, source: DbError) -> StateError {
        StateError::Db { path: self.shown.clone(), source }
    }

    /// Opens the SQLite store in `dir`, creating the folder, the file and a new
    /// lineage when absent.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        StateStore::open_at(&StoreAt::sqlite(dir))
    }

    /// Opens the SQLite store in `dir` only if it exists (for `plan`, which must
    /// not create state).
    pub fn open_existing(dir: &Path) -> Result<Option<StateStore>, StateError> {
        StateStore::open_existing_at(&StoreAt::sqlite(dir))
    }

    /// Opens the store where `at` says, creating it (tables, a new lineage) when
    /// absent and bringing an older one up to this schema. SQLite: `<dir>/state.db`.
    /// PostgreSQL: the schema `stockshift_state`, migrated in one transaction under
    /// the migration lock, so processes starting together do not race.
    pub fn open_at(at: &StoreAt) -> Result<StateStore, StateError> {
        let store = StateStore::connect(at)?;
        store.migrate()?;
        Ok(store)
    }

    /// [`StateStore::open_at`], but only when the store exists: SQLite, when the
    /// file does; PostgreSQL, when the schema has its tables. Creates nothing otherwise.
    pub fn open_existing_at(at: &StoreAt) -> Result<Option<StateStore>, StateError> {
        let Some(url) = &at.postgres else {
            return if at.dir.join("state.db").is_file() { StateStore::open_at(at).map(Some) } else { Ok(None) };
        };
        let shown = pg_shown(at);
        let fail = |source| StateError::Db { path: shown.clone(), source };
        let db = Db::postgres(url).map_err(fail)?;
        let meta = format!("{POSTGRES_SCHEMA}.meta");
        let exists = db.query_one("SELECT to_regclass(?1) IS NOT NULL", params![&meta], |r| Ok(r.i64(0)? != 0));
        if !exists.map_err(fail)? {
            return Ok(None);
        }
        db.batch(&format!("SET search_path TO {POSTGRES_SCHEMA}")).map_err(fail)?;
        let store = StateStore { path: at.dir.clone(), at: at.clone(), shown, db };
        store.make_dir()?;
        store.migrate()?;
        Ok(Some(store))
    }

    /// Opens the store a plan names (`state:`), with its local files in
    /// `--state DIR` (`over`) or `.stockshift/` beside the plan.
    pub fn open_for(plan: &crate::config::check::Plan, over: Option<&Path>) -> Result<StateStore, StateError> {
        StateStore::open_at(&plan.state_at(over).map_err(StateError::Config)?)
    }

    /// [`StateStore::open_for`], only when the store exists.
    pub fn open_existing_for(
        plan: &crate::config::check::Plan,
        over: Option<&Path>,
    ) -> Result<Option<StateStore>, StateError> {
        StateStore::open_existing_at(&plan.state_at(over).map_err(StateError::Config)?)
    }

    /// A second connection to the same store, e.g. to hold the lock on while
    /// this one writes (on PostgreSQL the lock belongs to that connection's session).
    pub fn reopen(&self) -> Result<StateStore, StateError> {
        StateStore::connect(&self.at)
    }

    /// A connection, without schema checks.
    fn connect(at: &StoreAt) -> Result<StateStore, StateError> {
        let store = match &at.postgres {
            None => {
                let path = at.dir.join("state.db");
                let shown = path.display().to_string();
                std::fs::create_dir_all(&at.dir).map_err(|e| StateError::Io {
                    path: at.dir.display().to_string(),
                    message: format!("cannot create: {e}"),
                })?;
                let conn = rusqlite::Connection::open(&path)
                    .map_err(|e| StateError::Db { path: shown.clone(), source: DbError::sqlite(e) })?;
                // Every statement is cached (Db::execute); the store has a few dozen.
                conn.set_prepared_statement_cache_capacity(64);
                let store = StateStore { path, at: at.clone(), shown, db: Db::sqlite(conn) };
                store
                    .db
                    .batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;")
                    .map_err(|e| store.err(e))?;
                store
            }
            Some(url) => {
                let shown = pg_shown(at);
                let db = Db::postgres_in_schema(url, POSTGRES_SCHEMA)
                    .map_err(|source| StateError::Db { path: shown.clone(), source })?;
                let store = StateStore { path: at.dir.clone(), at: at.clone(), shown, db };
                store.make_dir()?;
                store
            }
        };
        Ok(store)
    }

    fn make_dir(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.at.dir).map_err(|e| StateError::Io {
            path: self.at.dir.display().to_string(),
            message: format!("cannot create: {e}"),
        })
    }

    fn newer(&self, version: i64) -> StateError {
        StateError::Io {
            path: self.shown.clone(),
            message: format!(
                "written by a newer stockshift (schema {version}, this one reads {STATE_SCHEMA_VERSION}); upgrade stockshift"
            ),
        }
    }

    /// Creates the tables, brings a store made by an earlier stockshift up to
    /// this schema (columns added since), and refuses one made by a newer one.
    fn migrate(&self) -> Result<(), StateError> {
        let db = &self.db;
        let lineage = uuid::Uuid::new_v4().to_string();
        let seed = "INSERT INTO meta (key, value) VALUES ('lineage', ?1), ('serial', '0') ON CONFLICT (key) DO NOTHING";
        if !db.is_postgres() {
            let version = db.query_one("PRAGMA user_version", &[], |r| r.i64(0)).map_err(|e| self.err(e))?;
            if version > STATE_SCHEMA_VERSION {
                return Err(self.newer(version));
            }
            db.batch(schema::SQLITE).map_err(|e| self.err(e))?;
            for (table, column, decl) in schema::SQLITE_ADDED {
                let has = db
                    .query_one(
                        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
                        params![*table, *column],
                        |r| r.i64(0),
                    )
                    .map_err(|e| self.err(e))?;
                if has == 0 {
                    db.batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}")).map_err(|e| self.err(e))?;
                }
            }
            if version < STATE_SCHEMA_VERSION {
                db.batch(&format!("PRAGMA user_version = {STATE_SCHEMA_VERSION}")).map_err(|e| self.err(e))?;
            }
            db.execute(seed, params![&lineage]).map_err(|e| self.err(e))?;
            return Ok(());
        }
        // PostgreSQL: one transaction under the migration lock; the version is a meta row.
        let refused = db
            .transaction(false, |db| -> Result<Option<i64>, DbError> {
                db.migration_lock()?;
                let has_meta = db.query_one("SELECT to_regclass('meta') IS NOT NULL", &[], |r| Ok(r.i64(0)? != 0))?;
                let version = if has_meta {
                    db.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[], |r| r.text(0))?
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0)
                } else {
                    0
                };
                if version > STATE_SCHEMA_VERSION {
                    return Ok(Some(version));
                }
                if version == STATE_SCHEMA_VERSION {
                    return Ok(None); // up to date: no DDL, which would lock tables other sessions write
                }
                db.batch(schema::POSTGRES)?;
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![&STATE_SCHEMA_VERSION.to_string()],
                )?;
                db.execute(seed, params![&lineage])?;
                Ok(None)
            })
            .map_err(|e| self.err(e))?;
        match refused {
            Some(v) => Err(self.newer(v)),
            None => Ok(()),
        }
    }

    /// SQLite: the `state.db` file. PostgreSQL: the state folder (its local files).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state folder: saved source snapshots, cutover reports (and, with
    /// SQLite, `state.db`).
    pub fn dir(&self) -> &Path {
        &self.at.dir
    }

    /// How messages name this store: the SQLite file, or `(postgres $VAR)`.
    /// Never a URL.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the store is in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// The lineage and current serial.
    pub fn lineage_serial(&self) -> Result<(String, u64), StateError> {
        let get = |k: &str| -> Result<String, StateError> {
            self.db
                .query_one("SELECT value FROM meta WHERE key = ?1", params![k], |r| r.text(0))
                .map_err(|e| self.err(e))
        };
        Ok((get("lineage")?, get("serial")?.parse().unwrap_or(0)))
    }

    /// Starts a new whole-state operation: moves the serial and records it as running.
    pub fn begin(&mut self, kind: OpKind, new: &NewOperation<'_>, actor: &Actor) -> Result<Operation, StateError> {
        self.begin_scoped(kind, new, actor, None)
    }

    /// Starts a new operation that owns `scope` of the state (e.g.
    /// `replay/part/17`; `None`: all of it, as [`StateStore::begin`]). It moves the
    /// serial and marks operations of the same scope still `running` (killed) as
    /// `interrupted`; operations of other scopes, which other processes may be
    /// running, are left alone.
    pub fn begin_scoped(
        &mut self,
        kind: OpKind,
        new: &NewOperation<'_>,
        actor: &Actor,
        scope: Option<&str>,
    ) -> Result<Operation, StateError> {
        let NewOperation { plan_name, plan_sha256, artifact_sha256, writes, rollback_of } = *new;
        let id = uuid::Uuid::new_v4().to_string();
        let started = now();
        self.db
            .transaction(true, |db| -> Result<(), DbError> {
                // One statement: concurrent operations (PostgreSQL) each get their own serial.
                let serial = db
                    .query_one(
                        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'serial' RETURNING value",
                        &[],
                        |r| r.text(0),
                    )?
                    .parse::<i64>()
                    .unwrap_or(1);
                match scope {
                    None => db.execute(
                        "UPDATE operations SET status = 'interrupted' WHERE status = 'running' AND scope IS NULL",
                        &[],
                    )?,
                    Some(s) => db.execute(
                        "UPDATE operations SET status = 'interrupted' WHERE status = 'running' AND scope = ?1",
                        params![s],
                    )?,
                };
                db.execute(
                    r#"INSERT INTO operations (id, kind, plan_name, plan_sha256, artifact_sha256, "user", host, command, started_at, status, serial, writes, rollback_of, scope)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'running', ?10, ?11, ?12, ?13)"#,
                    params![
                        &id,
                        kind.as_str(),
                        plan_name,
                        plan_sha256,
                        artifact_sha256,
                        &actor.user,
                        &actor.host,
                        &actor.command,
                        &started,
                        serial,
                        i(writes),
                        rollback_of,
                        scope
                    ],
                )?;
                Ok(())
            })
            .map_err(|e| self.err(e))?;
        self.operation(&id)?
            .ok_or_else(|| StateError::Io { path: self.shown.clone(), message: "operation vanished".into() })
    }

    /// Marks an operation running again (a resume) without moving the serial.
    pub fn resume(&mut self, id: &str) -> Result<(), StateError> {
        self.db
            .execute("UPDATE operations SET status = 'running', finished_at = NULL WHERE id = ?1", params![id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The operation that applied this exact plan document, if any.
    pub fn operation_for_artifact(&self, artifact_sha256: &str) -> Result<Option<Operation>, StateError> {
        let id = self
            .db
            .query_opt(
                "SELECT id FROM operations WHERE artifact_sha256 = ?1 ORDER BY serial DESC LIMIT 1",
                params![artifact_sha256],
                |r| r.text(0),
            )
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.operation(&id),
            None => Ok(None),
        }
    }

    /// The operation with the highest serial.
    pub fn last_operation(&self) -> Result<Option<Operation>, StateError> {
        let id = self
            .db
            .query_opt("SELECT id FROM operations ORDER BY serial DESC LIMIT 1", &[], |r| r.text(0))
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.operation(&id),
            None => Ok(None),
        }
    }

    fn row_to_op(r: &Row<'_, '_>) -> Result<Operation, DbError> {
        Ok(Operation {
            id: r.text(0)?,
            kind: OpKind::parse(&r.text(1)?),
            plan_name: r.text(2)?,
            plan_sha256: r.text(3)?,
            artifact_sha256: r.text(4)?,
            user: r.text(5)?,
            host: r.text(6)?,
            command: r.text(7)?,
            started_at: r.text(8)?,
            finished_at: r.opt_text(9)?,
            status: r.text(10)?,
            serial: u(r.i64(11)?),
            writes: u(r.i64(12)?),
            applied: u(r.i64(13)?),
            already_applied: u(r.i64(14)?),
            conflicts: u(r.i64(15)?),
            failed: u(r.i64(16)?),
            rollback_of: r.opt_text(17)?,
            rolled_back_by: r.opt_text(18)?,
            scope: r.opt_text(19)?,
        })
    }

    /// One operation by id (a unique prefix of the id is accepted).
    pub fn operation(&self, id: &str) -> Result<Option<Operation>, StateError> {
        let ops = self
            .db
            .query(
                &format!("SELECT {OP_COLS} FROM operations WHERE id LIKE ?1 || '%' ORDER BY serial DESC LIMIT 2"),
                params![id],
                Self::row_to_op,
            )
            .map_err(|e| self.err(e))?;
        Ok(if ops.len() == 1 { ops.into_iter().next() } else { ops.into_iter().find(|o| o.id == id) })
    }

    /// Every operation, newest first.
    pub fn operations(&self) -> Result<Vec<Operation>, StateError> {
        self.db
            .query(&format!("SELECT {OP_COLS} FROM operations ORDER BY serial DESC"), &[], Self::row_to_op)
            .map_err(|e| self.err(e))
    }

    /// The sequence numbers of an operation's writes that have an outcome.
    pub fn done_seqs(&self, op_id: &str) -> Result<Vec<u64>, StateError> {
        self.db
            .query("SELECT seq FROM audit WHERE op_id = ?1", params![op_id], |r| r.i64(0).map(u))
            .map_err(|e| self.err(e))
    }

    /// The writes of an operation that need no further attempt: applied, already
    /// applied, or refused as conflicts (conflicts are never retried blindly).
    pub fn done_seqs_final(&self, op_id: &str) -> Result<std::collections::HashSet<u64>, StateError> {
        let v = self
            .db
            .query(
                "SELECT seq FROM audit WHERE op_id = ?1 AND outcome IN ('applied', 'already_applied', 'conflict')",
                params![op_id],
                |r| r.i64(0).map(u),
            )
            .map_err(|e| self.err(e))?;
        Ok(v.into_iter().collect())
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
        self.db
            .execute(
                "INSERT INTO intents (op_id, first_seq, last_seq, at, writes) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (op_id, first_seq) DO UPDATE SET last_seq = excluded.last_seq, at = excluded.at, writes = excluded.writes",
                params![op_id, i(first), i(last), &now(), &blob],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Batches journaled by whole-state operations still marked running (killed)
    /// that lack outcomes: [`StateStore::unfinished_intents_in`] with no scope.
    pub fn unfinished_intents(&self) -> Result<Vec<UnfinishedIntent>, StateError> {
        self.unfinished_intents_in(None)
    }

    /// Batches journaled by operations of `scope` (`None`: whole-state
    /// operations) still marked running (killed) that lack outcomes. Operations of
    /// other scopes are not included: another process may be running them. Each
    /// comes with its writes when the journal holds them, else with the saved plan
    /// file the operation applied (its writes are there, by seq).
    pub fn unfinished_intents_in(&self, scope: Option<&str>) -> Result<Vec<UnfinishedIntent>, StateError> {
        let owned = if scope.is_some() { "o.scope = ?1" } else { "o.scope IS NULL" };
        let sql = format!(
            "SELECT i.op_id, i.first_seq, i.last_seq, i.writes, o.artifact_path FROM intents i JOIN operations o ON o.id = i.op_id
             WHERE o.status = 'running' AND {owned}
               AND (SELECT count(*) FROM audit a WHERE a.op_id = i.op_id AND a.seq BETWEEN i.first_seq AND i.last_seq)
                   < i.last_seq - i.first_seq + 1"
        );
        let ps: Vec<Value<'_>> = scope.map(Value::Text).into_iter().collect();
        let rows = self
            .db
            .query(&sql, &ps, |r| Ok((r.text(0)?, r.i64(1)?, r.i64(2)?, r.text(3)?, r.opt_text(4)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for (op_id, first, last, blob, artifact_path) in rows {
            let done: std::collections::HashSet<u64> = self.done_seqs(&op_id)?.into_iter().collect();
            let writes: Vec<(u64, String, String, Option<i64>, i64)> = serde_json::from_str(&blob).unwrap_or_default();
            let missing: Vec<u64> = (u(first)..=u(last)).filter(|s| !done.contains(s)).collect();
            let writes = writes.into_iter().filter(|w| !done.contains(&w.0)).collect();
            out.push(UnfinishedIntent { op_id, missing, writes, artifact_path });
        }
        Ok(out)
    }

    /// The scopes of operations still marked running (killed, or running in
    /// another process), each once.
    pub fn running_scopes(&self) -> Result<Vec<String>, StateError> {
        self.db
            .query(
                "SELECT DISTINCT scope FROM operations WHERE status = 'running' AND scope IS NOT NULL ORDER BY scope",
                &[],
                |r| r.text(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records which saved plan file an operation applies.
    pub fn set_artifact_path(&mut self, op_id: &str, path: &str) -> Result<(), StateError> {
        self.db
            .execute("UPDATE operations SET artifact_path = ?2 WHERE id = ?1", params![op_id, path])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Closes a killed operation: `interrupted`, with the counts it has.
    pub fn mark_interrupted(&mut self, op_id: &str) -> Result<(), StateError> {
        let c = self.counts(op_id)?;
        self.db
            .execute(
                "UPDATE operations SET status = 'interrupted', applied = ?2, already_applied = ?3, conflicts = ?4, failed = ?5 WHERE id = ?1",
                params![op_id, i(c.applied), i(c.already_applied), i(c.conflicts), i(c.failed)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records the outcome of a written batch, in one transaction. A write
    /// recorded again (a retry of a failed one) replaces its row and becomes the
    /// newest.
    pub fn record(&mut self, op_id: &str, writes: &[WriteRecord<'_>]) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        let at = now();
        if self.db.is_postgres() {
            // One statement per batch: the rows travel as arrays.
            let mut seq = Vec::with_capacity(writes.len());
            let (mut sku, mut loc, mut outcome) = (Vec::new(), Vec::new(), Vec::new());
            let (mut before, mut after, mut found, mut error) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for w in writes {
                let (f, e) = detail(w);
                seq.push(i(w.seq));
                sku.push(w.sku);
                loc.push(w.location);
                before.push(w.before);
                after.push(w.after);
                outcome.push(outcome_name(w.outcome));
                found.push(f);
                error.push(e);
            }
            self.db
                .execute(
                    "INSERT INTO audit (at, op_id, seq, sku, location, before, after, outcome, found, error)
                     SELECT ?1, ?2, t.seq, t.sku, t.location, t.before, t.after, t.outcome, t.found, t.error
                     FROM unnest(?3::bigint[], ?4::text[], ?5::text[], ?6::bigint[], ?7::bigint[], ?8::text[], ?9::bigint[], ?10::text[])
                       AS t(seq, sku, location, before, after, outcome, found, error)
                     ON CONFLICT (op_id, seq) DO UPDATE SET id = nextval('audit_id_seq'), at = excluded.at,
                       sku = excluded.sku, location = excluded.location, before = excluded.before, after = excluded.after,
                       outcome = excluded.outcome, found = excluded.found, error = excluded.error",
                    &[
                        Value::Text(&at),
                        Value::Text(op_id),
                        Value::Ints(&seq),
                        Value::Texts(&sku),
                        Value::Texts(&loc),
                        Value::OptInts(&before),
                        Value::Ints(&after),
                        Value::Texts(&outcome),
                        Value::OptInts(&found),
                        Value::OptTexts(&error),
                    ],
                )
                .map_err(|e| self.err(e))?;
            return Ok(());
        }
        // SQLite: one statement prepared once per batch, run per row, in one
        // transaction. This is the hot path of a large apply, so it binds directly.
        let conn = self.db.as_sqlite().expect("not PostgreSQL, so SQLite");
        let run = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO audit (at, op_id, seq, sku, location, before, after, outcome, found, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for w in writes {
                    let (found, error) = detail(w);
                    let (seq, outcome) = (i(w.seq), outcome_name(w.outcome));
                    stmt.execute(rusqlite::params![
                        at, op_id, seq, w.sku, w.location, w.before, w.after, outcome, found, error
                    ])?;
                }
            }
            tx.commit()
        };
        run().map_err(|e| self.err(DbError::sqlite(e)))
    }

    /// Outcome counts of an operation from its audit rows.
    pub fn counts(&self, op_id: &str) -> Result<Counts, StateError> {
        self.outcome_counts("SELECT outcome, count(*) FROM audit WHERE op_id = ?1 GROUP BY outcome", Some(op_id))
    }

    /// Outcome counts from a `SELECT outcome, count(*) ... GROUP BY outcome` query.
    fn outcome_counts(&self, sql: &str, op_id: Option<&str>) -> Result<Counts, StateError> {
        let ps: Vec<Value<'_>> = op_id.map(Value::Text).into_iter().collect();
        let rows = self.db.query(sql, &ps, |r| Ok((r.text(0)?, u(r.i64(1)?)))).map_err(|e| self.err(e))?;
        let mut c = Counts::default();
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
        self.db
            .execute(
                "UPDATE operations SET status = ?2, finished_at = ?3, applied = ?4, already_applied = ?5, conflicts = ?6, failed = ?7 WHERE id = ?1",
                params![
                    op_id,
                    status,
                    &now(),
                    i(counts.applied),
                    i(counts.already_applied),
                    i(counts.conflicts),
                    i(counts.failed)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records the source snapshot an apply used (a copy in the state folder).
    pub fn set_snapshot(&mut self, op_id: &str, path: &str, sha256: &str) -> Result<(), StateError> {
        self.db
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
        self.db
            .query_opt(
                "SELECT id, snapshot, started_at FROM operations
                 WHERE kind = 'apply' AND snapshot IS NOT NULL AND rolled_back_by IS NULL
                 ORDER BY serial DESC LIMIT 1",
                &[],
                |r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// Adds to a named counter (e.g. `oversells`), kept so any process can report it.
    pub fn bump_counter(&mut self, name: &str, by: u64) -> Result<(), StateError> {
        self.db
            .execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                params![name, i(by)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets named gauges (the last reconcile's drift and duration) in one
    /// transaction, stamped with now, so `serve` can report them.
    pub fn set_gauges(&mut self, values: &[(&str, f64)]) -> Result<(), StateError> {
        let at = now();
        self.db
            .transaction(false, |db| -> Result<(), DbError> {
                for (name, v) in values {
                    db.execute(
                        "INSERT INTO gauges (name, value, at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at",
                        params![*name, *v, &at],
                    )?;
                }
                Ok(())
            })
            .map_err(|e| self.err(e))
    }

    /// Every named gauge: (name, value, when it was set).
    pub fn gauges(&self) -> Result<Vec<(String, f64, String)>, StateError> {
        self.db
            .query("SELECT name, value, at FROM gauges", &[], |r| Ok((r.text(0)?, r.f64(1)?, r.text(2)?)))
            .map_err(|e| self.err(e))
    }

    /// A named counter's value (0 when never bumped).
    pub fn counter(&self, name: &str) -> Result<u64, StateError> {
        let v = self
            .db
            .query_opt("SELECT value FROM counters WHERE name = ?1", params![name], |r| r.i64(0))
            .map_err(|e| self.err(e))?;
        Ok(u(v.unwrap_or(0)))
    }

    /// Every audited write's outcome, counted over all operations.
    pub fn write_counts(&self) -> Result<Counts, StateError> {
        self.outcome_counts("SELECT outcome, count(*) FROM audit GROUP BY outcome", None)
    }

    /// A cutover run: its row, or `None`.
    pub fn cutover(&self, id: &str) -> Result<Option<CutoverRow>, StateError> {
        self.db
            .query_opt(
                &format!(
                    "SELECT {CUTOVER_COLS} FROM cutovers WHERE id LIKE ?1 || '%' ORDER BY started_at DESC LIMIT 1"
                ),
                params![id],
                Self::row_to_cutover,
            )
            .map_err(|e| self.err(e))
    }

    /// The newest cutover still running (killed or in progress), if any.
    pub fn running_cutover(&self) -> Result<Option<CutoverRow>, StateError> {
        self.db
            .query_opt(
                &format!(
                    "SELECT {CUTOVER_COLS} FROM cutovers WHERE status = 'running' ORDER BY started_at DESC LIMIT 1"
                ),
                &[],
                Self::row_to_cutover,
            )
            .map_err(|e| self.err(e))
    }

    fn row_to_cutover(r: &Row<'_, '_>) -> Result<CutoverRow, DbError> {
        Ok(CutoverRow {
            id: r.text(0)?,
            plan_name: r.text(1)?,
            plan_sha256: r.text(2)?,
            started_at: r.text(3)?,
            finished_at: r.opt_text(4)?,
            status: r.text(5)?,
            step: r.i64(6)?.clamp(0, i64::from(u32::MAX)) as u32,
            data: serde_json::from_str(&r.text(7)?).unwrap_or(serde_json::Value::Null),
        })
    }

    /// Records a new cutover run.
    pub fn begin_cutover(&mut self, plan_name: &str, plan_sha256: &str) -> Result<CutoverRow, StateError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.db
            .execute(
                "INSERT INTO cutovers (id, plan_name, plan_sha256, started_at, status) VALUES (?1, ?2, ?3, ?4, 'running')",
                params![&id, plan_name, plan_sha256, &now()],
            )
            .map_err(|e| self.err(e))?;
        self.cutover(&id)?
            .ok_or_else(|| StateError::Io { path: self.shown.clone(), message: "cutover vanished".into() })
    }

    /// Records a finished step (and the run's data so far) in one transaction.
    pub fn cutover_step(&mut self, id: &str, step: &CutoverStep, data: &serde_json::Value) -> Result<(), StateError> {
        let advance = if step.status == "ok" { step.step } else { 0 };
        let data = data.to_string();
        self.db
            .transaction(false, |db| -> Result<(), DbError> {
                db.execute(
                    "INSERT INTO cutover_steps (cutover_id, step, name, status, started_at, seconds, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (cutover_id, step) DO UPDATE SET name = excluded.name, status = excluded.status,
                       started_at = excluded.started_at, seconds = excluded.seconds, detail = excluded.detail",
                    params![id, step.step, &step.name, &step.status, &step.started_at, step.seconds, &step.detail],
                )?;
                db.execute(
                    "UPDATE cutovers SET step = CASE WHEN step > ?2 THEN step ELSE ?2 END, data = ?3 WHERE id = ?1",
                    params![id, advance, &data],
                )?;
                Ok(())
            })
            .map_err(|e| self.err(e))
    }

    /// The steps recorded for a cutover, in order.
    pub fn cutover_steps(&self, id: &str) -> Result<Vec<CutoverStep>, StateError> {
        self.db
            .query(
                "SELECT step, name, status, started_at, seconds, detail FROM cutover_steps WHERE cutover_id = ?1 ORDER BY step",
                params![id],
                |r| {
                    Ok(CutoverStep {
                        step: r.i64(0)?.clamp(0, i64::from(u32::MAX)) as u32,
                        name: r.text(1)?,
                        status: r.text(2)?,
                        started_at: r.text(3)?,
                        seconds: r.f64(4)?,
                        detail: r.text(5)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }

    /// Closes a cutover run with its final status (`passed`, `failed`, `rolled_back`).
    pub fn finish_cutover(&mut self, id: &str, status: &str, data: &serde_json::Value) -> Result<(), StateError> {
        self.db
            .execute(
                "UPDATE cutovers SET status = ?2, finished_at = ?3, data = ?4 WHERE id = ?1",
                params![id, status, &now(), &data.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Notes that `op_id` was undone by rollback `by`.
    pub fn mark_rolled_back(&mut self, op_id: &str, by: &str) -> Result<(), StateError> {
        self.db
            .execute("UPDATE operations SET rolled_back_by = ?2 WHERE id = ?1", params![op_id, by])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Audit records, oldest first, optionally for one SKU and/or one operation.
    pub fn audit(&self, sku: Option<&str>, op_id: Option<&str>) -> Result<Vec<AuditRecord>, StateError> {
        let mut ps: Vec<Value<'_>> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        if let Some(s) = sku {
            ps.push(Value::Text(s));
            conds.push(format!("a.sku = ?{}", ps.len()));
        }
        if let Some(o) = op_id {
            ps.push(Value::Text(o));
            conds.push(format!("a.op_id LIKE ?{} || '%'", ps.len()));
        }
        let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
        self.db
            .query(&format!("{AUDIT_SELECT}{filter} ORDER BY a.id"), &ps, Self::row_to_audit)
            .map_err(|e| self.err(e))
    }

    fn row_to_audit(r: &Row<'_, '_>) -> Result<AuditRecord, DbError> {
        Ok(AuditRecord {
            at: r.text(0)?,
            op_id: r.text(1)?,
            kind: OpKind::parse(&r.text(2)?),
            user: r.text(3)?,
            host: r.text(4)?,
            command: r.text(5)?,
            seq: u(r.i64(6)?),
            sku: r.text(7)?,
            location: r.text(8)?,
            before: r.opt_i64(9)?,
            after: r.i64(10)?,
            outcome: r.text(11)?,
            found: r.opt_i64(12)?,
            error: r.opt_text(13)?,
            reason: r.opt_text(14)?,
        })
    }

    /// The writes an operation made (outcome `applied`), in order.
    pub fn applied_writes(&self, op_id: &str) -> Result<Vec<AuditRecord>, StateError> {
        Ok(self.audit(None, Some(op_id))?.into_iter().filter(|a| a.op_id == op_id && a.outcome == "applied").collect())
    }

    /// The newest `limit` audit records of one operation kind, newest first.
    pub fn recent_audit(&self, kind: OpKind, limit: u64) -> Result<Vec<AuditRecord>, StateError> {
        self.db
            .query(
                &format!("{AUDIT_SELECT} WHERE o.kind = ?1 ORDER BY a.id DESC LIMIT ?2"),
                params![kind.as_str(), i(limit)],
                Self::row_to_audit,
            )
            .map_err(|e| self.err(e))
    }

    /// The newest operation of a kind.
    pub fn last_operation_of(&self, kind: OpKind) -> Result<Option<Operation>, StateError> {
        self.db
            .query_opt(
                &format!("SELECT {OP_COLS} FROM operations WHERE kind = ?1 ORDER BY serial DESC LIMIT 1"),
                params![kind.as_str()],
                Self::row_to_op,
            )
            .map_err(|e| self.err(e))
    }

    /// Records why an operation was made (admin writes require a reason).
    pub fn set_reason(&mut self, op_id: &str, reason: &str) -> Result<(), StateError> {
        self.db
            .execute("UPDATE operations SET reason = ?2 WHERE id = ?1", params![op_id, reason])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The value stockshift last wrote to each key: the `after` of the newest
    /// audit row with outcome `applied` or `already_applied` (any operation kind).
    ///
    /// SQLite, few keys against a large audit log: one indexed lookup per key;
    /// many keys: one scan of the audit log in id order, keeping the newest row per
    /// wanted key. PostgreSQL: the keys travel as arrays, one indexed lookup each
    /// on the server, in chunks.
    pub fn last_written(&self, keys: &[(&str, &str)]) -> Result<Vec<Option<i64>>, StateError> {
        let rows =
            self.db.query_one("SELECT coalesce(max(id), 0) FROM audit", &[], |r| r.i64(0)).map_err(|e| self.err(e))?;
        let mut out = vec![None; keys.len()];
        if rows == 0 || keys.is_empty() {
            return Ok(out);
        }
        const WRITTEN: &str = "outcome IN ('applied', 'already_applied')";
        let Some(conn) = self.db.as_sqlite() else {
            for (c, chunk) in keys.chunks(PG_CHUNK).enumerate() {
                let skus: Vec<&str> = chunk.iter().map(|k| k.0).collect();
                let locs: Vec<&str> = chunk.iter().map(|k| k.1).collect();
                let got = self
                    .db
                    .query(
                        &format!(
                            "SELECT k.n, (SELECT a.after FROM audit a WHERE a.sku = k.sku AND a.location = k.loc AND a.{WRITTEN}
                                          ORDER BY a.id DESC LIMIT 1)
                             FROM unnest(?1::text[], ?2::text[]) WITH ORDINALITY AS k(sku, loc, n)"
                        ),
                        &[Value::Texts(&skus), Value::Texts(&locs)],
                        |r| Ok((r.i64(0)?, r.opt_i64(1)?)),
                    )
                    .map_err(|e| self.err(e))?;
                for (n, v) in got {
                    if let Some(slot) = usize::try_from(n - 1).ok().and_then(|k| out.get_mut(c * PG_CHUNK + k)) {
                        *slot = v;
                    }
                }
            }
            return Ok(out);
        };
        if (keys.len() as i64).saturating_mul(16) < rows {
            for (slot, (sku, loc)) in out.iter_mut().zip(keys) {
                *slot = self
                    .db
                    .query_opt(
                        &format!("SELECT after FROM audit WHERE sku = ?1 AND location = ?2 AND {WRITTEN} ORDER BY id DESC LIMIT 1"),
                        params![*sku, *loc],
                        |r| r.i64(0),
                    )
                    .map_err(|e| self.err(e))?;
            }
            return Ok(out);
        }
        // The scan reads the columns in place (no allocation per audit row).
        let err = |e| self.err(DbError::sqlite(e));
        let index: std::collections::HashMap<(&str, &str), usize> =
            keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let mut stmt = conn
            .prepare(&format!("SELECT sku, location, after FROM audit WHERE {WRITTEN} ORDER BY id"))
            .map_err(err)?;
        let mut q = stmt.query([]).map_err(err)?;
        while let Some(r) = q.next().map_err(err)? {
            let sku = r.get_ref(0).map_err(err)?.as_str().unwrap_or_default();
            let loc = r.get_ref(1).map_err(err)?.as_str().unwrap_or_default();
            if let Some(&i) = index.get(&(sku, loc)) {
                out[i] = Some(r.get(2).map_err(err)?);
            }
        }
        Ok(out)
    }

    /// Records a reconcile and its drifted keys (at most `drift.len()`; the caller
    /// caps them) in one transaction. Only the newest run keeps its drifted keys:
    /// older runs keep their figures. Returns the run's id.
    pub fn save_reconcile(&mut self, run: &NewReconcileRun<'_>, drift: &[DriftRow]) -> Result<i64, StateError> {
        let (kpis, breaches) = (run.kpis.to_string(), run.breaches.to_string());
        self.db
            .transaction(false, |db| -> Result<i64, DbError> {
                let id = db.query_one(
                    "INSERT INTO reconcile_runs (at, plan_name, plan_sha256, keys, drifted, drift_ratio, seconds, stored, kpis, breaches)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                    params![
                        &now(),
                        run.plan_name,
                        run.plan_sha256,
                        i(run.keys),
                        i(run.drifted),
                        run.drift_ratio,
                        run.seconds,
                        drift.len() as u64,
                        &kpis,
                        &breaches
                    ],
                    |r| r.i64(0),
                )?;
                db.execute("DELETE FROM drift WHERE run_id <> ?1", params![id])?;
                if db.is_postgres() {
                    for chunk in drift.chunks(PG_CHUNK) {
                        insert_drift_pg(db, id, chunk)?;
                    }
                } else {
                    for d in drift {
                        db.execute(
                            "INSERT INTO drift (run_id, sku, location, source, target, diff, abs_diff, cause, bundle, orphan, queued, last_written)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (run_id, sku, location) DO NOTHING",
                            params![
                                id,
                                &d.sku,
                                &d.location,
                                d.source,
                                d.target,
                                d.diff,
                                i(d.diff.unsigned_abs()),
                                &d.cause,
                                i64::from(d.bundle),
                                i64::from(d.orphan),
                                i64::from(d.queued),
                                d.last_written
                            ],
                        )?;
                    }
                }
                Ok(id)
            })
            .map_err(|e| self.err(e))
    }

    /// The newest reconcile run, if any.
    pub fn last_reconcile(&self) -> Result<Option<ReconcileRun>, StateError> {
        self.db
            .query_opt(
                "SELECT id, at, plan_name, plan_sha256, keys, drifted, drift_ratio, seconds, stored, kpis, breaches
                 FROM reconcile_runs ORDER BY id DESC LIMIT 1",
                &[],
                |r| {
                    Ok(ReconcileRun {
                        id: r.i64(0)?,
                        at: r.text(1)?,
                        plan_name: r.text(2)?,
                        plan_sha256: r.text(3)?,
                        keys: u(r.i64(4)?),
                        drifted: u(r.i64(5)?),
                        drift_ratio: r.f64(6)?,
                        seconds: r.f64(7)?,
                        stored: u(r.i64(8)?),
                        kpis: serde_json::from_str(&r.text(9)?).unwrap_or_default(),
                        breaches: serde_json::from_str(&r.text(10)?).unwrap_or_default(),
                    })
                },
            )
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
        let mut ps: Vec<Value<'_>> = vec![Value::Int(q.run_id)];
        let filter = match &pattern {
            Some(p) => {
                ps.push(Value::Text(p));
                "run_id = ?1 AND lower(sku) LIKE lower(?2) ESCAPE '\\'"
            }
            None => "run_id = ?1",
        };
        let total = self
            .db
            .query_one(&format!("SELECT count(*) FROM drift WHERE {filter}"), &ps, |r| r.i64(0))
            .map_err(|e| self.err(e))?;
        let dir = if q.descending { "DESC" } else { "ASC" };
        // Absent targets sort as the smallest value on both engines.
        let nulls = if q.descending { "NULLS LAST" } else { "NULLS FIRST" };
        let order = match q.sort {
            DriftSort::Sku => format!("sku {dir}, location {dir}"),
            DriftSort::Location => format!("location {dir}, sku {dir}"),
            DriftSort::Source => format!("source {dir}, sku, location"),
            DriftSort::Target => format!("target {dir} {nulls}, sku, location"),
            DriftSort::Diff => format!("diff {dir}, sku, location"),
            DriftSort::AbsDiff => format!("abs_diff {dir}, sku {dir}, location {dir}"),
            DriftSort::Cause => format!("cause {dir}, sku, location"),
        };
        let n = ps.len();
        ps.push(Value::Int(i(q.limit)));
        ps.push(Value::Int(i(q.offset)));
        let rows = self
            .db
            .query(
                &format!(
                    "SELECT {DRIFT_COLS} FROM drift WHERE {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
                    n + 1,
                    n + 2
                ),
                &ps,
                row_to_drift,
            )
            .map_err(|e| self.err(e))?;
        Ok((u(total), rows))
    }

    /// One drifted key of a run.
    pub fn drift_row(&self, run_id: i64, sku: &str, location: &str) -> Result<Option<DriftRow>, StateError> {
        self.db
            .query_opt(
                &format!("SELECT {DRIFT_COLS} FROM drift WHERE run_id = ?1 AND sku = ?2 AND location = ?3"),
                params![run_id, sku, location],
                row_to_drift,
            )
            .map_err(|e| self.err(e))
    }

    /// Notes that a drifted key was fixed by an operation (the admin page's fix).
    pub fn mark_drift_fixed(&mut self, run_id: i64, sku: &str, location: &str, op_id: &str) -> Result<(), StateError> {
        self.db
            .execute(
                "UPDATE drift SET fixed_by = ?4 WHERE run_id = ?1 AND sku = ?2 AND location = ?3",
                params![run_id, sku, location, op_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// What an audit row keeps of an outcome besides its name: (found, error).
fn detail<'w>(w: &WriteRecord<'w>) -> (Option<i64>, Option<&'w str>) {
    match w.outcome {
        WriteOutcome::Conflict { found } => (*found, None),
        WriteOutcome::Failed { message, .. } => (None, Some(message.as_str())),
        _ => (None, None),
    }
}

/// `(postgres $VAR)`: how messages name a PostgreSQL store (never its URL).
fn pg_shown(at: &StoreAt) -> String {
    format!("(postgres ${})", at.url_env.as_deref().unwrap_or("URL"))
}

/// PostgreSQL: one statement for a chunk of drifted keys.
fn insert_drift_pg(db: &Db, run_id: i64, rows: &[DriftRow]) -> Result<(), DbError> {
    let sku: Vec<&str> = rows.iter().map(|d| d.sku.as_str()).collect();
    let loc: Vec<&str> = rows.iter().map(|d| d.location.as_str()).collect();
    let source: Vec<i64> = rows.iter().map(|d| d.source).collect();
    let target: Vec<Option<i64>> = rows.iter().map(|d| d.target).collect();
    let diff: Vec<i64> = rows.iter().map(|d| d.diff).collect();
    let abs: Vec<i64> = rows.iter().map(|d| i(d.diff.unsigned_abs())).collect();
    let cause: Vec<&str> = rows.iter().map(|d| d.cause.as_str()).collect();
    let flags = |f: fn(&DriftRow) -> bool| -> Vec<i64> { rows.iter().map(|d| i64::from(f(d))).collect() };
    let (bundle, orphan, queued) = (flags(|d| d.bundle), flags(|d| d.orphan), flags(|d| d.queued));
    let last: Vec<Option<i64>> = rows.iter().map(|d| d.last_written).collect();
    db.execute(
        "INSERT INTO drift (run_id, sku, location, source, target, diff, abs_diff, cause, bundle, orphan, queued, last_written)
         SELECT ?1, t.* FROM unnest(?2::text[], ?3::text[], ?4::bigint[], ?5::bigint[], ?6::bigint[], ?7::bigint[],
                                    ?8::text[], ?9::bigint[], ?10::bigint[], ?11::bigint[], ?12::bigint[]) AS t
         ON CONFLICT (run_id, sku, location) DO NOTHING",
        &[
            Value::Int(run_id),
            Value::Texts(&sku),
            Value::Texts(&loc),
            Value::Ints(&source),
            Value::OptInts(&target),
            Value::Ints(&diff),
            Value::Ints(&abs),
            Value::Texts(&cause),
            Value::Ints(&bundle),
            Value::Ints(&orphan),
            Value::Ints(&queued),
            Value::OptInts(&last),
        ],
    )?;
    Ok(())
}

const DRIFT_COLS: &str = "sku, location, source, target, diff, cause, bundle, orphan, queued, last_written, fixed_by";

fn row_to_drift(r: &Row<'_, '_>) -> Result<DriftRow, DbError> {
    Ok(DriftRow {
        sku: r.text(0)?,
        location: r.text(1)?,
        source: r.i64(2)?,
        target: r.opt_i64(3)?,
        diff: r.i64(4)?,
        cause: r.text(5)?,
        bundle: r.i64(6)? != 0,
        orphan: r.i64(7)? != 0,
        queued: r.i64(8)? != 0,
        last_written: r.opt_i64(9)?,
        fixed_by: r.opt_text(10)?,
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
    use rusqlite::Connection;

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
        let e = StateStore::open(dir.path()).expect_err("refused").to_string();
        assert!(e.contains("newer stockshift"), "{e}");
    }

    #[test]
    fn an_older_operations_table_gains_the_reason_column() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("state.db")).unwrap();
        c.execute_batch(
            &schema::SQLITE.replace("  artifact_path TEXT,\n  reason TEXT,\n  scope TEXT\n", "  artifact_path TEXT\n"),
        )
        .unwrap();
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
