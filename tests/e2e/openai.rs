//! The `openai` plugin against a fake OpenAI-compatible server started by
//! the test. The fake speaks the documented wire format: chat completions,
//! embeddings (answered out of order, as the API may), multipart
//! transcriptions, and `{"error": {...}}` bodies with 401, 429 and 500.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::common::{DbKind, Gateway, Options};

const KEY: &str = "sk-test-0123456789";

#[derive(Clone, Default)]
struct Fake {
    chat_calls: Arc<AtomicUsize>,
    rate_limited: Arc<AtomicUsize>,
}

fn openai_error(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"))
}

async fn chat(
    axum::extract::State(fake): axum::extract::State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    fake.chat_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&headers) {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_request_error",
        );
    }
    assert_eq!(body["model"], "gpt-test");
    let messages = body["messages"].as_array().expect("messages");
    let system = messages[0]["content"].as_str().unwrap_or_default();
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    match last {
        "rate limit me once" if fake.rate_limited.fetch_add(1, Ordering::SeqCst) == 0 => {
            let mut r = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests",
                "requests",
            );
            r.headers_mut()
                .insert("retry-after", "0".parse().expect("header"));
            return r;
        }
        "always fail" => {
            return openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request",
                "server_error",
            );
        }
        "be slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        _ => {}
    }
    let text = if system.contains("[kb-7] Refunds") {
        "Refunds reach your card within 5 business days [kb-7]."
    } else {
        "HANDOVER"
    };
    Json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51 }
    }))
    .into_response()
}

async fn embeddings(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&headers) {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_request_error",
        );
    }
    let inputs = body["input"].as_array().cloned().unwrap_or_default();
    // Reverse order, each item carrying its index.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| {
            let len = text.as_str().map_or(0, str::len) as f32;
            json!({ "object": "embedding", "index": i, "embedding": [len, i as f32, 1.0] })
        })
        .collect();
    Json(json!({ "object": "list", "data": data, "model": "embed-test", "usage": { "prompt_tokens": 3, "total_tokens": 3 } }))
        .into_response()
}

async fn transcriptions(headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers) {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_request_error",
        );
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    if !content_type.starts_with("multipart/form-data; boundary=")
        || !text.contains("name=\"model\"\r\n\r\nwhisper-test\r\n")
        || !text.contains("filename=\"audio.ogg\"")
        || !text.contains("OggS-fake-audio")
    {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Could not parse multipart form",
            "invalid_request_error",
        );
    }
    Json(json!({ "text": "I would like a refund", "language": "en" })).into_response()
}

async fn start_fake() -> (u16, Fake) {
    let fake = Fake::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (port, fake)
}

fn entry(id: &str, port: u16, key_env: &str) -> String {
    format!(
        r#"[[plugins]]
id = "{id}"
path = "builtin:openai"
world = "llm-provider"
settings = {{ base_url = "http://127.0.0.1:{port}/v1", model = "gpt-test", embedding_model = "embed-test", transcription_model = "whisper-test", api_key_env = "{key_env}", timeout_ms = 1500, max_retries = 2 }}
[plugins.grants]
http_hosts = ["127.0.0.1:{port}"]
allow_private = true
secrets = ["{key_env}"]
timeout_ms = 4000
"#
    )
}

async fn call(gw: &Gateway, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = gw
        .http
        .post(gw.url(path))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.json().await.expect("json"))
}

fn ask(message: &str) -> Value {
    json!({
        "messages": [{ "role": "user", "content": message }],
        "passages": [{ "id": "kb-7", "title": "Refunds", "content": "Refunds are paid within 5 business days.", "relevance": 0.8 }]
    })
}

#[tokio::test]
async fn openai_plugin_speaks_the_wire_format_and_maps_errors() {
    let (port, fake) = start_fake().await;
    let toml = entry("gpt", port, "TEST_OPENAI_KEY")
        + &entry("gpt-badkey", port, "TEST_OPENAI_WRONG")
        + "[[plugins]]\nid = \"kb-answer\"\npath = \"builtin:kb-answer\"\nworld = \"llm-provider\"\n";
    let gw = Gateway::start_with(
        Options::new(DbKind::Sqlite)
            .toml(&toml)
            .env("TEST_OPENAI_KEY", KEY)
            .env("TEST_OPENAI_WRONG", "sk-wrong"),
    )
    .await;
    let (code, out, err) = gw.cli(&["apikey", "create", "--name", "ops"]);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();

    // A grounded answer names its source and reports usage.
    let (status, body) = call(
        &gw,
        &key,
        "/api/gateway/plugins/gpt/complete",
        ask("How long do refunds take?"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["used_passages"], json!(["kb-7"]));
    assert_eq!(
        (
            body["prompt_tokens"].as_u64(),
            body["completion_tokens"].as_u64()
        ),
        (Some(42), Some(9))
    );
    assert!(body["confidence"].as_f64() > Some(0.5), "{body}");

    // No context: the model hands over, confidence 0.
    let (status, body) = call(
        &gw,
        &key,
        "/api/gateway/plugins/gpt/complete",
        json!({ "messages": [{ "role": "user", "content": "Do you sell boats?" }] }),
    )
    .await;
    assert_eq!(
        (status, body["confidence"].as_f64()),
        (200, Some(0.0)),
        "{body}"
    );

    // 429 once: retried after Retry-After, then answered.
    let before = fake.chat_calls.load(Ordering::SeqCst);
    let (status, body) = call(
        &gw,
        &key,
        "/api/gateway/plugins/gpt/complete",
        ask("rate limit me once"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.chat_calls.load(Ordering::SeqCst) - before, 2);

    // 500 every time: two retries, then a clear 503.
    let before = fake.chat_calls.load(Ordering::SeqCst);
    let (status, body) = call(
        &gw,
        &key,
        "/api/gateway/plugins/gpt/complete",
        ask("always fail"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "plugin `gpt`: the remote service is unavailable: HTTP 500: The server had an error"
        ),
        "{message}"
    );
    assert_eq!(fake.chat_calls.load(Ordering::SeqCst) - before, 3);

    // 401: the credentials are named as the problem, not retried.
    let (status, body) = call(
        &gw,
        &key,
        "/api/gateway/plugins/gpt-badkey/complete",
        ask("hello"),
    )
    .await;
    assert_eq!(status, 503);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("plugin `gpt-badkey`: the remote service refused the credentials: HTTP 401: Incorrect API key provided"),
        "{message}"
    );

    // A server slower than the plugin's deadline: a timeout, in time.
    let started = std::time::Instant::now();
    let (status, body) = call(
        &gw,
        &key,
        "/api/gateway/plugins/gpt/complete",
        ask("be slow"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not answer in time"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Embeddings come back in input order.
    let (status, body) = call(
        &gw,
        &key,
        "/api/gateway/plugins/gpt/embed",
        json!({ "texts": ["a", "bb", "ccc"] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dimension"], 3);
    assert_eq!(
        body["vectors"],
        json!([[1.0, 0.0, 1.0], [2.0, 1.0, 1.0], [3.0, 2.0, 1.0]])
    );

    // Transcription is a multipart upload.
    let r = gw
        .http
        .post(gw.url("/api/gateway/plugins/gpt/transcribe?format=ogg&language=en"))
        .header("X-API-Key", &key)
        .body("OggS-fake-audio")
        .send()
        .await
        .expect("transcribe");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({ "text": "I would like a refund", "language": "en" })
    );

    let r = gw
        .http
        .post(gw.url("/api/gateway/plugins/gpt/transcribe"))
        .header("X-API-Key", &key)
        .body("x")
        .send()
        .await
        .expect("transcribe");
    assert_eq!(r.status(), 400, "no format");

    // kb-answer cannot transcribe: a clear 400 naming it (the request
    // asked the wrong plugin), not a crash.
    let r = gw
        .http
        .post(gw.url("/api/gateway/plugins/kb-answer/transcribe?format=ogg"))
        .header("X-API-Key", &key)
        .body("OggS-fake-audio")
        .send()
        .await
        .expect("transcribe");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        message,
        "plugin `kb-answer`: the provider does not offer this function"
    );
}
