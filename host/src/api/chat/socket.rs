//! 001's `/ws/chat/{sessionId}`.

use axum::extract::{Path, Query, State};

use crate::api::common::{SocketQuery, Upgrade, follow, socket_principal};
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::realtime::Audience;
use crate::server::AppState;

use super::*;

/// Real-time events of one session (001): `message`, `typing`,
/// `session_update`, each `{"type", "data"}`.
#[utoipa::path(
    get,
    path = "/ws/chat/{sessionId}",
    tag = "chat",
    params(("sessionId" = String, Path), SocketQuery),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
        (status = 429, description = "Too many open sockets (`server.max_sockets_per_user`)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn chat_socket(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    upgrade: Upgrade,
) -> Result<axum::response::Response, ApiError> {
    let p = socket_principal(&state, auth, q.token.as_deref()).await?;
    let c = visible_session(&state, &p, &id).await?;
    follow(&state, upgrade, &p, c.id, Audience::Chat, render)
}
