//! A flood of malformed, truncated, oversized and gzip-bomb requests to every endpoint: each must
//! get a 4xx JSON error, the server must stay up, and data accepted before must be unchanged.

use crate::helpers::{TestServer, base_ms};
use crate::ingest::urlencode;
use std::io::Write;

/// Fixed-seed xorshift, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Valid JSON bodies; any proper, non-empty prefix of one is malformed.
const JSON_ENDPOINTS: [(&str, &str); 11] = [
    (
        "/api/v1/import",
        r#"{"metric":{"__name__":"f","a":"b"},"values":[1,2],"timestamps":[1700000000000,1700000001000]}"#,
    ),
    ("/api/v1/ingest", r#"[{"name":"f","labels":{"a":"b"},"value":1.5}]"#),
    ("/api/v1/cache/mget", r#"{"keys":[{"strategy":"crew_config","key":"a"}]}"#),
    ("/api/v1/cache/invalidate", r#"{"pattern":"crew_config:*"}"#),
    ("/api/v1/cache/warm", r#"{"entries":[{"strategy":"crew_config","key":"a","value":"x"}]}"#),
    ("/api/v1/alerts/thresholds", r#"{"name":"t","selector":"m","comparison":">","warning":1}"#),
    ("/api/v1/alerts/silences", r#"{"threshold_id":1,"until":99999999999999}"#),
    ("/api/v1/executions", r#"{"crew_id":"c"}"#),
    ("/api/v1/queries", r#"{"query":"select 1","duration_ms":1}"#),
    ("/api/v1/metrics/cache/clear", r#"{"level":"l1"}"#),
    ("/api/v1/admin/backup", r#"{}"#),
];

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// (method, path, body, gzip?) of one bad request.
fn bad_request(rng: &mut Rng, bomb: &[u8]) -> (&'static str, String, Vec<u8>, bool) {
    match rng.below(6) {
        0 => {
            let n = rng.below(300);
            let mut body = rng.bytes(n);
            body.extend_from_slice(b"\n9bad v=1\n");
            ("POST", "/write?precision=ms".into(), body, false)
        }
        1 | 2 => {
            let i = rng.below(JSON_ENDPOINTS.len());
            let (path, valid) = JSON_ENDPOINTS[i];
            // The backup endpoint takes no body; give it a malformed query instead.
            if path == "/api/v1/admin/backup" {
                return ("GET", "/api/v1/query_range?query=m{a=".into(), Vec::new(), false);
            }
            let cut = 1 + rng.below(valid.len() - 1);
            ("POST", path.into(), valid.as_bytes()[..cut].to_vec(), false)
        }
        3 => {
            let i = rng.below(10);
            ("POST", JSON_ENDPOINTS[i].0.into(), vec![b'['; 70 * 1024], false)
        }
        4 => ("POST", "/write".into(), bomb.to_vec(), true),
        _ => {
            let garbage: String =
                (0..1 + rng.below(20)).map(|_| (b'!' + (rng.next() % 90) as u8) as char).collect();
            let paths = [
                format!("/api/v1/query_range?query={{{}", urlencode(&garbage)),
                format!("/api/v1/series?match={}{{", urlencode(&garbage)),
                format!("/api/v1/cache/no_such_strategy/{}", urlencode(&garbage)),
                format!("/api/v1/alerts/thresholds/{}x", urlencode(&garbage)),
                "/api/v1/query_range?query=m&step=-1".into(),
                "/api/v1/metrics/performance?window=forever".into(),
            ];
            let i = rng.below(paths.len());
            ("GET", paths[i].clone(), Vec::new(), false)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_bad_requests_get_json_4xx_and_change_nothing() {
    let s = TestServer::start_with(|c| c.http.max_body_bytes = 64 * 1024);
    let t = base_ms();
    s.post("/write?precision=ms", format!("keep,h=a v=1 {t}\nkeep,h=a v=2 {}", t + 1)).await;
    let q = format!("query=keep_v&start={t}&end={}", t + 10);
    let before = s.points(&q).await;
    let bomb = gzip(&vec![b'1'; 8 << 20]);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let requests: Vec<_> = (0..3000).map(|_| bad_request(&mut rng, &bomb)).collect();
    for batch in requests.chunks(16) {
        let tasks: Vec<_> = batch
            .iter()
            .cloned()
            .map(|(method, path, body, gz)| {
                let (client, url) = (s.client.clone(), s.url(&path));
                tokio::spawn(async move {
                    let mut req = if method == "GET" { client.get(url) } else { client.post(url).body(body) };
                    if gz {
                        req = req.header("Content-Encoding", "gzip");
                    }
                    if method == "POST" {
                        req = req.header("Content-Type", "application/json");
                    }
                    let r = req.send().await.expect("the server answers");
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    (method, path, status, body)
                })
            })
            .collect();
        for t in tasks {
            let (method, path, status, body) = t.await.unwrap();
            assert!((400..500).contains(&status), "{method} {path:.80} → {status} {body}");
            assert!(body["error"]["code"].is_string(), "{method} {path:.80} → {status} {body}");
        }
    }
    let (status, _) = s.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(s.points(&q).await, before);
    let (_, series) = s.get_json("/api/v1/series?match=f").await;
    assert_eq!(series["count"], 0, "nothing of a rejected request was written");
}
