//! `bench heartbeat-agent`: the measured process of `bench virtual-nodes` — N virtual nodes of the fake provider
//! kept alive by ONE `controller_core::heartbeat::Heartbeat`, on one thread (the caller's current-thread runtime).
//!
//! Prints `REGISTERED <n>` once every Node is registered, then `METRICS <renewals> <failures> <missed>
//! <ping_failures> <status_updates>` every second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use controller_core::heartbeat::{Heartbeat, HeartbeatConfig};
use controller_core::runtime::CancellationToken;
use controller_core::virtual_node::VirtualNodeConfig;
use futures::{StreamExt, TryStreamExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use provider_fake::FakeCloud;

/// Label on the agent's Nodes.
pub const LABEL: &str = "bench.kube-cloud-rs/virtual-nodes";

/// Arguments of `bench heartbeat-agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Kubeconfig of the cluster.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// How many virtual nodes.
    #[arg(long)]
    pub nodes: usize,
    /// Node name prefix (`<prefix>-<i>`).
    #[arg(long, default_value = "vn")]
    pub prefix: String,
    /// `leaseDurationSeconds` (renewed every quarter of it).
    #[arg(long, default_value_t = 40)]
    pub lease_seconds: u64,
    /// Lease and status writes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_writes: usize,
}

pub async fn run(args: AgentArgs) -> Result<()> {
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig).context("reading the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    let client = kube::Client::try_from(config).context("building the client")?;
    let shutdown = CancellationToken::new();
    let _trigger = shutdown.clone().drop_guard();
    let mut heartbeat_config = HeartbeatConfig::default();
    heartbeat_config.lease_duration = Duration::from_secs(args.lease_seconds);
    heartbeat_config.max_concurrent_writes = args.max_concurrent_writes;
    let heartbeat = Heartbeat::start(client, heartbeat_config, shutdown)?;
    let cloud = FakeCloud::new();
    futures::stream::iter(0..args.nodes)
        .map(|i| {
            let name = format!("{}-{i}", args.prefix);
            let mut config = VirtualNodeConfig::new(&name, "fake");
            config.labels.insert(LABEL.into(), "rust".into());
            let provider = Arc::new(cloud.virtual_node(&name));
            let heartbeat = heartbeat.clone();
            async move { heartbeat.register(config.node(), provider).await }
        })
        .buffer_unordered(32)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("registering nodes")?;
    println!("REGISTERED {}", args.nodes);
    let m = heartbeat.metrics().clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        println!(
            "METRICS {} {} {} {} {}",
            m.renewals.get(),
            m.renewal_failures.get(),
            m.missed_renewals.get(),
            m.ping_failures.get(),
            m.status_updates.get()
        );
    }
}
