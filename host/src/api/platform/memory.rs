//! 003 `/api/memory`: memories, knowledge search, vectors, health.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::core::{ServiceHealth, plugin_word, service_health, string_or_number};
use super::{check_org, iso, staff_only};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::api::openapi::PlatformErrorBody;
use crate::domain::knowledge::{
    MEMORY_KEY_MAX, MEMORY_VALUE_MAX, Memory, MemoryKind, NewDocument, NewMemory, TITLE_MAX,
    validate_text,
};
use crate::domain::{FieldError, Principal};
use crate::server::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(store_memory))
        .routes(routes!(memories))
        .routes(routes!(knowledge_search))
        .routes(routes!(store_vector))
        .routes(routes!(health))
}

/// A customer reaches only their own memories.
fn may_reach(p: &Principal, user_id: &str) -> Result<(), ApiError> {
    if !crate::service::policy::may_reach_memories_of(p, user_id) {
        return Err(ApiError::forbidden(
            "A customer may reach only their own memories",
        ));
    }
    Ok(())
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredMemory {
    id: String,
    /// Always `stored`.
    status: &'static str,
    user_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    key: String,
    /// When a short-term memory expires (absent for long-term ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

/// Stores a memory, replacing the value of the same user, type and key.
/// Short-term memories expire after `assistant.short_term_ttl_secs`;
/// long-term ones stay, and go into the assistant's prompt.
#[utoipa::path(
    post,
    path = "/api/memory/memories",
    tag = "003 memory",
    request_body(content = Value, description = "`{\"userId\", \"type\": \"short_term\"|\"long_term\", \"key\", \"value\": any JSON, \"metadata\"?: {}}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Stored", body = StoredMemory),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Another customer's memories", body = PlatformErrorBody),
    )
)]
async fn store_memory(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<StoredMemory>, ApiError> {
    let mut f = Fields::new(&body);
    let user_id = string_or_number(&mut f, &body, "userId");
    if matches!(body.get("userId"), None | Some(Value::Null)) {
        f.push(FieldError::missing("userId"));
    }
    let kind = f.required_str("type");
    let key = f.required_str("key");
    let value = match body.get("value") {
        None => {
            f.push(FieldError::missing("value"));
            Value::Null
        }
        Some(v) => v.clone(),
    };
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(_) => {
            f.push(FieldError::new(
                "metadata",
                "an object expected",
                "type_error.dict",
            ));
            Value::Null
        }
    };
    let kind = kind.and_then(|k| {
        MemoryKind::parse(&k).or_else(|| {
            f.push(FieldError::new(
                "type",
                "must be short_term or long_term",
                "type_error.enum",
            ));
            None
        })
    });
    if let Some(Err(e)) = key
        .as_ref()
        .map(|k| validate_text("key", k, MEMORY_KEY_MAX))
    {
        f.push(e);
    }
    if let Some(Err(e)) = user_id.as_ref().map(|u| validate_text("userId", u, 200)) {
        f.push(e);
    }
    if value.to_string().len() > MEMORY_VALUE_MAX || metadata.to_string().len() > MEMORY_VALUE_MAX {
        f.push(FieldError::new(
            "value",
            format!("value and metadata must each be at most {MEMORY_VALUE_MAX} bytes of JSON"),
            "value_error.any_str.max_length",
        ));
    }
    f.finish()?;
    let (user_id, kind, key) = (
        user_id.unwrap_or_default().trim().to_owned(),
        kind.unwrap_or(MemoryKind::ShortTerm),
        key.unwrap_or_default(),
    );
    may_reach(&p, &user_id)?;
    let expires_at = (kind == MemoryKind::ShortTerm).then(|| {
        chrono::Utc::now()
            + chrono::Duration::from_std(state.assistant.config.short_term_ttl)
                .unwrap_or(chrono::Duration::days(1))
    });
    let m = state
        .db
        .upsert_memory(&NewMemory {
            org_id: p.org_id,
            user_ref: user_id,
            kind,
            key,
            value,
            metadata,
            expires_at,
        })
        .await?;
    Ok(Json(StoredMemory {
        id: m.id.to_string(),
        status: "stored",
        user_id: m.user_ref,
        kind: m.kind.as_str(),
        key: m.key,
        expires_at: m.expires_at.map(iso),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemoryQuery {
    /// `short_term` or `long_term`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// One key only.
    key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MemoryView {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    key: String,
    #[schema(value_type = Object)]
    value: Value,
    /// The stored metadata plus `created_at`, `updated_at`,
    /// `last_accessed` and (short-term) `expires_at`.
    #[schema(value_type = Object)]
    metadata: Value,
}

impl From<Memory> for MemoryView {
    fn from(m: Memory) -> Self {
        let mut metadata = match m.metadata {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        metadata.insert("created_at".into(), json!(iso(m.created_at)));
        metadata.insert("updated_at".into(), json!(iso(m.updated_at)));
        metadata.insert("last_accessed".into(), json!(m.last_accessed.map(iso)));
        if let Some(at) = m.expires_at {
            metadata.insert("expires_at".into(), json!(iso(at)));
        }
        MemoryView {
            id: m.id.to_string(),
            kind: m.kind.as_str(),
            key: m.key,
            value: m.value,
            metadata: Value::Object(metadata),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoriesResponse {
    user_id: String,
    memories: Vec<MemoryView>,
}

/// A user's unexpired memories, oldest first; reading one records its
/// `last_accessed`.
#[utoipa::path(
    get,
    path = "/api/memory/memories/{userId}",
    tag = "003 memory",
    params(("userId" = String, Path), MemoryQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Memories", body = MemoriesResponse),
        (status = 400, description = "Invalid type", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Another customer's memories", body = PlatformErrorBody),
    )
)]
async fn memories(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(user_id): Path<String>,
    Query(q): Query<MemoryQuery>,
) -> Result<Json<MemoriesResponse>, ApiError> {
    let kind = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => Some(
            MemoryKind::parse(k)
                .ok_or_else(|| ApiError::validation("type must be short_term or long_term"))?,
        ),
    };
    may_reach(&p, &user_id)?;
    let list = state
        .db
        .memories(
            p.org_id,
            &user_id,
            kind,
            q.key.as_deref().filter(|k| !k.is_empty()),
            true,
        )
        .await?;
    Ok(Json(MemoriesResponse {
        user_id,
        memories: list.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct KnowledgeResult {
    /// The passage (`kb-<id>`).
    id: String,
    title: String,
    content: String,
    /// How well it matches, in (0, 1].
    relevance: f32,
    /// `knowledge_base`, or what a `/vectors` client said.
    source: String,
    url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KnowledgeResults {
    results: Vec<KnowledgeResult>,
}

/// Searches the caller's organization's knowledge base: BM25 and vectors,
/// fused by reciprocal rank; one result per passage, best first.
#[utoipa::path(
    post,
    path = "/api/memory/knowledge/search",
    tag = "003 memory",
    request_body(content = Value, description = "`{\"query\", \"organizationId\"?, \"limit\"?: 1-50 (5)}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Results", body = KnowledgeResults),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "organizationId names another organization", body = PlatformErrorBody),
    )
)]
async fn knowledge_search(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<KnowledgeResults>, ApiError> {
    let mut f = Fields::new(&body);
    let query = f.required_str("query");
    let org = string_or_number(&mut f, &body, "organizationId");
    let limit = match body.get("limit") {
        None | Some(Value::Null) => 5,
        Some(v) => match v.as_u64().filter(|n| (1..=50).contains(n)) {
            Some(n) => n as usize,
            None => {
                f.push(FieldError::new(
                    "limit",
                    "must be an integer from 1 to 50",
                    "value_error.number",
                ));
                5
            }
        },
    };
    if let Some(Err(e)) = query.as_ref().map(|q| validate_text("query", q, 2000)) {
        f.push(e);
    }
    f.finish()?;
    check_org(&state, &p, org.as_deref()).await?;
    let hits = state
        .assistant
        .search_knowledge(p.org_id, &query.unwrap_or_default(), limit)
        .await?;
    Ok(Json(KnowledgeResults {
        results: hits
            .into_iter()
            .map(|h| KnowledgeResult {
                id: crate::assistant::passage_id(&h),
                title: h.entry.title.clone(),
                content: h.entry.content.clone(),
                relevance: h.relevance,
                source: h.entry.source.clone(),
                url: h.entry.url.clone(),
            })
            .collect(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct StoredVector {
    /// The passage it became (`kb-<id>`).
    id: String,
    /// Always `stored`.
    status: &'static str,
    /// Dimensions of the vector (0 when no embedding plugin is configured:
    /// the text is then found by its words only).
    dimensions: usize,
}

/// Stores a text with its embedding for similarity search: it becomes a
/// knowledge document (split into passages when long) that knowledge search
/// and the assistant find. Staff and API keys only.
#[utoipa::path(
    post,
    path = "/api/memory/vectors",
    tag = "003 memory",
    request_body(content = Value, description = "`{\"text\", \"metadata\"?: {\"title\"?, \"source\"?, \"sourceId\"?, \"organizationId\"?, \"url\"?}}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Stored", body = StoredVector),
        (status = 400, description = "Invalid request", body = PlatformErrorBody),
        (status = 401, description = "Not authenticated", body = PlatformErrorBody),
        (status = 403, description = "Customers cannot add knowledge", body = PlatformErrorBody),
    )
)]
async fn store_vector(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<StoredVector>, ApiError> {
    staff_only(&p)?;
    let mut f = Fields::new(&body);
    let text = f.required_str("text");
    let empty = Map::new();
    let meta = match body.get("metadata") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            f.push(FieldError::new(
                "metadata",
                "an object expected",
                "type_error.dict",
            ));
            &empty
        }
    };
    let mut m = Fields::new(meta);
    let title = m.optional_str("title");
    let source = m.optional_str("source");
    let source_id = m.optional_str("sourceId");
    let url = m.optional_str("url");
    let org = string_or_number(&mut m, meta, "organizationId");
    for mut e in m.errors {
        e.field = format!("metadata.{}", e.field);
        f.push(e);
    }
    if let Some(Err(e)) = text
        .as_ref()
        .map(|t| validate_text("text", t, crate::domain::knowledge::BODY_MAX))
    {
        f.push(e);
    }
    if let Some(Err(e)) = title
        .as_ref()
        .map(|t| validate_text("metadata.title", t, TITLE_MAX))
    {
        f.push(e);
    }
    f.finish()?;
    check_org(&state, &p, org.as_deref()).await?;
    let text = text.unwrap_or_default();
    let title = title.unwrap_or_else(|| {
        let first: String = text.trim().chars().take(80).collect();
        first.lines().next().unwrap_or("").to_owned()
    });
    let (_, ids, dimensions) = state
        .assistant
        .add_document(
            p.org_id,
            &NewDocument {
                title,
                body: text,
                url,
                source: source
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| "knowledge_base".into()),
                source_id,
            },
        )
        .await?;
    Ok(Json(StoredVector {
        id: ids.first().map(|id| format!("kb-{id}")).unwrap_or_default(),
        status: "stored",
        dimensions,
    }))
}

/// The memory engine's health: the database, the search index and the
/// embedding plugin (by id).
#[utoipa::path(
    get,
    path = "/api/memory/health",
    tag = "003 memory",
    responses(
        (status = 200, description = "Healthy", body = ServiceHealth),
        (status = 503, description = "A dependency is unhealthy", body = ServiceHealth),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<ServiceHealth>) {
    let database = state.health.database(&state.db).await;
    let mut deps = Map::new();
    deps.insert(
        "database".into(),
        json!(if database { "healthy" } else { "unhealthy" }),
    );
    deps.insert("search_index".into(), json!("healthy"));
    if let Some(id) = state.assistant.config.embeddings.clone() {
        deps.insert(id.clone(), json!(plugin_word(&state, Some(&id))));
    }
    service_health(deps)
}
