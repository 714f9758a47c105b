//! Message benchmark: authenticated JSON posts into existing chat sessions
//! (persisted and fanned out) beside the plain-handler baseline, and
//! WebSocket fan-out latency.
//!
//! ```text
//! cargo bench --bench messages                       # SQLite
//! cargo bench --bench messages -- --postgres URL     # PostgreSQL (an admin URL; a fresh database is made)
//! cargo bench --bench messages -- --seconds 10 --connections 64 --ws-clients 1000 --ws-sessions 100
//! cargo bench --bench messages -- --synchronous normal   # SQLite's durability off a notch
//! cargo bench --bench messages -- --idle-sockets 10000   # and the memory of idle WebSockets
//! ```
//!
//! Processes: the gateway (rate limits off), the baseline server (this
//! binary with `--baseline-server`), and this load generator. Each of the
//! `--connections` clients posts into a session of its own; the fan-out run
//! connects `--ws-clients` WebSockets spread over `--ws-sessions` sessions,
//! posts one message into every session per round, and measures from the
//! POST to the last of the session's clients receiving it.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Target, http_json, load, load_each, row, rss_kib, spawn_and_wait};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use hyper::body::Bytes;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

struct Args {
    seconds: u64,
    connections: usize,
    postgres: Option<String>,
    ws_clients: usize,
    ws_sessions: usize,
    rounds: usize,
    /// `database.synchronous` (SQLite): `full` (the default) or `normal`.
    synchronous: String,
    /// Idle WebSockets to open after the fan-out, for their memory.
    idle_sockets: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 5,
        connections: 64,
        postgres: None,
        ws_clients: 1000,
        ws_sessions: 100,
        rounds: 20,
        synchronous: "full".into(),
        idle_sockets: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |default: usize| it.next().and_then(|v| v.parse().ok()).unwrap_or(default);
        match arg.as_str() {
            "--seconds" => a.seconds = num(5) as u64,
            "--connections" => a.connections = num(64),
            "--ws-clients" => a.ws_clients = num(1000),
            "--ws-sessions" => a.ws_sessions = num(100),
            "--rounds" => a.rounds = num(20),
            "--idle-sockets" => a.idle_sockets = num(0),
            "--postgres" => a.postgres = it.next(),
            "--synchronous" => a.synchronous = it.next().unwrap_or_else(|| "full".into()),
            _ => {}
        }
    }
    a
}

fn main() {
    if std::env::args().any(|a| a == "--baseline-server") {
        common::baseline_server();
        return;
    }
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

async fn authed_json(
    addr: &str,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    use http_body_util::{BodyExt as _, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}

async fn run(args: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            // One client address and one user hold every socket here: the
            // per-address and per-user caps are lifted.
            "[storage]\ndata_dir = {:?}\n[rate_limits]\nenabled = false\n\
             [server]\nmax_connections_per_address = 100000\nmax_sockets_per_user = 100000\n\
             [database]\nsynchronous = {:?}\n",
            dir.path().join("data").display().to_string(),
            args.synchronous
        ),
    )
    .expect("config");
    let mut store = format!("SQLite (WAL, synchronous={})", args.synchronous);
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config);
    for key in [
        "GATEWAY_CONFIG",
        "GATEWAY_DATA_DIR",
        "DATABASE_URL",
        "GATEWAY_RATE_LIMITS",
        "RUST_LOG",
    ] {
        cmd.env_remove(key);
    }
    if let Some(admin) = &args.postgres {
        use sqlx::Connection as _;
        let name = format!("gw_bench_msg_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect to PostgreSQL");
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        cmd.env("DATABASE_URL", format!("{base}/{name}"));
        store = "PostgreSQL".to_owned();
    }
    let gateway = spawn_and_wait(cmd, true);
    let mut baseline_cmd = Command::new(std::env::current_exe().expect("exe"));
    baseline_cmd.arg("--baseline-server");
    let baseline = spawn_and_wait(baseline_cmd, false);

    let user = serde_json::json!({"username": "bench", "email": "bench@example.com", "password": "bench-password-1"});
    http_json(&gateway.addr, "POST", "/api/v1/auth/register", user).await;
    let token = http_json(
        &gateway.addr,
        "POST",
        "/api/v1/auth/login",
        serde_json::json!({"username": "bench", "password": "bench-password-1"}),
    )
    .await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let sessions_needed = args.connections.max(args.ws_sessions);
    let mut sessions = Vec::with_capacity(sessions_needed);
    for _ in 0..sessions_needed {
        let s = authed_json(
            &gateway.addr,
            &token,
            "/api/chat/sessions",
            serde_json::json!({}),
        )
        .await;
        sessions.push(s["id"].as_str().expect("session id").to_owned());
    }

    let rss_before = rss_kib(gateway.child.id());
    let c = args.connections;
    let plain = load(
        Target {
            addr: baseline.addr.clone(),
            method: hyper::Method::GET,
            path: "/me".into(),
            token: None,
            body: None,
        },
        c,
        args.seconds,
    )
    .await;
    let body = Bytes::from(
        serde_json::json!({ "content": "Where is my order? It was due yesterday." }).to_string(),
    );
    let targets: Vec<Target> = sessions[..c]
        .iter()
        .map(|id| Target {
            addr: gateway.addr.clone(),
            method: hyper::Method::POST,
            path: format!("/api/chat/sessions/{id}/messages"),
            token: Some(token.clone()),
            body: Some(body.clone()),
        })
        .collect();
    let posts = load_each(targets, c, args.seconds).await;
    let rss_after_posts = rss_kib(gateway.child.id());

    let (per_event, per_client, connected) =
        fan_out(&gateway.addr, &token, &sessions[..args.ws_sessions], &args).await;
    let rss_after = rss_kib(gateway.child.id());
    // The fan-out's clients are gone once the server has noticed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_idle = rss_kib(gateway.child.id());
    let idle = idle_sockets(&gateway.addr, &token, &sessions, args.idle_sockets).await;
    let rss_idle = rss_kib(gateway.child.id());

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\n### Messages: {store}, {c} connections, {} s, {cores} cores\n",
        args.seconds
    );
    println!("| endpoint | requests/s | p50 ms | p99 ms | share of plain | errors |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        row("plain axum JSON handler (baseline)", &plain, None)
    );
    println!(
        "{}",
        row(
            "POST /api/chat/sessions/{id}/messages (persisted, fanned out)",
            &posts,
            Some(plain.rps())
        )
    );
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "\n### WebSocket fan-out: {connected} clients on {} sessions, {} rounds\n",
        args.ws_sessions, args.rounds
    );
    println!("| measure | events | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| POST to the last client of the session | {} | {:.2} | {:.2} | {:.2} |",
        per_event.len(),
        ms(&per_event, 0.5),
        ms(&per_event, 0.99),
        per_event.max() as f64 / 1000.0
    );
    println!(
        "| POST to each client | {} | {:.2} | {:.2} | {:.2} |",
        per_client.len(),
        ms(&per_client, 0.5),
        ms(&per_client, 0.99),
        per_client.max() as f64 / 1000.0
    );
    let mib = |k: Option<u64>| k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!(
        "\nGateway RSS: {} MiB before, {} MiB after the posts, {} MiB after the fan-out (clients still connected).",
        mib(rss_before),
        mib(rss_after_posts),
        mib(rss_after)
    );
    if let (Some(n), Some(before), Some(after)) = (
        idle.as_ref().map(Vec::len).filter(|n| *n > 0),
        rss_before_idle,
        rss_idle,
    ) {
        println!(
            "\n{n} idle WebSockets: RSS {} MiB, {:.1} KiB a socket.",
            mib(Some(after)),
            after.saturating_sub(before) as f64 / n as f64
        );
    }
}

/// Opens `n` WebSockets that send and read nothing (after the fan-out's
/// clients are gone), and keeps them open while RSS is read.
async fn idle_sockets(
    addr: &str,
    token: &str,
    sessions: &[String],
    n: usize,
) -> Option<
    Vec<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
> {
    if n == 0 {
        return None;
    }
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let session = &sessions[i % sessions.len()];
        let url = format!("ws://{addr}/ws/chat/{session}?token={token}");
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        open.push(socket);
    }
    // Let the server settle its side of the last handshakes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Some(open)
}

type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// Connects the clients, then posts one marked message per session per
/// round and collects when each client saw it.
async fn fan_out(
    addr: &str,
    token: &str,
    sessions: &[String],
    args: &Args,
) -> (Histogram<u64>, Histogram<u64>, usize) {
    let arrivals: Arrivals = Arc::default();
    let mut clients = Vec::new();
    for i in 0..args.ws_clients {
        let session = &sessions[i % sessions.len()];
        let url = format!("ws://{addr}/ws/chat/{session}?token={token}");
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        let arrivals = arrivals.clone();
        clients.push(tokio::spawn(async move {
            let mut socket = socket;
            while let Some(Ok(frame)) = socket.next().await {
                let at = Instant::now();
                if let tokio_tungstenite::tungstenite::Message::Text(text) = frame
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                    && let Some(marker) = v["data"]["content"].as_str()
                    && marker.starts_with("fan-")
                    && let Ok(mut a) = arrivals.lock()
                {
                    a.entry(marker.to_owned()).or_default().push(at);
                }
            }
        }));
    }
    let per_session = args.ws_clients / sessions.len();
    let mut per_event = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut per_client = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for round in 0..args.rounds {
        let mut posts = Vec::new();
        for session in sessions {
            let (addr, token, session) = (addr.to_owned(), token.to_owned(), session.clone());
            let marker = format!("fan-{round}-{session}");
            posts.push(tokio::spawn(async move {
                let sent = Instant::now();
                authed_json(
                    &addr,
                    &token,
                    &format!("/api/chat/sessions/{session}/messages"),
                    serde_json::json!({ "content": marker }),
                )
                .await;
                (marker, sent)
            }));
        }
        let mut sent = Vec::new();
        for p in posts {
            sent.push(p.await.expect("post"));
        }
        // Wait until every client has the round's messages (at most 10 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let complete = arrivals.lock().map(|a| {
                sent.iter()
                    .all(|(m, _)| a.get(m).is_some_and(|v| v.len() >= per_session))
            });
            if complete.unwrap_or(false) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Ok(a) = arrivals.lock() {
            for (marker, at) in &sent {
                let Some(times) = a.get(marker) else { continue };
                for t in times {
                    let _ = per_client.record(t.duration_since(*at).as_micros().max(1) as u64);
                }
                if let Some(last) = times.iter().max() {
                    let _ = per_event.record(last.duration_since(*at).as_micros().max(1) as u64);
                }
            }
        }
    }
    let connected = clients.len();
    for c in clients {
        c.abort();
    }
    (per_event, per_client, connected)
}
