//! WhatsApp channel benchmark: signed webhooks ingested per second
//! (verified by the plugin, written to the durable inbox, acknowledged),
//! the time from a webhook to the assistant's reply reaching the Graph API,
//! and the plugin's parse in WebAssembly beside the same parse native.
//!
//! ```text
//! cargo bench --bench channels                                  # SQLite
//! cargo bench --bench channels -- --seconds 10 --connections 64 --replies 300
//! ```
//!
//! Processes: the gateway (rate limits off, `builtin:whatsapp` pointed at a
//! fake Graph API served by this binary, `kb-answer` answering) and this
//! load generator. Ingest: `--connections` closed-loop clients, each
//! posting signed webhooks of its own customer with a new message id every
//! time. Replies: one customer message at a time, timed from the webhook's
//! send to the fake Graph API receiving the reply to that customer.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, spawn_and_wait};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRET: &str = "bench-app-secret";
const NUMBER: &str = "301118820040015";

struct Args {
    seconds: u64,
    connections: usize,
    replies: usize,
    parses: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 5,
        connections: 64,
        replies: 200,
        parses: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--seconds" => a.seconds = num(5) as u64,
            "--connections" => a.connections = num(64),
            "--replies" => a.replies = num(200),
            "--parses" => a.parses = num(20_000),
            _ => {}
        }
    }
    a
}

fn body_for(wa_id: &str, message_id: &str, text: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{NUMBER}"}},"contacts":[{{"profile":{{"name":"Bench Customer"}},"wa_id":"{wa_id}"}}],"messages":[{{"from":"{wa_id}","id":"{message_id}","timestamp":"1700000000","text":{{"body":"{text}"}},"type":"text"}}]}},"field":"messages"}}]}}]}}"#
    )
}

fn signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        gateway_plugin_sdk::sign::hmac_sha256_hex(SECRET.as_bytes(), body)
    )
}

/// When the fake Graph API received a message to each customer.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn fake_graph() -> (u16, Arrivals, Arc<std::sync::atomic::AtomicU64>) {
    use axum::routing::post;
    let arrivals: Arrivals = Arc::default();
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (a, c) = (arrivals.clone(), count.clone());
    let app = axum::Router::new().route(
        "/v23.0/{phone}/messages",
        post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let (a, c) = (a.clone(), c.clone());
            async move {
                let n = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(to) = body["to"].as_str() {
                    a.lock()
                        .expect("lock")
                        .insert(to.to_owned(), Instant::now());
                }
                axum::Json(serde_json::json!({"messaging_product": "whatsapp",
                    "messages": [{"id": format!("wamid.BENCH{n}")}]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, arrivals, count)
}

fn gateway(dir: &std::path::Path, port: u16) -> Server {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[storage]
data_dir = {data:?}

[[plugins]]
id = "kb-answer"
path = "builtin:kb-answer"
world = "llm-provider"

[[plugins]]
id = "whatsapp"
path = "builtin:whatsapp"
world = "channel"
organization = "default"
[plugins.settings]
graph_api_url = "http://127.0.0.1:{port}/v23.0"
phone_number_ids = ["{NUMBER}"]
[plugins.grants]
http_hosts = ["127.0.0.1:{port}"]
allow_private = true
max_concurrent = 64
secrets = ["WHATSAPP_APP_SECRET", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_VERIFY_TOKEN"]
"#,
            data = dir.join("data").display().to_string()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args(["--bind", "127.0.0.1:0"])
        .env("GATEWAY_RATE_LIMITS", "off")
        .env(
            "GATEWAY_JWT_SECRET",
            "bench-secret-0123456789abcdef0123456789",
        )
        .env("WHATSAPP_APP_SECRET", SECRET)
        .env("WHATSAPP_ACCESS_TOKEN", "bench-token")
        .env("WHATSAPP_VERIFY_TOKEN", "bench-verify")
        .env_remove("DATABASE_URL");
    spawn_and_wait(cmd, true)
}

async fn post_webhook(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: &str,
    body: String,
) -> bool {
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/api/channels/whatsapp/webhook")
        .header("host", addr)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(body.as_bytes()))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    match sender.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            resp.into_body().collect().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

async fn connect(addr: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Closed-loop ingest: webhooks per second and their latency.
async fn ingest(addr: &str, connections: usize, seconds: u64) -> (f64, f64, f64, u64) {
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + warmup;
    let stop = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await;
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut n, mut errors) = (0u64, 0u64);
            let wa_id = format!("4915100{c:05}");
            let mut i = 0u64;
            while Instant::now() < stop {
                i += 1;
                let body = body_for(
                    &wa_id,
                    &format!("wamid.IN.{c}.{i}"),
                    "Do you ship to Norway?",
                );
                let sent = Instant::now();
                let ok = post_webhook(&mut sender, &addr, body).await;
                let done = Instant::now();
                if sent >= start && done <= stop {
                    if ok {
                        n += 1;
                        let _ = h.record((done - sent).as_micros().max(1) as u64);
                    } else {
                        errors += 1;
                    }
                }
                if !ok {
                    sender = connect(&addr).await;
                }
            }
            (h, n, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut n, mut errors) = (0, 0);
    for t in tasks {
        let (h, k, e) = t.await.expect("task");
        all.add(&h).expect("merge");
        n += k;
        errors += e;
    }
    (
        n as f64 / seconds as f64,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        errors,
    )
}

/// Inbox events processed so far (the gateway's metric).
async fn processed(addr: &str) -> u64 {
    let mut sender = connect(addr).await;
    let req = hyper::Request::builder()
        .uri("/metrics")
        .header("host", addr)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let Ok(resp) = sender.send_request(req).await else {
        return 0;
    };
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("channel_inbox_processed_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Webhook to reply at the fake Graph API, one customer message at a time.
async fn replies(addr: &str, arrivals: &Arrivals, count: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut sender = connect(addr).await;
    for i in 0..count {
        let wa_id = format!("4479{i:08}");
        let body = body_for(&wa_id, &format!("wamid.R.{i}"), "Do you ship to Norway?");
        let sent = Instant::now();
        assert!(
            post_webhook(&mut sender, addr, body).await,
            "webhook refused"
        );
        let deadline = sent + Duration::from_secs(10);
        loop {
            if let Some(at) = arrivals.lock().expect("lock").get(&wa_id) {
                let _ = h.record((*at - sent).as_micros().max(1) as u64);
                break;
            }
            assert!(Instant::now() < deadline, "no reply within 10 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    h
}

/// The plugin's verify-and-parse in the component against the same code
/// native.
async fn parse_ratio(n: usize) -> Ratio {
    use gateway::config::Config;
    let toml = r#"
[[plugins]]
id = "whatsapp"
path = "builtin:whatsapp"
world = "channel"
[plugins.settings]
phone_number_ids = ["301118820040015"]
[plugins.grants]
http_hosts = ["graph.facebook.com"]
secrets = ["WHATSAPP_APP_SECRET"]
"#;
    let env = HashMap::from([("WHATSAPP_APP_SECRET".to_owned(), SECRET.to_owned())]);
    let config = Config::from_toml(toml, None, &env).expect("config");
    let plugins = gateway::plugins::Plugins::load(&config.plugins, None, None);
    let plugin = plugins
        .get("whatsapp")
        .expect("entry")
        .expect("whatsapp loads");
    let body = body_for("16315551181", "wamid.P", "Caf\\u00e9 \\/ Hello there?");
    let request = gateway::plugins::WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: Vec::new(),
        headers: vec![gateway::plugins::Header {
            name: "x-hub-signature-256".into(),
            value: signature(body.as_bytes()),
        }],
        body: body.clone().into_bytes(),
    };
    for _ in 0..200 {
        plugin.parse_webhook(&request).await.expect("parse");
    }
    let started = Instant::now();
    for _ in 0..n {
        let parsed = plugin.parse_webhook(&request).await.expect("parse");
        assert_eq!(parsed.events.len(), 1);
    }
    let wasm = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let mut session = plugin.channel_session().await.expect("session");
    for _ in 0..200 {
        session.parse_webhook(&request).await.expect("parse");
    }
    let started = Instant::now();
    for _ in 0..n {
        let parsed = session.parse_webhook(&request).await.expect("parse");
        assert_eq!(parsed.events.len(), 1);
    }
    let reused = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    // The signature check alone: a wrong signature fails after the HMAC,
    // before the JSON.
    let mut wrong = request.clone();
    wrong.headers[0].value = format!("sha256={}", "0".repeat(64));
    let started = Instant::now();
    for _ in 0..n {
        assert!(session.parse_webhook(&wrong).await.is_err());
    }
    let hmac_wasm = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(session);
    let started = Instant::now();
    for _ in 0..n {
        let header = signature(body.as_bytes());
        std::hint::black_box(header);
    }
    let hmac_native = started.elapsed().as_secs_f64() * 1e6 / n as f64;

    let header = signature(body.as_bytes());
    let started = Instant::now();
    for _ in 0..n {
        whatsapp::wire::verify_signature(SECRET.as_bytes(), body.as_bytes(), Some(&header))
            .expect("signature");
        let events = whatsapp::wire::parse_webhook_body(body.as_bytes()).expect("parse");
        assert_eq!(std::hint::black_box(events).len(), 1);
    }
    let native = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    Ratio {
        wasm,
        reused,
        native,
        hmac_wasm,
        hmac_native,
    }
}

struct Ratio {
    wasm: f64,
    reused: f64,
    native: f64,
    hmac_wasm: f64,
    hmac_native: f64,
}

fn main() {
    // The in-process plugin reads its secret from the environment: run
    // again with it set rather than set it in a running process.
    if std::env::var_os("WHATSAPP_APP_SECRET").is_none() {
        let status = Command::new(std::env::current_exe().expect("exe"))
            .args(std::env::args().skip(1))
            .env("WHATSAPP_APP_SECRET", SECRET)
            .status()
            .expect("re-run");
        std::process::exit(status.code().unwrap_or(1));
    }
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let Ratio {
            wasm,
            reused,
            native,
            hmac_wasm,
            hmac_native,
        } = parse_ratio(args.parses).await;
        println!("| verify + parse one signed webhook | µs per call | × native |");
        println!("|---|---|---|");
        println!("| native (the plugin's code linked into this binary) | {native:.1} | 1.00 |");
        println!(
            "| component, one reused instance (the parse alone) | {reused:.1} | {:.2} |",
            reused / native
        );
        println!(
            "| component, fresh pooled instance per call (the gateway's path) | {wasm:.1} | {:.2} |",
            wasm / native
        );
        println!(
            "| of which the signature: component (a wrong one, refused before the JSON) / native HMAC-SHA256 | {hmac_wasm:.1} / {hmac_native:.1} | {:.2} |",
            hmac_wasm / hmac_native
        );
        if args.seconds == 0 {
            return;
        }

        let (port, arrivals, _count) = fake_graph().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let server = gateway(dir.path(), port);
        let addr = server.addr.clone();
        let (rps, p50, p99, errors) = ingest(&addr, args.connections, args.seconds).await;
        println!(
            "| webhooks ingested ({} senders, SQLite) | {rps:.0}/s | p50 {p50:.2} ms | p99 {p99:.2} ms | errors {errors} |",
            args.connections
        );
        // The backlog drains before replies are timed one at a time.
        let ingested = (rps * args.seconds as f64) as u64;
        let at_end = processed(&addr).await;
        let drain_start = Instant::now();
        let mut last = at_end;
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = processed(&addr).await;
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let drained = (last_change - drain_start).as_secs_f64();
        println!(
            "| inbox processing | {at_end} events processed by the end of the ingest (about {ingested} acknowledged in its {} s) | all {last} after {drained:.1} s more | {:.0} events/s overall |",
            args.seconds,
            last as f64 / (args.seconds as f64 + 1.0 + drained)
        );
        let h = replies(&addr, &arrivals, args.replies).await;
        println!(
            "| webhook to reply at the Graph API ({} one at a time) | p50 {:.2} ms | p99 {:.2} ms | max {:.2} ms |",
            args.replies,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
        drop(server);
    });
}
