//! Operations: the Prometheus scrape endpoint and the bearer token.

use crate::helpers::{TestServer, base_ms, expect_error};

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let s = TestServer::start();
    s.post("/write?precision=ms", format!("m v=1 {}", base_ms())).await;
    s.client.get(s.url("/api/v1/cache/crew_config/x")).send().await.unwrap();
    // Made-up methods are one label value, not one each (a client could make up any number).
    for m in ["FOO1", "FOO2"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        s.client.request(method, s.url("/api/v1/health")).send().await.unwrap();
    }
    s.daemon().sampler.tick();
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).expect(name);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("perfd_ingest_points_total") >= 1.0, "the point, plus the sampler's own");
    assert_eq!(value("perfd_cache_misses_total"), 1.0);
    for needle in [
        "perfd_http_requests_total{route=\"/write\",method=\"POST\",status=\"2xx\"} 1",
        "perfd_http_requests_total{route=\"unmatched\",method=\"OTHER\",status=\"4xx\"} 2",
        "# TYPE perfd_health_score gauge",
        "# TYPE perfd_host_disk_available_bytes gauge",
        "perfd_host_disk_available_bytes{mount=",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains("FOO1"), "{text}");
    // promtool (Debian package prometheus) must accept it. .ci/run installs it and sets
    // REQUIRE_PROMTOOL; elsewhere (`cargo test` on a fresh machine) a missing one is
    // reported and this check skipped.
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Err(e) if std::env::var_os("REQUIRE_PROMTOOL").is_none() => {
            eprintln!(
                "promtool not run ({e}): install Debian's prometheus package to check /metrics with it"
            );
            return;
        }
        spawned => spawned.expect("promtool is installed (.ci/run installs the prometheus package)"),
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_token_guards_mutating_endpoints() {
    let token = "0123456789abcdef-secret";
    let s = TestServer::start_with(|c| c.auth_token = Some(token.into()));
    let t = base_ms();
    let r = s.post("/write?precision=ms", format!("m v=1 {t}")).await;
    expect_error(r, 401, "unauthorized").await;
    let r = s
        .client
        .post(s.url("/write?precision=ms"))
        .bearer_auth("0123456789abcdef-secreT")
        .body(format!("m v=1 {t}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = s.client.put(s.url("/api/v1/cache/crew_config/k")).body("v").send().await.unwrap();
    expect_error(r, 401, "unauthorized").await;
    let r = s
        .client
        .post(s.url("/write?precision=ms"))
        .bearer_auth(token)
        .body(format!("m v=1 {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Reads stay open.
    let (status, body) = s.get_json("/api/v1/series?match=m_v").await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)));
}

#[tokio::test]
async fn wrong_methods_get_a_json_405_with_allow_and_get_routes_answer_head() {
    let s = TestServer::start();
    let cases = [
        ("PATCH", "/api/v1/alerts/thresholds/1", "GET, HEAD, PUT, DELETE"),
        ("DELETE", "/api/v1/metrics/cache", "GET, HEAD"),
        ("GET", "/api/v1/cache/mget", "POST"),
        ("GET", "/write", "POST"),
        ("PUT", "/api/v1/executions", "POST, GET, HEAD"),
        ("POST", "/api/v1/cache/llm_response/k", "GET, HEAD, PUT, DELETE"),
    ];
    for (method, path, allow) in cases {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = s.client.request(m, s.url(path)).body("{}").send().await.unwrap();
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let message = expect_error(r, 405, "method_not_allowed").await;
        assert!(message.contains(method) && message.contains(allow), "{message}");
    }
    let r = s.client.head(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "", "HEAD has no body");
    let r = s.client.head(s.url("/api/v1/metrics/cache")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An unknown path stays a 404, whatever the method.
    let r = s.client.patch(s.url("/api/v1/nothing")).send().await.unwrap();
    expect_error(r, 404, "not_found").await;
}

/// Shutdown does not wait for long polls: a cache waiter and an execution waiter get 503
/// `shutting_down` at once. Before, they held the graceful stop for its whole 10 s and then
/// lost their connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_long_polls_at_once() {
    let mut s = TestServer::start_with(|c| c.executions.max_concurrent = 1);
    let lease = s.client.get(s.url("/api/v1/cache/llm_response/x?wait=1s")).send().await.unwrap();
    assert_eq!(lease.headers()["x-cache-fill"], "lease");
    let r = s.client.post(s.url("/api/v1/executions")).json(&serde_json::json!({"crew_id": "a"}));
    assert_eq!(r.send().await.unwrap().status(), 201);
    let cache_waiter = s.client.get(s.url("/api/v1/cache/llm_response/x?wait=60s")).send();
    let slot_waiter =
        s.client.post(s.url("/api/v1/executions?wait=60s")).json(&serde_json::json!({"crew_id": "b"})).send();
    let waiters = tokio::spawn(async move { tokio::join!(cache_waiter, slot_waiter) });
    // Both wait: the second execution is queued, and the cache waiter has missed once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, q) = s.get_json("/api/v1/metrics/queue").await;
        let (_, c) = s.get_json("/api/v1/metrics/cache").await;
        if q["executions"]["waiting"] == 1 && c["cache_statistics"]["misses"].as_u64() >= Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not both waiting: {q} {c}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| s.stop());
    let (cache, slot) = waiters.await.unwrap();
    expect_error(cache.unwrap(), 503, "shutting_down").await;
    expect_error(slot.unwrap(), 503, "shutting_down").await;
}

/// Every duration setting at its maximum (10 years): the daemon starts, answers, runs its
/// sampler and stops. Far longer ones overflowed clock arithmetic: a panic at start (sampler),
/// or on every request (HTTP timeouts, a fill lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_durations_run() {
    let max = std::time::Duration::from_secs(10 * 365 * 86400);
    let s = TestServer::start_with(move |c| {
        c.sampler.interval = max;
        c.cache.lease_ttl = max;
        c.cache.sweep_interval = max;
        c.writer.maintenance_interval = max;
        c.writer.seal_delay = max;
        c.http.keep_alive = max;
        c.http.request_timeout = max;
        c.executions.lease = max;
        c.backup.interval = Some(max);
        c.storage.retention = max;
    });
    let url = s.url("/api/v1/cache/llm_response/x?wait=50ms");
    let first = s.client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["x-cache-fill"], "lease");
    let second = s.client.get(&url).send().await.unwrap();
    assert_eq!(second.headers()["x-cache-fill"], "timeout");
    let (status, _) = s.post_json("/api/v1/executions", &serde_json::json!({"crew_id": "c"})).await;
    assert_eq!(status, 201);
    let (status, _) = s
        .post_json(
            "/api/v1/ingest",
            &serde_json::json!([{"name": "m", "labels": {}, "timestamp": base_ms(), "value": 1.0}]),
        )
        .await;
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(s.client.get(s.url("/healthz")).send().await.unwrap().status(), 200);
}

/// A restart with requests in flight on several connections: each stop leaves the store to
/// the daemon alone (`stop()` asserts it), so the next start opens the database at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_requests_in_flight_reopens_the_store_at_once() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let mut s = TestServer::start();
    for round in 0..8 {
        let (stop, answered) =
            (std::sync::Arc::new(AtomicBool::new(false)), std::sync::Arc::new(AtomicUsize::new(0)));
        let mut load = Vec::new();
        for c in 0..6 {
            let (client, base) = (reqwest::Client::new(), s.base.clone());
            let (stop, answered) = (stop.clone(), answered.clone());
            load.push(tokio::spawn(async move {
                let url = format!("{base}/api/v1/cache/crew_config/k{c}");
                for _ in 0..10_000 {
                    if stop.load(Relaxed) {
                        break;
                    }
                    // Errors are expected once the server stops.
                    if client.put(&url).body("v").send().await.is_ok()
                        && client.get(&url).send().await.is_ok()
                    {
                        answered.fetch_add(1, Relaxed);
                    }
                }
            }));
        }
        // Bounded: every connection has been answered a few times.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while answered.load(Relaxed) < 30 {
            assert!(std::time::Instant::now() < deadline, "round {round}: the load never got going");
            tokio::task::yield_now().await;
        }
        tokio::task::block_in_place(|| s.restart());
        stop.store(true, Relaxed);
        for l in load {
            l.await.expect("load task");
        }
        let (status, _) = s.get_json("/api/v1/metrics/cache").await;
        assert_eq!(status, 200, "round {round}");
    }
}
