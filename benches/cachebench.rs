//! One client for both servers: GETs of one cached value (or N-key mgets) against perfd's HTTP
//! API or a Redis server, over C keep-alive connections from one thread, closed loop or at a
//! fixed rate. The same code path, connection count and CPU budget for both sides, so the two
//! p99s are comparable (wrk and redis-benchmark are different clients with different costs).
//!
//! ```sh
//! cargo run --release --example cachebench -- --target http://127.0.0.1:8470 --rate 100000
//! cargo run --release --example cachebench -- --target redis://127.0.0.1:6379 --mget 16
//! ```
//! `--connections` (50), `--seconds` (10, after 1 s of warm-up), `--rate` (requests/s over all
//! connections; 0 = closed loop), `--mget N` (N keys per request: perfd's compact mget, Redis
//! pipelined GETs), `--key` (`key0`; mget uses `key0..keyN-1`), `--strategy` (`llm_response`).
//! The keys must exist. With `--rate`, latency counts from each request's scheduled send time,
//! so a stalled server cannot hide its queue (no coordinated omission); `--from-send` counts
//! from the actual send instead, leaving out the client's own stalls.
//!
//! The loop polls non-blocking sockets without sleeping, so it keeps its core busy: pin it to
//! a core of its own (`taskset -c 1`). Only loopback targets are accepted.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    target: String,
    connections: usize,
    seconds: u64,
    rate: u64,
    mget: usize,
    key: String,
    strategy: String,
    /// With `--rate`: count latency from the actual send instead of the scheduled one.
    from_send: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        target: "http://127.0.0.1:8470".into(),
        connections: 50,
        seconds: 10,
        rate: 0,
        mget: 0,
        key: "key0".into(),
        strategy: "llm_response".into(),
        from_send: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--from-send" {
            a.from_send = true;
            continue;
        }
        let v = argv.next().unwrap_or_default();
        match flag.as_str() {
            "--target" => a.target = v,
            "--connections" => a.connections = v.parse().expect("--connections N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--rate" => a.rate = v.parse().expect("--rate N"),
            "--mget" => a.mget = v.parse().expect("--mget N"),
            "--key" => a.key = v,
            "--strategy" => a.strategy = v,
            other => panic!("unknown argument {other}; see the file's doc comment"),
        }
    }
    a
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Http,
    Redis,
}

/// The request bytes, and how many replies (Redis) or responses (HTTP) one request gets.
fn request(a: &Args, protocol: Protocol) -> (Vec<u8>, usize) {
    let keys: Vec<String> =
        if a.mget > 0 { (0..a.mget).map(|i| format!("key{i}")).collect() } else { vec![a.key.clone()] };
    match protocol {
        Protocol::Http if a.mget > 0 => {
            let body: String = keys.iter().map(|k| format!("{}:{k}\n", a.strategy)).collect();
            let head = format!(
                "POST /api/v1/cache/mget HTTP/1.1\r\nHost: perfd\r\nContent-Type: application/x-perfd-mget\r\nAccept: application/x-perfd-mget\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            ([head.into_bytes(), body.into_bytes()].concat(), 1)
        }
        Protocol::Http => (
            format!("GET /api/v1/cache/{}/{} HTTP/1.1\r\nHost: perfd\r\n\r\n", a.strategy, a.key)
                .into_bytes(),
            1,
        ),
        Protocol::Redis => {
            let cmds: String =
                keys.iter().map(|k| format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len())).collect();
            (cmds.into_bytes(), keys.len())
        }
    }
}

/// Bytes of one complete answer at the start of `buf`, if it is all there; panics on an answer
/// that is not a hit (the benchmark measures hits only).
fn complete(buf: &[u8], protocol: Protocol, replies: usize) -> Option<usize> {
    match protocol {
        Protocol::Http => {
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            let head = std::str::from_utf8(&buf[..end]).expect("HTTP head is ASCII");
            assert!(head.starts_with("HTTP/1.1 200"), "not a hit: {head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .expect("content-length")
                .parse()
                .expect("content-length is a number");
            (buf.len() >= end + len).then_some(end + len)
        }
        Protocol::Redis => {
            let mut at = 0;
            for _ in 0..replies {
                let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
                let line = std::str::from_utf8(&buf[at..line_end]).expect("RESP header");
                let len: usize = line
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("not a hit: {line}"));
                at = line_end + 2 + len + 2;
                if buf.len() < at {
                    return None;
                }
            }
            Some(at)
        }
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When the request in flight was due (rate) or sent (closed loop).
    started: Option<Instant>,
    /// When the next request is due.
    next: Instant,
}

fn main() {
    let a = parse_args();
    let (protocol, host) = match a.target.split_once("://") {
        Some(("http", h)) => (Protocol::Http, h.trim_end_matches('/')),
        Some(("redis", h)) => (Protocol::Redis, h.trim_end_matches('/')),
        _ => panic!("--target http://HOST:PORT or redis://HOST:PORT"),
    };
    assert!(host.starts_with("127.") || host.starts_with("localhost"), "loopback only");
    let (req, replies) = request(&a, protocol);
    let start = Instant::now();
    // Each connection sends every `interval`, the connections evenly staggered.
    let interval = (a.rate > 0).then(|| Duration::from_secs_f64(a.connections as f64 / a.rate as f64));
    let mut conns: Vec<Conn> = (0..a.connections)
        .map(|i| {
            let stream = TcpStream::connect(host).expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            stream.set_nonblocking(true).expect("nonblocking");
            let offset = interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / a.connections as f64));
            Conn { stream, buf: Vec::with_capacity(64 << 10), started: None, next: start + offset }
        })
        .collect();
    let warm_until = start + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(a.seconds);
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut chunk = vec![0u8; 64 << 10];
    let mut done = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for c in &mut conns {
            match c.started {
                None if now >= c.next => {
                    c.stream.write_all(&req).expect("write");
                    // Closed loop: the clock starts now; at a rate: when the request was due.
                    c.started = Some(if interval.is_some() && !a.from_send { c.next } else { now });
                    c.next += interval.unwrap_or_default();
                }
                None => {}
                Some(started) => match c.stream.read(&mut chunk) {
                    Ok(0) => panic!("server closed the connection"),
                    Ok(n) => {
                        c.buf.extend_from_slice(&chunk[..n]);
                        if let Some(used) = complete(&c.buf, protocol, replies) {
                            assert_eq!(used, c.buf.len(), "one answer per request");
                            c.buf.clear();
                            c.started = None;
                            let finished = Instant::now();
                            if started >= warm_until {
                                let _ = hist.record((finished - started).as_micros().max(1) as u64);
                                done += 1;
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read: {e}"),
                },
            }
        }
    }
    let secs = a.seconds as f64;
    let per = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} {}: {:.0} req/s ({:.0} keys/s), latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
        a.target,
        if a.rate > 0 { format!("at {} req/s", a.rate) } else { "closed loop".into() },
        done as f64 / secs,
        done as f64 * a.mget.max(1) as f64 / secs,
        per(0.5),
        per(0.9),
        per(0.99),
        per(0.999),
        hist.max() as f64 / 1000.0
    );
}
