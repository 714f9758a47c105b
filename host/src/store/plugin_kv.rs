//! The plugins' key-value store: one namespace per `[[plugins]]` id, values
//! with an optional expiry (Unix milliseconds). Expired rows read as absent
//! and are deleted when next written or by [`Db::kv_sweep`].

use super::{Db, StoreError, on_db};

impl Db {
    pub async fn kv_get(
        &self,
        plugin: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let value = on_db!(self, pool => {
            sqlx::query_scalar(
                "SELECT value FROM plugin_kv WHERE plugin_id = $1 AND key = $2 \
                 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(plugin)
            .bind(key)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
        })?;
        Ok(value)
    }

    /// Stores `value`; refuses a new key once the namespace holds
    /// `max_keys` keys (replacing an existing key is always allowed). The
    /// quota is soft under concurrent writers on PostgreSQL: two calls may
    /// both pass the count.
    pub async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
        now_ms: i64,
        max_keys: i64,
    ) -> Result<bool, StoreError> {
        // SQLite's writers queue here rather than sleep on its lock.
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM plugin_kv WHERE plugin_id = $1 AND key = $2 AND expires_at <= $3")
                .bind(plugin)
                .bind(key)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
                    .bind(plugin)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                // Rows count until deleted, expired or not: a plugin cannot
                // outgrow the quota with short-lived keys. At the quota, its
                // expired rows go first.
                let count_sql = "SELECT COUNT(*) FROM plugin_kv WHERE plugin_id = $1";
                let count: i64 = sqlx::query_scalar(count_sql)
                    .bind(plugin)
                    .fetch_one(&mut *tx)
                    .await?;
                if count >= max_keys {
                    sqlx::query("DELETE FROM plugin_kv WHERE plugin_id = $1 AND expires_at <= $2")
                        .bind(plugin)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    let count: i64 = sqlx::query_scalar(count_sql)
                        .bind(plugin)
                        .fetch_one(&mut *tx)
                        .await?;
                    if count >= max_keys {
                        return Ok(false);
                    }
                }
            }
            sqlx::query(
                "INSERT INTO plugin_kv (plugin_id, key, value, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            )
            .bind(plugin)
            .bind(key)
            .bind(value)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on_db!(self, pool => {
            sqlx::query("DELETE FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Deletes every expired key; returns how many.
    pub async fn kv_sweep(&self, now_ms: i64) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let done = on_db!(self, pool => {
            sqlx::query("DELETE FROM plugin_kv WHERE expires_at <= $1")
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done)
    }
}
