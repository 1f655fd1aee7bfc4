//! The store against a model (per series, a map of timestamp to value, last write wins), through
//! the real server: random batches of points over four hours (late ones, duplicates, decimal
//! and full-precision values) written with `/write` or `/api/v1/ingest`, with hours sealed, the
//! daemon restarted, series deleted (and purged) and points deleted in between, must read back exactly (to the
//! bit), raw and aggregated, over the whole span and over ranges that cut hours, in an export,
//! and from a backup restored elsewhere.

use crate::helpers::{TestServer, base_ms, property};
use crate::query::{agg, close};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::cell::RefCell;
use std::collections::BTreeMap;

const SERIES: usize = 3;
const SPAN_MS: i64 = 4 * 3_600_000;
const AGGS: &[&str] = &["avg", "min", "max", "sum", "count", "first", "last", "rate", "deriv"];
const STEPS: &[i64] = &[1000, 61_000, 420_000, 3_600_000, 5_400_000, 7_200_000];

#[derive(Debug, Clone)]
enum Op {
    /// Points: series, milliseconds after the base hour, value; by `/write` (line protocol)
    /// or, when `json`, by `/api/v1/ingest`.
    Write(Vec<(usize, i64, f64)>, bool),
    Seal,
    /// Stop and start on the same data dir: the WAL is replayed.
    Restart,
    /// Delete a series (a later write starts it anew); when `settle`, wait until the writer has
    /// purged its chunks from the blocks it shares (else reads race the purge).
    Delete(usize, bool),
    /// Delete a series' points from and to these times (ms after the base hour, inclusive).
    DeletePoints(usize, i64, i64),
}

/// A read to check at the end: from and to (ms after the base hour), step and aggregation.
type Read = (i64, i64, i64, &'static str);

fn ops() -> impl Strategy<Value = (Vec<Op>, Read, bool)> {
    let value = prop_oneof![(-100_000i64..100_000).prop_map(|c| c as f64 / 100.0), -1e9f64..1e9, Just(0.0),];
    // Seconds, so that a batch often repeats a timestamp.
    let point = (0..SERIES, (0..SPAN_MS / 1000).prop_map(|s| s * 1000), value);
    let write = (prop::collection::vec(point, 1..30), any::<bool>()).prop_map(|(p, json)| Op::Write(p, json));
    let delete = (0..SERIES, any::<bool>()).prop_map(|(series, settle)| Op::Delete(series, settle));
    let range =
        (0..SERIES, 0..SPAN_MS, 0..SPAN_MS).prop_map(|(n, a, b)| Op::DeletePoints(n, a.min(b), a.max(b)));
    let op = prop_oneof![8 => write, 2 => Just(Op::Seal), 1 => Just(Op::Restart), 1 => delete, 1 => range];
    let read = (0..SPAN_MS, 0..SPAN_MS, prop::sample::select(STEPS), prop::sample::select(AGGS))
        .prop_map(|(a, b, step, f)| (a.min(b), a.max(b), step, f));
    // Whether to back up at the end, restore elsewhere and read the copy too.
    let copy = prop::bool::weighted(0.25);
    (prop::collection::vec(op, 1..12), read, copy)
}

/// The points of the first series a query answers (none: empty).
async fn points(s: &TestServer, query: &str) -> Vec<(i64, f64)> {
    s.points(query).await.first().map(|(_, p)| p.clone()).unwrap_or_default()
}

/// Runs `ops` on series named after `case`, then reads every series back.
async fn run(s: &mut TestServer, case: u32, ops: &[Op], read: Read, copy: bool) -> Result<(), TestCaseError> {
    let base = base_ms();
    let mut model: Vec<BTreeMap<i64, f64>> = vec![BTreeMap::new(); SERIES];
    // Whether each series exists: written, and not deleted since (deleting points keeps it).
    let mut exists = [false; SERIES];
    for op in ops {
        match op {
            Op::Write(points, false) => {
                let mut body = String::new();
                for &(series, at, v) in points {
                    body += &format!("pm{case},h=s{series} v={v:?} {}\n", base + at);
                    model[series].insert(base + at, v);
                    exists[series] = true;
                }
                let status = s.post("/write?precision=ms", body).await.status().as_u16();
                prop_assert_eq!(status, 204);
            }
            Op::Write(points, true) => {
                let body: Vec<serde_json::Value> = points
                    .iter()
                    .map(|&(series, at, v)| {
                        model[series].insert(base + at, v);
                        exists[series] = true;
                        let labels = serde_json::json!({ "h": format!("s{series}") });
                        serde_json::json!({"name": format!("pm{case}_v"), "labels": labels, "timestamp": base + at, "value": v})
                    })
                    .collect();
                let (status, answer) = s.post_json("/api/v1/ingest", &serde_json::json!(body)).await;
                prop_assert_eq!(status, 200, "{}", answer);
            }
            Op::Seal => s.seal(),
            Op::Restart => s.restart(),
            &Op::Delete(series, settle) => {
                let selector = format!("pm{case}_v%7Bh%3D%22s{series}%22%7D");
                let url = s.url(&format!("/api/v1/admin/tsdb/delete_series?match={selector}"));
                let r = s.client.post(url).send().await.expect("delete");
                let answer: serde_json::Value = r.json().await.expect("a JSON answer");
                prop_assert_eq!(&answer["deleted"], &serde_json::json!(exists[series] as u8));
                model[series].clear();
                exists[series] = false;
                if settle {
                    purged(s).await?;
                }
            }
            &Op::DeletePoints(series, from, to) => {
                let (from, to) = (base + from, base + to);
                let selector = format!("pm{case}_v%7Bh%3D%22s{series}%22%7D&start={from}&end={to}");
                let url = s.url(&format!("/api/v1/admin/tsdb/delete_series?match={selector}"));
                let r = s.client.post(url).send().await.expect("delete");
                let answer: serde_json::Value = r.json().await.expect("a JSON answer");
                let gone = model[series].range(from..=to).count();
                let want = serde_json::json!({"series": exists[series] as u8, "deleted_points": gone});
                prop_assert_eq!(&answer, &want, "{:?}", op);
                model[series].retain(|t, _| *t < from || *t > to);
            }
        }
    }
    let s = &*s;
    let (from, to, step, f) = (base + read.0, base + read.1, read.2, read.3);
    for (series, model) in model.iter().enumerate() {
        let selector = format!("query=pm{case}_v{{h=\"s{series}\"}}");
        let all: Vec<(i64, f64)> = model.iter().map(|(&t, &v)| (t, v)).collect();
        let got = points(s, &format!("{selector}&start={base}&end={}", base + SPAN_MS - 1)).await;
        prop_assert_eq!(&got, &all, "series {} after {:?}", series, ops);
        let inside: Vec<(i64, f64)> = all.iter().copied().filter(|p| p.0 >= from && p.0 <= to).collect();
        let got = points(s, &format!("{selector}&start={from}&end={to}")).await;
        prop_assert_eq!(&got, &inside, "series {} from {} to {}", series, from, to);
        // Export: one JSON line a series, its values and timestamps the model's.
        let url = s.url(&format!(
            "/api/v1/export?match=pm{case}_v{{h=\"s{series}\"}}&start={base}&end={}",
            base + SPAN_MS - 1
        ));
        let export = s.client.get(url).send().await.expect("export").text().await.expect("text");
        let lines: Vec<serde_json::Value> =
            export.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        let exported: Vec<(i64, f64)> = lines
            .iter()
            .flat_map(|l| {
                let ts: Vec<i64> = serde_json::from_value(l["timestamps"].clone()).expect("timestamps");
                let vs: Vec<f64> = serde_json::from_value(l["values"].clone()).expect("values");
                ts.into_iter().zip(vs)
            })
            .collect();
        prop_assert!(lines.len() <= 1, "{}", export);
        prop_assert_eq!(&exported, &all, "export of series {}", series);
        let got = points(s, &format!("{selector}&start={from}&end={to}&step={step}&agg={f}")).await;
        let want = agg(&inside, step, f);
        let same = std::panic::catch_unwind(|| close(&got, &want)).is_ok();
        prop_assert!(same, "{} step {} from {} to {}: {:?} vs {:?}", f, step, from, to, got, want);
    }
    if copy {
        let (copy, dir) = restored_copy(s).await?;
        for (series, model) in model.iter().enumerate() {
            let q = format!("query=pm{case}_v{{h=\"s{series}\"}}&start={base}&end={}", base + SPAN_MS - 1);
            let all: Vec<(i64, f64)> = model.iter().map(|(&t, &v)| (t, v)).collect();
            prop_assert_eq!(&points(&copy, &q).await, &all, "series {} in the restored copy", series);
        }
        drop(copy); // stopped before its directory goes
        drop(dir);
    }
    Ok(())
}

/// Waits (bounded) until the writer has no series group left to purge.
async fn purged(s: &TestServer) -> Result<(), TestCaseError> {
    for _ in 0..1000 {
        let (_, db) = s.get_json("/api/v1/metrics/database").await;
        if db["writer"]["purge_pending_groups"] == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(TestCaseError::fail("the purge did not end within 10 s"))
}

/// A backup of `s` (through the API), restored elsewhere with `perfd restore`, running (and
/// its directory, to remove once it has stopped).
async fn restored_copy(s: &TestServer) -> Result<(TestServer, tempfile::TempDir), TestCaseError> {
    let (status, info) = s.post_json("/api/v1/admin/backup", &serde_json::json!({})).await;
    prop_assert_eq!(status, 201, "{}", info);
    let file = s.config.data_dir.join("backups").join(info["file"].as_str().expect("a file name"));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_perfd"))
        .args(["restore", file.to_str().expect("a path"), "--data-dir", dir.path().to_str().expect("a path")])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run perfd restore");
    prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&file); // backups of every case would pile up
    let path = dir.path().to_path_buf();
    Ok((TestServer::start_with(move |c| c.data_dir = path), dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reads_back_what_a_model_says() {
    // Taken out for each case, so a case may restart it.
    let server = RefCell::new(Some(TestServer::start()));
    let handle = tokio::runtime::Handle::current();
    let case = std::cell::Cell::new(0);
    tokio::task::block_in_place(|| {
        property(60, ops(), |(ops, read, copy)| {
            case.set(case.get() + 1);
            let mut s = server.borrow_mut().take().expect("the server");
            let result = handle.block_on(run(&mut s, case.get(), &ops, read, copy));
            *server.borrow_mut() = Some(s);
            result
        })
    });
}
