//! 004 ticket categories.

use axum::Json;
use axum::extract::State;

use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::domain::FieldError;
use crate::server::AppState;
use crate::service::policy;
use crate::store::StoreError;

use super::*;

/// The organization's ticket categories.
#[utoipa::path(
    get,
    path = "/v1/categories",
    tag = "tickets",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Categories, by name", body = Vec<CategoryView>),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn list_categories(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<Vec<CategoryView>>, ApiError> {
    let list = state.db.categories(p.org_id).await?;
    Ok(Json(list.iter().map(CategoryView::of).collect()))
}

/// Adds a category (admins and agents).
#[utoipa::path(
    post,
    path = "/v1/categories",
    tag = "tickets",
    request_body(content = serde_json::Value, description = "`{\"name\": \"Billing\", \"description\": \"...\"}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The category", body = CategoryView),
        (status = 400, description = "Invalid body, or the name exists", body = crate::api::openapi::DetailError),
        (status = 403, description = "Customers cannot add categories", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn create_category(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<CategoryView>, ApiError> {
    if !policy::may_manage_tickets(&p) {
        return Err(ApiError::forbidden("Insufficient permissions"));
    }
    let mut f = Fields::new(&body);
    let name = f.required_str("name").map(|n| n.trim().to_owned());
    let description = f.optional_str("description").unwrap_or_default();
    if name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 100)
    {
        f.push(FieldError::new(
            "name",
            "must be 1 to 100 characters",
            "value_error",
        ));
    }
    if description.chars().count() > DESCRIPTION_MAX {
        f.push(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
            "value_error.any_str.max_length",
        ));
    }
    f.finish()?;
    match state
        .db
        .create_category(p.org_id, &name.unwrap_or_default(), description.trim())
        .await
    {
        Ok(c) => Ok(Json(CategoryView::of(&c))),
        Err(StoreError::Conflict(_)) => {
            Err(ApiError::validation("A category with this name exists"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Longest category description.
const DESCRIPTION_MAX: usize = 1000;
