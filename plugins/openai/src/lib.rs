//! `openai`: an LLM provider for any OpenAI-compatible server (OpenAI,
//! vLLM, llama.cpp, Ollama): `/v1/chat/completions`, `/v1/embeddings`,
//! `/v1/audio/transcriptions`.
//!
//! Settings (see [`wire::Settings`]): `base_url`, `model`,
//! `embedding_model`, `transcription_model`, `api_key_env` (the environment
//! variable with the key, which the entry must grant as a secret),
//! `timeout_ms` for the whole call including retries, `max_retries`,
//! `temperature`, `max_tokens`. 401/403 become `unauthorized`, 429
//! `rate-limited`, 5xx `unavailable`, an expired deadline `timeout`; 429,
//! 5xx and transport failures are retried with backoff while the deadline
//! allows.

pub mod wire;

use gateway_plugin_sdk::host::{clock, config, http, secrets};
use gateway_plugin_sdk::{
    Completion, CompletionRequest, Embeddings, LlmError, LlmProvider, Transcription,
};

use wire::Settings;

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct OpenAi;

impl LlmProvider for OpenAi {
    fn complete(request: CompletionRequest) -> Result<Completion, LlmError> {
        let settings = Settings::parse(&config::settings())?;
        let body = wire::chat_body(&settings, &request)
            .to_string()
            .into_bytes();
        let answer = post(&settings, "/v1/chat/completions", "application/json", body)?;
        wire::read_chat(&answer, &request)
    }

    fn embed(texts: Vec<String>) -> Result<Embeddings, LlmError> {
        let settings = Settings::parse(&config::settings())?;
        if texts.is_empty() {
            return Ok(Embeddings {
                dimension: 0,
                vectors: Vec::new(),
            });
        }
        let body = wire::embeddings_body(&settings, &texts)
            .to_string()
            .into_bytes();
        let answer = post(&settings, "/v1/embeddings", "application/json", body)?;
        wire::read_embeddings(&answer, texts.len())
    }

    fn transcribe(
        audio: Vec<u8>,
        format: String,
        language: Option<String>,
    ) -> Result<Transcription, LlmError> {
        let settings = Settings::parse(&config::settings())?;
        let boundary = format!("gateway-{:x}", clock::now_ms());
        let (body, content_type) =
            wire::transcription_body(&settings, &audio, &format, language.as_deref(), &boundary);
        let answer = post(&settings, "/v1/audio/transcriptions", &content_type, body)?;
        wire::read_transcription(&answer, language)
    }
}

#[cfg(target_arch = "wasm32")]
gateway_plugin_sdk::export_llm_provider!(OpenAi);

/// POSTs `body` to `path`, retrying what is worth retrying until the
/// settings' deadline; returns the body of the 2xx answer.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn post(
    settings: &Settings,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, LlmError> {
    let mut headers = vec![http::Header {
        name: "content-type".into(),
        value: content_type.into(),
    }];
    if !settings.api_key_env.is_empty() {
        let key = secrets::get(&settings.api_key_env).map_err(|e| match e {
            secrets::SecretError::Denied(name) => {
                LlmError::Unauthorized(format!("the secret {name} is not granted to this plugin"))
            }
            secrets::SecretError::Missing(name) => {
                LlmError::Unauthorized(format!("{name} is not set"))
            }
        })?;
        headers.push(http::Header {
            name: "authorization".into(),
            value: format!("Bearer {key}"),
        });
    }
    let deadline = clock::now_ms() + u64::from(settings.timeout_ms);
    let mut attempt = 0;
    loop {
        let now = clock::now_ms();
        if now >= deadline {
            return Err(LlmError::Timeout);
        }
        let request = http::Request {
            method: http::Method::Post,
            url: settings.url(path),
            headers: headers.clone(),
            body: body.clone(),
            timeout_ms: u32::try_from(deadline - now).unwrap_or(u32::MAX),
        };
        let error = match http::send(&request) {
            Ok(response) if (200..300).contains(&response.status) => return Ok(response.body),
            Ok(response) => {
                let retry_after = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                    .and_then(|h| h.value.trim().parse::<u32>().ok())
                    .map(|s| s.saturating_mul(1000));
                wire::read_error(response.status, &response.body, retry_after)
            }
            Err(http::HttpError::Timeout) => LlmError::Timeout,
            Err(http::HttpError::Transport(m)) => LlmError::Unavailable(m),
            Err(http::HttpError::Denied(m)) => {
                LlmError::Unauthorized(format!("outbound HTTP refused: {m}"))
            }
            Err(http::HttpError::InvalidRequest(m)) => LlmError::InvalidRequest(m),
            Err(http::HttpError::TooLarge) => LlmError::Other("the answer was too large".into()),
        };
        let wait = wire::backoff_ms(attempt, &error);
        if !wire::retryable(&error)
            || attempt >= settings.max_retries
            || clock::now_ms() + wait >= deadline
        {
            return Err(error);
        }
        std::thread::sleep(std::time::Duration::from_millis(wait));
        attempt += 1;
    }
}
