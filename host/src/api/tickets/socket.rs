//! 004's `/ws/tickets/{ticket_id}`.

use axum::extract::{Path, Query, State};

use crate::api::common::{SocketQuery, Upgrade, follow, socket_principal};
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::realtime::Audience;
use crate::server::AppState;
use crate::service::policy;

use super::*;

/// Real-time events of one ticket: `ticket.updated`, `message.received`
/// (internal notes to staff only), each `{"event", "type", "data"}`.
#[utoipa::path(
    get,
    path = "/ws/tickets/{ticket_id}",
    tag = "tickets",
    params(("ticket_id" = String, Path), SocketQuery),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = crate::api::openapi::DetailError),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
        (status = 429, description = "Too many open sockets (`server.max_sockets_per_user`)", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn ticket_socket(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    upgrade: Upgrade,
) -> Result<axum::response::Response, ApiError> {
    let p = socket_principal(&state, auth, q.token.as_deref()).await?;
    let t = visible_ticket(&state, &p, &id).await?;
    let staff = policy::may_see_internal(&p);
    let audience = if staff {
        Audience::TicketStaff
    } else {
        Audience::TicketCustomer
    };
    // A ticket's events are its conversation's (one ticket per
    // conversation, so one rendering per audience serves every subscriber).
    let ticket_id = t.id;
    follow(&state, upgrade, &p, t.conversation_id, audience, move |e| {
        render(e, ticket_id, staff)
    })
}
