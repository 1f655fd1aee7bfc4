//! Ingest: request bodies → validated, grouped [`WriteBatch`]es. Parsing only; no I/O.
//!
//! A request is atomic: the first bad line or value fails the whole body, so nothing of a
//! rejected request reaches the writer.

pub mod json;
pub mod line_protocol;

use crate::error::{Error, Result};
use crate::model::{Point, SeriesKey, TimeBounds, escape_into};
use crate::writer::{SeriesPoints, WriteBatch};
use std::collections::HashMap;
use std::sync::Arc;

/// Groups points by series while a body is parsed; validates each point and each new series.
pub struct BatchBuilder {
    bounds: TimeBounds,
    index: HashMap<String, usize>,
    batch: WriteBatch,
    /// Reused buffer for the canonical key of the series being added.
    key_buf: String,
}

impl BatchBuilder {
    pub fn new(bounds: TimeBounds) -> BatchBuilder {
        BatchBuilder {
            bounds,
            index: HashMap::new(),
            batch: WriteBatch::default(),
            key_buf: String::new(),
        }
    }

    /// Adds one point of the series `name` + `labels` (`labels` sorted by name).
    pub fn push(&mut self, name: &str, labels: &[(&str, &str)], point: Point) -> Result<()> {
        self.bounds.check(point.0, point.1)?;
        self.key_buf.clear();
        self.key_buf.push_str(name);
        if !labels.is_empty() {
            self.key_buf.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.key_buf.push(',');
                }
                self.key_buf.push_str(k);
                self.key_buf.push_str("=\"");
                escape_into(&mut self.key_buf, v);
                self.key_buf.push('"');
            }
            self.key_buf.push('}');
        }
        if let Some(&i) = self.index.get(self.key_buf.as_str()) {
            self.batch.series[i].points.push(point);
            return Ok(());
        }
        let owned = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let key = SeriesKey::new(name, owned)?;
        debug_assert_eq!(key.canonical(), self.key_buf);
        self.index
            .insert(self.key_buf.clone(), self.batch.series.len());
        self.batch.series.push(SeriesPoints {
            key: Arc::new(key),
            canonical: self.key_buf.clone(),
            points: vec![point],
        });
        Ok(())
    }

    pub fn point_count(&self) -> usize {
        self.batch.point_count()
    }

    pub fn finish(self) -> WriteBatch {
        self.batch
    }
}

/// Prefixes an error with where in the body it was found.
pub(crate) fn at(place: impl std::fmt::Display, e: Error) -> Error {
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("{place}: {m}")),
        other => other,
    }
}

/// Sorts labels by name (a stable order for the canonical key).
pub(crate) fn sort_labels(labels: &mut [(&str, &str)]) {
    labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
}
