//! A connection the hit path hands to actix-http, with the head timeout actix-http lacks and the
//! heads it would refuse answered in JSON.
//!
//! actix-http times only the first request head on a connection ("head timer only applies to
//! first request on connection", `h1/dispatcher.rs`): a later head may come a byte at a time,
//! or stop halfway, and hold the connection for good. [`Handed`] follows the client's bytes
//! through request framing ([`HeadClock`]) and gives actix-http each head only once it is
//! complete and checked ([`super::refusal`]). A head that takes longer than
//! `http.request_timeout` from its first byte is answered 408 (JSON) and the connection closes;
//! one actix-http would refuse gets perfd's JSON error instead of an empty 400 or 431. Bodies
//! are not timed (a large upload on a slow link is not an attack).
//!
//! The same framing ends the connection's input after a request that closes it (`Connection:
//! close`, or HTTP/1.0 without `keep-alive`): actix-http answered the requests pipelined behind
//! one and kept the connection open, where RFC 9112 §9.6 says a server must not process them.
//! actix-http gets nothing more, answers the closing request and closes.
//!
//! actix-http's keep-alive timer runs until it reads a byte of the next request, so a head held
//! here is given to it (unchecked: [`HeadClock::release`]) before the timer, armed when its last
//! answer was written, can close the connection under a client still sending.

use super::framing::{Framing, HeadClock};
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// The connection actix-http gets: the bytes the hit path read but did not answer, then the
/// socket, with request heads timed and checked.
pub struct Handed {
    /// Bytes for actix-http before any more from the socket.
    pending: BytesMut,
    stream: TcpStream,
    heads: HeadClock,
    keep_alive: Duration,
    /// When actix-http last wrote (its keep-alive timer starts at the end of an answer).
    last_write: Option<Instant>,
    /// Armed at the next deadline while a read waits; boxed because `Handed` is moved.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Handed {
    /// `head_started`: when the first byte of a head in `unread` came, if one is there.
    pub(in crate::api) fn new(
        unread: BytesMut,
        stream: TcpStream,
        head_timeout: Duration,
        keep_alive: Duration,
        head_started: Instant,
    ) -> Handed {
        let mut heads = HeadClock::new(head_timeout);
        let mut pending = BytesMut::new();
        let pass = heads.feed(&unread, &mut pending, || head_started);
        let mut unread = unread;
        unread.truncate(pass);
        unread.extend_from_slice(&pending);
        Handed { pending: unread, stream, heads, keep_alive, last_write: None, timer: None }
    }

    /// The socket (for `peer::on_connect`).
    pub(in crate::api) fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// A head over its time that actix-http has part of: the read fails and actix-http closes
    /// the connection.
    fn timed_out() -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")))
    }

    /// When a held head must go to actix-http, ahead of its keep-alive timer.
    fn release_at(&self) -> Option<Instant> {
        Some(self.last_write? + self.keep_alive / 2).filter(|_| self.heads.holding())
    }
}

impl AsyncRead for Handed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Once the timer fired, its time counts as come (it may fire a hair before `Instant`).
        let mut fired: Option<Instant> = None;
        loop {
            if !this.pending.is_empty() {
                // Already followed by the clock.
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                if this.pending.is_empty() {
                    // The connection may live for hours; its buffer goes now.
                    this.pending = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.heads.framing == Framing::Closed {
                // Nothing more from this client: actix-http answers the closing request and
                // closes (its dispatcher is woken by the answer, not by this read).
                return Poll::Pending;
            }
            let before = buf.filled().len();
            match Pin::new(&mut this.stream).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => return Poll::Ready(Ok(())), // the end
                Poll::Ready(Ok(())) => {
                    let pass = this.heads.feed(&buf.filled()[before..], &mut this.pending, Instant::now);
                    buf.set_filled(before + pass);
                    if pass > 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // All held, or replaced (in `pending`): read on, or give that.
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            let now = fired.map_or_else(Instant::now, |at| at.max(Instant::now()));
            let deadline = this.heads.deadline();
            if deadline.is_some_and(|d| now >= d) {
                if this.heads.time_out(&mut this.pending) {
                    continue; // answered 408
                }
                return Handed::timed_out();
            }
            let release = this.release_at();
            if release.is_some_and(|r| now >= r) {
                this.heads.release(&mut this.pending);
                continue;
            }
            let Some(wake) = deadline.into_iter().chain(release).min() else {
                return Poll::Pending;
            };
            // Wake the dispatcher then even if no byte comes.
            let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake.into())));
            if timer.deadline() != wake.into() {
                timer.as_mut().reset(wake.into());
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired: the next turn of the loop acts on it.
            fired = Some(wake);
        }
    }
}

impl AsyncWrite for Handed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.last_write = Some(Instant::now());
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.last_write = Some(Instant::now());
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
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
