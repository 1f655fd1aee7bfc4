//! The connection-level hit path (`src/api/hitpath.rs`) over raw sockets: its answers are the
//! App's (status, headers and body); pipelining, split heads and the hand-over to actix-http keep order and
//! lose no byte; timeouts and a graceful stop close idle connections.

use crate::helpers::TestServer;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A raw HTTP/1.1 connection that reads answers one at a time (by `content-length`).
pub(crate) struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub(crate) fn connect(s: &TestServer) -> Raw {
        let stream = TcpStream::connect(s.daemon().addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream, buf: Vec::new() }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("send");
    }

    pub(crate) fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next whole answer, or `None` once the server closed the connection.
    pub(crate) fn answer(&mut self) -> Option<String> {
        self.answer_with(true)
    }

    /// The next answer; `with_body: false` for a HEAD's, which has `content-length` but no body.
    pub(crate) fn answer_with(&mut self, with_body: bool) -> Option<String> {
        self.try_answer(with_body).unwrap_or_else(|e| panic!("reading an answer: {e}"))
    }

    /// The next answer, `None` once the server closed the connection, or the read's error
    /// (`WouldBlock` when the read timeout passed first).
    pub(crate) fn try_answer(&mut self, with_body: bool) -> std::io::Result<Option<String>> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end].to_vec()).expect("ascii head");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok())
                    .filter(|_| with_body)
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let answer: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Ok(Some(String::from_utf8(answer).expect("utf-8 answer")));
                }
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes read past the answers taken so far.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("timeout");
    }

    /// True when the server closes the connection before `within` passes.
    pub(crate) fn closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).expect("timeout");
        match self.stream.read(&mut [0u8; 64]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
        }
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: perfd\r\n{extra}\r\n")
}

pub(crate) fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).expect("status")
}

pub(crate) fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").expect("head").1
}

async fn put(s: &TestServer, path: &str, value: &str, content_type: &str) {
    let r = s.client.put(s.url(path)).header("content-type", content_type).body(value.to_owned());
    assert_eq!(r.send().await.expect("put").status(), 204, "{path}");
}

/// A `/metrics` counter.
pub(crate) async fn counter(s: &TestServer, name: &str) -> f64 {
    let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Status line, header lines in order of name, body. The date and the remaining TTL differ with
/// the second the answer was made; the order of headers differs between actix's header maps.
pub(crate) fn normalized(answer: &str) -> (String, Vec<String>, String) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line").to_owned();
    let mut headers: Vec<String> = lines
        .map(|l| if l.starts_with("date: ") { "date: -" } else { l })
        .map(|l| if l.starts_with("cache-control: max-age=") { "cache-control: -" } else { l })
        .map(str::to_owned)
        .collect();
    headers.sort();
    (status, headers, body.to_owned())
}

#[tokio::test]
async fn hits_on_the_hit_path_are_the_apps_answers() {
    let s = TestServer::start();
    put(&s, "/api/v1/cache/llm_response/a%20b", "hello", "text/plain; charset=utf-8").await;
    put(&s, "/api/v1/cache/crew_config/plain", "x", "application/octet-stream").await;
    let hits_before = counter(&s, "perfd_http_hit_path_answers_total").await;
    let mut app = Raw::handed_over(&s);
    let mut fast = Raw::connect(&s);
    for path in ["/api/v1/cache/llm_response/a%20b", "/api/v1/cache/crew_config/plain"] {
        app.send(get(path, "Accept: */*\r\n").as_bytes());
        fast.send(get(path, "Accept: */*\r\n").as_bytes());
        let (by_app, by_hit_path) = (app.answer().unwrap(), fast.answer().unwrap());
        assert_eq!(normalized(&by_hit_path), normalized(&by_app), "{path}");
        assert!(by_hit_path.starts_with("HTTP/1.1 200 OK\r\n"), "{by_hit_path}");
        assert!(by_hit_path.contains("\r\nx-cache: L1\r\n"), "{by_hit_path}");
        let date = by_hit_path.lines().find(|l| l.starts_with("date: ")).expect("a date");
        assert!(
            date.ends_with(" GMT") && date.len() == "date: Fri, 27 Nov 2026 12:00:00 GMT".len(),
            "{date}"
        );
    }
    assert_eq!(body(&fast.answer_of(&get("/api/v1/cache/llm_response/a%20b", ""))), "hello");
    assert_eq!(counter(&s, "perfd_http_hit_path_answers_total").await - hits_before, 3.0);
    // Every hit is counted once, whichever path answered it.
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let hits = |strategy: &str| m["cache_statistics"]["strategies"][strategy]["l1_hits"].as_u64();
    assert_eq!((hits("llm_response"), hits("crew_config")), (Some(3), Some(2)), "{m}");
    let gets = s.timed_requests("/api/v1/cache/{strategy}/{key}", "GET").await;
    assert_eq!(gets, 6, "5 hits and the miss are timed");
}

impl Raw {
    /// A connection actix-http owns: its first request was a miss.
    pub(crate) fn handed_over(s: &TestServer) -> Raw {
        let mut c = Raw::connect(s);
        assert_eq!(status(&c.answer_of(&get("/api/v1/cache/crew_config/absent", ""))), "404");
        c
    }

    /// Sends a head one header line every 150 ms until the server closes the connection or
    /// 2.5 s pass; how long that took.
    fn trickle_a_head(&mut self) -> Duration {
        self.send(b"GET /api/v1/cache/crew_config/k HTTP/1.1\r\nHost: perfd\r\n");
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2500) && self.stream.write_all(b"X-A: b\r\n").is_ok()
        {
            if self.closed_within(Duration::from_millis(150)) {
                break;
            }
        }
        started.elapsed()
    }

    fn answer_of(&mut self, request: &str) -> String {
        self.send(request.as_bytes());
        self.answer().expect("an answer")
    }
}

fn compact_mget(keys: &[&str], extra: &str) -> String {
    let body: String = keys.iter().map(|k| format!("{k}\n")).collect();
    format!(
        "POST /api/v1/cache/mget HTTP/1.1\r\nHost: perfd\r\nContent-Type: application/x-perfd-mget\r\n\
         Accept: application/x-perfd-mget\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn compact_mgets_on_the_hit_path_are_the_apps_answers() {
    let s = TestServer::start();
    put(&s, "/api/v1/cache/crew_config/k1", "one", "text/plain").await;
    put(&s, "/api/v1/cache/crew_config/k2", "two", "text/plain").await;
    let answers_before = counter(&s, "perfd_http_hit_path_answers_total").await;
    let mut app = Raw::handed_over(&s);
    let mut fast = Raw::connect(&s);
    let request = compact_mget(&["crew_config:k1", "crew_config:absent", "crew_config:k2"], "");
    let (by_app, by_hit_path) = (app.answer_of(&request), fast.answer_of(&request));
    assert_eq!(normalized(&by_hit_path), normalized(&by_app));
    assert_eq!(body(&by_hit_path).as_bytes(), b"\x01\0\0\0\x03one\0\x01\0\0\0\x03two");
    // Then a hit on the same connection: still the hit path.
    assert_eq!(body(&fast.answer_of(&get("/api/v1/cache/crew_config/k1", ""))), "one");
    assert_eq!(counter(&s, "perfd_http_hit_path_answers_total").await - answers_before, 2.0);
    let (_, m) = s.get_json("/api/v1/metrics/cache").await;
    let c = &m["cache_statistics"]["strategies"]["crew_config"];
    assert_eq!((c["l1_hits"].as_u64(), c["misses"].as_u64()), (Some(5), Some(3)), "{m}");
    assert_eq!(s.timed_requests("/api/v1/cache/mget", "POST").await, 2);

    // What the App answers differently goes to it: a bad line, an unknown strategy, JSON.
    for (request, want) in [
        (compact_mget(&["no-colon"], ""), "400"),
        (compact_mget(&["nope:k"], ""), "404"),
        (compact_mget(&["crew_config:k1"], "Content-Encoding: gzip\r\n"), "400"),
        // The App reads the first of two Content-Types: JSON, which key lines are not.
        (
            compact_mget(&["crew_config:k1"], "")
                .replace("Content-Type: ", "Content-Type: application/json\r\nContent-Type: "),
            "400",
        ),
    ] {
        assert_eq!(status(&Raw::connect(&s).answer_of(&request)), want, "{request}");
    }
    assert_eq!(counter(&s, "perfd_http_hit_path_answers_total").await - answers_before, 2.0);
}

#[tokio::test]
async fn an_mget_shows_the_token_when_one_is_set() {
    let s = TestServer::start_with(|c| c.auth_token = Some("0123456789abcdef".into()));
    let request = compact_mget(&["crew_config:k1"], "");
    assert_eq!(status(&Raw::connect(&s).answer_of(&request)), "401");
    let wrong = compact_mget(&["crew_config:k1"], "Authorization: Bearer 0123456789abcdeX\r\n");
    assert_eq!(status(&Raw::connect(&s).answer_of(&wrong)), "401");
    // The App reads the first of two Authorization headers: the hit path leaves them to it.
    let two = "Authorization: Bearer 0123456789abcdeX\r\nAuthorization: Bearer 0123456789abcdef\r\n";
    assert_eq!(status(&Raw::connect(&s).answer_of(&compact_mget(&["crew_config:k1"], two))), "401");
    let right = compact_mget(&["crew_config:k1"], "Authorization: Bearer 0123456789abcdef\r\n");
    let answer = Raw::connect(&s).answer_of(&right);
    assert_eq!((status(&answer), body(&answer)), ("200", "\0"));
    assert_eq!(counter(&s, "perfd_http_hit_path_answers_total").await, 1.0);
}

#[tokio::test]
async fn pipelined_hits_then_other_requests_answer_in_order() {
    let s = TestServer::start();
    put(&s, "/api/v1/cache/crew_config/one", "1", "text/plain").await;
    put(&s, "/api/v1/cache/crew_config/two", "22", "text/plain").await;
    let handed_before = counter(&s, "perfd_http_connections_handed_over_total").await;
    let mut c = Raw::connect(&s);
    let mut burst = get("/api/v1/cache/crew_config/one", "") + &get("/api/v1/cache/crew_config/two", "");
    burst += "PUT /api/v1/cache/crew_config/three HTTP/1.1\r\nHost: perfd\r\nContent-Length: 3\r\n\r\n333";
    burst += &get("/api/v1/cache/crew_config/three", "");
    burst += &get("/api/v1/cache/crew_config/one", "Connection: close\r\n");
    c.send(burst.as_bytes());
    let answers: Vec<String> = std::iter::from_fn(|| c.answer()).collect();
    let seen: Vec<(&str, &str)> = answers.iter().map(|a| (status(a), body(a))).collect();
    assert_eq!(seen, [("200", "1"), ("200", "22"), ("204", ""), ("200", "333"), ("200", "1")], "{answers:?}");
    assert_eq!(counter(&s, "perfd_http_connections_handed_over_total").await - handed_before, 1.0);

    // A head that arrives a few bytes at a time, then many pipelined hits in one write.
    let mut c = Raw::connect(&s);
    for piece in get("/api/v1/cache/crew_config/two", "").as_bytes().chunks(7) {
        c.send(piece);
    }
    assert_eq!(body(&c.answer().unwrap()), "22");
    c.send(get("/api/v1/cache/crew_config/one", "").repeat(500).as_bytes());
    for i in 0..500 {
        assert_eq!(body(&c.answer().unwrap_or_else(|| panic!("answer {i}"))), "1");
    }
}

/// A request that closes the connection (`Connection: close`, or HTTP/1.0 without keep-alive)
/// is answered, then the connection closes: requests pipelined behind it are not processed (RFC
/// 9112 §9.6). actix-http answered them and kept the connection open; a PUT behind one was
/// stored.
#[tokio::test]
async fn nothing_pipelined_behind_a_closing_request_is_processed() {
    let s = TestServer::start();
    put(&s, "/api/v1/cache/crew_config/one", "1", "text/plain").await;
    let after = "PUT /api/v1/cache/crew_config/late HTTP/1.1\r\nHost: perfd\r\nContent-Length: 1\r\n\r\nx"
        .to_string()
        + &get("/api/v1/cache/crew_config/one", "");
    let closing = [
        get("/api/v1/cache/crew_config/one", "Connection: close\r\n"),
        get("/healthz", "Connection: keep-alive, close\r\n"),
        "GET /api/v1/cache/crew_config/one HTTP/1.0\r\n\r\n".to_string(),
        "PUT /api/v1/cache/crew_config/two HTTP/1.1\r\nHost: perfd\r\nConnection: close\r\nContent-Length: 2\r\n\r\n22"
            .to_string(),
    ];
    for first in &closing {
        for handed in [false, true] {
            let mut c = if handed { Raw::handed_over(&s) } else { Raw::connect(&s) };
            c.send((first.clone() + &after).as_bytes());
            let answers: Vec<String> = std::iter::from_fn(|| c.answer()).collect();
            assert_eq!(answers.len(), 1, "{first:?} (handed over: {handed}): {answers:?}");
            // An HTTP/1.0 answer closes by default; a 1.1 answer says it.
            let a = answers[0].to_ascii_lowercase();
            assert!(a.starts_with("http/1.0") || a.contains("connection: close"), "{answers:?}");
            let r = s.client.get(s.url("/api/v1/cache/crew_config/late")).send().await.unwrap();
            assert_eq!(r.status(), 404, "{first:?} (handed over: {handed}): the PUT behind it was stored");
        }
    }
    // Keep-alive requests still pipeline.
    let mut c = Raw::connect(&s);
    c.send(
        (get("/healthz", "Connection: keep-alive\r\n") + &get("/api/v1/cache/crew_config/one", ""))
            .as_bytes(),
    );
    assert_eq!(status(&c.answer().unwrap()), "200");
    assert_eq!(body(&c.answer().unwrap()), "1");
}

/// What the hit path does not answer reaches the App with every byte, and gets the App's answer.
#[tokio::test]
async fn requests_the_hit_path_leaves_to_actix_get_the_apps_answers() {
    let s = TestServer::start();
    put(&s, "/api/v1/cache/crew_config/k", "v", "text/plain").await;
    let hit = "/api/v1/cache/crew_config/k";
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("GET {hit} HTTP/1.0\r\n\r\n"), "200", "v"),
        (get(&format!("{hit}?wait=1s"), ""), "200", "v"),
        (format!("HEAD {hit} HTTP/1.1\r\nHost: perfd\r\n\r\n"), "200", ""),
        // HTTP/1.1 needs exactly one Host (RFC 9112); actix-http refuses others with a 400.
        (format!("GET {hit} HTTP/1.1\r\n\r\n"), "400", ""),
        (get(hit, "Host: again\r\n"), "400", ""),
        (get(hit, "Content-Length: 0\r\n"), "200", "v"),
        (get(hit, &format!("X-Pad: {}\r\n", "p".repeat(9000))), "200", "v"),
        (get("/api/v1/cache/crew_config/%FF", ""), "400", ""),
        (get("/api/v1/cache/nope/k", ""), "404", ""),
        ("DELETE /api/v1/cache/crew_config/gone HTTP/1.1\r\nHost: perfd\r\n\r\n".into(), "200", ""),
        // A websocket handshake's body is the rest of the connection: a GET must not wait for it.
        (get(hit, "Connection: Upgrade\r\nUpgrade: websocket\r\n"), "200", "v"),
        (get("/api/v1/cache/crew_config/absent", "Connection: Upgrade\r\nUpgrade: websocket\r\n"), "404", ""),
        // Other methods would read it until the client leaves: refused at once.
        (compact_mget(&["crew_config:k"], "Upgrade: websocket\r\n"), "400", ""),
        (
            format!("PUT {hit} HTTP/1.1\r\nHost: perfd\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\nw"),
            "400",
            "",
        ),
    ];
    for (request, want_status, want_body) in cases {
        let mut c = Raw::connect(&s);
        c.send(request.as_bytes());
        let answer = c.answer_with(!request.starts_with("HEAD")).expect("an answer");
        assert_eq!(status(&answer), want_status, "{request:.80}: {answer}");
        if want_status == "200" && !want_body.is_empty() {
            assert_eq!(body(&answer), want_body, "{request:.80}");
        }
    }
    // Not HTTP at all: a JSON 400 (actix-http's had no body).
    let mut c = Raw::connect(&s);
    let answer = c.answer_of("NOT HTTP\r\n\r\n");
    assert_eq!(status(&answer), "400");
    assert!(body(&answer).contains("\"code\":\"invalid_input\""), "{answer}");
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_on_time() {
    let s = TestServer::start_with(|c| {
        c.http.keep_alive = Duration::from_millis(500);
        c.http.request_timeout = Duration::from_secs(1);
    });
    put(&s, "/api/v1/cache/crew_config/k", "v", "text/plain").await;
    let mut idle = Raw::connect(&s);
    assert_eq!(body(&idle.answer_of(&get("/api/v1/cache/crew_config/k", ""))), "v");
    let answered = Instant::now();
    assert!(idle.closed_within(Duration::from_secs(10)), "keep-alive closes an idle connection");
    assert!(answered.elapsed() >= Duration::from_millis(400), "closed after {:?}", answered.elapsed());

    // A head that stops coming: a JSON 408, then the connection closes.
    let mut slow = Raw::connect(&s);
    slow.send(b"GET /api/v1/cache/crew_config/k HTTP/1.1\r\nHost: perfd\r\n");
    let answer = slow.answer().expect("408");
    assert_eq!(status(&answer), "408");
    assert!(body(&answer).contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(slow.closed_within(Duration::from_secs(10)));

    // A head that comes a line at a time has the request timeout from its first byte, not from
    // its last: otherwise a line a second would hold a connection for hours.
    let took = Raw::connect(&s).trickle_a_head();
    assert!(took < Duration::from_millis(2200), "closed after {took:?}");
}

/// actix-http times only a connection's first head; perfd times every head on a connection it
/// handed over too, and leaves bodies untimed.
#[tokio::test]
async fn heads_on_handed_over_connections_are_timed_and_bodies_are_not() {
    let s = TestServer::start_with(|c| c.http.request_timeout = Duration::from_secs(1));
    // A body that takes longer than the request timeout is taken.
    let mut slow_body = Raw::handed_over(&s);
    slow_body
        .send(b"PUT /api/v1/cache/crew_config/k HTTP/1.1\r\nHost: perfd\r\nContent-Length: 6\r\n\r\nabc");
    std::thread::sleep(Duration::from_millis(1500)); // the slowness under test
    slow_body.send(b"def");
    assert_eq!(status(&slow_body.answer().expect("an answer")), "204");
    assert_eq!(body(&slow_body.answer_of(&get("/api/v1/cache/crew_config/k", ""))), "abcdef");

    // A later head that stops halfway gets a JSON 408 (actix-http's own answer to a first head
    // is an empty one; this closed without a word), and one that comes a line at a time is
    // closed too.
    let mut stalled = Raw::handed_over(&s);
    stalled.send(b"GET /api/v1/cache/crew_config/k HTTP/1.1\r\n");
    let started = Instant::now();
    let answer = stalled.answer().expect("a 408");
    assert_eq!(status(&answer), "408", "{answer}");
    assert!(body(&answer).contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(stalled.closed_within(Duration::from_secs(10)));
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    let took = Raw::handed_over(&s).trickle_a_head();
    assert!(took < Duration::from_millis(2200), "closed after {took:?}");
}

/// A graceful stop closes idle hit-path connections at once instead of waiting out keep-alive.
#[tokio::test]
async fn a_graceful_stop_closes_idle_connections() {
    let mut s = TestServer::start();
    put(&s, "/api/v1/cache/crew_config/k", "v", "text/plain").await;
    let mut idle = Raw::connect(&s);
    assert_eq!(body(&idle.answer_of(&get("/api/v1/cache/crew_config/k", ""))), "v");
    // Connected, nothing sent yet: as idle (it held the stop for the 10 s shutdown timeout).
    let mut fresh = Raw::connect(&s);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter(&s, "perfd_http_connections_total").await < 3.0 {
        assert!(Instant::now() < deadline, "the fresh connection was never taken");
    }
    let started = Instant::now();
    s.stop();
    // Without the graceful signal the stop waits for the 5 s keep-alive.
    assert!(started.elapsed() < Duration::from_secs(4), "stop took {:?}", started.elapsed());
    assert!(idle.closed_within(Duration::from_secs(1)));
    assert!(fresh.closed_within(Duration::from_secs(1)));
}
