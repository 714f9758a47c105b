//! Channels: the durable inbox of verified webhook events, the outbox of
//! channel messages (messages with delivery `pending`), reactions, and the
//! reads the channel workers need.

use chrono::{DateTime, Utc};

use super::conversations::{MESSAGE_COLUMNS, MessageRow};
use super::{Db, StoreError, on_db};
use crate::domain::conversation::Message;

/// An event to keep in the inbox.
#[derive(Debug, Clone)]
pub struct NewInboxRow {
    pub entry: String,
    /// The normalized event, as JSON.
    pub event: String,
    /// Events of one lane are processed in order.
    pub lane: String,
}

/// An inbox event a worker claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    pub id: i64,
    pub entry: String,
    pub event: String,
    pub lane: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// A channel message a worker claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxItem {
    pub id: i64,
    pub conversation_id: i64,
    pub channel_entry: Option<String>,
    pub content: String,
    pub channel_data: Option<String>,
    pub reply_to_id: Option<i64>,
    /// Attempts so far, this one included.
    pub send_attempts: i64,
}

/// `(1, 2, 3)` for an SQL `IN`: ids are integers, never client text.
fn id_list(ids: &[i64]) -> String {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("({})", list.join(", "))
}

impl Db {
    /// Writes `rows` in one transaction (the provider's 200 waits for it).
    pub async fn inbox_push(&self, rows: &[NewInboxRow], due_ms: i64) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            for r in rows {
                sqlx::query(
                    "INSERT INTO channel_inbox (entry, event, lane, due_ms, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&r.entry)
                .bind(&r.event)
                .bind(&r.lane)
                .bind(due_ms)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Takes up to `limit` due events for `lease_ms`, oldest first. Another
    /// worker cannot take them until the lease ends, nor an event whose
    /// lane has an earlier one leased or waiting for a retry (so a lane's
    /// events are processed in order).
    pub async fn inbox_claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let _turn = self.write_turn().await;
        let mut rows: Vec<InboxRow> = on_db!(self, pool => {
            sqlx::query_as(
                "UPDATE channel_inbox SET due_ms = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT i.id FROM channel_inbox i WHERE i.due_ms <= $2 \
                              AND NOT EXISTS (SELECT 1 FROM channel_inbox e WHERE e.lane = i.lane \
                                              AND e.id < i.id AND e.due_ms > $2) \
                              ORDER BY i.id LIMIT $3) \
                 AND due_ms <= $2 RETURNING id, entry, event, lane, attempts",
            )
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Forgets processed events.
    pub async fn inbox_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!("DELETE FROM channel_inbox WHERE id IN {}", id_list(ids));
        let _turn = self.write_turn().await;
        on_db!(self, pool => sqlx::query(&sql).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Puts an event back until `due_ms`, with why it failed; `later`
    /// (the rest of its lane's claim) is released to wait behind it.
    pub async fn inbox_retry(
        &self,
        id: i64,
        due_ms: i64,
        error: &str,
        later: &[i64],
    ) -> Result<(), StoreError> {
        let release = (!later.is_empty()).then(|| {
            format!(
                "UPDATE channel_inbox SET due_ms = $1, attempts = attempts - 1 WHERE id IN {}",
                id_list(later)
            )
        });
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE channel_inbox SET due_ms = $2, last_error = $3 WHERE id = $1")
                .bind(id)
                .bind(due_ms)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            if let Some(sql) = &release {
                sqlx::query(sql).bind(due_ms).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Frees every lease and backoff: at start-up on SQLite, where this
    /// process is the only one, what a previous run held is taken over at
    /// once rather than when its lease ends.
    pub async fn channel_leases_reset(&self, now_ms: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            sqlx::query("UPDATE channel_inbox SET due_ms = $1 WHERE due_ms > $1")
                .bind(now_ms)
                .execute(pool)
                .await?;
            sqlx::query("UPDATE messages SET send_due_ms = $1 WHERE delivery = 'pending' AND send_due_ms > $1")
                .bind(now_ms)
                .execute(pool)
                .await
                .map(drop)
        })?;
        Ok(())
    }

    /// Events waiting in the inbox (for metrics and tests).
    pub async fn inbox_len(&self) -> Result<i64, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM channel_inbox").fetch_one(pool).await
        })?)
    }

    /// Takes up to `limit` channel messages due for sending, for `lease_ms`;
    /// not one whose conversation has an earlier message leased or waiting
    /// for a retry (a conversation's messages go out in order).
    pub async fn outbox_claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let _turn = self.write_turn().await;
        let mut rows: Vec<OutboxItem> = on_db!(self, pool => {
            sqlx::query_as(
                "UPDATE messages SET send_due_ms = $1, send_attempts = send_attempts + 1 \
                 WHERE id IN (SELECT m.id FROM messages m WHERE m.delivery = 'pending' AND m.send_due_ms <= $2 \
                              AND NOT EXISTS (SELECT 1 FROM messages e WHERE e.delivery = 'pending' \
                                              AND e.conversation_id = m.conversation_id \
                                              AND e.id < m.id AND e.send_due_ms > $2) \
                              ORDER BY m.send_due_ms, m.id LIMIT $3) \
                 AND delivery = 'pending' AND send_due_ms <= $2 \
                 RETURNING id, conversation_id, channel_entry, content, channel_data, reply_to_id, send_attempts",
            )
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Gives claimed messages back unsent (they wait behind an earlier one
    /// of their conversation), without counting the attempt.
    pub async fn outbox_release(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE messages SET send_due_ms = 0, send_attempts = send_attempts - 1 \
             WHERE delivery = 'pending' AND id IN {}",
            id_list(ids)
        );
        let _turn = self.write_turn().await;
        on_db!(self, pool => sqlx::query(&sql).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Records a message the provider accepted under `provider_message_id`.
    /// `None` if it was no longer pending.
    pub async fn outbox_sent(
        &self,
        id: i64,
        provider_message_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let sql = format!(
            "UPDATE messages SET delivery = 'sent', provider_message_id = $2, delivery_error = NULL \
             WHERE id = $1 AND delivery = 'pending' RETURNING {MESSAGE_COLUMNS}"
        );
        let _turn = self.write_turn().await;
        let row: Option<MessageRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(id).bind(provider_message_id).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// Records a message that will not be sent, and why.
    pub async fn outbox_failed(&self, id: i64, error: &str) -> Result<Option<Message>, StoreError> {
        let sql = format!(
            "UPDATE messages SET delivery = 'failed', delivery_error = $2 \
             WHERE id = $1 AND delivery = 'pending' RETURNING {MESSAGE_COLUMNS}"
        );
        let _turn = self.write_turn().await;
        let row: Option<MessageRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(id).bind(error).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// Leaves a message pending until `due_ms`, with why the last attempt
    /// failed.
    pub async fn outbox_retry(&self, id: i64, due_ms: i64, error: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            sqlx::query(
                "UPDATE messages SET send_due_ms = $2, delivery_error = $3 WHERE id = $1 AND delivery = 'pending'",
            )
            .bind(id)
            .bind(due_ms)
            .bind(error)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// Message `id`.
    pub async fn message(&self, id: i64) -> Result<Option<Message>, StoreError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        let row: Option<MessageRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// The message `entry` knows by the provider's id.
    pub async fn message_by_provider_id(
        &self,
        entry: &str,
        provider_message_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel_entry = $1 AND provider_message_id = $2"
        );
        let row: Option<MessageRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(entry).bind(provider_message_id).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// What a channel message carries beyond its text (JSON), if anything.
    pub async fn channel_data(&self, message_id: i64) -> Result<Option<String>, StoreError> {
        let data: Option<Option<String>> = on_db!(self, pool => {
            sqlx::query_scalar("SELECT channel_data FROM messages WHERE id = $1")
                .bind(message_id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(data.flatten())
    }

    /// When the customer last wrote under the channel key `key` (a
    /// business number and a customer), in this conversation or an earlier
    /// one that was closed.
    pub async fn last_customer_message_at(
        &self,
        org_id: i64,
        key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let closed = format!("{key}#%");
        Ok(on_db!(self, pool => {
            sqlx::query_scalar(
                "SELECT m.created_at FROM messages m JOIN conversations c ON c.id = m.conversation_id \
                 WHERE c.org_id = $1 AND (c.external_id = $2 OR c.external_id LIKE $3) \
                 AND m.sender_kind = 'customer' ORDER BY m.id DESC LIMIT 1",
            )
            .bind(org_id)
            .bind(key)
            .bind(&closed)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// The customer's messages in the conversation nobody on the support
    /// side has read yet, oldest first.
    pub async fn unread_from_customer(&self, conversation_id: i64) -> Result<Vec<i64>, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM messages WHERE conversation_id = $1 AND sender_kind = 'customer' \
                 AND read_at IS NULL ORDER BY id",
            )
            .bind(conversation_id)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Sets (or, with an empty emoji, takes back) `reactor`'s reaction on
    /// message `message_id`.
    pub async fn set_reaction(
        &self,
        message_id: i64,
        reactor: &str,
        emoji: &str,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            if emoji.is_empty() {
                sqlx::query("DELETE FROM message_reactions WHERE message_id = $1 AND reactor = $2")
                    .bind(message_id)
                    .bind(reactor)
                    .execute(pool)
                    .await
                    .map(drop)
            } else {
                sqlx::query(
                    "INSERT INTO message_reactions (message_id, reactor, emoji, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (message_id, reactor) DO UPDATE SET emoji = excluded.emoji, created_at = excluded.created_at",
                )
                .bind(message_id)
                .bind(reactor)
                .bind(emoji)
                .bind(now)
                .execute(pool)
                .await
                .map(drop)
            }
        })?;
        Ok(())
    }

    /// The reactions on a message: `(reactor, emoji)`.
    pub async fn reactions(&self, message_id: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query_as(
                "SELECT reactor, emoji FROM message_reactions WHERE message_id = $1 ORDER BY created_at",
            )
            .bind(message_id)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Takes a closed conversation's channel key away from it (it keeps it
    /// with `#<id>` appended), so that the customer's next message opens a
    /// new conversation under that key.
    pub async fn release_external_id(&self, conversation_id: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            sqlx::query(
                "UPDATE conversations SET external_id = external_id || '#' || CAST(id AS TEXT) \
                 WHERE id = $1 AND external_id IS NOT NULL AND external_id NOT LIKE '%#%'",
            )
                .bind(conversation_id)
                .execute(pool)
                .await
                .map(drop)
        })?;
        Ok(())
    }
}
