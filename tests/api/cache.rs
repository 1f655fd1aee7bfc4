//! The cache through the real server: data plane, mget, invalidation, warm, clear, statistics,
//! stampede control and warm restart.

use crate::helpers::{TestServer, expect_error};
use std::time::{Duration, Instant};

async fn put(s: &TestServer, path: &str, body: &str, content_type: &str) -> u16 {
    let r = s
        .client
        .put(s.url(path))
        .header("Content-Type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn put_get_delete_with_content_type_ttl_and_levels() {
    let s = TestServer::start();
    assert_eq!(
        put(&s, "/api/v1/cache/llm_response/prompt%2F42%20x", r#"{"text":"hi"}"#, "application/json").await,
        204
    );
    let r = s.client.get(s.url("/api/v1/cache/llm_response/prompt%2F42%20x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-cache"], "L1");
    let max_age: u64 =
        r.headers()["cache-control"].to_str().unwrap().trim_start_matches("max-age=").parse().unwrap();
    assert!((1790..=1800).contains(&max_age), "llm_response TTL is 30 min: {max_age}");
    assert_eq!(r.text().await.unwrap(), r#"{"text":"hi"}"#);
    // ?ttl overrides the strategy's TTL.
    assert_eq!(put(&s, "/api/v1/cache/crew_config/c1?ttl=5", "x", "text/plain").await, 204);
    let r = s.client.get(s.url("/api/v1/cache/crew_config/c1")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=5");
    // A bare number is seconds, a fraction too (max-age rounds up); so is a bare ?wait.
    assert_eq!(put(&s, "/api/v1/cache/crew_config/c1?ttl=1.5", "x", "text/plain").await, 204);
    let r = s.client.get(s.url("/api/v1/cache/crew_config/c1?wait=0.5")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=2");
    let r = s.client.delete(s.url("/api/v1/cache/crew_config/c1")).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["deleted"], true);
    let r = s.client.get(s.url("/api/v1/cache/crew_config/c1")).send().await.unwrap();
    expect_error(r, 404, "not_found").await;
}

/// Entry paths are parsed by hand (and hits answered by the fast path before the App): keys
/// with `/`, percent-encoding, wrong methods, and every lookup counted exactly once.
#[tokio::test]
async fn entry_paths_methods_and_counting() {
    let s = TestServer::start();
    assert_eq!(put(&s, "/api/v1/cache/crew_config/team/a", "ta", "text/plain").await, 204);
    for path in ["/api/v1/cache/crew_config/team/a", "/api/v1/cache/crew_config/team%2Fa"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-cache"], "L1");
        assert_eq!(r.text().await.unwrap(), "ta");
    }
    let r = s.client.head(s.url("/api/v1/cache/crew_config/team/a")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let r = s.client.get(s.url("/api/v1/cache/crew_config/absent")).send().await.unwrap();
        expect_error(r, 404, "not_found").await;
    }
    let r = s.client.post(s.url("/api/v1/cache/crew_config/team/a")).body("x").send().await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;
    let r = s.client.get(s.url("/api/v1/cache/crew_config")).send().await.unwrap();
    expect_error(r, 404, "not_found").await;
    let r = s.client.get(s.url("/api/v1/cache/crew_config/%FF")).send().await.unwrap();
    expect_error(r, 400, "invalid_input").await;
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let c = &m["cache_statistics"]["strategies"]["crew_config"];
    assert_eq!(
        (c["l1_hits"].as_u64(), c["misses"].as_u64(), c["sets"].as_u64()),
        (Some(3), Some(2), Some(1)),
        "{m}"
    );
    assert!(m["cache_statistics"]["latency_p99_ms"].as_f64().unwrap() > 0.0, "{m}");
    let gets = s.timed_requests("/api/v1/cache/{strategy}/{key}", "GET").await;
    assert_eq!(gets, 5, "2 hits, 2 misses and the bad key are timed under the entry route");
}

#[tokio::test]
async fn expired_entries_are_never_served() {
    let s = TestServer::start();
    assert_eq!(put(&s, "/api/v1/cache/performance/p?ttl=1", "v", "text/plain").await, 204);
    // Bounded polling: the entry must disappear within its TTL plus a margin.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.client.get(s.url("/api/v1/cache/performance/p")).send().await.unwrap();
        if r.status() == 404 {
            break;
        }
        let max_age = r.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(max_age == "max-age=1" || max_age == "max-age=0", "{max_age}");
        assert!(Instant::now() < deadline, "entry still served after its TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    assert!(m["cache_statistics"]["strategies"]["performance"]["expirations"].as_u64().unwrap() >= 1, "{m}");
}

#[tokio::test]
async fn bad_cache_input_is_a_json_error() {
    let s = TestServer::start_with(|c| c.cache.max_entry_bytes = 1024);
    let r = s.client.get(s.url("/api/v1/cache/nope/k")).send().await.unwrap();
    let msg = expect_error(r, 404, "unknown_strategy").await;
    assert!(msg.contains("crew_config") && msg.contains("llm_response"), "{msg}");
    let r = s.client.put(s.url("/api/v1/cache/nope/k")).body("x").send().await.unwrap();
    expect_error(r, 404, "unknown_strategy").await;
    let r = s.client.put(s.url("/api/v1/cache/crew_config/k")).body("x".repeat(1025)).send().await.unwrap();
    expect_error(r, 413, "payload_too_large").await;
    let long = "k".repeat(513);
    let r = s.client.put(s.url(&format!("/api/v1/cache/crew_config/{long}"))).body("x").send().await.unwrap();
    expect_error(r, 400, "invalid_input").await;
    let r = s.client.put(s.url("/api/v1/cache/crew_config/a%01b")).body("x").send().await.unwrap();
    expect_error(r, 400, "invalid_input").await;
    // A content type is printable ASCII up to 255 bytes (Redis kept only 255 of a longer one;
    // one with other bytes was dropped by PUT and answered differently by the hit path).
    let long_type = format!("text/{}", "x".repeat(251));
    let bad_types = [
        reqwest::header::HeaderValue::from_str(&long_type).unwrap(),
        reqwest::header::HeaderValue::from_bytes(b"text/caf\xc3\xa9").unwrap(),
    ];
    for ct in bad_types {
        let r = s
            .client
            .put(s.url("/api/v1/cache/crew_config/ct"))
            .header("Content-Type", ct)
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
    for ct in [long_type.as_str(), "text/caf\u{e9}"] {
        let warm = serde_json::json!({"entries": [{"strategy": "crew_config", "key": "ct", "value": "x", "content_type": ct}]});
        let r = s.client.post(s.url("/api/v1/cache/warm")).json(&warm).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
    let r = s.client.get(s.url("/api/v1/cache/crew_config/ct")).send().await.unwrap();
    assert_eq!(r.status(), 404, "nothing stored");
    let ok_type = format!("text/{}", "x".repeat(250));
    let r = s
        .client
        .put(s.url("/api/v1/cache/crew_config/ct"))
        .header("Content-Type", &ok_type)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s.client.get(s.url("/api/v1/cache/crew_config/ct")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], ok_type.as_str());
    // A TTL is 1 ms to 365 days: shorter would expire before it is stored (and left an older
    // value in Redis alive), longer overflowed the expiry.
    for ttl in ["0", "1ns", "999us", "366d", "99999999999999"] {
        let r = s
            .client
            .put(s.url(&format!("/api/v1/cache/crew_config/k?ttl={ttl}")))
            .body("x")
            .send()
            .await
            .unwrap();
        let e = expect_error(r, 400, "invalid_input").await;
        assert!(
            e.contains("out of range: give 1 ms to 365 days") || e.contains("a bare number is seconds"),
            "{e}"
        );
    }
    for (path, body) in [
        ("/api/v1/cache/invalidate", r#"{"pattern":"crew_config:[a"}"#),
        ("/api/v1/cache/invalidate", r#"{"glob":"x"}"#),
        ("/api/v1/cache/mget", "{not json"),
        (
            "/api/v1/cache/warm",
            r#"{"entries":[{"strategy":"crew_config","key":"a","value":"x","value_b64":"eA=="}]}"#,
        ),
        // A content type that cannot be sent back as a header (it made every GET a 500).
        (
            "/api/v1/cache/warm",
            r#"{"entries":[{"strategy":"crew_config","key":"a","value":"x","content_type":"a\nb"}]}"#,
        ),
        ("/api/v1/metrics/cache/clear", r#"{"level":"l3"}"#),
        // A TTL out of range in the second entry: the first is not loaded either.
        (
            "/api/v1/cache/warm",
            r#"{"entries":[{"strategy":"crew_config","key":"w1","value":"x"},{"strategy":"crew_config","key":"w2","value":"x","ttl":99999999999}]}"#,
        ),
    ] {
        let r = s
            .client
            .post(s.url(path))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
    // A value over the entry limit in the second entry: a 413 naming it, and the first entry is
    // not loaded either (it was, before sizes were checked with the rest).
    let big = serde_json::json!({"entries": [
        {"strategy": "crew_config", "key": "w1", "value": "x"},
        {"strategy": "crew_config", "key": "w3", "value": "x".repeat(1025)},
    ]});
    let r = s.client.post(s.url("/api/v1/cache/warm")).json(&big).send().await.unwrap();
    let msg = expect_error(r, 413, "payload_too_large").await;
    assert!(msg.contains("entries[1]"), "{msg}");
    let r = s.client.get(s.url("/api/v1/cache/crew_config/w1")).send().await.unwrap();
    assert_eq!(r.status(), 404, "a warm call with a bad entry loads nothing");
    let keys: Vec<_> =
        (0..1001).map(|i| serde_json::json!({"strategy": "crew_config", "key": format!("k{i}")})).collect();
    let r = s
        .client
        .post(s.url("/api/v1/cache/mget"))
        .json(&serde_json::json!({"keys": keys}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_input").await;
}

#[tokio::test]
async fn mget_json_and_binary() {
    let s = TestServer::start();
    put(&s, "/api/v1/cache/memory_query/a", "alpha", "text/plain").await;
    let warm =
        serde_json::json!({"entries": [{"strategy": "memory_query", "key": "bin", "value_b64": "AP8="}]});
    s.client.post(s.url("/api/v1/cache/warm")).json(&warm).send().await.unwrap();
    let keys = serde_json::json!({"keys": [
        {"strategy": "memory_query", "key": "a"},
        {"strategy": "memory_query", "key": "missing"},
        {"strategy": "memory_query", "key": "bin"},
    ]});
    let r = s.client.post(s.url("/api/v1/cache/mget")).json(&keys).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["values"][0]["value"], "alpha");
    assert_eq!(v["values"][1]["hit"], false);
    assert_eq!(v["values"][2]["value_b64"], "AP8=");
    // The shape: a miss carries strategy, key and hit only; a hit adds ttl_ms and content_type.
    assert_eq!(v["values"][1].as_object().unwrap().len(), 3, "{v}");
    assert_eq!(v["values"][1]["key"], "missing");
    assert_eq!(v["values"][0]["content_type"], "text/plain");
    assert!(v["values"][0]["ttl_ms"].as_i64().unwrap() > 0, "{v}");
    assert!(v["values"][2]["content_type"].is_null() && v["values"][2].get("content_type").is_some(), "{v}");
    let r = s
        .client
        .post(s.url("/api/v1/cache/mget"))
        .header("Accept", "application/x-perfd-mget")
        .json(&keys)
        .send()
        .await
        .unwrap();
    let b = r.bytes().await.unwrap();
    assert_eq!(&b[..], &[1, 0, 0, 0, 5, b'a', b'l', b'p', b'h', b'a', 0, 1, 0, 0, 0, 2, 0, 255]);

    // Keys as "strategy:key" strings (as in the key lines), mixed with objects; escapes too.
    let keys = r#"{"keys": ["memory_query:a", {"strategy": "memory_query", "key": "missing"}, "memory_query:\u0062in"]}"#;
    let r = s.client.post(s.url("/api/v1/cache/mget")).body(keys).send().await.unwrap();
    let mut w: serde_json::Value = r.json().await.unwrap();
    let mut v = v;
    for x in w["values"].as_array_mut().unwrap().iter_mut().chain(v["values"].as_array_mut().unwrap()) {
        x.as_object_mut().unwrap().remove("ttl_ms"); // a millisecond may pass
    }
    assert_eq!(w, v, "the same answer");
    let r = s
        .client
        .post(s.url("/api/v1/cache/mget"))
        .json(&serde_json::json!({"keys": ["memory_query:a", "no-colon"]}))
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 400, "invalid_input").await;
    assert!(e.contains(r#"key "no-colon" is not "strategy:key""#), "{e}");
    let r = s
        .client
        .post(s.url("/api/v1/cache/mget"))
        .json(&serde_json::json!({"keys": [7]}))
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 400, "invalid_input").await;
    assert!(e.contains(r#"expected a key: {"strategy": "...", "key": "..."} or "strategy:key""#), "{e}");
}

/// The compact mget request (`{strategy}:{key}` lines), and the fast path's mget: same answers
/// and errors as the App's, auth enforced, gzip bodies still accepted (through the App).
#[tokio::test]
async fn mget_key_lines_limits_auth_and_gzip() {
    let token = "0123456789abcdef-secret";
    let s = TestServer::start_with(|c| {
        c.auth_token = Some(token.into());
        c.http.max_body_bytes = 4096;
    });
    let r = s
        .client
        .put(s.url("/api/v1/cache/memory_query/a:1"))
        .bearer_auth(token)
        .body("alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mget = |body: Vec<u8>, content_type: &'static str| {
        s.client
            .post(s.url("/api/v1/cache/mget"))
            .bearer_auth(token)
            .header("Content-Type", content_type)
            .header("Accept", "application/x-perfd-mget")
            .body(body)
    };
    let lines = b"memory_query:a:1\r\nmemory_query:missing\n\n".to_vec();
    let r = mget(lines.clone(), "application/x-perfd-mget").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], &[1, 0, 0, 0, 5, b'a', b'l', b'p', b'h', b'a', 0]);
    // The same keys as JSON, answered as JSON.
    let json = br#"{"keys":[{"strategy":"memory_query","key":"a:1"}]}"#.to_vec();
    let r = s
        .client
        .post(s.url("/api/v1/cache/mget"))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["values"][0]["key"].as_str(), v["values"][0]["value"].as_str()),
        (Some("a:1"), Some("alpha"))
    );
    for (body, status, code) in [
        (b"memory_query-no-colon\n".to_vec(), 400, "invalid_input"),
        (b"nope:k\n".to_vec(), 404, "unknown_strategy"),
        (b"memory_query:\xff\n".to_vec(), 400, "invalid_input"),
        (b"memory_query:k\n".repeat(400), 413, "payload_too_large"),
        (b"memory_query:k\n".repeat(266), 200, ""),
    ] {
        let r = mget(body, "application/x-perfd-mget").send().await.unwrap();
        if status == 200 {
            assert_eq!(r.status(), 200);
        } else {
            expect_error(r, status, code).await;
        }
    }
    let r = s
        .client
        .post(s.url("/api/v1/cache/mget"))
        .header("Content-Type", "application/x-perfd-mget")
        .body(lines.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &lines).unwrap();
    let r = mget(gz.finish().unwrap(), "application/x-perfd-mget")
        .header("Content-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap()[0], 1);
    let (_, p) = s.get_json("/api/v1/metrics/performance?window=10m").await;
    let mgets =
        p["endpoints"].as_array().unwrap().iter().find(|e| e["route"] == "/api/v1/cache/mget").cloned();
    assert_eq!(mgets.as_ref().and_then(|e| e["requests"].as_u64()), Some(9), "{p}");
}

#[tokio::test]
async fn invalidate_warm_clear_and_statistics() {
    let s = TestServer::start_with(|c| {
        c.cache.strategies.insert("embeddings".into(), Duration::from_secs(7200));
    });
    let entries: Vec<_> = ["team-a", "team-b", "solo"]
        .iter()
        .map(|k| serde_json::json!({"strategy": "crew_config", "key": k, "value": k, "ttl": 600}))
        .chain([serde_json::json!({"strategy": "embeddings", "key": "e1", "value": "vec"})])
        .collect();
    let (_, v) = s.post_json("/api/v1/cache/warm", &serde_json::json!({"entries": entries})).await;
    assert_eq!(v["loaded"], 4);
    let (_, v) =
        s.post_json("/api/v1/cache/invalidate", &serde_json::json!({"pattern": "crew_config:team-*"})).await;
    assert_eq!(v["removed"], 2);
    assert_eq!(s.client.get(s.url("/api/v1/cache/crew_config/team-a")).send().await.unwrap().status(), 404);
    assert_eq!(s.client.get(s.url("/api/v1/cache/crew_config/solo")).send().await.unwrap().status(), 200);
    let r = s.client.get(s.url("/api/v1/cache/embeddings/e1")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "max-age=7200");
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let st = &m["cache_statistics"];
    assert_eq!(st["hits"], 2);
    assert_eq!(st["misses"], 1);
    assert_eq!(st["l1_size"], 2);
    assert!((st["hit_rate_percent"].as_f64().unwrap() - 66.666).abs() < 0.1, "{st}");
    assert!(m["recommendations"].is_array());
    let (_, v) = s.post_json("/api/v1/metrics/cache/clear", &serde_json::json!({"level": "all"})).await;
    assert_eq!(v["cleared"]["l1"], 2);
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    assert_eq!(m["cache_statistics"]["l1_size"], 0);
}

/// The issue's statistics, per level and per strategy: hits, misses, sets, evictions,
/// expirations, errors, hit rate, L1 entries and bytes, latency p50/p99.
/// `GET /api/v1/cache/keys`: live L1 keys in key order, by glob, with TTL, size and type.
#[tokio::test]
async fn keys_are_listed_by_glob_in_order() {
    let s = TestServer::start();
    for (path, body) in [
        ("/api/v1/cache/crew_config/team-b", "bb"),
        ("/api/v1/cache/crew_config/team-a", "a"),
        ("/api/v1/cache/crew_config/solo", "s"),
        ("/api/v1/cache/llm_response/p%2F1?ttl=90s", "answer"),
    ] {
        assert_eq!(put(&s, path, body, "text/plain").await, 204);
    }
    assert_eq!(put(&s, "/api/v1/cache/memory_query/gone?ttl=1ms", "x", "text/plain").await, 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.client.get(s.url("/api/v1/cache/memory_query/gone")).send().await.unwrap().status() != 404 {
        assert!(Instant::now() < deadline, "a 1 ms entry never expired");
    }
    let (status, body) = s.get_json("/api/v1/cache/keys").await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<String> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("{}:{}", k["strategy"].as_str().unwrap(), k["key"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, ["crew_config:solo", "crew_config:team-a", "crew_config:team-b", "llm_response:p/1"]);
    assert_eq!((body["count"].as_u64(), body["truncated"].as_bool()), (Some(4), Some(false)));
    let llm = &body["keys"][3];
    assert_eq!((llm["bytes"].as_u64(), llm["content_type"].as_str()), (Some(6), Some("text/plain")));
    assert!((80_000..=90_000).contains(&llm["ttl_ms"].as_i64().unwrap()), "{llm}");
    let (_, body) = s.get_json("/api/v1/cache/keys?pattern=crew_config:team-*&limit=1").await;
    assert_eq!(body["keys"].as_array().unwrap().len(), 1);
    assert_eq!((&body["keys"][0]["key"], body["count"].as_u64()), (&serde_json::json!("team-a"), Some(2)));
    assert_eq!(body["truncated"], true);
    for bad in ["pattern=crew_config:[a", "limit=0", "limit=10001", "limit=x"] {
        let r = s.client.get(s.url(&format!("/api/v1/cache/keys?{bad}"))).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
}

#[tokio::test]
async fn statistics_per_level_and_per_strategy() {
    let s = TestServer::start_with(|c| c.cache.max_entries = 50);
    for i in 0..3 {
        put(&s, &format!("/api/v1/cache/crew_config/c{i}"), "12345", "text/plain").await;
    }
    put(&s, "/api/v1/cache/llm_response/answer", "abc", "text/plain").await;
    put(&s, "/api/v1/cache/performance/gone?ttl=1ms", "x", "text/plain").await;
    for path in ["crew_config/c0", "crew_config/c1", "crew_config/nope", "llm_response/answer"] {
        s.client.get(s.url(&format!("/api/v1/cache/{path}"))).send().await.unwrap();
    }
    // Bounded polling: the 1 ms entry is read until it is found expired (or it was evicted).
    for _ in 0..1000 {
        let r = s.client.get(s.url("/api/v1/cache/performance/gone")).send().await.unwrap();
        if r.status() == 404 {
            break;
        }
    }
    // Then more memory queries than L1 holds: evictions.
    let warm: Vec<_> = (0..100)
        .map(|i| serde_json::json!({"strategy": "memory_query", "key": format!("m{i}"), "value": "q"}))
        .collect();
    s.post_json("/api/v1/cache/warm", &serde_json::json!({"entries": warm})).await;
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let st = &m["cache_statistics"];
    let crew = &st["strategies"]["crew_config"];
    assert_eq!(
        (crew["hits"].as_u64(), crew["misses"].as_u64(), crew["sets"].as_u64()),
        (Some(2), Some(1), Some(3))
    );
    assert!((crew["hit_rate_percent"].as_f64().unwrap() - 66.666).abs() < 0.1, "{crew}");
    let llm = &st["strategies"]["llm_response"];
    assert_eq!(llm["hits"], 1);
    assert_eq!(crew["l2_errors"], 0);
    for c in [crew, llm] {
        assert!(c["latency_p50_ms"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["latency_p99_ms"].as_f64().unwrap() >= c["latency_p50_ms"].as_f64().unwrap(), "{c}");
    }
    // What each strategy holds and lost adds up to the level's figures.
    let strategies = st["strategies"].as_object().unwrap();
    let sum = |f: &str| strategies.values().map(|c| c[f].as_u64().unwrap()).sum::<u64>();
    let l1 = &st["l1"];
    assert_eq!(sum("l1_entries"), l1["entries"].as_u64().unwrap(), "{st}");
    assert_eq!(sum("l1_bytes"), l1["bytes"].as_u64().unwrap(), "{st}");
    assert_eq!(sum("evictions"), l1["evictions"].as_u64().unwrap(), "{st}");
    assert_eq!(l1["entries"], st["l1_size"]);
    assert!(l1["entries"].as_u64().unwrap() <= 50, "{st}");
    assert!(st["strategies"]["memory_query"]["evictions"].as_u64().unwrap() >= 50, "{st}");
    if llm["l1_entries"] == 1 {
        assert_eq!(llm["l1_bytes"], "llm_response:answer".len() + 3);
    }
    assert_eq!(sum("expirations"), l1["expirations"].as_u64().unwrap());
    assert_eq!(l1["sets"], 105);
    // L1's misses are the lookups it could not answer; without L2 they are the misses.
    assert_eq!(l1["hits"].as_u64().unwrap() + l1["misses"].as_u64().unwrap(), sum("hits") + sum("misses"));
    assert!(l1["latency_p99_ms"].as_f64().unwrap() > 0.0, "{l1}");
    assert_eq!(st["l2"]["enabled"], false);
    // The same figures per strategy in the scrape.
    let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("perfd_cache_strategy_hits_total{strategy=\"crew_config\"} 2"), "{text}");
    assert!(text.contains("perfd_cache_strategy_misses_total{strategy=\"crew_config\"} 1"), "{text}");
}

#[tokio::test]
async fn low_hit_rate_yields_a_recommendation() {
    let s = TestServer::start();
    for i in 0..120 {
        s.client.get(s.url(&format!("/api/v1/cache/memory_query/miss{i}"))).send().await.unwrap();
    }
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let recs = m["recommendations"].as_array().unwrap();
    assert!(recs.iter().any(|r| r.as_str().unwrap().contains("Low hit rate")), "{recs:?}");
}

/// 50 agents ask for the same missing LLM answer: exactly one gets the lease, computes and PUTs;
/// the 49 others wait and receive the value.
#[tokio::test]
async fn stampede_gives_one_lease_and_49_values() {
    let s = TestServer::start();
    let url = s.url("/api/v1/cache/llm_response/same-prompt?wait=5s");
    let (lease_tx, mut lease_rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, lease_tx) = (s.client.clone(), url.clone(), lease_tx.clone());
            tokio::spawn(async move {
                let r = client.get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let fill = r.headers().get("x-cache-fill").map(|v| v.to_str().unwrap().to_owned());
                if fill.as_deref() == Some("lease") {
                    let _ = lease_tx.send(());
                }
                (status, fill, r.text().await.unwrap())
            })
        })
        .collect();
    // The lease holder answers at once; then "compute" and PUT.
    tokio::time::timeout(Duration::from_secs(5), lease_rx.recv()).await.expect("a lease is granted");
    assert_eq!(put(&s, "/api/v1/cache/llm_response/same-prompt", "the answer", "text/plain").await, 204);
    let mut leases = 0;
    let mut values = 0;
    for t in tasks {
        match t.await.unwrap() {
            (404, Some(fill), _) if fill == "lease" => leases += 1,
            (200, None, body) if body == "the answer" => values += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((leases, values), (1, 49));
}

#[tokio::test]
async fn an_expired_lease_passes_to_a_waiter() {
    let s = TestServer::start_with(|c| c.cache.lease_ttl = Duration::from_millis(200));
    let url = s.url("/api/v1/cache/llm_response/abandoned?wait=5s");
    let first = s.client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["x-cache-fill"], "lease");
    // The holder never PUTs: the next caller gets the lease once it runs out.
    let second = s.client.get(&url).send().await.unwrap();
    assert_eq!(second.headers()["x-cache-fill"], "lease");
    let third = s.client.get(s.url("/api/v1/cache/llm_response/abandoned?wait=50ms")).send().await.unwrap();
    assert_eq!(third.headers()["x-cache-fill"], "timeout");
}

/// A lease holder that cannot compute the value DELETEs the key: a waiter gets the next lease at
/// once, not when the lease (here a minute) runs out. Before, the waiter's 10 s ran out first.
#[tokio::test]
async fn a_delete_gives_the_lease_up() {
    let s = TestServer::start_with(|c| c.cache.lease_ttl = Duration::from_secs(60));
    let url = s.url("/api/v1/cache/llm_response/failed?wait=10s");
    let first = s.client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["x-cache-fill"], "lease");
    let waiter = tokio::spawn(s.client.get(&url).send());
    let r = s.client.delete(s.url("/api/v1/cache/llm_response/failed")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let started = std::time::Instant::now();
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(second.status(), 404);
    assert_eq!(second.headers()["x-cache-fill"], "lease", "waited {:?}", started.elapsed());
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    assert_eq!(m["cache_statistics"]["strategies"]["llm_response"]["leases"], 2, "{m}");
}

#[tokio::test]
async fn warm_restart_keeps_entries_and_their_ttl() {
    let mut s = TestServer::start();
    put(&s, "/api/v1/cache/crew_config/kept?ttl=600", "cfg", "application/yaml").await;
    s.restart();
    let r = s.client.get(s.url("/api/v1/cache/crew_config/kept")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/yaml");
    let max_age: u64 =
        r.headers()["cache-control"].to_str().unwrap().trim_start_matches("max-age=").parse().unwrap();
    assert!((590..=600).contains(&max_age), "{max_age}");
    // The snapshot is consumed on start: a crash after this must not bring back stale entries.
    assert!(s.daemon().store.cache_snapshot().unwrap().is_empty());
}

/// A waiter whose client went away never takes the fill lease: actix keeps its handler running,
/// and before, it could take the next lease for nobody, so live callers waited a whole lease
/// TTL more. Here the gone waiter is alone when the first lease lapses; a live caller that
/// comes after must get the lease at once, and only two leases are ever granted.
#[tokio::test]
async fn a_waiter_that_left_never_takes_the_lease() {
    let s = TestServer::start_with(|c| c.cache.lease_ttl = Duration::from_millis(300));
    let url = s.url("/api/v1/cache/llm_response/slow-answer?wait=10s");
    let first = s.client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["x-cache-fill"], "lease");
    let granted = Instant::now();
    let gone = s.client.get(&url).timeout(Duration::from_millis(100)).send().await;
    assert!(gone.unwrap_err().is_timeout());
    // Past the first lease and past the gone waiter's next look at the lease.
    while granted.elapsed() < Duration::from_millis(300 + 500) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = s.client.get(&url).send().await.unwrap();
    assert_eq!(live.headers()["x-cache-fill"], "lease");
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    assert_eq!(m["cache_statistics"]["strategies"]["llm_response"]["leases"], 2, "{m}");
}

/// Every way to reach an entry agrees on its key: the HTTP fast path (GET hit), the App
/// (`?wait=`), JSON mget and key-line mget, for keys drawn (fixed seed) from reserved, quoting,
/// non-ASCII and invisible characters, percent-encoded or with `/` left raw.
#[tokio::test]
async fn every_path_to_an_entry_agrees_on_its_key() {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let s = TestServer::start();
    let alphabet: Vec<char> = "aZ09 -_.~!$&'()*+,;=:@/?#[]%\"<>\\^`{|}é中😀\u{a0}\u{200b}".chars().collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for i in 0..150 {
        let len = 1 + next(12);
        let key: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
        let encoded = utf8_percent_encode(&key, NON_ALPHANUMERIC).to_string();
        let path = format!("/api/v1/cache/crew_config/{encoded}");
        let value = format!("v{i}");
        assert_eq!(put(&s, &path, &value, "text/plain").await, 204, "{key:?}");
        let mut urls = vec![path.clone(), format!("{path}?wait=1s")];
        // A raw `/` works too, except around `.`, `..` or empty segments, which URL clients
        // (reqwest included) normalize away before sending: such keys need `%2F`.
        if !key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
            urls.push(format!("/api/v1/cache/crew_config/{}", encoded.replace("%2F", "/")));
        }
        for url in urls {
            let r = s.client.get(s.url(&url)).send().await.unwrap();
            assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, value.clone()), "{key:?} {url}");
        }
        let body = serde_json::json!({"keys": [{"strategy": "crew_config", "key": key}]});
        let (_, m) = s.post_json("/api/v1/cache/mget", &body).await;
        assert_eq!(m["values"][0]["value"], value, "{key:?}");
        let r = s
            .client
            .post(s.url("/api/v1/cache/mget"))
            .header("Content-Type", "application/x-perfd-mget")
            .body(format!("crew_config:{key}\n"))
            .send()
            .await
            .unwrap();
        let m: serde_json::Value = r.json().await.unwrap();
        assert_eq!(m["values"][0]["value"], value, "{key:?} as a key line");
    }
}

/// Regression: with a small `cache.max_bytes`, a value heavier than one L1 shard's share of it
/// (on 2 cores, 1 MiB over 8 shards) was taken with a 204 and never stored. Now every value
/// taken is kept, and one L1 cannot keep is a 413 naming the budget.
#[tokio::test]
async fn a_value_l1_cannot_keep_is_refused_not_dropped() {
    let s = TestServer::start_with(|c| c.cache.max_bytes = 1 << 20);
    let mut refused = 0;
    for len in [50_000, 100_000, 200_000, 500_000, (1 << 20) - 1] {
        let path = format!("/api/v1/cache/llm_response/v{len}");
        let r = s.client.put(s.url(&path)).body(vec![b'x'; len]).send().await.unwrap();
        if r.status() == 413 {
            let body = r.text().await.unwrap();
            assert!(body.contains("cache.max_bytes"), "{body}");
            refused += 1;
            continue;
        }
        assert_eq!(r.status(), 204, "{len}");
        let got = s.client.get(s.url(&path)).send().await.unwrap();
        assert_eq!(
            (got.status().as_u16(), got.bytes().await.unwrap().len()),
            (200, len),
            "{len} taken, kept"
        );
    }
    assert!(refused > 0, "a 1 MiB budget cannot keep a 1 MiB value");
    let max = s.daemon().cache.max_value();
    let r = s.client.put(s.url("/api/v1/cache/llm_response/max")).body(vec![b'x'; max]).send().await.unwrap();
    assert_eq!(r.status(), 204, "the largest value taken: {max}");
}
