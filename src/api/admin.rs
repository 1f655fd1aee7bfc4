//! Admin endpoints: `POST /api/v1/admin/backup`, `GET /api/v1/admin/backups`.

use super::error::ApiError;
use super::{AppState, blocking};
use crate::store::backup;
use actix_web::{HttpResponse, web};

/// Writes a consistent snapshot to `<data-dir>/backups/perfd-<UTC time>.pfbk` while ingestion
/// goes on; answers with its name, size, counts and SHA-256.
pub async fn create_backup(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let dir = state.config.data_dir.clone();
    let info = blocking(move || backup::write_new(&store, &dir)).await?;
    log::info!("backup written: {} ({} bytes)", info.file, info.bytes);
    Ok(HttpResponse::Created().json(info))
}

pub async fn list_backups(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let dir = state.config.data_dir.clone();
    let list = blocking(move || backup::list(&dir)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"backups": list})))
}
