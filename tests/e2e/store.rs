//! Store behaviour the HTTP layer does not reach on its own, on every database.

use gateway::config::Config;
use gateway::domain::{NewUser, Role};
use gateway::store::{Db, StoreError};

use crate::common::{TestDb, databases};

async fn open(testdb: &TestDb, dir: &tempfile::TempDir) -> Db {
    let mut env = std::collections::HashMap::new();
    env.insert(
        "GATEWAY_DATA_DIR".to_owned(),
        dir.path().display().to_string(),
    );
    if let Some(url) = &testdb.url {
        env.insert("DATABASE_URL".to_owned(), url.clone());
    }
    let config = Config::from_toml("", None, &env).expect("config");
    let db = Db::connect(&config.database).await.expect("connect");
    db.migrate().await.expect("migrate");
    db
}

#[tokio::test]
async fn unique_username_and_email_regardless_of_case() {
    for kind in databases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let testdb = TestDb::create(kind).await;
        let db = open(&testdb, &dir).await;
        let org = db.ensure_default_org().await.expect("org");
        assert_eq!(
            db.ensure_default_org().await.expect("org again").id,
            org.id,
            "idempotent"
        );
        let user = |username: &str, email: &str| NewUser {
            org_id: org.id,
            username: Some(username.to_owned()),
            email: email.to_owned(),
            full_name: None,
            password_hash: "$argon2id$unused".to_owned(),
            role: Role::Customer,
        };
        let alice = db
            .create_user(&user("Alice", "Alice@Example.com"))
            .await
            .expect("create");
        assert_eq!(
            alice.email, "alice@example.com",
            "{kind:?}: emails are stored lower-cased"
        );
        match db.create_user(&user("alice", "other@example.com")).await {
            Err(StoreError::Conflict("username")) => {}
            other => panic!("{kind:?}: expected a username conflict, got {other:?}"),
        }
        match db.create_user(&user("bob", "ALICE@example.com")).await {
            Err(StoreError::Conflict("email")) => {}
            other => panic!("{kind:?}: expected an email conflict, got {other:?}"),
        }
        let (found, hash) = db
            .user_for_login("ALICE")
            .await
            .expect("read")
            .expect("found");
        assert_eq!((found.id, hash.as_str()), (alice.id, "$argon2id$unused"));
        assert_eq!(
            db.user_by_id(alice.id).await.expect("read"),
            Some(alice.clone())
        );
        assert_eq!(db.user_by_id(alice.id + 1000).await.expect("read"), None);

        assert_eq!(
            db.ensure_setting("k", "first").await.expect("setting"),
            "first"
        );
        assert_eq!(
            db.ensure_setting("k", "second").await.expect("setting"),
            "first",
            "{kind:?}"
        );
        db.close().await;
    }
}

/// Applies the migrations before `20261203000008_contacts` on a raw pool,
/// writes the rows a gateway of that time wrote (a customer with a
/// conversation, a message and a ticket; a channel customer named by a
/// client; an odd channel word), then lets the gateway's own `Db::migrate`
/// apply the rest, and checks that everything was carried over.
macro_rules! contacts_carry_over {
    ($pool:expr, $all:expr, $db:expr) => {{
        let pool = $pool;
        let all: sqlx::migrate::Migrator = $all;
        let before = sqlx::migrate::Migrator {
            migrations: all
                .migrations
                .iter()
                .filter(|m| m.version < 20261203000008)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&pool).await.expect("migrations before contacts");
        let now = chrono::Utc::now();
        let run = |sql: &'static str| sqlx::query(sql);
        run("INSERT INTO organizations (slug, name, created_at) VALUES ('acme', 'Acme', $1)")
            .bind(now).execute(&pool).await.expect("org");
        run("INSERT INTO users (org_id, username, email, full_name, password_hash, role, created_at, updated_at) \
             VALUES (1, 'alice', 'alice@example.com', 'Alice A', 'x', 'customer', $1, $1)")
            .bind(now).execute(&pool).await.expect("alice");
        run("INSERT INTO users (org_id, email, password_hash, role, created_at, updated_at, external_ref) \
             VALUES (1, 'user123@contacts.invalid', 'x', 'customer', $1, $1, 'user123')")
            .bind(now).execute(&pool).await.expect("channel customer");
        run("INSERT INTO conversations (org_id, customer_id, status, priority, channel, created_at, updated_at) \
             VALUES (1, 1, 'active', 'medium', 'ticket', $1, $1)")
            .bind(now).execute(&pool).await.expect("conversation");
        run("INSERT INTO conversations (org_id, customer_id, status, priority, channel, created_at, updated_at, external_id) \
             VALUES (1, 2, 'active', 'medium', 'whatsapp', $1, $1, 'session456')")
            .bind(now).execute(&pool).await.expect("external conversation");
        run("INSERT INTO messages (org_id, conversation_id, sender_kind, sender_id, content, created_at) \
             VALUES (1, 1, 'customer', 1, 'Where is my parcel?', $1)")
            .bind(now).execute(&pool).await.expect("message");
        run("INSERT INTO tickets (org_id, conversation_id, customer_id, title, status, priority, created_at, updated_at) \
             VALUES (1, 1, 1, 'Parcel', 'open', 'medium', $1, $1)")
            .bind(now).execute(&pool).await.expect("ticket");

        let db: Db = $db;
        db.migrate().await.expect("the contacts migration");

        let contacts: Vec<(i64, Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT id, user_id, email FROM contacts ORDER BY id")
                .fetch_all(&pool).await.expect("contacts");
        assert_eq!(contacts.len(), 2, "{contacts:?}");
        assert_eq!(contacts[0].2.as_deref(), Some("alice@example.com"));
        assert_eq!(contacts[1].2, None, "a channel customer's made-up email is not kept");
        let identities: Vec<(String, String)> =
            sqlx::query_as("SELECT kind, value FROM contact_identities ORDER BY contact_id, kind")
                .fetch_all(&pool).await.expect("identities");
        assert_eq!(
            identities,
            [
                ("web".to_owned(), "1".to_owned()),
                ("api".to_owned(), "user123".to_owned()),
                ("web".to_owned(), "2".to_owned())
            ]
        );
        let conversations: Vec<(Option<i64>, Option<i64>, String)> =
            sqlx::query_as("SELECT customer_id, contact_id, channel FROM conversations ORDER BY id")
                .fetch_all(&pool).await.expect("conversations");
        assert_eq!(
            conversations,
            [
                (Some(1), Some(contacts[0].0), "web".to_owned()),
                (Some(2), Some(contacts[1].0), "whatsapp".to_owned())
            ]
        );
        // The children of the rebuilt tables are intact.
        let kept: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM messages WHERE conversation_id = 1), \
                    (SELECT COUNT(*) FROM tickets WHERE conversation_id = 1)",
        )
        .fetch_one(&pool).await.expect("children");
        assert_eq!(kept, (1, 1));
        // Another system's ticket may have no customer now.
        run("INSERT INTO conversations (org_id, status, priority, channel, created_at, updated_at) \
             VALUES (1, 'active', 'medium', 'api', $1, $1)")
            .bind(now).execute(&pool).await.expect("a conversation without a customer");
    }};
}

#[tokio::test]
async fn the_contacts_migration_carries_existing_data_over() {
    for kind in databases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let testdb = TestDb::create(kind).await;
        let gateway_db = || async {
            let mut env = std::collections::HashMap::new();
            env.insert(
                "GATEWAY_DATA_DIR".to_owned(),
                dir.path().display().to_string(),
            );
            if let Some(url) = &testdb.url {
                env.insert("DATABASE_URL".to_owned(), url.clone());
            }
            let config = Config::from_toml("", None, &env).expect("config");
            Db::connect(&config.database).await.expect("connect")
        };
        match &testdb.url {
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("gateway.db"))
                    .create_if_missing(true)
                    .foreign_keys(true);
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .expect("sqlite");
                contacts_carry_over!(
                    pool.clone(),
                    sqlx::migrate!("../migrations/sqlite"),
                    gateway_db().await
                );
                let broken: Vec<(String, i64, String, i64)> =
                    sqlx::query_as("PRAGMA foreign_key_check")
                        .fetch_all(&pool)
                        .await
                        .expect("check");
                assert!(broken.is_empty(), "{broken:?}");
            }
            Some(url) => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                    .expect("postgres");
                contacts_carry_over!(
                    pool.clone(),
                    sqlx::migrate!("../migrations/postgres"),
                    gateway_db().await
                );
                pool.close().await;
            }
        }
    }
}
