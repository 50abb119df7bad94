//! One small SQL interface over the two engines stockshift keeps its own data in:
//! SQLite (embedded, the default) and PostgreSQL (shared by several machines).
//!
//! The state store and the event queue are written once against [`Db`], so the
//! rules (what a lock means, when an operation may resume, how an event settles)
//! exist once and only the storage differs. Statements are written in the common
//! subset of both dialects with `?1`-style placeholders, which are rewritten to
//! `$1` for PostgreSQL. Things the dialects disagree on (DDL, upserts on older
//! SQLite, advisory locks) are chosen with [`Db::engine`].
//!
//! Every method takes `&self`: the PostgreSQL connection sits in a `RefCell`, as
//! rusqlite's does, so the existing borrow patterns of callers keep working. A
//! [`Db`] is used from one thread at a time; PostgreSQL calls block on a private
//! current-thread runtime (and hop to a scoped thread when called from inside
//! another runtime, where blocking would panic).
//!
//! A PostgreSQL URL's password never appears in an error ([`Secrets`]).

use std::cell::RefCell;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgRow};
use sqlx::{
    Arguments, AssertSqlSafe, Column as _, ConnectOptions, Connection as _, Row as _, TypeInfo as _, ValueRef as _,
};

pub use crate::provider::postgres::Secrets;

/// Where a store (the state or the event queue) lives: SQLite files in the
/// state folder, or a PostgreSQL database whose URL came from the environment
/// variable the plan names. The URL is a secret: `Debug` never shows it.
#[derive(Clone)]
pub struct StoreAt {
    /// The state folder (saved plans, snapshots, and the SQLite files).
    pub dir: std::path::PathBuf,
    /// The PostgreSQL URL, when the backend is `postgres`.
    pub postgres: Option<String>,
    /// The variable the URL came from, for messages.
    pub url_env: Option<String>,
}

impl std::fmt::Debug for StoreAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.url_env {
            Some(var) => write!(f, "StoreAt({}, postgres from ${var})", self.dir.display()),
            None => write!(f, "StoreAt({}, sqlite)", self.dir.display()),
        }
    }
}

impl StoreAt {
    /// SQLite files in `dir`.
    pub fn sqlite(dir: impl Into<std::path::PathBuf>) -> StoreAt {
        StoreAt { dir: dir.into(), postgres: None, url_env: None }
    }

    /// `what` (`state` or `events.queue`) as the plan configures it, with its
    /// SQLite files (or local files of a PostgreSQL store) in `dir`.
    pub fn from_config(
        dir: impl Into<std::path::PathBuf>,
        cfg: &crate::config::model::StoreConfig,
        what: &str,
    ) -> Result<StoreAt, DbError> {
        use crate::config::model::StoreBackend;
        let dir = dir.into();
        match cfg.backend {
            StoreBackend::Sqlite => Ok(StoreAt::sqlite(dir)),
            StoreBackend::Postgres => {
                let var = cfg.url_env.as_deref().ok_or_else(|| {
                    DbError::msg(format!("`{what}.backend: postgres` needs `url_env`, the variable holding its URL"))
                })?;
                match std::env::var(var) {
                    Ok(v) if !v.trim().is_empty() => {
                        Ok(StoreAt { dir, postgres: Some(v.trim().to_owned()), url_env: Some(var.to_owned()) })
                    }
                    _ => Err(DbError::msg(format!(
                        "environment variable `{var}` (named by `{what}.url_env`) is not set; export it before running stockshift"
                    ))),
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

/// How long connecting to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The advisory lock key that serialises schema creation and migrations.
pub const MIGRATION_LOCK: i64 = 0x5354_4f43_4b00; // "STOCK\0"

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A failed statement, with the password of any URL removed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub message: String,
    /// The SQLSTATE (PostgreSQL) or extended result code (SQLite), when known.
    pub code: Option<String>,
    /// The connection is gone or the statement lost a race (serialization
    /// failure, deadlock): trying again may succeed.
    pub transient: bool,
}

impl DbError {
    pub(crate) fn msg(message: impl Into<String>) -> DbError {
        DbError { message: message.into(), code: None, transient: false }
    }

    pub(crate) fn sqlite(e: rusqlite::Error) -> DbError {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code.to_string()),
            _ => None,
        };
        let transient = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        DbError { message: e.to_string(), code, transient }
    }

    fn postgres(e: sqlx::Error, secrets: &Secrets) -> DbError {
        let (code, transient) = match &e {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned());
                let t = code.as_deref().is_some_and(crate::provider::postgres::transient_code);
                (code, t)
            }
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_) => {
                (None, true)
            }
            _ => (None, false),
        };
        DbError { message: secrets.redact(&e.to_string()), code, transient }
    }

    /// A unique or primary key was violated.
    pub fn is_unique_violation(&self) -> bool {
        // 23505: PostgreSQL unique_violation; 2067/1555: SQLite UNIQUE/PRIMARY KEY.
        matches!(self.code.as_deref(), Some("23505" | "2067" | "1555"))
    }
}

/// A parameter of a statement.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    /// PostgreSQL only: an array, for `unnest(?1)` bulk statements.
    Ints(&'a [i64]),
    /// PostgreSQL only: an array, for `unnest(?1)` bulk statements.
    Texts(&'a [&'a str]),
    /// PostgreSQL only: an array with NULLs (`?1::bigint[]`), for `unnest` bulk statements.
    OptInts(&'a [Option<i64>]),
    /// PostgreSQL only: an array with NULLs (`?1::text[]`), for `unnest` bulk statements.
    OptTexts(&'a [Option<&'a str>]),
    /// PostgreSQL only: a `bytea[]` array, for `unnest` bulk statements.
    Blobs(&'a [&'a [u8]]),
}

impl<'a> From<i64> for Value<'a> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl<'a> From<u64> for Value<'a> {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}
impl<'a> From<u32> for Value<'a> {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl<'a> From<f64> for Value<'a> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match *self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Ints(_) | Value::Texts(_) | Value::OptInts(_) | Value::OptTexts(_) | Value::Blobs(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure("arrays are PostgreSQL-only".into()));
            }
        })
    }
}

/// Builds a parameter list: `params![a, b, c]`.
#[macro_export]
macro_rules! db_params {
    () => { &[] as &[$crate::db::Value<'_>] };
    ($($v:expr),+ $(,)?) => { &[$($crate::db::Value::from($v)),+] as &[$crate::db::Value<'_>] };
}
pub use db_params as params;

/// One result row, read by column index.
pub enum Row<'r, 's> {
    Sqlite(&'r rusqlite::Row<'s>),
    Postgres(&'r PgRow),
}

impl Row<'_, '_> {
    fn pg_null(r: &PgRow, i: usize) -> Result<bool, DbError> {
        r.try_get_raw(i).map(|v| v.is_null()).map_err(|e| DbError::msg(e.to_string()))
    }

    /// An integer column (any integer width; NULL is an error).
    pub fn i64(&self, i: usize) -> Result<i64, DbError> {
        self.opt_i64(i)?.ok_or_else(|| DbError::msg(format!("column {i} is NULL")))
    }

    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self {
            Row::Sqlite(r) => r.get(i).map_err(DbError::sqlite),
            Row::Postgres(r) => {
                if Self::pg_null(r, i)? {
                    return Ok(None);
                }
                let ty = r.try_column(i).map(|c| c.type_info().name().to_owned()).unwrap_or_default();
                let v = match ty.as_str() {
                    "INT2" => r.try_get::<i16, _>(i).map(i64::from),
                    "INT4" => r.try_get::<i32, _>(i).map(i64::from),
                    "BOOL" => r.try_get::<bool, _>(i).map(i64::from),
                    _ => r.try_get::<i64, _>(i),
                };
                v.map(Some).map_err(|e| DbError::msg(e.to_string()))
            }
        }
    }

    pub fn f64(&self, i: usize) -> Result<f64, DbError> {
        self.opt_f64(i)?.ok_or_else(|| DbError::msg(format!("column {i} is NULL")))
    }

    pub fn opt_f64(&self, i: usize) -> Result<Option<f64>, DbError> {
        match self {
            Row::Sqlite(r) => r.get(i).map_err(DbError::sqlite),
            Row::Postgres(r) => {
                if Self::pg_null(r, i)? {
                    return Ok(None);
                }
                let ty = r.try_column(i).map(|c| c.type_info().name().to_owned()).unwrap_or_default();
                let v = match ty.as_str() {
                    "FLOAT4" => r.try_get::<f32, _>(i).map(f64::from),
                    "INT8" => r.try_get::<i64, _>(i).map(|v| v as f64),
                    "INT4" => r.try_get::<i32, _>(i).map(f64::from),
                    _ => r.try_get::<f64, _>(i),
                };
                v.map(Some).map_err(|e| DbError::msg(e.to_string()))
            }
        }
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        self.opt_text(i)?.ok_or_else(|| DbError::msg(format!("column {i} is NULL")))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self {
            Row::Sqlite(r) => r.get(i).map_err(DbError::sqlite),
            Row::Postgres(r) => r.try_get::<Option<String>, _>(i).map_err(|e| DbError::msg(e.to_string())),
        }
    }

    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, DbError> {
        match self {
            Row::Sqlite(r) => r.get(i).map_err(DbError::sqlite),
            Row::Postgres(r) => r.try_get::<Option<Vec<u8>>, _>(i).map_err(|e| DbError::msg(e.to_string())),
        }
    }
}

struct Pg {
    /// Always `Some` until dropped (see `Drop`).
    rt: Option<tokio::runtime::Runtime>,
    conn: RefCell<PgConnection>,
    secrets: Secrets,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

/// A connection to SQLite or PostgreSQL.
pub struct Db {
    inner: Inner,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({:?})", self.engine())
    }
}

/// `?N` placeholders as PostgreSQL's `$N` (outside string literals).
pub fn to_postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_str = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                in_str = !in_str;
                out.push(c);
            }
            '?' if !in_str => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

impl Db {
    /// Wraps an open SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Db {
        Db { inner: Inner::Sqlite(conn) }
    }

    /// Connects to PostgreSQL at `url` and makes `schema` (created when missing)
    /// the only schema on its search path, so the same unqualified statements
    /// work on both engines and the state and the queue may share one database.
    /// Creation is serialised with a transaction-level advisory lock, because
    /// concurrent `CREATE ... IF NOT EXISTS` can fail on PostgreSQL.
    pub fn postgres_in_schema(url: &str, schema: &str) -> Result<Db, DbError> {
        debug_assert!(schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        let db = Db::postgres(url)?;
        db.transaction(false, |db| {
            db.query_one("SELECT pg_advisory_xact_lock(?1)", &[Value::Int(MIGRATION_LOCK)], |_| Ok(()))?;
            db.batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        })?;
        db.batch(&format!("SET search_path TO {schema}"))?;
        Ok(db)
    }

    /// Takes the transaction-level lock that serialises schema migrations of
    /// all stockshift processes on one PostgreSQL server (no-op on SQLite). Call
    /// inside [`Db::transaction`].
    pub fn migration_lock(&self) -> Result<(), DbError> {
        if self.is_postgres() {
            self.query_one("SELECT pg_advisory_xact_lock(?1)", &[Value::Int(MIGRATION_LOCK)], |_| Ok(()))?;
        }
        Ok(())
    }

    /// Connects to the PostgreSQL server at `url` (with a timeout).
    pub fn postgres(url: &str) -> Result<Db, DbError> {
        let secrets = Secrets::of_url(url);
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| DbError::msg(format!("invalid PostgreSQL URL: {}", secrets.redact(&e.to_string()))))?
            .application_name("stockshift");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DbError::msg(format!("cannot start the PostgreSQL client: {e}")))?;
        let conn = off_runtime(|| rt.block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, opts.connect()).await }));
        let conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let mut e = DbError::postgres(e, &secrets);
                e.message = format!("cannot connect to PostgreSQL: {}", e.message);
                return Err(e);
            }
            Err(_) => {
                return Err(DbError {
                    message: format!("cannot connect to PostgreSQL: no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    code: None,
                    transient: true,
                });
            }
        };
        Ok(Db { inner: Inner::Postgres(Box::new(Pg { rt: Some(rt), conn: RefCell::new(conn), secrets })) })
    }

    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::Sqlite(_) => Engine::Sqlite,
            Inner::Postgres(_) => Engine::Postgres,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.engine() == Engine::Postgres
    }

    /// The SQLite connection, for the few engine-specific fast paths.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    /// Redacts secrets of this connection from `text`.
    pub fn redact(&self, text: &str) -> String {
        match &self.inner {
            Inner::Sqlite(_) => text.to_owned(),
            Inner::Postgres(pg) => pg.secrets.redact(text),
        }
    }

    /// Runs statements without parameters (DDL, `BEGIN`, `COMMIT`).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite(c) => c.execute_batch(sql).map_err(DbError::sqlite),
            Inner::Postgres(pg) => {
                let mut conn = pg.conn.borrow_mut();
                pg.block(sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut *conn)).map(|_| ())
            }
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, DbError> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut st = c.prepare_cached(sql).map_err(DbError::sqlite)?;
                st.execute(rusqlite::params_from_iter(params.iter())).map(|n| n as u64).map_err(DbError::sqlite)
            }
            Inner::Postgres(pg) => {
                let sql = to_postgres_placeholders(sql);
                let args = pg_args(params)?;
                let mut conn = pg.conn.borrow_mut();
                pg.block(sqlx::query_with(AssertSqlSafe(sql), args).execute(&mut *conn)).map(|r| r.rows_affected())
            }
        }
    }

    /// Runs a query and maps every row.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_, '_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut st = c.prepare_cached(sql).map_err(DbError::sqlite)?;
                let mut rows = st.query(rusqlite::params_from_iter(params.iter())).map_err(DbError::sqlite)?;
                let mut out = Vec::new();
                while let Some(r) = rows.next().map_err(DbError::sqlite)? {
                    out.push(f(&Row::Sqlite(r))?);
                }
                Ok(out)
            }
            Inner::Postgres(pg) => {
                let sql = to_postgres_placeholders(sql);
                let args = pg_args(params)?;
                let rows = {
                    let mut conn = pg.conn.borrow_mut();
                    pg.block(sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(&mut *conn))?
                };
                rows.iter().map(|r| f(&Row::Postgres(r))).collect()
            }
        }
    }

    /// The first row, if any.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnMut(&Row<'_, '_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        Ok(self.query(sql, params, f)?.into_iter().next())
    }

    /// Exactly one row.
    pub fn query_one<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnMut(&Row<'_, '_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.query_opt(sql, params, f)?.ok_or_else(|| DbError::msg(format!("no row returned by `{sql}`")))
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back
    /// otherwise. `immediate` takes SQLite's write lock up front (so two processes
    /// cannot both read-then-write); PostgreSQL needs no such mode.
    pub fn transaction<T, E: From<DbError>>(
        &self,
        immediate: bool,
        f: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        let begin = match (&self.inner, immediate) {
            (Inner::Sqlite(_), true) => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        self.batch(begin)?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// PostgreSQL: takes the session advisory lock `key` if it is free. The
    /// server frees it when this connection ends, so a crashed holder never
    /// keeps it. SQLite has no such lock: always `false`.
    pub fn try_advisory_lock(&self, key: i64) -> Result<bool, DbError> {
        if !self.is_postgres() {
            return Ok(false);
        }
        self.query_one("SELECT pg_try_advisory_lock(?1)", &[Value::Int(key)], |r| Ok(r.i64(0)? != 0))
    }

    /// PostgreSQL: releases a session advisory lock taken by this connection.
    pub fn advisory_unlock(&self, key: i64) -> Result<bool, DbError> {
        if !self.is_postgres() {
            return Ok(false);
        }
        self.query_one("SELECT pg_advisory_unlock(?1)", &[Value::Int(key)], |r| Ok(r.i64(0)? != 0))
    }

    /// PostgreSQL: takes the session advisory lock `key` in shared mode if no
    /// session holds it exclusively (several shared holders may hold it at once).
    /// SQLite: always `false`.
    pub fn try_advisory_lock_shared(&self, key: i64) -> Result<bool, DbError> {
        if !self.is_postgres() {
            return Ok(false);
        }
        self.query_one("SELECT pg_try_advisory_lock_shared(?1)", &[Value::Int(key)], |r| Ok(r.i64(0)? != 0))
    }

    /// PostgreSQL: releases a shared session advisory lock taken by this connection.
    pub fn advisory_unlock_shared(&self, key: i64) -> Result<bool, DbError> {
        if !self.is_postgres() {
            return Ok(false);
        }
        self.query_one("SELECT pg_advisory_unlock_shared(?1)", &[Value::Int(key)], |r| Ok(r.i64(0)? != 0))
    }

    /// PostgreSQL: whether this connection is still usable.
    pub fn ping(&self) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite(_) => Ok(()),
            Inner::Postgres(pg) => {
                let mut conn = pg.conn.borrow_mut();
                pg.block(conn.ping())
            }
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Dropping a runtime on an async thread panics; closing it in the
        // background is allowed there (a `Db` may end inside a server handler).
        if let Some(rt) = self.rt.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            rt.shutdown_background();
        }
    }
}

impl Pg {
    fn block<T: Send>(
        &self,
        fut: impl std::future::Future<Output = Result<T, sqlx::Error>> + Send,
    ) -> Result<T, DbError> {
        let rt = self.rt.as_ref().expect("runtime present until drop");
        off_runtime(|| rt.block_on(fut)).map_err(|e| DbError::postgres(e, &self.secrets))
    }
}

/// Runs `f` here, or on a scoped thread when this thread is inside a tokio
/// runtime (whose `block_on` would panic).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    } else {
        f()
    }
}

/// A NULL parameter sent without a type (OID 0), so PostgreSQL infers it from
/// the statement. A typed NULL (say `int8`) would fix that type in the
/// connection's cached prepared statement, and the next run of the same SQL with
/// a value of the column's real type (a `text`) would then be refused.
struct UntypedNull;

impl sqlx::Type<sqlx::Postgres> for UntypedNull {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn pg_args(params: &[Value<'_>]) -> Result<PgArguments, DbError> {
    let mut a = PgArguments::default();
    for p in params {
        let r = match *p {
            Value::Null => a.add(UntypedNull),
            Value::Int(i) => a.add(i),
            Value::Real(f) => a.add(f),
            Value::Text(s) => a.add(s.to_owned()),
            Value::Blob(b) => a.add(b.to_vec()),
            Value::Ints(v) => a.add(v.to_vec()),
            Value::Texts(v) => a.add(v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()),
            Value::Blobs(v) => a.add(v.iter().map(|b| b.to_vec()).collect::<Vec<Vec<u8>>>()),
            Value::OptInts(v) => a.add(v.to_vec()),
            Value::OptTexts(v) => a.add(v.iter().map(|s| s.map(str::to_owned)).collect::<Vec<Option<String>>>()),
        };
        r.map_err(|e| DbError::msg(format!("cannot bind a parameter: {e}")))?;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals_only() {
        assert_eq!(
            to_postgres_placeholders("SELECT ?1, '?' FROM t WHERE a = ?2"),
            "SELECT $1, '?' FROM t WHERE a = $2"
        );
    }

    #[test]
    fn sqlite_round_trip_with_transaction_and_rollback() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER, f REAL)").unwrap();
        db.execute("INSERT INTO t VALUES (?1, ?2, ?3)", params!["a", 1i64, 0.5]).unwrap();
        let r: Result<(), DbError> = db.transaction(true, |db| {
            db.execute("INSERT INTO t VALUES (?1, ?2, NULL)", params!["b", 2i64])?;
            Err(DbError::msg("stop"))
        });
        assert!(r.is_err());
        let rows =
            db.query("SELECT k, v, f FROM t ORDER BY k", &[], |r| Ok((r.text(0)?, r.i64(1)?, r.opt_f64(2)?))).unwrap();
        assert_eq!(rows, vec![("a".to_owned(), 1, Some(0.5))]);
        let e = db.execute("INSERT INTO t VALUES (?1, 3, NULL)", params!["a"]).unwrap_err();
        assert!(e.is_unique_violation(), "{e:?}");
        assert!(!db.try_advisory_lock(1).unwrap());
    }
}
