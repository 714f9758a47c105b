//! Contacts and their channel identities.

use chrono::{DateTime, Utc};

use super::{Db, StoreError, on_db};
use crate::domain::contact::{Contact, ContactDetails, Identity};
use crate::domain::conversation::Channel;

#[derive(sqlx::FromRow)]
struct ContactRow {
    id: i64,
    org_id: i64,
    user_id: Option<i64>,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    avatar_url: Option<String>,
    attributes: String,
    merged_into: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ContactRow> for Contact {
    fn from(r: ContactRow) -> Self {
        Contact {
            id: r.id,
            org_id: r.org_id,
            user_id: r.user_id,
            name: r.name,
            email: r.email,
            phone: r.phone,
            avatar_url: r.avatar_url,
            attributes: serde_json::from_str(&r.attributes).unwrap_or_default(),
            merged_into: r.merged_into,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const CONTACT_COLUMNS: &str = "id, org_id, user_id, name, email, phone, avatar_url, attributes, merged_into, created_at, updated_at";

/// Adds an identity unless the organization has it already (then no row).
const INSERT_IDENTITY: &str = "INSERT INTO contact_identities (org_id, contact_id, kind, value, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, kind, value) DO NOTHING";

fn attributes_text(d: &ContactDetails) -> String {
    serde_json::to_string(&d.attributes).unwrap_or_else(|_| "{}".into())
}

impl Db {
    pub async fn contact_by_id(&self, id: i64) -> Result<Option<Contact>, StoreError> {
        let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = $1");
        let row: Option<ContactRow> =
            on_db!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(Into::into))
    }

    /// The contact a login user is: `(id, merged_into)`. A point read by a
    /// unique key, so on SQLite it takes the fast reader: it runs on every
    /// conversation a customer starts.
    pub async fn contact_of_user(
        &self,
        user_id: i64,
    ) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        const SQL: &str = "SELECT id, merged_into FROM contacts WHERE user_id = $1";
        if let Some(reader) = &self.reader {
            let row = reader.read(|conn| {
                let mut stmt = conn.prepare_cached(SQL)?;
                let mut rows = stmt.query([user_id])?;
                rows.next()?
                    .map(|r| Ok::<_, rusqlite::Error>((r.get(0)?, r.get(1)?)))
                    .transpose()
            })?;
            return Ok(row);
        }
        let row: Option<(i64, Option<i64>)> = on_db!(self, pool => {
            sqlx::query_as(SQL).bind(user_id).fetch_optional(pool).await
        })?;
        Ok(row)
    }

    /// One page of an organization's contacts (merged ones left out),
    /// newest first, and how many there are.
    pub async fn list_contacts(
        &self,
        org_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<Contact>, i64), StoreError> {
        let list = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE org_id = $1 AND merged_into IS NULL \
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        );
        let (rows, total): (Vec<ContactRow>, i64) = on_db!(self, pool => {
            let rows = sqlx::query_as(&list).bind(org_id).bind(limit).bind(offset).fetch_all(pool).await?;
            let total = sqlx::query_scalar(
                "SELECT COUNT(*) FROM contacts WHERE org_id = $1 AND merged_into IS NULL",
            )
            .bind(org_id)
            .fetch_one(pool)
            .await?;
            Ok::<_, sqlx::Error>((rows, total))
        })?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    /// A contact's identities, oldest first.
    pub async fn identities(&self, contact_id: i64) -> Result<Vec<Identity>, StoreError> {
        let rows: Vec<(String, String)> = on_db!(self, pool => {
            sqlx::query_as("SELECT kind, value FROM contact_identities WHERE contact_id = $1 ORDER BY id")
                .bind(contact_id)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(kind, value)| Channel::parse(&kind).map(|kind| Identity { kind, value }))
            .collect())
    }

    /// The contact known by `identity` in the organization, created with
    /// `details` (and linked to `user_id`) when there is none. Two callers
    /// racing get the same contact.
    pub async fn contact_for_identity(
        &self,
        org_id: i64,
        identity: &Identity,
        user_id: Option<i64>,
        details: &ContactDetails,
    ) -> Result<Contact, StoreError> {
        let find = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = \
             (SELECT contact_id FROM contact_identities WHERE org_id = $1 AND kind = $2 AND value = $3)"
        );
        let insert = format!(
            "INSERT INTO contacts (org_id, user_id, name, email, phone, avatar_url, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {CONTACT_COLUMNS}"
        );
        let kind = identity.kind.as_str();
        let now = Utc::now();
        let found: Option<ContactRow> = on_db!(self, pool => {
            sqlx::query_as(&find)
                .bind(org_id)
                .bind(kind)
                .bind(&identity.value)
                .fetch_optional(pool)
                .await
        })?;
        if let Some(row) = found {
            return Ok(row.into());
        }
        // Only a new contact waits for the write gate.
        let _turn = self.write_turn().await;
        let row: ContactRow = on_db!(self, pool => {
                    let mut tx = pool.begin().await?;
                    let row: ContactRow = sqlx::query_as(&insert)
                        .bind(org_id)
                        .bind(user_id)
                        .bind(&details.name)
                        .bind(&details.email)
                        .bind(&details.phone)
                        .bind(&details.avatar_url)
                        .bind(attributes_text(details))
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                    let added = sqlx::query(INSERT_IDENTITY)
                    .bind(org_id)
                    .bind(row.id)
                    .bind(kind)
                    .bind(&identity.value)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if added == 1 {
                        tx.commit().await?;
                        Ok::<_, sqlx::Error>(row)
                    } else {
                        // Another request made it first: take theirs.
                        tx.rollback().await?;
                        sqlx::query_as(&find)
                            .bind(org_id)
                            .bind(kind)
                            .bind(&identity.value)
                            .fetch_one(pool)
                            .await
                    }
        })?;
        Ok(row.into())
    }

    /// Creates a contact with no identity yet (staff adding someone).
    pub async fn create_contact(
        &self,
        org_id: i64,
        details: &ContactDetails,
        identities: &[Identity],
    ) -> Result<Contact, StoreError> {
        let insert = format!(
            "INSERT INTO contacts (org_id, name, email, phone, avatar_url, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {CONTACT_COLUMNS}"
        );
        let now = Utc::now();
        let _turn = self.write_turn().await;
        let row: ContactRow = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: ContactRow = sqlx::query_as(&insert)
                .bind(org_id)
                .bind(&details.name)
                .bind(&details.email)
                .bind(&details.phone)
                .bind(&details.avatar_url)
                .bind(attributes_text(details))
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            for identity in identities {
                let added = sqlx::query(INSERT_IDENTITY)
                .bind(org_id)
                .bind(row.id)
                .bind(identity.kind.as_str())
                .bind(&identity.value)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if added == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::Conflict("identity"));
                }
            }
            tx.commit().await?;
            Ok::<_, StoreError>(row)
        })?;
        Ok(row.into())
    }

    /// Merges contact `from` into `into` (same organization): its
    /// identities and conversations move, details `into` lacks are taken
    /// from it, and it is kept, empty, with `merged_into` set. `None` when
    /// either is gone or already merged.
    pub async fn merge_contacts(
        &self,
        into: i64,
        from: i64,
    ) -> Result<Option<Contact>, StoreError> {
        let now = Utc::now();
        let _turn = self.write_turn().await;
        let merged: Option<ContactRow> = on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            let both: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM contacts a JOIN contacts b ON a.org_id = b.org_id \
                 WHERE a.id = $1 AND b.id = $2 AND a.merged_into IS NULL AND b.merged_into IS NULL",
            )
            .bind(into)
            .bind(from)
            .fetch_one(&mut *tx)
            .await?;
            if both != 1 || into == from {
                return Ok(None);
            }
            // The login link moves too, unless `into` has one already.
            let from_user: Option<i64> = sqlx::query_scalar("SELECT user_id FROM contacts WHERE id = $1")
                .bind(from)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("UPDATE contacts SET user_id = NULL WHERE id = $1 AND $2 IS NOT NULL AND (SELECT user_id FROM contacts WHERE id = $3) IS NULL")
                .bind(from)
                .bind(from_user)
                .bind(into)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE contacts SET \
                 user_id = COALESCE(user_id, $3), \
                 name = COALESCE(name, (SELECT name FROM contacts WHERE id = $2)), \
                 email = COALESCE(email, (SELECT email FROM contacts WHERE id = $2)), \
                 phone = COALESCE(phone, (SELECT phone FROM contacts WHERE id = $2)), \
                 avatar_url = COALESCE(avatar_url, (SELECT avatar_url FROM contacts WHERE id = $2)), \
                 updated_at = $4 WHERE id = $1",
            )
            .bind(into)
            .bind(from)
            .bind(from_user)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE contact_identities SET contact_id = $1 WHERE contact_id = $2")
                .bind(into)
                .bind(from)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE conversations SET contact_id = $1 WHERE contact_id = $2")
                .bind(into)
                .bind(from)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE contacts SET merged_into = $1, updated_at = $3 WHERE id = $2")
                .bind(into)
                .bind(from)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let row: ContactRow = sqlx::query_as(&format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = $1"))
                .bind(into)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(row))
        })?;
        Ok(merged.map(Into::into))
    }
}
