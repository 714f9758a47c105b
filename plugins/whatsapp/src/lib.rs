//! `whatsapp`: a channel speaking the WhatsApp Cloud API (Meta Graph API).
//!
//! Webhooks are verified against `X-Hub-Signature-256` (HMAC-SHA256 of the
//! raw body under `WHATSAPP_APP_SECRET`) and turned into messages and
//! delivery reports; the subscription handshake checks
//! `WHATSAPP_VERIFY_TOKEN`. Text, templates and attachments (uploaded
//! first, then sent as images or documents) go out through
//! `POST {graph}/{phone_number_id}/messages` with
//! `Authorization: Bearer WHATSAPP_ACCESS_TOKEN`; inbound media is
//! downloaded through `GET {graph}/{media_id}` and checked against its
//! SHA-256.
//!
//! Settings (see [`wire::Settings`]): `graph_api_url` (default
//! `https://graph.facebook.com/v23.0`), `phone_number_ids`. The entry must
//! grant the three secrets and the HTTP hosts `graph.facebook.com` and
//! `lookaside.fbsbx.com` (where media downloads point).
//!
//! The parts of a send are remembered in the entry's key-value store by
//! `client-message-id` for a day, so a retried send does not repeat the
//! parts that already went out.

pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};

use gateway_plugin_sdk::Channel;
use gateway_plugin_sdk::channel::{
    Attachment, ChannelError, Media, OutboundMessage, ParsedWebhook, SentMessage, WebhookRequest,
    WebhookResponse,
};
use gateway_plugin_sdk::fetch::{self, header_value};
use gateway_plugin_sdk::host::types::Pair;
use gateway_plugin_sdk::host::{clock, config, http, kv, log, secrets};
use serde_json::Value;

use wire::{MediaInfo, Settings};

/// How long the parts of a send are remembered for a retry.
const MEMO_TTL_MS: u64 = 24 * 60 * 60 * 1000;

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct WhatsApp;

impl Channel for WhatsApp {
    fn verify_handshake(request: WebhookRequest) -> Result<WebhookResponse, ChannelError> {
        let token = secret(wire::VERIFY_TOKEN)?;
        wire::handshake(&request.query, &token)
    }

    fn parse_webhook(request: WebhookRequest) -> Result<ParsedWebhook, ChannelError> {
        let header = header_value(&request.headers, wire::SIGNATURE_HEADER);
        // Without a signature there is nothing to check the secret against.
        let app_secret = match header {
            Some(_) => secret(wire::APP_SECRET)?,
            None => String::new(),
        };
        wire::verify_signature(app_secret.as_bytes(), &request.body, header)?;
        Ok(ParsedWebhook {
            events: wire::parse_webhook_body(&request.body)?,
            response: wire::received(),
        })
    }

    fn send(message: OutboundMessage) -> Result<SentMessage, ChannelError> {
        let settings = Settings::parse(&config::settings())?;
        let phone = message
            .sender
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                ChannelError::Rejected("no business phone number to send from".into())
            })?;
        if message.recipient.trim().is_empty() {
            return Err(ChannelError::Rejected("no recipient to send to".into()));
        }
        let messages_url = settings.url(phone, "messages")?;
        let token = secret(wire::ACCESS_TOKEN)?;
        let to = message.recipient.as_str();
        let reply = message.in_reply_to.as_deref();
        let memo = message.client_message_id.as_str();

        let external_id = if let Some(template) = &message.template {
            send_part(&messages_url, &token, memo, 0, || {
                wire::template_body(to, template, reply)
            })?
        } else if !message.attachments.is_empty() {
            let upload_url = settings.url(phone, "media")?;
            let mut ids = Vec::with_capacity(message.attachments.len());
            for (part, attachment) in message.attachments.iter().enumerate() {
                let caption = (part == 0).then_some(message.text.as_str());
                ids.push(send_part(&messages_url, &token, memo, part, || {
                    let media_id = upload(&upload_url, &token, attachment)?;
                    Ok(wire::media_body(to, attachment, &media_id, caption, reply))
                })?);
            }
            ids.into_iter().next().unwrap_or_default()
        } else {
            if message.text.trim().is_empty() {
                return Err(ChannelError::Rejected(
                    "nothing to send: no text, attachment or template".into(),
                ));
            }
            send_part(&messages_url, &token, memo, 0, || {
                Ok(wire::text_body(to, &message.text, reply))
            })?
        };
        Ok(SentMessage {
            external_id,
            timestamp_ms: clock::now_ms(),
        })
    }

    fn fetch_media(mut media: Media) -> Result<Attachment, ChannelError> {
        let Some(media_id) = media.media_id.clone().filter(|id| !id.is_empty()) else {
            return match media.data.take() {
                Some(data) => wire::attachment_from(&media, &MediaInfo::default(), data),
                None => Err(ChannelError::Rejected(
                    "the media has neither a media-id to fetch nor data".into(),
                )),
            };
        };
        let settings = Settings::parse(&config::settings())?;
        let token = secret(wire::ACCESS_TOKEN)?;
        let answer = call(
            http::Method::Get,
            &settings.url(&media_id, "")?,
            &token,
            None,
            Vec::new(),
        )?;
        let info = wire::read_media_info(&answer)?;
        let data = call(http::Method::Get, &info.url, &token, None, Vec::new())?;
        wire::attachment_from(&media, &info, data)
    }

    fn mark_read(account: Option<String>, external_id: String) -> Result<(), ChannelError> {
        let account = account.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
            ChannelError::Rejected("no business phone number the message was sent to".into())
        })?;
        let settings = Settings::parse(&config::settings())?;
        let token = secret(wire::ACCESS_TOKEN)?;
        let body = wire::mark_read_body(&external_id).to_string().into_bytes();
        call(
            http::Method::Post,
            &settings.url(&account, "messages")?,
            &token,
            Some("application/json"),
            body,
        )?;
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
gateway_plugin_sdk::export_channel!(WhatsApp);

/// The secret `name`; missing or empty is an error naming it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn secret(name: &str) -> Result<String, ChannelError> {
    match secrets::get(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) | Err(secrets::SecretError::Missing(_)) => {
            Err(ChannelError::Other(format!("{name} is not set")))
        }
        Err(secrets::SecretError::Denied(_)) => Err(ChannelError::Other(format!(
            "{name} is not granted to this plugin (grants.secrets)"
        ))),
    }
}

/// One Graph request with the bearer token; the body of a 2xx answer.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn call(
    method: http::Method,
    url: &str,
    token: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<Vec<u8>, ChannelError> {
    let mut request = fetch::header(
        fetch::request(method, url, wire::TIMEOUT_MS),
        "authorization",
        &format!("Bearer {token}"),
    );
    if let Some(content_type) = content_type {
        request = fetch::header(request, "content-type", content_type);
    }
    request.body = body;
    match http::send(&request) {
        Ok(response) if (200..300).contains(&response.status) => Ok(response.body),
        Ok(response) => Err(wire::read_error(
            response.status,
            &response.body,
            wire::retry_after_ms(header_value(&response.headers, "retry-after")),
        )),
        Err(e) => Err(wire::http_error(e)),
    }
}

/// Uploads an attachment; its Graph media id.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn upload(url: &str, token: &str, attachment: &Attachment) -> Result<String, ChannelError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = clock::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.rotate_left(40);
    let (body, content_type) = wire::upload_body(attachment, seed);
    let answer = call(http::Method::Post, url, token, Some(&content_type), body)?;
    wire::read_upload(&answer)
}

/// Sends part `part` of a message (the body built by `body`, which may
/// upload first) and returns its id, unless an earlier try of the same
/// `client_message_id` already sent it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn send_part(
    url: &str,
    token: &str,
    client_message_id: &str,
    part: usize,
    body: impl FnOnce() -> Result<Value, ChannelError>,
) -> Result<String, ChannelError> {
    let key = (!client_message_id.is_empty()).then(|| format!("sent/{client_message_id}/{part}"));
    if let Some(key) = &key
        && let Ok(Some(id)) = kv::get(key)
        && let Ok(id) = String::from_utf8(id)
        && !id.is_empty()
    {
        return Ok(id);
    }
    let body = body()?.to_string().into_bytes();
    let answer = call(
        http::Method::Post,
        url,
        token,
        Some("application/json"),
        body,
    )?;
    let id = wire::read_sent(&answer)?;
    if let Some(key) = &key
        && let Err(e) = kv::set(key, id.as_bytes(), Some(MEMO_TTL_MS))
    {
        log::write(
            log::Level::Warn,
            "could not remember a sent WhatsApp message; a retry may send it again",
            &[Pair {
                key: "error".into(),
                value: format!("{e:?}"),
            }],
        );
    }
    Ok(id)
}
