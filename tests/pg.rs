//! A real PostgreSQL server for the tests, shared by every test in the process.
//!
//! [`server()`] returns it, starting it on first use:
//!
//! * with `STOCKSHIFT_TEST_PG_URL` set (a URL whose user may `CREATE DATABASE`),
//!   that server is used and nothing is started or stopped;
//! * otherwise a private cluster is made: `initdb` is looked for under
//!   `/usr/lib/postgresql/*/bin`, in `pg_config --bindir` and on `PATH`. When it
//!   is missing and the tests run as root with `apt-get`, the `postgresql` Debian
//!   package is installed (quietly). The cluster is initialised in a temporary
//!   folder (as user `postgres` when running as root: the server refuses to run
//!   as root) and started with `pg_ctl` on a free port of 127.0.0.1, with
//!   `fsync=off`. Statics are never dropped, so a small watchdog process (its own
//!   process group, so Ctrl-C does not kill it first) waits for the test process to
//!   end, then stops the server (`pg_ctl stop -m immediate`) and removes the folder.
//!
//! When PostgreSQL can be neither found, installed nor started, every test that
//! needs it **fails** with a message saying why and what to do, unless
//! `STOCKSHIFT_SKIP_PG=1`: then [`available()`] prints a note and returns `None`,
//! and the test returns early.
//!
//! Each test takes a database of its own ([`create_database`]), so tests run in
//! parallel without seeing each other's tables. [`Client`] is a small blocking
//! client for setting up and inspecting them.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AssertSqlSafe, ConnectOptions, Row};

/// The server the tests use.
pub struct PgServer {
    /// URL of the maintenance database (`postgres`), as a user that may create databases.
    admin_url: String,
    admin: Mutex<Option<Client>>,
    /// The private cluster's folder (`None` with `STOCKSHIFT_TEST_PG_URL`).
    pub dir: Option<PathBuf>,
    /// The folder holding `pg_ctl`, `psql` ... of the private cluster.
    pub bindir: Option<PathBuf>,
    /// The watchdog that stops the private cluster once the test process is gone.
    watchdog: Mutex<Option<Child>>,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();

/// Whether `STOCKSHIFT_SKIP_PG=1` asks to skip the tests that need PostgreSQL.
pub fn skipped() -> bool {
    std::env::var("STOCKSHIFT_SKIP_PG").is_ok_and(|v| v == "1")
}

/// The shared server, or `None` (after a note on stderr) when `STOCKSHIFT_SKIP_PG=1`.
/// Panics with the reason when the server cannot be had otherwise.
pub fn available() -> Option<&'static PgServer> {
    if skipped() {
        eprintln!("note: STOCKSHIFT_SKIP_PG=1: skipping a test that needs PostgreSQL");
        return None;
    }
    Some(server())
}

/// The shared server, started on first use. Panics with the reason when it
/// cannot be started (see the module docs).
pub fn server() -> &'static PgServer {
    match SERVER.get_or_init(start) {
        Ok(s) => s,
        Err(e) => panic!(
            "PostgreSQL is needed by this test but is not available: {e}\n\
             Install the `postgresql` package (Debian: `apt-get install postgresql`; the tests install it \
             themselves when run as root), or set STOCKSHIFT_TEST_PG_URL to a server whose user may \
             CREATE DATABASE, or set STOCKSHIFT_SKIP_PG=1 to skip the PostgreSQL tests."
        ),
    }
}

/// A fresh, empty database on the shared server; returns its URL.
pub fn create_database() -> String {
    server().create_database()
}

impl PgServer {
    /// URL of the maintenance database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// A fresh, empty database (`stockshift_t_<random>`); returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!("stockshift_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if admin.is_none() {
            *admin = Some(Client::connect(&self.admin_url).unwrap_or_else(|e| panic!("{e}")));
        }
        let c = admin.as_mut().expect("connected above");
        if let Err(e) = c.try_execute(&format!("CREATE DATABASE {name}")) {
            // The admin connection may have been dropped (a server restart): once more.
            *admin = Some(Client::connect(&self.admin_url).unwrap_or_else(|e| panic!("{e}")));
            admin
                .as_mut()
                .expect("connected above")
                .try_execute(&format!("CREATE DATABASE {name}"))
                .unwrap_or_else(|e2| panic!("CREATE DATABASE failed: {e}; then {e2}"));
        }
        with_database(&self.admin_url, &name)
    }
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let query = tail.find(['?', '#']).map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{db}{query}")
}

fn start() -> Result<PgServer, String> {
    if let Ok(url) = std::env::var("STOCKSHIFT_TEST_PG_URL")
        && !url.trim().is_empty()
    {
        let url = url.trim().to_owned();
        let client = Client::connect(&url).map_err(|e| format!("STOCKSHIFT_TEST_PG_URL: {e}"))?;
        return Ok(PgServer {
            admin_url: url,
            admin: Mutex::new(Some(client)),
            dir: None,
            bindir: None,
            watchdog: Mutex::new(None),
        });
    }
    let bindir = match find_bindir() {
        Some(b) => b,
        None => {
            install()?;
            find_bindir().ok_or("the `postgresql` package was installed but no initdb was found")?
        }
    };
    let root = is_root();
    if root && !user_exists("postgres") {
        return Err("running as root but there is no `postgres` user to run the server as".into());
    }
    let as_user = if root { Some("postgres") } else { None };
    // As root, in /tmp: the `postgres` user must be able to reach the folder, which a
    // TMPDIR under root's home would not allow.
    let parent = if root { PathBuf::from("/tmp") } else { std::env::temp_dir() };
    let dir = tempfile::Builder::new()
        .prefix("stockshift-pg-")
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot make a temporary folder: {e}"))?
        .keep();
    if root {
        run(Command::new("chown").arg("postgres:").arg(&dir), "chown")?;
    }
    let data = dir.join("data");
    // The watchdog first, so the folder goes away even if initdb or the start fails.
    let watchdog = spawn_watchdog(&dir, &bindir.join("pg_ctl"), as_user)?;
    let mut initdb = pg_command(as_user, &bindir.join("initdb"), &dir);
    initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
    run(&mut initdb, "initdb")?;
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let mut ctl = pg_command(as_user, &bindir.join("pg_ctl"), &dir);
        ctl.arg("-D").arg(&data).arg("-l").arg(dir.join("server.log")).args(["-w", "-t", "60", "-o"]).arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            dir.display()
        ));
        ctl.arg("start");
        match run(&mut ctl, "pg_ctl start") {
            Ok(()) => {
                let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                let client = Client::connect(&url)?;
                return Ok(PgServer {
                    admin_url: url,
                    admin: Mutex::new(Some(client)),
                    dir: Some(dir),
                    bindir: Some(bindir),
                    watchdog: Mutex::new(Some(watchdog)),
                });
            }
            Err(e) => {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                last = format!("{e}\nserver log:\n{}", tail.join("\n"));
                // A port taken between the probe and the start: try another.
            }
        }
    }
    Err(last)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The folder holding `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/*/bin`,
/// else `pg_config --bindir`, else the one on `PATH`.
fn find_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, b)) = versions.pop() {
        return Some(b);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output() {
        let b = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && b.join("initdb").is_file() {
            return Some(b);
        }
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// Installs the `postgresql` Debian package, when running as root with apt-get.
fn install() -> Result<(), String> {
    let has_apt = Command::new("apt-get").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !is_root() || !has_apt {
        return Err("no PostgreSQL server binaries (initdb) were found, and they cannot be installed here \
                    (installing needs root and apt-get)"
            .into());
    }
    eprintln!("note: installing the `postgresql` package for the PostgreSQL tests (apt-get)...");
    let install = || {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "-qq", "--no-install-recommends", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c, "apt-get install postgresql")
    };
    if install().is_ok() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut update, "apt-get update")?;
    install()
}

/// A command run as `user` (through runuser) when given, in `dir`.
fn pg_command(as_user: Option<&str>, program: &Path, dir: &Path) -> Command {
    let mut c = match as_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    // The server's user may not be allowed into the test's working directory.
    c.current_dir(dir).env_remove("PGDATA").env_remove("PGPORT").env_remove("PGHOST");
    c
}

/// Runs a command quietly; on failure, the error holds its output.
fn run(c: &mut Command, what: &str) -> Result<(), String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("{what} failed ({}):\n{}", out.status, tail.join("\n")))
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A process, in a process group of its own, that waits for this process to end,
/// then stops the cluster in `dir` and removes the folder.
fn spawn_watchdog(dir: &Path, pg_ctl: &Path, as_user: Option<&str>) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let script = r#"
pid=$1; dir=$2; pgctl=$3; user=$4
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
if [ -f "$dir/data/postmaster.pid" ]; then
  if [ -n "$user" ]; then
    (cd "$dir" && runuser -u "$user" -- "$pgctl" -D "$dir/data" -m immediate stop)
  else
    "$pgctl" -D "$dir/data" -m immediate stop
  fi
fi
rm -rf "$dir"
"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("stockshift-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(pg_ctl)
        .arg(as_user.unwrap_or(""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the watchdog: {e}"))
}

/// A small blocking client for test setup and checks.
pub struct Client {
    rt: tokio::runtime::Runtime,
    conn: PgConnection,
}

impl Client {
    pub fn connect(url: &str) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let opts = PgConnectOptions::from_str(url).map_err(|e| format!("bad URL: {e}"))?;
        let conn = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), opts.connect()).await })
            .map_err(|_| "cannot connect to PostgreSQL: timed out".to_owned())?
            .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
        Ok(Client { rt, conn })
    }

    /// Runs one or more statements (simple protocol, no parameters).
    pub fn try_execute(&mut self, sql: &str) -> Result<(), String> {
        let conn = &mut self.conn;
        self.rt
            .block_on(sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(conn))
            .map(|_| ())
            .map_err(|e| format!("{e}"))
    }

    /// Runs statements; panics on error.
    pub fn execute(&mut self, sql: &str) {
        self.try_execute(sql).unwrap_or_else(|e| panic!("{e}\nin: {sql}"));
    }

    /// Every row of a query (no parameters); panics on error.
    pub fn rows(&mut self, sql: &str) -> Vec<PgRow> {
        let conn = &mut self.conn;
        self.rt
            .block_on(sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_all(conn))
            .unwrap_or_else(|e| panic!("{e}\nin: {sql}"))
    }

    /// Every row of a query, each column as text (NULL as `None`).
    pub fn text_rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        let wrapped = format!("SELECT row_to_json(q)::text FROM ({sql}) AS q");
        self.rows(&wrapped)
            .iter()
            .map(|r| {
                let j: serde_json::Value = serde_json::from_str(&r.get::<String, _>(0)).unwrap();
                let obj = j.as_object().unwrap();
                obj.values()
                    .map(|v| match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                    .collect()
            })
            .collect()
    }

    /// Inserts (sku, location, qty) rows into `table` in one statement.
    pub fn insert_rows(&mut self, table: &str, rows: &[(String, String, i64)]) {
        let skus: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let locs: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let qtys: Vec<i64> = rows.iter().map(|r| r.2).collect();
        let sql = format!(
            "INSERT INTO {table} (sku, location, qty) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])"
        );
        let conn = &mut self.conn;
        self.rt
            .block_on(sqlx::query(AssertSqlSafe(sql)).bind(skus).bind(locs).bind(qtys).execute(conn))
            .unwrap_or_else(|e| panic!("insert into {table}: {e}"));
    }
}

#[test]
fn the_server_answers_and_databases_are_separate() {
    let Some(pg) = available() else { return };
    let (a, b) = (pg.create_database(), pg.create_database());
    assert_ne!(a, b);
    let mut ca = Client::connect(&a).unwrap();
    ca.execute("CREATE TABLE only_here (x int); INSERT INTO only_here VALUES (1)");
    let mut cb = Client::connect(&b).unwrap();
    assert!(cb.try_execute("SELECT * FROM only_here").is_err(), "a fresh database is empty");
    let v = ca.text_rows("SELECT current_setting('server_version_num') AS v, x FROM only_here");
    assert_eq!(v[0][1].as_deref(), Some("1"));
    if pg.dir.is_some() {
        let fsync = ca.text_rows("SELECT current_setting('fsync')");
        assert_eq!(fsync[0][0].as_deref(), Some("off"), "the private cluster runs with fsync off");
    }
}

#[test]
fn urls_get_another_database() {
    assert_eq!(with_database("postgres://u:p@h:5/postgres", "x"), "postgres://u:p@h:5/x");
    assert_eq!(with_database("postgres://h/db?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
    assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
}
