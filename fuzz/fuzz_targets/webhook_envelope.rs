//! The incoming webhook's body: `{"event", "organization"?, "id"?, "data"}`.
#![no_main]

use gateway_wire::webhook::{BODY_MAX, DELIVERY_ID_MAX, envelope, validate_slug};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > BODY_MAX {
        return;
    }
    if let Ok(e) = envelope(data) {
        // What the envelope promises the handler.
        assert!(validate_slug(&e.organization).is_ok());
        assert!(
            e.id.as_ref()
                .is_none_or(|id| !id.trim().is_empty() && id.chars().count() <= DELIVERY_ID_MAX)
        );
        assert!(gateway_wire::text::nul_path(&e.data).is_none());
    }
});
