//! Form bodies, ids and file names.
#![no_main]

use gateway_wire::ids::id_of;
use gateway_wire::text::{clean_name, form_pairs, nul_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let form = form_pairs(data);
    let _ = nul_path(&form);
    let text = String::from_utf8_lossy(data);
    if let Some(id) = id_of(&text) {
        // One spelling: the id prints back as it was read.
        assert_eq!(id.to_string(), text);
    }
    let name = clean_name(&text);
    assert!(!name.is_empty() && name.chars().count() <= 255);
    assert!(!name.contains(['/', '\\']) && !name.chars().any(char::is_control));
});
