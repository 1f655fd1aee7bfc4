//! Request heads actix-http would refuse, refused first with perfd's JSON error.
//!
//! actix-http answers a head it cannot take (a malformed line, a missing `Host`, a bad
//! `Content-Length`, too many or too long headers) with an empty 400 or 431 and closes; a client
//! learns nothing of why. [`read_head`] applies the same rules as actix-http's decoder
//! (`h1/decoder.rs`: httparse with 96 headers, the URI, `Host`, `Content-Length`,
//! `Transfer-Encoding`) to each complete head before actix-http sees it; a refused head is
//! replaced by a request for [`REFUSED_ROUTE`], which the App answers with the error as JSON
//! and `Connection: close` ([`get_refusal`]). A rule of actix-http's not mirrored here still gets
//! its empty answer; one mirrored too strictly would refuse a request actix-http serves, so the
//! rules are its own, read off its source (actix-http 3.x).

use super::framing::{Chunk, Framing};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

/// The App route that answers a refused head; `{n}` indexes [`Refusal::ALL`].
pub const REFUSED_ROUTE: &str = "/.perfd/refused/{n}";
/// At most this many header fields (actix-http's `MAX_HEADERS`).
const MAX_HEADERS: usize = 96;
/// A request target longer than this does not parse (`http::Uri`'s limit).
const MAX_URI: usize = 65_534;

/// Why a head is refused: each is one answer, status, code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Timeout,
    HeadTooLarge,
    LineTooLong,
    TooManyHeaders,
    UriTooLong,
    HeaderName,
    HeaderValue,
    NewLine,
    Token,
    Version,
    Uri,
    NoHost,
    TwoHosts,
    TwoLengths,
    BadLength,
    TransferEncoding10,
    NotChunked,
    LengthAndChunked,
    Post10NoLength,
}

impl Refusal {
    pub const ALL: [Refusal; 19] = [
        Refusal::Timeout,
        Refusal::HeadTooLarge,
        Refusal::LineTooLong,
        Refusal::TooManyHeaders,
        Refusal::UriTooLong,
        Refusal::HeaderName,
        Refusal::HeaderValue,
        Refusal::NewLine,
        Refusal::Token,
        Refusal::Version,
        Refusal::Uri,
        Refusal::NoHost,
        Refusal::TwoHosts,
        Refusal::TwoLengths,
        Refusal::BadLength,
        Refusal::TransferEncoding10,
        Refusal::NotChunked,
        Refusal::LengthAndChunked,
        Refusal::Post10NoLength,
    ];

    pub fn answer(self) -> (StatusCode, &'static str, &'static str) {
        use Refusal::*;
        let bad = |m| (StatusCode::BAD_REQUEST, "invalid_input", m);
        match self {
            Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request head did not arrive within http.request_timeout",
            ),
            HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_fields_too_large",
                "the request head is longer than 128 KiB",
            ),
            LineTooLong => {
                (StatusCode::URI_TOO_LONG, "uri_too_long", "the request line is longer than 128 KiB")
            }
            TooManyHeaders => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_fields_too_large",
                "a request has at most 96 header fields",
            ),
            UriTooLong => {
                (StatusCode::URI_TOO_LONG, "uri_too_long", "the request target is longer than 65,534 bytes")
            }
            HeaderName => bad("a header name is not a token, or a line is not a header"),
            HeaderValue => bad("a header value holds a control character"),
            NewLine => bad("a line of the request head ends in a bare CR"),
            Token => bad("the method or the request target holds a byte it may not"),
            Version => bad("the HTTP version is not HTTP/1.0 or HTTP/1.1"),
            Uri => bad("the request target is not a valid URI"),
            NoHost => bad("an HTTP/1.1 request needs a Host header"),
            TwoHosts => bad("a request has at most one Host header"),
            TwoLengths => bad("a request has at most one Content-Length header"),
            BadLength => bad("Content-Length is not a number of bytes"),
            TransferEncoding10 => bad("an HTTP/1.0 request may not have Transfer-Encoding"),
            NotChunked => bad("Transfer-Encoding must be chunked, given once"),
            LengthAndChunked => bad("a request may not have both Transfer-Encoding and Content-Length"),
            Post10NoLength => bad("an HTTP/1.0 POST needs a Content-Length"),
        }
    }

    /// The request actix-http gets instead of the refused head: it closes the connection. A
    /// HEAD is refused with a HEAD, whose answer has no body.
    pub fn request(self, head: bool) -> Vec<u8> {
        let n = Refusal::ALL.iter().position(|&r| r == self).unwrap_or(0);
        let method = if head { "HEAD" } else { "GET" };
        format!("{method} /.perfd/refused/{n} HTTP/1.1\r\nHost: perfd\r\nConnection: close\r\n\r\n")
            .into_bytes()
    }

    /// The JSON error body.
    pub fn body(self) -> String {
        let (_, code, message) = self.answer();
        serde_json::json!({"error": {"code": code, "message": message}}).to_string()
    }
}

/// The App's answer to [`Refusal::request`] (a client asking for the route itself gets one too).
pub async fn get_refusal(req: HttpRequest, n: web::Path<String>) -> HttpResponse {
    let refusal = n.parse::<usize>().ok().and_then(|n| Refusal::ALL.get(n)).copied();
    let refusal = refusal.unwrap_or(Refusal::Uri);
    let (status, _, _) = refusal.answer();
    let mut resp = HttpResponse::build(status);
    resp.content_type("application/json");
    if req.head().connection_type() == actix_web::http::ConnectionType::Close {
        resp.force_close();
    }
    resp.body(refusal.body())
}

/// A complete head (through its blank line): its framing and whether it closes the connection,
/// or why actix-http would refuse it. `None`: only blank lines, which come before a request
/// line and are skipped.
pub fn read_head(head: &[u8]) -> Option<Result<(Framing, bool), Refusal>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(e) => {
            return Some(Err(match e {
                httparse::Error::TooManyHeaders => Refusal::TooManyHeaders,
                httparse::Error::HeaderName => Refusal::HeaderName,
                httparse::Error::HeaderValue => Refusal::HeaderValue,
                httparse::Error::NewLine => Refusal::NewLine,
                httparse::Error::Version => Refusal::Version,
                httparse::Error::Token | httparse::Error::Status => Refusal::Token,
            }));
        }
    }
    Some(check(&req))
}

/// actix-http's rules for a parsed head (its `decode` and `set_headers`), in its order.
fn check(req: &httparse::Request) -> Result<(Framing, bool), Refusal> {
    let (method, path) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    if path.len() > MAX_URI {
        return Err(Refusal::UriTooLong);
    }
    if actix_web::http::Uri::try_from(path).is_err() {
        return Err(Refusal::Uri);
    }
    let http11 = req.version == Some(1);
    let f = Fields::of(req.headers, http11)?;
    if http11 && !f.host {
        return Err(Refusal::NoHost);
    }
    if f.te {
        if !http11 {
            return Err(Refusal::TransferEncoding10);
        }
        if !f.chunked {
            return Err(Refusal::NotChunked);
        }
        if f.length.is_some() {
            return Err(Refusal::LengthAndChunked);
        }
    }
    if !http11 && method == "POST" && f.length.is_none() {
        return Err(Refusal::Post10NoLength);
    }
    // What follows the head: a body, chunked or of a known length, is followed; what comes
    // after an upgrade or CONNECT is not.
    let framing = if f.upgrade || method == "CONNECT" {
        Framing::Untracked
    } else if f.chunked {
        Framing::Chunked(Chunk::SizeFirst)
    } else {
        match f.length {
            Some(n) if n > 0 => Framing::Body(n),
            _ => Framing::Head,
        }
    };
    Ok((framing, f.close || (!http11 && !f.keep_alive)))
}

/// What the headers that frame a request say.
#[derive(Default)]
struct Fields {
    length: Option<u64>,
    host: bool,
    /// A `Transfer-Encoding` header.
    te: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl Fields {
    /// actix-http's `set_headers`: a second `Content-Length`, `Host` or (HTTP/1.1)
    /// `Transfer-Encoding`, a length that is not a plain number, an encoding that is neither
    /// `chunked` nor `identity` are refused.
    fn of(headers: &[httparse::Header], http11: bool) -> Result<Fields, Refusal> {
        let mut f = Fields::default();
        for h in headers {
            // What `HeaderValue::to_str` takes (so it is UTF-8 too).
            let value = Some(h.value)
                .filter(|v| crate::cache::is_header_text(v))
                .and_then(|v| std::str::from_utf8(v).ok());
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                if f.length.is_some() {
                    return Err(Refusal::TwoLengths);
                }
                let v = value.map(str::trim).filter(|v| !v.starts_with('+'));
                f.length = Some(v.and_then(|v| v.parse::<u64>().ok()).ok_or(Refusal::BadLength)?);
            } else if name.eq_ignore_ascii_case("host") {
                if f.host {
                    return Err(Refusal::TwoHosts);
                }
                f.host = true;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // In HTTP/1.0 it is refused once every header is read (`check`).
                if http11 {
                    match value.map(str::trim) {
                        _ if f.te => return Err(Refusal::NotChunked),
                        Some(v) if v.eq_ignore_ascii_case("chunked") => f.chunked = true,
                        Some(v) if v.eq_ignore_ascii_case("identity") => {}
                        _ => return Err(Refusal::NotChunked),
                    }
                }
                f.te = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.unwrap_or("").split(',').map(str::trim) {
                    f.close |= token.eq_ignore_ascii_case("close");
                    f.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                f.upgrade = true;
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(head: &str) -> Option<Result<(Framing, bool), Refusal>> {
        read_head(head.as_bytes())
    }

    #[test]
    fn heads_actix_http_refuses_are_refused_for_its_reason() {
        let many: String = (0..97).map(|i| format!("X-{i}: v\r\n")).collect();
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_URI));
        for (head, want) in [
            ("GET / HTTP/1.1\r\n\r\n", Refusal::NoHost),
            ("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", Refusal::TwoHosts),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Refusal::TwoLengths,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", Refusal::BadLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Refusal::BadLength),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", Refusal::BadLength),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Refusal::NotChunked),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", Refusal::NotChunked),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::NotChunked,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
                Refusal::LengthAndChunked,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Refusal::TransferEncoding10),
            ("POST / HTTP/1.0\r\n\r\n", Refusal::Post10NoLength),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Refusal::Version),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", Refusal::Version),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Refusal::Token),
            ("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", Refusal::Token),
            ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", Refusal::HeaderName),
            ("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", Refusal::HeaderValue),
            ("GET / HTTP/1.1\rHost: a\r\n\r\n", Refusal::NewLine),
            ("GET http://[::1 HTTP/1.1\r\nHost: a\r\n\r\n", Refusal::Uri),
            (&long_uri, Refusal::UriTooLong),
            (&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"), Refusal::TooManyHeaders),
        ] {
            assert_eq!(read(head), Some(Err(want)), "{:?}", &head[..head.len().min(80)]);
        }
    }

    #[test]
    fn heads_actix_http_takes_are_framed() {
        let few: String = (0..95).map(|i| format!("X-{i}: v\r\n")).collect();
        for (head, framing, closes) in [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(), Framing::Head, false),
            ("GET / HTTP/1.1\nHost: a\n\n".into(), Framing::Head, false),
            ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".into(), Framing::Head, false),
            ("GET / HTTP/1.0\r\n\r\n".into(), Framing::Head, true),
            ("POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n".into(), Framing::Head, true),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length:  7 \r\nConnection: close\r\n\r\n".into(),
                Framing::Body(7),
                true,
            ),
            ("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n".into(), Framing::Body(7), false),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n".into(),
                Framing::Chunked(Chunk::SizeFirst),
                false,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n".into(), Framing::Untracked, false),
            ("CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n".into(), Framing::Untracked, false),
            (format!("GET / HTTP/1.1\r\nHost: a\r\n{few}\r\n"), Framing::Head, false),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: caf\u{e9}\r\n\r\n".into(), Framing::Head, false),
        ] {
            assert_eq!(read(&head), Some(Ok((framing, closes))), "{:?}", &head[..head.len().min(80)]);
        }
        assert_eq!(read("\r\n\r\n"), None, "blank lines only");
    }

    #[test]
    fn each_refusal_has_its_own_request_and_a_json_body() {
        for (n, r) in Refusal::ALL.iter().enumerate() {
            let request = String::from_utf8(r.request(false)).unwrap();
            assert!(request.starts_with(&format!("GET /.perfd/refused/{n} ")), "{request}");
            assert!(String::from_utf8(r.request(true)).unwrap().starts_with("HEAD /.perfd/"));
            let (status, code, _) = r.answer();
            assert!(status.is_client_error());
            let body: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
            assert_eq!(body["error"]["code"], code);
        }
    }
}
