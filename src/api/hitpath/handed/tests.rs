//! Tests of the head clock: timed from a head's first byte, bodies skipped, what is not
//! followed, and (property) any split of the bytes.

use super::*;
use proptest::prelude::*;

const BODY_PARTS: &[&[u8]] = &[b"x", b"\r\n\r\n", b"\r", b"\n"];

/// Requests with `Content-Length` bodies (which may hold a blank line) and, for each, the
/// range of its head in the concatenated bytes.
fn requests() -> impl Strategy<Value = (Vec<u8>, Vec<std::ops::Range<usize>>)> {
    let header =
        prop::sample::select(&["Host: a\r\n", "X-A: b\r\n", "content-length: 0\r\n", "Accept: */*\r\n"][..]);
    let body = prop::collection::vec(prop::sample::select(BODY_PARTS), 0..6);
    let one = (prop::collection::vec(header, 0..3), body, prop::bool::ANY);
    prop::collection::vec(one, 1..6).prop_map(|requests| {
        let (mut bytes, mut heads) = (Vec::new(), Vec::new());
        for (headers, body, stated) in requests {
            let body = body.concat();
            let start = bytes.len();
            bytes.extend_from_slice(b"PUT /a HTTP/1.1\r\n");
            for h in headers.iter().filter(|h| !h.starts_with("content-length") || body.is_empty()) {
                bytes.extend_from_slice(h.as_bytes());
            }
            if !body.is_empty() || stated {
                bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            bytes.extend_from_slice(b"\r\n");
            heads.push(start..bytes.len());
            bytes.extend_from_slice(&body);
        }
        (bytes, heads)
    })
}

proptest! {
    /// Fed in any pieces, the clock runs exactly while a head is partly in, from the read
    /// that brought its first byte; bodies (blank lines in them too) are skipped.
    #[test]
    fn a_head_is_timed_exactly_while_it_is_partly_in((bytes, heads) in requests(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let t0 = Instant::now();
        let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        ends.dedup();
        let mut c = HeadClock::new(Duration::from_secs(1));
        let mut at = 0;
        for (read, &end) in ends.iter().enumerate() {
            let now = t0 + Duration::from_millis(read as u64);
            c.feed(&bytes[at..end], || now);
            at = end;
            let open = heads.iter().find(|h| h.start < at && at < h.end);
            // The read that brought the open head's first byte.
            let first = open.map(|h| ends.iter().position(|&e| e > h.start).expect("a read"));
            let want = first.map(|r| t0 + Duration::from_millis(r as u64) + Duration::from_secs(1));
            prop_assert_eq!(c.deadline(), want, "after {} of {} bytes", at, bytes.len());
        }
        prop_assert_eq!(&c.framing, &Framing::Head);
    }
}

fn clock() -> (HeadClock, Instant) {
    (HeadClock::new(Duration::from_secs(1)), Instant::now())
}

#[test]
fn a_head_is_timed_from_its_first_byte_until_it_ends() {
    let (mut c, t0) = clock();
    assert_eq!(c.deadline(), None, "nothing sent yet");
    c.feed(b"GET / HTTP/1.1\r\nHo", || t0);
    c.feed(b"st: a\r\n", || t0 + Duration::from_millis(900));
    assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(1)), "the first byte set it");
    c.feed(b"\r\n", || t0 + Duration::from_millis(950));
    assert_eq!((c.deadline(), &c.framing), (None, &Framing::Head), "complete: between requests");
}

#[test]
fn bodies_of_a_known_length_are_skipped_untimed_across_reads() {
    let (mut c, t0) = clock();
    c.feed(b"PUT /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123", || t0);
    assert_eq!((c.deadline(), &c.framing), (None, &Framing::Body(6)));
    // The rest of the body, a whole request, and the start of the next head in one read.
    let t1 = t0 + Duration::from_secs(5);
    c.feed(b"456789GET /b HTTP/1.1\r\n\r\nGET /c", || t1);
    assert_eq!((c.deadline(), &c.framing), (Some(t1 + Duration::from_secs(1)), &Framing::Head));
    assert_eq!(c.head, b"GET /c");
}

#[test]
fn the_blank_line_is_found_across_reads() {
    for split in 1..4 {
        let (mut c, t0) = clock();
        let head = b"GET / HTTP/1.1\r\n\r\n";
        c.feed(&head[..head.len() - split], || t0);
        assert!(c.deadline().is_some(), "split {split}");
        c.feed(&head[head.len() - split..], || t0);
        assert_eq!(c.deadline(), None, "split {split}");
    }
}

#[test]
fn what_it_does_not_follow_is_no_longer_timed() {
    for head in [
        &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"[..],
        b"GET /a HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT a:1 HTTP/1.1\r\n\r\n",
        b"PUT /a HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
    ] {
        let (mut c, t0) = clock();
        c.feed(head, || t0);
        c.feed(b"GET /b HTTP/1.1\r\n", || t0);
        assert_eq!(
            (c.deadline(), &c.framing),
            (None, &Framing::Untracked),
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
    let (mut c, t0) = clock();
    c.feed(&vec![b'a'; MAX_FOLLOWED_HEAD + 1], || t0);
    assert_eq!(c.framing, Framing::Untracked, "an endless head");
}

/// A request that closes the connection ends its input: what follows it (pipelined requests)
/// never reaches actix-http, which answered them and kept the connection open.
#[test]
fn input_ends_after_a_request_that_closes_the_connection() {
    let next = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    for (first, closes) in [
        (&b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..], true),
        (b"GET /a HTTP/1.1\r\nconnection:  Keep-Alive , CLOSE\r\n\r\n", true),
        (b"GET /a HTTP/1.0\r\n\r\n", true),
        (b"PUT /a HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", true),
        (b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false),
        (b"GET /a HTTP/1.1\r\nConnection: closed\r\n\r\n", false),
        (b"GET /a HTTP/1.1\r\nX-Connection: close\r\n\r\n", false),
        (b"GET /a HTTP/1.1\r\n\r\n", false),
    ] {
        let all = [first, &next[..]].concat();
        let shown = String::from_utf8_lossy(first);
        // In one read, and in two reads cut anywhere.
        let (mut c, t0) = clock();
        assert_eq!(c.feed(&all, || t0), closes.then_some(first.len()), "{shown}");
        for cut in 1..all.len() {
            let (mut c, t0) = clock();
            let got = match c.feed(&all[..cut], || t0) {
                Some(n) => Some(n),
                None => c.feed(&all[cut..], || t0).map(|n| cut + n),
            };
            assert_eq!(got, closes.then_some(first.len()), "{shown} cut at {cut}");
            if closes {
                assert_eq!(c.feed(b"more", || t0), Some(0), "{shown}: nothing after");
            }
        }
    }
}
