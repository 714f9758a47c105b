//! The command line: `gateway serve | migrate | user create | apikey ...`.
//!
//! Every command reads the same config (`--config`, else `$GATEWAY_CONFIG`,
//! else `config/gateway.toml`, else built-in defaults). Results go to stdout
//! alone (an id, a key); logs and errors go to stderr.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::auth::{generate_api_key, hash_now};
use crate::config::Config;
use crate::domain::identity::{
    DEFAULT_ORG_SLUG, validate_email, validate_full_name, validate_password, validate_slug,
    validate_username,
};
use crate::domain::{NewUser, Organization, Role};
use crate::server::{AppState, redact_url, serve, shutdown_signal};
use crate::store::{Db, StoreError};
use crate::telemetry;

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "Self-hostable AI customer-support gateway"
)]
pub struct Cli {
    /// Config file [default: $GATEWAY_CONFIG, then config/gateway.toml, then built-in defaults]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default command)
    Serve(ServeArgs),
    /// Apply database migrations and exit
    Migrate,
    /// Manage users
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Work with the configured plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Load and validate every configured plugin; exits non-zero on any failure
    Check,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on, overriding server.bind (use port 0 for any free port)
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; prints its id
    Create {
        /// Login name; without one the user logs in by email
        #[arg(long)]
        username: Option<String>,
        #[arg(long)]
        email: String,
        /// The password, or `-` to read it from stdin
        #[arg(long)]
        password: String,
        #[arg(long, value_parser = ["admin", "agent", "customer"])]
        role: String,
        #[arg(long)]
        full_name: Option<String>,
        /// Organization slug; created if it does not exist
        #[arg(long, default_value = DEFAULT_ORG_SLUG)]
        org: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create an API key; prints the key alone on stdout (it is shown only once)
    Create {
        #[arg(long)]
        name: String,
        /// Organization slug; created if it does not exist
        #[arg(long, default_value = DEFAULT_ORG_SLUG)]
        org: String,
    },
    /// List an organization's API keys (never the keys themselves)
    List {
        #[arg(long, default_value = DEFAULT_ORG_SLUG)]
        org: String,
    },
    /// Revoke an API key by id
    Revoke {
        id: i64,
        #[arg(long, default_value = DEFAULT_ORG_SLUG)]
        org: String,
    },
}

/// Parses the command line, runs the command and maps failures to exit codes:
/// 2 for configuration and usage errors, 1 for everything else.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(
        cli.command.unwrap_or(Command::Serve(ServeArgs::default())),
        config,
    ));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, mut config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            if let Some(bind) = args.bind {
                config.server.bind = bind;
            }
            let bind = config.server.bind;
            tracing::info!(
                config = %config.file.as_ref().map_or_else(|| "built-in defaults".into(), |p| p.display().to_string()),
                database = %redact_url(&config.database.url),
                "starting gateway {}",
                env!("CARGO_PKG_VERSION")
            );
            let state = AppState::build(config).await?;
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot listen on {bind}"))?;
            serve(listener, state, shutdown_signal()).await
        }
        Command::Plugins(PluginsCommand::Check) => plugins_check(&config).await,
        Command::Migrate => {
            let db = connect(&config).await?;
            db.close().await;
            eprintln!("migrations applied to {}", redact_url(&config.database.url));
            Ok(())
        }
        Command::User(UserCommand::Create {
            username,
            email,
            password,
            role,
            full_name,
            org,
        }) => {
            let password = if password == "-" {
                read_stdin_password()?
            } else {
                password
            };
            let role =
                Role::parse_user_role(&role).context("role must be admin, agent or customer")?;
            let mut errors = Vec::new();
            if let Some(u) = &username {
                validate_username("--username", u, &mut errors);
            }
            validate_email("--email", &email, &mut errors);
            validate_password("--password", &password, &mut errors);
            if let Some(n) = &full_name {
                validate_full_name("--full-name", n, &mut errors);
            }
            if let Some(first) = errors.first() {
                bail!("{}: {}", first.field, first.message);
            }
            let db = connect(&config).await?;
            let org = org_for(&db, &org).await?;
            let password_hash = tokio::task::spawn_blocking(move || hash_now(&password))
                .await
                .context("hashing task failed")??;
            let new = NewUser {
                org_id: org.id,
                username,
                email,
                full_name,
                password_hash,
                role,
            };
            let user = match db.create_user(&new).await {
                Ok(user) => user,
                Err(StoreError::Conflict(field)) => {
                    bail!("a user with this {field} already exists")
                }
                Err(e) => return Err(e.into()),
            };
            db.close().await;
            println!("{}", user.id);
            Ok(())
        }
        Command::Apikey(ApiKeyCommand::Create { name, org }) => {
            if name.trim().is_empty() || name.len() > 200 {
                bail!("--name must be 1-200 characters");
            }
            let db = connect(&config).await?;
            let org = org_for(&db, &org).await?;
            let (key, prefix, hash) = generate_api_key();
            let created = db
                .create_api_key(org.id, name.trim(), &prefix, &hash)
                .await?;
            db.close().await;
            eprintln!(
                "created API key {} ({}) for organization {}; it is shown only once",
                created.id, prefix, org.slug
            );
            println!("{key}");
            Ok(())
        }
        Command::Apikey(ApiKeyCommand::List { org }) => {
            let db = connect(&config).await?;
            let Some(org) = db.org_by_slug(&org).await? else {
                bail!("no organization with slug {org:?}");
            };
            println!(
                "{:<6} {:<14} {:<24} {:<20} status",
                "id", "prefix", "name", "created"
            );
            for k in db.api_keys(org.id).await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<6} {:<14} {:<24} {:<20} {status}",
                    k.id,
                    k.prefix,
                    k.name,
                    k.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            db.close().await;
            Ok(())
        }
        Command::Apikey(ApiKeyCommand::Revoke { id, org }) => {
            let db = connect(&config).await?;
            let Some(org) = db.org_by_slug(&org).await? else {
                bail!("no organization with slug {org:?}");
            };
            let revoked = db.revoke_api_key(org.id, id).await?;
            db.close().await;
            if !revoked {
                bail!("no active API key {id} in organization {}", org.slug);
            }
            eprintln!("revoked API key {id}");
            Ok(())
        }
    }
}

/// Connects and migrates, so every command works on a fresh data dir.
async fn connect(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database).await.with_context(|| {
        format!(
            "connecting to the database ({})",
            redact_url(&config.database.url)
        )
    })?;
    db.migrate().await.context("applying database migrations")?;
    Ok(db)
}

async fn org_for(db: &Db, slug: &str) -> anyhow::Result<Organization> {
    validate_slug(slug).map_err(anyhow::Error::msg)?;
    if let Some(org) = db.org_by_slug(slug).await? {
        return Ok(org);
    }
    let org = db.ensure_org(slug, slug).await?;
    eprintln!("created organization {slug}");
    Ok(org)
}

fn read_stdin_password() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the password from stdin")?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// `gateway plugins check`: loads every entry as `serve` would (compiling or
/// reading the cache, checking the WIT version and world, pre-instantiating)
/// and instantiates each once, so that a memory limit too small for the
/// component shows here rather than at the first call.
async fn plugins_check(config: &Config) -> anyhow::Result<()> {
    if config.plugins.is_empty() {
        println!("no plugins configured");
        return Ok(());
    }
    let configs = config.plugins.clone();
    let cache = crate::plugins::cache_dir(&config.storage.data_dir);
    let plugins = tokio::task::spawn_blocking(move || {
        crate::plugins::Plugins::load(&configs, Some(&cache), None)
    })
    .await
    .context("loading the plugins")?;
    let mut failed = 0;
    for entry in plugins.entries() {
        let c = entry.config();
        let outcome = match entry {
            crate::plugins::Entry::Failed { error, .. } => Err(error.clone()),
            crate::plugins::Entry::Ready(plugin) => match plugin.probe().await {
                Ok(()) => Ok(format!(
                    "loaded in {} ms, {}",
                    plugin.load_time.as_millis(),
                    plugin.cache.word()
                )),
                Err(e) => Err(e.to_string()),
            },
        };
        match outcome {
            Ok(note) => println!(
                "ok      {}  ({}, {}; {note})",
                c.id,
                c.world.name(),
                c.source
            ),
            Err(error) => {
                failed += 1;
                println!(
                    "FAILED  {}  ({}, {}): {error}",
                    c.id,
                    c.world.name(),
                    c.source
                );
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} plugins failed the check",
            plugins.entries().len()
        );
    }
    println!("all {} plugins passed", plugins.entries().len());
    Ok(())
}
