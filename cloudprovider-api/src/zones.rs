//! Zones and clusters.

use async_trait::async_trait;

use crate::CloudResult;

/// A failure domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Zone {
    /// The zone (e.g. `us-east-1a`).
    pub failure_domain: String,
    /// The region (e.g. `us-east-1`).
    pub region: String,
}

/// Zones (upstream `Zones`). Deprecated upstream where [`Instances`](crate::Instances) metadata carries the zone;
/// kept for providers whose instances cannot report it.
#[async_trait]
pub trait Zones: Send + Sync {
    /// The zone of the machine this process runs on.
    async fn zone(&self) -> CloudResult<Zone>;
    /// The zone of the instance with this provider ID.
    async fn zone_by_provider_id(&self, provider_id: &str) -> CloudResult<Zone>;
    /// The zone of the instance registered as this node name.
    async fn zone_by_node_name(&self, node_name: &str) -> CloudResult<Zone>;
}

/// Clusters (upstream `Clusters`).
#[async_trait]
pub trait Clusters: Send + Sync {
    /// The names of all clusters.
    async fn list_clusters(&self) -> CloudResult<Vec<String>>;
    /// The address of the control plane of `cluster_name`.
    async fn master(&self, cluster_name: &str) -> CloudResult<String>;
}
