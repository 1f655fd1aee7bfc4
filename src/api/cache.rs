//! Cache data plane: `GET/PUT/DELETE /api/v1/cache/{strategy}/{key}`, `mget`, `invalidate`, `warm`.

use super::AppState;
use super::error::{ApiError, body_error};
use crate::Error;
use crate::cache::{Entry, Level};
use crate::model::now_ms;
use actix_web::{HttpRequest, HttpResponse, http::header, web};
use base64::Engine as _;
use serde::Deserialize;
use std::time::Duration;

/// Longest `?wait=` honoured: a client that wants more should poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most keys in one `mget`.
const MAX_MGET_KEYS: usize = 1000;
/// Media type of the binary `mget` answer: per key `u8` found, then (if found) `u32` BE length
/// and the bytes.
pub const MGET_BINARY: &str = "application/x-perfd-mget";

#[derive(Debug, Deserialize)]
pub struct EntryParams {
    wait: Option<String>,
    ttl: Option<String>,
}

fn duration_param(name: &str, s: &str) -> Result<Duration, Error> {
    let d = match s.parse::<u64>() {
        Ok(secs) if name == "ttl" => Duration::from_secs(secs),
        Ok(ms) => Duration::from_millis(ms),
        Err(_) => humantime::parse_duration(s)
            .map_err(|_| Error::invalid(format!("invalid {name} {s:?}: use a duration like 5s")))?,
    };
    if d.is_zero() {
        return Err(Error::invalid(format!("{name} must be positive")));
    }
    Ok(d)
}

fn hit_response(e: Entry, level: Level) -> HttpResponse {
    let max_age = (e.ttl_ms(now_ms()) + 999) / 1000;
    HttpResponse::Ok()
        .content_type(e.content_type.as_deref().unwrap_or("application/octet-stream"))
        .insert_header(("X-Cache", if level == Level::L1 { "L1" } else { "L2" }))
        .insert_header((header::CACHE_CONTROL, format!("max-age={max_age}")))
        .body(e.value)
}

fn miss(strategy: &str, key: &str) -> ApiError {
    ApiError(Error::NotFound(format!("no cached value for {strategy}:{key}")))
}

pub async fn get_entry(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    params: web::Query<EntryParams>,
) -> Result<HttpResponse, ApiError> {
    let (strategy, key) = path.into_inner();
    let Some(wait) = params.wait.as_deref() else {
        return match state.cache.get(&strategy, &key).await? {
            Some((e, level)) => Ok(hit_response(e, level)),
            None => Err(miss(&strategy, &key)),
        };
    };
    let wait = duration_param("wait", wait)?.min(MAX_WAIT);
    match state.cache.get_or_wait(&strategy, &key, wait).await? {
        Ok((e, level)) => Ok(hit_response(e, level)),
        Err(leased) => {
            let mut resp =
                miss(&strategy, &key).error_response_with_fill(if leased { "lease" } else { "timeout" });
            resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            Ok(resp)
        }
    }
}

pub async fn put_entry(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    params: web::Query<EntryParams>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let (strategy, key) = path.into_inner();
    let body = body.map_err(|e| body_error(e, state.config.http.max_body_bytes))?;
    let ttl = params.ttl.as_deref().map(|t| duration_param("ttl", t)).transpose()?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    state.cache.set(&strategy, &key, body, content_type, ttl).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn delete_entry(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (strategy, key) = path.into_inner();
    let deleted = state.cache.delete(&strategy, &key).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"deleted": deleted})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MgetBody {
    keys: Vec<KeyRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef {
    strategy: String,
    key: String,
}

/// Many keys in one request. JSON by default (UTF-8 values as `value`, others as `value_b64`);
/// the compact binary form when the client sends `Accept: application/x-perfd-mget`.
pub async fn mget(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<MgetBody>,
) -> Result<HttpResponse, ApiError> {
    if body.keys.len() > MAX_MGET_KEYS {
        return Err(Error::invalid(format!("mget takes at most {MAX_MGET_KEYS} keys")).into());
    }
    let mut found = Vec::with_capacity(body.keys.len());
    for k in &body.keys {
        found.push(state.cache.get(&k.strategy, &k.key).await?.map(|(e, _)| e));
    }
    let binary = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(MGET_BINARY));
    if binary {
        let mut out =
            Vec::with_capacity(found.iter().map(|e| e.as_ref().map_or(1, |e| 5 + e.value.len())).sum());
        for e in &found {
            match e {
                None => out.push(0),
                Some(e) => {
                    out.push(1);
                    out.extend_from_slice(&(e.value.len() as u32).to_be_bytes());
                    out.extend_from_slice(&e.value);
                }
            }
        }
        return Ok(HttpResponse::Ok().content_type(MGET_BINARY).body(out));
    }
    let now = now_ms();
    let values: Vec<serde_json::Value> = body
        .keys
        .iter()
        .zip(found)
        .map(|(k, e)| match e {
            None => serde_json::json!({"strategy": k.strategy, "key": k.key, "hit": false}),
            Some(e) => {
                let mut v = serde_json::json!({"strategy": k.strategy, "key": k.key, "hit": true, "ttl_ms": e.ttl_ms(now), "content_type": e.content_type.as_deref()});
                match std::str::from_utf8(&e.value) {
                    Ok(s) => v["value"] = s.into(),
                    Err(_) => v["value_b64"] = base64::engine::general_purpose::STANDARD.encode(&e.value).into(),
                }
                v
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"values": values})))
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
        if e.ttl == Some(0) {
            return Err(at("ttl must be positive".into()).into());
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
