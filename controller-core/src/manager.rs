//! Runs the selected controllers, optionally only while this replica holds the leader Lease.

use std::future::Future;
use std::pin::Pin;

use futures::future::join_all;
use lease_election::{Ended, LeaderElector, Leadership};
use tracing::{info, warn};

use crate::cloud_node::{self, CloudNodeConfig};
use crate::node_lifecycle::{self, NodeLifecycleConfig};
use crate::route::{self, RouteConfig};
use crate::runtime::{NodeCache, Shutdown};
use crate::service::{self, ServiceConfig};
use crate::{ControllerContext, ControllerKind, ControllerSelection, NodeSource};

/// Which controllers run and how.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Upstream's `--controllers`.
    pub selection: ControllerSelection,
    /// cloud-node settings.
    pub cloud_node: CloudNodeConfig,
    /// cloud-node-lifecycle settings.
    pub node_lifecycle: NodeLifecycleConfig,
    /// service settings.
    pub service: ServiceConfig,
    /// route settings; `None` (no `--configure-cloud-routes` / `--cluster-cidr`) disables the route controller.
    pub route: Option<RouteConfig>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            selection: ControllerSelection::all(),
            cloud_node: CloudNodeConfig::default(),
            node_lifecycle: NodeLifecycleConfig::default(),
            service: ServiceConfig::default(),
            route: None,
        }
    }
}

/// Why [`Manager::run_with_leader_election`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerExit {
    /// The shutdown signal fired; the controllers stopped and the Lease was released.
    Shutdown,
    /// Leadership was lost; the controllers were stopped before another replica could take over. Upstream exits
    /// the process here; a caller may also contend again.
    LeadershipLost,
}

type ControllerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs controllers. See [`Manager::run`] and [`Manager::run_with_leader_election`].
///
/// ```no_run
/// # use controller_core::{ControllerContext, manager::{Manager, ManagerConfig}};
/// # async fn demo(ctx: ControllerContext, elector: lease_election::LeaderElector) {
/// let (trigger, shutdown) = controller_core::runtime::Shutdown::new();
/// let exit = Manager::new(ctx, ManagerConfig::default())
///     .run_with_leader_election(elector, shutdown)
///     .await;
/// # drop(trigger); }
/// ```
#[derive(Debug, Clone)]
pub struct Manager {
    ctx: ControllerContext,
    config: ManagerConfig,
}

impl Manager {
    /// A manager for the controllers in `config.selection` that the provider supports.
    pub fn new(ctx: ControllerContext, config: ManagerConfig) -> Self {
        Self { ctx, config }
    }

    /// The controllers that will run: selected, configured, and supported by the provider.
    pub fn runnable(&self) -> Vec<ControllerKind> {
        let caps = self.ctx.provider.capabilities();
        self.config
            .selection
            .enabled()
            .into_iter()
            .filter(|kind| {
                let supported = match kind {
                    ControllerKind::CloudNode | ControllerKind::CloudNodeLifecycle => {
                        caps.instances
                    }
                    ControllerKind::Service => caps.load_balancers,
                    ControllerKind::Route => caps.routes && self.config.route.is_some(),
                };
                if !supported {
                    warn!(
                        controller = kind.name(),
                        provider = self.ctx.provider.provider_name(),
                        "not starting: the provider does not support it, or it is not configured"
                    );
                }
                supported
            })
            .collect()
    }

    /// Runs the controllers until `shutdown` fires, without leader election (a single replica).
    pub async fn run(&self, shutdown: Shutdown) {
        self.run_controllers(shutdown).await;
    }

    /// Contends for leadership with `elector` and runs the controllers only while leading. When leadership is lost
    /// they are stopped (dropped) before another replica could acquire, and this returns
    /// [`ManagerExit::LeadershipLost`]. On `shutdown` they stop, then the Lease is released.
    pub async fn run_with_leader_election(
        &self,
        elector: LeaderElector,
        shutdown: Shutdown,
    ) -> ManagerExit {
        let ended = elector
            .run(
                shutdown.clone().wait(),
                |leadership: Leadership| async move {
                    info!(epoch = leadership.epoch(), "leading: starting controllers");
                    // The controllers' own shutdown is the loss of leadership; the elector also drops this future then.
                    let (stop, controllers_shutdown) = Shutdown::new();
                    let lost = leadership.clone();
                    tokio::select! {
                        () = self.run_controllers(controllers_shutdown) => {}
                        () = lost.lost() => {}
                    }
                    drop(stop);
                },
            )
            .await;
        match ended {
            Ended::LeadershipLost => ManagerExit::LeadershipLost,
            Ended::Shutdown | Ended::WorkFinished(()) => ManagerExit::Shutdown,
        }
    }

    /// One Node cache for every controller of this term; everything stops when `shutdown` fires or this future is
    /// dropped.
    async fn run_controllers(&self, shutdown: Shutdown) {
        let kinds = self.runnable();
        let cache = NodeCache::new(self.ctx.client.clone());
        let mut futures: Vec<ControllerFuture> = Vec::new();
        for kind in &kinds {
            let nodes = NodeSource {
                store: cache.store(),
                changes: cache.changes(),
                generation: cache.generation(),
            };
            futures.push(self.controller(*kind, nodes, shutdown.clone()));
        }
        info!(controllers = ?kinds.iter().map(|k| k.name()).collect::<Vec<_>>(), "controllers started");
        let cache_task = cache.run();
        tokio::select! {
            _ = join_all(futures) => {}
            () = cache_task => warn!("the Node watch ended"),
            () = shutdown.wait() => {}
        }
    }

    fn controller(
        &self,
        kind: ControllerKind,
        nodes: NodeSource,
        shutdown: Shutdown,
    ) -> ControllerFuture {
        let ctx = self.ctx.clone();
        let c = &self.config;
        match kind {
            ControllerKind::CloudNode => {
                Box::pin(cloud_node::run(ctx, nodes, c.cloud_node.clone(), shutdown))
            }
            ControllerKind::CloudNodeLifecycle => Box::pin(node_lifecycle::run(
                ctx,
                nodes,
                c.node_lifecycle.clone(),
                shutdown,
            )),
            ControllerKind::Service => {
                Box::pin(service::run(ctx, nodes, c.service.clone(), shutdown))
            }
            ControllerKind::Route => match c.route.clone() {
                Some(route) => Box::pin(route::run(ctx, nodes, route, shutdown)),
                None => Box::pin(async {}),
            },
        }
    }
}
