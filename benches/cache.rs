//! L1 seams: hit, miss and set through `TieredCache` (validation, stats and latency included).

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use perfd::cache::TieredCache;
use perfd::config::Config;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cache = TieredCache::new(Config::for_test(std::path::Path::new("unused")).cache).unwrap();
    let value = Bytes::from(vec![b'x'; 512]);
    rt.block_on(async {
        for i in 0..1000 {
            cache.set("llm_response", &format!("k{i}"), value.clone(), None, None).await.unwrap();
        }
    });
    let mut g = c.benchmark_group("cache_l1");
    g.bench_function("hit", |b| {
        b.iter(|| rt.block_on(cache.get("llm_response", black_box("k500"))).unwrap())
    });
    g.bench_function("miss", |b| {
        b.iter(|| rt.block_on(cache.get("llm_response", black_box("absent"))).unwrap())
    });
    g.bench_function("set", |b| {
        b.iter(|| rt.block_on(cache.set("llm_response", black_box("k1"), value.clone(), None, None)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
