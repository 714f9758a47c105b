//! HTTP: one module per API dialect, plus the layers they share (errors,
//! authentication, rate limits, request ids, metrics).
//!
//! Only this module knows HTTP. Handlers turn requests into domain and store
//! calls and the results into each document's JSON.

mod assistant;
mod channels;
mod chat;
mod common;
mod contacts;
pub mod dialect;
mod email_channel;
pub mod error;
mod extract;
pub mod gateway;
mod knowledge;
pub mod middleware;
mod openapi;
mod platform;
pub mod plugins;
pub mod rate_limit;
pub(crate) mod tickets;
mod turns;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::server::AppState;

/// Every documented route, with its OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(gateway::router())
        .merge(assistant::router())
        .merge(chat::router())
        .merge(tickets::router())
        .merge(plugins::router())
        .merge(platform::router())
        .merge(channels::router())
        .merge(email_channel::router())
        .merge(knowledge::router())
        .merge(contacts::router())
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
}

/// The OpenAPI 3.1 document of every route, as JSON.
pub fn openapi_document() -> String {
    let (_, mut doc) = routes().split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document_validation_errors(&mut doc);
    doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}

/// Every operation validates its whole request (a NUL character anywhere
/// in the path or query, a repeated query key, an unreadable body), so
/// every operation can answer its dialect's validation error: 422 in 002's
/// shape, 400 in the others'. Added here where a handler's own list does
/// not name it.
fn document_validation_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (path, item) in doc.paths.paths.iter_mut() {
        let (status, schema) = match dialect::Dialect::of_path(path) {
            dialect::Dialect::Assistant => ("422", "ValidationErrorList"),
            dialect::Dialect::Tickets => ("400", "DetailError"),
            dialect::Dialect::Platform => ("400", "PlatformErrorBody"),
            dialect::Dialect::Chat | dialect::Dialect::Gateway => ("400", "ErrorBody"),
        };
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("Invalid request (path, query or body)")
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(schema)))
                                .build(),
                        )
                        .build()
                        .into()
                });
        }
    }
}

/// The OpenAPI 3.1 document describing every endpoint.
#[utoipa::path(get, path = "/openapi.json", tag = "gateway",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(state: axum::extract::State<AppState>) -> impl axum::response::IntoResponse {
    openapi::openapi_json(state).await
}

/// A page that renders the OpenAPI document for people.
#[utoipa::path(get, path = "/docs", tag = "gateway",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
async fn docs() -> impl axum::response::IntoResponse {
    openapi::docs().await
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("Resource not found")
}

/// The whole application: routes and the layers around them.
pub fn app(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    with_layers(router.fallback(not_found), state)
}

/// Wraps `router` in the layers every request passes through (outermost
/// first): the frame (request id and span, timeout, error shaping,
/// metrics), the panic guard, the body limit, authentication and rate
/// limits and the upload budget. The panic guard sits just inside the frame so that a panic
/// anywhere below still gets a shaped 500 with a request id.
pub fn with_layers(router: Router<AppState>, state: AppState) -> Router {
    let cors = cors(&state.config.server.cors_origins);
    let router = router
        .layer(from_fn_with_state(
            state.clone(),
            middleware::authenticate_and_limit,
        ))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(from_fn_with_state(state.clone(), middleware::frame))
        .with_state(state);
    match cors {
        // Around the whole router, not per route: a preflight must be
        // answered even where the route has no OPTIONS handler.
        Some(cors) => Router::new()
            .fallback_service(tower::Layer::layer(&cors, router))
            .layer(axum::middleware::from_fn(middleware::ensure_request_id)),
        None => router,
    }
}

/// CORS for browser clients (the web chat widget runs on the company's own
/// site). Outermost, so preflights are answered before authentication and
/// every answer, errors included, carries the headers. Tokens travel in
/// headers, never cookies, so credentials are not allowed.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderName::from_static("x-ratelimit-reset"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
