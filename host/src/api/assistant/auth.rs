//! 002 `/api/v1/auth`: register, login, me.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ApiError;
use crate::api::extract::{Auth, Body, Fields};
use crate::api::middleware::ClientIp;
use crate::api::openapi::{DetailError, ValidationErrorList};
use crate::api::rate_limit::{Rule, Subject, unix_now};
use crate::domain::FieldError;
use crate::domain::identity::{
    EMAIL_MAX, PASSWORD_MAX, validate_email, validate_full_name, validate_password,
    validate_username,
};
use crate::domain::{NewUser, Role, User};
use crate::server::AppState;
use crate::store::StoreError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(me))
}

/// Request body of `POST /api/v1/auth/register`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegisterRequest {
    username: String,
    email: String,
    password: String,
    full_name: Option<String>,
}

/// Request body of `POST /api/v1/auth/login`; also accepted as a form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// The username or the email address.
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `bearer`.
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
}

/// A user as 002 shows it.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    id: i64,
    username: Option<String>,
    email: String,
    full_name: Option<String>,
    is_active: bool,
    is_admin: bool,
    /// `admin`, `agent` or `customer`.
    role: &'static str,
    /// RFC 3339, UTC.
    created_at: String,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        UserResponse {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            is_active: u.is_active,
            is_admin: u.role == Role::Admin,
            role: u.role.as_str(),
            created_at: u
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// Register a customer account in the default organization. Answers 200:
/// 002 documents no other success status (where the documents mean 201 or
/// 204 they say so).
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "002 auth",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "The new user", body = UserResponse),
        (status = 400, description = "Username or email already registered", body = DetailError),
        (status = 403, description = "Registration is disabled", body = DetailError),
        (status = 422, description = "Invalid fields", body = ValidationErrorList),
        (status = 429, description = "Rate limit exceeded", body = DetailError),
    )
)]
async fn register(
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<UserResponse>, ApiError> {
    let mut f = Fields::new(&body);
    let username = f.required_str("username");
    let email = f.required_str("email");
    let password = f.required_str("password");
    let full_name = f.optional_str("full_name");
    if let Some(v) = &username {
        validate_username("username", v, &mut f.errors);
    }
    if let Some(v) = &email {
        validate_email("email", v, &mut f.errors);
    }
    if let Some(v) = &password {
        validate_password("password", v, &mut f.errors);
    }
    if let Some(v) = &full_name {
        validate_full_name("full_name", v, &mut f.errors);
    }
    f.finish()?;
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(ApiError::internal());
    };
    if !state.config.auth.allow_registration {
        return Err(ApiError::forbidden(
            "Registration is disabled; ask an administrator for an account",
        ));
    }
    // Cheap checks first, so a duplicate costs no hashing; the unique
    // constraints still decide races.
    if state.db.user_for_login(&username).await?.is_some() {
        return Err(ApiError::conflict("Username already registered"));
    }
    if state.db.user_for_login(&email).await?.is_some() {
        return Err(ApiError::conflict("Email already registered"));
    }
    let password_hash = state.passwords.hash(password).await?;
    let new = NewUser {
        org_id: state.default_org_id,
        username: Some(username),
        email,
        full_name: full_name.filter(|n| !n.trim().is_empty()),
        password_hash,
        role: Role::Customer,
    };
    let user = state.db.create_user(&new).await.map_err(|e| match e {
        StoreError::Conflict("username") => ApiError::conflict("Username already registered"),
        StoreError::Conflict(_) => ApiError::conflict("Email already registered"),
        other => other.into(),
    })?;
    tracing::info!(user_id = user.id, "user registered");
    Ok(Json(user.into()))
}

/// Exchange a username (or email) and password for a JWT.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "002 auth",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A bearer token", body = TokenResponse),
        (status = 401, description = "Wrong username or password", body = DetailError),
        (status = 403, description = "The account is deactivated", body = DetailError),
        (status = 422, description = "Invalid fields", body = ValidationErrorList),
        (status = 429, description = "Too many login attempts", body = DetailError),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(body): Body,
) -> Result<Json<TokenResponse>, ApiError> {
    let mut f = Fields::new(&body);
    let login = f.required_str("username");
    let password = f.required_str("password");
    // Bounds what a login attempt can make the limiter remember and Argon2 hash.
    if password.as_ref().is_some_and(|p| p.len() > PASSWORD_MAX) {
        f.errors.push(FieldError::new(
            "password",
            format!("ensure this value has at most {PASSWORD_MAX} bytes"),
            "value_error.any_str.max_length",
        ));
    }
    if login.as_ref().is_some_and(|l| l.len() > EMAIL_MAX) {
        f.errors.push(FieldError::new(
            "username",
            format!("ensure this value has at most {EMAIL_MAX} characters"),
            "value_error.any_str.max_length",
        ));
    }
    f.finish()?;
    let (Some(login), Some(password)) = (login, password) else {
        return Err(ApiError::internal());
    };

    let limits = &state.config.rate_limits;
    if limits.enabled {
        let mut rules = Vec::new();
        if limits.login_per_username_per_minute > 0 {
            rules.push(Rule {
                subject: Subject::LoginName(login.to_lowercase()),
                limit: limits.login_per_username_per_minute,
                period: 60,
            });
        }
        if limits.login_per_ip_per_minute > 0 {
            rules.push(Rule {
                subject: Subject::login_ip(ip),
                limit: limits.login_per_ip_per_minute,
                period: 60,
            });
        }
        if let Some(d) = state.limiter.check("login", &rules, unix_now())
            && !d.allowed
        {
            return Err(ApiError::rate_limited(&d, "Too many login attempts"));
        }
    }

    let found = state.db.user_for_login(&login).await?;
    // The name's window guards the lookup; the account's counts every
    // guess at it, by username or by email alike.
    if limits.enabled
        && limits.login_per_username_per_minute > 0
        && let Some((user, _)) = &found
    {
        let rules = [Rule {
            subject: Subject::LoginAccount(user.id),
            limit: limits.login_per_username_per_minute,
            period: 60,
        }];
        if let Some(d) = state.limiter.check("login", &rules, unix_now())
            && !d.allowed
        {
            return Err(ApiError::rate_limited(&d, "Too many login attempts"));
        }
    }
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let ok = state.passwords.verify(password, hash).await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => return Err(ApiError::unauthorized("Incorrect username or password")),
    };
    if !user.is_active {
        return Err(ApiError::forbidden("Inactive user"));
    }
    state.db.record_login(user.id).await?;
    let token = state.tokens.issue(&user).map_err(|e| {
        tracing::error!(error = %e, "signing a token failed");
        ApiError::internal()
    })?;
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "bearer",
        expires_in: state.config.auth.token_ttl.as_secs(),
    }))
}

/// The user the bearer token belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "002 auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The current user", body = UserResponse),
        (status = 401, description = "Missing, invalid or expired token", body = DetailError),
        (status = 403, description = "API keys belong to no user", body = DetailError),
        (status = 429, description = "Rate limit exceeded", body = DetailError),
    )
)]
async fn me(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Json<UserResponse>, ApiError> {
    let Some(user_id) = principal.user_id() else {
        return Err(ApiError::forbidden(
            "API keys belong to no user; log in as a user",
        ));
    };
    match state.db.user_by_id(user_id).await? {
        Some(user) if user.is_active && user.org_id == principal.org_id => Ok(Json(user.into())),
        _ => Err(ApiError::unauthorized("Could not validate credentials")),
    }
}
