//! Extractors that fail with [`ApiError`] instead of axum's plain-text
//! rejections: the authenticated principal, the client address, and request
//! bodies read as JSON objects and checked field by field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::{Map, Value};

use super::error::{ApiError, ErrorCode};
use super::middleware::{Authn, ClientIp};
use crate::domain::{FieldError, Principal};

/// The authenticated caller; rejects with 401 when there is none.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authn>() {
            Some(Authn::Valid(p)) => Ok(Auth(*p)),
            Some(Authn::Invalid(reason)) => Err(ApiError::unauthorized(*reason)),
            Some(Authn::Anonymous) | None => Err(ApiError::unauthorized("Not authenticated")),
        }
    }
}

/// The caller when credentials were sent; `None` for anonymous requests.
/// Wrong credentials are still refused with 401.
#[derive(Debug, Clone, Copy)]
pub struct MaybeAuth(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authn>() {
            Some(Authn::Valid(p)) => Ok(MaybeAuth(Some(*p))),
            Some(Authn::Invalid(reason)) => Err(ApiError::unauthorized(*reason)),
            Some(Authn::Anonymous) | None => Ok(MaybeAuth(None)),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(std::net::IpAddr::V4(
                std::net::Ipv4Addr::UNSPECIFIED,
            ))))
    }
}

/// A request body that must be a JSON object (or, where a form is
/// accepted, `application/x-www-form-urlencoded`).
#[derive(Debug, Clone)]
pub struct Body(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "The request body is too large")
            } else {
                ApiError::validation("The request body could not be read")
            }
        })?;
        // curl -d labels JSON as a form; trust the content over the label.
        let looks_like_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if is_form && !looks_like_json {
            let map = gateway_wire::text::form_pairs(&bytes);
            refuse_nul(&map)?;
            return Ok(Body(map));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid_fields(vec![FieldError::new(
                "",
                "field required",
                "value_error.missing",
            )]));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => {
                // Raw NUL bytes are not valid JSON; only the escape can
                // bring one in, so most bodies are never walked.
                if gateway_wire::text::may_hold_nul(&bytes) {
                    refuse_nul(&map)?;
                }
                Ok(Body(map))
            }
            Ok(_) => Err(ApiError::invalid_fields(vec![FieldError::new(
                "",
                "value is not a valid dict",
                "type_error.dict",
            )])),
            Err(e) => Err(ApiError::invalid_fields(vec![FieldError::new(
                "",
                format!("Invalid JSON: {e}"),
                "value_error.jsondecode",
            )])),
        }
    }
}

/// The NUL character (U+0000) has no place in any text the gateway keeps,
/// and PostgreSQL cannot store it: a body that carries one, in any key or
/// value at any depth, is refused as invalid on both databases alike.
pub fn refuse_nul(map: &Map<String, Value>) -> Result<(), ApiError> {
    match gateway_wire::text::nul_path(map) {
        Some(field) => Err(ApiError::invalid_fields(vec![nul_error(field)])),
        None => Ok(()),
    }
}

/// The field error for a NUL character in `field`.
pub fn nul_error(field: impl Into<String>) -> FieldError {
    FieldError::new(
        field,
        "must not contain the NUL character (U+0000)",
        "value_error.str.nul",
    )
}

/// Reads typed fields out of a JSON object, collecting every problem so the
/// caller can report them all at once.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
    pub errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            prefix: String::new(),
            errors: Vec::new(),
        }
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// A string that must be present and non-null.
    pub fn required_str(&mut self, field: &str) -> Option<String> {
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::missing(self.name(field)));
                None
            }
            Some(_) => self.optional_str(field),
        }
    }

    /// A string that may be absent or null.
    pub fn optional_str(&mut self, field: &str) -> Option<String> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.errors.push(FieldError::new(
                    self.name(field),
                    "str type expected",
                    "type_error.str",
                ));
                None
            }
        }
    }

    /// A list of strings that may be absent or null.
    pub fn optional_str_list(&mut self, field: &str) -> Option<Vec<String>> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            Some(_) => {
                self.errors.push(FieldError::new(
                    self.name(field),
                    "a list of strings expected",
                    "type_error.list",
                ));
                None
            }
        }
    }

    /// A boolean that must be present.
    pub fn required_bool(&mut self, field: &str) -> Option<bool> {
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::missing(self.name(field)));
                None
            }
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.errors.push(FieldError::new(
                    self.name(field),
                    "value could not be parsed to a boolean",
                    "type_error.bool",
                ));
                None
            }
        }
    }

    /// An id given as a decimal string (or a JSON number); `None` and an
    /// error when present but not an id, `Some(None)` when absent.
    pub fn optional_id(&mut self, field: &str) -> Option<Option<i64>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if super::common::id_of(s).is_some() => {
                Some(super::common::id_of(s))
            }
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n > 0) => Some(n.as_i64()),
            Some(_) => {
                self.errors.push(FieldError::new(
                    self.name(field),
                    "not a valid id",
                    "type_error",
                ));
                None
            }
        }
    }

    /// Records an error found by the caller.
    pub fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// Fails with every collected error, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_refused_at_any_depth() {
        let body = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        assert!(
            refuse_nul(&body(
                serde_json::json!({"a": "ok", "b": [1, {"c": "fine"}]})
            ))
            .is_ok()
        );
        for bad in [
            serde_json::json!({"username": "a\u{0}b"}),
            serde_json::json!({"b": [1, {"c": "\u{0}"}]}),
            serde_json::json!({"k\u{0}": 1}),
        ] {
            assert!(refuse_nul(&body(bad)).is_err());
        }
        assert!(refuse_nul(&gateway_wire::text::form_pairs(b"username=a%00b")).is_err());
    }

    #[test]
    fn fields_collect_every_error() {
        let map = serde_json::json!({"a": 1, "b": null})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut f = Fields::new(&map);
        assert_eq!(f.required_str("a"), None);
        assert_eq!(f.required_str("b"), None);
        assert_eq!(f.optional_str("c"), None);
        assert_eq!(f.errors.len(), 2);
        assert_eq!(f.errors[0].kind, "type_error.str");
        assert_eq!(f.errors[1].kind, "value_error.missing");
    }
}
