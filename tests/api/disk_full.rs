//! The real binary on a "full disk": a file size limit set on the running process (prlimit), so
//! the database file cannot grow. Writes are refused with 507, nothing acknowledged is lost,
//! reads keep working, and writes are taken again by themselves once there is room.

use crate::crash::{exchange, get, series_points, spawn_with, status_of};
use std::process::Command;
use std::time::{Duration, Instant};

/// Status and the whole response (headers and body) of a POST; a body starting with `{` is
/// sent as JSON.
fn post_raw(base: &str, path: &str, body: &str) -> (u16, String) {
    let json = if body.starts_with('{') { "Content-Type: application/json\r\n" } else { "" };
    let resp = exchange(base, "POST", path, json, body).expect("the server answers");
    (status_of(&resp).expect("status line"), resp)
}

/// Sets the soft RLIMIT_FSIZE of process `pid`, keeping its hard limit.
fn set_file_size_limit(pid: u32, soft: u64) {
    let (mut old_soft, mut hard) = (0, 0);
    let pid = pid as rlimit::pid_t;
    rlimit::prlimit(pid, rlimit::Resource::FSIZE, None, Some((&mut old_soft, &mut hard))).unwrap();
    rlimit::prlimit(pid, rlimit::Resource::FSIZE, Some((soft.min(hard), hard)), None).unwrap();
}

/// Batch `i`: 500 points of `full_v`, at timestamps of its own.
fn batch(t0: i64, i: i64) -> (String, Vec<(i64, f64)>) {
    let pts: Vec<(i64, f64)> = (0..500).map(|k| (t0 + i * 500 + k, (i * 500 + k) as f64)).collect();
    (pts.iter().map(|(t, v)| format!("full v={v:?} {t}\n")).collect(), pts)
}

/// CPU time (user + system, clock ticks) process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').skip(11).take(2).map(|f| f.parse::<u64>().unwrap()).sum()
}

/// The JSON object in a response (chunked encoding may wrap it).
fn json_body(resp: &str) -> serde_json::Value {
    let (Some(a), Some(b)) = (resp.find('{'), resp.rfind('}')) else { return serde_json::Value::Null };
    serde_json::from_str(&resp[a..=b]).unwrap_or(serde_json::Value::Null)
}

/// Polls `check` for up to `limit`; returns its first `Some`.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Regression: after one failed write (a full disk) redb refused every later call until the file
/// was reopened, so perfd answered 500 to every write, and to reads of sealed data, until it was
/// restarted, and logged two errors a request.
#[test]
fn a_full_disk_refuses_writes_loses_nothing_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    // Executions are admitted whatever the load of the machine running the tests.
    let envs = [
        ("PERFD_SAMPLER_INTERVAL", "1s".to_string()),
        ("PERFD_EXECUTIONS_CPU_LIMIT_PERCENT", "101".into()),
        ("PERFD_EXECUTIONS_MEMORY_LIMIT_PERCENT", "101".into()),
    ];
    let p = spawn_with(dir.path(), &envs);
    let pid = p.child.id();
    let t0 = crate::helpers::base_ms();
    let write = |i: i64| post_raw(&p.base, "/write?precision=ms", &batch(t0, i).0);
    let mut acked = Vec::new();
    assert_eq!(write(0).0, 204);
    acked.extend(batch(t0, 0).1);

    // An alert that fires while the disk is full: its one point enters the window 1.5 s from now.
    let threshold = r#"{"name":"df","selector":"df_alert_v","aggregation":"count","window":"1m","comparison":">=","warning":1,"for":"0s"}"#;
    let (status, resp) = post_raw(&p.base, "/api/v1/alerts/thresholds", threshold);
    assert_eq!(status, 201, "{resp}");
    let threshold_id = json_body(&resp)["id"].as_u64().expect("an id");
    let soon = perfd::model::now_ms() + 1500;
    assert_eq!(post_raw(&p.base, "/write?precision=ms", &format!("df_alert v=1 {soon}")).0, 204);
    let history = || get(&p.base, &format!("/api/v1/alerts/history?threshold_id={threshold_id}"));

    let file_len = std::fs::metadata(dir.path().join("perfd.redb")).unwrap().len();
    set_file_size_limit(pid, file_len);
    let mut i = 1;
    let refusal = loop {
        assert!(i < 4000, "the database file never needed to grow");
        let (status, resp) = write(i);
        match status {
            204 => acked.extend(batch(t0, i).1),
            507 => break resp,
            other => panic!("unexpected {other}: {resp}"),
        }
        i += 1;
    };
    // The writer sleeps while the fault lasts (maintenance, due every 10 ms here, waits too).
    let busy = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(800));
    let busy = cpu_ticks(pid) - busy;
    assert!(busy < 40, "{busy} CPU ticks in 0.8 s while faulted: a busy loop");
    assert!(refusal.contains("\"storage_full\""), "{refusal}");
    assert!(refusal.to_ascii_lowercase().contains("retry-after: 1"), "{refusal}");
    // Refused at once while the fault lasts; reads see exactly what was acknowledged.
    assert_eq!(write(i).0, 507);
    let end = t0 + (i + 1) * 500;
    assert_eq!(series_points(&p.base, "full_v", t0, end), acked);
    let db = get(&p.base, "/api/v1/metrics/database").expect("database stats");
    assert!(db.contains("\"storage_fault\":{") && db.contains("\"full\":true"), "{db}");
    let metrics = get(&p.base, "/metrics").expect("metrics");
    assert!(metrics.contains("\nperfd_storage_failing 1\n"), "{metrics}");
    let health = poll(Duration::from_secs(15), || {
        let h = get(&p.base, "/api/v1/metrics/health")?;
        h.contains("storage is at 1.0").then_some(h)
    });
    let health = health.expect("health names the storage within 15 s");
    assert!(health.contains("\"unhealthy\""), "{health}");
    // The alert fires meanwhile. Its event is refused if it comes while the store fails (most
    // runs; a file size limit lets the retry's empty commit pass, so not all), and then waits
    // for the store instead of being lost.
    let fired = poll(Duration::from_secs(10), || {
        let alerts = get(&p.base, "/api/v1/alerts")?;
        alerts.contains(&format!("\"threshold_id\":{threshold_id},")).then_some(())
    });
    assert!(fired.is_some(), "the alert fired while the disk was full");

    // A backup that finds no room is a 507 too, and leaves no partial file to keep the disk full.
    set_file_size_limit(pid, 1);
    let (status, resp) = post_raw(&p.base, "/api/v1/admin/backup", "");
    assert!(status == 507 && resp.contains("\"storage_full\""), "{resp}");
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("backups")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
    // With no room at all the writer's next retry cannot even reopen the file: reads and backups
    // are then refused with that cause (a 507 with Retry-After), not told a reopen is under way.
    let query = format!("/api/v1/query_range?query=full_v&start={t0}&end={end}");
    let closed = poll(Duration::from_secs(15), || {
        let resp = exchange(&p.base, "GET", &query, "", "")?;
        (status_of(&resp)? == 507).then_some(resp)
    });
    let closed = closed.expect("the retry under a 1-byte limit fails to reopen within 15 s");
    assert!(closed.contains("could not be reopened") && closed.contains("retry-after: 1"), "{closed}");
    let (status, resp) = post_raw(&p.base, "/api/v1/admin/backup", "");
    assert!(status == 507 && resp.contains("could not be reopened"), "{resp}");
    // An execution finished meanwhile is finished; its profile is stored once the store is back.
    let (status, resp) = post_raw(&p.base, "/api/v1/executions", r#"{"crew_id":"df"}"#);
    assert!(status == 200 || status == 201, "{resp}");
    let id = json_body(&resp)["id"].as_u64().expect("an id");
    let (status, resp) = post_raw(&p.base, &format!("/api/v1/executions/{id}/finish"), "");
    assert_eq!(status, 200, "{resp}");

    // Room again: writes are taken again without a restart (retries are at most 10 s apart).
    set_file_size_limit(pid, u64::MAX);
    let taken = poll(Duration::from_secs(30), || {
        i += 1;
        match write(i).0 {
            204 => Some(i),
            507 => None,
            other => panic!("unexpected {other}"),
        }
    });
    let last = taken.expect("writes taken again within 30 s of freeing room");
    acked.extend(batch(t0, last).1);
    let end = t0 + (last + 1) * 500;
    assert_eq!(series_points(&p.base, "full_v", t0, end), acked);
    let db = get(&p.base, "/api/v1/metrics/database").expect("database stats");
    assert!(db.contains("\"storage_fault\":null") && db.contains("\"storage_recoveries\":"), "{db}");
    let stored = poll(Duration::from_secs(15), || {
        let body = get(&p.base, "/api/v1/executions?crew_id=df&window=1h")?;
        (json_body(&body)["count"] == 1).then_some(())
    });
    assert!(stored.is_some(), "the profile was stored once the store was back");
    let event = poll(Duration::from_secs(15), || {
        let events = json_body(&history()?)["events"].clone();
        (events.as_array()?.len() == 1).then_some(events)
    });
    let event = event.expect("the alert's event was stored once the store was back");
    assert_eq!((event[0]["from"].as_str(), event[0]["to"].as_str()), (Some("ok"), Some("warning")));

    // Everything acknowledged survives a restart.
    let mut p = p;
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    assert!(p.child.wait().unwrap().success());
    let p = spawn_with(dir.path(), &[]);
    assert_eq!(series_points(&p.base, "full_v", t0, end), acked);
}
