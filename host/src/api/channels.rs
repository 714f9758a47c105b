//! 003 `/api/channels`: the WhatsApp Cloud API webhook (subscription
//! handshake and events) and sending WhatsApp messages.
//!
//! Without a WhatsApp entry (`[[plugins]]` serving `builtin:whatsapp` or
//! listing `settings.phone_number_ids`) every route answers 503.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::{ApiError, ErrorCode};
use crate::api::extract::{Auth, Body, Fields};
use crate::api::openapi::PlatformErrorBody;
use crate::channels::{InboxEvent, SendOutcome};
use crate::domain::conversation::{ChannelMeta, Delivery, Message};
use crate::domain::{FieldError, PrincipalKind};
use crate::plugins::{self, ChannelError, Failure};
use crate::server::AppState;
use crate::service::conversations::{self as convos, Answer, Author, Post, Upload};
use crate::store::NewInboxRow;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify_webhook, receive_webhook))
        .routes(routes!(send_message))
        .routes(routes!(health))
}

/// The channel service's health: the database, the assistant (the chatbot
/// core's provider), the WebSockets, the WhatsApp entries and the email
/// entries (their plugin, SMTP transport and IMAP listener; each key
/// absent when no such entry is configured). 503 when one is unhealthy.
#[utoipa::path(
    get,
    path = "/api/channels/health",
    tag = "003 channels",
    responses(
        (status = 200, description = "Healthy", body = super::platform::core::ServiceHealth),
        (status = 503, description = "A dependency is unhealthy", body = super::platform::core::ServiceHealth),
    )
)]
async fn health(
    State(state): State<AppState>,
) -> (StatusCode, Json<super::platform::core::ServiceHealth>) {
    use super::platform::core::{plugin_word, service_health};
    let database = state.health.database(&state.db).await;
    let mut deps = serde_json::Map::new();
    deps.insert(
        "database".into(),
        Value::from(if database { "healthy" } else { "unhealthy" }),
    );
    let provider = state.assistant.config.provider.clone();
    deps.insert(
        "chatbot_core".into(),
        Value::from(plugin_word(&state, provider.as_deref())),
    );
    deps.insert("websocket".into(), Value::from("healthy"));
    if !state.channels.whatsapp.is_empty() {
        let loaded = state
            .channels
            .whatsapp
            .iter()
            .all(|r| matches!(state.plugins.get(&r.entry), Some(Ok(_))));
        deps.insert(
            "whatsapp".into(),
            Value::from(if loaded { "healthy" } else { "unhealthy" }),
        );
    }
    if !state.channels.email.is_empty() {
        let problems: Vec<String> = state
            .channels
            .email
            .iter()
            .filter_map(|r| {
                let loaded = matches!(state.plugins.get(r.entry()), Some(Ok(_)));
                match (loaded, r.health()) {
                    (true, Ok(())) => None,
                    (false, _) => Some(format!("{}: the plugin did not load", r.entry())),
                    (true, Err(e)) => Some(format!("{}: {e}", r.entry())),
                }
            })
            .collect();
        if !problems.is_empty() {
            tracing::debug!(?problems, "the email channel is unhealthy");
        }
        deps.insert(
            "email".into(),
            Value::from(if problems.is_empty() {
                "healthy"
            } else {
                "unhealthy"
            }),
        );
    }
    service_health(deps)
}

/// The rate-limit scope of refused webhook signatures.
const REFUSALS: &str = "whatsapp-webhook-refusals";

/// Largest webhook body: Meta's payloads are far smaller.
pub const WEBHOOK_MAX: usize = 3 * 1024 * 1024;
/// How long a channel send (`POST /whatsapp/messages`, `/email/send`)
/// waits for the provider's answer before it answers `pending` (the
/// outbox keeps trying).
const SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest free-form WhatsApp text.
const TEXT_MAX: usize = 4096;
/// Largest file sent with `POST /messages` (WhatsApp's document limit is
/// 100 MB; the gateway's uploads stop at 5 MB).
const MEDIA_MAX: usize = 5 * 1024 * 1024;

fn no_entry() -> ApiError {
    ApiError::service_unavailable(
        "The WhatsApp channel is not configured: add a [[plugins]] entry with path = \"builtin:whatsapp\"",
    )
}

/// The entry that verifies and parses webhooks: the first one loaded (all
/// WhatsApp entries of one Meta app share its secrets).
fn parser(state: &AppState) -> Result<std::sync::Arc<plugins::Plugin>, ApiError> {
    let routes = &state.channels.whatsapp;
    if routes.is_empty() {
        return Err(no_entry());
    }
    let mut last = None;
    for r in routes {
        match state.plugins.get(&r.entry) {
            Some(Ok(p)) => return Ok(p),
            Some(Err(e)) => last = Some(e),
            None => {}
        }
    }
    Err(match last {
        Some(e) => ApiError::service_unavailable(e.to_string()),
        None => no_entry(),
    })
}

fn request_of(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> plugins::WebhookRequest {
    let query = query
        .map(|q| gateway_wire::text::form_pairs(q.as_bytes()))
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| plugins::Pair {
            key,
            value: value.as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some(plugins::Header {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect();
    plugins::WebhookRequest {
        method: method.as_str().to_owned(),
        path: "/".into(),
        query,
        headers,
        body,
    }
}

fn plugin_response(r: plugins::WebhookResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut response = (status, r.body).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&r.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// Meta's subscription handshake: `hub.mode=subscribe` with the verify
/// token (`WHATSAPP_VERIFY_TOKEN`) answers `hub.challenge` as plain text,
/// byte for byte; anything else is 403.
#[utoipa::path(
    get,
    path = "/api/channels/whatsapp/webhook",
    tag = "003 channels",
    params(
        ("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("hub.verify_token" = Option<String>, Query, description = "The operator's `WHATSAPP_VERIFY_TOKEN`"),
        ("hub.challenge" = Option<String>, Query, description = "Echoed back on success"),
    ),
    responses(
        (status = 200, description = "The challenge, as sent", content_type = "text/plain", body = String),
        (status = 403, description = "Wrong mode or verify token", body = PlatformErrorBody),
        (status = 503, description = "No WhatsApp entry is configured", body = PlatformErrorBody),
    )
)]
async fn verify_webhook(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let plugin = parser(&state)?;
    let request = request_of(&method, query.as_deref(), &headers, Vec::new());
    match plugin.verify_handshake(&request).await {
        Ok(r) => Ok(plugin_response(r)),
        Err(e) => Err(match e.failure {
            Failure::Channel(ChannelError::InvalidSignature(_))
            | Failure::Channel(ChannelError::InvalidPayload(_)) => {
                ApiError::forbidden("Verification failed")
            }
            _ => ApiError::service_unavailable(e.to_string()),
        }),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Received {
    /// Always `received`.
    status: String,
}

/// WhatsApp Cloud API events (messages and statuses). The
/// `X-Hub-Signature-256` header (`sha256=` + hex HMAC-SHA256 of the raw
/// body with `WHATSAPP_APP_SECRET`) is checked before the body is parsed.
/// The events are written to a durable inbox before the answer and
/// processed from there: each goes to the entry that lists its business
/// number (`metadata.phone_number_id`); events for other numbers are
/// acknowledged and dropped.
#[utoipa::path(
    post,
    path = "/api/channels/whatsapp/webhook",
    tag = "003 channels",
    request_body(content = Value, description = "A WhatsApp Cloud API webhook payload (`{\"object\": \"whatsapp_business_account\", \"entry\": [...]}`)"),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` + hex HMAC-SHA256 of the raw body"),
    ),
    responses(
        (status = 200, description = "Verified and stored (or not for WhatsApp: ignored)", body = Received),
        (status = 400, description = "The body is not JSON", body = PlatformErrorBody),
        (status = 401, description = "Missing or wrong signature", body = PlatformErrorBody),
        (status = 429, description = "Too many wrong signatures from this address", body = PlatformErrorBody),
        (status = 413, description = "The body is larger than 3 MB", body = PlatformErrorBody),
        (status = 503, description = "No WhatsApp entry is configured, or the inbox could not be written (Meta retries)", body = PlatformErrorBody),
    )
)]
async fn receive_webhook(
    State(state): State<AppState>,
    axum::Extension(crate::api::middleware::ClientIp(ip)): axum::Extension<
        crate::api::middleware::ClientIp,
    >,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let plugin = parser(&state)?;
    if headers.get("x-hub-signature-256").is_none() {
        return Err(ApiError::unauthorized("Missing X-Hub-Signature-256"));
    }
    // An address that keeps sending wrong signatures is limited like any
    // anonymous client; Meta's signed posts are never counted.
    let refusals = state.config.rate_limits.enabled.then(|| {
        crate::api::rate_limit::Rule::for_limits(
            &state.config.rate_limits.platform,
            crate::api::rate_limit::Subject::ip(ip),
            None,
        )
    });
    let now = crate::api::rate_limit::unix_now();
    if let Some(rules) = &refusals
        && let Some(d) = state.limiter.refusal(REFUSALS, rules, now)
    {
        return Err(ApiError::rate_limited(
            &d,
            "Too many webhooks with a wrong signature from this address",
        ));
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("The body must be at most {} MB", WEBHOOK_MAX >> 20),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > WEBHOOK_MAX) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, WEBHOOK_MAX)
        .await
        .map_err(|_| too_large())?;
    let request = request_of(&method, query.as_deref(), &headers, body.to_vec());
    let parsed = match plugin.parse_webhook(&request).await {
        Ok(p) => p,
        Err(e) => {
            return Err(match e.failure {
                Failure::Channel(ChannelError::InvalidSignature(_)) => {
                    if let Some(rules) = &refusals {
                        state.limiter.check(REFUSALS, rules, now);
                    }
                    ApiError::unauthorized("Invalid signature")
                }
                Failure::Channel(ChannelError::InvalidPayload(why)) => {
                    ApiError::validation(format!("The body is not a WhatsApp webhook: {why}"))
                }
                _ => ApiError::service_unavailable(e.to_string()),
            });
        }
    };
    let mut rows = Vec::with_capacity(parsed.events.len());
    for event in parsed.events {
        let event = InboxEvent::from_plugin(event);
        let Some(route) = event.account().and_then(|a| state.channels.route_of(a)) else {
            metrics::counter!("channel_events_unrouted_total").increment(1);
            tracing::warn!(
                account = event.account().unwrap_or_default(),
                "a WhatsApp event for a number no entry lists; dropped"
            );
            continue;
        };
        let json = serde_json::to_string(&event).map_err(|e| {
            tracing::error!(error = %e, "an inbox event does not serialize");
            ApiError::internal()
        })?;
        rows.push(NewInboxRow {
            entry: route.entry.clone(),
            lane: event.lane(),
            event: json,
        });
    }
    state.channels.accept(rows).await.map_err(|e| {
        tracing::error!(error = %e, "could not write the channel inbox");
        ApiError::service_unavailable("The event could not be stored; retry")
    })?;
    Ok(plugin_response(parsed.response))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SentView {
    /// `sent` once the provider (WhatsApp, the mail server) accepted it
    /// (`delivered` or `read` when it got further already); `pending` when
    /// it did not answer within 10 s (the gateway keeps trying).
    status: String,
    /// The provider's id for the message (WhatsApp's `wamid...`, a mail's
    /// `Message-ID` without brackets); the gateway's own message id while
    /// it is pending.
    message_id: String,
    timestamp: String,
}

/// Waits up to `SEND_WAIT` for the outbox to send `posted` (a message just
/// written into a channel conversation) and answers how it went: 409
/// starting with `refused` when the provider refused it.
pub(super) async fn sent_view(
    state: &AppState,
    posted: &Message,
    refused: &str,
) -> Result<Json<SentView>, ApiError> {
    let id = posted.id;
    if posted.delivery.is_none() {
        tracing::error!(
            conversation = posted.conversation_id,
            "a channel send was written without its channel"
        );
        return Err(ApiError::internal());
    }
    match state.channels.wait_sent(state, id, SEND_WAIT).await {
        Some(SendOutcome::Sent(m)) => Ok(Json(SentView {
            status: m.delivery.unwrap_or(Delivery::Sent).as_str().to_owned(),
            message_id: m
                .channel
                .provider_message_id
                .unwrap_or_else(|| id.to_string()),
            timestamp: super::common::iso(m.created_at),
        })),
        Some(SendOutcome::Failed(why)) => Err(ApiError::conflict(format!("{refused}: {why}"))),
        None => Ok(Json(SentView {
            status: "pending".into(),
            message_id: id.to_string(),
            timestamp: super::common::iso(posted.created_at),
        })),
    }
}

/// Sends a WhatsApp message to `to` (a `wa_id`: the number with country
/// code, digits only), joining or opening the conversation with that
/// customer on the business number `from` (default: the first number of
/// the organization's first WhatsApp entry).
///
/// `type`: `text` (`text`, at most 4,096 characters), `template`
/// (`template`: `{name, language, components?}` in WhatsApp's own format;
/// the only kind allowed outside the 24-hour customer-service window),
/// `image` or `document` (`media`: `{data: base64, filename, mimeType}`,
/// at most 5 MB, with `text` as the caption). `messageId` is an
/// idempotency key: a retry answers the first send.
///
/// Sent by an agent, the message takes the conversation over from the
/// assistant; sent with an API key, it is the organization's system
/// message and the assistant keeps the conversation.
#[utoipa::path(
    post,
    path = "/api/channels/whatsapp/messages",
    tag = "003 channels",
    request_body(content = Value, description = "`{\"to\", \"type\": \"text\"|\"template\"|\"image\"|\"document\", \"text\"?, \"template\"?: {\"name\", \"language\", \"components\"?}, \"media\"?: {\"data\", \"filename\", \"mimeType\"}, \"from\"?, \"messageId\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Sent (or, after 10 s without WhatsApp's answer, pending)", body = SentView),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Customers cannot send channel messages", body = PlatformErrorBody),
        (status = 409, description = "Outside the 24-hour customer-service window (send a template), or the message failed", body = PlatformErrorBody),
        (status = 503, description = "No WhatsApp entry serves the organization", body = PlatformErrorBody),
    )
)]
async fn send_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<SentView>, ApiError> {
    super::platform::staff_only(&p)?;
    let mut f = Fields::new(&body);
    let to = f.required_str("to");
    let kind = f.required_str("type");
    let text = f.optional_str("text");
    let from = f.optional_str("from");
    let message_id = f.optional_str("messageId");
    let to = to.and_then(|t| {
        let digits = t.trim().trim_start_matches('+').to_owned();
        if (5..=20).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
            Some(digits)
        } else {
            f.push(FieldError::new(
                "to",
                "a WhatsApp number with country code, 5 to 20 digits",
                "value_error",
            ));
            None
        }
    });
    let kind = kind.and_then(|k| {
        if ["text", "template", "image", "document"].contains(&k.as_str()) {
            Some(k)
        } else {
            f.push(FieldError::new(
                "type",
                "must be text, template, image or document",
                "type_error.enum",
            ));
            None
        }
    });
    if text.as_ref().is_some_and(|t| t.chars().count() > TEXT_MAX) {
        f.push(FieldError::new(
            "text",
            format!("at most {TEXT_MAX} characters"),
            "value_error.any_str.max_length",
        ));
    }
    let mut data = serde_json::Map::new();
    let mut upload = None;
    let mut content = text.clone().unwrap_or_default();
    match kind.as_deref() {
        Some("text") if text.as_ref().is_none_or(|t| t.trim().is_empty()) => {
            f.push(FieldError::missing("text"));
        }
        Some("template") => match template_of(body.get("template")) {
            Ok((template, rendering)) => {
                data.insert("template".into(), template);
                if content.trim().is_empty() {
                    content = rendering;
                }
            }
            Err(e) => f.push(e),
        },
        Some(kind @ ("image" | "document")) => match media_of(body.get("media"), kind) {
            Ok(u) => upload = Some(u),
            Err(e) => f.push(e),
        },
        _ => {}
    }
    let key = match convos::idempotency_key(message_id.as_deref()) {
        Ok(k) => k,
        Err(_) => {
            f.push(FieldError::new(
                "messageId",
                "1 to 200 visible characters",
                "value_error",
            ));
            None
        }
    };
    f.finish()?;
    let to = to.unwrap_or_default();

    // The entry and number to send from.
    let routes: Vec<&crate::channels::Route> = state
        .channels
        .whatsapp
        .iter()
        .filter(|r| r.org_id == p.org_id)
        .collect();
    if routes.is_empty() {
        return Err(no_entry());
    }
    let (route, account) = match from.as_deref().map(str::trim) {
        Some(number) => routes
            .iter()
            .find(|r| r.numbers.iter().any(|n| n == number))
            .map(|r| (*r, number.to_owned()))
            .ok_or_else(|| {
                ApiError::invalid_fields(vec![FieldError::new(
                    "from",
                    "not a business number of this organization's WhatsApp entries",
                    "value_error",
                )])
            })?,
        None => routes
            .iter()
            .find_map(|r| r.numbers.first().map(|n| (*r, n.clone())))
            .ok_or_else(no_entry)?,
    };
    let c = crate::channels::conversation_with(&state, route, &account, &to).await?;
    let files = match upload {
        Some(u) => vec![convos::store_file(state.core(), u).await?],
        None => Vec::new(),
    };
    let author = match p.kind {
        PrincipalKind::User(user_id) => Author::Staff {
            user_id: Some(user_id),
        },
        PrincipalKind::ApiKey(_) => Author::System,
    };
    let post = Post {
        author,
        content,
        internal: false,
        idempotency_key: key,
        files,
        channel: ChannelMeta {
            data: (!data.is_empty()).then(|| Value::Object(data).to_string()),
            ..Default::default()
        },
        delivery: None,
        customer_ref: None,
        asked_for_person: false,
    };
    let posted = convos::post(state.core(), &c, post, Answer::Skip).await?;
    sent_view(&state, &posted.message, "WhatsApp did not take the message").await
}

/// Checks 003's `template`: `{name, language, components?}`; answers it
/// as stored and a one-line rendering for the conversation's history.
fn template_of(v: Option<&Value>) -> Result<(Value, String), FieldError> {
    let bad = |m: &str| FieldError::new("template", m, "value_error");
    let Some(Value::Object(t)) = v else {
        return Err(bad("an object {name, language, components?} expected"));
    };
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 512
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .ok_or_else(|| bad("name: a template name (letters, digits and _)"))?;
    let language = match t.get("language") {
        Some(Value::String(code)) => code.trim().to_owned(),
        Some(Value::Object(l)) => l
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned(),
        _ => String::new(),
    };
    if language.is_empty() || language.len() > 16 {
        return Err(bad("language: a language code such as en_US"));
    }
    let components = match t.get("components") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.iter().all(Value::is_object) => Some(Value::Array(a.clone())),
        Some(_) => return Err(bad("components: an array of objects")),
    };
    if components
        .as_ref()
        .is_some_and(|c| c.to_string().len() > 32 * 1024)
    {
        return Err(bad("components: at most 32 KiB of JSON"));
    }
    let mut stored = serde_json::json!({ "name": name, "language": language });
    if let Some(c) = components {
        stored["components"] = c;
    }
    Ok((stored, format!("[template {name} ({language})]")))
}

/// Checks 003's `media`: `{data: base64, filename, mimeType}`.
fn media_of(v: Option<&Value>, kind: &str) -> Result<Upload, FieldError> {
    let bad = |m: &str| FieldError::new("media", m, "value_error");
    let Some(Value::Object(m)) = v else {
        return Err(bad("an object {data, filename, mimeType} expected"));
    };
    let data = m
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("data: the file, base64-encoded"))?;
    if data.len() > MEDIA_MAX / 3 * 4 + 4 {
        return Err(bad("data: at most 5 MB"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| bad("data: not valid base64"))?;
    let mime = m.get("mimeType").and_then(Value::as_str).map(str::to_owned);
    if kind == "image"
        && !mime
            .as_deref()
            .is_some_and(|t| t == "image/jpeg" || t == "image/png")
    {
        return Err(bad("mimeType: an image must be image/jpeg or image/png"));
    }
    let name = m
        .get("filename")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{kind}.bin"));
    Ok(Upload {
        file_name: gateway_wire::text::clean_name(&name),
        declared_type: mime,
        bytes,
    })
}
