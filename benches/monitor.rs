//! Request timing seam: `Monitor::record_id`, once per request on every path (the hit path
//! included), against the same lock and two records into the dense HDR histograms it used
//! before (baseline, same process).

use criterion::{Criterion, criterion_group, criterion_main};
use parking_lot::Mutex;
use perfd::monitor::Monitor;
use std::hint::black_box;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("monitor");
    let monitor = Monitor::default();
    let id = monitor.route_id("/api/v1/cache/{strategy}/{key}", "GET");
    // Latencies of a cache hit: 40 µs to 2 ms, cycled.
    let elapsed: Vec<Duration> = (0..64).map(|i| Duration::from_micros(40 + i * i * 31 % 2000)).collect();
    let now = perfd::model::now_ms();
    let mut i = 0;
    g.bench_function("record_id", |b| {
        b.iter(|| {
            i = (i + 1) % elapsed.len();
            monitor.record_id(black_box(id), 200, elapsed[i], now);
        })
    });
    let hdr = || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 120_000_000, 2).unwrap();
    let baseline = Mutex::new((hdr(), hdr()));
    g.bench_function("baseline_hdr_record_twice", |b| {
        b.iter(|| {
            i = (i + 1) % elapsed.len();
            let us = (elapsed[i].as_micros() as u64).clamp(1, 120_000_000);
            let mut h = baseline.lock();
            let _ = h.0.record(black_box(us));
            let _ = h.1.record(us);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
