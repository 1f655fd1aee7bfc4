//! Tests of the hit path's answer to one request: what is a hit or a compact mget, what is
//! left to actix-http, and (property) that only whole requests are answered.

use super::*;
use bytes::Bytes;
use proptest::prelude::*;

async fn cache_with(key: &str, value: &str) -> TieredCache {
    let cache = TieredCache::new(crate::config::Config::for_test(std::path::Path::new("/nonexistent")).cache)
        .expect("cache");
    let value = Bytes::copy_from_slice(value.as_bytes());
    cache.set("crew_config", key, value, Some("text/plain"), None).await.expect("set");
    cache
}

fn answer(cache: &TieredCache, head: &str) -> (Step, String) {
    let mut out = Vec::new();
    let step =
        answer_hit(cache, None, &HostPolicy::default(), head.as_bytes(), &mut out, crate::model::now_ms());
    (step, String::from_utf8(out).expect("ascii"))
}

#[tokio::test]
async fn a_plain_get_of_an_entry_is_answered_and_only_its_head_is_taken() {
    let cache = cache_with("a b", "hello").await;
    let first = "GET /api/v1/cache/crew_config/a%20b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
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

#[tokio::test]
async fn a_compact_mget_is_answered_once_its_body_is_in() {
    let cache = cache_with("k", "v").await;
    let head = |extra: &str, len: usize| {
        format!(
            "POST /api/v1/cache/mget HTTP/1.1\r\nHost: a\r\nContent-Type: {MGET_BINARY}\r\n\
             Accept: {MGET_BINARY}\r\n{extra}Content-Length: {len}\r\n\r\n"
        )
    };
    let body = "crew_config:k\ncrew_config:x\n";
    let whole = head("", body.len()) + body;
    let (step, out) = answer(&cache, &whole);
    assert_eq!(step, Step::Mget(whole.len()));
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-type: application/x-perfd-mget")
    );
    assert!(out.ends_with("\r\n\r\n\x01\0\0\0\x01v\0"), "{out:?}");
    assert_eq!(answer(&cache, &whole[..whole.len() - 1]).0, Step::Partial, "the body is not all in");
    let other = [
        head("", MAX_MGET_BODY + 1) + body,
        head("Content-Length: 3\r\n", body.len()) + body,
        head("Transfer-Encoding: chunked\r\n", body.len()) + body,
        head("Expect: 100-continue\r\n", body.len()) + body,
        head("Connection: close\r\n", body.len()) + body,
        head("", body.len()).replace("Accept: application/x-perfd-mget\r\n", "") + body,
        head("", body.len()).replace(&format!("Content-Length: {}", body.len()), "Content-Length: +27")
            + body,
        head("", 5) + "nope:k",
        // The App reads the first of two (JSON here) and only visible ASCII.
        head("Content-Type: application/json\r\n", body.len()) + body,
        head("Accept: application/json\r\n", body.len()) + body,
        head("", body.len())
            .replace("Accept: application/x-perfd-mget", "Accept: application/x-perfd-mget, \u{e9}")
            + body,
    ];
    for request in other {
        assert_eq!(answer(&cache, &request), (Step::Other, String::new()), "{request}");
    }
    // With a token: the one Authorization must show it; the App reads the first of two.
    let with_token = |auth: &str| {
        let request = head(auth, body.len()) + body;
        answer_hit(
            &cache,
            Some("s3cret"),
            &HostPolicy::default(),
            request.as_bytes(),
            &mut Vec::new(),
            crate::model::now_ms(),
        )
    };
    assert_eq!(with_token("Authorization: Bearer s3cret\r\n"), Step::Mget(whole.len() + 30));
    for refused in [
        "",
        "Authorization: Bearer wrong!\r\n",
        "Authorization: Bearer wrong!\r\nAuthorization: Bearer s3cret\r\n",
        "Authorization: Bearer s3cret\r\nAuthorization: Bearer s3cret\r\n",
    ] {
        assert_eq!(with_token(refused), Step::Other, "{refused}");
    }
}

/// One cache for the property tests: `crew_config:k` = "v".
fn shared_cache() -> &'static TieredCache {
    static CACHE: std::sync::OnceLock<TieredCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(cache_with("k", "v"))
    })
}

/// Requests near a hit or a compact mget, so that many are answered.
fn near_hits() -> impl Strategy<Value = Vec<u8>> {
    let get = (
        prop::sample::select(&["GET", "GET", "HEAD", "POST"][..]),
        prop::sample::select(&["/api/v1/cache/crew_config/k", "/api/v1/cache/crew_config/%6B", "/x"][..]),
        prop::sample::select(&["Host: a\r\n", "Host: a\r\nConnection: keep-alive\r\n", ""][..]),
        prop::sample::select(&["\r\n", "\n"][..]),
    )
        .prop_map(|(m, p, h, eol)| format!("{m} {p} HTTP/1.1\r\n{h}").replace("\r\n", eol) + eol);
    let mget = prop::sample::select(&["crew_config:k\n", "crew_config:k\ncrew_config:x\n", "x:y\n", ""][..])
        .prop_map(|body| {
            format!(
                "POST /api/v1/cache/mget HTTP/1.1\r\nHost: a\r\nContent-Type: {MGET_BINARY}\r\n\
                 Accept: {MGET_BINARY}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        });
    let request = prop_oneof![get, mget].prop_map(String::into_bytes);
    // Then cut short, pipelined twice, or with bytes changed.
    (request, 0usize..4, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(r, how, at, byte)| match how {
        0 => r.clone(),
        1 => r[..at.index(r.len())].to_vec(),
        2 => [r.clone(), r].concat(),
        _ => {
            let mut r = r;
            let i = at.index(r.len());
            r[i] = byte;
            r
        }
    })
}

proptest::proptest! {
    /// On any input: no panic; an answer only for a whole request, never past the input,
    /// and then a whole answer (`content-length` is its body's); nothing written otherwise;
    /// and every shorter prefix of an answered request is `Partial`, so a request split
    /// across reads is answered the same once it is all in.
    #[test]
    fn answers_only_whole_requests(input in prop_oneof![near_hits(), prop::collection::vec(any::<u8>(), 0..300)]) {
        use proptest::prelude::*;
        let cache = shared_cache();
        let mut out = Vec::new();
        let step = answer_hit(cache, None, &HostPolicy::default(), &input, &mut out, crate::model::now_ms());
        match step {
            Step::Hit(n) | Step::Mget(n) => {
                prop_assert!(n <= input.len());
                let text = String::from_utf8_lossy(&out).into_owned();
                let (head, body) = text.split_once("\r\n\r\n").expect("a head");
                prop_assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", head);
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: ")?.parse().ok())
                    .expect("a length");
                prop_assert_eq!(length, out.len() - head.len() - 4);
                prop_assert!(body.len() <= length);
                for cut in 0..n {
                    let mut more = Vec::new();
                    let partial = answer_hit(cache, None, &HostPolicy::default(), &input[..cut], &mut more, crate::model::now_ms());
                    prop_assert_eq!(partial, Step::Partial, "cut at {}", cut);
                    prop_assert!(more.is_empty());
                }
            }
            Step::Partial | Step::Other => prop_assert!(out.is_empty()),
        }
    }
}

#[test]
fn the_date_is_an_imf_fixdate() {
    let mut out = Vec::new();
    http_date(1_795_780_800_000, |d| out.extend_from_slice(d));
    assert_eq!(out, b"Fri, 27 Nov 2026 12:00:00 GMT");
}
