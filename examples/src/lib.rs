//! Shared plumbing of the bundled binaries: logging, the Kubernetes client, the compiled-in providers, and the
//! `/healthz`, `/readyz`, `/metrics` endpoints; plus the cloud-controller-manager itself ([`ccm`]), kept in the
//! library so its flag handling is unit-tested.

pub mod ccm;
pub mod client;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Logs text lines to stderr; `RUST_LOG` overrides the default filter (`info`, kube's internals at `warn`).
pub fn init_tracing() {
    init_logging(false);
}

/// Logs to stderr as text lines or, with `json`, one JSON object per line (fields and span context included).
/// `RUST_LOG` overrides the default filter (`info`, kube's internals at `warn`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // `kube=warn` would also match `kube_cloud_examples` (directives are target prefixes): keep ours at info.
        .unwrap_or_else(|_| "info,kube=warn,kube_cloud_examples=info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

/// The providers compiled into this binary (cargo features `fake`, `aws`), by name.
pub fn provider_registry() -> anyhow::Result<cloudprovider_api::ProviderRegistry> {
    #[allow(unused_mut)]
    let mut registry = cloudprovider_api::ProviderRegistry::new();
    #[cfg(feature = "fake")]
    provider_fake::register(&mut registry)?;
    #[cfg(feature = "aws")]
    provider_aws::register(&mut registry)?;
    Ok(registry)
}

/// A client from `kubeconfig`, or the usual lookup (`$KUBECONFIG`, `~/.kube/config`, in-cluster) when `None`.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// A named check behind `/healthz` or `/readyz`: `Err(reason)` makes the endpoint answer 500.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the HTTP endpoints serve.
#[derive(Clone)]
pub struct Endpoints {
    /// Metrics served at `/metrics` (OpenMetrics text).
    pub registry: Arc<Registry>,
    /// Checks of `/healthz` (liveness).
    pub healthz: Vec<(&'static str, Check)>,
    /// Checks of `/readyz` (readiness); `/healthz`'s checks apply too.
    pub readyz: Vec<(&'static str, Check)>,
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until the process ends. Binds before returning, so a
/// busy port is a startup error.
pub async fn serve(
    addr: SocketAddr,
    endpoints: Endpoints,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
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

/// A default candidate identity: `<hostname>_<pid>`, like client-go users commonly build.
pub fn default_identity() -> String {
    format!(
        "{}_{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
