//! Aggregated reads: buckets of a step (`read_aggregated`) and one summary per series over a
//! window (`read_windows`), from chunk headers for whole sealed hours.

use super::{Agg, Selector, SeriesResult, hour_points, select};
use crate::error::{Error, Result};
use crate::model::{HOUR_MS, Point, SeriesKey};
use crate::store::{HourData, Store, codec};
use std::sync::Arc;

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
    /// How much the value grew from the first point to the last, a drop counted as a counter
    /// reset (the value after it is all growth), as Prometheus' `rate` counts. `None` for a
    /// summary taken from the header of a chunk where a value fell (see [`fold`]'s `increase`).
    pub increase: Option<f64>,
}

impl Summary {
    fn point(p: Point) -> Summary {
        Summary { count: 1, sum: p.1, min: p.1, max: p.1, first: p, last: p, increase: Some(0.0) }
    }

    /// The summary of `points`; `None` when there are none.
    pub fn of(points: &[Point]) -> Option<Summary> {
        let mut it = points.iter();
        let mut s = Summary::point(*it.next()?);
        it.for_each(|p| s.merge(&Summary::point(*p)));
        Some(s)
    }

    fn merge(&mut self, o: &Summary) {
        // The two are disjoint in time (one series, one point per timestamp); either may be first.
        let (a, b) = if o.first.0 < self.first.0 { (o, &*self) } else { (&*self, o) };
        let grew = if b.first.1 >= a.last.1 { b.first.1 - a.last.1 } else { b.first.1 };
        self.increase = a.increase.zip(b.increase).map(|(x, y)| x + y + grew);
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

    /// The aggregate `agg` asks for; `None` for a rate or slope of fewer than two timestamps.
    pub fn value(&self, agg: Agg) -> Option<f64> {
        let seconds = (self.last.0 - self.first.0) as f64 / 1000.0;
        Some(match agg {
            Agg::Avg => self.sum / self.count as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Sum => self.sum,
            Agg::Count => self.count as f64,
            Agg::First => self.first.1,
            Agg::Last => self.last.1,
            // A counter's increase per second over the span it was seen, across resets.
            Agg::Rate if self.last.0 > self.first.0 => {
                debug_assert!(self.increase.is_some(), "a rate of a summary folded without increase");
                self.increase? / seconds
            }
            // A gauge's slope: from the first point to the last, per second.
            Agg::Deriv if self.last.0 > self.first.0 => (self.last.1 - self.first.1) / seconds,
            Agg::Rate | Agg::Deriv => return None,
        })
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
    let buckets = fold(hours, start, end, Some(step), agg == Agg::Rate)?;
    if buckets.is_empty() {
        return Ok(None);
    }
    let points: Vec<Point> = buckets.iter().filter_map(|(b, s)| Some((*b, s.value(agg)?))).collect();
    if points.is_empty() {
        return Ok(None);
    }
    Ok(Some(SeriesResult::new(key, points)))
}

/// Folds one series' hours into buckets of `step` ms aligned to the epoch, or into one bucket
/// (at `start`) for the whole of `[start, end]` when `step` is `None`. Whole sealed hours inside
/// the range are answered from chunk headers when every bucket holds whole hours; with
/// `increase` (for a rate), only those of chunks where no value fell (a header does not know
/// where a counter was reset).
fn fold(
    hours: Vec<(i64, HourData)>,
    start: i64,
    end: i64,
    step: Option<i64>,
    increase: bool,
) -> Result<Vec<(i64, Summary)>> {
    let bucket_of = |ts: i64| step.map_or(start, |step| ts - ts.rem_euclid(step));
    let hour_buckets = step.is_none_or(|step| step % HOUR_MS == 0);
    let mut buckets: Vec<(i64, Summary)> = Vec::new();
    let mut add = |bucket: i64, s: Summary| match buckets.last_mut() {
        Some((b, a)) if *b == bucket => a.merge(&s),
        _ => buckets.push((bucket, s)),
    };
    for (hour, data) in hours {
        let whole = hour_buckets && hour >= start && hour + HOUR_MS - 1 <= end;
        if let (true, HourData::Sealed(bytes)) = (whole, &data) {
            let h = codec::header(bytes)?;
            // The increase is in the header only for a chunk where no value fell; else decode.
            if !increase || h.never_falls {
                let s = Summary {
                    count: h.count as u64,
                    sum: h.sum,
                    min: h.min,
                    max: h.max,
                    first: (h.first_ts, h.first),
                    last: (h.last_ts, h.last),
                    increase: h.never_falls.then_some(h.last - h.first),
                };
                add(bucket_of(hour), s);
                continue;
            }
        }
        for p in hour_points(data, start, end)? {
            add(bucket_of(p.0), Summary::point(p));
        }
    }
    Ok(buckets)
}

/// The summary of each matching series over `[start, end]` (series with no point there are
/// left out), in key order: what an alert threshold aggregates. Whole sealed hours are read from
/// chunk headers, so a long window costs about what its partial first and last hours hold;
/// with `increase` (for a rate) so are the hours of a counter without a reset, and others decoded.
pub fn read_windows(
    store: &Store,
    sel: &Selector,
    (start, end): (i64, i64),
    increase: bool,
) -> Result<Vec<(Arc<SeriesKey>, Summary)>> {
    let series = select(store, sel);
    let mut out = Vec::with_capacity(series.len());
    for chunk in series.chunks(AGGREGATE_CHUNK) {
        let ids: Vec<u64> = chunk.iter().map(|s| s.0).collect();
        for ((_, key), hours) in chunk.iter().zip(store.read_hours(&ids, start, end)?) {
            if let Some((_, s)) = fold(hours, start, end, None, increase)?.pop() {
                out.push((key.clone(), s));
            }
        }
    }
    Ok(out)
}
