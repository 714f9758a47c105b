//! The assistant through the running gateway with the shipped plugins:
//! knowledge and FAQ management and search, 002 chat, 003 core messages,
//! sessions and memories, handover and the assistant's silence while an
//! agent has the conversation, and the customer-isolation rules.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::chat::{call, cast};
use crate::common::{DbKind, Gateway, Options, databases};

pub const RETURNS: &str = "# Returns and refunds\n\nYou can return any item within 30 days of delivery for a full refund.\nStart a return from the Orders page and print the prepaid label.\n\n## Refund timing\n\nRefunds reach your card within 5 business days after the warehouse receives the parcel.";
pub const SHIPPING: &str = "# Shipping\n\nStandard shipping takes 3 to 5 business days. Express shipping arrives the next business day when ordered before 2 pm.";

/// Adds the two articles and an FAQ as `agent`.
pub async fn seed(gw: &Gateway, agent: &str) {
    for body in [RETURNS, SHIPPING] {
        let (title, text) = body.split_once("\n\n").expect("title");
        let (s, v) = call(
            gw,
            agent,
            Method::POST,
            "/api/gateway/knowledge/documents",
            Some(json!({ "title": title.trim_start_matches("# "), "body": text, "url": "https://help.example.com/x" })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = call(
        gw,
        agent,
        Method::POST,
        "/api/gateway/faqs",
        Some(json!({ "question": "How do I reset my password?", "answer": "Click Forgot password on the sign-in page and follow the emailed link.", "category": "account" })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn knowledge_and_faqs_are_managed_searched_and_survive_restarts() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;
        // Customers cannot write knowledge.
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/gateway/knowledge/documents",
            Some(json!({ "title": "x", "body": "y" })),
        )
        .await;
        assert_eq!(s, 403, "{kind:?}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/api/gateway/knowledge/documents",
            Some(json!({ "title": "", "body": 5 })),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        seed(&gw, &c.agent).await;

        // 003 knowledge search: the passage that answers, with its source.
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "query": "How long until my refund arrives?", "limit": 3 })),
        )
        .await;
        assert_eq!(s, 200, "{kind:?}: {v}");
        let first = &v["results"][0];
        assert_eq!(first["title"], "Returns and refunds", "{v}");
        assert!(
            first["content"]
                .as_str()
                .expect("as expected")
                .contains("5 business days"),
            "{v}"
        );
        let relevance = first["relevance"].as_f64().expect("as expected");
        assert!(relevance > 0.0 && relevance <= 1.0, "{v}");
        assert_eq!(first["source"], "knowledge_base");
        assert_eq!(first["url"], "https://help.example.com/x");
        assert!(
            first["id"]
                .as_str()
                .expect("as expected")
                .starts_with("kb-")
        );
        // Another organization sees nothing; naming it is refused.
        let (s, v) = call(
            &gw,
            &c.outsider,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "query": "refund" })),
        )
        .await;
        assert_eq!(
            (s, v["results"].as_array().map(Vec::len)),
            (200, Some(0)),
            "{v}"
        );
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "query": "refund", "organizationId": "other" })),
        )
        .await;
        assert_eq!(s, 403, "{v}");
        assert_eq!(v["error"]["code"], "authorization_error");
        assert!(v["requestId"].is_string());
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "limit": 0 })),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{v}"
        );

        // 003 vectors: the text becomes searchable, with its source.
        let vector = json!({
            "text": "Our return policy allows returns within 30 days of purchase with original receipt.",
            "metadata": { "title": "Receipt policy", "source": "policy_pdf", "sourceId": "kb-1234", "organizationId": "default" }
        });
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/memory/vectors",
            Some(vector.clone()),
        )
        .await;
        assert_eq!(s, 403, "customers cannot add knowledge: {v}");
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/api/memory/vectors",
            Some(vector),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["status"].as_str(), v["dimensions"].as_u64()),
            (Some("stored"), Some(256)),
            "{v}"
        );
        assert!(v["id"].as_str().expect("as expected").starts_with("kb-"));
        let (_, found) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "query": "original receipt" })),
        )
        .await;
        assert_eq!(
            (
                found["results"][0]["title"].as_str(),
                found["results"][0]["source"].as_str()
            ),
            (Some("Receipt policy"), Some("policy_pdf")),
            "{found}"
        );
        let (s, _) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/api/memory/vectors",
            Some(json!({ "metadata": {} })),
        )
        .await;
        assert_eq!(s, 400);

        // 002 FAQs: public, by category, views counted.
        let r = gw
            .http
            .get(gw.url("/api/v1/chat/faqs?category=account"))
            .send()
            .await
            .expect("as expected");
        assert_eq!(r.status(), 200);
        let list: Value = r.json().await.expect("as expected");
        assert_eq!(list[0]["question"], "How do I reset my password?");
        assert!(list[0]["id"].is_i64());
        assert_eq!(list[0]["view_count"], 1);
        let (_, list) = call(&gw, &c.alice, Method::GET, "/api/v1/chat/faqs", None).await;
        assert_eq!(list[0]["view_count"], 2, "{list}");
        let (_, none) = call(
            &gw,
            &c.alice,
            Method::GET,
            "/api/v1/chat/faqs?category=billing",
            None,
        )
        .await;
        assert_eq!(none, json!([]));

        // Update and delete reach the index at once.
        let (_, docs) = call(
            &gw,
            &c.agent,
            Method::GET,
            "/api/gateway/knowledge/documents",
            None,
        )
        .await;
        assert_eq!(docs["total"], 3, "{docs}");
        let shipping = docs["items"]
            .as_array()
            .expect("as expected")
            .iter()
            .find(|d| d["title"] == "Shipping")
            .expect("as expected")["id"]
            .as_str()
            .expect("as expected")
            .to_owned();
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::PUT,
            &format!("/api/gateway/knowledge/documents/{shipping}"),
            Some(json!({ "title": "Delivery", "body": "Couriers deliver parcels to lockers on Saturdays." })),
        )
        .await;
        assert_eq!((s, v["title"].as_str()), (200, Some("Delivery")), "{v}");
        let search = |q: &'static str| {
            let gw = &gw;
            let token = c.alice.clone();
            async move {
                call(
                    gw,
                    &token,
                    Method::POST,
                    "/api/memory/knowledge/search",
                    Some(json!({ "query": q })),
                )
                .await
                .1
            }
        };
        assert_eq!(
            search("saturday lockers").await["results"][0]["title"],
            "Delivery"
        );
        let (s, _) = call(
            &gw,
            &c.agent,
            Method::DELETE,
            &format!("/api/gateway/knowledge/documents/{shipping}"),
            None,
        )
        .await;
        assert_eq!(s, 204);
        assert_eq!(search("saturday lockers").await["results"], json!([]));
        let (s, _) = call(
            &gw,
            &c.outsider,
            Method::GET,
            &format!("/api/gateway/knowledge/documents/{shipping}"),
            None,
        )
        .await;
        assert_eq!(s, 404);

        // The CLI imports while the gateway runs; the index catches up.
        let kb = gw.dir.path().join("kb");
        std::fs::create_dir_all(&kb).expect("as expected");
        std::fs::write(
            kb.join("warranty.md"),
            "# Warranty\n\nEvery lamp carries a two-year warranty against defects.",
        )
        .expect("as expected");
        std::fs::write(
            kb.join("notes.txt"),
            "Gift wrapping costs three euros per parcel.",
        )
        .expect("as expected");
        let (code, out, err) = gw.cli(&["kb", "import", kb.to_str().expect("as expected")]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "2 documents, 2 passages");
        let faqs = gw.dir.path().join("faqs.json");
        std::fs::write(&faqs, r#"[{"question": "Do you ship to Norway?", "answer": "Yes, in 4 days.", "category": "shipping"}]"#).expect("as expected");
        let (code, out, err) = gw.cli(&["faq", "import", faqs.to_str().expect("as expected")]);
        assert_eq!((code, out.trim()), (0, "1 FAQs"), "{err}");
        let bad = gw.dir.path().join("bad.toml");
        std::fs::write(&bad, "[[faq]]\nquestion = \"\"\nanswer = \"x\"\n").expect("as expected");
        let (code, _, err) = gw.cli(&["faq", "import", bad.to_str().expect("as expected")]);
        assert_ne!(code, 0);
        assert!(err.contains("FAQ 1: question"), "{err}");
        // The running gateway indexes both imports within seconds.
        for (query, field, want) in [
            ("two-year warranty lamp", "title", "Warranty"),
            ("gift wrapping", "title", "notes"),
            ("ship to norway", "source", "faq"),
        ] {
            let mut found = Value::Null;
            for _ in 0..40 {
                found = search(query).await;
                if found["results"][0][field] == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert_eq!(found["results"][0][field], want, "{query}: {found}");
        }

        // Restart with the index deleted: rebuilt from the database.
        let options = Options::new(kind);
        let (dir, db) = gw.stop();
        std::fs::remove_dir_all(dir.path().join("data/search")).ok();
        let gw = Gateway::restart(dir, db, &options);
        let token = gw.login("alice", "correct horse battery").await;
        let (_, v) = call(
            &gw,
            &token,
            Method::POST,
            "/api/memory/knowledge/search",
            Some(json!({ "query": "refund timing" })),
        )
        .await;
        assert_eq!(
            v["results"][0]["title"], "Returns and refunds",
            "{kind:?}: {v}"
        );
        assert!(
            gw.log().contains("rebuilding the search index"),
            "{}",
            gw.log()
        );
    }
}

/// Posts a 002 chat message.
async fn chat(gw: &Gateway, token: &str, message: &str, conversation: Option<i64>) -> (u16, Value) {
    let mut body = json!({ "message": message });
    if let Some(id) = conversation {
        body["conversation_id"] = json!(id);
    }
    call(gw, token, Method::POST, "/api/v1/chat/chat", Some(body)).await
}

#[tokio::test]
async fn chat_answers_with_sources_hands_over_and_stays_silent_until_handed_back() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;
        seed(&gw, &c.agent).await;

        let (s, v) = chat(
            &gw,
            &c.alice,
            "How many days do I have to return an item?",
            None,
        )
        .await;
        assert_eq!(s, 200, "{kind:?}: {v}");
        assert!(
            v["response"]
                .as_str()
                .expect("as expected")
                .contains("30 days"),
            "{v}"
        );
        assert!(
            v["response"]
                .as_str()
                .expect("as expected")
                .contains("Source: Returns and refunds")
        );
        let id = v["conversation_id"]
            .as_i64()
            .expect("integer conversation_id");
        assert!(v["tokens_used"].as_i64().expect("as expected") > 0);
        assert!(v["response_time"].is_i64());
        assert_eq!(v["handover"], false);
        let source = v["sources"][0].as_str().expect("as expected").to_owned();
        // The citation resolves for agents, not for customers.
        let (s, p) = call(
            &gw,
            &c.agent,
            Method::GET,
            &format!("/api/gateway/knowledge/passages/{source}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{p}");
        assert!(
            p["content"]
                .as_str()
                .expect("as expected")
                .contains("30 days")
        );
        let (s, _) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/gateway/knowledge/passages/{source}"),
            None,
        )
        .await;
        assert_eq!(s, 403);

        // The conversation in 002's shape, sources kept on the reply.
        let (s, conv) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/v1/chat/conversations/{id}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{conv}");
        let messages = conv["messages"].as_array().expect("as expected");
        assert_eq!(messages.len(), 2);
        assert_eq!(
            (messages[0]["role"].as_str(), messages[1]["role"].as_str()),
            (Some("user"), Some("assistant"))
        );
        assert_eq!(messages[1]["sources"][0], source.as_str());
        assert!(messages[1]["tokens_used"].as_i64().expect("as expected") > 0);
        assert_eq!(
            conv["user_id"].as_i64(),
            Some(conv["user_id"].as_i64().expect("as expected"))
        );
        assert_eq!(conv["is_active"], true);
        let (_, list) = call(
            &gw,
            &c.alice,
            Method::GET,
            "/api/v1/chat/conversations",
            None,
        )
        .await;
        assert_eq!(list.as_array().expect("as expected").len(), 1);
        assert_eq!(list[0]["id"], id);
        // Bob sees none of it.
        let (s, v) = call(
            &gw,
            &c.bob,
            Method::GET,
            &format!("/api/v1/chat/conversations/{id}"),
            None,
        )
        .await;
        assert_eq!((s, v["detail"].is_string()), (404, true), "{v}");
        let (s, _) = chat(&gw, &c.bob, "hi", Some(id)).await;
        assert_eq!(s, 404);
        let (_, list) = call(&gw, &c.bob, Method::GET, "/api/v1/chat/conversations", None).await;
        assert_eq!(list, json!([]));
        let (s, v) = chat(&gw, &c.alice, "", None).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["detail"][0]["loc"], json!(["body", "message"]));

        // Nothing relevant: handed over, never invented.
        let (s, v) = chat(
            &gw,
            &c.alice,
            "Do you sell garden furniture in Lisbon?",
            Some(id),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["handover"], true, "{v}");
        assert_eq!(v["response"], "Connecting you with a human agent...");
        assert_eq!(v["sources"], json!([]));
        // Waiting for an agent: the assistant is silent, and the customer
        // is told their message was passed on.
        let (_, v) = chat(&gw, &c.alice, "How do I return an item?", Some(id)).await;
        assert_eq!(
            (v["response"].as_str(), v["handover"].clone()),
            (
                Some(
                    "Thanks, your message has been passed on to our team; an agent will reply here."
                ),
                json!(true)
            ),
            "{v}"
        );

        // The agent answers through the chat API: that takes the
        // conversation over, and the assistant stays silent.
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/api/chat/sessions/{id}/messages"),
            Some(json!({ "content": "Hi, Agnes here. Let me check." })),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let (_, v) = chat(
            &gw,
            &c.alice,
            "How many days do I have to return an item?",
            Some(id),
        )
        .await;
        assert!(
            v["response"]
                .as_str()
                .is_some_and(|t| t.contains("passed on")),
            "{v}"
        );
        let (_, conv) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/v1/chat/conversations/{id}"),
            None,
        )
        .await;
        assert_eq!(conv["handling"], "agent");
        // 002 shows two roles: the agent's reply and the handover notice
        // are the assistant's side; nothing followed the customer's last.
        let roles: Vec<&str> = conv["messages"]
            .as_array()
            .expect("as expected")
            .iter()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(
            roles,
            [
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
                "assistant",
                "user"
            ],
            "{conv}"
        );

        // Customers cannot hand back; the agent can, and the assistant answers again.
        let (s, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            &format!("/api/gateway/conversations/{id}/handback"),
            None,
        )
        .await;
        assert_eq!(s, 403);
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/api/gateway/conversations/{id}/handback"),
            None,
        )
        .await;
        assert_eq!((s, v["handling"].as_str()), (200, Some("ai")), "{v}");
        let (_, v) = chat(
            &gw,
            &c.alice,
            "How many days do I have to return an item?",
            Some(id),
        )
        .await;
        assert!(
            v["response"]
                .as_str()
                .expect("as expected")
                .contains("30 days"),
            "{v}"
        );

        // Asking for a person hands over at once.
        let (_, v) = chat(&gw, &c.alice, "I want to talk to a real person", Some(id)).await;
        assert_eq!(v["handover"], true, "{v}");
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::POST,
            &format!("/api/gateway/conversations/{id}/takeover"),
            None,
        )
        .await;
        assert_eq!((s, v["status"].as_str()), (200, Some("with_agent")), "{v}");
        assert_eq!(v["agentId"], c.agent_id.as_str());
    }
}

#[tokio::test]
async fn core_messages_sessions_context_and_reset() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;
        seed(&gw, &c.agent).await;
        let (_, me) = call(&gw, &c.alice, Method::GET, "/api/v1/auth/me", None).await;
        let alice_id = me["id"].as_i64().expect("as expected").to_string();

        let body = json!({
            "message": { "text": "How do I return an item?", "type": "text", "id": "msg-1" },
            "channel": "web",
            "userId": alice_id,
            "sessionId": "session456",
            "metadata": { "language": "en", "timezone": "Europe/Lisbon" }
        });
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 200, "{kind:?}: {v}");
        assert_eq!(v["sessionId"], "session456");
        assert_eq!(v["response"]["type"], "text");
        assert!(
            v["response"]["text"]
                .as_str()
                .expect("as expected")
                .contains("30 days"),
            "{v}"
        );
        let reply_id = v["response"]["id"]
            .as_str()
            .expect("as expected")
            .to_owned();
        assert_eq!(v["context"]["intent"], "returns", "{v}");
        assert!(
            v["context"]["entities"]
                .as_array()
                .expect("as expected")
                .contains(&json!("return"))
        );
        let confidence = v["context"]["confidence"].as_f64().expect("as expected");
        assert!(confidence > 0.0 && confidence <= 1.0);
        assert!(
            v["sources"][0]
                .as_str()
                .expect("as expected")
                .starts_with("kb-")
        );
        // A retry of the same message id answers the same reply, once.
        let (_, again) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(body),
        )
        .await;
        assert_eq!(again["response"]["id"], reply_id.as_str(), "{again}");

        // The context: history since the last reset, the intent.
        let (s, ctx) = call(
            &gw,
            &c.alice,
            Method::GET,
            "/api/core/sessions/session456/context",
            None,
        )
        .await;
        assert_eq!(s, 200, "{ctx}");
        assert_eq!(ctx["sessionId"], "session456");
        assert_eq!(ctx["channel"], "web");
        let history = ctx["context"]["conversation_history"]
            .as_array()
            .expect("as expected");
        assert_eq!(history.len(), 2, "{ctx}");
        assert_eq!(
            history[0],
            json!({ "role": "user", "content": "How do I return an item?" })
        );
        assert_eq!(ctx["context"]["intent"], "returns");
        assert!(ctx["context"]["last_interaction"].is_string());
        // Bob cannot read or reset it, nor write into it.
        let (s, v) = call(
            &gw,
            &c.bob,
            Method::GET,
            "/api/core/sessions/session456/context",
            None,
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("resource_not_found")),
            "{v}"
        );
        let (s, _) = call(
            &gw,
            &c.bob,
            Method::POST,
            "/api/core/sessions/session456/reset",
            None,
        )
        .await;
        assert_eq!(s, 404);
        // A customer speaks only for themselves.
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages",
            Some(json!({ "message": { "text": "hi" }, "userId": "someone-else" })),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("authorization_error")),
            "{v}"
        );

        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/sessions/session456/reset",
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v,
            json!({ "status": "success", "message": "Session context has been reset", "sessionId": "session456" })
        );
        let (_, ctx) = call(
            &gw,
            &c.alice,
            Method::GET,
            "/api/core/sessions/session456/context",
            None,
        )
        .await;
        assert_eq!(ctx["context"]["conversation_history"], json!([]), "{ctx}");
        assert_eq!(ctx["context"]["intent"], Value::Null);

        // Invalid requests in 003's shape.
        for (bad, what) in [
            (json!({}), "message"),
            (json!({ "message": "text" }), "message"),
            (json!({ "message": { "text": "" } }), "message.text"),
            (
                json!({ "message": { "text": "hi", "type": "image" } }),
                "message.type",
            ),
            (
                json!({ "message": { "text": "hi" }, "channel": "Web Chat!" }),
                "channel",
            ),
        ] {
            let (s, v) = call(&gw, &c.alice, Method::POST, "/api/core/messages", Some(bad)).await;
            assert_eq!(s, 400, "{what}: {v}");
            assert_eq!(v["error"]["code"], "invalid_request");
            assert!(
                v["error"]["details"].to_string().contains(what)
                    || v["error"]["message"]
                        .as_str()
                        .expect("as expected")
                        .contains(what),
                "{what}: {v}"
            );
        }

        // A channel's API key speaks for its own customer references.
        let (code, key, err) = gw.cli(&["apikey", "create", "--name", "whatsapp"]);
        assert_eq!(code, 0, "{err}");
        let key = key.trim().to_owned();
        let post_key = |body: Value| {
            let gw = &gw;
            let key = key.clone();
            async move {
                let r = gw
                    .http
                    .post(gw.url("/api/core/messages"))
                    .header("X-API-Key", key)
                    .json(&body)
                    .send()
                    .await
                    .expect("as expected");
                (
                    r.status().as_u16(),
                    r.json::<Value>().await.expect("as expected"),
                )
            }
        };
        let (s, v) = post_key(json!({ "message": { "text": "How fast is express shipping?" }, "channel": "whatsapp", "userId": "+351912345678" })).await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["response"]["text"]
                .as_str()
                .expect("as expected")
                .contains("next business day"),
            "{v}"
        );
        let wa_session = v["sessionId"].as_str().expect("as expected").to_owned();
        let (s, _) = post_key(json!({ "message": { "text": "hello" } })).await;
        assert_eq!(s, 400, "userId is required with an API key");
        // The same session cannot be borrowed for another customer.
        let (s, _) = post_key(
            json!({ "message": { "text": "hi" }, "userId": "+44", "sessionId": wa_session }),
        )
        .await;
        assert_eq!(s, 403);

        // Audio without a transcription-capable provider: a clear 503.
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages/audio",
            Some(json!({ "audio": "T2dnUw==", "format": "ogg" })),
        )
        .await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["error"]["code"], "service_unavailable");
        assert!(
            v["error"]["message"]
                .as_str()
                .expect("as expected")
                .contains("does not transcribe"),
            "{v}"
        );
        let (s, v) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages/audio",
            Some(json!({ "audio": "not base64!!", "format": "ogg" })),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{v}"
        );
        let (s, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/api/core/messages/audio",
            Some(json!({ "audio": "T2dnUw==", "format": "exe" })),
        )
        .await;
        assert_eq!(s, 400);

        // Health names the real dependencies.
        for path in ["/api/core/health", "/api/memory/health"] {
            let r = gw.http.get(gw.url(path)).send().await.expect("as expected");
            assert_eq!(r.status(), 200);
            let h: Value = r.json().await.expect("as expected");
            assert_eq!(h["status"], "healthy", "{h}");
            assert_eq!(h["dependencies"]["database"], "healthy");
            assert_eq!(h["dependencies"]["kb-answer"], "healthy");
            assert_eq!(h["dependencies"]["search_index"], "healthy");
        }
    }
}

#[tokio::test]
async fn memories_upsert_expire_and_stay_with_their_customer() {
    for kind in databases() {
        let gw =
            Gateway::start_with(Options::new(kind).toml("[assistant]\nshort_term_ttl_secs = 1"))
                .await;
        let c = cast(&gw).await;
        let (_, me) = call(&gw, &c.alice, Method::GET, "/api/v1/auth/me", None).await;
        let alice = me["id"].as_i64().expect("as expected").to_string();
        let store = |token: String, body: Value| {
            let gw = &gw;
            async move { call(gw, &token, Method::POST, "/api/memory/memories", Some(body)).await }
        };
        let long = json!({
            "userId": alice, "type": "long_term", "key": "order_preferences",
            "value": { "preferred_shipping": "express", "previous_orders": ["SKU123"] },
            "metadata": { "importance": 0.8, "source": "conversation" }
        });
        let (s, v) = store(c.alice.clone(), long.clone()).await;
        assert_eq!(s, 200, "{kind:?}: {v}");
        assert_eq!(
            (
                v["status"].as_str(),
                v["type"].as_str(),
                v["userId"].as_str()
            ),
            (Some("stored"), Some("long_term"), Some(alice.as_str()))
        );
        let id = v["id"].as_str().expect("as expected").to_owned();
        // The same (user, type, key) replaces the value.
        let mut changed = long.clone();
        changed["value"]["preferred_shipping"] = json!("standard");
        let (_, v) = store(c.alice.clone(), changed).await;
        assert_eq!(v["id"], id.as_str());
        let (s, v) = store(
            c.alice.clone(),
            json!({ "userId": alice, "type": "short_term", "key": "cart", "value": [1, 2] }),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert!(v["expiresAt"].is_string());

        let (s, v) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/memory/memories/{alice}?type=long_term"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["userId"], alice.as_str());
        let m = &v["memories"][0];
        assert_eq!(v["memories"].as_array().expect("as expected").len(), 1);
        assert_eq!(m["value"]["preferred_shipping"], "standard");
        assert_eq!(m["metadata"]["importance"], 0.8);
        assert!(m["metadata"]["created_at"].is_string());
        assert!(
            m["metadata"]["last_accessed"].is_string(),
            "reading records the access: {v}"
        );
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/memory/memories/{alice}?key=cart"),
            None,
        )
        .await;
        assert_eq!(v["memories"][0]["value"], json!([1, 2]), "{v}");

        // Customers reach only their own; staff reach anyone in the organization.
        let (s, v) = call(
            &gw,
            &c.bob,
            Method::GET,
            &format!("/api/memory/memories/{alice}"),
            None,
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("authorization_error")),
            "{v}"
        );
        let (s, _) = store(
            c.bob.clone(),
            json!({ "userId": alice, "type": "long_term", "key": "k", "value": 1 }),
        )
        .await;
        assert_eq!(s, 403);
        let (s, v) = call(
            &gw,
            &c.agent,
            Method::GET,
            &format!("/api/memory/memories/{alice}"),
            None,
        )
        .await;
        assert_eq!(
            (s, v["memories"].as_array().map(Vec::len)),
            (200, Some(2)),
            "{v}"
        );
        let (_, v) = call(
            &gw,
            &c.outsider,
            Method::GET,
            &format!("/api/memory/memories/{alice}"),
            None,
        )
        .await;
        assert_eq!(
            v["memories"],
            json!([]),
            "another organization sees none: {v}"
        );
        for bad in [
            json!({ "userId": alice, "type": "forever", "key": "k", "value": 1 }),
            json!({ "userId": alice, "type": "long_term", "key": "", "value": 1 }),
            json!({ "userId": alice, "type": "long_term", "key": "k" }),
            json!({ "type": "long_term", "key": "k", "value": 1 }),
        ] {
            let (s, v) = store(c.alice.clone(), bad).await;
            assert_eq!(s, 400, "{v}");
        }
        let (s, _) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/memory/memories/{alice}?type=forever"),
            None,
        )
        .await;
        assert_eq!(s, 400);

        // The short-term memory expires; the long-term one stays.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (_, v) = call(
            &gw,
            &c.alice,
            Method::GET,
            &format!("/api/memory/memories/{alice}"),
            None,
        )
        .await;
        let keys: Vec<&str> = v["memories"]
            .as_array()
            .expect("as expected")
            .iter()
            .map(|m| m["key"].as_str().expect("as expected"))
            .collect();
        assert_eq!(keys, ["order_preferences"], "{v}");
    }
}

/// `/ws` for `token`, with `query` (`sessionId=...`).
async fn ws(gw: &Gateway, token: &str, query: &str) -> crate::chat::Socket {
    let url = format!(
        "{}/ws?token={token}&{query}",
        gw.base.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send(socket: &mut crate::chat::Socket, text: String) {
    use futures_util::SinkExt as _;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
        .await
        .expect("send");
}

#[tokio::test]
async fn ws_protocol_answers_hands_over_and_relays_agents() {
    use crate::chat::next_event;
    let gw = Gateway::start(DbKind::Sqlite).await;
    let c = cast(&gw).await;
    seed(&gw, &c.agent).await;
    let s = match tokio_tungstenite::connect_async(format!(
        "{}/ws",
        gw.base.replace("http://", "ws://")
    ))
    .await
    {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(s, 401, "no token, no socket");

    let mut staff = ws(&gw, &c.agent, "").await;
    let hello = next_event(&mut staff).await;
    assert_eq!(hello["type"], "connection_established");

    let mut socket = ws(&gw, &c.alice, "sessionId=live-1").await;
    let hello = next_event(&mut socket).await;
    assert_eq!(hello["type"], "connection_established", "{hello}");
    assert_eq!(hello["sessionId"], "live-1");
    assert!(
        hello["connectionId"]
            .as_str()
            .expect("as expected")
            .starts_with("conn-")
    );
    assert_eq!(hello["message"], "Connected to AI Customer Support");

    send(&mut socket, json!({ "type": "text", "text": "How long do refunds take?", "id": "m-1", "timestamp": "2026-01-01T00:00:00Z" }).to_string()).await;
    assert_eq!(next_event(&mut socket).await["type"], "typing_start");
    let answer = next_event(&mut socket).await;
    assert_eq!(
        (answer["type"].as_str(), answer["sender"].as_str()),
        (Some("message"), Some("ai")),
        "{answer}"
    );
    assert!(
        answer["text"]
            .as_str()
            .expect("as expected")
            .contains("5 business days"),
        "{answer}"
    );
    assert!(answer["messageId"].is_string() && answer["timestamp"].is_string());
    assert_eq!(next_event(&mut socket).await["type"], "typing_stop");

    // Bad frames get errors; the connection stays open.
    for (frame, code) in [
        ("{not json".to_owned(), "invalid_json"),
        (json!({ "type": "video" }).to_string(), "unknown_type"),
        (json!({ "text": "no type" }).to_string(), "invalid_request"),
        (json!({ "type": "text" }).to_string(), "invalid_request"),
        (
            json!({ "type": "text", "text": "x".repeat(100_000) }).to_string(),
            "frame_too_large",
        ),
        (
            json!({ "type": "audio", "audio": "T2dnUw==", "format": "ogg" }).to_string(),
            "service_unavailable",
        ),
    ] {
        send(&mut socket, frame).await;
        let e = next_event(&mut socket).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{e}"
        );
        assert!(e["message"].is_string() && e["timestamp"].is_string());
    }

    // Handover: the customer is told, the staff feed hears of it.
    send(
        &mut socket,
        json!({ "type": "handover_request", "timestamp": "2026-01-01T00:00:00Z" }).to_string(),
    )
    .await;
    let e = next_event(&mut socket).await;
    assert_eq!(
        (e["type"].as_str(), e["sender"].as_str()),
        (Some("message"), Some("ai")),
        "{e}"
    );
    assert_eq!(e["text"], "Connecting you with a human agent...");
    let e = next_event(&mut socket).await;
    assert_eq!(e["type"], "handover_initiated", "{e}");
    assert_eq!(e["message"], "Connecting you with a human agent...");
    let e = next_event(&mut staff).await;
    assert_eq!(e["type"], "handover_requested", "{e}");
    assert_eq!(e["data"]["status"], "waiting_for_agent");
    let session = e["data"]["sessionId"]
        .as_str()
        .expect("as expected")
        .to_owned();

    // While waiting, the assistant says nothing.
    send(
        &mut socket,
        json!({ "type": "text", "text": "How long do refunds take?" }).to_string(),
    )
    .await;
    assert_eq!(next_event(&mut socket).await["type"], "typing_start");
    assert_eq!(next_event(&mut socket).await["type"], "typing_stop");

    // The agent's reply arrives as an agent message.
    let (s, v) = call(
        &gw,
        &c.agent,
        Method::POST,
        &format!("/api/chat/sessions/{session}/messages"),
        Some(json!({ "content": "Hi, I'm Agnes." })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let m = next_event(&mut socket).await;
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["sender"], "agent");
    assert_eq!(m["text"], "Hi, I'm Agnes.");
    assert_eq!(m["agentId"], c.agent_id.as_str());
    assert_eq!(m["agentName"], "agnes");

    // Typing reaches the agent's session socket.
    send(
        &mut socket,
        json!({ "type": "typing", "isTyping": true }).to_string(),
    )
    .await;
    let (s, _) = call(
        &gw,
        &c.bob,
        Method::GET,
        "/api/core/sessions/live-1/context",
        None,
    )
    .await;
    assert_eq!(s, 404, "Bob cannot see Alice's socket session");
}

/// A fake OpenAI-compatible server that cites the first passage it is
/// given (or hands over without one) and records the system prompts.
async fn fake_openai() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::routing::post;
    let prompts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = prompts.clone();
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(move |axum::Json(body): axum::Json<Value>| {
                let seen = seen.clone();
                async move {
                    let system = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
                    seen.lock().expect("as expected").push(system.clone());
                    let cited = system
                        .split('[')
                        .skip(1)
                        .find_map(|s| s.split_once(']').map(|(id, _)| id.to_owned()))
                        .filter(|id| id.starts_with("kb-") || id.starts_with("faq-"));
                    let text = match cited {
                        Some(id) => format!("Refunds take 5 business days [{id}]."),
                        None => "HANDOVER".to_owned(),
                    };
                    axum::Json(json!({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
                        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
                        "usage": { "prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48 }
                    }))
                }
            }),
        )
        .route(
            "/v1/audio/transcriptions",
            post(|| async { axum::Json(json!({ "text": "How long do refunds take?" })) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("as expected");
    let port = listener.local_addr().expect("as expected").port();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (port, prompts)
}

#[tokio::test]
async fn a_configured_provider_gets_memories_and_transcribes_audio() {
    let (port, prompts) = fake_openai().await;
    let toml = format!(
        r#"[assistant]
provider = "gpt"
transcription = "gpt"

[[plugins]]
id = "kb-answer"
path = "builtin:kb-answer"
world = "llm-provider"

[[plugins]]
id = "gpt"
path = "builtin:openai"
world = "llm-provider"
settings = {{ base_url = "http://127.0.0.1:{port}/v1", model = "gpt-test", transcription_model = "whisper-test", api_key_env = "TEST_ASSISTANT_KEY" }}
[plugins.grants]
http_hosts = ["127.0.0.1:{port}"]
allow_private = true
secrets = ["TEST_ASSISTANT_KEY"]
"#
    );
    let gw = Gateway::start_with(
        Options::new(DbKind::Sqlite)
            .toml(&toml)
            .env("TEST_ASSISTANT_KEY", "sk-test"),
    )
    .await;
    let c = cast(&gw).await;
    seed(&gw, &c.agent).await;
    let (_, me) = call(&gw, &c.alice, Method::GET, "/api/v1/auth/me", None).await;
    let alice = me["id"].as_i64().expect("as expected").to_string();
    let (s, _) = call(&gw, &c.alice, Method::POST, "/api/memory/memories", Some(json!({ "userId": alice, "type": "long_term", "key": "preferred_name", "value": "Ali" }))).await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &gw,
        &c.alice,
        Method::POST,
        "/api/memory/memories",
        Some(
            json!({ "userId": alice, "type": "short_term", "key": "mood", "value": "in a hurry" }),
        ),
    )
    .await;
    assert_eq!(s, 200);

    let (s, v) = call(&gw, &c.alice, Method::POST, "/api/core/messages/audio", Some(json!({ "audio": "T2dnUy1mYWtlLWF1ZGlv", "format": "ogg", "sessionId": "voice-1", "metadata": { "language": "en" } }))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["transcription"], "How long do refunds take?");
    assert_eq!(
        v["response"]["text"],
        format!(
            "Refunds take 5 business days [{}].",
            v["sources"][0].as_str().expect("as expected")
        )
    );
    let system = prompts
        .lock()
        .expect("as expected")
        .last()
        .cloned()
        .expect("as expected");
    assert!(
        system.contains("preferred_name: Ali"),
        "long-term memories go into the prompt: {system}"
    );
    assert!(
        !system.contains("in a hurry"),
        "short-term ones do not: {system}"
    );

    // The /ws audio frame: a transcription, then the reply.
    let mut socket = ws(&gw, &c.alice, "sessionId=voice-1").await;
    assert_eq!(
        crate::chat::next_event(&mut socket).await["type"],
        "connection_established"
    );
    send(
        &mut socket,
        json!({ "type": "audio", "audio": "T2dnUy1mYWtlLWF1ZGlv", "format": "ogg", "id": "a-1" })
            .to_string(),
    )
    .await;
    let t = crate::chat::next_event(&mut socket).await;
    assert_eq!(
        (t["type"].as_str(), t["text"].as_str()),
        (Some("transcription"), Some("How long do refunds take?")),
        "{t}"
    );
    assert_eq!(
        crate::chat::next_event(&mut socket).await["type"],
        "typing_start"
    );
    let m = crate::chat::next_event(&mut socket).await;
    assert_eq!(
        (m["type"].as_str(), m["sender"].as_str()),
        (Some("message"), Some("ai")),
        "{m}"
    );

    // The provider hands over when the passages do not answer.
    let (_, v) = call(
        &gw,
        &c.alice,
        Method::POST,
        "/api/core/messages",
        Some(
            json!({ "message": { "text": "hi, quick one about refunds" }, "sessionId": "voice-2" }),
        ),
    )
    .await;
    assert_eq!(v["status"], "with_ai", "{v}");
}
