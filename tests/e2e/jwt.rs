//! Tokens the gateway must refuse: `alg: none`, another key, another
//! algorithm, expired, wrong audience or issuer, malformed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Gateway, JWT_SECRET, databases};

fn claims(sub: i64, exp_offset: i64, iss: &str, aud: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub.to_string(), "iss": iss, "aud": aud, "iat": now, "exp": now + exp_offset, "org": 1, "role": "customer"})
}

fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn forged_and_stale_tokens_are_rejected() {
    let gw = Gateway::start(databases()[0]).await;
    let good = gw.register_and_login("erin").await;
    let me = |token: String| {
        let req = gw.http.get(gw.url("/api/v1/auth/me")).bearer_auth(token);
        async move {
            let r = req.send().await.expect("me");
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, user) = me(good.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let id = user["id"].as_i64().expect("id");

    // A correctly signed token proves the test mints tokens the way the gateway does.
    let (status, _) = me(sign(
        Algorithm::HS256,
        JWT_SECRET,
        &claims(id, 600, "gateway", "gateway"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);

    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(id, 600, "gateway", "gateway").to_string());
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        // Same user, longer life: only the signature can tell.
        parts[1] =
            URL_SAFE_NO_PAD.encode(claims(id, 86_400 * 365, "gateway", "gateway").to_string());
        parts.join(".")
    };
    let cases = [
        (
            "alg none, no signature",
            format!("{none_header}.{payload}."),
        ),
        (
            "alg none, old signature",
            format!(
                "{none_header}.{payload}.{}",
                good.split('.').nth(2).unwrap_or_default()
            ),
        ),
        (
            "another key",
            sign(
                Algorithm::HS256,
                "some-other-secret-some-other-secret",
                &claims(id, 600, "gateway", "gateway"),
            ),
        ),
        (
            "HS512 with the right key",
            sign(
                Algorithm::HS512,
                JWT_SECRET,
                &claims(id, 600, "gateway", "gateway"),
            ),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                JWT_SECRET,
                &claims(id, -120, "gateway", "gateway"),
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::HS256,
                JWT_SECRET,
                &claims(id, 600, "gateway", "someone-else"),
            ),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                JWT_SECRET,
                &claims(id, 600, "evil", "gateway"),
            ),
        ),
        ("tampered payload", tampered),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in cases {
        let (status, body) = me(token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(body["detail"].is_string(), "{what}: {body}");
    }

    // Missing claims.
    let now = chrono::Utc::now().timestamp();
    let no_exp = json!({"sub": id.to_string(), "iss": "gateway", "aud": "gateway", "iat": now, "org": 1, "role": "customer"});
    let (status, _) = me(sign(Algorithm::HS256, JWT_SECRET, &no_exp)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no exp");

    let r = gw
        .http
        .get(gw.url("/api/v1/auth/me"))
        .send()
        .await
        .expect("me");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"detail": "Not authenticated"})
    );
    let r = gw
        .http
        .get(gw.url("/api/v1/auth/me"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .expect("me");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
