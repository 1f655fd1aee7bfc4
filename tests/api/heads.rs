//! Request heads actix-http refuses get perfd's JSON error (its own answers are empty), on a
//! fresh connection and on a handed-over one, after the requests pipelined before them; and a
//! head held until complete still reaches actix-http when it is slower than the keep-alive.

use crate::helpers::TestServer;
use crate::hitpath::{Raw, body, status};
use std::time::Duration;

const OK: &str = "GET /healthz HTTP/1.1\r\nHost: perfd\r\n\r\n";

#[tokio::test]
async fn heads_actix_http_refuses_get_json_errors() {
    let s = TestServer::start();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: perfd\r\n\r\n", "a".repeat(70_000));
    let many = format!("GET / HTTP/1.1\r\nHost: perfd\r\n{}\r\n", "X: y\r\n".repeat(100));
    let endless = format!("GET /{}", "a".repeat(140_000));
    for (head, want_status, want_code) in [
        ("GET /healthz HTTP/1.1\r\n\r\n", "400", "invalid_input"),
        ("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400", "invalid_input"),
        (
            "PUT /api/v1/cache/crew_config/k HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
            "400",
            "invalid_input",
        ),
        ("POST /write HTTP/1.0\r\n\r\n", "400", "invalid_input"),
        ("GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "400", "invalid_input"),
        ("GET /healthz HTTP/3.0\r\nHost: a\r\n\r\n", "400", "invalid_input"),
        (long_uri.as_str(), "414", "uri_too_long"),
        (many.as_str(), "431", "header_fields_too_large"),
        (endless.as_str(), "414", "uri_too_long"),
    ] {
        let shown = &head[..head.len().min(60)];
        for handed_over in [false, true] {
            let mut c = if handed_over { Raw::handed_over(&s) } else { Raw::connect(&s) };
            // A request pipelined before it is answered first.
            let _ = c.try_send(format!("{OK}{head}").as_bytes());
            assert_eq!(status(&c.answer().expect("the good one's answer")), "200", "{shown}");
            let answer = c.answer().unwrap_or_else(|| panic!("{shown}: closed without an answer"));
            assert_eq!(status(&answer), want_status, "{shown}: {answer}");
            let json: serde_json::Value = serde_json::from_str(body(&answer)).expect("a JSON body");
            assert_eq!(json["error"]["code"], want_code, "{shown}");
            assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(c.closed_within(Duration::from_secs(5)), "{shown}: closed after the answer");
        }
    }
    // Heads with bare line feeds, and line ends between requests, are taken as actix-http does.
    let mut c = Raw::handed_over(&s);
    c.send(b"GET /healthz HTTP/1.1\nHost: perfd\n\n\r\nGET /healthz HTTP/1.1\r\nHost: perfd\r\n\r\n");
    assert_eq!(status(&c.answer().expect("an answer")), "200");
    assert_eq!(status(&c.answer().expect("an answer")), "200");
    // The refusals are counted as requests on their own route.
    let (_, perf) = s.get_json("/api/v1/metrics/performance").await;
    assert!(perf.to_string().contains("/.perfd/refused/{n}"), "{perf}");
}

/// A head is held until it is complete, and actix-http's keep-alive timer runs until it reads
/// a byte: a head slower than the keep-alive must still be given to actix-http in time.
#[tokio::test]
async fn a_head_slower_than_the_keep_alive_is_answered() {
    let s = TestServer::start_with(|c| {
        c.http.keep_alive = Duration::from_millis(300);
        c.http.request_timeout = Duration::from_secs(5);
    });
    let mut c = Raw::handed_over(&s);
    c.send(b"GET /healthz HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(900)); // the slowness under test: 3 keep-alives
    c.send(b"Host: perfd\r\n\r\n");
    let answer = c.answer().expect("answered, not closed by the keep-alive");
    assert_eq!(status(&answer), "200", "{answer}");
}

/// After a chunked body the next head is still followed: checked (it was passed unchecked and
/// untimed for the rest of the connection) and timed.
#[tokio::test]
async fn heads_after_a_chunked_body_are_checked_and_timed() {
    let s = TestServer::start_with(|c| c.http.request_timeout = Duration::from_secs(1));
    let put = "PUT /api/v1/cache/crew_config/c HTTP/1.1\r\nHost: perfd\r\nTransfer-Encoding: chunked\r\n\r\n\
               3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n";
    let mut c = Raw::handed_over(&s);
    c.send(format!("{put}{OK}GET /healthz HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(status(&c.answer().expect("the PUT's answer")), "204");
    assert_eq!(status(&c.answer().expect("healthz")), "200");
    let answer = c.answer().expect("the refusal");
    assert_eq!(status(&answer), "400", "no Host: {answer}");
    assert!(body(&answer).contains("Host"), "{answer}");

    let mut c = Raw::handed_over(&s);
    c.send(format!("{put}GET /healthz HTTP/1.1\r\n").as_bytes());
    assert_eq!(status(&c.answer().expect("the PUT's answer")), "204");
    assert_eq!(status(&c.answer().expect("a 408")), "408");
    assert!(c.closed_within(Duration::from_secs(5)));
    let value =
        s.client.get(s.url("/api/v1/cache/crew_config/c")).send().await.unwrap().text().await.unwrap();
    assert_eq!(value, "abcde");
}

/// A refused HEAD is answered as a HEAD: the status and headers, no body (a client reading a
/// HEAD's answer reads no body, and took the JSON for the start of the next answer).
#[tokio::test]
async fn a_refused_head_request_gets_no_body() {
    let s = TestServer::start();
    let mut c = Raw::connect(&s);
    c.send(b"HEAD /healthz HTTP/1.1\r\n\r\n");
    let answer = c.answer_with(false).expect("an answer");
    assert_eq!(status(&answer), "400", "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
    assert!(c.closed_within(Duration::from_secs(5)), "closed after the answer");
    assert_eq!(String::from_utf8_lossy(c.buffered()), "", "nothing after the head");
}

/// The hit path's own 408 (a first head that stops coming) follows the same rule.
#[tokio::test]
async fn a_late_head_request_gets_a_408_without_a_body() {
    let s = TestServer::start_with(|c| c.http.request_timeout = Duration::from_millis(300));
    for (start, with_body) in [("HEAD /healthz HTTP/1.1\r\n", false), ("GET /healthz HTTP/1.1\r\n", true)] {
        let mut c = Raw::connect(&s);
        c.send(start.as_bytes());
        let answer = c.answer_with(with_body).expect("a 408");
        assert_eq!(status(&answer), "408", "{answer}");
        assert_eq!(body(&answer).is_empty(), !with_body, "{answer}");
        assert!(c.closed_within(Duration::from_secs(5)));
        assert_eq!(String::from_utf8_lossy(c.buffered()), "", "{start:?}");
    }
}
