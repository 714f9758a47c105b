//! Dialect 003's assistant side: the chatbot core (`/api/core`), the memory
//! engine (`/api/memory`) and the `/ws` protocol, with `{error, requestId}`
//! errors and string ids.
//!
//! Sessions: a `sessionId` that the client chose (`session456`) names a
//! conversation created on first use and kept under that name; one of our
//! own conversation ids names that conversation. Customers: a customer's
//! token speaks for that customer (`userId`, when given, must be theirs);
//! staff tokens and API keys speak for the customer `userId` names: one of
//! the organization's users by id, or a channel's own reference (a phone
//! number), kept as a customer who cannot log in.

pub(crate) mod core;
mod memory;
mod ws;

use utoipa_axum::router::OpenApiRouter;

use crate::api::error::ApiError;
use crate::domain::contact::{ContactDetails, Identity};
use crate::domain::conversation::{Channel, Conversation, NewConversation, Priority};
use crate::domain::{Principal, Role};
use crate::server::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(core::router())
        .merge(memory::router())
        .merge(ws::router())
}

/// The customer a request speaks for: their login user (if they are one),
/// their contact, and their memory reference (003 `userId`).
#[derive(Debug, Clone)]
pub(crate) struct Customer {
    pub user_id: Option<i64>,
    pub contact_id: i64,
    pub reference: String,
}

impl Customer {
    async fn user(
        state: &AppState,
        org_id: i64,
        user_id: i64,
        reference: String,
    ) -> Result<Customer, ApiError> {
        let contact_id =
            crate::service::conversations::contact_of_user(state.core(), org_id, user_id).await?;
        Ok(Customer {
            user_id: Some(user_id),
            contact_id,
            reference,
        })
    }
}

/// Resolves 003's `userId` for principal `p` (see the module docs).
pub(crate) async fn customer(
    state: &AppState,
    p: &Principal,
    user_id: Option<&str>,
) -> Result<Customer, ApiError> {
    let user_id = user_id.map(str::trim).filter(|u| !u.is_empty());
    if let Some(u) = user_id
        && u.chars().count() > 200
    {
        return Err(ApiError::validation(
            "userId must be at most 200 characters",
        ));
    }
    if p.role == Role::Customer {
        let own = p.user_id().unwrap_or_default();
        return match user_id {
            Some(u) if u != own.to_string() => Err(ApiError::forbidden(
                "A customer may act only as themselves: userId must be your own id",
            )),
            _ => Customer::user(state, p.org_id, own, own.to_string()).await,
        };
    }
    match user_id {
        None => match p.user_id() {
            Some(own) => Customer::user(state, p.org_id, own, own.to_string()).await,
            None => Err(ApiError::validation(
                "userId is required with an API key: it names the customer",
            )),
        },
        Some(u) => {
            if let Some(id) = crate::api::common::id_of(u)
                && let Some(user) = state.db.user_by_id(id).await?
                && user.org_id == p.org_id
            {
                return Customer::user(state, p.org_id, user.id, u.to_owned()).await;
            }
            // A client's own id for someone who never logged in: a contact
            // known by that `api` identity.
            let contact = crate::service::contacts::find_or_create(
                state.core(),
                p.org_id,
                &Identity::new(Channel::Api, u),
                &ContactDetails::default(),
            )
            .await?;
            Ok(Customer {
                user_id: None,
                contact_id: contact.id,
                reference: u.to_owned(),
            })
        }
    }
}

/// Checks a client-chosen `sessionId`.
fn check_session_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > 200 || id.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "sessionId must be 1 to 200 visible characters",
        ));
    }
    Ok(())
}

/// The conversation `session_id` names, if it exists and `p` may see it.
pub(crate) async fn find_session(
    state: &AppState,
    p: &Principal,
    session_id: &str,
) -> Result<Option<Conversation>, ApiError> {
    check_session_id(session_id)?;
    let found = match state
        .db
        .conversation_by_external(p.org_id, session_id)
        .await?
    {
        Some(c) => Some(c),
        None => match crate::api::common::id_of(session_id) {
            Some(id) => state.db.conversation(id).await?,
            None => None,
        },
    };
    match found {
        Some(c) if c.visible_to(p) => Ok(Some(c)),
        Some(_) => Err(ApiError::not_found("Session not found")),
        None => Ok(None),
    }
}

/// The session a message goes to: the one named (created under that name
/// on first use), or a new one. Answers it and the `sessionId` to show.
pub(crate) async fn session_for(
    state: &AppState,
    p: &Principal,
    customer: &Customer,
    session_id: Option<&str>,
    channel: &str,
) -> Result<(Conversation, String), ApiError> {
    let new = NewConversation {
        org_id: p.org_id,
        customer_id: customer.user_id,
        contact_id: Some(customer.contact_id),
        subject: None,
        priority: Priority::Medium,
        tags: Vec::new(),
        // 003's `channel` is the client's word; one we do not know of is
        // another system's (`api`).
        channel: Channel::parse(channel).unwrap_or(Channel::Api),
        channel_entry: None,
    };
    match session_id.map(str::trim).filter(|s| !s.is_empty()) {
        None => {
            let c = crate::service::conversations::start(state.core(), new).await?;
            let id = c.id.to_string();
            Ok((c, id))
        }
        Some(name) => {
            if let Some(c) = find_session(state, p, name).await? {
                if c.contact_id != Some(customer.contact_id) {
                    return Err(ApiError::forbidden(
                        "This session belongs to another customer",
                    ));
                }
                return Ok((c, name.to_owned()));
            }
            let (c, _) = state.db.create_external_conversation(&new, name).await?;
            if !c.visible_to(p) || c.contact_id != Some(customer.contact_id) {
                return Err(ApiError::not_found("Session not found"));
            }
            Ok((c, name.to_owned()))
        }
    }
}

/// Checks 003's `channel`: a short lower-case word (`web`, `whatsapp`...).
pub(crate) fn check_channel(channel: &str) -> Result<(), ApiError> {
    if channel.is_empty()
        || channel.len() > 32
        || !channel
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(ApiError::validation(
            "channel must be a short lower-case word such as web, whatsapp or email",
        ));
    }
    Ok(())
}

/// Staff and API keys only.
pub(crate) fn staff_only(p: &Principal) -> Result<(), ApiError> {
    if crate::service::policy::is_staff(p) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "This needs an agent, an admin or an API key",
        ))
    }
}

/// Checks 003's `organizationId`: the caller's own organization (by id or
/// slug). Another organization that exists is refused; an unknown value is
/// ignored (the search always runs in the caller's organization).
pub(crate) async fn check_org(
    state: &AppState,
    p: &Principal,
    org: Option<&str>,
) -> Result<(), ApiError> {
    let Some(org) = org.map(str::trim).filter(|o| !o.is_empty()) else {
        return Ok(());
    };
    let named = match crate::api::common::id_of(org) {
        Some(id) => state.db.org_by_id(id).await?,
        None => state.db.org_by_slug(org).await?,
    };
    match named {
        Some(o) if o.id != p.org_id => Err(ApiError::forbidden(
            "organizationId names another organization",
        )),
        _ => Ok(()),
    }
}

pub(crate) use super::common::iso;
