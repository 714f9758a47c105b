//! 000 and 001 chat sessions and messages through the running gateway:
//! the union of both documents' fields, the 409 rules, pagination,
//! idempotent sends and the authorization matrix (customer A, customer B,
//! an agent, another organization's admin).

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Gateway, databases};

pub struct Cast {
    pub alice: String,
    pub bob: String,
    pub agent: String,
    pub agent_id: String,
    pub outsider: String,
}

pub async fn cast(gw: &Gateway) -> Cast {
    let alice = gw.register_and_login("alice").await;
    let bob = gw.register_and_login("bob").await;
    let (code, agent_id, err) = gw.cli(&[
        "user",
        "create",
        "--username",
        "agnes",
        "--email",
        "agnes@example.com",
        "--password",
        "correct horse battery",
        "--role",
        "agent",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = gw.cli(&[
        "user",
        "create",
        "--username",
        "olga",
        "--email",
        "olga@other.example",
        "--password",
        "correct horse battery",
        "--role",
        "admin",
        "--org",
        "other",
    ]);
    assert_eq!(code, 0, "{err}");
    Cast {
        alice,
        bob,
        agent: gw.login("agnes", "correct horse battery").await,
        agent_id: agent_id.trim().to_owned(),
        outsider: gw.login("olga", "correct horse battery").await,
    }
}

pub async fn call(
    gw: &Gateway,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = gw.http.request(method, gw.url(path)).bearer_auth(token);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn sessions_and_messages_in_both_dialects() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;

        // 001's create, with 000's tenantId (the organization's id).
        let (status, me) = call(&gw, &c.alice, Method::GET, "/api/v1/auth/me", None).await;
        assert_eq!(status, 200);
        let (status, s) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/sessions",
            Some(json!({ "subject": "Refund", "priority": "high", "tags": ["billing"] })),
        )
        .await;
        assert_eq!(status, 200, "{kind:?} {s}");
        assert!(
            s["id"].is_string()
                && s["tenantId"].is_string()
                && s["userId"].as_str().and_then(|u| u.parse::<i64>().ok()) == me["id"].as_i64()
        );
        assert_eq!(
            (s["status"].as_str(), s["priority"].as_str()),
            (Some("active"), Some("high"))
        );
        assert_eq!(s["agentId"], Value::Null);
        assert_eq!(s["endedAt"], Value::Null);
        assert_eq!(s["tags"], json!(["billing"]));
        for field in ["startedAt", "createdAt", "updatedAt"] {
            assert!(
                s[field].as_str().is_some_and(|t| t.ends_with('Z')),
                "{field}: {s}"
            );
        }
        let id = s["id"].as_str().expect("id").to_owned();
        let tenant = s["tenantId"].as_str().expect("tenant").to_owned();
        let (status, s2) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/sessions",
            Some(json!({ "tenantId": tenant })),
        )
        .await;
        assert_eq!(
            (status, s2["priority"].as_str()),
            (200, Some("medium")),
            "{s2}"
        );
        let (status, e) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/sessions",
            Some(json!({ "tenantId": "999999" })),
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{e}"
        );
        let (status, e) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/sessions",
            Some(json!({ "priority": "urgent" })),
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("validation_error")),
            "{e}"
        );

        // Who sees it.
        let path = format!("/api/chat/sessions/{id}");
        assert_eq!(call(&gw, &c.alice, Method::GET, &path, None).await.0, 200);
        assert_eq!(call(&gw, &c.agent, Method::GET, &path, None).await.0, 200);
        for (who, token) in [("bob", &c.bob), ("outsider", &c.outsider)] {
            let (status, e) = call(&gw, token, Method::GET, &path, None).await;
            assert_eq!(
                (status, e["error"]["code"].as_str()),
                (404, Some("not_found")),
                "{who}: {e}"
            );
        }
        assert_eq!(
            call(&gw, &c.alice, Method::GET, "/api/chat/sessions/abc", None)
                .await
                .0,
            404
        );

        // Lists: own, organization's, none; status filter; pages.
        let (_, list) = call(&gw, &c.alice, Method::GET, "/api/chat/sessions", None).await;
        assert_eq!(list["totalCount"], 2, "{list}");
        let (_, list) = call(&gw, &c.bob, Method::GET, "/api/chat/sessions", None).await;
        assert_eq!(list["totalCount"], 0);
        let (_, list) = call(&gw, &c.outsider, Method::GET, "/api/chat/sessions", None).await;
        assert_eq!(list["totalCount"], 0);
        let (_, list) = call(
            &gw,
            &c.agent,
            Method::GET,
            "/api/chat/sessions?page=2&limit=1",
            None,
        )
        .await;
        assert_eq!(
            (
                list["totalCount"].as_i64(),
                list["page"].as_i64(),
                list["totalPages"].as_i64()
            ),
            (Some(2), Some(2), Some(2))
        );
        assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1));
        let (status, _) = call(
            &gw,
            &c.agent,
            Method::GET,
            "/api/chat/sessions?page=zero",
            None,
        )
        .await;
        assert_eq!(status, 400);

        // Messages: 001's route and 000's, and both field sets back.
        let mpath = format!("/api/chat/sessions/{id}/messages");
        let (status, m) = call(
            &gw,
            &c.alice,
            Method::POST,
            &mpath,
            Some(json!({ "content": "Where is my refund?" })),
        )
        .await;
        assert_eq!(status, 200, "{m}");
        assert_eq!(
            (m["role"].as_str(), m["sender"].as_str()),
            (Some("user"), Some("user"))
        );
        assert_eq!(
            (m["read"].as_bool(), m["status"].as_str()),
            (Some(false), Some("sent"))
        );
        assert!(m["createdAt"].is_string() && m["timestamp"] == m["createdAt"]);
        let (status, m) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/api/chat/messages",
            Some(json!({ "sessionId": id, "content": "It is on its way." })),
        )
        .await;
        assert_eq!(
            (status, m["role"].as_str(), m["sender"].as_str()),
            (200, Some("assistant"), Some("support")),
            "{m}"
        );
        let (status, e) = call(
            &gw,
            &c.bob,
            Method::POST,
            &mpath,
            Some(json!({ "content": "hi" })),
        )
        .await;
        assert_eq!(status, 404, "{e}");
        let (status, e) = call(
            &gw,
            &c.alice,
            Method::POST,
            &mpath,
            Some(json!({ "content": "   " })),
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("validation_error")),
            "{e}"
        );
        for i in 0..3 {
            call(
                &gw,
                &c.alice,
                Method::POST,
                &mpath,
                Some(json!({ "content": format!("more {i}") })),
            )
            .await;
        }
        let (_, page) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("{mpath}?limit=2"),
            None,
        )
        .await;
        // Alice's first message got the assistant's handover notice (it
        // knows nothing); after the agent's reply it stays silent.
        assert_eq!(
            (page["totalCount"].as_i64(), page["hasMore"].as_bool()),
            (Some(6), Some(true)),
            "{page}"
        );
        let texts: Vec<&str> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        assert_eq!(texts, ["more 1", "more 2"]);
        let oldest = page["messages"][0]["id"].as_str().expect("id");
        let (_, page) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("{mpath}?limit=10&before={oldest}"),
            None,
        )
        .await;
        assert_eq!(page["hasMore"], false);
        assert_eq!(page["messages"].as_array().map(Vec::len), Some(4));
        assert_eq!(page["messages"][0]["content"], "Where is my refund?");
        assert_eq!(page["messages"][1]["senderType"], "system");

        // Assign: staff only, once, not when closed.
        let apath = format!("/api/chat/sessions/{id}/assign");
        let (status, _) = call(
            &gw,
            &c.alice,
            Method::PUT,
            &apath,
            Some(json!({ "agentId": c.agent_id })),
        )
        .await;
        assert_eq!(status, 403);
        let (status, e) = call(&gw, &c.agent, Method::PUT, &apath, Some(json!({}))).await;
        assert_eq!(status, 400, "{e}");
        let (status, _) = call(
            &gw,
            &c.agent,
            Method::PUT,
            &apath,
            Some(json!({ "agentId": "999999" })),
        )
        .await;
        assert_eq!(status, 404);
        let (status, s) = call(
            &gw,
            &c.agent,
            Method::PUT,
            &apath,
            Some(json!({ "agentId": c.agent_id })),
        )
        .await;
        assert_eq!(
            (status, s["agentId"].as_str()),
            (200, Some(c.agent_id.as_str())),
            "{s}"
        );
        let (status, _) = call(
            &gw,
            &c.agent,
            Method::PUT,
            &apath,
            Some(json!({ "agentId": c.agent_id })),
        )
        .await;
        assert_eq!(status, 409);

        // Close: once; then nothing more is posted.
        let cpath = format!("/api/chat/sessions/{id}/close");
        let (status, s) = call(&gw, &c.alice, Method::PUT, &cpath, None).await;
        assert_eq!((status, s["status"].as_str()), (200, Some("closed")), "{s}");
        assert!(s["endedAt"].is_string());
        let (status, e) = call(&gw, &c.alice, Method::PUT, &cpath, None).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (409, Some("conflict")),
            "{e}"
        );
        let (status, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            &mpath,
            Some(json!({ "content": "hello?" })),
        )
        .await;
        assert_eq!(status, 409);
        let (_, list) = call(
            &gw,
            &c.alice,
            Method::GET,
            "/api/chat/sessions?status=closed",
            None,
        )
        .await;
        assert_eq!(list["totalCount"], 1);

        // 000's status words and delete.
        let other = s2["id"].as_str().expect("id");
        let (status, changed) = call(
            &gw,
            &c.alice,
            Method::PATCH,
            &format!("/api/chat/sessions/{other}"),
            Some(json!({ "status": "resolved" })),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (changed["id"].as_str(), changed["status"].as_str()),
            (Some(other), Some("resolved"))
        );
        assert!(changed["updatedAt"].is_string());
        let (status, _) = call(
            &gw,
            &c.alice,
            Method::PATCH,
            &format!("/api/chat/sessions/{other}"),
            Some(json!({ "status": "gone" })),
        )
        .await;
        assert_eq!(status, 400);
        let (status, _) = call(
            &gw,
            &c.bob,
            Method::DELETE,
            &format!("/api/chat/sessions/{other}"),
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (status, done) = call(
            &gw,
            &c.alice,
            Method::DELETE,
            &format!("/api/chat/sessions/{other}"),
            None,
        )
        .await;
        assert_eq!((status, done), (200, json!({ "success": true })));
        assert_eq!(
            call(
                &gw,
                &c.alice,
                Method::GET,
                &format!("/api/chat/sessions/{other}"),
                None
            )
            .await
            .0,
            404
        );
    }
}

#[tokio::test]
async fn a_retried_send_creates_one_message() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let token = gw.register_and_login("retrier").await;
        let (_, s) = call(
            &gw,
            &token,
            Method::POST,
            "/api/chat/sessions",
            Some(json!({})),
        )
        .await;
        let path = format!(
            "/api/chat/sessions/{}/messages",
            s["id"].as_str().expect("id")
        );
        let send = || {
            gw.http
                .post(gw.url(&path))
                .bearer_auth(&token)
                .header("Idempotency-Key", "3f2a-retry-1")
                .json(&json!({ "content": "Only once, please" }))
                .send()
        };
        let first: Value = send().await.expect("send").json().await.expect("json");
        let again: Value = send().await.expect("send").json().await.expect("json");
        assert_eq!(first["id"], again["id"], "{kind:?}");
        let (_, page) = call(&gw, &token, Method::GET, &path, None).await;
        // One message, and the assistant's handover notice (it knows nothing).
        assert_eq!(page["totalCount"], 2, "{kind:?}: {page}");
        assert_eq!(page["messages"][1]["senderType"], "system", "{page}");
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws/chat/{id}` with a bearer header, or with `?token=`.
async fn connect(gw: &Gateway, id: &str, token: &str, in_query: bool) -> Result<Socket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let base = gw.base.replace("http://", "ws://");
    let url = if in_query {
        format!("{base}/ws/chat/{id}?token={token}")
    } else {
        format!("{base}/ws/chat/{id}")
    };
    let mut request = url.into_client_request().expect("request");
    if !in_query && !token.is_empty() {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("connect: {e}"),
    }
}

/// The next JSON event, skipping pings.
pub async fn next_event(socket: &mut Socket) -> Value {
    use futures_util::StreamExt as _;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("an event within 5 s")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("json event");
        }
    }
}

#[tokio::test]
async fn websocket_clients_get_every_event_in_order() {
    let gw = Gateway::start(databases()[0]).await;
    let c = cast(&gw).await;
    let (_, s) = call(
        &gw,
        &c.alice,
        Method::POST,
        "/api/chat/sessions",
        Some(json!({ "subject": "Live" })),
    )
    .await;
    let id = s["id"].as_str().expect("id").to_owned();

    // Who may listen.
    assert_eq!(connect(&gw, &id, "", false).await.err(), Some(401));
    assert_eq!(connect(&gw, &id, &c.bob, false).await.err(), Some(404));
    assert_eq!(connect(&gw, &id, &c.outsider, true).await.err(), Some(404));
    assert_eq!(
        connect(&gw, &id, "not-a-token", true).await.err(),
        Some(401)
    );
    let mut sockets = vec![
        connect(&gw, &id, &c.alice, false)
            .await
            .expect("alice by header"),
        connect(&gw, &id, &c.alice, true)
            .await
            .expect("alice by query"),
        connect(&gw, &id, &c.agent, false).await.expect("agent"),
    ];

    let mpath = format!("/api/chat/sessions/{id}/messages");
    for i in 0..20 {
        let (status, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            &mpath,
            Some(json!({ "content": format!("m{i}") })),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = call(
        &gw,
        &c.agent,
        Method::POST,
        &format!("/api/chat/sessions/{id}/typing"),
        Some(json!({ "isTyping": true })),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &gw,
        &c.alice,
        Method::PUT,
        &format!("/api/chat/sessions/{id}/close"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    for socket in &mut sockets {
        for i in 0..20 {
            let e = next_event(socket).await;
            assert_eq!(e["type"], "message", "{e}");
            assert_eq!(e["data"]["content"], format!("m{i}"));
            assert_eq!(e["data"]["sender"], "user");
            if i == 0 {
                // The assistant knows nothing: it hands over, once.
                let e = next_event(socket).await;
                assert_eq!(
                    (e["type"].as_str(), e["data"]["senderType"].as_str()),
                    (Some("message"), Some("system")),
                    "{e}"
                );
                let e = next_event(socket).await;
                assert_eq!(
                    (e["type"].as_str(), e["data"]["transition"].as_str()),
                    (Some("handover"), Some("requested")),
                    "{e}"
                );
            }
        }
        let e = next_event(socket).await;
        assert_eq!(
            (e["type"].as_str(), e["data"]["isTyping"].as_bool()),
            (Some("typing"), Some(true)),
            "{e}"
        );
        assert_eq!(e["data"]["userId"], c.agent_id);
        let e = next_event(socket).await;
        assert_eq!(
            (e["type"].as_str(), e["data"]["status"].as_str()),
            (Some("session_update"), Some("closed")),
            "{e}"
        );
    }

    // Typing needs a boolean.
    let (status, _) = call(
        &gw,
        &c.agent,
        Method::POST,
        &format!("/api/chat/sessions/{id}/typing"),
        Some(json!({ "isTyping": "yes" })),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn read_receipts_and_stats() {
    let gw = Gateway::start(databases()[0]).await;
    let c = cast(&gw).await;
    let (_, s) = call(
        &gw,
        &c.alice,
        Method::POST,
        "/api/chat/sessions",
        Some(json!({})),
    )
    .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let mpath = format!("/api/chat/sessions/{id}/messages");
    // The agent writes first: the conversation is theirs, the assistant
    // stays out of it.
    let (s, _) = call(
        &gw,
        &c.agent,
        Method::POST,
        &mpath,
        Some(json!({ "content": "Welcome! I'm Agnes." })),
    )
    .await;
    assert_eq!(s, 200);
    let (_, question) = call(
        &gw,
        &c.alice,
        Method::POST,
        &mpath,
        Some(json!({ "content": "Hello?" })),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (_, answer) = call(
        &gw,
        &c.agent,
        Method::POST,
        &mpath,
        Some(json!({ "content": "Hi!" })),
    )
    .await;

    // Alice marks both: only the agent's is hers to mark read.
    let ids = json!({ "messageIds": [question["id"], answer["id"]] });
    let (status, _) = call(
        &gw,
        &c.alice,
        Method::PUT,
        &format!("/api/chat/sessions/{id}/read"),
        Some(ids),
    )
    .await;
    assert_eq!(status, 204);
    let (_, page) = call(&gw, &c.agent, Method::GET, &mpath, None).await;
    let read: Vec<(bool, &str)> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["read"].as_bool().unwrap_or_default(),
                m["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(read, [(false, "sent"), (false, "sent"), (true, "read")]);
    let (status, _) = call(
        &gw,
        &c.bob,
        Method::PUT,
        &format!("/api/chat/sessions/{id}/read"),
        Some(json!({ "messageIds": [] })),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &gw,
        &c.alice,
        Method::PUT,
        &format!("/api/chat/sessions/{id}/read"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);

    let (status, _) = call(&gw, &c.alice, Method::GET, "/api/chat/stats", None).await;
    assert_eq!(status, 403);
    let (status, stats) = call(&gw, &c.agent, Method::GET, "/api/chat/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (
            stats["totalSessions"].as_i64(),
            stats["activeSessions"].as_i64(),
            stats["messagesExchanged"].as_i64()
        ),
        (Some(1), Some(1), Some(3))
    );
    // About 1.2 s, in minutes.
    let minutes = stats["averageResponseTime"].as_f64().expect("number");
    assert!((0.01..=0.05).contains(&minutes), "{stats}");
    let (_, other) = call(&gw, &c.outsider, Method::GET, "/api/chat/stats", None).await;
    assert_eq!(other["totalSessions"], 0);
}
