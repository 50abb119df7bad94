//! The `postgres` provider: one inventory table in a PostgreSQL database (source
//! or target), or a templated SELECT as a read-only source.
//!
//! * **Reads** stream a table (or the `query:` template, see [`template`]) through
//!   a server-side cursor inside one read-only REPEATABLE READ transaction: one
//!   consistent snapshot, bounded memory. Every value is cast to text by the server
//!   and parsed with [`super::parse_qty`], so a NULL, fractional or out-of-range
//!   quantity is reported as a problem with its row number (its position in the
//!   result) instead of being rounded.
//! * **Writes** are one statement per batch, hence one round trip and one
//!   transaction: the batch goes to the server as four arrays; an `UPDATE ... FROM
//!   unnest(...) WHERE qty = expected RETURNING` makes the updates and, when the
//!   batch has creates, an `INSERT ... WHERE NOT EXISTS ... ON CONFLICT DO NOTHING`
//!   in the same statement makes them. Only when some writes were not made does a
//!   second statement read those keys, to tell "already applied" (the key holds
//!   the new value) from a conflict (reported with the value found). A batch that
//!   names one key twice is split into runs of distinct keys made in order inside
//!   one explicit transaction.
//! * **Failures**: connection errors (refused, reset, terminated by the server),
//!   serialization failures, deadlocks, lock and statement timeouts, and a server
//!   shutting down are [`ProviderError::Unavailable`], which the apply loop retries
//!   with backoff; the connection is dropped and made again on the next call. A
//!   failed write statement is rolled back whole, so a retry finds its keys as they
//!   were, or, when it committed before the failure (a lost reply, a failed
//!   follow-up read), holding the new values: "already applied". Everything else (no such
//!   table, bad credentials, a value the column cannot hold) is
//!   [`ProviderError::Invalid`].
//!
//! The connection URL comes from the environment variable the plan names; its
//! password never appears in a message ([`Secrets::redact`]).

pub mod template;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgRow};
use sqlx::{Arguments, AssertSqlSafe, ConnectOptions, Row};

use super::{Capabilities, CompareMode, Provider, ProviderError, ReadInfo, RowSink, Write, WriteOutcome};
use crate::config::model::{ColumnsConfig, PostgresProviderConfig};
use template::{Bind, Rendered, quote_ident};

/// How long connecting may take before it counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows fetched from the read cursor per round trip.
const FETCH_ROWS: usize = 10_000;
/// Keys per point-read statement in [`Provider::read_keys`].
const READ_KEYS_CHUNK: usize = 10_000;

/// A table `inventory(sku, location, qty, version)` (names configurable) in a
/// PostgreSQL database, or a templated query.
pub struct PostgresProvider {
    label: String,
    options: PgConnectOptions,
    secrets: Secrets,
    table: String,
    columns: ColumnsConfig,
    batch_size: usize,
    query: Option<Rendered>,
    rt: tokio::runtime::Runtime,
    conn: Option<PgConnection>,
    /// The table's shape, looked up once per connection.
    info: Option<TableInfo>,
}

/// What the writes need to know about the table.
#[derive(Debug, Clone)]
struct TableInfo {
    /// Casts that turn a text value into the key columns' types (empty for text).
    sku_cast: String,
    location_cast: String,
    has_version: bool,
    /// The quantity column's type; writes need a numeric one.
    qty_type: String,
    qty_numeric: bool,
}

/// Strings that must never appear in a message: the URL and its password.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets in a connection URL: the URL itself and its password (as
    /// written and percent-decoded, in the authority or as `password=`).
    pub fn of_url(url: &str) -> Secrets {
        let mut s = vec![url.to_owned()];
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
        {
            s.push(pw.to_owned());
        }
        if let Some((_, query)) = url.split_once('?') {
            for pair in query.split('&') {
                if let Some(pw) = pair.strip_prefix("password=") {
                    s.push(pw.to_owned());
                }
            }
        }
        let decoded: Vec<String> = s.iter().skip(1).map(|p| percent_decode(p)).collect();
        s.extend(decoded);
        s.retain(|x| x.len() >= 2);
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        s.dedup();
        Secrets(s)
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `"schema"."table"` from `schema.table` or `table`.
fn quote_table(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

/// Whether a database error is worth retrying: the server or the connection
/// failed, or the transaction lost a race it can win the next time.
pub(crate) fn transient_code(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, out of memory, disk full)
        || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
        || matches!(code, "40001" | "40P01" | "55P03" | "57014" | "58030")
}

impl PostgresProvider {
    pub fn from_config(cfg: &PostgresProviderConfig) -> Result<Self, ProviderError> {
        let label_table = format!("postgres (table {})", cfg.table);
        let url = super::net::secret_from_env(&cfg.url_env, &label_table)?;
        Self::open(&url, cfg, &format!("in `{}`", cfg.url_env))
    }

    /// A provider for the database at `url` (not connected until first used).
    pub fn new(url: &str, cfg: &PostgresProviderConfig) -> Result<Self, ProviderError> {
        Self::open(url, cfg, "given")
    }

    /// `url_from` says where the URL came from, for the message when it is malformed.
    fn open(url: &str, cfg: &PostgresProviderConfig, url_from: &str) -> Result<Self, ProviderError> {
        let secrets = Secrets::of_url(url);
        let invalid = |what: &str, message: String| ProviderError::Invalid { what: what.to_owned(), message };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                invalid(
                    "postgres",
                    format!(
                        "the connection URL {url_from} is not valid ({}); write it as postgres://user:password@host:5432/database",
                        secrets.redact(&e.to_string())
                    ),
                )
            })?
            .application_name("stockshift");
        let label = format!(
            "postgres {}:{}/{} ({})",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username()),
            match &cfg.query {
                Some(_) => "query".to_owned(),
                None => format!("table {}", cfg.table),
            }
        );
        let query = match &cfg.query {
            Some(q) => Some(
                template::render(q.trim().trim_end_matches(';'), &cfg.params)
                    .map_err(|e| invalid(&label, format!("the `query` template cannot be rendered: {e}")))?,
            ),
            None => None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| invalid(&label, format!("cannot start the I/O runtime: {e}")))?;
        Ok(PostgresProvider {
            label,
            options,
            secrets,
            table: cfg.table.clone(),
            columns: cfg.columns.clone(),
            batch_size: cfg.batch_size.max(1),
            query,
            rt,
            conn: None,
            info: None,
        })
    }

    /// Sets the number of writes per statement.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// A provider error from a sqlx error: transient ones are `Unavailable` (and
    /// drop the connection, so the next call makes a new one), the rest `Invalid`.
    fn fail(&mut self, doing: &str, e: sqlx::Error) -> ProviderError {
        self.conn = None;
        self.info = None;
        let what = self.label.clone();
        let transient = match &e {
            // A TLS or protocol error is a misconfiguration (certificates, a port that
            // is not PostgreSQL): retrying would only delay the message.
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| transient_code(&c)),
            _ => false,
        };
        let mut message = match &e {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| format!(" [SQLSTATE {c}]")).unwrap_or_default();
                let mut m = format!("{doing}: {}{code}", db.message());
                if db.code().as_deref() == Some("42P01") && self.query.is_none() {
                    m.push_str(&format!(
                        "; set `table:` in the plan to the inventory table (names are case-sensitive; `schema.table` is allowed), currently `{}`",
                        self.table
                    ));
                } else if db.code().as_deref() == Some("42703") && self.query.is_some() {
                    m.push_str(&format!(
                        "; the query must return the columns {}, {}, {}",
                        self.columns.sku, self.columns.location, self.columns.qty
                    ));
                } else if matches!(db.code().as_deref(), Some("28P01" | "28000")) {
                    m.push_str("; check the user and password in the connection URL");
                }
                m
            }
            sqlx::Error::Io(io) => format!("{doing}: {io}"),
            other => format!("{doing}: {other}"),
        };
        message = self.secrets.redact(&message);
        if transient { ProviderError::Unavailable { what, message } } else { ProviderError::Invalid { what, message } }
    }

    /// The open connection, made (with a timeout) when there is none.
    fn connect(&mut self) -> Result<(), ProviderError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let opts = self.options.clone();
        match self.rt.block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, opts.connect()).await }) {
            Ok(Ok(c)) => {
                self.conn = Some(c);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail("cannot connect", e)),
            Err(_) => Err(ProviderError::Unavailable {
                what: self.label.clone(),
                message: format!("cannot connect: no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Looks the table up: it must exist with the configured columns.
    fn table_info(&mut self) -> Result<TableInfo, ProviderError> {
        if let Some(i) = &self.info {
            return Ok(i.clone());
        }
        self.connect()?;
        let sql = "SELECT a.attname::text, format_type(a.atttypid, NULL), t.typcategory::text \
                   FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                   WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
        let name = quote_table(&self.table);
        let conn = self.conn.as_mut().expect("connected above");
        let rows = self.rt.block_on(sqlx::query(sql).bind(&name).fetch_all(&mut *conn));
        let rows = rows.map_err(|e| self.fail(&format!("cannot look up table `{}`", self.table), e))?;
        let cols: Vec<(String, String, String)> =
            rows.iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<String, _>(2))).collect();
        if cols.is_empty() {
            return Err(ProviderError::Invalid {
                what: self.label.clone(),
                message: format!(
                    "no table `{}` in the database; set `table:` in the plan to the inventory table's name \
                     (names are case-sensitive; `schema.table` is allowed)",
                    self.table
                ),
            });
        }
        let find = |name: &str| cols.iter().find(|c| c.0 == name);
        let missing: Vec<&str> = [&self.columns.sku, &self.columns.location, &self.columns.qty]
            .into_iter()
            .filter(|c| find(c).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(ProviderError::Invalid {
                what: self.label.clone(),
                message: format!(
                    "table `{}` has no column(s) {} (it has {}); set `columns:` in the plan",
                    self.table,
                    missing.join(", "),
                    cols.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let cast = |col: &str| match find(col) {
            Some((_, ty, _)) if ty != "text" => format!("::{ty}"),
            _ => String::new(),
        };
        let info = TableInfo {
            sku_cast: cast(&self.columns.sku),
            location_cast: cast(&self.columns.location),
            has_version: find(&self.columns.version).is_some_and(|c| c.2 == "N"),
            qty_type: find(&self.columns.qty).map(|c| c.1.clone()).unwrap_or_default(),
            qty_numeric: find(&self.columns.qty).is_some_and(|c| c.2 == "N"),
        };
        self.info = Some(info.clone());
        Ok(info)
    }

    /// The snapshot query and its binds.
    fn select(&self) -> (String, Vec<Bind>) {
        let c = &self.columns;
        let (sku, loc, qty) = (quote_ident(&c.sku), quote_ident(&c.location), quote_ident(&c.qty));
        match &self.query {
            Some(q) => {
                (format!("SELECT q.{sku}::text, q.{loc}::text, q.{qty}::text FROM ({}\n) AS q", q.sql), q.binds.clone())
            }
            None => (format!("SELECT {sku}::text, {loc}::text, {qty}::text FROM {}", quote_table(&self.table)), vec![]),
        }
    }

    /// The statements making one run of writes (distinct keys): the updates alone
    /// (no create in the run) and updates with creates. Both return the ordinal
    /// (1-based) of every write they made.
    fn write_sql(&self, info: &TableInfo) -> (String, String) {
        let c = &self.columns;
        let t = quote_table(&self.table);
        let (sku, loc, qty, ver) =
            (quote_ident(&c.sku), quote_ident(&c.location), quote_ident(&c.qty), quote_ident(&c.version));
        let (sc, lc) = (&info.sku_cast, &info.location_cast);
        let (bump, ins_cols, ins_vals) = if info.has_version {
            (format!(", {ver} = coalesce(t.{ver}, 0) + 1"), format!(", {ver}"), ", 1")
        } else {
            (String::new(), String::new(), "")
        };
        let unnest = "unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY AS v(sku, location, expected, new, i)";
        let set_where = format!(
            "SET {qty} = v.new{bump} FROM {{v}} \
             WHERE t.{sku} = v.sku{sc} AND t.{loc} = v.location{lc} AND t.{qty} = v.expected AND t.{qty} IS DISTINCT FROM v.new"
        );
        let updates = format!("UPDATE {t} AS t {} RETURNING v.i", set_where.replace("{v}", unnest));
        let with_creates = format!(
            "WITH v AS (SELECT * FROM {unnest}),
upd AS (UPDATE {t} AS t {} RETURNING v.i),
ins AS (
  INSERT INTO {t} ({sku}, {loc}, {qty}{ins_cols})
  SELECT v.sku{sc}, v.location{lc}, v.new{ins_vals} FROM v
  WHERE v.expected IS NULL
    AND NOT EXISTS (SELECT 1 FROM {t} AS e WHERE e.{sku} = v.sku{sc} AND e.{loc} = v.location{lc})
  ON CONFLICT DO NOTHING
  RETURNING {sku}::text AS sku, {loc}::text AS location
)
SELECT upd.i FROM upd
UNION ALL SELECT v.i FROM ins JOIN v ON v.sku = ins.sku AND v.location = ins.location",
            set_where.replace("{v}", "v")
        );
        (updates, with_creates)
    }

    /// Point reads: the quantity (as text) of each key of `$1`, `$2`, in order.
    fn point_read_sql(&self, info: &TableInfo) -> String {
        let c = &self.columns;
        format!(
            "SELECT (SELECT c.{qty}::text FROM {t} AS c WHERE c.{sku} = v.sku{sc} AND c.{loc} = v.location{lc}) \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS v(sku, location, i) ORDER BY v.i",
            qty = quote_ident(&c.qty),
            t = quote_table(&self.table),
            sku = quote_ident(&c.sku),
            loc = quote_ident(&c.location),
            sc = info.sku_cast,
            lc = info.location_cast,
        )
    }
}

/// Runs of writes with distinct keys, in order (a key named twice starts a new run).
fn runs(writes: &[Write]) -> Vec<&[Write]> {
    let mut out = vec![];
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(writes.len());
    let mut start = 0;
    for (i, w) in writes.iter().enumerate() {
        if !seen.insert((w.sku.as_str(), w.location.as_str())) {
            out.push(&writes[start..i]);
            start = i;
            seen.clear();
            seen.insert((w.sku.as_str(), w.location.as_str()));
        }
    }
    if start < writes.len() {
        out.push(&writes[start..]);
    }
    out
}

/// The arguments of the write statement: four parallel arrays.
fn write_args(run: &[Write]) -> Result<PgArguments, sqlx::Error> {
    let mut skus = Vec::with_capacity(run.len());
    let mut locs = Vec::with_capacity(run.len());
    let mut expected = Vec::with_capacity(run.len());
    let mut new = Vec::with_capacity(run.len());
    for w in run {
        skus.push(w.sku.as_str());
        locs.push(w.location.as_str());
        expected.push(w.expected);
        new.push(w.new);
    }
    let mut args = PgArguments::default();
    args.add(skus).map_err(sqlx::Error::Encode)?;
    args.add(locs).map_err(sqlx::Error::Encode)?;
    args.add(expected).map_err(sqlx::Error::Encode)?;
    args.add(new).map_err(sqlx::Error::Encode)?;
    Ok(args)
}

fn bind_args(binds: &[Bind]) -> Result<PgArguments, sqlx::Error> {
    let mut args = PgArguments::default();
    for b in binds {
        let r = match b {
            Bind::Null => args.add(None::<String>),
            Bind::Bool(v) => args.add(*v),
            Bind::Int(v) => args.add(*v),
            Bind::Float(v) => args.add(*v),
            Bind::Text(v) => args.add(v.as_str()),
            Bind::IntArray(v) => args.add(v.as_slice()),
            Bind::TextArray(v) => args.add(v.as_slice()),
        };
        r.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// Streams rows of the read cursor into the sink; returns how many rows were read.
fn emit(rows: &[PgRow], first_line: u64, sink: &mut dyn RowSink) -> Result<(), sqlx::Error> {
    for (k, row) in rows.iter().enumerate() {
        let line = first_line + k as u64;
        let sku = row.try_get::<Option<&str>, _>(0)?;
        let loc = row.try_get::<Option<&str>, _>(1)?;
        let qty = row.try_get::<Option<&str>, _>(2)?;
        let (Some(sku), Some(loc)) = (sku, loc) else {
            sink.problem(
                line,
                0,
                format!("Row {line} has no SKU or no location (NULL)"),
                "Every row needs a SKU and a location.".into(),
            );
            continue;
        };
        match qty.map(|q| (q, super::parse_qty(q))) {
            Some((_, Some(q))) => sink.row(sku, loc, q, line),
            Some((raw, None)) => {
                let shown: String = raw.chars().take(40).collect();
                sink.problem(
                    line,
                    0,
                    format!("Row ({sku}, {loc}) has a quantity that is not a whole number in range: `{shown}`"),
                    "Quantities are whole numbers of units (64-bit integers).".into(),
                );
            }
            None => sink.problem(
                line,
                0,
                format!("Row ({sku}, {loc}) has no quantity (NULL)"),
                "Quantities are whole numbers of units; set one or leave the row out.".into(),
            ),
        }
    }
    Ok(())
}

impl Provider for PostgresProvider {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let compare = if self.query.is_some() { CompareMode::ReadOnly } else { CompareMode::Native };
        Capabilities { compare, max_batch: self.batch_size, max_requests_per_sec: None }
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        if self.query.is_none() {
            // A clear message for a missing table or column, before any SQL error.
            self.table_info()?;
        }
        self.connect()?;
        let (sql, binds) = self.select();
        let conn = self.conn.as_mut().expect("connected above");
        let res: Result<u64, sqlx::Error> = self.rt.block_on(async {
            sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *conn).await?;
            let declare = format!("DECLARE stockshift_read NO SCROLL CURSOR FOR {sql}");
            sqlx::query_with(AssertSqlSafe(declare), bind_args(&binds)?).execute(&mut *conn).await?;
            let fetch = format!("FETCH {FETCH_ROWS} FROM stockshift_read");
            let mut n = 0u64;
            loop {
                let rows = sqlx::query(AssertSqlSafe(fetch.as_str())).fetch_all(&mut *conn).await?;
                if rows.is_empty() {
                    break;
                }
                emit(&rows, n + 1, sink)?;
                n += rows.len() as u64;
            }
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
            Ok(n)
        });
        let rows = res.map_err(|e| self.fail("cannot read", e))?;
        Ok(ReadInfo { rows, sha256: None })
    }

    fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        if self.query.is_some() {
            return Err(ProviderError::Invalid {
                what: self.label.clone(),
                message: "a provider with `query:` is read-only; remove `query:` to write to `table:`".into(),
            });
        }
        if writes.is_empty() {
            return Ok(vec![]);
        }
        let info = self.table_info()?;
        if !info.qty_numeric {
            return Err(ProviderError::Invalid {
                what: self.label.clone(),
                message: format!(
                    "column `{}` of table `{}` is of type {}; conditional writes need a numeric column",
                    self.columns.qty, self.table, info.qty_type
                ),
            });
        }
        let (updates_sql, creates_sql) = self.write_sql(&info);
        let read_sql = self.point_read_sql(&info);
        let runs = runs(writes);
        let conn = self.conn.as_mut().expect("connected by table_info");
        let res: Result<Vec<WriteOutcome>, sqlx::Error> = self.rt.block_on(async {
            let mut out = Vec::with_capacity(writes.len());
            // Several runs are made in one transaction; a single one is one statement,
            // a transaction of its own.
            let explicit = runs.len() > 1;
            if explicit {
                sqlx::raw_sql("BEGIN").execute(&mut *conn).await?;
            }
            for run in &runs {
                let sql = if run.iter().any(|w| w.expected.is_none()) { &creates_sql } else { &updates_sql };
                let rows =
                    sqlx::query_with(AssertSqlSafe(sql.as_str()), write_args(run)?).fetch_all(&mut *conn).await?;
                let mut applied = vec![false; run.len()];
                for r in &rows {
                    let i = r.try_get::<i64, _>(0)?;
                    match usize::try_from(i - 1).ok().and_then(|i| applied.get_mut(i)) {
                        Some(a) => *a = true,
                        None => return Err(sqlx::Error::Protocol(format!("the write statement returned ordinal {i}"))),
                    }
                }
                // The writes not made: read what the keys hold now, to tell "already
                // applied" from a conflict. (At READ COMMITTED this sees the same as a
                // read inside the statement's transaction would, and a fresher value.)
                let missed: Vec<&Write> = run.iter().zip(&applied).filter(|(_, a)| !**a).map(|(w, _)| w).collect();
                let mut found = Vec::with_capacity(missed.len()).into_iter();
                if !missed.is_empty() {
                    let skus: Vec<&str> = missed.iter().map(|w| w.sku.as_str()).collect();
                    let locs: Vec<&str> = missed.iter().map(|w| w.location.as_str()).collect();
                    let rows = sqlx::query(AssertSqlSafe(read_sql.as_str()))
                        .bind(skus)
                        .bind(locs)
                        .fetch_all(&mut *conn)
                        .await?;
                    let mut vals = Vec::with_capacity(rows.len());
                    for r in &rows {
                        vals.push(r.try_get::<Option<&str>, _>(0)?.and_then(super::parse_qty));
                    }
                    found = vals.into_iter();
                }
                for (w, a) in run.iter().zip(&applied) {
                    out.push(if *a {
                        WriteOutcome::Applied
                    } else {
                        match found.next().flatten() {
                            Some(q) if q == w.new => WriteOutcome::AlreadyApplied,
                            f => WriteOutcome::Conflict { found: f },
                        }
                    });
                }
            }
            if explicit {
                sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
            }
            Ok(out)
        });
        // Any error drops the connection (see `fail`), which also ends an open
        // transaction: the server rolls it back.
        res.map_err(|e| self.fail("cannot write", e))
    }

    fn read_keys(&mut self, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
        if self.query.is_some() {
            // A query source has no point reads: read it whole (the default).
            return read_keys_by_scan(self, keys);
        }
        let info = self.table_info()?;
        let sql = self.point_read_sql(&info);
        let conn = self.conn.as_mut().expect("connected by table_info");
        let res: Result<Vec<Option<i64>>, sqlx::Error> = self.rt.block_on(async {
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(READ_KEYS_CHUNK) {
                let skus: Vec<&str> = chunk.iter().map(|k| k.0.as_str()).collect();
                let locs: Vec<&str> = chunk.iter().map(|k| k.1.as_str()).collect();
                let rows = sqlx::query(AssertSqlSafe(sql.as_str())).bind(skus).bind(locs).fetch_all(&mut *conn).await?;
                for r in &rows {
                    out.push(r.try_get::<Option<&str>, _>(0)?.and_then(super::parse_qty));
                }
            }
            Ok(out)
        });
        res.map_err(|e| self.fail("cannot read keys", e))
    }
}

/// A whole read, keeping the wanted keys.
fn read_keys_by_scan(p: &mut PostgresProvider, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
    super::read_keys_by_scan(keys, |sink| p.read(sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_of_a_url_are_redacted() {
        let url = "postgres://app:s3cr%40t@db.example:5432/shop?sslmode=require";
        let s = Secrets::of_url(url);
        let msg = format!("failed for {url}: password s3cr@t and s3cr%40t rejected");
        let r = s.redact(&msg);
        assert!(!r.contains("s3cr"), "{r}");
        assert!(r.contains("***"), "{r}");
        let s = Secrets::of_url("postgres://app@h/db?password=hunter22&x=1");
        assert_eq!(s.redact("pw hunter22"), "pw ***");
        assert_eq!(Secrets::of_url("postgres://h/db").redact("plain text"), "plain text");
    }

    #[test]
    fn runs_split_on_a_repeated_key() {
        let w = |s: &str| Write { sku: s.into(), location: "L".into(), expected: None, new: 1 };
        let ws = vec![w("A"), w("B"), w("A"), w("C"), w("C")];
        let r = runs(&ws);
        assert_eq!(r.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn transient_codes() {
        for c in ["08006", "08001", "40001", "40P01", "57P01", "53300", "55P03"] {
            assert!(transient_code(c), "{c}");
        }
        for c in ["42P01", "28P01", "23505", "22003", "3D000"] {
            assert!(!transient_code(c), "{c}");
        }
    }

    #[test]
    fn table_names_are_quoted() {
        assert_eq!(quote_table("inventory"), "\"inventory\"");
        assert_eq!(quote_table("shop.Stock"), "\"shop\".\"Stock\"");
    }
}
