//! The email channel: each entry's place in its IMAP mailbox, and the
//! reads that thread a mail into its conversation.

use chrono::Utc;

use super::tickets::{TICKET_COLUMNS, TicketRow};
use super::{Db, StoreError, on_db};
use crate::domain::ticket::Ticket;

/// Where an entry's listener is in its mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailCursor {
    pub uid_validity: u32,
    pub last_uid: u32,
}

impl Db {
    pub async fn mail_cursor(&self, entry: &str) -> Result<Option<MailCursor>, StoreError> {
        let row: Option<(i64, i64)> = on_db!(self, pool => {
            sqlx::query_as("SELECT uid_validity, last_uid FROM mail_cursors WHERE entry = $1")
                .bind(entry)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(|(v, u)| MailCursor {
            uid_validity: u32::try_from(v).unwrap_or_default(),
            last_uid: u32::try_from(u).unwrap_or_default(),
        }))
    }

    /// Records that every mail up to `cursor.last_uid` is stored.
    pub async fn set_mail_cursor(&self, entry: &str, cursor: MailCursor) -> Result<(), StoreError> {
        let now = Utc::now();
        on_db!(self, pool => {
            sqlx::query(
                "INSERT INTO mail_cursors (entry, uid_validity, last_uid, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (entry) DO UPDATE SET uid_validity = excluded.uid_validity, \
                 last_uid = excluded.last_uid, updated_at = excluded.updated_at",
            )
            .bind(entry)
            .bind(i64::from(cursor.uid_validity))
            .bind(i64::from(cursor.last_uid))
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// The ticket opened from conversation `conversation_id`, if any.
    pub async fn ticket_of_conversation(
        &self,
        conversation_id: i64,
    ) -> Result<Option<Ticket>, StoreError> {
        let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE conversation_id = $1");
        let row: Option<TicketRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(conversation_id).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// The provider ids of a conversation's last `limit` channel messages,
    /// oldest first: an outgoing mail's `References`.
    pub async fn thread_ids(
        &self,
        conversation_id: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = on_db!(self, pool => {
            sqlx::query_scalar(
                "SELECT provider_message_id FROM messages \
                 WHERE conversation_id = $1 AND provider_message_id IS NOT NULL \
                 ORDER BY id DESC LIMIT $2",
            )
            .bind(conversation_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        ids.reverse();
        Ok(ids)
    }

    /// The provider id of the customer's latest message in a conversation:
    /// what an outgoing mail answers (`In-Reply-To`).
    pub async fn last_customer_provider_id(
        &self,
        conversation_id: i64,
    ) -> Result<Option<String>, StoreError> {
        let id: Option<String> = on_db!(self, pool => {
            sqlx::query_scalar(
                "SELECT provider_message_id FROM messages \
                 WHERE conversation_id = $1 AND sender_kind = 'customer' AND provider_message_id IS NOT NULL \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(conversation_id)
            .fetch_optional(pool)
            .await
        })?;
        Ok(id)
    }
}
