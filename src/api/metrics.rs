//! Seed metric endpoints backed by the store and the writer: `/api/v1/metrics/database`, `/queue`.

use super::AppState;
use super::error::ApiError;
use crate::Error;
use actix_web::{HttpResponse, web};

pub async fn get_database(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let counts = web::block(move || store.counts())
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "database": counts,
        "writer": state.writer.snapshot(),
    })))
}

pub async fn get_queue(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"writer": state.writer.snapshot()}))
}
