//! The one trait every controller the manager runs implements.

use cloudprovider_api::{BoxError, Capability};
use futures::future::BoxFuture;

use super::SharedCaches;
use crate::ControllerContext;
use crate::runtime::CancellationToken;

/// A controller the [`Manager`](super::Manager) can run: upstream's controller initializer
/// (`app.ControllerInitFuncConstructor`) as a trait.
///
/// The built-in controllers implement it ([`CloudNodeController`](crate::cloud_node::CloudNodeController),
/// [`NodeLifecycleController`](crate::node_lifecycle::NodeLifecycleController),
/// [`ServiceController`](crate::service::ServiceController), [`RouteController`](crate::route::RouteController),
/// [`NodePoolController`](crate::node_pool::NodePoolController)); a provider crate or a binary implements it for
/// its own and [registers](super::ControllerRegistry::register) them, which makes them selectable with
/// `--controllers` and runs them under the same leader election.
///
/// ```
/// use controller_core::manager::{ControllerError, ManagedController, SharedCaches};
/// use controller_core::runtime::CancellationToken;
/// use controller_core::ControllerContext;
/// use cloudprovider_api::Capability;
/// use futures::future::BoxFuture;
///
/// /// Logs how many Nodes the cluster has, every minute.
/// struct NodeCounter;
///
/// impl ManagedController for NodeCounter {
///     fn name(&self) -> &'static str { "node-counter" }
///     fn required_capabilities(&self) -> &'static [Capability] { &[Capability::Instances] }
///     fn run(
///         &self,
///         _ctx: ControllerContext,
///         caches: SharedCaches,
///         shutdown: CancellationToken,
///     ) -> BoxFuture<'static, Result<(), ControllerError>> {
///         let nodes = caches.nodes();
///         Box::pin(async move {
///             let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
///             loop {
///                 tokio::select! {
///                     () = shutdown.cancelled() => return Ok(()),
///                     _ = tick.tick() => tracing::info!(nodes = nodes.store.state().len(), "node count"),
///                 }
///             }
///         })
///     }
/// }
///
/// let mut registry = controller_core::manager::ControllerRegistry::new();
/// registry.register(NodeCounter).unwrap();
/// assert!(registry.select(["*"]).unwrap().is_enabled("node-counter"));
/// ```
pub trait ManagedController: Send + Sync + 'static {
    /// The canonical name, as `--controllers` spells it (`cloud-node`, `service`, …).
    fn name(&self) -> &'static str;

    /// Other names `--controllers` accepts for it (upstream's long forms, e.g. `cloud-node-controller`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether `*` includes it (upstream's `ControllersDisabledByDefault`).
    fn enabled_by_default(&self) -> bool {
        true
    }

    /// The provider capabilities it needs. The manager does not start it (and logs why) when the provider lacks
    /// one, so [`run`](Self::run) never sees a provider without them.
    fn required_capabilities(&self) -> &'static [Capability] {
        &[]
    }

    /// Why it is selected but must not run with its configuration (e.g. routes without `--cluster-cidr`), or
    /// `None`. The manager logs the reason and skips it, as upstream's initializers return `enabled=false`.
    fn inactive_reason(&self) -> Option<String> {
        None
    }

    /// Runs until `shutdown` fires. Caches come from `caches` (created on first request and shared with every
    /// other controller of this leadership term). An error is a failure to start or to keep running; the manager
    /// stops every controller and reports it (the bundled binaries exit non-zero, as upstream).
    fn run(
        &self,
        ctx: ControllerContext,
        caches: SharedCaches,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ControllerError>>;
}

/// Why a controller stopped other than by its shutdown signal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// It cannot run: a prerequisite is missing (a CRD not installed, a setting that is not valid).
    #[error("{0}")]
    Startup(String),
    /// A Kubernetes API call it cannot do without failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// Anything else.
    #[error(transparent)]
    Other(BoxError),
}

impl ControllerError {
    /// A startup error with this message.
    pub fn startup(message: impl Into<String>) -> Self {
        Self::Startup(message.into())
    }
}

/// Defines a built-in controller that runs one loop over the shared Node cache with a config: its struct, `new`, and
/// the [`ManagedController`] impl (name, aliases, required capability; `run` hands the loop a Node subscription).
macro_rules! node_cache_controller {
    (
        $(#[$doc:meta])*
        $ty:ident($config:ty) = $name:literal, aliases [$($alias:literal),*], needs $cap:expr, runs $run:path
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $ty {
            config: $config,
        }

        impl $ty {
            /// The controller with these settings.
            pub fn new(config: $config) -> Self {
                Self { config }
            }
        }

        impl $crate::manager::ManagedController for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn aliases(&self) -> &'static [&'static str] {
                &[$($alias),*]
            }

            fn required_capabilities(&self) -> &'static [cloudprovider_api::Capability] {
                &[$cap]
            }

            fn run(
                &self,
                ctx: $crate::ControllerContext,
                caches: $crate::manager::SharedCaches,
                shutdown: $crate::runtime::CancellationToken,
            ) -> futures::future::BoxFuture<'static, Result<(), $crate::manager::ControllerError>> {
                let nodes = caches.nodes();
                let config = self.config.clone();
                Box::pin(async move {
                    $run(ctx, nodes, config, shutdown).await;
                    Ok(())
                })
            }
        }
    };
}
pub(crate) use node_cache_controller;
