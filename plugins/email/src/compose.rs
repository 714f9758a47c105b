//! An [`OutboundMessage`] to an RFC 822 mail for the host's SMTP
//! transport: From the support address, To the customer, threaded with
//! `In-Reply-To`/`References`, a `Reply-To` that carries the conversation,
//! text and HTML alternatives, attachments.
//!
//! The `Message-ID` is made from the conversation and the gateway's
//! message id, not at random, so a send retried after a crash carries the
//! same id and the customer's client shows one mail, not two.

use gateway_plugin_sdk::channel::{ChannelError, ComposedMail, OutboundMessage};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;

use crate::html;

/// The subject of a message without one.
pub const NO_SUBJECT: &str = "(no subject)";

/// The mime type of an attachment whose given one is not a `type/subtype`.
const OCTET_STREAM: &str = "application/octet-stream";

/// The `auto-submitted` metadata values marked on the mail (RFC 3834).
const AUTO_SUBMITTED: &[&str] = &["auto-replied", "auto-generated"];

/// Composes `message`; `now_ms` is its `Date` (the host's clock).
pub fn compose_mail(message: &OutboundMessage, now_ms: u64) -> Result<ComposedMail, ChannelError> {
    let sender = message
        .sender
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("no sender: the support address to send from is required"))?;
    check_address("sender", sender)?;
    let recipient = message.recipient.trim();
    check_address("recipient", recipient)?;
    let (sender_local, domain) = sender
        .rsplit_once('@')
        .ok_or_else(|| invalid("the sender has no domain"))?;

    let thread = message
        .thread_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(thread) = thread {
        check_token("thread-id", thread)?;
    }
    let client_id = message.client_message_id.trim();
    if client_id.is_empty() {
        return Err(invalid(
            "no client-message-id: the Message-ID is made from it",
        ));
    }
    check_token("client-message-id", client_id)?;
    let message_id = format!(
        "gw.{}.{client_id}@{}",
        thread.unwrap_or("0"),
        domain.to_ascii_lowercase()
    );

    let subject = message
        .subject
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(NO_SUBJECT);
    check_header("subject", subject)?;
    let from_name = metadata(message, "from-name");
    if let Some(name) = from_name {
        check_header("from-name", name)?;
    }
    if let Some(id) = &message.in_reply_to {
        check_header("in-reply-to", id)?;
    }
    // An id that is no message id (`generated-...`, the id given to a mail
    // that had none) threads nothing: left out rather than failing the
    // send.
    let in_reply_to = message
        .in_reply_to
        .as_deref()
        .map(unbracket)
        .filter(|id| is_message_id(id));
    let mut references: Vec<&str> = Vec::new();
    if let Some(value) = metadata(message, "references") {
        check_header("references", value)?;
        references.extend(
            value
                .split_whitespace()
                .map(unbracket)
                .filter(|id| is_message_id(id)),
        );
    }
    if let Some(id) = in_reply_to
        && references.last() != Some(&id)
    {
        references.push(id);
    }
    let reply_to = match metadata(message, "reply-to") {
        Some(address) => {
            check_address("reply-to", address)?;
            Some(address.to_owned())
        }
        None => thread.map(|thread| {
            let base = sender_local.split('+').next().unwrap_or(sender_local);
            format!("{base}+{thread}@{domain}")
        }),
    };
    let auto_submitted = metadata(message, "auto-submitted")
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| AUTO_SUBMITTED.contains(&v.as_str()));
    for attachment in &message.attachments {
        check_header("attachment filename", &attachment.filename)?;
    }
    let has_html = message
        .html
        .as_deref()
        .is_some_and(|h| !h.trim().is_empty());
    if message.text.trim().is_empty() && !has_html && message.attachments.is_empty() {
        return Err(invalid("nothing to send: no text, html or attachment"));
    }

    let mut mail = MessageBuilder::new()
        .from(Address::new_address(from_name, sender))
        .to(Address::new_address(None::<&str>, recipient))
        .subject(Text::new(subject))
        .date(Date::new(i64::try_from(now_ms / 1000).unwrap_or(i64::MAX)))
        .message_id(MessageId::new(message_id.as_str()));
    if let Some(id) = in_reply_to {
        mail = mail.in_reply_to(MessageId::new(id));
    }
    if !references.is_empty() {
        mail = mail.references(MessageId::new_list(references.into_iter()));
    }
    if let Some(reply_to) = &reply_to {
        mail = mail.reply_to(Address::new_address(None::<&str>, reply_to.as_str()));
    }
    if let Some(value) = auto_submitted {
        // RFC 3834; and Exchange's own header, asking its servers not to
        // answer this mail with an automatic reply (which would loop).
        mail = mail
            .header("Auto-Submitted", Raw::new(value))
            .header("X-Auto-Response-Suppress", Raw::new("All"));
    }
    let text = message.text.replace("\r\n", "\n");
    let html = match message.html.as_deref().filter(|h| !h.trim().is_empty()) {
        Some(html) => html.to_owned(),
        None => html::from_text(&text),
    };
    mail = mail.text_body(text).html_body(html);
    for (n, attachment) in message.attachments.iter().enumerate() {
        let mime_type = mime_type(&attachment.mime_type);
        let filename = match attachment.filename.trim() {
            "" => crate::parse::default_filename(n + 1, &mime_type),
            name => name.to_owned(),
        };
        mail = mail.attachment(mime_type, filename, attachment.data.as_slice());
    }
    let raw = mail
        .write_to_vec()
        .map_err(|e| ChannelError::Other(format!("could not write the mail: {e}")))?;

    Ok(ComposedMail {
        envelope_from: sender.to_owned(),
        envelope_to: vec![recipient.to_owned()],
        raw,
        message_id,
    })
}

fn invalid(why: &str) -> ChannelError {
    ChannelError::InvalidPayload(why.into())
}

/// Metadata `key`, when given and not blank.
fn metadata<'a>(message: &'a OutboundMessage, key: &str) -> Option<&'a str> {
    message
        .metadata
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
        .filter(|v| !v.trim().is_empty())
}

fn unbracket(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|id| id.strip_suffix('>'))
        .unwrap_or(id)
        .trim()
}

/// A header value must not break the header: no CR, LF or NUL (header
/// injection).
fn check_header(field: &str, value: &str) -> Result<(), ChannelError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(invalid(&format!(
            "{field} contains a line break or NUL (header injection?)"
        )));
    }
    Ok(())
}

/// A plausible single address: `local@domain`, no whitespace or control
/// characters, nothing that would make it a list or a display name (`<`,
/// `>`, `,`, `;`, `"`, parentheses).
fn check_address(field: &str, address: &str) -> Result<(), ChannelError> {
    check_header(field, address)?;
    let plausible = address.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !address.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '\\')
    }) && address.len() <= 254;
    if plausible {
        Ok(())
    } else {
        Err(invalid(&format!(
            "{field} `{address}` is not an email address"
        )))
    }
}

/// Whether `id` (without brackets) is a message id: one `@`, not at
/// either end, no whitespace, brackets, quotes or control characters.
fn is_message_id(id: &str) -> bool {
    id.matches('@').count() == 1
        && !id.starts_with('@')
        && !id.ends_with('@')
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

/// An id the Message-ID and the plus address are made of: letters, digits,
/// `-`, `_`, `.` and `=`.
fn check_token(field: &str, token: &str) -> Result<(), ChannelError> {
    let ok = token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='))
        && !token.starts_with('.')
        && !token.ends_with('.')
        && !token.contains("..");
    if ok {
        Ok(())
    } else {
        Err(invalid(&format!(
            "{field} `{token}` may hold only letters, digits, `-`, `_`, `.` and `=`"
        )))
    }
}

/// `type/subtype` lowercased, or `application/octet-stream` for anything
/// that is not one.
fn mime_type(given: &str) -> String {
    // Parameters (`; charset=...`) are mail-builder's to write.
    let given = given
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    match given.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => given,
        _ => OCTET_STREAM.into(),
    }
}
