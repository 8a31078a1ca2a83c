//! A load generator for the scripts that measure the server (`scripts/soak`,
//! `scripts/contain`, `scripts/slow-clients`); wrk measures peak
//! throughput, this does what wrk cannot:
//!
//! - `rate`: an open loop at a fixed request rate (a soak at a share of the
//!   peak, or a trickle of malicious requests beside wrk's load), printing
//!   one line per interval (requests, errors, p50/p99 latency, and the
//!   server's resident memory with `--pid`) and a summary;
//! - `slow`: slowloris (headers a byte at a time) and slow-body connections
//!   over TLS, each reopened when the server cuts it off.
//!
//! Usage: `loadgen rate URL BODY CA RATE SECONDS [--interval S] [--pid PID]`,
//! `loadgen slow ADDR CA HEADERS BODIES SECONDS`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio_rustls::TlsConnector;

/// Requests in flight at most, in `rate` mode: past it the generator is the
/// bottleneck, and says so.
const MAX_IN_FLIGHT: usize = 256;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: loadgen rate URL BODY CA RATE SECONDS [--interval S] [--pid PID]\n       loadgen slow ADDR CA HEADERS BODIES SECONDS";
    let code = match args.first().map(String::as_str) {
        Some("rate") if args.len() >= 6 => rate(&args[1..]).await,
        Some("slow") if args.len() == 6 => slow(&args[1..]).await,
        _ => {
            eprintln!("{usage}");
            2
        }
    };
    std::process::exit(code);
}

/// Latencies of one interval, in microseconds.
#[derive(Default)]
struct Window {
    latencies: Vec<u64>,
    errors: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

async fn rate(args: &[String]) -> i32 {
    let url = args[0].clone();
    let body = std::fs::read(&args[1]).expect("reading the request body");
    let client = tollgate_e2e::client(&PathBuf::from(&args[2]));
    let rate: f64 = args[3].parse().expect("RATE is requests per second");
    let seconds: u64 = args[4].parse().expect("SECONDS is a whole number");
    let interval: u64 = option(args, "--interval").map_or(10, |s| s.parse().expect("--interval"));
    let pid: Option<u32> = option(args, "--pid").map(|p| p.parse().expect("--pid"));

    let window = Arc::new(Mutex::new(Window::default()));
    let all = Arc::new(Mutex::new(Window::default()));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let skipped = Arc::new(AtomicU64::new(0));
    let body = shared(body);
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_report = started + Duration::from_secs(interval);
    println!(
        "{:>6} {:>9} {:>7} {:>9} {:>9} {:>10}",
        "second", "req/s", "errors", "p50 ms", "p99 ms", "rss KiB"
    );
    while Instant::now() < end {
        ticks.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (client, url, sink) = (client.clone(), url.clone(), window.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let ok = match client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            let micros = sent.elapsed().as_micros() as u64;
            let mut sink = sink.lock().await;
            if ok {
                sink.latencies.push(micros);
            } else {
                sink.errors += 1;
            }
            drop(permit);
        });
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(interval);
            report(&window, &all, started, interval, pid).await;
        }
    }
    // Let the last requests finish.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
    report(&window, &all, started, interval, pid).await;
    let mut all = all.lock().await;
    all.latencies.sort_unstable();
    let total = all.latencies.len() as u64 + all.errors;
    println!(
        "total: {total} requests in {:.0} s ({:.0} req/s), {} errors, p50 {:.3} ms, p99 {:.3} ms, {} not sent (generator saturated)",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64(),
        all.errors,
        percentile(&all.latencies, 0.50),
        percentile(&all.latencies, 0.99),
        skipped.load(Ordering::Relaxed)
    );
    i32::from(all.errors > 0)
}

async fn report(
    window: &Mutex<Window>,
    all: &Mutex<Window>,
    started: Instant,
    interval: u64,
    pid: Option<u32>,
) {
    let mut current = std::mem::take(&mut *window.lock().await);
    current.latencies.sort_unstable();
    let count = current.latencies.len() as u64 + current.errors;
    println!(
        "{:>6} {:>9.0} {:>7} {:>9.3} {:>9.3} {:>10}",
        started.elapsed().as_secs(),
        count as f64 / interval as f64,
        current.errors,
        percentile(&current.latencies, 0.50),
        percentile(&current.latencies, 0.99),
        rss_kib(pid).map_or_else(|| "-".to_owned(), |r| r.to_string())
    );
    let mut all = all.lock().await;
    all.errors += current.errors;
    all.latencies.extend(current.latencies);
}

/// The request body, leaked for the run so that each request borrows it
/// rather than copying it.
fn shared(body: Vec<u8>) -> &'static [u8] {
    Box::leak(body.into_boxed_slice())
}

async fn slow(args: &[String]) -> i32 {
    let address = args[0].clone();
    let config = Arc::new(tollgate_e2e::tls_config(&PathBuf::from(&args[1])));
    let headers: usize = args[2].parse().expect("HEADERS is a count");
    let bodies: usize = args[3].parse().expect("BODIES is a count");
    let seconds: u64 = args[4].parse().expect("SECONDS is a whole number");
    let end = Instant::now() + Duration::from_secs(seconds);
    let cut = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..headers + bodies)
        .map(|i| {
            let (address, config, cut) = (address.clone(), config.clone(), cut.clone());
            let slow_body = i >= headers;
            tokio::spawn(async move {
                while Instant::now() < end {
                    if crawl(&address, &config, slow_body, end).await {
                        cut.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "slow clients: {headers} sending headers and {bodies} sending bodies a byte at a time for {seconds} s; the server cut them off {} times",
        cut.load(Ordering::Relaxed)
    );
    0
}

/// One slow connection until the server closes it (`true`) or the run
/// ends.
async fn crawl(
    address: &str,
    config: &Arc<rustls::ClientConfig>,
    slow_body: bool,
    end: Instant,
) -> bool {
    let Ok(tcp) = TcpStream::connect(address).await else {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return false;
    };
    let Ok(mut stream) = TlsConnector::from(config.clone())
        .connect("localhost".try_into().expect("a DNS name"), tcp)
        .await
    else {
        return true;
    };
    let (opening, drip): (&[u8], u8) = if slow_body {
        (
            b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
            b' ',
        )
    } else {
        (b"POST /validate HTTP/1.1\r\n", b'x')
    };
    if stream.write_all(opening).await.is_err() {
        return true;
    }
    if !slow_body && stream.write_all(b"X-Slow: ").await.is_err() {
        return true;
    }
    let mut buffer = [0u8; 256];
    while Instant::now() < end {
        if stream.write_all(&[drip]).await.is_err() {
            return true;
        }
        // Anything the server says (a 408), or its closing, ends it.
        if tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer))
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}
