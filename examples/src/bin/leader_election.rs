//! Lease leader election on its own: run several, one leads; kill it and another takes over.
//!
//! ```text
//! leader-election --kubeconfig DIR/kubeconfig --id a &
//! leader-election --kubeconfig DIR/kubeconfig --id b --secure-port 0 &
//! ```
//!
//! Prints one line per state change on stdout: `<unix-micros> <identity> LEADING epoch=<n>`,
//! `... FOLLOWING leader=<id|->`, `... LOST`, `... RELEASED`. SIGTERM/Ctrl-C stops the work and releases the Lease.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use controller_core::app::{
    Endpoints, default_identity, init_tracing, kube_config, leader_elect_flag_error, serve,
    shutdown_signal,
};
use lease_election::{Ended, LeaderElectionMetrics, LeaderElector, LeaderState, LeaseConfig};
use prometheus_client::registry::Registry;

#[derive(Parser, Debug)]
#[command(about = "Lease leader election demo: one of several instances leads")]
struct Args {
    /// Path to a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This candidate's identity (default: HOSTNAME_PID).
    #[arg(long)]
    id: Option<String>,
    /// Namespace of the Lease.
    #[arg(long = "leader-elect-resource-namespace", default_value = "default")]
    namespace: String,
    /// Name of the Lease.
    #[arg(
        long = "leader-elect-resource-name",
        default_value = "leader-election-demo"
    )]
    name: String,
    /// How long others wait after the last observed renew before taking over.
    #[arg(long = "leader-elect-lease-duration", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How long the leader retries renewing before it gives up.
    #[arg(long = "leader-elect-renew-deadline", default_value = "10s", value_parser = humantime::parse_duration)]
    renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long = "leader-elect-retry-period", default_value = "2s", value_parser = humantime::parse_duration)]
    retry_period: Duration,
    /// Do not watch the Lease (for RBAC without list/watch on leases).
    #[arg(long)]
    no_watch: bool,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    bind_address: std::net::IpAddr,
    /// Port for /healthz, /readyz and /metrics; 0 picks a free port, omit to serve nothing.
    #[arg(long = "secure-port")]
    port: Option<u16>,
}

fn say(identity: &str, what: &str) {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    println!("{micros} {identity} {what}");
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let args = Args::parse();
    kube_cloud_examples::run_main(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let identity = args.id.clone().unwrap_or_else(default_identity);
    let mut config = LeaseConfig::new(&args.namespace, &args.name, &identity).with_timings(
        args.lease_duration,
        args.renew_deadline,
        args.retry_period,
    );
    config.watch = !args.no_watch;
    // Bounds first (the lease-election crate's, naming the flag), before anything connects.
    config.validate().map_err(leader_elect_flag_error)?;

    let client = kube::Client::try_from(kube_config(args.kubeconfig.as_deref(), None).await?)?;
    let mut registry = Registry::default();
    let metrics = LeaderElectionMetrics::register(&mut registry);
    let elector = LeaderElector::with_metrics(client, config, metrics)?;

    if let Some(port) = args.port {
        let health = elector.clone();
        let endpoints = Endpoints::new(registry).healthz(
            "leaderElection",
            Arc::new(move || {
                health
                    .check_health(Duration::from_secs(20))
                    .map_err(|e| e.to_string())
            }),
        );
        let addr = SocketAddr::new(args.bind_address, port);
        serve(addr, endpoints).await?;
    }

    let mut states = elector.subscribe();
    let who = identity.clone();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let line = match &*states.borrow_and_update() {
                LeaderState::Leading { epoch } => format!("LEADING epoch={epoch}"),
                LeaderState::Following { leader } => {
                    format!("FOLLOWING leader={}", leader.as_deref().unwrap_or("-"))
                }
                LeaderState::Lost => "LOST".to_owned(),
                LeaderState::Unknown => continue,
            };
            say(&who, &line);
        }
    });

    let ended = elector
        .run(shutdown_signal(), |leadership| async move {
            // The guarded work of this demo: act as leader until told otherwise.
            leadership.lost().await;
        })
        .await;
    match ended {
        Ended::LeadershipLost => {
            say(&identity, "EXIT lost");
            std::process::exit(1);
        }
        Ended::Shutdown | Ended::WorkFinished(()) => say(&identity, "RELEASED"),
    }
    Ok(())
}
