//! Node groups: on-demand capacity (cluster-autoscaler's `NodeGroup` shape).

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;

use crate::CloudResult;

/// A group of like instances that can grow and shrink: one instance shape (its
/// [`template_node`](NodeGroups::template_node) gives capacity, labels such as zone, instance type and
/// `karpenter.sh/capacity-type`, and taints) with a price, so a node pool offering several groups can launch the
/// cheapest that fits.
///
/// ```
/// use cloudprovider_api::NodeGroup;
///
/// let group = NodeGroup::new("c-4x-zone-a", 0, 100).with_price(0.17);
/// assert_eq!(group.price, Some(0.17));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeGroup {
    /// Unique, stable identifier.
    pub id: String,
    /// The fewest instances the group may have.
    pub min_size: u32,
    /// The most instances the group may have.
    pub max_size: u32,
    /// What one instance costs per hour, in the provider's currency; `None` when unknown (a pool then prefers the
    /// smallest shape that fits).
    pub price: Option<f64>,
}

impl NodeGroup {
    /// A group `id` with sizes in `[min_size, max_size]` and no known price.
    pub fn new(id: impl Into<String>, min_size: u32, max_size: u32) -> Self {
        Self {
            id: id.into(),
            min_size,
            max_size,
            price: None,
        }
    }

    /// Sets the price per instance-hour. A negative or non-finite price is taken as unknown.
    #[must_use]
    pub fn with_price(mut self, price: f64) -> Self {
        self.price = (price.is_finite() && price >= 0.0).then_some(price);
        self
    }
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
