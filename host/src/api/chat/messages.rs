//! 000/001 messages: history, sends (JSON, multipart, base64), read
//! receipts and typing.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::common::whole;
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::domain::conversation::{
    Conversation, FILE_MAX_BYTES, FILES_PER_MESSAGE, validate_content,
};
use crate::domain::{FieldError, Principal, PrincipalKind};
use crate::server::AppState;
use crate::service::conversations::{self, Answer, Author, Post, Upload};
use crate::service::{Actor, policy};

use super::*;

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
pub(super) async fn list_messages(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let mut errors = Vec::new();
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => match crate::api::common::id_of(b) {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError::new(
                    "before",
                    "must be a message id",
                    "type_error",
                ));
                None
            }
        },
    };
    let limit = whole(
        q.limit.as_deref(),
        50,
        1..=100,
        "limit",
        "must be a whole number from 1 to 100",
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let internal = policy::may_see_internal(&p);
    let (messages, has_more) = state
        .db
        .list_messages(c.id, internal, before, limit)
        .await?;
    let total = state.db.count_messages(c.id, internal).await?;
    // Staff reading a channel conversation: its customer's messages are
    // read (WhatsApp shows the blue ticks).
    if policy::is_staff(&p) {
        crate::channels::seen_by_staff(&state, &c).await;
    }
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

/// Writes a message into `c` as `p`, once per idempotency key. A
/// customer's message in a conversation the assistant handles is answered
/// before this returns: the reply is in the history and on the socket.
pub(super) async fn post_message(
    state: &AppState,
    p: &Principal,
    c: &Conversation,
    content: String,
    headers: &HeaderMap,
    uploads: Vec<Upload>,
) -> Result<ChatMessage, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => conversations::idempotency_key(Some(v.to_str().unwrap_or("\u{0}")))?,
    };
    if !c.status.is_open() {
        return Err(ApiError::conflict(
            "Chat session is closed and accepts no new messages",
        ));
    }
    // The bytes first (content-addressed, harmless if the row never
    // comes), then the message and its files in one transaction.
    let mut files = Vec::with_capacity(uploads.len());
    for u in uploads {
        files.push(conversations::store_file(state.core(), u).await?);
    }
    let posted = conversations::post(
        state.core(),
        c,
        Post {
            idempotency_key: key,
            files,
            ..Post::text(Author::of(Actor::of(p)), content)
        },
        Answer::BestEffort,
    )
    .await?;
    Ok(ChatMessage::with_files(&posted.message, &posted.files))
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
pub(super) async fn send_session_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Json<ChatMessage>, ApiError> {
    let c = visible_session(&state, &p, &id).await?;
    let (content, uploads) = if is_multipart(&headers) {
        let (mut fields, uploads) = read_multipart(request).await?;
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
pub(super) async fn send_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<ChatMessage>, ApiError> {
    let mut f = Fields::new(&body);
    // Clients treat ids as opaque strings: one that names no session of
    // theirs, whatever its form, is not found.
    let session = match body.get("sessionId") {
        None | Some(serde_json::Value::Null) => {
            f.push(FieldError::missing("sessionId"));
            None
        }
        Some(serde_json::Value::String(s)) => Some(s.trim().to_owned()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => Some(String::new()),
    };
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
    let c = visible_session(&state, &p, &session.unwrap_or_default()).await?;
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
pub(super) fn base64_uploads(
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
pub(super) async fn mark_read(
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
    let parsed: Vec<i64> = ids
        .iter()
        .filter_map(|i| crate::api::common::id_of(i))
        .collect();
    if parsed.len() != ids.len() {
        f.push(FieldError::new(
            "messageIds",
            "every id must be a message id",
            "type_error",
        ));
    }
    f.finish()?;
    conversations::mark_read(state.core(), &c, &parsed, !policy::is_staff(&p)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
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
pub(super) async fn typing(
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
    conversations::typing(
        state.core(),
        c.org_id,
        c.id,
        who,
        is_typing.unwrap_or_default(),
    );
    Ok(axum::http::StatusCode::NO_CONTENT)
}
