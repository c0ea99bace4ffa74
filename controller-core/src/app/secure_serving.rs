//! The secure port's flags and set-up, for every binary that serves (upstream's `SecureServingOptions`,
//! `DelegatingAuthenticationOptions` and `DelegatingAuthorizationOptions`, same names and defaults): HTTPS on
//! `--secure-port` with the certificate of `--tls-cert-file` or a self-signed one in `--cert-dir`, bearer tokens
//! checked with TokenReviews, client certificates against `--client-ca-file`, requests authorized with
//! SubjectAccessReviews, `--authorization-always-allow-paths` open to anyone.
//!
//! Flatten [`SecureServingOptions`] into a binary's clap arguments, call [`prepare`](SecureServingOptions::prepare)
//! before connecting anywhere (a bad certificate is a startup error naming the flag), then
//! [`Prepared::serve`] with the binary's client and endpoints.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::AppError;
use super::authn::Authenticator;
use super::authz::Authorizer;
use super::client::kube_config;
use super::serving::{Delegation, Endpoints, serve_secure};
use super::tls::{CertPaths, ReloadingCert, cert_paths, server_config};

/// The secure port's flags.
#[derive(Args, Clone, Debug)]
#[non_exhaustive]
pub struct SecureServingOptions {
    /// HTTPS port of `/healthz`, `/readyz` and `/metrics`; 0 serves nothing (default: the component's: 10258 for
    /// the cloud-controller-manager, 10270 for node-pool-controller, 10271 for virtual-node).
    #[arg(long = "secure-port")]
    pub secure_port: Option<u16>,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long = "bind-address", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The serving certificate (PEM, leaf first, then intermediates); re-read when it changes on disk. Without it
    /// (and `--tls-private-key-file`), a self-signed certificate is generated in `--cert-dir`.
    #[arg(long = "tls-cert-file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `--tls-cert-file` (PEM).
    #[arg(long = "tls-private-key-file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Where the self-signed certificate is kept (`<component>.crt`, `<component>.key`; reused while readable),
    /// ignored when `--tls-cert-file` and `--tls-private-key-file` are given (default:
    /// `<temp dir>/kube-cloud-rs/<component>`; upstream's cloud-controller-manager defaults to none and keeps its
    /// self-signed certificate in memory).
    #[arg(long = "cert-dir")]
    pub cert_dir: Option<PathBuf>,
    /// A CA bundle (PEM): a client certificate signed by it authenticates as its CN, in the groups of its Os.
    #[arg(long = "client-ca-file")]
    pub client_ca_file: Option<PathBuf>,
    /// Kubeconfig of the TokenReviews that authenticate bearer tokens (default: the app's own client).
    #[arg(long = "authentication-kubeconfig")]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// How long a TokenReview's answer is cached.
    #[arg(long = "authentication-token-webhook-cache-ttl", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// Kubeconfig of the SubjectAccessReviews that authorize requests (default: the app's own client).
    #[arg(long = "authorization-kubeconfig")]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// Paths served without authentication or authorization (`/prefix*` matches a prefix).
    #[arg(
        long = "authorization-always-allow-paths",
        value_delimiter = ',',
        default_value = "/healthz,/readyz,/livez"
    )]
    pub authorization_always_allow_paths: Vec<String>,
    /// How long an allowing SubjectAccessReview is cached.
    #[arg(long = "authorization-webhook-cache-authorized-ttl", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denying SubjectAccessReview is cached.
    #[arg(long = "authorization-webhook-cache-unauthorized-ttl", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
}

/// The secure port, checked and ready to serve once the binary has a client: its address and TLS configuration.
#[derive(Debug)]
pub struct Prepared {
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
}

impl SecureServingOptions {
    /// The serving certificate's files: `--tls-cert-file`/`--tls-private-key-file`, or the self-signed pair of
    /// `--cert-dir` (generated and written there when missing or due for renewal).
    pub fn serving_cert_paths(&self, component: &str) -> Result<CertPaths, AppError> {
        let default_dir;
        let cert_dir = match &self.cert_dir {
            Some(dir) => dir.as_path(),
            None => {
                default_dir = std::env::temp_dir().join("kube-cloud-rs").join(component);
                default_dir.as_path()
            }
        };
        cert_paths(
            self.tls_cert_file.as_deref(),
            self.tls_private_key_file.as_deref(),
            cert_dir,
            component,
        )
    }

    /// Checks the certificate and client CA of the secure port, `--secure-port` or else `default_port`; `None` when
    /// the port is 0 (nothing is served).
    pub fn prepare(
        &self,
        component: &str,
        default_port: u16,
    ) -> Result<Option<Prepared>, AppError> {
        let port = self.secure_port.unwrap_or(default_port);
        if port == 0 {
            return Ok(None);
        }
        let paths = self.serving_cert_paths(component)?;
        let flags = if self.tls_cert_file.is_some() {
            "--tls-cert-file/--tls-private-key-file"
        } else {
            "--cert-dir"
        };
        let cert = Arc::new(ReloadingCert::new(paths, flags)?);
        let tls = server_config(cert, self.client_ca_file.as_deref()).map(Arc::new)?;
        Ok(Some(Prepared {
            addr: SocketAddr::new(self.bind_address, port),
            tls,
        }))
    }

    /// Delegated authentication and authorization with `--authentication-kubeconfig`/`--authorization-kubeconfig`,
    /// or `client`.
    pub async fn delegation(&self, client: &kube::Client) -> Result<Delegation, AppError> {
        let authn = client_of(
            self.authentication_kubeconfig.as_deref(),
            "--authentication-kubeconfig",
            client,
        )
        .await?;
        let authz = client_of(
            self.authorization_kubeconfig.as_deref(),
            "--authorization-kubeconfig",
            client,
        )
        .await?;
        Ok(Delegation::new(
            Authenticator::new(authn, self.authentication_token_webhook_cache_ttl),
            Authorizer::new(
                authz,
                self.authorization_webhook_cache_authorized_ttl,
                self.authorization_webhook_cache_unauthorized_ttl,
            ),
            self.authorization_always_allow_paths.clone(),
        ))
    }
}

impl Prepared {
    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `endpoints` over HTTPS, authenticating and authorizing with `client` (or the kubeconfigs of the
    /// flags) until the process ends. Returns once listening.
    pub async fn serve(
        self,
        options: &SecureServingOptions,
        client: &kube::Client,
        endpoints: Endpoints,
    ) -> Result<SocketAddr, AppError> {
        let delegation = options.delegation(client).await?;
        serve_secure(self.addr, endpoints, self.tls, Arc::new(delegation)).await?;
        Ok(self.addr)
    }
}

async fn client_of(
    path: Option<&Path>,
    flag: &'static str,
    default: &kube::Client,
) -> Result<kube::Client, AppError> {
    let Some(path) = path else {
        return Ok(default.clone());
    };
    let config = kube_config(Some(path), None)
        .await
        .map_err(|e| AppError::flag(flag, e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| AppError::flag(flag, e.to_string()))
}
