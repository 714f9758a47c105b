//! Conversations: starting them, posting messages (one set of rules for
//! every author and entry point), the assistant's turn, the handover state
//! machine, status, assignment, typing and read receipts.

use std::time::Instant;

use chrono::Utc;

use super::{Actor, Core, ServiceError};
use crate::assistant::{HandoverReason, Outcome, Turn, TurnContext};
use crate::domain::contact::{ContactDetails, Identity};
use crate::domain::conversation::{
    Attachment, Channel, ChannelMeta, Conversation, ConversationStatus, Delivery, Handling,
    IDEMPOTENCY_KEY_MAX, Message, NewConversation, NewMessage, SenderKind,
};
use crate::events::{Event, Transition};
use crate::store::NewAttachment;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    /// The conversation's customer (or contact, through a channel).
    Customer { user_id: Option<i64> },
    /// An agent, an admin or an API key speaking for the organization.
    Staff { user_id: Option<i64> },
    /// The gateway or another system (004's signed webhook).
    System,
}

impl Author {
    /// The actor's own voice: customers as customers, the rest as staff.
    pub fn of(actor: Actor) -> Author {
        match actor {
            Actor::Customer { user_id, .. } => Author::Customer {
                user_id: Some(user_id),
            },
            Actor::Agent { user_id, .. } => Author::Staff {
                user_id: Some(user_id),
            },
            Actor::ApiKey { .. } => Author::Staff { user_id: None },
            Actor::Channel { .. } => Author::Customer { user_id: None },
            Actor::System { .. } => Author::System,
        }
    }

    fn kind(self) -> SenderKind {
        match self {
            Author::Customer { .. } => SenderKind::Customer,
            Author::Staff { .. } => SenderKind::Agent,
            Author::System => SenderKind::System,
        }
    }

    fn user_id(self) -> Option<i64> {
        match self {
            Author::Customer { user_id } | Author::Staff { user_id } => user_id,
            Author::System => None,
        }
    }
}

/// Whether the assistant's turn runs inside the call, and what its failure
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Run it; a failure fails the call (002, 003, `/ws`: the answer is
    /// the reply).
    Required,
    /// Run it; a failure is logged and the message stands (000/001: the
    /// answer is the customer's message; the reply is in the history and
    /// on the session's socket).
    BestEffort,
    /// Store the message only: there is nothing to answer (a channel
    /// message with a file and no text).
    Skip,
}

/// A message to post.
#[derive(Debug, Clone)]
pub struct Post {
    pub author: Author,
    pub content: String,
    /// An internal note (staff only; never reaches the customer).
    pub internal: bool,
    /// The client's key: a retry with the same key creates nothing and
    /// answers the first message (and, for a customer, the first reply).
    pub idempotency_key: Option<String>,
    /// Files already checked and stored by [`store_file`].
    pub files: Vec<NewAttachment>,
    pub channel: ChannelMeta,
    pub delivery: Option<Delivery>,
    /// Whose memories the assistant reads: the customer's id unless a
    /// client names them otherwise (003 `userId`).
    pub customer_ref: Option<String>,
    /// The customer asked for a person in so many words (003's
    /// `handover_request`).
    pub asked_for_person: bool,
}

impl Post {
    pub fn text(author: Author, content: String) -> Post {
        Post {
            author,
            content,
            internal: false,
            idempotency_key: None,
            files: Vec::new(),
            channel: ChannelMeta::default(),
            delivery: None,
            customer_ref: None,
            asked_for_person: false,
        }
    }
}

/// What posting did.
#[derive(Debug, Clone)]
pub struct Posted {
    pub message: Message,
    pub files: Vec<Attachment>,
    /// `false` for a retry: nothing new was written.
    pub created: bool,
    /// The assistant's turn, for a customer's message.
    pub turn: Option<Turn>,
}

/// Checks a client's `Idempotency-Key` (or message id): 1 to 200 visible
/// characters. The same rule for every entry point.
pub fn idempotency_key(raw: Option<&str>) -> Result<Option<String>, ServiceError> {
    match raw {
        None => Ok(None),
        Some(k) => {
            let k = k.trim();
            if k.is_empty() || k.len() > IDEMPOTENCY_KEY_MAX || k.chars().any(|c| c.is_control()) {
                Err(ServiceError::Rejected(format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible characters"
                )))
            } else {
                Ok(Some(k.to_owned()))
            }
        }
    }
}

/// One file read from a request, not yet stored.
pub struct Upload {
    pub file_name: String,
    pub declared_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// Checks a file's type against its bytes and writes it to disk: the one
/// check every attachment goes through.
pub async fn store_file(core: Core<'_>, u: Upload) -> Result<NewAttachment, ServiceError> {
    if u.bytes.is_empty() {
        return Err(ServiceError::invalid(
            "attachments",
            format!("{:?} is empty", u.file_name),
            "value_error",
        ));
    }
    let size = i64::try_from(u.bytes.len()).unwrap_or(i64::MAX);
    let (found, sha256) = core
        .files
        .put(u.bytes, u.declared_type, u.file_name.clone())
        .await
        .map_err(|e| match e {
            crate::files::PutError::Refused(why) => {
                ServiceError::invalid("attachments", why, "value_error")
            }
            crate::files::PutError::Io(e) => {
                tracing::error!(error = %e, "could not write a file");
                ServiceError::Internal("could not write a file")
            }
        })?;
    Ok(NewAttachment {
        file_name: u.file_name,
        content_type: found.content_type,
        size,
        sha256,
        width: found.width,
        height: found.height,
    })
}

/// Starts a conversation. The contact is the customer's own (created on
/// first use) unless one is given.
pub async fn start(core: Core<'_>, mut new: NewConversation) -> Result<Conversation, ServiceError> {
    if new.contact_id.is_none()
        && let Some(user_id) = new.customer_id
    {
        new.contact_id = Some(contact_of_user(core, new.org_id, user_id).await?);
    }
    let c = core.db.create_conversation(&new).await?;
    core.bus.publish(Event::ConversationCreated(c.clone()));
    Ok(c)
}

/// The contact of a login customer: found by its web identity, created
/// with the user's name and email on first use.
pub async fn contact_of_user(
    core: Core<'_>,
    org_id: i64,
    user_id: i64,
) -> Result<i64, ServiceError> {
    if let Some((id, merged_into)) = core.db.contact_of_user(user_id).await? {
        return Ok(merged_into.unwrap_or(id));
    }
    let identity = Identity::new(Channel::Web, &user_id.to_string());
    let details = match core.db.user_by_id(user_id).await? {
        Some(u) => ContactDetails {
            name: u.full_name.clone().or(u.username.clone()),
            // Customers a client named before contacts existed have a made-up
            // address that receives no mail.
            email: (!u.email.ends_with("@contacts.invalid")).then(|| u.email.clone()),
            ..Default::default()
        },
        None => ContactDetails::default(),
    };
    let contact = core
        .db
        .contact_for_identity(org_id, &identity, Some(user_id), &details)
        .await?;
    Ok(contact.merged_into.unwrap_or(contact.id))
}

/// Posts a message into `c`. The rules, for every entry point:
/// - a conversation that is not active accepts nothing;
/// - only staff write internal notes, and those reach no customer, customer
///   socket or channel (the events say so);
/// - a retried key creates nothing and answers the first message (and its
///   first reply); files sent again are released;
/// - staff's public reply takes the conversation over from the assistant;
/// - a customer's message in a conversation the assistant handles gets the
///   assistant's turn.
pub async fn post(
    core: Core<'_>,
    c: &Conversation,
    post: Post,
    answer: Answer,
) -> Result<Posted, ServiceError> {
    if !c.status.is_open() {
        release(core, &post.files).await;
        return Err(ServiceError::Closed);
    }
    if post.internal && !matches!(post.author, Author::Staff { .. } | Author::System) {
        release(core, &post.files).await;
        return Err(ServiceError::Forbidden(
            "Only staff write internal notes".into(),
        ));
    }
    let is_customer = matches!(post.author, Author::Customer { .. });
    // Staff's and the system's public messages in a channel conversation
    // go out through the channel: pending, for the outbox.
    let (channel, delivery) = match c.carried_by_channel() {
        Some(_) if !is_customer && !post.internal && post.delivery.is_none() => {
            if let Err(e) = within_window(core, c, &post.channel).await {
                release(core, &post.files).await;
                return Err(e);
            }
            let (mut meta, delivery) = c.outbound();
            meta.data = post.channel.data.clone();
            meta.reply_to_id = post.channel.reply_to_id;
            meta.subject = post.channel.subject.clone();
            meta.html = post.channel.html.clone();
            (meta, delivery)
        }
        _ => (post.channel.clone(), post.delivery),
    };
    // A provider's id names the message once per entry: a redelivery is a
    // retry, answered like a repeated Idempotency-Key.
    let idempotency_key = post.idempotency_key.clone().or_else(|| {
        post.channel
            .provider_message_id
            .as_ref()
            .map(|id| format!("provider:{id}"))
    });
    let (message, created, files) = core
        .db
        .insert_message_with_files(
            &NewMessage {
                org_id: c.org_id,
                conversation_id: c.id,
                sender_kind: post.author.kind(),
                sender_id: post.author.user_id(),
                content: post.content.clone(),
                is_internal: post.internal,
                idempotency_key,
                reply: Default::default(),
                context: None,
                channel,
                delivery,
            },
            &post.files,
        )
        .await?;
    if !created {
        // A retry: the files sent again are not recorded twice.
        release(core, &post.files).await;
        let turn = if is_customer {
            Some(earlier_turn(core, &message).await?)
        } else {
            None
        };
        return Ok(Posted {
            message,
            files,
            created,
            turn,
        });
    }
    core.bus.publish(Event::MessageCreated {
        message: message.clone(),
        files: files.clone(),
    });
    let mut turn = None;
    match post.author {
        Author::Staff { .. } if !post.internal => {
            // Assignment stays the assign call's business: writing does
            // not assign.
            transition(core, c, Transition::TakenOver, None, "agent_reply").await?;
        }
        // Off the assistant's own entry points, a conversation a person
        // has costs nothing more than the insert.
        Author::Customer { .. }
            if answer == Answer::Required
                || (answer == Answer::BestEffort && c.handling == Handling::Ai) =>
        {
            // Whose memories the assistant reads.
            let customer_ref = post
                .customer_ref
                .clone()
                .or_else(|| c.customer_id.map(|id| id.to_string()))
                .unwrap_or_else(|| format!("contact-{}", c.contact_id.unwrap_or_default()));
            let answered = core
                .assistant
                .respond(c, &customer_ref, &post.content, post.asked_for_person)
                .await;
            match (answered, answer) {
                (Ok(t), _) => {
                    announce(core, &t);
                    turn = Some(t);
                }
                (Err(e), Answer::Required) => return Err(e.into()),
                (Err(e), _) => {
                    tracing::warn!(error = %e, conversation = c.id, "the assistant could not answer");
                }
            }
        }
        _ => {}
    }
    Ok(Posted {
        message,
        files,
        created,
        turn,
    })
}

/// How long after the customer's last message WhatsApp accepts free-form
/// messages (its customer-service window); templates go out any time.
pub const WHATSAPP_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Whether a free-form message may go out in a WhatsApp conversation now:
/// within 24 hours of the customer's last message to that business number
/// (in this conversation or an earlier, closed one), or a template.
pub async fn within_window(
    core: Core<'_>,
    c: &Conversation,
    meta: &ChannelMeta,
) -> Result<(), ServiceError> {
    if c.channel != Channel::Whatsapp || crate::domain::conversation::is_template(meta) {
        return Ok(());
    }
    let key = c.external_id.as_deref().unwrap_or_default();
    let key = key.split('#').next().unwrap_or(key);
    let last = core.db.last_customer_message_at(c.org_id, key).await?;
    match last {
        Some(at) if Utc::now() - at <= WHATSAPP_WINDOW => Ok(()),
        _ => Err(ServiceError::Conflict(
            "Outside WhatsApp's 24-hour customer-service window: the customer has not written \
             in the last 24 hours, so only a template message can be sent"
                .into(),
        )),
    }
}

async fn release(core: Core<'_>, files: &[NewAttachment]) {
    if !files.is_empty() {
        let digests: Vec<String> = files.iter().map(|f| f.sha256.clone()).collect();
        core.files.release(core.db, &digests).await;
    }
}

/// Publishes what a turn wrote: the reply, or the handover notice and the
/// handover.
pub fn announce(core: Core<'_>, turn: &Turn) {
    match &turn.outcome {
        Outcome::Answered { reply } => core.bus.publish(Event::MessageCreated {
            message: reply.clone(),
            files: Vec::new(),
        }),
        Outcome::HandedOver {
            notice,
            reason,
            conversation,
        } => {
            core.bus.publish(Event::MessageCreated {
                message: notice.clone(),
                files: Vec::new(),
            });
            core.bus.publish(Event::HandoverChanged {
                conversation: (**conversation).clone(),
                transition: Transition::Requested,
                reason: reason.as_str().to_owned(),
            });
        }
        Outcome::Silent => {}
    }
}

/// A retried customer message: the answer it got the first time, if any.
async fn earlier_turn(core: Core<'_>, message: &Message) -> Result<Turn, ServiceError> {
    let (later, _) = core
        .db
        .list_messages(message.conversation_id, false, None, 50)
        .await?;
    let reply = later
        .into_iter()
        .find(|m| m.id > message.id && m.sender_kind != SenderKind::Customer);
    let outcome = match reply {
        Some(m) if m.sender_kind == SenderKind::Assistant => Outcome::Answered { reply: m },
        _ => Outcome::Silent,
    };
    let (tokens, time) = match &outcome {
        Outcome::Answered { reply } => (reply.reply.tokens_used, reply.reply.response_time_ms),
        _ => (0, 0),
    };
    Ok(Turn {
        outcome,
        context: TurnContext::default(),
        response_time_ms: time,
        tokens_used: tokens,
    })
}

/// Moves the handover state machine if the conversation is in a state the
/// transition starts from, and publishes the move. `None`: it was not
/// (nothing changed, nothing published).
pub async fn transition(
    core: Core<'_>,
    c: &Conversation,
    t: Transition,
    agent: Option<i64>,
    reason: &str,
) -> Result<Option<Conversation>, ServiceError> {
    if !t.from().contains(&c.handling) {
        return Ok(None);
    }
    let moved = core
        .db
        .transition_handling(c.id, t.from(), t.to(), agent)
        .await?;
    if let Some(updated) = &moved {
        core.bus.publish(Event::HandoverChanged {
            conversation: updated.clone(),
            transition: t,
            reason: reason.to_owned(),
        });
    }
    Ok(moved)
}

/// The customer asks for a person (003's `handover_request`): the
/// assistant hands over with its notice. `None` when a person has (or is
/// about to take) the conversation already.
pub async fn request_person(
    core: Core<'_>,
    c: &Conversation,
) -> Result<Option<Message>, ServiceError> {
    if c.handling != Handling::Ai {
        return Ok(None);
    }
    let outcome = core
        .assistant
        .hand_over(c, HandoverReason::Requested, Instant::now())
        .await?;
    let turn = Turn {
        outcome,
        context: TurnContext::default(),
        response_time_ms: 0,
        tokens_used: 0,
    };
    announce(core, &turn);
    Ok(turn.message().cloned())
}

/// Staff take a conversation over (and become its agent) or hand it back
/// to the assistant. Answers the conversation as it is afterwards (it
/// stays as it was when already there).
pub async fn set_handling(
    core: Core<'_>,
    actor: Actor,
    c: &Conversation,
    to: Handling,
) -> Result<Conversation, ServiceError> {
    let (t, agent, reason) = match to {
        Handling::Agent => (Transition::TakenOver, actor.user_id(), "takeover"),
        Handling::Ai => (Transition::HandedBack, None, "handback"),
        Handling::Waiting => (Transition::Requested, None, "requested"),
    };
    match transition(core, c, t, agent, reason).await? {
        Some(updated) => Ok(updated),
        None => Ok(core
            .db
            .conversation(c.id)
            .await?
            .ok_or(ServiceError::NotFound("Conversation"))?),
    }
}

/// Changes the status; leaving `active` closes it (`conversation.closed`).
pub async fn set_status(
    core: Core<'_>,
    c: &Conversation,
    status: ConversationStatus,
) -> Result<Conversation, ServiceError> {
    let updated = core
        .db
        .set_conversation_status(c.id, status)
        .await?
        .ok_or(ServiceError::NotFound("Conversation"))?;
    let event = if !updated.status.is_open() && c.status.is_open() {
        Event::ConversationClosed(updated.clone())
    } else {
        Event::ConversationUpdated(updated.clone())
    };
    core.bus.publish(event);
    Ok(updated)
}

/// Closes an active conversation; a closed one is a conflict.
pub async fn close(core: Core<'_>, c: &Conversation) -> Result<Conversation, ServiceError> {
    if !c.status.is_open() {
        return Err(ServiceError::Conflict(
            "Chat session is already closed".into(),
        ));
    }
    set_status(core, c, ConversationStatus::Closed).await
}

/// Assigns an agent of the organization to an active, unassigned
/// conversation.
pub async fn assign(
    core: Core<'_>,
    c: &Conversation,
    agent_id: i64,
) -> Result<Conversation, ServiceError> {
    match core.db.user_by_id(agent_id).await? {
        Some(u) if u.org_id == c.org_id && u.is_active && super::policy::is_assignable(u.role) => {}
        _ => return Err(ServiceError::NotFound("Agent")),
    }
    if !c.status.is_open() {
        return Err(ServiceError::Conflict("Chat session is closed".into()));
    }
    if c.agent_id.is_some() {
        return Err(ServiceError::Conflict(
            "Chat session is already assigned".into(),
        ));
    }
    match core.db.assign_conversation(c.id, agent_id).await? {
        Some(updated) => {
            core.bus
                .publish(Event::ConversationAssigned(updated.clone()));
            Ok(updated)
        }
        // Someone else assigned or closed it in between.
        None => Err(ServiceError::Conflict(
            "Chat session is already assigned or closed".into(),
        )),
    }
}

/// Tells conversation `conversation_id`'s clients that someone is typing.
/// Never stored, so it needs no read of the conversation either.
pub fn typing(core: Core<'_>, org_id: i64, conversation_id: i64, who: String, is_typing: bool) {
    core.bus.publish(Event::Typing {
        org_id,
        conversation_id,
        who,
        is_typing,
        at: Utc::now(),
    });
}

/// Marks messages read by one side (the other side's messages only).
pub async fn mark_read(
    core: Core<'_>,
    c: &Conversation,
    ids: &[i64],
    by_customer: bool,
) -> Result<Vec<Message>, ServiceError> {
    let marked = core.db.mark_read(c.id, ids, by_customer).await?;
    if !marked.is_empty() {
        core.bus.publish(Event::Read {
            org_id: c.org_id,
            conversation_id: c.id,
            message_ids: marked.iter().map(|m| m.id).collect(),
            by_customer,
            at: Utc::now(),
        });
    }
    Ok(marked)
}

/// A channel's delivery report for a message it sent (or received):
/// recorded if it moves the message forward, and published
/// (`message.delivery`). `None` for an unknown message or a stale report.
pub async fn delivery_report(
    core: Core<'_>,
    entry: &str,
    provider_message_id: &str,
    delivery: Delivery,
    error: Option<&str>,
) -> Result<Option<Message>, ServiceError> {
    let updated = core
        .db
        .set_delivery(entry, provider_message_id, delivery, error)
        .await?;
    if let Some(m) = &updated {
        core.bus.publish(Event::DeliveryChanged(m.clone()));
    }
    Ok(updated)
}

/// Deletes a conversation with its messages; the files go with the last
/// row that uses them.
pub async fn delete(core: Core<'_>, c: &Conversation) -> Result<(), ServiceError> {
    let digests = core.db.conversation_digests(c.id).await?;
    core.db.delete_conversation(c.id).await?;
    core.files.release(core.db, &digests).await;
    Ok(())
}
