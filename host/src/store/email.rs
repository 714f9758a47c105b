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

/// The right to listen to an entry's mailbox, on PostgreSQL (where
/// several nodes may run): a session-level advisory lock on a connection
/// of its own, released when this is dropped (the connection closes).
/// On SQLite (one process) it holds nothing.
pub struct MailLock {
    _conn: Option<sqlx::PgConnection>,
}

impl Db {
    /// Takes the listener's lock of `entry`; `None` while another node
    /// holds it.
    pub async fn try_mail_lock(&self, entry: &str) -> Result<Option<MailLock>, StoreError> {
        use sha2::Digest as _;
        let crate::store::Pool::Postgres(pool) = &self.pool else {
            return Ok(Some(MailLock { _conn: None }));
        };
        let digest = sha2::Sha256::digest(format!("mail-listener:{entry}").as_bytes());
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        let key = i64::from_be_bytes(key);
        let mut conn = pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        Ok(locked.then_some(MailLock { _conn: Some(conn) }))
    }

    /// The cursor of `entry` when it is about `mailbox` (server, user and
    /// folder): another mailbox starts over.
    pub async fn mail_cursor(
        &self,
        entry: &str,
        mailbox: &str,
    ) -> Result<Option<MailCursor>, StoreError> {
        let row: Option<(i64, i64)> = on_db!(self, pool => {
            sqlx::query_as(
                "SELECT uid_validity, last_uid FROM mail_cursors WHERE entry = $1 AND mailbox = $2",
            )
            .bind(entry)
            .bind(mailbox)
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.map(|(v, u)| MailCursor {
            uid_validity: u32::try_from(v).unwrap_or_default(),
            last_uid: u32::try_from(u).unwrap_or_default(),
        }))
    }

    /// Records that every mail up to `cursor.last_uid` is stored.
    pub async fn set_mail_cursor(
        &self,
        entry: &str,
        mailbox: &str,
        cursor: MailCursor,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        on_db!(self, pool => {
            sqlx::query(
                "INSERT INTO mail_cursors (entry, mailbox, uid_validity, last_uid, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (entry) DO UPDATE SET mailbox = excluded.mailbox, uid_validity = excluded.uid_validity, \
                 last_uid = excluded.last_uid, updated_at = excluded.updated_at",
            )
            .bind(entry)
            .bind(mailbox)
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
