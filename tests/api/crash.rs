//! The real binary as a child process: SIGTERM exits cleanly (SIGHUP reloads, `reload.rs`);
//! `kill -9` during ingestion loses no acknowledged point.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) base: String,
}

/// A failing assertion must not leave a server running (it would hold the test's pipes open).
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `perfd serve` on port 0 and reads the bound address from its log.
fn spawn(dir: &std::path::Path) -> Proc {
    spawn_with(dir, &[])
}

pub(crate) fn spawn_with(dir: &std::path::Path, envs: &[(&str, String)]) -> Proc {
    spawn_args(dir, &[], envs)
}

/// [`spawn_with`] with more arguments after `serve` (`--config FILE`).
pub(crate) fn spawn_args(dir: &std::path::Path, args: &[&std::ffi::OsStr], envs: &[(&str, String)]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_perfd"))
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        // Seal every 10 ms, so kills also land in the middle of seals and WAL trims.
        .env("PERFD_WRITER_MAINTENANCE_INTERVAL", "10ms")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn perfd");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines.next().expect("perfd exited before listening").expect("read log");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc { child, base }
}

/// A minimal blocking HTTP/1.1 exchange (`Connection: close`): the whole response, or `None`
/// when the connection fails or breaks (the server died). No runtime, so killing the server
/// mid-request is simple. `headers` are extra header lines, each ending in `\r\n`.
pub(crate) fn exchange(base: &str, method: &str, path: &str, headers: &str, body: &str) -> Option<String> {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp)
}

/// The status code of a response `exchange` returned.
pub(crate) fn status_of(resp: &str) -> Option<u16> {
    resp.split_whitespace().nth(1)?.parse().ok()
}

fn post(base: &str, path: &str, body: String) -> Option<u16> {
    status_of(&exchange(base, "POST", path, "", &body)?)
}

pub(crate) fn get(base: &str, path: &str) -> Option<String> {
    Some(exchange(base, "GET", path, "", "")?.split("\r\n\r\n").nth(1)?.to_owned())
}

pub(crate) fn series_points(base: &str, name: &str, start: i64, end: i64) -> Vec<(i64, f64)> {
    let body = get(base, &format!("/api/v1/query_range?query={name}&start={start}&end={end}"))
        .expect("query answers");
    // Chunked transfer encoding may wrap the JSON; find the object.
    let json = &body[body.find('{').expect("json")..=body.rfind('}').expect("json")];
    let v: serde_json::Value = serde_json::from_str(json).expect("valid json");
    let mut pts: Vec<(i64, f64)> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| serde_json::from_value::<Vec<(i64, f64)>>(s["points"].clone()).unwrap())
        .collect();
    pts.sort_by_key(|p| p.0);
    pts
}

#[test]
fn sigterm_exits_zero_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path());
    let t = crate::helpers::base_ms();
    assert_eq!(post(&p.base, "/write?precision=ms", format!("crash v=1 {t}")), Some(204));
    let pid = p.child.id().to_string();
    // SIGHUP (a reload; a closed terminal) must not kill it: it would die by the signal, not exit 0.
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    assert_eq!(post(&p.base, "/write?precision=ms", format!("crash v=2 {}", t + 1)), Some(204));
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = p.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut p = spawn(dir.path());
    assert_eq!(series_points(&p.base, "crash_v", t, t + 1), vec![(t, 1.0), (t + 1, 2.0)]);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

/// Four clients ingest and a fifth asks for backups while the server is killed with SIGKILL at
/// a different moment in each of ten rounds; every backup under a final name must verify, and
/// after every restart each acknowledged point must be there.
#[test]
fn kill_dash_nine_loses_no_acknowledged_point() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = crate::helpers::base_ms();
    let acked: Arc<Mutex<Vec<(i64, f64)>>> = Arc::default();
    let seq = Arc::new(std::sync::atomic::AtomicI64::new(0));
    for round in 0..10 {
        let mut p = spawn(dir.path());
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (base, acked, seq) = (p.base.clone(), acked.clone(), seq.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let i = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let pts: Vec<(i64, f64)> = (0..20)
                            .map(|j| (t0 + i * 20 + j, (i * 20 + j) as f64 + w as f64 / 8.0))
                            .collect();
                        let body: String = pts.iter().map(|(t, v)| format!("crash v={v:?} {t}\n")).collect();
                        match post(&base, "/write?precision=ms", body) {
                            Some(204) => acked.lock().unwrap().extend(pts),
                            Some(code) => panic!("unexpected status {code}"),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        // Wait (bounded) until this round acknowledged something, then kill mid-stream.
        let backups = {
            let base = p.base.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    if post(&base, "/api/v1/admin/backup", String::new()).is_none() {
                        return;
                    }
                }
            })
        };
        // A different moment each round: after 2,000 to 6,500 more acknowledged points.
        let want = acked.lock().unwrap().len() + 2000 + 500 * round;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while acked.lock().unwrap().len() < want && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        for w in workers {
            w.join().unwrap();
        }
        backups.join().unwrap();
        for e in std::fs::read_dir(dir.path().join("backups")).into_iter().flatten().flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "pfbk") {
                perfd::store::backup::check(&path).unwrap_or_else(|e| panic!("partial backup {path:?}: {e}"));
            }
        }
        let mut p = spawn(dir.path());
        let got = series_points(&p.base, "crash_v", t0, t0 + 100_000_000);
        let got: std::collections::HashMap<i64, f64> = got.into_iter().collect();
        let acked = acked.lock().unwrap();
        assert!(!acked.is_empty());
        for (t, v) in acked.iter() {
            assert_eq!(got.get(t), Some(v), "acknowledged point {t} lost in round {round}");
        }
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }
    let finished = std::fs::read_dir(dir.path().join("backups")).unwrap().flatten();
    assert!(
        finished.filter(|e| e.path().extension().is_some_and(|x| x == "pfbk")).count() > 0,
        "backups ran"
    );
}

/// Under systemd: READY=1 once listening, WATCHDOG=1 pings while alive, STOPPING=1 on SIGTERM.
#[test]
fn sd_notify_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let envs = [("NOTIFY_SOCKET", sock_path.display().to_string()), ("WATCHDOG_USEC", "200000".to_string())];
    let mut p = spawn_with(&dir.path().join("data"), &envs);
    let recv = || {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    assert_eq!(recv(), "WATCHDOG=1");
    assert_eq!(recv(), "WATCHDOG=1");
    let pid = p.child.id().to_string();
    // A reload (SIGHUP) is bracketed by RELOADING=1 (with the monotonic clock, as
    // Type=notify-reload wants it) and READY=1.
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut reloading = recv();
    while reloading == "WATCHDOG=1" {
        reloading = recv();
    }
    let usec = reloading.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").expect(&reloading);
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading}");
    let mut ready = recv();
    while ready == "WATCHDOG=1" {
        ready = recv();
    }
    assert_eq!(ready, "READY=1");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut last = recv();
    while last == "WATCHDOG=1" {
        last = recv();
    }
    assert_eq!(last, "STOPPING=1");
    assert!(p.child.wait().unwrap().success());
}

/// Regression: started from a shell with the usual soft limit of 1024 open files, perfd (two
/// descriptors a connection) stopped accepting at about 500 connections. It now raises the
/// soft limit to the hard one.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && exec "$0" serve --listen 127.0.0.1:0 --data-dir "$1""#)
        .arg(env!("CARGO_BIN_EXE_perfd"))
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn perfd");
    let mut p = Proc { base: String::new(), child };
    let lines = BufReader::new(p.child.stderr.take().expect("stderr")).lines();
    for line in lines {
        if line.expect("read log").contains("listening on ") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.child.id())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).expect("a limit line");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit not raised: {open_files}");
    assert_ne!(numbers[0], "256", "{open_files}");
}

/// The open points a running binary reports.
fn open_points(base: &str) -> Option<u64> {
    let body = get(base, "/api/v1/metrics/database")?;
    let json = &body[body.find('{')?..=body.rfind('}')?];
    serde_json::from_str::<serde_json::Value>(json).ok()?["database"]["open_points"].as_u64()
}

/// A series deleted before a crash stays deleted, and its points in a WAL entry another series
/// still pins are not replayed into memory after `kill -9` (without the check they came back as
/// open points of a series no one could read, and were sealed again).
#[test]
fn a_deleted_series_stays_gone_after_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    // At most 3 series: the sampler's own are refused, so every open point is this test's.
    let limit = [("PERFD_STORAGE_MAX_SERIES", "3".to_string())];
    let mut p = spawn_with(dir.path(), &limit);
    let now = perfd::model::now_ms();
    let lines = format!("gone,a=1 v=1 {now}\ngone,a=2 v=2 {now}\nstay v=3 {now}");
    assert_eq!(post(&p.base, "/write?precision=ms", lines), Some(204));
    let deleted = exchange(&p.base, "POST", "/api/v1/admin/tsdb/delete_series?match=gone_v", "", "");
    assert_eq!(deleted.as_deref().and_then(status_of), Some(200), "{deleted:?}");
    assert_eq!(open_points(&p.base), Some(1), "stay's point; gone's were sealed");
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let p = spawn_with(dir.path(), &limit);
    assert_eq!(open_points(&p.base), Some(1), "the WAL entry replayed without gone's points");
    assert!(series_points(&p.base, "gone_v", now - 1, now + 1).is_empty());
    assert_eq!(series_points(&p.base, "stay_v", now - 1, now + 1), vec![(now, 3.0)]);
}
