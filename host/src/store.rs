//! Storage: sqlx over SQLite (the embedded default) or PostgreSQL.
//!
//! [`Db`] holds one pool of either kind. Queries are written once in the SQL
//! both databases accept (`$1` placeholders, `RETURNING`) and run through the
//! [`on_db!`] macro, which type-checks the same expression against each
//! driver. Schema differences live only in `migrations/sqlite` and
//! `migrations/postgres`.

mod channels;
mod contacts;
mod conversations;
mod email;
mod identity;
pub mod knowledge;
mod plugin_kv;
mod sqlite_reader;
mod tickets;

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{DatabaseConfig, DatabaseKind, Synchronous};
pub use channels::{InboxRow, NewInboxRow, OutboxItem};
pub use conversations::{ConversationFilter, NewAttachment};
pub use email::{MailCursor, MailLock};
pub use tickets::{DeliveryClaim, TicketChanges, TicketFilter};

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// The database: a sqlx pool of either kind and, on SQLite, the fast
/// point-read path of [`sqlite_reader`].
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    reader: Option<Arc<sqlite_reader::SqliteReader>>,
    /// SQLite's group writer for messages (see `conversations::group_writer`).
    writer: Option<tokio::sync::mpsc::Sender<conversations::WriteJob>>,
    /// SQLite takes one writer at a time, and a writer that finds it taken
    /// sleeps with back-off (busy_timeout): tens of milliseconds under
    /// load. The writes on the conversation path queue here instead.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is already taken; the string names which.
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl Db {
    /// Connects with the settings of `config`. SQLite gets WAL, foreign keys,
    /// a busy timeout and `database.synchronous`: `FULL` by default (an
    /// acknowledged write survives a power loss; the group writer pays one
    /// fsync per batch, not per message) or `NORMAL` (survives a crash of
    /// the process, may lose the last commits on power loss; WAL keeps the
    /// file uncorrupted either way). The database file is the gateway's
    /// user's only (0600), and so is its directory when the gateway creates
    /// it.
    pub async fn connect(config: &DatabaseConfig) -> Result<Db, StoreError> {
        match config.kind {
            DatabaseKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(&config.url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(match config.synchronous {
                        Synchronous::Full => SqliteSynchronous::Full,
                        Synchronous::Normal => SqliteSynchronous::Normal,
                    })
                    .foreign_keys(true)
                    .busy_timeout(config.busy_timeout);
                let file = options.get_filename().to_path_buf();
                if let Some(parent) = file.parent()
                    && !parent.as_os_str().is_empty()
                {
                    crate::files::create_private_dir(parent).map_err(sqlx::Error::Io)?;
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(config.max_connections)
                    .connect_with(options)
                    .await?;
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = file.as_os_str().to_owned();
                    path.push(suffix);
                    crate::files::make_private(std::path::Path::new(&path));
                }
                // An in-memory database cannot be opened by a second
                // connection: no side reader.
                let in_memory = file.as_os_str().is_empty()
                    || config.url.contains(":memory:")
                    || config.url.contains("mode=memory");
                let reader = (!in_memory)
                    .then(|| Arc::new(sqlite_reader::SqliteReader::new(file, config.busy_timeout)));
                let (writer, jobs) = tokio::sync::mpsc::channel(4096);
                let gate = Arc::new(tokio::sync::Mutex::new(()));
                tokio::spawn(conversations::group_writer(
                    pool.clone(),
                    jobs,
                    gate.clone(),
                ));
                Ok(Db {
                    pool: Pool::Sqlite(pool),
                    reader,
                    writer: Some(writer),
                    write_gate: Some(gate),
                })
            }
            DatabaseKind::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.busy_timeout.max(std::time::Duration::from_secs(1)))
                    .connect(&config.url)
                    .await?;
                Ok(Db {
                    pool: Pool::Postgres(pool),
                    reader: None,
                    writer: None,
                    write_gate: None,
                })
            }
        }
    }

    /// On SQLite, waits for the write gate (see `write_gate`); PostgreSQL
    /// takes concurrent writers itself.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    pub fn kind(&self) -> DatabaseKind {
        match self.pool {
            Pool::Sqlite(_) => DatabaseKind::Sqlite,
            Pool::Postgres(_) => DatabaseKind::Postgres,
        }
    }

    /// Applies pending migrations. Safe to run from several nodes at once on
    /// PostgreSQL (sqlx takes an advisory lock).
    ///
    /// SQLite migrations run on a connection of their own with foreign keys
    /// off: a migration that rebuilds a table (SQLite's way to change a
    /// column) drops the old one, and with foreign keys on that would
    /// cascade into its children. sqlx runs each migration in a transaction,
    /// where the pragma cannot be changed, so it is set on connecting.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let migrator = sqlx::migrate!("../migrations/sqlite");
                let options = (*pool.connect_options()).clone();
                let in_memory = options.get_filename().as_os_str().is_empty()
                    || options
                        .get_filename()
                        .to_string_lossy()
                        .contains(":memory:");
                if in_memory {
                    // A second connection would see another database; a
                    // new in-memory one has no rows to cascade into.
                    migrator.run(pool).await?;
                } else {
                    use sqlx::ConnectOptions as _;
                    let mut conn = options.foreign_keys(false).connect().await?;
                    let ran = migrator.run(&mut conn).await;
                    let _ = sqlx::Connection::close(conn).await;
                    ran?;
                }
            }
            Pool::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// A round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Pool size and idle connections, for metrics.
    pub fn pool_stats(&self) -> (u32, usize) {
        on_db!(self, pool => (pool.size(), pool.num_idle()))
    }

    /// Waits for connections to be returned and closes them.
    pub async fn close(&self) {
        on_db!(self, pool => pool.close().await);
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`], naming the
/// first of `fields` that the constraint's name or message mentions.
fn conflict_or(err: sqlx::Error, fields: &[&'static str]) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
        let field = fields
            .iter()
            .find(|f| text.contains(*f))
            .copied()
            .unwrap_or("value");
        return StoreError::Conflict(field);
    }
    StoreError::Database(err)
}
