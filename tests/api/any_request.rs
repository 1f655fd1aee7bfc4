//! "Bad input gets a clear error, never a crash": property test over the whole API. Requests
//! with any method, on every route, with odd query strings, headers, bodies and framing, each
//! on a fresh connection, must all be answered in time, never with a 5xx, and every error the
//! App gives is the JSON `{"error": {"code", "message"}}`.

use crate::helpers::{TestServer, property};
use crate::hitpath::{Raw, body};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::time::Duration;

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(options)
}

const PATHS: &[&str] = &[
    "/healthz",
    "/metrics",
    "/write",
    "/api/v1/import",
    "/api/v1/ingest",
    "/api/v1/series",
    "/api/v1/query_range",
    "/api/v1/query",
    "/api/v1/export",
    "/api/v1/labels",
    "/api/v1/label/host/values",
    "/api/v1/label/__name__/values",
    "/api/v1/label/%FF/values",
    "/api/v1/metrics/performance",
    "/api/v1/metrics/resources/usage",
    "/api/v1/metrics/health",
    "/api/v1/metrics/cache",
    "/api/v1/metrics/cache/clear",
    "/api/v1/metrics/database",
    "/api/v1/metrics/queue",
    "/api/v1/queries",
    "/api/v1/alerts",
    "/api/v1/alerts/history",
    "/api/v1/alerts/silences",
    "/api/v1/alerts/thresholds",
    "/api/v1/alerts/thresholds/1",
    "/api/v1/alerts/thresholds/%FF",
    "/api/v1/executions",
    "/api/v1/executions/e1",
    "/api/v1/executions/1",
    "/api/v1/executions/18446744073709551616",
    "/api/v1/executions/1/heartbeat",
    "/api/v1/executions/1/stages",
    "/api/v1/executions/1/finish",
    "/api/v1/cache/mget",
    "/api/v1/cache/invalidate",
    "/api/v1/cache/warm",
    "/api/v1/cache/keys",
    "/api/v1/cache/crew_config/k",
    "/api/v1/cache/crew_config/",
    "/api/v1/cache/nope/k",
    "/api/v1/cache/crew_config/%00",
    "/api/v1/cache/crew_config/%5B%2A%5D%5C",
    "/api/v1/admin/backups",
    "/api/v1/admin/tsdb/delete_series",
    "/api/v1/nope",
    "/",
];

const QUERIES: &[&str] = &[
    "",
    "",
    "",
    "?",
    "?match=cpu",
    "?match=%ZZ",
    "?match=cpu&start=x&end=1",
    "?match=cpu&step=0",
    "?match=cpu&start=-9999999999999999999",
    "?wait=1ms",
    "?wait=-1s",
    "?ttl=0",
    "?ttl=1e309",
    "?limit=99999999999",
    "?a=1&a=2",
];

const BODIES: &[&str] = &[
    "",
    "",
    "{}",
    "null",
    "[]",
    "{\"a\":",
    "{\"level\":\"all\"}",
    "{\"level\":\"nope\"}",
    "{\"keys\":[]}",
    "{\"keys\":[{\"strategy\":\"crew_config\",\"key\":\"k\"}]}",
    "{\"pattern\":\"[\"}",
    "{\"pattern\":\"crew_config:*\"}",
    "{\"pattern\":\"crew_config:[a-\"}",
    "{\"pattern\":\"*\\\\\"}",
    "{\"pattern\":\"crew_config:[!\\u0000-z]?*\"}",
    "{\"keys\":[{\"strategy\":\"crew_config\",\"key\":\"[*]\\\\\"}]}",
    "{\"entries\":[{\"strategy\":\"crew_config\",\"key\":\"k\",\"value\":\"v\"}]}",
    "{\"metric\":\"cpu\",\"value\":NaN}",
    "{\"metric\":\"cpu\",\"operator\":\">\",\"value\":1e999}",
    "{\"crew_id\":\"c\"}",
    "{\"crew_id\":\"\"}",
    "{\"crew_id\":7}",
    "{\"status\":\"\\u0000\"}",
    "{\"name\":\"s\",\"duration_ms\":-1}",
    "{\"name\":\"t\",\"selector\":\"cpu\",\"comparison\":\">\",\"warning\":1e308,\"critical\":-1e308}",
    "{\"name\":\"t\",\"selector\":\"cpu{\",\"comparison\":\">\",\"warning\":1,\"window\":\"0s\"}",
    "{\"name\":\"t\",\"selector\":\"cpu\",\"comparison\":\">\",\"warning\":1,\"for\":\"99999999999h\"}",
    "{\"selector\":\"cpu\",\"until\":1e400}",
    "{\"threshold_id\":1,\"until\":\"2026-13-45T00:00:00Z\"}",
    "{\"selector\":\"\",\"until\":-1}",
    "{\"queries\":[{\"name\":\"q\",\"duration_ms\":\"NaN\"}]}",
    "{\"points\":[{\"metric\":\"cpu\",\"value\":1,\"timestamp\":-1}]}",
    "{\"metric\":\"cpu\",\"labels\":{\"\":\"x\"},\"value\":1}",
    "cpu value=1",
    "cpu,host=a value=inf 1",
    "crew_config:k\n",
    "x=1&y=2",
    "\u{0}\u{1}\u{7f}",
    "\u{fffd}\u{fffd}",
];

const HEADERS: &[&str] = &[
    "Content-Type: application/json",
    "Content-Type: application/json",
    "Content-Type: text/plain",
    "Content-Type: application/x-perfd-mget",
    "Accept: application/x-perfd-mget",
    "Content-Encoding: gzip",
    "Content-Encoding: br",
    "Expect: 100-continue",
    "Upgrade: websocket",
    "Connection: close",
    "Accept: */*",
    "Authorization: Bearer 0123456789abcdef",
    "Authorization: Bearer wrong",
];

/// A request and whether its answer has a body (not a HEAD's).
fn requests() -> impl Strategy<Value = (String, bool)> {
    let method =
        pick(&["GET", "GET", "POST", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT"]);
    let headers = prop::collection::vec(pick(HEADERS), 0..3);
    let chunked = prop::bool::weighted(0.15);
    // Heads actix-http refuses (and a few it takes) among the plain ones.
    let head = pick(&["", "", "", "", "", "", "no host", "two hosts", "bad length", "lf", "many", "1.0"]);
    (method, pick(PATHS), pick(QUERIES), headers, pick(BODIES), chunked, head).prop_map(
        |(method, path, query, headers, body, chunked, head)| {
            let version = if head == "1.0" { "1.0" } else { "1.1" };
            let mut request = format!("{method} {path}{query} HTTP/{version}\r\nHost: perfd\r\n");
            match head {
                "no host" => request = request.replace("Host: perfd\r\n", ""),
                "two hosts" => request += "Host: other\r\n",
                "bad length" => request += "Content-Length: +1\r\n",
                "many" => request += &(0..100).map(|i| format!("X-{i}: v\r\n")).collect::<String>(),
                _ => {}
            }
            for h in headers {
                request += &format!("{h}\r\n");
            }
            if chunked {
                request += "Transfer-Encoding: chunked\r\n\r\n";
                if !body.is_empty() {
                    request += &format!("{:x}\r\n{body}\r\n", body.len());
                }
                request += "0\r\n\r\n";
            } else {
                request += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
            }
            if head == "lf" {
                let (h, b) = request.split_once("\r\n\r\n").unwrap_or((&request, ""));
                request = format!("{}\n\n{b}", h.replace("\r\n", "\n"));
            }
            (request, method != "HEAD")
        },
    )
}

/// Answered within 5 s (past a `100 Continue`), not 5xx, and every error (but a HEAD's) is
/// JSON with `error.code` and `error.message`, also for a head actix-http refuses.
fn well_answered(s: &TestServer, (request, with_body): &(String, bool)) -> Result<(), TestCaseError> {
    let mut c = Raw::connect(s);
    c.set_read_timeout(Duration::from_secs(5));
    c.send(request.as_bytes());
    let answer = loop {
        match c.try_answer(*with_body) {
            Ok(Some(a)) if a.starts_with("HTTP/1.1 100 ") => continue,
            Ok(Some(a)) => break a,
            Ok(None) => return Err(TestCaseError::fail(format!("closed without an answer: {request:?}"))),
            Err(e) => return Err(TestCaseError::fail(format!("no answer in 5 s ({e}): {request:?}"))),
        }
    };
    let status: u16 = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    prop_assert!((100..500).contains(&status), "{request:?} -> {answer}");
    let body = body(&answer);
    if status >= 400 && (*with_body || !body.is_empty()) {
        let json: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| TestCaseError::fail(format!("{request:?} -> not JSON ({e}): {answer}")))?;
        let (code, message) = (&json["error"]["code"], &json["error"]["message"]);
        prop_assert!(code.is_string() && message.is_string(), "{request:?} -> {answer}");
    }
    Ok(())
}

/// Sends `cases` requests to `s`; each must be [`well_answered`].
pub(crate) fn any_requests_are_well_answered(s: &TestServer, cases: u32) {
    property(cases, requests(), |r| well_answered(s, &r));
}

#[tokio::test]
async fn any_request_gets_a_timely_answer_and_errors_are_json() {
    any_requests_are_well_answered(&TestServer::start(), 3000);
}

#[tokio::test]
async fn with_a_token_too() {
    let s = TestServer::start_with(|c| c.auth_token = Some("0123456789abcdef".into()));
    any_requests_are_well_answered(&s, 1000);
}
