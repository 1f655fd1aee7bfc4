//! A connection as actix-http gets it from the hit path ([`Handed`]), and whether the client of
//! a waiting request (`?wait=`) is still connected. actix does not cancel
//! a handler when its client goes away (actix-web #3462), so a long poll would otherwise run to
//! its end for nobody, and could take a fill lease or an execution slot that nobody uses. Each
//! connection's socket is duplicated when the hit path hands it to actix-http (`on_connect`, one
//! extra descriptor per such connection; connections that only read hits need none), and
//! [`client_gone`] peeks at it without blocking.

use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use bytes::{Buf, BytesMut};
use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How often a waiting handler looks at its connection.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A connection the hit path (`hitpath.rs`) hands to actix-http: the bytes it read but did not
/// answer, then the socket.
pub struct Handed {
    unread: BytesMut,
    stream: TcpStream,
}

impl Handed {
    pub(super) fn new(unread: BytesMut, stream: TcpStream) -> Handed {
        Handed { unread, stream }
    }
}

/// A duplicate of the connection's socket, kept in the connection's data.
struct Peer(std::net::TcpStream);

/// For actix-http's `on_connect_ext`, when the hit path hands a connection over.
pub fn on_connect(conn: &Handed, data: &mut Extensions) {
    if let Ok(fd) = conn.stream.as_fd().try_clone_to_owned() {
        data.insert(Peer(std::net::TcpStream::from(fd)));
    }
}

/// True once the client has closed its side of the connection (or it failed). Peeks at the
/// socket (non-blocking, like the original it duplicates); pipelined bytes mean it is still there.
pub fn client_gone(req: &HttpRequest) -> bool {
    let Some(peer) = req.conn_data::<Peer>() else { return false };
    match peer.0.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

impl AsyncRead for Handed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unread.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        if this.unread.is_empty() {
            // The connection may live for hours; its buffer goes now.
            this.unread = BytesMut::new();
        }
        Poll::Ready(Ok(()))
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
