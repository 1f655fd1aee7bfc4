//! Alert thresholds through the server: CRUD, validation, persistence, firing, silences, history.

use crate::helpers::{TestServer, expect_error};
use serde_json::json;

fn threshold() -> serde_json::Value {
    json!({"name": "deep queue", "selector": "crew_queue_depth{crew=\"a\"}", "aggregation": "last", "window": "1m",
           "comparison": ">", "warning": 10, "critical": 20, "clear": 5, "for": "0s", "enabled": true})
}

#[tokio::test]
async fn thresholds_crud_validation_and_persistence() {
    let mut s = TestServer::start();
    let (_, list) = s.get_json("/api/v1/alerts/thresholds").await;
    let defaults = list["thresholds"].as_array().unwrap().len();
    assert_eq!(defaults, 6, "defaults are created on first start: {list}");
    let r = s.client.post(s.url("/api/v1/alerts/thresholds")).json(&threshold()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["for"], "0s");
    let mut changed = threshold();
    changed["warning"] = json!(12);
    let r =
        s.client.put(s.url(&format!("/api/v1/alerts/thresholds/{id}"))).json(&changed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.restart();
    let (status, got) = s.get_json(&format!("/api/v1/alerts/thresholds/{id}")).await;
    assert_eq!((status, got["warning"].as_f64()), (200, Some(12.0)));
    let (_, list) = s.get_json("/api/v1/alerts/thresholds").await;
    assert_eq!(list["thresholds"].as_array().unwrap().len(), defaults + 1, "defaults are not created twice");
    assert_eq!(
        s.client.delete(s.url(&format!("/api/v1/alerts/thresholds/{id}"))).send().await.unwrap().status(),
        204
    );
    expect_error(
        s.client.get(s.url(&format!("/api/v1/alerts/thresholds/{id}"))).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        s.client.delete(s.url(&format!("/api/v1/alerts/thresholds/{id}"))).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    for (field, value) in [
        ("aggregation", json!("median")),
        ("critical", json!(5)),
        ("selector", json!("crew{")),
        ("window", json!("soon")),
        ("comparison", json!("==")),
        ("clear", json!(50)),
    ] {
        let mut bad = threshold();
        bad[field] = value;
        let r = s.client.post(s.url("/api/v1/alerts/thresholds")).json(&bad).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
    let r = s.client.put(s.url("/api/v1/alerts/thresholds/999999")).json(&threshold()).send().await.unwrap();
    expect_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn a_breach_fires_is_silenced_resolves_and_is_recorded() {
    let s = TestServer::start();
    let r = s.client.post(s.url("/api/v1/alerts/thresholds")).json(&threshold()).send().await.unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap();
    let now = perfd::model::now_ms();
    s.post("/write?precision=ms", format!("crew_queue,crew=a depth=25 {}", now - 1000)).await;
    s.daemon().sampler.tick();
    let (_, a) = s.get_json("/api/v1/alerts").await;
    let firing =
        a["alerts"].as_array().unwrap().iter().find(|x| x["threshold_id"] == id).cloned().expect("fires");
    assert_eq!((firing["level"].as_str(), firing["silenced"].as_bool()), (Some("critical"), Some(false)));
    let (_, h) = s.get_json("/api/v1/metrics/health").await;
    assert!(h["active_alerts"].as_array().unwrap().iter().any(|x| x["threshold_id"] == id), "{h}");
    let r = s
        .client
        .post(s.url("/api/v1/alerts/silences"))
        .json(&json!({"threshold_id": id, "until": "+1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let until = r.json::<serde_json::Value>().await.unwrap()["until_ms"].as_i64().unwrap();
    assert!(
        (now + 3_600_000..perfd::model::now_ms() + 3_600_001).contains(&until),
        "an hour from now: {until}"
    );
    s.daemon().sampler.tick();
    let (_, a) = s.get_json("/api/v1/alerts").await;
    assert!(
        a["alerts"].as_array().unwrap().iter().any(|x| x["threshold_id"] == id && x["silenced"] == true),
        "{a}"
    );
    s.post("/write?precision=ms", format!("crew_queue,crew=a depth=1 {now}")).await;
    s.daemon().sampler.tick();
    let (_, a) = s.get_json("/api/v1/alerts").await;
    assert!(!a["alerts"].as_array().unwrap().iter().any(|x| x["threshold_id"] == id), "{a}");
    let (_, hist) = s.get_json("/api/v1/alerts/history").await;
    let mine: Vec<(String, String)> = hist["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["threshold_id"] == id)
        .map(|e| (e["from"].as_str().unwrap().to_owned(), e["to"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        mine,
        vec![("critical".into(), "ok".into()), ("ok".into(), "critical".into())],
        "newest first"
    );
    for bad in [
        json!({"until": now + 1000}),
        json!({"threshold_id": id, "until": now - 1000}),
        json!({"selector": "x{", "until": now + 1000}),
    ] {
        let r = s.client.post(s.url("/api/v1/alerts/silences")).json(&bad).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
}

/// A threshold's selector may hold regex matchers and leave the name out: the worst of the
/// series it matches counts, and a series it does not match is not looked at.
#[tokio::test]
async fn a_regex_selector_watches_every_series_it_matches() {
    let s = TestServer::start();
    let mut t = threshold();
    t["selector"] = json!(r#"{__name__=~"crew_queue_.*", crew=~"a|b"}"#);
    let r = s.client.post(s.url("/api/v1/alerts/thresholds")).json(&t).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap();
    let now = perfd::model::now_ms();
    let lines = format!(
        "crew_queue,crew=a depth=3 {now}\ncrew_queue,crew=b depth=15 {now}\ncrew_queue,crew=ab depth=99 {now}"
    );
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    s.daemon().sampler.tick();
    let alert = firing(&s, id).await.expect("fires");
    assert_eq!((alert["level"].as_str(), alert["value"].as_f64()), (Some("warning"), Some(15.0)), "{alert}");
    t["selector"] = json!(r#"crew_queue_depth{crew=~"a("}"#);
    let r = s.client.post(s.url("/api/v1/alerts/thresholds")).json(&t).send().await.unwrap();
    let message = expect_error(r, 400, "invalid_input").await;
    assert!(message.contains("invalid regex"), "{message}");
}

/// The whole history of one threshold, oldest first: (from, to, reason).
pub(crate) async fn events_of(s: &TestServer, id: u64) -> Vec<(String, String, Option<String>)> {
    let (_, hist) = s.get_json(&format!("/api/v1/alerts/history?threshold_id={id}&limit=10000")).await;
    let mut mine: Vec<_> = hist["events"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|e| assert_eq!(e["threshold_id"], id, "only threshold {id}'s events"))
        .map(|e| {
            let text = |f: &str| e[f].as_str().map(str::to_owned);
            (text("from").unwrap(), text("to").unwrap(), text("reason"))
        })
        .collect();
    mine.reverse();
    mine
}

/// The firing alert of threshold `id`, if any.
async fn firing(s: &TestServer, id: u64) -> Option<serde_json::Value> {
    let (_, a) = s.get_json("/api/v1/alerts").await;
    a["alerts"].as_array().unwrap().iter().find(|x| x["threshold_id"] == id).cloned()
}

#[tokio::test]
async fn a_firing_alert_survives_a_restart_and_ends_when_its_threshold_goes() {
    let mut s = TestServer::start();
    let mut ids = Vec::new();
    for crew in ["a", "b"] {
        let mut t = threshold();
        t["selector"] = json!(format!("crew_queue_depth{{crew=\"{crew}\"}}"));
        let (status, created) = s.post_json("/api/v1/alerts/thresholds", &t).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_u64().unwrap());
    }
    let now = perfd::model::now_ms();
    s.post(
        "/write?precision=ms",
        format!("crew_queue,crew=a depth=25 {now}\ncrew_queue,crew=b depth=15 {now}"),
    )
    .await;
    s.daemon().sampler.tick();
    let before = firing(&s, ids[0]).await.expect("fires");
    assert_eq!(firing(&s, ids[1]).await.expect("fires")["level"], "warning");

    // The state is back before the first request: same level, same start, no second event.
    s.restart();
    let after = firing(&s, ids[0]).await.expect("still firing after a restart");
    assert_eq!((&after["level"], &after["since_ms"]), (&before["level"], &before["since_ms"]));
    s.daemon().sampler.tick();
    let ok_critical = ("ok".to_owned(), "critical".to_owned(), None);
    assert_eq!(events_of(&s, ids[0]).await, vec![ok_critical.clone()]);

    // Disabled, then deleted: each alert ends, and the history says why.
    let mut disabled = threshold();
    disabled["enabled"] = json!(false);
    let r =
        s.client.put(s.url(&format!("/api/v1/alerts/thresholds/{}", ids[0]))).json(&disabled).send().await;
    assert_eq!(r.unwrap().status(), 200);
    let r = s.client.delete(s.url(&format!("/api/v1/alerts/thresholds/{}", ids[1]))).send().await;
    assert_eq!(r.unwrap().status(), 204);
    s.daemon().sampler.tick();
    assert!(firing(&s, ids[0]).await.is_none() && firing(&s, ids[1]).await.is_none());
    let ended = |from: &str, reason: &str| (from.to_owned(), "ok".to_owned(), Some(reason.to_owned()));
    assert_eq!(
        events_of(&s, ids[0]).await,
        vec![ok_critical.clone(), ended("critical", "threshold disabled")]
    );
    let ok_warning = ("ok".to_owned(), "warning".to_owned(), None);
    assert_eq!(events_of(&s, ids[1]).await, vec![ok_warning, ended("warning", "threshold deleted")]);
    // Events since a time (unix ms or RFC 3339): the two that ended the alerts are the newest.
    let (_, all) = s.get_json("/api/v1/alerts/history").await;
    let newest = all["events"][0]["at_ms"].as_i64().unwrap();
    let (_, since) = s.get_json(&format!("/api/v1/alerts/history?since={newest}")).await;
    assert!(since["events"].as_array().unwrap().iter().all(|e| e["reason"].is_string()), "{since}");
    assert_eq!(since["events"].as_array().unwrap().len(), 2, "{since}");
    let (_, none) = s.get_json("/api/v1/alerts/history?since=2999-01-01T00:00:00Z").await;
    assert_eq!(none["events"], json!([]));
    let r = s.client.get(s.url("/api/v1/alerts/history?since=yesterday")).send().await.unwrap();
    expect_error(r, 400, "invalid_input").await;

    // Enabled again while still breaching: it fires anew, once, also across a restart.
    let r =
        s.client.put(s.url(&format!("/api/v1/alerts/thresholds/{}", ids[0]))).json(&threshold()).send().await;
    assert_eq!(r.unwrap().status(), 200);
    s.daemon().sampler.tick();
    s.restart();
    s.daemon().sampler.tick();
    assert_eq!(firing(&s, ids[0]).await.expect("fires again")["level"], "critical");
    assert_eq!(events_of(&s, ids[0]).await.len(), 3);
}

/// Regression: a firing alert whose threshold was deleted just before a restart (no tick in
/// between) was never ended: its history stopped at `critical`.
#[tokio::test]
async fn a_threshold_deleted_just_before_a_restart_ends_its_alert() {
    let mut s = TestServer::start();
    let (_, created) = s.post_json("/api/v1/alerts/thresholds", &threshold()).await;
    let id = created["id"].as_u64().unwrap();
    s.post("/write?precision=ms", format!("crew_queue,crew=a depth=25 {}", perfd::model::now_ms())).await;
    s.daemon().sampler.tick();
    assert!(firing(&s, id).await.is_some());
    let r = s.client.delete(s.url(&format!("/api/v1/alerts/thresholds/{id}"))).send().await;
    assert_eq!(r.unwrap().status(), 204);
    s.restart();
    assert!(firing(&s, id).await.is_none());
    let ended = ("critical".to_owned(), "ok".to_owned(), Some("threshold deleted".to_owned()));
    assert_eq!(events_of(&s, id).await, vec![("ok".to_owned(), "critical".to_owned(), None), ended]);
}

/// A dead-man's switch: `count < 1` over the window fires while a series sends nothing (a count
/// of no points is 0; it had no value and never fired) and resolves once a point comes.
#[tokio::test]
async fn a_series_that_stops_reporting_fires_a_count_threshold() {
    let s = TestServer::start();
    let mut t = threshold();
    t["name"] = json!("crew a silent");
    t["aggregation"] = json!("count");
    t["comparison"] = json!("<");
    t["critical"] = json!(1);
    // Without a clear level, a count of 1 (at the line, not past it) resolves it.
    t.as_object_mut().unwrap().retain(|k, _| k != "warning" && k != "clear");
    let (status, created) = s.post_json("/api/v1/alerts/thresholds", &t).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();
    s.daemon().sampler.tick();
    let silent = firing(&s, id).await.expect("no point in the window fires `count < 1`");
    assert_eq!((&silent["level"], silent["value"].as_f64()), (&json!("critical"), Some(0.0)));
    s.post("/write?precision=ms", format!("crew_queue,crew=a depth=3 {}", perfd::model::now_ms())).await;
    s.daemon().sampler.tick();
    assert!(firing(&s, id).await.is_none(), "a point resolves it");
    let event = |from: &str, to: &str| (from.to_owned(), to.to_owned(), None);
    assert_eq!(events_of(&s, id).await, vec![event("ok", "critical"), event("critical", "ok")]);

    // A `for` whose milliseconds overflowed fired at once; `for` is at most 10 years.
    let mut forever = threshold();
    forever["for"] = json!("300000000y");
    let r = s.client.post(s.url("/api/v1/alerts/thresholds")).json(&forever).send().await.unwrap();
    expect_error(r, 400, "invalid_input").await;
}

/// `no_data`: what an alert does while its window holds no data. Its selector is pointed at a
/// series that does not exist to take the data away without waiting for the window to pass.
#[tokio::test]
async fn no_data_keeps_resolves_or_fires_as_the_threshold_says() {
    let s = TestServer::start();
    s.post("/write?precision=ms", format!("crew_queue,crew=a depth=25 {}", perfd::model::now_ms())).await;
    let mut ids = Vec::new();
    for (name, policy) in [("keeps", None), ("resolves", Some("ok"))] {
        let mut t = threshold();
        t["name"] = json!(name);
        if let Some(p) = policy {
            t["no_data"] = json!(p);
        }
        let (status, created) = s.post_json("/api/v1/alerts/thresholds", &t).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["no_data"], json!(policy.unwrap_or("keep")), "the default is shown");
        ids.push(created["id"].as_u64().unwrap());
    }
    s.daemon().sampler.tick();
    for id in &ids {
        assert_eq!(firing(&s, *id).await.expect("fires")["level"], "critical");
    }
    for (id, policy) in ids.iter().zip(["keep", "ok"]) {
        let mut t = threshold();
        t["selector"] = json!("crew_queue_depth{crew=\"nobody\"}");
        t["no_data"] = json!(policy);
        let r = s.client.put(s.url(&format!("/api/v1/alerts/thresholds/{id}"))).json(&t).send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
    s.daemon().sampler.tick();
    let kept = firing(&s, ids[0]).await.expect("keep: still firing without data");
    assert_eq!((&kept["level"], kept["value"].as_f64()), (&json!("critical"), Some(25.0)));
    assert!(firing(&s, ids[1]).await.is_none(), "ok: resolved without data");
    let no_data = Some("no data".to_owned());
    assert_eq!(
        events_of(&s, ids[1]).await,
        vec![("ok".into(), "critical".into(), None), ("critical".into(), "ok".into(), no_data.clone())]
    );
    let (_, hist) = s.get_json(&format!("/api/v1/alerts/history?threshold_id={}", ids[1])).await;
    assert_eq!(hist["events"][0]["value"], json!(null), "no value decided it: {hist}");

    // `critical`: silence itself fires, with no value, and a point resolves it.
    let mut t = threshold();
    t["name"] = json!("crew b reports");
    t["selector"] = json!("crew_queue_depth{crew=\"b\"}");
    t["no_data"] = json!("critical");
    let (_, created) = s.post_json("/api/v1/alerts/thresholds", &t).await;
    let id = created["id"].as_u64().unwrap();
    s.daemon().sampler.tick();
    let silent = firing(&s, id).await.expect("no data fires");
    assert_eq!((&silent["level"], &silent["value"]), (&json!("critical"), &json!(null)));
    s.post("/write?precision=ms", format!("crew_queue,crew=b depth=1 {}", perfd::model::now_ms())).await;
    s.daemon().sampler.tick();
    assert!(firing(&s, id).await.is_none(), "a point under the clear level resolves it");
    assert_eq!(
        events_of(&s, id).await,
        vec![("ok".into(), "critical".into(), no_data), ("critical".into(), "ok".into(), None)]
    );

    let mut bad = threshold();
    bad["no_data"] = json!("alerting");
    let r = s.client.post(s.url("/api/v1/alerts/thresholds")).json(&bad).send().await.unwrap();
    expect_error(r, 400, "invalid_input").await;
}

/// Regression: the hit rate was written as 0 % while the cache had no lookup at all, so an idle
/// perfd fired the default "low cache hit rate" at critical two minutes after its start.
#[tokio::test]
async fn an_idle_cache_fires_no_hit_rate_alert() {
    let s = TestServer::start();
    let (_, list) = s.get_json("/api/v1/alerts/thresholds").await;
    let mut t = list["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "low cache hit rate")
        .cloned()
        .expect("a default");
    assert_eq!(t["no_data"], "ok", "{t}");
    let id = t["id"].as_u64().unwrap();
    // Its `for` (2m) made shorter, so the test need not wait it out.
    t["for"] = json!("0s");
    let r = s.client.put(s.url(&format!("/api/v1/alerts/thresholds/{id}"))).json(&t).send().await;
    assert_eq!(r.unwrap().status(), 200);
    for _ in 0..3 {
        s.daemon().sampler.tick();
        s.flush();
    }
    assert!(firing(&s, id).await.is_none(), "no lookup is no low hit rate");
    for i in 0..10 {
        s.client.get(s.url(&format!("/api/v1/cache/llm_response/q{i}"))).send().await.unwrap();
    }
    // A tick writes its series through the writer and evaluates what was stored before it.
    s.daemon().sampler.tick();
    s.flush();
    s.daemon().sampler.tick();
    let low = firing(&s, id).await.expect("ten misses are a low hit rate");
    assert_eq!((&low["level"], low["value"].as_f64()), (&json!("critical"), Some(0.0)));
}
