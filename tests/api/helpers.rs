//! `TestServer`: a real perfd on 127.0.0.1 port 0 over a temp data dir, plus a reqwest client.

use perfd::Daemon;
use perfd::config::Config;

pub struct TestServer {
    // Dropped before `dir`: the daemon closes redb before the temp dir is removed.
    pub daemon: Option<Daemon>,
    pub config: Config,
    pub base: String,
    pub client: reqwest::Client,
    /// Held so the temp dir outlives the daemon (fields drop in order).
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Starts with `Config::for_test` changed by `tweak`.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_test(dir.path());
        tweak(&mut config);
        let daemon = Daemon::start(config.clone()).expect("daemon starts");
        let base = format!("http://{}", daemon.addr);
        TestServer { daemon: Some(daemon), config, base, client: reqwest::Client::new(), _dir: dir }
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Barrier: everything sent before is committed.
    pub fn flush(&self) {
        self.daemon().writer.flush().expect("flush");
    }

    /// Seals every open hour into chunks, so reads go through the chunk path.
    pub fn seal(&self) {
        self.daemon().writer.seal_all().expect("seal");
    }

    /// Stops the daemon and starts a new one on the same data dir (a new port).
    pub fn restart(&mut self) {
        self.stop();
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        let daemon = Daemon::start(config).expect("daemon restarts");
        self.base = format!("http://{}", daemon.addr);
        self.daemon = Some(daemon);
    }

    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.shutdown();
            // Nothing but the daemon holds the store once it is shut down (an HTTP worker still
            // dropping its state did): a daemon started at once on the data dir can open it.
            assert_eq!(std::sync::Arc::strong_count(&d.store), 1, "the store is still held");
        }
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client.post(self.url(path)).body(body).send().await.expect("request")
    }

    /// POSTs a JSON body; the status and the JSON answer.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.client.post(self.url(path)).json(body).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    /// Requests the monitor timed under `route` and `method` in the last 10 minutes.
    pub async fn timed_requests(&self, route: &str, method: &str) -> u64 {
        let (_, p) = self.get_json("/api/v1/metrics/performance?window=10m").await;
        p["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter(|e| e["route"] == route && e["method"] == method)
            .map(|e| e["requests"].as_u64().expect("a count"))
            .sum()
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    /// `query_range` answer as (labels-as-json, points) per series.
    pub async fn points(&self, query: &str) -> Vec<(serde_json::Value, Vec<(i64, f64)>)> {
        let (status, body) = self.get_json(&format!("/api/v1/query_range?{query}")).await;
        assert_eq!(status, 200, "{body}");
        body["series"]
            .as_array()
            .expect("series array")
            .iter()
            .map(|s| (s["labels"].clone(), serde_json::from_value(s["points"].clone()).expect("points")))
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asserts the response is a JSON error with this status and code; returns the message.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let body: serde_json::Value = r.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().expect("message").to_owned()
}

/// A recent, hour-aligned base time (two hours ago), so tests never straddle "now".
pub fn base_ms() -> i64 {
    let now = perfd::model::now_ms();
    now - now.rem_euclid(3_600_000) - 2 * 3_600_000
}

/// Runs `test` on `cases` values of `strategy` (proptest, random seeds, nothing persisted);
/// panics with the smallest failing value it finds.
pub fn property<S: proptest::strategy::Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    // PROPTEST_CASES (proptest's own variable) overrides the count, for longer hunts by hand.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    let config = proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() };
    if let Err(e) = proptest::test_runner::TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}
