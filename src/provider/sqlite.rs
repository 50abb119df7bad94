//! The `sqlite` provider: one inventory table in a SQLite file. Readable and
//! writable, with native compare-and-set (a conditional write inside a transaction).

use std::borrow::Cow;
use std::path::PathBuf;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{Capabilities, CompareMode, Provider, ProviderError, ReadInfo, ReadPart, RowSink, Write, WriteOutcome};
use crate::config::model::ColumnsConfig;

/// A table `inventory(sku, location, qty, version)` (names configurable).
pub struct SqliteProvider {
    path: PathBuf,
    table: String,
    columns: ColumnsConfig,
    batch_size: usize,
    conn: Option<Connection>,
}

/// Writes per transaction; SQLite handles large batches well, and one commit
/// (one fsync) per batch is what makes bulk applies fast.
pub const SQLITE_BATCH: usize = 2000;

impl SqliteProvider {
    pub fn new(path: PathBuf, table: String, columns: ColumnsConfig) -> Self {
        SqliteProvider { path, table, columns, batch_size: SQLITE_BATCH, conn: None }
    }

    /// Sets the number of writes per transaction.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    fn err(&self, message: impl std::fmt::Display) -> ProviderError {
        ProviderError::Unavailable { what: self.describe(), message: message.to_string() }
    }

    fn conn(&mut self) -> Result<&mut Connection, ProviderError> {
        if self.conn.is_none() {
            if !self.path.exists() {
                return Err(ProviderError::Invalid {
                    what: self.describe(),
                    message: "the database file does not exist; create it with a table `inventory(sku TEXT, location TEXT, qty INTEGER, version INTEGER)`".into(),
                });
            }
            let conn = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| self.err(e))?;
            conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| self.err(e))?;
            self.check_table(&conn)?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    fn check_table(&self, conn: &Connection) -> Result<(), ProviderError> {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)").map_err(|e| self.err(e))?;
        let cols: Vec<String> = stmt
            .query_map([&self.table], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        if cols.is_empty() {
            return Err(ProviderError::Invalid {
                what: self.describe(),
                message: format!(
                    "no table `{}` in the database; set `table:` in the plan to the inventory table's name",
                    self.table
                ),
            });
        }
        let missing: Vec<&str> = [&self.columns.sku, &self.columns.location, &self.columns.qty]
            .into_iter()
            .filter(|c| !cols.iter().any(|x| x == *c))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(ProviderError::Invalid {
                what: self.describe(),
                message: format!(
                    "table `{}` has no column(s) {} (it has {}); set `columns:` in the plan",
                    self.table,
                    missing.join(", "),
                    cols.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// The snapshot query; with a range, only lo < rowid <= hi (each bound optional).
    fn select(&self, range: Option<(Option<i64>, Option<i64>)>) -> String {
        let mut sql = format!(
            "SELECT \"{}\", \"{}\", \"{}\", rowid FROM \"{}\"",
            self.columns.sku, self.columns.location, self.columns.qty, self.table
        );
        if let Some((lo, hi)) = range {
            let conds: Vec<String> = [lo.map(|l| format!("rowid > {l}")), hi.map(|h| format!("rowid <= {h}"))]
                .into_iter()
                .flatten()
                .collect();
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
            sql.push_str(" ORDER BY rowid");
        }
        sql
    }

    /// Another connection to the same file, for one part of a split read.
    fn open_reader(&self) -> Result<Connection, ProviderError> {
        let conn =
            Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| self.err(e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| self.err(e))?;
        Ok(conn)
    }

    fn has_version(&mut self) -> Result<bool, ProviderError> {
        let table = self.table.clone();
        let version = self.columns.version.clone();
        let conn = self.conn()?;
        let n: i64 = conn
            .query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", params![table, version], |r| {
                r.get(0)
            })
            .map_err(|e| ProviderError::Unavailable { what: table.clone(), message: e.to_string() })?;
        Ok(n > 0)
    }
}

impl Provider for SqliteProvider {
    fn describe(&self) -> String {
        format!("sqlite {} (table {})", self.path.display(), self.table)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { compare: CompareMode::Native, max_batch: self.batch_size, max_requests_per_sec: None }
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        let sql = self.select(None);
        let what = self.describe();
        let conn = self.conn()?;
        let rows = stream_rows(conn, &sql, &what, sink)?;
        Ok(ReadInfo { rows, sha256: None })
    }

    /// Contiguous rowid ranges, each read on its own connection. Every part's read
    /// transaction starts while the first part's holds its SHARED lock, which (outside
    /// WAL mode) no commit can get past, so all parts read the same snapshot; a WAL
    /// database, where commits can land between the parts' starts, is not split.
    fn read_parts(&mut self, parts: usize) -> Result<Option<Vec<ReadPart>>, ProviderError> {
        if parts < 2 {
            return Ok(None);
        }
        let what = self.describe();
        let table = self.table.clone();
        let journal: String = {
            let conn = self.conn()?; // also checks the table and its columns, as `read` does
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(|e| self.err(e))?
        };
        if journal.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
        let first = self.open_reader()?;
        first.execute_batch("BEGIN").map_err(|e| self.err(e))?;
        let (lo, hi): (Option<i64>, Option<i64>) = first
            // Two subqueries: SQLite reads a b-tree end for a lone min() or max(), but
            // scans the whole table for both in one SELECT.
            .query_row(
                &format!("SELECT (SELECT min(rowid) FROM \"{table}\"), (SELECT max(rowid) FROM \"{table}\")"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(None) };
        let span = i128::from(hi) - i128::from(lo);
        if span < SPLIT_MIN_ROWS * parts as i128 {
            return Ok(None);
        }
        // Part k reads lo_k < rowid <= hi_k; the first has no lower bound and the last no
        // upper one, so every row is read exactly once whatever the rowids.
        let cut = |k: usize| (i128::from(lo) + span * k as i128 / parts as i128) as i64;
        let mut conns = vec![first];
        for _ in 1..parts {
            let c = self.open_reader()?;
            c.execute_batch("BEGIN").map_err(|e| self.err(e))?;
            c.query_row(&format!("SELECT count(*) FROM (SELECT 1 FROM \"{table}\" LIMIT 1)"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| self.err(e))?;
            conns.push(c);
        }
        let out = conns
            .into_iter()
            .enumerate()
            .map(|(k, conn)| {
                let range =
                    (if k == 0 { None } else { Some(cut(k)) }, if k + 1 == parts { None } else { Some(cut(k + 1)) });
                let sql = self.select(Some(range));
                let what = what.clone();
                Box::new(move |sink: &mut dyn RowSink| {
                    let rows = stream_rows(&conn, &sql, &what, sink)?;
                    conn.execute_batch("COMMIT")
                        .map_err(|e| ProviderError::Unavailable { what, message: e.to_string() })?;
                    Ok(ReadInfo { rows, sha256: None })
                }) as ReadPart
            })
            .collect();
        Ok(Some(out))
    }

    fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        let with_version = self.has_version()?;
        let (t, c) = (self.table.clone(), self.columns.clone());
        let what = self.describe();
        let conn = self.conn()?;
        let fail = |e: rusqlite::Error| ProviderError::Unavailable { what: what.clone(), message: e.to_string() };
        let tx = conn.transaction().map_err(fail)?;
        let mut out = Vec::with_capacity(writes.len());
        {
            let mut read = tx
                .prepare_cached(&format!(
                    "SELECT \"{}\" FROM \"{t}\" WHERE \"{}\" = ?1 AND \"{}\" = ?2",
                    c.qty, c.sku, c.location
                ))
                .map_err(fail)?;
            let bump =
                if with_version { format!(", \"{0}\" = coalesce(\"{0}\", 0) + 1", c.version) } else { String::new() };
            let mut update = tx
                .prepare_cached(&format!(
                    "UPDATE \"{t}\" SET \"{}\" = ?3{bump} WHERE \"{}\" = ?1 AND \"{}\" = ?2 AND \"{}\" = ?4",
                    c.qty, c.sku, c.location, c.qty
                ))
                .map_err(fail)?;
            let insert = if with_version {
                format!(
                    "INSERT INTO \"{t}\" (\"{}\", \"{}\", \"{}\", \"{}\") VALUES (?1, ?2, ?3, 1)",
                    c.sku, c.location, c.qty, c.version
                )
            } else {
                format!("INSERT INTO \"{t}\" (\"{}\", \"{}\", \"{}\") VALUES (?1, ?2, ?3)", c.sku, c.location, c.qty)
            };
            let mut insert = tx.prepare_cached(&insert).map_err(fail)?;
            for w in writes {
                let current: Option<i64> =
                    read.query_row(params![w.sku, w.location], |r| r.get(0)).optional().map_err(fail)?;
                let outcome = match (current, w.expected) {
                    (Some(cur), _) if cur == w.new => WriteOutcome::AlreadyApplied,
                    (Some(cur), Some(exp)) if cur == exp => {
                        update.execute(params![w.sku, w.location, w.new, exp]).map_err(fail)?;
                        WriteOutcome::Applied
                    }
                    (None, None) => {
                        insert.execute(params![w.sku, w.location, w.new]).map_err(fail)?;
                        WriteOutcome::Applied
                    }
                    (found, _) => WriteOutcome::Conflict { found },
                };
                out.push(outcome);
            }
        }
        tx.commit().map_err(fail)?;
        Ok(out)
    }
}

/// Smallest rowid span per part worth a thread of its own.
const SPLIT_MIN_ROWS: i128 = 50_000;

/// Runs a snapshot query and streams its rows into `sink`; returns how many.
fn stream_rows(conn: &Connection, sql: &str, what: &str, sink: &mut dyn RowSink) -> Result<u64, ProviderError> {
    let fail = |e: rusqlite::Error| ProviderError::Unavailable { what: what.to_owned(), message: e.to_string() };
    let mut stmt = conn.prepare(sql).map_err(fail)?;
    let mut rs = stmt.query([]).map_err(fail)?;
    let mut rows = 0u64;
    while let Some(row) = rs.next().map_err(fail)? {
        rows += 1;
        let line = row.get_ref(3).ok().and_then(|v| v.as_i64().ok()).unwrap_or(0).max(0) as u64;
        // Text is passed on as borrowed from SQLite's row buffer: no allocation per row.
        let text = |i: usize| -> Option<Cow<'_, str>> {
            match row.get_ref(i).ok()? {
                ValueRef::Text(t) => std::str::from_utf8(t).ok().map(Cow::Borrowed),
                ValueRef::Integer(n) => Some(Cow::Owned(n.to_string())),
                _ => None,
            }
        };
        let (Some(sku), Some(loc)) = (text(0), text(1)) else {
            sink.problem(
                line,
                0,
                "Row with a missing or non-text SKU or location".into(),
                "Every row needs a SKU and a location.".into(),
            );
            continue;
        };
        let qty = match row.get_ref(2) {
            Ok(ValueRef::Integer(n)) => Some(n),
            Ok(ValueRef::Text(t)) => std::str::from_utf8(t).ok().and_then(super::parse_qty),
            Ok(ValueRef::Real(f)) if f.fract() == 0.0 && f.abs() < 9e15 => Some(f as i64),
            _ => None,
        };
        match qty {
            Some(q) => sink.row(&sku, &loc, q, line),
            None => sink.problem(
                line,
                0,
                format!("Row ({sku}, {loc}) has a missing or non-integer quantity"),
                "Quantities are whole numbers of units.".into(),
            ),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(rows: &[(&str, &str, i64)]) -> (tempfile::TempDir, SqliteProvider) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        let conn = Connection::open(&p).unwrap();
        conn.execute_batch(
            "CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));",
        )
        .unwrap();
        for (s, l, q) in rows {
            conn.execute("INSERT INTO inventory (sku, location, qty) VALUES (?1, ?2, ?3)", params![s, l, q]).unwrap();
        }
        (dir, SqliteProvider::new(p, "inventory".into(), ColumnsConfig::default()))
    }

    #[test]
    fn conditional_writes_report_each_outcome() {
        let (_d, mut p) = db(&[("A", "W", 5), ("B", "W", 3), ("C", "W", 9)]);
        let w = |s: &str, e: Option<i64>, n: i64| Write { sku: s.into(), location: "W".into(), expected: e, new: n };
        let out = p
            .write_batch(&[
                w("A", Some(5), 7),
                w("B", Some(1), 4),
                w("C", Some(2), 9),
                w("D", None, 1),
                w("E", Some(1), 2),
            ])
            .unwrap();
        assert_eq!(
            out,
            vec![
                WriteOutcome::Applied,
                WriteOutcome::Conflict { found: Some(3) },
                WriteOutcome::AlreadyApplied,
                WriteOutcome::Applied,
                WriteOutcome::Conflict { found: None },
            ]
        );
        #[derive(Default)]
        struct Rows(Vec<(String, i64)>);
        impl RowSink for Rows {
            fn row(&mut self, sku: &str, _l: &str, qty: i64, _line: u64) {
                self.0.push((sku.into(), qty));
            }
            fn problem(&mut self, _: u64, _: usize, s: String, _: String) {
                panic!("{s}");
            }
        }
        let mut r = Rows::default();
        p.read(&mut r).unwrap();
        r.0.sort();
        assert_eq!(r.0, vec![("A".into(), 7), ("B".into(), 3), ("C".into(), 9), ("D".into(), 1)]);
    }

    #[test]
    fn missing_table_and_columns_are_explained() {
        let (_d, p) = db(&[]);
        let mut p2 = SqliteProvider::new(p.path.clone(), "stock".into(), ColumnsConfig::default());
        struct Nop;
        impl RowSink for Nop {
            fn row(&mut self, _: &str, _: &str, _: i64, _: u64) {}
            fn problem(&mut self, _: u64, _: usize, _: String, _: String) {}
        }
        let e = p2.read(&mut Nop).unwrap_err().to_string();
        assert!(e.contains("no table `stock`"), "{e}");
        let cols = ColumnsConfig { qty: "quantity".into(), ..ColumnsConfig::default() };
        let mut p3 = SqliteProvider::new(p.path.clone(), "inventory".into(), cols);
        let e = p3.read(&mut Nop).unwrap_err().to_string();
        assert!(e.contains("no column(s) quantity"), "{e}");
    }

    #[derive(Default)]
    struct All(Vec<(String, String, i64, u64)>, Vec<(u64, String)>);
    impl RowSink for All {
        fn row(&mut self, sku: &str, l: &str, qty: i64, line: u64) {
            self.0.push((sku.into(), l.into(), qty, line));
        }
        fn problem(&mut self, line: u64, _: usize, s: String, _: String) {
            self.1.push((line, s));
        }
    }

    #[test]
    fn split_reads_stream_the_same_rows_from_one_snapshot() {
        let (_d, mut p) = db(&[]);
        {
            let conn = Connection::open(&p.path).unwrap();
            let tx = conn.unchecked_transaction().unwrap();
            let mut ins =
                tx.prepare("INSERT INTO inventory (rowid, sku, location, qty) VALUES (?1, ?2, ?3, ?4)").unwrap();
            // Gaps, negative rowids, and a few rows that are problems.
            for i in (-40_000i64..200_000).filter(|i| i % 7 != 3) {
                let qty: rusqlite::types::Value =
                    if i % 9_999 == 0 { "x".to_string().into() } else { (i % 500).into() };
                ins.execute(params![i * 3, format!("S{i}"), format!("L{}", i % 4), qty]).unwrap();
            }
            drop(ins);
            tx.commit().unwrap();
        }
        let mut whole = All::default();
        let info = p.read(&mut whole).unwrap();
        assert_eq!(info.rows as usize, whole.0.len() + whole.1.len());
        for n in [2, 3] {
            let parts = p.read_parts(n).unwrap().expect("a large rollback-journal table is split");
            assert_eq!(parts.len(), n);
            // While the parts are pending, their snapshot holds: no commit can land.
            let w = Connection::open(&p.path).unwrap();
            w.busy_timeout(std::time::Duration::ZERO).unwrap();
            assert!(w.execute("UPDATE inventory SET qty = qty + 1", []).is_err());
            let mut split = All::default();
            let mut rows = 0;
            for part in parts {
                rows += part(&mut split).unwrap().rows;
            }
            assert_eq!(rows, info.rows);
            assert_eq!(split.0, whole.0);
            assert_eq!(split.1, whole.1);
            // Once read, the parts have let go of the database.
            w.execute("UPDATE inventory SET qty = qty WHERE rowid = 3", []).unwrap();
        }
        assert!(p.read_parts(1).unwrap().is_none());
        // A WAL database is read in one part: commits could land between the parts' starts.
        Connection::open(&p.path).unwrap().pragma_update(None, "journal_mode", "wal").unwrap();
        let (_d2, mut small) = db(&[("A", "W", 1)]);
        let mut p2 = SqliteProvider::new(p.path.clone(), "inventory".into(), ColumnsConfig::default());
        assert!(p2.read_parts(2).unwrap().is_none());
        assert!(small.read_parts(2).unwrap().is_none(), "a small table is not worth splitting");
    }
}
