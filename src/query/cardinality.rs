//! Cardinality: the metric names, labels and label pairs that hold the most series, to find
//! what filled `storage.max_series` (and delete it). Served as `GET /api/v1/status/tsdb`, the
//! path and figures of Prometheus and VictoriaMetrics.

use super::{NAME_LABEL, Selector, select};
use crate::model::SeriesKey;
use crate::store::Store;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One entry of a top list: a name (or `label=value` pair) and its count.
#[derive(Debug, Serialize, PartialEq)]
pub struct Counted {
    pub name: String,
    pub value: usize,
}

#[derive(Debug, Serialize)]
pub struct Cardinality {
    /// Series counted (those `match` selects, or all).
    pub series: usize,
    pub series_count_by_metric_name: Vec<Counted>,
    /// Distinct values per label name, `__name__` (the metric names) included.
    pub label_value_count_by_label_name: Vec<Counted>,
    pub series_count_by_label_value_pair: Vec<Counted>,
}

/// The `top` largest of each list over the series `sel` matches (every series without one).
pub fn cardinality(store: &Store, sel: Option<&Selector>, top: usize) -> Cardinality {
    // Shared keys, so the counts can borrow their strings without holding the catalog's lock.
    let keys: Vec<Arc<SeriesKey>> = match sel {
        Some(sel) => select(store, sel).into_iter().map(|(_, k)| k).collect(),
        None => store.catalog.read().by_key.values().map(|(_, k)| k.clone()).collect(),
    };
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut values: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
    for k in &keys {
        *names.entry(&k.name).or_default() += 1;
        values.entry(NAME_LABEL).or_default().insert(&k.name);
        for (l, v) in &k.labels {
            values.entry(l).or_default().insert(v);
            *pairs.entry((l, v)).or_default() += 1;
        }
    }
    Cardinality {
        series: keys.len(),
        series_count_by_metric_name: largest(names.into_iter().map(|(n, c)| (n.to_owned(), c)), top),
        label_value_count_by_label_name: largest(
            values.into_iter().map(|(l, v)| (l.to_owned(), v.len())),
            top,
        ),
        series_count_by_label_value_pair: largest(
            pairs.into_iter().map(|((l, v), c)| (format!("{l}={v}"), c)),
            top,
        ),
    }
}

/// The `top` largest counts, largest first (ties by name).
fn largest(items: impl Iterator<Item = (String, usize)>, top: usize) -> Vec<Counted> {
    let mut all: Vec<(String, usize)> = items.collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.into_iter().take(top).map(|(name, value)| Counted { name, value }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_names_values_and_pairs_largest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        {
            let mut catalog = store.catalog.write();
            let keys = [
                "req{id=\"1\",route=\"/a\"}",
                "req{id=\"2\",route=\"/a\"}",
                "req{id=\"3\",route=\"/b\"}",
                "up",
            ];
            for (id, text) in keys.iter().enumerate() {
                catalog.insert(text.to_string(), id as u64, Arc::new(SeriesKey::parse(text).unwrap()));
            }
        }
        let c = cardinality(&store, None, 2);
        let counted = |items: &[(&str, usize)]| -> Vec<Counted> {
            items.iter().map(|(n, v)| Counted { name: n.to_string(), value: *v }).collect()
        };
        assert_eq!(c.series, 4);
        assert_eq!(c.series_count_by_metric_name, counted(&[("req", 3), ("up", 1)]));
        assert_eq!(c.label_value_count_by_label_name, counted(&[("id", 3), ("__name__", 2)]));
        assert_eq!(c.series_count_by_label_value_pair, counted(&[("route=/a", 2), ("id=1", 1)]));
        let sel = Selector::parse("req{route=\"/b\"}").unwrap();
        let c = cardinality(&store, Some(&sel), 10);
        assert_eq!((c.series, c.series_count_by_metric_name), (1, counted(&[("req", 1)])));
    }
}
