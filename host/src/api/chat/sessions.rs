//! 000/001 chat sessions: list, create, read, status, delete, close,
//! assign, statistics, and 000's ticket from a chat.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::common::{Paging, iso, priority_field};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::domain::conversation::{
    Channel, ConversationStatus, NewConversation, Priority, validate_subject, validate_tags,
};
use crate::domain::{FieldError, Role};
use crate::server::AppState;
use crate::service::conversations::{self};
use crate::service::policy;
use crate::store::ConversationFilter;

use super::*;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `active` or `closed` (000's `resolved` and `archived` are accepted too).
    status: Option<String>,
    /// From 1.
    page: Option<String>,
    /// 1 to 100, default 20.
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    sessions: Vec<Session>,
    total_count: i64,
    page: i64,
    total_pages: i64,
}

/// Lists chat sessions: a customer's own, or (staff) the organization's.
#[utoipa::path(
    get,
    path = "/api/chat/sessions",
    tag = "chat",
    params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page of sessions, newest first", body = SessionList),
        (status = 400, description = "Invalid query parameters", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn list_sessions(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let (page, limit) = Paging {
        page: q.page,
        limit: q.limit,
    }
    .parse(20)?;
    let statuses = match q.status.as_deref() {
        None | Some("") => None,
        Some("active") => Some(vec![ConversationStatus::Active]),
        Some("closed") => Some(vec![
            ConversationStatus::Closed,
            ConversationStatus::Resolved,
            ConversationStatus::Archived,
        ]),
        Some(other) => match ConversationStatus::parse(other) {
            Some(s) => Some(vec![s]),
            None => {
                return Err(ApiError::invalid_fields(vec![FieldError::new(
                    "status",
                    "must be active or closed",
                    "type_error.enum",
                )]));
            }
        },
    };
    let customer_id = if policy::is_staff(&p) {
        None
    } else {
        p.user_id().or(Some(0))
    };
    let filter = ConversationFilter {
        org_id: p.org_id,
        customer_id,
        statuses,
    };
    let (rows, total) = state
        .db
        .list_conversations(&filter, (page - 1) * limit, limit)
        .await?;
    Ok(Json(SessionList {
        sessions: rows.iter().map(Session::of).collect(),
        total_count: total,
        page,
        total_pages: (total + limit - 1) / limit,
    }))
}

/// Request body of `POST /api/chat/sessions`: 000's and 001's fields.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct CreateSession {
    /// 000: the organization (its id or slug); must be the caller's own.
    tenant_id: Option<String>,
    subject: Option<String>,
    /// `low`, `medium` (default) or `high`.
    priority: Option<String>,
    tags: Option<Vec<String>>,
    /// Staff only: open the session for this customer.
    user_id: Option<String>,
}

/// Starts a chat session.
#[utoipa::path(
    post,
    path = "/api/chat/sessions",
    tag = "chat",
    request_body = CreateSession,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new session", body = Session),
        (status = 400, description = "Invalid body", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such tenant or customer", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn create_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<Session>, ApiError> {
    let mut f = Fields::new(&body);
    let tenant = f.optional_str("tenantId");
    let subject = f.optional_str("subject");
    let priority = priority_field(&mut f, "priority");
    let tags = f.optional_str_list("tags").unwrap_or_default();
    let for_user = f.optional_id("userId").flatten();
    if let Some(s) = &subject
        && let Err(e) = validate_subject(s)
    {
        f.push(e);
    }
    if let Err(e) = validate_tags(&tags) {
        f.push(e);
    }
    let priority = priority.unwrap_or(Priority::Medium);
    f.finish()?;
    if let Some(tenant) = tenant {
        let own = state.db.org_by_id(p.org_id).await?;
        let matches = own.is_some_and(|o| tenant == o.id.to_string() || tenant == o.slug);
        if !matches {
            return Err(ApiError::not_found("Tenant not found"));
        }
    }
    let customer_id = match (for_user, p.user_id()) {
        (Some(id), _) if policy::may_act_for_others(&p) => match state.db.user_by_id(id).await? {
            Some(u) if u.org_id == p.org_id && u.role == Role::Customer => u.id,
            _ => return Err(ApiError::not_found("Customer not found")),
        },
        (Some(_), _) => {
            return Err(ApiError::forbidden(
                "Only staff may open a session for someone else",
            ));
        }
        (None, Some(id)) => id,
        (None, None) => {
            return Err(ApiError::validation(
                "userId is required when an API key opens a session",
            ));
        }
    };
    let c = conversations::start(
        state.core(),
        NewConversation {
            org_id: p.org_id,
            customer_id: Some(customer_id),
            contact_id: None,
            subject: subject.filter(|s| !s.trim().is_empty()),
            priority,
            tags,
            channel: Channel::Web,
            channel_entry: None,
        },
    )
    .await?;
    Ok(Json(Session::of(&c)))
}

/// One chat session.
#[utoipa::path(
    get,
    path = "/api/chat/sessions/{sessionId}",
    tag = "chat",
    params(("sessionId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn get_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    Ok(Json(Session::of(&c)))
}

/// 000's answer to a status change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusChanged {
    id: String,
    /// `active`, `resolved`, `closed` or `archived`.
    status: &'static str,
    updated_at: String,
}

/// Changes a session's status (000): `active`, `resolved`, `archived` (or
/// 001's `closed`).
#[utoipa::path(
    patch,
    path = "/api/chat/sessions/{sessionId}",
    tag = "chat",
    params(("sessionId" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"status\": \"active\" | \"resolved\" | \"archived\"}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new status", body = StatusChanged),
        (status = 400, description = "Invalid status", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn update_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<StatusChanged>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let status = f.required_str("status");
    f.finish()?;
    let status = status
        .as_deref()
        .and_then(ConversationStatus::parse)
        .ok_or_else(|| {
            ApiError::invalid_fields(vec![FieldError::new(
                "status",
                "must be active, resolved, closed or archived",
                "type_error.enum",
            )])
        })?;
    let c = conversations::set_status(state.core(), &c, status).await?;
    Ok(Json(StatusChanged {
        id: c.id.to_string(),
        status: c.status.as_str(),
        updated_at: iso(c.updated_at),
    }))
}

/// Deletes a session with its messages (000). Its customer or staff.
#[utoipa::path(
    delete,
    path = "/api/chat/sessions/{sessionId}",
    tag = "chat",
    params(("sessionId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn delete_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Success>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    conversations::delete(state.core(), &c).await?;
    Ok(Json(Success { success: true }))
}

/// Closes a session (001); 409 when it is closed already.
#[utoipa::path(
    put,
    path = "/api/chat/sessions/{sessionId}/close",
    tag = "chat",
    params(("sessionId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The closed session", body = Session),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Already closed", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn close_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let c = conversations::close(state.core(), &c).await?;
    Ok(Json(Session::of(&c)))
}

/// Assigns an agent (001). Staff only; 409 when already assigned or closed.
#[utoipa::path(
    put,
    path = "/api/chat/sessions/{sessionId}/assign",
    tag = "chat",
    params(("sessionId" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"agentId\": \"...\"}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The assigned session", body = Session),
        (status = 400, description = "agentId missing or invalid", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "Not staff", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session or agent", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Already assigned, or closed", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn assign_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Session>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    if !policy::may_handle(&p) {
        return Err(ApiError::forbidden(
            "Only agents and admins assign sessions",
        ));
    }
    let mut f = Fields::new(&body);
    let agent = f.optional_id("agentId");
    if matches!(agent, Some(None)) {
        f.push(FieldError::missing("agentId"));
    }
    f.finish()?;
    let agent_id = agent.flatten().unwrap_or_default();
    let c = conversations::assign(state.core(), &c, agent_id).await?;
    Ok(Json(Session::of(&c)))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatStats {
    total_sessions: i64,
    active_sessions: i64,
    /// Mean minutes from a customer's message to the next reply by an
    /// agent or the assistant (0 with no reply yet).
    average_response_time: f64,
    messages_exchanged: i64,
}

/// The organization's chat figures (001), for staff.
#[utoipa::path(
    get,
    path = "/api/chat/stats",
    tag = "chat",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Figures", body = ChatStats),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "Customers see no statistics", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn stats(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<ChatStats>, ApiError> {
    if !policy::may_see_organization_data(&p) {
        return Err(ApiError::forbidden(
            "Only agents and admins see chat statistics",
        ));
    }
    let (total, active, messages) = state.db.chat_counts(p.org_id).await?;
    let times = state.db.response_times(p.org_id).await?;
    let average = if times.is_empty() {
        0.0
    } else {
        let minutes = times.iter().sum::<f64>() / times.len() as f64 / 60.0;
        (minutes * 100.0).round() / 100.0
    };
    Ok(Json(ChatStats {
        total_sessions: total,
        active_sessions: active,
        average_response_time: average,
        messages_exchanged: messages,
    }))
}

/// 000's answer to a ticket made from a chat.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatTicket {
    /// The ticket, as `/v1/tickets/{id}` knows it.
    ticket_id: String,
    /// The chat session the ticket belongs to.
    chat_ticket_id: String,
    /// The ticket's status (`open` when new).
    status: &'static str,
}

/// Turns a chat session into a ticket (000). A session has one ticket:
/// asking again answers the same ticket.
#[utoipa::path(
    post,
    path = "/api/chat/sessions/{sessionId}/ticket",
    tag = "chat",
    params(("sessionId" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"title\"?, \"category\"? (free text: an id or name of the organization's; a new name is created), \"priority\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The ticket", body = ChatTicket),
        (status = 400, description = "Invalid body", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn ticket_from_chat(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<ChatTicket>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let title = f.optional_str("title");
    let category = f.optional_str("category");
    let priority = priority_field(&mut f, "priority");
    if title
        .as_ref()
        .is_some_and(|t| t.chars().count() > crate::domain::ticket::TITLE_MAX)
    {
        f.push(FieldError::new(
            "title",
            "must be at most 200 characters",
            "value_error.any_str.max_length",
        ));
    }
    f.finish()?;
    let t = crate::service::tickets::from_chat(state.core(), &c, title, category, priority).await?;
    Ok(Json(ChatTicket {
        ticket_id: t.id.to_string(),
        chat_ticket_id: c.id.to_string(),
        status: t.status.as_str(),
    }))
}
