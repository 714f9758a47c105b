//! 004 tickets, messages with internal notes, categories and
//! `/ws/tickets/{id}`, and 000's ticket from a chat: one ticket in both
//! views.

use reqwest::Method;
use serde_json::{Value, json};

use crate::chat::{Socket, call, cast, next_event};
use crate::common::{Gateway, databases};

async fn ticket_socket(gw: &Gateway, id: &str, token: &str) -> Result<Socket, u16> {
    let url = format!(
        "{}/ws/tickets/{id}?token={token}",
        gw.base.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test]
async fn tickets_messages_notes_and_categories() {
    for kind in databases() {
        let gw = Gateway::start(kind).await;
        let c = cast(&gw).await;

        // Categories: staff add them, everyone lists them.
        let (status, e) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/v1/categories",
            Some(json!({ "name": "Billing" })),
        )
        .await;
        assert_eq!(
            (status, e["detail"].as_str()),
            (403, Some("Insufficient permissions")),
            "{e}"
        );
        let (status, billing) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/v1/categories",
            Some(json!({ "name": "Billing", "description": "Billing and payment issues" })),
        )
        .await;
        assert_eq!(status, 200, "{billing}");
        let (status, e) = call(
            &gw,
            &c.agent,
            Method::POST,
            "/v1/categories",
            Some(json!({ "name": "billing" })),
        )
        .await;
        assert_eq!(status, 400, "{e}");
        let (_, list) = call(&gw, &c.alice, Method::GET, "/v1/categories", None).await;
        assert_eq!(
            list,
            json!([{ "id": billing["id"], "name": "Billing", "description": "Billing and payment issues" }])
        );
        let (_, list) = call(&gw, &c.outsider, Method::GET, "/v1/categories", None).await;
        assert_eq!(list, json!([]));

        // A customer opens a ticket.
        let (status, t) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/v1/tickets",
            Some(json!({ "title": "Can't login to account", "description": "Getting invalid credentials error", "category_id": billing["id"], "priority": "high" })),
        )
        .await;
        assert_eq!(status, 200, "{kind:?} {t}");
        assert_eq!(
            (t["status"].as_str(), t["priority"].as_str()),
            (Some("open"), Some("high"))
        );
        assert_eq!(t["category_id"], billing["id"]);
        let id = t["id"].as_str().expect("id").to_owned();
        let (status, e) = call(
            &gw,
            &c.alice,
            Method::POST,
            "/v1/tickets",
            Some(json!({ "description": "no title" })),
        )
        .await;
        assert_eq!(status, 400, "{e}");
        assert!(e["detail"].is_string(), "{e}");
        call(
            &gw,
            &c.alice,
            Method::POST,
            "/v1/tickets",
            Some(json!({ "title": "Second", "priority": "low" })),
        )
        .await;

        // Lists and filters: own, organization's, none.
        let (_, page) = call(&gw, &c.alice, Method::GET, "/v1/tickets", None).await;
        assert_eq!(
            (
                page["total"].as_i64(),
                page["page"].as_i64(),
                page["pages"].as_i64()
            ),
            (Some(2), Some(1), Some(1)),
            "{page}"
        );
        let item = &page["items"][1];
        for field in ["id", "title", "status", "priority", "created_at"] {
            assert!(!item[field].is_null(), "{field}: {item}");
        }
        let (_, page) = call(
            &gw,
            &c.agent,
            Method::GET,
            &format!(
                "/v1/tickets?priority=high&status=open&category={}",
                billing["id"].as_str().unwrap_or_default()
            ),
            None,
        )
        .await;
        assert_eq!(page["total"], 1, "{page}");
        let (_, page) = call(
            &gw,
            &c.agent,
            Method::GET,
            "/v1/tickets?status=resolved",
            None,
        )
        .await;
        assert_eq!(page["total"], 0);
        let (_, page) = call(&gw, &c.bob, Method::GET, "/v1/tickets", None).await;
        assert_eq!(page["total"], 0);
        let (status, e) = call(&gw, &c.agent, Method::GET, "/v1/tickets?limit=101", None).await;
        assert_eq!(status, 400, "{e}");
        let (status, e) = call(
            &gw,
            &c.outsider,
            Method::GET,
            &format!("/v1/tickets/{id}"),
            None,
        )
        .await;
        assert_eq!(
            (status, e),
            (404, json!({ "detail": "Resource not found" }))
        );
        assert_eq!(
            call(&gw, &c.bob, Method::GET, &format!("/v1/tickets/{id}"), None)
                .await
                .0,
            404
        );

        // Sockets: the customer's and the staff's.
        let mut customer = ticket_socket(&gw, &id, &c.alice)
            .await
            .expect("customer socket");
        let mut staff = ticket_socket(&gw, &id, &c.agent)
            .await
            .expect("staff socket");
        assert_eq!(ticket_socket(&gw, &id, &c.bob).await.err(), Some(404));

        // Messages, and a note the customer never sees.
        let mpath = format!("/v1/tickets/{id}/messages");
        let (status, m) = call(
            &gw,
            &c.alice,
            Method::POST,
            &mpath,
            Some(json!({ "content": "Still locked out" })),
        )
        .await;
        assert_eq!(
            (status, m["is_internal"].as_bool(), m["sender"].as_str()),
            (200, Some(false), Some("customer")),
            "{m}"
        );
        let (status, _) = call(
            &gw,
            &c.alice,
            Method::POST,
            &mpath,
            Some(json!({ "content": "psst", "is_internal": true })),
        )
        .await;
        assert_eq!(status, 403);
        let (status, note) = call(
            &gw,
            &c.agent,
            Method::POST,
            &mpath,
            Some(json!({ "content": "Looks like a fraud lock", "is_internal": true })),
        )
        .await;
        assert_eq!((status, note["is_internal"].as_bool()), (200, Some(true)));
        let (_, reply) = call(&gw, &c.agent, Method::POST, &mpath, Some(json!({ "content": "Have you tried resetting your password?", "is_internal": false }))).await;
        let (status, t2) = call(
            &gw,
            &c.agent,
            Method::PATCH,
            &format!("/v1/tickets/{id}"),
            Some(json!({ "status": "in_progress" })),
        )
        .await;
        assert_eq!(
            (status, t2["status"].as_str()),
            (200, Some("in_progress")),
            "{t2}"
        );
        let (status, _) = call(
            &gw,
            &c.alice,
            Method::PATCH,
            &format!("/v1/tickets/{id}"),
            Some(json!({ "status": "resolved" })),
        )
        .await;
        assert_eq!(status, 403);

        let (_, seen) = call(&gw, &c.alice, Method::GET, &mpath, None).await;
        let contents: Vec<&str> = seen
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        assert_eq!(
            contents,
            [
                "Still locked out",
                // The assistant knows nothing: it hands over.
                "Connecting you with a human agent...",
                "Have you tried resetting your password?"
            ]
        );
        let (_, seen) = call(&gw, &c.agent, Method::GET, &mpath, None).await;
        assert_eq!(seen.as_array().map(Vec::len), Some(4));

        let kinds = |events: &[Value]| {
            events
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["event"].as_str().unwrap_or_default(),
                        e["data"]["content"]
                            .as_str()
                            .or(e["data"]["status"].as_str())
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut events = Vec::new();
        for _ in 0..4 {
            events.push(next_event(&mut customer).await);
        }
        assert_eq!(
            kinds(&events),
            [
                "message.received Still locked out",
                "message.received Connecting you with a human agent...",
                "message.received Have you tried resetting your password?",
                "ticket.updated in_progress"
            ]
        );
        let mut events = Vec::new();
        for _ in 0..5 {
            events.push(next_event(&mut staff).await);
        }
        assert_eq!(
            kinds(&events)[2],
            "message.received Looks like a fraud lock"
        );
        assert_eq!(events[4]["type"], "ticket.updated");
        assert_eq!(reply["ticket_id"].as_str(), Some(id.as_str()));
    }
}

#[tokio::test]
async fn a_ticket_from_a_chat_is_the_same_ticket_in_004() {
    let gw = Gateway::start(databases()[0]).await;
    let c = cast(&gw).await;
    let (_, s) = call(
        &gw,
        &c.alice,
        Method::POST,
        "/api/chat/sessions",
        Some(json!({ "subject": "Broken zipper" })),
    )
    .await;
    let sid = s["id"].as_str().expect("id").to_owned();
    let path = format!("/api/chat/sessions/{sid}/ticket");
    let (status, made) = call(
        &gw,
        &c.alice,
        Method::POST,
        &path,
        Some(json!({ "priority": "high" })),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(
        (made["chatTicketId"].as_str(), made["status"].as_str()),
        (Some(sid.as_str()), Some("open"))
    );
    let tid = made["ticketId"].as_str().expect("ticketId").to_owned();
    let (_, again) = call(&gw, &c.alice, Method::POST, &path, Some(json!({}))).await;
    assert_eq!(again["ticketId"].as_str(), Some(tid.as_str()));
    let (status, t) = call(
        &gw,
        &c.agent,
        Method::GET,
        &format!("/v1/tickets/{tid}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            t["title"].as_str(),
            t["priority"].as_str(),
            t["session_id"].as_str()
        ),
        (Some("Broken zipper"), Some("high"), Some(sid.as_str()))
    );
    assert_eq!(
        call(&gw, &c.bob, Method::POST, &path, Some(json!({})))
            .await
            .0,
        404
    );
    // 000's category is free text: an unknown name is created (and the
    // chat's one ticket is answered again).
    let (status, e) = call(
        &gw,
        &c.alice,
        Method::POST,
        &path,
        Some(json!({ "category": "Nope" })),
    )
    .await;
    assert_eq!(
        (status, e["ticketId"].as_str()),
        (200, made["ticketId"].as_str()),
        "{e}"
    );

    // A reply on the ticket shows in the chat's history.
    call(
        &gw,
        &c.agent,
        Method::POST,
        &format!("/v1/tickets/{tid}/messages"),
        Some(json!({ "content": "We will send a new one." })),
    )
    .await;
    let (_, page) = call(
        &gw,
        &c.alice,
        Method::GET,
        &format!("/api/chat/sessions/{sid}/messages"),
        None,
    )
    .await;
    assert_eq!(page["messages"][0]["content"], "We will send a new one.");
    assert_eq!(page["messages"][0]["sender"], "support");
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(gw: &Gateway, secret: &str, payload: Value) -> (u16, Value) {
    let body = payload.to_string();
    let r = gw
        .http
        .post(gw.url("/v1/webhooks/incoming"))
        .header("content-type", "application/json")
        .header("X-Signature", sign(secret, body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn signed_incoming_webhooks() {
    // Not configured: a clear 503.
    let gw = Gateway::start(databases()[0]).await;
    let (status, e) = deliver(
        &gw,
        "whatever-secret-123",
        json!({ "event": "ticket.created", "data": {} }),
    )
    .await;
    assert_eq!((status, e["detail"].is_string()), (503, true), "{e}");
    drop(gw);

    let secret = "incoming-webhook-secret-0123";
    let gw = Gateway::start_with(
        crate::common::Options::new(databases()[0]).env("GATEWAY_WEBHOOK_SECRET", secret),
    )
    .await;
    let c = cast(&gw).await;
    let (status, e) = deliver(
        &gw,
        "another-secret-entirely",
        json!({ "event": "ticket.created", "data": {} }),
    )
    .await;
    assert_eq!((status, e), (401, json!({ "detail": "Invalid signature" })));
    let r = gw
        .http
        .post(gw.url("/v1/webhooks/incoming"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    let (status, made) = deliver(
        &gw,
        secret,
        json!({ "event": "ticket.created", "data": { "title": "Order 1042 lost", "customer_email": "alice@example.com", "priority": "high" } }),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let tid = made["ticket_id"].as_str().expect("ticket_id").to_owned();
    let (_, t) = call(
        &gw,
        &c.alice,
        Method::GET,
        &format!("/v1/tickets/{tid}"),
        None,
    )
    .await;
    assert_eq!(
        (t["title"].as_str(), t["priority"].as_str()),
        (Some("Order 1042 lost"), Some("high"))
    );

    let (status, _) = deliver(
        &gw,
        secret,
        json!({ "event": "ticket.updated", "data": { "ticket_id": tid, "status": "resolved" } }),
    )
    .await;
    assert_eq!(status, 200);
    let message = json!({ "event": "message.created", "data": { "ticket_id": tid, "content": "Carrier found it", "id": "evt-7" } });
    let (status, first) = deliver(&gw, secret, message.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (_, again) = deliver(&gw, secret, message).await;
    assert_eq!(
        first["message_id"], again["message_id"],
        "a redelivery creates nothing new"
    );
    let (_, t) = call(
        &gw,
        &c.alice,
        Method::GET,
        &format!("/v1/tickets/{tid}"),
        None,
    )
    .await;
    assert_eq!(t["status"], "resolved");
    let (_, messages) = call(
        &gw,
        &c.alice,
        Method::GET,
        &format!("/v1/tickets/{tid}/messages"),
        None,
    )
    .await;
    assert_eq!(messages.as_array().map(Vec::len), Some(1));
    assert_eq!(messages[0]["sender"], "system");

    // An email no customer has: the ticket is for a contact with that
    // address, with no login customer.
    let (status, made) = deliver(&gw, secret, json!({ "event": "ticket.created", "data": { "title": "x", "customer_email": "nobody@example.com" } })).await;
    assert_eq!(status, 200, "{made}");
    let (_, t) = call(
        &gw,
        &c.agent,
        Method::GET,
        &format!("/v1/tickets/{}", made["ticket_id"].as_str().expect("id")),
        None,
    )
    .await;
    assert_eq!(t["customer_id"], Value::Null, "{t}");
    let (status, _) = deliver(
        &gw,
        secret,
        json!({ "event": "ticket.deleted", "data": {} }),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = deliver(&gw, secret, json!({ "event": "ticket.updated", "organization": "other", "data": { "ticket_id": tid, "status": "open" } })).await;
    assert_eq!(
        status, 404,
        "another organization's webhook cannot reach this ticket"
    );
}

/// Delivers `body` as it is, signed over `"<ts>." + body` when `ts` is
/// given; answers the status and JSON body.
async fn deliver_raw(gw: &Gateway, secret: &str, ts: Option<i64>, body: String) -> (u16, Value) {
    let signed = match ts {
        Some(ts) => format!("{ts}.{body}"),
        None => body.clone(),
    };
    let mut req = gw
        .http
        .post(gw.url("/v1/webhooks/incoming"))
        .header("content-type", "application/json")
        .header("X-Signature", sign(secret, signed.as_bytes()));
    if let Some(ts) = ts {
        req = req.header("X-Webhook-Timestamp", ts.to_string());
    }
    let r = req.body(body).send().await.expect("send");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn incoming_webhooks_resist_replays_and_cross_tenant_writes() {
    let other_secret = "the-other-orgs-own-secret";
    let default_secret = "the-default-orgs-own-key";
    let gw = Gateway::start_with(crate::common::Options::new(databases()[0]).toml(&format!(
        "[webhooks.incoming_secrets]\nother = \"{other_secret}\"\ndefault = \"{default_secret}\""
    )))
    .await;
    let c = cast(&gw).await;
    let created = |org: Value| json!({ "event": "ticket.created", "organization": org, "data": { "title": "From the CRM" } });

    // An organization's own key writes into that organization only.
    let (status, _) = deliver(&gw, other_secret, created(json!("other"))).await;
    assert_eq!(status, 200);
    let (status, e) = deliver(&gw, other_secret, created(Value::Null)).await;
    assert_eq!((status, e), (401, json!({ "detail": "Invalid signature" })));
    let (status, _) = deliver(&gw, default_secret, created(json!("other"))).await;
    assert_eq!(status, 401);
    // organization is a slug string or nothing.
    for bad in [
        json!(1),
        json!(true),
        json!({ "slug": "other" }),
        json!("Not A Slug"),
    ] {
        let (status, e) = deliver(&gw, default_secret, created(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {e}");
        assert!(e["detail"].is_string(), "{e}");
    }

    // A delivery id is handled once; a repeat answers the first outcome.
    let once =
        json!({ "event": "ticket.created", "id": "crm-evt-1", "data": { "title": "Only once" } });
    let (status, first) = deliver(&gw, default_secret, once.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = deliver(&gw, default_secret, once).await;
    assert_eq!((status, &again), (200, &first));
    let (_, list) = call(&gw, &c.agent, Method::GET, "/v1/tickets?limit=100", None).await;
    let copies = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|t| t["title"] == "Only once")
        .count();
    assert_eq!(copies, 1);
    let (status, _) = deliver(
        &gw,
        default_secret,
        json!({ "event": "ticket.created", "id": "x".repeat(201), "data": { "title": "t" } }),
    )
    .await;
    assert_eq!(status, 400);

    // A signed timestamp must be fresh, and signed.
    let now = chrono::Utc::now().timestamp();
    let body = json!({ "event": "ticket.created", "data": { "title": "Timed" } }).to_string();
    let (status, e) = deliver_raw(&gw, default_secret, Some(now), body.clone()).await;
    assert_eq!(status, 200, "{e}");
    let (status, _) = deliver_raw(&gw, default_secret, Some(now - 3600), body.clone()).await;
    assert_eq!(status, 401, "an hour-old delivery is a replay");
    let r = gw
        .http
        .post(gw.url("/v1/webhooks/incoming"))
        .header("X-Signature", sign(default_secret, body.as_bytes()))
        .header("X-Webhook-Timestamp", now.to_string())
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401, "the timestamp must be under the signature");

    // Too large: 413 in 004's shape.
    let huge = json!({ "event": "ticket.created", "data": { "title": "t", "description": "d".repeat(300 * 1024) } });
    let (status, e) = deliver(&gw, default_secret, huge).await;
    assert_eq!(status, 413, "{e}");
    assert!(e["detail"].is_string(), "{e}");

    // customer_email names a customer, never one of the staff.
    let (status, e) = deliver(&gw, default_secret, json!({ "event": "ticket.created", "data": { "title": "t", "customer_email": "agnes@example.com" } })).await;
    assert_eq!(status, 400, "{e}");
}
