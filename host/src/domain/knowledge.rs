//! What the assistant knows: knowledge documents split into passages, FAQs,
//! and the memories it keeps about customers.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::FieldError;

/// Longest title, FAQ question or category, in characters.
pub const TITLE_MAX: usize = 300;
/// Longest document body or FAQ answer, in bytes.
pub const BODY_MAX: usize = 1024 * 1024;
/// A passage is cut near this many characters, at a paragraph or sentence.
pub const PASSAGE_TARGET: usize = 1000;
/// Longest memory key; largest memory value or metadata (serialized bytes).
pub const MEMORY_KEY_MAX: usize = 200;
pub const MEMORY_VALUE_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: i64,
    pub org_id: i64,
    pub title: String,
    pub body: String,
    pub url: Option<String>,
    /// 003's `source`: `knowledge_base` unless the client said otherwise.
    pub source: String,
    /// 003's `sourceId`: the client's own id for the text.
    pub source_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewDocument {
    pub title: String,
    pub body: String,
    pub url: Option<String>,
    pub source: String,
    pub source_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Faq {
    pub id: i64,
    pub org_id: i64,
    pub question: String,
    pub answer: String,
    pub category: String,
    pub view_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct NewFaq {
    pub question: String,
    pub answer: String,
    #[serde(default = "general")]
    pub category: String,
}

fn general() -> String {
    "general".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Expires after the configured time to live.
    ShortTerm,
    /// Kept until deleted; goes into the assistant's prompt.
    LongTerm,
}

impl MemoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::ShortTerm => "short_term",
            MemoryKind::LongTerm => "long_term",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "short_term" => Some(MemoryKind::ShortTerm),
            "long_term" => Some(MemoryKind::LongTerm),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub id: i64,
    pub org_id: i64,
    pub user_ref: String,
    pub kind: MemoryKind,
    pub key: String,
    pub value: Value,
    /// A JSON object.
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_accessed: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewMemory {
    pub org_id: i64,
    pub user_ref: String,
    pub kind: MemoryKind,
    pub key: String,
    pub value: Value,
    pub metadata: Value,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Checks a required text of at most `max` characters.
pub fn validate_text(field: &str, text: &str, max: usize) -> Result<(), FieldError> {
    if text.trim().is_empty() {
        return Err(FieldError::new(
            field,
            "ensure this value is not empty",
            "value_error.any_str.min_length",
        ));
    }
    if text.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("ensure this value has at most {max} characters"),
            "value_error.any_str.max_length",
        ));
    }
    Ok(())
}

/// Checks a category: a short word such as `billing`.
pub fn validate_category(field: &str, category: &str) -> Result<(), FieldError> {
    validate_text(field, category, 64)?;
    if !category
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
    {
        return Err(FieldError::new(
            field,
            "use letters, digits, spaces, '-' and '_' only",
            "value_error.str.regex",
        ));
    }
    Ok(())
}

/// Splits a document body into passages of about [`PASSAGE_TARGET`]
/// characters. Paragraphs (blank-line separated) are kept whole and joined
/// while they fit; a Markdown heading starts a new passage and stays with
/// the text under it; a paragraph longer than twice the target is cut at
/// sentence ends. Markdown heading marks are dropped.
pub fn split_passages(body: &str) -> Vec<String> {
    let mut passages = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, passages: &mut Vec<String>| {
        let text = current.trim();
        if text.chars().any(char::is_alphanumeric) {
            passages.push(text.to_owned());
        }
        current.clear();
    };
    for block in paragraphs(body) {
        let heading = block.starts_with('#');
        let block = if heading {
            block.trim_start_matches('#').trim().to_owned()
        } else {
            block
        };
        // A heading starts a new passage unless the current one is short.
        if heading && current.chars().count() >= PASSAGE_TARGET / 3 {
            flush(&mut current, &mut passages);
        }
        let pieces = if block.chars().count() > 2 * PASSAGE_TARGET {
            sentences_in_chunks(&block)
        } else {
            vec![block]
        };
        for piece in pieces {
            let fits = current.chars().count() + piece.chars().count() <= PASSAGE_TARGET
                || (heading && current.is_empty());
            if !current.is_empty() && !fits && !current_is_heading(&current) {
                flush(&mut current, &mut passages);
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&piece);
        }
    }
    flush(&mut current, &mut passages);
    passages
}

/// Whether `current` holds only a heading line (which stays with what follows).
fn current_is_heading(current: &str) -> bool {
    !current.contains('\n') && current.chars().count() < 120 && !current.ends_with('.')
}

fn paragraphs(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block = String::new();
    for line in body.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            if !block.is_empty() {
                out.push(std::mem::take(&mut block));
            }
            continue;
        }
        // A heading is a paragraph of its own even without blank lines.
        if line.trim_start().starts_with('#') {
            if !block.is_empty() {
                out.push(std::mem::take(&mut block));
            }
            out.push(line.trim().to_owned());
            continue;
        }
        if !block.is_empty() {
            block.push('\n');
        }
        block.push_str(line);
    }
    if !block.is_empty() {
        out.push(block);
    }
    out
}

fn sentences_in_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut chunk = String::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut sentences = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace())
        {
            sentences.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        sentences.push(&text[start..]);
    }
    for s in sentences {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        if !chunk.is_empty() && chunk.chars().count() + s.chars().count() > PASSAGE_TARGET {
            chunks.push(std::mem::take(&mut chunk));
        }
        if !chunk.is_empty() {
            chunk.push(' ');
        }
        chunk.push_str(s);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// The title of a Markdown or text file: its first heading, else its first
/// non-empty line, else `fallback` (the file name).
pub fn title_of(text: &str, fallback: &str) -> (String, String) {
    let mut lines = text.lines();
    for line in lines.by_ref() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let title = t.trim_start_matches('#').trim();
        if t.starts_with('#') && !title.is_empty() {
            let rest: Vec<&str> = lines.collect();
            return (title.to_owned(), rest.join("\n").trim().to_owned());
        }
        break;
    }
    (fallback.to_owned(), text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_articles_split_at_paragraphs_and_headings() {
        let para = "Refunds reach your card within five business days. ".repeat(15);
        let body = format!(
            "Intro line.\n\n## Returns\n\n{para}\n\n{para}\n\n## Exchanges\n\nSwap sizes for free."
        );
        let passages = split_passages(&body);
        assert!(passages.len() >= 3, "{passages:#?}");
        // A short opening keeps the heading that follows it; a heading
        // stays with the text under it.
        assert!(passages[0].starts_with("Intro line.\nReturns\nRefunds"));
        assert!(
            passages
                .last()
                .expect("as expected")
                .starts_with("Exchanges\nSwap")
        );
        assert!(
            passages
                .iter()
                .all(|p| p.chars().count() <= 2 * PASSAGE_TARGET)
        );
        let huge = "A sentence that goes on. ".repeat(200);
        let cut = split_passages(&huge);
        assert!(cut.len() >= 5 && cut.iter().all(|p| p.chars().count() <= PASSAGE_TARGET + 30));
        assert!(split_passages("  \n\n ## \n").is_empty());
    }

    #[test]
    fn titles_come_from_the_first_heading() {
        assert_eq!(
            title_of("\n# Return policy\n\nBody.", "file"),
            ("Return policy".into(), "Body.".into())
        );
        assert_eq!(
            title_of("Plain text.", "notes"),
            ("notes".into(), "Plain text.".into())
        );
    }
}
