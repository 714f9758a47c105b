//! 000/001 files: multipart and base64 uploads, 000's upload and delete,
//! 001's downloads.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::common::parse_id;
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::domain::conversation::{Attachment, Conversation, FILE_MAX_BYTES, FILES_PER_MESSAGE};
use crate::domain::{FieldError, Principal};
use crate::server::AppState;
use crate::service::conversations::{self, Upload};
use crate::service::policy;

use super::*;

/// The largest upload body: ten files of 5 MB and the form around them.
pub const UPLOAD_MAX_BYTES: usize = FILES_PER_MESSAGE * FILE_MAX_BYTES + 1024 * 1024;

/// The largest body of 000's message send: ten files in base64.
pub const BASE64_MAX_BYTES: usize = FILES_PER_MESSAGE * (FILE_MAX_BYTES / 3 * 4 + 4) + 1024 * 1024;

pub(super) fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

pub(super) fn too_large(message: impl Into<String>) -> ApiError {
    ApiError::new(crate::api::error::ErrorCode::PayloadTooLarge, message)
}

pub(super) use gateway_wire::text::clean_name;

/// Reads a multipart form: its text fields, and its files, each refused as
/// soon as it passes 5 MB (so a huge body is never buffered), at most ten.
pub(super) async fn read_multipart(
    request: axum::extract::Request,
) -> Result<(std::collections::HashMap<String, String>, Vec<Upload>), ApiError> {
    use gateway_wire::multipart::{FormError, Limits, boundary, read};
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > UPLOAD_MAX_BYTES) {
        return Err(too_large(format!(
            "At most {FILES_PER_MESSAGE} files of {} MB each",
            FILE_MAX_BYTES >> 20
        )));
    }
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = boundary(content_type)
        .map_err(|_| ApiError::validation("Invalid multipart body: no boundary"))?;
    let body = http_body_util::Limited::new(request.into_body(), UPLOAD_MAX_BYTES);
    let stream = axum::body::Body::new(body).into_data_stream();
    let limits = Limits {
        file_max: FILE_MAX_BYTES,
        files_max: FILES_PER_MESSAGE,
        field_max: 64 * 1024,
    };
    let form = read(stream, &boundary, limits).await.map_err(|e| match e {
        FormError::FileTooLarge(name) => too_large(format!(
            "{name:?} is larger than {} MB",
            FILE_MAX_BYTES >> 20
        )),
        FormError::TooManyFiles => ApiError::invalid_fields(vec![FieldError::new(
            "attachments",
            format!("at most {FILES_PER_MESSAGE} files per message"),
            "value_error.list.max_items",
        )]),
        FormError::FieldTooLong(name) => {
            ApiError::validation(format!("Field {name:?} is too long"))
        }
        FormError::NotText(name) => {
            ApiError::validation(format!("Field {name:?} is not UTF-8 text"))
        }
        FormError::Nul(name) => {
            ApiError::invalid_fields(vec![crate::api::extract::nul_error(name)])
        }
        FormError::Unreadable(_) => too_large("The request body is too large or was cut short"),
        FormError::Malformed(why) => ApiError::validation(format!("Invalid multipart body: {why}")),
    })?;
    let uploads = form
        .files
        .into_iter()
        .map(|f| Upload {
            file_name: f.file_name,
            declared_type: f.declared_type,
            bytes: f.bytes,
        })
        .collect();
    Ok((form.fields, uploads))
}

/// 000's answer to an upload: the file, in both documents' words.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    id: String,
    file_url: String,
    file_name: String,
    file_type: String,
    url: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    size: i64,
}

/// Uploads a file into a session (000), optionally for one of its
/// messages. Multipart: `file`, `sessionId`, `messageId`.
#[utoipa::path(
    post,
    path = "/api/chat/files",
    tag = "chat",
    request_body(content_type = "multipart/form-data", content = serde_json::Value, description = "`file`, `sessionId`, `messageId`?"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The stored file", body = UploadedFile),
        (status = 400, description = "No file, a type its bytes contradict, or a bad id", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "`messageId` is another sender's message", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such session or message (or not yours)", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Larger than 5 MB", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Too many uploads in progress (`Retry-After`)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn upload_file(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Json<UploadedFile>, ApiError> {
    if !is_multipart(&headers) {
        return Err(ApiError::validation(
            "Expected a multipart/form-data body with a file",
        ));
    }
    let (fields, mut uploads) = read_multipart(request).await?;
    let mut errors = Vec::new();
    let session = fields.get("sessionId").map(|s| s.trim().to_owned());
    if session.is_none() {
        errors.push(FieldError::missing("sessionId"));
    }
    if uploads.len() != 1 {
        errors.push(FieldError::new(
            "file",
            "exactly one file is expected",
            "value_error",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let c = visible_session(&state, &p, session.as_deref().unwrap_or_default()).await?;
    let message_id = match fields
        .get("messageId")
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
    {
        None => None,
        Some(m) => {
            let id = parse_id(m, "Message")?;
            let (messages, _) = state
                .db
                .list_messages(c.id, policy::may_see_internal(&p), Some(id + 1), 1)
                .await?;
            let Some(msg) = messages.first().filter(|msg| msg.id == id) else {
                return Err(ApiError::not_found("Message not found"));
            };
            if !policy::may_attach_to(&p, msg) {
                return Err(ApiError::forbidden(
                    "Files can be attached only to your own messages",
                ));
            }
            if state.db.attachments_of(&[id]).await?.len() >= FILES_PER_MESSAGE {
                return Err(ApiError::invalid_fields(vec![FieldError::new(
                    "file",
                    format!("at most {FILES_PER_MESSAGE} files per message"),
                    "value_error.list.max_items",
                )]));
            }
            Some(id)
        }
    };
    let upload = uploads
        .pop()
        .ok_or_else(|| ApiError::validation("file is required"))?;
    let file = conversations::store_file(state.core(), upload).await?;
    let a = state
        .db
        .insert_attachment(c.org_id, c.id, message_id, p.user_id(), &file)
        .await?;
    let v = AttachmentView::of(&a);
    Ok(Json(UploadedFile {
        id: v.id,
        file_url: v.file_url,
        file_name: v.file_name,
        file_type: v.file_type,
        url: v.url,
        name: v.name,
        kind: v.kind,
        size: v.size,
    }))
}

/// The attachment `id` if `p` may see its session.
pub(super) async fn visible_file(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<(Attachment, Conversation), ApiError> {
    let not_found = || ApiError::not_found("Attachment not found");
    let id = parse_id(id, "Attachment")?;
    let a = state.db.attachment(id).await?.ok_or_else(not_found)?;
    let c = state
        .db
        .conversation(a.conversation_id)
        .await?
        .ok_or_else(not_found)?;
    if !c.visible_to(p) {
        return Err(not_found());
    }
    Ok((a, c))
}

/// Deletes a file (000): its uploader's, or any in the organization for
/// staff. The bytes go with the last row that uses them.
#[utoipa::path(
    delete,
    path = "/api/chat/files/{fileId}",
    tag = "chat",
    params(("fileId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 403, description = "Not the uploader", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such file (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn delete_file(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Success>, ApiError> {
    let (a, _) = visible_file(&state, &p, &id).await?;
    if !policy::may_delete_file(&p, a.uploader_id) {
        return Err(ApiError::forbidden(
            "Only the uploader or staff may delete this file",
        ));
    }
    state.db.delete_attachment(a.id).await?;
    state.files.release(&state.db, &[a.sha256]).await;
    Ok(Json(Success { success: true }))
}

/// Downloads a file (001), with its checked type. HTML, SVG and XML are
/// always downloads, never shown inline; a file whose bytes prove no format
/// (only its uploader's word) is an `application/octet-stream` download.
#[utoipa::path(
    get,
    path = "/api/chat/attachments/{attachmentId}",
    tag = "chat",
    params(("attachmentId" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 404, description = "No such file (or not yours)", body = crate::api::openapi::ErrorBody),
    )
)]
pub(super) async fn download(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse as _;
    let (a, _) = visible_file(&state, &p, &id).await?;
    let bytes = tokio::fs::read(state.files.path(&a.sha256))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, attachment = a.id, "an attachment's file is missing");
            ApiError::not_found("Attachment not found")
        })?;
    // Inline only what the bytes prove (a format with magic bytes, or plain
    // text); anything else is a download of opaque bytes, whatever type
    // its uploader declared.
    let proven = infer::get(&bytes).is_some_and(|k| k.mime_type() == a.content_type)
        || (a.content_type == "text/plain" && std::str::from_utf8(&bytes).is_ok());
    let (content_type, disposition) = if proven && !crate::files::is_active_type(&a.content_type) {
        (a.content_type.as_str(), "inline")
    } else if proven {
        (a.content_type.as_str(), "attachment")
    } else {
        ("application/octet-stream", "attachment")
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(disposition, &a.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}

/// RFC 6266: an ASCII fallback name and the UTF-8 name (RFC 5987).
pub(super) fn content_disposition(kind: &str, name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}
