//! Webhook load generator for `stockshift serve`.
//!
//! Sends N signed webhooks over C keep-alive HTTP/1.1 connections (raw TcpStream,
//! no HTTP client crate), with a share of duplicates (re-deliveries of an earlier
//! webhook id, freshly signed like a retry) and optionally shuffled sequences
//! (events arrive out of order). Prints accepted/s and p50/p99 latency.
//!
//! ```text
//! cargo run --release --example webhook_load -- --url http://127.0.0.1:8088 --source erp \
//!     --secret-env ERP_WEBHOOK_SECRET --kind standard -n 50000 -c 64 --dup-ratio 0.1 --reorder
//! ```
//!
//! The last line is machine-readable:
//! `RESULT sent=N distinct=D accepted=A duplicate=U errors=E seconds=S accepted_per_s=R p50_ms=X p99_ms=Y`.
//! `--kind shopify` sends `orders/create` with one line item at `location_id` 1
//! (the source's inventory map must map location id 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use stockshift::events::signature::{SecretKey, sign_shopify, sign_standard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Standard,
    Shopify,
}

/// Send signed webhooks to `stockshift serve` and measure it.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the receiver, e.g. http://127.0.0.1:8088.
    #[arg(long)]
    url: String,
    /// Source name (POST /webhooks/{source}).
    #[arg(long)]
    source: String,
    /// Environment variable holding the source's secret.
    #[arg(long)]
    secret_env: String,
    /// Webhook dialect of the source.
    #[arg(long, value_enum, default_value_t = Kind::Standard)]
    kind: Kind,
    /// Webhooks to send (duplicates included).
    #[arg(short = 'n', default_value_t = 10_000)]
    n: usize,
    /// Concurrent connections.
    #[arg(short = 'c', default_value_t = 64)]
    c: usize,
    /// Share of webhooks that re-deliver an earlier webhook id (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    dup_ratio: f64,
    /// Shuffle the events' sequences so that they arrive out of order.
    #[arg(long)]
    reorder: bool,
    /// Runtime worker threads of the generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of distinct SKUs the events touch.
    #[arg(long, default_value_t = 1000)]
    skus: usize,
}

/// xorshift64*: deterministic, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One delivery to send: its webhook id and body.
struct Delivery {
    id: String,
    body: Vec<u8>,
}

struct Plan {
    host: String,
    path: String,
    kind: Kind,
    key: SecretKey,
    deliveries: Vec<Arc<Delivery>>,
    distinct: usize,
}

fn build(args: &Args) -> Result<Plan, String> {
    let rest = args.url.strip_prefix("http://").ok_or("--url must start with http://")?;
    let host = rest.trim_end_matches('/').to_owned();
    let secret = std::env::var(&args.secret_env).map_err(|_| format!("{} is not set", args.secret_env))?;
    let key = match args.kind {
        Kind::Standard => SecretKey::standard(&secret)?,
        Kind::Shopify => SecretKey::shopify(&secret)?,
    };
    let mut rng = Rng(args.seed.max(1));
    let mut sequences: Vec<i64> = (1..=args.n as i64).collect();
    if args.reorder {
        for i in (1..sequences.len()).rev() {
            sequences.swap(i, rng.below(i + 1));
        }
    }
    let base_ms = 1_795_773_600_000i64; // 2026-11-27T10:00:00Z
    let mut originals: Vec<Arc<Delivery>> = Vec::new();
    let mut deliveries = Vec::with_capacity(args.n);
    for (i, seq) in sequences.iter().enumerate() {
        if !originals.is_empty() && rng.unit() < args.dup_ratio {
            let earlier = originals[rng.below(originals.len())].clone();
            deliveries.push(earlier);
            continue;
        }
        let sku = format!("SKU-{}", rng.below(args.skus.max(1)));
        let occurred = jiff::Timestamp::from_millisecond(base_ms + seq).map_err(|e| e.to_string())?;
        let body = match args.kind {
            Kind::Standard => {
                format!(r#"{{"sku":"{sku}","location":"WH-1","delta":-1,"sequence":{seq},"occurred_at":"{occurred}"}}"#)
            }
            Kind::Shopify => format!(
                r#"{{"id":{i},"location_id":1,"updated_at":"{occurred}","line_items":[{{"id":{i},"sku":"{sku}","quantity":1}}]}}"#
            ),
        };
        let d = Arc::new(Delivery { id: format!("load-{}-{i}", args.seed), body: body.into_bytes() });
        originals.push(d.clone());
        deliveries.push(d);
    }
    Ok(Plan {
        host,
        path: format!("/webhooks/{}", args.source),
        kind: args.kind,
        key,
        distinct: originals.len(),
        deliveries,
    })
}

fn request(plan: &Plan, d: &Delivery) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        plan.path,
        plan.host,
        d.body.len()
    );
    match plan.kind {
        Kind::Standard => {
            let ts = jiff::Timestamp::now().as_second();
            let sig = sign_standard(&plan.key, &d.id, ts, &d.body);
            head.push_str(&format!("webhook-id: {}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n", d.id));
        }
        Kind::Shopify => {
            let sig = sign_shopify(&plan.key, &d.body);
            head.push_str(&format!(
                "X-Shopify-Topic: orders/create\r\nX-Shopify-Hmac-Sha256: {sig}\r\nX-Shopify-Webhook-Id: {}\r\n",
                d.id
            ));
        }
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&d.body);
    out
}

#[derive(Default)]
struct Tally {
    accepted: usize,
    duplicate: usize,
    errors: usize,
    latencies_us: Vec<u64>,
    first_error: Option<String>,
}

/// Reads one HTTP/1.1 response (Content-Length framed) from a keep-alive connection.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Vec<u8>)> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("headers"))?;
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status"))?;
    let len = head
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
        })
        .ok_or_else(|| bad("no content-length"))?;
    let total = head_end + 4 + len;
    while buf.len() < total {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end + 4..total].to_vec();
    buf.drain(..total);
    Ok((status, body))
}

async fn worker(plan: Arc<Plan>, next: Arc<AtomicUsize>) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(d) = plan.deliveries.get(i) else { break };
        let req = request(&plan, d);
        let mut attempts = 0;
        loop {
            attempts += 1;
            if conn.is_none() {
                match TcpStream::connect(&plan.host).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        conn = Some(s);
                        buf.clear();
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if attempts < 3 {
                            continue;
                        }
                        break;
                    }
                }
            }
            let s = conn.as_mut().expect("connected above");
            let started = Instant::now();
            let res = async {
                s.write_all(&req).await?;
                read_response(s, &mut buf).await
            }
            .await;
            match res {
                Ok((status, body)) => {
                    t.latencies_us.push(started.elapsed().as_micros() as u64);
                    if (200..300).contains(&status) {
                        if body.starts_with(br#"{"result":"duplicate""#) {
                            t.duplicate += 1;
                        } else {
                            t.accepted += 1;
                        }
                    } else {
                        t.errors += 1;
                        t.first_error.get_or_insert(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                    }
                    break;
                }
                Err(e) => {
                    // A keep-alive connection closed by the server: reconnect and resend once.
                    conn = None;
                    if attempts < 2 {
                        continue;
                    }
                    t.errors += 1;
                    t.first_error.get_or_insert(format!("request: {e}"));
                    break;
                }
            }
        }
    }
    t
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let plan = match build(&args) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tallies: Vec<Tally> = rt.block_on(async {
        let handles: Vec<_> = (0..args.c.max(1)).map(|_| tokio::spawn(worker(plan.clone(), next.clone()))).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("worker"));
        }
        out
    });
    let secs = started.elapsed().as_secs_f64();
    let mut total = Tally::default();
    for t in tallies {
        total.accepted += t.accepted;
        total.duplicate += t.duplicate;
        total.errors += t.errors;
        total.latencies_us.extend(t.latencies_us);
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
    }
    total.latencies_us.sort_unstable();
    let (p50, p99) = (percentile(&total.latencies_us, 0.50), percentile(&total.latencies_us, 0.99));
    let sent = plan.deliveries.len();
    println!(
        "{sent} webhooks ({} distinct) to {}{} at concurrency {} in {secs:.2}s",
        plan.distinct, plan.host, plan.path, args.c
    );
    println!(
        "  accepted {}  duplicate {}  errors {}  |  {:.0} requests/s, {:.0} accepted/s  |  latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        total.accepted,
        total.duplicate,
        total.errors,
        sent as f64 / secs,
        total.accepted as f64 / secs,
        total.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    if let Some(e) = &total.first_error {
        println!("  first error: {e}");
    }
    println!(
        "RESULT sent={sent} distinct={} accepted={} duplicate={} errors={} seconds={secs:.3} accepted_per_s={:.0} requests_per_s={:.0} p50_ms={p50:.3} p99_ms={p99:.3}",
        plan.distinct,
        total.accepted,
        total.duplicate,
        total.errors,
        total.accepted as f64 / secs,
        sent as f64 / secs,
    );
    std::process::ExitCode::from(if total.errors == 0 { 0 } else { 1 })
}
