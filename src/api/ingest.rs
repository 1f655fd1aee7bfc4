//! Ingest endpoints: `/write` (Influx line protocol), `/api/v1/import` (VictoriaMetrics JSON
//! lines), `/api/v1/ingest` (JSON array). Parse, then hand the batch to the writer and wait for
//! its durable commit (or only for the queue with `?ack=queued`).

use super::AppState;
use super::error::{ApiError, body_error};
use crate::Error;
use crate::ingest::{BatchBuilder, json, line_protocol};
use crate::model::{TimeBounds, now_ms};
use crate::writer::WriteBatch;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

/// Query parameters of every ingest endpoint. Influx clients also send `db`, `rp`, `u`, `p`,
/// `org`, `bucket`: accepted and ignored, so Telegraf works unchanged.
#[derive(Debug, Deserialize)]
pub struct IngestParams {
    precision: Option<String>,
    /// `durable` (default): answer after the commit; `queued`: answer 202 once queued.
    ack: Option<String>,
}

type Body = Result<web::Bytes, actix_web::Error>;

fn prepare(
    state: &AppState,
    params: &IngestParams,
    body: Body,
) -> Result<(web::Bytes, BatchBuilder, i64, bool), ApiError> {
    let body = body.map_err(|e| body_error(e, state.config.load().http.max_body_bytes))?;
    let queued = match params.ack.as_deref() {
        None | Some("durable") => false,
        Some("queued") => true,
        Some(other) => {
            return Err(Error::invalid(format!("invalid ack {other:?}: use durable or queued")).into());
        }
    };
    let now = now_ms();
    let bounds = TimeBounds::new(now, state.config.load().storage.retention.as_millis() as i64);
    Ok((body, BatchBuilder::new(bounds), now, queued))
}

/// Sends the batch to the writer. `None` when nothing was waited for (empty or queued).
async fn commit(
    state: &AppState,
    batch: WriteBatch,
    queued: bool,
) -> Result<Option<crate::writer::WriteAck>, ApiError> {
    if batch.series.is_empty() {
        return Ok(None);
    }
    match state.writer.submit(batch, !queued)? {
        None => Ok(None),
        Some(rx) => Ok(Some(rx.await.map_err(|_| Error::ShuttingDown)??)),
    }
}

fn queued_response(points: usize) -> HttpResponse {
    HttpResponse::Accepted().json(serde_json::json!({"status": "queued", "points": points}))
}

pub async fn write_lines(
    state: web::Data<AppState>,
    params: web::Query<IngestParams>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let (body, mut builder, now, queued) = prepare(&state, &params, body)?;
    let precision = line_protocol::Precision::parse(params.precision.as_deref().unwrap_or("ns"))?;
    line_protocol::parse(&body, precision, now, &mut builder)?;
    let points = builder.point_count();
    commit(&state, builder.finish(), queued).await?;
    Ok(if queued { queued_response(points) } else { HttpResponse::NoContent().finish() })
}

pub async fn import_json_lines(
    state: web::Data<AppState>,
    params: web::Query<IngestParams>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let (body, mut builder, _, queued) = prepare(&state, &params, body)?;
    json::parse_import(&body, &mut builder)?;
    let points = builder.point_count();
    commit(&state, builder.finish(), queued).await?;
    Ok(if queued { queued_response(points) } else { HttpResponse::NoContent().finish() })
}

pub async fn ingest_points(
    state: web::Data<AppState>,
    params: web::Query<IngestParams>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let (body, mut builder, now, queued) = prepare(&state, &params, body)?;
    json::parse_ingest(&body, now, &mut builder)?;
    let points = builder.point_count();
    let ack = commit(&state, builder.finish(), queued).await?;
    Ok(match ack {
        _ if queued => queued_response(points),
        Some(a) => {
            HttpResponse::Ok().json(serde_json::json!({"points": a.points, "new_series": a.new_series}))
        }
        None => HttpResponse::Ok().json(serde_json::json!({"points": 0, "new_series": 0})),
    })
}
