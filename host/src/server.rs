//! The running gateway: shared state, start-up, serving and shutdown.
//!
//! [`AppState::build`] connects and migrates the database and prepares the
//! credentials; [`serve`] runs the HTTP server on a listener until the
//! shutdown future completes, then drains in-flight requests. Tests drive
//! [`crate::api::app`] in-process or bind `127.0.0.1:0`.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::api::rate_limit::{RateLimiter, unix_now};
use crate::auth::{Passwords, Tokens, generate_secret, load_or_create_secret_file};
use crate::config::{Config, DatabaseKind};
use crate::store::Db;
use crate::telemetry;

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Arc<Config>,
    pub db: Db,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub limiter: RateLimiter,
    pub metrics: PrometheusHandle,
    /// The organization self-registered users join.
    pub default_org_id: i64,
    /// The OpenAPI document, serialized once.
    pub openapi: String,
    /// The database probe behind `/health`.
    pub health: crate::api::gateway::HealthProbe,
    /// The `[[plugins]]` entries, loaded (or failed) at start-up.
    pub plugins: Arc<crate::plugins::Plugins>,
    /// Events for the WebSockets.
    pub bus: crate::realtime::Bus,
    /// Attachment bytes under the data dir.
    pub files: crate::files::FileStore,
    /// Knowledge, FAQs, memories and the answer pipeline.
    pub assistant: Arc<crate::assistant::Assistant>,
    /// When each API key's `last_used_at` was last written (Unix seconds).
    key_use: DashMap<i64, u64>,
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// What the service layer works with.
    pub fn core(&self) -> crate::service::Core<'_> {
        crate::service::Core {
            db: &self.db,
            bus: &self.bus,
            assistant: &self.assistant,
            files: &self.files,
        }
    }

    /// Connects to the database, applies migrations, makes sure the default
    /// organization exists and loads (or creates) the JWT secret.
    pub async fn build(config: Config) -> anyhow::Result<AppState> {
        let db = Db::connect(&config.database).await.with_context(|| {
            format!(
                "connecting to the database ({})",
                redact_url(&config.database.url)
            )
        })?;
        db.migrate().await.context("applying database migrations")?;
        let org = db
            .ensure_default_org()
            .await
            .context("creating the default organization")?;
        let secret = jwt_secret(&config, &db).await?;
        let tokens = Tokens::new(&secret, &config.auth);
        let passwords =
            Passwords::new(config.auth.hash_concurrency).context("preparing password hashing")?;
        let plugins = {
            let configs = config.plugins.clone();
            let cache = crate::plugins::cache_dir(&config.storage.data_dir);
            let db = db.clone();
            tokio::task::spawn_blocking(move || {
                crate::plugins::Plugins::load(&configs, Some(&cache), Some(db))
            })
            .await
            .context("loading the plugins")?
        };
        let files = crate::files::FileStore::new(&config.storage.data_dir);
        let plugins = Arc::new(plugins);
        let assistant = {
            let dir = config.storage.data_dir.clone();
            let search = tokio::task::spawn_blocking(move || crate::search::Search::open(&dir))
                .await
                .context("opening the search index")?
                .context("opening the search index")?;
            let assistant = crate::assistant::Assistant::new(
                config.assistant.clone(),
                db.clone(),
                plugins.clone(),
                Some(search),
            );
            let report = assistant
                .start()
                .await
                .context("loading the knowledge base into the search index")?;
            tracing::info!(
                passages = report.knowledge_entries,
                faqs = report.faq_entries,
                rebuilt = report.rebuilt,
                embedded = report.embedded,
                "search index ready"
            );
            Arc::new(assistant)
        };
        Ok(AppState(Arc::new(Inner {
            config: Arc::new(config),
            db,
            passwords,
            tokens,
            limiter: RateLimiter::new(),
            metrics: telemetry::metrics_handle(),
            default_org_id: org.id,
            openapi: crate::api::openapi_document(),
            health: Default::default(),
            plugins,
            bus: Default::default(),
            files,
            assistant,
            key_use: DashMap::new(),
        })))
    }

    /// Records that API key `id` was used, writing `last_used_at` at most
    /// once a minute per key so that authentication stays a single read.
    pub fn note_api_key_use(&self, id: i64) {
        let now = unix_now();
        let stale = self
            .key_use
            .get(&id)
            .is_none_or(|at| now.saturating_sub(*at) >= 60);
        if stale {
            self.key_use.insert(id, now);
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.touch_api_key(id).await {
                    tracing::warn!(error = %e, key_id = id, "could not record API key use");
                }
            });
        }
    }
}

/// The JWT signing secret: from config; else, on SQLite, generated once and
/// kept in `<data_dir>/jwt_secret`; else, on PostgreSQL, generated by the
/// first node and kept in the shared database, so that a token issued by one
/// node is accepted by all.
async fn jwt_secret(config: &Config, db: &Db) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    match db.kind() {
        DatabaseKind::Sqlite => load_or_create_secret_file(&config.jwt_secret_path()),
        DatabaseKind::Postgres => {
            let secret = db
                .ensure_setting("jwt_secret", &generate_secret())
                .await
                .context("reading the shared JWT secret")?;
            Ok(secret.into_bytes())
        }
    }
}

/// Hides the password in a database URL for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Serves the gateway on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (up to
/// `server.shutdown_timeout`) and closes the database.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on http://{addr}");

    // Keeps the search index in step with changes made elsewhere (another
    // node, `gateway kb import`).
    let index_sync = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::assistant::SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match state.assistant.sync().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(indexes = n, "search index caught up with the database")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not bring the search index up to date")
                    }
                }
            }
        })
    };
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            let mut minutes = 0u64;
            loop {
                tick.tick().await;
                state.limiter.sweep(unix_now());
                if let Err(e) = state.db.delete_expired_memories().await {
                    tracing::warn!(error = %e, "could not sweep expired memories");
                }
                state.bus.sweep();
                // Once an hour (it reads the files directory and asks the
                // database about each old file): files whose rows went with
                // a deleted organization or session (cascades), once they
                // are an hour old.
                if minutes.is_multiple_of(60) {
                    state
                        .files
                        .sweep(&state.db, Duration::from_secs(3600))
                        .await;
                }
                minutes += 1;
                // Expired plugin key-value entries read as absent already;
                // this only reclaims their rows.
                if let Err(e) = state
                    .db
                    .kv_sweep(chrono::Utc::now().timestamp_millis())
                    .await
                {
                    tracing::warn!(error = %e, "could not sweep expired plugin keys");
                }
            }
        })
    };

    let app = crate::api::app(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(accept_loop(
        listener,
        app,
        state.config.server.clone(),
        stop_rx,
    ));

    tokio::select! {
        result = &mut server => {
            sweeper.abort();
            index_sync.abort();
            return result.context("server task failed")?;
        }
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    let grace = state.config.server.shutdown_timeout;
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.context("server task failed")??,
        Err(_) => {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "in-flight requests did not finish in time; stopping anyway"
            );
            server.abort();
        }
    }
    sweeper.abort();
    index_sync.abort();
    state.db.close().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Accepts connections until `stop` turns true, then waits for the open
/// ones to finish their in-flight requests.
///
/// Hand-written rather than `axum::serve` for two limits a public server
/// needs: a deadline for a request's headers to arrive (without one, a client
/// trickling bytes holds its connection forever) and a cap on open
/// connections (past it, new ones are closed at once).
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    config: crate::config::ServerConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { drop(stop.wait_for(|stop| *stop).await) } => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            tracing::warn!(
                max = config.max_connections,
                "connection limit reached; closing a new connection"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            })
            .service(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("sqlite://./data/gateway.db"),
            "sqlite://./data/gateway.db"
        );
    }
}
