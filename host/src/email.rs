//! The email channel: an entry with `[plugins.mail]` (usually
//! `builtin:email`) whose plugin parses and shapes mail, while the host
//! moves it — IMAP in (async-imap, IDLE where offered), SMTP out (lettre).
//!
//! **Inbound.** Each entry's listener logs in to its mailbox, and fetches
//! every mail past the last UID it stored (`mail_cursors`, with the
//! mailbox's UIDVALIDITY). A mail is parsed by the plugin, threaded, stored
//! with its files and its original (`original.eml`), and only then is the
//! cursor moved and the mail flagged `\Seen` (or moved): a crash before the
//! cursor moves fetches the mail again and the Message-ID (unique per
//! entry) stores it once. On first sight of a mailbox (or a new
//! UIDVALIDITY) only its unseen mail is taken. Without IDLE, the listener
//! polls every `poll_secs`; on any failure it reconnects with backoff.
//!
//! **Threading**, first match wins: `In-Reply-To`/`References` naming a
//! stored or sent mail of the entry; the plus tag of the support address
//! in `To`/`Cc`/`Delivered-To` (`support+<tag>@domain`, the tag naming the
//! conversation, in the `Reply-To` of every mail sent); `[#<ticket>]` in
//! the subject when the sender is that conversation's contact. Otherwise,
//! or when the conversation found is closed, a new conversation.
//!
//! **Automatic mail.** Auto-replies are recorded as an internal note on
//! their conversation, neither stored as the customer's message nor
//! answered; bounces fail the sent message they name. The assistant's
//! mails say `Auto-Submitted: auto-replied`, mail from the support address
//! itself is dropped, and a contact gets at most `ANSWERS_PER_HOUR`
//! answers, so a loop with another responder ends within the hour.
//!
//! **Outbound** goes through the channels' outbox like every channel
//! (`channels::try_send` hands an email entry's messages here): the plugin
//! composes the mail, lettre submits it; a permanent (5xx) refusal fails
//! the message with the server's reply, anything else is retried with
//! backoff. The Message-ID is derived from the message's id, so a resend
//! after a crash carries the same id.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use lettre::AsyncTransport as _;
use serde::Serialize;

use crate::channels::{InMessage, InboxEvent, Route, Unsent};
use crate::config::{AfterStore, MailConfig, PluginConfig};
use crate::domain::contact::{ContactDetails, Identity};
use crate::domain::conversation::{
    Channel, ChannelMeta, Conversation, MESSAGE_MAX, Message, NewConversation, Priority, SenderKind,
};
use crate::events::Event;
use crate::plugins;
use crate::server::AppState;
use crate::service::ServiceError;
use crate::service::conversations::{self as convos, Answer, Author, Post, Upload};
use crate::store::MailCursor;

/// How many earlier ids an outgoing mail's `References` carries.
const REFERENCES: i64 = 20;
/// Mails fetched from the server at once.
const FETCH_CHUNK: usize = 50;
/// How long one IDLE lasts before it is renewed (servers drop an IDLE
/// after 30 minutes; a shorter one also notices a dead connection).
const IDLE_RENEW: Duration = Duration::from_secs(5 * 60);
/// Attempts to store one mail, over at least `SKIP_AFTER`, before the
/// listener skips it (logged, left unseen in the mailbox), so one mail
/// cannot stop its mailbox while an outage of minutes skips nothing.
const MAIL_ATTEMPTS: u32 = 5;
const SKIP_AFTER: Duration = Duration::from_secs(10 * 60);
/// Bytes of mail fetched at once (a chunk holds at most `FETCH_CHUNK`
/// mails, and one mail however large).
const CHUNK_BYTES: u64 = 32 * 1024 * 1024;
/// How long reading a chunk of mail may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Answers the assistant mails one contact in an hour; past it, mail is
/// stored unanswered (a responder that sets no automatic-mail header
/// cannot loop with the assistant).
const ANSWERS_PER_HOUR: u32 = 10;
/// How often a node without the listener's lock (PostgreSQL: another node
/// holds it) tries again.
const STANDBY_RETRY: Duration = Duration::from_secs(30);
/// Connecting, logging in and each command.
const IMAP_TIMEOUT: Duration = Duration::from_secs(60);
const SMTP_TIMEOUT: Duration = Duration::from_secs(60);

type Smtp = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;

/// One email entry: its organization, address and transports.
pub struct MailRoute {
    pub route: Route,
    pub mail: MailConfig,
    smtp: Option<Smtp>,
    /// Why the SMTP transport could not be built, if it could not.
    smtp_error: Option<String>,
    imap_password: Option<String>,
    /// The mailbox as the cursor knows it: scheme, user, host, port and
    /// folder (no password).
    mailbox_key: String,
    pub listener: Listener,
    /// Failed attempts (and the first one's time) per UIDVALIDITY and UID
    /// of the mails that failed to store.
    failures: std::sync::Mutex<std::collections::HashMap<(u32, u32), (u32, std::time::Instant)>>,
    /// Answers per contact in the current hour.
    answers: std::sync::Mutex<std::collections::HashMap<i64, (std::time::Instant, u32)>>,
}

/// The IMAP listener's switch and what it is doing.
pub struct Listener {
    running: tokio::sync::watch::Sender<bool>,
    status: std::sync::Mutex<ListenerStatus>,
}

/// What a listener is doing, for `/api/channels/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "error")]
pub enum ListenerStatus {
    /// No `imap_url`: mail arrives only through `POST /email/process`.
    NotConfigured,
    Stopped,
    Connecting,
    /// Logged in and waiting for mail (IDLE or polling).
    Listening,
    /// Another node listens to this mailbox (PostgreSQL); this one takes
    /// over if that one stops.
    Standby,
    /// The last attempt failed; it is retried with backoff.
    Failing(String),
}

impl Listener {
    fn new(start: bool) -> Listener {
        Listener {
            running: tokio::sync::watch::Sender::new(start),
            status: std::sync::Mutex::new(ListenerStatus::Stopped),
        }
    }

    pub fn status(&self) -> ListenerStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or(ListenerStatus::Stopped)
    }

    fn set(&self, status: ListenerStatus) {
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }

    /// Starts (`true`) or stops the listener; answers whether it changed.
    pub fn switch(&self, on: bool) -> bool {
        self.running
            .send_if_modified(|r| std::mem::replace(r, on) != on)
    }

    pub fn is_on(&self) -> bool {
        *self.running.borrow()
    }
}

impl MailRoute {
    /// Builds an entry's transports; a secret that is missing or a URL
    /// lettre refuses leaves the transport out, said by health and sends.
    pub fn new(route: Route, mail: MailConfig) -> MailRoute {
        let secret = mail
            .password_secret
            .as_ref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|s| !s.is_empty());
        // The secret goes beside the URL, not into it (it may hold `%`).
        let (smtp, smtp_error) = match &mail.smtp_url {
            None => (None, Some("no smtp_url is configured".to_owned())),
            Some(url) => match Smtp::from_url(url.as_str()) {
                Ok(mut b) => {
                    if url.password().is_none()
                        && !url.username().is_empty()
                        && let Some(secret) = &secret
                    {
                        b = b.credentials(
                            lettre::transport::smtp::authentication::Credentials::new(
                                percent_decode(url.username()),
                                secret.clone(),
                            ),
                        );
                    }
                    (Some(b.timeout(Some(SMTP_TIMEOUT)).build()), None)
                }
                Err(e) => (None, Some(format!("smtp_url: {e}"))),
            },
        };
        let imap_password = mail
            .imap_url
            .as_ref()
            .and_then(|u| u.password().map(percent_decode).or_else(|| secret.clone()));
        let mailbox_key = mail
            .imap_url
            .as_ref()
            .map(|u| {
                format!(
                    "{}://{}@{}:{}{}",
                    u.scheme(),
                    percent_decode(u.username()),
                    u.host_str().unwrap_or_default(),
                    u.port().unwrap_or_default(),
                    percent_decode(u.path())
                )
            })
            .unwrap_or_default();
        let listener = Listener::new(mail.start_listener && mail.imap_url.is_some());
        if mail.imap_url.is_none() {
            listener.set(ListenerStatus::NotConfigured);
        }
        MailRoute {
            route,
            mail,
            smtp,
            smtp_error,
            imap_password,
            mailbox_key,
            listener,
            failures: Default::default(),
            answers: Default::default(),
        }
    }

    pub fn entry(&self) -> &str {
        &self.route.entry
    }

    /// Counts a failed attempt at mail `uid`; answers whether it has
    /// failed `MAIL_ATTEMPTS` times over at least `SKIP_AFTER`.
    fn keeps_failing(&self, validity: u32, uid: u32) -> bool {
        let Ok(mut f) = self.failures.lock() else {
            return false;
        };
        if f.len() > 10_000 {
            f.clear();
        }
        let (n, first) = f
            .entry((validity, uid))
            .or_insert((0, std::time::Instant::now()));
        *n += 1;
        *n >= MAIL_ATTEMPTS && first.elapsed() >= SKIP_AFTER
    }

    /// Counts an answer to `contact`; `false` past `ANSWERS_PER_HOUR`.
    fn may_answer(&self, contact: i64) -> bool {
        let Ok(mut a) = self.answers.lock() else {
            return true;
        };
        if a.len() > 100_000 {
            a.clear();
        }
        let (since, n) = a.entry(contact).or_insert((std::time::Instant::now(), 0));
        if since.elapsed() >= Duration::from_secs(3600) {
            *since = std::time::Instant::now();
            *n = 0;
        }
        *n += 1;
        *n <= ANSWERS_PER_HOUR
    }

    /// `healthy`, or what is wrong, for the channels' health.
    pub fn health(&self) -> Result<(), String> {
        if let Some(e) = &self.smtp_error {
            return Err(e.clone());
        }
        match self.listener.status() {
            ListenerStatus::Failing(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The plus address naming a conversation: `support+<tag>@domain`.
    pub fn plus_address(&self, tag: &str) -> String {
        let (local, domain) = self
            .mail
            .address
            .rsplit_once('@')
            .unwrap_or((&self.mail.address, ""));
        let local = local.split('+').next().unwrap_or(local);
        format!("{local}+{tag}@{domain}")
    }

    /// The conversation tag in `address` when it is this entry's plus
    /// address.
    fn tag_in(&self, address: &str) -> Option<String> {
        let (local, domain) = address.trim().rsplit_once('@')?;
        let (ours, our_domain) = self.mail.address.rsplit_once('@')?;
        let (base, tag) = local.split_once('+')?;
        let ours = ours.split('+').next().unwrap_or(ours);
        (base.eq_ignore_ascii_case(ours)
            && domain.eq_ignore_ascii_case(our_domain)
            && valid_tag(tag))
        .then(|| tag.to_ascii_lowercase())
    }
}

/// A URL's percent-encoded user, password or path, decoded (`+` and `&`
/// stay as they are).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A conversation tag: 4 to 32 lower-case letters and digits.
fn valid_tag(tag: &str) -> bool {
    (4..=32).contains(&tag.len()) && tag.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The `external_id` of an email conversation: `email:<entry>:<tag>`.
pub fn conversation_key(entry: &str, tag: &str) -> String {
    format!("email:{entry}:{tag}")
}

/// The tag of an email conversation's key.
pub fn tag_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("email:")?;
    let (_, tag) = rest.split_once(':')?;
    let tag = tag.split('#').next().unwrap_or(tag);
    valid_tag(tag).then_some(tag)
}

/// A new conversation tag: 12 characters of base 36 (62 bits).
fn new_tag() -> String {
    let mut n: u64 = rand::random::<u64>() >> 2;
    let mut tag = String::with_capacity(12);
    for _ in 0..12 {
        let d = (n % 36) as u32;
        n /= 36;
        tag.push(char::from_digit(d, 36).unwrap_or('0'));
    }
    tag
}

/// Whether `config` is an email entry: one with a mail transport.
pub fn is_email(config: &PluginConfig) -> bool {
    config.mail.is_some()
}

/// What happened to one mail.
#[derive(Debug)]
pub enum Received {
    /// Stored as the customer's message (in the conversation).
    Stored(Box<Message>),
    /// Stored before (a redelivery).
    Duplicate(Box<Message>),
    /// An automatic reply, recorded on the conversation it continues.
    AutoReply(i64),
    /// A bounce; the message it names is failed (if found).
    Bounce(Option<i64>),
    /// Dropped, and why (a mail from the support address itself).
    Dropped(&'static str),
}

/// Parses a raw mail with the entry's plugin and takes it in.
pub async fn receive_raw(
    state: &AppState,
    mr: &MailRoute,
    raw: Vec<u8>,
) -> Result<Received, String> {
    let m = parse(state, mr, &raw).await.map_err(|e| match e {
        Unreadable::Payload(e) | Unreadable::Retry(e) => e,
    })?;
    receive(state, mr, m, Some(raw)).await
}

fn meta<'a>(m: &'a InMessage, key: &str) -> Option<&'a str> {
    m.metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Takes in a parsed mail (from IMAP or `POST /email/process`): threads
/// it, stores it with its files and `raw` as `original.eml`, and lets the
/// assistant answer.
pub async fn receive(
    state: &AppState,
    mr: &MailRoute,
    m: InMessage,
    raw: Option<Vec<u8>>,
) -> Result<Received, String> {
    let db = &state.db;
    let entry = mr.entry();
    let sender = m.sender.trim().to_ascii_lowercase();
    if sender == mr.mail.address || mr.tag_in(&sender).is_some() {
        return Ok(Received::Dropped("a mail from the support address itself"));
    }
    let automatic = match meta(&m, "auto") {
        Some("bounce") => return bounce(state, mr, &m).await,
        Some(_) => {
            if let Some(noted) = auto_reply(state, mr, &m, &sender).await? {
                return Ok(noted);
            }
            // Automatic mail that continues no conversation (a web form, a
            // system's notice) is a request: stored, not answered.
            true
        }
        None => false,
    };
    if let Some(stored) = db
        .message_by_provider_id(entry, &m.id)
        .await
        .map_err(|e| e.to_string())?
    {
        crate::channels::answer_if_unanswered(state, &stored).await?;
        return Ok(Received::Duplicate(Box::new(stored)));
    }
    if !crate::config::plausible_address(&sender) {
        return Ok(Received::Dropped("a mail without a usable sender address"));
    }
    let contact_id = contact_for(state, mr.route.org_id, &sender, m.name.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let c = match thread(state, mr, &m, contact_id).await? {
        Some(c) => c,
        None => new_conversation(state, mr, contact_id, m.subject.as_deref())
            .await
            .map_err(|e| e.to_string())?,
    };

    let mut files = Vec::new();
    let mut file_errors = Vec::new();
    let mut inline = serde_json::Map::new();
    for media in &m.media {
        let Some(bytes) = media.data.clone().filter(|d| !d.is_empty()) else {
            continue;
        };
        let name = media
            .filename
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "attachment".into());
        let upload = Upload {
            file_name: name.clone(),
            declared_type: media.mime_type.clone(),
            bytes,
        };
        match convos::store_file(state.core(), upload).await {
            Ok(f) => {
                if let Some(cid) = &media.content_id {
                    inline.insert(cid.clone(), f.sha256.clone().into());
                }
                files.push(f);
            }
            Err(e) => file_errors.push(format!("{name}: {e}")),
        }
    }
    if let Some(raw) = raw {
        let upload = Upload {
            file_name: "original.eml".into(),
            declared_type: Some("message/rfc822".into()),
            bytes: raw,
        };
        match convos::store_file(state.core(), upload).await {
            Ok(f) => files.push(f),
            Err(e) => file_errors.push(format!("original.eml: {e}")),
        }
    }
    let mut data = serde_json::json!({ "kind": "email", "from": sender });
    for key in ["to", "cc", "references"] {
        if let Some(v) = meta(&m, key) {
            data[key] = v.into();
        }
    }
    if let Some(id) = &m.in_reply_to {
        data["inReplyTo"] = id.clone().into();
    }
    if !inline.is_empty() {
        data["inline"] = inline.into();
    }
    if !file_errors.is_empty() {
        data["fileErrors"] = file_errors.into();
    }
    let mut content = m.text.clone().unwrap_or_default();
    if content.chars().count() > MESSAGE_MAX {
        // The whole mail is in original.eml.
        content = content.chars().take(MESSAGE_MAX - 40).collect();
        content.push_str("\n[…] (the rest is in original.eml)");
    }
    let answer = if content.trim().is_empty() || automatic {
        Answer::Skip
    } else if !mr.may_answer(contact_id) {
        tracing::warn!(entry = %entry, contact = contact_id, "more than {ANSWERS_PER_HOUR} mails from one contact in an hour: stored unanswered");
        Answer::Skip
    } else {
        Answer::BestEffort
    };
    let reply_to_id = match &m.in_reply_to {
        Some(id) => db
            .message_by_provider_id(entry, id)
            .await
            .map_err(|e| e.to_string())?
            .map(|r| r.id),
        None => None,
    };
    let post = Post {
        author: Author::Customer { user_id: None },
        content,
        internal: false,
        idempotency_key: None,
        files,
        channel: ChannelMeta {
            entry: Some(entry.to_owned()),
            provider_message_id: Some(m.id.clone()),
            reply_to_id,
            subject: m.subject.clone(),
            html: m.html.clone(),
            data: Some(data.to_string()),
        },
        delivery: None,
        customer_ref: Some(format!("contact-{contact_id}")),
        asked_for_person: false,
    };
    match convos::post(state.core(), &c, post, answer).await {
        Ok(posted) => Ok(Received::Stored(Box::new(posted.message))),
        Err(ServiceError::Closed) => Err("the conversation closed meanwhile".into()),
        // The same Message-ID stored by a concurrent delivery.
        Err(ServiceError::Conflict(_)) => match db
            .message_by_provider_id(entry, &m.id)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(stored) => Ok(Received::Duplicate(Box::new(stored))),
            None => Err("the mail could not be stored".into()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// The contact writing from `address`, created with its display name.
pub async fn contact_for(
    state: &AppState,
    org_id: i64,
    address: &str,
    name: Option<&str>,
) -> Result<i64, ServiceError> {
    let details = ContactDetails {
        email: Some(address.to_owned()),
        ..Default::default()
    };
    crate::channels::contact_of(
        state,
        org_id,
        &Identity::new(Channel::Email, address),
        name,
        details,
    )
    .await
}

/// A new email conversation with its own tag.
pub async fn new_conversation(
    state: &AppState,
    mr: &MailRoute,
    contact_id: i64,
    subject: Option<&str>,
) -> Result<Conversation, ServiceError> {
    let new = NewConversation {
        org_id: mr.route.org_id,
        customer_id: None,
        contact_id: Some(contact_id),
        subject: subject
            .map(|s| s.chars().take(200).collect::<String>())
            .filter(|s| !s.trim().is_empty()),
        priority: Priority::Medium,
        tags: Vec::new(),
        channel: Channel::Email,
        channel_entry: Some(mr.entry().to_owned()),
    };
    let (c, created) = state
        .db
        .create_external_conversation(&new, &conversation_key(mr.entry(), &new_tag()))
        .await?;
    if created {
        state.bus.publish(Event::ConversationCreated(c.clone()));
    }
    Ok(c)
}

/// The open email conversation of this entry that `tag` names.
pub async fn conversation_by_tag(
    state: &AppState,
    mr: &MailRoute,
    tag: &str,
) -> Result<Option<Conversation>, ServiceError> {
    let c = state
        .db
        .conversation_by_external(mr.route.org_id, &conversation_key(mr.entry(), tag))
        .await?;
    Ok(c.filter(|c| ours(mr, c)))
}

fn ours(mr: &MailRoute, c: &Conversation) -> bool {
    c.org_id == mr.route.org_id
        && c.channel == Channel::Email
        && c.channel_entry.as_deref() == Some(mr.entry())
}

/// The conversation a mail continues, by the rules in the module's doc;
/// `None` for a new one.
async fn thread(
    state: &AppState,
    mr: &MailRoute,
    m: &InMessage,
    contact_id: i64,
) -> Result<Option<Conversation>, String> {
    let db = &state.db;
    let open = |c: Option<Conversation>| c.filter(|c| ours(mr, c) && c.status.is_open());
    // 1. The mails it answers, the nearest first.
    let mut ids: Vec<&str> = Vec::new();
    if let Some(id) = &m.in_reply_to {
        ids.push(id);
    }
    if let Some(refs) = meta(m, "references") {
        ids.extend(refs.split_whitespace().rev());
    }
    for id in ids.into_iter().take(50) {
        if let Some(msg) = db
            .message_by_provider_id(mr.entry(), id)
            .await
            .map_err(|e| e.to_string())?
        {
            let c = db
                .conversation(msg.conversation_id)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(c) = open(c) {
                return Ok(Some(c));
            }
            // Found but closed: a new conversation.
            return Ok(None);
        }
    }
    // 2. The plus tag of the support address.
    let addresses = ["to", "cc", "delivered-to"]
        .iter()
        .filter_map(|k| meta(m, k))
        .flat_map(|v| v.split(','))
        .chain(m.account.as_deref());
    for address in addresses {
        if let Some(tag) = mr.tag_in(address) {
            let c = conversation_by_tag(state, mr, &tag)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(c) = c {
                return Ok(open(Some(c)));
            }
        }
    }
    // 3. `[#<ticket>]` in the subject, from that conversation's contact.
    if let Some(number) = m.subject.as_deref().and_then(ticket_token)
        && let Some(ticket) = db.ticket(number).await.map_err(|e| e.to_string())?
        && ticket.org_id == mr.route.org_id
    {
        let c = db
            .conversation(ticket.conversation_id)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(c) = open(c)
            && c.contact_id == Some(contact_id)
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The ticket number of a subject's `[#<number>]` token.
pub fn ticket_token(subject: &str) -> Option<i64> {
    let start = subject.find("[#")?;
    let rest = &subject[start + 2..];
    let end = rest.find(']')?;
    rest[..end].trim().parse().ok().filter(|n| *n > 0)
}

/// An outgoing mail's subject: `Re: <the conversation's subject>`, with
/// the `[#ticket]` token when there is a ticket.
pub fn reply_subject(subject: Option<&str>, ticket: Option<i64>) -> String {
    let subject = subject.map(str::trim).filter(|s| !s.is_empty());
    let mut out = match subject {
        Some(s) if s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("re:")) => s.to_owned(),
        Some(s) => format!("Re: {s}"),
        None => "Re: your message".to_owned(),
    };
    if let Some(n) = ticket {
        let token = format!("[#{n}]");
        if !out.contains(&token) {
            out = format!("{out} {token}");
        }
    }
    out
}

/// An automatic reply: an internal note on the conversation it continues,
/// no answer; `None` when it continues none.
async fn auto_reply(
    state: &AppState,
    mr: &MailRoute,
    m: &InMessage,
    sender: &str,
) -> Result<Option<Received>, String> {
    let contact_id = contact_for(state, mr.route.org_id, sender, m.name.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let c = thread(state, mr, m, contact_id).await?;
    let Some(c) = c else {
        return Ok(None);
    };
    let subject = m.subject.as_deref().unwrap_or("(no subject)");
    let text = m.text.as_deref().unwrap_or_default();
    let excerpt: String = text.chars().take(500).collect();
    let note = format!("Automatic reply from {sender}: {subject}\n\n{excerpt}");
    let post = Post {
        author: Author::System,
        content: note.trim_end().to_owned(),
        internal: true,
        idempotency_key: Some(format!("auto-reply:{}", m.id).chars().take(200).collect()),
        files: Vec::new(),
        channel: ChannelMeta::default(),
        delivery: None,
        customer_ref: None,
        asked_for_person: false,
    };
    convos::post(state.core(), &c, post, Answer::Skip)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(Received::AutoReply(c.id)))
}

/// A bounce: the outbound message it names fails with its reason.
async fn bounce(state: &AppState, mr: &MailRoute, m: &InMessage) -> Result<Received, String> {
    let Some(original) = meta(m, "bounce-message-id") else {
        tracing::info!(entry = %mr.entry(), "a bounce naming no message; dropped");
        return Ok(Received::Bounce(None));
    };
    // Only a mail we sent can bounce (a forged report naming a customer's
    // message changes nothing).
    let ours = state
        .db
        .message_by_provider_id(mr.entry(), original)
        .await
        .map_err(|e| e.to_string())?
        .is_some_and(|m| m.sender_kind != SenderKind::Customer);
    if !ours {
        return Ok(Received::Bounce(None));
    }
    let reason = meta(m, "bounce-reason").unwrap_or("the mail could not be delivered");
    let why = match meta(m, "bounce-recipient") {
        Some(to) => format!("bounced for {to}: {reason}"),
        None => format!("bounced: {reason}"),
    };
    let updated = convos::delivery_report(
        state.core(),
        mr.entry(),
        original,
        crate::domain::conversation::Delivery::Failed,
        Some(&why),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Received::Bounce(updated.map(|m| m.id)))
}

/// Sends one outbox message of an email conversation: composed by the
/// plugin, submitted over SMTP. Answers the mail's Message-ID.
pub(crate) async fn send(
    state: &AppState,
    mr: &MailRoute,
    item: &crate::store::OutboxItem,
    c: &Conversation,
) -> Result<String, Unsent> {
    let Some(smtp) = &mr.smtp else {
        return Err(Unsent::Retry(
            mr.smtp_error.clone().unwrap_or_default(),
            Duration::ZERO,
        ));
    };
    let plugin = match state.plugins.get(mr.entry()) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(Unsent::Retry(e.to_string(), Duration::ZERO)),
        None => {
            return Err(Unsent::Retry(
                "the entry is not configured".into(),
                Duration::ZERO,
            ));
        }
    };
    let Some(tag) = c.external_id.as_deref().and_then(tag_of) else {
        return Err(Unsent::Fail("the conversation has no email thread".into()));
    };
    let Some(message) = state.db.message(item.id).await? else {
        return Err(Unsent::Fail("the message is gone".into()));
    };
    let recipient = match c.contact_id {
        Some(id) => state.db.contact_by_id(id).await?.and_then(|c| c.email),
        None => None,
    };
    let Some(recipient) = recipient else {
        return Err(Unsent::Fail(
            "the conversation's contact has no email address".into(),
        ));
    };
    let ticket = state.db.ticket_of_conversation(c.id).await?.map(|t| t.id);
    let subject = message
        .channel
        .subject
        .clone()
        .unwrap_or_else(|| reply_subject(c.subject.as_deref(), ticket));
    let in_reply_to = state.db.last_customer_provider_id(c.id).await?;
    let references: Vec<String> = state.db.thread_ids(c.id, REFERENCES).await?;
    let data: serde_json::Value = item
        .channel_data
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let mut metadata = Vec::new();
    if !references.is_empty() {
        metadata.push(pair("references", &references.join(" ")));
    }
    // The assistant's answers and the gateway's own notices (a handover
    // announced, for one) are automatic: no responder should answer them.
    if matches!(
        message.sender_kind,
        SenderKind::Assistant | SenderKind::System
    ) {
        metadata.push(pair("auto-submitted", "auto-replied"));
    }
    if let Some(name) = &mr.mail.from_name {
        metadata.push(pair("from-name", name));
    }
    if let Some(reply_to) = data.get("replyTo").and_then(|v| v.as_str()) {
        metadata.push(pair("reply-to", reply_to));
    }
    let outbound = plugins::OutboundMessage {
        recipient,
        sender: Some(mr.mail.address.clone()),
        text: message.content.clone(),
        html: message.channel.html.clone(),
        subject: Some(subject),
        thread_id: Some(tag.to_owned()),
        in_reply_to,
        attachments: crate::channels::attachments_of(state, item.id).await?,
        template: None,
        client_message_id: item.id.to_string(),
        metadata,
    };
    let mail = match plugin.compose_mail(&outbound).await {
        Ok(m) => m,
        Err(e) => {
            return Err(match crate::channels::retryable(&e) {
                Some(at_least) => Unsent::Retry(e.to_string(), at_least),
                None => Unsent::Fail(e.to_string()),
            });
        }
    };
    let parse = |a: &str| {
        a.parse::<lettre::Address>()
            .map_err(|e| Unsent::Fail(format!("{a:?} is not an address: {e}")))
    };
    let to = mail
        .envelope_to
        .iter()
        .map(|a| parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envelope = lettre::address::Envelope::new(Some(parse(&mail.envelope_from)?), to)
        .map_err(|e| Unsent::Fail(format!("the envelope: {e}")))?;
    match smtp.send_raw(&envelope, &mail.raw).await {
        Ok(_) => Ok(mail.message_id),
        // The server refusing us (authentication, TLS, a sending quota)
        // is the operator's to fix, not the message's fault: retried.
        Err(e) if e.is_permanent() && !refuses_us(&e) => Err(Unsent::Fail(format!(
            "the mail server refused the mail: {e}"
        ))),
        Err(e) => Err(Unsent::Retry(
            format!("the mail server did not take the mail: {e}"),
            Duration::ZERO,
        )),
    }
}

/// A 5xx about the gateway's session rather than the mail: 530/534/535/
/// 538 (authentication, TLS), or an enhanced code 5.7.0/5.7.8/5.7.9
/// (authentication) or 5.4.5 (a sending quota).
fn refuses_us(e: &lettre::transport::smtp::Error) -> bool {
    let text = e.to_string();
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    matches!(code.as_str(), "530" | "534" | "535" | "538")
        || ["5.7.0", "5.7.8", "5.7.9", "5.4.5"]
            .iter()
            .any(|c| text.contains(c))
}

fn pair(key: &str, value: &str) -> plugins::Pair {
    plugins::Pair {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

// ---------------------------------------------------------------- IMAP

/// Starts one listener task per email entry with an `imap_url`.
pub fn start(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    state
        .channels
        .email
        .iter()
        .filter(|mr| mr.mail.imap_url.is_some())
        .map(|mr| tokio::spawn(listen(state.clone(), mr.clone())))
        .collect()
}

/// Backoff after `failures` failed sessions: 1 s, 2 s, 4 s... 5 minutes.
fn reconnect_after(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.saturating_sub(1).min(9)).min(300))
}

async fn listen(state: AppState, mr: Arc<MailRoute>) {
    let mut running = mr.listener.running.subscribe();
    let mut failures = 0u32;
    loop {
        let on = *running.borrow_and_update();
        if !on {
            mr.listener.set(ListenerStatus::Stopped);
            if running.wait_for(|on| *on).await.is_err() {
                return;
            }
        }
        // One listener per mailbox across nodes.
        let lock = match state.db.try_mail_lock(mr.entry()).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                mr.listener.set(ListenerStatus::Standby);
                let _ = tokio::time::timeout(STANDBY_RETRY, running.changed()).await;
                continue;
            }
            Err(e) => {
                mr.listener.set(ListenerStatus::Failing(e.to_string()));
                let _ = tokio::time::timeout(reconnect_after(3), running.changed()).await;
                continue;
            }
        };
        mr.listener.set(ListenerStatus::Connecting);
        let outcome = session(&state, &mr, &mut running).await;
        drop(lock);
        match outcome {
            Ok(()) => failures = 0,
            Err(e) => {
                // A session that got as far as listening starts the backoff
                // over.
                if mr.listener.status() == ListenerStatus::Listening {
                    failures = 0;
                }
                failures += 1;
                let wait = reconnect_after(failures);
                tracing::warn!(entry = %mr.entry(), error = %e, retry_in_s = wait.as_secs(), "the IMAP listener failed");
                mr.listener.set(ListenerStatus::Failing(e));
                // A stop (or start) meanwhile ends the wait.
                let _ = tokio::time::timeout(wait, running.changed()).await;
            }
        }
    }
}

/// Resolves once the listener is switched off (or its switch is gone).
async fn stop_asked(running: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = running.wait_for(|on| !*on).await;
}

/// A stream the IMAP client can speak over: plain TCP or TLS.
trait ImapStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + std::fmt::Debug> ImapStream
    for T
{
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(IMAP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {} s",
            IMAP_TIMEOUT.as_secs()
        )),
    }
}

/// One connection: log in, catch up, then wait for mail until stopped
/// (`Ok`) or broken (`Err`).
async fn session(
    state: &AppState,
    mr: &Arc<MailRoute>,
    running: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let Some(url) = &mr.mail.imap_url else {
        return Ok(());
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let tls = url.scheme() == "imaps";
    let port = url.port().unwrap_or(if tls { 993 } else { 143 });
    let tcp = timed(
        "connect",
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn ImapStream> = if tls {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("TLS: {host:?}: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        Box::new(timed("TLS handshake", connector.connect(name, tcp)).await?)
    } else {
        Box::new(tcp)
    };
    let mut client = async_imap::Client::new(stream);
    timed("greeting", async {
        client
            .read_response()
            .await
            .and_then(|r| r.ok_or_else(|| std::io::Error::other("closed before greeting")))
    })
    .await?;
    let user = percent_decode(url.username());
    let password = mr.imap_password.clone().unwrap_or_default();
    let mut imap = timed("login", async {
        client.login(&user, &password).await.map_err(|(e, _)| e)
    })
    .await?;
    let caps = timed("capabilities", imap.capabilities()).await?;
    let idle = caps.has_str("IDLE");
    let caps = Caps {
        moves: caps.has_str("MOVE"),
        uidplus: caps.has_str("UIDPLUS"),
    };
    let mailbox = {
        let path = url.path().trim_start_matches('/');
        if path.is_empty() {
            "INBOX".to_owned()
        } else {
            percent_decode(path)
        }
    };
    let selected = timed("select", imap.select(&mailbox)).await?;
    let validity = selected.uid_validity.unwrap_or(0);
    if let AfterStore::Move(folder) = &mr.mail.after_store {
        // Exists already, usually.
        let _ = timed("create", imap.create(folder)).await;
    }
    mr.listener.set(ListenerStatus::Listening);
    tracing::info!(entry = %mr.entry(), %mailbox, idle, "the IMAP listener is connected");

    let mut cursor = match state
        .db
        .mail_cursor(mr.entry(), &mr.mailbox_key)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(c) if c.uid_validity == validity => c,
        _ => {
            // First sight of this mailbox: its unseen mail, then what comes.
            let up_to = selected.uid_next.map(|n| n.saturating_sub(1)).unwrap_or(0);
            let unseen = if up_to == 0 {
                Vec::new()
            } else {
                list(&mut imap, &format!("1:{up_to}"), 0, true).await?
            };
            let mut start = MailCursor {
                uid_validity: validity,
                last_uid: 0,
            };
            take(state, mr, &mut imap, caps, &unseen, &mut start, false).await?;
            let c = MailCursor {
                uid_validity: validity,
                last_uid: up_to,
            };
            state
                .db
                .set_mail_cursor(mr.entry(), &mr.mailbox_key, c)
                .await
                .map_err(|e| e.to_string())?;
            c
        }
    };
    loop {
        while imap.unsolicited_responses.try_recv().is_ok() {}
        let after = cursor.last_uid;
        let uids = list(
            &mut imap,
            &format!("{}:*", after.saturating_add(1)),
            after,
            false,
        )
        .await?;
        take(state, mr, &mut imap, caps, &uids, &mut cursor, true).await?;
        if !uids.is_empty() {
            continue;
        }
        if !*running.borrow() {
            let _ = timed("logout", imap.logout()).await;
            return Ok(());
        }
        // New mail while we were busy: look again before waiting.
        let mut news = false;
        while let Ok(r) = imap.unsolicited_responses.try_recv() {
            news |= matches!(r, async_imap::types::UnsolicitedResponse::Exists(_));
        }
        if news {
            continue;
        }
        if idle {
            let mut handle = imap.idle();
            timed("idle", handle.init()).await?;
            let stopped = {
                let (wait, interrupt) = handle.wait_with_timeout(IDLE_RENEW);
                let stopped = tokio::select! {
                    r = wait => {
                        r.map_err(|e| format!("idle: {e}"))?;
                        false
                    }
                    () = stop_asked(running) => true,
                };
                drop(interrupt);
                stopped
            };
            imap = timed("idle done", handle.done()).await?;
            if stopped {
                let _ = timed("logout", imap.logout()).await;
                return Ok(());
            }
        } else {
            tokio::select! {
                () = tokio::time::sleep(mr.mail.poll) => {}
                () = stop_asked(running) => {
                    let _ = timed("logout", imap.logout()).await;
                    return Ok(());
                }
            }
        }
    }
}

/// What the server can do beyond IMAP4rev1, for marking stored mail.
#[derive(Debug, Clone, Copy)]
struct Caps {
    moves: bool,
    uidplus: bool,
}

/// Reads a stream of fetch answers to the end, within `limit`.
async fn collect_within<S>(
    what: &str,
    limit: Duration,
    stream: S,
) -> Result<Vec<async_imap::types::Fetch>, String>
where
    S: futures_util::Stream<Item = async_imap::error::Result<async_imap::types::Fetch>>,
{
    let all: Vec<_> = tokio::time::timeout(limit, stream.collect())
        .await
        .map_err(|_| format!("{what}: no answer within {} s", limit.as_secs()))?;
    all.into_iter()
        .map(|f| f.map_err(|e| format!("{what}: {e}")))
        .collect()
}

/// The UIDs in `set` past `after` with their sizes, in order; with
/// `unseen_only`, those not flagged `\Seen`.
async fn list(
    imap: &mut async_imap::Session<Box<dyn ImapStream>>,
    set: &str,
    after: u32,
    unseen_only: bool,
) -> Result<Vec<(u32, u64)>, String> {
    let query = if unseen_only {
        "(UID RFC822.SIZE FLAGS)"
    } else {
        "(UID RFC822.SIZE)"
    };
    let fetches = timed("fetch", imap.uid_fetch(set, query)).await?;
    let all = collect_within("fetch", IMAP_TIMEOUT, fetches).await?;
    let mut uids: Vec<(u32, u64)> = all
        .iter()
        .filter(|f| {
            !unseen_only
                || !f
                    .flags()
                    .any(|flag| matches!(flag, async_imap::types::Flag::Seen))
        })
        .filter_map(|f| {
            let uid = f.uid.filter(|u| *u > after)?;
            Some((uid, u64::from(f.size.unwrap_or(0))))
        })
        .collect();
    uids.sort_unstable();
    uids.dedup_by_key(|(uid, _)| *uid);
    Ok(uids)
}

/// `mails` (UID and size) in chunks of at most `FETCH_CHUNK` mails and
/// `CHUNK_BYTES` bytes (a larger mail alone).
fn chunks(mails: &[(u32, u64)]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in mails {
        match out.last_mut() {
            Some(chunk) if chunk.len() < FETCH_CHUNK && bytes + size <= CHUNK_BYTES => {
                chunk.push(uid);
                bytes += size;
            }
            _ => {
                out.push(vec![uid]);
                bytes = size;
            }
        }
    }
    out
}

/// Fetches, stores and marks `mails` (UID and size); with `advance`, the
/// cursor moves past what was stored. Within a chunk, mails are parsed
/// side by side and stored in lanes, one per sender (a sender's mails in
/// order, senders concurrently). A mail the plugin refuses is skipped
/// (logged, left unseen). A mail that failed to store (or that the server
/// did not return) ends the session so that it is fetched again: the
/// cursor stops before it, and what was stored after it is recognized by
/// its Message-ID. One that keeps failing for `SKIP_AFTER` is skipped.
async fn take(
    state: &AppState,
    mr: &Arc<MailRoute>,
    imap: &mut async_imap::Session<Box<dyn ImapStream>>,
    caps: Caps,
    mails: &[(u32, u64)],
    cursor: &mut MailCursor,
    advance: bool,
) -> Result<(), String> {
    for chunk in chunks(mails) {
        let mut fetched: Vec<(u32, Vec<u8>)> = Vec::with_capacity(chunk.len());
        {
            let fetches = timed(
                "fetch",
                imap.uid_fetch(uid_set(&chunk), "(UID BODY.PEEK[])"),
            )
            .await?;
            for f in collect_within("fetch", FETCH_TIMEOUT, fetches).await? {
                if let (Some(uid), Some(body)) = (f.uid, f.body())
                    && chunk.contains(&uid)
                {
                    fetched.push((uid, body.to_vec()));
                }
            }
        }
        let started = std::time::Instant::now();
        let count = fetched.len();
        // What the server did not return (a NO, or expunged meanwhile) is
        // tried again, not passed.
        let mut failed: Vec<u32> = chunk
            .iter()
            .copied()
            .filter(|uid| !fetched.iter().any(|(u, _)| u == uid))
            .collect();

        // Parse side by side.
        let mut parsing = tokio::task::JoinSet::new();
        for (uid, raw) in fetched {
            let (state, mr) = (state.clone(), mr.clone());
            parsing.spawn(async move {
                let parsed = parse(&state, &mr, &raw).await;
                (uid, parsed, raw)
            });
        }
        let mut lanes: std::collections::BTreeMap<String, Vec<(u32, InMessage, Vec<u8>)>> =
            Default::default();
        while let Some(done) = parsing.join_next().await {
            let Ok((uid, parsed, raw)) = done else {
                return Err("a mail's parse panicked".into());
            };
            match parsed {
                Ok(m) => lanes
                    .entry(m.sender.trim().to_ascii_lowercase())
                    .or_default()
                    .push((uid, m, raw)),
                Err(Unreadable::Payload(e)) => {
                    tracing::error!(entry = %mr.entry(), uid, error = %e, "a mail could not be read; left in the mailbox");
                }
                Err(Unreadable::Retry(e)) => {
                    tracing::warn!(entry = %mr.entry(), uid, error = %e, "a mail could not be parsed now");
                    failed.push(uid);
                }
            }
        }

        // Store in lanes.
        let mut storing = tokio::task::JoinSet::new();
        for (_, mut lane) in lanes {
            lane.sort_by_key(|(uid, _, _)| *uid);
            let (state, mr) = (state.clone(), mr.clone());
            storing.spawn(async move {
                let mut out = Vec::with_capacity(lane.len());
                let mut lane = lane.into_iter();
                for (uid, m, raw) in lane.by_ref() {
                    match receive(&state, &mr, m, Some(raw)).await {
                        Ok(_) => out.push((uid, Ok(()))),
                        Err(e) => {
                            out.push((uid, Err(Some(e))));
                            break;
                        }
                    }
                }
                // Behind a failure, the sender's later mails wait too.
                out.extend(lane.map(|(uid, _, _)| (uid, Err(None))));
                out
            });
        }
        let mut stored: Vec<u32> = Vec::new();
        let mut behind: Vec<u32> = Vec::new();
        while let Some(done) = storing.join_next().await {
            let Ok(results) = done else {
                return Err("storing a mail panicked".into());
            };
            for (uid, r) in results {
                match r {
                    Ok(()) => stored.push(uid),
                    Err(Some(e)) => {
                        tracing::warn!(entry = %mr.entry(), uid, error = %e, "a mail could not be stored");
                        failed.push(uid);
                    }
                    Err(None) => behind.push(uid),
                }
            }
        }
        // A mail that keeps failing is skipped, so the rest can go on.
        failed.retain(|uid| {
            if !mr.keeps_failing(cursor.uid_validity, *uid) {
                return true;
            }
            tracing::error!(entry = %mr.entry(), uid, attempts = MAIL_ATTEMPTS, "a mail could not be stored for 10 minutes; skipped and left unseen in the mailbox");
            metrics::counter!("email_skipped_total").increment(1);
            false
        });
        // The sender's later mails wait behind a failed one: fetched again
        // (a skipped one included), not counted as failing themselves.
        failed.extend(behind);
        metrics::counter!("email_received_total").increment(stored.len() as u64);
        metrics::histogram!("email_chunk_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(entry = %mr.entry(), count, stored = stored.len(), ms = started.elapsed().as_millis() as u64, "mail taken in");

        // Marked before the cursor moves: a crash in between fetches them
        // again, and their Message-IDs say they are stored.
        if !stored.is_empty() {
            stored.sort_unstable();
            if let Err(e) = mark(imap, mr, caps, &uid_set(&stored)).await {
                tracing::warn!(entry = %mr.entry(), error = %e, "stored mail could not be flagged or moved");
            }
        }
        if advance {
            let last = match failed.iter().min() {
                Some(first_failed) => first_failed.saturating_sub(1),
                None => chunk.iter().copied().max().unwrap_or(cursor.last_uid),
            };
            if last > cursor.last_uid {
                cursor.last_uid = last;
                state
                    .db
                    .set_mail_cursor(mr.entry(), &mr.mailbox_key, *cursor)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        if let Some(first) = failed.iter().min() {
            return Err(format!(
                "mail {first} could not be stored; fetching it again"
            ));
        }
    }
    Ok(())
}

/// `1,2,3` for an IMAP command.
fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a fetched mail was not parsed.
enum Unreadable {
    /// The plugin refused it: not a mail; it stays in the mailbox.
    Payload(String),
    /// The plugin was busy or failed; the next attempt may succeed.
    Retry(String),
}

async fn parse(state: &AppState, mr: &MailRoute, raw: &[u8]) -> Result<InMessage, Unreadable> {
    let plugin = match state.plugins.get(mr.entry()) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(Unreadable::Retry(e.to_string())),
        None => {
            return Err(Unreadable::Retry(format!(
                "the entry `{}` is not configured",
                mr.entry()
            )));
        }
    };
    match plugin.parse_mail(raw).await {
        Ok(parsed) => match InboxEvent::from_plugin(plugins::InboundEvent::Message(parsed)) {
            InboxEvent::Message(m) => Ok(*m),
            InboxEvent::Status(_) => Err(Unreadable::Payload("not a message".into())),
        },
        Err(e) => match crate::channels::retryable(&e) {
            Some(_) => Err(Unreadable::Retry(e.to_string())),
            None => Err(Unreadable::Payload(e.to_string())),
        },
    }
}

/// Flags stored mails `\Seen`, or moves them (`MOVE`, or where the server
/// lacks it: copy, flag `\Deleted` and, with `UIDPLUS`, expunge them).
async fn mark(
    imap: &mut async_imap::Session<Box<dyn ImapStream>>,
    mr: &MailRoute,
    caps: Caps,
    set: &str,
) -> Result<(), String> {
    let flag = async |imap: &mut async_imap::Session<Box<dyn ImapStream>>, flags: &str| {
        let updates = timed("store", imap.uid_store(set, flags)).await?;
        collect_within("store", IMAP_TIMEOUT, updates)
            .await
            .map(|_| ())
    };
    match &mr.mail.after_store {
        AfterStore::Seen => flag(imap, "+FLAGS.SILENT (\\Seen)").await?,
        AfterStore::Move(folder) if caps.moves => {
            timed("move", imap.uid_mv(set, folder)).await?;
        }
        AfterStore::Move(folder) => {
            timed("copy", imap.uid_copy(set, folder)).await?;
            flag(imap, "+FLAGS.SILENT (\\Seen \\Deleted)").await?;
            if caps.uidplus {
                let gone = timed("expunge", imap.uid_expunge(set)).await?;
                let _: Vec<_> = tokio::time::timeout(IMAP_TIMEOUT, gone.collect::<Vec<_>>())
                    .await
                    .map_err(|_| "expunge: no answer".to_owned())?;
            }
        }
    }
    Ok(())
}

/// What `gateway plugins check` says about an email entry.
pub fn check_entry(
    config: &PluginConfig,
    env: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(mail) = &config.mail else {
        if matches!(&config.source, crate::config::ComponentSource::Builtin(n) if n == "email") {
            problems.push(
                "builtin:email needs a [plugins.mail] table (address, smtp_url, imap_url)".into(),
            );
        }
        return problems;
    };
    if let Some(name) = &mail.password_secret
        && env.get(name).is_none_or(|v| v.is_empty())
    {
        problems.push(format!(
            "mail.password_secret names {name}, which is not set"
        ));
    }
    if mail.smtp_url.is_none() {
        problems.push("no mail.smtp_url: replies cannot be sent".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(address: &str) -> MailRoute {
        let config = crate::config::Config::from_toml(
            &format!(
                "[[plugins]]\nid = \"email\"\npath = \"builtin:email\"\nworld = \"channel\"\n\
                 [plugins.mail]\naddress = \"{address}\"\n[plugins.grants]\nmail = true\n"
            ),
            None,
            &std::collections::HashMap::new(),
        )
        .expect("config");
        let mail = config.plugins[0].mail.clone().expect("mail");
        MailRoute::new(
            Route {
                entry: "email".into(),
                org_id: 1,
                numbers: Vec::new(),
            },
            mail,
        )
    }

    #[test]
    fn plus_tags_name_conversations() {
        let r = route("support@example.com");
        assert_eq!(r.plus_address("ab12cd34"), "support+ab12cd34@example.com");
        assert_eq!(
            r.tag_in("Support+AB12cd34@Example.com").as_deref(),
            Some("ab12cd34")
        );
        assert_eq!(r.tag_in("support@example.com"), None);
        assert_eq!(r.tag_in("sales+ab12cd34@example.com"), None);
        assert_eq!(r.tag_in("support+ab12cd34@other.com"), None);
        assert_eq!(r.tag_in("support+a!b@example.com"), None);
        let key = conversation_key("email", "ab12cd34");
        assert_eq!(tag_of(&key), Some("ab12cd34"));
        assert_eq!(tag_of(&format!("{key}#17")), Some("ab12cd34"));
        assert_eq!(tag_of("whatsapp:1:2"), None);
        let tag = new_tag();
        assert!(valid_tag(&tag), "{tag}");
        assert_ne!(tag, new_tag());
    }

    #[test]
    fn subjects_and_ticket_tokens() {
        assert_eq!(ticket_token("Re: broken [#42] again"), Some(42));
        assert_eq!(ticket_token("[# 7 ]"), Some(7));
        assert_eq!(ticket_token("[#x]"), None);
        assert_eq!(ticket_token("[#0]"), None);
        assert_eq!(ticket_token("no token"), None);
        assert_eq!(reply_subject(Some("Order"), None), "Re: Order");
        assert_eq!(reply_subject(Some("RE: Order"), None), "RE: Order");
        assert_eq!(reply_subject(Some("Order"), Some(9)), "Re: Order [#9]");
        assert_eq!(
            reply_subject(Some("Re: Order [#9]"), Some(9)),
            "Re: Order [#9]"
        );
        assert_eq!(reply_subject(None, None), "Re: your message");
        // Multi-byte subjects are not cut inside a character.
        assert_eq!(reply_subject(Some("Привет"), None), "Re: Привет");
        assert_eq!(reply_subject(Some("日本"), None), "Re: 日本");
        assert_eq!(ticket_token("Заказ [#12]"), Some(12));
    }

    #[test]
    fn percent_decoding_and_reconnect_backoff() {
        assert_eq!(percent_decode("p%40ss%2Bword"), "p@ss+word");
        assert_eq!(percent_decode("a&b+c%"), "a&b+c%");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(reconnect_after(1), Duration::from_secs(1));
        assert_eq!(reconnect_after(4), Duration::from_secs(8));
        assert_eq!(reconnect_after(30), Duration::from_secs(300));
    }

    #[test]
    fn chunks_hold_fifty_mails_or_32_mib() {
        let small: Vec<(u32, u64)> = (1..=120).map(|u| (u, 1000)).collect();
        let c = chunks(&small);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 50, 20]);
        let big = [(1, 20 << 20), (2, 20 << 20), (3, 40 << 20), (4, 1)];
        assert_eq!(chunks(&big), vec![vec![1], vec![2], vec![3], vec![4]]);
    }

    #[test]
    fn one_contact_gets_at_most_ten_answers_an_hour() {
        let r = route("support@example.com");
        for _ in 0..ANSWERS_PER_HOUR {
            assert!(r.may_answer(7));
        }
        assert!(!r.may_answer(7));
        assert!(r.may_answer(8));
    }
}
