//! The cloud-controller-manager: upstream's flags, checked up front, then the controllers of `controller-core`
//! behind Lease leader election, with `/healthz`, `/readyz` and `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Parser, ValueEnum};
use controller_core::cloud_node::{CloudNodeConfig, CloudNodeMetrics};
use controller_core::manager::{Manager, ManagerConfig, ManagerExit};
use controller_core::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleMetrics};
use controller_core::route::{RouteConfig, parse_cluster_cidrs};
use controller_core::runtime::{EventPublisher, RuntimeMetrics, Shutdown};
use controller_core::service::{ServiceConfig, ServiceMetrics};
use controller_core::{ControllerContext, ControllerKind, ControllerSelection};
use lease_election::{LeaderElectionMetrics, LeaderElector, LeaseConfig};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::client::{kube_config, rate_limited_client};
use crate::{Endpoints, default_identity, provider_registry, serve, shutdown_signal};

/// The component name: the Event reporter, the default Lease name and the field manager prefix.
pub const COMPONENT: &str = "cloud-controller-manager";

/// How stale the leader-election loop may be before `/healthz` fails (upstream's watchdog: 20 s past the lease).
const LEADER_ELECTION_HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// Log output format (upstream's `--logging-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoggingFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags, named and defaulted as upstream's cloud-controller-manager. Boolean flags take Go's form:
/// `--leader-elect` or `--leader-elect=false`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cloud-controller-manager",
    version,
    about = "Runs the cloud-specific control loops: node initialization, node lifecycle, load balancers, routes"
)]
pub struct Options {
    /// The provider of cloud services (compiled in by cargo feature).
    #[arg(long = "cloud-provider", default_value = "")]
    pub cloud_provider: String,
    /// Path to the provider's configuration file (YAML or JSON).
    #[arg(long = "cloud-config")]
    pub cloud_config: Option<PathBuf>,
    /// Print the JSON Schema of `--cloud-provider`'s configuration and exit.
    #[arg(long = "print-config-schema")]
    pub print_config_schema: bool,
    /// Controllers to enable: `*` for all, `name` to enable one, `-name` to disable one.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// The instance prefix for the cluster, passed to load balancer and route calls.
    #[arg(long = "cluster-name", default_value = "kubernetes")]
    pub cluster_name: String,
    /// Path to a kubeconfig file (default: in-cluster config, `$KUBECONFIG` or `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The address of the Kubernetes API server (overrides the kubeconfig's).
    #[arg(long)]
    pub master: Option<String>,
    /// Requests per second to the API server.
    #[arg(long = "kube-api-qps", default_value_t = 20.0)]
    pub kube_api_qps: f32,
    /// Burst of requests to the API server.
    #[arg(long = "kube-api-burst", default_value_t = 30)]
    pub kube_api_burst: u32,
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long = "leader-elect", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = true, default_missing_value = "true")]
    pub leader_elect: bool,
    /// How long followers wait after the last observed renewal before taking over.
    #[arg(long = "leader-elect-lease-duration", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader retries renewing before it stops leading.
    #[arg(long = "leader-elect-renew-deadline", default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long = "leader-elect-retry-period", default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// The lock object type; only `leases` is supported.
    #[arg(long = "leader-elect-resource-lock", default_value = "leases")]
    pub leader_elect_resource_lock: String,
    /// The name of the Lease.
    #[arg(long = "leader-elect-resource-name", default_value = COMPONENT)]
    pub leader_elect_resource_name: String,
    /// The namespace of the Lease.
    #[arg(
        long = "leader-elect-resource-namespace",
        default_value = "kube-system"
    )]
    pub leader_elect_resource_namespace: String,
    /// Program cloud routes for the Nodes' pod CIDRs (needs `--allocate-node-cidrs` and `--cluster-cidr`).
    #[arg(long = "configure-cloud-routes", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = true, default_missing_value = "true")]
    pub configure_cloud_routes: bool,
    /// Pod CIDRs are allocated to Nodes (routes are programmed only then, as upstream).
    #[arg(long = "allocate-node-cidrs", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    pub allocate_node_cidrs: bool,
    /// The cluster's pod CIDRs, comma-separated.
    #[arg(long = "cluster-cidr", default_value = "")]
    pub cluster_cidr: String,
    /// How often cloud routes are reconciled in full.
    #[arg(long = "route-reconciliation-period", default_value = "10s", value_parser = humantime::parse_duration)]
    pub route_reconciliation_period: Duration,
    /// Services synced (and load balancers updated) at once.
    #[arg(long = "concurrent-service-syncs", default_value_t = 1)]
    pub concurrent_service_syncs: u16,
    /// Nodes initialized at once.
    #[arg(long = "concurrent-node-syncs", default_value_t = 1)]
    pub concurrent_node_syncs: u16,
    /// How often initialized Nodes' addresses are refreshed from the cloud.
    #[arg(long = "node-status-update-frequency", default_value = "5m", value_parser = humantime::parse_duration)]
    pub node_status_update_frequency: Duration,
    /// How often not-Ready Nodes are checked against the cloud.
    #[arg(long = "node-monitor-period", default_value = "5s", value_parser = humantime::parse_duration)]
    pub node_monitor_period: Duration,
    /// Port of `/healthz`, `/readyz` and `/metrics` (plain HTTP); 0 serves nothing.
    #[arg(long = "secure-port", default_value_t = 10258)]
    pub secure_port: u16,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long = "bind-address", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Log format.
    #[arg(long = "logging-format", value_enum, default_value_t = LoggingFormat::Text)]
    pub logging_format: LoggingFormat,
    /// The identity in the Lease (default: `<hostname>_<pid>`).
    #[arg(long = "leader-elect-identity")]
    pub leader_elect_identity: Option<String>,
}

/// What the flags asked for, checked: everything that can be wrong with the flags alone is an error here,
/// before anything touches the cluster or the cloud.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The flags.
    pub options: Options,
    /// The parsed `--controllers`.
    pub selection: ControllerSelection,
    /// The route controller's settings, when routes are to be programmed.
    pub route: Option<RouteConfig>,
}

impl Options {
    /// Checks the flags; every error names the flag.
    pub fn plan(self) -> anyhow::Result<Plan> {
        if self.cloud_provider.trim().is_empty() {
            bail!("--cloud-provider cannot be empty");
        }
        if self.cluster_name.is_empty() {
            bail!("--cluster-name cannot be empty");
        }
        let mut selection = ControllerSelection::parse(&self.controllers)
            .map_err(|e| anyhow::anyhow!("--controllers: {e}"))?;
        for (flag, value) in [
            ("--concurrent-service-syncs", self.concurrent_service_syncs),
            ("--concurrent-node-syncs", self.concurrent_node_syncs),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        for (flag, value) in [
            (
                "--node-status-update-frequency",
                self.node_status_update_frequency,
            ),
            ("--node-monitor-period", self.node_monitor_period),
            (
                "--route-reconciliation-period",
                self.route_reconciliation_period,
            ),
        ] {
            if value.is_zero() {
                bail!("{flag} must be positive");
            }
        }
        if self.leader_elect_resource_lock != "leases" {
            bail!(
                "--leader-elect-resource-lock {:?} is not supported; use \"leases\"",
                self.leader_elect_resource_lock
            );
        }
        // Validates --kube-api-qps and --kube-api-burst with the same rules the client applies.
        crate::client::RateLimitLayer::new(self.kube_api_qps, self.kube_api_burst)?;
        let route = if self.allocate_node_cidrs && self.configure_cloud_routes {
            let cidrs = parse_cluster_cidrs(&self.cluster_cidr)?;
            let mut config = RouteConfig::new(cidrs);
            config.reconciliation_period = self.route_reconciliation_period;
            Some(config)
        } else {
            if selection.is_enabled(ControllerKind::Route) {
                info!(
                    configure_cloud_routes = self.configure_cloud_routes,
                    allocate_node_cidrs = self.allocate_node_cidrs,
                    "will not configure cloud provider routes"
                );
            }
            selection.disable(ControllerKind::Route);
            None
        };
        Ok(Plan {
            options: self,
            selection,
            route,
        })
    }

    fn lease_config(&self) -> LeaseConfig {
        let identity = self
            .leader_elect_identity
            .clone()
            .unwrap_or_else(default_identity);
        LeaseConfig::new(
            &self.leader_elect_resource_namespace,
            &self.leader_elect_resource_name,
            &identity,
        )
        .with_timings(
            self.leader_elect_lease_duration,
            self.leader_elect_renew_deadline,
            self.leader_elect_retry_period,
        )
    }
}

/// Prints the JSON Schema of `--cloud-provider`'s configuration.
pub fn print_config_schema(options: &Options) -> anyhow::Result<()> {
    let registry = provider_registry()?;
    let schema = registry.config_schema(&options.cloud_provider)?;
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(())
}

/// Runs with the providers compiled into this binary; see [`run_with`].
pub async fn run(plan: Plan) -> anyhow::Result<()> {
    run_with(plan, provider_registry()?).await
}

/// Runs until SIGTERM/Ctrl-C (then stops the controllers and releases the Lease) or until leadership is lost
/// (an error, so the process exits non-zero and is restarted, as upstream). `registry` holds the providers
/// `--cloud-provider` chooses from: a binary for your own provider registers it there.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use clap::Parser;
/// let mut registry = cloudprovider_api::ProviderRegistry::new();
/// // my_provider::register(&mut registry)?;
/// let plan = kube_cloud_examples::ccm::Options::parse().plan()?;
/// kube_cloud_examples::ccm::run_with(plan, registry).await
/// # }
/// ```
pub async fn run_with(
    plan: Plan,
    registry: cloudprovider_api::ProviderRegistry,
) -> anyhow::Result<()> {
    let options = &plan.options;
    let lease = options.lease_config();
    // Checked before any connection, so bad timings are a startup error naming the flags.
    lease.validate().context("--leader-elect-* flags")?;

    let provider = registry
        .build(&options.cloud_provider, options.cloud_config.as_deref())
        .await?
        .with_context(|| {
            format!(
                "--cloud-provider {:?} means no in-process provider; this binary has: {}",
                options.cloud_provider,
                registry.names().collect::<Vec<_>>().join(", ")
            )
        })?;
    info!(
        provider = provider.provider_name(),
        "cloud provider initialized"
    );

    let config = kube_config(options.kubeconfig.as_deref(), options.master.as_deref()).await?;
    let client = rate_limited_client(config, options.kube_api_qps, options.kube_api_burst)?;

    let mut metrics = Registry::default();
    let events = EventPublisher::new(client.clone(), COMPONENT, Some(lease.identity.clone()));
    events.register_metrics(&mut metrics);
    let ctx = ControllerContext {
        client: client.clone(),
        provider,
        cluster_name: options.cluster_name.clone(),
        events,
        metrics: RuntimeMetrics::register(&mut metrics),
    };
    let manager_config = ManagerConfig {
        selection: plan.selection.clone(),
        cloud_node: CloudNodeConfig {
            workers: options.concurrent_node_syncs,
            node_status_update_frequency: options.node_status_update_frequency,
            metrics: CloudNodeMetrics::register(&mut metrics),
        },
        node_lifecycle: NodeLifecycleConfig {
            monitor_period: options.node_monitor_period,
            metrics: NodeLifecycleMetrics::register(&mut metrics),
        },
        service: ServiceConfig {
            workers: options.concurrent_service_syncs,
            metrics: ServiceMetrics::register(&mut metrics),
            ..ServiceConfig::default()
        },
        route: plan.route.clone(),
    };
    let manager = Manager::new(ctx, manager_config);
    if manager.runnable().is_empty() {
        warn!("no controller will run: check --controllers and the provider's capabilities");
    }

    let elector = if options.leader_elect {
        let le_metrics = LeaderElectionMetrics::register(&mut metrics);
        Some(
            LeaderElector::with_metrics(client.clone(), lease, le_metrics)
                .context("--leader-elect-* flags")?,
        )
    } else {
        None
    };
    if options.secure_port != 0 {
        let mut healthz: Vec<(&'static str, crate::Check)> = Vec::new();
        if let Some(elector) = &elector {
            let elector = elector.clone();
            healthz.push((
                "leaderElection",
                Arc::new(move || {
                    elector
                        .check_health(LEADER_ELECTION_HEALTH_TIMEOUT)
                        .map_err(|e| e.to_string())
                }),
            ));
        }
        let endpoints = Endpoints {
            registry: Arc::new(metrics),
            healthz,
            readyz: vec![],
        };
        let addr = SocketAddr::new(options.bind_address, options.secure_port);
        serve(addr, endpoints).await.with_context(|| {
            format!(
                "--secure-port {} / --bind-address {}",
                options.secure_port, options.bind_address
            )
        })?;
        info!(%addr, "serving /healthz, /readyz and /metrics");
    }

    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        trigger.trigger();
    });
    match elector {
        Some(elector) => match manager.run_with_leader_election(elector, shutdown).await {
            ManagerExit::Shutdown => Ok(()),
            ManagerExit::LeadershipLost => bail!("leaderelection lost"),
        },
        None => {
            manager.run(shutdown).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Plan> {
        let argv = std::iter::once("cloud-controller-manager").chain(args.iter().copied());
        Options::try_parse_from(argv)?.plan()
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Ok(plan) => panic!("expected an error for {args:?}, got {plan:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn upstream_defaults() {
        let plan = parse(&["--cloud-provider=fake"]).expect("valid flags");
        let o = &plan.options;
        assert!(o.leader_elect);
        assert_eq!(o.leader_elect_resource_name, "cloud-controller-manager");
        assert_eq!(o.leader_elect_resource_namespace, "kube-system");
        assert_eq!(o.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(o.secure_port, 10258);
        assert_eq!((o.kube_api_qps, o.kube_api_burst), (20.0, 30));
        assert_eq!(o.cluster_name, "kubernetes");
        assert_eq!(o.node_status_update_frequency, Duration::from_secs(300));
        // Routes need --allocate-node-cidrs, as upstream.
        assert!(plan.route.is_none());
        assert!(!plan.selection.is_enabled(ControllerKind::Route));
        assert!(plan.selection.is_enabled(ControllerKind::Service));
    }

    #[test]
    fn go_style_booleans_and_lists() {
        let plan = parse(&[
            "--cloud-provider",
            "fake",
            "--leader-elect=false",
            "--allocate-node-cidrs",
            "--cluster-cidr=10.244.0.0/16,fd00::/56",
            "--controllers=*,-service",
        ])
        .expect("valid flags");
        assert!(!plan.options.leader_elect);
        assert_eq!(plan.route.map(|r| r.cluster_cidrs.len()), Some(2));
        assert!(!plan.selection.is_enabled(ControllerKind::Service));
        assert!(plan.selection.is_enabled(ControllerKind::Route));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        assert!(err(&[]).contains("--cloud-provider cannot be empty"));
        assert!(err(&["--cloud-provider=fake", "--controllers=servce"]).contains("servce"));
        assert!(
            err(&["--cloud-provider=fake", "--allocate-node-cidrs"]).contains("--cluster-cidr")
        );
        assert!(
            err(&[
                "--cloud-provider=fake",
                "--allocate-node-cidrs",
                "--cluster-cidr=10.0.0.0/33"
            ])
            .contains("10.0.0.0/33")
        );
        assert!(err(&["--cloud-provider=fake", "--kube-api-qps=0"]).contains("--kube-api-qps"));
        assert!(
            err(&["--cloud-provider=fake", "--concurrent-service-syncs=0"])
                .contains("--concurrent-service-syncs")
        );
        assert!(
            err(&[
                "--cloud-provider=fake",
                "--leader-elect-resource-lock=configmaps"
            ])
            .contains("--leader-elect-resource-lock")
        );
        assert!(
            err(&["--cloud-provider=fake", "--node-monitor-period=5 parsecs"])
                .contains("--node-monitor-period")
        );
        assert!(err(&["--cloud-provider=fake", "--no-such-flag"]).contains("--no-such-flag"));
    }
}
