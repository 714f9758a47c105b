//! The layers every request passes through, outermost first: the frame
//! (request id and span, timeout, error shaping, metrics) → panic guard →
//! body limit → authentication and rate limits → handler.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::dialect::Dialect;
use super::error::{ApiError, ErrorCode, PendingError};
use super::rate_limit::{Rule, Subject, unix_now};
use crate::auth::{TokenError, hash_api_key};
use crate::domain::{Principal, PrincipalKind, Role};
use crate::server::AppState;

/// The id of this request, echoed in `X-Request-Id` and 003's `requestId`.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

const REQUEST_ID: &str = "x-request-id";

/// Accepts a caller's request id if it is short and plain, so ids can be
/// followed across services; otherwise makes a new one.
fn request_id_from(req: &Request) -> Arc<str> {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map_or_else(new_request_id, Arc::from)
}

/// `req-` and 128 random bits from the thread-local generator (no syscall).
fn new_request_id() -> Arc<str> {
    let bits: u128 = rand::random();
    format!("req-{bits:032x}").into()
}

/// The frame around every request, in one layer (each extra layer costs a
/// service clone and a boxed future per request): a request id and a span
/// carrying it, the timeout, error shaping in the path's dialect, metrics by
/// matched route and status, and the `X-Request-Id` header.
pub async fn frame(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id_from(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let dialect = Dialect::of_path(req.uri().path());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // The path only: query strings may carry tokens.
    let span = tracing::info_span!("request", id = %id, method = %method, path = %req.uri().path());
    let limit = state.config.server.request_timeout;
    let response = async {
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(timeout_s = limit.as_secs(), "request timed out");
                ApiError::service_unavailable("The request took too long; try again")
                    .into_response()
            }
        }
    }
    .instrument(span.clone())
    .await;
    let mut response = shape_error(response, dialect, &id).await;

    let status = response.status();
    let elapsed = started.elapsed().as_secs_f64();
    // Only standard methods become label values: a client must not be able
    // to mint new time series.
    let method: &'static str = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed);
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                elapsed_ms = elapsed * 1000.0,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                elapsed_ms = elapsed * 1000.0,
                "request done"
            );
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Stamps an `X-Request-Id` on answers made outside the frame (CORS
/// preflights), so that every response carries one.
pub async fn ensure_request_id(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if !response.headers().contains_key(REQUEST_ID)
        && let Ok(value) = HeaderValue::from_str(&new_request_id())
    {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Renders a pending [`ApiError`] in `dialect`, and turns axum's bare 405
/// into a proper error; other responses pass unchanged.
async fn shape_error(response: Response, dialect: Dialect, request_id: &str) -> Response {
    let (error, response) = match response.extensions().get::<PendingError>() {
        Some(pending) => (pending.0.clone(), response),
        None if response.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED => (
            ApiError::new(ErrorCode::MethodNotAllowed, "Method not allowed"),
            response,
        ),
        None if is_rejection(&response) => {
            // The framework refused the request before any handler ran (a
            // query string with a repeated key, a path it cannot read):
            // its plain-text reason, in the dialect's shape.
            let status = response.status();
            let (parts, body) = response.into_parts();
            let reason = axum::body::to_bytes(body, 4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let error = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "The request body is too large")
            } else {
                // Named by the part the framework could not read, so that
                // 002 answers 422 with `loc` as for any invalid field.
                let part = if reason.contains("query string") {
                    "query"
                } else if reason.contains("path") {
                    "path"
                } else {
                    "body"
                };
                ApiError::invalid_fields(vec![crate::domain::FieldError::new(
                    part,
                    format!("could not be read: {reason}"),
                    "value_error",
                )])
            };
            (
                error,
                Response::from_parts(parts, axum::body::Body::empty()),
            )
        }
        None => return response,
    };
    let mut rendered = error.render(dialect, request_id);
    // Keep headers set by inner layers (rate-limit headers, Allow).
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered
                .headers_mut()
                .entry(name)
                .or_insert_with(|| value.clone());
        }
    }
    rendered
}

/// A 4xx in plain text: only the framework's own rejections look like
/// that (every answer of the gateway's is JSON, or a page it serves).
fn is_rejection(response: &Response) -> bool {
    response.status().is_client_error()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain"))
}

/// What the request's credentials proved.
#[derive(Debug, Clone, Copy)]
pub enum Authn {
    /// No credentials were sent.
    Anonymous,
    Valid(Principal),
    /// Credentials were sent and are wrong; the reason is safe to show.
    Invalid(&'static str),
}

/// The caller's address: the socket peer, or what a trusted proxy says.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Authenticates the request (without failing it: handlers decide whether
/// they need a principal), applies the dialect's rate limits and runs the
/// request within the upload budget.
pub async fn authenticate_and_limit(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let dialect = Dialect::of_path(req.uri().path());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let ip = client_ip(peer, req.headers(), &state.config.server.trusted_proxies);
    req.extensions_mut().insert(ClientIp(ip));
    // A NUL character in a path segment or query parameter: refused like
    // one in a body (see `extract::refuse_nul`).
    if let Some(part) = nul_in_uri(req.uri()) {
        return ApiError::invalid_fields(vec![super::extract::nul_error(part)]).into_response();
    }
    // Health, metrics and the API description need no principal; the
    // gateway's own API under /api/gateway does.
    if dialect == Dialect::Gateway && !req.uri().path().starts_with("/api/gateway/") {
        return next.run(req).await;
    }

    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let api_key = req.headers().get("x-api-key").cloned();
    // Providers' signed webhook posts are not limited per address: Meta
    // posts every number's events from a few addresses, and the signature,
    // not a request count, is their gate (an address is limited on its
    // refused signatures instead, in the handler). Their bodies still
    // share the upload budget.
    if req.method() == axum::http::Method::POST
        && is_provider_webhook(req.uri().path())
        && authorization.is_none()
        && api_key.is_none()
    {
        return within_upload_budget(&state, req, next).await;
    }
    let limits = &state.config.rate_limits;
    let dialect_limits = limits_of(limits, dialect);
    // A key lookup reads the database: an address already over its limit
    // gets no more of them (guessed keys are counted against the address).
    if limits.enabled && authorization.is_none() && api_key.is_some() {
        let rules = Rule::for_limits(dialect_limits, Subject::ip(ip), None);
        if let Some(d) = state.limiter.refusal(dialect.name(), &rules, unix_now()) {
            return ApiError::rate_limited(
                &d,
                &format!("Rate limit exceeded: {} requests per window", d.limit),
            )
            .into_response();
        }
    }
    let authn = match authenticate(&state, authorization, api_key).await {
        Ok(authn) => authn,
        Err(error) => return error.into_response(),
    };
    req.extensions_mut().insert(authn);

    let decision = match authn {
        Authn::Valid(p) => count_request(&state, dialect, &p),
        Authn::Anonymous | Authn::Invalid(_) if limits.enabled => {
            let rules = Rule::for_limits(dialect_limits, Subject::ip(ip), None);
            state.limiter.check(dialect.name(), &rules, unix_now())
        }
        _ => None,
    };

    let mut response = match decision {
        Some(d) if !d.allowed => ApiError::rate_limited(
            &d,
            &format!("Rate limit exceeded: {} requests per window", d.limit),
        )
        .into_response(),
        _ => within_upload_budget(&state, req, next).await,
    };
    if let Some(d) = decision {
        d.write_headers(response.headers_mut());
    }
    response
}

/// The providers' webhook paths (signed by the provider, not rate limited).
fn is_provider_webhook(path: &str) -> bool {
    path == "/api/channels/whatsapp/webhook"
}

/// Bodies announced at most this large skip the upload budget.
const SMALL_BODY: u64 = 64 * 1024;

/// A refused body is read and discarded up to this many bytes, for at most
/// [`REST_FOR`]; past either the connection is closed.
const DRAIN_MAX: usize = 64 * 1024 * 1024;

async fn drain(body: axum::body::Body, max: usize, limit: std::time::Duration) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut read = 0usize;
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > max {
                break;
            }
        }
    })
    .await;
}

/// Runs the request with its body charged to the upload budget
/// ([`crate::files::UploadBudget`]) as the bytes arrive, and held until the
/// answer; once the budget cannot take more, the body stops (the handler
/// sees it cut short) and the answer is 503 with `Retry-After`. A JSON body
/// counts twice: it is held once as text and once parsed (base64
/// attachments decoded). Bodies announced at 64 KiB or less skip it. Part
/// of `authenticate_and_limit` rather than a layer of its own: a middleware
/// layer costs every request, and this is one size check for most.
async fn within_upload_budget(state: &AppState, req: Request, next: Next) -> Response {
    use axum::body::HttpBody as _;
    if req
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= SMALL_BODY)
    {
        return next.run(req).await;
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let ledger = state.uploads.ledger(if json { 2 } else { 1 });
    let parked: Parked = Arc::default();
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(Charged {
        inner: Some(body),
        ledger: ledger.clone(),
        parked: parked.clone(),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    // A body the handler stopped reading (refused as too large, malformed,
    // over the budget): read the rest and throw it away, briefly, so that a
    // client still sending gets this answer rather than a broken pipe.
    let rest = parked.lock().ok().and_then(|mut p| p.take());
    if let Some(rest) = rest {
        drain(rest, DRAIN_MAX, REST_FOR).await;
    }
    if ledger.exhausted() {
        metrics::counter!("upload_budget_refused_total").increment(1);
        return ApiError::busy("Too many uploads are in progress; try again shortly", 2)
            .into_response();
    }
    drop(ledger);
    response
}

/// How long the rest of a refused body is read before the answer goes out
/// anyway.
const REST_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a [`Charged`] body leaves what its handler did not read.
type Parked = Arc<std::sync::Mutex<Option<axum::body::Body>>>;

/// A request body that charges its bytes to a [`crate::files::Ledger`] as
/// they arrive, and ends with an error once the budget is spent. What is
/// left unread when it is dropped (or refused) is parked for draining.
struct Charged {
    inner: Option<axum::body::Body>,
    ledger: crate::files::Ledger,
    parked: Parked,
}

impl Charged {
    fn park(&mut self) {
        use axum::body::HttpBody as _;
        if let Some(rest) = self.inner.take().filter(|b| !b.is_end_stream())
            && let Ok(mut parked) = self.parked.lock()
        {
            *parked = Some(rest);
        }
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.park();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the upload budget is spent")]
struct BudgetSpent;

impl http_body::Body for Charged {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(BudgetSpent))));
        };
        match std::pin::Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, bytes::Bytes::len);
                if self.ledger.charge(size) {
                    Poll::Ready(Some(Ok(frame)))
                } else {
                    self.park();
                    Poll::Ready(Some(Err(Box::new(BudgetSpent))))
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(axum::body::HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(
            http_body::SizeHint::default,
            axum::body::HttpBody::size_hint,
        )
    }
}

fn limits_of(limits: &crate::config::RateLimitConfig, dialect: Dialect) -> &crate::config::Limits {
    match dialect {
        Dialect::Chat => &limits.chat,
        Dialect::Assistant => &limits.assistant,
        Dialect::Platform => &limits.platform,
        // The operators' /api/gateway shares 004's limits.
        Dialect::Tickets | Dialect::Gateway => &limits.tickets,
    }
}

/// Counts one request of `p` in `dialect`'s windows; `None` when rate
/// limits are off. WebSocket frames that do work count here too, in the
/// windows of the REST call they stand for.
pub fn count_request(
    state: &AppState,
    dialect: Dialect,
    p: &Principal,
) -> Option<super::rate_limit::Decision> {
    let limits = &state.config.rate_limits;
    if !limits.enabled {
        return None;
    }
    let dialect_limits = limits_of(limits, dialect);
    let subject = match p.kind {
        PrincipalKind::User(id) => Subject::User(id),
        PrincipalKind::ApiKey(id) => Subject::ApiKey(id),
    };
    let rules = Rule::for_limits(dialect_limits, subject, Some(p.org_id));
    state.limiter.check(dialect.name(), &rules, unix_now())
}

/// `path` or `query` when that part of `uri` encodes a NUL character.
fn nul_in_uri(uri: &axum::http::Uri) -> Option<&'static str> {
    if uri.path().contains("%00") {
        Some("path")
    } else if uri.query().is_some_and(|q| q.contains("%00")) {
        Some("query")
    } else {
        None
    }
}

async fn authenticate(
    state: &AppState,
    authorization: Option<HeaderValue>,
    api_key: Option<HeaderValue>,
) -> Result<Authn, ApiError> {
    if let Some(value) = authorization {
        let Some(token) = value.to_str().ok().and_then(bearer_token) else {
            return Ok(Authn::Invalid("Could not validate credentials"));
        };
        return Ok(match state.verify_token(token).await? {
            Ok(principal) => Authn::Valid(principal),
            Err(TokenError::Expired) => Authn::Invalid("Token has expired"),
            Err(TokenError::Invalid) => Authn::Invalid("Could not validate credentials"),
        });
    }
    if let Some(value) = api_key {
        let Ok(key) = value.to_str() else {
            return Ok(Authn::Invalid("Invalid API key"));
        };
        let Some(api_key) = state.db.active_api_key(&hash_api_key(key.trim())).await? else {
            return Ok(Authn::Invalid("Invalid API key"));
        };
        state.note_api_key_use(api_key.id);
        return Ok(Authn::Valid(Principal {
            org_id: api_key.org_id,
            role: Role::Service,
            kind: PrincipalKind::ApiKey(api_key.id),
        }));
    }
    Ok(Authn::Anonymous)
}

/// The client's address: the socket peer, unless the peer is a trusted
/// proxy, in which case the right-most `X-Forwarded-For` entry that is not
/// itself a trusted proxy (entries further left are the client's to forge).
fn client_ip(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the right: skip our own proxies; the first other entry is the
    // client. An entry that does not parse ends the walk (everything left of
    // it is the client's to forge), and the last trusted hop answers for it.
    let mut client = peer;
    for entry in entries.iter().rev() {
        match parse_forwarded(entry) {
            Some(ip) if trusted.contains(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port or brackets.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// The token of an `Authorization: Bearer <token>` value (scheme in any case).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The answer to a panicking handler: a 500 in the dialect's shape. The
/// panic message goes to the log (inside the request's span) only.
pub fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = message, "handler panicked");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn forwarded_for_is_honoured_only_from_trusted_proxies() {
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().expect("header"),
        );
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            super::client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            super::client_ip(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            super::client_ip(ip("10.0.0.1"), &axum::http::HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
