//! JSON ingest: VictoriaMetrics' JSON-lines import format and perfd's own point array.

use super::{BatchBuilder, at};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One line of `/api/v1/import` (and of `/api/v1/export`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    metric: BTreeMap<String, String>,
    values: Vec<f64>,
    timestamps: Vec<i64>,
}

/// Parses VictoriaMetrics JSON lines: `{"metric":{"__name__":"m","l":"v"},"values":[..],"timestamps":[..]}`.
pub fn parse_import(body: &[u8], out: &mut BatchBuilder) -> Result<usize> {
    let mut lines = 0;
    for (i, line) in body.split(|&c| c == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        import_line(line, out).map_err(|e| at(format_args!("line {}", i + 1), e))?;
    }
    Ok(lines)
}

fn import_line(line: &[u8], out: &mut BatchBuilder) -> Result<()> {
    let l: ImportLine =
        serde_json::from_slice(line).map_err(|e| Error::invalid(format!("invalid JSON: {e}")))?;
    if l.values.len() != l.timestamps.len() {
        return Err(Error::invalid(format!(
            "{} values but {} timestamps",
            l.values.len(),
            l.timestamps.len()
        )));
    }
    let name = l.metric.get("__name__").ok_or_else(|| Error::invalid("metric has no __name__"))?;
    let labels = present_labels(&l.metric);
    for (&ts, &v) in l.timestamps.iter().zip(&l.values) {
        out.push(name, &labels, (ts, v))?;
    }
    Ok(())
}

/// The labels in `map` but `__name__`, sorted by name (a `BTreeMap` iterates in that order);
/// one with an empty value is no label, as in Prometheus and VictoriaMetrics (and as selectors
/// read it: `{env=""}` matches a series without `env`).
fn present_labels(map: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    map.iter()
        .filter(|(k, v)| k.as_str() != "__name__" && !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// One element of the `/api/v1/ingest` array.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestPoint {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Unix ms or RFC 3339; absent means now.
    #[serde(default)]
    timestamp: Option<Timestamp>,
    value: f64,
}

/// Unix milliseconds (an integer, or a number with a fraction as `time.time() * 1000` gives,
/// rounded down) or an RFC 3339 string.
#[derive(Debug)]
enum Timestamp {
    Ms(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Timestamp, D::Error> {
        d.deserialize_any(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl serde::de::Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a timestamp: milliseconds since the epoch or an RFC 3339 string")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Timestamp, E> {
        Ok(Timestamp::Ms(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Timestamp, E> {
        i64::try_from(v)
            .map(Timestamp::Ms)
            .map_err(|_| E::custom(format_args!("timestamp {v} ms is out of range")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Timestamp, E> {
        // 2^63 is the first float past i64; `as` would saturate silently.
        if v.is_finite() && v.abs() < 9.223_372_036_854_775e18 {
            Ok(Timestamp::Ms(v.floor() as i64))
        } else {
            Err(E::custom(format_args!("timestamp {v} ms is out of range")))
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Timestamp, E> {
        Ok(Timestamp::Text(v.to_owned()))
    }
}

/// Parses `[{"name": "...", "labels": {...}, "timestamp": ms|RFC 3339, "value": 1.5}, ...]`.
pub fn parse_ingest(body: &[u8], now_ms: i64, out: &mut BatchBuilder) -> Result<usize> {
    let points: Vec<IngestPoint> =
        serde_json::from_slice(body).map_err(|e| Error::invalid(format!("invalid JSON: {e}")))?;
    for (i, p) in points.iter().enumerate() {
        let ts = match &p.timestamp {
            None => now_ms,
            Some(Timestamp::Ms(ms)) => *ms,
            Some(Timestamp::Text(t)) => {
                crate::query::parse_time_at(t, now_ms).map_err(|e| at(format_args!("[{i}]"), e))?
            }
        };
        let labels = present_labels(&p.labels);
        out.push(&p.name, &labels, (ts, p.value)).map_err(|e| at(format_args!("[{i}]"), e))?;
    }
    Ok(points.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TimeBounds;

    const NOW: i64 = 1_700_000_000_000;

    fn builder() -> BatchBuilder {
        BatchBuilder::new(TimeBounds::new(NOW, 86_400_000))
    }

    #[test]
    fn import_lines() {
        let mut b = builder();
        let body = br#"{"metric":{"__name__":"up","job":"a"},"values":[1,0.5],"timestamps":[1700000000000,1700000001000]}

{"metric":{"__name__":"up","job":"b"},"values":[2],"timestamps":[1700000000000]}"#;
        assert_eq!(parse_import(body, &mut b).unwrap(), 2);
        let batch = b.finish();
        assert_eq!(&*batch.series[0].canonical, r#"up{job="a"}"#);
        assert_eq!(batch.series[0].points, vec![(NOW, 1.0), (NOW + 1000, 0.5)]);
    }

    #[test]
    fn import_errors_name_the_line() {
        for (body, needle) in [
            (&br#"{"metric":{"__name__":"up"},"values":[1],"timestamps":[]}"#[..], "1 values"),
            (br#"{"metric":{"job":"x"},"values":[1],"timestamps":[1700000000000]}"#, "__name__"),
            (
                b"{\"metric\":{\"__name__\":\"up\"},\"values\":[1],\"timestamps\":[1700000000000]}\nnot json",
                "line 2",
            ),
        ] {
            let e = parse_import(body, &mut builder()).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn ingest_array() {
        let mut b = builder();
        let body = br#"[{"name":"lat","labels":{"route":"/x"},"timestamp":1700000000000,"value":3.5},
                        {"name":"lat","labels":{"route":"/x"},"timestamp":"2023-11-14T22:13:21Z","value":4}]"#;
        assert_eq!(parse_ingest(body, NOW, &mut b).unwrap(), 2);
        assert_eq!(b.finish().series[0].points, vec![(NOW, 3.5), (NOW + 1000, 4.0)]);
        let e =
            parse_ingest(br#"[{"name":"ok","value":1},{"name":"bad name","value":1}]"#, NOW, &mut builder())
                .unwrap_err();
        assert!(e.to_string().starts_with("[1]"), "{e}");
        assert!(parse_ingest(br#"[{"name":"x","value":1e999}]"#, NOW, &mut builder()).is_err());
    }

    #[test]
    fn an_empty_label_value_is_no_label() {
        let mut b = builder();
        let body =
            br#"{"metric":{"__name__":"up","job":"","env":"x"},"values":[1],"timestamps":[1700000000000]}"#;
        parse_import(body, &mut b).unwrap();
        let body = br#"[{"name":"up","labels":{"env":"x","job":""},"timestamp":1700000001000,"value":2}]"#;
        parse_ingest(body, NOW, &mut b).unwrap();
        let batch = b.finish();
        assert_eq!(batch.series.len(), 1);
        assert_eq!(&*batch.series[0].canonical, r#"up{env="x"}"#);
        assert_eq!(batch.series[0].points, vec![(NOW, 1.0), (NOW + 1000, 2.0)]);
    }

    #[test]
    fn ingest_timestamps_take_fractional_ms_and_say_what_they_want() {
        let mut b = builder();
        let body = br#"[{"name":"t","timestamp":1700000000000.9,"value":1},{"name":"t","timestamp":1700000001000,"value":2}]"#;
        assert_eq!(parse_ingest(body, NOW, &mut b).unwrap(), 2);
        assert_eq!(b.finish().series[0].points, vec![(NOW, 1.0), (NOW + 1000, 2.0)], "rounded down");
        for (ts, needle) in [
            ("1e30", "timestamp 1000000000000000000000000000000 ms is out of range"),
            ("18446744073709551615", "out of range"),
            ("true", "a timestamp: milliseconds since the epoch or an RFC 3339 string"),
            ("[1]", "a timestamp: milliseconds"),
        ] {
            let body = format!(r#"[{{"name":"t","timestamp":{ts},"value":1}}]"#);
            let e = parse_ingest(body.as_bytes(), NOW, &mut builder()).unwrap_err().to_string();
            assert!(e.contains(needle), "{ts}: {e}");
        }
    }
}
