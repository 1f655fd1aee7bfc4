//! L1 seams through `TieredCache` (validation, statistics and latency included), each next to a
//! baseline in the same process: a bare quick_cache lookup of the same key, so the figures read
//! as "perfd's bookkeeping costs N× a raw hash-map hit" on whatever machine runs them.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use perfd::cache::TieredCache;
use perfd::config::Config;
use perfd::model::now_ms;
use std::hint::black_box;
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cache = TieredCache::new(Config::for_test(std::path::Path::new("unused")).cache).unwrap();
    let value = Bytes::from(vec![b'x'; 512]);
    let raw: quick_cache::sync::Cache<String, Arc<Bytes>> = quick_cache::sync::Cache::new(1000);
    rt.block_on(async {
        for i in 0..1000 {
            cache.set("llm_response", &format!("k{i}"), value.clone(), None, None).await.unwrap();
            raw.insert(format!("llm_response:k{i}"), Arc::new(value.clone()));
        }
    });
    let keys: Vec<(String, String)> = (0..16).map(|i| ("llm_response".into(), format!("k{i}"))).collect();
    let mut g = c.benchmark_group("cache_l1");
    g.bench_function("baseline_quick_cache_get", |b| b.iter(|| raw.get(black_box("llm_response:k500"))));
    g.bench_function("hit_sync", |b| {
        b.iter(|| cache.get_l1_hit("llm_response", black_box("k500"), now_ms()))
    });
    // The connection-level hit path's whole answer: parse the head, look up, write the answer.
    let head = b"GET /api/v1/cache/llm_response/k500 HTTP/1.1\r\nHost: 127.0.0.1:8470\r\n\r\n";
    let mut out = Vec::with_capacity(1024);
    g.bench_function("hit_path_answer", |b| {
        b.iter(|| {
            out.clear();
            perfd::api::answer_hit(
                &cache,
                None,
                &perfd::api::HostPolicy::default(),
                black_box(head),
                &mut out,
                now_ms(),
            )
        })
    });
    // The same with the Host check off (`http.allowed_hosts = ["*"]`): what checking it costs.
    let any_host = perfd::api::HostPolicy::new(&["*".to_owned()]);
    g.bench_function("hit_path_answer_unchecked_host", |b| {
        b.iter(|| {
            out.clear();
            perfd::api::answer_hit(&cache, None, &any_host, black_box(head), &mut out, now_ms())
        })
    });
    // The same for a compact 16-key mget (the lookup is `get_many_16` below).
    let lines: String = (0..16).map(|i| format!("llm_response:k{i}\n")).collect();
    let mget = format!(
        "POST /api/v1/cache/mget HTTP/1.1\r\nHost: 127.0.0.1:8470\r\nContent-Type: application/x-perfd-mget\r\n\
         Accept: application/x-perfd-mget\r\nContent-Length: {}\r\n\r\n{lines}",
        lines.len()
    );
    g.bench_function("hit_path_mget_16", |b| {
        b.iter(|| {
            out.clear();
            perfd::api::answer_hit(
                &cache,
                None,
                &perfd::api::HostPolicy::default(),
                black_box(mget.as_bytes()),
                &mut out,
                now_ms(),
            )
        })
    });
    g.bench_function("hit", |b| {
        b.iter(|| rt.block_on(cache.get("llm_response", black_box("k500"))).unwrap())
    });
    g.bench_function("miss", |b| {
        b.iter(|| rt.block_on(cache.get("llm_response", black_box("absent"))).unwrap())
    });
    g.bench_function("set", |b| {
        b.iter(|| rt.block_on(cache.set("llm_response", black_box("k1"), value.clone(), None, None)).unwrap())
    });
    g.bench_function("get_many_16", |b| b.iter(|| rt.block_on(cache.get_many(black_box(&keys))).unwrap()));
    // The statistics of a full default L1 (1,000 entries; read every sampler tick and by
    // `/api/v1/metrics/cache`), next to a bare walk of the same quick_cache summing lengths.
    g.bench_function("baseline_quick_cache_walk_1000", |b| {
        b.iter(|| raw.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
    });
    g.bench_function("statistics_1000", |b| b.iter(|| cache.statistics()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
