//! The connection-level hit path: perfd's own read loop in front of actix-http, for the hottest
//! request there is, a GET of a cached entry.
//!
//! Every accepted connection starts here. While each request on it is a plain
//! `GET /api/v1/cache/{strategy}/{key}` that L1 holds, or a compact mget (key lines in, binary
//! answer out, no L2 configured), the loop answers it with what the App sends
//! (`cache::hit_response`, `mget::mget_answer`: status, headers and body), counted in the same
//! statistics and request timing. The first
//! request that is anything else (a miss, a write, a query string, a body, HTTP/1.0,
//! `Connection: close`, a missing or second `Host`, an unusual header or URI byte, a head that
//! does not parse) hands the connection, with every byte read and not yet answered, to
//! actix-http for the rest of its life ([`Handed`]); pipelined hits before it are answered
//! first, so answers keep their order. The App thus still answers every request but hits, with
//! all its limits and errors. The timeouts: `http.keep_alive` between requests (actix-http's
//! after a hand-over), `http.request_timeout` for a head (then a JSON 408; [`Handed`] times the
//! heads after a hand-over) and, here only, for a client to take its answers.
//!
//! Why: actix-http builds a request and a response object for every request (URI, header maps,
//! extensions, encoder, service futures), most of a hit's user-space time, while the lookup
//! itself is ~100 ns. Answering from the parsed head cuts perfd's user time per hit by about a
//! third, enough that under wrk at 50 connections the queue sits in the client rather than in
//! perfd, which is what wrk's p99 against Redis' turns on (README, "Performance").

use super::AppState;
use super::cache::ENTRY_ROUTE;
use super::mget::MGET_ROUTE;
use crate::monitor::{Connections, RouteId};
use actix_server::GracefulShutdownSignal;
use actix_service::Service;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

mod answer;
mod chunk;
mod framing;
mod handed;
mod refusal;
pub use answer::{Step, answer_hit};
pub use handed::Handed;
pub use refusal::{REFUSED_ROUTE, get_refusal};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 4096;
/// A head longer than this goes to actix-http, which applies its own limits.
const MAX_HEAD: usize = 8192;
/// Answer bytes gathered from pipelined hits before they are written.
const MAX_BATCH: usize = 256 * 1024;

/// One per actix worker.
pub struct HitPath {
    state: AppState,
    /// The monitor's ids of the two routes answered here.
    entry_id: RouteId,
    mget_id: RouteId,
    /// Between requests (actix-http's keep-alive).
    keep_alive: Duration,
    /// For a head, from its first byte (the first head's from the connect), and for a client
    /// to take an answer.
    request_timeout: Duration,
    shutdown: GracefulShutdownSignal,
}

impl HitPath {
    pub fn new(
        state: AppState,
        keep_alive: Duration,
        request_timeout: Duration,
        shutdown: GracefulShutdownSignal,
    ) -> Self {
        let entry_id = state.monitor.route_id(ENTRY_ROUTE, "GET");
        let mget_id = state.monitor.route_id(MGET_ROUTE, "POST");
        HitPath { state, entry_id, mget_id, keep_alive, request_timeout, shutdown }
    }

    /// Serves one connection: hits here, then (if it comes to that) everything through `h1`.
    pub async fn serve<H>(self: Rc<Self>, stream: TcpStream, h1: Rc<H>) -> Result<(), H::Error>
    where
        H: Service<(Handed, Option<SocketAddr>), Response = ()>,
    {
        // Answers go out at once; request/response traffic gains nothing from Nagle.
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        let counts = &self.state.monitor.connections;
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let mut conn = Conn {
            stream,
            unread: BytesMut::with_capacity(READ_SIZE),
            answers: Vec::new(),
            unsent: 0,
            answered: 0,
        };
        let mut shutdown = std::pin::pin!(self.shutdown.notified());
        // Reset for each wait: extending a pending timer's deadline does not touch the wheel.
        let mut timer = std::pin::pin!(tokio::time::sleep(self.request_timeout));
        // The first head gets the request timeout from the connect, as in actix-http.
        let (mut idle, mut deadline) = (false, Instant::now() + self.request_timeout);
        loop {
            match conn.fill(timer.as_mut(), deadline, shutdown.as_mut(), idle).await {
                Fill::Read => {}
                Fill::Closed => return Ok(()),
                Fill::Stalled => {
                    conn.request_timed_out();
                    return Ok(());
                }
            }
            let answered_before = conn.answered;
            let handing_over = loop {
                match self.answer_buffered(&mut conn) {
                    Buffered::Partial => break false,
                    // Pipelined hits: send these before answering the rest.
                    Buffered::Full => {
                        if conn.send(counts, timer.as_mut(), self.request_timeout).await.is_err() {
                            return Ok(());
                        }
                    }
                    Buffered::Other => break true,
                }
            };
            if conn.send(counts, timer.as_mut(), self.request_timeout).await.is_err() {
                return Ok(());
            }
            if handing_over {
                break;
            }
            // A head's time counts from its first byte, however slowly the rest comes.
            let new_head = idle || conn.answered != answered_before;
            idle = conn.unread.is_empty();
            if idle {
                deadline = Instant::now() + self.keep_alive;
            } else if new_head {
                deadline = Instant::now() + self.request_timeout;
            }
        }
        counts.handed_over.fetch_add(1, Ordering::Relaxed);
        // The head being handed over came in the last read if the connection was idle before.
        let head_started = match idle {
            true => None,
            false => deadline.checked_sub(self.request_timeout),
        }
        .unwrap_or_else(Instant::now);
        let handed =
            Handed::new(conn.unread, conn.stream, self.request_timeout, self.keep_alive, head_started);
        h1.call((handed, peer)).await
    }

    /// Answers the complete heads at the start of the buffer while they are hits, until the
    /// answers reach [`MAX_BATCH`].
    fn answer_buffered(&self, conn: &mut Conn) -> Buffered {
        while conn.answers.len() < MAX_BATCH {
            if conn.unread.is_empty() {
                return Buffered::Partial; // the usual end of a batch, without reading the clocks
            }
            match self.step(&conn.unread, &mut conn.answers) {
                Step::Hit(len) | Step::Mget(len) => {
                    conn.unread.advance(len);
                    conn.unsent += 1;
                    conn.answered += 1;
                }
                Step::Partial if conn.unread.len() > MAX_HEAD => return Buffered::Other,
                Step::Partial => return Buffered::Partial,
                Step::Other => return Buffered::Other,
            }
        }
        Buffered::Full
    }

    /// [`answer_hit`], timed in the request monitor when it answers.
    fn step(&self, input: &[u8], answers: &mut Vec<u8>) -> Step {
        let started = Instant::now();
        let now_ms = crate::model::now_ms();
        let (config, hosts) = (self.state.config.load(), self.state.hosts.load());
        let step =
            answer_hit(&self.state.cache, config.auth_token.as_deref(), &hosts, input, answers, now_ms);
        let route = match step {
            Step::Hit(_) => self.entry_id,
            Step::Mget(_) => self.mget_id,
            Step::Partial | Step::Other => return step,
        };
        self.state.monitor.record_id(route, 200, started.elapsed(), now_ms);
        step
    }
}

/// A connection on the hit path.
struct Conn {
    stream: TcpStream,
    /// Read, not yet answered.
    unread: BytesMut,
    /// Answered, not yet written.
    answers: Vec<u8>,
    /// Hits in `answers`.
    unsent: u64,
    /// Hits answered on this connection.
    answered: u64,
}

enum Fill {
    Read,
    /// By the client, an error, the keep-alive or request timeout with nothing buffered, or a
    /// graceful shutdown while idle.
    Closed,
    /// The request timeout passed inside a head (counted from its first byte).
    Stalled,
}

enum Buffered {
    /// What is left is the start of a head.
    Partial,
    /// [`MAX_BATCH`] bytes of answers are waiting.
    Full,
    /// The next head is for actix-http.
    Other,
}

impl Conn {
    /// Reads what the client sent next, waiting until `deadline` at most.
    async fn fill(
        &mut self,
        mut timer: Pin<&mut Sleep>,
        deadline: Instant,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        idle: bool,
    ) -> Fill {
        timer.as_mut().reset(deadline.into());
        self.unread.reserve(READ_SIZE);
        let read = tokio::select! {
            biased;
            read = self.stream.read_buf(&mut self.unread) => Some(read),
            () = &mut timer => None,
            // Between requests, or before the first byte of a connection's first request (a
            // client that connected but sent nothing must not hold a graceful stop for its
            // request timeout). Once it fired, `serve` ends: the signal is never polled again.
            () = &mut shutdown, if idle || self.unread.is_empty() => return Fill::Closed,
        };
        match read {
            Some(Ok(0) | Err(_)) => Fill::Closed,
            Some(Ok(_)) => Fill::Read,
            None if self.unread.is_empty() => Fill::Closed,
            None => Fill::Stalled,
        }
    }

    /// Writes the waiting answers; a client that takes more than `limit` to take them is an error.
    async fn send(
        &mut self,
        counts: &Connections,
        mut timer: Pin<&mut Sleep>,
        limit: Duration,
    ) -> io::Result<()> {
        if self.unsent == 0 {
            return Ok(());
        }
        counts.hit_path_answers.fetch_add(std::mem::take(&mut self.unsent), Ordering::Relaxed);
        // Almost always all at once, without a timer.
        let sent = match self.stream.try_write(&self.answers) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent < self.answers.len() {
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
            tokio::select! {
                written = self.stream.write_all(&self.answers[sent..]) => written?,
                () = &mut timer => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
        self.answers.clear();
        if self.answers.capacity() > MAX_BATCH {
            self.answers = Vec::new(); // a burst of large answers: not kept for the connection's life
        }
        Ok(())
    }

    /// The answer to a head that did not arrive in time (the connection then closes), as the
    /// App gives it on a handed-over connection.
    fn request_timed_out(&self) {
        let body = refusal::Refusal::Timeout.body();
        let mut answer = format!(
            "HTTP/1.1 408 Request Timeout\r\ncontent-length: {}\r\nconnection: close\r\n\
             content-type: application/json\r\ndate: ",
            body.len()
        )
        .into_bytes();
        answer::http_date(crate::model::now_ms(), |date| answer.extend_from_slice(date));
        answer.extend_from_slice(b"\r\n\r\n");
        if !self.unread.starts_with(b"HEAD ") {
            answer.extend_from_slice(body.as_bytes()); // a HEAD's answer has none
        }
        let _ = self.stream.try_write(&answer); // best effort, as the connection closes anyway
    }
}
