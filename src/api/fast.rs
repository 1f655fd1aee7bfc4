//! The cache-hit fast path: a thin service in front of the actix `App` that answers
//! `GET /api/v1/cache/{strategy}/{key}` (no query string) straight from L1 when L1 holds the key,
//! and hands every other request, misses included, to the App unchanged.
//!
//! Why: a cache hit is perfd's hottest request and its useful work is ~100 ns; the App's request
//! setup, router, middleware and extractors cost several times that. Skipping them for hits is
//! what lets perfd keep up with Redis on a GET (README, "Performance"). The answer is the same
//! bytes and headers the App's handler gives (both use `cache::hit_response`), the hit is counted
//! and timed the same way, and a miss is not counted here, so the App counts it once.

use super::AppState;
use super::cache::{ENTRY_ROUTE, hit_response, percent_decoded, split_entry_path};
use crate::cache::Level;
use actix_http::{Method, Request, Response};
use actix_web::Error;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{AppConfig, Service, ServiceFactory, ServiceResponse};
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
    state: AppState,
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
        let state = self.state.clone();
        Box::pin(async move { Ok(FastCacheService { app: Rc::new(app.await?), state }) })
    }
}

/// Either the answer is ready (a hit) or it is the App's.
pub enum AnswerFuture<B> {
    Ready(Option<Response<BoxBody>>),
    App(Pin<Box<dyn Future<Output = Result<Answer<B>, Error>>>>),
}

impl<B> Future for AnswerFuture<B> {
    type Output = Result<Answer<B>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            AnswerFuture::Ready(answer) => match answer.take() {
                Some(a) => Poll::Ready(Ok(a.map_body(|_, b| EitherBody::right(b)))),
                None => Poll::Ready(Err(actix_web::error::ErrorInternalServerError("polled twice"))),
            },
            AnswerFuture::App(f) => f.as_mut().poll(cx),
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
        if let Some(hit) = self.hit(&req) {
            let elapsed = started.elapsed();
            self.state.monitor.record(ENTRY_ROUTE, "GET", 200, elapsed, crate::model::now_ms());
            return AnswerFuture::Ready(Some(hit));
        }
        let app = self.app.clone();
        AnswerFuture::App(Box::pin(async move {
            let res = app.call(req).await?;
            Ok(Response::from(res).map_body(|_, b| EitherBody::left(b)))
        }))
    }
}

impl<S> FastCacheService<S> {
    /// The answer when this is a plain GET of an entry L1 holds; `None` hands it to the App.
    fn hit(&self, req: &Request) -> Option<Response<BoxBody>> {
        if req.method() != Method::GET || req.uri().query().is_some() {
            return None;
        }
        let (strategy, key) = split_entry_path(req.uri().path())?;
        let (strategy, key) = (percent_decoded(strategy).ok()?, percent_decoded(key).ok()?);
        let entry = self.state.cache.get_l1_hit(&strategy, &key)?;
        Some(hit_response(entry, Level::L1).into())
    }
}
