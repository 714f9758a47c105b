//! Organizations, users, roles, API keys and the authenticated principal.

use chrono::{DateTime, Utc};

use super::FieldError;

/// The slug of the organization created on first start.
pub const DEFAULT_ORG_SLUG: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything within its organization.
    Admin,
    /// Conversations, tickets and knowledge of its organization.
    Agent,
    /// Only its own conversations, tickets, memories and files.
    Customer,
    /// An API key: service-to-service calls for the key's organization.
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Customer => "customer",
            Role::Service => "service",
        }
    }

    /// Parses a role a user may hold (`service` belongs to API keys only).
    pub fn parse_user_role(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            "customer" => Some(Role::Customer),
            _ => None,
        }
    }

    /// Parses any stored role, including `service`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "service" => Some(Role::Service),
            other => Self::parse_user_role(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub org_id: i64,
    /// Users created by an admin may have none; they log in by email.
    pub username: Option<String>,
    /// Stored lower-cased.
    pub email: String,
    pub full_name: Option<String>,
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// Tokens issued under an older generation are refused.
    pub token_generation: i64,
}

/// What a token check needs to know of its user now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    pub generation: i64,
    pub is_active: bool,
    pub role: Role,
    pub org_id: i64,
}

/// A user about to be created; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub org_id: i64,
    pub username: Option<String>,
    pub email: String,
    pub full_name: Option<String>,
    pub password_hash: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
    /// The first characters of the key, safe to show in listings.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who is making a request, as proven by a JWT or an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub org_id: i64,
    pub role: Role,
    pub kind: PrincipalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    User(i64),
    ApiKey(i64),
}

impl Principal {
    /// Admins, agents and API keys: they work on the whole organization.
    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Agent | Role::Service)
    }

    pub fn user_id(&self) -> Option<i64> {
        match self.kind {
            PrincipalKind::User(id) => Some(id),
            PrincipalKind::ApiKey(_) => None,
        }
    }
}

pub const USERNAME_MAX: usize = 50;
pub const PASSWORD_MIN: usize = 8;
/// Bounds the work an attacker can make Argon2 do per request.
pub const PASSWORD_MAX: usize = 1024;
pub const FULL_NAME_MAX: usize = 200;
pub const EMAIL_MAX: usize = 254;

/// Usernames: 3–50 characters of letters, digits, `_`, `.` and `-`; no `@`,
/// so that a login name is never ambiguous with an email.
pub fn validate_username(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let len = value.chars().count();
    if !(3..=USERNAME_MAX).contains(&len) {
        errors.push(FieldError::new(
            field,
            format!("ensure this value has between 3 and {USERNAME_MAX} characters"),
            "value_error.any_str.length",
        ));
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        errors.push(FieldError::new(
            field,
            "may contain only letters, digits, '_', '.' and '-'",
            "value_error.str.regex",
        ));
    }
}

/// A pragmatic address check: one `@`, a non-empty local part, a dotted
/// domain, no spaces. Delivery is what proves an address, not a regex.
pub fn validate_email(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let valid = value.len() <= EMAIL_MAX
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if !valid {
        errors.push(FieldError::new(
            field,
            "value is not a valid email address",
            "value_error.email",
        ));
    }
}

pub fn validate_password(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let len = value.chars().count();
    if len < PASSWORD_MIN {
        errors.push(FieldError::new(
            field,
            format!("ensure this value has at least {PASSWORD_MIN} characters"),
            "value_error.any_str.min_length",
        ));
    } else if value.len() > PASSWORD_MAX {
        errors.push(FieldError::new(
            field,
            format!("ensure this value has at most {PASSWORD_MAX} bytes"),
            "value_error.any_str.max_length",
        ));
    }
}

pub fn validate_full_name(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if value.chars().count() > FULL_NAME_MAX {
        errors.push(FieldError::new(
            field,
            format!("ensure this value has at most {FULL_NAME_MAX} characters"),
            "value_error.any_str.max_length",
        ));
    }
}

pub use gateway_wire::webhook::validate_slug;

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(f: impl Fn(&str, &str, &mut Vec<FieldError>), value: &str) -> usize {
        let mut errors = Vec::new();
        f("x", value, &mut errors);
        errors.len()
    }

    #[test]
    fn usernames() {
        assert_eq!(errors_of(validate_username, "alice_01"), 0);
        assert_eq!(errors_of(validate_username, "al"), 1);
        assert_eq!(errors_of(validate_username, "alice@example.com"), 1);
        assert_eq!(errors_of(validate_username, &"a".repeat(51)), 1);
    }

    #[test]
    fn emails() {
        assert_eq!(errors_of(validate_email, "a@example.com"), 0);
        for bad in [
            "",
            "a",
            "a@b",
            "@example.com",
            "a@.com",
            "a b@example.com",
            "a@example.com.",
            "a@@x.com",
        ] {
            assert_eq!(errors_of(validate_email, bad), 1, "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert_eq!(errors_of(validate_password, "12345678"), 0);
        assert_eq!(errors_of(validate_password, "1234567"), 1);
        assert_eq!(
            errors_of(validate_password, &"x".repeat(PASSWORD_MAX + 1)),
            1
        );
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Admin, Role::Agent, Role::Customer, Role::Service] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse_user_role("service"), None);
    }

    #[test]
    fn slugs() {
        assert!(validate_slug("acme-2").is_ok());
        assert!(validate_slug("Acme").is_err());
        assert!(validate_slug("").is_err());
    }
}
