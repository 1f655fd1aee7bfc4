//! The HTTP API: the whole route table on one screen. Handlers live in one file per area and
//! never block a worker: writes `try_send` to the writer, redb scans run in `web::block`.

mod admin;
mod alerts;
mod cache;
pub mod error;
mod executions;
mod fast;
mod ingest;
mod metrics;
mod mget;
mod observe;
mod prometheus;
mod query;

pub use fast::FastCache;

use crate::config::Config;
use crate::store::Store;
use crate::writer::WriterHandle;
use actix_web::{HttpResponse, web};
use std::sync::Arc;

/// What every handler may use; cloned into each actix worker.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub writer: Arc<WriterHandle>,
    pub cache: Arc<crate::cache::TieredCache>,
    pub monitor: Arc<crate::monitor::Monitor>,
    pub published: Arc<crate::sampler::Published>,
    pub executions: Arc<crate::executions::Executions>,
    pub queries: Arc<crate::queries::QueryStats>,
}

/// The one middleware: times every request by its route pattern (`unmatched` for unknown
/// routes) and, with `auth_token` set, makes mutating (non-GET/HEAD) and admin requests show
/// `Authorization: Bearer <token>` (compared in constant time); others get a JSON 401. One
/// layer instead of two: each `from_fn` layer costs a boxed future per request.
pub async fn guard_and_time(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let started = std::time::Instant::now();
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let guarded = !matches!(*req.method(), actix_web::http::Method::GET | actix_web::http::Method::HEAD)
        || req.path().starts_with("/api/v1/admin");
    let res = match state.config.auth_token.as_deref().filter(|_| guarded) {
        Some(token) if !bearer_matches(req.headers(), token) => {
            let err = error::ApiError(crate::Error::Unauthorized("missing or wrong bearer token".into()));
            let resp = actix_web::ResponseError::error_response(&err);
            req.into_response(resp).map_into_right_body()
        }
        _ => next.call(req).await?.map_into_left_body(),
    };
    let finished = std::time::Instant::now();
    let r = res.request();
    // Entries are served by the scope's default service, which has no pattern of its own.
    let pattern = (!cache::is_entry_path(r.path())).then(|| r.match_pattern());
    let route = match &pattern {
        None => cache::ENTRY_ROUTE,
        Some(Some(p)) => p.as_str(),
        Some(None) => "unmatched",
    };
    let (status, method) = (res.status().as_u16(), r.method().as_str());
    state.monitor.record(route, method, status, finished - started, crate::model::now_ms());
    Ok(res)
}

fn bearer_matches(headers: &actix_web::http::header::HeaderMap, token: &str) -> bool {
    let given = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Equal inputs take the same time whatever their content (only the length leaks).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Registers every route and the extractor settings; used by the daemon and by tests alike.
pub fn configure(state: AppState) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.config.http.max_body_bytes;
        cfg.app_data(web::Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::QueryConfig::default().error_handler(|e, _| error::extractor_error(e)))
            .app_data(web::PathConfig::default().error_handler(|e, _| error::extractor_error(e)))
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(move |e, _| error::json_error(e, limit)),
            )
            .service(
                // First (routes match in order) and a static prefix; entries (`/{strategy}/{key}`,
                // key may hold `/`) are parsed by the default service, so the hottest path
                // needs no regex match.
                web::scope("/api/v1/cache")
                    .route("/mget", web::post().to(mget::mget))
                    .route("/invalidate", web::post().to(cache::invalidate))
                    .route("/warm", web::post().to(cache::warm))
                    .default_service(web::to(cache::entry)),
            )
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(prometheus::get_metrics))
            .route("/write", web::post().to(ingest::write_lines))
            .route("/api/v1/import", web::post().to(ingest::import_json_lines))
            .route("/api/v1/ingest", web::post().to(ingest::ingest_points))
            .route("/api/v1/series", web::get().to(query::get_series))
            .route("/api/v1/query_range", web::get().to(query::query_range))
            .route("/api/v1/export", web::get().to(query::export))
            .route("/api/v1/metrics/performance", web::get().to(observe::get_performance))
            .route("/api/v1/metrics/resources/usage", web::get().to(observe::get_resource_usage))
            .route("/api/v1/metrics/health", web::get().to(observe::get_health))
            .route("/api/v1/alerts/thresholds", web::get().to(alerts::list_thresholds))
            .route("/api/v1/alerts/thresholds", web::post().to(alerts::create_threshold))
            .service(
                web::resource("/api/v1/alerts/thresholds/{id}")
                    .route(web::get().to(alerts::get_threshold))
                    .route(web::put().to(alerts::update_threshold))
                    .route(web::delete().to(alerts::delete_threshold)),
            )
            .route("/api/v1/executions", web::post().to(executions::request_slot))
            .route("/api/v1/executions", web::get().to(executions::list_profiles))
            .route("/api/v1/executions/{id}", web::get().to(executions::get_execution))
            .route("/api/v1/executions/{id}/heartbeat", web::post().to(executions::heartbeat))
            .route("/api/v1/executions/{id}/stages", web::post().to(executions::add_stage))
            .route("/api/v1/executions/{id}/finish", web::post().to(executions::finish))
            .route("/api/v1/alerts", web::get().to(alerts::list_alerts))
            .route("/api/v1/alerts/history", web::get().to(alerts::alert_history))
            .route("/api/v1/alerts/silences", web::get().to(alerts::list_silences))
            .route("/api/v1/alerts/silences", web::post().to(alerts::create_silence))
            .route("/api/v1/metrics/cache", web::get().to(metrics::get_cache))
            .route("/api/v1/metrics/cache/clear", web::post().to(metrics::clear_cache))
            .route("/api/v1/queries", web::post().to(metrics::report_queries))
            .route("/api/v1/admin/backup", web::post().to(admin::create_backup))
            .route("/api/v1/admin/backups", web::get().to(admin::list_backups))
            .route("/api/v1/metrics/database", web::get().to(metrics::get_database))
            .route("/api/v1/metrics/queue", web::get().to(metrics::get_queue))
            .default_service(web::to(not_found));
    }
}

/// Runs blocking work (redb scans, writer round trips) on actix's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, error::ApiError> {
    Ok(web::block(f).await.map_err(|e| crate::Error::Internal(format!("blocking pool: {e}")))??)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, error::ApiError> {
    Err(error::ApiError(crate::Error::NotFound(format!("no route for {} {}", req.method(), req.path()))))
}
