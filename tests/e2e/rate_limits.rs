//! Rate-limit headers, 429s in each dialect's shape, organization and login
//! limits, and switching limits off.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Gateway, Options, databases};

struct Hit {
    status: StatusCode,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
    retry_after: Option<u64>,
    body: Value,
}

fn header(r: &reqwest::Response, name: &str) -> Option<u64> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn hit(req: reqwest::RequestBuilder) -> Hit {
    let r = req.send().await.expect("send");
    Hit {
        status: r.status(),
        limit: header(&r, "x-ratelimit-limit"),
        remaining: header(&r, "x-ratelimit-remaining"),
        reset: header(&r, "x-ratelimit-reset"),
        retry_after: header(&r, "retry-after"),
        body: r.json().await.unwrap_or(Value::Null),
    }
}

/// Sends `n` requests made by `make`; if a window boundary passes in the
/// middle (the reset changes), starts again, so the test never flakes on
/// the minute.
async fn burst(n: usize, make: impl Fn() -> reqwest::RequestBuilder) -> Vec<Hit> {
    for _ in 0..3 {
        let mut hits = Vec::with_capacity(n);
        for _ in 0..n {
            hits.push(hit(make()).await);
        }
        if hits.first().map(|h| h.reset) == hits.last().map(|h| h.reset) {
            return hits;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    panic!("window boundaries kept interrupting the burst");
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).expect("time")
}

#[tokio::test]
async fn per_user_limits_count_down_then_refuse() {
    let gw = Gateway::start_with(Options::new(databases()[0]).toml(
        "[rate_limits.assistant]\nper_minute = 4\n[rate_limits.chat]\nper_minute = 3\nper_hour = 50\n[rate_limits.platform]\nper_minute = 2",
    ))
    .await;
    let token = gw.register_and_login("frank").await;

    // 002: the user's own window (register and login counted against the IP).
    let hits = burst(5, || {
        gw.http.get(gw.url("/api/v1/auth/me")).bearer_auth(&token)
    })
    .await;
    let remaining: Vec<_> = hits.iter().map(|h| h.remaining).collect();
    assert_eq!(remaining, [Some(3), Some(2), Some(1), Some(0), Some(0)]);
    assert!(hits.iter().all(|h| h.limit == Some(4)));
    let reset = hits[0].reset.expect("reset");
    assert!(
        reset > now() && reset <= now() + 61,
        "reset is a Unix time within the minute: {reset}"
    );
    let last = &hits[4];
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(last.retry_after.is_some_and(|s| (1..=60).contains(&s)));
    assert!(
        last.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Rate limit")),
        "{}",
        last.body
    );

    // 000: the tighter of minute and hour windows, resetAt in the body.
    let hits = burst(4, || {
        gw.http.get(gw.url("/api/chat/nothing")).bearer_auth(&token)
    })
    .await;
    assert_eq!(hits[0].status, StatusCode::NOT_FOUND);
    assert_eq!(hits[0].limit, Some(3));
    let last = &hits[3];
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.body["error"]["code"], "rate_limit_exceeded");
    let reset_at = last.body["error"]["resetAt"].as_str().expect("resetAt");
    let reset_at = chrono::DateTime::parse_from_rfc3339(reset_at)
        .expect("RFC 3339")
        .timestamp();
    assert_eq!(u64::try_from(reset_at).ok(), last.reset);

    // 003: its own code words plus requestId.
    let hits = burst(3, || {
        gw.http.get(gw.url("/api/core/nothing")).bearer_auth(&token)
    })
    .await;
    let last = &hits[2];
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.body["error"]["code"], "rate_limit_exceeded");
    assert!(last.body["error"]["resetAt"].is_string());
    assert!(last.body["requestId"].is_string());

    // Another user has a window of their own.
    let other = gw.register_and_login("grace").await;
    let h = hit(gw.http.get(gw.url("/api/v1/auth/me")).bearer_auth(&other)).await;
    assert_eq!(h.status, StatusCode::OK);
}

#[tokio::test]
async fn organization_limit_is_shared() {
    let gw = Gateway::start_with(
        Options::new(databases()[0])
            .toml("[rate_limits.tickets]\nper_minute = 10\norg_per_minute = 3"),
    )
    .await;
    let a = gw.register_and_login("henry").await;
    let b = gw.register_and_login("irene").await;
    let hits = burst(4, || {
        // Alternate users of the one default organization.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let token = if N
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(2)
        {
            &a
        } else {
            &b
        };
        gw.http
            .get(gw.url("/v1/tickets-not-yet"))
            .bearer_auth(token)
    })
    .await;
    assert_eq!(hits[2].status, StatusCode::NOT_FOUND);
    assert_eq!(hits[3].status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        hits[3].limit,
        Some(3),
        "the organization window is the tight one"
    );
    assert!(hits[3].body["detail"].is_string());
}

#[tokio::test]
async fn login_attempts_are_limited_per_username() {
    let gw = Gateway::start_with(
        Options::new(databases()[0])
            .toml("[rate_limits.login]\nper_username_per_minute = 3\nper_ip_per_minute = 100"),
    )
    .await;
    gw.register_and_login("judy").await;
    gw.register_and_login("karl").await;
    let gw = &gw;
    let attempt = |name: &'static str| {
        move || {
            gw.http
                .post(gw.url("/api/v1/auth/login"))
                .json(&serde_json::json!({"username": name, "password": "guess-guess"}))
        }
    };
    // Four wrong guesses in one window: three 401s, then 429 (the burst
    // repeats if a minute boundary splits it; the successful login above may
    // or may not share the window, so the 429 comes third or fourth).
    let hits = burst(4, attempt("JUDY")).await;
    let statuses: Vec<_> = hits.iter().map(|h| h.status).collect();
    let first_429 = statuses
        .iter()
        .position(|s| *s == StatusCode::TOO_MANY_REQUESTS)
        .expect("a 429");
    assert!(first_429 >= 2, "{statuses:?}");
    assert!(
        statuses[..first_429]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let h = hit(attempt("judy")()).await;
    assert_eq!(h.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        h.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Too many login attempts"))
    );
    assert!(h.retry_after.is_some());
    // The headers describe the login window that refused, not the 002 one.
    assert_eq!((h.limit, h.remaining), (Some(3), Some(0)));
    // Another name from the same address is not affected.
    let other = hit(attempt("karl")()).await;
    assert_eq!(
        other.status,
        StatusCode::UNAUTHORIZED,
        "per name, not global"
    );
}

#[tokio::test]
async fn limits_can_be_switched_off() {
    let gw = Gateway::start_with(
        Options::new(databases()[0])
            .toml("[rate_limits.assistant]\nper_minute = 1")
            .env("GATEWAY_RATE_LIMITS", "off"),
    )
    .await;
    for _ in 0..3 {
        let r = gw
            .http
            .get(gw.url("/api/v1/auth/me"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(!r.headers().contains_key("x-ratelimit-limit"));
    }
}
