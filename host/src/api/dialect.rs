//! Which of the five API documents a path belongs to.
//!
//! The dialect decides the error shape and the rate limits of a request. It
//! follows from the path alone, so that fallbacks (unknown routes, wrong
//! methods) answer in the shape their neighbours use.

/// The API dialects. 000 and 001 share `/api/chat` and one error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// 000 and 001: `/api/chat/...`, `/ws/chat/{id}`.
    Chat,
    /// 002: `/api/v1/...`.
    Assistant,
    /// 003: `/api/core`, `/api/memory`, `/api/channels`, `/api/admin`, `/ws`.
    Platform,
    /// 004: `/v1/...`, `/ws/tickets/{id}`.
    Tickets,
    /// The gateway's own endpoints: `/health`, `/metrics`, `/openapi.json`, `/docs`.
    Gateway,
}

impl Dialect {
    pub fn of_path(path: &str) -> Dialect {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/api/chat") || under("/ws/chat") {
            Dialect::Chat
        } else if under("/api/v1") {
            Dialect::Assistant
        } else if under("/api/core")
            || under("/api/memory")
            || under("/api/channels")
            || under("/api/admin")
        {
            Dialect::Platform
        } else if under("/v1") || under("/ws/tickets") {
            Dialect::Tickets
        } else if path == "/ws" || path == "/ws/" {
            Dialect::Platform
        } else {
            Dialect::Gateway
        }
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Chat => "chat",
            Dialect::Assistant => "assistant",
            Dialect::Platform => "platform",
            Dialect::Tickets => "tickets",
            Dialect::Gateway => "gateway",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dialect::{self, *};

    #[test]
    fn paths_map_to_dialects() {
        for (path, dialect) in [
            ("/api/chat/sessions", Chat),
            ("/ws/chat/12", Chat),
            ("/api/chatter", Gateway),
            ("/api/v1/auth/login", Assistant),
            ("/api/core/messages", Platform),
            ("/api/memory/health", Platform),
            ("/api/admin/users", Platform),
            ("/ws", Platform),
            ("/v1/tickets", Tickets),
            ("/ws/tickets/3", Tickets),
            ("/health", Gateway),
            ("/v10", Gateway),
        ] {
            assert_eq!(Dialect::of_path(path), dialect, "{path}");
        }
    }
}
