//! Cache data plane: `GET/PUT/DELETE /api/v1/cache/{strategy}/{key}`, `mget`, `invalidate`, `warm`,
//! and the key listing.

use super::AppState;
use super::error::{ApiError, body_error};
use crate::Error;
use crate::cache::{Entry, Level};
use crate::model::now_ms;
use actix_web::http::Method;
use actix_web::{FromRequest as _, HttpRequest, HttpResponse, http::header, web};
use base64::Engine as _;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Longest `?wait=` honoured: a client that wants more should poll.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
pub struct EntryParams {
    wait: Option<String>,
    ttl: Option<String>,
}

/// The route pattern the request monitor files entry requests under.
pub const ENTRY_ROUTE: &str = "/api/v1/cache/{strategy}/{key}";

/// `max-age=N` header values for N up to an hour, built once: most answers take one from here
/// instead of formatting (and allocating) it.
fn max_age_header(secs: i64) -> header::HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<header::HeaderValue>> = std::sync::OnceLock::new();
    // Digits and ASCII letters always make a valid value; the fallback is never taken.
    let value = |n: i64| {
        header::HeaderValue::from_str(&format!("max-age={n}"))
            .unwrap_or(header::HeaderValue::from_static("max-age=0"))
    };
    let table = TABLE.get_or_init(|| (0..=3600).map(value).collect());
    match table.get(secs.max(0) as usize) {
        Some(v) => v.clone(),
        None => value(secs),
    }
}

pub(super) fn hit_response(e: Arc<Entry>, level: Level, now_ms: i64) -> HttpResponse {
    let max_age = (e.ttl_ms(now_ms) + 999) / 1000;
    let mut resp = HttpResponse::Ok();
    match e.content_type.as_deref() {
        Some(ct) => resp.content_type(ct),
        None => resp.content_type(header::HeaderValue::from_static("application/octet-stream")),
    };
    resp.insert_header((
        header::HeaderName::from_static("x-cache"),
        header::HeaderValue::from_static(if level == Level::L1 { "L1" } else { "L2" }),
    ))
    .insert_header((header::CACHE_CONTROL, max_age_header(max_age)))
    .body(e.value.clone())
}

/// `{strategy}` and `{key}` of `/api/v1/cache/{strategy}/{key}` (still percent-encoded); the
/// key is the whole rest of the path, so it may hold `/`. Parsed by hand: the hottest route
/// then costs no regex match in the router.
pub(super) fn split_entry_path(path: &str) -> Option<(&str, &str)> {
    let (strategy, key) = path.strip_prefix("/api/v1/cache/")?.split_once('/')?;
    (!strategy.is_empty() && !key.is_empty()).then_some((strategy, key))
}

/// Whether a request path is an entry path (for the request monitor's route label).
pub fn is_entry_path(path: &str) -> bool {
    split_entry_path(path).is_some()
}

/// A path segment decoded; one without `%` is itself (already UTF-8: the hit path's head
/// parser and actix's URI take only ASCII there), without the decoder's pass and a second
/// UTF-8 check (13 % of `hit_path_answer`'s samples under `perf record`).
pub(super) fn percent_decoded(s: &str) -> Result<Cow<'_, str>, Error> {
    if !s.as_bytes().contains(&b'%') {
        return Ok(Cow::Borrowed(s));
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| Error::invalid("cache strategy and key must be percent-encoded UTF-8"))
}

/// Every method on `/api/v1/cache/{strategy}/{key}`. Only a PUT reads the body: a GET with
/// `Upgrade: websocket` has the rest of the connection as its body (actix-http), so reading it
/// first left such a GET of a missing entry unanswered until the client went away.
pub async fn entry(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some((strategy, key)) = split_entry_path(req.uri().path()) else {
        return Err(Error::NotFound(format!("no route for {} {}", req.method(), req.path())).into());
    };
    let (strategy, key) = (percent_decoded(strategy)?, percent_decoded(key)?);
    let params = match req.query_string() {
        "" => EntryParams { wait: None, ttl: None },
        q => web::Query::<EntryParams>::from_query(q)
            .map_err(|e| Error::invalid(format!("invalid query string: {e}")))?
            .into_inner(),
    };
    match *req.method() {
        Method::GET | Method::HEAD => get_entry(&state, &req, &strategy, &key, params).await,
        Method::PUT => put_entry(&state, &req, &strategy, &key, params, body).await,
        Method::DELETE => delete_entry(&state, &strategy, &key).await,
        ref m => {
            Err(Error::MethodNotAllowed { method: m.to_string(), allow: "GET, HEAD, PUT, DELETE".into() }
                .into())
        }
    }
}

fn miss(strategy: &str, key: &str) -> ApiError {
    ApiError(Error::NotFound(format!("no cached value for {strategy}:{key}")))
}

async fn get_entry(
    state: &AppState,
    req: &HttpRequest,
    strategy: &str,
    key: &str,
    params: EntryParams,
) -> Result<HttpResponse, ApiError> {
    let Some(wait) = params.wait.as_deref() else {
        return match state.cache.get(strategy, key).await? {
            Some((e, level)) => Ok(hit_response(e, level, now_ms())),
            None => Err(miss(strategy, key)),
        };
    };
    let wait = super::duration_param("wait", wait)?.min(MAX_WAIT);
    let stopping = || state.stopping.load(std::sync::atomic::Ordering::Relaxed);
    let gone = || stopping() || super::peer::client_gone(req);
    let found = state.cache.get_or_wait(strategy, key, wait, gone, super::peer::CHECK_EVERY).await?;
    if found.is_err() && stopping() {
        return Err(Error::ShuttingDown.into());
    }
    match found {
        Ok((e, level)) => Ok(hit_response(e, level, now_ms())),
        Err(leased) => {
            let mut resp =
                miss(strategy, key).error_response_with_fill(if leased { "lease" } else { "timeout" });
            resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            Ok(resp)
        }
    }
}

async fn put_entry(
    state: &AppState,
    req: &HttpRequest,
    strategy: &str,
    key: &str,
    params: EntryParams,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The `web::Bytes` extractor, with the App's `PayloadConfig` limit.
    let body = web::Bytes::from_request(req, &mut body.into_inner())
        .await
        .map_err(|e| body_error(e, state.config.load().http.max_body_bytes))?;
    let ttl = params.ttl.as_deref().map(|t| super::duration_param("ttl", t)).transpose()?;
    let content_type = match req.headers().get(header::CONTENT_TYPE) {
        Some(v) => Some(v.to_str().map_err(|_| Error::invalid("Content-Type must be printable ASCII"))?),
        None => None,
    };
    state.cache.set(strategy, key, body, content_type, ttl).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn delete_entry(state: &AppState, strategy: &str, key: &str) -> Result<HttpResponse, ApiError> {
    let deleted = state.cache.delete(strategy, key).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"deleted": deleted})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    pattern: String,
}

pub async fn invalidate(
    state: web::Data<AppState>,
    body: web::Json<InvalidateBody>,
) -> Result<HttpResponse, ApiError> {
    let (l1, l2) = state.cache.invalidate(&body.pattern).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"removed": l1.max(l2), "removed_l1": l1, "removed_l2": l2})))
}

/// Most keys one listing answers.
const MAX_LISTED: usize = 10_000;

#[derive(Debug, Deserialize)]
pub struct KeysParams {
    pattern: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/cache/keys?pattern=GLOB&limit=N`: the live L1 keys the glob (read as
/// `invalidate` reads it) matches, in key order, with their remaining TTL, size and content type.
/// L1 only: Redis may hold more.
pub async fn list_keys(
    state: web::Data<AppState>,
    params: web::Query<KeysParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LISTED {
        return Err(Error::invalid(format!("limit must be 1 to {MAX_LISTED}")).into());
    }
    let (keys, matched) = state.cache.keys(params.pattern.as_deref(), limit)?;
    let now = now_ms();
    let listed: Vec<serde_json::Value> = keys
        .iter()
        .map(|(full, e)| {
            let (strategy, key) = full.split_once(':').unwrap_or(("", full));
            serde_json::json!({"strategy": strategy, "key": key, "ttl_ms": e.ttl_ms(now),
                "bytes": e.value.len(), "content_type": e.content_type.as_deref()})
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "count": matched, "truncated": matched > listed.len() as u64, "keys": listed
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmBody {
    entries: Vec<WarmEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmEntry {
    strategy: String,
    key: String,
    value: Option<String>,
    value_b64: Option<String>,
    /// Seconds; the strategy's TTL when absent.
    ttl: Option<u64>,
    content_type: Option<String>,
}

/// Loads many entries in one call. Validated whole first, so a bad entry loads nothing.
pub async fn warm(state: web::Data<AppState>, body: web::Json<WarmBody>) -> Result<HttpResponse, ApiError> {
    let mut ready = Vec::with_capacity(body.entries.len());
    for (i, e) in body.entries.iter().enumerate() {
        let at = |m: String| Error::invalid(format!("entries[{i}]: {m}"));
        state.cache.full_key(&e.strategy, &e.key)?;
        let value = match (&e.value, &e.value_b64) {
            (Some(v), None) => web::Bytes::copy_from_slice(v.as_bytes()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(web::Bytes::from)
                .map_err(|err| at(format!("value_b64 is not base64: {err}")))?,
            _ => return Err(at("give exactly one of value and value_b64".into()).into()),
        };
        state.cache.check_value_len(value.len()).map_err(|err| match err {
            Error::TooLarge(m) => Error::TooLarge(format!("entries[{i}]: {m}")),
            other => other,
        })?;
        if let Some(ttl) = e.ttl {
            crate::cache::check_ttl(Duration::from_secs(ttl)).map_err(|err| at(err.to_string()))?;
        }
        // It is sent back as a header: a value that cannot be one would break every later GET.
        if let Some(ct) = e.content_type.as_deref() {
            crate::cache::check_content_type(ct).map_err(|err| at(err.to_string()))?;
        }
        ready.push((e, value));
    }
    for (e, value) in ready {
        let ttl = e.ttl.map(Duration::from_secs);
        state.cache.set(&e.strategy, &e.key, value, e.content_type.as_deref(), ttl).await?;
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"loaded": body.entries.len()})))
}

trait FillHeader {
    fn error_response_with_fill(self, fill: &'static str) -> HttpResponse;
}

impl FillHeader for ApiError {
    /// The 404 body, plus `X-Cache-Fill`: `lease` (you compute and PUT) or `timeout`.
    fn error_response_with_fill(self, fill: &'static str) -> HttpResponse {
        let mut resp = actix_web::ResponseError::error_response(&self);
        resp.headers_mut()
            .insert(header::HeaderName::from_static("x-cache-fill"), header::HeaderValue::from_static(fill));
        resp
    }
}
