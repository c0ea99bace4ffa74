//! What every controller is given.

use std::sync::Arc;

use cloudprovider_api::CloudProvider;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;

use crate::runtime::{EventPublisher, NodeChanges, RuntimeMetrics};

/// The shared dependencies of every controller. Cheap to clone.
#[derive(Clone)]
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

impl std::fmt::Debug for ControllerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerContext")
            .field("provider", &self.provider.provider_name())
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

/// The shared Node cache as one controller sees it: a reader, and its own subscription to every change.
pub struct NodeSource {
    /// All cached Nodes (managed fields stripped).
    pub store: Store<Node>,
    /// Every added or modified Node, for `Controller::for_shared_stream` or a custom loop.
    pub changes: NodeChanges,
    /// Bumped after every change to the cache, deletions included.
    pub generation: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSource")
            .field("nodes", &self.store.state().len())
            .finish()
    }
}
