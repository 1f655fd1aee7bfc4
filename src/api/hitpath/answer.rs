//! The hit path's answer to one request: parsed with httparse, checked to be a plain GET of an
//! entry or a compact mget, looked up in L1 and written as the App would write it. No I/O here.

use super::super::HostPolicy;
use super::super::cache::{percent_decoded, split_entry_path};
use super::super::mget::{MAX_MGET_KEYS, MGET_BINARY, MGET_ROUTE, binary_body, binary_len, mget_lines};
use crate::cache::{Entry, TieredCache, is_header_text};
use std::cell::RefCell;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Headers a hit may carry; more go to actix-http.
const MAX_HEADERS: usize = 32;
/// Largest mget body answered here (16 keys take about 350 bytes); larger ones go to actix-http.
const MAX_MGET_BODY: usize = 16 * 1024;

/// What the request at the start of the buffer is.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A GET of an entry, answered; the request was this many bytes.
    Hit(usize),
    /// A compact mget, answered; the request (head and body) was this many bytes.
    Mget(usize),
    /// Not complete yet.
    Partial,
    /// For actix-http.
    Other,
}

/// Answers the request at the start of `input` into `answers` if it is a plain GET of an entry
/// L1 holds at `now_ms`, or a compact mget (key lines in, binary answer out) while no L2 is
/// configured; `auth_token` is the configured one (an mget is a POST, so it must show it).
/// A `Host` that `hosts` refuses, or any `Origin`, goes to the App, which answers it.
/// Public for the criterion bench.
pub fn answer_hit(
    cache: &TieredCache,
    auth_token: Option<&str>,
    hosts: &HostPolicy,
    input: &[u8],
    answers: &mut Vec<u8>,
    now_ms: i64,
) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(_) => return Step::Other,
    };
    if req.version != Some(1) {
        return Step::Other;
    }
    match (req.method, req.path) {
        (Some("GET"), Some(path)) if plain_headers(req.headers, hosts) => {
            entry(cache, path, answers, now_ms).map_or(Step::Other, |()| Step::Hit(head_len))
        }
        (Some("POST"), Some(MGET_ROUTE)) => {
            let Some(body_len) = mget_headers(req.headers, auth_token, hosts) else {
                return Step::Other;
            };
            let Some(body) = input.get(head_len..head_len + body_len) else {
                return Step::Partial;
            };
            mget(cache, body, answers, now_ms).map_or(Step::Other, |()| Step::Mget(head_len + body_len))
        }
        _ => Step::Other,
    }
}

/// A GET of `path`, if it is an entry L1 holds.
fn entry(cache: &TieredCache, path: &str, answers: &mut Vec<u8>, now_ms: i64) -> Option<()> {
    if !path.bytes().all(plain_path_byte) {
        return None;
    }
    let (strategy, key) = split_entry_path(path)?;
    let (strategy, key) = (percent_decoded(strategy).ok()?, percent_decoded(key).ok()?);
    let entry = cache.get_l1_hit(&strategy, &key, now_ms)?;
    write_hit(answers, &entry, now_ms);
    Some(())
}

/// A compact mget of `body`'s key lines, answered as the App answers it (`mget::mget_answer`);
/// `None` leaves every error to the App. Only without L2, so the lookup never waits.
fn mget(cache: &TieredCache, body: &[u8], answers: &mut Vec<u8>, now_ms: i64) -> Option<()> {
    if cache.has_l2() {
        return None;
    }
    let pairs = mget_lines(body).ok().filter(|p| p.len() <= MAX_MGET_KEYS)?;
    // Without L2 `get_many` completes on its first poll; keys are validated before anything is
    // counted, so an error here leaves the statistics as they were.
    let lookup = std::pin::pin!(cache.get_many(&pairs));
    let Poll::Ready(Ok(found)) = lookup.poll(&mut Context::from_waker(Waker::noop())) else {
        return None;
    };
    let mut digits = itoa::Buffer::new();
    answers.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: ");
    answers.extend_from_slice(digits.format(binary_len(&found)).as_bytes());
    answers.extend_from_slice(b"\r\ncontent-type: ");
    answers.extend_from_slice(MGET_BINARY.as_bytes());
    answers.extend_from_slice(b"\r\ndate: ");
    http_date(now_ms, |date| answers.extend_from_slice(date));
    answers.extend_from_slice(b"\r\n\r\n");
    binary_body(&found, answers);
    Some(())
}

/// The body length of an mget this path may answer: exactly one `Host` and one plain
/// `Content-Length` (at most [`MAX_MGET_BODY`]), one `Content-Type` naming key lines and one
/// `Accept` asking for the binary answer, the right bearer token in the one `Authorization` when
/// one is configured, and nothing about encodings, upgrades, `Expect` or an end to keep-alive.
/// The App reads the first of repeated headers and only visible ASCII
/// (`HeaderValue::to_str`), so a repeated one or another byte there goes to it.
fn mget_headers(
    headers: &[httparse::Header<'_>],
    auth_token: Option<&str>,
    hosts: &HostPolicy,
) -> Option<usize> {
    let (mut host_count, mut lengths, mut types, mut accepts, mut tokens) = (0, 0, 0, 0, 0);
    let (mut length, mut compact_in, mut compact_out, mut authorized) =
        (0, false, false, auth_token.is_none());
    for h in headers {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        let mentions = |media_type: &str| memchr::memmem::find(h.value, media_type.as_bytes()).is_some();
        if is("host") {
            host_count += 1;
            if !hosts.host_allowed(h.value) {
                return None;
            }
        } else if is("content-length") {
            lengths += 1;
            let digits =
                std::str::from_utf8(h.value).ok().filter(|v| v.bytes().all(|b| b.is_ascii_digit()))?;
            length = digits.parse().ok().filter(|&n| n <= MAX_MGET_BODY)?;
        } else if is("content-type") {
            types += 1;
            compact_in = is_header_text(h.value) && mentions(MGET_BINARY);
        } else if is("accept") {
            accepts += 1;
            compact_out = is_header_text(h.value) && mentions(MGET_BINARY);
        } else if is("authorization") {
            tokens += 1;
            let given = h.value.strip_prefix(b"Bearer ").filter(|v| is_header_text(v)).unwrap_or(b"");
            authorized = auth_token.is_some_and(|t| super::super::constant_time_eq(given, t.as_bytes()));
        } else if is("connection") {
            if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if is("transfer-encoding")
            || is("content-encoding")
            || is("expect")
            || is("upgrade")
            || is("origin")
        {
            return None;
        }
    }
    let single = host_count == 1 && lengths == 1 && types == 1 && accepts == 1 && tokens <= 1;
    (single && compact_in && compact_out && authorized).then_some(length)
}

/// Headers a GET hit may carry: exactly one `Host` (actix-http answers 400 otherwise, RFC
/// 9112) that `hosts` allows, no `Origin`, and nothing about a body, an upgrade or an end to
/// keep-alive.
fn plain_headers(headers: &[httparse::Header<'_>], hosts: &HostPolicy) -> bool {
    let mut host_count = 0;
    for h in headers {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        if is("host") {
            host_count += 1;
            if !hosts.host_allowed(h.value) {
                return false;
            }
        } else if is("connection") {
            if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return false;
            }
        } else if is("content-length")
            || is("transfer-encoding")
            || is("expect")
            || is("upgrade")
            || is("origin")
        {
            return false;
        }
    }
    host_count == 1
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
    let content_type = e.content_type.as_deref().filter(|ct| is_header_text(ct.as_bytes()));
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
mod tests;
