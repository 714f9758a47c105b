//! The one domain every API dialect maps onto: types and rules, no HTTP, no SQL.
//!
//! Identifiers are 64-bit integers everywhere. Dialect 002 shows them as JSON
//! numbers; the others show the same value as a decimal string, so one row is
//! one object in every view.

pub mod identity;

pub use identity::{ApiKey, NewUser, Organization, Principal, PrincipalKind, Role, User};

/// A rule of the domain was broken; each variant names its machine code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// Input failed validation: `(field, message)` pairs.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// A unique value (username, email, slug) is already taken.
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(&'static str),
}

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
