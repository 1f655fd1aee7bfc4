//! `get_many`: the lookups behind mget, L1 first in one pass and the L1 misses from L2 in one
//! pipelined round trip.

use super::{Entry, Strategy, TieredCache, key_is_valid};
use crate::error::Result;
use crate::model::now_ms;
use std::sync::Arc;
use std::time::Instant;

impl TieredCache {
    /// Many (strategy, key) lookups at once: every key is validated first (one bad key fails
    /// the call), L1 answers what it holds, and the rest go to L2 in one round trip. Latency
    /// is recorded per key (the call's time divided by the number of keys).
    pub async fn get_many<K: AsRef<str>>(&self, keys: &[(K, K)]) -> Result<Vec<Option<Arc<Entry>>>> {
        let started = Instant::now();
        // Neighbours usually share a strategy: reuse the last one instead of another map lookup.
        let mut last: Option<(&str, &Strategy)> = None;
        let mut strategies = Vec::with_capacity(keys.len());
        for (strategy, key) in keys {
            let (strategy, key) = (strategy.as_ref(), key.as_ref());
            let s = match last {
                Some((name, s)) if name == strategy && key_is_valid(key) => s,
                _ => self.strategy(strategy, key)?,
            };
            last = Some((strategy, s));
            strategies.push(s);
        }
        let now = now_ms();
        let mut found: Vec<Option<Arc<Entry>>> = Vec::with_capacity(keys.len());
        let mut missed = Vec::new();
        for (i, ((strategy, key), s)) in keys.iter().zip(&strategies).enumerate() {
            let e = self.l1_get(s, strategy.as_ref(), key.as_ref(), now);
            match e {
                Some(_) => self.count(s, |c| &c.l1_hits),
                None => missed.push(i),
            }
            found.push(e);
        }
        let l1_ns = started.elapsed().as_nanos() as u64;
        if !keys.is_empty() {
            self.l1_miss_latency.record_ns_times(l1_ns / keys.len() as u64, missed.len() as u64);
        }
        if !missed.is_empty() && self.l2.enabled() {
            let full: Vec<String> =
                missed.iter().map(|&i| format!("{}:{}", keys[i].0.as_ref(), keys[i].1.as_ref())).collect();
            let tickets: Vec<_> = full.iter().map(|k| self.fences.ticket(k)).collect();
            let from_l2 = match self.l2.get_many(&full).await {
                Ok(found) => found,
                Err(_) => {
                    missed.iter().for_each(|&i| self.count(strategies[i], |c| &c.l2_errors));
                    vec![None; full.len()]
                }
            };
            for (((&i, full), e), ticket) in missed.iter().zip(full).zip(from_l2).zip(&tickets) {
                if let Some(e) = e.filter(|e| e.expires_at_ms > now) {
                    let e = Arc::new(e);
                    self.fences.promote(ticket, || self.l1.insert(full, e.clone()));
                    self.count(strategies[i], |c| &c.l2_hits);
                    found[i] = Some(e);
                } else {
                    self.count(strategies[i], |c| &c.misses);
                }
            }
        } else {
            missed.iter().for_each(|&i| self.count(strategies[i], |c| &c.misses));
        }
        if !keys.is_empty() {
            let ns = if missed.is_empty() || !self.l2.enabled() {
                l1_ns
            } else {
                started.elapsed().as_nanos() as u64
            };
            let per_key = ns / keys.len() as u64;
            // One record per run of keys of one strategy that L1 answered, or did not.
            let mut misses = missed.iter().peekable();
            let mut run: Option<(&Strategy, bool, u64)> = None;
            for (i, s) in strategies.iter().enumerate() {
                let l1_answered = misses.next_if_eq(&&i).is_none();
                match &mut run {
                    Some((rs, ra, n)) if std::ptr::eq(*rs, *s) && *ra == l1_answered => *n += 1,
                    _ => {
                        if let Some((rs, ra, n)) = run.replace((s, l1_answered, 1)) {
                            self.timed(rs, ra, per_key, n);
                        }
                    }
                }
            }
            if let Some((rs, ra, n)) = run {
                self.timed(rs, ra, per_key, n);
            }
        }
        Ok(found)
    }
}
