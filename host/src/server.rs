//! The running gateway: shared state, start-up, serving and shutdown.
//!
//! [`AppState::build`] connects and migrates the database and prepares the
//! credentials; [`serve`] runs the HTTP server on a listener until the
//! shutdown future completes, then drains in-flight requests. Tests drive
//! [`crate::api::app`] in-process or bind `127.0.0.1:0`.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::api::rate_limit::{RateLimiter, unix_now};
use crate::auth::{Passwords, Tokens, load_or_create_secret};
use crate::config::Config;
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
        let secret = load_or_create_secret(&config.auth, &config.jwt_secret_path())?;
        let tokens = Tokens::new(&secret, &config.auth);
        let passwords =
            Passwords::new(config.auth.hash_concurrency).context("preparing password hashing")?;
        Ok(AppState(Arc::new(Inner {
            config: Arc::new(config),
            db,
            passwords,
            tokens,
            limiter: RateLimiter::new(),
            metrics: telemetry::metrics_handle(),
            default_org_id: org.id,
            openapi: crate::api::openapi_document(),
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

    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                state.limiter.sweep(unix_now());
            }
        })
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = crate::api::app(state.clone());
    let mut server = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .await
    });

    tokio::select! {
        result = &mut server => {
            sweeper.abort();
            return result.context("server task failed")?.context("serving HTTP");
        }
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stop_tx.send(true);
    let grace = state.config.server.shutdown_timeout;
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result
            .context("server task failed")?
            .context("serving HTTP")?,
        Err(_) => {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "in-flight requests did not finish in time; stopping anyway"
            );
            server.abort();
        }
    }
    sweeper.abort();
    state.db.close().await;
    tracing::info!("shutdown complete");
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
