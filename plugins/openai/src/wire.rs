//! The OpenAI wire format: building request bodies and reading answers,
//! including error bodies. Pure functions, tested natively.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/embeddings`,
//! `POST /v1/audio/transcriptions` (multipart). Errors come as
//! `{"error": {"message", "type", "code"}}` with the HTTP status saying
//! which kind.

use gateway_plugin_sdk::{
    Completion, CompletionRequest, Embeddings, LlmError, Role, Transcription, Usage,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The entry's settings (`[[plugins]] settings`), with defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Server root, with or without a trailing `/v1`.
    pub base_url: String,
    pub model: String,
    pub embedding_model: String,
    pub transcription_model: String,
    /// The environment variable holding the API key (granted as a secret);
    /// empty for servers without authentication.
    pub api_key_env: String,
    /// The whole call, retries included.
    pub timeout_ms: u32,
    /// Retries after 429, 5xx or a transport failure.
    pub max_retries: u32,
    pub temperature: f32,
    pub max_tokens: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com".into(),
            model: "gpt-4o-mini".into(),
            embedding_model: "text-embedding-3-small".into(),
            transcription_model: "whisper-1".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_ms: 30_000,
            max_retries: 2,
            temperature: 0.2,
            max_tokens: 512,
        }
    }
}

impl Settings {
    pub fn parse(json: &str) -> Result<Settings, LlmError> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        serde_json::from_str(json)
            .map_err(|e| LlmError::InvalidRequest(format!("openai settings: {e}")))
    }

    /// `base_url` joined with an API path such as `/v1/embeddings`.
    pub fn url(&self, path: &str) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}{path}")
    }
}

/// Said by the model when the context does not answer the question.
pub const HANDOVER: &str = "HANDOVER";

const DEFAULT_SYSTEM: &str = "You are a customer-support assistant. Answer only from the context passages. \
     Cite the passages you use by their id in square brackets, like [kb-12]. Be brief and friendly.";

/// The body of `POST /v1/chat/completions` for `request`.
pub fn chat_body(settings: &Settings, request: &CompletionRequest) -> Value {
    let mut system = request
        .system_prompt
        .clone()
        .unwrap_or_else(|| DEFAULT_SYSTEM.to_owned());
    system.push_str(&format!(
        "\n\nIf the context does not contain the answer, reply with exactly {HANDOVER} and nothing else."
    ));
    if request.passages.is_empty() {
        system.push_str("\n\nContext: (none)");
    } else {
        system.push_str("\n\nContext:");
        for p in &request.passages {
            system.push_str(&format!("\n\n[{}] {}\n{}", p.id, p.title, p.content));
        }
    }
    let mut messages = vec![json!({"role": "system", "content": system})];
    for m in &request.messages {
        let role = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        messages.push(json!({"role": role, "content": m.content}));
    }
    json!({
        "model": settings.model,
        "messages": messages,
        "temperature": request.temperature.unwrap_or(settings.temperature),
        "max_tokens": request.max_tokens.unwrap_or(settings.max_tokens),
    })
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct TokenUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// Reads a chat completion. The passages the answer cites become
/// `used-passages`; an answer that cites none is less certain, and the
/// handover word means the model found no answer in the context.
pub fn read_chat(body: &[u8], request: &CompletionRequest) -> Result<Completion, LlmError> {
    let parsed: ChatResponse = serde_json::from_slice(body)
        .map_err(|e| LlmError::Other(format!("unexpected chat completion body: {e}")))?;
    let text = parsed
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message.content)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let usage = parsed.usage.unwrap_or_default();
    let usage = Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
    };
    if text.is_empty() || text.trim_matches(|c: char| !c.is_alphanumeric()) == HANDOVER {
        return Ok(Completion {
            text: String::new(),
            used_passages: Vec::new(),
            usage,
            confidence: 0.0,
            intent: None,
            entities: Vec::new(),
        });
    }
    let used: Vec<String> = request
        .passages
        .iter()
        .filter(|p| text.contains(&format!("[{}]", p.id)))
        .map(|p| p.id.clone())
        .collect();
    let confidence = if request.passages.is_empty() {
        0.0
    } else if used.is_empty() {
        0.4
    } else {
        0.85
    };
    Ok(Completion {
        text,
        used_passages: used,
        usage,
        confidence,
        intent: None,
        entities: Vec::new(),
    })
}

/// The body of `POST /v1/embeddings`.
pub fn embeddings_body(settings: &Settings, texts: &[String]) -> Value {
    json!({"model": settings.embedding_model, "input": texts})
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    #[serde(default)]
    index: usize,
}

/// Reads embeddings, in input order whatever order the server used.
pub fn read_embeddings(body: &[u8], expected: usize) -> Result<Embeddings, LlmError> {
    let mut parsed: EmbeddingsResponse = serde_json::from_slice(body)
        .map_err(|e| LlmError::Other(format!("unexpected embeddings body: {e}")))?;
    if parsed.data.len() != expected {
        return Err(LlmError::Other(format!(
            "asked for {expected} embeddings, got {}",
            parsed.data.len()
        )));
    }
    parsed.data.sort_by_key(|d| d.index);
    let dimension = parsed.data.first().map_or(0, |d| d.embedding.len());
    if parsed.data.iter().any(|d| d.embedding.len() != dimension) {
        return Err(LlmError::Other("embeddings of different dimensions".into()));
    }
    Ok(Embeddings {
        dimension: u32::try_from(dimension).unwrap_or(u32::MAX),
        vectors: parsed.data.into_iter().map(|d| d.embedding).collect(),
    })
}

/// The multipart body of `POST /v1/audio/transcriptions`, and its
/// content type.
pub fn transcription_body(
    settings: &Settings,
    audio: &[u8],
    format: &str,
    language: Option<&str>,
    boundary: &str,
) -> (Vec<u8>, String) {
    let mut body = Vec::with_capacity(audio.len() + 512);
    let mut field = |name: &str, value: &str| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    };
    field("model", &settings.transcription_model);
    if let Some(language) = language {
        field("language", language);
    }
    let extension: String = format.chars().filter(char::is_ascii_alphanumeric).collect();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"audio.{extension}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// Reads a transcription (`{"text": ...}`).
pub fn read_transcription(
    body: &[u8],
    language: Option<String>,
) -> Result<Transcription, LlmError> {
    #[derive(Deserialize)]
    struct T {
        text: String,
        #[serde(default)]
        language: Option<String>,
    }
    let t: T = serde_json::from_slice(body)
        .map_err(|e| LlmError::Other(format!("unexpected transcription body: {e}")))?;
    Ok(Transcription {
        text: t.text,
        language: t.language.or(language),
    })
}

/// Maps an error answer to an [`LlmError`], with the server's own message.
/// `retry_after_ms` comes from a `Retry-After` header, when sent.
pub fn read_error(status: u16, body: &[u8], retry_after_ms: Option<u32>) -> LlmError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let message = format!("HTTP {status}: {message}");
    match status {
        401 | 403 => LlmError::Unauthorized(message),
        429 => LlmError::RateLimited(retry_after_ms),
        400 | 404 | 413 | 415 | 422 => LlmError::InvalidRequest(message),
        500..=599 => LlmError::Unavailable(message),
        _ => LlmError::Other(message),
    }
}

/// Whether an error is worth another try.
pub fn retryable(error: &LlmError) -> bool {
    matches!(
        error,
        LlmError::RateLimited(_) | LlmError::Unavailable(_) | LlmError::Timeout
    )
}

/// How long to wait before retry `attempt` (0-based): the server's
/// `Retry-After` when given, else 250 ms doubling.
pub fn backoff_ms(attempt: u32, error: &LlmError) -> u64 {
    match error {
        LlmError::RateLimited(Some(ms)) => u64::from(*ms),
        _ => 250u64 << attempt.min(6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_plugin_sdk::{ChatMessage, Passage};

    fn request(passages: Vec<Passage>) -> CompletionRequest {
        CompletionRequest {
            system_prompt: None,
            messages: vec![ChatMessage {
                role: Role::User,
                content: "How do I return an item?".into(),
            }],
            passages,
            temperature: None,
            max_tokens: Some(100),
        }
    }

    fn returns() -> Passage {
        Passage {
            id: "kb-7".into(),
            title: "Returns".into(),
            content: "Use the returns portal.".into(),
            relevance: 0.9,
        }
    }

    #[test]
    fn settings_defaults_and_urls() {
        let s = Settings::parse("").expect("defaults");
        assert_eq!(s, Settings::default());
        assert_eq!(
            s.url("/v1/chat/completions"),
            "https://api.openai.com/v1/chat/completions"
        );
        let s = Settings::parse(r#"{"base_url": "http://127.0.0.1:8081/v1/", "model": "llama"}"#)
            .expect("parse");
        assert_eq!(
            s.url("/v1/embeddings"),
            "http://127.0.0.1:8081/v1/embeddings"
        );
        assert_eq!(s.model, "llama");
        assert!(matches!(
            Settings::parse(r#"{"modle": "x"}"#),
            Err(LlmError::InvalidRequest(_))
        ));
    }

    #[test]
    fn chat_body_carries_context_and_history() {
        let body = chat_body(&Settings::default(), &request(vec![returns()]));
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["max_tokens"], 100);
        let system = body["messages"][0]["content"].as_str().expect("system");
        assert!(
            system.contains("[kb-7] Returns\nUse the returns portal."),
            "{system}"
        );
        assert!(system.contains(HANDOVER));
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "How do I return an item?"})
        );
    }

    #[test]
    fn chat_answers_name_their_sources() {
        let body = br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Use the returns portal [kb-7]."},"finish_reason":"stop"}],"usage":{"prompt_tokens":52,"completion_tokens":9,"total_tokens":61}}"#;
        let c = read_chat(body, &request(vec![returns()])).expect("completion");
        assert_eq!(c.used_passages, ["kb-7"]);
        assert_eq!((c.usage.prompt_tokens, c.usage.completion_tokens), (52, 9));
        assert!(c.confidence > 0.8);

        let body = br#"{"choices":[{"message":{"role":"assistant","content":"HANDOVER"}}]}"#;
        let c = read_chat(body, &request(vec![returns()])).expect("completion");
        assert_eq!((c.confidence, c.text.as_str()), (0.0, ""));
    }

    #[test]
    fn embeddings_come_back_in_input_order() {
        let body = br#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.0,1.0]},{"object":"embedding","index":0,"embedding":[1.0,0.0]}],"model":"m","usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let e = read_embeddings(body, 2).expect("embeddings");
        assert_eq!(e.dimension, 2);
        assert_eq!(e.vectors, [vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!(read_embeddings(body, 3).is_err());
    }

    #[test]
    fn transcription_is_multipart() {
        let (body, content_type) =
            transcription_body(&Settings::default(), b"ID3audio", "mp3", Some("en"), "XyZ");
        let text = String::from_utf8_lossy(&body);
        assert_eq!(content_type, "multipart/form-data; boundary=XyZ");
        assert!(
            text.contains("name=\"model\"\r\n\r\nwhisper-1\r\n"),
            "{text}"
        );
        assert!(text.contains("name=\"language\"\r\n\r\nen\r\n"));
        assert!(text.contains("filename=\"audio.mp3\""));
        assert!(text.ends_with("ID3audio\r\n--XyZ--\r\n"));
        let t = read_transcription(br#"{"text":"Where is my order?"}"#, Some("en".into()))
            .expect("text");
        assert_eq!(
            (t.text.as_str(), t.language.as_deref()),
            ("Where is my order?", Some("en"))
        );
    }

    #[test]
    fn error_bodies_map_to_clear_errors() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-...","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        match read_error(401, body, None) {
            LlmError::Unauthorized(m) => assert!(m.contains("Incorrect API key"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_error(429, b"{}", Some(1500)),
            LlmError::RateLimited(Some(1500))
        ));
        assert!(
            matches!(read_error(503, b"upstream down", None), LlmError::Unavailable(m) if m.contains("upstream down"))
        );
        assert!(matches!(
            read_error(400, b"{}", None),
            LlmError::InvalidRequest(_)
        ));
        assert!(retryable(&LlmError::Unavailable(String::new())));
        assert!(!retryable(&LlmError::Unauthorized(String::new())));
        assert_eq!(backoff_ms(0, &LlmError::Timeout), 250);
        assert_eq!(backoff_ms(2, &LlmError::Timeout), 1000);
        assert_eq!(backoff_ms(5, &LlmError::RateLimited(Some(40))), 40);
    }
}
