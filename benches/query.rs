//! Query seam: hourly averages over 200 series × 6 h of sealed data (answered from chunk
//! headers), versus the same read decoding every point (a 59-minute step defeats the headers),
//! and hourly rates (which decode the chunks where a value falls, to find counter resets, and
//! read a counter's other chunks from their headers);
//! and selecting series out of 100,000 by name, by a label regex, and without a name (a scan of
//! every series, as a name-less threshold does every tick).

use criterion::{Criterion, criterion_group, criterion_main};
use perfd::config::Config;
use perfd::ingest::BatchBuilder;
use perfd::model::{TimeBounds, now_ms};
use perfd::query::{Agg, Selector, read_aggregated, select};
use perfd::store::Store;
use perfd::writer::WriterHandle;
use std::hint::black_box;
use std::sync::Arc;

const HOUR: i64 = 3_600_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_test(dir.path());
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let writer = WriterHandle::start(store.clone(), config.writer.clone(), config.storage.clone()).unwrap();
    let now = now_ms();
    let t0 = now - now.rem_euclid(HOUR) - 8 * HOUR;
    for hour in 0..6 {
        let mut b = BatchBuilder::new(TimeBounds::new(now, 30 * 24 * HOUR));
        for s in 0..200 {
            let host = format!("h{s:03}");
            for i in 0..360 {
                let v = ((i * 37 + s * 13) % 1000) as f64 / 10.0; // a gauge: falls now and then
                b.push("cpu_usage", &[("host", &host)], (t0 + hour * HOUR + i * 10_000, v)).unwrap();
                let count = (hour * 360 + i) as f64 * 3.0; // a counter: never falls
                b.push("requests_total", &[("host", &host)], (t0 + hour * HOUR + i * 10_000, count)).unwrap();
            }
        }
        writer.submit(b.finish(), true).unwrap().unwrap().blocking_recv().unwrap().unwrap();
    }
    writer.seal_all().unwrap();
    let sel = Selector::parse("cpu_usage").unwrap();
    let end = t0 + 6 * HOUR - 1;
    let mut g = c.benchmark_group("query_200_series_6h");
    g.bench_function("hourly_avg_from_headers", |b| {
        b.iter(|| read_aggregated(black_box(&store), &sel, t0, end, HOUR, Agg::Avg, 5_000_000).unwrap())
    });
    g.bench_function("avg_decoding_every_point", |b| {
        b.iter(|| {
            read_aggregated(black_box(&store), &sel, t0, end, HOUR - 60_000, Agg::Avg, 5_000_000).unwrap()
        })
    });
    // A rate counts resets: a gauge's chunks, where values fall, are decoded; a counter's
    // without a reset are answered from their headers.
    g.bench_function("hourly_rate_across_resets", |b| {
        b.iter(|| read_aggregated(black_box(&store), &sel, t0, end, HOUR, Agg::Rate, 5_000_000).unwrap())
    });
    let counters = Selector::parse("requests_total").unwrap();
    g.bench_function("hourly_rate_of_counters_from_headers", |b| {
        b.iter(|| read_aggregated(black_box(&store), &counters, t0, end, HOUR, Agg::Rate, 5_000_000).unwrap())
    });
    g.finish();
    writer.shutdown();
}

/// 100,000 series: 1,000 names × 100 hosts.
fn selectors(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_test(dir.path());
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let writer = WriterHandle::start(store.clone(), config.writer.clone(), config.storage.clone()).unwrap();
    let now = now_ms();
    for n in 0..1000 {
        let mut b = BatchBuilder::new(TimeBounds::new(now, 30 * 24 * HOUR));
        for h in 0..100 {
            b.push(&format!("m{n:04}"), &[("host", &format!("h{h:03}"))], (now - HOUR, 1.0)).unwrap();
        }
        writer.submit(b.finish(), true).unwrap().unwrap().blocking_recv().unwrap().unwrap();
    }
    let mut g = c.benchmark_group("select_of_100k_series");
    for (name, text) in [
        ("by_name", r#"m0500"#),
        ("by_name_and_label_regex", r#"m0500{host=~"h0[0-4].*"}"#),
        ("name_regex_scan", r#"{__name__=~"m050.",host=~"h0[0-4].*"}"#),
    ] {
        let sel = Selector::parse(text).unwrap();
        g.bench_function(name, |b| b.iter(|| select(black_box(&store), &sel)));
    }
    // `GET /api/v1/status/tsdb` over every series.
    g.bench_function("cardinality_top_10", |b| {
        b.iter(|| perfd::query::cardinality::cardinality(black_box(&store), None, 10))
    });
    g.finish();
    writer.shutdown();
}

criterion_group!(benches, bench, selectors);
criterion_main!(benches);
