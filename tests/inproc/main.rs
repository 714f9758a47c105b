//! In-process tests: the whole router over a real SQLite file in a
//! temporary directory, driven with `tower::ServiceExt::oneshot`, and the
//! event bus read directly. No child process, no port: fast enough for
//! every rule of the conversation core. See tests/README.md for adding one.

use axum::body::Body;
use axum::http::{Method, Request};
use gateway::events::{Event, Transition};
use gateway::realtime::Topic;
use gateway::server::AppState;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

mod hardening;

/// A gateway in this process: its state and its router.
struct App {
    state: AppState,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl App {
    /// The default config on a fresh data dir (SQLite), plus `toml`.
    async fn start(toml: &str) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = std::collections::HashMap::new();
        env.insert(
            "GATEWAY_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        );
        env.insert("GATEWAY_RATE_LIMITS".to_owned(), "off".to_owned());
        let config = gateway::config::Config::from_toml(toml, None, &env).expect("config");
        let state = AppState::build(config).await.expect("state");
        App {
            router: gateway::api::app(state.clone()),
            state,
            _dir: dir,
        }
    }

    /// Sends one request; answers the status and the JSON body (or the
    /// text as a JSON string).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = match body {
            Some(b) => request
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        self.send(request).await
    }

    /// Sends a built request; answers the status and the JSON body (or the
    /// text as a JSON string).
    async fn send(&self, request: Request<Body>) -> (u16, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a body of `content_type` as it is; answers like [`App::call`].
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        self.send(request.body(Body::from(body)).expect("request"))
            .await
    }

    /// Registers `username` as a customer and answers its token.
    async fn customer(&self, username: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/auth/register",
                None,
                &[],
                Some(json!({ "username": username, "email": format!("{username}@example.com"), "password": "correct horse battery" })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        self.login(username).await
    }

    /// Creates `username` as an agent of the default organization.
    async fn agent(&self, username: &str) -> String {
        self.staff(
            username,
            self.state.default_org_id,
            gateway::domain::Role::Agent,
        )
        .await
    }

    /// Creates `username` as an admin of organization `org`.
    async fn admin(&self, username: &str, org: i64) -> String {
        self.staff(username, org, gateway::domain::Role::Admin)
            .await
    }

    async fn staff(&self, username: &str, org: i64, role: gateway::domain::Role) -> String {
        let hash = self
            .state
            .passwords
            .hash("correct horse battery".into())
            .await
            .expect("hash");
        self.state
            .db
            .create_user(&gateway::domain::NewUser {
                org_id: org,
                username: Some(username.to_owned()),
                email: format!("{username}@example.com"),
                full_name: None,
                password_hash: hash,
                role,
            })
            .await
            .expect("agent");
        self.login(username).await
    }

    async fn login(&self, username: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                &[],
                Some(json!({ "username": username, "password": "correct horse battery" })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().expect("token").to_owned()
    }
}

/// The names of the events waiting on `rx`.
fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<gateway::realtime::Delivery>>,
) -> Vec<String> {
    let mut names = Vec::new();
    while let Ok(d) = rx.try_recv() {
        let name = match &d.event {
            Event::HandoverChanged { transition, .. } => {
                format!("handover.{}", transition.as_str())
            }
            Event::MessageCreated { message, .. } => format!(
                "message.created:{}{}",
                message.sender_kind.as_str(),
                if message.is_internal { ":internal" } else { "" }
            ),
            other => other.name().to_owned(),
        };
        names.push(name);
    }
    names
}

#[tokio::test]
async fn every_entry_point_posts_through_one_set_of_rules() {
    let app = App::start("").await;
    let alice = app.customer("alice").await;
    let agent = app.agent("agnes").await;

    // A ticket for Alice; its conversation is what every dialect writes to.
    let (s, t) = app
        .call(
            Method::POST,
            "/v1/tickets",
            Some(&alice),
            &[],
            Some(json!({ "title": "Lost parcel" })),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let tid = t["id"].as_str().expect("id").to_owned();
    let conversation: i64 = t["session_id"]
        .as_str()
        .expect("session")
        .parse()
        .expect("id");
    let mut events = app.state.bus.subscribe(Topic::Conversation(conversation));

    // A customer may not write an internal note, on 004 as anywhere.
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/v1/tickets/{tid}/messages"),
            Some(&alice),
            &[],
            Some(json!({ "content": "psst", "is_internal": true })),
        )
        .await;
    assert_eq!(s, 403);

    // The customer's message through 001 gets the assistant's turn (no
    // knowledge: it hands over), published as events that name it.
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/api/chat/sessions/{conversation}/messages"),
            Some(&alice),
            &[],
            Some(json!({ "content": "Where is my parcel?" })),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        drain(&mut events),
        [
            "message.created:customer",
            "message.created:system",
            "handover.requested"
        ]
    );

    // An internal note takes nothing over; a public ticket reply does.
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/v1/tickets/{tid}/messages"),
            Some(&agent),
            &[],
            Some(json!({ "content": "carrier says lost", "is_internal": true })),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/v1/tickets/{tid}/messages"),
            Some(&agent),
            &[],
            Some(json!({ "content": "We are sending a new one." })),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        drain(&mut events),
        [
            "message.created:agent:internal",
            "message.created:agent",
            "handover.taken_over"
        ]
    );
    let c = app
        .state
        .db
        .conversation(conversation)
        .await
        .expect("db")
        .expect("c");
    assert_eq!(c.handling, gateway::domain::conversation::Handling::Agent);

    // A taken-over conversation is not taken over again: no event.
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/api/chat/sessions/{conversation}/messages"),
            Some(&agent),
            &[],
            Some(json!({ "content": "Anything else?" })),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(drain(&mut events), ["message.created:agent"]);

    // Idempotency-Key: the same rule on 001 and 004.
    for path in [
        format!("/api/chat/sessions/{conversation}/messages"),
        format!("/v1/tickets/{tid}/messages"),
    ] {
        let long = "k".repeat(201);
        for bad in ["   ", long.as_str()] {
            let (s, v) = app
                .call(
                    Method::POST,
                    &path,
                    Some(&alice),
                    &[("idempotency-key", bad)],
                    Some(json!({ "content": "x" })),
                )
                .await;
            assert_eq!(s, 400, "{path} {bad:?}: {v}");
        }
        let key = [("idempotency-key", "retry-1")];
        let (_, first) = app
            .call(
                Method::POST,
                &path,
                Some(&alice),
                &key,
                Some(json!({ "content": "once" })),
            )
            .await;
        let (_, again) = app
            .call(
                Method::POST,
                &path,
                Some(&alice),
                &key,
                Some(json!({ "content": "once" })),
            )
            .await;
        assert_eq!(first["id"], again["id"], "{path}");
    }

    // Closed: every entry point refuses.
    let (s, _) = app
        .call(
            Method::PUT,
            &format!("/api/chat/sessions/{conversation}/close"),
            Some(&agent),
            &[],
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        drain(&mut events).last().map(String::as_str),
        Some("conversation.closed")
    );
    for (path, body) in [
        (
            format!("/api/chat/sessions/{conversation}/messages"),
            json!({ "content": "x" }),
        ),
        (
            "/api/chat/messages".to_owned(),
            json!({ "sessionId": conversation.to_string(), "content": "x" }),
        ),
        (
            format!("/v1/tickets/{tid}/messages"),
            json!({ "content": "x" }),
        ),
        (
            "/api/core/messages".to_owned(),
            json!({ "message": { "text": "x" }, "sessionId": conversation.to_string() }),
        ),
    ] {
        let (s, v) = app
            .call(Method::POST, &path, Some(&alice), &[], Some(body))
            .await;
        assert_eq!(s, 409, "{path}: {v}");
    }
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/chat/chat",
            Some(&alice),
            &[],
            Some(json!({ "message": "x", "conversation_id": conversation })),
        )
        .await;
    assert!(s == 400 || s == 409, "{s} {v}");
}

#[tokio::test]
async fn handover_transitions_are_guarded() {
    let app = App::start("").await;
    let alice = app.customer("alice").await;
    let agent = app.agent("agnes").await;
    let (_, session) = app
        .call(
            Method::POST,
            "/api/chat/sessions",
            Some(&alice),
            &[],
            Some(json!({})),
        )
        .await;
    let id = session["id"].as_str().expect("id").to_owned();
    let mut events = app
        .state
        .bus
        .subscribe(Topic::Conversation(id.parse().expect("id")));
    // Handing back a conversation the assistant has is no transition.
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/gateway/conversations/{id}/handback"),
            Some(&agent),
            &[],
            None,
        )
        .await;
    assert_eq!((s, v["handling"].as_str()), (200, Some("ai")), "{v}");
    assert!(drain(&mut events).is_empty());
    for (action, handling, event) in [
        ("takeover", "agent", "handover.taken_over"),
        ("takeover", "agent", ""),
        ("handback", "ai", "handover.handed_back"),
    ] {
        let (s, v) = app
            .call(
                Method::POST,
                &format!("/api/gateway/conversations/{id}/{action}"),
                Some(&agent),
                &[],
                None,
            )
            .await;
        assert_eq!((s, v["handling"].as_str()), (200, Some(handling)), "{v}");
        let seen = drain(&mut events);
        if event.is_empty() {
            assert!(seen.is_empty(), "{seen:?}");
        } else {
            assert_eq!(seen, [event]);
        }
    }
    // Customers may not move it.
    let (s, _) = app
        .call(
            Method::POST,
            &format!("/api/gateway/conversations/{id}/takeover"),
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(Transition::TakenOver.to().as_str(), "agent");
}

#[tokio::test]
async fn the_search_index_status_is_real() {
    let app = App::start("").await;
    let (s, v) = app
        .call(Method::GET, "/api/core/health", None, &[], None)
        .await;
    assert_eq!(
        (s, &v["dependencies"]["search_index"]),
        (200, &json!("healthy")),
        "{v}"
    );
}

#[tokio::test]
async fn channel_messages_dedupe_and_delivery_reports_only_move_forward() {
    use gateway::domain::conversation::{ChannelMeta, Delivery};
    use gateway::service::conversations::{self, Answer, Author, Post};
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
    let id: i64 = session["id"].as_str().expect("id").parse().expect("id");
    let c = app.state.db.conversation(id).await.expect("db").expect("c");
    let mut events = app.state.bus.subscribe(Topic::Conversation(id));
    let reply = || Post {
        channel: ChannelMeta {
            entry: Some("whatsapp".into()),
            provider_message_id: Some("wamid.HBgL1".into()),
            ..Default::default()
        },
        delivery: Some(Delivery::Pending),
        ..Post::text(Author::Staff { user_id: None }, "On its way".into())
    };
    let first = conversations::post(app.state.core(), &c, reply(), Answer::BestEffort)
        .await
        .expect("post");
    let again = conversations::post(app.state.core(), &c, reply(), Answer::BestEffort)
        .await
        .expect("redelivery");
    assert!(first.created && !again.created);
    assert_eq!(first.message.id, again.message.id);
    assert_eq!(first.message.delivery, Some(Delivery::Pending));
    drain(&mut events);

    let report = |d, error| {
        conversations::delivery_report(app.state.core(), "whatsapp", "wamid.HBgL1", d, error)
    };
    let read = report(Delivery::Read, None)
        .await
        .expect("read")
        .expect("moved");
    assert_eq!(read.delivery, Some(Delivery::Read));
    // Late or impossible reports change nothing and publish nothing.
    assert!(
        report(Delivery::Delivered, None)
            .await
            .expect("late")
            .is_none()
    );
    assert!(
        report(Delivery::Failed, Some("131047"))
            .await
            .expect("late")
            .is_none()
    );
    assert!(
        conversations::delivery_report(
            app.state.core(),
            "whatsapp",
            "wamid.other",
            Delivery::Sent,
            None
        )
        .await
        .expect("unknown")
        .is_none()
    );
    assert_eq!(drain(&mut events), ["message.delivery"]);
}
