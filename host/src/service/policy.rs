//! Who may do what: every permission rule of the conversation core, as
//! predicates over the principal. Handlers and services ask these instead
//! of comparing roles themselves.

use crate::domain::conversation::Conversation;
use crate::domain::ticket::Ticket;
use crate::domain::{Principal, Role};

/// Agents, admins and API keys: the organization's side of a conversation.
pub fn is_staff(p: &Principal) -> bool {
    p.is_staff()
}

/// Whether `p` may see the conversation (its customer, or the
/// organization's staff). Anyone else is told it does not exist.
pub fn may_see_conversation(p: &Principal, c: &Conversation) -> bool {
    c.visible_to(p)
}

pub fn may_see_ticket(p: &Principal, t: &Ticket) -> bool {
    t.visible_to(p)
}

/// Internal notes are written and read by staff only.
pub fn may_see_internal(p: &Principal) -> bool {
    is_staff(p)
}

pub fn may_write_internal(p: &Principal) -> bool {
    is_staff(p)
}

/// Assigning, taking over, handing back.
pub fn may_handle(p: &Principal) -> bool {
    is_staff(p)
}

/// Changing a ticket's fields, adding categories.
pub fn may_manage_tickets(p: &Principal) -> bool {
    is_staff(p)
}

/// Opening a conversation or ticket for someone else.
pub fn may_act_for_others(p: &Principal) -> bool {
    is_staff(p)
}

/// Statistics and contact records.
pub fn may_see_organization_data(p: &Principal) -> bool {
    is_staff(p)
}

/// Deleting a file: its uploader, or staff.
pub fn may_delete_file(p: &Principal, uploader_id: Option<i64>) -> bool {
    is_staff(p) || (uploader_id.is_some() && uploader_id == p.user_id())
}

/// Attaching a file to an existing message: its own sender, or staff for a
/// message of the organization's side (an agent's, the assistant's, the
/// system's). Nobody attaches to someone else's customer message.
pub fn may_attach_to(p: &Principal, m: &crate::domain::conversation::Message) -> bool {
    use crate::domain::conversation::SenderKind;
    match m.sender_kind {
        SenderKind::Customer => !is_staff(p) && m.sender_id.is_some() && m.sender_id == p.user_id(),
        SenderKind::Agent | SenderKind::Assistant | SenderKind::System => is_staff(p),
    }
}

/// Whether a user may be assigned conversations.
pub fn is_assignable(role: Role) -> bool {
    matches!(role, Role::Agent | Role::Admin)
}

/// Customers reach only their own memories (003 `userId` is their id);
/// staff and API keys reach their organization's.
pub fn may_reach_memories_of(p: &Principal, user_ref: &str) -> bool {
    p.role != Role::Customer || p.user_id().is_some_and(|id| id.to_string() == user_ref)
}

/// Plugin entries (listing, trying them): admins and API keys.
pub fn may_manage_plugins(p: &Principal) -> bool {
    matches!(p.role, Role::Admin | Role::Service)
}
