//! What an attacker and a careless client found, kept fixed: revoked
//! credentials, files on other people's messages, the upload budget, NUL
//! characters, page offsets, id spellings, internal-note flags, and
//! process-wide plugin counters.

use axum::http::Method;
use serde_json::{Value, json};

use super::App;

/// The caller's user id, from 002's `/me`.
async fn me(app: &App, token: &str) -> (u16, Value) {
    app.call(Method::GET, "/api/v1/auth/me", Some(token), &[], None)
        .await
}

#[tokio::test]
async fn revoked_users_lose_their_tokens_and_sockets_at_once() {
    let app = App::start("").await;
    let alice = app.customer("alice").await;
    let (s, user) = me(&app, &alice).await;
    assert_eq!(s, 200, "{user}");
    let id: i64 = user["id"].as_i64().expect("id");
    let owner = gateway::realtime::SocketOwner::User(id);
    let mut socket = app.state.sockets.open(owner, 4).expect("socket");

    // Deactivation: the very next request is refused, and her socket told.
    app.state
        .db
        .set_user_active(id, false)
        .await
        .expect("deactivate");
    app.state.revoke_user(id);
    assert_eq!(me(&app, &alice).await.0, 401);
    let reason = tokio::time::timeout(std::time::Duration::from_secs(1), socket.closing())
        .await
        .expect("the open socket is closed");
    assert_eq!(reason, gateway::realtime::Closing::Revoked);

    // Reactivated, the old token stays dead (its generation is gone); a new
    // login works.
    app.state
        .db
        .set_user_active(id, true)
        .await
        .expect("activate");
    assert_eq!(me(&app, &alice).await.0, 401);
    let fresh = app.login("alice").await;
    assert_eq!(me(&app, &fresh).await.0, 200);

    // A token whose user no longer exists is a 401, never a 500.
    let ghost = gateway::domain::User {
        id: 999_999,
        org_id: app.state.default_org_id,
        username: Some("ghost".into()),
        email: "ghost@example.com".into(),
        full_name: None,
        role: gateway::domain::Role::Agent,
        is_active: true,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        last_login_at: None,
        token_generation: 0,
    };
    let token = app.state.tokens.issue(&ghost).expect("token");
    let (s, _) = app
        .call(Method::GET, "/v1/tickets", Some(&token), &[], None)
        .await;
    assert_eq!(s, 401);
}

/// A multipart body with one file and text fields.
fn multipart(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "xYzZY-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn files_attach_only_to_their_senders_messages() {
    let app = App::start("").await;
    let alice = app.customer("alice").await;
    let agent = app.agent("agnes").await;
    let (s, session) = app
        .call(
            Method::POST,
            "/api/chat/sessions",
            Some(&alice),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{session}");
    let sid = session["id"].as_str().expect("id").to_owned();
    let (s, theirs) = app
        .call(
            Method::POST,
            &format!("/api/chat/sessions/{sid}/messages"),
            Some(&agent),
            &[],
            Some(json!({ "content": "Here is your invoice" })),
        )
        .await;
    assert_eq!(s, 200, "{theirs}");
    let (s, mine) = app
        .call(
            Method::POST,
            &format!("/api/chat/sessions/{sid}/messages"),
            Some(&alice),
            &[],
            Some(json!({ "content": "Thanks, one more thing" })),
        )
        .await;
    assert_eq!(s, 200, "{mine}");
    let upload = |token: String, message: String| {
        let (content_type, body) = multipart(
            &[("sessionId", &sid), ("messageId", &message)],
            b"plain notes",
        );
        let app = &app;
        async move {
            app.raw(
                Method::POST,
                "/api/chat/files",
                Some(&token),
                &content_type,
                body,
            )
            .await
        }
    };
    let their_id = theirs["id"].as_str().expect("id").to_owned();
    let my_id = mine["id"].as_str().expect("id").to_owned();
    assert_eq!(upload(alice.clone(), their_id.clone()).await.0, 403);
    assert_eq!(upload(agent.clone(), my_id.clone()).await.0, 403);
    assert_eq!(upload(alice.clone(), my_id).await.0, 200);
    assert_eq!(upload(agent.clone(), their_id).await.0, 200);
}

#[tokio::test]
async fn uploads_past_the_budget_wait_their_turn() {
    let app = App::start("").await;
    let alice = app.customer("alice").await;
    let (_, session) = app
        .call(
            Method::POST,
            "/api/chat/sessions",
            Some(&alice),
            &[],
            Some(json!({})),
        )
        .await;
    let sid = session["id"].as_str().expect("id").to_owned();
    let big = "b".repeat(200 * 1024);
    let spent = app
        .state
        .uploads
        .take(usize::MAX)
        .expect("the whole budget");
    let body = json!({ "sessionId": sid, "content": big });
    let (s, e) = app
        .call(
            Method::POST,
            "/api/chat/messages",
            Some(&alice),
            &[],
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 503, "{e}");
    // Small bodies never wait on it.
    let (s, _) = app
        .call(
            Method::POST,
            "/api/chat/messages",
            Some(&alice),
            &[],
            Some(json!({ "sessionId": sid, "content": "hi" })),
        )
        .await;
    assert_eq!(s, 200);
    drop(spent);
    let (s, e) = app
        .call(
            Method::POST,
            "/api/chat/messages",
            Some(&alice),
            &[],
            Some(body),
        )
        .await;
    assert_ne!(s, 503, "{e}");
}

#[tokio::test]
async fn nul_characters_pages_and_id_spellings_are_validated() {
    let app = App::start("").await;
    let alice = app.customer("alice").await;

    // 002's login is unauthenticated: a NUL there must not reach the
    // database either.
    let (s, e) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            &[],
            Some(json!({ "username": "ali\u{0}ce", "password": "x" })),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    let (s, e) = app
        .call(
            Method::GET,
            "/api/chat/sessions?search=a%00b",
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = app
        .call(
            Method::GET,
            "/v1/tickets?page=9223372036854775807",
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!((s, e["detail"].is_string()), (400, true), "{e}");
    let (s, e) = app
        .call(
            Method::GET,
            "/api/chat/sessions?page=9223372036854775807",
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!(s, 400, "{e}");

    let (_, session) = app
        .call(
            Method::POST,
            "/api/chat/sessions",
            Some(&alice),
            &[],
            Some(json!({})),
        )
        .await;
    let sid = session["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/api/chat/sessions/{sid}"),
            Some(&alice),
            &[],
            None
        )
        .await
        .0,
        200
    );
    // A repeated query key is refused in the dialect's shape: 002's 422
    // with the place of the problem.
    let (s, e) = app
        .call(
            Method::GET,
            "/api/v1/chat/conversations?skip=1&skip=2",
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!((s, &e["detail"][0]["loc"]), (422, &json!(["query"])), "{e}");
    let (s, e) = app
        .call(
            Method::GET,
            "/v1/tickets?page=1&page=2",
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!((s, e["detail"].is_string()), (400, true), "{e}");

    for other in [format!("0{sid}"), format!("+{sid}"), format!("%20{sid}")] {
        let (s, _) = app
            .call(
                Method::GET,
                &format!("/api/chat/sessions/{other}"),
                Some(&alice),
                &[],
                None,
            )
            .await;
        assert_eq!(s, 404, "{other}");
    }
}

#[tokio::test]
async fn staff_see_which_messages_are_internal_notes() {
    let app = App::start("").await;
    let alice = app.customer("alice").await;
    let agent = app.agent("agnes").await;
    let (_, t) = app
        .call(
            Method::POST,
            "/v1/tickets",
            Some(&alice),
            &[],
            Some(json!({ "title": "Broken lamp" })),
        )
        .await;
    let tid = t["id"].as_str().expect("id").to_owned();
    let sid = t["session_id"].as_str().expect("session").to_owned();
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/v1/tickets/{tid}/messages"),
            Some(&agent),
            &[],
            Some(json!({ "content": "Customer sounds upset", "is_internal": true })),
        )
        .await;
    assert_eq!(s, 200);
    let list = |token: String| {
        let app = &app;
        let path = format!("/api/chat/sessions/{sid}/messages");
        async move {
            app.call(Method::GET, &path, Some(&token), &[], None)
                .await
                .1
        }
    };
    let staff = list(agent).await;
    let note = staff["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["content"] == "Customer sounds upset")
        .cloned()
        .expect("the note");
    assert_eq!(note["isInternal"], true);
    let customer = list(alice).await;
    assert!(
        customer["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .all(|m| m["isInternal"] == false),
        "{customer}"
    );
}

#[tokio::test]
async fn plugin_counters_are_the_operators_only() {
    let app = App::start("").await;
    let acme = app.state.db.ensure_org("acme", "Acme").await.expect("org");
    let operator = app.admin("root", app.state.default_org_id).await;
    let tenant = app.admin("acme-admin", acme.id).await;
    let (s, mine) = app
        .call(
            Method::GET,
            "/api/gateway/plugins",
            Some(&operator),
            &[],
            None,
        )
        .await;
    assert_eq!(s, 200, "{mine}");
    assert!(mine["plugins"][0]["calls"].is_u64(), "{mine}");
    let (s, theirs) = app
        .call(
            Method::GET,
            "/api/gateway/plugins",
            Some(&tenant),
            &[],
            None,
        )
        .await;
    assert_eq!(s, 200, "{theirs}");
    assert!(theirs["plugins"][0].get("calls").is_none(), "{theirs}");
    assert!(
        theirs["plugins"][0].get("last_failure").is_none(),
        "{theirs}"
    );
}
