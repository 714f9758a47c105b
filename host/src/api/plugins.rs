//! The gateway's own plugin endpoints (`/api/gateway/plugins`): what is
//! loaded, and a way for operators to try an LLM-provider entry directly.
//! Admins and API keys only.
//!
//! A failed plugin call answers 503 `service_unavailable` naming the entry
//! and what went wrong; the gateway and the other entries are unaffected.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body};
use crate::domain::Principal;
use crate::plugins::{self, Entry, Plugin, PluginError};
use crate::server::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(complete))
        .routes(routes!(embed))
        .routes(routes!(transcribe))
}

/// One `[[plugins]]` entry and its state.
#[derive(Serialize, ToSchema)]
pub struct PluginStatus {
    id: String,
    /// `llm-provider`, `channel` or `webhook`.
    world: &'static str,
    /// The component: `builtin:NAME` or a file path.
    source: String,
    /// `ready` or `failed` (did not load).
    state: &'static str,
    /// Why the entry did not load.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Calls since start-up, and how many failed, over every organization:
    /// shown to the operator (the default organization's admins and API
    /// keys) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    calls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<u64>,
    /// The most recent failed call, if any (operator only: it may speak of
    /// another organization's request).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_failure: Option<String>,
}

impl PluginStatus {
    /// `entry` as shown to the operator (`operator`) or to another
    /// organization's admin, who sees no process-wide counters.
    pub fn of(entry: &Entry, operator: bool) -> PluginStatus {
        let c = entry.config();
        let (state, error, (calls, failures), last_failure) = match entry {
            Entry::Ready(p) => ("ready", None, p.counters(), p.last_failure()),
            Entry::Failed { error, .. } => ("failed", Some(error.clone()), (0, 0), None),
        };
        let (calls, failures, last_failure) = if operator {
            (Some(calls), Some(failures), last_failure)
        } else {
            (None, None, None)
        };
        PluginStatus {
            id: c.id.clone(),
            world: c.world.name(),
            source: c.source.to_string(),
            state,
            error,
            calls,
            failures,
            last_failure,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PluginList {
    plugins: Vec<PluginStatus>,
}

fn require_operator(p: &Principal) -> Result<(), ApiError> {
    if crate::service::policy::may_manage_plugins(p) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only admins and API keys manage plugins",
        ))
    }
}

/// Lists the configured plugins and their state.
#[utoipa::path(
    get,
    path = "/api/gateway/plugins",
    tag = "plugins",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every configured entry", body = PluginList),
        (status = 401, description = "Not authenticated"),
        (status = 403, description = "Not an admin or API key"),
    )
)]
async fn list(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<PluginList>, ApiError> {
    require_operator(&p)?;
    Ok(Json(PluginList {
        plugins: state
            .plugins
            .entries()
            .iter()
            .map(|e| PluginStatus::of(e, p.org_id == state.default_org_id))
            .collect(),
    }))
}

fn plugin(state: &AppState, id: &str) -> Result<std::sync::Arc<Plugin>, ApiError> {
    match state.plugins.get(id) {
        None => Err(ApiError::not_found(format!(
            "No plugin `{id}` is configured"
        ))),
        Some(Err(e)) => Err(unavailable(&e)),
        Some(Ok(p)) => Ok(p),
    }
}

/// A failed plugin call as the API answers it, naming the plugin: 400 when
/// the request asked the plugin for something it does not do (another
/// world's function, a function its provider does not offer, input it
/// refused), else 503.
pub fn unavailable(e: &PluginError) -> ApiError {
    use crate::plugins::Failure;
    use crate::plugins::LlmError;
    match &e.failure {
        Failure::WrongWorld(_)
        | Failure::Provider(LlmError::NotSupported)
        | Failure::Provider(LlmError::InvalidRequest(_)) => ApiError::validation(e.to_string()),
        _ => ApiError::service_unavailable(e.to_string()),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: Body) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(body.0))
        .map_err(|e| ApiError::validation(format!("Invalid request body: {e}")))
}

/// A message of the conversation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn {
    /// `system`, `user` or `assistant`.
    role: String,
    content: String,
}

/// A retrieved passage to ground the answer in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassageIn {
    id: String,
    #[serde(default)]
    title: String,
    content: String,
    /// Retrieval relevance in (0, 1].
    relevance: f32,
}

/// Request body of `POST /api/gateway/plugins/{id}/complete`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The conversation, oldest first; the last message is answered.
    messages: Vec<MessageIn>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    passages: Vec<PassageIn>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    max_tokens: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct CompleteResponse {
    text: String,
    /// Ids of the passages the answer is based on.
    used_passages: Vec<String>,
    prompt_tokens: u32,
    completion_tokens: u32,
    /// In [0, 1]; low confidence means a human should take over.
    confidence: f32,
    intent: Option<String>,
    entities: Vec<String>,
}

/// Asks an `llm-provider` entry to answer, as the assistant would.
#[utoipa::path(
    post,
    path = "/api/gateway/plugins/{id}/complete",
    tag = "plugins",
    params(("id" = String, Path, description = "The `[[plugins]]` entry id")),
    request_body = CompleteRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The plugin's answer", body = CompleteResponse),
        (status = 400, description = "Invalid body, or a function this plugin does not offer"),
        (status = 404, description = "No such plugin"),
        (status = 503, description = "The plugin failed (trapped, timed out, exceeded its memory, answered garbage or an error) or is not loaded"),
    )
)]
async fn complete(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<CompleteResponse>, ApiError> {
    require_operator(&p)?;
    let plugin = plugin(&state, &id)?;
    let body: CompleteRequest = parse(body)?;
    if body.messages.is_empty() {
        return Err(ApiError::validation("messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(body.messages.len());
    for m in body.messages {
        let role = match m.role.as_str() {
            "system" => plugins::Role::System,
            "user" => plugins::Role::User,
            "assistant" => plugins::Role::Assistant,
            other => {
                return Err(ApiError::validation(format!(
                    "role must be system, user or assistant, got {other:?}"
                )));
            }
        };
        messages.push(plugins::ChatMessage {
            role,
            content: m.content,
        });
    }
    for passage in &body.passages {
        if !(passage.relevance > 0.0 && passage.relevance <= 1.0) {
            return Err(ApiError::validation("passage relevance must be in (0, 1]"));
        }
    }
    let request = plugins::CompletionRequest {
        system_prompt: body.system_prompt,
        messages,
        passages: body
            .passages
            .into_iter()
            .map(|p| plugins::Passage {
                id: p.id,
                title: p.title,
                content: p.content,
                relevance: p.relevance,
            })
            .collect(),
        temperature: body.temperature,
        max_tokens: body.max_tokens,
    };
    let c = plugin
        .complete(&request)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(CompleteResponse {
        text: c.text,
        used_passages: c.used_passages,
        prompt_tokens: c.usage.prompt_tokens,
        completion_tokens: c.usage.completion_tokens,
        confidence: c.confidence,
        intent: c.intent,
        entities: c.entities,
    }))
}

/// Request body of `POST /api/gateway/plugins/{id}/embed`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// At most 256 texts.
    texts: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbedResponse {
    dimension: u32,
    /// One vector per text, in order.
    vectors: Vec<Vec<f32>>,
}

/// Asks an `llm-provider` entry for embeddings.
#[utoipa::path(
    post,
    path = "/api/gateway/plugins/{id}/embed",
    tag = "plugins",
    params(("id" = String, Path, description = "The `[[plugins]]` entry id")),
    request_body = EmbedRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One vector per text", body = EmbedResponse),
        (status = 400, description = "Invalid body, or a function this plugin does not offer"),
        (status = 404, description = "No such plugin"),
        (status = 503, description = "The plugin failed or is not loaded"),
    )
)]
async fn embed(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<EmbedResponse>, ApiError> {
    require_operator(&p)?;
    let plugin = plugin(&state, &id)?;
    let body: EmbedRequest = parse(body)?;
    if body.texts.is_empty() || body.texts.len() > 256 {
        return Err(ApiError::validation("texts must hold 1 to 256 strings"));
    }
    let e = plugin
        .embed(&body.texts)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(EmbedResponse {
        dimension: e.dimension,
        vectors: e.vectors,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct TranscribeResponse {
    text: String,
    /// BCP 47 tag, when detected or given.
    language: Option<String>,
}

/// Asks an `llm-provider` entry to transcribe audio sent as the raw body
/// (at most `server.max_body_bytes`).
#[utoipa::path(
    post,
    path = "/api/gateway/plugins/{id}/transcribe",
    tag = "plugins",
    params(
        ("id" = String, Path, description = "The `[[plugins]]` entry id"),
        ("format" = String, Query, description = "`mp3`, `ogg`, `wav`, `webm`, `m4a`..."),
        ("language" = Option<String>, Query, description = "BCP 47 hint"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "What was said", body = TranscribeResponse),
        (status = 400, description = "No audio, no format, or a plugin that does not transcribe"),
        (status = 404, description = "No such plugin"),
        (status = 503, description = "The plugin failed or is not loaded"),
    )
)]
async fn transcribe(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    audio: axum::body::Bytes,
) -> Result<Json<TranscribeResponse>, ApiError> {
    require_operator(&p)?;
    let plugin = plugin(&state, &id)?;
    let mut format = None;
    let mut language = None;
    for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
    {
        match key.as_ref() {
            "format" if !value.is_empty() => format = Some(value.to_ascii_lowercase()),
            "language" if !value.is_empty() => language = Some(value.into_owned()),
            _ => {}
        }
    }
    if let Some(tag) = &language
        && (tag.len() > 35 || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return Err(ApiError::validation(
            "language must be a BCP 47 tag such as en or pt-BR",
        ));
    }
    let format = format.ok_or_else(|| {
        ApiError::validation("the format query parameter is required (mp3, ogg, wav...)")
    })?;
    if !format.chars().all(|c| c.is_ascii_alphanumeric()) || format.len() > 10 {
        return Err(ApiError::validation(
            "format must be a short name such as mp3",
        ));
    }
    if audio.is_empty() {
        return Err(ApiError::validation("the body must hold the audio"));
    }
    let t = plugin
        .transcribe(&audio, &format, language.as_deref())
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(TranscribeResponse {
        text: t.text,
        language: t.language,
    }))
}
