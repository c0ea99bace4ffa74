//! The node-pool controller: on-demand nodes from the provider's node groups, driven by `NodePool` objects.
//!
//! ```text
//! node-pool-controller --print-crd > nodepool-crd.yaml          # the CRD, to kubectl apply
//! node-pool-controller --kubeconfig DIR/kubeconfig --install-crd \
//!     --cloud-provider fake --cloud-config fake.yaml --run-cloud-node --secure-port 10270
//! ```
//!
//! With the fake provider, node groups come from `--cloud-config` (`nodeGroups: [{id: workers, maxSize: 10,
//! template: {cpu: "2", memory: 4Gi}}]`). Something must register the Nodes of launched instances (a kubelet on
//! a real machine; `test_support::NodeJoiner` with kwok locally). Run one replica: this binary does not take part
//! in leader election.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use controller_core::cloud_node::{self, CloudNodeConfig, CloudNodeMetrics};
use controller_core::node_pool::{self, NodePool, NodePoolConfig, NodePoolMetrics};
use controller_core::runtime::{EventPublisher, NodeCache, RuntimeMetrics, Shutdown};
use controller_core::{ControllerContext, NodeSource};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{CustomResourceExt, ResourceExt};
use kube_cloud_examples::{Endpoints, init_tracing, kube_client, serve, shutdown_signal};
use prometheus_client::registry::Registry;

#[derive(Parser, Debug)]
#[command(about = "Launch cloud nodes for unschedulable pods and remove idle ones (NodePool CRD)")]
struct Args {
    /// Print the NodePool CustomResourceDefinition as YAML and exit.
    #[arg(long)]
    print_crd: bool,
    /// Create or update the NodePool CRD (server-side apply) before starting.
    #[arg(long)]
    install_crd: bool,
    /// Path to a kubeconfig file (default: the usual kubeconfig lookup or in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The cloud provider (compiled in by cargo feature).
    #[arg(long = "cloud-provider", default_value = "fake")]
    cloud_provider: String,
    /// The provider's configuration file.
    #[arg(long = "cloud-config")]
    cloud_config: Option<PathBuf>,
    /// Also run the cloud-node controller (for clusters without a cloud-controller-manager).
    #[arg(long)]
    run_cloud_node: bool,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    bind_address: std::net::IpAddr,
    /// Port for /healthz, /readyz and /metrics; 0 picks a free port, omit to serve nothing.
    #[arg(long = "secure-port")]
    port: Option<u16>,
}

fn crd_yaml() -> anyhow::Result<String> {
    serde_yaml_ng::to_string(&NodePool::crd()).context("serializing the CRD")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_crd {
        print!("{}", crd_yaml()?);
        return Ok(());
    }
    init_tracing();
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    if args.install_crd {
        let crd = NodePool::crd();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply(node_pool::CONTROLLER_NAME).force(),
            &Patch::Apply(&crd),
        )
        .await
        .context("installing the NodePool CRD")?;
    }

    let providers = kube_cloud_examples::provider_registry()?;
    let provider = providers
        .build(&args.cloud_provider, args.cloud_config.as_deref())
        .await
        .with_context(|| format!("--cloud-provider {}", args.cloud_provider))?
        .context("--cloud-provider: a provider is required")?;
    anyhow::ensure!(
        provider.node_groups().is_some(),
        "--cloud-provider {}: the provider does not support node groups",
        args.cloud_provider
    );

    let mut registry = Registry::default();
    let runtime_metrics = RuntimeMetrics::register(&mut registry);
    let pool_metrics = NodePoolMetrics::register(&mut registry);
    let cloud_node_metrics = CloudNodeMetrics::register(&mut registry);
    let events = EventPublisher::new(client.clone(), node_pool::CONTROLLER_NAME, None);
    events.register_metrics(&mut registry);
    if let Some(port) = args.port {
        let endpoints = Endpoints {
            registry: Arc::new(registry),
            healthz: Vec::new(),
            readyz: Vec::new(),
        };
        serve(SocketAddr::new(args.bind_address, port), endpoints).await?;
    }

    let ctx = ControllerContext {
        client: client.clone(),
        provider,
        cluster_name: "kubernetes".into(),
        events,
        metrics: runtime_metrics,
    };
    let cache = NodeCache::new(client);
    let source = || NodeSource {
        store: cache.store(),
        changes: cache.changes(),
        generation: cache.generation(),
    };
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let config = NodePoolConfig {
        metrics: pool_metrics,
        ..NodePoolConfig::default()
    };
    tasks.spawn(node_pool::run(
        ctx.clone(),
        source(),
        config,
        shutdown.clone(),
    ));
    if args.run_cloud_node {
        let config = CloudNodeConfig {
            metrics: cloud_node_metrics,
            ..CloudNodeConfig::default()
        };
        tasks.spawn(cloud_node::run(ctx, source(), config, shutdown.clone()));
    }
    let watch = tokio::spawn(cache.run());
    shutdown_signal().await;
    trigger.trigger();
    while tasks.join_next().await.is_some() {}
    watch.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_crd_is_the_node_pool_crd() {
        let yaml = crd_yaml().unwrap_or_else(|e| panic!("{e}"));
        let crd: CustomResourceDefinition =
            serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(crd.name_any(), "nodepools.kube-cloud-rs.dev");
        assert_eq!(crd.spec.scope, "Cluster");
    }
}
