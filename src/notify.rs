//! systemd integration: `sd_notify` datagrams (READY, RELOADING, STOPPING, WATCHDOG) when perfd runs under
//! systemd (`NOTIFY_SOCKET` set), and a watchdog thread that pings only while the writer and the
//! sampler are alive. Without `NOTIFY_SOCKET` every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// Where systemd listens, read once at start (from `NOTIFY_SOCKET`).
#[derive(Clone, Debug)]
pub struct Notifier {
    socket: Option<PathBuf>,
}

impl Notifier {
    pub fn from_env(notify_socket: Option<String>) -> Notifier {
        // Abstract sockets ("@name") are not supported by std; perfd's unit uses a path.
        Notifier { socket: notify_socket.filter(|s| s.starts_with('/')).map(PathBuf::from) }
    }

    pub fn send(&self, state: &str) {
        let Some(path) = &self.socket else { return };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to(state.as_bytes(), path));
        if let Err(e) = sent {
            log::warn!("sd_notify {state:?}: {e}");
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` carries it (`MONOTONIC_USEC=`).
pub fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec.max(0) as u64).saturating_mul(1_000_000).saturating_add(t.tv_nsec.max(0) as u64 / 1000)
}

/// Pings `WATCHDOG=1` every half `interval` while `alive()` holds; stops when `stop` is set.
pub fn start_watchdog(
    notifier: Notifier,
    interval: Duration,
    alive: impl Fn() -> bool + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("perfd-watchdog".into()).spawn(move || {
        while !stop.load(Relaxed) {
            if alive() {
                notifier.send("WATCHDOG=1");
            } else {
                log::error!("watchdog: the writer or the sampler is stuck; not pinging systemd");
            }
            std::thread::park_timeout(interval / 2);
        }
    })
}
