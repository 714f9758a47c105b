//! The WhatsApp channel end to end: the real binary with `builtin:whatsapp`
//! against a fake Graph API started by the test, speaking Meta's documented
//! wire format (`POST /{phone}/messages`, `POST /{phone}/media`,
//! `GET /{media-id}` then the media URL), answering 429 and 500 on request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use crate::common::{
    DbKind, Gateway, Options, PNG, admin_token, databases, eventually, messages_of, session_with,
    sqlite,
};

const APP_SECRET: &str = "app-secret-for-tests";
const ACCESS_TOKEN: &str = "EAAG-test-token";
const VERIFY_TOKEN: &str = "verify-me-0123";
const NUMBER: &str = "301118820040015";
const OTHER_NUMBER: &str = "301118820040027";

#[derive(Clone, Default)]
struct Fake {
    /// Every `/messages` body accepted, with the phone number it went from.
    sent: Arc<Mutex<Vec<(String, Value)>>>,
    /// Statuses to answer the next sends with (429, 500...).
    failures: Arc<Mutex<Vec<u16>>>,
    /// The base URL, for media URLs.
    base: Arc<Mutex<String>>,
    /// Media downloads wait this long (a crash test holds them).
    media_delay: Arc<Mutex<Duration>>,
}

fn graph_error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        Json(json!({"error": {"message": message, "type": "OAuthException", "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message}, "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}})),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {ACCESS_TOKEN}"))
}

async fn messages(
    State(fake): State<Fake>,
    Path(phone): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return graph_error(401, 190, "Invalid OAuth access token");
    }
    if let Some(status) = fake.failures.lock().expect("lock").pop() {
        let mut r = if status == 400 {
            graph_error(status, 131026, "Message undeliverable")
        } else {
            graph_error(status, 4, "Temporary failure")
        };
        if status == 429 {
            r.headers_mut()
                .insert("retry-after", "0".parse().expect("header"));
        }
        return r;
    }
    if body["status"] == "read" {
        fake.sent.lock().expect("lock").push((phone, body));
        return Json(json!({"success": true})).into_response();
    }
    let mut sent = fake.sent.lock().expect("lock");
    let id = format!("wamid.OUT{}", sent.len());
    let to = body["to"].clone();
    sent.push((phone, body));
    Json(
        json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": id}]}),
    )
    .into_response()
}

async fn upload(headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers) || body.is_empty() {
        return graph_error(401, 190, "Invalid OAuth access token");
    }
    Json(json!({"id": "4490709327384033"})).into_response()
}

/// The file the fake serves for a media id: `webp-...` a sticker,
/// `ogg-...` a voice note, `mp4-...` a video, `pdf-...` a document, else
/// a PNG.
fn media_file(id: &str) -> (&'static str, Vec<u8>) {
    match id.split('-').next().unwrap_or_default() {
        "webp" => (
            "image/webp",
            b"RIFF\x1a\0\0\0WEBPVP8 \x0e\0\0\0\x30\x01\0\x9d\x01\x2a\x01\0\x01\0".to_vec(),
        ),
        "ogg" => (
            "audio/ogg",
            b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0OpusHead".to_vec(),
        ),
        "mp4" => ("video/mp4", b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec()),
        "pdf" => (
            "application/pdf",
            b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n".to_vec(),
        ),
        _ => ("image/png", PNG.to_vec()),
    }
}

/// The media's SHA-256 as the webhook spells it (base64).
fn media_sha(id: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(media_file(id).1))
}

async fn media_info(State(fake): State<Fake>, Path(id): Path<String>) -> Response {
    let base = fake.base.lock().expect("lock").clone();
    let (mime, bytes) = media_file(&id);
    Json(
        json!({"messaging_product": "whatsapp", "url": format!("{base}/media/{id}"),
        "mime_type": mime, "sha256": hex_sha(&bytes), "file_size": bytes.len(), "id": id}),
    )
    .into_response()
}

async fn media_bytes(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let delay = *fake.media_delay.lock().expect("lock");
    tokio::time::sleep(delay).await;
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (mime, bytes) = media_file(&id);
    ([("content-type", mime)], bytes).into_response()
}

fn hex_sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn start_fake() -> (Fake, u16) {
    let fake = Fake::default();
    let app = axum::Router::new()
        .route("/v23.0/{phone}/messages", post(messages))
        .route("/v23.0/{phone}/media", post(upload))
        .route("/v23.0/{id}", get(media_info))
        .route("/media/{id}", get(media_bytes))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    *fake.base.lock().expect("lock") = format!("http://127.0.0.1:{port}");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, port)
}

fn options(kind: DbKind, port: u16) -> Options {
    Options::new(kind)
        .env("GATEWAY_RATE_LIMITS", "off")
        .env("WHATSAPP_APP_SECRET", APP_SECRET)
        .env("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN)
        .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
        .toml(&format!(
            r#"
[[plugins]]
id = "kb-answer"
path = "builtin:kb-answer"
world = "llm-provider"

[[plugins]]
id = "whatsapp"
path = "builtin:whatsapp"
world = "channel"
organization = "default"
[plugins.settings]
graph_api_url = "http://127.0.0.1:{port}/v23.0"
phone_number_ids = ["{NUMBER}", "{OTHER_NUMBER}"]
[plugins.grants]
http_hosts = ["graph.facebook.com", "lookaside.fbsbx.com", "127.0.0.1:{port}"]
allow_private = true
secrets = ["WHATSAPP_APP_SECRET", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_VERIFY_TOKEN"]
"#
        ))
}

fn signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        gateway_plugin_sdk::sign::hmac_sha256_hex(APP_SECRET.as_bytes(), body)
    )
}

/// A webhook body as Meta sends it: `messages` (JSON objects) from `wa_id`.
fn inbound(number: &str, wa_id: &str, name: &str, messages: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"{name}"}},"wa_id":"{wa_id}"}}],"messages":[{messages}]}},"field":"messages"}}]}}]}}"#
    )
}

fn statuses(number: &str, statuses: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{number}"}},"statuses":[{statuses}]}},"field":"messages"}}]}}]}}"#
    )
}

async fn deliver(gw: &Gateway, body: &str) -> reqwest::Response {
    gw.http
        .post(gw.url("/api/channels/whatsapp/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .expect("webhook")
}

fn sent_to(fake: &Fake, wa_id: &str) -> Vec<Value> {
    fake.sent
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, b)| b["to"] == wa_id)
        .map(|(_, b)| b.clone())
        .collect()
}

#[tokio::test]
async fn without_an_entry_the_channel_routes_answer_503() {
    let gw = Gateway::start(DbKind::Sqlite).await;
    for (method, path) in [
        ("GET", "/api/channels/whatsapp/webhook?hub.mode=subscribe"),
        ("POST", "/api/channels/whatsapp/webhook"),
    ] {
        let r = gw
            .http
            .request(method.parse().expect("method"), gw.url(path))
            .body("{}")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 503, "{method} {path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    }
}

#[tokio::test]
async fn whatsapp_inbound_assistant_reply_statuses_and_sends() {
    let (fake, port) = start_fake().await;
    for kind in databases() {
        fake.sent.lock().expect("lock").clear();
        let gw = Gateway::start_with(options(kind, port)).await;

        // The subscription handshake, byte for byte.
        let r = gw
            .http
            .get(gw.url(&format!(
                "/api/channels/whatsapp/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
            )))
            .send()
            .await
            .expect("handshake");
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/plain")
        );
        assert_eq!(r.text().await.expect("text"), "1158201444");
        let r = gw
            .http
            .get(gw.url("/api/channels/whatsapp/webhook?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"))
            .send()
            .await
            .expect("handshake");
        assert_eq!(r.status(), 403);

        // Signatures: missing, wrong; a signed body that is not JSON; an
        // object that is not WhatsApp's.
        let text_body = inbound(
            NUMBER,
            "16315551181",
            "Kerry Fisher",
            r#"{"from":"16315551181","id":"wamid.IN1","timestamp":"1700000000","text":{"body":"Caf\u00e9 \/ \ud83d\ude00  Hello there? "},"type":"text"}"#,
        );
        let r = gw
            .http
            .post(gw.url("/api/channels/whatsapp/webhook"))
            .body(text_body.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 401);
        let r = gw
            .http
            .post(gw.url("/api/channels/whatsapp/webhook"))
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
            .body(text_body.clone())
            .send()
            .await
            .expect("post");
        assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
        assert_eq!(deliver(&gw, "not json").await.status(), 400);
        let r = deliver(&gw, r#"{"object":"page","entry":[]}"#).await;
        assert_eq!(r.status(), 200);

        // A text message: stored exactly as sent, answered on WhatsApp.
        let r = deliver(&gw, &text_body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            json!({"status": "received"})
        );
        // The same delivery again, twice at once: stored once.
        let (a, b) = tokio::join!(deliver(&gw, &text_body), deliver(&gw, &text_body));
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
        let reply = eventually("the assistant's reply on WhatsApp", async || {
            sent_to(&fake, "16315551181").into_iter().next()
        })
        .await;
        assert_eq!(reply["type"], "text");
        assert!(
            !reply["text"]["body"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        );

        let admin = admin_token(&gw).await;
        let exact = "Café / 😀  Hello there? ";
        let session = eventually("the stored message", async || {
            session_with(&gw, &admin, exact).await
        })
        .await;
        let messages = messages_of(&gw, &admin, &session).await;
        let customer: Vec<&Value> = messages.iter().filter(|m| m["content"] == exact).collect();
        assert_eq!(customer.len(), 1, "{messages:?}");

        // Statuses move the reply on; one for an unknown message is fine.
        let status_body = statuses(
            NUMBER,
            r#"{"id":"wamid.OUT0","status":"delivered","timestamp":"1700000010","recipient_id":"16315551181"},{"id":"wamid.UNKNOWN","status":"read","timestamp":"1700000011","recipient_id":"16315551181"}"#,
        );
        assert_eq!(deliver(&gw, &status_body).await.status(), 200);

        // An image with a caption: downloaded, checked, attached.
        let image = inbound(
            NUMBER,
            "16315551181",
            "Kerry Fisher",
            &format!(
                r#"{{"from":"16315551181","id":"wamid.IN2","timestamp":"1700000020","type":"image","image":{{"caption":"my receipt","mime_type":"image/png","sha256":"{}","id":"1003383421387256"}}}}"#,
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(PNG))
            ),
        );
        assert_eq!(deliver(&gw, &image).await.status(), 200);
        let with_file = eventually("the image message", async || {
            messages_of(&gw, &admin, &session)
                .await
                .into_iter()
                .find(|m| m["content"] == "my receipt")
        })
        .await;
        let files = with_file["attachments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(files.len(), 1, "{with_file}");

        // An agent's reply goes out on WhatsApp (and the agent reading the
        // conversation marks the customer's messages read).
        let r = gw
            .http
            .post(gw.url(&format!("/api/chat/sessions/{session}/messages")))
            .bearer_auth(&admin)
            .json(&json!({"content": "An agent here: let me check."}))
            .send()
            .await
            .expect("agent reply");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        eventually("the agent's reply on WhatsApp", async || {
            sent_to(&fake, "16315551181")
                .into_iter()
                .find(|b| b["text"]["body"] == "An agent here: let me check.")
        })
        .await;
        eventually("the read receipt", async || {
            fake.sent
                .lock()
                .expect("lock")
                .iter()
                .find(|(_, b)| b["status"] == "read")
                .cloned()
        })
        .await;

        // The send API: with an API key, text inside the window...
        let (code, key, err) = gw.cli(&["apikey", "create", "--name", "wa"]);
        assert_eq!(code, 0, "{err}");
        let key = key.trim().to_owned();
        let send = async |body: Value| {
            gw.http
                .post(gw.url("/api/channels/whatsapp/messages"))
                .header("x-api-key", &key)
                .json(&body)
                .send()
                .await
                .expect("send")
        };
        let r = send(json!({"to": "16315551181", "type": "text", "text": "Your order #12345 has been shipped!", "messageId": "msg-1"})).await;
        assert_eq!(r.status(), 200);
        let first: Value = r.json().await.expect("json");
        assert_eq!(first["status"], "sent", "{first}");
        assert!(
            first["messageId"]
                .as_str()
                .unwrap_or_default()
                .starts_with("wamid.")
        );
        // ...retried with the same messageId: the first answer, no new send.
        let count = sent_to(&fake, "16315551181").len();
        let again: Value = send(json!({"to": "16315551181", "type": "text", "text": "Your order #12345 has been shipped!", "messageId": "msg-1"}))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(again["messageId"], first["messageId"]);
        assert_eq!(sent_to(&fake, "16315551181").len(), count);

        // A customer who never wrote: free text is outside the window,
        // a template goes.
        let r = send(json!({"to": "4915112345678", "type": "text", "text": "Hello"})).await;
        assert_eq!(r.status(), 409, "{}", r.text().await.unwrap_or_default());
        let r = send(json!({"to": "4915112345678", "type": "template",
            "template": {"name": "order_update", "language": "en_US",
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "12345"}]}]}}))
        .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let template = sent_to(&fake, "4915112345678")
            .pop()
            .expect("template sent");
        assert_eq!(template["type"], "template");
        assert_eq!(template["template"]["name"], "order_update");
        assert_eq!(template["template"]["language"]["code"], "en_US");
        assert_eq!(
            template["template"]["components"][0]["parameters"][0]["text"],
            "12345"
        );

        // An image: uploaded to /media, then sent by its id.
        let r = send(
            json!({"to": "16315551181", "type": "image", "text": "your label",
            "media": {"data": base64::engine::general_purpose::STANDARD.encode(PNG),
                "filename": "label.png", "mimeType": "image/png"}}),
        )
        .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let image = sent_to(&fake, "16315551181").pop().expect("image sent");
        assert_eq!(image["type"], "image", "{image}");
        assert_eq!(image["image"]["id"], "4490709327384033");
        assert_eq!(image["image"]["caption"], "your label");

        // The statuses moved the assistant's reply to delivered.
        if kind == DbKind::Sqlite {
            let db = sqlite(&gw).await;
            let delivery: Option<String> = sqlx::query_scalar(
                "SELECT delivery FROM messages WHERE provider_message_id = 'wamid.OUT0'",
            )
            .fetch_one(&db)
            .await
            .expect("reply");
            assert_eq!(delivery.as_deref(), Some("delivered"));
        }

        // 500 then 429: retried with backoff, sent once.
        fake.failures.lock().expect("lock").extend([429, 500]);
        let r = send(json!({"to": "16315551181", "type": "text", "text": "After a hiccup"})).await;
        assert_eq!(r.status(), 200);
        let after: Value = r.json().await.expect("json");
        assert_eq!(after["status"], "sent", "{after}");
        let copies = sent_to(&fake, "16315551181")
            .into_iter()
            .filter(|b| b["text"]["body"] == "After a hiccup")
            .count();
        assert_eq!(copies, 1);

        // A refusal that retrying cannot fix (a 4xx other than 429) fails
        // the message with WhatsApp's error, at once.
        fake.failures.lock().expect("lock").push(400);
        let r = send(json!({"to": "16315551181", "type": "text", "text": "Refused"})).await;
        assert_eq!(r.status(), 409);
        let refused: Value = r.json().await.expect("json");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Message undeliverable"),
            "{refused}"
        );

        // Input errors, and a body over 3 MB.
        let r = send(json!({"to": "abc", "type": "fax"})).await;
        assert_eq!(r.status(), 400);
        let huge = format!("{{\"object\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
        assert_eq!(deliver(&gw, &huge).await.status(), 413);
        gw.stop();
    }
}

#[tokio::test]
async fn a_crash_after_the_200_loses_no_message() {
    let (fake, port) = start_fake().await;
    // Downloads hang: the event is accepted (200) but not yet processed.
    *fake.media_delay.lock().expect("lock") = Duration::from_secs(60);
    let options = options(DbKind::Sqlite, port);
    let gw = Gateway::start_with(options_clone(&options)).await;
    let body = inbound(
        OTHER_NUMBER,
        "447700900123",
        "Sam",
        &format!(
            r#"{{"from":"447700900123","id":"wamid.CRASH1","timestamp":"1700000000","type":"image","image":{{"caption":"survives a crash","mime_type":"image/png","sha256":"{}","id":"77"}}}}"#,
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(PNG))
        ),
    );
    assert_eq!(deliver(&gw, &body).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (dir, db) = gw.crash();
    *fake.media_delay.lock().expect("lock") = Duration::ZERO;
    let gw = Gateway::restart(dir, db, &options);
    let admin = admin_token(&gw).await;
    eventually("the message after the restart", async || {
        session_with(&gw, &admin, "survives a crash").await
    })
    .await;

    // A reply the Graph API keeps refusing (500) is pending across a
    // crash, and the next start sends it.
    fake.failures.lock().expect("lock").extend([500; 64]);
    let text = inbound(
        OTHER_NUMBER,
        "447700900456",
        "Kim",
        r#"{"from":"447700900456","id":"wamid.CRASH2","timestamp":"1700000000","type":"text","text":{"body":"hello?"}}"#,
    );
    assert_eq!(deliver(&gw, &text).await.status(), 200);
    eventually("a refused send", async || {
        (fake.failures.lock().expect("lock").len() < 64).then_some(())
    })
    .await;
    let (dir, db) = gw.crash();
    fake.failures.lock().expect("lock").clear();
    let gw = Gateway::restart(dir, db, &options);
    eventually("the pending reply sent after the restart", async || {
        sent_to(&fake, "447700900456").into_iter().next()
    })
    .await;
    let health: Value = gw
        .http
        .get(gw.url("/api/channels/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["dependencies"]["whatsapp"], "healthy", "{health}");
    gw.stop();
}

#[tokio::test]
async fn plugins_check_names_missing_secrets() {
    let (_fake, port) = start_fake().await;
    let gw = Gateway::start_with(options(DbKind::Sqlite, port)).await;
    // The operator's shell lacks the secrets the gateway was given.
    let (code, out, err) = gw.cli(&["plugins", "check"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("WHATSAPP_APP_SECRET is not set"), "{out}{err}");
    gw.stop();
}

fn options_clone(o: &Options) -> Options {
    Options {
        db: o.db,
        toml: o.toml.clone(),
        env: o.env.clone(),
    }
}

/// A stored message: id, provider id, content, channel data, reply link.
type Stored = (i64, String, String, Option<String>, Option<i64>);

/// A read-only look at the gateway's SQLite database.

#[tokio::test]
async fn every_inbound_type_is_stored() {
    let (_fake, port) = start_fake().await;
    let gw = Gateway::start_with(options(DbKind::Sqlite, port)).await;
    let wa = "5511999990000";
    let m = |id: &str, rest: &str| {
        format!(r#"{{"from":"{wa}","id":"{id}","timestamp":"1700000100",{rest}}}"#)
    };
    let media = |kind: &str, id: &str, extra: &str| {
        format!(
            r#""type":"{kind}","{kind}":{{"id":"{id}","mime_type":"{}","sha256":"{}"{extra}}}"#,
            media_file(id).0,
            media_sha(id)
        )
    };
    let messages = [
        m("wamid.A", r#""type":"text","text":{"body":"first"}"#),
        m(
            "wamid.B",
            r#""type":"text","text":{"body":"a reply"},"context":{"from":"5511999990000","id":"wamid.A"}"#,
        ),
        m("wamid.C", &media("image", "png-1", r#","caption":"img""#)),
        m(
            "wamid.D",
            &media("sticker", "webp-1", r#","animated":false"#),
        ),
        m("wamid.E", &media("audio", "ogg-1", r#","voice":true"#)),
        m("wamid.F", &media("video", "mp4-1", r#","caption":"vid""#)),
        m(
            "wamid.G",
            &media(
                "document",
                "pdf-1",
                r#","caption":"doc","filename":"invoice.pdf""#,
            ),
        ),
        m(
            "wamid.H",
            r#""type":"location","location":{"latitude":52.52,"longitude":13.405,"name":"Acme HQ","address":"1 Main St"}"#,
        ),
        m(
            "wamid.I",
            r#""type":"contacts","contacts":[{"name":{"formatted_name":"Jane Doe","first_name":"Jane"},"phones":[{"phone":"+1 555 0100","type":"CELL"}]}]"#,
        ),
        m(
            "wamid.J",
            r#""type":"reaction","reaction":{"message_id":"wamid.A","emoji":"\ud83d\udc4d"}"#,
        ),
        m(
            "wamid.K",
            r#""type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"opt-1","title":"Yes please"}}"#,
        ),
        m(
            "wamid.L",
            r#""type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"row-2","title":"Order status","description":"Where is my parcel"}}"#,
        ),
        m(
            "wamid.M",
            r#""type":"button","button":{"payload":"STOP","text":"Stop promotions"}"#,
        ),
        m(
            "wamid.N",
            r#""type":"unsupported","errors":[{"code":131051,"title":"Message type unknown","message":"Message type unknown","error_data":{"details":"Message type is currently not supported."}}]"#,
        ),
    ];
    let body = inbound(NUMBER, wa, "Ana", &messages.join(","));
    assert_eq!(deliver(&gw, &body).await.status(), 200);
    // A number no entry lists: acknowledged, nothing stored.
    let stray = inbound(
        "999999999999999",
        "5511888880000",
        "Stray",
        r#"{"from":"5511888880000","id":"wamid.STRAY","timestamp":"1700000100","type":"text","text":{"body":"stray"}}"#,
    );
    assert_eq!(deliver(&gw, &stray).await.status(), 200);

    let db = sqlite(&gw).await;
    let rows: Vec<Stored> = eventually("every message stored", async || {
        let rows: Vec<Stored> = sqlx::query_as(
            "SELECT id, provider_message_id, content, channel_data, reply_to_id FROM messages \
                 WHERE sender_kind = 'customer' AND provider_message_id LIKE 'wamid.%' ORDER BY id",
        )
        .fetch_all(&db)
        .await
        .ok()?;
        (rows.len() >= 13).then_some(rows)
    })
    .await;
    let by_id: std::collections::HashMap<&str, &Stored> =
        rows.iter().map(|r| (r.1.as_str(), r)).collect();
    assert_eq!(rows.len(), 13, "the reaction is no message: {rows:?}");
    assert!(!by_id.contains_key("wamid.J"));
    assert!(!by_id.contains_key("wamid.STRAY"));
    let data = |id: &str| -> Value {
        serde_json::from_str(by_id[id].3.as_deref().unwrap_or("{}")).expect("channel data")
    };
    let content = |id: &str| by_id[id].2.clone();
    assert_eq!(content("wamid.A"), "first");
    assert_eq!(
        by_id["wamid.B"].4,
        Some(by_id["wamid.A"].0),
        "the reply link"
    );
    assert_eq!(content("wamid.C"), "img");
    assert_eq!(data("wamid.D")["kind"], "sticker");
    assert_eq!(data("wamid.E")["kind"], "audio");
    assert_eq!(data("wamid.E")["metadata"]["whatsapp.voice"], "true");
    assert_eq!(content("wamid.F"), "vid");
    assert_eq!(content("wamid.G"), "doc");
    assert_eq!(data("wamid.H")["location"]["latitude"], 52.52);
    assert!(
        content("wamid.H").contains("Acme HQ"),
        "{}",
        content("wamid.H")
    );
    assert!(
        content("wamid.I").contains("Jane Doe"),
        "{}",
        content("wamid.I")
    );
    assert_eq!(content("wamid.K"), "Yes please");
    assert_eq!(data("wamid.K")["choiceId"], "opt-1");
    assert_eq!(content("wamid.L"), "Order status");
    assert_eq!(data("wamid.L")["choiceId"], "row-2");
    assert_eq!(content("wamid.M"), "Stop promotions");
    assert_eq!(data("wamid.M")["choiceId"], "STOP");
    assert_eq!(data("wamid.N")["kind"], "unsupported");
    assert!(
        data("wamid.N")["error"]
            .as_str()
            .unwrap_or_default()
            .contains("131051")
    );

    // Files: one per media message, with the type its bytes show.
    for (id, want) in [
        ("wamid.C", "image/png"),
        ("wamid.D", "image/webp"),
        ("wamid.E", "audio/ogg"),
        ("wamid.F", "video/mp4"),
        ("wamid.G", "application/pdf"),
    ] {
        let types: Vec<String> =
            sqlx::query_scalar("SELECT content_type FROM attachments WHERE message_id = $1")
                .bind(by_id[id].0)
                .fetch_all(&db)
                .await
                .expect("attachments");
        assert_eq!(types, vec![want.to_owned()], "{id}: {:?}", data(id));
    }
    let name: String =
        sqlx::query_scalar("SELECT file_name FROM attachments WHERE message_id = $1")
            .bind(by_id["wamid.G"].0)
            .fetch_one(&db)
            .await
            .expect("document");
    assert_eq!(name, "invoice.pdf");

    // The reaction sits on the message it reacts to.
    let reactions: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT message_id, reactor, emoji FROM message_reactions")
            .fetch_all(&db)
            .await
            .expect("reactions");
    assert_eq!(
        reactions,
        vec![(by_id["wamid.A"].0, wa.to_owned(), "👍".to_owned())]
    );

    // The contact and its WhatsApp identity.
    let (contact, phone): (String, Option<String>) = sqlx::query_as(
        "SELECT c.name, c.phone FROM contacts c JOIN contact_identities i ON i.contact_id = c.id \
         WHERE i.kind = 'whatsapp' AND i.value = $1",
    )
    .bind(wa)
    .fetch_one(&db)
    .await
    .expect("contact");
    assert_eq!(
        (contact.as_str(), phone.as_deref()),
        ("Ana", Some("+5511999990000"))
    );
    gw.stop();
}
