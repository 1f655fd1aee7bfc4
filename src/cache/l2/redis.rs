//! L2 on a real Redis server (feature `redis`): a small pool of auto-reconnecting multiplexed
//! connections driven by a dedicated one-thread tokio runtime (`perfd-redis`), so connections
//! outlive any one actix worker. Every call has `cache.redis.timeout`; on error or timeout the
//! caller gets a miss (or a no-op) and L1 keeps serving. An error or timeout also marks Redis
//! unreachable, and calls are then skipped (no timeout paid per miss) until the ping (`upkeep.rs`)
//! succeeds again. Writes Redis did not confirm are tracked (`unconfirmed.rs`) and removed from
//! Redis before it is used again, so nothing deleted or replaced during an outage comes back.
//! Keys carry `cache.redis.prefix`.

use super::unconfirmed::Unconfirmed;
use super::{L2Stats, NoAnswer};
use crate::cache::Entry;
use crate::cache::glob::Glob;
use crate::cache::stats::{Latency, hit_rate};
use crate::config::{CacheConfig, RedisConfig};
use crate::error::{Error, Result};
use crate::model::now_ms;
use parking_lot::{Mutex, RwLock};
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Keys fetched per SCAN round when invalidating.
pub(super) const SCAN_COUNT: usize = 1000;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) sets: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) timeouts: AtomicU64,
    /// Calls not sent because Redis was marked unreachable.
    pub(super) skipped: AtomicU64,
    /// Cleared by an error or timeout, set by a successful ping (after any repair).
    pub(super) reachable: AtomicBool,
    /// The last round of pings' median round trip (every pooled connection is pinged),
    /// microseconds (0: none yet).
    pub(super) ping_us: AtomicU64,
    /// Round trips of answered calls.
    pub(super) latency: Latency,
    /// Calls sent and not yet answered (nor timed out).
    pub(super) in_flight: AtomicUsize,
    /// What the log last said: 0 nothing yet, 1 reachable, 2 unreachable (one line a change,
    /// not one a failed call).
    pub(super) announced: AtomicU8,
    /// Times Redis became unreachable (also at start, if it was not there).
    outages: AtomicU64,
}

/// Counts a call in flight until dropped (also when its future is dropped midway).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

pub(super) struct Shared {
    pub(super) cfg: RedisConfig,
    pub(super) client: redis::Client,
    pub(super) pool: RwLock<Vec<ConnectionManager>>,
    pub(super) next: AtomicUsize,
    pub(super) counters: Counters,
    pub(super) unconfirmed: Unconfirmed,
}

pub struct L2 {
    shared: Option<Arc<Shared>>,
    /// Taken in Drop and shut down in the background: dropping a runtime inside another
    /// runtime's worker (where the last reference may go) would panic.
    rt: Mutex<Option<tokio::runtime::Runtime>>,
}

impl L2 {
    pub fn new(cfg: &CacheConfig) -> Result<L2> {
        let Some(url) = cfg.redis.url.clone() else {
            return Ok(L2 { shared: None, rt: Mutex::new(None) });
        };
        let client =
            redis::Client::open(url.as_str()).map_err(|e| Error::Config(format!("cache.redis.url: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("perfd-redis")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            cfg: cfg.redis.clone(),
            client,
            pool: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
            counters: Counters::default(),
            unconfirmed: Unconfirmed::default(),
        });
        rt.spawn(super::upkeep::keep_alive(Arc::downgrade(&shared)));
        Ok(L2 { shared: Some(shared), rt: Mutex::new(Some(rt)) })
    }

    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>, NoAnswer> {
        let Some(s) = self.shared.as_ref() else { return Ok(None) };
        if s.unconfirmed.covers(key) {
            s.counters.misses.fetch_add(1, Relaxed);
            return Ok(None);
        }
        let k = format!("{}{key}", s.cfg.prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&k).cmd("PTTL").arg(&k);
        let Some((raw, pttl)) = s.call::<(Option<Vec<u8>>, i64)>(pipe).await else {
            s.counters.misses.fetch_add(1, Relaxed);
            return Err(NoAnswer);
        };
        let found = raw.filter(|_| pttl > 0).and_then(|raw| decode(&raw, now_ms() + pttl));
        let counter = if found.is_some() { &s.counters.hits } else { &s.counters.misses };
        counter.fetch_add(1, Relaxed);
        Ok(found)
    }

    /// Many keys in one round trip (GET + PTTL of each, pipelined); when Redis does not
    /// answer, every key is a miss (and counted as one).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, NoAnswer> {
        let Some(s) = &self.shared else { return Ok(vec![None; keys.len()]) };
        let mut pipe = redis::pipe();
        for key in keys {
            let k = format!("{}{key}", s.cfg.prefix);
            pipe.cmd("GET").arg(&k).cmd("PTTL").arg(&k);
        }
        let Some(raw) = s.call::<Vec<(Option<Vec<u8>>, i64)>>(pipe).await else {
            s.counters.misses.fetch_add(keys.len() as u64, Relaxed);
            return Err(NoAnswer);
        };
        let now = now_ms();
        let mut found: Vec<Option<Entry>> = raw
            .into_iter()
            .zip(keys)
            .map(|((raw, pttl), key)| {
                raw.filter(|_| pttl > 0 && !s.unconfirmed.covers(key))
                    .and_then(|raw| decode(&raw, now + pttl))
            })
            .collect();
        found.resize(keys.len(), None);
        let hits = found.iter().filter(|e| e.is_some()).count() as u64;
        s.counters.hits.fetch_add(hits, Relaxed);
        s.counters.misses.fetch_add(keys.len() as u64 - hits, Relaxed);
        Ok(found)
    }

    pub async fn set(&self, key: &str, entry: &Entry) -> Result<(), NoAnswer> {
        let Some(s) = &self.shared else { return Ok(()) };
        let ttl = entry.ttl_ms(now_ms());
        if ttl <= 0 {
            // Expired before it got here: the value it replaces must not outlive it in Redis.
            return self.delete(key).await;
        }
        let unanswered = Unanswered(s, Some(Note::Key(key)));
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(format!("{}{key}", s.cfg.prefix)).arg(encode(entry)).arg("PX").arg(ttl).ignore();
        s.call::<()>(pipe).await.ok_or(NoAnswer)?;
        s.counters.sets.fetch_add(1, Relaxed);
        unanswered.answered();
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<(), NoAnswer> {
        let Some(s) = &self.shared else { return Ok(()) };
        let unanswered = Unanswered(s, Some(Note::Key(key)));
        let mut pipe = redis::pipe();
        pipe.cmd("UNLINK").arg(format!("{}{key}", s.cfg.prefix)).ignore();
        s.call::<()>(pipe).await.ok_or(NoAnswer)?;
        unanswered.answered();
        Ok(())
    }

    /// Deletes prefixed keys matching a glob with SCAN + UNLINK (never KEYS); how many went.
    pub async fn invalidate(&self, pattern: &Glob) -> u64 {
        let Some(s) = &self.shared else { return 0 };
        let unanswered = Unanswered(s, Some(Note::Pattern(pattern)));
        let n = s.scan_unlink(&format!("{}{}", glob_escape(&s.cfg.prefix), pattern.as_str()), false).await;
        match n {
            Some(n) => {
                unanswered.answered();
                n
            }
            None => 0,
        }
    }

    /// Deletes every key with perfd's prefix (and nothing else: no FLUSHALL).
    pub async fn clear(&self) -> Result<u64> {
        let Some(s) = &self.shared else { return Ok(0) };
        let unanswered = Unanswered(s, Some(Note::Everything));
        match s.scan_unlink(&format!("{}*", glob_escape(&s.cfg.prefix)), false).await {
            Some(n) => {
                unanswered.answered();
                Ok(n)
            }
            None => Err(Error::Unavailable(
                "Redis did not answer; L2 is not read until it is back and cleared".into(),
            )),
        }
    }

    pub fn stats(&self) -> L2Stats {
        let Some(s) = &self.shared else { return L2Stats::default() };
        let c = &s.counters;
        let ping = c.ping_us.load(Relaxed);
        let (hits, misses) = (c.hits.load(Relaxed), c.misses.load(Relaxed));
        let latency_counts = crate::cache::stats::LatencyCounts::of([&c.latency]);
        let (latency_p50_ms, latency_p99_ms) = latency_counts.quantiles_ms().unwrap_or_default();
        L2Stats {
            enabled: true,
            reachable: c.reachable.load(Relaxed),
            hits,
            misses,
            hit_rate_percent: hit_rate(hits, misses),
            latency_p50_ms,
            latency_p99_ms,
            latency_counts,
            sets: c.sets.load(Relaxed),
            errors: c.errors.load(Relaxed),
            timeouts: c.timeouts.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
            outages: c.outages.load(Relaxed),
            pending_repairs: s.unconfirmed.len(),
            ping_ms: (ping > 0).then(|| ping as f64 / 1000.0),
            pool_size: s.pool.read().len(),
            in_flight: c.in_flight.load(Relaxed),
        }
    }
}

/// What an L2 write would leave unconfirmed.
enum Note<'a> {
    Key(&'a str),
    Pattern(&'a Glob),
    Everything,
}

/// Notes a write as unconfirmed unless Redis answered it: on an error, a timeout or a skipped
/// call, and if the call's future is dropped before the answer (at shutdown; actix does not
/// cancel a handler when its client goes away, actix-web #3462).
struct Unanswered<'a>(&'a Shared, Option<Note<'a>>);

impl Unanswered<'_> {
    fn answered(mut self) {
        self.1 = None;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let u = &self.0.unconfirmed;
        match self.1.take() {
            Some(Note::Key(k)) => u.key(k),
            Some(Note::Pattern(p)) => u.pattern(p.clone()),
            Some(Note::Everything) => u.everything(),
            None => {}
        }
    }
}

impl Drop for L2 {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.lock().take() {
            rt.shutdown_background();
        }
    }
}

impl Shared {
    /// Marks Redis reachable or not and logs a change: an operator reading the journal sees
    /// when an outage began, why, and when it ended (the address only: a URL may hold a password).
    pub(super) fn mark(&self, reachable: bool, why: std::fmt::Arguments) {
        self.counters.reachable.store(reachable, Relaxed);
        let was = self.counters.announced.swap(if reachable { 1 } else { 2 }, Relaxed);
        let addr = self.client.get_connection_info().addr();
        match (was, reachable) {
            (1, true) | (2, false) => {}
            (_, true) => log::info!("redis L2 at {addr} is reachable{why}"),
            (_, false) => {
                self.counters.outages.fetch_add(1, Relaxed);
                log::warn!("redis L2 at {addr} is unreachable ({why}); serving from L1 until it is back")
            }
        }
    }

    pub(super) fn connection(&self) -> Option<ConnectionManager> {
        let pool = self.pool.read();
        if pool.is_empty() {
            return None;
        }
        Some(pool[self.next.fetch_add(1, Relaxed) % pool.len()].clone())
    }

    /// Runs a pipeline unless Redis is marked unreachable (then the call is skipped and counted).
    pub(super) async fn call<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Option<T> {
        if !self.counters.reachable.load(Relaxed) {
            self.counters.skipped.fetch_add(1, Relaxed);
            return None;
        }
        self.send(pipe).await
    }

    /// Runs a pipeline with the timeout; errors and timeouts are counted, mark Redis unreachable
    /// and become `None`.
    pub(super) async fn send<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Option<T> {
        let Some(mut conn) = self.connection() else {
            self.counters.errors.fetch_add(1, Relaxed);
            return None;
        };
        let started = std::time::Instant::now();
        let _in_flight = InFlight::new(&self.counters.in_flight);
        match tokio::time::timeout(self.cfg.timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.counters.latency.record(started.elapsed());
                Some(v)
            }
            Ok(Err(e)) => {
                self.counters.errors.fetch_add(1, Relaxed);
                self.mark(false, format_args!("{e}"));
                None
            }
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Relaxed);
                let t = self.cfg.timeout;
                self.mark(false, format_args!("a call took over {t:?}"));
                None
            }
        }
    }

    /// `send` while repairing (Redis is not marked reachable yet), `call` otherwise.
    async fn query<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline, repairing: bool) -> Option<T> {
        if repairing { self.send(pipe).await } else { self.call(pipe).await }
    }

    /// SCAN + UNLINK of a (prefixed) pattern; `repairing` sends even while Redis is marked
    /// unreachable, as the repair runs before it is marked reachable again.
    pub(super) async fn scan_unlink(&self, pattern: &str, repairing: bool) -> Option<u64> {
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT);
            let ((next, keys),): ((u64, Vec<String>),) = self.query(pipe, repairing).await?;
            if !keys.is_empty() {
                let mut unlink = redis::pipe();
                unlink.cmd("UNLINK").arg(&keys);
                let (n,): (u64,) = self.query(unlink, repairing).await?;
                removed += n;
            }
            if next == 0 {
                return Some(removed);
            }
            cursor = next;
        }
    }
}

/// Redis value: `u8` content-type length, the content type, then the value.
fn encode(e: &Entry) -> Vec<u8> {
    let ct = e.content_type.as_deref().unwrap_or("");
    let ct = &ct.as_bytes()[..ct.len().min(255)];
    let mut out = Vec::with_capacity(1 + ct.len() + e.value.len());
    out.push(ct.len() as u8);
    out.extend_from_slice(ct);
    out.extend_from_slice(&e.value);
    out
}

fn decode(raw: &[u8], expires_at_ms: i64) -> Option<Entry> {
    let n = *raw.first()? as usize;
    let ct = std::str::from_utf8(raw.get(1..1 + n)?).ok()?;
    Some(Entry {
        value: bytes::Bytes::copy_from_slice(&raw[1 + n..]),
        content_type: (!ct.is_empty()).then(|| Arc::from(ct)),
        expires_at_ms,
    })
}

/// Escapes glob metacharacters so the prefix matches only itself.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
