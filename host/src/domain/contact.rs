//! Contacts: the people who write to an organization, each known on its
//! channels by identities (a web user, a WhatsApp number, an email address,
//! a client's external id). A contact is not a login user: the same email
//! may be a contact of two organizations, and a contact may exist before it
//! ever logs in; `user_id` links the two once it does.

use chrono::{DateTime, Utc};

use super::FieldError;
use super::conversation::Channel;

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: i64,
    pub org_id: i64,
    /// The login user this contact is, if any.
    pub user_id: Option<i64>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub avatar_url: Option<String>,
    /// The organization's own attributes (a JSON object).
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Set once this contact was merged into another.
    pub merged_into: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How a contact is known on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `web` (a user id), `whatsapp` (a `wa_id`), `email` (an address,
    /// lower-cased), `api` (a client's external id).
    pub kind: Channel,
    pub value: String,
}

impl Identity {
    /// The identity in its stored form (email addresses lower-cased).
    pub fn new(kind: Channel, value: &str) -> Identity {
        let value = value.trim();
        Identity {
            kind,
            value: if kind == Channel::Email {
                value.to_lowercase()
            } else {
                value.to_owned()
            },
        }
    }
}

/// A contact's details, as given when it is created or changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub avatar_url: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

pub const NAME_MAX: usize = 200;
pub const ATTRIBUTES_MAX: usize = 50;

/// Checks the details a client sent.
pub fn validate_details(d: &ContactDetails) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (field, value) in [
        ("name", &d.name),
        ("email", &d.email),
        ("phone", &d.phone),
        ("avatarUrl", &d.avatar_url),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > NAME_MAX) {
            errors.push(FieldError::new(
                field,
                format!("must be at most {NAME_MAX} characters"),
                "value_error.any_str.max_length",
            ));
        }
    }
    if d.email.as_ref().is_some_and(|e| !e.contains('@')) {
        errors.push(FieldError::new(
            "email",
            "must be an email address",
            "value_error.email",
        ));
    }
    if d.avatar_url
        .as_ref()
        .is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://")))
    {
        errors.push(FieldError::new(
            "avatarUrl",
            "must be an http(s) URL",
            "value_error.url",
        ));
    }
    if d.attributes.len() > ATTRIBUTES_MAX {
        errors.push(FieldError::new(
            "attributes",
            format!("at most {ATTRIBUTES_MAX} attributes"),
            "value_error",
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_identities_are_lower_case() {
        assert_eq!(
            Identity::new(Channel::Email, " Ana@Example.COM ").value,
            "ana@example.com"
        );
        assert_eq!(Identity::new(Channel::Whatsapp, "4915").value, "4915");
    }

    #[test]
    fn details_are_checked() {
        let d = ContactDetails {
            email: Some("nope".into()),
            avatar_url: Some("javascript:alert(1)".into()),
            ..Default::default()
        };
        let fields: Vec<_> = validate_details(&d).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["email", "avatarUrl"]);
    }
}
