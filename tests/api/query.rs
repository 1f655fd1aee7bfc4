//! Queries through the real server: selectors, raw and aggregated reads over open and sealed
//! hours, late points, export → import, limits and bad parameters.

use crate::helpers::{TestServer, base_ms, expect_error};
use crate::ingest::urlencode;

/// 2 series × 3 hours of points every 10 s with two decimals; returns them per series.
async fn load(s: &TestServer, t0: i64) -> Vec<Vec<(i64, f64)>> {
    let mut all = vec![Vec::new(), Vec::new()];
    let mut body = String::new();
    for i in 0..(3 * 360) {
        let ts = t0 + i * 10_000;
        for (h, pts) in all.iter_mut().enumerate() {
            let v = ((i * 37 + h as i64 * 11) % 1000) as f64 / 100.0;
            pts.push((ts, v));
            body.push_str(&format!("svc,host=h{h} lat={v:?} {ts}\n"));
        }
    }
    assert_eq!(s.post("/write?precision=ms", body).await.status(), 204);
    all
}

pub(crate) fn agg(points: &[(i64, f64)], step: i64, f: &str) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, Vec<(i64, f64)>)> = Vec::new();
    for &(t, v) in points {
        let b = t - t.rem_euclid(step);
        match out.last_mut() {
            Some((bb, ps)) if *bb == b => ps.push((t, v)),
            _ => out.push((b, vec![(t, v)])),
        }
    }
    out.into_iter()
        .filter_map(|(b, ps)| {
            let vs: Vec<f64> = ps.iter().map(|p| p.1).collect();
            let (first, last) = (ps[0], ps[ps.len() - 1]);
            let v = match f {
                "sum" => vs.iter().sum(),
                "avg" => vs.iter().sum::<f64>() / vs.len() as f64,
                "min" => vs.iter().cloned().fold(f64::INFINITY, f64::min),
                "max" => vs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                "count" => vs.len() as f64,
                "first" => first.1,
                // A drop is a counter reset: the value after it is all increase.
                "rate" if last.0 > first.0 => {
                    let grew: f64 =
                        vs.windows(2).map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] }).sum();
                    grew / ((last.0 - first.0) as f64 / 1000.0)
                }
                "deriv" if last.0 > first.0 => (last.1 - first.1) / ((last.0 - first.0) as f64 / 1000.0),
                "rate" | "deriv" => return None, // one timestamp: no rate, no point
                _ => last.1,
            };
            Some((b, v))
        })
        .collect()
}

pub(crate) fn close(a: &[(i64, f64)], b: &[(i64, f64)]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() <= 1e-9 * y.1.abs().max(1.0), "{x:?} vs {y:?}");
    }
}

#[tokio::test]
async fn aggregates_match_raw_over_open_and_sealed_hours() {
    let s = TestServer::start();
    let t0 = base_ms() - 3_600_000;
    let data = load(&s, t0).await;
    let end = t0 + 3 * 3_600_000 - 1;
    for sealed in [false, true] {
        if sealed {
            s.seal();
        }
        let raw = s.points(&format!("query=svc_lat{{host=\"h1\"}}&start={t0}&end={end}")).await;
        assert_eq!(raw[0].1, data[1]);
        for f in ["avg", "min", "max", "sum", "count", "first", "last", "rate", "deriv"] {
            for step in [3_600_000i64, 7_200_000, 60_000, 1_000_000] {
                let got = s
                    .points(&format!("query=svc_lat{{host=\"h0\"}}&start={t0}&end={end}&step={step}&agg={f}"))
                    .await;
                close(&got[0].1, &agg(&data[0], step, f));
            }
        }
        // A range that cuts hours: partial hours are decoded, not taken from headers.
        let (a, b) = (t0 + 1_800_000, t0 + 9_000_000);
        let inside: Vec<_> = data[0].iter().copied().filter(|p| p.0 >= a && p.0 <= b).collect();
        let got = s.points(&format!("query=svc_lat{{host=\"h0\"}}&start={a}&end={b}&step=1h&agg=sum")).await;
        close(&got[0].1, &agg(&inside, 3_600_000, "sum"));
        // A rate needs two timestamps in a bucket: with one point per bucket there is none.
        let got =
            s.points(&format!("query=svc_lat{{host=\"h0\"}}&start={t0}&end={end}&step=10s&agg=rate")).await;
        assert!(got.is_empty(), "{got:?}");
    }
}

/// Regression: a rate took a bucket's first and last values only, so a counter reset inside the
/// bucket (perfd's own counts since start reset at every restart) came out as a negative rate,
/// over raw points and over whole sealed hours alike. A counter without a reset still takes
/// its sealed hours' rate from their headers.
#[tokio::test]
async fn a_counter_reset_is_not_a_negative_rate() {
    let s = TestServer::start();
    let t = base_ms() - base_ms().rem_euclid(3_600_000) - 3_600_000;
    let values = [0.0, 10.0, 20.0, 3.0, 13.0]; // reset after 20
    let lines: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("c v={v} {t}\nd v={} {t}\n", i * 10, t = t + i as i64 * 1000))
        .collect();
    s.post("/write?precision=ms", lines).await;
    for sealed in [false, true] {
        if sealed {
            s.seal();
        }
        let q = |agg: &str| format!("query=c_v&start={t}&end={}&step=1h&agg={agg}", t + 3_599_999);
        assert_eq!(s.points(&q("rate")).await[0].1, vec![(t, 33.0 / 4.0)], "sealed: {sealed}");
        assert_eq!(s.points(&q("deriv")).await[0].1, vec![(t, 13.0 / 4.0)], "sealed: {sealed}");
        // No reset: sealed, its rate comes from the chunk's header.
        let q = format!("query=d_v&start={t}&end={}&step=1h&agg=rate", t + 3_599_999);
        assert_eq!(s.points(&q).await[0].1, vec![(t, 10.0)], "sealed: {sealed}");
    }
}

/// What alert thresholds read: one summary per series over a window, from chunk headers for
/// the whole sealed hours inside it; it must equal the summary of the raw points, for windows
/// that cut hours and windows that hold whole ones, open and sealed.
#[tokio::test]
async fn window_summaries_match_raw_over_open_and_sealed_hours() {
    use perfd::query::{Selector, Summary, read_windows};
    let s = TestServer::start();
    let t0 = base_ms() - 3_600_000;
    let data = load(&s, t0).await;
    let selector = Selector::parse("svc_lat").unwrap();
    for sealed in [false, true] {
        if sealed {
            s.seal();
        }
        let (h, end) = (3_600_000, t0 + 3 * 3_600_000);
        let windows = [(t0, end), (t0 + 1_800_000, t0 + 9_000_000), (t0 - h, t0 + h - 1), (t0 + 5, t0 + 5)];
        for ((a, b), increase) in windows.into_iter().flat_map(|w| [(w, false), (w, true)]) {
            let got = read_windows(&s.daemon().store, &selector, (a, b), increase).unwrap();
            let want: Vec<Summary> = data
                .iter()
                .filter_map(|pts| {
                    Summary::of(&pts.iter().copied().filter(|p| p.0 >= a && p.0 <= b).collect::<Vec<_>>())
                })
                .collect();
            assert_eq!(got.len(), want.len(), "[{a}, {b}] sealed: {sealed}");
            for ((key, g), w) in got.iter().zip(&want) {
                assert!((g.sum - w.sum).abs() < 1e-6, "{key:?} [{a}, {b}]: {} vs {}", g.sum, w.sum);
                if increase {
                    // Every point decoded: the increase across resets, for a rate.
                    let (gi, wi) = (g.increase.unwrap(), w.increase.unwrap());
                    assert!((gi - wi).abs() < 1e-6, "{key:?} [{a}, {b}]: increase {gi} vs {wi}");
                }
                let g = Summary { sum: w.sum, increase: w.increase, ..*g };
                assert_eq!(g, *w, "{key:?} [{a}, {b}] sealed: {sealed}");
            }
        }
    }
}

#[tokio::test]
async fn late_points_merge_into_sealed_hours_last_write_wins() {
    let s = TestServer::start();
    let t = base_ms();
    s.post("/write?precision=ms", format!("m v=1 {t}\nm v=2 {}", t + 1000)).await;
    s.seal();
    s.post("/write?precision=ms", format!("m v=20 {}\nm v=1.5 {}", t + 1000, t + 500)).await;
    let want = vec![(t, 1.0), (t + 500, 1.5), (t + 1000, 20.0)];
    let q = format!("query=m_v&start={t}&end={}", t + 2000);
    assert_eq!(s.points(&q).await[0].1, want); // chunk + open points merged on read
    s.seal();
    assert_eq!(s.points(&q).await[0].1, want); // merged into the chunk
}

#[tokio::test]
async fn selectors_series_and_times() {
    let s = TestServer::start();
    let t = base_ms();
    s.post(
        "/write?precision=ms",
        format!("up,job=a,env=prod v=1 {t}\nup,job=b,env=dev v=2 {t}\nup v=3 {t}\nupx v=4 {t}"),
    )
    .await;
    let (_, body) = s.get_json(&format!("/api/v1/series?match={}", urlencode("up_v"))).await;
    assert_eq!(body["count"], 3);
    let listed: Vec<String> = body["series"].as_array().unwrap().iter().map(|e| e.to_string()).collect();
    let want = [r#"{"labels":{},"name":"up_v"}"#, r#"{"labels":{"env":"dev","job":"b"},"name":"up_v"}"#];
    for w in want {
        assert!(listed.contains(&w.to_string()), "{w} not in {listed:?}");
    }
    let (_, body) = s.get_json(&format!("/api/v1/series?match={}", urlencode(r#"up_v{env!="prod"}"#))).await;
    assert_eq!(body["count"], 2);
    let q = |sel: &str| format!("query={}&start={t}&end={}", urlencode(sel), t + 1);
    let got = s.points(&q(r#"up_v{job="b"}"#)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["env"], "dev");
    assert_eq!(s.points(&q("upx_v")).await.len(), 1);
    // RFC 3339 times.
    let start =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t as u64));
    let got = s.points(&format!("query=up_v&start={}&end={}", urlencode(&start.to_string()), t)).await;
    assert_eq!(got.len(), 3);
    // Times relative to now (the points are 2 to 3 hours old).
    assert_eq!(s.points("query=up_v&start=-3h").await.len(), 3);
    assert_eq!(s.points("query=up_v&start=now-3h&end=now").await.len(), 3);
    assert!(s.points("query=up_v&start=-2h&end=%2B1h").await.iter().all(|(_, p)| p.is_empty()));
    for bad in [
        "query=up_v&start=now-".to_string(),
        "query=up_v{job=a}".to_string(),
        format!("query=up_v&start={}&end={t}", t + 5),
        "query=up_v&start=yesterday".into(),
        "query=up_v&step=-5".into(),
        "query=up_v&step=1m&agg=median".into(),
    ] {
        let r = s.client.get(s.url(&format!("/api/v1/query_range?{bad}"))).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
}

/// Prometheus' selector forms: `=~` and `!~` (whole value), a name given as `__name__`, no name
/// at all, and `match[]` as Prometheus and VictoriaMetrics clients send it; label names and
/// values.
#[tokio::test]
async fn regex_and_name_less_selectors_labels_and_match_brackets() {
    let s = TestServer::start();
    let t = base_ms();
    let lines = format!(
        "rq,route=/api/v1/cache,m=GET v=1 {t}\nrq,route=/api/v1/write,m=POST v=2 {t}\nrq v=3 {t}\nrqx,m=GET v=4 {t}\nother,m=GET v=5 {t}"
    );
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    let names = |body: &serde_json::Value| -> Vec<String> {
        let series = body["series"].as_array().cloned().unwrap_or_default();
        series.iter().map(|e| format!("{}{}", e["name"].as_str().unwrap_or(""), e["labels"])).collect()
    };
    for (sel, want) in [
        (r#"rq_v{route=~"/api/v1/c.*"}"#, vec![r#"rq_v{"m":"GET","route":"/api/v1/cache"}"#]),
        (r#"rq_v{route=~"cache"}"#, vec![]),
        (r#"rq_v{route!~"/api/v1/c.*"}"#, vec![r#"rq_v{}"#, r#"rq_v{"m":"POST","route":"/api/v1/write"}"#]),
        (r#"rq_v{route=~".+", m=~"GET|PUT"}"#, vec![r#"rq_v{"m":"GET","route":"/api/v1/cache"}"#]),
        (
            r#"{__name__=~"rqx?_v", m="GET"}"#,
            vec![r#"rq_v{"m":"GET","route":"/api/v1/cache"}"#, r#"rqx_v{"m":"GET"}"#],
        ),
        (r#"{__name__="rqx_v"}"#, vec![r#"rqx_v{"m":"GET"}"#]),
        (
            r#"{m="GET"}"#,
            vec![
                r#"other_v{"m":"GET"}"#,
                r#"rq_v{"m":"GET","route":"/api/v1/cache"}"#,
                r#"rqx_v{"m":"GET"}"#,
            ],
        ),
    ] {
        let (status, body) = s.get_json(&format!("/api/v1/series?match[]={}", urlencode(sel))).await;
        assert_eq!(status, 200, "{sel}: {body}");
        assert_eq!(names(&body), want, "{sel}");
        let (status, body) =
            s.get_json(&format!("/api/v1/query_range?query={}&start={t}&end={t}", urlencode(sel))).await;
        assert_eq!(status, 200, "{sel}: {body}");
        assert_eq!(names(&body), want, "query_range {sel}");
    }
    // Label names and values, of every series or of those a selector matches.
    let (_, body) = s.get_json("/api/v1/labels").await;
    let all: Vec<&str> = body["labels"].as_array().unwrap().iter().filter_map(|l| l.as_str()).collect();
    assert!(all.is_sorted() && ["__name__", "m", "route", "mount"].iter().all(|l| all.contains(l)), "{body}");
    let (_, body) = s.get_json(&format!("/api/v1/labels?match={}", urlencode("rqx_v"))).await;
    assert_eq!(body["labels"], serde_json::json!(["__name__", "m"]));
    let (_, body) = s.get_json("/api/v1/label/m/values").await;
    assert_eq!(body["values"], serde_json::json!(["GET", "POST"]));
    let (_, body) =
        s.get_json(&format!("/api/v1/label/m/values?match[]={}", urlencode("{route=~\".+\"}"))).await;
    assert_eq!(body["values"], serde_json::json!(["GET", "POST"]));
    let (_, body) =
        s.get_json(&format!("/api/v1/label/__name__/values?match={}", urlencode("{m=\"GET\"}"))).await;
    assert_eq!(
        (body["count"].as_u64(), &body["values"]),
        (Some(3), &serde_json::json!(["other_v", "rq_v", "rqx_v"]))
    );
    let (_, body) = s.get_json("/api/v1/label/nope/values").await;
    assert_eq!(body["values"], serde_json::json!([]));
    // limit: the first ones, with the whole count and whether some were left out.
    let (_, body) = s.get_json("/api/v1/label/m/values?limit=1").await;
    assert_eq!(
        (&body["values"], body["count"].as_u64(), &body["truncated"]),
        (&serde_json::json!(["GET"]), Some(2), &serde_json::json!(true))
    );
    let (_, body) = s.get_json(&format!("/api/v1/series?match={}&limit=2", urlencode("{m=~\".+\"}"))).await;
    assert_eq!(
        (body["series"].as_array().map(Vec::len), body["count"].as_u64()),
        (Some(2), Some(4)),
        "{body}"
    );
    assert_eq!(body["truncated"], true);
    let (_, body) = s.get_json("/api/v1/labels?match=rqx_v&limit=5").await;
    assert_eq!(body["truncated"], false);
    for bad in [
        "/api/v1/label/__x/values",
        "/api/v1/label/1a/values",
        "/api/v1/labels?match=%7B%7D",
        "/api/v1/labels?limit=0",
        "/api/v1/series?match=rq_v&limit=-1",
    ] {
        expect_error(s.client.get(s.url(bad)).send().await.unwrap(), 400, "invalid_input").await;
    }
    let url =
        s.url(&format!("/api/v1/export?match[]={}&start={t}&end={t}", urlencode(r#"{__name__=~"rqx?_v"}"#)));
    let export = s.client.get(url).send().await.unwrap().text().await.unwrap();
    assert_eq!(export.lines().count(), 4, "{export}");
    for (bad, says) in [
        ("/api/v1/series", "missing match="),
        ("/api/v1/export", "missing match="),
        ("/api/v1/query_range", "missing query="),
        ("/api/v1/series?match={}", "at least one matcher must not match the empty value"),
        (
            "/api/v1/series?match=%7Bm%21%3D%22GET%22%7D",
            "at least one matcher must not match the empty value",
        ),
        ("/api/v1/series?match=rq_v%7Broute%3D~%22(%22%7D", "invalid regex \"(\""),
        ("/api/v1/series?match=rq_v%7B__name__%3D%22rq_v%22%7D", "the metric name is given twice"),
        ("/api/v1/series?match=rq_v%7Broute~%22a%22%7D", "label=~\"regex\""),
    ] {
        let r = s.client.get(s.url(bad)).send().await.unwrap();
        let message = expect_error(r, 400, "invalid_input").await;
        assert!(message.contains(says), "{bad}: {message}");
    }
}

/// `group` and `by` combine each bucket across series, as PromQL's `sum by (route)`.
#[tokio::test]
async fn group_combines_series_per_bucket() {
    let s = TestServer::start();
    let t = base_ms();
    let lines = format!(
        "gq,route=/a,m=GET v=1 {t}\ngq,route=/a,m=GET v=2 {}\ngq,route=/a,m=PUT v=10 {t}\ngq,route=/b,m=GET v=5 {}",
        t + 10_000,
        t + 70_000
    );
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    let ask = |extra: &str| {
        format!("/api/v1/query_range?query=gq_v&start={t}&end={}&step=1m&agg=sum&{extra}", t + 119_999)
    };
    let got = |body: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        let series = body["series"].as_array().cloned().unwrap_or_default();
        series.iter().map(|x| (x["labels"].to_string(), x["points"].clone())).collect()
    };
    let (status, body) = s.get_json(&ask("group=sum&by=route")).await;
    assert_eq!(status, 200, "{body}");
    let want = [
        (r#"{"route":"/a"}"#.to_string(), serde_json::json!([[t, 13.0]])),
        (r#"{"route":"/b"}"#.to_string(), serde_json::json!([[t + 60_000, 5.0]])),
    ];
    assert_eq!(got(&body), want);
    assert_eq!(body["series"][0]["name"], "gq_v");
    let (_, body) = s.get_json(&ask("group=max")).await;
    assert_eq!(got(&body), [("{}".to_string(), serde_json::json!([[t, 10.0], [t + 60_000, 5.0]]))]);
    let (_, body) = s.get_json(&ask("group=count&by=m,__name__")).await;
    assert_eq!(
        got(&body),
        [
            (r#"{"m":"GET"}"#.to_string(), serde_json::json!([[t, 1.0], [t + 60_000, 1.0]])),
            (r#"{"m":"PUT"}"#.to_string(), serde_json::json!([[t, 1.0]])),
        ]
    );
    for (bad, says) in [
        (format!("/api/v1/query_range?query=gq_v&start={t}&group=sum"), "group needs step"),
        (ask("by=route"), "by needs group"),
        (ask("group=median"), "invalid group"),
        (ask("group=sum&by=__x"), "invalid label name"),
    ] {
        let message =
            expect_error(s.client.get(s.url(&bad)).send().await.unwrap(), 400, "invalid_input").await;
        assert!(message.contains(says), "{bad}: {message}");
    }
}

/// `GET /api/v1/query`: each series' newest value within the lookback, at a time, and groups.
#[tokio::test]
async fn instant_queries_take_each_series_newest_value() {
    let s = TestServer::start();
    let t = base_ms();
    let lines = format!(
        "iq,route=/a v=1 {t}\niq,route=/a v=2 {}\niq,route=/b v=5 {}\niq,route=/c v=9 {}",
        t + 60_000,
        t + 30_000,
        t - 3_600_000
    );
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    s.seal();
    let at = t + 120_000;
    let got = |body: &serde_json::Value| -> Vec<(String, f64, i64)> {
        let series = body["series"].as_array().cloned().unwrap_or_default();
        series
            .iter()
            .map(|x| (x["labels"].to_string(), x["value"].as_f64().unwrap(), x["at_ms"].as_i64().unwrap()))
            .collect()
    };
    let (status, body) = s.get_json(&format!("/api/v1/query?query=iq_v&time={at}")).await;
    assert_eq!((status, body["time"].as_i64()), (200, Some(at)), "{body}");
    let a = r#"{"route":"/a"}"#.to_string();
    let b = r#"{"route":"/b"}"#.to_string();
    assert_eq!(got(&body), [(a.clone(), 2.0, t + 60_000), (b.clone(), 5.0, t + 30_000)], "/c is too old");
    let (_, body) = s.get_json(&format!("/api/v1/query?query=iq_v&time={}", t + 45_000)).await;
    assert_eq!(got(&body), [(a, 1.0, t), (b, 5.0, t + 30_000)], "as it was then");
    let (_, body) = s.get_json(&format!("/api/v1/query?query=iq_v&time={at}&lookback=2h&group=sum")).await;
    assert_eq!(got(&body), [("{}".to_string(), 16.0, t + 60_000)]);
    let (_, body) = s.get_json("/api/v1/query?query=iq_v").await;
    assert_eq!(got(&body), [], "nothing in the last 5 minutes");
    for bad in ["/api/v1/query", "/api/v1/query?query=iq_v&lookback=0", "/api/v1/query?query=iq_v&by=route"] {
        expect_error(s.client.get(s.url(bad)).send().await.unwrap(), 400, "invalid_input").await;
    }
}

/// Deleting series frees room under `storage.max_series` and hides their points for good, sealed
/// or open, also across a restart (and a crash: `crash.rs`); a later write of the same key
/// starts a new series.
#[tokio::test]
async fn deleted_series_are_gone_free_the_cap_and_can_start_again() {
    // Four series at most: the sampler's own (more than four) are refused.
    let mut s = TestServer::start_with(|c| c.storage.max_series = 4);
    let t = base_ms();
    let write = async |s: &TestServer, lines: String| s.post("/write?precision=ms", lines).await;
    assert_eq!(write(&s, format!("burst,n=1 v=1 {t}\nkeep v=3 {t}")).await.status(), 204);
    s.seal();
    let lines = format!("burst,n=1 v=5 {}\nburst,n=2 v=2 {t}\nkeep v=4 {}", t + 1000, t + 1000);
    assert_eq!(write(&s, lines).await.status(), 204);
    let full = write(&s, format!("burst,n=3 v=1 {t}\nburst,n=4 v=1 {t}")).await;
    expect_error(full, 422, "series_limit").await;

    let r = s.client.post(s.url("/api/v1/admin/tsdb/delete_series?match[]=burst_v")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["deleted"], 2);
    let (_, body) = s.get_json("/api/v1/series?match=burst_v").await;
    assert_eq!(body["count"], 0, "{body}");
    let range = format!("query=burst_v&start={}&end={}", t - 1, t + 10_000);
    assert!(s.points(&range).await.is_empty());
    assert_eq!(write(&s, format!("burst,n=3 v=1 {t}\nburst,n=4 v=1 {t}")).await.status(), 204, "room again");
    let r =
        s.client.post(s.url("/api/v1/admin/tsdb/delete_series?match=%7Bn%3D~%223%7C4%22%7D")).send().await;
    assert_eq!(r.unwrap().json::<serde_json::Value>().await.unwrap()["deleted"], 2);

    assert_eq!(write(&s, format!("burst,n=1 v=9 {}", t + 2000)).await.status(), 204);
    let n1 = format!("query=burst_v%7Bn%3D%221%22%7D&start={}&end={}", t - 1, t + 10_000);
    let fresh = vec![(t + 2000, 9.0)];
    assert_eq!(s.points(&n1).await[0].1, fresh, "a new series: none of the old points");
    s.restart();
    assert_eq!(s.points(&n1).await[0].1, fresh, "still none of the old points after a restart");
    let keep = s.points(&format!("query=keep_v&start={}&end={}", t - 1, t + 10_000)).await;
    assert_eq!(keep[0].1, vec![(t, 3.0), (t + 1000, 4.0)], "other series keep every point");
    let (_, body) = s.get_json("/api/v1/series?match=burst_v").await;
    assert_eq!(body["count"], 1, "{body}");
    let r = s.client.post(s.url("/api/v1/admin/tsdb/delete_series")).send().await.unwrap();
    expect_error(r, 400, "invalid_input").await;
}

/// `GET /api/v1/status/tsdb` names what holds the most series: here a request id put in a label.
#[tokio::test]
async fn tsdb_status_finds_the_cardinality_accident() {
    let s = TestServer::start();
    let t = base_ms();
    let mut lines: String = (0..50).map(|id| format!("req,id={id},route=/a ms=1 {t}\n")).collect();
    lines += &format!("req,id=x,route=/b ms=1 {t}\nup v=1 {t}\n");
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    let (status, body) =
        s.get_json("/api/v1/status/tsdb?match=%7B__name__%3D~%22req_ms%7Cup_v%22%7D&limit=2").await;
    assert_eq!(status, 200, "{body}");
    let entry = |name: &str, value: usize| serde_json::json!({"name": name, "value": value});
    assert_eq!(body["series"], 52);
    assert_eq!(
        body["series_count_by_metric_name"],
        serde_json::json!([entry("req_ms", 51), entry("up_v", 1)])
    );
    assert_eq!(
        body["label_value_count_by_label_name"],
        serde_json::json!([entry("id", 51), entry("__name__", 2)])
    );
    assert_eq!(
        body["series_count_by_label_value_pair"],
        serde_json::json!([entry("route=/a", 50), entry("id=0", 1)])
    );
    let (_, all) = s.get_json("/api/v1/status/tsdb?topN=1000").await;
    assert!(all["series"].as_u64().unwrap() > 52, "the sampler's series too: {all}");
    for bad in ["limit=0", "limit=1001", "match=%7B", "top=3"] {
        let r = s.client.get(s.url(&format!("/api/v1/status/tsdb?{bad}"))).send().await.unwrap();
        expect_error(r, 400, "invalid_input").await;
    }
}

/// With `start` or `end`, `delete_series` removes only the points in that range, sealed or open,
/// and they stay gone after a restart (a WAL entry holding them is rewritten: the same requests
/// carried the other series' points); the series stays, and the other series keeps every point.
#[tokio::test]
async fn a_time_range_delete_removes_only_its_points() {
    let mut s = TestServer::start();
    let (t, now) = (base_ms(), perfd::model::now_ms());
    let mut want = std::collections::BTreeMap::new();
    let mut lines = String::new();
    let mut point = |lines: &mut String, ts: i64, v: f64| {
        lines.push_str(&format!("rd,k=a v={v} {ts}\nrd,k=b v={v} {ts}\n"));
        want.insert(ts, v);
    };
    for m in 0..120 {
        point(&mut lines, t + m * 60_000, m as f64);
    }
    assert_eq!(s.post("/write?precision=ms", std::mem::take(&mut lines)).await.status(), 204);
    s.seal();
    // One request for a closed hour and the open one, so its WAL entry stays for b's open hour.
    point(&mut lines, t + 90 * 60_000 + 30_000, 0.5);
    for ts in (t + 2 * 3_600_000..now).step_by(5_000) {
        point(&mut lines, ts, 7.0);
    }
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    let (from, to) = (t + 60 * 60_000, now);
    let url = format!("/api/v1/admin/tsdb/delete_series?match=rd_v%7Bk%3D%22a%22%7D&start={from}&end={to}");
    let answer: serde_json::Value = s.client.post(s.url(&url)).send().await.unwrap().json().await.unwrap();
    let gone = want.range(from..=to).count();
    assert_eq!(answer, serde_json::json!({"series": 1, "deleted_points": gone}));
    let all: Vec<(i64, f64)> = want.iter().map(|(t, v)| (*t, *v)).collect();
    let kept: Vec<(i64, f64)> = want.range(..from).map(|(t, v)| (*t, *v)).collect();
    let range = format!("start={t}&end={}", now + 1);
    for round in ["before", "after a restart"] {
        let a = s.points(&format!("query=rd_v%7Bk%3D%22a%22%7D&{range}")).await;
        assert_eq!(a[0].1, kept, "a {round}");
        let b = s.points(&format!("query=rd_v%7Bk%3D%22b%22%7D&{range}")).await;
        assert_eq!(b[0].1, all, "b {round}");
        s.restart();
    }
    let url = format!("/api/v1/admin/tsdb/delete_series?match=rd_v&start={}&end={}", now, now - 1);
    expect_error(s.client.post(s.url(&url)).send().await.unwrap(), 400, "invalid_input").await;
    let url = "/api/v1/admin/tsdb/delete_series?match=rd_v&from=0";
    expect_error(s.client.post(s.url(url)).send().await.unwrap(), 400, "invalid_input").await;
    let url = format!("/api/v1/admin/tsdb/delete_series?match=rd_v&end={}", t + 30 * 60_000);
    let answer: serde_json::Value = s.client.post(s.url(&url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer, serde_json::json!({"series": 2, "deleted_points": 2 * 31}), "open-ended");
}

/// The writer purges a deleted series' chunks from the blocks it shares while it runs: the
/// stored chunk bytes fall and `/metrics` counts the purged chunks.
#[tokio::test]
async fn a_deleted_series_chunks_are_purged_while_running() {
    let s = TestServer::start();
    let t = base_ms() - 20 * 3_600_000;
    let lines: String =
        (0..20 * 60).map(|m| format!("purged v={m}.5 {t}\nkept v={m} {t}\n", t = t + m * 60_000)).collect();
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    s.seal();
    let database = async || s.get_json("/api/v1/metrics/database").await.1;
    let before = database().await["database"]["chunk_bytes"].as_u64().unwrap();
    let r = s.client.post(s.url("/api/v1/admin/tsdb/delete_series?match=purged_v")).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["deleted"], 1);
    let mut polls = 0;
    let after = loop {
        let db = database().await;
        if db["writer"]["purge_pending_groups"] == 0 {
            break db;
        }
        polls += 1;
        assert!(polls < 500, "purge never ended: {db}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(after["writer"]["purged_chunks"], 20, "{after}");
    let bytes = after["database"]["chunk_bytes"].as_u64().unwrap();
    assert!(bytes < before * 2 / 3, "chunk bytes {before} -> {bytes}");
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("perfd_store_purged_chunks_total 20\n"), "{metrics}");
    assert!(metrics.contains("perfd_store_purge_pending_groups 0\n"), "{metrics}");
    let kept = s.points(&format!("query=kept_v&start={t}&end={}", t + 20 * 3_600_000)).await;
    assert_eq!(kept[0].1.len(), 20 * 60, "the other series of the blocks keep every point");
}

#[tokio::test]
async fn raw_answers_over_the_limit_are_422() {
    let s = TestServer::start_with(|c| c.query.max_points = 10);
    let t = base_ms();
    let body: String = (0..11).map(|i| format!("big v={i} {}\n", t + i)).collect();
    s.post("/write?precision=ms", body).await;
    let r = s
        .client
        .get(s.url(&format!("/api/v1/query_range?query=big_v&start={t}&end={}", t + 100)))
        .send()
        .await
        .unwrap();
    let msg = expect_error(r, 422, "too_many_points").await;
    assert!(msg.contains("step"), "{msg}");
    let got = s.points(&format!("query=big_v&start={t}&end={}&step=1h&agg=count", t + 100)).await;
    assert_eq!(got[0].1[0].1, 11.0);
}

#[tokio::test]
async fn export_is_importable_elsewhere() {
    let a = TestServer::start();
    let b = TestServer::start();
    let t = base_ms();
    let lines: String =
        (0..500).map(|i| format!("exp,k=v{} v={} {}\n", i % 3, i as f64 * 0.25, t + i * 997)).collect();
    a.post("/write?precision=ms", lines).await;
    a.seal();
    let range = format!("start={t}&end={}", t + 1_000_000);
    let export = a.client.get(a.url(&format!("/api/v1/export?match=exp_v&{range}"))).send().await.unwrap();
    assert_eq!(export.status(), 200);
    let body = export.text().await.unwrap();
    assert_eq!(body.lines().count(), 3);
    assert_eq!(b.post("/api/v1/import", body).await.status(), 204);
    let q = format!("query=exp_v&{range}");
    assert_eq!(a.points(&q).await, b.points(&q).await);
}

/// Regression: an export was built whole in memory and refused past `query.max_points` (422),
/// so the README's `export … start=0` of a real store failed. It is streamed now, with no
/// limit: here 220,000 points (two series, open and sealed hours; a line holds 10,000 points,
/// so each series takes 11 lines) against a limit of 1,000 raw points.
#[tokio::test]
async fn exports_stream_past_the_raw_point_limit() {
    let a = TestServer::start_with(|c| c.query.max_points = 1000);
    let b = TestServer::start();
    let t = base_ms();
    let mut want = [Vec::new(), Vec::new()];
    for part in 0..2 {
        let mut lines = String::new();
        for i in 0..110_000 {
            let ts = t + part * 11_000_000 + i * 100;
            want[(i % 2) as usize].push((ts, i as f64));
            lines.push_str(&format!("big,s=s{} v={i} {ts}\n", i % 2));
        }
        assert_eq!(a.post("/write?precision=ms", lines).await.status(), 204);
        if part == 0 {
            a.seal();
        }
    }
    let range = format!("start={t}&end={}", t + 22_000_000);
    let r = a.client.get(a.url(&format!("/api/v1/export?match=big_v&{range}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(body.lines().count(), 22, "11 lines a series");
    assert_eq!(b.post("/api/v1/import", body).await.status(), 204);
    for (n, want) in want.iter().enumerate() {
        let got = b.points(&format!("query=big_v{{s=\"s{n}\"}}&{range}")).await;
        assert!(got[0].1 == *want, "series s{n}: {} points, {} wanted", got[0].1.len(), want.len());
    }
    // The raw query still has its limit.
    let r = a.client.get(a.url(&format!("/api/v1/query_range?query=big_v&{range}"))).send().await.unwrap();
    expect_error(r, 422, "too_many_points").await;
}

/// More series than one aggregation chunk (1,024), created in the reverse of key order (so ids
/// and keys disagree), half of them sealed: every series answers once, in key order, with its
/// own values.
#[tokio::test]
async fn aggregates_over_many_series_answer_each_once_in_key_order() {
    let s = TestServer::start();
    let t = base_ms();
    let n = 1500;
    let lines: String = (0..n).rev().map(|i| format!("many,s=k{i:04} v={i} {t}\n")).collect();
    assert_eq!(s.post("/write?precision=ms", lines).await.status(), 204);
    s.seal();
    let later: String =
        (0..n).step_by(2).map(|i| format!("many,s=k{i:04} v={} {}\n", i + 1, t + 60_000)).collect();
    assert_eq!(s.post("/write?precision=ms", later).await.status(), 204);
    let got = s.points(&format!("query=many_v&start={t}&end={}&step=1h&agg=sum", t + 3_599_999)).await;
    assert_eq!(got.len(), n);
    for (i, (labels, points)) in got.iter().enumerate() {
        assert_eq!(labels["s"], format!("k{i:04}"), "key order");
        let want = if i % 2 == 0 { (2 * i + 1) as f64 } else { i as f64 };
        assert_eq!(points, &vec![(t, want)], "series {i}");
    }
}

/// Bounds at the ends of i64 read everything, raw, aggregated and exported, from open and
/// sealed hours. Before they were clamped, `start=i64::MIN` panicked in the read (a 500) and
/// `start=i64::MIN&end=i64::MAX` answered no series.
#[tokio::test]
async fn the_widest_bounds_read_everything() {
    let s = TestServer::start();
    let t = base_ms();
    s.post("/write?precision=ms", format!("m v=1 {t}\nm v=2 {}", t + 1000)).await;
    s.seal();
    s.post("/write?precision=ms", format!("m v=3 {}", t + 3_600_000)).await;
    let want = vec![(t, 1.0), (t + 1000, 2.0), (t + 3_600_000, 3.0)];
    let (min, max) = (i64::MIN, i64::MAX);
    for bounds in [
        format!("start={min}&end={max}"),
        format!("start={min}&end={}", t + 7_200_000),
        format!("start=0&end={max}"),
    ] {
        assert_eq!(s.points(&format!("query=m_v&{bounds}")).await[0].1, want, "{bounds}");
        // One bucket for everything; hour buckets over such a span are too many (a clear 422).
        let (status, v) =
            s.get_json(&format!("/api/v1/query_range?query=m_v&{bounds}&step={max}&agg=count")).await;
        assert_eq!(status, 200, "{bounds}: {v}");
        let counts: f64 =
            v["series"][0]["points"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).sum();
        assert_eq!(counts, 3.0, "{bounds}: {v}");
        let r = s
            .client
            .get(s.url(&format!("/api/v1/query_range?query=m_v&{bounds}&step=1h")))
            .send()
            .await
            .unwrap();
        expect_error(r, 422, "too_many_points").await;
        let r = s.client.get(s.url(&format!("/api/v1/export?match=m_v&{bounds}"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.contains("\"values\":[1.0,2.0,3.0]"), "{bounds}: {text}");
    }
}
