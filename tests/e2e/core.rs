//! The conversation core through every entry point: the assistant answers a
//! customer whichever dialect they write through; an agent's reply through
//! any API silences it everywhere until hand-back; the events reach every
//! socket with the right names; and the fixes found by trying the API as
//! its clients would.

use reqwest::Method;
use serde_json::{Value, json};

use crate::assistant::seed;
use crate::chat::{Socket, call, cast, next_event};
use crate::common::{Gateway, Options, databases};

const QUESTION: &str = "How many days do I have to return an item?";
const ANSWERED: &str = "30 days";

/// `/ws` (003) for `token` with `query`.
async fn platform_socket(gw: &Gateway, token: &str, query: &str) -> Socket {
    let url = format!(
        "{}/ws?token={token}&{query}",
        gw.base.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn socket_at(gw: &Gateway, path: &str, token: &str) -> Socket {
    let url = format!(
        "{}{path}?token={token}",
        gw.base.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send_text(socket: &mut Socket, frame: Value) {
    use futures_util::SinkExt as _;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            frame.to_string().into(),
        ))
        .await
        .expect("send");
}

/// Events until one of type `kind` (by `type`), returning it; fails after
/// 20 events or 5 s without one.
async fn until(socket: &mut Socket, kind: &str) -> Value {
    for _ in 0..20 {
        let e = next_event(socket).await;
        if e["type"] == kind {
            return e;
        }
    }
    panic!("no {kind} event");
}

/// A 000/001 session's messages.
async fn history(gw: &Gateway, token: &str, session: &str) -> Vec<Value> {
    let (s, v) = call(
        gw,
        token,
        Method::GET,
        &format!("/api/chat/sessions/{session}/messages?limit=100"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["messages"].as_array().expect("messages").clone()
}

async fn new_session(gw: &Gateway, token: &str) -> String {
    let (s, v) = call(
        gw,
        token,
        Method::POST,
        "/api/chat/sessions",
        Some(json!({ "subject": "Refund" })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["id"].as_str().expect("id").to_owned()
}

fn answered(messages: &[Value]) -> bool {
    messages.last().is_some_and(|m| {
        m["role"] == "assistant"
            && m["sender"] == "support"
            && m["senderType"] == "assistant"
            && m["content"].as_str().is_some_and(|t| t.contains(ANSWERED))
            && m["sources"].as_array().is_some_and(|s| !s.is_empty())
    })
}

#[tokio::test]
async fn every_entry_point_gets_the_assistant_and_agents_silence_it_everywhere() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;
        seed(&gw, &c.agent).await;

        // 000: the answer is in the history when the send returns.
        let s000 = new_session(&gw, &c.alice).await;
        let (s, m) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/messages",
            Some(json!({ "sessionId": s000, "content": QUESTION })),
        )
        .await;
        assert_eq!(
            (s, m["role"].as_str()),
            (200, Some("user")),
            "{kind:?}: {m}"
        );
        let h = history(&gw, &c.alice, &s000).await;
        assert_eq!(h.len(), 2, "{kind:?}: {h:?}");
        assert!(answered(&h), "{kind:?} 000: {h:?}");

        // 001, with the session's socket open: the customer's message and
        // the assistant's reply arrive as `message` events.
        let s001 = new_session(&gw, &c.alice).await;
        let mut chat_socket = socket_at(&gw, &format!("/ws/chat/{s001}"), &c.alice).await;
        let (s, m) = call(
            &gw,
            &c.alice,
            Method::POST,
            &format!("/api/chat/sessions/{s001}/messages"),
            Some(json!({ "content": QUESTION })),
        )
        .await;
        assert_eq!((s, m["sender"].as_str()), (200, Some("user")), "{m}");
        assert!(
            answered(&history(&gw, &c.alice, &s001).await),
            "{kind:?} 001"
        );
        let first = until(&mut chat_socket, "message").await;
        assert_eq!(first["data"]["senderType"], "customer", "{first}");
        let reply = until(&mut chat_socket, "message").await;
        assert_eq!(reply["data"]["senderType"], "assistant", "{reply}");

        // 002.
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/v1/chat/chat",
            Some(json!({ "message": QUESTION })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["response"].as_str().is_some_and(|t| t.contains(ANSWERED)),
            "{v}"
        );
        assert_eq!(v["handover"], false);

        // 003 REST.
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(json!({ "message": { "text": QUESTION }, "sessionId": "core-1" })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["response"]["text"]
                .as_str()
                .is_some_and(|t| t.contains(ANSWERED)),
            "{v}"
        );

        // /ws.
        let mut ws = platform_socket(&gw, &c.alice, "sessionId=ws-1").await;
        assert_eq!(next_event(&mut ws).await["type"], "connection_established");
        send_text(&mut ws, json!({ "type": "text", "text": QUESTION })).await;
        let m = until(&mut ws, "message").await;
        assert_eq!(m["sender"], "ai", "{m}");
        assert!(m["text"].as_str().is_some_and(|t| t.contains(ANSWERED)));

        // The staff feed and the ticket socket listen from here on.
        let mut staff = platform_socket(&gw, &c.agent, "").await;
        assert_eq!(
            next_event(&mut staff).await["type"],
            "connection_established"
        );

        // An agent answers through 001: the assistant is silent in that
        // conversation, whichever entry point the customer uses next.
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/api/chat/sessions/{s001}/messages"),
            Some(json!({ "content": "Hi, I'm Agnes; let me look at your refund." })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let agent_message = until(&mut chat_socket, "message").await;
        assert_eq!(agent_message["data"]["senderType"], "agent");
        let handover = until(&mut chat_socket, "handover").await;
        assert_eq!(handover["data"]["transition"], "taken_over", "{handover}");
        let taken = next_event(&mut staff).await;
        assert_eq!(taken["type"], "handover_taken_over", "{taken}");
        assert_eq!(taken["data"]["sessionId"], s001.as_str());
        // 001 and 000 again: nothing from the assistant.
        let (s, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/messages",
            Some(json!({ "sessionId": s001, "content": QUESTION })),
        )
        .await;
        assert_eq!(s, 200);
        let h = history(&gw, &c.alice, &s001).await;
        assert_eq!(h.last().expect("last")["senderType"], "customer", "{h:?}");
        // 002 and 003 on the same conversation: the passed-on notice.
        let numeric: i64 = s001.parse().expect("numeric id");
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/v1/chat/chat",
            Some(json!({ "message": QUESTION, "conversation_id": numeric })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["response"]
                .as_str()
                .is_some_and(|t| t.contains("passed on")),
            "{v}"
        );
        assert_eq!(
            (
                v["handover"].as_bool(),
                v["sources"].as_array().map(Vec::len)
            ),
            (Some(true), Some(0))
        );
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(json!({ "message": { "text": QUESTION }, "sessionId": s001 })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["response"]["type"], "notice", "{v}");
        assert_eq!(v["status"], "with_agent");
        let h = history(&gw, &c.alice, &s001).await;
        assert_eq!(h.last().expect("last")["senderType"], "customer", "{h:?}");

        // Hand back: the assistant answers again, and the staff feed says
        // so by name.
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/api/gateway/conversations/{s001}/handback"),
            None,
        )
        .await;
        assert_eq!((s, v["handling"].as_str()), (200, Some("ai")), "{v}");
        let back = next_event(&mut staff).await;
        assert_eq!(back["type"], "handover_handed_back", "{back}");
        let (s, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            &format!("/api/chat/sessions/{s001}/messages"),
            Some(json!({ "content": QUESTION })),
        )
        .await;
        assert_eq!(s, 200);
        assert!(
            answered(&history(&gw, &c.alice, &s001).await),
            "{kind:?} after handback"
        );

        // 004: a ticket of the 000 session; the agent's ticket reply takes
        // over, reaches the chat's socket, and /ws/tickets sees the
        // customer's chat messages as `message.received`.
        let (s, t) = call(
            &gw,
            &c.alice,
            Method::POST,
            &format!("/api/chat/sessions/{s000}/ticket"),
            Some(json!({ "title": "Refund" })),
        )
        .await;
        assert_eq!(s, 200, "{t}");
        let tid = t["ticketId"].as_str().expect("ticketId").to_owned();
        let mut ticket_socket = socket_at(&gw, &format!("/ws/tickets/{tid}"), &c.agent).await;
        let mut chat000 = socket_at(&gw, &format!("/ws/chat/{s000}"), &c.alice).await;
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/v1/tickets/{tid}/messages"),
            Some(json!({ "content": "Your refund is on its way." })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let seen = until(&mut chat000, "message").await;
        assert_eq!(seen["data"]["senderType"], "agent", "{seen}");
        assert_eq!(
            until(&mut chat000, "handover").await["data"]["transition"],
            "taken_over"
        );
        let received = next_event(&mut ticket_socket).await;
        assert_eq!(
            (received["event"].as_str(), received["type"].as_str()),
            (Some("message.received"), Some("message.received")),
            "{received}"
        );
        assert_eq!(next_event(&mut staff).await["type"], "handover_taken_over");
        let (s, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/chat/messages",
            Some(json!({ "sessionId": s000, "content": QUESTION })),
        )
        .await;
        assert_eq!(s, 200);
        let from_customer = next_event(&mut ticket_socket).await;
        assert_eq!(
            from_customer["data"]["sender"], "customer",
            "{from_customer}"
        );
        let h = history(&gw, &c.alice, &s000).await;
        assert_eq!(
            h.last().expect("last")["senderType"],
            "customer",
            "{kind:?}: {h:?}"
        );

        // A ticket change is `ticket.updated` on the ticket's socket.
        let (s, _) = call(
            &gw,
            &c.agent,
            Method::PATCH,
            &format!("/v1/tickets/{tid}"),
            Some(json!({ "status": "in_progress" })),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(
            next_event(&mut ticket_socket).await["event"],
            "ticket.updated"
        );
    }
}

#[tokio::test]
async fn fixes_found_by_trying_the_api_as_its_clients_would() {
    let secret = "incoming-webhook-secret-0123";
    for kind in databases() {
        let gw =
            Gateway::start_with(Options::new(kind).env("GATEWAY_WEBHOOK_SECRET", secret)).await;
        let c = cast(&gw).await;

        // 002: a handover answers the notice, never null; then the
        // passed-on notice. Its conversation view shows user and assistant.
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/v1/chat/chat",
            Some(json!({ "message": "What is the airspeed of a swallow?" })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["response"], "Connecting you with a human agent...", "{v}");
        assert_eq!(v["handover"], true);
        let id = v["conversation_id"].as_i64().expect("conversation_id");
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/v1/chat/chat",
            Some(json!({ "message": "Hello?", "conversation_id": id })),
        )
        .await;
        assert!(v["response"].is_string(), "{v}");
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/v1/chat/conversations/{id}"),
            None,
        )
        .await;
        let roles: Vec<&str> = v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"], "{v}");

        // 003: the handover notice is the response; the context lists it
        // as the assistant's.
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(json!({ "message": { "text": "I want to speak to someone" }, "sessionId": "s-fix" })),
        )
        .await;
        assert_eq!(
            (
                v["response"]["text"].as_str(),
                v["response"]["type"].as_str()
            ),
            (
                Some("Connecting you with a human agent..."),
                Some("handover")
            ),
            "{v}"
        );
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::GET,
            "/api/core/sessions/s-fix/context",
            None,
        )
        .await;
        let roles: Vec<&str> = v["context"]["conversation_history"]
            .as_array()
            .expect("history")
            .iter()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(roles, ["user", "assistant"], "{v}");

        // /ws: the notice arrives as the assistant's message before
        // handover_initiated.
        let mut ws = platform_socket(&gw, &c.bob, "sessionId=ws-fix").await;
        next_event(&mut ws).await;
        send_text(&mut ws, json!({ "type": "handover_request" })).await;
        let notice = next_event(&mut ws).await;
        assert_eq!(
            (
                notice["type"].as_str(),
                notice["sender"].as_str(),
                notice["text"].as_str()
            ),
            (
                Some("message"),
                Some("ai"),
                Some("Connecting you with a human agent...")
            ),
            "{notice}"
        );
        assert_eq!(next_event(&mut ws).await["type"], "handover_initiated");

        // 000: a ticket's category is free text; a new name is created.
        let session = new_session(&gw, &c.alice).await;
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            &format!("/api/chat/sessions/{session}/ticket"),
            Some(json!({ "title": "Broken mug", "category": "Damaged in transit" })),
        )
        .await;
        assert_eq!(s, 200, "{kind:?}: {v}");
        let (_, categories) = call(&gw, &c.agent, Method::GET, "/v1/categories", None).await;
        assert!(
            categories
                .as_array()
                .expect("list")
                .iter()
                .any(|k| k["name"] == "Damaged in transit"),
            "{categories}"
        );

        // 000: an unknown or malformed sessionId is not found.
        for id in [json!("no-such-session"), json!("999999"), json!(999999)] {
            let (s, v) = call(
                &gw,
                &c.alice,
                Method::POST,
                "/api/chat/messages",
                Some(json!({ "sessionId": id, "content": "hello" })),
            )
            .await;
            assert_eq!(s, 404, "{id}: {v}");
            assert_eq!(v["error"]["code"], "not_found", "{v}");
        }

        // 004: an unknown category, in any form, lists nothing.
        for category in ["999999", "billing", "-3"] {
            let (s, v) = call(
                &gw,
                &c.agent,
                Method::GET,
                &format!("/v1/tickets?category={category}"),
                None,
            )
            .await;
            assert_eq!(s, 200, "{category}: {v}");
            assert_eq!(v["items"], json!([]), "{v}");
        }

        // 004: Idempotency-Key means the same as on chat: a bad one is a
        // 400, a retry answers the first message.
        let (_, t) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/v1/tickets",
            Some(json!({ "title": "Keys" })),
        )
        .await;
        let tid = t["id"].as_str().expect("id").to_owned();
        let post = |key: &'static str| {
            gw.http
                .post(gw.url(&format!("/v1/tickets/{tid}/messages")))
                .bearer_auth(&c.alice)
                .header("Idempotency-Key", key)
                .json(&json!({ "content": "once" }))
                .send()
        };
        assert_eq!(post(" ").await.expect("send").status(), 400);
        let first: Value = post("k-1").await.expect("send").json().await.expect("json");
        let again: Value = post("k-1").await.expect("send").json().await.expect("json");
        assert_eq!(first["id"], again["id"]);

        // 004: a closed conversation refuses ticket messages too.
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/v1/tickets/{tid}"),
            None,
        )
        .await;
        let conversation = v["session_id"].as_str().expect("session_id").to_owned();
        let (s, _) = call(
            &gw,
            &c.agent,
            Method::PUT,
            &format!("/api/chat/sessions/{conversation}/close"),
            None,
        )
        .await;
        assert_eq!(s, 200);
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/v1/tickets/{tid}/messages"),
            Some(json!({ "content": "too late" })),
        )
        .await;
        assert_eq!(s, 409, "{v}");

        // 004 incoming: a ticket with no customer email is another
        // system's ticket, with no customer.
        let body = json!({ "event": "ticket.created", "data": { "title": "Disk full on node 3" } })
            .to_string();
        let signature = {
            use hmac::Mac as _;
            let mut mac =
                hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
            mac.update(body.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        let r = gw
            .http
            .post(gw.url("/v1/webhooks/incoming"))
            .header("X-Signature", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let made: Value = r.json().await.expect("json");
        let (s, t) = call(
            &gw,
            &c.agent,
            Method::GET,
            &format!("/v1/tickets/{}", made["ticket_id"].as_str().expect("id")),
            None,
        )
        .await;
        assert_eq!((s, &t["customer_id"]), (200, &Value::Null), "{t}");
    }
}

#[tokio::test]
async fn contacts_have_identities_merge_and_stay_in_their_organization() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;
        // A registered customer who chatted is a contact with a web identity.
        new_session(&gw, &c.alice).await;
        let (s, v) = call(&gw, &c.agent, Method::GET, "/api/gateway/contacts", None).await;
        assert_eq!(s, 200, "{v}");
        let alice = v["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|c| c["email"] == "alice@example.com")
            .cloned()
            .expect("alice is a contact");
        assert_eq!(alice["identities"][0]["kind"], "web", "{alice}");
        assert!(alice["userId"].is_string());

        // The same email may be a contact of another organization.
        for token in [&c.agent, &c.outsider] {
            let (s, v) = call(
                &gw,
                token,
                Method::POST,
                "/api/gateway/contacts",
                Some(json!({ "name": "Ana", "email": "Ana@Example.com", "identities": [{ "kind": "whatsapp", "value": "4915112345678" }] })),
            )
            .await;
            assert_eq!(s, 200, "{kind:?}: {v}");
            assert_eq!(v["email"], "ana@example.com");
        }
        // Not twice in one.
        let (s, _) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/api/gateway/contacts",
            Some(json!({ "identities": [{ "kind": "whatsapp", "value": "4915112345678" }] })),
        )
        .await;
        assert_eq!(s, 409);
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/api/gateway/contacts",
            Some(json!({ "email": "nope", "identities": [{ "kind": "fax", "value": "1" }] })),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        let (s, _) = call(&gw, &c.alice, Method::GET, "/api/gateway/contacts", None).await;
        assert_eq!(s, 403, "customers see no contacts");

        // Merge Ana into Alice: identities move, Ana points at Alice.
        let (_, v) = call(&gw, &c.agent, Method::GET, "/api/gateway/contacts", None).await;
        let ana = v["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|c| c["name"] == "Ana")
            .cloned()
            .expect("ana");
        let ana_id = ana["id"].as_str().expect("id");
        let alice_id = alice["id"].as_str().expect("id");
        let (s, merged) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/api/gateway/contacts/{alice_id}/merge"),
            Some(json!({ "from": ana_id })),
        )
        .await;
        assert_eq!(s, 200, "{merged}");
        let kinds: Vec<&str> = merged["identities"]
            .as_array()
            .expect("identities")
            .iter()
            .filter_map(|i| i["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["web", "whatsapp", "email"], "{merged}");
        let (_, gone) = call(
            &gw,
            &c.agent,
            Method::GET,
            &format!("/api/gateway/contacts/{ana_id}"),
            None,
        )
        .await;
        assert_eq!(gone["mergedInto"], alice_id);
        let (s, _) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/api/gateway/contacts/{alice_id}/merge"),
            Some(json!({ "from": ana_id })),
        )
        .await;
        assert_eq!(s, 409, "merged already");
        // Another organization's contact is not found.
        let (s, _) = call(
            &gw,
            &c.outsider,
            Method::GET,
            &format!("/api/gateway/contacts/{alice_id}"),
            None,
        )
        .await;
        assert_eq!(s, 404);
    }
}
