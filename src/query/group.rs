//! Combining aggregated series into fewer (`group=sum&by=route`), as PromQL's
//! `sum by (route) (...)`: each bucket's values of the series in a group are combined into one.

use super::{NAME_LABEL, SeriesResult};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    Sum,
    Avg,
    Min,
    Max,
    /// How many series have a value in the bucket.
    Count,
}

/// One bucket of one group.
#[derive(Clone, Copy)]
struct Acc {
    sum: f64,
    n: u64,
    min: f64,
    max: f64,
}

impl Acc {
    fn new(v: f64) -> Acc {
        Acc { sum: v, n: 1, min: v, max: v }
    }

    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn value(self, how: Combine) -> f64 {
        match how {
            Combine::Sum => self.sum,
            Combine::Avg => self.sum / self.n as f64,
            Combine::Min => self.min,
            Combine::Max => self.max,
            Combine::Count => self.n as f64,
        }
    }
}

/// Groups series by the values of the `by` labels (`__name__` for the metric name; a series
/// without a label is grouped with those without it), in label order. A group's name is its
/// series' name when they share one, else empty; its labels are the `by` labels its series have.
pub fn combine(series: Vec<SeriesResult>, how: Combine, by: &[String]) -> Vec<SeriesResult> {
    // Group labels → (the name its series share, if they do; its buckets).
    type Group = (Option<String>, BTreeMap<i64, Acc>);
    let mut groups: BTreeMap<BTreeMap<String, String>, Group> = BTreeMap::new();
    for s in series {
        let labels: BTreeMap<String, String> = by
            .iter()
            .filter_map(|l| {
                let v = if l == NAME_LABEL { Some(&s.name) } else { s.labels.get(l) };
                v.map(|v| (l.clone(), v.clone()))
            })
            .collect();
        let (name, buckets) = groups.entry(labels).or_insert_with(|| (Some(s.name.clone()), BTreeMap::new()));
        if name.as_deref() != Some(s.name.as_str()) {
            *name = None;
        }
        for (t, v) in s.points {
            buckets.entry(t).and_modify(|a| a.add(v)).or_insert_with(|| Acc::new(v));
        }
    }
    groups
        .into_iter()
        .map(|(mut labels, (name, buckets))| {
            labels.remove(NAME_LABEL);
            SeriesResult {
                name: name.unwrap_or_default(),
                labels,
                points: buckets.into_iter().map(|(t, a)| (t, a.value(how))).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, labels: &[(&str, &str)], points: &[(i64, f64)]) -> SeriesResult {
        SeriesResult {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            points: points.to_vec(),
        }
    }

    fn input() -> Vec<SeriesResult> {
        vec![
            series("req", &[("route", "/a"), ("method", "GET")], &[(0, 1.0), (60, 2.0)]),
            series("req", &[("route", "/a"), ("method", "PUT")], &[(0, 10.0)]),
            series("req", &[("route", "/b"), ("method", "GET")], &[(60, 5.0)]),
            series("err", &[("route", "/b")], &[(60, 7.0)]),
        ]
    }

    #[test]
    fn every_series_into_one() {
        let got = combine(input(), Combine::Sum, &[]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].name.as_str(), got[0].labels.len()), ("", 0), "two names: none kept");
        assert_eq!(got[0].points, [(0, 11.0), (60, 14.0)]);
        let count = combine(input(), Combine::Count, &[]);
        assert_eq!(count[0].points, [(0, 2.0), (60, 3.0)]);
    }

    #[test]
    fn by_labels_and_by_name() {
        let got = combine(input()[..3].to_vec(), Combine::Max, &["route".into()]);
        let shown: Vec<_> =
            got.iter().map(|s| (s.name.as_str(), s.labels["route"].as_str(), s.points.clone())).collect();
        assert_eq!(shown, [("req", "/a", vec![(0, 10.0), (60, 2.0)]), ("req", "/b", vec![(60, 5.0)])]);
        let by_name = combine(input(), Combine::Avg, &[NAME_LABEL.into()]);
        let shown: Vec<_> =
            by_name.iter().map(|s| (s.name.as_str(), s.labels.len(), s.points.clone())).collect();
        assert_eq!(shown, [("err", 0, vec![(60, 7.0)]), ("req", 0, vec![(0, 5.5), (60, 3.5)])]);
        let by_method = combine(input(), Combine::Min, &["method".into()]);
        assert_eq!(by_method.len(), 3, "without the label is a group of its own");
        assert_eq!(by_method[0].labels.get("method"), None);
    }
}
