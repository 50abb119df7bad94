//! The `csv` provider: a snapshot file with a header row. Read-only.
//!
//! Reading is most of `plan`'s work on a large file, so the common case is split by
//! hand. The file is read in 1 MiB chunks (hashed as they are read, for the
//! staleness check); each chunk's complete lines are checked for UTF-8 once, and
//! 64-byte blocks are classified into bitmasks of commas and newlines, so a field
//! costs a few instructions and no per-field UTF-8 check. That covers every line
//! without a double quote or a carriage return. From the first line that has one
//! to the end of the file, rows go through the `csv` crate instead, started so that
//! it reports the same lines as a `csv` reader over the whole file would (its line
//! numbers skip blank lines the way the crate does); the two paths give the same
//! rows and problems, which a test checks on random input.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{Capabilities, CompareMode, Provider, ProviderError, ReadInfo, RowSink, Write, WriteOutcome, parse_qty};
use crate::config::model::ColumnsConfig;

/// Bytes read per call; a line longer than this grows the buffer.
const CHUNK: usize = 1 << 20;

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

/// Positions of the columns `plan` reads.
#[derive(Clone, Copy)]
struct Cols {
    sku: usize,
    loc: usize,
    qty: usize,
}

impl Provider for CsvProvider {
    fn describe(&self) -> String {
        format!("csv {}", self.path.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { compare: CompareMode::ReadOnly, max_batch: 0, max_requests_per_sec: None }
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        let file = File::open(&self.path)
            .map_err(|e| ProviderError::Unavailable { what: self.describe(), message: e.to_string() })?;
        self.read_fast(HashingReader::new(file), sink)
    }

    fn write_batch(&mut self, _writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        Err(ProviderError::Invalid {
            what: self.describe(),
            message: "the csv provider is read-only; use a writable target such as sqlite".into(),
        })
    }
}

/// Where the hand splitter is in the file.
struct Pos {
    /// Physical line of the next line to split.
    line: u64,
    /// The line the `csv` crate reports for the next record: one more than the
    /// newlines up to the end of the previous record (blank lines between records
    /// are consumed with the next record, so they do not count).
    record_line: u64,
    /// Blank lines since the previous record (or the start).
    blanks: u64,
}

impl CsvProvider {
    fn unavailable(&self, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::Unavailable { what: self.describe(), message: e.to_string() }
    }

    /// Finds the columns in a header's fields; reports a problem when some are missing.
    fn columns_of<'a>(&self, header: impl Iterator<Item = &'a [u8]> + Clone, sink: &mut dyn RowSink) -> Option<Cols> {
        let find = |name: &str| header.clone().position(|h| trim(h) == name.as_bytes());
        if let (Some(sku), Some(loc), Some(qty)) =
            (find(&self.columns.sku), find(&self.columns.location), find(&self.columns.qty))
        {
            return Some(Cols { sku, loc, qty });
        }
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
        None
    }

    /// The hand splitter; hands over to [`Self::read_csv`] at the first quote or CR.
    fn read_fast<R: Read>(&self, mut src: HashingReader<R>, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        let mut buf = vec![0u8; CHUNK];
        let (mut start, mut filled, mut eof) = (0usize, 0usize, false);
        let mut pos = Pos { line: 1, record_line: 1, blanks: 0 };
        let mut cols: Option<Cols> = None;
        let mut rows = 0u64;
        let mut commas: Vec<usize> = Vec::new();
        let mut first = true;
        loop {
            // buf[start..end] is whole lines (or the file's last line, unterminated).
            let end = loop {
                if let Some(i) = buf[start..filled].iter().rposition(|&b| b == b'\n') {
                    break Some(start + i + 1);
                }
                if eof {
                    break (start < filled).then_some(filled);
                }
                if start > 0 {
                    buf.copy_within(start..filled, 0);
                    filled -= start;
                    start = 0;
                }
                if filled == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
                match src.read(&mut buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.unavailable(e)),
                }
            };
            let Some(end) = end else { break };
            if first {
                first = false;
                // The `csv` crate drops a UTF-8 byte order mark at the start of the file.
                if buf[start..end].starts_with(b"\xef\xbb\xbf") {
                    start += 3;
                }
            }
            let region = &buf[start..end];
            // Lines before the first quote or CR are split here; from that line on, the csv crate reads.
            let handover =
                first_special(region).map(|s| region[..s].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
            let simple = &region[..handover.unwrap_or(region.len())];
            let text = std::str::from_utf8(simple).ok();
            let mut stop = false;
            split_lines(simple, &mut commas, |a, b, commas| {
                if stop {
                    return;
                }
                if a == b {
                    pos.blanks += 1;
                    pos.line += 1;
                    return;
                }
                let field = |j: usize| -> (usize, usize) {
                    match j {
                        0 => (a, commas.first().copied().unwrap_or(b)),
                        _ if j <= commas.len() => (commas[j - 1] + 1, commas.get(j).copied().unwrap_or(b)),
                        _ => (b, b),
                    }
                };
                match cols {
                    None => {
                        let n = commas.len() + 1;
                        let header = (0..n).map(&field).map(|(s, e)| &simple[s..e]);
                        match self.columns_of(header, sink) {
                            Some(c) => cols = Some(c),
                            None => stop = true,
                        }
                    }
                    Some(c) => {
                        rows += 1;
                        row(simple, text, field, c, commas.len(), pos.record_line, sink);
                    }
                }
                pos.line += 1;
                pos.record_line = pos.line;
                pos.blanks = 0;
            });
            if stop {
                return Ok(ReadInfo { rows: 0, sha256: None });
            }
            if let Some(h) = handover {
                // Blank lines already skipped are given back so the crate counts them as it would have.
                let mut rest = vec![b'\n'; pos.blanks as usize];
                rest.extend_from_slice(&buf[start + h..filled]);
                let input = io::Cursor::new(rest).chain(src);
                let (more, input) = self.read_csv(input, cols, pos.record_line - 1, sink)?;
                let Some(more) = more else { return Ok(ReadInfo { rows: 0, sha256: None }) };
                let sha = input.into_inner().1.finish().map_err(|e| self.unavailable(e))?;
                return Ok(ReadInfo { rows: rows + more, sha256: Some(sha) });
            }
            start = end;
        }
        if cols.is_none() {
            // No header line at all: the same problem as a header without the columns.
            self.columns_of(std::iter::empty(), sink);
            return Ok(ReadInfo { rows: 0, sha256: None });
        }
        let sha = src.finish().map_err(|e| self.unavailable(e))?;
        Ok(ReadInfo { rows, sha256: Some(sha) })
    }

    /// Reads with the `csv` crate: the header first when `cols` is `None`. `line_offset`
    /// is added to the crate's line numbers. Returns the rows read (`None` when the
    /// header was unusable, which is reported) and the input, to finish its digest.
    fn read_csv<R: Read>(
        &self,
        input: R,
        cols: Option<Cols>,
        line_offset: u64,
        sink: &mut dyn RowSink,
    ) -> Result<(Option<u64>, R), ProviderError> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(cols.is_none())
            .flexible(true)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let c = match cols {
            Some(c) => c,
            None => {
                let headers = match rdr.byte_headers() {
                    Ok(h) => h.clone(),
                    Err(e) => {
                        sink.problem(
                            1,
                            1,
                            format!("Unreadable header row: {e}"),
                            "The first line must name the columns, e.g. `sku,location,qty`.".into(),
                        );
                        return Ok((None, rdr.into_inner()));
                    }
                };
                match self.columns_of(headers.iter(), sink) {
                    Some(c) => c,
                    None => return Ok((None, rdr.into_inner())),
                }
            }
        };
        let mut rec = csv::ByteRecord::new();
        let mut rows = 0u64;
        loop {
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() + line_offset);
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
            let line = rec.position().map_or(0, |p| p.line() + line_offset);
            rows += 1;
            let field = |i: usize| rec.get(i).map(trim).unwrap_or(b"");
            let (Ok(sku), Ok(loc)) = (std::str::from_utf8(field(c.sku)), std::str::from_utf8(field(c.loc))) else {
                sink.problem(line, 1, "Row is not UTF-8 text".into(), "Save the file as UTF-8.".into());
                continue;
            };
            let raw_qty = field(c.qty);
            match qty_of(raw_qty) {
                Some(q) => sink.row(sku, loc, q, line),
                None => bad_qty(raw_qty, column_of(&rec, c.qty), line, sink),
            }
        }
        Ok((Some(rows), rdr.into_inner()))
    }
}

/// One data row of the hand splitter. `field(j)` is field j's byte range in `simple`
/// (empty past the last of the `commas + 1` fields); `text` is `simple` when it is UTF-8.
#[inline]
fn row(
    simple: &[u8],
    text: Option<&str>,
    field: impl Fn(usize) -> (usize, usize),
    c: Cols,
    commas: usize,
    line: u64,
    sink: &mut dyn RowSink,
) {
    let (ss, se) = field(c.sku);
    let (ls, le) = field(c.loc);
    let (sku, loc) = match text {
        // Ranges end at commas or line ends, so they are on character boundaries.
        Some(t) => (t.get(ss..se).map(str::trim_ascii), t.get(ls..le).map(str::trim_ascii)),
        None => (std::str::from_utf8(trim(&simple[ss..se])).ok(), std::str::from_utf8(trim(&simple[ls..le])).ok()),
    };
    let (Some(sku), Some(loc)) = (sku, loc) else {
        return sink.problem(line, 1, "Row is not UTF-8 text".into(), "Save the file as UTF-8.".into());
    };
    let (qs, qe) = field(c.qty);
    let raw_qty = trim(&simple[qs..qe]);
    match qty_of(raw_qty) {
        Some(q) => sink.row(sku, loc, q, line),
        None => {
            // Exactly what `column_of` computes on the same fields.
            let col = 1 + (0..c.qty).map(|j| if j <= commas { field(j).1 - field(j).0 + 1 } else { 1 }).sum::<usize>();
            bad_qty(raw_qty, col, line, sink)
        }
    }
}

/// A quantity: plain `[+-]digits` directly, anything else as [`parse_qty`] decides.
#[inline]
fn qty_of(raw: &[u8]) -> Option<i64> {
    let (neg, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, raw),
    };
    if !digits.is_empty() && digits.len() <= 18 {
        let mut v = 0i64;
        let mut ok = true;
        for &d in digits {
            let d = d.wrapping_sub(b'0');
            ok &= d <= 9;
            // Wrapping: with a non-digit byte the value is discarded; 18 digits never overflow.
            v = v.wrapping_mul(10).wrapping_add(i64::from(d));
        }
        if ok {
            return Some(if neg { -v } else { v });
        }
    }
    std::str::from_utf8(raw).ok().and_then(parse_qty)
}

#[cold]
fn bad_qty(raw_qty: &[u8], col: usize, line: u64, sink: &mut dyn RowSink) {
    let shown = String::from_utf8_lossy(raw_qty);
    let summary = if shown.is_empty() {
        "Missing quantity".to_string()
    } else {
        format!("Quantity `{}` is not an integer", shown.chars().take(40).collect::<String>())
    };
    sink.problem(line, col, summary, "Quantities are whole numbers of units, e.g. `12` or `-3`.".into());
}

/// Offset of the first `"` or `\r`: bytes the hand splitter leaves to the csv crate.
fn first_special(b: &[u8]) -> Option<usize> {
    // Whole 64-byte blocks are tested without branching per byte (this vectorizes).
    let clean = b
        .chunks(64)
        .position(|c| c.iter().fold(false, |acc, &x| acc | (x == b'"') | (x == b'\r')))
        .map_or(b.len(), |i| i * 64);
    b[clean..].iter().position(|&x| x == b'"' || x == b'\r').map(|i| clean + i)
}

/// Bit i set where `block[i] == byte`. Comparing into bytes, then gathering eight
/// 0/1 bytes at a time with a multiply, compiles to vector compares (4+ GB/s).
#[inline(always)]
fn byte_mask(block: &[u8; 64], byte: u8) -> u64 {
    let mut eq = [0u8; 64];
    for (e, &b) in eq.iter_mut().zip(block) {
        *e = u8::from(b == byte);
    }
    let mut m = 0u64;
    for (k, w) in eq.chunks_exact(8).enumerate() {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        m |= (w.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
    }
    m
}

/// Calls `on_line(start, end, commas)` for each line of `text` (no quotes, no CRs),
/// `end` excluding the newline, `commas` the offsets of the line's commas. The last
/// line may lack its newline.
#[inline]
fn split_lines(text: &[u8], commas: &mut Vec<usize>, mut on_line: impl FnMut(usize, usize, &[usize])) {
    commas.clear();
    let mut line_start = 0;
    let mut base = 0;
    while base < text.len() {
        let mut tail = [0u8; 64];
        let block = match text[base..].first_chunk::<64>() {
            Some(b) => b,
            None => {
                tail[..text.len() - base].copy_from_slice(&text[base..]);
                &tail
            }
        };
        let newlines = byte_mask(block, b'\n');
        let mut all = byte_mask(block, b',') | newlines;
        while all != 0 {
            let j = all.trailing_zeros();
            all &= all - 1;
            let at = base + j as usize;
            if newlines >> j & 1 == 1 {
                on_line(line_start, at, commas);
                commas.clear();
                line_start = at + 1;
            } else {
                commas.push(at);
            }
        }
        base += 64;
    }
    if line_start < text.len() {
        on_line(line_start, text.len(), commas);
        commas.clear();
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

    /// The reader as it was: the `csv` crate for the whole file.
    fn read_reference(text: &[u8]) -> (Collect, ReadInfo) {
        let p = CsvProvider::new(PathBuf::new(), ColumnsConfig::default());
        let mut c = Collect::default();
        let (rows, input) = p.read_csv(HashingReader::new(text), None, 0, &mut c).unwrap();
        let info = match rows {
            Some(rows) => ReadInfo { rows, sha256: Some(input.finish().unwrap()) },
            None => ReadInfo { rows: 0, sha256: None },
        };
        (c, info)
    }

    fn read_fast(text: &[u8]) -> (Collect, ReadInfo) {
        let p = CsvProvider::new(PathBuf::new(), ColumnsConfig::default());
        let mut c = Collect::default();
        let info = p.read_fast(HashingReader::new(text), &mut c).unwrap();
        (c, info)
    }

    #[test]
    fn the_hand_splitter_reads_what_the_csv_crate_reads() {
        let cases: &[&[u8]] = &[
            b"sku,location,qty\nA,W,1\n\n\nB,W,2\n",
            b"\n\nsku,location,qty\nA,W,1\nB,W,2",
            b"\xef\xbb\xbfsku,location,qty\nA,W,1\n",
            b"\xef\xbb\xbf\nsku,location,qty\nA,W,1\n",
            b"sku,location,qty\nA,W,1\n \nB,W,2\n,\n",
            b"sku,location,qty\r\nA,W,1\r\n\r\nB,W,2\r\n",
            b"sku,location,qty\nA,W,1\n\n\nB,W,2\r\nC,W,3\n\nD,W,x\n",
            b"sku,location,qty\nA,W,1\n\n\n\"B\",W,2\nC,W,1.5\n",
            b"\n\"sku\",location,qty\nA,W,1\n",
            b"",
            b"\n\n",
            b"sku\n",
            b"qty,version,location,sku\n 5 ,1, W ,A\n+7,,W\n-0,,W,B,extra\n",
            b"sku,location,qty\n\xff,W,1\nA,\xfe,2\nB,W,\xff\nC,W,\xc2\xa09\n",
        ];
        for text in cases {
            let (a, ai) = read_fast(text);
            let (b, bi) = read_reference(text);
            assert_eq!((&a.rows, &a.problems), (&b.rows, &b.problems), "{:?}", String::from_utf8_lossy(text));
            assert_eq!((ai.rows, ai.sha256), (bi.rows, bi.sha256), "{:?}", String::from_utf8_lossy(text));
        }
        let mut seed = 11u64;
        for round in 0..3000 {
            let mut bytes =
                if round % 3 == 0 { b"qty,sku,location\n".to_vec() } else { b"sku,location,qty\n".to_vec() };
            let len = if round % 10 == 0 { 3000 } else { 80 };
            // Rare quotes and CRs, so most inputs switch to the crate part-way or not at all.
            let alphabet: &[u8] =
                if round % 2 == 0 { b"ab,,,\n\n1-+ 9\xff\xc3\xa9" } else { b"ab,,,\n\n1-+ 9\xff\xc3\xa9\"\r" };
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                bytes.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let (a, ai) = read_fast(&bytes);
            let (b, bi) = read_reference(&bytes);
            assert_eq!((&a.rows, &a.problems), (&b.rows, &b.problems), "{:?}", String::from_utf8_lossy(&bytes));
            assert_eq!((ai.rows, ai.sha256), (bi.rows, bi.sha256));
        }
    }

    #[test]
    fn long_files_cross_chunks_the_same_way() {
        let mut text = b"sku,location,qty\n".to_vec();
        for i in 0..200_000 {
            text.extend_from_slice(format!("S{i},W{},{}\n", i % 3, i % 7).as_bytes());
            if i % 5000 == 0 {
                text.extend_from_slice(b"\n");
            }
            if i == 150_000 {
                text.extend_from_slice(b"\"Q,1\",W,1\n");
            }
        }
        let long = vec![b'x'; 3 * CHUNK];
        text.extend_from_slice(&long);
        text.extend_from_slice(b",W,1");
        let (a, ai) = read_fast(&text);
        let (b, bi) = read_reference(&text);
        assert_eq!(a.rows.len(), 200_002);
        assert!(a.rows == b.rows && a.problems == b.problems);
        assert_eq!((ai.rows, ai.sha256), (bi.rows, bi.sha256));
    }

    #[test]
    fn quantities_fast_and_slow_agree() {
        for q in [
            "0",
            "-0",
            "+0",
            "12",
            "-3",
            "+4",
            "007",
            "999999999999999999",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "",
            "+",
            "-",
            "+-1",
            "-+1",
            "1.5",
            "1e3",
            "--1",
            "\u{a0}5",
            "5\u{a0}",
            "١",
        ] {
            assert_eq!(qty_of(q.as_bytes()), parse_qty(q), "{q:?}");
        }
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
