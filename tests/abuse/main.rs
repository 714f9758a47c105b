//! What one careless or hostile client can do to everyone else, against the
//! real binary: silent and idle connections, oversized WebSocket messages,
//! socket floods, concurrent large uploads. Each attack runs from
//! 127.0.0.2 while a well-behaved client on 127.0.0.1 checks that `/health`
//! stays fast (p99 under 50 ms), and the gateway's RSS stays under a stated
//! bound.
//!
//! A test binary of its own, its tests one at a time ([`alone`]): a latency
//! bound means nothing while other gateways of the suite load the machine.

#[path = "../e2e/common.rs"]
#[allow(dead_code)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::{DbKind, Gateway, Options};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the machine for one test.
async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// The gateway's resident memory, in MiB.
fn rss_mib(gw: &Gateway) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Prints an attack's figures (`cargo test --test abuse -- --nocapture`;
/// BENCHMARKS.md keeps them).
fn report(attack: &str, p99: Duration, baseline: f64, rss: f64) {
    println!(
        "figure | {attack} | /health p99 {:.1} ms | RSS {baseline:.0} -> {rss:.0} MiB |",
        p99.as_secs_f64() * 1000.0
    );
}

fn addr(gw: &Gateway) -> SocketAddr {
    gw.base
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// A TCP connection to the gateway from the attacker's address.
async fn attacker_socket(gw: &Gateway) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().expect("address"))?;
    socket.connect(addr(gw)).await
}

/// `/health` latencies over `n` requests on fresh connections (each pays
/// the accept path an attack would clog), measured from a thread of its own
/// so that the attacking tasks of the test do not delay the measurement;
/// answers the 99th percentile.
async fn health_p99(gw: &Gateway, n: usize) -> Duration {
    let url = gw.url("/health");
    let measure = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let started = Instant::now();
                let r = client.get(&url).send().await.expect("health");
                assert_eq!(r.status(), 200);
                times.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            times.sort();
            times[(n * 99 / 100).min(n - 1)]
        })
    });
    tokio::task::spawn_blocking(move || measure.join().expect("measure"))
        .await
        .expect("join")
}

/// Whether the server closes `stream` within `limit` (a read returns 0
/// bytes or fails).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_and_capped_per_address() {
    let _alone = alone().await;
    let gw = Gateway::start_with(Options::new(DbKind::Sqlite).toml(
        "[server]\nheader_read_timeout_secs = 3\nidle_timeout_secs = 2\nmax_connections_per_address = 50",
    ))
    .await;
    let baseline = rss_mib(&gw);

    // 300 sockets that never send a byte, from one address: 50 are held
    // (until the header deadline), the rest are closed at once.
    let mut sockets = Vec::new();
    for _ in 0..300 {
        sockets.push(attacker_socket(&gw).await.expect("connect"));
    }
    let verdicts = futures_util::future::join_all(
        sockets
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(500))),
    )
    .await;
    let mut held: Vec<_> = sockets
        .into_iter()
        .zip(verdicts)
        .filter_map(|(s, closed)| (!closed).then_some(s))
        .collect();
    assert_eq!(held.len(), 50, "the address's cap");
    let p99 = health_p99(&gw, 200).await;
    assert!(
        p99 < Duration::from_millis(50),
        "/health p99 {p99:?} during the attack"
    );
    let rss = rss_mib(&gw);
    report("300 silent sockets from one address", p99, baseline, rss);
    assert!(
        rss < baseline + 50.0,
        "RSS {rss:.0} MiB (from {baseline:.0})"
    );

    // Silence past the header deadline closes every one of them.
    for s in &mut held {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "a silent connection stayed open"
        );
    }

    // A keep-alive connection with nothing in flight is closed once idle.
    let mut s = attacker_socket(&gw).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let idle = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "an idle keep-alive stayed open"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(1500),
        "closed before the idle timeout"
    );

    // The address may connect again once its connections are gone.
    let mut s = attacker_socket(&gw).await.expect("connect");
    assert!(!closed_within(&mut s, Duration::from_millis(200)).await);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(gw: &Gateway, path: &str) -> Result<Socket, u16> {
    let url = format!("{}{path}", gw.base.replace("http://", "ws://"));
    match tokio_tungstenite::connect_async(url).await {
        Ok((s, _)) => Ok(s),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// A customer's chat session (000), for `/ws/chat/{id}`.
async fn session(gw: &Gateway, token: &str) -> String {
    let r: Value = gw
        .http
        .post(gw.url("/api/chat/sessions"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    r["id"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| r["sessionId"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no session id in {r}"))
}

/// The next text event of a socket, skipping pings; `None` once closed.
async fn next_event(s: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
            Ok(Some(Ok(Ws::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(Ws::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return None,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("no event in 10 s"),
        }
    }
}

#[tokio::test]
async fn websocket_messages_and_sockets_are_bounded() {
    let _alone = alone().await;
    let gw = Gateway::start_with(
        Options::new(DbKind::Sqlite)
            .toml("[server]\nmax_sockets_per_user = 12")
            .env("GATEWAY_RATE_LIMITS", "off"),
    )
    .await;
    let token = gw.register_and_login("mallory").await;
    let id = session(&gw, &token).await;
    let baseline = rss_mib(&gw);

    // Ten sockets that take no client content each send 20 MiB messages,
    // whole and in unfinished fragments: each is closed at its first 8 KiB.
    let big = "x".repeat(20 * 1024 * 1024);
    let mut attacks = Vec::new();
    for i in 0..10 {
        let mut s = socket(&gw, &format!("/ws/chat/{id}?token={token}"))
            .await
            .expect("socket");
        let big = big.clone();
        attacks.push(tokio::spawn(async move {
            let sent = if i % 2 == 0 {
                s.send(Ws::Text(big.into())).await
            } else {
                // The first fragment of a message that never ends.
                let frame = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                    big.into_bytes(),
                    tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                    ),
                    false,
                );
                s.send(Ws::Frame(frame)).await
            };
            // Either the send fails midway or the next read finds the close.
            sent.is_err() || next_event(&mut s).await.is_none()
        }));
    }
    let p99 = health_p99(&gw, 100).await;
    for a in attacks {
        assert!(
            a.await.expect("attack"),
            "an oversized message did not close its socket"
        );
    }
    let rss = rss_mib(&gw);
    report(
        "10 sockets sending 20 MiB WebSocket messages",
        p99,
        baseline,
        rss,
    );
    assert!(
        p99 < Duration::from_millis(50),
        "/health p99 {p99:?} during the attack"
    );
    assert!(
        rss < baseline + 64.0,
        "RSS {rss:.0} MiB (from {baseline:.0})"
    );

    // 003's /ws takes content: a frame over its kind's limit is an error
    // event and the socket stays open.
    let mut s = socket(&gw, &format!("/ws?token={token}"))
        .await
        .expect("socket");
    assert_eq!(
        next_event(&mut s).await.expect("hello")["type"],
        "connection_established"
    );
    s.send(Ws::Text(
        json!({"type": "typing", "pad": "y".repeat(100 * 1024)})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    assert_eq!(
        next_event(&mut s).await.expect("error")["code"],
        "frame_too_large"
    );
    s.send(Ws::Text(
        json!({"type": "typing", "isTyping": true})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");

    // Past the per-user cap, a handshake is refused.
    let mut open = vec![s];
    while open.len() < 12 {
        open.push(
            socket(&gw, &format!("/ws/chat/{id}?token={token}"))
                .await
                .expect("socket"),
        );
    }
    assert_eq!(
        socket(&gw, &format!("/ws/chat/{id}?token={token}"))
            .await
            .err(),
        Some(429)
    );
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        socket(&gw, &format!("/ws/chat/{id}?token={token}"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn socket_frames_count_in_the_rate_limits() {
    let _alone = alone().await;
    let gw = Gateway::start_with(
        Options::new(DbKind::Sqlite).toml("[rate_limits.platform]\nper_minute = 10\nper_hour = 0"),
    )
    .await;
    let token = gw.register_and_login("flooder").await;
    let mut s = socket(&gw, &format!("/ws?token={token}"))
        .await
        .expect("socket");
    assert_eq!(
        next_event(&mut s).await.expect("hello")["type"],
        "connection_established"
    );
    // Typing frames do work (they reach the agents), so they count: the
    // window has 10 places.
    let typing = json!({"type": "typing", "isTyping": true}).to_string();
    let mut refused = 0;
    let mut closed = false;
    for _ in 0..40 {
        if s.send(Ws::Text(typing.clone().into())).await.is_err() {
            closed = true;
            break;
        }
    }
    // Refusals arrive as error events, then the socket is closed.
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), next_event(&mut s))
        .await
        .ok()
        .flatten()
    {
        assert_eq!(event["code"], "rate_limit_exceeded", "{event}");
        assert!(event["retryAfter"].is_u64(), "{event}");
        refused += 1;
    }
    assert!(refused >= 20, "{refused} refusals");
    assert!(
        closed
            || s.next()
                .await
                .is_none_or(|m| m.is_err() || matches!(m, Ok(Ws::Close(_))))
    );
    // The same window holds over HTTP.
    let r = gw
        .http
        .get(gw.url("/api/core/health"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn concurrent_large_uploads_stay_within_the_budget() {
    let _alone = alone().await;
    let gw = Gateway::start_with(
        Options::new(DbKind::Sqlite)
            .toml("[server]\nupload_budget_bytes = 16777216")
            .env("GATEWAY_RATE_LIMITS", "off"),
    )
    .await;
    let token = gw.register_and_login("uploader").await;
    let id = session(&gw, &token).await;
    let baseline = rss_mib(&gw);
    // A client that announces a huge body and sends nothing holds nothing
    // of the budget: bodies are charged as their bytes arrive.
    let mut announcer = attacker_socket(&gw).await.expect("connect");
    announcer
        .write_all(
            format!(
                "POST /api/chat/messages HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let form = reqwest::multipart::Form::new()
        .text("sessionId", id.clone())
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![0x41u8; 4_500_000])
                .file_name("while-announced.txt")
                .mime_str("text/plain")
                .expect("mime"),
        );
    let r = gw
        .http
        .post(gw.url("/api/chat/files"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 200, "an announced body held the budget");
    drop(announcer);

    // Twenty clients upload 4.5 MB files back to back for as long as the
    // measurement runs: the budget lets about three in at a time.
    let file = bytes::Bytes::from(vec![0x41u8; 4_500_000]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut uploaders = Vec::new();
    for i in 0..20 {
        let (url, token, id, file, stop) = (
            gw.url("/api/chat/files"),
            token.clone(),
            id.clone(),
            file.clone(),
            stop.clone(),
        );
        uploaders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let form = reqwest::multipart::Form::new()
                    .text("sessionId", id.clone())
                    .part(
                        "file",
                        reqwest::multipart::Part::stream(file.clone())
                            .file_name(format!("notes-{i}.txt"))
                            .mime_str("text/plain")
                            .expect("mime"),
                    );
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .multipart(form)
                    .send()
                    .await
                    .expect("upload");
                answers.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p99 = health_p99(&gw, 300).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut stored = 0;
    for u in uploaders {
        for answer in u.await.expect("uploader") {
            match answer {
                (200, _) => stored += 1,
                (503, retry) => assert!(retry, "a 503 without Retry-After"),
                (other, _) => panic!("upload answered {other}"),
            }
        }
    }
    let rss = rss_mib(&gw);
    report(
        "20 clients uploading 4.5 MB files back to back",
        p99,
        baseline,
        rss,
    );
    assert!(stored >= 1, "no upload got through");
    assert!(
        p99 < Duration::from_millis(50),
        "/health p99 {p99:?} during the uploads"
    );
    assert!(
        rss < baseline + 120.0,
        "RSS {rss:.0} MiB (from {baseline:.0})"
    );
}

#[tokio::test]
async fn one_account_gets_one_login_window_by_any_name() {
    let _alone = alone().await;
    let gw = Gateway::start(DbKind::Sqlite).await;
    gw.register_and_login("victim").await;
    let attempt = |login: &'static str, password: &'static str| {
        let req = gw
            .http
            .post(gw.url("/api/v1/auth/login"))
            .json(&json!({ "username": login, "password": password }));
        async move { req.send().await.expect("login").status().as_u16() }
    };
    // The register-and-login above used one place of the account's ten.
    for i in 0..9 {
        let login = if i % 2 == 0 {
            "victim"
        } else {
            "victim@example.com"
        };
        assert_eq!(attempt(login, "wrong guess").await, 401);
    }
    assert_eq!(attempt("victim@example.com", "wrong guess").await, 429);
    assert_eq!(attempt("victim", "correct horse battery").await, 429);
}

#[tokio::test]
async fn stored_files_are_private_and_unproven_types_download_as_bytes() {
    let _alone = alone().await;
    use std::os::unix::fs::PermissionsExt as _;
    let gw =
        Gateway::start_with(Options::new(DbKind::Sqlite).env("GATEWAY_RATE_LIMITS", "off")).await;
    let token = gw.register_and_login("filer").await;
    let id = session(&gw, &token).await;
    let form = reqwest::multipart::Form::new().text("sessionId", id).part(
        "file",
        reqwest::multipart::Part::bytes(vec![0x13u8, 0x37, 0xfe, 0x01, 0x00, 0x42])
            .file_name("invoice\u{202E}fdp.exe")
            .mime_str("application/x-custom")
            .expect("mime"),
    );
    let r: Value = gw
        .http
        .post(gw.url("/api/chat/files"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    assert_eq!(
        r["fileName"], "invoicefdp.exe",
        "bidirectional controls are stripped: {r}"
    );
    let download = gw
        .http
        .get(gw.url(r["url"].as_str().expect("url")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(
        download.headers()["content-type"],
        "application/octet-stream"
    );
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .starts_with("attachment"),
        "unproven bytes are never shown inline"
    );

    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let data = gw.dir.path().join("data");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("gateway.db")), 0o600);
    let mut files = vec![data.join("files")];
    while let Some(dir) = files.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                files.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }
}
