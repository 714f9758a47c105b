//! The gateway's own endpoints: health and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::server::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
}

/// `healthy` when every dependency answers; `degraded` when the database
/// answers but a plugin did not load; `unhealthy` when the database fails.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` or `unhealthy`.
    status: &'static str,
    version: &'static str,
    /// Each dependency and its state (`healthy` or `unhealthy`): the
    /// database, and each plugin as `plugin:<id>`.
    #[schema(value_type = Object)]
    dependencies: serde_json::Map<String, serde_json::Value>,
    /// Each configured plugin and its state (details, for admins, at
    /// `/api/gateway/plugins`).
    plugins: Vec<PluginHealth>,
}

/// A plugin as `/health` shows it: no paths, errors or counters, since
/// health is public.
#[derive(Serialize, ToSchema)]
pub struct PluginHealth {
    id: String,
    world: &'static str,
    /// `ready`, or `failed` (did not load; why: `/api/gateway/plugins`).
    state: &'static str,
}

/// The whole gateway's health, naming each dependency.
#[utoipa::path(
    get,
    path = "/health",
    tag = "gateway",
    responses(
        (status = 200, description = "Every dependency is healthy", body = Health),
        (status = 503, description = "A dependency is unhealthy", body = Health),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let mut dependencies = serde_json::Map::new();
    let database = state.health.database(&state.db).await;
    dependencies.insert("database".into(), state_word(database).into());
    let mut plugins_ok = true;
    let mut plugins = Vec::new();
    for entry in state.plugins.entries() {
        let ready = matches!(entry, crate::plugins::Entry::Ready(_));
        plugins_ok &= ready;
        dependencies.insert(
            format!("plugin:{}", entry.config().id),
            state_word(ready).into(),
        );
        plugins.push(PluginHealth {
            id: entry.config().id.clone(),
            world: entry.config().world.name(),
            state: if ready { "ready" } else { "failed" },
        });
    }
    let (status, word) = match (database, plugins_ok) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        (true, false) => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "healthy"),
    };
    (
        status,
        Json(Health {
            status: word,
            version: env!("CARGO_PKG_VERSION"),
            dependencies,
            plugins,
        }),
    )
}

/// The database probe behind `/health`, run at most once a second however
/// often health is asked (health is unauthenticated and never rate limited).
#[derive(Default)]
pub struct HealthProbe {
    last: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl HealthProbe {
    pub async fn database(&self, db: &crate::store::Db) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return ok;
        }
        let ok = match tokio::time::timeout(std::time::Duration::from_secs(2), db.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "database health check failed");
                false
            }
            Err(_) => {
                tracing::warn!("database health check timed out");
                false
            }
        };
        *last = Some((std::time::Instant::now(), ok));
        ok
    }
}

fn state_word(ok: bool) -> &'static str {
    if ok { "healthy" } else { "unhealthy" }
}

/// Prometheus metrics: requests by route and status, latency histogram,
/// database pool.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "gateway",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (size, idle) = state.db.pool_stats();
    metrics::gauge!("db_pool_connections").set(f64::from(size));
    metrics::gauge!("db_pool_idle_connections").set(idle as f64);
    metrics::gauge!("rate_limit_windows").set(state.limiter.len() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
