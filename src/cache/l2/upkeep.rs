//! The Redis L2's background upkeep (feature `redis`): connecting the pool, pinging once a
//! second, and repairing what Redis did not confirm before marking it reachable again.

use super::redis::{SCAN_COUNT, Shared, glob_escape};
use super::unconfirmed::Repair;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How often the background task pings Redis (and connects, while it is unreachable).
const PING_EVERY: Duration = Duration::from_secs(1);

impl Shared {
    /// Removes from Redis what it did not confirm; true when done.
    async fn repair(&self, r: Repair) -> bool {
        let prefix = glob_escape(&self.cfg.prefix);
        if r.everything && self.scan_unlink(&format!("{prefix}*"), true).await.is_none() {
            return false;
        }
        for keys in r.keys.chunks(SCAN_COUNT) {
            let mut unlink = redis::pipe();
            unlink
                .cmd("UNLINK")
                .arg(keys.iter().map(|k| format!("{}{k}", self.cfg.prefix)).collect::<Vec<_>>());
            if self.send::<(u64,)>(unlink).await.is_none() {
                return false;
            }
        }
        for pattern in &r.patterns {
            if self.scan_unlink(&format!("{prefix}{pattern}"), true).await.is_none() {
                return false;
            }
        }
        self.unconfirmed.repaired(r.generation);
        if r.everything {
            log::info!("redis: cleared perfd's keys after an outage");
        } else {
            let (keys, patterns) = (r.keys.len(), r.patterns.len());
            log::info!("redis: removed {keys} keys and {patterns} patterns written during an outage");
        }
        true
    }
}

/// Connects the pool (retrying while Redis is down) and pings it, until the L2 is dropped. After
/// a successful ping, unconfirmed writes are repaired before Redis is marked reachable.
pub(super) async fn keep_alive(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.pool.read().is_empty() {
            let mut conns = Vec::with_capacity(s.cfg.pool_size);
            for _ in 0..s.cfg.pool_size {
                // No response timeout of the connection's own (the crate's default is 500 ms):
                // every call has `cache.redis.timeout`, which may be longer, and is counted as
                // a timeout when it runs out (a cut at 500 ms was counted as an error).
                let config = ConnectionManagerConfig::new().set_response_timeout(None);
                let connect = ConnectionManager::new_with_config(s.client.clone(), config);
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(Ok(c)) => conns.push(c),
                    _ => break,
                }
            }
            if conns.len() == s.cfg.pool_size {
                *s.pool.write() = conns;
            } else {
                s.mark(false, format_args!("cannot connect"));
            }
        }
        if let Some(mut conn) = s.connection() {
            let started = Instant::now();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            let answered = matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)));
            let took = started.elapsed();
            if !answered {
                s.mark(false, format_args!("no answer to PING within 1 s"));
            } else {
                s.counters.ping_us.store(took.as_micros().max(1) as u64, Relaxed);
                let repaired = match s.unconfirmed.snapshot() {
                    Some(repair) => s.repair(repair).await,
                    None => true,
                };
                match repaired {
                    true => s.mark(true, format_args!(" (ping {} µs)", took.as_micros())),
                    false => {
                        s.mark(false, format_args!("the repair of writes made during the outage failed"))
                    }
                }
            }
        }
        drop(s);
        tokio::time::sleep(PING_EVERY).await;
    }
}
