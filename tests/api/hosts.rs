//! What a web page can make a browser send to a perfd on 127.0.0.1 is refused (`api::hosts`):
//! a `Host` of a public name (DNS rebinding) and an `Origin` from elsewhere (cross-site
//! requests), on the hit path as in the App; clients that are not browsers are not affected.

use crate::helpers::TestServer;
use crate::hitpath::{Raw, body, status};

fn request(method: &str, path: &str, headers: &str, body: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
}

fn answer(s: &TestServer, request: &str) -> String {
    let mut c = Raw::connect(s);
    c.send(request.as_bytes());
    c.answer().expect("an answer")
}

#[tokio::test]
async fn pages_elsewhere_are_refused_and_clients_are_not() {
    let s = TestServer::start_with(|c| c.http.allowed_hosts = vec!["perfd.internal".into()]);
    let r = s.client.put(s.url("/api/v1/cache/crew_config/k")).body("secret").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let entry = "/api/v1/cache/crew_config/k";
    let get = |host: &str, extra: &str| format!("GET {entry} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    let port = s.daemon().addr.port();
    // Hits (the hit path) and the App's routes alike.
    for (req, want) in [
        (get(&format!("127.0.0.1:{port}"), ""), "200"),
        (get(&format!("localhost:{port}"), ""), "200"),
        (get("[::1]", ""), "200"),
        (get(&format!("perfd.internal:{port}"), ""), "200"),
        (get("evil.example", ""), "403"),
        (get(&format!("evil.example:{port}"), ""), "403"),
        (get("127.0.0.1.nip.io", ""), "403"),
        (get("localhost", "Origin: http://localhost:3000\r\n"), "200"),
        (get("localhost", "Origin: https://evil.example\r\n"), "403"),
        (get("localhost", "Origin: null\r\n"), "403"),
        ("GET /api/v1/metrics/health HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned(), "403"),
        (format!("GET {entry} HTTP/1.0\r\n\r\n"), "200"),
    ] {
        let a = answer(&s, &req);
        assert_eq!(status(&a), want, "{req}: {a}");
        if want == "200" {
            assert_eq!(body(&a), "secret");
        } else {
            assert!(body(&a).contains(r#""code":"forbidden""#) && !a.contains("secret"), "{a}");
        }
    }
    let a = answer(&s, &get("evil.example", ""));
    assert!(body(&a).contains("http.allowed_hosts"), "{a}");

    // A form a page posts (a simple request, no preflight) changes nothing.
    let line = format!("from_page v=1 {}\n", perfd::model::now_ms());
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    for origin in ["https://evil.example", "null", "http://10.1.2.3"] {
        let h = format!("{host}Origin: {origin}\r\nContent-Type: text/plain\r\n");
        let a = answer(&s, &request("POST", "/write?precision=ms", &h, &line));
        assert_eq!(status(&a), "403", "{a}");
        assert!(body(&a).contains("Origin"), "{a}");
        let a = answer(&s, &request("POST", "/api/v1/admin/backup", &h, ""));
        assert_eq!(status(&a), "403", "{a}");
    }
    s.flush();
    let (_, found) = s.get_json("/api/v1/series?match=from_page_v").await;
    assert_eq!(found["series"].as_array().map(Vec::len), Some(0), "{found}");
    let (_, list) = s.get_json("/api/v1/admin/backups").await;
    assert_eq!(list["backups"].as_array().map(Vec::len), Some(0), "{list}");
    // The same from a page on this machine, and from a client with no Origin at all.
    let h = format!("{host}Origin: http://localhost:3000\r\n");
    assert_eq!(status(&answer(&s, &request("POST", "/write?precision=ms", &h, &line))), "204");
    assert_eq!(status(&answer(&s, &request("POST", "/api/v1/admin/backup", &host, ""))), "201");
}

#[tokio::test]
async fn a_star_allows_any_host_and_origin() {
    let s = TestServer::start_with(|c| c.http.allowed_hosts = vec!["*".into()]);
    let a = answer(&s, "GET /api/v1/metrics/health HTTP/1.1\r\nHost: evil.example\r\nOrigin: null\r\n\r\n");
    assert_eq!(status(&a), "200", "{a}");
}
