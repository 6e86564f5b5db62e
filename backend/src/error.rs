//! The API's one error type and its mapping to HTTP status codes and JSON bodies.

use std::collections::BTreeMap;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{json, Value};

/// Per-field validation messages, e.g. `{"title": "must be 1 to 200 characters"}`.
pub type FieldErrors = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("the token's subject does not match the user in the path")]
    Forbidden,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("the task has version {current}; If-Match asked for {expected}")]
    PreconditionFailed { expected: String, current: i64 },
    /// A write naming an ETag that is no longer current (or naming none for what now exists).
    #[error("{0}")]
    StaleWrite(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request is invalid")]
    Validation(FieldErrors),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        // A restart of PostgreSQL breaks the pooled connections under the requests in flight:
        // the database is away, as when the pool cannot connect, not a fault of the server.
        if taskflow_db::pool::connection_lost(&e) {
            return ApiError::Unavailable(format!("database unavailable: {e}"));
        }
        ApiError::Internal(e.into())
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ApiError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        ApiError::Unavailable(format!("database unavailable: {e}"))
    }
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(FieldErrors::from([(field.to_owned(), message.into())]))
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::PreconditionFailed { .. } => "version_mismatch",
            ApiError::StaleWrite(_) => "etag_mismatch",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Validation(fields) => json!({ "fields": fields }),
            ApiError::PreconditionFailed { current, .. } => json!({ "current_version": current }),
            ApiError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            _ => json!({}),
        }
    }
}

/// Every error answer's body (the OpenAPI component `Error`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    #[schema(inline)]
    error: ErrorInner<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorInner<'a> {
    /// Machine-readable, e.g. `validation_failed`, `version_mismatch`, `unauthorized`.
    #[schema(value_type = String)]
    code: &'a str,
    message: String,
    /// `fields` (field name to message) for 422, `current_version` for 412, `limit_bytes` for 413.
    #[schema(value_type = Object)]
    details: Value,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PreconditionFailed { .. } | ApiError::StaleWrite(_) => {
                StatusCode::PRECONDITION_FAILED
            }
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // The cause chain goes to the log, never to the client.
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized(_) = self {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(ErrorBody {
            error: ErrorInner {
                code: self.code(),
                message,
                details: self.details(),
            },
        })
    }
}

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Maps actix's JSON extractor errors onto the API's error codes.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) if e.is_syntax() || e.is_eof() => {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("invalid_body", format!("the body has the wrong shape: {e}"))
        }
        other => ApiError::bad_request("invalid_body", other.to_string()),
    };
    api.into()
}

/// Unparseable path segments (such as a task id that is not a UUID) name no resource.
pub fn path_error(_err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound("no such resource").into()
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    fn status_and_code(e: DieselError) -> (StatusCode, &'static str) {
        let api = ApiError::from(e);
        (api.status_code(), api.code())
    }

    // Found by ./dev chaos: requests in flight while PostgreSQL restarted answered 500 internal.
    #[test]
    fn a_connection_lost_under_a_request_is_503_unavailable() {
        let closed = DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_owned()),
        );
        let shutdown = DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("terminating connection due to administrator command".to_owned()),
        );
        for e in [closed, shutdown] {
            assert_eq!(
                status_and_code(e),
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            );
        }
    }

    #[test]
    fn other_database_errors_stay_internal() {
        let unique = DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("duplicate key value".to_owned()),
        );
        assert_eq!(
            status_and_code(unique),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
    }
}
