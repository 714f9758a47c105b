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
