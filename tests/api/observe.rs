//! Request timing, the sampler's series, resource usage and the health score, through the server.

use crate::helpers::{TestServer, expect_error};

#[tokio::test]
async fn performance_reports_route_patterns_not_raw_paths() {
    let s = TestServer::start();
    for i in 0..5 {
        s.client.put(s.url(&format!("/api/v1/cache/crew_config/k{i}"))).body("v").send().await.unwrap();
    }
    s.client.get(s.url("/no/such/route")).send().await.unwrap();
    let (status, p) = s.get_json("/api/v1/metrics/performance?window=1h").await;
    assert_eq!(status, 200, "{p}");
    let endpoints = p["endpoints"].as_array().unwrap();
    let put = endpoints
        .iter()
        .find(|e| e["route"] == "/api/v1/cache/{strategy}/{key}" && e["method"] == "PUT")
        .expect("pattern");
    assert_eq!(put["requests"], 5);
    assert!(put["p99_ms"].as_f64().unwrap() >= 0.0);
    assert!(endpoints.iter().any(|e| e["route"] == "unmatched" && e["error_rate_percent"] == 100.0), "{p}");
    assert!(!endpoints.iter().any(|e| e["route"].as_str().unwrap().contains("k1")), "raw paths never appear");
    assert!(p["slowest"].as_array().unwrap().len() <= 5);
    for bad in ["window=forever", "window=48h", "window=0s"] {
        let r = s.client.get(s.url(&format!("/api/v1/metrics/performance?{bad}"))).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
}

#[tokio::test]
async fn sampler_writes_series_that_resources_and_queries_read() {
    let s = TestServer::start();
    s.client.get(s.url("/healthz")).send().await.unwrap();
    s.client.get(s.url("/api/v1/cache/crew_config/missing")).send().await.unwrap();
    s.daemon().sampler.tick();
    s.daemon().sampler.tick();
    s.flush();
    let (status, r) = s.get_json("/api/v1/metrics/resources/usage?window=1h").await;
    assert_eq!(status, 200, "{r}");
    assert!(r["latest"]["memory_total_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latest"]["process_rss_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latest"]["process_threads"].as_u64().unwrap() >= 4, "{r}");
    // The file system holding the data dir is always read, even an overlay or a tmpfs.
    let disks = r["latest"]["disks"].as_array().unwrap();
    assert_eq!(disks.iter().filter(|d| d["data_dir"] == true).count(), 1, "{r}");
    for d in disks {
        // df's Use%: blocks reserved for root are neither used nor room.
        let (used, avail) = (d["used_bytes"].as_f64().unwrap(), d["available_bytes"].as_f64().unwrap());
        assert!(used + avail <= d["total_bytes"].as_f64().unwrap(), "{d}");
        assert!((d["used_percent"].as_f64().unwrap() - 100.0 * used / (used + avail)).abs() < 1e-6, "{d}");
    }
    assert!(r["summary"]["perfd_memory_percent"]["samples"].as_u64().unwrap() >= 2, "{r}");
    let now = perfd::model::now_ms();
    // The summary is the raw points' (read from chunk headers where hours are whole).
    let raw = s.points(&format!("query=perfd_memory_percent&start={}&end={now}", now - 3_600_000)).await;
    let vals: Vec<f64> = raw[0].1.iter().map(|p| p.1).collect();
    let m = &r["summary"]["perfd_memory_percent"];
    assert_eq!(m["samples"].as_u64(), Some(vals.len() as u64), "{r}");
    assert_eq!(m["min"].as_f64(), vals.iter().copied().reduce(f64::min), "{r}");
    assert_eq!(m["max"].as_f64(), vals.iter().copied().reduce(f64::max), "{r}");
    let avg = vals.iter().sum::<f64>() / vals.len() as f64;
    assert!((m["avg"].as_f64().unwrap() - avg).abs() < 1e-9, "{r}");
    for series in ["perfd_disk_used_percent", "perfd_disk_available_bytes"] {
        let mounts =
            r["summary"].as_object().unwrap().keys().filter(|k| k.starts_with(&format!("{series}{{mount=")));
        assert!(mounts.count() >= 1, "{series}: {r}");
    }
    // The hit rate of each tick's own lookups, written only for ticks that had some: the one
    // miss, then nothing (it was 0 % since start, before and after, as if the cache failed).
    assert_eq!(values(&s, "perfd_cache_hit_rate_percent", now).await, vec![0.0]);
    s.client.put(s.url("/api/v1/cache/crew_config/k")).body("v").send().await.unwrap();
    for key in ["k", "k", "k", "missing"] {
        s.client.get(s.url(&format!("/api/v1/cache/crew_config/{key}"))).send().await.unwrap();
    }
    s.client.get(s.url("/api/v1/cache/llm_response/k")).send().await.unwrap();
    s.daemon().sampler.tick();
    s.flush();
    let now = perfd::model::now_ms();
    assert_eq!(values(&s, "perfd_cache_hit_rate_percent", now).await, vec![0.0, 60.0]);
    let crew = values(&s, "perfd_cache_strategy_hit_rate_percent{strategy=\"crew_config\"}", now).await;
    assert_eq!(crew, vec![0.0, 75.0]);
    // The lookup p99 likewise: one point for each of the two ticks that had lookups.
    assert_eq!(values(&s, "perfd_cache_latency_p99_ms", now).await.len(), 2);
    let healthz = s
        .points(&format!("query=perfd_http_requests{{route=\"/healthz\"}}&start={}&end={now}", now - 60_000))
        .await;
    assert_eq!(healthz[0].1.iter().map(|p| p.1).sum::<f64>(), 1.0);
    // The README's requests-a-minute query: each tick's own count, summed per bucket.
    let q = format!(
        "query=perfd_http_requests&start={}&end={now}&step=1m&agg=sum&group=sum&by=route",
        now - 60_000
    );
    let per_route = s.points(&q).await;
    let healthz = per_route.iter().find(|(labels, _)| labels["route"] == "/healthz");
    assert_eq!(healthz.map(|(_, p)| p.iter().map(|p| p.1).sum::<f64>()), Some(1.0), "{per_route:?}");
}

/// The values of the series `selector` selects over the minute before `now`.
async fn values(s: &TestServer, selector: &str, now: i64) -> Vec<f64> {
    let q = format!("query={selector}&start={}&end={now}", now - 60_000);
    s.points(&q).await.into_iter().flat_map(|(_, p)| p).map(|p| p.1).collect()
}

#[tokio::test]
async fn health_has_score_status_and_components() {
    let s = TestServer::start();
    s.daemon().sampler.tick();
    let r = s.client.get(s.url("/api/v1/metrics/health")).send().await.unwrap();
    let code = r.status().as_u16();
    let h: serde_json::Value = r.json().await.unwrap();
    let score = h["score"].as_u64().unwrap();
    assert!(score <= 100);
    let status = h["status"].as_str().unwrap();
    assert!(["healthy", "degraded", "unhealthy"].contains(&status));
    assert_eq!(code == 503, status == "unhealthy");
    let names: Vec<&str> =
        h["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for n in ["cpu", "memory", "writer_queue"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(h["recommendations"].is_array());
}

/// A series cap that is full shows in the health score with what to do about it, and deleting
/// series clears it.
#[tokio::test]
async fn a_full_series_cap_is_a_health_recommendation() {
    // Five series at most: the sampler's own are refused, so these five fill it.
    let s = TestServer::start_with(|c| c.storage.max_series = 5);
    let t = crate::helpers::base_ms();
    let lines: String = (0..5).map(|i| format!("capped,n={i} v=1 {t}\n")).collect();
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    s.daemon().sampler.tick();
    let (_, h) = s.get_json("/api/v1/metrics/health").await;
    let series = h["components"].as_array().unwrap().iter().find(|c| c["name"] == "series").cloned();
    assert_eq!(series.and_then(|c| c["value"].as_f64()), Some(100.0), "{h}");
    let advice = h["recommendations"].as_array().unwrap().iter().filter_map(|r| r.as_str());
    assert!(advice.clone().any(|r| r.contains("delete_series")), "{h}");
    let r = s.client.post(s.url("/api/v1/admin/tsdb/delete_series?match=capped_v")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.daemon().sampler.tick();
    let (_, h) = s.get_json("/api/v1/metrics/health").await;
    let advice: Vec<&str> =
        h["recommendations"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert!(!advice.iter().any(|r| r.contains("delete_series")), "{h}");
}

#[tokio::test]
async fn queries_are_grouped_by_fingerprint_including_perfds_own() {
    let s = TestServer::start();
    let reports = serde_json::json!([
        {"query": "SELECT * FROM crews WHERE id = 1", "duration_ms": 5.0, "rows": 1},
        {"query": "select *   from crews where id = 2", "duration_ms": 50.0, "rows": 1},
        {"query": "SELECT * FROM crews WHERE id = 3", "duration_ms": 7.0, "rows": 0, "ok": false},
    ]);
    let r = s.client.post(s.url("/api/v1/queries")).json(&reports).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["recorded"], 3);
    s.points("query=anything&start=0&end=1").await;
    let (_, db) = s.get_json("/api/v1/metrics/database").await;
    let slow = db["slowest_queries"].as_array().unwrap();
    let crews =
        slow.iter().find(|q| q["fingerprint"] == "select * from crews where id = ?").expect("grouped");
    assert_eq!((crews["count"].as_u64(), crews["errors"].as_u64()), (Some(3), Some(1)));
    assert!((crews["max_ms"].as_f64().unwrap() - 50.0).abs() < 1.0);
    assert!(
        slow.iter().any(|q| q["fingerprint"].as_str().unwrap().starts_with("perfd query_range")),
        "{slow:?}"
    );
    for bad in [
        serde_json::json!({"query": "", "duration_ms": 1}),
        serde_json::json!({"query": "x", "duration_ms": -1}),
        serde_json::json!({"q": "x"}),
    ] {
        let r = s.client.post(s.url("/api/v1/queries")).json(&bad).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
}
