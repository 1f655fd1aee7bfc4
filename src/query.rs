//! Selectors, time parsing, range reads and aggregation. Read-only: never touches the writer.

use crate::error::{Error, Result, Shown};
use crate::model::{HOUR_MS, Point, SeriesKey};
use crate::store::{HourData, Store, codec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `name` or `name{label="value",label!="value",...}`; labels not named match anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub label: String,
    pub value: String,
    pub negated: bool,
}

impl Selector {
    /// A selector has at most [`MAX_MATCHERS`] matchers: a series has at most 30 labels, and
    /// a threshold's selector is matched against every series each sampler tick (one with
    /// 5,000 matchers was accepted).
    pub fn parse(text: &str) -> Result<Selector> {
        let bad = |why: &str| Error::invalid(format!("invalid selector {}: {why}", Shown(text)));
        let text_t = text.trim();
        let (name, rest) = match text_t.find('{') {
            Some(i) => (text_t[..i].trim(), Some(&text_t[i + 1..])),
            None => (text_t, None),
        };
        crate::model::validate_name(name).map_err(|e| bad(&e.to_string()))?;
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let body = rest.strip_suffix('}').ok_or_else(|| bad("missing closing }"))?;
            let mut chars = body.chars().peekable();
            loop {
                while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
                if chars.peek().is_none() {
                    break;
                }
                let label: String =
                    std::iter::from_fn(|| chars.next_if(|c| c.is_alphanumeric() || "_.-".contains(*c)))
                        .collect();
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                let negated = match (chars.next(), chars.peek()) {
                    (Some('='), _) => false,
                    (Some('!'), Some('=')) => {
                        chars.next();
                        true
                    }
                    _ => return Err(bad("expected label=\"value\" or label!=\"value\"")),
                };
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                let value = quoted(&mut chars).map_err(bad)?;
                crate::model::validate_label(&label, if value.is_empty() { "x" } else { &value })
                    .map_err(|e| bad(&e.to_string()))?;
                if matchers.len() == MAX_MATCHERS {
                    return Err(bad(&format!("more than {MAX_MATCHERS} matchers")));
                }
                matchers.push(Matcher { label, value, negated });
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                match chars.next() {
                    None => break,
                    Some(',') => {}
                    Some(_) => return Err(bad("expected , between matchers")),
                }
            }
        }
        Ok(Selector { name: name.to_owned(), matchers })
    }

    pub fn matches(&self, key: &SeriesKey) -> bool {
        key.name == self.name
            && self.matchers.iter().all(|m| {
                let v = key.labels.iter().find(|(k, _)| *k == m.label).map_or("", |(_, v)| v.as_str());
                (v == m.value) != m.negated
            })
    }
}

/// Every series the selector matches, in key order.
pub fn select(store: &Store, sel: &Selector) -> Vec<(u64, Arc<SeriesKey>)> {
    let catalog = store.catalog.read();
    catalog.with_name(&sel.name).filter(|(_, k)| sel.matches(k)).map(|(id, k)| (id, k.clone())).collect()
}

/// A double-quoted label value (`\"`, `\\` and `\n` escapes), the opening quote included.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> std::result::Result<String, &'static str> {
    if chars.next() != Some('"') {
        return Err("label values must be in double quotes");
    }
    let mut value = String::new();
    loop {
        match chars.next() {
            None => return Err("unterminated string"),
            Some('"') => return Ok(value),
            Some('\\') => match chars.next() {
                Some('n') => value.push('\n'),
                Some(c) => value.push(c),
                None => return Err("unterminated string"),
            },
            Some(c) => value.push(c),
        }
    }
}

/// The span queries take times from: ±8.64e15 ms (±100,000,000 days around the epoch, as
/// JavaScript's `Date`). Query bounds outside it are clamped to it, so `start=-9223372036854775808`
/// reads from the beginning: unclamped, the hour and bucket arithmetic on it overflowed (an
/// empty answer, or a panic in the read).
pub const MIN_TIME_MS: i64 = -8_640_000_000_000_000;
pub const MAX_TIME_MS: i64 = 8_640_000_000_000_000;

/// A query bound clamped to [`MIN_TIME_MS`, `MAX_TIME_MS`].
pub fn clamp_time(ms: i64) -> i64 {
    ms.clamp(MIN_TIME_MS, MAX_TIME_MS)
}

/// Most matchers in one selector: twice the labels a series may have, room for `!=` ones.
pub const MAX_MATCHERS: usize = 2 * crate::model::MAX_LABELS;

/// Unix milliseconds, or RFC 3339 (`2026-11-27T08:00:00Z`).
pub fn parse_time(s: &str) -> Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            Error::invalid(format!("invalid time {}: use unix milliseconds or RFC 3339", Shown(s)))
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
}

#[derive(Debug, Serialize)]
pub struct SeriesResult {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<Point>,
}

impl SeriesResult {
    fn new(key: &SeriesKey, points: Vec<Point>) -> SeriesResult {
        SeriesResult { name: key.name.clone(), labels: key.labels.iter().cloned().collect(), points }
    }
}

/// Raw points of every matching series in `[start, end]`, at most `max_points` in all.
pub fn read_raw(
    store: &Store,
    sel: &Selector,
    start: i64,
    end: i64,
    max_points: usize,
) -> Result<Vec<SeriesResult>> {
    let series = select(store, sel);
    let ids: Vec<u64> = series.iter().map(|s| s.0).collect();
    let mut total = 0usize;
    let mut out = Vec::with_capacity(series.len());
    for ((_, key), hours) in series.iter().zip(store.read_hours(&ids, start, end)?) {
        let mut points = Vec::new();
        for (_, data) in hours {
            let pts = match data {
                HourData::Sealed(bytes) => codec::decode(&bytes)?,
                HourData::Points(p) => p,
            };
            points.extend(pts.into_iter().filter(|p| p.0 >= start && p.0 <= end));
        }
        total += points.len();
        if total > max_points {
            return Err(Error::TooManyPoints(format!(
                "more than {max_points} raw points match; narrow the time range or the selector, or pass step= to aggregate"
            )));
        }
        if !points.is_empty() {
            out.push(SeriesResult::new(key, points));
        }
    }
    Ok(out)
}

/// Points per export line at most: a series with more gets several lines (an import merges
/// them), so a line never holds more than this in memory.
const EXPORT_LINE_POINTS: usize = 100_000;
/// Series whose hours are read at once by [`export`].
const EXPORT_CHUNK: usize = 8;
/// Bytes gathered before they are handed on.
const EXPORT_FLUSH: usize = 256 * 1024;

/// One line of an export: VictoriaMetrics' JSON line format.
#[derive(Serialize)]
struct ExportLine<'a> {
    metric: &'a BTreeMap<&'a str, &'a str>,
    values: Vec<f64>,
    timestamps: Vec<i64>,
}

fn export_line(out: &mut Vec<u8>, metric: &BTreeMap<&str, &str>, points: &mut Vec<Point>) -> Result<()> {
    let (timestamps, values) = points.drain(..).unzip();
    serde_json::to_writer(&mut *out, &ExportLine { metric, values, timestamps })
        .map_err(|e| Error::Internal(e.to_string()))?;
    out.push(b'\n');
    Ok(())
}

/// Every matching series' points in `[start, end]` as export lines (`/api/v1/export`,
/// importable by `/api/v1/import` and by VictoriaMetrics), in key order, handed to `emit`
/// about every 256 KB; stops as soon as `emit` returns false (the reader left). What is held at
/// once is a few series' stored hours and one line, whatever the range: there is no point
/// limit, where the answer built in memory had `query.max_points`.
pub fn export(
    store: &Store,
    sel: &Selector,
    start: i64,
    end: i64,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut flush = |buf: &mut Vec<u8>, at_least: usize| buf.len() < at_least || emit(std::mem::take(buf));
    for chunk in select(store, sel).chunks(EXPORT_CHUNK) {
        let ids: Vec<u64> = chunk.iter().map(|s| s.0).collect();
        for ((_, key), hours) in chunk.iter().zip(store.read_hours(&ids, start, end)?) {
            let mut metric: BTreeMap<&str, &str> =
                key.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            metric.insert("__name__", &key.name);
            let mut points = Vec::new();
            for (_, data) in hours {
                let pts = match data {
                    HourData::Sealed(bytes) => codec::decode(&bytes)?,
                    HourData::Points(p) => p,
                };
                points.extend(pts.into_iter().filter(|p| p.0 >= start && p.0 <= end));
                if points.len() >= EXPORT_LINE_POINTS {
                    export_line(&mut buf, &metric, &mut points)?;
                    if !flush(&mut buf, EXPORT_FLUSH) {
                        return Ok(());
                    }
                }
            }
            if !points.is_empty() {
                export_line(&mut buf, &metric, &mut points)?;
            }
            if !flush(&mut buf, EXPORT_FLUSH) {
                return Ok(());
            }
        }
    }
    flush(&mut buf, 1);
    Ok(())
}

/// One bucket's (or one window's) running aggregate of a series' points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The earliest and latest points (timestamp, value).
    pub first: Point,
    pub last: Point,
}

impl Summary {
    fn point(p: Point) -> Summary {
        Summary { count: 1, sum: p.1, min: p.1, max: p.1, first: p, last: p }
    }

    /// The summary of `points`; `None` when there are none.
    pub fn of(points: &[Point]) -> Option<Summary> {
        let mut it = points.iter();
        let mut s = Summary::point(*it.next()?);
        it.for_each(|p| s.merge(&Summary::point(*p)));
        Some(s)
    }

    fn merge(&mut self, o: &Summary) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.first.0 < self.first.0 {
            self.first = o.first;
        }
        if o.last.0 >= self.last.0 {
            self.last = o.last;
        }
    }

    fn value(&self, agg: Agg) -> f64 {
        match agg {
            Agg::Avg => self.sum / self.count as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Sum => self.sum,
            Agg::Count => self.count as f64,
            Agg::First => self.first.1,
            Agg::Last => self.last.1,
        }
    }
}

/// Aggregates every matching series into buckets of `step` ms aligned to the Unix epoch; each
/// output point carries its bucket's start. Whole sealed hours inside the range are answered from
/// chunk headers without decoding when `step` is a multiple of an hour.
pub fn read_aggregated(
    store: &Store,
    sel: &Selector,
    start: i64,
    end: i64,
    step: i64,
    agg: Agg,
    max_points: usize,
) -> Result<Vec<SeriesResult>> {
    let series = select(store, sel);
    let buckets_per_series = ((end - start) / step + 2) as usize;
    if buckets_per_series.saturating_mul(series.len()) > max_points.saturating_mul(4) {
        return Err(Error::TooManyPoints(format!(
            "{} series × {buckets_per_series} buckets is too many; use a larger step or a narrower range",
            series.len()
        )));
    }
    // Read in chunks of series, in id order (a chunk's series share blocks), so what is held at
    // once is bounded by the chunk rather than by the whole selection; answer in key order.
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_unstable_by_key(|&i| series[i].0);
    let mut answers: Vec<Option<SeriesResult>> = (0..series.len()).map(|_| None).collect();
    for chunk in order.chunks(AGGREGATE_CHUNK) {
        let ids: Vec<u64> = chunk.iter().map(|&i| series[i].0).collect();
        for (&i, hours) in chunk.iter().zip(store.read_hours(&ids, start, end)?) {
            answers[i] = aggregate(&series[i].1, hours, start, end, step, agg)?;
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

/// Series read at once by [`read_aggregated`]: 16 blocks' worth.
const AGGREGATE_CHUNK: usize = 1024;

/// One series' hours folded into `step` buckets; `None` when nothing falls in `[start, end]`.
fn aggregate(
    key: &SeriesKey,
    hours: Vec<(i64, HourData)>,
    start: i64,
    end: i64,
    step: i64,
    agg: Agg,
) -> Result<Option<SeriesResult>> {
    let buckets = fold(hours, start, end, Some(step))?;
    if buckets.is_empty() {
        return Ok(None);
    }
    let points = buckets.iter().map(|(b, s)| (*b, s.value(agg))).collect();
    Ok(Some(SeriesResult::new(key, points)))
}

/// Folds one series' hours into buckets of `step` ms aligned to the epoch, or into one bucket
/// (at `start`) for the whole of `[start, end]` when `step` is `None`. Whole sealed hours inside
/// the range are answered from chunk headers when every bucket holds whole hours.
fn fold(hours: Vec<(i64, HourData)>, start: i64, end: i64, step: Option<i64>) -> Result<Vec<(i64, Summary)>> {
    let bucket_of = |ts: i64| step.map_or(start, |step| ts - ts.rem_euclid(step));
    let hour_buckets = step.is_none_or(|step| step % HOUR_MS == 0);
    let mut buckets: Vec<(i64, Summary)> = Vec::new();
    let mut add = |bucket: i64, s: Summary| match buckets.last_mut() {
        Some((b, a)) if *b == bucket => a.merge(&s),
        _ => buckets.push((bucket, s)),
    };
    for (hour, data) in hours {
        let whole = hour_buckets && hour >= start && hour + HOUR_MS - 1 <= end;
        let points = match data {
            HourData::Sealed(bytes) if whole => {
                let h = codec::header(&bytes)?;
                let s = Summary {
                    count: h.count as u64,
                    sum: h.sum,
                    min: h.min,
                    max: h.max,
                    first: (h.first_ts, h.first),
                    last: (h.last_ts, h.last),
                };
                add(bucket_of(hour), s);
                continue;
            }
            HourData::Sealed(bytes) => codec::decode(&bytes)?,
            HourData::Points(p) => p,
        };
        for p in points.into_iter().filter(|p| p.0 >= start && p.0 <= end) {
            add(bucket_of(p.0), Summary::point(p));
        }
    }
    Ok(buckets)
}

/// The summary of each matching series over `[start, end]` (series with no point there are
/// left out), in key order: what an alert threshold aggregates. Whole sealed hours are read from
/// chunk headers, so a long window costs about what its partial first and last hours hold.
pub fn read_windows(
    store: &Store,
    sel: &Selector,
    start: i64,
    end: i64,
) -> Result<Vec<(Arc<SeriesKey>, Summary)>> {
    let series = select(store, sel);
    let mut out = Vec::with_capacity(series.len());
    for chunk in series.chunks(AGGREGATE_CHUNK) {
        let ids: Vec<u64> = chunk.iter().map(|s| s.0).collect();
        for ((_, key), hours) in chunk.iter().zip(store.read_hours(&ids, start, end)?) {
            if let Some((_, s)) = fold(hours, start, end, None)?.pop() {
                out.push((key.clone(), s));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_parses() {
        let s = Selector::parse(r#"cpu{host="a\"b", env!="prod"}"#).unwrap();
        assert_eq!(s.name, "cpu");
        assert_eq!(s.matchers.len(), 2);
        assert_eq!(s.matchers[0].value, "a\"b");
        assert!(s.matchers[1].negated);
        assert_eq!(Selector::parse("cpu{}").unwrap().matchers.len(), 0);
        let many = |n: usize| {
            format!("cpu{{{}}}", (0..n).map(|i| format!("l{i}!=\"x\"")).collect::<Vec<_>>().join(","))
        };
        assert_eq!(Selector::parse(&many(MAX_MATCHERS)).unwrap().matchers.len(), 60);
        let e = Selector::parse(&many(MAX_MATCHERS + 1)).unwrap_err();
        assert!(e.to_string().contains("more than 60 matchers"), "{e}");
        for bad in
            ["", "cpu{", "cpu{host=a}", "cpu{host=\"a\"", "1cpu", "cpu{host~\"a\"}", "cpu{__name__=\"x\"}"]
        {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_matches_missing_label_as_empty() {
        let k = SeriesKey::new("cpu", vec![("host".into(), "a".into())]).unwrap();
        assert!(Selector::parse("cpu").unwrap().matches(&k));
        assert!(Selector::parse(r#"cpu{host="a"}"#).unwrap().matches(&k));
        assert!(!Selector::parse(r#"cpu{host="b"}"#).unwrap().matches(&k));
        assert!(Selector::parse(r#"cpu{env!="prod"}"#).unwrap().matches(&k));
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        assert!(parse_time("yesterday").is_err());
    }
}
