//! Conversations and messages.

use chrono::{DateTime, Utc};

use super::{Db, StoreError, on_db};
use crate::domain::conversation::{
    Attachment, Channel, ChannelMeta, Conversation, ConversationStatus, Delivery, Handling,
    Message, NewConversation, NewMessage, Priority, ReplyMeta, SenderKind,
};

/// A file to record: its bytes are already on disk under `sha256`.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub file_name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct AttachmentRow {
    id: i64,
    org_id: i64,
    conversation_id: i64,
    message_id: Option<i64>,
    uploader_id: Option<i64>,
    file_name: String,
    content_type: String,
    size: i64,
    sha256: String,
    width: Option<i64>,
    height: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<AttachmentRow> for Attachment {
    fn from(r: AttachmentRow) -> Self {
        Attachment {
            id: r.id,
            org_id: r.org_id,
            conversation_id: r.conversation_id,
            message_id: r.message_id,
            uploader_id: r.uploader_id,
            file_name: r.file_name,
            content_type: r.content_type,
            size: r.size,
            sha256: r.sha256,
            width: r.width,
            height: r.height,
            created_at: r.created_at,
        }
    }
}

const ATTACHMENT_COLUMNS: &str = "id, org_id, conversation_id, message_id, uploader_id, file_name, content_type, size, sha256, width, height, created_at";

const INSERT_ATTACHMENT: &str = "INSERT INTO attachments (org_id, conversation_id, message_id, uploader_id, file_name, content_type, size, sha256, width, height, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     RETURNING id, org_id, conversation_id, message_id, uploader_id, file_name, content_type, size, sha256, width, height, created_at";

#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: i64,
    org_id: i64,
    customer_id: Option<i64>,
    contact_id: Option<i64>,
    agent_id: Option<i64>,
    status: String,
    subject: Option<String>,
    priority: String,
    tags: String,
    channel: String,
    channel_entry: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    handling: String,
    external_id: Option<String>,
    context: String,
    history_from: i64,
}

impl From<ConversationRow> for Conversation {
    fn from(r: ConversationRow) -> Self {
        Conversation {
            id: r.id,
            org_id: r.org_id,
            customer_id: r.customer_id,
            contact_id: r.contact_id,
            agent_id: r.agent_id,
            // CHECK constraints admit only these words.
            status: ConversationStatus::parse(&r.status).unwrap_or(ConversationStatus::Closed),
            subject: r.subject,
            priority: Priority::parse(&r.priority).unwrap_or(Priority::Medium),
            tags: serde_json::from_str(&r.tags).unwrap_or_default(),
            channel: Channel::parse(&r.channel).unwrap_or(Channel::Web),
            channel_entry: r.channel_entry,
            created_at: r.created_at,
            updated_at: r.updated_at,
            ended_at: r.ended_at,
            handling: Handling::parse(&r.handling).unwrap_or(Handling::Ai),
            external_id: r.external_id,
            context: serde_json::from_str(&r.context)
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
            history_from: r.history_from,
        }
    }
}

pub(super) const CONVERSATION_COLUMNS: &str = "id, org_id, customer_id, contact_id, agent_id, status, subject, priority, tags, channel, channel_entry, created_at, updated_at, ended_at, handling, external_id, context, history_from";

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: i64,
    org_id: i64,
    conversation_id: i64,
    sender_kind: String,
    sender_id: Option<i64>,
    content: String,
    is_internal: bool,
    status: String,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    sources: String,
    tokens_used: i64,
    response_time_ms: i64,
    channel_entry: Option<String>,
    provider_message_id: Option<String>,
    delivery: Option<String>,
    delivery_error: Option<String>,
    reply_to_id: Option<i64>,
    subject: Option<String>,
    html: Option<String>,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        Message {
            id: r.id,
            org_id: r.org_id,
            conversation_id: r.conversation_id,
            sender_kind: SenderKind::parse(&r.sender_kind).unwrap_or(SenderKind::System),
            sender_id: r.sender_id,
            content: r.content,
            is_internal: r.is_internal,
            status: r.status,
            read_at: r.read_at,
            created_at: r.created_at,
            reply: ReplyMeta {
                sources: serde_json::from_str(&r.sources).unwrap_or_default(),
                tokens_used: r.tokens_used,
                response_time_ms: r.response_time_ms,
            },
            channel: ChannelMeta {
                data: None,
                entry: r.channel_entry,
                provider_message_id: r.provider_message_id,
                reply_to_id: r.reply_to_id,
                subject: r.subject,
                html: r.html,
            },
            delivery: r.delivery.as_deref().and_then(Delivery::parse),
            delivery_error: r.delivery_error,
        }
    }
}

pub(super) const MESSAGE_COLUMNS: &str = "id, org_id, conversation_id, sender_kind, sender_id, content, is_internal, status, read_at, created_at, sources, tokens_used, response_time_ms, channel_entry, provider_message_id, delivery, delivery_error, reply_to_id, subject, html";

/// Which conversations a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub org_id: i64,
    /// Only this customer's (a customer sees only its own).
    pub customer_id: Option<i64>,
    /// Only these states.
    pub statuses: Option<Vec<ConversationStatus>>,
}

/// What one message insert returns inside a transaction.
pub(super) type Inserted = (MessageRow, bool, Vec<AttachmentRow>);

/// One message send, for the SQLite group writer.
pub(super) type WriteJob = (
    NewMessage,
    Vec<NewAttachment>,
    tokio::sync::oneshot::Sender<Result<Inserted, StoreError>>,
);

/// Inserts a message and its files in the open transaction `$tx`; a used
/// idempotency key answers the first message and its files. The same text
/// for both databases (and the group writer), hence a macro.
macro_rules! message_tx {
    ($tx:ident, $new:expr, $files:expr) => {{
        let new: &NewMessage = $new;
        let files: &[NewAttachment] = $files;
        // Microseconds: what PostgreSQL keeps, so the row built below is the
        // row a later read returns.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        let sources = serde_json::to_string(&new.reply.sources).unwrap_or_else(|_| "[]".into());
        // Only the id comes back: the rest is what was written (decoding
        // twenty columns per message cost more than the insert itself).
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO messages (org_id, conversation_id, sender_kind, sender_id, content, is_internal, idempotency_key, created_at, sources, tokens_used, response_time_ms, channel_entry, provider_message_id, delivery, reply_to_id, subject, html, channel_data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (conversation_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING id",
        )
        .bind(new.org_id)
        .bind(new.conversation_id)
        .bind(new.sender_kind.as_str())
        .bind(new.sender_id)
        .bind(&new.content)
        .bind(new.is_internal)
        .bind(&new.idempotency_key)
        .bind(now)
        .bind(&sources)
        .bind(new.reply.tokens_used)
        .bind(new.reply.response_time_ms)
        .bind(&new.channel.entry)
        .bind(&new.channel.provider_message_id)
        .bind(new.delivery.map(|d| d.as_str()))
        .bind(new.channel.reply_to_id)
        .bind(&new.channel.subject)
        .bind(&new.channel.html)
        .bind(&new.channel.data)
        .fetch_optional(&mut *$tx)
        .await?;
        let result: Result<Inserted, sqlx::Error> = match inserted {
            Some(id) => {
                let row = MessageRow {
                    id,
                    org_id: new.org_id,
                    conversation_id: new.conversation_id,
                    sender_kind: new.sender_kind.as_str().to_owned(),
                    sender_id: new.sender_id,
                    content: new.content.clone(),
                    is_internal: new.is_internal,
                    status: "sent".to_owned(),
                    read_at: None,
                    created_at: now,
                    sources,
                    tokens_used: new.reply.tokens_used,
                    response_time_ms: new.reply.response_time_ms,
                    channel_entry: new.channel.entry.clone(),
                    provider_message_id: new.channel.provider_message_id.clone(),
                    delivery: new.delivery.map(|d| d.as_str().to_owned()),
                    delivery_error: None,
                    reply_to_id: new.channel.reply_to_id,
                    subject: new.channel.subject.clone(),
                    html: new.channel.html.clone(),
                };
                sqlx::query(
                    "UPDATE conversations SET updated_at = $2, context = COALESCE($3, context) WHERE id = $1",
                )
                .bind(new.conversation_id)
                .bind(now)
                .bind(&new.context)
                .execute(&mut *$tx)
                .await?;
                let mut attached = Vec::with_capacity(files.len());
                for f in files {
                    let a: AttachmentRow = sqlx::query_as(INSERT_ATTACHMENT)
                        .bind(new.org_id)
                        .bind(new.conversation_id)
                        .bind(row.id)
                        .bind(new.sender_id)
                        .bind(&f.file_name)
                        .bind(&f.content_type)
                        .bind(f.size)
                        .bind(&f.sha256)
                        .bind(f.width)
                        .bind(f.height)
                        .bind(now)
                        .fetch_one(&mut *$tx)
                        .await?;
                    attached.push(a);
                }
                Ok((row, true, attached))
            }
            None => {
                let row: MessageRow = sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND idempotency_key = $2"
                ))
                .bind(new.conversation_id)
                .bind(&new.idempotency_key)
                .fetch_one(&mut *$tx)
                .await?;
                let attached = sqlx::query_as(&format!(
                    "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE message_id = $1 ORDER BY id"
                ))
                .bind(row.id)
                .fetch_all(&mut *$tx)
                .await?;
                Ok((row, false, attached))
            }
        };
        result
    }};
}

/// The SQLite group writer: takes the sends waiting at the moment (up to
/// 256), inserts them in one transaction and commits once, so concurrent
/// sends share a commit instead of queueing on SQLite's write lock. If the
/// transaction fails, each send is retried alone, so one bad send (its
/// session deleted meanwhile) fails alone.
pub(super) async fn group_writer(
    pool: sqlx::SqlitePool,
    mut jobs: tokio::sync::mpsc::Receiver<WriteJob>,
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
) {
    while let Some(first) = jobs.recv().await {
        let _turn = gate.lock().await;
        let mut batch = vec![first];
        while batch.len() < 256 {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("message_write_batch").record(batch.len() as f64);
        let together = async {
            let mut tx = pool.begin().await?;
            let mut out = Vec::with_capacity(batch.len());
            for (new, files, _) in &batch {
                out.push(message_tx!(tx, new, files)?);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(out)
        }
        .await;
        match together {
            Ok(out) => {
                for ((_, _, reply), inserted) in batch.into_iter().zip(out) {
                    let _ = reply.send(Ok(inserted));
                }
            }
            Err(_) => {
                for (new, files, reply) in batch {
                    let alone = async {
                        let mut tx = pool.begin().await?;
                        let r = message_tx!(tx, &new, &files)?;
                        tx.commit().await?;
                        Ok::<_, sqlx::Error>(r)
                    }
                    .await;
                    let _ = reply.send(alone.map_err(StoreError::from));
                }
            }
        }
    }
}

impl Db {
    pub async fn create_conversation(
        &self,
        new: &NewConversation,
    ) -> Result<Conversation, StoreError> {
        let now = Utc::now();
        let tags = serde_json::to_string(&new.tags).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "INSERT INTO conversations (org_id, customer_id, status, subject, priority, tags, channel, created_at, updated_at, contact_id, channel_entry) \
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $7, $8, $9) RETURNING {CONVERSATION_COLUMNS}"
        );
        let _turn = self.write_turn().await;
        let row: ConversationRow = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(new.org_id)
                .bind(new.customer_id)
                .bind(&new.subject)
                .bind(new.priority.as_str())
                .bind(&tags)
                .bind(new.channel.as_str())
                .bind(now)
                .bind(new.contact_id)
                .bind(&new.channel_entry)
                .fetch_one(pool)
                .await
        })?;
        Ok(row.into())
    }

    pub async fn conversation(&self, id: i64) -> Result<Option<Conversation>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
        let row: Option<ConversationRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    /// One page of conversations, newest first, and how many match in all.
    pub async fn list_conversations(
        &self,
        filter: &ConversationFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Conversation>, i64), StoreError> {
        // Statuses are fixed words from an enum, never client text.
        let mut clause = String::from("org_id = $1 AND ($2 IS NULL OR customer_id = $2)");
        if let Some(statuses) = &filter.statuses {
            let words: Vec<String> = statuses
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            clause.push_str(&format!(" AND status IN ({})", words.join(", ")));
        }
        let list = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {clause} ORDER BY id DESC LIMIT $3 OFFSET $4"
        );
        let count = format!("SELECT COUNT(*) FROM conversations WHERE {clause}");
        let (rows, total): (Vec<ConversationRow>, i64) = on_db!(self, pool => {
            let rows = sqlx::query_as(&list)
                .bind(filter.org_id)
                .bind(filter.customer_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total = sqlx::query_scalar(&count)
                .bind(filter.org_id)
                .bind(filter.customer_id)
                .fetch_one(pool)
                .await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    /// Sets the status; `ended_at` is set when it leaves `active` and
    /// cleared when it returns.
    pub async fn set_conversation_status(
        &self,
        id: i64,
        status: ConversationStatus,
    ) -> Result<Option<Conversation>, StoreError> {
        let now = Utc::now();
        let ended = (!status.is_open()).then_some(now);
        let sql = format!(
            "UPDATE conversations SET status = $2, updated_at = $3, \
             ended_at = CASE WHEN $4 IS NULL THEN NULL ELSE COALESCE(ended_at, $4) END \
             WHERE id = $1 RETURNING {CONVERSATION_COLUMNS}"
        );
        let row: Option<ConversationRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(status.as_str())
                .bind(now)
                .bind(ended)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    /// Assigns `agent_id` if the conversation is active and unassigned;
    /// `None` when it was not (the caller tells which).
    pub async fn assign_conversation(
        &self,
        id: i64,
        agent_id: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        let sql = format!(
            "UPDATE conversations SET agent_id = $2, updated_at = $3 \
             WHERE id = $1 AND agent_id IS NULL AND status = 'active' RETURNING {CONVERSATION_COLUMNS}"
        );
        let row: Option<ConversationRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(agent_id)
                .bind(Utc::now())
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    pub async fn delete_conversation(&self, id: i64) -> Result<bool, StoreError> {
        let done = on_db!(self, pool => {
            sqlx::query("DELETE FROM conversations WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// Stores a message. With an idempotency key already used in this
    /// conversation, returns the first message and `false`.
    pub async fn insert_message(&self, new: &NewMessage) -> Result<(Message, bool), StoreError> {
        let (message, created, _) = self.insert_message_with_files(new, &[]).await?;
        Ok((message, created))
    }

    /// [`Db::insert_message`] with its files, in one transaction. A retried
    /// send (same idempotency key) records no files again and answers the
    /// first message's.
    pub async fn insert_message_with_files(
        &self,
        new: &NewMessage,
        files: &[NewAttachment],
    ) -> Result<(Message, bool, Vec<Attachment>), StoreError> {
        let (row, created, attached) = match (&self.pool, &self.writer) {
            // SQLite takes one writer at a time: concurrent sends are
            // committed together by the group writer.
            (super::Pool::Sqlite(_), Some(writer)) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                writer
                    .send((new.clone(), files.to_vec(), reply))
                    .await
                    .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
                answer
                    .await
                    .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))??
            }
            _ => on_db!(self, pool => {
                let mut tx = pool.begin().await?;
                let result = message_tx!(tx, new, files)?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(result)
            })?,
        };
        Ok((
            row.into(),
            created,
            attached.into_iter().map(Into::into).collect(),
        ))
    }

    /// Records a file uploaded on its own (000), optionally with a message.
    pub async fn insert_attachment(
        &self,
        org_id: i64,
        conversation_id: i64,
        message_id: Option<i64>,
        uploader_id: Option<i64>,
        f: &NewAttachment,
    ) -> Result<Attachment, StoreError> {
        let row: AttachmentRow = on_db!(self, pool => {
            sqlx::query_as(INSERT_ATTACHMENT)
                .bind(org_id)
                .bind(conversation_id)
                .bind(message_id)
                .bind(uploader_id)
                .bind(&f.file_name)
                .bind(&f.content_type)
                .bind(f.size)
                .bind(&f.sha256)
                .bind(f.width)
                .bind(f.height)
                .bind(Utc::now())
                .fetch_one(pool)
                .await
        })?;
        Ok(row.into())
    }

    pub async fn attachment(&self, id: i64) -> Result<Option<Attachment>, StoreError> {
        let sql = format!("SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1");
        let row: Option<AttachmentRow> =
            on_db!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(Into::into))
    }

    /// The files of these messages, by message, in upload order.
    pub async fn attachments_of(&self, message_ids: &[i64]) -> Result<Vec<Attachment>, StoreError> {
        if message_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = message_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE message_id IN ({list}) ORDER BY id"
        );
        let rows: Vec<AttachmentRow> =
            on_db!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Deletes a file's row; the caller releases the bytes.
    pub async fn delete_attachment(&self, id: i64) -> Result<bool, StoreError> {
        let done = on_db!(self, pool => {
            sqlx::query("DELETE FROM attachments WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// The digests of a conversation's files (to release after deleting it).
    pub async fn conversation_digests(
        &self,
        conversation_id: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> = on_db!(self, pool => {
            sqlx::query_scalar("SELECT DISTINCT sha256 FROM attachments WHERE conversation_id = $1")
                .bind(conversation_id)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    pub async fn attachment_digest_in_use(&self, sha256: &str) -> Result<bool, StoreError> {
        let row: Option<i64> = on_db!(self, pool => {
            sqlx::query_scalar("SELECT 1 FROM attachments WHERE sha256 = $1 LIMIT 1")
                .bind(sha256)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.is_some())
    }

    /// Up to `limit` messages older than `before` (all when `None`), oldest
    /// first, and whether older ones remain.
    pub async fn list_messages(
        &self,
        conversation_id: i64,
        include_internal: bool,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 \
             AND ($2 OR NOT is_internal) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        );
        let mut rows: Vec<MessageRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(conversation_id)
                .bind(include_internal)
                .bind(before)
                .bind(limit + 1)
                .fetch_all(pool)
                .await
        })?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        rows.reverse();
        Ok((rows.into_iter().map(Into::into).collect(), more))
    }

    pub async fn count_messages(
        &self,
        conversation_id: i64,
        include_internal: bool,
    ) -> Result<i64, StoreError> {
        let count = on_db!(self, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = $1 AND ($2 OR NOT is_internal)",
            )
            .bind(conversation_id)
            .bind(include_internal)
            .fetch_one(pool)
            .await
        })?;
        Ok(count)
    }

    /// Marks the messages `ids` of the conversation read, for a reader on
    /// the customer's side (`by_customer`) or on the support side: one
    /// marks only what the other side wrote. Returns the messages marked.
    pub async fn mark_read(
        &self,
        conversation_id: i64,
        ids: &[i64],
        by_customer: bool,
    ) -> Result<Vec<Message>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let list = ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let side = if by_customer { "<>" } else { "=" };
        let sql = format!(
            "UPDATE messages SET read_at = $2, status = 'read' WHERE conversation_id = $1 \
             AND id IN ({list}) AND read_at IS NULL AND NOT is_internal \
             AND sender_kind {side} 'customer' RETURNING {MESSAGE_COLUMNS}"
        );
        let rows: Vec<MessageRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(conversation_id).bind(now).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Sessions in the organization, those active, and messages exchanged
    /// (internal notes excluded).
    pub async fn chat_counts(&self, org_id: i64) -> Result<(i64, i64, i64), StoreError> {
        let counts = on_db!(self, pool => {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE org_id = $1")
                .bind(org_id)
                .fetch_one(pool)
                .await?;
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM conversations WHERE org_id = $1 AND status = 'active'",
            )
            .bind(org_id)
            .fetch_one(pool)
            .await?;
            let messages: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM messages WHERE org_id = $1 AND NOT is_internal",
            )
            .bind(org_id)
            .fetch_one(pool)
            .await?;
            Ok::<_, sqlx::Error>((total, active, messages))
        })?;
        Ok(counts)
    }

    /// Every response time in the organization, in seconds: from a customer
    /// message that opens a turn (the first customer message after a reply,
    /// or the conversation's first) to the next reply by an agent or the
    /// assistant. Internal notes and system messages are not replies.
    pub async fn response_times(&self, org_id: i64) -> Result<Vec<f64>, StoreError> {
        let rows: Vec<(i64, String, DateTime<Utc>)> = on_db!(self, pool => {
            sqlx::query_as(
                "SELECT conversation_id, sender_kind, created_at FROM messages \
                 WHERE org_id = $1 AND NOT is_internal AND sender_kind <> 'system' \
                 ORDER BY conversation_id, id",
            )
            .bind(org_id)
            .fetch_all(pool)
            .await
        })?;
        let mut times = Vec::new();
        let mut waiting: Option<(i64, DateTime<Utc>)> = None;
        for (conversation, kind, at) in rows {
            if waiting.is_some_and(|(c, _)| c != conversation) {
                waiting = None;
            }
            if kind == "customer" {
                if waiting.is_none() {
                    waiting = Some((conversation, at));
                }
            } else if let Some((_, asked)) = waiting.take() {
                times.push((at - asked).num_milliseconds() as f64 / 1000.0);
            }
        }
        Ok(times)
    }
}

/// A channel's delivery report moves a message forward only: `pending` →
/// `sent` → `delivered` → `read`; `failed` from `pending` or `sent`.
fn earlier_states(d: Delivery) -> &'static [&'static str] {
    match d {
        Delivery::Pending => &[],
        Delivery::Sent => &["pending"],
        Delivery::Delivered => &["pending", "sent"],
        Delivery::Read => &["pending", "sent", "delivered"],
        Delivery::Failed => &["pending", "sent"],
    }
}

impl Db {
    /// Records a channel's delivery report for the message it knows as
    /// `provider_message_id` on `entry`. `None` when there is no such
    /// message or the report is stale (it would move the state back).
    pub async fn set_delivery(
        &self,
        entry: &str,
        provider_message_id: &str,
        delivery: Delivery,
        error: Option<&str>,
    ) -> Result<Option<Message>, StoreError> {
        let earlier = earlier_states(delivery);
        if earlier.is_empty() {
            return Ok(None);
        }
        // Fixed words from an enum, never client text.
        let list: Vec<String> = earlier.iter().map(|w| format!("'{w}'")).collect();
        let sql = format!(
            "UPDATE messages SET delivery = $3, delivery_error = $4 \
             WHERE channel_entry = $1 AND provider_message_id = $2 \
             AND COALESCE(delivery, 'pending') IN ({}) RETURNING {MESSAGE_COLUMNS}",
            list.join(", ")
        );
        let _turn = self.write_turn().await;
        let row: Option<MessageRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(entry)
                .bind(provider_message_id)
                .bind(delivery.as_str())
                .bind(error)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }
}

/// 003 sessions named by the client, the handover state machine and the
/// assistant's view of a conversation.
impl Db {
    /// The conversation 003 names by a client-chosen `sessionId`.
    pub async fn conversation_by_external(
        &self,
        org_id: i64,
        external_id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE org_id = $1 AND external_id = $2"
        );
        let row: Option<ConversationRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(org_id)
                .bind(external_id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    /// Starts a conversation under a client-chosen `sessionId`; when two
    /// requests race, both get the one that won (`true`: this call made it).
    pub async fn create_external_conversation(
        &self,
        new: &NewConversation,
        external_id: &str,
    ) -> Result<(Conversation, bool), StoreError> {
        let now = Utc::now();
        let sql = format!(
            "INSERT INTO conversations (org_id, customer_id, status, subject, priority, tags, channel, created_at, updated_at, external_id, contact_id, channel_entry) \
             VALUES ($1, $2, 'active', $3, $4, '[]', $5, $6, $6, $7, $8, $9) \
             ON CONFLICT (org_id, external_id) WHERE external_id IS NOT NULL DO NOTHING \
             RETURNING {CONVERSATION_COLUMNS}"
        );
        let turn = self.write_turn().await;
        let row: Option<ConversationRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(new.org_id)
                .bind(new.customer_id)
                .bind(&new.subject)
                .bind(new.priority.as_str())
                .bind(new.channel.as_str())
                .bind(now)
                .bind(external_id)
                .bind(new.contact_id)
                .bind(&new.channel_entry)
                .fetch_optional(pool)
                .await
        })?;
        drop(turn);
        match row {
            Some(row) => Ok((row.into(), true)),
            None => self
                .conversation_by_external(new.org_id, external_id)
                .await?
                .map(|c| (c, false))
                .ok_or(StoreError::Conflict("sessionId")),
        }
    }

    /// Moves a conversation to `to` if it is in one of the states `from`
    /// (the handover state machine's guard); `agent`, when given, becomes
    /// its agent. `None` when it is gone or was in another state.
    pub async fn transition_handling(
        &self,
        id: i64,
        from: &[Handling],
        to: Handling,
        agent: Option<i64>,
    ) -> Result<Option<Conversation>, StoreError> {
        // The states are fixed words from an enum, never client text.
        let states: Vec<String> = from.iter().map(|h| format!("'{}'", h.as_str())).collect();
        let sql = format!(
            "UPDATE conversations SET handling = $2, agent_id = COALESCE($3, agent_id), updated_at = $4 \
             WHERE id = $1 AND handling IN ({}) RETURNING {CONVERSATION_COLUMNS}",
            states.join(", ")
        );
        let _turn = self.write_turn().await;
        let row: Option<ConversationRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(to.as_str())
                .bind(agent)
                .bind(Utc::now())
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    /// Clears a session's context: its intent and entities, and the history
    /// the assistant sees (messages are kept).
    pub async fn reset_context(&self, id: i64) -> Result<(), StoreError> {
        on_db!(self, pool => {
            sqlx::query(
                "UPDATE conversations SET context = '{}', \
                 history_from = (SELECT COALESCE(MAX(id), 0) FROM messages WHERE conversation_id = $1) \
                 WHERE id = $1",
            )
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// The last `limit` public messages since the last reset, oldest first.
    pub async fn history(
        &self,
        conversation: &Conversation,
        limit: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let (mut messages, _) = self
            .list_messages(conversation.id, false, None, limit)
            .await?;
        messages.retain(|m| m.id > conversation.history_from);
        Ok(messages)
    }
}
