//! HTML to text for HTML-only mail, and text to HTML for outgoing mail.
//!
//! mail-parser's own converter runs block elements together (`<div>a</div>
//! <div>b</div>` gives `ab`, and Gmail writes every line as a `<div>`), and
//! quotes are best removed as elements before they turn into text, so this
//! is a small converter of its own: block elements break lines, `<p>`
//! separates paragraphs (Outlook's `MsoNormal` paragraphs are lines),
//! entities are decoded with mail-parser's table, and `<head>`, `<style>`,
//! `<script>`, `<title>` and `<template>` are skipped.

use mail_parser::decoders::html::add_html_token;

/// Elements whose contents are never text.
const HIDDEN: &[&str] = &["head", "style", "script", "title", "template"];

/// Elements that start and end a line.
const BLOCKS: &[&str] = &[
    "div",
    "blockquote",
    "ul",
    "ol",
    "table",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "center",
    "address",
    "dl",
    "dt",
    "dd",
    "body",
];

/// Classes of the elements that hold quoted history (or the signature,
/// which Gmail's plain text part marks with `-- `): Gmail, Yahoo,
/// Thunderbird's attribution, Proton.
const QUOTE_CLASSES: &[&str] = &[
    "gmail_quote",
    "gmail_signature",
    "yahoo_quoted",
    "moz-cite-prefix",
    "protonmail_quote",
];

/// Ids after which Outlook puts the message replied to, as siblings rather
/// than children: everything from them on is history.
const HISTORY_IDS: &[&str] = &["appendonsend", "divrplyfwdmsg", "stopspelling"];

/// A longer `&...;` is not an entity.
const MAX_ENTITY: usize = 40;

/// `html` as plain text; with `strip_quotes`, without the elements that
/// hold quoted history.
pub fn to_text(html: &str, strip_quotes: bool) -> String {
    let mut out = Text::default();
    let mut skipping: Option<(String, usize)> = None;
    let mut pre = 0usize;
    // Whether the open `<p>` is one of Outlook's line paragraphs (its end
    // tag does not say).
    let mut p_is_line = false;
    let mut rest = html;
    while !rest.is_empty() {
        let Some(after_lt) = rest.strip_prefix('<') else {
            let end = rest.find('<').unwrap_or(rest.len());
            let (chunk, tail) = rest.split_at(end);
            if skipping.is_none() {
                out.push_text(chunk, pre > 0);
            }
            rest = tail;
            continue;
        };
        if let Some(comment) = after_lt.strip_prefix("!--") {
            rest = comment
                .find("-->")
                .map_or("", |end| comment.get(end + 3..).unwrap_or_default());
            continue;
        }
        let Some(end) = tag_end(after_lt) else {
            // An unclosed `<`: the rest is text.
            if skipping.is_none() {
                out.push_text(rest, pre > 0);
            }
            break;
        };
        let inner = after_lt.get(..end).unwrap_or_default();
        rest = after_lt.get(end + 1..).unwrap_or_default();
        let tag = Tag::parse(inner);
        if tag.name.is_empty() {
            continue;
        }
        if let Some((name, depth)) = &mut skipping {
            if tag.name == *name {
                if tag.closing {
                    *depth -= 1;
                } else if !tag.self_closing {
                    *depth += 1;
                }
                if *depth == 0 {
                    skipping = None;
                }
            }
            continue;
        }
        if !tag.closing && !tag.self_closing {
            if HIDDEN.contains(&tag.name.as_str()) {
                skipping = Some((tag.name, 1));
                continue;
            }
            if strip_quotes && tag.is_quote() {
                skipping = Some((tag.name, 1));
                continue;
            }
        }
        if strip_quotes && !tag.closing && tag.starts_history() {
            break;
        }
        match tag.name.as_str() {
            "br" => out.hard_break(),
            "p" => {
                if !tag.closing {
                    p_is_line = tag.attrs.contains("msonormal");
                }
                if p_is_line {
                    out.line_break();
                } else {
                    out.paragraph();
                }
            }
            "li" => {
                out.line_break();
                if !tag.closing {
                    out.push_raw("- ");
                }
            }
            "td" | "th" if !tag.closing => out.space(),
            "pre" => {
                out.line_break();
                pre = if tag.closing {
                    pre.saturating_sub(1)
                } else {
                    pre + 1
                };
            }
            name if BLOCKS.contains(&name) => out.line_break(),
            _ => {}
        }
    }
    tidy(&out.text)
}

/// Lines without trailing whitespace, and at most one blank line in a row
/// (empty paragraphs and `<br>`s pile them up).
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.split('\n') {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_matches('\n').to_owned()
}

/// The position of the `>` closing a tag that starts after its `<`,
/// skipping quoted attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// A tag: its lowercased name, whether it closes or closes itself, and its
/// lowercased attributes.
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    attrs: String,
}

impl Tag {
    fn parse(inner: &str) -> Tag {
        let inner = inner.trim();
        let (closing, inner) = match inner.strip_prefix('/') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, inner),
        };
        let self_closing = inner.ends_with('/');
        let name_end = inner
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(inner.len());
        let (name, attrs) = inner.split_at(name_end);
        let name = if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            name.to_ascii_lowercase()
        } else {
            // `<!DOCTYPE>`, `<?xml?>`, `< 3`: nothing to act on.
            String::new()
        };
        Tag {
            name,
            closing,
            self_closing,
            attrs: attrs.to_ascii_lowercase(),
        }
    }

    /// An element holding quoted history: a `<blockquote>` (except Gmail's
    /// "indent", a blockquote without a border), or a `<div>` of one of
    /// the [`QUOTE_CLASSES`].
    fn is_quote(&self) -> bool {
        match self.name.as_str() {
            "blockquote" => {
                let attrs: String = self.attrs.split_whitespace().collect();
                !attrs.contains("border:none")
            }
            "div" => QUOTE_CLASSES.iter().any(|c| self.attrs.contains(c)),
            _ => false,
        }
    }

    /// Outlook's marker of the history below.
    fn starts_history(&self) -> bool {
        self.attrs.contains("id=") && HISTORY_IDS.iter().any(|id| self.attrs.contains(id))
    }
}

/// The text being written, whitespace collapsed as a browser would.
#[derive(Default)]
struct Text {
    text: String,
    pending_space: bool,
}

impl Text {
    fn push_text(&mut self, chunk: &str, pre: bool) {
        let decoded = decode_entities(chunk);
        for c in decoded.chars() {
            if pre {
                self.text.push(if c == '\u{a0}' { ' ' } else { c });
            } else if c == '\u{a0}' {
                // A no-break space is not collapsed: `<p>&nbsp;</p>` is a
                // blank line.
                if self.pending_space && !self.text.is_empty() && !self.text.ends_with('\n') {
                    self.text.push(' ');
                }
                self.pending_space = false;
                self.text.push(' ');
            } else if c.is_whitespace() {
                self.pending_space = true;
            } else {
                if self.pending_space && !self.text.is_empty() && !self.text.ends_with('\n') {
                    self.text.push(' ');
                }
                self.pending_space = false;
                self.text.push(c);
            }
        }
    }

    fn push_raw(&mut self, s: &str) {
        self.text.push_str(s);
        self.pending_space = false;
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn hard_break(&mut self) {
        self.text.push('\n');
        self.pending_space = false;
    }

    fn line_break(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        self.pending_space = false;
    }

    fn paragraph(&mut self) {
        self.line_break();
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }
}

/// `chunk` with its character references decoded (named ones with
/// mail-parser's table of HTML5 entities).
fn decode_entities(chunk: &str) -> String {
    let mut out = String::with_capacity(chunk.len());
    let mut rest = chunk;
    while let Some(amp) = rest.find('&') {
        let (before, from_amp) = rest.split_at(amp);
        out.push_str(before);
        let entity_end = from_amp
            .char_indices()
            .take(MAX_ENTITY)
            .skip(1)
            .find(|&(_, c)| c == ';' || c == '&' || c == '<' || c.is_whitespace());
        match entity_end {
            Some((end, ';')) => {
                let (entity, tail) = from_amp.split_at(end + 1);
                add_html_token(&mut out, entity.as_bytes(), false);
                rest = tail;
            }
            _ => {
                out.push('&');
                rest = from_amp.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` as simple HTML: special characters escaped, paragraphs on blank
/// lines, `<br>` on single line breaks, `http(s)://` addresses linked.
pub fn from_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut html = String::with_capacity(text.len() + text.len() / 8 + 128);
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n");
    let mut in_paragraph = false;
    for line in text.split('\n') {
        let line = line.trim_end();
        if line.is_empty() {
            if in_paragraph {
                html.push_str("</p>\n");
                in_paragraph = false;
            }
            continue;
        }
        if in_paragraph {
            html.push_str("<br>\n");
        } else {
            html.push_str("<p>");
            in_paragraph = true;
        }
        push_linked(&mut html, line);
    }
    if in_paragraph {
        html.push_str("</p>\n");
    }
    html.push_str("</body></html>\n");
    html
}

/// Appends `line`, escaped, with its web addresses as links.
fn push_linked(html: &mut String, line: &str) {
    let mut rest = line;
    while let Some(start) = find_url(rest) {
        let (before, from_url) = rest.split_at(start);
        push_escaped(html, before);
        let len = from_url
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(from_url.len());
        let url = from_url.get(..len).unwrap_or_default();
        // Sentence punctuation after an address is not part of it.
        let url = url.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '\'']);
        html.push_str("<a href=\"");
        push_escaped(html, url);
        html.push_str("\">");
        push_escaped(html, url);
        html.push_str("</a>");
        rest = from_url.get(url.len()..).unwrap_or_default();
    }
    push_escaped(html, rest);
}

/// Where the next `http://` or `https://` address starts.
fn find_url(s: &str) -> Option<usize> {
    let found = [s.find("https://"), s.find("http://")];
    found.into_iter().flatten().min()
}

fn push_escaped(html: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            c => html.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_divs_are_lines() {
        let html = r#"<div dir="ltr">Thanks, that worked!<div><br></div><div>Thanks,</div><div>Tomasz</div></div><br><div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">On Mon, 1 Dec 2026 at 10:00, Support &lt;<a href="mailto:support@example.com">support@example.com</a>&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204)"><div>Old <div>nested</div></div></blockquote></div>"#;
        let text = to_text(html, true);
        assert_eq!(text.trim_end(), "Thanks, that worked!\n\nThanks,\nTomasz");
        let unstripped = to_text(html, false);
        assert!(unstripped.contains("Support <support@example.com> wrote:"));
        assert!(unstripped.contains("Old\nnested"));
    }

    #[test]
    fn paragraphs_breaks_and_entities() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head><body><p>Caf&eacute; &amp; cr&#232;me &#x2014; &lt;ok&gt;</p><p>Line one<br/>line  two\n  wraps</p><ul><li>a</li><li>b</li></ul><script>x()</script></body></html>";
        assert_eq!(
            to_text(html, true).trim_end(),
            "Café & crème — <ok>\n\nLine one\nline two wraps\n\n- a\n- b"
        );
    }

    #[test]
    fn outlook_history_is_cut() {
        let html = r#"<div class=WordSection1><p class=MsoNormal>Hi,<o:p></o:p></p><p class=MsoNormal>&nbsp;<o:p></o:p></p><p class=MsoNormal>It still fails.<o:p></o:p></p></div><div id="appendonsend"></div><hr><div id="divRplyFwdMsg"><b>From:</b> Support</div><div>Old</div>"#;
        assert_eq!(to_text(html, true).trim_end(), "Hi,\n\nIt still fails.");
    }

    #[test]
    fn gmail_indent_is_not_a_quote() {
        let html = r#"<div>a</div><blockquote style="margin: 0 0 0 40px; border: none; padding: 0px"><div>indented</div></blockquote>"#;
        assert_eq!(to_text(html, true).trim_end(), "a\nindented");
    }

    #[test]
    fn malformed_html_does_not_panic() {
        for html in [
            "<",
            "<div",
            "a &",
            "&#xZZ;",
            "<p>x</",
            "<!-- open",
            "<<>>",
            "&amp",
            "é<b>ü</b>&",
        ] {
            let _ = to_text(html, true);
        }
        assert_eq!(to_text("a & b", true), "a & b");
        assert_eq!(to_text("<b>é</b>ü &unknown; x", true), "éü &unknown; x");
    }

    #[test]
    fn text_becomes_html() {
        let html = from_text("Hi <Anna> & \"Bob\",\nsee https://example.com/a?b=1&c=2.\n\n\nBye");
        assert!(html.contains(
            "<p>Hi &lt;Anna&gt; &amp; &quot;Bob&quot;,<br>\nsee <a href=\"https://example.com/a?b=1&amp;c=2\">https://example.com/a?b=1&amp;c=2</a>.</p>\n<p>Bye</p>"
        ), "{html}");
    }
}
