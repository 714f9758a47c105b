//! 004 `/v1`: tickets, their messages (with internal notes), categories,
//! and `/ws/tickets/{ticketId}`.
//!
//! Errors are `{"detail": "..."}`. Ids are decimal strings; a malformed or
//! foreign id answers 404. Internal notes (`is_internal`) exist for staff
//! only: customers never see them, in lists or in events.
//!
//! This file holds the views, the `/ws/tickets` rendering of domain events
//! and the router; the handlers live by resource in `records`, `messages`,
//! `categories`, `socket` and `webhook`.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod categories;
mod messages;
mod records;
mod socket;
mod webhook;

use categories::*;
use messages::*;
use records::*;
use socket::*;
use webhook::*;

use crate::api::common::{id_of, iso, priority_field};
use crate::api::error::ApiError;
use crate::api::extract::Fields;
use crate::domain::conversation::Message;
use crate::domain::ticket::{Category, TITLE_MAX, Ticket, TicketStatus};
use crate::domain::{FieldError, Principal};
use crate::events::Event;
use crate::server::AppState;
use crate::store::TicketChanges;

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

/// A ticket title: 1 to `TITLE_MAX` characters, else a field error.
fn check_title(f: &mut Fields<'_>, title: Option<&str>) {
    if title.is_some_and(|t| t.is_empty() || t.chars().count() > TITLE_MAX) {
        f.push(FieldError::new(
            "title",
            format!("must be 1 to {TITLE_MAX} characters"),
            "value_error",
        ));
    }
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
    check_title(f, changes.title.as_deref());
    changes
}
