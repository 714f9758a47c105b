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
    Attachment, Conversation, ConversationStatus, FILE_MAX_BYTES, FILES_PER_MESSAGE, Handling,
    IDEMPOTENCY_KEY_MAX, Message, NewConversation, NewMessage, Priority, SenderKind,
    validate_content, validate_subject, validate_tags,
};
use crate::domain::{FieldError, Principal, PrincipalKind, Role};
use crate::realtime::Topic;
use crate::server::AppState;
use crate::store::ConversationFilter;
use crate::store::NewAttachment;

pub fn router() -> OpenApiRouter<AppState> {
    // Routes that take files get a body limit of their own; each file is
    // still refused as soon as it passes 5 MB.
    let uploads = OpenApiRouter::new()
        .routes(routes!(list_messages, send_session_message))
        .routes(routes!(upload_file))
        .layer(axum::extract::DefaultBodyLimit::max(UPLOAD_MAX_BYTES));
    let base64 = OpenApiRouter::new()
        .routes(routes!(send_message))
        .layer(axum::extract::DefaultBodyLimit::max(BASE64_MAX_BYTES));
    OpenApiRouter::new()
        .merge(uploads)
        .merge(base64)
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(get_session, update_session, delete_session))
        .routes(routes!(close_session))
        .routes(routes!(assign_session))
        .routes(routes!(delete_file))
        .routes(routes!(download))
        .routes(routes!(mark_read))
        .routes(routes!(typing))
        .routes(routes!(stats))
        .routes(routes!(chat_socket))
        .routes(routes!(ticket_from_chat))
}

/// A WebSocket event of `/ws/chat/{sessionId}`.
#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

fn publish_session(state: &AppState, c: &Conversation) {
    state.bus.publish(
        Topic::Chat(c.id),
        &Event {
            kind: "session_update",
            data: Session::of(c),
        },
    );
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
    attachments: Vec<AttachmentView>,
    /// Who wrote it: `customer`, `assistant`, `agent` or `system`.
    sender_type: &'static str,
    /// The user who wrote it (absent for the assistant and the system).
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_id: Option<String>,
    /// For assistant replies: the passages they are based on (`kb-<id>`
    /// knowledge passages, `faq-<id>` FAQs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sources: Vec<String>,
}

/// A file in the union of 000's and 001's fields.
#[derive(Serialize, ToSchema, Clone)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentView {
    id: String,
    /// 001: where to download it (authenticated).
    url: String,
    /// 000: the same.
    file_url: String,
    /// 001: the checked content type.
    #[serde(rename = "type")]
    kind: String,
    /// 000: the same.
    file_type: String,
    /// 001: the name the sender gave.
    name: String,
    /// 000: the same.
    file_name: String,
    /// Bytes.
    size: i64,
    /// Width and height of images.
    #[schema(value_type = Object)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl AttachmentView {
    pub fn of(a: &Attachment) -> AttachmentView {
        let url = format!("/api/chat/attachments/{}", a.id);
        let mut metadata = serde_json::Map::new();
        if let (Some(w), Some(h)) = (a.width, a.height) {
            metadata.insert("width".into(), w.into());
            metadata.insert("height".into(), h.into());
        }
        AttachmentView {
            id: a.id.to_string(),
            url: url.clone(),
            file_url: url,
            kind: a.content_type.clone(),
            file_type: a.content_type.clone(),
            name: a.file_name.clone(),
            file_name: a.file_name.clone(),
            size: a.size,
            metadata,
        }
    }
}

impl ChatMessage {
    pub fn with_files(m: &Message, files: &[Attachment]) -> ChatMessage {
        let mut view = ChatMessage::of(m);
        view.attachments = files
            .iter()
            .filter(|a| a.message_id == Some(m.id))
            .map(AttachmentView::of)
            .collect();
        view
    }

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
            sender_type: m.sender_kind.as_str(),
            sender_id: m.sender_id.map(|id| id.to_string()),
            sources: m.reply.sources.clone(),
        }
    }
}

/// Tells a session's WebSocket clients about a new message.
pub(crate) fn publish_message(state: &AppState, m: &Message) {
    state.bus.publish(
        Topic::Chat(m.conversation_id),
        &Event {
            kind: "message",
            data: ChatMessage::of(m),
        },
    );
}

/// Tells a session's clients, and its organization's staff on `/ws`, that
/// the assistant handed the conversation over.
pub(crate) fn publish_handover(state: &AppState, c: &Conversation, reason: &str) {
    let data = serde_json::json!({
        "sessionId": c.id.to_string(),
        "customerId": c.customer_id.to_string(),
        "channel": c.channel,
        "status": c.handling.as_003(),
        "reason": reason,
        "timestamp": iso(Utc::now()),
    });
    state.bus.publish(
        Topic::Chat(c.id),
        &Event {
            kind: "handover",
            data: &data,
        },
    );
    state.bus.publish(
        Topic::Staff(c.org_id),
        &serde_json::json!({"type": "handover_requested", "data": data}),
    );
}

/// A path id: decimal digits, else the thing does not exist.
pub(crate) fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
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
    let customer_id = if p.is_staff() {
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
    let customer_id = match (for_user, p.user_id()) {
        (Some(id), _) if p.is_staff() => match state.db.user_by_id(id).await? {
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
    publish_session(&state, &c);
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
    let digests = state.db.conversation_digests(c.id).await?;
    state.db.delete_conversation(c.id).await?;
    state.files.release(&state.db, &digests).await;
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
    publish_session(&state, &c);
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
    if !p.is_staff() {
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
        Some(c) => {
            publish_session(&state, &c);
            Ok(Json(Session::of(&c)))
        }
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
    let internal = p.is_staff();
    let (messages, has_more) = state
        .db
        .list_messages(c.id, internal, before, limit)
        .await?;
    let total = state.db.count_messages(c.id, internal).await?;
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    let files = state.db.attachments_of(&ids).await?;
    Ok(Json(MessageList {
        messages: messages
            .iter()
            .map(|m| ChatMessage::with_files(m, &files))
            .collect(),
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
    uploads: Vec<Upload>,
) -> Result<ChatMessage, ApiError> {
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
    // The bytes first (content-addressed, harmless if the row never
    // comes), then the message and its files in one transaction.
    let mut files = Vec::with_capacity(uploads.len());
    for u in uploads {
        files.push(store_upload(state, u).await?);
    }
    let (message, created, attached) = state
        .db
        .insert_message_with_files(
            &NewMessage {
                org_id: c.org_id,
                conversation_id: c.id,
                sender_kind,
                sender_id: p.user_id(),
                content,
                is_internal: false,
                idempotency_key: key,
                reply: Default::default(),
                context: None,
            },
            &files,
        )
        .await?;
    let view = ChatMessage::with_files(&message, &attached);
    // An agent who writes to the customer takes the conversation over: the
    // assistant stays silent in it until handed back. (Assignment stays
    // 001's own business: writing does not assign.)
    if created && sender_kind == SenderKind::Agent && c.handling != Handling::Agent {
        state.db.set_handling(c.id, Handling::Agent, None).await?;
    }
    if created {
        state.bus.publish(
            Topic::Chat(c.id),
            &Event {
                kind: "message",
                data: &view,
            },
        );
    } else {
        // A retry: the files sent again are not recorded twice.
        let digests: Vec<String> = files.into_iter().map(|f| f.sha256).collect();
        state.files.release(&state.db, &digests).await;
    }
    Ok(view)
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
    request: axum::extract::Request,
) -> Result<Json<ChatMessage>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let (content, uploads) = if is_multipart(&headers) {
        let (mut fields, uploads) = read_multipart(request, &state).await?;
        (fields.remove("content"), uploads)
    } else {
        use axum::extract::FromRequest as _;
        let Body(body) = Body::from_request(request, &state).await?;
        let mut f = Fields::new(&body);
        let content = f.required_str("content");
        f.finish()?;
        (content, Vec::new())
    };
    let mut errors = Vec::new();
    // With files, the text may be empty.
    let content = content.unwrap_or_default();
    if (uploads.is_empty() || !content.is_empty())
        && let Err(e) = validate_content("content", &content)
    {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let m = post_message(&state, &p, &c, content, &headers, uploads).await?;
    Ok(Json(m))
}

/// The largest upload body: ten files of 5 MB and the form around them.
pub const UPLOAD_MAX_BYTES: usize = FILES_PER_MESSAGE * FILE_MAX_BYTES + 1024 * 1024;
/// The largest body of 000's message send: ten files in base64.
pub const BASE64_MAX_BYTES: usize = FILES_PER_MESSAGE * (FILE_MAX_BYTES / 3 * 4 + 4) + 1024 * 1024;

/// One file read from a request, not yet stored.
pub struct Upload {
    file_name: String,
    declared_type: Option<String>,
    bytes: Vec<u8>,
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

fn too_large(message: impl Into<String>) -> ApiError {
    ApiError::new(crate::api::error::ErrorCode::PayloadTooLarge, message)
}

/// A file name fit to show: the last path segment, no control characters,
/// at most 255 characters.
fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(255).collect();
    if cleaned.trim().is_empty() || cleaned == "." || cleaned == ".." {
        "file".into()
    } else {
        cleaned
    }
}

/// Reads a multipart form: its text fields, and its files, each refused as
/// soon as it passes 5 MB (so a huge body is never buffered), at most ten.
async fn read_multipart(
    request: axum::extract::Request,
    state: &AppState,
) -> Result<(std::collections::HashMap<String, String>, Vec<Upload>), ApiError> {
    use axum::extract::FromRequest as _;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > UPLOAD_MAX_BYTES) {
        return Err(too_large(format!(
            "At most {FILES_PER_MESSAGE} files of {} MB each",
            FILE_MAX_BYTES >> 20
        )));
    }
    let mut form = axum::extract::Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::validation(format!("Invalid multipart body: {}", e.body_text())))?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            too_large("The request body is too large")
        } else {
            ApiError::validation(format!("Invalid multipart body: {}", e.body_text()))
        }
    };
    let mut fields = std::collections::HashMap::new();
    let mut uploads = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if let Some(file_name) = field.file_name().map(clean_name) {
            if uploads.len() == FILES_PER_MESSAGE {
                return Err(ApiError::invalid_fields(vec![FieldError::new(
                    "attachments",
                    format!("at most {FILES_PER_MESSAGE} files per message"),
                    "value_error.list.max_items",
                )]));
            }
            let declared_type = field.content_type().map(str::to_owned);
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                if bytes.len() + chunk.len() > FILE_MAX_BYTES {
                    return Err(too_large(format!(
                        "{file_name:?} is larger than {} MB",
                        FILE_MAX_BYTES >> 20
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            uploads.push(Upload {
                file_name,
                declared_type,
                bytes,
            });
        } else {
            let mut text = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                if text.len() + chunk.len() > 64 * 1024 {
                    return Err(ApiError::validation(format!("Field {name:?} is too long")));
                }
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(text)
                .map_err(|_| ApiError::validation(format!("Field {name:?} is not UTF-8 text")))?;
            fields.insert(name, text);
        }
    }
    Ok((fields, uploads))
}

/// Checks a file's type against its bytes and writes it to disk.
async fn store_upload(state: &AppState, u: Upload) -> Result<NewAttachment, ApiError> {
    if u.bytes.is_empty() {
        return Err(ApiError::invalid_fields(vec![FieldError::new(
            "attachments",
            format!("{:?} is empty", u.file_name),
            "value_error",
        )]));
    }
    let found =
        crate::files::inspect(&u.bytes, u.declared_type.as_deref(), &u.file_name).map_err(|e| {
            ApiError::invalid_fields(vec![FieldError::new("attachments", e, "value_error")])
        })?;
    let sha256 = state.files.put(&u.bytes).await.map_err(|e| {
        tracing::error!(error = %e, "could not write a file");
        ApiError::internal()
    })?;
    Ok(NewAttachment {
        file_name: u.file_name,
        content_type: found.content_type,
        size: i64::try_from(u.bytes.len()).unwrap_or(i64::MAX),
        sha256,
        width: found.width,
        height: found.height,
    })
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
    let has_files = body
        .get("attachments")
        .and_then(|a| a.as_array())
        .is_some_and(|a| !a.is_empty());
    if let Some(text) = &content
        && !(has_files && text.is_empty())
        && let Err(e) = validate_content("content", text)
    {
        f.push(e);
    }
    let uploads = base64_uploads(&body, &mut f)?;
    f.finish()?;
    let session = session.flatten().unwrap_or_default().to_string();
    let c = visible_session(&state, &p, &session).await?;
    let m = post_message(
        &state,
        &p,
        &c,
        content.unwrap_or_default(),
        &headers,
        uploads,
    )
    .await?;
    Ok(Json(m))
}

/// 000's base64 attachments: `[{fileName, fileType, fileData}]`.
fn base64_uploads(
    body: &serde_json::Map<String, serde_json::Value>,
    f: &mut Fields<'_>,
) -> Result<Vec<Upload>, ApiError> {
    use base64::Engine as _;
    let mut uploads = Vec::new();
    let items = match body.get("attachments") {
        None | Some(serde_json::Value::Null) => return Ok(uploads),
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => {
            f.push(FieldError::new(
                "attachments",
                "a list expected",
                "type_error.list",
            ));
            return Ok(uploads);
        }
    };
    if items.len() > FILES_PER_MESSAGE {
        f.push(FieldError::new(
            "attachments",
            format!("at most {FILES_PER_MESSAGE} files per message"),
            "value_error.list.max_items",
        ));
        return Ok(uploads);
    }
    let limit = || too_large(format!("Files are at most {} MB", FILE_MAX_BYTES >> 20));
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| item.get(name).and_then(|v| v.as_str());
        let (Some(name), Some(data)) = (field("fileName"), field("fileData")) else {
            f.push(FieldError::new(
                format!("attachments.{i}"),
                "fileName, fileType and fileData are required",
                "value_error.missing",
            ));
            continue;
        };
        // A data: URL prefix is tolerated.
        let data = data.rsplit_once(";base64,").map_or(data, |(_, d)| d).trim();
        if data.len() > FILE_MAX_BYTES / 3 * 4 + 4 {
            return Err(limit());
        }
        match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(bytes) if bytes.len() > FILE_MAX_BYTES => return Err(limit()),
            Ok(bytes) => uploads.push(Upload {
                file_name: clean_name(name),
                declared_type: field("fileType").map(str::to_owned),
                bytes,
            }),
            Err(_) => f.push(FieldError::new(
                format!("attachments.{i}.fileData"),
                "not valid base64",
                "value_error",
            )),
        }
    }
    Ok(uploads)
}

/// Marks messages read (001): those the other side wrote. 204.
#[utoipa::path(
    put,
    path = "/api/chat/sessions/{sessionId}/read",
    tag = "chat",
    params(("sessionId" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"messageIds\": [\"...\"]}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Marked"),
        (status = 400, description = "Invalid body", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
async fn mark_read(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<axum::http::StatusCode, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let ids = f.optional_str_list("messageIds");
    if ids.is_none() && body.get("messageIds").is_none_or(|v| v.is_null()) {
        f.push(FieldError::missing("messageIds"));
    }
    let ids = ids.unwrap_or_default();
    if ids.len() > 500 {
        f.push(FieldError::new(
            "messageIds",
            "at most 500 ids",
            "value_error.list.max_items",
        ));
    }
    let parsed: Vec<i64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
    if parsed.len() != ids.len() {
        f.push(FieldError::new(
            "messageIds",
            "every id must be a message id",
            "type_error",
        ));
    }
    f.finish()?;
    state
        .db
        .mark_read(c.id, &parsed, p.role == Role::Customer)
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypingEvent {
    user_id: String,
    is_typing: bool,
    timestamp: String,
}

/// Tells the session's other clients that the caller is typing (001).
/// Broadcast, never stored. 204.
#[utoipa::path(
    post,
    path = "/api/chat/sessions/{sessionId}/typing",
    tag = "chat",
    params(("sessionId" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"isTyping\": true}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Sent"),
        (status = 400, description = "Invalid body", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
async fn typing(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<axum::http::StatusCode, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let is_typing = f.required_bool("isTyping");
    f.finish()?;
    let who = match p.kind {
        PrincipalKind::User(id) => id.to_string(),
        PrincipalKind::ApiKey(id) => format!("apikey-{id}"),
    };
    state.bus.publish(
        Topic::Chat(c.id),
        &Event {
            kind: "typing",
            data: TypingEvent {
                user_id: who,
                is_typing: is_typing.unwrap_or_default(),
                timestamp: iso(Utc::now()),
            },
        },
    );
    Ok(axum::http::StatusCode::NO_CONTENT)
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
async fn stats(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<ChatStats>, ApiError> {
    if !p.is_staff() {
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SocketQuery {
    /// The JWT, for clients that cannot set headers on a WebSocket.
    pub(crate) token: Option<String>,
}

/// How often an idle socket is pinged; two intervals without any frame
/// from the client and it is dropped.
pub(crate) const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(25);
/// Longest a send to one client may take before that client is dropped.
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The principal of a WebSocket handshake: `Authorization: Bearer` (checked
/// by the middleware) or a `token` query parameter.
pub(crate) fn socket_principal(
    state: &AppState,
    auth: Result<Auth, ApiError>,
    token: Option<&str>,
) -> Result<Principal, ApiError> {
    match (auth, token) {
        (Ok(Auth(p)), _) => Ok(p),
        (Err(_), Some(token)) => state
            .tokens
            .verify(token)
            .map_err(|_| ApiError::unauthorized("Could not validate credentials")),
        (Err(e), None) => Err(e),
    }
}

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
async fn chat_socket(
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
    let events = state.bus.subscribe(Topic::Chat(c.id));
    Ok(upgrade.on_upgrade(move |socket| relay(socket, events)))
}

/// Forwards bus events to one client until it leaves, falls behind, stops
/// answering pings, or takes too long to accept a frame.
pub(crate) async fn relay(
    mut socket: axum::extract::ws::WebSocket,
    mut events: tokio::sync::broadcast::Receiver<crate::realtime::Frame>,
) {
    use axum::extract::ws::{CloseFrame, Message as Ws};
    use tokio::sync::broadcast::error::RecvError;
    metrics::gauge!("websocket_connections").increment(1.0);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_seen = std::time::Instant::now();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(frame) => {
                    let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Text(frame.as_ref().into()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let close = CloseFrame { code: 1013, reason: "too slow: events were dropped; reconnect and reload".into() };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Close(Some(close)))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Ws::Close(_))) | Some(Err(_)) | None => break,
                // Pongs, pings (answered by the library) and client text,
                // which this protocol does not use: signs of life.
                Some(Ok(_)) => last_seen = std::time::Instant::now(),
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > PING_EVERY * 2 {
                    break;
                }
                let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    metrics::gauge!("websocket_connections").decrement(1.0);
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
    request_body(content = serde_json::Value, description = "`{\"title\"?, \"category\"? (id or name), \"priority\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The ticket", body = ChatTicket),
        (status = 400, description = "Invalid body", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
async fn ticket_from_chat(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<ChatTicket>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let title = f.optional_str("title");
    let category = f.optional_str("category");
    let priority = match f.optional_str("priority") {
        None => None,
        Some(text) => Priority::parse(&text).or_else(|| {
            f.push(FieldError::new(
                "priority",
                "must be low, medium or high",
                "type_error.enum",
            ));
            None
        }),
    };
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
    let t = crate::api::tickets::ticket_from_chat(&state, &c, title, category, priority).await?;
    Ok(Json(ChatTicket {
        ticket_id: t.id.to_string(),
        chat_ticket_id: c.id.to_string(),
        status: t.status.as_str(),
    }))
}

/// 000's answer to an upload: the file, in both documents' words.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    id: String,
    file_url: String,
    file_name: String,
    file_type: String,
    url: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    size: i64,
}

/// Uploads a file into a session (000), optionally for one of its
/// messages. Multipart: `file`, `sessionId`, `messageId`.
#[utoipa::path(
    post,
    path = "/api/chat/files",
    tag = "chat",
    request_body(content_type = "multipart/form-data", content = serde_json::Value, description = "`file`, `sessionId`, `messageId`?"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The stored file", body = UploadedFile),
        (status = 400, description = "No file, a type its bytes contradict, or a bad id", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session or message (or not yours)", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Larger than 5 MB", body = crate::api::openapi::ErrorBody),
    )
)]
async fn upload_file(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Json<UploadedFile>, ApiError> {
    if !is_multipart(&headers) {
        return Err(ApiError::validation(
            "Expected a multipart/form-data body with a file",
        ));
    }
    let (fields, mut uploads) = read_multipart(request, &state).await?;
    let mut errors = Vec::new();
    let session = fields.get("sessionId").map(|s| s.trim().to_owned());
    if session.is_none() {
        errors.push(FieldError::missing("sessionId"));
    }
    if uploads.len() != 1 {
        errors.push(FieldError::new(
            "file",
            "exactly one file is expected",
            "value_error",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let c = visible_session(&state, &p, session.as_deref().unwrap_or_default()).await?;
    let message_id = match fields
        .get("messageId")
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
    {
        None => None,
        Some(m) => {
            let id = parse_id(m, "Message")?;
            let (messages, _) = state
                .db
                .list_messages(c.id, p.is_staff(), Some(id + 1), 1)
                .await?;
            if messages.first().is_none_or(|msg| msg.id != id) {
                return Err(ApiError::not_found("Message not found"));
            }
            if state.db.attachments_of(&[id]).await?.len() >= FILES_PER_MESSAGE {
                return Err(ApiError::invalid_fields(vec![FieldError::new(
                    "file",
                    format!("at most {FILES_PER_MESSAGE} files per message"),
                    "value_error.list.max_items",
                )]));
            }
            Some(id)
        }
    };
    let upload = uploads
        .pop()
        .ok_or_else(|| ApiError::validation("file is required"))?;
    let file = store_upload(&state, upload).await?;
    let a = state
        .db
        .insert_attachment(c.org_id, c.id, message_id, p.user_id(), &file)
        .await?;
    let v = AttachmentView::of(&a);
    Ok(Json(UploadedFile {
        id: v.id,
        file_url: v.file_url,
        file_name: v.file_name,
        file_type: v.file_type,
        url: v.url,
        name: v.name,
        kind: v.kind,
        size: v.size,
    }))
}

/// The attachment `id` if `p` may see its session.
async fn visible_file(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<(Attachment, Conversation), ApiError> {
    let not_found = || ApiError::not_found("Attachment not found");
    let id = parse_id(id, "Attachment")?;
    let a = state.db.attachment(id).await?.ok_or_else(not_found)?;
    let c = state
        .db
        .conversation(a.conversation_id)
        .await?
        .ok_or_else(not_found)?;
    if !c.visible_to(p) {
        return Err(not_found());
    }
    Ok((a, c))
}

/// Deletes a file (000): its uploader's, or any in the organization for
/// staff. The bytes go with the last row that uses them.
#[utoipa::path(
    delete,
    path = "/api/chat/files/{fileId}",
    tag = "chat",
    params(("fileId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 403, description = "Not the uploader", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such file (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
async fn delete_file(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Success>, ApiError> {
    let (a, _) = visible_file(&state, &p, &id).await?;
    if !p.is_staff() && a.uploader_id != p.user_id() {
        return Err(ApiError::forbidden(
            "Only the uploader or staff may delete this file",
        ));
    }
    state.db.delete_attachment(a.id).await?;
    state.files.release(&state.db, &[a.sha256]).await;
    Ok(Json(Success { success: true }))
}

/// Downloads a file (001), with its checked type. HTML, SVG and XML are
/// always downloads, never shown inline.
#[utoipa::path(
    get,
    path = "/api/chat/attachments/{attachmentId}",
    tag = "chat",
    params(("attachmentId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 404, description = "No such file (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
async fn download(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse as _;
    let (a, _) = visible_file(&state, &p, &id).await?;
    let bytes = tokio::fs::read(state.files.path(&a.sha256))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, attachment = a.id, "an attachment's file is missing");
            ApiError::not_found("Attachment not found")
        })?;
    let disposition = if crate::files::is_active_type(&a.content_type) {
        "attachment"
    } else {
        "inline"
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&a.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(disposition, &a.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}

/// RFC 6266: an ASCII fallback name and the UTF-8 name (RFC 5987).
fn content_disposition(kind: &str, name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}
