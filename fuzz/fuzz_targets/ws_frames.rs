//! The client frames of 003's `/ws`, as text.
#![no_main]

use gateway_wire::frames::{ClientFrame, FRAME_MAX, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(ClientFrame::Audio { .. }) => {}
        Ok(frame) => {
            assert!(text.len() <= FRAME_MAX, "{frame:?}");
            if let ClientFrame::Text { text, .. } = frame {
                assert!(!text.contains('\0'));
            }
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
});
