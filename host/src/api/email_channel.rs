//! 003 `/api/channels/email`: sending mail, taking in a mail given as
//! JSON, and starting and stopping the IMAP listener.
//!
//! Without an email entry (`[[plugins]]` with a `[plugins.mail]` table)
//! every route answers 503.

use axum::Json;
use axum::extract::State;
use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::api::openapi::PlatformErrorBody;
use crate::domain::conversation::ChannelMeta;
use crate::domain::{FieldError, Principal, PrincipalKind, Role};
use crate::email::{MailRoute, Received};
use crate::plugins;
use crate::server::AppState;
use crate::service::conversations::{self as convos, Answer, Author, Post};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(process))
        .routes(routes!(start_listener))
        .routes(routes!(stop_listener))
}

/// Longest text or HTML body taken.
const BODY_MAX: usize = 512 * 1024;
/// Longest subject.
const SUBJECT_MAX: usize = 998;
/// Attachments of one processed mail, and the size of each.
const ATTACHMENTS_MAX: usize = 10;
const ATTACHMENT_MAX: usize = 5 * 1024 * 1024;

fn no_entry() -> ApiError {
    ApiError::service_unavailable(
        "The email channel is not configured: add a [[plugins]] entry with path = \"builtin:email\" and a [plugins.mail] table",
    )
}

/// The organization's email entry: the one whose address is `from`, or
/// the first.
fn route_for<'a>(
    state: &'a AppState,
    org_id: i64,
    from: Option<&str>,
) -> Result<&'a MailRoute, ApiError> {
    let mut routes = state
        .channels
        .email
        .iter()
        .filter(|r| r.route.org_id == org_id)
        .peekable();
    if routes.peek().is_none() {
        return Err(no_entry());
    }
    match from.map(|f| f.trim().to_ascii_lowercase()) {
        Some(address) => routes
            .find(|r| r.mail.address == address)
            .map(|r| r.as_ref())
            .ok_or_else(|| {
                ApiError::invalid_fields(vec![FieldError::new(
                    "from",
                    "not the address of one of this organization's email entries",
                    "value_error",
                )])
            }),
        None => routes.next().map(|r| r.as_ref()).ok_or_else(no_entry),
    }
}

fn address(f: &mut Fields, field: &str, value: Option<String>) -> Option<String> {
    let value = value?.trim().to_ascii_lowercase();
    if crate::config::plausible_address(&value) {
        Some(value)
    } else {
        f.push(FieldError::new(
            field,
            "not an email address",
            "value_error.email",
        ));
        None
    }
}

fn bounded(f: &mut Fields, field: &str, value: &Option<String>, max: usize) {
    if value.as_ref().is_some_and(|v| v.len() > max) {
        f.push(FieldError::new(
            field,
            format!("at most {max} bytes"),
            "value_error.any_str.max_length",
        ));
    }
}

/// Sends a mail to `to`: in the conversation `threadId` names (the tag of
/// its plus address, as the gateway's mails carry in `Reply-To`), or in a
/// new conversation with that customer. `subject` defaults to `Re: ` and
/// the conversation's subject; `html` defaults to the text rendered;
/// `replyTo` replaces the plus address in `Reply-To` (replies to another
/// address do not thread back); `from` picks the organization's email
/// entry by its address.
///
/// Sent by an agent, the mail takes the conversation over from the
/// assistant; sent with an API key, it is the organization's system
/// message.
#[utoipa::path(
    post,
    path = "/api/channels/email/send",
    tag = "003 channels",
    request_body(content = Value, description = "`{\"to\", \"subject\"?, \"text\", \"html\"?, \"replyTo\"?, \"threadId\"?, \"from\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Sent (or, after 10 s without the mail server's answer, pending)", body = super::channels::SentView),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Customers cannot send channel messages", body = PlatformErrorBody),
        (status = 404, description = "`threadId` names no open conversation", body = PlatformErrorBody),
        (status = 409, description = "The mail server refused the mail", body = PlatformErrorBody),
        (status = 503, description = "No email entry serves the organization", body = PlatformErrorBody),
    )
)]
async fn send(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<super::channels::SentView>, ApiError> {
    super::platform::staff_only(&p)?;
    route_for(&state, p.org_id, None)?;
    let mut f = Fields::new(&body);
    let to = f.required_str("to");
    let subject = f.optional_str("subject");
    let text = f.optional_str("text");
    let html = f.optional_str("html");
    let reply_to = f.optional_str("replyTo");
    let thread = f.optional_str("threadId");
    let from = f.optional_str("from");
    let to = address(&mut f, "to", to);
    let reply_to = address(&mut f, "replyTo", reply_to);
    bounded(&mut f, "subject", &subject, SUBJECT_MAX);
    bounded(&mut f, "text", &text, BODY_MAX);
    bounded(&mut f, "html", &html, BODY_MAX);
    if subject.as_ref().is_some_and(|s| s.contains(['\r', '\n'])) {
        f.push(FieldError::new(
            "subject",
            "must be one line",
            "value_error",
        ));
    }
    let text = match (text, &html) {
        (Some(t), _) if !t.trim().is_empty() => Some(t),
        (_, Some(h)) if !h.trim().is_empty() => Some(text_of_html(h)),
        _ => {
            f.push(FieldError::missing("text"));
            None
        }
    };
    f.finish()?;
    let (to, text) = (to.unwrap_or_default(), text.unwrap_or_default());
    let mr = route_for(&state, p.org_id, from.as_deref())?;

    let c = match thread.as_deref().map(str::trim) {
        Some(tag) => {
            let c = crate::email::conversation_by_tag(&state, mr, &tag.to_ascii_lowercase())
                .await?
                .filter(|c| c.status.is_open())
                .ok_or_else(|| {
                    ApiError::not_found("No open email conversation has this threadId")
                })?;
            let customer = match c.contact_id {
                Some(id) => state.db.contact_by_id(id).await?.and_then(|c| c.email),
                None => None,
            };
            if customer.as_deref() != Some(to.as_str()) {
                return Err(ApiError::invalid_fields(vec![FieldError::new(
                    "to",
                    "threadId names a conversation with another customer",
                    "value_error",
                )]));
            }
            c
        }
        None => {
            let contact_id = crate::email::contact_for(&state, p.org_id, &to, None).await?;
            crate::email::new_conversation(&state, mr, contact_id, subject.as_deref()).await?
        }
    };
    let author = match p.kind {
        PrincipalKind::User(user_id) => Author::Staff {
            user_id: Some(user_id),
        },
        PrincipalKind::ApiKey(_) => Author::System,
    };
    let data = reply_to.map(|r| serde_json::json!({ "replyTo": r }).to_string());
    let post = Post {
        author,
        content: text,
        internal: false,
        idempotency_key: None,
        files: Vec::new(),
        channel: ChannelMeta {
            subject: subject.filter(|s| !s.trim().is_empty()),
            html: html.filter(|h| !h.trim().is_empty()),
            data,
            ..Default::default()
        },
        delivery: None,
        customer_ref: None,
        asked_for_person: false,
    };
    let posted = convos::post(state.core(), &c, post, Answer::Skip).await?;
    super::channels::sent_view(&state, &posted.message, "The mail was not sent").await
}

/// A crude text rendering of HTML, for a send that gives only HTML: tags
/// dropped, block ends as line breaks, the common entities decoded.
fn text_of_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + end].trim().to_ascii_lowercase();
        if tag.starts_with("br")
            || tag.starts_with("/p")
            || tag.starts_with("/div")
            || tag.starts_with("/li")
        {
            out.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    let out = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    out.trim().to_owned()
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessedView {
    /// `processed`.
    status: String,
    /// The stored message's id; for an automatic reply or a bounce (which
    /// store no customer message) the id of the conversation's note or the
    /// failed message, or `""` when there was none.
    message_id: String,
    /// What became of the mail: `stored`, `duplicate` (stored before),
    /// `auto_reply` (recorded, not answered), `bounce` (the message it
    /// names failed) or `dropped` (from the support address itself).
    outcome: String,
    /// The conversation's id, when the mail joined one.
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<String>,
}

/// Takes in a mail given as JSON, through the same pipeline as a mail the
/// IMAP listener fetched: the gateway shapes it into a mail, the plugin
/// parses it (quoted history removed, automatic mail recognized), and it
/// is threaded (`threadId` is a conversation's tag, as in its plus
/// address), stored and answered. `attachments`: `[{filename,
/// contentType, data: base64}]`, at most 10 of 5 MB. `messageId` makes a
/// retry store nothing new.
#[utoipa::path(
    post,
    path = "/api/channels/email/process",
    tag = "003 channels",
    request_body(content = Value, description = "`{\"from\", \"subject\"?, \"text\"?, \"html\"?, \"threadId\"?, \"attachments\"?: [{\"filename\", \"contentType\", \"data\"}], \"messageId\"?, \"fromName\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Processed", body = ProcessedView),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Customers cannot process mail", body = PlatformErrorBody),
        (status = 503, description = "No email entry serves the organization", body = PlatformErrorBody),
    )
)]
async fn process(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<ProcessedView>, ApiError> {
    super::platform::staff_only(&p)?;
    route_for(&state, p.org_id, None)?;
    let mut f = Fields::new(&body);
    let from = f.required_str("from");
    let subject = f.optional_str("subject");
    let text = f.optional_str("text");
    let html = f.optional_str("html");
    let thread = f.optional_str("threadId");
    let message_id = f.optional_str("messageId");
    let from_name = f.optional_str("fromName");
    let to = f.optional_str("to");
    let from = address(&mut f, "from", from);
    bounded(&mut f, "subject", &subject, SUBJECT_MAX);
    bounded(&mut f, "text", &text, BODY_MAX);
    bounded(&mut f, "html", &html, BODY_MAX);
    for (field, v) in [("subject", &subject), ("fromName", &from_name)] {
        if v.as_ref().is_some_and(|s| s.contains(['\r', '\n'])) {
            f.push(FieldError::new(field, "must be one line", "value_error"));
        }
    }
    // Only a tag of ours threads; any other thread id starts a new
    // conversation, as a mail naming an unknown thread would.
    let tag = thread
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| (4..=32).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphanumeric()));
    let message_id = message_id.map(|m| m.trim().to_owned());
    if message_id.as_ref().is_some_and(|m| {
        m.is_empty()
            || m.len() > 200
            || !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='))
    }) {
        f.push(FieldError::new(
            "messageId",
            "1 to 200 letters, digits, -, _, . or =",
            "value_error",
        ));
    }
    let attachments = match attachments_of(body.get("attachments")) {
        Ok(a) => a,
        Err(e) => {
            f.push(e);
            Vec::new()
        }
    };
    f.finish()?;
    let from = from.unwrap_or_default();
    let mr = route_for(&state, p.org_id, to.as_deref())?;
    let plugin = match state.plugins.get(mr.entry()) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(ApiError::service_unavailable(e.to_string())),
        None => return Err(no_entry()),
    };
    let recipient = match &tag {
        Some(tag) => mr.plus_address(tag),
        None => mr.mail.address.clone(),
    };
    let mut metadata = Vec::new();
    if let Some(name) = from_name.filter(|n| !n.trim().is_empty()) {
        metadata.push(plugins::Pair {
            key: "from-name".into(),
            value: name,
        });
    }
    let shaped = plugins::OutboundMessage {
        recipient,
        sender: Some(from),
        text: text.unwrap_or_default(),
        html,
        subject,
        thread_id: None,
        in_reply_to: None,
        attachments,
        template: None,
        client_message_id: message_id.unwrap_or_else(|| format!("process-{}", uuid_like())),
        metadata,
    };
    let mail = plugin.compose_mail(&shaped).await.map_err(|e| {
        tracing::info!(error = %e, "a mail to process could not be shaped");
        ApiError::validation(format!("The mail could not be shaped: {e}"))
    })?;
    let received = crate::email::receive_raw(&state, mr, mail.raw)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "a processed mail could not be stored");
            ApiError::service_unavailable("The mail could not be stored; retry")
        })?;
    let (outcome, message_id, conversation_id) = match received {
        Received::Stored(m) => ("stored", m.id.to_string(), Some(m.conversation_id)),
        Received::Duplicate(m) => ("duplicate", m.id.to_string(), Some(m.conversation_id)),
        Received::AutoReply(c) => ("auto_reply", String::new(), Some(c)),
        Received::Bounce(m) => ("bounce", m.map(|m| m.to_string()).unwrap_or_default(), None),
        Received::Dropped(_) => ("dropped", String::new(), None),
    };
    Ok(Json(ProcessedView {
        status: "processed".into(),
        message_id,
        outcome: outcome.into(),
        conversation_id: conversation_id.map(|c| c.to_string()),
    }))
}

fn uuid_like() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// `attachments`: `[{filename, contentType (or mimeType), data: base64}]`.
fn attachments_of(v: Option<&Value>) -> Result<Vec<plugins::ChannelAttachment>, FieldError> {
    let bad = |m: String| FieldError::new("attachments", m, "value_error");
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("a list expected".into())),
    };
    if items.len() > ATTACHMENTS_MAX {
        return Err(bad(format!("at most {ATTACHMENTS_MAX}")));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(bad(format!(
                "[{i}]: an object {{filename, contentType, data}} expected"
            )));
        };
        let data = m
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("[{i}].data: the file, base64-encoded")))?;
        if data.len() > ATTACHMENT_MAX / 3 * 4 + 4 {
            return Err(bad(format!("[{i}].data: at most 5 MB")));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| bad(format!("[{i}].data: not valid base64")))?;
        let mime = m
            .get("contentType")
            .or_else(|| m.get("mimeType"))
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_owned();
        if mime.contains(['\r', '\n']) || !mime.contains('/') {
            return Err(bad(format!(
                "[{i}].contentType: a MIME type such as application/pdf"
            )));
        }
        let name = m
            .get("filename")
            .and_then(Value::as_str)
            .unwrap_or("attachment");
        out.push(plugins::ChannelAttachment {
            filename: gateway_wire::text::clean_name(name),
            mime_type: mime,
            data: bytes,
        });
    }
    Ok(out)
}

#[derive(Serialize, ToSchema)]
pub struct ListenerView {
    /// `started` or `stopped`.
    status: String,
    message: String,
}

fn admin_only(p: &Principal) -> Result<(), ApiError> {
    if p.role == Role::Admin || matches!(p.kind, PrincipalKind::ApiKey(_)) {
        Ok(())
    } else {
        Err(ApiError::forbidden("This needs an admin or an API key"))
    }
}

/// The organization's email entries that have a mailbox to listen to.
fn listened<'a>(state: &'a AppState, p: &Principal) -> Result<Vec<&'a MailRoute>, ApiError> {
    admin_only(p)?;
    let routes: Vec<&MailRoute> = state
        .channels
        .email
        .iter()
        .filter(|r| r.route.org_id == p.org_id)
        .map(|r| r.as_ref())
        .collect();
    if routes.is_empty() {
        return Err(no_entry());
    }
    let with_imap: Vec<&MailRoute> = routes
        .into_iter()
        .filter(|r| r.mail.imap_url.is_some())
        .collect();
    if with_imap.is_empty() {
        return Err(ApiError::conflict(
            "No email entry of this organization has an imap_url to listen to",
        ));
    }
    Ok(with_imap)
}

/// Starts the IMAP listener of the organization's email entries (a
/// listener already running keeps running).
#[utoipa::path(
    post,
    path = "/api/channels/email/listener/start",
    tag = "003 channels",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Started", body = ListenerView),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Not an admin", body = PlatformErrorBody),
        (status = 409, description = "No entry has an imap_url", body = PlatformErrorBody),
        (status = 503, description = "No email entry serves the organization", body = PlatformErrorBody),
    )
)]
async fn start_listener(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<ListenerView>, ApiError> {
    for r in listened(&state, &p)? {
        if r.listener.switch(true) {
            tracing::info!(entry = %r.entry(), "the IMAP listener was started");
        }
    }
    Ok(Json(ListenerView {
        status: "started".into(),
        message: "Email listener has been started".into(),
    }))
}

/// Stops the IMAP listener of the organization's email entries; mail
/// waits in the mailbox until it is started again.
#[utoipa::path(
    post,
    path = "/api/channels/email/listener/stop",
    tag = "003 channels",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Stopped", body = ListenerView),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Not an admin", body = PlatformErrorBody),
        (status = 409, description = "No entry has an imap_url", body = PlatformErrorBody),
        (status = 503, description = "No email entry serves the organization", body = PlatformErrorBody),
    )
)]
async fn stop_listener(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<ListenerView>, ApiError> {
    for r in listened(&state, &p)? {
        if r.listener.switch(false) {
            tracing::info!(entry = %r.entry(), "the IMAP listener was stopped");
        }
    }
    Ok(Json(ListenerView {
        status: "stopped".into(),
        message: "Email listener has been stopped".into(),
    }))
}
