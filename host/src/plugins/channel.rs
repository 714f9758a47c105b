//! Calls into the `channel` world, and the checks on what comes back.

use super::bindings::channel::Channel;
use super::bindings::channel_api::{
    Attachment, ChannelError, ComposedMail, InboundEvent, InboundMessage, Media, OutboundMessage,
    ParsedWebhook, SentMessage, WebhookRequest, WebhookResponse,
};
use super::host::HostState;
use super::{Failure, Plugin, PluginError, Pre};

/// Most events one webhook may carry.
const MAX_EVENTS: usize = 10_000;
/// Longest text of one inbound message (WhatsApp allows 4,096 characters;
/// email bodies are longer).
const MAX_TEXT_BYTES: usize = 1 << 20;
/// Largest webhook answer body.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

impl Plugin {
    fn channel_pre(&self) -> Result<&super::bindings::channel::ChannelPre<HostState>, PluginError> {
        match &self.pre {
            Pre::Channel(pre) => Ok(pre),
            _ => Err(self.error(Failure::WrongWorld(self.config.world))),
        }
    }

    /// Runs one export of the channel world in a fresh instance.
    async fn channel_call<T>(
        &self,
        op: &'static str,
        f: impl AsyncFnOnce(
            &Channel,
            &mut wasmtime::Store<HostState>,
        ) -> wasmtime::Result<Result<T, ChannelError>>,
    ) -> Result<T, PluginError> {
        let pre = self.channel_pre()?;
        let mut call = self.begin().await?;
        let store = &mut call.store;
        let outcome = tokio::time::timeout_at(call.deadline, async {
            let instance = pre.instantiate_async(&mut *store).await?;
            f(&instance, &mut *store).await
        })
        .await;
        match self.finish(op, &call, outcome)? {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(op, self.error(Failure::Channel(e)))),
        }
    }

    /// Answers a provider's subscription handshake.
    pub async fn verify_handshake(
        &self,
        request: &WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        let answer = self
            .channel_call("verify-handshake", async |i, s| {
                i.gateway_plugin_messaging()
                    .call_verify_handshake(s, request)
                    .await
            })
            .await?;
        self.checked_response("verify-handshake", answer)
    }

    /// Verifies a webhook and normalizes its events.
    pub async fn parse_webhook(
        &self,
        request: &WebhookRequest,
    ) -> Result<ParsedWebhook, PluginError> {
        let mut parsed = self
            .channel_call("parse-webhook", async |i, s| {
                i.gateway_plugin_messaging()
                    .call_parse_webhook(s, request)
                    .await
            })
            .await?;
        if parsed.events.len() > MAX_EVENTS {
            return Err(self.failed(
                "parse-webhook",
                self.error(Failure::Invalid(format!(
                    "{} events from one webhook (at most {MAX_EVENTS})",
                    parsed.events.len()
                ))),
            ));
        }
        for event in &parsed.events {
            if let InboundEvent::Message(m) = event
                && m.text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES)
            {
                return Err(self.failed(
                    "parse-webhook",
                    self.error(Failure::Invalid(format!(
                        "a message text longer than {MAX_TEXT_BYTES} bytes"
                    ))),
                ));
            }
        }
        parsed.response = self.checked_response("parse-webhook", parsed.response)?;
        Ok(parsed)
    }

    /// Sends one message to a customer.
    pub async fn send_message(
        &self,
        message: &OutboundMessage,
    ) -> Result<SentMessage, PluginError> {
        let sent = self
            .channel_call("send", async |i, s| {
                i.gateway_plugin_messaging().call_send(s, message).await
            })
            .await?;
        if sent.external_id.is_empty() || sent.external_id.len() > 512 {
            return Err(self.failed(
                "send",
                self.error(Failure::Invalid(
                    "the provider's message id must be 1 to 512 bytes".into(),
                )),
            ));
        }
        Ok(sent)
    }

    /// Downloads an inbound message's file.
    pub async fn fetch_media(&self, media: &Media) -> Result<Attachment, PluginError> {
        self.channel_call("fetch-media", async |i, s| {
            i.gateway_plugin_messaging()
                .call_fetch_media(s, media)
                .await
        })
        .await
    }

    /// Tells the provider that a customer's message was read.
    pub async fn mark_read(
        &self,
        account: Option<&str>,
        external_id: &str,
    ) -> Result<(), PluginError> {
        self.channel_call("mark-read", async |i, s| {
            i.gateway_plugin_messaging()
                .call_mark_read(s, account, external_id)
                .await
        })
        .await
    }

    /// Shapes an outgoing message into a mail for the host to submit.
    pub async fn compose_mail(
        &self,
        message: &OutboundMessage,
    ) -> Result<ComposedMail, PluginError> {
        let mail = self
            .channel_call("compose-mail", async |i, s| {
                i.gateway_plugin_messaging()
                    .call_compose_mail(s, message)
                    .await
            })
            .await?;
        let one_line = |t: &str| !t.is_empty() && t.len() <= 998 && !t.contains(['\r', '\n']);
        if !one_line(&mail.message_id)
            || !one_line(&mail.envelope_from)
            || mail.envelope_to.is_empty()
            || !mail.envelope_to.iter().all(|t| one_line(t))
            || mail.raw.is_empty()
        {
            return Err(self.failed(
                "compose-mail",
                self.error(Failure::Invalid(
                    "a composed mail needs a Message-ID, an envelope sender and recipients (one line each) and a body".into(),
                )),
            ));
        }
        Ok(mail)
    }

    /// Normalizes a raw RFC 822 message.
    pub async fn parse_mail(&self, raw: &[u8]) -> Result<InboundMessage, PluginError> {
        let mut m = self
            .channel_call("parse-mail", async |i, s| {
                i.gateway_plugin_messaging().call_parse_mail(s, raw).await
            })
            .await?;
        // A mail is never refused for its size: the text is cut (the whole
        // mail is kept as the original), an odd id replaced by its digest.
        for text in [&mut m.text, &mut m.html].into_iter().flatten() {
            if text.len() > MAX_TEXT_BYTES {
                let mut end = MAX_TEXT_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
        }
        if m.external_id.is_empty() || m.external_id.len() > 512 {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(if m.external_id.is_empty() {
                raw
            } else {
                m.external_id.as_bytes()
            });
            m.external_id = format!("generated-{}", &hex::encode(digest)[..32]);
        }
        Ok(m)
    }

    /// One instance kept for several parses: for benchmarks, to tell the
    /// parse from the instantiation. Each call still has its own deadline.
    pub async fn channel_session(&self) -> Result<ChannelSession<'_>, PluginError> {
        let pre = self.channel_pre()?;
        let mut call = self.begin().await?;
        let outcome =
            tokio::time::timeout_at(call.deadline, pre.instantiate_async(&mut call.store)).await;
        let instance = self.finish("instantiate", &call, outcome)?;
        Ok(ChannelSession {
            plugin: self,
            call,
            instance,
        })
    }

    fn checked_response(
        &self,
        op: &'static str,
        r: WebhookResponse,
    ) -> Result<WebhookResponse, PluginError> {
        if !(100..=599).contains(&r.status)
            || r.body.len() > MAX_RESPONSE_BYTES
            || r.content_type.len() > 256
            || r.content_type.contains(['\r', '\n'])
        {
            return Err(self.failed(
                op,
                self.error(Failure::Invalid(format!(
                    "a webhook answer needs a status 100-599, a content type of one line and at most {MAX_RESPONSE_BYTES} bytes"
                ))),
            ));
        }
        Ok(r)
    }
}

/// See [`Plugin::channel_session`].
pub struct ChannelSession<'a> {
    plugin: &'a Plugin,
    call: super::Call<'a>,
    instance: Channel,
}

impl ChannelSession<'_> {
    pub async fn parse_webhook(
        &mut self,
        request: &WebhookRequest,
    ) -> Result<ParsedWebhook, PluginError> {
        let deadline = tokio::time::Instant::now() + self.plugin.config.grants.timeout;
        self.call.deadline = deadline;
        let state = self.call.store.data_mut();
        state.deadline = deadline;
        state.limiter.exceeded = false;
        let outcome = tokio::time::timeout_at(
            deadline,
            self.instance
                .gateway_plugin_messaging()
                .call_parse_webhook(&mut self.call.store, request),
        )
        .await;
        match self.plugin.finish("parse-webhook", &self.call, outcome)? {
            Ok(parsed) => Ok(parsed),
            Err(e) => Err(self
                .plugin
                .failed("parse-webhook", self.plugin.error(Failure::Channel(e)))),
        }
    }
}

/// The plugin's own error, for people.
pub fn describe(e: &ChannelError) -> String {
    match e {
        ChannelError::NotSupported => "the channel does not offer this function".into(),
        ChannelError::InvalidSignature(m) => format!("the signature did not match: {m}"),
        ChannelError::InvalidPayload(m) => format!("the payload was refused: {m}"),
        ChannelError::Rejected(m) => format!("the provider refused the message: {m}"),
        ChannelError::RateLimited(Some(ms)) => {
            format!("the provider is rate limiting; retry in {ms} ms")
        }
        ChannelError::RateLimited(None) => "the provider is rate limiting".into(),
        ChannelError::Unavailable(m) => format!("the provider is unavailable: {m}"),
        ChannelError::Other(m) => m.clone(),
    }
}
