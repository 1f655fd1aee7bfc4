//! What perfd sees: `/api/v1/metrics/performance`, `/resources/usage` and `/health`.

use super::AppState;
use super::error::ApiError;
use crate::Error;
use crate::model::now_ms;
use crate::query::{Selector, read_windows};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use std::time::Duration;

/// Longest window answered: the request-timing history and the default are 24 h.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// An endpoint whose p99 exceeds this is called slow in the recommendations.
const SLOW_P99_MS: f64 = 1000.0;
/// An endpoint whose error rate exceeds this is called failing.
const FAILING_PERCENT: f64 = 5.0;

#[derive(Debug, Deserialize)]
pub struct WindowParams {
    window: Option<String>,
}

fn window(p: &WindowParams, default: &str) -> Result<(Duration, String), Error> {
    let text = p.window.clone().unwrap_or_else(|| default.to_owned());
    let d = super::duration_param("window", &text)?;
    if d.is_zero() || d > MAX_WINDOW {
        return Err(Error::invalid("window must be between 1s and 24h"));
    }
    Ok((d, text))
}

/// Per-endpoint request figures, the slowest endpoints and recommendations. Computed once a
/// minute at most per window (strategy `performance`, single flight across callers).
pub async fn get_performance(
    state: web::Data<AppState>,
    params: web::Query<WindowParams>,
) -> Result<HttpResponse, ApiError> {
    let (win, text) = window(&params, "24h")?;
    let key = format!("http_performance:{}", win.as_secs());
    let s = state.clone();
    let body = state
        .cache
        .get_or_load("performance", &key, || async move {
            let endpoints = s.monitor.summarize(win, now_ms());
            let mut slowest = endpoints.clone();
            slowest.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms));
            slowest.truncate(5);
            let requests: u64 = endpoints.iter().map(|e| e.requests).sum();
            let errors: f64 =
                endpoints.iter().map(|e| e.error_rate_percent * e.requests as f64 / 100.0).sum();
            let mut recommendations = Vec::new();
            for e in &endpoints {
                if e.p99_ms > SLOW_P99_MS {
                    recommendations
                        .push(format!("{} {} is slow (p99 {:.0} ms).", e.method, e.route, e.p99_ms));
                }
                if e.requests >= 20 && e.error_rate_percent > FAILING_PERCENT {
                    recommendations.push(format!(
                        "{} {} fails {:.1} % of requests.",
                        e.method, e.route, e.error_rate_percent
                    ));
                }
            }
            let body = serde_json::json!({
                "window": text,
                "requests": requests,
                "requests_per_sec": requests as f64 / win.as_secs_f64(),
                "error_rate_percent": if requests == 0 { 0.0 } else { 100.0 * errors / requests as f64 },
                "endpoints": endpoints,
                "slowest": slowest,
                "recommendations": recommendations,
            });
            serde_json::to_vec(&body).map(Into::into).map_err(|e| Error::Internal(e.to_string()))
        })
        .await?;
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// Series summarized by `/resources/usage`.
const RESOURCE_SERIES: [&str; 9] = [
    "perfd_cpu_percent",
    "perfd_memory_percent",
    "perfd_disk_used_percent",
    "perfd_disk_available_bytes",
    "perfd_network_rx_bytes_per_sec",
    "perfd_network_tx_bytes_per_sec",
    "perfd_process_cpu_percent",
    "perfd_process_rss_bytes",
    "perfd_load1",
];

/// The latest reading plus min/avg/max of each resource series over the window.
pub async fn get_resource_usage(
    state: web::Data<AppState>,
    params: web::Query<WindowParams>,
) -> Result<HttpResponse, ApiError> {
    let (win, text) = window(&params, "1h")?;
    let latest = state.published.resources.read().clone();
    let store = state.store.clone();
    let end = now_ms();
    let start = end - win.as_millis() as i64;
    // Whole sealed hours come from chunk headers: a day at a 1 s sampler is not decoded.
    let summary = web::block(move || -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        let mut out = serde_json::Map::new();
        for name in RESOURCE_SERIES {
            for (key, s) in read_windows(&store, &Selector::parse(name)?, (start, end), false)? {
                let key = match key.labels.iter().find(|(l, _)| l == "mount") {
                    Some((_, m)) => format!("{name}{{mount={m:?}}}"),
                    None => name.to_owned(),
                };
                let avg = s.sum / s.count as f64;
                out.insert(
                    key,
                    serde_json::json!({"min": s.min, "avg": avg, "max": s.max, "samples": s.count}),
                );
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(serde_json::json!({"window": text, "latest": latest, "summary": summary})))
}

/// Score, status, components, recommendations; 503 when unhealthy so load balancers and
/// systemd checks can use it.
pub async fn get_health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let health = state.published.health.read().clone().ok_or_else(|| Error::ShuttingDown)?;
    let mut resp =
        if health.status == "unhealthy" { HttpResponse::ServiceUnavailable() } else { HttpResponse::Ok() };
    Ok(resp.json(serde_json::json!({
        "score": health.score,
        "status": health.status,
        "components": health.components,
        "active_alerts": state.published.alerts.read().clone(),
        "recommendations": health.recommendations,
    })))
}
