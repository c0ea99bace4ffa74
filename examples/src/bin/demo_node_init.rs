//! The first demo: Nodes registered with the `node.cloudprovider.kubernetes.io/uninitialized` taint are initialized
//! from provider-fake's instance metadata (provider ID, instance type, zone, region, addresses) and the taint is
//! removed. A deliberately small loop; the production cloud-node controller lives in `controller-core`.
//!
//! ```text
//! demo-node-init --kubeconfig DIR/kubeconfig --create-nodes 3
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use cloudprovider_api::{CloudProvider, ProviderRegistry};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_cloud_examples::{init_tracing, kube_client};

const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";
const FIELD_MANAGER: &str = "demo-node-init";

#[derive(Parser, Debug)]
#[command(about = "Initialize tainted Nodes from provider-fake and print them")]
struct Args {
    /// Path to a kubeconfig file (default: the usual kubeconfig lookup or in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Create this many tainted Nodes (demo-node-1..N) before initializing.
    #[arg(long, default_value_t = 0)]
    create_nodes: usize,
    /// Exit once every Node is initialized (instead of watching until Ctrl-C).
    #[arg(long)]
    exit_when_done: bool,
    /// Give up after this many seconds with `--exit-when-done`.
    #[arg(long, default_value_t = 60)]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    let client = kube_client(args.kubeconfig.as_deref()).await?;

    let mut registry = ProviderRegistry::new();
    provider_fake::register(&mut registry)?;
    // Every node name asked about gets a running fake instance, so Nodes can be created first.
    let provider = registry
        .build_from_str("fake", Some("autoCreateInstances: true"))
        .await?
        .context("the fake provider was not built")?;

    let nodes: Api<Node> = Api::all(client);
    for i in 1..=args.create_nodes {
        create_tainted_node(&nodes, &format!("demo-node-{i}")).await?;
    }

    let init = initialize_loop(nodes.clone(), Arc::clone(&provider));
    if args.exit_when_done {
        let deadline = Duration::from_secs(args.timeout_seconds);
        tokio::select! {
            r = init => r?,
            r = tokio::time::timeout(deadline, wait_all_initialized(&nodes)) => {
                r.context("timed out waiting for nodes to be initialized")??;
            }
        }
        print_nodes(&nodes).await?;
    } else {
        tokio::select! {
            r = init => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    Ok(())
}

async fn create_tainted_node(nodes: &Api<Node>, name: &str) -> anyhow::Result<()> {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![Taint {
                key: UNINITIALIZED_TAINT.into(),
                value: Some("true".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => println!("created Node {name} with taint {UNINITIALIZED_TAINT}"),
        Err(kube::Error::Api(e)) if e.code == 409 => println!("Node {name} already exists"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn is_uninitialized(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNINITIALIZED_TAINT))
}

async fn initialize_loop(nodes: Api<Node>, provider: Arc<dyn CloudProvider>) -> anyhow::Result<()> {
    let stream = watcher(nodes.clone(), watcher::Config::default()).applied_objects();
    futures::pin_mut!(stream);
    while let Some(node) = stream.try_next().await? {
        if is_uninitialized(&node)
            && let Err(e) = initialize(&nodes, provider.as_ref(), &node).await
            // A conflict means the Node changed since we saw it: the watcher delivers the new version.
            && !is_conflict(&e)
        {
            eprintln!(
                "initializing {}: {e:#}",
                node.metadata.name.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn is_conflict(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 409)
}

async fn initialize(
    nodes: &Api<Node>,
    provider: &dyn CloudProvider,
    node: &Node,
) -> anyhow::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let Some(instances) = provider.instances() else {
        bail!(
            "provider {} has no instances capability",
            provider.provider_name()
        );
    };
    let md = instances.instance_metadata(node).await?;

    let mut labels = BTreeMap::new();
    for (key, beta, value) in [
        (
            "node.kubernetes.io/instance-type",
            "beta.kubernetes.io/instance-type",
            &md.instance_type,
        ),
        (
            "topology.kubernetes.io/zone",
            "failure-domain.beta.kubernetes.io/zone",
            &md.zone,
        ),
        (
            "topology.kubernetes.io/region",
            "failure-domain.beta.kubernetes.io/region",
            &md.region,
        ),
    ] {
        if !value.is_empty() {
            labels.insert(key.to_owned(), value.clone());
            labels.insert(beta.to_owned(), value.clone());
        }
    }
    let taints: Vec<&Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().filter(|t| t.key != UNINITIALIZED_TAINT).collect())
        .unwrap_or_default();
    let has_provider_id = cloudprovider_api::node_provider_id(node).is_some();
    let mut spec = serde_json::json!({ "taints": taints });
    if !has_provider_id {
        spec["providerID"] = md.provider_id.clone().into();
    }
    let addresses: Vec<_> = md.node_addresses.iter().map(|a| a.to_k8s()).collect();
    let params = PatchParams::apply(FIELD_MANAGER);
    nodes
        .patch(
            &name,
            &params,
            // The resourceVersion makes the taint-list replacement optimistic: a concurrent change gives 409 and the
            // watcher delivers the node again.
            &Patch::Merge(serde_json::json!({
                "metadata": { "labels": labels, "resourceVersion": node.metadata.resource_version },
                "spec": spec,
            })),
        )
        .await?;
    // Status last: the patch above is conditioned on the resourceVersion this one would change.
    nodes
        .patch_status(
            &name,
            &params,
            &Patch::Merge(serde_json::json!({ "status": { "addresses": addresses } })),
        )
        .await?;
    println!(
        "initialized Node {name} as {} ({} in {})",
        md.provider_id, md.instance_type, md.zone
    );
    Ok(())
}

async fn wait_all_initialized(nodes: &Api<Node>) -> anyhow::Result<()> {
    loop {
        let list = nodes.list(&Default::default()).await?;
        if list.items.iter().all(|n| !is_uninitialized(n)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn print_nodes(nodes: &Api<Node>) -> anyhow::Result<()> {
    println!();
    println!(
        "{:<13} {:<20} {:<11} {:<14} {:<13} {:<12} TAINTS",
        "NAME", "PROVIDER-ID", "TYPE", "REGION", "ZONE", "INTERNAL-IP"
    );
    for n in nodes.list(&Default::default()).await?.items {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let label = |k: &str| labels.get(k).cloned().unwrap_or_else(|| "-".into());
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
            .unwrap_or_else(|| "-".into());
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|t| {
                t.iter()
                    .map(|t| t.key.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into());
        println!(
            "{:<13} {:<20} {:<11} {:<14} {:<13} {:<12} {taints}",
            n.metadata.name.unwrap_or_default(),
            n.spec
                .and_then(|s| s.provider_id)
                .unwrap_or_else(|| "-".into()),
            label("node.kubernetes.io/instance-type"),
            label("topology.kubernetes.io/region"),
            label("topology.kubernetes.io/zone"),
            ip,
        );
    }
    Ok(())
}
