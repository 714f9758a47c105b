//! The rules the assistant applies without a model: the customer's intent
//! and entities (when the provider names none), requests for a person, and
//! small talk.

use crate::config::assistant::AssistantConfig;

/// The answer to a greeting with no question in it.
pub const GREETING_REPLY: &str = "Hello! How can I help you today?";

fn lower_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `phrase` (one or more words) occurs in `words` as whole words.
fn contains_phrase(words: &[String], phrase: &str) -> bool {
    let parts: Vec<&str> = phrase.split_whitespace().collect();
    !parts.is_empty()
        && words
            .windows(parts.len())
            .any(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
}

/// Whether the customer asks for a person (`assistant.handover_phrases`).
pub fn asks_for_person(config: &AssistantConfig, text: &str) -> bool {
    let words = lower_words(text);
    config
        .handover_phrases
        .iter()
        .any(|p| contains_phrase(&words, p))
}

/// The intent with the most keyword matches (the first on a tie), and the
/// entities: that intent's matched keywords, then numbers of three or more
/// digits (order numbers) and e-mail addresses, in order of appearance.
pub fn classify(config: &AssistantConfig, text: &str) -> (Option<String>, Vec<String>) {
    let words = lower_words(text);
    let mut best: Option<(&str, Vec<&str>)> = None;
    for rule in &config.intents {
        let matched: Vec<&str> = rule
            .keywords
            .iter()
            .map(String::as_str)
            .filter(|k| contains_phrase(&words, k))
            .collect();
        if !matched.is_empty() && best.as_ref().is_none_or(|(_, m)| matched.len() > m.len()) {
            best = Some((&rule.name, matched));
        }
    }
    let mut entities: Vec<String> = best
        .as_ref()
        .map(|(_, m)| m.iter().map(|k| (*k).to_owned()).collect())
        .unwrap_or_default();
    for token in text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')')) {
        let token = token.trim_matches(|c: char| matches!(c, '.' | '!' | '?' | ':' | '"' | '\''));
        let number = token.trim_start_matches('#');
        let is_number = number.len() >= 3 && number.chars().all(|c| c.is_ascii_digit());
        let is_email = token.contains('@')
            && token.split('@').count() == 2
            && token.rsplit('@').next().is_some_and(|d| d.contains('.'));
        if is_number {
            entities.push(number.to_owned());
        } else if is_email {
            entities.push(token.to_owned());
        }
    }
    entities.dedup();
    (best.map(|(name, _)| name.to_owned()), entities)
}

/// Whether `text` is only a greeting or thanks, with nothing to look up.
pub fn is_small_talk(text: &str) -> bool {
    const POLITE: &[&str] = &[
        "hi",
        "hello",
        "hey",
        "hiya",
        "thanks",
        "thank",
        "you",
        "good",
        "morning",
        "afternoon",
        "evening",
        "there",
        "ok",
        "okay",
        "bye",
        "goodbye",
        "cheers",
        "great",
        "yo",
    ];
    let words = lower_words(text);
    !words.is_empty() && words.iter().all(|w| POLITE.contains(&w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn intents_entities_and_requests_for_a_person() {
        let config = Config::defaults().assistant;
        let (intent, entities) = classify(&config, "Where is my order #12345? Mail me at a@b.co");
        assert_eq!(intent.as_deref(), Some("order_status"));
        assert_eq!(entities, ["order", "12345", "a@b.co"]);
        assert_eq!(classify(&config, "Bonjour").0, None);
        assert!(asks_for_person(
            &config,
            "Can I talk to a real person please?"
        ));
        assert!(asks_for_person(&config, "HUMAN!"));
        assert!(!asks_for_person(&config, "Is the light safe for humans?"));
        assert!(is_small_talk("Hi there!"));
        assert!(!is_small_talk("Hi, my bulb is broken"));
    }
}
