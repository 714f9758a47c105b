//! The SDK for gateway plugins: WebAssembly components built against the
//! WIT package `gateway:plugin@0.2.0` (`wit/` at the repository root).
//!
//! Enable the feature of the world your plugin implements (`llm-provider`,
//! the default; `channel`; `webhook`), implement its trait (every method
//! defaults to "not supported") and export your type with its macro:
//!
//! | world | feature | trait | macro | types |
//! |---|---|---|---|---|
//! | `llm-provider` | `llm-provider` | [`LlmProvider`] | [`export_llm_provider!`] | crate root |
//! | `channel` | `channel` | `Channel` | `export_channel!` | `channel` |
//! | `webhook` | `webhook` | `Webhook` | `export_webhook!` | `webhook` |
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
//! The host's capabilities are in [`host`]; [`settings`], [`sign`] and
//! [`fetch`] are helpers over them. Build with `cargo build --release
//! --target wasm32-wasip2`; the `.wasm` file is the component. The
//! generated bindings stay private, so the SDK can follow new WIT versions
//! without breaking plugins. Implement one world per plugin crate.

// The host's imports are generated once, and every world's bindings reuse
// them (`with`): a workspace whose plugins implement different worlds
// unifies this crate's features, and the worlds must then agree on one
// `Header`, one `http::send`. Imports a plugin does not call are not
// imported by its component.
#[doc(hidden)]
pub mod __imports {
    wit_bindgen::generate!({
        inline: "
            package gateway:sdk;
            world imports {
                import gateway:plugin/config@0.2.0;
                import gateway:plugin/http@0.2.0;
                import gateway:plugin/secrets@0.2.0;
                import gateway:plugin/kv@0.2.0;
                import gateway:plugin/log@0.2.0;
                import gateway:plugin/clock@0.2.0;
                import gateway:plugin/crypto@0.2.0;
                import gateway:plugin/mail@0.2.0;
            }
        ",
        path: "../wit",
        world: "gateway:sdk/imports",
        default_bindings_module: "gateway_plugin_sdk::__imports",
        generate_all,
    });
}

#[cfg(feature = "llm-provider")]
#[doc(hidden)]
pub mod __llm {
    wit_bindgen::generate!({
        world: "gateway:plugin/llm-provider",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_llm_provider",
        default_bindings_module: "gateway_plugin_sdk::__llm",
        with: {
            "gateway:plugin/types@0.2.0": crate::__imports::gateway::plugin::types,
            "gateway:plugin/config@0.2.0": crate::__imports::gateway::plugin::config,
            "gateway:plugin/http@0.2.0": crate::__imports::gateway::plugin::http,
            "gateway:plugin/secrets@0.2.0": crate::__imports::gateway::plugin::secrets,
            "gateway:plugin/kv@0.2.0": crate::__imports::gateway::plugin::kv,
            "gateway:plugin/log@0.2.0": crate::__imports::gateway::plugin::log,
            "gateway:plugin/clock@0.2.0": crate::__imports::gateway::plugin::clock,
            "gateway:plugin/crypto@0.2.0": crate::__imports::gateway::plugin::crypto,
        },
    });
}

#[cfg(feature = "channel")]
#[doc(hidden)]
pub mod __channel {
    wit_bindgen::generate!({
        world: "gateway:plugin/channel",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_channel",
        default_bindings_module: "gateway_plugin_sdk::__channel",
        with: {
            "gateway:plugin/types@0.2.0": crate::__imports::gateway::plugin::types,
            "gateway:plugin/config@0.2.0": crate::__imports::gateway::plugin::config,
            "gateway:plugin/http@0.2.0": crate::__imports::gateway::plugin::http,
            "gateway:plugin/secrets@0.2.0": crate::__imports::gateway::plugin::secrets,
            "gateway:plugin/kv@0.2.0": crate::__imports::gateway::plugin::kv,
            "gateway:plugin/log@0.2.0": crate::__imports::gateway::plugin::log,
            "gateway:plugin/clock@0.2.0": crate::__imports::gateway::plugin::clock,
            "gateway:plugin/crypto@0.2.0": crate::__imports::gateway::plugin::crypto,
            "gateway:plugin/mail@0.2.0": crate::__imports::gateway::plugin::mail,
        },
    });
}

#[cfg(feature = "webhook")]
#[doc(hidden)]
pub mod __webhook {
    wit_bindgen::generate!({
        world: "gateway:plugin/webhook",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_webhook",
        default_bindings_module: "gateway_plugin_sdk::__webhook",
        with: {
            "gateway:plugin/types@0.2.0": crate::__imports::gateway::plugin::types,
            "gateway:plugin/config@0.2.0": crate::__imports::gateway::plugin::config,
            "gateway:plugin/http@0.2.0": crate::__imports::gateway::plugin::http,
            "gateway:plugin/secrets@0.2.0": crate::__imports::gateway::plugin::secrets,
            "gateway:plugin/kv@0.2.0": crate::__imports::gateway::plugin::kv,
            "gateway:plugin/log@0.2.0": crate::__imports::gateway::plugin::log,
            "gateway:plugin/clock@0.2.0": crate::__imports::gateway::plugin::clock,
            "gateway:plugin/crypto@0.2.0": crate::__imports::gateway::plugin::crypto,
        },
    });
}

/// The host's capabilities, each checked against the entry's grants. The
/// mail transport is for the channel world (and `grants.mail`) only.
pub mod host {
    pub use crate::__imports::gateway::plugin::{
        clock, config, crypto, http, kv, log, mail, secrets, types,
    };
}

mod helpers;
pub use helpers::{fetch, settings, sign};

#[cfg(feature = "llm-provider")]
mod llm;
#[cfg(feature = "llm-provider")]
pub use llm::{
    ChatMessage, Completion, CompletionRequest, Embeddings, LlmError, LlmProvider, Passage, Role,
    Transcription, Usage,
};

#[cfg(feature = "channel")]
pub mod channel;
#[cfg(feature = "channel")]
pub use channel::Channel;

#[cfg(feature = "webhook")]
pub mod webhook;
#[cfg(feature = "webhook")]
pub use webhook::Webhook;

#[cfg(not(any(feature = "llm-provider", feature = "channel", feature = "webhook")))]
compile_error!(
    "enable the feature of the world this plugin implements: llm-provider, channel or webhook"
);
