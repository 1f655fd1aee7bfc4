//! Seed metric endpoints backed by the store and the writer: `/api/v1/metrics/database`, `/queue`.

use super::AppState;
use super::error::ApiError;
use crate::Error;
use actix_web::{HttpResponse, web};

pub async fn get_database(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let counts = web::block(move || store.counts()).await.map_err(|e| Error::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "database": counts,
        "writer": state.writer.snapshot(),
    })))
}

pub async fn get_queue(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "writer": state.writer.snapshot(),
        "executions": state.executions.stats(),
    }))
}

/// Cache statistics (the seed's shape: `cache_statistics` with `hits`, `misses`,
/// `hit_rate_percent`, `l1_size`, …) and recommendations.
pub async fn get_cache(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.cache.statistics();
    let recommendations = state.cache.recommendations(&stats);
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
