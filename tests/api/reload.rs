//! Reloading the configuration of a running perfd: SIGHUP and `POST /api/v1/admin/reload`
//! through the real binary, started with `--config FILE`.

use crate::crash::{Proc, exchange, get, spawn_args, status_of};
use crate::helpers::{TestServer, base_ms, expect_error};
use std::process::Command;

const FIRST: &str = "0123456789abcdef-first";
const SECOND: &str = "0123456789abcdef-second";
/// Execution limits the host's own load cannot hold back (a busy CI machine).
const SLOTS: &str = "[executions]\ncpu_limit_percent = 101\nmemory_limit_percent = 101\n";

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn status(p: &Proc, method: &str, path: &str, headers: &str, body: &str) -> u16 {
    status_of(&exchange(&p.base, method, path, headers, body).expect("an answer")).expect("a status")
}

/// The body of an answer (after the head).
fn body(resp: &str) -> &str {
    resp.split("\r\n\r\n").nth(1).unwrap_or("")
}

/// GET /healthz naming `host` (`exchange` names the address).
fn health_as(p: &Proc, host: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(p.base.trim_start_matches("http://")).ok()?;
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    status_of(&resp)
}

fn metric(p: &Proc, line_start: &str) -> Option<f64> {
    let text = get(&p.base, "/metrics")?;
    text.lines().find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[test]
fn sighup_and_the_reload_endpoint_apply_the_live_settings_and_name_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("perfd.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write(&format!(
        "auth_token = \"{FIRST}\"\n[storage]\nretention = \"1d\"\nmax_series = 2\n[sampler]\ninterval = \"1h\"\n[cache.strategies]\nllm_response = \"1h\"\n{SLOTS}max_concurrent = 1\n"
    ));
    let p = spawn_args(&dir.path().join("data"), &[std::ffi::OsStr::new("--config"), file.as_os_str()], &[]);
    let (first, second) = (bearer(FIRST), bearer(SECOND));
    let t = base_ms();
    let two_days_ago = t - 2 * 86_400_000;
    let put = |headers: &str, key: &str| {
        status(&p, "PUT", &format!("/api/v1/cache/llm_response/{key}"), headers, "v")
    };
    assert_eq!(put("", "a"), 401);
    assert_eq!(put(&first, "a"), 204);
    let lines = format!("s,k=1 v=1 {t}\ns,k=2 v=1 {t}\n");
    assert_eq!(status(&p, "POST", "/write?precision=ms", &first, &lines), 204);
    let third = format!("s,k=3 v=1 {t}\n");
    assert_eq!(status(&p, "POST", "/write?precision=ms", &first, &third), 422, "over storage.max_series");
    let old = format!("old v=1 {two_days_ago}\n");
    assert_eq!(status(&p, "POST", "/write?precision=ms", &first, &old), 400, "past storage.retention");
    assert_eq!(health_as(&p, "perfd.internal"), Some(403));
    let json = format!("{first}Content-Type: application/json\r\n");
    let ask = || exchange(&p.base, "POST", "/api/v1/executions", &json, r#"{"crew_id": "c"}"#).unwrap();
    assert_eq!(status_of(&ask()), Some(201));
    let waiting = ask();
    assert_eq!(status_of(&waiting), Some(202), "one slot: {waiting}");
    let waiting: serde_json::Value = serde_json::from_str(body(&waiting)).expect(&waiting);
    let waiting = format!("/api/v1/executions/{}", waiting["id"]);

    write(&format!(
        "auth_token = \"{SECOND}\"\n[http]\nworkers = 7\nallowed_hosts = [\"perfd.internal\"]\n\
         [storage]\nretention = \"3d\"\nmax_series = 10\n[sampler]\ninterval = \"1s\"\n[cache.strategies]\nllm_response = \"2m\"\nagent_plan = \"1m\"\n{SLOTS}max_concurrent = 2\n"
    ));
    let pid = p.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let success = "perfd_config_reloads_total{result=\"success\"}";
    let mut polls = 0;
    while metric(&p, success) != Some(1.0) {
        polls += 1;
        assert!(polls < 500, "SIGHUP was not taken");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(put(&first, "b"), 401, "the old token is refused");
    assert_eq!(put(&second, "b"), 204);
    let got = exchange(&p.base, "GET", "/api/v1/cache/llm_response/b", "", "").unwrap();
    let max_age: u64 = got
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("cache-control: max-age=").map(str::to_owned))
        .and_then(|v| v.trim().parse().ok())
        .expect(&got);
    assert!((100..=120).contains(&max_age), "the new TTL: {got}");
    assert_eq!(status(&p, "POST", "/write?precision=ms", &second, &third), 204, "the new series cap");
    assert_eq!(status(&p, "POST", "/write?precision=ms", &second, &old), 204, "the new retention");
    assert_eq!(health_as(&p, "perfd.internal"), Some(200), "the listed host");
    // The sampler read the host once at start; with a second's interval it reads it again soon
    // (an hour's wait is not sat out first).
    let reading = || {
        let usage: serde_json::Value =
            serde_json::from_str(&get(&p.base, "/api/v1/metrics/resources/usage").unwrap()).unwrap();
        usage["latest"]["at_ms"].as_i64().expect("a reading")
    };
    let first = reading();
    let mut polls = 0;
    while reading() == first {
        polls += 1;
        assert!(polls < 1000, "no sampler tick in 10 s after the interval went from 1h to 1s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let admitted: serde_json::Value = serde_json::from_str(&get(&p.base, &waiting).unwrap()).unwrap();
    assert_eq!(admitted["state"], "running", "a second slot admits the waiting execution");
    let unknown = exchange(&p.base, "GET", "/api/v1/cache/agent_plan/x", "", "").unwrap();
    assert_eq!(status_of(&unknown), Some(404), "a new strategy waits for a restart: {unknown}");

    // The endpoint answers what changed; nothing has since SIGHUP, but two keys still wait.
    assert_eq!(status(&p, "POST", "/api/v1/admin/reload", "", ""), 401);
    let resp = exchange(&p.base, "POST", "/api/v1/admin/reload", &second, "").unwrap();
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    let answer: serde_json::Value = serde_json::from_str(body(&resp)).expect(&resp);
    let want =
        serde_json::json!({"applied": [], "needs_restart": ["cache.strategies.agent_plan", "http.workers"]});
    assert_eq!(answer, want);

    // What is in effect, without secrets, and what still waits.
    assert_eq!(status(&p, "GET", "/api/v1/admin/config", "", ""), 401, "an admin read");
    let resp = exchange(&p.base, "GET", "/api/v1/admin/config", &second, "").unwrap();
    assert!(!resp.contains(SECOND), "the token is not shown: {resp}");
    let shown: serde_json::Value = serde_json::from_str(body(&resp)).expect(&resp);
    assert_eq!(shown["config"]["storage"]["retention"], "3days");
    assert_eq!(
        (shown["config"]["auth_token"].clone(), shown["config"]["http"]["workers"].clone()),
        ("(set)".into(), 2.into())
    );
    assert_eq!(shown["needs_restart"], serde_json::json!(["cache.strategies.agent_plan", "http.workers"]));

    // A file that no longer loads changes nothing and says why.
    write("[storage]\nretention = \"forever\"\n");
    let resp = exchange(&p.base, "POST", "/api/v1/admin/reload", &second, "").unwrap();
    assert_eq!(status_of(&resp), Some(422), "{resp}");
    assert!(body(&resp).contains("invalid_config") && body(&resp).contains("storage.retention"), "{resp}");
    assert_eq!(put(&second, "c"), 204, "the token in effect is kept");
    assert_eq!(metric(&p, "perfd_config_last_reload_successful"), Some(0.0));
    assert_eq!(metric(&p, "perfd_config_reloads_total{result=\"failure\"}"), Some(1.0));

    // Without the token (on loopback) every request goes through again.
    write("");
    assert_eq!(status(&p, "POST", "/api/v1/admin/reload", &second, ""), 200);
    assert_eq!(put("", "d"), 204);
    assert_eq!(metric(&p, "perfd_config_last_reload_successful"), Some(1.0));
}

/// A daemon given its configuration in code has nothing to read again.
#[tokio::test]
async fn a_daemon_started_without_a_source_answers_409() {
    let s = TestServer::start();
    let r = s.client.post(s.url("/api/v1/admin/reload")).send().await.unwrap();
    let msg = expect_error(r, 409, "conflict").await;
    assert!(msg.contains("no file to read again"), "{msg}");
}

/// `perfd config` checks a file before a reload: the configuration `serve` would use, no
/// secrets, or exit code 2 naming the key.
#[test]
fn perfd_config_prints_what_serve_would_use_or_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("perfd.toml");
    let run = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_perfd")).arg("config").arg("--config").arg(&file).output().unwrap()
    };
    let out = run(&format!("auth_token = \"{FIRST}\"\n[storage]\nretention = \"7d\"\n"));
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(FIRST), "{text}");
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["config"]["storage"]["retention"], "7days");
    let out = run("[storage]\nretention = \"forever\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("storage.retention"), "{err}");
}
