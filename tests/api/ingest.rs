//! Ingest through the real server: all three formats, gzip, acks, atomicity and every rejection.

use crate::helpers::{TestServer, base_ms, expect_error};
use std::io::Write;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn series_count(s: &TestServer, selector: &str) -> u64 {
    let (status, body) = s.get_json(&format!("/api/v1/series?match={}", urlencode(selector))).await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap()
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn three_formats_round_trip_exactly_and_survive_restart() {
    let mut s = TestServer::start();
    let t = base_ms();
    let lp = format!(
        "cpu,host=a usage=0.1,idle=99.9 {}\ncpu,host=a usage=-0.0 {}\ncpu,host=b usage=1e-300 {}\n",
        t * 1_000_000,
        (t + 1000) * 1_000_000,
        t * 1_000_000
    );
    assert_eq!(s.post("/write", lp).await.status(), 204);
    // 986452993.9553671 is one serde_json parses a bit off without `float_roundtrip`.
    let import = format!(
        r#"{{"metric":{{"__name__":"mem_used","host":"a"}},"values":[1.7976931348623157e308,5e-324,986452993.9553671],"timestamps":[{t},{},{}]}}"#,
        t + 5,
        t + 6
    );
    assert_eq!(s.post("/api/v1/import", import).await.status(), 204);
    let ingest = format!(
        r#"[{{"name":"lat_ms","labels":{{"route":"/x"}},"timestamp":{t},"value":12.345678901234567}}]"#
    );
    let r = s.post("/api/v1/ingest", ingest).await;
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ack["points"], 1);
    assert_eq!(ack["new_series"], 1);

    check_formats(&s, t).await;
    s.restart();
    check_formats(&s, t).await; // replayed from the WAL
    s.seal();
    check_formats(&s, t).await; // read from chunks
    s.restart();
    check_formats(&s, t).await;
}

async fn check_formats(s: &TestServer, t: i64) {
    let range = format!("start={}&end={}", t - 1, t + 10_000);
    let cpu = s.points(&format!("query=cpu_usage{{host=\"a\"}}&{range}")).await;
    assert_eq!(cpu.len(), 1);
    assert_eq!(cpu[0].1[0], (t, 0.1));
    assert_eq!(cpu[0].1[1].1.to_bits(), (-0.0f64).to_bits());
    let all = s.points(&format!("query=cpu_usage&{range}")).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].1, vec![(t, 1e-300)]);
    let mem = s.points(&format!("query=mem_used&{range}")).await;
    assert_eq!(mem[0].1, vec![(t, f64::MAX), (t + 5, 5e-324), (t + 6, 986452993.9553671)]);
    let lat = s.points(&format!("query=lat_ms{{route=\"/x\"}}&{range}")).await;
    assert_eq!(lat[0].1, vec![(t, 12.345678901234567)]);
}
/// Regression: the catalog's hash index was not loaded on start, so a restarted daemon gave a
/// known series a second id and queries saw only the points written after the restart.
#[tokio::test]
async fn writes_after_restart_extend_the_same_series() {
    let mut s = TestServer::start();
    let t = base_ms();
    s.post("/write?precision=ms", format!("r,h=a v=1 {t}")).await;
    s.restart();
    s.post("/write?precision=ms", format!("r,h=a v=2 {}", t + 1)).await;
    assert_eq!(series_count(&s, "r_v").await, 1);
    let pts = s.points(&format!("query=r_v&start={t}&end={}", t + 1)).await;
    assert_eq!(pts[0].1, vec![(t, 1.0), (t + 1, 2.0)]);
}

#[tokio::test]
async fn gzip_bodies_and_queued_acks() {
    let s = TestServer::start();
    let t = base_ms();
    let body = gzip(format!("g v=1 {t}\ng v=2 {}\n", t + 1).as_bytes());
    let r = s
        .client
        .post(s.url("/write?precision=ms&db=telegraf&rp=autogen"))
        .header("Content-Encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .post(s.url("/write?precision=ms&ack=queued"))
        .body(format!("g v=3 {}", t + 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    s.flush();
    let pts = s.points(&format!("query=g_v&start={t}&end={}", t + 10)).await;
    assert_eq!(pts[0].1, vec![(t, 1.0), (t + 1, 2.0), (t + 2, 3.0)]);
}

#[tokio::test]
async fn every_bad_input_is_a_json_4xx_and_writes_nothing() {
    let s = TestServer::start_with(|c| {
        c.http.max_body_bytes = 64 * 1024;
        c.storage.max_series = 3;
    });
    let t = base_ms();
    let labels31: String = (0..31).map(|i| format!(",l{i}=v")).collect();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/write?precision=ms", format!("ok v=1 {t}\nok v=NaN {t}"), 400, "invalid_input"),
        ("/write?precision=ms", format!("ok v=1 {t}\nok v=inf {t}"), 400, "invalid_input"),
        ("/write?precision=ms", format!("ok v=1 {t}\n1bad v=1 {t}"), 400, "invalid_input"),
        ("/write?precision=ms", format!("ok{labels31} v=1 {t}"), 400, "invalid_input"),
        ("/write?precision=ms", format!("ok v=1 {}", t - 40 * 86_400_000), 400, "invalid_input"),
        ("/write?precision=ms", format!("ok v=1 {}", t + 3 * 86_400_000), 400, "invalid_input"),
        ("/write?precision=ms", format!("ok,__name__=x v=1 {t}"), 400, "invalid_input"),
        ("/write?precision=ms", "ok v=1 12abc".into(), 400, "invalid_input"),
        ("/write?precision=weeks", format!("ok v=1 {t}"), 400, "invalid_input"),
        ("/write?ack=maybe", format!("ok v=1 {t}"), 400, "invalid_input"),
        ("/write", "ok v=\u{0}1".into(), 400, "invalid_input"),
        ("/api/v1/import", "{not json".into(), 400, "invalid_input"),
        (
            "/api/v1/import",
            r#"{"metric":{"__name__":"ok"},"values":[1,2],"timestamps":[1]}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "/api/v1/ingest",
            format!(r#"[{{"name":"ok","value":1,"timestamp":{t}}},{{"name":"ok","value":"x"}}]"#),
            400,
            "invalid_input",
        ),
        ("/api/v1/ingest", r#"[{"name":"ok","value":1e999}]"#.into(), 400, "invalid_input"),
        ("/api/v1/ingest", r#"[{"name":"ok","labels":{"a":"\n"},"value":1}]"#.into(), 400, "invalid_input"),
        ("/write?precision=ms", "x v=1\n".repeat(20_000), 413, "payload_too_large"),
        ("/write?precision=ms", format!("a v=1 {t}\nb v=1 {t}\nc v=1 {t}\nd v=1 {t}"), 422, "series_limit"),
    ];
    for (path, body, status, code) in cases {
        let msg = expect_error(s.post(path, body.clone()).await, status, code).await;
        assert!(!msg.is_empty(), "{path} {body:.60}");
    }
    // A gzip bomb: 64 KiB limit, 10 MiB of zeros compressed to ~10 KiB.
    let bomb = gzip(&vec![b'0'; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let r =
        s.client.post(s.url("/write")).header("Content-Encoding", "gzip").body(bomb).send().await.unwrap();
    expect_error(r, 413, "payload_too_large").await;
    s.flush();
    for name in ["ok_v", "a_v", "x_v"] {
        assert_eq!(series_count(&s, name).await, 0, "{name} must not exist");
    }
    // The error names the failing line.
    let msg = expect_error(
        s.post("/write?precision=ms", format!("ok v=1 {t}\nok v=NaN {t}")).await,
        400,
        "invalid_input",
    )
    .await;
    assert!(msg.contains("line 2"), "{msg}");
    // A 40 KiB bad name is quoted, not echoed whole.
    let long = "9".repeat(40 * 1024);
    let msg =
        expect_error(s.post("/write?precision=ms", format!("{long} v=1 {t}")).await, 400, "invalid_input")
            .await;
    assert!(msg.len() < 300 && msg.contains("must match"), "{} bytes: {msg:.200}", msg.len());
    // Within the cap still works.
    assert_eq!(s.post("/write?precision=ms", format!("a v=1 {t}\nb v=1 {t}\nc v=1 {t}")).await.status(), 204);
    expect_error(s.post("/write?precision=ms", format!("d v=1 {t}")).await, 422, "series_limit").await;
    assert_eq!(s.post("/write?precision=ms", format!("a v=2 {}", t + 1)).await.status(), 204);
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after_and_loses_nothing_accepted() {
    let s = TestServer::start_with(|c| {
        c.writer.queue_capacity = 2;
        c.writer.max_queued_points = 1;
    });
    let t = base_ms();
    s.flush(); // the sampler's first reading is committed, so the queue starts empty
    let pause = s.daemon().writer.pause().unwrap();
    let r = s.post("/write?precision=ms&ack=queued", format!("q v=1 {t}")).await;
    assert_eq!(r.status(), 202);
    let r = s.post("/write?precision=ms&ack=queued", format!("q v=2 {}", t + 1)).await;
    assert_eq!(r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()), Some("1".into()));
    expect_error(r, 503, "overloaded").await;
    drop(pause);
    s.flush();
    let pts = s.points(&format!("query=q_v&start={t}&end={}", t + 10)).await;
    assert_eq!(pts[0].1, vec![(t, 1.0)]);
    let (_, q) = s.get_json("/api/v1/metrics/queue").await;
    assert_eq!(q["writer"]["rejected_full"], 1);
}

#[tokio::test]
async fn unknown_routes_and_bad_params_are_json_errors() {
    let s = TestServer::start();
    expect_error(s.client.get(s.url("/nope")).send().await.unwrap(), 404, "not_found").await;
    expect_error(s.client.get(s.url("/api/v1/series")).send().await.unwrap(), 400, "invalid_input").await;
    let (status, body) = s.get_json("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}
