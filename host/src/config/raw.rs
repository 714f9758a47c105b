//! The config file as written: serde structs that reject unknown keys, and
//! their validation into [`super::Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{
    AuthConfig, Config, ConfigError, DatabaseConfig, DatabaseKind, Limits, LogConfig, LogFormat,
    RateLimitConfig, ServerConfig, StorageConfig,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub storage: RawStorage,
    pub database: RawDatabase,
    pub auth: RawAuth,
    pub rate_limits: RawRateLimits,
    pub log: RawLog,
    pub webhooks: RawWebhooks,
    pub assistant: super::assistant::RawAssistant,
    /// `None` (no `plugins` key): the shipped defaults; `[]`: no plugins.
    pub plugins: Option<Vec<super::plugins::RawPlugin>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhooks {
    /// The operator's HMAC-SHA256 key of 004's incoming webhook, good for
    /// every organization; empty: none.
    pub incoming_secret: String,
    /// Each organization's own key, by slug: good for that organization only.
    pub incoming_secrets: HashMap<String, String>,
    /// How far a signed `X-Webhook-Timestamp` may be from now.
    pub tolerance_secs: u64,
}

impl Default for RawWebhooks {
    fn default() -> Self {
        Self {
            incoming_secret: String::new(),
            incoming_secrets: HashMap::new(),
            tolerance_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub bind: String,
    /// Proxies whose `X-Forwarded-For` is believed (exact addresses).
    pub trusted_proxies: Vec<String>,
    /// Browser origins allowed to call the API (CORS); `["*"]` for any.
    pub cors_origins: Vec<String>,
    pub request_timeout_secs: u64,
    pub shutdown_timeout_secs: u64,
    pub max_body_bytes: u64,
    pub header_read_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub idle_timeout_secs: u64,
    pub max_sockets_per_user: usize,
    pub upload_budget_bytes: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            request_timeout_secs: 30,
            shutdown_timeout_secs: 30,
            max_body_bytes: 1024 * 1024,
            header_read_timeout_secs: 10,
            max_connections: 10_000,
            max_connections_per_address: 256,
            idle_timeout_secs: 75,
            max_sockets_per_user: 16,
            upload_budget_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub data_dir: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            data_dir: "./data".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    /// Empty means `sqlite://<data_dir>/gateway.db`.
    pub url: String,
    pub max_connections: u32,
    pub busy_timeout_ms: u64,
    /// `full` or `normal` (SQLite only).
    pub synchronous: String,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 16,
            busy_timeout_ms: 5000,
            synchronous: "full".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Empty means generated once and kept in `<data_dir>/jwt_secret`.
    pub jwt_secret: String,
    pub token_ttl_minutes: u64,
    pub issuer: String,
    pub audience: String,
    pub allow_registration: bool,
    /// 0 means half the cores, at least one.
    pub hash_concurrency: usize,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            token_ttl_minutes: 60,
            issuer: "gateway".into(),
            audience: "gateway".into(),
            allow_registration: true,
            hash_concurrency: 0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub per_minute: Option<u32>,
    pub per_hour: Option<u32>,
    pub org_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimits {
    pub enabled: bool,
    pub chat: RawLimits,
    pub assistant: RawLimits,
    pub platform: RawLimits,
    pub tickets: RawLimits,
    pub login: RawLoginLimits,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            chat: RawLimits::default(),
            assistant: RawLimits::default(),
            platform: RawLimits::default(),
            tickets: RawLimits::default(),
            login: RawLoginLimits::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLoginLimits {
    pub per_username_per_minute: u32,
    pub per_ip_per_minute: u32,
}

impl Default for RawLoginLimits {
    fn default() -> Self {
        Self {
            per_username_per_minute: 10,
            per_ip_per_minute: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Parses TOML into [`RawConfig`], naming the key on failure.
pub(super) fn parse(text: &str, source: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        let at = e.span().map(|s| line_col(text, s.start));
        let source = match at {
            Some((line, col)) => format!("{source}:{line}:{col}"),
            None => source.to_owned(),
        };
        ConfigError::new(
            source,
            None,
            format!("invalid TOML: {}", e.message().trim()),
        )
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().to_owned();
        let location = inner
            .span()
            .map(|s| line_col(text, s.start))
            .map_or_else(|| source.to_owned(), |(l, c)| format!("{source}:{l}:{c}"));
        // serde_path_to_error's path already ends at the unknown key itself.
        let key = if path.is_empty() || path == "." {
            unknown_field(&message).unwrap_or("(top level)").to_owned()
        } else {
            path
        };
        let message = match message.split_once(", expected") {
            Some((_, rest)) if unknown_field(&message).is_some() => {
                format!("unknown key, expected{rest}")
            }
            _ => message,
        };
        ConfigError::new(location, Some(&key), message)
    })
}

/// Extracts `foo` from serde's "unknown field `foo`, expected ...".
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn nonzero<T: PartialEq + Default>(value: T, source: &str, key: &str) -> Result<T, ConfigError> {
    if value == T::default() {
        Err(ConfigError::new(
            source,
            Some(key),
            "expected a number greater than 0",
        ))
    } else {
        Ok(value)
    }
}

impl RawLimits {
    fn resolve(&self, defaults: Limits) -> Limits {
        Limits {
            per_minute: self.per_minute.unwrap_or(defaults.per_minute),
            per_hour: self.per_hour.unwrap_or(defaults.per_hour),
            org_per_minute: self.org_per_minute.unwrap_or(defaults.org_per_minute),
        }
    }
}

impl RawConfig {
    /// Applies the environment overrides of CONVENTIONS.md, then checks every
    /// value and builds the typed configuration.
    pub(super) fn validate(
        mut self,
        file: Option<PathBuf>,
        source: &str,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let env_value = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        // Which keys the environment set, so errors name the variable.
        let mut from_env: Vec<(&str, &str)> = Vec::new();
        if let Some(v) = env_value("GATEWAY_BIND") {
            self.server.bind = v;
            from_env.push(("server.bind", "GATEWAY_BIND"));
        }
        if let Some(v) = env_value("GATEWAY_DATA_DIR") {
            self.storage.data_dir = v;
            from_env.push(("storage.data_dir", "GATEWAY_DATA_DIR"));
        }
        if let Some(v) = env_value("DATABASE_URL") {
            self.database.url = v;
            from_env.push(("database.url", "DATABASE_URL"));
        }
        if let Some(v) = env_value("GATEWAY_JWT_SECRET") {
            self.auth.jwt_secret = v;
            from_env.push(("auth.jwt_secret", "GATEWAY_JWT_SECRET"));
        }
        if let Some(v) = env_value("GATEWAY_RATE_LIMITS") {
            self.rate_limits.enabled = match v.to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => {
                    return Err(ConfigError::new(
                        "environment",
                        Some("GATEWAY_RATE_LIMITS"),
                        format!("expected `on` or `off`, got {v:?}"),
                    ));
                }
            };
        }
        if let Some(v) = env_value("GATEWAY_LOG") {
            self.log.level = v;
            from_env.push(("log.level", "GATEWAY_LOG"));
        }
        if let Some(v) = env_value("GATEWAY_WEBHOOK_SECRET") {
            self.webhooks.incoming_secret = v;
            from_env.push(("webhooks.incoming_secret", "GATEWAY_WEBHOOK_SECRET"));
        }
        if !self.webhooks.incoming_secret.is_empty() && self.webhooks.incoming_secret.len() < 16 {
            let var = from_env
                .iter()
                .find(|(k, _)| *k == "webhooks.incoming_secret")
                .map(|(_, v)| *v);
            return Err(match var {
                Some(var) => {
                    ConfigError::new("environment", Some(var), "expected at least 16 characters")
                }
                None => ConfigError::new(
                    source,
                    Some("webhooks.incoming_secret"),
                    "expected at least 16 characters",
                ),
            });
        }
        for (slug, secret) in &self.webhooks.incoming_secrets {
            if secret.len() < 16 {
                return Err(ConfigError::new(
                    source,
                    Some(&format!("webhooks.incoming_secrets.{slug}")),
                    "expected at least 16 characters",
                ));
            }
        }
        if self.webhooks.tolerance_secs == 0 {
            return Err(ConfigError::new(
                source,
                Some("webhooks.tolerance_secs"),
                "expected a number greater than 0",
            ));
        }
        let invalid = |key: &str, message: String| match from_env.iter().find(|(k, _)| *k == key) {
            Some((_, var)) => ConfigError::new("environment", Some(var), message),
            None => ConfigError::new(source, Some(key), message),
        };

        let plugins = super::plugins::validate(
            self.plugins
                .take()
                .unwrap_or_else(super::plugins::default_entries),
            source,
        )?;

        let bind: SocketAddr = self.server.bind.parse().map_err(|_| {
            invalid(
                "server.bind",
                format!(
                    "expected an address and port such as 127.0.0.1:8080, got {:?}",
                    self.server.bind
                ),
            )
        })?;
        let mut trusted_proxies = Vec::with_capacity(self.server.trusted_proxies.len());
        for (i, text) in self.server.trusted_proxies.iter().enumerate() {
            let ip = text.parse().map_err(|_| {
                ConfigError::new(
                    source,
                    Some(&format!("server.trusted_proxies[{i}]")),
                    format!("expected an IP address such as 10.0.0.1, got {text:?}"),
                )
            })?;
            trusted_proxies.push(std::net::IpAddr::to_canonical(&ip));
        }
        for (i, origin) in self.server.cors_origins.iter().enumerate() {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !valid {
                return Err(ConfigError::new(
                    source,
                    Some(&format!("server.cors_origins[{i}]")),
                    format!(
                        "expected an origin such as https://shop.example.com (no path) or \"*\", got {origin:?}"
                    ),
                ));
            }
        }
        let server = ServerConfig {
            bind,
            trusted_proxies,
            cors_origins: self.server.cors_origins,
            request_timeout: Duration::from_secs(nonzero(
                self.server.request_timeout_secs,
                source,
                "server.request_timeout_secs",
            )?),
            shutdown_timeout: Duration::from_secs(self.server.shutdown_timeout_secs),
            max_body_bytes: usize::try_from(nonzero(
                self.server.max_body_bytes,
                source,
                "server.max_body_bytes",
            )?)
            .unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(nonzero(
                self.server.header_read_timeout_secs,
                source,
                "server.header_read_timeout_secs",
            )?),
            max_connections: nonzero(
                self.server.max_connections,
                source,
                "server.max_connections",
            )?,
            max_connections_per_address: nonzero(
                self.server.max_connections_per_address,
                source,
                "server.max_connections_per_address",
            )?,
            idle_timeout: Duration::from_secs(nonzero(
                self.server.idle_timeout_secs,
                source,
                "server.idle_timeout_secs",
            )?),
            max_sockets_per_user: nonzero(
                self.server.max_sockets_per_user,
                source,
                "server.max_sockets_per_user",
            )?,
            upload_budget_bytes: usize::try_from(nonzero(
                self.server.upload_budget_bytes,
                source,
                "server.upload_budget_bytes",
            )?)
            .unwrap_or(usize::MAX),
        };

        if self.storage.data_dir.trim().is_empty() {
            return Err(invalid(
                "storage.data_dir",
                "expected a directory path, got an empty string".into(),
            ));
        }
        let data_dir = PathBuf::from(&self.storage.data_dir);

        let url = if self.database.url.is_empty() {
            format!("sqlite://{}", data_dir.join("gateway.db").display())
        } else {
            self.database.url.clone()
        };
        let kind = if url.starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DatabaseKind::Postgres
        } else {
            return Err(invalid(
                "database.url",
                "expected a URL starting with sqlite:// or postgres://".into(),
            ));
        };
        if self.database.busy_timeout_ms > 600_000 {
            return Err(ConfigError::new(
                source,
                Some("database.busy_timeout_ms"),
                "expected at most 600000 (ten minutes)",
            ));
        }
        if self.auth.token_ttl_minutes > 525_600 {
            return Err(ConfigError::new(
                source,
                Some("auth.token_ttl_minutes"),
                "expected at most 525600 (one year)",
            ));
        }
        let database = DatabaseConfig {
            url,
            kind,
            max_connections: nonzero(
                self.database.max_connections,
                source,
                "database.max_connections",
            )?,
            busy_timeout: Duration::from_millis(self.database.busy_timeout_ms),
            synchronous: match self.database.synchronous.to_ascii_lowercase().as_str() {
                "full" => super::Synchronous::Full,
                "normal" => super::Synchronous::Normal,
                other => {
                    return Err(invalid(
                        "database.synchronous",
                        format!("expected \"full\" or \"normal\", got {other:?}"),
                    ));
                }
            },
        };

        let jwt_secret = if self.auth.jwt_secret.is_empty() {
            None
        } else if self.auth.jwt_secret.len() < 32 {
            return Err(invalid(
                "auth.jwt_secret",
                "expected at least 32 characters (or leave it unset to generate one)".into(),
            ));
        } else {
            Some(self.auth.jwt_secret)
        };
        let hash_concurrency = if self.auth.hash_concurrency == 0 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / 2).max(1)
        } else {
            self.auth.hash_concurrency
        };
        for (key, value) in [
            ("auth.issuer", &self.auth.issuer),
            ("auth.audience", &self.auth.audience),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::new(
                    source,
                    Some(key),
                    "expected a non-empty string",
                ));
            }
        }
        let auth = AuthConfig {
            jwt_secret,
            token_ttl: Duration::from_secs(
                nonzero(
                    self.auth.token_ttl_minutes,
                    source,
                    "auth.token_ttl_minutes",
                )?
                .saturating_mul(60),
            ),
            issuer: self.auth.issuer,
            audience: self.auth.audience,
            allow_registration: self.auth.allow_registration,
            hash_concurrency,
        };

        let per_user = |per_minute, per_hour| Limits {
            per_minute,
            per_hour,
            org_per_minute: 0,
        };
        let r = &self.rate_limits;
        let rate_limits = RateLimitConfig {
            enabled: r.enabled,
            chat: r.chat.resolve(per_user(100, 1000)),
            assistant: r.assistant.resolve(per_user(60, 0)),
            platform: r.platform.resolve(per_user(100, 1000)),
            tickets: r.tickets.resolve(Limits {
                per_minute: 100,
                per_hour: 0,
                org_per_minute: 1000,
            }),
            login_per_username_per_minute: r.login.per_username_per_minute,
            login_per_ip_per_minute: r.login.per_ip_per_minute,
        };

        let format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    source,
                    Some("log.format"),
                    format!("expected `text` or `json`, got {other:?}"),
                ));
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "expected a level such as `info` or a filter such as `gateway=debug,info`, got {:?}",
                    self.log.level
                ),
            ));
        }

        let assistant = self.assistant.validate(source, &plugins)?;
        Ok(Config {
            assistant,
            file,
            server,
            storage: StorageConfig { data_dir },
            database,
            auth,
            rate_limits,
            log: LogConfig {
                level: self.log.level,
                format,
            },
            plugins,
            webhooks: super::WebhookConfig {
                incoming_secret: Some(self.webhooks.incoming_secret).filter(|s| !s.is_empty()),
                incoming_secrets: self.webhooks.incoming_secrets,
                tolerance: Duration::from_secs(self.webhooks.tolerance_secs),
            },
        })
    }
}
