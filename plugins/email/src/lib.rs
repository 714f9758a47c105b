//! `email`: the email channel. The host moves the mail (IMAP in, SMTP
//! out, its `mail` import); this plugin only shapes and parses it, so the
//! rules for reading a customer's mail live in one place that can be
//! tested without a mail server.
//!
//! - `parse-mail` ([`parse::parse_mail`]) turns a raw RFC 822 message into
//!   an inbound message: the customer's new text without quoted history
//!   or signature ([`quote`], [`html`]), the HTML, the files, and in
//!   `metadata` threading headers and whether a machine wrote it
//!   (auto-replies, bounces: [`bounce`]).
//! - `compose-mail` ([`compose::compose_mail`]) turns an outbound message
//!   into a mail with a deterministic `Message-ID`, threading headers and
//!   text and HTML alternatives.
//!
//! The other functions of the `channel` world are not offered (the
//! trait's default answers `not-supported`). README.md is the contract
//! with the host: the metadata keys and the quote rules.

pub mod bounce;
pub mod compose;
pub mod html;
pub mod parse;
pub mod quote;

#[cfg(test)]
mod tests;

use gateway_plugin_sdk::Channel;
use gateway_plugin_sdk::channel::{ChannelError, ComposedMail, InboundMessage, OutboundMessage};

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Email;

impl Channel for Email {
    fn compose_mail(message: OutboundMessage) -> Result<ComposedMail, ChannelError> {
        compose::compose_mail(&message, gateway_plugin_sdk::host::clock::now_ms())
    }

    fn parse_mail(raw: Vec<u8>) -> Result<InboundMessage, ChannelError> {
        parse::parse_mail(&raw)
    }
}

#[cfg(target_arch = "wasm32")]
gateway_plugin_sdk::export_channel!(Email);
