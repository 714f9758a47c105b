//! 000 and 001 `/api/chat`: chat sessions and their messages.
//!
//! Both documents describe the same objects. Where they share a path
//! (`POST /api/chat/sessions`, `GET /api/chat/sessions/{id}/messages`) the
//! request accepts the union of their fields and the answer carries the
//! union of theirs (DESIGN.md), so either client family works unchanged.
//! Ids are decimal strings; an id that is not a number, or that names
//! something the caller may not see, answers 404.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::domain::conversation::{
    Conversation, ConversationStatus, IDEMPOTENCY_KEY_MAX, Message, NewConversation, NewMessage,
    Priority, SenderKind, validate_content, validate_subject, validate_tags,
};
use crate::domain::{FieldError, Principal, PrincipalKind, Role};
use crate::server::AppState;
use crate::store::ConversationFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(get_session, update_session, delete_session))
        .routes(routes!(close_session))
        .routes(routes!(assign_session))
        .routes(routes!(list_messages, send_session_message))
        .routes(routes!(send_message))
}

pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A chat session in the union of 000's and 001's fields.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    id: String,
    /// 000: the organization's id.
    tenant_id: String,
    /// 001: the customer's id.
    user_id: String,
    agent_id: Option<String>,
    /// 001 shows `active` or `closed`; a resolved or archived session
    /// (000's words) is closed. 000's PATCH answers its own word.
    status: &'static str,
    started_at: String,
    ended_at: Option<String>,
    subject: Option<String>,
    /// `low`, `medium` or `high`.
    priority: &'static str,
    tags: Vec<String>,
    created_at: String,
    updated_at: String,
}

impl Session {
    pub fn of(c: &Conversation) -> Session {
        Session {
            id: c.id.to_string(),
            tenant_id: c.org_id.to_string(),
            user_id: c.customer_id.to_string(),
            agent_id: c.agent_id.map(|a| a.to_string()),
            status: c.status.as_001(),
            started_at: iso(c.created_at),
            ended_at: c.ended_at.map(iso),
            subject: c.subject.clone(),
            priority: c.priority.as_str(),
            tags: c.tags.clone(),
            created_at: iso(c.created_at),
            updated_at: iso(c.updated_at),
        }
    }
}

/// A message in the union of 000's and 001's fields.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    id: String,
    content: String,
    /// 000: `user` or `assistant`.
    role: &'static str,
    /// 001: `user` or `support`.
    sender: &'static str,
    /// 000's name for the time it was written.
    created_at: String,
    /// 001's name for the same time.
    timestamp: String,
    /// Whether the other side has read it.
    read: bool,
    /// `sent`, `delivered`, `read` or `failed`.
    status: String,
    attachments: Vec<serde_json::Value>,
}

impl ChatMessage {
    pub fn of(m: &Message) -> ChatMessage {
        let read = m.read_at.is_some();
        ChatMessage {
            id: m.id.to_string(),
            content: m.content.clone(),
            role: m.sender_kind.as_000(),
            sender: m.sender_kind.as_001(),
            created_at: iso(m.created_at),
            timestamp: iso(m.created_at),
            read,
            status: if read {
                "read".into()
            } else {
                m.status.clone()
            },
            attachments: Vec::new(),
        }
    }
}

/// A path id: decimal digits, else the thing does not exist.
fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::not_found(format!("{what} not found")))
}

/// The conversation `id` if `p` may see it; 404 otherwise (also across
/// organizations: no detail of another tenant's data leaks).
async fn visible_session(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<Conversation, ApiError> {
    let id = parse_id(id, "Chat session")?;
    match state.db.conversation(id).await? {
        Some(c) if c.visible_to(p) => Ok(c),
        _ => Err(ApiError::not_found("Chat session not found")),
    }
}

fn is_staff(p: &Principal) -> bool {
    matches!(p.role, Role::Admin | Role::Agent | Role::Service)
}

fn user_id(p: &Principal) -> Option<i64> {
    match p.kind {
        PrincipalKind::User(id) => Some(id),
        PrincipalKind::ApiKey(_) => None,
    }
}

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

fn page_params(page: Option<&str>, limit: Option<&str>) -> Result<(i64, i64), ApiError> {
    let mut errors = Vec::new();
    let page = match page {
        None | Some("") => 1,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 1)
            .unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "page",
                    "must be a whole number from 1",
                    "type_error.integer",
                ));
                1
            }),
    };
    let limit = match limit {
        None | Some("") => 20,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "limit",
                    "must be a whole number from 1 to 100",
                    "type_error.integer",
                ));
                20
            }),
    };
    if errors.is_empty() {
        Ok((page, limit))
    } else {
        Err(ApiError::invalid_fields(errors))
    }
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
async fn list_sessions(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let (page, limit) = page_params(q.page.as_deref(), q.limit.as_deref())?;
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
    let customer_id = if is_staff(&p) {
        None
    } else {
        user_id(&p).or(Some(0))
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
async fn create_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<Session>, ApiError> {
    let mut f = Fields::new(&body);
    let tenant = f.optional_str("tenantId");
    let subject = f.optional_str("subject");
    let priority = f.optional_str("priority");
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
    let priority = match priority.as_deref() {
        None => Priority::Medium,
        Some(text) => Priority::parse(text).unwrap_or_else(|| {
            f.push(FieldError::new(
                "priority",
                "must be low, medium or high",
                "type_error.enum",
            ));
            Priority::Medium
        }),
    };
    f.finish()?;
    if let Some(tenant) = tenant {
        let own = state.db.org_by_id(p.org_id).await?;
        let matches = own.is_some_and(|o| tenant == o.id.to_string() || tenant == o.slug);
        if !matches {
            return Err(ApiError::not_found("Tenant not found"));
        }
    }
    let customer_id = match (for_user, user_id(&p)) {
        (Some(id), _) if is_staff(&p) => match state.db.user_by_id(id).await? {
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
    let c = state
        .db
        .create_conversation(&NewConversation {
            org_id: p.org_id,
            customer_id,
            subject: subject.filter(|s| !s.trim().is_empty()),
            priority,
            tags,
            channel: "web".into(),
        })
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
async fn get_session(
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
async fn update_session(
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
    let c = state
        .db
        .set_conversation_status(c.id, status)
        .await?
        .ok_or_else(|| ApiError::not_found("Chat session not found"))?;
    Ok(Json(StatusChanged {
        id: c.id.to_string(),
        status: c.status.as_str(),
        updated_at: iso(c.updated_at),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Success {
    success: bool,
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
async fn delete_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Success>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    state.db.delete_conversation(c.id).await?;
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
async fn close_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    if !c.status.is_open() {
        return Err(ApiError::conflict("Chat session is already closed"));
    }
    let c = state
        .db
        .set_conversation_status(c.id, ConversationStatus::Closed)
        .await?
        .ok_or_else(|| ApiError::not_found("Chat session not found"))?;
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
async fn assign_session(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Session>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    if !is_staff(&p) {
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
    match state.db.user_by_id(agent_id).await? {
        Some(u)
            if u.org_id == p.org_id
                && u.is_active
                && matches!(u.role, Role::Agent | Role::Admin) => {}
        _ => return Err(ApiError::not_found("Agent not found")),
    }
    if !c.status.is_open() {
        return Err(ApiError::conflict("Chat session is closed"));
    }
    if c.agent_id.is_some() {
        return Err(ApiError::conflict("Chat session is already assigned"));
    }
    match state.db.assign_conversation(c.id, agent_id).await? {
        Some(c) => Ok(Json(Session::of(&c))),
        // Someone else assigned or closed it in between.
        None => Err(ApiError::conflict(
            "Chat session is already assigned or closed",
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only messages older than this message id.
    before: Option<String>,
    /// 1 to 100, default 50.
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageList {
    /// Oldest first.
    messages: Vec<ChatMessage>,
    total_count: i64,
    /// Whether older messages remain (ask again with `before`).
    has_more: bool,
}

/// A session's messages, oldest first, in pages going back in time.
#[utoipa::path(
    get,
    path = "/api/chat/sessions/{sessionId}/messages",
    tag = "chat",
    params(("sessionId" = String, Path), MessagesQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Messages", body = MessageList),
        (status = 400, description = "Invalid query parameters", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
async fn list_messages(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut errors = Vec::new();
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => match b.parse::<i64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                errors.push(FieldError::new(
                    "before",
                    "must be a message id",
                    "type_error",
                ));
                None
            }
        },
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "limit",
                    "must be a whole number from 1 to 100",
                    "type_error.integer",
                ));
                50
            }),
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let internal = is_staff(&p);
    let (messages, has_more) = state
        .db
        .list_messages(c.id, internal, before, limit)
        .await?;
    let total = state.db.count_messages(c.id, internal).await?;
    Ok(Json(MessageList {
        messages: messages.iter().map(ChatMessage::of).collect(),
        total_count: total,
        has_more,
    }))
}

/// Writes a message into `c` as `p`, once per idempotency key.
async fn post_message(
    state: &AppState,
    p: &Principal,
    c: &Conversation,
    content: String,
    headers: &HeaderMap,
) -> Result<Message, ApiError> {
    if !c.status.is_open() {
        return Err(ApiError::conflict(
            "Chat session is closed and accepts no new messages",
        ));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= IDEMPOTENCY_KEY_MAX => {
                Some(k.trim().to_owned())
            }
            _ => {
                return Err(ApiError::validation(format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible characters"
                )));
            }
        },
    };
    let sender_kind = if p.role == Role::Customer {
        SenderKind::Customer
    } else {
        SenderKind::Agent
    };
    let (message, _created) = state
        .db
        .insert_message(&NewMessage {
            org_id: c.org_id,
            conversation_id: c.id,
            sender_kind,
            sender_id: user_id(p),
            content,
            is_internal: false,
            idempotency_key: key,
        })
        .await?;
    Ok(message)
}

/// Sends a message into a session (001). Text as JSON `{"content"}`.
/// With an `Idempotency-Key` header, a retry returns the first message.
#[utoipa::path(
    post,
    path = "/api/chat/sessions/{sessionId}/messages",
    tag = "chat",
    params(("sessionId" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"content\": \"...\"}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The message", body = ChatMessage),
        (status = 400, description = "Invalid body", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "The session is closed", body = crate::api::openapi::ErrorBody),
    )
)]
async fn send_session_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<ChatMessage>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let content = f.required_str("content");
    if let Some(text) = &content
        && let Err(e) = validate_content("content", text)
    {
        f.push(e);
    }
    f.finish()?;
    let m = post_message(&state, &p, &c, content.unwrap_or_default(), &headers).await?;
    Ok(Json(ChatMessage::of(&m)))
}

/// Sends a message (000): `{"sessionId", "content"}`.
#[utoipa::path(
    post,
    path = "/api/chat/messages",
    tag = "chat",
    request_body(content = serde_json::Value, description = "`{\"sessionId\": \"...\", \"content\": \"...\"}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The message", body = ChatMessage),
        (status = 400, description = "Invalid body", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "The session is closed", body = crate::api::openapi::ErrorBody),
    )
)]
async fn send_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<ChatMessage>, ApiError> {
    let mut f = Fields::new(&body);
    let session = f.optional_id("sessionId");
    if matches!(session, Some(None)) {
        f.push(FieldError::missing("sessionId"));
    }
    let content = f.required_str("content");
    if let Some(text) = &content
        && let Err(e) = validate_content("content", text)
    {
        f.push(e);
    }
    if body
        .get("attachments")
        .is_some_and(|a| !a.is_null() && a.as_array().is_none_or(|a| !a.is_empty()))
    {
        // Base64 attachments arrive with the file store; until then they
        // are refused rather than dropped.
        f.push(FieldError::new(
            "attachments",
            "attachments are not accepted yet by this gateway",
            "value_error",
        ));
    }
    f.finish()?;
    let session = session.flatten().unwrap_or_default().to_string();
    let c = visible_session(&state, &p, &session).await?;
    let m = post_message(&state, &p, &c, content.unwrap_or_default(), &headers).await?;
    Ok(Json(ChatMessage::of(&m)))
}
