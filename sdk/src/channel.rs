//! The `channel` world: a customer channel (WhatsApp, email...). The host
//! hands it raw webhooks to verify and parse, and outbound messages to
//! send; the email channel also shapes and parses mail while the host's
//! transport (`host::mail`) moves it.

pub use crate::__channel::exports::gateway::plugin::messaging::{
    Attachment, ChannelError, ComposedMail, ContentKind, DeliveryState, DeliveryStatus,
    InboundEvent, InboundMessage, Location, Media, OutboundMessage, ParsedWebhook, SentMessage,
    Template, WebhookRequest, WebhookResponse,
};

/// A channel. Every method defaults to [`ChannelError::NotSupported`].
pub trait Channel {
    /// Answers a provider's subscription handshake (a GET with a challenge).
    fn verify_handshake(request: WebhookRequest) -> Result<WebhookResponse, ChannelError> {
        let _ = request;
        Err(ChannelError::NotSupported)
    }

    /// Verifies an inbound webhook's signature and turns it into events.
    fn parse_webhook(request: WebhookRequest) -> Result<ParsedWebhook, ChannelError> {
        let _ = request;
        Err(ChannelError::NotSupported)
    }

    /// Sends one outbound message through the provider.
    fn send(message: OutboundMessage) -> Result<SentMessage, ChannelError> {
        let _ = message;
        Err(ChannelError::NotSupported)
    }

    /// Downloads an inbound message's file and checks its hash.
    fn fetch_media(media: Media) -> Result<Attachment, ChannelError> {
        let _ = media;
        Err(ChannelError::NotSupported)
    }

    /// Tells the provider that a customer's message has been read.
    fn mark_read(account: Option<String>, external_id: String) -> Result<(), ChannelError> {
        let _ = (account, external_id);
        Err(ChannelError::NotSupported)
    }

    /// Shapes an outbound message as RFC 822 mail (email channel).
    fn compose_mail(message: OutboundMessage) -> Result<ComposedMail, ChannelError> {
        let _ = message;
        Err(ChannelError::NotSupported)
    }

    /// Parses a raw RFC 822 message fetched by the host (email channel).
    fn parse_mail(raw: Vec<u8>) -> Result<InboundMessage, ChannelError> {
        let _ = raw;
        Err(ChannelError::NotSupported)
    }
}

/// Exports `$ty` (a [`Channel`]) as the component's `messaging` interface.
#[macro_export]
macro_rules! export_channel {
    ($ty:ty) => {
        const _: () = {
            struct __Guest;

            impl $crate::__channel::exports::gateway::plugin::messaging::Guest for __Guest {
                fn verify_handshake(
                    request: $crate::channel::WebhookRequest,
                ) -> ::core::result::Result<
                    $crate::channel::WebhookResponse,
                    $crate::channel::ChannelError,
                > {
                    <$ty as $crate::Channel>::verify_handshake(request)
                }

                fn parse_webhook(
                    request: $crate::channel::WebhookRequest,
                ) -> ::core::result::Result<
                    $crate::channel::ParsedWebhook,
                    $crate::channel::ChannelError,
                > {
                    <$ty as $crate::Channel>::parse_webhook(request)
                }

                fn send(
                    message: $crate::channel::OutboundMessage,
                ) -> ::core::result::Result<
                    $crate::channel::SentMessage,
                    $crate::channel::ChannelError,
                > {
                    <$ty as $crate::Channel>::send(message)
                }

                fn fetch_media(
                    media: $crate::channel::Media,
                ) -> ::core::result::Result<
                    $crate::channel::Attachment,
                    $crate::channel::ChannelError,
                > {
                    <$ty as $crate::Channel>::fetch_media(media)
                }

                fn mark_read(
                    account: ::core::option::Option<::std::string::String>,
                    external_id: ::std::string::String,
                ) -> ::core::result::Result<(), $crate::channel::ChannelError> {
                    <$ty as $crate::Channel>::mark_read(account, external_id)
                }

                fn compose_mail(
                    message: $crate::channel::OutboundMessage,
                ) -> ::core::result::Result<
                    $crate::channel::ComposedMail,
                    $crate::channel::ChannelError,
                > {
                    <$ty as $crate::Channel>::compose_mail(message)
                }

                fn parse_mail(
                    raw: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<
                    $crate::channel::InboundMessage,
                    $crate::channel::ChannelError,
                > {
                    <$ty as $crate::Channel>::parse_mail(raw)
                }
            }

    $crate::__channel::__export_channel!(__Guest with_types_in $crate::__channel);
        };
    };
}
