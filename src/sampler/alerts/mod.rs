//! Alert thresholds and their state machine. Pure: no I/O; the sampler feeds values in.
//!
//! A threshold compares an aggregation of a selector's series over a window with a warning and a
//! critical level. Escalating needs the breach to hold for `for` (so a value hovering at the line
//! does not fire); once firing, the alert resolves only when the value crosses the `clear` level
//! (hysteresis: so it does not flap either). Downgrades and resolution are immediate. While the
//! window holds no data, the threshold's `no_data` policy decides: keep the level (the default),
//! resolve, or go to a level (after `for`, like any escalation).

#[cfg(test)]
mod tests;
mod threshold;

use serde::{Deserialize, Serialize};
pub use threshold::{Aggregation, Comparison, NoData, Threshold, defaults, upgraded_default};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
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
