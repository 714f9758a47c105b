//! The gateway's own content API for agents and admins (and API keys):
//! knowledge documents and FAQs, and handing conversations between the
//! assistant and agents. Errors in the gateway's `{error: {code, message,
//! details}}` shape.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::assistant::chat::FaqView;
use super::common::{Paging, parse_id};
use super::error::ApiError;
use super::extract::{Auth, Body, Fields};
use super::openapi::ErrorBody;
use crate::domain::conversation::{Conversation, Handling};
use crate::domain::knowledge::{
    BODY_MAX, Document, NewDocument, NewFaq, TITLE_MAX, validate_category, validate_text,
};
use crate::domain::{FieldError, Principal};
use crate::server::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_documents, create_document))
        .routes(routes!(get_document, update_document, delete_document))
        .routes(routes!(list_faqs, create_faq))
        .routes(routes!(update_faq, delete_faq))
        .routes(routes!(passage))
        .routes(routes!(take_over))
        .routes(routes!(hand_back))
        // Documents may be long: a megabyte of text and its JSON.
        .layer(axum::extract::DefaultBodyLimit::max(BODY_MAX + 64 * 1024))
}

fn staff(p: &Principal) -> Result<(), ApiError> {
    super::platform::staff_only(p)
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentView {
    id: String,
    title: String,
    body: String,
    url: Option<String>,
    source: String,
    source_id: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<&Document> for DocumentView {
    fn from(d: &Document) -> Self {
        DocumentView {
            id: d.id.to_string(),
            title: d.title.clone(),
            body: d.body.clone(),
            url: d.url.clone(),
            source: d.source.clone(),
            source_id: d.source_id.clone(),
            created_at: super::platform::iso(d.created_at),
            updated_at: super::platform::iso(d.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DocumentPage {
    items: Vec<DocumentView>,
    total: i64,
    page: i64,
    limit: i64,
}

/// The organization's knowledge documents, newest first.
#[utoipa::path(
    get,
    path = "/api/gateway/knowledge/documents",
    tag = "gateway knowledge",
    params(Paging),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of documents", body = DocumentPage),
        (status = 400, description = "Invalid paging", body = ErrorBody),
        (status = 403, description = "Customers cannot manage knowledge", body = ErrorBody),
    )
)]
async fn list_documents(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<Paging>,
) -> Result<Json<DocumentPage>, ApiError> {
    staff(&p)?;
    let (page, limit) = q.parse(20)?;
    let (items, total) = state
        .db
        .list_documents(p.org_id, (page - 1) * limit, limit)
        .await?;
    Ok(Json(DocumentPage {
        items: items.iter().map(DocumentView::from).collect(),
        total,
        page,
        limit,
    }))
}

/// Reads `{title, body, url?}` (and 003's `source`, `sourceId`).
fn document_fields(body: &serde_json::Map<String, Value>) -> Result<NewDocument, ApiError> {
    let mut f = Fields::new(body);
    let title = f.required_str("title");
    let text = f.required_str("body");
    let url = f.optional_str("url");
    let source = f.optional_str("source");
    let source_id = f.optional_str("sourceId");
    if let Some(Err(e)) = title.as_ref().map(|t| validate_text("title", t, TITLE_MAX)) {
        f.push(e);
    }
    if let Some(t) = &text
        && t.len() > BODY_MAX
    {
        f.push(FieldError::new(
            "body",
            format!("must be at most {BODY_MAX} bytes"),
            "value_error.any_str.max_length",
        ));
    }
    if let Some(u) = &url
        && !(u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/'))
    {
        f.push(FieldError::new(
            "url",
            "must be an http(s) URL or a path",
            "value_error.url",
        ));
    }
    f.finish()?;
    Ok(NewDocument {
        title: title.unwrap_or_default().trim().to_owned(),
        body: text.unwrap_or_default(),
        url,
        source: source
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "knowledge_base".into()),
        source_id,
    })
}

/// Adds a knowledge document; it is split into passages and searchable
/// when this answers.
#[utoipa::path(
    post,
    path = "/api/gateway/knowledge/documents",
    tag = "gateway knowledge",
    request_body(content = Value, description = "`{\"title\", \"body\" (Markdown or text), \"url\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The document", body = DocumentView),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 403, description = "Customers cannot manage knowledge", body = ErrorBody),
    )
)]
async fn create_document(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<DocumentView>, ApiError> {
    staff(&p)?;
    let new = document_fields(&body)?;
    let (document, _, _) = state.assistant.add_document(p.org_id, &new).await?;
    Ok(Json(DocumentView::from(&document)))
}

async fn own_document(state: &AppState, p: &Principal, id: &str) -> Result<Document, ApiError> {
    let id = parse_id(id, "Document")?;
    match state.db.document(id).await? {
        Some(d) if d.org_id == p.org_id => Ok(d),
        _ => Err(ApiError::not_found("Document not found")),
    }
}

#[utoipa::path(
    get,
    path = "/api/gateway/knowledge/documents/{id}",
    tag = "gateway knowledge",
    params(("id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The document", body = DocumentView),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
async fn get_document(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<DocumentView>, ApiError> {
    staff(&p)?;
    Ok(Json(DocumentView::from(
        &own_document(&state, &p, &id).await?,
    )))
}

/// Replaces a document's title, body and url; its passages are re-indexed.
#[utoipa::path(
    put,
    path = "/api/gateway/knowledge/documents/{id}",
    tag = "gateway knowledge",
    params(("id" = String, Path)),
    request_body(content = Value, description = "`{\"title\", \"body\", \"url\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The document", body = DocumentView),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
async fn update_document(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<DocumentView>, ApiError> {
    staff(&p)?;
    let existing = own_document(&state, &p, &id).await?;
    let new = document_fields(&body)?;
    let document = state
        .assistant
        .update_document(existing.id, &new)
        .await?
        .ok_or_else(|| ApiError::not_found("Document not found"))?;
    Ok(Json(DocumentView::from(&document)))
}

/// Deletes a document and its passages. 204.
#[utoipa::path(
    delete,
    path = "/api/gateway/knowledge/documents/{id}",
    tag = "gateway knowledge",
    params(("id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
async fn delete_document(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    staff(&p)?;
    let document = own_document(&state, &p, &id).await?;
    if !state.assistant.delete_document(&document).await? {
        return Err(ApiError::not_found("Document not found"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A passage or FAQ an assistant reply cites.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassageView {
    /// `kb-<id>` or `faq-<id>`.
    id: String,
    /// The knowledge document (or the FAQ) it belongs to.
    document_id: String,
    title: String,
    content: String,
    url: Option<String>,
    /// `knowledge_base`, `faq`, or what a `/vectors` client said.
    source: String,
}

/// Resolves a citation (`sources` of a reply): the passage's text and its
/// document, so an agent sees why the assistant said what it said.
#[utoipa::path(
    get,
    path = "/api/gateway/knowledge/passages/{id}",
    tag = "gateway knowledge",
    params(("id" = String, Path, description = "`kb-<id>` or `faq-<id>`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The passage", body = PassageView),
        (status = 403, description = "Customers cannot", body = ErrorBody),
        (status = 404, description = "No such passage", body = ErrorBody),
    )
)]
async fn passage(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<PassageView>, ApiError> {
    staff(&p)?;
    let entry = state
        .assistant
        .cited(p.org_id, &id)
        .ok_or_else(|| ApiError::not_found("Passage not found"))?;
    Ok(Json(PassageView {
        id,
        document_id: entry.document_id.to_string(),
        title: entry.title.clone(),
        content: entry.content.clone(),
        url: entry.url.clone(),
        source: entry.source.clone(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CategoryQuery {
    category: Option<String>,
}

/// The organization's FAQs (of one category), oldest first. Unlike 002's
/// public listing, reading them here counts no view.
#[utoipa::path(
    get,
    path = "/api/gateway/faqs",
    tag = "gateway knowledge",
    params(CategoryQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "FAQs", body = [FaqView]),
        (status = 403, description = "Customers cannot manage FAQs", body = ErrorBody),
    )
)]
async fn list_faqs(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<CategoryQuery>,
) -> Result<Json<Vec<FaqView>>, ApiError> {
    staff(&p)?;
    let list = state
        .db
        .list_faqs(
            p.org_id,
            q.category.as_deref().filter(|c| !c.is_empty()),
            false,
        )
        .await?;
    Ok(Json(list.iter().map(FaqView::from).collect()))
}

fn faq_fields(body: &serde_json::Map<String, Value>) -> Result<NewFaq, ApiError> {
    let mut f = Fields::new(body);
    let question = f.required_str("question");
    let answer = f.required_str("answer");
    let category = f
        .optional_str("category")
        .unwrap_or_else(|| "general".into());
    if let Some(Err(e)) = question
        .as_ref()
        .map(|q| validate_text("question", q, TITLE_MAX))
    {
        f.push(e);
    }
    if let Some(Err(e)) = answer.as_ref().map(|a| validate_text("answer", a, 20_000)) {
        f.push(e);
    }
    if let Err(e) = validate_category("category", &category) {
        f.push(e);
    }
    f.finish()?;
    Ok(NewFaq {
        question: question.unwrap_or_default().trim().to_owned(),
        answer: answer.unwrap_or_default().trim().to_owned(),
        category: category.trim().to_lowercase(),
    })
}

/// Adds an FAQ; searchable when this answers.
#[utoipa::path(
    post,
    path = "/api/gateway/faqs",
    tag = "gateway knowledge",
    request_body(content = Value, description = "`{\"question\", \"answer\", \"category\"? (general)}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The FAQ", body = FaqView),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 403, description = "Customers cannot manage FAQs", body = ErrorBody),
    )
)]
async fn create_faq(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<FaqView>, ApiError> {
    staff(&p)?;
    let faq = faq_fields(&body)?;
    let stored = state.assistant.add_faqs(p.org_id, vec![faq]).await?;
    let first = stored.first().ok_or_else(ApiError::internal)?;
    Ok(Json(FaqView::from(first)))
}

async fn own_faq(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<crate::domain::knowledge::Faq, ApiError> {
    let id = parse_id(id, "FAQ")?;
    match state.db.faq(id).await? {
        Some(f) if f.org_id == p.org_id => Ok(f),
        _ => Err(ApiError::not_found("FAQ not found")),
    }
}

#[utoipa::path(
    put,
    path = "/api/gateway/faqs/{id}",
    tag = "gateway knowledge",
    params(("id" = String, Path)),
    request_body(content = Value, description = "`{\"question\", \"answer\", \"category\"?}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The FAQ", body = FaqView),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 404, description = "No such FAQ", body = ErrorBody),
    )
)]
async fn update_faq(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<FaqView>, ApiError> {
    staff(&p)?;
    let existing = own_faq(&state, &p, &id).await?;
    let faq = faq_fields(&body)?;
    let stored = state
        .assistant
        .update_faq(existing.id, faq)
        .await?
        .ok_or_else(|| ApiError::not_found("FAQ not found"))?;
    Ok(Json(FaqView::from(&stored)))
}

/// Deletes an FAQ. 204.
#[utoipa::path(
    delete,
    path = "/api/gateway/faqs/{id}",
    tag = "gateway knowledge",
    params(("id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such FAQ", body = ErrorBody),
    )
)]
async fn delete_faq(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    staff(&p)?;
    let faq = own_faq(&state, &p, &id).await?;
    if !state.assistant.delete_faq(&faq).await? {
        return Err(ApiError::not_found("FAQ not found"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandlingView {
    session_id: String,
    /// `ai`, `waiting` or `agent`.
    handling: &'static str,
    /// 003's words: `with_ai`, `waiting_for_agent`, `with_agent`.
    status: &'static str,
    agent_id: Option<String>,
}

impl From<&Conversation> for HandlingView {
    fn from(c: &Conversation) -> Self {
        HandlingView {
            session_id: c.id.to_string(),
            handling: c.handling.as_str(),
            status: c.handling.as_003(),
            agent_id: c.agent_id.map(|a| a.to_string()),
        }
    }
}

async fn set_handling(
    state: &AppState,
    p: &Principal,
    id: &str,
    handling: Handling,
) -> Result<Json<HandlingView>, ApiError> {
    staff(p)?;
    let id = parse_id(id, "Conversation")?;
    let c = match state.db.conversation(id).await? {
        Some(c) if c.visible_to(p) => c,
        _ => return Err(ApiError::not_found("Conversation not found")),
    };
    let updated = crate::service::conversations::set_handling(
        state.core(),
        crate::service::Actor::of(p),
        &c,
        handling,
    )
    .await?;
    Ok(Json(HandlingView::from(&updated)))
}

/// An agent takes the conversation over: the assistant stops answering in
/// it. (Writing to the customer through the chat API does the same.)
#[utoipa::path(
    post,
    path = "/api/gateway/conversations/{id}/takeover",
    tag = "gateway knowledge",
    params(("id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Now with the agent", body = HandlingView),
        (status = 403, description = "Customers cannot", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
async fn take_over(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<HandlingView>, ApiError> {
    set_handling(&state, &p, &id, Handling::Agent).await
}

/// Hands the conversation back to the assistant, which answers the
/// customer's next message again.
#[utoipa::path(
    post,
    path = "/api/gateway/conversations/{id}/handback",
    tag = "gateway knowledge",
    params(("id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Back with the assistant", body = HandlingView),
        (status = 403, description = "Customers cannot", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
    )
)]
async fn hand_back(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<HandlingView>, ApiError> {
    set_handling(&state, &p, &id, Handling::Ai).await
}
