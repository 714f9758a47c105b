//! 004 tickets: list with filters, open, read, change.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::common::{Paging, id_of, priority_field};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::domain::FieldError;
use crate::domain::conversation::Priority;
use crate::domain::ticket::{DESCRIPTION_MAX, NewTicket, TicketStatus};
use crate::server::AppState;
use crate::service::{policy, tickets};
use crate::store::TicketFilter;

use super::*;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// `open`, `in_progress`, `resolved` or `closed`.
    status: Option<String>,
    /// A category id.
    category: Option<String>,
    /// `low`, `medium` or `high`.
    priority: Option<String>,
    /// From 1 (default 1).
    page: Option<String>,
    /// 1 to 100 (default 20).
    limit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TicketPage {
    items: Vec<TicketView>,
    total: i64,
    page: i64,
    pages: i64,
}

/// Lists tickets: a customer's own, or (staff) the organization's.
#[utoipa::path(
    get,
    path = "/v1/tickets",
    tag = "tickets",
    params(TicketQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page, newest first", body = TicketPage),
        (status = 400, description = "Invalid parameters", body = crate::api::openapi::DetailError),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn list_tickets(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<TicketQuery>,
) -> Result<Json<TicketPage>, ApiError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: &str| {
        errors.push(FieldError::new(field, message, "value_error"));
    };
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => TicketStatus::parse(s).or_else(|| {
            bad("status", "must be open, in_progress, resolved or closed");
            None
        }),
    };
    let priority = match q.priority.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Priority::parse(s).or_else(|| {
            bad("priority", "must be low, medium or high");
            None
        }),
    };
    // A category that does not exist, whatever its form, has no tickets.
    let category_id = q
        .category
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| id_of(s).unwrap_or(0));
    let paging = Paging {
        page: q.page,
        limit: q.limit,
    }
    .parse(20);
    let (page, limit) = match paging {
        Ok(p) if errors.is_empty() => p,
        Ok(_) => return Err(ApiError::invalid_fields(errors)),
        Err(e) => {
            errors.extend(e.fields.iter().cloned());
            return Err(ApiError::invalid_fields(errors));
        }
    };
    let filter = TicketFilter {
        org_id: p.org_id,
        customer_id: if policy::may_see_internal(&p) {
            None
        } else {
            p.user_id().or(Some(0))
        },
        status,
        category_id,
        priority,
    };
    let (rows, total) = state
        .db
        .list_tickets(&filter, (page - 1) * limit, limit)
        .await?;
    Ok(Json(TicketPage {
        items: rows.iter().map(TicketView::of).collect(),
        total,
        page,
        pages: (total + limit - 1) / limit,
    }))
}

/// Request body of `POST /v1/tickets`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateTicket {
    title: String,
    description: Option<String>,
    category_id: Option<String>,
    /// `low`, `medium` (default) or `high`.
    priority: Option<String>,
    /// Staff only: the customer the ticket is for (default: the caller).
    customer_id: Option<String>,
}

/// Opens a ticket.
#[utoipa::path(
    post,
    path = "/v1/tickets",
    tag = "tickets",
    request_body = CreateTicket,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The new ticket", body = TicketView),
        (status = 400, description = "Invalid body", body = crate::api::openapi::DetailError),
        (status = 401, description = "Not authenticated", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn create_ticket(
    State(state): State<AppState>,
    Auth(p): Auth,
    Body(body): Body,
) -> Result<Json<TicketView>, ApiError> {
    let mut f = Fields::new(&body);
    let title = f.required_str("title").map(|t| t.trim().to_owned());
    let description = f.optional_str("description").unwrap_or_default();
    let category = f.optional_id("category_id").flatten();
    let priority = priority_field(&mut f, "priority");
    let for_customer = f.optional_id("customer_id").flatten();
    check_title(&mut f, title.as_deref());
    if description.chars().count() > DESCRIPTION_MAX {
        f.push(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
            "value_error",
        ));
    }
    let priority = priority.unwrap_or(Priority::Medium);
    f.finish()?;
    if let Some(id) = category
        && !own_category(&state, &p, id).await?
    {
        return Err(ApiError::validation("category_id: no such category"));
    }
    let customer_id = match (for_customer, p.user_id()) {
        (Some(id), _) if policy::may_act_for_others(&p) => match state.db.user_by_id(id).await? {
            Some(u) if u.org_id == p.org_id => u.id,
            _ => return Err(ApiError::validation("customer_id: no such customer")),
        },
        (Some(_), _) => return Err(ApiError::forbidden("Insufficient permissions")),
        (None, Some(id)) => id,
        (None, None) => {
            return Err(ApiError::validation(
                "customer_id is required for an API key",
            ));
        }
    };
    let t = tickets::open(
        state.core(),
        NewTicket {
            org_id: p.org_id,
            conversation_id: None,
            customer_id: Some(customer_id),
            contact_id: None,
            title: title.unwrap_or_default(),
            description,
            priority,
            category_id: category,
        },
    )
    .await?;
    Ok(Json(TicketView::of(&t)))
}

/// One ticket.
#[utoipa::path(
    get,
    path = "/v1/tickets/{ticket_id}",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The ticket", body = TicketView),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn get_ticket(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<TicketView>, ApiError> {
    Ok(Json(TicketView::of(
        &visible_ticket(&state, &p, &id).await?,
    )))
}

/// Changes a ticket's status or details (staff); `ticket.updated` follows.
#[utoipa::path(
    patch,
    path = "/v1/tickets/{ticket_id}",
    tag = "tickets",
    params(("ticket_id" = String, Path)),
    request_body(content = serde_json::Value, description = "Any of `title`, `description`, `status`, `priority`, `category_id` (null clears it)"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The ticket", body = TicketView),
        (status = 400, description = "Invalid body", body = crate::api::openapi::DetailError),
        (status = 403, description = "Customers cannot change tickets", body = crate::api::openapi::DetailError),
        (status = 404, description = "No such ticket (or not yours)", body = crate::api::openapi::DetailError),
    )
)]
pub(super) async fn update_ticket(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<TicketView>, ApiError> {
    let t = visible_ticket(&state, &p, &id).await?;
    if !policy::may_manage_tickets(&p) {
        return Err(ApiError::forbidden("Insufficient permissions"));
    }
    let mut f = Fields::new(&body);
    let mut changes = ticket_changes(&mut f);
    if body.contains_key("category_id") {
        changes.category_id = f.optional_id("category_id");
    }
    f.finish()?;
    if let Some(Some(c)) = changes.category_id
        && !own_category(&state, &p, c).await?
    {
        return Err(ApiError::validation("category_id: no such category"));
    }
    let t = tickets::update(state.core(), &t, &changes).await?;
    Ok(Json(TicketView::of(&t)))
}
