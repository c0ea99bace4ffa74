//! `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::AppError;

/// A named check behind `/healthz` or `/readyz`: `Err(reason)` makes the endpoint answer 500.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the HTTP endpoints serve.
#[derive(Clone)]
#[non_exhaustive]
pub struct Endpoints {
    /// Metrics served at `/metrics` (OpenMetrics text).
    pub registry: Arc<Registry>,
    /// Checks of `/healthz` (liveness).
    pub healthz: Vec<(&'static str, Check)>,
    /// Checks of `/readyz` (readiness); `/healthz`'s checks apply too.
    pub readyz: Vec<(&'static str, Check)>,
}

impl Endpoints {
    /// Serves `registry` at `/metrics`, with no checks yet.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            healthz: Vec::new(),
            readyz: Vec::new(),
        }
    }

    /// Adds a liveness check (also part of readiness).
    pub fn healthz(mut self, name: &'static str, check: Check) -> Self {
        self.healthz.push((name, check));
        self
    }

    /// Adds a readiness check.
    pub fn readyz(mut self, name: &'static str, check: Check) -> Self {
        self.readyz.push((name, check));
        self
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field(
                "healthz",
                &self.healthz.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .field(
                "readyz",
                &self.readyz.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until the process ends. Binds before returning, so a
/// busy port is a startup error.
pub async fn serve(
    addr: SocketAddr,
    endpoints: Endpoints,
) -> Result<tokio::task::JoinHandle<()>, AppError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Serve {
            context: format!("binding {addr} (--secure-port / --bind-address)"),
            source,
        })?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(endpoints));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }))
}

fn run_checks<'a>(checks: impl Iterator<Item = &'a (&'static str, Check)>) -> (StatusCode, String) {
    let mut failed = Vec::new();
    for (name, check) in checks {
        if let Err(why) = check() {
            failed.push(format!("[-]{name} failed: {why}"));
        }
    }
    if failed.is_empty() {
        (StatusCode::OK, "ok".into())
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, failed.join("\n"))
    }
}

async fn healthz(State(e): State<Arc<Endpoints>>) -> (StatusCode, String) {
    run_checks(e.healthz.iter())
}

async fn readyz(State(e): State<Arc<Endpoints>>) -> (StatusCode, String) {
    run_checks(e.healthz.iter().chain(e.readyz.iter()))
}

async fn metrics(
    State(e): State<Arc<Endpoints>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &e.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            err.to_string(),
        ),
    }
}
