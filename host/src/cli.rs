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
    /// Manage the knowledge base
    #[command(subcommand)]
    Kb(KbCommand),
    /// Manage the FAQs
    #[command(subcommand)]
    Faq(FaqCommand),
}

#[derive(Subcommand, Debug)]
pub enum KbCommand {
    /// Import Markdown or text files (or every .md/.markdown/.txt file in a
    /// directory) as knowledge documents; the title is the first heading
    Import {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Organization slug; created if it does not exist
        #[arg(long, default_value = DEFAULT_ORG_SLUG)]
        org: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FaqCommand {
    /// Import FAQs from a TOML (`[[faq]]` tables) or JSON (an array, or
    /// `{"faqs": [...]}`) file of `{question, answer, category?}`
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Organization slug; created if it does not exist
        #[arg(long, default_value = DEFAULT_ORG_SLUG)]
        org: String,
    },
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
        Command::Kb(KbCommand::Import { paths, org }) => kb_import(&config, &paths, &org).await,
        Command::Faq(FaqCommand::Import { file, org }) => faq_import(&config, &file, &org).await,
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
        let env: HashMap<String, String> = std::env::vars().collect();
        let mut problems = crate::channels::check_entry(c, &env);
        problems.extend(crate::email::check_entry(c, &env));
        let outcome = match entry {
            crate::plugins::Entry::Failed { error, .. } => Err(error.clone()),
            crate::plugins::Entry::Ready(_) if !problems.is_empty() => Err(problems.join("; ")),
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

/// The database, the plugins and an assistant without a search index:
/// imports write the database; a running gateway indexes them within
/// seconds (`assistant::SYNC_EVERY`), a stopped one at its next start.
async fn importer(config: &Config) -> anyhow::Result<crate::assistant::Assistant> {
    let db = connect(config).await?;
    let configs = config.plugins.clone();
    let cache = crate::plugins::cache_dir(&config.storage.data_dir);
    let plugin_db = db.clone();
    let plugins = tokio::task::spawn_blocking(move || {
        crate::plugins::Plugins::load(&configs, Some(&cache), Some(plugin_db))
    })
    .await
    .context("loading the plugins")?;
    Ok(crate::assistant::Assistant::new(
        config.assistant.clone(),
        db,
        std::sync::Arc::new(plugins),
        None,
    ))
}

/// The files `paths` name: files as given, directories' `.md`,
/// `.markdown` and `.txt` files (not recursive), sorted.
fn knowledge_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("listing {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                            matches!(e.to_ascii_lowercase().as_str(), "md" | "markdown" | "txt")
                        })
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{} holds no .md, .markdown or .txt file", path.display());
            }
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

async fn kb_import(config: &Config, paths: &[PathBuf], org: &str) -> anyhow::Result<()> {
    use crate::domain::knowledge::{BODY_MAX, NewDocument, TITLE_MAX, title_of};
    let files = knowledge_files(paths)?;
    // Read and check everything before writing anything.
    let mut documents = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        if bytes.len() > BODY_MAX {
            bail!("{}: larger than {} KiB", file.display(), BODY_MAX / 1024);
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", file.display()))?;
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("document")
            .replace(['-', '_'], " ");
        let (title, body) = title_of(&text, stem.trim());
        if body.trim().is_empty() {
            bail!("{}: no text under the title", file.display());
        }
        let title: String = title.chars().take(TITLE_MAX).collect();
        documents.push((
            file,
            NewDocument {
                title,
                body,
                url: None,
                source: "knowledge_base".into(),
                source_id: Some(
                    file.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("")
                        .to_owned(),
                ),
            },
        ));
    }
    let assistant = importer(config).await?;
    let org = org_for(assistant.db(), org).await?;
    let mut passages = 0;
    for (file, new) in &documents {
        let (document, ids, _) = assistant
            .add_document(org.id, new)
            .await
            .with_context(|| format!("importing {}", file.display()))?;
        passages += ids.len();
        eprintln!(
            "imported {} as document {} ({} passages)",
            file.display(),
            document.id,
            ids.len()
        );
    }
    println!("{} documents, {passages} passages", documents.len());
    assistant.db().close().await;
    Ok(())
}

/// One FAQ of an import file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaqFile {
    #[serde(alias = "faqs")]
    faq: Vec<crate::domain::knowledge::NewFaq>,
}

async fn faq_import(config: &Config, file: &std::path::Path, org: &str) -> anyhow::Result<()> {
    use crate::domain::knowledge::{TITLE_MAX, validate_category, validate_text};
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let is_json = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let faqs = if is_json {
        match serde_json::from_str::<Vec<crate::domain::knowledge::NewFaq>>(&text) {
            Ok(list) => list,
            Err(_) => serde_json::from_str::<FaqFile>(&text)
                .with_context(|| format!("{}: expected a JSON array of {{question, answer, category?}} or {{\"faqs\": [...]}}", file.display()))?
                .faq,
        }
    } else {
        toml::from_str::<FaqFile>(&text)
            .with_context(|| {
                format!(
                    "{}: expected [[faq]] tables of question, answer, category?",
                    file.display()
                )
            })?
            .faq
    };
    if faqs.is_empty() {
        bail!("{}: no FAQs", file.display());
    }
    let mut cleaned = Vec::with_capacity(faqs.len());
    for (i, mut f) in faqs.into_iter().enumerate() {
        let n = i + 1;
        validate_text("question", &f.question, TITLE_MAX)
            .and_then(|_| validate_text("answer", &f.answer, 20_000))
            .and_then(|_| validate_category("category", &f.category))
            .map_err(|e| {
                anyhow::anyhow!("{}: FAQ {n}: {}: {}", file.display(), e.field, e.message)
            })?;
        f.question = f.question.trim().to_owned();
        f.answer = f.answer.trim().to_owned();
        f.category = f.category.trim().to_lowercase();
        cleaned.push(f);
    }
    let assistant = importer(config).await?;
    let org = org_for(assistant.db(), org).await?;
    let stored = assistant.add_faqs(org.id, cleaned).await?;
    println!("{} FAQs", stored.len());
    assistant.db().close().await;
    Ok(())
}
