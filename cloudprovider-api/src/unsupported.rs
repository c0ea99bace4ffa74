//! [`Unsupported`]: every capability trait, answering [`CloudError::NotImplemented`] to every call.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};

use crate::{
    CloudError, CloudInstance, CloudResult, Clusters, InstanceMetadata, Instances, LoadBalancers,
    NodeGroup, NodeGroups, Route, Routes, Zone, Zones,
};

/// A stand-in for a capability a provider lacks: every method fails with [`CloudError::NotImplemented`] naming
/// the call.
///
/// A controller manager checks a controller's required capabilities once, before starting it; the capability
/// accessors of a controller's context then return the provider's implementation, or this when the provider
/// withdrew a capability after that check (which a provider should not do). A controller therefore never needs an
/// "unsupported" branch of its own, and a misbehaving provider gets clear errors instead of a panic.
///
/// ```
/// # tokio_test_block_on(async {
/// use cloudprovider_api::{CloudError, Routes, Unsupported};
/// let err = Unsupported.list_routes("kubernetes").await.unwrap_err();
/// assert!(matches!(err, CloudError::NotImplemented("Routes::list_routes")));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     futures::executor::block_on(f)
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unsupported;

fn no<T>(call: &'static str) -> CloudResult<T> {
    Err(CloudError::NotImplemented(call))
}

#[async_trait]
impl Instances for Unsupported {
    async fn instance_exists(&self, _node: &Node) -> CloudResult<bool> {
        no("Instances::instance_exists")
    }
    async fn instance_shutdown(&self, _node: &Node) -> CloudResult<bool> {
        no("Instances::instance_shutdown")
    }
    async fn instance_metadata(&self, _node: &Node) -> CloudResult<InstanceMetadata> {
        no("Instances::instance_metadata")
    }
}

#[async_trait]
impl LoadBalancers for Unsupported {
    async fn get_load_balancer(
        &self,
        _cluster_name: &str,
        _service: &Service,
    ) -> CloudResult<Option<LoadBalancerStatus>> {
        no("LoadBalancers::get_load_balancer")
    }
    async fn ensure_load_balancer(
        &self,
        _cluster_name: &str,
        _service: &Service,
        _nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus> {
        no("LoadBalancers::ensure_load_balancer")
    }
    async fn update_load_balancer(
        &self,
        _cluster_name: &str,
        _service: &Service,
        _nodes: &[Node],
    ) -> CloudResult<()> {
        no("LoadBalancers::update_load_balancer")
    }
    async fn ensure_load_balancer_deleted(
        &self,
        _cluster_name: &str,
        _service: &Service,
    ) -> CloudResult<()> {
        no("LoadBalancers::ensure_load_balancer_deleted")
    }
}

#[async_trait]
impl Routes for Unsupported {
    async fn list_routes(&self, _cluster_name: &str) -> CloudResult<Vec<Route>> {
        no("Routes::list_routes")
    }
    async fn create_route(
        &self,
        _cluster_name: &str,
        _name_hint: &str,
        _route: &Route,
    ) -> CloudResult<()> {
        no("Routes::create_route")
    }
    async fn delete_route(&self, _cluster_name: &str, _route: &Route) -> CloudResult<()> {
        no("Routes::delete_route")
    }
}

#[async_trait]
impl Zones for Unsupported {
    async fn zone(&self) -> CloudResult<Zone> {
        no("Zones::zone")
    }
    async fn zone_by_provider_id(&self, _provider_id: &str) -> CloudResult<Zone> {
        no("Zones::zone_by_provider_id")
    }
    async fn zone_by_node_name(&self, _node_name: &str) -> CloudResult<Zone> {
        no("Zones::zone_by_node_name")
    }
}

#[async_trait]
impl Clusters for Unsupported {
    async fn list_clusters(&self) -> CloudResult<Vec<String>> {
        no("Clusters::list_clusters")
    }
    async fn master(&self, _cluster_name: &str) -> CloudResult<String> {
        no("Clusters::master")
    }
}

#[async_trait]
impl NodeGroups for Unsupported {
    async fn node_groups(&self) -> CloudResult<Vec<NodeGroup>> {
        no("NodeGroups::node_groups")
    }
    async fn node_group_for_node(&self, _node: &Node) -> CloudResult<Option<String>> {
        no("NodeGroups::node_group_for_node")
    }
    async fn target_size(&self, _group_id: &str) -> CloudResult<u32> {
        no("NodeGroups::target_size")
    }
    async fn increase_size(&self, _group_id: &str, _delta: u32) -> CloudResult<()> {
        no("NodeGroups::increase_size")
    }
    async fn delete_instances(&self, _group_id: &str, _provider_ids: &[String]) -> CloudResult<()> {
        no("NodeGroups::delete_instances")
    }
    async fn decrease_target_size(&self, _group_id: &str, _delta: u32) -> CloudResult<()> {
        no("NodeGroups::decrease_target_size")
    }
    async fn instances(&self, _group_id: &str) -> CloudResult<Vec<CloudInstance>> {
        no("NodeGroups::instances")
    }
    async fn template_node(&self, _group_id: &str) -> CloudResult<Node> {
        no("NodeGroups::template_node")
    }
}
