//! 004 `/v1`: tickets, their messages (with internal notes), categories,
//! and `/ws/tickets/{ticketId}`.
//!
//! Errors are `{"detail": "..."}`. Ids are decimal strings; a malformed or
//! foreign id answers 404. Internal notes (`is_internal`) exist for staff
//! only: customers never see them, in lists or in events.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::common::{
    Paging, SocketQuery, id_of, iso, priority_field, relay, socket_principal,
};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::domain::conversation::{Message, Priority, validate_content};
use crate::domain::ticket::{
    Category, DESCRIPTION_MAX, NewTicket, TITLE_MAX, Ticket, TicketStatus,
};
use crate::domain::{FieldError, Principal, PrincipalKind, Role};
use crate::events::Event;
use crate::realtime::{Audience, Topic};
use crate::server::AppState;
use crate::service::conversations::{self, Answer, Author, Post};
use crate::service::{Actor, policy, tickets};
use crate::store::{StoreError, TicketChanges, TicketFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tickets, create_ticket))
        .routes(routes!(get_ticket, update_ticket))
        .routes(routes!(list_ticket_messages, send_ticket_message))
        .routes(routes!(list_categories, create_category))
        .routes(routes!(ticket_socket))
        .routes(routes!(incoming_webhook))
}

/// A ticket as 004 shows it.
#[derive(Serialize, ToSchema)]
pub struct TicketView {
    id: String,
    title: String,
    description: String,
    /// `open`, `in_progress`, `resolved` or `closed`.
    status: &'static str,
    /// `low`, `medium` or `high`.
    priority: &'static str,
    category_id: Option<String>,
    /// `null` for a ticket another system opened without a customer.
    customer_id: Option<String>,
    /// The chat session (conversation) the ticket belongs to.
    session_id: String,
    created_at: String,
    updated_at: String,
}

impl TicketView {
    pub fn of(t: &Ticket) -> TicketView {
        TicketView {
            id: t.id.to_string(),
            title: t.title.clone(),
            description: t.description.clone(),
            status: t.status.as_str(),
            priority: t.priority.as_str(),
            category_id: t.category_id.map(|c| c.to_string()),
            customer_id: t.customer_id.map(|c| c.to_string()),
            session_id: t.conversation_id.to_string(),
            created_at: iso(t.created_at),
            updated_at: iso(t.updated_at),
        }
    }
}

/// A ticket message as 004 shows it.
#[derive(Serialize, ToSchema)]
pub struct TicketMessage {
    id: String,
    ticket_id: String,
    content: String,
    /// An internal note: staff only.
    is_internal: bool,
    /// `customer`, `agent`, `assistant` or `system`.
    sender: &'static str,
    sender_id: Option<String>,
    created_at: String,
}

impl TicketMessage {
    fn of(ticket_id: i64, m: &Message) -> TicketMessage {
        TicketMessage {
            id: m.id.to_string(),
            ticket_id: ticket_id.to_string(),
            content: m.content.clone(),
            is_internal: m.is_internal,
            sender: m.sender_kind.as_str(),
            sender_id: m.sender_id.map(|s| s.to_string()),
            created_at: iso(m.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CategoryView {
    id: String,
    name: String,
    description: String,
}

impl CategoryView {
    fn of(c: &Category) -> CategoryView {
        CategoryView {
            id: c.id.to_string(),
            name: c.name.clone(),
            description: c.description.clone(),
        }
    }
}

/// A domain event as `/ws/tickets/{ticket_id}` shows it, named under both
/// `event` and `type`: `ticket.created`, `ticket.updated`,
/// `message.received` (internal notes only when `staff`).
fn render(event: &Event, ticket_id: i64, staff: bool) -> Option<String> {
    let framed = |name: &str, data: serde_json::Value| {
        serde_json::json!({"event": name, "type": name, "data": data}).to_string()
    };
    match event {
        Event::TicketCreated(t) if t.id == ticket_id => Some(framed(
            "ticket.created",
            serde_json::to_value(TicketView::of(t)).ok()?,
        )),
        Event::TicketUpdated(t) if t.id == ticket_id => Some(framed(
            "ticket.updated",
            serde_json::to_value(TicketView::of(t)).ok()?,
        )),
        Event::MessageCreated { message, .. } if staff || !message.is_internal => Some(framed(
            "message.received",
            serde_json::to_value(TicketMessage::of(ticket_id, message)).ok()?,
        )),
        _ => None,
    }
}

async fn visible_ticket(state: &AppState, p: &Principal, id: &str) -> Result<Ticket, ApiError> {
    let not_found = || ApiError::not_found("Resource not found");
    let id = id_of(id).ok_or_else(not_found)?;
    match state.db.ticket(id).await? {
        Some(t) if t.visible_to(p) => Ok(t),
        _ => Err(not_found()),
    }
}

/// A category id of the caller's organization, or a field error.
async fn own_category(state: &AppState, p: &Principal, id: i64) -> Result<bool, ApiError> {
    Ok(state
        .db
        .category(id)
        .await?
        .is_some_and(|c| c.org_id == p.org_id))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// `open`, `in_progress`, `resolved` or `closed`.
    status: Option<String>,
    /// A category id.
    category: Option<String>,
    /// `low`, `medium` or `high`.
    priority: Option<String>,
    /// From 1 (default 1).
    page: Option<String>,
    /// 1 to 100 (default 20).
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TicketPage {
    items: Vec<TicketView>,
    total: i64,
    page: i64,
    pages: i64,
}

/// Lists tickets: a customer's own, or (staff) the organization's.
#[utoipa::path(
    get,
    path = "/v1/tickets",
    tag = "tickets",
    params(TicketQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page, newest first", body = TicketPage),
        (status = 400, description = "Invalid parameters", body = crate::api::openapi::DetailError),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
    )
)]
async fn list_tickets(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<TicketQuery>,
) -> Result<Json<TicketPage>, ApiError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: &str| {
        errors.push(FieldError::new(field, message, "value_error"));
    };
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => TicketStatus::parse(s).or_else(|| {
            bad("status", "must be open, in_progress, resolved or closed");
            None
        }),
    };
    let priority = match q.priority.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Priority::parse(s).or_else(|| {
            bad("priority", "must be low, medium or high");
            None
        }),
    };
    // A category that does not exist, whatever its form, has no tickets.
    let category_id = match q.category.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(id_of(s).unwrap_or(0)),
    };
    let paging = Paging {
        page: q.page,
        limit: q.limit,
    }
    .parse(20);
    let (page, limit) = match paging {
        Ok(p) if errors.is_empty() => p,
        Ok(_) => return Err(ApiError::invalid_fields(errors)),
        Err(e) => {
            errors.extend(e.fields.iter().cloned());
            return Err(ApiError::invalid_fields(errors));
        }
    };
    let filter = TicketFilter {
        org_id: p.org_id,
        customer_id: if policy::may_see_internal(&p) {
            None
        } else {
            p.user_id().or(Some(0))
        },
        status,
        category_id,
        priority,
    };
    let (rows, total) = state
        .db
        .list_tickets(&filter, (page - 1) * limit, limit)
        .await?;
    Ok(Json(TicketPage {
        items: rows.iter().map(TicketView::of).collect(),
        total,
        page,
        pages: (total + limit - 1) / limit,
    }))
}

/// Request body of `POST /v1/tickets`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateTicket {
    title: String,
    description: Option<String>,
    category_id: Option<String>,
    /// `low`, `medium` (default) or `high`.
    priority: Option<String>,
    /// Staff only: the customer the ticket is for (default: the caller).
    customer_id: Option<String>,
}

/// Opens a ticket.
#[utoipa::path(
    post,
    path = "/v1/tickets",
    tag = "tickets",
    request_body = CreateTicket,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new ticket", body = TicketView),
        (status = 400, description = "Invalid body", body = crate::api::openapi::DetailError),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
    )
)]
async fn create_ticket(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<TicketView>, ApiError> {
    let mut f = Fields::new(&body);
    let title = f.required_str("title").map(|t| t.trim().to_owned());
    let description = f.optional_str("description").unwrap_or_default();
    let category = f.optional_id("category_id").flatten();
    let priority = priority_field(&mut f, "priority");
    let for_customer = f.optional_id("customer_id").flatten();
    if title
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > TITLE_MAX)
    {
        f.push(FieldError::new(
            "title",
            format!("must be 1 to {TITLE_MAX} characters"),
            "value_error",
        ));
    }
    if description.chars().count() > DESCRIPTION_MAX {
        f.push(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
            "value_error",
        ));
    }
    let priority = priority.unwrap_or(Priority::Medium);
    f.finish()?;
    if let Some(id) = category
        && !own_category(&state, &p, id).await?
    {
        return Err(ApiError::validation("category_id: no such category"));
    }
    let customer_id = match (for_customer, p.user_id()) {
        (Some(id), _) if policy::may_act_for_others(&p) => match state.db.user_by_id(id).await? {
            Some(u) if u.org_id == p.org_id => u.id,
            _ => return Err(ApiError::validation("customer_id: no such customer")),
        },
        (Some(_), _) => return Err(ApiError::forbidden("Insufficient permissions")),
        (None, Some(id)) => id,
        (None, None) => {
            return Err(ApiError::validation(
                "customer_id is required for an API key",
            ));
        }
    };
    let t = tickets::open(
        state.core(),
        NewTicket {
            org_id: p.org_id,
            conversation_id: None,
            customer_id: Some(customer_id),
            contact_id: None,
            title: title.unwrap_or_default(),
            description,
            priority,
            category_id: category,
        },
    )
    .await?;
    Ok(Json(TicketView::of(&t)))
}

/// One ticket.
#[utoipa::path(
    get,
    path = "/v1/tickets/{ticket_id}",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The ticket", body = TicketView),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
async fn get_ticket(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<TicketView>, ApiError> {
    Ok(Json(TicketView::of(
        &visible_ticket(&state, &p, &id).await?,
    )))
}

/// Changes a ticket's status or details (staff); `ticket.updated` follows.
#[utoipa::path(
    patch,
    path = "/v1/tickets/{ticket_id}",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    request_body(content = serde_json::Value, description = "Any of `title`, `description`, `status`, `priority`, `category_id` (null clears it)"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The ticket", body = TicketView),
        (status = 400, description = "Invalid body", body = crate::api::openapi::DetailError),
        (status = 403, description = "Customers cannot change tickets", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
async fn update_ticket(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<TicketView>, ApiError> {
    let t = visible_ticket(&state, &p, &id).await?;
    if !policy::may_manage_tickets(&p) {
        return Err(ApiError::forbidden("Insufficient permissions"));
    }
    let mut f = Fields::new(&body);
    let mut changes = ticket_changes(&mut f);
    if body.contains_key("category_id") {
        changes.category_id = f.optional_id("category_id");
    }
    if changes
        .title
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > TITLE_MAX)
    {
        f.push(FieldError::new(
            "title",
            format!("must be 1 to {TITLE_MAX} characters"),
            "value_error",
        ));
    }
    f.finish()?;
    if let Some(Some(c)) = changes.category_id
        && !own_category(&state, &p, c).await?
    {
        return Err(ApiError::validation("category_id: no such category"));
    }
    let t = tickets::update(state.core(), &t, &changes).await?;
    Ok(Json(TicketView::of(&t)))
}

/// A ticket's messages, oldest first (internal notes for staff only).
#[utoipa::path(
    get,
    path = "/v1/tickets/{ticket_id}/messages",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Messages", body = Vec<TicketMessage>),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
async fn list_ticket_messages(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<TicketMessage>>, ApiError> {
    let t = visible_ticket(&state, &p, &id).await?;
    let (messages, _) = state
        .db
        .list_messages(t.conversation_id, policy::may_see_internal(&p), None, 1000)
        .await?;
    Ok(Json(
        messages
            .iter()
            .map(|m| TicketMessage::of(t.id, m))
            .collect(),
    ))
}

/// Adds a message to a ticket; staff may add internal notes.
#[utoipa::path(
    post,
    path = "/v1/tickets/{ticket_id}/messages",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    request_body(content = serde_json::Value, description = "`{\"content\": \"...\", \"is_internal\": false}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The message", body = TicketMessage),
        (status = 400, description = "Invalid body", body = crate::api::openapi::DetailError),
        (status = 403, description = "Customers cannot write internal notes", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
async fn send_ticket_message(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> Result<Json<TicketMessage>, ApiError> {
    let t = visible_ticket(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let content = f.required_str("content");
    let is_internal = match body.get("is_internal") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            f.push(FieldError::new(
                "is_internal",
                "must be true or false",
                "type_error.bool",
            ));
            false
        }
    };
    if let Some(text) = &content
        && let Err(e) = validate_content("content", text)
    {
        f.push(e);
    }
    f.finish()?;
    if is_internal && !policy::may_write_internal(&p) {
        return Err(ApiError::forbidden("Insufficient permissions"));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => conversations::idempotency_key(Some(v.to_str().unwrap_or("\u{0}")))?,
    };
    let c = state
        .db
        .conversation(t.conversation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Resource not found"))?;
    let posted = conversations::post(
        state.core(),
        &c,
        Post {
            internal: is_internal,
            idempotency_key: key,
            ..Post::text(Author::of(Actor::of(&p)), content.unwrap_or_default())
        },
        Answer::BestEffort,
    )
    .await?;
    Ok(Json(TicketMessage::of(t.id, &posted.message)))
}

/// The organization's ticket categories.
#[utoipa::path(
    get,
    path = "/v1/categories",
    tag = "tickets",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Categories, by name", body = Vec<CategoryView>),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
    )
)]
async fn list_categories(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<Vec<CategoryView>>, ApiError> {
    let list = state.db.categories(p.org_id).await?;
    Ok(Json(list.iter().map(CategoryView::of).collect()))
}

/// Adds a category (admins and agents).
#[utoipa::path(
    post,
    path = "/v1/categories",
    tag = "tickets",
    request_body(content = serde_json::Value, description = "`{\"name\": \"Billing\", \"description\": \"...\"}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The category", body = CategoryView),
        (status = 400, description = "Invalid body, or the name exists", body = crate::api::openapi::DetailError),
        (status = 403, description = "Customers cannot add categories", body = crate::api::openapi::DetailError),
    )
)]
async fn create_category(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<CategoryView>, ApiError> {
    if !policy::may_manage_tickets(&p) {
        return Err(ApiError::forbidden("Insufficient permissions"));
    }
    let mut f = Fields::new(&body);
    let name = f.required_str("name").map(|n| n.trim().to_owned());
    let description = f.optional_str("description").unwrap_or_default();
    if name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 100)
    {
        f.push(FieldError::new(
            "name",
            "must be 1 to 100 characters",
            "value_error",
        ));
    }
    f.finish()?;
    match state
        .db
        .create_category(p.org_id, &name.unwrap_or_default(), description.trim())
        .await
    {
        Ok(c) => Ok(Json(CategoryView::of(&c))),
        Err(StoreError::Conflict(_)) => {
            Err(ApiError::validation("A category with this name exists"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Real-time events of one ticket: `ticket.updated`, `message.received`
/// (internal notes to staff only), each `{"event", "type", "data"}`.
#[utoipa::path(
    get,
    path = "/ws/tickets/{ticket_id}",
    tag = "tickets",
    params(("ticket_id" = String, Path), SocketQuery),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
async fn ticket_socket(
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
    let t = visible_ticket(&state, &p, &id).await?;
    let upgrade = upgrade.map_err(|_| ApiError::validation("Expected a WebSocket handshake"))?;
    let staff = policy::may_see_internal(&p);
    let audience = if staff {
        Audience::TicketStaff
    } else {
        Audience::TicketCustomer
    };
    // A ticket's events are its conversation's (one ticket per
    // conversation, so one rendering per audience serves every subscriber).
    let events = state.bus.subscribe(Topic::Conversation(t.conversation_id));
    let ticket_id = t.id;
    Ok(upgrade.on_upgrade(move |socket| {
        relay(socket, events, audience, move |e| {
            render(e, ticket_id, staff)
        })
    }))
}

/// The title, description, status and priority a body changes.
fn ticket_changes(f: &mut Fields<'_>) -> TicketChanges {
    let mut changes = TicketChanges {
        title: f.optional_str("title").map(|t| t.trim().to_owned()),
        description: f.optional_str("description"),
        ..Default::default()
    };
    if let Some(s) = f.optional_str("status") {
        changes.status = TicketStatus::parse(&s);
        if changes.status.is_none() {
            f.push(FieldError::new(
                "status",
                "must be open, in_progress, resolved or closed",
                "value_error",
            ));
        }
    }
    changes.priority = priority_field(f, "priority");
    if changes
        .title
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > TITLE_MAX)
    {
        f.push(FieldError::new(
            "title",
            format!("must be 1 to {TITLE_MAX} characters"),
            "value_error",
        ));
    }
    changes
}

/// Ticket `id` of organization `org_id`, or 404.
async fn org_ticket(state: &AppState, org_id: i64, id: Option<i64>) -> Result<Ticket, ApiError> {
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
fn signature_valid(secret: &str, body: &[u8], signature: &str) -> bool {
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
async fn incoming_webhook(
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
            if title
                .as_ref()
                .is_some_and(|t| t.is_empty() || t.chars().count() > TITLE_MAX)
            {
                f.push(FieldError::new(
                    "title",
                    format!("must be 1 to {TITLE_MAX} characters"),
                    "value_error",
                ));
            }
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
