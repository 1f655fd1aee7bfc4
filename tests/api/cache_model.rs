//! The cache against a model (a map of key to value and content type), through the real server:
//! random sequences of PUT, GET, DELETE, compact mget, invalidate, warm and clear must answer
//! what the model says. Hits and mgets are read on two connections: one that makes every kind of
//! request (actix-http), and one that only reads what is there, so it stays on the hit path and
//! must see every write made on the other at once. Restarts in between must lose nothing (the
//! warm restart).

use crate::helpers::{TestServer, property};
use crate::hitpath::{Raw, body};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;

/// Keys as stored, and as written in a path.
const KEYS: &[(&str, &str)] = &[("a", "a"), ("b", "b"), ("c", "c"), ("d e", "d%20e"), ("x/y", "x%2Fy")];
const VALUES: &[&str] = &["one", "two", "three!", "", "v\u{e9}"];
const TYPES: &[Option<&str>] = &[Some("text/plain"), Some("application/json"), None];
/// Which keys a pattern removes.
type Matches = fn(&str) -> bool;
/// Glob patterns, with the keys each removes.
const PATTERNS: &[(&str, Matches)] = &[
    ("crew_config:*", |_| true),
    ("crew_config:[ab]", |k| k == "a" || k == "b"),
    ("crew_config:?", |k| k.chars().count() == 1),
    ("crew_config:x*", |k| k.starts_with('x')),
    ("crew_config:d?e", |k| k == "d e"),
];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, usize, usize),
    /// On the connection that only reads (when the key is there) or on the other.
    Get(usize, bool),
    Delete(usize),
    Mget(Vec<usize>, bool),
    Invalidate(usize),
    Warm(Vec<(usize, usize)>),
    Clear,
    /// Stop and start on the same data dir: the warm restart keeps every entry.
    Restart,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let key = 0..KEYS.len();
    let op = prop_oneof![
        4 => (key.clone(), 0..VALUES.len(), 0..TYPES.len()).prop_map(|(k, v, t)| Op::Put(k, v, t)),
        7 => (key.clone(), any::<bool>()).prop_map(|(k, reader)| Op::Get(k, reader)),
        2 => key.clone().prop_map(Op::Delete),
        3 => (prop::collection::vec(key.clone(), 1..6), any::<bool>()).prop_map(|(k, reader)| Op::Mget(k, reader)),
        1 => (0..PATTERNS.len()).prop_map(Op::Invalidate),
        1 => prop::collection::vec((key, 0..VALUES.len()), 1..4).prop_map(Op::Warm),
        1 => Just(Op::Clear),
        1 => Just(Op::Restart),
    ];
    prop::collection::vec(op, 1..40)
}

/// What the model holds: key → (value, content type as served).
type Model = BTreeMap<&'static str, (&'static str, &'static str)>;

fn exchange(c: &mut Raw, request: &str) -> Result<String, TestCaseError> {
    c.send(request.as_bytes());
    c.answer_with(true).ok_or_else(|| TestCaseError::fail(format!("closed: {request}")))
}

fn json_post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: perfd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.split("\r\n").find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The hit path's answers so far, read over a connection of its own (not one of them).
fn hit_path_answers(s: &TestServer) -> Result<u64, TestCaseError> {
    let metrics = exchange(&mut Raw::connect(s), "GET /metrics HTTP/1.1\r\nHost: perfd\r\n\r\n")?;
    let line = body(&metrics).lines().find_map(|l| l.strip_prefix("perfd_http_hit_path_answers_total "));
    line.and_then(|n| n.parse::<f64>().ok())
        .map(|n| n as u64)
        .ok_or_else(|| TestCaseError::fail("no counter"))
}

/// Per sequence: requests on the reading connection, and hit-path answers (over restarts).
#[derive(Default)]
pub(crate) struct Tally {
    reads: std::cell::Cell<u64>,
    answered: std::cell::Cell<u64>,
}

/// Runs `ops` on `s` after clearing the cache (`clear`: `{"level": ...}`, for the start and for
/// [`Op::Clear`]), checking every answer against the model; counts into `tally`.
fn run(s: &mut TestServer, ops: &[Op], clear: &str, tally: &Tally) -> Result<(), TestCaseError> {
    let reads = &tally.reads;
    let mut since = hit_path_answers(s)?;
    let (mut any, mut reader) = (Raw::connect(s), Raw::connect(s));
    let cleared = exchange(&mut any, &json_post("/api/v1/metrics/cache/clear", clear))?;
    prop_assert!(cleared.starts_with("HTTP/1.1 200 "), "{}", cleared);
    let mut model = Model::new();
    for op in ops {
        match op.clone() {
            Op::Put(k, v, t) => {
                let (value, content_type) = (VALUES[v], TYPES[t]);
                let ct = content_type.map(|t| format!("Content-Type: {t}\r\n")).unwrap_or_default();
                let put = format!(
                    "PUT /api/v1/cache/crew_config/{} HTTP/1.1\r\nHost: perfd\r\n{ct}Content-Length: {}\r\n\r\n{value}",
                    KEYS[k].1,
                    value.len()
                );
                let answer = exchange(&mut any, &put)?;
                prop_assert!(answer.starts_with("HTTP/1.1 204 "), "{}", answer);
                model.insert(KEYS[k].0, (value, content_type.unwrap_or("application/octet-stream")));
            }
            Op::Get(k, on_reader) => {
                let get =
                    format!("GET /api/v1/cache/crew_config/{} HTTP/1.1\r\nHost: perfd\r\n\r\n", KEYS[k].1);
                let want = model.get(KEYS[k].0);
                // The reader only reads what is there, so it never leaves the hit path.
                let c = if on_reader && want.is_some() { &mut reader } else { &mut any };
                reads.set(reads.get() + u64::from(on_reader && want.is_some()));
                let answer = exchange(c, &get)?;
                match want {
                    Some((value, content_type)) => {
                        prop_assert!(answer.starts_with("HTTP/1.1 200 "), "{:?}: {}", op, answer);
                        prop_assert_eq!(body(&answer), *value);
                        prop_assert_eq!(header(&answer, "content-type"), Some(*content_type));
                    }
                    None => prop_assert!(answer.starts_with("HTTP/1.1 404 "), "{:?}: {}", op, answer),
                }
            }
            Op::Delete(k) => {
                let delete =
                    format!("DELETE /api/v1/cache/crew_config/{} HTTP/1.1\r\nHost: perfd\r\n\r\n", KEYS[k].1);
                let answer = exchange(&mut any, &delete)?;
                let was = model.remove(KEYS[k].0).is_some();
                prop_assert_eq!(body(&answer), format!("{{\"deleted\":{was}}}"));
            }
            Op::Mget(keys, on_reader) => {
                let lines: String = keys.iter().map(|&k| format!("crew_config:{}\n", KEYS[k].0)).collect();
                let mget = format!(
                    "POST /api/v1/cache/mget HTTP/1.1\r\nHost: perfd\r\nContent-Type: application/x-perfd-mget\r\n\
                     Accept: application/x-perfd-mget\r\nContent-Length: {}\r\n\r\n{lines}",
                    lines.len()
                );
                reads.set(reads.get() + u64::from(on_reader));
                let answer = exchange(if on_reader { &mut reader } else { &mut any }, &mget)?;
                let mut want = Vec::new();
                for &k in &keys {
                    match model.get(KEYS[k].0) {
                        Some((value, _)) => {
                            want.push(1);
                            want.extend_from_slice(&(value.len() as u32).to_be_bytes());
                            want.extend_from_slice(value.as_bytes());
                        }
                        None => want.push(0),
                    }
                }
                prop_assert_eq!(body(&answer).as_bytes(), &want[..], "{:?}", op);
            }
            Op::Invalidate(p) => {
                let (pattern, matches) = PATTERNS[p];
                let answer = exchange(
                    &mut any,
                    &json_post("/api/v1/cache/invalidate", &format!(r#"{{"pattern":"{pattern}"}}"#)),
                )?;
                let before = model.len();
                model.retain(|k, _| !matches(k));
                let removed: serde_json::Value = serde_json::from_str(body(&answer))
                    .map_err(|e| TestCaseError::fail(format!("{e}: {answer}")))?;
                prop_assert_eq!(
                    removed["removed"].as_u64(),
                    Some((before - model.len()) as u64),
                    "{:?}: {}",
                    op,
                    answer
                );
            }
            Op::Warm(entries) => {
                let list: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|&(k, v)| serde_json::json!({"strategy": "crew_config", "key": KEYS[k].0, "value": VALUES[v]}))
                    .collect();
                let answer = exchange(
                    &mut any,
                    &json_post("/api/v1/cache/warm", &serde_json::json!({"entries": list}).to_string()),
                )?;
                prop_assert_eq!(body(&answer), format!("{{\"loaded\":{}}}", entries.len()));
                for (k, v) in entries {
                    model.insert(KEYS[k].0, (VALUES[v], "application/octet-stream"));
                }
            }
            Op::Restart => {
                tally.answered.set(tally.answered.get() + hit_path_answers(s)? - since);
                s.restart();
                since = hit_path_answers(s)?;
                (any, reader) = (Raw::connect(s), Raw::connect(s));
                // Not a hit: the connection that makes every kind of request is actix-http's.
                let health = exchange(&mut any, "GET /healthz HTTP/1.1\r\nHost: perfd\r\n\r\n")?;
                prop_assert!(health.starts_with("HTTP/1.1 200 "), "{}", health);
            }
            Op::Clear => {
                let answer = exchange(&mut any, &json_post("/api/v1/metrics/cache/clear", clear))?;
                prop_assert!(answer.starts_with("HTTP/1.1 200 "), "{}", answer);
                model.clear();
            }
        }
    }
    tally.answered.set(tally.answered.get() + hit_path_answers(s)? - since);
    Ok(())
}

/// Runs `cases` sequences on `s` (restarted by some of them).
pub(crate) fn the_model_holds(s: TestServer, clear: &str, cases: u32) -> Tally {
    let tally = Tally::default();
    let server = std::cell::RefCell::new(Some(s));
    property(cases, ops(), |ops| {
        let mut s = server.borrow_mut().take().expect("the server");
        let result = run(&mut s, &ops, clear, &tally);
        *server.borrow_mut() = Some(s);
        result
    });
    tally
}

#[tokio::test]
async fn the_cache_answers_what_a_model_says() {
    let tally = the_model_holds(TestServer::start(), r#"{"level":"l1"}"#, 200);
    // Every request on the reading connection, and no other (the other starts with a request
    // that is not a hit, which hands it to actix-http), was answered by the hit path.
    let (reads, answered) = (tally.reads.get(), tally.answered.get());
    assert!(reads > 100 && answered == reads, "{answered} of {reads}");
}
