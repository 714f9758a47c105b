//! The customer's new text, without the history their mail client quoted
//! and without their signature: what the agent (and the model) should
//! read, not the conversation so far, which the gateway already has.
//!
//! Applied in this order to text with `\n` line endings:
//!
//! 1. Everything from a line that is exactly `-- ` (the RFC 3676 signature
//!    delimiter) goes.
//! 2. Everything from the first history marker goes: an attribution line
//!    (`On <date>, <name> wrote:`, Apple Mail's `On <date>, at <time>, <name>
//!    wrote:`, the common localized forms; it may wrap onto a second line),
//!    Outlook's header block (`From:` followed within a few lines by
//!    `Sent:`/`Date:` and `To:`/`Subject:`, with the `____` rule above it),
//!    or `-----Original Message-----`. An attribution followed by `>` lines
//!    and then new text is an interleaved reply: only the attribution goes.
//! 3. A trailing run of `>` lines goes, with the attribution line just
//!    before it (one that ends with `:` and names an address, a date or
//!    "wrote"); other `>` lines (between the customer's answers) go too.
//! 4. Trailing whitespace of lines, and leading and trailing blank lines,
//!    go.
//!
//! When that would leave nothing although the mail had text, the text is
//! kept whole (only step 4): a message whose whole body looked like a
//! quote is still a message.

/// The longest line (or pair of lines) taken for an attribution: a longer
/// one is a paragraph of the customer's that happens to end in "wrote:".
const MAX_ATTRIBUTION: usize = 300;

/// How many lines below `From:` Outlook's `Sent:`/`To:` lines may be.
const OUTLOOK_BLOCK: usize = 6;

/// Attribution lines by language: the line starts with the first, contains
/// the second and ends with `:`.
const ATTRIBUTIONS: &[(&str, &str)] = &[
    ("On ", "wrote"),
    ("Le ", "a écrit"),
    ("Am ", "schrieb"),
    ("El ", "escribió"),
    ("Il ", "ha scritto"),
    ("Op ", "schreef"),
    ("Em ", "escreveu"),
    ("W dniu ", "pisze"),
    ("W dniu ", "napisał"),
    ("Den ", "skrev"),
];

/// Words that make a line ending in `:` before a trailing quote an
/// attribution.
const ATTRIBUTION_WORDS: &[&str] = &[
    "wrote",
    "schrieb",
    "écrit",
    "escribió",
    "scritto",
    "schreef",
    "escreveu",
    "pisze",
    "napisał",
    "skrev",
];

/// Outlook's header block, by language: the `From:` line...
const FROM_FIELDS: &[&str] = &["from", "von", "de", "van", "da", "od", "från", "fra"];
/// ...a `Sent:`/`Date:` line...
const SENT_FIELDS: &[&str] = &[
    "sent",
    "date",
    "gesendet",
    "datum",
    "envoyé",
    "enviado",
    "fecha",
    "inviato",
    "data",
    "verzonden",
    "wysłano",
    "skickat",
    "sendt",
];
/// ...and a `To:`/`Subject:` line.
const TO_FIELDS: &[&str] = &[
    "to",
    "subject",
    "cc",
    "an",
    "betreff",
    "à",
    "objet",
    "para",
    "asunto",
    "a",
    "oggetto",
    "aan",
    "onderwerp",
    "do",
    "temat",
    "till",
    "ämne",
    "til",
    "emne",
];

/// `-----Original Message-----` in the languages Outlook speaks most.
const ORIGINAL_MESSAGE: &[&str] = &[
    "original message",
    "ursprüngliche nachricht",
    "message d'origine",
    "mensaje original",
    "messaggio originale",
    "oorspronkelijk bericht",
    "originalmeddelande",
    "mensagem original",
    "wiadomość oryginalna",
];

/// The customer's new text in `text` (see the module documentation).
/// With `keep_history` (a forwarded mail, whose history is the point),
/// only line endings, NULs and blank lines are tidied.
pub fn new_text(text: &str, keep_history: bool) -> String {
    let text = unify(text);
    let whole = tidy(text.split('\n'));
    if keep_history {
        return whole;
    }
    let mut lines: Vec<&str> = text.split('\n').collect();
    if let Some(at) = lines.iter().position(|l| is_signature_delimiter(l)) {
        lines.truncate(at);
    }
    let mut lines: Vec<&str> = lines.into_iter().map(str::trim_end).collect();
    cut_history(&mut lines);
    let stripped = tidy(drop_quoted(lines).into_iter());
    if stripped.is_empty() { whole } else { stripped }
}

/// `\r\n` and lone `\r` as `\n`; NUL as U+FFFD (text travels on as
/// strings a database may refuse NULs in).
pub fn unify(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\0', "\u{FFFD}")
}

/// Undoes `format=flowed` (RFC 3676): a line ending in a space continues
/// on the next one. Quoted lines are left alone (they are dropped later).
pub fn unflow(text: &str, delsp: bool) -> String {
    let text = unify(text);
    let mut out = String::with_capacity(text.len());
    let mut soft = false;
    for line in text.split('\n') {
        if line.starts_with('>') {
            if soft {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            soft = false;
            continue;
        }
        // Space-stuffing protects a leading space, `>` or `From `.
        let line = line.strip_prefix(' ').unwrap_or(line);
        match line.strip_suffix(' ') {
            Some(kept) if !is_signature_delimiter(line) => {
                out.push_str(if delsp { kept } else { line });
                soft = true;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
                soft = false;
            }
        }
    }
    out
}

/// Lines without trailing whitespace and without leading or trailing
/// blank lines, joined with `\n`.
fn tidy<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    match (first, last) {
        (Some(first), Some(last)) => lines
            .get(first..=last)
            .map(|kept| kept.join("\n"))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// `-- `, the signature delimiter; HTML turned into text may carry a
/// no-break space for its space.
fn is_signature_delimiter(line: &str) -> bool {
    line == "-- " || line == "--\u{a0}"
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Cuts `lines` at the first history marker; drops the attribution of an
/// interleaved reply.
fn cut_history(lines: &mut Vec<&str>) {
    let mut i = 0;
    while i < lines.len() {
        if lines.get(i).is_some_and(|l| is_original_message(l)) {
            lines.truncate(i);
            return;
        }
        if is_outlook_header(lines, i) {
            let mut start = i;
            if let Some(above) = lines
                .get(..i)
                .and_then(|before| before.iter().rposition(|l| !is_blank(l)))
                && lines.get(above).is_some_and(|l| is_rule(l))
            {
                start = above;
            }
            lines.truncate(start);
            return;
        }
        if let Some(len) = attribution_len(lines, i) {
            if is_interleaved(lines.get(i + len..).unwrap_or_default()) {
                lines.drain(i..i + len);
                continue;
            }
            lines.truncate(i);
            return;
        }
        i += 1;
    }
}

/// Whether the lines after an attribution start (after blank lines) with
/// `>` lines and later hold new text: answers between the quotes.
fn is_interleaved(after: &[&str]) -> bool {
    let mut rest = after.iter().skip_while(|l| is_blank(l));
    if !rest.next().is_some_and(|l| is_quoted(l)) {
        return false;
    }
    rest.any(|l| !is_blank(l) && !is_quoted(l))
}

/// Outlook's `________________________________` above its header block.
fn is_rule(line: &str) -> bool {
    let line = line.trim();
    line.len() >= 10 && line.chars().all(|c| c == '_')
}

/// `-----Original Message-----` and its translations.
fn is_original_message(line: &str) -> bool {
    let line = line.trim();
    if !line.starts_with("---") || !line.ends_with("---") {
        return false;
    }
    let inner = line.trim_matches(|c: char| c == '-' || c.is_whitespace());
    let inner = inner.to_lowercase();
    ORIGINAL_MESSAGE.contains(&inner.as_str())
}

/// The field name of a `Name: value` line, lowercased, without the `*`
/// that plain-text renderings of Outlook's bold labels leave.
fn field_name(line: &str) -> Option<String> {
    let (name, _) = line.trim().split_once(':')?;
    let name = name.trim().trim_matches('*').trim();
    if name.is_empty() || name.len() > 20 || name.contains(' ') {
        return None;
    }
    Some(name.to_lowercase())
}

/// Whether line `i` starts Outlook's header block: `From:`, then within a
/// few lines `Sent:`/`Date:` and `To:`/`Subject:`.
fn is_outlook_header(lines: &[&str], i: usize) -> bool {
    let is_from = lines
        .get(i)
        .and_then(|l| field_name(l))
        .is_some_and(|name| FROM_FIELDS.contains(&name.as_str()));
    if !is_from {
        return false;
    }
    let (mut sent, mut to) = (false, false);
    for line in lines
        .iter()
        .skip(i + 1)
        .filter(|l| !is_blank(l))
        .take(OUTLOOK_BLOCK)
    {
        match field_name(line) {
            Some(name) if SENT_FIELDS.contains(&name.as_str()) => sent = true,
            Some(name) if TO_FIELDS.contains(&name.as_str()) => to = true,
            _ => {}
        }
    }
    sent && to
}

/// How many lines (1 or 2) the attribution at line `i` spans, if one
/// starts there.
fn attribution_len(lines: &[&str], i: usize) -> Option<usize> {
    let first = lines.get(i)?.trim();
    if is_attribution(first) {
        return Some(1);
    }
    let opens = ATTRIBUTIONS
        .iter()
        .any(|(start, _)| first.starts_with(start));
    let second = lines.get(i + 1)?.trim();
    (opens && !second.is_empty() && is_attribution(&format!("{first} {second}"))).then_some(2)
}

/// `On <date>, <name> wrote:` and the like, or `<address> wrote:`.
fn is_attribution(line: &str) -> bool {
    if line.len() > MAX_ATTRIBUTION || !line.ends_with(':') || is_quoted(line) {
        return false;
    }
    ATTRIBUTIONS
        .iter()
        .any(|(start, word)| line.starts_with(start) && line.contains(word))
        || (line.ends_with("wrote:") && line.contains('@'))
}

/// Drops a trailing run of `>` lines with the attribution before it, then
/// every other `>` line, without leaving a double blank line where one
/// was.
fn drop_quoted(mut lines: Vec<&str>) -> Vec<&str> {
    let mut end = lines.len();
    while end > 0
        && lines
            .get(end - 1)
            .is_some_and(|l| is_blank(l) || is_quoted(l))
    {
        end -= 1;
    }
    let had_quote = lines
        .get(end..)
        .is_some_and(|run| run.iter().any(|l| is_quoted(l)));
    if had_quote
        && end > 0
        && lines
            .get(end - 1)
            .is_some_and(|l| looks_like_attribution(l))
    {
        end -= 1;
    }
    lines.truncate(end);

    let mut kept: Vec<&str> = Vec::with_capacity(lines.len());
    let mut dropped = false;
    for line in lines {
        if is_quoted(line) {
            dropped = true;
        } else if is_blank(line) && dropped && kept.last().is_none_or(|l| is_blank(l)) {
            // The blank line the dropped quote stood between.
        } else {
            dropped &= is_blank(line);
            kept.push(line);
        }
    }
    kept
}

/// A line that ends with `:` and names an address, a date or "wrote": the
/// attribution of a quote whose client we do not know.
fn looks_like_attribution(line: &str) -> bool {
    let line = line.trim();
    if line.len() > MAX_ATTRIBUTION || !line.ends_with(':') {
        return false;
    }
    let lower = line.to_lowercase();
    line.contains('@')
        || line.chars().any(|c| c.is_ascii_digit())
        || ATTRIBUTION_WORDS.iter().any(|w| lower.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_attribution_and_quotes_go() {
        let text = "Thanks, that worked!\r\n\r\nThanks,\r\nTomasz\r\n\r\nOn Mon, 1 Dec 2026 at 10:00, Support <support+abc@example.com> wrote:\r\n\r\n> Try turning it off and on.\r\n>\r\n> Support\r\n";
        assert_eq!(
            new_text(text, false),
            "Thanks, that worked!\n\nThanks,\nTomasz"
        );
    }

    #[test]
    fn wrapped_attribution_goes() {
        let text = "Yes please.\n\nOn Mon, 1 Dec 2026 at 10:00, Support Team of Example <support@example.com>\nwrote:\n> Shall we?\n";
        assert_eq!(new_text(text, false), "Yes please.");
    }

    #[test]
    fn localized_attributions_go() {
        for attribution in [
            "Le lun. 1 déc. 2026 à 10:00, Support <s@example.com> a écrit :",
            "Am Mo., 1. Dez. 2026 um 10:00 Uhr schrieb Support <s@example.com>:",
            "El lun, 1 dic 2026 a las 10:00, Support (<s@example.com>) escribió:",
            "support@example.com wrote:",
        ] {
            let text = format!("Merci\n\n{attribution}\n> old\n");
            assert_eq!(new_text(&text, false), "Merci", "{attribution}");
        }
    }

    #[test]
    fn outlook_block_goes_with_its_rule() {
        let text = "New text here.\n\n________________________________\nFrom: Support <support@example.com>\nSent: Monday, December 1, 2026 10:00 AM\nTo: Anna <anna@example.org>\nSubject: Re: Order\n\nOld text.\n";
        assert_eq!(new_text(text, false), "New text here.");
        let bold = "Hi\n\n*From:* Support\n*Sent:* Monday\n*To:* Anna\n\nOld";
        assert_eq!(new_text(bold, false), "Hi");
    }

    #[test]
    fn ios_quoted_attribution_goes() {
        let text = "Ok, thanks.\n\nSent from my iPhone\n\n> On 1 Dec 2026, at 10:00, Support <s@example.com> wrote:\n>\n> Done.\n";
        assert_eq!(new_text(text, false), "Ok, thanks.\n\nSent from my iPhone");
    }

    #[test]
    fn localized_outlook_blocks_go() {
        let de = "Danke!\n\nVon: Support <s@example.com>\nGesendet: Montag, 1. Dezember 2026 10:00\nAn: Anna\nBetreff: AW: Rechnung\n\nAlt";
        assert_eq!(new_text(de, false), "Danke!");
        let fr = "Merci\n\nDe : Support\nEnvoyé : lundi 1 décembre 2026 10:00\nÀ : Anna\nObjet : RE: Facture\n\nAncien";
        assert_eq!(new_text(fr, false), "Merci");
    }

    #[test]
    fn original_message_goes() {
        let text = "Please cancel.\n\n-----Original Message-----\nFrom: x\nold";
        assert_eq!(new_text(text, false), "Please cancel.");
        let de = "Bitte.\n----- Ursprüngliche Nachricht -----\nalt";
        assert_eq!(new_text(de, false), "Bitte.");
    }

    #[test]
    fn from_line_alone_is_not_history() {
        let text = "From: my phone I cannot log in.\nAny idea?";
        assert_eq!(new_text(text, false), text);
    }

    #[test]
    fn signature_goes_but_sign_off_stays() {
        let text = "Where is my parcel?\n\nBest,\nAnna\n-- \nAnna Smith | ACME\n+1 555 0100\n";
        assert_eq!(new_text(text, false), "Where is my parcel?\n\nBest,\nAnna");
        // `--` without the space is not the delimiter.
        assert_eq!(new_text("a\n--\nb", false), "a\n--\nb");
    }

    #[test]
    fn interleaved_answers_stay() {
        let text = "On Mon, 1 Dec 2026 at 10:00, Support <s@example.com> wrote:\n> What is your order number?\n\n12345\n\n> And your postcode?\n\nAB1 2CD\n\n> Thanks\n";
        assert_eq!(new_text(text, false), "12345\n\nAB1 2CD");
    }

    #[test]
    fn quote_in_the_middle_without_attribution() {
        let text = "First.\n\n> quoted\n\nSecond.";
        assert_eq!(new_text(text, false), "First.\n\nSecond.");
    }

    #[test]
    fn whole_body_quoted_is_kept() {
        let text = "> only a quote\n> here\n";
        assert_eq!(new_text(text, false), "> only a quote\n> here");
        let text = "On Mon, 1 Dec 2026, X <x@example.com> wrote:\n> hi";
        assert_eq!(new_text(text, false), text);
    }

    #[test]
    fn blank_and_whitespace_tidied() {
        assert_eq!(
            new_text("\n\n  \nHello  \nWorld\t\n\n\n", false),
            "Hello\nWorld"
        );
        assert_eq!(new_text("a\0b", false), "a\u{FFFD}b");
        assert_eq!(new_text("", false), "");
    }

    #[test]
    fn forwarded_history_is_kept() {
        let text = "FYI\n\n-----Original Message-----\nFrom: shop\nYour order";
        assert_eq!(new_text(text, true), text);
    }

    #[test]
    fn flowed_lines_join() {
        let text = "This is a long \r\nparagraph.\r\n Stuffed\r\n-- \r\nsig";
        assert_eq!(
            unflow(text, false),
            "This is a long paragraph.\nStuffed\n-- \nsig\n"
        );
        assert_eq!(unflow("ab \ncd", true), "abcd\n");
    }
}
