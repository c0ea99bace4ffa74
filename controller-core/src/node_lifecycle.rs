//! The cloud-node-lifecycle controller (upstream `cloud-node-lifecycle-controller`): deletes Nodes whose instance
//! is gone and taints Nodes whose instance is shut down.
//!
//! Every [`monitor_period`](NodeLifecycleConfig::monitor_period) it reads the shared Node cache (no watch of its
//! own) and:
//! * for a Node whose `Ready` condition is `True`, removes the taint [`SHUTDOWN_TAINT`] if present;
//! * for every other Node (Ready `False`, `Unknown` or missing) asks the cloud once, for all of them together,
//!   with [`instance_states`](cloudprovider_api::Instances::instance_states), then
//!   * `Gone`: Normal Event `DeletingNode` and deletes the Node (Warning `DeletingNodeFailed` on error), with a UID
//!     precondition so a re-created Node of the same name survives;
//!   * `Shutdown`: adds the shutdown taint (`NoSchedule`);
//!   * `Running`: removes the shutdown taint if present;
//!   * an error: nothing for that Node — a Node is never deleted on an error.
//!
//! Nodes still carrying [`UNINITIALIZED_TAINT`](crate::cloud_node::UNINITIALIZED_TAINT) are left alone: they may
//! have no provider ID yet, so a lookup by name could wrongly report them gone. Taint changes are merge patches
//! conditioned on the observed `resourceVersion`; a conflict is retried on the next period.
//!
//! The loop is the runtime's [`Periodic`]: it waits for the Node cache's initial list, pauses for the cloud's
//! retry-after when the lookup is throttled, and counts every pass in `cloud_controller_reconcile_total`
//! (`success`; `transient` when a lookup or a write failed; `throttled`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudprovider_api::{Capability, CloudProvider, InstanceState, Unsupported};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::cloud_node::has_uninitialized_taint;
use crate::runtime::{CancellationToken, EventPublisher, PassOutcome, Periodic, PeriodicPass};
use crate::{ControllerContext, NodeSource};

/// The controller's name, as upstream names it.
pub const CONTROLLER_NAME: &str = "cloud-node-lifecycle-controller";

/// The taint (effect `NoSchedule`) put on Nodes whose instance is shut down.
pub const SHUTDOWN_TAINT: &str = "node.cloudprovider.kubernetes.io/shutdown";

/// Reason of the Normal Event published before deleting a Node whose instance is gone (upstream's).
pub const DELETING_NODE_REASON: &str = "DeletingNode";

/// Reason of the Warning Event published when that deletion fails.
pub const DELETING_NODE_FAILED_REASON: &str = "DeletingNodeFailed";

const NO_SCHEDULE: &str = "NoSchedule";

/// How many Node writes (deletes, taint patches) of one period run at once.
const WRITE_CONCURRENCY: usize = 16;

/// Settings of the cloud-node-lifecycle controller.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeLifecycleConfig {
    /// How often Nodes are checked (upstream `--node-monitor-period`, default 5 s).
    pub monitor_period: Duration,
    /// The controller's metrics.
    pub metrics: NodeLifecycleMetrics,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            monitor_period: Duration::from_secs(5),
            metrics: NodeLifecycleMetrics::default(),
        }
    }
}

/// Metrics of the cloud-node-lifecycle controller (upstream has none; these are ours). Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeLifecycleMetrics {
    /// `cloud_node_lifecycle_deleted_nodes_total`: Nodes deleted because their instance was gone.
    pub deleted_nodes: Counter,
    /// `cloud_node_lifecycle_instance_state_errors_total`: per-node errors of the batched state lookup.
    pub instance_state_errors: Counter,
    /// `cloud_node_lifecycle_monitor_duration_seconds`: duration of one monitoring pass.
    pub monitor_duration: Histogram,
}

impl Default for NodeLifecycleMetrics {
    /// Unregistered metrics.
    fn default() -> Self {
        Self {
            deleted_nodes: Counter::default(),
            instance_state_errors: Counter::default(),
            monitor_duration: Histogram::new(exponential_buckets(0.005, 4.0, 8)),
        }
    }
}

impl NodeLifecycleMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "cloud_node_lifecycle_deleted_nodes",
            "Nodes deleted because their instance no longer exists",
            m.deleted_nodes.clone(),
        );
        registry.register(
            "cloud_node_lifecycle_instance_state_errors",
            "Per-node errors of the batched instance state lookup",
            m.instance_state_errors.clone(),
        );
        registry.register(
            "cloud_node_lifecycle_monitor_duration_seconds",
            "Duration of one pass over the Nodes",
            m.monitor_duration.clone(),
        );
        m
    }
}

crate::manager::node_cache_controller! {
    /// The cloud-node-lifecycle controller as a [`ManagedController`](crate::manager::ManagedController): `cloud-node-lifecycle` (alias
    /// `cloud-node-lifecycle-controller`), needs instances.
    NodeLifecycleController(NodeLifecycleConfig) = "cloud-node-lifecycle", aliases ["cloud-node-lifecycle-controller"], needs Capability::Instances, runs run
}

/// Runs the cloud-node-lifecycle controller until `shutdown` fires: a [`Periodic`] pass every monitor period.
async fn run(
    ctx: ControllerContext,
    nodes: NodeSource,
    config: NodeLifecycleConfig,
    shutdown: CancellationToken,
) {
    let NodeSource {
        store,
        changes,
        synced,
        ..
    } = nodes;
    // This loop reads the store on a timer; it needs no change stream.
    drop(changes);
    let lifecycle = Lifecycle {
        nodes: Api::all(ctx.client.clone()),
        provider: Arc::clone(&ctx.provider),
        events: ctx.events.clone(),
        metrics: config.metrics,
        store: store.clone(),
    };
    Periodic::new(lifecycle, ctx.metrics.clone(), shutdown)
        .run(synced, config.monitor_period)
        .await;
    debug!(controller = CONTROLLER_NAME, "stopped");
}

struct Lifecycle {
    nodes: Api<Node>,
    provider: Arc<dyn CloudProvider>,
    events: EventPublisher,
    metrics: NodeLifecycleMetrics,
    store: Store<Node>,
}

/// What one Node needs this period.
enum Step {
    RemoveShutdownTaint,
    AddShutdownTaint,
    Delete,
}

/// The steps of one period, each with its Node.
type Steps = Vec<(Arc<Node>, Step)>;

impl PeriodicPass for Lifecycle {
    fn name(&self) -> &'static str {
        CONTROLLER_NAME
    }

    fn pass(&self) -> impl Future<Output = PassOutcome> + Send {
        self.monitor()
    }
}

impl Lifecycle {
    /// One pass over the cached Nodes. Throttled when the cloud throttled the lookup; incomplete when a lookup or
    /// a write failed (the next period retries either way).
    async fn monitor(&self) -> PassOutcome {
        let started = Instant::now();
        let (mut steps, not_ready) = self.triage();
        let mut outcome = self.look_up(not_ready, &mut steps).await;
        if !self.apply_all(steps).await {
            outcome.incomplete = true;
        }
        self.metrics
            .monitor_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// From the cache: the steps decided without the cloud (a Ready Node losing the shutdown taint) and the Nodes
    /// to ask the cloud about.
    fn triage(&self) -> (Steps, Vec<Arc<Node>>) {
        let mut steps = Vec::new();
        let mut not_ready = Vec::new();
        for node in self.store.state() {
            if node.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if is_ready(&node) {
                if has_shutdown_taint(&node) {
                    steps.push((node, Step::RemoveShutdownTaint));
                }
            } else if has_uninitialized_taint(&node) {
                debug!(node = %node.name_any(), "not ready but not initialized yet; leaving it to cloud-node");
            } else {
                not_ready.push(node);
            }
        }
        (steps, not_ready)
    }

    /// Asks the cloud once about every Node in `not_ready` and adds the steps its answers call for.
    async fn look_up(&self, not_ready: Vec<Arc<Node>>, steps: &mut Steps) -> PassOutcome {
        let mut outcome = PassOutcome::default();
        if not_ready.is_empty() {
            return outcome;
        }
        let instances = self.provider.instances().unwrap_or(&Unsupported);
        let batch: Vec<&Node> = not_ready.iter().map(|n| n.as_ref()).collect();
        let states = instances.instance_states(&batch).await;
        if states.len() != not_ready.len() {
            // A provider bug; acting on a misaligned answer could delete the wrong Node.
            error!(
                nodes = not_ready.len(),
                answers = states.len(),
                "the provider answered instance_states with the wrong number of entries; ignoring the answer"
            );
            outcome.incomplete = true;
            return outcome;
        }
        for (node, state) in not_ready.into_iter().zip(states) {
            match state {
                Ok(InstanceState::Gone) => steps.push((node, Step::Delete)),
                Ok(InstanceState::Shutdown) if !has_shutdown_taint(&node) => {
                    steps.push((node, Step::AddShutdownTaint));
                }
                Ok(InstanceState::Running) if has_shutdown_taint(&node) => {
                    steps.push((node, Step::RemoveShutdownTaint));
                }
                Ok(_) => {}
                Err(e) => {
                    // Never act on an error: the next period asks again.
                    self.metrics.instance_state_errors.inc();
                    warn!(node = %node.name_any(), error = %e, "could not get the instance state");
                    outcome.incomplete = true;
                    if let Some(after) = e.retry_after() {
                        outcome.retry_after = outcome.retry_after.max(Some(after));
                    }
                }
            }
        }
        outcome
    }

    /// Applies `steps`, a few at a time. True if every one was done.
    async fn apply_all(&self, steps: Steps) -> bool {
        futures::stream::iter(steps)
            .map(|(node, step)| {
                let span = info_span!("node_lifecycle", controller = CONTROLLER_NAME, node = %node.name_any());
                async move { self.apply(&node, step).await }.instrument(span)
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .fold(true, |all, done| async move { all && done })
            .await
    }

    /// Applies one step. True if it was done (or turned out not to be needed).
    async fn apply(&self, node: &Node, step: Step) -> bool {
        match step {
            Step::Delete => self.delete(node).await,
            Step::AddShutdownTaint => {
                let mut taints = taints(node).to_vec();
                taints.push(Taint {
                    key: SHUTDOWN_TAINT.to_owned(),
                    effect: NO_SCHEDULE.to_owned(),
                    ..Taint::default()
                });
                info!("instance is shut down; tainting the node");
                self.patch_taints(node, &taints).await
            }
            Step::RemoveShutdownTaint => {
                let taints: Vec<Taint> = taints(node)
                    .iter()
                    .filter(|t| !is_shutdown_taint(t))
                    .cloned()
                    .collect();
                info!("removing the shutdown taint");
                self.patch_taints(node, &taints).await
            }
        }
    }

    /// Deletes the Node (this UID only). True unless the delete failed.
    async fn delete(&self, node: &Node) -> bool {
        let name = node.name_any();
        let reference = node.object_ref(&());
        info!("deleting the node: its instance no longer exists in the cloud");
        self.events.normal(
            &reference,
            DELETING_NODE_REASON,
            format!("Deleting node {name} because it does not exist in the cloud provider"),
        );
        let params = DeleteParams {
            // Only this Node: a Node re-created under the same name is another machine.
            preconditions: Some(Preconditions {
                uid: node.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.nodes.delete(&name, &params).await {
            Ok(_) => {
                self.metrics.deleted_nodes.inc();
                true
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                debug!("already deleted");
                true
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                debug!("not deleted: the node was re-created under the same name");
                true
            }
            Err(e) => {
                warn!(error = %e, "could not delete the node");
                self.events.warning(
                    &reference,
                    DELETING_NODE_FAILED_REASON,
                    format!("Error deleting node {name}: {e}"),
                );
                false
            }
        }
    }

    /// Replaces the Node's taints. True if the patch applied.
    async fn patch_taints(&self, node: &Node, taints: &[Taint]) -> bool {
        // The taint list is replaced whole; the resourceVersion turns a concurrent change into a 409.
        let patch = json!({
            "metadata": { "resourceVersion": node.resource_version() },
            "spec": { "taints": taints },
        });
        let params = PatchParams {
            field_manager: Some(CONTROLLER_NAME.to_owned()),
            ..PatchParams::default()
        };
        match self
            .nodes
            .patch(&node.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {
                debug!(reason = %s.reason, "node changed meanwhile; retrying next period");
                false
            }
            Err(e) => {
                warn!(error = %e, "could not update the node's taints");
                false
            }
        }
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn is_shutdown_taint(taint: &Taint) -> bool {
    taint.key == SHUTDOWN_TAINT && taint.effect == NO_SCHEDULE
}

fn has_shutdown_taint(node: &Node) -> bool {
    taints(node).iter().any(is_shutdown_taint)
}

/// Everything this controller decides from a cached Node, for the projection test
/// ([`projection`](crate::runtime::projection)).
#[cfg(test)]
pub(crate) fn node_decisions(node: &Node) -> String {
    format!(
        "{:?}",
        (
            node.metadata.deletion_timestamp.is_some(),
            is_ready(node),
            has_shutdown_taint(node),
            has_uninitialized_taint(node),
            taints(node),
            node.metadata.uid.as_deref(),
        )
    )
}
