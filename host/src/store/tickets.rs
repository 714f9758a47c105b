//! Tickets and categories.

use chrono::{DateTime, Utc};

use super::{Db, StoreError, conflict_or, on_db};
use crate::domain::conversation::Priority;
use crate::domain::ticket::{Category, NewTicket, Ticket, TicketStatus};

#[derive(sqlx::FromRow)]
pub(super) struct TicketRow {
    id: i64,
    org_id: i64,
    conversation_id: i64,
    customer_id: Option<i64>,
    title: String,
    description: String,
    status: String,
    priority: String,
    category_id: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TicketRow> for Ticket {
    fn from(r: TicketRow) -> Self {
        Ticket {
            id: r.id,
            org_id: r.org_id,
            conversation_id: r.conversation_id,
            customer_id: r.customer_id,
            title: r.title,
            description: r.description,
            status: TicketStatus::parse(&r.status).unwrap_or(TicketStatus::Open),
            priority: Priority::parse(&r.priority).unwrap_or(Priority::Medium),
            category_id: r.category_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub(super) const TICKET_COLUMNS: &str = "id, org_id, conversation_id, customer_id, title, description, status, priority, category_id, created_at, updated_at";

/// Which tickets a listing shows (004's filters).
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub org_id: i64,
    pub customer_id: Option<i64>,
    pub status: Option<TicketStatus>,
    pub category_id: Option<i64>,
    pub priority: Option<Priority>,
}

/// What an update changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct TicketChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<TicketStatus>,
    pub priority: Option<Priority>,
    /// `Some(None)` clears the category.
    pub category_id: Option<Option<i64>>,
}

impl Db {
    /// Creates a ticket, and its conversation when it does not come from a
    /// chat. A chat has at most one ticket: a second answers the first
    /// (`false`).
    pub async fn create_ticket(&self, new: &NewTicket) -> Result<(Ticket, bool), StoreError> {
        let now = Utc::now();
        let insert = format!(
            "INSERT INTO tickets (org_id, conversation_id, customer_id, title, description, status, priority, category_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $8) \
             ON CONFLICT (conversation_id) DO NOTHING RETURNING {TICKET_COLUMNS}"
        );
        let existing = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE conversation_id = $1");
        let (row, created): (TicketRow, bool) = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let conversation_id = match new.conversation_id {
                Some(id) => id,
                None => {
                    sqlx::query_scalar(
                        "INSERT INTO conversations (org_id, customer_id, status, subject, priority, tags, channel, created_at, updated_at, contact_id) \
                         VALUES ($1, $2, 'active', $3, $4, '[]', $6, $5, $5, $7) RETURNING id",
                    )
                    .bind(new.org_id)
                    .bind(new.customer_id)
                    .bind(&new.title)
                    .bind(new.priority.as_str())
                    .bind(now)
                    // Another system's ticket without a customer is an api
                    // conversation.
                    .bind(if new.customer_id.is_some() { "web" } else { "api" })
                    .bind(new.contact_id)
                    .fetch_one(&mut *tx)
                    .await?
                }
            };
            let inserted: Option<TicketRow> = sqlx::query_as(&insert)
                .bind(new.org_id)
                .bind(conversation_id)
                .bind(new.customer_id)
                .bind(&new.title)
                .bind(&new.description)
                .bind(new.priority.as_str())
                .bind(new.category_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let result = match inserted {
                Some(row) => (row, true),
                None => (
                    sqlx::query_as(&existing)
                        .bind(conversation_id)
                        .fetch_one(&mut *tx)
                        .await?,
                    false,
                ),
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(result)
        })?;
        Ok((row.into(), created))
    }

    pub async fn ticket(&self, id: i64) -> Result<Option<Ticket>, StoreError> {
        let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1");
        let row: Option<TicketRow> =
            on_db!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(Into::into))
    }

    /// One page of tickets, newest first, and how many match in all.
    pub async fn list_tickets(
        &self,
        f: &TicketFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Ticket>, i64), StoreError> {
        let clause = "org_id = $1 AND ($2 IS NULL OR customer_id = $2) AND ($3 IS NULL OR status = $3) \
                      AND ($4 IS NULL OR category_id = $4) AND ($5 IS NULL OR priority = $5)";
        let list = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE {clause} ORDER BY id DESC LIMIT $6 OFFSET $7"
        );
        let count = format!("SELECT COUNT(*) FROM tickets WHERE {clause}");
        let status = f.status.map(TicketStatus::as_str);
        let priority = f.priority.map(Priority::as_str);
        let (rows, total): (Vec<TicketRow>, i64) = on_db!(self, pool => {
            let rows = sqlx::query_as(&list)
                .bind(f.org_id)
                .bind(f.customer_id)
                .bind(status)
                .bind(f.category_id)
                .bind(priority)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total = sqlx::query_scalar(&count)
                .bind(f.org_id)
                .bind(f.customer_id)
                .bind(status)
                .bind(f.category_id)
                .bind(priority)
                .fetch_one(pool)
                .await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    pub async fn update_ticket(
        &self,
        id: i64,
        c: &TicketChanges,
    ) -> Result<Option<Ticket>, StoreError> {
        let sql = format!(
            "UPDATE tickets SET title = COALESCE($2, title), description = COALESCE($3, description), \
             status = COALESCE($4, status), priority = COALESCE($5, priority), \
             category_id = CASE WHEN $6 THEN $7 ELSE category_id END, updated_at = $8 \
             WHERE id = $1 RETURNING {TICKET_COLUMNS}"
        );
        let row: Option<TicketRow> = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(&c.title)
                .bind(&c.description)
                .bind(c.status.map(TicketStatus::as_str))
                .bind(c.priority.map(Priority::as_str))
                .bind(c.category_id.is_some())
                .bind(c.category_id.flatten())
                .bind(Utc::now())
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    pub async fn categories(&self, org_id: i64) -> Result<Vec<Category>, StoreError> {
        let rows: Vec<(i64, i64, String, String)> = on_db!(self, pool => {
            sqlx::query_as("SELECT id, org_id, name, description FROM categories WHERE org_id = $1 ORDER BY name")
                .bind(org_id)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, org_id, name, description)| Category {
                id,
                org_id,
                name,
                description,
            })
            .collect())
    }

    pub async fn category(&self, id: i64) -> Result<Option<Category>, StoreError> {
        let row: Option<(i64, i64, String, String)> = on_db!(self, pool => {
            sqlx::query_as("SELECT id, org_id, name, description FROM categories WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(|(id, org_id, name, description)| Category {
            id,
            org_id,
            name,
            description,
        }))
    }

    pub async fn create_category(
        &self,
        org_id: i64,
        name: &str,
        description: &str,
    ) -> Result<Category, StoreError> {
        let id: i64 = on_db!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO categories (org_id, name, description, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(org_id)
            .bind(name)
            .bind(description)
            .bind(Utc::now())
            .fetch_one(pool)
            .await
        })
        .map_err(|e| conflict_or(e, &["categories"]))?;
        Ok(Category {
            id,
            org_id,
            name: name.to_owned(),
            description: description.to_owned(),
        })
    }
}

/// What became of an incoming webhook delivery id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryClaim {
    /// First sight: handle it, then [`Db::finish_webhook_delivery`].
    New,
    /// Handled before: its outcome (JSON).
    Done(String),
    /// Being handled by another request right now.
    InProgress,
}

impl Db {
    /// Claims delivery `id` of organization `org_id` for handling. A claim
    /// older than `lease` that never recorded an outcome (its handler
    /// crashed) is taken over.
    pub async fn claim_webhook_delivery(
        &self,
        org_id: i64,
        id: &str,
        lease: std::time::Duration,
    ) -> Result<DeliveryClaim, StoreError> {
        let now = Utc::now();
        let stale = now - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let taken_over = on_db!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET created_at = $1 \
                 WHERE org_id = $2 AND delivery_id = $3 AND outcome = '' AND created_at < $4",
            )
            .bind(now)
            .bind(org_id)
            .bind(id)
            .bind(stale)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if taken_over == 1 {
            return Ok(DeliveryClaim::New);
        }
        let inserted = on_db!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_deliveries (org_id, delivery_id, outcome, created_at) \
                 VALUES ($1, $2, '', $3) ON CONFLICT (org_id, delivery_id) DO NOTHING",
            )
            .bind(org_id)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if inserted == 1 {
            return Ok(DeliveryClaim::New);
        }
        let outcome: Option<(String,)> = on_db!(self, pool => {
            sqlx::query_as(
                "SELECT outcome FROM webhook_deliveries WHERE org_id = $1 AND delivery_id = $2",
            )
            .bind(org_id)
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        Ok(match outcome {
            Some((o,)) if !o.is_empty() => DeliveryClaim::Done(o),
            _ => DeliveryClaim::InProgress,
        })
    }

    /// Records the outcome of a claimed delivery.
    pub async fn finish_webhook_delivery(
        &self,
        org_id: i64,
        id: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        on_db!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET outcome = $1 WHERE org_id = $2 AND delivery_id = $3",
            )
            .bind(outcome)
            .bind(org_id)
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Forgets deliveries handled before `before` (a sender retries for
    /// hours, not weeks).
    pub async fn sweep_webhook_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(on_db!(self, pool => {
            sqlx::query("DELETE FROM webhook_deliveries WHERE created_at < $1")
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }

    /// Gives up a claim whose handling failed, so a retry is handled anew.
    pub async fn release_webhook_delivery(&self, org_id: i64, id: &str) -> Result<(), StoreError> {
        on_db!(self, pool => {
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE org_id = $1 AND delivery_id = $2 AND outcome = ''",
            )
            .bind(org_id)
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }
}
