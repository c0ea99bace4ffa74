//! Virtual nodes (virtual-kubelet style): a provider runs the pods the scheduler binds to a Node that no kubelet
//! backs, and tells whether the node is alive.
//!
//! The shape follows virtual-kubelet's `PodLifecycleHandler`, `PodNotifier` and `NodeProvider`, in async Rust:
//! notifications are [streams](BoxStream) instead of callbacks, and every call returns a [`CloudError`] so the
//! runtime in `controller-core` applies the usual retry policy.
//!
//! ```
//! use async_trait::async_trait;
//! use k8s_openapi::api::core::v1::{Pod, PodStatus};
//! use cloudprovider_api::{CloudResult, NodeProvider, PodLifecycle, VirtualNodeProvider};
//!
//! /// Accepts every pod and never runs it.
//! struct Blackhole;
//!
//! #[async_trait]
//! impl PodLifecycle for Blackhole {
//!     async fn create_pod(&self, _pod: &Pod) -> CloudResult<()> { Ok(()) }
//!     async fn update_pod(&self, _pod: &Pod) -> CloudResult<()> { Ok(()) }
//!     async fn delete_pod(&self, _pod: &Pod) -> CloudResult<()> { Ok(()) }
//!     async fn get_pod(&self, _ns: &str, _name: &str) -> CloudResult<Option<Pod>> { Ok(None) }
//!     async fn get_pod_status(&self, _ns: &str, _name: &str) -> CloudResult<Option<PodStatus>> { Ok(None) }
//!     async fn get_pods(&self) -> CloudResult<Vec<Pod>> { Ok(Vec::new()) }
//! }
//!
//! #[async_trait]
//! impl NodeProvider for Blackhole {
//!     async fn ping(&self) -> CloudResult<()> { Ok(()) }
//! }
//!
//! fn takes(_: &dyn VirtualNodeProvider) {}
//! takes(&Blackhole);
//! ```

use async_trait::async_trait;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{NodeCondition, Pod, PodStatus};

use crate::CloudResult;

/// The pod lifecycle of a virtual node (virtual-kubelet's `PodLifecycleHandler`). Pods are identified by
/// namespace and name; implementations keep their own copies (returned values are copies, never shared state).
#[async_trait]
pub trait PodLifecycle: Send + Sync + 'static {
    /// Starts running `pod` (its spec as stored in Kubernetes). Called again after a failure, so it must be
    /// idempotent for a pod that already exists.
    async fn create_pod(&self, pod: &Pod) -> CloudResult<()>;

    /// Applies a changed spec (e.g. a new container image) of a pod that runs.
    async fn update_pod(&self, pod: &Pod) -> CloudResult<()>;

    /// Stops `pod`. May be called more than once. Afterwards the provider reports a terminal status (every
    /// container terminated) or no pod at all; an unknown pod is [`CloudError::NotFound`](crate::CloudError::NotFound)
    /// or `Ok`.
    async fn delete_pod(&self, pod: &Pod) -> CloudResult<()>;

    /// The pod as the provider runs it (spec and status), `None` if unknown.
    async fn get_pod(&self, namespace: &str, name: &str) -> CloudResult<Option<Pod>>;

    /// Only the pod's status, `None` if unknown.
    async fn get_pod_status(&self, namespace: &str, name: &str) -> CloudResult<Option<PodStatus>>;

    /// Every pod the provider runs for this node (may be served from a cache). Used at start-up to delete pods
    /// Kubernetes no longer knows, and to poll statuses when there is no [`PodNotifier`].
    async fn get_pods(&self) -> CloudResult<Vec<Pod>>;

    /// Push notifications of status changes, if the provider has them; without, statuses are polled.
    fn pod_notifier(&self) -> Option<&dyn PodNotifier> {
        None
    }
}

/// Push notifications of pod status changes (virtual-kubelet's `PodNotifier`).
pub trait PodNotifier: Send + Sync {
    /// A stream yielding a pod (namespace, name and its new status) each time its status changes. Each call
    /// returns a new subscription; the provider never blocks on a slow consumer (it may drop notifications, in
    /// which case polling catches up).
    fn notify_pods(&self) -> BoxStream<'static, Pod>;
}

/// The node side of a virtual node (virtual-kubelet's `NodeProvider`).
#[async_trait]
pub trait NodeProvider: Send + Sync + 'static {
    /// A light liveness check of the backend. The node's Lease is renewed only while this succeeds, so a
    /// dead backend makes the node go `Unknown` and its pods get evicted.
    async fn ping(&self) -> CloudResult<()>;

    /// Condition changes pushed by the provider (e.g. `MemoryPressure`); each item replaces the conditions of
    /// those types. `None` when the provider has none; the node then reports `Ready` while pings succeed.
    fn notify_node_status(&self) -> Option<BoxStream<'static, Vec<NodeCondition>>> {
        None
    }
}

/// A provider for one virtual node: the pod lifecycle and the node side. Implemented for every type that has
/// both.
pub trait VirtualNodeProvider: PodLifecycle + NodeProvider {}

impl<T: PodLifecycle + NodeProvider> VirtualNodeProvider for T {}
