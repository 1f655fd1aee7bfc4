//! `POST /api/v1/cache/mget`: many keys in one request, for clients that would pipeline GETs
//! with Redis. Answered by the App's handler or by the fast path, both through [`mget_answer`].

use super::AppState;
use super::error::{ApiError, body_error};
use crate::Error;
use crate::cache::Entry;
use crate::model::now_ms;
use actix_web::{HttpRequest, HttpResponse, http::header, web};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// Most keys in one `mget`.
pub(super) const MAX_MGET_KEYS: usize = 1000;
/// The route (for the request monitor and the fast paths).
pub(super) const MGET_ROUTE: &str = "/api/v1/cache/mget";
/// Media type of the compact forms: the request as key lines, the answer as per key a `u8`
/// found, then (if found) a `u32` BE length and the bytes.
pub const MGET_BINARY: &str = "application/x-perfd-mget";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MgetBody<'a> {
    #[serde(borrow)]
    keys: Vec<AnyKeyRef<'a>>,
}

/// `{"strategy": "s", "key": "k"}` or `"s:k"` (as in the key lines; a strategy name has no
/// `:`). Borrowed from the body unless the JSON string has escapes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef<'a> {
    #[serde(borrow)]
    strategy: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
}

/// A [`KeyRef`] in either form.
#[derive(Debug)]
struct AnyKeyRef<'a>(KeyRef<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyKeyRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AnyKeyRef<'a>, D::Error> {
        d.deserialize_any(KeyRefVisitor(std::marker::PhantomData))
    }
}

struct KeyRefVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl KeyRefVisitor<'_> {
    fn split<E: serde::de::Error>(s: &str) -> Result<(&str, &str), E> {
        s.split_once(':').ok_or_else(|| E::custom(format_args!("key {s:?} is not \"strategy:key\"")))
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for KeyRefVisitor<'a> {
    type Value = AnyKeyRef<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"a key: {"strategy": "...", "key": "..."} or "strategy:key""#)
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<AnyKeyRef<'a>, E> {
        let (strategy, key) = Self::split(s)?;
        Ok(AnyKeyRef(KeyRef { strategy: Cow::Borrowed(strategy), key: Cow::Borrowed(key) }))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<AnyKeyRef<'a>, E> {
        let (strategy, key) = Self::split(s)?;
        Ok(AnyKeyRef(KeyRef { strategy: Cow::Owned(strategy.to_owned()), key: Cow::Owned(key.to_owned()) }))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<AnyKeyRef<'a>, A::Error> {
        KeyRef::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(AnyKeyRef)
    }
}

/// Many keys in one request (see [`mget_answer`]).
pub async fn mget(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let raw = body.map_err(|e| body_error(e, state.config.load().http.max_body_bytes))?;
    mget_answer(&state, req.headers(), &raw).await
}

/// The keys of a compact mget body: UTF-8 lines `{strategy}:{key}` (strategy names have no
/// `:`, keys have no control characters, so neither holds a line break); empty lines skipped.
pub(super) fn mget_lines(raw: &[u8]) -> Result<Vec<(&str, &str)>, Error> {
    let text = std::str::from_utf8(raw).map_err(|_| Error::invalid("mget body is not UTF-8"))?;
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            line.split_once(':')
                .ok_or_else(|| Error::invalid(format!("mget line {}: expected strategy:key", i + 1)))
        })
        .collect()
}

fn header_has(headers: &header::HeaderMap, name: header::HeaderName, media_type: &str) -> bool {
    headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(media_type))
}

/// Answers an mget body. The request is JSON (`{"keys": [{"strategy", "key"} or "s:k"]}`) or, with
/// `Content-Type: application/x-perfd-mget`, key lines (see [`mget_lines`]). The answer is
/// JSON (UTF-8 values as `value`, others as `value_b64`), or the compact binary form when the
/// client sends `Accept: application/x-perfd-mget`. Shared by the App's handler and the fast
/// path.
pub(super) async fn mget_answer(
    state: &AppState,
    headers: &header::HeaderMap,
    raw: &[u8],
) -> Result<HttpResponse, ApiError> {
    let json: MgetBody<'_>;
    let pairs: Vec<(&str, &str)> = if header_has(headers, header::CONTENT_TYPE, MGET_BINARY) {
        mget_lines(raw)?
    } else {
        // Parsed here rather than by `web::Json`, so the keys borrow from the body.
        json = serde_json::from_slice(raw).map_err(|e| Error::invalid(format!("invalid mget body: {e}")))?;
        json.keys.iter().map(|AnyKeyRef(k)| (&*k.strategy, &*k.key)).collect()
    };
    if pairs.len() > MAX_MGET_KEYS {
        return Err(Error::invalid(format!("mget takes at most {MAX_MGET_KEYS} keys")).into());
    }
    let found = state.cache.get_many(&pairs).await?;
    Ok(match header_has(headers, header::ACCEPT, MGET_BINARY) {
        true => binary_answer(&found),
        false => json_answer(&pairs, &found),
    })
}

fn binary_answer(found: &[Option<Arc<Entry>>]) -> HttpResponse {
    let mut out = Vec::with_capacity(binary_len(found));
    binary_body(found, &mut out);
    HttpResponse::Ok().content_type(header::HeaderValue::from_static(MGET_BINARY)).body(out)
}

/// The bytes of [`binary_body`].
pub(super) fn binary_len(found: &[Option<Arc<Entry>>]) -> usize {
    found.iter().map(|e| e.as_ref().map_or(1, |e| 5 + e.value.len())).sum()
}

/// Per key a byte 0 (miss) or 1 (hit) followed by the value's u32 big-endian length and bytes.
pub(super) fn binary_body(found: &[Option<Arc<Entry>>], out: &mut Vec<u8>) {
    for e in found {
        match e {
            None => out.push(0),
            Some(e) => {
                out.push(1);
                out.extend_from_slice(&(e.value.len() as u32).to_be_bytes());
                out.extend_from_slice(&e.value);
            }
        }
    }
}

/// DESIGN §5's shape, serialized from the cached bytes without copying them into JSON values.
fn json_answer(pairs: &[(&str, &str)], found: &[Option<Arc<Entry>>]) -> HttpResponse {
    let now = now_ms();
    let values: Vec<MgetValue<'_>> = pairs
        .iter()
        .zip(found)
        .map(|(&(strategy, key), e)| {
            let Some(e) = e else {
                return MgetValue { strategy, key, hit: false, ..MgetValue::default() };
            };
            let (value, value_b64) = match std::str::from_utf8(&e.value) {
                Ok(s) => (Some(s), None),
                Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&e.value))),
            };
            let content_type = Some(e.content_type.as_deref());
            MgetValue {
                strategy,
                key,
                hit: true,
                ttl_ms: Some(e.ttl_ms(now)),
                content_type,
                value,
                value_b64,
            }
        })
        .collect();
    HttpResponse::Ok().json(MgetAnswer { values })
}

#[derive(Serialize)]
struct MgetAnswer<'a> {
    values: Vec<MgetValue<'a>>,
}

/// One key of the JSON answer, serialized straight from the cached bytes (no `serde_json::Value`
/// copies). A miss has `strategy`, `key` and `hit` only; a hit adds `ttl_ms`, `content_type`
/// (null when none was stored) and `value` (UTF-8) or `value_b64`.
#[derive(Default, Serialize)]
struct MgetValue<'a> {
    strategy: &'a str,
    key: &'a str,
    hit: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
}
