//! Text from clients: `application/x-www-form-urlencoded` bodies, file
//! names, NUL characters.

use serde_json::{Map, Value};

/// The pairs of a form body, percent-decoded (`+` is a space); later keys
/// win. Invalid UTF-8 becomes U+FFFD.
pub fn form_pairs(bytes: &[u8]) -> Map<String, Value> {
    let text = String::from_utf8_lossy(bytes);
    let mut map = Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(percent_decode(k), Value::String(percent_decode(v)));
    }
    map
}

/// `%XX` and `+` decoded; a `%` not followed by two hex digits stays.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Where the first NUL character (U+0000) is in `map`, keys included, at
/// any depth: its dotted path (`attachments.0.fileName`). The gateway keeps
/// no text with one, and PostgreSQL cannot store it.
pub fn nul_path(map: &Map<String, Value>) -> Option<String> {
    fn walk(value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) if s.contains('\0') => Some(path.to_owned()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}.{i}"))),
            Value::Object(map) => walk_map(map, path),
            _ => None,
        }
    }
    fn walk_map(map: &Map<String, Value>, path: &str) -> Option<String> {
        map.iter().find_map(|(k, v)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                walk(v, &here)
            }
        })
    }
    walk_map(map, "")
}

/// Whether a JSON text may hold a NUL character: raw NUL bytes are not
/// valid JSON, so only the escape can bring one in, and most bodies need
/// no walk.
pub fn may_hold_nul(json: &[u8]) -> bool {
    json.windows(6).any(|w| w == br"\u0000")
}

/// A file name fit to show: the last path segment, no control characters
/// nor bidirectional controls (which make `invoice\u{202E}fdp.exe` display
/// as `invoiceexe.pdf`), at most 255 characters; `file` when nothing is
/// left.
pub fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .take(255)
        .collect();
    if cleaned.trim().is_empty() || cleaned == "." || cleaned == ".." {
        "file".into()
    } else {
        cleaned
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let m = form_pairs(b"username=a%40b.c&password=x+y%2");
        assert_eq!(m["username"], "a@b.c");
        assert_eq!(m["password"], "x y%2");
    }

    #[test]
    fn nul_is_found_at_any_depth() {
        let body = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            nul_path(&body(
                serde_json::json!({"a": "ok", "b": [1, {"c": "fine"}]})
            )),
            None
        );
        assert_eq!(
            nul_path(&body(serde_json::json!({"b": [1, {"c": "\u{0}"}]}))).as_deref(),
            Some("b.1.c")
        );
        assert_eq!(
            nul_path(&body(serde_json::json!({"k\u{0}": 1}))).as_deref(),
            Some("k\u{0}")
        );
        assert!(nul_path(&form_pairs(b"username=a%00b")).is_some());
        assert!(may_hold_nul(br#"{"a":"\u0000"}"#));
        assert!(!may_hold_nul(br#"{"a":"b"}"#));
    }

    #[test]
    fn names_lose_paths_controls_and_bidi() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\x\\report.pdf"), "report.pdf");
        assert_eq!(clean_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(clean_name("a\u{0}b\nc"), "abc");
        assert_eq!(clean_name(".."), "file");
    }
}
