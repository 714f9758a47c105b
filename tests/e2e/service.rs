//! Health, metrics, the OpenAPI document, and graceful shutdown.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Gateway, databases};

#[tokio::test]
async fn health_names_its_dependencies() {
    for db in databases() {
        let gw = Gateway::start(db).await;
        let r = gw.http.get(gw.url("/health")).send().await.expect("health");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            !r.headers().contains_key("x-ratelimit-limit"),
            "health is not rate limited"
        );
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["status"], "healthy", "{db:?}");
        assert_eq!(
            body["dependencies"],
            json!({"database": "healthy", "plugin:kb-answer": "healthy"})
        );
        assert!(body["version"].is_string());
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let gw = Gateway::start(databases()[0]).await;
    gw.http.get(gw.url("/health")).send().await.expect("health");
    gw.http
        .get(gw.url("/api/v1/auth/me"))
        .send()
        .await
        .expect("me");
    let r = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("text");
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/health",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/v1/auth/me",status="401""#),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("db_pool_connections"), "{text}");
}

#[tokio::test]
async fn openapi_describes_every_endpoint() {
    let gw = Gateway::start(databases()[0]).await;
    let doc: Value = gw
        .http
        .get(gw.url("/openapi.json"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/me", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
        ("/api/gateway/plugins", "get"),
        ("/api/gateway/plugins/{id}/complete", "post"),
        ("/api/gateway/plugins/{id}/embed", "post"),
        ("/api/gateway/plugins/{id}/transcribe", "post"),
        ("/api/chat/sessions", "get"),
        ("/api/chat/sessions", "post"),
        ("/api/chat/sessions/{sessionId}", "get"),
        ("/api/chat/sessions/{sessionId}", "patch"),
        ("/api/chat/sessions/{sessionId}", "delete"),
        ("/api/chat/sessions/{sessionId}/close", "put"),
        ("/api/chat/sessions/{sessionId}/assign", "put"),
        ("/api/chat/sessions/{sessionId}/messages", "get"),
        ("/api/chat/sessions/{sessionId}/messages", "post"),
        ("/api/chat/sessions/{sessionId}/read", "put"),
        ("/api/chat/sessions/{sessionId}/typing", "post"),
        ("/api/chat/sessions/{sessionId}/ticket", "post"),
        ("/api/chat/messages", "post"),
        ("/api/chat/files", "post"),
        ("/api/chat/files/{fileId}", "delete"),
        ("/api/chat/attachments/{attachmentId}", "get"),
        ("/api/chat/stats", "get"),
        ("/ws/chat/{sessionId}", "get"),
        ("/v1/tickets", "get"),
        ("/v1/tickets", "post"),
        ("/v1/tickets/{ticket_id}", "get"),
        ("/v1/tickets/{ticket_id}", "patch"),
        ("/v1/tickets/{ticket_id}/messages", "get"),
        ("/v1/tickets/{ticket_id}/messages", "post"),
        ("/v1/categories", "get"),
        ("/v1/categories", "post"),
        ("/ws/tickets/{ticket_id}", "get"),
        ("/v1/webhooks/incoming", "post"),
        ("/api/v1/chat/chat", "post"),
        ("/api/v1/chat/conversations", "get"),
        ("/api/v1/chat/conversations/{conversation_id}", "get"),
        ("/api/v1/chat/faqs", "get"),
        ("/api/core/messages", "post"),
        ("/api/core/messages/audio", "post"),
        ("/api/core/sessions/{sessionId}/context", "get"),
        ("/api/core/sessions/{sessionId}/reset", "post"),
        ("/api/core/health", "get"),
        ("/api/memory/memories", "post"),
        ("/api/memory/memories/{userId}", "get"),
        ("/api/memory/knowledge/search", "post"),
        ("/api/memory/vectors", "post"),
        ("/api/memory/health", "get"),
        ("/ws", "get"),
        ("/api/gateway/knowledge/documents", "get"),
        ("/api/gateway/knowledge/documents", "post"),
        ("/api/gateway/knowledge/documents/{id}", "get"),
        ("/api/gateway/knowledge/documents/{id}", "put"),
        ("/api/gateway/knowledge/documents/{id}", "delete"),
        ("/api/gateway/knowledge/passages/{id}", "get"),
        ("/api/gateway/faqs", "get"),
        ("/api/gateway/faqs", "post"),
        ("/api/gateway/faqs/{id}", "put"),
        ("/api/gateway/faqs/{id}", "delete"),
        ("/api/gateway/conversations/{id}/takeover", "post"),
        ("/api/gateway/conversations/{id}/handback", "post"),
        ("/api/gateway/contacts", "get"),
        ("/api/gateway/contacts", "post"),
        ("/api/gateway/contacts/{id}", "get"),
        ("/api/gateway/contacts/{id}/merge", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let register = &doc["paths"]["/api/v1/auth/register"]["post"];
    assert!(register["responses"]["200"].is_object());
    assert!(register["responses"]["422"].is_object());
    assert!(doc["components"]["schemas"]["UserResponse"]["properties"]["is_admin"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let r = gw.http.get(gw.url("/docs")).send().await.expect("docs");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(r.text().await.expect("text").contains("/openapi.json"));
}

/// SIGTERM while logins are in flight: every one of them is answered, then
/// the process exits 0 and closes its port.
#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    for db in databases() {
        let mut gw = Gateway::start_with(
            crate::common::Options::new(db).toml("[auth]\nhash_concurrency = 1"),
        )
        .await;
        gw.register_and_login("kate").await;
        let logins: Vec<_> = (0..4)
            .map(|_| {
                let req = gw
                    .http
                    .post(gw.url("/api/v1/auth/login"))
                    .json(&json!({"username": "kate", "password": "correct horse battery"}));
                tokio::spawn(async move {
                    req.send()
                        .await
                        .map(|r| (r.status(), std::time::Instant::now()))
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        gw.terminate();
        let terminated = std::time::Instant::now();
        let mut answered_after_signal = 0;
        for login in logins {
            let (status, at) = login
                .await
                .expect("task")
                .expect("in-flight request answered");
            assert_eq!(status, StatusCode::OK, "{db:?}");
            answered_after_signal += usize::from(at > terminated);
        }
        // Hashes run one at a time, so some logins were still queued.
        assert!(
            answered_after_signal > 0,
            "no login was in flight at SIGTERM"
        );
        let code = gw.wait_exit(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{db:?}: clean exit\n{}", gw.log());
        assert!(gw.log().contains("shutdown complete"), "{}", gw.log());
        assert!(
            gw.http.get(gw.url("/health")).send().await.is_err(),
            "port closed after exit"
        );
    }
}

/// Browsers on an allowed origin get CORS headers (preflights answered
/// before authentication); other origins get none.
#[tokio::test]
async fn cors_for_configured_origins_only() {
    let gw = Gateway::start_with(
        crate::common::Options::new(databases()[0])
            .toml("[server]\ncors_origins = [\"https://shop.example.com\"]"),
    )
    .await;
    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.url("/api/v1/auth/me"))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert!(
        preflight.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    let r = gw
        .http
        .get(gw.url("/api/v1/auth/me"))
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("x-ratelimit-remaining"),
        "{exposed}"
    );

    let r = gw
        .http
        .get(gw.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

/// A client that trickles its headers is cut off after
/// `server.header_read_timeout_secs`.
#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gw = Gateway::start_with(
        crate::common::Options::new(databases()[0]).toml("[server]\nheader_read_timeout_secs = 1"),
    )
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();

    // Trickle: half a request, then silence.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server must close a connection whose headers never finish"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after about a second"
    );
}

/// Past `server.max_connections` new connections are closed at once and the
/// server keeps serving. The header deadline is long here so that a test
/// machine slow to accept cannot let an idle connection time out and free
/// its slot before the one over the cap arrives.
#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gw = Gateway::start_with(
        crate::common::Options::new(databases()[0])
            .toml("[server]\nheader_read_timeout_secs = 60\nmax_connections = 2"),
    )
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();

    // Two idle connections fill the cap; a third is closed at once.
    let _a = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let _b = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let _ = c
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "over the cap: closed without an answer"
    );
    drop((_a, _b));

    // Once the idle ones are gone, service resumes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = gw.http.get(gw.url("/health")).send().await.expect("health");
    assert_eq!(r.status(), StatusCode::OK);
}
