//! A virtual node (virtual-kubelet style): a Node whose pods run in a provider instead of on a kubelet.
//!
//! ```text
//! virtual-node --kubeconfig DIR/kubeconfig --cloud-provider fake --cloud-config fake.yaml --nodename vk-1 \
//!     --node-labels team=a --register-with-taints dedicated=vk:NoSchedule --metrics-addr 127.0.0.1:10255
//! ```
//!
//! `--provider` is the deprecated (hidden) old name of `--cloud-provider`. Registering the Node is retried with
//! backoff for `--register-timeout` (default 2m); then the process exits 1, so a supervisor sees the failure.
//! SIGTERM ends it at once in every state.
//!
//! Pods need a toleration of `virtual-kubelet.io/provider=<provider>:NoSchedule` (unless `--disable-taint`) and
//! usually a nodeSelector (`type: virtual-kubelet`). SIGTERM/Ctrl-C stops it; the Node stays and its Lease expires.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use cloudprovider_api::{ProviderRegistry, VirtualNodeProvider};
use controller_core::app::{
    Endpoints, SecureServingOptions, check_duration, init_tracing, kube_config, serve,
    shutdown_signal,
};
use controller_core::heartbeat::{Heartbeat, HeartbeatConfig, HeartbeatMetrics};
use controller_core::runtime::{CancellationToken, EventPublisher, RuntimeMetrics};
use controller_core::virtual_node::{VirtualNode, VirtualNodeConfig};
use k8s_openapi::api::core::v1::Taint;
use prometheus_client::registry::Registry;

/// The default `--secure-port` of `/healthz`, `/readyz` and `/metrics` (beside node-pool-controller's 10270).
const DEFAULT_SECURE_PORT: u16 = 10271;

/// The longest `--node-lease-duration-seconds`: one day (the heartbeat's bound).
const MAX_LEASE_SECONDS: u64 = 24 * 60 * 60;

#[derive(Parser, Debug)]
#[command(about = "A virtual node: pods bound to it run in a provider")]
struct Args {
    /// Path to a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The provider (compiled in by cargo feature): `fake`. `--provider` is its deprecated old name.
    #[arg(long = "cloud-provider", alias = "provider", default_value = "fake")]
    cloud_provider: String,
    /// Path to the provider's configuration file (YAML or JSON), as for the cloud-controller-manager.
    #[arg(long = "cloud-config")]
    cloud_config: Option<PathBuf>,
    /// How long registering the Node is retried before the process exits 1.
    #[arg(long = "register-timeout", default_value = "2m", value_parser = humantime::parse_duration)]
    register_timeout: Duration,
    /// The Node's name.
    #[arg(long, env = "DEFAULT_NODE_NAME", default_value = "virtual-kubelet")]
    nodename: String,
    /// Extra node labels, `key=value,...` (the kubelet's flag).
    #[arg(long = "node-labels", value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Extra taints, `key=value:Effect,...` (the kubelet's flag).
    #[arg(long = "register-with-taints", value_delimiter = ',')]
    taints: Vec<String>,
    /// Do not add the `virtual-kubelet.io/provider` taint.
    #[arg(long = "disable-taint")]
    disable_taint: bool,
    /// Pods reconciled at once.
    #[arg(long = "pod-sync-workers", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..))]
    pod_sync_workers: u16,
    /// `leaseDurationSeconds` of the node Lease (renewed every quarter of it).
    #[arg(long = "node-lease-duration-seconds", default_value_t = 40,
          value_parser = clap::value_parser!(u64).range(1..=MAX_LEASE_SECONDS))]
    lease_seconds: u64,
    /// Post node status at least this often.
    #[arg(long = "node-status-report-frequency", default_value = "5m", value_parser = humantime::parse_duration)]
    status_report_frequency: Duration,
    /// Plain-HTTP address for /healthz, /readyz and /metrics, without authentication (virtual-kubelet's flag;
    /// omit to serve nothing). Prefer the secure port.
    #[arg(long = "metrics-addr")]
    metrics_addr: Option<SocketAddr>,
    /// HTTPS with delegated authentication and authorization, as the cloud-controller-manager's: `--secure-port`
    /// (default 10271, `0` = off), `--tls-cert-file`, `--cert-dir`, `--client-ca-file`, …
    #[command(flatten)]
    serving: SecureServingOptions,
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--node-labels: {item:?} is not key=value"),
        })
        .collect()
}

fn parse_taints(items: &[String]) -> anyhow::Result<Vec<Taint>> {
    items
        .iter()
        .map(|item| {
            let (key_value, effect) = item
                .rsplit_once(':')
                .with_context(|| format!("--register-with-taints: {item:?} is not key[=value]:Effect"))?;
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                bail!("--register-with-taints: {item:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute");
            }
            let (key, value) = match key_value.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (key_value, None),
            };
            if key.is_empty() {
                bail!("--register-with-taints: {item:?} has an empty key");
            }
            Ok(Taint {
                key: key.to_owned(),
                value,
                effect: effect.to_owned(),
                time_added: None,
            })
        })
        .collect()
}

/// The virtual-node provider `name`, built from `config` through the provider registry (so the config is checked
/// exactly as the cloud-controller-manager checks it).
async fn provider(
    name: &str,
    config: Option<&Path>,
    node: &str,
) -> anyhow::Result<Arc<dyn VirtualNodeProvider>> {
    match name {
        #[cfg(feature = "fake")]
        "fake" => {
            let built = Arc::new(Mutex::new(None));
            let slot = Arc::clone(&built);
            let mut registry = ProviderRegistry::new();
            provider_fake::register_with(&mut registry, move |cloud| {
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(cloud);
                }
            })?;
            registry.build(name, config).await?;
            let cloud = built.lock().ok().and_then(|mut c| c.take());
            let cloud = cloud.context("--cloud-provider: the fake provider was not built")?;
            Ok(Arc::new(cloud.virtual_node(node)))
        }
        other => bail!(
            "--cloud-provider: {other:?} is not compiled in (available: fake with the `fake` feature)"
        ),
    }
}

fn main() -> ExitCode {
    init_tracing();
    let args = Args::parse();
    kube_cloud_examples::run_main(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_duration(
        "--node-status-report-frequency",
        args.status_report_frequency,
        Duration::from_nanos(1),
    )?;
    check_duration("--register-timeout", args.register_timeout, Duration::ZERO)?;
    let mut config = VirtualNodeConfig::new(&args.nodename, &args.cloud_provider);
    config.labels = parse_labels(&args.node_labels)?;
    config.taints = parse_taints(&args.taints)?;
    config.disable_taint = args.disable_taint;
    config.workers = args.pod_sync_workers;
    config.register_timeout = args.register_timeout;
    // The serving certificate and client CA are checked before anything connects.
    let secure = args.serving.prepare("virtual-node", DEFAULT_SECURE_PORT)?;
    let provider = provider(
        &args.cloud_provider,
        args.cloud_config.as_deref(),
        &args.nodename,
    )
    .await?;

    // From here on SIGTERM stops everything at once, whatever the API server does.
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    let client_config = kube_config(args.kubeconfig.as_deref(), None).await?;
    let client = kube::Client::try_from(client_config).context("building the Kubernetes client")?;
    let mut registry = Registry::default();
    let heartbeat_metrics = HeartbeatMetrics::register(&mut registry);
    let runtime_metrics = RuntimeMetrics::register(&mut registry);
    let mut heartbeat_config = HeartbeatConfig::default();
    heartbeat_config.lease_duration = Duration::from_secs(args.lease_seconds);
    heartbeat_config.status_report_frequency = args.status_report_frequency;
    let heartbeat = Heartbeat::start_with_metrics(
        client.clone(),
        heartbeat_config,
        heartbeat_metrics,
        shutdown.clone(),
    )?;
    let events = EventPublisher::new(
        client.clone(),
        "virtual-kubelet",
        Some(args.nodename.clone()),
    );
    events.register_metrics(&mut registry);
    let endpoints = Endpoints::new(registry);
    if let Some(addr) = args.metrics_addr {
        serve(addr, endpoints.clone()).await?;
    }
    if let Some(secure) = secure {
        let addr = secure.serve(&args.serving, &client, endpoints).await?;
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics over HTTPS");
    }
    let node = VirtualNode::new(
        client.clone(),
        config,
        provider,
        heartbeat,
        events,
        runtime_metrics,
    );
    // Returns on SIGTERM (Ok) or when the node cannot start (its error: exit 1).
    node.run(shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bad_values_name_the_flag() {
        let labels = parse_labels(&["a=b".into(), "c=".into()]).unwrap_or_default();
        assert_eq!(labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(labels.get("c").map(String::as_str), Some(""));
        let err = parse_labels(&["nolabel".into()])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--node-labels")));
        let taints =
            parse_taints(&["k=v:NoExecute".into(), "only:NoSchedule".into()]).unwrap_or_default();
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[1].value, None);
        let err = parse_taints(&["k=v:Sometimes".into()])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--register-with-taints")));
    }
}
