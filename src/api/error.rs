//! The one place domain errors become HTTP: `ApiError(Error)` → status + `{"error": {code, message}}`.

use crate::error::Error;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, error::PayloadError};

#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ApiError {
    fn code(&self) -> (StatusCode, &'static str) {
        match &self.0 {
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::SeriesLimit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "series_limit"),
            Error::TooManyPoints(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_points"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::UnknownStrategy(_) => (StatusCode::NOT_FOUND, "unknown_strategy"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::QueueFull(_) => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::StorageFailed { full: true, .. } => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            Error::StorageFailed { full: false, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            // A read that met a storage failure, or the reopen that ends one (`writer::fault`).
            Error::Store(redb::Error::PreviousIo | redb::Error::DatabaseClosed) => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            // A file perfd writes besides the database (a backup) found no room.
            Error::Io(_) if crate::writer::fault::storage_failure(&self.0) == Some(true) => {
                (StatusCode::INSUFFICIENT_STORAGE, "storage_full")
            }
            // Only a reload meets one at run time: the file on disk no longer loads.
            Error::Config(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config"),
            Error::Store(_) | Error::Corrupt(_) | Error::Io(_) | Error::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.code();
        // Refusals the daemon expects (overload, shutdown, a storage fault the writer logs once)
        // are not logged per request.
        let expected =
            status == StatusCode::SERVICE_UNAVAILABLE || matches!(self.0, Error::StorageFailed { .. });
        if status.is_server_error() && !expected {
            log::error!("{code}: {}", self.0);
        }
        let mut resp = HttpResponse::build(status);
        match &self.0 {
            Error::Overloaded { retry_after_secs } | Error::StorageFailed { retry_after_secs, .. } => {
                resp.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            Error::Unavailable(_) | Error::Store(redb::Error::PreviousIo | redb::Error::DatabaseClosed) => {
                resp.insert_header(("Retry-After", "1"));
            }
            Error::MethodNotAllowed { allow, .. } => {
                resp.insert_header(("Allow", allow.as_str()));
            }
            _ => {}
        }
        resp.json(serde_json::json!({"error": {"code": code, "message": self.0.to_string()}}))
    }
}

/// Maps a failed body extraction (too large, bad gzip, broken connection) to the JSON error.
pub fn body_error(e: actix_web::Error, limit: usize) -> ApiError {
    match e.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError(Error::TooLarge(format!(
            "request body is larger than {limit} bytes (after decompression)"
        ))),
        _ => ApiError(Error::invalid(format!("could not read the request body: {e}"))),
    }
}

/// For `QueryConfig`/`PathConfig`/`JsonConfig` error handlers: malformed parameters are a 400.
pub fn extractor_error(e: impl std::fmt::Display) -> actix_web::Error {
    ApiError(Error::invalid(e.to_string())).into()
}

/// For `QueryConfig`: says it is the query string, with serde's reason ("invalid query string:
/// invalid digit found in string" where actix said "Query deserialize error: …").
pub fn query_error(e: actix_web::error::QueryPayloadError) -> actix_web::Error {
    match e {
        actix_web::error::QueryPayloadError::Deserialize(e) => {
            ApiError(Error::invalid(format!("invalid query string: {e}"))).into()
        }
        e => extractor_error(e),
    }
}

/// For `PathConfig`: as [`query_error`], for a path segment (an id that is not a number).
pub fn path_error(e: actix_web::error::PathError) -> actix_web::Error {
    match e {
        actix_web::error::PathError::Deserialize(e) => {
            ApiError(Error::invalid(format!("invalid path: {e}"))).into()
        }
        e => extractor_error(e),
    }
}

/// For `JsonConfig`: an oversized body is a 413, anything else malformed a 400, with what to
/// send instead (actix's own texts were "Content type error" and "Json deserialize error: …").
/// The JSON content type stays required: a browser cannot send it cross-origin without a
/// preflight perfd does not answer, so a web page cannot change a local perfd's state.
pub fn json_error(
    e: actix_web::error::JsonPayloadError,
    req: &actix_web::HttpRequest,
    limit: usize,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    match e {
        J::Overflow { .. } | J::OverflowKnownLength { .. } => {
            ApiError(Error::TooLarge(format!("request body is larger than {limit} bytes"))).into()
        }
        J::ContentType => {
            let sent = req.headers().get(actix_web::http::header::CONTENT_TYPE);
            let sent = match sent.map(|v| v.to_str().unwrap_or("?")) {
                Some(t) => format!("got {}", crate::error::Shown(t)),
                None => "got none".to_owned(),
            };
            ApiError(Error::invalid(format!(
                "the body must be JSON with Content-Type: application/json ({sent})"
            )))
            .into()
        }
        J::Deserialize(e) => ApiError(Error::invalid(format!("invalid JSON body: {e}"))).into(),
        e => extractor_error(e),
    }
}
