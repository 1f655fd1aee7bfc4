//! Execution slots through the server: admission, FIFO queue, leases, stages, profiles.

use crate::helpers::{TestServer, expect_error};
use serde_json::json;
use std::time::{Duration, Instant};

async fn request(s: &TestServer, crew: &str) -> (u16, serde_json::Value) {
    let r = s.client.post(s.url("/api/v1/executions")).json(&json!({"crew_id": crew})).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn ten_run_fifteen_queue_in_order_and_finishes_admit_in_order() {
    let s = TestServer::start();
    // 25 concurrent requests against max_concurrent 10.
    let answers = futures_join(&s, 25).await;
    let running: Vec<&serde_json::Value> =
        answers.iter().filter(|(c, _)| *c == 201).map(|(_, v)| v).collect();
    let mut queued: Vec<&serde_json::Value> =
        answers.iter().filter(|(c, _)| *c == 202).map(|(_, v)| v).collect();
    assert_eq!((running.len(), queued.len()), (10, 15));
    queued.sort_by_key(|v| v["position"].as_u64().unwrap());
    let positions: Vec<u64> = queued.iter().map(|v| v["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, (1..=15).collect::<Vec<_>>(), "FIFO positions");
    // Finishing admits the first in line, then the next.
    for (i, done) in running.iter().take(3).enumerate() {
        let id = done["id"].as_u64().unwrap();
        let r = s
            .client
            .post(s.url(&format!("/api/v1/executions/{id}/finish")))
            .json(&json!({"status": "success"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let next = queued[i]["id"].as_u64().unwrap();
        let (_, e) = s.get_json(&format!("/api/v1/executions/{next}")).await;
        assert_eq!(e["state"], "running", "position {} admitted after finish {i}", i + 1);
        let (_, after) = s.get_json(&format!("/api/v1/executions/{}", queued[i + 1]["id"])).await;
        assert_eq!(after["position"], 1);
    }
}

async fn futures_join(s: &TestServer, n: usize) -> Vec<(u16, serde_json::Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (s.client.clone(), s.url("/api/v1/executions"));
            tokio::spawn(async move {
                let r = client.post(url).json(&json!({"crew_id": format!("crew-{i}")})).send().await.unwrap();
                (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn full_queue_is_429_and_an_expired_lease_frees_its_slot() {
    let s = TestServer::start_with(|c| {
        c.executions.max_concurrent = 1;
        c.executions.queue_capacity = 1;
        c.executions.lease = Duration::from_millis(300);
    });
    let (code, first) = request(&s, "a").await;
    assert_eq!(code, 201);
    let (code, second) = request(&s, "b").await;
    assert_eq!(code, 202);
    let r = s.client.post(s.url("/api/v1/executions")).json(&json!({"crew_id": "c"})).send().await.unwrap();
    expect_error(r, 429, "queue_full").await;
    // Neither heartbeats: the running one expires, the queued one (also lapsed) too; bounded polling.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.daemon().sampler.tick();
        let (_, q) = s.get_json("/api/v1/metrics/queue").await;
        if q["executions"]["running"] == 0 && q["executions"]["expired"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "leases never expired: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, gone) = s.get_json(&format!("/api/v1/executions/{}", first["id"])).await;
    assert_eq!(gone["state"], "expired", "the stored profile answers for a lapsed execution");
    let (_, gone) = s.get_json(&format!("/api/v1/executions/{}", second["id"])).await;
    assert_eq!(gone["state"], "expired");
    // A heartbeat keeps a lease alive.
    let (code, kept) = request(&s, "d").await;
    assert_eq!(code, 201);
    let id = kept["id"].as_u64().unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = s.client.post(s.url(&format!("/api/v1/executions/{id}/heartbeat"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        s.daemon().sampler.tick();
    }
    let (_, e) = s.get_json(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(e["state"], "running");
}

#[tokio::test]
async fn wait_long_polls_until_admitted() {
    let s = TestServer::start_with(|c| c.executions.max_concurrent = 1);
    let (_, first) = request(&s, "a").await;
    let waiter = {
        let (client, url) = (s.client.clone(), s.url("/api/v1/executions?wait=10s"));
        tokio::spawn(async move { client.post(url).json(&json!({"crew_id": "b"})).send().await.unwrap() })
    };
    // Bounded polling until the waiter is queued, then free the slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, q) = s.get_json("/api/v1/metrics/queue").await;
        if q["executions"]["waiting"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.client.post(s.url(&format!("/api/v1/executions/{}/finish", first["id"]))).send().await.unwrap();
    let r = waiter.await.unwrap();
    assert_eq!(r.status(), 201);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["state"], "running");
    assert!(e["queue_wait_ms"].as_i64().unwrap() >= 0);
}

/// Regression: a long-poll longer than the lease lost its execution: the queued request
/// expired while its client waited, and the waiter got a 404 for its own execution. Also: a
/// queued execution can be withdrawn with `finish` (it could only wait out its lease).
#[tokio::test]
async fn a_waiter_keeps_its_lease_and_a_queued_execution_can_be_withdrawn() {
    let s = TestServer::start_with(|c| {
        c.executions.max_concurrent = 1;
        c.executions.lease = Duration::from_millis(300);
    });
    let (_, first) = request(&s, "a").await;
    let first = first["id"].as_u64().unwrap();
    let waiter = {
        let (client, url) = (s.client.clone(), s.url("/api/v1/executions?wait=20s"));
        tokio::spawn(async move { client.post(url).json(&json!({"crew_id": "b"})).send().await.unwrap() })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get_json("/api/v1/metrics/queue").await.1["executions"]["waiting"] != 1 {
        assert!(Instant::now() < deadline, "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Four leases go by (the running one is kept alive by its heartbeats, the waiter by waiting).
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = s.client.post(s.url(&format!("/api/v1/executions/{first}/heartbeat"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        s.daemon().sampler.tick();
    }
    let (_, q) = s.get_json("/api/v1/metrics/queue").await;
    assert_eq!(
        (q["executions"]["waiting"].as_u64(), q["executions"]["expired"].as_u64()),
        (Some(1), Some(0)),
        "{q}"
    );
    s.client.post(s.url(&format!("/api/v1/executions/{first}/finish"))).send().await.unwrap();
    let r = waiter.await.unwrap();
    let status = r.status();
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!((status.as_u16(), e["state"].as_str()), (201, Some("running")), "{e}");

    // A queued execution withdrawn: it leaves the queue, "cancelled" unless told otherwise, and
    // its profile keeps the wait. A second finish is a 409.
    let (code, queued) = request(&s, "c").await;
    assert_eq!(code, 202, "{queued}");
    let id = queued["id"].as_u64().unwrap();
    let r = s.client.post(s.url(&format!("/api/v1/executions/{id}/finish"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let done: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (done["state"].as_str(), done["status"].as_str()),
        (Some("finished"), Some("cancelled")),
        "{done}"
    );
    assert!(done["queue_wait_ms"].as_i64().is_some_and(|w| w >= 0) && done["started_ms"].is_null(), "{done}");
    assert_eq!(s.get_json(&format!("/api/v1/executions/{id}")).await.1["status"], "cancelled");
    let (_, q) = s.get_json("/api/v1/metrics/queue").await;
    assert_eq!(q["executions"]["waiting"], 0, "{q}");
    let r = s.client.post(s.url(&format!("/api/v1/executions/{id}/finish"))).send().await.unwrap();
    expect_error(r, 409, "conflict").await;
}

#[tokio::test]
async fn stages_and_profiles_with_per_stage_statistics() {
    let mut s = TestServer::start();
    for (i, ms) in [100.0, 200.0, 300.0].iter().enumerate() {
        let (_, e) = request(&s, "research").await;
        let id = e["id"].as_u64().unwrap();
        for (name, d) in [("plan", *ms), ("tools", ms * 2.0)] {
            let r = s
                .client
                .post(s.url(&format!("/api/v1/executions/{id}/stages")))
                .json(&json!({"name": name, "duration_ms": d}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "stage {i}");
        }
        s.client.post(s.url(&format!("/api/v1/executions/{id}/finish"))).send().await.unwrap();
    }
    let (_, other) = request(&s, "writer").await;
    s.client.post(s.url(&format!("/api/v1/executions/{}/finish", other["id"]))).send().await.unwrap();
    s.restart();
    let (_, p) = s.get_json("/api/v1/executions?crew_id=research&window=1h").await;
    assert_eq!(p["count"], 3, "{p}");
    assert_eq!(p["stages"]["plan"]["avg_ms"], 200.0);
    assert_eq!(p["stages"]["tools"]["p95_ms"], 600.0);
    assert_eq!(p["profiles"][0]["status"], "success");
    let (_, e) = request(&s, "new").await;
    assert!(e["id"].as_u64().unwrap() > other["id"].as_u64().unwrap(), "ids stay unique across restarts");
    let id = e["id"].as_u64().unwrap();
    for (path, body, status, code) in [
        (
            format!("/api/v1/executions/{id}/stages"),
            json!({"name": "", "duration_ms": 1}),
            400,
            "invalid_input",
        ),
        (
            format!("/api/v1/executions/{id}/stages"),
            json!({"name": "x", "duration_ms": -1}),
            400,
            "invalid_input",
        ),
        // Over a year: 1e308 made the window's average infinite (answered as null).
        (
            format!("/api/v1/executions/{id}/stages"),
            json!({"name": "x", "duration_ms": 1.7e308}),
            400,
            "invalid_input",
        ),
        (
            format!("/api/v1/executions/{id}/stages"),
            json!({"name": "x", "duration_ms": 31_536_000_001.0}),
            400,
            "invalid_input",
        ),
        ("/api/v1/executions/999999/finish".to_string(), json!({}), 404, "not_found"),
        ("/api/v1/executions".to_string(), json!({"crew_id": ""}), 400, "invalid_input"),
        ("/api/v1/executions".to_string(), json!({"crew": "x"}), 400, "invalid_input"),
        // Unknown fields: `wait` belongs in the query; both were silently ignored.
        ("/api/v1/executions".to_string(), json!({"crew_id": "x", "wait": "5s"}), 400, "invalid_input"),
        (
            format!("/api/v1/executions/{id}/stages"),
            json!({"name": "x", "duration_ms": 5, "unit": "s"}),
            400,
            "invalid_input",
        ),
    ] {
        let r = s.client.post(s.url(&path)).json(&body).send().await.unwrap();
        expect_error(r, status, code).await;
    }
    s.client.post(s.url(&format!("/api/v1/executions/{id}/finish"))).send().await.unwrap();
    // A retried finish, a late heartbeat or stage: the execution has ended (409), it is not unknown.
    for op in ["finish", "heartbeat"] {
        let r = s.client.post(s.url(&format!("/api/v1/executions/{id}/{op}"))).send().await.unwrap();
        expect_error(r, 409, "conflict").await;
    }
    let r = s
        .client
        .post(s.url(&format!("/api/v1/executions/{id}/stages")))
        .json(&json!({"name": "late", "duration_ms": 1}))
        .send()
        .await
        .unwrap();
    expect_error(r, 409, "conflict").await;
    let (status, done) = s.get_json(&format!("/api/v1/executions/{id}")).await;
    assert_eq!((status, done["state"].as_str()), (200, Some("finished")));
    // The window is 1 s to 10 years (a far longer one overflowed its start); an empty one
    // averages 0, not -0.
    for w in ["0s", "500000000000y"] {
        let r = s.client.get(s.url(&format!("/api/v1/executions?window={w}"))).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
    let r = s.client.get(s.url("/api/v1/executions?crew_id=nobody")).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"avg_ms\":0.0") && !text.contains("-0.0"), "{text}");
}

/// Regression: an execution whose lease lapsed was expired by the next request for a slot
/// when that came before the sampler's tick, and its profile was never stored.
#[tokio::test]
async fn an_execution_expired_by_a_request_still_gets_its_profile() {
    let s = TestServer::start_with(|c| {
        c.executions.max_concurrent = 1;
        c.executions.lease = Duration::from_millis(100);
    });
    let (code, first) = request(&s, "a").await;
    assert_eq!(code, 201);
    let lapses = first["lease_expires_ms"].as_i64().unwrap();
    while perfd::model::now_ms() <= lapses {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(request(&s, "b").await.0, 201, "the lapsed one was expired by this request");
    s.daemon().sampler.tick();
    s.flush();
    let (code, gone) = s.get_json(&format!("/api/v1/executions/{}", first["id"])).await;
    assert_eq!((code, gone["state"].as_str()), (200, Some("expired")), "{gone}");
}

/// A waiter whose client gives up leaves the queue: actix does not cancel the handler, so it
/// looks at its connection. Before, it stayed queued, was admitted later, and held the slot
/// for nobody until its lease ran out.
#[tokio::test]
async fn a_waiter_whose_client_goes_away_is_withdrawn() {
    let s = TestServer::start_with(|c| c.executions.max_concurrent = 1);
    let (code, first) = request(&s, "a").await;
    assert_eq!(code, 201);
    let waiting = s
        .client
        .post(s.url("/api/v1/executions?wait=20s"))
        .json(&json!({"crew_id": "b"}))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(waiting.unwrap_err().is_timeout());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, q) = s.get_json("/api/v1/metrics/queue").await;
        if q["executions"]["waiting"] == 0 && q["executions"]["abandoned"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned waiter is still queued: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = s.client.post(s.url(&format!("/api/v1/executions/{}/finish", first["id"]))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        request(&s, "c").await.0,
        201,
        "the freed slot goes to the next request, not to the gone waiter"
    );
}

/// `curl -d '{...}'` sends a form content type: the 400 says which content type to send and
/// which came (it said "Content type error"), and a body missing a field says it is the body.
#[tokio::test]
async fn a_bad_body_path_or_query_string_is_told_what_to_send() {
    let s = TestServer::start();
    let post = |content_type: Option<&'static str>, body: &'static str| {
        let mut r = s.client.post(s.url("/api/v1/executions")).body(body);
        if let Some(t) = content_type {
            r = r.header("Content-Type", t);
        }
        r.send()
    };
    let e = expect_error(
        post(Some("application/x-www-form-urlencoded"), r#"{"crew_id":"a"}"#).await.unwrap(),
        400,
        "invalid_input",
    )
    .await;
    assert!(
        e.contains("Content-Type: application/json") && e.contains("\"application/x-www-form-urlencoded\""),
        "{e}"
    );
    let e = expect_error(post(None, r#"{"crew_id":"a"}"#).await.unwrap(), 400, "invalid_input").await;
    assert!(e.contains("got none"), "{e}");
    let e = expect_error(post(Some("application/json"), "{}").await.unwrap(), 400, "invalid_input").await;
    assert!(e.starts_with("invalid JSON body: missing field `crew_id`"), "{e}");
    let (status, _) = request(&s, "a").await;
    assert_eq!(status, 201);
    // Path and query parameters say which they are ("Path deserialize error: …" before).
    let r = s.client.get(s.url("/api/v1/executions/99999999999999999999")).send().await.unwrap();
    let e = expect_error(r, 400, "invalid_input").await;
    assert!(e.starts_with("invalid path: can not parse"), "{e}");
    let r = s.client.get(s.url("/api/v1/alerts/history?limit=x")).send().await.unwrap();
    let e = expect_error(r, 400, "invalid_input").await;
    assert!(e.starts_with("invalid query string: "), "{e}");
}
