//! One customer turn as every assistant entry point takes it (002 chat,
//! 003 messages and audio, the `/ws` protocol): store the message, tell the
//! session's clients, run the answer pipeline, tell them the outcome.

use crate::assistant::{AssistantError, Outcome, Turn, TurnContext};
use crate::domain::conversation::{
    Conversation, Handling, Message, NewMessage, SenderKind, validate_content,
};
use crate::server::AppState;

use super::chat::{publish_handover, publish_message};
use super::error::ApiError;

impl From<AssistantError> for ApiError {
    fn from(e: AssistantError) -> Self {
        match e {
            AssistantError::Unavailable(why) => ApiError::service_unavailable(why),
            AssistantError::Store(e) => e.into(),
            AssistantError::Search(e) => {
                tracing::error!(error = %e, "search failed");
                ApiError::internal()
            }
        }
    }
}

/// What a customer sent.
pub struct Said<'a> {
    pub text: &'a str,
    /// The user the message is from (the conversation's customer).
    pub sender_id: Option<i64>,
    /// The client's message id: a retry answers the first turn.
    pub idempotency_key: Option<String>,
    /// Whose memories the assistant reads (003 `userId`).
    pub customer_ref: String,
    /// `handover_request`: the customer asked for a person.
    pub asked_for_person: bool,
}

/// Checks a customer message's text (the field is named `field`).
pub fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    validate_content(field, text).map_err(|e| ApiError::invalid_fields(vec![e]))
}

/// Stores the customer's message and answers it. The stored message comes
/// back with the turn.
pub async fn take_turn(
    state: &AppState,
    conversation: &Conversation,
    said: Said<'_>,
) -> Result<(Message, Turn), ApiError> {
    if !conversation.status.is_open() {
        return Err(ApiError::conflict(
            "The conversation is closed and accepts no new messages",
        ));
    }
    let (message, created) = state
        .db
        .insert_message(&NewMessage {
            org_id: conversation.org_id,
            conversation_id: conversation.id,
            sender_kind: SenderKind::Customer,
            sender_id: said.sender_id,
            content: said.text.to_owned(),
            is_internal: false,
            idempotency_key: said.idempotency_key.clone(),
            reply: Default::default(),
            context: None,
        })
        .await?;
    if !created {
        return Ok((message.clone(), earlier_turn(state, &message).await?));
    }
    publish_message(state, &message);
    let turn = state
        .assistant
        .respond(
            conversation,
            &said.customer_ref,
            said.text,
            said.asked_for_person,
        )
        .await?;
    announce(state, &turn);
    Ok((message, turn))
}

/// Publishes a turn's reply or handover.
pub fn announce(state: &AppState, turn: &Turn) {
    match &turn.outcome {
        Outcome::Answered { reply } => publish_message(state, reply),
        Outcome::HandedOver {
            notice,
            reason,
            conversation,
        } => {
            publish_message(state, notice);
            publish_handover(state, conversation, reason.as_str());
        }
        Outcome::Silent => {}
    }
}

/// A retried message: the answer it got the first time, if any.
async fn earlier_turn(state: &AppState, message: &Message) -> Result<Turn, ApiError> {
    let (later, _) = state
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

/// The handling a turn left the conversation in.
pub fn handling_after(conversation: &Conversation, turn: &Turn) -> Handling {
    match &turn.outcome {
        Outcome::HandedOver { conversation, .. } => conversation.handling,
        _ => conversation.handling,
    }
}
