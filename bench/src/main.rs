//! Benchmarks of kube-cloud-rs against the Go reference implementations, on a real etcd + kube-apiserver started
//! by `test-support`.
//!
//! ```text
//! cargo run -p bench --release -- leader-election [--rounds 5] [--candidates 3] [--window 60s] [--out docs/benchmarks.md]
//! cargo run -p bench --release -- virtual-nodes [--nodes 1000,5000,10000] [--impls rust,kwok] [--window 60s]
//! cargo run -p bench --release -- node-init [--nodes 1000] [--workers 16] [--latency-ms 10] [--rounds 1]
//! cargo run -p bench --release -- load-balancers [--services 500] [--nodes 10] [--workers 16]
//! cargo run -p bench --release -- memory [--sizes 5000,20000] [--settle 60s]
//! cargo run -p bench --release -- node-pool-memory [--pods 10000]
//! cargo run -p bench --release -- node-pools [--pods 500] [--scale-to 30] [--quiet 60s] [--impls karpenter]
//! cargo run -p bench --release -- karpenter-offering [--print fake-config|node-pool|table] [--subset amd-linux|all]
//! ```
//!
//! Every child process is killed when the benchmark ends, fails, panics or is interrupted (kill on drop, explicit
//! cleanup, and `PR_SET_PDEATHSIG` for when the benchmark itself is killed).

mod audit;
mod build;
mod candidate;
mod ccm;
mod ccm_report;
mod ccm_scenarios;
mod heartbeat_agent;
mod karpenter_offering;
mod leader_election;
mod node_pool_memory;
mod node_pools;
mod report;
mod virtual_nodes;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(about = "kube-cloud-rs benchmarks against the Go reference implementations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lease leader election: our lease-election crate vs client-go's tools/leaderelection (failover times and
    /// API load, measured against one real kube-apiserver with an audit log).
    LeaderElection(leader_election::Args),
    /// Virtual nodes: one process keeping N nodes alive (our heartbeat on one thread vs kwok), CPU, RSS, Lease
    /// writes/s and missed renewals.
    VirtualNodes(virtual_nodes::Args),
    /// The measured process of `virtual-nodes` (started by it).
    #[command(hide = true)]
    HeartbeatAgent(heartbeat_agent::AgentArgs),
    /// Cloud controller manager, ours vs upstream's: time to initialize a burst of tainted Nodes (and the
    /// apiserver ceiling).
    NodeInit(ccm_scenarios::NodeInitArgs),
    /// Cloud controller manager, ours vs upstream's: LoadBalancer Services until addressed, then a node fan-out.
    LoadBalancers(ccm_scenarios::LoadBalancersArgs),
    /// Cloud controller manager, ours vs upstream's: peak RSS with thousands of Nodes and Services cached.
    Memory(ccm_scenarios::MemoryArgs),
    /// The node-pool-controller's RSS with thousands of Pods in its shared Pod cache.
    NodePoolMemory(node_pool_memory::Args),
    /// Node autoscaling, Karpenter (kwok provider) as the anchor: a burst of pending Pods, then a scale-down
    /// (times, Nodes, price, evictions, API requests, CPU, RSS).
    NodePools(node_pools::Args),
    /// Karpenter's kwok instance-type offering as provider-fake node groups, our NodePool, or a table.
    KarpenterOffering(karpenter_offering::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // One thread: children are forked from the main thread, so PR_SET_PDEATHSIG ties them to this process.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Registered before anything runs, so an early Ctrl-C or SIGTERM also stops (and kills) everything.
        let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        tokio::select! {
            result = run(cli) => result,
            _ = interrupt.recv() => bail!("interrupted; all child processes were killed"),
            _ = terminate.recv() => bail!("terminated; all child processes were killed"),
        }
    })
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::LeaderElection(args) => leader_election::run(args).await,
        Command::VirtualNodes(args) => virtual_nodes::run(args).await,
        Command::HeartbeatAgent(args) => heartbeat_agent::run(args).await,
        Command::NodeInit(args) => ccm_scenarios::node_init(args).await,
        Command::LoadBalancers(args) => ccm_scenarios::load_balancers(args).await,
        Command::Memory(args) => ccm_scenarios::memory(args).await,
        Command::NodePoolMemory(args) => node_pool_memory::run(args).await,
        Command::NodePools(args) => node_pools::run(args).await,
        Command::KarpenterOffering(args) => karpenter_offering::run(args).await,
    }
}

/// The workspace root (this crate lives in `<root>/bench`).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// How the benchmark was invoked, as a `cargo run` command line.
pub(crate) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run -p bench --release -- {}", args.join(" "))
}
