//! Dialect 002 (`/api/v1`): the AI assistant's auth, chat, FAQ and customer
//! log API, with integer ids and FastAPI-style errors.

mod auth;
pub(crate) mod chat;

use utoipa_axum::router::OpenApiRouter;

use crate::server::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(auth::router())
        .merge(chat::router())
}
