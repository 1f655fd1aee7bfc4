//! The store against a model (per series, a map of timestamp to value, last write wins), through
//! the real server: random batches of points over four hours (late ones, duplicates, decimal
//! and full-precision values) written with `/write` or `/api/v1/ingest`, with hours sealed in
//! between, must read back exactly (to the bit), raw and aggregated.

use crate::helpers::{TestServer, base_ms};
use crate::query::{agg, close};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::BTreeMap;

const SERIES: usize = 3;
const SPAN_MS: i64 = 4 * 3_600_000;

#[derive(Debug, Clone)]
enum Op {
    /// Points: series, milliseconds after the base hour, value; by `/write` (line protocol)
    /// or, when `json`, by `/api/v1/ingest`.
    Write(Vec<(usize, i64, f64)>, bool),
    Seal,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let value = prop_oneof![(-100_000i64..100_000).prop_map(|c| c as f64 / 100.0), -1e9f64..1e9, Just(0.0),];
    // Seconds, so that a batch often repeats a timestamp.
    let point = (0..SERIES, (0..SPAN_MS / 1000).prop_map(|s| s * 1000), value);
    let write = (prop::collection::vec(point, 1..30), any::<bool>()).prop_map(|(p, json)| Op::Write(p, json));
    let op = prop_oneof![4 => write, 1 => Just(Op::Seal)];
    prop::collection::vec(op, 1..12)
}

/// Runs `ops` on series named after `case`, then reads every series back.
async fn run(s: &TestServer, case: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let base = base_ms();
    let mut model: Vec<BTreeMap<i64, f64>> = vec![BTreeMap::new(); SERIES];
    for op in ops {
        match op {
            Op::Write(points, false) => {
                let mut body = String::new();
                for &(series, at, v) in points {
                    body += &format!("pm{case},h=s{series} v={v:?} {}\n", base + at);
                    model[series].insert(base + at, v);
                }
                let status = s.post("/write?precision=ms", body).await.status().as_u16();
                prop_assert_eq!(status, 204);
            }
            Op::Write(points, true) => {
                let body: Vec<serde_json::Value> = points
                    .iter()
                    .map(|&(series, at, v)| {
                        model[series].insert(base + at, v);
                        let labels = serde_json::json!({ "h": format!("s{series}") });
                        serde_json::json!({"name": format!("pm{case}_v"), "labels": labels, "timestamp": base + at, "value": v})
                    })
                    .collect();
                let (status, answer) = s.post_json("/api/v1/ingest", &serde_json::json!(body)).await;
                prop_assert_eq!(status, 200, "{}", answer);
            }
            Op::Seal => s.seal(),
        }
    }
    let end = base + SPAN_MS - 1;
    for (series, want) in model.iter().enumerate() {
        let q = format!("query=pm{case}_v{{h=\"s{series}\"}}&start={base}&end={end}");
        let got = s.points(&q).await;
        let want: Vec<(i64, f64)> = want.iter().map(|(&t, &v)| (t, v)).collect();
        let got = got.first().map(|(_, points)| points.clone()).unwrap_or_default();
        prop_assert_eq!(&got, &want, "series {} after {:?}", series, ops);
        for (f, step) in
            [("sum", 3_600_000), ("avg", 600_000), ("max", 7_200_000), ("count", 60_000), ("last", 1_800_000)]
        {
            let q = format!("query=pm{case}_v{{h=\"s{series}\"}}&start={base}&end={end}&step={step}&agg={f}");
            let got = s.points(&q).await.first().map(|(_, p)| p.clone()).unwrap_or_default();
            let want = agg(&want, step, f);
            prop_assert!(
                std::panic::catch_unwind(|| close(&got, &want)).is_ok(),
                "{} step {}: {:?} vs {:?}",
                f,
                step,
                got,
                want
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reads_back_what_a_model_says() {
    let s = TestServer::start();
    let handle = tokio::runtime::Handle::current();
    let case = std::cell::Cell::new(0);
    let config = Config { cases: 40, failure_persistence: None, ..Config::default() };
    let result = tokio::task::block_in_place(|| {
        TestRunner::new(config).run(&ops(), |ops| {
            case.set(case.get() + 1);
            handle.block_on(run(&s, case.get(), &ops))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
