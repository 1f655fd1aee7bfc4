//! The HTTP API: the whole route table on one screen. Handlers live in one file per area and
//! never block a worker: writes `try_send` to the writer, redb scans run in `web::block`.

mod admin;
mod alerts;
mod cache;
pub mod error;
mod executions;
mod fast;
mod hitpath;
mod hosts;
mod ingest;
mod instant;
mod metrics;
mod mget;
mod observe;
mod peer;
mod prometheus;
mod query;

pub use fast::FastCache;
pub use hitpath::{Handed, HitPath, Step, answer_hit};
pub use hosts::HostPolicy;
pub use peer::on_connect;

use crate::config::Config;
use crate::store::Store;
use crate::writer::WriterHandle;
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, guard, web};
use arc_swap::ArcSwap;
use std::sync::Arc;

/// What every handler may use; cloned into each actix worker.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in effect; a reload replaces it (`crate::reload`).
    pub config: Arc<ArcSwap<Config>>,
    pub store: Arc<Store>,
    pub writer: Arc<WriterHandle>,
    pub cache: Arc<crate::cache::TieredCache>,
    pub monitor: Arc<crate::monitor::Monitor>,
    pub published: Arc<crate::sampler::Published>,
    pub executions: Arc<crate::executions::Executions>,
    pub queries: Arc<crate::queries::QueryStats>,
    /// Set when shutdown begins: long polls (`?wait=`) answer 503 at once instead of holding
    /// the graceful stop for up to its 10 s.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// `http.allowed_hosts`: which `Host` and `Origin` a request may name (`hosts.rs`).
    pub hosts: Arc<ArcSwap<HostPolicy>>,
    /// Reads the configuration again and applies it (`POST /api/v1/admin/reload`, SIGHUP).
    pub reloader: Arc<crate::reload::Reloader>,
}

/// The one middleware: times every request by its route pattern (`unmatched` for unknown
/// routes), refuses a `Host` or `Origin` a web page could make a browser send (403,
/// `hosts.rs`) and, with `auth_token` set, makes mutating (non-GET/HEAD) and admin requests show
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
    // Decided before the handler runs: no configuration guard is held across it.
    let refused = hosts::refusal(&state.hosts.load(), req.headers());
    let token_missing = guarded
        && state.config.load().auth_token.as_deref().is_some_and(|t| !bearer_matches(req.headers(), t));
    let res = match refused {
        Some(refused) => {
            let resp = actix_web::ResponseError::error_response(&error::ApiError(refused));
            req.into_response(resp).map_into_right_body()
        }
        _ if websocket_body(req.head()) => {
            let err = error::ApiError(crate::Error::invalid(
                "Upgrade: websocket is not supported: perfd has no WebSocket endpoint",
            ));
            let mut resp = actix_web::ResponseError::error_response(&err);
            // Its body has no end but the connection's, so nothing after it can be read.
            resp.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
            req.into_response(resp).map_into_right_body()
        }
        None if token_missing => {
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

/// A request that is not a GET or HEAD with `Upgrade: websocket`: actix-http makes the rest of
/// the connection its body (whatever `Content-Length` says), so a handler reading it would wait
/// until the client leaves. perfd answers it 400 and closes; a GET or HEAD reads no body and is
/// answered as if the header were not there (RFC 9110 lets a server ignore `Upgrade`).
pub(super) fn websocket_body(head: &actix_http::RequestHead) -> bool {
    !matches!(head.method, actix_web::http::Method::GET | actix_web::http::Method::HEAD)
        && head
            .headers
            .get_all(actix_web::http::header::UPGRADE)
            .any(|v| v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket")))
}

fn bearer_matches(headers: &actix_web::http::header::HeaderMap, token: &str) -> bool {
    let given = headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// A duration in a query parameter (`ttl`, `wait`, `window`): `5s`, `500ms`, `2h30m`, or a
/// bare number of seconds (`30`, `1.5`). Ranges are the caller's to check.
pub(super) fn duration_param(name: &str, text: &str) -> Result<std::time::Duration, crate::Error> {
    let bad = || {
        crate::Error::invalid(format!(
            "invalid {name} {}: use a duration like 5s, 500ms or 2h (a bare number is seconds)",
            crate::error::Shown(text)
        ))
    };
    match text.parse::<f64>() {
        // `Duration::try_from_secs_f64` refuses a negative, NaN or far too large number.
        Ok(secs) if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
            std::time::Duration::try_from_secs_f64(secs).map_err(|_| bad())
        }
        Ok(_) => Err(bad()),
        Err(_) => humantime::parse_duration(text).map_err(|_| bad()),
    }
}

/// Equal inputs take the same time whatever their content (only the length leaks).
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One path and its methods (a GET route answers HEAD too); any other method on the path is a
/// JSON 405 with `Allow`.
macro_rules! resource {
    ($path:expr, $($method:ident => $handler:expr),+ $(,)?) => {
        web::resource($path)
            $(.route(method_route(Method::$method).to($handler)))+
            .default_service(web::to(|req: HttpRequest| async move {
                method_not_allowed(&req, &[$(Method::$method),+])
            }))
    };
}

fn method_route(method: Method) -> actix_web::Route {
    if method == Method::GET {
        web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
    } else {
        web::route().method(method)
    }
}

fn method_not_allowed(req: &HttpRequest, methods: &[Method]) -> Result<HttpResponse, error::ApiError> {
    let mut allow: Vec<&str> = Vec::new();
    for m in methods {
        allow.push(m.as_str());
        if *m == Method::GET {
            allow.push("HEAD");
        }
    }
    let method = req.method().to_string();
    Err(crate::Error::MethodNotAllowed { method, allow: allow.join(", ") }.into())
}

/// Registers every route and the extractor settings; used by the daemon and by tests alike.
pub fn configure(state: AppState) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.config.load().http.max_body_bytes;
        cfg.app_data(web::Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::QueryConfig::default().error_handler(|e, _| error::query_error(e)))
            .app_data(web::PathConfig::default().error_handler(|e, _| error::path_error(e)))
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(move |e, req| error::json_error(e, req, limit)),
            )
            .service(
                // First (routes match in order) and a static prefix; entries (`/{strategy}/{key}`,
                // key may hold `/`) are parsed by the default service, so the hottest path
                // needs no regex match.
                web::scope("/api/v1/cache")
                    .service(resource!("/mget", POST => mget::mget))
                    .service(resource!("/invalidate", POST => cache::invalidate))
                    .service(resource!("/warm", POST => cache::warm))
                    .service(resource!("/keys", GET => cache::list_keys))
                    .default_service(web::to(cache::entry)),
            )
            .service(resource!("/healthz", GET => healthz))
            .service(resource!(hitpath::REFUSED_ROUTE, GET => hitpath::get_refusal))
            .service(resource!("/metrics", GET => prometheus::get_metrics))
            .service(resource!("/write", POST => ingest::write_lines))
            .service(resource!("/api/v1/import", POST => ingest::import_json_lines))
            .service(resource!("/api/v1/ingest", POST => ingest::ingest_points))
            .service(resource!("/api/v1/series", GET => query::get_series))
            .service(resource!("/api/v1/labels", GET => query::label_names))
            .service(resource!("/api/v1/label/{name}/values", GET => query::label_values))
            .service(resource!("/api/v1/query_range", GET => query::query_range))
            .service(resource!("/api/v1/query", GET => instant::instant))
            .service(resource!("/api/v1/export", GET => query::export))
            .service(resource!("/api/v1/status/tsdb", GET => admin::tsdb_status))
            .service(resource!("/api/v1/metrics/performance", GET => observe::get_performance))
            .service(resource!("/api/v1/metrics/resources/usage", GET => observe::get_resource_usage))
            .service(resource!("/api/v1/metrics/health", GET => observe::get_health))
            .service(resource!("/api/v1/alerts/thresholds",
                GET => alerts::list_thresholds, POST => alerts::create_threshold))
            .service(resource!("/api/v1/alerts/thresholds/{id}",
                GET => alerts::get_threshold, PUT => alerts::update_threshold, DELETE => alerts::delete_threshold))
            .service(resource!("/api/v1/executions",
                POST => executions::request_slot, GET => executions::list_profiles))
            .service(resource!("/api/v1/executions/{id}", GET => executions::get_execution))
            .service(resource!("/api/v1/executions/{id}/heartbeat", POST => executions::heartbeat))
            .service(resource!("/api/v1/executions/{id}/stages", POST => executions::add_stage))
            .service(resource!("/api/v1/executions/{id}/finish", POST => executions::finish))
            .service(resource!("/api/v1/alerts", GET => alerts::list_alerts))
            .service(resource!("/api/v1/alerts/history", GET => alerts::alert_history))
            .service(resource!("/api/v1/alerts/silences",
                GET => alerts::list_silences, POST => alerts::create_silence))
            .service(resource!("/api/v1/metrics/cache", GET => metrics::get_cache))
            .service(resource!("/api/v1/metrics/cache/clear", POST => metrics::clear_cache))
            .service(resource!("/api/v1/queries", POST => metrics::report_queries))
            .service(resource!("/api/v1/admin/backup", POST => admin::create_backup))
            .service(resource!("/api/v1/admin/backups", GET => admin::list_backups))
            .service(resource!("/api/v1/admin/reload", POST => admin::reload_config))
            .service(resource!("/api/v1/admin/config", GET => admin::get_config))
            .service(resource!("/api/v1/admin/tsdb/delete_series", POST => admin::delete_series))
            .service(resource!("/api/v1/metrics/database", GET => metrics::get_database))
            .service(resource!("/api/v1/metrics/queue", GET => metrics::get_queue))
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

async fn not_found(req: HttpRequest) -> Result<HttpResponse, error::ApiError> {
    Err(error::ApiError(crate::Error::NotFound(format!("no route for {} {}", req.method(), req.path()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_in_parameters() {
        for (text, want) in [
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("2h30m", Duration::from_secs(9000)),
            ("30", Duration::from_secs(30)),
            ("1.5", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(duration_param("wait", text).unwrap(), want, "{text}");
        }
        for text in ["", "-1", "1e3", "NaN", "inf", "5 parsecs", "1e400", "99999999999999999999999"] {
            let e = duration_param("ttl", text).unwrap_err().to_string();
            assert!(e.starts_with("invalid ttl") && e.ends_with("(a bare number is seconds)"), "{text}: {e}");
        }
    }
}
