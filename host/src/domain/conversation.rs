//! Conversations and their messages: what 000/001 call chat sessions, 002
//! conversations and 003 sessions. Each dialect shows them in its own words;
//! the rules live here.

use chrono::{DateTime, Utc};

use super::{FieldError, Principal, PrincipalKind, Role};

/// A conversation's state. 000 speaks of active, resolved and archived;
/// 001 of active and closed. A conversation that is not active is over:
/// nobody may post into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationStatus {
    Active,
    Resolved,
    Closed,
    Archived,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Active => "active",
            ConversationStatus::Resolved => "resolved",
            ConversationStatus::Closed => "closed",
            ConversationStatus::Archived => "archived",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(ConversationStatus::Active),
            "resolved" => Some(ConversationStatus::Resolved),
            "closed" => Some(ConversationStatus::Closed),
            "archived" => Some(ConversationStatus::Archived),
            _ => None,
        }
    }

    /// 001's two-word view: everything that is not active is closed.
    pub fn as_001(self) -> &'static str {
        match self {
            ConversationStatus::Active => "active",
            _ => "closed",
        }
    }

    pub fn is_open(self) -> bool {
        self == ConversationStatus::Active
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Low,
    Medium,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "low" => Some(Priority::Low),
            "medium" => Some(Priority::Medium),
            "high" => Some(Priority::High),
            _ => None,
        }
    }
}

/// Who wrote a message. 000 says `user`/`assistant`, 001 `user`/`support`,
/// 003 `user`/`bot`/`agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenderKind {
    Customer,
    Assistant,
    Agent,
    System,
}

impl SenderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::Customer => "customer",
            SenderKind::Assistant => "assistant",
            SenderKind::Agent => "agent",
            SenderKind::System => "system",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "customer" => Some(SenderKind::Customer),
            "assistant" => Some(SenderKind::Assistant),
            "agent" => Some(SenderKind::Agent),
            "system" => Some(SenderKind::System),
            _ => None,
        }
    }

    /// 000's `role`: the customer is `user`, everyone else `assistant`.
    pub fn as_000(self) -> &'static str {
        match self {
            SenderKind::Customer => "user",
            _ => "assistant",
        }
    }

    /// 001's `sender`: the customer is `user`, everyone else `support`.
    pub fn as_001(self) -> &'static str {
        match self {
            SenderKind::Customer => "user",
            _ => "support",
        }
    }
}

/// How a conversation reaches its customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The web chat and the REST dialects used by a logged-in customer.
    Web,
    Whatsapp,
    Email,
    /// Another system, through an API key (003 `userId`, 004 webhooks).
    Api,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Whatsapp => "whatsapp",
            Channel::Email => "email",
            Channel::Api => "api",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "web" => Some(Channel::Web),
            "whatsapp" => Some(Channel::Whatsapp),
            "email" => Some(Channel::Email),
            "api" => Some(Channel::Api),
            _ => None,
        }
    }
}

/// Where a channel message is on its way to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Sent => "sent",
            Delivery::Delivered => "delivered",
            Delivery::Read => "read",
            Delivery::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Delivery::Pending),
            "sent" => Some(Delivery::Sent),
            "delivered" => Some(Delivery::Delivered),
            "read" => Some(Delivery::Read),
            "failed" => Some(Delivery::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: i64,
    pub org_id: i64,
    /// The login customer, if any: a ticket another system opened, or a
    /// contact that never logged in, has none.
    pub customer_id: Option<i64>,
    /// The contact the conversation is with.
    pub contact_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub status: ConversationStatus,
    pub subject: Option<String>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub channel: Channel,
    /// The `[[plugins]]` entry a channel conversation came through.
    pub channel_entry: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Who answers the customer now.
    pub handling: Handling,
    /// 003's client-chosen `sessionId`, when it is not this id.
    pub external_id: Option<String>,
    /// 003's session context: the last intent and entities (a JSON object).
    pub context: serde_json::Value,
    /// Messages with ids up to this one precede the last reset.
    pub history_from: i64,
}

/// Whether a channel message is a template (WhatsApp's pre-approved
/// messages, which may go out outside the customer-service window).
pub fn is_template(meta: &ChannelMeta) -> bool {
    meta.data
        .as_deref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .is_some_and(|v| v.get("template").is_some())
}

impl Conversation {
    /// Whether a public message in this conversation must be carried to
    /// the customer by a channel entry (WhatsApp, email).
    pub fn carried_by_channel(&self) -> Option<&str> {
        match self.channel {
            Channel::Whatsapp | Channel::Email => self.channel_entry.as_deref(),
            Channel::Web | Channel::Api => None,
        }
    }

    /// The channel details and delivery state of a new public message to
    /// the customer: pending on the conversation's channel entry (the
    /// outbox sends it), or nothing off channels.
    pub fn outbound(&self) -> (ChannelMeta, Option<Delivery>) {
        match self.carried_by_channel() {
            Some(entry) => (
                ChannelMeta {
                    entry: Some(entry.to_owned()),
                    ..Default::default()
                },
                Some(Delivery::Pending),
            ),
            None => (ChannelMeta::default(), None),
        }
    }
}

/// Who answers a conversation's customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// The assistant.
    Ai,
    /// Handed over; waiting for an agent. The assistant is silent.
    Waiting,
    /// An agent took it over. The assistant is silent until handed back.
    Agent,
}

impl Handling {
    pub fn as_str(self) -> &'static str {
        match self {
            Handling::Ai => "ai",
            Handling::Waiting => "waiting",
            Handling::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ai" => Some(Handling::Ai),
            "waiting" => Some(Handling::Waiting),
            "agent" => Some(Handling::Agent),
            _ => None,
        }
    }

    /// 003's session status words.
    pub fn as_003(self) -> &'static str {
        match self {
            Handling::Ai => "with_ai",
            Handling::Waiting => "waiting_for_agent",
            Handling::Agent => "with_agent",
        }
    }
}

impl Conversation {
    /// Whether `p` may see this conversation: its customer, or staff (and
    /// API keys) of its organization. Anyone else is told it does not exist.
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
pub struct NewConversation {
    pub org_id: i64,
    pub customer_id: Option<i64>,
    /// Filled in by the service from the customer when not given.
    pub contact_id: Option<i64>,
    pub subject: Option<String>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub channel: Channel,
    pub channel_entry: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: i64,
    pub org_id: i64,
    pub conversation_id: i64,
    pub sender_kind: SenderKind,
    pub sender_id: Option<i64>,
    pub content: String,
    pub is_internal: bool,
    pub status: String,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// For assistant replies: what they were based on and cost.
    pub reply: ReplyMeta,
    /// What a channel message carries (empty for the web).
    pub channel: ChannelMeta,
    /// Where a channel message is on its way (`None` off channels).
    pub delivery: Option<Delivery>,
    pub delivery_error: Option<String>,
}

/// A message's channel details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelMeta {
    /// The `[[plugins]]` entry it came or goes through.
    pub entry: Option<String>,
    /// The provider's id for it (unique per entry: dedupes redeliveries and
    /// matches delivery reports).
    pub provider_message_id: Option<String>,
    /// The message this one answers.
    pub reply_to_id: Option<i64>,
    /// An email's subject.
    pub subject: Option<String>,
    /// An email's HTML body (the plain text is `content`).
    pub html: Option<String>,
    /// What the message carries beyond its text, as JSON (the content
    /// kind, a location, a chosen button, a template to send). Written,
    /// not read back with the message.
    pub data: Option<String>,
}

/// What an assistant reply was based on: the passage ids it cites, the
/// tokens it used and how long it took (milliseconds). Zero for others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyMeta {
    pub sources: Vec<String>,
    pub tokens_used: i64,
    pub response_time_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub org_id: i64,
    pub conversation_id: i64,
    pub sender_kind: SenderKind,
    pub sender_id: Option<i64>,
    pub content: String,
    pub is_internal: bool,
    /// A retried send with the same key returns the first message.
    pub idempotency_key: Option<String>,
    pub reply: ReplyMeta,
    /// For assistant replies: the conversation's new 003 context (JSON),
    /// written in the same transaction.
    pub context: Option<String>,
    pub channel: ChannelMeta,
    /// `pending` for a message a channel must still send.
    pub delivery: Option<Delivery>,
}

/// A stored file, sent with a message or uploaded on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub id: i64,
    pub org_id: i64,
    pub conversation_id: i64,
    pub message_id: Option<i64>,
    pub uploader_id: Option<i64>,
    /// The client's name for it: shown, never used as a path.
    pub file_name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// Largest file, and most files per message (000's limits).
pub const FILE_MAX_BYTES: usize = 5 * 1024 * 1024;
pub const FILES_PER_MESSAGE: usize = 10;

/// Longest message text, in characters.
pub const MESSAGE_MAX: usize = 10_000;
pub const SUBJECT_MAX: usize = 200;
pub const TAGS_MAX: usize = 20;
pub const TAG_MAX: usize = 50;
pub const IDEMPOTENCY_KEY_MAX: usize = 200;

pub fn validate_content(field: &str, content: &str) -> Result<(), FieldError> {
    if content.trim().is_empty() {
        return Err(FieldError::new(
            field,
            "must not be empty",
            "value_error.any_str.min_length",
        ));
    }
    if content.chars().count() > MESSAGE_MAX {
        return Err(FieldError::new(
            field,
            format!("must be at most {MESSAGE_MAX} characters"),
            "value_error.any_str.max_length",
        ));
    }
    Ok(())
}

pub fn validate_subject(subject: &str) -> Result<(), FieldError> {
    if subject.chars().count() > SUBJECT_MAX {
        return Err(FieldError::new(
            "subject",
            format!("must be at most {SUBJECT_MAX} characters"),
            "value_error.any_str.max_length",
        ));
    }
    Ok(())
}

pub fn validate_tags(tags: &[String]) -> Result<(), FieldError> {
    if tags.len() > TAGS_MAX {
        return Err(FieldError::new(
            "tags",
            format!("at most {TAGS_MAX} tags"),
            "value_error.list.max_items",
        ));
    }
    if tags
        .iter()
        .any(|t| t.trim().is_empty() || t.chars().count() > TAG_MAX)
    {
        return Err(FieldError::new(
            "tags",
            format!("each tag must be 1 to {TAG_MAX} characters"),
            "value_error",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Conversation {
        Conversation {
            id: 1,
            org_id: 7,
            customer_id: Some(10),
            contact_id: None,
            agent_id: None,
            status: ConversationStatus::Active,
            subject: None,
            priority: Priority::Medium,
            tags: Vec::new(),
            channel: Channel::Web,
            channel_entry: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            ended_at: None,
            handling: Handling::Ai,
            external_id: None,
            context: serde_json::json!({}),
            history_from: 0,
        }
    }

    #[test]
    fn who_sees_a_conversation() {
        let c = conversation();
        let p = |org_id, role, kind| Principal { org_id, role, kind };
        assert!(c.visible_to(&p(7, Role::Customer, PrincipalKind::User(10))));
        assert!(!c.visible_to(&p(7, Role::Customer, PrincipalKind::User(11))));
        assert!(c.visible_to(&p(7, Role::Agent, PrincipalKind::User(3))));
        assert!(c.visible_to(&p(7, Role::Service, PrincipalKind::ApiKey(1))));
        assert!(!c.visible_to(&p(8, Role::Admin, PrincipalKind::User(3))));
    }

    #[test]
    fn status_words_per_dialect() {
        assert_eq!(ConversationStatus::Resolved.as_001(), "closed");
        assert_eq!(ConversationStatus::Active.as_001(), "active");
        assert_eq!(SenderKind::Agent.as_001(), "support");
        assert_eq!(SenderKind::Assistant.as_000(), "assistant");
        assert_eq!(SenderKind::Customer.as_000(), "user");
    }
}
