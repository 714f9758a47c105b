//! The incoming webhook's headers: `X-Webhook-Timestamp` and `X-Signature`
//! over `"<timestamp>." + body`. Input: the timestamp header, a NUL, the
//! signature header, a NUL, the body.
#![no_main]

use gateway_wire::webhook::{signature_valid, signed_timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let timestamp = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let timestamp = std::str::from_utf8(timestamp).ok();
    let Ok(signature) = std::str::from_utf8(signature) else {
        return;
    };
    if let Ok(ts) = signed_timestamp(timestamp, 1_800_000_000, 300) {
        let prefix = ts.map(|t| format!("{t}.")).unwrap_or_default();
        // A fuzzer that forges an HMAC-SHA256 has found something else.
        assert!(!signature_valid(
            "a-secret-of-sixteen+",
            &[prefix.as_bytes(), body],
            signature
        ));
    }
});
