//! 004's incoming webhook: the signature, the signed timestamp and the
//! envelope `{"event", "organization"?, "id"?, "data"}`.

use serde_json::{Map, Value};

/// Largest body accepted.
pub const BODY_MAX: usize = 256 * 1024;
/// Longest delivery `id` (and `data.id` of `message.created`).
pub const DELIVERY_ID_MAX: usize = 200;
/// The organization a delivery without `organization` is for.
pub const DEFAULT_ORG: &str = "default";

/// Whether `signature` (hex, optionally `sha256=`) is the HMAC-SHA256 of
/// `parts` (concatenated) under `secret`, compared in constant time.
pub fn signature_valid(secret: &str, parts: &[&[u8]], signature: &str) -> bool {
    use hmac::Mac as _;
    let signature = signature.trim();
    let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Ok(expected) = hex::decode(signature) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&expected).is_ok()
}

/// The signed timestamp of a delivery, if it has one: `X-Webhook-Timestamp`
/// (Unix seconds) within `tolerance_s` of `now`. The signature then covers
/// `"<timestamp>." + body`, so a captured delivery cannot be replayed
/// outside the window.
pub fn signed_timestamp(
    header: Option<&str>,
    now: i64,
    tolerance_s: u64,
) -> Result<Option<i64>, &'static str> {
    let Some(text) = header else {
        return Ok(None);
    };
    let ts = text
        .trim()
        .parse::<i64>()
        .map_err(|_| "X-Webhook-Timestamp must be Unix seconds")?;
    if now.abs_diff(ts) > tolerance_s {
        return Err("X-Webhook-Timestamp is outside the tolerance window");
    }
    Ok(Some(ts))
}

/// Organization slugs: 1–64 lower-case letters, digits and `-`.
pub fn validate_slug(value: &str) -> Result<(), String> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "organization slug {value:?} must be 1-64 characters of a-z, 0-9 and '-'"
        ));
    }
    Ok(())
}

/// A delivery's envelope, checked.
#[derive(Debug, PartialEq)]
pub struct Envelope {
    pub event: String,
    /// The organization's slug ([`DEFAULT_ORG`] when absent).
    pub organization: String,
    /// The sender's id for this delivery: a repeat is answered from the
    /// first outcome.
    pub id: Option<String>,
    pub data: Map<String, Value>,
}

/// Reads a delivery's envelope from its raw body; the error is a sentence
/// for the sender.
pub fn envelope(body: &[u8]) -> Result<Envelope, String> {
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| format!("The body is not JSON: {e}"))?;
    let Value::Object(payload) = payload else {
        return Err("The body must be a JSON object".into());
    };
    if let Some(path) = crate::text::nul_path(&payload) {
        return Err(format!(
            "{path} must not contain the NUL character (U+0000)"
        ));
    }
    let event = match payload.get("event") {
        Some(Value::String(e)) => e.clone(),
        _ => {
            return Err("event must be ticket.created, ticket.updated or message.created".into());
        }
    };
    let organization = match payload.get("organization") {
        None | Some(Value::Null) => DEFAULT_ORG.to_owned(),
        Some(Value::String(slug)) => {
            validate_slug(slug)?;
            slug.clone()
        }
        Some(_) => return Err("organization must be an organization's slug (a string)".into()),
    };
    let id = match payload.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id))
            if !id.trim().is_empty() && id.chars().count() <= DELIVERY_ID_MAX =>
        {
            Some(id.clone())
        }
        Some(_) => {
            return Err(format!(
                "id must be a string of 1 to {DELIVERY_ID_MAX} characters"
            ));
        }
    };
    let data = match payload.get("data") {
        Some(Value::Object(data)) => data.clone(),
        _ => return Err("data must be an object".into()),
    };
    Ok(Envelope {
        event,
        organization,
        id,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_cover_every_part() {
        let s = sign("k", b"12.{}");
        assert!(signature_valid("k", &[b"12.", b"{}"], &s));
        assert!(signature_valid("k", &[b"12.{}"], &format!("sha256={s}")));
        assert!(!signature_valid("k", &[b"{}"], &s));
        assert!(!signature_valid("other", &[b"12.{}"], &s));
        assert!(!signature_valid("k", &[b"12.{}"], "zz"));
    }

    #[test]
    fn timestamps_must_be_fresh() {
        assert_eq!(signed_timestamp(None, 1000, 300), Ok(None));
        assert_eq!(signed_timestamp(Some("900"), 1000, 300), Ok(Some(900)));
        assert!(signed_timestamp(Some("600"), 1000, 300).is_err());
        assert!(signed_timestamp(Some("1400"), 1000, 300).is_err());
        assert!(signed_timestamp(Some("soon"), 1000, 300).is_err());
        assert!(signed_timestamp(Some("-9223372036854775808"), i64::MAX, 300).is_err());
    }

    #[test]
    fn envelopes_are_checked() {
        let e = envelope(br#"{"event":"ticket.created","data":{"title":"t"}}"#).expect("valid");
        assert_eq!((e.organization.as_str(), e.id), (DEFAULT_ORG, None));
        for bad in [
            &br#"[]"#[..],
            br#"{"event":1,"data":{}}"#,
            br#"{"event":"e","organization":1,"data":{}}"#,
            br#"{"event":"e","organization":"Not A Slug","data":{}}"#,
            br#"{"event":"e","id":"","data":{}}"#,
            br#"{"event":"e","data":[]}"#,
            br#"{"event":"e","data":{"t":"\u0000"}}"#,
        ] {
            assert!(envelope(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
