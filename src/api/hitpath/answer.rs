//! The hit path's answer to one request head: parsed with httparse, checked to be a plain GET
//! of an entry, looked up in L1 and written as the App would write it. No I/O here.

use super::super::cache::{percent_decoded, split_entry_path};
use crate::cache::{Entry, TieredCache};
use std::cell::RefCell;
use std::time::Duration;

/// Headers a hit may carry; more go to actix-http.
const MAX_HEADERS: usize = 32;

/// What the head at the start of the buffer is.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Answered; the head was this many bytes.
    Hit(usize),
    /// Not complete yet.
    Partial,
    /// For actix-http.
    Other,
}

/// Answers the head at the start of `input` into `answers` if it is a plain GET of an entry L1
/// holds at `now_ms` (public for the criterion bench).
pub fn answer_hit(cache: &TieredCache, input: &[u8], answers: &mut Vec<u8>, now_ms: i64) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(_) => return Step::Other,
    };
    if req.method != Some("GET") || req.version != Some(1) || !plain_headers(req.headers) {
        return Step::Other;
    }
    let Some((strategy, key)) =
        req.path.filter(|p| p.bytes().all(plain_path_byte)).and_then(split_entry_path)
    else {
        return Step::Other;
    };
    let (Ok(strategy), Ok(key)) = (percent_decoded(strategy), percent_decoded(key)) else {
        return Step::Other;
    };
    let Some(entry) = cache.get_l1_hit(&strategy, &key, now_ms) else {
        return Step::Other;
    };
    write_hit(answers, &entry, now_ms);
    Step::Hit(head_len)
}

/// Headers a hit may carry: exactly one `Host` (actix-http answers 400 otherwise, RFC 9112), and
/// nothing about a body, an upgrade or an end to keep-alive.
fn plain_headers(headers: &[httparse::Header<'_>]) -> bool {
    let mut hosts = 0;
    for h in headers {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        if is("host") {
            hosts += 1;
        } else if is("connection") {
            if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return false;
            }
        } else if is("content-length") || is("transfer-encoding") || is("expect") || is("upgrade") {
            return false;
        }
    }
    hosts == 1
}

/// RFC 3986 path characters (unreserved, sub-delims, `:`, `@`, `/`, `%`): no query, fragment or
/// byte that actix-http's URI parser might read otherwise.
fn plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+')
        || matches!(b, b',' | b';' | b'=' | b':' | b'@' | b'/' | b'%')
}

/// The App's answer to a hit (`cache::hit_response` through actix-http's encoder): the same
/// status, headers and body (actix's header map has no fixed order); the API test
/// `hits_on_the_hit_path_are_the_apps_answers` compares them.
fn write_hit(out: &mut Vec<u8>, e: &Entry, now_ms: i64) {
    let max_age = (e.ttl_ms(now_ms) + 999) / 1000;
    let content_type = e.content_type.as_deref().filter(|ct| valid_header_value(ct));
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: ");
    out.extend_from_slice(digits.format(e.value.len()).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(content_type.unwrap_or("application/octet-stream").as_bytes());
    out.extend_from_slice(b"\r\nx-cache: L1\r\ncache-control: max-age=");
    out.extend_from_slice(digits.format(max_age).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    http_date(now_ms, |date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&e.value);
}

/// What `HeaderValue::from_str` takes (the cache stores no other: see `cache::warm`).
fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The IMF-fixdate of `now_ms`, formatted once a second per thread.
pub(super) fn http_date(now_ms: i64, f: impl FnOnce(&[u8])) {
    thread_local!(static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) });
    let second = now_ms.div_euclid(1000);
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            let time = std::time::UNIX_EPOCH + Duration::from_secs(second.max(0) as u64);
            *text = httpdate::fmt_http_date(time);
            *at = second;
        }
        f(text.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    async fn cache_with(key: &str, value: &str) -> TieredCache {
        let cache =
            TieredCache::new(crate::config::Config::for_test(std::path::Path::new("/nonexistent")).cache)
                .expect("cache");
        let value = Bytes::copy_from_slice(value.as_bytes());
        cache.set("crew_config", key, value, Some("text/plain"), None).await.expect("set");
        cache
    }

    fn answer(cache: &TieredCache, head: &str) -> (Step, String) {
        let mut out = Vec::new();
        let step = answer_hit(cache, head.as_bytes(), &mut out, crate::model::now_ms());
        (step, String::from_utf8(out).expect("ascii"))
    }

    #[tokio::test]
    async fn a_plain_get_of_an_entry_is_answered_and_only_its_head_is_taken() {
        let cache = cache_with("a b", "hello").await;
        let first =
            "GET /api/v1/cache/crew_config/a%20b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
        let (step, out) = answer(&cache, &format!("{first}GET /next HTTP/1.1\r\n"));
        assert_eq!(step, Step::Hit(first.len()));
        let (head, body) = out.split_once("\r\n\r\n").expect("a head");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nx-cache: L1\r\ncache-control: max-age=3600\r\ndate: "), "{head}");
        assert!(head.ends_with(" GMT"), "{head}");
        assert_eq!(body, "hello");
    }

    #[tokio::test]
    async fn anything_but_a_plain_hit_is_left_to_actix_http() {
        let cache = cache_with("k", "v").await;
        let hit = "/api/v1/cache/crew_config/k";
        let other = [
            format!("GET {hit} HTTP/1.1\r\n\r\n"),                       // no Host
            format!("GET {hit} HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), // two
            format!("GET {hit} HTTP/1.0\r\nHost: a\r\n\r\n"),            // HTTP/1.0
            format!("HEAD {hit} HTTP/1.1\r\nHost: a\r\n\r\n"),
            format!("GET {hit}?wait=1s HTTP/1.1\r\nHost: a\r\n\r\n"),
            format!("GET {hit}#x HTTP/1.1\r\nHost: a\r\n\r\n"),
            format!("GET {hit} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            format!("GET {hit} HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n"),
            format!("GET {hit} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            format!("GET {hit} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            format!("GET {hit} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"),
            format!("GET {hit} HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-A: b\r\n".repeat(40)),
            "GET /api/v1/cache/crew_config/absent HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "GET /api/v1/cache/nope/k HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "GET /api/v1/cache/crew_config/%FF HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "GET /api/v1/cache/crew_config/{k} HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "GET /api/v1/series HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            "NOT HTTP\r\n\r\n".into(),
        ];
        for head in other {
            let (step, out) = answer(&cache, &head);
            assert_eq!((step, out.as_str()), (Step::Other, ""), "{head:.80}");
        }
        for partial in [format!("GET {hit} HTTP/1.1\r\nHost: a\r\n"), "GE".into(), String::new()] {
            assert_eq!(answer(&cache, &partial).0, Step::Partial, "{partial}");
        }
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut out = Vec::new();
        http_date(1_795_780_800_000, |d| out.extend_from_slice(d));
        assert_eq!(out, b"Fri, 27 Nov 2026 12:00:00 GMT");
    }
}
