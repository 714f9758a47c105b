//! Domain events: one per change, published by the service layer
//! (`crate::service`) whatever the entry point that caused it.
//!
//! An event carries ids and domain data, never a dialect's JSON. Each
//! WebSocket protocol renders the events it shows at its own edge
//! (`realtime::Delivery::frame` renders once per audience and shares the
//! text between subscribers). [`Event::name`] and [`Event::envelope`] give
//! the dialect-free form a durable consumer stores: channel delivery and
//! outgoing webhooks will write that envelope into an outbox in the same
//! transaction as the change.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::conversation::{Attachment, Conversation, Handling, Message};
use crate::domain::ticket::Ticket;

/// A guarded move of the handover state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `ai` → `waiting`: the assistant asked for a person.
    Requested,
    /// `ai`/`waiting` → `agent`: a person took the conversation.
    TakenOver,
    /// `waiting`/`agent` → `ai`: the assistant answers again.
    HandedBack,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Requested => "requested",
            Transition::TakenOver => "taken_over",
            Transition::HandedBack => "handed_back",
        }
    }

    /// The state the transition leads to.
    pub fn to(self) -> Handling {
        match self {
            Transition::Requested => Handling::Waiting,
            Transition::TakenOver => Handling::Agent,
            Transition::HandedBack => Handling::Ai,
        }
    }

    /// The states it may start from; from any other it does not happen.
    pub fn from(self) -> &'static [Handling] {
        match self {
            Transition::Requested => &[Handling::Ai],
            Transition::TakenOver => &[Handling::Ai, Handling::Waiting],
            Transition::HandedBack => &[Handling::Waiting, Handling::Agent],
        }
    }
}

/// Something that changed.
#[derive(Debug, Clone)]
pub enum Event {
    ConversationCreated(Conversation),
    /// Status, subject, priority or tags changed (not a close: see
    /// [`Event::ConversationClosed`]).
    ConversationUpdated(Conversation),
    ConversationAssigned(Conversation),
    ConversationClosed(Conversation),
    /// A message was written; `files` are its attachments.
    MessageCreated {
        message: Message,
        files: Vec<Attachment>,
    },
    HandoverChanged {
        conversation: Conversation,
        transition: Transition,
        /// Why: `requested`, `low_confidence`, `ambiguous`, `agent_reply`,
        /// `takeover`, `handback`.
        reason: String,
    },
    TicketCreated(Ticket),
    TicketUpdated(Ticket),
    /// A channel reported a message sent, delivered, read or failed.
    DeliveryChanged(Message),
    Typing {
        org_id: i64,
        conversation_id: i64,
        /// The user (or `apikey-N`) typing.
        who: String,
        is_typing: bool,
        at: DateTime<Utc>,
    },
    /// Messages of a conversation were read by the other side.
    Read {
        org_id: i64,
        conversation_id: i64,
        message_ids: Vec<i64>,
        by_customer: bool,
        at: DateTime<Utc>,
    },
}

impl Event {
    /// The event's dialect-free name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ConversationCreated(_) => "conversation.created",
            Event::ConversationUpdated(_) => "conversation.updated",
            Event::ConversationAssigned(_) => "conversation.assigned",
            Event::ConversationClosed(_) => "conversation.closed",
            Event::MessageCreated { .. } => "message.created",
            Event::HandoverChanged { .. } => "handover.changed",
            Event::TicketCreated(_) => "ticket.created",
            Event::TicketUpdated(_) => "ticket.updated",
            Event::DeliveryChanged(_) => "message.delivery",
            Event::Typing { .. } => "conversation.typing",
            Event::Read { .. } => "message.read",
        }
    }

    pub fn org_id(&self) -> i64 {
        match self {
            Event::ConversationCreated(c)
            | Event::ConversationUpdated(c)
            | Event::ConversationAssigned(c)
            | Event::ConversationClosed(c)
            | Event::HandoverChanged {
                conversation: c, ..
            } => c.org_id,
            Event::MessageCreated { message, .. } | Event::DeliveryChanged(message) => {
                message.org_id
            }
            Event::TicketCreated(t) | Event::TicketUpdated(t) => t.org_id,
            Event::Typing { org_id, .. } | Event::Read { org_id, .. } => *org_id,
        }
    }

    /// The conversation the event belongs to.
    pub fn conversation_id(&self) -> i64 {
        match self {
            Event::ConversationCreated(c)
            | Event::ConversationUpdated(c)
            | Event::ConversationAssigned(c)
            | Event::ConversationClosed(c)
            | Event::HandoverChanged {
                conversation: c, ..
            } => c.id,
            Event::MessageCreated { message, .. } | Event::DeliveryChanged(message) => {
                message.conversation_id
            }
            Event::TicketCreated(t) | Event::TicketUpdated(t) => t.conversation_id,
            Event::Typing {
                conversation_id, ..
            }
            | Event::Read {
                conversation_id, ..
            } => *conversation_id,
        }
    }

    /// Whether a customer (their sockets, a channel) may see the event:
    /// internal notes never reach them.
    pub fn is_public(&self) -> bool {
        match self {
            Event::MessageCreated { message, .. } | Event::DeliveryChanged(message) => {
                !message.is_internal
            }
            _ => true,
        }
    }

    /// Whether the organization's staff feed carries the event: the
    /// handovers (the only events it renders).
    pub fn for_staff_feed(&self) -> bool {
        matches!(self, Event::HandoverChanged { .. })
    }

    /// The dialect-free form: `{"event", "organizationId",
    /// "conversationId", "data"}` with ids as numbers. What a durable
    /// consumer (an outbox row) keeps.
    pub fn envelope(&self) -> Value {
        let data = match self {
            Event::ConversationCreated(c)
            | Event::ConversationUpdated(c)
            | Event::ConversationAssigned(c)
            | Event::ConversationClosed(c) => conversation_data(c),
            Event::MessageCreated { message, files } => {
                let mut m = message_data(message);
                m["attachmentIds"] = json!(files.iter().map(|f| f.id).collect::<Vec<_>>());
                m
            }
            Event::DeliveryChanged(m) => message_data(m),
            Event::HandoverChanged {
                conversation,
                transition,
                reason,
            } => json!({
                "conversation": conversation_data(conversation),
                "transition": transition.as_str(),
                "handling": conversation.handling.as_str(),
                "reason": reason,
            }),
            Event::TicketCreated(t) | Event::TicketUpdated(t) => json!({
                "id": t.id,
                "conversationId": t.conversation_id,
                "customerId": t.customer_id,
                "title": t.title,
                "status": t.status.as_str(),
                "priority": t.priority.as_str(),
                "categoryId": t.category_id,
            }),
            Event::Typing {
                who, is_typing, at, ..
            } => {
                json!({"who": who, "isTyping": is_typing, "at": at})
            }
            Event::Read {
                message_ids,
                by_customer,
                at,
                ..
            } => json!({"messageIds": message_ids, "byCustomer": by_customer, "at": at}),
        };
        json!({
            "event": self.name(),
            "organizationId": self.org_id(),
            "conversationId": self.conversation_id(),
            "data": data,
        })
    }
}

fn conversation_data(c: &Conversation) -> Value {
    json!({
        "id": c.id,
        "customerId": c.customer_id,
        "contactId": c.contact_id,
        "agentId": c.agent_id,
        "status": c.status.as_str(),
        "handling": c.handling.as_str(),
        "channel": c.channel.as_str(),
        "channelEntry": c.channel_entry,
        "subject": c.subject,
    })
}

fn message_data(m: &Message) -> Value {
    json!({
        "id": m.id,
        "conversationId": m.conversation_id,
        "senderKind": m.sender_kind.as_str(),
        "senderId": m.sender_id,
        "content": m.content,
        "isInternal": m.is_internal,
        "delivery": m.delivery.as_ref().map(|d| d.as_str()),
        "createdAt": m.created_at,
    })
}
