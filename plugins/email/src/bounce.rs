//! Mail no person wrote: automatic replies (out-of-office, autoresponders,
//! bulk mail) and delivery failures (bounces), so the gateway neither
//! answers a machine (and loops with it) nor misses that a reply of its own
//! never arrived.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use crate::parse::{header_text, lossy, normalize_address};

/// The longest `bounce-reason`, in characters.
pub const MAX_REASON: usize = 300;

/// Subjects of Exchange's automatic replies (with
/// `X-Auto-Response-Suppress`), lowercased: prefixes...
const AUTO_SUBJECT_PREFIXES: &[&str] = &[
    "automatic reply:",
    "auto:",
    "autoreply",
    "auto-reply",
    "automatische antwort:",
    "réponse automatique :",
    "réponse automatique:",
    "respuesta automática:",
];
/// ...and phrases anywhere.
const AUTO_SUBJECT_PHRASES: &[&str] = &["out of office", "out of the office"];

/// `Precedence` values of mail nobody answers. `list` is not one: a
/// customer may write through a mailing list or group alias.
const AUTO_PRECEDENCE: &[&str] = &["bulk", "junk", "auto_reply", "auto-reply"];

/// Content types of a report's machine-readable parts and returned
/// message: not the customer's files.
const REPORT_PARTS: &[&str] = &[
    "message/delivery-status",
    "message/global-delivery-status",
    "message/disposition-notification",
    "message/global-disposition-notification",
    "text/rfc822-headers",
    "message/global-headers",
    "message/rfc822",
    "message/global",
];

/// What kind of machine wrote a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auto {
    /// A delivery failure (`auto` = `bounce`).
    Bounce,
    /// An automatic reply or bulk mail (`auto` = `reply`).
    Reply,
}

impl Auto {
    pub fn as_str(self) -> &'static str {
        match self {
            Auto::Bounce => "bounce",
            Auto::Reply => "reply",
        }
    }
}

/// Whether a machine wrote `message` (a bounce wins over a reply);
/// `sender` is the address the mail came from, `subject` its decoded
/// subject.
pub fn classify(message: &Message<'_>, sender: &str, subject: &str) -> Option<Auto> {
    if is_bounce(message, sender) {
        return Some(Auto::Bounce);
    }
    let delay_notice =
        report_type(message).is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"));
    (delay_notice || is_auto_reply(message, subject)).then_some(Auto::Reply)
}

/// A delivery status report, an `X-Failed-Recipients` header, or mail
/// from `mailer-daemon@` / `postmaster@`.
fn is_bounce(message: &Message<'_>, sender: &str) -> bool {
    if report_type(message).is_some_and(|t| t.eq_ignore_ascii_case("delivery-status")) {
        // A delay or a relay notice (no recipient with `Action: failed`)
        // is not a failure: the mail may still arrive.
        return !only_delays(message);
    }
    if message.header("X-Failed-Recipients").is_some() {
        return true;
    }
    let local = sender.split('@').next().unwrap_or_default();
    local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster")
}

/// Whether a delivery status report's status part names recipients and
/// none of them failed (`Action: delayed`, `relayed`, `delivered`...).
fn only_delays(message: &Message<'_>) -> bool {
    for part in message.parts.iter().skip(1) {
        let mime_type = part_type(part);
        if mime_type == "message/delivery-status" || mime_type == "message/global-delivery-status" {
            let text = crate::quote::unify(&lossy(part.contents()));
            let mut actions = text.lines().filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("Action")
                    .then(|| value.trim().to_ascii_lowercase())
            });
            let mut any = false;
            for action in actions.by_ref() {
                any = true;
                if action == "failed" {
                    return false;
                }
            }
            return any;
        }
    }
    false
}

/// `Auto-Submitted` other than `no`; `X-Autoreply` or `X-Autorespond`;
/// `Precedence: bulk|junk|auto_reply`; `X-Auto-Response-Suppress` with an
/// out-of-office subject; a read receipt (a disposition-notification
/// report).
fn is_auto_reply(message: &Message<'_>, subject: &str) -> bool {
    if let Some(value) = header_text(message, "Auto-Submitted") {
        let value = value.split(';').next().unwrap_or_default().trim();
        if !value.is_empty() && !value.eq_ignore_ascii_case("no") {
            return true;
        }
    }
    if message.header("X-Autoreply").is_some() || message.header("X-Autorespond").is_some() {
        return true;
    }
    if let Some(precedence) = header_text(message, "Precedence") {
        let precedence = precedence.trim().to_ascii_lowercase();
        if AUTO_PRECEDENCE.contains(&precedence.as_str()) {
            return true;
        }
    }
    if message.header("X-Auto-Response-Suppress").is_some() {
        let subject = subject.to_lowercase();
        if AUTO_SUBJECT_PREFIXES.iter().any(|p| subject.starts_with(p))
            || AUTO_SUBJECT_PHRASES.iter().any(|p| subject.contains(p))
        {
            return true;
        }
    }
    report_type(message).is_some_and(|t| t.eq_ignore_ascii_case("disposition-notification"))
}

/// The `report-type` of a `multipart/report` mail.
fn report_type<'a>(message: &'a Message<'_>) -> Option<&'a str> {
    let content_type = message.root_part().content_type()?;
    let is_report = content_type.ctype().eq_ignore_ascii_case("multipart")
        && content_type
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    if is_report {
        content_type.attribute("report-type")
    } else {
        None
    }
}

/// Whether `mime_type` (lowercased) is a report part, left out of a
/// bounce's media.
pub fn is_report_part(mime_type: &str) -> bool {
    REPORT_PARTS.contains(&mime_type)
}

/// What a bounce says about the mail that failed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Bounce {
    /// The `Message-ID` of the mail that failed, without brackets.
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub recipient: Option<String>,
}

/// Reads a bounce: `body_text` is its human-readable text (before quotes
/// were stripped).
pub fn details(message: &Message<'_>, body_text: &str) -> Bounce {
    let mut status = DeliveryStatus::default();
    let mut returned_id = None;
    for part in message.parts.iter().skip(1) {
        let mime_type = part_type(part);
        match mime_type.as_str() {
            "message/delivery-status" | "message/global-delivery-status" if status.is_empty() => {
                status = DeliveryStatus::parse(&lossy(part.contents()));
            }
            "message/rfc822" | "message/global" if returned_id.is_none() => {
                returned_id = match &part.body {
                    PartType::Message(returned) => returned.message_id().map(str::to_owned),
                    _ => find_message_id(&lossy(part.contents())),
                };
            }
            "text/rfc822-headers" | "message/global-headers" if returned_id.is_none() => {
                returned_id = find_message_id(&lossy(part.contents()));
            }
            _ => {}
        }
    }
    let message_id = returned_id
        .or_else(|| first_id(message.in_reply_to()))
        .or_else(|| find_message_id(body_text))
        .map(|id| crate::parse::clean(&id))
        .filter(|id| !id.is_empty());

    let reason = match (&status.diagnostic, &status.status) {
        (Some(diagnostic), Some(code)) if !diagnostic.contains(code.as_str()) => {
            Some(format!("{diagnostic} (status {code})"))
        }
        (Some(diagnostic), _) => Some(diagnostic.clone()),
        (None, status) => first_lines(body_text).or_else(|| status.clone()),
    }
    .map(|r| truncate(&r, MAX_REASON));

    let recipient = status
        .recipient
        .or_else(|| header_text(message, "X-Failed-Recipients").map(|v| address_list(&v)))
        .filter(|r| !r.is_empty());

    Bounce {
        message_id,
        reason,
        recipient,
    }
}

/// A part's `type/subtype`, lowercased (`text/plain` when it has none).
pub fn part_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".into(),
    }
}

/// The first id of an id header (`In-Reply-To`).
fn first_id(value: &mail_parser::HeaderValue<'_>) -> Option<String> {
    match value {
        mail_parser::HeaderValue::Text(id) => Some(id.to_string()),
        mail_parser::HeaderValue::TextList(ids) => ids.first().map(|id| id.to_string()),
        _ => None,
    }
}

/// The fields of a `message/delivery-status` part that matter: of the
/// first recipient that failed (or the first recipient).
#[derive(Debug, Default)]
struct DeliveryStatus {
    recipient: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
}

impl DeliveryStatus {
    fn is_empty(&self) -> bool {
        self.recipient.is_none() && self.status.is_none() && self.diagnostic.is_none()
    }

    /// Reads the per-recipient blocks (RFC 3464: header-like fields,
    /// blocks separated by blank lines, the first block about the
    /// message).
    fn parse(text: &str) -> DeliveryStatus {
        let text = crate::quote::unify(text);
        let mut first: Option<DeliveryStatus> = None;
        for block in text.split("\n\n") {
            let fields = unfold(block);
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            let Some(recipient) = get("Final-Recipient").or_else(|| get("Original-Recipient"))
            else {
                continue;
            };
            let status = DeliveryStatus {
                recipient: Some(normalize_address(strip_type(&recipient))),
                status: get("Status"),
                diagnostic: get("Diagnostic-Code").map(|d| strip_type(&d).to_owned()),
            };
            let failed = get("Action").is_some_and(|a| a.eq_ignore_ascii_case("failed"));
            if failed {
                return status;
            }
            first.get_or_insert(status);
        }
        first.unwrap_or_default()
    }
}

/// `Name: value` fields of a header block, continuation lines joined and
/// whitespace collapsed.
fn unfold(block: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    for (_, value) in &mut fields {
        *value = value.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    fields
}

/// A DSN value without its type: `rfc822; a@b` → `a@b`, `smtp; 550 ...` →
/// `550 ...`.
fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            rest.trim()
        }
        _ => value.trim(),
    }
}

/// The id on the first `Message-ID:` line of `text` (its value may be
/// folded onto the next line).
pub fn find_message_id(text: &str) -> Option<String> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("message-id") {
            continue;
        }
        let value = if value.trim().is_empty() {
            lines.next().unwrap_or_default()
        } else {
            value
        };
        let value = value.trim();
        let id = match (value.find('<'), value.find('>')) {
            (Some(open), Some(close)) if open < close => value.get(open + 1..close),
            _ => value.split_whitespace().next(),
        };
        if let Some(id) = id.map(str::trim).filter(|id| !id.is_empty()) {
            return Some(id.to_owned());
        }
    }
    None
}

/// The first non-empty lines of `text`, joined, for a reason; up to a
/// separator line (Exim's `------ This is a copy of the message...`).
fn first_lines(text: &str) -> Option<String> {
    let joined = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("---") && !l.starts_with("==="))
        .filter(|l| !l.is_empty())
        .take(8)
        .collect::<Vec<_>>()
        .join(" ");
    (!joined.is_empty()).then(|| truncate(&joined, MAX_REASON))
}

/// At most `max` characters of `text`, cut at a word when one ends close
/// enough, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max - 1).collect();
    let cut = match cut.rfind(' ') {
        Some(space) if space > cut.len() / 2 => cut.get(..space).unwrap_or(&cut).to_owned(),
        _ => cut,
    };
    format!("{}…", cut.trim_end())
}

/// A comma-separated list of addresses, normalized.
fn address_list(value: &str) -> String {
    value
        .split(',')
        .map(normalize_address)
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_status_picks_the_failed_recipient() {
        let dsn = "Reporting-MTA: dns; mx.example.com\r\nArrival-Date: Mon, 1 Dec 2026 10:00:00 +0000\r\n\r\nFinal-Recipient: rfc822; ok@example.org\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\nFinal-Recipient: rfc822; <Nobody@Example.org>\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>:\r\n Recipient address rejected: User unknown\r\n";
        let status = DeliveryStatus::parse(dsn);
        assert_eq!(status.recipient.as_deref(), Some("nobody@example.org"));
        assert_eq!(status.status.as_deref(), Some("5.1.1"));
        assert_eq!(
            status.diagnostic.as_deref(),
            Some("550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown")
        );
    }

    #[test]
    fn message_id_lines() {
        assert_eq!(
            find_message_id("x\nMessage-Id: <gw.t1.42@example.com>\n").as_deref(),
            Some("gw.t1.42@example.com")
        );
        assert_eq!(
            find_message_id("MESSAGE-ID:\n  <a@b>\n").as_deref(),
            Some("a@b")
        );
        assert_eq!(find_message_id("Subject: x\n"), None);
    }

    #[test]
    fn reasons_are_short() {
        let long = "word ".repeat(100);
        let cut = truncate(&long, MAX_REASON);
        assert!(cut.chars().count() <= MAX_REASON);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(strip_type("smtp; 550 no"), "550 no");
        assert_eq!(strip_type("550 no; really"), "550 no; really");
    }
}
