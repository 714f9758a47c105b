//! Organizations, users and API keys.

use chrono::{DateTime, Utc};

use super::sqlite_reader::{optional_timestamp, timestamp};
use super::{Db, StoreError, conflict_or, on_db};
use crate::domain::identity::{DEFAULT_ORG_SLUG, TokenState};
use crate::domain::{ApiKey, NewUser, Organization, Role, User};

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: i64,
    slug: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<OrgRow> for Organization {
    fn from(r: OrgRow) -> Self {
        Organization {
            id: r.id,
            slug: r.slug,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    org_id: i64,
    username: Option<String>,
    email: String,
    full_name: Option<String>,
    password_hash: String,
    role: String,
    is_active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
    token_generation: i64,
}

impl UserRow {
    fn into_user(self) -> (User, String) {
        let user = User {
            id: self.id,
            org_id: self.org_id,
            username: self.username,
            email: self.email,
            full_name: self.full_name,
            // The CHECK constraint admits only user roles.
            role: Role::parse_user_role(&self.role).unwrap_or(Role::Customer),
            is_active: self.is_active,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_login_at: self.last_login_at,
            token_generation: self.token_generation,
        };
        (user, self.password_hash)
    }
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: i64,
    org_id: i64,
    name: String,
    prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> Self {
        ApiKey {
            id: r.id,
            org_id: r.org_id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A [`UserRow`] from the fast SQLite reader (columns in `USER_COLUMNS` order).
fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        org_id: r.get(1)?,
        username: r.get(2)?,
        email: r.get(3)?,
        full_name: r.get(4)?,
        password_hash: r.get(5)?,
        role: r.get(6)?,
        is_active: r.get(7)?,
        created_at: timestamp(r, 8)?,
        updated_at: timestamp(r, 9)?,
        last_login_at: optional_timestamp(r, 10)?,
        token_generation: r.get(11)?,
    })
}

/// An [`ApiKeyRow`] from the fast SQLite reader (columns in `API_KEY_COLUMNS` order).
fn api_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.get(0)?,
        org_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        created_at: timestamp(r, 4)?,
        last_used_at: optional_timestamp(r, 5)?,
        revoked_at: optional_timestamp(r, 6)?,
    })
}

const USER_COLUMNS: &str = "id, org_id, username, email, full_name, password_hash, role, is_active, \
                            created_at, updated_at, last_login_at, token_generation";
const API_KEY_COLUMNS: &str = "id, org_id, name, prefix, created_at, last_used_at, revoked_at";

impl Db {
    /// Returns the organization with `slug`, creating it (named `name`) if
    /// it does not exist. Concurrent callers get the same row.
    pub async fn ensure_org(&self, slug: &str, name: &str) -> Result<Organization, StoreError> {
        let now = Utc::now();
        on_db!(self, pool => {
            sqlx::query("INSERT INTO organizations (slug, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (slug) DO NOTHING")
                .bind(slug)
                .bind(name)
                .bind(now)
                .execute(pool)
                .await?;
            let row: OrgRow = sqlx::query_as("SELECT id, slug, name, created_at FROM organizations WHERE slug = $1")
                .bind(slug)
                .fetch_one(pool)
                .await?;
            Ok(row.into())
        })
    }

    /// Returns the setting `key`, storing `value` first if it is not set.
    /// Concurrent callers (several nodes starting) all get the first value.
    pub async fn ensure_setting(&self, key: &str, value: &str) -> Result<String, StoreError> {
        on_db!(self, pool => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(pool)
                .await?;
            let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await?;
            Ok(stored)
        })
    }

    /// The organization every first start creates, for self-registered users.
    pub async fn ensure_default_org(&self) -> Result<Organization, StoreError> {
        self.ensure_org(DEFAULT_ORG_SLUG, "Default organization")
            .await
    }

    pub async fn org_by_id(&self, id: i64) -> Result<Option<Organization>, StoreError> {
        let row: Option<OrgRow> = on_db!(self, pool => {
            sqlx::query_as("SELECT id, slug, name, created_at FROM organizations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    pub async fn org_by_slug(&self, slug: &str) -> Result<Option<Organization>, StoreError> {
        let row: Option<OrgRow> = on_db!(self, pool => {
            sqlx::query_as("SELECT id, slug, name, created_at FROM organizations WHERE slug = $1")
                .bind(slug)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Into::into))
    }

    /// Inserts a user. A taken username or email is [`StoreError::Conflict`]
    /// naming `"username"` or `"email"`.
    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let now = Utc::now();
        let sql = format!(
            "INSERT INTO users (org_id, username, email, full_name, password_hash, role, is_active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $7) RETURNING {USER_COLUMNS}"
        );
        let row: UserRow = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(new.org_id)
                .bind(new.username.as_deref())
                .bind(new.email.to_lowercase())
                .bind(new.full_name.as_deref())
                .bind(&new.password_hash)
                .bind(new.role.as_str())
                .bind(now)
                .fetch_one(pool)
                .await
        })
        .map_err(|e| conflict_or(e, &["username", "email"]))?;
        Ok(row.into_user().0)
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        if let Some(reader) = &self.reader {
            let row = reader.read(|conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query([id])?;
                rows.next()?.map(user_row).transpose()
            })?;
            return Ok(row.map(|r| r.into_user().0));
        }
        let row: Option<UserRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row.map(|r| r.into_user().0))
    }

    /// Finds a user by username (any case) or email, with the password hash.
    pub async fn user_for_login(&self, login: &str) -> Result<Option<(User, String)>, StoreError> {
        let key = login.to_lowercase();
        let sql = if key.contains('@') {
            format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1")
        } else {
            format!("SELECT {USER_COLUMNS} FROM users WHERE lower(username) = $1")
        };
        let row: Option<UserRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(&key).fetch_optional(pool).await
        })?;
        Ok(row.map(UserRow::into_user))
    }

    /// What decides whether user `id`'s tokens still hold: its token
    /// generation, whether it is active, and its role and organization
    /// (`None`: the user is gone).
    pub async fn token_state(&self, id: i64) -> Result<Option<TokenState>, StoreError> {
        let row: Option<(i64, bool, String, i64)> = on_db!(self, pool => {
            sqlx::query_as("SELECT token_generation, is_active, role, org_id FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(|(generation, is_active, role, org_id)| TokenState {
            generation,
            is_active,
            role: Role::parse_user_role(&role).unwrap_or(Role::Customer),
            org_id,
        }))
    }

    /// Ends every token user `id` holds (the next check of one refuses it).
    pub async fn bump_token_generation(&self, id: i64) -> Result<(), StoreError> {
        on_db!(self, pool => {
            sqlx::query("UPDATE users SET token_generation = token_generation + 1, updated_at = $1 WHERE id = $2")
                .bind(Utc::now())
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Activates or deactivates user `id`; deactivation ends its tokens.
    pub async fn set_user_active(&self, id: i64, active: bool) -> Result<(), StoreError> {
        on_db!(self, pool => {
            sqlx::query("UPDATE users SET is_active = $1, token_generation = token_generation + 1, updated_at = $2 WHERE id = $3")
                .bind(active)
                .bind(Utc::now())
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn record_login(&self, user_id: i64) -> Result<(), StoreError> {
        let now = Utc::now();
        on_db!(self, pool => {
            sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
                .bind(now)
                .bind(user_id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn create_api_key(
        &self,
        org_id: i64,
        name: &str,
        prefix: &str,
        key_hash: &str,
    ) -> Result<ApiKey, StoreError> {
        let now = Utc::now();
        let sql = format!(
            "INSERT INTO api_keys (org_id, name, prefix, key_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING {API_KEY_COLUMNS}"
        );
        let row: ApiKeyRow = on_db!(self, pool => {
            sqlx::query_as(&sql)
                .bind(org_id)
                .bind(name)
                .bind(prefix)
                .bind(key_hash)
                .bind(now)
                .fetch_one(pool)
                .await
        })
        .map_err(|e| conflict_or(e, &["key_hash"]))?;
        Ok(row.into())
    }

    /// The live (not revoked) key whose hash is `key_hash`.
    pub async fn active_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        );
        if let Some(reader) = &self.reader {
            let row = reader.read(|conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query([key_hash])?;
                rows.next()?.map(api_key_row).transpose()
            })?;
            return Ok(row.map(Into::into));
        }
        let row: Option<ApiKeyRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(key_hash).fetch_optional(pool).await
        })?;
        Ok(row.map(Into::into))
    }

    pub async fn api_keys(&self, org_id: i64) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY id");
        let rows: Vec<ApiKeyRow> = on_db!(self, pool => {
            sqlx::query_as(&sql).bind(org_id).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    pub async fn touch_api_key(&self, id: i64) -> Result<(), StoreError> {
        let now = Utc::now();
        on_db!(self, pool => {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Revokes key `id` of `org_id`; returns whether a live key was revoked.
    pub async fn revoke_api_key(&self, org_id: i64, id: i64) -> Result<bool, StoreError> {
        let now = Utc::now();
        let done = on_db!(self, pool => {
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .bind(org_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done == 1)
    }
}
