//! Upstream's controller-manager flags, checked before anything touches the cluster or the cloud.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use lease_election::LeaseConfig;

use super::AppError;
use super::bounds::{check_duration, leader_elect_flag_error};
use super::client::RateLimitLayer;
use super::process::default_identity;
use super::secure_serving::SecureServingOptions;
use crate::cloud_node::CloudNodeConfig;
use crate::node_lifecycle::NodeLifecycleConfig;
use crate::route::{RouteConfig, parse_cluster_cidrs};
use crate::service::ServiceConfig;

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
///
/// Binaries flatten it into their own `clap` struct (`#[command(flatten)]`), or use [`App::main`](super::App::main)
/// which parses it alone.
#[derive(Args, Debug, Clone)]
#[non_exhaustive]
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
    /// Controllers to enable: `*` for all on by default, `name` to enable one, `-name` to disable one. Every
    /// registered controller and alias is accepted (the error for an unknown one lists them).
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
    /// Run with a provider that has no cluster ID (upstream's `--allow-untagged-cloud`; a warning instead of a
    /// startup error).
    #[arg(long = "allow-untagged-cloud", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    pub allow_untagged_cloud: bool,
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
    /// The name of the Lease (default: the component's name, e.g. `cloud-controller-manager`).
    #[arg(long = "leader-elect-resource-name")]
    pub leader_elect_resource_name: Option<String>,
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
    /// Nodes whose addresses are refreshed at once; 0 means as many as `--concurrent-node-syncs`.
    #[arg(long = "concurrent-node-status-updates", default_value_t = 0)]
    pub concurrent_node_status_updates: u16,
    /// How often initialized Nodes' addresses are refreshed from the cloud.
    #[arg(long = "node-status-update-frequency", default_value = "5m", value_parser = humantime::parse_duration)]
    pub node_status_update_frequency: Duration,
    /// How often not-Ready Nodes are checked against the cloud.
    #[arg(long = "node-monitor-period", default_value = "5s", value_parser = humantime::parse_duration)]
    pub node_monitor_period: Duration,
    /// The secure port: HTTPS, certificates, delegated authentication and authorization.
    #[command(flatten)]
    pub serving: SecureServingOptions,
    /// Log format.
    #[arg(long = "logging-format", value_enum, default_value_t = LoggingFormat::Text)]
    pub logging_format: LoggingFormat,
    /// The identity in the Lease (default: `<hostname>_<pid>`).
    #[arg(long = "leader-elect-identity")]
    pub leader_elect_identity: Option<String>,
}

impl Options {
    /// Checks every flag that can be wrong on its own; each error names the flag. `--controllers` is checked
    /// against the registered controllers later ([`App`](super::App) does both).
    pub fn check(&self) -> Result<(), AppError> {
        self.check_names()?;
        self.check_counts()?;
        self.check_periods()?;
        if self.leader_elect_resource_lock != "leases" {
            return Err(AppError::flag(
                "--leader-elect-resource-lock",
                format!(
                    "{:?} is not supported; use \"leases\"",
                    self.leader_elect_resource_lock
                ),
            ));
        }
        // The same rules the client applies.
        RateLimitLayer::new(self.kube_api_qps, self.kube_api_burst)?;
        let _routes = self.route_config()?;
        Ok(())
    }

    fn check_names(&self) -> Result<(), AppError> {
        if self.cloud_provider.trim().is_empty() {
            return Err(AppError::flag("--cloud-provider", "cannot be empty"));
        }
        if self.cluster_name.is_empty() {
            return Err(AppError::flag("--cluster-name", "cannot be empty"));
        }
        Ok(())
    }

    fn check_counts(&self) -> Result<(), AppError> {
        for (flag, value) in [
            ("--concurrent-service-syncs", self.concurrent_service_syncs),
            ("--concurrent-node-syncs", self.concurrent_node_syncs),
        ] {
            if value == 0 {
                return Err(AppError::flag(flag, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Every duration flag within its bounds ([`MAX_PERIOD`](super::MAX_PERIOD) at most); the leader-election
    /// durations are checked by [`lease_config`](Self::lease_config).
    fn check_periods(&self) -> Result<(), AppError> {
        let positive = Duration::from_nanos(1);
        for (flag, value, min) in [
            (
                "--node-status-update-frequency",
                self.node_status_update_frequency,
                positive,
            ),
            ("--node-monitor-period", self.node_monitor_period, positive),
            (
                "--route-reconciliation-period",
                self.route_reconciliation_period,
                positive,
            ),
            (
                "--authentication-token-webhook-cache-ttl",
                self.serving.authentication_token_webhook_cache_ttl,
                Duration::ZERO,
            ),
            (
                "--authorization-webhook-cache-authorized-ttl",
                self.serving.authorization_webhook_cache_authorized_ttl,
                Duration::ZERO,
            ),
            (
                "--authorization-webhook-cache-unauthorized-ttl",
                self.serving.authorization_webhook_cache_unauthorized_ttl,
                Duration::ZERO,
            ),
        ] {
            check_duration(flag, value, min)?;
        }
        Ok(())
    }

    /// The route controller's settings, or why it does not run (upstream: routes need `--allocate-node-cidrs`
    /// and `--configure-cloud-routes`, and then a valid `--cluster-cidr`).
    pub fn route_config(&self) -> Result<Result<RouteConfig, String>, AppError> {
        if !(self.allocate_node_cidrs && self.configure_cloud_routes) {
            return Ok(Err(format!(
                "will not configure cloud provider routes (--allocate-node-cidrs={}, --configure-cloud-routes={})",
                self.allocate_node_cidrs, self.configure_cloud_routes
            )));
        }
        // The flag is named once (the error's own text names it too).
        let cidrs = parse_cluster_cidrs(&self.cluster_cidr).map_err(|e| {
            AppError::flag("--cluster-cidr", format!("{:?}: {}", e.value, e.reason))
        })?;
        let mut config = RouteConfig::new(cidrs);
        config.reconciliation_period = self.route_reconciliation_period;
        Ok(Ok(config))
    }

    /// The cloud-node controller's settings from the flags.
    pub fn cloud_node_config(&self) -> CloudNodeConfig {
        CloudNodeConfig {
            workers: self.concurrent_node_syncs,
            // Upstream: "If unspecified or 0, --concurrent-node-syncs is used instead".
            status_update_workers: match self.concurrent_node_status_updates {
                0 => self.concurrent_node_syncs,
                n => n,
            },
            node_status_update_frequency: self.node_status_update_frequency,
            ..CloudNodeConfig::default()
        }
    }

    /// The cloud-node-lifecycle controller's settings from the flags.
    pub fn node_lifecycle_config(&self) -> NodeLifecycleConfig {
        NodeLifecycleConfig {
            monitor_period: self.node_monitor_period,
            ..NodeLifecycleConfig::default()
        }
    }

    /// The service controller's settings from the flags.
    pub fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            workers: self.concurrent_service_syncs,
            ..ServiceConfig::default()
        }
    }

    /// The Lease of `component` (unless `--leader-elect-resource-name` names another), validated.
    pub fn lease_config(&self, component: &str) -> Result<LeaseConfig, AppError> {
        let identity = self
            .leader_elect_identity
            .clone()
            .unwrap_or_else(default_identity);
        let name = self
            .leader_elect_resource_name
            .as_deref()
            .unwrap_or(component);
        let lease = LeaseConfig::new(&self.leader_elect_resource_namespace, name, &identity)
            .with_timings(
                self.leader_elect_lease_duration,
                self.leader_elect_renew_deadline,
                self.leader_elect_retry_period,
            );
        lease.validate().map_err(leader_elect_flag_error)?;
        Ok(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, AppError> {
        let argv = std::iter::once("cloud-controller-manager").chain(args.iter().copied());
        let options = super::super::parse_options("cloud-controller-manager", argv)
            .map_err(|e| AppError::flag("(clap)", e.to_string()))?;
        options.check()?;
        Ok(options)
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Ok(options) => panic!("expected an error for {args:?}, got {options:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn upstream_defaults() {
        let o = parse(&["--cloud-provider=fake"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(o.leader_elect);
        assert_eq!(o.leader_elect_resource_namespace, "kube-system");
        assert_eq!(o.leader_elect_lease_duration, Duration::from_secs(15));
        let lease = o
            .lease_config("cloud-controller-manager")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lease.name, "cloud-controller-manager");
        assert_eq!(o.serving.secure_port, None);
        assert_eq!(
            o.serving.authorization_always_allow_paths,
            vec!["/healthz", "/readyz", "/livez"]
        );
        assert_eq!(
            o.serving.authentication_token_webhook_cache_ttl,
            Duration::from_secs(10)
        );
        assert_eq!((o.kube_api_qps, o.kube_api_burst), (20.0, 30));
        assert_eq!(o.cluster_name, "kubernetes");
        assert_eq!(o.node_status_update_frequency, Duration::from_secs(300));
        assert_eq!(o.controllers, vec!["*"]);
        // Routes need --allocate-node-cidrs, as upstream.
        let reason = o.route_config().ok().and_then(Result::err);
        assert!(reason.is_some_and(|r| r.contains("--allocate-node-cidrs=false")));
    }

    #[test]
    fn node_status_update_workers_default_to_the_node_syncs() {
        let workers = |args: &[&str]| {
            let mut all = vec!["--cloud-provider=fake"];
            all.extend_from_slice(args);
            parse(&all)
                .map(|o| o.cloud_node_config().status_update_workers)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(workers(&[]), 1);
        assert_eq!(workers(&["--concurrent-node-syncs=4"]), 4);
        assert_eq!(
            workers(&[
                "--concurrent-node-syncs=4",
                "--concurrent-node-status-updates=9"
            ]),
            9
        );
    }

    #[test]
    fn go_style_booleans_and_lists() {
        let o = parse(&[
            "--cloud-provider",
            "fake",
            "--leader-elect=false",
            "--allocate-node-cidrs",
            "--cluster-cidr=10.244.0.0/16,fd00::/56",
            "--controllers=*,-service",
            "--leader-elect-resource-name=mine",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!o.leader_elect);
        let route = o.route_config().ok().and_then(Result::ok);
        assert_eq!(route.map(|r| r.cluster_cidrs.len()), Some(2));
        assert_eq!(o.controllers, vec!["*", "-service"]);
        let lease = o.lease_config("cloud-controller-manager").ok();
        assert_eq!(lease.map(|l| l.name), Some("mine".to_owned()));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        assert!(err(&[]).contains("--cloud-provider: cannot be empty"));
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
        // Regression (found by the property tests, issue 21): the flag was named twice
        // (`--cluster-cidr: invalid --cluster-cidr "0": …`).
        let e = err(&[
            "--cloud-provider=fake",
            "--allocate-node-cidrs",
            "--cluster-cidr=10.0.0.0/8,0",
        ]);
        assert!(e.starts_with("--cluster-cidr: \"0\": "), "{e}");
        assert_eq!(e.matches("--cluster-cidr").count(), 1, "{e}");
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
        let lease = parse(&[
            "--cloud-provider=fake",
            "--leader-elect-lease-duration=1s",
            "--leader-elect-renew-deadline=5s",
        ])
        .and_then(|o| o.lease_config("cloud-controller-manager"));
        assert!(lease.is_err_and(|e| e.to_string().contains("--leader-elect")));
    }

    /// Regression (issue 21, finding 2): these values panicked the binaries (governor, `Duration::from_secs_f64`,
    /// `Instant + Duration` in lease-election) instead of failing with the flag's name.
    #[test]
    fn out_of_bounds_values_name_the_flag() {
        let cases: &[(&str, &str)] = &[
            ("--kube-api-qps=1e-10", "--kube-api-qps"),
            ("--kube-api-qps=1e-20", "--kube-api-qps"),
            ("--kube-api-qps=1e30", "--kube-api-qps"),
            ("--kube-api-burst=4294967295", "--kube-api-burst"),
            (
                "--node-monitor-period=1000000000years",
                "--node-monitor-period",
            ),
            (
                "--route-reconciliation-period=100years",
                "--route-reconciliation-period",
            ),
            (
                "--node-status-update-frequency=2days",
                "--node-status-update-frequency",
            ),
            (
                "--authentication-token-webhook-cache-ttl=1000years",
                "--authentication-token-webhook-cache-ttl",
            ),
            (
                "--authorization-webhook-cache-authorized-ttl=1000years",
                "--authorization-webhook-cache-authorized-ttl",
            ),
            (
                "--authorization-webhook-cache-unauthorized-ttl=1000years",
                "--authorization-webhook-cache-unauthorized-ttl",
            ),
        ];
        for (arg, flag) in cases {
            let e = err(&["--cloud-provider=fake", arg]);
            assert!(e.starts_with(&format!("{flag}: ")), "{arg}: {e}");
        }
        for (args, flag) in [
            (
                [
                    "--leader-elect-lease-duration=1000000000years",
                    "--leader-elect-renew-deadline=10s",
                ],
                "--leader-elect-lease-duration",
            ),
            (
                [
                    "--leader-elect-lease-duration=20h",
                    "--leader-elect-renew-deadline=100000years",
                ],
                "--leader-elect-renew-deadline",
            ),
            (
                [
                    "--leader-elect-lease-duration=20h",
                    "--leader-elect-retry-period=100000years",
                ],
                "--leader-elect-retry-period",
            ),
        ] {
            let argv = [&["--cloud-provider=fake"][..], &args[..]].concat();
            let e = parse(&argv)
                .and_then(|o| o.lease_config("cloud-controller-manager"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with(&format!("{flag}: ")), "{args:?}: {e}");
        }
    }
}
