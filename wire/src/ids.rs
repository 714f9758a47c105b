//! Ids as clients send them.

/// An id as clients send it, else nothing. An id has one spelling: decimal
/// digits without a sign, a leading zero or spaces (`01`, `+1` and ` 1`
/// name nothing, so that one record is never reachable under two names).
pub fn id_of(text: &str) -> Option<i64> {
    let canonical =
        !text.is_empty() && !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit());
    canonical.then(|| text.parse::<i64>().ok()).flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_have_one_spelling() {
        assert_eq!(super::id_of("1"), Some(1));
        assert_eq!(super::id_of("9223372036854775807"), Some(i64::MAX));
        for other in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
            "１",
        ] {
            assert_eq!(super::id_of(other), None, "{other:?}");
        }
    }
}
