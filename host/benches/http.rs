//! HTTP benchmark: the gateway's login and authenticated `GET /me` beside a
//! plain axum handler that returns the same JSON, in one run.
//!
//! ```text
//! cargo bench --bench http                       # SQLite
//! cargo bench --bench http -- --postgres URL     # PostgreSQL (an admin URL; a fresh database is made)
//! cargo bench --bench http -- --seconds 10 --connections 64
//! ```
//!
//! Three processes: the gateway (the real binary, built with the bench
//! profile), the baseline server (this binary with `--baseline-server`) and
//! the load generator (this process: keep-alive HTTP/1.1 connections, each
//! sending its next request when the previous answer arrives). Latencies go
//! into HDR histograms; figures are printed as a Markdown table.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::{get, post};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

struct Args {
    seconds: u64,
    connections: usize,
    postgres: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 5,
        connections: 32,
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                args.seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.seconds)
            }
            "--connections" => {
                args.connections = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.connections)
            }
            "--postgres" => args.postgres = it.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// The JSON `GET /api/v1/auth/me` answers, served by the baseline.
#[derive(Serialize, Clone)]
struct UserJson {
    id: i64,
    username: Option<String>,
    email: String,
    full_name: Option<String>,
    is_active: bool,
    is_admin: bool,
    role: &'static str,
    created_at: String,
}

fn main() {
    if std::env::args().any(|a| a == "--baseline-server") {
        baseline_server();
        return;
    }
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(args));
}

/// A plain axum server with one handler returning the same JSON as /me.
fn baseline_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let user = UserJson {
            id: 1,
            username: Some("bench".into()),
            email: "bench@example.com".into(),
            full_name: Some("Bench User".into()),
            is_active: true,
            is_admin: false,
            role: "customer",
            created_at: "2026-11-22T00:00:00Z".into(),
        };
        let app = axum::Router::new()
            .route("/me", get(move || std::future::ready(Json(user.clone()))))
            .route("/echo", post(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!(
            "listening on http://{}",
            listener.local_addr().expect("addr")
        );
        axum::serve(listener, app).await.expect("serve");
    });
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_and_wait(mut cmd: Command, from_stderr: bool) -> Server {
    use std::io::{BufRead as _, BufReader};
    if from_stderr {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().expect("spawn server");
    let stream: Box<dyn std::io::Read + Send> = if from_stderr {
        Box::new(child.stderr.take().expect("stderr"))
    } else {
        Box::new(child.stdout.take().expect("stdout"))
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not start");
    Server { child, addr }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Clone)]
struct Target {
    addr: String,
    method: hyper::Method,
    path: String,
    token: Option<String>,
    body: Option<Bytes>,
}

struct Outcome {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    histogram: Histogram<u64>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `connections` closed-loop connections against `target` for
/// `seconds` after a one-second warm-up.
async fn load(target: Target, connections: usize, seconds: u64) -> Outcome {
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = measure_from + Duration::from_secs(seconds);
    let target = Arc::new(target);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            connection(&target, measure_from, stop).await
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        let (h, n, e) = t.await.expect("task");
        histogram.add(&h).expect("merge");
        requests += n;
        errors += e;
    }
    Outcome {
        requests,
        errors,
        elapsed: Duration::from_secs(seconds),
        histogram,
    }
}

async fn connection(
    target: &Target,
    measure_from: Instant,
    stop: Instant,
) -> (Histogram<u64>, u64, u64) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut n, mut errors) = (0u64, 0u64);
    'reconnect: while Instant::now() < stop {
        let Ok(stream) = TcpStream::connect(&target.addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < stop {
            let mut req = hyper::Request::builder()
                .method(target.method.clone())
                .uri(&target.path)
                .header("host", &target.addr);
            if let Some(token) = &target.token {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            if target.body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let req = req
                .body(Full::new(target.body.clone().unwrap_or_default()))
                .expect("request");
            let sent = Instant::now();
            let ok = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.into_body().collect().await;
                    (status.is_success() || status == hyper::StatusCode::NOT_FOUND) && body.is_ok()
                }
                Err(_) => {
                    errors += 1;
                    continue 'reconnect;
                }
            };
            let done = Instant::now();
            if sent >= measure_from && done <= stop {
                if ok {
                    n += 1;
                    let micros =
                        u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                    let _ = histogram.record(micros.max(1));
                } else {
                    errors += 1;
                }
            }
        }
    }
    (histogram, n, errors)
}

async fn http_json(
    addr: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}

fn row(name: &str, o: &Outcome, baseline: Option<f64>) -> String {
    let share = baseline.map_or_else(
        || "100%".to_owned(),
        |b| format!("{:.0}%", 100.0 * o.rps() / b),
    );
    format!(
        "| {name} | {:.0} | {:.2} | {:.2} | {share} | {} |",
        o.rps(),
        o.p(0.50),
        o.p(0.99),
        o.errors
    )
}

async fn run(args: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    // Limits stay on (the path under test includes them) but far above the load.
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\n\
             [rate_limits.assistant]\nper_minute = 1000000000\n\
             [rate_limits.login]\nper_username_per_minute = 1000000000\nper_ip_per_minute = 1000000000\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("config");

    let mut pg_note = "SQLite (WAL)".to_owned();
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
    // Logging stays at the shipped default (info): spans are recorded as in production.
    if let Some(admin) = &args.postgres {
        use sqlx::Connection as _;
        let name = format!("gw_bench_{}", std::process::id());
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
        pg_note = "PostgreSQL".to_owned();
    }
    let gateway = spawn_and_wait(cmd, true);
    let mut baseline_cmd = Command::new(std::env::current_exe().expect("exe"));
    baseline_cmd.arg("--baseline-server");
    let baseline = spawn_and_wait(baseline_cmd, false);

    let user = serde_json::json!({"username": "bench", "email": "bench@example.com", "password": "bench-password-1", "full_name": "Bench User"});
    http_json(&gateway.addr, "POST", "/api/v1/auth/register", user).await;
    let login_body = serde_json::json!({"username": "bench", "password": "bench-password-1"});
    let token = http_json(
        &gateway.addr,
        "POST",
        "/api/v1/auth/login",
        login_body.clone(),
    )
    .await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let rss_before = rss_kib(gateway.child.id());
    let c = args.connections;
    let s = args.seconds;
    let plain = load(
        Target {
            addr: baseline.addr.clone(),
            method: hyper::Method::GET,
            path: "/me".into(),
            token: None,
            body: None,
        },
        c,
        s,
    )
    .await;
    let me_target = Target {
        addr: gateway.addr.clone(),
        method: hyper::Method::GET,
        path: "/api/v1/auth/me".into(),
        token: Some(token),
        body: None,
    };
    let me = load(me_target.clone(), c, s).await;
    // The same layers without the handler's read: an authenticated 404.
    let layers_only = load(
        Target {
            path: "/api/v1/auth/none".into(),
            ..me_target.clone()
        },
        c,
        s,
    )
    .await;
    let login_target = Target {
        addr: gateway.addr.clone(),
        method: hyper::Method::POST,
        path: "/api/v1/auth/login".into(),
        token: None,
        body: Some(Bytes::from(login_body.to_string())),
    };
    let login = load(login_target.clone(), 8, s).await;
    // A burst of logins beside the authenticated traffic: hashing runs on
    // bounded blocking threads, so /me must keep flowing.
    let (me_during, login_during) = tokio::join!(load(me_target, c, s), load(login_target, 16, s));
    let rss_after = rss_kib(gateway.child.id());

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n### HTTP: {pg_note}, {c} connections, {s} s per run, {cores} cores\n");
    println!("| endpoint | requests/s | p50 ms | p99 ms | share of plain | errors |");
    println!("|---|---|---|---|---|---|");
    let base = Some(plain.rps());
    let rows = [
        ("plain axum JSON handler (baseline)", &plain, None),
        ("GET /api/v1/auth/me (JWT + rate limit + read)", &me, base),
        (
            "GET /api/v1/auth/none (same layers, no read: 404)",
            &layers_only,
            base,
        ),
        (
            "POST /api/v1/auth/login (Argon2id), 8 connections",
            &login,
            base,
        ),
        ("GET /api/v1/auth/me during a login burst", &me_during, base),
        (
            "POST /api/v1/auth/login, the burst (16 connections)",
            &login_during,
            base,
        ),
    ];
    for (name, outcome, baseline) in rows {
        println!("{}", row(name, outcome, baseline));
    }
    println!(
        "\nGateway RSS: {} MiB before the runs, {} MiB after.",
        rss_before.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        rss_after.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );
}
