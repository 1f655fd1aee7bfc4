//! Validated domain values: series keys, points and the limits that validate them.
//!
//! Everything that enters perfd from outside passes through a constructor here, so the rest of
//! the code may assume names, labels, timestamps and values are valid.

use crate::error::{Error, Result, Shown};
use std::fmt::Write as _;

/// Longest metric name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest label value accepted, in bytes; long enough for URLs and hashes, short enough to bound keys.
pub const MAX_LABEL_VALUE_LEN: usize = 1024;
/// Most labels one series may carry (Prometheus and VictoriaMetrics default to 30 as well).
pub const MAX_LABELS: usize = 30;

/// A metric name plus its labels, sorted by label name; the identity of a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub name: String,
    /// Sorted by name, names unique.
    pub labels: Vec<(String, String)>,
}

/// One accepted measurement: unix milliseconds and a finite value.
pub type Point = (i64, f64);

impl SeriesKey {
    /// Validates `name` and `labels` and sorts the labels.
    pub fn new(name: &str, mut labels: Vec<(String, String)>) -> Result<SeriesKey> {
        validate_name(name)?;
        if labels.len() > MAX_LABELS {
            return Err(Error::invalid(format!(
                "series {} has {} labels; at most {MAX_LABELS} are allowed",
                Shown(name),
                labels.len()
            )));
        }
        for (k, v) in &labels {
            validate_label(k, v)?;
        }
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::invalid(format!("label {} appears twice", Shown(&w[0].0))));
        }
        Ok(SeriesKey { name: name.to_owned(), labels })
    }

    /// The canonical text form, `name` or `name{a="x",b="y"}`: the catalog key on disk.
    pub fn canonical(&self) -> String {
        let mut s = String::with_capacity(self.name.len() + 16 * self.labels.len());
        s.push_str(&self.name);
        if !self.labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{k}=\"");
                escape_into(&mut s, v);
                s.push('"');
            }
            s.push('}');
        }
        s
    }

    /// Parses a canonical key (or any `name{label="value",...}` with only `=` matchers; the name
    /// may be given as `__name__="…"`).
    pub fn parse(text: &str) -> Result<SeriesKey> {
        use crate::query::{NAME_LABEL, Op};
        let sel = crate::query::Selector::parse(text)?;
        let not_a_key = || Error::invalid(format!("{} is a selector, not a series key", Shown(text)));
        let mut labels = Vec::with_capacity(sel.matchers.len());
        for m in sel.matchers {
            match m.op {
                Op::Equal(v) if m.label != NAME_LABEL => labels.push((m.label, v)),
                _ => return Err(not_a_key()),
            }
        }
        SeriesKey::new(sel.name.as_deref().ok_or_else(not_a_key)?, labels)
    }
}

/// Escapes `\` and `"` so a label value can sit between double quotes.
pub fn escape_into(out: &mut String, v: &str) {
    if !v.bytes().any(|b| b == b'\\' || b == b'"') {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

/// Metric names: `[A-Za-z_:][A-Za-z0-9_:.-]*`, so Influx measurements such as `disk.io` pass.
pub fn validate_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && is_name_start(b[0])
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid metric name {}: must match [A-Za-z_:][A-Za-z0-9_:.-]* and be at most {MAX_NAME_LEN} bytes",
            Shown(name)
        )))
    }
}

/// Label names: `[A-Za-z_][A-Za-z0-9_.-]*`, not starting with `__` (reserved, e.g. `__name__`).
/// Values: 1 to 1024 bytes of UTF-8 without control characters.
pub fn validate_label(name: &str, value: &str) -> Result<()> {
    let b = name.as_bytes();
    let name_ok = !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && !name.starts_with("__")
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !name_ok {
        return Err(Error::invalid(format!(
            "invalid label name {}: must match [A-Za-z_][A-Za-z0-9_.-]* and not start with __",
            Shown(name)
        )));
    }
    if value.is_empty() || value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "invalid value for label {}: must be 1 to {MAX_LABEL_VALUE_LEN} bytes without control characters",
            Shown(name)
        )));
    }
    Ok(())
}

/// The accepted timestamp window, fixed for the duration of one request.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    /// Oldest accepted timestamp (now − retention), unix ms.
    pub min_ms: i64,
    /// Newest accepted timestamp (now + 1 day), unix ms.
    pub max_ms: i64,
}

/// How far in the future a point may lie: clocks drift, but a day ahead is a unit mistake.
pub const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;

impl TimeBounds {
    pub fn new(now_ms: i64, retention_ms: i64) -> TimeBounds {
        TimeBounds { min_ms: now_ms - retention_ms, max_ms: now_ms + MAX_FUTURE_MS }
    }

    /// Checks one point: the timestamp inside the window and the value finite.
    pub fn check(&self, ts: i64, value: f64) -> Result<()> {
        if !value.is_finite() {
            return Err(Error::invalid(format!("value {value} is not a finite number")));
        }
        if ts < self.min_ms {
            return Err(Error::invalid(format!(
                "timestamp {ts} ms is older than the retention period (oldest accepted: {})",
                self.min_ms
            )));
        }
        if ts > self.max_ms {
            return Err(Error::invalid(format!(
                "timestamp {ts} ms is more than 1 day in the future (newest accepted: {})",
                self.max_ms
            )));
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Start of the UTC hour that holds `ts`.
pub fn hour_start(ts: i64) -> i64 {
    ts - ts.rem_euclid(HOUR_MS)
}

pub const HOUR_MS: i64 = 3_600_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_labels_and_escapes() {
        let k = SeriesKey::new("cpu_usage", vec![("z".into(), "a\"b".into()), ("a".into(), "x\\y".into())])
            .unwrap();
        assert_eq!(k.canonical(), r#"cpu_usage{a="x\\y",z="a\"b"}"#);
        assert_eq!(SeriesKey::parse(&k.canonical()).unwrap(), k);
    }

    #[test]
    fn rejects_bad_names_and_labels() {
        assert!(validate_name("9abc").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("disk.io-ops:rate").is_ok());
        assert!(validate_label("__name__", "x").is_err());
        assert!(validate_label("host", "").is_err());
        assert!(validate_label("host", "a\nb").is_err());
        assert!(SeriesKey::new("m", vec![("a".into(), "1".into()), ("a".into(), "2".into())]).is_err());
        let many = (0..31).map(|i| (format!("l{i}"), "v".to_string())).collect();
        assert!(SeriesKey::new("m", many).is_err());
    }

    #[test]
    fn time_bounds() {
        let b = TimeBounds::new(1_000_000_000, 1000);
        assert!(b.check(1_000_000_000, 1.0).is_ok());
        assert!(b.check(999_998_999, 1.0).is_err());
        assert!(b.check(1_000_000_000 + MAX_FUTURE_MS + 1, 1.0).is_err());
        assert!(b.check(1_000_000_000, f64::NAN).is_err());
        assert!(b.check(1_000_000_000, f64::INFINITY).is_err());
        assert_eq!(hour_start(-1), -HOUR_MS);
        assert_eq!(hour_start(HOUR_MS + 5), HOUR_MS);
    }
}
