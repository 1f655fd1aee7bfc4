//! Backups through the API and the CLI: consistent snapshot, restore elsewhere, verification.

use crate::helpers::{TestServer, base_ms};
use perfd::Daemon;
use perfd::config::Config;
use std::process::Command;

fn perfd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_perfd")).args(args).env("RUST_LOG", "warn").output().expect("run perfd")
}

#[tokio::test]
async fn backup_while_running_then_restore_elsewhere_gives_the_same_answers() {
    let s = TestServer::start();
    let t = base_ms();
    let lines: String =
        (0..3000).map(|i| format!("bk,h=h{} v={} {}\n", i % 7, i as f64 / 8.0, t + i * 500)).collect();
    s.post("/write?precision=ms", lines).await;
    s.seal();
    s.post("/write?precision=ms", format!("bk,h=late v=42 {}", t + 10)).await; // still in the WAL
    let (status, info) = s.post_json("/api/v1/admin/backup", &serde_json::json!({})).await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        info["series"].as_u64().unwrap(),
        s.get_json("/api/v1/metrics/database").await.1["database"]["series"].as_u64().unwrap()
    );
    assert!(info["thresholds"].as_u64().unwrap() >= 6);
    let (_, list) = s.get_json("/api/v1/admin/backups").await;
    let name = info["file"].as_str().unwrap();
    assert_eq!(list["backups"][0]["file"], name);
    let data_dir = s.config.data_dir.clone();
    let file = data_dir.join("backups").join(name);
    let leftovers: Vec<_> = std::fs::read_dir(data_dir.join("backups"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".pfbk"))
        .collect();
    assert!(leftovers.is_empty(), "no temp file remains");

    let out = perfd(&["check", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = tempfile::tempdir().unwrap();
    let out = perfd(&["restore", file.to_str().unwrap(), "--data-dir", restored.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let q = format!("query=bk_v&start={t}&end={}", t + 2_000_000);
    let want = s.points(&q).await;
    let d = Daemon::start(Config::for_test(restored.path())).unwrap();
    let other = TestServerView(format!("http://{}", d.addr));
    assert_eq!(other.points(&q).await, want);
    drop(d);

    // A second restore into the now non-empty directory needs --force.
    let out = perfd(&["restore", file.to_str().unwrap(), "--data-dir", restored.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    // Truncated or altered backups are refused and leave the existing data alone.
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..6], b"PFBK\x02\x00", "written in the streaming format");
    let bad = restored.path().join("bad.pfbk");
    for broken in [bytes[..bytes.len() / 2].to_vec(), {
        let mut b = bytes.clone();
        b[bytes.len() / 3] ^= 1;
        b
    }] {
        std::fs::write(&bad, &broken).unwrap();
        let out = perfd(&["check", bad.to_str().unwrap()]);
        assert!(!out.status.success());
        let out = perfd(&[
            "restore",
            bad.to_str().unwrap(),
            "--force",
            "--data-dir",
            restored.path().to_str().unwrap(),
        ]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("checksum"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let d = Daemon::start(Config::for_test(restored.path())).unwrap();
    assert_eq!(TestServerView(format!("http://{}", d.addr)).points(&q).await, want, "untouched");
}

#[tokio::test]
async fn offline_backup_of_a_running_daemon_is_a_clear_error() {
    let s = TestServer::start();
    let out_file = s.config.data_dir.join("x.pfbk");
    let out = perfd(&[
        "backup",
        "--out",
        out_file.to_str().unwrap(),
        "--data-dir",
        s.config.data_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--url"), "{err}");
    let url = s.base.clone();
    let out = perfd(&["backup", "--url", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sha256"));
}

/// `restore --force` into the data dir of a running daemon replaced its database file: the
/// daemon went on writing to the replaced one, and lost everything it wrote after. It is
/// refused now, and the daemon keeps its data. A damaged database is still replaced.
#[tokio::test]
async fn restore_into_a_running_daemons_dir_is_refused() {
    let s = TestServer::start();
    let t = base_ms();
    s.post("/write?precision=ms", format!("rs v=1 {t}")).await;
    let (status, info) = s.post_json("/api/v1/admin/backup", &serde_json::json!({})).await;
    assert_eq!(status, 201, "{info}");
    let file = s.config.data_dir.join("backups").join(info["file"].as_str().unwrap());
    s.post("/write?precision=ms", format!("rs v=2 {}", t + 1000)).await;
    let db = s.config.data_dir.join("perfd.redb");
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&db).unwrap());
    let before = inode();
    let data_dir = s.config.data_dir.to_str().unwrap();
    let out = perfd(&["restore", file.to_str().unwrap(), "--force", "--data-dir", data_dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("running perfd"), "{err}");
    assert_eq!(inode(), before, "the running daemon's file was not replaced");
    // A data dir given as the backup file to check: "Is a directory (os error 21)" before.
    let out = perfd(&["check", data_dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--data-dir"), "{err}");
    s.post("/write?precision=ms", format!("rs v=3 {}", t + 2000)).await;
    let points = s.points(&format!("query=rs_v&start={t}&end={}", t + 3000)).await;
    assert_eq!(points[0].1.len(), 3, "{points:?}");

    // A damaged database (what a restore is for) is replaced, and a daemon then starts on it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perfd.redb"), b"not a database").unwrap();
    let out =
        perfd(&["restore", file.to_str().unwrap(), "--force", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = Daemon::start(Config::for_test(dir.path())).unwrap();
    let view = TestServerView(format!("http://{}", d.addr));
    assert_eq!(view.points(&format!("query=rs_v&start={t}&end={}", t + 3000)).await[0].1, vec![(t, 1.0)]);

    // A restore into a new data dir that was killed left the empty file it holds the dir with;
    // the next restore was refused without --force, as if the dir held data. A database a
    // perfd has opened, even with nothing written, still needs --force.
    let dir = tempfile::tempdir().unwrap();
    drop(redb::Database::create(dir.path().join("perfd.redb")).unwrap());
    let restore = |dir: &std::path::Path| {
        perfd(&["restore", file.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()])
    };
    let out = restore(dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = Daemon::start(Config::for_test(dir.path())).unwrap();
    let view = TestServerView(format!("http://{}", d.addr));
    assert_eq!(view.points(&format!("query=rs_v&start={t}&end={}", t + 3000)).await[0].1, vec![(t, 1.0)]);
    let fresh = tempfile::tempdir().unwrap();
    drop(Daemon::start(Config::for_test(fresh.path())).unwrap());
    let out = restore(fresh.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--force"), "{err}");
}

/// Offline commands on a wrong path: `backup --out <data-dir>/perfd.redb` renamed the backup
/// over the database (destroying it), and `backup`/`check` of a data dir without a database
/// created an empty one and reported success.
#[test]
fn offline_commands_refuse_the_database_itself_and_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    drop(Daemon::start(Config::for_test(dir.path())).unwrap());
    let db = dir.path().join("perfd.redb");
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&db).unwrap());
    let before = inode();
    let data_dir = dir.path().to_str().unwrap();
    let out = perfd(&["backup", "--out", db.to_str().unwrap(), "--data-dir", data_dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("the database itself"), "{err}");
    assert_eq!(inode(), before, "the database was not replaced");
    let out = perfd(&["check", "--data-dir", data_dir]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let missing = dir.path().join("elsewhere");
    let file = dir.path().join("x.pfbk");
    for args in [
        vec!["backup", "--out", file.to_str().unwrap(), "--data-dir", missing.to_str().unwrap()],
        vec!["check", "--data-dir", missing.to_str().unwrap()],
    ] {
        let out = perfd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("no perfd database"), "{args:?}: {err}");
        assert!(!missing.exists() && !file.exists(), "{args:?} created nothing");
    }
    // A data dir that is a file: "io: File exists (os error 17)" named no path.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let out = perfd(&["--listen", "127.0.0.1:0", "--data-dir", plain.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("data dir") && err.contains("plain"), "{err}");
    // A reader that leaves (`perfd check | head -1`): println! panicked on the broken pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_perfd"))
        .args(["check", "--data-dir", data_dir])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // before it has opened the database, let alone printed
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
    // An I/O error names the path, once.
    let out = perfd(&["backup", "--out", missing.join("x.pfbk").to_str().unwrap(), "--data-dir", data_dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("elsewhere/x.pfbk"), "{err}");
}

/// Backups written before the streaming format (format 1, one in-memory snapshot) are still
/// checked and restored. The fixture was written by the previous perfd: three points of
/// `fixture_v` (hosts a and b, 2026-11-27) and the six default thresholds.
#[tokio::test]
async fn a_format_1_backup_is_still_restored() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backup-format-1.pfbk");
    let out = perfd(&["check", file]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((info["wal_entries"].as_u64(), info["thresholds"].as_u64()), (Some(2), Some(6)), "{info}");
    let dir = tempfile::tempdir().unwrap();
    let out = perfd(&["restore", file, "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut config = Config::for_test(dir.path());
    config.storage.retention = perfd::config::MAX_DURATION; // the points are from 2026
    let d = Daemon::start(config).unwrap();
    let view = TestServerView(format!("http://{}", d.addr));
    let points = view.points("query=fixture_v&start=1795800000000&end=1795800002000").await;
    let by_host: Vec<_> = points.iter().map(|(labels, p)| (labels["host"].clone(), p.clone())).collect();
    assert_eq!(
        by_host,
        vec![
            (serde_json::json!("a"), vec![(1795800000000, 1.5), (1795800001000, 2.5)]),
            (serde_json::json!("b"), vec![(1795800002000, -3.0)])
        ]
    );
}

/// A read-only view of another server, for comparing answers.
struct TestServerView(String);

impl TestServerView {
    async fn points(&self, query: &str) -> Vec<(serde_json::Value, Vec<(i64, f64)>)> {
        let body: serde_json::Value = reqwest::get(format!("{}/api/v1/query_range?{query}", self.0))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["labels"].clone(), serde_json::from_value(s["points"].clone()).unwrap()))
            .collect()
    }
}

#[tokio::test]
async fn scheduled_backups_keep_the_newest_n() {
    let s = TestServer::start_with(|c| {
        c.backup.interval = Some(std::time::Duration::from_secs(1));
        c.backup.keep = 2;
    });
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Bounded polling: tick the sampler until three different backups have been written.
    while seen.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "saw {seen:?}");
        s.daemon().sampler.tick();
        let (_, list) = s.get_json("/api/v1/admin/backups").await;
        let files = list["backups"].as_array().unwrap();
        assert!(files.len() <= 2, "{list}");
        seen.extend(files.iter().map(|f| f["file"].as_str().unwrap().to_owned()));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Concurrent backups each get their own file. Two in one millisecond shared a name and a temp
/// file: one answered 500, and one could replace the other's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_backups_each_get_a_file() {
    let s = TestServer::start();
    let posts: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (s.client.clone(), s.url("/api/v1/admin/backup"));
            tokio::spawn(async move { client.post(url).send().await.unwrap() })
        })
        .collect();
    let mut files = std::collections::BTreeSet::new();
    for p in posts {
        let r = p.await.unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        files.insert(v["file"].as_str().unwrap().to_owned());
    }
    assert_eq!(files.len(), 8, "{files:?}");
    let (_, v) = s.get_json("/api/v1/admin/backups").await;
    let listed: std::collections::BTreeSet<_> =
        v["backups"].as_array().unwrap().iter().map(|b| b["file"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed, files);
}

/// `perfd check --downgrade` takes a stopped daemon's data dir back to schema 1 (what a perfd
/// built before the chunks' "no value falls" flag opens): check, backup and restore then keep
/// it at 1, and a daemon takes it to its own schema again with every point as it was.
#[tokio::test]
async fn a_downgraded_data_dir_stays_at_schema_1_until_a_daemon_opens_it() {
    let mut s = TestServer::start();
    let t = base_ms();
    let sealed: String = (0..3000).map(|i| format!("dg v={i} {}\n", t + i * 1000)).collect();
    s.post("/write?precision=ms", sealed).await;
    s.seal();
    // The open hour's 10 points of one series are one WAL chunk, flagged as well.
    let open_hour = t + 2 * 3_600_000;
    let open: String = (0..10).map(|i| format!("dg v={} {}\n", 5000 + i, open_hour + i)).collect();
    s.post("/write?precision=ms", open).await;
    let q = format!("query=dg_v&start={t}&end={}", open_hour + 10);
    let want = s.points(&q).await;
    assert_eq!(want[0].1.len(), 3010);
    let (_, db) = s.get_json("/api/v1/metrics/database").await;
    assert_eq!(db["database"]["schema_version"], 2, "{db}");
    s.stop();

    let dir = s.config.data_dir.to_str().unwrap().to_owned();
    let out = perfd(&["check", "--data-dir", &dir, "--downgrade"]);
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(counts["schema_version"], 1, "{counts}");
    let done = &counts["downgrade"];
    assert_eq!((done["from_schema"].as_u64(), done["to_schema"].as_u64()), (Some(2), Some(1)), "{counts}");
    // The sealed hours' chunks and the WAL's; a perfd of schema 1 rejects any left.
    assert!(done["blocks_rewritten"].as_u64() >= Some(1), "{counts}");
    assert!(done["wal_batches_rewritten"].as_u64() >= Some(1), "{counts}");
    let log = String::from_utf8_lossy(&out.stderr);
    let out = perfd(&["check", "--data-dir", &dir]);
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["schema_version"], 1, "an offline open leaves it: {counts} ({log})");
    let file = s.config.data_dir.join("downgraded.pfbk");
    let out = perfd(&["backup", "--out", file.to_str().unwrap(), "--data-dir", &dir]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = perfd(&["check", file.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["schema_version"], 1, "a perfd of schema 1 restores it: {info}");

    s.restart();
    assert_eq!(s.points(&q).await, want);
    let (_, db) = s.get_json("/api/v1/metrics/database").await;
    assert_eq!(db["database"]["schema_version"], 2, "{db}");
}
