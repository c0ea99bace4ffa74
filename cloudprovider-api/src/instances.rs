//! Instances: upstream's `InstancesV2`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;

use crate::{CloudResult, NodeAddress};

/// What the cloud knows about the instance behind a Node, used by the cloud-node controller to initialize it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceMetadata {
    /// The provider ID to set as `spec.providerID` (only written when the node has none).
    pub provider_id: String,
    /// Instance type, written as `node.kubernetes.io/instance-type` (and its beta twin). Empty: not set.
    pub instance_type: String,
    /// Node addresses, written to `status.addresses`.
    pub node_addresses: Vec<NodeAddress>,
    /// Zone, written as `topology.kubernetes.io/zone` (and its beta twin). Empty: not set.
    pub zone: String,
    /// Region, written as `topology.kubernetes.io/region` (and its beta twin). Empty: not set.
    pub region: String,
    /// Further labels. Keys in the `kubernetes.io` / `k8s.io` namespaces and keys the node already has are
    /// ignored, as upstream does.
    pub additional_labels: BTreeMap<String, String>,
}

/// The state of the instance behind a node, as the node-lifecycle controller needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// The instance exists and is not shut down.
    Running,
    /// The instance exists but is shut down (stopped): the Node gets the shutdown taint and is NOT deleted.
    Shutdown,
    /// The instance no longer exists (or is terminated): the Node may be deleted.
    Gone,
}

/// Instances of the cloud, looked up by Node (upstream `InstancesV2`).
///
/// Implementations should prefer `spec.providerID` when it is set (see [`crate::node_provider_id`]) and fall back
/// to the node name otherwise (a node being initialized has no provider ID yet).
#[async_trait]
pub trait Instances: Send + Sync {
    /// Whether the instance behind `node` exists. **A stopped instance exists**; only a missing or terminated
    /// instance does not. `Ok(false)` tells the node-lifecycle controller to delete the Node, so return an error —
    /// never `Ok(false)` — when unsure.
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool>;

    /// Whether the instance behind `node` is shut down (stopped). Errors with
    /// [`CloudError::NotFound`](crate::CloudError::NotFound) if it does not exist.
    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool>;

    /// The metadata of the instance behind `node`. Errors with
    /// [`CloudError::NotFound`](crate::CloudError::NotFound) if it does not exist.
    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata>;

    /// The state of many nodes' instances at once, in the order of `nodes`.
    ///
    /// The default calls [`instance_exists`](Self::instance_exists) and
    /// [`instance_shutdown`](Self::instance_shutdown) per node. Clouds with batch APIs should override it so a
    /// periodic sync of N nodes costs a handful of calls, not 2N.
    async fn instance_states(&self, nodes: &[&Node]) -> Vec<CloudResult<InstanceState>> {
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            out.push(state_of(self, node).await);
        }
        out
    }
}

async fn state_of<I: Instances + ?Sized>(instances: &I, node: &Node) -> CloudResult<InstanceState> {
    if !instances.instance_exists(node).await? {
        return Ok(InstanceState::Gone);
    }
    match instances.instance_shutdown(node).await {
        Ok(true) => Ok(InstanceState::Shutdown),
        Ok(false) => Ok(InstanceState::Running),
        // Vanished between the two calls.
        Err(e) if e.is_not_found() => Ok(InstanceState::Gone),
        Err(e) => Err(e),
    }
}
