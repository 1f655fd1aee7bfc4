//! Any bytes into the hit path's parser (`answer_hit`, with one entry and no token): never panics;
//! answers only a whole request, never past the input, with a `content-length` that is its
//! body's; writes nothing otherwise; and every shorter prefix of an answered request is partial.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perfd::api::{Step, answer_hit};
use perfd::cache::TieredCache;
use perfd::config::Config;
use std::sync::OnceLock;

fn cache() -> &'static TieredCache {
    static CACHE: OnceLock<TieredCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let cache = TieredCache::new(Config::for_test(std::path::Path::new("unused")).cache).expect("cache");
        let set = cache.set("crew_config", "k", bytes::Bytes::from_static(b"v"), Some("text/plain"), None);
        futures_executor_block_on(set).expect("set");
        cache
    })
}

/// Without L2 a set completes on its first poll.
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("an L1 set waited"),
    }
}

fuzz_target!(|data: &[u8]| {
    let now = perfd::model::now_ms();
    let mut out = Vec::new();
    match answer_hit(cache(), None, data, &mut out, now) {
        Step::Hit(n) | Step::Mget(n) => {
            assert!(n <= data.len());
            let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
            let head = std::str::from_utf8(&out[..end]).expect("an ASCII head");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ")?.parse().ok())
                .expect("a length");
            assert_eq!(length, out.len() - end);
            for cut in 0..n {
                let mut more = Vec::new();
                assert_eq!(answer_hit(cache(), None, &data[..cut], &mut more, now), Step::Partial);
                assert!(more.is_empty());
            }
        }
        Step::Partial | Step::Other => assert!(out.is_empty()),
    }
});
