//! Small record tables: alert thresholds, alert events and silences, as rmp-serde named maps.
//! Reads run anywhere; every write is a [`Change`] the writer thread commits.

use super::Store;
use super::tables::{ALERT_EVENTS, META, PROFILES, SILENCES, THRESHOLDS};
use crate::error::{Error, Result};
use crate::executions::Execution;
use crate::sampler::alerts::{AlertEvent, Threshold};
use crate::writer::Change;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
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

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
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

/// The newest `limit` alert events, newest first.
pub fn events(store: &Store, limit: usize) -> Result<Vec<AlertEvent>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(ALERT_EVENTS)?;
    let mut out = Vec::new();
    for row in t.iter()?.rev().take(limit) {
        out.push(decode("alert event", row?.1.value())?);
    }
    Ok(out)
}

/// The newest event of each threshold in `ids` that has one. Reads the history newest first and
/// stops once every id is found (the history is bounded by retention).
pub fn latest_events(store: &Store, ids: &[u64]) -> Result<std::collections::HashMap<u64, AlertEvent>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(ALERT_EVENTS)?;
    let mut out = std::collections::HashMap::new();
    for row in t.iter()?.rev() {
        if out.len() == ids.len() {
            break;
        }
        let e: AlertEvent = decode("alert event", row?.1.value())?;
        if ids.contains(&e.threshold_id) {
            out.entry(e.threshold_id).or_insert(e);
        }
    }
    Ok(out)
}

/// The largest id used in the record tables, so new ids continue after it.
pub fn max_id(store: &Store) -> Result<u64> {
    let txn = store.db()?.begin_read()?;
    let mut max = 0;
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

/// Appends events under their ids (increasing, from `Store::new_record_id`).
pub fn append_events(events: &[(u64, AlertEvent)]) -> Result<Change> {
    let encoded: Vec<(u64, Vec<u8>)> =
        events.iter().map(|(id, e)| Ok((*id, encode(e)?))).collect::<Result<_>>()?;
    Ok(Box::new(move |txn| {
        let mut t = txn.open_table(ALERT_EVENTS)?;
        for (id, e) in &encoded {
            t.insert(id, e.as_slice())?;
        }
        Ok(())
    }))
}

/// Creates the default thresholds once, on the first start of a data directory.
pub fn seed_defaults(store: &Store) -> Result<Option<Change>> {
    let txn = store.db()?.begin_read()?;
    if txn.open_table(META)?.get("thresholds_seeded")?.is_some() {
        return Ok(None);
    }
    let mut encoded = Vec::new();
    for mut t in crate::sampler::alerts::defaults() {
        t.id = store.new_record_id();
        encoded.push((t.id, encode(&t)?));
    }
    Ok(Some(Box::new(move |txn| {
        let mut t = txn.open_table(THRESHOLDS)?;
        for (id, bytes) in &encoded {
            t.insert(id, bytes.as_slice())?;
        }
        txn.open_table(META)?.insert("thresholds_seeded", [1u8].as_slice())?;
        Ok(())
    })))
}

/// Finished (or expired) execution profiles, oldest first.
pub fn profiles(store: &Store) -> Result<Vec<Execution>> {
    read_all(store, PROFILES, "execution profile")
}

pub fn put_profile(e: &Execution) -> Result<Change> {
    let (id, bytes) = (e.id, encode(e)?);
    Ok(Box::new(move |txn| {
        txn.open_table(PROFILES)?.insert(id, bytes.as_slice())?;
        Ok(())
    }))
}

pub fn profile(store: &Store, id: u64) -> Result<Option<Execution>> {
    let txn = store.db()?.begin_read()?;
    let t = txn.open_table(PROFILES)?;
    t.get(id)?.map(|v| decode("execution profile", v.value())).transpose()
}
