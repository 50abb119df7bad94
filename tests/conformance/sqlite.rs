//! The conformance suite against the `sqlite` provider (a real database file).

use std::path::Path;

use rusqlite::Connection;
use stockshift::provider::Provider;
use stockshift::provider::sqlite::SqliteProvider;

use super::{Contents, Subject};

pub struct Sqlite;

fn make(_dir: &Path) -> Sqlite {
    Sqlite
}

fn db(dir: &Path) -> std::path::PathBuf {
    dir.join("target.db")
}

impl Subject for Sqlite {
    fn target_yaml(&self, _dir: &Path, batch: usize) -> String {
        format!("{{ provider: sqlite, path: target.db, batch_size: {batch} }}")
    }

    fn seed(&self, dir: &Path, rows: &[(String, String, i64)]) {
        let c = Connection::open(db(dir)).unwrap();
        c.execute_batch(
            "DROP TABLE IF EXISTS inventory;
             CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL,
                                     version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));",
        )
        .unwrap();
        for (s, l, q) in rows {
            c.execute("INSERT INTO inventory (sku, location, qty) VALUES (?1, ?2, ?3)", (s, l, q)).unwrap();
        }
    }

    fn contents(&self, dir: &Path) -> Contents {
        let c = Connection::open(db(dir)).unwrap();
        let mut s = c.prepare("SELECT sku, location, qty FROM inventory").unwrap();
        s.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?))).unwrap().map(Result::unwrap).collect()
    }

    fn poke(&self, dir: &Path, sku: &str, location: &str, qty: i64) {
        let c = Connection::open(db(dir)).unwrap();
        c.execute("UPDATE inventory SET qty = ?3 WHERE sku = ?1 AND location = ?2", (sku, location, qty)).unwrap();
    }

    fn fail_next_writes(&self, dir: &Path, n: usize) {
        // SQLite's transient failure is a busy database: hold a write lock for a
        // while from another process-like connection, then let go.
        if n == 0 {
            return;
        }
        let path = db(dir);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let c = Connection::open(path).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            ready_tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300 * n as u64));
            c.execute_batch("COMMIT").unwrap();
        });
        ready_rx.recv().unwrap();
    }

    fn open(&self, dir: &Path) -> Box<dyn Provider> {
        Box::new(SqliteProvider::new(db(dir), "inventory".into(), Default::default()))
    }
}

crate::conformance_suite!(make);
