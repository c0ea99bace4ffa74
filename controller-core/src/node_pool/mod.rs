//! The node-pool controller: on-demand cloud nodes. A [`NodePool`] names one or more provider node groups
//! ([`NodeGroups`](cloudprovider_api::NodeGroups): instance shapes with prices); when pods are unschedulable and
//! would fit a node of the pool, the cheapest instances that fit them are launched, their Nodes get the pool's labels and taints, the cloud-node controller initializes
//! them, pods land on them; empty nodes are removed after a delay.
//!
//! Each reconcile of a pool, from one snapshot (the pool, its groups' prices, instances and template nodes, the shared
//! Node cache, a Pod cache):
//!
//! 0. **Finalizer** [`TERMINATION_FINALIZER`] on every pool; a deleted pool is drained and removed instead
//!    (`termination`, `drain`).
//! 1. **Spec check**: what the schema cannot say (`minNodes <= maxNodes`, taint effects, `weight`, `limits`) and
//!    whether each node group is this pool's (the oldest pool naming a group owns it) → condition
//!    `Valid=False` naming the field, Warning Event `InvalidNodePool`, no action until the pool changes.
//! 2. **Cleanup**: an instance the cloud failed to create (`LaunchFailed`), still `Creating` after
//!    `launchTimeoutSeconds` (`LaunchTimeout`), without a Node after `registrationTimeoutSeconds`
//!    (`RegistrationTimeout`; this also collects instances of the group that never registered, whoever launched
//!    them), or registered but not initialized and Ready after `initializationTimeoutSeconds`
//!    (`InitializationTimeout`) is deleted, with its Node. Warning Events with those reasons.
//! 3. **Registration**: a Node whose `spec.providerID` is one of the group's instances gets the pool's labels
//!    (and [`POOL_LABEL`]) and taints (and, this once, its `startupTaints`), and loses [`UNREGISTERED_TAINT`],
//!    in one write (`Registered` Event); it counts as ready once initialized, startup taints gone too
//!    (`Initialized` Event, `node_pool_launch_to_ready_seconds`), and is then labelled [`INITIALIZED_LABEL`],
//!    so the initialization timeout never applies to it again.
//! 4. **Scale up** (`launch`, deciding in `packing`): unschedulable pods (`PodScheduled=False`, reason
//!    `Unschedulable`) that would fit one of the pool's shapes — one per node group in `nodeGroup`/`nodeGroups`,
//!    its template node plus the pool's labels and taints (nodeSelector, required node affinity, tolerations,
//!    resource requests) — are placed, largest first, on the free room of the pool's nodes (launching ones
//!    included, which is what keeps it from provisioning twice for the same pods), then on new nodes: each new
//!    node keeps every group that fits its pods and is launched as the cheapest of them (the groups' prices;
//!    without, the smallest). Host ports, required pod anti-affinity and `DoNotSchedule` topology spread
//!    (`topology`) are honoured; `maxNodes`, `limits` and each group's size bound the launches. Pods are
//!    batched: the launch waits until the set of such pods has not changed for
//!    [`batch_idle`](NodePoolConfig::batch_idle), or [`batch_max`](NodePoolConfig::batch_max) after the first.
//!    `TriggeredScaleUp` / `FailedScaleUp` / `NotTriggerScaleUp` (cluster-autoscaler's reasons). A pod that
//!    would fit several pools counts for the one with the highest `weight` (then the first by name), unless that
//!    pool left it out at its `maxNodes` or `limits`.
//! 5. **Scale down**: a ready node with no pods but DaemonSet and mirror pods, for `emptyNodeDelaySeconds`, and
//!    not needed by a pending pod, is cordoned, checked again (a pod bound meanwhile uncordons it), deleted, and
//!    its instance terminated — never below `minNodes`. `ScaleDown` Events on the pool and the Node. With
//!    `consolidationPolicy: WhenEmptyOrUnderutilized` also an underutilized node (`consolidation`).
//! 6. **Status**: desired / launching / ready counts, the resources of the pool's nodes (what `limits` bounds),
//!    one entry per instance (with its node group), conditions, the last decisions —
//!    written only when changed.
//!
//! Every decision is counted in [`NodePoolMetrics`]. Time-based steps requeue the pool for their next deadline.
//!
//! The pool assumes it owns its node group: instances another actor adds to the group are adopted (and removed if
//! they never register).
//!
//! ```no_run
//! use controller_core::manager::{ControllerRegistry, Manager};
//! use controller_core::node_pool::{NodePoolConfig, NodePoolController};
//! use controller_core::runtime::CancellationToken;
//! # async fn demo(ctx: controller_core::ControllerContext) -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = ControllerRegistry::new();
//! registry.register(NodePoolController::new(NodePoolConfig::default()).enabled_by_default(true))?;
//! let selection = registry.select(["*"])?;
//! Manager::new(ctx, &registry, &selection).run(CancellationToken::new()).await;
//! # Ok(()) }
//! ```

mod consolidation;
mod crd;
mod disrupt;
mod disruption;
mod drain;
mod launch;
mod lifecycle;
mod metrics;
mod packing;
mod reconcile;
mod resources;
mod scale_up;
mod status;
mod sync;
mod termination;
mod topology;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::Capability;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use parking_lot::Mutex;
use tracing::debug;

pub use consolidation::DO_NOT_DISRUPT;
pub use crd::{
    ConsolidationPolicy, DeletionPolicy, DisruptionBudget, GROUP, INITIALIZED_LABEL, NodePool,
    NodePoolSpec, NodePoolStatus, POOL_LABEL, PoolNodeStatus, ScalingDecision, SpecError,
    TERMINATION_FINALIZER, UNREGISTERED_TAINT,
};
pub use disruption::NODEPOOL_HASH_ANNOTATION;
pub use drain::DISRUPTED_TAINT;
pub use metrics::{DecisionLabels, NodePoolMetrics, NodeStateLabels, PoolLabel};

use crate::manager::{ControllerError, ManagedController, SharedCaches};
use crate::runtime::{
    self, CacheSource, CancellationToken, EventPublisher, ReconcileError, Reconciler, RunOptions,
};
use crate::{ControllerContext, NodeSource};

/// The controller's name (in logs, metrics and as the field manager).
pub const CONTROLLER_NAME: &str = "node-pool-controller";

/// Event reasons, on the NodePool unless noted.
pub mod reasons {
    /// Normal: nodes launched for pending pods (cluster-autoscaler's reason).
    pub const TRIGGERED_SCALE_UP: &str = "TriggeredScaleUp";
    /// Warning: the launch request failed (cluster-autoscaler's reason).
    pub const FAILED_SCALE_UP: &str = "FailedScaleUp";
    /// Normal: pending pods fit the pool but it is at `maxNodes` (cluster-autoscaler's reason).
    pub const NOT_TRIGGER_SCALE_UP: &str = "NotTriggerScaleUp";
    /// Normal, on the pool and the Node: an empty node was removed (cluster-autoscaler's reason).
    pub const SCALE_DOWN: &str = "ScaleDown";
    /// Normal: a launched instance's Node registered and got the pool's labels and taints (Karpenter's).
    pub const REGISTERED: &str = "Registered";
    /// Normal: a Node of the pool is initialized and Ready (Karpenter's).
    pub const INITIALIZED: &str = "Initialized";
    /// Warning: the cloud failed to create an instance; it was deleted.
    pub const LAUNCH_FAILED: &str = "LaunchFailed";
    /// Warning: an instance stayed `Creating` too long; it was deleted.
    pub const LAUNCH_TIMEOUT: &str = "LaunchTimeout";
    /// Warning: no Node registered for an instance in time; it was deleted.
    pub const REGISTRATION_TIMEOUT: &str = "RegistrationTimeout";
    /// Warning: a Node was not initialized and Ready in time; it and its instance were deleted.
    pub const INITIALIZATION_TIMEOUT: &str = "InitializationTimeout";
    /// Warning: the spec cannot be used; the message names the field.
    pub const INVALID_NODE_POOL: &str = "InvalidNodePool";
    /// Normal, on the pool and the Node: the node is being drained because the pool is being deleted.
    pub const DRAINING: &str = "Draining";
    /// Warning, on the pool and the Node: an eviction was refused (a PodDisruptionBudget); retried, never forced
    /// (Karpenter's reason).
    pub const FAILED_DRAINING: &str = "FailedDraining";
    /// Normal: a drained node of the deleted pool was deleted and its instance terminated.
    pub const TERMINATED: &str = "Terminated";
    /// Normal: replacement nodes are launched before a node is disrupted (Karpenter's reason).
    pub const DISRUPTION_LAUNCHING: &str = "DisruptionLaunching";
    /// Normal: a disruption waits for its replacement nodes to be ready (Karpenter's reason).
    pub const DISRUPTION_WAITING_READINESS: &str = "DisruptionWaitingReadiness";
    /// Normal, on the pool and the Node: a disrupted node is being drained (Karpenter's reason).
    pub const DISRUPTION_TERMINATING: &str = "DisruptionTerminating";
    /// Normal: a node cannot be disrupted now (its pods would fit nowhere else) (Karpenter's reason).
    pub const DISRUPTION_BLOCKED: &str = "DisruptionBlocked";
    /// Warning: a reconcile failed (cloud or API error); retried with backoff.
    pub const SYNC_FAILED: &str = "NodePoolSyncFailed";
}

/// Settings of the node-pool controller.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodePoolConfig {
    /// How many pools are reconciled at once.
    pub workers: u16,
    /// Launch once the set of pending pods has been unchanged this long (Karpenter: 1 s).
    pub batch_idle: Duration,
    /// ... or this long after the first of them was seen (Karpenter: 10 s).
    pub batch_max: Duration,
    /// How often a pool with instances in flight is looked at again (cloud states change without a watch event).
    pub poll_interval: Duration,
    /// How often an idle pool is looked at again.
    pub resync_interval: Duration,
    /// Pod and Node changes are gathered this long before pools are reconciled.
    pub debounce: Duration,
    /// The controller's metrics.
    pub metrics: NodePoolMetrics,
}

impl Default for NodePoolConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            batch_idle: Duration::from_secs(1),
            batch_max: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(200),
            metrics: NodePoolMetrics::default(),
        }
    }
}

/// The node-pool controller as a [`ManagedController`]: `node-pool` (alias `node-pool-controller`), needs node
/// groups. Off by default in a cloud-controller-manager (`--controllers=*,node-pool` turns it on), as
/// cluster-autoscaler is a separate component upstream; [`enabled_by_default`](Self::enabled_by_default) changes that
/// for a binary that runs it alone.
#[derive(Clone, Debug)]
pub struct NodePoolController {
    config: NodePoolConfig,
    default_on: bool,
}

impl NodePoolController {
    /// The controller with these settings, off unless named in `--controllers`.
    pub fn new(config: NodePoolConfig) -> Self {
        Self {
            config,
            default_on: false,
        }
    }

    /// Whether `*` includes it.
    pub fn enabled_by_default(mut self, on: bool) -> Self {
        self.default_on = on;
        self
    }
}

impl ManagedController for NodePoolController {
    fn name(&self) -> &'static str {
        "node-pool"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &[CONTROLLER_NAME]
    }

    fn enabled_by_default(&self) -> bool {
        self.default_on
    }

    fn required_capabilities(&self) -> &'static [Capability] {
        &[Capability::NodeGroups]
    }

    fn run(
        &self,
        ctx: ControllerContext,
        caches: SharedCaches,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ControllerError>> {
        let nodes = caches.nodes();
        let pods = caches.pods();
        let config = self.config.clone();
        Box::pin(async move {
            check_crd(&ctx.client).await?;
            run(ctx, nodes, pods, config, shutdown).await;
            Ok(())
        })
    }
}

/// How long the controller waits at start for the NodePool CRD to be served: a CRD applied a moment before is not
/// served until the apiserver has established it (about a second).
const CRD_WAIT: Duration = Duration::from_secs(15);

/// Fails when the NodePool CRD is still not served after [`CRD_WAIT`] (the watch would retry forever, silently);
/// other errors are left to the watch's own retries.
async fn check_crd(client: &kube::Client) -> Result<(), ControllerError> {
    let pools: Api<NodePool> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + CRD_WAIT;
    loop {
        match pools.list_metadata(&ListParams::default().limit(1)).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ControllerError::startup(
                        "the NodePool CRD (nodepools.kube-cloud-rs.dev) is not installed; install it with \
                         `node-pool-controller --print-crd | kubectl apply -f -`",
                    ));
                }
                debug!("the NodePool CRD is not served yet; waiting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => return Ok(()),
        }
    }
}

/// Runs the node-pool controller until `shutdown` fires. The [`NodePool`] CRD must be installed (see
/// `NodePool::crd()`).
async fn run(
    ctx: ControllerContext,
    nodes: NodeSource,
    pods: CacheSource<Pod>,
    config: NodePoolConfig,
    shutdown: CancellationToken,
) {
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    let pod_events = pods.changes.map(|_| ());
    let pod_deletions = generation_changes(pods.generation);
    let node_events = nodes.changes.map(|_| ());
    let node_deletions = generation_changes(nodes.generation);
    let triggers = futures::stream::select_all([
        pod_events.boxed(),
        pod_deletions.boxed(),
        node_events.boxed(),
        node_deletions.boxed(),
    ]);
    let controller = Controller::new(pools, watcher::Config::default())
        .reconcile_all_on(debounced(triggers, config.debounce))
        .graceful_shutdown_on(shutdown.cancelled_owned());
    let reconciler = PoolReconciler {
        client: ctx.client.clone(),
        provider: Arc::clone(&ctx.provider),
        events: ctx.events.clone(),
        metrics: config.metrics.clone(),
        nodes: nodes.store,
        pods: pods.store,
        synced: [nodes.synced, pods.synced],
        pools: controller.store(),
        config: config.clone(),
        memory: Mutex::new(BTreeMap::new()),
    };
    let options = RunOptions {
        workers: config.workers,
        events: ctx.events.clone(),
        metrics: ctx.metrics.clone(),
    };
    runtime::run(controller, reconciler, options).await;
    debug!(controller = CONTROLLER_NAME, "stopped");
}

/// One item per change of the Node cache's generation (deletions included).
fn generation_changes(
    generation: tokio::sync::watch::Receiver<u64>,
) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold(generation, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// Gathers items for `window` after the first, then yields one `()`: a burst of pod events is one reconcile of
/// each pool, not one per pod. The input keeps being polled meanwhile (it drives a reflector).
fn debounced<S>(input: S, window: Duration) -> impl Stream<Item = ()> + Send
where
    S: Stream<Item = ()> + Send + 'static,
{
    futures::stream::unfold(Box::pin(input), move |mut input| async move {
        input.next().await?;
        let timer = tokio::time::sleep(window);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                () = &mut timer => break,
                next = input.next() => if next.is_none() { break },
            }
        }
        Some(((), input))
    })
}

/// What the controller remembers about a pool between reconciles (lost on restart, which only restarts delays).
#[derive(Debug, Default)]
struct PoolMemory {
    /// Launch time per provider ID (also persisted in `status.nodes[].launchedAt`).
    launched_at: BTreeMap<String, k8s_openapi::jiff::Timestamp>,
    /// The last phase reported per provider ID, so each transition is announced once.
    phases: BTreeMap<String, lifecycle::Phase>,
    /// Since when each node (by name and UID) has been empty.
    empty_since: BTreeMap<(String, String), tokio::time::Instant>,
    /// The pending pods waiting for new nodes.
    batch: Option<Batch>,
    /// How many pending pods were left out at `maxNodes` when last announced.
    left_out_at_max: Option<usize>,
    /// The pool's node shapes, for the tie-break between pools.
    shapes: Vec<scale_up::NodeShape>,
    /// The pending pods (keys) the last plan left without a node (at `maxNodes` or `limits`): a pool after this
    /// one may take them.
    left_out: std::collections::BTreeSet<String>,
    /// The generation last rejected as invalid, and when (see `PoolReconciler::reject`).
    invalid: Option<(Option<i64>, tokio::time::Instant)>,
    /// Provider IDs whose drain was announced (the pool is being deleted).
    draining: std::collections::BTreeSet<String>,
    /// The nodes being disrupted (by provider ID), until they are gone.
    disrupting: BTreeMap<String, disruption::Disruption>,
    /// The consolidation candidate, and since when it has been one.
    underused: Option<(String, tokio::time::Instant)>,
}

#[derive(Debug)]
struct Batch {
    pods: std::collections::BTreeSet<String>,
    first_seen: tokio::time::Instant,
    last_change: tokio::time::Instant,
}

struct PoolReconciler {
    client: kube::Client,
    provider: Arc<dyn cloudprovider_api::CloudProvider>,
    events: EventPublisher,
    metrics: NodePoolMetrics,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// The Node and Pod caches' initial lists.
    synced: [runtime::Synced; 2],
    pools: Store<NodePool>,
    config: NodePoolConfig,
    memory: Mutex<BTreeMap<String, PoolMemory>>,
}

impl Reconciler<NodePool> for PoolReconciler {
    fn name(&self) -> &'static str {
        CONTROLLER_NAME
    }

    async fn reconcile(&self, pool: Arc<NodePool>) -> Result<Action, ReconcileError> {
        if pool.meta().deletion_timestamp.is_some() {
            return self.terminate(&pool).await;
        }
        if !termination::has_finalizer(&pool) {
            self.add_finalizer(&pool).await?;
        }
        self.sync(&pool).await
    }

    fn failure_reason(&self, err: &ReconcileError) -> Option<&'static str> {
        match err {
            ReconcileError::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.is_conflict() || status.is_not_found() => None,
            ReconcileError::Invalid { .. } => Some(reasons::INVALID_NODE_POOL),
            _ => Some(reasons::SYNC_FAILED),
        }
    }
}

/// Everything this controller decides from a cached Node, for the projection test
/// ([`projection`](crate::runtime::projection)).
#[cfg(test)]
pub(crate) fn node_decisions(node: &Node) -> String {
    let mut spec = NodePoolSpec::new("g", 3);
    spec.labels.insert("team".into(), "ml".into());
    format!(
        "{:?}",
        (
            lifecycle::is_initialized(node),
            lifecycle::was_initialized(node),
            lifecycle::accepts_pods(node, &[]),
            lifecycle::registration_patch(node, "pool", &spec),
            resources::node_allocatable(node),
            scale_up::NodeShape::for_pool(node, &spec, "pool"),
            consolidation::do_not_disrupt(&node.metadata),
        )
    )
}

/// Everything this controller decides from a cached Pod, for the projection test
/// ([`projection`](crate::runtime::projection)).
#[cfg(test)]
pub(crate) fn pod_decisions(pod: &Pod) -> String {
    let shape = |labels: &[(&str, &str)], taints: Vec<k8s_openapi::api::core::v1::Taint>| {
        scale_up::NodeShape {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            taints,
            ..scale_up::NodeShape::default()
        }
    };
    let gpu = k8s_openapi::api::core::v1::Taint {
        key: "gpu".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    format!(
        "{:?}",
        (
            scale_up::is_unschedulable(pod),
            scale_up::fits_shape(pod, &shape(&[("pool", "a")], vec![])),
            scale_up::fits_shape(pod, &shape(&[("pool", "b")], vec![])),
            scale_up::fits_shape(pod, &shape(&[("pool", "a")], vec![gpu])),
            lifecycle::blocks_removal(pod),
            lifecycle::bound_node(pod),
            resources::pod_requests(pod),
            consolidation::do_not_disrupt(&pod.metadata),
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_one_trigger() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let input =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
            );
        let triggers = debounced(input, Duration::from_millis(200));
        futures::pin_mut!(triggers);
        for _ in 0..5 {
            tx.send(()).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(triggers.next().await, Some(()));
        // Nothing more was sent: the burst gave one trigger.
        let more = tokio::time::timeout(Duration::from_secs(1), triggers.next()).await;
        assert!(more.is_err(), "{more:?}");
        tx.send(()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(triggers.next().await, Some(()));
        drop(tx);
        assert_eq!(triggers.next().await, None);
    }
}
