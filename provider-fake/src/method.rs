//! The provider methods the fake records and can inject faults into.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One method of the provider traits, as recorded in the call log and targeted by fault injection.
///
/// Each call is recorded with a *key*, the argument that identifies what the call was about; per-key faults
/// ([`FakeCloud::fail_next_for`](crate::FakeCloud::fail_next_for)) match it exactly:
///
/// | methods | key |
/// |---|---|
/// | instance methods, [`NodeGroupForNode`](Method::NodeGroupForNode) | the node name (its provider ID if it has no name) |
/// | [`InstanceStates`](Method::InstanceStates) | the node names joined by `,` in the call log; per-key faults match each node name and fail only that node's entry |
/// | load balancer methods | `<namespace>/<name>` of the Service |
/// | [`ListRoutes`](Method::ListRoutes), [`Master`](Method::Master) | the cluster name |
/// | [`CreateRoute`](Method::CreateRoute), [`DeleteRoute`](Method::DeleteRoute) | the destination CIDR, e.g. `10.244.1.0/24` |
/// | [`ZoneByProviderId`](Method::ZoneByProviderId) / [`ZoneByNodeName`](Method::ZoneByNodeName) | the provider ID / node name |
/// | node group methods taking a group id | the group id |
/// | pod methods | `<namespace>/<name>` of the pod; [`GetPods`](Method::GetPods) and [`Ping`](Method::Ping): the virtual node's name |
/// | [`Initialize`](Method::Initialize), [`Zone`](Method::Zone), [`ListClusters`](Method::ListClusters), [`NodeGroups`](Method::NodeGroups) | empty |
///
/// In configuration files methods are written in snake_case, like the trait methods (`ensure_load_balancer`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Method {
    /// `CloudProvider::initialize`
    Initialize,
    /// `Instances::instance_exists`
    InstanceExists,
    /// `Instances::instance_shutdown`
    InstanceShutdown,
    /// `Instances::instance_metadata`
    InstanceMetadata,
    /// `Instances::instance_states` (one call for the whole batch)
    InstanceStates,
    /// `LoadBalancers::get_load_balancer`
    GetLoadBalancer,
    /// `LoadBalancers::ensure_load_balancer`
    EnsureLoadBalancer,
    /// `LoadBalancers::update_load_balancer`
    UpdateLoadBalancer,
    /// `LoadBalancers::ensure_load_balancer_deleted`
    EnsureLoadBalancerDeleted,
    /// `Routes::list_routes`
    ListRoutes,
    /// `Routes::create_route`
    CreateRoute,
    /// `Routes::delete_route`
    DeleteRoute,
    /// `Zones::zone`
    Zone,
    /// `Zones::zone_by_provider_id`
    ZoneByProviderId,
    /// `Zones::zone_by_node_name`
    ZoneByNodeName,
    /// `Clusters::list_clusters`
    ListClusters,
    /// `Clusters::master`
    Master,
    /// `NodeGroups::node_groups`
    NodeGroups,
    /// `NodeGroups::node_group_for_node`
    NodeGroupForNode,
    /// `NodeGroups::target_size`
    TargetSize,
    /// `NodeGroups::increase_size`
    IncreaseSize,
    /// `NodeGroups::delete_instances`
    DeleteInstances,
    /// `NodeGroups::decrease_target_size`
    DecreaseTargetSize,
    /// `NodeGroups::instances`
    NodeGroupInstances,
    /// `NodeGroups::template_node`
    TemplateNode,
    /// `PodLifecycle::create_pod`
    CreatePod,
    /// `PodLifecycle::update_pod`
    UpdatePod,
    /// `PodLifecycle::delete_pod`
    DeletePod,
    /// `PodLifecycle::get_pod`
    GetPod,
    /// `PodLifecycle::get_pod_status`
    GetPodStatus,
    /// `PodLifecycle::get_pods`
    GetPods,
    /// `NodeProvider::ping`
    Ping,
}

impl Method {
    /// Every method, in declaration order.
    pub const ALL: [Method; 32] = [
        Method::Initialize,
        Method::InstanceExists,
        Method::InstanceShutdown,
        Method::InstanceMetadata,
        Method::InstanceStates,
        Method::GetLoadBalancer,
        Method::EnsureLoadBalancer,
        Method::UpdateLoadBalancer,
        Method::EnsureLoadBalancerDeleted,
        Method::ListRoutes,
        Method::CreateRoute,
        Method::DeleteRoute,
        Method::Zone,
        Method::ZoneByProviderId,
        Method::ZoneByNodeName,
        Method::ListClusters,
        Method::Master,
        Method::NodeGroups,
        Method::NodeGroupForNode,
        Method::TargetSize,
        Method::IncreaseSize,
        Method::DeleteInstances,
        Method::DecreaseTargetSize,
        Method::NodeGroupInstances,
        Method::TemplateNode,
        Method::CreatePod,
        Method::UpdatePod,
        Method::DeletePod,
        Method::GetPod,
        Method::GetPodStatus,
        Method::GetPods,
        Method::Ping,
    ];

    /// The snake_case name, as in configuration files and the trait (`ensure_load_balancer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Initialize => "initialize",
            Method::InstanceExists => "instance_exists",
            Method::InstanceShutdown => "instance_shutdown",
            Method::InstanceMetadata => "instance_metadata",
            Method::InstanceStates => "instance_states",
            Method::GetLoadBalancer => "get_load_balancer",
            Method::EnsureLoadBalancer => "ensure_load_balancer",
            Method::UpdateLoadBalancer => "update_load_balancer",
            Method::EnsureLoadBalancerDeleted => "ensure_load_balancer_deleted",
            Method::ListRoutes => "list_routes",
            Method::CreateRoute => "create_route",
            Method::DeleteRoute => "delete_route",
            Method::Zone => "zone",
            Method::ZoneByProviderId => "zone_by_provider_id",
            Method::ZoneByNodeName => "zone_by_node_name",
            Method::ListClusters => "list_clusters",
            Method::Master => "master",
            Method::NodeGroups => "node_groups",
            Method::NodeGroupForNode => "node_group_for_node",
            Method::TargetSize => "target_size",
            Method::IncreaseSize => "increase_size",
            Method::DeleteInstances => "delete_instances",
            Method::DecreaseTargetSize => "decrease_target_size",
            Method::NodeGroupInstances => "node_group_instances",
            Method::TemplateNode => "template_node",
            Method::CreatePod => "create_pod",
            Method::UpdatePod => "update_pod",
            Method::DeletePod => "delete_pod",
            Method::GetPod => "get_pod",
            Method::GetPodStatus => "get_pod_status",
            Method::GetPods => "get_pods",
            Method::Ping => "ping",
        }
    }

    /// The kind of object the method is about, used in injected [`NotFound`](cloudprovider_api::CloudError::NotFound)
    /// errors.
    pub fn object_kind(self) -> &'static str {
        match self {
            Method::Initialize => "cloud",
            Method::InstanceExists
            | Method::InstanceShutdown
            | Method::InstanceMetadata
            | Method::InstanceStates
            | Method::ZoneByProviderId
            | Method::ZoneByNodeName => "instance",
            Method::GetLoadBalancer
            | Method::EnsureLoadBalancer
            | Method::UpdateLoadBalancer
            | Method::EnsureLoadBalancerDeleted => "load balancer",
            Method::ListRoutes | Method::CreateRoute | Method::DeleteRoute => "route",
            Method::Zone => "zone",
            Method::ListClusters | Method::Master => "cluster",
            Method::NodeGroups
            | Method::NodeGroupForNode
            | Method::TargetSize
            | Method::IncreaseSize
            | Method::DeleteInstances
            | Method::DecreaseTargetSize
            | Method::NodeGroupInstances
            | Method::TemplateNode => "node group",
            Method::CreatePod
            | Method::UpdatePod
            | Method::DeletePod
            | Method::GetPod
            | Method::GetPodStatus
            | Method::GetPods => "pod",
            Method::Ping => "virtual node",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown method name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider method {0:?}")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMethod(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for m in Method::ALL {
            assert!(seen.insert(m.as_str()), "duplicate name {m}");
            assert_eq!(m.as_str().parse::<Method>(), Ok(m));
            let json = serde_json::to_string(&m).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
        }
        assert_eq!(
            "instanceExists".parse::<Method>(),
            Err(UnknownMethod("instanceExists".into()))
        );
    }
}
