//! The cache fast path: a thin service in front of the actix `App` that answers the two
//! hottest requests itself and hands every other request to the App unchanged (on connections
//! that have made no other request, the hit path in `hitpath/` answers them below actix-http):
//! - `GET /api/v1/cache/{strategy}/{key}` (no query string) when L1 holds the key; a miss is
//!   not counted here and goes to the App, which counts it once;
//! - `POST /api/v1/cache/mget` without `Content-Encoding`, when no auth token is configured or
//!   the request carries the right one (otherwise the App answers, 401 included).
//!
//! Either only with a `Host` and `Origin` that `hosts.rs` allows (the App answers the 403).
//!
//! Why: a cache hit's useful work is ~100 ns; the App's request setup, router, middleware and
//! extractors cost several times that. Skipping them is what lets perfd keep up with Redis
//! (README, "Performance"). Answers, errors, statistics and request timing are the same as the
//! App's: both use `cache::hit_response` and `mget::mget_answer`.

use super::AppState;
use super::cache::{ENTRY_ROUTE, hit_response, percent_decoded, split_entry_path};
use super::error::ApiError;
use super::mget::{MGET_ROUTE, mget_answer};
use crate::cache::Level;
use crate::monitor::RouteId;
use actix_http::{Method, Payload, Request, Response};
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{AppConfig, Service, ServiceFactory, ServiceResponse};
use actix_web::http::header;
use actix_web::{Error, HttpMessage, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Wraps the App's service factory (`App::into_factory()`; see the module doc).
pub struct FastCache<F> {
    pub app: F,
    pub state: AppState,
}

pub struct FastCacheService<S> {
    app: Rc<S>,
    /// The monitor's ids of the two routes answered here.
    entry_id: RouteId,
    mget_id: RouteId,
    /// `Rc`: one non-atomic increment per mget instead of one atomic one per `Arc` inside.
    state: Rc<AppState>,
}

type Answer<B> = Response<EitherBody<B, BoxBody>>;

impl<F, B> ServiceFactory<Request> for FastCache<F>
where
    F: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = Error,
            InitError = (),
        >,
    F::Service: 'static,
    F::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = Answer<B>;
    type Error = Error;
    type Config = AppConfig;
    type Service = FastCacheService<F::Service>;
    type InitError = ();
    type Future = Pin<Box<dyn Future<Output = Result<Self::Service, ()>>>>;

    fn new_service(&self, cfg: AppConfig) -> Self::Future {
        let app = self.app.new_service(cfg);
        let state = Rc::new(self.state.clone());
        let entry_id = state.monitor.route_id(ENTRY_ROUTE, "GET");
        let mget_id = state.monitor.route_id(MGET_ROUTE, "POST");
        Box::pin(async move { Ok(FastCacheService { app: Rc::new(app.await?), entry_id, mget_id, state }) })
    }
}

/// Either the answer is ready (a hit) or still to come (an mget, or the App's).
pub enum AnswerFuture<B> {
    Ready(Option<Response<BoxBody>>),
    Pending(Pin<Box<dyn Future<Output = Result<Answer<B>, Error>>>>),
}

impl<B> Future for AnswerFuture<B> {
    type Output = Result<Answer<B>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            AnswerFuture::Ready(answer) => match answer.take() {
                Some(a) => Poll::Ready(Ok(a.map_body(|_, b| EitherBody::right(b)))),
                None => Poll::Ready(Err(actix_web::error::ErrorInternalServerError("polled twice"))),
            },
            AnswerFuture::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

impl<S, B> Service<Request> for FastCacheService<S>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = Answer<B>;
    type Error = Error;
    type Future = AnswerFuture<B>;

    actix_web::dev::forward_ready!(app);

    fn call(&self, req: Request) -> Self::Future {
        let started = Instant::now();
        // A Host or Origin from a web page goes to the App, whose middleware refuses it.
        if super::hosts::refusal(&self.state.hosts.load(), req.headers()).is_some() {
            return self.app_answer(req);
        }
        if let Some(hit) = self.hit(&req) {
            // One wall-clock reading serves expiry, max-age and the monitor's bucket.
            let (hit, now_ms) = hit;
            self.state.monitor.record_id(self.entry_id, 200, started.elapsed(), now_ms);
            return AnswerFuture::Ready(Some(hit));
        }
        if self.is_fast_mget(&req) {
            let mut req = req;
            let (state, payload, mget_id) = (self.state.clone(), req.take_payload(), self.mget_id);
            return AnswerFuture::Pending(Box::pin(async move {
                let limit = state.config.load().http.max_body_bytes;
                let answer = match read_body(payload, limit).await {
                    Ok(body) => mget_answer(&state, req.headers(), &body).await,
                    Err(e) => Err(e),
                };
                let resp = answer.unwrap_or_else(|e| e.error_response());
                let status = resp.status().as_u16();
                let elapsed = started.elapsed();
                state.monitor.record_id(mget_id, status, elapsed, crate::model::now_ms());
                Ok(Response::from(resp).map_body(|_, b| EitherBody::right(b)))
            }));
        }
        self.app_answer(req)
    }
}

impl<S, B> FastCacheService<S>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    fn app_answer(&self, req: Request) -> AnswerFuture<B> {
        let app = self.app.clone();
        AnswerFuture::Pending(Box::pin(async move {
            let res = app.call(req).await?;
            Ok(Response::from(res).map_body(|_, b| EitherBody::left(b)))
        }))
    }
}

/// The whole body, up to `limit` bytes (one chunk, the usual case, is not copied).
async fn read_body(mut payload: Payload, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError(crate::Error::TooLarge(format!(
            "request body is larger than {limit} bytes (after decompression)"
        )))
    };
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut payload).poll_next(cx)).await {
        let chunk = chunk
            .map_err(|e| ApiError(crate::Error::invalid(format!("could not read the request body: {e}"))))?;
        let held = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if held + chunk.len() > limit {
            return Err(too_large());
        }
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            held => {
                if let Some(b) = held {
                    rest.extend_from_slice(&b);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

impl<S> FastCacheService<S> {
    /// A plain mget this path may answer (see the module doc).
    fn is_fast_mget(&self, req: &Request) -> bool {
        let headers = req.headers();
        req.method() == Method::POST
            && req.uri().path() == MGET_ROUTE
            && !headers.contains_key(header::CONTENT_ENCODING)
            && !super::websocket_body(req.head())
            && self
                .state
                .config
                .load()
                .auth_token
                .as_deref()
                .is_none_or(|t| super::bearer_matches(headers, t))
    }

    /// The answer (and the Unix ms it used) when this is a plain GET of an entry L1 holds;
    /// `None` hands it to the App.
    fn hit(&self, req: &Request) -> Option<(Response<BoxBody>, i64)> {
        if req.method() != Method::GET || req.uri().query().is_some() {
            return None;
        }
        let (strategy, key) = split_entry_path(req.uri().path())?;
        let (strategy, key) = (percent_decoded(strategy).ok()?, percent_decoded(key).ok()?);
        let now_ms = crate::model::now_ms();
        let entry = self.state.cache.get_l1_hit(&strategy, &key, now_ms)?;
        Some((hit_response(entry, Level::L1, now_ms).into(), now_ms))
    }
}
