//! Host-side bindings of `wit/`, one module per world. The import interfaces
//! are generated once (with the `llm-provider` world) and shared by the
//! others, so one set of host implementations serves every world.
//!
//! Every import is `async` (HTTP and the key-value store wait on I/O) and
//! `trappable` (the host can end a call that abuses an import).

pub mod llm {
    wasmtime::component::bindgen!({
        world: "llm-provider",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub mod channel {
    wasmtime::component::bindgen!({
        world: "channel",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "gateway:plugin/types": super::llm::gateway::plugin::types,
            "gateway:plugin/config": super::llm::gateway::plugin::config,
            "gateway:plugin/http": super::llm::gateway::plugin::http,
            "gateway:plugin/secrets": super::llm::gateway::plugin::secrets,
            "gateway:plugin/kv": super::llm::gateway::plugin::kv,
            "gateway:plugin/log": super::llm::gateway::plugin::log,
            "gateway:plugin/clock": super::llm::gateway::plugin::clock,
            "gateway:plugin/crypto": super::llm::gateway::plugin::crypto,
        },
    });
}

pub mod webhook {
    wasmtime::component::bindgen!({
        world: "webhook",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "gateway:plugin/types": super::llm::gateway::plugin::types,
            "gateway:plugin/config": super::llm::gateway::plugin::config,
            "gateway:plugin/http": super::llm::gateway::plugin::http,
            "gateway:plugin/secrets": super::llm::gateway::plugin::secrets,
            "gateway:plugin/kv": super::llm::gateway::plugin::kv,
            "gateway:plugin/log": super::llm::gateway::plugin::log,
            "gateway:plugin/clock": super::llm::gateway::plugin::clock,
            "gateway:plugin/crypto": super::llm::gateway::plugin::crypto,
        },
    });
}

pub use channel::exports::gateway::plugin::messaging as channel_api;
pub use channel::gateway::plugin::mail;
pub use llm::exports::gateway::plugin::llm as llm_api;
pub use llm::gateway::plugin::{clock, config, crypto, http, kv, log, secrets, types};
