//! 000 and 001 `/api/chat`: chat sessions and their messages.
//!
//! Both documents describe the same objects. Where they share a path
//! (`POST /api/chat/sessions`, `GET /api/chat/sessions/{id}/messages`) the
//! request accepts the union of their fields and the answer carries the
//! union of theirs (DESIGN.md), so either client family works unchanged.
//! Ids are decimal strings; an id that is not a number, or that names
//! something the caller may not see, answers 404.
//!
//! This file holds the views both documents share, the `/ws/chat` rendering
//! of domain events and the router; the handlers live by resource in
//! `sessions`, `messages`, `files` and `socket`. Every change goes through
//! the conversation core (`crate::service`).

use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod files;
mod messages;
mod sessions;
mod socket;

use files::*;
use messages::*;
use sessions::*;
use socket::*;

use crate::api::common::{iso, parse_id};
use crate::api::error::ApiError;
use crate::domain::Principal;
use crate::domain::conversation::{Attachment, Conversation, Message};
use crate::events::Event;
use crate::server::AppState;

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

/// A domain event as `/ws/chat/{sessionId}` shows it (`{"type", "data"}`):
/// `message` (public messages only), `session_update`, `handover`,
/// `typing`. Others are not shown.
pub(crate) fn render(event: &Event) -> Option<String> {
    let framed = |kind: &str, data: serde_json::Value| {
        serde_json::json!({"type": kind, "data": data}).to_string()
    };
    match event {
        Event::MessageCreated { message, files } if !message.is_internal => Some(framed(
            "message",
            serde_json::to_value(ChatMessage::with_files(message, files)).ok()?,
        )),
        Event::ConversationUpdated(c)
        | Event::ConversationAssigned(c)
        | Event::ConversationClosed(c) => Some(framed(
            "session_update",
            serde_json::to_value(Session::of(c)).ok()?,
        )),
        Event::HandoverChanged {
            conversation: c,
            transition,
            reason,
        } => Some(framed(
            "handover",
            serde_json::json!({
                "sessionId": c.id.to_string(),
                "customerId": c.customer_id.map(|id| id.to_string()),
                "channel": c.channel.as_str(),
                "status": c.handling.as_003(),
                "transition": transition.as_str(),
                "reason": reason,
                "timestamp": iso(Utc::now()),
            }),
        )),
        Event::Typing {
            who, is_typing, at, ..
        } => Some(framed(
            "typing",
            serde_json::json!({"userId": who, "isTyping": is_typing, "timestamp": iso(*at)}),
        )),
        _ => None,
    }
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
            user_id: c.customer_id.map(|id| id.to_string()).unwrap_or_default(),
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
    /// An internal note: staff see it, the customer never does.
    is_internal: bool,
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
            is_internal: m.is_internal,
        }
    }
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

#[derive(Serialize, ToSchema)]
pub struct Success {
    success: bool,
}
