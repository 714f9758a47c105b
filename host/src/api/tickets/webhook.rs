//! 004's signed incoming webhook.

use axum::Json;
use axum::extract::State;
use gateway_wire::webhook::{BODY_MAX, DELIVERY_ID_MAX, Envelope, envelope, signature_valid};
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
#[derive(Serialize, serde::Deserialize, ToSchema)]
pub struct WebhookOutcome {
    /// Always `accepted`.
    status: String,
    /// The event handled.
    event: String,
    ticket_id: String,
    /// The message created (`message.created`).
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
}

/// 004's signed incoming webhook: another system creates or updates
/// tickets and adds messages. The body (at most 256 KiB) is
/// `{"event", "organization"?, "id"?, "data"}`, signed in `X-Signature`
/// (hex HMAC-SHA256, `sha256=` prefix optional) with the organization's own
/// key (`webhooks.incoming_secrets.<slug>`) or the operator's
/// (`webhooks.incoming_secret`, good for every organization).
///
/// With `X-Webhook-Timestamp: <Unix seconds>` the signature covers
/// `"<timestamp>." + body` and the delivery is refused outside
/// `webhooks.tolerance_secs` of now. A delivery `id` (up to 200
/// characters) is handled once per organization: a repeat answers the
/// first outcome.
///
/// - `ticket.created`: `data` {`title`, `description`?, `priority`?,
///   `category_id`?, `customer_email`?}: for the organization's customer
///   with that email, else for the contact with that email (created on
///   first use); without an email, a ticket with no customer. A staff
///   account's email is refused.
/// - `ticket.updated`: `data` {`ticket_id`, and any of `title`,
///   `description`, `status`, `priority`}.
/// - `message.created`: `data` {`ticket_id`, `content`, `is_internal`?,
///   `id`? (the sender's id for it: a redelivery creates nothing new)}.
#[utoipa::path(
    post,
    path = "/v1/webhooks/incoming",
    tag = "tickets",
    request_body(content = serde_json::Value, description = "`{\"event\": \"ticket.created\" | \"ticket.updated\" | \"message.created\", \"organization\"?: \"slug\", \"id\"?: \"delivery id\", \"data\": {...}}`"),
    params(
        ("X-Signature" = String, Header, description = "Hex HMAC-SHA256 of the raw body (of `<timestamp>.<body>` with a timestamp)"),
        ("X-Webhook-Timestamp" = Option<String>, Header, description = "Unix seconds; signed, and checked against `webhooks.tolerance_secs`"),
    ),
    responses(
        (status = 200, description = "Handled (or handled before: the first outcome)", body = WebhookOutcome),
        (status = 400, description = "Not JSON, an unknown event, or invalid data", body = crate::api::openapi::DetailError),
        (status = 401, description = "Missing or wrong signature, or a timestamp outside the window", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such organization, customer or ticket", body = crate::api::openapi::DetailError),
        (status = 409, description = "The same delivery id is being handled right now", body = crate::api::openapi::DetailError),
        (status = 413, description = "The body is larger than 256 KiB", body = crate::api::openapi::DetailError),
        (status = 503, description = "Incoming webhooks are not configured", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn incoming_webhook(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Json<WebhookOutcome>, ApiError> {
    let config = &state.config.webhooks;
    if !config.enabled() {
        return Err(ApiError::service_unavailable(
            "Incoming webhooks are not configured (webhooks.incoming_secret)",
        ));
    }
    let too_large = || {
        ApiError::new(
            crate::api::error::ErrorCode::PayloadTooLarge,
            format!("The body must be at most {} KiB", BODY_MAX / 1024),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // Refused on its headers; the unread body is drained briefly by the
    // upload budget's middleware, so the sender still gets this answer.
    if declared.is_some_and(|n| n > BODY_MAX) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, BODY_MAX)
        .await
        .map_err(|_| too_large())?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature =
        header("x-signature").ok_or_else(|| ApiError::unauthorized("Missing X-Signature"))?;
    let timestamp = gateway_wire::webhook::signed_timestamp(
        header("x-webhook-timestamp"),
        chrono::Utc::now().timestamp(),
        config.tolerance.as_secs(),
    )
    .map_err(ApiError::unauthorized)?;
    let Envelope {
        event,
        organization: slug,
        id: delivery,
        data,
    } = envelope(&body).map_err(ApiError::validation)?;
    let prefix = timestamp.map(|t| format!("{t}.")).unwrap_or_default();
    let signed = config
        .secrets_for(&slug)
        .into_iter()
        .any(|secret| signature_valid(secret, &[prefix.as_bytes(), &body], signature));
    if !signed {
        return Err(ApiError::unauthorized("Invalid signature"));
    }
    let org = state
        .db
        .org_by_slug(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found("Resource not found"))?;
    let Some(delivery) = delivery else {
        return handle(&state, org.id, event, &data).await.map(Json);
    };
    // Claimed, handled and recorded in a task of its own: a client that
    // goes away or the request deadline cannot stop it between the claim
    // and the record (a claim left behind by a crash is taken over once
    // its lease has passed).
    let lease = state.config.server.request_timeout * 2;
    let org_id = org.id;
    let worker = state.clone();
    let outcome = tokio::spawn(async move {
        let state = worker;
        match state
            .db
            .claim_webhook_delivery(org_id, &delivery, lease)
            .await?
        {
            crate::store::DeliveryClaim::Done(outcome) => {
                serde_json::from_str(&outcome).map_err(|e| {
                    tracing::error!(error = %e, "a stored webhook outcome does not parse");
                    ApiError::internal()
                })
            }
            crate::store::DeliveryClaim::InProgress => Err(ApiError::conflict(
                "A delivery with this id is being handled; retry shortly",
            )),
            crate::store::DeliveryClaim::New => {
                let handled = handle(&state, org_id, event, &data).await;
                let recorded = match &handled {
                    Ok(outcome) => {
                        let text = serde_json::to_string(outcome).unwrap_or_default();
                        state
                            .db
                            .finish_webhook_delivery(org_id, &delivery, &text)
                            .await
                    }
                    Err(_) => state.db.release_webhook_delivery(org_id, &delivery).await,
                };
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "could not record a webhook delivery's outcome");
                    let _ = state.db.release_webhook_delivery(org_id, &delivery).await;
                }
                handled
            }
        }
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "handling a webhook delivery failed");
        ApiError::internal()
    })??;
    Ok(Json(outcome))
}

/// Does what a verified delivery asks.
async fn handle(
    state: &AppState,
    org_id: i64,
    event: String,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<WebhookOutcome, ApiError> {
    let mut f = Fields::new(data);
    // Acts as the organization's own service, with staff rights.
    let service = Principal {
        org_id,
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
                && !own_category(state, &service, c).await?
            {
                return Err(ApiError::validation("category_id: no such category"));
            }
            let (customer_id, contact_id) =
                tickets::requester(state.core(), org_id, email.as_deref()).await?;
            let t = tickets::open(
                state.core(),
                NewTicket {
                    org_id,
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
            Ok(WebhookOutcome {
                status: "accepted".into(),
                event,
                ticket_id: t.id.to_string(),
                message_id: None,
            })
        }
        "ticket.updated" => {
            let id = f.optional_id("ticket_id").flatten();
            let changes = ticket_changes(&mut f);
            if id.is_none() {
                f.push(FieldError::missing("ticket_id"));
            }
            f.finish()?;
            let t = org_ticket(state, org_id, id).await?;
            let t = tickets::update(state.core(), &t, &changes).await?;
            Ok(WebhookOutcome {
                status: "accepted".into(),
                event,
                ticket_id: t.id.to_string(),
                message_id: None,
            })
        }
        "message.created" => {
            let id = f.optional_id("ticket_id").flatten();
            let content = f.required_str("content");
            let delivery = f.optional_str("id");
            if delivery
                .as_ref()
                .is_some_and(|d| d.chars().count() > DELIVERY_ID_MAX)
            {
                f.push(FieldError::new(
                    "id",
                    format!("must be at most {DELIVERY_ID_MAX} characters"),
                    "value_error.any_str.max_length",
                ));
            }
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
            let t = org_ticket(state, org_id, id).await?;
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
            Ok(WebhookOutcome {
                status: "accepted".into(),
                event,
                ticket_id: t.id.to_string(),
                message_id: Some(m.id.to_string()),
            })
        }
        _ => Err(ApiError::validation(
            "event must be ticket.created, ticket.updated or message.created",
        )),
    }
}
