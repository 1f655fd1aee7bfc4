//! Alert thresholds and their state machine. Pure: no I/O; the sampler feeds values in.
//!
//! A threshold compares an aggregation of a selector's series over a window with a warning and a
//! critical level. Escalating needs the breach to hold for `for` (so a value hovering at the line
//! does not fire); once firing, the alert resolves only when the value crosses the `clear` level
//! (hysteresis: so it does not flap either). Downgrades and resolution are immediate. While the
//! window holds no data, the threshold's `no_data` policy decides: keep the level (the default),
//! resolve, or go to a level (after `for`, like any escalation).

use crate::error::{Error, Result};
use crate::query::{Selector, Summary};
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
    /// Per-second increase from the first to the last point (counters).
    Rate,
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

    fn upward(self) -> bool {
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
    fn level(self) -> Option<Level> {
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
    fn cleared(&self, value: f64) -> bool {
        match self.clear {
            Some(clear) if self.comparison.upward() => value < clear,
            Some(clear) => value > clear,
            None => true,
        }
    }

    /// The level the value calls for, before `for` and hysteresis.
    fn target(&self, value: f64) -> Level {
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
        Some(match self.aggregation {
            Aggregation::Avg => s.sum / s.count as f64,
            Aggregation::Min => s.min,
            Aggregation::Max => s.max,
            Aggregation::Last => s.last.1,
            Aggregation::Sum => s.sum,
            Aggregation::Count => s.count as f64,
            Aggregation::Rate if s.last.0 > s.first.0 => {
                (s.last.1 - s.first.1) / ((s.last.0 - s.first.0) as f64 / 1000.0)
            }
            Aggregation::Rate => return None,
        })
    }

    /// Combines per-series values: the worst one counts. With no value at all (no point in the
    /// window), a count or a sum is 0, so `count < 1` fires when a series stops reporting and a
    /// sum of events resolves when they stop; the other aggregations have no value.
    pub fn worst(&self, values: impl Iterator<Item = f64>) -> Option<f64> {
        let worst = if self.comparison.upward() { values.reduce(f64::max) } else { values.reduce(f64::min) };
        worst.or(matches!(self.aggregation, Aggregation::Count | Aggregation::Sum).then_some(0.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Ok,
    Warning,
    Critical,
}

/// A threshold's evaluation state, kept by the sampler between ticks.
#[derive(Debug, Clone, Default)]
pub struct AlertState {
    pub level: Level,
    /// A higher level seen since this time (unix ms), not yet held for `for`.
    pending: Option<(Level, i64)>,
    pub since_ms: i64,
    pub value: Option<f64>,
    /// The threshold's name when last evaluated (for the event that ends an alert whose
    /// threshold was deleted).
    pub name: String,
}

impl AlertState {
    /// The state an alert was left in by its newest event (restored on start, so a restart
    /// neither drops a firing alert nor fires it twice; a breach still held for `for` starts over).
    pub fn from_event(e: &AlertEvent) -> AlertState {
        AlertState { level: e.to, pending: None, since_ms: e.at_ms, value: e.value, name: e.name.clone() }
    }

    /// Ends a firing alert whose threshold is gone or disabled: the event that says so, if it was
    /// firing.
    pub fn end(self, threshold_id: u64, now_ms: i64, reason: &str) -> Option<AlertEvent> {
        (self.level != Level::Ok).then(|| AlertEvent {
            threshold_id,
            name: self.name,
            from: self.level,
            to: Level::Ok,
            value: self.value,
            at_ms: now_ms,
            silenced: false,
            reason: Some(reason.into()),
        })
    }
}

/// A change of an alert's level, stored in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub threshold_id: u64,
    pub name: String,
    pub from: Level,
    pub to: Level,
    /// The value that decided the change; `null` when no data did (the `reason` says so).
    /// Events stored before there was a no-data policy always have one.
    pub value: Option<f64>,
    pub at_ms: i64,
    #[serde(default)]
    pub silenced: bool,
    /// Why, when the value did not decide it (`threshold disabled`, `threshold deleted`,
    /// `no data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Feeds one value, or none when the window holds no data, into the state; returns the
/// transition, if any.
pub fn evaluate(
    t: &Threshold,
    state: &mut AlertState,
    value: Option<f64>,
    now_ms: i64,
) -> Option<AlertEvent> {
    if state.name != t.name {
        state.name.clone_from(&t.name);
    }
    let target = match value {
        Some(value) => {
            let mut target = t.target(value);
            if target == Level::Ok && state.level > Level::Ok && !t.cleared(value) {
                // Hysteresis: between the clear and the first level a firing alert stays at
                // warning (at critical if the threshold has no warning level).
                target = state.level.min(if t.warning.is_some() { Level::Warning } else { Level::Critical });
            }
            target
        }
        // Keep (no level): nothing changes, and the last value stays the one shown.
        None => t.no_data.level()?,
    };
    state.value = value;
    let next = if target > state.level {
        // The breach counts from when the value first went above the current level.
        let since = state.pending.map_or(now_ms, |(_, since)| since);
        state.pending = Some((target, since));
        // Validation keeps `for` within 10 years, so its milliseconds fit.
        let hold_ms = t.for_duration().map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        (now_ms - since >= hold_ms).then_some(target)
    } else {
        state.pending = None;
        (target < state.level).then_some(target)
    };
    let to = next?;
    let event = AlertEvent {
        threshold_id: t.id,
        name: t.name.clone(),
        from: state.level,
        to,
        value,
        at_ms: now_ms,
        silenced: false,
        reason: value.is_none().then(|| "no data".into()),
    };
    state.level = to;
    state.since_ms = now_ms;
    state.pending = None;
    Some(event)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(for_: &str) -> Threshold {
        Threshold {
            id: 1,
            name: "cpu".into(),
            selector: "perfd_cpu_percent".into(),
            aggregation: Aggregation::Avg,
            window: "5m".into(),
            comparison: Comparison::Gt,
            warning: Some(80.0),
            critical: Some(95.0),
            clear: Some(70.0),
            for_: for_.into(),
            enabled: true,
            no_data: NoData::Keep,
        }
    }

    fn run(t: &Threshold, values: &[f64]) -> Vec<(Level, Level)> {
        let mut s = AlertState::default();
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| evaluate(t, &mut s, Some(*v), i as i64 * 10_000))
            .map(|e| (e.from, e.to))
            .collect()
    }

    #[test]
    fn flapping_at_the_line_does_not_flap_the_alert() {
        // Hovers around 80 every other tick: with for=30s it never holds long enough to fire.
        let hover: Vec<f64> = (0..40).map(|i| if i % 2 == 0 { 81.0 } else { 79.0 }).collect();
        assert!(run(&cpu("30s"), &hover).is_empty());
        // Once firing, hovering between clear (70) and warning (80) does not resolve it.
        let mut values = vec![85.0; 5];
        values.extend((0..40).map(|i| if i % 2 == 0 { 81.0 } else { 75.0 }));
        values.push(60.0);
        assert_eq!(run(&cpu("30s"), &values), vec![(Level::Ok, Level::Warning), (Level::Warning, Level::Ok)]);
    }

    #[test]
    fn escalates_after_for_and_resolves_immediately() {
        let t = cpu("20s");
        let values = [90.0, 90.0, 90.0, 99.0, 99.0, 99.0, 50.0];
        assert_eq!(
            run(&t, &values),
            vec![
                (Level::Ok, Level::Warning),
                (Level::Warning, Level::Critical),
                (Level::Critical, Level::Ok)
            ]
        );
        assert_eq!(
            run(&cpu("0s"), &[99.0, 85.0]),
            vec![(Level::Ok, Level::Critical), (Level::Critical, Level::Warning)]
        );
    }

    #[test]
    fn without_a_clear_level_an_alert_resolves_at_the_line() {
        // `> 80`: 80 breaches nothing; it stayed at warning when the clear level defaulted to 80.
        let t = Threshold { clear: None, ..cpu("0s") };
        assert_eq!(run(&t, &[85.0, 80.0]), vec![(Level::Ok, Level::Warning), (Level::Warning, Level::Ok)]);
        // Critical only, with a clear level: between the two it stays critical (it has no warning).
        let t = Threshold { warning: None, ..cpu("0s") };
        assert_eq!(
            run(&t, &[99.0, 80.0, 69.0]),
            vec![(Level::Ok, Level::Critical), (Level::Critical, Level::Ok)]
        );
    }

    #[test]
    fn invalid_thresholds_are_refused() {
        assert!(cpu("1m").validate().is_ok());
        for t in [
            Threshold { warning: Some(99.0), ..cpu("1m") },
            Threshold { clear: Some(90.0), ..cpu("1m") },
            Threshold { warning: None, critical: None, ..cpu("1m") },
            Threshold { selector: "cpu{".into(), ..cpu("1m") },
            Threshold { window: "soon".into(), ..cpu("1m") },
            Threshold { for_: "x".into(), ..cpu("1m") },
            // 300 million years: its milliseconds overflowed i64 and the alert fired at once.
            Threshold { for_: "300000000y".into(), ..cpu("1m") },
            Threshold { for_: "3651d".into(), ..cpu("1m") },
            Threshold { name: "".into(), ..cpu("1m") },
            Threshold { comparison: Comparison::Lt, ..cpu("1m") },
        ] {
            assert!(t.validate().is_err(), "{t:?}");
        }
        for d in defaults() {
            d.validate().unwrap();
        }
        let unknown: std::result::Result<Threshold, _> = serde_json::from_str(
            r#"{"name":"x","selector":"m","aggregation":"median","comparison":">","warning":1}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn aggregations() {
        let mut t = cpu("0s");
        let pts = [(0, 1.0), (1000, 3.0), (3000, 11.0)];
        for (a, want) in [
            (Aggregation::Avg, 5.0),
            (Aggregation::Min, 1.0),
            (Aggregation::Max, 11.0),
            (Aggregation::Last, 11.0),
            (Aggregation::Sum, 15.0),
            (Aggregation::Count, 3.0),
            (Aggregation::Rate, 10.0 / 3.0),
        ] {
            t.aggregation = a;
            assert_eq!(Summary::of(&pts).and_then(|s| t.aggregate(&s)), Some(want), "{a:?}");
        }
        t.aggregation = Aggregation::Rate;
        assert_eq!(Summary::of(&[(5, 1.0)]).and_then(|s| t.aggregate(&s)), None, "one point has no rate");
    }

    #[test]
    fn no_point_is_a_count_and_a_sum_of_zero() {
        let mut t = cpu("0s");
        for (a, want) in [
            (Aggregation::Count, Some(0.0)),
            (Aggregation::Sum, Some(0.0)),
            (Aggregation::Avg, None),
            (Aggregation::Max, None),
            (Aggregation::Rate, None),
        ] {
            t.aggregation = a;
            assert_eq!(t.worst(std::iter::empty()), want, "{a:?}");
            assert_eq!(t.worst([3.0, 7.0].into_iter()), Some(7.0), "{a:?}");
        }
        assert!(Threshold { for_: "3650d".into(), ..cpu("1m") }.validate().is_ok());
    }

    #[test]
    fn no_data_keeps_resolves_or_fires_as_the_policy_says() {
        // Ticks 10 s apart; `None` is a tick whose window held no data.
        let run = |t: &Threshold, values: &[Option<f64>]| {
            let mut s = AlertState::default();
            let events: Vec<_> = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| evaluate(t, &mut s, *v, i as i64 * 10_000))
                .map(|e| (e.from, e.to, e.value, e.reason))
                .collect();
            (events, s.value)
        };
        let no_data = Some("no data".to_string());
        let firing_then_silent = [Some(99.0), None, None];
        // Keep: the alert stays critical and still shows the last value.
        let keep = cpu("0s");
        assert_eq!(
            run(&keep, &firing_then_silent),
            (vec![(Level::Ok, Level::Critical, Some(99.0), None)], Some(99.0))
        );
        // Ok: resolved at the first tick without data, and the event says why.
        let ok = Threshold { no_data: NoData::Ok, ..cpu("0s") };
        assert_eq!(
            run(&ok, &firing_then_silent),
            (
                vec![
                    (Level::Ok, Level::Critical, Some(99.0), None),
                    (Level::Critical, Level::Ok, None, no_data.clone())
                ],
                None
            )
        );
        // Warning: a downgrade from critical is immediate; from ok it waits for `for` (20 s).
        let warn = Threshold { no_data: NoData::Warning, ..cpu("20s") };
        let (events, _) = run(&warn, &[None, None, None, Some(50.0)]);
        assert_eq!(
            events,
            vec![
                (Level::Ok, Level::Warning, None, no_data.clone()),
                (Level::Warning, Level::Ok, Some(50.0), None)
            ]
        );
        let (events, _) = run(&warn, &[Some(99.0), Some(99.0), Some(99.0), None]);
        assert_eq!(events.last(), Some(&(Level::Critical, Level::Warning, None, no_data.clone())));
        // Critical, with data coming back between the clear and the first level: hysteresis
        // holds the alert at warning, as it does for any firing alert.
        let crit = Threshold { no_data: NoData::Critical, ..cpu("0s") };
        let (events, value) = run(&crit, &[None, Some(75.0), Some(60.0)]);
        assert_eq!(
            events,
            vec![
                (Level::Ok, Level::Critical, None, no_data),
                (Level::Critical, Level::Warning, Some(75.0), None),
                (Level::Warning, Level::Ok, Some(60.0), None)
            ]
        );
        assert_eq!(value, Some(60.0));
    }

    #[test]
    fn a_threshold_stored_before_no_data_existed_keeps() {
        let mut old = serde_json::to_value(cpu("1m")).unwrap();
        old.as_object_mut().unwrap().remove("no_data");
        let t: Threshold = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        assert_eq!(t.no_data, NoData::Keep);
        let bad: std::result::Result<Threshold, _> = serde_json::from_value(serde_json::json!({
            "name": "x", "selector": "m", "comparison": ">", "warning": 1, "no_data": "maybe"
        }));
        assert!(bad.is_err());
        // An event stored with a plain number still reads.
        #[derive(Serialize)]
        struct OldEvent {
            threshold_id: u64,
            name: String,
            from: Level,
            to: Level,
            value: f64,
            at_ms: i64,
        }
        let old = OldEvent {
            threshold_id: 1,
            name: "x".into(),
            from: Level::Ok,
            to: Level::Warning,
            value: 3.5,
            at_ms: 9,
        };
        let e: AlertEvent = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        assert_eq!((e.value, e.reason), (Some(3.5), None));
    }
}
