//! Admin endpoints: `POST /api/v1/admin/backup`, `GET /api/v1/admin/backups`,
//! `POST /api/v1/admin/tsdb/delete_series`.

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

#[derive(Debug, serde::Deserialize)]
pub struct DeleteParams {
    #[serde(rename = "match", alias = "match[]")]
    selector: Option<String>,
}

/// Forgets every series the selector matches (the path and `match[]` are Prometheus' and
/// VictoriaMetrics'): they are no longer listed, queried, exported or counted against
/// `storage.max_series`, and a later write of one makes a new series. Their stored points stay
/// out of reach until retention removes them.
pub async fn delete_series(
    state: web::Data<AppState>,
    params: web::Query<DeleteParams>,
) -> Result<HttpResponse, ApiError> {
    let text = params.selector.as_deref().ok_or_else(|| super::query::missing("match"))?;
    let sel = crate::query::Selector::parse(text)?;
    let (store, writer) = (state.store.clone(), state.writer.clone());
    let deleted = blocking(move || writer.delete_series(crate::query::select(&store, &sel))).await?;
    log::info!("deleted {deleted} series matching {}", crate::error::Shown(text));
    Ok(HttpResponse::Ok().json(serde_json::json!({"deleted": deleted})))
}
