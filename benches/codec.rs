//! Chunk codec throughput: encode and decode of one series-hour, decimal and XOR modes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use perfd::store::codec;
use std::hint::black_box;

/// Deterministic pseudo-random walk (fixed seed) so runs compare.
fn series(n: usize, decimals: bool) -> Vec<(i64, f64)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = 50.0f64;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let step = (x % 201) as f64 / 100.0 - 1.0;
            v = if decimals { ((v + step) * 100.0).round() / 100.0 } else { v + step * 1.000_000_1 };
            (1_700_000_000_000 + i as i64 * 1000 + (x % 3) as i64, v)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (label, decimals) in [("decimal", true), ("xor", false)] {
        let points = series(3600, decimals);
        let bytes = codec::encode(&points);
        eprintln!("{label}: {:.2} bytes/point", bytes.len() as f64 / points.len() as f64);
        let mut g = c.benchmark_group(format!("codec/{label}"));
        g.throughput(Throughput::Elements(points.len() as u64));
        g.bench_function("encode", |b| b.iter(|| codec::encode(black_box(&points))));
        g.bench_function("decode", |b| b.iter(|| codec::decode(black_box(&bytes)).unwrap()));
        g.bench_function("header", |b| b.iter(|| codec::header(black_box(&bytes)).unwrap()));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
