//! One error type for every endpoint, rendered in each dialect's shape.
//!
//! Handlers return [`ApiError`]. Its `IntoResponse` produces a bare response
//! that carries the error in its extensions; the `frame` middleware
//! (see `api::middleware`) knows the request's dialect and request id and
//! writes the documented body. That keeps handlers free of dialect details
//! and makes rejections, fallbacks, timeouts and panics look the same as
//! handler errors.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::dialect::Dialect;
use super::rate_limit::{Decision, unix_now};
use crate::domain::FieldError;
use crate::store::StoreError;

/// The stable machine codes. Each dialect renders them in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    ValidationError,
    Conflict,
    RateLimitExceeded,
    PayloadTooLarge,
    MethodNotAllowed,
    ServiceUnavailable,
    ServerError,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::ValidationError => StatusCode::BAD_REQUEST,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code in 000's (and the gateway's own) vocabulary.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimitExceeded => "rate_limit_exceeded",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }

    /// The code in 003's vocabulary, which has no separate words for
    /// conflicts, sizes or methods: those are invalid requests there.
    pub fn as_platform_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "authentication_error",
            ErrorCode::Forbidden => "authorization_error",
            ErrorCode::NotFound => "resource_not_found",
            ErrorCode::ValidationError
            | ErrorCode::Conflict
            | ErrorCode::PayloadTooLarge
            | ErrorCode::MethodNotAllowed => "invalid_request",
            ErrorCode::RateLimitExceeded => "rate_limit_exceeded",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::ServerError => "internal_error",
        }
    }
}

/// An error answer. Build it with the constructors; render it by returning it.
/// Boxed so that `Result<T, ApiError>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorParts>);

/// The parts of an [`ApiError`], reachable through `Deref`.
#[derive(Debug, Clone)]
pub struct ErrorParts {
    pub code: ErrorCode,
    pub message: String,
    /// Invalid fields, for validation errors.
    pub fields: Vec<FieldError>,
    /// Unix seconds when a rate limit resets.
    pub reset_at: Option<i64>,
    /// Extra headers (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::ops::Deref for ApiError {
    type Target = ErrorParts;

    fn deref(&self) -> &ErrorParts {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorParts {
        &mut self.0
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorParts {
            code,
            message: message.into(),
            fields: Vec::new(),
            reset_at: None,
            headers: Vec::new(),
        }))
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message).with_header(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    /// A validation error listing the invalid fields.
    pub fn invalid_fields(fields: Vec<FieldError>) -> Self {
        let summary = summary(&fields);
        let mut err = Self::validation(format!("Invalid request parameters: {summary}"));
        err.fields = fields;
        err
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
    }

    /// A 429 for a handshake beyond `server.max_sockets_per_user`.
    pub fn too_many_sockets(limit: usize) -> Self {
        Self::new(
            ErrorCode::RateLimitExceeded,
            format!("Too many open WebSockets: at most {limit} per user; close one first"),
        )
        .with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(5))
    }

    /// A 503 for work refused while a shared budget is spent, with
    /// `Retry-After`.
    pub fn busy(message: impl Into<String>, retry_after_s: u64) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message).with_header(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_s),
        )
    }

    /// A 500. The message is fixed so that nothing internal leaks; log the
    /// cause before returning this.
    pub fn internal() -> Self {
        Self::new(ErrorCode::ServerError, "Internal server error")
    }

    /// A 429 for a refused rate-limit `decision`, with `Retry-After`, the
    /// refusing window's `X-RateLimit-*` headers and its reset time; `what`
    /// begins the message.
    pub fn rate_limited(decision: &Decision, what: &str) -> Self {
        let retry = decision.retry_after(unix_now());
        let mut error = Self::new(
            ErrorCode::RateLimitExceeded,
            format!("{what}; try again in {retry} s"),
        )
        .with_header(axum::http::header::RETRY_AFTER, HeaderValue::from(retry));
        let mut headers = axum::http::HeaderMap::new();
        decision.write_headers(&mut headers);
        for (name, value) in &headers {
            error = error.with_header(name.clone(), value.clone());
        }
        error.reset_at = i64::try_from(decision.reset).ok();
        error
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The status this error has in `dialect`: 002 answers validation errors
    /// with FastAPI's 422 and duplicates with 400.
    pub fn status_in(&self, dialect: Dialect) -> StatusCode {
        match (dialect, self.code) {
            (Dialect::Assistant, ErrorCode::ValidationError) if !self.fields.is_empty() => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            (Dialect::Assistant, ErrorCode::Conflict) => StatusCode::BAD_REQUEST,
            _ => self.code.status(),
        }
    }

    /// The documented JSON body of this error in `dialect`.
    pub fn body_in(&self, dialect: Dialect, request_id: &str) -> Value {
        match dialect {
            Dialect::Chat | Dialect::Gateway => {
                let mut error = json!({ "code": self.code.as_str(), "message": self.message });
                if let Some(details) = self.details_value(false) {
                    error["details"] = details;
                }
                if let Some(reset) = self.reset_at_iso() {
                    error["resetAt"] = Value::String(reset);
                }
                json!({ "error": error })
            }
            Dialect::Platform => {
                let mut error =
                    json!({ "code": self.code.as_platform_str(), "message": self.message });
                if let Some(details) = self.details_value(true) {
                    error["details"] = details;
                }
                if let Some(reset) = self.reset_at_iso() {
                    error["resetAt"] = Value::String(reset);
                }
                json!({ "error": error, "requestId": request_id })
            }
            Dialect::Assistant
                if self.code == ErrorCode::ValidationError && !self.fields.is_empty() =>
            {
                let detail: Vec<Value> = self
                    .fields
                    .iter()
                    .map(|f| {
                        // Fields named `query.<name>` are query parameters.
                        // Fields named `query.<name>` are query parameters;
                        // `query` and `path` are the whole query string or
                        // path.
                        let (root, path) = match f.field.as_str() {
                            "query" | "path" | "body" => (f.field.as_str(), ""),
                            field => match field.strip_prefix("query.") {
                                Some(name) => ("query", name),
                                None => ("body", field),
                            },
                        };
                        let mut loc = vec![Value::from(root)];
                        loc.extend(path.split('.').filter(|part| !part.is_empty()).map(|part| {
                            match part.parse::<u64>() {
                                Ok(n) => Value::from(n),
                                Err(_) => Value::from(part),
                            }
                        }));
                        json!({ "loc": loc, "msg": f.message, "type": f.kind })
                    })
                    .collect();
                json!({ "detail": detail })
            }
            Dialect::Assistant | Dialect::Tickets => json!({ "detail": self.message }),
        }
    }

    /// The invalid fields: structured for 000, a string as 003 documents.
    fn details_value(&self, as_string: bool) -> Option<Value> {
        if self.fields.is_empty() {
            None
        } else if as_string {
            Some(Value::String(summary(&self.fields)))
        } else {
            Some(Value::Array(
                self.fields
                    .iter()
                    .map(|f| json!({ "field": f.field, "message": f.message, "type": f.kind }))
                    .collect(),
            ))
        }
    }

    fn reset_at_iso(&self) -> Option<String> {
        let reset = self.reset_at?;
        chrono::DateTime::from_timestamp(reset, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    /// Renders the complete response for `dialect`.
    pub fn render(&self, dialect: Dialect, request_id: &str) -> Response {
        let body = self.body_in(dialect, request_id);
        let mut response = (self.status_in(dialect), axum::Json(body)).into_response();
        for (name, value) in &self.headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// `field: message; field: message`.
fn summary(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Marks a response as an unrendered [`ApiError`] for the `frame` middleware.
#[derive(Clone)]
pub struct PendingError(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.code.status().into_response();
        response.extensions_mut().insert(PendingError(self));
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            // A row the request refers to went away between its check and
            // the write (a user deleted while their token was still
            // remembered, a category removed meanwhile): the client's
            // problem to resolve, not a server failure.
            StoreError::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                ApiError::conflict("A record this request refers to no longer exists")
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                let busy = matches!(
                    &other,
                    StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
                ) || matches!(
                    &other,
                    StoreError::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                );
                if busy {
                    ApiError::service_unavailable("The database is unavailable; try again shortly")
                } else {
                    ApiError::internal()
                }
            }
        }
    }
}

impl From<crate::auth::PasswordError> for ApiError {
    fn from(err: crate::auth::PasswordError) -> Self {
        match err {
            crate::auth::PasswordError::Busy => {
                ApiError::service_unavailable("Too many sign-ins at once; try again in a moment")
                    .with_header(
                        axum::http::header::RETRY_AFTER,
                        HeaderValue::from_static("1"),
                    )
            }
            other => {
                tracing::error!(error = %other, "password hashing failed");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::service::ServiceError> for ApiError {
    fn from(err: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError;
        match err {
            ServiceError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            ServiceError::Forbidden(why) => ApiError::forbidden(why),
            ServiceError::Closed => {
                ApiError::conflict("The conversation is closed and accepts no new messages")
            }
            ServiceError::Conflict(why) => ApiError::conflict(why),
            ServiceError::Invalid(fields) => ApiError::invalid_fields(fields),
            ServiceError::Rejected(why) => ApiError::validation(why),
            ServiceError::Internal(what) => {
                tracing::error!(what, "internal failure");
                ApiError::internal()
            }
            ServiceError::Store(e) => e.into(),
            ServiceError::Assistant(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_per_dialect() {
        let err = ApiError::not_found("Session not found");
        assert_eq!(
            err.body_in(Dialect::Chat, "req-1"),
            json!({"error": {"code": "not_found", "message": "Session not found"}})
        );
        assert_eq!(
            err.body_in(Dialect::Platform, "req-1"),
            json!({"error": {"code": "resource_not_found", "message": "Session not found"}, "requestId": "req-1"})
        );
        assert_eq!(
            err.body_in(Dialect::Assistant, "req-1"),
            json!({"detail": "Session not found"})
        );
        assert_eq!(
            err.body_in(Dialect::Tickets, "req-1"),
            json!({"detail": "Session not found"})
        );
    }

    #[test]
    fn fastapi_validation_list() {
        let err = ApiError::invalid_fields(vec![FieldError::missing("email")]);
        assert_eq!(
            err.status_in(Dialect::Assistant),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(err.status_in(Dialect::Chat), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.body_in(Dialect::Assistant, "r"),
            json!({"detail": [{"loc": ["body", "email"], "msg": "field required", "type": "value_error.missing"}]})
        );
    }

    #[test]
    fn reset_at_rendered_in_chat_and_platform() {
        let mut err = ApiError::new(ErrorCode::RateLimitExceeded, "slow down");
        err.reset_at = Some(1_700_000_000);
        let body = err.body_in(Dialect::Chat, "r");
        assert_eq!(body["error"]["resetAt"], "2023-11-14T22:13:20.000Z");
        let body = err.body_in(Dialect::Platform, "r");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["resetAt"], "2023-11-14T22:13:20.000Z");
    }
}
