//! Operator configuration: a TOML file, then environment overrides.
//!
//! Loading has two stages. [`raw`] mirrors the file exactly (serde,
//! `deny_unknown_fields`, every field optional or defaulted); [`Config`] is the
//! validated, typed result the rest of the gateway uses. The environment is
//! passed in as a map so that tests need no global state.
//!
//! Every failure is a [`ConfigError`] whose `Display` is one line naming the
//! file, the key and what was expected.

pub mod assistant;
pub mod plugins;
mod raw;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use plugins::{
    AfterStore, ComponentSource, Grants, HostPattern, MailConfig, PluginConfig, World,
    plausible_address,
};
pub use raw::RawConfig;

/// The default config file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/gateway.toml";

/// A configuration problem, rendered as a single line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or environment variable) the bad value came from.
    pub source: String,
    /// The dotted key, when one is known (`server.bind`).
    pub key: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    fn new(source: impl Into<String>, key: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {}: {}", self.source, key, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from; `None` for built-in defaults.
    pub file: Option<PathBuf>,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitConfig,
    pub log: LogConfig,
    /// `[[plugins]]` entries, in file order.
    pub plugins: Vec<PluginConfig>,
    pub webhooks: WebhookConfig,
    pub assistant: assistant::AssistantConfig,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The key 004's `POST /v1/webhooks/incoming` is signed with; `None`
    /// answers that endpoint with 503.
    pub incoming_secret: Option<String>,
    /// Each organization's own key, by slug; it signs for that organization
    /// only.
    pub incoming_secrets: std::collections::HashMap<String, String>,
    /// How far a signed `X-Webhook-Timestamp` may be from now.
    pub tolerance: Duration,
}

impl WebhookConfig {
    /// The keys that may sign a delivery for organization `slug`: its own,
    /// then the operator's.
    pub fn secrets_for(&self, slug: &str) -> Vec<&str> {
        self.incoming_secrets
            .get(slug)
            .map(String::as_str)
            .into_iter()
            .chain(self.incoming_secret.as_deref())
            .collect()
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        self.incoming_secret.is_some() || !self.incoming_secrets.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Peers whose `X-Forwarded-For` names the client; others are the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Origins browsers may call from (`*` for any); empty: same origin only.
    pub cors_origins: Vec<String>,
    /// Longest a request may take before it is answered with 503.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests before giving up.
    pub shutdown_timeout: Duration,
    /// Largest JSON or form body accepted.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Open connections at most; more are closed as they arrive.
    pub max_connections: usize,
    /// Open connections one client address may hold (trusted proxies are
    /// exempt); more from that address are closed as they arrive.
    pub max_connections_per_address: usize,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/1 keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// Open WebSockets one user or API key may hold.
    pub max_sockets_per_user: usize,
    /// Upload bytes (multipart files, base64 attachments) being received at
    /// once, over all clients; past it uploads are answered 503.
    pub upload_budget_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub kind: DatabaseKind,
    pub max_connections: u32,
    pub busy_timeout: Duration,
    /// SQLite's `synchronous` pragma: `FULL` (an acknowledged write survives
    /// a power loss) or `NORMAL` (it survives a crash of the process only).
    pub synchronous: Synchronous,
}

/// How hard SQLite makes a commit durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `None` means: generate one on first start and keep it in the data dir.
    pub jwt_secret: Option<String>,
    pub token_ttl: Duration,
    pub issuer: String,
    pub audience: String,
    pub allow_registration: bool,
    /// How many password hashes may run at once (each takes one core).
    pub hash_concurrency: usize,
}

/// Limits of one window kind; `0` switches that window off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: u32,
    pub per_hour: u32,
    pub org_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// 000 and 001, `/api/chat` and `/ws/chat`.
    pub chat: Limits,
    /// 002, `/api/v1`.
    pub assistant: Limits,
    /// 003, `/api/core`, `/api/memory`, `/api/channels`, `/api/admin`, `/ws`.
    pub platform: Limits,
    /// 004, `/v1` and `/ws/tickets`.
    pub tickets: Limits,
    /// Unauthenticated requests outside the dialects, per client IP.
    pub login_per_username_per_minute: u32,
    pub login_per_ip_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter directive (`info`, `gateway=debug,info`).
    pub level: String,
    pub format: LogFormat,
}

impl Config {
    /// Built-in defaults, with no file and no environment.
    pub fn defaults() -> Self {
        Self::from_raw(RawConfig::default(), None, &HashMap::new())
            .expect("built-in defaults are valid")
    }

    /// Finds and loads the config file: `explicit`, else `$GATEWAY_CONFIG`,
    /// else `config/gateway.toml` when it exists, else built-in defaults.
    pub fn load(
        explicit: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => match env.get("GATEWAY_CONFIG").filter(|v| !v.is_empty()) {
                Some(p) => Some(PathBuf::from(p)),
                None => {
                    let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                    default.is_file().then_some(default)
                }
            },
        };
        match path {
            None => Self::from_raw(RawConfig::default(), None, env),
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(
                        path.display().to_string(),
                        None,
                        format!("cannot read the config file: {e}"),
                    )
                })?;
                Self::from_toml(&text, Some(&path), env)
            }
        }
    }

    /// Parses TOML text; `path` is used in error messages only.
    pub fn from_toml(
        text: &str,
        path: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let source = path.map_or_else(|| "<config>".to_owned(), |p| p.display().to_string());
        let raw = raw::parse(text, &source)?;
        Self::from_raw(raw, path.map(Path::to_path_buf), env)
    }

    fn from_raw(
        raw: RawConfig,
        file: Option<PathBuf>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let source = file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        raw.validate(file, &source, env)
    }

    /// Where the generated JWT secret is kept when none is configured.
    pub fn jwt_secret_path(&self) -> PathBuf {
        self.storage.data_dir.join("jwt_secret")
    }
}

#[cfg(test)]
mod tests;
