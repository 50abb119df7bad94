//! The `csv` provider: a snapshot file with a header row. Read-only.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{Capabilities, CompareMode, Provider, ProviderError, ReadInfo, RowSink, Write, WriteOutcome, parse_qty};
use crate::config::model::ColumnsConfig;

/// Reads `sku,location,qty[,version]` rows (column names configurable).
pub struct CsvProvider {
    path: PathBuf,
    columns: ColumnsConfig,
}

impl CsvProvider {
    pub fn new(path: PathBuf, columns: ColumnsConfig) -> Self {
        CsvProvider { path, columns }
    }
}

/// Hashes everything read through it, so a file is read once for rows and digest.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// Reads what is left (so the digest covers the whole file) and returns it in hex.
    pub fn finish(mut self) -> io::Result<String> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read(&mut buf)? > 0 {}
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl Provider for CsvProvider {
    fn describe(&self) -> String {
        format!("csv {}", self.path.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { compare: CompareMode::ReadOnly, max_batch: 0, max_requests_per_sec: None }
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        let what = self.describe();
        let file = File::open(&self.path)
            .map_err(|e| ProviderError::Unavailable { what: what.clone(), message: e.to_string() })?;
        let hashing = HashingReader::new(io::BufReader::with_capacity(1 << 20, file));
        let mut rdr =
            csv::ReaderBuilder::new().has_headers(true).flexible(true).buffer_capacity(1 << 20).from_reader(hashing);
        let headers = match rdr.byte_headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                sink.problem(
                    1,
                    1,
                    format!("Unreadable header row: {e}"),
                    "The first line must name the columns, e.g. `sku,location,qty`.".into(),
                );
                return Ok(ReadInfo { rows: 0, sha256: None });
            }
        };
        let find = |name: &str| headers.iter().position(|h| trim(h) == name.as_bytes());
        let (Some(ci_sku), Some(ci_loc), Some(ci_qty)) =
            (find(&self.columns.sku), find(&self.columns.location), find(&self.columns.qty))
        else {
            let missing: Vec<&str> = [&self.columns.sku, &self.columns.location, &self.columns.qty]
                .into_iter()
                .filter(|c| find(c).is_none())
                .map(String::as_str)
                .collect();
            sink.problem(
                1,
                1,
                format!("Missing column(s) {} in the header row", missing.join(", ")),
                format!(
                    "The first line must name the columns, e.g. `{},{},{}`; set `columns:` in the plan if the file uses other names.",
                    self.columns.sku, self.columns.location, self.columns.qty
                ),
            );
            return Ok(ReadInfo { rows: 0, sha256: None });
        };
        let mut rec = csv::ByteRecord::new();
        let mut rows = 0u64;
        loop {
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    sink.problem(
                        line,
                        1,
                        format!("Unreadable CSV row: {e}"),
                        "Fix the quoting or encoding of this line.".into(),
                    );
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        break;
                    }
                    continue;
                }
            }
            let line = rec.position().map_or(0, |p| p.line());
            rows += 1;
            let field = |i: usize| rec.get(i).map(trim).unwrap_or(b"");
            let (Ok(sku), Ok(loc)) = (std::str::from_utf8(field(ci_sku)), std::str::from_utf8(field(ci_loc))) else {
                sink.problem(line, 1, "Row is not UTF-8 text".into(), "Save the file as UTF-8.".into());
                continue;
            };
            let raw_qty = field(ci_qty);
            let qty = std::str::from_utf8(raw_qty).ok().and_then(parse_qty);
            match qty {
                Some(q) => sink.row(sku, loc, q, line),
                None => {
                    let col = column_of(&rec, ci_qty);
                    let shown = String::from_utf8_lossy(raw_qty);
                    let summary = if shown.is_empty() {
                        "Missing quantity".to_string()
                    } else {
                        format!("Quantity `{}` is not an integer", shown.chars().take(40).collect::<String>())
                    };
                    sink.problem(
                        line,
                        col,
                        summary,
                        "Quantities are whole numbers of units, e.g. `12` or `-3`.".into(),
                    );
                }
            }
        }
        let sha = rdr.into_inner().finish().map_err(|e| ProviderError::Unavailable { what, message: e.to_string() })?;
        Ok(ReadInfo { rows, sha256: Some(sha) })
    }

    fn write_batch(&mut self, _writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        Err(ProviderError::Invalid {
            what: self.describe(),
            message: "the csv provider is read-only; use a writable target such as sqlite".into(),
        })
    }
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// 1-based column of field `i` (exact for unquoted fields).
fn column_of(rec: &csv::ByteRecord, i: usize) -> usize {
    1 + (0..i).map(|j| rec.get(j).map_or(0, |f| f.len()) + 1).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        rows: Vec<(String, String, i64, u64)>,
        problems: Vec<(u64, usize, String)>,
    }

    impl RowSink for Collect {
        fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
            self.rows.push((sku.into(), location.into(), qty, line));
        }
        fn problem(&mut self, line: u64, col: usize, summary: String, _help: String) {
            self.problems.push((line, col, summary));
        }
    }

    fn read(text: &[u8]) -> (Collect, ReadInfo) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, text).unwrap();
        let mut c = Collect::default();
        let info = CsvProvider::new(p, ColumnsConfig::default()).read(&mut c).unwrap();
        (c, info)
    }

    #[test]
    fn reads_rows_with_lines_and_digest() {
        let (c, info) = read(b"sku,location,qty\nA,W,1\n\"B,2\", W ,-2\n");
        assert_eq!(c.rows, vec![("A".into(), "W".into(), 1, 2), ("B,2".into(), "W".into(), -2, 3)]);
        assert!(c.problems.is_empty());
        assert_eq!(info.sha256.unwrap().len(), 64);
    }

    #[test]
    fn bad_rows_are_problems_with_positions() {
        let (c, _) = read(b"sku,location,qty\nA,W,1.5\nB,W,\nC,W\n\xff,W,1\n");
        assert_eq!(c.rows.len(), 0);
        let lines: Vec<u64> = c.problems.iter().map(|p| p.0).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert_eq!(c.problems[0].1, 5);
        assert!(c.problems[0].2.contains("`1.5` is not an integer"));
        assert!(c.problems[1].2.contains("Missing quantity"));
        assert!(c.problems[3].2.contains("UTF-8"));
    }

    #[test]
    fn missing_columns_and_empty_files() {
        let (c, _) = read(b"sku,qty\nA,1\n");
        assert!(c.problems[0].2.contains("Missing column(s) location"), "{:?}", c.problems);
        let (c, _) = read(b"");
        assert!(c.problems[0].2.contains("Missing column(s)"), "{:?}", c.problems);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 7u64;
        for _ in 0..200 {
            let mut bytes = b"sku,location,qty\n".to_vec();
            for _ in 0..64 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let alphabet = b"ab,\"\n\r1-\xff 9";
                bytes.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let _ = read(&bytes);
        }
    }
}
