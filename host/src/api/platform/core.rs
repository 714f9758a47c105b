//! 003 `/api/core`: messages (text and audio), session context and reset,
//! health.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Customer, check_channel, customer, find_session, iso, session_for};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::api::openapi::PlatformErrorBody;
use crate::api::turns::{Said, check_text, handling_after, reply_text, take_turn};
use crate::assistant::Turn;
use crate::domain::Principal;
use crate::domain::conversation::{Conversation, Message, SenderKind};
use crate::server::AppState;

/// Largest decoded audio clip.
pub const AUDIO_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Audio formats accepted.
pub const AUDIO_FORMATS: &[&str] = &[
    "mp3", "mpeg", "mpga", "m4a", "mp4", "wav", "ogg", "oga", "opus", "webm", "flac",
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(message))
        .routes(routes!(audio_message))
        // Base64 audio: a third larger than the clip, plus the JSON around it.
        .layer(axum::extract::DefaultBodyLimit::max(
            AUDIO_MAX_BYTES / 3 * 4 + 64 * 1024,
        ))
        .routes(routes!(context))
        .routes(routes!(reset))
        .routes(routes!(health))
}

/// 003's reply object.
#[derive(Serialize, ToSchema)]
pub struct ReplyView {
    text: String,
    /// The stored message's id.
    id: String,
    /// `text`; `handover` for the notice that a person takes over;
    /// `notice` for the note that a person has the conversation and the
    /// message was passed on (its id is then `notice-<message id>`).
    #[serde(rename = "type")]
    kind: &'static str,
}

/// 003's context of a turn.
#[derive(Serialize, ToSchema)]
pub struct TurnContextView {
    intent: Option<String>,
    entities: Vec<String>,
    confidence: f32,
}

/// The answer to a message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageResponse {
    /// The transcription (audio messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    transcription: Option<String>,
    /// The reply, the handover notice, or (a person has the conversation)
    /// the note that the message was passed on.
    response: ReplyView,
    session_id: String,
    context: TurnContextView,
    /// The passages the reply is based on (`kb-<id>`, `faq-<id>`).
    sources: Vec<String>,
    /// `with_ai`, `waiting_for_agent` or `with_agent`.
    status: &'static str,
    /// Whether this turn handed the conversation to a person.
    handover: bool,
}

pub(crate) fn response_of(
    state: &AppState,
    c: &Conversation,
    session_id: String,
    said: &Message,
    turn: &Turn,
    transcription: Option<String>,
) -> MessageResponse {
    let message = turn.message();
    MessageResponse {
        transcription,
        response: match message {
            Some(m) => ReplyView {
                text: m.content.clone(),
                id: m.id.to_string(),
                kind: if m.sender_kind == SenderKind::System {
                    "handover"
                } else {
                    "text"
                },
            },
            None => ReplyView {
                text: reply_text(state, turn).to_owned(),
                id: format!("notice-{}", said.id),
                kind: "notice",
            },
        },
        session_id,
        context: TurnContextView {
            intent: turn.context.intent.clone(),
            entities: turn.context.entities.clone(),
            confidence: turn.context.confidence,
        },
        sources: message.map(|m| m.reply.sources.clone()).unwrap_or_default(),
        status: handling_after(c, turn).as_003(),
        handover: matches!(turn.outcome, crate::assistant::Outcome::HandedOver { .. }),
    }
}

/// The fields every message carries besides its content.
struct Envelope {
    channel: String,
    user_id: Option<String>,
    session_id: Option<String>,
    language: Option<String>,
}

/// Largest `metadata` object, as JSON.
const METADATA_MAX: usize = 16 * 1024;

fn envelope(f: &mut Fields<'_>, body: &Map<String, Value>) -> Envelope {
    let channel = f.optional_str("channel").unwrap_or_else(|| "web".into());
    let user_id = string_or_number(f, body, "userId");
    let session_id = string_or_number(f, body, "sessionId");
    // The WhatsApp channel names its conversations so; a client may not.
    if session_id
        .as_deref()
        .is_some_and(|s| s.trim().starts_with("whatsapp:"))
    {
        f.push(crate::domain::FieldError::new(
            "sessionId",
            "may not start with `whatsapp:` (the WhatsApp channel's own conversations)",
            "value_error",
        ));
    }
    let language = match body.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if Value::Object(m.clone()).to_string().len() > METADATA_MAX => {
            f.push(crate::domain::FieldError::new(
                "metadata",
                format!("must be at most {METADATA_MAX} bytes of JSON"),
                "value_error.any_str.max_length",
            ));
            None
        }
        Some(Value::Object(m)) => match m.get("language") {
            None | Some(Value::Null) => None,
            Some(Value::String(l)) if !l.is_empty() && l.len() <= 35 => Some(l.clone()),
            Some(_) => {
                f.push(crate::domain::FieldError::new(
                    "metadata.language",
                    "a language tag such as en or pt-BR expected",
                    "value_error",
                ));
                None
            }
        },
        Some(_) => {
            f.push(crate::domain::FieldError::new(
                "metadata",
                "an object expected",
                "type_error.dict",
            ));
            None
        }
    };
    Envelope {
        channel,
        user_id,
        session_id,
        language,
    }
}

/// A string field that clients also send as a number.
pub(super) fn string_or_number(
    f: &mut Fields<'_>,
    body: &Map<String, Value>,
    field: &str,
) -> Option<String> {
    match body.get(field) {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => f.optional_str(field),
    }
}

/// Runs one turn for `p` and answers 003's response.
async fn turn(
    state: &AppState,
    p: &Principal,
    env: &Envelope,
    text: &str,
    message_id: Option<String>,
    transcription: Option<String>,
) -> Result<MessageResponse, ApiError> {
    check_channel(&env.channel)?;
    // Everything the request can be refused for is checked before a
    // session is found or created: a refused request leaves nothing behind.
    let message_id = crate::service::conversations::idempotency_key(message_id.as_deref())?;
    let who: Customer = customer(state, p, env.user_id.as_deref()).await?;
    let (c, session_id) =
        session_for(state, p, &who, env.session_id.as_deref(), &env.channel).await?;
    let (said, turn) = take_turn(
        state,
        &c,
        Said {
            text,
            sender_id: who.user_id,
            idempotency_key: message_id,
            customer_ref: who.reference.clone(),
            asked_for_person: false,
        },
    )
    .await?;
    Ok(response_of(
        state,
        &c,
        session_id,
        &said,
        &turn,
        transcription,
    ))
}

/// Processes a customer's message through the assistant. `message.id`,
/// when given, makes a retry answer the first reply instead of a second.
#[utoipa::path(
    post,
    path = "/api/core/messages",
    tag = "003 core",
    request_body(content = Value, description = "`{\"message\": {\"text\", \"type\"?: \"text\", \"id\"?}, \"channel\"?, \"userId\"?, \"sessionId\"?, \"metadata\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The reply", body = MessageResponse),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "userId or sessionId is not the caller's", body = PlatformErrorBody),
        (status = 404, description = "No such session", body = PlatformErrorBody),
        (status = 503, description = "The LLM provider is unavailable", body = PlatformErrorBody),
    )
)]
async fn message(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<MessageResponse>, ApiError> {
    let mut f = Fields::new(&body);
    let env = envelope(&mut f, &body);
    let (text, id) = match body.get("message") {
        Some(Value::Object(m)) => {
            let mut inner = Fields::new(m);
            let text = inner.required_str("text");
            let kind = inner.optional_str("type");
            let id = string_or_number(&mut inner, m, "id");
            for mut e in inner.errors {
                e.field = format!("message.{}", e.field);
                f.push(e);
            }
            if let Some(kind) = kind.filter(|k| k != "text") {
                f.push(crate::domain::FieldError::new(
                    "message.type",
                    format!("only text messages are accepted here (got {kind:?}); send audio to /api/core/messages/audio"),
                    "value_error",
                ));
            }
            (text, id)
        }
        None | Some(Value::Null) => {
            f.push(crate::domain::FieldError::missing("message"));
            (None, None)
        }
        Some(_) => {
            f.push(crate::domain::FieldError::new(
                "message",
                "an object {\"text\": ...} expected",
                "type_error.dict",
            ));
            (None, None)
        }
    };
    f.finish()?;
    let text = text.unwrap_or_default();
    check_text("message.text", &text)?;
    if id.as_ref().is_some_and(|i| i.len() > 200) {
        return Err(ApiError::validation(
            "message.id must be at most 200 characters",
        ));
    }
    Ok(Json(turn(&state, &p, &env, &text, id, None).await?))
}

/// Transcribes an audio message through the configured provider, then
/// processes the text like `/api/core/messages`. Without a provider that
/// transcribes, 503 `service_unavailable` (the shipped `kb-answer` does
/// not; `openai` does).
#[utoipa::path(
    post,
    path = "/api/core/messages/audio",
    tag = "003 core",
    request_body(content = Value, description = "`{\"audio\": base64, \"format\": \"mp3\", \"channel\"?, \"userId\"?, \"sessionId\"?, \"metadata\"?: {\"language\"?}}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The transcription and the reply", body = MessageResponse),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 413, description = "Audio too large", body = PlatformErrorBody),
        (status = 503, description = "No transcription-capable provider", body = PlatformErrorBody),
    )
)]
async fn audio_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<MessageResponse>, ApiError> {
    let mut f = Fields::new(&body);
    let env = envelope(&mut f, &body);
    let audio = f.required_str("audio");
    let format = f.required_str("format");
    f.finish()?;
    let (audio, format) = (audio.unwrap_or_default(), format.unwrap_or_default());
    let bytes = decode_audio(&audio, &format)?;
    let text = state
        .assistant
        .transcribe(
            &bytes,
            &format.to_ascii_lowercase(),
            env.language.as_deref(),
        )
        .await?;
    if text.trim().is_empty() {
        return Err(ApiError::validation(
            "Nothing could be heard in the audio: the transcription is empty",
        ));
    }
    Ok(Json(
        turn(
            &state,
            &p,
            &env,
            text.trim(),
            None,
            Some(text.trim().to_owned()),
        )
        .await?,
    ))
}

/// Decodes base64 audio (a `data:` URL prefix is accepted) and checks its
/// format and size.
pub(crate) fn decode_audio(audio: &str, format: &str) -> Result<Vec<u8>, ApiError> {
    if !AUDIO_FORMATS.contains(&format.to_ascii_lowercase().as_str()) {
        return Err(ApiError::validation(format!(
            "format must be one of {}",
            AUDIO_FORMATS.join(", ")
        )));
    }
    let data = audio.split_once(";base64,").map_or(audio, |(_, d)| d);
    let data: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| ApiError::validation("audio must be base64-encoded"))?;
    if bytes.is_empty() {
        return Err(ApiError::validation("audio is empty"));
    }
    if bytes.len() > AUDIO_MAX_BYTES {
        return Err(ApiError::new(
            crate::api::error::ErrorCode::PayloadTooLarge,
            format!(
                "audio must be at most {} MiB",
                AUDIO_MAX_BYTES / 1024 / 1024
            ),
        ));
    }
    Ok(bytes)
}

/// One turn of the history.
#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    /// `user` (the customer), `assistant` (the assistant and its notices)
    /// or `agent`.
    role: &'static str,
    content: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionContext {
    conversation_history: Vec<HistoryItem>,
    /// What the last turns named: `order_number`, `email` and `keywords`.
    #[schema(value_type = Object)]
    entities: Map<String, Value>,
    intent: Option<String>,
    last_interaction: String,
    /// `with_ai`, `waiting_for_agent` or `with_agent`.
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextResponse {
    session_id: String,
    user_id: String,
    channel: String,
    context: SessionContext,
}

/// The entities of the last turn as an object: numbers as `order_number`,
/// addresses as `email`, the rest as `keywords`.
fn entity_map(context: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("order_number".into(), Value::Null);
    let mut keywords = Vec::new();
    for e in context
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if e.chars().all(|c| c.is_ascii_digit()) {
            out.insert("order_number".into(), json!(e));
        } else if e.contains('@') {
            out.insert("email".into(), json!(e));
        } else {
            keywords.push(json!(e));
        }
    }
    out.insert("keywords".into(), Value::Array(keywords));
    out
}

/// The session's context: the history since the last reset, the last
/// intent and entities.
#[utoipa::path(
    get,
    path = "/api/core/sessions/{sessionId}/context",
    tag = "003 core",
    params(("sessionId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The context", body = ContextResponse),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 400, description = "A session id with control characters", body = PlatformErrorBody),
        (status = 404, description = "No such session (or not yours)", body = PlatformErrorBody),
    )
)]
async fn context(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(session_id): Path<String>,
) -> Result<Json<ContextResponse>, ApiError> {
    let c = find_session(&state, &p, &session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Session not found"))?;
    let history = state.db.history(&c, 50).await?;
    let user_id = c.customer_id.map(|id| id.to_string()).unwrap_or_default();
    let last = history.last().map_or(c.updated_at, |m| m.created_at);
    Ok(Json(ContextResponse {
        session_id,
        user_id,
        channel: c.channel.as_str().to_owned(),
        context: SessionContext {
            conversation_history: history
                .iter()
                .map(|m| HistoryItem {
                    role: match m.sender_kind {
                        SenderKind::Customer => "user",
                        SenderKind::Agent => "agent",
                        SenderKind::Assistant | SenderKind::System => "assistant",
                    },
                    content: m.content.clone(),
                })
                .collect(),
            entities: entity_map(&c.context),
            intent: c
                .context
                .get("intent")
                .and_then(Value::as_str)
                .map(str::to_owned),
            last_interaction: iso(last),
            status: c.handling.as_003(),
        },
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetResponse {
    status: &'static str,
    message: &'static str,
    session_id: String,
}

/// Clears the session's context: the assistant forgets the history and the
/// intent (the messages stay stored for agents).
#[utoipa::path(
    post,
    path = "/api/core/sessions/{sessionId}/reset",
    tag = "003 core",
    params(("sessionId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Reset", body = ResetResponse),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 400, description = "A session id with control characters", body = PlatformErrorBody),
        (status = 404, description = "No such session (or not yours)", body = PlatformErrorBody),
    )
)]
async fn reset(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(session_id): Path<String>,
) -> Result<Json<ResetResponse>, ApiError> {
    let c = find_session(&state, &p, &session_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Session not found"))?;
    state.db.reset_context(c.id).await?;
    Ok(Json(ResetResponse {
        status: "success",
        message: "Session context has been reset",
        session_id,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ServiceHealth {
    /// `healthy` or `unhealthy`.
    status: &'static str,
    version: &'static str,
    /// Each dependency: `healthy` or `unhealthy`.
    #[schema(value_type = Object)]
    dependencies: Map<String, Value>,
}

/// Whether plugin `id` is loaded.
pub(crate) fn plugin_word(state: &AppState, id: Option<&str>) -> &'static str {
    match id.and_then(|id| state.plugins.get(id)) {
        Some(Ok(_)) => "healthy",
        _ => "unhealthy",
    }
}

pub(crate) fn service_health(deps: Map<String, Value>) -> (StatusCode, Json<ServiceHealth>) {
    let ok = deps.values().all(|v| v == "healthy");
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(ServiceHealth {
            status: if ok { "healthy" } else { "unhealthy" },
            version: env!("CARGO_PKG_VERSION"),
            dependencies: deps,
        }),
    )
}

/// The chatbot core's health: the database, the search index, the
/// configured LLM provider (by plugin id) and the memory engine.
#[utoipa::path(
    get,
    path = "/api/core/health",
    tag = "003 core",
    responses(
        (status = 200, description = "Healthy", body = ServiceHealth),
        (status = 503, description = "A dependency is unhealthy", body = ServiceHealth),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<ServiceHealth>) {
    let database = state.health.database(&state.db).await;
    let word = |ok: bool| json!(if ok { "healthy" } else { "unhealthy" });
    let mut deps = Map::new();
    deps.insert("database".into(), word(database));
    let index = state.assistant.index_healthy().await.unwrap_or(false);
    deps.insert("search_index".into(), word(index));
    let provider = state.assistant.config.provider.clone();
    deps.insert(
        provider.clone().unwrap_or_else(|| "llm_provider".into()),
        json!(plugin_word(&state, provider.as_deref())),
    );
    deps.insert("memory_engine".into(), word(database));
    service_health(deps)
}
