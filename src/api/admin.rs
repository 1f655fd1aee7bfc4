//! Admin endpoints: `POST /api/v1/admin/backup`, `GET /api/v1/admin/backups`,
//! `POST /api/v1/admin/reload` (the configuration read again; `crate::reload`),
//! `GET /api/v1/admin/config` (the configuration in effect),
//! `POST /api/v1/admin/tsdb/delete_series`, and `GET /api/v1/status/tsdb` to find what to delete.

use super::error::ApiError;
use super::{AppState, blocking};
use crate::error::{Error, Shown};
use crate::store::backup;
use actix_web::{HttpResponse, web};

/// Writes a consistent snapshot to `<data-dir>/backups/perfd-<UTC time>.pfbk` while ingestion
/// goes on; answers with its name, size, counts and SHA-256.
pub async fn create_backup(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let dir = state.config.load().data_dir.clone();
    let info = blocking(move || backup::write_new(&store, &dir)).await?;
    log::info!("backup written: {} ({} bytes)", info.file, info.bytes);
    Ok(HttpResponse::Created().json(info))
}

pub async fn list_backups(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let dir = state.config.load().data_dir.clone();
    let list = blocking(move || backup::list(&dir)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"backups": list})))
}

/// The configuration in effect (`Config::shown`: no secrets) and the keys a reload left waiting
/// for a restart.
pub async fn get_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "config": state.config.load().shown(),
        "needs_restart": state.reloader.needs_restart(),
    }))
}

/// Reads the configuration again, as SIGHUP does, and answers what it applied and what waits for
/// a restart; a file that no longer loads is a 422 and changes nothing.
pub async fn reload_config(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let reloader = state.reloader.clone();
    let done = blocking(move || reloader.reload()).await?;
    Ok(HttpResponse::Ok().json(done))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    #[serde(rename = "match", alias = "match[]")]
    selector: Option<String>,
    /// Prometheus' time range: with either, only the points from `start` to `end` (inclusive;
    /// open-ended without one) go, and the series stay.
    start: Option<String>,
    end: Option<String>,
}

/// Forgets every series the selector matches (the path and `match[]` are Prometheus' and
/// VictoriaMetrics'): they are no longer listed, queried, exported or counted against
/// `storage.max_series`, and a later write of one makes a new series; the writer then purges
/// their chunks. With `start` or `end`, removes only their points in that range instead.
pub async fn delete_series(
    state: web::Data<AppState>,
    params: web::Query<DeleteParams>,
) -> Result<HttpResponse, ApiError> {
    let text = params.selector.as_deref().ok_or_else(|| super::query::missing("match"))?;
    let sel = crate::query::Selector::parse(text)?;
    let (store, writer) = (state.store.clone(), state.writer.clone());
    if params.start.is_none() && params.end.is_none() {
        let deleted = blocking(move || writer.delete_series(crate::query::select(&store, &sel))).await?;
        log::info!("deleted {deleted} series matching {}", Shown(text));
        return Ok(HttpResponse::Ok().json(serde_json::json!({"deleted": deleted})));
    }
    let time = |t: &Option<String>, or: i64| t.as_deref().map_or(Ok(or), crate::query::parse_time);
    let (start, end) = (time(&params.start, i64::MIN)?, time(&params.end, i64::MAX)?);
    if start > end {
        return Err(Error::invalid(format!("start ({start} ms) is after end ({end} ms)")).into());
    }
    let ids: Vec<u64> = crate::query::select(&store, &sel).into_iter().map(|(id, _)| id).collect();
    let series = ids.len();
    let points = blocking(move || writer.delete_points(ids, start, end)).await?;
    log::info!(
        "deleted {points} points from {start} to {end} ms of {series} series matching {}",
        Shown(text)
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({"series": series, "deleted_points": points})))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsdbParams {
    #[serde(rename = "match", alias = "match[]")]
    selector: Option<String>,
    /// How many entries each list keeps (Prometheus' `limit`, VictoriaMetrics' `topN`).
    #[serde(alias = "topN")]
    limit: Option<usize>,
}

/// Most entries a list of `GET /api/v1/status/tsdb` may ask for.
const MAX_TOP: usize = 1000;

/// `GET /api/v1/status/tsdb`: the metric names, labels and label pairs with the most series
/// (of those `match` selects, or all), 10 of each unless `limit` says otherwise.
pub async fn tsdb_status(
    state: web::Data<AppState>,
    params: web::Query<TsdbParams>,
) -> Result<HttpResponse, ApiError> {
    let top = params.limit.unwrap_or(10);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(Error::invalid(format!("limit must be from 1 to {MAX_TOP}")).into());
    }
    let sel = params.selector.as_deref().map(crate::query::Selector::parse).transpose()?;
    let store = state.store.clone();
    let status =
        blocking(move || Ok(crate::query::cardinality::cardinality(&store, sel.as_ref(), top))).await?;
    Ok(HttpResponse::Ok().json(status))
}
