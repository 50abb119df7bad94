//! Kafka sources end to end, against a real Kafka-protocol broker: `tansu`, started
//! on a free loopback port in a temporary folder (SQLite storage).
//!
//! The broker binary is looked for in `STOCKSHIFT_TANSU`, on `PATH` and in
//! `$CARGO_HOME/bin` (`~/.cargo/bin`). When it is missing:
//! * it is built with `cargo install tansu@0.6.0 --locked --features libsql`
//!   (about 10 minutes cold, once per machine), so plain `cargo test` runs it;
//! * with `STOCKSHIFT_SKIP_KAFKA=1` the test prints a note and is skipped instead;
//! * with `STOCKSHIFT_INSTALL_TANSU=0` nothing is installed and the test **fails**,
//!   saying what to do.
//!
//! Every process the test starts (the broker, `serve`) is killed by a guard when
//! the test ends, also when it fails; a watchdog process kills whatever is left if
//! the test process itself dies.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use stockshift::events::queue::{KafkaOffset, Queue, Status};

use crate::util::{copy_dir, root, run, stockshift, target_rows};

const TOPIC: &str = "inventory-events";
/// The Kafka source of `plans/kafka.yaml`.
const SOURCE: &str = "erp-stream";
const GROUP: &str = "stockshift-demo";
const PARTITIONS: i32 = 3;

// ---------------------------------------------------------------- the broker

/// The tansu binary, when it can be found (or installed). `Err` says why not.
fn tansu() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_or_install).clone()
}

fn find_tansu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STOCKSHIFT_TANSU").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    path.into_iter().chain(cargo_home.map(|c| c.join("bin"))).map(|d| d.join("tansu")).find(|p| p.is_file())
}

fn find_or_install() -> Result<PathBuf, String> {
    if let Some(p) = find_tansu() {
        return Ok(p);
    }
    let skip = std::env::var("STOCKSHIFT_SKIP_KAFKA").is_ok_and(|v| v == "1");
    if !skip && std::env::var("STOCKSHIFT_INSTALL_TANSU").map_or(true, |v| v != "0") {
        eprintln!("note: installing the tansu Kafka broker (cargo install tansu@0.6.0 --features libsql, ~10 min)...");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["install", "tansu@0.6.0", "--locked", "--features", "libsql"])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run cargo install: {e}"))?;
        if !status.success() {
            return Err(format!("`cargo install tansu@0.6.0 --locked --features libsql` failed ({status})"));
        }
        return find_tansu().ok_or_else(|| "tansu was installed but is not in $CARGO_HOME/bin or on PATH".into());
    }
    Err("the Kafka-protocol broker `tansu` was not found (STOCKSHIFT_TANSU, PATH, ~/.cargo/bin)".into())
}

/// Processes a watchdog kills (`kill -9`) if the test process dies first.
struct Tracked {
    file: PathBuf,
}

impl Tracked {
    fn add(&self, pid: u32) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.file).unwrap();
        writeln!(f, "{pid}").unwrap();
    }
    fn remove(&self, pid: u32) {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let kept: String = text.lines().filter(|l| *l != pid.to_string()).map(|l| format!("{l}\n")).collect();
        let _ = std::fs::write(&self.file, kept);
    }
}

/// Kills a child of ours by its id and reaps it.
fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

struct Broker {
    bin: PathBuf,
    port: u16,
    /// The broker's working folder (its SQLite storage and log).
    dir: tempfile::TempDir,
    child: Option<Child>,
    tracked: Arc<Tracked>,
    watchdog: Option<Child>,
}

impl Broker {
    /// The broker, or `None` (after a note) with `STOCKSHIFT_SKIP_KAFKA=1` when
    /// tansu is missing. Panics with what to do otherwise.
    fn start_or_skip() -> Option<Broker> {
        let bin = match tansu() {
            Ok(b) => b,
            Err(e) if std::env::var("STOCKSHIFT_SKIP_KAFKA").is_ok_and(|v| v == "1") => {
                eprintln!("note: STOCKSHIFT_SKIP_KAFKA=1: skipping a test that needs a Kafka broker ({e})");
                return None;
            }
            Err(e) => panic!(
                "This test needs a Kafka-protocol broker: {e}.\n\
                 Install it with `cargo install tansu@0.6.0 --locked --features libsql` (about 10 minutes), \
                 or unset STOCKSHIFT_INSTALL_TANSU=0 to let the tests install it, \
                 or point STOCKSHIFT_TANSU at the binary, or set STOCKSHIFT_SKIP_KAFKA=1 to skip the Kafka tests."
            ),
        };
        let dir = tempfile::Builder::new().prefix("stockshift-kafka-").tempdir().unwrap();
        let tracked = Arc::new(Tracked { file: dir.path().join("pids") });
        let watchdog = spawn_watchdog(dir.path());
        let mut b = Broker { bin, port: free_port(), dir, child: None, tracked, watchdog: Some(watchdog) };
        b.run();
        Some(b)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker process (again, after [`Broker::kill`]: same port, same storage).
    fn run(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("tansu.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("broker")
            .args(["--listener-url", &self.url(), "--advertised-listener-url", &self.url()])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.tracked.add(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.addr()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tansu exited ({status}) before listening; its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {} within 30s; its log:\n{}",
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the broker goes away without a goodbye.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
            self.tracked.remove(c.id());
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker", &self.url()])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut w) = self.watchdog.take() {
            kill9(&mut w);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process in a group of its own (Ctrl-C does not reach it) that waits for the
/// test process to end, then kills every pid listed in `dir/pids`.
fn spawn_watchdog(dir: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let script = r#"
pid=$1; dir=$2
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
[ -f "$dir/pids" ] && for p in $(cat "$dir/pids"); do kill -9 "$p" 2>/dev/null; done
rm -rf "$dir"
"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("stockshift-kafka-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the watchdog")
}

// ---------------------------------------------------------------- producing

/// The partition of a SKU: every event of one SKU goes to one partition.
fn partition_of(sku: &str) -> i32 {
    // Java's String.hashCode over the bytes: stable, and spreads the test's SKUs over all 3.
    let h = sku.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (h % PARTITIONS as u32) as i32
}

/// One record as produced: where it landed and what it holds.
#[derive(Debug, Clone)]
struct Produced {
    partition: i32,
    offset: i64,
    /// The event id, when the record is a valid event.
    id: Option<String>,
}

struct Producer {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Producer {
    fn connect(addr: &str) -> Producer {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt.block_on(ClientBuilder::new(vec![addr.to_owned()]).build()).expect("connect the producer");
        Producer { rt, client }
    }

    /// The topic's partitions, once the broker lists them.
    fn wait_for_topic(&self, topic: &str, partitions: i32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let topics = self.rt.block_on(self.client.list_topics()).unwrap_or_default();
            if topics.iter().any(|t| t.name == topic && t.partitions.len() == partitions as usize) {
                return;
            }
            assert!(Instant::now() < deadline, "topic {topic} did not appear with {partitions} partitions");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Produces `(sku, value, id)` records keyed by SKU, one batch per partition.
    fn produce(&self, records: &[(String, String, Option<String>)], compression: Compression) -> Vec<Produced> {
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, (sku, _, _)) in records.iter().enumerate() {
            by_partition.entry(partition_of(sku)).or_default().push(i);
        }
        let mut out = Vec::new();
        for (p, idx) in by_partition {
            let batch: Vec<Record> = idx
                .iter()
                .map(|&i| Record {
                    key: Some(records[i].0.clone().into_bytes()),
                    value: Some(records[i].1.clone().into_bytes()),
                    headers: BTreeMap::new(),
                    timestamp: now(),
                })
                .collect();
            let offsets = self.rt.block_on(async {
                let pc = self.client.partition_client(TOPIC, p, UnknownTopicHandling::Retry).await.unwrap();
                pc.produce(batch, compression).await.expect("produce")
            });
            for (&i, offset) in idx.iter().zip(offsets) {
                out.push(Produced { partition: p, offset, id: records[i].2.clone() });
            }
        }
        out
    }
}

/// Now, as the record timestamp (rskafka's chrono has no clock feature here).
fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

const KEYS: [(&str, &str); 10] = [
    ("OLD-1", "WH-EAST"),
    ("CASE-12", "WH-EAST"),
    ("BLUE-S", "WH-EAST"),
    ("BLUE-SMALL", "WH-EAST"),
    ("HOT-1", "WH-EAST"),
    ("A", "WH-EAST"),
    ("B", "WH-EAST"),
    ("A", "WH-WEST"),
    ("SAME-1", "WH-EAST"),
    ("SWAP-X", "WH-WEST"),
];

/// Event `n` as (sku, JSON, id): per key alternately +1 and -1 (never below the
/// snapshot), and every 50th an absolute set.
fn event(n: usize) -> (String, String, Option<String>) {
    let (sku, loc) = KEYS[n % KEYS.len()];
    let round = n / KEYS.len();
    let change = if n % 50 == 49 {
        format!("\"qty\":{}", 10 + round)
    } else if round.is_multiple_of(2) {
        "\"delta\":1".to_owned()
    } else {
        "\"delta\":-1".to_owned()
    };
    let id = format!("k-{n}");
    let json = format!(
        "{{\"id\":\"{id}\",\"source\":\"{SOURCE}\",\"sku\":\"{sku}\",\"location\":\"{loc}\",{change},\"sequence\":{},\"occurred_at\":\"2026-12-01T02:00:00Z\"}}",
        n + 1
    );
    (sku.to_owned(), json, Some(id))
}

// ---------------------------------------------------------------- serve

struct Serve {
    child: Option<Child>,
    addr: String,
    stderr: Arc<Mutex<String>>,
    tracked: Arc<Tracked>,
}

impl Serve {
    fn start(plan: &Path, tracked: &Arc<Tracked>) -> Serve {
        let mut child = stockshift()
            .arg("serve")
            .arg(plan)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        tracked.add(child.id());
        let (addr, stderr) = crate::util::serve_address(&mut child);
        let Some(addr) = addr else {
            kill9(&mut child);
            panic!("serve did not start; stderr:\n{}", stderr.lock().unwrap());
        };
        Serve { child: Some(child), addr, stderr, tracked: tracked.clone() }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until serve's stderr has a line containing `text`; returns that line.
    fn wait_for_line(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.stderr().lines().find(|l| l.contains(text)) {
                return l.to_owned();
            }
            assert!(Instant::now() < deadline, "serve never printed {text:?}; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `stockshift_webhooks_total{source=SOURCE,result}` from `/metrics`.
    fn counter(&self, result: &str) -> u64 {
        let body = http_get(&self.addr, "/metrics");
        let line = body
            .lines()
            .find(|l| {
                l.starts_with("stockshift_webhooks_total{")
                    && l.contains(&format!("source=\"{SOURCE}\""))
                    && l.contains(&format!("result=\"{result}\""))
            })
            .unwrap_or_else(|| panic!("no webhooks_total for {SOURCE}/{result} in:\n{body}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
            self.tracked.remove(c.id());
        }
    }

    /// SIGTERM and wait: the exit code.
    fn terminate(mut self) -> Option<i32> {
        let mut c = self.child.take().unwrap();
        // SAFETY: a signal to our own child, by its id.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.tracked.remove(c.id());
                return status.code();
            }
            if Instant::now() > deadline {
                kill9(&mut c);
                panic!("serve did not stop on SIGTERM; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "GET {path}: {raw}");
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------- the queue, as the test sees it

fn queue_path(dir: &Path) -> PathBuf {
    dir.join(".stockshift/events.db")
}

/// Ids of the queued events of the Kafka source.
fn queued_ids(dir: &Path) -> Vec<String> {
    if !queue_path(dir).exists() {
        return vec![];
    }
    let q = Queue::open(&queue_path(dir)).unwrap();
    q.events_after(0, 1_000_000).unwrap().into_iter().filter(|e| e.event.source == SOURCE).map(|e| e.event.id).collect()
}

fn committed(dir: &Path) -> BTreeMap<i32, i64> {
    if !queue_path(dir).exists() {
        return BTreeMap::new();
    }
    let q = Queue::open(&queue_path(dir)).unwrap();
    let offsets: Vec<KafkaOffset> = q.kafka_offsets(SOURCE, GROUP).unwrap();
    offsets.into_iter().filter(|o| o.topic == TOPIC).map(|o| (o.partition, o.next_offset)).collect()
}

/// The offsets after the last record produced, per partition.
fn ends(produced: &[Produced]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for p in produced {
        let e = m.entry(p.partition).or_insert(0);
        *e = (*e).max(p.offset + 1);
    }
    m
}

/// The distinct ids of valid records below the given offsets.
fn ids_below(produced: &[Produced], offsets: &BTreeMap<i32, i64>) -> BTreeSet<String> {
    produced
        .iter()
        .filter(|p| p.offset < offsets.get(&p.partition).copied().unwrap_or(0))
        .filter_map(|p| p.id.clone())
        .collect()
}

fn wait_until(what: &str, within: Duration, serve: &Serve, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; serve's stderr:\n{}", serve.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of `plans/` with `kafka.yaml` pointing at `broker`.
fn plan_copy(broker: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("plans"), dir.path());
    let plan = dir.path().join("kafka.yaml");
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.contains("\"127.0.0.1:9092\""), "plans/kafka.yaml names its broker as \"127.0.0.1:9092\"");
    std::fs::write(&plan, text.replace("\"127.0.0.1:9092\"", &format!("\"{broker}\""))).unwrap();
    (dir, plan)
}

// ---------------------------------------------------------------- the test

#[test]
fn kafka_events_are_queued_exactly_once_across_crashes_and_broker_restarts() {
    let Some(mut broker) = Broker::start_or_skip() else { return };
    let tracked = broker.tracked.clone();
    let (dir, plan) = plan_copy(&broker.addr());
    let dir = dir.path().to_path_buf();
    let (code, _, stderr) = run(stockshift().arg("apply").arg(&plan).arg("--auto-approve"));
    assert_eq!(code, 0, "{stderr}");
    let applied = target_rows(&dir.join("demo/target.db"));

    // Phase 0: serve starts before the topic exists; it says so and keeps retrying.
    let mut serve = Serve::start(&plan, &tracked);
    serve.wait_for_line(&format!("topic `{TOPIC}` does not exist"), Duration::from_secs(60));
    broker.create_topic(TOPIC, PARTITIONS);
    let producer = Producer::connect(&broker.addr());
    producer.wait_for_topic(TOPIC, PARTITIONS);

    // Phase 1: 400 events, 20 of them delivered twice, and two malformed records.
    let mut records: Vec<_> = (0..400).map(event).collect();
    records.extend((0..400).step_by(20).map(event));
    records.push(("A".into(), "{\"id\":\"broken-1\",\"sku\":".into(), None));
    let no_id = event(5).1.replace("\"id\":\"k-5\",", "");
    records.push(("B".into(), no_id, None));
    // One partition's batch gzip-compressed, the rest plain.
    let (first, rest): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| partition_of(&r.0) == 0);
    let mut produced = producer.produce(&first, Compression::Gzip);
    produced.extend(producer.produce(&rest, Compression::NoCompression));
    let phase1_end = ends(&produced);
    assert_eq!(phase1_end.len(), PARTITIONS as usize, "every partition has records: {phase1_end:?}");

    serve.wait_for_line("resuming at offsets", Duration::from_secs(60));
    wait_until("every phase-1 record to be committed", Duration::from_secs(60), &serve, || {
        committed(&dir) == phase1_end
    });
    let ids = queued_ids(&dir);
    assert_eq!(ids.len(), 400, "exactly the distinct valid events");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 400);
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), ids_below(&produced, &phase1_end));
    assert_eq!((serve.counter("accepted"), serve.counter("duplicate"), serve.counter("rejected")), (400, 20, 2));
    let log = serve.stderr();
    assert!(log.contains("malformed record skipped (its offset is committed): malformed JSON body"), "{log}");
    assert!(log.contains("missing `id`: every event on a Kafka topic needs its own id"), "{log}");

    // Phase 2: 1500 more events (and 10 repeats) produced in small batches while serve
    // is SIGKILLed part-way through, then restarted.
    let produced = Arc::new(Mutex::new(produced));
    let writer = {
        let produced = produced.clone();
        let addr = broker.addr();
        std::thread::spawn(move || {
            let producer = Producer::connect(&addr);
            for chunk in 0..30 {
                let mut batch: Vec<_> = (400 + chunk * 50..400 + (chunk + 1) * 50).map(event).collect();
                if chunk.is_multiple_of(3) {
                    batch.push(event(400 + chunk * 50));
                }
                let p = producer.produce(&batch, Compression::NoCompression);
                produced.lock().unwrap().extend(p);
                std::thread::sleep(Duration::from_millis(60));
            }
        })
    };
    wait_until("phase-2 events to start arriving", Duration::from_secs(60), &serve, || queued_ids(&dir).len() >= 600);
    serve.sigkill();
    let at_kill = committed(&dir);
    let ids_at_kill: BTreeSet<String> = queued_ids(&dir).into_iter().collect();
    writer.join().unwrap();
    let produced = Arc::try_unwrap(produced).unwrap().into_inner().unwrap();
    let all_ids: BTreeSet<String> = produced.iter().filter_map(|p| p.id.clone()).collect();
    assert_eq!(all_ids.len(), 1900);
    assert!(ids_at_kill.len() < 1900, "the kill landed mid-way ({} queued)", ids_at_kill.len());
    // The invariant at the crash: the queue holds exactly the events below the committed offsets.
    assert_eq!(ids_at_kill, ids_below(&produced, &at_kill), "offsets {at_kill:?}");
    for (p, end) in &phase1_end {
        assert!(at_kill[p] >= *end, "partition {p} committed {} < {end}", at_kill[p]);
    }

    let serve = Serve::start(&plan, &tracked);
    let resumed = serve.wait_for_line("resuming at offsets", Duration::from_secs(60));
    let shown: Vec<String> = at_kill.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    assert!(resumed.ends_with(&format!("resuming at offsets {}", shown.join(" "))), "{resumed} vs {shown:?}");
    let end = ends(&produced);
    wait_until("every phase-2 record to be committed", Duration::from_secs(90), &serve, || committed(&dir) == end);
    let ids = queued_ids(&dir);
    assert_eq!(ids.len(), 1900, "nothing lost, nothing doubled");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), all_ids);
    // Re-reads are bounded: the restarted consumer read only records from the committed
    // offsets on, so its only duplicates are the repeats produced after them.
    let mut seen_before: BTreeSet<String> = BTreeSet::new();
    let mut repeats_after = 0;
    let mut sorted = produced.clone();
    sorted.sort_by_key(|p| (p.partition, p.offset));
    for p in &sorted {
        let Some(id) = &p.id else { continue };
        if !seen_before.insert(id.clone()) && p.offset >= at_kill[&p.partition] {
            repeats_after += 1;
        }
    }
    let new_after = all_ids.len() - ids_at_kill.len();
    assert_eq!(
        (serve.counter("accepted"), serve.counter("duplicate"), serve.counter("rejected")),
        (new_after as u64, repeats_after, 0),
        "records read after the restart"
    );

    // Phase 3: the broker goes away and comes back; serve reconnects by itself.
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    broker.run();
    let producer = Producer::connect(&broker.addr());
    producer.wait_for_topic(TOPIC, PARTITIONS);
    let mut produced = produced;
    produced.extend(producer.produce(&(1900..1960).map(event).collect::<Vec<_>>(), Compression::NoCompression));
    let end = ends(&produced);
    wait_until("the events produced after the broker restart", Duration::from_secs(120), &serve, || {
        committed(&dir) == end
    });
    assert_eq!(queued_ids(&dir).len(), 1960);
    assert_eq!(serve.terminate(), Some(0), "serve stops cleanly on SIGTERM");

    // Replay applies them; the target equals a replay of the same events from a file.
    let (code, stdout, stderr) = run(stockshift().arg("replay").arg(&plan));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let q = Queue::open(&queue_path(&dir)).unwrap();
    let counts = q.counts().unwrap();
    assert_eq!(counts.get(&Status::Queued).copied().unwrap_or(0), 0, "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 1960, "{counts:?}");
    drop(q);
    let (ref_dir, ref_plan) = plan_copy(&broker.addr());
    let (code, _, stderr) = run(stockshift().arg("apply").arg(&ref_plan).arg("--auto-approve"));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<String> = (0..1960).map(|n| event(n).1).collect();
    std::fs::write(ref_dir.path().join("events.jsonl"), lines.join("\n") + "\n").unwrap();
    let (code, stdout, stderr) =
        run(stockshift().arg("replay").arg(&ref_plan).arg("--from").arg(ref_dir.path().join("events.jsonl")));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let expected = target_rows(&ref_dir.path().join("demo/target.db"));
    assert_eq!(target_rows(&dir.join("demo/target.db")), expected);
    assert_ne!(expected, applied, "the events changed the target");
}

#[test]
fn kafka_sources_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("plans"), dir.path());
    let plan = dir.path().join("kafka.yaml");
    let (code, stdout, stderr) = run(stockshift().arg("validate").arg(&plan));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let text = std::fs::read_to_string(&plan).unwrap();
    let cases = [
        ("brokers: [\"127.0.0.1:9092\"]", "brokers: [\"http://k:9092\"]", "Invalid Kafka broker `http://k:9092`"),
        ("brokers: [\"127.0.0.1:9092\"]", "brokers: []", "Kafka source `erp-stream` has no `brokers`"),
        ("      topic: inventory-events\n", "", "Missing key `topic` in `events.sources[0]`"),
        ("kind: kafka", "kind: standard", "Missing key `secret_env` in `events.sources[0]`"),
        (
            "kind: kafka",
            "kind: standard\n      secret_env: ERP_WEBHOOK_SECRET",
            "`topic` is only for `kind: kafka` sources",
        ),
        ("kind: kafka", "kind: kafka\n      secret_env: X", "`secret_env` does not apply to Kafka source `erp-stream`"),
    ];
    for (from, to, expected) in cases {
        assert!(text.contains(from), "{from}");
        std::fs::write(&plan, text.replacen(from, to, 1)).unwrap();
        let (code, stdout, stderr) = run(stockshift().arg("validate").arg(&plan));
        assert_eq!(code, 1, "{to}: {stdout}{stderr}");
        let line = stderr.lines().find(|l| l.contains(expected)).unwrap_or_else(|| panic!("{expected}: {stderr}"));
        assert!(line.contains("kafka.yaml:"), "file:line:col: {line}");
        assert!(stderr.contains("help:"), "{stderr}");
    }
}
