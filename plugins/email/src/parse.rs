//! Raw RFC 822 mail (as the host fetched it over IMAP) to an
//! [`InboundMessage`]: who wrote, to whom, about what, the customer's new
//! text (see [`crate::quote`]), the HTML, the files, and in `metadata` the
//! headers the host threads and filters with (README.md lists the keys).
//!
//! Malformed mail is read as far as it can be: only input that is empty
//! or has no header at all is refused.

use std::collections::HashSet;

use gateway_plugin_sdk::channel::{ChannelError, ContentKind, InboundMessage, Media};
use gateway_plugin_sdk::host::types::Pair;
use mail_parser::{
    Address, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use crate::bounce::{self, Auto};
use crate::{html, quote};

/// How many hex digits of the SHA-256 of the raw mail make the id of a
/// mail without a `Message-ID`.
const GENERATED_ID_HEX: usize = 32;

/// Subject prefixes of a forwarded mail, whose quoted history is the
/// content, lowercased.
const FORWARD_PREFIXES: &[&str] = &["fwd:", "fw:", "wg:", "tr:", "rv:", "enc:", "doorst:"];

/// Parses `raw` (see the module documentation).
pub fn parse_mail(raw: &[u8]) -> Result<InboundMessage, ChannelError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ChannelError::InvalidPayload("the mail is empty".into()));
    }
    let message = MessageParser::default()
        .parse(raw)
        .filter(|m| m.parts.first().is_some_and(|root| !root.headers.is_empty()))
        .ok_or_else(|| ChannelError::InvalidPayload("the mail has no header".into()))?;

    let (sender, sender_name) = sender(&message);
    let subject = message
        .subject()
        .map(|s| clean(&s.split_whitespace().collect::<Vec<_>>().join(" ")))
        .filter(|s| !s.is_empty());
    let auto = bounce::classify(&message, &sender, subject.as_deref().unwrap_or_default());

    let (body, used) = body_text(&message);
    let forwarded = subject.as_deref().is_some_and(is_forward);
    let text = body.as_ref().map(|b| b.new_text(forwarded));

    let html_part = message
        .html_body
        .iter()
        .find(|&&id| matches!(part(&message, id).map(|p| &p.body), Some(PartType::Html(_))));
    let html = html_part
        .and_then(|&id| part(&message, id))
        .and_then(|p| match &p.body {
            PartType::Html(html) => Some(clean(html)),
            _ => None,
        });
    let mut used = used;
    used.extend(html_part.copied());

    let mut metadata = Vec::new();
    let mut meta = |key: &str, value: String| {
        if !value.is_empty() {
            metadata.push(Pair {
                key: key.into(),
                value,
            });
        }
    };
    meta("references", ids(message.references()).join(" "));
    meta("to", addresses(message.all_to()));
    meta("cc", addresses(message.all_cc()));
    meta("delivered-to", delivered_to(&message));
    if let Some(auto) = auto {
        meta("auto", auto.as_str().into());
    }
    if auto == Some(Auto::Bounce) {
        let raw_text = body.as_ref().map(|b| b.whole.as_str()).unwrap_or_default();
        let details = bounce::details(&message, raw_text);
        meta("bounce-message-id", details.message_id.unwrap_or_default());
        meta("bounce-reason", clean(&details.reason.unwrap_or_default()));
        meta("bounce-recipient", details.recipient.unwrap_or_default());
    }

    Ok(InboundMessage {
        external_id: external_id(&message, raw),
        sender,
        sender_name,
        recipient: message
            .all_to()
            .flat_map(Address::iter)
            .find_map(|a| a.address())
            .map(normalize_address)
            .filter(|a| !a.is_empty()),
        thread_id: None,
        subject,
        kind: ContentKind::Text,
        text: text.filter(|t| !t.is_empty()),
        html,
        media: media(&message, &used, auto == Some(Auto::Bounce)),
        timestamp_ms: timestamp_ms(&message),
        in_reply_to: ids(message.in_reply_to()).into_iter().next(),
        location: None,
        choice_id: None,
        error: None,
        metadata,
    })
}

/// `text` without NULs (replaced by U+FFFD): a database may refuse them.
pub fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An address trimmed, unbracketed and lowercased.
pub fn normalize_address(address: &str) -> String {
    let address = address.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    clean(address.trim()).to_lowercase()
}

/// The text of header `name` (every value of a list joined by `, `).
pub fn header_text(message: &Message<'_>, name: &str) -> Option<String> {
    match message.header(name)? {
        HeaderValue::Text(text) => Some(text.to_string()),
        HeaderValue::TextList(list) => Some(list.join(", ")),
        _ => message.header_raw(name).map(|raw| raw.trim().to_owned()),
    }
}

fn part<'a, 'x>(message: &'a Message<'x>, id: u32) -> Option<&'a MessagePart<'x>> {
    message.parts.get(usize::try_from(id).ok()?)
}

/// The Message-ID without brackets; for a mail without one,
/// `generated-` and the start of the SHA-256 of the raw bytes, so that the
/// same mail fetched twice gets the same id.
fn external_id(message: &Message<'_>, raw: &[u8]) -> String {
    let id = match message.header("Message-ID") {
        Some(HeaderValue::Text(id)) => Some(id.to_string()),
        Some(HeaderValue::TextList(ids)) => ids.first().map(|id| id.to_string()),
        _ => None,
    };
    match id.map(|id| clean(id.trim())).filter(|id| !id.is_empty()) {
        Some(id) => id,
        None => {
            let digest = gateway_plugin_sdk::sign::sha256(raw);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("generated-{}", hex.get(..GENERATED_ID_HEX).unwrap_or(&hex))
        }
    }
}

/// The sender's address and display name: `From`, else `Sender`, else
/// `Return-Path`; an empty address when there is none.
fn sender(message: &Message<'_>) -> (String, Option<String>) {
    let mailbox = message
        .from()
        .into_iter()
        .chain(message.sender())
        .flat_map(Address::iter)
        .find(|a| a.address().is_some_and(|a| !a.trim().is_empty()));
    if let Some(mailbox) = mailbox {
        let name = mailbox
            .name()
            .map(|n| clean(&n.split_whitespace().collect::<Vec<_>>().join(" ")))
            .filter(|n| !n.is_empty());
        return (
            normalize_address(mailbox.address().unwrap_or_default()),
            name,
        );
    }
    let return_path = match message.return_path() {
        HeaderValue::Text(path) => Some(path.to_string()),
        HeaderValue::TextList(paths) => paths.first().map(|p| p.to_string()),
        _ => None,
    };
    (
        return_path
            .map(|p| normalize_address(&p))
            .unwrap_or_default(),
        None,
    )
}

/// Ids of an id header (`References`, `In-Reply-To`), without brackets,
/// in order.
fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    let ids: Vec<String> = match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    };
    ids.into_iter()
        .map(|id| clean(id.trim()))
        .filter(|id| !id.is_empty())
        .collect()
}

/// The addresses of every occurrence of an address header, lowercased,
/// without duplicates, comma-separated.
fn addresses<'a, 'x: 'a>(headers: impl Iterator<Item = &'a Address<'x>>) -> String {
    let mut seen = HashSet::new();
    headers
        .flat_map(Address::iter)
        .filter_map(|a| a.address())
        .map(normalize_address)
        .filter(|a| !a.is_empty() && seen.insert(a.clone()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every `Delivered-To`, `X-Original-To` and `Envelope-To` address: where
/// the mail server delivered the mail, which tells which support address
/// (or alias) it was for when `To` does not.
fn delivered_to(message: &Message<'_>) -> String {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for header in message.headers() {
        let name = header.name.as_str();
        let wanted = ["Delivered-To", "X-Original-To", "Envelope-To"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name));
        if !wanted {
            continue;
        }
        let value = match &header.value {
            HeaderValue::Text(text) => text.to_string(),
            HeaderValue::TextList(list) => list.join(","),
            HeaderValue::Address(address) => address
                .iter()
                .filter_map(|a| a.address())
                .collect::<Vec<_>>()
                .join(","),
            _ => continue,
        };
        for address in value.split(',').map(normalize_address) {
            if !address.is_empty() && seen.insert(address.clone()) {
                found.push(address);
            }
        }
    }
    found.join(",")
}

/// The `Date` header in milliseconds since the epoch; 0 when it is missing
/// or not a date.
fn timestamp_ms(message: &Message<'_>) -> u64 {
    message
        .date()
        .filter(|d| d.is_valid())
        .and_then(|d| u64::try_from(d.to_timestamp()).ok())
        .map_or(0, |s| s.saturating_mul(1000))
}

fn is_forward(subject: &str) -> bool {
    let subject = subject.to_lowercase();
    FORWARD_PREFIXES.iter().any(|p| subject.starts_with(p))
}

/// The text of a mail's body parts.
struct Body {
    /// As written (decoded and joined), history and all.
    whole: String,
    /// With the quote elements of HTML parts already removed.
    html_stripped: String,
}

impl Body {
    fn new_text(&self, keep_history: bool) -> String {
        let source = if keep_history {
            &self.whole
        } else {
            &self.html_stripped
        };
        let text = quote::new_text(source, keep_history);
        if text.is_empty() {
            quote::new_text(&self.whole, true)
        } else {
            text
        }
    }
}

/// The mail's text parts (HTML ones turned into text), and the ids of the
/// parts used. Falls back to the HTML body when the text parts are blank.
fn body_text(message: &Message<'_>) -> (Option<Body>, HashSet<u32>) {
    let mut used = HashSet::new();
    let mut whole = Vec::new();
    let mut stripped = Vec::new();
    for &id in &message.text_body {
        let Some(part) = part(message, id) else {
            continue;
        };
        match &part.body {
            PartType::Text(text) => {
                let text = plain_text(part, text);
                whole.push(text.clone());
                stripped.push(text);
            }
            PartType::Html(html) => {
                whole.push(html::to_text(html, false));
                stripped.push(html::to_text(html, true));
            }
            _ => continue,
        }
        used.insert(id);
    }
    if whole.iter().all(|t| t.trim().is_empty()) {
        let html = message
            .html_body
            .iter()
            .find_map(|&id| match part(message, id) {
                Some(MessagePart {
                    body: PartType::Html(html),
                    ..
                }) => Some((id, html)),
                _ => None,
            });
        if let Some((id, html)) = html {
            used.insert(id);
            whole = vec![html::to_text(html, false)];
            stripped = vec![html::to_text(html, true)];
        }
    }
    if whole.is_empty() {
        return (None, used);
    }
    let body = Body {
        whole: quote::unify(&whole.join("\n")),
        html_stripped: quote::unify(&stripped.join("\n")),
    };
    (Some(body), used)
}

/// A text/plain part's text, `format=flowed` undone.
fn plain_text(part: &MessagePart<'_>, text: &str) -> String {
    let flowed = part.content_type().and_then(|ct| {
        ct.attribute("format")
            .filter(|f| f.eq_ignore_ascii_case("flowed"))
            .map(|_| {
                ct.attribute("delsp")
                    .is_some_and(|d| d.eq_ignore_ascii_case("yes"))
            })
    });
    match flowed {
        Some(delsp) => quote::unflow(text, delsp),
        None => text.to_owned(),
    }
}

/// Every attachment and inline part that is not a body part used above;
/// a bounce's report parts are left out.
fn media(message: &Message<'_>, used: &HashSet<u32>, is_bounce: bool) -> Vec<Media> {
    let mut media = Vec::new();
    for &id in &message.attachments {
        if used.contains(&id) {
            continue;
        }
        let Some(part) = part(message, id) else {
            continue;
        };
        if matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let mime_type = bounce::part_type(part);
        if is_bounce && bounce::is_report_part(&mime_type) {
            continue;
        }
        let filename = part
            .attachment_name()
            .map(base_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default_filename(media.len() + 1, &mime_type));
        media.push(Media {
            media_id: None,
            filename: Some(filename),
            content_id: part
                .content_id()
                .map(|id| clean(id.trim().trim_start_matches('<').trim_end_matches('>')))
                .filter(|id| !id.is_empty()),
            mime_type: Some(mime_type),
            caption: None,
            data: Some(part.contents().to_vec()),
            sha256: None,
        });
    }
    media
}

/// A file name without the directories a sender's client may have put
/// before it (`C:\fakepath\x.pdf`, `../x.pdf`).
fn base_name(name: &str) -> String {
    let name = name.rsplit(['/', '\\']).next().unwrap_or(name);
    clean(name.trim())
}

/// `attachment-{n}.{extension of mime_type}` for a file without a name.
pub fn default_filename(n: usize, mime_type: &str) -> String {
    let extension = match mime_type {
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/heic" => "heic",
        "image/svg+xml" => "svg",
        "text/plain" => "txt",
        "text/html" => "html",
        "text/calendar" => "ics",
        "text/csv" => "csv",
        "message/rfc822" | "message/global" => "eml",
        "application/zip" => "zip",
        "audio/mpeg" => "mp3",
        "video/mp4" => "mp4",
        _ => "bin",
    };
    format!("attachment-{n}.{extension}")
}
