//! The sampler's alert step: reads the thresholds, silences and each threshold's window of data,
//! feeds the state machine (`alerts.rs`), stores state changes as history events and publishes
//! what fires. Firing states are restored from the store on start.

use super::{FiringAlert, Sampler, alerts};
use crate::error::Result;
use std::sync::Arc;

impl Sampler {
    /// Evaluates the thresholds, publishes what fires and returns the live (unsilenced) warning and
    /// critical counts. A failed evaluation keeps the previous alerts.
    pub(super) fn publish_alerts(&mut self, now: i64) -> (usize, usize) {
        let firing = match self.evaluate_alerts(now) {
            Ok(f) => f,
            // While storage fails, the writer has said so once already.
            Err(e) if self.sources.writer.fault.is_failing() => {
                log::debug!("alert evaluation failed: {e}");
                self.published.alerts.read().clone()
            }
            Err(e) => {
                log::error!("alert evaluation failed: {e}");
                self.published.alerts.read().clone()
            }
        };
        let live = |level| firing.iter().filter(|a| !a.silenced && a.level == level).count();
        let counts = (live(alerts::Level::Warning), live(alerts::Level::Critical));
        if let Some((notices, _)) = &self.sources.notifier {
            // Full only while a delivery hangs for its timeout: the next tick's supersedes it.
            let _ = notices.try_send(firing.clone());
        }
        *self.published.alerts.write() = firing;
        counts
    }

    /// Evaluates every enabled threshold on its window of data, stores state changes as alert
    /// events (logged too) and returns what fires now.
    fn evaluate_alerts(&mut self, now: i64) -> Result<Vec<FiringAlert>> {
        let store = self.sources.store.clone();
        let thresholds = crate::store::records::thresholds(&store)?;
        let silences = crate::store::records::silences(&store)?;
        let mut events = Vec::new();
        // An alert whose threshold was deleted or disabled ends, and the history says why.
        let gone: Vec<u64> = self
            .alert_states
            .keys()
            .filter(|id| !thresholds.iter().any(|t| t.id == **id && t.enabled))
            .copied()
            .collect();
        for id in gone {
            let Some(state) = self.alert_states.remove(&id) else { continue };
            let reason = match thresholds.iter().any(|t| t.id == id) {
                true => "threshold disabled",
                false => "threshold deleted",
            };
            if let Some(e) = state.end(id, now, reason) {
                log::warn!("alert {:?}: {:?} -> ok ({reason})", e.name, e.from);
                events.push(e);
            }
        }
        let mut firing = Vec::new();
        // Events of the thresholds evaluated before a failure are stored all the same.
        let evaluated = self.evaluate_each(&thresholds, &silences, now, &mut events, &mut firing);
        self.store_events(events);
        evaluated.map(|()| firing)
    }

    /// Evaluates every enabled threshold, adding its state change (if any) to `events` and its
    /// alert (if firing) to `firing`.
    fn evaluate_each(
        &mut self,
        thresholds: &[alerts::Threshold],
        silences: &[crate::store::records::Silence],
        now: i64,
        events: &mut Vec<alerts::AlertEvent>,
        firing: &mut Vec<FiringAlert>,
    ) -> Result<()> {
        self.selectors.retain(|text, _| thresholds.iter().any(|t| t.enabled && t.selector == *text));
        let store = &self.sources.store;
        for t in thresholds.iter().filter(|t| t.enabled) {
            let window = t.window_duration()?.as_millis() as i64;
            let selector = match self.selectors.get(&t.selector) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(crate::query::Selector::parse(&t.selector)?);
                    self.selectors.insert(t.selector.clone(), s.clone());
                    s
                }
            };
            // Summaries, not raw points: whole sealed hours come from chunk headers. Raw reads
            // decoded every point of the window on every tick (10 ms for a day at 1 point/s),
            // and a window over a million points failed the whole evaluation.
            let rate = t.aggregation == alerts::Aggregation::Rate;
            let series = crate::query::read_windows(store, &selector, (now - window, now), rate)?;
            let value = t.worst(series.iter().filter_map(|(_, s)| t.aggregate(s)));
            let state = self.alert_states.entry(t.id).or_default();
            let silenced = silences.iter().any(|s| s.covers(t, now));
            if let Some(mut e) = alerts::evaluate(t, state, value, now) {
                e.silenced = silenced;
                let at = e.value.map_or_else(|| "no data".to_string(), |v| v.to_string());
                log::warn!("alert {:?}: {:?} -> {:?} at {at} (silenced: {silenced})", e.name, e.from, e.to);
                events.push(e);
            }
            if state.level != alerts::Level::Ok {
                firing.push(FiringAlert {
                    threshold_id: t.id,
                    name: t.name.clone(),
                    selector: t.selector.clone(),
                    level: state.level,
                    value: state.value,
                    since_ms: state.since_ms,
                    silenced,
                });
            }
        }
        Ok(())
    }

    /// Appends this tick's events to the history, after any an earlier tick could not store; the
    /// states already moved on, so events the store refuses wait for the next tick (at most
    /// `MAX_UNSTORED_EVENTS`, the oldest dropped first).
    fn store_events(&mut self, events: Vec<alerts::AlertEvent>) {
        let store = &self.sources.store;
        self.unstored_events.extend(events.into_iter().map(|e| (store.new_record_id(), e)));
        if self.unstored_events.is_empty() {
            return;
        }
        let stored = crate::store::records::append_events(&self.unstored_events)
            .and_then(|change| self.sources.writer.apply(change));
        match stored {
            Ok(()) => self.unstored_events.clear(),
            Err(e) => {
                let excess = self.unstored_events.len().saturating_sub(MAX_UNSTORED_EVENTS);
                if excess > 0 {
                    log::error!("{excess} alert events were dropped: the store has failed for too long");
                    self.unstored_events.drain(..excess);
                }
                let waiting = self.unstored_events.len();
                // While storage fails, the writer has said so once already.
                if self.sources.writer.fault.is_failing() {
                    log::debug!("{waiting} alert events wait to be stored: {e}");
                } else {
                    log::warn!("{waiting} alert events wait to be stored: {e}");
                }
            }
        }
    }
}

/// Alert events kept while the store fails, for the history once it recovers.
const MAX_UNSTORED_EVENTS: usize = 10_000;

/// The firing alerts the store kept. States that cannot be read are logged and alerts start from
/// ok.
pub(super) fn restored_states(
    store: &crate::store::Store,
) -> std::collections::HashMap<u64, alerts::AlertState> {
    // All of them: one whose threshold was deleted or disabled before a tick saw it is ended, with
    // its event, by the first tick.
    match crate::store::records::alert_states(store) {
        Ok(states) => states.into_iter().map(|(id, e)| (id, alerts::AlertState::from_event(&e))).collect(),
        Err(e) => {
            log::error!("alert states could not be restored (alerts start from ok): {e}");
            Default::default()
        }
    }
}
