//! The plugin of the SDK walkthrough (`sdk/README.md`): it greets the
//! customer with the `greeting` from its settings and repeats the message,
//! with confidence 0 so that the gateway hands over to a human.

use gateway_plugin_sdk::{Completion, CompletionRequest, LlmError, LlmProvider, Usage};

#[derive(serde::Deserialize)]
#[serde(default)]
struct Settings {
    greeting: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            greeting: "Hello".into(),
        }
    }
}

struct Hello;

impl LlmProvider for Hello {
    fn complete(request: CompletionRequest) -> Result<Completion, LlmError> {
        let settings: Settings =
            gateway_plugin_sdk::settings().map_err(LlmError::InvalidRequest)?;
        let last = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        Ok(Completion {
            text: format!("{}! You said: {last}", settings.greeting),
            used_passages: Vec::new(),
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
            },
            // Low confidence: the gateway hands the conversation to a human.
            confidence: 0.0,
            intent: None,
            entities: Vec::new(),
        })
    }
    // embed and transcribe answer LlmError::NotSupported by default.
}

gateway_plugin_sdk::export_llm_provider!(Hello);
