//! Cache hit rates over recent intervals. The cache counts hits and misses since start; a hit
//! rate since start is 0 before the first lookup (so an idle cache looked like a failing one and
//! fired the default "low cache hit rate" alert) and barely moves after a day of traffic. The
//! series get the rate of each tick's interval, and only when it had lookups; the health score
//! gets the rate of the last five minutes, once they hold enough lookups to mean something.

use crate::cache::stats::{CacheStatistics, hit_rate};
use std::collections::{HashMap, VecDeque};

/// The health score's window, and the lookups it must hold before the hit rate counts.
pub const HEALTH_WINDOW_MS: i64 = 5 * 60_000;
pub const HEALTH_MIN_LOOKUPS: u64 = 100;

/// Hit rates of one tick; `None` where there was no lookup (or too few, for `health`).
#[derive(Debug, PartialEq)]
pub struct TickRates {
    pub total: Option<f64>,
    pub strategies: Vec<(String, f64)>,
    pub health: Option<f64>,
}

pub struct HitRates {
    /// (hits, misses) of each strategy at the last tick.
    last: HashMap<String, (u64, u64)>,
    last_total: (u64, u64),
    /// (tick time, hits, misses) of every lookup, back to the last tick at or before the start
    /// of the health window.
    recent: VecDeque<(i64, u64, u64)>,
}

impl HitRates {
    /// `start_ms`: when the counters were zero (the cache's start).
    pub fn new(start_ms: i64) -> HitRates {
        HitRates { last: HashMap::new(), last_total: (0, 0), recent: VecDeque::from([(start_ms, 0, 0)]) }
    }

    pub fn tick(&mut self, now_ms: i64, cache: &CacheStatistics) -> TickRates {
        let total = (cache.total.hits, cache.total.misses);
        let total_rate = rate_between(self.last_total, total);
        self.last_total = total;
        let mut strategies = Vec::new();
        for (name, st) in &cache.strategies {
            let now = (st.counters.hits, st.counters.misses);
            let before = self.last.insert(name.clone(), now).unwrap_or((0, 0));
            if let Some(r) = rate_between(before, now) {
                strategies.push((name.clone(), r));
            }
        }
        self.recent.push_back((now_ms, total.0, total.1));
        while self.recent.get(1).is_some_and(|&(at, ..)| at <= now_ms - HEALTH_WINDOW_MS) {
            self.recent.pop_front();
        }
        let health = self.recent.front().and_then(|&(_, h, m)| {
            let (hits, misses) = since((h, m), total);
            (hits + misses >= HEALTH_MIN_LOOKUPS).then(|| hit_rate(hits, misses))
        });
        TickRates { total: total_rate, strategies, health }
    }
}

/// Hits and misses from `before` to `now`. The counters only grow; if they ever went back, what
/// they hold now is counted from zero.
fn since(before: (u64, u64), now: (u64, u64)) -> (u64, u64) {
    if now.0 < before.0 || now.1 < before.1 { now } else { (now.0 - before.0, now.1 - before.1) }
}

fn rate_between(before: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let (hits, misses) = since(before, now);
    (hits + misses > 0).then(|| hit_rate(hits, misses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::stats::{CountersSnapshot, StrategyStats};

    fn stats(hits: u64, misses: u64, crew: (u64, u64)) -> CacheStatistics {
        let total = CountersSnapshot { hits, misses, ..Default::default() };
        let mut s = CacheStatistics { total, ..Default::default() };
        let counters = CountersSnapshot { hits: crew.0, misses: crew.1, ..Default::default() };
        s.strategies.insert("crew_config".into(), StrategyStats { counters, ..Default::default() });
        s
    }

    #[test]
    fn each_tick_gets_the_rate_of_its_own_lookups() {
        let mut r = HitRates::new(0);
        let idle = r.tick(5_000, &stats(0, 0, (0, 0)));
        assert_eq!(idle, TickRates { total: None, strategies: vec![], health: None }, "no lookup, no rate");
        let t = r.tick(10_000, &stats(3, 1, (1, 1)));
        assert_eq!((t.total, t.strategies), (Some(75.0), vec![("crew_config".into(), 50.0)]));
        // Since start it is 50 %; this interval's 2 lookups were misses.
        let t = r.tick(15_000, &stats(3, 3, (1, 3)));
        assert_eq!((t.total, t.strategies), (Some(0.0), vec![("crew_config".into(), 0.0)]));
        assert_eq!(r.tick(20_000, &stats(3, 3, (1, 3))).total, None, "idle again");
        assert_eq!(r.tick(25_000, &stats(1, 0, (0, 0))).total, Some(100.0), "counters that went back");
    }

    #[test]
    fn health_reads_the_last_five_minutes_once_they_hold_100_lookups() {
        let mut r = HitRates::new(0);
        assert_eq!(r.tick(10_000, &stats(10, 89, (0, 0))).health, None, "99 lookups are too few");
        assert_eq!(r.tick(20_000, &stats(10, 90, (0, 0))).health, Some(10.0), "since start");
        // Then only hits, one tick a minute: the early misses leave the window.
        let mut last = None;
        for minute in 1..=6 {
            last = r.tick(20_000 + minute * 60_000, &stats(10 + 100 * minute as u64, 90, (0, 0))).health;
        }
        assert_eq!(last, Some(100.0));
        // Five idle minutes later, no lookup is left in the window.
        assert_eq!(r.tick(20_000 + 12 * 60_000, &stats(610, 90, (0, 0))).health, None);
    }
}
