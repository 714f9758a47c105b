//! `[assistant]`: which plugins answer, embed and transcribe, when the
//! assistant hands over, and the rules that name intents.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, PluginConfig, World};

#[derive(Debug, Clone, PartialEq)]
pub struct AssistantConfig {
    /// The `llm-provider` plugin that writes answers; `None` when no
    /// provider is configured (the assistant then answers 503).
    pub provider: Option<String>,
    /// The plugin that embeds passages and questions; `None`: BM25 only.
    pub embeddings: Option<String>,
    /// The plugin that transcribes audio (the provider when unset).
    pub transcription: Option<String>,
    /// Below this confidence the assistant hands over to a person.
    pub handover_confidence: f32,
    /// Passages below this relevance are not retrieved at all.
    pub min_relevance: f32,
    /// When the runner-up document is this close to the best in relevance,
    /// retrieval is ambiguous and a person takes over.
    pub ambiguity_margin: f32,
    /// Passages given to the provider per answer.
    pub passages: usize,
    /// Earlier messages given to the provider.
    pub history_messages: usize,
    /// Lifetime of short-term memories.
    pub short_term_ttl: Duration,
    /// Phrases with which a customer asks for a person (matched in lower case).
    pub handover_phrases: Vec<String>,
    /// Instructions given to the provider before what it knows of the customer.
    pub system_prompt: String,
    /// What the customer is told when a person takes over.
    pub handover_notice: String,
    /// What the customer is told when a person has the conversation and
    /// their message was passed on (not stored: 002 and 003 answer it).
    pub passed_on_notice: String,
    /// Keyword rules naming the customer's intent when the provider does not.
    pub intents: Vec<IntentRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentRule {
    pub name: String,
    /// Words (matched as whole words, lower case) that signal the intent.
    pub keywords: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAssistant {
    /// Unset: `kb-answer` when configured, else the first llm-provider.
    pub provider: Option<String>,
    /// Unset: `kb-answer` when configured; empty: no vectors.
    pub embeddings: Option<String>,
    pub transcription: String,
    pub handover_confidence: f32,
    pub min_relevance: f32,
    pub ambiguity_margin: f32,
    pub passages: usize,
    pub history_messages: usize,
    pub short_term_ttl_secs: u64,
    pub handover_phrases: Vec<String>,
    pub system_prompt: String,
    pub handover_notice: String,
    pub passed_on_notice: String,
    pub intents: Option<Vec<IntentRule>>,
}

pub const DEFAULT_HANDOVER_NOTICE: &str = "Connecting you with a human agent...";
pub const DEFAULT_PASSED_ON_NOTICE: &str =
    "Thanks, your message has been passed on to our team; an agent will reply here.";

pub const DEFAULT_SYSTEM_PROMPT: &str = "You are the customer support assistant of this company. Answer only from the passages provided, cite them, and say so when they do not answer the question.";

impl Default for RawAssistant {
    fn default() -> Self {
        Self {
            provider: None,
            embeddings: None,
            transcription: String::new(),
            handover_confidence: 0.3,
            min_relevance: 0.45,
            ambiguity_margin: 0.04,
            passages: 5,
            history_messages: 10,
            short_term_ttl_secs: 24 * 3600,
            handover_phrases: [
                "human",
                "real person",
                "a person",
                "an agent",
                "live agent",
                "representative",
                "speak to someone",
                "talk to someone",
                "customer service agent",
                "operator",
            ]
            .map(str::to_owned)
            .to_vec(),
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            handover_notice: DEFAULT_HANDOVER_NOTICE.into(),
            passed_on_notice: DEFAULT_PASSED_ON_NOTICE.into(),
            intents: None,
        }
    }
}

/// The intents named when the config lists none.
pub fn default_intents() -> Vec<IntentRule> {
    let rule = |name: &str, words: &[&str]| IntentRule {
        name: name.into(),
        keywords: words.iter().map(|w| (*w).to_owned()).collect(),
    };
    vec![
        rule("greeting", &["hello", "hi", "hey", "morning", "evening"]),
        rule(
            "order_status",
            &[
                "order", "orders", "tracking", "track", "parcel", "package", "delivery", "shipped",
                "arrived",
            ],
        ),
        rule(
            "returns",
            &[
                "return",
                "returns",
                "refund",
                "refunds",
                "exchange",
                "money back",
            ],
        ),
        rule(
            "billing",
            &[
                "invoice",
                "charge",
                "charged",
                "payment",
                "pay",
                "billing",
                "card",
                "subscription",
            ],
        ),
        rule(
            "account",
            &[
                "account", "password", "login", "log in", "sign in", "email", "username",
            ],
        ),
        rule(
            "technical",
            &[
                "error",
                "broken",
                "bug",
                "crash",
                "not working",
                "offline",
                "reset",
                "setup",
                "install",
                "pair",
            ],
        ),
        rule("handover", &["human", "agent", "person", "representative"]),
    ]
}

impl RawAssistant {
    pub(super) fn validate(
        self,
        source: &str,
        plugins: &[PluginConfig],
    ) -> Result<AssistantConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::new(source, Some(key), message);
        let llm = |key: &str, id: &str| -> Result<(), ConfigError> {
            match plugins.iter().find(|p| p.id == id) {
                Some(p) if p.world == World::LlmProvider => Ok(()),
                Some(_) => Err(invalid(
                    key,
                    format!("plugin {id:?} does not implement the llm-provider world"),
                )),
                None => Err(invalid(
                    key,
                    format!(
                        "no [[plugins]] entry has id {id:?} (configured: {})",
                        plugins
                            .iter()
                            .map(|p| p.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        };
        let shipped = plugins
            .iter()
            .any(|p| p.id == "kb-answer" && p.world == World::LlmProvider);
        let provider = match self.provider {
            Some(id) => {
                llm("assistant.provider", &id)?;
                Some(id)
            }
            None if shipped => Some("kb-answer".to_owned()),
            None => plugins
                .iter()
                .find(|p| p.world == World::LlmProvider)
                .map(|p| p.id.clone()),
        };
        let embeddings = match self.embeddings {
            Some(id) if id.is_empty() => None,
            Some(id) => {
                llm("assistant.embeddings", &id)?;
                Some(id)
            }
            None => shipped.then(|| "kb-answer".to_owned()),
        };
        if !self.transcription.is_empty() {
            llm("assistant.transcription", &self.transcription)?;
        }
        for (key, value) in [
            ("assistant.handover_confidence", self.handover_confidence),
            ("assistant.min_relevance", self.min_relevance),
            ("assistant.ambiguity_margin", self.ambiguity_margin),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(key, format!("expected 0 to 1, got {value}")));
            }
        }
        if !(1..=20).contains(&self.passages) {
            return Err(invalid(
                "assistant.passages",
                format!("expected 1 to 20, got {}", self.passages),
            ));
        }
        if self.history_messages > 100 {
            return Err(invalid(
                "assistant.history_messages",
                format!("expected at most 100, got {}", self.history_messages),
            ));
        }
        if self.short_term_ttl_secs == 0 {
            return Err(invalid(
                "assistant.short_term_ttl_secs",
                "expected a number greater than 0".into(),
            ));
        }
        for (key, text) in [
            ("assistant.handover_notice", &self.handover_notice),
            ("assistant.passed_on_notice", &self.passed_on_notice),
        ] {
            if text.trim().is_empty() || text.chars().count() > 1000 {
                return Err(invalid(key, "expected 1 to 1000 characters".into()));
            }
        }
        let intents = self.intents.unwrap_or_else(default_intents);
        for (i, rule) in intents.iter().enumerate() {
            if rule.name.trim().is_empty() || rule.keywords.iter().all(|k| k.trim().is_empty()) {
                return Err(invalid(
                    &format!("assistant.intents[{i}]"),
                    "an intent needs a name and at least one keyword".into(),
                ));
            }
        }
        Ok(AssistantConfig {
            transcription: if self.transcription.is_empty() {
                provider.clone()
            } else {
                Some(self.transcription)
            },
            provider,
            embeddings,
            handover_confidence: self.handover_confidence,
            min_relevance: self.min_relevance,
            ambiguity_margin: self.ambiguity_margin,
            passages: self.passages,
            history_messages: self.history_messages,
            short_term_ttl: Duration::from_secs(self.short_term_ttl_secs),
            handover_phrases: self
                .handover_phrases
                .into_iter()
                .map(|p| p.trim().to_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
            system_prompt: self.system_prompt,
            handover_notice: self.handover_notice,
            passed_on_notice: self.passed_on_notice,
            intents: intents
                .into_iter()
                .map(|r| IntentRule {
                    name: r.name,
                    keywords: r.keywords.iter().map(|k| k.trim().to_lowercase()).collect(),
                })
                .collect(),
        })
    }
}
