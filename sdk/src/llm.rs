//! The `llm-provider` world: chat completion, embeddings, transcription.

pub use crate::__llm::exports::gateway::plugin::llm::{
    ChatMessage, Completion, CompletionRequest, Embeddings, LlmError, Passage, Role, Transcription,
    Usage,
};

/// An LLM provider. Every method defaults to [`LlmError::NotSupported`].
pub trait LlmProvider {
    /// Answers the last message of `request`, grounded in its passages.
    fn complete(request: CompletionRequest) -> Result<Completion, LlmError> {
        let _ = request;
        Err(LlmError::NotSupported)
    }

    /// Embeds each text; vectors come back in the same order.
    fn embed(texts: Vec<String>) -> Result<Embeddings, LlmError> {
        let _ = texts;
        Err(LlmError::NotSupported)
    }

    /// Transcribes `audio` in `format` (`mp3`, `ogg`, `wav`...).
    fn transcribe(
        audio: Vec<u8>,
        format: String,
        language: Option<String>,
    ) -> Result<Transcription, LlmError> {
        let _ = (audio, format, language);
        Err(LlmError::NotSupported)
    }
}

/// Exports `$ty` (an [`LlmProvider`]) as the component's `llm` interface.
#[macro_export]
macro_rules! export_llm_provider {
    ($ty:ty) => {
        const _: () = {
            struct __Guest;

            impl $crate::__llm::exports::gateway::plugin::llm::Guest for __Guest {
                fn complete(
                    request: $crate::CompletionRequest,
                ) -> ::core::result::Result<$crate::Completion, $crate::LlmError> {
                    <$ty as $crate::LlmProvider>::complete(request)
                }

                fn embed(
                    texts: ::std::vec::Vec<::std::string::String>,
                ) -> ::core::result::Result<$crate::Embeddings, $crate::LlmError> {
                    <$ty as $crate::LlmProvider>::embed(texts)
                }

                fn transcribe(
                    audio: ::std::vec::Vec<u8>,
                    format: ::std::string::String,
                    language: ::core::option::Option<::std::string::String>,
                ) -> ::core::result::Result<$crate::Transcription, $crate::LlmError> {
                    <$ty as $crate::LlmProvider>::transcribe(audio, format, language)
                }
            }

    $crate::__llm::__export_llm_provider!(__Guest with_types_in $crate::__llm);
        };
    };
}
