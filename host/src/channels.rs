//! Customer channels (WhatsApp first): which entry serves which business
//! number, the durable inbox behind the provider's webhook, and the outbox
//! that carries staff's and the assistant's replies to the customer.
//!
//! **Inbound.** The webhook handler has the channel plugin verify and
//! normalize the request, routes each event by its business number to the
//! entry that lists it (`settings.phone_number_ids`), and writes the events
//! to `channel_inbox` before answering 200. Concurrent webhooks share one
//! transaction (a group commit). The inbox worker claims due events with a
//! lease, processes each lane (a business number and a customer) in
//! arrival order, lanes concurrently, and deletes what it finished; a
//! failed event is retried with backoff. A crash after the 200 leaves the
//! events in the table; the next start (or the lease's end) finishes them.
//!
//! **Outbound.** A public message of staff, the system or the assistant in
//! a channel conversation is written with delivery `pending` and its
//! channel entry (`Conversation::outbound`): the message row *is* the
//! outbox record, written in the message's own transaction. The outbox
//! worker, woken by the bus when such a message is written (and every
//! second), claims pending messages with a lease, sends them through the
//! entry's plugin and records the provider's id (`sent`), or retries 429s,
//! 5xx and unreachable providers with backoff, or fails the message with
//! the provider's error. Statuses then move it to `delivered` and `read`.
//! A message is sent once unless the process dies between the provider's
//! acceptance and the record of its id (then the lease's end sends it
//! again: at-least-once across a crash, exactly once otherwise).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::{ComponentSource, PluginConfig, World};
use crate::domain::contact::{ContactDetails, Identity};
use crate::domain::conversation::{
    Channel, ChannelMeta, Conversation, Delivery, Message, NewConversation, Priority,
};
use crate::events::Event;
use crate::plugins::{self, ChannelError, Failure, PluginError};
use crate::server::AppState;
use crate::service::conversations::{self as convos, Answer, Author, Post, Upload};
use crate::service::{ServiceError, contacts};
use crate::store::{InboxRow, NewInboxRow, StoreError};

/// How long a worker holds what it claimed before another may take it.
const LEASE: Duration = Duration::from_secs(120);
/// How often the workers look without being woken.
const POLL: Duration = Duration::from_secs(1);
/// Events or messages taken per claim.
const BATCH: i64 = 64;
/// Lanes processed at once.
const LANES_AT_ONCE: usize = 16;
/// Attempts before an inbound file is given up (the message is stored
/// without it), and before an event is dropped.
const MEDIA_ATTEMPTS: i64 = 4;
const EVENT_ATTEMPTS: i64 = 20;
/// Attempts before an outbound message fails.
pub const SEND_ATTEMPTS: i64 = 10;
/// A status may overtake the record of the send it reports on: it is
/// retried (1 s, 2 s, 4 s... about four minutes in all) before it is
/// dropped as unknown.
const STATUS_ATTEMPTS: i64 = 8;

/// One WhatsApp entry: whose conversations, which numbers.
#[derive(Debug, Clone)]
pub struct Route {
    pub entry: String,
    pub org_id: i64,
    pub numbers: Vec<String>,
}

/// What a webhook event became: one row of the inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboxEvent {
    Message(Box<InMessage>),
    Status(InStatus),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InMessage {
    pub id: String,
    pub sender: String,
    pub name: Option<String>,
    pub account: Option<String>,
    pub kind: String,
    pub text: Option<String>,
    #[serde(default)]
    pub media: Vec<InMedia>,
    pub timestamp_ms: u64,
    pub in_reply_to: Option<String>,
    pub location: Option<InLocation>,
    pub choice_id: Option<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub metadata: Vec<(String, String)>,
    /// An email's subject and HTML body.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InMedia {
    pub media_id: Option<String>,
    pub mime_type: Option<String>,
    pub filename: Option<String>,
    pub caption: Option<String>,
    pub sha256: Option<String>,
    pub data: Option<Vec<u8>>,
    /// An email part's Content-ID (inline images).
    #[serde(default)]
    pub content_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InLocation {
    pub latitude: f64,
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InStatus {
    pub id: String,
    pub state: String,
    pub timestamp_ms: u64,
    pub recipient: Option<String>,
    pub account: Option<String>,
    pub error: Option<String>,
}

/// PostgreSQL cannot store a NUL character; a provider's text keeps every
/// other character exactly as sent.
fn no_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

impl InboxEvent {
    /// The plugin's event, in the inbox's words.
    pub fn from_plugin(event: plugins::InboundEvent) -> InboxEvent {
        use plugins::{ContentKind as K, DeliveryState as S, InboundEvent as E};
        match event {
            E::Message(m) => InboxEvent::Message(Box::new(InMessage {
                id: m.external_id,
                sender: m.sender,
                name: m.sender_name.map(no_nul),
                account: m.recipient,
                subject: m.subject.map(no_nul),
                html: m.html.map(no_nul),
                kind: match m.kind {
                    K::Text => "text",
                    K::Image => "image",
                    K::Audio => "audio",
                    K::Video => "video",
                    K::Document => "document",
                    K::Sticker => "sticker",
                    K::Location => "location",
                    K::Contacts => "contacts",
                    K::Reaction => "reaction",
                    K::Interactive => "interactive",
                    K::Unsupported => "unsupported",
                    K::Other => "other",
                }
                .to_owned(),
                text: m.text.map(no_nul),
                media: m
                    .media
                    .into_iter()
                    .map(|f| InMedia {
                        media_id: f.media_id,
                        mime_type: f.mime_type,
                        filename: f.filename.map(no_nul),
                        caption: f.caption.map(no_nul),
                        sha256: f.sha256,
                        data: f.data,
                        content_id: f.content_id,
                    })
                    .collect(),
                timestamp_ms: m.timestamp_ms,
                in_reply_to: m.in_reply_to,
                location: m.location.map(|l| InLocation {
                    latitude: l.latitude,
                    longitude: l.longitude,
                    name: l.name.map(no_nul),
                    address: l.address.map(no_nul),
                    url: l.url,
                }),
                choice_id: m.choice_id,
                error: m.error,
                metadata: m
                    .metadata
                    .into_iter()
                    .map(|p| (p.key, no_nul(p.value)))
                    .collect(),
            })),
            E::Status(s) => InboxEvent::Status(InStatus {
                id: s.external_id,
                state: match s.state {
                    S::Sent => "sent",
                    S::Delivered => "delivered",
                    S::Read => "read",
                    S::Failed => "failed",
                }
                .to_owned(),
                timestamp_ms: s.timestamp_ms,
                recipient: s.recipient,
                account: s.account,
                error: s.error,
            }),
        }
    }

    /// The business number the event concerns (routes it to an entry).
    pub fn account(&self) -> Option<&str> {
        match self {
            InboxEvent::Message(m) => m.account.as_deref(),
            InboxEvent::Status(s) => s.account.as_deref(),
        }
    }

    /// Events of one lane keep their order: a business number and a
    /// customer.
    pub fn lane(&self) -> String {
        match self {
            InboxEvent::Message(m) => {
                format!("{}:{}", m.account.as_deref().unwrap_or_default(), m.sender)
            }
            // A status waits for nobody's messages: its own lane, per
            // message (its sent, delivered and read stay in order).
            InboxEvent::Status(s) => format!(
                "status:{}:{}",
                s.account.as_deref().unwrap_or_default(),
                s.id
            ),
        }
    }
}

/// Whether an entry serves WhatsApp: the shipped plugin, or any channel
/// component whose settings list `phone_number_ids`.
pub fn is_whatsapp(config: &PluginConfig) -> bool {
    config.world == World::Channel
        && config.mail.is_none()
        && (config.source == ComponentSource::Builtin("whatsapp".into())
            || config.settings.get("phone_number_ids").is_some())
}

/// The business numbers a WhatsApp entry lists.
pub fn numbers_of(config: &PluginConfig) -> Vec<String> {
    config
        .settings
        .get("phone_number_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| match n {
                    serde_json::Value::String(s) => Some(s.trim().to_owned()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The conversation key of a customer writing to a business number.
pub fn conversation_key(account: &str, customer: &str) -> String {
    format!("whatsapp:{account}:{customer}")
}

/// The business number and the customer of a WhatsApp conversation, from
/// its key (a closed conversation's key carries `#<id>` after them).
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("whatsapp:")?;
    let rest = rest.split('#').next().unwrap_or(rest);
    let (account, customer) = rest.split_once(':')?;
    (!account.is_empty() && !customer.is_empty()).then_some((account, customer))
}

/// How a send ended, for an API call waiting on it.
#[derive(Debug, Clone)]
pub enum SendOutcome {
    Sent(Box<Message>),
    Failed(String),
}

impl SendOutcome {
    /// How the send of `m` ended; `None` while it is pending (or for a
    /// message no channel carries).
    fn of(m: Message) -> Option<SendOutcome> {
        match m.delivery? {
            Delivery::Pending => None,
            Delivery::Failed => Some(SendOutcome::Failed(m.delivery_error.unwrap_or_default())),
            _ => Some(SendOutcome::Sent(Box::new(m))),
        }
    }
}

type InboxJob = (
    Vec<NewInboxRow>,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// The channels' shared state.
pub struct Channels {
    /// The WhatsApp entries, in config order.
    pub whatsapp: Vec<Route>,
    /// The email entries, in config order.
    pub email: Vec<std::sync::Arc<crate::email::MailRoute>>,
    inbox: tokio::sync::mpsc::Sender<InboxJob>,
    inbox_jobs: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<InboxJob>>>,
    inbox_wake: tokio::sync::Notify,
    /// Processed events, for the cleaner to delete.
    done: tokio::sync::mpsc::UnboundedSender<Vec<i64>>,
    done_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Vec<i64>>>>,
    waiters: DashMap<i64, Vec<tokio::sync::oneshot::Sender<SendOutcome>>>,
}

impl Channels {
    /// The routes of the configured WhatsApp entries; an entry whose
    /// organization does not exist serves nothing (logged).
    pub async fn new(configs: &[PluginConfig], db: &crate::store::Db) -> Channels {
        let mut whatsapp = Vec::new();
        let mut email = Vec::new();
        for c in configs
            .iter()
            .filter(|c| is_whatsapp(c) || crate::email::is_email(c))
        {
            match db.org_by_slug(&c.organization).await {
                Ok(Some(org)) => match &c.mail {
                    Some(mail) => email.push(std::sync::Arc::new(crate::email::MailRoute::new(
                        Route {
                            entry: c.id.clone(),
                            org_id: org.id,
                            numbers: Vec::new(),
                        },
                        mail.clone(),
                    ))),
                    None => whatsapp.push(Route {
                        entry: c.id.clone(),
                        org_id: org.id,
                        numbers: numbers_of(c),
                    }),
                },
                Ok(None) => tracing::error!(
                    plugin = %c.id,
                    organization = %c.organization,
                    "the channel entry's organization does not exist; it serves nothing"
                ),
                Err(e) => {
                    tracing::error!(plugin = %c.id, error = %e, "could not read the channel entry's organization")
                }
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let (done, done_rx) = tokio::sync::mpsc::unbounded_channel();
        Channels {
            whatsapp,
            email,
            inbox: tx,
            inbox_jobs: std::sync::Mutex::new(Some(rx)),
            inbox_wake: tokio::sync::Notify::new(),
            done,
            done_rx: std::sync::Mutex::new(Some(done_rx)),
            waiters: DashMap::new(),
        }
    }

    /// The entry serving business number `account`.
    pub fn route_of(&self, account: &str) -> Option<&Route> {
        self.whatsapp
            .iter()
            .find(|r| r.numbers.iter().any(|n| n == account))
    }

    /// The email entry `entry`.
    pub fn email_route(&self, entry: &str) -> Option<&crate::email::MailRoute> {
        self.email
            .iter()
            .find(|r| r.entry() == entry)
            .map(|r| r.as_ref())
    }

    pub fn route_by_entry(&self, entry: &str) -> Option<&Route> {
        self.whatsapp.iter().find(|r| r.entry == entry)
    }

    /// Writes `rows` to the inbox, sharing a transaction with the webhooks
    /// arriving at the same moment; returns once they are durable.
    pub async fn accept(&self, rows: Vec<NewInboxRow>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inbox
            .send((rows, tx))
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        rx.await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))??;
        self.inbox_wake.notify_one();
        Ok(())
    }

    /// Waits (up to `limit`) for message `id`'s send to end.
    pub async fn wait_sent(
        &self,
        state: &AppState,
        id: i64,
        limit: Duration,
    ) -> Option<SendOutcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.entry(id).or_default().push(tx);
        state.bus.channel_work.outbox.notify_one();
        // It may have ended before the waiter was in place (or long ago:
        // a retried request).
        if let Ok(Some(m)) = state.db.message(id).await
            && let Some(outcome) = SendOutcome::of(m)
        {
            self.waiters.remove(&id);
            return Some(outcome);
        }
        let outcome = tokio::time::timeout(limit, rx).await.ok()?.ok();
        self.waiters.remove(&id);
        outcome
    }

    fn tell(&self, id: i64, outcome: SendOutcome) {
        if let Some((_, waiters)) = self.waiters.remove(&id) {
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    }
}

/// Starts the inbox writer and the inbox, outbox and read workers.
pub fn start(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let jobs = state
        .channels
        .inbox_jobs
        .lock()
        .ok()
        .and_then(|mut j| j.take());
    if let Some(jobs) = jobs {
        tasks.push(tokio::spawn(inbox_writer(state.clone(), jobs)));
    }
    let done = state
        .channels
        .done_rx
        .lock()
        .ok()
        .and_then(|mut d| d.take());
    if let Some(done) = done {
        tasks.push(tokio::spawn(inbox_cleaner(state.clone(), done)));
    }
    tasks.push(tokio::spawn(inbox_worker(state.clone())));
    tasks.push(tokio::spawn(outbox_worker(state.clone())));
    if let Some(reads) = state.bus.channel_work.take_reads() {
        tasks.push(tokio::spawn(read_worker(state.clone(), reads)));
    }
    tasks.extend(crate::email::start(state));
    tasks
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s... at most 10 minutes.
fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 10)).unwrap_or(10);
    Duration::from_secs((1u64 << exp).min(600))
}

/// Group commit for the inbox: what waits when a transaction starts goes
/// into it.
async fn inbox_writer(state: AppState, mut jobs: tokio::sync::mpsc::Receiver<InboxJob>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let rows: Vec<NewInboxRow> = batch.iter().flat_map(|(r, _)| r.clone()).collect();
        let result = state.db.inbox_push(&rows, 0).await;
        for (_, answer) in batch {
            let _ = answer.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Database(sqlx::Error::Protocol(e.to_string()))),
            });
        }
    }
}

async fn inbox_worker(state: AppState) {
    if state.db.kind() == crate::config::DatabaseKind::Sqlite
        && let Err(e) = state.db.channel_leases_reset(now_ms()).await
    {
        tracing::warn!(error = %e, "could not take over the previous run's channel work");
    }
    state.bus.channel_work.outbox.notify_one();
    drive(
        state,
        "inbox",
        |s| &s.channels.inbox_wake,
        |s| async move {
            s.db.inbox_claim(now_ms(), LEASE.as_millis() as i64, BATCH)
                .await
        },
        |row: &InboxRow| row.lane.clone(),
        process_lane,
    )
    .await;
}

/// The loop both workers run: claim what is due, group it into lanes
/// (a lane's items in order), run each lane as a task of its own (at most
/// [`LANES_AT_ONCE`]), so a slow one (a model call, a large download)
/// holds up only its own customer; when nothing more is due, wait for the
/// doorbell, a finished lane or the poll. A lane's later items are not
/// claimed while an earlier one is leased or waiting (the claims say so).
async fn drive<T, K, C, CF, L, LF>(
    state: AppState,
    what: &'static str,
    doorbell: fn(&AppState) -> &tokio::sync::Notify,
    claim: C,
    lane_of: fn(&T) -> K,
    lane: L,
) where
    T: Send + 'static,
    K: Ord,
    C: Fn(AppState) -> CF,
    CF: Future<Output = Result<Vec<T>, StoreError>>,
    L: Fn(AppState, Vec<T>) -> LF,
    LF: Future<Output = ()> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    loop {
        if running.len() >= LANES_AT_ONCE {
            let _ = running.join_next().await;
            continue;
        }
        let items = match claim(state.clone()).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the channel {what}");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let full = items.len() as i64 == BATCH;
        let mut lanes: BTreeMap<K, Vec<T>> = BTreeMap::new();
        for item in items {
            lanes.entry(lane_of(&item)).or_default().push(item);
        }
        for items in lanes.into_values() {
            running.spawn(lane(state.clone(), items));
        }
        if full {
            continue;
        }
        tokio::select! {
            () = doorbell(&state).notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Processes one lane's claimed events in order; a failure puts the event
/// back with backoff and the rest of the lane behind it.
async fn process_lane(state: AppState, lane: Vec<InboxRow>) {
    let mut done = Vec::new();
    for (i, row) in lane.iter().enumerate() {
        match process(&state, row).await {
            Ok(()) => done.push(row.id),
            Err(why) if row.attempts >= EVENT_ATTEMPTS => {
                metrics::counter!("channel_inbox_dropped_total").increment(1);
                tracing::error!(entry = %row.entry, attempts = row.attempts, error = %why, "a channel event failed too often and is dropped");
                done.push(row.id);
            }
            Err(why) => {
                let due = now_ms() + backoff(row.attempts).as_millis() as i64;
                tracing::warn!(entry = %row.entry, attempts = row.attempts, error = %why, "a channel event failed; retrying");
                let later: Vec<i64> = lane[i + 1..].iter().map(|r| r.id).collect();
                if let Err(e) = state.db.inbox_retry(row.id, due, &why, &later).await {
                    tracing::warn!(error = %e, "could not reschedule a channel event");
                }
                break;
            }
        }
    }
    if !done.is_empty() {
        metrics::counter!("channel_inbox_processed_total").increment(done.len() as u64);
        let _ = state.channels.done.send(done);
    }
}

/// Deletes processed events in batches: what the lanes finished while the
/// last delete ran goes in one statement.
async fn inbox_cleaner(state: AppState, mut done: tokio::sync::mpsc::UnboundedReceiver<Vec<i64>>) {
    while let Some(first) = done.recv().await {
        let mut ids = first;
        while let Ok(more) = done.try_recv() {
            ids.extend(more);
            if ids.len() >= 1000 {
                break;
            }
        }
        if let Err(e) = state.db.inbox_done(&ids).await {
            // They are leased: after the lease they are processed again
            // and found done (the provider's id is stored).
            tracing::warn!(error = %e, "could not clear processed channel events");
        }
    }
}

/// Processes one inbox event; `Err` retries it later.
async fn process(state: &AppState, row: &InboxRow) -> Result<(), String> {
    let event: InboxEvent = match serde_json::from_str(&row.event) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(entry = %row.entry, error = %e, "an inbox event does not parse; dropped");
            return Ok(());
        }
    };
    let Some(route) = state.channels.route_by_entry(&row.entry).cloned() else {
        return Err(format!("the entry `{}` is no longer configured", row.entry));
    };
    match event {
        InboxEvent::Message(m) => receive(state, &route, *m, row.attempts).await,
        InboxEvent::Status(s) => status(state, &route, s, row.attempts).await,
    }
}

fn service_error(e: ServiceError) -> String {
    e.to_string()
}

/// The open conversation of `customer` with business number `account`,
/// started on first contact (a closed one gives its key to a new one).
async fn conversation_for(
    state: &AppState,
    route: &Route,
    account: &str,
    customer: &str,
    contact_id: i64,
) -> Result<Conversation, ServiceError> {
    let key = conversation_key(account, customer);
    if let Some(c) = state
        .db
        .conversation_by_external(route.org_id, &key)
        .await?
    {
        let ours =
            c.channel == Channel::Whatsapp && c.channel_entry.as_deref() == Some(&route.entry);
        if ours && c.status.is_open() {
            return Ok(c);
        }
        // Closed, or not a conversation of this entry at all: the key goes
        // to a new one.
        state.db.release_external_id(c.id).await?;
    }
    let new = NewConversation {
        org_id: route.org_id,
        customer_id: None,
        contact_id: Some(contact_id),
        subject: None,
        priority: Priority::Medium,
        tags: Vec::new(),
        channel: Channel::Whatsapp,
        channel_entry: Some(route.entry.clone()),
    };
    let (c, created) = state.db.create_external_conversation(&new, &key).await?;
    if created {
        state.bus.publish(Event::ConversationCreated(c.clone()));
    }
    Ok(c)
}

/// The contact writing from `wa_id`, created with their profile name.
pub async fn contact_for(
    state: &AppState,
    org_id: i64,
    wa_id: &str,
    name: Option<&str>,
) -> Result<i64, ServiceError> {
    let details = ContactDetails {
        phone: Some(format!("+{}", wa_id.trim_start_matches('+'))),
        ..Default::default()
    };
    contact_of(
        state,
        org_id,
        &Identity::new(Channel::Whatsapp, wa_id),
        name,
        details,
    )
    .await
}

/// The contact behind a channel identity, created with what the channel
/// tells about them (`name`: the profile or display name, if any).
pub async fn contact_of(
    state: &AppState,
    org_id: i64,
    identity: &Identity,
    name: Option<&str>,
    mut details: ContactDetails,
) -> Result<i64, ServiceError> {
    details.name = name
        .map(|n| n.chars().take(crate::domain::contact::NAME_MAX).collect())
        .filter(|n: &String| !n.trim().is_empty());
    let contact = contacts::find_or_create(state.core(), org_id, identity, &details).await?;
    Ok(contact.id)
}

/// Opens (or finds) the conversation with `customer` on business number
/// `account` for an outbound send.
pub async fn conversation_with(
    state: &AppState,
    route: &Route,
    account: &str,
    customer: &str,
) -> Result<Conversation, ServiceError> {
    let contact_id = contact_for(state, route.org_id, customer, None).await?;
    conversation_for(state, route, account, customer, contact_id).await
}

/// Stores a customer's message (and its files) and lets the assistant
/// answer it.
async fn receive(
    state: &AppState,
    route: &Route,
    m: InMessage,
    attempts: i64,
) -> Result<(), String> {
    let db = &state.db;
    // A redelivery, or a retry after a crash: the message is stored
    // already; it still gets the assistant's turn if a crash took it.
    if let Some(stored) = db
        .message_by_provider_id(&route.entry, &m.id)
        .await
        .map_err(|e| e.to_string())?
    {
        return answer_if_unanswered(state, &stored).await;
    }
    if m.kind == "reaction" {
        if let Some(target) = &m.in_reply_to
            && let Some(message) = db
                .message_by_provider_id(&route.entry, target)
                .await
                .map_err(|e| e.to_string())?
        {
            db.set_reaction(message.id, &m.sender, m.text.as_deref().unwrap_or_default())
                .await
                .map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let account = m.account.clone().unwrap_or_default();
    let contact_id = contact_for(state, route.org_id, &m.sender, m.name.as_deref())
        .await
        .map_err(service_error)?;
    let c = conversation_for(state, route, &account, &m.sender, contact_id)
        .await
        .map_err(service_error)?;

    // Files: downloaded through the plugin, checked like any upload.
    let mut files = Vec::new();
    let mut file_errors = Vec::new();
    for media in &m.media {
        match fetch_media(state, route, media).await {
            Ok(upload) => match convos::store_file(state.core(), upload).await {
                Ok(f) => files.push(f),
                Err(e) => file_errors.push(format!("{e}: {}", describe_service(&e))),
            },
            Err((why, retry)) if retry && attempts < MEDIA_ATTEMPTS => {
                release_files(state, &files).await;
                return Err(why);
            }
            Err((why, _)) => file_errors.push(why),
        }
    }
    let reply_to_id = match &m.in_reply_to {
        Some(id) => db
            .message_by_provider_id(&route.entry, id)
            .await
            .map_err(|e| e.to_string())?
            .map(|r| r.id),
        None => None,
    };
    let mut data = serde_json::json!({ "kind": m.kind });
    if let Some(l) = &m.location {
        data["location"] = serde_json::to_value(l).unwrap_or_default();
    }
    if let Some(id) = &m.choice_id {
        data["choiceId"] = id.clone().into();
    }
    if let Some(e) = &m.error {
        data["error"] = e.clone().into();
    }
    if let Some(id) = &m.in_reply_to {
        data["inReplyTo"] = id.clone().into();
    }
    if !m.metadata.is_empty() {
        data["metadata"] = m
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if !file_errors.is_empty() {
        data["fileErrors"] = file_errors.clone().into();
    }
    let content = m.text.clone().unwrap_or_default();
    let answer = if content.trim().is_empty() {
        Answer::Skip
    } else {
        Answer::BestEffort
    };
    let post = Post {
        author: Author::Customer { user_id: None },
        content,
        internal: false,
        idempotency_key: None,
        files,
        channel: ChannelMeta {
            entry: Some(route.entry.clone()),
            provider_message_id: Some(m.id.clone()),
            reply_to_id,
            subject: None,
            html: None,
            data: Some(data.to_string()),
        },
        delivery: None,
        customer_ref: Some(format!("contact-{contact_id}")),
        asked_for_person: false,
    };
    match convos::post(state.core(), &c, post, answer).await {
        Ok(_) => Ok(()),
        // Closed between the lookup and the post: the next attempt opens
        // a new conversation.
        Err(ServiceError::Closed) => Err("the conversation closed meanwhile".into()),
        Err(e) => Err(service_error(e)),
    }
}

/// The assistant's turn for a stored customer message that is still the
/// conversation's last (the process died between storing it and
/// answering).
pub(crate) async fn answer_if_unanswered(state: &AppState, m: &Message) -> Result<(), String> {
    use crate::domain::conversation::{Handling, SenderKind};
    if m.sender_kind != SenderKind::Customer || m.content.trim().is_empty() {
        return Ok(());
    }
    let Some(c) = state
        .db
        .conversation(m.conversation_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    if c.handling != Handling::Ai || !c.status.is_open() {
        return Ok(());
    }
    let (last, _) = state
        .db
        .list_messages(c.id, true, None, 1)
        .await
        .map_err(|e| e.to_string())?;
    if last.first().map(|l| l.id) != Some(m.id) {
        return Ok(());
    }
    let customer_ref = format!("contact-{}", c.contact_id.unwrap_or_default());
    match state
        .assistant
        .respond(&c, &customer_ref, &m.content, false)
        .await
    {
        Ok(turn) => convos::announce(state.core(), &turn),
        Err(e) => tracing::warn!(error = %e, conversation = c.id, "the assistant could not answer"),
    }
    Ok(())
}

fn describe_service(e: &ServiceError) -> String {
    match e {
        ServiceError::Invalid(fields) => fields
            .iter()
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

async fn release_files(state: &AppState, files: &[crate::store::NewAttachment]) {
    if !files.is_empty() {
        let digests: Vec<String> = files.iter().map(|f| f.sha256.clone()).collect();
        state.files.release(&state.db, &digests).await;
    }
}

/// Downloads one file; `Err((why, retry))`.
async fn fetch_media(
    state: &AppState,
    route: &Route,
    media: &InMedia,
) -> Result<Upload, (String, bool)> {
    let declared = media.mime_type.clone();
    let name = media
        .filename
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_name(declared.as_deref()));
    if let Some(data) = &media.data {
        return Ok(Upload {
            file_name: name,
            declared_type: declared,
            bytes: data.clone(),
        });
    }
    let plugin = match state.plugins.get(&route.entry) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err((e.to_string(), true)),
        None => {
            return Err((
                format!("the entry `{}` is not configured", route.entry),
                true,
            ));
        }
    };
    let request = plugins::Media {
        media_id: media.media_id.clone(),
        mime_type: media.mime_type.clone(),
        filename: media.filename.clone(),
        caption: media.caption.clone(),
        data: None,
        sha256: media.sha256.clone(),
        content_id: media.content_id.clone(),
    };
    match plugin.fetch_media(&request).await {
        Ok(a) => Ok(Upload {
            file_name: if a.filename.is_empty() {
                name
            } else {
                a.filename
            },
            declared_type: Some(a.mime_type).filter(|t| !t.is_empty()).or(declared),
            bytes: a.data,
        }),
        Err(e) => {
            let retry = retryable(&e).is_some();
            Err((e.to_string(), retry))
        }
    }
}

/// A file name for a file sent without one: `image.jpeg`, `audio.ogg`...
fn default_name(mime: Option<&str>) -> String {
    let mime = mime.unwrap_or("application/octet-stream");
    let essence = mime.split(';').next().unwrap_or(mime).trim();
    let (family, sub) = essence.split_once('/').unwrap_or(("file", "bin"));
    let ext = match sub {
        "jpeg" => "jpg",
        "plain" => "txt",
        "octet-stream" => "bin",
        "vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        other => other,
    };
    let family = if family == "application" || family == "text" {
        "file"
    } else {
        family
    };
    format!("{family}.{ext}")
}

/// Whether a failed plugin call may succeed later, and after how long at
/// least.
pub(crate) fn retryable(e: &PluginError) -> Option<Duration> {
    match &e.failure {
        Failure::Channel(ChannelError::RateLimited(ms)) => {
            Some(Duration::from_millis(u64::from(ms.unwrap_or(0))))
        }
        Failure::Channel(ChannelError::Unavailable(_))
        | Failure::Channel(ChannelError::Other(_))
        | Failure::Timeout(_)
        | Failure::Busy
        | Failure::Trap(_)
        | Failure::Memory(_)
        | Failure::NotLoaded(_) => Some(Duration::ZERO),
        Failure::Channel(_)
        | Failure::WrongWorld(_)
        | Failure::Invalid(_)
        | Failure::Provider(_) => None,
    }
}

/// A delivery report: recorded and published if it moves its message on.
async fn status(state: &AppState, route: &Route, s: InStatus, attempts: i64) -> Result<(), String> {
    let Some(delivery) = Delivery::parse(&s.state) else {
        return Ok(());
    };
    let updated = convos::delivery_report(
        state.core(),
        &route.entry,
        &s.id,
        delivery,
        s.error.as_deref(),
    )
    .await
    .map_err(service_error)?;
    if updated.is_none()
        && attempts < STATUS_ATTEMPTS
        && state
            .db
            .message_by_provider_id(&route.entry, &s.id)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
    {
        // The send it reports on may not be recorded yet.
        return Err("a status for a message not (yet) known".into());
    }
    Ok(())
}

async fn outbox_worker(state: AppState) {
    drive(
        state,
        "outbox",
        |s| &s.bus.channel_work.outbox,
        |s| async move {
            s.db.outbox_claim(now_ms(), LEASE.as_millis() as i64, BATCH)
                .await
        },
        |item: &crate::store::OutboxItem| item.conversation_id,
        send_in_order,
    )
    .await;
}

/// Sends one conversation's claimed messages in order; one waiting for a
/// retry keeps the rest behind it.
async fn send_in_order(state: AppState, items: Vec<crate::store::OutboxItem>) {
    let mut items = items.into_iter();
    while let Some(item) = items.next() {
        if !send(&state, item).await {
            let later: Vec<i64> = items.map(|i| i.id).collect();
            if let Err(e) = state.db.outbox_release(&later).await {
                tracing::warn!(error = %e, "could not release channel sends");
            }
            break;
        }
    }
}

/// What an outbound message carries beyond its text.
#[derive(Debug, Default, Deserialize)]
struct OutboundData {
    template: Option<TemplateData>,
}

#[derive(Debug, Deserialize)]
struct TemplateData {
    name: String,
    language: String,
    #[serde(default)]
    components: Option<serde_json::Value>,
}

/// Sends one claimed message and records how it went; `false` when it
/// waits for a retry (the conversation's later messages wait behind it).
async fn send(state: &AppState, item: crate::store::OutboxItem) -> bool {
    let id = item.id;
    let attempts = item.send_attempts;
    match try_send(state, &item).await {
        Ok(provider_id) => match state.db.outbox_sent(id, &provider_id).await {
            Ok(Some(m)) => {
                state.bus.publish(Event::DeliveryChanged(m.clone()));
                state.channels.tell(id, SendOutcome::Sent(Box::new(m)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(message = id, error = %e, "a sent message's provider id could not be recorded")
            }
        },
        Err(Unsent::Fail(why)) => fail(state, id, &why).await,
        Err(Unsent::Retry(why, at_least)) if attempts < SEND_ATTEMPTS => {
            let wait = backoff(attempts).max(at_least);
            tracing::warn!(message = id, attempts, error = %why, retry_in_ms = wait.as_millis() as u64, "a channel send failed; retrying");
            let due = now_ms() + wait.as_millis() as i64;
            if let Err(e) = state.db.outbox_retry(id, due, &why).await {
                tracing::warn!(error = %e, "could not reschedule a channel send");
            }
            return false;
        }
        Err(Unsent::Retry(why, _)) => {
            fail(
                state,
                id,
                &format!("gave up after {attempts} attempts: {why}"),
            )
            .await
        }
    }
    true
}

async fn fail(state: &AppState, id: i64, why: &str) {
    tracing::warn!(message = id, error = %why, "a channel message failed");
    match state.db.outbox_failed(id, why).await {
        Ok(Some(m)) => {
            state.bus.publish(Event::DeliveryChanged(m));
            state.channels.tell(id, SendOutcome::Failed(why.to_owned()));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(message = id, error = %e, "a failed message could not be recorded")
        }
    }
}

pub(crate) enum Unsent {
    Fail(String),
    Retry(String, Duration),
}

impl From<StoreError> for Unsent {
    fn from(e: StoreError) -> Self {
        Unsent::Retry(e.to_string(), Duration::ZERO)
    }
}

/// The files of message `id`, read for a send.
pub(crate) async fn attachments_of(
    state: &AppState,
    id: i64,
) -> Result<Vec<plugins::ChannelAttachment>, Unsent> {
    let mut attachments = Vec::new();
    for a in state.db.attachments_of(&[id]).await? {
        let bytes = tokio::fs::read(state.files.path(&a.sha256))
            .await
            .map_err(|e| {
                Unsent::Retry(format!("cannot read an attachment: {e}"), Duration::ZERO)
            })?;
        attachments.push(plugins::ChannelAttachment {
            filename: a.file_name,
            mime_type: a.content_type,
            data: bytes,
        });
    }
    Ok(attachments)
}

async fn try_send(state: &AppState, item: &crate::store::OutboxItem) -> Result<String, Unsent> {
    let Some(entry) = item.channel_entry.as_deref() else {
        return Err(Unsent::Fail("the message names no channel entry".into()));
    };
    let plugin = match state.plugins.get(entry) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(Unsent::Retry(e.to_string(), Duration::ZERO)),
        None => {
            return Err(Unsent::Retry(
                format!("the channel entry `{entry}` is not configured"),
                Duration::ZERO,
            ));
        }
    };
    let Some(c) = state.db.conversation(item.conversation_id).await? else {
        return Err(Unsent::Fail("the conversation is gone".into()));
    };
    if let Some(mr) = state.channels.email_route(entry) {
        return crate::email::send(state, mr, item, &c).await;
    }
    let Some((account, customer)) = c.external_id.as_deref().and_then(parse_key) else {
        return Err(Unsent::Fail(
            "the conversation has no WhatsApp number and customer".into(),
        ));
    };
    let data: OutboundData = item
        .channel_data
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let meta = ChannelMeta {
        data: item.channel_data.clone(),
        ..Default::default()
    };
    match convos::within_window(state.core(), &c, &meta).await {
        Ok(()) => {}
        Err(ServiceError::Conflict(why)) => return Err(Unsent::Fail(why)),
        Err(e) => return Err(Unsent::Retry(e.to_string(), Duration::ZERO)),
    }
    let attachments = attachments_of(state, item.id).await?;
    let in_reply_to = match item.reply_to_id {
        Some(id) => state
            .db
            .message(id)
            .await?
            .and_then(|m| m.channel.provider_message_id),
        None => None,
    };
    let message = plugins::OutboundMessage {
        recipient: customer.to_owned(),
        sender: Some(account.to_owned()),
        text: item.content.clone(),
        html: None,
        subject: None,
        thread_id: None,
        in_reply_to,
        attachments,
        template: data.template.map(|t| plugins::Template {
            name: t.name,
            language: t.language,
            components: t.components.map(|c| c.to_string()).unwrap_or_default(),
        }),
        client_message_id: item.id.to_string(),
        metadata: Vec::new(),
    };
    match plugin.send_message(&message).await {
        Ok(sent) => Ok(sent.external_id),
        Err(e) => match retryable(&e) {
            Some(at_least) => Err(Unsent::Retry(e.to_string(), at_least)),
            None => Err(Unsent::Fail(e.to_string())),
        },
    }
}

/// Tells the provider which customer messages staff read: the newest of
/// each batch (WhatsApp marks the earlier ones read with it).
async fn read_worker(
    state: AppState,
    mut reads: tokio::sync::mpsc::UnboundedReceiver<(i64, Vec<i64>)>,
) {
    while let Some((conversation_id, ids)) = reads.recv().await {
        let Some(&newest) = ids.iter().max() else {
            continue;
        };
        let c = match state.db.conversation(conversation_id).await {
            Ok(Some(c)) => c,
            _ => continue,
        };
        let Some(entry) = c.carried_by_channel() else {
            continue;
        };
        let Some((account, _)) = c.external_id.as_deref().and_then(parse_key) else {
            continue;
        };
        let Ok(Some(m)) = state.db.message(newest).await else {
            continue;
        };
        let Some(provider_id) = m.channel.provider_message_id else {
            continue;
        };
        let Some(Ok(plugin)) = state.plugins.get(entry) else {
            continue;
        };
        let account = account.to_owned();
        // Not on the reads' path: a slow provider delays nobody.
        tokio::spawn(async move {
            if let Err(e) = plugin.mark_read(Some(&account), &provider_id).await {
                tracing::warn!(error = %e, "could not tell the channel a message was read");
            }
        });
    }
}

/// The staff side read the conversation: its customer's unread messages
/// are marked read (and, on a channel, the provider is told).
pub async fn seen_by_staff(state: &AppState, c: &Conversation) {
    if c.carried_by_channel().is_none() {
        return;
    }
    let ids = match state.db.unread_from_customer(c.id).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the unread messages");
            return;
        }
    };
    if ids.is_empty() {
        return;
    }
    if let Err(e) = convos::mark_read(state.core(), c, &ids, false).await {
        tracing::warn!(error = %e, "could not mark messages read");
    }
}

/// Every configured entry's share of the routes, for `plugins check`.
pub fn check_entry(config: &PluginConfig, env: &HashMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    if !is_whatsapp(config) {
        return problems;
    }
    for secret in [
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_ACCESS_TOKEN",
        "WHATSAPP_VERIFY_TOKEN",
    ] {
        if !config.grants.secrets.iter().any(|s| s == secret) {
            problems.push(format!("grants.secrets must include {secret}"));
        } else if env.get(secret).is_none_or(|v| v.trim().is_empty()) {
            problems.push(format!("the environment variable {secret} is not set"));
        }
    }
    if numbers_of(config).is_empty() {
        problems.push(
            "settings.phone_number_ids must list the business numbers this entry serves".into(),
        );
    }
    problems
}
