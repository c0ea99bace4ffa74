//! Routes for pod CIDRs.

use async_trait::async_trait;
use ipnet::IpNet;

use crate::{CloudResult, NodeAddress};

/// A route sending a pod CIDR to a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The cloud's name for the route (may be empty when creating; the provider chooses).
    pub name: String,
    /// The name of the node the traffic goes to.
    pub target_node: String,
    /// The addresses of the target node, for clouds that route to an address.
    pub target_node_addresses: Vec<NodeAddress>,
    /// The destination (the node's pod CIDR).
    pub destination_cidr: IpNet,
    /// True when the route's target no longer exists (the cloud shows it as a blackhole). The route controller
    /// deletes blackhole routes inside the cluster CIDR.
    pub blackhole: bool,
}

/// Routes (upstream `Routes`).
#[async_trait]
pub trait Routes: Send + Sync {
    /// All routes belonging to the cluster.
    async fn list_routes(&self, cluster_name: &str) -> CloudResult<Vec<Route>>;

    /// Creates `route`. `name_hint` is the target node's UID, stable for the node's lifetime; a provider may use it
    /// as the route name. Creating a route that already exists with the same target must succeed.
    async fn create_route(
        &self,
        cluster_name: &str,
        name_hint: &str,
        route: &Route,
    ) -> CloudResult<()>;

    /// Deletes `route` (as returned by [`list_routes`](Self::list_routes)). Deleting an absent route succeeds.
    async fn delete_route(&self, cluster_name: &str, route: &Route) -> CloudResult<()>;
}
