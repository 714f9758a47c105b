//! 003's `/ws` protocol.
//!
//! A customer connects with `?token=` (or an `Authorization` header),
//! optionally `userId` and `sessionId`; the session is created on connect
//! when new. Frames are JSON objects with a `type`:
//!
//! - `text` → `typing_start`, the assistant's `message` (`sender: "ai"`),
//!   `typing_stop`; when a person takes over, the handover notice as a
//!   `message` (`sender: "ai"`) and then `handover_initiated`; only
//!   `typing_stop` while a person has the conversation.
//! - `audio` → `transcription`, then as `text`.
//! - `handover_request` → the notice and `handover_initiated`.
//! - `typing` → relayed to the session's agents.
//!
//! Agents' replies (sent through any API) arrive as `message` with
//! `sender: "agent"`, `agentId` and `agentName`; replies the assistant gave
//! through another entry point arrive as `sender: "ai"`. A bad frame
//! (malformed JSON, unknown type, missing field, too large) gets an
//! `error` event and the connection stays open; frames over the transport
//! limit ([`TRANSPORT_MAX`]) close it.
//!
//! Staff who connect without `sessionId` and `userId` receive their
//! organization's handover events instead, each named by its transition:
//! `handover_requested` (the assistant asks for a person),
//! `handover_taken_over` (a person took it), `handover_handed_back` (the
//! assistant answers again), `{"type", "data"}`.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use axum::extract::ws::{Message as Ws, WebSocket};
use axum::extract::{Query, State};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::core::decode_audio;
use super::{Customer, customer, session_for};
use crate::api::common::{
    PING_EVERY, Protocol, SEND_TIMEOUT, SocketGuard, Upgrade, close, handshake, relay,
    socket_principal,
};
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::api::turns::{Said, take_turn};
use crate::assistant::{HandoverReason, Outcome};
use crate::domain::Principal;
use crate::domain::conversation::{SenderKind, validate_content};
use crate::events::{Event, Transition};
use crate::realtime::{Audience, Delivery, Topic};
use crate::server::AppState;
use crate::service::conversations;

pub use gateway_wire::frames::TRANSPORT_MAX;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(socket))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct WsQuery {
    /// The customer (see `/api/core/messages`).
    user_id: Option<String>,
    /// The session to join; a new one without it.
    session_id: Option<String>,
    /// A JWT, for clients that cannot set headers.
    token: Option<String>,
}

/// The 003 WebSocket protocol (see the module documentation for the frames).
#[utoipa::path(
    get,
    path = "/ws",
    tag = "003 websocket",
    params(WsQuery),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = crate::api::openapi::PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::PlatformErrorBody),
        (status = 403, description = "userId or sessionId is not the caller's", body = crate::api::openapi::PlatformErrorBody),
        (status = 429, description = "Too many open sockets (`server.max_sockets_per_user`)", body = crate::api::openapi::PlatformErrorBody),
    )
)]
async fn socket(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    Query(q): Query<WsQuery>,
    upgrade: Upgrade,
) -> Result<axum::response::Response, ApiError> {
    let p = socket_principal(&state, auth, q.token.as_deref()).await?;
    let staff_feed_wanted =
        crate::service::policy::is_staff(&p) && q.session_id.is_none() && q.user_id.is_none();
    let protocol = if staff_feed_wanted {
        Protocol::Listen
    } else {
        Protocol::Converse { max: TRANSPORT_MAX }
    };
    let connection_id = format!("conn-{:032x}", rand::random::<u128>());
    if staff_feed_wanted {
        let upgrade = handshake(&state, upgrade, &p, protocol)?;
        let events = state.bus.subscribe(Topic::Staff(p.org_id));

        let hello = established(
            &connection_id,
            &p.user_id().unwrap_or_default().to_string(),
            None,
        );
        return Ok(
            upgrade.on_upgrade(move |socket, guard| staff_feed(socket, guard, events, hello))
        );
    }
    let who = customer(&state, &p, q.user_id.as_deref()).await?;
    let upgrade = handshake(&state, upgrade, &p, protocol)?;
    let (c, session_id) = session_for(&state, &p, &who, q.session_id.as_deref(), "web").await?;
    // Subscribe before answering, so no event between the two is lost.
    let events = state.bus.subscribe(Topic::Conversation(c.id));
    let hello = established(&connection_id, &who.reference, Some(&session_id));
    let session = Session {
        state,
        principal: p,
        customer: who,
        conversation_id: c.id,
        own: HashSet::new(),
        agent_names: HashMap::new(),
        refused: 0,
    };
    Ok(upgrade.on_upgrade(move |socket, guard| session.run(socket, guard, events, hello)))
}

fn now() -> String {
    super::iso(Utc::now())
}

fn established(connection_id: &str, user_id: &str, session_id: Option<&str>) -> Value {
    json!({
        "type": "connection_established",
        "connectionId": connection_id,
        "userId": user_id,
        "sessionId": session_id,
        "message": "Connected to AI Customer Support",
        "timestamp": now(),
    })
}

fn error_event(code: &str, message: impl Into<String>) -> Value {
    json!({
        "type": "error",
        "message": message.into(),
        "code": code,
        "timestamp": now(),
    })
}

async fn send(socket: &mut WebSocket, event: &Value) -> bool {
    let text = event.to_string();
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// Staff: their organization's handover events, after the greeting.
async fn staff_feed(
    mut socket: WebSocket,
    guard: SocketGuard,
    events: tokio::sync::broadcast::Receiver<std::sync::Arc<Delivery>>,
    hello: Value,
) {
    if send(&mut socket, &hello).await {
        relay(socket, guard, events, Audience::StaffFeed, render_staff).await;
    }
}

/// A domain event as the staff feed shows it.
fn render_staff(event: &Event) -> Option<String> {
    let Event::HandoverChanged {
        conversation: c,
        transition,
        reason,
    } = event
    else {
        return None;
    };
    let kind = match transition {
        Transition::Requested => "handover_requested",
        Transition::TakenOver => "handover_taken_over",
        Transition::HandedBack => "handover_handed_back",
    };
    Some(
        json!({"type": kind, "data": {
            "sessionId": c.id.to_string(),
            "customerId": c.customer_id.map(|id| id.to_string()),
            "contactId": c.contact_id.map(|id| id.to_string()),
            "channel": c.channel.as_str(),
            "status": c.handling.as_003(),
            "agentId": c.agent_id.map(|id| id.to_string()),
            "reason": reason,
            "timestamp": now(),
        }})
        .to_string(),
    )
}

struct Session {
    state: AppState,
    principal: Principal,
    customer: Customer,
    conversation_id: i64,
    /// Messages this connection delivered itself (not relayed again).
    own: HashSet<i64>,
    agent_names: HashMap<String, String>,
    /// Frames refused in a row by the rate limits.
    refused: u32,
}

/// Frames refused in a row by the rate limits before the socket is closed.
const REFUSALS_BEFORE_CLOSE: u32 = 20;

impl Session {
    async fn run(
        mut self,
        mut socket: WebSocket,
        mut guard: SocketGuard,
        mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<Delivery>>,
        hello: Value,
    ) {
        metrics::gauge!("websocket_connections").increment(1.0);
        if send(&mut socket, &hello).await {
            let mut ping = tokio::time::interval(PING_EVERY);
            ping.tick().await;
            let mut last_seen = Instant::now();
            loop {
                tokio::select! {
                    incoming = socket.recv() => match incoming {
                        Some(Ok(Ws::Text(text))) => {
                            last_seen = Instant::now();
                            if !self.frame(&mut socket, text.as_str()).await { break; }
                        }
                        Some(Ok(Ws::Binary(_))) => {
                            last_seen = Instant::now();
                            if !self.binary(&mut socket).await { break; }
                        }
                        Some(Ok(Ws::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => last_seen = Instant::now(),
                    },
                    event = events.recv() => match event {
                        Ok(delivery) => {
                            if let Some(out) = self.relayed(&delivery.event).await
                                && !send(&mut socket, &out).await
                            {
                                break;
                            }
                        }
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
                    },
                    reason = guard.closing() => {
                        let (code, reason) = reason.frame();
                        close(&mut socket, code, reason).await;
                        break;
                    }
                    _ = ping.tick() => {
                        if last_seen.elapsed() > PING_EVERY * 2 { break; }
                        if !guard.still_valid().await {
                            let (code, reason) = crate::realtime::Closing::Revoked.frame();
                            close(&mut socket, code, reason).await;
                            break;
                        }
                        if !matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Ping(Default::default()))).await, Ok(Ok(()))) { break; }
                    }
                }
            }
        }
        metrics::gauge!("websocket_connections").decrement(1.0);
    }

    /// Handles one client frame; `false` when the connection is gone.
    async fn frame(&mut self, socket: &mut WebSocket, text: &str) -> bool {
        use gateway_wire::frames::{ClientFrame, parse};
        // Every frame counts, a refused one too: each costs an answer.
        match self.count_frame() {
            Ok(()) => {}
            Err(Some(event)) => return send(socket, &event).await,
            Err(None) => {
                close(socket, 1008, "rate limit exceeded").await;
                return false;
            }
        }
        let frame = match parse(text) {
            Ok(frame) => frame,
            Err(e) => return send(socket, &error_event(e.code, e.message)).await,
        };
        match frame {
            ClientFrame::Text { text, id } => {
                if let Err(e) = validate_content("text", &text) {
                    return send(
                        socket,
                        &error_event("invalid_request", format!("text {}", e.message)),
                    )
                    .await;
                }
                self.turn(socket, &text, id).await
            }
            ClientFrame::Audio {
                audio,
                format,
                language,
                id,
            } => {
                self.audio(socket, &audio, &format, language.as_deref(), id)
                    .await
            }
            ClientFrame::HandoverRequest => self.handover(socket).await,
            ClientFrame::Typing { is_typing } => {
                conversations::typing(
                    self.state.core(),
                    self.principal.org_id,
                    self.conversation_id,
                    self.customer.reference.clone(),
                    is_typing,
                );
                true
            }
        }
    }

    /// A binary frame: counted like any frame, and refused.
    async fn binary(&mut self, socket: &mut WebSocket) -> bool {
        match self.count_frame() {
            Ok(()) => {
                send(
                    socket,
                    &error_event("invalid_request", "frames must be JSON text"),
                )
                .await
            }
            Err(Some(event)) => send(socket, &event).await,
            Err(None) => false,
        }
    }

    /// Counts a frame that does work in the windows of the REST call it
    /// stands for (003's). Over the limit: the `error` event to send, or
    /// `None` once the client has ignored [`REFUSALS_BEFORE_CLOSE`] of them.
    fn count_frame(&mut self) -> Result<(), Option<Value>> {
        let decision = crate::api::middleware::count_request(
            &self.state,
            crate::api::dialect::Dialect::Platform,
            &self.principal,
        );
        match decision {
            Some(d) if !d.allowed => {
                self.refused += 1;
                if self.refused > REFUSALS_BEFORE_CLOSE {
                    return Err(None);
                }
                let retry = d.retry_after(crate::api::rate_limit::unix_now());
                let mut event = error_event(
                    "rate_limit_exceeded",
                    format!(
                        "Rate limit exceeded: {} requests per window; try again in {retry} s",
                        d.limit
                    ),
                );
                event["retryAfter"] = json!(retry);
                Err(Some(event))
            }
            _ => {
                self.refused = 0;
                Ok(())
            }
        }
    }

    async fn turn(&mut self, socket: &mut WebSocket, text: &str, id: Option<String>) -> bool {
        if !send(socket, &json!({"type": "typing_start", "timestamp": now()})).await {
            return false;
        }
        let result = async {
            let c = self
                .state
                .db
                .conversation(self.conversation_id)
                .await?
                .ok_or_else(|| ApiError::not_found("The session was deleted"))?;
            take_turn(
                &self.state,
                &c,
                Said {
                    text,
                    sender_id: self.customer.user_id,
                    idempotency_key: id,
                    customer_ref: self.customer.reference.clone(),
                    asked_for_person: false,
                },
            )
            .await
        }
        .await;
        let replies = match result {
            Ok((customer_message, turn)) => {
                self.own.insert(customer_message.id);
                match &turn.outcome {
                    Outcome::Answered { reply } => {
                        self.own.insert(reply.id);
                        vec![ai_message(reply)]
                    }
                    Outcome::HandedOver { notice, reason, .. } => {
                        self.own.insert(notice.id);
                        vec![
                            ai_message(notice),
                            handover_event(&notice.content, reason.as_str()),
                        ]
                    }
                    Outcome::Silent => Vec::new(),
                }
            }
            Err(e) => vec![error_event(e.code.as_platform_str(), e.message.clone())],
        };
        for reply in replies {
            if !send(socket, &reply).await {
                return false;
            }
        }
        send(socket, &json!({"type": "typing_stop", "timestamp": now()})).await
    }

    async fn audio(
        &mut self,
        socket: &mut WebSocket,
        audio: &str,
        format: &str,
        language: Option<&str>,
        id: Option<String>,
    ) -> bool {
        let heard = match decode_audio(audio, format) {
            Ok(bytes) => self
                .state
                .assistant
                .transcribe(&bytes, &format.to_ascii_lowercase(), language)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        match heard {
            Ok(text) if !text.trim().is_empty() => {
                let text = text.trim().to_owned();
                if !send(
                    socket,
                    &json!({"type": "transcription", "text": text, "timestamp": now()}),
                )
                .await
                {
                    return false;
                }
                self.turn(socket, &text, id).await
            }
            Ok(_) => {
                send(
                    socket,
                    &error_event("invalid_request", "nothing could be heard in the audio"),
                )
                .await
            }
            Err(e) => {
                send(
                    socket,
                    &error_event(e.code.as_platform_str(), e.message.clone()),
                )
                .await
            }
        }
    }

    async fn handover(&mut self, socket: &mut WebSocket) -> bool {
        let result = async {
            let c = self
                .state
                .db
                .conversation(self.conversation_id)
                .await?
                .ok_or_else(|| ApiError::not_found("The session was deleted"))?;
            Ok::<_, ApiError>(conversations::request_person(self.state.core(), &c).await?)
        }
        .await;
        let reason = HandoverReason::Requested.as_str();
        let events = match result {
            Ok(Some(notice)) => {
                self.own.insert(notice.id);
                vec![ai_message(&notice), handover_event(&notice.content, reason)]
            }
            Ok(None) => vec![handover_event(
                "A member of our team has been asked to join; they will reply here.",
                reason,
            )],
            Err(e) => vec![error_event(e.code.as_platform_str(), e.message.clone())],
        };
        for event in events {
            if !send(socket, &event).await {
                return false;
            }
        }
        true
    }

    /// What a domain event becomes for this customer, if anything: others'
    /// public messages (agents', and the assistant's from other entry
    /// points), and agents typing.
    async fn relayed(&mut self, event: &Event) -> Option<Value> {
        match event {
            Event::MessageCreated { message: m, .. } if !m.is_internal => {
                if self.own.remove(&m.id) {
                    return None;
                }
                match m.sender_kind {
                    SenderKind::Agent => {
                        let agent_id = m.sender_id.map(|id| id.to_string()).unwrap_or_default();
                        let agent_name = self.agent_name(&agent_id).await;
                        Some(json!({
                            "type": "message",
                            "text": m.content,
                            "messageId": m.id.to_string(),
                            "agentId": agent_id,
                            "agentName": agent_name,
                            "timestamp": super::iso(m.created_at),
                            "sender": "agent",
                        }))
                    }
                    SenderKind::Assistant | SenderKind::System => Some(ai_message(m)),
                    SenderKind::Customer => None,
                }
            }
            Event::Typing { who, is_typing, .. } => {
                if *who == self.customer.reference {
                    return None;
                }
                Some(json!({
                    "type": if *is_typing { "typing_start" } else { "typing_stop" },
                    "sender": "agent",
                    "timestamp": now(),
                }))
            }
            _ => None,
        }
    }

    async fn agent_name(&mut self, agent_id: &str) -> String {
        if let Some(name) = self.agent_names.get(agent_id) {
            return name.clone();
        }
        let user = match agent_id.parse::<i64>() {
            Ok(id) => self.state.db.user_by_id(id).await.ok().flatten(),
            Err(_) => None,
        };
        let name = user
            .filter(|u| u.org_id == self.principal.org_id)
            .map(|u| {
                u.full_name
                    .or(u.username)
                    .unwrap_or_else(|| "Support agent".into())
            })
            .unwrap_or_else(|| "Support agent".into());
        self.agent_names.insert(agent_id.to_owned(), name.clone());
        name
    }
}

/// The assistant's reply, or its notice, as a `message` frame.
fn ai_message(m: &crate::domain::conversation::Message) -> Value {
    json!({
        "type": "message",
        "text": m.content,
        "messageId": m.id.to_string(),
        "timestamp": super::iso(m.created_at),
        "sender": "ai",
        "sources": m.reply.sources,
    })
}

fn handover_event(message: &str, reason: &str) -> Value {
    json!({
        "type": "handover_initiated",
        "message": message,
        "reason": reason,
        "timestamp": now(),
    })
}
