//! Alert endpoints: thresholds CRUD, firing alerts, history and silences.

use super::error::ApiError;
use super::{AppState, blocking};
use crate::Error;
use crate::model::now_ms;
use crate::sampler::alerts::Threshold;
use crate::store::records::{self, Silence};
use actix_web::{HttpResponse, web};
use serde::Deserialize;

/// Most events one history call returns.
const MAX_HISTORY: usize = 10_000;

pub async fn list_thresholds(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let list = blocking(move || records::thresholds(&store)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"thresholds": list})))
}

/// Validates `t` and applies `change` (a new or a replaced threshold) to the store.
async fn store_threshold(
    state: &AppState,
    t: Threshold,
    change: fn(&Threshold) -> crate::Result<crate::writer::Change>,
) -> Result<Threshold, ApiError> {
    t.validate()?;
    let writer = state.writer.clone();
    let change = change(&t)?;
    blocking(move || writer.apply(change)).await?;
    Ok(t)
}

pub async fn create_threshold(
    state: web::Data<AppState>,
    body: web::Json<Threshold>,
) -> Result<HttpResponse, ApiError> {
    let mut t = body.into_inner();
    t.id = state.store.new_record_id();
    let t = store_threshold(&state, t, records::put_threshold).await?;
    Ok(HttpResponse::Created().json(t))
}

pub async fn get_threshold(state: web::Data<AppState>, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let (store, id) = (state.store.clone(), id.into_inner());
    match blocking(move || records::threshold(&store, id)).await? {
        Some(t) => Ok(HttpResponse::Ok().json(t)),
        None => Err(Error::NotFound(format!("no threshold {id}")).into()),
    }
}

pub async fn update_threshold(
    state: web::Data<AppState>,
    id: web::Path<u64>,
    body: web::Json<Threshold>,
) -> Result<HttpResponse, ApiError> {
    let mut t = body.into_inner();
    t.id = id.into_inner();
    Ok(HttpResponse::Ok().json(store_threshold(&state, t, records::replace_threshold).await?))
}

pub async fn delete_threshold(
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let (writer, id) = (state.writer.clone(), id.into_inner());
    blocking(move || writer.apply(records::delete_threshold(id))).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Alerts firing now (as of the last sampler tick), and how their delivery to
/// `alerts.notify_url` goes (`null` when it is not set).
pub async fn list_alerts(state: web::Data<AppState>) -> HttpResponse {
    let alerts = state.published.alerts.read().clone();
    let delivery = state.published.delivery.as_ref().map(|d| d.snapshot());
    HttpResponse::Ok().json(serde_json::json!({"alerts": alerts, "delivery": delivery}))
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    limit: Option<usize>,
    /// Only this threshold's events.
    threshold_id: Option<u64>,
    /// Only events at or after this time (unix ms or RFC 3339).
    since: Option<String>,
}

pub async fn alert_history(
    state: web::Data<AppState>,
    params: web::Query<HistoryParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = params.limit.unwrap_or(100).min(MAX_HISTORY);
    let since = params.since.as_deref().map(crate::query::parse_time).transpose()?.unwrap_or(i64::MIN);
    let threshold = params.threshold_id;
    let store = state.store.clone();
    let events = blocking(move || {
        records::events(&store, limit, |e| {
            e.at_ms >= since && threshold.is_none_or(|id| e.threshold_id == id)
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"events": events})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    threshold_id: Option<u64>,
    selector: Option<String>,
    /// Unix ms or RFC 3339.
    until: serde_json::Value,
    comment: Option<String>,
}

pub async fn create_silence(
    state: web::Data<AppState>,
    body: web::Json<SilenceBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if b.threshold_id.is_none() == b.selector.is_none() {
        return Err(Error::invalid("give exactly one of threshold_id and selector").into());
    }
    if let Some(sel) = &b.selector {
        crate::query::Selector::parse(sel)?;
    }
    let until_ms = match &b.until {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| Error::invalid("until must be unix ms"))?,
        serde_json::Value::String(s) => crate::query::parse_time(s)?,
        _ => return Err(Error::invalid("until must be unix ms or RFC 3339").into()),
    };
    if until_ms <= now_ms() {
        return Err(Error::invalid("until must be in the future").into());
    }
    let silence = Silence {
        id: state.store.new_record_id(),
        threshold_id: b.threshold_id,
        selector: b.selector,
        until_ms,
        comment: b.comment,
    };
    let (writer, change) = (state.writer.clone(), records::put_silence(&silence)?);
    blocking(move || writer.apply(change)).await?;
    Ok(HttpResponse::Created().json(silence))
}

pub async fn list_silences(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let now = now_ms();
    let list: Vec<Silence> =
        blocking(move || records::silences(&store)).await?.into_iter().filter(|s| s.until_ms > now).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"silences": list})))
}
