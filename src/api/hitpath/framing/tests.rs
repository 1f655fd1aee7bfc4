//! Tests of the head clock: what actix-http gets (heads only once complete, in order, nothing
//! after a closing request or a refused head), timed from a head's first byte, bodies skipped,
//! what is not followed, and (property) any split of the bytes.

use super::*;
use proptest::prelude::*;

const BODY_PARTS: &[&[u8]] = &[b"x", b"\r\n\r\n", b"\r", b"\n"];

/// Requests with `Content-Length` bodies (which may hold a blank line) and, for each, the
/// range of its head in the concatenated bytes.
fn requests() -> impl Strategy<Value = (Vec<u8>, Vec<std::ops::Range<usize>>)> {
    let header = prop::sample::select(&["X-A: b\r\n", "Accept: */*\r\n", "X-B: \r\n"][..]);
    let body = prop::collection::vec(prop::sample::select(BODY_PARTS), 0..6);
    let one =
        (prop::collection::vec(header, 0..3), body, prop::bool::ANY, prop::bool::weighted(0.2), 0..4usize);
    prop::collection::vec(one, 1..6).prop_map(|requests| {
        let (mut bytes, mut heads) = (Vec::new(), Vec::new());
        for (headers, body, stated, bare_lf, chunk) in requests {
            let mut body = body.concat();
            let start = bytes.len();
            let mut head = String::from("PUT /a HTTP/1.1\r\nHost: a\r\n");
            for h in headers {
                head += h;
            }
            if chunk > 0 {
                // Chunked: chunks of up to `chunk` bytes (with an extension on some), a trailer
                // on some bodies.
                head += "Transfer-Encoding: chunked\r\n";
                let mut chunked = Vec::new();
                for (i, part) in body.chunks(chunk).enumerate() {
                    let ext = if i % 2 == 1 { ";e=\"1\"" } else { "" };
                    chunked.extend_from_slice(format!("{:X}{ext}\r\n", part.len()).as_bytes());
                    chunked.extend_from_slice(part);
                    chunked.extend_from_slice(b"\r\n");
                }
                chunked.extend_from_slice(if stated { b"0\r\nX-T: 1\r\n\r\n" } else { b"0\r\n\r\n" });
                body = chunked;
            } else if !body.is_empty() || stated {
                head += &format!("Content-Length: {}\r\n", body.len());
            }
            head += "\r\n";
            if bare_lf {
                head = head.replace("\r\n", "\n"); // httparse (so actix-http) reads these too
            }
            bytes.extend_from_slice(head.as_bytes());
            heads.push(start..bytes.len());
            bytes.extend_from_slice(&body);
        }
        (bytes, heads)
    })
}

/// Feeds `reads` (all at `t0`); what actix-http gets, in order.
fn given(c: &mut HeadClock, reads: &[&[u8]], t0: Instant) -> Vec<u8> {
    let mut got = Vec::new();
    for read in reads {
        let mut out = BytesMut::new();
        let pass = c.feed(read, &mut out, || t0);
        got.extend_from_slice(&read[..pass]);
        got.extend_from_slice(&out);
    }
    got
}

proptest! {
    /// Fed in any pieces, the clock runs exactly while a head is partly in, from the read
    /// that brought its first byte; bodies (blank lines in them too) are skipped; actix-http
    /// gets every byte, in order, each head once it is whole.
    #[test]
    fn a_head_is_timed_exactly_while_it_is_partly_in((bytes, heads) in requests(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let t0 = Instant::now();
        let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        ends.dedup();
        let mut c = HeadClock::new(Duration::from_secs(1));
        let (mut at, mut given) = (0, Vec::new());
        for (read, &end) in ends.iter().enumerate() {
            let now = t0 + Duration::from_millis(read as u64);
            let mut out = BytesMut::new();
            let pass = c.feed(&bytes[at..end], &mut out, || now);
            given.extend_from_slice(&bytes[at..at + pass]);
            given.extend_from_slice(&out);
            at = end;
            let open = heads.iter().find(|h| h.start < at && at < h.end);
            // The read that brought the open head's first byte.
            let first = open.map(|h| ends.iter().position(|&e| e > h.start).expect("a read"));
            let want = first.map(|r| t0 + Duration::from_millis(r as u64) + Duration::from_secs(1));
            prop_assert_eq!(c.deadline(), want, "after {} of {} bytes", at, bytes.len());
            // Held: exactly the open head's bytes so far.
            prop_assert_eq!(given.len(), open.map_or(at, |h| h.start), "after {} bytes", at);
        }
        prop_assert_eq!(&c.framing, &Framing::Head);
        prop_assert_eq!(given, bytes);
    }
}

fn clock() -> (HeadClock, Instant) {
    (HeadClock::new(Duration::from_secs(1)), Instant::now())
}

#[test]
fn a_head_is_timed_from_its_first_byte_until_it_ends() {
    let (mut c, t0) = clock();
    let mut out = BytesMut::new();
    assert_eq!(c.deadline(), None, "nothing sent yet");
    assert_eq!(c.feed(b"GET / HTTP/1.1\r\nHo", &mut out, || t0), 0, "held");
    c.feed(b"st: a\r\n", &mut out, || t0 + Duration::from_millis(900));
    assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(1)), "the first byte set it");
    assert!(out.is_empty() && c.holding());
    assert_eq!(c.feed(b"\r\n", &mut out, || t0 + Duration::from_millis(950)), 0);
    assert_eq!(&out[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "given whole once complete");
    assert_eq!((c.deadline(), &c.framing), (None, &Framing::Head), "complete: between requests");
}

#[test]
fn bodies_of_a_known_length_are_skipped_untimed_across_reads() {
    let (mut c, t0) = clock();
    let mut out = BytesMut::new();
    let first = b"PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123";
    assert_eq!(c.feed(first, &mut out, || t0), first.len());
    assert_eq!((c.deadline(), &c.framing), (None, &Framing::Body(6)));
    // The rest of the body, a whole request, and the start of the next head in one read.
    let t1 = t0 + Duration::from_secs(5);
    let next = b"456789GET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c";
    assert_eq!(c.feed(next, &mut out, || t1), next.len() - 6, "all but the partial head");
    assert_eq!((c.deadline(), &c.framing), (Some(t1 + Duration::from_secs(1)), &Framing::Head));
    assert_eq!(c.head, b"GET /c");
}

#[test]
fn the_blank_line_is_found_across_reads() {
    for head in [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], b"GET / HTTP/1.1\nHost: a\n\n"] {
        for split in 1..4 {
            let (mut c, t0) = clock();
            assert_eq!(given(&mut c, &[&head[..head.len() - split]], t0), b"");
            assert!(c.deadline().is_some(), "split {split}");
            assert_eq!(given(&mut c, &[&head[head.len() - split..]], t0), head, "split {split}");
            assert_eq!(c.deadline(), None, "split {split}");
        }
    }
}

/// Line ends between requests (a client's CRLF after a body) are dropped, not taken for the
/// start of a head: no clock runs, so actix-http's keep-alive closes an idle connection.
#[test]
fn line_ends_between_requests_are_skipped() {
    let (mut c, t0) = clock();
    let got = given(&mut c, &[b"PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\n", b"\r\n"], t0);
    assert!(got.ends_with(b"\r\n\r\nx"), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!((c.deadline(), &c.framing), (None, &Framing::Head));
    assert_eq!(
        given(&mut c, &[b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"], t0),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    );
}

#[test]
fn what_it_does_not_follow_is_no_longer_timed() {
    for head in [
        &b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n",
        // A chunk actix-http refuses (a size that is not hex): it answers 400 and closes.
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
    ] {
        let (mut c, t0) = clock();
        let all = [head, b"GET /b HTTP/1.1\r\n"].concat();
        assert_eq!(given(&mut c, &[head, b"GET /b HTTP/1.1\r\n"], t0), all);
        let shown = String::from_utf8_lossy(head);
        assert_eq!((c.deadline(), &c.framing), (None, &Framing::Untracked), "{shown}");
    }
}

/// After a chunked body (extensions, trailers), the next head is timed and checked like any;
/// a chunked request that closes the connection ends its input at the body's end.
#[test]
fn chunked_bodies_are_followed_to_their_end() {
    let post = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = b"5;x=\"y z\"\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
    let (mut c, t0) = clock();
    let all = [&post[..], body, b"GET /b HTTP/1.1\r\n"].concat();
    assert_eq!(given(&mut c, &[&all], t0), [&post[..], body].concat(), "the next head is held");
    assert_eq!((c.deadline(), &c.framing), (Some(t0 + Duration::from_secs(1)), &Framing::Head));
    assert_eq!(given(&mut c, &[b"\r\n"], t0), Refusal::NoHost.request(false), "and checked");

    let closing = b"POST /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    for cut in 0..body.len() {
        let (mut c, t0) = clock();
        let all = [&closing[..], body, b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
        let at = closing.len() + cut;
        let got = given(&mut c, &[&all[..at], &all[at..]], t0);
        assert_eq!(got, [&closing[..], body].concat(), "cut {cut}");
        assert_eq!(c.framing, Framing::Closed, "cut {cut}");
    }
}

/// A head actix-http would refuse goes to it as the request for the refusal's JSON answer,
/// after the requests before it; nothing after it is read.
#[test]
fn a_refused_head_is_replaced_and_ends_the_input() {
    let ok = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n";
    let long_line = [b"GET /".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
    let long_head = [b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(), &vec![b'a'; MAX_HEAD]].concat();
    for (bad, refusal) in [
        (&b"GET /a HTTP/1.1\r\n\r\n"[..], Refusal::NoHost),
        (b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: lots\r\n\r\n", Refusal::BadLength),
        (b"GET /a HTTP/1.7\r\nHost: a\r\n\r\n", Refusal::Version),
        (&long_line, Refusal::LineTooLong),
        (&long_head, Refusal::HeadTooLarge),
    ] {
        for cut in [1, bad.len() / 2, bad.len()] {
            let (mut c, t0) = clock();
            let got = given(&mut c, &[&[ok.as_slice(), &bad[..cut]].concat(), &bad[cut..], ok], t0);
            let want = [ok.as_slice(), &refusal.request(false)].concat();
            let ended = c.framing == Framing::Closed;
            assert!(got == want && ended, "{refusal:?} cut {cut}: {:?}", String::from_utf8_lossy(&got));
        }
    }
}

/// A held head past its time is answered 408 (if actix-http has none of it); a released one
/// is only followed: its bytes went to actix-http, and it is neither checked nor answered.
#[test]
fn a_late_head_gets_a_408_unless_it_was_released() {
    let (mut c, t0) = clock();
    given(&mut c, &[b"GET / HTTP/1.1\r\nHo"], t0);
    let mut out = BytesMut::new();
    assert!(c.time_out(&mut out));
    assert_eq!((&out[..], &c.framing), (&Refusal::Timeout.request(false)[..], &Framing::Closed));

    let (mut c, t0) = clock();
    given(&mut c, &[b"GET / HTTP/1.1\r\n"], t0);
    let mut out = BytesMut::new();
    c.release(&mut out);
    assert_eq!((&out[..], c.holding()), (&b"GET / HTTP/1.1\r\n"[..], false));
    assert!(!c.time_out(&mut BytesMut::new()), "released: actix-http has part of it");
    // No Host: refused if checked, but released heads pass as they are.
    assert_eq!(given(&mut c, &[b"\r\nGET /b"], t0), b"\r\nGET /b");
    assert_eq!(c.framing, Framing::Untracked, "a head actix-http refuses ends the following");
}

/// A request that closes the connection ends its input: what follows it (pipelined requests)
/// never reaches actix-http, which answered them and kept the connection open.
#[test]
fn input_ends_after_a_request_that_closes_the_connection() {
    let next = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    for (first, closes) in [
        (&b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..], true),
        (b"GET /a HTTP/1.1\r\nHost: a\r\nconnection:  Keep-Alive , CLOSE\r\n\r\n", true),
        (b"GET /a HTTP/1.0\r\n\r\n", true),
        (b"PUT /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", true),
        (b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", false),
        (b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", false),
        (b"GET /a HTTP/1.1\r\nHost: a\r\nX-Connection: close\r\n\r\n", false),
        (b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", false),
    ] {
        let all = [first, &next[..]].concat();
        let want = if closes { first.to_vec() } else { all.clone() };
        let shown = String::from_utf8_lossy(first);
        // In one read, and in two reads cut anywhere.
        for cut in 0..all.len() {
            let (mut c, t0) = clock();
            assert_eq!(given(&mut c, &[&all[..cut], &all[cut..]], t0), want, "{shown} cut at {cut}");
            if closes {
                assert_eq!(given(&mut c, &[b"more"], t0), b"", "{shown}: nothing after");
            }
        }
    }
}

const TOKENS: &[&str] = &[
    "GET / HTTP/1.1",
    "POST /a HTTP/1.0",
    "\r\n",
    "\r\n",
    "\n",
    "\r",
    "Host: a",
    "Content-Length: 3",
    "Content-Length: x",
    "Transfer-Encoding: chunked",
    "Connection: close",
    "Upgrade: websocket",
    "X: y",
    "0",
    "3",
    "a",
    "abc",
    ";e",
    " ",
    ":",
    "\u{0}",
    "\u{7f}",
];

proptest! {
    /// Any soup of request pieces, in any reads, with releases and time-outs between them: no
    /// panic; actix-http gets at most what came plus one refusal, and nothing after a refusal
    /// or once the input has ended.
    #[test]
    fn any_bytes_in_any_reads(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..60), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6), acts in prop::collection::vec(0..4u8, 7)) {
        let bytes: Vec<u8> = tokens.concat().into_bytes();
        let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        let (mut c, t0) = clock();
        let (mut at, mut got) = (0, Vec::new());
        for (i, &end) in ends.iter().enumerate() {
            let closed = c.framing == Framing::Closed;
            let mut out = BytesMut::new();
            let pass = c.feed(&bytes[at..end], &mut out, || t0);
            prop_assert!(pass <= end - at);
            prop_assert!(!closed || (pass == 0 && out.is_empty()), "input after its end");
            got.extend_from_slice(&bytes[at..at + pass]);
            got.extend_from_slice(&out);
            let mut out = BytesMut::new();
            match acts[i] {
                1 if c.holding() => c.release(&mut out),
                2 if c.deadline().is_some() => {
                    c.time_out(&mut out);
                }
                _ => {}
            }
            got.extend_from_slice(&out);
            at = end;
        }
        let refusal = Refusal::Timeout.request(false);
        prop_assert!(got.len() <= bytes.len() + refusal.len(), "{} from {}", got.len(), bytes.len());
        let at_refusal = got.windows(16).position(|w| w == b"/.perfd/refused/");
        if let Some(p) = at_refusal {
            let tail = &got[p..];
            prop_assert!(tail.ends_with(b"Connection: close\r\n\r\n"), "only the refusal after it");
            prop_assert_eq!(tail.windows(16).filter(|w| *w == b"/.perfd/refused/").count(), 1);
        }
    }
}
