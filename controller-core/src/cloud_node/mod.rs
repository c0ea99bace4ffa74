//! The cloud-node controller (upstream `cloud-node-controller`): initializes Nodes registered by a kubelet with
//! `--cloud-provider=external` and keeps their addresses in sync with the cloud.
//!
//! * A Node carrying the taint [`UNINITIALIZED_TAINT`] is initialized from one
//!   [`instance_metadata`](cloudprovider_api::Instances::instance_metadata) call: `spec.providerID` (only if
//!   empty), the instance-type / zone / region labels and their beta twins, the provider's additional labels
//!   (except keys in the `kubernetes.io` / `k8s.io` namespaces or already on the node), the taint removed, then
//!   `status.addresses`. That is two API writes: one merge patch of metadata + spec, conditioned on the observed
//!   `resourceVersion` (the taint list is replaced whole, so a concurrent change must fail it with 409 rather than
//!   be lost), then one merge patch of status. A Normal Event `Synced` follows.
//! * The annotation [`PROVIDED_NODE_IP_ANNOTATION`] is honoured as upstream does today: the provided IP(s) must be
//!   among the cloud's addresses (else a Warning Event, and the taint stays) and are listed first.
//! * An initialized Node's addresses are refreshed every
//!   [`node_status_update_frequency`](CloudNodeConfig::node_status_update_frequency) by a pass of its own
//!   (upstream's `UpdateNodeStatus`), [`status_update_workers`](CloudNodeConfig::status_update_workers) Nodes at a
//!   time: one metadata call per node per period, whatever the number of watch events, and a status patch only
//!   when they changed.
//! * On an initialized Node, the GA twins of the beta zone, region and instance-type labels are kept in step on
//!   every change (upstream's `reconcileNodeLabels`).
//! * Errors follow the runtime's policy: a missing instance, a conflict or a cloud error keeps the taint and
//!   retries with per-node backoff; a throttled cloud is retried after its retry-after.

mod addresses;
mod labels;
mod status;

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{Capability, CloudError, CloudProvider, Instances, Unsupported};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tracing::{debug, info};

pub use addresses::PROVIDED_NODE_IP_ANNOTATION;

use crate::runtime::{
    self, CancellationToken, EventPublisher, Periodic, ReconcileError, Reconciler, RunOptions,
    object_key,
};
use crate::{ControllerContext, NodeSource};

/// The controller's name, as upstream names it.
pub const CONTROLLER_NAME: &str = "cloud-node-controller";

/// The `name` of its `workqueue_*` metrics, as upstream's queue is called.
const QUEUE_NAME: &str = "Nodes";

/// The taint a kubelet with `--cloud-provider=external` registers its Node with; this controller removes it once
/// the Node is initialized.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// Reason of the Warning Event published when initializing or syncing a Node fails.
pub const SYNC_FAILED_REASON: &str = "SyncNodeFailed";

/// Reason of the Normal Event published when a Node is initialized (upstream's).
pub const SYNCED_REASON: &str = "Synced";

/// Settings of the cloud-node controller.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CloudNodeConfig {
    /// How many Nodes are initialized at once (upstream `--concurrent-node-syncs`, default 1).
    pub workers: u16,
    /// How many Nodes' addresses are refreshed at once (upstream `--concurrent-node-status-updates`; its 0, "as
    /// many as `--concurrent-node-syncs`", is resolved by the flags). Zero counts as one.
    pub status_update_workers: u16,
    /// How often an initialized Node's addresses are refreshed from the cloud (upstream
    /// `--node-status-update-frequency`, default 5 minutes).
    pub node_status_update_frequency: Duration,
    /// The controller's metrics.
    pub metrics: CloudNodeMetrics,
}

impl Default for CloudNodeConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            status_update_workers: 1,
            node_status_update_frequency: Duration::from_secs(5 * 60),
            metrics: CloudNodeMetrics::default(),
        }
    }
}

/// Upstream's cloud-node metrics. Cheap to clone (the histograms are shared).
#[derive(Clone, Debug)]
pub struct CloudNodeMetrics {
    /// `node_controller_cloud_provider_taint_removal_delay_seconds`: seconds from a Node's creation to the removal
    /// of its uninitialized taint.
    pub taint_removal_delay: Histogram,
    /// `node_controller_initial_node_sync_delay_seconds`: seconds from a Node's creation to the end of its
    /// initialization (addresses included).
    pub initial_node_sync_delay: Histogram,
}

impl Default for CloudNodeMetrics {
    /// Unregistered metrics (they still count, nobody scrapes them).
    fn default() -> Self {
        // Upstream's buckets: 1 s to ~17 min.
        let buckets = || Histogram::new(exponential_buckets(1.0, 4.0, 6));
        Self {
            taint_removal_delay: buckets(),
            initial_node_sync_delay: buckets(),
        }
    }
}

impl CloudNodeMetrics {
    /// Creates the metrics and registers them under upstream's names.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "node_controller_cloud_provider_taint_removal_delay_seconds",
            "Number of seconds after node creation when NodeController removed the cloud-provider taint of a single node",
            m.taint_removal_delay.clone(),
        );
        registry.register(
            "node_controller_initial_node_sync_delay_seconds",
            "Number of seconds after node creation when NodeController finished the initial synchronization of a single node",
            m.initial_node_sync_delay.clone(),
        );
        m
    }
}

crate::manager::node_cache_controller! {
    /// The cloud-node controller as a [`ManagedController`](crate::manager::ManagedController): `cloud-node` (alias
    /// `cloud-node-controller`), needs instances.
    CloudNodeController(CloudNodeConfig) = "cloud-node", aliases ["cloud-node-controller"], needs Capability::Instances, runs run
}

/// Runs the cloud-node controller over the shared Node cache until `shutdown` fires.
async fn run(
    ctx: ControllerContext,
    nodes: NodeSource,
    config: CloudNodeConfig,
    shutdown: CancellationToken,
) {
    let status = Periodic::new(
        status::StatusUpdate {
            nodes: Api::all(ctx.client.clone()),
            store: nodes.store.clone(),
            provider: Arc::clone(&ctx.provider),
            workers: usize::from(config.status_update_workers),
        },
        ctx.metrics.clone(),
        shutdown.clone(),
    )
    .run(nodes.synced.clone(), config.node_status_update_frequency);
    let workers = config.workers;
    let reconciler = CloudNodeReconciler::new(&ctx, config);
    let queue = ctx.metrics.work_queue(QUEUE_NAME);
    let changes = queue.track(nodes.changes, |node| Some(object_key(node.as_ref())));
    let controller = Controller::for_shared_stream(changes, nodes.store)
        .graceful_shutdown_on(shutdown.cancelled_owned());
    let options = RunOptions {
        workers,
        events: ctx.events.clone(),
        metrics: ctx.metrics.clone(),
    };
    futures::join!(runtime::run(controller, reconciler, options), status);
    debug!(controller = CONTROLLER_NAME, "stopped");
}

struct CloudNodeReconciler {
    nodes: Api<Node>,
    provider: Arc<dyn CloudProvider>,
    events: EventPublisher,
    metrics: CloudNodeMetrics,
}

impl Reconciler<Node> for CloudNodeReconciler {
    fn name(&self) -> &'static str {
        CONTROLLER_NAME
    }

    async fn reconcile(&self, node: Arc<Node>) -> Result<Action, ReconcileError> {
        if node.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let instances = self.provider.instances().unwrap_or(&Unsupported);
        if has_uninitialized_taint(&node) {
            self.initialize(instances, &node).await?;
        } else {
            // No cloud call: done on every event. Addresses are the status-update pass's.
            self.reconcile_labels(&node).await?;
        }
        Ok(Action::await_change())
    }

    fn queue_name(&self) -> &'static str {
        QUEUE_NAME
    }

    fn failure_reason(&self, err: &ReconcileError) -> Option<&'static str> {
        match err {
            // A conflict only means the Node changed since it was read: the watch delivers the new one. A missing
            // Node needs no sync.
            ReconcileError::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.is_conflict() || status.is_not_found() => None,
            _ => Some(SYNC_FAILED_REASON),
        }
    }
}

impl CloudNodeReconciler {
    fn new(ctx: &ControllerContext, config: CloudNodeConfig) -> Self {
        Self {
            nodes: Api::all(ctx.client.clone()),
            provider: Arc::clone(&ctx.provider),
            events: ctx.events.clone(),
            metrics: config.metrics,
        }
    }

    /// Keeps the GA twins of the beta zone, region and instance-type labels in step on an initialized Node
    /// (upstream's `reconcileNodeLabels`): one merge patch, only when a twin is missing or differs.
    async fn reconcile_labels(&self, node: &Node) -> Result<(), ReconcileError> {
        let labels = labels::reconcile_twins(node);
        if labels.is_empty() {
            return Ok(());
        }
        info!(labels = ?labels, "reconciling the GA twins of beta labels");
        let patch = json!({ "metadata": { "labels": labels } });
        self.nodes
            .patch(&node.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ReconcileError::kube("reconcile node labels", e))?;
        Ok(())
    }

    /// Initializes a tainted Node: one cloud call, one metadata+spec patch, at most one status patch.
    async fn initialize(
        &self,
        instances: &dyn Instances,
        node: &Node,
    ) -> Result<(), ReconcileError> {
        let name = node.name_any();
        info!("initializing node with the cloud provider");
        let md = instances
            .instance_metadata(node)
            .await
            .map_err(|e| ReconcileError::cloud("InstanceMetadata", e))?;

        let has_provider_id = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|p| !p.is_empty());
        // spec.providerID is immutable once set and other controllers (load balancers, routes) need it: never
        // untaint a node without one.
        if !has_provider_id && md.provider_id.is_empty() {
            return Err(ReconcileError::cloud(
                "InstanceMetadata",
                CloudError::transient(format!(
                    "the cloud provider returned no provider ID for node {name}"
                )),
            ));
        }
        // Validate the provided node IP before touching the node: on mismatch the taint stays.
        let addresses =
            addresses::desired_addresses(node, &md.node_addresses).map_err(address_error)?;

        let mut spec = serde_json::Map::new();
        spec.insert("taints".into(), json!(remaining_taints(node)));
        if !has_provider_id {
            spec.insert("providerID".into(), json!(md.provider_id));
        }
        let patch = json!({
            "metadata": {
                // Makes the taint-list replacement optimistic: a concurrent change fails it with 409.
                "resourceVersion": node.resource_version(),
                "labels": labels::init_labels(node, &md),
            },
            "spec": spec,
        });
        self.nodes
            .patch(&name, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ReconcileError::kube("patch Node", e))?;
        self.metrics
            .taint_removal_delay
            .observe(seconds_since_creation(node));

        // Status after spec: the spec patch changed the resourceVersion, and addresses are ours alone, so this
        // patch is not conditioned. Should it fail, the node is initialized and the next status-update pass (within
        // --node-status-update-frequency) writes them.
        if let Some(addresses) = addresses
            && addresses.as_slice() != addresses::current_addresses(node)
        {
            status::patch_addresses(&self.nodes, &name, &addresses).await?;
        }
        info!(provider_id = %md.provider_id, "node initialized");
        self.events.normal(
            &node.object_ref(&()),
            SYNCED_REASON,
            "Node synced successfully",
        );
        self.metrics
            .initial_node_sync_delay
            .observe(seconds_since_creation(node));
        Ok(())
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER_NAME.to_owned()),
        ..PatchParams::default()
    }
}

fn address_error(e: addresses::AddressError) -> ReconcileError {
    match e {
        // The annotation must be fixed by whoever set it: no retry until the node changes.
        addresses::AddressError::InvalidAnnotation(msg) => {
            ReconcileError::invalid(PROVIDED_NODE_IP_ANNOTATION, msg)
        }
        // The cloud may not report a just-attached address yet: retry with backoff.
        e @ addresses::AddressError::NotInCloud(_) => ReconcileError::cloud(
            "match provided node IP",
            CloudError::transient(e.to_string()),
        ),
    }
}

/// Whether `node` carries [`UNINITIALIZED_TAINT`].
pub(crate) fn has_uninitialized_taint(node: &Node) -> bool {
    taints(node).iter().any(|t| t.key == UNINITIALIZED_TAINT)
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn remaining_taints(node: &Node) -> Vec<&Taint> {
    taints(node)
        .iter()
        .filter(|t| t.key != UNINITIALIZED_TAINT)
        .collect()
}

fn seconds_since_creation(node: &Node) -> f64 {
    let Some(created) = node.metadata.creation_timestamp.as_ref() else {
        return 0.0;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    // Milliseconds to seconds; a clock behind the apiserver's gives 0, not a negative delay.
    let elapsed_ms = now.saturating_sub(created.0.as_millisecond()).max(0);
    Duration::from_millis(elapsed_ms.unsigned_abs()).as_secs_f64()
}

/// Everything this controller decides from a cached Node, for the projection test
/// ([`projection`](crate::runtime::projection)).
#[cfg(test)]
pub(crate) fn node_decisions(node: &Node) -> String {
    let md = cloudprovider_api::InstanceMetadata {
        provider_id: "fake://n".into(),
        instance_type: "small".into(),
        zone: "z".into(),
        region: "r".into(),
        node_addresses: vec![cloudprovider_api::NodeAddress::new(
            cloudprovider_api::NodeAddressType::InternalIp,
            "10.0.0.1",
        )],
        ..Default::default()
    };
    format!(
        "{:?}",
        (
            has_uninitialized_taint(node),
            remaining_taints(node),
            labels::init_labels(node, &md),
            labels::reconcile_twins(node),
            addresses::provided_node_ips(node).map_err(|e| e.to_string()),
            addresses::desired_addresses(node, &md.node_addresses).map_err(|e| e.to_string()),
            addresses::current_addresses(node),
            node.metadata.creation_timestamp.is_some(),
        )
    )
}
