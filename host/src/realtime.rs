//! The event bus behind the WebSockets: one broadcast channel per topic (a
//! conversation, an organization's staff), created on first subscription
//! and dropped when its last subscriber leaves.
//!
//! The bus carries domain events ([`crate::events::Event`]); each socket
//! renders them in its dialect, once per audience, and the text is shared
//! by every subscriber of that audience. Publishing
//! never waits: each subscriber has a bounded queue, and one that falls
//! [`QUEUE`] events behind is dropped (its WebSocket is closed) rather than
//! slowing the others. Every subscriber sees a topic's events in publishing
//! order.
//!
//! This bus is in-process: with several nodes, each node's clients see the
//! events published on that node (PostgreSQL LISTEN/NOTIFY between nodes is
//! still to come).

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::sync::broadcast;

use crate::events::Event;
use crate::places::{Place, Places};

/// Events a subscriber may fall behind before it is dropped.
pub const QUEUE: usize = 1024;

/// What a WebSocket listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Everything that happens in one conversation (and its ticket):
    /// `/ws/chat/{sessionId}`, `/ws/tickets/{ticketId}`, a `/ws` session.
    Conversation(i64),
    /// An organization's staff on `/ws` (003): handovers, new tickets.
    Staff(i64),
}

/// Who a delivery is rendered for: each renders once per event and the
/// text is shared by every subscriber of that audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// 001's `/ws/chat/{sessionId}`.
    Chat = 0,
    /// 004's `/ws/tickets/{id}` for staff (internal notes included).
    TicketStaff = 1,
    /// 004's `/ws/tickets/{id}` for the ticket's customer.
    TicketCustomer = 2,
    /// 003's `/ws` staff feed.
    StaffFeed = 3,
}

const AUDIENCES: usize = 4;

/// One serialized event.
pub type Frame = Arc<str>;

/// A published event and its renderings, shared by every subscriber.
pub struct Delivery {
    pub event: Event,
    frames: [OnceLock<Option<Frame>>; AUDIENCES],
}

impl Delivery {
    /// The event as `audience` sees it (`None`: not shown to it), rendered
    /// by the first subscriber that asks.
    pub fn frame(
        &self,
        audience: Audience,
        render: impl FnOnce(&Event) -> Option<String>,
    ) -> Option<Frame> {
        self.frames[audience as usize]
            .get_or_init(|| render(&self.event).map(Frame::from))
            .clone()
    }
}

#[derive(Default)]
pub struct Bus {
    topics: DashMap<Topic, broadcast::Sender<Arc<Delivery>>>,
    /// What the channel workers must hear of at once.
    pub channel_work: ChannelWork,
}

/// The channel workers' doorbells: a message waiting for its channel
/// (the outbox sends it), and a customer's channel messages that staff
/// read (the provider is told).
#[derive(Default)]
pub struct ChannelWork {
    pub outbox: tokio::sync::Notify,
    reads: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<(i64, Vec<i64>)>>,
}

impl ChannelWork {
    /// Where staff reads are handed over: `(conversation id, message ids)`.
    /// Set once, by the channel workers.
    pub fn take_reads(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<(i64, Vec<i64>)>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.reads.set(tx).ok().map(|()| rx)
    }

    fn hear(&self, event: &Event) {
        match event {
            Event::MessageCreated { message, .. }
                if message.delivery == Some(crate::domain::conversation::Delivery::Pending) =>
            {
                self.outbox.notify_one();
            }
            Event::Read {
                conversation_id,
                message_ids,
                by_customer: false,
                ..
            } => {
                if let Some(tx) = self.reads.get() {
                    let _ = tx.send((*conversation_id, message_ids.clone()));
                }
            }
            _ => {}
        }
    }
}

impl Bus {
    /// Sends `event` to the subscribers of its conversation and, for the
    /// events staff follow, of its organization's staff feed.
    pub fn publish(&self, event: Event) {
        self.channel_work.hear(&event);
        let conversation = self
            .topics
            .get(&Topic::Conversation(event.conversation_id()))
            .map(|t| t.clone());
        let staff = if event.for_staff_feed() {
            self.topics
                .get(&Topic::Staff(event.org_id()))
                .map(|t| t.clone())
        } else {
            None
        };
        if conversation.is_none() && staff.is_none() {
            return;
        }
        metrics::counter!("realtime_events_total").increment(1);
        let delivery = Arc::new(Delivery {
            event,
            frames: Default::default(),
        });
        // No receiver left is not an error: the sweep drops the topic.
        for tx in [conversation, staff].into_iter().flatten() {
            let _ = tx.send(delivery.clone());
        }
    }

    pub fn subscribe(&self, topic: Topic) -> broadcast::Receiver<Arc<Delivery>> {
        self.topics
            .entry(topic)
            .or_insert_with(|| broadcast::channel(QUEUE).0)
            .subscribe()
    }

    /// Forgets topics nobody listens to any more.
    pub fn sweep(&self) {
        self.topics.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Topics with at least one subscriber (for metrics).
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// Whose WebSocket it is, for the per-owner cap and revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketOwner {
    User(i64),
    ApiKey(i64),
}

impl SocketOwner {
    pub fn of(p: &crate::domain::Principal) -> SocketOwner {
        match p.kind {
            crate::domain::PrincipalKind::User(id) => SocketOwner::User(id),
            crate::domain::PrincipalKind::ApiKey(id) => SocketOwner::ApiKey(id),
        }
    }
}

/// Why an open socket must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Not yet.
    Open,
    /// The owner's credentials were revoked (deactivation, deletion, a role
    /// or password change): close 1008.
    Revoked,
    /// The gateway is shutting down: close 1001.
    ShuttingDown,
}

impl Closing {
    /// The close frame's code and reason.
    pub fn frame(self) -> (u16, &'static str) {
        match self {
            Closing::Revoked => (1008, "credentials revoked"),
            Closing::Open | Closing::ShuttingDown => (1001, "the server is shutting down"),
        }
    }
}

/// The open WebSockets of each owner: at most `server.max_sockets_per_user`
/// each, and a way to close them all when the owner's credentials are
/// revoked, or every socket when the gateway shuts down.
#[derive(Default)]
pub struct Sockets {
    owners: Arc<Places<SocketOwner, Arc<tokio::sync::watch::Sender<Closing>>>>,
}

impl Sockets {
    /// A place for one more socket of `owner`, or `None` at `max`.
    pub fn open(&self, owner: SocketOwner, max: usize) -> Option<SocketTicket> {
        let (place, closing) = self.owners.take(owner, max, || {
            Arc::new(tokio::sync::watch::channel(Closing::Open).0)
        })?;
        Some(SocketTicket {
            _place: place,
            closing: closing.subscribe(),
        })
    }

    /// Closes every open socket of `owner`.
    pub fn revoke(&self, owner: SocketOwner) {
        if let Some(closing) = self.owners.get(&owner) {
            closing.send_replace(Closing::Revoked);
        }
    }

    /// Closes every open socket (shutdown).
    pub fn close_all(&self) {
        self.owners.for_each(|closing| {
            closing.send_replace(Closing::ShuttingDown);
        });
    }

    /// Open sockets of `owner`.
    pub fn count(&self, owner: SocketOwner) -> usize {
        self.owners.count(&owner)
    }
}

/// One open socket's place; dropping it frees the place.
pub struct SocketTicket {
    _place: Place<SocketOwner, Arc<tokio::sync::watch::Sender<Closing>>>,
    closing: tokio::sync::watch::Receiver<Closing>,
}

impl SocketTicket {
    /// Completes, with the reason, when the socket must close.
    pub async fn closing(&mut self) -> Closing {
        let reason = self
            .closing
            .wait_for(|c| *c != Closing::Open)
            .await
            .map(|reason| *reason);
        match reason {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_subscribers_lag_alone() {
        let bus = Bus::default();
        let typing = |conversation_id, i: usize| Event::Typing {
            org_id: 1,
            conversation_id,
            who: i.to_string(),
            is_typing: true,
            at: chrono::Utc::now(),
        };
        let mut fast = bus.subscribe(Topic::Conversation(1));
        let mut slow = bus.subscribe(Topic::Conversation(1));
        for i in 0..QUEUE + 5 {
            bus.publish(typing(1, i));
            let got = fast.recv().await.expect("event");
            assert!(matches!(&got.event, Event::Typing { who, .. } if *who == i.to_string()));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(5))
        ));
        // Other topics are separate.
        bus.publish(typing(2, 0));
        drop((fast, slow));
        bus.sweep();
        assert!(bus.is_empty());
    }

    #[tokio::test]
    async fn sockets_are_capped_per_owner_and_revoked_together() {
        let sockets = Arc::new(Sockets::default());
        let owner = SocketOwner::User(7);
        let mut first = sockets.open(owner, 2).expect("first");
        let second = sockets.open(owner, 2).expect("second");
        assert!(sockets.open(owner, 2).is_none(), "third is over the cap");
        assert!(
            sockets.open(SocketOwner::User(8), 2).is_some(),
            "others are separate"
        );
        drop(second);
        assert_eq!(sockets.count(owner), 1);
        sockets.revoke(owner);
        let reason = tokio::time::timeout(std::time::Duration::from_secs(1), first.closing())
            .await
            .expect("revocation reaches the open socket");
        assert_eq!(reason, Closing::Revoked);
        let mut other = sockets.open(SocketOwner::User(9), 2).expect("another");
        sockets.close_all();
        assert_eq!(other.closing().await, Closing::ShuttingDown);
        drop(first);
        assert_eq!(sockets.count(owner), 0);
    }
}
