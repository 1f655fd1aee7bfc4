//! Fill leases: stampede control for missing keys. One caller gets the lease and computes the
//! value; the others wait for its PUT (which releases the lease and wakes them) or for the lease
//! to run out. The same machinery gives in-process single flight ([`TieredCache::get_or_load`]).

use super::{Entry, Level, TieredCache, l1};
use crate::error::Result;
use crate::model::now_ms;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The outcome of asking for a fill lease on a missing key.
pub enum Lease {
    /// The caller holds the lease: compute the value and store it.
    Granted,
    /// Someone else holds it until the given instant; wait on the notify.
    Held(Arc<Notify>, Instant),
    /// The key was filled after the caller's miss (a PUT landed in between): here is the value.
    Filled(Arc<Entry>),
}

impl TieredCache {
    /// Asks for the fill lease on a missing key (see [`Lease`]).
    pub fn lease(&self, full_key: &str) -> Lease {
        let now = Instant::now();
        let mut leases = self.leases.lock();
        match leases.get(full_key) {
            Some((until, notify)) if *until > now => Lease::Held(notify.clone(), *until),
            _ => {
                // A PUT stores its value before it releases the lease, so a lease found free
                // may follow a PUT that landed after the caller's miss: L1 is read again under
                // the lock, or two callers would compute one value (seen in the stampede test).
                if let l1::Lookup::Hit(hit) = self.l1.get(full_key, now_ms()) {
                    return Lease::Filled(hit);
                }
                leases.insert(full_key.to_owned(), (now + self.cfg.lease_ttl, Arc::new(Notify::new())));
                Lease::Granted
            }
        }
    }

    /// Drops leases that ran out (see [`TieredCache::sweep`]). A lease is otherwise removed only
    /// by a PUT or DELETE of its key or the next lease on it, so every key a client asked for
    /// with `?wait=` and never filled stayed in the map for good.
    pub(super) fn drop_expired_leases(&self, now: Instant) -> usize {
        let mut leases = self.leases.lock();
        let before = leases.len();
        leases.retain(|_, (until, _)| *until > now);
        before - leases.len()
    }

    pub(super) fn release(&self, full_key: &str) {
        if let Some((_, notify)) = self.leases.lock().remove(full_key) {
            notify.notify_waiters();
        }
    }

    /// Waits (up to `wait`) for a missing key to be filled by whoever holds its lease; takes the
    /// lease when it is free or runs out. `Ok(Err(true))`: this caller now holds the lease;
    /// `Ok(Err(false))`: the wait ran out, or `gone` said the caller left (checked every
    /// `check_every` and before taking a lease, so a caller that left never takes one).
    pub async fn get_or_wait(
        &self,
        strategy: &str,
        key: &str,
        wait: Duration,
        gone: impl Fn() -> bool,
        check_every: Duration,
    ) -> Result<Result<(Arc<Entry>, Level), bool>> {
        let deadline = Instant::now() + wait;
        let s = self.strategy(strategy, key)?;
        let full = format!("{strategy}:{key}");
        loop {
            if let Some(hit) = self.get(strategy, key).await? {
                return Ok(Ok(hit));
            }
            if gone() {
                return Ok(Err(false));
            }
            let (notify, until) = match self.lease(&full) {
                Lease::Granted => {
                    self.count(s, |c| &c.leases);
                    return Ok(Err(true));
                }
                Lease::Held(n, until) => (n, until),
                Lease::Filled(hit) => return Ok(Ok((hit, Level::L1))),
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before the re-check, so a PUT landing in between still wakes us.
            notified.as_mut().enable();
            if let l1::Lookup::Hit(hit) = self.l1.get(&full, now_ms()) {
                return Ok(Ok((hit, Level::L1)));
            }
            if Instant::now() >= deadline {
                return Ok(Err(false));
            }
            let wake = deadline.min(until).min(Instant::now() + check_every);
            let _ = tokio::time::timeout_at(wake.into(), notified).await;
        }
    }

    /// In-process single flight: the cached value, or `loader`'s (stored for the strategy's TTL),
    /// with concurrent callers for one key sharing a single `loader` call.
    pub async fn get_or_load<F, Fut>(&self, strategy: &str, key: &str, loader: F) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        let wait = self.cfg.lease_ttl;
        match self.get_or_wait(strategy, key, wait, || false, wait).await? {
            Ok((e, _)) => Ok(e.value.clone()),
            Err(_) => {
                let (full, _) = self.full_key(strategy, key)?;
                // Gives the lease up if the loader fails, panics or is dropped midway, so the
                // next caller loads at once instead of waiting out the lease.
                let held = Held { cache: self, full: Some(full) };
                let v = loader().await?;
                self.set(strategy, key, v.clone(), Some("application/json"), None).await?;
                held.disarm();
                Ok(v)
            }
        }
    }
}

/// A fill lease held by [`TieredCache::get_or_load`]; released when dropped armed.
struct Held<'a> {
    cache: &'a TieredCache,
    full: Option<String>,
}

impl Held<'_> {
    /// After a successful `set`, which released the lease: a lease on the key now is someone
    /// else's.
    fn disarm(mut self) {
        self.full = None;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(full) = &self.full {
            self.cache.release(full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::cache;
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[tokio::test]
    async fn get_or_load_calls_the_loader_once_for_concurrent_callers() {
        let cache = Arc::new(cache());
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load("performance", "report", || async move {
                            calls.fetch_add(1, Relaxed);
                            // Hold the lease until every caller is waiting.
                            gate.notified().await;
                            Ok(Bytes::from_static(b"{\"p99\":12}"))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        // Bounded: yield until the loader runs, then let it finish.
        for _ in 0..1000 {
            if calls.load(Relaxed) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(&t.await.unwrap()[..], b"{\"p99\":12}");
        }
        assert_eq!(calls.load(Relaxed), 1);
    }

    /// Regression: a PUT that landed between a waiter's miss and its lease (the lease it held
    /// released, the value stored) gave that waiter a second lease (the stampede test saw two of
    /// 50). The free lease now comes with a look at L1.
    #[tokio::test]
    async fn a_key_filled_after_the_miss_gives_its_value_not_a_lease() {
        let cache = cache();
        assert!(matches!(cache.lease("llm_response:p"), Lease::Granted));
        assert!(cache.get("llm_response", "p").await.unwrap().is_none(), "the waiter's miss");
        cache.set("llm_response", "p", Bytes::from_static(b"v"), None, None).await.unwrap();
        match cache.lease("llm_response:p") {
            Lease::Filled(e) => assert_eq!(&e.value[..], b"v"),
            _ => panic!("a lease for a key that holds a value"),
        }
        assert!(cache.leases.lock().is_empty(), "the PUT released the lease and none was taken");
    }

    /// Regression: leases nobody filled stayed in memory for good, one per key asked for.
    #[test]
    fn leases_that_ran_out_are_swept() {
        let cache = cache();
        for i in 0..1000 {
            assert!(matches!(cache.lease(&format!("memory_query:q{i}")), Lease::Granted));
        }
        let now = Instant::now();
        assert_eq!(cache.drop_expired_leases(now), 0, "none ran out yet");
        assert!(matches!(cache.lease("memory_query:q7"), Lease::Held(..)));
        let later = now + cache.config().lease_ttl + std::time::Duration::from_secs(1);
        assert_eq!(cache.drop_expired_leases(later), 1000);
        assert!(cache.leases.lock().is_empty());
    }

    /// A loader dropped midway (its caller went away, or it panicked) gives the lease up: the
    /// next caller loads at once, not after the lease's 30 s.
    #[tokio::test]
    async fn a_dropped_load_gives_the_lease_up() {
        let cache = Arc::new(cache());
        assert_eq!(cache.config().lease_ttl, std::time::Duration::from_secs(30));
        let started = Arc::new(tokio::sync::Notify::new());
        let stuck = {
            let (cache, started) = (cache.clone(), started.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("performance", "stuck", || async move {
                        started.notify_one();
                        std::future::pending::<crate::error::Result<Bytes>>().await
                    })
                    .await
            })
        };
        started.notified().await;
        stuck.abort();
        assert!(stuck.await.unwrap_err().is_cancelled());
        let next = cache.get_or_load("performance", "stuck", || async { Ok(Bytes::from_static(b"1")) });
        let v = tokio::time::timeout(std::time::Duration::from_secs(5), next).await.expect("loaded at once");
        assert_eq!(&v.unwrap()[..], b"1");
    }
}
