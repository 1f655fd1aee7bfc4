//! The export: every matching series' points as VictoriaMetrics' JSON lines, streamed.

use super::{Selector, hour_points, select};
use crate::error::{Error, Result};
use crate::model::Point;
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;

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
                points.extend(hour_points(data, start, end)?);
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
