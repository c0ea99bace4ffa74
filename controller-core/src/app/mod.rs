//! The controller-manager application (feature `app`): what upstream's `k8s.io/cloud-provider/app` gives a Go
//! provider, so a provider crate ships its own `cloud-controller-manager` in a short `main`.
//!
//! [`App`] parses upstream's flags ([`Options`]), prints the provider's config schema
//! (`--print-config-schema`), builds the provider from `--cloud-provider`/`--cloud-config`, makes the Kubernetes
//! client with `--kube-api-qps`/`--kube-api-burst`, calls the provider's
//! [`initialize`](cloudprovider_api::CloudProvider::initialize) with it, registers the built-in controllers and
//! yours, checks `--controllers` against them, serves `/healthz` (with the leader-election watchdog), `/readyz`
//! and `/metrics` over HTTPS on `--secure-port` (certificate from `--tls-cert-file` or self-signed in `--cert-dir`,
//! re-read when it changes on disk; every path but `--authorization-always-allow-paths` authenticated by
//! TokenReview or `--client-ca-file` and authorized by SubjectAccessReview, as upstream's delegated
//! authentication and authorization), contends for the Lease, runs the controllers while leading, releases the
//! Lease on SIGTERM and exits 1 on any failure (a bad flag, a lost Lease, a failed controller), as upstream.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use controller_core::app::App;
//!
//! fn main() -> ExitCode {
//!     let mut providers = cloudprovider_api::ProviderRegistry::new();
//!     // my_cloud::register(&mut providers)?;  (a provider crate's registration function)
//!     App::cloud_controller_manager(providers)
//!         // .controller(my_cloud::TaggingController::new())  (selectable with --controllers)
//!         .main()
//! }
//! ```
//!
//! Why a feature of `controller-core` and not a crate of its own: the app is the manager's front end and shares its
//! types ([`ControllerRegistry`], [`ManagedController`], the built-in
//! controllers' configs); a separate crate would re-export most of `controller-core` and version in lockstep with
//! it. Library users who embed controllers in their own process leave the feature off and do not compile clap,
//! axum, rustls or the rate limiter.

mod authn;
mod authz;
mod bounds;
mod client;
mod error;
mod options;
mod process;
mod rest_metrics;
mod secure_serving;
mod serving;
mod tls;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use cloudprovider_api::{CloudProvider, InitContext, ProviderRegistry};
use lease_election::{LeaderElectionMetrics, LeaderElector, LeaseConfig};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

pub use authn::{Authenticator, AuthnError, UserInfo, user_from_certificate};
pub use authz::{Authorizer, Decision, always_allowed};
pub use bounds::{
    MAX_KUBE_API_BURST, MAX_KUBE_API_QPS, MAX_PERIOD, MIN_KUBE_API_QPS, check_duration, check_rate,
    leader_elect_flag_error,
};
pub use client::{RateLimitLayer, RateLimited, kube_config, metered_client, rate_limited_client};
pub use error::AppError;
pub use options::{LoggingFormat, Options};
pub use process::{default_identity, init_logging, init_tracing, shutdown_signal};
pub use rest_metrics::{
    RequestLatencyLabels, RequestResultLabels, RestClientMetered, RestClientMetrics,
    RestClientMetricsLayer,
};
pub use secure_serving::{Prepared, SecureServingOptions};
pub use serving::{Check, Delegation, Endpoints, serve, serve_secure};
pub use tls::{CertPaths, ReloadingCert, load_certified_key, self_signed, server_config};

use crate::ControllerContext;
use crate::cloud_node::{CloudNodeController, CloudNodeMetrics};
use crate::manager::{
    ControllerRegistry, ControllerSelection, ManagedController, Manager, ManagerExit,
    ManagerStatus, RegistrationError,
};
use crate::node_lifecycle::{NodeLifecycleController, NodeLifecycleMetrics};
use crate::node_pool::{NodePoolConfig, NodePoolController, NodePoolMetrics};
use crate::route::{RouteController, RouteMetrics};
use crate::runtime::{CancellationToken, EventPublisher, RuntimeMetrics};
use crate::service::{ServiceController, ServiceMetrics};

/// How stale the leader-election loop may be before `/healthz` fails (upstream's watchdog: 20 s past the lease).
const LEADER_ELECTION_HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// The built-in controllers of a cloud-controller-manager, on by default.
pub const CCM_CONTROLLERS: [&str; 4] = ["cloud-node", "cloud-node-lifecycle", "service", "route"];

type MetricsHook = Box<dyn FnOnce(&mut Registry) + Send>;
type ControllerHook =
    Box<dyn FnOnce(&mut ControllerRegistry) -> Result<(), RegistrationError> + Send>;
type FlaggedHook = Box<dyn FnOnce(&clap::ArgMatches) -> Result<ControllerHook, clap::Error> + Send>;
/// Flags a set of controllers adds to the command, and how it registers them from the parsed flags.
struct FlaggedControllers {
    augment: fn(clap::Command) -> clap::Command,
    register: FlaggedHook,
}

/// A controller-manager binary: its component name, the providers it can run, the controllers it registers.
/// See the [module docs](self).
pub struct App {
    component: &'static str,
    default_port: u16,
    default_on: Vec<&'static str>,
    providers: ProviderRegistry,
    controllers: Vec<ControllerHook>,
    flagged: Vec<FlaggedControllers>,
    metrics: Vec<MetricsHook>,
    node_pool: NodePoolConfig,
    after_help: Option<String>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("component", &self.component)
            .field("providers", &self.providers.names().collect::<Vec<_>>())
            .field("default_on", &self.default_on)
            .finish_non_exhaustive()
    }
}

impl App {
    /// A `cloud-controller-manager`: port 10258, Lease `cloud-controller-manager`; `cloud-node`,
    /// `cloud-node-lifecycle`, `service` and `route` on by default, `node-pool` when named.
    pub fn cloud_controller_manager(providers: ProviderRegistry) -> Self {
        Self::new("cloud-controller-manager", 10258, providers).enabled_by_default(&CCM_CONTROLLERS)
    }

    /// A controller manager named `component` (its Event reporter, default Lease name and field-manager prefix),
    /// serving on `default_port` unless `--secure-port` says otherwise, with every built-in controller registered
    /// and none on by default (see [`enabled_by_default`](Self::enabled_by_default)).
    pub fn new(component: &'static str, default_port: u16, providers: ProviderRegistry) -> Self {
        Self {
            component,
            default_port,
            default_on: Vec::new(),
            providers,
            controllers: Vec::new(),
            flagged: Vec::new(),
            metrics: Vec::new(),
            node_pool: NodePoolConfig::default(),
            after_help: None,
        }
    }

    /// Which built-in controllers `*` includes.
    pub fn enabled_by_default(mut self, names: &[&'static str]) -> Self {
        self.default_on = names.to_vec();
        self
    }

    /// Registers one more controller, selectable with `--controllers` by its name and aliases.
    pub fn controller(mut self, controller: impl ManagedController) -> Self {
        self.controllers.push(Box::new(move |registry| {
            registry.register(controller).map(|_| ())
        }));
        self
    }

    /// Registers more controllers with a function (e.g. a provider crate's `register_controllers`).
    pub fn controllers(
        mut self,
        register: impl FnOnce(&mut ControllerRegistry) -> Result<(), RegistrationError> + Send + 'static,
    ) -> Self {
        self.controllers.push(Box::new(register));
        self
    }

    /// Registers controllers that take flags of their own (upstream's controller wrappers adding to the command's
    /// flag set, e.g. cloud-provider-aws' `--tags` for its tagging controller): `A`'s flags join the command line
    /// and `--help`, and `register` gets them parsed. Only [`main`](Self::main)/[`main_from`](Self::main_from)
    /// parse them; [`run`](Self::run) with ready-made [`Options`] registers none of these.
    ///
    /// ```
    /// use clap::Args;
    /// use controller_core::app::App;
    /// use controller_core::manager::{ControllerRegistry, RegistrationError};
    ///
    /// #[derive(Args, Debug)]
    /// struct GreeterFlags {
    ///     /// Whom to greet.
    ///     #[arg(long = "greet", default_value = "world")]
    ///     whom: String,
    /// }
    ///
    /// fn register(flags: GreeterFlags, registry: &mut ControllerRegistry) -> Result<(), RegistrationError> {
    ///     let _ = (flags.whom, registry); // registry.register(Greeter::new(flags.whom))?;
    ///     Ok(())
    /// }
    ///
    /// let app = App::cloud_controller_manager(cloudprovider_api::ProviderRegistry::new())
    ///     .controllers_with_flags::<GreeterFlags>(register);
    /// # let _ = app;
    /// ```
    pub fn controllers_with_flags<A>(
        mut self,
        register: impl FnOnce(A, &mut ControllerRegistry) -> Result<(), RegistrationError>
        + Send
        + 'static,
    ) -> Self
    where
        A: clap::Args + clap::FromArgMatches + Send + 'static,
    {
        self.flagged.push(FlaggedControllers {
            augment: A::augment_args,
            register: Box::new(move |matches| {
                let flags = A::from_arg_matches(matches)?;
                Ok(
                    Box::new(move |registry: &mut ControllerRegistry| register(flags, registry))
                        as ControllerHook,
                )
            }),
        });
        self
    }

    /// Registers metrics of your own on the registry `/metrics` serves.
    pub fn metrics(mut self, register: impl FnOnce(&mut Registry) + Send + 'static) -> Self {
        self.metrics.push(Box::new(register));
        self
    }

    /// Settings of the built-in `node-pool` controller (its metrics are registered by the app).
    pub fn node_pool_config(mut self, config: NodePoolConfig) -> Self {
        self.node_pool = config;
        self
    }

    /// Text `--help` prints after the flags (e.g. a binary's own print-and-exit options).
    pub fn after_help(mut self, text: impl Into<String>) -> Self {
        self.after_help = Some(text.into());
        self
    }

    /// Parses the process arguments, sets up logging, runs on a new tokio runtime, and returns the exit code:
    /// 0 after SIGTERM/Ctrl-C, 1 (with the error on stderr) otherwise.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// Like [`main`](Self::main) with these arguments (the first is the program name).
    pub fn main_from<I, T>(mut self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = clap::Command::new(self.component)
            .version(env!("CARGO_PKG_VERSION"))
            .about("Runs the cloud-specific control loops of a Kubernetes cluster");
        if let Some(text) = &self.after_help {
            command = command.after_help(text.clone());
        }
        let mut command = Options::augment_args(command);
        for flagged in &self.flagged {
            command = (flagged.augment)(command);
        }
        let matches = match command.try_get_matches_from(args) {
            Ok(matches) => matches,
            Err(e) => e.exit(),
        };
        let options = match Options::from_arg_matches(&matches) {
            Ok(options) => options,
            Err(e) => e.exit(),
        };
        for flagged in std::mem::take(&mut self.flagged) {
            match (flagged.register)(&matches) {
                Ok(hook) => self.controllers.push(hook),
                Err(e) => e.exit(),
            }
        }
        init_logging(options.logging_format == LoggingFormat::Json);
        if options.print_config_schema {
            return exit(self.print_config_schema(&options));
        }
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(source) => {
                return exit(Err(AppError::Io {
                    context: "starting the tokio runtime".into(),
                    source,
                }));
            }
        };
        exit(runtime.block_on(self.run(options)))
    }

    /// Prints the JSON Schema of `--cloud-provider`'s configuration.
    pub fn print_config_schema(&self, options: &Options) -> Result<(), AppError> {
        let schema = self.providers.config_schema(&options.cloud_provider)?;
        let text = serde_json::to_string_pretty(&schema).map_err(|e| AppError::Io {
            context: "printing the config schema".into(),
            source: e.into(),
        })?;
        println!("{text}");
        Ok(())
    }

    /// Runs until SIGTERM/Ctrl-C (then stops the controllers and releases the Lease: `Ok`), or until leadership is
    /// lost or a controller fails (an error, so the process exits non-zero and is restarted, as upstream).
    /// Every flag is checked before anything connects.
    pub async fn run(self, options: Options) -> Result<(), AppError> {
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown_signal().await;
                info!("shutting down");
                shutdown.cancel();
            }
        });
        // SIGTERM during startup (e.g. an unreachable apiserver or cloud) exits at once, like later.
        let started = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            started = self.start(options) => started?,
        };
        started.run(shutdown).await
    }

    /// Every step up to running the controllers: flags, provider, client, metrics, controllers, serving. Returns the
    /// manager ready to run; `/healthz`, `/readyz` and `/metrics` are already served.
    pub async fn start(mut self, options: Options) -> Result<Started, AppError> {
        options.check()?;
        let lease = options.lease_config(self.component)?;
        let component = self.component;
        // The serving certificate and client CA are checked before anything connects.
        let serving = options.serving.prepare(component, self.default_port)?;
        let providers = std::mem::take(&mut self.providers);
        // `--controllers` is checked against every registered controller before anything connects.
        let mut metrics = Registry::default();
        let (registry, selection) = self.controller_registry(&options, &mut metrics)?;
        let provider = build_provider(&providers, &options).await?;
        check_cluster_id(&*provider, options.allow_untagged_cloud)?;
        provider.register_metrics(&mut metrics);
        let mut config =
            kube_config(options.kubeconfig.as_deref(), options.master.as_deref()).await?;
        config.headers.push(user_agent(component));
        let rest = RestClientMetrics::register(&mut metrics);
        let client = metered_client(config, options.kube_api_qps, options.kube_api_burst, &rest)?;
        initialize_provider(&*provider, &client, component).await?;

        let events = EventPublisher::new(client.clone(), component, Some(lease.identity.clone()));
        events.register_metrics(&mut metrics);
        let ctx = ControllerContext::new(client.clone(), provider, events)
            .with_cluster_name(options.cluster_name.clone())
            .with_metrics(RuntimeMetrics::register(&mut metrics));
        let manager = Manager::new(ctx, &registry, &selection);
        if manager.runnable().is_empty() {
            warn!("no controller will run: check --controllers and the provider's capabilities");
        }
        let elector = leader_elector(&options, client.clone(), lease, &mut metrics)?;
        if let Some(serving) = serving {
            let endpoints = endpoints(metrics, elector.as_ref(), &manager.status());
            let addr = serving.serve(&options.serving, &client, endpoints).await?;
            info!(%addr, "serving /healthz, /readyz and /metrics over HTTPS");
        }
        info!(component, controllers = ?manager.runnable(), "starting");
        Ok(Started { manager, elector })
    }

    /// The built-in controllers configured from the flags, then the binary's own; `--controllers` checked against
    /// all of them.
    fn controller_registry(
        self,
        options: &Options,
        metrics: &mut Registry,
    ) -> Result<(ControllerRegistry, ControllerSelection), AppError> {
        let registry_error = |e: RegistrationError| AppError::flag("--controllers", e.to_string());
        let mut registry = ControllerRegistry::new();
        let mut cloud_node = options.cloud_node_config();
        cloud_node.metrics = CloudNodeMetrics::register(metrics);
        let mut lifecycle = options.node_lifecycle_config();
        lifecycle.metrics = NodeLifecycleMetrics::register(metrics);
        let mut service = options.service_config();
        service.metrics = ServiceMetrics::register(metrics);
        let route_metrics = RouteMetrics::register(metrics);
        let route = match options.route_config()? {
            Ok(mut config) => {
                config.metrics = route_metrics;
                RouteController::new(config)
            }
            Err(reason) => RouteController::disabled(reason),
        };
        let mut node_pool = self.node_pool;
        node_pool.metrics = NodePoolMetrics::register(metrics);
        registry
            .register(CloudNodeController::new(cloud_node))
            .and_then(|r| r.register(NodeLifecycleController::new(lifecycle)))
            .and_then(|r| r.register(ServiceController::new(service)))
            .and_then(|r| r.register(route))
            .and_then(|r| r.register(NodePoolController::new(node_pool)))
            .map_err(registry_error)?;
        // The binary decides which built-in controllers `*` includes.
        for name in registry.names() {
            registry.set_enabled_by_default(name, self.default_on.contains(&name));
        }
        for register in self.controllers {
            register(&mut registry).map_err(registry_error)?;
        }
        for register in self.metrics {
            register(metrics);
        }
        let selection = registry
            .select(&options.controllers)
            .map_err(|e| AppError::flag("--controllers", e.to_string()))?;
        Ok((registry, selection))
    }
}

/// Builds `--cloud-provider` with `--cloud-config`.
async fn build_provider(
    providers: &ProviderRegistry,
    options: &Options,
) -> Result<Arc<dyn CloudProvider>, AppError> {
    let provider = providers
        .build(&options.cloud_provider, options.cloud_config.as_deref())
        .await?
        .ok_or_else(|| {
            AppError::flag(
                "--cloud-provider",
                format!(
                    "{:?} means no in-process provider; this binary has: {}",
                    options.cloud_provider,
                    providers.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
    info!(provider = provider.provider_name(), "cloud provider built");
    Ok(provider)
}

/// Upstream's check: a provider without a cluster ID is refused unless `--allow-untagged-cloud`, then only warned
/// about.
fn check_cluster_id(provider: &dyn CloudProvider, allow_untagged: bool) -> Result<(), AppError> {
    if provider.has_cluster_id() {
        return Ok(());
    }
    if allow_untagged {
        warn!(
            "detected a cluster without a ClusterID. A ClusterID will be required in the future. \
             Please tag your cluster to avoid any future issues"
        );
        return Ok(());
    }
    Err(AppError::flag(
        "--allow-untagged-cloud",
        format!(
            "no ClusterID found for cloud provider {:?}. A ClusterID is required for the cloud provider to \
             function properly. This check can be bypassed by setting the allow-untagged-cloud option",
            provider.provider_name()
        ),
    ))
}

/// Calls the provider's `initialize` with the app's client (upstream's `cloud.Initialize(clientBuilder, stop)`).
async fn initialize_provider(
    provider: &dyn CloudProvider,
    client: &kube::Client,
    component: &str,
) -> Result<(), AppError> {
    let ctx = InitContext::new(client.clone()).with_component(component);
    provider
        .initialize(&ctx)
        .await
        .map_err(|source| AppError::Initialize {
            provider: provider.provider_name().to_owned(),
            source,
        })?;
    info!(
        provider = provider.provider_name(),
        "cloud provider initialized"
    );
    Ok(())
}

fn leader_elector(
    options: &Options,
    client: kube::Client,
    lease: LeaseConfig,
    metrics: &mut Registry,
) -> Result<Option<LeaderElector>, AppError> {
    if !options.leader_elect {
        return Ok(None);
    }
    let le_metrics = LeaderElectionMetrics::register(metrics);
    LeaderElector::with_metrics(client, lease, le_metrics)
        .map(Some)
        .map_err(leader_elect_flag_error)
}

/// `/healthz` and `/livez`: the leader-election watchdog. `/readyz` also: the caches the controllers asked for have
/// synced (`informer-sync`) and every runnable controller runs (`controllers`), while this replica leads.
fn endpoints(
    metrics: Registry,
    elector: Option<&LeaderElector>,
    status: &ManagerStatus,
) -> Endpoints {
    let caches = status.clone();
    let controllers = status.clone();
    let endpoints = Endpoints::new(metrics)
        .readyz("informer-sync", Arc::new(move || caches.check_caches()))
        .readyz(
            "controllers",
            Arc::new(move || controllers.check_controllers()),
        );
    match elector {
        Some(elector) => {
            let elector = elector.clone();
            endpoints.healthz(
                "leaderElection",
                Arc::new(move || {
                    elector
                        .check_health(LEADER_ELECTION_HEALTH_TIMEOUT)
                        .map_err(|e| e.to_string())
                }),
            )
        }
        None => endpoints,
    }
}

/// A started app: the manager with its controllers, and the leader elector unless `--leader-elect=false`.
#[derive(Debug)]
#[non_exhaustive]
pub struct Started {
    /// The manager.
    pub manager: Manager,
    /// The elector.
    pub elector: Option<LeaderElector>,
}

impl Started {
    /// Runs the controllers (under leader election when configured) until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let exit = match self.elector {
            Some(elector) => {
                self.manager
                    .run_with_leader_election(elector, shutdown)
                    .await
            }
            None => self.manager.run(shutdown).await,
        };
        match exit {
            ManagerExit::LeadershipLost => Err(AppError::LeadershipLost),
            ManagerExit::ControllerFailed { controller, error } => {
                Err(AppError::ControllerFailed { controller, error })
            }
            _ => Ok(()),
        }
    }
}

/// Prints `result`'s error (with its causes) to stderr and turns it into an exit code.
pub fn exit(result: Result<(), AppError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `e` with its causes, each once: our errors' Display already includes their cause (so a log line `error = %e` is
/// complete), and a cause whose text is already there is not repeated. What every binary prints before exiting 1
/// (never a `Debug` dump or a backtrace).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Parses `args` (the first is the program name) as a `component`'s flags: for tests and binaries that check
/// flags before [`App::run`].
pub fn parse_options<I, T>(component: &'static str, args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches =
        Options::augment_args(clap::Command::new(component)).try_get_matches_from(args)?;
    Options::from_arg_matches(&matches)
}

/// The `User-Agent` of the binary's requests, client-go's shape (`kube-controller-manager/v1.36.3 (linux/amd64)
/// kubernetes/…`): `<component>/v<version> (<os>/<arch>) kube-cloud-rs`, so audit logs and apiserver metrics tell
/// our components apart (kube's client sends none of its own).
fn user_agent(component: &str) -> (hyper::header::HeaderName, hyper::header::HeaderValue) {
    let text = format!(
        "{component}/v{} ({}/{}) kube-cloud-rs",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let value = hyper::header::HeaderValue::from_str(&text)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("kube-cloud-rs"));
    (hyper::header::USER_AGENT, value)
}
