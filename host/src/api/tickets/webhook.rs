//! 004's signed incoming webhook.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::common::priority_field;
use crate::api::error::ApiError;
use crate::api::extract::Fields;
use crate::domain::conversation::{Priority, validate_content};
use crate::domain::ticket::{NewTicket, Ticket};
use crate::domain::{FieldError, Principal, PrincipalKind, Role};
use crate::server::AppState;
use crate::service::conversations::{self, Answer, Author, Post};
use crate::service::tickets;

use super::*;

/// Ticket `id` of organization `org_id`, or 404.
pub(super) async fn org_ticket(
    state: &AppState,
    org_id: i64,
    id: Option<i64>,
) -> Result<Ticket, ApiError> {
    let t = match id {
        Some(id) => state.db.ticket(id).await?,
        None => None,
    };
    t.filter(|t| t.org_id == org_id)
        .ok_or_else(|| ApiError::not_found("Resource not found"))
}

/// What an incoming webhook did.
#[derive(Serialize, ToSchema)]
pub struct WebhookOutcome {
    /// Always `accepted`.
    status: &'static str,
    /// The event handled.
    event: String,
    ticket_id: String,
    /// The message created (`message.created`).
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
}

/// Whether `signature` (hex, optionally `sha256=`) is the HMAC-SHA256 of
/// `body` under `secret`, compared in constant time.
pub(super) fn signature_valid(secret: &str, body: &[u8], signature: &str) -> bool {
    use hmac::Mac as _;
    let signature = signature.trim();
    let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Ok(expected) = hex::decode(signature) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// 004's signed incoming webhook: another system creates or updates
/// tickets and adds messages. The body is `{"event", "organization"?,
/// "data"}` signed with `webhooks.incoming_secret` in `X-Signature` (hex
/// HMAC-SHA256 of the raw body, `sha256=` prefix optional).
///
/// - `ticket.created`: `data` {`title`, `description`?, `priority`?,
///   `category_id`?, `customer_email`?}: for the organization's customer
///   with that email, else for the contact with that email (created on
///   first use); without an email, a ticket with no customer.
/// - `ticket.updated`: `data` {`ticket_id`, and any of `title`,
///   `description`, `status`, `priority`}.
/// - `message.created`: `data` {`ticket_id`, `content`, `is_internal`?,
///   `id`? (the sender's id for it: a redelivery creates nothing new)}.
///
/// `organization` is the slug (default `default`): the secret is the
/// operator's, for integrations the gateway's operator runs.
#[utoipa::path(
    post,
    path = "/v1/webhooks/incoming",
    tag = "tickets",
    request_body(content = serde_json::Value, description = "`{\"event\": \"ticket.created\" | \"ticket.updated\" | \"message.created\", \"organization\"?: \"slug\", \"data\": {...}}`"),
    params(("X-Signature" = String, Header, description = "Hex HMAC-SHA256 of the raw body")),
    responses(
        (status = 200, description = "Handled", body = WebhookOutcome),
        (status = 400, description = "Not JSON, an unknown event, or invalid data", body = crate::api::openapi::DetailError),
        (status = 401, description = "Missing or wrong signature", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such organization, customer or ticket", body = crate::api::openapi::DetailError),
        (status = 503, description = "Incoming webhooks are not configured", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn incoming_webhook(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<WebhookOutcome>, ApiError> {
    let Some(secret) = state.config.webhooks.incoming_secret.as_deref() else {
        return Err(ApiError::service_unavailable(
            "Incoming webhooks are not configured (webhooks.incoming_secret)",
        ));
    };
    let signature = headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("Missing X-Signature"))?;
    if !signature_valid(secret, &body, signature) {
        return Err(ApiError::unauthorized("Invalid signature"));
    }
    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::validation(format!("The body is not JSON: {e}")))?;
    let event = payload["event"].as_str().unwrap_or_default().to_owned();
    let slug = payload["organization"]
        .as_str()
        .unwrap_or(crate::domain::identity::DEFAULT_ORG_SLUG);
    let org = state
        .db
        .org_by_slug(slug)
        .await?
        .ok_or_else(|| ApiError::not_found("Resource not found"))?;
    let data = payload["data"]
        .as_object()
        .cloned()
        .ok_or_else(|| ApiError::validation("data must be an object"))?;
    let mut f = Fields::new(&data);
    // Acts as the organization's own service, with staff rights.
    let service = Principal {
        org_id: org.id,
        role: Role::Service,
        kind: PrincipalKind::ApiKey(0),
    };
    match event.as_str() {
        "ticket.created" => {
            let title = f.required_str("title").map(|t| t.trim().to_owned());
            let description = f.optional_str("description").unwrap_or_default();
            let email = f.optional_str("customer_email");
            let priority = priority_field(&mut f, "priority");
            let category = f.optional_id("category_id").flatten();
            check_title(&mut f, title.as_deref());
            let priority = priority.unwrap_or(Priority::Medium);
            f.finish()?;
            if email
                .as_deref()
                .is_some_and(|e| !e.trim().is_empty() && !e.contains('@'))
            {
                return Err(ApiError::validation(
                    "customer_email must be an email address",
                ));
            }
            if let Some(c) = category
                && !own_category(&state, &service, c).await?
            {
                return Err(ApiError::validation("category_id: no such category"));
            }
            let (customer_id, contact_id) =
                tickets::requester(state.core(), org.id, email.as_deref()).await?;
            let t = tickets::open(
                state.core(),
                NewTicket {
                    org_id: org.id,
                    conversation_id: None,
                    customer_id,
                    contact_id,
                    title: title.unwrap_or_default(),
                    description,
                    priority,
                    category_id: category,
                },
            )
            .await?;
            Ok(Json(WebhookOutcome {
                status: "accepted",
                event,
                ticket_id: t.id.to_string(),
                message_id: None,
            }))
        }
        "ticket.updated" => {
            let id = f.optional_id("ticket_id").flatten();
            let changes = ticket_changes(&mut f);
            if id.is_none() {
                f.push(FieldError::missing("ticket_id"));
            }
            f.finish()?;
            let t = org_ticket(&state, org.id, id).await?;
            let t = tickets::update(state.core(), &t, &changes).await?;
            Ok(Json(WebhookOutcome {
                status: "accepted",
                event,
                ticket_id: t.id.to_string(),
                message_id: None,
            }))
        }
        "message.created" => {
            let id = f.optional_id("ticket_id").flatten();
            let content = f.required_str("content");
            let delivery = f.optional_str("id");
            let is_internal = data
                .get("is_internal")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            if let Some(text) = &content
                && let Err(e) = validate_content("content", text)
            {
                f.push(e);
            }
            if id.is_none() {
                f.push(FieldError::missing("ticket_id"));
            }
            f.finish()?;
            let t = org_ticket(&state, org.id, id).await?;
            let c = state
                .db
                .conversation(t.conversation_id)
                .await?
                .ok_or_else(|| ApiError::not_found("Resource not found"))?;
            let key = conversations::idempotency_key(
                delivery.map(|d| format!("webhook:{d}")).as_deref(),
            )?;
            let m = conversations::post(
                state.core(),
                &c,
                Post {
                    internal: is_internal,
                    idempotency_key: key,
                    ..Post::text(Author::System, content.unwrap_or_default())
                },
                Answer::BestEffort,
            )
            .await?
            .message;
            Ok(Json(WebhookOutcome {
                status: "accepted",
                event,
                ticket_id: t.id.to_string(),
                message_id: Some(m.id.to_string()),
            }))
        }
        _ => Err(ApiError::validation(
            "event must be ticket.created, ticket.updated or message.created",
        )),
    }
}
