//! The OpenAPI 3.1 document (`/openapi.json`), a page that renders it
//! (`/docs`), and the error schemas every dialect shares.

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::server::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Support gateway",
        description = "One domain, five API dialects: 000/001 `/api/chat`, 002 `/api/v1`, \
                       003 `/api/core`, `/api/memory`, `/api/channels`, `/api/admin`, 004 `/v1`. \
                       Every response carries `X-Request-Id`; rate-limited responses carry \
                       `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`."
    ),
    components(schemas(DetailError, ValidationErrorList, ValidationErrorItem, ErrorBody, ErrorObject, PlatformErrorBody)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// 002 and 004 errors: `{"detail": "..."}`.
#[derive(Serialize, ToSchema)]
pub struct DetailError {
    pub detail: String,
}

/// 002 validation errors (422), as FastAPI writes them.
#[derive(Serialize, ToSchema)]
pub struct ValidationErrorList {
    pub detail: Vec<ValidationErrorItem>,
}

#[derive(Serialize, ToSchema)]
pub struct ValidationErrorItem {
    /// Where the error is: `["body", "email"]`, `["query", "limit"]`,
    /// `["body", "attachments", 0]`.
    #[schema(value_type = Vec<Value>)]
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
    /// pydantic's error type, such as `value_error.missing`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// 000/001 errors and the gateway's own.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    /// `unauthorized`, `forbidden`, `not_found`, `validation_error`, `conflict`,
    /// `rate_limit_exceeded`, `payload_too_large`, `service_unavailable`, `server_error`;
    /// in 003: `authentication_error`, `authorization_error`, `invalid_request`,
    /// `resource_not_found`, `rate_limit_exceeded`, `service_unavailable`, `internal_error`.
    pub code: String,
    pub message: String,
    /// More about the error: the invalid fields (a list) for validation
    /// errors, a sentence in 003; any JSON value.
    #[schema(value_type = Option<Value>)]
    pub details: Option<serde_json::Value>,
    /// With `rate_limit_exceeded`: when the window resets (RFC 3339).
    #[serde(rename = "resetAt")]
    pub reset_at: Option<String>,
}

/// 003 errors: 000's shape plus the request id.
#[derive(Serialize, ToSchema)]
pub struct PlatformErrorBody {
    pub error: ErrorObject,
    #[serde(rename = "requestId")]
    pub request_id: String,
}

pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}

pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
