//! 001's `/ws/chat/{sessionId}`.

use axum::extract::{Path, Query, State};

use crate::api::common::{SocketQuery, relay, socket_principal};
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::realtime::{Audience, Topic};
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
    )
)]
pub(super) async fn chat_socket(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    upgrade: Result<
        axum::extract::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<axum::response::Response, ApiError> {
    let p = socket_principal(&state, auth, q.token.as_deref())?;
    let c = visible_session(&state, &p, &id).await?;
    let upgrade = upgrade.map_err(|_| ApiError::validation("Expected a WebSocket handshake"))?;
    // Subscribe before answering, so no event between the two is lost.
    let events = state.bus.subscribe(Topic::Conversation(c.id));
    Ok(upgrade.on_upgrade(move |socket| relay(socket, events, Audience::Chat, render)))
}
