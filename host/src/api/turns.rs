//! One customer turn as the assistant's own entry points take it (002
//! chat, 003 messages and audio, the `/ws` protocol): the service posts the
//! message and runs the assistant; these dialects answer with the reply.

use crate::assistant::{AssistantError, Turn};
use crate::domain::conversation::{Conversation, Handling, Message, validate_content};
use crate::server::AppState;
use crate::service::conversations::{self, Answer, Author, Post};

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
    let idempotency_key = conversations::idempotency_key(said.idempotency_key.as_deref())?;
    let posted = conversations::post(
        state.core(),
        conversation,
        Post {
            idempotency_key,
            customer_ref: Some(said.customer_ref),
            asked_for_person: said.asked_for_person,
            ..Post::text(
                Author::Customer {
                    user_id: said.sender_id,
                },
                said.text.to_owned(),
            )
        },
        Answer::Required,
    )
    .await?;
    let turn = posted.turn.unwrap_or_else(|| Turn {
        outcome: crate::assistant::Outcome::Silent,
        context: Default::default(),
        response_time_ms: 0,
        tokens_used: 0,
    });
    Ok((posted.message, turn))
}

/// The handling a turn left the conversation in.
pub fn handling_after(conversation: &Conversation, turn: &Turn) -> Handling {
    match &turn.outcome {
        crate::assistant::Outcome::HandedOver { conversation, .. } => conversation.handling,
        _ => conversation.handling,
    }
}

/// What the customer reads back from a turn: the reply, the handover
/// notice, or (a person has the conversation) that the message was passed
/// on. Never nothing.
pub fn reply_text<'a>(state: &'a AppState, turn: &'a Turn) -> &'a str {
    turn.text()
        .unwrap_or(state.assistant.config.passed_on_notice.as_str())
}
