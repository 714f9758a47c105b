//! Calls into the `llm-provider` world, and the checks on what comes back.

use wasmtime::Store;

use super::bindings::llm::LlmProvider;
use super::bindings::llm_api::{
    Completion, CompletionRequest, Embeddings, LlmError, Transcription,
};
use super::host::HostState;
use super::{Failure, Plugin, PluginError, Pre};

/// Longest completion text accepted from a plugin.
const MAX_TEXT_CHARS: usize = 64 * 1024;
/// Longest embedding vector accepted.
const MAX_DIMENSION: u32 = 16_384;
/// Most entities, and the longest intent, accepted.
const MAX_ENTITIES: usize = 64;
const MAX_INTENT_CHARS: usize = 256;

impl Plugin {
    fn llm_pre(&self) -> Result<&super::bindings::llm::LlmProviderPre<HostState>, PluginError> {
        match &self.pre {
            Pre::Llm(pre) => Ok(pre),
            _ => Err(self.error(Failure::WrongWorld(self.config.world))),
        }
    }

    /// Answers the last message of `request` from its passages.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, PluginError> {
        let pre = self.llm_pre()?;
        let mut call = self.begin().await?;
        let store = &mut call.store;
        let outcome = tokio::time::timeout_at(call.deadline, async {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance
                .gateway_plugin_llm()
                .call_complete(&mut *store, request)
                .await
        })
        .await;
        let answer = self.finish("complete", &call, outcome)?;
        self.check(
            "complete",
            answer
                .map_err(Checked::from)
                .and_then(|c| checked_completion(c, request)),
        )
    }

    /// Embeds each text; the vectors come back in the same order.
    pub async fn embed(&self, texts: &[String]) -> Result<Embeddings, PluginError> {
        let pre = self.llm_pre()?;
        let mut call = self.begin().await?;
        let store = &mut call.store;
        let outcome = tokio::time::timeout_at(call.deadline, async {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance
                .gateway_plugin_llm()
                .call_embed(&mut *store, texts)
                .await
        })
        .await;
        let answer = self.finish("embed", &call, outcome)?;
        self.check(
            "embed",
            answer
                .map_err(Checked::from)
                .and_then(|e| checked_embeddings(e, texts.len())),
        )
    }

    /// Transcribes `audio` in `format`.
    pub async fn transcribe(
        &self,
        audio: &[u8],
        format: &str,
        language: Option<&str>,
    ) -> Result<Transcription, PluginError> {
        let pre = self.llm_pre()?;
        let mut call = self.begin().await?;
        let store = &mut call.store;
        let language = language.map(str::to_owned);
        let outcome = tokio::time::timeout_at(call.deadline, async {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance
                .gateway_plugin_llm()
                .call_transcribe(&mut *store, audio, format, language.as_deref())
                .await
        })
        .await;
        let answer = self.finish("transcribe", &call, outcome)?;
        self.check("transcribe", answer.map_err(Checked::from))
    }

    /// One instance kept for several calls: for batch work and benchmarks.
    /// Each call still has its own deadline; the session keeps its call slot.
    pub async fn llm_session(&self) -> Result<LlmSession<'_>, PluginError> {
        let pre = self.llm_pre()?;
        let mut call = self.begin().await?;
        let outcome =
            tokio::time::timeout_at(call.deadline, pre.instantiate_async(&mut call.store)).await;
        let instance = self.finish("instantiate", &call, outcome)?;
        Ok(LlmSession {
            plugin: self,
            call,
            instance,
        })
    }

    /// Maps the plugin's own error to a failure; checks nothing else.
    fn check<T>(&self, op: &'static str, answer: Result<T, Checked>) -> Result<T, PluginError> {
        match answer {
            Ok(v) => Ok(v),
            Err(Checked::Plugin(e)) => Err(self.failed(op, self.error(Failure::Provider(e)))),
            Err(Checked::Invalid(why)) => Err(self.failed(op, self.error(Failure::Invalid(why)))),
        }
    }
}

/// See [`Plugin::llm_session`].
pub struct LlmSession<'a> {
    plugin: &'a Plugin,
    call: super::Call<'a>,
    instance: LlmProvider,
}

impl LlmSession<'_> {
    pub async fn complete(
        &mut self,
        request: &CompletionRequest,
    ) -> Result<Completion, PluginError> {
        let deadline = tokio::time::Instant::now() + self.plugin.config.grants.timeout;
        self.call.deadline = deadline;
        let state = self.call.store.data_mut();
        state.deadline = deadline;
        state.limiter.exceeded = false;
        let store: &mut Store<HostState> = &mut self.call.store;
        let outcome = tokio::time::timeout_at(
            deadline,
            self.instance
                .gateway_plugin_llm()
                .call_complete(store, request),
        )
        .await;
        let answer = self.plugin.finish("complete", &self.call, outcome)?;
        self.plugin.check(
            "complete",
            answer
                .map_err(Checked::from)
                .and_then(|c| checked_completion(c, request)),
        )
    }
}

enum Checked {
    Plugin(LlmError),
    Invalid(String),
}

impl From<LlmError> for Checked {
    fn from(e: LlmError) -> Self {
        Checked::Plugin(e)
    }
}

fn checked_completion(c: Completion, request: &CompletionRequest) -> Result<Completion, Checked> {
    if !c.confidence.is_finite() || !(0.0..=1.0).contains(&c.confidence) {
        return Err(Checked::Invalid(format!(
            "confidence must be in [0, 1], got {}",
            c.confidence
        )));
    }
    if c.text.chars().count() > MAX_TEXT_CHARS {
        return Err(Checked::Invalid(format!(
            "the text is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    if c.used_passages.len() > request.passages.len() {
        return Err(Checked::Invalid(format!(
            "it cites {} passages, but only {} were retrieved",
            c.used_passages.len(),
            request.passages.len()
        )));
    }
    if c.entities.len() > MAX_ENTITIES
        || c.entities
            .iter()
            .any(|e| e.chars().count() > MAX_INTENT_CHARS)
        || c.intent
            .as_ref()
            .is_some_and(|i| i.chars().count() > MAX_INTENT_CHARS)
    {
        return Err(Checked::Invalid(format!(
            "at most {MAX_ENTITIES} entities and {MAX_INTENT_CHARS} characters per entity or intent"
        )));
    }
    let retrieved: std::collections::HashSet<&str> =
        request.passages.iter().map(|p| p.id.as_str()).collect();
    if let Some(unknown) = c
        .used_passages
        .iter()
        .find(|id| !retrieved.contains(id.as_str()))
    {
        return Err(Checked::Invalid(format!(
            "it cites passage {unknown:?}, which was not retrieved"
        )));
    }
    Ok(c)
}

fn checked_embeddings(e: Embeddings, count: usize) -> Result<Embeddings, Checked> {
    if e.vectors.len() != count {
        return Err(Checked::Invalid(format!(
            "{} vectors for {count} texts",
            e.vectors.len()
        )));
    }
    if e.dimension == 0 || e.dimension > MAX_DIMENSION {
        return Err(Checked::Invalid(format!(
            "dimension must be 1 to {MAX_DIMENSION}, got {}",
            e.dimension
        )));
    }
    for (i, v) in e.vectors.iter().enumerate() {
        if v.len() != e.dimension as usize {
            return Err(Checked::Invalid(format!(
                "vector {i} has {} values, not the announced {}",
                v.len(),
                e.dimension
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Checked::Invalid(format!(
                "vector {i} holds NaN or infinity"
            )));
        }
    }
    Ok(e)
}

/// The plugin's own error, for people.
pub fn describe(e: &LlmError) -> String {
    match e {
        LlmError::NotSupported => "the provider does not offer this function".into(),
        LlmError::InvalidRequest(m) => format!("the request was refused: {m}"),
        LlmError::Unauthorized(m) => format!("the remote service refused the credentials: {m}"),
        LlmError::RateLimited(Some(ms)) => {
            format!("the remote service is rate limiting; retry in {ms} ms")
        }
        LlmError::RateLimited(None) => "the remote service is rate limiting".into(),
        LlmError::Unavailable(m) => format!("the remote service is unavailable: {m}"),
        LlmError::Timeout => "the remote service did not answer in time".into(),
        LlmError::Other(m) => m.clone(),
    }
}
