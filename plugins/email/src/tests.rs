//! The corpus (`tests/corpus/*.eml`: mail shaped as the common clients
//! and servers write it) through `parse_mail`, and `compose_mail` checked
//! by reading its output back.

use gateway_plugin_sdk::channel::{
    Attachment, ChannelError, ContentKind, InboundMessage, OutboundMessage,
};
use gateway_plugin_sdk::host::types::Pair;

use crate::compose::compose_mail;
use crate::parse::parse_mail;

macro_rules! corpus {
    ($name:literal) => {
        include_bytes!(concat!("../tests/corpus/", $name, ".eml")).as_slice()
    };
}

fn parse(raw: &[u8]) -> InboundMessage {
    parse_mail(raw).expect("the mail parses")
}

fn meta<'a>(message: &'a InboundMessage, key: &str) -> Option<&'a str> {
    message
        .metadata
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

fn text(message: &InboundMessage) -> &str {
    message.text.as_deref().unwrap_or_default()
}

#[test]
fn gmail_reply() {
    let m = parse(corpus!("gmail_reply"));
    assert_eq!(m.external_id, "CAF=x1Yq8dP3v+Rk@mail.gmail.com");
    assert_eq!(m.sender, "tomasz.nowak@gmail.com");
    assert_eq!(m.sender_name.as_deref(), Some("Tomasz Nowak"));
    assert_eq!(m.recipient.as_deref(), Some("support+abc@example.com"));
    assert_eq!(m.subject.as_deref(), Some("Re: Router keeps disconnecting"));
    assert_eq!(m.kind, ContentKind::Text);
    assert_eq!(text(&m), "Thanks, that worked!\n\nThanks,\nTomasz");
    let html = m.html.as_deref().expect("html");
    assert!(html.starts_with("<div dir=\"ltr\">Thanks, that worked!"));
    assert!(m.media.is_empty());
    assert_eq!(m.timestamp_ms, 1_796_115_900_000);
    assert_eq!(m.in_reply_to.as_deref(), Some("gw.t1.41@example.com"));
    assert_eq!(m.thread_id, None);
    assert_eq!(
        meta(&m, "references"),
        Some("gw.t1.40@example.com gw.t1.41@example.com")
    );
    assert_eq!(meta(&m, "to"), Some("support+abc@example.com"));
    assert_eq!(meta(&m, "cc"), Some("ops@example.org,boss@example.org"));
    assert_eq!(
        meta(&m, "delivered-to"),
        Some("support@example.com,support+abc@example.com")
    );
    assert_eq!(meta(&m, "auto"), None);
}

#[test]
fn gmail_html_quote_is_removed_too() {
    let m = parse(corpus!("gmail_reply"));
    let html = m.html.as_deref().expect("html");
    assert_eq!(
        crate::quote::new_text(&crate::html::to_text(html, true), false),
        "Thanks, that worked!\n\nThanks,\nTomasz"
    );
}

#[test]
fn gmail_wrapped_attribution() {
    let m = parse(corpus!("gmail_wrapped_attribution"));
    assert_eq!(text(&m), "Perfect, thank you!");
    assert_eq!(m.sender_name.as_deref(), Some("Maria Garcia"));
}

#[test]
fn outlook_reply_windows_1252() {
    let m = parse(corpus!("outlook_reply"));
    assert_eq!(
        text(&m),
        "Hi,\n\nThe invoice shows €120 but I was charged €150. I couldn’t find why.\n\nRegards,\nAnna"
    );
    assert_eq!(m.subject.as_deref(), Some("RE: Invoice 2026-17"));
    assert_eq!(m.sender, "anna.schmidt@example.org");
    assert_eq!(m.in_reply_to.as_deref(), Some("gw.t5.3@example.com"));
    let html = m.html.as_deref().expect("html");
    assert!(html.contains("divRplyFwdMsg"));
    // Had the mail only its HTML, the same text.
    assert_eq!(
        crate::quote::new_text(&crate::html::to_text(html, true), false),
        text(&m)
    );
}

#[test]
fn apple_mail_reply() {
    let m = parse(corpus!("apple_mail_reply"));
    assert_eq!(
        text(&m),
        "Yes, Tuesday at 3pm works for me.\n\nBest,\nChris\n\nSent from my Mac"
    );
    assert_eq!(
        m.external_id,
        "8F2B9C2E-0000-4A4A-9B9B-ABCDEF012345@example.net"
    );
    let html = m.html.as_deref().expect("html");
    assert_eq!(
        crate::quote::new_text(&crate::html::to_text(html, true), false),
        text(&m)
    );
}

#[test]
fn thunderbird_reply_flowed() {
    let m = parse(corpus!("thunderbird_reply"));
    assert_eq!(
        text(&m),
        "Hello,\n\nthe app crashes when I open the settings page on my phone. It happens every time since the last update.\n\nJan"
    );
    assert_eq!(m.html, None);
}

#[test]
fn iso_8859_1_body_subject_and_name() {
    let m = parse(corpus!("iso_8859_1"));
    assert_eq!(m.subject.as_deref(), Some("Réclamation commande n° 1234"));
    assert_eq!(m.sender_name.as_deref(), Some("Renée Müller"));
    assert_eq!(m.sender, "renee@example.fr");
    assert_eq!(
        text(&m),
        "Bonjour,\n\nje n'ai pas reçu ma commande. Où est-elle ? Ça fait 3 semaines.\n\nMerci,\nRenée"
    );
}

#[test]
fn base64_utf8() {
    let m = parse(corpus!("base64_utf8"));
    assert_eq!(m.subject.as_deref(), Some("Заказ №77"));
    assert_eq!(text(&m), "Привет! 你好 👋\nMy order #77 never arrived.");
}

#[cfg(feature = "cjk")]
#[test]
fn multi_byte_charsets() {
    let jis = b"From: =?ISO-2022-JP?B?GyRCQ21KOCRLJEQkJCRGGyhC?= <taro@example.jp>\r\nSubject: =?ISO-2022-JP?B?GyRCQ21KOCRLJEQkJCRGGyhC?=\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\x1b$B$3$s$K$A$O!#\x1b(B\r\n\x1b$BCmJ8$,$^$@FO$-$^$;$s!#\x1b(B\r\n";
    let m = parse(jis);
    assert_eq!(m.subject.as_deref(), Some("注文について"));
    assert_eq!(m.sender_name.as_deref(), Some("注文について"));
    assert_eq!(text(&m), "こんにちは。\n注文がまだ届きません。");
    let gbk = b"From: a@example.cn\r\nContent-Type: text/plain; charset=GBK\r\n\r\n\xc4\xfa\xba\xc3\xa3\xac\xce\xd2\xb5\xc4\xb6\xa9\xb5\xa5\r\n";
    assert_eq!(text(&parse(gbk)), "您好，我的订单");
}

#[test]
fn html_only_is_converted_and_unquoted() {
    let m = parse(corpus!("html_only"));
    assert_eq!(
        text(&m),
        "Hello team,\n\nThe parcel arrived damaged — see the photo.\nCan you send a new one?\n\nThanks & regards,\nLena"
    );
    assert!(m.html.as_deref().is_some_and(|h| h.contains("gmail_quote")));
    assert!(m.media.is_empty());
}

#[test]
fn attachments_and_inline_image() {
    let m = parse(corpus!("attachments"));
    assert_eq!(
        text(&m),
        "Please see the invoice attached and the error below.\n\n[image: logo.png]\n\nOmar"
    );
    assert!(
        m.html
            .as_deref()
            .is_some_and(|h| h.contains("cid:shot@example.com"))
    );
    let summary: Vec<_> = m
        .media
        .iter()
        .map(|f| {
            (
                f.filename.as_deref(),
                f.mime_type.as_deref(),
                f.content_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some("screenshot.png"),
                Some("image/png"),
                Some("shot@example.com")
            ),
            (Some("Rechnung März.pdf"), Some("application/pdf"), None),
            (
                Some("attachment-3.bin"),
                Some("application/octet-stream"),
                None
            ),
            (Some("attachment-4.eml"), Some("message/rfc822"), None),
        ]
    );
    let data = |i: usize| {
        m.media
            .get(i)
            .and_then(|f| f.data.as_deref())
            .unwrap_or_default()
    };
    assert!(data(0).starts_with(b"\x89PNG"));
    assert_eq!(
        data(1),
        b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    );
    assert_eq!(data(2), (0u8..16).collect::<Vec<_>>());
    let attached = String::from_utf8_lossy(data(3));
    assert!(attached.starts_with("From: shop@example.net"), "{attached}");
    assert!(attached.contains("Message-ID: <order-77@example.net>"));
    assert!(attached.trim_end().ends_with("Your order 77 is confirmed."));
    for file in &m.media {
        assert_eq!(
            (&file.media_id, &file.caption, &file.sha256),
            (&None, &None, &None)
        );
    }
}

#[test]
fn signature_is_cut() {
    let m = parse(corpus!("signature"));
    assert_eq!(
        text(&m),
        "Where is my parcel? Tracking says it was delivered yesterday.\n\nBest,\nAnna"
    );
}

#[test]
fn long_lines_stay_whole() {
    let m = parse(corpus!("long_lines"));
    let long = "The quick brown fox jumps over the lazy dog near the riverbank. "
        .repeat(30)
        .trim_end()
        .to_owned();
    assert_eq!(text(&m), format!("{long}\n\nSecond paragraph, café."));
}

#[test]
fn malformed_mail_still_parses() {
    let raw = corpus!("malformed");
    let m = parse(raw);
    // No From and no Sender: the Return-Path.
    assert_eq!(m.sender, "weird@example.com");
    assert_eq!(m.sender_name, None);
    assert_eq!(m.recipient.as_deref(), Some("support@example.com"));
    assert_eq!(m.timestamp_ms, 0);
    let digest = gateway_plugin_sdk::sign::sha256(raw);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(m.external_id, format!("generated-{}", &hex[..32]));
    let subject = m.subject.as_deref().expect("a subject");
    assert!(subject.contains("café"), "{subject}");
    let body = text(&m);
    assert!(body.starts_with("Body with a bare LF\nand a NUL"), "{body}");
    assert!(!body.contains('\0'));
    assert!(body.contains('\u{FFFD}'));
    assert!(!m.metadata.iter().any(|p| p.value.is_empty()));
}

#[test]
fn sender_falls_back_to_sender_header() {
    let m = parse(b"Sender: Bot <Bot@Example.com>\r\nSubject: x\r\n\r\nhi\r\n");
    assert_eq!(m.sender, "bot@example.com");
    assert_eq!(m.sender_name.as_deref(), Some("Bot"));
    let m = parse(b"Subject: nobody\r\n\r\nhi\r\n");
    assert_eq!(m.sender, "");
    assert_eq!(m.text.as_deref(), Some("hi"));
}

#[test]
fn empty_or_headerless_input_is_refused() {
    for raw in [
        &b""[..],
        b"   \r\n\r\n",
        b"just some text without any header\n",
    ] {
        assert!(
            matches!(parse_mail(raw), Err(ChannelError::InvalidPayload(_))),
            "{raw:?}"
        );
    }
}

#[test]
fn headers_only_mail() {
    let m = parse(corpus!("headers_only"));
    assert_eq!(m.sender, "x@example.com");
    assert_eq!(m.subject.as_deref(), Some("only headers"));
    assert_eq!(m.text, None);
}

#[test]
fn out_of_office_auto_submitted() {
    let m = parse(corpus!("ooo_auto_submitted"));
    assert_eq!(meta(&m, "auto"), Some("reply"));
    assert_eq!(m.in_reply_to.as_deref(), Some("gw.t12.5@example.com"));
    assert_eq!(meta(&m, "bounce-message-id"), None);
}

#[test]
fn exchange_out_of_office() {
    let m = parse(corpus!("exchange_ooo"));
    assert_eq!(meta(&m, "auto"), Some("reply"));
    // The header alone (Outlook sets it on much ordinary mail) is not
    // enough.
    let ordinary =
        b"From: a@example.com\r\nX-Auto-Response-Suppress: All\r\nSubject: Question\r\n\r\nHi\r\n";
    assert_eq!(meta(&parse(ordinary), "auto"), None);
    let no = b"From: a@example.com\r\nAuto-Submitted: no\r\nSubject: Q\r\n\r\nHi\r\n";
    assert_eq!(meta(&parse(no), "auto"), None);
}

#[test]
fn precedence_bulk() {
    let m = parse(corpus!("precedence_bulk"));
    assert_eq!(meta(&m, "auto"), Some("reply"));
    let list = b"From: a@example.com\r\nPrecedence: list\r\nSubject: Q\r\n\r\nHi\r\n";
    assert_eq!(meta(&parse(list), "auto"), None);
}

#[test]
fn dsn_bounce() {
    let m = parse(corpus!("dsn_bounce"));
    assert_eq!(meta(&m, "auto"), Some("bounce"));
    assert_eq!(m.sender, "mailer-daemon@mx.example.com");
    assert_eq!(meta(&m, "bounce-message-id"), Some("gw.t1.42@example.com"));
    assert_eq!(
        meta(&m, "bounce-reason"),
        Some("550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown")
    );
    assert_eq!(meta(&m, "bounce-recipient"), Some("nobody@example.org"));
    assert!(m.media.is_empty(), "{:?}", m.media);
    assert!(text(&m).starts_with("This is the mail system at host mx.example.com."));
}

#[test]
fn a_delay_notice_is_not_a_bounce() {
    let raw = "From: MAILER-DAEMON@mx.example.com\r\nTo: support@example.com\r\nSubject: Delayed Mail (still being retried)\r\nMessage-ID: <delay1@mx.example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe mail is delayed; we keep trying.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; slow@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n--b--\r\n";
    let m = parse(raw.as_bytes());
    assert_eq!(meta(&m, "auto"), Some("reply"));
    assert_eq!(meta(&m, "bounce-message-id"), None);
}

#[test]
fn bounce_with_only_x_failed_recipients() {
    let m = parse(corpus!("failed_recipients_bounce"));
    assert_eq!(meta(&m, "auto"), Some("bounce"));
    assert_eq!(meta(&m, "bounce-message-id"), Some("gw.t7.99@example.com"));
    assert_eq!(meta(&m, "bounce-recipient"), Some("gone@example.org"));
    let reason = meta(&m, "bounce-reason").expect("a reason");
    assert!(
        reason.starts_with("This message was created automatically by mail delivery software."),
        "{reason}"
    );
    assert!(reason.chars().count() <= crate::bounce::MAX_REASON);
}

#[test]
fn bounce_without_report_uses_in_reply_to() {
    let raw = b"From: postmaster@example.org\r\nIn-Reply-To: <gw.t3.8@example.com>\r\nSubject: failure\r\n\r\nCould not deliver.\r\n";
    let m = parse(raw);
    assert_eq!(meta(&m, "auto"), Some("bounce"));
    assert_eq!(meta(&m, "bounce-message-id"), Some("gw.t3.8@example.com"));
    assert_eq!(meta(&m, "bounce-reason"), Some("Could not deliver."));
    assert_eq!(meta(&m, "bounce-recipient"), None);
}

#[test]
fn forwarded_mail_keeps_its_history() {
    let raw = b"From: a@example.com\r\nSubject: Fwd: Your order\r\n\r\nSee below.\r\n\r\n-----Original Message-----\r\nFrom: shop@example.net\r\nYour order 77.\r\n";
    let m = parse(raw);
    assert!(text(&m).ends_with("Your order 77."), "{}", text(&m));
}

/// No mail, however cut or damaged, makes the parser panic (a trap would
/// fail the host's whole fetch).
#[test]
fn damaged_mail_never_panics() {
    let corpus: [&[u8]; 8] = [
        corpus!("gmail_reply"),
        corpus!("outlook_reply"),
        corpus!("attachments"),
        corpus!("dsn_bounce"),
        corpus!("malformed"),
        corpus!("html_only"),
        corpus!("apple_mail_reply"),
        corpus!("failed_recipients_bounce"),
    ];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for raw in corpus {
        for cut in (0..raw.len()).step_by(37) {
            let _ = parse_mail(raw.get(..cut).unwrap_or_default());
        }
        for _ in 0..200 {
            let mut damaged = raw.to_vec();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = usize::try_from(seed % raw.len() as u64).unwrap_or(0);
                let bytes = b"<>=?:;\r\n\"\\-\0\xff ";
                let byte = bytes.get(usize::try_from(seed >> 56).unwrap_or(0) % bytes.len());
                if let (Some(b), Some(&byte)) = (damaged.get_mut(at), byte) {
                    *b = byte;
                }
            }
            if let Ok(m) = parse_mail(&damaged) {
                assert!(!m.text.unwrap_or_default().contains('\0'));
            }
        }
    }
}

// ---- compose ----

const NOW_MS: u64 = 1_796_119_200_000; // Mon, 1 Dec 2026 10:00:00 +0000

fn outbound() -> OutboundMessage {
    OutboundMessage {
        recipient: "tomasz@example.net".into(),
        sender: Some("support@example.com".into()),
        text: "Hi Tomasz,\n\nPlease restart the router & try again.\n\nSupport".into(),
        html: None,
        subject: Some("Re: Router keeps disconnecting".into()),
        thread_id: Some("t1".into()),
        in_reply_to: Some("<CAF=x1Yq8dP3v+Rk@mail.gmail.com>".into()),
        attachments: Vec::new(),
        template: None,
        client_message_id: "42".into(),
        metadata: vec![Pair {
            key: "references".into(),
            value: "<gw.t1.40@example.com> gw.t1.41@example.com".into(),
        }],
    }
}

fn pair(key: &str, value: &str) -> Pair {
    Pair {
        key: key.into(),
        value: value.into(),
    }
}

/// The header block of a raw mail, unfolded, one `Name: value` per entry.
fn headers(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(line);
            }
        } else {
            out.push(line.to_owned());
        }
    }
    out
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (n, v) = h.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn composed_headers() {
    let mail = compose_mail(&outbound(), NOW_MS).expect("composed");
    assert_eq!(mail.message_id, "gw.t1.42@example.com");
    assert_eq!(mail.envelope_from, "support@example.com");
    assert_eq!(mail.envelope_to, ["tomasz@example.net"]);
    let h = headers(&mail.raw);
    assert_eq!(header(&h, "From"), Some("<support@example.com>"));
    assert_eq!(header(&h, "To"), Some("<tomasz@example.net>"));
    assert_eq!(
        header(&h, "Subject"),
        Some("Re: Router keeps disconnecting")
    );
    assert_eq!(header(&h, "Message-ID"), Some("<gw.t1.42@example.com>"));
    assert_eq!(
        header(&h, "In-Reply-To"),
        Some("<CAF=x1Yq8dP3v+Rk@mail.gmail.com>")
    );
    let references: Vec<&str> = header(&h, "References")
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        references,
        [
            "<gw.t1.40@example.com>",
            "<gw.t1.41@example.com>",
            "<CAF=x1Yq8dP3v+Rk@mail.gmail.com>"
        ]
    );
    assert_eq!(header(&h, "Reply-To"), Some("<support+t1@example.com>"));
    assert_eq!(header(&h, "Date"), Some("Tue, 1 Dec 2026 10:00:00 +0000"));
    assert_eq!(header(&h, "Auto-Submitted"), None);
    assert_eq!(header(&h, "X-Auto-Response-Suppress"), None);
    assert!(
        header(&h, "Content-Type").is_some_and(|c| c.starts_with("multipart/alternative")),
        "{h:?}"
    );
    // Deterministic: a retry carries the same id.
    let again = compose_mail(&outbound(), NOW_MS + 5000).expect("composed");
    assert_eq!(again.message_id, mail.message_id);
}

#[test]
fn composed_defaults_and_options() {
    let mut m = outbound();
    m.subject = None;
    m.thread_id = None;
    m.in_reply_to = None;
    m.sender = Some("help+old@example.com".into());
    m.metadata = vec![
        pair("from-name", "ACME Support"),
        pair("auto-submitted", "auto-replied"),
    ];
    let mail = compose_mail(&m, NOW_MS).expect("composed");
    assert_eq!(mail.message_id, "gw.0.42@example.com");
    let h = headers(&mail.raw);
    assert_eq!(header(&h, "Subject"), Some("(no subject)"));
    assert_eq!(
        header(&h, "From"),
        Some("\"ACME Support\" <help+old@example.com>")
    );
    assert_eq!(header(&h, "Reply-To"), None);
    assert_eq!(header(&h, "In-Reply-To"), None);
    assert_eq!(header(&h, "References"), None);
    assert_eq!(header(&h, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(header(&h, "X-Auto-Response-Suppress"), Some("All"));

    // A thread on a sender with a tag: the tag is replaced.
    m.thread_id = Some("t9".into());
    let mail = compose_mail(&m, NOW_MS).expect("composed");
    assert_eq!(
        header(&headers(&mail.raw), "Reply-To"),
        Some("<help+t9@example.com>")
    );
    // An explicit Reply-To wins.
    m.metadata.push(pair("reply-to", "tickets@example.com"));
    let mail = compose_mail(&m, NOW_MS).expect("composed");
    assert_eq!(
        header(&headers(&mail.raw), "Reply-To"),
        Some("<tickets@example.com>")
    );
}

#[test]
fn ids_that_are_no_message_ids_are_left_out() {
    let mut m = outbound();
    m.in_reply_to = Some("generated-0123456789abcdef".into());
    m.metadata = vec![pair(
        "references",
        "<a@example.com> generated-99 b@example.com",
    )];
    let mail = compose_mail(&m, NOW_MS).expect("composed");
    let h = headers(&mail.raw);
    assert_eq!(header(&h, "In-Reply-To"), None);
    assert_eq!(
        header(&h, "References"),
        Some("<a@example.com> <b@example.com>")
    );
}

#[test]
fn composed_mail_round_trips() {
    let mut m = outbound();
    m.subject = Some("Re: Zażółć gęślą jaźń — €".into());
    m.metadata.push(pair("from-name", "Zespół Wsparcia"));
    let long = "word ".repeat(400);
    m.text = format!("Dzień dobry,\n\n{}\n\nPozdrawiamy", long.trim_end());
    m.attachments = vec![
        Attachment {
            filename: "faktura marzec.pdf".into(),
            mime_type: "application/pdf".into(),
            data: b"%PDF-1.4 fake".to_vec(),
        },
        Attachment {
            filename: "zdjęcie.png".into(),
            mime_type: "Image/PNG".into(),
            data: vec![0x89, b'P', b'N', b'G', 0, 1, 2, 255],
        },
    ];
    let mail = compose_mail(&m, NOW_MS).expect("composed");
    let raw = String::from_utf8(mail.raw.clone()).expect("7-bit mail");
    assert!(raw.is_ascii(), "everything is encoded");
    assert!(raw.lines().all(|l| l.len() <= 998), "no line over 998");
    assert!(!raw.replace("\r\n", "").contains('\n'), "CRLF only");
    assert!(
        headers(&mail.raw)
            .iter()
            .any(|h| h.starts_with("Subject: =?"))
    );

    let back = parse_mail(&mail.raw).expect("parses");
    assert_eq!(back.subject.as_deref(), Some("Re: Zażółć gęślą jaźń — €"));
    assert_eq!(back.sender, "support@example.com");
    assert_eq!(back.sender_name.as_deref(), Some("Zespół Wsparcia"));
    assert_eq!(back.recipient.as_deref(), Some("tomasz@example.net"));
    assert_eq!(back.external_id, "gw.t1.42@example.com");
    assert_eq!(back.timestamp_ms, NOW_MS);
    assert_eq!(back.text.as_deref(), Some(m.text.as_str()));
    let html = back.html.as_deref().expect("html");
    assert!(html.contains("<p>Dzień dobry,</p>"), "{html}");
    assert_eq!(
        back.in_reply_to.as_deref(),
        Some("CAF=x1Yq8dP3v+Rk@mail.gmail.com")
    );
    let files: Vec<_> = back
        .media
        .iter()
        .map(|f| {
            (
                f.filename.as_deref(),
                f.mime_type.as_deref(),
                f.data.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            (
                Some("faktura marzec.pdf"),
                Some("application/pdf"),
                Some(&b"%PDF-1.4 fake"[..])
            ),
            (
                Some("zdjęcie.png"),
                Some("image/png"),
                Some(&[0x89, b'P', b'N', b'G', 0, 1, 2, 255][..])
            ),
        ]
    );
}

#[test]
fn composed_html_is_used_when_given() {
    let mut m = outbound();
    m.html = Some("<p>Custom <b>HTML</b></p>".into());
    let mail = compose_mail(&m, NOW_MS).expect("composed");
    let back = parse_mail(&mail.raw).expect("parses");
    assert_eq!(back.html.as_deref(), Some("<p>Custom <b>HTML</b></p>"));
    assert_eq!(back.text.as_deref(), Some(m.text.as_str()));
}

#[test]
fn header_injection_and_bad_addresses_are_refused() {
    let refused = |change: &dyn Fn(&mut OutboundMessage)| {
        let mut m = outbound();
        change(&mut m);
        matches!(
            compose_mail(&m, NOW_MS),
            Err(ChannelError::InvalidPayload(_))
        )
    };
    assert!(refused(&|m| m.sender = None));
    assert!(refused(&|m| m.sender = Some("  ".into())));
    assert!(refused(&|m| m.sender = Some("support".into())));
    assert!(refused(
        &|m| m.recipient = "a@example.com\r\nBcc: victim@example.org".into()
    ));
    assert!(refused(&|m| m.recipient = "Tomasz <t@example.net>".into()));
    assert!(refused(
        &|m| m.recipient = "a@example.com, b@example.com".into()
    ));
    assert!(refused(&|m| m.recipient = "a b@example.com".into()));
    assert!(refused(
        &|m| m.subject = Some("Hi\r\nBcc: victim@example.org".into())
    ));
    assert!(refused(&|m| m.subject = Some("Hi\nX: y".into())));
    assert!(refused(
        &|m| m.in_reply_to = Some("<a@b>\r\nBcc: x@y".into())
    ));
    assert!(refused(&|m| m
        .metadata
        .push(pair("from-name", "Evil\r\nBcc: x@y"))));
    assert!(refused(&|m| m
        .metadata
        .push(pair("reply-to", "x@y\nBcc: z@w"))));
    assert!(refused(
        &|m| m.metadata = vec![pair("references", "<a@b>\r\nX: y")]
    ));
    assert!(refused(&|m| m.thread_id = Some("t1>\r\n".into())));
    assert!(refused(&|m| m.client_message_id = "4 2".into()));
    assert!(refused(&|m| m.client_message_id = String::new()));
    assert!(refused(&|m| {
        m.text = String::new();
        m.html = None;
    }));
    assert!(refused(&|m| m.attachments.push(Attachment {
        filename: "a\r\nb.pdf".into(),
        mime_type: "application/pdf".into(),
        data: Vec::new(),
    })));
    assert!(!refused(&|_| {}));
}

#[test]
fn attachment_types_and_names_are_tidied() {
    let mut m = outbound();
    m.attachments = vec![Attachment {
        filename: "x.dat".into(),
        mime_type: "not a type".into(),
        data: vec![1, 2, 3],
    }];
    m.attachments.push(Attachment {
        filename: " ".into(),
        mime_type: "image/png; name=x".into(),
        data: vec![4],
    });
    let mail = compose_mail(&m, NOW_MS).expect("composed");
    let back = parse_mail(&mail.raw).expect("parses");
    let files: Vec<_> = back
        .media
        .iter()
        .map(|f| (f.filename.as_deref(), f.mime_type.as_deref()))
        .collect();
    assert_eq!(
        files,
        [
            (Some("x.dat"), Some("application/octet-stream")),
            (Some("attachment-2.png"), Some("image/png")),
        ]
    );
}
