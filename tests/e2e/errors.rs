//! Error shapes of every dialect, request ids, sizes, methods and panics.

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::common::{Gateway, Options, databases};

#[tokio::test]
async fn each_dialect_answers_in_its_own_shape() {
    let gw = Gateway::start(databases()[0]).await;
    let get = |path: &str| gw.http.get(gw.url(path)).send();

    // 000/001 and the gateway's own paths.
    for path in ["/api/chat/no-such-thing", "/no-such-thing"] {
        let r = get(path).await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            body,
            json!({"error": {"code": "not_found", "message": "Resource not found"}}),
            "{path}"
        );
    }

    // 003 adds the request id, in its own code words.
    let r = get("/api/core/no-such-thing").await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let id = r.headers()["x-request-id"].to_str().expect("id").to_owned();
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({"error": {"code": "resource_not_found", "message": "Resource not found"}, "requestId": id})
    );
    let r = get("/api/admin/users").await.expect("get");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "resource_not_found");

    // 002 and 004: {"detail": ...}.
    for path in ["/api/v1/no-such-thing", "/v1/no-such-thing"] {
        let r = get(path).await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            json!({"detail": "Resource not found"}),
            "{path}"
        );
    }

    // A wrong method is 405 in the dialect's shape, with Allow.
    let r = gw
        .http
        .delete(gw.url("/api/v1/auth/login"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"));
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"detail": "Method not allowed"})
    );
    let r = gw.http.post(gw.url("/health")).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "method_not_allowed"
    );
}

#[tokio::test]
async fn request_ids_are_set_or_echoed() {
    let gw = Gateway::start(databases()[0]).await;
    let r = gw.http.get(gw.url("/health")).send().await.expect("get");
    let id = r.headers()["x-request-id"].to_str().expect("id").to_owned();
    assert!(id.starts_with("req-") && id.len() > 10, "{id}");
    let r = gw.http.get(gw.url("/health")).send().await.expect("get");
    assert_ne!(
        r.headers()["x-request-id"].to_str().expect("id"),
        id,
        "ids are unique"
    );

    let r = gw
        .http
        .get(gw.url("/api/core/x"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    assert_eq!(
        r.json::<Value>().await.expect("json")["requestId"],
        "trace-42"
    );
    // A hostile id is replaced, not echoed.
    let r = gw
        .http
        .get(gw.url("/health"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .expect("get");
    assert_ne!(r.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let gw =
        Gateway::start_with(Options::new(databases()[0]).toml("[server]\nmax_body_bytes = 1024"))
            .await;
    let big =
        json!({"username": "x".repeat(4000), "email": "a@example.com", "password": "whatever1"});
    let r = gw
        .http
        .post(gw.url("/api/v1/auth/register"))
        .json(&big)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"detail": "The request body is too large"})
    );
}

/// A panicking handler becomes a 500 in the dialect's shape that shows no
/// internals, and the process keeps serving. Driven in-process, since no
/// shipped handler panics on purpose.
#[tokio::test]
async fn panics_become_opaque_500s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = std::collections::HashMap::new();
    env.insert(
        "GATEWAY_DATA_DIR".to_owned(),
        dir.path().display().to_string(),
    );
    let config = gateway::config::Config::from_toml("", None, &env).expect("config");
    let state = gateway::server::AppState::build(config)
        .await
        .expect("state");
    let boom = || async {
        let secret = "db password is hunter2";
        panic!("{secret}");
        #[allow(unreachable_code)]
        ""
    };
    let router = axum::Router::new()
        .route("/api/core/boom", axum::routing::get(boom))
        .route("/api/v1/boom", axum::routing::get(boom))
        .route("/api/chat/boom", axum::routing::get(boom))
        .route("/api/core/ok", axum::routing::get(|| async { "fine" }));
    let app = gateway::api::with_layers(router, state);

    let call = |path: &'static str| {
        let app = app.clone();
        async move {
            let r = app
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                .await
                .expect("response");
            let status = r.status();
            let id = r
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let bytes = r.into_body().collect().await.expect("body").to_bytes();
            (status, id, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (status, id, body) = call("/api/core/boom").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let id = id.expect("request id on a 500");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        body,
        json!({"error": {"code": "internal_error", "message": "Internal server error"}, "requestId": id})
    );

    let (status, _, body) = call("/api/v1/boom").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, r#"{"detail":"Internal server error"}"#);
    let (_, _, body) = call("/api/chat/boom").await;
    assert_eq!(
        body,
        r#"{"error":{"code":"server_error","message":"Internal server error"}}"#
    );
    assert!(!body.contains("hunter2"));

    let (status, _, body) = call("/api/core/ok").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
}
