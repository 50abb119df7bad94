//! The state store's tables, once per engine, side by side.
//!
//! Both schemas hold the same tables and columns; only the types differ
//! (SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT` is PostgreSQL's `BIGSERIAL`,
//! `INTEGER` is `BIGINT`, `REAL` is `DOUBLE PRECISION`), and `user` is quoted
//! because it is a reserved word in PostgreSQL. Change both together, and bump
//! [`STATE_SCHEMA_VERSION`] when an older stockshift must not open the result.
//!
//! Versions: SQLite keeps the version in `PRAGMA user_version`; PostgreSQL in
//! the `meta` row `schema_version`. A store written by a newer stockshift (a
//! higher version) is refused.
//!
//! * 1: the original tables.
//! * 2: `operations.scope` (which part of the state an operation owns; NULL:
//!   all of it) and `lock_shared` (holders of the shared lock).

/// The schema version this stockshift reads and writes.
pub const STATE_SCHEMA_VERSION: i64 = 2;

/// SQLite (`state.db`).
pub const SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  plan_name TEXT NOT NULL,
  plan_sha256 TEXT NOT NULL,
  artifact_sha256 TEXT NOT NULL,
  "user" TEXT NOT NULL,
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
  reason TEXT,
  scope TEXT
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
  "user" TEXT NOT NULL,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  started_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lock_shared (
  id TEXT PRIMARY KEY,
  operation TEXT NOT NULL,
  "user" TEXT NOT NULL,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  started_at TEXT NOT NULL
);
"#;

/// Columns added to SQLite tables after they were first released, for files
/// made by an earlier stockshift: (table, column, declaration).
pub const SQLITE_ADDED: &[(&str, &str, &str)] = &[
    ("intents", "writes", "TEXT NOT NULL DEFAULT '[]'"),
    ("operations", "snapshot", "TEXT"),
    ("operations", "snapshot_sha256", "TEXT"),
    ("operations", "artifact_path", "TEXT"),
    ("operations", "reason", "TEXT"),
    ("operations", "scope", "TEXT"),
];

/// PostgreSQL (schema `stockshift_state`, on the connection's search path).
pub const POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  plan_name TEXT NOT NULL,
  plan_sha256 TEXT NOT NULL,
  artifact_sha256 TEXT NOT NULL,
  "user" TEXT NOT NULL,
  host TEXT NOT NULL,
  command TEXT NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL,
  serial BIGINT NOT NULL,
  writes BIGINT NOT NULL DEFAULT 0,
  applied BIGINT NOT NULL DEFAULT 0,
  already_applied BIGINT NOT NULL DEFAULT 0,
  conflicts BIGINT NOT NULL DEFAULT 0,
  failed BIGINT NOT NULL DEFAULT 0,
  rollback_of TEXT,
  rolled_back_by TEXT,
  snapshot TEXT,
  snapshot_sha256 TEXT,
  artifact_path TEXT,
  reason TEXT,
  scope TEXT
);
CREATE INDEX IF NOT EXISTS operations_artifact ON operations (artifact_sha256);
CREATE INDEX IF NOT EXISTS operations_status ON operations (status);
CREATE TABLE IF NOT EXISTS intents (
  op_id TEXT NOT NULL,
  first_seq BIGINT NOT NULL,
  last_seq BIGINT NOT NULL,
  at TEXT NOT NULL,
  writes TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY (op_id, first_seq)
);
CREATE TABLE IF NOT EXISTS audit (
  id BIGSERIAL PRIMARY KEY,
  at TEXT NOT NULL,
  op_id TEXT NOT NULL,
  seq BIGINT NOT NULL,
  sku TEXT NOT NULL,
  location TEXT NOT NULL,
  before BIGINT,
  after BIGINT NOT NULL,
  outcome TEXT NOT NULL,
  found BIGINT,
  error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_op_seq ON audit (op_id, seq);
CREATE INDEX IF NOT EXISTS audit_sku ON audit (sku);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS gauges (name TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cutovers (
  id TEXT PRIMARY KEY,
  plan_name TEXT NOT NULL,
  plan_sha256 TEXT NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL,
  step BIGINT NOT NULL DEFAULT 0,
  data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS cutover_steps (
  cutover_id TEXT NOT NULL,
  step BIGINT NOT NULL,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  started_at TEXT NOT NULL,
  seconds DOUBLE PRECISION NOT NULL,
  detail TEXT NOT NULL,
  PRIMARY KEY (cutover_id, step)
);
CREATE TABLE IF NOT EXISTS reconcile_runs (
  id BIGSERIAL PRIMARY KEY,
  at TEXT NOT NULL,
  plan_name TEXT NOT NULL,
  plan_sha256 TEXT NOT NULL,
  keys BIGINT NOT NULL,
  drifted BIGINT NOT NULL,
  drift_ratio DOUBLE PRECISION NOT NULL,
  seconds DOUBLE PRECISION NOT NULL,
  stored BIGINT NOT NULL,
  kpis TEXT NOT NULL DEFAULT '[]',
  breaches TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS drift (
  run_id BIGINT NOT NULL,
  sku TEXT NOT NULL,
  location TEXT NOT NULL,
  source BIGINT NOT NULL,
  target BIGINT,
  diff BIGINT NOT NULL,
  abs_diff BIGINT NOT NULL,
  cause TEXT NOT NULL,
  bundle BIGINT NOT NULL DEFAULT 0,
  orphan BIGINT NOT NULL DEFAULT 0,
  queued BIGINT NOT NULL DEFAULT 0,
  last_written BIGINT,
  fixed_by TEXT,
  PRIMARY KEY (run_id, sku, location)
);
CREATE INDEX IF NOT EXISTS drift_abs ON drift (run_id, abs_diff, sku, location);
CREATE TABLE IF NOT EXISTS lock (
  one BIGINT PRIMARY KEY CHECK (one = 1),
  id TEXT NOT NULL,
  operation TEXT NOT NULL,
  "user" TEXT NOT NULL,
  host TEXT NOT NULL,
  pid BIGINT NOT NULL,
  started_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lock_shared (
  id TEXT PRIMARY KEY,
  operation TEXT NOT NULL,
  "user" TEXT NOT NULL,
  host TEXT NOT NULL,
  pid BIGINT NOT NULL,
  started_at TEXT NOT NULL
);
"#;

/// The PostgreSQL schema (namespace) the state's tables live in.
pub const POSTGRES_SCHEMA: &str = "stockshift_state";
