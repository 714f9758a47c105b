//! Tickets: opening them (from a chat, for a customer, for another system),
//! changing them, and categories named by clients.

use super::{Core, FieldError, ServiceError, conversations};
use crate::domain::contact::{ContactDetails, Identity};
use crate::domain::conversation::{Channel, Conversation, Priority};
use crate::domain::ticket::{NewTicket, TITLE_MAX, Ticket};
use crate::events::Event;
use crate::store::{StoreError, TicketChanges};

/// Opens a ticket (and the conversation it lives in); publishes
/// `ticket.created`.
pub async fn open(core: Core<'_>, mut new: NewTicket) -> Result<Ticket, ServiceError> {
    if new.contact_id.is_none()
        && let Some(user_id) = new.customer_id
    {
        new.contact_id = Some(conversations::contact_of_user(core, new.org_id, user_id).await?);
    }
    let (t, created) = core.db.create_ticket(&new).await?;
    if created {
        core.bus.publish(Event::TicketCreated(t.clone()));
    }
    Ok(t)
}

/// The ticket of chat `c` (000): a chat has one, so asking again answers
/// it. `category` is free text: a category id or name of the organization,
/// created when it is new.
pub async fn from_chat(
    core: Core<'_>,
    c: &Conversation,
    title: Option<String>,
    category: Option<String>,
    priority: Option<Priority>,
) -> Result<Ticket, ServiceError> {
    let category_id = match category.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(category_named(core, c.org_id, text).await?),
    };
    let title = title
        .filter(|t| !t.trim().is_empty())
        .or_else(|| c.subject.clone())
        .unwrap_or_else(|| format!("Chat session {}", c.id));
    open(
        core,
        NewTicket {
            org_id: c.org_id,
            conversation_id: Some(c.id),
            customer_id: c.customer_id,
            contact_id: c.contact_id,
            title: title.chars().take(TITLE_MAX).collect(),
            description: String::new(),
            priority: priority.unwrap_or(c.priority),
            category_id,
        },
    )
    .await
}

/// The category `text` names (its id or, in any case, its name), created
/// under that name when the organization has none.
pub async fn category_named(core: Core<'_>, org_id: i64, text: &str) -> Result<i64, ServiceError> {
    let find = |all: &[crate::domain::ticket::Category]| {
        all.iter()
            .find(|k| k.id.to_string() == text || k.name.eq_ignore_ascii_case(text))
            .map(|k| k.id)
    };
    if let Some(id) = find(&core.db.categories(org_id).await?) {
        return Ok(id);
    }
    let name: String = text.chars().take(100).collect();
    match core.db.create_category(org_id, &name, "").await {
        Ok(k) => Ok(k.id),
        // Created meanwhile by another request.
        Err(StoreError::Conflict(_)) => {
            find(&core.db.categories(org_id).await?).ok_or(ServiceError::NotFound("Category"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Changes a ticket; publishes `ticket.updated`.
pub async fn update(
    core: Core<'_>,
    t: &Ticket,
    changes: &TicketChanges,
) -> Result<Ticket, ServiceError> {
    let updated = core
        .db
        .update_ticket(t.id, changes)
        .await?
        .ok_or(ServiceError::NotFound("Ticket"))?;
    core.bus.publish(Event::TicketUpdated(updated.clone()));
    Ok(updated)
}

/// Who another system's ticket is for, from the email it gives: the
/// organization's login customer with that email, else the contact with
/// that email identity (created on first use); no email, nobody.
pub async fn requester(
    core: Core<'_>,
    org_id: i64,
    email: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), ServiceError> {
    let Some(email) = email.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok((None, None));
    };
    if let Some((u, _)) = core.db.user_for_login(email).await?
        && u.org_id == org_id
    {
        if u.role != crate::domain::Role::Customer {
            // Another system cannot file a ticket as one of the staff.
            return Err(ServiceError::Invalid(vec![FieldError::new(
                "customer_email",
                "is a staff account's email, not a customer's",
                "value_error",
            )]));
        }
        let contact = conversations::contact_of_user(core, org_id, u.id).await?;
        return Ok((Some(u.id), Some(contact)));
    }
    let identity = Identity::new(Channel::Email, email);
    let details = ContactDetails {
        email: Some(identity.value.clone()),
        ..Default::default()
    };
    let contact = super::contacts::find_or_create(core, org_id, &identity, &details).await?;
    Ok((None, Some(contact.id)))
}
