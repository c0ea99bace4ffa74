//! Node groups: on-demand capacity (cluster-autoscaler's `NodeGroup` shape).

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;

use crate::CloudResult;

/// A group of like instances that can grow and shrink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeGroup {
    /// Unique, stable identifier.
    pub id: String,
    /// The fewest instances the group may have.
    pub min_size: u32,
    /// The most instances the group may have.
    pub max_size: u32,
}

/// The lifecycle state of a cloud instance of a node group, registered as a Node or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloudInstanceState {
    /// Requested, not yet running (may not have registered as a Node).
    Creating,
    /// Running.
    Running,
    /// Being deleted.
    Deleting,
}

/// Why an instance failed to come up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInstanceError {
    /// Broad class of the failure.
    pub class: CloudInstanceErrorClass,
    /// A cloud-specific code, e.g. `InsufficientInstanceCapacity`.
    pub code: String,
    /// A human-readable message.
    pub message: String,
}

/// The class of a [`CloudInstanceError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloudInstanceErrorClass {
    /// The cloud ran out of capacity or quota: retrying elsewhere may help.
    OutOfResources,
    /// Anything else.
    Other,
}

/// One instance of a node group, including instances that have not registered as Nodes yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInstance {
    /// The provider ID the instance's Node will carry in `spec.providerID`.
    pub provider_id: String,
    /// Its state.
    pub state: CloudInstanceState,
    /// Set when creation failed.
    pub error: Option<CloudInstanceError>,
}

/// Node groups (cluster-autoscaler's `CloudProvider.NodeGroups` + `NodeGroup`).
///
/// Sizes are *target* sizes: [`increase_size`](Self::increase_size) raises the target and the cloud creates
/// instances asynchronously; [`instances`](Self::instances) shows them from the moment they are requested.
#[async_trait]
pub trait NodeGroups: Send + Sync {
    /// All node groups.
    async fn node_groups(&self) -> CloudResult<Vec<NodeGroup>>;

    /// The id of the group the node's instance belongs to, or `None` if it belongs to none.
    async fn node_group_for_node(&self, node: &Node) -> CloudResult<Option<String>>;

    /// The current target size of the group.
    async fn target_size(&self, group_id: &str) -> CloudResult<u32>;

    /// Raises the target size by `delta` (> 0). Fails with
    /// [`CloudError::InvalidInput`](crate::CloudError::InvalidInput) if that would exceed the group's maximum.
    async fn increase_size(&self, group_id: &str, delta: u32) -> CloudResult<()>;

    /// Deletes specific instances (by provider ID) and lowers the target size by as many. Fails with
    /// [`CloudError::InvalidInput`](crate::CloudError::InvalidInput) if that would go below the minimum, and with
    /// [`CloudError::NotFound`](crate::CloudError::NotFound) if an instance is not in the group.
    async fn delete_instances(&self, group_id: &str, provider_ids: &[String]) -> CloudResult<()>;

    /// Lowers the target size by `delta` without deleting running instances: only cancels requests not yet
    /// fulfilled. Fails with [`CloudError::InvalidInput`](crate::CloudError::InvalidInput) if fewer are pending.
    async fn decrease_target_size(&self, group_id: &str, delta: u32) -> CloudResult<()>;

    /// The group's instances, including ones not yet registered, with their state.
    async fn instances(&self, group_id: &str) -> CloudResult<Vec<CloudInstance>>;

    /// A Node "as if just started" from this group: labels, taints, `status.capacity` and `status.allocatable`.
    /// Used to decide whether pending pods would fit.
    async fn template_node(&self, group_id: &str) -> CloudResult<Node>;
}
