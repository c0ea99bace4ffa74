//! A controller of the provider's own (feature `ccm`): labels each Node of the inventory with its machine's power
//! state, `inventory.example.com/power: on|off`, so `kubectl get nodes -L inventory.example.com/power` shows what
//! the inventory system says. Registered in the provider's `inventory-ccm` binary as `power-labels`, off by
//! default (`--controllers=*,power-labels` turns it on), and run by the same manager as the built-in controllers:
//! only while the replica holds the leader Lease, on the shared Node cache.
//!
//! It is written against published APIs only: [`ManagedController`] to be run by the manager, and
//! [`Reconciler`] with [`runtime::run`] for kube-runtime's controller with the shared error policy, Events,
//! metrics and a tracing span per Node.

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{Capability, node_provider_id};
use controller_core::ControllerContext;
use controller_core::manager::{ControllerError, ManagedController, SharedCaches};
use controller_core::runtime::{self, CancellationToken, ReconcileError, Reconciler, RunOptions};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};

/// The label this controller keeps.
pub const POWER_LABEL: &str = "inventory.example.com/power";

/// Warning Event when the inventory cannot be asked or the Node cannot be labelled.
pub const SYNC_FAILED_REASON: &str = "PowerLabelSyncFailed";

/// The `power-labels` controller. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct PowerLabels {
    resync: Duration,
}

impl PowerLabels {
    /// Re-checks every Node each `resync` (power changes in the inventory cause no Kubernetes event).
    pub fn new(resync: Duration) -> Self {
        Self { resync }
    }
}

impl ManagedController for PowerLabels {
    fn name(&self) -> &'static str {
        "power-labels"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["power-labels-controller"]
    }

    fn enabled_by_default(&self) -> bool {
        false
    }

    fn required_capabilities(&self) -> &'static [Capability] {
        &[Capability::Instances]
    }

    fn run(
        &self,
        ctx: ControllerContext,
        caches: SharedCaches,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ControllerError>> {
        let nodes = caches.nodes();
        let reconciler = PowerReconciler {
            ctx: ctx.clone(),
            resync: self.resync,
        };
        Box::pin(async move {
            // Counted in `workqueue_*{name="power-labels-controller"}` (the reconciler's name) while they wait.
            let queue = ctx.metrics.work_queue("power-labels-controller");
            let changes = queue.track(nodes.changes, |node| {
                Some(runtime::object_key(node.as_ref()))
            });
            let controller = Controller::for_shared_stream(changes, nodes.store)
                .graceful_shutdown_on(shutdown.cancelled_owned());
            let options = RunOptions::new(1, ctx.events.clone(), ctx.metrics.clone());
            runtime::run(controller, reconciler, options).await;
            Ok(())
        })
    }
}

struct PowerReconciler {
    ctx: ControllerContext,
    resync: Duration,
}

impl Reconciler<Node> for PowerReconciler {
    fn name(&self) -> &'static str {
        "power-labels-controller"
    }

    async fn reconcile(&self, node: Arc<Node>) -> Result<Action, ReconcileError> {
        // Only Nodes the cloud-node controller has initialized as ours.
        let ours = node_provider_id(&node).is_some_and(|id| id.starts_with("inventory://"));
        if !ours {
            return Ok(Action::await_change());
        }
        let off = self
            .ctx
            .instances()
            .instance_shutdown(&node)
            .await
            .map_err(|e| ReconcileError::cloud("InstanceShutdown", e))?;
        let want = if off { "off" } else { "on" };
        if node.labels().get(POWER_LABEL).map(String::as_str) != Some(want) {
            let patch = serde_json::json!({ "metadata": { "labels": { POWER_LABEL: want } } });
            Api::<Node>::all(self.ctx.client.clone())
                .patch(
                    &node.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| ReconcileError::kube("label the Node with its power state", e))?;
            tracing::info!(power = want, "labelled");
        }
        Ok(Action::requeue(self.resync))
    }

    fn failure_reason(&self, _err: &ReconcileError) -> Option<&'static str> {
        Some(SYNC_FAILED_REASON)
    }
}
