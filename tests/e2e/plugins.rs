//! The plugin platform through the running gateway: start-up loads the
//! shipped plugins, misbehaving plugins fail alone, grants hold, and
//! `gateway plugins check` explains what is wrong.
//!
//! The `testbed` plugin (plugins/testbed) misbehaves on request; one
//! component serves several entries with different settings.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{BIN, DbKind, Gateway, Options, databases};

/// Where build.rs put the plugin components.
const PLUGIN_DIR: &str = env!("GATEWAY_PLUGIN_DIR");

fn component(name: &str) -> String {
    format!("{PLUGIN_DIR}/{name}.wasm")
}

/// A `[[plugins]]` entry of the testbed in `mode`, with extra grant lines.
fn testbed(id: &str, mode: &str, grants: &str) -> String {
    format!(
        "[[plugins]]\nid = \"{id}\"\npath = \"{}\"\nworld = \"llm-provider\"\nsettings = {{ mode = \"{mode}\" }}\n[plugins.grants]\n{grants}\n",
        component("testbed")
    )
}

async fn api_key(gw: &Gateway) -> String {
    let (code, out, err) = gw.cli(&["apikey", "create", "--name", "ops"]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

async fn complete(gw: &Gateway, key: &str, id: &str, message: &str) -> (u16, Value) {
    complete_with(
        gw,
        key,
        id,
        json!({ "messages": [{ "role": "user", "content": message }] }),
    )
    .await
}

async fn complete_with(gw: &Gateway, key: &str, id: &str, body: Value) -> (u16, Value) {
    let r = gw
        .http
        .post(gw.url(&format!("/api/gateway/plugins/{id}/complete")))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .expect("complete");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn default_config_loads_kb_answer() {
    let gw = Gateway::start(DbKind::Sqlite).await;
    let health: Value = gw
        .http
        .get(gw.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["dependencies"]["plugin:kb-answer"], "healthy");
    assert_eq!(health["plugins"][0]["id"], "kb-answer");
    assert_eq!(health["plugins"][0]["state"], "ready");

    let key = api_key(&gw).await;
    let (status, answer) = complete_with(
        &gw,
        &key,
        "kb-answer",
        json!({
            "messages": [{ "role": "user", "content": "How long do refunds take?" }],
            "passages": [{
                "id": "kb-7",
                "title": "Refunds",
                "content": "Refunds are paid back to the original card within 5 business days. Gift cards are not refundable.",
                "relevance": 0.9
            }]
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["used_passages"], json!(["kb-7"]));
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("5 business days"),
        "{answer}"
    );
    assert!(
        answer["confidence"].as_f64().unwrap_or_default() > 0.5,
        "{answer}"
    );

    // Nothing retrieved: no invented answer, confidence 0 (a human takes over).
    let (status, answer) = complete(&gw, &key, "kb-answer", "Can I bring my dog?").await;
    assert_eq!(status, 200);
    assert_eq!(answer["confidence"], 0.0);
    assert_eq!(answer["used_passages"], json!([]));

    let r = gw
        .http
        .post(gw.url("/api/gateway/plugins/kb-answer/embed"))
        .header("X-API-Key", &key)
        .json(&json!({ "texts": ["refund policy", "refunds policies"] }))
        .send()
        .await
        .expect("embed");
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["dimension"], 256);
    assert_eq!(e["vectors"].as_array().map(Vec::len), Some(2));

    // Customers may not drive plugins; unknown ids are 404.
    let token = gw.register_and_login("plain-customer").await;
    let r = gw
        .http
        .get(gw.url("/api/gateway/plugins"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 403);
    let (status, body) = complete(&gw, &key, "nope", "hi").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn misbehaving_plugins_fail_alone() {
    let toml = [
        testbed("good", "echo", ""),
        testbed("chatty", "chatty", ""),
        testbed("trap", "trap", ""),
        testbed("loop", "loop", "timeout_ms = 1500"),
        testbed("hungry", "memory", "memory_mb = 16"),
        testbed("garbage", "garbage", ""),
        format!("[[plugins]]\nid = \"hello\"\npath = \"{}\"\nworld = \"llm-provider\"\nsettings = {{ greeting = \"Hi\" }}\n", component("hello")),
        "[[plugins]]\nid = \"kb-answer\"\npath = \"builtin:kb-answer\"\nworld = \"llm-provider\"\n"
            .to_owned(),
    ]
    .concat();
    let gw = Gateway::start_with(Options::new(DbKind::Sqlite).toml(&toml)).await;
    let key = api_key(&gw).await;

    let (status, body) = complete(&gw, &key, "good", "hello").await;
    assert_eq!(
        (status, body["text"].as_str()),
        (200, Some("hello")),
        "{body}"
    );

    let cases = [
        ("trap", "plugin `trap` crashed", "testbed was told to trap"),
        ("loop", "plugin `loop` did not answer within 1500 ms", ""),
        (
            "hungry",
            "plugin `hungry` exceeded its memory limit of 16 MiB",
            "",
        ),
        (
            "garbage",
            "plugin `garbage` returned an invalid answer",
            "confidence",
        ),
    ];
    for (id, expected, detail) in cases {
        let started = Instant::now();
        let (status, body) = complete(&gw, &key, id, "hello").await;
        assert_eq!(status, 503, "{id}: {body}");
        assert_eq!(body["error"]["code"], "service_unavailable", "{id}: {body}");
        let message = error_message(&body);
        assert!(message.contains(expected), "{id}: {message}");
        assert!(message.contains(detail), "{id}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{id} took {:?}",
            started.elapsed()
        );

        // The next call to a healthy plugin succeeds.
        let (status, body) = complete(&gw, &key, "good", "still there?").await;
        assert_eq!(
            (status, body["text"].as_str()),
            (200, Some("still there?")),
            "after {id}: {body}"
        );
    }

    // Garbage embeddings are caught too.
    let r = gw
        .http
        .post(gw.url("/api/gateway/plugins/garbage/embed"))
        .header("X-API-Key", &key)
        .json(&json!({ "texts": ["a", "b"] }))
        .send()
        .await
        .expect("embed");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert!(
        error_message(&body).contains("1 vectors for 2 texts"),
        "{body}"
    );

    // A looping call does not hold up other plugins while it runs.
    let looping = {
        let (http, url, key) = (
            gw.http.clone(),
            gw.url("/api/gateway/plugins/loop/complete"),
            key.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .header("X-API-Key", key)
                .json(&json!({ "messages": [{ "role": "user", "content": "spin" }] }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (status, _) = complete(&gw, &key, "kb-answer", "anyone?").await;
    assert_eq!(status, 200);
    // Had it waited for the loop, it would have taken 1.4 s.
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "kb-answer waited {:?}",
        started.elapsed()
    );
    assert_eq!(looping.await.expect("join").expect("send"), 503);

    // The failures are logged with the plugin id, and listed.
    let log = gw.log();
    assert!(
        log.contains("plugin call failed") && log.contains("plugin=trap"),
        "{log}"
    );
    let list: Value = gw
        .http
        .get(gw.url("/api/gateway/plugins"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let trap = list["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == "trap"))
        .expect("trap listed");
    assert_eq!(trap["state"], "ready");
    assert!(trap["failures"].as_u64() >= Some(1), "{trap}");
    let health: Value = gw
        .http
        .get(gw.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "healthy");
}

/// A local HTTP server answering 200 `hello` to anything, and a second one
/// redirecting to the first.
async fn local_servers() -> (u16, u16) {
    use axum::routing::get;
    let ok = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ok_port = ok.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(get(|| async { "hello" }));
        axum::serve(ok, app).await.ok();
    });
    let redirect = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let redirect_port = redirect.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let target = format!("http://127.0.0.2:{ok_port}/");
        let app = axum::Router::new().fallback(get(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }));
        axum::serve(redirect, app).await.ok();
    });
    (ok_port, redirect_port)
}

#[tokio::test]
async fn outbound_http_is_refused_unless_granted() {
    let (ok_port, redirect_port) = local_servers().await;
    let toml = [
        testbed(
            "strict",
            "http",
            "http_hosts = [\"127.0.0.1\", \"169.254.169.254\", \"localhost\", \"[::1]\"]",
        ),
        testbed(
            "local",
            "http",
            &format!("http_hosts = [\"127.0.0.1:{ok_port}\", \"127.0.0.1:{redirect_port}\"]\nallow_private = true"),
        ),
    ]
    .concat();
    let gw = Gateway::start_with(Options::new(DbKind::Sqlite).toml(&toml)).await;
    let key = api_key(&gw).await;
    let cases = [
        (
            "strict",
            "http://example.com/".to_owned(),
            "not in grants.http_hosts",
        ),
        (
            "strict",
            format!("http://127.0.0.1:{ok_port}/"),
            "private, loopback or link-local",
        ),
        (
            "strict",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "private, loopback or link-local",
        ),
        (
            "strict",
            format!("http://[::1]:{ok_port}/"),
            "private, loopback or link-local",
        ),
        // A granted name is resolved, and refused for what it resolves to.
        (
            "strict",
            format!("http://localhost:{ok_port}/"),
            "localhost resolves to",
        ),
        (
            "local",
            format!("http://127.0.0.1:{}/", ok_port.wrapping_add(1)),
            "not in grants.http_hosts",
        ),
        // The redirect leads to a host that is not granted.
        (
            "local",
            format!("http://127.0.0.1:{redirect_port}/"),
            "not in grants.http_hosts",
        ),
        (
            "local",
            "file:///etc/passwd".to_owned(),
            "only http and https",
        ),
    ];
    for (id, url, expected) in cases {
        let (status, body) = complete(&gw, &key, id, &url).await;
        assert_eq!(status, 200, "{body}");
        let text = body["text"].as_str().unwrap_or_default();
        assert!(text.contains(expected), "{id} {url}: {text}");
        assert!(!text.contains("status 200"), "{id} {url}: {text}");
    }
    let (status, body) = complete(
        &gw,
        &key,
        "local",
        &format!("http://127.0.0.1:{ok_port}/hi"),
    )
    .await;
    assert_eq!(
        (status, body["text"].as_str()),
        (200, Some("status 200")),
        "{body}"
    );
}

#[tokio::test]
async fn secrets_are_readable_only_when_granted() {
    let toml = testbed(
        "vault",
        "secret",
        "secrets = [\"TESTBED_GRANTED\", \"TESTBED_UNSET\"]",
    );
    let gw = Gateway::start_with(
        Options::new(DbKind::Sqlite)
            .toml(&toml)
            .env("TESTBED_GRANTED", "s3cret")
            .env("TESTBED_OTHER", "not-for-plugins"),
    )
    .await;
    let key = api_key(&gw).await;
    let ask = async |name: &str| {
        complete(&gw, &key, "vault", name).await.1["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(ask("TESTBED_GRANTED").await, "value s3cret");
    let other = ask("TESTBED_OTHER").await;
    assert!(
        other.starts_with("SecretError::Denied") && !other.contains("not-for-plugins"),
        "{other}"
    );
    assert!(ask("HOME").await.starts_with("SecretError::Denied"));
    assert!(
        ask("TESTBED_UNSET")
            .await
            .starts_with("SecretError::Missing")
    );
}

#[tokio::test]
async fn key_value_store_survives_restarts() {
    for kind in databases() {
        let options = Options::new(kind).toml(&testbed("memo", "kv", ""));
        let gw = Gateway::start_with(Options::new(kind).toml(&options.toml)).await;
        let key = api_key(&gw).await;
        let (_, first) = complete(&gw, &key, "memo", "one").await;
        assert!(
            first["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("before Ok(None) stored Ok(())"),
            "{kind:?}: {first}"
        );
        let (dir, db) = gw.stop();
        let gw = Gateway::restart(dir, db, &options);
        let (_, second) = complete(&gw, &key, "memo", "two").await;
        // "one" as bytes.
        assert!(
            second["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("before Ok(Some([111, 110, 101]))"),
            "{kind:?}: {second}"
        );
    }
}

/// Runs `gateway plugins check` on `config` in a fresh directory.
fn check(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\ndata_dir = \"{}\"\n{config}",
            dir.path().join("data").display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["plugins", "check", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("GATEWAY_CONFIG")
        .env_remove("GATEWAY_DATA_DIR")
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn plugins_check_explains_what_is_wrong() {
    let (code, out) = check("");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok      kb-answer  (llm-provider, builtin:kb-answer"),
        "{out}"
    );

    // The shipped example config passes as written.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/gateway.example.toml"
    ))
    .expect("example");
    let example = example.replace("data_dir = \"./data\"", "");
    let (code, out) = check(&example.replace("[storage]\n", ""));
    assert_eq!(code, 0, "{out}");

    let entry = |id: &str, path: &str, world: &str, rest: &str| {
        format!("[[plugins]]\nid = \"{id}\"\npath = \"{path}\"\nworld = \"{world}\"\n{rest}\n")
    };
    let cases = [
        (
            entry("gone", "/nonexistent/plugin.wasm", "llm-provider", ""),
            "FAILED  gone  (llm-provider, /nonexistent/plugin.wasm): cannot read /nonexistent/plugin.wasm",
        ),
        (
            entry("mixup", "builtin:kb-answer", "channel", ""),
            "world = \"channel\" needs an export of gateway:plugin/messaging, but the component implements the llm-provider world",
        ),
        (
            entry("future", &component("future_version"), "llm-provider", ""),
            "it was built against gateway:plugin@0.3.0, but this gateway speaks gateway:plugin@0.2.0",
        ),
        (
            entry(
                "llm",
                "builtin:openai",
                "llm-provider",
                "settings = { base_url = \"https://llm.example.com\" }\ngrants = { http_hosts = [\"api.openai.com\"] }",
            ),
            "settings.base_url = \"https://llm.example.com\", but host llm.example.com:443 is not in grants.http_hosts of plugin `llm`",
        ),
        (
            entry("nope", "builtin:nothing", "llm-provider", ""),
            "there is no shipped plugin named \"nothing\"",
        ),
    ];
    let core = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(core.path(), b"\0asm\x01\0\0\0").expect("write");
    let core_path = core.path().display().to_string();
    let cases = cases.into_iter().chain([
        (
            entry("core", &core_path, "llm-provider", ""),
            "is a core WebAssembly module, not a component",
        ),
        (
            entry(
                "tiny",
                "builtin:kb-answer",
                "llm-provider",
                "grants = { memory_mb = 1 }",
            ),
            "plugin `tiny` exceeded its memory limit of 1 MiB",
        ),
    ]);
    for (config, expected) in cases {
        let (code, out) = check(&config);
        assert_ne!(code, 0, "{config}\n{out}");
        assert!(
            out.contains(expected),
            "{config}\nexpected: {expected}\ngot: {out}"
        );
        assert!(out.contains("plugins failed the check"), "{out}");
    }

    // The SDK's example plugins load, in their worlds.
    let (code, out) = check(
        &(entry(
            "hello",
            &component("hello"),
            "llm-provider",
            "settings = { greeting = \"Hi\" }",
        ) + &entry(
            "signer",
            &component("hmac_webhook"),
            "webhook",
            "settings = { secret_env = \"HOOK_SECRET\" }\ngrants = { secrets = [\"HOOK_SECRET\"] }",
        )),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok      hello  (llm-provider") && out.contains("ok      signer  (webhook"),
        "{out}"
    );
    let (code, out) = check(&entry(
        "signer",
        &component("hmac_webhook"),
        "llm-provider",
        "",
    ));
    assert_ne!(code, 0);
    assert!(
        out.contains("but the component implements the webhook world"),
        "{out}"
    );

    // One bad entry fails the check, the good one is still reported ok.
    let (code, out) = check(
        &(entry("kb", "builtin:kb-answer", "llm-provider", "")
            + &entry("gone", "missing.wasm", "llm-provider", "")),
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("ok      kb  ")
            && out.contains("FAILED  gone")
            && out.contains("1 of 2 plugins failed"),
        "{out}"
    );
}

#[tokio::test]
async fn a_broken_entry_degrades_health_but_the_gateway_serves() {
    let toml = "[[plugins]]\nid = \"gone\"\npath = \"/nonexistent/x.wasm\"\nworld = \"webhook\"\n";
    let gw = Gateway::start_with(Options::new(DbKind::Sqlite).toml(toml)).await;
    let r = gw.http.get(gw.url("/health")).send().await.expect("health");
    assert_eq!(r.status(), 200);
    let health: Value = r.json().await.expect("json");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["dependencies"]["plugin:gone"], "unhealthy");
    assert_eq!(health["plugins"][0]["state"], "failed");
    // Public health names no paths and no errors; admins see why.
    assert!(health["plugins"][0].get("error").is_none(), "{health}");
    let key = api_key(&gw).await;
    let list: Value = gw
        .http
        .get(gw.url("/api/gateway/plugins"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        list["plugins"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot read /nonexistent/x.wasm"),
        "{list}"
    );
    let (status, body) = complete(&gw, &key, "gone", "hi").await;
    assert_eq!(status, 503);
    assert!(
        error_message(&body).contains("plugin `gone` is not loaded"),
        "{body}"
    );
}
