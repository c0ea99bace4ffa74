//! Runs the selected controllers, optionally only while this replica holds the leader Lease: upstream's
//! `app.NewCloudControllerManagerCommand(…, controllerInitializers)` without the command.
//!
//! 1. A binary fills a [`ControllerRegistry`] with every controller it can run: the built-in ones and its own,
//!    each a [`ManagedController`].
//! 2. `--controllers` becomes a [`ControllerSelection`] ([`ControllerRegistry::select`]).
//! 3. [`Manager::new`] resolves the selection against the provider's capabilities once: a controller needing a
//!    capability the provider lacks, or reporting an [inactive reason](ManagedController::inactive_reason), is
//!    logged and left out ([`Manager::runnable`]).
//! 4. [`Manager::run_with_leader_election`] starts the runnable controllers each time this replica becomes
//!    leader, with fresh [`SharedCaches`] and a shutdown signal that fires when leadership is lost or on shutdown.

mod caches;
mod controller;
mod registry;
mod status;

use std::sync::Arc;

use futures::future::{BoxFuture, select_all};
use lease_election::{Ended, LeaderElector, Leadership};
use tracing::{Instrument, error, info, info_span, warn};

pub use caches::SharedCaches;
pub(crate) use controller::node_cache_controller;
pub use controller::{ControllerError, ManagedController};
pub use registry::{ControllerRegistry, ControllerSelection, RegistrationError, SelectionError};
pub use status::ManagerStatus;

use crate::ControllerContext;
use crate::runtime::CancellationToken;

/// Why [`Manager::run`] or [`Manager::run_with_leader_election`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManagerExit {
    /// The shutdown signal fired; the controllers stopped and the Lease was released.
    Shutdown,
    /// Leadership was lost; the controllers were stopped before another replica could take over. Upstream exits
    /// the process here; a caller may also contend again.
    LeadershipLost,
    /// A controller failed; every controller was stopped (and the Lease released).
    ControllerFailed {
        /// The controller's name.
        controller: &'static str,
        /// What it reported.
        error: String,
    },
}

/// Runs controllers. See [`Manager::run`] and [`Manager::run_with_leader_election`].
///
/// ```no_run
/// # use controller_core::ControllerContext;
/// use controller_core::manager::{ControllerRegistry, Manager, ManagerExit};
/// use controller_core::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
/// use controller_core::runtime::CancellationToken;
/// # async fn demo(ctx: ControllerContext, elector: lease_election::LeaderElector) -> Result<(), Box<dyn std::error::Error>> {
/// let mut registry = ControllerRegistry::new();
/// registry.register(NodeLifecycleController::new(NodeLifecycleConfig::default()))?;
/// let selection = registry.select(["*"])?;
/// let shutdown = CancellationToken::new();
/// let exit = Manager::new(ctx, &registry, &selection)
///     .run_with_leader_election(elector, shutdown)
///     .await;
/// assert_eq!(exit, ManagerExit::Shutdown);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Manager {
    ctx: ControllerContext,
    controllers: Vec<Arc<dyn ManagedController>>,
    status: ManagerStatus,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("ctx", &self.ctx)
            .field("controllers", &self.runnable())
            .finish()
    }
}

impl Manager {
    /// A manager for the controllers of `registry` that `selection` enables and the provider supports (each left
    /// out is logged with the reason).
    pub fn new(
        ctx: ControllerContext,
        registry: &ControllerRegistry,
        selection: &ControllerSelection,
    ) -> Self {
        let caps = ctx.provider.capabilities();
        let controllers = registry
            .controllers()
            .filter(|c| selection.is_enabled(c.name()))
            .filter(|c| {
                let missing: Vec<_> = c
                    .required_capabilities()
                    .iter()
                    .filter(|cap| !caps.has(**cap))
                    .map(|cap| cap.name())
                    .collect();
                if !missing.is_empty() {
                    warn!(
                        controller = c.name(),
                        provider = ctx.provider.provider_name(),
                        missing = %missing.join(", "),
                        "not starting: the cloud provider does not support what it needs"
                    );
                    return false;
                }
                if let Some(reason) = c.inactive_reason() {
                    info!(controller = c.name(), %reason, "not starting");
                    return false;
                }
                true
            })
            .cloned()
            .collect();
        Self {
            ctx,
            controllers,
            status: ManagerStatus::default(),
        }
    }

    /// What the manager is doing, for readiness checks (see [`ManagerStatus`]).
    pub fn status(&self) -> ManagerStatus {
        self.status.clone()
    }

    /// The names of the controllers that will run: selected, configured, and supported by the provider.
    pub fn runnable(&self) -> Vec<&'static str> {
        self.controllers.iter().map(|c| c.name()).collect()
    }

    /// Runs the controllers until `shutdown` fires or one fails, without leader election (a single replica).
    pub async fn run(&self, shutdown: CancellationToken) -> ManagerExit {
        self.run_controllers(shutdown).await
    }

    /// Contends for leadership with `elector` and runs the controllers only while leading. When leadership is lost
    /// they are stopped (dropped) before another replica could acquire, and this returns
    /// [`ManagerExit::LeadershipLost`]. On `shutdown` they stop, then the Lease is released.
    pub async fn run_with_leader_election(
        &self,
        elector: LeaderElector,
        shutdown: CancellationToken,
    ) -> ManagerExit {
        let ended = elector
            .run(
                shutdown.clone().cancelled_owned(),
                |leadership: Leadership| async move {
                    info!(epoch = leadership.epoch(), "leading: starting controllers");
                    // The term's controllers and caches stop when this future ends or is dropped (leadership lost).
                    let term = shutdown.child_token();
                    let _stop_term = term.clone().drop_guard();
                    tokio::select! {
                        exit = self.run_controllers(term) => exit,
                        () = leadership.lost() => ManagerExit::LeadershipLost,
                    }
                },
            )
            .await;
        match ended {
            Ended::LeadershipLost => ManagerExit::LeadershipLost,
            Ended::Shutdown => ManagerExit::Shutdown,
            Ended::WorkFinished(exit) => exit,
        }
    }

    /// One term: fresh caches, every runnable controller, until `shutdown` fires or a controller fails.
    async fn run_controllers(&self, shutdown: CancellationToken) -> ManagerExit {
        let caches = SharedCaches::new(self.ctx.client.clone(), shutdown.clone());
        let _stop = shutdown.clone().drop_guard();
        self.status.begin_term(caches.clone(), &self.runnable());
        let _term = status::TermGuard(self.status.clone());
        let mut running: Vec<BoxFuture<'static, (&'static str, Result<(), ControllerError>)>> =
            Vec::new();
        for controller in &self.controllers {
            let name = controller.name();
            let span = info_span!("controller", controller = name);
            let run = controller.run(self.ctx.clone(), caches.clone(), shutdown.child_token());
            let status = self.status.clone();
            running.push(Box::pin(
                async move {
                    status.set_running(name, true);
                    let result = run.await;
                    status.set_running(name, false);
                    (name, result)
                }
                .instrument(span),
            ));
        }
        info!(controllers = ?self.runnable(), "controllers started");
        while !running.is_empty() {
            let ((name, result), _, rest) = tokio::select! {
                biased;
                () = shutdown.cancelled() => return ManagerExit::Shutdown,
                done = select_all(running) => done,
            };
            running = rest;
            match result {
                Err(e) => {
                    error!(controller = name, error = %e, "controller failed; stopping every controller");
                    return ManagerExit::ControllerFailed {
                        controller: name,
                        error: e.to_string(),
                    };
                }
                Ok(()) if !shutdown.is_cancelled() => {
                    warn!(controller = name, "controller returned before shutdown");
                }
                Ok(()) => {}
            }
        }
        shutdown.cancelled().await;
        ManagerExit::Shutdown
    }
}
