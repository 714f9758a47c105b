//! An example of the `webhook` world: the event goes out as JSON with an
//! `X-Gateway-Signature: sha256=<hex>` header, the HMAC-SHA256 of the body
//! under the secret named by `settings.secret_env` (granted in
//! `grants.secrets`); incoming requests are verified the same way, in
//! constant time.

use gateway_plugin_sdk::host::{secrets, types::Header};
use gateway_plugin_sdk::sign::{hmac_sha256_hex, verify_hmac_sha256_hex};
use gateway_plugin_sdk::webhook::{Event, Incoming, SignedRequest, VerifiedEvent, WebhookError};
use gateway_plugin_sdk::{Webhook, fetch::header_value};

const SIGNATURE: &str = "x-gateway-signature";

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Settings {
    /// The environment variable holding the shared secret.
    secret_env: String,
}

fn secret() -> Result<Vec<u8>, WebhookError> {
    let settings: Settings = gateway_plugin_sdk::settings().map_err(WebhookError::Other)?;
    secrets::get(&settings.secret_env)
        .map(String::into_bytes)
        .map_err(|e| WebhookError::Other(format!("signing secret: {e:?}")))
}

struct HmacWebhook;

impl Webhook for HmacWebhook {
    fn format(event: Event) -> Result<SignedRequest, WebhookError> {
        let payload: serde_json::Value = serde_json::from_str(&event.payload)
            .map_err(|e| WebhookError::InvalidPayload(e.to_string()))?;
        let body = serde_json::json!({
            "id": event.id,
            "type": event.kind,
            "occurred_at_ms": event.occurred_at_ms,
            "organization_id": event.organization_id,
            "data": payload,
        })
        .to_string()
        .into_bytes();
        let signature = hmac_sha256_hex(&secret()?, &body);
        let header = |name: &str, value: String| Header {
            name: name.into(),
            value,
        };
        Ok(SignedRequest {
            headers: vec![
                header("content-type", "application/json".into()),
                header("x-gateway-event", event.kind),
                header(SIGNATURE, format!("sha256={signature}")),
            ],
            body,
        })
    }

    fn verify(request: Incoming) -> Result<VerifiedEvent, WebhookError> {
        let signature = header_value(&request.headers, SIGNATURE)
            .ok_or_else(|| WebhookError::InvalidSignature(format!("no {SIGNATURE} header")))?;
        if !verify_hmac_sha256_hex(&secret()?, &request.body, signature) {
            return Err(WebhookError::InvalidSignature("signature mismatch".into()));
        }
        let body: serde_json::Value = serde_json::from_slice(&request.body)
            .map_err(|e| WebhookError::InvalidPayload(e.to_string()))?;
        Ok(VerifiedEvent {
            id: body["id"].as_str().map(str::to_owned),
            kind: body["type"].as_str().unwrap_or_default().to_owned(),
            payload: body["data"].to_string(),
        })
    }
}

gateway_plugin_sdk::export_webhook!(HmacWebhook);
