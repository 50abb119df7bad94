//! Source snapshots of systems that are not files.
//!
//! Replay starts from "the source snapshot the last apply used". A CSV or SQLite
//! source is a file that apply copies; a database or platform source has no file,
//! so while `plan` reads it, every row is also written to a CSV file named by its
//! SHA-256 (`source-<sha>.csv` under the state folder's `snapshots/`). The plan
//! records that file as its source input, so apply, replay and cutover treat it
//! exactly like a CSV source.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::provider::{ProviderError, RowSink};

/// A [`RowSink`] that passes rows on and writes them to a snapshot CSV.
pub struct SnapshotTee<'a> {
    inner: &'a mut dyn RowSink,
    out: Option<csv::Writer<HashingFile>>,
    dir: PathBuf,
    tmp: PathBuf,
    error: Option<String>,
}

struct HashingFile {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
}

impl std::io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl<'a> SnapshotTee<'a> {
    /// Starts a snapshot in `dir` (created when missing).
    pub fn new(inner: &'a mut dyn RowSink, dir: &Path) -> Result<Self, ProviderError> {
        let fail = |e: std::io::Error| ProviderError::Invalid {
            what: format!("source snapshot in {}", dir.display()),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(fail)?;
        let tmp = dir.join(format!(".source-{}.tmp", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&tmp).map_err(fail)?;
        let mut out =
            csv::Writer::from_writer(HashingFile { file: std::io::BufWriter::new(file), hash: Sha256::new() });
        out.write_record(["sku", "location", "qty"]).map_err(|e| fail(e.into()))?;
        Ok(SnapshotTee { inner, out: Some(out), dir: dir.to_path_buf(), tmp, error: None })
    }

    /// Closes the file and names it by its hash; returns (path, sha256).
    pub fn finish(mut self) -> Result<(PathBuf, String), ProviderError> {
        let fail = |m: String| ProviderError::Invalid { what: "source snapshot".into(), message: m };
        if let Some(e) = self.error.take() {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(fail(e));
        }
        let out = self.out.take().expect("finish is called once");
        let mut inner = out.into_inner().map_err(|e| fail(e.to_string()))?;
        inner.flush().map_err(|e| fail(e.to_string()))?;
        inner.file.get_ref().sync_all().map_err(|e| fail(e.to_string()))?;
        let sha = hex::encode(inner.hash.finalize());
        let path = self.dir.join(format!("source-{sha}.csv"));
        std::fs::rename(&self.tmp, &path).map_err(|e| fail(e.to_string()))?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Ok((path, sha))
    }
}

impl Drop for SnapshotTee<'_> {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl RowSink for SnapshotTee<'_> {
    fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        if self.error.is_none()
            && let Some(out) = self.out.as_mut()
            && let Err(e) = out.write_record([sku, location, &qty.to_string()])
        {
            self.error = Some(e.to_string());
        }
        self.inner.row(sku, location, qty, line);
    }
    fn problem(&mut self, line: u64, col: usize, summary: String, help: String) {
        self.inner.problem(line, col, summary, help);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(String, String, i64)>);
    impl RowSink for Collect {
        fn row(&mut self, sku: &str, location: &str, qty: i64, _: u64) {
            self.0.push((sku.into(), location.into(), qty));
        }
        fn problem(&mut self, _: u64, _: usize, _: String, _: String) {}
    }

    #[test]
    fn rows_pass_through_and_land_in_a_file_named_by_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut inner = Collect::default();
        let mut tee = SnapshotTee::new(&mut inner, &dir.path().join("snapshots")).unwrap();
        tee.row("A, \"quoted\"", "W1", 3, 1);
        tee.row("B", "W2", -2, 2);
        let (path, sha) = tee.finish().unwrap();
        assert_eq!(inner.0.len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "sku,location,qty\n\"A, \"\"quoted\"\"\",W1,3\nB,W2,-2\n");
        assert_eq!(crate::artifact::sha256_file(&path).as_deref(), Some(sha.as_str()));
        assert!(path.ends_with(format!("source-{sha}.csv")));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("snapshots")).unwrap().count(), 1);
    }
}
