//! The export: every matching series' points as VictoriaMetrics' JSON lines, streamed.

use super::{Selector, hour_points, select};
use crate::error::{Error, Result};
use crate::model::{Point, SeriesKey};
use crate::store::{HourData, Store};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Points per export line at most: a series with more gets several lines (an import merges
/// them).
const EXPORT_LINE_POINTS: usize = 10_000;
/// Series whose hours are read at once by an [`Exporter`]. One: a series' unsealed hours are
/// copied out as points (16 bytes each, where a sealed hour holds about 1 byte a point).
const EXPORT_CHUNK: usize = 1;
/// Bytes gathered before they are handed on.
const EXPORT_FLUSH: usize = 256 * 1024;

/// One line of an export: VictoriaMetrics' JSON line format.
#[derive(Serialize)]
struct ExportLine<'a> {
    metric: &'a BTreeMap<&'a str, &'a str>,
    values: Vec<f64>,
    timestamps: Vec<i64>,
}

/// Writes `points` (emptied) as one line of `key`.
fn export_line(out: &mut Vec<u8>, key: &SeriesKey, points: &mut Vec<Point>) -> Result<()> {
    let mut metric: BTreeMap<&str, &str> = key.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    metric.insert("__name__", &key.name);
    let (timestamps, values) = points.drain(..).unzip();
    serde_json::to_writer(&mut *out, &ExportLine { metric: &metric, values, timestamps })
        .map_err(|e| Error::Internal(e.to_string()))?;
    out.push(b'\n');
    Ok(())
}

/// A series' stored hours, in order, as `Store::read_hours` gives them.
type Hours = std::vec::IntoIter<(i64, HourData)>;

/// Every matching series' points in `[start, end]` as export lines (`/api/v1/export`,
/// importable by `/api/v1/import` and by VictoriaMetrics), in key order, made a part at a time
/// ([`Exporter::next_part`]). Between parts it holds one series' stored hours and less than one
/// line's points, whatever the range, and no read transaction: there is no point limit (the
/// answer built in memory had `query.max_points`), and a reader that stops reading costs no
/// thread, as nobody asks for the next part.
pub struct Exporter {
    store: Arc<Store>,
    start: i64,
    end: i64,
    /// Series not read yet, in key order.
    series: std::vec::IntoIter<(u64, Arc<SeriesKey>)>,
    /// Series read with their stored hours, not yet written; the first one partly.
    read: VecDeque<(Arc<SeriesKey>, Hours)>,
    /// Points of the first of `read` not written yet.
    points: Vec<Point>,
}

impl Exporter {
    pub fn new(store: Arc<Store>, sel: &Selector, start: i64, end: i64) -> Exporter {
        let series = select(&store, sel).into_iter();
        Exporter { store, start, end, series, read: VecDeque::new(), points: Vec::new() }
    }

    /// The next part: whole lines, about 256 KB; `None` once everything is written.
    pub fn next_part(&mut self) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        while buf.len() < EXPORT_FLUSH {
            if self.read.is_empty() {
                let chunk: Vec<_> = self.series.by_ref().take(EXPORT_CHUNK).collect();
                if chunk.is_empty() {
                    break;
                }
                let ids: Vec<u64> = chunk.iter().map(|s| s.0).collect();
                let hours = self.store.read_hours(&ids, self.start, self.end)?;
                self.read =
                    chunk.into_iter().map(|s| s.1).zip(hours.into_iter().map(Vec::into_iter)).collect();
            }
            let Some((key, hours)) = self.read.front_mut() else { break };
            match hours.next() {
                Some((_, data)) => {
                    self.points.extend(hour_points(data, self.start, self.end)?);
                    while self.points.len() >= EXPORT_LINE_POINTS {
                        let rest = self.points.split_off(EXPORT_LINE_POINTS);
                        export_line(&mut buf, key, &mut std::mem::replace(&mut self.points, rest))?;
                    }
                }
                None => {
                    if !self.points.is_empty() {
                        export_line(&mut buf, key, &mut self.points)?;
                    }
                    self.read.pop_front();
                }
            }
        }
        Ok((!buf.is_empty()).then_some(buf))
    }
}
