//! Whether the client of a waiting request (`?wait=`) is still connected. actix does not cancel
//! a handler when its client goes away (actix-web #3462), so a long poll would otherwise run to
//! its end for nobody, and could take a fill lease or an execution slot that nobody uses. Each
//! connection's socket is duplicated when the hit path hands it to actix-http (`on_connect`, one
//! extra descriptor per such connection; connections that only read hits need none), and
//! [`client_gone`] peeks at it without blocking.

use super::Handed;
use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use std::io::ErrorKind;
use std::os::fd::AsFd;

/// How often a waiting handler looks at its connection.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A duplicate of the connection's socket, kept in the connection's data.
struct Peer(std::net::TcpStream);

/// For actix-http's `on_connect_ext`, when the hit path hands a connection over.
pub fn on_connect(conn: &Handed, data: &mut Extensions) {
    if let Ok(fd) = conn.socket().as_fd().try_clone_to_owned() {
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
