//! The `webhook` world: signs the gateway's outgoing events for a receiver,
//! and verifies incoming ones.

pub use crate::__webhook::exports::gateway::plugin::webhooks::{
    Event, Incoming, SignedRequest, VerifiedEvent, WebhookError,
};

/// A webhook adapter. Every method defaults to
/// [`WebhookError::NotSupported`].
pub trait Webhook {
    /// Shapes and signs `event` as the receiver expects it.
    fn format(event: Event) -> Result<SignedRequest, WebhookError> {
        let _ = event;
        Err(WebhookError::NotSupported)
    }

    /// Verifies an incoming request and reads the event it carries.
    fn verify(request: Incoming) -> Result<VerifiedEvent, WebhookError> {
        let _ = request;
        Err(WebhookError::NotSupported)
    }
}

/// Exports `$ty` (a [`Webhook`]) as the component's `webhooks` interface.
#[macro_export]
macro_rules! export_webhook {
    ($ty:ty) => {
        const _: () = {
            struct __Guest;

            impl $crate::__webhook::exports::gateway::plugin::webhooks::Guest for __Guest {
                fn format(
                    event: $crate::webhook::Event,
                ) -> ::core::result::Result<
                    $crate::webhook::SignedRequest,
                    $crate::webhook::WebhookError,
                > {
                    <$ty as $crate::Webhook>::format(event)
                }

                fn verify(
                    request: $crate::webhook::Incoming,
                ) -> ::core::result::Result<
                    $crate::webhook::VerifiedEvent,
                    $crate::webhook::WebhookError,
                > {
                    <$ty as $crate::Webhook>::verify(request)
                }
            }

    $crate::__webhook::__export_webhook!(__Guest with_types_in $crate::__webhook);
        };
    };
}
