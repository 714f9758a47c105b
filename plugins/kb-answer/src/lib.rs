//! `kb-answer`: the gateway's offline responder.
//!
//! It needs no model and no network. Given the customer's message and the
//! passages the gateway retrieved from the organization's FAQ and knowledge
//! base, it answers with the sentences of the best passage (the first one,
//! in the gateway's order, above the relevance floor) that bear on the
//! question, names that passage, and reports a confidence from the
//! retrieval relevance and the word overlap. With nothing relevant retrieved
//! it says so with confidence 0, and the gateway hands over to a human: it
//! never invents an answer.
//!
//! It also offers local embeddings so that vector search works offline:
//! **hashed features**, 256 dimensions. Each text is lower-cased and split
//! into words; the features are the words, the pairs of adjacent words and
//! the character trigrams of each word (with boundary marks). Each feature
//! is hashed (FNV-1a) to a dimension and a sign, weighted `1 + ln(count)`,
//! and the vector is L2-normalised, so cosine similarity is a dot product.
//! Such vectors capture shared vocabulary and spelling variants (plurals,
//! typos), not meaning: paraphrases with no common words stay far apart.

use gateway_plugin_sdk::{
    Completion, CompletionRequest, Embeddings, LlmError, LlmProvider, Passage, Role, Usage,
};

/// Dimensions of the local embeddings.
pub const DIMENSION: usize = 256;

/// Below this retrieval relevance a passage is not used.
const MIN_RELEVANCE: f32 = 0.2;

/// What the responder says when it has nothing to go on.
pub const NO_ANSWER: &str = "I'm not sure I can answer that from our help articles. Let me connect you with a member of our team.";

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct KbAnswer;

impl LlmProvider for KbAnswer {
    fn complete(request: CompletionRequest) -> Result<Completion, LlmError> {
        Ok(answer(&request))
    }

    fn embed(texts: Vec<String>) -> Result<Embeddings, LlmError> {
        Ok(Embeddings {
            dimension: DIMENSION as u32,
            vectors: texts.iter().map(|t| embed(t)).collect(),
        })
    }
}

// Exported only in the component: a native build (for unit tests) cannot
// carry the component model's export names.
#[cfg(target_arch = "wasm32")]
gateway_plugin_sdk::export_llm_provider!(KbAnswer);

/// Words of two letters or fewer and these carry no topic.
const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "your", "with", "can", "how", "what", "when",
    "where", "why", "who", "does", "did", "was", "were", "will", "would", "should", "could",
    "this", "that", "these", "those", "have", "has", "had", "from", "into", "about", "there",
    "their", "they", "them", "our", "out", "any", "all", "get", "got", "its", "just", "also",
    "than", "then", "too", "very", "please", "hello", "thanks", "thank", "want", "need", "like",
    "may", "might", "must", "yes",
];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The topic words of `text`, crudely stemmed (plural and common suffixes).
fn terms(text: &str) -> Vec<String> {
    words(text)
        .filter(|w| w.chars().count() > 2 && !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

fn stem(word: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(base) = word.strip_suffix(suffix)
            && base.chars().count() >= 3
        {
            return base.to_owned();
        }
    }
    word.to_owned()
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let end_of_sentence = matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if end_of_sentence || b == b'\n' {
            let s = text[start..=i].trim();
            if !s.is_empty() && s.chars().any(char::is_alphanumeric) {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() && rest.chars().any(char::is_alphanumeric) {
        out.push(rest);
    }
    out
}

/// The answer to the last user message of `request`.
pub fn answer(request: &CompletionRequest) -> Completion {
    let question = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.as_str());
    let question_terms = terms(question);
    let prompt_tokens = u32::try_from(words(question).count()).unwrap_or(u32::MAX);

    // Passages come best first (the gateway's ranking); the first relevant
    // one is the answer.
    let best = request
        .passages
        .iter()
        .find(|p| p.relevance >= MIN_RELEVANCE);
    let Some(best) = best else {
        return no_answer(prompt_tokens);
    };

    let (text, overlap) = extract(best, &question_terms);
    if text.is_empty() {
        return no_answer(prompt_tokens);
    }
    // Relevance says the search engine liked the passage; overlap says the
    // chosen sentences share the question's words. Both must be there.
    let confidence = (best.relevance.clamp(0.0, 1.0) * (0.5 + 0.5 * overlap)).clamp(0.0, 1.0);
    let reply = if best.title.trim().is_empty() {
        text
    } else {
        format!("{text}\n\nSource: {}", best.title.trim())
    };
    Completion {
        usage: Usage {
            prompt_tokens,
            completion_tokens: u32::try_from(words(&reply).count()).unwrap_or(u32::MAX),
        },
        text: reply,
        used_passages: vec![best.id.clone()],
        confidence,
        intent: None,
        entities: Vec::new(),
    }
}

fn no_answer(prompt_tokens: u32) -> Completion {
    Completion {
        text: NO_ANSWER.to_owned(),
        used_passages: Vec::new(),
        usage: Usage {
            prompt_tokens,
            completion_tokens: u32::try_from(words(NO_ANSWER).count()).unwrap_or(u32::MAX),
        },
        confidence: 0.0,
        intent: None,
        entities: Vec::new(),
    }
}

/// The passage's sentences that share the question's terms (at most three,
/// in the passage's order), or its opening when none do; and the share of
/// question terms they cover.
fn extract(passage: &Passage, question_terms: &[String]) -> (String, f32) {
    let sentences = split_sentences(&passage.content);
    if sentences.is_empty() {
        return (String::new(), 0.0);
    }
    let scored: Vec<(usize, usize)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let sentence_terms = terms(s);
            let hits = question_terms
                .iter()
                .filter(|t| sentence_terms.contains(t))
                .count();
            (i, hits)
        })
        .collect();
    let mut chosen: Vec<(usize, usize)> = scored
        .iter()
        .copied()
        .filter(|(_, hits)| *hits > 0)
        .collect();
    chosen.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    chosen.truncate(3);
    chosen.sort_by_key(|(i, _)| *i);
    let picked: Vec<usize> = if chosen.is_empty() {
        (0..sentences.len().min(2)).collect()
    } else {
        // A sentence that follows a chosen one often finishes its thought.
        let mut picked: Vec<usize> = chosen.iter().map(|(i, _)| *i).collect();
        if picked.len() == 1 && picked[0] + 1 < sentences.len() {
            picked.push(picked[0] + 1);
        }
        picked
    };
    let text = picked
        .iter()
        .map(|i| sentences[*i])
        .collect::<Vec<_>>()
        .join(" ");
    let covered = if question_terms.is_empty() {
        0.0
    } else {
        let all_terms = terms(&passage.content);
        let title_terms = terms(&passage.title);
        let hit = question_terms
            .iter()
            .filter(|t| all_terms.contains(t) || title_terms.contains(t))
            .count();
        hit as f32 / question_terms.len() as f32
    };
    (text, covered)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The local embedding of `text` (see the module docs).
pub fn embed(text: &str) -> Vec<f32> {
    let mut counts: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let ws: Vec<String> = words(text).collect();
    for (i, w) in ws.iter().enumerate() {
        *counts.entry(format!("w:{w}")).or_default() += 1;
        if let Some(next) = ws.get(i + 1) {
            *counts.entry(format!("b:{w} {next}")).or_default() += 1;
        }
        let marked: Vec<char> = format!("<{w}>").chars().collect();
        for tri in marked.windows(3) {
            *counts
                .entry(format!("c:{}", tri.iter().collect::<String>()))
                .or_default() += 1;
        }
    }
    let mut vector = vec![0f32; DIMENSION];
    for (feature, count) in counts {
        let hash = fnv1a(feature.as_bytes());
        let index = (hash % DIMENSION as u64) as usize;
        let sign = if (hash >> 63) == 0 { 1.0 } else { -1.0 };
        vector[index] += sign * (1.0 + (count as f32).ln());
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for v in &mut vector {
            *v /= norm;
        }
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_plugin_sdk::ChatMessage;

    fn passage(id: &str, title: &str, content: &str, relevance: f32) -> Passage {
        Passage {
            id: id.into(),
            title: title.into(),
            content: content.into(),
            relevance,
        }
    }

    fn ask(question: &str, passages: Vec<Passage>) -> Completion {
        answer(&CompletionRequest {
            system_prompt: None,
            messages: vec![ChatMessage {
                role: Role::User,
                content: question.into(),
            }],
            passages,
            temperature: None,
            max_tokens: None,
        })
    }

    const RETURNS: &str = "Our store ships worldwide. To return an item, open the returns portal within 30 days \
                           of delivery. Refunds reach your card 5-7 business days after we receive the item. \
                           Gift cards cannot be returned.";

    #[test]
    fn answers_from_the_best_passage_and_names_it() {
        // Passages come best first; one below the relevance floor is
        // skipped even when it comes first.
        let c = ask(
            "How do I return a jacket I bought?",
            vec![
                passage("kb-1", "Shipping", "We ship with DHL.", 0.1),
                passage("kb-7", "Returns", RETURNS, 0.9),
                passage("kb-2", "Shipping", "We ship with DHL.", 0.3),
            ],
        );
        assert!(
            c.text.contains("returns portal within 30 days"),
            "{}",
            c.text
        );
        assert!(
            !c.text.contains("ships worldwide"),
            "only the sentences that bear on the question: {}",
            c.text
        );
        assert!(c.text.ends_with("Source: Returns"), "{}", c.text);
        assert_eq!(c.used_passages, ["kb-7"]);
        assert!(c.confidence > 0.5, "{}", c.confidence);
    }

    #[test]
    fn nothing_relevant_means_no_answer_and_zero_confidence() {
        for passages in [vec![], vec![passage("kb-1", "Returns", RETURNS, 0.05)]] {
            let c = ask("Can I pay with bitcoin?", passages);
            assert_eq!(c.text, NO_ANSWER);
            assert!(c.used_passages.is_empty());
            assert_eq!(c.confidence, 0.0);
        }
    }

    #[test]
    fn weak_overlap_lowers_confidence() {
        let strong = ask(
            "return portal days",
            vec![passage("a", "Returns", RETURNS, 0.6)],
        );
        let weak = ask(
            "warranty repair battery",
            vec![passage("a", "Returns", RETURNS, 0.6)],
        );
        assert!(
            weak.confidence < strong.confidence,
            "{} vs {}",
            weak.confidence,
            strong.confidence
        );
    }

    #[test]
    fn embeddings_are_normalised_and_follow_shared_words() {
        let a = embed("How do I return an item?");
        let b = embed("returning items");
        let c = embed("change my password");
        assert_eq!(a.len(), DIMENSION);
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert!(
            dot(&a, &b) > dot(&a, &c),
            "{} vs {}",
            dot(&a, &b),
            dot(&a, &c)
        );
        assert_eq!(embed(""), vec![0.0; DIMENSION]);
        assert_eq!(embed("same text"), embed("same text"), "deterministic");
    }

    #[test]
    fn sentences_split_on_stops_and_lines() {
        assert_eq!(
            split_sentences("One. Two? Three\nFour 3.5 kg"),
            ["One.", "Two?", "Three", "Four 3.5 kg"]
        );
    }
}
