//! Helpers plugin authors would otherwise write each time: reading the
//! entry's settings, signing and verifying with HMAC-SHA256, and HTTP with
//! JSON through the host's (grant-checked) import.

/// The entry's `settings` table, deserialized into `T` (use
/// `#[serde(default)]` on `T` for optional settings).
///
/// ```ignore
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default)]
/// struct Settings { base_url: String, greeting: String }
/// let s: Settings = gateway_plugin_sdk::settings()?;
/// ```
pub fn settings<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    let text = crate::host::config::settings();
    let text = if text.trim().is_empty() { "{}" } else { &text };
    serde_json::from_str(text).map_err(|e| {
        format!(
            "settings of plugin `{}`: {e}",
            crate::host::config::plugin_id()
        )
    })
}

/// HMAC-SHA256, for webhook signatures.
pub mod sign {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    type HmacSha256 = Hmac<Sha256>;

    /// The HMAC-SHA256 of `message` under `key`. In a component the host
    /// computes it (`crypto` import: natively, with the CPU's SHA
    /// instructions); built natively (tests), this crate does.
    pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        #[cfg(target_family = "wasm")]
        if let Ok(mac) =
            <[u8; 32]>::try_from(crate::host::crypto::hmac_sha256(key, message).as_slice())
        {
            return mac;
        }
        // HMAC accepts keys of any length: `new_from_slice` cannot fail.
        let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// The SHA-256 of `data`, computed by the host in a component (see
    /// [`hmac_sha256`]).
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        #[cfg(target_family = "wasm")]
        if let Ok(digest) = <[u8; 32]>::try_from(crate::host::crypto::sha256(data).as_slice()) {
            return digest;
        }
        use sha2::Digest;
        Sha256::digest(data).into()
    }

    /// The same, as lower-case hex (`X-Hub-Signature-256: sha256=<hex>`).
    pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
        hex::encode(hmac_sha256(key, message))
    }

    /// Whether `signature` is the HMAC-SHA256 of `message` under `key`,
    /// compared in constant time.
    pub fn verify_hmac_sha256(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        constant_time_eq(&hmac_sha256(key, message), signature)
    }

    /// Whether `a` and `b` are equal, in a time that depends on their
    /// lengths only.
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }

    /// [`verify_hmac_sha256`] for a hex signature (either case, with or
    /// without a `sha256=` prefix). Malformed hex is a mismatch.
    pub fn verify_hmac_sha256_hex(key: &[u8], message: &[u8], signature: &str) -> bool {
        let signature = signature.trim();
        let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
        match hex::decode(signature) {
            Ok(bytes) => verify_hmac_sha256(key, message, &bytes),
            Err(_) => false,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc_4231_case_2() {
            let mac = hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?");
            assert_eq!(
                mac,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
            );
            assert!(verify_hmac_sha256_hex(
                b"Jefe",
                b"what do ya want for nothing?",
                &format!("sha256={}", mac.to_uppercase())
            ));
            assert!(!verify_hmac_sha256_hex(b"Jefe", b"what do ya want?", &mac));
            assert!(!verify_hmac_sha256_hex(b"Jefe", b"x", "not hex"));
            assert!(!verify_hmac_sha256(b"Jefe", b"x", &[0; 31]));
        }
    }
}

/// HTTP through the host's import, with JSON conveniences. Every request
/// is checked against the entry's `grants.http_hosts`.
pub mod fetch {
    use crate::host::http::{self, Header, HttpError, Method, Request, Response};
    use crate::host::types;

    /// A request with no headers and no body.
    pub fn request(method: Method, url: &str, timeout_ms: u32) -> Request {
        Request {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms,
        }
    }

    /// Adds a header.
    pub fn header(mut request: Request, name: &str, value: &str) -> Request {
        request.headers.push(types::Header {
            name: name.to_owned(),
            value: value.to_owned(),
        });
        request
    }

    /// Sends `request`.
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        http::send(request)
    }

    /// GETs `url`.
    pub fn get(url: &str, timeout_ms: u32) -> Result<Response, HttpError> {
        http::send(&request(Method::Get, url, timeout_ms))
    }

    /// POSTs `body` as JSON to `url`, with extra `headers`.
    pub fn post_json(
        url: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
        timeout_ms: u32,
    ) -> Result<Response, HttpError> {
        let mut request = header(
            request(Method::Post, url, timeout_ms),
            "content-type",
            "application/json",
        );
        for (name, value) in headers {
            request = header(request, name, value);
        }
        request.body = body.to_string().into_bytes();
        http::send(&request)
    }

    /// The value of header `name` (any case), if present.
    pub fn header_value<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The response body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(response: &Response) -> Result<T, String> {
        serde_json::from_slice(&response.body).map_err(|e| {
            format!(
                "HTTP {} with a body that is not the expected JSON: {e}",
                response.status
            )
        })
    }
}
