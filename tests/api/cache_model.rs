//! The cache against a model (a map of key to value and content type), through the real server:
//! random sequences of PUT, GET, DELETE, compact mget, invalidate, warm and clear must answer
//! what the model says. Hits and mgets are read on two connections: one that makes every kind of
//! request (actix-http), and one that only reads what is there, so it stays on the hit path and
//! must see every write made on the other at once.

use crate::helpers::TestServer;
use crate::hitpath::{Raw, counter};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
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

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.split("\r\n").find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// Runs `ops` on `s` after clearing the cache (`clear`: `{"level": ...}`, for the start and for
/// [`Op::Clear`]), checking every answer against the model; adds the requests made on the reading
/// connection to `reads`.
fn run(s: &TestServer, ops: &[Op], clear: &str, reads: &std::cell::Cell<u64>) -> Result<(), TestCaseError> {
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
            Op::Clear => {
                let answer = exchange(&mut any, &json_post("/api/v1/metrics/cache/clear", clear))?;
                prop_assert!(answer.starts_with("HTTP/1.1 200 "), "{}", answer);
                model.clear();
            }
        }
    }
    Ok(())
}

/// Runs `cases` sequences on `s`; how many requests went on the reading connection.
pub(crate) fn the_model_holds(s: &TestServer, clear: &str, cases: u32) -> u64 {
    let reads = std::cell::Cell::new(0);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    if let Err(e) = TestRunner::new(config).run(&ops(), |ops| run(s, &ops, clear, &reads)) {
        panic!("{e}");
    }
    reads.get()
}

#[tokio::test]
async fn the_cache_answers_what_a_model_says() {
    let s = TestServer::start();
    let answered_before = counter(&s, "perfd_http_hit_path_answers_total").await;
    let reads = the_model_holds(&s, r#"{"level":"l1"}"#, 200);
    // Every request on the reading connection, and no other (the other starts with a clear,
    // which hands it to actix-http), was answered by the hit path.
    let answered = counter(&s, "perfd_http_hit_path_answers_total").await - answered_before;
    assert!(reads > 100 && answered == reads as f64, "{answered} of {reads}");
}
