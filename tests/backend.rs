//! Running a test against both state backends: SQLite (the default, `state.db`
//! in the state folder) and PostgreSQL (`state: { backend: postgres, url_env:
//! STOCKSHIFT_STATE_URL }`, a fresh database of the test server per test).
//!
//! A test is written once as `fn name(b: Backend)`; [`both_backends!`] makes
//! `sqlite::name` and `postgres::name` of it. A PostgreSQL variant returns early
//! (with a note) under `STOCKSHIFT_SKIP_PG=1`: [`Ctx::new`] gives `None`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use stockshift::db::StoreAt;
use stockshift::state::StateStore;

use crate::pg;
use crate::util::{copy_dir, root};

/// The variable the test plans name for the PostgreSQL state's URL.
pub const URL_ENV: &str = "STOCKSHIFT_STATE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's backend: how to run the binary and reach the state.
pub struct Ctx {
    pub backend: Backend,
    /// The PostgreSQL database's URL.
    pub url: Option<String>,
}

impl Ctx {
    /// `None` when the backend is PostgreSQL and `STOCKSHIFT_SKIP_PG=1`.
    pub fn new(backend: Backend) -> Option<Ctx> {
        match backend {
            Backend::Sqlite => Some(Ctx { backend, url: None }),
            Backend::Postgres => Some(Ctx { backend, url: Some(pg::available()?.create_database()) }),
        }
    }

    /// The built binary, with the state URL's variable set for PostgreSQL.
    pub fn stockshift(&self) -> Command {
        let mut c = crate::util::stockshift();
        match &self.url {
            Some(url) => c.env(URL_ENV, url),
            None => c.env_remove(URL_ENV),
        };
        c
    }

    /// The `state:` line to add to a plan (empty for SQLite).
    pub fn state_yaml(&self) -> String {
        match self.backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => format!("state: {{ backend: postgres, url_env: {URL_ENV} }}\n"),
        }
    }

    /// A copy of `plans/` in a temporary folder with this backend's `state:`, and
    /// the demo plan's path in it.
    pub fn demo_copy(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root().join("plans"), dir.path());
        let plan = dir.path().join("demo.yaml");
        self.add_state(&plan);
        (dir, plan)
    }

    /// Appends this backend's `state:` to a plan file.
    pub fn add_state(&self, plan: &Path) {
        let mut text = std::fs::read_to_string(plan).unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&self.state_yaml());
        std::fs::write(plan, text).unwrap();
    }

    /// Where the state of a plan with this backend lives, its local files in `state_dir`.
    pub fn store_at(&self, state_dir: &Path) -> StoreAt {
        StoreAt {
            dir: state_dir.to_path_buf(),
            postgres: self.url.clone(),
            url_env: self.url.as_ref().map(|_| URL_ENV.to_owned()),
        }
    }

    /// Opens (creating when needed) the state store.
    pub fn store(&self, state_dir: &Path) -> StateStore {
        StateStore::open_at(&self.store_at(state_dir)).unwrap()
    }

    /// Rows in one of the state's tables.
    pub fn count(&self, state_dir: &Path, table: &str) -> i64 {
        match &self.url {
            None => rusqlite::Connection::open(state_dir.join("state.db"))
                .unwrap()
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap(),
            Some(url) => {
                let rows = pg::Client::connect(url)
                    .unwrap()
                    .text_rows(&format!("SELECT count(*) FROM stockshift_state.{table}"));
                rows[0][0].as_deref().unwrap().parse().unwrap()
            }
        }
    }
}

/// `both_backends!(a, b)`: `mod sqlite { #[test] fn a() }` and `mod postgres
/// { #[test] fn a() }`, each calling `super::a(Backend::...)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::backend::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::backend::Backend::Postgres)
                }
            )*
        }
    };
}
pub(crate) use both_backends;
