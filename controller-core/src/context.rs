//! What every controller is given.

use std::sync::Arc;

use cloudprovider_api::{
    CloudProvider, Clusters, Instances, LoadBalancers, NodeGroups, Routes, Unsupported, Zones,
};
use k8s_openapi::api::core::v1::Node;

use crate::runtime::{CacheSource, EventPublisher, RuntimeMetrics};

/// The shared dependencies of every controller. Cheap to clone.
///
/// The capability accessors ([`instances`](Self::instances), [`load_balancers`](Self::load_balancers), …) return
/// the provider's implementation. The [`Manager`](crate::manager::Manager) starts a controller only when the
/// provider has every capability it [requires](crate::manager::ManagedController::required_capabilities), so a
/// controller calls them without an "unsupported" branch; should a provider withdraw a capability later, the
/// accessor returns [`Unsupported`], whose calls fail with `NotImplemented` (a clear error, never a panic).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use controller_core::ControllerContext;
/// use controller_core::runtime::EventPublisher;
/// let client = kube::Client::try_from(kube::Config::new("https://127.0.0.1:6443".parse()?))?;
/// let provider: Arc<dyn cloudprovider_api::CloudProvider> = Arc::new(provider_fake::FakeCloud::new());
/// let events = EventPublisher::new(client.clone(), "my-cloud-controller-manager", None);
/// let ctx = ControllerContext::new(client, provider, events).with_cluster_name("prod-eu");
/// assert_eq!(ctx.cluster_name, "prod-eu");
/// assert_eq!(ctx.provider.provider_name(), "fake");
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ControllerContext {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The cloud.
    pub provider: Arc<dyn CloudProvider>,
    /// Upstream's `--cluster-name` (default `kubernetes`), passed to load balancer and route calls.
    pub cluster_name: String,
    /// Events.
    pub events: EventPublisher,
    /// Runtime metrics (reconcile counts and latency).
    pub metrics: RuntimeMetrics,
}

impl ControllerContext {
    /// A context with cluster name `kubernetes` and unregistered runtime metrics.
    pub fn new(
        client: kube::Client,
        provider: Arc<dyn CloudProvider>,
        events: EventPublisher,
    ) -> Self {
        Self {
            client,
            provider,
            cluster_name: "kubernetes".to_owned(),
            events,
            metrics: RuntimeMetrics::default(),
        }
    }

    /// Sets the cluster name (upstream's `--cluster-name`).
    pub fn with_cluster_name(mut self, cluster_name: impl Into<String>) -> Self {
        self.cluster_name = cluster_name.into();
        self
    }

    /// Sets the runtime metrics (e.g. ones registered with [`RuntimeMetrics::register`]).
    pub fn with_metrics(mut self, metrics: RuntimeMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The provider's instances.
    pub fn instances(&self) -> &dyn Instances {
        self.provider.instances().unwrap_or(&Unsupported)
    }

    /// The provider's load balancers.
    pub fn load_balancers(&self) -> &dyn LoadBalancers {
        self.provider.load_balancers().unwrap_or(&Unsupported)
    }

    /// The provider's routes.
    pub fn routes(&self) -> &dyn Routes {
        self.provider.routes().unwrap_or(&Unsupported)
    }

    /// The provider's node groups.
    pub fn node_groups(&self) -> &dyn NodeGroups {
        self.provider.node_groups().unwrap_or(&Unsupported)
    }

    /// The provider's zones. No built-in controller calls it: instance metadata carries the zone, as upstream's
    /// `InstancesV2` does.
    pub fn zones(&self) -> &dyn Zones {
        self.provider.zones().unwrap_or(&Unsupported)
    }

    /// The provider's clusters. No built-in controller calls it (upstream's controllers do not either).
    pub fn clusters(&self) -> &dyn Clusters {
        self.provider.clusters().unwrap_or(&Unsupported)
    }
}

impl std::fmt::Debug for ControllerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerContext")
            .field("provider", &self.provider.provider_name())
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

/// The shared Node cache as one controller sees it: a reader, and its own subscription to every change.
pub type NodeSource = CacheSource<Node>;
