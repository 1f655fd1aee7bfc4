//! Ingest seams: line-protocol parsing (bytes/s) and the writer's durable commit of a
//! 10 k-point batch into a real redb file.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use perfd::config::Config;
use perfd::ingest::{BatchBuilder, line_protocol};
use perfd::model::{TimeBounds, now_ms};
use perfd::store::Store;
use perfd::writer::WriterHandle;
use std::hint::black_box;
use std::sync::Arc;

/// 10 000 lines over 1 000 series (Telegraf-like: 3 tags, 1 field), one second apart per series.
fn body(now: i64) -> String {
    (0..10_000)
        .map(|i| {
            let ts = (now - 600_000 + (i / 1000) * 1000) * 1_000_000;
            format!(
                "cpu,host=web-{:03},region=eu-{},dc=dc{} usage_user={}.{:02} {ts}\n",
                i % 1000,
                i % 3,
                i % 7,
                i % 97,
                i % 100
            )
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let now = now_ms();
    let text = body(now);
    let mut g = c.benchmark_group("line_protocol");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse_10k_lines", |b| {
        b.iter(|| {
            let mut out = BatchBuilder::new(TimeBounds::new(now, 86_400_000));
            line_protocol::parse(black_box(text.as_bytes()), line_protocol::Precision::Ns, now, &mut out)
                .unwrap();
            out.finish()
        })
    });
    g.finish();
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_test(dir.path());
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let writer = WriterHandle::start(store, config.writer.clone(), config.storage.clone()).unwrap();
    let now = now_ms();
    let text = body(now);
    let make = || {
        let mut out = BatchBuilder::new(TimeBounds::new(now, 86_400_000));
        line_protocol::parse(text.as_bytes(), line_protocol::Precision::Ns, now, &mut out).unwrap();
        out.finish()
    };
    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(30);
    g.bench_function("durable_commit_10k_points", |b| {
        b.iter_batched(
            make,
            |batch| writer.submit(batch, true).unwrap().unwrap().blocking_recv().unwrap().unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
    writer.shutdown();
}

criterion_group!(benches, parse, commit);
criterion_main!(benches);
