//! `/healthz`, `/readyz` and `/metrics`: over HTTPS with delegated authentication and authorization
//! ([`serve_secure`], what the app serves on `--secure-port`), or plain HTTP ([`serve`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio_rustls::TlsAcceptor;
use tower::Service;

use super::AppError;
use super::authn::{Authenticator, AuthnError};
use super::authz::{Authorizer, Decision, always_allowed, verb};

/// A named check behind `/healthz` or `/readyz`: `Err(reason)` makes the endpoint answer 500.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the HTTP endpoints serve.
#[derive(Clone)]
#[non_exhaustive]
pub struct Endpoints {
    /// Metrics served at `/metrics` (OpenMetrics text).
    pub registry: Arc<Registry>,
    /// Checks of `/healthz` and `/livez` (liveness).
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

/// Serves `/healthz`, `/readyz` and `/metrics` over plain HTTP, without authentication, on `addr` until the
/// process ends (for tools and test binaries; the app serves [`serve_secure`]). Binds before returning, so a busy
/// port is a startup error.
pub async fn serve(
    addr: SocketAddr,
    endpoints: Endpoints,
) -> Result<tokio::task::JoinHandle<()>, AppError> {
    let listener = bind(addr).await?;
    let app = router(endpoints);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AppError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Serve {
            context: format!("binding {addr} (--secure-port / --bind-address)"),
            source,
        })
}

fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(endpoints))
}

/// How the secure port authenticates and authorizes (upstream's delegated authn/authz).
#[derive(Debug)]
#[non_exhaustive]
pub struct Delegation {
    /// Bearer tokens (TokenReview) and client certificates.
    pub authenticator: Authenticator,
    /// SubjectAccessReviews.
    pub authorizer: Authorizer,
    /// Paths served to anyone, without authentication (`--authorization-always-allow-paths`).
    pub always_allow_paths: Vec<String>,
}

impl Delegation {
    /// Delegation to these reviewers, with `always_allow_paths` open to anyone.
    pub fn new(
        authenticator: Authenticator,
        authorizer: Authorizer,
        always_allow_paths: Vec<String>,
    ) -> Self {
        Self {
            authenticator,
            authorizer,
            always_allow_paths,
        }
    }
}

/// The leaf certificate (DER) a client presented and the TLS layer verified against `--client-ca-file`.
#[derive(Clone, Debug)]
struct PeerCertificate(Option<Arc<[u8]>>);

/// Serves `/healthz`, `/readyz` and `/metrics` over HTTPS with `tls` on `addr` until the process ends, each
/// request authenticated and authorized by `delegation` (no credentials: 401; not allowed: 403). Binds before
/// returning, so a busy port is a startup error.
pub async fn serve_secure(
    addr: SocketAddr,
    endpoints: Endpoints,
    tls: Arc<rustls::ServerConfig>,
    delegation: Arc<Delegation>,
) -> Result<tokio::task::JoinHandle<()>, AppError> {
    let listener = bind(addr).await?;
    let app = router(endpoints).layer(axum::middleware::from_fn_with_state(
        delegation,
        authenticate_and_authorize,
    ));
    let acceptor = TlsAcceptor::from(tls);
    Ok(tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let peer = PeerCertificate(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|c| Arc::from(c.as_ref())),
                );
                let service =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        let mut app = app.clone();
                        async move { app.call(req.map(axum::body::Body::new)).await }
                    });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%remote, error = %e, "HTTPS connection");
                }
            });
        }
    }))
}

async fn authenticate_and_authorize(
    State(delegation): State<Arc<Delegation>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if always_allowed(&delegation.always_allow_paths, &path) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|p| p.0.clone());
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match delegation
        .authenticator
        .authenticate(peer.as_deref(), authorization)
        .await
    {
        Ok(user) => user,
        Err(e) => {
            if let AuthnError::Review(e) = &e {
                tracing::warn!(error = %e, "authentication failed");
            }
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
    };
    let verb = verb(request.method());
    match delegation.authorizer.authorize(&user, &verb, &path).await {
        Ok(Decision::Allow) => next.run(request).await,
        Ok(Decision::Deny(reason)) => {
            tracing::debug!(user = %user.name, %path, %reason, "forbidden");
            (
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: User {:?} cannot {verb} path {path:?}",
                    user.name
                ),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "authorization failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "authorization error").into_response()
        }
    }
}

/// Upstream's health answer: `ok` when every check passes (or, with `?verbose`, one `[+]name ok` line per check
/// and `<endpoint> check passed`); otherwise 500 with every check as `[+]name ok` / `[-]name failed: reason` and
/// `<endpoint> check failed`.
fn run_checks<'a>(
    endpoint: &str,
    checks: impl Iterator<Item = &'a (&'static str, Check)>,
    verbose: bool,
) -> (StatusCode, String) {
    let mut lines = vec!["[+]ping ok".to_owned()];
    let mut failed = false;
    for (name, check) in checks {
        match check() {
            Ok(()) => lines.push(format!("[+]{name} ok")),
            Err(why) => {
                failed = true;
                lines.push(format!("[-]{name} failed: {why}"));
            }
        }
    }
    if failed {
        lines.push(format!("{endpoint} check failed"));
        (StatusCode::INTERNAL_SERVER_ERROR, lines.join("\n"))
    } else if verbose {
        lines.push(format!("{endpoint} check passed"));
        (StatusCode::OK, lines.join("\n"))
    } else {
        (StatusCode::OK, "ok".into())
    }
}

fn is_verbose(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "verbose" || kv.starts_with("verbose="))
    })
}

async fn healthz(State(e): State<Arc<Endpoints>>, RawQuery(q): RawQuery) -> (StatusCode, String) {
    run_checks("healthz", e.healthz.iter(), is_verbose(q.as_deref()))
}

async fn livez(State(e): State<Arc<Endpoints>>, RawQuery(q): RawQuery) -> (StatusCode, String) {
    run_checks("livez", e.healthz.iter(), is_verbose(q.as_deref()))
}

async fn readyz(State(e): State<Arc<Endpoints>>, RawQuery(q): RawQuery) -> (StatusCode, String) {
    run_checks(
        "readyz",
        e.healthz.iter().chain(e.readyz.iter()),
        is_verbose(q.as_deref()),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Vec<(&'static str, Check)> {
        vec![
            ("leaderElection", Arc::new(|| Ok(()))),
            (
                "informer-sync",
                Arc::new(|| Err("caches not synced: nodes".to_owned())),
            ),
        ]
    }

    #[test]
    fn health_answers_as_upstream() {
        let all_ok: Vec<(&'static str, Check)> = vec![("leaderElection", Arc::new(|| Ok(())))];
        assert_eq!(
            run_checks("readyz", all_ok.iter(), false),
            (StatusCode::OK, "ok".to_owned())
        );
        let (code, body) = run_checks("readyz", all_ok.iter(), true);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            body,
            "[+]ping ok\n[+]leaderElection ok\nreadyz check passed"
        );
        // A failure lists every check, verbose or not.
        let failing = checks();
        let (code, body) = run_checks("readyz", failing.iter(), false);
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            "[+]ping ok\n[+]leaderElection ok\n[-]informer-sync failed: caches not synced: nodes\nreadyz check failed"
        );
        assert!(is_verbose(Some("verbose")) && is_verbose(Some("x=1&verbose=true")));
        assert!(!is_verbose(Some("verbosity=2")) && !is_verbose(None));
    }
}
