//! The assistant: what it knows (knowledge, FAQs, memories) and the one
//! answer pipeline behind every entry point (002 chat, 003 messages and
//! audio, the `/ws` protocol).
//!
//! A turn: the customer's message is stored by the entry point; then
//! [`Assistant::respond`] takes the conversation's recent history, the
//! customer's long-term memories and the best knowledge and FAQ passages,
//! asks the configured `llm-provider` plugin for an answer, and stores the
//! reply with the passage ids it cites, its token usage and its response
//! time. It hands over to a person instead when the customer asks for one,
//! when retrieval finds nothing relevant, or when the provider is not
//! confident; from then on it is silent in that conversation until an agent
//! hands it back.

pub mod knowledge;
pub mod rules;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::config::assistant::AssistantConfig;
use crate::domain::conversation::{
    Conversation, Handling, Message, NewMessage, ReplyMeta, SenderKind,
};
use crate::domain::knowledge::MemoryKind;
use crate::plugins::{self, CompletionRequest, PluginError, Plugins};
use crate::search::{Hit, Search, SearchError};
use crate::store::{Db, StoreError};

/// How often a node checks that its search index holds the database's
/// latest generation.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    /// A plugin failed, or none is configured for the function.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Search(#[from] SearchError),
}

impl From<PluginError> for AssistantError {
    fn from(e: PluginError) -> Self {
        AssistantError::Unavailable(e.to_string())
    }
}

/// Why a conversation went to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverReason {
    /// The customer asked for one (in words or with `handover_request`).
    Requested,
    /// Retrieval found nothing relevant.
    NoKnowledge,
    /// The provider's confidence was below the threshold.
    LowConfidence,
    /// Two documents matched about equally well.
    Ambiguous,
}

impl HandoverReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoverReason::Requested => "requested",
            HandoverReason::NoKnowledge => "no_relevant_knowledge",
            HandoverReason::LowConfidence => "low_confidence",
            HandoverReason::Ambiguous => "ambiguous_knowledge",
        }
    }
}

/// 003's `context`: the customer's intent and the entities named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnContext {
    pub intent: Option<String>,
    pub entities: Vec<String>,
    pub confidence: f32,
}

/// How a turn ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The assistant answered with `reply`.
    Answered { reply: Message },
    /// The conversation went to a person; `notice` is the message that tells
    /// the customer so.
    HandedOver {
        notice: Message,
        reason: HandoverReason,
        conversation: Box<Conversation>,
    },
    /// A person has (or is about to take) the conversation: no answer.
    Silent,
}

/// The result of one turn.
#[derive(Debug, Clone)]
pub struct Turn {
    pub outcome: Outcome,
    pub context: TurnContext,
    /// Milliseconds from the start of the turn to its end.
    pub response_time_ms: i64,
    pub tokens_used: i64,
}

impl Turn {
    /// The text the customer gets back: the reply, the handover notice, or
    /// nothing while a person has the conversation.
    pub fn text(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Answered { reply } => Some(&reply.content),
            Outcome::HandedOver { notice, .. } => Some(&notice.content),
            Outcome::Silent => None,
        }
    }

    /// The stored message carrying [`Turn::text`].
    pub fn message(&self) -> Option<&Message> {
        match &self.outcome {
            Outcome::Answered { reply } => Some(reply),
            Outcome::HandedOver { notice, .. } => Some(notice),
            Outcome::Silent => None,
        }
    }
}

/// Milliseconds since `started`.
fn millis_since(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A passage id as the provider and the stored reply see it: `kb-<n>` for a
/// knowledge passage, `faq-<n>` for an FAQ.
pub fn passage_id(hit: &Hit) -> String {
    if hit.entry.source == "faq" {
        format!("faq-{}", hit.entry.id)
    } else {
        format!("kb-{}", hit.entry.id)
    }
}

pub struct Assistant {
    pub config: AssistantConfig,
    db: Db,
    plugins: Arc<Plugins>,
    /// `None` for command-line imports, which write the database only (a
    /// running gateway indexes their changes within seconds).
    search: Option<Arc<Search>>,
}

impl Assistant {
    pub fn new(
        config: AssistantConfig,
        db: Db,
        plugins: Arc<Plugins>,
        search: Option<Search>,
    ) -> Self {
        Self {
            config,
            db,
            plugins,
            search: search.map(Arc::new),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The search indexes.
    pub fn search(&self) -> Result<&Arc<Search>, AssistantError> {
        self.search
            .as_ref()
            .ok_or_else(|| AssistantError::Unavailable("the search index is not open".into()))
    }

    fn plugin(&self, id: Option<&str>, what: &str) -> Result<Arc<plugins::Plugin>, AssistantError> {
        let Some(id) = id else {
            return Err(AssistantError::Unavailable(format!(
                "no {what} is configured: add an llm-provider plugin and set assistant.provider"
            )));
        };
        match self.plugins.get(id) {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(e.into()),
            None => Err(AssistantError::Unavailable(format!(
                "plugin `{id}` is not configured"
            ))),
        }
    }

    /// Transcribes audio through the configured transcription plugin.
    pub async fn transcribe(
        &self,
        audio: &[u8],
        format: &str,
        language: Option<&str>,
    ) -> Result<String, AssistantError> {
        let plugin = self.plugin(
            self.config.transcription.as_deref(),
            "transcription provider",
        )?;
        match plugin.transcribe(audio, format, language).await {
            Ok(t) => Ok(t.text),
            Err(e) => Err(AssistantError::Unavailable(match e.failure {
                plugins::Failure::Provider(plugins::LlmError::NotSupported) => format!(
                    "transcription is not available: plugin `{}` does not transcribe audio; configure a provider that does (such as openai) as assistant.transcription",
                    e.plugin
                ),
                _ => e.to_string(),
            })),
        }
    }

    /// The organization's best knowledge passages and FAQs for `query`,
    /// best first, when the best reaches the relevance threshold; those
    /// below it are dropped.
    pub async fn retrieve(&self, org_id: i64, query: &str) -> Result<Vec<Hit>, AssistantError> {
        let vector = self.embed_query(query).await;
        let mut hits = self.search_with(org_id, query, vector.as_deref(), self.config.passages)?;
        // The best hit decides: when it is not relevant enough, nothing is
        // (a weaker-ranked hit with a higher relevance is a different topic
        // that happens to share the question's words).
        if hits
            .first()
            .is_none_or(|h| h.relevance < self.config.min_relevance)
        {
            return Ok(Vec::new());
        }
        hits.retain(|h| h.relevance >= self.config.min_relevance);
        Ok(hits)
    }

    /// One turn: answers the customer's last message in `conversation`, or
    /// hands over, or stays silent. `customer_ref` names the customer's
    /// memories; `asked_for_person` is set for `handover_request`.
    pub async fn respond(
        &self,
        conversation: &Conversation,
        customer_ref: &str,
        text: &str,
        asked_for_person: bool,
    ) -> Result<Turn, AssistantError> {
        let started = Instant::now();
        let rule_context = rules::classify(&self.config, text);
        let mut context = TurnContext {
            intent: rule_context.0,
            entities: rule_context.1,
            confidence: 0.0,
        };

        if conversation.handling != Handling::Ai {
            return Ok(Turn {
                outcome: Outcome::Silent,
                context,
                response_time_ms: millis_since(started),
                tokens_used: 0,
            });
        }
        if asked_for_person || rules::asks_for_person(&self.config, text) {
            context.confidence = 1.0;
            return self
                .handover_turn(conversation, HandoverReason::Requested, context, 0, started)
                .await;
        }

        let hits = self.retrieve(conversation.org_id, text).await?;
        // Two documents about equally relevant: answering from either may
        // well answer a different question.
        if let [best, runner_up, ..] = hits.as_slice()
            && best.relevance - runner_up.relevance < self.config.ambiguity_margin
        {
            return self
                .handover_turn(conversation, HandoverReason::Ambiguous, context, 0, started)
                .await;
        }
        if hits.is_empty() {
            if rules::is_small_talk(text) {
                let reply = self
                    .store_reply(
                        conversation,
                        rules::GREETING_REPLY,
                        Vec::new(),
                        0,
                        None,
                        started,
                    )
                    .await?;
                context.intent = Some("greeting".into());
                context.confidence = 1.0;
                return Ok(Turn {
                    outcome: Outcome::Answered { reply },
                    context,
                    response_time_ms: millis_since(started),
                    tokens_used: 0,
                });
            }
            return self
                .handover_turn(
                    conversation,
                    HandoverReason::NoKnowledge,
                    context,
                    0,
                    started,
                )
                .await;
        }

        let history_limit = i64::try_from(self.config.history_messages + 1).unwrap_or(11);
        let history = self.db.history(conversation, history_limit).await?;
        let memories = self
            .db
            .memories(
                conversation.org_id,
                customer_ref,
                Some(MemoryKind::LongTerm),
                None,
                false,
            )
            .await?;
        let request = self.request(&history, text, &memories, &hits);
        let provider = self.plugin(self.config.provider.as_deref(), "LLM provider")?;
        let completion = provider.complete(&request).await?;
        let tokens = i64::from(completion.usage.prompt_tokens)
            + i64::from(completion.usage.completion_tokens);
        if let Some(intent) = completion.intent.clone().filter(|i| !i.is_empty()) {
            context.intent = Some(intent);
        }
        if !completion.entities.is_empty() {
            context.entities = completion.entities.clone();
        }
        context.confidence = completion.confidence;

        if completion.confidence < self.config.handover_confidence
            || completion.used_passages.is_empty()
        {
            return self
                .handover_turn(
                    conversation,
                    HandoverReason::LowConfidence,
                    context,
                    tokens,
                    started,
                )
                .await;
        }
        // Views of cited FAQs are counted off the answer's path.
        let faqs: Vec<i64> = completion
            .used_passages
            .iter()
            .filter_map(|id| id.strip_prefix("faq-")?.parse().ok())
            .collect();
        if !faqs.is_empty() {
            let db = self.db.clone();
            tokio::spawn(async move {
                for id in faqs {
                    if let Err(e) = db.count_faq_view(id).await {
                        tracing::warn!(error = %e, "could not count an FAQ view");
                    }
                }
            });
        }
        let context_json = json!({
            "intent": context.intent,
            "entities": context.entities,
            "confidence": context.confidence,
        });
        let reply = self
            .store_reply(
                conversation,
                &completion.text,
                completion.used_passages.clone(),
                tokens,
                Some(context_json.to_string()),
                started,
            )
            .await?;
        Ok(Turn {
            response_time_ms: reply.reply.response_time_ms,
            outcome: Outcome::Answered { reply },
            context,
            tokens_used: tokens,
        })
    }

    async fn handover_turn(
        &self,
        conversation: &Conversation,
        reason: HandoverReason,
        context: TurnContext,
        tokens_used: i64,
        started: Instant,
    ) -> Result<Turn, AssistantError> {
        let outcome = self.hand_over(conversation, reason, started).await?;
        Ok(Turn {
            outcome,
            context,
            response_time_ms: millis_since(started),
            tokens_used,
        })
    }

    fn request(
        &self,
        history: &[Message],
        text: &str,
        memories: &[crate::domain::knowledge::Memory],
        hits: &[Hit],
    ) -> CompletionRequest {
        let mut system = self.config.system_prompt.clone();
        if !memories.is_empty() {
            system.push_str("\n\nWhat we know about this customer:");
            for m in memories {
                let value = match &m.value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                system.push_str(&format!("\n- {}: {value}", m.key));
            }
        }
        let mut messages: Vec<plugins::ChatMessage> = history
            .iter()
            .filter(|m| {
                matches!(
                    m.sender_kind,
                    SenderKind::Customer | SenderKind::Assistant | SenderKind::Agent
                )
            })
            .map(|m| plugins::ChatMessage {
                role: if m.sender_kind == SenderKind::Customer {
                    plugins::Role::User
                } else {
                    plugins::Role::Assistant
                },
                content: m.content.clone(),
            })
            .collect();
        // The turn's message is last, whether or not the history has it.
        if messages
            .last()
            .is_none_or(|m| m.role != plugins::Role::User || m.content != text)
        {
            messages.push(plugins::ChatMessage {
                role: plugins::Role::User,
                content: text.to_owned(),
            });
        }
        CompletionRequest {
            system_prompt: Some(system),
            messages,
            passages: hits
                .iter()
                .map(|h| plugins::Passage {
                    id: passage_id(h),
                    title: h.entry.title.clone(),
                    content: h.entry.content.clone(),
                    relevance: h.relevance,
                })
                .collect(),
            temperature: None,
            max_tokens: None,
        }
    }

    async fn store_reply(
        &self,
        conversation: &Conversation,
        text: &str,
        sources: Vec<String>,
        tokens_used: i64,
        context: Option<String>,
        started: Instant,
    ) -> Result<Message, AssistantError> {
        let (message, _) = self
            .db
            .insert_message(&NewMessage {
                org_id: conversation.org_id,
                conversation_id: conversation.id,
                sender_kind: SenderKind::Assistant,
                sender_id: None,
                content: text.to_owned(),
                is_internal: false,
                idempotency_key: None,
                context,
                channel: conversation.outbound().0,
                delivery: conversation.outbound().1,
                reply: ReplyMeta {
                    sources,
                    tokens_used,
                    response_time_ms: millis_since(started),
                },
            })
            .await?;
        Ok(message)
    }

    /// Moves the conversation to "waiting for an agent" and tells the
    /// customer so; the entry point publishes the events.
    pub async fn hand_over(
        &self,
        conversation: &Conversation,
        reason: HandoverReason,
        started: Instant,
    ) -> Result<Outcome, AssistantError> {
        let requested = crate::events::Transition::Requested;
        let Some(updated) = self
            .db
            .transition_handling(conversation.id, requested.from(), requested.to(), None)
            .await?
        else {
            // A person has it already (or it is gone): nothing to hand over.
            return Ok(Outcome::Silent);
        };
        let (notice, _) = self
            .db
            .insert_message(&NewMessage {
                org_id: conversation.org_id,
                conversation_id: conversation.id,
                sender_kind: SenderKind::System,
                sender_id: None,
                content: self.config.handover_notice.clone(),
                is_internal: false,
                idempotency_key: None,
                context: None,
                channel: conversation.outbound().0,
                delivery: conversation.outbound().1,
                reply: ReplyMeta {
                    sources: Vec::new(),
                    tokens_used: 0,
                    response_time_ms: millis_since(started),
                },
            })
            .await?;
        Ok(Outcome::HandedOver {
            notice,
            reason,
            conversation: Box::new(updated),
        })
    }
}
