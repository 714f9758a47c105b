//! 004 ticket messages, with internal notes for staff.

use axum::Json;
use axum::extract::{Path, State};

use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::domain::FieldError;
use crate::domain::conversation::validate_content;
use crate::server::AppState;
use crate::service::conversations::{self, Answer, Author, Post};
use crate::service::{Actor, policy};

use super::*;

/// A ticket's messages, oldest first (internal notes for staff only).
#[utoipa::path(
    get,
    path = "/v1/tickets/{ticket_id}/messages",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Messages", body = Vec<TicketMessage>),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn list_ticket_messages(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<TicketMessage>>, ApiError> {
    let t = visible_ticket(&state, &p, &id).await?;
    let (messages, _) = state
        .db
        .list_messages(t.conversation_id, policy::may_see_internal(&p), None, 1000)
        .await?;
    if policy::is_staff(&p)
        && let Some(c) = state.db.conversation(t.conversation_id).await?
    {
        crate::channels::seen_by_staff(&state, &c).await;
    }
    Ok(Json(
        messages
            .iter()
            .map(|m| TicketMessage::of(t.id, m))
            .collect(),
    ))
}

/// Adds a message to a ticket; staff may add internal notes.
#[utoipa::path(
    post,
    path = "/v1/tickets/{ticket_id}/messages",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"content\": \"...\", \"is_internal\": false}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The message", body = TicketMessage),
        (status = 400, description = "Invalid body", body = crate::api::openapi::DetailError),
        (status = 403, description = "Customers cannot write internal notes", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn send_ticket_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> Result<Json<TicketMessage>, ApiError> {
    let t = visible_ticket(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let content = f.required_str("content");
    let is_internal = match body.get("is_internal") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            f.push(FieldError::new(
                "is_internal",
                "must be true or false",
                "type_error.bool",
            ));
            false
        }
    };
    if let Some(text) = &content
        && let Err(e) = validate_content("content", text)
    {
        f.push(e);
    }
    f.finish()?;
    if is_internal && !policy::may_write_internal(&p) {
        return Err(ApiError::forbidden("Insufficient permissions"));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => conversations::idempotency_key(Some(v.to_str().unwrap_or("\u{0}")))?,
    };
    let c = state
        .db
        .conversation(t.conversation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Resource not found"))?;
    let posted = conversations::post(
        state.core(),
        &c,
        Post {
            internal: is_internal,
            idempotency_key: key,
            ..Post::text(Author::of(Actor::of(&p)), content.unwrap_or_default())
        },
        Answer::BestEffort,
    )
    .await?;
    Ok(Json(TicketMessage::of(t.id, &posted.message)))
}
