//! `GET /api/v1/query`: each series' newest value at a time (now by default), looking back at
//! most `lookback` (5 minutes), optionally combined across series (`group`, `by`), as an
//! instant query in Prometheus. Read from window summaries, so whole sealed hours cost their
//! chunk headers.

use super::error::ApiError;
use super::query::{missing, parse_group};
use super::{AppState, blocking};
use crate::Error;
use crate::query::{self, Selector, SeriesResult};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

const DEFAULT_LOOKBACK_MS: i64 = 5 * 60_000;

#[derive(Debug, Deserialize)]
pub struct InstantParams {
    query: Option<String>,
    #[serde(rename = "match", alias = "match[]")]
    selector: Option<String>,
    time: Option<String>,
    lookback: Option<String>,
    group: Option<String>,
    by: Option<String>,
}

#[derive(Serialize)]
struct Answer {
    time: i64,
    series: Vec<Latest>,
}

/// A series' (or a group's) value, and when it was recorded (a group's newest member's).
#[derive(Serialize)]
struct Latest {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
    at_ms: i64,
}

pub async fn instant(
    state: web::Data<AppState>,
    params: web::Query<InstantParams>,
) -> Result<HttpResponse, ApiError> {
    let text = params.query.as_deref().or(params.selector.as_deref()).ok_or_else(|| missing("query"))?;
    let sel = Selector::parse(text)?;
    let time = query::clamp_time(
        params.time.as_deref().map(query::parse_time).transpose()?.unwrap_or_else(crate::model::now_ms),
    );
    let lookback = match params.lookback.as_deref() {
        Some(t) => i64::try_from(super::duration_param("lookback", t)?.as_millis()).unwrap_or(i64::MAX),
        None => DEFAULT_LOOKBACK_MS,
    };
    if lookback == 0 || lookback > query::MAX_TIME_MS {
        return Err(Error::invalid("lookback must be above 0 and at most 100,000,000 days").into());
    }
    // `true`: a group needs no step here, every value is taken at one time.
    let group = parse_group(params.group.as_deref(), params.by.as_deref(), true)?;
    let store = state.store.clone();
    let start = time.saturating_sub(lookback).max(query::MIN_TIME_MS);
    let windows = blocking(move || query::read_windows(&store, &sel, (start, time), false)).await?;
    // Values and their times as two series each, stamped with the query time so groups line up.
    let (values, times): (Vec<SeriesResult>, Vec<SeriesResult>) = windows
        .iter()
        .map(|(key, s)| {
            let series = |v: f64| SeriesResult {
                name: key.name.clone(),
                labels: key.labels.iter().cloned().collect(),
                points: vec![(time, v)],
            };
            (series(s.last.1), series(s.last.0 as f64))
        })
        .unzip();
    let (values, times) = match group {
        Some((how, by)) => {
            (query::combine(values, how, &by), query::combine(times, query::Combine::Max, &by))
        }
        None => (values, times),
    };
    let series = values
        .into_iter()
        .zip(times)
        .filter_map(|(v, t)| {
            let (value, at) = (v.points.first()?.1, t.points.first()?.1);
            Some(Latest { name: v.name, labels: v.labels, value, at_ms: at as i64 })
        })
        .collect();
    Ok(HttpResponse::Ok().json(Answer { time, series }))
}
