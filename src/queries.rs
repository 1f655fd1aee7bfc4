//! Query performance: the backend reports its database queries, perfd records its own store
//! reads, and both are grouped by fingerprint (literals replaced by `?`) with count, errors,
//! rows and latency percentiles. In memory; bounded by [`MAX_FINGERPRINTS`].

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;

/// Distinct fingerprints kept; later new ones are counted under `other`.
pub const MAX_FINGERPRINTS: usize = 10_000;
/// Longest query text fingerprinted (the rest is cut).
const MAX_QUERY_LEN: usize = 4096;

struct Group {
    errors: u64,
    rows: u64,
    /// Microseconds.
    latency: Histogram<u64>,
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
        let g = groups.entry(key).or_insert_with(|| Group {
            errors: 0,
            rows: 0,
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("static histogram bounds are valid"),
        });
        let _ = g.latency.record(((duration_ms * 1000.0) as u64).clamp(1, 3_600_000_000));
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
            .map(|(fp, g)| FingerprintSummary {
                fingerprint: fp.clone(),
                count: g.latency.len(),
                errors: g.errors,
                rows: g.rows,
                avg_ms: g.latency.mean() / 1000.0,
                p95_ms: g.latency.value_at_quantile(0.95) as f64 / 1000.0,
                max_ms: g.latency.max() as f64 / 1000.0,
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
}
