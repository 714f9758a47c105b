//! `[[plugins]]` entries: which component serves which world, with which
//! settings and which grants.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The WIT worlds a plugin can implement (`wit/worlds.wit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    LlmProvider,
    Channel,
    Webhook,
}

impl World {
    pub const ALL: [World; 3] = [World::LlmProvider, World::Channel, World::Webhook];

    /// The name used in config and in `wit/worlds.wit`.
    pub fn name(self) -> &'static str {
        match self {
            World::LlmProvider => "llm-provider",
            World::Channel => "channel",
            World::Webhook => "webhook",
        }
    }

    /// The interface the world exports, without package or version.
    pub fn export(self) -> &'static str {
        match self {
            World::LlmProvider => "llm",
            World::Channel => "messaging",
            World::Webhook => "webhooks",
        }
    }

    fn parse(text: &str) -> Option<World> {
        World::ALL.into_iter().find(|w| w.name() == text)
    }
}

/// Where a component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// `builtin:NAME`: a shipped plugin compiled into the binary.
    Builtin(String),
    /// A `.wasm` component file; relative paths are relative to the working
    /// directory, like `storage.data_dir`.
    File(PathBuf),
}

impl std::fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComponentSource::Builtin(name) => write!(f, "builtin:{name}"),
            ComponentSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One allowed destination of outbound HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case host name or IP literal (IPv6 without brackets); with
    /// `wildcard`, the suffix that subdomains must end with.
    pub host: String,
    /// `*.example.com`: any subdomain of `example.com`, not the domain itself.
    pub wildcard: bool,
    /// A port, when the pattern names one; otherwise any port.
    pub port: Option<u16>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Option<HostPattern> {
        let text = text.trim().to_ascii_lowercase();
        if text.is_empty() || text.contains("://") || text.contains('/') || text.contains('@') {
            return None;
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().ok()?),
                None if after.is_empty() => None,
                None => return None,
            };
            (host.to_owned(), port)
        } else if text.matches(':').count() > 1 {
            (text.clone(), None) // a bare IPv6 literal
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port.parse().ok()?)),
                None => (text.clone(), None),
            }
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), true),
            None => (host, false),
        };
        let valid = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }));
        valid.then_some(HostPattern {
            host,
            wildcard,
            port,
        })
    }

    /// Whether `host` (lower case, IPv6 without brackets) at `port` matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        if self.wildcard {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        } else {
            host == self.host
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => write!(f, "{star}{host}:{port}"),
            None => write!(f, "{star}{host}"),
        }
    }
}

/// What a plugin entry may do, and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Grants {
    pub http_hosts: Vec<HostPattern>,
    /// Allows outbound HTTP to private, loopback and link-local addresses.
    pub allow_private: bool,
    /// Environment variables the plugin may read through `secrets.get`.
    pub secrets: Vec<String>,
    /// May submit mail through the host's transport.
    pub mail: bool,
    /// Longest one call may take, host imports included.
    pub timeout: Duration,
    /// Largest linear memory of one instance.
    pub memory_bytes: u64,
    /// Calls of this entry running at once; more wait within their deadline.
    pub max_concurrent: u32,
}

/// A validated `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub id: String,
    pub source: ComponentSource,
    pub world: World,
    /// For channel entries: the slug of the organization whose
    /// conversations this entry carries (default `default`).
    pub organization: String,
    /// The `settings` table as a JSON object, handed to the plugin as is.
    pub settings: serde_json::Value,
    pub grants: Grants,
    /// `[plugins.mail]`: the host's mail transports of an email entry.
    pub mail: Option<MailConfig>,
}

/// `[plugins.mail]`: the support address and how the host reaches its
/// mailbox (IMAP) and submits mail (SMTP) for an email channel entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MailConfig {
    /// The support address customers write to, lower case.
    pub address: String,
    /// lettre's URL forms: `smtp://host:port` (plain), `smtp://...?tls=required`
    /// (STARTTLS), `smtps://` (TLS); `user:pass@` for credentials.
    pub smtp_url: Option<url::Url>,
    /// `imap://user:pass@host:port/MAILBOX` or `imaps://`; the path is the
    /// mailbox (default `INBOX`).
    pub imap_url: Option<url::Url>,
    /// A granted secret holding the password when a URL names a user but
    /// no password.
    pub password_secret: Option<String>,
    /// What happens to a mail in the mailbox once it is stored.
    pub after_store: AfterStore,
    /// How often the listener looks for new mail when the server has no
    /// IDLE.
    pub poll: Duration,
    /// The display name of outgoing mail's `From`.
    pub from_name: Option<String>,
    /// Whether the listener starts with the gateway (it can be started and
    /// stopped through the API either way).
    pub start_listener: bool,
}

/// What the listener does to a stored mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStore {
    /// Flags it `\Seen`.
    Seen,
    /// Moves it to this mailbox (created if missing).
    Move(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub address: String,
    #[serde(default)]
    pub smtp_url: Option<String>,
    #[serde(default)]
    pub imap_url: Option<String>,
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default)]
    pub after_store: Option<String>,
    #[serde(default)]
    pub move_to: Option<String>,
    #[serde(default)]
    pub poll_secs: Option<u64>,
    #[serde(default)]
    pub from_name: Option<String>,
    #[serde(default)]
    pub start_listener: Option<bool>,
}

/// Whether `text` looks like a mail address one can write to.
pub fn plausible_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && text.len() <= 254
        && !text.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '\\')
        })
}

fn validate_mail(
    raw: RawMail,
    grants: &RawGrants,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<MailConfig, ConfigError> {
    let address = raw.address.trim().to_ascii_lowercase();
    if !plausible_address(&address) {
        return Err(err(
            "mail.address",
            format!(
                "expected a mail address such as support@example.com, got {:?}",
                raw.address
            ),
        ));
    }
    if !grants.mail {
        return Err(err(
            "grants.mail",
            "an entry with [plugins.mail] sends mail: set grants.mail = true".into(),
        ));
    }
    let parse = |key: &str, text: Option<String>, schemes: [&str; 2]| {
        let Some(text) = text else {
            return Ok(None);
        };
        let url = url::Url::parse(text.trim())
            .map_err(|e| err(&format!("mail.{key}"), format!("not a URL ({e})")))?;
        if !schemes.contains(&url.scheme()) || url.host_str().is_none_or(str::is_empty) {
            return Err(err(
                &format!("mail.{key}"),
                format!(
                    "expected {}://host:port or {}://host:port",
                    schemes[0], schemes[1]
                ),
            ));
        }
        Ok(Some(url))
    };
    let smtp_url = parse("smtp_url", raw.smtp_url, ["smtp", "smtps"])?;
    if let Some(url) = &smtp_url
        && let Some(tls) = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned())
        && !matches!(tls.as_str(), "required" | "opportunistic")
    {
        return Err(err(
            "mail.smtp_url",
            format!("?tls= expects required or opportunistic, got {tls:?}"),
        ));
    }
    let imap_url = parse("imap_url", raw.imap_url, ["imap", "imaps"])?;
    if let Some(name) = &raw.password_secret
        && !grants.secrets.contains(name)
    {
        return Err(err(
            "mail.password_secret",
            format!("{name} must also be listed in grants.secrets"),
        ));
    }
    let after_store = match (raw.after_store.as_deref(), raw.move_to) {
        (None | Some("seen"), None) => AfterStore::Seen,
        (Some("move"), to) => AfterStore::Move(
            to.map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "Processed".into()),
        ),
        (None | Some("seen"), Some(_)) => {
            return Err(err(
                "mail.move_to",
                "is used only with after_store = \"move\"".into(),
            ));
        }
        (Some(other), _) => {
            return Err(err(
                "mail.after_store",
                format!("expected \"seen\" or \"move\", got {other:?}"),
            ));
        }
    };
    let poll_secs = raw.poll_secs.unwrap_or(30);
    if !(1..=3600).contains(&poll_secs) {
        return Err(err("mail.poll_secs", "expected 1 to 3600".into()));
    }
    if raw
        .from_name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        return Err(err("mail.from_name", "must be one line".into()));
    }
    Ok(MailConfig {
        address,
        smtp_url,
        imap_url,
        password_secret: raw.password_secret,
        after_store,
        poll: Duration::from_secs(poll_secs),
        from_name: raw.from_name.filter(|n| !n.trim().is_empty()),
        start_listener: raw.start_listener.unwrap_or(true),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub id: String,
    pub path: String,
    pub world: String,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub settings: toml::Table,
    #[serde(default)]
    pub grants: RawGrants,
    #[serde(default)]
    pub mail: Option<RawMail>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGrants {
    pub http_hosts: Vec<String>,
    pub allow_private: bool,
    pub secrets: Vec<String>,
    pub mail: bool,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub max_concurrent: u32,
}

impl Default for RawGrants {
    fn default() -> Self {
        Self {
            http_hosts: Vec::new(),
            allow_private: false,
            secrets: Vec::new(),
            mail: false,
            timeout_ms: 30_000,
            memory_mb: 64,
            max_concurrent: 8,
        }
    }
}

/// The entries used when the config has no `plugins` key: the offline
/// responder, which needs no grant at all.
pub fn default_entries() -> Vec<RawPlugin> {
    vec![RawPlugin {
        id: "kb-answer".into(),
        path: "builtin:kb-answer".into(),
        world: "llm-provider".into(),
        organization: None,
        settings: toml::Table::new(),
        grants: RawGrants::default(),
        mail: None,
    }]
}

/// Plugin instances that may run at once, all entries together: the sum of
/// their `grants.max_concurrent`.
pub const MAX_INSTANCES: u32 = 1000;

/// The gateway's own secrets, which no plugin may be granted.
const RESERVED_SECRETS: [&str; 3] = [
    "DATABASE_URL",
    "GATEWAY_JWT_SECRET",
    "GATEWAY_WEBHOOK_SECRET",
];

pub(super) fn validate(
    raw: Vec<RawPlugin>,
    source: &str,
) -> Result<Vec<PluginConfig>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let err = |key: &str, message: String| {
            ConfigError::new(source, Some(&format!("plugins[{i}].{key}")), message)
        };
        let id_ok = !p.id.is_empty()
            && p.id.len() <= 63
            && p.id
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !id_ok {
            return Err(err(
                "id",
                format!(
                    "expected lower-case letters, digits, `-` or `_` (at most 63), got {:?}",
                    p.id
                ),
            ));
        }
        if !seen.insert(p.id.clone()) {
            return Err(err("id", format!("{:?} is used by an earlier entry", p.id)));
        }
        let world = World::parse(&p.world).ok_or_else(|| {
            err(
                "world",
                format!(
                    "expected llm-provider, channel or webhook, got {:?}",
                    p.world
                ),
            )
        })?;
        let source_ = if let Some(name) = p.path.strip_prefix("builtin:") {
            ComponentSource::Builtin(name.to_owned())
        } else if p.path.trim().is_empty() {
            return Err(err(
                "path",
                "expected a .wasm component file or builtin:NAME".into(),
            ));
        } else {
            ComponentSource::File(PathBuf::from(&p.path))
        };
        let mut http_hosts = Vec::with_capacity(p.grants.http_hosts.len());
        for (j, text) in p.grants.http_hosts.iter().enumerate() {
            let pattern = HostPattern::parse(text).ok_or_else(|| {
                err(
                    &format!("grants.http_hosts[{j}]"),
                    format!(
                        "expected a host such as api.openai.com, *.example.com or localhost:11434 (no scheme or path), got {text:?}"
                    ),
                )
            })?;
            http_hosts.push(pattern);
        }
        for (j, name) in p.grants.secrets.iter().enumerate() {
            let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(err(
                    &format!("grants.secrets[{j}]"),
                    format!(
                        "expected an environment variable name such as OPENAI_API_KEY, got {name:?}"
                    ),
                ));
            }
            if RESERVED_SECRETS.contains(&name.as_str()) {
                return Err(err(
                    &format!("grants.secrets[{j}]"),
                    format!("{name} is the gateway's own secret; no plugin may read it"),
                ));
            }
        }
        if !(1..=600_000).contains(&p.grants.timeout_ms) {
            return Err(err(
                "grants.timeout_ms",
                "expected 1 to 600000 (ten minutes)".into(),
            ));
        }
        if !(1..=4096).contains(&p.grants.memory_mb) {
            return Err(err("grants.memory_mb", "expected 1 to 4096".into()));
        }
        if !(1..=1024).contains(&p.grants.max_concurrent) {
            return Err(err("grants.max_concurrent", "expected 1 to 1024".into()));
        }
        let settings = serde_json::to_value(&p.settings)
            .map_err(|e| err("settings", format!("cannot be passed as JSON: {e}")))?;
        let organization = p.organization.unwrap_or_else(|| "default".into());
        if crate::domain::identity::validate_slug(&organization).is_err() {
            return Err(err(
                "organization",
                format!(
                    "expected an organization's slug such as \"default\", got {organization:?}"
                ),
            ));
        }
        let mail = match p.mail {
            Some(_) if world != World::Channel => {
                return Err(err(
                    "mail",
                    "only a channel entry has a mail transport".into(),
                ));
            }
            Some(raw) => Some(validate_mail(raw, &p.grants, &err)?),
            None => None,
        };
        out.push(PluginConfig {
            id: p.id,
            mail,
            source: source_,
            world,
            organization,
            settings,
            grants: Grants {
                http_hosts,
                allow_private: p.grants.allow_private,
                secrets: p.grants.secrets,
                mail: p.grants.mail,
                timeout: Duration::from_millis(p.grants.timeout_ms),
                memory_bytes: p.grants.memory_mb * 1024 * 1024,
                max_concurrent: p.grants.max_concurrent,
            },
        });
    }
    let total: u32 = out.iter().map(|p| p.grants.max_concurrent).sum();
    if total > MAX_INSTANCES {
        return Err(ConfigError::new(
            source,
            Some("plugins"),
            format!(
                "the entries' grants.max_concurrent add up to {total}; at most {MAX_INSTANCES} plugin calls can run at once"
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let p = |s| HostPattern::parse(s).expect(s);
        assert!(p("api.openai.com").matches("api.openai.com", 443));
        assert!(!p("api.openai.com").matches("openai.com", 443));
        assert!(p("*.example.com").matches("a.b.example.com", 80));
        assert!(!p("*.example.com").matches("example.com", 80));
        assert!(!p("*.example.com").matches("badexample.com", 80));
        assert!(p("localhost:11434").matches("localhost", 11434));
        assert!(!p("localhost:11434").matches("localhost", 80));
        assert!(p("[::1]:8080").matches("::1", 8080));
        assert!(p("127.0.0.1").matches("127.0.0.1", 1));
        for bad in [
            "",
            "https://x.com",
            "x.com/path",
            "x..com",
            "x.com:port",
            "u@x.com",
        ] {
            assert!(HostPattern::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(p("*.Example.com:8443").to_string(), "*.example.com:8443");
    }
}
