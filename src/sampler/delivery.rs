//! Alert delivery: the `perfd-notifier` thread sends firing and resolved alerts to an
//! Alertmanager (`POST /api/v2/alerts`, the format Prometheus sends) or any receiver of the same
//! JSON, when `alerts.notify_url` is set.
//!
//! After each evaluation the sampler hands the alerts firing now to the thread
//! ([`Notice`]). An alert is a threshold at a level: a threshold going from warning to critical
//! resolves its warning alert and fires a critical one, as two Prometheus rules with a `severity`
//! label would. What is sent is decided by [`Delivery`]: every unsilenced firing alert whenever
//! one is new or one the receiver holds has resolved, and again every `resend_interval` (each
//! firing alert says it ends four intervals later, so an Alertmanager lets it lapse if perfd
//! stops sending); a resolved one is sent once, with its end. A failed delivery (no connection,
//! a timeout, any answer but 2xx) is retried after 1 s, 2 s, … up to 30 s, with the newest state,
//! and logged once until one succeeds. Silenced alerts are not sent; one silenced while the
//! receiver holds it is neither re-sent nor resolved until its silence ends or it resolves.

use super::FiringAlert;
use super::alerts::Level;
use crossbeam_channel::{Receiver, Sender, after, never, select};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The alerts firing after one evaluation, silenced ones included.
pub type Notice = Vec<FiringAlert>;

/// Snapshots waiting for the thread; one that finds the queue full is dropped (the next tick's
/// supersedes it).
const NOTICE_QUEUE: usize = 16;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// An alert as the receiver knows it: threshold, level and name (a renamed threshold's alert is
/// another alert, as its `alertname` label differs).
type Key = (u64, Level, String);

fn key(a: &FiringAlert) -> Key {
    (a.threshold_id, a.level, a.name.clone())
}

/// What the receiver holds and what it needs next. Pure: the thread supplies time and I/O.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Alerts the receiver holds as firing, as last delivered.
    told: BTreeMap<Key, FiringAlert>,
    /// The newest evaluation's alerts, silenced ones included.
    current: Vec<FiringAlert>,
    /// When the last delivery succeeded (unix ms).
    last_sent_ms: Option<i64>,
}

/// One delivery: every unsilenced firing alert, and the resolved ones the receiver still holds.
#[derive(Debug, Clone)]
pub struct Batch {
    pub firing: Vec<FiringAlert>,
    pub resolved: Vec<FiringAlert>,
    pub at_ms: i64,
}

impl Delivery {
    pub fn update(&mut self, current: Notice) {
        self.current = current;
    }

    /// What to send at `now_ms`, if anything is due.
    pub fn due(&self, now_ms: i64, resend_ms: i64) -> Option<Batch> {
        let present: BTreeSet<Key> = self.current.iter().map(key).collect();
        let resolved: Vec<FiringAlert> =
            self.told.iter().filter(|(k, _)| !present.contains(*k)).map(|(_, a)| a.clone()).collect();
        let firing: Vec<FiringAlert> = self.current.iter().filter(|a| !a.silenced).cloned().collect();
        let new = firing.iter().any(|a| !self.told.contains_key(&key(a)));
        let resend = !firing.is_empty() && self.last_sent_ms.is_none_or(|t| now_ms - t >= resend_ms);
        (new || resend || !resolved.is_empty()).then_some(Batch { firing, resolved, at_ms: now_ms })
    }

    /// `batch` reached the receiver.
    pub fn delivered(&mut self, batch: &Batch) {
        for a in &batch.resolved {
            self.told.remove(&key(a));
        }
        for a in &batch.firing {
            self.told.insert(key(a), a.clone());
        }
        self.last_sent_ms = Some(batch.at_ms);
    }

    /// When a resend falls due if nothing changes (unix ms).
    fn next_resend_ms(&self, resend_ms: i64) -> Option<i64> {
        let any_live = self.current.iter().any(|a| !a.silenced);
        self.last_sent_ms.filter(|_| any_live).map(|t| t + resend_ms)
    }
}

/// Delivery figures for `GET /api/v1/alerts` and `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// The receiver's address without credentials or query.
    pub receiver: String,
    pub deliveries: AtomicU64,
    pub failures: AtomicU64,
    pub alerts_sent: AtomicU64,
    status: Mutex<Status>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Status {
    last_delivery_ms: Option<i64>,
    failing_since_ms: Option<i64>,
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryStatsSnapshot {
    pub receiver: String,
    pub deliveries: u64,
    pub failures: u64,
    pub alerts_sent: u64,
    #[serde(flatten)]
    status: Status,
}

impl DeliveryStats {
    pub fn snapshot(&self) -> DeliveryStatsSnapshot {
        DeliveryStatsSnapshot {
            receiver: self.receiver.clone(),
            deliveries: self.deliveries.load(Relaxed),
            failures: self.failures.load(Relaxed),
            alerts_sent: self.alerts_sent.load(Relaxed),
            status: self.status.lock().clone(),
        }
    }

    pub fn failing(&self) -> bool {
        self.status.lock().failing_since_ms.is_some()
    }
}

/// The certificates of a PEM file (at least one), for `alerts.notify_ca_file`.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c.to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Owns the `perfd-notifier` thread; the sampler holds [`NotifierHandle::sender`].
pub struct NotifierHandle {
    tx: Sender<Notice>,
    stop: Option<Sender<()>>,
    join: Option<JoinHandle<()>>,
    pub stats: Arc<DeliveryStats>,
}

impl NotifierHandle {
    /// `generator` is perfd's own base URL, for each alert's `generatorURL`.
    pub fn start(
        config: &crate::config::AlertsConfig,
        url: &str,
        generator: String,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(NOTICE_QUEUE);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let roots = match &config.notify_ca_file {
            Some(path) => Some(read_ca_file(path).map_err(std::io::Error::other)?),
            None => None,
        };
        let target = super::receiver::AlertReceiver::new(
            url,
            config.notify_timeout,
            generator,
            config.resend_interval,
            roots,
        );
        let stats = Arc::new(DeliveryStats { receiver: target.shown.clone(), ..Default::default() });
        let thread_stats = stats.clone();
        let resend_ms = config.resend_interval.as_millis() as i64;
        let join = std::thread::Builder::new()
            .name("perfd-notifier".into())
            .spawn(move || run(&target, resend_ms, &rx, &stopped, &thread_stats))?;
        Ok(NotifierHandle { tx, stop: Some(stop), join: Some(join), stats })
    }

    pub fn sender(&self) -> Sender<Notice> {
        self.tx.clone()
    }

    /// Stops the thread; a delivery under way ends within `notify_timeout`. Idempotent.
    pub fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(j) = self.join.take()
            && j.join().is_err()
        {
            log::error!("notifier thread panicked");
        }
    }
}

fn run(
    target: &super::receiver::AlertReceiver,
    resend_ms: i64,
    notices: &Receiver<Notice>,
    stopped: &Receiver<()>,
    stats: &DeliveryStats,
) {
    let mut n = Notifier { target, resend_ms, stats, delivery: Delivery::default(), retry: None };
    loop {
        let timer = n.wake().map_or_else(never, after);
        select! {
            recv(stopped) -> _ => return,
            recv(notices) -> notice => match notice {
                // Only the newest evaluation matters.
                Ok(first) => n.delivery.update(notices.try_iter().last().unwrap_or(first)),
                Err(_) => return,
            },
            recv(timer) -> _ => {}
        }
        n.attempt();
    }
}

/// The thread's state between wake-ups.
struct Notifier<'a> {
    target: &'a super::receiver::AlertReceiver,
    resend_ms: i64,
    stats: &'a DeliveryStats,
    delivery: Delivery,
    /// After a failure: when to try again, and the wait after that.
    retry: Option<(Instant, Duration)>,
}

impl Notifier<'_> {
    /// How long until a retry or a resend is due; `None`: only a notice can make one due.
    fn wake(&self) -> Option<Duration> {
        match self.retry {
            Some((at, _)) => Some(at.saturating_duration_since(Instant::now())),
            None => self
                .delivery
                .next_resend_ms(self.resend_ms)
                .map(|at| Duration::from_millis(u64::try_from(at - crate::model::now_ms()).unwrap_or(0))),
        }
    }

    /// Sends what is due, unless a retry is waiting for its time.
    fn attempt(&mut self) {
        if self.retry.is_some_and(|(at, _)| Instant::now() < at) {
            return;
        }
        let now = crate::model::now_ms();
        let Some(batch) = self.delivery.due(now, self.resend_ms) else {
            // What failed to go out no longer needs to (it fired and ended unseen): no retry
            // is due, and the status stays failing until a delivery succeeds.
            self.retry = None;
            return;
        };
        let stats = self.stats;
        match self.target.send(&batch) {
            Ok(()) => {
                self.delivery.delivered(&batch);
                self.retry = None;
                stats.deliveries.fetch_add(1, Relaxed);
                stats.alerts_sent.fetch_add((batch.firing.len() + batch.resolved.len()) as u64, Relaxed);
                let mut s = stats.status.lock();
                if s.failing_since_ms.take().is_some() {
                    log::info!("alerts reach {} again", self.target.shown);
                }
                s.last_delivery_ms = Some(now);
            }
            Err(e) => {
                let wait = self.retry.map_or(FIRST_RETRY, |(_, w)| (w * 2).min(MAX_RETRY));
                self.retry = Some((Instant::now() + wait, wait));
                stats.failures.fetch_add(1, Relaxed);
                let mut s = stats.status.lock();
                if s.failing_since_ms.is_none() {
                    log::warn!(
                        "alerts cannot be sent to {}: {e}; retrying until they are",
                        self.target.shown
                    );
                    s.failing_since_ms = Some(now);
                }
                s.last_error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: u64, level: Level, silenced: bool) -> FiringAlert {
        FiringAlert {
            threshold_id: id,
            name: format!("t{id}"),
            selector: "m".into(),
            level,
            value: Some(1.0),
            since_ms: 0,
            silenced,
        }
    }

    type Ids = Vec<(u64, Level)>;

    fn ids(alerts: &[FiringAlert]) -> Ids {
        alerts.iter().map(|a| (a.threshold_id, a.level)).collect()
    }

    /// Sends what is due at `now` and reports it as delivered.
    fn send(d: &mut Delivery, now: i64) -> Option<(Ids, Ids)> {
        let b = d.due(now, 1000)?;
        d.delivered(&b);
        Some((ids(&b.firing), ids(&b.resolved)))
    }

    #[test]
    fn new_alerts_are_sent_at_once_then_every_resend_interval() {
        let mut d = Delivery::default();
        assert!(d.due(0, 1000).is_none(), "nothing firing, nothing told");
        d.update(vec![alert(1, Level::Warning, false)]);
        assert_eq!(send(&mut d, 0), Some((vec![(1, Level::Warning)], vec![])));
        assert_eq!(send(&mut d, 999), None);
        assert_eq!(d.next_resend_ms(1000), Some(1000));
        assert_eq!(send(&mut d, 1000), Some((vec![(1, Level::Warning)], vec![])));
        d.update(vec![alert(1, Level::Warning, false), alert(2, Level::Critical, false)]);
        assert_eq!(
            send(&mut d, 1001),
            Some((vec![(1, Level::Warning), (2, Level::Critical)], vec![])),
            "a new alert sends every firing one"
        );
    }

    #[test]
    fn a_level_change_resolves_the_old_level_and_fires_the_new() {
        let mut d = Delivery::default();
        d.update(vec![alert(1, Level::Warning, false)]);
        send(&mut d, 0);
        d.update(vec![alert(1, Level::Critical, false)]);
        assert_eq!(send(&mut d, 10), Some((vec![(1, Level::Critical)], vec![(1, Level::Warning)])));
        d.update(vec![]);
        assert_eq!(send(&mut d, 20), Some((vec![], vec![(1, Level::Critical)])));
        assert_eq!(send(&mut d, 5000), None, "nothing firing: no resends");
        assert_eq!(d.next_resend_ms(1000), None);
    }

    #[test]
    fn silenced_alerts_are_not_sent_nor_resolved_while_silenced() {
        let mut d = Delivery::default();
        d.update(vec![alert(1, Level::Warning, true)]);
        assert_eq!(send(&mut d, 0), None, "silenced from the start: never sent");
        d.update(vec![alert(1, Level::Warning, false)]);
        assert_eq!(send(&mut d, 1), Some((vec![(1, Level::Warning)], vec![])));
        d.update(vec![alert(1, Level::Warning, true)]);
        assert_eq!(send(&mut d, 5000), None, "silenced: not re-sent, not resolved");
        d.update(vec![]);
        assert_eq!(send(&mut d, 5001), Some((vec![], vec![(1, Level::Warning)])), "its end is sent");
    }

    /// An alert that fired and ended while the receiver was failing left a retry due forever:
    /// nothing was due any more, so each wake-up found the retry's time passed and woke again at
    /// once, a busy loop until the next alert.
    #[test]
    fn a_retry_with_nothing_left_to_send_is_dropped() {
        let target = super::super::receiver::AlertReceiver::new(
            "http://127.0.0.1:1/api/v2/alerts",
            Duration::from_secs(1),
            "http://p".into(),
            Duration::from_secs(60),
            None,
        );
        let stats = DeliveryStats::default();
        let mut n = Notifier {
            target: &target,
            resend_ms: 60_000,
            stats: &stats,
            delivery: Delivery::default(),
            retry: None,
        };
        n.delivery.update(vec![alert(1, Level::Warning, false)]);
        n.attempt();
        assert!(n.retry.is_some() && stats.failing(), "nothing listens on port 1");
        assert_eq!(stats.failures.load(Relaxed), 1);
        n.delivery.update(vec![]);
        n.retry = Some((Instant::now(), FIRST_RETRY));
        n.attempt();
        assert_eq!((n.retry, n.wake()), (None, None), "nothing to send: sleep until a notice");
        assert_eq!(stats.failures.load(Relaxed), 1, "and nothing was tried");
    }

    #[test]
    fn an_undelivered_batch_is_due_again_with_the_newest_state() {
        let mut d = Delivery::default();
        d.update(vec![alert(1, Level::Warning, false)]);
        send(&mut d, 0);
        d.update(vec![]);
        assert!(d.due(10, 1000).is_some(), "the end is due");
        // Not delivered; meanwhile it fires again at the same level: the receiver holds it as
        // firing already, so only the resend timer sends it.
        d.update(vec![alert(1, Level::Warning, false)]);
        assert!(d.due(20, 1000).is_none());
        d.update(vec![alert(2, Level::Critical, false)]);
        let b = d.due(30, 1000).expect("due");
        assert_eq!(
            (ids(&b.firing), ids(&b.resolved)),
            (vec![(2, Level::Critical)], vec![(1, Level::Warning)])
        );
    }
}
