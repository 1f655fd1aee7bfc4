//! Read endpoints: `/api/v1/series`, `/api/v1/query_range`, `/api/v1/export`. redb reads run
//! on the blocking pool (`web::block`), off the actix workers.

use super::error::ApiError;
use super::{AppState, blocking};
use crate::Error;
use crate::model::now_ms;
use crate::query::{self, Agg, Selector};
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Default window when `start` is absent: the last hour, like Prometheus' console.
const DEFAULT_WINDOW_MS: i64 = 3_600_000;

#[derive(Debug, Deserialize)]
pub struct SeriesParams {
    /// `match[]` is what Prometheus and VictoriaMetrics clients send.
    #[serde(rename = "match", alias = "match[]")]
    selector: Option<String>,
    /// At most this many listed (`count` is all of them, `truncated` says when some are left out).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct RangeParams {
    query: Option<String>,
    #[serde(rename = "match", alias = "match[]")]
    selector: Option<String>,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
    agg: Option<String>,
    /// Combines the series' buckets: sum|avg|min|max|count (needs `step`).
    group: Option<String>,
    /// Labels (comma-separated; `__name__` for the name) whose values keep series apart.
    by: Option<String>,
}

/// Resolved `[start, end]` in ms; `end` defaults to now, `start` to an hour before `end`.
fn time_range(start: Option<&str>, end: Option<&str>) -> Result<(i64, i64), Error> {
    let end = query::clamp_time(end.map(query::parse_time).transpose()?.unwrap_or_else(now_ms));
    let start = match start {
        Some(s) => query::clamp_time(query::parse_time(s)?),
        None => end - DEFAULT_WINDOW_MS,
    };
    if start > end {
        return Err(Error::invalid(format!("start ({start}) is after end ({end})")));
    }
    Ok((start, end))
}

/// `step` as milliseconds: a number of ms or a duration such as `5m`.
fn parse_step(s: &str) -> Result<i64, Error> {
    let ms = match s.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => humantime::parse_duration(s).map(|d| d.as_millis() as i64).map_err(|_| {
            Error::invalid(format!("invalid step {s:?}: use milliseconds or a duration like 5m"))
        })?,
    };
    if ms <= 0 {
        return Err(Error::invalid("step must be positive"));
    }
    // A step over the whole span of query times is one bucket either way; capped so bucket
    // arithmetic cannot overflow.
    Ok(ms.min(query::MAX_TIME_MS - query::MIN_TIME_MS))
}

pub(super) fn missing(param: &str) -> Error {
    Error::invalid(format!(
        "missing {param}= (a selector such as cpu{{host=\"a\"}} or {{__name__=~\"perfd_cache_.*\"}})"
    ))
}

/// `group` and `by`: how buckets combine across series, and the labels that keep them apart.
pub(super) fn parse_group(
    group: Option<&str>,
    by: Option<&str>,
    stepped: bool,
) -> Result<Option<(query::Combine, Vec<String>)>, Error> {
    let Some(text) = group else {
        return match by {
            Some(_) => Err(Error::invalid("by needs group (sum, avg, min, max or count)")),
            None => Ok(None),
        };
    };
    if !stepped {
        return Err(Error::invalid("group needs step: raw points of different series do not line up"));
    }
    let how = serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        Error::invalid(format!(
            "invalid group {}: use sum, avg, min, max or count",
            crate::error::Shown(text)
        ))
    })?;
    let mut labels = Vec::new();
    for l in by.unwrap_or("").split(',').map(str::trim).filter(|l| !l.is_empty()) {
        if l != query::NAME_LABEL {
            crate::model::validate_label(l, "x")?;
        }
        if labels.len() == crate::model::MAX_LABELS {
            return Err(Error::invalid(format!("by names more than {} labels", crate::model::MAX_LABELS)));
        }
        labels.push(l.to_owned());
    }
    Ok(Some((how, labels)))
}

fn parse_agg(s: Option<&str>) -> Result<Agg, Error> {
    let s = s.unwrap_or("avg");
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        Error::invalid(format!(
            "invalid agg {s:?}: use avg, min, max, sum, count, first, last, rate or deriv"
        ))
    })
}

pub async fn get_series(
    state: web::Data<AppState>,
    params: web::Query<SeriesParams>,
) -> Result<HttpResponse, ApiError> {
    let text = params.selector.as_deref().ok_or_else(|| missing("match"))?;
    let sel = Selector::parse(text)?;
    let keys = query::select(&state.store, &sel);
    let (count, truncated, keys) = limited(keys, params.limit)?;
    let series: Vec<SeriesOut> =
        keys.iter().map(|(_, k)| SeriesOut { name: &k.name, labels: LabelMap(&k.labels) }).collect();
    Ok(HttpResponse::Ok().json(SeriesList { count, truncated, series }))
}

/// The first `limit` items (all without one), with how many there were and whether some were
/// left out.
fn limited<T>(mut items: Vec<T>, limit: Option<usize>) -> Result<(usize, bool, Vec<T>), Error> {
    let count = items.len();
    if let Some(limit) = limit {
        if limit == 0 {
            return Err(Error::invalid("limit must be at least 1"));
        }
        items.truncate(limit);
    }
    Ok((count, items.len() < count, items))
}

/// `match` is optional here: without it, every series.
#[derive(Debug, Deserialize)]
pub struct LabelParams {
    #[serde(rename = "match", alias = "match[]")]
    selector: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/labels`: the label names of the series matched, `__name__` included.
pub async fn label_names(
    state: web::Data<AppState>,
    params: web::Query<LabelParams>,
) -> Result<HttpResponse, ApiError> {
    let sel = params.selector.as_deref().map(Selector::parse).transpose()?;
    let (count, truncated, labels) = limited(query::label_names(&state.store, sel.as_ref()), params.limit)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"count": count, "truncated": truncated, "labels": labels})))
}

/// `GET /api/v1/label/{name}/values`: the values a label has (metric names for `__name__`).
pub async fn label_values(
    state: web::Data<AppState>,
    label: web::Path<String>,
    params: web::Query<LabelParams>,
) -> Result<HttpResponse, ApiError> {
    let label = label.into_inner();
    if label != query::NAME_LABEL {
        crate::model::validate_label(&label, "x")?;
    }
    let sel = params.selector.as_deref().map(Selector::parse).transpose()?;
    let (count, truncated, values) =
        limited(query::label_values(&state.store, &label, sel.as_ref()), params.limit)?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"label": label, "count": count, "truncated": truncated, "values": values})))
}

// Large answers are serialized straight from borrowed data: building a `serde_json::Value`
// first cost about 280 MB of memory to list 100,000 series.

#[derive(Serialize)]
struct SeriesList<'a> {
    count: usize,
    truncated: bool,
    series: Vec<SeriesOut<'a>>,
}

#[derive(Serialize)]
struct SeriesOut<'a> {
    name: &'a str,
    labels: LabelMap<'a>,
}

/// Sorted label pairs written as a JSON object.
struct LabelMap<'a>(&'a [(String, String)]);

impl Serialize for LabelMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct RangeAnswer<'a> {
    series: &'a [query::SeriesResult],
}

pub async fn query_range(
    state: web::Data<AppState>,
    params: web::Query<RangeParams>,
) -> Result<HttpResponse, ApiError> {
    let text = params.query.as_deref().or(params.selector.as_deref()).ok_or_else(|| missing("query"))?;
    let sel = Selector::parse(text)?;
    let (start, end) = time_range(params.start.as_deref(), params.end.as_deref())?;
    let step = params.step.as_deref().map(parse_step).transpose()?;
    let agg = parse_agg(params.agg.as_deref())?;
    let group = parse_group(params.group.as_deref(), params.by.as_deref(), step.is_some())?;
    let max = state.config.load().query.max_points;
    let store = state.store.clone();
    let fingerprint = format!("perfd query_range {} step={}", sel.name_or_scan(), step.is_some());
    let started = std::time::Instant::now();
    let series = blocking(move || match step {
        None => query::read_raw(&store, &sel, start, end, max),
        Some(step) => query::read_aggregated(&store, &sel, start, end, step, agg, max),
    })
    .await;
    let rows = series.as_ref().map_or(0, |s| s.iter().map(|s| s.points.len() as u64).sum());
    state.queries.record(&fingerprint, started.elapsed().as_secs_f64() * 1000.0, rows, series.is_ok());
    let mut series = series?;
    if let Some((how, by)) = group {
        series = query::combine(series, how, &by);
    }
    Ok(HttpResponse::Ok().json(RangeAnswer { series: &series }))
}

/// JSON lines in VictoriaMetrics' export format, which `/api/v1/import` reads back.
pub async fn export(
    state: web::Data<AppState>,
    params: web::Query<RangeParams>,
) -> Result<HttpResponse, ApiError> {
    let text = params.selector.as_deref().or(params.query.as_deref()).ok_or_else(|| missing("match"))?;
    let sel = Selector::parse(text)?;
    let (start, end) = time_range(params.start.as_deref(), params.end.as_deref())?;
    // Streamed: a task asks the blocking pool for one part at a time and hands it over a small
    // channel, so the answer is never whole in memory, a reader that leaves stops the export,
    // and one that stops reading holds no thread (the task waits on the channel). An error
    // after the first bytes can only cut the answer short: the chunked body then has no end,
    // so the client sees the failure.
    let mut exporter = query::Exporter::new(state.store.clone(), &sel, start, end);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    actix_web::rt::spawn(async move {
        loop {
            let made = actix_web::rt::task::spawn_blocking(move || {
                let part = exporter.next_part();
                (exporter, part)
            })
            .await;
            let part = match made {
                Ok((back, part)) => {
                    exporter = back;
                    part
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(format!("export: {e}")))).await;
                    return;
                }
            };
            let item = match part {
                Ok(Some(bytes)) => Ok(Bytes::from(bytes)),
                Ok(None) => return,
                Err(e) => {
                    log::warn!("export cut short: {e}");
                    Err(std::io::Error::other(e.to_string()))
                }
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(Received(rx)))
}

/// The export's parts as its task hands them over.
struct Received(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Received {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
