//! 002's register, login and me, on every database.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{DbKind, Gateway, databases};

#[tokio::test]
async fn register_login_me() {
    for db in databases() {
        let gw = Gateway::start(db).await;
        let http = &gw.http;

        let r = http
            .post(gw.url("/api/v1/auth/register"))
            .json(&json!({"username": "alice", "email": "Alice@Example.com", "password": "s3cret-pass", "full_name": "Alice Liddell"}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status(), StatusCode::OK, "{db:?}");
        let user: Value = r.json().await.expect("json");
        assert!(user["id"].is_i64(), "{db:?}: integer id: {user}");
        assert_eq!(user["username"], "alice");
        assert_eq!(user["email"], "alice@example.com");
        assert_eq!(user["full_name"], "Alice Liddell");
        assert_eq!(user["is_active"], true);
        assert_eq!(user["is_admin"], false);
        let created = user["created_at"].as_str().expect("created_at");
        assert!(
            chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z'),
            "{created}"
        );

        // Duplicates: username in any case, email in any case.
        for (body, detail) in [
            (
                json!({"username": "ALICE", "email": "other@example.com", "password": "s3cret-pass"}),
                "Username already registered",
            ),
            (
                json!({"username": "alice2", "email": "ALICE@example.com", "password": "s3cret-pass"}),
                "Email already registered",
            ),
        ] {
            let r = http
                .post(gw.url("/api/v1/auth/register"))
                .json(&body)
                .send()
                .await
                .expect("register");
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{db:?}");
            assert_eq!(
                r.json::<Value>().await.expect("json"),
                json!({"detail": detail})
            );
        }

        // Login by username, by email, and as a form.
        let by_name = gw.login("alice", "s3cret-pass").await;
        let by_email = gw.login("alice@example.com", "s3cret-pass").await;
        let r = http
            .post(gw.url("/api/v1/auth/login"))
            .form(&[("username", "Alice"), ("password", "s3cret-pass")])
            .send()
            .await
            .expect("form login");
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["token_type"], "bearer");

        for token in [&by_name, &by_email] {
            let r = http
                .get(gw.url("/api/v1/auth/me"))
                .bearer_auth(token)
                .send()
                .await
                .expect("me");
            assert_eq!(r.status(), StatusCode::OK);
            let me: Value = r.json().await.expect("json");
            assert_eq!(me["id"], user["id"]);
            assert_eq!(me["username"], "alice");
            assert_eq!(me["email"], "alice@example.com");
            assert_eq!(me["created_at"], user["created_at"]);
        }

        // Wrong password and unknown user look the same.
        for (name, password) in [("alice", "wrong-password"), ("nobody", "s3cret-pass")] {
            let r = http
                .post(gw.url("/api/v1/auth/login"))
                .json(&json!({"username": name, "password": password}))
                .send()
                .await
                .expect("login");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            assert_eq!(
                r.json::<Value>().await.expect("json"),
                json!({"detail": "Incorrect username or password"})
            );
        }

        // Secrets never reach the log.
        let log = gw.log();
        assert!(!log.contains("s3cret-pass"), "password in log");
        assert!(!log.contains(&by_name), "token in log");
    }
}

#[tokio::test]
async fn register_validation_is_fastapi_shaped() {
    let gw = Gateway::start(databases()[0]).await;
    let post = |body: String| {
        gw.http
            .post(gw.url("/api/v1/auth/register"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = post(json!({"username": "bob"}).to_string())
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({"detail": [
            {"loc": ["body", "email"], "msg": "field required", "type": "value_error.missing"},
            {"loc": ["body", "password"], "msg": "field required", "type": "value_error.missing"},
        ]})
    );

    let r = post(
        json!({"username": "b", "email": "not-an-email", "password": "short", "full_name": 5})
            .to_string(),
    )
    .await
    .expect("post");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.expect("json");
    let locs: Vec<String> = body["detail"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["loc"][1].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        locs,
        ["full_name", "username", "email", "password"],
        "{body}"
    );

    for (bad, kind) in [
        ("{not json", "value_error.jsondecode"),
        ("[1,2]", "type_error.dict"),
        ("", "value_error.missing"),
    ] {
        let r = post(bad.to_owned()).await.expect("post");
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["detail"][0]["loc"], json!(["body"]), "{body}");
        assert_eq!(body["detail"][0]["type"], kind, "{body}");
    }

    let r = gw
        .http
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"username": "bob"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "password"]));
}

/// With no configured secret, a generated one is kept: in the data dir on
/// SQLite (tokens survive a restart), in the shared database on PostgreSQL
/// (tokens work on every node).
#[tokio::test]
async fn generated_secret_is_kept_and_shared() {
    for db in databases() {
        let options = || crate::common::Options::new(db).env("GATEWAY_JWT_SECRET", "");
        let gw = Gateway::start_with(options()).await;
        let token = gw.register_and_login("carol").await;
        let me = |gw: &Gateway| {
            gw.http
                .get(gw.url("/api/v1/auth/me"))
                .bearer_auth(&token)
                .send()
        };
        let other = match db {
            DbKind::Sqlite => {
                let (dir, testdb) = gw.stop();
                assert!(dir.path().join("data/jwt_secret").exists());
                Gateway::restart(dir, testdb, &options())
            }
            DbKind::Postgres => {
                // A second node: its own data dir, the same database.
                let node_b = Gateway::restart(
                    tempfile::tempdir().expect("tempdir"),
                    gw.db.share(),
                    &options(),
                );
                assert!(
                    !gw.dir.path().join("data/jwt_secret").exists(),
                    "kept in the database"
                );
                let r = me(&gw).await.expect("me");
                assert_eq!(r.status(), StatusCode::OK);
                node_b
            }
        };
        let r = me(&other).await.expect("me");
        assert_eq!(r.status(), StatusCode::OK, "{db:?}");
        assert_eq!(r.json::<Value>().await.expect("json")["username"], "carol");
    }
}

#[tokio::test]
async fn registration_can_be_closed() {
    let gw = Gateway::start_with(
        crate::common::Options::new(databases()[0]).toml("[auth]\nallow_registration = false"),
    )
    .await;
    let r = gw
        .http
        .post(gw.url("/api/v1/auth/register"))
        .json(&json!({"username": "dave", "email": "dave@example.com", "password": "s3cret-pass"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
