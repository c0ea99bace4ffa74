//! The provider object: which capabilities a cloud supports.

use std::fmt;

use async_trait::async_trait;

use crate::{CloudResult, Clusters, Instances, LoadBalancers, NodeGroups, Routes, Zones};

/// A cloud provider: its name and the capabilities it supports. Used as `Arc<dyn CloudProvider>` so a binary can
/// pick a provider by name at run time (see [`ProviderRegistry`](crate::ProviderRegistry)).
///
/// Every capability accessor defaults to `None` (unsupported); a provider overrides the ones it has, usually
/// returning `Some(self)`.
#[async_trait]
pub trait CloudProvider: Send + Sync + 'static {
    /// The provider name, also the scheme of its provider IDs (`<name>://…`).
    fn provider_name(&self) -> &str;

    /// Called once before any controller starts: open connections, check credentials, discover defaults.
    /// An error here stops the process with a clear message.
    async fn initialize(&self) -> CloudResult<()> {
        Ok(())
    }

    /// Instances (upstream `InstancesV2`).
    fn instances(&self) -> Option<&dyn Instances> {
        None
    }

    /// Load balancers for Services of type LoadBalancer.
    fn load_balancers(&self) -> Option<&dyn LoadBalancers> {
        None
    }

    /// Routes for pod CIDRs.
    fn routes(&self) -> Option<&dyn Routes> {
        None
    }

    /// Zones (deprecated upstream where instance metadata carries the zone).
    fn zones(&self) -> Option<&dyn Zones> {
        None
    }

    /// Clusters.
    fn clusters(&self) -> Option<&dyn Clusters> {
        None
    }

    /// Node groups for on-demand capacity.
    fn node_groups(&self) -> Option<&dyn NodeGroups> {
        None
    }

    /// Whether the provider was configured with a cluster ID (upstream `HasClusterID`); a controller manager
    /// refuses to run without one unless told to allow it.
    fn has_cluster_id(&self) -> bool {
        true
    }

    /// The capabilities this provider supports, derived from the accessors.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            instances: self.instances().is_some(),
            load_balancers: self.load_balancers().is_some(),
            routes: self.routes().is_some(),
            zones: self.zones().is_some(),
            clusters: self.clusters().is_some(),
            node_groups: self.node_groups().is_some(),
        }
    }
}

/// Which capabilities a provider supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`CloudProvider::instances`]
    pub instances: bool,
    /// [`CloudProvider::load_balancers`]
    pub load_balancers: bool,
    /// [`CloudProvider::routes`]
    pub routes: bool,
    /// [`CloudProvider::zones`]
    pub zones: bool,
    /// [`CloudProvider::clusters`]
    pub clusters: bool,
    /// [`CloudProvider::node_groups`]
    pub node_groups: bool,
}

impl Capabilities {
    /// The names of the supported capabilities.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.instances, "instances"),
            (self.load_balancers, "load-balancers"),
            (self.routes, "routes"),
            (self.zones, "zones"),
            (self.clusters, "clusters"),
            (self.node_groups, "node-groups"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}
