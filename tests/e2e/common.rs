//! The harness: start the real `gateway` binary on a fresh data dir and a
//! fresh database (SQLite, or PostgreSQL when `TEST_DATABASE_URL` is set),
//! find its port in its log, and stop it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection as _;

pub const BIN: &str = env!("CARGO_BIN_EXE_gateway");
/// Shared by every test gateway, so tests can mint their own tokens.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// A 1x1 PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// The databases store tests run on: SQLite always, PostgreSQL when
/// `TEST_DATABASE_URL` names a server (`.ci/run` starts one).
pub fn databases() -> Vec<DbKind> {
    static SKIP_NOTE: Once = Once::new();
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
        vec![DbKind::Sqlite, DbKind::Postgres]
    } else {
        SKIP_NOTE.call_once(|| {
            eprintln!(
                "note: PostgreSQL tests skipped: TEST_DATABASE_URL is not set (see tests/README.md)"
            );
        });
        vec![DbKind::Sqlite]
    }
}

/// A database made for one test and dropped after it.
pub struct TestDb {
    pub kind: DbKind,
    /// `DATABASE_URL` for the gateway; `None` means its default SQLite file.
    pub url: Option<String>,
    admin_url: Option<String>,
    name: Option<String>,
}

impl TestDb {
    pub async fn create(kind: DbKind) -> TestDb {
        match kind {
            DbKind::Sqlite => TestDb {
                kind,
                url: None,
                admin_url: None,
                name: None,
            },
            DbKind::Postgres => {
                let admin = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
                let name = format!("gw_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                conn.close().await.ok();
                TestDb {
                    kind,
                    url: Some(with_database(&admin, &name)),
                    admin_url: Some(admin),
                    name: Some(name),
                }
            }
        }
    }
}

impl TestDb {
    /// The same database for a second gateway node; only the original drops it.
    pub fn share(&self) -> TestDb {
        TestDb {
            kind: self.kind,
            url: self.url.clone(),
            admin_url: None,
            name: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(admin), Some(name)) = (self.admin_url.clone(), self.name.clone()) else {
            return;
        };
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

/// How to start a gateway.
#[derive(Clone)]
pub struct Options {
    pub db: DbKind,
    /// Extra TOML appended to the generated config.
    pub toml: String,
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn new(db: DbKind) -> Self {
        Self {
            db,
            toml: String::new(),
            env: Vec::new(),
        }
    }

    pub fn toml(mut self, toml: &str) -> Self {
        self.toml.push_str(toml);
        self.toml.push('\n');
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl Gateway {
    pub async fn start(db: DbKind) -> Gateway {
        Self::start_with(Options::new(db)).await
    }

    pub async fn start_with(options: Options) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::create(options.db).await;
        Self::spawn(dir, db, &options)
    }

    /// Starts a gateway on an existing data dir and database (a restart).
    pub fn restart(dir: tempfile::TempDir, db: TestDb, options: &Options) -> Gateway {
        Self::spawn(dir, db, options)
    }

    fn spawn(dir: tempfile::TempDir, db: TestDb, options: &Options) -> Gateway {
        let config = write_config(dir.path(), &options.toml);
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--bind")
            .arg("127.0.0.1:0");
        apply_env(&mut cmd, &db, &options.env);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn gateway");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(addr);
                    }
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            });
        }
        let started = Instant::now();
        let addr = loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "gateway exited with {status} before listening:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "gateway did not start in 60 s"
            );
        };
        Gateway {
            child,
            base: format!("http://{addr}"),
            dir,
            db,
            log,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Everything the gateway has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id (the abuse tests read its memory).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and hands
    /// back its data dir and database.
    pub fn crash(mut self) -> (tempfile::TempDir, TestDb) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.take()
    }

    /// Stops the process and hands back its data dir and database.
    pub fn stop(mut self) -> (tempfile::TempDir, TestDb) {
        self.terminate();
        if self.wait_exit(Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.take()
    }

    fn take(&mut self) -> (tempfile::TempDir, TestDb) {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let placeholder = TestDb {
            kind: self.db.kind,
            url: None,
            admin_url: None,
            name: None,
        };
        let db = std::mem::replace(&mut self.db, placeholder);
        (dir, db)
    }

    /// Runs a gateway CLI command against this gateway's config and
    /// database; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(self.dir.path(), &self.db, args)
    }

    /// Registers `username` and logs in; returns the token.
    pub async fn register_and_login(&self, username: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/v1/auth/register"))
            .json(&serde_json::json!({
                "username": username,
                "email": format!("{username}@example.com"),
                "password": "correct horse battery",
            }))
            .send()
            .await
            .expect("register");
        assert_eq!(
            r.status(),
            200,
            "register {username}: {}",
            r.text().await.unwrap_or_default()
        );
        self.login(username, "correct horse battery").await
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 200, "login {username}");
        let body: serde_json::Value = r.json().await.expect("json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    let text = format!(
        "[storage]\ndata_dir = {:?}\n\n{extra}\n",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn apply_env(cmd: &mut Command, db: &TestDb, env: &[(String, String)]) {
    for key in [
        "GATEWAY_CONFIG",
        "GATEWAY_BIND",
        "GATEWAY_DATA_DIR",
        "DATABASE_URL",
        "GATEWAY_JWT_SECRET",
        "GATEWAY_RATE_LIMITS",
        "RUST_LOG",
        "GATEWAY_LOG",
        "GATEWAY_WEBHOOK_SECRET",
    ] {
        cmd.env_remove(key);
    }
    cmd.env("GATEWAY_JWT_SECRET", JWT_SECRET);
    if let Some(url) = &db.url {
        cmd.env("DATABASE_URL", url);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// Runs the CLI with the config in `dir` (as written by a gateway start).
pub fn run_cli(dir: &Path, db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let config = dir.join("gateway.toml");
    if !config.exists() {
        write_config(dir, "");
    }
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--config").arg(&config);
    apply_env(&mut cmd, db, &[]);
    let out = cmd.output().expect("run gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `check` holds (10 s at most).
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An admin created with the CLI, logged in.
pub async fn admin_token(gw: &Gateway) -> String {
    let (code, _, err) = gw.cli(&[
        "user",
        "create",
        "--username",
        "channel-admin",
        "--email",
        "channel-admin@example.com",
        "--role",
        "admin",
        "--password",
        "correct horse battery",
    ]);
    assert_eq!(code, 0, "{err}");
    gw.login("channel-admin", "correct horse battery").await
}

pub async fn messages_of(gw: &Gateway, token: &str, session: &str) -> Vec<Value> {
    let list: Value = gw
        .http
        .get(gw.url(&format!("/api/chat/sessions/{session}/messages?limit=100")))
        .bearer_auth(token)
        .send()
        .await
        .expect("messages")
        .json()
        .await
        .expect("json");
    list["messages"].as_array().cloned().unwrap_or_default()
}

/// Every session of the organization with a message whose content is
/// `text`.
pub async fn session_with(gw: &Gateway, token: &str, text: &str) -> Option<String> {
    let list: Value = gw
        .http
        .get(gw.url("/api/chat/sessions?limit=100"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    for s in list["sessions"].as_array().cloned().unwrap_or_default() {
        let id = s["id"].as_str().map(str::to_owned).unwrap_or_default();
        let messages = messages_of(gw, token, &id).await;
        if messages.iter().any(|m| m["content"] == text) {
            return Some(id);
        }
    }
    None
}

pub async fn sqlite(gw: &Gateway) -> sqlx::SqlitePool {
    let path = gw.dir.path().join("data").join("gateway.db");
    sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .expect("open the database")
}
