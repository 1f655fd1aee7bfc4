//! Execution slots (the ResourceManager): at most `max_concurrent` crew executions run at once,
//! and only while CPU and memory are under their limits; the rest wait in a FIFO queue of
//! bounded length. Every execution holds a lease it must renew, so a crashed client cannot keep
//! a slot. Finishing frees the slot, admits the next in line and stores an execution profile.

use crate::error::{Error, Result};
use crate::model::now_ms;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Longest stage duration taken, ms: a year.
pub const MAX_STAGE_MS: f64 = 365.0 * 24.0 * 3600.0 * 1000.0;

#[derive(Debug, Clone, Serialize)]
pub struct ExecutionConfig {
    pub max_concurrent: usize,
    pub queue_capacity: usize,
    /// Admission waits while CPU use (%) is at or above this.
    pub cpu_limit_percent: f64,
    /// Admission waits while memory use (%) is at or above this.
    pub memory_limit_percent: f64,
    /// A lease not renewed within this expires the execution.
    pub lease: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecState {
    Queued,
    Running,
    Finished,
    Expired,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub duration_ms: f64,
}

/// One execution as the API shows it (and, once done, as its stored profile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Execution {
    pub id: u64,
    pub crew_id: String,
    pub state: ExecState,
    /// 1-based place in the queue while queued.
    pub position: Option<usize>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub lease_expires_ms: i64,
    pub queue_wait_ms: Option<i64>,
    pub run_time_ms: Option<i64>,
    pub stages: Vec<Stage>,
    /// Client-reported outcome, e.g. `success` or `error`.
    pub status: Option<String>,
}

impl Execution {
    /// A new execution, queued at `now_ms` with a lease until `lease_expires_ms`.
    pub fn queued(id: u64, crew_id: &str, now_ms: i64, lease_expires_ms: i64) -> Execution {
        Execution {
            id,
            crew_id: crew_id.to_owned(),
            state: ExecState::Queued,
            position: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            lease_expires_ms,
            queue_wait_ms: None,
            run_time_ms: None,
            stages: Vec::new(),
            status: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    executions: HashMap<u64, Execution>,
    running: usize,
    queue: VecDeque<u64>,
    rejected: u64,
    expired: u64,
    /// Requests withdrawn because their client went away while waiting.
    abandoned: u64,
    /// Profiles not stored yet, oldest first: expired by a `request` (not by a tick), or whose
    /// store failed (a storage fault). The sampler stores them on its next ticks.
    unstored: VecDeque<Execution>,
    /// Profiles dropped because more than [`MAX_UNSTORED`] waited.
    dropped_profiles: u64,
    admitted: u64,
    total_wait_ms: i64,
}

pub struct Executions {
    inner: Mutex<Inner>,
    /// Woken whenever someone may have been admitted.
    pub changed: Notify,
    /// A reload may replace it ([`Executions::set_config`]).
    cfg: arc_swap::ArcSwap<ExecutionConfig>,
    /// Latest (cpu %, memory %), set by the sampler.
    load: Mutex<(f64, f64)>,
    /// Hands out ids that stay unique across restarts (profiles are stored under them).
    next_id: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// The outcome of asking for a slot.
pub enum Admission {
    Running(Execution),
    Queued(Execution),
}

impl Executions {
    pub fn new(cfg: ExecutionConfig, next_id: Box<dyn Fn() -> u64 + Send + Sync>) -> Executions {
        Executions {
            inner: Mutex::default(),
            changed: Notify::new(),
            cfg: arc_swap::ArcSwap::from_pointee(cfg),
            load: Mutex::new((0.0, 0.0)),
            next_id,
        }
    }

    fn resources_ok(&self) -> bool {
        let (cpu, mem) = *self.load.lock();
        let cfg = self.cfg.load();
        cpu < cfg.cpu_limit_percent && mem < cfg.memory_limit_percent
    }

    /// Asks for a slot: running when one is free and resources allow, else queued; a full
    /// queue is `Overloaded` (429).
    pub fn request(&self, crew_id: &str) -> Result<Admission> {
        if crew_id.is_empty() || crew_id.len() > 256 || crew_id.chars().any(char::is_control) {
            return Err(Error::invalid("crew_id must be 1 to 256 bytes without control characters"));
        }
        let now = now_ms();
        let mut inner = self.inner.lock();
        let expired = self.expire_locked(&mut inner, now);
        keep_locked(&mut inner, expired);
        let id = (self.next_id)();
        let cfg = self.cfg.load_full();
        let mut e = Execution::queued(id, crew_id, now, now + cfg.lease.as_millis() as i64);
        if inner.queue.is_empty() && inner.running < cfg.max_concurrent && self.resources_ok() {
            start(&mut inner, &mut e, now);
            inner.executions.insert(id, e.clone());
            return Ok(Admission::Running(e));
        }
        if inner.queue.len() >= cfg.queue_capacity {
            inner.rejected += 1;
            return Err(Error::QueueFull(format!(
                "the execution queue is full ({} waiting)",
                inner.queue.len()
            )));
        }
        inner.queue.push_back(id);
        e.position = Some(inner.queue.len());
        inner.executions.insert(id, e.clone());
        Ok(Admission::Queued(e))
    }

    /// A live execution, or a finished or expired one whose profile is not stored yet (the
    /// store has the others).
    pub fn get(&self, id: u64) -> Result<Execution> {
        let mut inner = self.inner.lock();
        let pos = inner.queue.iter().position(|q| *q == id).map(|p| p + 1);
        if let Some(e) = inner.executions.get_mut(&id) {
            e.position = pos;
            return Ok(e.clone());
        }
        let pending = inner.unstored.iter().rev().find(|e| e.id == id);
        pending.cloned().ok_or_else(|| Error::NotFound(format!("no execution {id}")))
    }

    /// Renews the lease of a queued or running execution.
    pub fn heartbeat(&self, id: u64) -> Result<Execution> {
        let lease = self.cfg.load().lease.as_millis() as i64;
        {
            let mut inner = self.inner.lock();
            let e =
                inner.executions.get_mut(&id).ok_or_else(|| Error::NotFound(format!("no execution {id}")))?;
            if !matches!(e.state, ExecState::Queued | ExecState::Running) {
                return Err(Error::Conflict(format!("execution {id} is {:?}", e.state)));
            }
            e.lease_expires_ms = now_ms() + lease;
        }
        self.get(id)
    }

    pub fn add_stage(&self, id: u64, stage: Stage) -> Result<Execution> {
        // At most a year: longer is no stage's duration, and 1e308 made the window's average
        // infinite (answered as null).
        if stage.name.is_empty()
            || stage.name.len() > 128
            || !(0.0..=MAX_STAGE_MS).contains(&stage.duration_ms)
        {
            return Err(Error::invalid(
                "a stage needs a name (1 to 128 bytes) and a duration_ms from 0 to a year (31,536,000,000)",
            ));
        }
        {
            let mut inner = self.inner.lock();
            let e =
                inner.executions.get_mut(&id).ok_or_else(|| Error::NotFound(format!("no execution {id}")))?;
            if e.state != ExecState::Running {
                return Err(Error::Conflict(format!("execution {id} is not running")));
            }
            e.stages.push(stage);
        }
        self.get(id)
    }

    /// Finishes a running execution, or withdraws a queued one (a client that stops waiting:
    /// its status defaults to `cancelled`, and its profile keeps the time it waited); returns
    /// its profile (to store, then to report with [`Executions::stored`]) and admits the next.
    pub fn finish(&self, id: u64, status: Option<String>) -> Result<Execution> {
        let now = now_ms();
        let profile = {
            let mut inner = self.inner.lock();
            let e =
                inner.executions.get_mut(&id).ok_or_else(|| Error::NotFound(format!("no execution {id}")))?;
            let ran = match e.state {
                ExecState::Running => true,
                ExecState::Queued => false,
                _ => return Err(Error::Conflict(format!("execution {id} has ended"))),
            };
            e.state = ExecState::Finished;
            e.finished_ms = Some(now);
            e.position = None;
            if ran {
                e.run_time_ms = e.started_ms.map(|s| now - s);
            } else {
                e.queue_wait_ms = Some(now - e.created_ms);
            }
            let default = if ran { "success" } else { "cancelled" };
            e.status = Some(status.unwrap_or_else(|| default.into()));
            let profile = e.clone();
            if ran {
                inner.running -= 1;
            } else {
                inner.queue.retain(|q| *q != id);
            }
            inner.executions.remove(&id);
            // Pending until the caller has stored it ([`Executions::stored`]), so that it can be
            // read all along; if the store fails, a sampler tick stores it.
            keep_locked(&mut inner, vec![profile.clone()]);
            self.admit_locked(&mut inner, now);
            profile
        };
        self.changed.notify_waiters();
        Ok(profile)
    }

    /// Expires lapsed leases and admits whoever can run now; called on every sampler tick.
    /// Withdraws a request whose client went away while it waited: a queued one leaves the
    /// queue; one admitted in the meantime frees its slot at once, as its client never learnt
    /// its id to finish it. Nothing is stored for it.
    pub fn abandon(&self, id: u64) {
        {
            let mut inner = self.inner.lock();
            let Some(e) = inner.executions.remove(&id) else { return };
            match e.state {
                ExecState::Queued => inner.queue.retain(|q| *q != id),
                ExecState::Running => inner.running -= 1,
                _ => {}
            }
            inner.abandoned += 1;
            self.admit_locked(&mut inner, now_ms());
        }
        self.changed.notify_waiters();
    }

    /// Returns the profiles to store: those waiting (see [`Executions::keep_unstored`]) and
    /// those this tick expired.
    pub fn tick(&self, cpu_percent: f64, memory_percent: f64) -> Vec<Execution> {
        *self.load.lock() = (cpu_percent, memory_percent);
        let now = now_ms();
        let expired = {
            let mut inner = self.inner.lock();
            let mut expired: Vec<Execution> = std::mem::take(&mut inner.unstored).into();
            expired.extend(self.expire_locked(&mut inner, now));
            self.admit_locked(&mut inner, now);
            expired
        };
        self.changed.notify_waiters();
        expired
    }

    fn expire_locked(&self, inner: &mut Inner, now: i64) -> Vec<Execution> {
        let lapsed: Vec<u64> =
            inner.executions.values().filter(|e| e.lease_expires_ms <= now).map(|e| e.id).collect();
        let mut out = Vec::new();
        for id in lapsed {
            if let Some(mut e) = inner.executions.remove(&id) {
                if e.state == ExecState::Running {
                    inner.running -= 1;
                }
                inner.queue.retain(|q| *q != id);
                e.state = ExecState::Expired;
                e.finished_ms = Some(now);
                inner.expired += 1;
                log::warn!("execution {} of crew {:?} lost its lease", e.id, e.crew_id);
                out.push(e);
            }
        }
        if !out.is_empty() {
            self.admit_locked(inner, now);
        }
        out
    }

    fn admit_locked(&self, inner: &mut Inner, now: i64) {
        while inner.running < self.cfg.load().max_concurrent && self.resources_ok() {
            let Some(id) = inner.queue.pop_front() else { break };
            if let Some(mut e) = inner.executions.remove(&id) {
                start(inner, &mut e, now);
                inner.executions.insert(id, e);
            }
        }
    }

    /// A profile is stored: it no longer waits.
    pub fn stored(&self, id: u64) {
        self.inner.lock().unstored.retain(|e| e.id != id);
    }

    /// Keeps profiles whose store failed, to be stored on a later tick (at most
    /// [`MAX_UNSTORED`]; the oldest go first).
    pub fn keep_unstored(&self, profiles: Vec<Execution>) {
        keep_locked(&mut self.inner.lock(), profiles);
    }

    pub fn stats(&self) -> serde_json::Value {
        let inner = self.inner.lock();
        serde_json::json!({
            "running": inner.running,
            "max_concurrent": self.cfg.load().max_concurrent,
            "waiting": inner.queue.len(),
            "queue_capacity": self.cfg.load().queue_capacity,
            "admitted": inner.admitted,
            "rejected": inner.rejected,
            "expired": inner.expired,
            "abandoned": inner.abandoned,
            "profiles_pending": inner.unstored.len(),
            "profiles_dropped": inner.dropped_profiles,
            "average_wait_ms": if inner.admitted == 0 { 0.0 } else { inner.total_wait_ms as f64 / inner.admitted as f64 },
        })
    }

    pub fn config(&self) -> Arc<ExecutionConfig> {
        self.cfg.load_full()
    }

    /// New limits (a reload): more slots or a higher CPU or memory limit admit waiting
    /// executions at once; fewer slots stop no running one; a new lease applies from each
    /// execution's next renewal; a smaller queue refuses only new ones.
    pub fn set_config(&self, cfg: ExecutionConfig) {
        self.cfg.store(Arc::new(cfg));
        let mut inner = self.inner.lock();
        let waiting = inner.queue.len();
        self.admit_locked(&mut inner, now_ms());
        if inner.queue.len() < waiting {
            self.changed.notify_waiters();
        }
    }
}

fn start(inner: &mut Inner, e: &mut Execution, now: i64) {
    e.state = ExecState::Running;
    e.position = None;
    e.started_ms = Some(now);
    e.queue_wait_ms = Some(now - e.created_ms);
    inner.running += 1;
    inner.admitted += 1;
    inner.total_wait_ms += now - e.created_ms;
}

/// Profiles that may wait to be stored; beyond it the oldest are dropped (and counted).
pub const MAX_UNSTORED: usize = 10_000;

fn keep_locked(inner: &mut Inner, profiles: Vec<Execution>) {
    inner.unstored.extend(profiles);
    while inner.unstored.len() > MAX_UNSTORED {
        inner.unstored.pop_front();
        inner.dropped_profiles += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, queue: usize) -> Executions {
        let ids = std::sync::atomic::AtomicU64::new(1);
        let next = Box::new(move || ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Executions::new(
            ExecutionConfig {
                max_concurrent: max,
                queue_capacity: queue,
                cpu_limit_percent: 90.0,
                memory_limit_percent: 85.0,
                lease: Duration::from_secs(60),
            },
            next,
        )
    }

    /// A reload that adds slots admits the executions waiting for them at once, in order; one
    /// that takes slots away stops none that runs.
    #[test]
    fn new_limits_admit_waiting_executions_at_once() {
        let x = slots(1, 5);
        let Ok(Admission::Running(a)) = x.request("c") else { panic!("a free slot") };
        let queued: Vec<u64> = (0..3)
            .map(|_| match x.request("c") {
                Ok(Admission::Queued(e)) => e.id,
                _ => panic!("the one slot is taken"),
            })
            .collect();
        let more = ExecutionConfig { max_concurrent: 3, ..(*x.config()).clone() };
        x.set_config(more);
        let states: Vec<ExecState> = queued.iter().map(|id| x.get(*id).unwrap().state).collect();
        assert_eq!(states, [ExecState::Running, ExecState::Running, ExecState::Queued]);
        assert_eq!((x.stats()["running"].clone(), x.stats()["max_concurrent"].clone()), (3.into(), 3.into()));
        x.set_config(ExecutionConfig { max_concurrent: 1, ..(*x.config()).clone() });
        assert_eq!(x.get(a.id).unwrap().state, ExecState::Running, "fewer slots stop no running one");
        x.finish(a.id, None).unwrap();
        assert_eq!(x.get(queued[2]).unwrap().state, ExecState::Queued, "two still run in one slot");
    }

    #[test]
    fn a_finished_execution_can_be_read_until_its_profile_is_stored() {
        let x = slots(1, 1);
        let Ok(Admission::Running(e)) = x.request("c") else { panic!("a free slot") };
        x.finish(e.id, Some("done".into())).unwrap();
        // Between the finish and the store, a read used to find nothing (404).
        let pending = x.get(e.id).unwrap();
        assert_eq!((pending.state, pending.status.as_deref()), (ExecState::Finished, Some("done")));
        assert_eq!(x.stats()["profiles_pending"], 1);
        x.stored(e.id);
        assert!(matches!(x.get(e.id), Err(Error::NotFound(_))), "the store has it now");
        assert_eq!(x.stats()["profiles_pending"], 0);
        // Not stored (the store failed): the next tick hands it to the sampler.
        let Ok(Admission::Running(f)) = x.request("c") else { panic!("a free slot") };
        x.finish(f.id, None).unwrap();
        let to_store: Vec<u64> = x.tick(0.0, 0.0).iter().map(|e| e.id).collect();
        assert_eq!(to_store, vec![f.id]);
    }

    #[test]
    fn fifo_admission_and_a_full_queue() {
        let x = slots(2, 2);
        let ids: Vec<(u64, bool)> = (0..4)
            .map(|_| match x.request("c").unwrap() {
                Admission::Running(e) => (e.id, true),
                Admission::Queued(e) => (e.id, false),
            })
            .collect();
        assert_eq!(ids.iter().filter(|i| i.1).count(), 2);
        assert!(matches!(x.request("c"), Err(Error::QueueFull(_))));
        assert_eq!(x.get(ids[3].0).unwrap().position, Some(2));
        x.finish(ids[0].0, None).unwrap();
        assert_eq!(x.get(ids[2].0).unwrap().state, ExecState::Running, "first in line goes first");
        assert_eq!(x.get(ids[3].0).unwrap().position, Some(1));
    }

    #[test]
    fn high_cpu_holds_admission_until_it_drops() {
        let x = slots(5, 5);
        x.tick(95.0, 10.0);
        let Admission::Queued(e) = x.request("c").unwrap() else { panic!("admitted under high CPU") };
        x.tick(50.0, 10.0);
        assert_eq!(x.get(e.id).unwrap().state, ExecState::Running);
    }
}
