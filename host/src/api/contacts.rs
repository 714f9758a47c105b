//! The gateway's contact API for agents, admins and API keys: the people
//! who write to the organization, their channel identities, and merging
//! two records of one person. Errors in the gateway's `{error: {code,
//! message, details}}` shape.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{Paging, iso, parse_id};
use super::error::ApiError;
use super::extract::{Auth, Body, Fields};
use super::openapi::ErrorBody;
use crate::domain::contact::{Contact, ContactDetails, Identity};
use crate::domain::conversation::Channel;
use crate::domain::{FieldError, Principal};
use crate::server::AppState;
use crate::service::{self, policy};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(get_contact))
        .routes(routes!(merge_contact))
}

fn staff(p: &Principal) -> Result<(), ApiError> {
    if policy::may_see_organization_data(p) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only agents, admins and API keys see contacts",
        ))
    }
}

#[derive(Serialize, ToSchema)]
pub struct IdentityView {
    /// `web` (a user id), `whatsapp` (a `wa_id`), `email`, `api` (a
    /// client's external id).
    kind: &'static str,
    value: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactView {
    id: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    avatar_url: Option<String>,
    #[schema(value_type = Object)]
    attributes: serde_json::Map<String, Value>,
    /// The login user this contact is, if it ever logged in.
    user_id: Option<String>,
    /// Set when this record was merged into another.
    merged_into: Option<String>,
    identities: Vec<IdentityView>,
    created_at: String,
    updated_at: String,
}

impl ContactView {
    fn of(c: &Contact, identities: &[Identity]) -> ContactView {
        ContactView {
            id: c.id.to_string(),
            name: c.name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
            avatar_url: c.avatar_url.clone(),
            attributes: c.attributes.clone(),
            user_id: c.user_id.map(|id| id.to_string()),
            merged_into: c.merged_into.map(|id| id.to_string()),
            identities: identities
                .iter()
                .map(|i| IdentityView {
                    kind: i.kind.as_str(),
                    value: i.value.clone(),
                })
                .collect(),
            created_at: iso(c.created_at),
            updated_at: iso(c.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ContactPage {
    items: Vec<ContactView>,
    total: i64,
    page: i64,
    limit: i64,
}

/// The organization's contacts, newest first (merged records left out).
#[utoipa::path(
    get,
    path = "/api/gateway/contacts",
    tag = "gateway contacts",
    params(Paging),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page of contacts", body = ContactPage),
        (status = 400, description = "Invalid paging", body = ErrorBody),
        (status = 403, description = "Customers cannot", body = ErrorBody),
    )
)]
async fn list_contacts(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<Paging>,
) -> Result<Json<ContactPage>, ApiError> {
    staff(&p)?;
    let (page, limit) = q.parse(20)?;
    let (items, total) = state
        .db
        .list_contacts(p.org_id, (page - 1) * limit, limit)
        .await?;
    let mut views = Vec::with_capacity(items.len());
    for c in &items {
        views.push(ContactView::of(c, &state.db.identities(c.id).await?));
    }
    Ok(Json(ContactPage {
        items: views,
        total,
        page,
        limit,
    }))
}

/// Request body of `POST /api/gateway/contacts`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct NewContactBody {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    avatar_url: Option<String>,
    #[schema(value_type = Object)]
    attributes: Option<serde_json::Map<String, Value>>,
    /// `[{"kind": "whatsapp", "value": "4915112345678"}]`; an email
    /// identity is added for `email` when none is given.
    #[schema(value_type = Vec<Object>)]
    identities: Option<Vec<Value>>,
}

/// Adds a contact (before it ever writes or logs in).
#[utoipa::path(
    post,
    path = "/api/gateway/contacts",
    tag = "gateway contacts",
    request_body = NewContactBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The contact", body = ContactView),
        (status = 400, description = "Invalid fields", body = ErrorBody),
        (status = 403, description = "Customers cannot", body = ErrorBody),
        (status = 409, description = "Another contact has one of the identities", body = ErrorBody),
    )
)]
async fn create_contact(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<ContactView>, ApiError> {
    staff(&p)?;
    let mut f = Fields::new(&body);
    let name = f.optional_str("name");
    let email = f.optional_str("email").map(|e| e.trim().to_lowercase());
    let phone = f.optional_str("phone");
    let avatar_url = f.optional_str("avatarUrl");
    let attributes = match body.get("attributes") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            f.push(FieldError::new(
                "attributes",
                "an object expected",
                "type_error.dict",
            ));
            Default::default()
        }
    };
    let mut identities = Vec::new();
    match body.get("identities") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let kind = item
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(Channel::parse);
                let value = item
                    .get("value")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.len() <= 320);
                match (kind, value) {
                    (Some(kind), Some(value)) => identities.push(Identity::new(kind, value)),
                    _ => f.push(FieldError::new(
                        format!("identities.{i}"),
                        "kind (web, whatsapp, email or api) and a value of 1 to 320 characters",
                        "value_error",
                    )),
                }
            }
        }
        Some(_) => f.push(FieldError::new(
            "identities",
            "a list expected",
            "type_error.list",
        )),
    }
    f.finish()?;
    if let Some(e) = &email
        && !identities.iter().any(|i| i.kind == Channel::Email)
    {
        identities.push(Identity::new(Channel::Email, e));
    }
    let details = ContactDetails {
        name,
        email,
        phone,
        avatar_url,
        attributes,
    };
    let c = service::contacts::create(state.core(), p.org_id, details, &identities).await?;
    let identities = state.db.identities(c.id).await?;
    Ok(Json(ContactView::of(&c, &identities)))
}

/// The contact of the organization named `id`, or 404.
async fn own_contact(state: &AppState, p: &Principal, id: &str) -> Result<Contact, ApiError> {
    let id = parse_id(id, "Contact")?;
    match state.db.contact_by_id(id).await? {
        Some(c) if c.org_id == p.org_id => Ok(c),
        _ => Err(ApiError::not_found("Contact not found")),
    }
}

/// One contact with its identities.
#[utoipa::path(
    get,
    path = "/api/gateway/contacts/{id}",
    tag = "gateway contacts",
    params(("id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The contact", body = ContactView),
        (status = 403, description = "Customers cannot", body = ErrorBody),
        (status = 404, description = "No such contact", body = ErrorBody),
    )
)]
async fn get_contact(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    staff(&p)?;
    let c = own_contact(&state, &p, &id).await?;
    let identities = state.db.identities(c.id).await?;
    Ok(Json(ContactView::of(&c, &identities)))
}

/// Merges contact `from` into this one: its identities and conversations
/// move here, details this one lacks are taken from it, and it is kept
/// with `mergedInto` set.
#[utoipa::path(
    post,
    path = "/api/gateway/contacts/{id}/merge",
    tag = "gateway contacts",
    params(("id" = String, Path)),
    request_body(content = Value, description = "`{\"from\": \"<contact id>\"}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The merged contact", body = ContactView),
        (status = 400, description = "from missing, or the same contact", body = ErrorBody),
        (status = 403, description = "Customers cannot", body = ErrorBody),
        (status = 404, description = "No such contact", body = ErrorBody),
        (status = 409, description = "One of them was merged already", body = ErrorBody),
    )
)]
async fn merge_contact(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<ContactView>, ApiError> {
    staff(&p)?;
    let into = own_contact(&state, &p, &id).await?;
    let mut f = Fields::new(&body);
    let from = f.optional_id("from");
    if !matches!(from, Some(Some(_))) {
        f.push(FieldError::missing("from"));
    }
    f.finish()?;
    let from = from.flatten().unwrap_or_default();
    let c = service::contacts::merge(state.core(), p.org_id, into.id, from).await?;
    let identities = state.db.identities(c.id).await?;
    Ok(Json(ContactView::of(&c, &identities)))
}
