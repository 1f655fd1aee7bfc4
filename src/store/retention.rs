//! Retention of the record tables: what `storage.retention` removes besides chunks (those are
//! the writer's `maintenance.rs`). Runs in the writer's maintenance transaction.

use super::records::{Silence, decode};
use super::tables::{ALERT_EVENTS, META, PROFILES, PROFILES_BY_FINISH, SILENCES};
use crate::error::Result;
use crate::sampler::alerts::AlertEvent;
use redb::{ReadableTable, WriteTransaction};

/// Removes what is older than `cutoff_ms` (unix ms) from the record tables: profiles that
/// ended before it, silences that ran out before it and alert events from before it. A firing
/// alert's state (`ALERT_STATES`) is kept however old; the sampler ends the alert of a threshold
/// that is gone, with an event. Returns how many rows went.
pub fn expire(txn: &WriteTransaction, cutoff_ms: i64) -> Result<u64> {
    let mut removed = 0;
    let mut high = 0u64; // the largest id removed: ids are never handed out twice
    {
        let mut index = txn.open_table(PROFILES_BY_FINISH)?;
        let mut profiles = txn.open_table(PROFILES)?;
        let old: Vec<(i64, u64)> = index
            .range(..(cutoff_ms, 0))?
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<std::result::Result<_, _>>()?;
        for key in old {
            index.remove(key)?;
            profiles.remove(key.1)?;
            (removed, high) = (removed + 1, high.max(key.1));
        }
    }
    {
        let mut silences = txn.open_table(SILENCES)?;
        let mut old = Vec::new();
        for row in silences.iter()? {
            let (id, v) = row?;
            if decode::<Silence>("silence", v.value())?.until_ms < cutoff_ms {
                old.push(id.value());
            }
        }
        for id in old {
            silences.remove(id)?;
            (removed, high) = (removed + 1, high.max(id));
        }
    }
    {
        let mut events = txn.open_table(ALERT_EVENTS)?;
        let mut old = Vec::new();
        for row in events.iter()? {
            let (id, v) = row?;
            if decode::<AlertEvent>("alert event", v.value())?.at_ms >= cutoff_ms {
                break;
            }
            old.push(id.value());
        }
        for id in old {
            events.remove(id)?;
            (removed, high) = (removed + 1, high.max(id));
        }
    }
    if high > 0 {
        let mut meta = txn.open_table(META)?;
        let floor = meta
            .get("record_id_floor")?
            .and_then(|v| v.value().try_into().ok())
            .map_or(0, u64::from_le_bytes);
        meta.insert("record_id_floor", high.max(floor).to_le_bytes().as_slice())?;
    }
    Ok(removed)
}
