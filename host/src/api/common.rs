//! What the dialects share: timestamps, path ids, paging, priorities, and
//! the WebSocket plumbing (the handshake's principal, the relay loop).

use chrono::{DateTime, SecondsFormat, Utc};
use gateway_wire::frames::{LISTEN_MAX, READ_BUFFER, WRITE_BUFFER_MAX};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{Auth, Fields};
use crate::domain::conversation::Priority;
use crate::domain::{FieldError, Principal};
use crate::events::Event;
use crate::realtime::Audience;
use crate::server::AppState;

/// A timestamp as the string dialects show it: RFC 3339, milliseconds, `Z`.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) use gateway_wire::ids::id_of;

/// A path id, else the thing does not exist (404 naming `what`).
pub(crate) fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    id_of(text).ok_or_else(|| ApiError::not_found(format!("{what} not found")))
}

/// The last page a client may ask for: beyond it `(page - 1) * limit`
/// could overflow, and no list is that long.
pub const PAGE_MAX: i64 = 1_000_000;

/// `page` (from 1) and `limit` (1 to 100) query parameters, as text so
/// that a bad value is a field error rather than a rejected query.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// From 1 (default 1).
    pub page: Option<String>,
    /// 1 to 100.
    pub limit: Option<String>,
}

impl Paging {
    /// The page and limit (`default_limit` when absent), or the invalid
    /// fields.
    pub fn parse(&self, default_limit: i64) -> Result<(i64, i64), ApiError> {
        let mut errors = Vec::new();
        let page = whole(
            self.page.as_deref(),
            1,
            1..=PAGE_MAX,
            "page",
            "must be a whole number from 1 to 1000000",
            &mut errors,
        );
        let limit = whole(
            self.limit.as_deref(),
            default_limit,
            1..=100,
            "limit",
            "must be a whole number from 1 to 100",
            &mut errors,
        );
        if errors.is_empty() {
            Ok((page, limit))
        } else {
            Err(ApiError::invalid_fields(errors))
        }
    }
}

/// A whole number query parameter within `range`; `default` when absent.
pub fn whole(
    text: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    field: &str,
    message: &str,
    errors: &mut Vec<FieldError>,
) -> i64 {
    match text.map(str::trim) {
        None | Some("") => default,
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .unwrap_or_else(|| {
                errors.push(FieldError::new(field, message, "type_error.integer"));
                default
            }),
    }
}

/// An optional `low`/`medium`/`high` field; a field error otherwise.
pub fn priority_field(f: &mut Fields<'_>, field: &str) -> Option<Priority> {
    let text = f.optional_str(field)?;
    Priority::parse(text.trim()).or_else(|| {
        f.push(FieldError::new(
            field,
            "must be low, medium or high",
            "type_error.enum",
        ));
        None
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SocketQuery {
    /// The JWT, for clients that cannot set headers on a WebSocket.
    pub(crate) token: Option<String>,
}

/// How often an idle socket is pinged; two intervals without any frame
/// from the client and it is dropped.
pub(crate) const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(25);
/// Longest a send to one client may take before that client is dropped.
pub(crate) const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A WebSocket handshake as handlers receive it (a rejection is answered in
/// the dialect's shape by [`handshake`]), with the connection's slot, which
/// the socket keeps for its life.
pub(crate) struct Upgrade {
    ws: Result<
        axum::extract::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
    slot: Option<std::sync::Arc<crate::server::ConnectionSlot>>,
    /// The bearer token the socket opens with (header or `?token=`), which
    /// it checks again on every ping.
    token: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Upgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let slot = parts
            .extensions
            .get::<std::sync::Arc<crate::server::ConnectionSlot>>()
            .cloned();
        let ws = axum::extract::WebSocketUpgrade::from_request_parts(parts, state).await;
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::middleware::bearer_token)
            .map(str::to_owned);
        let token = header.or_else(|| {
            let query = parts.uri.query()?;
            match gateway_wire::text::form_pairs(query.as_bytes()).remove("token") {
                Some(serde_json::Value::String(t)) => Some(t),
                _ => None,
            }
        });
        Ok(Upgrade { ws, slot, token })
    }
}

/// What a socket's clients may send, which sets its transport limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The server talks, the client only answers pings (001, 004, the 003
    /// staff feed): client messages are tiny.
    Listen,
    /// 003's customer `/ws`: frames up to `max` bytes (an `audio` clip).
    Converse { max: usize },
}

/// An accepted handshake: the socket's transport limits set, its owner's
/// place taken.
pub(crate) struct Accepted {
    ws: axum::extract::WebSocketUpgrade,
    slot: Option<std::sync::Arc<crate::server::ConnectionSlot>>,
    guard: SocketGuard,
}

/// What keeps an open socket honest: its owner's place (closed when the
/// owner's credentials are revoked here, or at shutdown), and the token it
/// opened with, checked again on every ping (a cache lookup; the user's
/// record every [`crate::auth::RECHECK_EVERY`]), so that a revocation made
/// elsewhere closes it too.
pub(crate) struct SocketGuard {
    ticket: crate::realtime::SocketTicket,
    state: AppState,
    token: Option<String>,
}

impl SocketGuard {
    /// Completes with the reason when the socket must close.
    pub(crate) async fn closing(&mut self) -> crate::realtime::Closing {
        self.ticket.closing().await
    }

    /// Whether the socket's token still holds (an API key's socket: yes).
    pub(crate) async fn still_valid(&self) -> bool {
        match &self.token {
            Some(token) => matches!(self.state.verify_token(token).await, Ok(Ok(_))),
            None => true,
        }
    }
}

impl Accepted {
    /// Answers the handshake; `run` gets the socket and the owner's place.
    pub(crate) fn on_upgrade<F, Fut>(self, run: F) -> axum::response::Response
    where
        F: FnOnce(axum::extract::ws::WebSocket, SocketGuard) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Accepted { ws, slot, guard } = self;
        ws.on_upgrade(move |socket| async move {
            run(socket, guard).await;
            drop(slot);
        })
    }
}

/// The upgrade with `protocol`'s limits, or a 400 when the request is not a
/// WebSocket handshake, or a 429 when `p` has
/// `server.max_sockets_per_user` sockets open already.
///
/// Every socket reads into a small buffer ([`READ_BUFFER`]), flushes each
/// frame as it is written, and stops a client that does not read once
/// [`WRITE_BUFFER_MAX`] waits for it.
pub(crate) fn handshake(
    state: &AppState,
    upgrade: Upgrade,
    p: &Principal,
    protocol: Protocol,
) -> Result<Accepted, ApiError> {
    let ws = upgrade
        .ws
        .map_err(|_| ApiError::validation("Expected a WebSocket handshake"))?;
    let max = match protocol {
        Protocol::Listen => LISTEN_MAX,
        Protocol::Converse { max } => max,
    };
    let ws = ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_BUFFER_MAX);
    // An API key speaks for a whole channel's customers: only users are
    // capped (a key's sockets count under the per-address connection cap).
    let limit = match p.kind {
        crate::domain::PrincipalKind::User(_) => state.config.server.max_sockets_per_user,
        crate::domain::PrincipalKind::ApiKey(_) => usize::MAX,
    };
    let ticket = state
        .sockets
        .open(crate::realtime::SocketOwner::of(p), limit)
        .ok_or_else(|| ApiError::too_many_sockets(state.config.server.max_sockets_per_user))?;
    Ok(Accepted {
        ws,
        slot: upgrade.slot,
        guard: SocketGuard {
            ticket,
            state: state.clone(),
            token: upgrade.token.filter(|_| p.user_id().is_some()),
        },
    })
}

/// Answers a handshake with a socket that follows conversation
/// `conversation_id`'s events as `audience` sees them. It subscribes before
/// answering, so no event between the two is lost.
pub(crate) fn follow(
    state: &AppState,
    upgrade: Upgrade,
    p: &Principal,
    conversation_id: i64,
    audience: Audience,
    render: impl Fn(&Event) -> Option<String> + Send + 'static,
) -> Result<axum::response::Response, ApiError> {
    let accepted = handshake(state, upgrade, p, Protocol::Listen)?;
    let events = state
        .bus
        .subscribe(crate::realtime::Topic::Conversation(conversation_id));
    Ok(accepted.on_upgrade(move |socket, guard| relay(socket, guard, events, audience, render)))
}

/// The principal of a WebSocket handshake: `Authorization: Bearer` (checked
/// by the middleware) or a `token` query parameter.
pub(crate) async fn socket_principal(
    state: &AppState,
    auth: Result<Auth, ApiError>,
    token: Option<&str>,
) -> Result<Principal, ApiError> {
    match (auth, token) {
        (Ok(Auth(p)), _) => Ok(p),
        (Err(_), Some(token)) => state
            .verify_token(token)
            .await?
            .map_err(|_| ApiError::unauthorized("Could not validate credentials")),
        (Err(e), None) => Err(e),
    }
}

/// Forwards bus events, as `audience` sees them, to one client until it
/// leaves, falls behind, stops answering pings, takes too long to accept a
/// frame, its credentials are revoked or the gateway shuts down.
pub(crate) async fn relay(
    mut socket: axum::extract::ws::WebSocket,
    mut guard: SocketGuard,
    mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::realtime::Delivery>>,
    audience: Audience,
    render: impl Fn(&Event) -> Option<String>,
) {
    use axum::extract::ws::Message as Ws;
    use tokio::sync::broadcast::error::RecvError;
    metrics::gauge!("websocket_connections").increment(1.0);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_seen = std::time::Instant::now();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(delivery) => {
                    let Some(frame) = delivery.frame(audience, &render) else { continue };
                    let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Text(frame.as_ref().into()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    close(&mut socket, 1013, "too slow: events were dropped; reconnect and reload").await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            reason = guard.closing() => {
                let (code, reason) = reason.frame();
                close(&mut socket, code, reason).await;
                break;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Ws::Close(_))) | Some(Err(_)) | None => break,
                // Pongs, pings (answered by the library) and client text,
                // which this protocol does not use: signs of life.
                Some(Ok(_)) => last_seen = std::time::Instant::now(),
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > PING_EVERY * 2 {
                    break;
                }
                if !guard.still_valid().await {
                    let (code, reason) = crate::realtime::Closing::Revoked.frame();
                    close(&mut socket, code, reason).await;
                    break;
                }
                let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    metrics::gauge!("websocket_connections").decrement(1.0);
}

/// Sends a close frame, giving up after [`SEND_TIMEOUT`]; the caller then
/// drops the socket.
pub(crate) async fn close(socket: &mut axum::extract::ws::WebSocket, code: u16, reason: &str) {
    let frame = axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        SEND_TIMEOUT,
        socket.send(axum::extract::ws::Message::Close(Some(frame))),
    )
    .await;
}
