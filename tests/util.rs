//! Shared test helpers: the built binary, temporary folders and golden files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command running the built `stockshift` binary, with colour and the
/// environment's NO_COLOR cleared so output is deterministic.
pub fn stockshift() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stockshift"));
    c.env_remove("NO_COLOR");
    c
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("the binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Compares `actual` with the golden file at `tests/golden/<name>`. With
/// `UPDATE_GOLDEN=1` the file is rewritten instead; review the diff before committing.
pub fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {}; run with UPDATE_GOLDEN=1 to create it", path.display()));
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual);
        let mut shown = String::new();
        for op in diff.unified_diff().context_radius(3).iter_hunks() {
            shown.push_str(&op.to_string());
        }
        panic!("{} differs from the output (run with UPDATE_GOLDEN=1 to accept):\n{shown}", path.display());
    }
}

/// Copies a folder recursively (fixtures into a temporary folder).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A copy of `plans/` in a temporary folder, and the demo plan's path in it.
pub fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("plans"), dir.path());
    let plan = dir.path().join("demo.yaml");
    (dir, plan)
}

/// Every row of a SQLite inventory table, ordered by location and SKU.
pub fn target_rows(db: &Path) -> Vec<(String, String, i64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c.prepare("SELECT sku, location, qty FROM inventory ORDER BY location, sku").unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

/// One key's quantity in a SQLite inventory table.
pub fn qty(db: &Path, sku: &str, loc: &str) -> Option<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT qty FROM inventory WHERE sku = ?1 AND location = ?2", [sku, loc], |r| r.get(0)).ok()
}

/// Waits for a spawned `stockshift serve` (stderr piped) to print its address.
/// Returns the address and its stderr so far, kept up to date by a reader thread;
/// `None` when it printed none within 30 s (the caller kills it and reports).
pub fn serve_address(child: &mut std::process::Child) -> (Option<String>, std::sync::Arc<std::sync::Mutex<String>>) {
    use std::io::BufRead;
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().expect("serve's stderr is piped");
    let log = stderr.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("Listening on http://") {
                let _ = tx.send(addr.trim().to_owned());
            }
            log.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    (rx.recv_timeout(std::time::Duration::from_secs(30)).ok(), stderr)
}

/// Debian's Chromium, when installed (tests that need it print a note and skip otherwise).
pub fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists())
}

/// Headless Chromium with a throwaway profile, quiet (no sync, updates or first-run
/// pages) and sized `width`x`height`; the caller adds what to load.
pub fn headless_chromium(chromium: &str, profile: &Path, width: u32, height: u32) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!("--window-size={width},{height}"))
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}
