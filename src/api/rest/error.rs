//! The REST API's one error shape: `{"error": {"code", "message"}}` with a status that says
//! what went wrong. Every refusal of this server (bad parameters, unknown routes, missing
//! tokens, the rate limit, timeouts, no source) goes through [`ApiError`], so a client never
//! sees axum's plain-text rejections.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::IntoResponses;
use utoipa::ToSchema;

use crate::query::QueryError;

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A parameter is wrong; the message starts with its name.
    InvalidParameter { param: String, message: String },
    /// The resource does not exist (or is not live).
    NotFound(String),
    /// The route does not exist.
    NoRoute(String),
    /// A method other than GET/HEAD.
    MethodNotAllowed(String),
    /// The bearer token is missing or wrong.
    Unauthorized(String),
    /// Over the client's rate limit; retry after this many seconds.
    RateLimited { retry_after_seconds: u64 },
    /// No source could answer.
    Unavailable(String),
    /// The request took longer than `rest.request_timeout_seconds`.
    Timeout(u64),
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_parameter`, `not_found`, `method_not_allowed`, `unauthorized`,
    /// `rate_limited`, `unavailable` or `timeout`.
    pub code: String,
    /// For `invalid_parameter`, starts with the parameter's name (`fid: ...`).
    pub message: String,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidParameter {
            param: param.to_owned(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::NotFound(_) | ApiError::NoRoute(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Timeout(_) => "timeout",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::InvalidParameter { param, message } => format!("{param}: {message}"),
            ApiError::NotFound(message)
            | ApiError::NoRoute(message)
            | ApiError::MethodNotAllowed(message)
            | ApiError::Unauthorized(message)
            | ApiError::Unavailable(message) => message.clone(),
            ApiError::RateLimited {
                retry_after_seconds,
            } => format!("rate limit exceeded; retry after {retry_after_seconds} s"),
            ApiError::Timeout(seconds) => format!("the request took longer than {seconds} s"),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> ApiError {
        match error {
            QueryError::InvalidInput { param, message } => ApiError::invalid(param, message),
            QueryError::Unavailable { message } => {
                ApiError::Unavailable(format!("no source can answer: {message}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.message(),
            },
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"waypoint\""),
                );
            }
            ApiError::RateLimited {
                retry_after_seconds,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            ApiError::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_errors_keep_the_parameter_and_the_status() {
        let error = ApiError::from(QueryError::invalid("cursor", "not a cursor"));
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.message(), "cursor: not a cursor");
        let error = ApiError::from(QueryError::Unavailable {
            message: "hub: down".into(),
        });
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), "unavailable");
    }
}

/// The error answers every route can give.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only: the answers are built by `ApiError`
pub enum Errors {
    /// A parameter is wrong; the message starts with its name (`invalid_parameter`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `rest.auth_token` is set and the request has no `Authorization: Bearer <token>`, or a
    /// wrong one (`unauthorized`); carries `WWW-Authenticate: Bearer`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The resource does not exist or is not live (`not_found`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Over the client's rate limit (`rate_limited`).
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))]
    RateLimited(ErrorBody),
    /// No source can answer (`unavailable`), or the request timed out (`timeout`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}
