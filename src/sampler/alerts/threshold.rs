//! What a threshold is: its fields as the API and the store have them, their checks, how a
//! window's summaries become the one value it compares, and the defaults a new store gets.

use super::Level;
use crate::error::{Error, Result};
use crate::query::{Agg, Selector, Summary};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    Avg,
    Min,
    Max,
    Last,
    Sum,
    Count,
    /// Per-second increase from the first to the last point, across resets (counters).
    Rate,
    /// Per-second slope from the first to the last point (gauges).
    Deriv,
}

impl From<Aggregation> for Agg {
    /// A threshold's aggregations are a subset of a query's, computed by the same code.
    fn from(a: Aggregation) -> Agg {
        match a {
            Aggregation::Avg => Agg::Avg,
            Aggregation::Min => Agg::Min,
            Aggregation::Max => Agg::Max,
            Aggregation::Last => Agg::Last,
            Aggregation::Sum => Agg::Sum,
            Aggregation::Count => Agg::Count,
            Aggregation::Rate => Agg::Rate,
            Aggregation::Deriv => Agg::Deriv,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Comparison {
    fn breaches(self, value: f64, limit: f64) -> bool {
        match self {
            Comparison::Gt => value > limit,
            Comparison::Ge => value >= limit,
            Comparison::Lt => value < limit,
            Comparison::Le => value <= limit,
        }
    }

    pub(super) fn upward(self) -> bool {
        matches!(self, Comparison::Gt | Comparison::Ge)
    }
}

fn default_window() -> String {
    "5m".into()
}
fn default_for() -> String {
    "0s".into()
}
fn default_true() -> bool {
    true
}
fn default_aggregation() -> Aggregation {
    Aggregation::Avg
}

/// What an alert does while its window holds no data: every series stopped reporting, none
/// matches yet, or a rate has fewer than two points. A count or a sum is never without data (no
/// point counts 0), so this never applies to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    /// Stay at the level the last data called for (so a firing alert keeps firing).
    #[default]
    Keep,
    /// Resolve at once, as Prometheus does when a series disappears.
    Ok,
    /// Go to warning: silence is itself a problem.
    Warning,
    /// Go to critical.
    Critical,
}

impl NoData {
    /// The level no data calls for, or `None` to keep the current one.
    pub(super) fn level(self) -> Option<Level> {
        match self {
            NoData::Keep => None,
            NoData::Ok => Some(Level::Ok),
            NoData::Warning => Some(Level::Warning),
            NoData::Critical => Some(Level::Critical),
        }
    }
}

/// A stored threshold (the API shape of DESIGN §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    #[serde(default)]
    pub id: u64,
    pub name: String,
    pub selector: String,
    #[serde(default = "default_aggregation")]
    pub aggregation: Aggregation,
    #[serde(default = "default_window")]
    pub window: String,
    pub comparison: Comparison,
    #[serde(default)]
    pub warning: Option<f64>,
    #[serde(default)]
    pub critical: Option<f64>,
    /// Past this a firing alert resolves; without it, as soon as the value breaches no level.
    #[serde(default)]
    pub clear: Option<f64>,
    #[serde(rename = "for", default = "default_for")]
    pub for_: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub no_data: NoData,
}

impl Threshold {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("threshold {:?}: {m}", self.name)));
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return bad("name must be 1 to 128 bytes".into());
        }
        Selector::parse(&self.selector)?;
        let window = self.window_duration()?;
        if window < Duration::from_secs(1) || window > Duration::from_secs(24 * 3600) {
            return bad("window must be between 1s and 24h".into());
        }
        if self.for_duration()? > crate::config::MAX_DURATION {
            return bad("for must be at most 10 years".into());
        }
        if self.no_data != NoData::Keep && matches!(self.aggregation, Aggregation::Count | Aggregation::Sum) {
            let agg = if self.aggregation == Aggregation::Count { "count" } else { "sum" };
            return bad(format!(
                "no_data does not apply to {agg}: no point counts as 0 (a threshold like `< 1` fires \
                 when a series stops reporting)"
            ));
        }
        let levels = [self.warning, self.critical, self.clear];
        if levels.iter().flatten().any(|v| !v.is_finite()) {
            return bad("levels must be finite numbers".into());
        }
        let up = self.comparison.upward();
        // "More severe" means larger for > and >=, smaller for < and <=.
        let worse = |a: f64, b: f64| if up { a > b } else { a < b };
        match (self.warning, self.critical) {
            (None, None) => return bad("give a warning or a critical level".into()),
            (Some(w), Some(c)) if !worse(c, w) => {
                return bad(format!(
                    "critical ({c}) must be {} warning ({w})",
                    if up { "above" } else { "below" }
                ));
            }
            _ => {}
        }
        if let (Some(clear), Some(first)) = (self.clear, self.warning.or(self.critical))
            && worse(clear, first)
        {
            return bad(format!("clear ({clear}) must not be past the first alert level ({first})"));
        }
        Ok(())
    }

    pub fn window_duration(&self) -> Result<Duration> {
        humantime::parse_duration(&self.window).map_err(|_| {
            Error::invalid(format!("threshold {:?}: invalid window {:?}", self.name, self.window))
        })
    }

    pub fn for_duration(&self) -> Result<Duration> {
        humantime::parse_duration(&self.for_)
            .map_err(|_| Error::invalid(format!("threshold {:?}: invalid for {:?}", self.name, self.for_)))
    }

    /// Whether a firing alert may resolve at this value (which breaches no level). Without a
    /// clear level it may: at exactly the line of a `>` or `<` threshold it used to stay firing,
    /// so `count < 1` never resolved at a count of 1.
    pub(super) fn cleared(&self, value: f64) -> bool {
        match self.clear {
            Some(clear) if self.comparison.upward() => value < clear,
            Some(clear) => value > clear,
            None => true,
        }
    }

    /// The level the value calls for, before `for` and hysteresis.
    pub(super) fn target(&self, value: f64) -> Level {
        let c = self.comparison;
        if self.critical.is_some_and(|l| c.breaches(value, l)) {
            Level::Critical
        } else if self.warning.is_some_and(|l| c.breaches(value, l)) {
            Level::Warning
        } else {
            Level::Ok
        }
    }

    /// Aggregates one series' window (see [`crate::query::read_windows`]) as this threshold asks.
    pub fn aggregate(&self, s: &Summary) -> Option<f64> {
        s.value(self.aggregation.into())
    }

    /// Combines per-series values: the worst one counts. With no value at all (no point in the
    /// window), a count or a sum is 0, so `count < 1` fires when a series stops reporting and a
    /// sum of events resolves when they stop; the other aggregations have no value.
    pub fn worst(&self, values: impl Iterator<Item = f64>) -> Option<f64> {
        let worst = if self.comparison.upward() { values.reduce(f64::max) } else { values.reduce(f64::min) };
        worst.or(matches!(self.aggregation, Aggregation::Count | Aggregation::Sum).then_some(0.0))
    }
}

/// Created on first start so a new install watches the basics.
pub fn defaults() -> Vec<Threshold> {
    let t = |name: &str, selector: &str, agg, cmp, warning, critical, clear| Threshold {
        id: 0,
        name: name.into(),
        selector: selector.into(),
        aggregation: agg,
        window: "5m".into(),
        comparison: cmp,
        warning: Some(warning),
        critical: Some(critical),
        clear: Some(clear),
        for_: "2m".into(),
        enabled: true,
        no_data: NoData::Keep,
    };
    use Aggregation::*;
    use Comparison::*;
    vec![
        t("high CPU", "perfd_cpu_percent", Avg, Gt, 85.0, 95.0, 80.0),
        t("high memory", "perfd_memory_percent", Avg, Gt, 85.0, 95.0, 80.0),
        t("disk filling", "perfd_disk_used_percent", Max, Gt, 85.0, 95.0, 83.0),
        t("HTTP 5xx", "perfd_http_errors_5xx", Sum, Gt, 10.0, 100.0, 5.0),
        // The hit rate is written only for ticks with lookups: an idle cache is no problem.
        Threshold {
            no_data: NoData::Ok,
            ..t("low cache hit rate", "perfd_cache_hit_rate_percent", Avg, Lt, 50.0, 20.0, 55.0)
        },
        t("writer queue saturating", "perfd_writer_queue_percent", Max, Gt, 50.0, 90.0, 40.0),
    ]
}

/// A default threshold stored before `no_data` existed, still as it was created, as the current
/// default has it (a store seeded then gets the new policy once; what a user changed is left).
pub fn upgraded_default(stored: &Threshold) -> Option<Threshold> {
    defaults().into_iter().find_map(|d| {
        let as_created = Threshold { id: stored.id, no_data: NoData::Keep, ..d.clone() };
        (d.no_data != NoData::Keep && *stored == as_created)
            .then_some(Threshold { no_data: d.no_data, ..as_created })
    })
}
