//! What the dialects share: timestamps, path ids, paging, priorities, and
//! the WebSocket plumbing (the handshake's principal, the relay loop).

use chrono::{DateTime, SecondsFormat, Utc};
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

/// An id as clients send it: positive decimal digits, else nothing.
pub(crate) fn id_of(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|n| *n > 0)
}

/// A path id, else the thing does not exist (404 naming `what`).
pub(crate) fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    id_of(text).ok_or_else(|| ApiError::not_found(format!("{what} not found")))
}

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
            1..=i64::MAX,
            "page",
            "must be a whole number from 1",
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
/// the dialect's shape by [`handshake`]).
pub(crate) type Upgrade = Result<
    axum::extract::WebSocketUpgrade,
    axum::extract::ws::rejection::WebSocketUpgradeRejection,
>;

/// The upgrade, or a 400 when the request is not a WebSocket handshake.
pub(crate) fn handshake(upgrade: Upgrade) -> Result<axum::extract::WebSocketUpgrade, ApiError> {
    upgrade.map_err(|_| ApiError::validation("Expected a WebSocket handshake"))
}

/// Answers a handshake with a socket that follows conversation
/// `conversation_id`'s events as `audience` sees them. It subscribes before
/// answering, so no event between the two is lost.
pub(crate) fn follow(
    state: &AppState,
    upgrade: Upgrade,
    conversation_id: i64,
    audience: Audience,
    render: impl Fn(&Event) -> Option<String> + Send + 'static,
) -> Result<axum::response::Response, ApiError> {
    let upgrade = handshake(upgrade)?;
    let events = state
        .bus
        .subscribe(crate::realtime::Topic::Conversation(conversation_id));
    Ok(upgrade.on_upgrade(move |socket| relay(socket, events, audience, render)))
}

/// The principal of a WebSocket handshake: `Authorization: Bearer` (checked
/// by the middleware) or a `token` query parameter.
pub(crate) fn socket_principal(
    state: &AppState,
    auth: Result<Auth, ApiError>,
    token: Option<&str>,
) -> Result<Principal, ApiError> {
    match (auth, token) {
        (Ok(Auth(p)), _) => Ok(p),
        (Err(_), Some(token)) => state
            .tokens
            .verify(token)
            .map_err(|_| ApiError::unauthorized("Could not validate credentials")),
        (Err(e), None) => Err(e),
    }
}

/// Forwards bus events, as `audience` sees them, to one client until it
/// leaves, falls behind, stops answering pings, or takes too long to accept
/// a frame.
pub(crate) async fn relay(
    mut socket: axum::extract::ws::WebSocket,
    mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::realtime::Delivery>>,
    audience: Audience,
    render: impl Fn(&Event) -> Option<String>,
) {
    use axum::extract::ws::{CloseFrame, Message as Ws};
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
                    let close = CloseFrame { code: 1013, reason: "too slow: events were dropped; reconnect and reload".into() };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Close(Some(close)))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
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
                let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Ws::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    metrics::gauge!("websocket_connections").decrement(1.0);
}
