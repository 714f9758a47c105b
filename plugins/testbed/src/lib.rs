//! `testbed`: a plugin that misbehaves on purpose, for the gateway's tests.
//! Never configure it in production.
//!
//! Its `settings.mode` picks the behaviour of `complete` and `embed`:
//!
//! - `echo` (default): answers with the last message, confidence 1;
//! - `trap`: panics;
//! - `loop`: never returns;
//! - `memory`: allocates until the host refuses;
//! - `garbage`: answers a NaN confidence and cites a passage nobody
//!   retrieved; `embed` returns one vector too few;
//! - `http`: GETs the URL in the last message through the host and answers
//!   with the outcome (`status 200` or the error);
//! - `secret`: reads the secret named in the last message and answers with
//!   the outcome;
//! - `kv`: stores the last message under `last`, then answers with what the
//!   store held before;
//! - `chatty`: writes 120 KB to stderr, then echoes.

use gateway_plugin_sdk::host::{config, http, kv, secrets};
use gateway_plugin_sdk::{Completion, CompletionRequest, Embeddings, LlmError, LlmProvider, Usage};

struct Testbed;

fn mode() -> String {
    serde_json::from_str::<serde_json::Value>(&config::settings())
        .ok()
        .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "echo".into())
}

fn answer(text: String, confidence: f32, used: Vec<String>) -> Completion {
    Completion {
        text,
        used_passages: used,
        usage: Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
        },
        confidence,
        intent: None,
        entities: Vec::new(),
    }
}

fn misbehave(mode: &str) {
    match mode {
        "trap" => panic!("testbed was told to trap"),
        "loop" => {
            let mut i = 0u64;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "chatty" => {
            for i in 0..2000 {
                eprintln!("line {i}: {}", "x".repeat(50));
            }
        }
        _ => {}
    }
}

impl LlmProvider for Testbed {
    fn complete(request: CompletionRequest) -> Result<Completion, LlmError> {
        let mode = mode();
        misbehave(&mode);
        let last = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let text = match mode.as_str() {
            "garbage" => return Ok(answer(last, f32::NAN, vec!["never-retrieved".into()])),
            "http" => {
                let outcome = http::send(&http::Request {
                    method: http::Method::Get,
                    url: last,
                    headers: Vec::new(),
                    body: Vec::new(),
                    timeout_ms: 5_000,
                });
                match outcome {
                    Ok(response) => format!("status {}", response.status),
                    Err(e) => format!("{e:?}"),
                }
            }
            "secret" => match secrets::get(&last) {
                Ok(value) => format!("value {value}"),
                Err(e) => format!("{e:?}"),
            },
            "kv" => {
                let before = kv::get("last");
                let stored = kv::set("last", last.as_bytes(), None);
                format!("before {before:?} stored {stored:?}")
            }
            _ => last,
        };
        Ok(answer(text, 1.0, Vec::new()))
    }

    fn embed(texts: Vec<String>) -> Result<Embeddings, LlmError> {
        let mode = mode();
        misbehave(&mode);
        let count = if mode == "garbage" {
            texts.len().saturating_sub(1)
        } else {
            texts.len()
        };
        Ok(Embeddings {
            dimension: 2,
            vectors: (0..count).map(|i| vec![i as f32, 1.0]).collect(),
        })
    }
}

gateway_plugin_sdk::export_llm_provider!(Testbed);
