//! HTTP load generator for `/write`: pre-builds line-protocol bodies, pushes them over N
//! keep-alive connections to a loopback server and reports acknowledged points/s and latency.
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8470 --points 10000000
//! ```
//! Only loopback targets are accepted; the run is bounded by `--points` and `--seconds`
//! (`--repeat` cycles the bodies until `--seconds`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    connections: usize,
    points: usize,
    lines_per_request: usize,
    series: usize,
    seconds: u64,
    query: String,
    /// Start over when the bodies run out (until `seconds`): bounded memory for long runs.
    repeat: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8470".into(),
        connections: 8,
        points: 10_000_000,
        lines_per_request: 10_000,
        series: 1_000,
        seconds: 60,
        query: "precision=ms".into(),
        repeat: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut argv = argv.into_iter().peekable();
    while let Some(flag) = argv.next() {
        if flag == "--repeat" {
            a.repeat = true;
            continue;
        }
        let v = argv.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => a.url = v,
            "--connections" => a.connections = v.parse().expect("--connections N"),
            "--points" => a.points = v.parse().expect("--points N"),
            "--lines-per-request" => a.lines_per_request = v.parse().expect("--lines-per-request N"),
            "--series" => a.series = v.parse().expect("--series N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--query" => a.query = v,
            other => panic!("unknown argument {other}; see the file's doc comment"),
        }
    }
    let host = a.url.trim_start_matches("http://");
    assert!(
        host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]"),
        "loopback only"
    );
    a
}

/// Gauge-like values (a random walk with two decimals, fixed seed), one point per series per
/// second, ending two hours ago (so every hour is closed and sealed while the run goes on).
fn build_bodies(a: &Args) -> Vec<(String, usize)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let per_series = a.points.div_ceil(a.series) as i64;
    let t0 = now - now.rem_euclid(3_600_000) - 2 * 3_600_000 - per_series * 1000;
    let mut bodies = Vec::new();
    let (mut body, mut lines) = (String::new(), 0);
    let mut walk = vec![5_000i64; a.series];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..a.points {
        let (s, step) = (i % a.series, (i / a.series) as i64);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        walk[s] = (walk[s] + (x % 41) as i64 - 20).clamp(0, 10_000);
        let v = walk[s] as f64 / 100.0;
        body.push_str(&format!("cpu,host=host-{s:05},region=r{} usage={v} {}\n", s % 8, t0 + step * 1000));
        lines += 1;
        if lines == a.lines_per_request {
            bodies.push((std::mem::take(&mut body), lines));
            lines = 0;
        }
    }
    if lines > 0 {
        bodies.push((body, lines));
    }
    bodies
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = parse_args();
    let bodies = Arc::new(build_bodies(&a));
    let bytes: usize = bodies.iter().map(|b| b.0.len()).sum();
    eprintln!("built {} bodies, {} points, {:.1} MB", bodies.len(), a.points, bytes as f64 / 1e6);
    let url = format!("{}/write?{}", a.url, a.query);
    let next = Arc::new(AtomicUsize::new(0));
    let (acked, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.connections)
        .map(|_| {
            let (bodies, next, acked, errors, url) =
                (bodies.clone(), next.clone(), acked.clone(), errors.clone(), url.clone());
            let repeat = a.repeat;
            tokio::spawn(async move {
                let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
                let mut lat = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Relaxed);
                    let i = if repeat { i % bodies.len() } else { i };
                    let Some((body, n)) = bodies.get(i) else {
                        break;
                    };
                    let t = Instant::now();
                    // A 503 (queue full) is retried with the same body after a pause.
                    loop {
                        match client.post(&url).body(body.clone()).send().await {
                            Ok(r) if r.status().is_success() => break,
                            Ok(r) if r.status().as_u16() == 503 => {
                                errors.fetch_add(1, Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Ok(r) => panic!("status {}: {}", r.status(), r.text().await.unwrap_or_default()),
                            Err(e) => panic!("request failed: {e}"),
                        }
                    }
                    acked.fetch_add(*n as u64, Relaxed);
                    let _ = lat.record(t.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    let mut lat = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        lat.add(t.await.expect("task")).expect("merge");
    }
    let secs = started.elapsed().as_secs_f64();
    let points = acked.load(Relaxed);
    println!(
        "acked_points={points} seconds={secs:.2} points_per_sec={:.0} requests_p50_ms={:.1} p99_ms={:.1} retries_503={}",
        points as f64 / secs,
        lat.value_at_quantile(0.5) as f64 / 1000.0,
        lat.value_at_quantile(0.99) as f64 / 1000.0,
        errors.load(Relaxed)
    );
}
