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
use crate::auth::{Passwords, TokenError, Tokens, generate_secret, load_or_create_secret_file};
use crate::config::{Config, DatabaseKind};
use crate::domain::Principal;
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
    /// Open WebSockets per user and API key.
    pub sockets: crate::realtime::Sockets,
    /// Upload bytes being received, over all clients.
    pub uploads: crate::files::UploadBudget,
    /// Attachment bytes under the data dir.
    pub files: crate::files::FileStore,
    /// Knowledge, FAQs, memories and the answer pipeline.
    pub assistant: Arc<crate::assistant::Assistant>,
    /// The channel entries' routes, inbox and outbox.
    pub channels: crate::channels::Channels,
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
        crate::files::private_data_dir(&config.storage.data_dir).with_context(|| {
            format!(
                "creating the data directory {}",
                config.storage.data_dir.display()
            )
        })?;
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
        let config_upload_budget = config.server.upload_budget_bytes;
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
        let channels = crate::channels::Channels::new(&config.plugins, &db).await;
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
            sockets: Default::default(),
            uploads: crate::files::UploadBudget::new(config_upload_budget),
            files,
            assistant,
            channels,
            key_use: DashMap::new(),
        })))
    }

    /// Checks a bearer token: its signature and claims (remembered), then,
    /// at most every [`crate::auth::RECHECK_EVERY`] per token, its user's
    /// record, so that a deactivated, deleted, demoted or re-passworded
    /// user's tokens stop working without a database read per request.
    pub async fn verify_token(
        &self,
        token: &str,
    ) -> Result<Result<Principal, TokenError>, crate::store::StoreError> {
        let v = match self.tokens.verify(token) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if !v.needs_check() {
            return Ok(Ok(v.principal));
        }
        let Some(user_id) = v.principal.user_id() else {
            return Ok(Err(TokenError::Invalid));
        };
        let since = self.tokens.revocations();
        let now = self.db.token_state(user_id).await?;
        if crate::auth::still_valid(&v, now.as_ref()) {
            self.tokens.checked(token, since);
            Ok(Ok(v.principal))
        } else {
            self.tokens.forget(token);
            Ok(Err(TokenError::Invalid))
        }
    }

    /// Ends user `user_id`'s tokens and open sockets on this node at once
    /// (call after the change that bumped its token generation; other
    /// nodes notice within [`crate::auth::RECHECK_EVERY`]).
    pub fn revoke_user(&self, user_id: i64) {
        self.tokens.forget_user(user_id);
        self.sockets
            .revoke(crate::realtime::SocketOwner::User(user_id));
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
                    let week = chrono::Utc::now() - chrono::Duration::days(7);
                    if let Err(e) = state.db.sweep_webhook_deliveries(week).await {
                        tracing::warn!(error = %e, "could not sweep old webhook deliveries");
                    }
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

    // The channels' inbox, outbox and read workers.
    let channel_tasks = crate::channels::start(&state);

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
            channel_tasks.iter().for_each(|t| t.abort());
            return result.context("server task failed")?;
        }
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    // WebSockets keep their connections' places; they close with 1001.
    state.sockets.close_all();
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
    // Whatever they held is leased: the next start takes it over.
    channel_tasks.iter().for_each(|t| t.abort());
    state.db.close().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Accepts connections until `stop` turns true, then waits for the open
/// ones to finish their in-flight requests.
///
/// Hand-written rather than `axum::serve` for the limits a public server
/// needs:
///
/// - a connection that sends nothing is closed after
///   `server.header_read_timeout` (hyper's own header deadline starts only
///   at the first byte), one that trickles its headers by hyper's deadline;
/// - a connection with no request in flight for `server.idle_timeout` is
///   closed, HTTP/2 included (HTTP/2 also pings, so a peer that vanished is
///   noticed): gracefully first, and dropped one more `idle_timeout` later
///   if it is still busy (a client that stopped reading a response);
/// - open connections are capped in all (`server.max_connections`) and per
///   client address (`server.max_connections_per_address`; trusted proxies
///   are exempt), so one address cannot take every slot.
///
/// A WebSocket keeps its connection's slots after the upgrade (see
/// [`ConnectionSlot`]); its idleness is the socket's own ping/pong.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    config: crate::config::ServerConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let addresses: Arc<crate::places::Places<std::net::IpAddr, ()>> = Arc::default();
    let mut stop_accepting = stop.clone();
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
            () = async { drop(stop_accepting.wait_for(|stop| *stop).await) } => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total", "reason" => "total").increment(1);
            tracing::warn!(
                max = config.max_connections,
                "connection limit reached; closing a new connection"
            );
            continue;
        };
        let ip = peer.ip().to_canonical();
        let address = if config.trusted_proxies.contains(&ip) {
            None
        } else {
            // IPv6 clients by /64, the smallest block one usually holds.
            let network = crate::api::rate_limit::network_of(ip);
            match addresses.take(network, config.max_connections_per_address, || ()) {
                Some((place, ())) => Some(place),
                None => {
                    metrics::counter!("http_connections_refused_total", "reason" => "address")
                        .increment(1);
                    tracing::debug!(%ip, "per-address connection limit reached");
                    continue;
                }
            }
        };
        let slot = Arc::new(ConnectionSlot {
            _permit: permit,
            _address: address,
        });
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = {
            let slot = slot.clone();
            let activity = activity.clone();
            tower::ServiceBuilder::new()
                .map_future(move |response| {
                    let busy = activity.begin();
                    async move {
                        let response = response.await;
                        drop(busy);
                        response
                    }
                })
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    // Only a WebSocket handshake can outlive its connection.
                    if req.headers().contains_key(axum::http::header::UPGRADE) {
                        req.extensions_mut().insert(slot.clone());
                    }
                    req
                })
                .service(app.clone())
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let timeouts = (config.header_read_timeout, config.idle_timeout);
        tokio::spawn(watch_connection(
            connection,
            activity,
            timeouts,
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    // Every connection task holds a permit until it ends.
    let _ = permits
        .acquire_many(u32::try_from(config.max_connections).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// Drives one connection, closing it gracefully when it has been idle too
/// long (`timeouts`: before the first request, and between requests) or the
/// server stops.
async fn watch_connection<C>(
    connection: C,
    activity: Arc<Activity>,
    (first, between): (Duration, Duration),
    mut stop: tokio::sync::watch::Receiver<bool>,
    slot: Arc<ConnectionSlot>,
) where
    C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulShutdown,
{
    let mut connection = std::pin::pin!(connection);
    // Once closing: the moment the connection is dropped whatever it is
    // doing (a client that stopped reading a response holds it otherwise).
    let mut hard_stop: Option<tokio::time::Instant> = None;
    loop {
        let deadline = activity.idle_deadline(first, between);
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep_until(deadline), if hard_stop.is_none() => {
                if activity.is_idle(first, between) {
                    metrics::counter!("http_connections_idle_closed_total").increment(1);
                    connection.as_mut().shutdown_gracefully();
                    hard_stop = Some(tokio::time::Instant::now() + between);
                }
            }
            _ = stop.wait_for(|stop| *stop), if hard_stop.is_none() => {
                connection.as_mut().shutdown_gracefully();
                // serve() gives up on the whole server after its own grace.
                hard_stop = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            () = async {
                match hard_stop {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                metrics::counter!("http_connections_forced_closed_total").increment(1);
                break;
            }
        }
    }
    drop(slot);
}

/// The one method of hyper-util's connections [`watch_connection`] needs.
trait GracefulShutdown {
    fn shutdown_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulShutdown
    for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn shutdown_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What a connection holds while it is open: its place under
/// `server.max_connections` and under its address's cap. Upgrade requests
/// carry a clone, so a WebSocket handler keeps the slot for the socket's
/// life after the HTTP connection hands it over.
pub struct ConnectionSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _address: Option<crate::places::Place<std::net::IpAddr, ()>>,
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    opened: tokio::time::Instant,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds after `opened` that the last request ended; `u64::MAX`
    /// before any request.
    last_ms: std::sync::atomic::AtomicU64,
}

/// A request in flight; dropping it records when it ended.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: tokio::time::Instant::now(),
            in_flight: 0.into(),
            last_ms: u64::MAX.into(),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection will have been idle too long if nothing happens
    /// (with a request in flight: look again one `between` later).
    fn idle_deadline(&self, first: Duration, between: Duration) -> tokio::time::Instant {
        use std::sync::atomic::Ordering;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return tokio::time::Instant::now() + between;
        }
        match self.last_ms.load(Ordering::Relaxed) {
            u64::MAX => self.opened + first,
            ms => self.opened + Duration::from_millis(ms) + between,
        }
    }

    fn is_idle(&self, first: Duration, between: Duration) -> bool {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed) == 0
            && self.idle_deadline(first, between) <= tokio::time::Instant::now()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.last_ms.store(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
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
