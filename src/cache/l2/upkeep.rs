//! The Redis L2's background upkeep (feature `redis`): connecting the pool, pinging once a
//! second, and repairing what Redis did not confirm before marking it reachable again.

use super::redis::{SCAN_COUNT, Shared, glob_escape};
use super::unconfirmed::Repair;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How often the background task pings Redis (and connects, while it is unreachable).
const PING_EVERY: Duration = Duration::from_secs(1);

/// Longest wait between a connection's reconnect attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

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
                // Reconnect attempts at most half a second apart (the crate doubles the delay
                // from 100 ms up to a minute), so a connection is back soon after Redis is.
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(None)
                    .set_max_delay(RECONNECT_MAX_DELAY);
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
        let pool = s.pool.read().clone();
        if !pool.is_empty() {
            match ping_all(pool).await {
                Err(dead) => s.mark(
                    false,
                    format_args!("{dead} of the pool's connections did not answer PING within 1 s"),
                ),
                Ok(ping) => {
                    s.counters.ping_us.store(ping.as_micros().max(1) as u64, Relaxed);
                    let repaired = match s.unconfirmed.snapshot() {
                        Some(repair) => s.repair(repair).await,
                        None => true,
                    };
                    match repaired {
                        true => s.mark(true, format_args!("")),
                        false => {
                            s.mark(false, format_args!("the repair of writes made during the outage failed"))
                        }
                    }
                }
            }
        }
        drop(s);
        tokio::time::sleep(PING_EVERY).await;
    }
}

/// PINGs every connection of the pool at once: the median round trip when all answer, else how
/// many did not. Each connection reconnects on its own after a failure, so a ping of one only
/// (as before) took Redis for back while calls on the others still failed: it flapped, and
/// after a 3 s outage it was used again 5 s after it returned.
async fn ping_all(pool: Vec<ConnectionManager>) -> Result<Duration, usize> {
    let mut pings = tokio::task::JoinSet::new();
    for mut conn in pool {
        pings.spawn(async move {
            let started = Instant::now();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(Duration::from_secs(1), ping).await {
                Ok(Ok(_)) => Some(started.elapsed()),
                _ => None,
            }
        });
    }
    let mut took = Vec::new();
    let mut dead = 0;
    while let Some(done) = pings.join_next().await {
        match done {
            Ok(Some(t)) => took.push(t),
            _ => dead += 1,
        }
    }
    if dead > 0 {
        return Err(dead);
    }
    took.sort_unstable();
    Ok(took[took.len() / 2])
}
