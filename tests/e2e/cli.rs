//! The operator commands: migrate, user create, apikey create/list/revoke.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Gateway, TestDb, databases, run_cli};

#[tokio::test]
async fn migrate_then_create_admin_and_log_in_by_email() {
    for db in databases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let testdb = TestDb::create(db).await;
        let (code, _, err) = run_cli(dir.path(), &testdb, &["migrate"]);
        assert_eq!(code, 0, "{db:?}: {err}");
        assert!(err.contains("migrations applied"), "{err}");

        // No --username: an admin-created user logs in by email.
        let (code, out, err) = run_cli(
            dir.path(),
            &testdb,
            &[
                "user",
                "create",
                "--email",
                "Root@Example.com",
                "--password",
                "admin-pass-1",
                "--role",
                "admin",
            ],
        );
        assert_eq!(code, 0, "{db:?}: {err}");
        let id: i64 = out
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("stdout is the id alone: {out:?}"));

        let (code, _, err) = run_cli(
            dir.path(),
            &testdb,
            &[
                "user",
                "create",
                "--email",
                "root@example.com",
                "--password",
                "admin-pass-1",
                "--role",
                "admin",
            ],
        );
        assert_eq!(code, 1, "duplicate email must fail");
        assert!(err.contains("already exists"), "{err}");

        let (code, _, err) = run_cli(
            dir.path(),
            &testdb,
            &[
                "user",
                "create",
                "--email",
                "x@example.com",
                "--password",
                "short",
                "--role",
                "agent",
            ],
        );
        assert_eq!(code, 1);
        assert!(err.contains("--password"), "{err}");

        let gw = Gateway::restart(dir, testdb, &crate::common::Options::new(db));
        let token = gw.login("root@example.com", "admin-pass-1").await;
        let me: Value = gw
            .http
            .get(gw.url("/api/v1/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("me")
            .json()
            .await
            .expect("json");
        assert_eq!(me["id"], id);
        assert_eq!(me["username"], Value::Null);
        assert_eq!(me["is_admin"], true);
    }
}

#[tokio::test]
async fn api_keys_authenticate_until_revoked() {
    for db in databases() {
        let gw = Gateway::start(db).await;
        let (code, out, err) = gw.cli(&["apikey", "create", "--name", "crm sync", "--org", "acme"]);
        assert_eq!(code, 0, "{db:?}: {err}");
        let key = out.trim().to_owned();
        assert_eq!(out, format!("{key}\n"), "stdout is the key alone");
        assert!(key.starts_with("gwk_"), "{key}");
        assert!(err.contains("created organization acme"), "{err}");

        // A valid key authenticates (as a service, which has no user for /me).
        let r = gw
            .http
            .get(gw.url("/api/v1/auth/me"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("me");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{db:?}");
        let r = gw
            .http
            .get(gw.url("/api/v1/auth/me"))
            .header("x-api-key", "gwk_wrong")
            .send()
            .await
            .expect("me");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.json::<Value>().await.expect("json")["detail"],
            "Invalid API key"
        );

        let (code, out, _) = gw.cli(&["apikey", "list", "--org", "acme"]);
        assert_eq!(code, 0);
        assert!(out.contains("crm sync") && out.contains("active"), "{out}");
        assert!(!out.contains(&key), "listing must not show the key");
        let id = out
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .expect("id")
            .to_owned();

        let (code, _, err) = gw.cli(&["apikey", "revoke", &id, "--org", "default"]);
        assert_eq!(
            code, 1,
            "another organization's key cannot be revoked: {err}"
        );
        let (code, _, err) = gw.cli(&["apikey", "revoke", &id, "--org", "acme"]);
        assert_eq!(code, 0, "{err}");
        let r = gw
            .http
            .get(gw.url("/api/v1/auth/me"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("me");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "revoked key");
    }
}
