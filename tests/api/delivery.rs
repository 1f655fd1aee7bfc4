//! Alert delivery to a real HTTP receiver on loopback (Alertmanager's `POST /api/v2/alerts`):
//! firing, a level change, resends, a receiver that fails and comes back.

use crate::helpers::TestServer;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// One request the receiver took: path, `Authorization`, body.
#[derive(Debug, Clone)]
struct Posted {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// A minimal HTTP/1.1 receiver (keep-alive, `Content-Length` bodies) answering `status`.
struct AlertSink {
    addr: std::net::SocketAddr,
    posted: Arc<Mutex<Vec<Posted>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl AlertSink {
    fn start() -> AlertSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let sink = AlertSink {
            addr: listener.local_addr().expect("addr"),
            posted: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            stop: Arc::default(),
        };
        let (posted, status, stop) = (sink.posted.clone(), sink.status.clone(), sink.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (posted, status) = (posted.clone(), status.clone());
                std::thread::spawn(move || serve(conn, &posted, &status));
            }
        });
        sink
    }

    /// Requests so far that hold an alert of threshold `id`.
    fn posts_for(&self, id: u64) -> Vec<Posted> {
        let posted = self.posted.lock();
        posted.iter().filter(|p| !alerts_of(&p.body, id).is_empty()).cloned().collect()
    }
}

impl Drop for AlertSink {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, posted: &Mutex<Vec<Posted>>, status: &AtomicU16) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut length, mut authorization) = (0, None);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        posted.lock().push(Posted { path, authorization, body });
        let answer = format!("HTTP/1.1 {} X\r\ncontent-length: 4\r\n\r\nnope", status.load(Relaxed));
        if conn.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// An alert's `threshold_id` label (a string, as every label).
fn threshold_of(alert: &Value) -> Option<u64> {
    alert["labels"]["threshold_id"].as_str().and_then(|s| s.parse().ok())
}

/// The alerts of threshold `id` in one posted body: (severity, endsAt in unix ms).
fn alerts_of(body: &Value, id: u64) -> Vec<(String, i64)> {
    let all = body.as_array().cloned().unwrap_or_default();
    all.iter()
        .filter(|a| threshold_of(a) == Some(id))
        .map(|a| {
            let ends = a["endsAt"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
            let ends = ends.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            (
                a["labels"]["severity"].as_str().unwrap_or("").to_owned(),
                ends.map_or(0, |d| d.as_millis() as i64),
            )
        })
        .collect()
}

/// Polls (bounded) until `check` holds, failing with what was last seen.
async fn until<T: std::fmt::Debug>(
    what: &str,
    mut look: impl AsyncFnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = look().await;
        if check(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}: last seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create(s: &TestServer) -> u64 {
    let t = json!({"name": "deep queue", "selector": "crew_queue_depth", "aggregation": "last", "window": "1m",
                   "comparison": ">", "warning": 10, "critical": 20, "clear": 5, "for": "0s"});
    let (status, body) = s.post_json("/api/v1/alerts/thresholds", &t).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_u64().expect("id")
}

async fn breach(s: &TestServer, depth: u32) {
    let line = format!("crew_queue depth={depth} {}", perfd::model::now_ms());
    assert_eq!(s.post("/write?precision=ms", line).await.status(), 204);
    s.daemon().sampler.tick();
}

#[tokio::test]
async fn alerts_reach_an_alertmanager_receiver_and_are_resent_and_retried() {
    let sink = AlertSink::start();
    let s = TestServer::start_with(|c| {
        c.alerts.notify_url = Some(format!("http://perfd:s3cret@{}/api/v2/alerts", sink.addr));
        c.alerts.resend_interval = Duration::from_millis(300);
    });
    let id = create(&s).await;
    breach(&s, 15).await;
    let posts = until("the warning is sent", async || sink.posts_for(id), |p| !p.is_empty()).await;
    let first = &posts[0];
    assert_eq!(first.path, "/api/v2/alerts");
    assert_eq!(first.authorization.as_deref(), Some("Basic cGVyZmQ6czNjcmV0"), "perfd:s3cret");
    let alert = first.body.as_array().unwrap().iter().find(|a| threshold_of(a) == Some(id));
    let alert = alert.expect("the alert");
    assert_eq!(alert["labels"]["alertname"], "deep queue");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["job"], "perfd");
    assert_eq!(alert["annotations"]["value"], "15");
    assert_eq!(alert["generatorURL"], format!("{}/api/v1/alerts/thresholds/{id}", s.base));
    let now = perfd::model::now_ms();
    let (_, ends) = alerts_of(&first.body, id)[0].clone();
    assert!(ends > now + 1000, "a firing alert ends four resend intervals on: {ends} vs {now}");

    // Warning to critical: the warning resolves (ends now) and the critical fires.
    // Counted before the tick: the notifier may post the change before the tick returns.
    let seen = sink.posted.lock().len();
    breach(&s, 25).await;
    let changed = until(
        "the level change is sent",
        async || sink.posted.lock()[seen..].iter().map(|p| alerts_of(&p.body, id)).collect::<Vec<_>>(),
        |bodies| bodies.iter().any(|a| a.iter().any(|(sev, _)| sev == "critical")),
    )
    .await;
    let change = changed.iter().find(|a| a.iter().any(|(sev, _)| sev == "critical")).unwrap();
    let now = perfd::model::now_ms();
    assert!(change.iter().any(|(sev, ends)| sev == "critical" && *ends > now), "{change:?}");
    assert!(change.iter().any(|(sev, ends)| sev == "warning" && *ends <= now), "{change:?}");

    // Resent without a tick, every 300 ms.
    let seen = sink.posts_for(id).len();
    until("a resend", async || sink.posts_for(id).len(), |n| *n >= seen + 2).await;

    // The receiver fails: counted, shown, retried; once it answers, the end gets through.
    sink.status.store(503, Relaxed);
    breach(&s, 1).await;
    let (_, body) = until(
        "the failure is shown",
        async || s.get_json("/api/v1/alerts").await,
        |(_, b)| b["delivery"]["failures"].as_u64() >= Some(1),
    )
    .await;
    let delivery = &body["delivery"];
    assert!(delivery["failing_since_ms"].as_i64().is_some(), "{delivery}");
    assert!(delivery["last_error"].as_str().unwrap_or("").contains("503"), "{delivery}");
    assert_eq!(delivery["receiver"], format!("http://{}/api/v2/alerts", sink.addr), "no credentials shown");
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("perfd_alert_delivery_failing 1"), "{metrics}");
    s.daemon().sampler.tick();
    let (_, health) = s.get_json("/api/v1/metrics/health").await;
    let advice = health["recommendations"].as_array().unwrap().iter().filter_map(|r| r.as_str());
    assert!(advice.clone().any(|r| r.starts_with("alert_delivery")), "{health}");
    // Counted before the receiver is back: a retry may come at once.
    let seen = sink.posted.lock().len();
    sink.status.store(200, Relaxed);
    until(
        "the end is delivered after the failure",
        async || {
            let posted = sink.posted.lock();
            posted[seen..].iter().flat_map(|p| alerts_of(&p.body, id)).collect::<Vec<_>>()
        },
        |a| a.iter().any(|(sev, ends)| sev == "critical" && *ends <= perfd::model::now_ms()),
    )
    .await;
    let (_, body) = until(
        "delivery recovers",
        async || s.get_json("/api/v1/alerts").await,
        |(_, b)| b["delivery"]["failing_since_ms"].is_null(),
    )
    .await;
    assert!(body["delivery"]["deliveries"].as_u64() >= Some(3), "{body}");
    // Resolved and delivered: nothing of it is sent again.
    let settled = sink.posts_for(id).len();
    breach(&s, 1).await;
    s.daemon().sampler.tick();
    let (_, body) = s.get_json("/api/v1/alerts").await;
    assert!(!body["alerts"].as_array().unwrap().iter().any(|a| a["threshold_id"] == id));
    assert_eq!(sink.posts_for(id).len(), settled, "nothing more about a resolved alert");
}

#[tokio::test]
async fn without_a_receiver_nothing_is_sent_and_delivery_is_null() {
    let s = TestServer::start();
    let (_, body) = s.get_json("/api/v1/alerts").await;
    assert!(body["delivery"].is_null(), "{body}");
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("perfd_alert_delivery"), "no delivery figures without a receiver");
}
