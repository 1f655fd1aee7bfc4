//! Seed metric endpoints backed by the store and the writer: `/api/v1/metrics/database`, `/queue`.

use super::AppState;
use super::error::ApiError;
use crate::Error;
use actix_web::{HttpResponse, web};

pub async fn get_database(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // The writer's counters first: it bumps them only after its commit, so counts read next
    // include every commit they report (a purge shown as done shows its freed bytes).
    let writer = state.writer.snapshot();
    let store = state.store.clone();
    let counts = web::block(move || store.counts()).await.map_err(|e| Error::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "database": counts,
        "writer": writer,
        "slowest_queries": state.queries.slowest(10),
    })))
}

pub async fn get_queue(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "writer": state.writer.snapshot(),
        "executions": state.executions.stats(),
    }))
}

/// Cache statistics since start (the seed's shape: `cache_statistics` with `hits`, `misses`,
/// `hit_rate_percent`, `l1_size`, …) and recommendations on the last five minutes.
pub async fn get_cache(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.cache.statistics();
    let recent = state.published.cache_window_start.read().as_ref().map(|start| stats.since(start));
    let recommendations = state.cache.recommendations(recent.as_ref().unwrap_or(&stats));
    HttpResponse::Ok()
        .json(serde_json::json!({"cache_statistics": stats, "recommendations": recommendations}))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    level: crate::cache::ClearLevel,
}

pub async fn clear_cache(
    state: web::Data<AppState>,
    body: web::Json<ClearBody>,
) -> Result<HttpResponse, ApiError> {
    let (l1, l2) = state.cache.clear(body.level).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"cleared": {"l1": l1, "l2": l2}})))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryReport {
    query: String,
    duration_ms: f64,
    #[serde(default)]
    rows: u64,
    #[serde(default = "yes")]
    ok: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum QueryReports {
    One(QueryReport),
    Many(Vec<QueryReport>),
}

/// The backend reports its database queries (one object or an array); grouped by fingerprint.
pub async fn report_queries(
    state: web::Data<AppState>,
    body: web::Json<QueryReports>,
) -> Result<HttpResponse, ApiError> {
    let reports = match body.into_inner() {
        QueryReports::One(r) => vec![r],
        QueryReports::Many(v) => v,
    };
    for (i, r) in reports.iter().enumerate() {
        if r.query.trim().is_empty() || !r.duration_ms.is_finite() || r.duration_ms < 0.0 {
            return Err(Error::invalid(format!(
                "[{i}]: query must be non-empty and duration_ms a finite number ≥ 0"
            ))
            .into());
        }
    }
    for r in &reports {
        state.queries.record(&r.query, r.duration_ms, r.rows, r.ok);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"recorded": reports.len()})))
}
