//! Small record tables, as rmp-serde named maps: alert thresholds, alert events and the states of
//! firing alerts, silences, and execution profiles (with their index by finish time). Reads run
//! anywhere; every write is a [`Change`] the writer thread commits. What retention removes is in
//! `retention.rs`.

use super::Store;
use super::tables::{ALERT_EVENTS, ALERT_STATES, META, PROFILES, PROFILES_BY_FINISH, SILENCES, THRESHOLDS};
use crate::error::{Error, Result};
use crate::executions::Execution;
use crate::sampler::alerts::{AlertEvent, Level, Threshold};
use crate::writer::Change;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Silences a threshold (by id) or every threshold whose selector equals `selector`, until a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub threshold_id: Option<u64>,
    #[serde(default)]
    pub selector: Option<String>,
    /// Unix ms.
    pub until_ms: i64,
    #[serde(default)]
    pub comment: Option<String>,
}

impl Silence {
    pub fn covers(&self, t: &Threshold, now_ms: i64) -> bool {
        self.until_ms > now_ms
            && (self.threshold_id == Some(t.id) || self.selector.as_deref() == Some(t.selector.as_str()))
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(v).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

fn read_all<T: DeserializeOwned>(
    store: &Store,
    table: TableDefinition<u64, &[u8]>,
    what: &str,
) -> Result<Vec<T>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(table)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        out.push(decode(what, row?.1.value())?);
    }
    Ok(out)
}

pub fn thresholds(store: &Store) -> Result<Vec<Threshold>> {
    read_all(store, THRESHOLDS, "threshold")
}

pub fn threshold(store: &Store, id: u64) -> Result<Option<Threshold>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(THRESHOLDS)?;
    t.get(id)?.map(|v| decode("threshold", v.value())).transpose()
}

pub fn silences(store: &Store) -> Result<Vec<Silence>> {
    read_all(store, SILENCES, "silence")
}

/// The newest `limit` alert events that `keep` accepts, newest first.
pub fn events(store: &Store, limit: usize, keep: impl Fn(&AlertEvent) -> bool) -> Result<Vec<AlertEvent>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(ALERT_EVENTS)?;
    let mut out = Vec::new();
    for row in t.iter()?.rev() {
        if out.len() >= limit {
            break;
        }
        let e = decode("alert event", row?.1.value())?;
        if keep(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// The firing alerts, by threshold id: the event that put each in its level.
pub fn alert_states(store: &Store) -> Result<std::collections::HashMap<u64, AlertEvent>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(ALERT_STATES)?;
    let mut out = std::collections::HashMap::new();
    for row in t.iter()? {
        let (id, v) = row?;
        out.insert(id.value(), decode("alert state", v.value())?);
    }
    Ok(out)
}

/// Fills `ALERT_STATES` from the history on the first start of a file from before it: each
/// threshold's newest event, when it left the alert firing.
pub(super) fn build_alert_states(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    if meta.get("alert_states_built")?.is_some() {
        return Ok(());
    }
    let events = txn.open_table(ALERT_EVENTS)?;
    let mut states = txn.open_table(ALERT_STATES)?;
    let mut seen = std::collections::HashSet::new();
    for row in events.iter()?.rev() {
        let e: AlertEvent = decode("alert event", row?.1.value())?;
        if seen.insert(e.threshold_id) && e.to != Level::Ok {
            states.insert(e.threshold_id, encode(&e)?.as_slice())?;
        }
    }
    meta.insert("alert_states_built", [1u8].as_slice())?;
    Ok(())
}

/// The largest id used in the record tables, so new ids continue after it.
pub fn max_id(store: &Store) -> Result<u64> {
    let txn = store.db()?.begin_read()?;
    // Ids of removed records (retention) stay used.
    let floor = txn.open_table(META)?.get("record_id_floor")?.and_then(|v| v.value().try_into().ok());
    let mut max = floor.map_or(0, u64::from_le_bytes);
    for table in [THRESHOLDS, SILENCES, ALERT_EVENTS, PROFILES] {
        if let Some((k, _)) = txn.open_table(table)?.last()? {
            max = max.max(k.value());
        }
    }
    Ok(max)
}

pub fn put_threshold(t: &Threshold) -> Result<Change> {
    let (id, bytes) = (t.id, encode(t)?);
    Ok(Box::new(move |txn| {
        txn.open_table(THRESHOLDS)?.insert(id, bytes.as_slice())?;
        Ok(())
    }))
}

/// Replaces a threshold; the change fails with NotFound when there is none. The check is in
/// the write, so a delete that commits first is not undone by an update read before it.
pub fn replace_threshold(t: &Threshold) -> Result<Change> {
    let (id, bytes) = (t.id, encode(t)?);
    Ok(Box::new(move |txn| {
        let mut table = txn.open_table(THRESHOLDS)?;
        if table.get(id)?.is_none() {
            return Err(Error::NotFound(format!("no threshold {id}")));
        }
        table.insert(id, bytes.as_slice())?;
        Ok(())
    }))
}

/// Deletes a threshold; the change fails with NotFound when there is none.
pub fn delete_threshold(id: u64) -> Change {
    Box::new(move |txn| match txn.open_table(THRESHOLDS)?.remove(id)? {
        Some(_) => Ok(()),
        None => Err(Error::NotFound(format!("no threshold {id}"))),
    })
}

pub fn put_silence(s: &Silence) -> Result<Change> {
    let (id, bytes) = (s.id, encode(s)?);
    Ok(Box::new(move |txn| {
        txn.open_table(SILENCES)?.insert(id, bytes.as_slice())?;
        Ok(())
    }))
}

/// Appends events under their ids (increasing, from `Store::new_record_id`) and records the
/// state each leaves its alert in (`ALERT_STATES`: firing ones only).
pub fn append_events(events: &[(u64, AlertEvent)]) -> Result<Change> {
    let encoded: Vec<(u64, Vec<u8>)> =
        events.iter().map(|(id, e)| Ok((*id, encode(e)?))).collect::<Result<_>>()?;
    let states: Vec<(u64, Option<usize>)> = events
        .iter()
        .enumerate()
        .map(|(i, (_, e))| (e.threshold_id, (e.to != Level::Ok).then_some(i)))
        .collect();
    Ok(Box::new(move |txn| {
        let mut t = txn.open_table(ALERT_EVENTS)?;
        for (id, e) in &encoded {
            t.insert(id, e.as_slice())?;
        }
        // In order, so each threshold ends with its newest event's state.
        let mut firing = txn.open_table(ALERT_STATES)?;
        for &(threshold, event) in &states {
            match event {
                Some(i) => firing.insert(threshold, encoded[i].1.as_slice())?,
                None => firing.remove(threshold)?,
            };
        }
        Ok(())
    }))
}

/// Creates the default thresholds once, on the first start of a data directory.
/// The defaults' version in `meta.thresholds_seeded`: 1 the first six, 2 with the low cache hit
/// rate resolving while there are no lookups (`no_data: ok`).
const DEFAULTS_VERSION: u8 = 2;

/// Creates the default thresholds on first start, or brings a store seeded with older defaults
/// up to date once ([`crate::sampler::alerts::upgraded_default`]). The change, and what it does
/// for the log; `None` when there is nothing to do.
pub fn seed_defaults(store: &Store) -> Result<Option<(Change, &'static str)>> {
    let txn = store.db()?.begin_read()?;
    let seeded =
        txn.open_table(META)?.get("thresholds_seeded")?.map(|v| v.value().first().copied().unwrap_or(1));
    let (encoded, done) = match seeded {
        Some(v) if v >= DEFAULTS_VERSION => return Ok(None),
        Some(_) => {
            let mut encoded = Vec::new();
            for t in thresholds(store)? {
                if let Some(t) = crate::sampler::alerts::upgraded_default(&t) {
                    encoded.push((t.id, encode(&t)?));
                }
            }
            (encoded, "brought the default alert thresholds up to date")
        }
        None => {
            let mut encoded = Vec::new();
            for mut t in crate::sampler::alerts::defaults() {
                t.id = store.new_record_id();
                encoded.push((t.id, encode(&t)?));
            }
            (encoded, "created the default alert thresholds")
        }
    };
    let change: Change = Box::new(move |txn| {
        let mut t = txn.open_table(THRESHOLDS)?;
        for (id, bytes) in &encoded {
            t.insert(id, bytes.as_slice())?;
        }
        txn.open_table(META)?.insert("thresholds_seeded", [DEFAULTS_VERSION].as_slice())?;
        Ok(())
    });
    Ok(Some((change, done)))
}

/// When a stored profile ended (an expired one has its finish time too).
fn finished_ms(e: &Execution) -> i64 {
    e.finished_ms.unwrap_or(e.created_ms)
}

/// Profiles that ended at or after `since_ms`, oldest first (by finish time).
pub fn profiles_since(store: &Store, since_ms: i64) -> Result<Vec<Execution>> {
    let txn = store.db()?.begin_read()?;
    let (index, profiles) = (txn.open_table(PROFILES_BY_FINISH)?, txn.open_table(PROFILES)?);
    let mut out = Vec::new();
    for row in index.range((since_ms, 0)..)? {
        let (_, id) = row?.0.value();
        if let Some(v) = profiles.get(id)? {
            out.push(decode("execution profile", v.value())?);
        }
    }
    Ok(out)
}

pub fn put_profile(e: &Execution) -> Result<Change> {
    let (id, finished, bytes) = (e.id, finished_ms(e), encode(e)?);
    Ok(Box::new(move |txn| {
        let replaced =
            txn.open_table(PROFILES)?.insert(id, bytes.as_slice())?.map(|old| old.value().to_vec());
        let mut index = txn.open_table(PROFILES_BY_FINISH)?;
        if let Some(old) = replaced {
            index.remove((finished_ms(&decode("execution profile", &old)?), id))?;
        }
        index.insert((finished, id), ())?;
        Ok(())
    }))
}

/// Rebuilds the profile index when it does not match the profiles (a file from before it, a
/// restored backup, which leaves it out); cheap otherwise (two lengths).
pub(super) fn index_profiles(txn: &WriteTransaction) -> Result<()> {
    let profiles = txn.open_table(PROFILES)?;
    let mut index = txn.open_table(PROFILES_BY_FINISH)?;
    if profiles.len()? == index.len()? {
        return Ok(());
    }
    index.retain(|_, _| false)?;
    for row in profiles.iter()? {
        let (id, v) = row?;
        let e: Execution = decode("execution profile", v.value())?;
        index.insert((finished_ms(&e), id.value()), ())?;
    }
    log::info!("indexed {} execution profiles by finish time", profiles.len()?);
    Ok(())
}

pub fn profile(store: &Store, id: u64) -> Result<Option<Execution>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(PROFILES)?;
    t.get(id)?.map(|v| decode("execution profile", v.value())).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn apply(store: &Store, changes: Vec<Change>) {
        let txn = store.db().unwrap().begin_write().unwrap();
        for c in changes {
            c(&txn).unwrap();
        }
        txn.commit().unwrap();
    }

    fn profile(id: u64, finished_ms: i64) -> Execution {
        let mut e = Execution::queued(id, "crew", finished_ms - 1000, finished_ms);
        (e.state, e.finished_ms) = (crate::executions::ExecState::Finished, Some(finished_ms));
        e
    }

    fn event(threshold_id: u64, to: Level, at_ms: i64) -> AlertEvent {
        let from = if to == Level::Ok { Level::Critical } else { Level::Ok };
        let name = format!("t{threshold_id}");
        AlertEvent { threshold_id, name, from, to, value: Some(1.0), at_ms, silenced: false, reason: None }
    }

    fn threshold(id: u64) -> Threshold {
        let mut t = crate::sampler::alerts::defaults().remove(0);
        t.id = id;
        t
    }

    fn ids<T>(v: &[T], id: impl Fn(&T) -> u64) -> Vec<u64> {
        v.iter().map(id).collect()
    }

    #[test]
    fn profiles_are_read_by_finish_time_and_the_index_is_rebuilt_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = crate::model::now_ms();
        // Execution 5 ran longest: it ended last though it started first.
        let changes =
            [(5, now), (6, now - 2 * DAY), (7, now - DAY / 2)].map(|(id, f)| put_profile(&profile(id, f)));
        apply(&store, changes.into_iter().map(Result::unwrap).collect());
        assert_eq!(ids(&profiles_since(&store, now - DAY).unwrap(), |p| p.id), vec![7, 5]);
        // Stored again (a retry) with another finish time: one index row, the new one.
        apply(&store, vec![put_profile(&profile(7, now - 3 * DAY)).unwrap()]);
        assert_eq!(ids(&profiles_since(&store, now - DAY).unwrap(), |p| p.id), vec![5]);
        // A file without the index (older perfd, a restored backup) gets it on open.
        let txn = store.db().unwrap().begin_write().unwrap();
        txn.delete_table(PROFILES_BY_FINISH).unwrap();
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(ids(&profiles_since(&store, i64::MIN).unwrap(), |p| p.id), vec![7, 6, 5]);
    }

    #[test]
    fn retention_removes_old_records_but_no_firing_alert_and_ids_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = crate::model::now_ms();
        let cutoff = now - 30 * DAY;
        // Threshold 1 fired 40 days ago and still fires; 2 fired and resolved long ago; 3 is gone.
        let history = vec![
            (10, event(1, Level::Critical, now - 40 * DAY)),
            (11, event(2, Level::Warning, now - 39 * DAY)),
            (12, event(2, Level::Ok, now - 38 * DAY)),
            (13, event(3, Level::Critical, now - 35 * DAY)),
            (14, event(2, Level::Warning, now - DAY)),
        ];
        let silence =
            |id, until_ms| Silence { id, threshold_id: Some(1), selector: None, until_ms, comment: None };
        apply(
            &store,
            vec![
                put_threshold(&threshold(1)).unwrap(),
                put_threshold(&threshold(2)).unwrap(),
                append_events(&history).unwrap(),
                put_silence(&silence(20, now - 31 * DAY)).unwrap(),
                put_silence(&silence(21, now + DAY)).unwrap(),
                put_profile(&profile(30, now - 31 * DAY)).unwrap(),
                put_profile(&profile(31, now - 29 * DAY)).unwrap(),
            ],
        );
        let mut firing: Vec<(u64, i64)> =
            alert_states(&store).unwrap().into_iter().map(|(k, e)| (k, e.at_ms)).collect();
        firing.sort();
        assert_eq!(firing, vec![(1, now - 40 * DAY), (2, now - DAY), (3, now - 35 * DAY)]);

        let txn = store.db().unwrap().begin_write().unwrap();
        assert_eq!(
            crate::store::retention::expire(&txn, cutoff).unwrap(),
            4 + 1 + 1,
            "4 events, a silence, a profile"
        );
        txn.commit().unwrap();
        let mut firing: Vec<u64> = alert_states(&store).unwrap().into_keys().collect();
        firing.sort();
        assert_eq!(firing, vec![1, 2, 3], "a firing alert outlives its events (the sampler ends 3's)");
        assert_eq!(ids(&events(&store, 100, |_| true).unwrap(), |e| e.threshold_id), vec![2]);
        assert_eq!(ids(&silences(&store).unwrap(), |s| s.id), vec![21]);
        assert_eq!(ids(&profiles_since(&store, i64::MIN).unwrap(), |p| p.id), vec![31]);
        let txn = store.db().unwrap().begin_write().unwrap();
        assert_eq!(crate::store::retention::expire(&txn, cutoff).unwrap(), 0, "nothing more");
        txn.commit().unwrap();

        // Remove everything newer too: the next ids still continue after every id ever used.
        let txn = store.db().unwrap().begin_write().unwrap();
        crate::store::retention::expire(&txn, now + 2 * DAY).unwrap();
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.new_record_id() > 31);
    }

    #[test]
    fn a_file_from_before_alert_states_gets_them_from_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = [
            (1, event(7, Level::Warning, 1)),
            (2, event(8, Level::Critical, 2)),
            (3, event(7, Level::Ok, 3)),
        ];
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut events = txn.open_table(ALERT_EVENTS).unwrap();
            for (id, e) in &history {
                events.insert(id, encode(e).unwrap().as_slice()).unwrap();
            }
            txn.open_table(META).unwrap().remove("alert_states_built").unwrap();
        }
        txn.commit().unwrap();
        assert!(alert_states(&store).unwrap().is_empty());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let states = alert_states(&store).unwrap();
        assert_eq!(states.keys().copied().collect::<Vec<_>>(), vec![8], "7 resolved; 8 still fires");
        assert_eq!(states[&8].to, Level::Critical);
    }

    #[test]
    fn defaults_are_seeded_once_and_a_store_seeded_with_the_first_ones_is_brought_up_to_date_once() {
        use crate::sampler::alerts::{NoData, defaults};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (seed, _) = seed_defaults(&store).unwrap().expect("a new store is seeded");
        apply(&store, vec![seed]);
        assert_eq!(thresholds(&store).unwrap().len(), defaults().len());
        assert!(seed_defaults(&store).unwrap().is_none(), "once");

        // As the first version left a store: every default with the old policy, version 1; and a
        // user had changed one "low cache hit rate" and added one of his own with the same name.
        let (mut first, mut changed, mut own) = (Vec::new(), None, None);
        for (i, d) in defaults().into_iter().enumerate() {
            let t = Threshold { id: 100 + i as u64, no_data: NoData::Keep, ..d };
            if t.name == "low cache hit rate" {
                changed = Some(Threshold { id: 200, warning: Some(60.0), ..t.clone() });
                own = Some(Threshold { id: 201, window: "1h".into(), ..t.clone() });
            }
            first.push(t);
        }
        let (changed, own) = (changed.unwrap(), own.unwrap());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut writes: Vec<Change> =
            first.iter().chain([&changed, &own]).map(|t| put_threshold(t).unwrap()).collect();
        writes.push(Box::new(|txn| {
            txn.open_table(META)?.insert("thresholds_seeded", [1u8].as_slice())?;
            Ok(())
        }));
        apply(&store, writes);
        let (upgrade, _) = seed_defaults(&store).unwrap().expect("an upgrade");
        apply(&store, vec![upgrade]);
        let now = thresholds(&store).unwrap();
        assert_eq!(now.len(), first.len() + 2, "nothing added");
        for t in &now {
            let want = if t.name == "low cache hit rate" && t.id < 200 { NoData::Ok } else { NoData::Keep };
            assert_eq!(t.no_data, want, "{t:?}");
        }
        assert!(seed_defaults(&store).unwrap().is_none(), "once: a later `keep` chosen by a user stays");
    }
}
