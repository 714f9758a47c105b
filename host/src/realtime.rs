//! The event bus behind the WebSockets: one broadcast channel per topic (a
//! chat session, a ticket), created on first subscription and dropped when
//! its last subscriber leaves.
//!
//! An event is serialized once and shared by every subscriber. Publishing
//! never waits: each subscriber has a bounded queue, and one that falls
//! [`QUEUE`] events behind is dropped (its WebSocket is closed) rather than
//! slowing the others. Every subscriber sees a topic's events in publishing
//! order.
//!
//! This bus is in-process: with several nodes, each node's clients see the
//! events published on that node (PostgreSQL LISTEN/NOTIFY between nodes is
//! still to come).

use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;

/// Events a subscriber may fall behind before it is dropped.
pub const QUEUE: usize = 1024;

/// What a WebSocket listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `/ws/chat/{sessionId}`.
    Chat(i64),
    /// `/ws/tickets/{ticketId}`, as staff see it (internal notes included).
    TicketStaff(i64),
    /// `/ws/tickets/{ticketId}`, as the customer sees it.
    TicketCustomer(i64),
    /// An organization's staff on `/ws` (003): handovers waiting for them.
    Staff(i64),
}

/// One serialized event.
pub type Frame = Arc<str>;

#[derive(Default)]
pub struct Bus {
    topics: DashMap<Topic, broadcast::Sender<Frame>>,
}

impl Bus {
    /// Sends `event` to the topic's current subscribers, if any.
    pub fn publish(&self, topic: Topic, event: &impl Serialize) {
        let Some(tx) = self.topics.get(&topic).map(|t| t.clone()) else {
            return;
        };
        match serde_json::to_string(event) {
            Ok(text) => {
                metrics::counter!("realtime_events_total").increment(1);
                // No receiver left is not an error: the sweep drops the topic.
                let _ = tx.send(Frame::from(text));
            }
            Err(e) => tracing::error!(error = %e, "an event could not be serialized"),
        }
    }

    pub fn subscribe(&self, topic: Topic) -> broadcast::Receiver<Frame> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_subscribers_lag_alone() {
        let bus = Bus::default();
        let mut fast = bus.subscribe(Topic::Chat(1));
        let mut slow = bus.subscribe(Topic::Chat(1));
        for i in 0..QUEUE + 5 {
            bus.publish(Topic::Chat(1), &i);
            assert_eq!(fast.recv().await.expect("event").as_ref(), i.to_string());
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(5))
        ));
        // Other topics are separate.
        bus.publish(Topic::Chat(2), &"nobody");
        drop((fast, slow));
        bus.sweep();
        assert!(bus.is_empty());
    }
}
