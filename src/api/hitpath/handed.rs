//! A connection the hit path hands to actix-http, and the head timeout actix-http lacks.
//!
//! actix-http times only the first request head on a connection ("head timer only applies to
//! first request on connection", `h1/dispatcher.rs`): a later head may come a byte at a time,
//! or stop halfway, and hold the connection for good. [`Handed`] follows the client's bytes
//! through request framing ([`HeadClock`]: heads, and bodies of a known `Content-Length`) and
//! fails the read, so actix-http closes the connection, once a head has taken longer than
//! `http.request_timeout` from its first byte. Bodies are not timed (a large upload on a slow
//! link is not an attack); after a chunked body or an upgrade the clock stops following.
//!
//! The same framing ends the connection's input after a request that closes it (`Connection:
//! close`, or HTTP/1.0 without `keep-alive`): actix-http answered the requests pipelined behind
//! one and kept the connection open, where RFC 9112 §9.6 says a server must not process them.
//! actix-http gets nothing more, answers the closing request and closes.

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A head longer than this is not followed (actix-http refuses one far shorter).
const MAX_FOLLOWED_HEAD: usize = 128 * 1024;

/// The connection actix-http gets: the bytes the hit path read but did not answer, then the
/// socket, with request heads timed.
pub struct Handed {
    unread: BytesMut,
    stream: TcpStream,
    heads: HeadClock,
    /// Armed at the current head's deadline while a read waits; boxed because `Handed` is moved.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Handed {
    pub(in crate::api) fn new(mut unread: BytesMut, stream: TcpStream, head_timeout: Duration) -> Handed {
        let mut heads = HeadClock::new(head_timeout);
        if let Some(end) = heads.feed(&unread, Instant::now) {
            unread.truncate(end);
        }
        Handed { unread, stream, heads, timer: None }
    }

    /// The socket (for `peer::on_connect`).
    pub(in crate::api) fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// A head over its time: the read fails and actix-http closes the connection.
    fn timed_out() -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")))
    }
}

/// Where the client's byte stream is.
#[derive(Debug, PartialEq)]
enum Framing {
    /// In a head, or between requests.
    Head,
    /// In a body with this many bytes to come.
    Body(u64),
    /// Past a chunked body, an upgrade or a head this does not follow: no longer timed.
    Untracked,
    /// Past the end of a request that closes the connection: nothing more is read.
    Closed,
}

/// Follows request framing over the bytes read, to time each head from its first byte.
#[derive(Debug)]
struct HeadClock {
    timeout: Duration,
    framing: Framing,
    /// The current head's bytes so far.
    head: Vec<u8>,
    /// When its first byte came; `None` between requests.
    started: Option<Instant>,
    /// The request under way (its head complete) closes the connection.
    closing: bool,
}

impl HeadClock {
    fn new(timeout: Duration) -> HeadClock {
        HeadClock { timeout, framing: Framing::Head, head: Vec::new(), started: None, closing: false }
    }

    /// When the head under way must be complete.
    fn deadline(&self) -> Option<Instant> {
        match self.framing {
            Framing::Head => Some(self.started? + self.timeout),
            _ => None,
        }
    }

    /// Takes the next bytes the client sent (`now` is read only if a head is left unfinished).
    /// `Some(n)`: the connection's input ends after the first `n` of them (the end of a request
    /// that closes it, or earlier); the rest must not reach actix-http.
    fn feed(&mut self, bytes: &[u8], now: impl Fn() -> Instant) -> Option<usize> {
        let all = bytes.len();
        let mut bytes = bytes;
        while !bytes.is_empty() {
            match self.framing {
                Framing::Untracked => return None,
                Framing::Closed => return Some(all - bytes.len()),
                Framing::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.framing = match (n == left, self.closing) {
                        (false, _) => Framing::Body(left - n),
                        (true, false) => Framing::Head,
                        (true, true) => Framing::Closed,
                    };
                }
                Framing::Head => {
                    let Some(end) = head_end(&self.head, bytes) else {
                        self.started.get_or_insert_with(&now);
                        self.head.extend_from_slice(bytes);
                        if self.head.len() > MAX_FOLLOWED_HEAD {
                            self.framing = Framing::Untracked;
                        }
                        return None;
                    };
                    if self.head.is_empty() {
                        // The usual case: a whole head in one read, not copied.
                        (self.framing, self.closing) = body_after(&bytes[..end]);
                    } else {
                        self.head.extend_from_slice(&bytes[..end]);
                        (self.framing, self.closing) = body_after(&self.head);
                        self.head.clear();
                        if self.head.capacity() > 8192 {
                            self.head = Vec::new(); // a long head once: not kept for the connection's life
                        }
                    }
                    self.started = None;
                    if self.closing && self.framing == Framing::Head {
                        self.framing = Framing::Closed;
                    }
                    // What follows is the body or the next request.
                    bytes = &bytes[end..];
                }
            }
        }
        (self.framing == Framing::Closed).then_some(all)
    }
}

/// Where a head whose first bytes are `held` ends in `bytes` (the offset just past its blank
/// line), if it does; the blank line may straddle the two.
fn head_end(held: &[u8], bytes: &[u8]) -> Option<usize> {
    if !held.is_empty() {
        let tail = &held[held.len().saturating_sub(3)..];
        let mut joint = [0u8; 6];
        let joint_len = tail.len() + bytes.len().min(3);
        joint[..tail.len()].copy_from_slice(tail);
        joint[tail.len()..joint_len].copy_from_slice(&bytes[..joint_len - tail.len()]);
        if let Some(at) = memchr::memmem::find(&joint[..joint_len], b"\r\n\r\n") {
            return Some(at + 4 - tail.len());
        }
    }
    memchr::memmem::find(bytes, b"\r\n\r\n").map(|at| at + 4)
}

/// The framing after a complete head (its `Content-Length` body, or untracked for anything this
/// does not follow: chunked, an upgrade, `CONNECT`, a length that does not parse), and whether
/// the request closes the connection (a `close` token in `Connection`, or HTTP/1.0 without
/// `keep-alive`, RFC 9112 §9.3).
fn body_after(head: &[u8]) -> (Framing, bool) {
    let mut lines =
        head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty());
    let Some(request_line) = lines.next() else { return (Framing::Untracked, false) };
    if request_line.starts_with(b"CONNECT ") {
        return (Framing::Untracked, false);
    }
    let http10 = request_line.ends_with(b" HTTP/1.0");
    let (mut length, mut close, mut keep_alive) = (0, false, false);
    for line in lines {
        // Only these four names matter; most lines are passed over on their first byte.
        if !matches!(line[0] | 0x20, b'c' | b't' | b'u') {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else { continue };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"upgrade") {
            return (Framing::Untracked, false);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(n) => length = n,
                None => return (Framing::Untracked, false),
            }
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let closing = close || (http10 && !keep_alive);
    (if length == 0 { Framing::Head } else { Framing::Body(length) }, closing)
}

impl AsyncRead for Handed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            // Already fed to the clock in `new`.
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            if this.unread.is_empty() {
                // The connection may live for hours; its buffer goes now.
                this.unread = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        if this.heads.framing == Framing::Closed {
            // Nothing more from this client: actix-http answers the closing request and closes
            // (its dispatcher is woken by the answer, not by this read).
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read
            && let Some(end) = this.heads.feed(&buf.filled()[before..], Instant::now)
        {
            buf.set_filled(before + end);
        }
        let Some(deadline) = this.heads.deadline() else {
            return read;
        };
        if Instant::now() >= deadline {
            return Handed::timed_out();
        }
        if read.is_pending() {
            // Wake the dispatcher at the deadline even if no byte comes.
            let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            if timer.deadline() != deadline.into() {
                timer.as_mut().reset(deadline.into());
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Handed::timed_out();
            }
        }
        read
    }
}

impl AsyncWrite for Handed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
