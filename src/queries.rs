//! Query performance: the backend reports its database queries, perfd records its own store
//! reads, and both are grouped by fingerprint (literals replaced by `?`) with count, errors,
//! rows and latency percentiles. In memory; bounded by [`MAX_FINGERPRINTS`].
//!
//! Latencies go into a sketch per fingerprint ([`monitor::latency_sketch`]), not an HDR
//! histogram: one over 1 µs to 1 h is a dense 26 KB whatever it holds, so 10,000 fingerprints
//! took 260 MB; and a sketch has no upper bound to clamp at.

use crate::monitor::{self, latency_sketch};
use parking_lot::Mutex;
use serde::Serialize;
use sketches_ddsketch::DDSketch;
use std::collections::HashMap;

/// Distinct fingerprints kept; later new ones are counted under `other`.
pub const MAX_FINGERPRINTS: usize = 10_000;
/// Longest query text fingerprinted (the rest is cut).
const MAX_QUERY_LEN: usize = 4096;

struct Group {
    errors: u64,
    rows: u64,
    /// Milliseconds.
    latency: DDSketch,
}

#[derive(Default)]
pub struct QueryStats {
    groups: Mutex<HashMap<String, Group>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FingerprintSummary {
    pub fingerprint: String,
    pub count: u64,
    pub errors: u64,
    pub rows: u64,
    pub avg_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

/// Replaces string and number literals with `?`, collapses `IN (?, ?, …)` and whitespace.
pub fn fingerprint(query: &str) -> String {
    let q = &query[..query.floor_char_boundary(MAX_QUERY_LEN.min(query.len()))];
    let mut out = String::with_capacity(q.len());
    let mut chars = q.chars().peekable();
    let mut prev_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let mut escaped = false;
                for n in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if n == '\\' {
                        escaped = true;
                    } else if n == c {
                        break;
                    }
                }
                out.push('?');
                prev_word = false;
            }
            c if c.is_ascii_digit() && !prev_word => {
                while chars.next_if(|n| n.is_ascii_alphanumeric() || *n == '.').is_some() {}
                out.push('?');
            }
            c if c.is_whitespace() => {
                while chars.next_if(|n| n.is_whitespace()).is_some() {}
                if !out.ends_with(' ') && !out.is_empty() {
                    out.push(' ');
                }
                prev_word = false;
            }
            c => {
                out.push(c.to_ascii_lowercase());
                prev_word = c.is_alphanumeric() || c == '_';
            }
        }
    }
    // "in (?, ?, ?)" → "in (?+)"
    while let Some(i) = out.find("?, ?") {
        let end = out[i..].find(')').map_or(out.len(), |e| i + e);
        if out[i..end].chars().all(|c| matches!(c, '?' | ',' | ' ')) {
            out.replace_range(i..end, "?+");
        } else {
            break;
        }
    }
    out.trim().to_owned()
}

impl QueryStats {
    pub fn record(&self, query: &str, duration_ms: f64, rows: u64, ok: bool) {
        let fp = fingerprint(query);
        let mut groups = self.groups.lock();
        let key = if groups.len() >= MAX_FINGERPRINTS && !groups.contains_key(&fp) {
            "other".to_owned()
        } else {
            fp
        };
        let g = groups.entry(key).or_insert_with(|| Group { errors: 0, rows: 0, latency: latency_sketch() });
        g.latency.add(duration_ms.max(0.0));
        g.rows += rows;
        if !ok {
            g.errors += 1;
        }
    }

    /// The `limit` fingerprints with the highest p95, slowest first.
    pub fn slowest(&self, limit: usize) -> Vec<FingerprintSummary> {
        let groups = self.groups.lock();
        let mut out: Vec<FingerprintSummary> = groups
            .iter()
            .map(|(fp, g)| {
                let count = g.latency.count() as u64;
                let (p95_ms, max_ms) = (monitor::quantile(&g.latency, 0.95), g.latency.max().unwrap_or(0.0));
                FingerprintSummary {
                    fingerprint: fp.clone(),
                    count,
                    errors: g.errors,
                    rows: g.rows,
                    avg_ms: g.latency.sum().unwrap_or(0.0) / count.max(1) as f64,
                    p95_ms,
                    max_ms,
                }
            })
            .collect();
        out.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms));
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_replaced() {
        assert_eq!(
            fingerprint("SELECT * FROM crews WHERE id = 42 AND name = 'x''y' AND t2 > 1.5e3"),
            "select * from crews where id = ? and name = ?? and t2 > ?"
        );
        assert_eq!(fingerprint("select a from t where id in (1, 2, 3)"), "select a from t where id in (?+)");
        assert_eq!(fingerprint("  select\n\t1 "), "select ?");
        assert_eq!(fingerprint("select \"quoted\" from t_1"), "select ? from t_1");
    }

    #[test]
    fn grouped_and_bounded() {
        let s = QueryStats::default();
        for i in 0..10 {
            s.record(&format!("select * from t where id = {i}"), i as f64, 1, i != 3);
        }
        let top = s.slowest(5);
        assert_eq!(top.len(), 1);
        assert_eq!((top[0].count, top[0].errors, top[0].rows), (10, 1, 10));
        assert!((top[0].max_ms - 9.0).abs() < 0.1);
    }

    /// Percentiles within 1 %, and durations over an hour kept as they are (the histogram
    /// clamped them at 1 h).
    #[test]
    fn latencies_are_kept_to_one_percent_without_an_upper_bound() {
        let s = QueryStats::default();
        for i in 1..=1000 {
            s.record("select 1", f64::from(i) * 0.5, 0, true);
        }
        s.record("select long", 3.0 * 3_600_000.0, 0, true);
        let top = s.slowest(5);
        assert_eq!(top[0].fingerprint, "select long");
        assert_eq!((top[0].p95_ms, top[0].max_ms), (10_800_000.0, 10_800_000.0));
        let short = &top[1];
        assert_eq!((short.count, short.max_ms), (1000, 500.0));
        assert!((short.p95_ms / 475.0 - 1.0).abs() <= 0.01, "{}", short.p95_ms);
        assert!((short.avg_ms - 250.25).abs() < 1e-9, "{}", short.avg_ms);
    }
}
