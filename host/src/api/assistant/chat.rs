//! 002 `/api/v1/chat`: talk to the assistant, list and read conversations,
//! read the FAQs.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields, MaybeAuth};
use crate::api::openapi::{DetailError, ValidationErrorList};
use crate::api::turns::{Said, handling_after, reply_text, take_turn};
use crate::domain::conversation::{
    Channel, Conversation, Message, NewConversation, Priority, SenderKind,
};
use crate::domain::knowledge::Faq;
use crate::domain::{FieldError, Principal};
use crate::server::AppState;
use crate::store::ConversationFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat))
        .routes(routes!(conversations))
        .routes(routes!(conversation))
        .routes(routes!(faqs))
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Request body of `POST /api/v1/chat/chat`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatRequest {
    message: String,
    /// Continue this conversation; a new one starts without it.
    conversation_id: Option<i64>,
}

/// The assistant's answer.
#[derive(Serialize, ToSchema)]
pub struct ChatResponse {
    /// The answer; the handover notice when a person takes over; while a
    /// person has the conversation, a notice that the message was passed
    /// on (the assistant stays silent). Always a string.
    response: String,
    conversation_id: i64,
    tokens_used: i64,
    /// Milliseconds.
    response_time: i64,
    /// The passages the answer is based on (`kb-<id>`, `faq-<id>`).
    sources: Vec<String>,
    /// Whether the conversation is now with (or waiting for) a person.
    handover: bool,
}

/// Sends a message to the assistant and answers with its reply. A
/// customer's message in a conversation that a person has taken over is
/// delivered to the agent; `response` then says so.
#[utoipa::path(
    post,
    path = "/api/v1/chat/chat",
    tag = "002 chat",
    request_body = ChatRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The assistant's answer", body = ChatResponse),
        (status = 400, description = "The conversation is closed", body = DetailError),
        (status = 401, description = "Not authenticated", body = DetailError),
        (status = 403, description = "API keys cannot chat as a customer", body = DetailError),
        (status = 404, description = "No such conversation (or not yours)", body = DetailError),
        (status = 422, description = "Invalid fields", body = ValidationErrorList),
        (status = 503, description = "The LLM provider is unavailable", body = DetailError),
    )
)]
async fn chat(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<ChatResponse>, ApiError> {
    let mut f = Fields::new(&body);
    let message = f.required_str("message");
    let conversation_id = match body.get("conversation_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_i64().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                f.push(FieldError::new(
                    "conversation_id",
                    "value is not a valid integer",
                    "type_error.integer",
                ));
                None
            }
        },
    };
    if let Some(Err(e)) = message
        .as_ref()
        .map(|m| crate::domain::conversation::validate_content("message", m))
    {
        f.push(e);
    }
    f.finish()?;
    let message = message.unwrap_or_default();
    let Some(user_id) = p.user_id() else {
        return Err(ApiError::forbidden(
            "Chatting with the assistant needs a user's token, not an API key",
        ));
    };
    let c = match conversation_id {
        Some(id) => visible(&state, &p, id).await?,
        None => {
            crate::service::conversations::start(
                state.core(),
                NewConversation {
                    org_id: p.org_id,
                    customer_id: Some(user_id),
                    contact_id: None,
                    subject: Some(title_from(&message)),
                    priority: Priority::Medium,
                    tags: Vec::new(),
                    channel: Channel::Web,
                    channel_entry: None,
                },
            )
            .await?
        }
    };
    let (_, turn) = take_turn(
        &state,
        &c,
        Said {
            text: &message,
            sender_id: Some(user_id),
            idempotency_key: None,
            customer_ref: user_id.to_string(),
            asked_for_person: false,
        },
    )
    .await?;
    Ok(Json(ChatResponse {
        response: reply_text(&state, &turn).to_owned(),
        conversation_id: c.id,
        tokens_used: turn.tokens_used,
        response_time: turn.response_time_ms,
        sources: turn
            .message()
            .map(|m| m.reply.sources.clone())
            .unwrap_or_default(),
        handover: handling_after(&c, &turn) != crate::domain::conversation::Handling::Ai,
    }))
}

/// A conversation title from its first message: the first line, at most 60
/// characters.
fn title_from(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    let mut title: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        title.push('…');
    }
    if title.is_empty() {
        "New conversation".into()
    } else {
        title
    }
}

async fn visible(state: &AppState, p: &Principal, id: i64) -> Result<Conversation, ApiError> {
    match state.db.conversation(id).await? {
        Some(c) if c.visible_to(p) => Ok(c),
        _ => Err(ApiError::not_found("Conversation not found")),
    }
}

/// A message as 002 shows it.
#[derive(Serialize, ToSchema)]
pub struct ConversationMessage {
    id: i64,
    conversation_id: i64,
    content: String,
    /// `user` (the customer) or `assistant` (the assistant, its notices,
    /// and the agents who answer in its place).
    role: &'static str,
    timestamp: String,
    tokens_used: i64,
    /// Milliseconds the assistant took (0 for others).
    response_time: i64,
    /// The passages an assistant reply is based on.
    sources: Vec<String>,
}

impl ConversationMessage {
    fn of(m: &Message) -> Self {
        ConversationMessage {
            id: m.id,
            conversation_id: m.conversation_id,
            content: m.content.clone(),
            role: match m.sender_kind {
                SenderKind::Customer => "user",
                _ => "assistant",
            },
            timestamp: time(m.created_at),
            tokens_used: m.reply.tokens_used,
            response_time: m.reply.response_time_ms,
            sources: m.reply.sources.clone(),
        }
    }
}

/// A conversation as 002 shows it.
#[derive(Serialize, ToSchema)]
pub struct ConversationView {
    id: i64,
    user_id: i64,
    title: String,
    is_active: bool,
    created_at: String,
    updated_at: String,
    /// `ai`, `waiting` (for an agent) or `agent`.
    handling: &'static str,
    messages: Vec<ConversationMessage>,
}

impl ConversationView {
    fn of(c: &Conversation, messages: &[Message]) -> Self {
        ConversationView {
            id: c.id,
            user_id: c.customer_id.unwrap_or_default(),
            title: c
                .subject
                .clone()
                .unwrap_or_else(|| "New conversation".into()),
            is_active: c.status.is_open(),
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
            handling: c.handling.as_str(),
            messages: messages.iter().map(ConversationMessage::of).collect(),
        }
    }
}

/// The most items a list may skip: no list is longer.
const SKIP_MAX: i64 = 100_000_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items to skip (default 0, at most 100,000,000).
    #[param(value_type = Option<i64>)]
    skip: Option<String>,
    /// Items to return (default 100, at most 1000).
    #[param(value_type = Option<i64>)]
    limit: Option<String>,
}

/// The caller's conversations, newest first (`messages` is empty here;
/// read one conversation for its messages).
#[utoipa::path(
    get,
    path = "/api/v1/chat/conversations",
    tag = "002 chat",
    params(Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Conversations", body = [ConversationView]),
        (status = 401, description = "Not authenticated", body = DetailError),
        (status = 422, description = "Invalid paging", body = ValidationErrorList),
    )
)]
async fn conversations(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(page): Query<Page>,
) -> Result<Json<Vec<ConversationView>>, ApiError> {
    let mut errors = Vec::new();
    let skip = crate::api::common::whole(
        page.skip.as_deref(),
        0,
        0..=SKIP_MAX,
        "query.skip",
        &format!("ensure this value is a whole number from 0 to {SKIP_MAX}"),
        &mut errors,
    );
    let limit = crate::api::common::whole(
        page.limit.as_deref(),
        100,
        1..=1000,
        "query.limit",
        "ensure this value is a whole number from 1 to 1000",
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let Some(user_id) = p.user_id() else {
        return Ok(Json(Vec::new()));
    };
    let (list, _) = state
        .db
        .list_conversations(
            &ConversationFilter {
                org_id: p.org_id,
                customer_id: Some(user_id),
                statuses: None,
            },
            skip,
            limit,
        )
        .await?;
    Ok(Json(
        list.iter().map(|c| ConversationView::of(c, &[])).collect(),
    ))
}

/// One conversation with its messages, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/chat/conversations/{conversation_id}",
    tag = "002 chat",
    params(("conversation_id" = i64, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        (status = 401, description = "Not authenticated", body = DetailError),
        (status = 404, description = "No such conversation (or not yours)", body = DetailError),
    )
)]
async fn conversation(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ConversationView>, ApiError> {
    let id = crate::api::common::parse_id(&id, "Conversation")?;
    let c = visible(&state, &p, id).await?;
    let (messages, _) = state.db.list_messages(c.id, false, None, 1000).await?;
    Ok(Json(ConversationView::of(&c, &messages)))
}

/// An FAQ as 002 shows it.
#[derive(Serialize, ToSchema)]
pub struct FaqView {
    pub id: i64,
    pub question: String,
    pub answer: String,
    pub category: String,
    /// How often it was shown: in this listing, and cited in an answer.
    pub view_count: i64,
}

impl From<&Faq> for FaqView {
    fn from(f: &Faq) -> Self {
        FaqView {
            id: f.id,
            question: f.question.clone(),
            answer: f.answer.clone(),
            category: f.category.clone(),
            view_count: f.view_count,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FaqQuery {
    /// Only this category (`account`, `billing`, `technical`...).
    category: Option<String>,
}

/// The FAQs (of one category), oldest first. Public: without credentials,
/// the default organization's. Each listing counts as a view of every FAQ
/// it shows.
#[utoipa::path(
    get,
    path = "/api/v1/chat/faqs",
    tag = "002 chat",
    params(FaqQuery),
    responses(
        (status = 200, description = "FAQs", body = [FaqView]),
        (status = 401, description = "Credentials were sent and are wrong", body = DetailError),
    )
)]
async fn faqs(
    State(state): State<AppState>,
    MaybeAuth(p): MaybeAuth,
    Query(q): Query<FaqQuery>,
) -> Result<Json<Vec<FaqView>>, ApiError> {
    let org = p.map_or(state.default_org_id, |p| p.org_id);
    let category = q.category.filter(|c| !c.trim().is_empty());
    let list = state
        .db
        .list_faqs(org, category.as_deref().map(str::trim), true)
        .await?;
    Ok(Json(list.iter().map(FaqView::from).collect()))
}
