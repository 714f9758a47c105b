//! The load generator the benchmarks share: start a server process and
//! wait for its address, run closed-loop keep-alive HTTP/1.1 connections,
//! collect latencies in HDR histograms, read a process's RSS.

#![allow(dead_code)] // each benchmark uses its own part

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

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_and_wait(mut cmd: Command, from_stderr: bool) -> Server {
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
            // What went wrong under load is worth seeing beside the figures.
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                eprintln!("server: {line}");
            }
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

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub method: hyper::Method,
    pub path: String,
    pub token: Option<String>,
    pub body: Option<Bytes>,
}

pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `connections` closed-loop connections against `target` for
/// `seconds` after a one-second warm-up.
pub async fn load(target: Target, connections: usize, seconds: u64) -> Outcome {
    load_each(vec![target], connections, seconds).await
}

/// [`load`] with one target per connection (connection `i` uses
/// `targets[i % len]`): each client posting into its own session.
pub async fn load_each(targets: Vec<Target>, connections: usize, seconds: u64) -> Outcome {
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = measure_from + Duration::from_secs(seconds);
    let targets: Vec<Arc<Target>> = targets.into_iter().map(Arc::new).collect();
    let mut tasks = Vec::new();
    for i in 0..connections {
        let target = targets[i % targets.len()].clone();
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

pub async fn http_json(
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

pub fn row(name: &str, o: &Outcome, baseline: Option<f64>) -> String {
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

/// A plain axum server with one handler returning the same JSON as /me.
pub fn baseline_server() {
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
