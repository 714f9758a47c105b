//! A component built against `gateway:plugin@0.3.0`, a version this gateway
//! does not speak: loading it must fail with a message naming both versions.

// The bindings wit-bindgen generates here (not in the SDK) use unsafe code.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "llm-provider",
    path: "wit",
});

struct Future;

impl exports::gateway::plugin::llm::Guest for Future {
    fn complete(prompt: String) -> String {
        prompt
    }
}

export!(Future);
