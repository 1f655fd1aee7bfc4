//! With `--features redis`: a real `redis-server` started by the test on a free loopback port.

use crate::helpers::{TestServer, property};
use crate::ingest::urlencode;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child on 127.0.0.1; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.conn().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let c = redis::Client::open(self.url())?.get_connection()?;
        Ok(c)
    }

    /// Sends a signal to the server: `-STOP` stalls it (connections stay open, nothing is
    /// answered), `-CONT` resumes it.
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.conn().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_with(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::start_with(move |c| {
        c.cache.redis.url = Some(url);
        c.cache.redis.pool_size = 2;
        c.cache.redis.timeout = Duration::from_millis(200);
    })
}

/// Bounded polling on the cache statistics until `pred` holds.
async fn wait_for_l2(s: &TestServer, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, m) = s.get_json("/api/v1/metrics/cache").await;
        let l2 = m["cache_statistics"]["l2"].clone();
        if pred(&l2) {
            return l2;
        }
        assert!(Instant::now() < deadline, "L2 never reached the expected state: {l2}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bounded polling: writes `crew_config:{key}`, drops L1, and reads until the value comes from L2.
async fn expect_l2_used_again(s: &TestServer, key: &str, value: &'static str) {
    let path = format!("/api/v1/cache/crew_config/{key}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        s.client.put(s.url(&path)).body(value).send().await.unwrap();
        clear_l1(s).await;
        let r = s.client.get(s.url(&path)).send().await.unwrap();
        if r.status() == 200 && r.headers().get("x-cache").is_some_and(|v| v == "L2") {
            assert_eq!(r.text().await.unwrap(), value);
            return;
        }
        assert!(Instant::now() < deadline, "L2 not used again: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn clear_l1(s: &TestServer) {
    let (status, _) = s.post_json("/api/v1/metrics/cache/clear", &serde_json::json!({"level": "l1"})).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_miss_promotes_from_l2_with_remaining_ttl() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    let r = s
        .client
        .put(s.url("/api/v1/cache/llm_response/p1?ttl=100"))
        .header("Content-Type", "text/plain")
        .body("answer")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let pttl: i64 = redis.cmd(&["PTTL", "perfd:llm_response:p1"]);
    assert!(pttl > 90_000 && pttl <= 100_000, "{pttl}");
    clear_l1(&s).await;
    let r = s.client.get(s.url("/api/v1/cache/llm_response/p1")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "L2");
    assert_eq!(r.headers()["content-type"], "text/plain");
    let max_age: u64 =
        r.headers()["cache-control"].to_str().unwrap().trim_start_matches("max-age=").parse().unwrap();
    assert!((90..=100).contains(&max_age), "{max_age}");
    assert_eq!(r.text().await.unwrap(), "answer");
    let r = s.client.get(s.url("/api/v1/cache/llm_response/p1")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "L1", "promoted");
}

/// mget answers L1 misses from L2 in one pipelined round trip and promotes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_reads_l1_misses_from_l2_and_promotes_them() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    for k in ["a", "b"] {
        let r = s.client.put(s.url(&format!("/api/v1/cache/memory_query/{k}"))).body(k).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    clear_l1(&s).await;
    // "c" is only in L1, "a" and "b" only in L2, "z" nowhere.
    let r = s.client.put(s.url("/api/v1/cache/memory_query/c")).body("c").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let _: i64 = redis.cmd(&["DEL", "perfd:memory_query:c"]);
    let keys: Vec<_> = ["a", "z", "b", "c"]
        .iter()
        .map(|k| serde_json::json!({"strategy": "memory_query", "key": k}))
        .collect();
    let keys = serde_json::json!({ "keys": keys });
    let (status, v) = s.post_json("/api/v1/cache/mget", &keys).await;
    assert_eq!(status, 200, "{v}");
    let got: Vec<_> = v["values"].as_array().unwrap().iter().map(|e| e["value"].as_str()).collect();
    assert_eq!(got, [Some("a"), None, Some("b"), Some("c")], "{v}");
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let c = &m["cache_statistics"]["strategies"]["memory_query"];
    assert_eq!(
        (c["l1_hits"].as_u64(), c["l2_hits"].as_u64(), c["misses"].as_u64()),
        (Some(1), Some(2), Some(1)),
        "{m}"
    );
    // The L2 level: two of the three keys asked for were there; answered calls are timed.
    let l2 = &m["cache_statistics"]["l2"];
    assert_eq!((l2["hits"].as_u64(), l2["misses"].as_u64()), (Some(2), Some(1)), "{l2}");
    assert!((l2["hit_rate_percent"].as_f64().unwrap() - 66.666).abs() < 0.1, "{l2}");
    assert!(l2["latency_p50_ms"].as_f64().unwrap() > 0.0, "{l2}");
    assert_eq!(c["l2_errors"], 0, "{c}");
    let l1 = &m["cache_statistics"]["l1"];
    assert_eq!((l1["hits"].as_u64(), l1["misses"].as_u64()), (Some(1), Some(3)), "{l1}");
    let r = s.client.get(s.url("/api/v1/cache/memory_query/b")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "L1", "promoted by mget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_and_clear_touch_only_perfd_keys() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    let _: () = redis.cmd(&["SET", "foreign:key", "keep"]);
    for k in ["team-a", "team-b", "solo"] {
        s.client.put(s.url(&format!("/api/v1/cache/crew_config/{k}"))).body(k).send().await.unwrap();
    }
    let r = s
        .client
        .post(s.url("/api/v1/cache/invalidate"))
        .json(&serde_json::json!({"pattern": "crew_config:team-*"}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!((v["removed_l1"].as_u64(), v["removed_l2"].as_u64()), (Some(2), Some(2)), "{v}");
    let left: i64 = redis.cmd(&["EXISTS", "perfd:crew_config:team-a", "perfd:crew_config:solo"]);
    assert_eq!(left, 1);
    let (_, v) = s.post_json("/api/v1/metrics/cache/clear", &serde_json::json!({"level": "l2"})).await;
    assert_eq!(v["cleared"]["l2"], 1);
    let foreign: String = redis.cmd(&["GET", "foreign:key"]);
    assert_eq!(foreign, "keep");
    let keys: Vec<String> = redis.cmd(&["KEYS", "perfd:*"]);
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_l1_serves_errors_counted_and_recovers() {
    let redis = RedisServer::start();
    let port = redis.port;
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    s.client.put(s.url("/api/v1/cache/crew_config/c")).body("v1").send().await.unwrap();
    drop(redis);
    // L1 keeps serving, and writes still succeed.
    let r = s.client.get(s.url("/api/v1/cache/crew_config/c")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-cache"].to_str().unwrap()), (200, "L1"));
    assert_eq!(
        s.client.put(s.url("/api/v1/cache/crew_config/d")).body("v2").send().await.unwrap().status(),
        204
    );
    let missing = s.client.get(s.url("/api/v1/cache/crew_config/none")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let l2 = wait_for_l2(&s, |l2| l2["reachable"] == false).await;
    assert!(l2["errors"].as_u64().unwrap() + l2["timeouts"].as_u64().unwrap() > 0, "{l2}");
    assert_eq!(l2["outages"], 1, "one outage, however many calls failed: {l2}");
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    // Per strategy: the write of d and the read of none went unanswered.
    let errors = m["cache_statistics"]["strategies"]["crew_config"]["l2_errors"].as_u64().unwrap();
    assert!(errors >= 2, "{m}");
    assert!(
        m["recommendations"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("Redis")),
        "{m}"
    );
    // Back on the same port: the cache reconnects by itself and uses L2 again.
    // Down long enough for the connections' own reconnect attempts to give up.
    let down = Instant::now();
    wait_for_l2(&s, |l2| l2["skipped"].as_u64().unwrap() > 0 && down.elapsed() > Duration::from_secs(3))
        .await;
    let redis = RedisServer::start_on(port);
    let l2 = wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    assert_eq!(l2["outages"], 1, "{l2}");
    // Back means every pooled connection is back: writes spread over the pool all reach Redis,
    // and none fails (one answered PING used to declare Redis back while the other
    // connections were still broken).
    for i in 0..8 {
        let r = s
            .client
            .put(s.url(&format!("/api/v1/cache/crew_config/back{i}")))
            .body("b")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    for i in 0..8 {
        let v: Option<Vec<u8>> = redis.cmd(&["GET", &format!("perfd:crew_config:back{i}")]);
        assert!(v.is_some(), "back{i} is not in Redis");
    }
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let l2b = &m["cache_statistics"]["l2"];
    assert_eq!(
        (&l2b["outages"], &l2b["errors"], &l2b["timeouts"]),
        (&l2["outages"], &l2["errors"], &l2["timeouts"]),
        "{l2b}"
    );
    expect_l2_used_again(&s, "e", "v3").await;
}

/// A stalled Redis (SIGSTOP: connections open, no replies) must cost each call at most its
/// timeout: hits keep coming from L1, misses and writes still answer, timeouts are counted, and
/// after SIGCONT L2 is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_calls_time_out_and_l1_keeps_serving() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    s.client.put(s.url("/api/v1/cache/crew_config/c")).body("v1").send().await.unwrap();
    redis.signal("-STOP");
    let started = Instant::now();
    let r = s.client.get(s.url("/api/v1/cache/crew_config/c")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-cache"].to_str().unwrap()), (200, "L1"));
    // Each call below waits for Redis at most its 200 ms timeout; 5 s means something hung.
    let miss = s.client.get(s.url("/api/v1/cache/crew_config/none")).send().await.unwrap();
    assert_eq!(miss.status(), 404);
    let put = s.client.put(s.url("/api/v1/cache/crew_config/d")).body("v2").send().await.unwrap();
    assert_eq!(put.status(), 204);
    let r = s.client.get(s.url("/api/v1/cache/crew_config/d")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-cache"].to_str().unwrap()), (200, "L1"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a stalled Redis held requests for {:?}",
        started.elapsed()
    );
    let l2 = wait_for_l2(&s, |l2| l2["timeouts"].as_u64().unwrap_or(0) > 0).await;
    assert!(l2["timeouts"].as_u64().unwrap() >= 1, "{l2}");
    redis.signal("-CONT");
    expect_l2_used_again(&s, "e", "v3").await;
}

/// Redis health in the statistics: the pool, and calls in flight (here one, waiting on a
/// stalled Redis until its timeout; none once it timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_counted() {
    let redis = RedisServer::start();
    let url = redis.url();
    let s = TestServer::start_with(move |c| {
        c.cache.redis.url = Some(url);
        c.cache.redis.pool_size = 2;
        c.cache.redis.timeout = Duration::from_secs(3);
    });
    let l2 = wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    assert_eq!((l2["pool_size"].as_u64(), l2["in_flight"].as_u64()), (Some(2), Some(0)), "{l2}");
    redis.signal("-STOP");
    let (client, url) = (s.client.clone(), s.url("/api/v1/cache/crew_config/none"));
    let miss = tokio::spawn(async move { client.get(url).send().await.unwrap().status() });
    wait_for_l2(&s, |l2| l2["in_flight"] == 1).await;
    assert_eq!(miss.await.unwrap(), 404);
    let l2 = wait_for_l2(&s, |l2| l2["timeouts"] == 1).await;
    assert_eq!(l2["in_flight"], 0, "{l2}");
    redis.signal("-CONT");
}

async fn get(s: &TestServer, key: &str) -> (u16, String) {
    let r = s.client.get(s.url(&format!("/api/v1/cache/crew_config/{key}"))).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Regression: a write, delete or invalidation that Redis did not confirm (here: Redis stalled)
/// left the old value in Redis, and once Redis answered again an L1 miss promoted it back. Now
/// such keys are not read from L2 until perfd has removed them from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_an_outage_never_come_back_stale() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    for (key, value) in [("a", "old-a"), ("b", "old-b"), ("team-1", "old-t"), ("c", "old-c")] {
        let r = s
            .client
            .put(s.url(&format!("/api/v1/cache/crew_config/{key}")))
            .body(value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    redis.cmd::<()>(&["SET", "other:x", "foreign"]);
    redis.signal("-STOP");
    let r = s.client.put(s.url("/api/v1/cache/crew_config/a")).body("new-a").send().await.unwrap();
    assert_eq!(r.status(), 204);
    s.client.delete(s.url("/api/v1/cache/crew_config/b")).send().await.unwrap();
    let (status, _) =
        s.post_json("/api/v1/cache/invalidate", &serde_json::json!({"pattern": "crew_config:team-*"})).await;
    assert_eq!(status, 200);
    clear_l1(&s).await;
    redis.signal("-CONT");
    // Redis answers again, but what it may still hold for a, b and team-1 is never served.
    assert_ne!(get(&s, "a").await, (200, "old-a".into()));
    assert_eq!(get(&s, "b").await.0, 404);
    assert_eq!(get(&s, "team-1").await.0, 404);
    let l2 = wait_for_l2(&s, |l2| l2["reachable"] == true && l2["pending_repairs"] == 0).await;
    assert!(l2["skipped"].as_u64().unwrap() + l2["timeouts"].as_u64().unwrap() >= 3, "{l2}");
    for key in ["perfd:crew_config:a", "perfd:crew_config:b", "perfd:crew_config:team-1"] {
        assert_eq!(redis.cmd::<u64>(&["EXISTS", key]), 0, "{key} was repaired away");
    }
    assert_eq!(get(&s, "c").await, (200, "old-c".into()), "untouched keys still come from L2");
    // A clear of L2 during an outage: 503, and done once Redis is back; foreign keys stay.
    redis.signal("-STOP");
    let r = s.client.post(s.url("/api/v1/metrics/cache/clear")).json(&serde_json::json!({"level": "l2"}));
    let r = r.send().await.unwrap();
    assert_eq!(r.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    crate::helpers::expect_error(r, 503, "unavailable").await;
    clear_l1(&s).await;
    redis.signal("-CONT");
    assert_eq!(get(&s, "c").await.0, 404, "L2 is not read until it is cleared");
    wait_for_l2(&s, |l2| l2["reachable"] == true && l2["pending_repairs"] == 0).await;
    assert_eq!(redis.cmd::<u64>(&["EXISTS", "perfd:crew_config:c"]), 0);
    assert_eq!(redis.cmd::<String>(&["GET", "other:x"]), "foreign");
    // And L2 is used again.
    expect_l2_used_again(&s, "a", "fresh").await;
}

/// Regression: a GET that missed L1 read Redis, a PUT or DELETE of the same key completed
/// meanwhile, and the GET then promoted the older value into L1, where later GETs found it
/// after the write was acknowledged. Per-key writers and readers race on a small L1 (so reads
/// go to Redis often); a read must never return a version older than the last write that was
/// acknowledged before it began. Bounded: 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn l2_promotion_never_undoes_an_acknowledged_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = perfd::config::Config::for_test(dir.path()).cache;
    cfg.redis.url = Some(redis.url());
    cfg.max_entries = 8;
    let cache = Arc::new(perfd::cache::TieredCache::new(cfg).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.statistics().l2.reachable {
        assert!(Instant::now() < deadline, "L2 never reachable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    const KEYS: usize = 32;
    // Per key: the last acknowledged write, as version * 2 + (1 if it was a delete).
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (cache, acked, done) = (cache.clone(), acked.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut version = 0u64;
            while !done.load(SeqCst) {
                version += 1;
                let k = w + 4 * (version as usize % (KEYS / 4));
                let key = format!("k{k}");
                if version.is_multiple_of(7) {
                    cache.delete("crew_config", &key).await.unwrap();
                    acked[k].store(version * 2 + 1, SeqCst);
                } else {
                    let value = bytes::Bytes::from(version.to_string());
                    cache.set("crew_config", &key, value, None, None).await.unwrap();
                    acked[k].store(version * 2, SeqCst);
                }
            }
            0
        }));
    }
    for r in 0..8 {
        let (cache, acked, done) = (cache.clone(), acked.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut violations = 0;
            let mut i = r;
            while !done.load(SeqCst) {
                i = (i + 7) % KEYS;
                let before = acked[i].load(SeqCst);
                if let Some((e, level)) = cache.get("crew_config", &format!("k{i}")).await.unwrap() {
                    let v: u64 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
                    let (last, deleted) = (before / 2, before % 2 == 1);
                    if v < last || (deleted && v == last) {
                        violations += 1;
                        eprintln!(
                            "k{i}: read {v} from {level:?}, but {last} was acknowledged (deleted: {deleted})"
                        );
                    }
                }
            }
            violations
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, SeqCst);
    let mut violations = 0;
    for t in tasks {
        violations += t.await.unwrap();
    }
    let l2 = cache.statistics().l2;
    assert!(l2.hits > 100, "the race needs reads from Redis: {l2:?}");
    assert_eq!(violations, 0, "stale reads after acknowledged writes");
}

/// The whole-API property test (`any_request`) with Redis as L2: odd keys, patterns and
/// bodies reach Redis too, and still get a timely, non-5xx answer.
#[tokio::test]
async fn any_request_with_redis_as_l2_is_well_answered() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    crate::any_request::any_requests_are_well_answered(&s, 1000);
}

/// The cache model test (`cache_model`) with Redis as L2; `clear` empties both levels.
#[tokio::test]
async fn the_cache_with_redis_as_l2_answers_what_a_model_says() {
    let redis = RedisServer::start();
    crate::cache_model::the_model_holds(server_with(&redis), r#"{"level":"all"}"#, 100);
}

/// What keys and patterns are made of: every byte the matcher treats specially, plain ones and a
/// two-byte character.
const GLOB_PIECES: &[&str] = &["a", "b", "!", "^", "-", "[", "]", "\\", "*", "?", "\u{e9}"];

fn glob_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(GLOB_PIECES), 0..max).prop_map(|p| p.concat())
}

fn glob_keys() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(glob_text(6).prop_filter("a key", |k| !k.is_empty()), 1..12)
}

/// The L1 matcher against Redis' own: for random keys and patterns (closed or not),
/// `perfd::cache::glob::matches` finds what `SCAN MATCH` finds.
#[test]
fn the_glob_matches_what_redis_matches() {
    let redis = RedisServer::start();
    let c = std::cell::RefCell::new(redis.conn().unwrap());
    property(2000, (glob_keys(), glob_text(8)), |(keys, pattern)| {
        let c = &mut *c.borrow_mut();
        let _: () = redis::cmd("FLUSHALL").query(c).expect("FLUSHALL");
        for k in &keys {
            let _: () = redis::cmd("SET").arg(k).arg(1).query(c).expect("SET");
        }
        let mut found = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(c)
                .expect("SCAN");
            found.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let ours: BTreeSet<String> = keys
            .iter()
            .filter(|k| perfd::cache::glob::matches(pattern.as_bytes(), k.as_bytes()))
            .cloned()
            .collect();
        prop_assert_eq!(ours, found, "pattern {:?}", pattern);
        Ok(())
    });
}

/// Through the API with Redis as L2: an invalidation removes the same keys from both levels
/// (counted, and read back from each), or is refused as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_removes_the_same_keys_from_l1_and_l2() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    let handle = tokio::runtime::Handle::current();
    let case = std::cell::Cell::new(0);
    tokio::task::block_in_place(|| {
        property(80, (glob_keys(), glob_text(8)), |(keys, pattern)| {
            case.set(case.get() + 1);
            handle.block_on(invalidate_both(&s, case.get(), &keys, &pattern))
        })
    });
}

async fn invalidate_both(
    s: &TestServer,
    case: u32,
    keys: &BTreeSet<String>,
    pattern: &str,
) -> Result<(), TestCaseError> {
    let path = |k: &str| format!("/api/v1/cache/crew_config/{}", urlencode(&format!("g{case}-{k}")));
    for k in keys {
        let status = s.client.put(s.url(&path(k))).body(k.clone()).send().await.expect("PUT").status();
        prop_assert!(status.is_success(), "PUT {:?}: {}", k, status);
    }
    let full = format!("crew_config:g{case}-{pattern}");
    let (status, answer) =
        s.post_json("/api/v1/cache/invalidate", &serde_json::json!({ "pattern": full })).await;
    if perfd::cache::glob::Glob::new(&full).is_err() {
        prop_assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_input")),
            "{}",
            answer
        );
        return Ok(());
    }
    prop_assert_eq!(status, 200, "{}", answer);
    let gone: BTreeSet<&String> =
        keys.iter().filter(|k| perfd::cache::glob::matches(pattern.as_bytes(), k.as_bytes())).collect();
    let removed = (answer["removed_l1"].as_u64(), answer["removed_l2"].as_u64());
    prop_assert_eq!(removed, (Some(gone.len() as u64), Some(gone.len() as u64)), "{}", answer);
    // What L1 answers, then (L1 emptied) what L2 answers: the same.
    for level in ["L1", "L2"] {
        if level == "L2" {
            clear_l1(s).await;
        }
        for k in keys {
            let status = s.client.get(s.url(&path(k))).send().await.expect("GET").status().as_u16();
            prop_assert_eq!(
                status,
                if gone.contains(k) { 404 } else { 200 },
                "{} read {:?} after {:?}",
                level,
                k,
                pattern
            );
        }
    }
    Ok(())
}

/// A value replaced by one with the shortest TTL never comes back from Redis. Before, a TTL
/// under 1 ms (`?ttl=1ns`, refused now) made the write skip Redis, so the value it replaced
/// stayed there and came back on the next L1 miss; an entry that still expires on its way to
/// Redis now deletes the key there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_value_never_comes_back_after_a_short_ttl() {
    let redis = RedisServer::start();
    let s = server_with(&redis);
    wait_for_l2(&s, |l2| l2["reachable"] == true).await;
    for round in 0..50 {
        let path = format!("/api/v1/cache/crew_config/short{round}");
        s.client.put(s.url(&path)).body("old").send().await.unwrap();
        let r = s.client.put(s.url(&format!("{path}?ttl=1ms"))).body("new").send().await.unwrap();
        assert_eq!(r.status(), 204);
        // Bounded: the 1 ms entry is gone from both levels within a few reads.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = s.client.get(s.url(&path)).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_ne!(body, "old", "round {round}: the replaced value came back");
            if status == 404 {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: still {status} {body}");
        }
    }
}
