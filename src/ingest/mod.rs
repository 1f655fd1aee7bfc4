//! Ingest: request bodies → validated, grouped [`WriteBatch`]es. Parsing only; no I/O.
//!
//! A request is atomic: the first bad line or value fails the whole body, so nothing of a
//! rejected request reaches the writer.

pub mod json;
pub mod line_protocol;

use crate::error::{Error, Result};
use crate::model::{Point, SeriesKey, TimeBounds, escape_into};
use crate::writer::{SeriesPoints, WriteBatch};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Validated keys seen on this worker thread, so a series that reports every few seconds is
/// validated once, not once per request. Cleared whole when it passes this size (bounded memory).
const KEY_CACHE_MAX: usize = 200_000;

thread_local! {
    static KEY_CACHE: RefCell<HashMap<Box<str>, Arc<SeriesKey>, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// Groups points by series while a body is parsed; validates each point and each new series.
pub struct BatchBuilder {
    bounds: TimeBounds,
    /// Canonical key → position in `batch.series`. foldhash: fast, and seeded per process so a
    /// body cannot be crafted to collide.
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    batch: WriteBatch,
    /// Reused buffer for the canonical key of the series being added.
    key_buf: String,
}

impl BatchBuilder {
    pub fn new(bounds: TimeBounds) -> BatchBuilder {
        BatchBuilder {
            bounds,
            index: HashMap::default(),
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
        let key = KEY_CACHE.with_borrow_mut(|cache| -> Result<Arc<SeriesKey>> {
            if let Some(k) = cache.get(self.key_buf.as_str()) {
                return Ok(k.clone());
            }
            let owned = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let key = Arc::new(SeriesKey::new(name, owned)?);
            debug_assert_eq!(key.canonical(), self.key_buf);
            if cache.len() >= KEY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(self.key_buf.as_str().into(), key.clone());
            Ok(key)
        })?;
        let canonical: Arc<str> = self.key_buf.as_str().into();
        self.index.insert(canonical.clone(), self.batch.series.len());
        self.batch.series.push(SeriesPoints { key, canonical, points: vec![point] });
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
