//! Config parsing and validation, including the exact one-line errors.

use std::collections::HashMap;
use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Some(Path::new("gw.toml")), &HashMap::new())
}

fn error(text: &str) -> String {
    parse(text).expect_err("should fail").to_string()
}

#[test]
fn defaults_match_conventions() {
    let c = Config::defaults();
    assert_eq!(c.server.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
    assert_eq!(c.database.url, "sqlite://./data/gateway.db");
    assert_eq!(c.database.kind, DatabaseKind::Sqlite);
    assert!(c.auth.jwt_secret.is_none());
    assert!(c.rate_limits.enabled);
    assert_eq!(
        c.rate_limits.chat,
        Limits {
            per_minute: 100,
            per_hour: 1000,
            org_per_minute: 0
        }
    );
    assert_eq!(
        c.rate_limits.assistant,
        Limits {
            per_minute: 60,
            per_hour: 0,
            org_per_minute: 0
        }
    );
    assert_eq!(
        c.rate_limits.tickets,
        Limits {
            per_minute: 100,
            per_hour: 0,
            org_per_minute: 1000
        }
    );
    assert!(c.auth.hash_concurrency >= 1);
}

#[test]
fn shipped_configs_parse_and_match_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let defaults = format!("{:?}", Config::defaults());
    for name in ["config/gateway.toml", "config/gateway.example.toml"] {
        let text = std::fs::read_to_string(root.join(name)).expect("config file");
        let mut c = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        c.file = None;
        // Every value the example lists is the built-in default.
        assert_eq!(format!("{c:?}"), defaults, "{name}");
    }
}

#[test]
fn env_overrides_win() {
    let env: HashMap<String, String> = [
        ("GATEWAY_BIND", "0.0.0.0:9000"),
        ("GATEWAY_DATA_DIR", "/var/lib/gw"),
        ("GATEWAY_JWT_SECRET", "x".repeat(40).as_str()),
        ("GATEWAY_RATE_LIMITS", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = Config::from_toml("[server]\nbind = \"127.0.0.1:1\"\n", None, &env).expect("valid");
    assert_eq!(c.server.bind.to_string(), "0.0.0.0:9000");
    assert_eq!(c.database.url, "sqlite:///var/lib/gw/gateway.db");
    assert_eq!(c.auth.jwt_secret.as_deref(), Some("x".repeat(40).as_str()));
    assert!(!c.rate_limits.enabled);

    let mut env = HashMap::new();
    env.insert("DATABASE_URL".to_owned(), "postgres://u@h/db".to_owned());
    let c = Config::from_toml("", None, &env).expect("valid");
    assert_eq!(c.database.kind, DatabaseKind::Postgres);

    env.insert("GATEWAY_RATE_LIMITS".to_owned(), "maybe".to_owned());
    let e = Config::from_toml("", None, &env)
        .expect_err("invalid")
        .to_string();
    assert_eq!(
        e,
        "environment: GATEWAY_RATE_LIMITS: expected `on` or `off`, got \"maybe\""
    );
}

#[test]
fn bad_environment_values_name_the_variable() {
    let env: HashMap<String, String> = [("GATEWAY_BIND".to_owned(), "nonsense".to_owned())]
        .into_iter()
        .collect();
    let e = Config::from_toml("", Some(Path::new("gw.toml")), &env)
        .expect_err("invalid")
        .to_string();
    assert_eq!(
        e,
        "environment: GATEWAY_BIND: expected an address and port such as 127.0.0.1:8080, got \"nonsense\""
    );
}

#[test]
fn trusted_proxies_must_be_addresses() {
    let c = parse("[server]\ntrusted_proxies = [\"10.0.0.1\", \"::1\"]\n").expect("valid");
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert_eq!(
        error("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n"),
        "gw.toml: server.trusted_proxies[0]: expected an IP address such as 10.0.0.1, got \"10.0.0.0/8\""
    );
}

#[test]
fn cors_origins_are_checked() {
    let c = parse("[server]\ncors_origins = [\"https://shop.example.com\"]\n").expect("valid");
    assert_eq!(c.server.cors_origins, ["https://shop.example.com"]);
    assert!(parse("[server]\ncors_origins = [\"*\"]\n").is_ok());
    let e = error("[server]\ncors_origins = [\"shop.example.com/\"]\n");
    assert!(
        e.starts_with("gw.toml: server.cors_origins[0]: expected an origin"),
        "{e}"
    );
}

#[test]
fn partial_limit_tables_keep_other_defaults() {
    let c = parse("[rate_limits.chat]\nper_minute = 5\n").expect("valid");
    assert_eq!(
        c.rate_limits.chat,
        Limits {
            per_minute: 5,
            per_hour: 1000,
            org_per_minute: 0
        }
    );
}

#[test]
fn unknown_key_names_file_and_key() {
    assert_eq!(
        error("[server]\nbnd = \"x\"\n"),
        "gw.toml:2:1: server.bnd: unknown key, expected one of `bind`, `trusted_proxies`, \
         `cors_origins`, `request_timeout_secs`, `shutdown_timeout_secs`, `max_body_bytes`, `header_read_timeout_secs`, `max_connections`, \
         `max_connections_per_address`, `idle_timeout_secs`, `max_sockets_per_user`, `upload_budget_bytes`"
    );
    let e = error("colour = 1\n");
    assert!(
        e.starts_with("gw.toml:1:1: colour: unknown key, expected one of `server`"),
        "{e}"
    );
}

#[test]
fn wrong_type_names_key_and_expectation() {
    let e = error("[server]\nrequest_timeout_secs = \"soon\"\n");
    assert!(
        e.starts_with(
            "gw.toml:2:24: server.request_timeout_secs: invalid type: string \"soon\", expected"
        ),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    let e = error("[rate_limits]\nenabled = \"yes\"\n");
    assert!(
        e.contains("rate_limits.enabled: invalid type: string \"yes\", expected a boolean"),
        "{e}"
    );
}

#[test]
fn invalid_values_are_explained() {
    assert_eq!(
        error("[server]\nbind = \"localhost\"\n"),
        "gw.toml: server.bind: expected an address and port such as 127.0.0.1:8080, got \"localhost\""
    );
    assert_eq!(
        error("[database]\nurl = \"mysql://x\"\n"),
        "gw.toml: database.url: expected a URL starting with sqlite:// or postgres://"
    );
    assert_eq!(
        error("[auth]\njwt_secret = \"short\"\n"),
        "gw.toml: auth.jwt_secret: expected at least 32 characters (or leave it unset to generate one)"
    );
    assert_eq!(
        error("[log]\nformat = \"xml\"\n"),
        "gw.toml: log.format: expected `text` or `json`, got \"xml\""
    );
    assert_eq!(
        error("[database]\nmax_connections = 0\n"),
        "gw.toml: database.max_connections: expected a number greater than 0"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let e = error("[server\nbind = 1\n");
    assert!(e.starts_with("gw.toml:1:"), "{e}");
    assert!(e.contains("invalid TOML"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn missing_explicit_file_is_an_error() {
    let e = Config::load(Some(Path::new("/nonexistent/gw.toml")), &HashMap::new())
        .expect_err("missing")
        .to_string();
    assert!(
        e.starts_with("/nonexistent/gw.toml: cannot read the config file:"),
        "{e}"
    );
}

#[test]
fn plugin_entries_are_checked() {
    let entry = |rest: &str| {
        format!(
            "[[plugins]]\nid = \"p\"\npath = \"builtin:kb-answer\"\nworld = \"llm-provider\"\n{rest}\n"
        )
    };
    let c = parse(&entry("settings = { model = \"x\", n = 2 }")).expect("valid");
    assert_eq!(c.plugins.len(), 1);
    assert_eq!(
        c.plugins[0].settings,
        serde_json::json!({"model": "x", "n": 2})
    );
    assert!(parse("plugins = []\n").expect("valid").plugins.is_empty());
    assert_eq!(Config::defaults().plugins[0].id, "kb-answer");

    let cases = [
        (
            "[[plugins]]\nid = \"Bad Id\"\npath = \"x.wasm\"\nworld = \"llm-provider\"\n"
                .to_owned(),
            "plugins[0].id: expected lower-case letters, digits, `-` or `_` (at most 63), got \"Bad Id\"",
        ),
        (
            "[[plugins]]\nid = \"p\"\npath = \"x.wasm\"\nworld = \"llm\"\n".to_owned(),
            "plugins[0].world: expected llm-provider, channel or webhook, got \"llm\"",
        ),
        (
            entry("") + &entry(""),
            "plugins[1].id: \"p\" is used by an earlier entry",
        ),
        (
            entry("grants = { secrets = [\"GATEWAY_JWT_SECRET\"] }"),
            "plugins[0].grants.secrets[0]: GATEWAY_JWT_SECRET is the gateway's own secret; no plugin may read it",
        ),
        (
            entry("grants = { http_hosts = [\"https://api.openai.com/v1\"] }"),
            "plugins[0].grants.http_hosts[0]: expected a host such as api.openai.com",
        ),
        (
            entry("grants = { memory_mb = 0 }"),
            "plugins[0].grants.memory_mb: expected 1 to 4096",
        ),
        (
            entry("grants = { max_concurrent = 1000 }").replace("id = \"p\"", "id = \"a\"")
                + &entry("grants = { max_concurrent = 1000 }"),
            "plugins: the entries' grants.max_concurrent add up to 2000",
        ),
        (
            "[[plugins]]\nid = \"p\"\nworld = \"webhook\"\n".to_owned(),
            "missing field `path`",
        ),
    ];
    for (text, expected) in cases {
        let e = error(&text);
        assert!(
            e.contains(expected),
            "{text}\nexpected: {expected}\ngot: {e}"
        );
    }
}

const EMAIL_ENTRY: &str =
    "[[plugins]]\nid = \"email\"\npath = \"builtin:email\"\nworld = \"channel\"\n";

#[test]
fn email_entries_take_the_mail_table() {
    let c = parse(&format!(
        "{EMAIL_ENTRY}[plugins.mail]\naddress = \"Support@Example.com\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\n\
         imap_url = \"imap://support:secret@127.0.0.1:1143/INBOX\"\nafter_store = \"move\"\n\
         [plugins.grants]\nmail = true\n"
    ))
    .expect("valid");
    let mail = c.plugins[0].mail.clone().expect("a mail table");
    assert_eq!(mail.address, "support@example.com");
    assert_eq!(mail.after_store, AfterStore::Move("Processed".into()));
    assert_eq!(mail.poll, std::time::Duration::from_secs(30));
    assert!(mail.start_listener);
    assert_eq!(mail.imap_url.expect("imap").host_str(), Some("127.0.0.1"));
}

#[test]
fn email_entry_errors_name_the_key() {
    let with = |mail: &str, grants: &str| {
        error(&format!(
            "{EMAIL_ENTRY}[plugins.mail]\n{mail}\n[plugins.grants]\n{grants}\n"
        ))
    };
    assert_eq!(
        with("address = \"support\"", "mail = true"),
        "gw.toml: plugins[0].mail.address: expected a mail address such as support@example.com, got \"support\""
    );
    assert_eq!(
        with("address = \"s@example.com\"", "mail = false"),
        "gw.toml: plugins[0].grants.mail: an entry with [plugins.mail] sends mail: set grants.mail = true"
    );
    assert_eq!(
        with(
            "address = \"s@example.com\"\nsmtp_url = \"http://x\"",
            "mail = true"
        ),
        "gw.toml: plugins[0].mail.smtp_url: expected smtp://host:port or smtps://host:port"
    );
    assert_eq!(
        with(
            "address = \"s@example.com\"\nsmtp_url = \"smtp://x?tls=maybe\"",
            "mail = true"
        ),
        "gw.toml: plugins[0].mail.smtp_url: ?tls= expects required or opportunistic, got \"maybe\""
    );
    assert_eq!(
        with(
            "address = \"s@example.com\"\nimap_url = \"imap:///INBOX\"",
            "mail = true"
        ),
        "gw.toml: plugins[0].mail.imap_url: expected imap://host:port or imaps://host:port"
    );
    assert_eq!(
        with(
            "address = \"s@example.com\"\npassword_secret = \"MAIL_PASSWORD\"",
            "mail = true"
        ),
        "gw.toml: plugins[0].mail.password_secret: MAIL_PASSWORD must also be listed in grants.secrets"
    );
    assert_eq!(
        with(
            "address = \"s@example.com\"\nafter_store = \"delete\"",
            "mail = true"
        ),
        "gw.toml: plugins[0].mail.after_store: expected \"seen\" or \"move\", got \"delete\""
    );
}
