//! Contacts: creating them, finding them by a channel identity, merging.

use super::{Core, ServiceError};
use crate::domain::contact::{Contact, ContactDetails, Identity, validate_details};
use crate::store::StoreError;

/// Creates a contact with its identities; an identity another contact of
/// the organization has already is a conflict.
pub async fn create(
    core: Core<'_>,
    org_id: i64,
    details: ContactDetails,
    identities: &[Identity],
) -> Result<Contact, ServiceError> {
    let errors = validate_details(&details);
    if !errors.is_empty() {
        return Err(ServiceError::Invalid(errors));
    }
    match core.db.create_contact(org_id, &details, identities).await {
        Ok(c) => Ok(c),
        Err(StoreError::Conflict(_)) => Err(ServiceError::Conflict(
            "Another contact has this identity".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The contact known by `identity`, created with `details` on first use.
/// A merged contact answers the one it was merged into.
pub async fn find_or_create(
    core: Core<'_>,
    org_id: i64,
    identity: &Identity,
    details: &ContactDetails,
) -> Result<Contact, ServiceError> {
    let c = core
        .db
        .contact_for_identity(org_id, identity, None, details)
        .await?;
    match c.merged_into {
        Some(into) => Ok(core
            .db
            .contact_by_id(into)
            .await?
            .ok_or(ServiceError::NotFound("Contact"))?),
        None => Ok(c),
    }
}

/// Merges `from` into `into` (both of `org_id`): identities and
/// conversations move; `from` is kept, pointing at `into`.
pub async fn merge(
    core: Core<'_>,
    org_id: i64,
    into: i64,
    from: i64,
) -> Result<Contact, ServiceError> {
    if into == from {
        return Err(ServiceError::Rejected(
            "A contact cannot be merged into itself".into(),
        ));
    }
    for id in [into, from] {
        match core.db.contact_by_id(id).await? {
            Some(c) if c.org_id == org_id && c.merged_into.is_none() => {}
            Some(c) if c.org_id == org_id => {
                return Err(ServiceError::Conflict(format!(
                    "Contact {id} was merged into contact {} already",
                    c.merged_into.unwrap_or_default()
                )));
            }
            _ => return Err(ServiceError::NotFound("Contact")),
        }
    }
    core.db
        .merge_contacts(into, from)
        .await?
        .ok_or_else(|| ServiceError::Conflict("The contacts changed meanwhile".into()))
}
