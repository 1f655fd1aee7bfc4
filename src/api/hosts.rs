//! Which `Host` and `Origin` a request may name: perfd's defence against web pages.
//!
//! A perfd on loopback without a token trusts whoever can connect, which a browser can too:
//! - **DNS rebinding**: a page at `evil.example` has its name re-resolved to 127.0.0.1 and then
//!   reads and writes perfd as its own origin; the requests name `Host: evil.example`. So a
//!   `Host` must be an IP address, a name without a dot (no public DNS name has none),
//!   `localhost` or a name under `.localhost`, or one of `http.allowed_hosts` (as Vite does).
//! - **Cross-site requests**: a page may send a "simple" POST (a form, `text/plain`) to
//!   127.0.0.1 without a preflight, which `/write` or a backup would take. Browsers name the page
//!   in `Origin`, so a request with an `Origin` must come from a loopback address, `localhost`
//!   (or under `.localhost`) or one of `http.allowed_hosts`; `Origin: null` (a sandboxed or
//!   local file page) is refused. Clients that are not browsers send no `Origin`.
//!
//! `http.allowed_hosts = ["*"]` turns both checks off. Off loopback (where a token is required)
//! the `Host` check applies only once `http.allowed_hosts` names the hosts: clients there reach
//! perfd by names it cannot know (a Prometheus scraping `node1.example.com:8470`).

use crate::error::{Error, Shown};
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// `http.allowed_hosts`, lowercase, without `*`.
    listed: Vec<String>,
    /// `*` was listed: neither check applies.
    any: bool,
    /// Any `Host` is taken (off loopback, with no `http.allowed_hosts`).
    any_host: bool,
}

impl HostPolicy {
    /// The policy of a perfd on loopback.
    pub fn new(allowed: &[String]) -> HostPolicy {
        HostPolicy {
            listed: allowed.iter().filter(|h| *h != "*").map(|h| h.to_ascii_lowercase()).collect(),
            any: allowed.iter().any(|h| h == "*"),
            any_host: false,
        }
    }

    /// The policy of a perfd listening on `listen` (see the module doc).
    pub fn for_listen(allowed: &[String], listen: std::net::SocketAddr) -> HostPolicy {
        HostPolicy { any_host: !listen.ip().is_loopback() && allowed.is_empty(), ..HostPolicy::new(allowed) }
    }

    /// A `Host` header's value (`name`, `name:port`, `[v6]:port`, `192.0.2.1:port`).
    pub fn host_allowed(&self, value: &[u8]) -> bool {
        if self.any || self.any_host || usual_host(value) {
            return true;
        }
        let Some(host) = host_part(value) else {
            return false;
        };
        !host.contains('.') || host.parse::<IpAddr>().is_ok() || is_localhost(host) || self.listed(host)
    }

    /// An `Origin` header's value (`scheme://host[:port]`).
    pub fn origin_allowed(&self, value: &[u8]) -> bool {
        if self.any {
            return true;
        }
        let rest = value.strip_prefix(b"http://").or_else(|| value.strip_prefix(b"https://"));
        let Some(host) = rest.and_then(host_part) else {
            return false;
        };
        host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) || is_localhost(host) || self.listed(host)
    }

    fn listed(&self, host: &str) -> bool {
        self.listed.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// The 403 for a request whose `Host` or `Origin` the policy refuses (a request without
/// `Host`, HTTP/1.0, is not checked for it).
pub fn refusal(policy: &HostPolicy, headers: &actix_web::http::header::HeaderMap) -> Option<Error> {
    use actix_web::http::header::{HOST, ORIGIN};
    if let Some(host) = headers.get(HOST).filter(|h| !policy.host_allowed(h.as_bytes())) {
        return Some(Error::Forbidden(format!(
            "Host {} is not allowed: perfd answers requests to an IP address, localhost or a name \
             in http.allowed_hosts (a guard against DNS rebinding)",
            Shown(&String::from_utf8_lossy(host.as_bytes()))
        )));
    }
    let origin = headers.get_all(ORIGIN).find(|o| !policy.origin_allowed(o.as_bytes()))?;
    Some(Error::Forbidden(format!(
        "Origin {} is not allowed: perfd takes requests from web pages only on this machine \
         (loopback, localhost) or on a host in http.allowed_hosts",
        Shown(&String::from_utf8_lossy(origin.as_bytes()))
    )))
}

/// `127.0.0.1` or `localhost`, with or without a port: what nearly every client sends, told
/// without parsing (the hit path checks every request's).
fn usual_host(value: &[u8]) -> bool {
    [&b"127.0.0.1"[..], b"localhost"].iter().any(|usual| match value.strip_prefix(*usual) {
        Some([]) => true,
        Some([b':', port @ ..]) => !port.is_empty() && port.iter().all(u8::is_ascii_digit),
        _ => false,
    })
}

fn is_localhost(host: &str) -> bool {
    let tail = host.len().checked_sub("localhost".len()).and_then(|i| host.get(i..));
    tail.is_some_and(|t| t.eq_ignore_ascii_case("localhost"))
        && (host.len() == "localhost".len() || host.as_bytes()[host.len() - "localhost".len() - 1] == b'.')
}

/// The host of `host[:port]` (brackets taken off an IPv6 literal, one trailing dot off a name);
/// `None` for anything else (an empty host, a path, a bad port, bytes that are not text).
fn host_part(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (host, port) = match text.strip_prefix('[') {
        Some(v6) => match v6.split_once(']')? {
            (host, "") => (host, None),
            (host, rest) => (host, Some(rest.strip_prefix(':')?)),
        },
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':');
    (!host.is_empty() && host.bytes().all(name_byte)).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_no_rebinding_page_can_name() {
        let p = HostPolicy::new(&["perfd.internal".into()]);
        for ok in [
            "127.0.0.1:8470",
            "127.0.0.1",
            "[::1]:8470",
            "10.1.2.3:8470",
            "localhost:8470",
            "LOCALHOST",
            "localhost.",
            "app.localhost:3000",
            "perfd",
            "perfd.internal:8470",
            "PERFD.Internal",
        ] {
            assert!(p.host_allowed(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8470",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "evillocalhost.com",
            "",
            ":8470",
            "a:b",
            "[::1",
            "[::1]x",
            "a/b",
            "a b",
        ] {
            assert!(!p.host_allowed(bad.as_bytes()), "{bad}");
        }
        assert!(!p.host_allowed(b"\xff"));
        // `notlocalhost` has no dot, so as a Host it passes; as an origin it does not.
        assert!(HostPolicy::default().host_allowed(b"notlocalhost"));
        assert!(HostPolicy::new(&["*".into()]).host_allowed(b"evil.example"));
        // Off loopback, only once names are listed; origins are checked either way.
        let lan = "10.1.2.3:8470".parse().unwrap();
        let open = HostPolicy::for_listen(&[], lan);
        assert!(
            open.host_allowed(b"node1.example.com:8470") && !open.origin_allowed(b"https://evil.example")
        );
        let listed = HostPolicy::for_listen(&["node1.example.com".into()], lan);
        assert!(listed.host_allowed(b"node1.example.com:8470") && !listed.host_allowed(b"evil.example"));
        let local = HostPolicy::for_listen(&[], "127.0.0.1:8470".parse().unwrap());
        assert!(!local.host_allowed(b"evil.example"));
    }

    #[test]
    fn origins_of_pages_on_this_machine_only() {
        let p = HostPolicy::new(&["dash.internal".into()]);
        for ok in [
            "http://127.0.0.1:8470",
            "http://127.9.9.9",
            "https://[::1]:3000",
            "http://localhost:3000",
            "http://grafana.localhost",
            "https://dash.internal",
        ] {
            assert!(p.origin_allowed(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "null",
            "https://evil.example",
            "http://10.1.2.3:8470",
            "http://notlocalhost",
            "file://",
            "http://",
            "http://localhost:3000/path",
            "chrome-extension://abc",
        ] {
            assert!(!p.origin_allowed(bad.as_bytes()), "{bad}");
        }
        assert!(HostPolicy::new(&["*".into()]).origin_allowed(b"null"));
    }
}
