//! The conversation core: the one place where messages enter
//! conversations, the handover state machine moves, tickets change and
//! contacts are found, whatever the entry point (the five HTTP dialects,
//! `/ws`, the channels, the CLI, background jobs).
//!
//! A service call takes an [`Actor`] and domain input and returns domain
//! results or a [`ServiceError`]; it knows nothing of HTTP. Each change
//! publishes its domain event ([`crate::events::Event`]) once, here, so
//! every socket sees every change whichever API made it.

pub mod contacts;
pub mod conversations;
pub mod policy;
pub mod tickets;

use crate::assistant::{Assistant, AssistantError};
use crate::domain::{FieldError, Principal, PrincipalKind, Role};
use crate::realtime::Bus;
use crate::store::{Db, StoreError};

/// What the services work with; borrowed from the application state.
#[derive(Clone, Copy)]
pub struct Core<'a> {
    pub db: &'a Db,
    pub bus: &'a Bus,
    pub assistant: &'a Assistant,
    pub files: &'a crate::files::FileStore,
}

/// Who is acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A customer writing for themselves.
    Customer { org_id: i64, user_id: i64 },
    /// An agent or an admin.
    Agent { org_id: i64, user_id: i64 },
    /// An API key of the organization (a service acting with staff rights).
    ApiKey { org_id: i64, key_id: i64 },
    /// A channel entry delivering what a contact wrote.
    Channel { org_id: i64 },
    /// The gateway itself: the assistant, a signed webhook, a job.
    System { org_id: i64 },
}

impl Actor {
    pub fn of(p: &Principal) -> Actor {
        match (p.role, p.kind) {
            (Role::Customer, PrincipalKind::User(user_id)) => Actor::Customer {
                org_id: p.org_id,
                user_id,
            },
            (Role::Admin | Role::Agent, PrincipalKind::User(user_id)) => Actor::Agent {
                org_id: p.org_id,
                user_id,
            },
            (_, PrincipalKind::User(user_id)) => Actor::Agent {
                org_id: p.org_id,
                user_id,
            },
            (_, PrincipalKind::ApiKey(key_id)) => Actor::ApiKey {
                org_id: p.org_id,
                key_id,
            },
        }
    }

    pub fn org_id(self) -> i64 {
        match self {
            Actor::Customer { org_id, .. }
            | Actor::Agent { org_id, .. }
            | Actor::ApiKey { org_id, .. }
            | Actor::Channel { org_id }
            | Actor::System { org_id } => org_id,
        }
    }

    /// The login user acting, if any.
    pub fn user_id(self) -> Option<i64> {
        match self {
            Actor::Customer { user_id, .. } | Actor::Agent { user_id, .. } => Some(user_id),
            _ => None,
        }
    }
}

/// Why a service call did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The thing does not exist, or the actor may not see it.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The actor may see it but not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The conversation is over and accepts no message.
    #[error("the conversation is closed and accepts no new messages")]
    Closed,
    /// A state guard failed (already assigned, already closed).
    #[error("{0}")]
    Conflict(String),
    /// Input the domain refuses.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// A request-level problem with no single field.
    #[error("{0}")]
    Rejected(String),
    /// Something of ours failed (logged where it happened).
    #[error("{0}")]
    Internal(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Assistant(#[from] AssistantError),
}

impl ServiceError {
    pub fn invalid(field: &str, message: impl Into<String>, kind: &str) -> ServiceError {
        ServiceError::Invalid(vec![FieldError::new(field, message, kind)])
    }
}
