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

mod common;

use std::process::Command;

use common::{Target, http_json, load, row, rss_kib, spawn_and_wait};
use hyper::body::Bytes;

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
