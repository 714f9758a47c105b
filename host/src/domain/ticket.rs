//! Tickets and categories. A ticket always has a conversation (the chat it
//! came from, or one opened with it); its messages are that conversation's.

use chrono::{DateTime, Utc};

use super::conversation::Priority;
use super::{Principal, PrincipalKind, Role};

/// 004's words (`open`, `in_progress`, `resolved`), and `closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::InProgress => "in_progress",
            TicketStatus::Resolved => "resolved",
            TicketStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(TicketStatus::Open),
            "in_progress" => Some(TicketStatus::InProgress),
            "resolved" => Some(TicketStatus::Resolved),
            "closed" => Some(TicketStatus::Closed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub id: i64,
    pub org_id: i64,
    pub conversation_id: i64,
    /// `None` for a ticket another system opened without a customer.
    pub customer_id: Option<i64>,
    pub title: String,
    pub description: String,
    pub status: TicketStatus,
    pub priority: Priority,
    pub category_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Ticket {
    /// Its customer, or staff and API keys of its organization.
    pub fn visible_to(&self, p: &Principal) -> bool {
        if p.org_id != self.org_id {
            return false;
        }
        match (p.role, p.kind) {
            (Role::Customer, PrincipalKind::User(id)) => Some(id) == self.customer_id,
            (Role::Customer, PrincipalKind::ApiKey(_)) => false,
            (Role::Admin | Role::Agent | Role::Service, _) => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub org_id: i64,
    /// The chat it comes from; `None` opens a conversation for it.
    pub conversation_id: Option<i64>,
    pub customer_id: Option<i64>,
    /// The contact of the conversation opened for it.
    pub contact_id: Option<i64>,
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub category_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
    pub description: String,
}

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 10_000;
