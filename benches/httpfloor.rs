//! The floor for an HTTP cache hit on this machine: the cheapest HTTP/1.1 responder on tokio
//! (one thread, like an actix worker) that answers every request on a keep-alive connection with
//! the same bytes perfd sends for a 512-byte hit, headers included, without parsing or lookup.
//! `benches/compare_redis.sh` runs it beside perfd and Redis, so what a hand-written hit path
//! could win over actix-http is measured rather than guessed.
//!
//! ```sh
//! taskset -c 0 cargo run --release --example httpfloor -- 127.0.0.1:18472
//! ```
//! Only loopback addresses are accepted.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::{TcpListener, TcpStream};

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18472".into())
        .parse()
        .expect("address: IP:PORT");
    assert!(addr.ip().is_loopback(), "loopback only");
    let answer: Rc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 512\r\ncontent-type: application/octet-stream\r\n\
         x-cache: L1\r\ncache-control: max-age=1799\r\ndate: Fri, 27 Nov 2026 12:00:00 GMT\r\n\r\n{}",
        "v".repeat(512)
    )
    .into_bytes()
    .into();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(serve(stream, answer.clone()));
        }
    });
}

/// One answer per request head (`\r\n\r\n`) read; pipelined requests get their answers in one write.
async fn serve(stream: TcpStream, answer: Rc<[u8]>) {
    let mut input = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut output = Vec::with_capacity(8 * 1024);
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut input[filled..]) {
            Ok(0) => return,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        let mut start = 0;
        while let Some(end) = input[start..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            start += end + 4;
            output.extend_from_slice(&answer);
        }
        if start == 0 && filled == input.len() {
            return; // a head larger than the buffer: not a benchmark request
        }
        input.copy_within(start..filled, 0);
        filled -= start;
        let mut sent = 0;
        while sent < output.len() {
            match stream.try_write(&output[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if stream.writable().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        output.clear();
    }
}
