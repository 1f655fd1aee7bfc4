//! Execution slots over HTTP: ask for a slot, heartbeat, record stages, finish, read profiles.

use super::AppState;
use super::error::ApiError;
use crate::Error;
use crate::executions::{Admission, ExecState, Execution, Stage};
use crate::model::now_ms;
use crate::store::records;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest `?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// Unknown fields are refused (a `wait` here, not in the query, was silently ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    crew_id: String,
    /// Anything else the client wants to attach; ignored by perfd.
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct WaitParams {
    wait: Option<String>,
}

fn respond(e: Execution) -> HttpResponse {
    match e.state {
        ExecState::Running => HttpResponse::Created().json(e),
        _ => HttpResponse::Accepted().json(e),
    }
}

/// What a withdrawn waiter is answered (nginx's "client closed request"); nobody reads it, but
/// the request monitor counts it.
fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// 201 running, 202 queued (with its position), 429 when the queue is full. With `?wait=30s` a
/// queued request is held until admitted or the wait runs out.
pub async fn request_slot(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<WaitParams>,
    body: web::Json<RequestBody>,
) -> Result<HttpResponse, ApiError> {
    let wait = match params.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => super::duration_param("wait", w)?.min(MAX_WAIT),
    };
    let queued = match state.executions.request(&body.crew_id)? {
        Admission::Running(e) => return Ok(respond(e)),
        Admission::Queued(e) => e,
    };
    let deadline = Instant::now() + wait;
    loop {
        let changed = state.executions.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // A client waiting here is alive: its lease is renewed while it waits, so a wait longer
        // than the lease does not expire the execution it waits for (it got a 404 for it).
        let e = live(&state, queued.id, state.executions.heartbeat(queued.id)).await?;
        if state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::ShuttingDown.into());
        }
        if super::peer::client_gone(&req) {
            // Nobody will read the answer, finish the execution or heartbeat it.
            state.executions.abandon(e.id);
            return Ok(HttpResponse::build(client_closed_request()).finish());
        }
        if e.state != ExecState::Queued || Instant::now() >= deadline {
            return Ok(respond(e));
        }
        let every = super::peer::CHECK_EVERY.min(state.executions.config().lease / 2);
        let wake = deadline.min(Instant::now() + every);
        let _ = tokio::time::timeout_at(wake.into(), changed).await;
    }
}

/// A live execution, or the stored profile of a finished or expired one.
pub async fn get_execution(state: web::Data<AppState>, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state.executions.get(id) {
        Err(Error::NotFound(m)) => {
            let store = state.store.clone();
            let stored = web::block(move || records::profile(&store, id))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            stored.map(|p| HttpResponse::Ok().json(p)).ok_or_else(|| Error::NotFound(m).into())
        }
        other => Ok(HttpResponse::Ok().json(other?)),
    }
}

/// The result of an operation on a live execution; when there was none, a 409 if the execution
/// has ended (finished or expired: a retried finish, a late heartbeat), else the 404.
async fn live<T>(state: &AppState, id: u64, result: crate::Result<T>) -> Result<T, ApiError> {
    let Err(Error::NotFound(m)) = result else { return result.map_err(Into::into) };
    let ended = match state.executions.get(id) {
        Ok(pending) => Some(pending),
        Err(_) => {
            let store = state.store.clone();
            web::block(move || records::profile(&store, id))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
        }
    };
    Err(match ended {
        Some(e) => {
            Error::Conflict(format!("execution {id} has ended ({})", format!("{:?}", e.state).to_lowercase()))
        }
        None => Error::NotFound(m),
    }
    .into())
}

pub async fn heartbeat(state: web::Data<AppState>, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    Ok(HttpResponse::Ok().json(live(&state, id, state.executions.heartbeat(id)).await?))
}

/// A stage as posted: [`Stage`] is also stored (and takes fields added later), so the body's
/// own type is the one that refuses unknown fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageBody {
    name: String,
    duration_ms: f64,
}

pub async fn add_stage(
    state: web::Data<AppState>,
    id: web::Path<u64>,
    body: web::Json<StageBody>,
) -> Result<HttpResponse, ApiError> {
    let (id, StageBody { name, duration_ms }) = (id.into_inner(), body.into_inner());
    let added = state.executions.add_stage(id, Stage { name, duration_ms });
    Ok(HttpResponse::Ok().json(live(&state, id, added).await?))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FinishBody {
    status: Option<String>,
}

/// Frees the slot, admits the next in line and stores the profile durably.
pub async fn finish(
    state: web::Data<AppState>,
    id: web::Path<u64>,
    body: Option<web::Json<FinishBody>>,
) -> Result<HttpResponse, ApiError> {
    let (id, status) = (id.into_inner(), body.and_then(|b| b.into_inner().status));
    let profile = live(&state, id, state.executions.finish(id, status)).await?;
    let (writer, change) = (state.writer.clone(), records::put_profile(&profile)?);
    let stored =
        web::block(move || writer.apply(change)).await.map_err(|e| Error::Internal(e.to_string()))?;
    match stored {
        Ok(()) => state.executions.stored(profile.id),
        // The execution is finished either way; its profile waits for the sampler's next ticks.
        Err(e) => log::warn!("the profile of execution {} is stored later: {e}", profile.id),
    }
    Ok(HttpResponse::Ok().json(profile))
}

#[derive(Debug, Deserialize)]
pub struct ProfileParams {
    crew_id: Option<String>,
    window: Option<String>,
}

/// Stored profiles that ended in the window (newest first, at most 1,000) with queue-wait, run-time and per-stage
/// avg/p95 over the window (default 24 h).
pub async fn list_profiles(
    state: web::Data<AppState>,
    params: web::Query<ProfileParams>,
) -> Result<HttpResponse, ApiError> {
    let window = match params.window.as_deref() {
        None => Duration::from_secs(24 * 3600),
        Some(w) => super::duration_param("window", w)?,
    };
    // Profiles are kept at most `storage.retention` (a few years at most): a longer window reads
    // them all, and a far longer one overflowed the start of the window.
    if window < Duration::from_secs(1) || window > crate::config::MAX_DURATION {
        return Err(Error::invalid("window must be between 1s and 10 years").into());
    }
    let since = now_ms() - window.as_millis() as i64;
    let store = state.store.clone();
    let crew = params.crew_id.clone();
    let profiles: Vec<Execution> = web::block(move || records::profiles_since(&store, since))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??
        .into_iter()
        .filter(|p| crew.as_ref().is_none_or(|c| *c == p.crew_id))
        .collect();
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in &profiles {
        for s in &p.stages {
            stages.entry(s.name.clone()).or_default().push(s.duration_ms);
        }
    }
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        // An empty sum is -0.0 in Rust; no profiles average 0.
        let avg = if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
        let p95 = v.get(((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
        serde_json::json!({"count": v.len(), "avg_ms": avg, "p95_ms": p95})
    };
    let stage_stats: BTreeMap<String, serde_json::Value> =
        stages.into_iter().map(|(k, v)| (k, stats(v))).collect();
    let waits = stats(profiles.iter().filter_map(|p| p.queue_wait_ms).map(|w| w as f64).collect());
    let runs = stats(profiles.iter().filter_map(|p| p.run_time_ms).map(|w| w as f64).collect());
    let recent: Vec<&Execution> = profiles.iter().rev().take(1000).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "count": profiles.len(),
        "queue_wait": waits,
        "run_time": runs,
        "stages": stage_stats,
        "profiles": recent,
    })))
}
