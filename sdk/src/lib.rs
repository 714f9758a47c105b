//! The SDK for gateway plugins: WebAssembly components built against the
//! WIT package `gateway:plugin@0.1.0` (`wit/` at the repository root).
//!
//! This version covers the `llm-provider` world. Implement [`LlmProvider`]
//! (every method defaults to "not supported") and export the type:
//!
//! ```ignore
//! use gateway_plugin_sdk::{Completion, CompletionRequest, LlmError, LlmProvider};
//!
//! struct Echo;
//!
//! impl LlmProvider for Echo {
//!     fn complete(request: CompletionRequest) -> Result<Completion, LlmError> {
//!         // ...
//!     }
//! }
//!
//! gateway_plugin_sdk::export_llm_provider!(Echo);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm`
//! file is the component. The generated bindings stay private: what a plugin
//! needs is re-exported here, so the SDK can follow new WIT versions without
//! breaking plugins.

#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        world: "llm-provider",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_llm_provider",
        default_bindings_module: "gateway_plugin_sdk::__bindings",
    });
}

pub use __bindings::exports::gateway::plugin::llm::{
    ChatMessage, Completion, CompletionRequest, Embeddings, LlmError, Passage, Role, Transcription,
    Usage,
};

/// The host's capabilities, each checked against the plugin's grants.
pub mod host {
    pub use crate::__bindings::gateway::plugin::{clock, config, http, kv, log, secrets};
}

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

            impl $crate::__bindings::exports::gateway::plugin::llm::Guest for __Guest {
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

    $crate::__bindings::__export_llm_provider!(__Guest with_types_in $crate::__bindings);
        };
    };
}
