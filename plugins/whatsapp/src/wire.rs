//! The WhatsApp Cloud API wire format (Meta Graph API): verifying and
//! reading webhooks, building request bodies, reading answers and errors.
//! Pure functions, tested natively; `parse_webhook_body` is also called
//! natively by the host's benchmark.
//!
//! Webhooks arrive as `{"object": "whatsapp_business_account", "entry":
//! [{"changes": [{"field": "messages", "value": {...}}]}]}`, signed with
//! `X-Hub-Signature-256: sha256=<hex>` over the raw body. Outbound calls are
//! `POST {graph}/{phone_number_id}/messages` (JSON), `POST
//! {graph}/{phone_number_id}/media` (multipart) and `GET {graph}/{media_id}`;
//! errors come as `{"error": {"message", "type", "code", "error_data":
//! {"details"}, "fbtrace_id"}}`.

use base64::Engine as _;
use gateway_plugin_sdk::channel::{
    Attachment, ChannelError, ContentKind, DeliveryState, DeliveryStatus, InboundEvent,
    InboundMessage, Location, Media, Template, WebhookResponse,
};
use gateway_plugin_sdk::host::http::HttpError;
use gateway_plugin_sdk::host::types::Pair;
use gateway_plugin_sdk::sign;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The Graph API root used when the settings name none.
pub const DEFAULT_GRAPH_API_URL: &str = "https://graph.facebook.com/v23.0";
/// The secret keying the webhook signatures (the Meta app's secret).
pub const APP_SECRET: &str = "WHATSAPP_APP_SECRET";
/// The secret sent as `Authorization: Bearer` on every Graph call.
pub const ACCESS_TOKEN: &str = "WHATSAPP_ACCESS_TOKEN";
/// The secret the subscription handshake's `hub.verify_token` must equal.
pub const VERIFY_TOKEN: &str = "WHATSAPP_VERIFY_TOKEN";
/// The webhook signature header (compared without regard to case).
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// The timeout of each Graph request.
pub const TIMEOUT_MS: u32 = 15_000;

/// The WhatsApp Business Account object every webhook names.
const OBJECT: &str = "whatsapp_business_account";

/// The entry's settings (`[[plugins]] settings`), with defaults. Unknown
/// keys are ignored.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// The Graph API root with its version, without a trailing `/`.
    pub graph_api_url: String,
    /// The business numbers this entry serves; the host routes by them.
    pub phone_number_ids: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            graph_api_url: DEFAULT_GRAPH_API_URL.into(),
            phone_number_ids: Vec::new(),
        }
    }
}

impl Settings {
    /// Parses the settings JSON (empty means all defaults).
    pub fn parse(json: &str) -> Result<Settings, ChannelError> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let mut settings: Settings = serde_json::from_str(json)
            .map_err(|e| ChannelError::Other(format!("whatsapp settings: {e}")))?;
        let root = settings.graph_api_url.trim().trim_end_matches('/');
        settings.graph_api_url = if root.is_empty() {
            DEFAULT_GRAPH_API_URL
        } else {
            root
        }
        .to_owned();
        Ok(settings)
    }

    /// `{graph}/{id}`, or `{graph}/{id}/{edge}` when `edge` is not empty.
    /// `id` (a phone number id, a media id) must be a plain Graph id, so it
    /// cannot reach another path.
    pub fn url(&self, id: &str, edge: &str) -> Result<String, ChannelError> {
        let plain = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !plain || id.bytes().all(|b| b == b'.') {
            return Err(ChannelError::Rejected(format!(
                "`{id}` is not a Graph id (expected letters, digits, `.`, `_` or `-`)"
            )));
        }
        Ok(if edge.is_empty() {
            format!("{}/{id}", self.graph_api_url)
        } else {
            format!("{}/{id}/{edge}", self.graph_api_url)
        })
    }
}

// ---------------------------------------------------------------------------
// Webhook verification

/// Checks `X-Hub-Signature-256` (`header`, as sent): `sha256=` followed by
/// exactly 64 hex digits (either case), the HMAC-SHA256 of the raw `body`
/// under `app_secret`, compared in constant time.
pub fn verify_signature(
    app_secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), ChannelError> {
    let header = header
        .ok_or_else(|| ChannelError::InvalidSignature("missing X-Hub-Signature-256".into()))?;
    let malformed = || {
        ChannelError::InvalidSignature(
            "X-Hub-Signature-256 must be `sha256=` followed by 64 hex digits".into(),
        )
    };
    let digits = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(malformed)?;
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let signature = hex::decode(digits).map_err(|_| malformed())?;
    if app_secret.is_empty() {
        return Err(ChannelError::Other(format!("{APP_SECRET} is empty")));
    }
    if sign::verify_hmac_sha256(app_secret, body, &signature) {
        Ok(())
    } else {
        Err(ChannelError::InvalidSignature(
            "X-Hub-Signature-256 does not match the body".into(),
        ))
    }
}

/// Answers the subscription handshake from its query pairs: `hub.mode`
/// must be `subscribe` and `hub.verify_token` equal `verify_token`
/// (compared in constant time); the answer is `hub.challenge`, exactly.
pub fn handshake(query: &[Pair], verify_token: &str) -> Result<WebhookResponse, ChannelError> {
    let get = |name: &str| {
        query
            .iter()
            .find(|p| p.key == name)
            .map(|p| p.value.as_str())
    };
    if get("hub.mode") != Some("subscribe") {
        return Err(ChannelError::InvalidSignature(
            "hub.mode must be `subscribe`".into(),
        ));
    }
    let token = get("hub.verify_token")
        .ok_or_else(|| ChannelError::InvalidSignature("missing hub.verify_token".into()))?;
    if verify_token.is_empty() || !constant_time_eq(token.as_bytes(), verify_token.as_bytes()) {
        return Err(ChannelError::InvalidSignature(
            "hub.verify_token does not match".into(),
        ));
    }
    let challenge = get("hub.challenge")
        .ok_or_else(|| ChannelError::InvalidSignature("missing hub.challenge".into()))?;
    Ok(WebhookResponse {
        status: 200,
        content_type: "text/plain".into(),
        body: challenge.as_bytes().to_vec(),
    })
}

/// Whether `a` equals `b`, in time independent of their contents: both
/// are keyed-hashed and the digests compared in constant time.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    const KEY: &[u8] = b"whatsapp verify token";
    sign::verify_hmac_sha256(KEY, a, &sign::hmac_sha256(KEY, b))
}

/// The answer to every accepted webhook.
pub fn received() -> WebhookResponse {
    WebhookResponse {
        status: 200,
        content_type: "application/json".into(),
        body: br#"{"status":"received"}"#.to_vec(),
    }
}

// ---------------------------------------------------------------------------
// Webhook parsing

/// The events of a (verified) webhook body: messages and delivery reports
/// of every `messages` change, in order. Not JSON is `invalid-payload`;
/// another `object` has no events; a message or status missing its id (or
/// sender) is skipped, other missing or mistyped parts are left empty.
pub fn parse_webhook_body(body: &[u8]) -> Result<Vec<InboundEvent>, ChannelError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| ChannelError::InvalidPayload(format!("the webhook body is not JSON: {e}")))?;
    if str_at(&root, "object") != Some(OBJECT) {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for entry in array(&root, "entry") {
        for change in array(entry, "changes") {
            if str_at(change, "field") != Some("messages") {
                continue;
            }
            if let Some(value) = change.get("value") {
                read_change(value, &mut events);
            }
        }
    }
    Ok(events)
}

/// The array under `key`, or none.
fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The string under `key`, if it is one.
fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// The string under `key`, owned.
fn string_at(value: &Value, key: &str) -> Option<String> {
    str_at(value, key).map(str::to_owned)
}

/// The string under `key` when not empty.
fn non_empty_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    str_at(value, key).filter(|s| !s.is_empty())
}

/// The number under `key` (or a string spelling one).
fn number_at(value: &Value, key: &str) -> Option<f64> {
    match value.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `timestamp` (Unix seconds, as a string or a number) in milliseconds; 0
/// when absent or unreadable.
fn timestamp_ms(value: &Value) -> u64 {
    let seconds = match value.get("timestamp") {
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    seconds.map_or(0, |s| s.saturating_mul(1000))
}

/// A metadata pair.
fn pair(key: &str, value: impl Into<String>) -> Pair {
    Pair {
        key: key.to_owned(),
        value: value.into(),
    }
}

/// The events of one `messages` change's `value`.
fn read_change(value: &Value, events: &mut Vec<InboundEvent>) {
    let account = value
        .get("metadata")
        .and_then(|m| non_empty_at(m, "phone_number_id"));
    let contacts = array(value, "contacts");
    for message in array(value, "messages") {
        if let Some(message) = read_message(message, account, contacts) {
            events.push(InboundEvent::Message(message));
        }
    }
    for status in array(value, "statuses") {
        if let Some(status) = read_status(status, account) {
            events.push(InboundEvent::Status(status));
        }
    }
}

/// One entry of `value.messages`, or `None` without an id or a sender.
fn read_message(m: &Value, account: Option<&str>, contacts: &[Value]) -> Option<InboundMessage> {
    let external_id = non_empty_at(m, "id")?;
    let sender = non_empty_at(m, "from")?;
    let sender_name = contacts
        .iter()
        .find(|c| str_at(c, "wa_id") == Some(sender))
        .and_then(|c| c.get("profile"))
        .and_then(|p| string_at(p, "name"));
    let word = str_at(m, "type").unwrap_or_default();
    let context = m.get("context");
    let mut message = InboundMessage {
        external_id: external_id.to_owned(),
        sender: sender.to_owned(),
        sender_name,
        recipient: account.map(str::to_owned),
        thread_id: None,
        subject: None,
        kind: ContentKind::Other,
        text: None,
        html: None,
        media: Vec::new(),
        timestamp_ms: timestamp_ms(m),
        in_reply_to: context.and_then(|c| string_at(c, "id")),
        location: None,
        choice_id: None,
        error: None,
        metadata: vec![pair("whatsapp.type", word)],
    };
    if context.and_then(|c| c.get("forwarded")) == Some(&Value::Bool(true)) {
        message.metadata.push(pair("whatsapp.forwarded", "true"));
    }
    if context.and_then(|c| c.get("frequently_forwarded")) == Some(&Value::Bool(true)) {
        message
            .metadata
            .push(pair("whatsapp.frequently_forwarded", "true"));
    }
    if let Some(error) = array(m, "errors").first() {
        message.kind = ContentKind::Unsupported;
        message.error = Some(render_webhook_error(error));
        return Some(message);
    }
    let part = m.get(word).filter(|p| p.is_object());
    match word {
        "text" => {
            message.kind = ContentKind::Text;
            message.text = part.and_then(|t| string_at(t, "body"));
        }
        "image" | "video" | "audio" | "document" | "sticker" => {
            read_media(&mut message, word, part)
        }
        "location" => {
            message.kind = ContentKind::Location;
            if let Some(place) = part {
                read_location(&mut message, place);
            }
        }
        "contacts" => read_contacts(&mut message, m.get("contacts")),
        "reaction" => {
            message.kind = ContentKind::Reaction;
            if let Some(id) = part.and_then(|r| non_empty_at(r, "message_id")) {
                message.in_reply_to = Some(id.to_owned());
            }
            message.text = Some(part.and_then(|r| string_at(r, "emoji")).unwrap_or_default());
        }
        "interactive" => {
            if let Some(part) = part {
                read_interactive(&mut message, part);
            }
        }
        "button" => {
            message.kind = ContentKind::Interactive;
            message.text = part.and_then(|b| string_at(b, "text"));
            message.choice_id = part.and_then(|b| string_at(b, "payload"));
        }
        "unsupported" => {
            message.kind = ContentKind::Unsupported;
            message.error = Some("the message type is not supported by WhatsApp".into());
        }
        _ => {}
    }
    Some(message)
}

/// An image, video, audio, document or sticker: its file becomes the one
/// `media`, its caption the text.
fn read_media(message: &mut InboundMessage, word: &str, part: Option<&Value>) {
    message.kind = match word {
        "image" => ContentKind::Image,
        "video" => ContentKind::Video,
        "audio" => ContentKind::Audio,
        "document" => ContentKind::Document,
        _ => ContentKind::Sticker,
    };
    let Some(part) = part else { return };
    let caption = string_at(part, "caption");
    message.text = caption.clone();
    message.media.push(Media {
        media_id: string_at(part, "id"),
        mime_type: string_at(part, "mime_type"),
        filename: string_at(part, "filename"),
        caption,
        data: None,
        sha256: string_at(part, "sha256"),
        content_id: None,
    });
    if part.get("voice") == Some(&Value::Bool(true)) {
        message.metadata.push(pair("whatsapp.voice", "true"));
    }
    if part.get("animated") == Some(&Value::Bool(true)) {
        message.metadata.push(pair("whatsapp.animated", "true"));
    }
}

/// A shared place: `location` when it has coordinates, and a readable
/// text (`Name, Address (lat, lon)`) from whatever it has.
fn read_location(message: &mut InboundMessage, place: &Value) {
    let name = string_at(place, "name").filter(|s| !s.is_empty());
    let address = string_at(place, "address").filter(|s| !s.is_empty());
    let coordinates = number_at(place, "latitude").zip(number_at(place, "longitude"));
    let label = [name.as_deref(), address.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    message.text = match (label.is_empty(), coordinates) {
        (true, None) => None,
        (false, None) => Some(label),
        (true, Some((lat, lon))) => Some(format!("{lat}, {lon}")),
        (false, Some((lat, lon))) => Some(format!("{label} ({lat}, {lon})")),
    };
    message.location = coordinates.map(|(latitude, longitude)| Location {
        latitude,
        longitude,
        name,
        address,
        url: string_at(place, "url").filter(|s| !s.is_empty()),
    });
}

/// Contact cards: one text line each, and the cards themselves as JSON in
/// `whatsapp.contacts`.
fn read_contacts(message: &mut InboundMessage, cards: Option<&Value>) {
    message.kind = ContentKind::Contacts;
    let Some(cards) = cards.filter(|c| c.is_array()) else {
        return;
    };
    let lines: Vec<String> = cards
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(render_card)
        .filter(|line| !line.is_empty())
        .collect();
    if !lines.is_empty() {
        message.text = Some(lines.join("\n"));
    }
    message
        .metadata
        .push(pair("whatsapp.contacts", cards.to_string()));
}

/// `Name: phone, phone, email`; the name alone, or the numbers alone,
/// when the card has only those.
fn render_card(card: &Value) -> String {
    let name = card.get("name");
    let name = name
        .and_then(|n| non_empty_at(n, "formatted_name"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            [
                name.and_then(|n| non_empty_at(n, "first_name")),
                name.and_then(|n| non_empty_at(n, "last_name")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
        });
    let items: Vec<&str> = array(card, "phones")
        .iter()
        .filter_map(|p| non_empty_at(p, "phone"))
        .chain(
            array(card, "emails")
                .iter()
                .filter_map(|e| non_empty_at(e, "email")),
        )
        .collect();
    match (name.is_empty(), items.is_empty()) {
        (_, true) => name,
        (true, false) => items.join(", "),
        (false, false) => format!("{name}: {}", items.join(", ")),
    }
}

/// A button or list reply; other interactive replies (flows...) stay
/// `other`, their type in `whatsapp.interactive_type`.
fn read_interactive(message: &mut InboundMessage, part: &Value) {
    if let Some(kind) = str_at(part, "type") {
        message
            .metadata
            .push(pair("whatsapp.interactive_type", kind));
    }
    let button = part.get("button_reply").filter(|r| r.is_object());
    let list = part.get("list_reply").filter(|r| r.is_object());
    if let Some(reply) = button.or(list) {
        message.kind = ContentKind::Interactive;
        message.text = string_at(reply, "title");
        message.choice_id = string_at(reply, "id");
        let description = button.is_none().then(|| str_at(reply, "description"));
        if let Some(description) = description.flatten() {
            message
                .metadata
                .push(pair("whatsapp.description", description));
        }
    } else if let Some(response) = part
        .get("nfm_reply")
        .and_then(|r| non_empty_at(r, "response_json"))
    {
        message
            .metadata
            .push(pair("whatsapp.response_json", response));
    }
}

/// One entry of `value.statuses`, or `None` without an id or with a status
/// other than sent, delivered, read or failed.
fn read_status(s: &Value, account: Option<&str>) -> Option<DeliveryStatus> {
    let external_id = non_empty_at(s, "id")?;
    let state = match str_at(s, "status")? {
        "sent" => DeliveryState::Sent,
        "delivered" => DeliveryState::Delivered,
        "read" => DeliveryState::Read,
        "failed" => DeliveryState::Failed,
        _ => return None,
    };
    Some(DeliveryStatus {
        external_id: external_id.to_owned(),
        state,
        timestamp_ms: timestamp_ms(s),
        recipient: string_at(s, "recipient_id"),
        account: account.map(str::to_owned),
        error: array(s, "errors").first().map(render_webhook_error),
    })
}

/// `code`, as a number or a string.
fn code_of(error: &Value) -> String {
    match error.get("code") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// `<code> <head>: <detail>`, leaving out what is missing (and a detail
/// that repeats the head).
fn render(code: &str, head: Option<&str>, detail: Option<&str>) -> String {
    let head = head.filter(|h| !h.is_empty());
    let detail = detail.filter(|d| !d.is_empty() && Some(*d) != head);
    let lead = [Some(code).filter(|c| !c.is_empty()), head]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    match (lead.is_empty(), detail) {
        (true, None) => "unknown error".into(),
        (false, None) => lead,
        (true, Some(detail)) => detail.to_owned(),
        (false, Some(detail)) => format!("{lead}: {detail}"),
    }
}

/// A webhook error (`{"code", "title", "message", "error_data":
/// {"details"}}`, or the older `{"code", "title", "details"}`) as
/// `<code> <title>: <details or message>`.
pub fn render_webhook_error(error: &Value) -> String {
    let title = str_at(error, "title").or_else(|| str_at(error, "message"));
    let detail = error
        .get("error_data")
        .and_then(|d| non_empty_at(d, "details"))
        .or_else(|| non_empty_at(error, "details"))
        .or_else(|| non_empty_at(error, "message"));
    render(&code_of(error), title, detail)
}

/// A Graph API error object as `<code> <message>: <error_data.details>`.
pub fn render_graph_error(error: &Value) -> String {
    let message = str_at(error, "message").or_else(|| str_at(error, "title"));
    let detail = error
        .get("error_data")
        .and_then(|d| non_empty_at(d, "details"));
    render(&code_of(error), message, detail)
}

// ---------------------------------------------------------------------------
// Outbound requests

/// The fields every message body starts with, and the reply context.
fn envelope(to: &str, kind: &str, in_reply_to: Option<&str>) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("messaging_product".into(), json!("whatsapp"));
    body.insert("recipient_type".into(), json!("individual"));
    body.insert("to".into(), json!(to));
    body.insert("type".into(), json!(kind));
    if let Some(id) = in_reply_to.filter(|id| !id.is_empty()) {
        body.insert("context".into(), json!({ "message_id": id }));
    }
    body
}

/// The body of a text message (links not previewed).
pub fn text_body(to: &str, text: &str, in_reply_to: Option<&str>) -> Value {
    let mut body = envelope(to, "text", in_reply_to);
    body.insert("text".into(), json!({ "preview_url": false, "body": text }));
    Value::Object(body)
}

/// The body of a template message; `components` is parsed as a JSON array
/// and left out when empty.
pub fn template_body(
    to: &str,
    template: &Template,
    in_reply_to: Option<&str>,
) -> Result<Value, ChannelError> {
    if template.name.trim().is_empty() {
        return Err(ChannelError::InvalidPayload(
            "the template has no name".into(),
        ));
    }
    let mut inner = Map::new();
    inner.insert("name".into(), json!(template.name));
    inner.insert("language".into(), json!({ "code": template.language }));
    if !template.components.trim().is_empty() {
        let components: Value = serde_json::from_str(&template.components).map_err(|e| {
            ChannelError::InvalidPayload(format!(
                "the template's components are not JSON (expected an array): {e}"
            ))
        })?;
        if !components.is_array() {
            return Err(ChannelError::InvalidPayload(
                "the template's components must be a JSON array".into(),
            ));
        }
        inner.insert("components".into(), components);
    }
    let mut body = envelope(to, "template", in_reply_to);
    body.insert("template".into(), Value::Object(inner));
    Ok(Value::Object(body))
}

/// The MIME type without parameters, in lower case.
fn essence(mime_type: &str) -> String {
    mime_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// How an attachment goes out: `image` for JPEG and PNG, which WhatsApp
/// shows inline, `document` for everything else.
pub fn media_kind(mime_type: &str) -> &'static str {
    match essence(mime_type).as_str() {
        "image/jpeg" | "image/png" => "image",
        _ => "document",
    }
}

/// The body of a message sending the uploaded `media_id`, as an image or
/// a document (with the attachment's file name); `caption` is left out
/// when empty.
pub fn media_body(
    to: &str,
    attachment: &Attachment,
    media_id: &str,
    caption: Option<&str>,
    in_reply_to: Option<&str>,
) -> Value {
    let kind = media_kind(&attachment.mime_type);
    let mut inner = Map::new();
    inner.insert("id".into(), json!(media_id));
    if kind == "document" && !attachment.filename.is_empty() {
        inner.insert("filename".into(), json!(attachment.filename));
    }
    if let Some(caption) = caption.filter(|c| !c.trim().is_empty()) {
        inner.insert("caption".into(), json!(caption));
    }
    let mut body = envelope(to, kind, in_reply_to);
    body.insert(kind.into(), Value::Object(inner));
    Value::Object(body)
}

/// The body marking a customer's message read.
pub fn mark_read_body(external_id: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": external_id,
    })
}

/// A header value stripped of what would break a multipart header line.
fn header_safe(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect()
}

/// The `multipart/form-data` body of `POST {graph}/{phone}/media`
/// (`messaging_product`, `type`, `file`), and its content type. The
/// boundary derives from `seed` and never occurs in the file.
pub fn upload_body(attachment: &Attachment, seed: u64) -> (Vec<u8>, String) {
    let mut boundary = format!("gateway-whatsapp-{seed:016x}");
    let mut n = 0u32;
    while contains(&attachment.data, boundary.as_bytes()) {
        n += 1;
        boundary = format!("gateway-whatsapp-{seed:016x}-{n}");
    }
    let mime = match header_safe(&essence(&attachment.mime_type)) {
        m if m.is_empty() => "application/octet-stream".to_owned(),
        m => m,
    };
    let filename = match header_safe(&attachment.filename) {
        f if f.trim().is_empty() => "file".to_owned(),
        f => f,
    };
    let mut body = Vec::with_capacity(attachment.data.len() + 512);
    for (name, value) in [("messaging_product", "whatsapp"), ("type", mime.as_str())] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&attachment.data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Answers

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".into();
    }
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// The id of a sent message: `{"messages": [{"id": "wamid..."}]}`.
pub fn read_sent(body: &[u8]) -> Result<String, ChannelError> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("messages")?
                .get(0)?
                .get("id")?
                .as_str()
                .map(str::to_owned)
        })
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ChannelError::Other(format!(
                "the Graph API accepted the message but did not answer {{\"messages\":[{{\"id\":...}}]}}: {}",
                snippet(body)
            ))
        })
}

/// The id of an uploaded file: `{"id": "..."}`.
pub fn read_upload(body: &[u8]) -> Result<String, ChannelError> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ChannelError::Other(format!(
                "the Graph API accepted the upload but did not answer {{\"id\":...}}: {}",
                snippet(body)
            ))
        })
}

/// What `GET {graph}/{media_id}` says of a file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaInfo {
    /// Where to download it (with the same bearer token), briefly.
    pub url: String,
    /// Its MIME type, such as `image/jpeg`.
    pub mime_type: Option<String>,
    /// The file's SHA-256 (WhatsApp spells it in base64).
    pub sha256: Option<String>,
    /// Its size in bytes.
    pub file_size: Option<u64>,
}

/// Reads `{"url", "mime_type", "sha256", "file_size", "id"}`.
pub fn read_media_info(body: &[u8]) -> Result<MediaInfo, ChannelError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ChannelError::InvalidPayload(format!("the media's Graph answer is not JSON: {e}"))
    })?;
    let url = non_empty_at(&v, "url").ok_or_else(|| {
        ChannelError::InvalidPayload("the media's Graph answer has no `url`".into())
    })?;
    Ok(MediaInfo {
        url: url.to_owned(),
        mime_type: non_empty_at(&v, "mime_type").map(str::to_owned),
        sha256: non_empty_at(&v, "sha256").map(str::to_owned),
        file_size: match v.get("file_size") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        },
    })
}

/// A SHA-256 spelled in hex (64 digits, either case) or standard base64
/// (with or without padding).
fn decode_digest(spelled: &str) -> Option<Vec<u8>> {
    if spelled.len() == 64
        && let Ok(bytes) = hex::decode(spelled)
    {
        return Some(bytes);
    }
    base64::engine::general_purpose::STANDARD
        .decode(spelled)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(spelled))
        .ok()
        .filter(|bytes| bytes.len() == 32)
}

/// Checks `data` against a SHA-256 in hex or base64.
pub fn check_sha256(data: &[u8], expected: &str) -> Result<(), ChannelError> {
    let expected = expected.trim();
    let want = decode_digest(expected).ok_or_else(|| {
        ChannelError::InvalidPayload(format!(
            "the media's SHA-256 `{expected}` is neither 64 hex digits nor base64 of 32 bytes"
        ))
    })?;
    if sign::sha256(data)[..] == want[..] {
        Ok(())
    } else {
        Err(ChannelError::InvalidPayload(
            "the media's SHA-256 does not match".into(),
        ))
    }
}

/// The downloaded file as an attachment, once checked against the
/// webhook's SHA-256 (else the Graph's); its name and type come from the
/// webhook, else the Graph.
pub fn attachment_from(
    media: &Media,
    info: &MediaInfo,
    data: Vec<u8>,
) -> Result<Attachment, ChannelError> {
    let expected = media
        .sha256
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .or(info.sha256.as_deref());
    if let Some(expected) = expected {
        check_sha256(&data, expected)?;
    }
    Ok(Attachment {
        filename: media.filename.clone().unwrap_or_default(),
        mime_type: media
            .mime_type
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| info.mime_type.clone())
            .unwrap_or_else(|| "application/octet-stream".into()),
        data,
    })
}

/// Graph error codes that mean "slow down" although the status is 400:
/// application (4), account (80007), throughput (130429) and pair
/// (131056) rate limits.
const THROTTLING: [i64; 4] = [4, 80_007, 130_429, 131_056];

/// Maps an error answer to a [`ChannelError`], with Graph's own code,
/// message and details: 429 (or a rate-limit code) is `rate-limited`,
/// other 4xx `rejected`, 5xx `unavailable`. `retry_after_ms` comes from a
/// `Retry-After` header, when sent.
pub fn read_error(status: u16, body: &[u8], retry_after_ms: Option<u32>) -> ChannelError {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let error = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object());
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
    if status == 429 || code.is_some_and(|c| THROTTLING.contains(&c)) {
        return ChannelError::RateLimited(retry_after_ms);
    }
    let message = match error {
        Some(error) => render_graph_error(error),
        None => format!("HTTP {status}: {}", snippet(body)),
    };
    match status {
        400..=499 => ChannelError::Rejected(message),
        500..=599 => ChannelError::Unavailable(message),
        _ => ChannelError::Other(format!("unexpected HTTP {status}: {message}")),
    }
}

/// A `Retry-After` header in seconds, as milliseconds.
pub fn retry_after_ms(value: Option<&str>) -> Option<u32> {
    value
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(|s| s.saturating_mul(1000))
}

/// Maps a failure of the host's HTTP import: no answer is `unavailable`, a
/// refused host `other`, an oversized answer `rejected`.
pub fn http_error(error: HttpError) -> ChannelError {
    match error {
        HttpError::Timeout => ChannelError::Unavailable(format!(
            "the Graph API did not answer within {TIMEOUT_MS} ms"
        )),
        HttpError::Transport(m) => ChannelError::Unavailable(m),
        HttpError::Denied(m) => {
            ChannelError::Other(format!("outbound HTTP refused (grants.http_hosts): {m}"))
        }
        HttpError::InvalidRequest(m) => ChannelError::Other(format!("invalid HTTP request: {m}")),
        HttpError::TooLarge => {
            ChannelError::Rejected("the answer exceeded the host's size limit".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_plugin_sdk::channel::{InboundMessage, OutboundMessage};

    const PHONE_ID: &str = "106540352242922";
    const SECRET: &[u8] = b"d41d8cd98f00b204e9800998ecf8427e";

    /// A webhook with one `messages` change whose `value` holds `inner`
    /// (the parts after `metadata`), as Meta sends it.
    fn webhook(inner: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{PHONE_ID}"}},{inner}}},"field":"messages"}}]}}]}}"#
        )
    }

    /// A webhook with one message from Sheena Nelson.
    fn with_message(message: &str) -> String {
        webhook(&format!(
            r#""contacts":[{{"profile":{{"name":"Sheena Nelson"}},"wa_id":"16505551234"}}],"messages":[{message}]"#
        ))
    }

    fn events(body: &str) -> Vec<InboundEvent> {
        parse_webhook_body(body.as_bytes()).expect("a webhook")
    }

    fn messages(body: &str) -> Vec<InboundMessage> {
        events(body)
            .into_iter()
            .filter_map(|e| match e {
                InboundEvent::Message(m) => Some(m),
                InboundEvent::Status(_) => None,
            })
            .collect()
    }

    fn statuses(body: &str) -> Vec<DeliveryStatus> {
        events(body)
            .into_iter()
            .filter_map(|e| match e {
                InboundEvent::Status(s) => Some(s),
                InboundEvent::Message(_) => None,
            })
            .collect()
    }

    /// The only message of a webhook with `message`.
    fn one(message: &str) -> InboundMessage {
        let mut all = messages(&with_message(message));
        assert_eq!(all.len(), 1, "{message}");
        all.remove(0)
    }

    fn meta<'a>(m: &'a InboundMessage, key: &str) -> Option<&'a str> {
        m.metadata
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    fn signed(body: &[u8]) -> String {
        format!("sha256={}", sign::hmac_sha256_hex(SECRET, body))
    }

    // -- settings ----------------------------------------------------------

    #[test]
    fn settings_have_defaults_and_ignore_unknown_keys() {
        let s = Settings::parse("").expect("defaults");
        assert_eq!(s, Settings::default());
        assert_eq!(
            s.url(PHONE_ID, "messages").expect("url"),
            "https://graph.facebook.com/v23.0/106540352242922/messages"
        );
        let s = Settings::parse(
            r#"{"graph_api_url": "http://127.0.0.1:9000/v21.0//", "phone_number_ids": ["1", "2"], "colour": "green"}"#,
        )
        .expect("settings");
        assert_eq!(s.graph_api_url, "http://127.0.0.1:9000/v21.0");
        assert_eq!(s.phone_number_ids, ["1", "2"]);
        assert_eq!(
            s.url("1003383421387256", "").expect("url"),
            "http://127.0.0.1:9000/v21.0/1003383421387256"
        );
        assert!(matches!(
            Settings::parse(r#"{"graph_api_url": 3}"#),
            Err(ChannelError::Other(m)) if m.contains("whatsapp settings")
        ));
        for bad in ["", "..", "1/messages", "1?x=2", "a b", "%2e%2e"] {
            assert!(
                matches!(s.url(bad, "messages"), Err(ChannelError::Rejected(_))),
                "{bad}"
            );
        }
    }

    // -- signatures --------------------------------------------------------

    #[test]
    fn text_is_signed_over_the_raw_bytes_and_kept_exactly() {
        // Meta escapes `/`, non-ASCII and emoji in its JSON; the signature
        // covers those bytes, not any re-serialization of them.
        let raw = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Ren\u00e9e"},"wa_id":"16505551234"}],"messages":[{"from":"16505551234","id":"wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","timestamp":"1749416383","type":"text","text":{"body":"  Caf\u00e9 menu: https:\/\/example.com\/menu \ud83d\ude00\n"}}]},"field":"messages"}]}]}"#;
        let header = signed(raw);
        verify_signature(SECRET, raw, Some(&header)).expect("the raw bytes verify");

        let reserialized =
            serde_json::to_vec(&serde_json::from_slice::<Value>(raw).expect("json")).expect("json");
        assert_ne!(reserialized.as_slice(), raw.as_slice());
        assert!(matches!(
            verify_signature(SECRET, &reserialized, Some(&header)),
            Err(ChannelError::InvalidSignature(_))
        ));

        let all = parse_webhook_body(raw).expect("events");
        let [InboundEvent::Message(m)] = all.as_slice() else {
            panic!("one message expected: {all:?}");
        };
        assert_eq!(
            m.text.as_deref(),
            Some("  Caf\u{e9} menu: https://example.com/menu \u{1F600}\n")
        );
        assert_eq!(m.kind, ContentKind::Text);
        assert_eq!(
            m.external_id,
            "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
        );
        assert_eq!(m.sender, "16505551234");
        assert_eq!(m.sender_name.as_deref(), Some("Ren\u{e9}e"));
        assert_eq!(m.recipient.as_deref(), Some(PHONE_ID));
        assert_eq!(m.timestamp_ms, 1_749_416_383_000);
        assert!(m.thread_id.is_none() && m.subject.is_none() && m.html.is_none());
        assert!(m.in_reply_to.is_none() && m.media.is_empty() && m.location.is_none());
        assert_eq!(meta(m, "whatsapp.type"), Some("text"));
    }

    #[test]
    fn signatures_must_be_well_formed_and_match() {
        let body =
            with_message(r#"{"from":"1","id":"wamid.A","type":"text","text":{"body":"hi"}}"#);
        let body = body.as_bytes();
        let good = signed(body);
        let digits = good.trim_start_matches("sha256=");
        assert_eq!(digits.len(), 64);

        assert!(matches!(
            verify_signature(SECRET, body, None),
            Err(ChannelError::InvalidSignature(m)) if m == "missing X-Hub-Signature-256"
        ));
        verify_signature(
            SECRET,
            body,
            Some(&format!("sha256={}", digits.to_uppercase())),
        )
        .expect("upper-case hex");
        verify_signature(SECRET, body, Some(&format!(" {good} "))).expect("surrounding spaces");
        let malformed = [
            digits.to_owned(),
            format!("sha1={digits}"),
            format!("SHA256={digits}"),
            format!("sha256={}", &digits[..63]),
            format!("sha256={digits}0"),
            format!("sha256={}g", &digits[..63]),
            "sha256=".to_owned(),
            String::new(),
        ];
        for header in &malformed {
            assert!(
                matches!(
                    verify_signature(SECRET, body, Some(header)),
                    Err(ChannelError::InvalidSignature(m)) if m.contains("64 hex digits")
                ),
                "{header}"
            );
        }
        assert!(matches!(
            verify_signature(b"another secret", body, Some(&good)),
            Err(ChannelError::InvalidSignature(m)) if m.contains("does not match")
        ));
        let mut tampered = body.to_vec();
        tampered.push(b' ');
        assert!(matches!(
            verify_signature(SECRET, &tampered, Some(&good)),
            Err(ChannelError::InvalidSignature(_))
        ));
        assert!(matches!(
            verify_signature(b"", body, Some(&good)),
            Err(ChannelError::Other(_))
        ));
    }

    // -- handshake ---------------------------------------------------------

    fn query(pairs: &[(&str, &str)]) -> Vec<Pair> {
        pairs.iter().map(|(k, v)| pair(k, *v)).collect()
    }

    #[test]
    fn handshake_echoes_the_challenge_for_the_right_token() {
        let q = query(&[
            ("hub.mode", "subscribe"),
            ("hub.challenge", "1158201444"),
            ("hub.verify_token", "meatyhamhock"),
        ]);
        let r = handshake(&q, "meatyhamhock").expect("accepted");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/plain");
        assert_eq!(r.body, b"1158201444");

        let refused = |q: &[Pair], token: &str| {
            matches!(handshake(q, token), Err(ChannelError::InvalidSignature(_)))
        };
        assert!(refused(&q, "meatyhamhocks"));
        assert!(refused(&q, "meatyhamhoc"));
        assert!(refused(&q, ""));
        assert!(refused(
            &query(&[
                ("hub.mode", "unsubscribe"),
                ("hub.challenge", "1"),
                ("hub.verify_token", "t")
            ]),
            "t"
        ));
        assert!(refused(
            &query(&[("hub.challenge", "1"), ("hub.verify_token", "t")]),
            "t"
        ));
        assert!(refused(
            &query(&[("hub.mode", "subscribe"), ("hub.verify_token", "t")]),
            "t"
        ));
        assert!(refused(
            &query(&[("hub.mode", "subscribe"), ("hub.challenge", "1")]),
            "t"
        ));
        assert!(refused(&[], "t"));
    }

    // -- inbound messages --------------------------------------------------

    #[test]
    fn image_with_caption() {
        let m = one(
            r#"{"from":"16505551234","id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=","timestamp":"1750090702","type":"image","image":{"caption":"Black jacket","mime_type":"image/jpeg","sha256":"6nqO3p1jwzXvsRqQqiNtjbk8Wl+Dd3TfRSl4r1WoJrs=","id":"1003383421387256","url":"https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1003383421387256&ext=1750090702&hash=ATv9"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Image);
        assert_eq!(m.text.as_deref(), Some("Black jacket"));
        assert_eq!(m.sender_name.as_deref(), Some("Sheena Nelson"));
        let [media] = m.media.as_slice() else {
            panic!("one media expected");
        };
        assert_eq!(media.media_id.as_deref(), Some("1003383421387256"));
        assert_eq!(media.mime_type.as_deref(), Some("image/jpeg"));
        assert_eq!(media.caption.as_deref(), Some("Black jacket"));
        assert_eq!(
            media.sha256.as_deref(),
            Some("6nqO3p1jwzXvsRqQqiNtjbk8Wl+Dd3TfRSl4r1WoJrs=")
        );
        assert!(media.filename.is_none() && media.data.is_none());
        assert_eq!(meta(&m, "whatsapp.type"), Some("image"));
    }

    #[test]
    fn sticker_voice_note_video_and_document() {
        let m = one(
            r#"{"from":"16505551234","id":"wamid.STICKER","timestamp":"1750090702","type":"sticker","sticker":{"mime_type":"image/webp","sha256":"JCYCnGknIRPqQmZyANB7f4Pc7LmB7kq5Ju7cDDiWsU0=","id":"1227829768162607","animated":true}}"#,
        );
        assert_eq!(m.kind, ContentKind::Sticker);
        assert!(m.text.is_none());
        assert_eq!(m.media[0].mime_type.as_deref(), Some("image/webp"));
        assert_eq!(meta(&m, "whatsapp.animated"), Some("true"));

        let m = one(
            r#"{"from":"16505551234","id":"wamid.VOICE","timestamp":"1750090702","type":"audio","audio":{"mime_type":"audio/ogg; codecs=opus","sha256":"z6bL8ZvLd6Hg0Z2vkL8X5r8Q1fVYy5Wlq1U2x4mD0Ck=","id":"1229327335384640","voice":true}}"#,
        );
        assert_eq!(m.kind, ContentKind::Audio);
        assert_eq!(m.media[0].media_id.as_deref(), Some("1229327335384640"));
        assert_eq!(meta(&m, "whatsapp.voice"), Some("true"));
        assert!(m.text.is_none());

        let m = one(
            r#"{"from":"16505551234","id":"wamid.AUDIO","timestamp":"1750090702","type":"audio","audio":{"mime_type":"audio/mpeg","sha256":"x","id":"1","voice":false}}"#,
        );
        assert_eq!(meta(&m, "whatsapp.voice"), None);

        let m = one(
            r#"{"from":"16505551234","id":"wamid.VIDEO","timestamp":"1750090702","type":"video","video":{"caption":"Unboxing","mime_type":"video/mp4","sha256":"b64","id":"1274523504276283"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Video);
        assert_eq!(m.text.as_deref(), Some("Unboxing"));
        assert_eq!(m.media[0].caption.as_deref(), Some("Unboxing"));

        let m = one(
            r#"{"from":"16505551234","id":"wamid.DOC","timestamp":"1750090702","type":"document","document":{"caption":"My invoice","filename":"invoice-0042.pdf","mime_type":"application/pdf","sha256":"IH7ETIT7E2eAM9yXFOUNdsx3ZCkJKuJE0LQXPnWfV0g=","id":"1003383421387257"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Document);
        assert_eq!(m.text.as_deref(), Some("My invoice"));
        assert_eq!(m.media[0].filename.as_deref(), Some("invoice-0042.pdf"));
        assert_eq!(m.media[0].mime_type.as_deref(), Some("application/pdf"));
    }

    #[test]
    fn location_with_and_without_a_name() {
        let m = one(
            r#"{"from":"16505551234","id":"wamid.LOC","timestamp":"1750090702","type":"location","location":{"address":"1 Main St","latitude":52.52,"longitude":13.405,"name":"Acme HQ","url":"https://acme.example"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Location);
        assert_eq!(
            m.text.as_deref(),
            Some("Acme HQ, 1 Main St (52.52, 13.405)")
        );
        let place = m.location.expect("location");
        assert_eq!((place.latitude, place.longitude), (52.52, 13.405));
        assert_eq!(place.name.as_deref(), Some("Acme HQ"));
        assert_eq!(place.address.as_deref(), Some("1 Main St"));
        assert_eq!(place.url.as_deref(), Some("https://acme.example"));

        let m = one(
            r#"{"from":"16505551234","id":"wamid.PIN","timestamp":"1750090702","type":"location","location":{"latitude":-33.8688,"longitude":151.2093}}"#,
        );
        assert_eq!(m.text.as_deref(), Some("-33.8688, 151.2093"));
        let place = m.location.expect("location");
        assert!(place.name.is_none() && place.address.is_none() && place.url.is_none());
    }

    #[test]
    fn contacts_render_one_line_per_card() {
        let m = one(
            r#"{"from":"16505551234","id":"wamid.CARDS","timestamp":"1750090702","type":"contacts","contacts":[{"addresses":[{"city":"Menlo Park","country":"United States","country_code":"us","state":"CA","street":"1 Hacker Way","type":"HOME","zip":"94025"}],"birthday":"2012-08-18","emails":[{"email":"jane@example.com","type":"WORK"}],"name":{"formatted_name":"Jane Doe","first_name":"Jane","last_name":"Doe"},"org":{"company":"Acme"},"phones":[{"phone":"+1 555 0100","wa_id":"15550100","type":"WORK"}],"urls":[{"url":"https://www.example.com","type":"WORK"}]},{"name":{"first_name":"Bob","last_name":"Ray"},"phones":[{"phone":"+44 20 7946 0000"},{"phone":"+44 7700 900000"}]},{"phones":[{"phone":"+351 912 345 678"}]}]}"#,
        );
        assert_eq!(m.kind, ContentKind::Contacts);
        assert_eq!(
            m.text.as_deref(),
            Some(
                "Jane Doe: +1 555 0100, jane@example.com\nBob Ray: +44 20 7946 0000, +44 7700 900000\n+351 912 345 678"
            )
        );
        let cards: Value =
            serde_json::from_str(meta(&m, "whatsapp.contacts").expect("cards")).expect("json");
        assert_eq!(cards[0]["org"]["company"], "Acme");
        assert_eq!(cards.as_array().map(Vec::len), Some(3));
        assert_eq!(meta(&m, "whatsapp.type"), Some("contacts"));
    }

    #[test]
    fn reactions_point_at_their_message() {
        let m = one(
            r#"{"from":"16505551234","id":"wamid.REACT","timestamp":"1750090702","type":"reaction","reaction":{"message_id":"wamid.ORIGINAL","emoji":"\u2764\ufe0f"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Reaction);
        assert_eq!(m.in_reply_to.as_deref(), Some("wamid.ORIGINAL"));
        assert_eq!(m.text.as_deref(), Some("\u{2764}\u{fe0f}"));

        let m = one(
            r#"{"from":"16505551234","id":"wamid.UNREACT","timestamp":"1750090703","type":"reaction","reaction":{"message_id":"wamid.ORIGINAL"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Reaction);
        assert_eq!(m.in_reply_to.as_deref(), Some("wamid.ORIGINAL"));
        assert_eq!(m.text.as_deref(), Some(""));
    }

    #[test]
    fn button_and_list_replies_and_template_buttons() {
        let m = one(
            r#"{"context":{"from":"15550783881","id":"wamid.MENU"},"from":"16505551234","id":"wamid.BTN","timestamp":"1750090702","type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"track-order","title":"Track my order"}}}"#,
        );
        assert_eq!(m.kind, ContentKind::Interactive);
        assert_eq!(m.text.as_deref(), Some("Track my order"));
        assert_eq!(m.choice_id.as_deref(), Some("track-order"));
        assert_eq!(m.in_reply_to.as_deref(), Some("wamid.MENU"));
        assert_eq!(meta(&m, "whatsapp.interactive_type"), Some("button_reply"));
        assert_eq!(meta(&m, "whatsapp.description"), None);

        let m = one(
            r#"{"context":{"from":"15550783881","id":"wamid.LIST"},"from":"16505551234","id":"wamid.ROW","timestamp":"1750090702","type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"express","title":"Express","description":"Next-day delivery"}}}"#,
        );
        assert_eq!(m.kind, ContentKind::Interactive);
        assert_eq!(m.text.as_deref(), Some("Express"));
        assert_eq!(m.choice_id.as_deref(), Some("express"));
        assert_eq!(meta(&m, "whatsapp.description"), Some("Next-day delivery"));

        let m = one(
            r#"{"context":{"from":"15550783881","id":"wamid.TEMPLATE"},"from":"16505551234","id":"wamid.QR","timestamp":"1750090702","type":"button","button":{"text":"No","payload":"No-Button-Payload"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Interactive);
        assert_eq!(m.text.as_deref(), Some("No"));
        assert_eq!(m.choice_id.as_deref(), Some("No-Button-Payload"));
        assert_eq!(m.in_reply_to.as_deref(), Some("wamid.TEMPLATE"));
        assert_eq!(meta(&m, "whatsapp.type"), Some("button"));

        let m = one(
            r#"{"from":"16505551234","id":"wamid.FLOW","timestamp":"1750090702","type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"response_json":"{\"flow_token\":\"t\"}","body":"Sent","name":"flow"}}}"#,
        );
        assert_eq!(m.kind, ContentKind::Other);
        assert!(m.text.is_none() && m.choice_id.is_none());
        assert_eq!(
            meta(&m, "whatsapp.response_json"),
            Some(r#"{"flow_token":"t"}"#)
        );
    }

    #[test]
    fn replies_carry_their_context() {
        let m = one(
            r#"{"context":{"from":"15550783881","id":"wamid.PREVIOUS","forwarded":true},"from":"16505551234","id":"wamid.REPLY","timestamp":"1750090702","type":"text","text":{"body":"Yes, that one"}}"#,
        );
        assert_eq!(m.in_reply_to.as_deref(), Some("wamid.PREVIOUS"));
        assert_eq!(m.text.as_deref(), Some("Yes, that one"));
        assert_eq!(meta(&m, "whatsapp.forwarded"), Some("true"));
    }

    #[test]
    fn unsupported_and_unknown_types() {
        let m = one(
            r#"{"from":"16505551234","id":"wamid.UNSUP","timestamp":"1750090702","errors":[{"code":131051,"title":"Message type unknown","message":"Message type unknown","error_data":{"details":"Message type is currently not supported."}}],"type":"unsupported"}"#,
        );
        assert_eq!(m.kind, ContentKind::Unsupported);
        assert!(m.text.is_none());
        assert_eq!(
            m.error.as_deref(),
            Some("131051 Message type unknown: Message type is currently not supported.")
        );

        // The older shape, with `details` beside the code.
        let m = one(
            r#"{"from":"16505551234","id":"wamid.OLD","timestamp":"1750090702","errors":[{"code":131051,"details":"Message type is not currently supported","title":"Unsupported message type"}],"type":"unsupported"}"#,
        );
        assert_eq!(
            m.error.as_deref(),
            Some("131051 Unsupported message type: Message type is not currently supported")
        );

        // Errors on any type make it unsupported.
        let m = one(
            r#"{"from":"16505551234","id":"wamid.BAD","timestamp":"1750090702","type":"image","errors":[{"code":131052,"title":"Media download error","message":"Media download error"}],"image":{"id":"9"}}"#,
        );
        assert_eq!(m.kind, ContentKind::Unsupported);
        assert!(m.media.is_empty() && m.text.is_none());
        assert_eq!(m.error.as_deref(), Some("131052 Media download error"));
        assert_eq!(meta(&m, "whatsapp.type"), Some("image"));

        let m = one(r#"{"from":"16505551234","id":"wamid.U2","type":"unsupported"}"#);
        assert_eq!(m.kind, ContentKind::Unsupported);
        assert!(m.error.is_some());

        let m = one(
            r#"{"from":"16505551234","id":"wamid.ORDER","timestamp":"1750090702","type":"order","order":{"catalog_id":"1","product_items":[{"product_retailer_id":"A","quantity":"1","item_price":"9.99","currency":"EUR"}]}}"#,
        );
        assert_eq!(m.kind, ContentKind::Other);
        assert!(m.text.is_none() && m.error.is_none());
        assert_eq!(meta(&m, "whatsapp.type"), Some("order"));
    }

    // -- statuses ----------------------------------------------------------

    #[test]
    fn statuses_map_to_delivery_states() {
        let body = webhook(
            r#""statuses":[{"id":"wamid.OUT1","status":"sent","timestamp":"1750263773","recipient_id":"16505551234","conversation":{"id":"c1","expiration_timestamp":"1750350173","origin":{"type":"service"}},"pricing":{"billable":true,"pricing_model":"PMP","category":"service","type":"regular"}},{"id":"wamid.OUT1","status":"delivered","timestamp":"1750263774","recipient_id":"16505551234"},{"id":"wamid.OUT1","status":"read","timestamp":"1750263800","recipient_id":"16505551234"},{"id":"wamid.OUT1","status":"deleted","timestamp":"1750263801","recipient_id":"16505551234"},{"id":"wamid.OUT2","status":"failed","timestamp":"1750263900","recipient_id":"16505551234","errors":[{"code":131047,"title":"Re-engagement message","message":"Re-engagement message","error_data":{"details":"Message failed to send because more than 24 hours have passed since the customer last replied to this number."},"href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}]"#,
        );
        let all = statuses(&body);
        let states: Vec<_> = all
            .iter()
            .map(|s| (s.external_id.as_str(), s.state))
            .collect();
        assert_eq!(
            states,
            [
                ("wamid.OUT1", DeliveryState::Sent),
                ("wamid.OUT1", DeliveryState::Delivered),
                ("wamid.OUT1", DeliveryState::Read),
                ("wamid.OUT2", DeliveryState::Failed),
            ]
        );
        assert_eq!(all[0].timestamp_ms, 1_750_263_773_000);
        assert_eq!(all[0].recipient.as_deref(), Some("16505551234"));
        assert_eq!(all[0].account.as_deref(), Some(PHONE_ID));
        assert!(all[0].error.is_none());
        assert_eq!(
            all[3].error.as_deref(),
            Some(
                "131047 Re-engagement message: Message failed to send because more than 24 hours have passed since the customer last replied to this number."
            )
        );
    }

    // -- envelopes ---------------------------------------------------------

    #[test]
    fn other_objects_and_fields_have_no_events() {
        let page = r#"{"object":"page","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"from":"1","id":"wamid.X","type":"text","text":{"body":"hi"}}]}}]}]}"#;
        assert!(events(page).is_empty());
        let template_update = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","time":1750263773,"changes":[{"value":{"event":"APPROVED","message_template_id":12345678,"message_template_name":"order_update","message_template_language":"en_US","reason":"NONE"},"field":"message_template_status_update"}]}]}"#;
        assert!(events(template_update).is_empty());
        assert!(events(r#"{"object":"whatsapp_business_account"}"#).is_empty());
        assert!(events("[]").is_empty());
        assert!(events("null").is_empty());
        for bad in ["", "not json", "{\"object\":", "\u{FEFF}{}"] {
            assert!(
                matches!(
                    parse_webhook_body(bad.as_bytes()),
                    Err(ChannelError::InvalidPayload(_))
                ),
                "{bad}"
            );
        }
        let r = received();
        assert_eq!(
            (r.status, r.content_type.as_str(), r.body.as_slice()),
            (
                200,
                "application/json",
                br#"{"status":"received"}"#.as_slice()
            )
        );
    }

    #[test]
    fn entries_keep_their_own_phone_number_ids() {
        let body = r#"{"object":"whatsapp_business_account","entry":[
            {"id":"WABA1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"111"},"contacts":[{"profile":{"name":"Ana"},"wa_id":"351900000001"}],"messages":[{"from":"351900000001","id":"wamid.A1","timestamp":"1750000001","type":"text","text":{"body":"Ola"}}]}}]},
            {"id":"WABA2","changes":[
                {"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550002222","phone_number_id":"222"},"contacts":[{"profile":{"name":"Ben"},"wa_id":"4915100000002"}],"messages":[{"from":"4915100000002","id":"wamid.B1","timestamp":"1750000002","type":"text","text":{"body":"Hallo"}}]}},
                {"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550002222","phone_number_id":"222"},"statuses":[{"id":"wamid.OUT","status":"delivered","timestamp":"1750000003","recipient_id":"4915100000002"}]}}]}]}"#;
        let all = events(body);
        assert_eq!(all.len(), 3);
        let InboundEvent::Message(a) = &all[0] else {
            panic!("{all:?}")
        };
        let InboundEvent::Message(b) = &all[1] else {
            panic!("{all:?}")
        };
        let InboundEvent::Status(s) = &all[2] else {
            panic!("{all:?}")
        };
        assert_eq!(
            (
                a.recipient.as_deref(),
                a.sender_name.as_deref(),
                a.text.as_deref()
            ),
            (Some("111"), Some("Ana"), Some("Ola"))
        );
        assert_eq!(
            (
                b.recipient.as_deref(),
                b.sender_name.as_deref(),
                b.text.as_deref()
            ),
            (Some("222"), Some("Ben"), Some("Hallo"))
        );
        assert_eq!(s.account.as_deref(), Some("222"));
    }

    #[test]
    fn malformed_pieces_never_panic_or_fail_the_webhook() {
        // Not arrays, not objects, wrong types: each piece is skipped or
        // left empty.
        for body in [
            r#"{"object":"whatsapp_business_account","entry":{}}"#,
            r#"{"object":"whatsapp_business_account","entry":[1,"x",null,{"changes":"no"}]}"#,
            r#"{"object":"whatsapp_business_account","entry":[{"changes":[1,{"field":"messages"},{"field":"messages","value":null},{"field":"messages","value":[]}]}]}"#,
            r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":{},"statuses":"x","contacts":7}}]}]}"#,
        ] {
            assert!(events(body).is_empty(), "{body}");
        }

        let body = webhook(
            r#""contacts":[1,{"profile":"x","wa_id":"5"},{"wa_id":7}],"messages":[
                1, null, {}, {"id":"wamid.NOFROM","type":"text"}, {"from":"5","type":"text"},
                {"from":"5","id":"","type":"text"},
                {"from":"5","id":"wamid.T1","timestamp":1750000000,"type":"text","text":"flat"},
                {"from":"5","id":"wamid.T2","timestamp":"soon","type":"text","text":{"body":42}},
                {"from":"5","id":"wamid.T3","type":7},
                {"from":"5","id":"wamid.L1","type":"location","location":{"latitude":"52.5","longitude":null,"name":"Somewhere"}},
                {"from":"5","id":"wamid.L2","type":"location","location":"here"},
                {"from":"5","id":"wamid.C1","type":"contacts","contacts":{"name":"x"}},
                {"from":"5","id":"wamid.C2","type":"contacts","contacts":[1,{"name":5,"phones":[{"phone":1}],"emails":"x"}]},
                {"from":"5","id":"wamid.R1","type":"reaction","reaction":"x"},
                {"from":"5","id":"wamid.I1","type":"interactive","interactive":{"type":"button_reply","button_reply":"x"}},
                {"from":"5","id":"wamid.I2","type":"interactive"},
                {"from":"5","id":"wamid.M1","type":"image","image":[]},
                {"from":"5","id":"wamid.M2","type":"document","document":{"id":5,"filename":null}},
                {"from":"5","id":"wamid.E1","type":"text","errors":[7],"text":{"body":"x"}},
                {"from":"5","id":"wamid.X1","context":"x","type":"button","button":{"text":[]}}
            ],"statuses":[1,{"status":"read"},{"id":"wamid.S","status":5},{"id":"wamid.S","status":"read","timestamp":{},"errors":"x"}]"#,
        );
        let all = events(&body);
        let ids: Vec<&str> = all
            .iter()
            .map(|e| match e {
                InboundEvent::Message(m) => m.external_id.as_str(),
                InboundEvent::Status(s) => s.external_id.as_str(),
            })
            .collect();
        assert_eq!(
            ids,
            [
                "wamid.T1", "wamid.T2", "wamid.T3", "wamid.L1", "wamid.L2", "wamid.C1", "wamid.C2",
                "wamid.R1", "wamid.I1", "wamid.I2", "wamid.M1", "wamid.M2", "wamid.E1", "wamid.X1",
                "wamid.S"
            ]
        );
        let m = messages(&body);
        assert_eq!(m[0].timestamp_ms, 1_750_000_000_000);
        assert!(m[0].text.is_none() && m[0].sender_name.is_none());
        assert_eq!((m[1].timestamp_ms, m[1].text.as_deref()), (0, None));
        assert_eq!(m[2].kind, ContentKind::Other);
        assert_eq!(meta(&m[2], "whatsapp.type"), Some(""));
        assert!(m[3].location.is_none());
        assert_eq!(m[3].text.as_deref(), Some("Somewhere"));
        assert_eq!(
            (m[4].kind, m[4].text.as_deref()),
            (ContentKind::Location, None)
        );
        assert_eq!(
            (m[5].kind, m[5].text.as_deref()),
            (ContentKind::Contacts, None)
        );
        assert_eq!(m[6].text.as_deref(), None);
        assert_eq!(
            (m[7].kind, m[7].text.as_deref()),
            (ContentKind::Reaction, Some(""))
        );
        assert_eq!(m[8].kind, ContentKind::Other);
        assert_eq!(m[9].kind, ContentKind::Other);
        assert_eq!((m[10].kind, m[10].media.len()), (ContentKind::Image, 0));
        assert_eq!(m[11].media[0].media_id, None);
        assert_eq!(m[12].kind, ContentKind::Unsupported);
        assert_eq!(m[12].error.as_deref(), Some("unknown error"));
        assert_eq!(
            (m[13].kind, m[13].text.as_deref()),
            (ContentKind::Interactive, None)
        );
        let s = statuses(&body);
        assert_eq!((s[0].timestamp_ms, s[0].error.as_deref()), (0, None));
    }

    // -- outbound ----------------------------------------------------------

    fn outbound(text: &str) -> OutboundMessage {
        OutboundMessage {
            recipient: "16505551234".into(),
            sender: Some(PHONE_ID.into()),
            text: text.into(),
            html: None,
            subject: None,
            thread_id: None,
            in_reply_to: None,
            attachments: Vec::new(),
            template: None,
            client_message_id: "msg-1".into(),
            metadata: Vec::new(),
        }
    }

    #[test]
    fn text_bodies_with_and_without_context() {
        let m = outbound("Your order ships today \u{1F4E6}");
        assert_eq!(
            text_body(&m.recipient, &m.text, None),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": "text",
                "text": {"preview_url": false, "body": "Your order ships today \u{1F4E6}"},
            })
        );
        let body = text_body("16505551234", "Yes", Some("wamid.CUSTOMER"));
        assert_eq!(body["context"], json!({"message_id": "wamid.CUSTOMER"}));
        assert_eq!(body["text"]["body"], "Yes");
        assert!(text_body("1", "x", Some("")).get("context").is_none());
    }

    #[test]
    fn template_bodies() {
        let mut template = Template {
            name: "order_update".into(),
            language: "en_US".into(),
            components: String::new(),
        };
        assert_eq!(
            template_body("16505551234", &template, None).expect("body"),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": "template",
                "template": {"name": "order_update", "language": {"code": "en_US"}},
            })
        );
        template.components =
            r#"[{"type":"body","parameters":[{"type":"text","text":"A-1042"}]}]"#.into();
        let body = template_body("16505551234", &template, Some("wamid.Q")).expect("body");
        assert_eq!(
            body["template"]["components"],
            json!([{"type": "body", "parameters": [{"type": "text", "text": "A-1042"}]}])
        );
        assert_eq!(body["context"]["message_id"], "wamid.Q");
        template.components = "   ".into();
        assert!(
            template_body("1", &template, None).expect("body")["template"]
                .get("components")
                .is_none()
        );
        for bad in ["[{", r#"{"type":"body"}"#, "7"] {
            template.components = bad.into();
            assert!(
                matches!(
                    template_body("1", &template, None),
                    Err(ChannelError::InvalidPayload(_))
                ),
                "{bad}"
            );
        }
        template.components = String::new();
        template.name = " ".into();
        assert!(matches!(
            template_body("1", &template, None),
            Err(ChannelError::InvalidPayload(_))
        ));
    }

    fn attachment(filename: &str, mime_type: &str, data: &[u8]) -> Attachment {
        Attachment {
            filename: filename.into(),
            mime_type: mime_type.into(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn image_and_document_bodies() {
        let photo = attachment("label.png", "image/png", b"\x89PNG");
        assert_eq!(
            media_body("16505551234", &photo, "MEDIA1", Some("Your label"), None),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": "image",
                "image": {"id": "MEDIA1", "caption": "Your label"},
            })
        );
        let jpeg = attachment("a.jpg", "IMAGE/JPEG; q=1", b"");
        assert_eq!(media_body("1", &jpeg, "M", None, None)["type"], "image");
        let invoice = attachment("invoice.pdf", "application/pdf", b"%PDF");
        assert_eq!(
            media_body("16505551234", &invoice, "MEDIA2", Some(""), Some("wamid.Q")),
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": "document",
                "context": {"message_id": "wamid.Q"},
                "document": {"id": "MEDIA2", "filename": "invoice.pdf"},
            })
        );
        // WhatsApp shows only JPEG and PNG inline; the rest go as documents.
        for mime in [
            "image/webp",
            "image/gif",
            "video/mp4",
            "audio/ogg",
            "",
            "text/plain",
        ] {
            assert_eq!(media_kind(mime), "document", "{mime}");
        }
        let unnamed = attachment("", "application/zip", b"PK");
        assert_eq!(
            media_body("1", &unnamed, "M", Some("x"), None)["document"],
            json!({"id": "M", "caption": "x"})
        );
    }

    #[test]
    fn mark_read_body_names_the_message() {
        assert_eq!(
            mark_read_body("wamid.IN"),
            json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"})
        );
    }

    #[test]
    fn uploads_are_multipart() {
        let file = attachment(
            "re\"port\r\n.pdf",
            "application/pdf",
            b"%PDF-1.7\r\nbinary\x00\xff",
        );
        let (body, content_type) = upload_body(&file, 0xABCD);
        let boundary = "gateway-whatsapp-000000000000abcd";
        assert_eq!(
            content_type,
            format!("multipart/form-data; boundary={boundary}")
        );
        let mut expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\nwhatsapp\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\napplication/pdf\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"re'port.pdf\"\r\n\
             Content-Type: application/pdf\r\n\r\n"
        )
        .into_bytes();
        expected.extend_from_slice(b"%PDF-1.7\r\nbinary\x00\xff");
        expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        assert_eq!(body, expected);

        // A boundary found in the file is never used.
        let tricky = attachment("", "", format!("x--{boundary}y").as_bytes());
        let (body, content_type) = upload_body(&tricky, 0xABCD);
        assert_eq!(
            content_type,
            format!("multipart/form-data; boundary={boundary}-1")
        );
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("filename=\"file\"\r\nContent-Type: application/octet-stream\r\n"));
        assert!(text.contains("name=\"type\"\r\n\r\napplication/octet-stream\r\n"));
    }

    // -- answers -----------------------------------------------------------

    #[test]
    fn sent_and_uploaded_ids() {
        let body = br#"{"messaging_product":"whatsapp","contacts":[{"input":"+16505551234","wa_id":"16505551234"}],"messages":[{"id":"wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA","message_status":"accepted"}]}"#;
        assert_eq!(
            read_sent(body).expect("id"),
            "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA"
        );
        assert!(matches!(read_sent(b"{}"), Err(ChannelError::Other(_))));
        assert!(matches!(read_sent(b"<html>"), Err(ChannelError::Other(_))));
        assert_eq!(
            read_upload(br#"{"id":"1037543291543636"}"#).expect("id"),
            "1037543291543636"
        );
        assert!(matches!(
            read_upload(br#"{"id":5}"#),
            Err(ChannelError::Other(_))
        ));
    }

    #[test]
    fn graph_errors_map_to_channel_errors() {
        let window = br#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because more than 24 hours have passed since the customer last replied to this number."},"fbtrace_id":"AbCdEf"}}"#;
        assert!(matches!(
            read_error(400, window, None),
            ChannelError::Rejected(m) if m == "131047 (#131047) Re-engagement message: Message failed to send because more than 24 hours have passed since the customer last replied to this number."
        ));
        let allowed = br#"{"error":{"message":"(#131030) Recipient phone number not in allowed list","type":"OAuthException","code":131030,"error_data":{"messaging_product":"whatsapp","details":"Recipient phone number not in allowed list: Add recipient phone number to recipient list and try again."},"error_subcode":2655007,"fbtrace_id":"A1"}}"#;
        assert!(matches!(
            read_error(400, allowed, None),
            ChannelError::Rejected(m) if m.starts_with("131030 (#131030) Recipient") && m.contains(": Add recipient")
        ));
        let expired = br#"{"error":{"message":"Error validating access token: Session has expired.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"A2"}}"#;
        assert!(matches!(
            read_error(401, expired, None),
            ChannelError::Rejected(m) if m == "190 Error validating access token: Session has expired."
        ));
        assert!(matches!(
            read_error(429, b"{}", Some(30_000)),
            ChannelError::RateLimited(Some(30_000))
        ));
        let throughput = br#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"error_data":{"details":"Cloud API message throughput has been reached."}}}"#;
        assert!(matches!(
            read_error(400, throughput, None),
            ChannelError::RateLimited(None)
        ));
        let down = br#"{"error":{"message":"An unknown error has occurred.","type":"OAuthException","code":1,"fbtrace_id":"A3"}}"#;
        assert!(matches!(
            read_error(500, down, None),
            ChannelError::Unavailable(m) if m == "1 An unknown error has occurred."
        ));
        assert!(matches!(
            read_error(502, b"<html>Bad Gateway</html>", None),
            ChannelError::Unavailable(m) if m == "HTTP 502: <html>Bad Gateway</html>"
        ));
        assert!(matches!(
            read_error(404, b"", None),
            ChannelError::Rejected(m) if m.contains("404") && m.contains("empty")
        ));
        assert!(matches!(read_error(302, b"", None), ChannelError::Other(_)));

        assert_eq!(retry_after_ms(Some(" 12 ")), Some(12_000));
        assert_eq!(retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after_ms(None), None);

        assert!(matches!(
            http_error(HttpError::Timeout),
            ChannelError::Unavailable(_)
        ));
        assert!(matches!(
            http_error(HttpError::Transport("reset".into())),
            ChannelError::Unavailable(m) if m == "reset"
        ));
        assert!(matches!(
            http_error(HttpError::Denied("graph.facebook.com".into())),
            ChannelError::Other(m) if m.contains("graph.facebook.com")
        ));
        assert!(matches!(
            http_error(HttpError::InvalidRequest("bad url".into())),
            ChannelError::Other(_)
        ));
        assert!(matches!(
            http_error(HttpError::TooLarge),
            ChannelError::Rejected(_)
        ));
    }

    // -- media -------------------------------------------------------------

    const HELLO_HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_B64: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

    fn inbound_media(sha256: Option<&str>) -> Media {
        Media {
            media_id: Some("1003383421387256".into()),
            mime_type: None,
            filename: None,
            caption: None,
            data: None,
            sha256: sha256.map(str::to_owned),
            content_id: None,
        }
    }

    #[test]
    fn media_info_and_hashes() {
        let info = read_media_info(
            br#"{"messaging_product":"whatsapp","url":"https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1003383421387256&ext=1750090702&hash=ATv9","mime_type":"image/jpeg","sha256":"LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=","file_size":5,"id":"1003383421387256"}"#,
        )
        .expect("info");
        assert!(info.url.starts_with("https://lookaside.fbsbx.com/"));
        assert_eq!(info.mime_type.as_deref(), Some("image/jpeg"));
        assert_eq!(info.sha256.as_deref(), Some(HELLO_B64));
        assert_eq!(info.file_size, Some(5));
        assert!(matches!(
            read_media_info(br#"{"id":"1"}"#),
            Err(ChannelError::InvalidPayload(_))
        ));
        assert!(matches!(
            read_media_info(b"x"),
            Err(ChannelError::InvalidPayload(_))
        ));

        for spelled in [
            HELLO_HEX.to_owned(),
            HELLO_HEX.to_uppercase(),
            HELLO_B64.to_owned(),
            HELLO_B64.trim_end_matches('=').to_owned(),
        ] {
            check_sha256(b"hello", &spelled).expect(&spelled);
        }
        assert!(matches!(
            check_sha256(b"hello!", HELLO_B64),
            Err(ChannelError::InvalidPayload(m)) if m == "the media's SHA-256 does not match"
        ));
        assert!(matches!(
            check_sha256(b"hello", "abc"),
            Err(ChannelError::InvalidPayload(m)) if m.contains("neither")
        ));

        // The webhook's hash and names win over the Graph's.
        let a = attachment_from(&inbound_media(Some(HELLO_HEX)), &info, b"hello".to_vec())
            .expect("attachment");
        assert_eq!(
            (a.filename.as_str(), a.mime_type.as_str(), a.data.as_slice()),
            ("", "image/jpeg", b"hello".as_slice())
        );
        let mut named = inbound_media(None);
        named.filename = Some("photo.jpg".into());
        named.mime_type = Some("image/png".into());
        let a = attachment_from(&named, &info, b"hello".to_vec()).expect("attachment");
        assert_eq!(
            (a.filename.as_str(), a.mime_type.as_str()),
            ("photo.jpg", "image/png")
        );
        assert!(matches!(
            attachment_from(&named, &info, b"tampered".to_vec()),
            Err(ChannelError::InvalidPayload(_))
        ));
        let mut wrong = info.clone();
        wrong.sha256 = Some("AAAA".into());
        assert!(matches!(
            attachment_from(&inbound_media(Some(HELLO_B64)), &wrong, b"x".to_vec()),
            Err(ChannelError::InvalidPayload(_))
        ));
        let bare = MediaInfo {
            url: "https://x".into(),
            ..MediaInfo::default()
        };
        let a =
            attachment_from(&inbound_media(None), &bare, b"anything".to_vec()).expect("unchecked");
        assert_eq!(a.mime_type, "application/octet-stream");
    }
}
