//! The one domain every API dialect maps onto: types and rules, no HTTP, no SQL.
//!
//! Identifiers are 64-bit integers everywhere. Dialect 002 shows them as JSON
//! numbers; the others show the same value as a decimal string, so one row is
//! one object in every view.

pub mod contact;
pub mod conversation;
pub mod identity;
pub mod knowledge;
pub mod ticket;

pub use identity::{ApiKey, NewUser, Organization, Principal, PrincipalKind, Role, User};

/// One invalid field; `kind` follows pydantic's vocabulary (`value_error.missing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    pub kind: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        message: impl Into<String>,
        kind: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            kind: kind.into(),
        }
    }

    pub fn missing(field: impl Into<String>) -> Self {
        Self::new(field, "field required", "value_error.missing")
    }
}
